#include "flk/wal/dir.hpp"

#include <fcntl.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <system_error>

#include <fmt/format.h>

#include "flk/util/error.hpp"
#include "flk/util/fs.hpp"

namespace flk::wal {

namespace stdfs = std::filesystem;

std::vector<SegmentFile> list_segments(const stdfs::path& dir) {
  std::vector<SegmentFile> out;
  std::error_code ec;
  stdfs::directory_iterator it(dir, ec);
  if (ec) throw sys_error("cannot read WAL directory", dir.string(), ec.value());
  for (const auto& e : it) {
    bool sealed = false;
    std::string name = e.path().filename().string();
    if (auto seq = parse_segment_file_name(name, &sealed)) out.push_back({*seq, sealed, e.path()});
  }
  std::sort(out.begin(), out.end(), [](const SegmentFile& a, const SegmentFile& b) {
    return a.sequence != b.sequence ? a.sequence < b.sequence : a.sealed > b.sealed;
  });
  return out;
}

stdfs::path digest_sidecar_path(const stdfs::path& segment) { return segment.string() + ".sha256"; }

hash::Digest file_digest(const stdfs::path& path) {
  fs::Fd fd = fs::Fd::open(path.string(), O_RDONLY);
  hash::Sha256 h;
  std::string buf(1u << 20, '\0');
  for (;;) {
    size_t n = fd.read_some(buf.data(), buf.size());
    if (n == 0) break;
    h.update(buf.data(), n);
  }
  return h.finish();
}

void write_digest_sidecar(const stdfs::path& segment, const hash::Digest& d) {
  fs::write_file_atomic(digest_sidecar_path(segment), digest_sidecar_line(d, segment.filename().string()));
}

std::optional<hash::Digest> read_digest_sidecar(const stdfs::path& segment) {
  try {
    hash::Digest d;
    if (parse_digest_sidecar(fs::read_file(digest_sidecar_path(segment)), d)) return d;
  } catch (const Error& e) {
    if (e.code() != Code::no_input) throw;
  }
  return std::nullopt;
}

// Opens a listed segment for reading. A writer may seal an open segment (rename
// N.open → N.wal) between the listing and the open: then the sealed file is opened
// and f says so. An open segment renamed while it is being read is still read
// through its descriptor; the seal frame at its end then says it was sealed.
static fs::Fd open_listed(SegmentFile& f) {
  try {
    return fs::Fd::open(f.path.string(), O_RDONLY);
  } catch (const Error& e) {
    if (f.sealed || e.code() != Code::no_input) throw;
    stdfs::path sealed = f.path.parent_path() / segment_file_name(f.sequence, true);
    fs::Fd fd = fs::Fd::open(sealed.string(), O_RDONLY);
    f.sealed = true;
    f.path = sealed;
    return fd;
  }
}

[[noreturn]] static void damaged(const stdfs::path& p, uint64_t offset, std::string_view why) {
  fail(Code::data, "segment '{}': offset {}: {}", p.string(), offset, why);
}

SegmentStat stat_segment(const SegmentFile& listed) {
  SegmentStat st;
  SegmentFile f = listed;
  fs::Fd fd = open_listed(f);
  st.file = f;
  st.bytes = fd.size();
  if (f.sealed) {
    std::string hb(kHeaderSize, '\0');
    hb.resize(fd.pread_some(hb.data(), kHeaderSize, 0));
    std::string why;
    if (!decode_header(hb, st.header, &why)) damaged(f.path, 0, why);
    if (st.bytes < kHeaderSize + kSealFrameSize) damaged(f.path, kHeaderSize, "sealed segment without a seal frame");
    std::string sb(kSealFrameSize, '\0');
    uint64_t at = st.bytes - kSealFrameSize;
    fd.pread_some(sb.data(), kSealFrameSize, at);
    if (!decode_seal_frame(sb, st.counts, &why)) damaged(f.path, at, why);
    st.sha256 = read_digest_sidecar(f.path);
    if (!st.sha256) st.sha256 = file_digest(f.path);
    return st;
  }
  FileSource src(std::move(fd));
  hash::Sha256 h;
  SegmentReader r(src, f.path.string(), &h);
  for (;;) {
    auto s = r.next();
    if (s == SegmentReader::Status::record) continue;
    if (s == SegmentReader::Status::seal) continue;  // being sealed: the rename follows
    if (s == SegmentReader::Status::damage && !r.damage().tail) damaged(f.path, r.damage().offset, r.damage().why);
    break;
  }
  if (!r.header_ok()) damaged(f.path, 0, r.damage().why);
  st.header = r.header();
  st.counts = r.counted();
  st.sha256 = h.finish();
  return st;
}

std::optional<std::string> wal_region(const stdfs::path& dir) {
  std::error_code ec;
  if (!stdfs::is_directory(dir, ec)) return std::nullopt;
  auto files = list_segments(dir);
  if (files.empty()) return std::nullopt;
  return stat_segment(files.back()).header.region;
}

static uint64_t read_records(const stdfs::path& path, bool sealed, bool materialize,
                             const std::function<void(const SegmentReader&)>& fn,
                             const std::function<void(const Header&)>& on_header, hash::Sha256* hasher);

uint64_t read_segment(const stdfs::path& path, bool sealed, const std::function<void(const Record&)>& fn,
                      const std::function<void(const Header&)>& on_header, hash::Sha256* hasher) {
  return read_records(path, sealed, true, [&](const SegmentReader& r) { fn(r.record()); }, on_header, hasher);
}

uint64_t read_segment_views(const stdfs::path& path, bool sealed, const RecordViewFn& fn,
                            const std::function<void(const Header&)>& on_header, hash::Sha256* hasher) {
  return read_records(
      path, sealed, false, [&](const SegmentReader& r) { fn(r.view(), r.record_bytes()); }, on_header, hasher);
}

static uint64_t read_records(const stdfs::path& path, bool sealed, bool materialize,
                             const std::function<void(const SegmentReader&)>& fn,
                             const std::function<void(const Header&)>& on_header, hash::Sha256* hasher) {
  SegmentFile f{0, sealed, path};
  if (!sealed) {
    bool is_sealed = false;
    f.sequence = parse_segment_file_name(path.filename().string(), &is_sealed).value_or(0);
  }
  FileSource src(f.sequence ? open_listed(f) : fs::Fd::open(path.string(), O_RDONLY));
  SegmentReader r(src, f.path.string(), hasher, materialize);
  uint64_t n = 0;
  bool seal_seen = false;
  for (;;) {
    auto status = r.next();
    if (n == 0 && !seal_seen && r.header_ok() && on_header) on_header(r.header());
    switch (status) {
      case SegmentReader::Status::record:
        fn(r);
        ++n;
        continue;
      case SegmentReader::Status::seal:
        seal_seen = true;
        continue;
      case SegmentReader::Status::end:
        if (f.sealed && !seal_seen) damaged(f.path, r.good_end(), "sealed segment has no seal frame");
        return n;
      case SegmentReader::Status::damage:
        if (!f.sealed && r.damage().tail) return n;
        damaged(f.path, r.damage().offset, r.damage().why);
    }
  }
}

bool verify_wal(const stdfs::path& dir, const std::function<void(const VerifyResult&)>& fn) {
  auto files = list_segments(dir);
  bool all_ok = true;
  std::optional<hash::Digest> prev_digest;  // of the segment just before, when known
  uint64_t prev_seq = 0;
  std::string region;
  for (size_t i = 0; i < files.size(); ++i) {
    SegmentFile& f = files[i];
    VerifyResult v;
    Header header;
    auto problem = [&](std::string p) {
      if (v.ok) v.problem = std::move(p);
      else v.problem += "; " + p;
      v.ok = false;
    };
    try {
      fs::Fd fd = open_listed(f);
      v.file = f;
      v.bytes = fd.size();
      FileSource src(std::move(fd));
      hash::Sha256 h;
      SegmentReader r(src, f.path.string(), &h);
      bool sealed_seen = false;
      for (;;) {
        auto s = r.next();
        if (s == SegmentReader::Status::record) continue;
        if (s == SegmentReader::Status::seal) {
          sealed_seen = true;
          continue;
        }
        if (s == SegmentReader::Status::damage) {
          if (!f.sealed && r.damage().tail && i + 1 == files.size())
            v.note = fmt::format("torn tail at offset {} ({}): the writer cuts it when it next opens the WAL",
                                 r.damage().offset, r.damage().why);
          else
            problem(fmt::format("offset {}: {}", r.damage().offset, r.damage().why));
        }
        break;
      }
      v.records = r.counted().records;
      if (r.header_ok()) {
        const Header& hd = r.header();
        header = hd;
        if (hd.sequence != f.sequence)
          problem(fmt::format("offset 0: header says sequence {}, file name says {}", hd.sequence, f.sequence));
        if (region.empty()) region = hd.region;
        else if (hd.region != region)
          problem(fmt::format("offset 0: region '{}' differs from the WAL's region '{}'", hd.region, region));
        if (prev_seq != 0 && f.sequence != prev_seq + 1)
          problem(fmt::format("sequence gap: segment {} follows {}", f.sequence, prev_seq));
        else if (prev_seq != 0 && prev_digest && hd.prev != *prev_digest)
          problem(fmt::format("offset 32: broken chain: previous-segment digest {} does not match segment {}'s {}",
                              hash::to_hex(hd.prev), prev_seq, hash::to_hex(*prev_digest)));
      }
      if (f.sealed && v.ok && !sealed_seen) problem(fmt::format("offset {}: sealed segment has no seal frame", r.good_end()));
      if (!f.sealed && sealed_seen && v.note.empty())
        v.note = "sealed but not yet renamed: a writer is sealing it, or finishes it when it next opens the WAL";
      if (!f.sealed && i + 1 != files.size()) problem("an open segment that is not the last");
      if (i > 0 && files[i - 1].sequence == f.sequence) problem("both sealed and open files exist for this sequence");
      v.sha256 = h.finish();
      if (f.sealed) {
        auto side = read_digest_sidecar(f.path);
        if (!side) {
          if (v.note.empty()) v.note = "digest sidecar missing: the writer recreates it when it next opens the WAL";
        } else if (v.ok && *side != *v.sha256) {
          problem(fmt::format("digest {} does not match sidecar '{}' ({})", hash::to_hex(*v.sha256),
                              digest_sidecar_path(f.path).string(), hash::to_hex(*side)));
        }
      }
    } catch (const Error& e) {
      v.file = f;
      problem(e.what());
    }
    prev_digest = v.sha256 && v.ok ? std::optional(chain_digest(header, *v.sha256)) : std::nullopt;  // a damaged segment's digest proves nothing about the next link
    prev_seq = f.sequence;
    all_ok = all_ok && v.ok;
    fn(v);
  }
  return all_ok;
}

}  // namespace flk::wal
