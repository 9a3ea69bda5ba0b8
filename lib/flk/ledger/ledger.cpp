#include "flk/ledger/ledger.hpp"

#include <fcntl.h>
#include <sys/file.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <iterator>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "flk/util/error.hpp"
#include "flk/util/time.hpp"

namespace flk::ledger {

namespace {

constexpr size_t kTailBlock = 64u << 10;     // append reads the last line backwards in these
constexpr size_t kVerifyBlock = 256u << 10;  // verify reads forwards in these

// flock(2) held for a scope.
class Flock {
 public:
  Flock(const fs::Fd& fd, int op) : fd_(fd.get()) {
    while (::flock(fd_, op) != 0) {
      if (errno == EINTR) continue;
      throw sys_error("cannot lock", fd.path(), errno);
    }
  }
  ~Flock() { ::flock(fd_, LOCK_UN); }
  Flock(const Flock&) = delete;
  Flock& operator=(const Flock&) = delete;

 private:
  int fd_;
};

hash::Digest line_hash(std::string_view line_without_newline) {
  hash::Sha256 h;
  h.update(line_without_newline);
  h.update("\n", 1);
  return h.finish();
}

std::optional<nlohmann::json> parse_json(std::string_view text) {
  nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return std::nullopt;
  return j;
}

// A caller's entry, checked: the members to write after the ledger's own ("" for {}).
std::string_view members_of(const std::filesystem::path& file, std::string_view entry) {
  auto bad = [&](std::string_view why) { fail(Code::data, "ledger '{}': cannot append entry: {}", file.string(), why); };
  if (entry.find_first_of("\r\n") != std::string_view::npos) bad("it contains a line break");
  if (entry.size() >= kMaxLine) bad("it is longer than 16 MiB");
  auto j = parse_json(entry);
  if (!j) bad("it is not valid JSON");
  if (!j->is_object()) bad("it is not a JSON object");
  for (const char* key : {"seq", "time", "prev"})
    if (j->contains(key)) bad(fmt::format("it has the reserved key '{}'", key));
  if (j->empty()) return {};
  // A valid object, so after trimming its whitespace it is "{" members "}".
  size_t open = entry.find('{'), close = entry.rfind('}');
  return entry.substr(open + 1, close - open - 1);
}

// The start of the line that ends at `end` (exclusive): the byte after the last "\n"
// before it. Reads only that line. Fills `text` when asked.
uint64_t line_start(const fs::Fd& fd, uint64_t end, std::string* text) {
  std::vector<std::string> blocks;  // last block first
  uint64_t pos = end, start = 0;
  while (pos > 0) {
    if (end - pos > kMaxLine)
      fail(Code::data, "ledger '{}': the last line, ending at byte offset {}, is longer than 16 MiB", fd.path(), end);
    size_t n = static_cast<size_t>(std::min<uint64_t>(kTailBlock, pos));
    std::string block(n, '\0');
    if (fd.pread_some(block.data(), n, pos - n) != n)
      fail(Code::io, "ledger '{}': the file shrank while its last line was read", fd.path());
    size_t nl = block.rfind('\n');
    if (nl != std::string::npos) {
      start = pos - n + nl + 1;
      if (text) blocks.push_back(block.substr(nl + 1));
      break;
    }
    if (text) blocks.push_back(std::move(block));
    pos -= n;
  }
  if (text) {
    text->clear();
    for (auto it = blocks.rbegin(); it != blocks.rend(); ++it) *text += *it;
  }
  return start;
}

// The head of the ledger open on `fd`, of `size` bytes, from its last line alone.
// Refuses (Error(data)) a torn or malformed last line: appending over it would hide it.
Head tail_head(const fs::Fd& fd, uint64_t size) {
  if (size == 0) return {};
  char last = 0;
  if (fd.pread_some(&last, 1, size - 1) != 1)
    fail(Code::io, "ledger '{}': the file shrank while its last line was read", fd.path());
  if (last != '\n') {
    uint64_t start = line_start(fd, size, nullptr);
    fail(Code::data,
         "ledger '{0}': torn last line at byte offset {1} ({2} bytes with no final newline, left by an "
         "interrupted append): refusing to append; save those bytes, then cut them off by hand with "
         "truncate -s {1} '{0}'",
         fd.path(), start, size - start);
  }
  std::string text;
  uint64_t start = line_start(fd, size - 1, &text);
  auto j = parse_json(text);
  uint64_t seq = 0;
  if (j && j->is_object())
    if (auto it = j->find("seq"); it != j->end() && it->is_number_unsigned()) seq = it->get<uint64_t>();
  if (seq == 0)
    fail(Code::data, "ledger '{}': the last line, at byte offset {}, is not a ledger entry: refusing to append; "
         "verify the ledger", fd.path(), start);
  return Head{seq, line_hash(text)};
}

}  // namespace

std::string format_head(const Head& h) { return fmt::format("{}:{}", h.seq, hash::to_hex(h.hash)); }

Head parse_head(std::string_view text) {
  Head h;
  size_t colon = text.find(':');
  bool good = colon != std::string_view::npos && colon > 0;
  if (good) {
    auto [p, ec] = std::from_chars(text.data(), text.data() + colon, h.seq);
    good = ec == std::errc() && p == text.data() + colon && hash::from_hex(text.substr(colon + 1), h.hash);
  }
  if (!good) fail(Code::data, "malformed ledger head '{}': expected SEQ:SHA256, e.g. 42:{}", text, std::string(64, '0'));
  return h;
}

Ledger::Ledger(std::filesystem::path file)
    : path_(std::move(file)), fd_(fs::Fd::open(path_.string(), O_RDWR | O_APPEND | O_CREAT, 0644)) {}

Head Ledger::append(std::string_view entry) {
  std::string e(entry);
  return append_all(std::span<const std::string>(&e, 1));
}

Head Ledger::append_all(std::span<const std::string> entries) {
  std::vector<std::string_view> members;
  members.reserve(entries.size());
  for (const std::string& e : entries) members.push_back(members_of(path_, e));

  std::lock_guard guard(mu_);
  if (poisoned_)
    fail(Code::io, "ledger '{}': an earlier append failed while writing, its outcome is unknown: not appending "
         "through this handle; verify the ledger and open it again", path_.string());
  Flock lock(fd_, LOCK_EX);
  uint64_t size = fd_.size();
  Head head = tail_head(fd_, size);
  if (entries.empty()) return head;

  std::string out;
  for (std::string_view m : members) {
    size_t begin = out.size();
    fmt::format_to(std::back_inserter(out), R"({{"seq":{},"time":"{}","prev":"{}")", head.seq + 1,
                   timeutil::format_rfc3339(timeutil::now()), hash::to_hex(head.hash));
    if (!m.empty()) {
      out += ',';
      out += m;
    }
    out += "}\n";
    std::string_view line(out.data() + begin, out.size() - begin - 1);
    if (line.size() + 1 > kMaxLine)
      fail(Code::data, "ledger '{}': cannot append entry: it is longer than 16 MiB", path_.string());
    head = Head{head.seq + 1, line_hash(line)};
  }
  try {
    fd_.write_all(out);
    fd_.sync_data();
    // The first entry makes the file's creation durable too (whoever created it).
    if (size == 0) fs::sync_dir(path_.has_parent_path() ? path_.parent_path() : std::filesystem::path("."));
  } catch (const Error&) {
    poisoned_ = true;  // the errors name the file already
    throw;
  }
  return head;
}

void VerifyResult::check() const {
  if (!ok) throw Error(Code::data, message);
}

VerifyResult verify(const std::filesystem::path& file, const std::optional<Head>& expected) {
  fs::Fd fd = fs::Fd::open(file.string(), O_RDONLY);
  uint64_t size;
  {
    // Appenders hold the lock from write to fsync: under it the file ends after a whole
    // append. Later appends only add bytes after `size`, which this pass does not read.
    Flock lock(fd, LOCK_SH);
    size = fd.size();
  }

  VerifyResult r;
  auto bad = [&](uint64_t line, uint64_t offset, std::string why) {
    r.ok = false;
    r.bad_line = line;
    r.offset = offset;
    r.why = std::move(why);
    r.message = fmt::format("ledger '{}': line {} at byte offset {}: {}", file.string(), line, offset, r.why);
    return false;
  };

  // Checks one complete line (without its "\n") that starts at r.bytes; advances the head.
  auto check_line = [&](std::string_view line) -> bool {
    uint64_t n = r.head.seq + 1;
    if (line.empty()) return bad(n, r.bytes, "empty line");
    if (line.size() >= kMaxLine) return bad(n, r.bytes, "longer than 16 MiB");
    auto j = parse_json(line);
    if (!j) return bad(n, r.bytes, "not valid JSON");
    if (!j->is_object()) return bad(n, r.bytes, "not a JSON object");
    auto seq = j->find("seq");
    if (seq == j->end() || !seq->is_number_unsigned()) return bad(n, r.bytes, "no seq (a positive integer)");
    if (uint64_t s = seq->get<uint64_t>(); s != n)
      return bad(n, r.bytes, fmt::format("seq is {}, expected {} ({})", s, n,
                                         s > n ? "lines missing before it?" : "a line repeated or out of order?"));
    auto prev = j->find("prev");
    if (prev == j->end() || !prev->is_string()) return bad(n, r.bytes, "no prev (a SHA-256 in hex)");
    if (prev->get_ref<const std::string&>() != hash::to_hex(r.head.hash))
      return bad(n, r.bytes,
                 n == 1 ? std::string("prev is not 64 zeros (lines removed from the start?)")
                        : fmt::format("prev does not match the SHA-256 of line {} (line {} changed, or lines removed or "
                                      "reordered?)",
                                      n - 1, n - 1));
    auto time = j->find("time");
    bool time_ok = time != j->end() && time->is_string();
    if (time_ok) {
      try {
        timeutil::parse_rfc3339(time->get_ref<const std::string&>());
      } catch (const Error&) {
        time_ok = false;
      }
    }
    if (!time_ok) return bad(n, r.bytes, "no time (an RFC 3339 timestamp)");
    hash::Digest h = line_hash(line);
    if (expected && n == expected->seq && h != expected->hash)
      return bad(n, r.bytes, fmt::format("its SHA-256 differs from the recorded head {} (the ledger was rewritten "
                                         "at or before this line)",
                                         format_head(*expected)));
    r.head = Head{n, h};
    r.bytes += line.size() + 1;
    return true;
  };

  std::string pending;  // the start of a line that continues in the next block
  std::string block(kVerifyBlock, '\0');
  uint64_t pos = 0;
  while (pos < size) {
    size_t want = static_cast<size_t>(std::min<uint64_t>(kVerifyBlock, size - pos));
    size_t got = fd.pread_some(block.data(), want, pos);
    if (got == 0) break;  // cut short while being read: what was there is checked below
    std::string_view rest(block.data(), got);
    pos += got;
    for (size_t nl; (nl = rest.find('\n')) != std::string_view::npos; rest.remove_prefix(nl + 1)) {
      bool good;
      if (pending.empty()) {
        good = check_line(rest.substr(0, nl));
      } else {
        pending.append(rest.substr(0, nl));
        good = check_line(pending);
        pending.clear();
      }
      if (!good) return r;
    }
    pending.append(rest);
    if (pending.size() >= kMaxLine) {
      bad(r.head.seq + 1, r.bytes, "longer than 16 MiB");
      return r;
    }
  }
  if (!pending.empty()) {
    bad(r.head.seq + 1, r.bytes,
        fmt::format("torn: {} bytes with no final newline, left by an interrupted append (to repair by hand, "
                    "save them, then truncate -s {} '{}')",
                    pending.size(), r.bytes, file.string()));
    return r;
  }
  if (expected && r.head.seq < expected->seq)
    bad(r.head.seq + 1, r.bytes,
        fmt::format("missing: the ledger ends after line {}, but the recorded head {} is line {} (lines removed from "
                    "the end)",
                    r.head.seq, format_head(*expected), expected->seq));
  return r;
}

}  // namespace flk::ledger
