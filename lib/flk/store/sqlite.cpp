// The SQLite back end: the embedded default (sqlite:///path/dedup.db).
//
// Schema (version store::kSchemaVersion):
//   meta(key TEXT PRIMARY KEY, value TEXT)                     schema_version; extract
//   records(pcs_id TEXT PRIMARY KEY, tenant_id, outcome, ts, region, params, payload,
//           digest BLOB) WITHOUT ROWID                          the winners
//   evidence(pcs_id, digest, tenant_id, outcome, ts, region, params, payload,
//            detected_at, PRIMARY KEY(pcs_id, digest)) WITHOUT ROWID
//   watermarks(source TEXT PRIMARY KEY, sequence, digest BLOB, updated)
// TEXT keys compare with the BINARY collation (memcmp), so scans come in bytewise
// pcs_id order, as in the other back ends.
//
// Durability: WAL journal mode with synchronous=NORMAL. A power loss can lose the last
// transactions, never half of one; since records and their watermark commit together,
// a lost transaction is simply replayed again (replay is idempotent).
//
// Rebuild: the scratch store is a file beside the store ("<path>.rebuild"), loaded with
// the journal off, many rows per INSERT, its pages handed to the disk as the load goes
// (sync_file_range) and synced once at the end; replace_with() checkpoints the live store
// and takes it out of WAL mode (so no stale -wal file can be applied to the new one),
// renames the scratch file over it, syncs the directory and reopens.
#include <fcntl.h>
#include <sqlite3.h>
#include <unistd.h>

#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <thread>

#include <fmt/format.h>

#include "flk/store/backends.hpp"
#include "flk/util/error.hpp"
#include "flk/util/fs.hpp"
#include "flk/util/time.hpp"

namespace flk::store {

namespace {

namespace stdfs = std::filesystem;

class Db;

// A prepared statement, reset after each use.
class Stmt {
 public:
  Stmt() = default;
  Stmt(Db& db, const char* sql);
  Stmt(Stmt&& o) noexcept : db_(o.db_), s_(o.s_) { o.s_ = nullptr; }
  Stmt& operator=(Stmt&& o) noexcept {
    std::swap(db_, o.db_);
    std::swap(s_, o.s_);
    return *this;
  }
  ~Stmt() { sqlite3_finalize(s_); }

  Stmt& text(int i, std::string_view v) {
    check(sqlite3_bind_text(s_, i, v.data(), static_cast<int>(v.size()), SQLITE_STATIC));
    return *this;
  }
  Stmt& opt_text(int i, const std::optional<std::string_view>& v) {
    if (v) return text(i, *v);
    check(sqlite3_bind_null(s_, i));
    return *this;
  }
  Stmt& blob(int i, const void* p, size_t n) {
    check(sqlite3_bind_blob(s_, i, p, static_cast<int>(n), SQLITE_STATIC));
    return *this;
  }
  Stmt& i64(int i, int64_t v) {
    check(sqlite3_bind_int64(s_, i, v));
    return *this;
  }
  bool step();  // true: a row; false: done (then reset)
  void run() {
    while (step()) {
    }
  }
  void reset() {
    sqlite3_reset(s_);
    sqlite3_clear_bindings(s_);
  }

  std::string_view col_text(int i) const {
    auto p = reinterpret_cast<const char*>(sqlite3_column_text(s_, i));
    return p ? std::string_view(p, static_cast<size_t>(sqlite3_column_bytes(s_, i))) : std::string_view();
  }
  std::optional<std::string> col_opt_text(int i) const {
    if (sqlite3_column_type(s_, i) == SQLITE_NULL) return std::nullopt;
    return std::string(col_text(i));
  }
  int64_t col_i64(int i) const { return sqlite3_column_int64(s_, i); }
  // The column as a value, for a hot loop: one API call for the column, then cheap
  // sqlite3_value_*() calls on it, instead of a sqlite3_column_*() each (every one of
  // them enters and leaves the connection's mutex and checks for malloc failure). The
  // value is "unprotected"; SQLite's documentation of sqlite3_value: in multi-thread
  // mode (SQLITE_OPEN_NOMUTEX, as every connection here) "there is no distinction
  // between protected and unprotected sqlite3_value objects and they can be used
  // interchangeably". Valid until the next step.
  sqlite3_value* col_value(int i) const { return sqlite3_column_value(s_, i); }
  hash::Digest col_digest(int i) const {
    hash::Digest d{};
    if (sqlite3_column_bytes(s_, i) == 32) std::memcpy(d.data(), sqlite3_column_blob(s_, i), 32);
    return d;
  }

