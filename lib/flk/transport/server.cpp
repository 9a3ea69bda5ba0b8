#include "flk/transport/server.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <charconv>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <httplib.h>
#include <openssl/crypto.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "flk/core/record.hpp"
#include "flk/metrics/metrics.hpp"
#include "flk/transport/http.hpp"
#include "flk/transport/mailbox.hpp"
#include "flk/util/error.hpp"
#include "flk/util/fs.hpp"
#include "flk/util/json.hpp"
#include "flk/wal/dir.hpp"

namespace flk::transport {

namespace stdfs = std::filesystem;

bool is_loopback_host(std::string_view host) {
  return host == "localhost" || host == "::1" || host == "[::1]" || host.starts_with("127.");
}

std::pair<std::string, int> split_host_port(std::string_view s) {
  size_t colon = s.rfind(':');
  int port = -1;
  if (colon != std::string_view::npos && colon > 0) {
    std::string_view p = s.substr(colon + 1);
    auto [end, ec] = std::from_chars(p.data(), p.data() + p.size(), port);
    if (ec != std::errc() || end != p.data() + p.size() || p.empty()) port = -1;
  }
  std::string host(colon == std::string_view::npos ? s : s.substr(0, colon));
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  if (port < 0 || port > 65535 || host.empty() || (s.front() != '[' && host.find(':') != std::string::npos))
    fail(Code::usage, "invalid listen address '{}': expected HOST:PORT or [V6]:PORT", s);
  return {host, port};
}

namespace {

// A fixed set of threads with a bounded queue: when every thread is busy and the
// queue is full, accept(2) waits (the kernel's backlog holds further connections).
class BoundedPool final : public httplib::TaskQueue {
 public:
  BoundedPool(size_t threads, size_t cap) : cap_(cap) {
    for (size_t i = 0; i < threads; ++i) threads_.emplace_back([this] { work(); });
  }
  void enqueue(std::function<void()> fn) override {
    std::unique_lock lk(mu_);
    space_.wait(lk, [&] { return jobs_.size() < cap_ || shutdown_; });
    jobs_.push_back(std::move(fn));
    ready_.notify_one();
  }
  void shutdown() override {
    {
      std::lock_guard lk(mu_);
      shutdown_ = true;
    }
    ready_.notify_all();
    space_.notify_all();
    for (auto& t : threads_) t.join();
  }

 private:
  void work() {
    for (;;) {
      std::function<void()> fn;
      {
        std::unique_lock lk(mu_);
        ready_.wait(lk, [&] { return !jobs_.empty() || shutdown_; });
        if (jobs_.empty()) return;
        fn = std::move(jobs_.front());
        jobs_.pop_front();
        space_.notify_one();
      }
      fn();
    }
  }
  size_t cap_;
  std::mutex mu_;
  std::condition_variable ready_, space_;
  std::deque<std::function<void()>> jobs_;
  std::vector<std::thread> threads_;
  bool shutdown_ = false;
};

// What the logger prints about the request this thread just served.
thread_local std::string t_peer;
thread_local int64_t t_started = 0;
thread_local uint64_t t_bytes_in = 0;

void reply_error(httplib::Response& res, int status, std::string_view reason, std::string_view message) {
  std::string body;
  json::Object o(body);
  o.str("error", message).str("reason", reason);
  o.close();
  body += '\n';
  res.status = status;
  res.set_content(body, "application/json");
}

hash::Digest token_key(std::string_view token) { return hash::sha256(token); }

}  // namespace

struct Server::Impl {
  ServeOptions o;
  std::unique_ptr<httplib::Server> svr;
  int port = 0;
  std::vector<std::pair<hash::Digest, std::string>> tokens;  // SHA-256 of a token → region

  std::mutex mu;
  std::map<int, uint64_t> responses;  // by status
  std::atomic<uint64_t> received_bytes{0}, stored{0}, duplicates{0}, conflicts{0}, rejected{0};

