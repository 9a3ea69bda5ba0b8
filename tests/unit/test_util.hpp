// Helpers shared by the unit tests.
#pragma once

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>

#include "flk/core/record.hpp"

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
