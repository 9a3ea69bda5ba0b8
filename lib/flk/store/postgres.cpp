// The PostgreSQL back end of the dedup store (DESIGN.md §3), over libpq. The only file
// that includes libpq.
//
// URL: a libpq connection URI (postgres:// or postgresql://) plus one flk parameter,
// `schema=NAME` (default "flk"): the schema that holds flk's tables, so that one
// database can hold several stores (tests use one schema per test). It is removed
// before the URI goes to libpq, which rejects unknown parameters. Defaults that the URI
// may override: connect_timeout=10, application_name=flk. client_encoding is always
// UTF8 (the text columns hold UTF-8).
//
// Tables, in the schema (created, and later migrated, by open() under an advisory lock,
// so two processes may open a new store at once):
//
//   meta(key, value)                 schema_version = kSchemaVersion
//   records(pcs_id PK, tenant_id, outcome, ts, region, params, payload, digest)
//   evidence(pcs_id, digest, tenant_id, outcome, ts, region, params, payload,
//            detected_at; PK (pcs_id, digest))
//   watermarks(source PK, sequence, digest, updated)
//
// pcs_id and source are COLLATE "C", so the primary key's order is bytewise (memcmp),
// the order of std::string and of the other back ends; scan() walks that index.
//
// apply() is one transaction: take the store's advisory lock, load the stored winners
// of the batch's pcs_ids, run plan(), upsert the new winners and insert the evidence
// (one statement each, whatever the batch size: the rows travel as binary arrays that
// unnest() turns into rows), set the watermark, commit. The advisory lock — not
// SELECT … FOR UPDATE — serializes appliers: FOR UPDATE cannot lock a pcs_id that is
// not stored yet, so two appliers could both plan an insert of one new pcs_id, and the
// second upsert would overwrite the first write without a first-write-wins comparison
// or any evidence. (It would also write every loaded row's xmax, which costs a heap
// write per duplicate on replay.)
//
// evidence() and lookup() send the (sorted, distinct) pcs_ids as one text[] parameter
// per kMaxRowsPerStatement ids: `pcs_id = ANY($1)` on the evidence, the load of apply()
// on the records.
//
// Errors: libpq's message on one line, prefixed by "store 'URL'" with the password
// masked (and any password text scrubbed from the message). Codes: malformed URL →
// config, server unreachable or connection lost → unavailable, authentication refused
// → no_perm, bad data → data, serialization failure/deadlock/lock timeout →
// temp_fail, other SQL errors → io.
#include <libpq-fe.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cstring>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "flk/store/backends.hpp"
#include "flk/store/store.hpp"
#include "flk/util/error.hpp"
#include "flk/util/hash.hpp"
#include "flk/util/time.hpp"

namespace flk::store {

namespace {

constexpr const char* kDefaultSchema = "flk";
constexpr const char* kRebuildSuffix = "_rebuild";
// NAMEDATALEN - 1 = 63 bytes for an identifier, less the suffix of the scratch schema.
constexpr size_t kMaxSchemaBytes = 63 - 8;
constexpr const char* kDefaultConnectTimeout = "10";

// Rows per statement of apply() and per FETCH of a scan, and the bytes that bound
// both when rows are large (payloads reach 1 MiB each).
constexpr size_t kMaxRowsPerStatement = 10000;
constexpr size_t kMaxBytesPerStatement = 32u << 20;
constexpr size_t kCopyBufferBytes = 1u << 20;

// Type OIDs of the binary array elements (pg_type.h).
constexpr uint32_t kOidBytea = 17;
constexpr uint32_t kOidInt8 = 20;
constexpr uint32_t kOidInt2 = 21;
constexpr uint32_t kOidText = 25;

// ---- RAII for libpq handles ----

struct ResultFree {
  void operator()(PGresult* r) const { PQclear(r); }
};
using Result = std::unique_ptr<PGresult, ResultFree>;

struct ConnFree {
  void operator()(PGconn* c) const { PQfinish(c); }
};
using Conn = std::unique_ptr<PGconn, ConnFree>;

struct ConninfoFree {
  void operator()(PQconninfoOption* o) const { PQconninfoFree(o); }
};

// ---- big-endian (network order) integers: the binary formats of PostgreSQL ----

void put_u16(std::string& out, uint16_t v) {
  char b[2] = {static_cast<char>(v >> 8), static_cast<char>(v)};
  out.append(b, 2);
}

void put_u32(std::string& out, uint32_t v) {
  char b[4] = {static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8),
               static_cast<char>(v)};
  out.append(b, 4);
}

void put_u64(std::string& out, uint64_t v) {
  put_u32(out, static_cast<uint32_t>(v >> 32));
  put_u32(out, static_cast<uint32_t>(v));
}

uint64_t get_be(const char* p, size_t n) {
  uint64_t v = 0;
  for (size_t i = 0; i < n; ++i) v = (v << 8) | static_cast<uint8_t>(p[i]);
  return v;
}

// A one-dimensional array in PostgreSQL's binary array format, sent as one parameter
// (`$1::text[]`): ndim, has-null flag, element type, then per dimension its length and
// lower bound, then each element as a 4-byte length (-1: NULL) and its bytes.
class ArrayParam {
 public:
  explicit ArrayParam(uint32_t elem_oid) : oid_(elem_oid) {}

  void add(std::string_view v) {
    put_u32(body_, static_cast<uint32_t>(v.size()));
    body_.append(v);
    ++n_;
  }
  void add_opt(const std::optional<std::string>& v) {
    if (v) return add(*v);
    put_u32(body_, 0xffffffffu);
    has_null_ = true;
    ++n_;
  }
  void add(const hash::Digest& d) { add(std::string_view(reinterpret_cast<const char*>(d.data()), d.size())); }
  void add_i16(int16_t v) {
    put_u32(body_, 2);
    put_u16(body_, static_cast<uint16_t>(v));
    ++n_;
  }
  void add_i64(int64_t v) {
    put_u32(body_, 8);
    put_u64(body_, static_cast<uint64_t>(v));
    ++n_;
  }

