// faultproxy: a TCP proxy that injects network faults, for the shipping suites
// (tests/cli/flk-ship-faults.bats). Built by tests/CMakeLists.txt as
// $FLK_TEST_LIB/faultproxy.
//
//   faultproxy --target PORT [--listen HOST:PORT] [--port-file F] [--connections N]
//              [--corrupt-offset N] [--reset-after K] [--stall-after K] [--delay MS]
//
// It listens (default 127.0.0.1:0, a free port), forwards every connection to
// 127.0.0.1:PORT and back, and on the first N connections (--connections; default:
// every connection) injects, in the client → server direction:
//
//   --corrupt-offset N  inverts the byte at offset N of the first request body of the
//                       connection (counted from just after the first "\r\n\r\n")
//   --reset-after K     forwards K bytes, then resets both sides (RST, SO_LINGER 0)
//   --stall-after K     forwards K bytes, then forwards nothing more either way until
//                       the client goes away
//   --delay MS          waits MS milliseconds before forwarding each chunk
//
// One line per connection and per injected fault goes to stderr ("faultproxy: conn 1:
// corrupted body byte 100"), so a test can prove that the fault it meant happened.
// Connections are numbered from 1. The port file is written (atomically) once the
// proxy listens. It runs until killed.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <string_view>
#include <thread>

