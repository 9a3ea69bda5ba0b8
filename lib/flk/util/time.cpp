#include "flk/util/time.hpp"

#include <time.h>

#include <chrono>
#include <cmath>
#include <limits>

#include "flk/util/error.hpp"

namespace flk::timeutil {

namespace {

[[noreturn]] void bad_time(std::string_view s, std::string_view why) {
  fail(Code::data, "invalid timestamp '{}': {}", s, why);
}

bool digits(std::string_view s, size_t pos, size_t n, int& out) {
  if (pos + n > s.size()) return false;
  int v = 0;
  for (size_t i = 0; i < n; ++i) {
    char c = s[pos + i];
    if (c < '0' || c > '9') return false;
    v = v * 10 + (c - '0');
  }
  out = v;
  return true;
}

}  // namespace

Nanos parse_rfc3339(std::string_view s) {
  int year, month, day, hour, minute, second;
  if (!digits(s, 0, 4, year) || s.size() < 5 || s[4] != '-' || !digits(s, 5, 2, month) || s.size() < 8 ||
      s[7] != '-' || !digits(s, 8, 2, day))
    bad_time(s, "expected YYYY-MM-DDThh:mm:ss[.frac](Z|±hh:mm)");
  if (s.size() < 11 || (s[10] != 'T' && s[10] != 't' && s[10] != ' '))
    bad_time(s, "expected 'T' between date and time");
  if (!digits(s, 11, 2, hour) || s.size() < 14 || s[13] != ':' || !digits(s, 14, 2, minute) || s.size() < 17 ||
      s[16] != ':' || !digits(s, 17, 2, second))
    bad_time(s, "expected hh:mm:ss");
  using namespace std::chrono;
  year_month_day ymd{std::chrono::year{year}, std::chrono::month{static_cast<unsigned>(month)},
                     std::chrono::day{static_cast<unsigned>(day)}};
  if (!ymd.ok()) bad_time(s, "no such date");
  if (hour > 23 || minute > 59 || second > 60) bad_time(s, "time of day out of range");
  if (second == 60) second = 59;  // leap second: clamp, as most systems do
  size_t pos = 19;
  Nanos frac = 0;
  if (pos < s.size() && s[pos] == '.') {
    ++pos;
    size_t start = pos;
    while (pos < s.size() && s[pos] >= '0' && s[pos] <= '9') {
      if (pos - start >= 9) bad_time(s, "more than 9 fractional digits");
      frac = frac * 10 + (s[pos] - '0');
      ++pos;
    }
    if (pos == start) bad_time(s, "empty fraction");
    for (size_t i = pos - start; i < 9; ++i) frac *= 10;
  }
  Nanos offset = 0;
  if (pos < s.size() && (s[pos] == 'Z' || s[pos] == 'z')) {
    ++pos;
  } else if (pos < s.size() && (s[pos] == '+' || s[pos] == '-')) {
    int oh, om;
    if (!digits(s, pos + 1, 2, oh) || s.size() < pos + 6 || s[pos + 3] != ':' || !digits(s, pos + 4, 2, om) ||
        oh > 23 || om > 59)
      bad_time(s, "bad UTC offset");
    offset = (static_cast<Nanos>(oh) * 3600 + om * 60) * kSecond;
    if (s[pos] == '-') offset = -offset;
    pos += 6;
  } else {
    bad_time(s, "missing time zone ('Z' or ±hh:mm)");
  }
  if (pos != s.size()) bad_time(s, "trailing characters");
  int64_t days = sys_days(ymd).time_since_epoch().count();
  // int64 nanoseconds reach years 1677–2262.
  if (days < -106751 || days > 106750) bad_time(s, "out of range (1678–2261)");
  Nanos secs = days * 86400 + hour * 3600 + minute * 60 + second;
  return secs * kSecond + frac - offset;
}

std::string format_rfc3339(Nanos t) {
  Nanos secs = t / kSecond;
  Nanos frac = t % kSecond;
  if (frac < 0) {
    frac += kSecond;
    secs -= 1;
  }
  Nanos days = secs / 86400;
  Nanos rem = secs % 86400;
  if (rem < 0) {
    rem += 86400;
    days -= 1;
  }
  using namespace std::chrono;
  year_month_day ymd{sys_days{std::chrono::days{days}}};
  // "YYYY-MM-DDThh:mm:ss" + ".fffffffff" + "Z", written digit by digit (hot in `cat`).
  char buf[32];
  auto put = [&](int at, long long v, int width) {
    for (int i = width - 1; i >= 0; --i, v /= 10) buf[at + i] = static_cast<char>('0' + v % 10);
  };
  int year = static_cast<int>(ymd.year());
  if (year < 0 || year > 9999) return fmt::format("{}", t);  // unreachable for int64 ns
  put(0, year, 4);
  buf[4] = '-';
  put(5, static_cast<unsigned>(ymd.month()), 2);
  buf[7] = '-';
  put(8, static_cast<unsigned>(ymd.day()), 2);
  buf[10] = 'T';
  put(11, rem / 3600, 2);
  buf[13] = ':';
  put(14, rem / 60 % 60, 2);
  buf[16] = ':';
  put(17, rem % 60, 2);
  int len = 19;
  if (frac != 0) {
    buf[19] = '.';
    put(20, frac, 9);
    len = 29;
    while (buf[len - 1] == '0') --len;
  }
  buf[len++] = 'Z';
  return std::string(buf, static_cast<size_t>(len));
}

Nanos parse_duration(std::string_view s) {
  if (s == "0") return 0;
  if (s.empty()) fail(Code::data, "invalid duration '': empty");
  long double total = 0;
  size_t pos = 0;
  while (pos < s.size()) {
    size_t start = pos;
    while (pos < s.size() && ((s[pos] >= '0' && s[pos] <= '9') || s[pos] == '.')) ++pos;
    if (pos == start) fail(Code::data, "invalid duration '{}': expected a number at '{}'", s, s.substr(start));
    long double value;
    try {
      value = std::stold(std::string(s.substr(start, pos - start)));
    } catch (const std::exception&) {
      fail(Code::data, "invalid duration '{}': bad number", s);
    }
    size_t ustart = pos;
    while (pos < s.size() && ((s[pos] >= 'a' && s[pos] <= 'z') || (s[pos] >= 'A' && s[pos] <= 'Z'))) ++pos;
    std::string_view unit = s.substr(ustart, pos - ustart);
    long double mult;
    if (unit == "ns") mult = 1;
    else if (unit == "us" || unit == "µs") mult = 1e3L;
    else if (unit == "ms") mult = 1e6L;
    else if (unit == "s") mult = 1e9L;
    else if (unit == "m") mult = 60e9L;
    else if (unit == "h") mult = 3600e9L;
    else if (unit == "d") mult = 86400e9L;
    else if (unit.empty()) fail(Code::data, "invalid duration '{}': missing unit (ns, us, ms, s, m, h, d)", s);
    else fail(Code::data, "invalid duration '{}': unknown unit '{}' (ns, us, ms, s, m, h, d)", s, unit);
    total += value * mult;
  }
  if (total > static_cast<long double>(std::numeric_limits<Nanos>::max()))
    fail(Code::data, "invalid duration '{}': too large", s);
  return static_cast<Nanos>(std::llround(total));
}

std::string format_duration(Nanos d) {
  if (d == 0) return "0s";
  if (d % (3600 * kSecond) == 0) return fmt::format("{}h", d / (3600 * kSecond));
  if (d % (60 * kSecond) == 0) return fmt::format("{}m", d / (60 * kSecond));
  if (d % kSecond == 0) return fmt::format("{}s", d / kSecond);
  if (d % 1'000'000 == 0) return fmt::format("{}ms", d / 1'000'000);
  if (d % 1'000 == 0) return fmt::format("{}us", d / 1'000);
  return fmt::format("{}ns", d);
}

Nanos parse_time_arg(std::string_view s, Nanos now_ns) {
  if (s == "now") return now_ns;
  if (!s.empty() && s[0] == '@') {
    std::string_view n = s.substr(1);
    char* end = nullptr;
    std::string str(n);
    long double v = std::strtold(str.c_str(), &end);
    if (str.empty() || *end != '\0') fail(Code::data, "invalid time '{}': expected @<unix seconds>", s);
    return static_cast<Nanos>(v * 1e9L);
  }
  if (!s.empty() && s[0] == '-') return now_ns - parse_duration(s.substr(1));
  constexpr std::string_view ago = " ago";
  if (s.size() > ago.size() && s.substr(s.size() - ago.size()) == ago)
    return now_ns - parse_duration(s.substr(0, s.size() - ago.size()));
  return parse_rfc3339(s);
}

uint64_t parse_size(std::string_view s) {
  size_t pos = 0;
  uint64_t v = 0;
  while (pos < s.size() && s[pos] >= '0' && s[pos] <= '9') {
    uint64_t d = static_cast<uint64_t>(s[pos] - '0');
    if (v > (std::numeric_limits<uint64_t>::max() - d) / 10) fail(Code::data, "invalid size '{}': too large", s);
    v = v * 10 + d;
    ++pos;
  }
  if (pos == 0) fail(Code::data, "invalid size '{}': expected a number of bytes (e.g. 67108864 or 64MiB)", s);
  std::string_view unit = s.substr(pos);
  uint64_t mult;
  if (unit.empty() || unit == "B") mult = 1;
  else if (unit == "K" || unit == "KiB" || unit == "k") mult = 1ull << 10;
  else if (unit == "M" || unit == "MiB") mult = 1ull << 20;
  else if (unit == "G" || unit == "GiB") mult = 1ull << 30;
  else fail(Code::data, "invalid size '{}': unknown unit '{}' (KiB, MiB, GiB)", s, unit);
  if (v > std::numeric_limits<uint64_t>::max() / mult) fail(Code::data, "invalid size '{}': too large", s);
  return v * mult;
}

Nanos now() {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<Nanos>(ts.tv_sec) * kSecond + ts.tv_nsec;
}

Nanos monotonic_now() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<Nanos>(ts.tv_sec) * kSecond + ts.tv_nsec;
}

}  // namespace flk::timeutil