  // The parameter's bytes; valid until the next add().
  const std::string& bytes() {
    out_.clear();
    put_u32(out_, n_ ? 1 : 0);
    put_u32(out_, has_null_ ? 1 : 0);
    put_u32(out_, oid_);
    if (n_) {
      put_u32(out_, n_);
      put_u32(out_, 1);
    }
    out_ += body_;
    return out_;
  }
  size_t size() const { return body_.size(); }

 private:
  uint32_t oid_;
  uint32_t n_ = 0;
  bool has_null_ = false;
  std::string body_;
  std::string out_;
};

// Binary parameters for one statement.
class Params {
 public:
  void add(const std::string& bytes) {
    values_.push_back(bytes.data());
    lengths_.push_back(static_cast<int>(bytes.size()));
    formats_.push_back(1);
  }
  int size() const { return static_cast<int>(values_.size()); }
  const char* const* values() const { return values_.data(); }
  const int* lengths() const { return lengths_.data(); }
  const int* formats() const { return formats_.data(); }

 private:
  std::vector<const char*> values_;
  std::vector<int> lengths_;
  std::vector<int> formats_;
};

// ---- text helpers ----

// Whitespace runs (libpq's messages span lines, indented with tabs) become one space.
std::string one_line(std::string_view s) {
  std::string out;
  bool space = false;
  for (char c : s) {
    if (std::isspace(static_cast<unsigned char>(c))) {
      space = !out.empty();
      continue;
    }
    if (space) out += ' ';
    space = false;
    out += c;
  }
  return out;
}

bool contains(std::string_view hay, std::string_view needle) { return hay.find(needle) != std::string_view::npos; }

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Percent-decoding of a URI component; false when an escape is malformed.
bool percent_decode(std::string_view s, std::string& out) {
  out.clear();
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '%') {
      out += s[i];
      continue;
    }
    if (i + 2 >= s.size()) return false;
    int hi = hex_value(s[i + 1]), lo = hex_value(s[i + 2]);
    if (hi < 0 || lo < 0) return false;
    out += static_cast<char>(hi * 16 + lo);
    i += 2;
  }
  return true;
}

std::string percent_encode(std::string_view s) {
  static const char* kHex = "0123456789ABCDEF";
  std::string out;
  for (char c : s) {
    auto u = static_cast<unsigned char>(c);
    if (std::isalnum(u) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += c;
    } else {
      out += '%';
      out += kHex[u >> 4];
      out += kHex[u & 15];
    }
  }
  return out;
}

// A quoted SQL identifier: "name", with any " doubled.
std::string quote_ident(std::string_view name) {
  std::string out = "\"";
  for (char c : name) {
    if (c == '"') out += '"';
    out += c;
  }
  out += '"';
  return out;
}

// A quoted SQL string literal (standard_conforming_strings is on since 9.1).
std::string quote_literal(std::string_view s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') out += '\'';
    out += c;
  }
  out += '\'';
  return out;
}

// ---- the URL ----

// What open_postgres() makes of a URL.
struct Target {
  std::string url;          // as given (with the password): for url() and the scratch's URL
  std::string display;      // mask_url(url)
  std::string conninfo;     // the URI for libpq: the URL without schema=
  std::string schema;       // the schema's name (not quoted)
  std::vector<std::string> secrets;  // password texts to scrub from libpq's messages

  std::string q() const { return quote_ident(schema); }
  // The URL of the same database with another schema.
  std::string url_with_schema(std::string_view name) const {
    std::string base = url;
    // Rebuild the query without any schema= item, then add the new one.
    size_t qm = base.find('?');
    std::string query;
    if (qm != std::string::npos) {
      std::string_view rest = std::string_view(base).substr(qm + 1);
      while (!rest.empty()) {
        size_t amp = rest.find('&');
        std::string_view item = rest.substr(0, amp);
        if (!item.empty() && item.substr(0, item.find('=')) != "schema") {
          if (!query.empty()) query += '&';
          query += item;
        }
        rest = amp == std::string_view::npos ? std::string_view() : rest.substr(amp + 1);
      }
      base.resize(qm);
    }
    if (!query.empty()) query += '&';
    return base + "?" + query + "schema=" + percent_encode(name);
  }
};

[[noreturn]] void bad_url(const std::string& url, std::string_view why) {
  fail(Code::config, "invalid store URL '{}': {}", mask_url(url), why);
}

void scrub(std::string& msg, const std::vector<std::string>& secrets) {
  for (const std::string& s : secrets) {
    if (s.empty()) continue;
    for (size_t p = msg.find(s); p != std::string::npos; p = msg.find(s, p + 3)) msg.replace(p, s.size(), "***");
  }
}

