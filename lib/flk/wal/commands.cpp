#include "flk/wal/commands.hpp"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <mutex>
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

namespace {

// The committer stage of append: appends parsed batches through the writer (write,
// fdatasync) and prints their acknowledgements, on its own thread, so that parsing
// the next batch overlaps the sync of this one. A bounded queue (two batches) keeps
// memory flat; the first error closes it and is kept for the reader to throw.
class Committer {
 public:
  Committer(Writer& w, std::FILE* out, std::function<void(std::optional<SealedSegment>)> report)
      : w_(w), out_(out), report_(std::move(report)), thread_([this] { run(); }) {}
  ~Committer() { finish(); }

  // Queues a batch; false when the committer has failed (see error()).
  bool push(std::vector<Record>&& batch) {
    std::unique_lock l(m_);
    cv_.wait(l, [&] { return q_.size() < 2 || error_; });
    if (error_) return false;
    q_.push_back(std::move(batch));
    cv_.notify_all();
    return true;
  }

  // Waits until every queued batch is committed (or the committer failed).
  void flush() {
    std::unique_lock l(m_);
    cv_.wait(l, [&] { return (q_.empty() && !busy_) || error_; });
  }

  // Waits until every queued batch is committed and stops the thread.
  void finish() {
    {
      std::lock_guard l(m_);
      closed_ = true;
      cv_.notify_all();
    }
    if (thread_.joinable()) thread_.join();
  }

  const std::optional<Error>& error() const { return error_; }
  uint64_t records() const { return records_; }

 private:
  void run() {
    std::string acks;
    for (;;) {
      std::vector<Record> batch;
      {
        std::unique_lock l(m_);
        cv_.wait(l, [&] { return !q_.empty() || closed_; });
        if (q_.empty()) return;
        batch = std::move(q_.front());
        q_.pop_front();
        busy_ = true;
        cv_.notify_all();
      }
      try {
        std::vector<Position> pos = w_.append(batch);
        acks.clear();
        for (size_t i = 0; i < batch.size(); ++i) {
          json::Object o(acks);
          o.str("pcs_id", batch[i].pcs_id).unum("segment", pos[i].segment).unum("offset", pos[i].offset);
          o.close();
          acks += '\n';
        }
        write_out(out_, acks);
        records_ += batch.size();
        for (auto& s : w_.take_sealed()) report_(s);
      } catch (const Error& e) {
        std::lock_guard l(m_);
        error_ = e;
        busy_ = false;
        cv_.notify_all();
        return;
      }
      std::lock_guard l(m_);
      busy_ = false;
      cv_.notify_all();
    }
  }

  Writer& w_;
  std::FILE* out_;
  std::function<void(std::optional<SealedSegment>)> report_;
  std::mutex m_;
  std::condition_variable cv_;
  std::deque<std::vector<Record>> q_;
  bool closed_ = false;
  bool busy_ = false;  // a batch is being committed
  std::optional<Error> error_;
  uint64_t records_ = 0;
  std::thread thread_;  // last: starts after the members above exist
};

}  // namespace

