// The mailbox tree, the stream framing, re-encoding for selective replication, ship
// watermarks and the Prometheus text.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <unistd.h>

#include <set>
#include <vector>

#include "flk/crr/ship.hpp"
#include "flk/crr/watermark.hpp"
#include "flk/metrics/metrics.hpp"
#include "flk/transport/mailbox.hpp"
#include "flk/transport/server.hpp"
#include "flk/transport/stream.hpp"
#include "flk/transport/transport.hpp"
#include "flk/util/error.hpp"
#include "flk/util/fs.hpp"
#include "flk/wal/dir.hpp"
#include "flk/wal/writer.hpp"
#include "test_util.hpp"

using namespace flk;
using namespace flk::transport;
namespace stdfs = std::filesystem;

namespace {

// A WAL in dir with `segments` sealed segments of `per` records each.
std::vector<wal::SegmentFile> make_wal(const stdfs::path& dir, int segments, int per, const std::string& region = "us-east-1") {
  wal::WriterOptions o;
  o.dir = dir;
  o.region = region;
  auto w = wal::Writer::open(o);
  int n = 0;
  for (int s = 0; s < segments; ++s) {
    std::vector<Record> batch;
    for (int i = 0; i < per; ++i) batch.push_back(test::make_record(n++, region));
    w->append(batch);
    w->seal();
  }
  return wal::list_segments(dir);
}

hash::Digest digest_of(const stdfs::path& p) { return *wal::read_digest_sidecar(p); }

std::set<std::string> names(const stdfs::path& dir) {
  std::set<std::string> out;
  for (const auto& e : stdfs::directory_iterator(dir)) out.insert(e.path().filename().string());
  return out;
}

Put put_file(const stdfs::path& mailbox, const Address& a, const stdfs::path& file, const hash::Digest& d) {
  Incoming in(mailbox, a);
  in.copy_from(file);
  return in.commit(d);
}

}  // namespace

TEST_CASE("mailbox: stored, duplicate, conflict; the first segment is kept") {
  test::TempDir t;
  auto a = make_wal(t / "a", 2, 5);
  auto b = make_wal(t / "b", 1, 7);  // another WAL's segment 1: a different segment at the same address
  stdfs::path mb = t / "mailbox";
  Address addr{"us-east-1", "us-west-2", 1};

  CHECK(put_file(mb, addr, a[0].path, digest_of(a[0].path)) == Put::stored);
  stdfs::path stored = segment_path(mb, addr);
  CHECK(fs::read_file(stored) == fs::read_file(a[0].path));
  CHECK(wal::read_digest_sidecar(stored) == digest_of(a[0].path));
  CHECK(put_file(mb, addr, a[0].path, digest_of(a[0].path)) == Put::duplicate);
  CHECK(put_file(mb, addr, b[0].path, digest_of(b[0].path)) == Put::conflict);
  CHECK(fs::read_file(stored) == fs::read_file(a[0].path));
  // Nothing but segments, sidecars and the lock: no temp file is left behind.
  CHECK(names(stream_dir(mb, "us-east-1", "us-west-2")) ==
        std::set<std::string>{"0000000000000001.wal", "0000000000000001.wal.sha256", ".lock"});

  auto entries = list_stream(mb, "us-east-1", "us-west-2");
  REQUIRE(entries.size() == 1);
  CHECK(entries[0].sequence == 1);
  CHECK(entries[0].sha256 == digest_of(a[0].path));
  Head h = stream_head(mb, "us-east-1", "us-west-2");
  CHECK(h.sequence == 1);
  CHECK(h.last_ts == test::make_record(4).ts);
  CHECK(list_streams(mb) == std::vector<std::pair<std::string, std::string>>{{"us-east-1", "us-west-2"}});
  CHECK(stream_head(mb, "eu-west-1", "us-west-2").sequence == 0);
}

