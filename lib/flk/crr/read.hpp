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
#include <future>
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
  // Verified segments are committed together until they hold this many records, or
  // the pass ends (a backlog: few transactions); 0: each segment in its own.
  size_t batch_records = 1 << 20;
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
  // as evidence for each pcs_id and the winner. Called by commit(), once committed and
  // with nothing in flight: it reads the store directly.
  void log_conflicts(const transport::Address& a, const std::vector<std::string>& ids);

  Code read_source(const std::string& source);
  Code read_stream();
  // Verifies a segment file as `a` and adds it to the batch (applied by flush(), which
  // emits its JSON line); false when it had been applied before.
  bool verify_segment(const transport::Address& a, const std::filesystem::path& file, const hash::Digest& declared,
                      int64_t started);
  // Starts applying the verified segments waiting (Store::apply_all, in the store's
  // transaction group) on a thread of its own, so that the next segments are read and
  // verified meanwhile; first drains the apply still running, and commits the group if
  // it holds o_.batch_records records.
  void flush();
  // Waits for the apply in flight. If it failed, the group is rolled back: what it held,
  // and the verified segments waiting behind it (applying them would skip records), are
  // dropped and the error is thrown.
  void drain();
  // Drains, commits the group and completes its segments: counters, ledger, one JSON
  // line each.
  void commit();
  // Every segment verified so far, applied, committed and completed.
  void flush_all() {
    flush();
    commit();
  }
  // Forgets every segment not committed (after a failure: the store rolled them back).
  void drop_uncommitted();
  // The store, with nothing in flight or uncommitted: the only way this thread reaches it.
  store::Store& store() {
    commit();
    return *store_;
  }

  // Verified segments wait until they hold kStepRecords records (or o_.batch_records, if
  // fewer; 0: each segment) or the pass ends, then go to the apply thread together; the
  // applied ones wait in done_ for the group's commit (o_.batch_records, or the end of
  // the pass), which prints their lines.
  static constexpr size_t kStepRecords = 16384;
  struct Verified {
    transport::Address address;
    // The records, viewing their fields in `fields`: one buffer a segment, as large as
    // its file (the fields of its records are less), allocated once and never moved, in
    // place of heap strings for every field of every record.
    std::unique_ptr<char[]> fields;
    std::vector<RecordView> records;
    std::vector<hash::Digest> digests;  // one per record: record_digest, from its encoding
    store::Watermark watermark;
    hash::Digest sha256{};
    int64_t started = 0;
  };
  struct Applied {
    transport::Address address;
    size_t records = 0;
    hash::Digest sha256{};
    int64_t started = 0;
    store::ApplyStats stats;
  };
  std::vector<Verified> batch_;
  size_t batch_records_ = 0;
  std::vector<Verified> inflight_;  // being applied by apply_ (not touched meanwhile)
  std::vector<Applied> done_;       // applied, not yet committed
  size_t done_records_ = 0;
  // Per source, the last segment verified (waiting, in flight or applied): where the next
  // one must follow. Reset at the end of each pass and when the group is dropped.
  std::map<std::string, store::Watermark> verified_;

  ReadOptions o_;
  std::unique_ptr<transport::Transport> tr_;
  std::unique_ptr<store::Store> store_;
  std::optional<ledger::Ledger> ledger_;
  std::atomic<bool> stop_{false};
  std::map<std::string, std::string> last_error_;  // per source, the error last reported
  std::map<std::string, SourceStats> stats_;
  int64_t metrics_written_ = 0;
  bool following_ = false;
  // Last: destroyed (joined) before the store it uses.
  std::future<std::vector<store::ApplyStats>> apply_;
};

}  // namespace flk::crr
