// gen_records: writes N benchmark records as JSON Lines to stdout, each sized so that
// its WAL frame (16-byte head + canonical encoding) is exactly --frame-bytes long.
//
//   gen_records N [--frame-bytes 200] [--region us-east-1] [--rate R]
//
// Records look like production ones: a 64-hex-digit pcs_id, a tenant, an outcome
// (90% accepted, 8% escalated, 2% rejected), an explicit ts rising by 1 µs from
// 2024-05-01T00:00:00Z, a params string and a small JSON payload (keys sorted, compact,
// so the payload is stored as given). The region is omitted: `flk-wal append --region`
// supplies it; --region here only sizes the frame. Deterministic: the same N gives the
// same bytes.
//
// --rate R (bench/read.sh, the lag figure): a steady producer instead. Record i is
// written at start + i/R seconds (stdout flushed before every wait, so each record
// leaves when it is due; a producer that falls behind catches up at once and says so
// on stderr at the end), and its ts is the wall-clock time (CLOCK_REALTIME) at which
// it is written, so that ts is when the record entered the pipeline. Everything else
// is as without --rate (same pcs_ids, same frame size).
#include <time.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include <fmt/format.h>

#include "flk/core/record.hpp"
#include "flk/util/hash.hpp"
#include "flk/util/json.hpp"
#include "flk/util/time.hpp"
#include "flk/wal/segment.hpp"

namespace {

uint64_t splitmix64(uint64_t& s) {
  uint64_t z = (s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

[[noreturn]] void usage() {
  std::fputs("usage: gen_records N [--frame-bytes BYTES] [--region REGION] [--rate RECORDS_PER_SECOND]\n", stderr);
  std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) usage();
  char* end = nullptr;
  unsigned long long n = std::strtoull(argv[1], &end, 10);
  if (*end != '\0') usage();
  size_t frame_bytes = 200;
  std::string region = "us-east-1";
  double rate = 0;  // records per second; 0: as fast as possible, synthetic ts
  for (int i = 2; i < argc; ++i) {
    if (std::strcmp(argv[i], "--frame-bytes") == 0 && i + 1 < argc) frame_bytes = std::strtoul(argv[++i], nullptr, 10);
    else if (std::strcmp(argv[i], "--region") == 0 && i + 1 < argc) region = argv[++i];
    else if (std::strcmp(argv[i], "--rate") == 0 && i + 1 < argc) {
      rate = std::strtod(argv[++i], &end);
      if (*end != '\0' || !(rate > 0)) usage();
    } else usage();
  }

  const int64_t base_ts = flk::timeutil::parse_rfc3339("2024-05-01T00:00:00Z");
  uint64_t rng = 42;
  std::string out;
  out.reserve(1 << 20);
  flk::Record r;
  r.region = region;
  auto flush = [&] {
    if (std::fwrite(out.data(), 1, out.size(), stdout) != out.size() || std::fflush(stdout) != 0) return false;
    out.clear();
    return true;
  };
  const flk::timeutil::Nanos start = flk::timeutil::monotonic_now();
  flk::timeutil::Nanos worst_late = 0;  // --rate: how far behind its schedule a record was written
  for (unsigned long long i = 0; i < n; ++i) {
    if (rate > 0) {
      const flk::timeutil::Nanos due = start + static_cast<flk::timeutil::Nanos>(static_cast<double>(i) * 1e9 / rate);
      flk::timeutil::Nanos now = flk::timeutil::monotonic_now();
      if (due > now) {
        if (!out.empty() && !flush()) return 1;
        timespec ts{static_cast<time_t>(due / flk::timeutil::kSecond), static_cast<long>(due % flk::timeutil::kSecond)};
        while (::clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nullptr) != 0) {
        }
      } else if (now - due > worst_late) {
        worst_late = now - due;
      }
    }
    char id[65];
    for (int k = 0; k < 4; ++k) std::snprintf(id + 16 * k, 17, "%016llx", static_cast<unsigned long long>(splitmix64(rng)));
    r.pcs_id.assign(id, 64);
    uint64_t x = splitmix64(rng);
    r.tenant_id = fmt::format("tenant-{:04}", x % 1000);
    unsigned o = static_cast<unsigned>((x >> 10) % 100);
    r.outcome = o < 90 ? flk::Outcome::accepted : o < 98 ? flk::Outcome::escalated : flk::Outcome::rejected;
    r.ts = rate > 0 ? flk::timeutil::now() : base_ts + static_cast<int64_t>(i) * 1000 + static_cast<int64_t>((x >> 20) % 1000);
    r.payload = fmt::format(R"({{"amount":{},"currency":"EUR"}})", (x >> 30) % 1000000);
    r.params = fmt::format("model=fraud-v7;score={:03}", (x >> 50) % 1000);
    // Pad params so that the frame is exactly frame_bytes (when it can be).
    size_t size = flk::wal::record_frame_size(r);
    if (size < frame_bytes) r.params->append(frame_bytes - size, '.');

    flk::json::Object obj(out);
    obj.str("pcs_id", r.pcs_id)
        .str("tenant_id", r.tenant_id)
        .str("outcome", flk::outcome_name(r.outcome))
        .str("ts", flk::timeutil::format_rfc3339(r.ts))
        .str("params", *r.params)
        .raw("payload", *r.payload);
    obj.close();
    out += '\n';
    if (out.size() >= (1 << 20) - 4096) {
      if (std::fwrite(out.data(), 1, out.size(), stdout) != out.size()) return 1;
      out.clear();
    }
  }
  if (!flush()) return 1;
  if (rate > 0) {
    double secs = static_cast<double>(flk::timeutil::monotonic_now() - start) / 1e9;
    std::fprintf(stderr, "gen_records: %llu records in %.3f s (%.1f/s, asked %.1f/s); at worst %.3f ms behind schedule\n",
                 n, secs, n > 1 && secs > 0 ? static_cast<double>(n - 1) / secs : 0.0, rate, static_cast<double>(worst_late) / 1e6);
  }
  return 0;
}
