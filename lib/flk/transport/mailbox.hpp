// The segment mailbox on disk (DESIGN.md §4): what peers shipped to a region.
//
//   MAILBOX/<source>/<target>/0000000000000042.wal          a shipped segment
//   MAILBOX/<source>/<target>/0000000000000042.wal.sha256   its sha256sum(1) sidecar
//   MAILBOX/<source>/<target>/.lock                         flock(2)ed while storing
//   MAILBOX/.incoming/                                      bytes being received
//
// The same tree is written by flk-serve (http/https), by the file:// transport and read
// by flk-read and flk-rebuild-dedup. Storing a segment:
//
//   Incoming in(mailbox, {source, target, seq});   // a temp file in MAILBOX/.incoming/
//   in.write(bytes)…;                               // or in.copy_from(file)
//   Put p = in.commit(declared_sha256);             // validate, fsync, store
//
// commit() reads the temp file back and checks that it is a whole sealed WAL segment of
// that source and sequence (header, frame checksums, seal — not the records inside the
// frames, which flk-read checks) whose SHA-256 is the declared one (else Error(data), nothing
// stored); then, holding the stream's lock: when a segment is already stored at that
// address it answers duplicate (same digest) or conflict (different: the first is kept);
// otherwise fdatasync → sidecar renamed into place → segment renamed into place → one
// fsync of the directory, and only then answers stored. The sidecar's bytes are not
// synced (a digest anyone can recompute): after a power failure a reader may find it
// empty or missing and computes the digest instead.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "flk/util/error.hpp"
#include "flk/util/fs.hpp"
#include "flk/util/hash.hpp"
#include "flk/util/time.hpp"
#include "flk/wal/segment.hpp"

namespace flk::transport {

// A shipped segment's address.
struct Address {
  std::string source, target;
  uint64_t sequence = 0;
};
std::string to_string(const Address& a);  // "us-east-1→us-west-2 #42"

enum class Put { stored, duplicate, conflict };

// Incoming::commit's error when the bytes are a sound segment but not the declared
// one: damaged in transit (worth sending again), unlike other Error(data).
struct DigestMismatch : Error {
  using Error::Error;
};
std::string_view put_name(Put p);  // "stored", "duplicate", "conflict"

// A segment as listed in a mailbox stream.
struct Entry {
  uint64_t sequence = 0;
  uint64_t bytes = 0;
  hash::Digest sha256{};
};

// Where the target region's reader stands on a stream: the last segment it applied to
// its dedup store (its replay watermark: sequence and chain digest) and when. flk-read
// reports it to the mailbox it reads from, which keeps it beside the stream:
//
//   MAILBOX/<source>/<target>/applied.json
//   {"sequence":42,"sha256":"…","time":"2026-11-26T08:00:01.5Z"}
//
// so that the source region can measure its lag (flk-watermark(1)) from the head.
// It is a report, not a watermark: written atomically but not synced (a crash may bring
// back an older one, which only overstates the lag until the reader's next report).
struct Applied {
  uint64_t sequence = 0;
  hash::Digest sha256{};
  int64_t time = 0;  // ns
};

// The mailbox stream head: the last stored sequence (0 when none), its digest and the
// last ts its seal records (0 when empty); and the reader's last report, if any.
struct Head {
  uint64_t sequence = 0;
  hash::Digest sha256{};
  int64_t last_ts = 0;
  std::optional<Applied> applied;
};

std::filesystem::path stream_dir(const std::filesystem::path& mailbox, std::string_view source,
                                 std::string_view target);
std::filesystem::path segment_path(const std::filesystem::path& mailbox, const Address& a);

// Throws Error(usage) unless both are valid region names and the sequence is ≥ 1 —
// the one check that keeps every address inside the mailbox.
void check_address(const Address& a);

class Incoming {
 public:
  Incoming(std::filesystem::path mailbox, Address addr);
  ~Incoming();  // removes the temp file unless committed
  Incoming(const Incoming&) = delete;
  Incoming& operator=(const Incoming&) = delete;

  void write(std::string_view data);
  // Appends a whole file's bytes (copy_file_range where it can).
  void copy_from(const std::filesystem::path& file);
  uint64_t size() const { return size_; }

  // Validates and stores (see above). Throws Error(data) "…: why" when the bytes are
  // not the declared segment; I/O errors as Error(io).
  Put commit(const hash::Digest& declared);

  // The header and seal of what was received (valid after commit()).
  const wal::Header& header() const { return header_; }

 private:
  std::filesystem::path mailbox_;
  Address addr_;
  std::filesystem::path dir_, temp_;
  void flush();
  static constexpr size_t kWriteBuffer = 1u << 20;

  fs::Fd fd_;
  std::string pending_;  // received, not yet written
  uint64_t size_ = 0;
  bool done_ = false;
  wal::Header header_;
};

constexpr const char* kIncomingDir = ".incoming";

// Removes temp files of receptions that ended without a commit (a crash, kill -9) and
// were last written more than `older_than` ago; returns how many.
size_t remove_stale_incoming(const std::filesystem::path& mailbox, timeutil::Nanos older_than);

// The segments of one stream after `after`, in order (their digests from the sidecars).
// An absent stream is empty.
std::vector<Entry> list_stream(const std::filesystem::path& mailbox, std::string_view source,
                               std::string_view target, uint64_t after = 0, size_t limit = SIZE_MAX);
// The (source, target) pairs the mailbox holds, sorted.
std::vector<std::pair<std::string, std::string>> list_streams(const std::filesystem::path& mailbox);
Head stream_head(const std::filesystem::path& mailbox, std::string_view source, std::string_view target);

// The reader's report (see Applied): saved atomically (the stream directory is made if
// need be); loaded as nullopt when absent or unreadable (a report is advisory).
void save_applied(const std::filesystem::path& mailbox, std::string_view source, std::string_view target,
                  const Applied& a);
std::optional<Applied> load_applied(const std::filesystem::path& mailbox, std::string_view source,
                                    std::string_view target);
// The report as one JSON object, and back (false when malformed).
std::string applied_json(const Applied& a);
bool parse_applied(std::string_view json, Applied& out);

}  // namespace flk::transport
