// flk-health: probe the peer regions, emit flk_region_health_status; with --canary,
// measure how long a record written here takes to be applied by each peer. See
// flk-health(1).
#include <cstdio>
#include <optional>
#include <string>
#include <vector>

#include "flk/cli/cli.hpp"
#include "flk/health/health.hpp"
#include "flk/metrics/metrics.hpp"
#include "flk/util/error.hpp"
#include "flk/util/time.hpp"
#include "flk/wal/commands.hpp"

int main(int argc, char** argv) {
  flk::cli::Tool tool("flk-health", "flk-health: probe the peer regions, emit flk_region_health_status");
  CLI::App& app = tool.app();

  std::vector<std::string> peer_specs;
  std::string metrics_file, timeout = "5s", canary_timeout = "60s";
  bool canary = false;
  app.add_option("--peer", peer_specs, "probe this peer (repeatable; default: every target of the config)")
      ->type_name("REGION=URL");
  app.add_option("--metrics-file", metrics_file, "write the metrics to FILE atomically ('-': stdout, no JSON)")
      ->type_name("FILE");
  app.add_option("--timeout", timeout, "give up on a request to a peer after this long (default 5s)")
      ->type_name("DURATION")
      ->check(flk::cli::duration_validator());
  auto* canary_flag =
      app.add_flag("--canary", canary, "write a canary record and wait for every peer to apply it");
  app.add_option("--canary-timeout", canary_timeout, "a peer that has not applied it by then is unhealthy (default 60s)")
      ->type_name("DURATION")
      ->check(flk::cli::duration_validator())
      ->needs(canary_flag);

  return tool.run(argc, argv, [&]() -> int {
    namespace health = flk::health;
    namespace timeutil = flk::timeutil;
    const flk::config::Config& cfg = tool.config();
    std::vector<health::Peer> peers = health::peers(cfg, peer_specs);

    health::CheckOptions o;
    o.source = cfg.region;
    o.timeout = timeutil::parse_duration(timeout);
    o.canary_timeout = timeutil::parse_duration(canary_timeout);
    if (canary) {
      if (cfg.region.empty()) flk::fail(flk::Code::config, "--canary: no region: set 'region' in the configuration");
      health::CanaryOptions c;
      c.region = cfg.region;
      c.wal = cfg.paths.wal;
      c.segment_bytes = cfg.wal.segment_bytes;
      c.segment_age = cfg.wal.segment_age;
      c.store_url = cfg.dedup.url;
      c.lock_timeout = o.canary_timeout;
      c.log = [&](const std::string& m) { tool.notice(m); };
      o.canary = health::write_canary(c);
      tool.info(fmt::format("canary '{}' written in segment {}", o.canary->pcs_id, o.canary->sequence));
    }

    std::vector<health::Result> results = health::check(peers, o);
    bool all = true;
    for (const auto& r : results) {
      if (metrics_file != "-") flk::wal::write_out(stdout, health::result_json(r, o.canary) + "\n");
      if (!r.healthy) {
        all = false;
        tool.notice(fmt::format("error: region '{}' is unhealthy: {}", r.region, r.error));
      }
    }
    std::string text = health::metrics_text(results, canary);
    if (metrics_file == "-") flk::wal::write_out(stdout, text);
    else if (!metrics_file.empty()) flk::metrics::write_file(metrics_file, text);
    return all ? 0 : static_cast<int>(flk::Code::unavailable);
  });
}
