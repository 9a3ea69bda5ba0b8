#include <doctest/doctest.h>

#include "flk/util/error.hpp"
#include "flk/util/time.hpp"

using namespace flk;
using namespace flk::timeutil;

TEST_CASE("rfc3339 parses with nanoseconds, offsets and round-trips") {
  CHECK(parse_rfc3339("1970-01-01T00:00:00Z") == 0);
  CHECK(parse_rfc3339("2026-11-26T08:00:00.123456789Z") == 1795680000123456789LL);
  CHECK(parse_rfc3339("2026-11-26T10:00:00.5+02:00") == parse_rfc3339("2026-11-26T08:00:00.5Z"));
  CHECK(parse_rfc3339("2026-11-26T07:30:00-00:30") == parse_rfc3339("2026-11-26T08:00:00Z"));
  CHECK(parse_rfc3339("1969-12-31T23:59:59.999999999Z") == -1);
  CHECK(format_rfc3339(-1) == "1969-12-31T23:59:59.999999999Z");
  CHECK(format_rfc3339(0) == "1970-01-01T00:00:00Z");
  CHECK(format_rfc3339(500'000'000) == "1970-01-01T00:00:00.5Z");
  for (int64_t t : {0LL, 1LL, 1795680000123456789LL, 951782400000000000LL /* 2000-02-29 */, -86400000000001LL}) {
    CAPTURE(t);
    CHECK(parse_rfc3339(format_rfc3339(t)) == t);
  }
}

TEST_CASE("rfc3339 rejects what is not a timestamp, saying why") {
  for (const char* bad : {"", "2026-11-26", "2026-11-26T08:00:00", "2026-13-01T00:00:00Z", "2026-02-30T00:00:00Z",
                          "2026-11-26T24:00:00Z", "2026-11-26T08:00:00.Z", "2026-11-26T08:00:00.1234567890Z",
                          "2026-11-26T08:00:00Zjunk", "2026-11-26T08:00:00+2:00", "tomorrow"}) {
    CAPTURE(bad);
    try {
      parse_rfc3339(bad);
      FAIL("accepted");
    } catch (const Error& e) {
      CHECK(e.code() == Code::data);
      CHECK(std::string(e.what()).find("invalid timestamp") == 0);
    }
  }
}

TEST_CASE("durations") {
  CHECK(parse_duration("60s") == 60 * kSecond);
  CHECK(parse_duration("5m") == 300 * kSecond);
  CHECK(parse_duration("1h30m") == 5400 * kSecond);
  CHECK(parse_duration("500ms") == 500'000'000);
  CHECK(parse_duration("1.5s") == 1'500'000'000);
  CHECK(parse_duration("2d") == 172800 * kSecond);
  CHECK(parse_duration("0") == 0);
  CHECK(format_duration(5400 * kSecond) == "90m");
  CHECK(format_duration(1'500'000'000) == "1500ms");
  CHECK_THROWS_AS(parse_duration("60"), Error);
  CHECK_THROWS_AS(parse_duration("5x"), Error);
  CHECK_THROWS_AS(parse_duration(""), Error);
  CHECK_THROWS_AS(parse_duration("s"), Error);
}

TEST_CASE("sizes and time arguments") {
  CHECK(parse_size("1048576") == 1048576);
  CHECK(parse_size("64MiB") == 64ull << 20);
  CHECK(parse_size("1G") == 1ull << 30);
  CHECK_THROWS_AS(parse_size("12XB"), Error);
  CHECK_THROWS_AS(parse_size("MiB"), Error);
  CHECK_THROWS_AS(parse_size("99999999999999999999"), Error);
  Nanos now = 1000 * kSecond;
  CHECK(parse_time_arg("now", now) == now);
  CHECK(parse_time_arg("-5m", now) == now - 300 * kSecond);
  CHECK(parse_time_arg("5m ago", now) == now - 300 * kSecond);
  CHECK(parse_time_arg("@1.5", now) == 1'500'000'000);
  CHECK(parse_time_arg("1970-01-01T00:00:01Z", now) == kSecond);
}
