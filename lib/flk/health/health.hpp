// Health of the peer regions (flk-health(1); the seed's inter-region health checks and
// flk_region_health_status).
//
// A peer is healthy when its mailbox answers: GET /healthz returns 200 within the
// timeout (http/https, transport::Transport::health), or a file:// mailbox is a
// writable directory. The probe's latency is measured on the monotonic clock.
//
// The canary measures what a probe cannot: how long a record written here takes to be
// applied by each peer (the real RPO exposure). It writes one sentinel record into the
// local WAL,
//
//   {"pcs_id":"flk-canary-<region>-<unix ns>","tenant_id":"flk-canary","outcome":"accepted",…}
//
// seals its segment (so the shipper ships it) and applies it to the local dedup store
// as the region's backend would; then each peer's stream head (source = this region,
// target = the peer) is polled until the reader's report (transport::Applied, which
// flk-read leaves in the mailbox it reads) names that segment or a later one. The
// canary's time is from the record's ts to the poll that saw it applied: an upper
// bound, within one poll interval. A peer that does not apply it within the canary
// timeout is unhealthy.
//
// The WAL has one writer (wal::Writer's lock): while another process holds it (a
// running `flk-wal append`), write_canary retries every 100 ms and gives up with
// Error(temp_fail) naming the holder when the lock timeout passes.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "flk/config/config.hpp"
#include "flk/transport/transport.hpp"
#include "flk/util/time.hpp"

namespace flk::health {

struct Peer {
  std::string region;
  std::string url;  // a transport URL: http(s):// or file://
  transport::Options options;
};

// The peers to probe: `specs` ("REGION=URL", each with the TLS files and token of the
// configuration's endpoint for REGION if it has one), else the configuration's targets
// with their endpoints (crr::targets_from_config). Throws Error(usage) for a malformed
// spec, Error(config) when there is no peer.
std::vector<Peer> peers(const config::Config& c, const std::vector<std::string>& specs);

struct Canary {
  std::string pcs_id;
  uint64_t sequence = 0;  // the sealed segment that holds it
  int64_t ts = 0;         // ns, the record's ts
};

struct CanaryOptions {
  std::string region;  // this region
  std::filesystem::path wal;
  uint64_t segment_bytes = 64u << 20;
  timeutil::Nanos segment_age = timeutil::kSecond;
  std::string store_url;                  // the local dedup store ("" : none)
  timeutil::Nanos lock_timeout = 0;       // how long to wait for the WAL lock
  std::function<void(const std::string&)> log;  // WAL recovery messages
};

// Writes, seals and stores the canary (see above). Throws Error: temp_fail when the
// WAL lock stays held, and whatever the WAL or the store throws.
Canary write_canary(const CanaryOptions& o);

struct Result {
  std::string region;
  std::string url;  // as the transport describes it (passwords masked)
  bool healthy = false;
  std::optional<long> status;  // HTTP status of /healthz (http/https)
  double seconds = 0;          // the probe's latency
  std::string error;           // why unhealthy
  // With a canary:
  std::optional<double> canary_seconds;  // from its ts to the poll that saw it applied
  std::optional<uint64_t> applied;       // the peer's last applied sequence seen
};

struct CheckOptions {
  std::string source;  // this region (the canary's stream source)
  timeutil::Nanos timeout = 5 * timeutil::kSecond;  // per request
  std::optional<Canary> canary;
  timeutil::Nanos canary_timeout = 60 * timeutil::kSecond;  // from the canary's write
  timeutil::Nanos poll_interval = timeutil::kSecond / 10;
};

// Probes every peer (one thread each) and, with a canary, waits for each healthy peer
// to apply it. Results in the order of `peers`. Never throws for a peer's failure:
// that is an unhealthy result.
std::vector<Result> check(const std::vector<Peer>& peers, const CheckOptions& o);

// One JSON object (no newline): {"region","url","healthy","status","ms","error"?,
// and with a canary "canary_sequence","canary_ms","applied_sequence"}.
std::string result_json(const Result& r, const std::optional<Canary>& canary);

// The Prometheus text: flk_region_health_status, flk_region_health_probe_seconds and
// (peers that applied the canary) flk_region_canary_seconds, labelled region.
std::string metrics_text(const std::vector<Result>& results, bool with_canary);

}  // namespace flk::health
