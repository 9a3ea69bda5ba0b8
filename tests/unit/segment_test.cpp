#include <doctest/doctest.h>

#include <cstring>
#include <vector>

#include "flk/wal/segment.hpp"
#include "test_util.hpp"

using namespace flk;
using namespace flk::wal;

namespace {

std::string make_segment(int records, bool sealed, uint64_t seq = 1) {
  Header h;
  h.sequence = seq;
  h.created = 5;
  h.region = "us-east-1";
  h.prev[0] = 0xab;
  std::string s = encode_header(h);
  Seal counts;
  for (int i = 0; i < records; ++i) {
    Record r = test::make_record(i);
    append_record_frame(s, r);
    counts.first_ts = i == 0 ? r.ts : std::min(counts.first_ts, r.ts);
    counts.last_ts = i == 0 ? r.ts : std::max(counts.last_ts, r.ts);
    ++counts.records;
  }
  if (sealed) append_seal_frame(s, counts);
  return s;
}

struct ReadResult {
  std::vector<Record> records;
  bool sealed = false;
  SegmentReader::Status last;
  Damage damage;
  uint64_t good_end = 0;
};

ReadResult read_all(std::string_view bytes) {
  MemorySource src(bytes);
  SegmentReader r(src, "test");
  ReadResult out;
  for (;;) {
    out.last = r.next();
    if (out.last == SegmentReader::Status::record) out.records.push_back(r.record());
    else if (out.last == SegmentReader::Status::seal) out.sealed = true;
    else break;
  }
  out.damage = r.damage();
  out.good_end = r.good_end();
  CHECK(r.next() == out.last);  // the end is sticky
  return out;
}

}  // namespace

TEST_CASE("header round trip and every header defect") {
  Header h;
  h.sequence = 42;
  h.flags = kFlagReencoded;
  h.created = 123;
  h.region = "eu-west-1";
  h.source[31] = 7;
  std::string b = encode_header(h);
  REQUIRE(b.size() == kHeaderSize);
  Header back;
  std::string why;
  REQUIRE(decode_header(b, back, &why));
  CHECK(back.sequence == 42);
  CHECK(back.flags == kFlagReencoded);
  CHECK(back.region == "eu-west-1");
  CHECK(back.source == h.source);
  CHECK_FALSE(decode_header(b.substr(0, 100), back, &why));
  CHECK(why.find("truncated header") == 0);
  for (size_t i = 0; i < kHeaderSize; ++i) {
    std::string d = b;
    d[i] ^= 0x20;
    CAPTURE(i);
    CHECK_FALSE(decode_header(d, back, &why));
  }
  std::string magic = b;
  magic[0] = 'X';
  decode_header(magic, back, &why);
  CHECK(why == "not a WAL segment (bad magic)");
}

TEST_CASE("segments round-trip, sealed and open") {
  auto r = read_all(make_segment(10, true));
  CHECK(r.last == SegmentReader::Status::end);
  CHECK(r.records.size() == 10);
  CHECK(r.sealed);
  CHECK(r.records[3] == test::make_record(3));
  auto o = read_all(make_segment(4, false));
  CHECK(o.last == SegmentReader::Status::end);
  CHECK(o.records.size() == 4);
  CHECK_FALSE(o.sealed);
  auto e = read_all(make_segment(0, true));
  CHECK(e.sealed);
  CHECK(e.records.empty());
}

TEST_CASE("a torn tail of every length is a tail, and nothing past the last good frame is returned") {
  std::string full = make_segment(5, false);
  std::string four = make_segment(4, false);
  for (size_t cut = four.size() + 1; cut < full.size(); ++cut) {
    CAPTURE(cut);
    auto r = read_all(std::string_view(full).substr(0, cut));
    CHECK(r.last == SegmentReader::Status::damage);
    CHECK(r.damage.tail);
    CHECK(r.damage.offset == four.size());
    CHECK(r.records.size() == 4);
    CHECK(r.good_end == four.size());
  }
  // Zero-filled tail (the file grew, the data never landed).
  auto z = read_all(four + std::string(4096, '\0'));
  CHECK(z.last == SegmentReader::Status::damage);
  CHECK(z.damage.tail);
  CHECK(z.records.size() == 4);
  // The last frame's bytes half-zeroed.
  std::string half = full;
  for (size_t i = four.size() + 20; i < full.size(); ++i) half[i] = 0;
  auto h = read_all(half);
  CHECK(h.damage.tail);
  CHECK(h.damage.why == "frame checksum mismatch");
}