 private:
  void check(int rc);
  Db* db_ = nullptr;
  sqlite3_stmt* s_ = nullptr;
};

// The connection, with errors that name the store.
class Db {
 public:
  Db(std::string path, std::string url) : path_(std::move(path)), url_(std::move(url)) {}
  ~Db() { close(); }

  void open() {
    stdfs::path parent = stdfs::path(path_).parent_path();
    if (!parent.empty()) {
      try {
        fs::make_dirs(parent);
      } catch (const Error& e) {
        throw e.wrap(fmt::format("store '{}'", url_));
      }
    }
    int rc = sqlite3_open_v2(path_.c_str(), &db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                             nullptr);
    if (rc != SQLITE_OK) {
      std::string msg = db_ ? sqlite3_errmsg(db_) : sqlite3_errstr(rc);
      close();
      fail(rc == SQLITE_CANTOPEN ? Code::cant_create : Code::io, "store '{}': cannot open: {}", url_, msg);
    }
    sqlite3_busy_timeout(db_, 10000);
    sqlite3_extended_result_codes(db_, 1);
  }
  void close() {
    if (db_) sqlite3_close_v2(db_);
    db_ = nullptr;
  }

  void exec(const char* sql) {
    char* err = nullptr;
    int rc = sqlite3_exec(db_, sql, nullptr, nullptr, &err);
    if (rc != SQLITE_OK) {
      std::string msg = err ? err : sqlite3_errstr(rc);
      sqlite3_free(err);
      raise(rc, msg);
    }
  }

  [[noreturn]] void raise(int rc, const std::string& msg) {
    int primary = rc & 0xff;
    Code code = Code::io;
    if (primary == SQLITE_CORRUPT || primary == SQLITE_NOTADB) code = Code::data;
    else if (primary == SQLITE_BUSY || primary == SQLITE_LOCKED) code = Code::temp_fail;
    else if (primary == SQLITE_READONLY || primary == SQLITE_PERM || primary == SQLITE_AUTH) code = Code::no_perm;
    else if (primary == SQLITE_CANTOPEN) code = Code::cant_create;
    fail(code, "store '{}': {}", url_, msg);
  }

  sqlite3* get() { return db_; }
  const std::string& path() const { return path_; }
  const std::string& url() const { return url_; }

