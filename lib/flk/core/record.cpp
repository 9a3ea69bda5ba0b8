#include "flk/core/record.hpp"

#include <bit>
#include <cstring>
#include <tuple>

#include <simdjson.h>

#include "flk/util/error.hpp"
#include "flk/util/json.hpp"
#include "flk/util/time.hpp"

namespace flk {

std::string_view outcome_name(Outcome o) {
  switch (o) {
    case Outcome::accepted: return "accepted";
    case Outcome::escalated: return "escalated";
    case Outcome::rejected: return "rejected";
  }
  return "invalid";
}

std::optional<Outcome> parse_outcome(std::string_view s) {
  if (s == "accepted") return Outcome::accepted;
  if (s == "escalated") return Outcome::escalated;
  if (s == "rejected") return Outcome::rejected;
  return std::nullopt;
}

bool valid_region(std::string_view r) {
  if (r.empty() || r.size() > kMaxRegionBytes) return false;
  for (size_t i = 0; i < r.size(); ++i) {
    char c = r[i];
    bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || (c == '-' && i > 0);
    if (!ok) return false;
  }
  return true;
}

void check_region(std::string_view r, std::string_view what) {
  if (!valid_region(r))
    fail(Code::usage, "invalid {} '{}': must match [a-z0-9][a-z0-9-]{{0,62}}", what, r);
}

namespace {

const char* type_name(simdjson::dom::element v) {
  switch (v.type()) {
    case simdjson::dom::element_type::ARRAY: return "array";
    case simdjson::dom::element_type::OBJECT: return "object";
    case simdjson::dom::element_type::STRING: return "string";
    case simdjson::dom::element_type::BOOL: return "boolean";
    case simdjson::dom::element_type::NULL_VALUE: return "null";
    default: return "number";
  }
}

// Validation shared by JSON input and binary decoding. Returns an empty string when
// valid, else "field '…': why".
std::string validate(const RecordView& r) {
  auto bad = [](std::string_view f, std::string why) { return fmt::format("field '{}': {}", f, why); };
  if (r.pcs_id.empty() || r.pcs_id.size() > kMaxIdBytes) return bad("pcs_id", "must be 1–255 bytes");
  for (char c : r.pcs_id)
    if (c < 0x20 || c > 0x7e) return bad("pcs_id", "must be printable ASCII");
  if (r.tenant_id.empty() || r.tenant_id.size() > kMaxIdBytes) return bad("tenant_id", "must be 1–255 bytes");
  for (char c : r.tenant_id)
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) return bad("tenant_id", "must not contain control characters");
  // JSON input is always UTF-8; decoded bytes must be too, or `cat` would print invalid JSON.
  if (!simdjson::validate_utf8(r.tenant_id.data(), r.tenant_id.size())) return bad("tenant_id", "not valid UTF-8");
  if (r.params && !simdjson::validate_utf8(r.params->data(), r.params->size())) return bad("params", "not valid UTF-8");
  if (!valid_region(r.region)) return bad("region", fmt::format("invalid region name '{}'", r.region));
  if (r.payload && r.payload->size() > kMaxPayloadBytes) return bad("payload", "larger than 1 MiB encoded");
  return {};
}

RecordView view(const Record& r) {
  RecordView v{r.outcome, r.ts, r.region, r.pcs_id, r.tenant_id, std::nullopt, std::nullopt};
  if (r.params) v.params = *r.params;
  if (r.payload) v.payload = *r.payload;
  return v;
}

// Thread-local: a simdjson parser reuses its buffers between documents.
simdjson::dom::parser& json_parser() {
  thread_local simdjson::dom::parser parser;
  return parser;
}

// The text of a top-level member's value in a JSON object that simdjson has already
// validated, found by a scan that only tracks strings and nesting; empty when not found.
std::string_view member_text(std::string_view json, std::string_view key) {
  size_t i = json.find('{');
  if (i == std::string_view::npos) return {};
  int depth = 0;
  auto skip_string = [&](size_t at) {  // at: the opening quote; returns the index after the closing one
    size_t k = at + 1;
    for (;;) {
      const void* q = std::memchr(json.data() + k, '"', json.size() - k);
      if (!q) return json.size();
      size_t pos = static_cast<size_t>(static_cast<const char*>(q) - json.data());
      size_t backslashes = 0;
      while (pos - backslashes > at + 1 && json[pos - backslashes - 1] == '\\') ++backslashes;
      if (backslashes % 2 == 0) return pos + 1;
      k = pos + 1;
    }
  };
  bool expect_key = true;
  for (; i < json.size(); ++i) {
    char c = json[i];
    if (c == '"') {
      size_t end = skip_string(i);
      if (depth == 1 && expect_key) {
        std::string_view k = json.substr(i + 1, end - i - 2);
        size_t colon = json.find(':', end);
        if (colon == std::string_view::npos) return {};
        if (k == key) {  // a plain key: keys with escapes never equal "payload"
          size_t start = colon + 1;
          int d = 0;
          size_t k2 = start;
          for (; k2 < json.size(); ++k2) {
            char ch = json[k2];
            if (ch == '"') k2 = skip_string(k2) - 1;
            else if (ch == '{' || ch == '[') ++d;
            else if (ch == '}' || ch == ']') {
              if (d == 0) break;
              --d;
            } else if (ch == ',' && d == 0) break;
          }
          return json.substr(start, k2 - start);
        }
        i = colon;
        expect_key = false;
        continue;
      }
      i = end - 1;
    } else if (c == '{' || c == '[') {
      ++depth;
      if (depth == 1) expect_key = true;
    } else if (c == '}' || c == ']') {
      --depth;
    } else if (c == ',' && depth == 1) {
      expect_key = true;
    }
  }
  return {};
}

// A member's value as minified JSON text: the input's own text with the whitespace
// between tokens removed (simdjson's SIMD minifier over the raw bytes — numbers and
// strings exactly as given), or, should the text not be found, re-serialized.
std::string minified_member(std::string_view line, std::string_view key, simdjson::dom::element v) {
  std::string_view raw = member_text(line, key);
  if (raw.empty()) return simdjson::minify(v);
  std::string out(raw.size(), '\0');
  size_t n = 0;
  if (simdjson::minify(raw.data(), raw.size(), out.data(), n) != simdjson::SUCCESS) return simdjson::minify(v);
  out.resize(n);
  return out;
}

}  // namespace

