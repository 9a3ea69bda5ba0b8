// A WAL directory: listing its segments, describing them, reading and verifying them.
// Reading needs no lock and is safe beside a running writer: an incomplete frame at the
// end of the open segment is where the writer is, not damage.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "flk/core/record.hpp"
#include "flk/util/hash.hpp"
#include "flk/wal/segment.hpp"

namespace flk::wal {

struct SegmentFile {
  uint64_t sequence = 0;
  bool sealed = false;
  std::filesystem::path path;
};

// Segments in sequence order. Other files are ignored. Throws no_input when the
// directory does not exist.
std::vector<SegmentFile> list_segments(const std::filesystem::path& dir);

// The region named in the headers of a WAL's segments (its last segment's), if any.
std::optional<std::string> wal_region(const std::filesystem::path& dir);

// What `flk-wal ls` shows of a segment.
struct SegmentStat {
  SegmentFile file;
  Header header;
  Seal counts;  // sealed: from the seal frame; open: counted by reading it
  uint64_t bytes = 0;
  std::optional<hash::Digest> sha256;  // sealed: from the sidecar, else computed
};

// Cheap for sealed segments (header, seal frame and sidecar only); reads open ones.
// Throws Error(data) naming the segment and offset when it is damaged.
SegmentStat stat_segment(const SegmentFile& f);

// Calls fn for every record of a segment file, in order. A sealed segment must end
// with its seal frame; in an open one (sealed = false) a torn tail ends the read
// quietly (a writer at work). Any other damage throws Error(data)
// "segment '…': offset N: why" after the records before it were delivered.
// on_header (optional) sees the header before any record and may throw to refuse
// the segment; hasher (optional) absorbs every byte read. Returns the record count.
uint64_t read_segment(const std::filesystem::path& path, bool sealed, const std::function<void(const Record&)>& fn,
                      const std::function<void(const Header&)>& on_header = {}, hash::Sha256* hasher = nullptr);
// The same without a Record per record: each record as a view of its canonical
// encoding, and the encoding (its digest is the SHA-256 of it); valid during the call.
using RecordViewFn = std::function<void(const RecordView&, std::string_view encoding)>;
uint64_t read_segment_views(const std::filesystem::path& path, bool sealed, const RecordViewFn& fn,
                            const std::function<void(const Header&)>& on_header = {}, hash::Sha256* hasher = nullptr);

// The SHA-256 of a whole file.
hash::Digest file_digest(const std::filesystem::path& path);

// A sealed segment's digest sidecar (N.wal.sha256, sha256sum(1) format): its path, its
// digest (nullopt when absent or malformed), and writing it atomically and durably.
std::filesystem::path digest_sidecar_path(const std::filesystem::path& segment);
std::optional<hash::Digest> read_digest_sidecar(const std::filesystem::path& segment);
void write_digest_sidecar(const std::filesystem::path& segment, const hash::Digest& d);

// Result of verifying one segment.
struct VerifyResult {
  SegmentFile file;
  bool ok = true;
  std::string problem;    // "offset 4242: frame checksum mismatch", "chain: …"; empty when ok
  std::string note;       // not damage, but worth saying (a torn tail the writer will cut)
  uint64_t records = 0;
  uint64_t bytes = 0;
  std::optional<hash::Digest> sha256;
};

// Verifies every segment of a WAL: headers, every frame checksum and record, seal
// counts, digests against sidecars, sequence contiguity, one region, and the hash
// chain (each header's prev = the digest of the segment before). fn is called once
// per segment, in order. Returns true when everything is sound.
bool verify_wal(const std::filesystem::path& dir, const std::function<void(const VerifyResult&)>& fn);

}  // namespace flk::wal
