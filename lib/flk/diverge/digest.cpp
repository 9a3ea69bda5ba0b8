#include "flk/diverge/digest.hpp"

#include <algorithm>
#include <charconv>
#include <cerrno>
#include <cstring>
#include <span>

#include <fcntl.h>
#include <unistd.h>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "flk/util/error.hpp"
#include "flk/util/fs.hpp"
#include "flk/util/hash.hpp"
#include "flk/util/json.hpp"
#include "flk/util/time.hpp"

namespace flk::diverge {

uint32_t bucket_of(std::string_view pcs_id, uint32_t buckets) {
  return static_cast<uint32_t>(hash::xxh3_64(pcs_id.data(), pcs_id.size()) % buckets);
}

void add(Digest& d, const store::Store::KeyView& k) {
  // pcs_id \0 outcome ts(8, little-endian) region, hashed from the stack when it fits.
  char stack[512];
  size_t n = k.pcs_id.size() + 10 + k.region.size();
  std::string heap;
  char* buf = stack;
  if (n > sizeof stack) heap.resize(n), buf = heap.data();
  char* p = buf;
  std::memcpy(p, k.pcs_id.data(), k.pcs_id.size());
  p += k.pcs_id.size();
  *p++ = '\0';
  *p++ = static_cast<char>(k.outcome);
  for (int i = 0; i < 8; ++i) *p++ = static_cast<char>((static_cast<uint64_t>(k.ts) >> (8 * i)) & 0xff);
  std::memcpy(p, k.region.data(), k.region.size());
  auto [hi, lo] = hash::xxh3_128(buf, n);
  Bucket& b = d.b[bucket_of(k.pcs_id, d.buckets)];
  ++b.count;
  b.lo += lo;
  b.hi += hi + (b.lo < lo ? 1 : 0);  // the carry
  ++d.records;
}

Digest digest_store(store::Store& s, uint32_t buckets, const std::string& region) {
  if (buckets == 0 || buckets > kMaxBuckets) fail(Code::usage, "the bucket count must be 1 to {}", kMaxBuckets);
  Digest d;
  d.buckets = buckets;
  d.b.resize(buckets);
  d.region = region;
  d.store = s.url();
  d.created = timeutil::now();
  s.scan_keys([&](const store::Store::KeyView& k) { add(d, k); });
  return d;
}

namespace {

constexpr int kVersion = 2;

bool parse_hex128(std::string_view s, uint64_t& hi, uint64_t& lo) {
  if (s.size() != 32) return false;
  auto a = std::from_chars(s.data(), s.data() + 16, hi, 16);
  auto b = std::from_chars(s.data() + 16, s.data() + 32, lo, 16);
  if (a.ec != std::errc() || a.ptr != s.data() + 16 || b.ec != std::errc() || b.ptr != s.data() + 32) return false;
  return true;
}

void put_varint(std::string& out, uint64_t v) {
  for (; v >= 0x80; v >>= 7) out += static_cast<char>((v & 0x7f) | 0x80);
  out += static_cast<char>(v);
}

void put_be64(std::string& out, uint64_t v) {
  for (int i = 7; i >= 0; --i) out += static_cast<char>((v >> (8 * i)) & 0xff);
}

uint64_t get_be64(std::string_view s, size_t pos) {
  uint64_t v = 0;
  for (size_t i = 0; i < 8; ++i) v = v << 8 | static_cast<unsigned char>(s[pos + i]);
  return v;
}

// Version 1: "BUCKET COUNT SUM" lines after the header (line 1).
void read_v1_lines(std::string_view text, Digest& d, const std::filesystem::path& file) {
  size_t line_no = 1, pos = 0;
  auto bad = [&](std::string_view why) {
    fail(Code::data, "digest '{}': line {}: {}", file.string(), line_no, why);
  };
  while (pos < text.size()) {
    size_t nl = text.find('\n', pos);
    if (nl == std::string::npos) nl = text.size();
    std::string_view line = text.substr(pos, nl - pos);
    pos = nl + 1;
    ++line_no;
    uint32_t i = 0;
    uint64_t count = 0, hi = 0, lo = 0;
    size_t s1 = line.find(' '), s2 = s1 == std::string_view::npos ? s1 : line.find(' ', s1 + 1);
    if (s2 == std::string_view::npos) bad("expected 'BUCKET COUNT SUM'");
    auto r1 = std::from_chars(line.data(), line.data() + s1, i);
    auto r2 = std::from_chars(line.data() + s1 + 1, line.data() + s2, count);
    if (r1.ec != std::errc() || r1.ptr != line.data() + s1 || r2.ec != std::errc() || r2.ptr != line.data() + s2 ||
        !parse_hex128(line.substr(s2 + 1), hi, lo) || i >= d.buckets || count == 0)
      bad("expected 'BUCKET COUNT SUM' with a bucket below the count and 32 hex digits");
    if (d.b[i].count) bad(fmt::format("bucket {} given twice", i));
    d.b[i] = {count, hi, lo};
    d.records += count;
  }
}

// Version 2: the binary body, checked against the header's length and SHA-256 before
// it is parsed.
void read_v2_body(std::string_view body, uint64_t body_bytes, const hash::Digest& body_sha256, uint64_t records,
                  Digest& d, const std::filesystem::path& file) {
  auto bad = [&](std::string_view why) { fail(Code::data, "digest '{}': {}", file.string(), why); };
  if (body.size() != body_bytes)
    bad(fmt::format("body is {} bytes, the header says {} ({})", body.size(), body_bytes,
                    body.size() < body_bytes ? "cut short" : "bytes added after it"));
  if (hash::Digest got = hash::sha256(body); got != body_sha256)
    bad(fmt::format("the body's SHA-256 is {}, the header says {}: the body was altered", hash::to_hex(got),
                    hash::to_hex(body_sha256)));
  size_t pos = 0;
  for (uint32_t i = 0; i < d.buckets; ++i) {
    uint64_t count = 0;
    for (int shift = 0;; shift += 7) {
      if (pos == body.size()) bad(fmt::format("the body ends at byte {}, in bucket {} of {}", pos, i, d.buckets));
      auto byte = static_cast<unsigned char>(body[pos++]);
      if (shift == 63 && byte > 1) bad(fmt::format("body byte {}: bucket {}'s count exceeds 64 bits", pos - 1, i));
      count |= static_cast<uint64_t>(byte & 0x7f) << shift;
      if (!(byte & 0x80)) break;
    }
    if (!count) continue;
    if (body.size() - pos < 16) bad(fmt::format("the body ends at byte {}, in bucket {}'s sum", pos, i));
    d.b[i] = {count, get_be64(body, pos), get_be64(body, pos + 8)};
    pos += 16;
    d.records += count;
  }
  if (pos != body.size()) bad(fmt::format("the body has {} bytes after the last bucket (from byte {})", body.size() - pos, pos));
  if (d.records != records)
    bad(fmt::format("the header says {} records, the buckets hold {}", records, d.records));
}

}  // namespace

std::string digest_bytes(const Digest& d) {
  std::string body;
  body.reserve(d.buckets);
  for (uint32_t i = 0; i < d.buckets; ++i) {
    put_varint(body, d.b[i].count);
    if (!d.b[i].count) continue;
    put_be64(body, d.b[i].hi);
    put_be64(body, d.b[i].lo);
  }
  std::string buf;
  json::Object j(buf);
  j.str("format", "flk-diverge-digest").num("version", kVersion).unum("buckets", d.buckets).unum("records", d.records);
  j.str("region", d.region).str("store", d.store).str("created", timeutil::format_rfc3339(d.created));
  j.unum("body_bytes", body.size()).str("body_sha256", hash::to_hex(hash::sha256(body)));
  j.close();
  buf += '\n';
  buf += body;
  return buf;
}

Digest read_digest(const std::filesystem::path& file) {
  std::string data = fs::read_file(file == "-" ? std::filesystem::path("/dev/stdin") : file);
  if (data.empty()) fail(Code::data, "digest '{}': empty", file.string());
  size_t nl = std::min(data.find('\n'), data.size());
  std::string_view header(data.data(), nl), rest = std::string_view(data).substr(std::min(nl + 1, data.size()));
  auto bad = [&](std::string_view why) { fail(Code::data, "digest '{}': line 1: {}", file.string(), why); };
  Digest d;
  int version = 0;
  uint64_t body_bytes = 0, records = 0;
  hash::Digest body_sha256{};
  try {
    auto j = nlohmann::json::parse(header);
    if (j.at("format").get<std::string>() != "flk-diverge-digest") bad("not a flk-diverge digest");
    version = j.at("version").get<int>();
    if (version != 1 && version != kVersion) bad("unknown version " + j["version"].dump());
    d.buckets = j.at("buckets").get<uint32_t>();
    if (d.buckets == 0 || d.buckets > kMaxBuckets) bad("bad bucket count");
    d.region = j.value("region", "");
    d.store = j.value("store", "");
    if (version == kVersion) {
      records = j.at("records").get<uint64_t>();
      body_bytes = j.at("body_bytes").get<uint64_t>();
      if (!hash::from_hex(j.at("body_sha256").get<std::string>(), body_sha256))
        bad("body_sha256 is not 64 hex digits");
    }
  } catch (const nlohmann::json::exception& e) {
    bad(e.what());
  }
  d.b.resize(d.buckets);
  if (version == 1) read_v1_lines(rest, d, file);
  else read_v2_body(rest, body_bytes, body_sha256, records, d, file);
  return d;
}

std::vector<uint32_t> compare(const Digest& a, const Digest& b) {
  if (a.buckets != b.buckets)
    fail(Code::usage, "the digests have {} and {} buckets: make both with the same --buckets", a.buckets, b.buckets);
  std::vector<uint32_t> out;
  for (uint32_t i = 0; i < a.buckets; ++i)
    if (!(a.b[i] == b.b[i])) out.push_back(i);
  return out;
}

Extract extract_buckets(store::Store& from, const std::vector<uint32_t>& buckets, uint32_t bucket_count,
                        const std::filesystem::path& output) {
  namespace stdfs = std::filesystem;
  const stdfs::path out = stdfs::absolute(output);
  auto exists = [&](const std::string& path) {
    fail(Code::cant_create, "cannot create extract '{}': '{}' exists (remove it, or name another file)",
         output.string(), path);
  };
  std::error_code ec;
  for (const char* suffix : {"", "-wal", "-journal"})
    if (stdfs::exists(out.string() + suffix, ec)) exists(out.string() + suffix);
  std::vector<char> wanted(bucket_count);
  for (uint32_t b : buckets) {
    if (b >= bucket_count) fail(Code::usage, "--buckets: bucket {} is not below {}", b, bucket_count);
    wanted[b] = 1;
  }
  auto in = [&](std::string_view pcs_id) { return wanted[bucket_of(pcs_id, bucket_count)] != 0; };

  // The pcs_ids first (a scan of the keys only, to its end: a back end's cursor may use
  // the connection on a thread of its own), then their rows and evidence, looked up.
  std::vector<std::string> ids;
  {
    auto cur = from.ids();
    std::string_view id;
    Outcome o;
    while (cur->next(id, o))
      if (in(id)) ids.emplace_back(id);
  }
  std::vector<store::Stored> rows;
  std::vector<store::Evidence> evidence;
  constexpr size_t kChunk = 4096;
  for (size_t i = 0; i < ids.size(); i += kChunk) {
    std::span<const std::string> chunk(ids.data() + i, std::min(kChunk, ids.size() - i));
    for (auto& s : from.lookup(chunk)) rows.push_back(std::move(s));
    for (auto& e : from.evidence(chunk)) evidence.push_back(std::move(e));
  }

  // Built under a name of its own beside the output, closed (SQLite checkpoints its WAL
  // into the file and removes it), synced, linked as the output, the directory synced.
  fs::make_dirs(out.parent_path());
  const stdfs::path temp = out.parent_path() / fmt::format(".{}.extract-{}", out.filename().string(), ::getpid());
  struct Remove {  // the temporary name and its -wal and -shm files, on every way out
    stdfs::path p;
    ~Remove() {
      std::error_code e;
      for (const char* suffix : {"", "-wal", "-shm", "-journal"}) stdfs::remove(p.string() + suffix, e);
    }
  } remove{temp};
  {
    std::unique_ptr<store::Store> to = store::open("sqlite://" + temp.string());
    size_t i = 0;
    to->bulk_load(
        [&](store::Stored& s) {
          if (i == rows.size()) return false;
          s = std::move(rows[i++]);
          return true;
        },
        evidence);
    to->set_meta("extract", extract_mark(buckets, bucket_count));
  }
  fs::Fd::open(temp.string(), O_RDONLY).sync();
  // link(2), not rename(2): it fails when the output has appeared meanwhile.
  if (::link(temp.c_str(), out.c_str()) != 0) {
    if (errno == EEXIST) exists(out.string());
    throw sys_error("cannot link the extract into place", out.string(), errno, Code::cant_create);
  }
  fs::sync_dir(out.parent_path());
  Extract x;
  x.records = rows.size();
  x.evidence = evidence.size();
  x.bytes = stdfs::file_size(out, ec);
  return x;  // ~Remove unlinks the temporary name
}

std::string extract_mark(std::vector<uint32_t> buckets, uint32_t bucket_count) {
  std::sort(buckets.begin(), buckets.end());
  buckets.erase(std::unique(buckets.begin(), buckets.end()), buckets.end());
  std::string list;
  for (uint32_t b : buckets) list += fmt::format("{}\n", b);
  std::string out;
  json::Object j(out);
  j.unum("bucket_count", bucket_count).unum("buckets", buckets.size()).str("list_sha256", hash::to_hex(hash::sha256(list)));
  j.close();
  return out;
}

void check_extract(store::Store& s, std::string_view region, const std::vector<uint32_t>* buckets,
                   uint32_t bucket_count) {
  std::optional<std::string> mark = s.meta("extract");
  if (!mark || (buckets && *mark == extract_mark(*buckets, bucket_count))) return;
  uint64_t count = 0, of = 0;
  try {
    auto j = nlohmann::json::parse(*mark);
    count = j.at("buckets").get<uint64_t>();
    of = j.at("bucket_count").get<uint64_t>();
  } catch (const nlohmann::json::exception& e) {
    fail(Code::data, "region '{}': store '{}': a malformed extract mark: {}", region, s.url(), e.what());
  }
  fail(Code::usage,
       "region '{}': store '{}' is an extract of {} buckets (of {}): compare it only over those, with --buckets "
       "(the list it was made from) and --bucket-count {}",
       region, s.url(), count, of, of);
}

std::vector<uint32_t> parse_bucket_list(std::string_view arg, uint32_t buckets) {
  std::vector<uint32_t> out;
  auto number = [&](std::string_view item, std::string_view where) {
    uint32_t v = 0;
    auto r = std::from_chars(item.data(), item.data() + item.size(), v);
    if (item.empty() || r.ec != std::errc() || r.ptr != item.data() + item.size() || v >= buckets)
      fail(Code::usage, "--buckets: {}'{}' is not a bucket number below {}", where, item, buckets);
    out.push_back(v);
  };
  if (arg.starts_with('@')) {
    std::string file(arg.substr(1));
    std::string text = fs::read_file(file);
    size_t pos = 0, line_no = 0;
    while (pos < text.size()) {
      size_t nl = text.find('\n', pos);
      if (nl == std::string::npos) nl = text.size();
      std::string_view line(text.data() + pos, nl - pos);
      pos = nl + 1;
      ++line_no;
      if (line.empty()) continue;
      std::string where = fmt::format("'{}' line {}: ", file, line_no);
      if (line.starts_with('{')) {
        try {
          auto j = nlohmann::json::parse(line);
          if (j.contains("buckets") && j["buckets"].get<uint32_t>() != buckets)
            fail(Code::usage, "--buckets: {}made with {} buckets, not {}", where, j["buckets"].get<uint32_t>(), buckets);
          number(std::to_string(j.at("bucket").get<uint64_t>()), where);
        } catch (const nlohmann::json::exception& e) {
          fail(Code::usage, "--buckets: {}{}", where, e.what());
        }
      } else {
        number(line, where);
      }
    }
  } else {
    size_t pos = 0;
    while (pos <= arg.size()) {
      size_t c = arg.find(',', pos);
      if (c == std::string_view::npos) c = arg.size();
      number(arg.substr(pos, c - pos), "");
      pos = c + 1;
    }
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

}  // namespace flk::diverge
