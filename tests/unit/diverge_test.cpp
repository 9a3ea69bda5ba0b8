// flk::diverge: the streaming merge of stores, findings, plans and reconciliation
// (diverge.hpp), and bucketed digests (digest.hpp). Stores on SQLite, and PostgreSQL /
// Redis when the test servers run, mixed.
#include <doctest/doctest.h>

#include <cstdio>
#include <map>
#include <random>

#include <nlohmann/json.hpp>

#include "flk/diverge/digest.hpp"
#include "flk/diverge/diverge.hpp"
#include "flk/util/error.hpp"
#include "flk/util/fs.hpp"
#include "flk/util/hash.hpp"
#include "test_util.hpp"

using namespace flk;
using namespace flk::diverge;
using flk::test::rec;

namespace {

// Three regions' stores: on every back end there is, one region each (SQLite fills in).
std::vector<RegionStore> three_stores(const std::filesystem::path& dir) {
  auto urls = flk::test::store_urls(dir);
  std::vector<RegionStore> out;
  const char* regions[] = {"eu-west-1", "us-east-1", "us-west-2"};
  for (int i = 0; i < 3; ++i) {
    std::string url = i < static_cast<int>(urls.size()) ? urls[i].second : flk::test::store_urls(dir).front().second;
    out.push_back({regions[i], store::open(url), url});
  }
  return out;
}

std::vector<Finding> findings_of(std::vector<RegionStore>& s, const Expect& e = {}) {
  std::vector<Finding> out;
  scan(s, e, nullptr, kDefaultBuckets, [&](const Finding& f) { out.push_back(f); });
  return out;
}

}  // namespace

TEST_CASE("diverge: stores that differ only where outcomes agree (another ts, origin) find nothing there") {
  // The scan compares outcomes; a pcs_id whose outcomes differ (or that a store lacks) is
  // looked up, and only a different outcome (or a record missing where expected) is a
  // finding. Thousands of records that differ in all but the outcome, with the real
  // conflicts spread among them.
  flk::test::TempDir dir;
  auto s = three_stores(dir.path());
  int64_t t = 1'700'000'000'000'000'000;
  std::vector<Record> a, b;
  std::vector<std::string> want;
  for (int i = 0; i < 9000; ++i) {
    std::string id = fmt::format("id-{:05}", i);
    a.push_back(rec(id, Outcome::accepted, t + i, "us-east-1"));
    if (i % 1000 == 7) {
      b.push_back(rec(id, Outcome::rejected, t + i + 1, "us-west-2"));  // a conflict
      want.push_back(id);
    } else {
      b.push_back(rec(id, Outcome::accepted, t + i + 1, "us-west-2"));  // same outcome, another write
    }
  }
  s[0].store->apply(a, nullptr);
  s[1].store->apply(a, nullptr);
  s[2].store->apply(b, nullptr);
  auto f = findings_of(s);
  std::vector<std::string> got;
  for (auto& x : f) {
    got.push_back(x.pcs_id);
    CHECK(x.kind == Finding::Kind::conflict);
    REQUIRE(x.stored[2]);
    CHECK(x.stored[2]->record.outcome == Outcome::rejected);
    CHECK(x.stored[2]->digest == record_digest(x.stored[2]->record));
  }
  CHECK(got == want);  // exactly the 9 conflicts, in order
}

