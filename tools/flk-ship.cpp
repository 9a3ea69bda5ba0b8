// flk-ship: ship sealed WAL segments to peer regions. See flk-ship(1).
#include <cstdio>
#include <optional>
#include <string>
#include <vector>

#include "flk/cli/cli.hpp"
#include "flk/crr/ship.hpp"
#include "flk/util/error.hpp"
#include "flk/wal/commands.hpp"

int main(int argc, char** argv) {
  flk::cli::Tool tool("flk-ship", "flk-ship: ship sealed WAL segments to peer regions");
  CLI::App& app = tool.app();
  std::vector<std::string> only;
  std::string to, wal_dir, state_dir, token_file, ca_file, metrics_file, connect_timeout = "10s", timeout = "30s";
  std::string initial_backoff, max_backoff, deadline;
  std::optional<uint64_t> after;
  bool once = false, follow = false, advance = false;
  app.add_option("--target", only, "ship to this target region only (repeatable; default: every target of the config)")
      ->type_name("REGION")
      ->check(flk::cli::region_validator());
  app.add_option("--to", to, "ship every target to URL instead of its configured endpoint: file:///DIR, "
                             "http(s)://HOST:PORT or - (stdout)")
      ->type_name("URL");
  auto* o_once = app.add_flag("--once", once, "ship what is sealed now and exit (the default)");
  app.add_flag("--follow", follow, "keep running, shipping each segment as it is sealed")->excludes(o_once);
  app.add_option("--wal-dir", wal_dir, "the WAL to ship from (default: paths.wal)")->type_name("DIR");
  app.add_option("--state-dir", state_dir, "where ship watermarks are kept (default: paths.state)")->type_name("DIR");
  app.add_option("--token-file", token_file, "present the bearer token in FILE to every target")->type_name("FILE");
  app.add_option("--ca-file", ca_file, "verify HTTPS targets with these CA certificates")->type_name("FILE");
  app.add_option("--metrics-file", metrics_file, "write Prometheus metrics to FILE (atomically)")->type_name("FILE");
  app.add_option("--after", after, "ship the segments after SEQ instead of after each target's watermark")
      ->type_name("SEQ");
  app.add_flag("--advance", advance, "with --to -: advance the watermarks once a segment is written to stdout");
  app.add_option("--connect-timeout", connect_timeout, "connection timeout (default 10s)")
      ->type_name("DURATION")
      ->check(flk::cli::duration_validator());
  app.add_option("--timeout", timeout, "a transfer that moves no byte this long fails (default 30s)")
      ->type_name("DURATION")
      ->check(flk::cli::duration_validator());
  app.add_option("--initial-backoff", initial_backoff, "first retry wait (default: crr.retry.initialBackoff)")
      ->type_name("DURATION")
      ->check(flk::cli::duration_validator());
  app.add_option("--max-backoff", max_backoff, "longest retry wait (default: crr.retry.maxBackoff)")
      ->type_name("DURATION")
      ->check(flk::cli::duration_validator());
  app.add_option("--deadline", deadline, "give a segment up after retrying this long (default: crr.retry.deadline)")
      ->type_name("DURATION")
      ->check(flk::cli::duration_validator());

  return tool.run(argc, argv, [&]() -> int {
    const flk::config::Config& cfg = tool.config();
    using flk::timeutil::parse_duration;
    if (cfg.region.empty()) flk::fail(flk::Code::config, "no region: set 'region' in the configuration");
    if (advance && to != "-") flk::fail(flk::Code::usage, "--advance is only for --to -");
    if (follow && to == "-") flk::fail(flk::Code::usage, "--follow cannot ship to a stream (--to -)");
    flk::crr::ShipOptions o;
    o.source = cfg.region;
    o.wal = wal_dir.empty() ? cfg.paths.wal : wal_dir;
    o.state = state_dir.empty() ? cfg.paths.state : state_dir;
    o.targets = flk::crr::targets_from_config(cfg, only, to.empty() ? std::nullopt : std::optional<std::string>(to));
    for (auto& t : o.targets) {
      if (!token_file.empty()) t.options.token = flk::transport::read_token_file(token_file);
      if (!ca_file.empty()) t.options.ca_file = ca_file;
      t.options.connect_timeout = parse_duration(connect_timeout);
      t.options.stall_timeout = parse_duration(timeout);
    }
    o.initial_backoff = initial_backoff.empty() ? cfg.crr.retry.initial_backoff : parse_duration(initial_backoff);
    o.max_backoff = max_backoff.empty() ? cfg.crr.retry.max_backoff : parse_duration(max_backoff);
    o.deadline = deadline.empty() ? cfg.crr.retry.deadline : parse_duration(deadline);
    if (o.initial_backoff <= 0 || o.initial_backoff > o.max_backoff)
      flk::fail(flk::Code::usage, "the initial backoff must be positive and at most the maximum backoff");
    o.after = after;
    o.advance_stream = advance;
    if (!metrics_file.empty()) o.metrics_file = metrics_file;
    o.error = [&](const std::string& m) { tool.notice("error: " + m); };
    o.warn = [&](const std::string& m) { tool.warn("warning: " + m); };
    o.info = [&](const std::string& m) { tool.info(m); };
    // With --to -, stdout carries the segments: the per-segment JSON lines go to stderr.
    FILE* out = to == "-" ? stderr : stdout;
    o.emit = [out](const std::string& line) { flk::wal::write_out(out, line + "\n"); };

    flk::crr::Shipper shipper(std::move(o));
    flk::cli::on_stop_signal([&](int) { shipper.stop(); });
    return follow ? shipper.follow() : shipper.run_once();
  });
}
