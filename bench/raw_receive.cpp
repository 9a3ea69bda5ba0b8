// raw_receive: the receive baseline of bench/ship.sh — the least a durable receiver
// must do to store the same segment files, without a network or any checking.
//
//   raw_receive DEST_DIR FILE...
//
// For each FILE, in order: create DEST_DIR/.incoming-N (O_EXCL), copy FILE into it with
// read(2) + write(2) in 1 MiB pieces (FILE comes from the page cache, as flk-ship's
// does), fdatasync(2) it (flk-serve's sync: Fd::sync_data), close, rename(2) it to
// DEST_DIR/<basename of FILE>, then fsync(2) DEST_DIR. What flk-serve does on top
// (HTTP, authentication, reading the segment back to check every frame and its SHA-256,
// the digest sidecar written with its own sync, the lock) is what the figure compares.
//
// Prints one line: "files BYTES seconds".
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

[[noreturn]] void die(const char* what, const std::string& path) {
  std::fprintf(stderr, "raw_receive: %s '%s': %s\n", what, path.c_str(), std::strerror(errno));
  std::exit(1);
}

void write_all(int fd, const char* p, size_t n, const std::string& path) {
  while (n > 0) {
    ssize_t w = ::write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) die("cannot write", path);
    p += w;
    n -= static_cast<size_t>(w);
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fputs("usage: raw_receive DEST_DIR FILE...\n", stderr);
    return 2;
  }
  std::string dest = argv[1];
  int dir = ::open(dest.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir < 0) die("cannot open", dest);
  std::vector<char> buf(1u << 20);
  unsigned long long bytes = 0;
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 2; i < argc; ++i) {
    std::string src = argv[i];
    std::string base = src.substr(src.rfind('/') + 1);
    std::string temp = dest + "/.incoming-" + std::to_string(i);
    std::string final_path = dest + "/" + base;
    int in = ::open(src.c_str(), O_RDONLY | O_CLOEXEC);
    if (in < 0) die("cannot open", src);
    int out = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (out < 0) die("cannot create", temp);
    for (;;) {
      ssize_t n = ::read(in, buf.data(), buf.size());
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) die("cannot read", src);
      if (n == 0) break;
      write_all(out, buf.data(), static_cast<size_t>(n), temp);
      bytes += static_cast<unsigned long long>(n);
    }
    ::close(in);
    if (::fdatasync(out) != 0) die("cannot sync", temp);
    if (::close(out) != 0) die("cannot close", temp);
    if (::rename(temp.c_str(), final_path.c_str()) != 0) die("cannot rename to", final_path);
    if (::fsync(dir) != 0) die("cannot sync", dest);
  }
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("%d %llu %.6f\n", argc - 2, bytes, s);
  return 0;
}
