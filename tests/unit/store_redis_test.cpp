// The Redis back end's own behaviour (lib/flk/store/redis.cpp): URLs and errors, the
// first-write-wins script against store::plan(), atomicity, paging, generations and
// reconnection. Needs the test server ($FLK_TEST_SERVERS/redis.url, written by
// tests/servers/redis.sh); each test is skipped without it. The behaviour all back
// ends share is in store_test.cpp.
#include <doctest/doctest.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <thread>

#include "flk/store/store.hpp"
#include "flk/util/error.hpp"
#include "test_util.hpp"

using flk::test::contents;
using flk::test::rec;

using namespace flk;
using namespace flk::store;

namespace {

// The test server, from its URL redis://:PASSWORD@HOST:PORT/DB.
struct Server {
  std::string url, password, host, port;
};

std::optional<Server> server() {
  const char* dir = std::getenv("FLK_TEST_SERVERS");
  if (!dir) return std::nullopt;
  std::ifstream f(std::filesystem::path(dir) / "redis.url");
  Server s;
  if (!std::getline(f, s.url) || s.url.empty()) return std::nullopt;
  size_t colon = s.url.find(':', 8), at = s.url.rfind('@');
  size_t pcolon = s.url.rfind(':'), slash = s.url.rfind('/');
  REQUIRE(s.url.rfind("redis://:", 0) == 0);
  s.password = s.url.substr(colon + 1, at - colon - 1);
  s.host = s.url.substr(at + 1, pcolon - at - 1);
  s.port = s.url.substr(pcolon + 1, slash - pcolon - 1);
  return s;
}

#define NEED_SERVER(s)                                                      \
  auto s = server();                                                        \
  if (!s) {                                                                 \
    MESSAGE("no Redis test server ($FLK_TEST_SERVERS/redis.url): skipped"); \
    return;                                                                 \
  }

std::string fresh_prefix() {
  static int counter = 0;
  return fmt::format("rt{}_{}", ::getpid(), ++counter);
}

std::string with_prefix(const std::string& url, const std::string& prefix) {
  return url + (url.find('?') == std::string::npos ? "?" : "&") + "prefix=" + prefix;
}

// redis-cli against the test server (Debian's redis-tools); returns its output.
std::string cli(const Server& s, const std::string& args, int db = 0) {
  std::string cmd =
      fmt::format("REDISCLI_AUTH='{}' redis-cli -h {} -p {} -n {} {} 2>&1", s.password, s.host, s.port, db, args);
  std::string out;
  FILE* p = ::popen(cmd.c_str(), "r");
  REQUIRE(p);
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  ::pclose(p);
  while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
  return out;
}



// Runs f, which must throw flk::Error; returns it.
template <typename F>
Error error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e;
  }
  FAIL("no error thrown");
  return Error(Code::ok, "");
}

int free_port() { return flk::test::closed_port(); }

}  // namespace

TEST_CASE("store (redis): errors carry the exit code and the URL, never the password") {
  NEED_SERVER(srv);
  std::vector<std::string> messages;
  auto expect = [&](const std::string& url, Code code) {
    CAPTURE(url);
    Error e = error_of([&] { store::open(url); });
    CHECK(e.code() == code);
    messages.push_back(e.what());
    return std::string(e.what());
  };

  int port = free_port();
  std::string refused = fmt::format("redis://:s3cret-pw@127.0.0.1:{}/0", port);
  CHECK(expect(refused, Code::unavailable) ==
        fmt::format("store 'redis://:***@127.0.0.1:{}/0': cannot connect: Connection refused", port));

  std::string base = fmt::format("{}:{}", srv->host, srv->port);
  std::string wrong = expect("redis://:s3cret-pw@" + base + "/0", Code::no_perm);
  CHECK(wrong.rfind("store 'redis://:***@" + base + "/0': authentication refused: ", 0) == 0);
  CHECK(wrong.find("WRONGPASS") != std::string::npos);
  expect("redis://someone:s3cret-pw@" + base + "/0", Code::no_perm);
  // No password for a server that wants one.
  std::string noauth = expect("redis://" + base + "/0?prefix=" + fresh_prefix(), Code::no_perm);
  CHECK(noauth.find("NOAUTH") != std::string::npos);
  // A database the server does not have.
  expect("redis://:" + srv->password + "@" + base + "/4000", Code::config);

  for (const std::string& bad : std::vector<std::string>{
           "redis://",
           "redis://:s3cret-pw@",
           "redis://:s3cret-pw@/0",
           "redis://h:0/0",
           "redis://h:65536/0",
           "redis://h:/0",
           "redis://h:63x9/0",
           "redis://h/zero",
           "redis://h/-1",
           "redis://h/0/1",
           "redis://h/0?prefix=",
           "redis://h/0?prefix=a%20b",
           "redis://h/0?prefix=a/b",
           "redis://h/0?prefix=a&prefix=b",
           "redis://h/0?db=1",
           "redis://h/0#frag",
           "redis://[::1/0",
           "redis://ho st/0",
           "redis://s3cret-pw@h/0",          // a password without ':' before it
           "redis://:s3cret%zz@h/0",         // bad percent-encoding
           "redis://:s3cret@pw/x@h:6379/0",  // '/' in an unencoded password
           "redis://:s3cret-pw@h:6379/0?prefix=" + std::string(101, 'p'),
       }) {
    std::string m = expect(bad, Code::config);
    CHECK(m.rfind("invalid store URL 'redis://", 0) == 0);
  }
  for (const std::string& m : messages) {
    CAPTURE(m);
    CHECK(m.find("s3cret") == std::string::npos);
    CHECK(m.find(srv->password) == std::string::npos);
  }
}

