#include <doctest/doctest.h>

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <map>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "flk/ledger/ledger.hpp"
#include "flk/util/error.hpp"
#include "flk/util/fs.hpp"
#include "flk/util/hash.hpp"
#include "flk/util/json.hpp"
#include "flk/util/time.hpp"
#include "test_util.hpp"

using namespace flk;
namespace stdfs = std::filesystem;

namespace {

// A caller's entry: {"writer":w,"n":n[,"pad":"xxx…"]}.
std::string entry(int writer, int n, size_t pad = 0) {
  std::string out;
  json::Object o(out);
  o.num("writer", writer).num("n", n);
  if (pad) o.str("pad", std::string(pad, 'x'));
  o.close();
  return out;
}

// The file's lines, each with its "\n".
std::vector<std::string> lines_of(const stdfs::path& p) {
  std::string s = fs::read_file(p);
  std::vector<std::string> out;
  for (size_t pos = 0; pos < s.size();) {
    size_t nl = s.find('\n', pos);
    size_t end = nl == std::string::npos ? s.size() : nl + 1;
    out.push_back(s.substr(pos, end - pos));
    pos = end;
  }
  return out;
}

std::string join(const std::vector<std::string>& lines) {
  std::string s;
  for (const auto& l : lines) s += l;
  return s;
}

// Writes bytes to the end of a file as a foreign writer would (no lock, no chain).
void raw_append(const stdfs::path& p, std::string_view bytes) {
  fs::Fd fd = fs::Fd::open(p.string(), O_WRONLY | O_APPEND);
  fd.write_all(bytes);
}

// A ledger of `n` entries (writer 0, n = 1…n) in a fresh file; returns the head after each.
std::vector<ledger::Head> make_ledger(const stdfs::path& p, int n) {
  ledger::Ledger l(p);
  std::vector<ledger::Head> heads{ledger::Head{}};
  for (int i = 1; i <= n; ++i) heads.push_back(l.append(entry(0, i)));
  return heads;
}

uint64_t offset_of_line(const std::vector<std::string>& lines, size_t line /* from 1 */) {
  uint64_t off = 0;
  for (size_t i = 0; i + 1 < line; ++i) off += lines[i].size();
  return off;
}

}  // namespace

TEST_CASE("ledger: append and verify round trip, the exact format") {
  test::TempDir t;
  stdfs::path p = t / "ledger.jsonl";
  ledger::Ledger l(p);
  REQUIRE(stdfs::exists(p));
  auto empty = ledger::verify(p);
  CHECK(empty.ok);
  CHECK(empty.head == ledger::Head{});
  CHECK(empty.bytes == 0);

  ledger::Head h1 = l.append(entry(0, 1));
  CHECK(h1.seq == 1);
  ledger::Head h2 = l.append("{}");
  ledger::Head h3 = l.append(R"(  { "a" : [1, 2] , "b":"é" }  )");
  std::vector<std::string> batch{entry(0, 4), entry(0, 5), entry(0, 6)};
  ledger::Head h6 = l.append_all(batch);
  CHECK(h2.seq == 2);
  CHECK(h3.seq == 3);
  CHECK(h6.seq == 6);
  CHECK(l.append_all({}) == h6);  // nothing to write: the current head

  // Another handle (as another process would) continues the same chain.
  ledger::Head h7 = ledger::Ledger(p).append(entry(0, 7));
  CHECK(h7.seq == 7);

  auto lines = lines_of(p);
  REQUIRE(lines.size() == 7);
  std::string zeros(64, '0');
  auto j1 = nlohmann::json::parse(lines[0]);
  CHECK(lines[0].rfind(R"({"seq":1,"time":")", 0) == 0);
  CHECK(lines[0].find(R"(","prev":")" + zeros + R"(","writer":0,"n":1})" + "\n") != std::string::npos);
  timeutil::parse_rfc3339(j1["time"].get<std::string>());
  CHECK(lines[1].rfind(R"({"seq":2,"time":")", 0) == 0);
  CHECK(lines[1].find(R"(","prev":")" + hash::to_hex(hash::sha256(lines[0])) + "\"}\n") != std::string::npos);
  // The caller's members are kept byte for byte.
  CHECK(lines[2].find(R"(","prev":")" + hash::to_hex(hash::sha256(lines[1])) + R"(", "a" : [1, 2] , "b":"é" })" +
                      "\n") != std::string::npos);
  for (size_t i = 1; i < lines.size(); ++i) {
    auto j = nlohmann::json::parse(lines[i]);
    CHECK(j["seq"] == i + 1);
    CHECK(j["prev"] == hash::to_hex(hash::sha256(lines[i - 1])));
  }
  CHECK(h1.hash == hash::sha256(lines[0]));
  CHECK(h7.hash == hash::sha256(lines[6]));

  auto r = ledger::verify(p);
  CHECK(r.ok);
  CHECK(r.message.empty());
  CHECK(r.head == h7);
  CHECK(r.bytes == stdfs::file_size(p));
  CHECK_NOTHROW(r.check());
  CHECK(ledger::verify(p, h3).ok);  // a head kept earlier: the ledger has grown past it
  CHECK(ledger::verify(p, h7).ok);
}

