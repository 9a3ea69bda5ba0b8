// libFuzzer target for the WAL segment reader and the record codec (flk-wal(5)).
//
// Every input is tried four ways:
//
//  1. as a segment file, bytes as given: MemorySource → SegmentReader until end or
//     damage, touching every record;
//  2. as a segment file whose checksums have been recomputed (fix_checksums), so that
//     mutations reach past the header and frame checksums into record decoding, seal
//     counting and the reader's bookkeeping;
//  3. as one record's canonical encoding: decode_record, and if that succeeds the
//     re-encoding must give back the same bytes;
//  4. as one JSON Lines record: record_from_json, and if that succeeds the record must
//     survive JSON → binary → JSON → record unchanged.
//
// Invariants checked for every segment read (a failed one aborts, which libFuzzer
// reports as a crash with the input saved):
//  - good_end() never exceeds the input; a damage offset equals good_end();
//  - after Status::damage, next() keeps returning damage (same offset and reason); after
//    Status::end, next() keeps returning end, and the whole input was consumed;
//  - every record or seal frame returned re-encodes to exactly the bytes it was read from
//    (append_record_frame / append_seal_frame), and a good header to its 192 bytes;
//  - the hasher has seen exactly the bytes before good_end();
//  - nothing follows a seal, and a seal agrees with the records counted;
//  - a clean segment cut short anywhere is a torn tail (damage with tail = true, or a
//    clean end exactly at a frame boundary), keeps every whole frame before the cut,
//    and the same holds when the bytes past the cut are zeros (a preallocated tail),
//    unless the cut falls inside a frame head (see check_clean_segment);
//  - a clean segment with one byte changed never reads past the frame holding it, and
//    that is real damage (tail = false) when non-zero bytes follow that frame;
//  - JSON that record_from_json accepts gives a record that survives
//    append_record_json → record_from_json and encode_record → decode_record unchanged.
//
// Seeds: with FLK_FUZZ_WRITE_SEEDS=DIR set, the binary writes a few valid segments,
// record encodings and JSON lines into DIR and exits (tests/fuzz/run.sh does this).
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

#include "flk/core/record.hpp"
#include "flk/util/error.hpp"
#include "flk/util/hash.hpp"
#include "flk/wal/format.hpp"
#include "flk/wal/segment.hpp"

