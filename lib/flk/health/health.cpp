#include "flk/health/health.hpp"

#include <algorithm>
#include <cmath>
#include <span>
#include <thread>

#include <fmt/format.h>

#include "flk/core/record.hpp"
#include "flk/crr/ship.hpp"
#include "flk/metrics/metrics.hpp"
#include "flk/store/store.hpp"
#include "flk/util/error.hpp"
#include "flk/util/json.hpp"
#include "flk/wal/writer.hpp"

namespace flk::health {

namespace {

constexpr timeutil::Nanos kLockRetry = timeutil::kSecond / 10;

double seconds_since(int64_t start, int64_t now) { return now > start ? double(now - start) / 1e9 : 0.0; }

// The canary's wait for one healthy peer: polls the head of the stream this region →
// the peer until the reader's report reaches the canary's segment or time runs out.
void wait_canary(transport::Transport& tr, const std::string& peer, const CheckOptions& o, Result& r) {
  const Canary& c = *o.canary;
  const int64_t deadline = c.ts + o.canary_timeout;
  std::string last_error;
  for (;;) {
    try {
      transport::Head h = tr.head(o.source, peer);
      last_error.clear();
      if (h.applied) {
        r.applied = h.applied->sequence;
        if (h.applied->sequence >= c.sequence) {
          r.canary_seconds = seconds_since(c.ts, timeutil::now());
          return;
        }
      }
    } catch (const Error& e) {
      last_error = e.what();
    }
    int64_t now = timeutil::now();
    if (now >= deadline) {
      r.healthy = false;
      r.error = fmt::format("canary (segment {}) not applied within {} (applied: {}){}", c.sequence,
                            timeutil::format_duration(o.canary_timeout),
                            r.applied ? std::to_string(*r.applied) : "no report",
                            last_error.empty() ? "" : "; last poll: " + last_error);
      return;
    }
    std::this_thread::sleep_for(std::chrono::nanoseconds(std::min(o.poll_interval, deadline - now)));
  }
}

Result check_one(const Peer& p, const CheckOptions& o) {
  Result r;
  r.region = p.region;
  r.url = p.url;
  transport::Options opts = p.options;
  opts.connect_timeout = opts.stall_timeout = opts.operation_timeout = o.timeout;
  std::unique_ptr<transport::Transport> tr;
  int64_t start = timeutil::monotonic_now();
  try {
    tr = transport::open(p.url, opts);
    r.url = tr->describe();
    transport::Health h = tr->health();
    r.status = h.status;
    r.healthy = h.ok;
    r.error = h.detail;
  } catch (const Error& e) {
    r.error = e.what();
  }
  r.seconds = seconds_since(start, timeutil::monotonic_now());
  if (r.healthy && o.canary) wait_canary(*tr, p.region, o, r);
  return r;
}

}  // namespace

std::vector<Peer> peers(const config::Config& c, const std::vector<std::string>& specs) {
  std::vector<Peer> out;
  if (specs.empty()) {
    for (auto& t : crr::targets_from_config(c, {}, std::nullopt)) out.push_back({t.region, t.url, t.options});
    return out;
  }
  for (const auto& s : specs) {
    size_t eq = s.find('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == s.size())
      fail(Code::usage, "--peer '{}': expected REGION=URL", s);
    Peer p;
    p.region = s.substr(0, eq);
    p.url = s.substr(eq + 1);
    check_region(p.region, "--peer region");
    if (!p.url.starts_with("http://") && !p.url.starts_with("https://") && !p.url.starts_with("file://"))
      fail(Code::usage, "--peer '{}': the URL must be http://, https:// or file://", s);
    for (const auto& q : out)
      if (q.region == p.region) fail(Code::usage, "--peer: region '{}' given twice", p.region);
    if (auto ep = c.crr.endpoints.find(p.region); ep != c.crr.endpoints.end()) {
      if (!ep->second.token_file.empty()) p.options.token = transport::read_token_file(ep->second.token_file);
      p.options.ca_file = ep->second.ca_file;
      p.options.cert_file = ep->second.cert_file;
      p.options.key_file = ep->second.key_file;
    }
    out.push_back(std::move(p));
  }
  return out;
}

Canary write_canary(const CanaryOptions& o) {
  wal::WriterOptions wo;
  wo.dir = o.wal;
  wo.region = o.region;
  wo.segment_bytes = o.segment_bytes;
  wo.segment_age = o.segment_age;
  wo.log = o.log;
  std::unique_ptr<wal::Writer> w;
  const int64_t give_up = timeutil::monotonic_now() + o.lock_timeout;
  for (;;) {
    try {
      w = wal::Writer::open(wo);
      break;
    } catch (const Error& e) {
      // temp_fail from open() is the lock: another writer holds the WAL.
      if (e.code() != Code::temp_fail) throw;
      if (timeutil::monotonic_now() >= give_up)
        fail(Code::temp_fail, "the canary cannot write to WAL '{}' (waited {} for its lock): {}", o.wal.string(),
             timeutil::format_duration(o.lock_timeout), e.what());
      std::this_thread::sleep_for(std::chrono::nanoseconds(kLockRetry));
    }
  }

  Record rec;
  rec.ts = timeutil::now();
  rec.pcs_id = fmt::format("flk-canary-{}-{}", o.region, rec.ts);
  rec.tenant_id = "flk-canary";
  rec.outcome = Outcome::accepted;
  rec.region = o.region;
  auto pos = w->append(std::span<const Record>(&rec, 1));
  w->seal();  // the canary's segment is the open one: sealed now, shipped next
  w.reset();  // the lock is released

  if (!o.store_url.empty()) {
    try {
      store::open(o.store_url)->apply(std::span<const Record>(&rec, 1), nullptr);
    } catch (const Error& e) {
      throw e.wrap(fmt::format("canary '{}' written to the WAL but not to the local store", rec.pcs_id));
    }
  }
  return Canary{rec.pcs_id, pos.front().segment, rec.ts};
}

std::vector<Result> check(const std::vector<Peer>& peers, const CheckOptions& o) {
  std::vector<Result> results(peers.size());
  std::vector<std::thread> threads;
  threads.reserve(peers.size());
  for (size_t i = 0; i < peers.size(); ++i)
    threads.emplace_back([&, i] {
      try {
        results[i] = check_one(peers[i], o);
      } catch (const std::exception& e) {  // a bug or out of memory: still one result per peer
        results[i].region = peers[i].region;
        results[i].url = peers[i].url;
        results[i].error = e.what();
      }
    });
  for (auto& t : threads) t.join();
  return results;
}

std::string result_json(const Result& r, const std::optional<Canary>& canary) {
  std::string line;
  json::Object o(line);
  o.str("region", r.region).str("url", r.url).boolean("healthy", r.healthy);
  if (r.status) o.num("status", *r.status);
  else o.null("status");
  o.num("ms", std::llround(r.seconds * 1000));
  if (!r.error.empty()) o.str("error", r.error);
  if (canary) {
    o.unum("canary_sequence", canary->sequence);
    if (r.canary_seconds) o.num("canary_ms", std::llround(*r.canary_seconds * 1000));
    else o.null("canary_ms");
    if (r.applied) o.unum("applied_sequence", *r.applied);
    else o.null("applied_sequence");
  }
  o.close();
  return line;
}

std::string metrics_text(const std::vector<Result>& results, bool with_canary) {
  metrics::Text m;
  m.family("flk_region_health_status", "gauge",
           "1 when the peer region passed its health check (and applied the canary in time), 0 when degraded.");
  for (const auto& r : results) m.sample("flk_region_health_status", {{"region", r.region}}, r.healthy ? 1.0 : 0.0);
  m.family("flk_region_health_probe_seconds", "gauge",
           "Latency of the health probe of the peer region (until it failed, when it did).");
  for (const auto& r : results) m.sample("flk_region_health_probe_seconds", {{"region", r.region}}, r.seconds);
  if (with_canary) {
    m.family("flk_region_canary_seconds", "gauge",
             "Time from writing a canary record here to seeing the peer region apply it (absent: not applied).");
    for (const auto& r : results)
      if (r.canary_seconds) m.sample("flk_region_canary_seconds", {{"region", r.region}}, *r.canary_seconds);
  }
  return m.str();
}

}  // namespace flk::health
