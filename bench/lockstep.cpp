// lockstep: feeds a command JSON Lines in batches of B lines and waits for B
// acknowledgement lines before sending the next batch — a closed-loop client, so every
// batch is its own group commit and throughput is bound by sync latency.
//
//   lockstep INPUT B COUNT -- COMMAND [ARG…]
//
// Sends the first COUNT lines of INPUT. When FLK_BENCH_CHILD_PRELOAD is set, the
// command runs with it as LD_PRELOAD (the driver itself does not). Exits with the
// command's exit status, or 1 when it stops acknowledging.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

namespace {

bool write_all(int fd, const char* p, size_t n) {
  while (n > 0) {
    ssize_t k = ::write(fd, p, n);
    if (k < 0 && errno == EINTR) continue;
    if (k < 0) return false;
    p += k;
    n -= static_cast<size_t>(k);
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 6 || std::strcmp(argv[4], "--") != 0) {
    std::fputs("usage: lockstep INPUT B COUNT -- COMMAND [ARG...]\n", stderr);
    return 2;
  }
  size_t batch = std::strtoul(argv[2], nullptr, 10), count = std::strtoul(argv[3], nullptr, 10);
  if (batch == 0) batch = 1;
  std::ifstream in(argv[1]);
  if (!in) {
    std::fprintf(stderr, "lockstep: error: cannot open '%s'\n", argv[1]);
    return 1;
  }
  std::vector<std::string> lines;
  for (std::string l; lines.size() < count && std::getline(in, l);) lines.push_back(l + '\n');

  signal(SIGPIPE, SIG_IGN);
  int to_child[2], from_child[2];
  if (::pipe(to_child) != 0 || ::pipe(from_child) != 0) return 1;
  pid_t pid = ::fork();
  if (pid < 0) return 1;
  if (pid == 0) {
    ::dup2(to_child[0], 0);
    ::dup2(from_child[1], 1);
    ::close(to_child[0]);
    ::close(to_child[1]);
    ::close(from_child[0]);
    ::close(from_child[1]);
    if (const char* p = std::getenv("FLK_BENCH_CHILD_PRELOAD")) ::setenv("LD_PRELOAD", p, 1);
    ::execvp(argv[5], argv + 5);
    std::fprintf(stderr, "lockstep: error: cannot run '%s': %s\n", argv[5], std::strerror(errno));
    ::_exit(127);
  }
  ::close(to_child[0]);
  ::close(from_child[1]);

  bool ok = true;
  char buf[65536];
  for (size_t i = 0; ok && i < lines.size(); i += batch) {
    std::string chunk;
    size_t n = std::min(batch, lines.size() - i);
    for (size_t k = 0; k < n; ++k) chunk += lines[i + k];
    if (!write_all(to_child[1], chunk.data(), chunk.size())) {
      ok = false;
      break;
    }
    size_t acks = 0;
    while (acks < n) {
      ssize_t k = ::read(from_child[0], buf, sizeof buf);
      if (k < 0 && errno == EINTR) continue;
      if (k <= 0) {
        std::fprintf(stderr, "lockstep: error: the command stopped after %zu of %zu acknowledgements\n", i + acks,
                     lines.size());
        ok = false;
        break;
      }
      for (ssize_t j = 0; j < k; ++j) acks += buf[j] == '\n';
    }
  }
  ::close(to_child[1]);
  while (::read(from_child[0], buf, sizeof buf) > 0) {
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!ok) return 1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}