TEST_CASE("diverge: the merge finds conflicts and missing pcs_ids across stores, in pcs_id order") {
  flk::test::TempDir dir;
  auto s = three_stores(dir.path());
  int64_t t = 1'700'000'000'000'000'000;
  std::vector<Record> common;
  for (int i = 0; i < 5000; ++i) common.push_back(rec(fmt::format("id-{:05}", i), Outcome::accepted, t + i));
  for (auto& r : s) r.store->apply(common, nullptr);
  CHECK(findings_of(s).empty());

  // A conflict (us-west-2 decided otherwise, earlier), a pcs_id eu-west-1 lacks, one only
  // us-east-1 has, and one before and after every other id.
  std::vector<Record> w = {rec("id-00042", Outcome::rejected, t - 5, "us-west-2")};
  s[2].store->apply(w, nullptr);
  std::vector<Record> e = {rec("id-05000", Outcome::escalated, t, "us-east-1"), rec("a-first", Outcome::accepted, t),
                           rec("zz-last", Outcome::accepted, t)};
  s[1].store->apply(e, nullptr);
  s[2].store->apply(std::vector<Record>{e[0], e[1], e[2]}, nullptr);

  auto f = findings_of(s);
  REQUIRE(f.size() == 4);
  CHECK(f[0].pcs_id == "a-first");
  CHECK(f[0].kind == Finding::Kind::missing);
  CHECK_FALSE(f[0].stored[0]);
  CHECK(f[1].pcs_id == "id-00042");
  CHECK(f[1].kind == Finding::Kind::conflict);
  CHECK(f[1].stored[2]->record.outcome == Outcome::rejected);
  CHECK(f[2].pcs_id == "id-05000");
  CHECK(f[3].pcs_id == "zz-last");
  CHECK(finding_json(f[1], s).find(R"("us-west-2":{"outcome":"rejected")") != std::string::npos);

  // Only the buckets asked for.
  std::vector<uint32_t> b = {bucket_of("id-00042", 64)};
  std::vector<Finding> only;
  scan(s, {}, &b, 64, [&](const Finding& x) { only.push_back(x); });
  for (const auto& x : only) CHECK(bucket_of(x.pcs_id, 64) == b[0]);
  CHECK(std::any_of(only.begin(), only.end(), [](const Finding& x) { return x.pcs_id == "id-00042"; }));

  // Reconcile: the first write (us-west-2's, earlier) everywhere, evidence kept.
  auto plans = plan(s, {}, f);
  REQUIRE(plans.size() == 4);
  CHECK(plans[1].winner.record.outcome == Outcome::rejected);
  CHECK(plans[1].install == std::vector<bool>{true, true, false});
  CHECK(plans[1].records.size() == 2);
  diverge::apply(s, plans);
  CHECK(findings_of(s).empty());
  for (auto& r : s) {
    auto ev = r.store->evidence(std::vector<std::string>{"id-00042"});
    CHECK(ev.size() == 2);
  }
  // A second plan of the same (now equal) stores has nothing to do.
  CHECK(plan(s, {}, findings_of(s)).empty());
}

TEST_CASE("diverge: SQLite stores are compared in ranges, in parallel; the findings are a model's, in order") {
  // Random hex pcs_ids (ranges by their first digit), some with a common prefix (one
  // range holds most), a store that lacks thousands (more suspects per range than a
  // lookup batch and the chunks a range may buffer), conflicts everywhere.
  for (std::string prefix : {"", "pcs-7"}) {
    CAPTURE(prefix);
    flk::test::TempDir dir;
    std::vector<RegionStore> s;
    for (const char* region : {"eu-west-1", "us-east-1", "us-west-2"}) {
      std::string url = "sqlite://" + (dir.path() / (std::string(region) + ".db")).string();
      s.push_back({region, store::open(url), url});
    }
    std::mt19937_64 rnd(42);
    int64_t t = 1'700'000'000'000'000'000;
    std::vector<Record> a, b, c;
    std::map<std::string, Finding::Kind> want;
    for (int i = 0; i < 60000; ++i) {
      std::string id = prefix + fmt::format("{:016x}", rnd());
      Record r = rec(id, Outcome::accepted, t + i);
      a.push_back(r);
      if (i % 3 != 0) b.push_back(r);  // us-east-1 lacks a third: missing
      else want[id] = Finding::Kind::missing;
      if (i % 97 == 0) {  // us-west-2 decided otherwise: a conflict (whatever else)
        Record other = rec(id, Outcome::rejected, t + i + 1, "us-west-2");
        c.push_back(other);
        want[id] = Finding::Kind::conflict;
      } else {
        c.push_back(r);
      }
    }
    s[0].store->apply(a, nullptr);
    s[1].store->apply(b, nullptr);
    s[2].store->apply(c, nullptr);
    std::vector<std::pair<std::string, Finding::Kind>> got;
    ScanStats st = scan(s, {}, nullptr, kDefaultBuckets, [&](const Finding& f) { got.emplace_back(f.pcs_id, f.kind); });
    CHECK(got == std::vector<std::pair<std::string, Finding::Kind>>(want.begin(), want.end()));  // in order
    CHECK(st.ids == 60000);
    CHECK(st.conflicts + st.missing == want.size());
    // Only some buckets: the same findings, filtered.
    std::vector<uint32_t> bk = {3, 17, 40};
    std::vector<std::string> only, only_want;
    scan(s, {}, &bk, 64, [&](const Finding& f) { only.push_back(f.pcs_id); });
    for (auto& [id, kind] : want)
      if (std::binary_search(bk.begin(), bk.end(), bucket_of(id, 64))) only_want.push_back(id);
    CHECK(only == only_want);
    // The consumer stops at the first finding: the workers stop and are joined.
    CHECK_THROWS_AS(scan(s, {}, nullptr, kDefaultBuckets, [](const Finding&) { throw std::runtime_error("stop"); }),
                    std::runtime_error);
  }
}

