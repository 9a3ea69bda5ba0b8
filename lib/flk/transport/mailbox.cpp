#include "flk/transport/mailbox.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <system_error>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "flk/core/record.hpp"
#include "flk/util/error.hpp"
#include "flk/util/json.hpp"
#include "flk/wal/dir.hpp"

namespace flk::transport {

namespace stdfs = std::filesystem;

std::string to_string(const Address& a) { return fmt::format("{}→{} #{}", a.source, a.target, a.sequence); }

std::string_view put_name(Put p) {
  switch (p) {
    case Put::stored: return "stored";
    case Put::duplicate: return "duplicate";
    case Put::conflict: return "conflict";
  }
  return "?";
}

stdfs::path stream_dir(const stdfs::path& mailbox, std::string_view source, std::string_view target) {
  return mailbox / std::string(source) / std::string(target);
}

stdfs::path segment_path(const stdfs::path& mailbox, const Address& a) {
  return stream_dir(mailbox, a.source, a.target) / wal::segment_file_name(a.sequence, true);
}

void check_address(const Address& a) {
  check_region(a.source, "source region");
  check_region(a.target, "target region");
  if (a.sequence == 0 || a.sequence > 9'999'999'999'999'999ull)
    fail(Code::usage, "invalid sequence number {}: must be 1 to 9999999999999999", a.sequence);
}

Incoming::Incoming(stdfs::path mailbox, Address addr) : mailbox_(std::move(mailbox)), addr_(std::move(addr)) {
  check_address(addr_);
  static std::atomic<uint64_t> counter{0};
  dir_ = stream_dir(mailbox_, addr_.source, addr_.target);
  // Bytes arrive beside the streams, in the mailbox's own file system (rename is atomic
  // there), and a stream directory is made only for a segment that is stored.
  stdfs::path incoming = mailbox_ / kIncomingDir;
  fs::make_dirs(incoming);
  temp_ = incoming / fmt::format("{}-{}-{}-{}-{}", addr_.source, addr_.target, addr_.sequence, ::getpid(), counter++);
  fd_ = fs::Fd::open(temp_.string(), O_WRONLY | O_CREAT | O_EXCL, 0644);
}

Incoming::~Incoming() {
  if (!done_) ::unlink(temp_.c_str());
}

void Incoming::write(std::string_view data) {
  // Bodies arrive in small pieces (cpp-httplib reads 4 KiB at a time): gathered into
  // writes of up to kWriteBuffer bytes rather than one write(2) per piece.
  if (pending_.size() + data.size() > kWriteBuffer) flush();
  if (data.size() >= kWriteBuffer) fd_.write_all(data);
  else pending_.append(data);
  size_ += data.size();
}

void Incoming::flush() {
  if (pending_.empty()) return;
  fd_.write_all(pending_);
  pending_.clear();
}

void Incoming::copy_from(const stdfs::path& file) {
  flush();
  fs::Fd in = fs::Fd::open(file.string(), O_RDONLY);
  for (;;) {
    ssize_t n = ::copy_file_range(in.get(), nullptr, fd_.get(), nullptr, 1u << 30, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EXDEV || errno == EINVAL || errno == ENOSYS || errno == EOPNOTSUPP)) break;
    if (n < 0) throw sys_error("cannot copy", file.string(), errno);
    if (n == 0) return;
    size_ += static_cast<uint64_t>(n);
  }
  std::string buf(1u << 20, '\0');  // copy_file_range refused: plain reads
  while (size_t n = in.read_some(buf.data(), buf.size())) write(std::string_view(buf.data(), n));
}

Put Incoming::commit(const hash::Digest& declared) {
  flush();
  const std::string name = "segment " + to_string(addr_);
  // Read back what was received: a whole sealed segment of this source and sequence.
  hash::Sha256 sha;
  try {
    wal::FileSource src(fs::Fd::open(temp_.string(), O_RDONLY));
    wal::SegmentReader r(src, name, &sha, false);
    r.set_frames_only(true);  // the records are the sender's own bytes (the digest says so); flk-read checks them
    bool sealed = false;
    for (;;) {
      auto st = r.next();
      if (st == wal::SegmentReader::Status::record) continue;
      if (st == wal::SegmentReader::Status::seal) {
        sealed = true;
        continue;
      }
      if (st == wal::SegmentReader::Status::damage)
        fail(Code::data, "{}: offset {}: {}", name, r.damage().offset, r.damage().why);
      break;
    }
    if (!sealed) fail(Code::data, "{}: offset {}: not a sealed segment (no seal frame)", name, r.good_end());
    header_ = r.header();
    if (header_.region != addr_.source)
      fail(Code::data, "{}: its header names region '{}', not the source '{}'", name, header_.region, addr_.source);
    if (header_.sequence != addr_.sequence)
      fail(Code::data, "{}: its header names sequence {}", name, header_.sequence);
  } catch (const Error& e) {
    // Bytes that are not the ones the sender declared were damaged on the way, whatever
    // the damage looks like (a frame checksum, a torn seal): the sender should send them
    // again (DigestMismatch), not give the segment up as invalid.
    if (e.code() != Code::data) throw;
    hash::Digest whole = wal::file_digest(temp_);
    if (whole != declared)
      throw DigestMismatch(Code::data, fmt::format("{}: SHA-256 {} does not match the declared {} ({})", name,
                                                   hash::to_hex(whole), hash::to_hex(declared), e.what()));
    throw;
  }
  hash::Digest got = sha.finish();
  if (got != declared)
    throw DigestMismatch(Code::data, fmt::format("{}: SHA-256 {} does not match the declared {}", name,
                                                 hash::to_hex(got), hash::to_hex(declared)));
  fd_.sync_data();
  fd_.close();

  stdfs::path final_path = dir_ / wal::segment_file_name(addr_.sequence, true);
  fs::make_dirs(dir_);
  fs::FileLock lock(dir_ / ".lock", true);
  if (::access(final_path.c_str(), F_OK) == 0) {
    auto have = wal::read_digest_sidecar(final_path);
    hash::Digest stored = have ? *have : wal::file_digest(final_path);
    return stored == got ? Put::duplicate : Put::conflict;
  }
  // The sidecar first, then the segment, and one directory sync for both renames: two
  // syncs a segment (its data, the directory). The sidecar's own bytes are not synced —
  // it caches a digest anyone can recompute, and every reader of a mailbox does when a
  // power failure left it empty or missing; the segment's bytes and both names are
  // durable before the acknowledgement.
  {
    stdfs::path side = wal::digest_sidecar_path(final_path);
    std::string tmp = side.string() + ".tmp";  // one writer: we hold the stream's lock
    fs::Fd f = fs::Fd::open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    f.write_all(wal::digest_sidecar_line(got, final_path.filename().string()));
    f.close();
    if (::rename(tmp.c_str(), side.c_str()) != 0) throw sys_error("cannot rename into", side.string(), errno);
  }
  if (::rename(temp_.c_str(), final_path.c_str()) != 0) throw sys_error("cannot rename into", final_path.string(), errno);
  done_ = true;
  fs::sync_dir(dir_);  // both renames durable: only now is the segment acknowledged
  return Put::stored;
}

size_t remove_stale_incoming(const stdfs::path& mailbox, timeutil::Nanos older_than) {
  size_t n = 0;
  std::error_code ec;
  auto now = stdfs::file_time_type::clock::now();
  for (const auto& e : stdfs::directory_iterator(mailbox / kIncomingDir, ec)) {
    auto t = e.last_write_time(ec);
    if (ec || now - t < std::chrono::nanoseconds(older_than)) continue;
    if (stdfs::remove(e.path(), ec)) ++n;
  }
  return n;
}

std::vector<Entry> list_stream(const stdfs::path& mailbox, std::string_view source, std::string_view target,
                               uint64_t after, size_t limit) {
  std::vector<Entry> out;
  stdfs::path dir = stream_dir(mailbox, source, target);
  std::error_code ec;
  if (!stdfs::is_directory(dir, ec)) return out;
  for (const wal::SegmentFile& f : wal::list_segments(dir)) {
    if (!f.sealed || f.sequence <= after) continue;
    if (out.size() >= limit) break;
    Entry e;
    e.sequence = f.sequence;
    e.bytes = stdfs::file_size(f.path, ec);
    if (ec) continue;  // removed under us
    auto d = wal::read_digest_sidecar(f.path);
    e.sha256 = d ? *d : wal::file_digest(f.path);
    out.push_back(e);
  }
  return out;
}

std::vector<std::pair<std::string, std::string>> list_streams(const stdfs::path& mailbox) {
  std::vector<std::pair<std::string, std::string>> out;
  std::error_code ec;
  stdfs::directory_iterator it(mailbox, ec);
  if (ec) {
    if (ec == std::errc::no_such_file_or_directory) return out;
    throw sys_error("cannot read mailbox", mailbox.string(), ec.value());
  }
  for (const auto& s : it) {
    std::string source = s.path().filename().string();
    if (!valid_region(source) || !s.is_directory(ec)) continue;
    for (const auto& t : stdfs::directory_iterator(s.path(), ec)) {
      std::string target = t.path().filename().string();
      if (valid_region(target) && t.is_directory(ec)) out.emplace_back(source, target);
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

Head stream_head(const stdfs::path& mailbox, std::string_view source, std::string_view target) {
  Head h;
  stdfs::path dir = stream_dir(mailbox, source, target);
  std::error_code ec;
  if (!stdfs::is_directory(dir, ec)) return h;
  auto files = wal::list_segments(dir);
  for (auto it = files.rbegin(); it != files.rend(); ++it) {
    if (!it->sealed) continue;
    wal::SegmentStat st = wal::stat_segment(*it);
    h.sequence = it->sequence;
    h.sha256 = st.sha256 ? *st.sha256 : wal::file_digest(it->path);
    h.last_ts = st.counts.last_ts;
    break;
  }
  h.applied = load_applied(mailbox, source, target);
  return h;
}

namespace {
stdfs::path applied_path(const stdfs::path& mailbox, std::string_view source, std::string_view target) {
  return stream_dir(mailbox, source, target) / "applied.json";
}
}  // namespace

std::string applied_json(const Applied& a) {
  std::string out;
  json::Object j(out);
  j.unum("sequence", a.sequence).str("sha256", hash::to_hex(a.sha256)).str("time", timeutil::format_rfc3339(a.time));
  j.close();
  return out;
}

bool parse_applied(std::string_view text, Applied& out) {
  try {
    auto j = nlohmann::json::parse(text);
    out.sequence = j.at("sequence").get<uint64_t>();
    if (!hash::from_hex(j.at("sha256").get<std::string>(), out.sha256)) return false;
    out.time = timeutil::parse_rfc3339(j.at("time").get<std::string>());
    return true;
  } catch (const std::exception&) {
    return false;
  }
}

void save_applied(const stdfs::path& mailbox, std::string_view source, std::string_view target, const Applied& a) {
  check_address({std::string(source), std::string(target), 1});
  stdfs::path p = applied_path(mailbox, source, target);
  fs::make_dirs(p.parent_path());
  fs::AtomicFile f(p);
  f.write(applied_json(a) + "\n");
  f.commit(false);
}

std::optional<Applied> load_applied(const stdfs::path& mailbox, std::string_view source, std::string_view target) {
  std::string text;
  try {
    text = fs::read_file(applied_path(mailbox, source, target));
  } catch (const Error&) {
    return std::nullopt;
  }
  Applied a;
  if (!parse_applied(text, a)) return std::nullopt;
  return a;
}

}  // namespace flk::transport