TEST_CASE("damage in the middle is damage, with its offset, and no damaged record is returned") {
  std::string seg = make_segment(6, true);
  std::string two = make_segment(2, false);
  std::string three = make_segment(3, false);
  // Flip each byte of the third frame: the first two records come back, then damage at its offset.
  for (size_t i = two.size(); i < three.size(); ++i) {
    std::string d = seg;
    d[i] ^= 0x01;
    CAPTURE(i);
    auto r = read_all(d);
    REQUIRE(r.last == SegmentReader::Status::damage);
    CHECK_FALSE(r.damage.tail);
    CHECK(r.damage.offset == two.size());
    CHECK(r.records.size() == 2);
  }
  // A damaged seal frame, a missing seal, a frame after the seal.
  std::string s = seg;
  s[s.size() - 3] ^= 1;
  auto bad_seal = read_all(s);
  CHECK(bad_seal.records.size() == 6);
  CHECK_FALSE(bad_seal.sealed);
  CHECK(bad_seal.last == SegmentReader::Status::damage);
  std::string after = seg;
  append_record_frame(after, test::make_record(99));
  auto a = read_all(after);
  CHECK(a.damage.why == "frame after the seal");
  CHECK_FALSE(a.damage.tail);
}

TEST_CASE("a seal whose counts disagree with the records is damage") {
  std::string s = make_segment(3, false);
  Seal wrong{2, 0, 0};
  append_seal_frame(s, wrong);
  auto r = read_all(s);
  CHECK(r.last == SegmentReader::Status::damage);
  CHECK(r.damage.why.find("seal says 2 records") == 0);
}

TEST_CASE("a valid frame holding an invalid record is damage, not a tail") {
  std::string s = make_segment(1, false);
  size_t at = s.size();
  append_record_frame(s, test::make_record(1));
  s[at + kFrameHeadSize] = 9;  // the record's version byte; then re-checksum the frame as a writer would
  uint32_t len = static_cast<uint32_t>(s.size() - at - kFrameHeadSize);
  auto sum = static_cast<uint32_t>(hash::xxh3_64(s.data() + at + kFrameHeadSize, len));
  std::memcpy(s.data() + at + 12, &sum, 4);
  auto res = read_all(s);
  CHECK(res.last == SegmentReader::Status::damage);
  CHECK_FALSE(res.damage.tail);
  CHECK(res.damage.offset == at);
  CHECK(res.damage.why == "invalid record: unknown record version");
}

TEST_CASE("segment file names") {
  CHECK(segment_file_name(42, true) == "0000000000000042.wal");
  CHECK(segment_file_name(42, false) == "0000000000000042.open");
  bool sealed = false;
  CHECK(parse_segment_file_name("0000000000000042.wal", &sealed) == 42u);
  CHECK(sealed);
  CHECK(parse_segment_file_name("0000000000000042.open", &sealed) == 42u);
  CHECK_FALSE(sealed);
  CHECK_FALSE(parse_segment_file_name("0000000000000042.wal.sha256", &sealed));
  CHECK_FALSE(parse_segment_file_name("0000000000000000.wal", &sealed));
  CHECK_FALSE(parse_segment_file_name("00000000000000x2.wal", &sealed));
  hash::Digest d{};
  d[0] = 1;
  hash::Digest back{};
  CHECK(parse_digest_sidecar(digest_sidecar_line(d, "x.wal"), back));
  CHECK(back == d);
}
