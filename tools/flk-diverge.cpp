// flk-diverge: find pcs_ids whose outcomes differ between regions, log them to the WORM
// ledger, reconcile split-brain. See flk-diverge(1).
#include <unistd.h>

#include <cstdio>
#include <optional>
#include <set>
#include <string>
#include <unordered_set>
#include <vector>

#include "flk/cli/cli.hpp"
#include "flk/diverge/digest.hpp"
#include "flk/diverge/diverge.hpp"
#include "flk/ledger/ledger.hpp"
#include "flk/metrics/metrics.hpp"
#include "flk/util/error.hpp"
#include "flk/util/fs.hpp"
#include "flk/util/json.hpp"
#include "flk/util/time.hpp"
#include "flk/wal/commands.hpp"

namespace {

using flk::Code;
namespace dv = flk::diverge;
namespace timeutil = flk::timeutil;

void out(const std::string& line) { flk::wal::write_out(stdout, line + "\n"); }

// The stores to compare: --store REGION=URL…, else the configuration's diverge.stores
// with this region's dedup.url.
std::vector<dv::RegionStore> open_stores(const std::vector<std::string>& args, const flk::config::Config& cfg) {
  std::map<std::string, std::string> urls;
  if (args.empty()) {
    urls = cfg.diverge.stores;
    if (!cfg.region.empty() && !urls.count(cfg.region)) urls[cfg.region] = cfg.dedup.url;
  }
  for (const auto& a : args) {
    auto eq = a.find('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == a.size())
      flk::fail(Code::usage, "--store '{}': expected REGION=URL", flk::store::mask_url(a));
    std::string region = a.substr(0, eq);
    flk::check_region(region, "--store region");
    if (!urls.emplace(region, a.substr(eq + 1)).second) flk::fail(Code::usage, "--store: region '{}' given twice", region);
  }
  if (urls.size() < 2)
    flk::fail(Code::usage,
              "give the stores of at least two regions (--store REGION=URL, or diverge.stores in the configuration)");
  std::vector<dv::RegionStore> stores;
  for (const auto& [region, url] : urls) stores.push_back({region, flk::store::open(url), url});
  return stores;
}

// The fingerprints of the divergences a ledger already holds (so that a scan appends
// only new findings).
std::unordered_set<std::string> logged_fingerprints(const std::filesystem::path& worm) {
  std::unordered_set<std::string> out;
  std::string text;
  try {
    text = flk::fs::read_file(worm);
  } catch (const flk::Error& e) {
    if (e.code() == Code::no_input) return out;
    throw;
  }
  static constexpr std::string_view key = "\"fingerprint\":\"";
  for (size_t pos = 0; (pos = text.find(key, pos)) != std::string::npos;) {
    pos += key.size();
    if (pos + 64 <= text.size()) out.insert(text.substr(pos, 64));
  }
  return out;
}

std::string fingerprint(const std::string& finding_line) {
  return flk::hash::to_hex(flk::hash::sha256(finding_line));
}

}  // namespace

int main(int argc, char** argv) {
  flk::cli::Tool tool("flk-diverge", "flk-diverge: find, log and reconcile outcomes that differ between regions");
  CLI::App& app = tool.app();
  app.require_subcommand(1);

  std::vector<std::string> store_args;
  std::string worm, metrics_file, buckets_arg, output, digest_store, compare_store, region, head;
  uint32_t bucket_count = dv::kDefaultBuckets;
  bool no_worm = false, apply = false;
  std::vector<std::string> files;

  auto add_stores = [&](CLI::App* s) {
    s->add_option("--store", store_args,
                  "REGION=URL: a region's dedup store (repeatable; default: diverge.stores and this region's dedup.url)")
        ->type_name("REGION=URL");
    s->add_option("--buckets", buckets_arg,
                  "compare only the pcs_ids in these buckets: N,N,… or @FILE (the output of compare)")
        ->type_name("LIST");
    s->add_option("--bucket-count", bucket_count, "how many buckets the list refers to (default 65536)")
        ->type_name("N")
        ->check(CLI::Range(1u, dv::kMaxBuckets));
    s->add_option("--worm", worm, "the WORM ledger (default: paths.worm)")->type_name("FILE");
    s->add_flag("--no-worm", no_worm, "do not write the WORM ledger");
  };

  CLI::App* scan = app.add_subcommand("scan", "print (and log) every pcs_id whose outcome differs or is missing");
  add_stores(scan);
  scan->add_option("--metrics-file", metrics_file, "write flk_crr_divergence_count to FILE (atomically)")
      ->type_name("FILE");

  CLI::App* reconcile = app.add_subcommand("reconcile", "install the first write of every divergent pcs_id everywhere");
  add_stores(reconcile);
  reconcile->add_flag("--apply", apply, "change the stores (default: print the plan only)");

  CLI::App* digest = app.add_subcommand("digest", "write a compact bucketed digest of a store");
  digest->add_option("--store", digest_store, "the store (default: dedup.url)")->type_name("URL");
  digest->add_option("--buckets", bucket_count, "how many buckets (default 65536)")
      ->type_name("N")
      ->check(CLI::Range(1u, dv::kMaxBuckets));
  digest->add_option("--output", output, "write it to FILE (atomically) instead of stdout")->type_name("FILE");
  digest->add_option("--region", region, "the region it describes (default: the configuration's)")
      ->type_name("REGION")
      ->check(flk::cli::region_validator());

  CLI::App* compare =
      app.add_subcommand("compare", "name the buckets in which two digests, or a digest and a store, differ");
  compare->add_option("digests", files, "two digest files, or one with --store ('-': standard input)")
      ->type_name("A [B]")
      ->expected(1, 2)
      ->required();
  compare->add_option("--store", compare_store, "compare A with this store's digest (made with A's bucket count)")
      ->type_name("URL");

  std::string extract_store;
  CLI::App* extract = app.add_subcommand(
      "extract", "copy the records of some buckets into a new SQLite store file, for a peer to compare with its own");
  extract->add_option("--store", extract_store, "the store (default: dedup.url)")->type_name("URL");
  extract->add_option("--buckets", buckets_arg, "the buckets: N,N,… or @FILE (the output of compare)")
      ->type_name("LIST")
      ->required();
  extract->add_option("--bucket-count", bucket_count, "how many buckets the list refers to (default 65536)")
      ->type_name("N")
      ->check(CLI::Range(1u, dv::kMaxBuckets));
  extract->add_option("--output", output, "the new store file (must not exist)")->type_name("FILE")->required();

  CLI::App* verify_log = app.add_subcommand("verify-log", "check the WORM ledger's hash chain");
  verify_log->add_option("file", worm, "the ledger (default: paths.worm)")->type_name("FILE");
  verify_log->add_option("--head", head, "also check that the ledger still holds this head (SEQ:HEX, kept elsewhere)")
      ->type_name("SEQ:HEX");

  return tool.run(argc, argv, [&]() -> int {
    const flk::config::Config& cfg = tool.config();
    std::filesystem::path worm_file = worm.empty() ? cfg.paths.worm : worm;

    if (*verify_log) {
      std::optional<flk::ledger::Head> expected;
      if (!head.empty()) {
        try {
          expected = flk::ledger::parse_head(head);
        } catch (const flk::Error& e) {
          flk::fail(Code::usage, "--head: {}", e.what());
        }
      }
      if (!std::filesystem::exists(worm_file)) flk::fail(Code::no_input, "ledger '{}': no such file", worm_file.string());
      flk::ledger::VerifyResult v = flk::ledger::verify(worm_file, expected);
      std::string line;
      flk::json::Object j(line);
      j.str("ledger", worm_file.string()).boolean("ok", v.ok).unum("lines", v.head.seq);
      j.str("head", flk::ledger::format_head(v.head));
      if (!v.ok) j.unum("bad_line", v.bad_line).unum("offset", v.offset).str("why", v.why);
      j.close();
      out(line);
      v.check();
      return 0;
    }

    if (*digest) {
      // Binary: refused on a terminal before the store is read (as gzip does).
      if (output.empty() && ::isatty(STDOUT_FILENO))
        flk::fail(Code::usage, "a digest is binary: not writing it to a terminal (give --output FILE, or redirect)");
      auto s = flk::store::open(digest_store.empty() ? cfg.dedup.url : digest_store);
      dv::Digest d = dv::digest_store(*s, bucket_count, region.empty() ? cfg.region : region);
      // Atomically to a file (a reader never sees half a digest), or to stdout.
      std::string bytes = dv::digest_bytes(d);
      if (output.empty()) flk::wal::write_out(stdout, bytes);
      else flk::fs::write_file_atomic(output, bytes);
      tool.info(fmt::format("{} records in {} buckets", d.records, d.buckets));
      return 0;
    }

    if (*extract) {
      std::vector<uint32_t> list = dv::parse_bucket_list(buckets_arg, bucket_count);
      auto s = flk::store::open(extract_store.empty() ? cfg.dedup.url : extract_store);
      dv::Extract x = dv::extract_buckets(*s, list, bucket_count, output);
      std::string line;
      flk::json::Object j(line);
      j.str("output", output).unum("buckets", list.size()).unum("bucket_count", bucket_count);
      j.unum("records", x.records).unum("evidence", x.evidence).unum("bytes", x.bytes);
      j.close();
      out(line);
      tool.info(fmt::format("{} records and {} evidence rows of {} buckets (of {}) in '{}', {} bytes; compare them "
                            "with scan --buckets and this same list and --bucket-count",
                            x.records, x.evidence, list.size(), bucket_count, output, x.bytes));
      return 0;
    }

    if (*compare) {
      if ((files.size() == 2) == !compare_store.empty())
        flk::fail(Code::usage, "compare: give two digest files, or one and --store URL");
      if (files.size() == 2 && files[0] == "-" && files[1] == "-")
        flk::fail(Code::usage, "compare: standard input ('-') can be only one of the digests");
      dv::Digest a = dv::read_digest(files[0]);
      // With --store the other side is a store digested here, with A's bucket count: of
      // the two digests, only A has to travel.
      dv::Digest b = compare_store.empty()
                         ? dv::read_digest(files[1])
                         : dv::digest_store(*flk::store::open(compare_store), a.buckets, cfg.region);
      std::vector<uint32_t> differ = dv::compare(a, b);
      for (uint32_t i : differ) {
        std::string line;
        flk::json::Object j(line);
        j.unum("bucket", i).unum("buckets", a.buckets).unum("a_count", a.b[i].count).unum("b_count", b.b[i].count);
        j.close();
        out(line);
      }
      tool.info(fmt::format("{} of {} buckets differ ({} and {} records)", differ.size(), a.buckets, a.records,
                            b.records));
      return differ.empty() ? 0 : 1;
    }

    // scan, reconcile
    std::vector<dv::RegionStore> stores = open_stores(store_args, cfg);
    std::optional<std::vector<uint32_t>> buckets;
    if (!buckets_arg.empty()) buckets = dv::parse_bucket_list(buckets_arg, bucket_count);
    for (auto& s : stores) dv::check_extract(*s.store, s.region, buckets ? &*buckets : nullptr, bucket_count);
    dv::Expect expect = dv::Expect::from_config(cfg);
    std::optional<flk::ledger::Ledger> ledger;
    if (!no_worm && (*scan || apply)) {  // a dry run logs nothing
      flk::fs::make_dirs(std::filesystem::absolute(worm_file).parent_path());
      ledger.emplace(worm_file);
    }
    int64_t started = timeutil::monotonic_now();

    if (*scan) {
      std::unordered_set<std::string> logged;
      if (ledger) logged = logged_fingerprints(worm_file);
      std::vector<std::string> entries;
      uint64_t appended = 0;
      auto flush = [&] {
        if (ledger && !entries.empty()) ledger->append_all(entries);
        appended += entries.size();
        entries.clear();
      };
      dv::ScanStats st = dv::scan(stores, expect, buckets ? &*buckets : nullptr, bucket_count, [&](const dv::Finding& f) {
        std::string line = dv::finding_json(f, stores);
        out(line);
        if (!ledger) return;
        std::string fp = fingerprint(line);
        if (!logged.insert(fp).second) return;  // logged by an earlier scan
        std::string e;
        flk::json::Object j(e);
        j.str("event", "divergence").str("fingerprint", fp).raw("finding", line);
        j.close();
        entries.push_back(std::move(e));
        if (entries.size() >= 1000) flush();
      });
      flush();
      double secs = static_cast<double>(timeutil::monotonic_now() - started) / 1e9;
      tool.info(fmt::format("{} pcs_ids compared in {:.1f}s: {} conflict(s), {} missing; {} new in the ledger", st.ids,
                            secs, st.conflicts, st.missing, appended));
      if (!metrics_file.empty()) {
        flk::metrics::Text m;
        m.family("flk_crr_divergence_count", "gauge", "Divergent pcs_ids found by the last scan, by kind.");
        m.sample("flk_crr_divergence_count", {{"kind", "conflict"}}, double(st.conflicts));
        m.sample("flk_crr_divergence_count", {{"kind", "missing"}}, double(st.missing));
        m.family("flk_crr_divergence_scanned_ids", "gauge", "Distinct pcs_ids the last scan compared.");
        m.sample("flk_crr_divergence_scanned_ids", {}, double(st.ids));
        m.family("flk_crr_divergence_scan_duration_seconds", "gauge", "How long the last scan took.");
        m.sample("flk_crr_divergence_scan_duration_seconds", {}, secs);
        m.family("flk_crr_divergence_scan_timestamp_seconds", "gauge", "When the last scan ended.");
        m.sample("flk_crr_divergence_scan_timestamp_seconds", {}, double(timeutil::now()) / 1e9);
        flk::metrics::write_file(metrics_file, m.str());
      }
      return st.conflicts + st.missing ? 1 : 0;
    }

    // reconcile: the findings first (the stores are being read), then plan and apply in
    // chunks.
    std::vector<dv::Finding> findings;
    dv::scan(stores, expect, buckets ? &*buckets : nullptr, bucket_count,
             [&](const dv::Finding& f) { findings.push_back(f); });
    size_t installs = 0;
    constexpr size_t kChunk = 5000;
    for (size_t from = 0; from < findings.size(); from += kChunk) {
      std::vector<dv::Finding> chunk(findings.begin() + from,
                                     findings.begin() + std::min(findings.size(), from + kChunk));
      std::vector<dv::Plan> plans = dv::plan(stores, expect, chunk);
      if (apply) dv::apply(stores, plans);
      std::vector<std::string> entries;
      for (const auto& p : plans) {
        std::string line = dv::plan_json(p, stores, apply);
        out(line);
        for (bool b : p.install) installs += b;
        if (!apply) continue;
        std::string e;
        flk::json::Object j(e);
        j.str("event", "reconcile").raw("action", line);
        j.close();
        entries.push_back(std::move(e));
      }
      if (ledger && apply) ledger->append_all(entries);
    }
    tool.info(fmt::format("{} divergent pcs_id(s); {} install(s) {}", findings.size(), installs,
                          apply ? "applied" : "planned (dry run: --apply to change the stores)"));
    return !apply && !findings.empty() ? 1 : 0;
  });
}
