// Helpers shared by the unit tests.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>

#include "flk/core/record.hpp"
#include "flk/store/store.hpp"

namespace flk::test {

// A fresh temporary directory, removed with everything in it on destruction.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "flk-unit.XXXXXX").string();
    if (!::mkdtemp(tmpl.data())) std::abort();
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& s) const { return path_ / s; }

 private:
  std::filesystem::path path_;
};

inline Record make_record(int i, std::string region = "us-east-1", Outcome o = Outcome::accepted) {
  Record r;
  r.pcs_id = "pcs-" + std::to_string(i);
  r.tenant_id = "tenant-" + std::to_string(i % 3);
  r.outcome = o;
  r.ts = 1'700'000'000'000'000'000 + static_cast<int64_t>(i) * 1000;
  r.region = std::move(region);
  if (i % 2) r.params = "tol=0.01";
  if (i % 3 == 0) r.payload = R"({"n":)" + std::to_string(i) + "}";
  return r;
}

}  // namespace flk::test

#include <fstream>
#include <random>
#include <utility>
#include <vector>

namespace flk::test {

// The store URLs to run the common store tests against: SQLite in `dir` always, and
// PostgreSQL / Redis when the test servers run ($FLK_TEST_SERVERS/<name>.url, written
// by tests/servers/start.sh). Each call gives fresh, isolated stores (a new file, a
// new PostgreSQL schema, a new Redis key prefix).
inline std::vector<std::pair<std::string, std::string>> store_urls(const std::filesystem::path& dir) {
  static int counter = 0;
  ++counter;
  std::string tag = "t" + std::to_string(::getpid()) + "_" + std::to_string(counter);
  std::vector<std::pair<std::string, std::string>> out;
  out.emplace_back("sqlite", "sqlite://" + (dir / (tag + ".db")).string());
  const char* servers = std::getenv("FLK_TEST_SERVERS");
  if (!servers) return out;
  auto read_url = [&](const char* name) -> std::string {
    std::ifstream f(std::filesystem::path(servers) / (std::string(name) + ".url"));
    std::string url;
    std::getline(f, url);
    return url;
  };
  auto with = [](const std::string& url, const std::string& param) {
    return url + (url.find('?') == std::string::npos ? "?" : "&") + param;
  };
  if (std::string pg = read_url("postgres"); !pg.empty()) out.emplace_back("postgres", with(pg, "schema=" + tag));
  if (std::string rd = read_url("redis"); !rd.empty()) out.emplace_back("redis", with(rd, "prefix=" + tag));
  return out;
}

}  // namespace flk::test

namespace flk::test {

// A record with the fields the store tests vary.
inline Record rec(std::string id, Outcome o, int64_t ts, std::string region = "us-east-1", std::string tenant = "t1") {
  Record r;
  r.pcs_id = std::move(id);
  r.tenant_id = std::move(tenant);
  r.outcome = o;
  r.ts = ts;
  r.region = std::move(region);
  return r;
}

// A TCP port on 127.0.0.1 that nothing listens on (bound, then released).
inline int closed_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) std::abort();
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0)
    std::abort();
  ::close(fd);
  return ntohs(a.sin_port);
}

// Everything a store holds, in scan order.
inline std::vector<store::Stored> contents(store::Store& s) {
  std::vector<store::Stored> out;
  s.scan([&](const store::Stored& st) { out.push_back(st); });
  return out;
}

}  // namespace flk::test
