#include "flk/crr/watermark.hpp"

#include <nlohmann/json.hpp>

#include "flk/util/error.hpp"
#include "flk/util/fs.hpp"
#include "flk/util/json.hpp"
#include "flk/util/time.hpp"

namespace flk::crr {

namespace stdfs = std::filesystem;

stdfs::path ship_watermark_path(const stdfs::path& state, const std::string& target) {
  return state / "ship" / (target + ".json");
}

ShipWatermark load_ship_watermark(const stdfs::path& state, const std::string& target) {
  ShipWatermark w;
  w.target = target;
  stdfs::path p = ship_watermark_path(state, target);
  std::string text;
  try {
    text = fs::read_file(p);
  } catch (const Error& e) {
    if (e.code() == Code::no_input) return w;
    throw;
  }
  try {
    auto j = nlohmann::json::parse(text);
    if (j.at("target").get<std::string>() != target) throw std::invalid_argument("it names target " + j["target"].dump());
    w.sequence = j.at("sequence").get<uint64_t>();
    auto digest = [&](const char* key, hash::Digest& out) {
      if (!hash::from_hex(j.at(key).get<std::string>(), out)) throw std::invalid_argument(std::string("bad ") + key);
    };
    digest("sha256", w.sha256);
    digest("source_sha256", w.source_sha256);
    w.time = timeutil::parse_rfc3339(j.at("time").get<std::string>());
    if (j.contains("first_ts")) w.first_ts = timeutil::parse_rfc3339(j["first_ts"].get<std::string>());
    if (j.contains("last_ts")) w.last_ts = timeutil::parse_rfc3339(j["last_ts"].get<std::string>());
    w.segments_total = j.value("segments_total", uint64_t{0});
    w.bytes_total = j.value("bytes_total", uint64_t{0});
    w.failures_total = j.value("failures_total", uint64_t{0});
  } catch (const Error& e) {
    fail(Code::data, "malformed ship watermark '{}': {}", p.string(), e.what());
  } catch (const std::exception& e) {
    fail(Code::data, "malformed ship watermark '{}': {}", p.string(), e.what());
  }
  return w;
}

std::string ship_watermark_json(const ShipWatermark& w) {
  std::string out;
  json::Object o(out);
  o.str("target", w.target).unum("sequence", w.sequence).str("sha256", hash::to_hex(w.sha256));
  o.str("source_sha256", hash::to_hex(w.source_sha256)).str("time", timeutil::format_rfc3339(w.time));
  if (w.first_ts || w.last_ts)
    o.str("first_ts", timeutil::format_rfc3339(w.first_ts)).str("last_ts", timeutil::format_rfc3339(w.last_ts));
  o.unum("segments_total", w.segments_total).unum("bytes_total", w.bytes_total);
  o.unum("failures_total", w.failures_total);
  o.close();
  return out;
}

void save_ship_watermark(const stdfs::path& state, const ShipWatermark& w, bool sync_dir) {
  stdfs::path p = ship_watermark_path(state, w.target);
  fs::make_dirs(p.parent_path());
  fs::AtomicFile f(p);
  f.write(ship_watermark_json(w) + "\n");
  f.commit(sync_dir);
}

void sync_ship_watermarks(const stdfs::path& state) { fs::sync_dir(state / "ship"); }

}  // namespace flk::crr
