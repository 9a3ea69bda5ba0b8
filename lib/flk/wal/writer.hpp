// The inbox WAL writer: appends records durably, rotates and seals segments.
//
// Contract:
//  - append() returns only after every record of the batch is on disk (write, then
//    fdatasync; a batch shares one sync per segment it touches — group commit). The
//    positions it returns are the acknowledgements.
//  - Concurrent append() calls from several threads are safe: they queue, and the
//    first in line writes everything queued behind it with one sync (LevelDB's
//    writer queue), so concurrent callers share syncs too.
//  - A failed write or sync poisons the writer: that call and every later one throw
//    Error(io). The file's state after a failed fsync is indeterminate; it is never
//    retried. Reopening the WAL (a new Writer) recovers from the disk.
//  - open() takes the WAL's lock (one writer per directory) and recovers: a torn tail
//    of the open segment is cut (and reported through the log callback), a segment
//    whose seal was written but not renamed is finished, stale temp files are removed;
//    other damage throws Error(data) naming the segment and offset.
//  - Rotation: a segment is sealed before a record would take it past segment_bytes
//    (a single larger record gets a segment of its own), and by seal_due() once its
//    first record is segment_age old. An empty segment is never sealed.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "flk/core/record.hpp"
#include "flk/util/error.hpp"
#include "flk/util/fs.hpp"
#include "flk/util/hash.hpp"
#include "flk/util/time.hpp"
#include "flk/wal/segment.hpp"

namespace flk::wal {

struct WriterOptions {
  std::filesystem::path dir;
  std::string region;
  uint64_t segment_bytes = 64u << 20;
  timeutil::Nanos segment_age = 1 * timeutil::kSecond;
  bool wait_for_lock = false;  // block on the lock instead of failing with temp_fail
  std::function<void(const std::string&)> log;  // recovery messages
};

struct Position {
  uint64_t segment = 0;
  uint64_t offset = 0;
};

struct SealedSegment {
  uint64_t sequence = 0;
  Seal counts;
  uint64_t bytes = 0;
  hash::Digest sha256{};
  std::filesystem::path path;
};

class Writer {
 public:
  static std::unique_ptr<Writer> open(WriterOptions options);
  ~Writer();
  Writer(const Writer&) = delete;
  Writer& operator=(const Writer&) = delete;

  // Appends a batch durably (see the contract above). Records are validated first;
  // an invalid one throws Error(data) and nothing of the batch is written.
  std::vector<Position> append(std::span<const Record> records);

  // Seals the open segment now if it holds records.
  std::optional<SealedSegment> seal();
  // Seals the open segment if its first record is segment_age old (monotonic clock).
  std::optional<SealedSegment> seal_if_due();
  // Monotonic time at which the open segment becomes due, if it holds records.
  std::optional<timeutil::Nanos> due_at() const;

  // Segments sealed by append() (rotation) since the last call; for reporting.
  std::vector<SealedSegment> take_sealed();

  const WriterOptions& options() const { return opts_; }

 private:
  explicit Writer(WriterOptions options);
  void recover();
  void check_poisoned() const;
  void create_segment();
  void write_batch(std::string& buf);
  SealedSegment seal_locked();
  void poison(const Error& e);

  struct Open {
    uint64_t sequence = 0;
    std::filesystem::path path;
    fs::Fd fd;
    uint64_t size = 0;
    Seal counts;
    hash::Sha256 sha;
    timeutil::Nanos due = 0;  // monotonic
  };

  WriterOptions opts_;
  std::optional<fs::FileLock> lock_;
  mutable std::mutex mu_;     // guards queue_
  mutable std::mutex io_mu_;  // held by whoever touches the open segment (the queue's leader, seal())
  std::optional<Open> open_;
  uint64_t last_sealed_ = 0;  // sequence of the last sealed segment (0: none)
  hash::Digest last_sealed_digest_{};
  std::optional<Error> poisoned_;
  std::vector<SealedSegment> rotated_;
  std::string buf_;

  // The writer queue for group commit across threads.
  struct Pending;
  std::deque<Pending*> queue_;
};

}  // namespace flk::wal
