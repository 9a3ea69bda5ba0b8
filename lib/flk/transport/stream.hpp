// The stream transport "-": segments framed one after another on a byte stream, so
// `flk-ship --to - | ssh peer flk-read --from -` works.
//
// Each segment is one text line followed by its bytes:
//
//   FLKSEG/1 <source> <target> <sequence> <bytes> <sha256 hex>\n
//   <bytes bytes of the segment>
//
// and the stream ends at end of file (between two segments; anywhere else it is
// truncated). A stream carries no acknowledgement: the reader verifies each segment
// (digest, frames, chain) and the sender cannot know what was applied.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "flk/transport/mailbox.hpp"

namespace flk::transport {

constexpr std::string_view kStreamMagic = "FLKSEG/1";

struct StreamSegment {
  Address address;
  uint64_t bytes = 0;
  hash::Digest sha256{};
};

std::string stream_header_line(const StreamSegment& s);
// Parses a header line (without its newline); false with why when malformed.
bool parse_stream_header(std::string_view line, StreamSegment& out, std::string* why);

// Writes one framed segment (header line, then the file's bytes) to fd.
void write_stream_segment(int fd, const StreamSegment& s, const std::filesystem::path& file);

// Reads framed segments from fd in order.
class StreamReader {
 public:
  explicit StreamReader(int fd, std::string name = "stdin") : fd_(fd), name_(std::move(name)) {}

  // The next segment's header; nullopt at a clean end of stream. Throws Error(data)
  // naming the stream and byte offset when the header is malformed or the stream ends
  // inside a segment. The body must be consumed with body() before the next call.
  std::optional<StreamSegment> next();
  // Delivers the current segment's bytes to sink in chunks.
  void body(const std::function<void(std::string_view)>& sink);

 private:
  size_t fill();
  int fd_;
  std::string name_;
  std::string buf_;
  size_t pos_ = 0;
  uint64_t offset_ = 0;  // of buf_[pos_] in the stream
  uint64_t pending_ = 0; // body bytes of the current segment not yet delivered
  bool eof_ = false;
};

}  // namespace flk::transport
