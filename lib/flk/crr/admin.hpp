// What flk-watermark(1) does to watermarks: list them, and move them by hand.
//
// Two kinds of watermark say where a stream (source → target) stands:
//   ship    at the source, per target: the last segment the target acknowledged
//           (STATE/ship/TARGET.json, crr/watermark.hpp);
//   replay  at the target, per source, in the dedup store: the last segment applied
//           (store::Watermark).
// Moving one back is always safe — segments are shipped or applied again, which
// changes nothing (the mailbox answers "duplicate", first write wins is idempotent).
// Moving one forward skips data: those segments would never be shipped or applied, so
// it is refused unless forced. A watermark is moved only to a segment whose digest is
// known (the next segment's chain is checked against it), and only while no flk-ship
// (for that target) or flk-read (for that source) runs: their locks are taken.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "flk/crr/ship.hpp"
#include "flk/store/store.hpp"
#include "flk/transport/transport.hpp"

namespace flk::crr {

// One row of `flk-watermark show`.
struct Position {
  std::string kind;  // "ship" or "replay"
  std::string source, target;
  uint64_t sequence = 0;
  hash::Digest sha256{};
  int64_t time = 0;                // when it last moved (ns; 0: never)
  std::optional<uint64_t> behind;  // segments waiting after it (ship: sealed in the WAL; replay: in the mailbox)
};
std::string position_json(const Position& p);

// The ship watermarks of `targets` (every target with a watermark file when empty),
// with how many sealed WAL segments each is behind.
std::vector<Position> ship_positions(const std::string& source, const std::filesystem::path& state,
                                     const std::filesystem::path& wal, std::vector<std::string> targets);
// The replay watermarks in the store; with a mailbox directory, how many segments
// wait there after each.
std::vector<Position> replay_positions(store::Store& store, const std::string& region,
                                       const std::optional<std::filesystem::path>& mailbox);

// What a move did.
struct Move {
  Position before, after;
  bool forced = false;  // it skipped segments
};
std::string move_json(const Move& m);

// Sets t's ship watermark to `sequence` (0: nothing acknowledged, ship everything
// again). Its digests come from the local WAL's sealed segment `sequence` (re-encoded
// for t in selective replication). Error(usage) when it moves forward without force,
// Error(no_input) when the segment is not a sealed segment of the WAL, Error(temp_fail)
// while flk-ship holds the target's lock.
Move set_ship_watermark(const std::string& source, const Target& t, const std::filesystem::path& state,
                        const std::filesystem::path& wal, uint64_t sequence, bool force);

// Sets the replay watermark of `source` in the store to `sequence` (0: apply everything
// again); its chain digest comes from that segment in `mailbox` (verified on the way).
// Error(usage) when it moves forward without force, Error(no_input) when the mailbox
// does not hold the segment, Error(temp_fail) while flk-read holds the source's lock
// (STATE/read/SOURCE.lock).
Move set_replay_watermark(store::Store& store, transport::Transport& mailbox, const std::string& source,
                          const std::string& region, const std::filesystem::path& state, uint64_t sequence,
                          bool force);

}  // namespace flk::crr
