// raw_append: the baseline for WAL append throughput — the least any durable append
// must do: a plain loop of write(2) + fdatasync(2) to one file, nothing else.
//
//   raw_append SYNCLOG FILE
//
// SYNCLOG is written by libflkbench_synclog.so (synclog.c) during a `flk-wal append`
// run: one line "fdatasync BYTES" per fdatasync(2) flk made, BYTES being what it wrote
// to that file since its previous sync. raw_append replays exactly those batches: for
// each line, one write(2) of BYTES bytes appended to FILE, then one fdatasync(2). So the
// baseline moves the same bytes with the same number of syncs as flk did in that run,
// and the difference is flk's own work (reading and parsing JSON, encoding, checksums,
// SHA-256, acknowledgements, segment rotation). Other lines (fsync of seals and
// sidecars) are counted but not replayed.
//
// Prints "batches N bytes N sync_ns N" on stdout (sync_ns: time spent in fdatasync).
// Exits non-zero when a write or sync fails.
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fputs("usage: raw_append SYNCLOG FILE\n", stderr);
    return 2;
  }
  std::ifstream log(argv[1]);
  if (!log) {
    std::fprintf(stderr, "raw_append: error: cannot open '%s': %s\n", argv[1], std::strerror(errno));
    return 1;
  }
  std::vector<uint64_t> batches;
  uint64_t largest = 0, total = 0;
  for (std::string line; std::getline(log, line);) {
    std::istringstream fields(line);
    std::string kind;
    uint64_t bytes = 0;
    if (!(fields >> kind >> bytes) || kind != "fdatasync") continue;
    batches.push_back(bytes);
    largest = std::max(largest, bytes);
    total += bytes;
  }

  // Content does not matter to write(2) and fdatasync(2); a fixed pattern will do.
  std::string buf(largest, '\0');
  for (size_t i = 0; i < buf.size(); ++i) buf[i] = static_cast<char>('a' + i % 26);

  int fd = ::open(argv[2], O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) {
    std::fprintf(stderr, "raw_append: error: cannot open '%s': %s\n", argv[2], std::strerror(errno));
    return 1;
  }
  auto now_ns = [] {
    timespec t;
    ::clock_gettime(CLOCK_MONOTONIC, &t);
    return static_cast<uint64_t>(t.tv_sec) * 1'000'000'000u + static_cast<uint64_t>(t.tv_nsec);
  };
  uint64_t sync_ns = 0;
  for (uint64_t n : batches) {
    const char* p = buf.data();
    uint64_t left = n;
    while (left > 0) {
      ssize_t k = ::write(fd, p, left);
      if (k < 0 && errno == EINTR) continue;
      if (k < 0) {
        std::fprintf(stderr, "raw_append: error: cannot write '%s': %s\n", argv[2], std::strerror(errno));
        return 1;
      }
      p += k;
      left -= static_cast<uint64_t>(k);
    }
    uint64_t t = now_ns();
    int r = ::fdatasync(fd);
    sync_ns += now_ns() - t;
    if (r != 0) {
      std::fprintf(stderr, "raw_append: error: cannot sync '%s': %s\n", argv[2], std::strerror(errno));
      return 1;
    }
  }
  if (::close(fd) != 0) {
    std::fprintf(stderr, "raw_append: error: cannot close '%s': %s\n", argv[2], std::strerror(errno));
    return 1;
  }
  std::printf("batches %zu bytes %llu sync_ns %llu\n", batches.size(), static_cast<unsigned long long>(total),
              static_cast<unsigned long long>(sync_ns));
  return 0;
}
