// The Redis back end (hiredis): redis://[[user]:password@]host[:port][/db][?prefix=NAME]
//
// URL: port 6379, database 0 and prefix "flk" unless given. With a password the
// connection sends AUTH (AUTH user password with a user name, Redis ≥ 6 ACLs), then
// SELECT db. User and password may be percent-encoded (%40 for '@'); the prefix is
// 1–100 characters of [A-Za-z0-9_.:{}-]. Connect timeout 10 s, command timeout 60 s
// (one apply() of a large segment is one script call). A lost connection is reopened
// by the next call.
//
// Keys (every name starts with the prefix, so stores with different prefixes share a
// database without meeting):
//
//   {p}:meta           hash   schema_version  store::kSchemaVersion ("1")
//                             current         the generation readers and writers use
//                             next_gen        the last generation number handed out
//                             scratch         the generation of a rebuild in progress
//   {p}:g{G}:r         hash   pcs_id → V, the winner                   (records)
//   {p}:g{G}:ids       zset   pcs_id, all scores 0                      (record order)
//   {p}:g{G}:e         hash   pcs_id 0x00 digest[32] → be64 detected_at ‖ V  (evidence)
//   {p}:g{G}:eids      zset   the fields of :e, all scores 0            (evidence order)
//   {p}:g{G}:w         hash   source → "sequence digest-hex updated"    (watermarks)
//
//   V = u8 n ‖ K[n] ‖ u8 outcome ‖ the record's canonical encoding (encode_record)
//   K = be64(ts XOR 2^63) ‖ region ‖ 0x00 ‖ digest[32]
//
// K is the first-write-wins order key: (ts, region, digest) ascending is exactly K in
// bytewise order (the sign flip makes int64 order unsigned; a region never holds 0x00,
// so the terminator makes a shorter region sort first, as std::string does). Scripts
// compare K byte by byte and never as Lua numbers (doubles: 1795680000123456789 and
// …790 are the same double) nor with Lua's `<` on strings (strcoll, locale-dependent).
// The digest is K's last 32 bytes; scans check K against the decoded record.
// Sorted sets with equal scores order members bytewise (memcmp), as std::string does,
// so ZRANGEBYLEX pages through records in pcs_id order and evidence in
// (pcs_id, digest) order (a pcs_id is printable, so 0x00 ends it).
//
// Atomicity: apply() is ONE Lua script (kScript, op "apply"): it reads the stored
// winners of the batch, applies first write wins exactly as store::plan() does (same
// statistics, evidence of both sides of a conflict, first detection kept by HSETNX),
// and writes the winners, the evidence and the watermark. It returns the counts and
// the distinct pcs_ids of the conflicts (an empty array when there are none; the client
// sorts them, since Lua's string `<` is the locale's). Redis runs a script alone,
// and AOF/replicas receive its writes as one MULTI/EXEC, so no client and no restart
// sees half of it. A script that fails half-way keeps what it already wrote, so the
// script checks everything (schema, generation, key types) and computes every write
// before its first write; the remaining failure, the server refusing writes over
// maxmemory, comes at the first write, when nothing is written yet. We chose the script
// over WATCH + plan() + MULTI/EXEC because all records live in one hash: WATCH on it would
// abort a batch whenever any other writer touched any record, and concurrent readers
// (one flk-read per source) would retry each other into the ground; the script needs no
// retry and one round trip. The price: the rule exists twice (plan() and the script),
// which store_redis_test.cpp compares on random batches.
//
// evidence() and lookup() are one script call (ops "evidence", "get") per 10,000
// pcs_ids, the current generation resolved by the script like every op: per id a
// ZRANGEBYLEX of :eids over [id 0x00, id 0x01) then one HMGET of :e, or an HMGET of :r.
//
// Generations: a rebuild loads a new generation ({p}:g{G+1}:…, open_scratch()) and
// replace_with() points `current` at it and UNLINKs the old one in one script.
// Scripts resolve `current` themselves, so a writer never writes into a replaced
// generation. A scan pages through one generation; when it was replaced under it, the
// next page fails with temp_fail ("run again") rather than silently ending early. A
// scan is not a snapshot: records written during it may or may not be seen (each is
// seen whole). Batches applied to the live store while a rebuild loads go to the old
// generation and leave with it: replace_with() replaces the whole content, as in the
// other back ends. A scratch store destroyed without replace_with() (a failed rebuild)
// UNLINKs its generation; if even that fails, the next open_scratch() does.
//
// Durability is the server's: with appendonly yes and appendfsync always an applied
// batch survives a crash; with weaker settings the last batches may be lost, but never
// half of one, and replay is idempotent.
//
// Not supported: Redis Cluster (SELECT, and scripts that derive key names), TLS
// (rediss://), Unix sockets.
#include <fmt/format.h>
#include <hiredis/hiredis.h>
#include <sys/time.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <deque>
#include <tuple>

#include "flk/store/backends.hpp"
#include "flk/util/error.hpp"
#include "flk/util/time.hpp"

