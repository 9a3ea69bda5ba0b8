// Ship watermarks (DESIGN.md §4): per target, the last segment the target
// acknowledged. One JSON file per target under STATE/ship/, replaced atomically
// (temp → fsync → rename → fsync dir) after each acknowledgement:
//
//   STATE/ship/us-west-2.json
//   {"target":"us-west-2","sequence":42,"sha256":"…","source_sha256":"…",
//    "time":"2026-11-26T08:00:01.5Z","first_ts":"…","last_ts":"…",
//    "segments_total":42,"bytes_total":…,"failures_total":3}
//
// sha256 is the digest of what was shipped (the re-encoded segment in selective
// mode), source_sha256 that of the local WAL segment (they are equal in full mode);
// first_ts/last_ts are the seal's bounds of what was shipped (absent when empty).
// The *_total counters live here so that metrics survive the runs of a cron job.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>

#include "flk/util/hash.hpp"

namespace flk::crr {

struct ShipWatermark {
  std::string target;
  uint64_t sequence = 0;  // 0: nothing shipped yet
  hash::Digest sha256{};
  hash::Digest source_sha256{};
  int64_t time = 0;  // when the target acknowledged it (ns)
  int64_t first_ts = 0, last_ts = 0;
  uint64_t segments_total = 0, bytes_total = 0, failures_total = 0;
};

std::filesystem::path ship_watermark_path(const std::filesystem::path& state, const std::string& target);
// The target's watermark; a zero one (sequence 0) when the file does not exist.
// Throws Error(data) naming the file when it is malformed.
ShipWatermark load_ship_watermark(const std::filesystem::path& state, const std::string& target);
// Replaces the file atomically (its data fsynced before the rename). With sync_dir =
// false the rename is not yet durable: a crash may bring back the previous watermark
// (a segment shipped again, which the receiver answers "duplicate"), never a torn one;
// the caller syncs the directory (sync_ship_watermarks) when it is done.
void save_ship_watermark(const std::filesystem::path& state, const ShipWatermark& w, bool sync_dir = true);
void sync_ship_watermarks(const std::filesystem::path& state);
// The watermark as one JSON object (the file's content, also `flk-watermark show`).
std::string ship_watermark_json(const ShipWatermark& w);

}  // namespace flk::crr
