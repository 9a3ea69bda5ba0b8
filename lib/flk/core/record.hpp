// The record: one decision of one region's backend about one PCS (DESIGN.md §1),
// its validation, its JSON form, its canonical binary encoding and the deterministic
// first-write-wins order.
//
// Canonical encoding (little-endian; the bytes inside a WAL frame, see flk-wal(5)):
//
//   u8  version (= 1)
//   u8  flags          bit 0: params present, bit 1: payload present
//   u8  outcome        1 accepted, 2 escalated, 3 rejected
//   i64 ts             nanoseconds since the Unix epoch, UTC
//   u8  n, region[n]   1–63 bytes, [a-z0-9][a-z0-9-]*
//   u8  n, pcs_id[n]   1–255 bytes, printable ASCII
//   u8  n, tenant[n]   1–255 bytes, no control characters
//   u32 n, params[n]   if flag bit 0
//   u32 n, payload[n]  if flag bit 1: minified JSON text, ≤ 1 MiB
//
// The record's digest is the SHA-256 of this encoding; two records for one pcs_id are
// ordered by (ts, region, digest) and the smallest is the first write.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "flk/util/hash.hpp"

namespace flk {

enum class Outcome : uint8_t { accepted = 1, escalated = 2, rejected = 3 };

std::string_view outcome_name(Outcome o);
std::optional<Outcome> parse_outcome(std::string_view s);

constexpr size_t kMaxIdBytes = 255;
constexpr size_t kMaxRegionBytes = 63;
constexpr size_t kMaxPayloadBytes = 1u << 20;

struct Record {
  std::string pcs_id;
  std::string tenant_id;
  Outcome outcome = Outcome::accepted;
  int64_t ts = 0;
  std::string region;
  std::optional<std::string> params;
  std::optional<std::string> payload;  // compact JSON text

  bool operator==(const Record&) const = default;
};

// Region names: [a-z0-9][a-z0-9-]{0,62}.
bool valid_region(std::string_view r);
// Throws Error(usage) "invalid region name '…': …" — for flags and config.
void check_region(std::string_view r, std::string_view what = "region");

// Defaults for fields a JSON record may omit.
struct RecordDefaults {
  std::string region;  // when set, a record's region must equal it (or is taken from it)
  int64_t now = 0;     // ts when absent
};

// Parses one JSON Lines record (simdjson). Unknown, repeated or missing fields and
// invalid values are errors (code data) naming the field: "field 'outcome': unknown
// outcome 'maybe'". `payload` is kept as the input's own text without white space
// between tokens (keys, numbers and strings exactly as given).
// When `padded`, the kJsonPadding bytes after the line are readable (json::LineReader
// guarantees it) and the line is parsed in place; otherwise it is copied first.
constexpr size_t kJsonPadding = 64;
Record record_from_json(std::string_view line, const RecordDefaults& defaults, bool padded = false);

// True when text is one valid JSON value.
bool valid_json(std::string_view text);

// Appends the record as one JSON object (no newline), fields in the order of §1.
void append_record_json(std::string& out, const Record& r);

// Canonical binary encoding.
void encode_record(std::string& out, const Record& r);
struct RecordView;
void encode_record(std::string& out, const RecordView& r);
size_t encoded_size(const Record& r);
// A record's fields viewed in its encoding (valid while the bytes are).
struct RecordView {
  Outcome outcome = Outcome::accepted;
  int64_t ts = 0;
  std::string_view region, pcs_id, tenant_id;
  std::optional<std::string_view> params, payload;
};

// Parses and validates one encoding in place (no allocation); false (and why) when
// the bytes are not a valid encoding. Every field is validated as on input.
bool parse_record(std::string_view bytes, RecordView& out, std::string* why);
// The same, into a Record of its own.
bool decode_record(std::string_view bytes, Record& out, std::string* why);
// Views an encoding that was already validated (by parse_record) without checking it
// again: for bytes the caller produced or checked itself. Bounds are still respected.
RecordView view_validated(std::string_view bytes);
// A Record holding copies of a view's fields; or the copies into `out`, reusing its
// buffers.
Record to_record(const RecordView& v);
void to_record(const RecordView& v, Record& out);
// A view of a Record's fields (valid while it is, unchanged).
RecordView view_of(const Record& r);

hash::Digest record_digest(const Record& r);
hash::Digest record_digest(const RecordView& r);

// True when a is the first write relative to b: (ts, region, digest) ascending.
bool first_write_before(const Record& a, const hash::Digest& da, const Record& b, const hash::Digest& db);

}  // namespace flk
