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

// A batch of stored winners' pcs_ids and digests, the ids packed into one arena (no
// allocation per record; batches are recycled).
struct KeyBatch {
  struct Key {
    uint32_t id, id_len;
    hash::Digest digest;
  };
  std::string arena;
  std::vector<Key> keys;

  void clear() {
    arena.clear();
    keys.clear();
  }
  void add(std::string_view id, const hash::Digest& digest) {
    keys.push_back({static_cast<uint32_t>(arena.size()), static_cast<uint32_t>(id.size()), digest});
    arena.append(id);
  }
  std::string_view view(uint32_t at, uint32_t len) const { return {arena.data() + at, len}; }
};

// One store's key scan on a thread of its own, handed over in batches through a
// bounded queue: the consumer sees the keys in the store's (pcs_id) order.
class Cursor {
 public:
  struct Head {
    const KeyBatch* batch = nullptr;
    const KeyBatch::Key* key = nullptr;
    std::string_view id() const { return batch->view(key->id, key->id_len); }
    explicit operator bool() const { return key != nullptr; }
  };

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

  // The next key (valid until the next call), empty at the end; rethrows the scan's error.
  Head next() {
    while (!cur_ || pos_ >= cur_->keys.size()) {
      std::unique_lock lk(mu_);
      if (cur_) free_.push_back(std::move(cur_));
      cv_.wait(lk, [&] { return !q_.empty() || done_; });
      if (q_.empty()) {
        cv_.notify_all();
        if (error_) std::rethrow_exception(error_);
        return {};
      }
      cur_ = std::move(q_.front());
      q_.pop_front();
      pos_ = 0;
      cv_.notify_all();
    }
    return {cur_.get(), &cur_->keys[pos_++]};
  }

 private:
  struct Stopped {};
  static constexpr size_t kBatch = 4096, kDepth = 4;

  std::unique_ptr<KeyBatch> take_free() {
    std::lock_guard lk(mu_);
    if (free_.empty()) return std::make_unique<KeyBatch>();
    auto b = std::move(free_.back());
    free_.pop_back();
    b->clear();
    return b;
  }

  void run(store::Store& s) {
    try {
      auto batch = take_free();
      s.scan_ids([&](std::string_view id, const hash::Digest& digest) {
        if (buckets_ && !std::binary_search(buckets_->begin(), buckets_->end(), bucket_of(id, bucket_count_)))
          return;
        batch->add(id, digest);
        if (batch->keys.size() == kBatch) {
          push(std::move(batch));
          batch = take_free();
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

  void push(std::unique_ptr<KeyBatch> b) {
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
  std::deque<std::unique_ptr<KeyBatch>> q_;
  std::vector<std::unique_ptr<KeyBatch>> free_;
  bool done_ = false, stop_ = false;
  std::exception_ptr error_;
  std::unique_ptr<KeyBatch> cur_;
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
  std::vector<std::unique_ptr<Cursor>> cursors;
  std::vector<Cursor::Head> head(n);
  for (auto& s : stores) cursors.push_back(std::make_unique<Cursor>(*s.store, buckets, bucket_count));
  for (size_t i = 0; i < n; ++i) head[i] = cursors[i]->next();

  ScanStats st;
  // The pcs_ids the stores do not all hold with one digest, looked up kResolve at a time
  // on second connections (the first ones are busy scanning), in order.
  constexpr size_t kResolve = 4096;
  std::vector<std::string> suspects;
  std::vector<std::unique_ptr<store::Store>> look(n);
  std::vector<bool> here(n);
  Finding f;
  f.stored.resize(n);
  auto resolve = [&] {
    if (suspects.empty()) return;
    std::vector<std::unordered_map<std::string, store::Stored>> found(n);
    for (size_t i = 0; i < n; ++i) {
      if (!look[i]) {
        // Not store->url(): that one may be masked (a password), this one opens.
        if (stores[i].url.empty()) fail(Code::internal, "region '{}': no store URL to look records up", stores[i].region);
        look[i] = store::open(stores[i].url);
      }
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
    suspects.clear();
  };
  for (;;) {
    std::string_view id;
    bool any = false;
    for (size_t i = 0; i < n; ++i)
      if (head[i] && (!any || head[i].id() < id)) id = head[i].id(), any = true;
    if (!any) break;
    ++st.ids;
    size_t present = 0;
    const hash::Digest* digest = nullptr;
    bool agree = true;
    for (size_t i = 0; i < n; ++i) {
      here[i] = head[i] && head[i].id() == id;
      if (!here[i]) continue;
      if (digest && *digest != head[i].key->digest) agree = false;
      digest = &head[i].key->digest;
      ++present;
    }
    if (!agree || present < n) suspects.emplace_back(id);
    // Advance past this pcs_id (after its id is copied: the heads point into the batches).
    for (size_t i = 0; i < n; ++i)
      if (here[i]) head[i] = cursors[i]->next();
    if (suspects.size() == kResolve) resolve();
  }
  resolve();
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