TEST_CASE("mailbox: what is not the declared sealed segment of that address is refused and nothing is stored") {
  test::TempDir t;
  auto a = make_wal(t / "a", 2, 5);
  stdfs::path mb = t / "mailbox";
  hash::Digest d1 = digest_of(a[0].path);

  SUBCASE("digest mismatch") {
    hash::Digest wrong = d1;
    wrong[0] ^= 1;
    CHECK_THROWS_AS(put_file(mb, {"us-east-1", "us-west-2", 1}, a[0].path, wrong), DigestMismatch);
  }
  SUBCASE("another sequence than the address") {
    CHECK_THROWS_WITH_AS(put_file(mb, {"us-east-1", "us-west-2", 2}, a[0].path, d1),
                         doctest::Contains("sequence 1"), Error);
  }
  SUBCASE("another region than the source") {
    CHECK_THROWS_WITH_AS(put_file(mb, {"eu-west-1", "us-west-2", 1}, a[0].path, d1),
                         doctest::Contains("names region 'us-east-1'"), Error);
  }
  SUBCASE("truncated: no seal") {
    std::string bytes = fs::read_file(a[0].path);
    Incoming in(mb, {"us-east-1", "us-west-2", 1});
    in.write(std::string_view(bytes).substr(0, bytes.size() - 40));
    CHECK_THROWS_WITH_AS(in.commit(hash::sha256(std::string_view(bytes).substr(0, bytes.size() - 40))),
                         doctest::Contains("not a sealed segment"), Error);
  }
  SUBCASE("garbage") {
    Incoming in(mb, {"us-east-1", "us-west-2", 1});
    in.write("hello, world");
    CHECK_THROWS_AS(in.commit(hash::sha256("hello, world")), Error);
  }
  stdfs::path dir = stream_dir(mb, "us-east-1", "us-west-2");
  std::set<std::string> left;
  std::error_code ec;
  if (stdfs::exists(dir, ec)) left = names(dir);
  left.erase(".lock");
  CHECK(left.empty());
}

TEST_CASE("mailbox: addresses cannot leave the mailbox") {
  test::TempDir t;
  for (Address a : {Address{"..", "us-west-2", 1}, Address{"us-east-1", "a/b", 1}, Address{"US", "x", 1},
                    Address{"us-east-1", "us-west-2", 0}})
    CHECK_THROWS_AS(Incoming(t.path(), a), Error);
  CHECK(stdfs::is_empty(t.path()));
}

TEST_CASE("file transport: put, list, head, get") {
  test::TempDir t;
  auto a = make_wal(t / "a", 3, 4);
  auto tr = open("file://" + (t / "mb").string());
  for (const auto& f : a) CHECK(tr->put({"us-east-1", "us-west-2", f.sequence}, f.path, digest_of(f.path)) == Put::stored);
  auto l = tr->list("us-east-1", "us-west-2", 1);
  REQUIRE(l.size() == 2);
  CHECK(l[0].sequence == 2);
  CHECK(tr->head("us-east-1", "us-west-2").sequence == 3);
  CHECK(tr->get({"us-east-1", "us-west-2", 2}, t / "copy") == digest_of(a[1].path));
  CHECK(fs::read_file(t / "copy") == fs::read_file(a[1].path));
  CHECK_THROWS_AS(open("file://relative/dir"), Error);
  CHECK_THROWS_AS(open("ftp://host/x"), Error);
}

TEST_CASE("stream framing: round trip, and truncation or garbage is an error") {
  test::TempDir t;
  auto a = make_wal(t / "a", 3, 6);
  stdfs::path out = t / "stream";
  {
    fs::Fd fd = fs::Fd::open(out.string(), O_WRONLY | O_CREAT | O_TRUNC);
    for (const auto& f : a)
      write_stream_segment(fd.get(), {{"us-east-1", "us-west-2", f.sequence}, stdfs::file_size(f.path), digest_of(f.path)},
                           f.path);
  }
  std::string all = fs::read_file(out);
  {
    fs::Fd fd = fs::Fd::open(out.string(), O_RDONLY);
    StreamReader r(fd.get(), "stream");
    for (const auto& f : a) {
      auto s = r.next();
      REQUIRE(s);
      CHECK(s->address.sequence == f.sequence);
      CHECK(s->address.target == "us-west-2");
      std::string body;
      r.body([&](std::string_view b) { body += b; });
      CHECK(body == fs::read_file(f.path));
      CHECK(hash::sha256(body) == s->sha256);
    }
    CHECK_FALSE(r.next());
  }
  for (size_t cut : {size_t{10}, all.size() / 2, all.size() - 1}) {
    fs::write_file_atomic(out, all.substr(0, cut));
    fs::Fd fd = fs::Fd::open(out.string(), O_RDONLY);
    StreamReader r(fd.get(), "stream");
    CHECK_THROWS_AS(
        {
          while (auto s = r.next()) r.body([](std::string_view) {});
        },
        Error);
  }
  StreamSegment s;
  std::string why;
  CHECK_FALSE(parse_stream_header("FLKSEG/1 us-east-1 ../x 1 10 " + std::string(64, 'a'), s, &why));
  CHECK_FALSE(parse_stream_header("FLKSEG/2 us-east-1 us-west-2 1 10 " + std::string(64, 'a'), s, &why));
  CHECK_FALSE(parse_stream_header("FLKSEG/1 us-east-1 us-west-2 0 10 " + std::string(64, 'a'), s, &why));
  CHECK(parse_stream_header("FLKSEG/1 us-east-1 us-west-2 7 10 " + std::string(64, 'a'), s, &why));
}