Target parse_target(const std::string& url) {
  Target t;
  t.url = url;
  t.display = mask_url(url);
  size_t scheme = url.find("://");
  if (scheme == std::string::npos || (url.compare(0, scheme, "postgres") != 0 && url.compare(0, scheme, "postgresql") != 0))
    bad_url(url, "not a postgres:// or postgresql:// URL");

  // The password's texts, raw and decoded, wherever the URL carries one.
  size_t qm = url.find('?');
  std::string_view authority = std::string_view(url).substr(scheme + 3, (qm == std::string::npos ? url.size() : qm) - scheme - 3);
  authority = authority.substr(0, authority.find('/'));
  if (size_t at = authority.rfind('@'); at != std::string_view::npos) {
    std::string_view userinfo = authority.substr(0, at);
    if (size_t colon = userinfo.find(':'); colon != std::string_view::npos) {
      std::string_view pw = userinfo.substr(colon + 1);
      t.secrets.emplace_back(pw);
      std::string dec;
      if (percent_decode(pw, dec)) t.secrets.push_back(dec);
    }
  }

  // Remove schema= from the query; keep the rest for libpq.
  t.conninfo = url.substr(0, qm);
  bool have_schema = false;
  if (qm != std::string::npos) {
    std::string kept;
    std::string_view rest = std::string_view(url).substr(qm + 1);
    while (!rest.empty()) {
      size_t amp = rest.find('&');
      std::string_view item = rest.substr(0, amp);
      rest = amp == std::string_view::npos ? std::string_view() : rest.substr(amp + 1);
      if (item.empty()) continue;
      std::string_view key = item.substr(0, item.find('='));
      std::string_view value = key.size() < item.size() ? item.substr(key.size() + 1) : std::string_view();
      if (key == "password") {
        t.secrets.emplace_back(value);
        std::string dec;
        if (percent_decode(value, dec)) t.secrets.push_back(dec);
      }
      if (key != "schema") {
        if (!kept.empty()) kept += '&';
        kept += item;
        continue;
      }
      if (have_schema) bad_url(url, "parameter 'schema' given twice");
      have_schema = true;
      if (!percent_decode(value, t.schema)) bad_url(url, "malformed percent-escape in parameter 'schema'");
      if (t.schema.empty()) bad_url(url, "parameter 'schema' is empty");
    }
    if (!kept.empty()) t.conninfo += "?" + kept;
  }
  if (!have_schema) t.schema = kDefaultSchema;
  if (t.schema.size() > kMaxSchemaBytes)
    bad_url(url, fmt::format("schema name '{}' is longer than {} bytes", t.schema, kMaxSchemaBytes));
  if (t.schema.find('\0') != std::string::npos) bad_url(url, "schema name contains a NUL byte");

  // Let libpq judge the rest, and check what it only checks when connecting.
  char* err = nullptr;
  std::unique_ptr<PQconninfoOption, ConninfoFree> opts(PQconninfoParse(t.conninfo.c_str(), &err));
  if (!opts) {
    std::string why = err ? one_line(err) : "out of memory";
    if (err) PQfreemem(err);
    scrub(why, t.secrets);
    bad_url(url, why);
  }
  for (PQconninfoOption* o = opts.get(); o->keyword; ++o) {
    if (!o->val) continue;
    std::string_view key = o->keyword, val = o->val;
    if (key == "password" && !val.empty()) t.secrets.emplace_back(val);
    if (key == "port") {
      for (std::string_view rest = val; !rest.empty();) {
        size_t comma = rest.find(',');
        std::string_view port = rest.substr(0, comma);
        rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
        bool digits = !port.empty() && port.size() <= 5 &&
                      std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; });
        if (!port.empty() && (!digits || std::stoi(std::string(port)) > 65535 || std::stoi(std::string(port)) == 0))
          bad_url(url, fmt::format("invalid port '{}'", port));
      }
    }
    if (key == "connect_timeout" && !val.empty() &&
        !std::all_of(val.begin(), val.end(), [](char c) { return c >= '0' && c <= '9'; }))
      bad_url(url, fmt::format("invalid connect_timeout '{}'", val));
  }
  // Longest first, so that a password's decoded text never leaves a piece of the raw one.
  std::sort(t.secrets.begin(), t.secrets.end(), [](const std::string& a, const std::string& b) { return a.size() > b.size(); });
  return t;
}

// ---- the error codes of libpq's failures ----

// A failed connection: libpq has no SQLSTATE for it, so the message decides (the
// server's are in its lc_messages; anything not recognized counts as unreachable).
Code connect_code(PGconn* c, std::string_view msg) {
  if (c && PQconnectionNeedsPassword(c)) return Code::no_perm;
  if (contains(msg, "authentication failed") || contains(msg, "pg_hba.conf") || contains(msg, "no password supplied") ||
      contains(msg, "not permitted to log in") || contains(msg, "permission denied") ||
      (contains(msg, "role \"") && contains(msg, "does not exist")))
    return Code::no_perm;
  if (contains(msg, "database \"") && contains(msg, "does not exist")) return Code::config;
  if (contains(msg, "invalid connection option") || contains(msg, "invalid sslmode") || contains(msg, "invalid integer value"))
    return Code::config;
  return Code::unavailable;
}

// A failed statement, by SQLSTATE (Appendix A of the PostgreSQL manual).
Code sql_code(PGconn* c, const PGresult* r) {
  if (!r || PQstatus(c) == CONNECTION_BAD) return Code::unavailable;
  const char* state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
  if (!state) return Code::io;
  std::string_view s = state;
  auto cls = [&](std::string_view p) { return s.substr(0, 2) == p; };
  if (cls("08") || s == "57P01" || s == "57P02" || s == "57P03") return Code::unavailable;
  if (cls("28") || s == "42501") return Code::no_perm;
  if (cls("22") || cls("23")) return Code::data;
  if (cls("40") || s == "55P03" || s == "57014" || s == "53300") return Code::temp_fail;
  return Code::io;
}

// ---- the store ----

class PgStore final : public Store {
 public:
  explicit PgStore(Target t) : t_(std::move(t)) {
    connect();
    ensure_schema();
  }

  std::string url() const override { return t_.display; }

  ApplyStats apply(std::span<const Record> records, const Watermark* advance) override {
    check_idle("apply");
    if (records.empty() && !advance) return {};
    return retrying([&] { return apply_once(records, advance); });
  }

  std::optional<Watermark> watermark(std::string_view source) override {
    check_idle("watermark");
    return retrying([&]() -> std::optional<Watermark> {
      std::string src(source);
      Params p;
      p.add(src);
      Result r = run(Stmt::watermark_get, p, "reading the watermark");
      if (PQntuples(r.get()) == 0) return std::nullopt;
      return watermark_row(r.get(), 0);
    });
  }

