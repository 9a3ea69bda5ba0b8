#include "flk/diverge/diverge.hpp"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <exception>
#include <mutex>
#include <thread>
#include <unordered_map>

#include <fmt/format.h>

#include "flk/diverge/digest.hpp"
#include "flk/util/error.hpp"
#include "flk/util/json.hpp"
#include "flk/util/time.hpp"

namespace flk::diverge {

namespace {

// Where a comparison of stores is split into ranges that run in parallel: range r is
// [keys[r-1], keys[r]), "" being both ends. From the smallest and largest pcs_id of all
// the stores: one range per value of the first byte after their common prefix (hashes,
// UUIDs and random ids spread evenly over it; ids that mostly share a longer prefix give
// fewer, larger ranges: slower, not wrong). None (one range, the whole) when some store
// cannot seek to a range (Store::id_bounds()).
std::vector<std::string> split_keys(std::vector<RegionStore>& stores) {
  std::optional<std::string> lo, hi;
  for (auto& s : stores) {
    auto b = s.store->id_bounds();
    if (!b) return {};
    if (b->first.empty() && b->second.empty()) continue;  // an empty store
    if (!lo || b->first < *lo) lo = b->first;
    if (!hi || b->second > *hi) hi = b->second;
  }
  if (!lo) return {};
  size_t p = 0;
  while (p < lo->size() && p < hi->size() && (*lo)[p] == (*hi)[p]) ++p;
  if (p >= hi->size()) return {};  // a single pcs_id
  const std::string prefix = hi->substr(0, p);
  const unsigned first = p < lo->size() ? static_cast<uint8_t>((*lo)[p]) : 0;  // lo == prefix: it sorts first
  const unsigned last = static_cast<uint8_t>((*hi)[p]);
  std::vector<std::string> keys;
  for (unsigned c = first + 1; c <= last; ++c) keys.push_back(prefix + static_cast<char>(c));
  return keys;
}

void stored_json(json::Object& j, std::string_view key, const store::Stored& s) {
  std::string v;
  json::Object o(v);
  o.str("outcome", outcome_name(s.record.outcome)).str("ts", timeutil::format_rfc3339(s.record.ts));
  o.str("origin", s.record.region).str("digest", hash::to_hex(s.digest));
  o.close();
  j.raw(key, v);
}

}  // namespace

Expect Expect::from_config(const config::Config& c) {
  Expect e;
  if (c.crr.mode != config::Mode::selective) return e;
  e.routes_.emplace();
  for (const auto& p : c.crr.policies)
    for (const auto& t : p.target_regions) (*e.routes_)[p.tenant_id].insert(t);
  return e;
}

bool Expect::expected(const Record& r, const std::string& region) const {
  return expected(r.tenant_id, r.region, region);
}

bool Expect::expected(std::string_view tenant, std::string_view origin, const std::string& region) const {
  if (!routes_ || region == origin) return true;
  auto it = routes_->find(tenant);
  return it != routes_->end() && it->second.count(region);
}

std::string_view kind_name(Finding::Kind k) { return k == Finding::Kind::conflict ? "conflict" : "missing"; }

ScanStats scan(std::vector<RegionStore>& stores, const Expect& expect, const std::vector<uint32_t>* buckets,
               uint32_t bucket_count, const std::function<void(const Finding&)>& fn) {
  const size_t n = stores.size();
  ScanStats st;
  if (n == 0) return st;

  // The pcs_ids the stores do not all hold with one outcome ("suspects"), looked up
  // kResolve at a time by this thread on connections of its own (the others are busy
  // scanning), in order.
  constexpr size_t kResolve = 4096;
  std::vector<std::unique_ptr<store::Store>> look(n);
  Finding f;
  f.stored.resize(n);
  auto resolve = [&](const std::vector<std::string>& suspects) {
    if (suspects.empty()) return;
    std::vector<std::unordered_map<std::string, store::Stored>> found(n);
    for (size_t i = 0; i < n; ++i) {
      if (!look[i]) look[i] = store::open(stores[i].url);
      for (auto& w : look[i]->lookup(suspects)) found[i].emplace(w.record.pcs_id, std::move(w));
    }
    for (const std::string& id : suspects) {
      size_t present = 0;
      std::optional<Outcome> outcome;
      bool differ = false;
      for (size_t i = 0; i < n; ++i) {
        f.stored[i].reset();
        auto it = found[i].find(id);
        if (it == found[i].end()) continue;
        if (outcome && *outcome != it->second.record.outcome) differ = true;
        outcome = it->second.record.outcome;
        f.stored[i] = std::move(it->second);
        ++present;
      }
      bool missing = false;
      if (!differ && present > 0 && present < n)
        for (size_t i = 0; i < n && !missing; ++i) {
          if (f.stored[i]) continue;
          for (size_t k = 0; k < n && !missing; ++k)
            if (f.stored[k])
              missing = expect.expected(f.stored[k]->record.tenant_id, f.stored[k]->record.region, stores[i].region);
        }
      if (!differ && !missing) continue;  // agree after all (or changed since): same outcome, or not expected
      f.kind = differ ? Finding::Kind::conflict : Finding::Kind::missing;
      f.pcs_id = id;
      for (size_t i = 0; i < n; ++i)
        if (f.stored[i]) f.tenant_id = f.stored[i]->record.tenant_id;
      ++(differ ? st.conflicts : st.missing);
      fn(f);
    }
  };
  for (size_t i = 0; i < n; ++i)  // not store->url(): that one may be masked (a password), this one opens
    if (stores[i].url.empty()) fail(Code::internal, "region '{}': no store URL to open more connections", stores[i].region);

  // The pcs_ids are split into ranges (split_keys), scanned by `workers` threads: each
  // takes the next range, pulls every store's cursor over it and merges them as it goes
  // (nothing copied but suspects), handing its suspects over in chunks. This thread
  // resolves the chunks range by range, in order. A range not yet being resolved may
  // hold kAhead chunks, and workers stay within 2 × workers ranges of it: memory does not
  // grow with the stores.
  const std::vector<std::string> splits = split_keys(stores);
  const size_t ranges = splits.size() + 1;
  const size_t workers = std::min(ranges, std::clamp<size_t>(std::thread::hardware_concurrency(), 1, 8));
  constexpr size_t kAhead = 4;
  struct Range {
    std::deque<std::vector<std::string>> chunks;
    bool done = false;
  };
  std::vector<Range> rs(ranges);
  std::mutex mu;
  std::condition_variable cv;
  size_t next = 0, resolving = 0;
  bool stop = false;
  std::atomic<bool> stopping{false};
  std::exception_ptr error;
  std::atomic<uint64_t> ids{0};
  struct Stopped {};

  auto hand = [&](size_t r, std::vector<std::string>& chunk, bool done) {
    std::unique_lock lk(mu);
    cv.wait(lk, [&] { return stop || r == resolving || rs[r].chunks.size() < kAhead; });
    if (stop) throw Stopped{};
    if (!chunk.empty()) rs[r].chunks.push_back(std::move(chunk));
    chunk.clear();
    rs[r].done = done;
    cv.notify_all();
  };
  auto merge = [&](size_t r, const std::vector<store::Store*>& db) {
    std::vector<std::unique_ptr<store::Store::IdCursor>> cur(n);
    std::vector<std::string_view> id(n);
    std::vector<Outcome> outcome(n);
    std::vector<char> has(n), here(n);
    for (size_t i = 0; i < n; ++i) {
      cur[i] = db[i]->ids(r ? splits[r - 1] : std::string(), r < splits.size() ? splits[r] : std::string());
      has[i] = cur[i]->next(id[i], outcome[i]);
    }
    std::vector<std::string> chunk;
    uint64_t count = 0;
    for (;;) {
      std::string_view min;
      bool any = false;
      for (size_t i = 0; i < n; ++i)
        if (has[i] && (!any || id[i] < min)) min = id[i], any = true;
      if (!any) break;
      if (!buckets || std::binary_search(buckets->begin(), buckets->end(), bucket_of(min, bucket_count))) {
        size_t present = 0;
        const Outcome* o = nullptr;
        bool agree = true;
        for (size_t i = 0; i < n; ++i) {
          here[i] = has[i] && id[i] == min;
          if (!here[i]) continue;
          if (present && outcome[i] != *o) agree = false;
          o = &outcome[i];
          ++present;
        }
        if (!agree || present < n) chunk.emplace_back(min);  // copied before the cursors move on
        if (chunk.size() == kResolve) hand(r, chunk, false);
        if (++count % 65536 == 0 && stopping) throw Stopped{};
      } else {
        for (size_t i = 0; i < n; ++i) here[i] = has[i] && id[i] == min;
      }
      for (size_t i = 0; i < n; ++i)
        if (here[i]) has[i] = cur[i]->next(id[i], outcome[i]);
    }
    ids += count;
    hand(r, chunk, true);
  };
  auto work = [&](size_t w) {
    try {
      // Worker 0 scans through the stores given; the others open connections of their own.
      std::vector<std::unique_ptr<store::Store>> own;
      std::vector<store::Store*> db(n);
      for (size_t i = 0; i < n; ++i) {
        if (w > 0) own.push_back(store::open(stores[i].url));
        db[i] = w > 0 ? own.back().get() : stores[i].store.get();
      }
      for (;;) {
        size_t r;
        {
          std::unique_lock lk(mu);
          cv.wait(lk, [&] { return stop || next >= ranges || next < resolving + 2 * workers; });
          if (stop || next >= ranges) return;
          r = next++;
        }
        merge(r, db);
      }
    } catch (const Stopped&) {
    } catch (...) {
      std::lock_guard lk(mu);
      if (!error) error = std::current_exception();
      stop = true;
      stopping = true;
      cv.notify_all();
    }
  };

  std::vector<std::thread> threads;
  struct Join {  // on every way out: the workers told to stop, and joined
    std::vector<std::thread>& threads;
    std::mutex& mu;
    std::condition_variable& cv;
    bool& stop;
    std::atomic<bool>& stopping;
    ~Join() {
      {
        std::lock_guard lk(mu);
        stop = true;
        stopping = true;
      }
      cv.notify_all();
      for (auto& t : threads) t.join();
    }
  } join{threads, mu, cv, stop, stopping};
  for (size_t w = 0; w < workers; ++w) threads.emplace_back(work, w);

  for (size_t r = 0; r < ranges; ++r)
    for (;;) {
      std::vector<std::string> chunk;
      {
        std::unique_lock lk(mu);
        cv.wait(lk, [&] { return error || !rs[r].chunks.empty() || rs[r].done; });
        if (error) std::rethrow_exception(error);
        if (rs[r].chunks.empty()) {  // done, all resolved
          resolving = r + 1;
          cv.notify_all();
          break;
        }
        chunk = std::move(rs[r].chunks.front());
        rs[r].chunks.pop_front();
        cv.notify_all();
      }
      resolve(chunk);
    }
  st.ids = ids;
  return st;
}

std::string finding_json(const Finding& f, const std::vector<RegionStore>& stores) {
  std::string out, regions;
  json::Object j(out);
  j.str("pcs_id", f.pcs_id).str("tenant_id", f.tenant_id).str("kind", kind_name(f.kind));
  json::Object r(regions);
  for (size_t i = 0; i < stores.size(); ++i) {
    if (f.stored[i]) stored_json(r, stores[i].region, *f.stored[i]);
    else r.null(stores[i].region);
  }
  r.close();
  j.raw("regions", regions);
  j.close();
  return out;
}

std::vector<Plan> plan(std::vector<RegionStore>& stores, const Expect& expect, const std::vector<Finding>& findings) {
  std::vector<std::string> ids;
  for (const auto& f : findings) ids.push_back(f.pcs_id);
  // Every record known per pcs_id, by digest: each store's winner (looked up now: the
  // scan read only identifying fields, and a store may have moved on) and its evidence.
  std::unordered_map<std::string, std::map<hash::Digest, Record>> known;
  std::vector<std::unordered_map<std::string, hash::Digest>> winner_of(stores.size());
  for (size_t i = 0; i < stores.size(); ++i) {
    for (auto& w : stores[i].store->lookup(ids)) {
      winner_of[i][w.record.pcs_id] = w.digest;
      known[w.record.pcs_id].emplace(w.digest, std::move(w.record));
    }
    for (auto& e : stores[i].store->evidence(ids)) known[e.record.pcs_id].emplace(e.digest, std::move(e.record));
  }

  std::vector<Plan> out;
  for (const auto& f : findings) {
    Plan p;
    p.pcs_id = f.pcs_id;
    bool first = true;
    for (const auto& [digest, rec] : known[f.pcs_id]) {
      p.records.push_back(rec);
      if (first || first_write_before(rec, digest, p.winner.record, p.winner.digest)) p.winner = {rec, digest};
      first = false;
    }
    if (first) continue;  // gone from every store since the scan
    p.install.resize(stores.size());
    for (size_t i = 0; i < stores.size(); ++i) {
      auto it = winner_of[i].find(f.pcs_id);
      p.install[i] = it != winner_of[i].end() ? it->second != p.winner.digest
                                              : expect.expected(p.winner.record, stores[i].region);
    }
    out.push_back(std::move(p));
  }
  return out;
}

void apply(std::vector<RegionStore>& stores, const std::vector<Plan>& plans) {
  for (size_t i = 0; i < stores.size(); ++i) {
    std::vector<Record> batch;
    for (const auto& p : plans)
      if (p.install[i]) batch.insert(batch.end(), p.records.begin(), p.records.end());
    if (!batch.empty()) stores[i].store->apply(batch, nullptr);
  }
}

std::string plan_json(const Plan& p, const std::vector<RegionStore>& stores, bool applied) {
  std::string out, regions;
  json::Object j(out);
  j.str("pcs_id", p.pcs_id);
  stored_json(j, "winner", p.winner);
  j.unum("records", p.records.size());
  json::Object r(regions);
  for (size_t i = 0; i < stores.size(); ++i) r.str(stores[i].region, p.install[i] ? "install" : "keep");
  r.close();
  j.raw("regions", regions).boolean("applied", applied);
  j.close();
  return out;
}

}  // namespace flk::diverge