TEST_CASE("ledger: heads as text") {
  ledger::Head h{42, hash::sha256("x")};
  std::string s = ledger::format_head(h);
  CHECK(s == "42:" + hash::to_hex(hash::sha256("x")));
  CHECK(ledger::parse_head(s) == h);
  CHECK(ledger::parse_head("0:" + std::string(64, '0')) == ledger::Head{});
  for (const std::string& bad : std::vector<std::string>{"", "42", ":" + std::string(64, '0'), "x:" + std::string(64, '0'), "42:abc",
                          "-1:" + std::string(64, '0'), "4 2:" + std::string(64, '0')}) {
    CAPTURE(bad);
    try {
      ledger::parse_head(bad);
      FAIL("parsed");
    } catch (const Error& e) {
      CHECK(e.code() == Code::data);
      CHECK(std::string(e.what()).find("malformed ledger head") == 0);
    }
  }
}

TEST_CASE("ledger: malformed entries are refused and nothing is written") {
  test::TempDir t;
  stdfs::path p = t / "ledger.jsonl";
  ledger::Ledger l(p);
  l.append(entry(0, 1));
  std::string before = fs::read_file(p);
  struct Case {
    std::string entry, why;
  };
  for (const Case& c : std::vector<Case>{{"[1,2]", "not a JSON object"},
                                         {"not json", "not valid JSON"},
                                         {"", "not valid JSON"},
                                         {R"({"a":1} {"b":2})", "not valid JSON"},
                                         {R"({"seq":9})", "reserved key 'seq'"},
                                         {R"({"x":1,"prev":"00"})", "reserved key 'prev'"},
                                         {R"({"time":"now"})", "reserved key 'time'"},
                                         {"{\"a\":\n1}", "line break"},
                                         {"{\"a\":1}\r", "line break"}}) {
    CAPTURE(c.entry);
    try {
      l.append(c.entry);
      FAIL("appended");
    } catch (const Error& e) {
      CHECK(e.code() == Code::data);
      CHECK(std::string(e.what()).find("ledger '" + p.string() + "': cannot append entry: ") == 0);
      CHECK(std::string(e.what()).find(c.why) != std::string::npos);
    }
  }
  // One bad entry in a batch: none of it is written.
  std::vector<std::string> batch{entry(0, 2), "[]", entry(0, 3)};
  CHECK_THROWS_AS(l.append_all(batch), Error);
  CHECK(fs::read_file(p) == before);
  CHECK(l.append(entry(0, 2)).seq == 2);  // the handle is not poisoned by a refused entry
  CHECK(ledger::verify(p).ok);
}

