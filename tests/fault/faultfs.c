/* faultfs: an LD_PRELOAD shim that makes write(2), fsync(2) and fdatasync(2) fail on
 * demand, for the durability suites (tests/cli/flk-wal-faults.bats). Built by
 * tests/CMakeLists.txt as $FLK_TEST_LIB/libflkfault.so.
 *
 *   LD_PRELOAD=$FLK_TEST_LIB/libflkfault.so FLK_FAULT_FDATASYNC=EIO flk-wal append …
 *
 * Driven by the environment, read once at load:
 *
 *   FLK_FAULT_PATH_MATCH=SUBSTR   faults apply only to file descriptors whose path
 *                                 (readlink of /proc/self/fd/N, so renames are
 *                                 followed) contains SUBSTR; unset or empty: all
 *                                 files (never pipes, sockets or terminals)
 *   FLK_FAULT_FDATASYNC=ERR       fdatasync fails with errno ERR (a name such as EIO,
 *                                 or a number)
 *   FLK_FAULT_FSYNC=ERR           fsync fails with errno ERR
 *   FLK_FAULT_SYNC_AFTER=N        the first N calls that would fail (fsync and
 *                                 fdatasync together) succeed instead;
 *                                 faults start with call N+1 (default 0)
 *   FLK_FAULT_WRITE_ENOSPC_AFTER=BYTES
 *                                 writes to matching files succeed until BYTES bytes
 *                                 were written in all (a write that crosses the limit
 *                                 is short, as on a full disk); then they fail ENOSPC
 *   FLK_FAULT_LOG=FILE            appends one line per injected fault:
 *                                 "<call> <path> <errno name>", so a test can prove
 *                                 that the fault it meant actually happened
 *
 * A failed fsync/fdatasync does nothing else (no sync happens): the data stays in the
 * page cache, as after a real EIO. Counters are per process.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

typedef ssize_t (*write_fn)(int, const void *, size_t);
typedef ssize_t (*pwrite_fn)(int, const void *, size_t, off_t);
typedef ssize_t (*writev_fn)(int, const struct iovec *, int);
typedef int (*sync_fn)(int);

static write_fn real_write;
static pwrite_fn real_pwrite;
static pwrite_fn real_pwrite64;
static writev_fn real_writev;
static sync_fn real_fsync;
static sync_fn real_fdatasync;

static const char *path_match;
static int fdatasync_err;
static int fsync_err;
static long long sync_after;
static long long enospc_after = -1; /* -1: off */
static const char *log_path;

static long long syncs_seen;  /* matching sync calls so far */
static long long bytes_seen;  /* bytes written to matching files so far */

static const struct {
  const char *name;
  int value;
} errnos[] = {
    {"EIO", EIO},       {"ENOSPC", ENOSPC}, {"EDQUOT", EDQUOT}, {"EROFS", EROFS},
    {"EBADF", EBADF},   {"EINVAL", EINVAL}, {"EPERM", EPERM},   {"EACCES", EACCES},
    {"EFBIG", EFBIG},   {"EINTR", EINTR},   {"EAGAIN", EAGAIN},
};

static int parse_errno(const char *var) {
  const char *s = getenv(var);
  if (!s || !*s) return 0;
  for (size_t i = 0; i < sizeof errnos / sizeof errnos[0]; ++i)
    if (strcmp(s, errnos[i].name) == 0) return errnos[i].value;
  char *end;
  long v = strtol(s, &end, 10);
  if (*end == '\0' && v > 0) return (int)v;
  fprintf(stderr, "faultfs: %s: unknown errno '%s'\n", var, s);
  abort();
}

static const char *errno_name(int e) {
  for (size_t i = 0; i < sizeof errnos / sizeof errnos[0]; ++i)
    if (errnos[i].value == e) return errnos[i].name;
  return "E?";
}

static void *must_sym(const char *name) {
  void *p = dlsym(RTLD_NEXT, name);
  if (!p) {
    fprintf(stderr, "faultfs: cannot find %s: %s\n", name, dlerror());
    abort();
  }
  return p;
}

__attribute__((constructor)) static void faultfs_init(void) {
  *(void **)&real_write = must_sym("write"); /* POSIX dlsym idiom */
  *(void **)&real_pwrite = must_sym("pwrite");
  *(void **)&real_pwrite64 = must_sym("pwrite64");
  *(void **)&real_writev = must_sym("writev");
  *(void **)&real_fsync = must_sym("fsync");
  *(void **)&real_fdatasync = must_sym("fdatasync");
  path_match = getenv("FLK_FAULT_PATH_MATCH");
  if (path_match && !*path_match) path_match = NULL;
  fdatasync_err = parse_errno("FLK_FAULT_FDATASYNC");
  fsync_err = parse_errno("FLK_FAULT_FSYNC");
  const char *s = getenv("FLK_FAULT_SYNC_AFTER");
  if (s && *s) sync_after = atoll(s);
  s = getenv("FLK_FAULT_WRITE_ENOSPC_AFTER");
  if (s && *s) enospc_after = atoll(s);
  log_path = getenv("FLK_FAULT_LOG");
  if (log_path && !*log_path) log_path = NULL;
}

