// PostgreSQL-specific behaviour of the dedup store (lib/flk/store/postgres.cpp): error
// codes and messages, atomicity, reconnection, concurrency, bytewise order. The
// behaviour all back ends share is in store_test.cpp. Needs the test server
// ($FLK_TEST_SERVERS/postgres.url, tests/servers/postgres.sh); skipped without it,
// except the URL checks, which fail before connecting.
#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <fstream>
#include <map>
#include <random>
#include <thread>

#include "flk/store/store.hpp"
#include "flk/util/error.hpp"
#include "test_util.hpp"

using flk::test::contents;
using flk::test::rec;

using namespace flk;
using namespace flk::store;

namespace {

// The test server's URL (no query string), or "" when it does not run.
std::string server_url() {
  const char* dir = std::getenv("FLK_TEST_SERVERS");
  if (!dir) return {};
  std::ifstream f(std::filesystem::path(dir) / "postgres.url");
  std::string url;
  std::getline(f, url);
  return url;
}

#define REQUIRE_SERVER(url)                                                          \
  std::string url = server_url();                                                    \
  if (url.empty()) {                                                                 \
    MESSAGE("skipped: no PostgreSQL test server ($FLK_TEST_SERVERS/postgres.url)");  \
    return;                                                                          \
  }

// A schema name no other test uses.
std::string fresh_schema() {
  static int n = 0;
  return "pg" + std::to_string(::getpid()) + "_" + std::to_string(++n);
}

std::string with(const std::string& url, const std::string& param) {
  return url + (url.find('?') == std::string::npos ? "?" : "&") + param;
}

std::string shell_quote(std::string_view s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') out += "'\\''";
    else out += c;
  }
  return out + "'";
}

// Runs SQL on the server with psql(1) (from the postgresql-client package).
void psql(const std::string& url, const std::string& sql) {
  std::string cmd = "psql -X -q -v ON_ERROR_STOP=1 -d " + shell_quote(url) + " -c " + shell_quote(sql) + " >/dev/null";
  REQUIRE(std::system(cmd.c_str()) == 0);
}

int closed_port() { return flk::test::closed_port(); }

// The error open(url) throws; fails the test when it opens.
Error open_error(const std::string& url) {
  try {
    store::open(url);
  } catch (const Error& e) {
    return e;
  }
  FAIL("opened '" << url << "'");
  return Error(Code::ok, "");
}



}  // namespace

TEST_CASE("store (postgres): malformed URLs are configuration errors without the password") {
  for (std::string url : std::vector<std::string>{
           "postgres://flk:s3cret-pw@127.0.0.1:notaport/flk",
           "postgres://flk:s3cret-pw@127.0.0.1:99999/flk",
           "postgresql://flk:s3cret-pw@127.0.0.1:5432/flk?nosuchoption=1",
           "postgres://flk:s3cret-pw@127.0.0.1/flk?schema=",
           "postgres://flk:s3cret-pw@127.0.0.1/flk?schema=a&schema=b",
           "postgres://flk:s3cret-pw@127.0.0.1/flk?schema=%zz",
           "postgres://flk:s3cret-pw@127.0.0.1/flk?schema=" + std::string(56, 'x'),
           "postgres://flk:s3cret-pw@127.0.0.1/flk?connect_timeout=soon",
           "postgres://flk:s3cret-pw@[::1/flk",
           "postgres://127.0.0.1/flk?password=s3cret-pw&sslmode=sometimes",
       }) {
    CAPTURE(url);
    Error e = open_error(url);
    CHECK(e.code() == Code::config);
    std::string msg = e.what();
    CHECK(msg.find("invalid store URL 'postgres") == 0);
    CHECK(msg.find("s3cret-pw") == std::string::npos);
    CHECK(msg.find('\n') == std::string::npos);
  }
}

TEST_CASE("store (postgres): an unreachable server is unavailable; the message masks the password") {
  int port = closed_port();
  std::string url = fmt::format("postgres://flk:s3cret-pw@127.0.0.1:{}/flk", port);
  Error e = open_error(url);
  CHECK(e.code() == Code::unavailable);
  std::string msg = e.what();
  CHECK(msg.find(fmt::format("store 'postgres://flk:***@127.0.0.1:{}/flk': cannot connect: ", port)) == 0);
  CHECK(msg.find("s3cret-pw") == std::string::npos);
  CHECK(msg.find('\n') == std::string::npos);
  CHECK(msg.find('\t') == std::string::npos);
}