  // The peer's identity, or empty after answering 401/403 itself.
  std::optional<std::string> authenticate(const httplib::Request& req, httplib::Response& res) {
    std::optional<std::string> by_cert, by_token;
    if (req.ssl) {
      if (X509* cert = SSL_get1_peer_certificate(req.ssl)) {
        char cn[256] = {0};
        X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, cn, sizeof cn);
        X509_free(cert);
        by_cert = cn;
      }
    }
    if (!tokens.empty()) {
      std::string auth = req.get_header_value("Authorization");
      if (!auth.starts_with("Bearer ")) {
        res.set_header("WWW-Authenticate", "Bearer");
        reply_error(res, 401, "unauthenticated", "a bearer token is required");
        return std::nullopt;
      }
      hash::Digest k = token_key(std::string_view(auth).substr(7));
      int match = -1;
      for (size_t i = 0; i < tokens.size(); ++i)  // every token compared, in constant time
        if (CRYPTO_memcmp(k.data(), tokens[i].first.data(), k.size()) == 0) match = static_cast<int>(i);
      if (match < 0) {
        res.set_header("WWW-Authenticate", "Bearer error=\"invalid_token\"");
        reply_error(res, 401, "unauthenticated", "unknown bearer token");
        return std::nullopt;
      }
      by_token = tokens[static_cast<size_t>(match)].second;
    }
    if (by_token && by_cert && *by_token != "*" && *by_token != *by_cert) {
      reply_error(res, 403, "forbidden",
                  fmt::format("the token is region '{}' but the certificate is '{}'", *by_token, *by_cert));
      return std::nullopt;
    }
    std::string who = by_token ? *by_token : by_cert ? *by_cert : std::string("*");
    t_peer = who;
    return who;
  }

  bool may(const std::string& who, std::initializer_list<std::string_view> regions) {
    if (who == "*") return true;
    for (auto r : regions)
      if (who == r) return true;
    return false;
  }