bool valid_json(std::string_view text) {
  simdjson::dom::element e;
  return json_parser().parse(text.data(), text.size(), true).get(e) == simdjson::SUCCESS;
}

Record record_from_json(std::string_view line, const RecordDefaults& defaults, bool padded) {
  simdjson::dom::element doc;
  auto& parser = json_parser();
  auto err = padded ? parser.parse(simdjson::padded_string_view(line.data(), line.size(), line.size() + kJsonPadding)).get(doc)
                    : parser.parse(line.data(), line.size(), true).get(doc);
  if (err) fail(Code::data, "malformed JSON: {}", simdjson::error_message(err));
  simdjson::dom::object obj;
  if (doc.get_object().get(obj)) fail(Code::data, "a record must be a JSON object");
  Record r;
  unsigned seen = 0;
  auto once = [&](unsigned bit, std::string_view k) {
    if (seen & bit) fail(Code::data, "field '{}': given twice", k);
    seen |= bit;
  };
  auto str = [](simdjson::dom::element v, std::string_view k) -> std::string_view {
    std::string_view s;
    if (v.get_string().get(s)) fail(Code::data, "field '{}': must be a string, not {}", k, type_name(v));
    return s;
  };
  for (auto field : obj) {
    std::string_view k = field.key;
    simdjson::dom::element v = field.value;
    if (k == "pcs_id") {
      once(1, k);
      r.pcs_id = str(v, k);
    } else if (k == "tenant_id") {
      once(2, k);
      r.tenant_id = str(v, k);
    } else if (k == "outcome") {
      once(4, k);
      std::string_view s = str(v, k);
      auto o = parse_outcome(s);
      if (!o) fail(Code::data, "field 'outcome': unknown outcome '{}' (accepted, escalated, rejected)", s);
      r.outcome = *o;
    } else if (k == "ts") {
      once(8, k);
      std::string_view s = str(v, k);
      try {
        r.ts = timeutil::parse_rfc3339(s);
      } catch (const Error& e) {
        fail(Code::data, "field 'ts': {}", e.what());
      }
    } else if (k == "region") {
      once(16, k);
      r.region = str(v, k);
    } else if (k == "params") {
      once(32, k);
      if (!v.is_null()) r.params = std::string(str(v, k));
    } else if (k == "payload") {
      once(64, k);
      if (!v.is_null()) r.payload = minified_member(line, "payload", v);
    } else {
      fail(Code::data, "field '{}': unknown field (pcs_id, tenant_id, outcome, ts, region, params, payload)", k);
    }
  }
  if (!(seen & 1)) fail(Code::data, "field 'pcs_id': missing");
  if (!(seen & 2)) fail(Code::data, "field 'tenant_id': missing");
  if (!(seen & 4)) fail(Code::data, "field 'outcome': missing");
  if (!(seen & 8)) r.ts = defaults.now;
  if (r.region.empty()) {
    if (defaults.region.empty()) fail(Code::data, "field 'region': missing");
    r.region = defaults.region;
  } else if (!defaults.region.empty() && r.region != defaults.region) {
    fail(Code::data, "field 'region': '{}' is not this WAL's region '{}'", r.region, defaults.region);
  }
  if (std::string why = validate(view(r)); !why.empty()) throw Error(Code::data, why);
  return r;
}

