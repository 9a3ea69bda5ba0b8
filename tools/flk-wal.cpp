// flk-wal: write, read, list, verify and seal the inbox WAL. See flk-wal(1).
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>

#include "flk/cli/cli.hpp"
#include "flk/util/error.hpp"
#include "flk/wal/commands.hpp"

namespace {

std::atomic<bool> g_seal_request{false};
std::atomic<bool> g_stop_request{false};

// SIGUSR1: seal now (`flk-wal seal` sends it); SIGTERM, SIGINT: finish the batch in
// hand, seal, exit. No SA_RESTART: the wait for input returns so the flags are seen.
void install_append_signals() {
  struct sigaction sa = {};
  sigemptyset(&sa.sa_mask);
  sa.sa_handler = [](int) { g_seal_request = true; };
  sigaction(SIGUSR1, &sa, nullptr);
  sa.sa_handler = [](int) { g_stop_request = true; };
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
}

}  // namespace

int main(int argc, char** argv) {
  flk::cli::Tool tool("flk-wal", "flk-wal: write, read, list, verify and seal the inbox WAL");
  CLI::App& app = tool.app();
  app.require_subcommand(1);

  std::string wal_dir, region, segment_bytes, segment_age, since;
  bool keep_open = false, as_json = false, wait_lock = false;
  std::vector<std::string> files;

  auto add_dir = [&](CLI::App* s) {
    s->add_option("--wal-dir", wal_dir, "WAL directory (default: paths.wal of the configuration)")->type_name("DIR");
  };
  CLI::App* append = app.add_subcommand("append", "append JSON Lines records from stdin; acknowledge each once durable");
  add_dir(append);
  append->add_option("--region", region, "this region (default: region of the configuration)")
      ->type_name("REGION")->check(flk::cli::region_validator());
  append->add_option("--segment-bytes", segment_bytes, "seal a segment before it grows past SIZE (default 64MiB)")
      ->type_name("SIZE")->check(flk::cli::size_validator());
  append->add_option("--segment-age", segment_age, "seal a segment DURATION after its first record (default 1s)")
      ->type_name("DURATION")->check(flk::cli::duration_validator());
  append->add_flag("--keep-open", keep_open, "at end of input, leave the open segment unsealed");
  append->add_flag("--wait", wait_lock, "wait for the WAL lock instead of failing when another writer holds it");

  CLI::App* cat = app.add_subcommand("cat", "print records as JSON Lines");
  add_dir(cat);
  cat->add_option("--since", since, "only records with ts at or after TIME (RFC 3339, 'now', '-5m', '@unix')")
      ->type_name("TIME");
  cat->add_option("segments", files, "segment files to read instead of a WAL directory")->type_name("SEGMENT");

  CLI::App* ls = app.add_subcommand("ls", "list segments");
  add_dir(ls);
  ls->add_flag("--json", as_json, "JSON Lines even on a terminal");

  CLI::App* verify = app.add_subcommand("verify", "check every record checksum and the segment hash chain");
  add_dir(verify);

  CLI::App* seal = app.add_subcommand("seal", "seal the open segment now");
  add_dir(seal);
  seal->add_option("--region", region, "this region (default: the configuration's, else the WAL's own)")
      ->type_name("REGION")->check(flk::cli::region_validator());
  seal->add_flag("--wait", wait_lock, "wait for the WAL lock instead of failing when another writer holds it");

  return tool.run(argc, argv, [&]() -> int {
    const flk::config::Config& cfg = tool.config();
    if (wal_dir.empty()) wal_dir = cfg.paths.wal;
    auto writer_options = [&] {
      flk::wal::WriterOptions o;
      o.dir = wal_dir;
      o.region = region.empty() ? cfg.region : region;
      if (o.region.empty() && *seal) o.region = flk::wal::wal_region(wal_dir).value_or("");
      if (o.region.empty())
        flk::fail(flk::Code::usage, "no region: give --region or set 'region' in the configuration");
      o.segment_bytes = segment_bytes.empty() ? cfg.wal.segment_bytes : flk::timeutil::parse_size(segment_bytes);
      o.segment_age = segment_age.empty() ? cfg.wal.segment_age : flk::timeutil::parse_duration(segment_age);
      o.wait_for_lock = wait_lock;
      o.log = [&](const std::string& m) { tool.notice(m); };
      return o;
    };

    if (*append) {
      install_append_signals();
      auto w = flk::wal::Writer::open(writer_options());
      flk::json::LineReader in(STDIN_FILENO, "stdin");
      flk::wal::AppendOptions opts;
      opts.keep_open = keep_open;
      opts.info = [&](const std::string& m) { tool.info(m); };
      opts.seal_request = &g_seal_request;
      opts.stop_request = &g_stop_request;
      auto stats = flk::wal::append_jsonl(*w, in, stdout, opts);
      tool.info(fmt::format("appended {} record{}, sealed {} segment{}", stats.records, stats.records == 1 ? "" : "s",
                            stats.sealed, stats.sealed == 1 ? "" : "s"));
      return 0;
    }
    if (*cat) {
      std::optional<flk::timeutil::Nanos> t;
      if (!since.empty()) {
        try {
          t = flk::timeutil::parse_time_arg(since, flk::timeutil::now());
        } catch (const flk::Error& e) {
          throw flk::Error(flk::Code::usage, fmt::format("--since: {}", e.what()));
        }
      }
      std::vector<std::filesystem::path> paths(files.begin(), files.end());
      bool whole_wal = paths.empty();
      if (whole_wal) paths = flk::wal::segment_paths(wal_dir);
      flk::wal::cat(paths, t, whole_wal, stdout);
      return 0;
    }
    if (*ls) {
      flk::wal::ls(wal_dir, as_json || !::isatty(STDOUT_FILENO), stdout);
      return 0;
    }
    if (*verify) {
      int bad = 0;
      bool ok = flk::wal::verify_wal(wal_dir, [&](const flk::wal::VerifyResult& v) {
        std::string line;
        flk::json::Object o(line);
        o.unum("segment", v.file.sequence)
            .str("state", v.file.sealed ? "sealed" : "open")
            .boolean("ok", v.ok)
            .unum("records", v.records)
            .unum("bytes", v.bytes)
            .str("sha256", v.sha256 ? flk::hash::to_hex(*v.sha256) : "");
        if (!v.ok) o.str("problem", v.problem);
        if (!v.note.empty()) o.str("note", v.note);
        o.close();
        flk::wal::write_out(stdout, line + "\n");
        if (!v.ok) {
          ++bad;
          std::fprintf(stderr, "flk-wal: error: segment '%s': %s\n", v.file.path.c_str(), v.problem.c_str());
        } else if (!v.note.empty()) {
          tool.warn(fmt::format("warning: segment '{}': {}", v.file.path.string(), v.note));
        }
      });
      if (!ok) {
        std::fprintf(stderr, "flk-wal: error: WAL '%s': %d damaged segment%s\n", wal_dir.c_str(), bad,
                     bad == 1 ? "" : "s");
        return static_cast<int>(flk::Code::data);
      }
      return 0;
    }
    if (*seal) {
      std::unique_ptr<flk::wal::Writer> w;
      try {
        w = flk::wal::Writer::open(writer_options());
      } catch (const flk::Error& e) {
        if (e.code() != flk::Code::temp_fail || wait_lock) throw;
        // A running `flk-wal append` holds the WAL: ask it to seal.
        auto sealed = flk::wal::request_seal(wal_dir, 10 * flk::timeutil::kSecond);
        if (!sealed) {
          tool.info("nothing to seal: the open segment holds no records");
          return 0;
        }
        flk::wal::write_out(stdout, flk::wal::sealed_json(*sealed) + "\n");
        return 0;
      }
      if (auto s = w->seal()) flk::wal::write_out(stdout, flk::wal::sealed_json(*s) + "\n");
      else tool.info("nothing to seal: the open segment holds no records");
      return 0;
    }
    return 0;
  });
}
