#include <doctest/doctest.h>

#include <fcntl.h>
#include <unistd.h>

#include <set>
#include <thread>
#include <vector>

#include "flk/util/error.hpp"
#include "flk/util/fs.hpp"
#include "flk/wal/dir.hpp"
#include "flk/wal/writer.hpp"
#include "test_util.hpp"

using namespace flk;
using namespace flk::wal;
namespace stdfs = std::filesystem;

namespace {

WriterOptions opts(const stdfs::path& dir, uint64_t seg_bytes = 64u << 20, std::vector<std::string>* log = nullptr) {
  WriterOptions o;
  o.dir = dir;
  o.region = "us-east-1";
  o.segment_bytes = seg_bytes;
  if (log) o.log = [log](const std::string& m) { log->push_back(m); };
  return o;
}

std::vector<Record> read_wal(const stdfs::path& dir) {
  std::vector<Record> out;
  for (const auto& f : list_segments(dir)) read_segment(f.path, f.sealed, [&](const Record& r) { out.push_back(r); });
  return out;
}

bool verify(const stdfs::path& dir, std::string* problems = nullptr) {
  return verify_wal(dir, [&](const VerifyResult& v) {
    if (!v.ok && problems) *problems += v.problem + "\n";
  });
}

}  // namespace

TEST_CASE("append, seal, reopen, append: one chained WAL") {
  test::TempDir t;
  std::vector<Record> all;
  {
    auto w = Writer::open(opts(t.path()));
    std::vector<Record> batch;
    for (int i = 0; i < 10; ++i) batch.push_back(test::make_record(i));
    auto pos = w->append(batch);
    REQUIRE(pos.size() == 10);
    CHECK(pos[0].segment == 1);
    CHECK(pos[0].offset == kHeaderSize);
    CHECK(pos[1].offset == kHeaderSize + record_frame_size(batch[0]));
    all.insert(all.end(), batch.begin(), batch.end());
    auto s = w->seal();
    REQUIRE(s);
    CHECK(s->sequence == 1);
    CHECK(s->counts.records == 10);
    CHECK(s->sha256 == file_digest(t / "0000000000000001.wal"));
    CHECK_FALSE(w->seal());  // nothing open: nothing to seal
  }
  {
    auto w = Writer::open(opts(t.path()));
    std::vector<Record> batch{test::make_record(100)};
    CHECK(w->append(batch)[0].segment == 2);
    all.push_back(batch[0]);
  }
  CHECK(read_wal(t.path()) == all);
  std::string problems;
  CHECK(verify(t.path(), &problems));
  CHECK(problems.empty());
  // The open segment links to the sealed one.
  auto st = stat_segment({2, false, t / "0000000000000002.open"});
  CHECK(st.header.prev == file_digest(t / "0000000000000001.wal"));
}

TEST_CASE("rotation by size keeps every record and seals in order") {
  test::TempDir t;
  auto w = Writer::open(opts(t.path(), 2000));
  std::vector<Record> all;
  for (int b = 0; b < 20; ++b) {
    std::vector<Record> batch;
    for (int i = 0; i < 7; ++i) batch.push_back(test::make_record(b * 7 + i));
    w->append(batch);
    all.insert(all.end(), batch.begin(), batch.end());
  }
  auto rotated = w->take_sealed();
  CHECK(rotated.size() >= 5);
  for (size_t i = 0; i < rotated.size(); ++i) {
    CHECK(rotated[i].sequence == i + 1);
    CHECK(rotated[i].bytes <= 2000);
  }
  CHECK(read_wal(t.path()) == all);
  CHECK(verify(t.path()));
}

TEST_CASE("a record larger than a segment gets a segment of its own") {
  test::TempDir t;
  auto w = Writer::open(opts(t.path(), 512));
  Record big = test::make_record(1);
  big.params = std::string(2000, 'p');
  std::vector<Record> batch{test::make_record(0), big, test::make_record(2)};
  auto pos = w->append(batch);
  CHECK(pos[0].segment == 1);
  CHECK(pos[1].segment == 2);
  CHECK(pos[2].segment == 3);
  CHECK(read_wal(t.path()) == batch);
}

TEST_CASE("seal by age") {
  test::TempDir t;
  auto o = opts(t.path());
  o.segment_age = 50'000'000;  // 50ms
  auto w = Writer::open(o);
  CHECK_FALSE(w->due_at());
  std::vector<Record> batch{test::make_record(1)};
  w->append(batch);
  CHECK(w->due_at());
  CHECK_FALSE(w->seal_if_due());
  std::this_thread::sleep_for(std::chrono::milliseconds(60));
  auto s = w->seal_if_due();
  REQUIRE(s);
  CHECK(s->sequence == 1);
  CHECK_FALSE(w->due_at());
}

TEST_CASE("recovery cuts a torn tail of every length and keeps every whole record") {
  test::TempDir base;
  // Build one reference WAL with 3 records in an open segment.
  {
    auto w = Writer::open(opts(base / "ref"));
    std::vector<Record> batch{test::make_record(0), test::make_record(1), test::make_record(2)};
    w->append(batch);
  }
  std::string full = fs::read_file(base / "ref" / "0000000000000001.open");
  size_t two_end = kHeaderSize + record_frame_size(test::make_record(0)) + record_frame_size(test::make_record(1));
  for (size_t cut = two_end + 1; cut < full.size(); ++cut) {
    CAPTURE(cut);
    stdfs::path d = base / ("w" + std::to_string(cut));
    fs::make_dirs(d);
    fs::write_file_atomic(d / "0000000000000001.open", std::string_view(full).substr(0, cut));
    std::vector<std::string> log;
    auto w = Writer::open(opts(d, 64u << 20, &log));
    REQUIRE(log.size() == 1);
    CHECK(log[0].find("cut torn tail at offset " + std::to_string(two_end)) != std::string::npos);
    std::vector<Record> more{test::make_record(7)};
    CHECK(w->append(more)[0].offset == two_end);
    auto got = read_wal(d);
    REQUIRE(got.size() == 3);
    CHECK(got[2] == test::make_record(7));
    w.reset();
    CHECK(verify(d));
  }
}

