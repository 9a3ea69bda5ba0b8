// flk-read: verify and replay what peers shipped into the local dedup store. See
// flk-read(1).
#include <cstdio>
#include <string>
#include <vector>

#include "flk/cli/cli.hpp"
#include "flk/crr/read.hpp"
#include "flk/util/error.hpp"
#include "flk/wal/commands.hpp"

int main(int argc, char** argv) {
  flk::cli::Tool tool("flk-read", "flk-read: verify and replay what peers shipped into the local dedup store");
  CLI::App& app = tool.app();
  std::vector<std::string> sources;
  std::string from, store_url, region, state_dir, token_file, ca_file, metrics_file, worm, interval = "500ms",
      timeout = "30s";
  bool once = false, follow = false;
  size_t batch = flk::crr::ReadOptions{}.batch_records;
  app.add_option("--source", sources, "replay this source region only (repeatable; default: every source that shipped here)")
      ->type_name("REGION")
      ->check(flk::cli::region_validator());
  app.add_option("--from", from,
                 "where the shipped segments are: file:///MAILBOX (default: paths.mailbox), http(s)://PEER:PORT, or - "
                 "(stdin: the stream flk-ship writes to -)")
      ->type_name("URL");
  app.add_option("--store", store_url, "the dedup store (default: dedup.url)")->type_name("URL");
  app.add_option("--region", region, "this region, the target of what is read (default: the configuration's)")
      ->type_name("REGION")
      ->check(flk::cli::region_validator());
  auto* o_once = app.add_flag("--once", once, "apply what is there now and exit (the default)");
  app.add_flag("--follow", follow, "keep running, applying segments as they arrive")->excludes(o_once);
  app.add_option("--interval", interval, "with --follow: how often to look for new segments (default 500ms)")
      ->type_name("DURATION")
      ->check(flk::cli::duration_validator());
  app.add_option("--state-dir", state_dir,
                 "where fetched segments wait to be verified, and the locks and counters (default: paths.state)")
      ->type_name("DIR");
  app.add_option("--token-file", token_file, "present the bearer token in FILE (http/https)")->type_name("FILE");
  app.add_option("--ca-file", ca_file, "verify an HTTPS peer with these CA certificates")->type_name("FILE");
  app.add_option("--metrics-file", metrics_file,
                 "write the flk_crr_read_* metrics to FILE (atomically) after each pass, for node_exporter's textfile "
                 "collector")
      ->type_name("FILE");
  app.add_option("--worm", worm, "append each conflict found to this WORM ledger (default: paths.worm when configured)")
      ->type_name("FILE");
  app.add_option("--batch", batch,
                 "commit consecutive segments together until they hold N records (default 1048576; 0: each alone)")
      ->type_name("N");
  app.add_option("--timeout", timeout, "a transfer that moves no byte this long fails (default 30s)")
      ->type_name("DURATION")
      ->check(flk::cli::duration_validator());

  return tool.run(argc, argv, [&]() -> int {
    const flk::config::Config& cfg = tool.config();
    flk::crr::ReadOptions o;
    o.region = region.empty() ? cfg.region : region;
    if (o.region.empty()) flk::fail(flk::Code::usage, "no region: give --region or set 'region' in the configuration");
    o.sources = sources;
    o.from = from.empty() ? "file://" + cfg.paths.mailbox : from;
    if (follow && o.from == "-") flk::fail(flk::Code::usage, "--follow cannot read a stream (--from -)");
    o.store_url = store_url.empty() ? cfg.dedup.url : store_url;
    o.scratch = std::filesystem::path(state_dir.empty() ? cfg.paths.state : state_dir) / "read";
    if (!metrics_file.empty()) o.metrics_file = metrics_file;
    if (!worm.empty()) o.worm = worm;
    else if (cfg.paths.worm_set) o.worm = cfg.paths.worm;
    o.batch_records = batch;
    if (!token_file.empty()) o.transport.token = flk::transport::read_token_file(token_file);
    o.transport.ca_file = ca_file;
    o.transport.stall_timeout = flk::timeutil::parse_duration(timeout);
    o.error = [&](const std::string& m) { tool.notice("error: " + m); };
    o.info = [&](const std::string& m) { tool.info(m); };
    o.emit = [](const std::string& line) { flk::wal::write_out(stdout, line + "\n"); };

    flk::crr::Reader reader(std::move(o));
    flk::cli::on_stop_signal([&](int) { reader.stop(); });
    return follow ? reader.follow(flk::timeutil::parse_duration(interval)) : reader.run_once();
  });
}
