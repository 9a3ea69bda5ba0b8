#include "flk/crr/read.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <memory>
#include <thread>

#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "flk/metrics/metrics.hpp"
#include "flk/transport/stream.hpp"
#include "flk/util/fs.hpp"
#include "flk/util/json.hpp"
#include "flk/wal/dir.hpp"

namespace flk::crr {

namespace stdfs = std::filesystem;

Reader::Reader(ReadOptions o) : o_(std::move(o)) {
  check_region(o_.region, "region");
  for (const auto& s : o_.sources) check_region(s, "source region");
  if (o_.from != "-") tr_ = transport::open(o_.from, o_.transport);
  store_ = store::open(o_.store_url);
  if (o_.worm) {
    fs::make_dirs(stdfs::absolute(*o_.worm).parent_path());
    ledger_.emplace(*o_.worm);
  }
}

Reader::~Reader() = default;

void Reader::stop() {
  stop_ = true;
  if (tr_) tr_->interrupt();
}

bool Reader::verify_segment(const transport::Address& a, const stdfs::path& file, const hash::Digest& declared,
                            int64_t started) {
  const std::string what = fmt::format("source '{}' segment {}", a.source, a.sequence);
  // Where the source stands: its last segment verified in this pass, else the store's
  // watermark.
  std::optional<store::Watermark> wm;
  if (auto it = verified_.find(a.source); it != verified_.end()) wm = it->second;
  else wm = store().watermark(a.source);
  uint64_t have = wm ? wm->sequence : 0;
  if (a.sequence <= have) return false;  // applied before (a re-delivery): nothing to do
  if (a.sequence != have + 1)
    fail(Code::data, "source '{}': segment {} is missing (gap): replayed up to {}, the next one here is {}", a.source,
         have + 1, have, a.sequence);

  Verified v;
  v.address = a;
  v.started = started;
  wal::Header h;
  hash::Sha256 sha;
  try {
    std::error_code ec;
    const uint64_t capacity = stdfs::file_size(file, ec);
    if (ec) throw sys_error("cannot read", file.string(), ec.value());
    v.fields = std::make_unique_for_overwrite<char[]>(capacity);
    uint64_t used = 0;
    auto keep = [&](std::string_view s) {
      if (s.size() > capacity - used) fail(Code::internal, "{}: its records' fields outgrow the file", what);
      char* p = v.fields.get() + used;
      std::memcpy(p, s.data(), s.size());
      used += s.size();
      return std::string_view(p, s.size());
    };
    // Each record's digest is taken here, from the encoding the segment holds, so that
    // the apply (on its own thread) does not encode and hash every record again.
    wal::read_segment_views(
        file, true,
        [&](const RecordView& r, std::string_view encoding) {
          RecordView& k = v.records.emplace_back();
          k.outcome = r.outcome;
          k.ts = r.ts;
          k.region = keep(r.region);
          k.pcs_id = keep(r.pcs_id);
          k.tenant_id = keep(r.tenant_id);
          if (r.params) k.params = keep(*r.params);
          if (r.payload) k.payload = keep(*r.payload);
          v.digests.push_back(hash::sha256(encoding));
        },
        [&](const wal::Header& hh) { h = hh; }, &sha);
  } catch (const Error& e) {
    throw e.wrap(what);
  }
  v.sha256 = sha.finish();
  if (v.sha256 != declared)
    fail(Code::data, "{}: SHA-256 {} does not match the {} declared for it", what, hash::to_hex(v.sha256),
         hash::to_hex(declared));
  if (h.region != a.source) fail(Code::data, "{}: its header names region '{}'", what, h.region);
  if (h.sequence != a.sequence) fail(Code::data, "{}: its header names sequence {}", what, h.sequence);
  if (have > 0 && h.prev != wm->digest)
    fail(Code::data, "{}: broken chain: it follows a segment with digest {}, but segment {} was applied with digest {}",
         what, hash::to_hex(h.prev), have, hash::to_hex(wm->digest));
  if (have == 0 && a.sequence == 1 && !hash::is_zero(h.prev))
    fail(Code::data, "{}: segment 1 names a previous segment", what);
  v.watermark = {a.source, a.sequence, wal::chain_digest(h, v.sha256), timeutil::now()};
  verified_[a.source] = v.watermark;
  batch_records_ += v.records.size();
  batch_.push_back(std::move(v));
  if (batch_records_ >= std::min(o_.batch_records, kStepRecords)) flush();
  return true;
}

void Reader::flush() {
  drain();
  if (done_records_ >= o_.batch_records) commit();
  if (batch_.empty()) return;
  inflight_ = std::move(batch_);
  batch_.clear();
  batch_records_ = 0;
  apply_ = std::async(std::launch::async, [this] {
    std::vector<store::Store::Batch> batches;
    for (const Verified& v : inflight_) batches.push_back({v.records, &v.watermark, v.digests});
    store_->begin_group();
    return store_->apply_all(batches);
  });
}

void Reader::drop_uncommitted() {
  inflight_.clear();
  batch_.clear();
  batch_records_ = 0;
  done_.clear();
  done_records_ = 0;
  verified_.clear();
}

void Reader::drain() {
  if (!apply_.valid()) return;
  std::vector<store::ApplyStats> stats;
  try {
    stats = apply_.get();
  } catch (...) {
    drop_uncommitted();  // the store rolled the group back
    throw;
  }
  for (size_t i = 0; i < inflight_.size(); ++i) {
    Verified& v = inflight_[i];
    done_.push_back({v.address, v.records.size(), v.sha256, v.started, std::move(stats[i])});
    done_records_ += v.records.size();
  }
  inflight_.clear();
}

void Reader::commit() {
  drain();
  try {
    store_->commit_group();
  } catch (...) {
    drop_uncommitted();
    throw;
  }
  std::string now = timeutil::format_rfc3339(timeutil::now());
  std::vector<Applied> done = std::move(done_);
  done_.clear();
  done_records_ = 0;
  for (const Applied& d : done) {
    const store::ApplyStats& st = d.stats;
    if (ledger_ && !st.conflict_ids.empty()) log_conflicts(d.address, st.conflict_ids);
    SourceStats& ss = this->stats(d.address.source);
    ++ss.segments;
    ss.applied += st.inserted + st.replaced;
    ss.duplicates += st.duplicates;
    ss.later += st.later;
    ss.conflicts += st.conflicts;
    ss.dirty = true;
    if (ss.pending) --ss.pending;
    if (!o_.emit) continue;
    std::string line;
    json::Object j(line);
    j.str("source", d.address.source).unum("sequence", d.address.sequence).unum("records", d.records);
    j.unum("applied", st.inserted + st.replaced).unum("duplicates", st.duplicates).unum("later", st.later);
    j.unum("conflicts", st.conflicts).str("sha256", hash::to_hex(d.sha256));
    j.num("ms", (timeutil::monotonic_now() - d.started) / 1'000'000).str("time", now);
    j.close();
    o_.emit(line);
  }
}

void Reader::log_conflicts(const transport::Address& a, const std::vector<std::string>& ids) {
  // The segment is applied (its watermark moved): a failure to log is said, loudly, and
  // the conflicts stay as evidence in the store, where flk-diverge finds them again.
  try {
    std::map<std::string, std::vector<store::Evidence>> by_id;
    for (auto& e : store_->evidence(ids)) by_id[e.record.pcs_id].push_back(std::move(e));
    std::map<std::string, hash::Digest> winners;
    for (const auto& w : store_->lookup(ids)) winners[w.record.pcs_id] = w.digest;
    std::vector<std::string> entries;
    for (const auto& id : ids) {
      std::string e, records;
      json::Object j(e);
      j.str("event", "conflict").str("pcs_id", id).str("region", o_.region).str("source", a.source);
      j.unum("sequence", a.sequence);
      if (winners.count(id)) j.str("winner", hash::to_hex(winners[id]));
      records += '[';
      for (const auto& ev : by_id[id]) {
        if (records.size() > 1) records += ',';
        json::Object r(records);
        r.str("outcome", outcome_name(ev.record.outcome)).str("ts", timeutil::format_rfc3339(ev.record.ts));
        r.str("origin", ev.record.region).str("tenant_id", ev.record.tenant_id).str("digest", hash::to_hex(ev.digest));
        r.close();
      }
      records += ']';
      j.raw("records", records);
      j.close();
      entries.push_back(std::move(e));
    }
    ledger_->append_all(entries);
  } catch (const Error& e) {
    if (o_.error)
      o_.error(fmt::format("source '{}' segment {}: {} conflict(s) applied but not logged to the WORM ledger: {}",
                           a.source, a.sequence, ids.size(), e.what()));
  }
}

Code Reader::read_source(const std::string& source) {
  SourceStats& ss = stats(source);
  Code code = Code::ok;
  std::optional<fs::FileLock> lock;  // held until the end, the error path's flush included
  try {
    fs::make_dirs(o_.scratch);
    lock.emplace(o_.scratch / (source + ".lock"), false);  // one reader per source
    std::optional<store::Watermark> wm = store().watermark(source);
    std::vector<transport::Entry> entries = tr_->list(source, o_.region, wm ? wm->sequence : 0);
    ss.pending = entries.size();
    for (const transport::Entry& e : entries) {
      if (stop_) fail(Code::temp_fail, "interrupted");
      int64_t started = timeutil::monotonic_now();
      transport::Address a{source, o_.region, e.sequence};
      if (auto local = tr_->local_path(a)) {
        if (!verify_segment(a, *local, e.sha256, started) && ss.pending) --ss.pending;
        continue;
      }
      stdfs::path tmp = o_.scratch / fmt::format("{}-{}.wal", source, e.sequence);
      struct Remove {
        stdfs::path p;
        ~Remove() { ::unlink(p.c_str()); }
      } remove{tmp};
      hash::Digest declared = tr_->get(a, tmp);
      if (declared != e.sha256)
        fail(Code::protocol, "{}: source '{}' segment {}: listed with SHA-256 {}, served with {}", tr_->describe(), source,
             e.sequence, hash::to_hex(e.sha256), hash::to_hex(declared));
      if (!verify_segment(a, tmp, declared, started) && ss.pending) --ss.pending;
    }
    flush_all();
    verified_.clear();
    last_error_.erase(source);
    report_applied(source);
  } catch (const Error& e) {
    if (stop_) {
      try {
        commit();  // what was applied is committed, counted and said
      } catch (const Error&) {
      }
      drop_uncommitted();
      return Code::temp_fail;
    }
    std::string msg = std::string_view(e.what()).starts_with("source '")
                          ? std::string(e.what())
                          : fmt::format("source '{}': {}", source, e.what());
    if (o_.error && last_error_[source] != msg) o_.error(msg);  // --follow: said once, not every poll
    last_error_[source] = msg;
    code = e.code();
    ++ss.failures;
    ss.dirty = true;
    if (lock) {
      try {
        flush_all();             // the segments verified before the failure are sound
        report_applied(source);  // what was applied before the failure
      } catch (const Error&) {
      }
    }
    drop_uncommitted();
  }
  if (ss.ok != (code == Code::ok)) ss.dirty = true;
  ss.ok = code == Code::ok;
  save_stats(source);
  return code;
}

Reader::SourceStats& Reader::stats(const std::string& source) {
  SourceStats& ss = stats_[source];
  if (ss.loaded) return ss;
  ss.loaded = true;
  try {
    auto j = nlohmann::json::parse(fs::read_file(o_.scratch / (source + ".json")));
    ss.segments = j.value("segments_total", uint64_t{0});
    ss.applied = j.value("applied_total", uint64_t{0});
    ss.duplicates = j.value("duplicates_total", uint64_t{0});
    ss.later = j.value("later_total", uint64_t{0});
    ss.conflicts = j.value("conflicts_total", uint64_t{0});
    ss.failures = j.value("failures_total", uint64_t{0});
  } catch (const std::exception&) {
    // absent (first run) or unreadable: counters start again at 0, which Prometheus
    // takes for a restart
  }
  return ss;
}

void Reader::save_stats(const std::string& source) {
  SourceStats& ss = stats(source);
  if (!ss.dirty) return;
  try {
    std::string text;
    json::Object j(text);
    j.str("source", source).unum("segments_total", ss.segments).unum("applied_total", ss.applied);
    j.unum("duplicates_total", ss.duplicates).unum("later_total", ss.later).unum("conflicts_total", ss.conflicts);
    j.unum("failures_total", ss.failures);
    j.close();
    fs::make_dirs(o_.scratch);
    fs::AtomicFile f(o_.scratch / (source + ".json"));
    f.write(text + "\n");
    f.commit(false);  // counters for metrics: a crash may cost the last few, never the store
    ss.dirty = false;
  } catch (const Error& e) {
    if (o_.error) o_.error(e.what());
  }
}

void Reader::report_applied(const std::string& source) {
  std::optional<store::Watermark> wm = store().watermark(source);
  if (!wm) return;
  SourceStats& ss = stats(source);
  transport::Applied a{wm->sequence, wm->digest, wm->updated};
  if (ss.reported && ss.reported->sequence == a.sequence && ss.reported->sha256 == a.sha256) return;
  try {
    tr_->report_applied(source, o_.region, a);
    ss.reported = a;
  } catch (const Error& e) {
    // Only the source's lag measurement needs it: said (once), not fatal.
    std::string msg = fmt::format("source '{}': cannot report the replay position to {}: {}", source,
                                  tr_->describe(), e.what());
    if (o_.error && last_error_["report " + source] != msg) o_.error(msg);
    last_error_["report " + source] = msg;
  }
}

std::string Reader::metrics_text() {
  metrics::Text m;
  std::vector<std::pair<metrics::Labels, const SourceStats*>> rows;
  std::map<std::string, store::Watermark> wms;
  try {
    for (const auto& w : store().watermarks()) wms[w.source] = w;
  } catch (const Error&) {
  }
  for (const auto& [source, ss] : stats_) rows.push_back({{{"source", source}, {"target", o_.region}}, &ss});
  auto family = [&](const char* name, const char* type, const char* help, auto value) {
    m.family(name, type, help);
    for (const auto& [labels, ss] : rows) m.sample(name, labels, value(labels[0].second, *ss));
  };
  auto wm = [&](const std::string& s) { return wms.count(s) ? wms[s] : store::Watermark{}; };
  family("flk_crr_read_watermark_sequence", "gauge", "Last segment of the source applied to the local store.",
         [&](const std::string& s, const SourceStats&) { return double(wm(s).sequence); });
  family("flk_crr_read_watermark_timestamp_seconds", "gauge", "When the replay watermark last moved.",
         [&](const std::string& s, const SourceStats&) { return double(wm(s).updated) / 1e9; });
  family("flk_crr_read_pending_segments", "gauge", "Segments found after the watermark and not applied (last pass).",
         [](const std::string&, const SourceStats& ss) { return double(ss.pending); });
  family("flk_crr_read_segments_total", "counter", "Segments applied.",
         [](const std::string&, const SourceStats& ss) { return double(ss.segments); });
  m.family("flk_crr_read_records_total", "counter",
           "Records replayed, by result: applied (became the winner), duplicate, later (lost to an earlier write of "
           "the same outcome), conflict (outcome differs from the winner's; also counted as applied or later).");
  for (const auto& [labels, ss] : rows) {
    auto with = [&](const char* result) {
      metrics::Labels l = labels;
      l.emplace_back("result", result);
      return l;
    };
    m.sample("flk_crr_read_records_total", with("applied"), double(ss->applied));
    m.sample("flk_crr_read_records_total", with("duplicate"), double(ss->duplicates));
    m.sample("flk_crr_read_records_total", with("later"), double(ss->later));
    m.sample("flk_crr_read_records_total", with("conflict"), double(ss->conflicts));
  }
  family("flk_crr_read_failures_total", "counter", "Passes over the source that failed.",
         [](const std::string&, const SourceStats& ss) { return double(ss.failures); });
  family("flk_crr_read_up", "gauge", "1 when the last pass over the source succeeded, 0 when it failed.",
         [](const std::string&, const SourceStats& ss) { return ss.ok ? 1.0 : 0.0; });
  return m.str();
}

void Reader::write_metrics(bool force) {
  if (!o_.metrics_file) return;
  int64_t now = timeutil::monotonic_now();
  if (!force && now - metrics_written_ < timeutil::kSecond) return;
  metrics_written_ = now;
  try {
    metrics::write_file(*o_.metrics_file, metrics_text());
  } catch (const Error& e) {
    if (o_.error) o_.error(e.what());
  }
}

Code Reader::read_stream() {
  transport::StreamReader r(STDIN_FILENO, "stdin");
  stdfs::path tmp = o_.scratch / fmt::format("stream-{}.wal", ::getpid());
  std::map<std::string, fs::FileLock> locks;  // one reader per source, as in read_source
  Code code = Code::ok;
  try {
    fs::make_dirs(o_.scratch);
    while (auto s = r.next()) {
      const transport::Address& a = s->address;
      bool wanted = o_.sources.empty() ||
                    std::find(o_.sources.begin(), o_.sources.end(), a.source) != o_.sources.end();
      if (a.target != o_.region || !wanted) {
        if (a.target != o_.region)
          fail(Code::data, "stdin: segment {} of '{}' is for region '{}', not '{}'", a.sequence, a.source, a.target,
               o_.region);
        r.body([](std::string_view) {});
        continue;
      }
      if (!locks.count(a.source)) locks.emplace(a.source, fs::FileLock(o_.scratch / (a.source + ".lock"), false));
      int64_t started = timeutil::monotonic_now();
      {
        fs::Fd out = fs::Fd::open(tmp.string(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
        r.body([&](std::string_view b) { out.write_all(b); });
      }
      verify_segment(a, tmp, s->sha256, started);
    }
    flush_all();
  } catch (const Error& e) {
    if (o_.error) o_.error(e.what());
    code = e.code();
    try {
      flush_all();  // the segments verified before the failure are sound
    } catch (const Error& e2) {
      if (o_.error) o_.error(e2.what());
    }
    drop_uncommitted();
  }
  verified_.clear();
  ::unlink(tmp.c_str());
  for (auto& [source, ss] : stats_) {
    if (code != Code::ok) ++ss.failures, ss.dirty = true;
    ss.ok = code == Code::ok;
    save_stats(source);
  }
  write_metrics(true);
  return code;
}

int Reader::run_once() {
  if (!tr_) return static_cast<int>(read_stream());
  std::vector<std::string> sources = o_.sources;
  Code result = Code::ok;
  if (sources.empty()) {
    try {
      for (const auto& [s, t] : tr_->streams())
        if (t == o_.region && s != o_.region) sources.push_back(s);
    } catch (const Error& e) {
      if (o_.error) o_.error(e.what());
      return e.exit_status();
    }
  }
  for (const auto& s : sources) {
    if (stop_) break;
    result = most_serious(result, read_source(s));
  }
  write_metrics(!following_);
  if (stop_) result = most_serious(result, Code::temp_fail);
  return static_cast<int>(result);
}

int Reader::follow(timeutil::Nanos interval) {
  if (!tr_) return run_once();  // a stream ends with its input
  int last = 0;
  following_ = true;
  while (!stop_) {
    last = run_once();
    auto until = std::chrono::steady_clock::now() + std::chrono::nanoseconds(interval);
    while (!stop_ && std::chrono::steady_clock::now() < until) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  following_ = false;
  write_metrics(true);
  return last == static_cast<int>(Code::data) ? last : 0;
}

}  // namespace flk::crr