TEST_CASE("diverge: a store's scan error reaches the caller; a scan stopped early does not hang") {
  flk::test::TempDir dir;
  auto s = three_stores(dir.path());
  std::vector<Record> many;
  for (int i = 0; i < 20000; ++i) many.push_back(rec(fmt::format("x-{:06}", i), Outcome::accepted, 1));
  s[0].store->apply(many, nullptr);
  // The consumer throws at the first finding: the producer threads must be stopped and joined.
  CHECK_THROWS_AS(scan(s, {}, nullptr, kDefaultBuckets, [](const Finding&) { throw std::runtime_error("stop"); }),
                  std::runtime_error);
}

TEST_CASE("diverge: selective routes decide what is missing") {
  config::Config c = config::parse(
      "region: us-east-1\ncrr:\n  enabled: true\n  replicationMode: selective\n  policies:\n"
      "    - {tenantID: t-west, targetRegions: [us-west-2]}\n",
      "x");
  Expect e = Expect::from_config(c);
  CHECK(e.expected(rec("a", Outcome::accepted, 1, "us-east-1", "t-west"), "us-west-2"));
  CHECK_FALSE(e.expected(rec("a", Outcome::accepted, 1, "us-east-1", "t-west"), "eu-west-1"));
  CHECK(e.expected(rec("a", Outcome::accepted, 1, "us-east-1", "t-none"), "us-east-1"));
  CHECK_FALSE(e.expected(rec("a", Outcome::accepted, 1, "us-east-1", "t-none"), "us-west-2"));
  CHECK(Expect{}.expected(rec("a", Outcome::accepted, 1, "us-east-1", "t-none"), "anywhere"));
}

TEST_CASE("digest: order-free, back-end-free; written and read back; compare names the buckets") {
  flk::test::TempDir dir;
  auto s = three_stores(dir.path());
  std::vector<Record> recs;
  for (int i = 0; i < 3000; ++i) recs.push_back(flk::test::make_record(i));
  std::vector<Record> shuffled = recs;
  std::shuffle(shuffled.begin(), shuffled.end(), std::mt19937(7));
  s[0].store->apply(recs, nullptr);
  s[1].store->apply(shuffled, nullptr);
  s[2].store->apply(shuffled, nullptr);
  Digest a = digest_store(*s[0].store, 256, "eu-west-1");
  Digest b = digest_store(*s[1].store, 256, "us-east-1");
  CHECK(a.records == 3000);
  CHECK(compare(a, b).empty());

  // One outcome changed in the third store: exactly its bucket differs.
  std::vector<Record> one = {recs[1234]};
  one[0].outcome = Outcome::rejected;
  one[0].ts -= 1'000'000;
  s[2].store->apply(one, nullptr);
  Digest c = digest_store(*s[2].store, 256, "us-west-2");
  CHECK(compare(a, c) == std::vector<uint32_t>{bucket_of(recs[1234].pcs_id, 256)});

  // The file round trip; carries in the 128-bit sums survive it.
  auto path = dir / "c.digest";
  fs::write_file_atomic(path, digest_bytes(c));
  Digest back = read_digest(path);
  CHECK(back.records == c.records);
  CHECK(back.buckets == 256);
  CHECK(compare(back, c).empty());
  CHECK_THROWS_AS(compare(a, digest_store(*s[0].store, 128, "x")), Error);
}