TEST_CASE("store (postgres): a wrong password is refused as no_perm; no password in the message") {
  REQUIRE_SERVER(url);
  std::string wrong = url;
  size_t at = wrong.find("flk-test-pw");
  REQUIRE(at != std::string::npos);
  wrong.replace(at, 11, "wrong-pw-42");
  Error e = open_error(with(wrong, "schema=" + fresh_schema()));
  CHECK(e.code() == Code::no_perm);
  std::string msg = e.what();
  CHECK(msg.find("store 'postgres://flk:***@127.0.0.1:") == 0);
  CHECK(msg.find("cannot connect: ") != std::string::npos);
  CHECK(msg.find("password authentication failed") != std::string::npos);
  CHECK(msg.find("wrong-pw-42") == std::string::npos);
  CHECK(msg.find("flk-test-pw") == std::string::npos);
  // A database that does not exist is a configuration error.
  std::string nodb = url.substr(0, url.rfind('/')) + "/no_such_db";
  Error e2 = open_error(nodb);
  CHECK(e2.code() == Code::config);
  CHECK(std::string(e2.what()).find("flk-test-pw") == std::string::npos);
}

TEST_CASE("store (postgres): schema= selects the schema, also after other parameters; url() masks") {
  REQUIRE_SERVER(url);
  std::string schema = fresh_schema();
  std::string u = with(with(url, "application_name=flk-unit"), "schema=" + schema);
  auto s = store::open(u);
  CHECK(s->url() == mask_url(u));
  CHECK(s->url().find("flk-test-pw") == std::string::npos);
  std::vector<Record> batch{rec("p", Outcome::accepted, 1)};
  s->apply(batch, nullptr);
  // The data is in that schema, not in the default one.
  psql(url, fmt::format("DO $$ BEGIN IF (SELECT count(*) FROM \"{}\".records) <> 1 THEN RAISE 'wrong count'; END IF; END $$",
                        schema));
  auto scratch = s->open_scratch();
  CHECK(scratch->url() == mask_url(with(with(url, "application_name=flk-unit"), "schema=" + schema + "_rebuild")));
  CHECK(scratch->count() == 0);
  // A schema name that needs quoting.
  auto odd = store::open(with(url, "schema=" + schema + "%22-x%20y"));
  odd->apply(batch, nullptr);
  CHECK(odd->count() == 1);
}

TEST_CASE("store (postgres): a schema version newer than this build is refused") {
  REQUIRE_SERVER(url);
  std::string schema = fresh_schema();
  std::string u = with(url, "schema=" + schema);
  store::open(u).reset();
  psql(url, fmt::format("UPDATE \"{}\".meta SET value = '99' WHERE key = 'schema_version'", schema));
  Error e = open_error(u);
  CHECK(e.code() == Code::config);
  CHECK(std::string(e.what()) == "store '" + mask_url(u) + "': schema version 99 is newer than this flk understands (1)");
}

TEST_CASE("store (postgres): a failed apply leaves nothing behind") {
  REQUIRE_SERVER(url);
  auto s = store::open(with(url, "schema=" + fresh_schema()));
  Record old = rec("p-1", Outcome::accepted, 200);
  Watermark w1{"us-west-2", 1, hash::sha256("1"), 10};
  std::vector<Record> first{old};
  s->apply(first, &w1);
  // An earlier write for p-1 (would replace it and add evidence), new records, and
  // one PostgreSQL cannot store (a NUL byte in text): the whole batch fails.
  std::vector<Record> batch;
  batch.push_back(rec("p-1", Outcome::rejected, 100));
  for (int i = 2; i < 50; ++i) batch.push_back(rec(fmt::format("p-{}", i), Outcome::accepted, i));
  batch[30].params = std::string("tol\0x", 5);
  Watermark w2{"us-west-2", 2, hash::sha256("2"), 20};
  try {
    s->apply(batch, &w2);
    FAIL("applied");
  } catch (const Error& e) {
    CHECK(e.code() == Code::data);
    CHECK(std::string(e.what()).find("store '" + s->url() + "': applying 49 records: ") == 0);
  }
  CHECK(s->count() == 1);
  CHECK(contents(*s).at(0).record == old);
  CHECK(*s->watermark("us-west-2") == w1);
  int evidence = 0;
  s->scan_evidence([&](const Evidence&) { ++evidence; });
  CHECK(evidence == 0);
  // The connection is usable after the rollback.
  batch[30].params.reset();
  ApplyStats st = s->apply(batch, &w2);
  CHECK(st.replaced == 1);
  CHECK(st.inserted == 48);
  CHECK(s->count() == 49);
  CHECK(*s->watermark("us-west-2") == w2);
}

