#include <doctest/doctest.h>

#include <map>
#include <random>

#include "flk/rebuild/rebuild.hpp"
#include "flk/util/error.hpp"
#include "flk/util/fs.hpp"
#include "flk/wal/writer.hpp"
#include "test_util.hpp"

using namespace flk;
namespace stdfs = std::filesystem;

namespace {

// Writes records into a WAL of `region` in `dir`, sealing every `per_segment`.
void write_wal(const stdfs::path& dir, const std::string& region, const std::vector<Record>& records,
               size_t per_segment) {
  wal::WriterOptions o;
  o.dir = dir;
  o.region = region;
  auto w = wal::Writer::open(o);
  for (size_t at = 0; at < records.size(); at += per_segment) {
    size_t n = std::min(per_segment, records.size() - at);
    w->append(std::span<const Record>(records).subspan(at, n));
    w->seal();
  }
}

std::vector<Record> random_records(std::mt19937_64& rng, const std::string& region, int n, int ids) {
  std::vector<Record> out;
  for (int i = 0; i < n; ++i) {
    Record r;
    r.pcs_id = "pcs-" + std::to_string(rng() % static_cast<uint64_t>(ids));
    r.tenant_id = "tenant-" + std::to_string(rng() % 3);
    r.outcome = static_cast<Outcome>(1 + rng() % 3);
    r.ts = 1'700'000'000'000'000'000 + static_cast<int64_t>(rng() % 100000);
    r.region = region;
    out.push_back(r);
  }
  return out;
}

}  // namespace

TEST_CASE("rebuild: fresh, external sort, in place and verify agree; mailbox conflicts become evidence") {
  test::TempDir t;
  std::mt19937_64 rng(7);
  auto own = random_records(rng, "us-east-1", 3000, 1500);
  auto peer = random_records(rng, "us-west-2", 2000, 1500);
  write_wal(t / "wal", "us-east-1", own, 400);
  write_wal(t / "mailbox" / "us-west-2" / "us-east-1", "us-west-2", peer, 300);

  // The expected winners: the first write per pcs_id over all records.
  std::vector<Record> all = own;
  all.insert(all.end(), peer.begin(), peer.end());
  std::vector<std::string> urls;
  auto rebuild = [&](const std::string& name, size_t memory, bool in_place, unsigned threads = 1) {
    rebuild::Options o;
    o.threads = threads;
    o.region = "us-east-1";
    o.wal_dir = t / "wal";
    o.mailbox = t / "mailbox";
    o.store_url = "sqlite://" + (t / name).string();
    o.sort_memory = memory;
    o.in_place = in_place;
    o.temp_dir = t.path();
    return rebuild::run(o);
  };
  auto big = rebuild("a.db", 256u << 20, false);
  auto small = rebuild("b.db", 16u << 10, false);  // many sort runs
  auto merged = rebuild("c.db", 0, true);
  // Segments read and sorted by several threads: the same content, whatever the split.
  for (unsigned threads : {2u, 3u, 16u}) {
    CAPTURE(threads);
    for (size_t memory : {size_t{256u << 20}, size_t{16u << 10}}) {
      auto r = rebuild(fmt::format("t{}-{}.db", threads, memory), memory, false, threads);
      CHECK(r.digest == big.digest);
      CHECK(r.records == big.records);
      CHECK(r.conflicts == big.conflicts);
      REQUIRE(r.watermarks.size() == 1);  // `updated` is the time of each run
      CHECK(r.watermarks[0].sequence == big.watermarks[0].sequence);
      CHECK(r.watermarks[0].digest == big.watermarks[0].digest);
      CHECK(r.segments == big.segments);
      if (memory < 1u << 20) CHECK(r.runs > 5);
    }
  }
  CHECK(big.runs == 0);
  CHECK(small.runs > 5);
  CHECK(big.records == all.size());
  CHECK(big.digest == small.digest);
  CHECK(big.digest == merged.digest);
  CHECK(big.conflicts > 0);
  CHECK(big.conflicts == small.conflicts);
  REQUIRE(big.watermarks.size() == 1);
  CHECK(big.watermarks[0].source == "us-west-2");
  CHECK(big.watermarks[0].sequence == 7);  // 2000 records in segments of 300

  auto a = store::open("sqlite://" + (t / "a.db").string());
  CHECK(store::content_digest(*a) == big.digest);
  CHECK(*a->watermark("us-west-2") == big.watermarks[0]);
  size_t evidence = 0;
  a->scan_evidence([&](const store::Evidence&) { ++evidence; });
  CHECK(evidence >= 2 * big.conflicts);
  // Every stored winner is the first write of its pcs_id.
  std::map<std::string, store::Stored> expected;
  for (const Record& r : all) {
    auto d = record_digest(r);
    auto it = expected.find(r.pcs_id);
    if (it == expected.end() || first_write_before(r, d, it->second.record, it->second.digest))
      expected[r.pcs_id] = store::Stored{r, d};
  }
  size_t n = 0;
  a->scan([&](const store::Stored& s) {
    CHECK(s == expected.at(s.record.pcs_id));
    ++n;
  });
  CHECK(n == expected.size());

  // Verify: equal → no differences; a lost row → one "missing" difference, nothing changed.
  rebuild::Options v;
  v.region = "us-east-1";
  v.wal_dir = t / "wal";
  v.mailbox = t / "mailbox";
  v.store_url = "sqlite://" + (t / "a.db").string();
  v.verify = true;
  v.temp_dir = t.path();
  CHECK(rebuild::run(v).differences == 0);
  REQUIRE(std::system(("sqlite3 '" + (t / "a.db").string() + "' \"DELETE FROM records WHERE pcs_id = 'pcs-1'\"").c_str()) == 0);
  std::vector<std::string> diffs;
  auto res = rebuild::run(v, [&](const rebuild::Difference& d) {
    diffs.push_back(d.pcs_id);
    CHECK_FALSE(d.live);
    CHECK(d.rebuilt);
  });
  CHECK(res.differences == 1);
  CHECK(diffs == std::vector<std::string>{"pcs-1"});
  a.reset();
  CHECK(store::open("sqlite://" + (t / "a.db").string())->count() == expected.size() - 1);
}

