// The CRR shipper (DESIGN.md §4, flk-ship(1)): for each target, every sealed segment
// of the local WAL after that target's ship watermark, in order, with retries; the
// watermark is advanced (crr/watermark.hpp) only after the target acknowledged.
//
// Targets progress independently, one thread and one transport (one kept-alive
// connection) each: a target that is down does not hold up the others.
// In selective mode a target receives, for every source segment, a re-encoded segment
// holding only the records of the tenants routed to it (possibly none), so its
// sequence numbers stay contiguous. Re-encoding is deterministic — the same source
// segment gives the same bytes — so a re-ship after a lost acknowledgement is answered
// "duplicate", never "conflict".
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "flk/config/config.hpp"
#include "flk/crr/watermark.hpp"
#include "flk/transport/transport.hpp"
#include "flk/util/error.hpp"
#include "flk/wal/segment.hpp"

namespace flk::crr {

struct Target {
  std::string region;
  std::string url;  // transport URL
  transport::Options options;
  std::optional<std::set<std::string, std::less<>>> tenants;  // selective: the tenants routed here
};

struct ShipOptions {
  std::string source;  // this region
  std::filesystem::path wal, state;
  std::vector<Target> targets;
  timeutil::Nanos initial_backoff = timeutil::kSecond;
  timeutil::Nanos max_backoff = 60 * timeutil::kSecond;
  timeutil::Nanos deadline = 300 * timeutil::kSecond;  // per segment, from its first failure
  // The stream transport "-" has no acknowledgement: its watermarks advance only when
  // this is set; `after` (any transport) starts after that sequence instead.
  bool advance_stream = false;
  std::optional<uint64_t> after;
  std::optional<std::filesystem::path> metrics_file;
  // error: a target stopped (for this pass); warn: a segment's first failed attempt
  // (retried); info: every retry.
  std::function<void(const std::string&)> error, warn, info;
  std::function<void(const std::string&)> emit;  // one JSON line (no newline) per shipped segment
};

// The targets of a configuration: its mode's regions (or `only`, which must be among
// them), each with its endpoint (or `to` for all), token, CA, client certificate and,
// in selective mode, its tenants. Throws Error(config) for a target without endpoint.
std::vector<Target> targets_from_config(const config::Config& c, const std::vector<std::string>& only,
                                        const std::optional<std::string>& to);

// A source segment re-encoded for a target.
struct Reencoded {
  hash::Digest sha256{};
  uint64_t bytes = 0;
  wal::Seal seal;
};
// Writes to `dest` (atomically) the segment holding only the records of `source`
// whose tenant is in `tenants`: header flag re-encoded, the source's sequence, created
// time, region and prev, and `source_sha256`. Verifies the source's digest on the way
// (Error(data) when it does not match).
Reencoded reencode_segment(const std::filesystem::path& source, const hash::Digest& source_sha256,
                           const std::set<std::string, std::less<>>& tenants, const std::filesystem::path& dest);

class Shipper {
 public:
  explicit Shipper(ShipOptions o);
  ~Shipper();

  // Ships what is sealed now to every target, then returns the exit code: 0 when
  // every target is caught up, else the most serious of the targets' failures
  // (65 local damage, 77 refused, 76 protocol, 75 retry later …).
  int run_once();
  // Ships until stop(), reacting to seals within a second (inotify on the WAL
  // directory). Returns 0, or 65 when the local WAL is damaged.
  int follow();
  // Ends run_once()/follow() soon: transfers in progress are aborted (their segments
  // stay unacknowledged), no watermark moves past what was acknowledged. Thread-safe.
  void stop();

  // The Prometheus text for every target.
  std::string metrics_text();

 private:
  struct TargetState;
  Code ship_pending(TargetState& t);
  void ship_one(TargetState& t, const std::filesystem::path& file, uint64_t seq);
  // Writes t's watermark file if it is behind; durable: also syncs the directory.
  void save_watermark(TargetState& t, bool durable);
  void wait_for(timeutil::Nanos d, uint64_t seen_generation = UINT64_MAX);
  void write_metrics(bool force);

  ShipOptions o_;
  std::vector<std::unique_ptr<TargetState>> targets_;
  std::atomic<bool> stop_{false};
  std::mutex mu_;  // guards generation_, output, metrics writing
  std::condition_variable cv_;
  uint64_t generation_ = 0;  // bumped whenever the WAL directory changes
  int64_t metrics_written_ = 0;
};

}  // namespace flk::crr