TEST_CASE("store (postgres): a lost connection is reported, then reopened on the next call") {
  REQUIRE_SERVER(url);
  std::string app = "flk-unit-kill-" + std::to_string(::getpid());
  auto s = store::open(with(with(url, "application_name=" + app), "schema=" + fresh_schema()));
  std::vector<Record> batch{rec("a", Outcome::accepted, 1)};
  s->apply(batch, nullptr);
  auto kill = [&] {
    // Waits (up to 5 s) until the backend is gone.
    psql(url, "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE application_name = '" + app + "'");
  };
  // Idle connection cut: the next call reconnects and succeeds.
  kill();
  CHECK(s->count() == 1);
  kill();
  std::vector<Record> more{rec("b", Outcome::accepted, 2)};
  CHECK(s->apply(more, nullptr).inserted == 1);
  kill();
  CHECK(contents(*s).size() == 2);
  // Cut during a scan: unavailable (the next FETCH fails), and the store works again
  // afterwards.
  try {
    int n = 0;
    s->scan([&](const Stored&) {
      if (n++ == 0) kill();
    });
    FAIL("scanned over a lost connection");
  } catch (const Error& e) {
    CHECK(e.code() == Code::unavailable);
    CHECK(std::string(e.what()).find("store '" + s->url() + "': scanning the records: ") == 0);
    CHECK(std::string(e.what()).find("flk-test-pw") == std::string::npos);
  }
  CHECK(s->count() == 2);
}

TEST_CASE("store (postgres): bulk load and scan are in bytewise order, the same as SQLite's") {
  REQUIRE_SERVER(url);
  test::TempDir t;
  std::vector<std::string> ids{"a", "B", "é", "a-b", "A", "_", "~", "0", "a b", "ab", "Z", "a_b", "aa", "\x7f"};
  std::sort(ids.begin(), ids.end());  // std::string order: bytewise
  auto pg = store::open(with(url, "schema=" + fresh_schema()));
  auto lite = store::open("sqlite://" + (t / "order.db").string());
  for (Store* s : {pg.get(), lite.get()}) {
    size_t at = 0;
    s->bulk_load(
        [&](Stored& out) {
          if (at == ids.size()) return false;
          Record r = rec(ids[at++], Outcome::accepted, 1);
          out = Stored{r, record_digest(r)};
          return true;
        },
        {});
  }
  std::vector<std::string> pg_ids, lite_ids;
  pg->scan([&](const Stored& st) { pg_ids.push_back(st.record.pcs_id); });
  lite->scan([&](const Stored& st) { lite_ids.push_back(st.record.pcs_id); });
  CHECK(pg_ids == ids);
  CHECK(lite_ids == ids);
  CHECK(content_digest(*pg) == content_digest(*lite));
  // apply() in shuffled order scans in the same order.
  auto pg2 = store::open(with(url, "schema=" + fresh_schema()));
  std::vector<Record> shuffled;
  for (auto& id : ids) shuffled.push_back(rec(id, Outcome::accepted, 1));
  std::shuffle(shuffled.begin(), shuffled.end(), std::mt19937(7));
  pg2->apply(shuffled, nullptr);
  CHECK(content_digest(*pg2) == content_digest(*pg));
}

