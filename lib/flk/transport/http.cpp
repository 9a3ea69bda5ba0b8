#include "flk/transport/http.hpp"

#include <fcntl.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <functional>
#include <mutex>

#include <curl/curl.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "flk/util/error.hpp"
#include "flk/util/fs.hpp"

namespace flk::transport {

namespace stdfs = std::filesystem;

namespace {

constexpr size_t kMaxResponseBody = 1u << 20;  // error bodies, listings: bounded

struct CurlGlobal {
  CurlGlobal() { curl_global_init(CURL_GLOBAL_DEFAULT); }
};

// The URL without user:password@ for messages.
std::string mask_userinfo(std::string_view url) {
  size_t scheme = url.find("://");
  if (scheme == std::string_view::npos) return std::string(url);
  size_t host = scheme + 3;
  size_t end = url.find('/', host);
  size_t at = url.substr(0, end).rfind('@');
  if (at == std::string_view::npos || at < host) return std::string(url);
  return fmt::format("{}***@{}", url.substr(0, host), url.substr(at + 1));
}

struct Headers {
  Headers() = default;
  Headers(const Headers&) = delete;
  Headers& operator=(const Headers&) = delete;
  curl_slist* list = nullptr;
  ~Headers() { curl_slist_free_all(list); }
  void add(const std::string& h) {
    curl_slist* l = curl_slist_append(list, h.c_str());
    if (!l) fail(Code::internal, "out of memory building HTTP headers");
    list = l;
  }
};

class HttpTransport final : public Transport {
 public:
  HttpTransport(std::string_view url, Options options) : options_(std::move(options)) {
    static CurlGlobal global;
    base_ = std::string(url);
    while (base_.ends_with('/')) base_.pop_back();
    shown_ = mask_userinfo(base_);
    curl_ = curl_easy_init();
    if (!curl_) fail(Code::internal, "cannot initialise libcurl");
  }
  ~HttpTransport() override { curl_easy_cleanup(curl_); }

  Put put(const Address& a, const stdfs::path& file, const hash::Digest& sha256) override {
    check_address(a);
    fs::Fd in = fs::Fd::open(file.string(), O_RDONLY);
    uint64_t size = in.size();
    Request rq;
    prepare(rq, segment_url(a));
    rq.headers.add("Content-Type: application/octet-stream");
    rq.headers.add(fmt::format("{}: {}", kDigestHeader, hash::to_hex(sha256)));
    rq.headers.add("Expect:");  // send at once: a refusal costs one body, a wait costs every POST a round trip
    curl_easy_setopt(curl_, CURLOPT_POST, 1L);
    curl_easy_setopt(curl_, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(size));
    curl_easy_setopt(curl_, CURLOPT_READFUNCTION, &HttpTransport::read_cb);
    curl_easy_setopt(curl_, CURLOPT_READDATA, &in);
    long status = perform(rq, "POST");
    switch (status) {
      case 201: return Put::stored;
      case 200: return Put::duplicate;
      case 409: return Put::conflict;
      default: refused(rq, "POST", status);
    }
  }

  std::vector<Entry> list(std::string_view source, std::string_view target, uint64_t after) override {
    std::vector<Entry> out;
    get_json_lines(fmt::format("{}{}/segments/{}/{}?after={}", base_, kApiPrefix, source, target, after),
                   "listing line without sequence, bytes and sha256", [&](const nlohmann::json& j) {
                     Entry e;
                     e.sequence = j.at("sequence").get<uint64_t>();
                     e.bytes = j.at("bytes").get<uint64_t>();
                     if (!hash::from_hex(j.at("sha256").get<std::string>(), e.sha256)) throw std::invalid_argument("sha256");
                     out.push_back(e);
                   });
    return out;
  }

  Head head(std::string_view source, std::string_view target) override {
    Head h;
    int lines = 0;
    get_json_lines(fmt::format("{}{}/head/{}/{}", base_, kApiPrefix, source, target), "head without sequence and sha256",
                   [&](const nlohmann::json& j) {
                     if (lines++) throw std::invalid_argument("more than one head");
                     h.sequence = j.at("sequence").get<uint64_t>();
                     h.last_ts = j.value("last_ts_ns", int64_t{0});
                     if (h.sequence && !hash::from_hex(j.at("sha256").get<std::string>(), h.sha256))
                       throw std::invalid_argument("sha256");
                     if (j.contains("applied")) {
                       Applied a;
                       if (!parse_applied(j["applied"].dump(), a)) throw std::invalid_argument("applied");
                       h.applied = a;
                     }
                   });
    return h;
  }

