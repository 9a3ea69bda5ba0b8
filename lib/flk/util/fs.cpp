#include "flk/util/fs.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>

#include "flk/util/error.hpp"

namespace flk::fs {

Fd& Fd::operator=(Fd&& o) noexcept {
  if (this != &o) {
    close();
    fd_ = o.fd_;
    path_ = std::move(o.path_);
    o.fd_ = -1;
  }
  return *this;
}

Fd::~Fd() { close(); }

void Fd::close() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

Fd Fd::open(const std::string& path, int flags, int mode) {
  int fd;
  do {
    fd = ::open(path.c_str(), flags | O_CLOEXEC, mode);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) {
    int err = errno;
    if (flags & O_CREAT) throw sys_error("cannot create", path, err, Code::cant_create);
    throw sys_error("cannot open", path, err);
  }
  return Fd(fd, path);
}

void Fd::write_all(std::span<const std::byte> data) {
  const std::byte* p = data.data();
  size_t left = data.size();
  while (left > 0) {
    ssize_t n = ::write(fd_, p, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw sys_error("cannot write", path_, errno, Code::io);
    }
    p += n;
    left -= static_cast<size_t>(n);
  }
}

void Fd::write_all(std::string_view data) {
  write_all(std::as_bytes(std::span<const char>(data.data(), data.size())));
}

size_t Fd::pread_some(void* buf, size_t n, uint64_t offset) const {
  size_t got = 0;
  while (got < n) {
    ssize_t r = ::pread(fd_, static_cast<char*>(buf) + got, n - got, static_cast<off_t>(offset + got));
    if (r < 0) {
      if (errno == EINTR) continue;
      throw sys_error("cannot read", path_, errno, Code::io);
    }
    if (r == 0) break;
    got += static_cast<size_t>(r);
  }
  return got;
}

size_t Fd::read_some(void* buf, size_t n) {
  for (;;) {
    ssize_t r = ::read(fd_, buf, n);
    if (r >= 0) return static_cast<size_t>(r);
    if (errno != EINTR) throw sys_error("cannot read", path_, errno, Code::io);
  }
}

void Fd::sync_data() {
  if (::fdatasync(fd_) != 0) throw sys_error("cannot sync", path_, errno, Code::io);
}

void Fd::sync() {
  if (::fsync(fd_) != 0) throw sys_error("cannot sync", path_, errno, Code::io);
}

void Fd::truncate(uint64_t size) {
  if (::ftruncate(fd_, static_cast<off_t>(size)) != 0)
    throw sys_error("cannot truncate", path_, errno, Code::io);
}

uint64_t Fd::size() const {
  struct stat st;
  if (::fstat(fd_, &st) != 0) throw sys_error("cannot stat", path_, errno, Code::io);
  return static_cast<uint64_t>(st.st_size);
}

void sync_dir(const std::filesystem::path& dir) {
  Fd fd = Fd::open(dir.empty() ? "." : dir.string(), O_RDONLY | O_DIRECTORY);
  fd.sync();
}

void make_dirs(const std::filesystem::path& dir) {
  if (dir.empty()) return;
  struct stat st;
  if (::stat(dir.c_str(), &st) == 0) {
    if (!S_ISDIR(st.st_mode)) throw sys_error("cannot create directory", dir.string(), ENOTDIR, Code::cant_create);
    return;
  }
  std::filesystem::path parent = dir.parent_path();
  if (parent.empty()) parent = ".";
  if (dir.has_parent_path()) make_dirs(parent);
  if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST)
    throw sys_error("cannot create directory", dir.string(), errno, Code::cant_create);
  sync_dir(parent);
}

std::string read_file(const std::filesystem::path& path) {
  Fd fd = Fd::open(path.string(), O_RDONLY);
  std::string out;
  char buf[65536];
  for (;;) {
    size_t n = fd.read_some(buf, sizeof buf);
    if (n == 0) break;
    out.append(buf, n);
  }
  return out;
}

AtomicFile::AtomicFile(std::filesystem::path path, int mode) : path_(std::move(path)) {
  std::string tmpl = path_.string() + ".tmp." + std::string(6, 'X');  // mkostemp(3) template
  int fd = ::mkostemp(tmpl.data(), O_CLOEXEC);
  if (fd < 0) throw sys_error("cannot create", tmpl, errno, Code::cant_create);
  temp_ = tmpl;
  fd_ = Fd(fd, temp_);
  if (::fchmod(fd, static_cast<mode_t>(mode)) != 0) throw sys_error("cannot chmod", temp_, errno, Code::cant_create);
}

AtomicFile::~AtomicFile() {
  if (!committed_ && !temp_.empty()) ::unlink(temp_.c_str());
}

void AtomicFile::write(std::string_view data) { fd_.write_all(data); }

void AtomicFile::commit(bool sync_directory) {
  fd_.sync();
  fd_.close();
  if (::rename(temp_.c_str(), path_.c_str()) != 0)
    throw sys_error("cannot rename into", path_.string(), errno, Code::cant_create);
  committed_ = true;
  std::filesystem::path dir = path_.parent_path();
  if (sync_directory) sync_dir(dir.empty() ? std::filesystem::path(".") : dir);
}

void write_file_atomic(const std::filesystem::path& path, std::string_view data, int mode) {
  AtomicFile f(path, mode);
  f.write(data);
  f.commit();
}

FileLock::FileLock(const std::filesystem::path& path, bool wait) {
  fd_ = Fd::open(path.string(), O_RDWR | O_CREAT, 0644);
  int op = LOCK_EX | (wait ? 0 : LOCK_NB);
  while (::flock(fd_.get(), op) != 0) {
    if (errno == EINTR) continue;
    if (errno == EWOULDBLOCK) {
      auto pid = holder(path);
      throw Error(Code::temp_fail, pid ? fmt::format("cannot lock '{}': held by pid {}", path.string(), *pid)
                                       : fmt::format("cannot lock '{}': held by another process", path.string()));
    }
    throw sys_error("cannot lock", path.string(), errno);
  }
  std::string pid = fmt::format("{}\n", static_cast<long>(::getpid()));
  fd_.truncate(0);
  if (::pwrite(fd_.get(), pid.data(), pid.size(), 0) < 0) throw sys_error("cannot write", path.string(), errno);
}

std::optional<long> FileLock::holder(const std::filesystem::path& path) {
  try {
    std::string s = read_file(path);
    char* end = nullptr;
    long pid = std::strtol(s.c_str(), &end, 10);
    if (end != s.c_str() && pid > 0) return pid;
  } catch (const Error&) {
  }
  return std::nullopt;
}

}  // namespace flk::fs
