// Errors and the one exit-code table (DESIGN.md §8).
//
// Foreseeable failures (I/O, corruption, bad input, network) are reported by throwing
// flk::Error, whose code decides the process exit status; bugs are asserts. Context is
// added on the way up with Error::wrap ("reading segment '…': checksum mismatch…").
// Messages follow git's style: lower case, no final full stop, the subject in quotes.
#pragma once

#include <stdexcept>
#include <string>
#include <string_view>

#include <fmt/format.h>

namespace flk {

// Exit codes, from sysexits(3) where one fits. The only table of them in flk.
enum class Code : int {
  ok = 0,
  diverged = 1,      // flk-diverge: divergence found
  usage = 64,        // command-line usage error
  data = 65,         // malformed input, checksum mismatch, corrupt segment, broken chain
  no_input = 66,     // an input file or directory is missing
  unavailable = 69,  // peer unavailable after all retries
  internal = 70,     // internal error (a bug)
  cant_create = 73,  // cannot create an output file
  io = 74,           // I/O error, including fsync failure and disk full
  temp_fail = 75,    // temporary failure: run again later; partial progress is safe
  protocol = 76,     // protocol error from a peer
  no_perm = 77,      // permission denied, authentication refused
  config = 78,       // configuration error
};

class Error : public std::runtime_error {
 public:
  Error(Code code, std::string message) : std::runtime_error(std::move(message)), code_(code) {}

  Code code() const { return code_; }
  int exit_status() const { return static_cast<int>(code_); }

  // A copy with "context: " in front of the message, keeping the code.
  Error wrap(std::string_view context) const {
    return Error(code_, fmt::format("{}: {}", context, what()));
  }

 private:
  Code code_;
};

// Of two outcomes, the one that decides a tool's exit status when several parts of
// its work failed differently: damage first, then refusal, configuration, protocol,
// I/O …, and a temporary failure last (ok loses to anything).
Code most_serious(Code a, Code b);

// Throw an Error with a formatted message.
template <typename... Args>
[[noreturn]] void fail(Code code, fmt::format_string<Args...> f, Args&&... args) {
  throw Error(code, fmt::format(f, std::forward<Args>(args)...));
}

// An Error for a failed system call on a path, from errno: "what 'path': strerror".
// The code is chosen from the errno: ENOENT → no_input, EACCES/EPERM → no_perm,
// ENOSPC/EIO/… → io, unless `code` overrides it.
Error sys_error(std::string_view what, std::string_view path, int err);
Error sys_error(std::string_view what, std::string_view path, int err, Code code);

}  // namespace flk