  std::vector<Watermark> watermarks() override {
    check_idle("watermarks");
    return retrying([&] {
      Result r = run(Stmt::watermark_all, Params(), "reading the watermarks");
      std::vector<Watermark> out;
      for (int i = 0; i < PQntuples(r.get()); ++i) out.push_back(watermark_row(r.get(), i));
      return out;
    });
  }

  void set_watermark(const Watermark& w) override {
    check_idle("set_watermark");
    retrying([&] {
      write_watermark(w);
      return 0;
    });
  }

  void scan(const std::function<void(const Stored&)>& fn) override {
    check_idle("scan");
    std::string sql = fmt::format(
        "SELECT pcs_id, tenant_id, outcome, ts, region, params, payload, digest FROM {}.records ORDER BY pcs_id",
        t_.q());
    cursor(sql, "scanning the records", [&](const PGresult* r, int i) { fn(stored_row(r, i)); });
  }

  void scan_evidence(const std::function<void(const Evidence&)>& fn) override {
    check_idle("scan_evidence");
    std::string sql = fmt::format(
        "SELECT pcs_id, tenant_id, outcome, ts, region, params, payload, digest, detected_at FROM {}.evidence "
        "ORDER BY pcs_id, digest",
        t_.q());
    cursor(sql, "scanning the evidence", [&](const PGresult* r, int i) { fn(evidence_row(r, i)); });
  }

  std::vector<Evidence> evidence(std::span<const std::string> pcs_ids) override {
    check_idle("evidence");
    std::vector<std::string_view> ids = distinct_ids(pcs_ids);
    return retrying([&] {
      std::vector<Evidence> out;
      by_ids(Stmt::evidence_of, ids, "reading conflict evidence",
             [&](const PGresult* r, int i) { out.push_back(evidence_row(r, i)); });
      return out;
    });
  }

  std::vector<Stored> lookup(std::span<const std::string> pcs_ids) override {
    check_idle("lookup");
    std::vector<std::string_view> ids = distinct_ids(pcs_ids);
    return retrying([&] {
      std::vector<Stored> out;
      by_ids(Stmt::load, ids, "looking up records", [&](const PGresult* r, int i) { out.push_back(stored_row(r, i)); });
      // Stmt::load does not sort (apply() needs no order); the ids came sorted.
      std::sort(out.begin(), out.end(),
                [](const Stored& a, const Stored& b) { return a.record.pcs_id < b.record.pcs_id; });
      return out;
    });
  }

  uint64_t count() override {
    check_idle("count");
    return retrying([&] {
      Result r = run(Stmt::count, Params(), "counting the records");
      return static_cast<uint64_t>(int_col(r.get(), 0, 0, 8, "count"));
    });
  }

  void bulk_load(const std::function<bool(Stored&)>& next, const std::vector<Evidence>& evidence) override {
    check_idle("bulk_load");
    Txn tx(*this, "loading records");
    Result r = exec(fmt::format("SELECT EXISTS (SELECT 1 FROM {}.records)", t_.q()), "loading records");
    if (PQgetvalue(r.get(), 0, 0)[0] == 't')
      fail(Code::internal, "store '{}': bulk load into a store that is not empty", t_.display);
    // TRUNCATE (of the empty table) lets COPY write frozen rows: no hint-bit rewrite
    // or anti-wraparound vacuum of a million fresh rows later. The primary key is
    // built after the COPY (a sort is faster than a million index insertions).
    exec(fmt::format("TRUNCATE {0}.records; ALTER TABLE {0}.records DROP CONSTRAINT records_pkey; "
                     "SET LOCAL maintenance_work_mem = '256MB'",
                     t_.q()),
         "loading records");
    copy_records(next);
    exec(fmt::format("ALTER TABLE {}.records ADD CONSTRAINT records_pkey PRIMARY KEY (pcs_id)", t_.q()),
         "indexing the loaded records");
    write_evidence(evidence);
    tx.commit();
  }

  std::unique_ptr<Store> open_scratch() override {
    check_idle("open_scratch");
    std::string name = t_.schema + kRebuildSuffix;
    retrying([&] {
      exec(fmt::format("DROP SCHEMA IF EXISTS {} CASCADE", quote_ident(name)), "removing an old scratch schema");
      return 0;
    });
    Target s = t_;
    s.schema = name;
    s.url = t_.url_with_schema(name);
    s.display = mask_url(s.url);
    return std::make_unique<PgStore>(std::move(s));
  }

  void replace_with(std::unique_ptr<Store> scratch) override {
    check_idle("replace_with");
    auto* s = dynamic_cast<PgStore*>(scratch.get());
    if (!s || s->t_.conninfo != t_.conninfo || s->t_.schema != t_.schema + kRebuildSuffix)
      fail(Code::internal, "store '{}': replace_with needs its own scratch store", t_.display);
    std::string from = s->t_.q();
    scratch.reset();  // its connection holds no locks, but need not linger either
    // One transaction: readers block on the tables' locks until it commits, then
    // resolve the names again and find the new tables. The apply lock keeps an
    // applier from starting on the old tables in between.
    Txn tx(*this, "replacing the store");
    exec(fmt::format("DROP SCHEMA {0} CASCADE; ALTER SCHEMA {1} RENAME TO {0}", t_.q(), from),
         "replacing the store");
    tx.commit();
  }

 private:
  enum class Stmt {
    load,
    evidence_of,
    upsert,
    evidence,
    watermark_get,
    watermark_all,
    watermark_set,
    watermark_del,
    count,
    n
  };

  // A transaction that rolls back unless committed. BEGIN also takes the store's
  // advisory lock (held to the end of the transaction).
  class Txn {
   public:
    Txn(PgStore& s, std::string_view what) : s_(s), what_(what) {
      s_.exec(fmt::format("BEGIN; SELECT pg_advisory_xact_lock({})", s_.lock_key("apply")), what);
    }
    ~Txn() {
      if (open_) s_.rollback_quietly();
    }
    Txn(const Txn&) = delete;
    Txn& operator=(const Txn&) = delete;
    void commit() {
      open_ = false;
      s_.exec("COMMIT", what_);
    }

