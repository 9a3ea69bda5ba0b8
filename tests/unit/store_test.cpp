// The behaviour every store back end shares (store.hpp), run against SQLite and, when
// the test servers run, PostgreSQL and Redis.
#include <doctest/doctest.h>

#include <algorithm>
#include <map>
#include <random>

#include "flk/store/store.hpp"
#include "flk/util/error.hpp"
#include "flk/util/fs.hpp"
#include "test_util.hpp"

using flk::test::contents;
using flk::test::rec;

using namespace flk;
using namespace flk::store;

namespace {

using Ids = std::vector<std::string>;

// Views of records, for a Store::Batch (valid while the records are).
std::vector<RecordView> views(const std::vector<Record>& records) {
  std::vector<RecordView> out;
  for (const Record& r : records) out.push_back(view_of(r));
  return out;
}

// The (pcs_id, digest) of records, sorted: the order evidence() and scan_evidence() keep.
std::vector<std::pair<std::string, hash::Digest>> keys_of(const std::vector<Record>& records) {
  std::vector<std::pair<std::string, hash::Digest>> out;
  for (const Record& r : records) out.emplace_back(r.pcs_id, record_digest(r));
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

std::vector<std::pair<std::string, hash::Digest>> keys_of(const std::vector<Evidence>& evidence) {
  std::vector<std::pair<std::string, hash::Digest>> out;
  for (const Evidence& e : evidence) out.emplace_back(e.record.pcs_id, e.digest);
  return out;
}

// The reference model: the first write per pcs_id, by the rule of DESIGN.md §1.
std::map<std::string, Stored> model(const std::vector<Record>& records) {
  std::map<std::string, Stored> m;
  for (const Record& r : records) {
    auto d = record_digest(r);
    auto it = m.find(r.pcs_id);
    if (it == m.end() || first_write_before(r, d, it->second.record, it->second.digest)) m[r.pcs_id] = Stored{r, d};
  }
  return m;
}

}  // namespace

TEST_CASE("store: first write wins, duplicates, conflicts kept as evidence") {
  test::TempDir t;
  for (auto& [kind, url] : test::store_urls(t.path())) {
    CAPTURE(kind);
    auto s = store::open(url);
    CHECK(s->count() == 0);
    Record a = rec("p1", Outcome::accepted, 200, "us-east-1");
    Record b = rec("p1", Outcome::rejected, 100, "us-west-2");  // earlier, different outcome
    Record c = rec("p2", Outcome::escalated, 50);
    std::vector<Record> batch1{a, c, a};
    ApplyStats s1 = s->apply(batch1, nullptr);
    CHECK(s1.inserted == 2);
    CHECK(s1.duplicates == 1);
    std::vector<Record> batch2{b};
    ApplyStats s2 = s->apply(batch2, nullptr);
    CHECK(s2.replaced == 1);
    CHECK(s2.conflicts == 1);
    auto all = contents(*s);
    REQUIRE(all.size() == 2);
    CHECK(all[0].record == b);  // the earlier write won
    CHECK(all[0].digest == record_digest(b));
    CHECK(all[1].record == c);
    // A later write changes nothing but is evidence when its outcome differs.
    Record later = rec("p1", Outcome::escalated, 300);
    std::vector<Record> batch3{later};
    ApplyStats s3 = s->apply(batch3, nullptr);
    CHECK(s3.later == 1);
    CHECK(s3.conflicts == 1);
    CHECK(contents(*s)[0].record == b);
    std::vector<std::string> ev;
    s->scan_evidence([&](const Evidence& e) { ev.push_back(e.record.pcs_id + "/" + std::string(outcome_name(e.record.outcome))); });
    std::sort(ev.begin(), ev.end());
    CHECK(ev == std::vector<std::string>{"p1/accepted", "p1/escalated", "p1/rejected"});
    CHECK(s->count() == 2);
  }
}

TEST_CASE("store: apply() names the pcs_ids of its conflicts; evidence() and lookup() read them back") {
  test::TempDir t;
  for (auto& [kind, url] : test::store_urls(t.path())) {
    CAPTURE(kind);
    auto s = store::open(url);
    // Nothing asked, nothing given; nothing applied, no conflicts.
    CHECK(s->evidence({}).empty());
    CHECK(s->lookup({}).empty());
    CHECK(s->apply({}, nullptr).conflict_ids.empty());

    // New pcs_ids, duplicates and later writes of the same outcome: no conflicts, and
    // no allocation for conflict_ids.
    Record p1 = rec("p1", Outcome::accepted, 200, "us-east-1");
    Record p2 = rec("p2", Outcome::accepted, 100, "us-east-1");
    Record p3 = rec("p3", Outcome::escalated, 100, "eu-west-1");
    Record p2_later = rec("p2", Outcome::accepted, 300, "us-west-2");  // same outcome
    std::vector<Record> b1{p1, p2, p3, p1, p2_later, p3};
    ApplyStats s1 = s->apply(b1, nullptr);
    CHECK(s1.inserted == 3);
    CHECK(s1.duplicates == 2);
    CHECK(s1.later == 1);
    CHECK(s1.conflicts == 0);
    CHECK(s1.conflict_ids.empty());
    CHECK(s1.conflict_ids.capacity() == 0);
    std::vector<Record> b1_again{p2_later, p1, p3};  // against the store now
    ApplyStats s1b = s->apply(b1_again, nullptr);
    CHECK(s1b.duplicates == 2);
    CHECK(s1b.later == 1);
    CHECK(s1b.conflict_ids.capacity() == 0);
    CHECK(s->evidence(Ids{"p1", "p2", "p3"}).empty());

    // Conflicts within one batch, for new pcs_ids: q1 three ways, the last q1a against
    // the earlier q1e that replaced it (counted three times, named once); q2: rejected
    // conflicts with the winner, the later accepted differs only from that loser (no
    // conflict); q3 a later write of the same outcome.
    Record q1a = rec("q1", Outcome::accepted, 10), q1r = rec("q1", Outcome::rejected, 20),
           q1e = rec("q1", Outcome::escalated, 5);
    Record q2a = rec("q2", Outcome::accepted, 1), q2r = rec("q2", Outcome::rejected, 5),
           q2a_later = rec("q2", Outcome::accepted, 9);
    Record q3 = rec("q3", Outcome::rejected, 1), q3_later = rec("q3", Outcome::rejected, 2, "eu-west-1");
    std::vector<Record> b2{q2a, q1a, q3, q1r, q2r, q3_later, q1e, q2a_later, q1a};
    ApplyStats s2 = s->apply(b2, nullptr);
    CHECK(s2.inserted == 3);
    CHECK(s2.conflicts == 4);  // q1r, q2r, q1e, the second q1a
    CHECK(s2.later == 5);
    CHECK(s2.replaced == 1);
    CHECK(s2.conflict_ids == Ids{"q1", "q2"});

    // Conflicts against the store, named once each and sorted whatever the batch's
    // order: p3 twice, p1 by an earlier write that wins; p2 a later write of the same
    // outcome and a duplicate (no conflict), p4 new.
    Record p3_r = rec("p3", Outcome::rejected, 150), p3_a = rec("p3", Outcome::accepted, 160);
    Record p1_r = rec("p1", Outcome::rejected, 50, "us-west-2");
    Record p2_later2 = rec("p2", Outcome::accepted, 400, "eu-west-1");
    Record p4 = rec("p4", Outcome::rejected, 1);
    std::vector<Record> b3{p3_r, p2_later2, p4, p1_r, p3_a, p2};
    ApplyStats s3 = s->apply(b3, nullptr);
    CHECK(s3.inserted == 1);
    CHECK(s3.replaced == 1);
    CHECK(s3.conflicts == 3);
    CHECK(s3.conflict_ids == Ids{"p1", "p3"});
    // The winner's outcome again, later: no conflict, although evidence of p1 holds an
    // accepted record too.
    Record p1_r_later = rec("p1", Outcome::rejected, 500);
    std::vector<Record> b4{p1_r_later, p1_r};
    ApplyStats s4 = s->apply(b4, nullptr);
    CHECK(s4.conflicts == 0);
    CHECK(s4.conflict_ids.empty());

    // += appends.
    ApplyStats sum = s2;
    sum += s3;
    sum += s4;
    CHECK(sum.conflicts == 7);
    CHECK(sum.conflict_ids == Ids{"q1", "q2", "p1", "p3"});

    // evidence(): exactly both sides of every conflict of the ids asked for, in
    // (pcs_id, digest) order, whatever the order and repetition of the ids; none for
    // ids without any, stored or not.
    std::vector<Evidence> ev = s->evidence(Ids{"q2", "p3", "nope", "p1", "p3", "q1"});
    CHECK(keys_of(ev) == keys_of({p1, p1_r, p3, p3_r, p3_a, q1a, q1r, q1e, q2a, q2r}));
    for (const Evidence& e : ev) {
      CHECK(e.digest == record_digest(e.record));
      CHECK(e.detected_at > 0);
    }
    std::vector<Record> want_records{p1, p1_r};  // every field, in digest order
    std::sort(want_records.begin(), want_records.end(),
              [](const Record& a, const Record& b) { return record_digest(a) < record_digest(b); });
    std::vector<Evidence> ev_p1 = s->evidence(Ids{"p1"});
    REQUIRE(ev_p1.size() == 2);
    CHECK(ev_p1[0].record == want_records[0]);
    CHECK(ev_p1[1].record == want_records[1]);
    CHECK(s->evidence(Ids{"p2", "p4", "nope", "q3"}).empty());
    // All of it, as scan_evidence() has it.
    std::vector<Evidence> all_ev;
    s->scan_evidence([&](const Evidence& e) { all_ev.push_back(e); });
    std::vector<Evidence> asked = s->evidence(Ids{"q2", "q1", "p3", "p2", "p1", "p4", "q3"});
    CHECK(keys_of(asked) == keys_of(all_ev));
    REQUIRE(asked.size() == all_ev.size());
    for (size_t i = 0; i < asked.size(); ++i) {
      CHECK(asked[i].record == all_ev[i].record);
      CHECK(asked[i].detected_at == all_ev[i].detected_at);
    }

    // lookup(): the winners, in pcs_id order, without the ids not stored.
    std::vector<Stored> won = s->lookup(Ids{"q3", "nope", "p1", "q1", "p1", "p4"});
    std::vector<Stored> want;
    for (const Stored& st : contents(*s))
      if (st.record.pcs_id == "p1" || st.record.pcs_id == "p4" || st.record.pcs_id == "q1" || st.record.pcs_id == "q3")
        want.push_back(st);
    CHECK(won == want);
    REQUIRE(won.size() == 4);
    CHECK(won[0].record == p1_r);
    CHECK(won[2].record == q1e);
    CHECK(s->lookup(Ids{"nope"}).empty());

    // An id that is a prefix of another's: neither's evidence shows under the other.
    std::vector<Record> b5{rec("p", Outcome::accepted, 1), rec("p", Outcome::rejected, 2)};
    CHECK(s->apply(b5, nullptr).conflict_ids == Ids{"p"});
    CHECK(keys_of(s->evidence(Ids{"p"})) == keys_of(b5));
    CHECK(keys_of(s->evidence(Ids{"p1"})) == keys_of({p1, p1_r}));
  }
}

TEST_CASE("store: params and payload round-trip; scan is in bytewise pcs_id order") {
  test::TempDir t;
  for (auto& [kind, url] : test::store_urls(t.path())) {
    CAPTURE(kind);
    auto s = store::open(url);
    std::vector<Record> rs;
    for (std::string id : {"b", "a-b", "B", "a", "~", "a b", "0", "ab"}) rs.push_back(rec(id, Outcome::accepted, 1));
    rs[0].params = "tol=0.01";
    rs[1].payload = R"({"x":[1,2,{"y":null}],"s":"é\n"})";
    rs[2].tenant_id = "tenant-ü";
    s->apply(rs, nullptr);
    auto all = contents(*s);
    std::vector<std::string> ids;
    for (auto& st : all) ids.push_back(st.record.pcs_id);
    std::vector<std::string> sorted = ids;
    std::sort(sorted.begin(), sorted.end());
    CHECK(ids == sorted);
    CHECK(ids.size() == rs.size());
    auto m = model(rs);
    for (auto& st : all) CHECK(st == m.at(st.record.pcs_id));
  }
}

TEST_CASE("store: ids() pulls (pcs_id, outcome) in bytewise order over a range; id_bounds() where it seeks") {
  test::TempDir t;
  for (auto& [kind, url] : test::store_urls(t.path())) {
    CAPTURE(kind);
    auto s = store::open(url);
    if (auto b = s->id_bounds()) CHECK(*b == std::pair<std::string, std::string>{"", ""});  // empty
    {
      auto c = s->ids();
      std::string_view id;
      Outcome o;
      CHECK_FALSE(c->next(id, o));
      CHECK_FALSE(c->next(id, o));  // and stays at the end
    }
    std::vector<Record> rs;
    const Outcome outcomes[] = {Outcome::accepted, Outcome::escalated, Outcome::rejected};
    for (std::string id : {"b", "a-b", "B", "a", "~", "a b", "0", "ab", "b0", "c"})
      rs.push_back(rec(id, outcomes[rs.size() % 3], 1));
    s->apply(rs, nullptr);
    auto all = contents(*s);
    auto range = [&](std::string from, std::string to) {
      std::vector<std::pair<std::string, Outcome>> got;
      auto c = s->ids(from, to);
      std::string_view id;
      Outcome o;
      while (c->next(id, o)) got.emplace_back(std::string(id), o);
      CHECK_FALSE(c->next(id, o));
      return got;
    };
    auto expect = [&](std::string from, std::string to) {
      std::vector<std::pair<std::string, Outcome>> want;
      for (auto& st : all)
        if (st.record.pcs_id >= from && (to.empty() || st.record.pcs_id < to))
          want.emplace_back(st.record.pcs_id, st.record.outcome);
      return want;
    };
    CHECK(range("", "").size() == rs.size());
    for (auto [from, to] : std::vector<std::pair<std::string, std::string>>{
             {"", ""}, {"a", "b"}, {"", "a"}, {"b", ""}, {"a b", "ab"}, {"b", "b"}, {"zz", ""}, {"", "0"}, {"b", "b0"}}) {
      CAPTURE(from);
      CAPTURE(to);
      CHECK(range(from, to) == expect(from, to));
    }
    if (auto b = s->id_bounds()) CHECK(*b == std::pair<std::string, std::string>{"0", "~"});
    CHECK((kind == "sqlite") == s->id_bounds().has_value());
  }
}

TEST_CASE("store: property — any order, batching and duplication gives the same content and digest") {
  test::TempDir t;
  std::mt19937_64 rng(20261126);
  std::vector<Record> records;
  const char* regions[] = {"us-east-1", "us-west-2", "eu-west-1"};
  for (int i = 0; i < 400; ++i) {
    Record r = rec("pcs-" + std::to_string(rng() % 120), static_cast<Outcome>(1 + rng() % 3),
                   1'700'000'000'000'000'000 + static_cast<int64_t>(rng() % 50), regions[rng() % 3],
                   "tenant-" + std::to_string(rng() % 4));
    if (rng() % 4 == 0) r.params = "v" + std::to_string(rng() % 3);
    records.push_back(r);
    if (rng() % 5 == 0) records.push_back(r);  // duplicated delivery
  }
  auto expected = model(records);
  hash::Sha256 h;
  for (auto& [id, st] : expected) {
    uint8_t n = static_cast<uint8_t>(id.size());
    h.update(&n, 1);
    h.update(id);
    h.update(st.digest.data(), st.digest.size());
  }
  hash::Digest expected_digest = h.finish();
  for (auto& [kind, url] : test::store_urls(t.path())) {
    CAPTURE(kind);
    for (int round = 0; round < 4; ++round) {
      CAPTURE(round);
      auto s = store::open(kind == "sqlite" ? url + std::to_string(round) : url + "r" + std::to_string(round));
      std::vector<Record> shuffled = records;
      std::shuffle(shuffled.begin(), shuffled.end(), rng);
      ApplyStats total;
      for (size_t at = 0; at < shuffled.size();) {
        size_t n = std::min<size_t>(1 + rng() % 60, shuffled.size() - at);
        ApplyStats st = s->apply(std::span<const Record>(shuffled).subspan(at, n), nullptr);
        CHECK(std::is_sorted(st.conflict_ids.begin(), st.conflict_ids.end()));
        CHECK(std::adjacent_find(st.conflict_ids.begin(), st.conflict_ids.end()) == st.conflict_ids.end());
        CHECK(st.conflict_ids.size() <= st.conflicts);
        CHECK(st.conflict_ids.empty() == (st.conflicts == 0));
        total += st;
        at += n;
      }
      // Evidence comes only from conflicts, and every conflict leaves some: the pcs_ids
      // named over all calls are those of the evidence, and evidence() of them is all of it.
      std::sort(total.conflict_ids.begin(), total.conflict_ids.end());
      total.conflict_ids.erase(std::unique(total.conflict_ids.begin(), total.conflict_ids.end()),
                               total.conflict_ids.end());
      std::vector<Evidence> all_ev;
      Ids ev_ids;
      s->scan_evidence([&](const Evidence& e) {
        all_ev.push_back(e);
        if (ev_ids.empty() || ev_ids.back() != e.record.pcs_id) ev_ids.push_back(e.record.pcs_id);
      });
      CHECK(total.conflict_ids == ev_ids);
      CHECK(!ev_ids.empty());
      CHECK(keys_of(s->evidence(total.conflict_ids)) == keys_of(all_ev));
      CHECK(total.inserted + total.duplicates + total.replaced + total.later == records.size());
      CHECK(total.inserted == expected.size());
      CHECK(s->count() == expected.size());
      CHECK(content_digest(*s) == expected_digest);
      auto all = contents(*s);
      REQUIRE(all.size() == expected.size());
      for (auto& st : all) CHECK(st == expected.at(st.record.pcs_id));
    }
  }
}

TEST_CASE("store: watermarks advance with the records, atomically") {
  test::TempDir t;
  for (auto& [kind, url] : test::store_urls(t.path())) {
    CAPTURE(kind);
    auto s = store::open(url);
    CHECK_FALSE(s->watermark("us-west-2"));
    Watermark w{"us-west-2", 7, hash::sha256("segment 7"), 12345};
    std::vector<Record> batch{rec("p", Outcome::accepted, 1)};
    s->apply(batch, &w);
    REQUIRE(s->watermark("us-west-2"));
    CHECK(*s->watermark("us-west-2") == w);
    Watermark w2{"eu-west-1", 3, hash::sha256("x"), 99};
    s->set_watermark(w2);
    auto all = s->watermarks();
    REQUIRE(all.size() == 2);
    CHECK(all[0] == w2);  // sorted by source
    CHECK(all[1] == w);
    s->set_watermark(Watermark{"eu-west-1", 0, {}, 0});  // sequence 0 removes
    CHECK(s->watermarks().size() == 1);
    // Reopening sees the same.
    s.reset();
    auto again = store::open(url);
    CHECK(*again->watermark("us-west-2") == w);
    CHECK(again->count() == 1);
  }
}

TEST_CASE("store: apply_all() gives each batch the stats and the store the content of applies one by one") {
  test::TempDir t;
  // Three batches (segments) of one source, the second repeating and contradicting the first.
  std::vector<Record> b1, b2, b3;
  for (int i = 0; i < 300; ++i) b1.push_back(rec(fmt::format("p{:04}", i), Outcome::accepted, 100 + i));
  for (int i = 250; i < 350; ++i) b2.push_back(rec(fmt::format("p{:04}", i), i % 2 ? Outcome::rejected : Outcome::accepted, 50 + i, "eu-west-1"));
  b2.push_back(b2.front());
  for (int i = 0; i < 10; ++i) b3.push_back(rec(fmt::format("p{:04}", i * 7), Outcome::accepted, 100 + i * 7));
  Watermark w1{"us-east-1", 1, hash::sha256("1"), 1}, w2{"us-east-1", 2, hash::sha256("2"), 2},
      w3{"us-east-1", 3, hash::sha256("3"), 3};
  for (auto& [kind, url] : test::store_urls(t.path())) {
    CAPTURE(kind);
    auto one = store::open(url);
    std::vector<ApplyStats> expected{one->apply(b1, &w1), one->apply(b2, &w2), one->apply(b3, &w3)};
    auto together = store::open(test::store_urls(t.path()).front().second);  // a fresh SQLite store
    auto v1 = views(b1), v2 = views(b2), v3 = views(b3);
    auto all = together->apply_all(std::vector<Store::Batch>{{v1, &w1}, {v2, &w2}, {v3, &w3}});
    REQUIRE(all.size() == 3);
    for (size_t i = 0; i < 3; ++i) {
      CAPTURE(i);
      CHECK(all[i].inserted == expected[i].inserted);
      CHECK(all[i].duplicates == expected[i].duplicates);
      CHECK(all[i].replaced == expected[i].replaced);
      CHECK(all[i].later == expected[i].later);
      CHECK(all[i].conflicts == expected[i].conflicts);
      CHECK(all[i].conflict_ids == expected[i].conflict_ids);
    }
    CHECK(expected[1].conflicts > 0);
    CHECK(expected[2].duplicates == 10);
    CHECK(contents(*together) == contents(*one));
    CHECK(content_digest(*together) == content_digest(*one));
    CHECK(*together->watermark("us-east-1") == w3);
  }
}

TEST_CASE("store: large batches — new, duplicate, earlier, later and repeated records together — give the stats and content of applies one record at a time") {
  // SQLite offers a pcs_id new to the batch to a multi-row INSERT OR IGNORE, 256 rows at
  // a time, and looks up those it left when any of them was stored already: batches
  // well over 256 records, with stored pcs_ids scattered among new ones, take every path.
  test::TempDir t;
  std::mt19937_64 rng(7);
  std::vector<Record> base, batch;
  for (int i = 0; i < 3000; ++i) base.push_back(rec(fmt::format("p{:05}", rng() % 100000), Outcome::accepted, 1000 + i));
  for (int i = 0; i < 4000; ++i) {
    const Record& b = base[rng() % base.size()];
    switch (rng() % 8) {
      case 0: batch.push_back(b); break;                                           // duplicate
      case 1: batch.push_back(rec(b.pcs_id, Outcome::rejected, b.ts - 1, "eu-west-1")); break;  // earlier: replaces
      case 2: batch.push_back(rec(b.pcs_id, Outcome::escalated, b.ts + 1, "us-west-2")); break;  // later
      default: batch.push_back(rec(fmt::format("n{:05}", rng() % 30000), Outcome::accepted, 5000 + i));  // new (some repeated)
    }
  }
  std::vector<hash::Digest> digests;
  for (const Record& r : batch) digests.push_back(record_digest(r));
  Watermark w{"us-east-1", 2, hash::sha256("2"), 2};
  for (auto& [kind, url] : test::store_urls(t.path())) {
    CAPTURE(kind);
    auto one = store::open(url + "one");
    one->apply(base, nullptr);
    ApplyStats expected;
    for (const Record& r : batch) expected += one->apply(std::span<const Record>(&r, 1), nullptr);
    std::sort(expected.conflict_ids.begin(), expected.conflict_ids.end());
    expected.conflict_ids.erase(std::unique(expected.conflict_ids.begin(), expected.conflict_ids.end()),
                                expected.conflict_ids.end());
    for (bool with_digests : {false, true}) {
      CAPTURE(with_digests);
      auto big = store::open(url + (with_digests ? "dig" : "big"));
      big->apply(base, nullptr);
      big->begin_group();
      auto batch_views = views(batch);
      auto all = big->apply_all(std::vector<Store::Batch>{
          {batch_views, &w, with_digests ? std::span<const hash::Digest>(digests) : std::span<const hash::Digest>()}});
      big->commit_group();
      REQUIRE(all.size() == 1);
      CHECK(all[0].inserted == expected.inserted);
      CHECK(all[0].duplicates == expected.duplicates);
      CHECK(all[0].replaced == expected.replaced);
      CHECK(all[0].later == expected.later);
      CHECK(all[0].conflicts == expected.conflicts);
      CHECK(all[0].conflict_ids == expected.conflict_ids);
      CHECK(expected.inserted > 1000);
      CHECK(expected.replaced > 300);
      CHECK(expected.duplicates > 300);
      CHECK(contents(*big) == contents(*one));
      CHECK(content_digest(*big) == content_digest(*one));
      CHECK(keys_of(big->evidence(expected.conflict_ids)) == keys_of(one->evidence(expected.conflict_ids)));
      CHECK(*big->watermark("us-east-1") == w);
    }
  }
}

TEST_CASE("store: a group of applies not committed is not there after the store is closed (a crash)") {
  test::TempDir t;
  std::vector<Record> b1{rec("a", Outcome::accepted, 1)}, b2{rec("b", Outcome::accepted, 2)};
  Watermark w1{"us-east-1", 1, hash::sha256("1"), 1}, w2{"us-east-1", 2, hash::sha256("2"), 2};
  for (auto& [kind, url] : test::store_urls(t.path())) {
    CAPTURE(kind);
    auto s = store::open(url);
    s->apply(b1, &w1);
    s->begin_group();
    auto v2 = views(b2);
    s->apply_all(std::vector<Store::Batch>{{v2, &w2}});
    s->begin_group();  // already open: nothing more
    s.reset();         // closed without commit_group
    auto again = store::open(url);
    if (kind == "sqlite") {
      CHECK(again->count() == 1);
      CHECK(again->watermark("us-east-1")->sequence == 1);
    } else {
      // A back end without groups commits each apply_all.
      CHECK(again->count() == 2);
      CHECK(again->watermark("us-east-1")->sequence == 2);
    }
  }
}

TEST_CASE("store: a rebuild in a scratch store replaces the whole content at once") {
  test::TempDir t;
  for (auto& [kind, url] : test::store_urls(t.path())) {
    CAPTURE(kind);
    auto s = store::open(url);
    std::vector<Record> old{rec("old-1", Outcome::accepted, 1), rec("old-2", Outcome::rejected, 2)};
    Watermark w{"us-west-2", 5, hash::sha256("5"), 1};
    s->apply(old, &w);
    auto scratch = s->open_scratch();
    CHECK(scratch->count() == 0);
    std::vector<Stored> fresh;
    for (int i = 0; i < 1000; ++i) {
      Record r = rec(fmt::format("new-{:05}", i), Outcome::accepted, i);
      if (i % 3 == 0) r.params = fmt::format("v{}", i);
      if (i % 5 == 0) r.payload = fmt::format(R"({{"n":{}}})", i);
      fresh.push_back(Stored{r, record_digest(r)});
    }
    size_t at = 0;
    Evidence ev{rec("new-00001", Outcome::rejected, 5), {}, 77};
    ev.digest = record_digest(ev.record);
    std::vector<Evidence> evs{ev};
    scratch->bulk_load(
        [&](Stored& out) {
          if (at == fresh.size()) return false;
          out = fresh[at++];
          return true;
        },
        evs);
    Watermark w2{"us-west-2", 9, hash::sha256("9"), 2};
    scratch->set_watermark(w2);
    CHECK(s->count() == 2);  // the live store is untouched until the swap
    s->replace_with(std::move(scratch));
    CHECK(s->count() == 1000);
    CHECK(contents(*s) == fresh);  // every field of every record, in order (bulk paths batch)
    CHECK(*s->watermark("us-west-2") == w2);
    int n = 0;
    s->scan_evidence([&](const Evidence& e) {
      CHECK(e.record == ev.record);
      ++n;
    });
    CHECK(n == 1);
    // Still a working store, and the swap is durable.
    std::vector<Record> more{rec("z", Outcome::accepted, 1)};
    s->apply(more, nullptr);
    s.reset();
    CHECK(store::open(url)->count() == 1001);
  }
}

TEST_CASE("store: bad URLs are configuration errors naming the URL") {
  for (const char* url : {"mysql://x/y", "sqlite://", "file:///tmp/x"}) {
    CAPTURE(url);
    try {
      store::open(url);
      FAIL("opened");
    } catch (const Error& e) {
      CHECK(e.code() == Code::config);
      CHECK(std::string(e.what()).find("invalid store URL") != std::string::npos);
    }
  }
  CHECK(mask_url("postgres://flk:secret@h:5432/db") == "postgres://flk:***@h:5432/db");
  CHECK(mask_url("redis://:secret@h:6379/0") == "redis://:***@h:6379/0");
  CHECK(mask_url("postgres://h/db?password=secret&x=1") == "postgres://h/db?password=***&x=1");
  CHECK(mask_url("sqlite:///var/lib/flk/dedup.db") == "sqlite:///var/lib/flk/dedup.db");
}

TEST_CASE("store (sqlite): a newer schema is refused; an uncreatable path is an error") {
  test::TempDir t;
  std::string path = (t / "s.db").string();
  store::open("sqlite://" + path).reset();
  // Pretend a newer flk wrote it (sqlite3(1) from Debian's sqlite3 package).
  REQUIRE(std::system(("sqlite3 '" + path + "' \"UPDATE meta SET value='99' WHERE key='schema_version'\"").c_str()) == 0);
  try {
    store::open("sqlite://" + path);
    FAIL("opened a newer schema");
  } catch (const Error& e) {
    CHECK(e.code() == Code::config);
    CHECK(std::string(e.what()) ==
          "store 'sqlite://" + path + "': schema version 99 is newer than this flk understands (1)");
  }
  fs::write_file_atomic(t / "file", "x");
  try {
    store::open("sqlite://" + (t / "file" / "sub.db").string());
    FAIL("opened under a file");
  } catch (const Error& e) {
    CHECK(e.code() == Code::cant_create);
    CHECK(std::string(e.what()).find("store 'sqlite://") == 0);
  }
}