void append_record_json(std::string& out, const Record& r) {
  json::Object o(out);
  o.str("pcs_id", r.pcs_id)
      .str("tenant_id", r.tenant_id)
      .str("outcome", outcome_name(r.outcome))
      .str("ts", timeutil::format_rfc3339(r.ts))
      .str("region", r.region);
  if (r.params) o.str("params", *r.params);
  if (r.payload) o.raw("payload", *r.payload);
  o.close();
}

namespace {

template <typename T>
void put(std::string& out, T v) {
  char b[sizeof(T)];
  std::memcpy(b, &v, sizeof(T));  // little-endian hosts only (static_assert below)
  out.append(b, sizeof(T));
}
static_assert(std::endian::native == std::endian::little, "flk's on-disk formats assume a little-endian host");

void put_short(std::string& out, std::string_view s) {
  out += static_cast<char>(s.size());
  out += s;
}

void put_long(std::string& out, std::string_view s) {
  put<uint32_t>(out, static_cast<uint32_t>(s.size()));
  out += s;
}

struct Cursor {
  std::string_view b;
  size_t pos = 0;
  template <typename T>
  bool get(T& v) {
    if (b.size() - pos < sizeof(T)) return false;
    std::memcpy(&v, b.data() + pos, sizeof(T));
    pos += sizeof(T);
    return true;
  }
  bool bytes(size_t n, std::string_view& out) {
    if (b.size() - pos < n) return false;
    out = b.substr(pos, n);
    pos += n;
    return true;
  }
  bool short_str(std::string_view& out) {
    uint8_t n;
    return get(n) && bytes(n, out);
  }
  bool long_str(std::string_view& out) {
    uint32_t n;
    return get(n) && bytes(n, out);
  }
};

constexpr uint8_t kRecordVersion = 1;

}  // namespace

size_t encoded_size(const Record& r) {
  size_t n = 3 + 8 + 3 + r.region.size() + r.pcs_id.size() + r.tenant_id.size();
  if (r.params) n += 4 + r.params->size();
  if (r.payload) n += 4 + r.payload->size();
  return n;
}

void encode_record(std::string& out, const Record& r) { encode_record(out, view_of(r)); }

