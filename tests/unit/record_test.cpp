#include <doctest/doctest.h>

#include <string>

#include "flk/core/record.hpp"
#include "flk/util/error.hpp"
#include "test_util.hpp"

using namespace flk;

namespace {
std::string error_of(std::string_view line, RecordDefaults d = {"us-east-1", 42}) {
  try {
    record_from_json(line, d);
  } catch (const Error& e) {
    CHECK(e.code() == Code::data);
    return e.what();
  }
  return "accepted";
}
}  // namespace

TEST_CASE("record JSON: defaults, round trip, payload minified in input order") {
  Record r = record_from_json(
      R"({"pcs_id":"abc","tenant_id":"t1","outcome":"escalated","payload":{"z":1,"a":[true,null]},"params":"v2"})",
      {"us-east-1", 42});
  CHECK(r.ts == 42);
  CHECK(r.region == "us-east-1");
  CHECK(r.outcome == Outcome::escalated);
  CHECK(*r.payload == R"({"z":1,"a":[true,null]})");
  std::string out;
  append_record_json(out, r);
  CHECK(out ==
        R"({"pcs_id":"abc","tenant_id":"t1","outcome":"escalated","ts":"1970-01-01T00:00:00.000000042Z","region":"us-east-1","params":"v2","payload":{"z":1,"a":[true,null]}})");
  CHECK(record_from_json(out, {"us-east-1", 0}) == r);
}

TEST_CASE("record JSON: the payload is the input's own text, minified") {
  auto payload = [](std::string_view line) {
    return *record_from_json(line, {"us-east-1", 1}).payload;
  };
  CHECK(payload(R"({"pcs_id":"p","tenant_id":"t","outcome":"accepted","payload": { "b" : [1, 2.50, 1e3] , "a":"x y" } })") ==
        R"({"b":[1,2.50,1e3],"a":"x y"})");
  // Braces, brackets, commas, quotes and the word payload inside strings do not confuse it.
  CHECK(payload(R"({"params":"\"payload\": [","pcs_id":"p","payload":"a,}]\\\"{","tenant_id":"t","outcome":"accepted"})") ==
        R"("a,}]\\\"{")");
  CHECK(payload(R"({"pcs_id":"p","tenant_id":"t","outcome":"accepted","payload":{"payload":{"x":[{}]}},"ts":"2026-11-26T08:00:00Z"})") ==
        R"({"payload":{"x":[{}]}})");
  CHECK(payload(R"({"payload":  -0.5 ,"pcs_id":"p","tenant_id":"t","outcome":"accepted"})") == "-0.5");
  CHECK(payload(R"({"payload":[ ],"pcs_id":"p","tenant_id":"t","outcome":"accepted"})") == "[]");
  CHECK(payload(R"({"payload":"éé ","pcs_id":"p","tenant_id":"t","outcome":"accepted"})") == R"("éé ")");
}

TEST_CASE("record JSON: every bad field is named") {
  CHECK(error_of("{").find("malformed JSON") == 0);
  CHECK(error_of(R"({"pcs_id":"p","pcs_id":"q","tenant_id":"t","outcome":"accepted"})") == "field 'pcs_id': given twice");
  CHECK(error_of(R"({"pcs_id":"p","tenant_id":"t","outcome":"accepted","payload":{"a": [1, 2 ]}})") == "accepted");
  CHECK(error_of("[1]").find("must be a JSON object") != std::string::npos);
  CHECK(error_of(R"({"tenant_id":"t","outcome":"accepted"})") == "field 'pcs_id': missing");
  CHECK(error_of(R"({"pcs_id":"p","outcome":"accepted"})") == "field 'tenant_id': missing");
  CHECK(error_of(R"({"pcs_id":"p","tenant_id":"t"})") == "field 'outcome': missing");
  CHECK(error_of(R"({"pcs_id":"p","tenant_id":"t","outcome":"maybe"})").find("field 'outcome': unknown outcome 'maybe'") == 0);
  CHECK(error_of(R"({"pcs_id":"p","tenant_id":"t","outcome":"accepted","ts":"yesterday"})").find("field 'ts': invalid timestamp") == 0);
  CHECK(error_of(R"({"pcs_id":7,"tenant_id":"t","outcome":"accepted"})") == "field 'pcs_id': must be a string, not number");
  CHECK(error_of(R"({"pcs_id":"p","tenant_id":"t","outcome":"accepted","colour":"red"})").find("field 'colour': unknown field") == 0);
  std::string big(256, 'a');
  CHECK(error_of(R"({"pcs_id":")" + big + R"(","tenant_id":"t","outcome":"accepted"})") == "field 'pcs_id': must be 1–255 bytes");
  CHECK(error_of(R"({"pcs_id":"a\u0001","tenant_id":"t","outcome":"accepted"})") == "field 'pcs_id': must be printable ASCII");
  CHECK(error_of(R"({"pcs_id":"p","tenant_id":"t","outcome":"accepted","region":"US_EAST"})").find("field 'region'") == 0);
  CHECK(error_of(R"({"pcs_id":"p","tenant_id":"t","outcome":"accepted","region":"eu-west-1"})") ==
        "field 'region': 'eu-west-1' is not this WAL's region 'us-east-1'");
  std::string huge = R"({"pcs_id":"p","tenant_id":"t","outcome":"accepted","payload":")" + std::string(1 << 20, 'x') + "\"}";
  CHECK(error_of(huge) == "field 'payload': larger than 1 MiB encoded");
}

TEST_CASE("canonical encoding round-trips and rejects damage") {
  for (int i = 0; i < 20; ++i) {
    Record r = test::make_record(i);
    std::string bytes;
    encode_record(bytes, r);
    CHECK(bytes.size() == encoded_size(r));
    Record back;
    std::string why;
    REQUIRE(decode_record(bytes, back, &why));
    CHECK(back == r);
    // Every truncation is refused.
    for (size_t n = 0; n < bytes.size(); ++n) CHECK_FALSE(decode_record(std::string_view(bytes).substr(0, n), back, &why));
    CHECK_FALSE(decode_record(bytes + "x", back, &why));
    CHECK(why == "trailing bytes after record");
  }
  std::string bytes;
  encode_record(bytes, test::make_record(3));
  Record back;
  std::string why;
  bytes[2] = 9;
  CHECK_FALSE(decode_record(bytes, back, &why));
  CHECK(why == "invalid outcome");
}

TEST_CASE("first write wins is a total order on (ts, region, digest)") {
  Record a = test::make_record(1), b = a;
  b.outcome = Outcome::rejected;
  auto da = record_digest(a), db = record_digest(b);
  CHECK(da != db);
  CHECK(first_write_before(a, da, b, db) != first_write_before(b, db, a, da));
  b.ts = a.ts - 1;
  db = record_digest(b);
  CHECK(first_write_before(b, db, a, da));
  b.ts = a.ts;
  b.region = "aa-first";
  db = record_digest(b);
  CHECK(first_write_before(b, db, a, da));
}