TEST_CASE("store (redis): URL forms, databases and prefixes") {
  NEED_SERVER(srv);
  std::string p = fresh_prefix();
  std::string hostport = srv->host + ":" + srv->port;
  // The ACL user "default", a percent-encoded password, no database (0).
  std::string enc;
  for (char c : srv->password) enc += fmt::format("%{:02X}", static_cast<unsigned char>(c));
  auto a = store::open("redis://default:" + enc + "@" + hostport + "?prefix=" + p);
  CHECK(a->url() == "redis://default:***@" + hostport + "?prefix=" + p);
  std::vector<Record> one{rec("x", Outcome::accepted, 1)};
  a->apply(one, nullptr);
  CHECK(store::open(with_prefix(srv->url, p))->count() == 1);  // same store: db 0, same prefix
  CHECK(store::open(with_prefix(srv->url, p + "b"))->count() == 0);
  // Database 3 is another keyspace.
  std::string url3 = "redis://:" + srv->password + "@" + hostport + "/3?prefix=" + p;
  auto d3 = store::open(url3);
  CHECK(d3->count() == 0);
  d3->apply(one, nullptr);
  CHECK(cli(*srv, "HGET " + p + ":meta schema_version", 3) == "1");
  cli(*srv, "DEL " + p + ":meta " + p + ":g1:r " + p + ":g1:ids", 3);
  // The default prefix is "flk".
  CHECK(store::open("redis://:" + srv->password + "@" + hostport + "/5")->url() == "redis://:***@" + hostport + "/5");
  CHECK(cli(*srv, "EXISTS flk:meta", 5) == "1");
  cli(*srv, "DEL flk:meta", 5);
}

TEST_CASE("store (redis): a newer schema version is refused") {
  NEED_SERVER(srv);
  std::string p = fresh_prefix();
  std::string url = with_prefix(srv->url, p);
  auto s = store::open(url);
  CHECK(cli(*srv, "HGET " + p + ":meta schema_version") == "1");
  cli(*srv, "HSET " + p + ":meta schema_version 99");
  Error e = error_of([&] { store::open(url); });
  CHECK(e.code() == Code::config);
  CHECK(std::string(e.what()) ==
        "store '" + mask_url(url) + "': schema version 99 is newer than this flk understands (1)");
  // A store already open notices too, and changes nothing.
  std::vector<Record> one{rec("x", Outcome::accepted, 1)};
  CHECK(error_of([&] { s->apply(one, nullptr); }).code() == Code::config);
  CHECK(cli(*srv, "HLEN " + p + ":g1:r") == "0");
  cli(*srv, "HSET " + p + ":meta schema_version nonsense");
  CHECK(error_of([&] { store::open(url); }).code() == Code::config);
}