TEST_CASE("re-encoding keeps only the routed tenants, deterministically, and is a valid segment") {
  test::TempDir t;
  auto a = make_wal(t / "a", 2, 30);
  std::set<std::string, std::less<>> tenants{"tenant-1"};
  hash::Digest src = digest_of(a[1].path);
  auto r1 = crr::reencode_segment(a[1].path, src, tenants, t / "out1" / "x.wal");
  auto r2 = crr::reencode_segment(a[1].path, src, tenants, t / "out2" / "x.wal");
  CHECK(r1.sha256 == r2.sha256);
  CHECK(fs::read_file(t / "out1" / "x.wal") == fs::read_file(t / "out2" / "x.wal"));
  CHECK(r1.seal.records == 10);
  CHECK(wal::file_digest(t / "out1" / "x.wal") == r1.sha256);
  std::vector<Record> got;
  wal::Header h;
  wal::read_segment(
      t / "out1" / "x.wal", true, [&](const Record& r) { got.push_back(r); }, [&](const wal::Header& hh) { h = hh; });
  CHECK(got.size() == 10);
  for (const auto& r : got) CHECK(r.tenant_id == "tenant-1");
  CHECK((h.flags & wal::kFlagReencoded) != 0);
  CHECK(h.sequence == 2);
  CHECK(h.source == src);
  CHECK(h.prev == digest_of(a[0].path));  // the source's chain
  // A mailbox accepts it as that source's segment 2.
  CHECK(put_file(t / "mb", {"us-east-1", "us-west-2", 2}, t / "out1" / "x.wal", r1.sha256) == Put::stored);
  // No tenant routed: an empty, sealed segment.
  auto e = crr::reencode_segment(a[0].path, digest_of(a[0].path), {}, t / "out3" / "x.wal");
  CHECK(e.seal.records == 0);
  CHECK(put_file(t / "mb", {"us-east-1", "us-west-2", 1}, t / "out3" / "x.wal", e.sha256) == Put::stored);
  // A source that does not match its digest is refused.
  hash::Digest wrong = src;
  wrong[5] ^= 1;
  CHECK_THROWS_AS(crr::reencode_segment(a[1].path, wrong, tenants, t / "out4" / "x.wal"), Error);
}

TEST_CASE("ship watermarks: round trip, absent is zero, malformed is a data error") {
  test::TempDir t;
  CHECK(crr::load_ship_watermark(t.path(), "us-west-2").sequence == 0);
  crr::ShipWatermark w;
  w.target = "us-west-2";
  w.sequence = 42;
  w.sha256 = hash::sha256("a");
  w.source_sha256 = hash::sha256("b");
  w.time = 1'795'680'000'123'456'789;
  w.first_ts = 1'795'680'000'000'000'000;
  w.last_ts = 1'795'680'001'000'000'000;
  w.segments_total = 42;
  w.bytes_total = 1234;
  w.failures_total = 3;
  crr::save_ship_watermark(t.path(), w);
  auto r = crr::load_ship_watermark(t.path(), "us-west-2");
  CHECK(r.sequence == 42);
  CHECK(r.sha256 == w.sha256);
  CHECK(r.source_sha256 == w.source_sha256);
  CHECK(r.time == w.time);
  CHECK(r.first_ts == w.first_ts);
  CHECK(r.last_ts == w.last_ts);
  CHECK(r.failures_total == 3);
  fs::write_file_atomic(crr::ship_watermark_path(t.path(), "us-west-2"), "{\"target\":\"us-west-2\"");
  CHECK_THROWS_WITH_AS(crr::load_ship_watermark(t.path(), "us-west-2"), doctest::Contains("malformed ship watermark"),
                       Error);
}

