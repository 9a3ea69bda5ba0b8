#include "flk/util/hash.hpp"

#include <openssl/evp.h>
#include <xxhash.h>

#include <stdexcept>

namespace flk::hash {

struct Sha256::Impl {
  EVP_MD_CTX* ctx = nullptr;
};

Sha256::Sha256() : impl_(std::make_unique<Impl>()) {
  impl_->ctx = EVP_MD_CTX_new();
  if (!impl_->ctx || EVP_DigestInit_ex(impl_->ctx, EVP_sha256(), nullptr) != 1)
    throw std::runtime_error("OpenSSL: cannot initialise SHA-256");
}

Sha256::~Sha256() {
  if (impl_) EVP_MD_CTX_free(impl_->ctx);
}

Sha256::Sha256(const Sha256& o) : impl_(std::make_unique<Impl>()) {
  impl_->ctx = EVP_MD_CTX_new();
  if (!impl_->ctx || EVP_MD_CTX_copy_ex(impl_->ctx, o.impl_->ctx) != 1)
    throw std::runtime_error("OpenSSL: cannot copy SHA-256 state");
}

Sha256& Sha256::operator=(const Sha256& o) {
  if (this != &o) {
    if (EVP_MD_CTX_copy_ex(impl_->ctx, o.impl_->ctx) != 1) throw std::runtime_error("OpenSSL: cannot copy SHA-256 state");
  }
  return *this;
}

void Sha256::update(const void* data, size_t n) { EVP_DigestUpdate(impl_->ctx, data, n); }

Digest Sha256::finish() const {
  EVP_MD_CTX* c = EVP_MD_CTX_new();
  EVP_MD_CTX_copy_ex(c, impl_->ctx);
  Digest d{};
  unsigned int len = 0;
  EVP_DigestFinal_ex(c, d.data(), &len);
  EVP_MD_CTX_free(c);
  return d;
}

Digest sha256(std::string_view data) {
  // One context per thread, reused: EVP_Digest() sets one up and frees it per call,
  // which costs more than hashing a record.
  // The algorithm is fetched once: with OpenSSL 3 an implicit fetch per
  // initialisation (EVP_sha256()) costs more than the hash of a small record.
  struct Ctx {
    EVP_MD* md = EVP_MD_fetch(nullptr, "SHA256", nullptr);
    EVP_MD_CTX* c = EVP_MD_CTX_new();
    ~Ctx() {
      EVP_MD_CTX_free(c);
      EVP_MD_free(md);
    }
  };
  thread_local Ctx ctx;
  Digest d{};
  unsigned int len = 0;
  if (!ctx.c || !ctx.md || EVP_DigestInit_ex2(ctx.c, ctx.md, nullptr) != 1 ||
      EVP_DigestUpdate(ctx.c, data.data(), data.size()) != 1 || EVP_DigestFinal_ex(ctx.c, d.data(), &len) != 1)
    throw std::runtime_error("OpenSSL: SHA-256 failed");
  return d;
}

std::string to_hex(const void* data, size_t n) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out(n * 2, '0');
  auto p = static_cast<const uint8_t*>(data);
  for (size_t i = 0; i < n; ++i) {
    out[2 * i] = kHex[p[i] >> 4];
    out[2 * i + 1] = kHex[p[i] & 15];
  }
  return out;
}

std::string to_hex(const Digest& d) { return to_hex(d.data(), d.size()); }

bool from_hex(std::string_view hex, Digest& out) {
  if (hex.size() != 64) return false;
  auto nib = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  for (size_t i = 0; i < 32; ++i) {
    int hi = nib(hex[2 * i]), lo = nib(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return false;
    out[i] = static_cast<uint8_t>(hi << 4 | lo);
  }
  return true;
}

bool is_zero(const Digest& d) {
  for (uint8_t b : d)
    if (b) return false;
  return true;
}

uint64_t xxh3_64(const void* data, size_t n) { return XXH3_64bits(data, n); }

std::pair<uint64_t, uint64_t> xxh3_128(const void* data, size_t n) {
  XXH128_hash_t h = XXH3_128bits(data, n);
  return {h.high64, h.low64};
}

}  // namespace flk::hash
