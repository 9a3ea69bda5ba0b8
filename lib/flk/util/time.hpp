// Time: RFC 3339 timestamps with nanoseconds, durations ("60s", "5m", "1h30m"), sizes.
//
// A timestamp is int64 nanoseconds since the Unix epoch, UTC (DESIGN.md §1).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace flk::timeutil {

using Nanos = int64_t;

constexpr Nanos kSecond = 1'000'000'000;

// "2026-11-26T08:00:00.123456789Z" or with an offset ("+02:00"); 'T' or 't' or ' ';
// 0–9 fractional digits. Throws Error(data) naming what is wrong.
Nanos parse_rfc3339(std::string_view s);

// UTC, 'Z', the fraction trimmed of trailing zeros (as Go's RFC3339Nano):
// "2026-11-26T08:00:00Z", "2026-11-26T08:00:00.5Z", "…00.123456789Z".
std::string format_rfc3339(Nanos t);

// Like parse_rfc3339, but also accepts "now", a duration ago ("-5m", "5m ago"), or
// "@<unix seconds>". For --since and --since-time flags.
Nanos parse_time_arg(std::string_view s, Nanos now);

// "500ms", "60s", "5m", "1h30m", "2d", "1.5s"; units ns us ms s m h d. A bare "0" is
// zero. Throws Error(data).
Nanos parse_duration(std::string_view s);
std::string format_duration(Nanos d);

// "1048576", "64KiB", "64MiB", "1GiB" (also K, M, G: binary). Throws Error(data).
uint64_t parse_size(std::string_view s);

Nanos now();             // CLOCK_REALTIME
Nanos monotonic_now();   // CLOCK_MONOTONIC

}  // namespace flk::timeutil
