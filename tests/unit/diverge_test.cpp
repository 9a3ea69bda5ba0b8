// flk::diverge: the streaming merge of stores, findings, plans and reconciliation
// (diverge.hpp), and bucketed digests (digest.hpp). Stores on SQLite, and PostgreSQL /
// Redis when the test servers run, mixed.
#include <doctest/doctest.h>

#include <cstdio>
#include <random>

#include "flk/diverge/digest.hpp"
#include "flk/diverge/diverge.hpp"
#include "flk/util/error.hpp"
#include "flk/util/fs.hpp"
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
    out.push_back({regions[i], store::open(url)});
  }
  return out;
}

std::vector<Finding> findings_of(std::vector<RegionStore>& s, const Expect& e = {}) {
  std::vector<Finding> out;
  scan(s, e, nullptr, kDefaultBuckets, [&](const Finding& f) { out.push_back(f); });
  return out;
}

}  // namespace

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
  fs::write_file_atomic(path, digest_text(c));
  Digest back = read_digest(path);
  CHECK(back.records == c.records);
  CHECK(back.buckets == 256);
  CHECK(compare(back, c).empty());
  CHECK_THROWS_AS(compare(a, digest_store(*s[0].store, 128, "x")), Error);

  // Damage: named with the line.
  fs::write_file_atomic(dir / "bad.digest", fs::read_file(path) + "17 x y\n");
  try {
    read_digest(dir / "bad.digest");
    FAIL("accepted");
  } catch (const Error& e) {
    CHECK(e.code() == Code::data);
    CHECK(std::string(e.what()).find("line ") != std::string::npos);
  }
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
