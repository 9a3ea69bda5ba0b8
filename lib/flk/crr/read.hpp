// The CRR reader (DESIGN.md §3, §4, flk-read(1)): for each source region, every
// segment shipped to this region after the store's replay watermark, in order —
// verified (SHA-256, every frame and record, source, sequence, chain) and applied to
// the dedup store by first write wins together with the watermark's advance, in one
// atomic step per segment. A missing sequence number stops that source there (a gap is
// never skipped); a damaged segment stops it without moving its watermark; the other
// sources go on.
#pragma once

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "flk/ledger/ledger.hpp"
#include "flk/store/store.hpp"
#include "flk/transport/mailbox.hpp"
#include "flk/transport/transport.hpp"
#include "flk/util/error.hpp"
#include "flk/util/hash.hpp"

namespace flk::crr {

struct ReadOptions {
  std::string region;                // this region: the target of what is read
  std::vector<std::string> sources;  // empty: every source that shipped here
  std::string from = "-";            // transport URL: file:///mailbox, http(s)://peer, or - (stdin)
  transport::Options transport;
  std::string store_url;
  // Where fetched segments wait to be verified (http), and the per-source lock and
  // counters live: STATE/read/.
  std::filesystem::path scratch;
  std::optional<std::filesystem::path> metrics_file;  // Prometheus text, rewritten after each pass
  // The WORM ledger: each conflict found while applying is appended to it (ledger.hpp).
  std::optional<std::filesystem::path> worm;
  // Verified segments are applied together until they hold this many records (a
  // backlog of small segments: few transactions); 0: each segment in its own.
  size_t batch_records = 16384;
  std::function<void(const std::string&)> emit;  // one JSON line (no newline) per applied segment
  std::function<void(const std::string&)> error, info;
};

class Reader {
 public:
  explicit Reader(ReadOptions o);
  ~Reader();

  // Applies what is there now; returns the exit code: 0 when every source is caught
  // up, else the most serious failure (65 damage or gap, 77 refused, 75 unreachable…).
  int run_once();
  // Until stop(): polls the transport every `interval` (a segment is applied within
  // that long of its arrival). Returns 0, or 65 when a source is stuck on damage.
  int follow(timeutil::Nanos interval);
  void stop();

  // The Prometheus text for every source read so far (flk_crr_read_*).
  std::string metrics_text();

 private:
  // Per source: counters kept across runs (STATE/read/SOURCE.json) and the last pass.
  struct SourceStats {
    uint64_t segments = 0, applied = 0, duplicates = 0, later = 0, conflicts = 0, failures = 0;
    uint64_t pending = 0;  // listed after the watermark and not applied (last pass)
    bool ok = true;
    bool loaded = false, dirty = false;
    std::optional<transport::Applied> reported;  // what the mailbox was last told
  };
  SourceStats& stats(const std::string& source);
  void save_stats(const std::string& source);
  // Tells the mailbox where this region's replay of `source` stands, when it moved.
  void report_applied(const std::string& source);
  void write_metrics(bool force);
  // Appends the conflicts a segment's apply found to the ledger, with every record kept
  // as evidence for each pcs_id and the winner.
  void log_conflicts(const transport::Address& a, const std::vector<std::string>& ids);

  Code read_source(const std::string& source);
  Code read_stream();
  // Verifies a segment file as `a` and adds it to the batch (applied by flush(), which
  // emits its JSON line); false when it had been applied before.
  bool verify_segment(const transport::Address& a, const std::filesystem::path& file, const hash::Digest& declared,
                      int64_t started);
  // Applies the batch of verified segments (Store::apply_all: in SQLite, one
  // transaction), each segment's records with its watermark.
  void flush();

  // Verified segments wait in a batch until o_.batch_records records or the end of a
  // pass: a backlog of small segments is applied with few transactions (each one
  // rewrites every B-tree page its records touch), while one large segment, or a
  // segment arriving alone, is applied at once.
  struct Verified {
    transport::Address address;
    std::vector<Record> records;
    store::Watermark watermark;
    hash::Digest sha256{};
    int64_t started = 0;
  };
  std::vector<Verified> batch_;
  size_t batch_records_ = 0;

  ReadOptions o_;
  std::unique_ptr<transport::Transport> tr_;
  std::unique_ptr<store::Store> store_;
  std::optional<ledger::Ledger> ledger_;
  std::atomic<bool> stop_{false};
  std::map<std::string, std::string> last_error_;  // per source, the error last reported
  std::map<std::string, SourceStats> stats_;
  int64_t metrics_written_ = 0;
  bool following_ = false;
};

}  // namespace flk::crr