  Address address(const httplib::Request& req) {
    Address a{req.matches[1], req.matches[2], 0};
    if (req.matches.size() > 3) {
      std::string s = req.matches[3];
      auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), a.sequence);
      if (ec != std::errc() || p != s.data() + s.size()) a.sequence = 0;
    }
    return a;
  }

  // A POST refused before its body was read: the body must still leave the connection,
  // or the server would take it for the next request on a kept-alive connection. A
  // body of a declared length within the limit is read and dropped; any other (too
  // large, chunked) ends the connection instead.
  void drop_body(const httplib::Request& req, httplib::Response& res, const httplib::ContentReader& reader) {
    auto len = content_length(req);
    if (len && *len <= o.max_body && !req.has_header("Transfer-Encoding"))
      reader([](const char*, size_t) { return true; });
    else
      res.set_header("Connection", "close");
  }

  // The declared Content-Length, when there is a valid one.
  static std::optional<uint64_t> content_length(const httplib::Request& req) {
    if (!req.has_header("Content-Length")) return std::nullopt;
    std::string v = req.get_header_value("Content-Length");
    uint64_t len = 0;
    auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), len);
    if (ec != std::errc() || p != v.data() + v.size()) return std::nullopt;
    return len;
  }

  struct Admitted {
    Address address;
    hash::Digest declared;
  };

  void post_segment(const httplib::Request& req, httplib::Response& res, const httplib::ContentReader& reader) {
    std::optional<Admitted> a = admit_post(req, res);
    if (!a) return drop_body(req, res, reader);
    receive(a->address, a->declared, res, reader);
  }

  // Checks a POST before its body is read; answers the refusal itself.
  std::optional<Admitted> admit_post(const httplib::Request& req, httplib::Response& res) {
    auto who = authenticate(req, res);
    if (!who) return std::nullopt;
    Address a = address(req);
    if (a.sequence == 0) return reply_error(res, 400, "bad_address", "invalid sequence number"), std::nullopt;
    if (!may(*who, {a.source}))
      return reply_error(res, 403, "forbidden", fmt::format("peer '{}' may not write segments of '{}'", *who, a.source)),
             std::nullopt;
    hash::Digest declared;
    if (!hash::from_hex(req.get_header_value(std::string(kDigestHeader)), declared))
      return reply_error(res, 400, "bad_digest", fmt::format("missing or malformed {} header", kDigestHeader)),
             std::nullopt;
    if (auto len = content_length(req); len && *len > o.max_body)
      return reply_error(res, 413, "too_large", fmt::format("{} bytes exceed the limit of {}", *len, o.max_body)),
             std::nullopt;
    return Admitted{std::move(a), declared};
  }

  void receive(const Address& a, const hash::Digest& declared, httplib::Response& res,
               const httplib::ContentReader& reader) {
    try {
      Incoming in(o.mailbox, a);
      bool too_large = false;
      std::string io_error;
      reader([&](const char* data, size_t n) {
        if (in.size() + n > o.max_body) return too_large = true, false;
        try {
          in.write(std::string_view(data, n));
        } catch (const Error& e) {
          io_error = e.what();
          return false;
        }
        received_bytes += n;
        t_bytes_in += n;
        return true;
      });
      if (too_large || !io_error.empty()) res.set_header("Connection", "close");  // the rest of the body is unread
      if (too_large)
        return reply_error(res, 413, "too_large", fmt::format("the body exceeds the limit of {} bytes", o.max_body));
      if (!io_error.empty()) return reply_error(res, 500, "io", io_error);
      Put p = in.commit(declared);
      res.set_header(std::string(kDigestHeader), hash::to_hex(declared));
      std::string body;
      json::Object j(body);
      j.str("result", put_name(p)).str("source", a.source).str("target", a.target).unum("sequence", a.sequence);
      j.close();
      body += '\n';
      switch (p) {
        case Put::stored: ++stored; res.status = 201; break;
        case Put::duplicate: ++duplicates; res.status = 200; break;
        case Put::conflict:
          ++conflicts;
          return reply_error(res, 409, "conflict",
                             fmt::format("a different segment is already stored at {}; the first is kept", to_string(a)));
      }
      res.set_content(body, "application/json");
    } catch (const DigestMismatch& e) {
      ++rejected;
      return reply_error(res, 400, "digest_mismatch", e.what());
    } catch (const Error& e) {
      ++rejected;
      if (e.code() == Code::data) return reply_error(res, 400, "invalid_segment", e.what());
      if (e.code() == Code::usage) return reply_error(res, 400, "bad_address", e.what());
      return reply_error(res, 500, "io", e.what());
    }
  }

  void get_segment(const httplib::Request& req, httplib::Response& res) {
    auto who = authenticate(req, res);
    if (!who) return;
    Address a = address(req);
    if (a.sequence == 0) return reply_error(res, 400, "bad_address", "invalid sequence number");
    if (!may(*who, {a.source, a.target})) return reply_error(res, 403, "forbidden", "not a stream of this peer");
    stdfs::path p = segment_path(o.mailbox, a);
    std::error_code ec;
    uint64_t size = stdfs::file_size(p, ec);
    if (ec) return reply_error(res, 404, "not_found", fmt::format("no segment {}", to_string(a)));
    auto d = wal::read_digest_sidecar(p);
    if (!d) d = wal::file_digest(p);  // a sidecar lost to a power failure is recomputed
    auto fd = std::make_shared<fs::Fd>(fs::Fd::open(p.string(), O_RDONLY));
    res.set_header(std::string(kDigestHeader), hash::to_hex(*d));
    res.set_content_provider(size, "application/octet-stream",
                             [fd](size_t offset, size_t length, httplib::DataSink& sink) {
                               std::string buf(std::min<size_t>(length, 1u << 20), '\0');
                               size_t n = fd->pread_some(buf.data(), buf.size(), offset);
                               if (n == 0) return false;
                               return sink.write(buf.data(), n);
                             });
  }

  void list_segments(const httplib::Request& req, httplib::Response& res) {
    auto who = authenticate(req, res);
    if (!who) return;
    Address a = address(req);
    if (!may(*who, {a.source, a.target})) return reply_error(res, 403, "forbidden", "not a stream of this peer");
    uint64_t after = 0, limit = 10000;
    auto num = [&](const char* key, uint64_t& v) {
      if (!req.has_param(key)) return true;
      std::string s = req.get_param_value(key);
      auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
      return ec == std::errc() && p == s.data() + s.size();
    };
    if (!num("after", after) || !num("limit", limit))
      return reply_error(res, 400, "bad_request", "after and limit are non-negative integers");
    std::string body;
    for (const Entry& e : list_stream(o.mailbox, a.source, a.target, after, limit)) {
      json::Object j(body);
      j.unum("sequence", e.sequence).unum("bytes", e.bytes).str("sha256", hash::to_hex(e.sha256));
      j.close();
      body += '\n';
    }
    res.set_content(body, "application/jsonl");
  }

  static void head_json(std::string& body, const std::string& source, const std::string& target, const Head& h) {
    json::Object j(body);
    j.str("source", source).str("target", target).unum("sequence", h.sequence);
    if (h.sequence) j.str("sha256", hash::to_hex(h.sha256));
    if (h.last_ts) j.str("last_ts", timeutil::format_rfc3339(h.last_ts)).num("last_ts_ns", h.last_ts);
    if (h.applied) j.raw("applied", applied_json(*h.applied));
    j.close();
    body += '\n';
  }

  void head(const httplib::Request& req, httplib::Response& res) {
    auto who = authenticate(req, res);
    if (!who) return;
    Address a = address(req);
    if (!may(*who, {a.source, a.target})) return reply_error(res, 403, "forbidden", "not a stream of this peer");
    std::string body;
    head_json(body, a.source, a.target, stream_head(o.mailbox, a.source, a.target));
    res.set_content(body, "application/json");
  }

  // The target region's reader reports where it stands (mailbox.hpp, Applied). The
  // body (a small JSON object) is read only once the peer is known.
  void put_applied(const httplib::Request& req, httplib::Response& res, const httplib::ContentReader& reader) {
    auto who = authenticate(req, res);
    if (!who) return drop_body(req, res, reader);
    Address a = address(req);
    if (*who != "*" && *who != a.target) {
      reply_error(res, 403, "forbidden", "only the target region reports what it applied");
      return drop_body(req, res, reader);
    }
    constexpr size_t kMax = 4096;
    if (auto len = content_length(req); !len || *len > kMax) {
      res.set_header("Connection", "close");
      return reply_error(res, len ? 413 : 411, len ? "too_large" : "length_required",
                         fmt::format("a report is a JSON object of at most {} bytes with a Content-Length", kMax));
    }
    std::string body;
    reader([&](const char* data, size_t n) {
      body.append(data, n);
      return body.size() <= kMax;
    });
    Applied ap;
    if (!parse_applied(body, ap))
      return reply_error(res, 400, "bad_request", R"(the body must be {"sequence":N,"sha256":"…","time":"RFC 3339"})");
    try {
      save_applied(o.mailbox, a.source, a.target, ap);
    } catch (const Error& e) {
      return reply_error(res, 500, "io", e.what());
    }
    res.status = 204;
  }

  void streams(const httplib::Request& req, httplib::Response& res) {
    auto who = authenticate(req, res);
    if (!who) return;
    std::string body;
    for (const auto& [s, t] : list_streams(o.mailbox))
      if (may(*who, {s, t})) head_json(body, s, t, stream_head(o.mailbox, s, t));
    res.set_content(body, "application/jsonl");
  }

  void healthz(httplib::Response& res) {
    if (::access(o.mailbox.c_str(), W_OK | X_OK) != 0)
      return reply_error(res, 503, "unavailable", fmt::format("mailbox '{}' is not writable", o.mailbox.string()));
    res.set_content("ok\n", "text/plain");
  }

  void metrics_page(httplib::Response& res) {
    metrics::Text m;
    m.family("flk_serve_responses_total", "counter", "HTTP responses by status code.");
    {
      std::lock_guard lk(mu);
      for (auto [code, n] : responses) m.sample("flk_serve_responses_total", {{"code", std::to_string(code)}}, double(n));
    }
    m.family("flk_serve_received_bytes_total", "counter", "Segment bytes received.");
    m.sample("flk_serve_received_bytes_total", {}, double(received_bytes));
    m.family("flk_serve_segments_total", "counter", "Segments received, by result.");
    m.sample("flk_serve_segments_total", {{"result", "stored"}}, double(stored));
    m.sample("flk_serve_segments_total", {{"result", "duplicate"}}, double(duplicates));
    m.sample("flk_serve_segments_total", {{"result", "conflict"}}, double(conflicts));
    m.sample("flk_serve_segments_total", {{"result", "rejected"}}, double(rejected));
    m.family("flk_serve_mailbox_sequence", "gauge", "Last sequence stored per stream.");
    try {
      for (const auto& [s, t] : list_streams(o.mailbox))
        m.sample("flk_serve_mailbox_sequence", {{"source", s}, {"target", t}},
                 double(stream_head(o.mailbox, s, t).sequence));
    } catch (const Error&) {
    }
    res.set_content(m.str(), "text/plain; version=0.0.4");
  }
};