TEST_CASE("store (redis): first write compares ts as int64 exactly, regions and digests bytewise") {
  NEED_SERVER(srv);
  constexpr int64_t kMin = std::numeric_limits<int64_t>::min(), kMax = std::numeric_limits<int64_t>::max();
  struct Pair {
    Record first, second;
  };
  std::vector<Pair> pairs{
      // As doubles (Lua numbers) these are the same number.
      {rec("big", Outcome::accepted, 1795680000123456789), rec("big", Outcome::rejected, 1795680000123456790)},
      {rec("neg", Outcome::accepted, -1), rec("neg", Outcome::rejected, 0)},
      {rec("neg2", Outcome::accepted, -2), rec("neg2", Outcome::rejected, -1)},
      {rec("ext", Outcome::accepted, kMin), rec("ext", Outcome::rejected, kMax)},
      {rec("ext2", Outcome::accepted, kMax - 1), rec("ext2", Outcome::rejected, kMax)},
      {rec("negbig", Outcome::accepted, -1795680000123456790), rec("negbig", Outcome::rejected, -1795680000123456789)},
      // A shorter region that is a prefix of the other sorts first.
      {rec("pre", Outcome::accepted, 5, "us"), rec("pre", Outcome::rejected, 5, "us-east")},
      // '-' (0x2d) sorts before 'a'; a locale's collation might ignore it.
      {rec("dash", Outcome::accepted, 5, "a-b"), rec("dash", Outcome::rejected, 5, "aa")},
      {rec("digit", Outcome::accepted, 5, "9z"), rec("digit", Outcome::rejected, 5, "a0")},
  };
  // Same ts and region: the digest decides.
  Record d1 = rec("dig", Outcome::accepted, 7, "eu-west-1", "tenant-a");
  Record d2 = rec("dig", Outcome::rejected, 7, "eu-west-1", "tenant-b");
  if (first_write_before(d1, record_digest(d1), d2, record_digest(d2)))
    pairs.push_back({d1, d2});
  else
    pairs.push_back({d2, d1});

  for (const Pair& pr : pairs) {
    CAPTURE(pr.first.pcs_id);
    REQUIRE(first_write_before(pr.first, record_digest(pr.first), pr.second, record_digest(pr.second)));
    std::string p = fresh_prefix();
    {
      auto s = store::open(with_prefix(srv->url, p + "a"));  // the later write first
      std::vector<Record> b1{pr.second}, b2{pr.first};
      CHECK(s->apply(b1, nullptr).inserted == 1);
      ApplyStats st = s->apply(b2, nullptr);
      CHECK(st.replaced == 1);
      CHECK(st.conflicts == 1);
      CHECK(contents(*s).at(0).record == pr.first);
    }
    {
      auto s = store::open(with_prefix(srv->url, p + "b"));  // the first write first
      std::vector<Record> b1{pr.first}, b2{pr.second};
      s->apply(b1, nullptr);
      ApplyStats st = s->apply(b2, nullptr);
      CHECK(st.later == 1);
      CHECK(st.replaced == 0);
      CHECK(contents(*s).at(0).record == pr.first);
    }
    {
      auto s = store::open(with_prefix(srv->url, p + "c"));  // both in one batch
      std::vector<Record> b{pr.second, pr.first, pr.second};
      ApplyStats st = s->apply(b, nullptr);
      CHECK(st.inserted == 1);
      CHECK(st.replaced == 1);
      CHECK(st.later == 1);
      CHECK(st.conflicts == 2);
      auto all = contents(*s);
      REQUIRE(all.size() == 1);
      CHECK(all[0].record == pr.first);
      CHECK(all[0].digest == record_digest(pr.first));
    }
  }
}

