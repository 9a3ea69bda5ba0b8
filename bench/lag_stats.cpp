// lag_stats: the end-to-end lag of bench/read.sh (figure l), per record.
//
//   lag_stats READ_OUTPUT WAL_DIR [MAILBOX_STREAM_DIR]
//
// READ_OUTPUT holds flk-read's JSON lines, one per applied segment, each with its
// "sequence" and "time" (when the segment's records and watermark were committed). For
// each of those segments, the records' ts are read from the source WAL's sealed segment
// file WAL_DIR/<16-digit sequence>.wal — the records as flk-wal cat prints them, by the
// same reader (libflk's read_segment_views, which also checks every frame) — and each
// record's lag is that segment's commit time minus the record's ts.
//
// With MAILBOX_STREAM_DIR (MAILBOX/SOURCE/TARGET), the lag is also split into stages by
// file modification times, as a rough guide (the kernel's file times are coarse, a few
// ms): ts → sealed (the WAL segment's mtime: its seal frame is its last write), sealed →
// stored in the mailbox (the mailbox file's mtime: written, synced, renamed by
// flk-serve), stored → committed by flk-read.
//
// Prints one JSON line: counts, the first and last ts, the producer's achieved rate, and
// for the lag and each stage the min, p50, p90, p99, max and mean in milliseconds
// (percentiles by nearest rank); also, per segment, how long flk-read took to verify and
// apply it (its "ms": segment_apply_ms). Exit 1 when a segment is missing or damaged,
// when the sequences are not 1, 2, 3, … without a gap, or when READ_OUTPUT is empty.
#include <sys/stat.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "flk/util/error.hpp"
#include "flk/util/time.hpp"
#include "flk/wal/dir.hpp"
#include "flk/wal/segment.hpp"

namespace {

using Nanos = flk::timeutil::Nanos;

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "lag_stats: %s\n", what.c_str());
  std::exit(1);
}

std::optional<Nanos> mtime_of(const std::filesystem::path& p) {
  struct stat st{};
  if (::stat(p.c_str(), &st) != 0) return std::nullopt;
  return static_cast<Nanos>(st.st_mtim.tv_sec) * flk::timeutil::kSecond + st.st_mtim.tv_nsec;
}

// "name":{"min":…,"p50":…,…} in ms, for a non-empty sample (sorted here).
std::string summary(const char* name, std::vector<Nanos>& v) {
  std::sort(v.begin(), v.end());
  auto rank = [&](double p) {
    size_t k = static_cast<size_t>(std::ceil(p / 100.0 * static_cast<double>(v.size())));
    return v[std::clamp<size_t>(k, 1, v.size()) - 1];
  };
  long double sum = 0;
  for (Nanos x : v) sum += static_cast<long double>(x);
  auto ms = [](long double ns) { return static_cast<double>(ns / 1e6L); };
  char buf[512];
  std::snprintf(buf, sizeof buf, "\"%s\":{\"min\":%.3f,\"p50\":%.3f,\"p90\":%.3f,\"p99\":%.3f,\"max\":%.3f,\"mean\":%.3f}",
                name, ms(v.front()), ms(rank(50)), ms(rank(90)), ms(rank(99)), ms(v.back()),
                ms(sum / static_cast<long double>(v.size())));
  return buf;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3 && argc != 4) {
    std::fputs("usage: lag_stats READ_OUTPUT WAL_DIR [MAILBOX_STREAM_DIR]\n", stderr);
    return 2;
  }
  const std::filesystem::path wal_dir = argv[2];
  const std::optional<std::filesystem::path> mailbox = argc == 4 ? std::optional<std::filesystem::path>(argv[3]) : std::nullopt;

  std::ifstream in(argv[1]);
  if (!in) die(std::string("cannot open '") + argv[1] + "'");
  std::vector<Nanos> lag, to_seal, to_mailbox, to_commit, apply;
  bool stages = mailbox.has_value();
  uint64_t segments = 0, expect = 1;
  Nanos first_ts = INT64_MAX, last_ts = INT64_MIN;
  std::string line;
  try {
    while (std::getline(in, line)) {
      if (line.empty()) continue;
      auto j = nlohmann::json::parse(line);
      uint64_t seq = j.at("sequence").get<uint64_t>();
      Nanos commit = flk::timeutil::parse_rfc3339(j.at("time").get<std::string>());
      if (j.contains("ms")) apply.push_back(j.at("ms").get<Nanos>() * 1'000'000);
      if (seq != expect) die("segment " + std::to_string(seq) + " applied where " + std::to_string(expect) + " was due");
      ++expect;
      ++segments;
      std::filesystem::path seg = wal_dir / flk::wal::segment_file_name(seq, true);
      std::optional<Nanos> sealed, stored;
      if (stages) {
        sealed = mtime_of(seg);
        stored = mtime_of(*mailbox / flk::wal::segment_file_name(seq, true));
        if (!sealed || !stored) stages = false;  // said in the output: no stage split
      }
      uint64_t n = flk::wal::read_segment_views(seg, true, [&](const flk::RecordView& r, std::string_view) {
        lag.push_back(commit - r.ts);
        first_ts = std::min(first_ts, r.ts);
        last_ts = std::max(last_ts, r.ts);
        if (stages) {
          to_seal.push_back(*sealed - r.ts);
          to_mailbox.push_back(*stored - *sealed);
          to_commit.push_back(commit - *stored);
        }
      });
      if (j.contains("records") && j.at("records").get<uint64_t>() != n)
        die(seg.string() + ": " + std::to_string(n) + " records, flk-read applied " +
            std::to_string(j.at("records").get<uint64_t>()));
    }
  } catch (const flk::Error& e) {
    die(e.what());
  } catch (const std::exception& e) {
    die(std::string("cannot read '") + argv[1] + "': " + e.what());
  }
  if (lag.empty()) die(std::string("no applied segment in '") + argv[1] + "'");

  double span = static_cast<double>(last_ts - first_ts) / 1e9;
  std::printf("{\"records\":%zu,\"segments\":%llu,\"first_ts\":\"%s\",\"last_ts\":\"%s\",\"rate\":%.1f,%s", lag.size(),
              static_cast<unsigned long long>(segments), flk::timeutil::format_rfc3339(first_ts).c_str(),
              flk::timeutil::format_rfc3339(last_ts).c_str(),
              span > 0 ? static_cast<double>(lag.size() - 1) / span : 0.0, summary("lag_ms", lag).c_str());
  if (stages && !to_seal.empty()) {
    std::printf(",%s,%s,%s", summary("ts_to_sealed_ms", to_seal).c_str(), summary("sealed_to_mailbox_ms", to_mailbox).c_str(),
                summary("mailbox_to_commit_ms", to_commit).c_str());
  }
  if (apply.size() == segments) std::printf(",%s", summary("segment_apply_ms", apply).c_str());
  std::printf("}\n");
  return 0;
}