TEST_CASE("ledger: verify names the first damaged line") {
  test::TempDir t;
  stdfs::path p = t / "ledger.jsonl";
  auto heads = make_ledger(p, 6);
  const auto good = lines_of(p);
  REQUIRE(good.size() == 6);
  REQUIRE(ledger::verify(p).ok);

  // Damage the pristine ledger, verify, return the result; restore the file afterwards.
  std::vector<std::string> last;  // the damaged lines verified last
  auto damaged = [&](const std::vector<std::string>& lines, std::optional<ledger::Head> expected = std::nullopt) {
    last = lines;
    fs::write_file_atomic(p, join(lines));
    auto r = ledger::verify(p, expected);
    fs::write_file_atomic(p, join(good));
    if (!r.ok) {
      CHECK(r.message == "ledger '" + p.string() + "': line " + std::to_string(r.bad_line) + " at byte offset " +
                             std::to_string(r.offset) + ": " + r.why);
      try {
        r.check();
        FAIL("check passed");
      } catch (const Error& e) {
        CHECK(e.code() == Code::data);
        CHECK(std::string(e.what()) == r.message);
      }
    }
    return r;
  };
  auto expect_bad = [&](const ledger::VerifyResult& r, uint64_t line, uint64_t offset, const std::string& why) {
    CHECK_FALSE(r.ok);
    CHECK(r.bad_line == line);
    CHECK(r.offset == offset);
    CHECK(r.bytes == offset);
    CHECK(r.head.seq == line - 1);
    // The head of the lines before it, which passed.
    CHECK(r.head.hash == (line == 1 ? hash::Digest{} : hash::sha256(last[line - 2])));
    CHECK_MESSAGE(r.why.find(why) != std::string::npos, r.why);
  };

  SUBCASE("a byte of a caller's field edited: the next line's prev no longer matches") {
    auto lines = good;
    size_t at = lines[2].find(R"("n":3)");
    REQUIRE(at != std::string::npos);
    lines[2][at + 4] = '8';
    expect_bad(damaged(lines), 4, offset_of_line(good, 4), "prev does not match the SHA-256 of line 3");
  }
  SUBCASE("a byte of prev edited") {
    auto lines = good;
    size_t at = lines[4].find("\"prev\":\"") + 10;
    lines[4][at] = lines[4][at] == 'a' ? 'b' : 'a';
    expect_bad(damaged(lines), 5, offset_of_line(good, 5), "prev does not match the SHA-256 of line 4");
  }
  SUBCASE("an edit that breaks the JSON") {
    auto lines = good;
    lines[1][0] = '[';
    expect_bad(damaged(lines), 2, offset_of_line(good, 2), "not valid JSON");
  }
  SUBCASE("a line deleted") {
    auto lines = good;
    lines.erase(lines.begin() + 2);
    expect_bad(damaged(lines), 3, offset_of_line(good, 3), "seq is 4, expected 3");
  }
  SUBCASE("the first line deleted") {
    auto lines = good;
    lines.erase(lines.begin());
    expect_bad(damaged(lines), 1, 0, "seq is 2, expected 1");
  }
  SUBCASE("two lines swapped") {
    auto lines = good;
    std::swap(lines[1], lines[2]);
    expect_bad(damaged(lines), 2, offset_of_line(good, 2), "seq is 3, expected 2");
  }
  SUBCASE("a line repeated") {
    auto lines = good;
    lines.insert(lines.begin() + 3, lines[2]);
    expect_bad(damaged(lines), 4, offset_of_line(good, 4), "seq is 3, expected 4");
  }
  SUBCASE("a line deleted and the seqs renumbered: the chain still breaks") {
    auto lines = good;
    lines.erase(lines.begin() + 2);
    for (size_t i = 2; i < lines.size(); ++i) {
      auto j = nlohmann::json::parse(lines[i]);
      size_t at = lines[i].find(",");
      lines[i] = R"({"seq":)" + std::to_string(i + 1) + lines[i].substr(at);
      CHECK(nlohmann::json::parse(lines[i])["writer"] == j["writer"]);
    }
    expect_bad(damaged(lines), 3, offset_of_line(good, 3), "prev does not match the SHA-256 of line 2");
  }
  SUBCASE("a blank line inserted") {
    auto lines = good;
    lines.insert(lines.begin() + 5, "\n");
    expect_bad(damaged(lines), 6, offset_of_line(good, 6), "empty line");
  }
  SUBCASE("truncated in the middle of a line") {
    auto lines = good;
    lines.resize(5);
    lines[4].resize(lines[4].size() / 2);
    auto r = damaged(lines);
    expect_bad(r, 5, offset_of_line(good, 5), "torn: " + std::to_string(lines[4].size()) + " bytes with no final newline");
    CHECK(r.why.find("truncate -s " + std::to_string(offset_of_line(good, 5))) != std::string::npos);
  }
  SUBCASE("a last line without its newline") {
    auto lines = good;
    lines[5].pop_back();
    expect_bad(damaged(lines), 6, offset_of_line(good, 6), "torn");
  }
  SUBCASE("a foreign line appended") {
    auto lines = good;
    lines.push_back(R"({"seq":7,"hello":1})"
                    "\n");
    auto r = damaged(lines);
    CHECK_FALSE(r.ok);
    CHECK(r.bad_line == 7);
    CHECK(r.offset == stdfs::file_size(p));
    CHECK(r.head == heads[6]);
    CHECK(r.why == "no prev (a SHA-256 in hex)");
  }
  SUBCASE("truncated at a line boundary: found only against a head kept elsewhere") {
    auto lines = good;
    lines.resize(4);
    auto r = damaged(lines);
    CHECK(r.ok);  // a shorter chain is still a chain
    CHECK(r.head == heads[4]);
    CHECK(ledger::format_head(r.head) != ledger::format_head(heads[6]));  // what a caller compares
    CHECK(damaged(lines, heads[4]).ok);
    CHECK(damaged(lines, heads[2]).ok);
    auto missing = damaged(lines, heads[6]);
    expect_bad(missing, 5, offset_of_line(good, 5), "missing: the ledger ends after line 4, but the recorded head");
    CHECK(missing.head == heads[4]);
  }
  SUBCASE("everything truncated away") {
    auto r = damaged({}, heads[1]);
    expect_bad(r, 1, 0, "missing: the ledger ends after line 0");
  }
  SUBCASE("the last line rewritten: found only against a head kept elsewhere") {
    auto lines = good;
    size_t at = lines[5].find(R"("n":6)");
    lines[5][at + 4] = '9';
    CHECK(damaged(lines).ok);
    CHECK(damaged(lines, heads[5]).ok);
    expect_bad(damaged(lines, heads[6]), 6, offset_of_line(good, 6), "differs from the recorded head 6:");
  }
  SUBCASE("the tail rewritten with a recomputed chain: found only against a kept head") {
    // Rebuild lines 3… of a different content, chained properly, in a second file.
    stdfs::path q = t / "forged.jsonl";
    fs::write_file_atomic(q, good[0] + good[1]);
    ledger::Ledger forger(q);
    for (int i = 3; i <= 6; ++i) forger.append(entry(0, 100 + i));
    auto forged = lines_of(q);
    CHECK(damaged(forged).ok);
    CHECK(damaged(forged, heads[2]).ok);
    expect_bad(damaged(forged, heads[4]), 4, offset_of_line(forged, 4), "differs from the recorded head 4:");
  }
  CHECK(fs::read_file(p) == join(good));
}

