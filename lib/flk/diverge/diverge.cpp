#include "flk/diverge/diverge.hpp"

#include <algorithm>
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

// One store's scan on a thread of its own, handed over in batches through a bounded
// queue: the consumer sees the records in the store's (pcs_id) order.
class Cursor {
 public:
  Cursor(store::Store& s, const std::vector<uint32_t>* buckets, uint32_t bucket_count)
      : buckets_(buckets), bucket_count_(bucket_count) {
    thread_ = std::thread([this, &s] { run(s); });
  }
  ~Cursor() {
    {
      std::lock_guard lk(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

  // The next record, nullptr at the end; rethrows the scan's error.
  const store::Stored* next() {
    while (pos_ >= cur_.size()) {
      std::unique_lock lk(mu_);
      cv_.wait(lk, [&] { return !q_.empty() || done_; });
      if (q_.empty()) {
        if (error_) std::rethrow_exception(error_);
        return nullptr;
      }
      cur_ = std::move(q_.front());
      q_.pop_front();
      pos_ = 0;
      cv_.notify_all();
    }
    return &cur_[pos_++];
  }

 private:
  struct Stopped {};
  static constexpr size_t kBatch = 2048, kDepth = 4;

  void run(store::Store& s) {
    std::vector<store::Stored> batch;
    batch.reserve(kBatch);
    try {
      s.scan([&](const store::Stored& st) {
        if (buckets_ && !std::binary_search(buckets_->begin(), buckets_->end(), bucket_of(st.record.pcs_id, bucket_count_)))
          return;
        batch.push_back(st);
        if (batch.size() == kBatch) {
          push(std::move(batch));
          batch = {};
          batch.reserve(kBatch);
        }
      });
      push(std::move(batch));
    } catch (const Stopped&) {
    } catch (...) {
      std::lock_guard lk(mu_);
      error_ = std::current_exception();
    }
    {
      std::lock_guard lk(mu_);
      done_ = true;
    }
    cv_.notify_all();
  }

  void push(std::vector<store::Stored>&& b) {
    std::unique_lock lk(mu_);
    cv_.wait(lk, [&] { return q_.size() < kDepth || stop_; });
    if (stop_) throw Stopped{};
    q_.push_back(std::move(b));
    cv_.notify_all();
  }

  const std::vector<uint32_t>* buckets_;
  uint32_t bucket_count_;
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::vector<store::Stored>> q_;
  bool done_ = false, stop_ = false;
  std::exception_ptr error_;
  std::vector<store::Stored> cur_;
  size_t pos_ = 0;
};

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
  if (!routes_ || region == r.region) return true;
  auto it = routes_->find(r.tenant_id);
  return it != routes_->end() && it->second.count(region);
}

std::string_view kind_name(Finding::Kind k) { return k == Finding::Kind::conflict ? "conflict" : "missing"; }

ScanStats scan(std::vector<RegionStore>& stores, const Expect& expect, const std::vector<uint32_t>* buckets,
               uint32_t bucket_count, const std::function<void(const Finding&)>& fn) {
  const size_t n = stores.size();
  std::vector<std::unique_ptr<Cursor>> cursors;
  std::vector<const store::Stored*> head(n);
  for (auto& s : stores) cursors.push_back(std::make_unique<Cursor>(*s.store, buckets, bucket_count));
  for (size_t i = 0; i < n; ++i) head[i] = cursors[i]->next();

  ScanStats st;
  Finding f;
  f.stored.resize(n);
  for (;;) {
    const std::string* id = nullptr;
    for (size_t i = 0; i < n; ++i)
      if (head[i] && (!id || head[i]->record.pcs_id < *id)) id = &head[i]->record.pcs_id;
    if (!id) break;
    ++st.ids;
    const std::string current = *id;
    size_t present = 0;
    std::optional<Outcome> outcome;
    bool differ = false;
    for (size_t i = 0; i < n; ++i) {
      if (head[i] && head[i]->record.pcs_id == current) {
        if (outcome && *outcome != head[i]->record.outcome) differ = true;
        outcome = head[i]->record.outcome;
        f.stored[i] = *head[i];
        ++present;
        head[i] = cursors[i]->next();
      } else {
        f.stored[i].reset();
      }
    }
    bool missing = false;
    if (!differ && present < n)
      for (size_t i = 0; i < n && !missing; ++i) {
        if (f.stored[i]) continue;
        for (size_t k = 0; k < n && !missing; ++k)
          if (f.stored[k] && expect.expected(f.stored[k]->record, stores[i].region)) missing = true;
      }
    if (!differ && !missing) continue;
    f.kind = differ ? Finding::Kind::conflict : Finding::Kind::missing;
    f.pcs_id = current;
    for (const auto& s : f.stored)
      if (s) f.tenant_id = s->record.tenant_id;
    ++(differ ? st.conflicts : st.missing);
    fn(f);
  }
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
  // Every record known per pcs_id, by digest: the stored winners and every store's evidence.
  std::unordered_map<std::string, std::map<hash::Digest, Record>> known;
  for (const auto& f : findings)
    for (const auto& s : f.stored)
      if (s) known[f.pcs_id].emplace(s->digest, s->record);
  for (auto& s : stores)
    for (const auto& e : s.store->evidence(ids)) known[e.record.pcs_id].emplace(e.digest, e.record);

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
    p.install.resize(stores.size());
    for (size_t i = 0; i < stores.size(); ++i) {
      const auto& s = f.stored[i];
      p.install[i] = s ? s->digest != p.winner.digest : expect.expected(p.winner.record, stores[i].region);
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