TEST_CASE("store (redis): the script's statistics and evidence are store::plan()'s") {
  NEED_SERVER(srv);
  std::mt19937_64 rng(4242);
  const int64_t tss[] = {-3, -1, 0, 1, 2, 1795680000123456788, 1795680000123456789, 1795680000123456790};
  const char* regions[] = {"a", "a-b", "aa", "ab", "us", "us-east", "us-east-1"};
  auto s = store::open(with_prefix(srv->url, fresh_prefix()));
  std::unordered_map<std::string, Stored> current;
  std::map<std::pair<std::string, hash::Digest>, Evidence> evidence;
  for (int batch = 0; batch < 60; ++batch) {
    CAPTURE(batch);
    std::vector<Record> records;
    size_t n = 1 + rng() % 80;
    for (size_t i = 0; i < n; ++i) {
      if (!records.empty() && rng() % 6 == 0) {
        records.push_back(records[rng() % records.size()]);  // a duplicate in the batch
        continue;
      }
      Record r = rec("id-" + std::to_string(rng() % 40), static_cast<Outcome>(1 + rng() % 3), tss[rng() % 8],
                     regions[rng() % 7], "tenant-" + std::to_string(rng() % 2));
      if (rng() % 3 == 0) r.params = "v" + std::to_string(rng() % 2);
      if (rng() % 5 == 0) r.payload = R"({"k":[1,"é"]})";
      records.push_back(r);
    }
    Plan want = plan(records, current, 0);
    for (const Evidence& e : want.evidence) evidence.emplace(std::make_pair(e.record.pcs_id, e.digest), e);
    ApplyStats got = s->apply(records, nullptr);
    CHECK(got.inserted == want.stats.inserted);
    CHECK(got.duplicates == want.stats.duplicates);
    CHECK(got.replaced == want.stats.replaced);
    CHECK(got.later == want.stats.later);
    CHECK(got.conflicts == want.stats.conflicts);
    CHECK(got.conflict_ids == want.stats.conflict_ids);
  }
  std::map<std::string, Stored> sorted(current.begin(), current.end());
  auto all = contents(*s);
  REQUIRE(all.size() == sorted.size());
  size_t i = 0;
  for (auto& [id, st] : sorted) CHECK(all[i++] == st);
  std::vector<std::pair<std::string, hash::Digest>> got_ev;
  s->scan_evidence([&](const Evidence& e) {
    got_ev.emplace_back(e.record.pcs_id, e.digest);
    CHECK(e.digest == record_digest(e.record));
    CHECK(e.detected_at > 0);
  });
  std::vector<std::pair<std::string, hash::Digest>> want_ev;
  for (auto& [k, e] : evidence) want_ev.push_back(k);
  CHECK(got_ev == want_ev);  // the same set, in (pcs_id, digest) order
}

TEST_CASE("store (redis): evidence keeps the time of its first detection") {
  NEED_SERVER(srv);
  auto s = store::open(with_prefix(srv->url, fresh_prefix()));
  auto times = [&] {
    std::map<std::string, int64_t> out;
    s->scan_evidence([&](const Evidence& e) { out[std::string(outcome_name(e.record.outcome))] = e.detected_at; });
    return out;
  };
  Record a = rec("p", Outcome::accepted, 10), b = rec("p", Outcome::rejected, 20), c = rec("p", Outcome::escalated, 30);
  std::vector<Record> ab{a, b};
  s->apply(ab, nullptr);
  auto first = times();
  REQUIRE(first.size() == 2);
  std::this_thread::sleep_for(std::chrono::milliseconds(5));
  std::vector<Record> abc{b, a, c};
  CHECK(s->apply(abc, nullptr).conflicts == 2);
  auto second = times();
  REQUIRE(second.size() == 3);
  CHECK(second["accepted"] == first["accepted"]);
  CHECK(second["rejected"] == first["rejected"]);
  CHECK(second["escalated"] > first["accepted"]);
}

TEST_CASE("store (redis): apply is all or nothing") {
  NEED_SERVER(srv);
  std::string p = fresh_prefix();
  auto s = store::open(with_prefix(srv->url, p));
  std::vector<Record> first{rec("a", Outcome::accepted, 10), rec("b", Outcome::accepted, 10)};
  Watermark w1{"us-west-2", 1, hash::sha256("1"), 1};
  s->apply(first, &w1);
  CHECK(s->count() == 2);
  CHECK(*s->watermark("us-west-2") == w1);

  // Break the evidence index (the script's last writes before the watermark): a batch
  // with new records, a replacement, a conflict and a watermark must change nothing.
  REQUIRE(cli(*srv, "SET " + p + ":g1:eids garbage") == "OK");
  std::vector<Record> second{rec("c", Outcome::accepted, 10), rec("a", Outcome::rejected, 5)};
  Watermark w2{"us-west-2", 2, hash::sha256("2"), 2};
  Error e = error_of([&] { s->apply(second, &w2); });
  CHECK(e.code() == Code::data);
  CHECK(std::string(e.what()).find(p + ":g1:eids is a string, not a zset") != std::string::npos);
  CHECK(s->count() == 2);
  CHECK(*s->watermark("us-west-2") == w1);
  CHECK(contents(*s).at(0).record == first[0]);
  CHECK(cli(*srv, "HLEN " + p + ":g1:e") == "0");

  REQUIRE(cli(*srv, "DEL " + p + ":g1:eids") == "1");
  ApplyStats st = s->apply(second, &w2);
  CHECK(st.inserted == 1);
  CHECK(st.replaced == 1);
  CHECK(st.conflicts == 1);
  CHECK(*s->watermark("us-west-2") == w2);
  CHECK(s->count() == 3);
}

