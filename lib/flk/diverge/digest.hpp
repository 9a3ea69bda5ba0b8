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
// File format, version 2 (the one written): a JSON header line, then a binary body.
//
//   {"format":"flk-diverge-digest","version":2,"buckets":65536,"records":5000000,
//    "region":"us-east-1","store":"sqlite:///var/lib/flk/dedup.db","created":"…",
//    "body_bytes":1114112,"body_sha256":"…(64 hex digits)"}\n
//   <body>
//
// The body holds every bucket 0..buckets-1 in order: its count as an unsigned LEB128
// varint (7 bits a byte, low group first, the high bit set on every byte but the last),
// then, when the count is not zero, its sum as 16 bytes: hi then lo, each big-endian.
// An empty bucket is one byte, a bucket of fewer than 128 pcs_ids 17. body_bytes and
// body_sha256 (the SHA-256 of the body) let a reader refuse a truncated, extended or
// altered body before it parses it.
//
// Version 1 (text, still read): the same header with "version":1 and without the body
// fields, then one line "BUCKET COUNT SUM" (SUM: 32 hex digits) per non-empty bucket,
// in increasing order; an absent bucket is empty.
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

// The digest in format version 2 above (65536 buckets: about 1.1 MB).
std::string digest_bytes(const Digest& d);
// Reads version 2, or version 1. Throws Error(data) naming the file and what is wrong
// (the header line, the body's length or checksum, the bucket) when malformed.
Digest read_digest(const std::filesystem::path& file);  // "-": standard input

// The buckets whose count or sum differ, in order. Error(usage) when the two digests
// have different bucket counts.
std::vector<uint32_t> compare(const Digest& a, const Digest& b);

// What extract_buckets() wrote.
struct Extract {
  uint64_t records = 0;   // stored winners copied
  uint64_t evidence = 0;  // evidence rows copied
  uint64_t bytes = 0;     // the size of the file written
};

// Copies the stored winners and the evidence of the pcs_ids in `buckets` (of
// bucket_count) from a store into a new SQLite store file at `output`: what a region
// sends a peer after `compare`, so that the peer scans (or reconciles) those buckets
// against its own store — the rows of the buckets cross the WAN, not the store. The
// file appears whole or not at all (built beside it under a temporary name, synced,
// linked as `output`, the directory synced). Error(cant_create) when `output` exists.
// Memory: the rows copied (the buckets' share of the store), not the store.
Extract extract_buckets(store::Store& from, const std::vector<uint32_t>& buckets, uint32_t bucket_count,
                        const std::filesystem::path& output);

// The mark extract_buckets() leaves in the file (store meta key "extract"):
// {"bucket_count":N,"buckets":K,"list_sha256":"…"}, the SHA-256 over the bucket numbers
// in increasing order, each followed by a newline.
std::string extract_mark(std::vector<uint32_t> buckets, uint32_t bucket_count);
// Error(usage) when `s` is an extract (it has the mark) and `buckets` (null: all) and
// bucket_count are not the list it was made from: compared over other buckets, every
// pcs_id it does not hold would be found missing.
void check_extract(store::Store& s, std::string_view region, const std::vector<uint32_t>* buckets,
                   uint32_t bucket_count);

// Parses --buckets: "1,5,9" or "@FILE" (each line a bucket number, or a JSON object
// with a "bucket" member: compare's output). Throws Error(usage) naming the bad item.
std::vector<uint32_t> parse_bucket_list(std::string_view arg, uint32_t buckets);

}  // namespace flk::diverge