 private:
  std::string path_, url_;
  sqlite3* db_ = nullptr;
};

Stmt::Stmt(Db& db, const char* sql) : db_(&db) {
  int rc = sqlite3_prepare_v3(db.get(), sql, -1, SQLITE_PREPARE_PERSISTENT, &s_, nullptr);
  if (rc != SQLITE_OK) db.raise(rc, sqlite3_errmsg(db.get()));
}

void Stmt::check(int rc) {
  if (rc != SQLITE_OK) db_->raise(rc, sqlite3_errmsg(db_->get()));
}

bool Stmt::step() {
  int rc = sqlite3_step(s_);
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) {
    sqlite3_reset(s_);
    return false;
  }
  std::string msg = sqlite3_errmsg(db_->get());
  reset();
  db_->raise(rc, msg);
}

constexpr const char* kSchema = R"(
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS records(
  pcs_id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, outcome INTEGER NOT NULL, ts INTEGER NOT NULL,
  region TEXT NOT NULL, params TEXT, payload TEXT, digest BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS evidence(
  pcs_id TEXT NOT NULL, digest BLOB NOT NULL, tenant_id TEXT NOT NULL, outcome INTEGER NOT NULL,
  ts INTEGER NOT NULL, region TEXT NOT NULL, params TEXT, payload TEXT, detected_at INTEGER NOT NULL,
  PRIMARY KEY(pcs_id, digest)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS watermarks(
  source TEXT PRIMARY KEY, sequence INTEGER NOT NULL, digest BLOB NOT NULL, updated INTEGER NOT NULL) WITHOUT ROWID;
)";

constexpr const char* kRecordColumns = "pcs_id, tenant_id, outcome, ts, region, params, payload, digest";
constexpr const char* kEvidenceColumns = "pcs_id, tenant_id, outcome, ts, region, params, payload, digest, detected_at";

Stored read_stored(const Stmt& s) {
  Stored st;
  st.record.pcs_id = s.col_text(0);
  st.record.tenant_id = s.col_text(1);
  st.record.outcome = static_cast<Outcome>(s.col_i64(2));
  st.record.ts = s.col_i64(3);
  st.record.region = s.col_text(4);
  st.record.params = s.col_opt_text(5);
  st.record.payload = s.col_opt_text(6);
  st.digest = s.col_digest(7);
  return st;
}

// A row of kEvidenceColumns.
Evidence read_evidence(const Stmt& s) {
  Stored st = read_stored(s);
  return Evidence{std::move(st.record), st.digest, s.col_i64(8)};
}

// Binds a record to parameters at+1 … at+8 (kRecordColumns' order). The values are not
// copied (SQLITE_STATIC): the bytes `r` views and `d` must outlive the statement's run.
void bind_record(Stmt& s, const RecordView& r, const hash::Digest& d, int at = 0) {
  s.text(at + 1, r.pcs_id)
      .text(at + 2, r.tenant_id)
      .i64(at + 3, static_cast<int64_t>(r.outcome))
      .i64(at + 4, r.ts)
      .text(at + 5, r.region)
      .opt_text(at + 6, r.params)
      .opt_text(at + 7, r.payload)
      .blob(at + 8, d.data(), d.size());
}

// "INSERT INTO records(…) VALUES(?1,…,?8),(?9,…),…" with `rows` rows (`verb`: "INSERT"
// or "INSERT OR IGNORE").
std::string insert_sql(size_t rows, std::string_view verb = "INSERT") {
  std::string sql = fmt::format("{} INTO records({}) VALUES", verb, kRecordColumns);
  for (size_t i = 0; i < rows; ++i) {
    sql += i ? ",(" : "(";
    for (size_t c = 1; c <= 8; ++c) sql += fmt::format("{}?{}", c > 1 ? "," : "", i * 8 + c);
    sql += ')';
  }
  return sql;
}

// Rows per INSERT of the bulk load. One statement per row spends more in starting and
// ending the statement (and reopening its B-tree cursor at the root) than in inserting:
// 1M sorted rows took 2.0 s one per statement, 0.8 s with 100–400 per statement.
constexpr size_t kBulkRows = 256;

// Starts the kernel writing a file's dirty pages to disk, without waiting
// (sync_file_range(2)): the load of a scratch store goes on meanwhile, and the fsync
// before the swap has less left to wait for. Only a hint: errors are for that fsync.
class Writeback {
 public:
  explicit Writeback(const std::string& path) : fd_(::open(path.c_str(), O_RDONLY | O_CLOEXEC)) {}
  ~Writeback() {
    if (fd_ >= 0) ::close(fd_);
  }
  Writeback(const Writeback&) = delete;
  Writeback& operator=(const Writeback&) = delete;
  void start() {
    if (fd_ >= 0) ::sync_file_range(fd_, 0, 0, SYNC_FILE_RANGE_WRITE);
  }

 private:
  int fd_;
};

class SqliteStore final : public Store {
 public:
  SqliteStore(std::string path, std::string url, bool scratch) : db_(std::move(path), std::move(url)), scratch_(scratch) {
    open_db();
  }

  std::string url() const override { return db_.url(); }

  // In pcs_id order (each B-tree page visited once, not once per record on it). A
  // pcs_id that appears once in the batch is first offered to INSERT OR IGNORE (256 rows
  // a statement): when it is new to the store — the common case of replay — that is the
  // whole of first write wins. Otherwise (stored already, or repeated in the batch) its
  // records go through the shared plan() against the stored winner. The result is
  // plan()'s over the whole batch: pcs_ids are independent, and a pcs_id's records keep
  // their order.
  ApplyStats apply(std::span<const Record> records, const Watermark* advance) override {
    std::vector<RecordView> views;
    views.reserve(records.size());
    for (const Record& r : records) views.push_back(view_of(r));
    Tx tx(*this);
    ApplyStats stats = apply_in_tx(views, advance, {});
    tx.commit();
    return stats;
  }

  void begin_group() override {
    if (group_) return;
    db_.exec("BEGIN IMMEDIATE");
    group_ = true;
  }
  void commit_group() override {
    if (!group_) return;
    group_ = false;
    try {
      db_.exec("COMMIT");  // and, past wal_autocheckpoint's 1000 pages, the checkpoint
    } catch (...) {
      sqlite3_exec(db_.get(), "ROLLBACK", nullptr, nullptr, nullptr);
      throw;
    }
  }

  // One transaction for all (or the group's).
  std::vector<ApplyStats> apply_all(std::span<const Batch> batches) override {
    Tx tx(*this);
    std::vector<ApplyStats> out;
    for (const Batch& b : batches) {
      if (!b.digests.empty() && b.digests.size() != b.records.size())
        fail(Code::internal, "store '{}': {} digests for {} records", db_.url(), b.digests.size(), b.records.size());
      out.push_back(apply_in_tx(b.records, b.advance, b.digests));
    }
    tx.commit();
    return out;
  }

  ApplyStats apply_in_tx(std::span<const RecordView> records, const Watermark* advance,
                         std::span<const hash::Digest> digests) {
    // Sorted by (the first 8 bytes of the pcs_id, big-endian, then the rest, then the
    // position): the prefix decides most comparisons without touching the strings.
    struct Key {
      uint64_t prefix;
      uint32_t index;
    };
    std::vector<Key> keys(records.size());
    for (uint32_t i = 0; i < keys.size(); ++i) {
      const std::string_view id = records[i].pcs_id;
      uint64_t p = 0;
      for (size_t b = 0; b < 8; ++b) p = (p << 8) | (b < id.size() ? static_cast<uint8_t>(id[b]) : 0);
      keys[i] = {p, i};
    }
    std::sort(keys.begin(), keys.end(), [&](const Key& a, const Key& b) {
      if (a.prefix != b.prefix) return a.prefix < b.prefix;
      int c = records[a.index].pcs_id.compare(records[b.index].pcs_id);
      return c != 0 ? c < 0 : a.index < b.index;
    });
    std::vector<uint32_t> order(keys.size());
    for (size_t i = 0; i < keys.size(); ++i) order[i] = keys[i].index;
    ApplyStats stats;
    std::vector<Evidence> evidence;
    int64_t now = timeutil::now();
    auto digest_of = [&](uint32_t k) { return digests.empty() ? record_digest(records[k]) : digests[k]; };
    // A pcs_id stored already, or repeated in the batch: its records through the shared
    // plan() against the stored winner.
    std::vector<Record> group;
    auto by_plan = [&](size_t i, size_t j) {
      group.clear();
      for (size_t k = i; k < j; ++k) group.push_back(to_record(records[order[k]]));
      std::unordered_map<std::string, Stored> current;
      if (auto st = get(group.front().pcs_id)) current.emplace(group.front().pcs_id, std::move(*st));
      Plan p = plan(group, current, now);
      for (const Stored& up : p.upserts) {
        bind_record(put_, view_of(up.record), up.digest);
        put_.run();
        put_.reset();
      }
      evidence.insert(evidence.end(), p.evidence.begin(), p.evidence.end());
      stats += p.stats;
    };
    // A pcs_id once in the batch (nearly all, replaying new records) is offered to
    // INSERT OR IGNORE, kBulkRows at a time in one statement (a statement per row costs
    // more in starting and ending it than in inserting). When it inserted them all, that
    // was the whole of first write wins. Otherwise the ones it left were stored already:
    // those stored with another digest go through plan() against the stored winner, the
    // others are duplicates (a record identical to the winner, inserted or not, leaves
    // the same row). No savepoint to undo: one around each statement cost a fifth of
    // the apply (every page the statement touched copied to the statement journal).
    std::vector<size_t> single;  // positions in `order`
    std::vector<hash::Digest> bound(kBulkRows);
    auto one_by_one = [&] {
      for (size_t r : single) {
        const hash::Digest d = digest_of(order[r]);  // bound, not copied (SQLITE_STATIC): alive through run()
        bind_record(insert_new_, records[order[r]], d);
        insert_new_.run();
        insert_new_.reset();
        if (sqlite3_changes(db_.get()) == 1)
          ++stats.inserted;
        else
          by_plan(r, r + 1);
      }
    };
    auto offer = [&] {
      if (single.size() == kBulkRows) {
        for (size_t r = 0; r < kBulkRows; ++r) {
          bound[r] = digest_of(order[single[r]]);
          bind_record(insert_many_, records[order[single[r]]], bound[r], static_cast<int>(r * 8));
        }
        insert_many_.run();
        const auto inserted = static_cast<size_t>(sqlite3_changes(db_.get()));
        stats.inserted += inserted;
        if (inserted < kBulkRows) {
          size_t differ = 0;
          for (size_t r = 0; r < kBulkRows; ++r) {
            std::optional<Stored> st = get(records[order[single[r]]].pcs_id);
            if (!st) fail(Code::internal, "store '{}': a record offered is neither stored nor inserted", db_.url());
            if (st->digest != bound[r]) {
              by_plan(single[r], single[r] + 1);
              ++differ;
            }
          }
          stats.duplicates += kBulkRows - inserted - differ;
        }
      } else {
        one_by_one();
      }
      single.clear();
    };
    for (size_t i = 0; i < order.size();) {
      const RecordView& first = records[order[i]];
      size_t j = i + 1;
      while (j < order.size() && records[order[j]].pcs_id == first.pcs_id) ++j;
      if (j == i + 1) {
        single.push_back(i);
        if (single.size() == kBulkRows) offer();
      } else {
        by_plan(i, j);
      }
      i = j;
    }
    offer();
    // plan() gave them per pcs_id, not in order (singles are offered in groups).
    std::sort(stats.conflict_ids.begin(), stats.conflict_ids.end());
    add_evidence(evidence);
    if (advance) write_watermark(*advance);
    return stats;
  }

  std::optional<Watermark> watermark(std::string_view source) override {
    Stmt s(db_, "SELECT source, sequence, digest, updated FROM watermarks WHERE source = ?1");
    s.text(1, source);
    if (!s.step()) return std::nullopt;
    Watermark w = read_watermark(s);
    s.reset();
    return w;
  }

  std::vector<Watermark> watermarks() override {
    Stmt s(db_, "SELECT source, sequence, digest, updated FROM watermarks ORDER BY source");
    std::vector<Watermark> out;
    while (s.step()) out.push_back(read_watermark(s));
    return out;
  }

  void set_watermark(const Watermark& w) override {
    Tx tx(*this);
    write_watermark(w);
    tx.commit();
  }

  // A whole-table scan reads each page once: it runs with a small page cache, so that a
  // scan of a large store (flk-diverge) does not fill the 64 MiB meant for replay.
  struct SmallCache {
    explicit SmallCache(Db& db) : db_(db) {
      Stmt q(db_, "PRAGMA cache_size");
      if (q.step()) before_ = q.col_i64(0);
      q.reset();
      db_.exec("PRAGMA cache_size=-2048");
    }
    ~SmallCache() {
      try {
        db_.exec(fmt::format("PRAGMA cache_size={}", before_).c_str());
      } catch (...) {
      }
    }
    Db& db_;
    int64_t before_ = -2000;  // SQLite's default
  };

  void scan(const std::function<void(const Stored&)>& fn) override {
    SmallCache small(db_);
    Stmt s(db_, fmt::format("SELECT {} FROM records ORDER BY pcs_id", kRecordColumns).c_str());
    while (s.step()) fn(read_stored(s));
  }

  void scan_keys(const std::function<void(const KeyView&)>& fn) override {
    SmallCache small(db_);
    Stmt s(db_, "SELECT pcs_id, tenant_id, region, outcome, ts, digest FROM records ORDER BY pcs_id");
    while (s.step())
      fn({s.col_text(0), s.col_text(1), s.col_text(2), static_cast<Outcome>(s.col_i64(3)), s.col_i64(4),
          s.col_digest(5)});
  }

  // A statement over the range, stepped as the caller pulls: nothing is copied (the
  // pcs_id is SQLite's own text, valid until the next step), no thread.
  class Ids final : public IdCursor {
   public:
    Ids(Db& db, std::string from, std::string to)
        : small_(db), from_(std::move(from)), to_(std::move(to)), s_(db, sql(!from_.empty()).c_str()) {
      if (!from_.empty()) s_.text(1, from_);
    }
    bool next(std::string_view& pcs_id, Outcome& outcome) override {
      if (done_) return false;
      if (!s_.step()) {
        done_ = true;  // step() reset the statement: another would run it again
        return false;
      }
      sqlite3_value* id = s_.col_value(0);
      auto p = reinterpret_cast<const char*>(sqlite3_value_text(id));
      pcs_id = p ? std::string_view(p, static_cast<size_t>(sqlite3_value_bytes(id))) : std::string_view();
      if (!to_.empty() && pcs_id >= to_) {  // the range's end: compared here, not by SQLite on every row
        s_.reset();
        done_ = true;
        return false;
      }
      outcome = static_cast<Outcome>(sqlite3_value_int(s_.col_value(1)));
      return true;
    }

   private:
    // Only the start is SQLite's (a seek); the end is checked in next(): as a WHERE
    // term SQLite would decode and compare every row's key against it (5% of a scan).
    static std::string sql(bool from) {
      return fmt::format("SELECT pcs_id, outcome FROM records{} ORDER BY pcs_id", from ? " WHERE pcs_id >= ?1" : "");
    }
    SmallCache small_;
    std::string from_, to_;  // from_ bound without a copy: it lives as long as the statement
    Stmt s_;
    bool done_ = false;
  };

  std::unique_ptr<IdCursor> ids(std::string from, std::string to) override {
    return std::make_unique<Ids>(db_, std::move(from), std::move(to));
  }

  std::optional<std::pair<std::string, std::string>> id_bounds() override {
    // Two subqueries: each is one seek (SQLite's min/max optimisation takes a query of
    // a single min() or max(); "SELECT min(…), max(…)" would scan).
    Stmt s(db_, "SELECT (SELECT min(pcs_id) FROM records), (SELECT max(pcs_id) FROM records)");
    std::pair<std::string, std::string> b;
    if (s.step()) b = {std::string(s.col_text(0)), std::string(s.col_text(1))};
    s.reset();
    return b;
  }

  void scan_evidence(const std::function<void(const Evidence&)>& fn) override {
    Stmt s(db_, fmt::format("SELECT {} FROM evidence ORDER BY pcs_id, digest", kEvidenceColumns).c_str());
    while (s.step()) fn(read_evidence(s));
  }

  // One read transaction (one snapshot), a lookup by primary key per id.
  std::vector<Evidence> evidence(std::span<const std::string> pcs_ids) override {
    std::vector<Evidence> out;
    if (pcs_ids.empty()) return out;
    Tx tx(*this, "BEGIN");
    for (std::string_view id : distinct_ids(pcs_ids)) {
      evidence_of_.text(1, id);
      while (evidence_of_.step()) out.push_back(read_evidence(evidence_of_));
      evidence_of_.reset();
    }
    tx.commit();
    return out;
  }

  std::vector<Stored> lookup(std::span<const std::string> pcs_ids) override {
    std::vector<Stored> out;
    if (pcs_ids.empty()) return out;
    SmallCache small(db_);  // flk-diverge looks up thousands at a time: a path each, read once
    Tx tx(*this, "BEGIN");
    for (std::string_view id : distinct_ids(pcs_ids))
      if (auto st = get(id)) out.push_back(std::move(*st));
    tx.commit();
    return out;
  }

  std::optional<std::string> meta(std::string_view key) override {
    Stmt s(db_, "SELECT value FROM meta WHERE key = ?1");
    s.text(1, key);
    if (!s.step()) return std::nullopt;
    std::string v(s.col_text(0));
    s.reset();
    return v;
  }
  void set_meta(std::string_view key, std::string_view value) override {
    Tx tx(*this);
    Stmt s(db_, "INSERT OR REPLACE INTO meta(key, value) VALUES(?1, ?2)");
    s.text(1, key).text(2, value).run();
    tx.commit();
  }

  uint64_t count() override {
    Stmt s(db_, "SELECT count(*) FROM records");
    uint64_t n = s.step() ? static_cast<uint64_t>(s.col_i64(0)) : 0;
    s.reset();
    return n;
  }

  void bulk_load(const std::function<bool(Stored&)>& next, const std::vector<Evidence>& evidence) override {
    Tx tx(*this);
    // kBulkRows records at a time, bound in place (the binds point into `rows`), one
    // statement for all of them; the rest one by one. Every parameter is bound each
    // time: no clearing needed.
    Stmt many(db_, insert_sql(kBulkRows).c_str());
    // Only for a scratch store (no WAL, nobody else): closing any descriptor of a file
    // drops every POSIX lock the process holds on it, SQLite's included.
    std::optional<Writeback> writeback;
    if (scratch_) writeback.emplace(db_.path());
    size_t batches = 0;
    std::vector<Stored> rows(kBulkRows);
    bool first = true;
    size_t n = 0;
    while (next(rows[n])) {
      const std::string& id = rows[n].record.pcs_id;
      const std::string& last = rows[n ? n - 1 : kBulkRows - 1].record.pcs_id;  // not yet overwritten
      if (!first && id <= last) fail(Code::internal, "store '{}': bulk load out of order at '{}'", db_.url(), id);
      first = false;
      if (++n < kBulkRows) continue;
      for (size_t i = 0; i < n; ++i) bind_record(many, view_of(rows[i].record), rows[i].digest, static_cast<int>(i * 8));
      many.run();
      n = 0;
      if (writeback && ++batches % 256 == 0) writeback->start();
    }
    for (size_t i = 0; i < n; ++i) {
      bind_record(insert_, view_of(rows[i].record), rows[i].digest);
      insert_.run();
    }
    add_evidence(evidence);
    tx.commit();
  }

  std::unique_ptr<Store> open_scratch() override {
    std::string path = db_.path() + ".rebuild";
    remove_files(path);
    return std::make_unique<SqliteStore>(path, db_.url() + ".rebuild", true);
  }

  void replace_with(std::unique_ptr<Store> scratch_store) override {
    auto* scratch = dynamic_cast<SqliteStore*>(scratch_store.get());
    if (!scratch || !scratch->scratch_) fail(Code::internal, "store '{}': replace_with needs its own scratch store", db_.url());
    std::string from = scratch->db_.path();
    scratch->db_.exec("PRAGMA journal_mode=DELETE");
    scratch->db_.close();
    scratch_store.reset();
    fs::Fd::open(from, O_RDWR).sync();
    // Out of WAL mode, so that no -wal file of the old store outlives it.
    db_.exec("PRAGMA wal_checkpoint(TRUNCATE)");
    db_.exec("PRAGMA journal_mode=DELETE");
    finalize_statements();
    db_.close();
    if (::rename(from.c_str(), db_.path().c_str()) != 0)
      throw sys_error("cannot rename into", db_.path(), errno, Code::cant_create);
    stdfs::path dir = stdfs::path(db_.path()).parent_path();
    fs::sync_dir(dir.empty() ? stdfs::path(".") : dir);
    open_db();
  }

 private:
  // BEGIN IMMEDIATE (a writer) or BEGIN (a reader) … COMMIT, rolled back if not
  // committed. Inside a group (begin_group) it is the group's: it neither begins nor
  // commits, and a failure rolls the whole group back.
  class Tx {
   public:
    explicit Tx(SqliteStore& s, const char* begin = "BEGIN IMMEDIATE") : s_(s), nested_(s.group_) {
      if (!nested_) s_.db_.exec(begin);
    }
    ~Tx() {
      if (done_) return;
      sqlite3_exec(s_.db_.get(), "ROLLBACK", nullptr, nullptr, nullptr);
      s_.group_ = false;
    }
    void commit() {
      if (!nested_) s_.db_.exec("COMMIT");
      done_ = true;
    }

   private:
    SqliteStore& s_;
    bool nested_;
    bool done_ = false;
  };

  void open_db() {
    // Only a file that does not exist yet, with no WAL beside it: an existing file may be
    // empty on disk while its content waits in the WAL (never checkpointed), and setting
    // the page size then is not safe.
    std::error_code ec;
    bool fresh = !stdfs::exists(db_.path(), ec) && !stdfs::exists(db_.path() + "-wal", ec);
    db_.open();
    if (scratch_) {
      // Larger pages: fewer B-tree levels and splits for the bulk load (25% less CPU
      // than 4 KiB on 1M records), still small enough for random updates later.
      db_.exec("PRAGMA page_size=16384; PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; PRAGMA cache_size=-16384");
    } else {
      // A 64 MiB page cache: replaying a segment inserts records all over the B-tree, and
      // with the default 2 MiB cache each cost pread(2)/pwrite(2) calls (flk-read spent
      // 41% of its time in them). 16 KiB pages, as the scratch store's: fewer levels and
      // splits — set only on a file that does not exist yet, never on one that may have
      // a WAL to recover. No mmap_size: reads through a map gained nothing measurable and
      // turn an I/O error into SIGBUS.
      if (fresh) db_.exec("PRAGMA page_size=16384");
      db_.exec("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA cache_size=-65536; PRAGMA temp_store=MEMORY");
    }
    {
      Tx tx(*this);
      db_.exec(kSchema);
      Stmt get(db_, "SELECT value FROM meta WHERE key = 'schema_version'");
      if (get.step()) {
        int v = std::atoi(std::string(get.col_text(0)).c_str());
        get.reset();
        if (v > kSchemaVersion)
          fail(Code::config, "store '{}': schema version {} is newer than this flk understands ({})", db_.url(), v,
               kSchemaVersion);
      } else {
        Stmt put(db_, "INSERT INTO meta(key, value) VALUES('schema_version', ?1)");
        put.text(1, std::to_string(kSchemaVersion)).run();
      }
      tx.commit();
    }
    get_ = Stmt(db_, fmt::format("SELECT {} FROM records WHERE pcs_id = ?1", kRecordColumns).c_str());
    put_ = Stmt(db_, fmt::format("INSERT OR REPLACE INTO records({}) VALUES(?1,?2,?3,?4,?5,?6,?7,?8)", kRecordColumns).c_str());
    insert_new_ =
        Stmt(db_, fmt::format("INSERT OR IGNORE INTO records({}) VALUES(?1,?2,?3,?4,?5,?6,?7,?8)", kRecordColumns).c_str());
    insert_ = Stmt(db_, insert_sql(1).c_str());
    insert_many_ = Stmt(db_, insert_sql(kBulkRows, "INSERT OR IGNORE").c_str());
    evidence_ = Stmt(db_,
                     "INSERT OR IGNORE INTO evidence(pcs_id, tenant_id, outcome, ts, region, params, payload, digest, "
                     "detected_at) VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9)");
    evidence_of_ =
        Stmt(db_, fmt::format("SELECT {} FROM evidence WHERE pcs_id = ?1 ORDER BY digest", kEvidenceColumns).c_str());
    watermark_ = Stmt(db_, "INSERT OR REPLACE INTO watermarks(source, sequence, digest, updated) VALUES(?1,?2,?3,?4)");
    unmark_ = Stmt(db_, "DELETE FROM watermarks WHERE source = ?1");
  }

  void finalize_statements() {
    for (Stmt* s : {&get_, &put_, &insert_new_, &insert_, &insert_many_,
                    &evidence_, &evidence_of_, &watermark_, &unmark_})
      *s = Stmt();
  }

  // The stored winner of a pcs_id.
  std::optional<Stored> get(std::string_view id) {
    get_.text(1, id);
    std::optional<Stored> st;
    if (get_.step()) st = read_stored(get_);
    get_.reset();
    return st;
  }

  void add_evidence(std::span<const Evidence> ev) {
    for (const Evidence& e : ev) {
      bind_record(evidence_, view_of(e.record), e.digest);
      evidence_.i64(9, e.detected_at);
      evidence_.run();
      evidence_.reset();
    }
  }

  void write_watermark(const Watermark& w) {
    if (w.sequence == 0) {
      unmark_.text(1, w.source).run();
      unmark_.reset();
      return;
    }
    watermark_.text(1, w.source)
        .i64(2, static_cast<int64_t>(w.sequence))
        .blob(3, w.digest.data(), w.digest.size())
        .i64(4, w.updated)
        .run();
    watermark_.reset();
  }

  static Watermark read_watermark(const Stmt& s) {
    return Watermark{std::string(s.col_text(0)), static_cast<uint64_t>(s.col_i64(1)), s.col_digest(2), s.col_i64(3)};
  }

  static void remove_files(const std::string& path) {
    for (const char* suffix : {"", "-wal", "-shm", "-journal"}) ::unlink((path + suffix).c_str());
  }

  Db db_;
  bool scratch_;
  bool group_ = false;  // a transaction of begin_group() is open
  Stmt get_, put_, insert_new_, insert_, insert_many_, evidence_, evidence_of_,
      watermark_, unmark_;
};

}  // namespace

std::unique_ptr<Store> open_sqlite(const std::string& path, const std::string& url) {
  return std::make_unique<SqliteStore>(path, url, false);
}

}  // namespace flk::store