TEST_CASE("targets from the configuration: modes, endpoints and tenants") {
  test::TempDir t;
  auto c = config::parse(R"(
region: us-east-1
crr:
  enabled: true
  replicationMode: selective
  policies:
    - {tenantID: tenant-a, targetRegions: [us-west-2]}
    - {tenantID: tenant-b, targetRegions: [us-west-2, eu-west-1]}
  endpoints:
    us-west-2: {url: "http://127.0.0.1:1"}
    eu-west-1: {url: "file:///tmp/x"}
)",
                         "test");
  auto ts = crr::targets_from_config(c, {}, std::nullopt);
  REQUIRE(ts.size() == 2);
  CHECK(ts[0].region == "us-west-2");
  CHECK(*ts[0].tenants == std::set<std::string, std::less<>>{"tenant-a", "tenant-b"});
  CHECK(*ts[1].tenants == std::set<std::string, std::less<>>{"tenant-b"});
  CHECK_THROWS_WITH_AS(crr::targets_from_config(c, {"ap-south-1"}, std::nullopt), doctest::Contains("not a target"),
                       Error);
  CHECK(crr::targets_from_config(c, {"eu-west-1"}, std::string("-"))[0].url == "-");
  c.crr.endpoints.erase("eu-west-1");
  try {
    crr::targets_from_config(c, {}, std::nullopt);
    FAIL("no endpoint accepted");
  } catch (const Error& e) {
    CHECK(e.code() == Code::config);
  }
}

TEST_CASE("Prometheus text: families, labels escaped, numbers") {
  metrics::Text m;
  m.family("flk_x_total", "counter", "Things.\nCounted.");
  m.sample("flk_x_total", {{"a", "q\"b\\c\nd"}}, 3);
  m.sample("flk_x_total", {}, 0.5);
  CHECK(m.str() ==
        "# HELP flk_x_total Things.\\nCounted.\n# TYPE flk_x_total counter\nflk_x_total{a=\"q\\\"b\\\\c\\nd\"} 3\n"
        "flk_x_total 0.5\n");
}

TEST_CASE("listen addresses") {
  CHECK(split_host_port("127.0.0.1:8443") == std::pair<std::string, int>{"127.0.0.1", 8443});
  CHECK(split_host_port("[::1]:0") == std::pair<std::string, int>{"::1", 0});
  CHECK_THROWS_AS(split_host_port("127.0.0.1"), Error);
  CHECK_THROWS_AS(split_host_port("::1:80"), Error);
  CHECK_THROWS_AS(split_host_port("h:70000"), Error);
  CHECK(is_loopback_host("127.0.0.1"));
  CHECK(is_loopback_host("::1"));
  CHECK_FALSE(is_loopback_host("0.0.0.0"));
}

TEST_CASE("a stream of re-encoded segments verifies as a chain (flk-wal verify / cat on a mailbox stream)") {
  test::TempDir t;
  auto a = make_wal(t / "a", 3, 9);
  stdfs::path mb = t / "mb";
  std::set<std::string, std::less<>> tenants{"tenant-2"};
  for (const auto& f : a) {
    stdfs::path out = t / "out" / f.path.filename();
    auto re = crr::reencode_segment(f.path, digest_of(f.path), tenants, out);
    REQUIRE(put_file(mb, {"us-east-1", "us-west-2", f.sequence}, out, re.sha256) == Put::stored);
  }
  stdfs::path stream = stream_dir(mb, "us-east-1", "us-west-2");
  std::string problems;
  CHECK(wal::verify_wal(stream, [&](const wal::VerifyResult& v) {
    if (!v.ok) problems += v.problem + "\n";
  }));
  CHECK(problems == "");
  // Segment 2 replaced by the re-encoding of another WAL's segment 2: the chain breaks.
  auto b = make_wal(t / "b", 2, 4);
  auto re = crr::reencode_segment(b[1].path, digest_of(b[1].path), tenants, t / "other.wal");
  stdfs::copy_file(t / "other.wal", stream / "0000000000000002.wal", stdfs::copy_options::overwrite_existing);
  wal::write_digest_sidecar(stream / "0000000000000002.wal", re.sha256);
  problems.clear();
  CHECK_FALSE(wal::verify_wal(stream, [&](const wal::VerifyResult& v) {
    if (!v.ok) problems += v.problem + "\n";
  }));
  CHECK(problems.find("broken chain") != std::string::npos);
}
