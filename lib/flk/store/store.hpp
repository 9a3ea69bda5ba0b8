// The region-local dedup store (DESIGN.md §1, §3): pcs_id → the first write, the
// conflict evidence, and the replay watermarks. One interface, three back ends chosen
// by URL: sqlite:///path (embedded default), postgres://… (libpq), redis://host:port/db
// (hiredis). Each C library is used only by its back end's .cpp file.
//
// First write wins: of two records for one pcs_id the one with the smallest
// (ts, region, digest) is the winner (flk/core/record.hpp, first_write_before), so every
// store that has seen the same records holds the same winners, whatever the order,
// batching or duplication of delivery. A record whose outcome differs from the stored
// winner's is a conflict: the winner is kept or installed by the rule, and both
// records are kept as evidence. apply() names the pcs_ids it found conflicts for
// (ApplyStats::conflict_ids), and evidence() returns the records of those conflicts.
//
// Thread safety: a Store object is used by one thread at a time. Several processes may
// use one store; apply() is atomic (a transaction, or MULTI/EXEC / a Lua script).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "flk/core/record.hpp"
#include "flk/util/hash.hpp"

namespace flk::store {

// A record as stored: the winner for its pcs_id and its digest (SHA-256 of the
// canonical encoding).
struct Stored {
  Record record;
  hash::Digest digest{};
  bool operator==(const Stored&) const = default;
};

// One record kept as evidence of a conflict for its pcs_id.
struct Evidence {
  Record record;
  hash::Digest digest{};
  int64_t detected_at = 0;  // ns, when the conflict was first seen
};

// Where replay from one source region stands: the last segment applied.
struct Watermark {
  std::string source;
  uint64_t sequence = 0;
  hash::Digest digest{};
  int64_t updated = 0;  // ns
  bool operator==(const Watermark&) const = default;
};

// What one apply() did. Each record counts in exactly one of inserted, duplicates,
// replaced and later; conflicts counts again those of them (replaced or later) whose
// outcome differed from the winner's at that point — the stored winner's, or that of
// an earlier record of the same batch that had become the winner.
struct ApplyStats {
  uint64_t inserted = 0;    // records for a pcs_id new to the store
  uint64_t duplicates = 0;  // records identical (same digest) to the winner
  uint64_t replaced = 0;    // records that are an earlier write and became the winner
  uint64_t later = 0;       // records that are a later write (not the winner)
  uint64_t conflicts = 0;   // records whose outcome differed from the winner's
  // The distinct pcs_ids of the records counted in `conflicts`, sorted bytewise; their
  // records are in evidence(). Empty (no allocation) when there was no conflict.
  std::vector<std::string> conflict_ids;
  // Adds the counts and appends o.conflict_ids (so a sum over several calls is only
  // sorted and distinct per call).
  ApplyStats& operator+=(const ApplyStats& o);
};

class Store {
 public:
  virtual ~Store() = default;

  // The store's URL with any password masked (for messages).
  virtual std::string url() const = 0;

  // Applies records by first write wins and, when `advance` is given, sets the
  // watermark of advance->source to it — all in one atomic step: after a crash either
  // everything of the call is visible or nothing is. Records may come in any order
  // and repeat. Throws Error (io/unavailable/…) naming the store; nothing is then
  // changed.
  virtual ApplyStats apply(std::span<const Record> records, const Watermark* advance) = 0;

  // Several applies in order, each as apply() would do it, returning each one's stats.
  // A back end may commit them together (SQLite: one transaction, so that a page the
  // batches share is written once, not once per batch); after a crash, a prefix of the
  // batches is visible, each with its watermark, as if applied one by one. The default
  // applies them one by one. The records are views (a reader keeps a segment's fields
  // in one buffer, not a Record of heap strings each), valid for the call.
  struct Batch {
    std::span<const RecordView> records;
    const Watermark* advance = nullptr;
    // The records' digests (record_digest), when the caller has them already (a reader
    // hashes each record's encoding as it verifies it, on another thread): empty, or one
    // per record. A back end may use them instead of computing its own.
    std::span<const hash::Digest> digests = {};
  };
  virtual std::vector<ApplyStats> apply_all(std::span<const Batch> batches);

  // Several apply_all() calls in one transaction: begin_group() opens it (when none is
  // open), commit_group() commits it (when one is). Each commit rewrites every page it
  // touched, so a backlog replayed with fewer, larger commits costs less. An error in
  // between rolls back the whole group; after a crash, none of it is visible. A back end
  // without this commits each call (the default: both do nothing).
  virtual void begin_group() {}
  virtual void commit_group() {}

  virtual std::optional<Watermark> watermark(std::string_view source) = 0;
  // Every watermark, sorted by source.
  virtual std::vector<Watermark> watermarks() = 0;
  // Sets (or with sequence 0, removes) a watermark unconditionally.
  virtual void set_watermark(const Watermark& w) = 0;