TEST_CASE("recovery refuses damage in the middle, naming segment and offset") {
  test::TempDir t;
  {
    auto w = Writer::open(opts(t.path()));
    std::vector<Record> batch{test::make_record(0), test::make_record(1), test::make_record(2)};
    w->append(batch);
  }
  stdfs::path p = t / "0000000000000001.open";
  std::string bytes = fs::read_file(p);
  bytes[kHeaderSize + 20] ^= 0x40;  // inside the first record
  fs::write_file_atomic(p, bytes);
  try {
    Writer::open(opts(t.path()));
    FAIL("opened a damaged WAL");
  } catch (const Error& e) {
    CHECK(e.code() == Code::data);
    CHECK(std::string(e.what()) == "segment '" + p.string() + "': offset 192: frame checksum mismatch");
  }
  CHECK(fs::read_file(p) == bytes);  // nothing was cut
}

TEST_CASE("a crash between the seal frame and the rename is finished on open") {
  test::TempDir t;
  std::string sealed;
  {
    auto w = Writer::open(opts(t / "a"));
    std::vector<Record> batch{test::make_record(0)};
    w->append(batch);
    w->seal();
    sealed = fs::read_file(t / "a" / "0000000000000001.wal");
  }
  fs::make_dirs(t / "b");
  fs::write_file_atomic(t / "b" / "0000000000000001.open", sealed);
  std::vector<std::string> log;
  auto w = Writer::open(opts(t / "b", 64u << 20, &log));
  REQUIRE(log.size() == 1);
  CHECK(log[0].find("finished sealing") != std::string::npos);
  CHECK(stdfs::exists(t / "b" / "0000000000000001.wal"));
  CHECK(stdfs::exists(t / "b" / "0000000000000001.wal.sha256"));
  CHECK_FALSE(stdfs::exists(t / "b" / "0000000000000001.open"));
  std::vector<Record> batch{test::make_record(1)};
  CHECK(w->append(batch)[0].segment == 2);
}

TEST_CASE("one writer per directory; wrong region refused") {
  test::TempDir t;
  auto w = Writer::open(opts(t.path()));
  try {
    Writer::open(opts(t.path()));
    FAIL("second writer");
  } catch (const Error& e) {
    CHECK(e.code() == Code::temp_fail);
    CHECK(std::string(e.what()).find("held by pid " + std::to_string(::getpid())) != std::string::npos);
  }
  std::vector<Record> batch{test::make_record(0)};
  w->append(batch);
  w.reset();
  auto o = opts(t.path());
  o.region = "eu-west-1";
  try {
    Writer::open(o);
    FAIL("wrong region");
  } catch (const Error& e) {
    CHECK(std::string(e.what()).find("belongs to region 'us-east-1', not 'eu-west-1'") != std::string::npos);
  }
  std::vector<Record> wrong{test::make_record(1, "eu-west-1")};
  auto w2 = Writer::open(opts(t.path()));
  CHECK_THROWS_AS(w2->append(wrong), Error);
}

TEST_CASE("verify catches substitution, reorder and gaps") {
  test::TempDir t;
  auto fill = [&](const stdfs::path& d, int first) {
    auto w = Writer::open(opts(d));
    for (int s = 0; s < 3; ++s) {
      std::vector<Record> b{test::make_record(first + s)};
      w->append(b);
      w->seal();
    }
  };
  fill(t / "a", 0);
  fill(t / "b", 10);
  CHECK(verify(t / "a"));
  // Substitute segment 2 of a with b's (its sidecar too): the chain breaks at 3.
  stdfs::copy_file(t / "b" / "0000000000000002.wal", t / "a" / "0000000000000002.wal",
                   stdfs::copy_options::overwrite_existing);
  stdfs::copy_file(t / "b" / "0000000000000002.wal.sha256", t / "a" / "0000000000000002.wal.sha256",
                   stdfs::copy_options::overwrite_existing);
  std::string problems;
  CHECK_FALSE(verify(t / "a", &problems));
  CHECK(problems.find("broken chain") != std::string::npos);
  // A gap.
  stdfs::remove(t / "b" / "0000000000000002.wal");
  problems.clear();
  CHECK_FALSE(verify(t / "b", &problems));
  CHECK(problems.find("sequence gap: segment 3 follows 1") != std::string::npos);
  CHECK_THROWS_AS(Writer::open(opts(t / "b")), Error);
}

TEST_CASE("concurrent appends share syncs and lose nothing") {
  test::TempDir t;
  auto w = Writer::open(opts(t.path(), 1u << 16));
  constexpr int kThreads = 8, kPer = 200;
  std::vector<std::thread> threads;
  std::vector<std::vector<Position>> positions(kThreads);
  for (int th = 0; th < kThreads; ++th) {
    threads.emplace_back([&, th] {
      for (int i = 0; i < kPer; ++i) {
        std::vector<Record> b{test::make_record(th * 10000 + i)};
        positions[th].push_back(w->append(b)[0]);
      }
    });
  }
  for (auto& th : threads) th.join();
  std::set<std::pair<uint64_t, uint64_t>> unique;
  for (auto& v : positions)
    for (auto& p : v) unique.insert({p.segment, p.offset});
  CHECK(unique.size() == kThreads * kPer);
  CHECK(read_wal(t.path()).size() == kThreads * kPer);
  w.reset();
  CHECK(verify(t.path()));
}