TEST_CASE("ledger: an append after a torn tail refuses; the operator's repair works") {
  test::TempDir t;
  stdfs::path p = t / "ledger.jsonl";
  make_ledger(p, 3);
  uint64_t good_size = stdfs::file_size(p);
  raw_append(p, R"({"seq":4,"time":"2026-11-26T08:00:00Z","pr)");  // a crash mid-write
  std::string torn = fs::read_file(p);

  ledger::Ledger l(p);
  try {
    l.append(entry(0, 4));
    FAIL("appended over a torn tail");
  } catch (const Error& e) {
    CHECK(e.code() == Code::data);
    std::string msg = e.what();
    CHECK(msg.find("ledger '" + p.string() + "': torn last line at byte offset " + std::to_string(good_size) + " (" +
                   std::to_string(torn.size() - good_size) + " bytes with no final newline") == 0);
    CHECK(msg.find("truncate -s " + std::to_string(good_size) + " '" + p.string() + "'") != std::string::npos);
  }
  CHECK(fs::read_file(p) == torn);  // untouched
  std::vector<std::string> batch{entry(0, 4), entry(0, 5)};
  CHECK_THROWS_AS(l.append_all(batch), Error);
  CHECK(fs::read_file(p) == torn);

  auto r = ledger::verify(p);
  CHECK_FALSE(r.ok);
  CHECK(r.bad_line == 4);
  CHECK(r.offset == good_size);
  CHECK(r.head.seq == 3);

  // The repair the header describes: keep the bytes, cut them off, append again.
  { fs::Fd(fs::Fd::open(p.string(), O_WRONLY)).truncate(good_size); }
  CHECK(l.append(entry(0, 4)).seq == 4);
  auto after = ledger::verify(p);
  CHECK(after.ok);
  CHECK(after.head.seq == 4);

  SUBCASE("a torn line longer than a block, in a file of one line") {
    stdfs::path q = t / "one.jsonl";
    fs::write_file_atomic(q, std::string(200000, 'x'));
    try {
      ledger::Ledger(q).append("{}");
      FAIL("appended");
    } catch (const Error& e) {
      CHECK(std::string(e.what()).find("torn last line at byte offset 0 (200000 bytes") != std::string::npos);
    }
  }
  SUBCASE("a complete last line that is not a ledger entry") {
    raw_append(p, "{\"hello\":1}\n");
    uint64_t at = stdfs::file_size(p) - 12;
    try {
      l.append(entry(0, 5));
      FAIL("appended");
    } catch (const Error& e) {
      CHECK(e.code() == Code::data);
      CHECK(std::string(e.what()) == "ledger '" + p.string() + "': the last line, at byte offset " +
                                         std::to_string(at) +
                                         ", is not a ledger entry: refusing to append; verify the ledger");
    }
  }
}

