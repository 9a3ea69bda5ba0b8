// flk-watermark: where every replication stream stands, and its lag. See
// flk-watermark(1).
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <fmt/ranges.h>

#include "flk/cli/cli.hpp"
#include "flk/crr/admin.hpp"
#include "flk/crr/lag.hpp"
#include "flk/metrics/metrics.hpp"
#include "flk/store/store.hpp"
#include "flk/util/error.hpp"
#include "flk/util/time.hpp"
#include "flk/wal/commands.hpp"

namespace {

using flk::Code;
namespace crr = flk::crr;
namespace timeutil = flk::timeutil;

void out(const std::string& line) { flk::wal::write_out(stdout, line + "\n"); }

std::string short_digest(const flk::hash::Digest& d, uint64_t sequence) {
  return sequence ? flk::hash::to_hex(d).substr(0, 12) : "-";
}

std::string when(int64_t t) { return t ? timeutil::format_rfc3339(t / timeutil::kSecond * timeutil::kSecond) : "-"; }

void print_positions(const std::vector<crr::Position>& rows, bool json) {
  if (json) {
    for (const auto& p : rows) out(crr::position_json(p));
    return;
  }
  std::string buf = fmt::format("{:<7} {:<16} {:<16} {:>10} {:>7}  {:<20}  {}\n", "KIND", "SOURCE", "TARGET",
                                "SEQUENCE", "BEHIND", "TIME", "SHA256");
  for (const auto& p : rows)
    buf += fmt::format("{:<7} {:<16} {:<16} {:>10} {:>7}  {:<20}  {}\n", p.kind, p.source, p.target, p.sequence,
                       p.behind ? std::to_string(*p.behind) : "-", when(p.time), short_digest(p.sha256, p.sequence));
  flk::wal::write_out(stdout, buf);
}

void print_lags(const std::vector<crr::StreamLag>& rows, bool json) {
  if (json) {
    for (const auto& l : rows) out(crr::stream_lag_json(l));
    return;
  }
  std::string buf = fmt::format("{:<16} {:<16} {:>9} {:>9} {:>9} {:>8} {:>8} {:>8}  {}\n", "SOURCE", "TARGET", "LAG",
                                "SHIP", "APPLY", "WAL", "SHIPPED", "APPLIED", "REPORT");
  auto secs = [](double s) { return fmt::format("{:.1f}s", s); };
  for (const auto& l : rows)
    buf += fmt::format("{:<16} {:<16} {:>9} {:>9} {:>9} {:>8} {:>8} {:>8}  {}\n", l.source, l.target, secs(l.seconds),
                       secs(l.ship_seconds), secs(l.apply_seconds), l.last, l.shipped,
                       l.applied ? std::to_string(l.applied->sequence) : "-",
                       l.stale ? "stale: " + l.error : l.applied ? "ok" : "none yet");
  flk::wal::write_out(stdout, buf);
}

std::string lag_metrics(const std::vector<crr::StreamLag>& rows, int64_t now) {
  flk::metrics::Text m;
  auto family = [&](const char* name, const char* type, const char* help, auto value) {
    m.family(name, type, help);
    for (const auto& l : rows) m.sample(name, {{"source", l.source}, {"target", l.target}}, value(l));
  };
  family("flk_crr_lag_seconds", "gauge",
         "Age of the oldest record written at the source and not yet applied at the target (0: none pending).",
         [](const crr::StreamLag& l) { return l.seconds; });
  family("flk_crr_lag_ship_seconds", "gauge", "Age of the oldest record not yet acknowledged by the target.",
         [](const crr::StreamLag& l) { return l.ship_seconds; });
  family("flk_crr_lag_apply_seconds", "gauge",
         "Age of the oldest record in the target's mailbox that its reader has not applied.",
         [](const crr::StreamLag& l) { return l.apply_seconds; });
  family("flk_crr_lag_stale", "gauge",
         "1 when the target could not be asked what it applied (the lag uses its last report).",
         [](const crr::StreamLag& l) { return l.stale ? 1.0 : 0.0; });
  family("flk_crr_applied_sequence", "gauge", "Last segment of the stream the target reports as applied.",
         [](const crr::StreamLag& l) { return double(l.applied ? l.applied->sequence : 0); });
  family("flk_crr_applied_report_age_seconds", "gauge", "Age of the target's last report of what it applied.",
         [now](const crr::StreamLag& l) {
           return l.applied && l.applied->time < now ? double(now - l.applied->time) / 1e9 : 0.0;
         });
  return m.str();
}

}  // namespace

