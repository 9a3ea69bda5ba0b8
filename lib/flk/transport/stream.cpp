#include "flk/transport/stream.hpp"

#include <fcntl.h>
#include <sys/sendfile.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>

#include <fmt/format.h>

#include "flk/core/record.hpp"
#include "flk/util/error.hpp"
#include "flk/util/fs.hpp"

namespace flk::transport {

namespace {

constexpr size_t kMaxHeaderLine = 256;
constexpr size_t kChunk = 1u << 20;

bool parse_u64(std::string_view s, uint64_t& out) {
  if (s.empty() || s.size() > 20) return false;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && p == s.data() + s.size();
}

}  // namespace

std::string stream_header_line(const StreamSegment& s) {
  return fmt::format("{} {} {} {} {} {}\n", kStreamMagic, s.address.source, s.address.target, s.address.sequence,
                     s.bytes, hash::to_hex(s.sha256));
}

bool parse_stream_header(std::string_view line, StreamSegment& out, std::string* why) {
  std::string_view f[6];
  size_t n = 0;
  while (!line.empty() && n < 6) {
    size_t sp = line.find(' ');
    f[n++] = line.substr(0, sp);
    line = sp == std::string_view::npos ? std::string_view{} : line.substr(sp + 1);
  }
  if (n != 6 || !line.empty()) return *why = "expected 'FLKSEG/1 SOURCE TARGET SEQUENCE BYTES SHA256'", false;
  if (f[0] != kStreamMagic) return *why = fmt::format("unknown frame tag '{}'", f[0]), false;
  if (!valid_region(f[1]) || !valid_region(f[2])) return *why = "invalid region name", false;
  out.address.source = f[1];
  out.address.target = f[2];
  if (!parse_u64(f[3], out.address.sequence) || out.address.sequence == 0)
    return *why = fmt::format("invalid sequence '{}'", f[3]), false;
  if (!parse_u64(f[4], out.bytes)) return *why = fmt::format("invalid size '{}'", f[4]), false;
  if (!hash::from_hex(f[5], out.sha256)) return *why = "invalid SHA-256", false;
  return true;
}

void write_stream_segment(int fd, const StreamSegment& s, const std::filesystem::path& file) {
  fs::Fd out(::dup(fd), "stdout");
  if (!out) throw sys_error("cannot write", "stdout", errno);
  out.write_all(stream_header_line(s));
  fs::Fd in = fs::Fd::open(file.string(), O_RDONLY);
  uint64_t left = s.bytes;
  while (left > 0) {
    ssize_t n = ::sendfile(out.get(), in.get(), nullptr, std::min<uint64_t>(left, 1u << 30));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EINVAL || errno == ENOSYS)) break;  // fall back to read/write
    if (n < 0) throw sys_error("cannot write segment to", "stdout", errno, Code::io);
    if (n == 0) fail(Code::data, "segment '{}' is shorter than its {} bytes", file.string(), s.bytes);
    left -= static_cast<uint64_t>(n);
  }
  std::string buf(kChunk, '\0');
  while (left > 0) {
    size_t n = in.read_some(buf.data(), std::min<uint64_t>(left, buf.size()));
    if (n == 0) fail(Code::data, "segment '{}' is shorter than its {} bytes", file.string(), s.bytes);
    out.write_all(std::string_view(buf.data(), n));
    left -= n;
  }
}

size_t StreamReader::fill() {
  if (pos_ > 0) {
    buf_.erase(0, pos_);
    pos_ = 0;
  }
  size_t have = buf_.size();
  buf_.resize(have + kChunk);
  ssize_t n;
  do {
    n = ::read(fd_, buf_.data() + have, kChunk);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    int err = errno;
    buf_.resize(have);
    throw sys_error("cannot read", name_, err, Code::io);
  }
  buf_.resize(have + static_cast<size_t>(n));
  if (n == 0) eof_ = true;
  return static_cast<size_t>(n);
}

std::optional<StreamSegment> StreamReader::next() {
  if (pending_) fail(Code::internal, "stream '{}': segment body not consumed", name_);
  for (;;) {
    std::string_view avail(buf_.data() + pos_, buf_.size() - pos_);
    size_t nl = avail.find('\n');
    if (nl != std::string_view::npos) {
      StreamSegment s;
      std::string why;
      if (!parse_stream_header(avail.substr(0, nl), s, &why))
        fail(Code::data, "stream '{}': offset {}: malformed segment header: {}", name_, offset_, why);
      pos_ += nl + 1;
      offset_ += nl + 1;
      pending_ = s.bytes;
      return s;
    }
    if (avail.size() > kMaxHeaderLine)
      fail(Code::data, "stream '{}': offset {}: malformed segment header: line too long", name_, offset_);
    if (eof_ || fill() == 0) {
      if (avail.empty()) return std::nullopt;
      fail(Code::data, "stream '{}': offset {}: truncated segment header", name_, offset_);
    }
  }
}

void StreamReader::body(const std::function<void(std::string_view)>& sink) {
  while (pending_ > 0) {
    if (pos_ == buf_.size() && (eof_ || fill() == 0))
      fail(Code::data, "stream '{}': offset {}: stream ends {} bytes before the end of the segment", name_, offset_,
           pending_);
    size_t n = std::min<uint64_t>(pending_, buf_.size() - pos_);
    sink(std::string_view(buf_.data() + pos_, n));
    pos_ += n;
    offset_ += n;
    pending_ -= n;
  }
}

}  // namespace flk::transport
