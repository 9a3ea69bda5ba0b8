// The mailbox server (flk-serve(1), DESIGN.md §4): receives the segments peers ship,
// into the mailbox tree of mailbox.hpp, over HTTP or HTTPS (cpp-httplib).
//
//   POST /v1/segments/SOURCE/TARGET/SEQ   body: the segment; X-Flk-Sha256: its digest
//        201 stored · 200 already stored, same digest · 409 a different segment is
//        stored there (the first is kept) · 400 digest mismatch (reason
//        "digest_mismatch") or not a valid sealed segment of SOURCE/SEQ ·
//        401 no or unknown token · 403 that peer may not write SOURCE · 413 too large
//   GET  /v1/segments/SOURCE/TARGET/SEQ   the segment, with X-Flk-Sha256
//   GET  /v1/segments/SOURCE/TARGET[?after=N&limit=M]   JSON Lines {sequence,bytes,sha256}
//   GET  /v1/head/SOURCE/TARGET           {"source","target","sequence","sha256","last_ts","last_ts_ns"}
//   GET  /v1/streams                      JSON Lines: the head of every stream
//   GET  /healthz                         200 "ok" while the mailbox is usable
//   GET  /metrics                         Prometheus text
//
// Errors are JSON: {"error": "…", "reason": "…"}. A peer is identified by its bearer
// token (one per peer region) and/or its client certificate's common name; it may
// write only its own streams (SOURCE = itself) and read streams it is the source or the
// target of. /healthz and /metrics need no authentication.
#pragma once

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include "flk/util/time.hpp"

namespace flk::transport {

struct ServeOptions {
  std::string listen = "127.0.0.1:8443";  // HOST:PORT or [V6]:PORT; port 0 picks a free one
  std::filesystem::path mailbox;
  std::string tls_cert, tls_key, client_ca;
  std::map<std::string, std::string> tokens;  // token → the peer region it identifies ("*": any)
  bool no_auth = false;                       // only accepted on a loopback address
  uint64_t max_body = 256ull << 20;
  size_t threads = 8;        // requests served at once
  size_t queue = 64;         // accepted connections waiting for a thread (then accept waits)
  timeutil::Nanos io_timeout = 30 * timeutil::kSecond;  // per read/write on a connection
  std::function<void(const std::string&)> log;        // one line per request
};

class Server {
 public:
  // Validates the options (authentication, TLS files, mailbox) and binds the socket;
  // throws Error(config/usage) or Error(io/cant_create) naming what is wrong.
  explicit Server(ServeOptions o);
  ~Server();

  int port() const;  // the bound port
  // Serves until stop(); requests in progress are finished first.
  void run();
  void stop();  // thread-safe, not async-signal-safe

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// True for 127.0.0.0/8, ::1 and "localhost".
bool is_loopback_host(std::string_view host);
// Splits "HOST:PORT" / "[V6]:PORT"; throws Error(usage).
std::pair<std::string, int> split_host_port(std::string_view listen);

}  // namespace flk::transport