namespace {

struct Options {
  std::string listen_host = "127.0.0.1";
  int listen_port = 0;
  int target_port = 0;
  std::string port_file;
  long connections = -1;      // faults apply to connections 1..N (-1: all)
  long long corrupt = -1;     // body offset to invert (-1: none)
  long long reset_after = -1; // bytes forwarded before a reset (-1: none)
  long long stall_after = -1; // bytes forwarded before a stall (-1: none)
  int delay_ms = 0;
};

Options opt;

[[noreturn]] void usage(const char* why) {
  std::fprintf(stderr,
               "faultproxy: %s\nusage: faultproxy --target PORT [--listen HOST:PORT] [--port-file F] "
               "[--connections N] [--corrupt-offset N] [--reset-after K] [--stall-after K] [--delay MS]\n",
               why);
  std::exit(64);
}

long long number(const char* name, const char* s) {
  char* end = nullptr;
  errno = 0;
  long long v = std::strtoll(s, &end, 10);
  if (errno || end == s || *end || v < 0) usage((std::string("invalid value for ") + name + ": " + s).c_str());
  return v;
}

void log(unsigned long conn, const std::string& what) {
  std::fprintf(stderr, "faultproxy: conn %lu: %s\n", conn, what.c_str());  // one write: lines stay whole
}

bool write_all(int fd, const char* p, size_t n) {
  while (n > 0) {
    ssize_t w = ::send(fd, p, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    p += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

void reset(int fd) {
  linger l{1, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
}

int connect_target() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(opt.target_port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// Finds the end of the first request's headers and inverts one body byte, across chunks.
class Corrupter {
 public:
  explicit Corrupter(long long offset) : offset_(offset) {}
  // Returns true when it inverted a byte of this chunk.
  bool apply(char* p, size_t n) {
    if (offset_ < 0 || done_) return false;
    for (size_t i = 0; i < n; ++i) {
      if (!in_body_) {
        tail_ = (tail_ << 8) | static_cast<unsigned char>(p[i]);
        if ((tail_ & 0xffffffffu) == 0x0d0a0d0au) in_body_ = true;  // "\r\n\r\n"
        continue;
      }
      if (body_++ == offset_) {
        p[i] = static_cast<char>(~p[i]);
        done_ = true;
        return true;
      }
    }
    return false;
  }

 private:
  long long offset_;
  unsigned long tail_ = 0;
  bool in_body_ = false, done_ = false;
  long long body_ = 0;
};

void serve(int client, unsigned long conn) {
  const bool faulty = opt.connections < 0 || static_cast<long>(conn) <= opt.connections;
  int server = connect_target();
  if (server < 0) {
    log(conn, std::string("cannot connect to the target: ") + std::strerror(errno));
    reset(client);
    ::close(client);
    return;
  }
  log(conn, faulty ? "open (faulty)" : "open");
  Corrupter corrupter(faulty ? opt.corrupt : -1);
  long long up = 0;  // client → server bytes forwarded
  bool client_open = true, server_open = true, stalled = false;
  char buf[16384];

  while (client_open || server_open) {
    // A closed side is left out (a negative fd), or poll would report its hang-up forever.
    pollfd p[2] = {{client_open ? client : -1, static_cast<short>(stalled ? POLLRDHUP : POLLIN), 0},
                   {server_open && !stalled ? server : -1, POLLIN, 0}};
    if (::poll(p, 2, -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (stalled) {  // forward nothing; end when the client gives up
      if (p[0].revents & (POLLRDHUP | POLLHUP | POLLERR)) {
        log(conn, "client went away while stalled");
        break;
      }
      continue;
    }
    if (p[0].revents & (POLLIN | POLLHUP | POLLERR)) {
      size_t want = sizeof buf;
      if (faulty && opt.reset_after >= 0) want = std::min<long long>(want, std::max(1LL, opt.reset_after - up));
      if (faulty && opt.stall_after >= 0) want = std::min<long long>(want, std::max(1LL, opt.stall_after - up));
      ssize_t n = ::recv(client, buf, want, 0);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        client_open = false;
        ::shutdown(server, SHUT_WR);
      } else {
        if (faulty && opt.reset_after >= 0 && up >= opt.reset_after) {
          log(conn, "reset after " + std::to_string(up) + " bytes");
          reset(client);
          reset(server);
          break;
        }
        if (faulty && opt.stall_after >= 0 && up >= opt.stall_after) {
          log(conn, "stalled after " + std::to_string(up) + " bytes");
          stalled = true;
          continue;
        }
        if (corrupter.apply(buf, static_cast<size_t>(n)))
          log(conn, "corrupted body byte " + std::to_string(opt.corrupt));
        if (faulty && opt.delay_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(opt.delay_ms));
        if (!write_all(server, buf, static_cast<size_t>(n))) break;
        up += n;
      }
    }
    if (p[1].revents & (POLLIN | POLLHUP | POLLERR)) {
      ssize_t n = ::recv(server, buf, sizeof buf, 0);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        server_open = false;
        ::shutdown(client, SHUT_WR);
        if (!client_open) break;
      } else if (!write_all(client, buf, static_cast<size_t>(n))) {
        break;
      }
    }
  }
  ::close(server);
  ::close(client);
  log(conn, "closed after " + std::to_string(up) + " bytes up");
}

void parse(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    if (i + 1 >= argc) usage(("missing value for " + std::string(a)).c_str());
    const char* v = argv[++i];
    if (a == "--target") {
      opt.target_port = static_cast<int>(number("--target", v));
    } else if (a == "--listen") {
      std::string s = v;
      size_t colon = s.rfind(':');
      if (colon == std::string::npos) usage("--listen expects HOST:PORT");
      opt.listen_host = s.substr(0, colon);
      opt.listen_port = static_cast<int>(number("--listen", s.c_str() + colon + 1));
    } else if (a == "--port-file") {
      opt.port_file = v;
    } else if (a == "--connections") {
      opt.connections = static_cast<long>(number("--connections", v));
    } else if (a == "--corrupt-offset") {
      opt.corrupt = number("--corrupt-offset", v);
    } else if (a == "--reset-after") {
      opt.reset_after = number("--reset-after", v);
    } else if (a == "--stall-after") {
      opt.stall_after = number("--stall-after", v);
    } else if (a == "--delay") {
      opt.delay_ms = static_cast<int>(number("--delay", v));
    } else {
      usage(("unknown option " + std::string(a)).c_str());
    }
  }
  if (opt.target_port <= 0 || opt.target_port > 65535) usage("--target PORT is required");
}

}  // namespace

int main(int argc, char** argv) {
  parse(argc, argv);
  std::setvbuf(stderr, nullptr, _IOLBF, 0);
  int lfd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  ::setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(opt.listen_port));
  if (::inet_pton(AF_INET, opt.listen_host.c_str(), &a.sin_addr) != 1) usage("--listen: not an IPv4 address");
  if (::bind(lfd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(lfd, 64) != 0) {
    std::fprintf(stderr, "faultproxy: cannot listen on %s:%d: %s\n", opt.listen_host.c_str(), opt.listen_port,
                 std::strerror(errno));
    return 69;
  }
  socklen_t len = sizeof a;
  ::getsockname(lfd, reinterpret_cast<sockaddr*>(&a), &len);
  int port = ntohs(a.sin_port);
  if (!opt.port_file.empty()) {
    std::string tmp = opt.port_file + ".tmp";
    std::ofstream(tmp) << port << '\n';
    if (std::rename(tmp.c_str(), opt.port_file.c_str()) != 0) {
      std::perror("faultproxy: cannot write the port file");
      return 73;
    }
  }
  std::fprintf(stderr, "faultproxy: listening on %s:%d, forwarding to 127.0.0.1:%d\n", opt.listen_host.c_str(), port,
               opt.target_port);
  unsigned long count = 0;
  for (;;) {
    int c = ::accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC);
    if (c < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      std::perror("faultproxy: accept");
      return 74;
    }
    ::setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    std::thread(serve, c, ++count).detach();
  }
}
