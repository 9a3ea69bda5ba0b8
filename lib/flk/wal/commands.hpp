// The verbs of flk-wal(1) as library entry points: JSON Lines in, JSON Lines out.
// The tool only parses options and calls these.
#pragma once

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "flk/util/json.hpp"
#include "flk/util/time.hpp"
#include "flk/wal/dir.hpp"
#include "flk/wal/writer.hpp"

namespace flk::wal {

using Log = std::function<void(const std::string&)>;

struct AppendOptions {
  bool keep_open = false;  // at end of input, leave the open segment for the next run
  Log info;                // sealed segments
  // Set asynchronously (signal handlers): seal the open segment now / stop reading,
  // seal and return. Waits on input are interrupted by the signals that set them.
  std::atomic<bool>* seal_request = nullptr;
  const std::atomic<bool>* stop_request = nullptr;
};

struct AppendStats {
  uint64_t records = 0;
  uint64_t sealed = 0;
};

// Reads records as JSON Lines from `in` and appends them through `w`, printing one
// acknowledgement line {"pcs_id":…,"segment":N,"offset":N} to `out` per record once it
// is durable. Lines that arrive together are one batch (one fdatasync). While input is
// quiet the open segment is sealed when due; at end of input, and on a stop request
// (after the batch in hand), it is sealed at once (unless keep_open). A bad line throws Error(data)
// "invalid record on stdin line N: field '…': …" after every record before it was
// appended and acknowledged; nothing of the bad line is written.
AppendStats append_jsonl(Writer& w, json::LineReader& in, std::FILE* out, const AppendOptions& opts);

// Prints the records of segment files as JSON Lines, those with ts ≥ since when
// given. Consecutive segments must chain (a header's previous-segment digest equals
// the digest of the segment before); with `contiguous` (a whole WAL directory) a
// missing sequence number is an error too. Damage throws Error(data) after the
// records before it; a torn tail of the open segment (a writer at work) ends its read
// quietly.
uint64_t cat(const std::vector<std::filesystem::path>& segments, std::optional<timeutil::Nanos> since,
             bool contiguous, std::FILE* out);
std::vector<std::filesystem::path> segment_paths(const std::filesystem::path& dir);

// `ls`: one JSON line per segment, or a table for people.
void ls(const std::filesystem::path& dir, bool as_json, std::FILE* out);

// The JSON line that describes a sealed segment (seal, rotation).
std::string sealed_json(const SealedSegment& s);

// `flk-wal seal` while another process holds the WAL: asks that writer (a running
// `flk-wal append`, checked through /proc) to seal with SIGUSR1 and waits up to
// `timeout` for the open segment to be sealed. Returns the sealed segment, or
// nullopt when nothing was open. Throws temp_fail when the holder is not flk-wal or
// does not seal in time.
std::optional<SealedSegment> request_seal(const std::filesystem::path& dir, timeutil::Nanos timeout);

// Writes s to out and flushes; throws Error(io) when the output fails (EPIPE, ENOSPC).
void write_out(std::FILE* out, const std::string& s);

}  // namespace flk::wal
