// Hashes: SHA-256 (OpenSSL) for segment and record digests, XXH3-64 (libxxhash) for
// record frame checksums. The only code that touches either library.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>

namespace flk::hash {

using Digest = std::array<uint8_t, 32>;

// Incremental SHA-256. Not thread-safe; copyable (the state is cloned).
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256& o);
  Sha256& operator=(const Sha256& o);

  void update(const void* data, size_t n);
  void update(std::string_view s) { update(s.data(), s.size()); }
  Digest finish() const;  // the digest so far; the object can keep absorbing

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

Digest sha256(std::string_view data);
std::string to_hex(const Digest& d);
std::string to_hex(const void* data, size_t n);
// Parses 64 hex digits; false when malformed.
bool from_hex(std::string_view hex, Digest& out);
bool is_zero(const Digest& d);

uint64_t xxh3_64(const void* data, size_t n);
// XXH3-128 as (high, low) halves.
std::pair<uint64_t, uint64_t> xxh3_128(const void* data, size_t n);

}  // namespace flk::hash