  // Every stored record in bytewise pcs_id order; memory stays bounded whatever the
  // store's size.
  virtual void scan(const std::function<void(const Stored&)>& fn) = 0;
  // The stored winners' identifying fields, in the same order as scan(), as views that
  // are valid during the call only: what comparing stores needs (flk-diverge), without
  // the cost of whole records. The default goes through scan().
  struct KeyView {
    std::string_view pcs_id, tenant_id, region;
    Outcome outcome = Outcome::accepted;
    int64_t ts = 0;
    hash::Digest digest{};
  };
  virtual void scan_keys(const std::function<void(const KeyView&)>& fn);
  // Only each stored winner's pcs_id and outcome, in the same order, pulled one at a
  // time from a cursor over [from, to) ("" as `from`: the first; as `to`: past the last):
  // all a comparison of stores needs for the pcs_ids on which they agree (a divergence is
  // an outcome that differs, or a pcs_id absent) — flk-diverge looks the few others up.
  // While a cursor is open, the store is used by the cursor only.
  class IdCursor {
   public:
    virtual ~IdCursor() = default;
    // The next one, or false at the end; `pcs_id` stays valid until the next call.
    // Throws Error naming the store.
    virtual bool next(std::string_view& pcs_id, Outcome& outcome) = 0;
  };
  // The default runs scan_keys() on a thread of its own, handing the keys over in
  // batches through a bounded queue, and skips those out of the range: it reads the whole
  // store. A back end that can seek to a range overrides it and id_bounds().
  virtual std::unique_ptr<IdCursor> ids(std::string from = {}, std::string to = {});
  // The smallest and largest stored pcs_id ("" and "" when the store is empty), when
  // ids() reads only its range (an index seek) — nullopt otherwise (the default). A
  // comparison of stores splits the pcs_ids into ranges from these and scans the ranges
  // in parallel.
  virtual std::optional<std::pair<std::string, std::string>> id_bounds() { return std::nullopt; }

  // All evidence in (pcs_id, digest) order.
  virtual void scan_evidence(const std::function<void(const Evidence&)>& fn) = 0;
  // The evidence kept for the given pcs_ids (any order; repeats count once), in
  // (pcs_id, digest) order: both sides of every conflict ever found for them, e.g. for
  // an ApplyStats' conflict_ids. An id without evidence adds nothing. One statement per
  // id (sqlite), one per 10,000 ids (postgres), one script call per 10,000 ids (redis).
  virtual std::vector<Evidence> evidence(std::span<const std::string> pcs_ids) = 0;
  // The stored winners of the given pcs_ids (any order; repeats count once), in pcs_id
  // order; an id not stored adds nothing. The lookup apply() makes of its batch.
  virtual std::vector<Stored> lookup(std::span<const std::string> pcs_ids) = 0;
  virtual uint64_t count() = 0;

  // A value of the store's own metadata, by key: SQLite only (its meta table); the other
  // back ends hold none and refuse set_meta (Error internal). flk-diverge extract marks
  // the files it writes with the buckets they hold.
  virtual std::optional<std::string> meta(std::string_view key);
  virtual void set_meta(std::string_view key, std::string_view value);

  // Loads winners into this store, which must be empty: `next` fills its argument and
  // returns true until the input ends; pcs_ids come in strictly increasing bytewise
  // order. `evidence` is read only after next() has returned false (so next may fill
  // it while it streams); no (pcs_id, digest) in it twice. The bulk path of a rebuild
  // (no lookups). Not atomic: a failed load leaves a partial store, to be discarded.
  virtual void bulk_load(const std::function<bool(Stored&)>& next, const std::vector<Evidence>& evidence) = 0;

  // A new, empty store beside this one, for a rebuild (sqlite: a file beside it;
  // postgres: the schema <schema>_rebuild; redis: a new key generation under the
  // same prefix). Its url() is this one's with "#rebuild" or ".rebuild" added. Anything left there by an
  // earlier, interrupted rebuild is removed first.
  virtual std::unique_ptr<Store> open_scratch() = 0;
  // Atomically replaces this store's whole content (records, evidence, watermarks)
  // with the scratch store's. `scratch` is consumed. Readers see the old content or
  // the new, never a mix; a crash before the swap leaves the old content intact.
  virtual void replace_with(std::unique_ptr<Store> scratch) = 0;
};

// Opens (and creates or migrates the schema of) the store a URL names:
//   sqlite:///var/lib/flk/dedup.db     (also sqlite://relative/path)
//   postgres://user:pass@host:port/db?sslmode=…&schema=NAME   (postgresql:// too; a libpq
//                       connection URI; flk's tables in schema NAME, default flk)
//   redis://[[user]:pass@]host:port/db[?prefix=NAME]   (keys under NAME, default flk)
// Errors name the URL with the password masked: malformed URL or a schema version
// this build does not know → config (78); server unreachable → unavailable (69);
// authentication refused → no_perm (77).
std::unique_ptr<Store> open(const std::string& url);

// The URL with a password replaced by "***".
std::string mask_url(std::string_view url);

// SHA-256 over every stored (pcs_id, digest) in pcs_id order: two stores with the same
// winners have the same content digest, whatever the back end.
hash::Digest content_digest(Store& s);

// The shared first-write-wins logic every back end uses.
//
// plan() applies `records` in order to `current` (pcs_id → stored winner, loaded by
// the back end for the pcs_ids of the batch; absent = not stored), updating it, and
// returns what to write: the new winners (one per pcs_id whose winner changed) and the
// evidence to add, and the statistics (conflict_ids included). `now` stamps the
// evidence.
struct Plan {
  std::vector<Stored> upserts;
  std::vector<Evidence> evidence;
  ApplyStats stats;
};
Plan plan(std::span<const Record> records, std::unordered_map<std::string, Stored>& current, int64_t now);

// The distinct pcs_ids of a batch (for the back end to load).
std::vector<std::string> distinct_ids(std::span<const Record> records);
// The distinct ids of evidence()'s and lookup()'s argument, sorted bytewise (views into it).
std::vector<std::string_view> distinct_ids(std::span<const std::string> ids);

// Schema version this build writes and understands (all back ends).
constexpr int kSchemaVersion = 1;

}  // namespace flk::store
