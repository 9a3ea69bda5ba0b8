// Durable file helpers: the one place that knows how bytes reach the disk.
//
// Every write that is acknowledged goes through these: AtomicFile for whole files
// (temp → fsync → rename → fsync dir, as LevelDB's SetCurrentFile and git's lock
// files do), Fd::write_all + Fd::sync_data for appends. All functions throw flk::Error
// naming the path; none retries a failed fsync (its outcome is indeterminate).
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace flk::fs {

// An owned file descriptor. Move-only; closes on destruction.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd, std::string path = {}) : fd_(fd), path_(std::move(path)) {}
  Fd(Fd&& o) noexcept : fd_(o.fd_), path_(std::move(o.path_)) { o.fd_ = -1; }
  Fd& operator=(Fd&& o) noexcept;
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd();

  // open(2) with O_CLOEXEC; throws naming the path (cant_create when O_CREAT fails).
  static Fd open(const std::string& path, int flags, int mode = 0644);

  int get() const { return fd_; }
  const std::string& path() const { return path_; }
  explicit operator bool() const { return fd_ >= 0; }
  void close();

  // write(2) until every byte is written (EINTR-safe). Throws io on error (ENOSPC …).
  void write_all(std::span<const std::byte> data);
  void write_all(std::string_view data);
  // pread(2) up to n bytes at offset; returns the bytes read (short only at EOF).
  size_t pread_some(void* buf, size_t n, uint64_t offset) const;
  // read(2) up to n bytes; returns 0 at EOF.
  size_t read_some(void* buf, size_t n);
  void sync_data();  // fdatasync
  void sync();       // fsync
  void truncate(uint64_t size);
  uint64_t size() const;

 private:
  int fd_ = -1;
  std::string path_;
};

// fsync a directory so that renames and creations in it are durable.
void sync_dir(const std::filesystem::path& dir);

// mkdir -p; the created directories' parents are fsynced. Throws cant_create.
void make_dirs(const std::filesystem::path& dir);

// The whole content of a file. Throws no_input when it does not exist.
std::string read_file(const std::filesystem::path& path);

// Write a whole file atomically and durably:
//   AtomicFile f(path); f.write(…); f.commit();
// commit() = fsync the temp file, rename it over `path`, fsync the directory. Readers
// see the old content or the new, never a mix. If commit() is not reached (an error,
// an exception), the destructor removes the temp file and `path` is untouched.
class AtomicFile {
 public:
  explicit AtomicFile(std::filesystem::path path, int mode = 0644);
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  void write(std::string_view data);
  // With sync_directory = false the caller syncs the directory itself, once for
  // several renames in it; the rename is not durable until then.
  void commit(bool sync_directory = true);
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
  std::string temp_;
  Fd fd_;
  bool committed_ = false;
};

// Convenience: AtomicFile with one write.
void write_file_atomic(const std::filesystem::path& path, std::string_view data, int mode = 0644);

// An exclusive advisory lock (flock) on a lock file, held while the object lives.
// The file holds the holder's pid, for messages ("locked by pid 1234").
class FileLock {
 public:
  // Blocks when `wait`; otherwise throws temp_fail naming the holder's pid.
  FileLock(const std::filesystem::path& path, bool wait);
  ~FileLock() = default;
  FileLock(FileLock&&) = default;
  FileLock& operator=(FileLock&&) = default;

  // The pid written in a lock file, if any (for messages).
  static std::optional<long> holder(const std::filesystem::path& path);

 private:
  Fd fd_;
};

}  // namespace flk::fs
