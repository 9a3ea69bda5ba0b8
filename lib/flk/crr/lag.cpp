#include "flk/crr/lag.hpp"

#include <algorithm>

#include "flk/crr/watermark.hpp"
#include "flk/util/error.hpp"
#include "flk/util/fs.hpp"
#include "flk/util/json.hpp"
#include "flk/util/time.hpp"

namespace flk::crr {

namespace stdfs = std::filesystem;

namespace {

stdfs::path cache_path(const stdfs::path& state, const std::string& target) { return state / "lag" / (target + ".json"); }

// Calls fn(ts) for each record of the segment routed to the target. An open segment
// sealed while it is read is read again under its sealed name.
void each_ts(const wal::SegmentFile& f, const std::optional<std::set<std::string, std::less<>>>& tenants,
             const std::function<void(int64_t)>& fn) {
  auto read = [&](const stdfs::path& p, bool sealed) {
    wal::read_segment_views(p, sealed, [&](const RecordView& v, std::string_view) {
      if (!tenants || tenants->contains(v.tenant_id)) fn(v.ts);
    });
  };
  if (f.sealed) return read(f.path, true);
  try {
    read(f.path, false);
  } catch (const Error& e) {
    if (e.code() != Code::no_input) throw;
    read(f.path.parent_path() / wal::segment_file_name(f.sequence, true), true);
  }
}

}  // namespace

int64_t oldest_ts(const std::vector<wal::SegmentFile>& files, uint64_t after, uint64_t upto,
                  const std::optional<std::set<std::string, std::less<>>>& tenants) {
  int64_t best = 0;
  auto take = [&](int64_t ts) {
    if (!best || ts < best) best = ts;
  };
  for (const auto& f : files) {
    if (f.sequence <= after || f.sequence > upto) continue;
    if (f.sealed) {
      wal::SegmentStat st = wal::stat_segment(f);
      if (st.counts.records == 0 || (best && st.counts.first_ts >= best)) continue;
      if (!tenants) {
        take(st.counts.first_ts);
        continue;
      }
    }
    each_ts(f, tenants, take);
  }
  return best;
}

std::optional<transport::Applied> load_cached_applied(const stdfs::path& state, const std::string& target) {
  try {
    transport::Applied a;
    if (transport::parse_applied(fs::read_file(cache_path(state, target)), a)) return a;
  } catch (const Error&) {
  }
  return std::nullopt;
}

StreamLag measure_lag(const std::string& source, const Target& t, transport::Transport& tr, const stdfs::path& wal_dir,
                      const stdfs::path& state, int64_t now) {
  StreamLag l;
  l.source = source;
  l.target = t.region;
  std::vector<wal::SegmentFile> files = wal::list_segments(wal_dir);
  l.last = files.empty() ? 0 : files.back().sequence;
  l.shipped = load_ship_watermark(state, t.region).sequence;

  std::optional<transport::Applied> cached = load_cached_applied(state, t.region);
  try {
    l.applied = tr.head(source, t.region).applied;
    if (l.applied && (!cached || transport::applied_json(*cached) != transport::applied_json(*l.applied))) {
      fs::make_dirs(cache_path(state, t.region).parent_path());
      fs::AtomicFile f(cache_path(state, t.region));
      f.write(transport::applied_json(*l.applied) + "\n");
      f.commit(false);  // a cache: losing it to a crash costs nothing
    }
  } catch (const Error& e) {
    l.stale = true;
    l.error = e.what();
    l.applied = cached;
  }

  uint64_t applied = l.applied ? l.applied->sequence : 0;
  uint64_t from = std::max(applied, l.shipped);
  l.oldest_unshipped = oldest_ts(files, from, UINT64_MAX, t.tenants);
  l.oldest_unapplied = oldest_ts(files, applied, from, t.tenants);
  auto age = [now](int64_t ts) { return ts && ts < now ? static_cast<double>(now - ts) / 1e9 : 0.0; };
  l.ship_seconds = age(l.oldest_unshipped);
  l.apply_seconds = age(l.oldest_unapplied);
  l.seconds = std::max(l.ship_seconds, l.apply_seconds);
  return l;
}

std::string stream_lag_json(const StreamLag& l) {
  std::string out;
  json::Object j(out);
  j.str("source", l.source).str("target", l.target);
  j.real("lag_seconds", l.seconds).real("ship_seconds", l.ship_seconds).real("apply_seconds", l.apply_seconds);
  j.unum("wal_sequence", l.last).unum("shipped_sequence", l.shipped);
  j.unum("applied_sequence", l.applied ? l.applied->sequence : 0);
  if (l.applied) j.str("applied_time", timeutil::format_rfc3339(l.applied->time));
  if (l.oldest_unshipped) j.str("oldest_unshipped_ts", timeutil::format_rfc3339(l.oldest_unshipped));
  if (l.oldest_unapplied) j.str("oldest_unapplied_ts", timeutil::format_rfc3339(l.oldest_unapplied));
  j.boolean("stale", l.stale);
  if (l.stale) j.str("error", l.error);
  j.close();
  return out;
}

}  // namespace flk::crr