/* The path behind fd, or "" for anything that is not a regular file or directory. */
static void fd_path(int fd, char *out, size_t n) {
  out[0] = '\0';
  struct stat st;
  if (fstat(fd, &st) != 0 || !(S_ISREG(st.st_mode) || S_ISDIR(st.st_mode))) return;
  char link[64];
  snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
  ssize_t k = readlink(link, out, n - 1);
  out[k > 0 ? k : 0] = '\0';
}

static int matches(int fd, char *path, size_t n) {
  fd_path(fd, path, n);
  if (!path[0]) return 0;
  return path_match == NULL || strstr(path, path_match) != NULL;
}

static void log_fault(const char *call, const char *path, int err) {
  if (!log_path) return;
  int saved = errno;
  int fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd >= 0) {
    char line[4200];
    int k = snprintf(line, sizeof line, "%s %s %s\n", call, path, errno_name(err));
    if (k > 0) real_write(fd, line, (size_t)k < sizeof line ? (size_t)k : sizeof line - 1);
    close(fd);
  }
  errno = saved;
}

/* How many of n bytes a write to a matching file may write; -1 (errno ENOSPC) when
 * none. */
static ssize_t allowed(const char *call, const char *path, size_t n) {
  if (enospc_after < 0) return (ssize_t)n;
  long long left = enospc_after - __atomic_load_n(&bytes_seen, __ATOMIC_SEQ_CST);
  if (left <= 0) {
    log_fault(call, path, ENOSPC);
    errno = ENOSPC;
    return -1;
  }
  return (size_t)left < n ? (ssize_t)left : (ssize_t)n;
}

static void count(ssize_t written) {
  if (written > 0) __atomic_add_fetch(&bytes_seen, (long long)written, __ATOMIC_SEQ_CST);
}

ssize_t write(int fd, const void *buf, size_t n) {
  char path[4096];
  if (enospc_after < 0 || !matches(fd, path, sizeof path)) return real_write(fd, buf, n);
  ssize_t k = allowed("write", path, n);
  if (k < 0) return -1;
  ssize_t r = real_write(fd, buf, (size_t)k);
  count(r);
  return r;
}

static ssize_t do_pwrite(pwrite_fn fn, const char *call, int fd, const void *buf, size_t n, off_t off) {
  char path[4096];
  if (enospc_after < 0 || !matches(fd, path, sizeof path)) return fn(fd, buf, n, off);
  ssize_t k = allowed(call, path, n);
  if (k < 0) return -1;
  ssize_t r = fn(fd, buf, (size_t)k, off);
  count(r);
  return r;
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off) { return do_pwrite(real_pwrite, "pwrite", fd, buf, n, off); }

ssize_t pwrite64(int fd, const void *buf, size_t n, off_t off) {
  return do_pwrite(real_pwrite64, "pwrite64", fd, buf, n, off);
}

ssize_t writev(int fd, const struct iovec *iov, int cnt) {
  char path[4096];
  if (enospc_after < 0 || !matches(fd, path, sizeof path)) return real_writev(fd, iov, cnt);
  size_t total = 0;
  for (int i = 0; i < cnt; ++i) total += iov[i].iov_len;
  ssize_t k = allowed("writev", path, total);
  if (k < 0) return -1;
  if ((size_t)k == total) {
    ssize_t r = real_writev(fd, iov, cnt);
    count(r);
    return r;
  }
  /* Short: write the first k bytes only. */
  ssize_t done = 0;
  for (int i = 0; i < cnt && done < k; ++i) {
    size_t part = iov[i].iov_len;
    if ((size_t)(k - done) < part) part = (size_t)(k - done);
    ssize_t r = real_write(fd, iov[i].iov_base, part);
    if (r < 0) return done > 0 ? done : -1;
    count(r);
    done += r;
    if ((size_t)r < part) break;
  }
  return done;
}

static int do_sync(sync_fn fn, const char *call, int err, int fd) {
  char path[4096];
  if (err == 0 || !matches(fd, path, sizeof path)) return fn(fd);
  if (__atomic_add_fetch(&syncs_seen, 1, __ATOMIC_SEQ_CST) <= sync_after) return fn(fd);
  log_fault(call, path, err);
  errno = err;
  return -1;
}

int fsync(int fd) { return do_sync(real_fsync, "fsync", fsync_err, fd); }

int fdatasync(int fd) { return do_sync(real_fdatasync, "fdatasync", fdatasync_err, fd); }
