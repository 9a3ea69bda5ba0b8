// Bucketed store digests (flk-diverge(1) digest / compare): a few megabytes that say
// which parts of two dedup stores differ, so that regions over a WAN exchange digests,
// not their stores, and a scan then compares only the buckets that differ.
//
// A pcs_id's bucket is XXH3-64(pcs_id) mod N. A bucket's digest is the number of
// pcs_ids in it and the sum, modulo 2^128, of XXH3-128 over each one's
// (pcs_id, outcome, ts, origin region) — a sum, so the order in which a store yields
// its records does not matter, and stores on different back ends compare alike.
// The hash is not cryptographic: a digest finds accidents (divergence, lost rows), not
// forgery — the WORM ledger is the tamper evidence.
//
// File format (text, one line each):
//
//   {"format":"flk-diverge-digest","version":1,"buckets":65536,"records":5000000,
//    "region":"us-east-1","store":"sqlite:///var/lib/flk/dedup.db","created":"…"}
//   17 76 9c1e…(32 hex digits)
//   …
//
// after the header, one line per non-empty bucket in increasing order: the bucket,
// its count, its sum in hex. An absent bucket is empty.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "flk/store/store.hpp"

namespace flk::diverge {

constexpr uint32_t kDefaultBuckets = 65536;
constexpr uint32_t kMaxBuckets = 1u << 24;

uint32_t bucket_of(std::string_view pcs_id, uint32_t buckets);

struct Bucket {
  uint64_t count = 0;
  uint64_t hi = 0, lo = 0;  // the sum, modulo 2^128
  bool operator==(const Bucket&) const = default;
};

struct Digest {
  uint32_t buckets = kDefaultBuckets;
  uint64_t records = 0;
  std::string region, store;  // what it describes (informational)
  int64_t created = 0;
  std::vector<Bucket> b;      // buckets entries
};

// Adds one stored winner to a digest (b sized to buckets).
void add(Digest& d, const store::Store::KeyView& k);
// The digest of a whole store (one scan; memory: the buckets).
Digest digest_store(store::Store& s, uint32_t buckets, const std::string& region);

// The digest in the text format above (a few MB: 65536 buckets are some 2.8 MB).
std::string digest_text(const Digest& d);
// Throws Error(data) naming `name` and the line when malformed.
Digest read_digest(const std::filesystem::path& file);

// The buckets whose count or sum differ, in order. Error(usage) when the two digests
// have different bucket counts.
std::vector<uint32_t> compare(const Digest& a, const Digest& b);

// Parses --buckets: "1,5,9" or "@FILE" (each line a bucket number, or a JSON object
// with a "bucket" member: compare's output). Throws Error(usage) naming the bad item.
std::vector<uint32_t> parse_bucket_list(std::string_view arg, uint32_t buckets);

}  // namespace flk::diverge
