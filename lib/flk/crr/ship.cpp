#include "flk/crr/ship.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/inotify.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <random>
#include <thread>

#include <fmt/format.h>

#include "flk/metrics/metrics.hpp"
#include "flk/util/fs.hpp"
#include "flk/util/json.hpp"
#include "flk/wal/dir.hpp"

namespace flk::crr {

namespace stdfs = std::filesystem;
using timeutil::kSecond;

namespace {
// How often a pass saves its target's watermark while it ships.
constexpr timeutil::Nanos kSaveInterval = kSecond / 4;
// Jittered waits are never round: shown to the millisecond.
timeutil::Nanos ms_rounded(timeutil::Nanos d) { return d / 1'000'000 * 1'000'000; }
}  // namespace

std::vector<Target> targets_from_config(const config::Config& c, const std::vector<std::string>& only,
                                        const std::optional<std::string>& to) {
  std::string where = c.source.empty() ? std::string("the configuration") : "'" + c.source + "'";
  std::vector<std::string> regions = c.targets();
  if (!only.empty()) {
    for (const auto& r : only)
      if (!regions.empty() && std::find(regions.begin(), regions.end(), r) == regions.end())
        fail(Code::usage, "target '{}' is not a target of region '{}' in {} (its targets: {})", r, c.region, where,
             fmt::join(regions, ", "));
    regions = only;
  } else if (!c.crr.enabled) {
    fail(Code::config, "replication is disabled in {} (crr.enabled is not true)", where);
  }
  if (regions.empty()) fail(Code::config, "no target regions in {} (crr.targetRegions, peers or policies)", where);
  std::vector<Target> out;
  for (const auto& r : regions) {
    if (r == c.region) fail(Code::config, "region '{}' cannot ship to itself ({})", r, where);
    Target t;
    t.region = r;
    auto ep = c.crr.endpoints.find(r);
    if (ep != c.crr.endpoints.end()) {
      t.url = ep->second.url;
      if (!ep->second.token_file.empty()) t.options.token = transport::read_token_file(ep->second.token_file);
      t.options.ca_file = ep->second.ca_file;
      t.options.cert_file = ep->second.cert_file;
      t.options.key_file = ep->second.key_file;
    }
    if (to) t.url = *to;
    if (t.url.empty())
      fail(Code::config, "no endpoint for target '{}': set crr.endpoints.{}.url in {} or give --to", r, r, where);
    if (c.crr.mode == config::Mode::selective) {
      t.tenants.emplace();
      for (const auto& p : c.crr.policies)
        if (std::find(p.target_regions.begin(), p.target_regions.end(), r) != p.target_regions.end())
          t.tenants->insert(p.tenant_id);
    }
    out.push_back(std::move(t));
  }
  return out;
}

Reencoded reencode_segment(const stdfs::path& source, const hash::Digest& source_sha256,
                           const std::set<std::string, std::less<>>& tenants, const stdfs::path& dest) {
  Reencoded re;
  fs::make_dirs(dest.parent_path());
  fs::AtomicFile out(dest);
  hash::Sha256 out_sha, in_sha;
  std::string buf;
  auto flush = [&] {
    out.write(buf);
    out_sha.update(buf);
    re.bytes += buf.size();
    buf.clear();
  };
  wal::read_segment_views(
      source, true,
      [&](const RecordView& v, std::string_view enc) {
        if (!tenants.contains(v.tenant_id)) return;
        wal::append_encoded_frame(buf, enc);
        if (re.seal.records++ == 0) {
          re.seal.first_ts = re.seal.last_ts = v.ts;
        } else {
          re.seal.first_ts = std::min(re.seal.first_ts, v.ts);
          re.seal.last_ts = std::max(re.seal.last_ts, v.ts);
        }
        if (buf.size() >= (1u << 20)) flush();
      },
      [&](const wal::Header& h) {
        wal::Header r = h;
        r.flags |= wal::kFlagReencoded;
        r.source = source_sha256;
        buf = wal::encode_header(r);
      },
      &in_sha);
  if (in_sha.finish() != source_sha256)
    fail(Code::data, "segment '{}': SHA-256 {} does not match its sidecar ({})", source.string(),
         hash::to_hex(in_sha.finish()), hash::to_hex(source_sha256));
  wal::append_seal_frame(buf, re.seal);
  flush();
  out.commit();
  re.sha256 = out_sha.finish();
  return re;
}

struct Shipper::TargetState {
  Target target;
  std::unique_ptr<transport::Transport> tr;
  bool stream = false;
  std::optional<fs::FileLock> lock;
  std::mutex mu;  // guards wm, ok, error (metrics read them from another thread)
  ShipWatermark wm;
  uint64_t position = 0;  // the last sequence shipped in this process (starts at the watermark or --after)
  bool unsaved = false;   // wm is ahead of the file (acknowledged since the last save)
  bool unsynced = false;  // the file was renamed into place since the directory's last sync
  int64_t saved_at = 0;   // monotonic time of the last save
  bool ok = true;
  Code last = Code::ok;
};

Shipper::Shipper(ShipOptions o) : o_(std::move(o)) {
  if (o_.targets.empty()) fail(Code::usage, "no target to ship to");
  fs::make_dirs(o_.state / "ship");
  for (auto& t : o_.targets) {
    auto s = std::make_unique<TargetState>();
    s->stream = t.url == "-";
    s->lock.emplace(o_.state / "ship" / (t.region + ".lock"), false);
    s->wm = load_ship_watermark(o_.state, t.region);
    s->position = o_.after.value_or(s->wm.sequence);
    s->tr = transport::open(t.url, t.options);
    s->target = std::move(t);
    targets_.push_back(std::move(s));
  }
}

Shipper::~Shipper() = default;

void Shipper::save_watermark(TargetState& t, bool durable) {
  ShipWatermark snapshot;
  {
    std::lock_guard lk(t.mu);
    if (!t.unsaved && !durable) return;
    if (!t.unsaved && !t.unsynced) return;
    snapshot = t.wm;
  }
  if (t.stream && !o_.advance_stream) return;
  save_ship_watermark(o_.state, snapshot, durable);
  std::lock_guard lk(t.mu);
  t.unsaved = false;
  t.unsynced = !durable;
  t.saved_at = timeutil::monotonic_now();
}

void Shipper::stop() {
  stop_ = true;
  for (auto& t : targets_) t->tr->interrupt();
  std::lock_guard lk(mu_);
  cv_.notify_all();
}

void Shipper::wait_for(timeutil::Nanos d, uint64_t seen_generation) {
  std::unique_lock lk(mu_);
  cv_.wait_for(lk, std::chrono::nanoseconds(d),
               [&] { return stop_.load() || (seen_generation != UINT64_MAX && generation_ != seen_generation); });
}

Code Shipper::ship_pending(TargetState& t) {
  struct SaveAtEnd {  // however the pass ends, what was acknowledged is saved, durably
    Shipper* s;
    TargetState& t;
    ~SaveAtEnd() {
      try {
        s->save_watermark(t, true);
      } catch (const Error& e) {
        if (s->o_.error) s->o_.error(e.what());
      }
    }
  } save_at_end{this, t};
  try {
    uint64_t expect = t.position + 1;
    auto files = wal::list_segments(o_.wal);
    uint64_t last = 0;
    for (const auto& f : files) last = std::max(last, f.sequence);
    if (!files.empty() && last < t.position)
      fail(Code::data,
           "WAL '{}' ends at segment {}, before segment {} that '{}' acknowledged: was the WAL replaced? (see "
           "flk-ship(1), --after)",
           o_.wal.string(), last, t.position, t.target.region);
    for (const wal::SegmentFile& f : files) {
      if (!f.sealed || f.sequence < expect) continue;
      if (f.sequence != expect)
        fail(Code::data, "WAL '{}': segment {} is missing (target '{}' has up to {})", o_.wal.string(), expect,
             t.target.region, expect - 1);
      if (stop_) fail(Code::temp_fail, "interrupted");
      ship_one(t, f.path, f.sequence);
      ++expect;
    }
    std::lock_guard lk(t.mu);
    t.ok = true;
    t.last = Code::ok;
    return Code::ok;
  } catch (const Error& e) {
    std::lock_guard lk(t.mu);
    t.ok = false;
    t.last = e.code();
    if (t.wm.failures_total) t.unsaved = true;  // keep the failure count across runs (metrics); SaveAtEnd writes it
    if (!stop_ && o_.error) o_.error(fmt::format("target '{}': {}", t.target.region, e.what()));
    return stop_ ? Code::temp_fail : e.code();
  }
}

void Shipper::ship_one(TargetState& t, const stdfs::path& file, uint64_t seq) {
  int64_t started = timeutil::monotonic_now();
  wal::SegmentStat st = wal::stat_segment({seq, true, file});
  if (st.header.region != o_.source)
    fail(Code::data, "WAL segment '{}' belongs to region '{}', not '{}'", file.string(), st.header.region, o_.source);
  hash::Digest src_digest = st.sha256 ? *st.sha256 : wal::file_digest(file);
  {
    std::lock_guard lk(t.mu);
    if (t.wm.sequence > 0 && t.wm.sequence + 1 == seq && st.header.prev != t.wm.source_sha256)
      fail(Code::data,
           "WAL segment '{}': chain broken: it follows a segment {} with digest {}, but '{}' acknowledged segment {} "
           "with digest {} (was the WAL replaced?)",
           file.string(), seq - 1, hash::to_hex(st.header.prev), t.target.region, seq - 1,
           hash::to_hex(t.wm.source_sha256));
  }
  stdfs::path send = file;
  hash::Digest digest = src_digest;
  uint64_t bytes = st.bytes;
  wal::Seal seal = st.counts;
  if (t.target.tenants) {
    send = o_.state / "outbox" / t.target.region / file.filename();
    Reencoded re = reencode_segment(file, src_digest, *t.target.tenants, send);
    digest = re.sha256;
    bytes = re.bytes;
    seal = re.seal;
  }

  transport::Address addr{o_.source, t.target.region, seq};
  std::mt19937_64 rng(std::random_device{}());
  timeutil::Nanos backoff = o_.initial_backoff;
  int64_t give_up_at = 0;
  int attempts = 0;
  bool verified = false;
  transport::Put put;
  for (;;) {
    ++attempts;
    try {
      put = t.tr->put(addr, send, digest);
      if (put == transport::Put::conflict)
        fail(Code::protocol,
             "{} holds a different segment {} from '{}' (conflict): it kept the first one; compare both before "
             "resetting anything",
             t.tr->describe(), seq, o_.source);
      break;
    } catch (const Error& e) {
      if (stop_) throw;
      Code code = e.code();
      if (!verified) {  // the first failure: is it our own bytes? (the sidecar is trusted until then)
        verified = true;
        hash::Digest now = wal::file_digest(send);
        if (now != digest)
          fail(Code::data, "segment '{}' is damaged: SHA-256 {} does not match its sidecar ({})", send.string(),
               hash::to_hex(now), hash::to_hex(digest));
      }
      if (code == Code::data) throw Error(Code::protocol, e.what());  // a sound segment refused as invalid
      if (code != Code::temp_fail) throw;
      {
        std::lock_guard lk(t.mu);
        ++t.wm.failures_total;
        t.ok = false;
      }
      write_metrics(false);
      int64_t now = timeutil::monotonic_now();
      if (!give_up_at) give_up_at = now + o_.deadline;
      timeutil::Nanos sleep = std::uniform_int_distribution<timeutil::Nanos>(0, backoff)(rng);
      if (now + sleep > give_up_at)
        fail(Code::temp_fail, "segment {}: giving up after {} attempts over {}: {}", seq, attempts,
             timeutil::format_duration(ms_rounded(now - give_up_at + o_.deadline)), e.what());
      if (attempts == 1 && o_.warn)
        o_.warn(fmt::format("target '{}': segment {}: {}; retrying for up to {}", t.target.region, seq, e.what(),
                            timeutil::format_duration(o_.deadline)));
      else if (o_.info)
        o_.info(fmt::format("target '{}': segment {}: attempt {} failed: {}; retrying in {}", t.target.region, seq,
                            attempts, e.what(), timeutil::format_duration(ms_rounded(sleep))));
      wait_for(sleep);
      if (stop_) fail(Code::temp_fail, "interrupted");
      backoff = std::min(backoff * 2, o_.max_backoff);
    }
  }

  {
    std::lock_guard lk(t.mu);
    t.wm.sequence = seq;
    t.wm.sha256 = digest;
    t.wm.source_sha256 = src_digest;
    t.wm.time = timeutil::now();
    t.wm.first_ts = seal.first_ts;
    t.wm.last_ts = seal.last_ts;
    ++t.wm.segments_total;
    t.wm.bytes_total += bytes;
    t.position = seq;
  }
  // Saved at most every kSaveInterval during a pass and durably at its end (SaveAtEnd):
  // a crash in between brings back an earlier watermark, and the segments after it are
  // shipped again — duplicates, which the target answers 200 — never a later one.
  if (!t.stream || o_.advance_stream) {
    {
      std::lock_guard lk(t.mu);
      t.unsaved = true;
    }
    if (timeutil::monotonic_now() - t.saved_at >= kSaveInterval) save_watermark(t, false);
  }
  if (send != file) ::unlink(send.c_str());

  std::string line;
  json::Object j(line);
  j.str("target", t.target.region).unum("sequence", seq).unum("bytes", bytes).str("sha256", hash::to_hex(digest));
  j.unum("records", seal.records).num("attempts", attempts);
  j.num("ms", (timeutil::monotonic_now() - started) / 1'000'000).str("result", transport::put_name(put));
  j.close();
  {
    std::lock_guard lk(mu_);
    if (o_.emit) o_.emit(line);
  }
}

namespace {

// The ts of the first record of an open segment, if it holds one.
std::optional<int64_t> first_record_ts(const stdfs::path& p) {
  try {
    wal::FileSource src(fs::Fd::open(p.string(), O_RDONLY), 64u << 10);
    wal::SegmentReader r(src, p.string(), nullptr, false);
    if (r.next() == wal::SegmentReader::Status::record) return r.view().ts;
  } catch (const Error&) {
  }
  return std::nullopt;
}

}  // namespace

int Shipper::run_once() {
  Code result = Code::ok;
  bool any_stream = std::any_of(targets_.begin(), targets_.end(), [](const auto& t) { return t->stream; });
  if (any_stream || targets_.size() == 1) {  // one stdout: one target after the other
    for (auto& t : targets_) result = most_serious(result, ship_pending(*t));
  } else {
    std::vector<Code> codes(targets_.size(), Code::ok);
    std::vector<std::thread> threads;
    for (size_t i = 0; i < targets_.size(); ++i)
      threads.emplace_back([this, i, &codes] { codes[i] = ship_pending(*targets_[i]); });
    for (auto& th : threads) th.join();
    for (Code c : codes) result = most_serious(result, c);
  }
  write_metrics(true);
  return static_cast<int>(result);
}

int Shipper::follow() {
  int fd = ::inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
  if (fd < 0) throw sys_error("cannot watch", o_.wal.string(), errno, Code::io);
  fs::Fd watch(fd, "inotify");
  // A service may start before the region's first write made its WAL directory: wait
  // for it (said once) instead of dying.
  bool said = false;
  while (!stop_ && ::inotify_add_watch(fd, o_.wal.c_str(), IN_MOVED_TO | IN_CLOSE_WRITE | IN_CREATE) < 0) {
    if (errno != ENOENT) throw sys_error("cannot watch", o_.wal.string(), errno);
    if (!said && o_.warn) o_.warn(fmt::format("WAL directory '{}' does not exist yet: waiting for it", o_.wal.string()));
    said = true;
    wait_for(kSecond);
  }
  if (stop_) return 0;

  std::vector<std::thread> threads;
  for (auto& tp : targets_) {
    threads.emplace_back([this, t = tp.get()] {
      timeutil::Nanos backoff = o_.initial_backoff;
      while (!stop_) {
        uint64_t gen;
        {
          std::lock_guard lk(mu_);
          gen = generation_;
        }
        Code c = ship_pending(*t);
        write_metrics(false);
        if (stop_) break;
        if (c == Code::ok) {
          backoff = o_.initial_backoff;
          wait_for(kSecond, gen);  // a seal wakes us; the second is a safety rescan
        } else {
          wait_for(backoff);
          backoff = std::min(backoff * 2, o_.max_backoff);
        }
      }
    });
  }
  char buf[4096];
  while (!stop_) {
    pollfd p{fd, POLLIN, 0};
    int n = ::poll(&p, 1, 200);
    if (n > 0) {
      while (::read(fd, buf, sizeof buf) > 0) {
      }
      std::lock_guard lk(mu_);
      ++generation_;
      cv_.notify_all();
    }
  }
  for (auto& th : threads) th.join();
  write_metrics(true);
  for (auto& t : targets_)
    if (t->last == Code::data) return static_cast<int>(Code::data);
  return 0;
}

std::string Shipper::metrics_text() {
  metrics::Text m;
  std::vector<wal::SegmentFile> files;
  try {
    files = wal::list_segments(o_.wal);
  } catch (const Error&) {
  }
  int64_t now = timeutil::now();
  struct Row {
    metrics::Labels labels;
    ShipWatermark wm;
    bool ok;
    uint64_t pending = 0;
    double lag = 0;
  };
  std::vector<Row> rows;
  for (auto& t : targets_) {
    Row r;
    r.labels = {{"source", o_.source}, {"target", t->target.region}};
    {
      std::lock_guard lk(t->mu);
      r.wm = t->wm;
      r.ok = t->ok;
    }
    std::optional<int64_t> oldest;
    for (const auto& f : files) {
      if (f.sequence <= r.wm.sequence) continue;
      if (f.sealed) {
        ++r.pending;
        if (!oldest) {
          try {
            auto st = wal::stat_segment(f);
            if (st.counts.records) oldest = st.counts.first_ts;
          } catch (const Error&) {
          }
        }
      } else if (!oldest) {
        oldest = first_record_ts(f.path);
      }
    }
    if (oldest && *oldest < now) r.lag = static_cast<double>(now - *oldest) / 1e9;
    rows.push_back(std::move(r));
  }
  auto family = [&](const char* name, const char* type, const char* help, auto value) {
    m.family(name, type, help);
    for (const Row& r : rows) m.sample(name, r.labels, value(r));
  };
  family("flk_crr_ship_watermark_sequence", "gauge", "Last segment sequence the target acknowledged.",
         [](const Row& r) { return double(r.wm.sequence); });
  family("flk_crr_ship_acknowledged_timestamp_seconds", "gauge", "When the target last acknowledged a segment.",
         [](const Row& r) { return double(r.wm.time) / 1e9; });
  family("flk_crr_shipped_segments_total", "counter", "Segments the target acknowledged.",
         [](const Row& r) { return double(r.wm.segments_total); });
  family("flk_crr_shipped_bytes_total", "counter", "Bytes of the segments the target acknowledged.",
         [](const Row& r) { return double(r.wm.bytes_total); });
  family("flk_crr_ship_failures_total", "counter", "Failed shipping attempts (each retry counts).",
         [](const Row& r) { return double(r.wm.failures_total); });
  family("flk_crr_ship_pending_segments", "gauge", "Sealed segments not yet acknowledged by the target.",
         [](const Row& r) { return double(r.pending); });
  family("flk_crr_ship_lag_seconds", "gauge",
         "Age of the oldest local record the target has not acknowledged (the ship part of flk_crr_lag_seconds).",
         [](const Row& r) { return r.lag; });
  family("flk_crr_ship_up", "gauge", "1 when the last pass to the target succeeded, 0 when it failed.",
         [](const Row& r) { return r.ok ? 1.0 : 0.0; });
  return m.str();
}

void Shipper::write_metrics(bool force) {
  if (!o_.metrics_file) return;
  std::lock_guard lk(mu_);
  int64_t now = timeutil::monotonic_now();
  if (!force && now - metrics_written_ < kSecond) return;
  metrics_written_ = now;
  try {
    metrics::write_file(*o_.metrics_file, metrics_text());
  } catch (const Error& e) {
    if (o_.error) o_.error(e.what());
  }
}

}  // namespace flk::crr