int main(int argc, char** argv) {
  flk::cli::Tool tool("flk-watermark", "flk-watermark: where every replication stream stands, and its lag");
  CLI::App& app = tool.app();
  app.require_subcommand(1);

  std::vector<std::string> only;
  std::string wal_dir, state_dir, store_url, from, token_file, ca_file, metrics_file, target, source;
  std::string max_lag, timeout = "10m", interval = "1s", probe_timeout = "10s";
  std::optional<uint64_t> sequence;
  bool as_json = false, force = false;

  auto add_targets = [&](CLI::App* s) {
    s->add_option("--target", only, "this target region only (repeatable; default: every target of the config)")
        ->type_name("REGION")
        ->check(flk::cli::region_validator());
  };
  auto add_local = [&](CLI::App* s) {
    s->add_option("--wal-dir", wal_dir, "the local WAL (default: paths.wal)")->type_name("DIR");
    s->add_option("--state-dir", state_dir, "where ship watermarks and locks are kept (default: paths.state)")
        ->type_name("DIR");
  };
  auto add_probe = [&](CLI::App* s) {
    s->add_option("--probe-timeout", probe_timeout, "give up asking a target after this long (default 10s)")
        ->type_name("DURATION")
        ->check(flk::cli::duration_validator());
  };
  auto add_json = [&](CLI::App* s) {
    s->add_flag("--json", as_json, "JSON Lines even on a terminal (the default when stdout is not one)");
  };

  CLI::App* show = app.add_subcommand("show", "list every ship watermark (per target) and replay watermark (per source)");
  add_local(show);
  show->add_option("--store", store_url, "the dedup store holding the replay watermarks (default: dedup.url)")
      ->type_name("URL");
  add_json(show);

  auto add_move = [&](CLI::App* s) {
    auto* t = s->add_option("--target", target, "move the ship watermark of this target region")
                  ->type_name("REGION")
                  ->check(flk::cli::region_validator());
    auto* src = s->add_option("--source", source, "move the replay watermark of this source region")
                    ->type_name("REGION")
                    ->check(flk::cli::region_validator());
    t->excludes(src);
    add_local(s);
    s->add_option("--store", store_url, "with --source: the dedup store (default: dedup.url)")->type_name("URL");
    s->add_option("--from", from, "with --source: the mailbox holding the source's segments (default: paths.mailbox)")
        ->type_name("URL");
    s->add_option("--token-file", token_file, "with --from http(s): present the bearer token in FILE")
        ->type_name("FILE");
    s->add_option("--ca-file", ca_file, "with --from https: verify the peer with these CA certificates")
        ->type_name("FILE");
  };
  CLI::App* set = app.add_subcommand("set", "move a watermark to SEQUENCE (segments after it are shipped or applied)");
  add_move(set);
  set->add_option("sequence", sequence, "the last segment to count as shipped or applied")
      ->type_name("SEQUENCE")
      ->required();
  set->add_flag("--force", force, "move forward, skipping segments (they are never shipped or applied)");
  CLI::App* reset = app.add_subcommand("reset", "move a watermark back to 0: ship or apply everything again");
  add_move(reset);

  CLI::App* lag = app.add_subcommand("lag", "print flk_crr_lag_seconds of every stream from this region");
  add_targets(lag);
  add_local(lag);
  add_probe(lag);
  add_json(lag);

  CLI::App* wait = app.add_subcommand("wait", "wait until every stream's lag is under a bound (the drain step)");
  add_targets(wait);
  add_local(wait);
  add_probe(wait);
  wait->add_option("--max-lag", max_lag, "the bound, e.g. 60s")
      ->type_name("DURATION")
      ->required()
      ->check(flk::cli::duration_validator());
  wait->add_option("--timeout", timeout, "give up (exit 75) after this long (default 10m)")
      ->type_name("DURATION")
      ->check(flk::cli::duration_validator());
  wait->add_option("--interval", interval, "how often to measure (default 1s)")
      ->type_name("DURATION")
      ->check(flk::cli::duration_validator());

  CLI::App* metrics = app.add_subcommand("metrics", "print (or write) the lag metrics in the Prometheus text format");
  add_targets(metrics);
  add_local(metrics);
  add_probe(metrics);
  metrics->add_option("--metrics-file", metrics_file, "write them to FILE atomically instead of stdout")
      ->type_name("FILE");

  return tool.run(argc, argv, [&]() -> int {
    const flk::config::Config& cfg = tool.config();
    if (cfg.region.empty()) flk::fail(Code::config, "no region: set 'region' in the configuration");
    std::filesystem::path wal = wal_dir.empty() ? cfg.paths.wal : wal_dir;
    std::filesystem::path state = state_dir.empty() ? cfg.paths.state : state_dir;
    bool json = as_json || !::isatty(STDOUT_FILENO);

    if (*show) {
      std::vector<std::string> targets;
      if (cfg.crr.enabled) targets = cfg.targets();
      std::vector<crr::Position> rows = crr::ship_positions(cfg.region, state, wal, targets);
      std::string url = store_url.empty() ? cfg.dedup.url : store_url;
      // Showing must not create a store: an SQLite file that is not there has no watermarks.
      bool absent = url.starts_with("sqlite://") && !std::filesystem::exists(url.substr(9));
      if (absent) {
        tool.info(fmt::format("no store at '{}': no replay watermarks", url));
      } else {
        auto store = flk::store::open(url);
        std::optional<std::filesystem::path> mailbox;
        if (std::filesystem::is_directory(cfg.paths.mailbox)) mailbox = cfg.paths.mailbox;
        for (auto& p : crr::replay_positions(*store, cfg.region, mailbox)) rows.push_back(std::move(p));
      }
      print_positions(rows, json);
      return 0;
    }

    if (*set || *reset) {
      uint64_t seq = *set ? *sequence : 0;
      if (target.empty() && source.empty()) flk::fail(Code::usage, "give --target REGION or --source REGION");
      crr::Move m;
      if (!target.empty()) {
        if (!from.empty() || !store_url.empty())
          flk::fail(Code::usage, "--from and --store are for a replay watermark (--source)");
        auto targets = crr::targets_from_config(cfg, {target}, std::string("-"));  // its tenants; no transport
        m = crr::set_ship_watermark(cfg.region, targets.front(), state, wal, seq, force);
      } else {
        auto store = flk::store::open(store_url.empty() ? cfg.dedup.url : store_url);
        flk::transport::Options o;
        if (!token_file.empty()) o.token = flk::transport::read_token_file(token_file);
        o.ca_file = ca_file;
        auto mailbox = flk::transport::open(from.empty() ? "file://" + cfg.paths.mailbox : from, o);
        m = crr::set_replay_watermark(*store, *mailbox, source, cfg.region, state, seq, force);
      }
      if (m.forced)
        tool.notice(fmt::format("warning: skipped segments {}-{} of the {} stream {} -> {}", m.before.sequence + 1,
                                m.after.sequence, m.after.kind, m.after.source, m.after.target));
      out(crr::move_json(m));
      return 0;
    }

    // lag, wait, metrics: measured at this region, the source of its streams.
    auto targets = crr::targets_from_config(cfg, only, std::nullopt);
    std::vector<std::unique_ptr<flk::transport::Transport>> transports;
    for (auto& t : targets) {
      t.options.connect_timeout = t.options.stall_timeout = t.options.operation_timeout =
          timeutil::parse_duration(probe_timeout);
      transports.push_back(flk::transport::open(t.url, t.options));
    }
    auto measure = [&] {
      std::vector<crr::StreamLag> rows;
      int64_t now = timeutil::now();
      for (size_t i = 0; i < targets.size(); ++i)
        rows.push_back(crr::measure_lag(cfg.region, targets[i], *transports[i], wal, state, now));
      return rows;
    };

    if (*lag) {
      auto rows = measure();
      print_lags(rows, json);
      for (const auto& l : rows)
        if (l.stale) {
          tool.notice(fmt::format("error: target '{}': cannot learn what it applied: {}", l.target, l.error));
          return static_cast<int>(Code::temp_fail);
        }
      return 0;
    }

    if (*metrics) {
      auto rows = measure();
      std::string text = lag_metrics(rows, timeutil::now());
      if (metrics_file.empty()) flk::wal::write_out(stdout, text);
      else flk::metrics::write_file(metrics_file, text);
      return 0;
    }

    // wait
    double bound = static_cast<double>(timeutil::parse_duration(max_lag)) / 1e9;
    auto step = std::chrono::nanoseconds(timeutil::parse_duration(interval));
    auto deadline = std::chrono::steady_clock::now() + std::chrono::nanoseconds(timeutil::parse_duration(timeout));
    auto next_progress = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    for (;;) {
      auto rows = measure();
      std::vector<std::string> over;
      for (const auto& l : rows)
        if (l.stale || l.seconds >= bound)
          over.push_back(l.stale ? fmt::format("{} -> {}: unknown (stale: {})", l.source, l.target, l.error)
                                 : fmt::format("{} -> {}: {:.1f}s", l.source, l.target, l.seconds));
      auto now = std::chrono::steady_clock::now();
      if (over.empty() || now >= deadline) {
        print_lags(rows, json);
        if (over.empty()) return 0;
        tool.notice(fmt::format("error: lag still at or over {} after {}: {}", max_lag, timeout, fmt::join(over, "; ")));
        return static_cast<int>(Code::temp_fail);
      }
      if (now >= next_progress) {
        tool.warn(fmt::format("waiting for lag under {}: {}", max_lag, fmt::join(over, "; ")));
        next_progress = now + std::chrono::seconds(10);
      }
      std::this_thread::sleep_until(std::min(deadline, now + step));
    }
  });
}
