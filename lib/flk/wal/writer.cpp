#include "flk/wal/writer.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <utility>

#include <fmt/format.h>

#include "flk/config/config.hpp"
#include "flk/util/error.hpp"
#include "flk/wal/dir.hpp"

namespace flk::wal {

namespace stdfs = std::filesystem;

// One append() call waiting in the writer queue.
struct Writer::Pending {
  std::span<const Record> records;
  std::vector<Position> positions;
  std::optional<Error> error;
  bool done = false;
  std::condition_variable cv;
};


Writer::Writer(WriterOptions options) : opts_(std::move(options)) {}

Writer::~Writer() = default;

std::unique_ptr<Writer> Writer::open(WriterOptions options) {
  check_region(options.region);
  if (options.segment_bytes < config::kMinSegmentBytes)
    fail(Code::usage, "invalid segment size {}: must be at least {} bytes", options.segment_bytes,
         config::kMinSegmentBytes);
  if (options.segment_age <= 0) fail(Code::usage, "invalid segment age: must be positive");
  std::unique_ptr<Writer> w(new Writer(std::move(options)));
  w->recover();
  return w;
}

void Writer::recover() {
  const stdfs::path& dir = opts_.dir;
  auto log = [&](const std::string& m) {
    if (opts_.log) opts_.log(m);
  };
  fs::make_dirs(dir);
  lock_.emplace(dir / std::string(kLockName), opts_.wait_for_lock);

  std::error_code ec;
  for (const auto& e : stdfs::directory_iterator(dir, ec)) {
    std::string name = e.path().filename().string();
    if (name.find(".tmp.") != std::string::npos && parse_segment_file_name(name.substr(0, 16) + ".wal", nullptr)) {
      stdfs::remove(e.path(), ec);
    }
  }

  auto files = list_segments(dir);
  for (size_t i = 0; i < files.size(); ++i) {
    const SegmentFile& f = files[i];
    if (i > 0 && files[i - 1].sequence == f.sequence)
      fail(Code::data, "WAL '{}': segment {} exists both sealed and open", dir.string(), f.sequence);
    if (!f.sealed && i + 1 != files.size())
      fail(Code::data, "WAL '{}': open segment '{}' is not the last", dir.string(), f.path.string());
    if (i > 0 && f.sequence != files[i - 1].sequence + 1)
      fail(Code::data, "WAL '{}': segment {} is missing (found {} and {})", dir.string(), files[i - 1].sequence + 1,
           files[i - 1].sequence, f.sequence);
  }

  auto check_header = [&](const Header& h, const SegmentFile& f) {
    if (h.sequence != f.sequence)
      fail(Code::data, "segment '{}': offset 0: header says sequence {}", f.path.string(), h.sequence);
    if (h.region != opts_.region)
      fail(Code::usage, "WAL '{}' belongs to region '{}', not '{}'", dir.string(), h.region, opts_.region);
  };

  // Sealed segments without a digest sidecar (a crash after the rename and before
  // the sidecar's directory sync, or a deleted file): recompute and rewrite it.
  for (const SegmentFile& f : files) {
    if (!f.sealed || ::access(digest_sidecar_path(f.path).c_str(), F_OK) == 0) continue;
    log(fmt::format("recovering: segment '{}': rewriting missing digest sidecar", f.path.string()));
    write_digest_sidecar(f.path, file_digest(f.path));
  }
  // The last sealed segment: its digest links the next segment into the chain.
  for (auto it = files.rbegin(); it != files.rend(); ++it) {
    if (!it->sealed) continue;
    SegmentStat st = stat_segment(*it);
    check_header(st.header, *it);
    last_sealed_ = it->sequence;
    last_sealed_digest_ = *st.sha256;
    break;
  }

  if (files.empty() || files.back().sealed) return;
  const SegmentFile& f = files.back();
  fs::Fd fd = fs::Fd::open(f.path.string(), O_RDWR);
  hash::Sha256 sha;
  bool sealed = false;
  SegmentReader::Status status;
  Damage damage;
  Header header;
  Seal counts;
  uint64_t good_end;
  {
    FileSource src(fs::Fd::open(f.path.string(), O_RDONLY));
    SegmentReader r(src, f.path.string(), &sha);
    while ((status = r.next()) == SegmentReader::Status::record || status == SegmentReader::Status::seal)
      if (status == SegmentReader::Status::seal) sealed = true;
    if (!r.header_ok()) fail(Code::data, "segment '{}': offset 0: {}", f.path.string(), r.damage().why);
    damage = r.damage();
    header = r.header();
    counts = r.counted();
    good_end = r.good_end();
  }
  check_header(header, f);
  if (last_sealed_ != 0 && last_sealed_ + 1 == f.sequence && header.prev != last_sealed_digest_)
    fail(Code::data, "segment '{}': offset 32: broken chain: previous-segment digest does not match segment {}",
         f.path.string(), last_sealed_);
  if (status == SegmentReader::Status::damage) {
    if (!damage.tail) fail(Code::data, "segment '{}': offset {}: {}", f.path.string(), damage.offset, damage.why);
    uint64_t size = fd.size();
    log(fmt::format("recovering: segment '{}': cut torn tail at offset {} ({} bytes dropped): {}", f.path.string(),
                    good_end, size - good_end, damage.why));
    fd.truncate(good_end);
    fd.sync();
  }
  if (sealed) {
    // The seal frame is durable but the rename was not: finish sealing.
    hash::Digest d = sha.finish();
    stdfs::path sealed_path = dir / segment_file_name(f.sequence, true);
    write_digest_sidecar(sealed_path, d);
    if (::rename(f.path.c_str(), sealed_path.c_str()) != 0)
      throw sys_error("cannot rename into", sealed_path.string(), errno, Code::cant_create);
    fs::sync_dir(dir);
    log(fmt::format("recovering: segment '{}': finished sealing", sealed_path.string()));
    last_sealed_ = f.sequence;
    last_sealed_digest_ = d;
    return;
  }
  fd.close();
  Open o;
  o.sequence = f.sequence;
  o.path = f.path;
  o.fd = fs::Fd::open(f.path.string(), O_WRONLY | O_APPEND);
  o.size = good_end;
  o.counts = counts;
  o.sha = sha;
  // Records that waited through a crash are already late: due at once.
  o.due = timeutil::monotonic_now();
  open_.emplace(std::move(o));
}

void Writer::check_poisoned() const {
  if (poisoned_) throw *poisoned_;
}

void Writer::poison(const Error& e) {
  poisoned_.emplace(Code::io, fmt::format("{} (the WAL writer is stopped: the state of the segment is "
                                          "indeterminate after a failed write or sync; reopen to recover)",
                                          e.what()));
}

void Writer::create_segment() {
  uint64_t seq = last_sealed_ + 1;
  Header h;
  h.sequence = seq;
  h.created = timeutil::now();
  h.prev = last_sealed_digest_;
  h.region = opts_.region;
  std::string bytes = encode_header(h);
  stdfs::path path = opts_.dir / segment_file_name(seq, false);
  fs::write_file_atomic(path, bytes);
  Open o;
  o.sequence = seq;
  o.path = path;
  o.fd = fs::Fd::open(path.string(), O_WRONLY | O_APPEND);
  o.size = bytes.size();
  o.sha.update(bytes);
  open_.emplace(std::move(o));
}

void Writer::write_batch(std::string& buf) {
  if (buf.empty()) return;
  open_->fd.write_all(buf);
  open_->fd.sync_data();
  open_->sha.update(buf);
  open_->size += buf.size();
  buf.clear();
}

SealedSegment Writer::seal_locked() {
  Open& o = *open_;
  std::string frame;
  append_seal_frame(frame, o.counts);
  o.fd.write_all(frame);
  o.fd.sync();
  o.sha.update(frame);
  o.size += frame.size();
  SealedSegment s;
  s.sequence = o.sequence;
  s.counts = o.counts;
  s.bytes = o.size;
  s.sha256 = o.sha.finish();
  s.path = opts_.dir / segment_file_name(o.sequence, true);
  write_digest_sidecar(s.path, s.sha256);
  if (::rename(o.path.c_str(), s.path.c_str()) != 0)
    throw sys_error("cannot rename into", s.path.string(), errno, Code::cant_create);
  fs::sync_dir(opts_.dir);
  last_sealed_ = o.sequence;
  last_sealed_digest_ = s.sha256;
  open_.reset();
  return s;
}

std::vector<Position> Writer::append(std::span<const Record> records) {
  for (const Record& r : records) {
    if (r.region != opts_.region)
      fail(Code::data, "record '{}': region '{}' is not this WAL's region '{}'", r.pcs_id, r.region, opts_.region);
    if (encoded_size(r) > kMaxFramePayload)
      fail(Code::data, "record '{}': {} bytes encoded, more than the limit of {}", r.pcs_id, encoded_size(r),
           kMaxFramePayload);
  }
  Pending me;
  me.records = records;
  std::unique_lock q(mu_);
  queue_.push_back(&me);
  while (!me.done && queue_.front() != &me) me.cv.wait(q);
  if (me.done) {
    if (me.error) throw *me.error;
    return std::move(me.positions);
  }

  // Leader: write the whole queue (up to a few MiB) with one sync per segment.
  std::vector<Pending*> group;
  size_t bytes = 0;
  for (Pending* p : queue_) {
    if (!group.empty() && bytes > (4u << 20)) break;
    group.push_back(p);
    for (const Record& r : p->records) bytes += record_frame_size(r);
  }
  q.unlock();

  std::optional<Error> error;
  {
    std::lock_guard io(io_mu_);
    try {
      check_poisoned();
      buf_.clear();
      for (Pending* p : group) {
        p->positions.reserve(p->records.size());
        for (const Record& r : p->records) {
          size_t need = record_frame_size(r);
          if (open_ && open_->counts.records > 0 &&
              open_->size + buf_.size() + need + kSealFrameSize > opts_.segment_bytes) {
            write_batch(buf_);
            rotated_.push_back(seal_locked());
          }
          if (!open_) create_segment();
          p->positions.push_back({open_->sequence, open_->size + buf_.size()});
          append_record_frame(buf_, r);
          Seal& c = open_->counts;
          if (c.records == 0) {
            c.first_ts = c.last_ts = r.ts;
            open_->due = timeutil::monotonic_now() + opts_.segment_age;
          } else {
            c.first_ts = std::min(c.first_ts, r.ts);
            c.last_ts = std::max(c.last_ts, r.ts);
          }
          ++c.records;
        }
      }
      write_batch(buf_);
    } catch (const Error& e) {
      if (!poisoned_) poison(e);
      error = e;
    }
  }

  q.lock();
  for (Pending* p : group) {
    queue_.pop_front();
    if (p == &me) continue;
    p->error = error;
    p->done = true;
    p->cv.notify_one();
  }
  if (!queue_.empty()) queue_.front()->cv.notify_one();
  q.unlock();
  if (error) throw *error;
  return std::move(me.positions);
}

std::optional<SealedSegment> Writer::seal() {
  std::lock_guard io(io_mu_);
  check_poisoned();
  if (!open_ || open_->counts.records == 0) return std::nullopt;
  try {
    return seal_locked();
  } catch (const Error& e) {
    poison(e);
    throw;
  }
}

std::optional<SealedSegment> Writer::seal_if_due() {
  {
    std::lock_guard io(io_mu_);
    if (!open_ || open_->counts.records == 0 || timeutil::monotonic_now() < open_->due) return std::nullopt;
  }
  return seal();
}

std::optional<timeutil::Nanos> Writer::due_at() const {
  std::lock_guard io(io_mu_);
  if (!open_ || open_->counts.records == 0) return std::nullopt;
  return open_->due;
}

std::vector<SealedSegment> Writer::take_sealed() {
  std::lock_guard io(io_mu_);
  return std::exchange(rotated_, {});
}

}  // namespace flk::wal