Server::Server(ServeOptions o) : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  m.o = std::move(o);
  auto [host, port] = split_host_port(m.o.listen);
  bool tls = !m.o.tls_cert.empty() || !m.o.tls_key.empty();
  if (tls && (m.o.tls_cert.empty() || m.o.tls_key.empty()))
    fail(Code::usage, "TLS needs both a certificate and its key (--tls-cert and --tls-key)");
  if (!m.o.client_ca.empty() && !tls) fail(Code::usage, "--client-ca needs TLS (--tls-cert and --tls-key)");
  if (m.o.tokens.empty() && m.o.client_ca.empty()) {
    if (!m.o.no_auth)
      fail(Code::config,
           "refusing to listen on '{}' without authentication: give --token-file or --client-ca (or, on a loopback "
           "address only, --no-auth)",
           m.o.listen);
    if (!is_loopback_host(host))
      fail(Code::usage, "--no-auth is only accepted on a loopback address, not '{}'", host);
  } else if (m.o.no_auth) {
    fail(Code::usage, "--no-auth contradicts the tokens or client CA given");
  }
  for (const auto& [token, region] : m.o.tokens) m.tokens.emplace_back(token_key(token), region);
  fs::make_dirs(m.o.mailbox);
  if (size_t n = remove_stale_incoming(m.o.mailbox, 3600 * timeutil::kSecond); n && m.o.log)
    m.o.log(fmt::format("removed {} unfinished reception(s) older than an hour from '{}'", n,
                        (m.o.mailbox / kIncomingDir).string()));

  if (tls) {
    for (const auto& f : {m.o.tls_cert, m.o.tls_key, m.o.client_ca})
      if (!f.empty() && ::access(f.c_str(), R_OK) != 0) throw sys_error("cannot read", f, errno, Code::config);
    m.svr = std::make_unique<httplib::SSLServer>(m.o.tls_cert.c_str(), m.o.tls_key.c_str(),
                                                 m.o.client_ca.empty() ? nullptr : m.o.client_ca.c_str());
  } else {
    m.svr = std::make_unique<httplib::Server>();
  }
  if (!m.svr->is_valid())
    fail(Code::config, "cannot load the TLS certificate '{}', key '{}'{}", m.o.tls_cert, m.o.tls_key,
         m.o.client_ca.empty() ? "" : fmt::format(" or client CA '{}'", m.o.client_ca));

  httplib::Server& s = *m.svr;
  size_t threads = std::max<size_t>(1, m.o.threads), queue = std::max<size_t>(1, m.o.queue);
  s.new_task_queue = [threads, queue] { return new BoundedPool(threads, queue); };
  s.set_payload_max_length(m.o.max_body);
  auto secs = static_cast<time_t>(std::max<int64_t>(1, m.o.io_timeout / timeutil::kSecond));
  s.set_read_timeout(secs, 0);
  s.set_write_timeout(secs, 0);
  s.set_keep_alive_timeout(2);
  s.set_keep_alive_max_count(1000);
  // Replies go out as two writes (headers, then body): with Nagle's algorithm the body
  // waits for the ACK of the headers, which a client on a kept-alive connection delays
  // (~40 ms on Linux), so every request on a reused connection would pay that wait.
  s.set_tcp_nodelay(true);

  const std::string region = "([a-z0-9][a-z0-9-]{0,62})";
  const std::string prefix(kApiPrefix);
  s.Post(prefix + "/segments/" + region + "/" + region + "/([0-9]{1,16})",
         [&m](const httplib::Request& rq, httplib::Response& rs, const httplib::ContentReader& rd) {
           m.post_segment(rq, rs, rd);
         });
  s.Get(prefix + "/segments/" + region + "/" + region + "/([0-9]{1,16})",
        [&m](const httplib::Request& rq, httplib::Response& rs) { m.get_segment(rq, rs); });
  s.Get(prefix + "/segments/" + region + "/" + region + "/?",
        [&m](const httplib::Request& rq, httplib::Response& rs) { m.list_segments(rq, rs); });
  s.Get(prefix + "/head/" + region + "/" + region,
        [&m](const httplib::Request& rq, httplib::Response& rs) { m.head(rq, rs); });
  s.Put(prefix + "/applied/" + region + "/" + region,
        [&m](const httplib::Request& rq, httplib::Response& rs, const httplib::ContentReader& rd) {
          m.put_applied(rq, rs, rd);
        });
  s.Get(prefix + "/streams", [&m](const httplib::Request& rq, httplib::Response& rs) { m.streams(rq, rs); });
  s.Get("/healthz", [&m](const httplib::Request&, httplib::Response& rs) { m.healthz(rs); });
  s.Get("/metrics", [&m](const httplib::Request&, httplib::Response& rs) { m.metrics_page(rs); });
  s.set_pre_routing_handler([](const httplib::Request&, httplib::Response&) {
    t_peer.clear();
    t_started = timeutil::monotonic_now();
    t_bytes_in = 0;
    return httplib::Server::HandlerResponse::Unhandled;
  });
  s.set_error_handler([](const httplib::Request&, httplib::Response& res) {
    if (res.body.empty()) {
      const char* reason = res.status == 404 ? "not_found" : res.status == 413 ? "too_large" : "bad_request";
      reply_error(res, res.status, reason, res.status == 404 ? "no such resource" : fmt::format("HTTP {}", res.status));
    }
  });
  s.set_logger([&m](const httplib::Request& req, const httplib::Response& res) {
    {
      std::lock_guard lk(m.mu);
      ++m.responses[res.status];
    }
    if (!m.o.log) return;
    int64_t ms = t_started ? (timeutil::monotonic_now() - t_started) / 1'000'000 : 0;
    std::string path = req.path;
    for (char& c : path)
      if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = '?';
    m.o.log(fmt::format("{}:{} {} {} {} in={} out={} {}ms peer={}", req.remote_addr, req.remote_port, req.method, path,
                        res.status, req.body.size() + t_bytes_in, res.body.size(), ms,
                        t_peer.empty() ? "-" : t_peer));
  });

  m.port = port == 0 ? s.bind_to_any_port(host) : (s.bind_to_port(host, port) ? port : -1);
  if (m.port <= 0) fail(Code::unavailable, "cannot listen on '{}': {}", m.o.listen, std::strerror(errno));
}

Server::~Server() = default;

int Server::port() const { return impl_->port; }

void Server::run() {
  if (!impl_->svr->listen_after_bind() && impl_->svr->is_running())
    fail(Code::io, "the server on '{}' stopped unexpectedly", impl_->o.listen);
}

void Server::stop() { impl_->svr->stop(); }

}  // namespace flk::transport