   private:
    PgStore& s_;
    std::string what_;
    bool open_ = true;
  };

  // ---- connection ----

  void connect() {
    const char* keys[] = {"connect_timeout", "fallback_application_name", "dbname", "client_encoding", nullptr};
    const char* vals[] = {kDefaultConnectTimeout, "flk", t_.conninfo.c_str(), "UTF8", nullptr};
    conn_.reset(PQconnectdbParams(keys, vals, 1));
    if (!conn_) fail(Code::internal, "store '{}': cannot connect: out of memory", t_.display);
    check_connected();
    PQsetNoticeProcessor(conn_.get(), [](void*, const char*) {}, nullptr);  // "already exists, skipping"
  }

  void check_connected() {
    if (PQstatus(conn_.get()) == CONNECTION_OK) return;
    std::string msg = one_line(PQerrorMessage(conn_.get()));
    Code code = connect_code(conn_.get(), msg);
    scrub(msg, t_.secrets);
    // libpq checks some options' values (sslmode, …) only when it connects.
    if (code == Code::config && !contains(msg, "does not exist")) bad_url(t_.url, msg);
    fail(code, "store '{}': cannot connect: {}", t_.display, msg);
  }

  // Runs one operation; when its very first statement fails because the connection
  // is gone (a server restart, an idle connection cut), reconnects and runs it again.
  // Nothing of the operation can have happened then.
  template <typename F>
  auto retrying(F&& f) -> decltype(f()) {
    uint64_t before = ok_;
    try {
      return f();
    } catch (const Error&) {
      if (ok_ != before || PQstatus(conn_.get()) != CONNECTION_BAD) throw;
    }
    PQreset(conn_.get());
    prepared_.clear();
    check_connected();
    return f();
  }

  void check_idle(std::string_view op) {
    if (in_scan_)
      fail(Code::internal, "store '{}': {} called from inside a scan of the same store", t_.display, op);
  }

  [[noreturn]] void fail_sql(const PGresult* r, std::string_view what) {
    std::string msg;
    const char* primary = r ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : nullptr;
    if (primary) {
      msg = primary;
      if (const char* detail = PQresultErrorField(r, PG_DIAG_MESSAGE_DETAIL)) msg += fmt::format(" ({})", detail);
    } else {
      msg = PQerrorMessage(conn_.get());
    }
    msg = one_line(msg);
    if (msg.empty()) msg = "unknown error";
    scrub(msg, t_.secrets);
    fail(sql_code(conn_.get(), r), "store '{}': {}: {}", t_.display, what, msg);
  }

