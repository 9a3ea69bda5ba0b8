// CRR lag (DESIGN.md §6, flk-watermark(1)): the age of the oldest record written at
// the source that is not yet applied at the target; 0 when none is pending.
//
// It is measured at the source, the only place that knows every record written
// (including those in the open segment). Three positions on the local WAL decide it:
//
//   applied  the target reader's last report (transport::Applied), which flk-read
//            leaves in the mailbox it reads and the source fetches with the head;
//   shipped  the ship watermark (acknowledged by the target);
//   last     the WAL's last segment, sealed or open.
//
// Records of segments after max(applied, shipped) are not shipped yet: the age of the
// oldest is the *ship* part. Records of segments in (applied, shipped] are in the
// target's mailbox waiting to be applied: the age of the oldest is the *apply* part.
// The lag is the larger of the two. In selective replication only records whose tenant
// is routed to the target count. When the target cannot be asked, its last report
// fetched (cached under STATE/lag/) is used and the result is marked stale: the lag
// then keeps growing while nothing is known to be applied, never shrinks on a guess.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "flk/crr/ship.hpp"
#include "flk/transport/mailbox.hpp"
#include "flk/transport/transport.hpp"
#include "flk/wal/dir.hpp"

namespace flk::crr {

struct StreamLag {
  std::string source, target;
  uint64_t last = 0;     // the WAL's last segment (0: no segment)
  uint64_t shipped = 0;  // ship watermark
  std::optional<transport::Applied> applied;  // the reader's report (nullopt: none yet)
  bool stale = false;    // the target could not be asked: `applied` is the cached report
  std::string error;     // why, when stale
  int64_t oldest_unshipped = 0, oldest_unapplied = 0;  // ts (ns) of the oldest such record, 0: none
  double ship_seconds = 0, apply_seconds = 0, seconds = 0;
};

// The earliest ts among the records of segments with after < sequence ≤ upto that are
// routed to the target (tenants: selective; nullopt: every record); 0 when none.
// Reads only what it must: a sealed segment whose seal says it cannot hold an earlier
// record than one already found is skipped, and in full replication only seals are
// read (an open segment is read through).
int64_t oldest_ts(const std::vector<wal::SegmentFile>& files, uint64_t after, uint64_t upto,
                  const std::optional<std::set<std::string, std::less<>>>& tenants);

// Measures the lag of the stream (source → t) at `now`: asks `tr` (t's transport) for
// the reader's report (and caches it under state/lag/), reads the ship watermark from
// state and the WAL in wal_dir. Throws Error for a WAL that cannot be read (no_input,
// data naming a damaged segment); a target that cannot be asked is not an error (stale).
StreamLag measure_lag(const std::string& source, const Target& t, transport::Transport& tr,
                      const std::filesystem::path& wal_dir, const std::filesystem::path& state, int64_t now);

// One JSON object (flk-watermark lag's line).
std::string stream_lag_json(const StreamLag& l);

// The cached report of the target's reader (state/lag/TARGET.json), if any.
std::optional<transport::Applied> load_cached_applied(const std::filesystem::path& state, const std::string& target);

}  // namespace flk::crr
