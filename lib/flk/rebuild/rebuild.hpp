// Rebuilding a dedup store from the WAL (flk-rebuild-dedup(1)).
//
// The sources are the region's own inbox WAL and, optionally, the segment mailbox that
// peers shipped to it (MAILBOX/<source>/<target>/<16-digit seq>.wal). Every record is
// reduced by first write wins (store.hpp). Two ways to write the result:
//  - fresh (the default): sort every record by pcs_id (an external merge sort: memory
//    is bounded by `sort_memory` whatever the WAL's size), bulk-load the winners into a
//    scratch store beside the live one, carry over the live store's conflict evidence,
//    set the replay watermarks to the mailbox segments replayed, and swap the scratch
//    store in atomically. A crash before the swap leaves the live store as it was.
//  - in place: apply the records to the live store in batches (an idempotent merge).
// --since-time replays only records whose ts is at or after the time, merging in place.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "flk/store/store.hpp"
#include "flk/util/time.hpp"

namespace flk::rebuild {

struct Options {
  std::string region;                         // the region whose store this is
  std::filesystem::path wal_dir;              // its inbox WAL
  std::optional<std::filesystem::path> mailbox;  // segments peers shipped to it
  std::string store_url;
  std::optional<timeutil::Nanos> since;  // only records with ts ≥ since (implies in place)
  bool in_place = false;
  bool verify = false;                   // compare with the live store; change nothing
  size_t sort_memory = 256u << 20;       // bytes of records held before spilling a run
  std::filesystem::path temp_dir;        // for sort runs (default: /var/tmp)
  unsigned threads = 0;                  // reading and sorting threads (0: one per CPU)
  std::function<void(const std::string&)> progress;  // throttled progress lines
  std::function<void(const std::string&)> warn;
};

// One difference found by --verify: the live store's record and the rebuilt one
// (either may be absent).
struct Difference {
  std::string pcs_id;
  std::optional<store::Stored> live;
  std::optional<store::Stored> rebuilt;
};

struct Summary {
  uint64_t segments = 0;      // segments read (WAL and mailbox)
  uint64_t records = 0;       // records read (after --since filtering)
  uint64_t winners = 0;       // distinct pcs_ids written
  uint64_t conflicts = 0;     // pcs_ids with more than one outcome among the records
  uint64_t differences = 0;   // --verify
  uint64_t runs = 0;          // sort runs spilled to disk
  store::ApplyStats applied;  // in place
  hash::Digest digest{};      // content digest of the result (of the rebuilt content with --verify)
  std::vector<store::Watermark> watermarks;  // replay watermarks set from the mailbox
  double seconds = 0;
};

// Runs a rebuild. With verify, calls on_difference for each difference in pcs_id
// order and changes nothing. Throws Error: a damaged segment → data (65) naming the
// segment and offset, with the live store untouched.
Summary run(const Options& options, const std::function<void(const Difference&)>& on_difference = {});

// The segments of a mailbox addressed to `target`, per source, in sequence order:
// MAILBOX/<source>/<target>/<seq>.wal.
struct MailboxStream {
  std::string source;
  std::vector<std::filesystem::path> segments;
};
std::vector<MailboxStream> list_mailbox(const std::filesystem::path& mailbox, const std::string& target);

}  // namespace flk::rebuild