namespace {

// The message of the Error(data) read_digest throws for `file`; FAILs when it reads it.
std::string refusal(const std::filesystem::path& file) {
  try {
    read_digest(file);
  } catch (const Error& e) {
    CHECK(e.code() == Code::data);
    std::string what = e.what();
    CHECK_MESSAGE(what.find("digest '" + file.string() + "'") != std::string::npos, what);
    return what;
  }
  FAIL("accepted: " << file);
  return {};
}

// A digest of `buckets` buckets, some empty, with counts of every varint length (1 to 10
// bytes) and random sums.
Digest random_digest(uint32_t buckets, uint32_t seed) {
  std::mt19937_64 rnd(seed);
  Digest d;
  d.buckets = buckets;
  d.b.resize(buckets);
  d.region = "us-west-2";
  d.store = "sqlite:///tmp/x.db";
  for (uint32_t i = 0; i < buckets; ++i) {
    if (rnd() % 3 == 0) continue;  // empty
    int bits = static_cast<int>(rnd() % 64) + 1;
    d.b[i] = {(rnd() >> (64 - bits)) | 1, rnd(), rnd()};
    d.records += d.b[i].count;
  }
  return d;
}

// The header line of a digest file, parsed, and its body.
std::pair<nlohmann::json, std::string> split(const std::string& bytes) {
  size_t nl = bytes.find('\n');
  REQUIRE(nl != std::string::npos);
  return {nlohmann::json::parse(bytes.substr(0, nl)), bytes.substr(nl + 1)};
}

}  // namespace

TEST_CASE("digest: format version 2: header, varint counts, 16-byte sums; round trip") {
  flk::test::TempDir dir;
  for (uint32_t seed = 1; seed <= 20; ++seed) {
    Digest d = random_digest(seed == 1 ? 1 : 100 + seed * 37, seed);
    d.b[0] = seed % 2 ? Bucket{} : Bucket{UINT64_MAX, UINT64_MAX, 0};  // 10-byte varint (or empty)
    d.records = 0;
    for (const auto& b : d.b) d.records += b.count;
    std::string bytes = digest_bytes(d);
    auto [h, body] = split(bytes);
    CHECK(h["format"] == "flk-diverge-digest");
    CHECK(h["version"] == 2);
    CHECK(h["buckets"] == d.buckets);
    CHECK(h["records"] == d.records);
    CHECK(h["body_bytes"] == body.size());
    CHECK(h["body_sha256"] == hash::to_hex(hash::sha256(body)));
    // The body's size: each count's LEB128 length, 16 bytes a non-empty bucket.
    size_t expect = 0;
    for (const auto& b : d.b) {
      for (uint64_t v = b.count; v >= 0x80; v >>= 7) ++expect;
      expect += 1 + (b.count ? 16 : 0);
    }
    CHECK(body.size() == expect);
    auto path = dir / "r.digest";
    fs::write_file_atomic(path, bytes);
    Digest back = read_digest(path);
    CHECK(back.buckets == d.buckets);
    CHECK(back.records == d.records);
    CHECK(back.region == d.region);
    CHECK(back.store == d.store);
    CHECK(back.b == d.b);
  }

  // The layout, byte for byte: an empty bucket, a count of 300 (varint ac 02) with its
  // sum big-endian, an empty bucket.
  Digest d;
  d.buckets = 3;
  d.b = {{}, {300, 0x0102030405060708, 0x090a0b0c0d0e0f10}, {}};
  d.records = 300;
  CHECK(split(digest_bytes(d)).second ==
        std::string("\x00\xac\x02\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f\x10\x00", 20));
}

TEST_CASE("digest: version 1 text files are still read") {
  flk::test::TempDir dir;
  auto path = dir / "v1.digest";
  fs::write_file_atomic(path,
                        R"({"format":"flk-diverge-digest","version":1,"buckets":4,"records":301,"region":"us-east-1",)"
                        R"("store":"sqlite:///x.db","created":"2026-11-20T00:00:00Z"})"
                        "\n1 300 0102030405060708090a0b0c0d0e0f10\n3 1 ffffffffffffffff0000000000000001\n");
  Digest d = read_digest(path);
  CHECK(d.buckets == 4);
  CHECK(d.records == 301);
  CHECK(d.region == "us-east-1");
  CHECK(d.store == "sqlite:///x.db");
  CHECK(d.b == std::vector<Bucket>{{}, {300, 0x0102030405060708, 0x090a0b0c0d0e0f10}, {}, {1, UINT64_MAX, 1}});
  // The same digest in version 2 compares equal.
  fs::write_file_atomic(dir / "v2.digest", digest_bytes(d));
  CHECK(compare(d, read_digest(dir / "v2.digest")).empty());

  // Damage in a version 1 file: named with the line.
  fs::write_file_atomic(dir / "bad.digest", fs::read_file(path) + "17 x y\n");
  CHECK(refusal(dir / "bad.digest").find("line 4") != std::string::npos);
}

