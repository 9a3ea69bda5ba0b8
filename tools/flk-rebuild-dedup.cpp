// flk-rebuild-dedup: rebuild a lost or damaged dedup store from the WAL. See
// flk-rebuild-dedup(1).
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include "flk/cli/cli.hpp"
#include "flk/rebuild/rebuild.hpp"
#include "flk/util/error.hpp"
#include "flk/util/json.hpp"
#include "flk/wal/commands.hpp"

namespace {

void stored_json(flk::json::Object& o, std::string_view key, const std::optional<flk::store::Stored>& s) {
  if (!s) {
    o.null(key);
    return;
  }
  std::string rec;
  flk::append_record_json(rec, s->record);
  rec.pop_back();  // extend the record's object with its digest
  rec += ",\"digest\":\"" + flk::hash::to_hex(s->digest) + "\"}";
  o.raw(key, rec);
}

}  // namespace

int main(int argc, char** argv) {
  flk::cli::Tool tool("flk-rebuild-dedup", "flk-rebuild-dedup: rebuild a region's dedup store from its WAL");
  CLI::App& app = tool.app();
  std::string region, since, wal_dir, mailbox, store_url, sort_memory, temp_dir;
  bool verify = false, in_place = false;
  app.add_option("--region", region, "the region whose store is rebuilt (default: the configuration's)")
      ->type_name("REGION")
      ->check(flk::cli::region_validator());
  app.add_option("--since-time", since, "replay only records with ts at or after TIME, merging into the store")
      ->type_name("TIME");
  app.add_option("--wal-dir", wal_dir, "the region's WAL (default: paths.wal)")->type_name("DIR");
  bool no_mailbox = false;
  app.add_option("--mailbox", mailbox,
                 "also replay what peers shipped to the region, MAILBOX/SOURCE/REGION/ (default: paths.mailbox if it "
                 "exists)")
      ->type_name("DIR");
  app.add_flag("--no-mailbox", no_mailbox, "replay the region's own WAL only");
  app.add_option("--store", store_url, "the store (default: dedup.url)")->type_name("URL");
  app.add_flag("--verify", verify, "compare the rebuilt content with the store, print differences, change nothing");
  app.add_flag("--in-place", in_place, "merge into the existing store instead of building a fresh one and swapping");
  app.add_option("--sort-memory", sort_memory, "memory for sorting before spilling to disk (default 256MiB)")
      ->type_name("SIZE")
      ->check(flk::cli::size_validator());
  app.add_option("--temp-dir", temp_dir, "where sort runs go (default: $TMPDIR, else /var/tmp)")->type_name("DIR");
  unsigned threads = 0;
  app.add_option("--threads", threads, "threads that read and sort segments (default: one per CPU)")
      ->type_name("N")
      ->check(CLI::Range(1u, 256u));

  return tool.run(argc, argv, [&]() -> int {
    const flk::config::Config& cfg = tool.config();
    flk::rebuild::Options o;
    o.region = region.empty() ? cfg.region : region;
    if (o.region.empty()) flk::fail(flk::Code::usage, "no region: give --region or set 'region' in the configuration");
    o.wal_dir = wal_dir.empty() ? cfg.paths.wal : wal_dir;
    if (!mailbox.empty() && no_mailbox) flk::fail(flk::Code::usage, "--mailbox and --no-mailbox exclude each other");
    std::error_code ec;
    if (!mailbox.empty()) o.mailbox = mailbox;
    else if (!no_mailbox && std::filesystem::is_directory(cfg.paths.mailbox, ec)) o.mailbox = cfg.paths.mailbox;
    o.store_url = store_url.empty() ? cfg.dedup.url : store_url;
    if (!since.empty()) {
      try {
        o.since = flk::timeutil::parse_time_arg(since, flk::timeutil::now());
      } catch (const flk::Error& e) {
        throw flk::Error(flk::Code::usage, fmt::format("--since-time: {}", e.what()));
      }
    }
    o.in_place = in_place;
    o.verify = verify;
    if (!sort_memory.empty()) o.sort_memory = flk::timeutil::parse_size(sort_memory);
    o.threads = threads;
    if (!temp_dir.empty()) o.temp_dir = temp_dir;
    else if (const char* t = std::getenv("TMPDIR"); t && *t) o.temp_dir = t;
    else o.temp_dir = "/var/tmp";
    if (::isatty(STDERR_FILENO) && tool.verbosity() >= 0)
      o.progress = [&](const std::string& m) { std::fprintf(stderr, "flk-rebuild-dedup: %s\n", m.c_str()); };
    o.warn = [&](const std::string& m) { tool.warn("warning: " + m); };

    auto sum = flk::rebuild::run(o, [&](const flk::rebuild::Difference& d) {
      std::string line;
      flk::json::Object obj(line);
      obj.str("pcs_id", d.pcs_id).str("kind", !d.live ? "missing" : !d.rebuilt ? "extra" : "different");
      stored_json(obj, "store", d.live);
      stored_json(obj, "rebuilt", d.rebuilt);
      obj.close();
      flk::wal::write_out(stdout, line + "\n");
    });

    std::string line;
    flk::json::Object s(line);
    s.str("region", o.region)
        .str("store", flk::store::mask_url(o.store_url))
        .str("mode", verify ? "verify" : (in_place || o.since) ? "in-place" : "fresh")
        .unum("segments", sum.segments)
        .unum("records", sum.records)
        .unum("winners", sum.winners)
        .unum("conflicts", sum.conflicts);
    if (verify) s.unum("differences", sum.differences);
    if (in_place || o.since)
      s.unum("inserted", sum.applied.inserted).unum("replaced", sum.applied.replaced).unum("duplicates", sum.applied.duplicates);
    s.unum("sort_runs", sum.runs).unum("watermarks", sum.watermarks.size()).str("digest", flk::hash::to_hex(sum.digest));
    s.real("seconds", sum.seconds);
    s.close();
    flk::wal::write_out(stdout, line + "\n");
    return verify && sum.differences > 0 ? static_cast<int>(flk::Code::diverged) : 0;
  });
}