void encode_record(std::string& out, const RecordView& r) {
  uint8_t flags = (r.params ? 1 : 0) | (r.payload ? 2 : 0);
  out += static_cast<char>(kRecordVersion);
  out += static_cast<char>(flags);
  out += static_cast<char>(r.outcome);
  put<int64_t>(out, r.ts);
  put_short(out, r.region);
  put_short(out, r.pcs_id);
  put_short(out, r.tenant_id);
  if (r.params) put_long(out, *r.params);
  if (r.payload) put_long(out, *r.payload);
}

bool parse_record(std::string_view bytes, RecordView& out, std::string* why) {
  auto bad = [&](const char* w) {
    if (why) *why = w;
    return false;
  };
  Cursor c{bytes};
  uint8_t version, flags, outcome;
  if (!c.get(version) || !c.get(flags) || !c.get(outcome)) return bad("record truncated");
  if (version != kRecordVersion) return bad("unknown record version");
  if (flags & ~3u) return bad("unknown record flags");
  if (outcome < 1 || outcome > 3) return bad("invalid outcome");
  out.outcome = static_cast<Outcome>(outcome);
  if (!c.get(out.ts) || !c.short_str(out.region) || !c.short_str(out.pcs_id) || !c.short_str(out.tenant_id))
    return bad("record truncated");
  out.params.reset();
  out.payload.reset();
  if (flags & 1) {
    out.params.emplace();
    if (!c.long_str(*out.params)) return bad("record truncated");
  }
  if (flags & 2) {
    out.payload.emplace();
    if (!c.long_str(*out.payload)) return bad("record truncated");
    if (!valid_json(*out.payload)) return bad("payload is not valid JSON");
  }
  if (c.pos != bytes.size()) return bad("trailing bytes after record");
  std::string v = validate(out);
  if (!v.empty()) {
    if (why) *why = v;
    return false;
  }
  return true;
}

RecordView view_validated(std::string_view bytes) {
  RecordView v;
  Cursor c{bytes};
  uint8_t version = 0, flags = 0, outcome = 0;
  bool ok = c.get(version) && c.get(flags) && c.get(outcome) && c.get(v.ts) && c.short_str(v.region) &&
            c.short_str(v.pcs_id) && c.short_str(v.tenant_id);
  v.outcome = static_cast<Outcome>(outcome);
  if (ok && (flags & 1)) ok = c.long_str(v.params.emplace());
  if (ok && (flags & 2)) ok = c.long_str(v.payload.emplace());
  if (!ok) throw std::logic_error("view_validated: bytes that were never validated");
  return v;
}

bool decode_record(std::string_view bytes, Record& out, std::string* why) {
  RecordView v;
  if (!parse_record(bytes, v, why)) return false;
  out = to_record(v);
  return true;
}

Record to_record(const RecordView& v) {
  Record r;
  to_record(v, r);
  return r;
}

void to_record(const RecordView& v, Record& out) {
  auto assign = [](std::optional<std::string>& to, const std::optional<std::string_view>& from) {
    if (!from) to.reset();
    else if (to) to->assign(*from);
    else to.emplace(*from);
  };
  out.outcome = v.outcome;
  out.ts = v.ts;
  out.region.assign(v.region);
  out.pcs_id.assign(v.pcs_id);
  out.tenant_id.assign(v.tenant_id);
  assign(out.params, v.params);
  assign(out.payload, v.payload);
}

RecordView view_of(const Record& r) {
  RecordView v;
  v.outcome = r.outcome;
  v.ts = r.ts;
  v.region = r.region;
  v.pcs_id = r.pcs_id;
  v.tenant_id = r.tenant_id;
  if (r.params) v.params = *r.params;
  if (r.payload) v.payload = *r.payload;
  return v;
}

hash::Digest record_digest(const Record& r) { return record_digest(view_of(r)); }

hash::Digest record_digest(const RecordView& r) {
  thread_local std::string buf;  // reused: no allocation per record on the hot paths
  buf.clear();
  encode_record(buf, r);
  return hash::sha256(buf);
}

bool first_write_before(const Record& a, const hash::Digest& da, const Record& b, const hash::Digest& db) {
  return std::tie(a.ts, a.region, da) < std::tie(b.ts, b.region, db);
}

}  // namespace flk
