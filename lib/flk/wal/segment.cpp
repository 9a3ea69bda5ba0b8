#include "flk/wal/segment.hpp"

#include <algorithm>
#include <bit>
#include <cstring>

#include <fmt/format.h>

#include "flk/util/error.hpp"

namespace flk::wal {

static_assert(std::endian::native == std::endian::little, "the WAL format assumes a little-endian host");

namespace {

template <typename T>
void store(char* p, T v) {
  std::memcpy(p, &v, sizeof v);
}

template <typename T>
T load(const char* p) {
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

}  // namespace

std::string encode_header(const Header& h) {
  std::string b(kHeaderSize, '\0');
  std::memcpy(b.data(), kMagic.data(), kMagic.size());
  store<uint32_t>(b.data() + 8, h.version);
  store<uint32_t>(b.data() + 12, h.flags);
  store<uint64_t>(b.data() + 16, h.sequence);
  store<int64_t>(b.data() + 24, h.created);
  std::memcpy(b.data() + 32, h.prev.data(), 32);
  std::memcpy(b.data() + 64, h.source.data(), 32);
  std::memcpy(b.data() + 96, h.region.data(), std::min<size_t>(h.region.size(), 63));
  store<uint64_t>(b.data() + kHeaderChecksumOffset, hash::xxh3_64(b.data(), kHeaderChecksumOffset));
  return b;
}

bool decode_header(std::string_view b, Header& h, std::string* why) {
  auto bad = [&](std::string w) {
    if (why) *why = std::move(w);
    return false;
  };
  if (b.size() < kHeaderSize) return bad(fmt::format("truncated header ({} of {} bytes)", b.size(), kHeaderSize));
  if (b.substr(0, kMagic.size()) != kMagic) return bad("not a WAL segment (bad magic)");
  if (load<uint64_t>(b.data() + kHeaderChecksumOffset) != hash::xxh3_64(b.data(), kHeaderChecksumOffset))
    return bad("header checksum mismatch");
  h.version = load<uint32_t>(b.data() + 8);
  if (h.version != kFormatVersion) return bad(fmt::format("unsupported format version {}", h.version));
  h.flags = load<uint32_t>(b.data() + 12);
  if (h.flags & ~kFlagReencoded) return bad(fmt::format("unknown header flags {:#x}", h.flags));
  h.sequence = load<uint64_t>(b.data() + 16);
  if (h.sequence == 0) return bad("sequence number 0");
  h.created = load<int64_t>(b.data() + 24);
  std::memcpy(h.prev.data(), b.data() + 32, 32);
  std::memcpy(h.source.data(), b.data() + 64, 32);
  std::string_view region(b.data() + 96, 64);
  region = region.substr(0, region.find('\0'));
  h.region.assign(region);
  if (!valid_region(h.region)) return bad("invalid region in header");
  for (size_t i = 96 + h.region.size(); i < kHeaderChecksumOffset; ++i)
    if (b[i] != '\0') return bad("nonzero reserved header bytes");
  return true;
}

namespace {

uint32_t check32(const void* p, size_t n) { return static_cast<uint32_t>(hash::xxh3_64(p, n)); }

// Fills the 16-byte head at out[at] for the payload that follows it in out.
void finish_frame(std::string& out, size_t at, FrameType type) {
  uint32_t len = static_cast<uint32_t>(out.size() - at - kFrameHeadSize);
  char* h = out.data() + at;
  store<uint32_t>(h, len);
  h[4] = static_cast<char>(type);
  h[5] = h[6] = h[7] = 0;
  store<uint32_t>(h + 8, check32(h, 8));
  store<uint32_t>(h + 12, check32(h + kFrameHeadSize, len));
}

}  // namespace

void append_record_frame(std::string& out, const Record& r) {
  size_t at = out.size();
  out.resize(at + kFrameHeadSize);
  encode_record(out, r);
  finish_frame(out, at, FrameType::record);
}

void append_encoded_frame(std::string& out, std::string_view encoding) {
  size_t at = out.size();
  out.resize(at + kFrameHeadSize);
  out.append(encoding);
  finish_frame(out, at, FrameType::record);
}

size_t record_frame_size(const Record& r) { return kFrameHeadSize + encoded_size(r); }

void append_seal_frame(std::string& out, const Seal& s) {
  size_t at = out.size();
  out.resize(at + kSealFrameSize);
  char* p = out.data() + at + kFrameHeadSize;
  store<uint64_t>(p, s.records);
  store<int64_t>(p + 8, s.first_ts);
  store<int64_t>(p + 16, s.last_ts);
  finish_frame(out, at, FrameType::seal);
}

bool decode_seal_frame(std::string_view f, Seal& out, std::string* why) {
  auto bad = [&](const char* w) {
    if (why) *why = w;
    return false;
  };
  if (f.size() != kSealFrameSize) return bad("no seal frame at the end");
  if (load<uint32_t>(f.data() + 8) != check32(f.data(), 8)) return bad("no seal frame at the end (head checksum mismatch)");
  if (load<uint32_t>(f.data()) != kSealPayloadSize || static_cast<FrameType>(f[4]) != FrameType::seal)
    return bad("no seal frame at the end");
  if (load<uint32_t>(f.data() + 12) != check32(f.data() + kFrameHeadSize, kSealPayloadSize))
    return bad("seal frame checksum mismatch");
  out.records = load<uint64_t>(f.data() + kFrameHeadSize);
  out.first_ts = load<int64_t>(f.data() + kFrameHeadSize + 8);
  out.last_ts = load<int64_t>(f.data() + kFrameHeadSize + 16);
  return true;
}

size_t MemorySource::read(void* buf, size_t n) {
  size_t k = std::min(n, data_.size() - pos_);
  std::memcpy(buf, data_.data() + pos_, k);
  pos_ += k;
  return k;
}

FileSource::FileSource(fs::Fd fd, size_t buffer) : fd_(std::move(fd)), buf_(buffer, '\0') {}

size_t FileSource::read(void* out, size_t n) {
  char* dst = static_cast<char*>(out);
  size_t got = 0;
  while (got < n) {
    if (pos_ == end_) {
      if (eof_) break;
      if (n - got >= buf_.size()) {  // large read: bypass the buffer
        size_t k = fd_.read_some(dst + got, n - got);
        if (k == 0) eof_ = true;
        got += k;
        continue;
      }
      end_ = fd_.read_some(buf_.data(), buf_.size());
      pos_ = 0;
      if (end_ == 0) {
        eof_ = true;
        break;
      }
    }
    size_t k = std::min(n - got, end_ - pos_);
    std::memcpy(dst + got, buf_.data() + pos_, k);
    pos_ += k;
    got += k;
  }
  return got;
}

SegmentReader::SegmentReader(Source& src, std::string name, hash::Sha256* hasher, bool materialize)
    : src_(src), name_(std::move(name)), hasher_(hasher), materialize_(materialize) {}

bool SegmentReader::rest_is_zero(std::string_view already_read) {
  for (char c : already_read)
    if (c != '\0') return false;
  char buf[65536];
  for (;;) {
    size_t n = src_.read(buf, sizeof buf);
    for (size_t i = 0; i < n; ++i)
      if (buf[i] != '\0') return false;
    if (n < sizeof buf) return true;
  }
}

SegmentReader::Status SegmentReader::fail_at(uint64_t offset, std::string why, bool tail) {
  damage_ = Damage{offset, std::move(why), tail};
  done_ = true;
  return Status::damage;
}

SegmentReader::Status SegmentReader::next() {
  if (done_) return damage_.why.empty() ? Status::end : Status::damage;
  if (!started_) {
    started_ = true;
    char hb[kHeaderSize];
    size_t n = src_.read(hb, sizeof hb);
    std::string why;
    if (!decode_header(std::string_view(hb, n), header_, &why)) return fail_at(0, why, false);
    header_ok_ = true;
    if (hasher_) hasher_->update(hb, n);
    good_end_ = kHeaderSize;
  }
  frame_offset_ = good_end_;
  payload_.resize(kFrameHeadSize);
  size_t n = src_.read(payload_.data(), kFrameHeadSize);
  if (n == 0) {
    done_ = true;
    return Status::end;
  }
  if (n < kFrameHeadSize)
    return fail_at(frame_offset_, fmt::format("truncated frame head ({} of {} bytes)", n, kFrameHeadSize), true);
  const char* h = payload_.data();
  if (load<uint32_t>(h + 8) != check32(h, 8))  // a half-written head followed by nothing but zeros is a tail
    return fail_at(frame_offset_, "frame head checksum mismatch", rest_is_zero({}));
  uint32_t len = load<uint32_t>(h);
  uint32_t sum = load<uint32_t>(h + 12);
  auto type = static_cast<FrameType>(static_cast<uint8_t>(h[4]));
  if (len > kMaxFramePayload || (type != FrameType::record && type != FrameType::seal) || h[5] || h[6] || h[7])
    return fail_at(frame_offset_, fmt::format("invalid frame head (length {}, type {})", len, int(uint8_t(h[4]))), false);
  payload_.resize(kFrameHeadSize + len);
  n = src_.read(payload_.data() + kFrameHeadSize, len);
  if (n < len) return fail_at(frame_offset_, fmt::format("truncated frame ({} of {} payload bytes)", n, len), true);
  if (check32(payload_.data() + kFrameHeadSize, len) != sum)
    return fail_at(frame_offset_, "frame checksum mismatch", rest_is_zero({}));
  if (sealed_) return fail_at(frame_offset_, "frame after the seal", false);
  std::string_view body(payload_.data() + kFrameHeadSize, len);
  if (type == FrameType::seal) {
    if (len != kSealPayloadSize) return fail_at(frame_offset_, fmt::format("seal frame of {} bytes", len), false);
    seal_.records = load<uint64_t>(body.data());
    seal_.first_ts = load<int64_t>(body.data() + 8);
    seal_.last_ts = load<int64_t>(body.data() + 16);
    if (seal_.records != counted_.records || seal_.first_ts != counted_.first_ts || seal_.last_ts != counted_.last_ts)
      return fail_at(frame_offset_,
                     fmt::format("seal says {} records, ts {}..{}; segment holds {} records, ts {}..{}", seal_.records,
                                 seal_.first_ts, seal_.last_ts, counted_.records, counted_.first_ts, counted_.last_ts),
                     false);
    sealed_ = true;
  } else {
    int64_t ts;
    if (frames_only_) {  // the ts at its fixed place (record.hpp), for the seal's bounds
      if (body.size() < 11) return fail_at(frame_offset_, fmt::format("record of {} bytes", body.size()), false);
      ts = load<int64_t>(body.data() + 3);
    } else {
      std::string why;
      if (!parse_record(body, view_, &why)) return fail_at(frame_offset_, "invalid record: " + why, false);
      if (materialize_) record_ = to_record(view_);
      ts = view_.ts;
    }
    if (counted_.records == 0) {
      counted_.first_ts = counted_.last_ts = ts;
    } else {
      counted_.first_ts = std::min(counted_.first_ts, ts);
      counted_.last_ts = std::max(counted_.last_ts, ts);
    }
    ++counted_.records;
  }
  if (hasher_) hasher_->update(payload_.data(), payload_.size());
  good_end_ = frame_offset_ + payload_.size();
  return type == FrameType::seal ? Status::seal : Status::record;
}

std::string segment_file_name(uint64_t seq, bool sealed) {
  return fmt::format("{:016}{}", seq, sealed ? kSealedSuffix : kOpenSuffix);
}

std::optional<uint64_t> parse_segment_file_name(std::string_view name, bool* sealed) {
  if (name.size() < 17) return std::nullopt;
  std::string_view digits = name.substr(0, 16), suffix = name.substr(16);
  bool is_sealed;
  if (suffix == kSealedSuffix) is_sealed = true;
  else if (suffix == kOpenSuffix) is_sealed = false;
  else return std::nullopt;
  uint64_t v = 0;
  for (char c : digits) {
    if (c < '0' || c > '9') return std::nullopt;
    v = v * 10 + static_cast<uint64_t>(c - '0');
  }
  if (v == 0) return std::nullopt;
  if (sealed) *sealed = is_sealed;
  return v;
}

std::string digest_sidecar_line(const hash::Digest& d, std::string_view file_name) {
  return fmt::format("{}  {}\n", hash::to_hex(d), file_name);
}

bool parse_digest_sidecar(std::string_view content, hash::Digest& out) {
  return content.size() >= 64 && hash::from_hex(content.substr(0, 64), out);
}

}  // namespace flk::wal