AppendStats append_jsonl(Writer& w, json::LineReader& in, std::FILE* out, const AppendOptions& opts) {
  AppendStats stats;
  std::atomic<uint64_t> sealed{0};
  auto report = [&](std::optional<SealedSegment> s) {
    if (!s) return;
    ++sealed;
    if (opts.info) opts.info(fmt::format("sealed {}", sealed_json(*s)));
  };
  RecordDefaults defaults{w.options().region, 0};
  Committer committer(w, out, report);
  auto drain = [&] {  // every queued batch committed, or the committer's error thrown
    committer.finish();
    if (committer.error()) throw *committer.error();
  };
  for (;;) {
    std::vector<Record> batch;
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
    if (!batch.empty() && !committer.push(std::move(batch))) drain();
    if (bad) {
      drain();  // the records before the bad line are acknowledged first
      throw *bad;
    }
    report(w.seal_if_due());
    if (in.eof()) break;
    if (opts.stop_request && opts.stop_request->load()) break;
    if (opts.seal_request && opts.seal_request->exchange(false)) {
      committer.flush();  // seal what was read before the request
      if (committer.error()) drain();
      report(w.seal());
    }
    if (in.fill(0) != json::LineReader::Fill::timeout) continue;  // more input is waiting
    // Input is quiet: let the committer finish (so the open segment's due time is
    // known), then wait for input or that time, whichever comes first.
    committer.flush();
    if (committer.error()) drain();
    report(w.seal_if_due());
    int timeout = -1;
    if (auto due = w.due_at())
      timeout = static_cast<int>(std::max<timeutil::Nanos>(0, (*due - timeutil::monotonic_now() + 999'999) / 1'000'000));
    if (in.fill(timeout) == json::LineReader::Fill::timeout) report(w.seal_if_due());
  }
  drain();
  stats.records = committer.records();
  if (!opts.keep_open) report(w.seal());
  stats.sealed = sealed;
  return stats;
}

std::optional<SealedSegment> request_seal(const std::filesystem::path& dir, timeutil::Nanos timeout) {
  std::filesystem::path lock = dir / std::string(kLockName);
  auto pid = fs::FileLock::holder(lock);
  auto files = list_segments(dir);
  if (files.empty() || files.back().sealed) return std::nullopt;
  const SegmentFile open = files.back();
  if (stat_segment(open).counts.records == 0) return std::nullopt;
  // Only a running `flk-wal append` handles SIGUSR1 (to anything else it is fatal):
  // check the holder's argv ("flk-wal" … "append").
  bool is_append = false;
  try {
    std::string cmdline = fs::read_file(fmt::format("/proc/{}/cmdline", pid.value_or(0)));
    std::vector<std::string> argv;
    for (size_t at = 0; at < cmdline.size();) {
      size_t end = cmdline.find('\0', at);
      if (end == std::string::npos) end = cmdline.size();
      argv.push_back(cmdline.substr(at, end - at));
      at = end + 1;
    }
    is_append = !argv.empty() && std::filesystem::path(argv[0]).filename() == "flk-wal" &&
                std::find(argv.begin() + 1, argv.end(), "append") != argv.end();
  } catch (const Error&) {
  }
  if (!pid || !is_append)
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

uint64_t cat(const std::vector<std::filesystem::path>& segments, std::optional<timeutil::Nanos> since,
             bool contiguous, std::FILE* out) {
  uint64_t n = 0;
  std::string buf;
  buf.reserve(1 << 17);
  std::optional<std::pair<uint64_t, hash::Digest>> prev;  // the segment just read
  for (const auto& p : segments) {
    bool sealed = true;  // a file not named like a segment is read as a sealed one
    parse_segment_file_name(p.filename().string(), &sealed);
    auto check_link = [&](const Header& h) {
      if (prev && contiguous && h.sequence != prev->first + 1)
        fail(Code::data, "segment '{}': sequence gap: segment {} follows {}", p.string(), h.sequence, prev->first);
      if (prev && h.sequence == prev->first + 1 && h.prev != prev->second)
        fail(Code::data, "segment '{}': offset 32: broken chain: previous-segment digest does not match segment {}",
             p.string(), prev->first);
    };
    if (since && sealed) {
      SegmentStat st = stat_segment({0, true, p});
      if (st.counts.records == 0 || st.counts.last_ts < *since) {  // skipped unread: link by its sidecar
        check_link(st.header);
        prev.emplace(st.header.sequence, chain_digest(st.header, st.sha256.value_or(hash::Digest{})));
        continue;
      }
    }
    hash::Sha256 sha;
    uint64_t seq = 0;
    Header header;
    try {
      n += read_segment(
          p, sealed,
          [&](const Record& r) {
            if (since && r.ts < *since) return;
            append_record_json(buf, r);
            buf += '\n';
            if (buf.size() >= (1 << 16)) {
              write_out(out, buf);
              buf.clear();
            }
          },
          [&](const Header& h) {
            check_link(h);
            seq = h.sequence;
            header = h;
          },
          &sha);
    } catch (const Error&) {
      write_out(out, buf);  // the good records before the damage
      throw;
    }
    write_out(out, buf);
    buf.clear();
    prev.emplace(seq, chain_digest(header, sha.finish()));
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
