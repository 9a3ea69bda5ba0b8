// The WORM ledger (DESIGN.md §5): an append-only, hash-chained JSON Lines file in which
// flk records what it found and did (divergent outcomes, reconciliations). Every line
// carries the SHA-256 of the line before it, so an edit, deletion, insertion, reorder or
// torn write anywhere is found by verify(). Nothing in flk ever rewrites, truncates or
// repairs a ledger; only an operator does, by hand, as described below.
//
// FORMAT. UTF-8 text; one entry per line; each line is one JSON object followed by "\n"
// (no "\r", no blank lines, no header, at most kMaxLine bytes):
//
//   {"seq":1,"time":"2026-11-26T08:00:00.5Z","prev":"0000…(64 zeros)…0000",<fields>}
//   {"seq":2,"time":"2026-11-26T08:00:01.25Z","prev":"<SHA-256 of line 1>",<fields>}
//
//   seq    the line's number: 1 on the first line, one more on each next line
//   time   when the entry was appended, RFC 3339 UTC with up to 9 fraction digits
//          (flk/util/time.hpp). Informational: clocks step, so its order is not checked.
//   prev   the SHA-256, 64 lower-case hex digits, of the previous line's bytes including
//          its "\n"; 64 zeros on line 1
//   fields the members of the JSON object the caller appended, byte for byte as it wrote
//          them (they follow the three keys above, which come first and are reserved)
//
// One link can be checked with the shell: `sed -n 2p LEDGER | sha256sum` prints line 3's
// prev. The HEAD of a ledger is (the seq of its last line, the SHA-256 of that line with
// its "\n"), written "SEQ:HEX"; the next line's prev is the head's hash. An empty ledger's
// head is "0:" and 64 zeros.
//
// WHAT THE CHAIN DETECTS, AND WHAT IT DOES NOT. Anything done to a line that has a line
// after it breaks a check: verify() reports the first line that fails (an edit of line k
// that keeps it a valid entry shows as line k+1's prev no longer matching). The chain is
// not a signature: removing whole lines from the end, or rewriting every line from some
// point on with the hashes recomputed, leaves a valid chain. Those are found only against
// a head kept elsewhere (printed by the tool, stored in another region, in a ticket):
// verify(file, head) also checks that line head.seq still exists and still hashes to
// head.hash. For protection from accidents by root, `chattr +a LEDGER` works with this
// writer, which only ever opens the file with O_APPEND.
//
// WRITING. Every append, in any process or thread, takes an exclusive flock(2) on the
// ledger file itself and holds it while it reads the last line (backwards from the end,
// 64 KiB at a time: the cost does not grow with the file), checks it, writes the new
// lines with one write(2) through an O_APPEND descriptor, and fdatasyncs the file; the
// first entry also fsyncs the directory, so the file's creation is durable. When append
// returns, the entries are on disk. Concurrent appenders therefore never interleave or
// fork the chain. The lock is advisory: a writer that bypasses this module (echo >>) is
// not excluded, and verify() will say what it did. Locks are meant for a local file
// system; on NFS, flock is emulated and only as good as the server's locking.
//
// FAILURES. An append that fails before writing (bad entry, damaged tail, lock or read
// error) writes nothing. One that fails while writing or syncing may have left any prefix
// of its bytes: the Ledger object is then poisoned (LevelDB's rule: the file's state is
// indeterminate) and refuses further appends; a new Ledger chains after whatever complete
// lines are there, and refuses a torn tail as below.
//
// RECOVERY FROM A TORN TAIL. A crash, power loss or full disk during an append can leave
// a last line with no final "\n". Its entry was never acknowledged (append had not
// returned; its caller saw an error or died, and logs it again when its work is retried).
// It is not chained over: append throws Error(data)
//   ledger 'LEDGER': torn last line at byte offset O (N bytes with no final newline,
//   left by an interrupted append): refusing to append; …
// and verify() reports the same line and offset. The operator, by hand:
//   1. looks at the bytes:  tail -c +$((O + 1)) LEDGER
//   2. keeps a copy:        tail -c +$((O + 1)) LEDGER > LEDGER.torn-at-O
//   3. cuts them off:       truncate -s O LEDGER     (after chattr -a, if it was set)
//   4. verifies again:      verify(), i.e. flk-diverge verify-log
// Any other damage (a line edited or missing in the middle) is evidence, not something to
// fix: keep the file as it is, start a new ledger beside it, and record why.
//
// Thread safety: one Ledger may be used from several threads (a mutex orders them); any
// number of Ledger objects and processes may append to the same file (flock orders them).
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "flk/util/fs.hpp"
#include "flk/util/hash.hpp"

namespace flk::ledger {

// The longest line, "\n" included, that is written or accepted.
constexpr size_t kMaxLine = 16u << 20;

// The head of a ledger: the seq of its last line (= its number of lines) and the SHA-256
// of that line with its "\n". {0, zeros} for an empty ledger.
struct Head {
  uint64_t seq = 0;
  hash::Digest hash{};
  bool operator==(const Head&) const = default;
};

// "SEQ:HEX" and back. parse_head throws Error(data) naming the text when it is malformed.
std::string format_head(const Head& h);
Head parse_head(std::string_view text);

class Ledger {
 public:
  // Opens `file` for appending (O_RDWR | O_APPEND | O_CREAT, mode 0644; never O_TRUNC),
  // creating it empty when missing; the directory must exist. Throws Error naming it.
  explicit Ledger(std::filesystem::path file);

  // Appends one entry. `entry` is the text of a JSON object (json::Object builds one):
  // valid UTF-8 JSON, no line break, none of the keys seq, time, prev. Its members are
  // written after the three the ledger adds. Returns the ledger's head after it: keep it
  // elsewhere to detect later truncation or rewriting (see verify). Throws Error(data)
  // for a malformed entry or a damaged or torn last line (nothing written), Error(io)
  // when writing or syncing fails (the object is then poisoned).
  Head append(std::string_view entry);

  // Appends several entries under one lock, with one write and one fdatasync: all are
  // checked first and nothing is written when one is malformed. With no entries, writes
  // nothing and returns the current head.
  Head append_all(std::span<const std::string> entries);

  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
  fs::Fd fd_;
  std::mutex mu_;
  bool poisoned_ = false;
};

struct VerifyResult {
  bool ok = true;
  // The head of the lines that passed: of the whole file when ok. head.seq is the number
  // of lines; bytes is their length (the byte offset just after them).
  Head head;
  uint64_t bytes = 0;
  // When !ok: the first line that failed (from 1), the byte offset where it starts (from
  // 0), why it failed, and the whole "ledger 'FILE': line N at byte offset O: why".
  uint64_t bad_line = 0;
  uint64_t offset = 0;
  std::string why;
  std::string message;

  // Throws Error(data, message) when !ok.
  void check() const;
};

// Reads the whole ledger once, front to back, in bounded memory (one line and a block),
// and checks every line: a JSON object ended by "\n", seq = its line number, prev = the
// SHA-256 of the line before (zeros on line 1), time an RFC 3339 timestamp. With
// `expected`, a head kept earlier, also checks that line expected.seq exists and hashes
// to expected.hash (the file may have grown since). Damage is reported in the result,
// not thrown; the file's end is fixed at the start (an append in progress is waited for,
// later ones are not looked at). Throws Error for a missing or unreadable file.
VerifyResult verify(const std::filesystem::path& file, const std::optional<Head>& expected = std::nullopt);

}  // namespace flk::ledger