  Result checked(PGresult* raw, std::string_view what) {
    Result r(raw);
    ExecStatusType st = r ? PQresultStatus(r.get()) : PGRES_FATAL_ERROR;
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) fail_sql(r.get(), what);
    ++ok_;
    return r;
  }

  // One or more statements in the simple protocol (text results).
  Result exec(const std::string& sql, std::string_view what) {
    return checked(PQexec(conn_.get(), sql.c_str()), what);
  }

  void rollback_quietly() {
    PGTransactionStatusType ts = PQtransactionStatus(conn_.get());
    if (ts == PQTRANS_INTRANS || ts == PQTRANS_INERROR) Result(PQexec(conn_.get(), "ROLLBACK"));
  }

  std::string lock_key(std::string_view kind) const {
    std::string key = fmt::format("flk:{}:{}", kind, t_.schema);
    return std::to_string(static_cast<int64_t>(hash::xxh3_64(key.data(), key.size())));
  }

  std::string sql_of(Stmt s) const {
    std::string q = t_.q();
    switch (s) {
      case Stmt::load:
        return fmt::format(
            "SELECT r.pcs_id, r.tenant_id, r.outcome, r.ts, r.region, r.params, r.payload, r.digest "
            "FROM unnest($1::text[]) AS k(id) JOIN {}.records AS r ON r.pcs_id = k.id",
            q);
      case Stmt::evidence_of:
        return fmt::format(
            "SELECT pcs_id, tenant_id, outcome, ts, region, params, payload, digest, detected_at FROM {}.evidence "
            "WHERE pcs_id = ANY($1::text[]) ORDER BY pcs_id, digest",
            q);
      case Stmt::upsert:
        return fmt::format(
            "INSERT INTO {}.records (pcs_id, tenant_id, outcome, ts, region, params, payload, digest) "
            "SELECT * FROM unnest($1::text[], $2::text[], $3::int2[], $4::int8[], $5::text[], $6::text[], "
            "$7::text[], $8::bytea[]) "
            "ON CONFLICT (pcs_id) DO UPDATE SET tenant_id = EXCLUDED.tenant_id, outcome = EXCLUDED.outcome, "
            "ts = EXCLUDED.ts, region = EXCLUDED.region, params = EXCLUDED.params, payload = EXCLUDED.payload, "
            "digest = EXCLUDED.digest",
            q);
      case Stmt::evidence:
        return fmt::format(
            "INSERT INTO {}.evidence (pcs_id, tenant_id, outcome, ts, region, params, payload, digest, detected_at) "
            "SELECT * FROM unnest($1::text[], $2::text[], $3::int2[], $4::int8[], $5::text[], $6::text[], "
            "$7::text[], $8::bytea[], $9::int8[]) "
            "ON CONFLICT DO NOTHING",
            q);
      case Stmt::watermark_get:
        return fmt::format("SELECT source, sequence, digest, updated FROM {}.watermarks WHERE source = $1::text", q);
      case Stmt::watermark_all:
        return fmt::format("SELECT source, sequence, digest, updated FROM {}.watermarks ORDER BY source", q);
      case Stmt::watermark_set:
        return fmt::format(
            "INSERT INTO {}.watermarks (source, sequence, digest, updated) VALUES ($1::text, $2::int8, $3::bytea, "
            "$4::int8) ON CONFLICT (source) DO UPDATE SET sequence = EXCLUDED.sequence, digest = EXCLUDED.digest, "
            "updated = EXCLUDED.updated",
            q);
      case Stmt::watermark_del:
        return fmt::format("DELETE FROM {}.watermarks WHERE source = $1::text", q);
      case Stmt::count:
        return fmt::format("SELECT count(*) FROM {}.records", q);
      case Stmt::n: break;
    }
    return {};
  }

  // Runs a statement with binary parameters and binary results: prepared on first use
  // on this connection, except the lookups by pcs_id (of winners, of evidence). Those
  // must always use the primary key: a generic plan, made while the table was small,
  // would keep scanning the whole table once it is big; an unnamed statement is
  // planned for each call with the table's current size.
  Result run(Stmt s, const Params& p, std::string_view what) {
    if (s == Stmt::load || s == Stmt::evidence_of)
      return checked(PQexecParams(conn_.get(), sql_of(s).c_str(), p.size(), nullptr, p.values(), p.lengths(),
                                  p.formats(), 1),
                     what);
    std::string name = fmt::format("flk_{}", static_cast<int>(s));
    if (!prepared_.count(s)) {
      checked(PQprepare(conn_.get(), name.c_str(), sql_of(s).c_str(), p.size(), nullptr), what);
      prepared_.insert(s);
    }
    return checked(PQexecPrepared(conn_.get(), name.c_str(), p.size(), p.values(), p.lengths(), p.formats(), 1), what);
  }

  // ---- schema ----

  // The schema_version stored, or nothing when the store has no meta table yet.
  std::optional<int> read_version() {
    std::string meta = t_.q() + ".meta";
    Result r = checked(PQexecParams(conn_.get(), "SELECT to_regclass($1::text) IS NOT NULL", 1, nullptr,
                                    std::array<const char*, 1>{meta.c_str()}.data(), nullptr, nullptr, 0),
                       "reading the schema version");
    if (PQgetvalue(r.get(), 0, 0)[0] != 't') return std::nullopt;
    r = exec(fmt::format("SELECT value FROM {}.meta WHERE key = 'schema_version'", t_.q()), "reading the schema version");
    if (PQntuples(r.get()) == 0) return std::nullopt;
    std::string v = PQgetvalue(r.get(), 0, 0);
    if (v.empty() || v.size() > 9 || !std::all_of(v.begin(), v.end(), [](char c) { return c >= '0' && c <= '9'; }))
      fail(Code::config, "store '{}': schema version '{}' is not a number", t_.display, v);
    return std::stoi(v);
  }

  void check_version(std::optional<int> v) {
    if (v && *v > kSchemaVersion)
      fail(Code::config, "store '{}': schema version {} is newer than this flk understands ({})",
           t_.display, *v, kSchemaVersion);
  }

  // Creates the schema and its tables, or migrates them to kSchemaVersion. Only the
  // version is read when it is current, so a role without CREATE may use the store.
  void ensure_schema() {
    std::optional<int> v = read_version();
    check_version(v);
    if (v == kSchemaVersion) return;
    std::string q = t_.q();
    exec(fmt::format("BEGIN; SELECT pg_advisory_xact_lock({})", lock_key("schema")), "creating the schema");
    try {
      v = read_version();  // another process may have been first
      check_version(v);
      if (!v) {
        exec(fmt::format(
                 "CREATE SCHEMA IF NOT EXISTS {0};"
                 "CREATE TABLE IF NOT EXISTS {0}.meta (key text COLLATE \"C\" PRIMARY KEY, value text NOT NULL);"
                 "CREATE TABLE IF NOT EXISTS {0}.records (pcs_id text COLLATE \"C\" NOT NULL, tenant_id text NOT NULL, "
                 "outcome smallint NOT NULL, ts bigint NOT NULL, region text NOT NULL, params text, payload text, "
                 "digest bytea NOT NULL, CONSTRAINT records_pkey PRIMARY KEY (pcs_id));"
                 "CREATE TABLE IF NOT EXISTS {0}.evidence (pcs_id text COLLATE \"C\" NOT NULL, digest bytea NOT NULL, "
                 "tenant_id text NOT NULL, outcome smallint NOT NULL, ts bigint NOT NULL, region text NOT NULL, "
                 "params text, payload text, detected_at bigint NOT NULL, "
                 "CONSTRAINT evidence_pkey PRIMARY KEY (pcs_id, digest));"
                 "CREATE TABLE IF NOT EXISTS {0}.watermarks (source text COLLATE \"C\" PRIMARY KEY, "
                 "sequence bigint NOT NULL, digest bytea NOT NULL, updated bigint NOT NULL);"
                 "INSERT INTO {0}.meta (key, value) VALUES ('schema_version', {1}) ON CONFLICT (key) DO NOTHING",
                 q, quote_literal(std::to_string(kSchemaVersion))),
             "creating the schema");
      }
      // Migrations from an older *v to kSchemaVersion go here (1 is the first version).
      exec("COMMIT", "creating the schema");
    } catch (...) {
      rollback_quietly();
      throw;
    }
  }

  // ---- rows ----

  std::string_view col(const PGresult* r, int row, int c) const {
    return {PQgetvalue(r, row, c), static_cast<size_t>(PQgetlength(r, row, c))};
  }

  int64_t int_col(const PGresult* r, int row, int c, size_t bytes, std::string_view name) const {
    std::string_view v = col(r, row, c);
    if (PQgetisnull(r, row, c) || v.size() != bytes)
      fail(Code::data, "store '{}': column '{}' is null or not a {}-byte integer", t_.display, name, bytes);
    uint64_t u = get_be(v.data(), bytes);
    if (bytes == 2) return static_cast<int16_t>(u);
    return static_cast<int64_t>(u);
  }

  hash::Digest digest_col(const PGresult* r, int row, int c, std::string_view id) const {
    std::string_view v = col(r, row, c);
    hash::Digest d{};
    if (v.size() != d.size()) fail(Code::data, "store '{}': '{}': digest is {} bytes, not 32", t_.display, id, v.size());
    std::memcpy(d.data(), v.data(), d.size());
    return d;
  }

  // Columns 0–7: pcs_id, tenant_id, outcome, ts, region, params, payload, digest.
  Stored stored_row(const PGresult* r, int i) const {
    Stored s;
    Record& rec = s.record;
    rec.pcs_id = col(r, i, 0);
    rec.tenant_id = col(r, i, 1);
    int64_t o = int_col(r, i, 2, 2, "outcome");
    if (o < 1 || o > 3) fail(Code::data, "store '{}': '{}': invalid outcome {}", t_.display, rec.pcs_id, o);
    rec.outcome = static_cast<Outcome>(o);
    rec.ts = int_col(r, i, 3, 8, "ts");
    rec.region = col(r, i, 4);
    if (!PQgetisnull(r, i, 5)) rec.params = std::string(col(r, i, 5));
    if (!PQgetisnull(r, i, 6)) rec.payload = std::string(col(r, i, 6));
    s.digest = digest_col(r, i, 7, rec.pcs_id);
    return s;
  }

  // Columns 0–8: those of stored_row(), then detected_at.
  Evidence evidence_row(const PGresult* r, int i) const {
    Stored s = stored_row(r, i);
    return Evidence{std::move(s.record), s.digest, int_col(r, i, 8, 8, "detected_at")};
  }

  Watermark watermark_row(const PGresult* r, int i) const {
    Watermark w;
    w.source = col(r, i, 0);
    int64_t seq = int_col(r, i, 1, 8, "sequence");
    if (seq < 0) fail(Code::data, "store '{}': watermark '{}': negative sequence {}", t_.display, w.source, seq);
    w.sequence = static_cast<uint64_t>(seq);
    w.digest = digest_col(r, i, 2, w.source);
    w.updated = int_col(r, i, 3, 8, "updated");
    return w;
  }

  // ---- writes ----

  ApplyStats apply_once(std::span<const Record> records, const Watermark* advance) {
    const std::string what = fmt::format("applying {} records", records.size());
    Txn tx(*this, what);
    std::unordered_map<std::string, Stored> current;
    std::vector<std::string> ids = distinct_ids(records);
    by_ids(Stmt::load, ids, what, [&](const PGresult* r, int i) {
      Stored s = stored_row(r, i);
      std::string id = s.record.pcs_id;
      current.emplace(std::move(id), std::move(s));
    });
    Plan planned = plan(records, current, timeutil::now());
    write_records(planned.upserts, what);
    write_evidence(planned.evidence);
    if (advance) write_watermark(*advance);
    tx.commit();
    return std::move(planned.stats);
  }

  // Runs a statement whose $1 is a text[] of pcs_ids for `ids`, kMaxRowsPerStatement
  // ids at a time, and hands each row of the results to `row` in order.
  template <typename Ids>
  void by_ids(Stmt s, const Ids& ids, std::string_view what, const std::function<void(const PGresult*, int)>& row) {
    for (size_t at = 0; at < ids.size(); at += kMaxRowsPerStatement) {
      ArrayParam a(kOidText);
      for (size_t i = at; i < std::min(ids.size(), at + kMaxRowsPerStatement); ++i) a.add(ids[i]);
      Params p;
      p.add(a.bytes());
      Result r = run(s, p, what);
      for (int i = 0; i < PQntuples(r.get()); ++i) row(r.get(), i);
    }
  }

  // Columns shared by records and evidence, appended to arrays 0–7.
  static void add_row(std::array<ArrayParam, 8>& a, const Record& r, const hash::Digest& d) {
    a[0].add(r.pcs_id);
    a[1].add(r.tenant_id);
    a[2].add_i16(static_cast<int16_t>(r.outcome));
    a[3].add_i64(r.ts);
    a[4].add(r.region);
    a[5].add_opt(r.params);
    a[6].add_opt(r.payload);
    a[7].add(d);
  }

  static std::array<ArrayParam, 8> row_arrays() {
    return {ArrayParam(kOidText), ArrayParam(kOidText), ArrayParam(kOidInt2), ArrayParam(kOidInt8),
            ArrayParam(kOidText), ArrayParam(kOidText), ArrayParam(kOidText), ArrayParam(kOidBytea)};
  }

  static size_t row_bytes(const Record& r) {
    return 96 + r.pcs_id.size() + r.tenant_id.size() + r.region.size() + (r.params ? r.params->size() : 0) +
           (r.payload ? r.payload->size() : 0);
  }

  void write_records(std::span<const Stored> rows, std::string_view what) {
    for (size_t at = 0; at < rows.size();) {
      auto a = row_arrays();
      size_t n = 0, bytes = 0;
      for (; at < rows.size() && n < kMaxRowsPerStatement && bytes < kMaxBytesPerStatement; ++at, ++n) {
        add_row(a, rows[at].record, rows[at].digest);
        bytes += row_bytes(rows[at].record);
      }
      Params p;
      for (ArrayParam& x : a) p.add(x.bytes());
      run(Stmt::upsert, p, what);
    }
  }

  void write_evidence(std::span<const Evidence> rows) {
    const std::string what = fmt::format("adding {} conflict evidence records", rows.size());
    for (size_t at = 0; at < rows.size();) {
      auto a = row_arrays();
      ArrayParam detected(kOidInt8);
      size_t n = 0, bytes = 0;
      for (; at < rows.size() && n < kMaxRowsPerStatement && bytes < kMaxBytesPerStatement; ++at, ++n) {
        add_row(a, rows[at].record, rows[at].digest);
        detected.add_i64(rows[at].detected_at);
        bytes += row_bytes(rows[at].record);
      }
      Params p;
      for (ArrayParam& x : a) p.add(x.bytes());
      p.add(detected.bytes());
      run(Stmt::evidence, p, what);
    }
  }

  void write_watermark(const Watermark& w) {
    const std::string what = fmt::format("setting the watermark of '{}'", w.source);
    if (w.sequence > static_cast<uint64_t>(INT64_MAX))
      fail(Code::data, "store '{}': {}: sequence {} is out of range", t_.display, what, w.sequence);
    std::string seq, updated;
    put_u64(seq, w.sequence);
    put_u64(updated, static_cast<uint64_t>(w.updated));
    std::string digest(reinterpret_cast<const char*>(w.digest.data()), w.digest.size());
    Params p;
    p.add(w.source);
    if (w.sequence == 0) {
      run(Stmt::watermark_del, p, what);
      return;
    }
    p.add(seq);
    p.add(digest);
    p.add(updated);
    run(Stmt::watermark_set, p, what);
  }

  // COPY … FROM STDIN in binary format: a header, then per row the field count and
  // each field as a 4-byte length (-1: NULL) and its bytes, then a -1 trailer.
  void copy_records(const std::function<bool(Stored&)>& next) {
    const std::string what = "loading records";
    std::string sql = fmt::format(
        "COPY {}.records (pcs_id, tenant_id, outcome, ts, region, params, payload, digest) "
        "FROM STDIN (FORMAT binary, FREEZE)",
        t_.q());
    Result start(PQexec(conn_.get(), sql.c_str()));
    if (!start || PQresultStatus(start.get()) != PGRES_COPY_IN) fail_sql(start.get(), what);
    bool copying = true;
    auto abort_copy = [&](const char* why) {
      if (!copying) return;
      copying = false;
      if (PQputCopyEnd(conn_.get(), why) == 1)
        while (Result(PQgetResult(conn_.get()))) {
        }
    };
    try {
      std::string buf("PGCOPY\n\377\r\n\0", 11);
      put_u32(buf, 0);  // flags
      put_u32(buf, 0);  // header extension length
      auto field = [&](std::string_view v) {
        put_u32(buf, static_cast<uint32_t>(v.size()));
        buf.append(v);
      };
      auto opt_field = [&](const std::optional<std::string>& v) {
        if (v) field(*v);
        else put_u32(buf, 0xffffffffu);
      };
      auto put = [&] {
        if (PQputCopyData(conn_.get(), buf.data(), static_cast<int>(buf.size())) != 1) {
          copying = false;
          fail_sql(nullptr, what);
        }
        buf.clear();
      };
      Stored s;
      std::string prev;
      bool first = true;
      while (next(s)) {
        const Record& rec = s.record;
        if (!first && !(prev < rec.pcs_id))
          fail(Code::internal, "store '{}': bulk load out of order at '{}'", t_.display, rec.pcs_id);
        first = false;
        prev = rec.pcs_id;
        put_u16(buf, 8);
        field(rec.pcs_id);
        field(rec.tenant_id);
        put_u32(buf, 2);
        put_u16(buf, static_cast<uint16_t>(rec.outcome));
        put_u32(buf, 8);
        put_u64(buf, static_cast<uint64_t>(rec.ts));
        field(rec.region);
        opt_field(rec.params);
        opt_field(rec.payload);
        field(std::string_view(reinterpret_cast<const char*>(s.digest.data()), s.digest.size()));
        if (buf.size() >= kCopyBufferBytes) put();
      }
      put_u16(buf, 0xffff);
      put();
    } catch (...) {
      abort_copy("flk: load aborted");
      throw;
    }
    copying = false;
    if (PQputCopyEnd(conn_.get(), nullptr) != 1) fail_sql(nullptr, what);
    Result last;
    while (Result res{PQgetResult(conn_.get())}) last = std::move(res);
    checked(last.release(), what);
  }

  // ---- scans ----

  // Streams a query's rows through a cursor, in batches of at most
  // kMaxRowsPerStatement rows and (about) kMaxBytesPerStatement bytes, inside a
  // read-only transaction (one snapshot for the whole scan).
  void cursor(const std::string& select, std::string_view what, const std::function<void(const PGresult*, int)>& row) {
    retrying([&] {
      exec("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY", what);
      return 0;
    });
    struct Guard {
      PgStore& s;
      ~Guard() {
        s.in_scan_ = false;
        s.rollback_quietly();
      }
    } guard{*this};
    exec("DECLARE flk_scan NO SCROLL CURSOR FOR " + select, what);
    in_scan_ = true;
    size_t batch = 1000;
    for (;;) {
      std::string fetch = fmt::format("FETCH FORWARD {} FROM flk_scan", batch);
      Result r = checked(PQexecParams(conn_.get(), fetch.c_str(), 0, nullptr, nullptr, nullptr, nullptr, 1), what);
      int n = PQntuples(r.get());
      if (n == 0) break;
      size_t bytes = 0;
      for (int i = 0; i < n; ++i) {
        for (int c = 0; c < PQnfields(r.get()); ++c) bytes += static_cast<size_t>(PQgetlength(r.get(), i, c));
        row(r.get(), i);
      }
      size_t per_row = bytes / static_cast<size_t>(n) + 64;
      batch = std::clamp<size_t>(kMaxBytesPerStatement / per_row, 100, kMaxRowsPerStatement);
    }
    in_scan_ = false;
    exec("COMMIT", what);
  }

  Target t_;
  Conn conn_;
  std::set<Stmt> prepared_;
  uint64_t ok_ = 0;  // statements that succeeded on this connection (see retrying())
  bool in_scan_ = false;
};

}  // namespace

std::unique_ptr<Store> open_postgres(const std::string& url) { return std::make_unique<PgStore>(parse_target(url)); }

}  // namespace flk::store