namespace {

using flk::Record;
using flk::wal::MemorySource;
using flk::wal::SegmentReader;
using Status = SegmentReader::Status;
namespace wal = flk::wal;
namespace hash = flk::hash;

#define CHECK(cond)                                                                           \
  do {                                                                                        \
    if (!(cond)) {                                                                            \
      std::fprintf(stderr, "segment_reader_fuzz: invariant failed: %s (%s:%d)\n", #cond, __FILE__, \
                   __LINE__);                                                                 \
      std::abort();                                                                           \
    }                                                                                         \
  } while (0)

template <typename T>
T load(const char* p) {
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

template <typename T>
void store(char* p, T v) {
  std::memcpy(p, &v, sizeof v);
}

uint32_t check32(const char* p, size_t n) { return static_cast<uint32_t>(hash::xxh3_64(p, n)); }

// Recomputes the header checksum and, walking the frames by their lengths, each frame's
// head and payload checksums. Keep in step with the frame layout in flk/wal/format.hpp.
std::string fix_checksums(std::string s) {
  if (s.size() < wal::kHeaderSize) return s;
  store<uint64_t>(s.data() + wal::kHeaderChecksumOffset, hash::xxh3_64(s.data(), wal::kHeaderChecksumOffset));
  size_t pos = wal::kHeaderSize;
  while (s.size() - pos >= wal::kFrameHeadSize) {
    char* h = s.data() + pos;
    uint32_t len = load<uint32_t>(h);
    store<uint32_t>(h + 8, check32(h, 8));
    if (len > wal::kMaxFramePayload || s.size() - pos - wal::kFrameHeadSize < len) break;
    store<uint32_t>(h + 12, check32(h + wal::kFrameHeadSize, len));
    pos += wal::kFrameHeadSize + len;
  }
  return s;
}

// What a read of a segment found.
struct ReadResult {
  Status last = Status::end;
  wal::Damage damage;
  uint64_t good_end = 0;
  uint64_t records = 0;
  bool header_ok = false;
  std::vector<uint64_t> frame_ends;  // good_end() after each frame
};

// Reads seg through SegmentReader and checks the invariants above.
ReadResult read_checked(std::string_view seg) {
  MemorySource src(seg);
  hash::Sha256 sha;
  SegmentReader reader(src, "fuzz.wal", &sha);
  ReadResult res;
  bool sealed = false;
  Status st;
  while ((st = reader.next()) == Status::record || st == Status::seal) {
    CHECK(!sealed);  // nothing is returned after a seal
    CHECK(reader.header_ok());
    uint64_t off = reader.frame_offset();
    CHECK(reader.good_end() <= seg.size());
    CHECK(off >= wal::kHeaderSize && off + wal::kFrameHeadSize <= reader.good_end());
    CHECK(res.frame_ends.empty() ? off == wal::kHeaderSize : off == res.frame_ends.back());
    std::string_view frame = seg.substr(off, reader.good_end() - off);
    std::string again;
    if (st == Status::record) {
      const Record& r = reader.record();
      wal::append_record_frame(again, r);
      CHECK(again == frame);
      CHECK(wal::record_frame_size(r) == frame.size());
      std::string enc;
      flk::encode_record(enc, r);
      CHECK(enc == frame.substr(wal::kFrameHeadSize));
      CHECK(flk::encoded_size(r) == enc.size());
      std::string json;
      flk::append_record_json(json, r);
      CHECK(json.size() > 2 && json.front() == '{' && json.back() == '}');
      (void)flk::record_digest(r);
      ++res.records;
      CHECK(reader.counted().records == res.records);
      CHECK(reader.counted().first_ts <= r.ts && r.ts <= reader.counted().last_ts);
    } else {
      sealed = true;
      const wal::Seal& s = reader.seal();
      wal::append_seal_frame(again, s);
      CHECK(again == frame);
      wal::Seal s2;
      CHECK(wal::decode_seal_frame(frame, s2, nullptr));
      CHECK(s2.records == s.records && s2.first_ts == s.first_ts && s2.last_ts == s.last_ts);
      CHECK(s.records == reader.counted().records);
      CHECK(s.records == 0 || (s.first_ts == reader.counted().first_ts && s.last_ts == reader.counted().last_ts));
    }
    res.frame_ends.push_back(reader.good_end());
  }
  res.last = st;
  res.good_end = reader.good_end();
  res.header_ok = reader.header_ok();
  CHECK(res.good_end <= seg.size());
  CHECK(sha.finish() == hash::sha256(seg.substr(0, res.good_end)));
  if (reader.header_ok()) {
    const wal::Header& h = reader.header();
    CHECK(wal::encode_header(h) == seg.substr(0, wal::kHeaderSize));
    CHECK(h.sequence != 0 && flk::valid_region(h.region));
    CHECK(res.good_end >= wal::kHeaderSize);
  } else {
    CHECK(st == Status::damage && res.good_end == 0);
  }
  if (st == Status::end) {
    CHECK(reader.header_ok());
    CHECK(res.good_end == seg.size());  // a clean end consumed everything
    CHECK(reader.damage().why.empty());
    CHECK(reader.next() == Status::end);
    CHECK(reader.next() == Status::end);
  } else {
    CHECK(st == Status::damage);
    res.damage = reader.damage();
    CHECK(!res.damage.why.empty());
    CHECK(res.damage.offset == res.good_end);
    CHECK(res.damage.offset <= seg.size());
    for (int i = 0; i < 2; ++i) {
      CHECK(reader.next() == Status::damage);
      CHECK(reader.damage().offset == res.damage.offset && reader.damage().why == res.damage.why);
      CHECK(reader.good_end() == res.good_end);
    }
  }
  return res;
}

// Properties of a segment that read cleanly to its end: cuts and single-byte changes.
void check_clean_segment(std::string_view seg, const ReadResult& clean, const uint8_t* data, size_t size) {
  if (clean.frame_ends.empty()) return;
  // Two cut points: one chosen by the input, one in the middle of the last frame.
  uint64_t pick = hash::xxh3_64(data, size);
  uint64_t last_start = clean.frame_ends.size() > 1 ? clean.frame_ends[clean.frame_ends.size() - 2] : wal::kHeaderSize;
  uint64_t cuts[2] = {wal::kHeaderSize + pick % (seg.size() - wal::kHeaderSize),
                      last_start + (seg.size() - last_start) / 2};
  auto boundary_before = [&](uint64_t at) {  // the last frame boundary at or before at
    uint64_t b = wal::kHeaderSize;
    for (uint64_t e : clean.frame_ends)
      if (e <= at) b = e;
    return b;
  };
  for (uint64_t cut : cuts) {
    uint64_t kept = boundary_before(cut);
    ReadResult r = read_checked(seg.substr(0, cut));
    CHECK(r.good_end == kept);
    if (r.last == Status::damage) CHECK(r.damage.tail);
    else CHECK(cut == kept);
    // Zeros from the cut to the end (counted from the first byte that zeroing changes).
    // A head cut part way and then zeroed fails its own checksum without being all
    // zeros, which format.hpp counts as damage, not a torn tail; so the tail flag is
    // only checked when the cut is not inside a frame head.
    while (cut < seg.size() && seg[cut] == '\0') ++cut;
    if (cut == seg.size()) continue;
    kept = boundary_before(cut);
    std::string zeroed(seg);
    std::memset(zeroed.data() + cut, 0, zeroed.size() - cut);
    r = read_checked(zeroed);
    CHECK(r.last == Status::damage && r.good_end == kept);
    if (cut == kept || cut >= kept + wal::kFrameHeadSize) CHECK(r.damage.tail);
  }
  // One byte changed: the read must stop at or before the frame that holds it…
  uint64_t at = (pick >> 32) % seg.size();
  std::string changed(seg);
  changed[at] = static_cast<char>(changed[at] ^ (1 + (pick >> 24) % 255));
  uint64_t frame_start = 0;
  if (at >= wal::kHeaderSize) {
    frame_start = wal::kHeaderSize;
    for (uint64_t e : clean.frame_ends)
      if (e <= at) frame_start = e;
  }
  ReadResult r = read_checked(changed);
  CHECK(r.last == Status::damage);
  CHECK(r.good_end <= frame_start);
  // …and it is real damage, not a torn tail, when good bytes follow the changed frame.
  uint64_t frame_end = seg.size();
  for (uint64_t e : clean.frame_ends)
    if (e > at) {
      frame_end = e;
      break;
    }
  bool more = at < wal::kHeaderSize;
  for (uint64_t i = frame_end; !more && i < seg.size(); ++i) more = seg[i] != '\0';
  if (more) CHECK(!r.damage.tail);
}

// JSON → record → JSON → record is the identity on records that came from JSON.
void check_json_round_trip(const Record& r) {
  std::string json;
  flk::append_record_json(json, r);
  Record again;
  try {
    again = flk::record_from_json(json, flk::RecordDefaults{});
  } catch (const flk::Error& e) {
    std::fprintf(stderr, "segment_reader_fuzz: own JSON rejected: %s\n  %s\n", e.what(), json.c_str());
    CHECK(false);
  }
  CHECK(again == r);
  std::string enc;
  flk::encode_record(enc, r);
  Record decoded;
  std::string why;
  CHECK(flk::decode_record(enc, decoded, &why));
  CHECK(decoded == r);
}

// ---------------------------------------------------------------------------------------
// Seeds.

Record seed_record(int i) {
  Record r;
  char id[65];
  std::snprintf(id, sizeof id, "%064x", 0x5eed0000 + i);
  r.pcs_id = id;
  r.tenant_id = "tenant-" + std::to_string(i % 3);
  r.outcome = static_cast<flk::Outcome>(1 + i % 3);
  r.ts = 1'714'521'600'000'000'000 + static_cast<int64_t>(i) * 1'000'001;
  r.region = "us-east-1";
  if (i % 2 == 0) r.params = "model=fraud-v7;score=0." + std::to_string(i);
  if (i % 3 != 2) r.payload = R"({"amount":)" + std::to_string(1000 + i) + R"(,"currency":"EUR"})";
  return r;
}

std::string seed_segment(uint64_t seq, int first, int n, bool seal, uint32_t flags = 0) {
  wal::Header h;
  h.sequence = seq;
  h.flags = flags;
  h.created = 1'714'521'600'000'000'000;
  h.region = "us-east-1";
  if (seq > 1) h.prev = hash::sha256("previous segment");
  if (flags & wal::kFlagReencoded) h.source = hash::sha256("source segment");
  std::string s = wal::encode_header(h);
  wal::Seal counts;
  for (int i = first; i < first + n; ++i) {
    Record r = seed_record(i);
    wal::append_record_frame(s, r);
    counts.first_ts = counts.records ? std::min(counts.first_ts, r.ts) : r.ts;
    counts.last_ts = counts.records ? std::max(counts.last_ts, r.ts) : r.ts;
    ++counts.records;
  }
  if (seal) wal::append_seal_frame(s, counts);
  return s;
}

void write_seeds(const std::filesystem::path& dir) {
  std::filesystem::create_directories(dir);
  auto put = [&](const std::string& name, const std::string& bytes) {
    std::ofstream f(dir / name, std::ios::binary | std::ios::trunc);
    f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    if (!f) {
      std::fprintf(stderr, "segment_reader_fuzz: error: cannot write seed '%s'\n", (dir / name).c_str());
      std::exit(1);
    }
  };
  put("segment-empty.open", seed_segment(1, 0, 0, false));
  put("segment-sealed-empty.wal", seed_segment(1, 0, 0, true));
  put("segment-3.open", seed_segment(1, 0, 3, false));
  put("segment-6.wal", seed_segment(2, 3, 6, true));
  put("segment-reencoded.wal", seed_segment(7, 10, 2, true, wal::kFlagReencoded));
  std::string torn = seed_segment(3, 20, 4, false);
  put("segment-torn.open", torn.substr(0, torn.size() - 7));
  for (int i = 0; i < 3; ++i) {
    std::string enc;
    flk::encode_record(enc, seed_record(i));
    put("record-" + std::to_string(i) + ".bin", enc);
    std::string json;
    flk::append_record_json(json, seed_record(i));
    put("record-" + std::to_string(i) + ".json", json);
  }
  put("record-offset.json",
      R"({"pcs_id":"p-1","tenant_id":"t\u00e9","outcome":"rejected","ts":"2024-05-01T02:00:00.5+02:00","params":null,"payload":{"b":[1,2.5,-0,true,null],"a":"\n"}})");
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  if (const char* dir = std::getenv("FLK_FUZZ_WRITE_SEEDS")) {
    write_seeds(dir);
    std::exit(0);
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);

  // 1. The bytes as a segment.
  ReadResult raw = read_checked(input);
  if (raw.last == Status::end) check_clean_segment(input, raw, data, size);

  // 2. The same with every checksum made right.
  std::string fixed = fix_checksums(std::string(input));
  if (fixed != input) {
    ReadResult r = read_checked(fixed);
    if (r.last == Status::end) check_clean_segment(fixed, r, data, size);
  }

  // 3. The bytes as one record's canonical encoding.
  Record rec;
  std::string why;
  if (flk::decode_record(input, rec, &why)) {
    std::string enc;
    flk::encode_record(enc, rec);
    CHECK(enc == input);
    std::string json;
    flk::append_record_json(json, rec);
  } else {
    CHECK(!why.empty());
  }

  // 4. The bytes as one JSON Lines record.
  try {
    Record r = flk::record_from_json(input, flk::RecordDefaults{"us-east-1", 1'714'521'600'000'000'000});
    check_json_round_trip(r);
  } catch (const flk::Error& e) {
    CHECK(e.code() == flk::Code::data);
  }
  return 0;
}