namespace flk::store {

namespace {

constexpr struct timeval kConnectTimeout { 10, 0 };
constexpr struct timeval kCommandTimeout { 60, 0 };
constexpr size_t kPage = 10000;      // records per page of a scan
constexpr size_t kLoadChunk = 1000;  // records per HSET/ZADD in bulk_load
constexpr size_t kLoadWindow = 8;    // commands bulk_load sends ahead of the replies it reads
constexpr size_t kMaxPrefix = 100;

// The server side of every operation. KEYS[1] = {p}:meta; ARGV: op, prefix, schema
// version, generation ('' = the current one), then the op's arguments.
// Error replies: FLKSCHEMA <version>, FLKGONE <why>, FLKCORRUPT <why>.
constexpr const char* kScript = R"lua(
local meta, op, prefix, schema, want = KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4]

local function keys_of(g)
  local b = prefix .. ':g' .. g .. ':'
  return {r = b .. 'r', ids = b .. 'ids', e = b .. 'e', eids = b .. 'eids', w = b .. 'w'}
end

local function drop(g)
  local k = keys_of(g)
  redis.call('UNLINK', k.r, k.ids, k.e, k.eids, k.w)
end

-- HMGET of names[from..to] (false for a missing field), 1000 fields per call.
local function hmget(h, names, from, to)
  local vals = {}
  for j = from, to, 1000 do
    local part = redis.call('HMGET', h, unpack(names, j, math.min(j + 999, to)))
    for x = 1, #part do vals[#vals + 1] = part[x] end
  end
  return vals
end

if op == 'init' then
  local m = redis.call('HMGET', meta, 'schema_version', 'current')
  if m[1] then return {m[1], m[2] or ''} end
  redis.call('HSET', meta, 'schema_version', schema, 'current', '1', 'next_gen', '1')
  return {schema, '1'}
end

local m = redis.call('HMGET', meta, 'schema_version', 'current', 'scratch')
if not m[1] or not m[2] then return redis.error_reply('FLKGONE the store is gone (its meta key was deleted)') end
if m[1] ~= schema then return redis.error_reply('FLKSCHEMA ' .. m[1]) end
local gen = want
if gen == '' then
  gen = m[2]
elseif gen ~= m[2] and gen ~= m[3] then
  return redis.error_reply('FLKGONE generation ' .. gen .. ' was replaced (the store was rebuilt meanwhile)')
end
local k = keys_of(gen)

if op == 'count' then
  return {gen, redis.call('HLEN', k.r), redis.call('HLEN', k.e)}
elseif op == 'watermark' then
  return redis.call('HGET', k.w, ARGV[5])
elseif op == 'watermarks' then
  return redis.call('HGETALL', k.w)
elseif op == 'page' then
  -- ARGV[5]: 'r' or 'e'; ARGV[6]: ZRANGEBYLEX start; ARGV[7]: page size.
  local z, h = k.ids, k.r
  if ARGV[5] == 'e' then z, h = k.eids, k.e end
  local ids = redis.call('ZRANGEBYLEX', z, ARGV[6], '+', 'LIMIT', 0, tonumber(ARGV[7]))
  return {gen, ids, hmget(h, ids, 1, #ids)}
elseif op == 'get' then
  -- ARGV[5..]: pcs_ids. Their winners (nil: not stored), in the same order.
  return hmget(k.r, ARGV, 5, #ARGV)
elseif op == 'evidence' then
  -- ARGV[5..]: pcs_ids. The evidence fields of each (id 0x00 digest: the range
  -- [id 0x00, id 0x01) holds no other pcs_id's, as ids are printable) and their values.
  local fields = {}
  for i = 5, #ARGV do
    local id = ARGV[i]
    local part = redis.call('ZRANGEBYLEX', k.eids, '[' .. id .. '\0', '(' .. id .. '\1')
    for x = 1, #part do fields[#fields + 1] = part[x] end
  end
  return {fields, hmget(k.e, fields, 1, #fields)}
elseif op == 'scratch' then
  if m[3] and m[3] ~= m[2] then drop(m[3]) end
  local g = tostring(redis.call('HINCRBY', meta, 'next_gen', 1))
  drop(g)
  redis.call('HSET', meta, 'scratch', g)
  return g
elseif op == 'swap' then
  if want ~= m[3] then
    return redis.error_reply('FLKGONE generation ' .. want .. ' is no longer the scratch store (another rebuild began)')
  end
  redis.call('HSET', meta, 'current', want)
  redis.call('HDEL', meta, 'scratch')
  drop(m[2])
  return m[2]
elseif op == 'discard' then
  if want == m[3] then
    drop(want)
    redis.call('HDEL', meta, 'scratch')
  end
  return 0
elseif op ~= 'apply' then
  return redis.error_reply('ERR unknown op ' .. op)
end

-- apply: ARGV[5] be64 now; ARGV[6], ARGV[7] watermark source and value ('' source:
-- none; '' value: remove); then pcs_id, V pairs. Checks and computes everything
-- first, writes last (a script's writes are not undone when it fails).
local kinds = {r = 'hash', ids = 'zset', e = 'hash', eids = 'zset', w = 'hash'}
for name, kind in pairs(kinds) do
  local t = redis.call('TYPE', k[name]).ok
  if t ~= 'none' and t ~= kind then
    return redis.error_reply('FLKCORRUPT key ' .. k[name] .. ' is a ' .. t .. ', not a ' .. kind)
  end
end
local argv, byte, sub = ARGV, string.byte, string.sub
local now, wsrc, wval, first, nargs = argv[5], argv[6], argv[7], 8, #ARGV

local function key(v) return sub(v, 2, 1 + byte(v, 1)) end
local function outcome(v) return byte(v, 2 + byte(v, 1)) end
-- Bytewise a < b.
local function before(a, b)
  local n = math.min(#a, #b)
  for i = 1, n do
    local x, y = byte(a, i), byte(b, i)
    if x ~= y then return x < y end
  end
  return #a < #b
end

-- The stored winners of the batch's pcs_ids (false: none).
local cur, fresh, ids = {}, {}, {}
for i = first, nargs, 2 do
  local id = argv[i]
  if cur[id] == nil then
    cur[id] = false
    ids[#ids + 1] = id
  end
end
local stored = hmget(k.r, ids, 1, #ids)
for x = 1, #ids do
  local v = stored[x]
  cur[ids[x]] = v
  if not v then fresh[ids[x]] = true end
end

-- store::plan(), record by record. conf_ids: the distinct pcs_ids of the conflicts
-- (unsorted: Lua's string `<` is strcoll; the client sorts them).
local ins, dup, rep, later, conf = 0, 0, 0, 0, 0
local conf_ids, is_conf = {}, {}
local changed, is_changed, ev, ev_val = {}, {}, {}, {}
local function evidence(id, v)
  local f = id .. '\0' .. sub(key(v), -32)
  if not ev_val[f] then
    ev[#ev + 1] = f
    ev_val[f] = now .. v
  end
end
for i = first, nargs, 2 do
  local id, v = argv[i], argv[i + 1]
  local c = cur[id]
  local won = false
  if not c then
    cur[id] = v
    ins = ins + 1
    won = true
  elseif c == v then
    -- The same digest is the same encoding, so the same V (Lua compares interned
    -- strings in constant time).
    dup = dup + 1
  else
    local kc, kv = key(c), key(v)
    if kc == kv then
      dup = dup + 1
    else
      if outcome(c) ~= outcome(v) then
        conf = conf + 1
        if not is_conf[id] then
          is_conf[id] = true
          conf_ids[#conf_ids + 1] = id
        end
        evidence(id, c)
        evidence(id, v)
      end
      if before(kv, kc) then
        cur[id] = v
        rep = rep + 1
        won = true
      else
        later = later + 1
      end
    end
  end
  if won and not is_changed[id] then
    is_changed[id] = true
    changed[#changed + 1] = id
  end
end

-- The writes.
local hs, zs = {}, {}
local function flush(force)
  if #hs >= 1000 or (force and #hs > 0) then redis.call('HSET', k.r, unpack(hs)); hs = {} end
  if #zs >= 1000 or (force and #zs > 0) then redis.call('ZADD', k.ids, unpack(zs)); zs = {} end
end
for x = 1, #changed do
  local id = changed[x]
  hs[#hs + 1] = id
  hs[#hs + 1] = cur[id]
  if fresh[id] then
    zs[#zs + 1] = 0
    zs[#zs + 1] = id
  end
  flush(false)
end
flush(true)
for x = 1, #ev do
  local f = ev[x]
  if redis.call('HSETNX', k.e, f, ev_val[f]) == 1 then redis.call('ZADD', k.eids, 0, f) end
end
if wsrc ~= '' then
  if wval == '' then redis.call('HDEL', k.w, wsrc) else redis.call('HSET', k.w, wsrc, wval) end
end
return {ins, dup, rep, later, conf, conf_ids}
)lua";

// ---------------------------------------------------------------------------------
// URL

struct Target {
  std::string masked;  // the URL for messages: never holds the password
  std::string user, password, host;
  bool auth = false;
  int port = 6379;
  int db = 0;
  std::string prefix = "flk";
};

// The URL with everything between the first ':' of the user information and the last
// '@' replaced by "***" (all of it when it has no ':'). The last '@' of the whole URL,
// so that no part of a password holding '@' or '/' shows, even in a malformed URL.
std::string redact(std::string_view url) {
  size_t start = url.find("://");
  if (start == std::string_view::npos) return std::string(url);
  start += 3;
  size_t at = url.rfind('@');
  if (at == std::string_view::npos || at < start) return std::string(url);
  size_t colon = url.substr(start, at - start).find(':');
  size_t from = colon == std::string_view::npos ? start : start + colon + 1;
  return fmt::format("{}***{}", url.substr(0, from), url.substr(at));
}

bool pct_decode(std::string_view in, std::string& out) {
  out.clear();
  for (size_t i = 0; i < in.size(); ++i) {
    if (in[i] != '%') {
      out += in[i];
      continue;
    }
    unsigned v = 0;
    if (i + 2 >= in.size()) return false;
    auto r = std::from_chars(in.data() + i + 1, in.data() + i + 3, v, 16);
    if (r.ec != std::errc() || r.ptr != in.data() + i + 3) return false;
    out += static_cast<char>(v);
    i += 2;
  }
  return true;
}

template <typename T>
bool parse_int(std::string_view s, T& out) {
  if (s.empty()) return false;
  auto r = std::from_chars(s.data(), s.data() + s.size(), out);
  return r.ec == std::errc() && r.ptr == s.data() + s.size();
}

bool valid_prefix(std::string_view p) {
  if (p.empty() || p.size() > kMaxPrefix) return false;
  return std::all_of(p.begin(), p.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           std::strchr("_.:{}-", c) != nullptr;
  });
}

Target parse_url(const std::string& url) {
  Target t;
  t.masked = redact(url);
  auto bad = [&](std::string_view why) { fail(Code::config, "invalid store URL '{}': {}", t.masked, why); };
  constexpr std::string_view kScheme = "redis://";
  if (url.rfind(kScheme, 0) != 0) bad("not a redis:// URL");
  std::string_view rest = std::string_view(url).substr(kScheme.size());
  size_t end = rest.find_first_of("/?#");
  std::string_view authority = rest.substr(0, end);
  std::string_view tail = end == std::string_view::npos ? std::string_view() : rest.substr(end);

  if (size_t at = authority.rfind('@'); at != std::string_view::npos) {
    std::string_view info = authority.substr(0, at);
    authority = authority.substr(at + 1);
    size_t colon = info.find(':');
    if (colon == std::string_view::npos)
      bad("user information without ':' (redis://:password@host or redis://user:password@host)");
    if (!pct_decode(info.substr(0, colon), t.user) || !pct_decode(info.substr(colon + 1), t.password))
      bad("bad percent-encoding in the user information");
    t.auth = !t.password.empty();
    if (!t.auth && !t.user.empty()) bad("a user name without a password");
  }

  std::string_view port;
  if (!authority.empty() && authority.front() == '[') {
    size_t close = authority.find(']');
    if (close == std::string_view::npos) bad("unterminated '[' in the host");
    t.host = authority.substr(1, close - 1);
    std::string_view after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') bad("junk after the host");
      port = after.substr(1);
      if (port.empty()) bad("empty port");
    }
  } else {
    size_t colon = authority.rfind(':');
    t.host = authority.substr(0, colon);
    if (colon != std::string_view::npos) {
      port = authority.substr(colon + 1);
      if (port.empty()) bad("empty port");
    }
    if (!std::all_of(t.host.begin(), t.host.end(), [](char c) {
          return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == '_';
        }))
      bad(fmt::format("invalid host '{}'", t.host));
  }
  if (t.host.empty()) bad("no host (redis://host:port/db)");
  if (!port.empty() && (!parse_int(port, t.port) || t.port < 1 || t.port > 65535))
    bad(fmt::format("invalid port '{}'", port));

  std::string_view path = tail.substr(0, tail.find_first_of("?#"));
  std::string_view query = tail.substr(path.size());
  if (!query.empty() && query.front() == '#') bad("a fragment ('#') is not allowed");
  if (!path.empty()) {
    std::string_view db = path.substr(1);
    if (!db.empty() && (!parse_int(db, t.db) || t.db < 0))
      bad(fmt::format("invalid database '{}' (a number, as in redis://host:6379/0)", db));
  }
  if (!query.empty()) {
    query.remove_prefix(1);
    if (query.find('#') != std::string_view::npos) bad("a fragment ('#') is not allowed");
    bool seen_prefix = false;
    while (!query.empty()) {
      size_t amp = query.find('&');
      std::string_view param = query.substr(0, amp);
      query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
      size_t eq = param.find('=');
      std::string_view name = param.substr(0, eq);
      std::string_view value = eq == std::string_view::npos ? std::string_view() : param.substr(eq + 1);
      if (name != "prefix") bad(fmt::format("unknown parameter '{}' (known: prefix)", name));
      if (seen_prefix) bad("repeated parameter 'prefix'");
      seen_prefix = true;
      if (!pct_decode(value, t.prefix) || !valid_prefix(t.prefix))
        bad(fmt::format("invalid prefix '{}': 1-{} characters of A-Z a-z 0-9 _ . : {{ }} -", value, kMaxPrefix));
    }
  }
  return t;
}

// ---------------------------------------------------------------------------------
// Connection

struct ReplyFree {
  void operator()(redisReply* r) const { freeReplyObject(r); }
};
using Reply = std::unique_ptr<redisReply, ReplyFree>;

// A command's arguments (binary-safe views; `own` keeps strings alive for them).
class Args {
 public:
  Args& add(std::string_view s) {
    argv_.push_back(s.data());
    len_.push_back(s.size());
    return *this;
  }
  Args& own(std::string s) { return add(owned_.emplace_back(std::move(s))); }
  void set(size_t i, std::string_view s) {
    argv_[i] = s.data();
    len_[i] = s.size();
  }
  void reserve(size_t n) {
    argv_.reserve(n);
    len_.reserve(n);
  }
  void clear() {
    argv_.clear();
    len_.clear();
    owned_.clear();
  }
  int argc() const { return static_cast<int>(argv_.size()); }
  const char** argv() { return argv_.data(); }
  const size_t* argvlen() const { return len_.data(); }

 private:
  std::vector<const char*> argv_;
  std::vector<size_t> len_;
  std::deque<std::string> owned_;
};

std::string_view str(const redisReply* r) { return std::string_view(r->str, r->len); }

// Server error replies → exit codes.
Code reply_code(std::string_view msg) {
  auto starts = [&](std::string_view p) { return msg.rfind(p, 0) == 0; };
  if (starts("NOAUTH") || starts("WRONGPASS") || starts("NOPERM")) return Code::no_perm;
  if (starts("LOADING") || starts("BUSY ") || starts("MASTERDOWN") || starts("TRYAGAIN") || starts("FLKGONE") ||
      starts("ERR max number of clients"))
    return Code::temp_fail;
  if (starts("FLKSCHEMA")) return Code::config;
  if (starts("FLKCORRUPT")) return Code::data;
  return Code::io;
}

// A server message for ours: no trailing full stop, no "FLK…" code word.
std::string tidy(std::string_view msg) {
  if (msg.rfind("FLK", 0) == 0) {
    size_t sp = msg.find(' ');
    msg = sp == std::string_view::npos ? std::string_view() : msg.substr(sp + 1);
  }
  while (!msg.empty() && (msg.back() == '.' || msg.back() == '\n' || msg.back() == '\r')) msg.remove_suffix(1);
  return std::string(msg);
}

class Conn {
 public:
  explicit Conn(Target t) : t_(std::move(t)) {}
  ~Conn() { close(); }
  Conn(const Conn&) = delete;
  Conn& operator=(const Conn&) = delete;

  const Target& target() const { return t_; }

  void close() {
    if (c_) redisFree(c_);
    c_ = nullptr;
  }

  void connect() {
    close();
    c_ = redisConnectWithTimeout(t_.host.c_str(), t_.port, kConnectTimeout);
    if (!c_) fail(Code::io, "store '{}': cannot connect: out of memory", t_.masked);
    if (c_->err) {
      std::string why = c_->errstr;
      close();
      fail(Code::unavailable, "store '{}': cannot connect: {}", t_.masked, why);
    }
    redisSetTimeout(c_, kCommandTimeout);
    redisEnableKeepAlive(c_);
    if (t_.auth) {
      Args a;
      a.add("AUTH");
      if (!t_.user.empty()) a.add(t_.user);
      a.add(t_.password);
      Reply r = raw(a, "authenticating");
      // A server without a password answers AUTH with an error; it needs none, so go on.
      std::string_view msg = r->type == REDIS_REPLY_ERROR ? str(r.get()) : std::string_view();
      if (!msg.empty() && msg.find("without any password configured") == std::string_view::npos) {
        // Redis ≥ 6 says WRONGPASS, older ones "ERR invalid password".
        bool refused = reply_code(msg) == Code::no_perm || msg.rfind("ERR invalid password", 0) == 0 ||
                       msg.rfind("ERR invalid username", 0) == 0;
        std::string why = tidy(msg);
        close();
        if (refused) fail(Code::no_perm, "store '{}': authentication refused: {}", t_.masked, why);
        fail(reply_code(msg), "store '{}': authenticating: {}", t_.masked, why);
      }
    }
    if (t_.db != 0) {
      Args a;
      a.add("SELECT").own(std::to_string(t_.db));
      Reply r = raw(a, "selecting the database");
      if (r->type == REDIS_REPLY_ERROR) {
        std::string why = tidy(str(r.get()));
        Code code = reply_code(str(r.get()));
        close();
        fail(code == Code::io ? Code::config : code, "store '{}': cannot select database {}: {}", t_.masked, t_.db,
             why);
      }
    }
  }

  // One command; an error reply is thrown.
  Reply run(Args& a, std::string_view what) { return check(raw(a, what), what); }

  // Runs kScript (EVALSHA; EVAL when the server has forgotten it). `a` starts with
  // two slots for EVALSHA and the digest.
  Reply script(Args& a, std::string_view what) {
    if (!c_) connect();
    if (sha_.empty()) {
      Args load;
      load.add("SCRIPT").add("LOAD").add(kScript);
      Reply r = run(load, "loading the script");
      if (r->type != REDIS_REPLY_STRING) unexpected(what);
      sha_ = str(r.get());
    }
    a.set(0, "EVALSHA");
    a.set(1, sha_);
    Reply r = raw(a, what);
    if (r->type == REDIS_REPLY_ERROR && str(r.get()).rfind("NOSCRIPT", 0) == 0) {
      a.set(0, "EVAL");
      a.set(1, kScript);
      r = raw(a, what);
    }
    return check(std::move(r), what);
  }

  // Pipelining: append_formatted() buffers bytes already in RESP (a command or part of
  // one), read() returns the next reply (sending whatever is buffered first). An error
  // drops the connection (its replies are then out of step).
  void append_formatted(std::string_view resp) {
    if (!c_) connect();
    if (redisAppendFormattedCommand(c_, resp.data(), resp.size()) != REDIS_OK) lost("sending");
  }
  Reply read(std::string_view what) {
    void* p = nullptr;
    if (redisGetReply(c_, &p) != REDIS_OK || !p) lost(what);
    Reply r(static_cast<redisReply*>(p));
    if (r->type == REDIS_REPLY_ERROR) {
      close();
      check(std::move(r), what);
    }
    return r;
  }

  [[noreturn]] void unexpected(std::string_view what) {
    close();
    fail(Code::io, "store '{}': {}: unexpected reply from the server", t_.masked, what);
  }

 private:
  Reply raw(Args& a, std::string_view what) {
    if (!c_) connect();
    void* p = redisCommandArgv(c_, a.argc(), a.argv(), a.argvlen());
    if (!p) lost(what);
    return Reply(static_cast<redisReply*>(p));
  }

  Reply check(Reply r, std::string_view what) {
    if (r->type != REDIS_REPLY_ERROR) return r;
    std::string_view msg = str(r.get());
    Code code = reply_code(msg);
    if (msg.rfind("FLKSCHEMA ", 0) == 0) {
      int v = 0;
      std::string_view version = msg.substr(10);
      if (parse_int(version, v) && v > kSchemaVersion)
        fail(Code::config, "store '{}': schema version {} is newer than this flk understands ({})", t_.masked, v,
             kSchemaVersion);
      fail(Code::config, "store '{}': {}: unknown schema version '{}'", t_.masked, what, version);
    }
    fail(code, "store '{}': {}: {}", t_.masked, what, tidy(msg));
  }

  // The connection failed (refused, reset, timed out): drop it; the next call
  // reconnects.
  [[noreturn]] void lost(std::string_view what) {
    std::string why = c_ ? c_->errstr : "not connected";
    if (c_ && c_->err == REDIS_ERR_IO && (why == std::strerror(EAGAIN) || why == std::strerror(EWOULDBLOCK)))
      why = fmt::format("no answer within {} s", kCommandTimeout.tv_sec);
    close();
    fail(Code::unavailable, "store '{}': {}: {}", t_.masked, what, why);
  }

  Target t_;
  redisContext* c_ = nullptr;
  std::string sha_;
};

// ---------------------------------------------------------------------------------
// Values

void put_be64(std::string& out, uint64_t v) {
  for (int i = 7; i >= 0; --i) out += static_cast<char>(v >> (8 * i));
}

uint64_t get_be64(std::string_view in) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | static_cast<uint8_t>(in[i]);
  return v;
}

void append_key(std::string& out, const Record& r, const hash::Digest& d) {
  put_be64(out, static_cast<uint64_t>(r.ts) ^ (uint64_t{1} << 63));
  out += r.region;
  out += '\0';
  out.append(reinterpret_cast<const char*>(d.data()), d.size());
}

size_t value_size(const Record& r) { return 1 + 8 + r.region.size() + 1 + 32 + 1 + encoded_size(r); }

// V (see the top of the file).
void append_value(std::string& out, const Record& r, const hash::Digest& d) {
  out += static_cast<char>(8 + r.region.size() + 1 + d.size());
  append_key(out, r, d);
  out += static_cast<char>(r.outcome);
  encode_record(out, r);
}

// RESP by hand, for bulk_load: "*3\r\n" (an array of 3), "$5\r\nhello\r\n".
void resp_count(std::string& out, char kind, size_t n) {
  char buf[24];
  buf[0] = kind;
  char* end = std::to_chars(buf + 1, buf + sizeof buf, n).ptr;
  out.append(buf, static_cast<size_t>(end - buf));
  out += "\r\n";
}

void resp_arg(std::string& out, std::string_view s) {
  resp_count(out, '$', s.size());
  out += s;
  out += "\r\n";
}

void format_watermark(std::string& out, const Watermark& w) {
  out = fmt::format("{} {} {}", w.sequence, hash::to_hex(w.digest), w.updated);
}

class RedisStore final : public Store {
 public:
  // gen: "" for the live store (whatever generation is current), else a scratch one.
  RedisStore(Target t, std::string gen) : conn_(std::move(t)), gen_(std::move(gen)) {
    const Target& tg = conn_.target();
    meta_ = tg.prefix + ":meta";
    conn_.connect();
    if (!gen_.empty()) return;
    Args a = op("init");
    Reply r = conn_.script(a, "opening");
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 || r->element[0]->type != REDIS_REPLY_STRING)
      conn_.unexpected("opening");
    std::string_view v = str(r->element[0]);
    int version = 0;
    if (!parse_int(v, version) || version < 1)
      fail(Code::config, "store '{}': unknown schema version '{}'", tg.masked, v);
    if (version > kSchemaVersion)
      fail(Code::config, "store '{}': schema version {} is newer than this flk understands ({})", tg.masked, version,
           kSchemaVersion);
    // Versions before kSchemaVersion would be migrated here; there are none yet.
  }

  // A scratch store that was not swapped in (a failed rebuild) frees its keys at once
  // rather than at the next open_scratch(); best effort.
  ~RedisStore() override {
    if (gen_.empty() || swapped_) return;
    try {
      Args a = op("discard");
      conn_.script(a, "discarding a scratch store");
    } catch (const Error&) {
      // Left for the next open_scratch().
    }
  }

  std::string url() const override { return name(); }

  ApplyStats apply(std::span<const Record> records, const Watermark* advance) override {
    return apply(records, advance, fmt::format("applying {} records", records.size()));
  }

  std::optional<Watermark> watermark(std::string_view source) override {
    Args a = op("watermark");
    a.add(source);
    Reply r = conn_.script(a, "reading a watermark");
    if (r->type == REDIS_REPLY_NIL) return std::nullopt;
    if (r->type != REDIS_REPLY_STRING) conn_.unexpected("reading a watermark");
    return parse_watermark(source, str(r.get()));
  }

  std::vector<Watermark> watermarks() override {
    Args a = op("watermarks");
    Reply r = conn_.script(a, "reading the watermarks");
    if (r->type != REDIS_REPLY_ARRAY || r->elements % 2) conn_.unexpected("reading the watermarks");
    std::vector<Watermark> out;
    for (size_t i = 0; i < r->elements; i += 2) {
      if (r->element[i]->type != REDIS_REPLY_STRING || r->element[i + 1]->type != REDIS_REPLY_STRING)
        conn_.unexpected("reading the watermarks");
      out.push_back(parse_watermark(str(r->element[i]), str(r->element[i + 1])));
    }
    std::sort(out.begin(), out.end(), [](const Watermark& x, const Watermark& y) { return x.source < y.source; });
    return out;
  }

  void set_watermark(const Watermark& w) override {
    apply({}, &w, fmt::format("setting the watermark of '{}'", w.source));
  }

  void scan(const std::function<void(const Stored&)>& fn) override {
    Stored st;
    pages("r", "scanning", [&](std::string_view id, std::string_view v) {
      decode_value(id, v, st);
      fn(st);
    });
  }

  void scan_evidence(const std::function<void(const Evidence&)>& fn) override {
    Evidence ev;
    pages("e", "scanning the evidence", [&](std::string_view field, std::string_view v) {
      decode_evidence(field, v, ev);
      fn(ev);
    });
  }

  // One "evidence" script call per kPage ids: ZRANGEBYLEX of each id's fields, HMGET.
  std::vector<Evidence> evidence(std::span<const std::string> pcs_ids) override {
    const std::string_view what = "reading conflict evidence";
    std::vector<Evidence> out;
    by_ids("evidence", pcs_ids, what, [&](const redisReply* r, std::span<const std::string_view>) {
      if (r->type != REDIS_REPLY_ARRAY || r->elements != 2) conn_.unexpected(what);
      pairs(r->element[0], r->element[1], "evidence", what, [&](std::string_view field, std::string_view v) {
        decode_evidence(field, v, out.emplace_back());
      });
    });
    return out;
  }

  // One "get" script call per kPage ids: HMGET of the records.
  std::vector<Stored> lookup(std::span<const std::string> pcs_ids) override {
    const std::string_view what = "looking up records";
    std::vector<Stored> out;
    by_ids("get", pcs_ids, what, [&](const redisReply* r, std::span<const std::string_view> ids) {
      if (r->type != REDIS_REPLY_ARRAY || r->elements != ids.size()) conn_.unexpected(what);
      for (size_t i = 0; i < ids.size(); ++i) {
        const redisReply* v = r->element[i];
        if (v->type == REDIS_REPLY_NIL) continue;
        if (v->type != REDIS_REPLY_STRING) conn_.unexpected(what);
        decode_value(ids[i], str(v), out.emplace_back());
      }
    });
    return out;
  }

  uint64_t count() override { return sizes().records; }

  void bulk_load(const std::function<bool(Stored&)>& next, const std::vector<Evidence>& evidence) override {
    Sizes s = sizes();
    if (s.records || s.evidence) fail(Code::internal, "store '{}': bulk load into a store that is not empty", name());
    // Whatever fails half-way leaves replies unread: drop the connection then.
    try {
      load(next, evidence, s.gen);
    } catch (...) {
      conn_.close();
      throw;
    }
  }

  std::unique_ptr<Store> open_scratch() override {
    Args a = op("scratch");
    Reply r = conn_.script(a, "opening a scratch store");
    if (r->type != REDIS_REPLY_STRING) conn_.unexpected("opening a scratch store");
    return std::make_unique<RedisStore>(conn_.target(), std::string(str(r.get())));
  }

  void replace_with(std::unique_ptr<Store> scratch_store) override {
    auto* scratch = dynamic_cast<RedisStore*>(scratch_store.get());
    const Target& t = conn_.target();
    if (!scratch || scratch->gen_.empty() || scratch->conn_.target().masked != t.masked || !gen_.empty())
      fail(Code::internal, "store '{}': replace_with needs its own scratch store", name());
    Args a = op("swap", scratch->gen_);
    conn_.script(a, "replacing the store");
    scratch->swapped_ = true;
  }

 private:
  struct Sizes {
    std::string gen;
    uint64_t records = 0, evidence = 0;
  };

  // apply() and set_watermark(): one "apply" script call.
  ApplyStats apply(std::span<const Record> records, const Watermark* advance, const std::string& what) {
    if (records.empty() && !advance) return {};
    if (advance && advance->source.empty())
      fail(Code::internal, "store '{}': {}: a watermark without a source", name(), what);
    Args a = op("apply");
    std::string now;
    put_be64(now, static_cast<uint64_t>(timeutil::now()));
    a.own(std::move(now));
    if (advance) {
      std::string wm;
      if (advance->sequence != 0) format_watermark(wm, *advance);
      a.add(advance->source).own(std::move(wm));
    } else {
      a.add("").add("");
    }
    std::vector<std::string> values(records.size());
    a.reserve(a.argc() + 2 * records.size());
    for (size_t i = 0; i < records.size(); ++i) {
      const Record& r = records[i];
      check_record(r);
      values[i].reserve(value_size(r));
      append_value(values[i], r, record_digest(r));
      a.add(r.pcs_id).add(values[i]);
    }
    Reply r = conn_.script(a, what);
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 6 || r->element[5]->type != REDIS_REPLY_ARRAY)
      conn_.unexpected(what);
    uint64_t n[5];
    for (size_t i = 0; i < 5; ++i) {
      if (r->element[i]->type != REDIS_REPLY_INTEGER) conn_.unexpected(what);
      n[i] = static_cast<uint64_t>(r->element[i]->integer);
    }
    ApplyStats st{n[0], n[1], n[2], n[3], n[4], {}};
    const redisReply* ids = r->element[5];
    if (ids->elements) {
      st.conflict_ids.reserve(ids->elements);
      for (size_t i = 0; i < ids->elements; ++i) {
        if (ids->element[i]->type != REDIS_REPLY_STRING) conn_.unexpected(what);
        st.conflict_ids.emplace_back(str(ids->element[i]));
      }
      std::sort(st.conflict_ids.begin(), st.conflict_ids.end());  // the script's are distinct
    }
    return st;
  }

  // Calls the script's `name` op with the sorted, distinct `pcs_ids`, kPage of them at a
  // time, and hands each reply (and the ids it answers) to fn.
  void by_ids(std::string_view name, std::span<const std::string> pcs_ids, std::string_view what,
              const std::function<void(const redisReply*, std::span<const std::string_view>)>& fn) {
    std::vector<std::string_view> ids = distinct_ids(pcs_ids);
    for (size_t at = 0; at < ids.size(); at += kPage) {
      auto part = std::span<const std::string_view>(ids).subspan(at, std::min(kPage, ids.size() - at));
      Args a = op(name);
      a.reserve(a.argc() + part.size());
      for (std::string_view id : part) a.add(id);
      Reply r = conn_.script(a, what);
      fn(r.get(), part);
    }
  }

  // Two parallel arrays of a reply, the names of hash fields and their values:
  // fn(name, value) for each. A name without a value (an index entry without its hash
  // field) is a corrupt `kind`.
  void pairs(const redisReply* names, const redisReply* vals, std::string_view kind, std::string_view what,
             const std::function<void(std::string_view, std::string_view)>& fn) {
    if (names->type != REDIS_REPLY_ARRAY || vals->type != REDIS_REPLY_ARRAY || names->elements != vals->elements)
      conn_.unexpected(what);
    for (size_t i = 0; i < names->elements; ++i) {
      if (names->element[i]->type != REDIS_REPLY_STRING) conn_.unexpected(what);
      std::string_view name = str(names->element[i]);
      if (vals->element[i]->type != REDIS_REPLY_STRING) corrupt(kind, name.substr(0, name.find('\0')), "no value");
      fn(name, str(vals->element[i]));
    }
  }

  // bulk_load() into generation `gen`.
  void load(const std::function<bool(Stored&)>& next, const std::vector<Evidence>& evidence, const std::string& gen) {
    std::string base = fmt::format("{}:g{}:", conn_.target().prefix, gen);
    std::string rkey = base + "r", ikey = base + "ids", ekey = base + "e", eikey = base + "eids";

    // Chunks of HSET + ZADD, written as RESP straight into two buffers (no copy per
    // argument, no allocation per record), kLoadWindow commands in flight: while the
    // server works on one window, we build the next.
    size_t sent = 0, answered = 0;
    auto drain = [&](size_t keep) {
      while (sent - answered > keep) {
        conn_.read("loading records");
        ++answered;
      }
    };
    std::string head, hbody, zbody;
    size_t n = 0;
    auto flush = [&](std::string_view hkey, std::string_view zkey) {
      if (n == 0) return;
      for (auto [cmd, key, body] : {std::tuple{"HSET", hkey, &hbody}, std::tuple{"ZADD", zkey, &zbody}}) {
        head.clear();
        resp_count(head, '*', 2 + 2 * n);
        resp_arg(head, cmd);
        resp_arg(head, key);
        conn_.append_formatted(head);
        conn_.append_formatted(*body);
        body->clear();
      }
      sent += 2;
      n = 0;
      drain(2 * kLoadWindow);
    };
    // One pcs_id (or evidence field) and its value; `prefix`: 8 bytes before V.
    auto add = [&](std::string_view field, const Record& r, const hash::Digest& d, const int64_t* prefix) {
      check_record(r);
      resp_arg(hbody, field);
      size_t len = (prefix ? 8 : 0) + value_size(r);
      resp_count(hbody, '$', len);
      size_t at = hbody.size();
      if (prefix) put_be64(hbody, static_cast<uint64_t>(*prefix));
      append_value(hbody, r, d);
      if (hbody.size() - at != len)  // a bug: value_size() must agree with append_value()
        fail(Code::internal, "store '{}': value of '{}' is {} bytes, not {}", name(), r.pcs_id, hbody.size() - at, len);
      hbody += "\r\n";
      resp_arg(zbody, "0");
      resp_arg(zbody, field);
      ++n;
    };

    Stored st;
    std::string last;
    bool first = true;
    while (next(st)) {
      if (!first && st.record.pcs_id <= last)
        fail(Code::internal, "store '{}': bulk load out of order at '{}'", name(), st.record.pcs_id);
      first = false;
      last = st.record.pcs_id;
      add(st.record.pcs_id, st.record, st.digest, nullptr);
      if (n == kLoadChunk) flush(rkey, ikey);
    }
    flush(rkey, ikey);
    std::string field;
    for (const Evidence& e : evidence) {
      field = e.record.pcs_id;
      field += '\0';
      field.append(reinterpret_cast<const char*>(e.digest.data()), e.digest.size());
      add(field, e.record, e.digest, &e.detected_at);
      if (n == kLoadChunk) flush(ekey, eikey);
    }
    flush(ekey, eikey);
    drain(0);
  }

  std::string name() const {
    return gen_.empty() ? conn_.target().masked : fmt::format("{}#rebuild", conn_.target().masked);
  }

  // The arguments of a kScript call, before the op's own.
  Args op(std::string_view name) { return op(name, gen_); }
  Args op(std::string_view name, const std::string& gen) {
    Args a;
    a.add("").add("").add("1").add(meta_).add(name).add(conn_.target().prefix).add(kSchemaText).add(gen);
    return a;
  }

  Sizes sizes() {
    Args a = op("count");
    Reply r = conn_.script(a, "counting records");
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 3 || r->element[0]->type != REDIS_REPLY_STRING ||
        r->element[1]->type != REDIS_REPLY_INTEGER || r->element[2]->type != REDIS_REPLY_INTEGER)
      conn_.unexpected("counting records");
    return Sizes{std::string(str(r->element[0])), static_cast<uint64_t>(r->element[1]->integer),
                 static_cast<uint64_t>(r->element[2]->integer)};
  }

  // Pages through the records ("r") or the evidence ("e") of one generation.
  void pages(std::string_view which, std::string_view what,
             const std::function<void(std::string_view, std::string_view)>& fn) {
    std::string gen = gen_, start = "-";
    const std::string size = std::to_string(kPage);
    for (;;) {
      Args a = op("page", gen);
      a.add(which).add(start).add(size);
      Reply r = conn_.script(a, what);
      if (r->type != REDIS_REPLY_ARRAY || r->elements != 3 || r->element[0]->type != REDIS_REPLY_STRING)
        conn_.unexpected(what);
      gen = str(r->element[0]);
      const redisReply* ids = r->element[1];
      pairs(ids, r->element[2], which == "r" ? "record" : "evidence", what, fn);
      if (ids->elements < kPage) return;
      start = "(";
      start += str(ids->element[ids->elements - 1]);
    }
  }

  void decode_value(std::string_view id, std::string_view v, Stored& st) {
    if (v.size() < 2) corrupt("record", id, "value too short");
    size_t n = static_cast<uint8_t>(v[0]);
    if (n < 8 + 1 + 1 + 32 || v.size() < 1 + n + 1) corrupt("record", id, "value too short");
    std::string why;
    if (!decode_record(v.substr(2 + n), st.record, &why)) corrupt("record", id, why);
    std::memcpy(st.digest.data(), v.data() + 1 + n - 32, 32);
    if (st.record.pcs_id != id) corrupt("record", id, fmt::format("it holds pcs_id '{}'", st.record.pcs_id));
    std::string key;
    append_key(key, st.record, st.digest);
    if (v.substr(1, n) != key || static_cast<uint8_t>(v[1 + n]) != static_cast<uint8_t>(st.record.outcome))
      corrupt("record", id, "order key does not match the record");
  }

  // An evidence field (pcs_id 0x00 digest) and its value (be64 detected_at ‖ V).
  void decode_evidence(std::string_view field, std::string_view v, Evidence& ev) {
    size_t nul = field.find('\0');
    if (nul == std::string_view::npos || v.size() < 8) corrupt("evidence", field.substr(0, nul), "bad field or value");
    std::string_view id = field.substr(0, nul);
    Stored st;
    decode_value(id, v.substr(8), st);
    if (field.substr(nul + 1) != std::string_view(reinterpret_cast<const char*>(st.digest.data()), st.digest.size()))
      corrupt("evidence", id, "digest does not match the field");
    ev.record = std::move(st.record);
    ev.digest = st.digest;
    ev.detected_at = static_cast<int64_t>(get_be64(v));
  }

  Watermark parse_watermark(std::string_view source, std::string_view v) {
    Watermark w;
    w.source = source;
    size_t a = v.find(' '), b = v.rfind(' ');
    if (a == std::string_view::npos || a == b || !parse_int(v.substr(0, a), w.sequence) ||
        !hash::from_hex(v.substr(a + 1, b - a - 1), w.digest) || !parse_int(v.substr(b + 1), w.updated))
      corrupt("watermark", source, fmt::format("cannot parse '{}'", v));
    return w;
  }

  [[noreturn]] void corrupt(std::string_view kind, std::string_view id, std::string_view why) {
    fail(Code::data, "store '{}': corrupt {} '{}': {}", name(), kind, id, why);
  }

  void check_record(const Record& r) {
    if (r.region.empty() || r.region.size() > kMaxRegionBytes || r.pcs_id.empty() || r.pcs_id.size() > kMaxIdBytes)
      fail(Code::data, "store '{}': invalid record '{}': bad region or pcs_id length", name(), r.pcs_id);
  }

  static constexpr std::string_view kSchemaText = "1";
  static_assert(kSchemaVersion == 1, "kSchemaText must spell kSchemaVersion");

  Conn conn_;
  std::string gen_;
  std::string meta_;
  bool swapped_ = false;  // a scratch store that replace_with() made current
};

}  // namespace

std::unique_ptr<Store> open_redis(const std::string& url) {
  return std::make_unique<RedisStore>(parse_url(url), std::string());
}

}  // namespace flk::store