TEST_CASE("digest: a truncated, extended or altered version 2 body is refused, naming the file and the fault") {
  flk::test::TempDir dir;
  Digest d = random_digest(500, 99);
  d.b[7] = {200, 1, 2};  // a 2-byte varint
  d.records = 0;
  for (const auto& b : d.b) d.records += b.count;
  std::string good = digest_bytes(d);
  auto [h, body] = split(good);
  size_t header_len = good.size() - body.size();
  auto bad = dir / "bad.digest";
  auto write = [&](const std::string& bytes) { fs::write_file_atomic(bad, bytes); };

  write(good.substr(0, good.size() - 1));
  CHECK(refusal(bad).find(fmt::format("body is {} bytes, the header says {}", body.size() - 1, body.size())) !=
        std::string::npos);
  write(good.substr(0, header_len));  // the header alone
  CHECK(refusal(bad).find(fmt::format("body is 0 bytes, the header says {}", body.size())) != std::string::npos);
  write(good.substr(0, header_len - 1));  // not even its newline
  CHECK(refusal(bad).find("body is 0 bytes") != std::string::npos);
  write(good + "\n");
  CHECK(refusal(bad).find(fmt::format("body is {} bytes, the header says {}", body.size() + 1, body.size())) !=
        std::string::npos);
  // One bit flipped anywhere in the body: in a count, a sum, the last byte.
  for (size_t at : {size_t{0}, size_t{1}, body.size() / 2, body.size() - 1}) {
    std::string flipped = good;
    flipped[header_len + at] ^= 0x10;
    write(flipped);
    CHECK(refusal(bad).find("the body's SHA-256 is") != std::string::npos);
  }
  // The header edited: another bucket count or record count (the body no longer fits).
  nlohmann::json h2 = h;
  h2["buckets"] = 499;
  write(h2.dump() + "\n" + body);
  CHECK(refusal(bad).find("after the last bucket") != std::string::npos);
  h2["buckets"] = 501;
  write(h2.dump() + "\n" + body);
  CHECK(refusal(bad).find("the body ends at byte") != std::string::npos);
  h2 = h;
  h2["records"] = d.records + 1;
  write(h2.dump() + "\n" + body);
  CHECK(refusal(bad).find("records") != std::string::npos);
  h2 = h;
  h2["body_sha256"] = "xyz";
  write(h2.dump() + "\n" + body);
  CHECK(refusal(bad).find("line 1: body_sha256") != std::string::npos);
  h2 = h;
  h2.erase("body_bytes");
  write(h2.dump() + "\n" + body);
  CHECK(refusal(bad).find("line 1:") != std::string::npos);
  h2 = h;
  h2["version"] = 3;
  write(h2.dump() + "\n" + body);
  CHECK(refusal(bad).find("unknown version 3") != std::string::npos);
  // A body that matches its header's length and checksum but not the layout: a count
  // whose sum is cut short, a varint of more than 64 bits.
  auto with_body = [&](uint32_t buckets, const std::string& b) {
    nlohmann::json x = h;
    x["buckets"] = buckets;
    x["records"] = 5;
    x["body_bytes"] = b.size();
    x["body_sha256"] = hash::to_hex(hash::sha256(b));
    write(x.dump() + "\n" + b);
  };
  with_body(1, std::string("\x05", 1) + std::string(15, 'x'));
  CHECK(refusal(bad).find("in bucket 0's sum") != std::string::npos);
  with_body(1, std::string(9, '\xff') + "\x02" + std::string(16, 'x'));
  CHECK(refusal(bad).find("exceeds 64 bits") != std::string::npos);
  write("");
  CHECK(refusal(bad).find("empty") != std::string::npos);
}

TEST_CASE("digest: bucket lists from the command line and from compare's output") {
  flk::test::TempDir dir;
  CHECK(parse_bucket_list("5,1,5,3", 10) == std::vector<uint32_t>{1, 3, 5});
  CHECK_THROWS_AS(parse_bucket_list("1,,2", 10), Error);
  CHECK_THROWS_AS(parse_bucket_list("10", 10), Error);
  CHECK_THROWS_AS(parse_bucket_list("-1", 10), Error);
  fs::write_file_atomic(dir / "l", "{\"bucket\":7,\"buckets\":10}\n\n2\n");
  CHECK(parse_bucket_list("@" + (dir / "l").string(), 10) == std::vector<uint32_t>{2, 7});
  CHECK_THROWS_AS(parse_bucket_list("@" + (dir / "l").string(), 20), Error);  // made with 10 buckets
}

