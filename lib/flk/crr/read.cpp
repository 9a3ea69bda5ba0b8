#include "flk/crr/read.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <thread>

#include <fmt/format.h>

#include "flk/transport/stream.hpp"
#include "flk/util/fs.hpp"
#include "flk/util/json.hpp"
#include "flk/wal/dir.hpp"

namespace flk::crr {

namespace stdfs = std::filesystem;

Reader::Reader(ReadOptions o) : o_(std::move(o)) {
  check_region(o_.region, "region");
  for (const auto& s : o_.sources) check_region(s, "source region");
  if (o_.from != "-") tr_ = transport::open(o_.from, o_.transport);
  store_ = store::open(o_.store_url);
}

Reader::~Reader() = default;

void Reader::stop() {
  stop_ = true;
  if (tr_) tr_->interrupt();
}

void Reader::apply_segment(const transport::Address& a, const stdfs::path& file, const hash::Digest& declared,
                           int64_t started) {
  const std::string what = fmt::format("source '{}' segment {}", a.source, a.sequence);
  std::optional<store::Watermark> wm = store_->watermark(a.source);
  uint64_t have = wm ? wm->sequence : 0;
  if (a.sequence <= have) return;  // applied before (a re-delivery): nothing to do
  if (a.sequence != have + 1)
    fail(Code::data, "source '{}': segment {} is missing (gap): replayed up to {}, the next one here is {}", a.source,
         have + 1, have, a.sequence);

  std::vector<Record> records;
  wal::Header h;
  hash::Sha256 sha;
  try {
    wal::read_segment(
        file, true, [&](const Record& r) { records.push_back(r); }, [&](const wal::Header& hh) { h = hh; }, &sha);
  } catch (const Error& e) {
    throw e.wrap(what);
  }
  hash::Digest got = sha.finish();
  if (got != declared)
    fail(Code::data, "{}: SHA-256 {} does not match the {} declared for it", what, hash::to_hex(got),
         hash::to_hex(declared));
  if (h.region != a.source) fail(Code::data, "{}: its header names region '{}'", what, h.region);
  if (h.sequence != a.sequence) fail(Code::data, "{}: its header names sequence {}", what, h.sequence);
  if (have > 0 && h.prev != wm->digest)
    fail(Code::data, "{}: broken chain: it follows a segment with digest {}, but segment {} was applied with digest {}",
         what, hash::to_hex(h.prev), have, hash::to_hex(wm->digest));
  if (have == 0 && a.sequence == 1 && !hash::is_zero(h.prev))
    fail(Code::data, "{}: segment 1 names a previous segment", what);

  store::Watermark next{a.source, a.sequence, wal::chain_digest(h, got), timeutil::now()};
  store::ApplyStats st = store_->apply(records, &next);

  if (!o_.emit) return;
  std::string line;
  json::Object j(line);
  j.str("source", a.source).unum("sequence", a.sequence).unum("records", records.size());
  j.unum("applied", st.inserted + st.replaced).unum("duplicates", st.duplicates).unum("later", st.later);
  j.unum("conflicts", st.conflicts).str("sha256", hash::to_hex(got));
  j.num("ms", (timeutil::monotonic_now() - started) / 1'000'000).str("time", timeutil::format_rfc3339(timeutil::now()));
  j.close();
  o_.emit(line);
}

Code Reader::read_source(const std::string& source) {
  try {
    std::optional<store::Watermark> wm = store_->watermark(source);
    for (const transport::Entry& e : tr_->list(source, o_.region, wm ? wm->sequence : 0)) {
      if (stop_) fail(Code::temp_fail, "interrupted");
      int64_t started = timeutil::monotonic_now();
      transport::Address a{source, o_.region, e.sequence};
      if (auto local = tr_->local_path(a)) {
        apply_segment(a, *local, e.sha256, started);
        continue;
      }
      fs::make_dirs(o_.scratch);  // only a transport that copies needs it
      stdfs::path tmp = o_.scratch / fmt::format("{}-{}.wal", source, e.sequence);
      struct Remove {
        stdfs::path p;
        ~Remove() { ::unlink(p.c_str()); }
      } remove{tmp};
      hash::Digest declared = tr_->get(a, tmp);
      if (declared != e.sha256)
        fail(Code::protocol, "{}: source '{}' segment {}: listed with SHA-256 {}, served with {}", tr_->describe(), source,
             e.sequence, hash::to_hex(e.sha256), hash::to_hex(declared));
      apply_segment(a, tmp, declared, started);
    }
    last_error_.erase(source);
    return Code::ok;
  } catch (const Error& e) {
    if (stop_) return Code::temp_fail;
    std::string msg = std::string_view(e.what()).starts_with("source '")
                          ? std::string(e.what())
                          : fmt::format("source '{}': {}", source, e.what());
    if (o_.error && last_error_[source] != msg) o_.error(msg);  // --follow: said once, not every poll
    last_error_[source] = msg;
    return e.code();
  }
}

Code Reader::read_stream() {
  transport::StreamReader r(STDIN_FILENO, "stdin");
  stdfs::path tmp = o_.scratch / "stream.wal";
  try {
    fs::make_dirs(o_.scratch);
    while (auto s = r.next()) {
      const transport::Address& a = s->address;
      bool wanted = o_.sources.empty() ||
                    std::find(o_.sources.begin(), o_.sources.end(), a.source) != o_.sources.end();
      if (a.target != o_.region || !wanted) {
        if (a.target != o_.region)
          fail(Code::data, "stdin: segment {} of '{}' is for region '{}', not '{}'", a.sequence, a.source, a.target,
               o_.region);
        r.body([](std::string_view) {});
        continue;
      }
      int64_t started = timeutil::monotonic_now();
      {
        fs::Fd out = fs::Fd::open(tmp.string(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
        r.body([&](std::string_view b) { out.write_all(b); });
      }
      apply_segment(a, tmp, s->sha256, started);
    }
    ::unlink(tmp.c_str());
    return Code::ok;
  } catch (const Error& e) {
    ::unlink(tmp.c_str());
    if (o_.error) o_.error(e.what());
    return e.code();
  }
}

int Reader::run_once() {
  if (!tr_) return static_cast<int>(read_stream());
  std::vector<std::string> sources = o_.sources;
  Code result = Code::ok;
  if (sources.empty()) {
    try {
      for (const auto& [s, t] : tr_->streams())
        if (t == o_.region && s != o_.region) sources.push_back(s);
    } catch (const Error& e) {
      if (o_.error) o_.error(e.what());
      return e.exit_status();
    }
  }
  for (const auto& s : sources) {
    if (stop_) return static_cast<int>(Code::temp_fail);
    result = most_serious(result, read_source(s));
  }
  return static_cast<int>(result);
}

int Reader::follow(timeutil::Nanos interval) {
  if (!tr_) return run_once();  // a stream ends with its input
  int last = 0;
  while (!stop_) {
    last = run_once();
    auto until = std::chrono::steady_clock::now() + std::chrono::nanoseconds(interval);
    while (!stop_ && std::chrono::steady_clock::now() < until) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return last == static_cast<int>(Code::data) ? last : 0;
}

}  // namespace flk::crr
