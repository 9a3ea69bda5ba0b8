// Encoding and decoding of one WAL segment (format.hpp). The only code that reads or
// writes the byte format; the writer, the reader, verify and the transports all use it.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "flk/core/record.hpp"
#include "flk/util/fs.hpp"
#include "flk/util/hash.hpp"
#include "flk/wal/format.hpp"

namespace flk::wal {

struct Header {
  uint32_t version = kFormatVersion;
  uint32_t flags = 0;
  uint64_t sequence = 0;
  int64_t created = 0;
  hash::Digest prev{};    // SHA-256 of the previous sealed segment (zeros for 1)
  hash::Digest source{};  // re-encoded segments: SHA-256 of the source segment
  std::string region;
};

struct Seal {
  uint64_t records = 0;
  int64_t first_ts = 0;  // earliest ts in the segment (0 when empty)
  int64_t last_ts = 0;   // latest ts in the segment (0 when empty)
};

// What the next segment's `prev` must equal: a segment's own SHA-256, or for a
// re-encoded segment the SHA-256 of its source segment (re-encoded segments keep their
// source's chain; flk-wal(5)).
inline hash::Digest chain_digest(const Header& h, const hash::Digest& file_sha256) {
  return (h.flags & kFlagReencoded) ? h.source : file_sha256;
}

std::string encode_header(const Header& h);
// False (with why) when the bytes are not a valid header.
bool decode_header(std::string_view bytes, Header& out, std::string* why);

// Appends one record frame / the seal frame to out.
void append_record_frame(std::string& out, const Record& r);
void append_seal_frame(std::string& out, const Seal& s);
// Appends a record frame around a canonical encoding that was already validated.
void append_encoded_frame(std::string& out, std::string_view encoding);
// Decodes a complete seal frame (head and payload, kSealFrameSize bytes) on its own.
bool decode_seal_frame(std::string_view frame, Seal& out, std::string* why);
// The size append_record_frame would add.
size_t record_frame_size(const Record& r);

// Where a segment's bytes come from. read() returns fewer than n bytes only at the end.
class Source {
 public:
  virtual ~Source() = default;
  virtual size_t read(void* buf, size_t n) = 0;
};

class MemorySource final : public Source {
 public:
  explicit MemorySource(std::string_view data) : data_(data) {}
  size_t read(void* buf, size_t n) override;

 private:
  std::string_view data_;
  size_t pos_ = 0;
};

// Buffered sequential reads from a file (bounded memory whatever the file's size).
class FileSource final : public Source {
 public:
  explicit FileSource(fs::Fd fd, size_t buffer = 1u << 20);
  size_t read(void* buf, size_t n) override;

 private:
  fs::Fd fd_;
  std::string buf_;
  size_t pos_ = 0, end_ = 0;
  bool eof_ = false;
};

// Damage found while reading. `tail` is true when it looks like a torn tail — an
// incomplete frame at the end, a bad last frame, or zeros from the damage to the end —
// which recovery of an open segment may cut; anything else is real damage.
struct Damage {
  uint64_t offset = 0;  // of the frame (or header) that is bad
  std::string why;
  bool tail = false;
};

// Reads a segment frame by frame; memory is bounded by the largest frame.
//
//   SegmentReader r(src, "path");
//   while ((st = r.next()) == Status::record) use(r.record());
//
// After Status::damage, damage() says where and why; nothing past it is returned.
class SegmentReader {
 public:
  // When hasher is given, every byte of the header and of each good frame is fed to it
  // (so after a clean read it holds the segment's digest).
  // With materialize = false records are validated in place and only view() and
  // record_bytes() describe them (no allocation per record); record() stays empty.
  SegmentReader(Source& src, std::string name, hash::Sha256* hasher = nullptr, bool materialize = true);

  enum class Status { record, seal, end, damage };
  Status next();

  // Checks frames (their checksums, the seal and its counts) but not the records inside
  // them: view() and record() stay empty. For a receiver that keeps a copy whose digest
  // proves it is the sender's own bytes, and leaves the records to whoever applies them.
  void set_frames_only(bool on) { frames_only_ = on; }

  const Header& header() const { return header_; }
  bool header_ok() const { return header_ok_; }
  const Record& record() const { return record_; }
  const RecordView& view() const { return view_; }
  // The canonical encoding of the record last returned (valid until next()).
  std::string_view record_bytes() const {
    return std::string_view(payload_).substr(kFrameHeadSize);
  }
  const Seal& seal() const { return seal_; }
  const Damage& damage() const { return damage_; }
  const std::string& name() const { return name_; }
  // Offset of the frame last returned; offset just past the last good frame.
  uint64_t frame_offset() const { return frame_offset_; }
  uint64_t good_end() const { return good_end_; }
  // Records and ts bounds of the records returned so far.
  const Seal& counted() const { return counted_; }

 private:
  Status fail_at(uint64_t offset, std::string why, bool maybe_tail);
  bool rest_is_zero(std::string_view already_read);

  Source& src_;
  std::string name_;
  hash::Sha256* hasher_;
  bool materialize_;
  bool frames_only_ = false;
  Header header_;
  bool header_ok_ = false;
  bool started_ = false;
  bool sealed_ = false;
  bool done_ = false;
  Record record_;
  RecordView view_;
  Seal seal_;
  Seal counted_;
  Damage damage_;
  uint64_t frame_offset_ = 0;
  uint64_t good_end_ = 0;
  std::string payload_;
};

// The 16-digit file name of a segment: "0000000000000042.wal" / ".open".
std::string segment_file_name(uint64_t seq, bool sealed);
// The sequence number in a segment file name, if it is one (sealed or open).
std::optional<uint64_t> parse_segment_file_name(std::string_view name, bool* sealed);

// A sha256sum(1)-compatible line for a sealed segment's sidecar.
std::string digest_sidecar_line(const hash::Digest& d, std::string_view file_name);
// Parses a sidecar's content; false when malformed.
bool parse_digest_sidecar(std::string_view content, hash::Digest& out);

}  // namespace flk::wal
