// Transports (DESIGN.md §4): how segments travel between regions, chosen by URL and
// the same for the shipper and the reader.
//
//   file:///dir            the mailbox tree of mailbox.hpp, written atomically (also a
//                          shared mount)
//   http://host:port       the mailbox protocol of flk-serve(1), via libcurl: one
//   https://host:port      connection kept alive per transport, timeouts on every
//                          operation, TLS verified against a CA file
//   -                      a framed stream of segments on stdout / stdin (stream.hpp)
//
// Errors are flk::Error with the code that says what to do next:
//   temp_fail  worth retrying (connection refused or reset, timeout, 5xx, 408, 429,
//              bytes damaged in transit — the receiver answered 400 to a digest mismatch)
//   no_perm    authentication refused (401, 403, a TLS certificate refused either way)
//   protocol   the peer answered something the protocol does not allow, or 4xx
//   data       the bytes given are not a valid segment (the receiver answered 400 for
//              another reason than a digest mismatch; the file transport's checks)
// Put::conflict is a result, not an error: the caller decides.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "flk/transport/mailbox.hpp"
#include "flk/util/hash.hpp"
#include "flk/util/time.hpp"

namespace flk::transport {

struct Options {
  std::string token;      // bearer token presented (http/https)
  std::string ca_file;    // CA bundle to verify the server (https); system CAs when empty
  std::string cert_file;  // client certificate (https, when the server asks for one)
  std::string key_file;
  timeutil::Nanos connect_timeout = 10 * timeutil::kSecond;
  // An operation fails when no byte moves for this long (a stalled peer), and any
  // operation fails after `operation_timeout` (0: no overall bound).
  timeutil::Nanos stall_timeout = 30 * timeutil::kSecond;
  timeutil::Nanos operation_timeout = 0;
};

// What a peer's health check found (Transport::health).
struct Health {
  bool ok = false;
  std::optional<long> status;  // the HTTP status (http/https only)
  std::string detail;          // why not ok: the peer's own words where it gave any
};

class Transport {
 public:
  virtual ~Transport() = default;

  // Ships one sealed segment file whose SHA-256 is `sha256` to address a.
  virtual Put put(const Address& a, const std::filesystem::path& file, const hash::Digest& sha256) = 0;

  // The stream's segments after `after`, in order.
  virtual std::vector<Entry> list(std::string_view source, std::string_view target, uint64_t after) = 0;
  virtual Head head(std::string_view source, std::string_view target) = 0;
  // The (source, target) streams there are, sorted.
  virtual std::vector<std::pair<std::string, std::string>> streams() = 0;
  // Fetches a segment into `dest` (written whole; not fsynced) and returns the digest the
  // peer declared for it. The caller verifies the bytes.
  virtual hash::Digest get(const Address& a, const std::filesystem::path& dest) = 0;
  // Reports where this region's reader stands on a stream it reads (mailbox.hpp,
  // Applied); the source learns it from head(). http/https: only the target region
  // may report on a stream.
  virtual void report_applied(std::string_view source, std::string_view target, const Applied& a) = 0;

  // Whether the peer can take segments now (flk-health(1)). http/https: GET /healthz,
  // without the token (the TLS settings apply); any HTTP status is a result, a peer
  // that cannot be reached throws as for any operation. file://: the mailbox directory
  // must exist and be writable. "-": Error(usage).
  virtual Health health() = 0;

  // Where a segment can be read in place, without get() (file:// only).
  virtual std::optional<std::filesystem::path> local_path(const Address&) { return std::nullopt; }

  // The URL for messages, with any password masked.
  virtual std::string describe() const = 0;

  // Aborts operations in progress and refuses new ones (from another thread or a
  // signal-watching thread); they throw Error(temp_fail) "interrupted".
  virtual void interrupt() = 0;
};

// Opens the transport for a URL. Throws Error(usage/config) naming the URL when it is
// not one of the forms above.
std::unique_ptr<Transport> open(std::string_view url, const Options& options = {});

// Reads the first line of a token file (trailing white space removed). Throws
// Error(config) when it is missing, unreadable, empty, or readable by others than its
// owner's group (mode & 0004).
std::string read_token_file(const std::filesystem::path& file);

}  // namespace flk::transport