TEST_CASE("store (redis): concurrent writers lose nothing and insert each pcs_id once") {
  NEED_SERVER(srv);
  std::string url = with_prefix(srv->url, fresh_prefix());
  std::mt19937_64 rng(7);
  std::vector<Record> records;
  for (int i = 0; i < 3000; ++i)
    records.push_back(rec("c-" + std::to_string(rng() % 700), static_cast<Outcome>(1 + rng() % 3),
                          static_cast<int64_t>(rng() % 100), rng() % 2 ? "us-east-1" : "eu-west-1"));
  std::map<std::string, Stored> want;
  for (const Record& r : records) {
    auto d = record_digest(r);
    auto it = want.find(r.pcs_id);
    if (it == want.end() || first_write_before(r, d, it->second.record, it->second.digest)) want[r.pcs_id] = {r, d};
  }
  constexpr int kWriters = 4;
  std::vector<ApplyStats> stats(kWriters);
  std::vector<std::string> errors(kWriters);
  std::vector<std::thread> threads;
  for (int t = 0; t < kWriters; ++t) {
    threads.emplace_back([&, t] {
      try {
        auto s = store::open(url);
        std::vector<Record> mine = records;
        std::shuffle(mine.begin(), mine.end(), std::mt19937_64(static_cast<uint64_t>(t)));
        for (size_t at = 0; at < mine.size(); at += 50)
          stats[t] +=
              s->apply(std::span<const Record>(mine).subspan(at, std::min<size_t>(50, mine.size() - at)), nullptr);
      } catch (const std::exception& e) {
        errors[t] = e.what();
      }
    });
  }
  for (auto& th : threads) th.join();
  ApplyStats total;
  for (int t = 0; t < kWriters; ++t) {
    CHECK(errors[t] == "");
    total += stats[t];
  }
  CHECK(total.inserted == want.size());
  CHECK(total.inserted + total.duplicates + total.replaced + total.later == kWriters * records.size());
  auto s = store::open(url);
  auto all = contents(*s);
  REQUIRE(all.size() == want.size());
  for (const Stored& st : all) CHECK(st == want.at(st.record.pcs_id));
}

TEST_CASE("store (redis): scans page in bytewise order; bulk_load checks its input") {
  NEED_SERVER(srv);
  auto s = store::open(with_prefix(srv->url, fresh_prefix()));
  // 25,000 ids over printable ASCII, loaded in bytewise order: three pages and a bit.
  std::mt19937_64 rng(99);
  std::set<std::string> ids;
  while (ids.size() < 25000) {
    std::string id;
    size_t n = 1 + rng() % 12;
    for (size_t i = 0; i < n; ++i) id += static_cast<char>(0x20 + rng() % 95);
    if (id.front() != ' ') ids.insert(id);  // std::set<std::string>: bytewise order
  }
  auto it = ids.begin();
  int64_t ts = 0;
  s->bulk_load(
      [&](Stored& out) {
        if (it == ids.end()) return false;
        out.record = rec(*it++, Outcome::escalated, ts++);
        out.digest = record_digest(out.record);
        return true;
      },
      {});
  CHECK(s->count() == ids.size());
  std::string last;
  size_t n = 0;
  bool ordered = true;
  s->scan([&](const Stored& st) {
    if (n++ && !(last < st.record.pcs_id)) ordered = false;
    last = st.record.pcs_id;
  });
  CHECK(ordered);
  CHECK(n == ids.size());
  CHECK(last == *ids.rbegin());

  // bulk_load wants an empty store and increasing ids.
  auto once = [](Record r) {
    return [r, done = false](Stored& out) mutable {
      if (done) return false;
      done = true;
      out = {r, record_digest(r)};
      return true;
    };
  };
  CHECK(error_of([&] { s->bulk_load(once(rec("zz", Outcome::accepted, 1)), {}); }).code() == Code::internal);
  auto t = store::open(with_prefix(srv->url, fresh_prefix()));
  std::vector<Stored> backwards{{rec("b", Outcome::accepted, 1), {}}, {rec("a", Outcome::accepted, 1), {}}};
  size_t at = 0;
  CHECK(error_of([&] {
          t->bulk_load(
              [&](Stored& out) {
                if (at == backwards.size()) return false;
                out = backwards[at++];
                out.digest = record_digest(out.record);
                return true;
              },
              {});
        }).code() == Code::internal);
}

