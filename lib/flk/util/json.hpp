// JSON Lines: writing one object per line quickly, and reading lines from a file
// descriptor with a timeout (so a writer can do timed work while its input is quiet).
// Parsing a line's JSON is nlohmann::json's job; this module does only what it does not.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace flk::json {

// Appends s as a JSON string literal (quotes, escapes; invalid UTF-8 is passed through).
void append_string(std::string& out, std::string_view s);

// Builds one JSON object into a string:  Object o(out); o.str("k", v).num("n", 1); o.close();
class Object {
 public:
  // Keys are the caller's literal names and are not escaped.
  explicit Object(std::string& out) : out_(out) {}
  Object& str(std::string_view key, std::string_view value);
  Object& num(std::string_view key, int64_t value);
  Object& unum(std::string_view key, uint64_t value);
  Object& real(std::string_view key, double value);
  Object& boolean(std::string_view key, bool value);
  Object& null(std::string_view key);
  // value must already be valid JSON text.
  Object& raw(std::string_view key, std::string_view json_text);
  void close() { out_ += first_ ? "{}" : "}"; }

 private:
  void key(std::string_view k);
  std::string& out_;
  bool first_ = true;
};

// Reads newline-terminated lines from a file descriptor through a buffer. Every line
// returned is followed in memory by at least kPadding readable bytes, so SIMD JSON
// parsers can parse it in place.
class LineReader {
 public:
  static constexpr size_t kPadding = 64;
  explicit LineReader(int fd, std::string name = "stdin", size_t max_line = 8u << 20);

  enum class Fill { data, eof, timeout, interrupted };
  // Waits up to timeout_ms (-1: forever) for input and reads what is available.
  // A signal caught while waiting returns interrupted (so the caller can act on it).
  Fill fill(int timeout_ms);
  // The next complete line (without '\n'), or nullopt when none is buffered. After EOF a
  // final line without '\n' is returned too. Views are valid until the next fill().
  std::optional<std::string_view> next();
  bool eof() const { return eof_; }
  // The number of the last line returned by next(), from 1.
  uint64_t line_number() const { return line_no_; }

 private:
  int fd_;
  std::string name_;
  size_t max_line_;
  std::string buf_;  // size_ bytes of input, then kPadding bytes
  size_t size_ = 0;
  size_t pos_ = 0;
  bool eof_ = false;
  uint64_t line_no_ = 0;
};

}  // namespace flk::json