TEST_CASE("extract: the winners and evidence of some buckets, from every back end, into a new SQLite store file") {
  flk::test::TempDir dir;
  constexpr uint32_t kBuckets = 64;
  const std::vector<uint32_t> list = {0, 5, 17, 40, 63};
  auto wanted = [&](std::string_view id) {
    return std::binary_search(list.begin(), list.end(), bucket_of(id, kBuckets));
  };
  int n = 0;
  for (const auto& [name, url] : flk::test::store_urls(dir.path())) {
    CAPTURE(name);
    auto from = store::open(url);
    std::vector<Record> recs;
    for (int i = 0; i < 2000; ++i) recs.push_back(flk::test::make_record(i));
    from->apply(recs, nullptr);
    // Earlier writes with another outcome for every 50th: conflicts, with evidence.
    std::vector<Record> earlier;
    for (int i = 0; i < 2000; i += 50) {
      Record r = flk::test::make_record(i, "eu-west-1", Outcome::rejected);
      r.ts -= 1'000'000;
      earlier.push_back(r);
    }
    from->apply(earlier, nullptr);

    std::vector<store::Stored> want_rows;
    from->scan([&](const store::Stored& s) {
      if (wanted(s.record.pcs_id)) want_rows.push_back(s);
    });
    std::vector<store::Evidence> want_evidence;
    from->scan_evidence([&](const store::Evidence& e) {
      if (wanted(e.record.pcs_id)) want_evidence.push_back(e);
    });
    REQUIRE(want_rows.size() > 50);
    REQUIRE(!want_evidence.empty());

    auto out = dir / ("x" + std::to_string(++n) + ".db");
    Extract x = extract_buckets(*from, list, kBuckets, out);
    CHECK(x.records == want_rows.size());
    CHECK(x.evidence == want_evidence.size());
    CHECK(x.bytes == std::filesystem::file_size(out));
    CHECK(!std::filesystem::exists(out.string() + "-wal"));
    auto copy = store::open("sqlite://" + out.string());
    std::vector<store::Stored> got_rows;
    copy->scan([&](const store::Stored& s) { got_rows.push_back(s); });
    std::vector<store::Evidence> got_evidence;
    copy->scan_evidence([&](const store::Evidence& e) { got_evidence.push_back(e); });
    REQUIRE(got_rows.size() == want_rows.size());
    for (size_t i = 0; i < got_rows.size(); ++i) {
      CHECK(got_rows[i].record == want_rows[i].record);
      CHECK(got_rows[i].digest == want_rows[i].digest);
    }
    REQUIRE(got_evidence.size() == want_evidence.size());
    for (size_t i = 0; i < got_evidence.size(); ++i) {
      CHECK(got_evidence[i].record == want_evidence[i].record);
      CHECK(got_evidence[i].digest == want_evidence[i].digest);
    }
    // Marked with its buckets: compared only over them.
    CHECK(copy->meta("extract") == extract_mark(list, kBuckets));
    CHECK_NOTHROW(check_extract(*copy, "x", &list, kBuckets));
    for (const std::vector<uint32_t>& other : {std::vector<uint32_t>{0, 5, 17, 40}, std::vector<uint32_t>{0, 5, 17, 40, 62}}) {
      try {
        check_extract(*copy, "x", &other, kBuckets);
        FAIL("another bucket list accepted");
      } catch (const Error& e) {
        CHECK(e.code() == Code::usage);
      }
    }
    CHECK_THROWS_AS(check_extract(*copy, "x", nullptr, kBuckets), Error);
    CHECK_THROWS_AS(check_extract(*copy, "x", &list, kBuckets * 2), Error);
    CHECK_NOTHROW(check_extract(*from, "x", nullptr, kBuckets));  // a store, not an extract
    copy.reset();

    // Never over an existing file, which stays as it was; nothing left beside it.
    try {
      extract_buckets(*from, {1}, kBuckets, out);
      FAIL("extracted over an existing file");
    } catch (const Error& e) {
      CHECK(e.code() == Code::cant_create);
    }
    CHECK(std::filesystem::file_size(out) == x.bytes);
    for (const auto& entry : std::filesystem::directory_iterator(dir.path()))
      CHECK_MESSAGE(entry.path().filename().string().find(".extract-") == std::string::npos, entry.path());
  }
}