TEST_CASE("ledger: long lines are read back across blocks") {
  test::TempDir t;
  stdfs::path p = t / "ledger.jsonl";
  ledger::Ledger l(p);
  ledger::Head h;
  // Sizes around the 64 KiB block the tail is read in, and a line longer than several.
  for (size_t pad : {200000, 1, 65536, 65400, 65535, 0, 140000, 3}) h = l.append(entry(0, 1, pad));
  auto lines = lines_of(p);
  REQUIRE(lines.size() == 8);
  CHECK(h.hash == hash::sha256(lines[7]));
  auto r = ledger::verify(p);
  CHECK(r.ok);
  CHECK(r.head == h);

  std::string big = entry(0, 1, ledger::kMaxLine);
  CHECK_THROWS_AS(l.append(big), Error);
  CHECK(ledger::verify(p).head == h);
}

TEST_CASE("ledger: concurrent appenders in several processes keep one exact chain") {
  test::TempDir t;
  stdfs::path p = t / "ledger.jsonl";
  constexpr int kWriters = 3, kEach = 500, kBatch = 10;
  int go[2];
  REQUIRE(::pipe(go) == 0);
  std::vector<pid_t> kids;
  for (int w = 0; w < kWriters; ++w) {
    pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      int status = 0;
      try {
        ::close(go[1]);
        ledger::Ledger l(p);
        char c;
        if (::read(go[0], &c, 1) != 0) ::_exit(3);  // wait for the start: EOF
        if (w == kWriters - 1) {
          // The last writer appends in batches (one lock, one write, one fsync each).
          for (int i = 0; i < kEach; i += kBatch) {
            std::vector<std::string> batch;
            for (int k = i; k < i + kBatch; ++k) batch.push_back(entry(w, k));
            l.append_all(batch);
          }
        } else {
          for (int i = 0; i < kEach; ++i) l.append(entry(w, i));
        }
      } catch (...) {
        status = 2;
      }
      ::_exit(status);
    }
    kids.push_back(pid);
  }
  ::close(go[0]);
  ::close(go[1]);  // all start at once
  for (pid_t pid : kids) {
    int st = 0;
    REQUIRE(::waitpid(pid, &st, 0) == pid);
    CHECK(WIFEXITED(st));
    CHECK(WEXITSTATUS(st) == 0);
  }

  auto r = ledger::verify(p);
  CHECK_MESSAGE(r.ok, r.message);
  CHECK(r.head.seq == kWriters * kEach);
  CHECK(r.bytes == stdfs::file_size(p));

  // Every entry once, each writer's in its order; the batches contiguous.
  std::map<int, std::vector<int>> seen;
  std::vector<int> writer_of_line;
  for (const auto& line : lines_of(p)) {
    auto j = nlohmann::json::parse(line);
    seen[j["writer"].get<int>()].push_back(j["n"].get<int>());
    writer_of_line.push_back(j["writer"].get<int>());
  }
  REQUIRE(seen.size() == kWriters);
  for (auto& [w, ns] : seen) {
    CAPTURE(w);
    REQUIRE(ns.size() == kEach);
    for (int i = 0; i < kEach; ++i) CHECK(ns[i] == i);
  }
  int batch_writer = kWriters - 1;
  for (size_t i = 0; i < writer_of_line.size(); ++i)
    if (writer_of_line[i] == batch_writer) {
      REQUIRE(i + kBatch <= writer_of_line.size());
      for (int k = 0; k < kBatch; ++k) CHECK(writer_of_line[i + k] == batch_writer);
      i += kBatch - 1;
    }
}

TEST_CASE("ledger: threads sharing one handle keep one chain") {
  test::TempDir t;
  stdfs::path p = t / "ledger.jsonl";
  ledger::Ledger l(p);
  std::vector<std::thread> threads;
  for (int w = 0; w < 4; ++w)
    threads.emplace_back([&l, w] {
      for (int i = 0; i < 50; ++i) l.append(entry(w, i));
    });
  for (auto& th : threads) th.join();
  auto r = ledger::verify(p);
  CHECK_MESSAGE(r.ok, r.message);
  CHECK(r.head.seq == 200);
}