TEST_CASE("store (postgres): large batches, scans over many fetches, bulk load preconditions") {
  REQUIRE_SERVER(url);
  auto s = store::open(with(url, "schema=" + fresh_schema()));
  std::vector<Record> batch;
  for (int i = 0; i < 25000; ++i) batch.push_back(test::make_record(i));
  batch[123].payload = std::string(R"({"big":")") + std::string(300000, 'x') + "\"}";
  ApplyStats st = s->apply(batch, nullptr);
  CHECK(st.inserted == 25000);
  CHECK(s->count() == 25000);
  std::map<std::string, Record> expected;
  for (auto& r : batch) expected[r.pcs_id] = r;
  size_t n = 0;
  std::string prev;
  s->scan([&](const Stored& x) {
    CHECK(prev < x.record.pcs_id);
    prev = x.record.pcs_id;
    CHECK(x.record == expected.at(x.record.pcs_id));
    ++n;
  });
  CHECK(n == 25000);
  CHECK(s->apply(batch, nullptr).duplicates == 25000);

  // bulk_load wants an empty store and increasing pcs_ids; a failed load leaves
  // nothing (it is one transaction here, although the contract does not promise it).
  auto next_of = [](std::vector<std::string> ids) {
    return [ids, at = size_t(0)](Stored& out) mutable {
      if (at == ids.size()) return false;
      Record r = rec(ids[at++], Outcome::accepted, 1);
      out = Stored{r, record_digest(r)};
      return true;
    };
  };
  try {
    s->bulk_load(next_of({"x"}), {});
    FAIL("loaded into a full store");
  } catch (const Error& e) {
    CHECK(e.code() == Code::internal);
  }
  CHECK(s->count() == 25000);
  auto empty = store::open(with(url, "schema=" + fresh_schema()));
  try {
    empty->bulk_load(next_of({"a", "c", "b"}), {});
    FAIL("loaded out of order");
  } catch (const Error& e) {
    CHECK(e.code() == Code::internal);
    CHECK(std::string(e.what()).find("out of order at 'b'") != std::string::npos);
  }
  CHECK(empty->count() == 0);
  empty->bulk_load(next_of({"a", "b"}), {});
  CHECK(empty->count() == 2);
  // A store is not re-entrant from inside its own scan.
  CHECK_THROWS_AS(empty->scan([&](const Stored&) { empty->count(); }), Error);
  CHECK(empty->count() == 2);
}

TEST_CASE("store (postgres): concurrent opens and applies by several processes' connections") {
  REQUIRE_SERVER(url);
  std::string u = with(url, "schema=" + fresh_schema());
  // Several connections create the same new schema at once.
  std::vector<std::unique_ptr<Store>> stores(6);
  std::atomic<int> failures{0};
  {
    std::vector<std::thread> threads;
    for (auto& s : stores)
      threads.emplace_back([&] {
        try {
          s = store::open(u);
        } catch (const Error& e) {
          MESSAGE(std::string(e.what()));
          ++failures;
        }
      });
    for (auto& th : threads) th.join();
  }
  REQUIRE(failures == 0);
  // Each applies the same records (new pcs_ids, conflicting outcomes) in its own
  // order: every pcs_id is inserted exactly once over all, and the winners are those
  // of one serial run. (Which records become evidence depends on the order.)
  std::vector<Record> records;
  std::mt19937_64 rng(99);
  const char* regions[] = {"us-east-1", "us-west-2", "eu-west-1"};
  for (int i = 0; i < 600; ++i)
    records.push_back(rec("c-" + std::to_string(rng() % 200), static_cast<Outcome>(1 + rng() % 3),
                          static_cast<int64_t>(rng() % 20), regions[rng() % 3]));
  std::vector<ApplyStats> stats(stores.size());
  {
    std::vector<std::thread> threads;
    for (size_t k = 0; k < stores.size(); ++k)
      threads.emplace_back([&, k] {
        std::vector<Record> mine = records;
        std::mt19937_64 r(k);
        std::shuffle(mine.begin(), mine.end(), r);
        try {
          for (size_t at = 0; at < mine.size(); at += 25)
            stats[k] += stores[k]->apply(std::span<const Record>(mine).subspan(at, 25), nullptr);
        } catch (const Error& e) {
          MESSAGE(std::string(e.what()));
          ++failures;
        }
      });
    for (auto& th : threads) th.join();
  }
  REQUIRE(failures == 0);
  auto serial = store::open(with(url, "schema=" + fresh_schema()));
  ApplyStats one = serial->apply(records, nullptr);
  ApplyStats all;
  for (auto& x : stats) all += x;
  CHECK(all.inserted == one.inserted);
  CHECK(content_digest(*stores[0]) == content_digest(*serial));
}
