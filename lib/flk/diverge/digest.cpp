#include "flk/diverge/digest.hpp"

#include <charconv>
#include <cstring>

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
bool parse_hex128(std::string_view s, uint64_t& hi, uint64_t& lo) {
  if (s.size() != 32) return false;
  auto a = std::from_chars(s.data(), s.data() + 16, hi, 16);
  auto b = std::from_chars(s.data() + 16, s.data() + 32, lo, 16);
  if (a.ec != std::errc() || a.ptr != s.data() + 16 || b.ec != std::errc() || b.ptr != s.data() + 32) return false;
  return true;
}
}  // namespace

std::string digest_text(const Digest& d) {
  std::string buf;
  json::Object j(buf);
  j.str("format", "flk-diverge-digest").num("version", 1).unum("buckets", d.buckets).unum("records", d.records);
  j.str("region", d.region).str("store", d.store).str("created", timeutil::format_rfc3339(d.created));
  j.close();
  buf += '\n';
  for (uint32_t i = 0; i < d.buckets; ++i)
    if (d.b[i].count)
      fmt::format_to(std::back_inserter(buf), "{} {} {:016x}{:016x}\n", i, d.b[i].count, d.b[i].hi, d.b[i].lo);
  return buf;
}

Digest read_digest(const std::filesystem::path& file) {
  std::string text = fs::read_file(file);
  Digest d;
  size_t line_no = 0, pos = 0;
  auto bad = [&](std::string_view why) {
    fail(Code::data, "digest '{}': line {}: {}", file.string(), line_no, why);
  };
  while (pos < text.size()) {
    size_t nl = text.find('\n', pos);
    if (nl == std::string::npos) nl = text.size();
    std::string_view line(text.data() + pos, nl - pos);
    pos = nl + 1;
    ++line_no;
    if (line_no == 1) {
      try {
        auto j = nlohmann::json::parse(line);
        if (j.at("format").get<std::string>() != "flk-diverge-digest") bad("not a flk-diverge digest");
        if (j.at("version").get<int>() != 1) bad("unknown version " + j["version"].dump());
        d.buckets = j.at("buckets").get<uint32_t>();
        if (d.buckets == 0 || d.buckets > kMaxBuckets) bad("bad bucket count");
        d.region = j.value("region", "");
        d.store = j.value("store", "");
      } catch (const nlohmann::json::exception& e) {
        bad(e.what());
      }
      d.b.resize(d.buckets);
      continue;
    }
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
  if (line_no == 0) fail(Code::data, "digest '{}': empty", file.string());
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
