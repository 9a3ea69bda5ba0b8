#include "flk/util/json.hpp"

#include <poll.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>

#include <fmt/format.h>

#include "flk/util/error.hpp"

namespace flk::json {

namespace {
// Bytes that cannot appear raw inside a JSON string: controls, '"' and '\\'.
constexpr auto kNeedsEscape = [] {
  std::array<bool, 256> t{};
  for (int c = 0; c < 0x20; ++c) t[c] = true;
  t['"'] = t['\\'] = true;
  return t;
}();
}  // namespace

void append_string(std::string& out, std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  out += '"';
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  size_t n = s.size(), run = 0;  // run: start of the bytes not yet copied
  for (size_t i = 0; i < n; ++i) {
    if (!kNeedsEscape[p[i]]) [[likely]]
      continue;
    out.append(s.data() + run, i - run);
    run = i + 1;
    switch (p[i]) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        out += "\\u00";
        out += kHex[p[i] >> 4];
        out += kHex[p[i] & 15];
    }
  }
  out.append(s.data() + run, n - run);
  out += '"';
}

void Object::key(std::string_view k) {
  // Keys are the program's own snake_case names: no escaping needed.
  out_ += first_ ? "{\"" : ",\"";
  first_ = false;
  out_ += k;
  out_ += "\":";
}

Object& Object::str(std::string_view k, std::string_view value) {
  key(k);
  append_string(out_, value);
  return *this;
}

Object& Object::num(std::string_view k, int64_t value) {
  key(k);
  fmt::format_to(std::back_inserter(out_), "{}", value);
  return *this;
}

Object& Object::unum(std::string_view k, uint64_t value) {
  key(k);
  fmt::format_to(std::back_inserter(out_), "{}", value);
  return *this;
}

Object& Object::real(std::string_view k, double value) {
  key(k);
  fmt::format_to(std::back_inserter(out_), "{}", value);
  return *this;
}

Object& Object::boolean(std::string_view k, bool value) {
  key(k);
  out_ += value ? "true" : "false";
  return *this;
}

Object& Object::null(std::string_view k) {
  key(k);
  out_ += "null";
  return *this;
}

Object& Object::raw(std::string_view k, std::string_view json_text) {
  key(k);
  out_ += json_text;
  return *this;
}

LineReader::LineReader(int fd, std::string name, size_t max_line)
    : fd_(fd), name_(std::move(name)), max_line_(max_line) {}

LineReader::Fill LineReader::fill(int timeout_ms) {
  if (eof_) return Fill::eof;
  if (pos_ > 0) {  // drop consumed bytes
    std::memmove(buf_.data(), buf_.data() + pos_, size_ - pos_);
    size_ -= pos_;
    pos_ = 0;
  }
  if (timeout_ms >= 0) {
    struct pollfd p = {fd_, POLLIN, 0};
    int r = ::poll(&p, 1, timeout_ms);
    if (r < 0 && errno == EINTR) return Fill::interrupted;
    if (r < 0) throw sys_error("cannot poll", name_, errno);
    if (r == 0) return Fill::timeout;
  }
  constexpr size_t kChunk = 1 << 20;
  if (buf_.size() < size_ + kChunk + kPadding) buf_.resize(size_ + kChunk + kPadding);
  ssize_t n = ::read(fd_, buf_.data() + size_, kChunk);
  if (n < 0 && errno == EINTR) return Fill::interrupted;
  if (n < 0) throw sys_error("cannot read", name_, errno);
  size_ += static_cast<size_t>(n);
  if (n == 0) {
    eof_ = true;
    return Fill::eof;
  }
  // A pipe hands over at most its buffer (64 KiB) per read: take what else is already
  // waiting, up to a chunk, so that a fast producer gets large batches (fewer syncs).
  size_t got = static_cast<size_t>(n);
  while (got < kChunk) {
    struct pollfd p = {fd_, POLLIN, 0};
    if (::poll(&p, 1, 0) <= 0 || !(p.revents & POLLIN)) break;
    ssize_t more = ::read(fd_, buf_.data() + size_, kChunk - got);
    if (more <= 0) break;  // EOF or an error: the next fill() sees it
    size_ += static_cast<size_t>(more);
    got += static_cast<size_t>(more);
  }
  return Fill::data;
}

std::optional<std::string_view> LineReader::next() {
  if (pos_ >= size_) return std::nullopt;
  const char* start = buf_.data() + pos_;
  const void* nl = std::memchr(start, '\n', size_ - pos_);
  size_t len;
  size_t advance;
  if (nl) {
    len = static_cast<size_t>(static_cast<const char*>(nl) - start);
    advance = len + 1;
  } else if (eof_) {
    len = size_ - pos_;
    advance = len;
  } else {
    if (size_ - pos_ > max_line_)
      fail(Code::data, "reading '{}': line {} is longer than {} bytes", name_, line_no_ + 1, max_line_);
    return std::nullopt;
  }
  if (len > max_line_) fail(Code::data, "reading '{}': line {} is longer than {} bytes", name_, line_no_ + 1, max_line_);
  pos_ += advance;
  ++line_no_;
  std::string_view line(start, len);
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  return line;
}

}  // namespace flk::json
