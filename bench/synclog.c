/* libflkbench_synclog.so: an LD_PRELOAD shim that records the batches a process syncs,
 * so that raw_append can replay exactly the same batches as a baseline.
 *
 *   FLK_BENCH_SYNCLOG=out.log LD_PRELOAD=…/libflkbench_synclog.so flk-wal append …
 *
 * It counts the bytes write(2) puts into each file descriptor; at every fdatasync(2)
 * (group commit) or fsync(2) (seals, sidecars) it notes the count for that descriptor
 * and resets it, and how long the sync took. At exit it writes one line per sync to
 * $FLK_BENCH_SYNCLOG, in order: kind, bytes, nanoseconds in the call.
 *
 *   fdatasync 812345 61234
 *   fsync 40 15877
 *
 * The cost is a counter update per write and a list append per sync: a few thousand
 * calls per run, nothing next to the syncs themselves. Only calls that go through the
 * dynamic linker are seen (not stdio's internal writes, which flk never syncs).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

enum { kMaxFd = 4096 };

struct entry {
  unsigned long long bytes;
  unsigned long long ns;
  int full; /* 1: fsync, 0: fdatasync */
};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static unsigned long long pending[kMaxFd];
static struct entry* entries;
static size_t n_entries, cap_entries;

static ssize_t (*real_write)(int, const void*, size_t);
static int (*real_fdatasync)(int);
static int (*real_fsync)(int);

static void resolve(void) {
  if (!real_write) real_write = (ssize_t(*)(int, const void*, size_t))dlsym(RTLD_NEXT, "write");
  if (!real_fdatasync) real_fdatasync = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
  if (!real_fsync) real_fsync = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
}

static unsigned long long now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (unsigned long long)t.tv_sec * 1000000000ull + (unsigned long long)t.tv_nsec;
}

static void note_sync(int fd, int full, unsigned long long ns) {
  pthread_mutex_lock(&mu);
  if (n_entries == cap_entries) {
    size_t cap = cap_entries ? 2 * cap_entries : 4096;
    struct entry* e = realloc(entries, cap * sizeof *e);
    if (!e) abort();
    entries = e;
    cap_entries = cap;
  }
  entries[n_entries].bytes = (fd >= 0 && fd < kMaxFd) ? pending[fd] : 0;
  entries[n_entries].ns = ns;
  entries[n_entries].full = full;
  ++n_entries;
  if (fd >= 0 && fd < kMaxFd) pending[fd] = 0;
  pthread_mutex_unlock(&mu);
}

ssize_t write(int fd, const void* buf, size_t n) {
  resolve();
  ssize_t k = real_write(fd, buf, n);
  if (k > 0 && fd >= 0 && fd < kMaxFd) {
    pthread_mutex_lock(&mu);
    pending[fd] += (unsigned long long)k;
    pthread_mutex_unlock(&mu);
  }
  return k;
}

int fdatasync(int fd) {
  resolve();
  unsigned long long t = now_ns();
  int r = real_fdatasync(fd);
  if (r == 0) note_sync(fd, 0, now_ns() - t);
  return r;
}

int fsync(int fd) {
  resolve();
  unsigned long long t = now_ns();
  int r = real_fsync(fd);
  if (r == 0) note_sync(fd, 1, now_ns() - t);
  return r;
}

__attribute__((destructor)) static void dump(void) {
  const char* path = getenv("FLK_BENCH_SYNCLOG");
  if (!path || !*path) return;
  FILE* f = fopen(path, "w");
  if (!f) return;
  for (size_t i = 0; i < n_entries; ++i)
    fprintf(f, "%s %llu %llu\n", entries[i].full ? "fsync" : "fdatasync", entries[i].bytes, entries[i].ns);
  fclose(f);
}