TEST_CASE("store (redis): generations — a rebuild replaces the store under a reader and a stale scratch store") {
  NEED_SERVER(srv);
  std::string p = fresh_prefix();
  std::string url = with_prefix(srv->url, p);
  auto s = store::open(url);
  std::vector<Stored> fresh;
  for (int i = 0; i < 15000; ++i) {
    Record r = rec(fmt::format("r-{:05}", i), Outcome::accepted, i);
    fresh.push_back({r, record_digest(r)});
  }
  size_t at = 0;
  s->bulk_load(
      [&](Stored& out) {
        if (at == fresh.size()) return false;
        out = fresh[at++];
        return true;
      },
      {});
  // A reader in the middle of a scan when another process swaps in a rebuild: the next
  // page fails (run again) instead of ending the scan early.
  size_t seen = 0;
  Error e = error_of([&] {
    s->scan([&](const Stored&) {
      if (seen++ == 0) {
        auto other = store::open(url);
        auto scratch = other->open_scratch();
        std::vector<Record> one{rec("new", Outcome::accepted, 1)};
        scratch->apply(one, nullptr);
        other->replace_with(std::move(scratch));
      }
    });
  });
  CHECK(e.code() == Code::temp_fail);
  CHECK(std::string(e.what()).find("was replaced") != std::string::npos);
  CHECK(seen == 10000);  // the first page
  CHECK(s->count() == 1);
  // The old generation's keys are gone.
  CHECK(cli(*srv, "EXISTS " + p + ":g1:r " + p + ":g1:ids") == "0");
  CHECK(cli(*srv, "HGET " + p + ":meta current") == "2");

  // A second open_scratch() discards the first one's keys; the first can no longer swap.
  auto one = s->open_scratch();
  std::vector<Record> x{rec("x", Outcome::accepted, 1)};
  one->apply(x, nullptr);
  CHECK(cli(*srv, "EXISTS " + p + ":g3:r") == "1");
  auto two = s->open_scratch();
  CHECK(cli(*srv, "EXISTS " + p + ":g3:r") == "0");
  CHECK(error_of([&] { one->apply(x, nullptr); }).code() == Code::temp_fail);
  CHECK(error_of([&] { s->replace_with(std::move(one)); }).code() == Code::temp_fail);
  CHECK(s->count() == 1);
  s->replace_with(std::move(two));
  CHECK(s->count() == 0);
  // A scratch store names itself apart from the live one.
  CHECK(s->open_scratch()->url() == mask_url(url) + "#rebuild");
  // One dropped without replace_with() (a failed rebuild) takes its keys with it.
  {
    auto failed = s->open_scratch();
    failed->apply(x, nullptr);
    REQUIRE(cli(*srv, "HGET " + p + ":meta scratch") == "6");
    CHECK(cli(*srv, "EXISTS " + p + ":g6:r") == "1");
  }
  CHECK(cli(*srv, "EXISTS " + p + ":g6:r " + p + ":g6:ids") == "0");
  CHECK(cli(*srv, "HEXISTS " + p + ":meta scratch") == "0");
  CHECK(s->count() == 0);
}

TEST_CASE("store (redis): a lost connection fails the call and the next call reconnects; a lost script is resent") {
  NEED_SERVER(srv);
  // Database 9 is this test's alone, so CLIENT LIST finds our connection by it.
  std::string url = "redis://:" + srv->password + "@" + srv->host + ":" + srv->port + "/9?prefix=" + fresh_prefix();
  auto s = store::open(url);
  std::vector<Record> one{rec("x", Outcome::accepted, 1)};
  s->apply(one, nullptr);
  std::string list = cli(*srv, "CLIENT LIST");
  std::string id;
  for (size_t at = 0; at < list.size();) {
    size_t nl = list.find('\n', at);
    std::string line = list.substr(at, nl == std::string::npos ? std::string::npos : nl - at);
    at = nl == std::string::npos ? list.size() : nl + 1;
    if (line.find(" db=9 ") != std::string::npos) id = line.substr(3, line.find(' ') - 3);
  }
  REQUIRE(!id.empty());
  REQUIRE(cli(*srv, "CLIENT KILL ID " + id) == "1");
  Error e = error_of([&] { s->count(); });
  CHECK(e.code() == Code::unavailable);
  CHECK(std::string(e.what()).find(srv->password) == std::string::npos);
  CHECK(s->count() == 1);
  // A server that forgot the script (restart, SCRIPT FLUSH) is sent it again.
  REQUIRE(cli(*srv, "SCRIPT FLUSH") == "OK");
  std::vector<Record> two{rec("y", Outcome::accepted, 1)};
  CHECK(s->apply(two, nullptr).inserted == 1);
  CHECK(s->count() == 2);
}