  void report_applied(std::string_view source, std::string_view target, const Applied& a) override {
    check_address({std::string(source), std::string(target), 1});
    Request rq;
    prepare(rq, fmt::format("{}{}/applied/{}/{}", base_, kApiPrefix, source, target));
    std::string body = applied_json(a);
    rq.headers.add("Content-Type: application/json");
    curl_easy_setopt(curl_, CURLOPT_CUSTOMREQUEST, "PUT");
    curl_easy_setopt(curl_, CURLOPT_POSTFIELDS, body.c_str());
    curl_easy_setopt(curl_, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size()));
    long status = perform(rq, "PUT");
    if (status != 204 && status != 200) refused(rq, "PUT", status);
  }

  std::vector<std::pair<std::string, std::string>> streams() override {
    std::vector<std::pair<std::string, std::string>> out;
    get_json_lines(fmt::format("{}{}/streams", base_, kApiPrefix), "stream line without source and target",
                   [&](const nlohmann::json& j) {
                     out.emplace_back(j.at("source").get<std::string>(), j.at("target").get<std::string>());
                   });
    std::sort(out.begin(), out.end());
    return out;
  }

  hash::Digest get(const Address& a, const stdfs::path& dest) override {
    check_address(a);
    fs::Fd out = fs::Fd::open(dest.string(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    Request rq;
    prepare(rq, segment_url(a));
    rq.sink = &out;
    long status = perform(rq, "GET");
    if (status != 200) refused(rq, "GET", status);
    hash::Digest d;
    if (!hash::from_hex(rq.digest_header, d)) bad_reply(rq, fmt::format("no valid {} header", kDigestHeader));
    return d;
  }

  Health health() override {
    Request rq;
    prepare(rq, base_ + "/healthz", false);
    Health h;
    h.status = perform(rq, "GET");
    h.ok = *h.status == 200;
    if (!h.ok) {
      std::string why = rq.body.substr(0, 300);
      try {
        auto j = nlohmann::json::parse(rq.body);
        if (j.contains("error")) why = j["error"].get<std::string>();
      } catch (const std::exception&) {
      }
      while (!why.empty() && (why.back() == '\n' || why.back() == '\r')) why.pop_back();
      h.detail = fmt::format("GET '{}': {} {}", mask_userinfo(rq.url), *h.status, why);
    }
    return h;
  }

  std::string describe() const override { return shown_; }
  void interrupt() override { interrupted_ = true; }

 private:
  struct Request {
    std::string url;
    Headers headers;
    std::string body;          // the response body (bounded) unless sink is set
    fs::Fd* sink = nullptr;    // GET of a segment: a 200 body goes here
    CURL* curl = nullptr;
    std::string digest_header; // X-Flk-Sha256 of the response
    std::string sink_error;
    char error[CURL_ERROR_SIZE] = {0};
  };

  std::string segment_url(const Address& a) const {
    return fmt::format("{}{}/segments/{}/{}/{}", base_, kApiPrefix, a.source, a.target, a.sequence);
  }

  // Sets up the handle for one request (rq must stay where it is until perform());
  // the bearer token is presented unless !with_token.
  void prepare(Request& rq, std::string url, bool with_token = true) {
    if (interrupted_) fail(Code::temp_fail, "{}: interrupted", shown_);
    rq.url = std::move(url);
    rq.curl = curl_;
    curl_easy_reset(curl_);  // keeps the live connection, the TLS session and the DNS cache
    auto ms = [](timeutil::Nanos n) { return static_cast<long>(n / 1'000'000); };
    curl_easy_setopt(curl_, CURLOPT_URL, rq.url.c_str());
    curl_easy_setopt(curl_, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(curl_, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl_, CURLOPT_CONNECTTIMEOUT_MS, ms(options_.connect_timeout));
    curl_easy_setopt(curl_, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(curl_, CURLOPT_LOW_SPEED_TIME, std::max(1L, ms(options_.stall_timeout) / 1000));
    if (options_.operation_timeout > 0) curl_easy_setopt(curl_, CURLOPT_TIMEOUT_MS, ms(options_.operation_timeout));
    curl_easy_setopt(curl_, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(curl_, CURLOPT_ERRORBUFFER, rq.error);
    curl_easy_setopt(curl_, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(curl_, CURLOPT_SSL_VERIFYHOST, 2L);
    if (!options_.ca_file.empty()) curl_easy_setopt(curl_, CURLOPT_CAINFO, options_.ca_file.c_str());
    if (!options_.cert_file.empty()) curl_easy_setopt(curl_, CURLOPT_SSLCERT, options_.cert_file.c_str());
    if (!options_.key_file.empty()) curl_easy_setopt(curl_, CURLOPT_SSLKEY, options_.key_file.c_str());
    curl_easy_setopt(curl_, CURLOPT_NOPROGRESS, 0L);
    moved_at_ = timeutil::monotonic_now();
    moved_ = 0;
    stalled_ = false;
    curl_easy_setopt(curl_, CURLOPT_XFERINFOFUNCTION, &HttpTransport::progress_cb);
    curl_easy_setopt(curl_, CURLOPT_XFERINFODATA, this);
    curl_easy_setopt(curl_, CURLOPT_WRITEFUNCTION, &HttpTransport::write_cb);
    curl_easy_setopt(curl_, CURLOPT_HEADERFUNCTION, &HttpTransport::header_cb);
    curl_easy_setopt(curl_, CURLOPT_USERAGENT, "flk/" FLK_VERSION);
    if (with_token && !options_.token.empty()) rq.headers.add("Authorization: Bearer " + options_.token);
  }

  // Runs the request; returns the HTTP status. Transport failures throw.
  long perform(Request& rq, std::string_view method) {
    curl_easy_setopt(curl_, CURLOPT_WRITEDATA, &rq);
    curl_easy_setopt(curl_, CURLOPT_HEADERDATA, &rq);
    curl_easy_setopt(curl_, CURLOPT_HTTPHEADER, rq.headers.list);
    CURLcode rc = curl_easy_perform(curl_);
    if (!rq.sink_error.empty()) fail(Code::io, "{}", rq.sink_error);
    if (rc != CURLE_OK) {
      std::string why = rq.error[0] ? rq.error : curl_easy_strerror(rc);
      if (rc == CURLE_ABORTED_BY_CALLBACK && stalled_)
        why = fmt::format("no byte moved for {} (stalled)", timeutil::format_duration(options_.stall_timeout));
      std::string msg = fmt::format("{} '{}': {}", method, mask_userinfo(rq.url), why);
      throw Error(classify(rc, why), msg);
    }
    long status = 0;
    curl_easy_getinfo(curl_, CURLINFO_RESPONSE_CODE, &status);
    return status;
  }

  static Code classify(CURLcode rc, std::string_view why) {
    switch (rc) {
      case CURLE_PEER_FAILED_VERIFICATION:
      case CURLE_SSL_CERTPROBLEM:
      case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
        return Code::no_perm;
      case CURLE_SSL_CACERT_BADFILE:
      case CURLE_UNSUPPORTED_PROTOCOL:
      case CURLE_URL_MALFORMAT:
        return Code::config;
      default:
        break;
    }
    // The server refusing our certificate shows as a TLS alert on the handshake or the
    // first read (TLS 1.3), whatever the curl code.
    if (why.find("alert") != std::string_view::npos &&
        (why.find("certificate") != std::string_view::npos || why.find("unknown ca") != std::string_view::npos))
      return Code::no_perm;
    return Code::temp_fail;
  }

  [[noreturn]] void refused(const Request& rq, std::string_view method, long status) {
    std::string why = rq.body.substr(0, 300), reason;
    try {
      auto j = nlohmann::json::parse(rq.body);
      if (j.contains("error")) why = j["error"].get<std::string>();
      if (j.contains("reason")) reason = j["reason"].get<std::string>();
    } catch (const std::exception&) {
    }
    while (!why.empty() && (why.back() == '\n' || why.back() == '\r')) why.pop_back();
    std::string msg = fmt::format("{} '{}': {} {}", method, mask_userinfo(rq.url), status, why);
    Code code = Code::protocol;
    if (status == 401 || status == 403) code = Code::no_perm;
    else if (status == 400) code = reason == "digest_mismatch" ? Code::temp_fail : Code::data;
    else if (status == 408 || status == 429 || status >= 500) code = Code::temp_fail;
    throw Error(code, msg);
  }

  [[noreturn]] void bad_reply(const Request& rq, std::string_view why) {
    fail(Code::protocol, "GET '{}': malformed reply: {}", mask_userinfo(rq.url), why);
  }

  nlohmann::json parse_json(const Request& rq, std::string_view text) {
    try {
      return nlohmann::json::parse(text);
    } catch (const std::exception& e) {
      bad_reply(rq, e.what());
    }
  }

  // GETs url and calls fn with each JSON line of its 200 reply; a line that is not JSON,
  // or that fn cannot use (it throws), is a protocol error saying `what`.
  void get_json_lines(std::string url, std::string_view what, const std::function<void(const nlohmann::json&)>& fn) {
    Request rq;
    prepare(rq, std::move(url));
    long status = perform(rq, "GET");
    if (status != 200) refused(rq, "GET", status);
    std::string_view body = rq.body;
    while (!body.empty()) {
      size_t nl = body.find('\n');
      std::string_view line = body.substr(0, nl);
      body = nl == std::string_view::npos ? std::string_view{} : body.substr(nl + 1);
      if (line.empty()) continue;
      auto j = parse_json(rq, line);
      try {
        fn(j);
      } catch (const std::exception&) {
        bad_reply(rq, what);
      }
    }
  }

  static size_t read_cb(char* buf, size_t size, size_t n, void* data) {
    try {
      return static_cast<fs::Fd*>(data)->read_some(buf, size * n);
    } catch (const std::exception&) {
      return CURL_READFUNC_ABORT;
    }
  }

  static size_t write_cb(char* buf, size_t size, size_t n, void* data) {
    auto* rq = static_cast<Request*>(data);
    size_t len = size * n;
    long status = 0;
    curl_easy_getinfo(rq->curl, CURLINFO_RESPONSE_CODE, &status);
    if (rq->sink && status == 200) {
      try {
        rq->sink->write_all(std::string_view(buf, len));
      } catch (const std::exception& e) {
        rq->sink_error = e.what();
        return 0;
      }
      return len;
    }
    if (rq->body.size() + len > kMaxResponseBody) return 0;
    rq->body.append(buf, len);
    return len;
  }

  static size_t header_cb(char* buf, size_t size, size_t n, void* data) {
    auto* rq = static_cast<Request*>(data);
    std::string_view h(buf, size * n);
    size_t colon = h.find(':');
    if (colon != std::string_view::npos) {
      std::string_view name = h.substr(0, colon);
      if (name.size() == kDigestHeader.size() &&
          std::equal(name.begin(), name.end(), kDigestHeader.begin(),
                     [](char a, char b) { return std::tolower(a) == std::tolower(b); })) {
        std::string_view v = h.substr(colon + 1);
        while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
        while (!v.empty() && (v.back() == '\r' || v.back() == '\n' || v.back() == ' ')) v.remove_suffix(1);
        rq->digest_header = std::string(v);
      }
    }
    return size * n;
  }

  // Called at least once a second during a transfer. CURLOPT_LOW_SPEED_TIME averages the
  // speed over several seconds, so after a burst a stalled peer goes unnoticed for up to
  // ~6 s more than stall_timeout; this watches for "no byte moved" itself.
  static int progress_cb(void* data, curl_off_t, curl_off_t dlnow, curl_off_t, curl_off_t ulnow) {
    auto* self = static_cast<HttpTransport*>(data);
    if (self->interrupted_) return 1;
    int64_t now = timeutil::monotonic_now();
    if (dlnow + ulnow != self->moved_) {
      self->moved_ = dlnow + ulnow;
      self->moved_at_ = now;
    } else if (self->options_.stall_timeout > 0 && now - self->moved_at_ >= self->options_.stall_timeout) {
      self->stalled_ = true;
      return 1;
    }
    return 0;
  }

  Options options_;
  std::string base_, shown_;
  CURL* curl_ = nullptr;
  std::atomic<bool> interrupted_{false};
  int64_t moved_at_ = 0;    // when a byte last moved in the current request
  curl_off_t moved_ = 0;    // bytes moved so far (down + up)
  bool stalled_ = false;    // the current request was aborted as stalled
};

}  // namespace

std::unique_ptr<Transport> open_http(std::string_view url, const Options& options) {
  std::string_view rest = url.substr(url.find("://") + 3);
  if (rest.empty() || rest.front() == '/')
    fail(Code::usage, "invalid transport URL '{}': no host", mask_userinfo(url));
  return std::make_unique<HttpTransport>(url, options);
}

}  // namespace flk::transport
