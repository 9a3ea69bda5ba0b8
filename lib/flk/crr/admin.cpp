#include "flk/crr/admin.hpp"

#include <unistd.h>

#include <algorithm>

#include <fmt/format.h>

#include "flk/crr/watermark.hpp"
#include "flk/transport/mailbox.hpp"
#include "flk/util/error.hpp"
#include "flk/util/fs.hpp"
#include "flk/util/json.hpp"
#include "flk/util/time.hpp"
#include "flk/wal/dir.hpp"

namespace flk::crr {

namespace stdfs = std::filesystem;

namespace {

Position ship_position(const std::string& source, const ShipWatermark& w) {
  return {"ship", source, w.target, w.sequence, w.sha256, w.time, std::nullopt};
}

Position replay_position(const std::string& region, const std::string& source,
                         const std::optional<store::Watermark>& w) {
  Position p{"replay", source, region, 0, {}, 0, std::nullopt};
  if (w) p.sequence = w->sequence, p.sha256 = w->digest, p.time = w->updated;
  return p;
}

// Refuses a forward move without force; says what it would skip.
void check_move(const Position& before, uint64_t sequence, bool force, std::string_view what) {
  if (sequence <= before.sequence || force) return;
  fail(Code::usage,
       "moving the {} watermark of {} from {} to {} would skip segment{} {}{}: {} (give --force to do it anyway)",
       before.kind, before.kind == "ship" ? "target '" + before.target + "'" : "source '" + before.source + "'",
       before.sequence, sequence, sequence - before.sequence == 1 ? "" : "s", before.sequence + 1,
       sequence - before.sequence == 1 ? "" : fmt::format("-{}", sequence), what);
}

// Removes a temp file when it goes out of scope.
struct TempFile {
  stdfs::path path;
  ~TempFile() { ::unlink(path.c_str()); }
};

}  // namespace

std::string position_json(const Position& p) {
  std::string out;
  json::Object j(out);
  j.str("kind", p.kind).str("source", p.source).str("target", p.target).unum("sequence", p.sequence);
  j.str("sha256", p.sequence ? hash::to_hex(p.sha256) : "");
  if (p.time) j.str("time", timeutil::format_rfc3339(p.time));
  else j.null("time");
  if (p.behind) j.unum("behind", *p.behind);
  j.close();
  return out;
}

std::string move_json(const Move& m) {
  std::string out;
  json::Object j(out);
  j.raw("before", position_json(m.before)).raw("after", position_json(m.after)).boolean("forced", m.forced);
  j.close();
  return out;
}

std::vector<Position> ship_positions(const std::string& source, const stdfs::path& state, const stdfs::path& wal,
                                     std::vector<std::string> targets) {
  if (targets.empty()) {
    std::error_code ec;
    for (const auto& e : stdfs::directory_iterator(state / "ship", ec)) {
      std::string name = e.path().filename().string();
      if (name.ends_with(".json") && valid_region(e.path().stem().string())) targets.push_back(e.path().stem().string());
    }
    std::sort(targets.begin(), targets.end());
  }
  std::optional<std::vector<wal::SegmentFile>> files;
  try {
    files = wal::list_segments(wal);
  } catch (const Error&) {
  }
  std::vector<Position> out;
  for (const auto& t : targets) {
    Position p = ship_position(source, load_ship_watermark(state, t));
    if (files)
      p.behind = std::count_if(files->begin(), files->end(),
                               [&](const wal::SegmentFile& f) { return f.sealed && f.sequence > p.sequence; });
    out.push_back(p);
  }
  return out;
}

std::vector<Position> replay_positions(store::Store& store, const std::string& region,
                                       const std::optional<stdfs::path>& mailbox) {
  std::vector<std::string> sources;
  std::map<std::string, store::Watermark> wms;
  for (const auto& w : store.watermarks()) sources.push_back(w.source), wms[w.source] = w;
  if (mailbox)  // streams shipped here but never applied have a position too: nothing yet
    for (const auto& [s, t] : transport::list_streams(*mailbox))
      if (t == region && s != region && !wms.count(s)) sources.push_back(s);
  std::sort(sources.begin(), sources.end());
  std::vector<Position> out;
  for (const auto& s : sources) {
    auto it = wms.find(s);
    Position p = replay_position(region, s, it == wms.end() ? std::nullopt : std::optional(it->second));
    if (mailbox) p.behind = transport::list_stream(*mailbox, s, region, p.sequence).size();
    out.push_back(p);
  }
  return out;
}

Move set_ship_watermark(const std::string& source, const Target& t, const stdfs::path& state, const stdfs::path& wal,
                        uint64_t sequence, bool force) {
  fs::make_dirs(state / "ship");
  fs::FileLock lock(state / "ship" / (t.region + ".lock"), false);
  ShipWatermark w = load_ship_watermark(state, t.region);
  Move m;
  m.before = ship_position(source, w);
  m.forced = sequence > w.sequence;
  w.sequence = sequence;
  w.sha256 = w.source_sha256 = {};
  w.first_ts = w.last_ts = 0;
  if (sequence > 0) {
    std::vector<wal::SegmentFile> files = wal::list_segments(wal);
    auto f = std::find_if(files.begin(), files.end(),
                          [&](const wal::SegmentFile& s) { return s.sealed && s.sequence == sequence; });
    if (f == files.end())
      fail(Code::no_input, "segment {} is not a sealed segment of WAL '{}': its digest is needed for the chain check",
           sequence, wal.string());
    w.source_sha256 = wal::file_digest(f->path);
    if (auto side = wal::read_digest_sidecar(f->path); side && *side != w.source_sha256)
      fail(Code::data, "segment '{}': SHA-256 {} does not match its sidecar's {}", f->path.string(),
           hash::to_hex(w.source_sha256), hash::to_hex(*side));
    if (t.tenants) {
      fs::make_dirs(state / "outbox");
      TempFile tmp{state / "outbox" / fmt::format(".set-{}.wal", ::getpid())};
      Reencoded re = reencode_segment(f->path, w.source_sha256, *t.tenants, tmp.path);
      w.sha256 = re.sha256;
      w.first_ts = re.seal.first_ts, w.last_ts = re.seal.last_ts;
    } else {
      w.sha256 = w.source_sha256;
      wal::SegmentStat st = wal::stat_segment(*f);
      w.first_ts = st.counts.first_ts, w.last_ts = st.counts.last_ts;
    }
  }
  check_move(m.before, sequence, force, fmt::format("they would never be shipped to '{}'", t.region));
  w.time = timeutil::now();
  save_ship_watermark(state, w);
  m.after = ship_position(source, w);
  return m;
}

Move set_replay_watermark(store::Store& store, transport::Transport& mailbox, const std::string& source,
                          const std::string& region, const stdfs::path& state, uint64_t sequence, bool force) {
  check_region(source, "source region");
  fs::make_dirs(state / "read");
  fs::FileLock lock(state / "read" / (source + ".lock"), false);
  Move m;
  m.before = replay_position(region, source, store.watermark(source));
  m.forced = sequence > m.before.sequence;
  store::Watermark w{source, sequence, {}, timeutil::now()};
  if (sequence > 0) {
    auto entries = mailbox.list(source, region, sequence - 1);
    if (entries.empty() || entries.front().sequence != sequence)
      fail(Code::no_input, "{}: no segment {} of source '{}': its digest is needed for the chain check",
           mailbox.describe(), sequence, source);
    transport::Address a{source, region, sequence};
    std::optional<TempFile> tmp;
    stdfs::path file;
    if (auto local = mailbox.local_path(a)) {
      file = *local;
    } else {
      tmp.emplace(TempFile{state / "read" / fmt::format(".set-{}.wal", ::getpid())});
      file = tmp->path;
      mailbox.get(a, file);
    }
    wal::Header h;
    hash::Sha256 sha;
    wal::read_segment(file, true, [](const Record&) {}, [&](const wal::Header& hh) { h = hh; }, &sha);
    hash::Digest got = sha.finish();
    if (got != entries.front().sha256)
      fail(Code::data, "{}: source '{}' segment {}: SHA-256 {} does not match the {} declared for it",
           mailbox.describe(), source, sequence, hash::to_hex(got), hash::to_hex(entries.front().sha256));
    if (h.region != source || h.sequence != sequence)
      fail(Code::data, "{}: source '{}' segment {}: its header names region '{}' sequence {}", mailbox.describe(),
           source, sequence, h.region, h.sequence);
    w.digest = wal::chain_digest(h, got);
  }
  check_move(m.before, sequence, force, "their records would never be applied here");
  store.set_watermark(w);
  m.after = replay_position(region, source, sequence ? std::optional(w) : std::nullopt);
  return m;
}

}  // namespace flk::crr
