#include "flk/wal/commands.hpp"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <thread>

#include <fmt/format.h>

#include "flk/util/error.hpp"

namespace flk::wal {

void write_out(std::FILE* out, const std::string& s) {
  if ((!s.empty() && std::fwrite(s.data(), 1, s.size(), out) != s.size()) || std::fflush(out) != 0)
    throw sys_error("cannot write", "stdout", errno, Code::io);
}

std::string sealed_json(const SealedSegment& s) {
  std::string out;
  json::Object o(out);
  o.unum("segment", s.sequence)
      .str("state", "sealed")
      .unum("records", s.counts.records)
      .str("first_ts", timeutil::format_rfc3339(s.counts.first_ts))
      .str("last_ts", timeutil::format_rfc3339(s.counts.last_ts))
      .unum("bytes", s.bytes)
      .str("sha256", hash::to_hex(s.sha256))
      .str("file", s.path.string());
  o.close();
  return out;
}

AppendStats append_jsonl(Writer& w, json::LineReader& in, std::FILE* out, const AppendOptions& opts) {
  AppendStats stats;
  RecordDefaults defaults{w.options().region, 0};
  std::vector<Record> batch;
  std::string acks;
  auto report = [&](std::optional<SealedSegment> s) {
    if (!s) return;
    ++stats.sealed;
    if (opts.info) opts.info(fmt::format("sealed {}", sealed_json(*s)));
  };
  for (;;) {
    batch.clear();
    std::optional<Error> bad;
    while (auto line = in.next()) {
      if (line->find_first_not_of(" \t") == std::string_view::npos) continue;
      defaults.now = timeutil::now();
      try {
        batch.push_back(record_from_json(*line, defaults, /*padded=*/true));
      } catch (const Error& e) {
        bad.emplace(Code::data, fmt::format("invalid record on stdin line {}: {}", in.line_number(), e.what()));
        break;
      }
    }
    if (!batch.empty()) {
      std::vector<Position> pos = w.append(batch);
      acks.clear();
      for (size_t i = 0; i < batch.size(); ++i) {
        json::Object o(acks);
        o.str("pcs_id", batch[i].pcs_id).unum("segment", pos[i].segment).unum("offset", pos[i].offset);
        o.close();
        acks += '\n';
      }
      write_out(out, acks);
      stats.records += batch.size();
      for (auto& s : w.take_sealed()) report(s);
    }
    report(w.seal_if_due());
    if (bad) throw *bad;
    if (in.eof()) break;
    if (opts.stop_request && opts.stop_request->load()) {
      if (!opts.keep_open) report(w.seal());
      return stats;
    }
    if (opts.seal_request && opts.seal_request->exchange(false)) report(w.seal());
    int timeout = -1;
    if (auto due = w.due_at())
      timeout = static_cast<int>(std::max<timeutil::Nanos>(0, (*due - timeutil::monotonic_now() + 999'999) / 1'000'000));
    if (in.fill(timeout) == json::LineReader::Fill::timeout) report(w.seal_if_due());
  }
  if (!opts.keep_open) {
    if (auto due = w.due_at()) {
      timeutil::Nanos wait = *due - timeutil::monotonic_now();
      if (wait > 0) std::this_thread::sleep_for(std::chrono::nanoseconds(wait));
      report(w.seal());
    }
  }
  return stats;
}

std::optional<SealedSegment> request_seal(const std::filesystem::path& dir, timeutil::Nanos timeout) {
  std::filesystem::path lock = dir / std::string(kLockName);
  auto pid = fs::FileLock::holder(lock);
  auto files = list_segments(dir);
  if (files.empty() || files.back().sealed) return std::nullopt;
  const SegmentFile open = files.back();
  if (stat_segment(open).counts.records == 0) return std::nullopt;
  std::string comm;
  try {
    comm = fs::read_file(fmt::format("/proc/{}/comm", pid.value_or(0)));
  } catch (const Error&) {
  }
  if (!pid || comm != "flk-wal\n")
    fail(Code::temp_fail, "cannot lock '{}': held by {} (not a running flk-wal append)", lock.string(),
         pid ? fmt::format("pid {}", *pid) : "another process");
  if (::kill(static_cast<pid_t>(*pid), SIGUSR1) != 0) throw sys_error("cannot signal the writer of", dir.string(), errno);
  std::filesystem::path sealed = dir / segment_file_name(open.sequence, true);
  timeutil::Nanos end = timeutil::monotonic_now() + timeout;
  while (timeutil::monotonic_now() < end) {
    if (::access(sealed.c_str(), F_OK) == 0) {
      SegmentStat st = stat_segment({open.sequence, true, sealed});
      return SealedSegment{open.sequence, st.counts, st.bytes, st.sha256.value_or(hash::Digest{}), sealed};
    }
    if (::access(open.path.c_str(), F_OK) != 0) return std::nullopt;  // emptied and replaced? nothing sealed by us
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  fail(Code::temp_fail, "WAL '{}': the writer (pid {}) did not seal segment {} within {}", dir.string(), *pid,
       open.sequence, timeutil::format_duration(timeout));
}

std::vector<std::filesystem::path> segment_paths(const std::filesystem::path& dir) {
  std::vector<std::filesystem::path> out;
  for (const auto& f : list_segments(dir)) out.push_back(f.path);
  return out;
}

uint64_t cat(const std::vector<std::filesystem::path>& segments, std::optional<timeutil::Nanos> since, std::FILE* out) {
  uint64_t n = 0;
  std::string buf;
  buf.reserve(1 << 17);
  for (const auto& p : segments) {
    bool sealed = true;
    std::string name = p.filename().string();
    if (name.size() >= kOpenSuffix.size() && name.compare(name.size() - kOpenSuffix.size(), kOpenSuffix.size(), kOpenSuffix) == 0)
      sealed = false;
    if (since && sealed) {
      SegmentStat st = stat_segment({0, true, p});
      if (st.counts.records == 0 || st.counts.last_ts < *since) continue;
    }
    try {
      n += read_segment(p, !sealed, [&](const Record& r) {
        if (since && r.ts < *since) return;
        append_record_json(buf, r);
        buf += '\n';
        if (buf.size() >= (1 << 16)) {
          write_out(out, buf);
          buf.clear();
        }
      });
    } catch (const Error&) {
      write_out(out, buf);  // the good records before the damage
      throw;
    }
    write_out(out, buf);
    buf.clear();
  }
  return n;
}

void ls(const std::filesystem::path& dir, bool as_json, std::FILE* out) {
  std::string buf;
  if (!as_json)
    buf += fmt::format("{:>8}  {:<6}  {:>9}  {:<30}  {:<30}  {:>10}  {}\n", "SEGMENT", "STATE", "RECORDS", "FIRST_TS",
                       "LAST_TS", "BYTES", "SHA256");
  for (const auto& f : list_segments(dir)) {
    SegmentStat st = stat_segment(f);
    std::string first = st.counts.records ? timeutil::format_rfc3339(st.counts.first_ts) : "-";
    std::string last = st.counts.records ? timeutil::format_rfc3339(st.counts.last_ts) : "-";
    std::string sha = st.sha256 ? hash::to_hex(*st.sha256) : "";
    if (as_json) {
      json::Object o(buf);
      o.unum("segment", f.sequence).str("state", f.sealed ? "sealed" : "open").unum("records", st.counts.records);
      if (st.counts.records) o.str("first_ts", first).str("last_ts", last);
      else o.null("first_ts").null("last_ts");
      o.unum("bytes", st.bytes).str("sha256", sha).str("region", st.header.region).str("file", f.path.string());
      o.close();
      buf += '\n';
    } else {
      buf += fmt::format("{:>8}  {:<6}  {:>9}  {:<30}  {:<30}  {:>10}  {}\n", f.sequence, f.sealed ? "sealed" : "open",
                         st.counts.records, first, last, st.bytes, sha.substr(0, 16));
    }
  }
  write_out(out, buf);
}

}  // namespace flk::wal
