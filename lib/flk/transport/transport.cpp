#include "flk/transport/transport.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>

#include <fmt/format.h>

#include "flk/transport/http.hpp"
#include "flk/transport/stream.hpp"
#include "flk/util/error.hpp"
#include "flk/wal/dir.hpp"

namespace flk::transport {

namespace stdfs = std::filesystem;

namespace {

// file:///dir — the mailbox tree itself.
class FileTransport final : public Transport {
 public:
  explicit FileTransport(stdfs::path dir) : dir_(std::move(dir)) {}

  Put put(const Address& a, const stdfs::path& file, const hash::Digest& sha256) override {
    check();
    Incoming in(dir_, a);
    in.copy_from(file);
    return in.commit(sha256);
  }

  std::vector<Entry> list(std::string_view source, std::string_view target, uint64_t after) override {
    check();
    return list_stream(dir_, source, target, after);
  }

  Head head(std::string_view source, std::string_view target) override {
    check();
    return stream_head(dir_, source, target);
  }

  std::vector<std::pair<std::string, std::string>> streams() override {
    check();
    return list_streams(dir_);
  }

  void report_applied(std::string_view source, std::string_view target, const Applied& a) override {
    check();
    save_applied(dir_, source, target, a);
  }

  hash::Digest get(const Address& a, const stdfs::path& dest) override {
    check();
    check_address(a);
    stdfs::path p = segment_path(dir_, a);
    auto d = wal::read_digest_sidecar(p);
    std::error_code ec;
    stdfs::copy_file(p, dest, stdfs::copy_options::overwrite_existing, ec);
    if (ec) throw sys_error("cannot copy segment", p.string(), ec.value());
    return d ? *d : wal::file_digest(dest);
  }

  Health health() override {
    check();
    Health h;
    std::error_code ec;
    if (!stdfs::is_directory(dir_, ec)) h.detail = fmt::format("mailbox '{}' is not a directory", dir_.string());
    else if (::access(dir_.c_str(), W_OK | X_OK) != 0)
      h.detail = fmt::format("mailbox '{}' is not writable: {}", dir_.string(), std::strerror(errno));
    else h.ok = true;
    return h;
  }

  std::optional<stdfs::path> local_path(const Address& a) override {
    check_address(a);
    return segment_path(dir_, a);
  }

  std::string describe() const override { return "file://" + dir_.string(); }
  void interrupt() override { interrupted_ = true; }

 private:
  void check() const {
    if (interrupted_) fail(Code::temp_fail, "{}: interrupted", describe());
  }
  stdfs::path dir_;
  std::atomic<bool> interrupted_{false};
};

// "-": framed segments on stdout; there is nothing to list or fetch.
class StreamTransport final : public Transport {
 public:
  Put put(const Address& a, const stdfs::path& file, const hash::Digest& sha256) override {
    check_address(a);
    std::error_code ec;
    uint64_t size = stdfs::file_size(file, ec);
    if (ec) throw sys_error("cannot read", file.string(), ec.value());
    write_stream_segment(STDOUT_FILENO, {a, size, sha256}, file);
    return Put::stored;
  }
  std::vector<Entry> list(std::string_view, std::string_view, uint64_t) override { unsupported(); }
  Head head(std::string_view, std::string_view) override { unsupported(); }
  std::vector<std::pair<std::string, std::string>> streams() override { unsupported(); }
  hash::Digest get(const Address&, const stdfs::path&) override { unsupported(); }
  void report_applied(std::string_view, std::string_view, const Applied&) override { unsupported(); }
  Health health() override { unsupported(); }
  std::string describe() const override { return "-"; }
  void interrupt() override {}

 private:
  [[noreturn]] static void unsupported() {
    fail(Code::usage, "transport '-' is a one-way stream: it cannot be listed or fetched from");
  }
};

}  // namespace

std::unique_ptr<Transport> open(std::string_view url, const Options& options) {
  if (url == "-") return std::make_unique<StreamTransport>();
  if (url.starts_with("file://")) {
    std::string_view rest = url.substr(7);
    if (rest.starts_with("localhost/")) rest.remove_prefix(9);
    if (!rest.starts_with('/') || rest.find("/../") != std::string_view::npos || rest.ends_with("/.."))
      fail(Code::usage, "invalid transport URL '{}': expected file:///ABSOLUTE/DIR", url);
    return std::make_unique<FileTransport>(stdfs::path(rest));
  }
  if (url.starts_with("http://") || url.starts_with("https://")) return open_http(url, options);
  fail(Code::usage, "invalid transport URL '{}': expected file:///DIR, http(s)://HOST:PORT or -", url);
}

std::string read_token_file(const stdfs::path& file) {
  struct stat st{};
  if (::stat(file.c_str(), &st) != 0) throw sys_error("cannot read token file", file.string(), errno, Code::config);
  if (st.st_mode & S_IROTH)
    fail(Code::config, "token file '{}' is readable by everyone (mode {:o}): chmod o-r it", file.string(),
         st.st_mode & 07777);
  std::string text;
  try {
    text = fs::read_file(file);
  } catch (const Error& e) {
    throw Error(Code::config, e.what());
  }
  std::string token = text.substr(0, text.find('\n'));
  while (!token.empty() && (token.back() == '\r' || token.back() == ' ' || token.back() == '\t')) token.pop_back();
  if (token.empty()) fail(Code::config, "token file '{}' is empty", file.string());
  for (char c : token)
    if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f)
      fail(Code::config, "token file '{}': the token holds white space or control characters", file.string());
  return token;
}

}  // namespace flk::transport