TEST_CASE("rebuild: a damaged segment stops a fresh rebuild and leaves the store as it was") {
  test::TempDir t;
  std::mt19937_64 rng(9);
  write_wal(t / "wal", "us-east-1", random_records(rng, "us-east-1", 500, 400), 100);
  rebuild::Options o;
  o.region = "us-east-1";
  o.wal_dir = t / "wal";
  o.store_url = "sqlite://" + (t / "s.db").string();
  o.temp_dir = t.path();
  auto first = rebuild::run(o);
  auto damage = [](const stdfs::path& seg) {
    std::string bytes = fs::read_file(seg);
    bytes[300] ^= 1;
    fs::AtomicFile f(seg);
    f.write(bytes);
    f.commit();
  };
  stdfs::path seg = t / "wal" / "0000000000000003.wal";
  damage(seg);
  damage(t / "wal" / "0000000000000005.wal");  // whatever the threads, the first damaged one is named
  for (unsigned threads : {1u, 2u, 4u}) {
    CAPTURE(threads);
    o.threads = threads;
    try {
      rebuild::run(o);
      FAIL("rebuilt from a damaged WAL");
    } catch (const Error& e) {
      CHECK(e.code() == Code::data);
      CHECK(std::string(e.what()).find("segment '" + seg.string() + "': offset ") == 0);
    }
  }
  auto s = store::open(o.store_url);
  CHECK(store::content_digest(*s) == first.digest);
  CHECK_FALSE(stdfs::exists(t / "s.db.rebuild-journal"));
}
