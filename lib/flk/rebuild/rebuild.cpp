#include "flk/rebuild/rebuild.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <exception>
#include <mutex>
#include <queue>
#include <span>
#include <thread>

#include <fmt/format.h>

#include "flk/util/error.hpp"
#include "flk/util/fs.hpp"
#include "flk/wal/dir.hpp"

namespace flk::rebuild {

namespace stdfs = std::filesystem;
using store::Stored;

std::vector<MailboxStream> list_mailbox(const stdfs::path& mailbox, const std::string& target) {
  std::vector<MailboxStream> out;
  std::error_code ec;
  stdfs::directory_iterator it(mailbox, ec);
  if (ec) throw sys_error("cannot read mailbox", mailbox.string(), ec.value());
  for (const auto& e : it) {
    std::string source = e.path().filename().string();
    stdfs::path dir = e.path() / target;
    if (!valid_region(source) || source == target || !stdfs::is_directory(dir, ec)) continue;
    MailboxStream s{source, {}};
    for (const auto& f : wal::list_segments(dir))
      if (f.sealed) s.segments.push_back(f.path);
    out.push_back(std::move(s));
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.source < b.source; });
  return out;
}

namespace {

// A record's canonical encoding and the fields the sort order needs, viewed in place
// (flk/core/record.hpp: version, flags, outcome, ts, region, pcs_id, …).
struct View {
  std::string_view enc;
  const hash::Digest* digest = nullptr;
  std::string_view id, region;
  int64_t ts = 0;
  uint8_t outcome = 0;
};

View view_of(std::string_view enc, const hash::Digest& digest) {
  View v;
  v.enc = enc;
  v.digest = &digest;
  v.outcome = static_cast<uint8_t>(enc[2]);
  std::memcpy(&v.ts, enc.data() + 3, 8);
  auto rl = static_cast<uint8_t>(enc[11]);
  v.region = enc.substr(12, rl);
  auto il = static_cast<uint8_t>(enc[12 + rl]);
  v.id = enc.substr(13 + rl, il);
  return v;
}

// By pcs_id, then first write first: (ts, region, digest).
bool view_less(const View& a, const View& b) {
  if (int c = a.id.compare(b.id); c != 0) return c < 0;
  return std::tie(a.ts, a.region, *a.digest) < std::tie(b.ts, b.region, *b.digest);
}

// The records of one pcs_id reduced to the first write of each outcome (at most three):
// the winner is the first of them; there is a conflict when there are two or more.
// Reducing is associative and commutative, so runs can be reduced apart and merged.
// The copies' buffers are reused from one group to the next (no allocation per record).
struct Group {
  struct First {
    std::string enc;
    hash::Digest digest;
    View view() const { return view_of(enc, digest); }
    void set(const View& v) {
      enc.assign(v.enc);
      digest = *v.digest;
    }
  };

  void clear() { n_ = 0; }
  void add(const View& v) {
    for (First& f : firsts()) {
      View fv = f.view();
      if (fv.outcome != v.outcome) continue;
      if (view_less(v, fv)) f.set(v);
      return;
    }
    if (n_ == all_.size()) all_.emplace_back();
    all_[n_++].set(v);
  }
  std::span<const First> firsts() const { return {all_.data(), n_}; }
  std::span<First> firsts() { return {all_.data(), n_}; }
  const First& winner() const {
    auto f = firsts();
    return *std::min_element(f.begin(), f.end(),
                             [](const First& a, const First& b) { return view_less(a.view(), b.view()); });
  }
  // The bytes were validated when they were read from the WAL (or a sort run we wrote).
  static void decode(const First& f, Stored& out) {
    to_record(view_validated(f.enc), out.record);
    out.digest = f.digest;
  }

 private:
  std::vector<First> all_;
  size_t n_ = 0;
};

// A sorted stream of records: a spilled run or a sorter's records in memory.
class Stream {
 public:
  virtual ~Stream() = default;
  // Moves to the next record; view() shows it until the next call.
  virtual bool next() = 0;
  const View& view() const { return view_; }

 protected:
  View view_;
};

// A sorted run spilled to disk: [u32 length][32-byte digest][record encoding]…
class RunWriter {
 public:
  explicit RunWriter(const stdfs::path& path) : fd_(fs::Fd::open(path.string(), O_WRONLY | O_CREAT | O_TRUNC, 0600)) {}
  void add(std::string_view enc, const hash::Digest& digest) {
    uint32_t len = static_cast<uint32_t>(32 + enc.size());
    buf_.append(reinterpret_cast<const char*>(&len), 4);
    buf_.append(reinterpret_cast<const char*>(digest.data()), 32);
    buf_.append(enc);
    if (buf_.size() > (1u << 20)) flush();
  }
  void flush() {
    fd_.write_all(buf_);
    buf_.clear();
  }

 private:
  fs::Fd fd_;
  std::string buf_;
};

class RunReader final : public Stream {
 public:
  explicit RunReader(const stdfs::path& path) : src_(fs::Fd::open(path.string(), O_RDONLY)), name_(path.string()) {}
  bool next() override {
    uint32_t len;
    size_t n = src_.read(&len, 4);
    if (n == 0) return false;
    if (n != 4 || len < 32 + 13) fail(Code::io, "sort run '{}': truncated", name_);
    buf_.resize(len);
    if (src_.read(buf_.data(), len) != len) fail(Code::io, "sort run '{}': truncated", name_);
    std::memcpy(digest_.data(), buf_.data(), 32);
    view_ = view_of(std::string_view(buf_).substr(32), digest_);
    return true;
  }

 private:
  wal::FileSource src_;
  std::string name_;
  std::string buf_;
  hash::Digest digest_{};
};

// Records are held as their canonical encodings in one arena (no object per field),
// sorted through a small index; memory is bounded by `memory`: past it the records
// are sorted, reduced and spilled to a run in `temp_dir`.
class Sorter {
 public:
  Sorter(size_t memory, stdfs::path temp_dir) : memory_(memory), temp_dir_(std::move(temp_dir)) {}
  ~Sorter() {
    for (const auto& p : runs_) ::unlink(p.c_str());
  }
  Sorter(const Sorter&) = delete;
  Sorter& operator=(const Sorter&) = delete;

  void add(std::string_view enc, const hash::Digest& digest) {
    if (!reserved_) {  // reserve once: growth by doubling would overshoot the bound
      arena_.reserve(memory_ * 3 / 4);
      items_.reserve(std::max<size_t>(1, memory_ / 4 / sizeof(Item)));
      reserved_ = true;
    }
    // Spill before the arena or the index would have to grow (only a record larger
    // than the arena's share makes it grow, alone).
    if (!items_.empty() && (arena_.size() + enc.size() > arena_.capacity() || items_.size() == items_.capacity()))
      spill();
    View v = view_of(enc, digest);
    // The first 8 bytes of the pcs_id, big-endian: most comparisons end here.
    uint64_t prefix = 0;
    for (size_t i = 0; i < 8; ++i)
      prefix = prefix << 8 | (i < v.id.size() ? static_cast<uint8_t>(v.id[i]) : 0);
    items_.push_back(Item{arena_.size(), static_cast<uint32_t>(enc.size()), prefix, digest});
    arena_.append(enc);
  }

  // Records gathered by one reading thread, added to the sorter together (add(Batch&))
  // so that threads take its lock once per batch, not per record.
  class Batch {
   public:
    // True when the batch is full enough to be added.
    bool add(std::string_view enc, const hash::Digest& digest) {
      items_.push_back({static_cast<uint32_t>(enc.size()), digest});
      bytes_.append(enc);
      return bytes_.size() >= (256u << 10);
    }

   private:
    friend class Sorter;
    std::string bytes_;
    std::vector<std::pair<uint32_t, hash::Digest>> items_;
  };
  // Adds a batch and empties it; thread-safe.
  void add(Batch& b) {
    std::lock_guard lock(mu_);
    size_t at = 0;
    for (const auto& [len, digest] : b.items_) {
      add(std::string_view(b.bytes_).substr(at, len), digest);
      at += len;
    }
    b.items_.clear();
    b.bytes_.clear();
  }

  size_t runs() const { return runs_.size(); }

  // Sorts what is in memory, in `parts` slices sorted by as many threads; then
  // streams() yields the runs and the slices.
  void finish(size_t parts) {
    parts = std::max<size_t>(1, std::min(parts, items_.size() / 1024 + 1));
    for (size_t i = 0; i <= parts; ++i) cuts_.push_back(items_.size() * i / parts);
    std::vector<std::thread> pool;
    for (size_t i = 1; i < parts; ++i) pool.emplace_back([this, i] { sort_items(cuts_[i], cuts_[i + 1]); });
    sort_items(cuts_[0], cuts_[1]);
    for (auto& t : pool) t.join();
  }
  void streams(std::vector<std::unique_ptr<Stream>>& out) {
    for (const auto& p : runs_) out.push_back(std::make_unique<RunReader>(p));
    for (size_t i = 0; i + 1 < cuts_.size(); ++i) out.push_back(std::make_unique<Memory>(*this, cuts_[i], cuts_[i + 1]));
  }

 private:
  struct Item {
    size_t at;  // of the encoding in arena_
    uint32_t len;
    uint64_t prefix;  // of the pcs_id (see add)
    hash::Digest digest;
  };

  // A sorted slice of the records in memory. The index is in pcs_id order, the arena
  // in reading order: the records a few places ahead are fetched into the cache
  // before they are needed.
  class Memory final : public Stream {
   public:
    Memory(const Sorter& s, size_t begin, size_t end) : s_(s), at_(begin), end_(end) {}
    bool next() override {
      if (at_ == end_) return false;
      if (at_ + kAhead < end_) {
        const Item& ahead = s_.items_[at_ + kAhead];
        for (size_t b = 0; b < ahead.len; b += 64) __builtin_prefetch(s_.arena_.data() + ahead.at + b);
      }
      view_ = s_.view(s_.items_[at_++]);
      return true;
    }

   private:
    static constexpr size_t kAhead = 8;
    const Sorter& s_;
    size_t at_, end_;
  };

  View view(const Item& it) const { return view_of(std::string_view(arena_).substr(it.at, it.len), it.digest); }

  void sort_items(size_t begin, size_t end) {
    std::sort(items_.begin() + static_cast<ptrdiff_t>(begin), items_.begin() + static_cast<ptrdiff_t>(end),
              [&](const Item& a, const Item& b) {
                if (a.prefix != b.prefix) return a.prefix < b.prefix;
                return view_less(view(a), view(b));
              });
  }

  void spill() {
    sort_items(0, items_.size());
    stdfs::path p = temp_dir_ / fmt::format("flk-rebuild.{}.run{}", ::getpid(), runs_.size());
    runs_.push_back(p);
    RunWriter w(p);
    // Reduce while writing: per pcs_id, the first write of each outcome.
    Group g;
    for (size_t i = 0; i < items_.size();) {
      g.clear();
      View head = view(items_[i]);
      size_t j = i;
      while (j < items_.size() && view(items_[j]).id == head.id) g.add(view(items_[j++]));
      for (const Group::First& f : g.firsts()) w.add(f.enc, f.digest);
      i = j;
    }
    w.flush();
    items_.clear();
    arena_.clear();
  }

  size_t memory_;
  stdfs::path temp_dir_;
  std::mutex mu_;  // add(Batch&)
  bool reserved_ = false;
  std::string arena_;
  std::vector<Item> items_;
  std::vector<size_t> cuts_;  // the sorted slices of items_: [cuts_[i], cuts_[i + 1])
  std::vector<stdfs::path> runs_;
};

// The merge of sorted streams, one pcs_id at a time, reduced to a Group.
class Merger {
 public:
  explicit Merger(std::vector<std::unique_ptr<Stream>> streams) : streams_(std::move(streams)) {
    for (size_t i = 0; i < streams_.size(); ++i)
      if (streams_[i]->next()) heap_.push(i);
  }

  bool next_group(Group& g) {
    g.clear();
    if (heap_.empty()) return false;
    id_.assign(streams_[heap_.top()]->view().id);
    while (!heap_.empty()) {
      size_t i = heap_.top();
      const View& v = streams_[i]->view();
      if (v.id != id_) break;
      g.add(v);
      heap_.pop();
      if (streams_[i]->next()) heap_.push(i);
    }
    return true;
  }

 private:
  struct HeadGreater {
    const Merger* m;
    bool operator()(size_t a, size_t b) const { return view_less(m->streams_[b]->view(), m->streams_[a]->view()); }
  };

  std::vector<std::unique_ptr<Stream>> streams_;
  std::priority_queue<size_t, std::vector<size_t>, HeadGreater> heap_{HeadGreater{this}};
  std::string id_;
};

// Runs `produce` on a thread of its own and hands what it makes to next(), in order, in
// batches through a short queue: the merge and decoding of a rebuild overlap the store's
// load. Errors of `produce` are thrown by next(); destroying it stops the thread.
class Pipeline {
 public:
  explicit Pipeline(std::function<bool(Stored&)> produce) : produce_(std::move(produce)) {
    for (auto& b : batches_) free_.push_back(&b);
    thread_ = std::thread([this] { work(); });
  }
  ~Pipeline() {
    {
      std::lock_guard lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  Pipeline(const Pipeline&) = delete;
  Pipeline& operator=(const Pipeline&) = delete;

  bool next(Stored& out) {
    if (!cur_ || at_ == cur_->n) {
      std::unique_lock lock(mu_);
      if (cur_) {
        free_.push_back(cur_);
        cur_ = nullptr;
        cv_.notify_all();
      }
      cv_.wait(lock, [&] { return !full_.empty() || done_; });
      if (full_.empty()) {
        if (error_) std::rethrow_exception(error_);
        return false;
      }
      cur_ = full_.front();
      full_.pop_front();
      at_ = 0;
    }
    std::swap(out, cur_->items[at_++]);  // the batch keeps out's buffers for reuse
    return true;
  }

 private:
  struct Batch {
    std::array<Stored, 512> items;
    size_t n = 0;
  };

  void work() {
    try {
      for (;;) {
        Batch* b;
        {
          std::unique_lock lock(mu_);
          cv_.wait(lock, [&] { return !free_.empty() || stop_; });
          if (stop_) return;
          b = free_.back();
          free_.pop_back();
        }
        b->n = 0;
        bool more = true;
        while (b->n < b->items.size() && (more = produce_(b->items[b->n]))) ++b->n;
        std::lock_guard lock(mu_);
        if (b->n) full_.push_back(b);
        if (!more) {
          done_ = true;
          cv_.notify_all();
          return;
        }
        cv_.notify_all();
      }
    } catch (...) {
      std::lock_guard lock(mu_);
      error_ = std::current_exception();
      done_ = true;
      cv_.notify_all();
    }
  }

  std::function<bool(Stored&)> produce_;
  std::array<Batch, 4> batches_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Batch*> free_;
  std::deque<Batch*> full_;
  bool stop_ = false, done_ = false;
  std::exception_ptr error_;
  Batch* cur_ = nullptr;  // being handed out by next(); owned by the consumer
  size_t at_ = 0;
  std::thread thread_;  // last: started once everything else is initialised
};

void sort_unique(std::vector<store::Evidence>& ev) {
  auto key = [](const store::Evidence& e) { return std::tie(e.record.pcs_id, e.digest); };
  std::sort(ev.begin(), ev.end(), [&](const auto& a, const auto& b) { return key(a) < key(b); });
  ev.erase(std::unique(ev.begin(), ev.end(), [&](const auto& a, const auto& b) { return key(a) == key(b); }), ev.end());
}

// store::content_digest, computed as the records stream past: SHA-256 over
// (u8 length, pcs_id, digest) of each, absorbed 64 KiB at a time.
class ContentDigest {
 public:
  void add(std::string_view id, const hash::Digest& d) {
    buf_ += static_cast<char>(static_cast<uint8_t>(id.size()));
    buf_ += id;
    buf_.append(reinterpret_cast<const char*>(d.data()), d.size());
    if (buf_.size() >= (64u << 10)) flush();
  }
  hash::Digest finish() {
    flush();
    return sha_.finish();
  }

 private:
  void flush() {
    sha_.update(buf_);
    buf_.clear();
  }
  hash::Sha256 sha_;
  std::string buf_;
};

// One segment to read: of the region's own WAL, or of a mailbox stream.
struct Task {
  stdfs::path path;
  bool sealed = true;
  const std::string* source = nullptr;  // mailbox: the source region; WAL: null
  uint64_t sequence = 0;                // mailbox
  hash::Digest digest{};                // mailbox: the segment's SHA-256, once read
};

// The segments to read, in order: the WAL's (counted in the summary; sealed ones wholly
// before --since-time skipped) and each mailbox stream's up to its first gap.
struct Sources {
  std::vector<MailboxStream> streams;
  std::vector<Task> tasks;  // their `source` points into `streams`
};
Sources plan_sources(const Options& o, Summary& sum) {
  Sources plan;
  std::vector<Task>& tasks = plan.tasks;
  auto skip_sealed = [&](const stdfs::path& p) {
    if (!o.since) return false;
    wal::SegmentStat st = wal::stat_segment({0, true, p});
    return st.counts.records == 0 || st.counts.last_ts < *o.since;
  };
  for (const auto& f : wal::list_segments(o.wal_dir)) {
    ++sum.segments;
    if (f.sealed && skip_sealed(f.path)) continue;
    tasks.push_back(Task{f.path, f.sealed});
  }
  if (!o.mailbox) return plan;
  plan.streams = list_mailbox(*o.mailbox, o.region);
  for (const MailboxStream& s : plan.streams) {
    uint64_t expect = 0;
    for (const auto& p : s.segments) {
      bool sealed = true;
      uint64_t seq = wal::parse_segment_file_name(p.filename().string(), &sealed).value_or(0);
      if (expect && seq != expect) {
        if (o.warn)
          o.warn(fmt::format("mailbox '{}': source '{}': segment {} is missing; replayed up to {}", o.mailbox->string(),
                             s.source, expect, expect - 1));
        break;
      }
      ++sum.segments;
      tasks.push_back(Task{p, true, &s.source, seq});
      expect = seq + 1;
    }
  }
  return plan;
}

// Reads one segment, checking that its header names the region it should.
void read_task(const Options& o, Task& t, const wal::RecordViewFn& fn) {
  if (!t.source) {
    wal::read_segment_views(t.path, t.sealed, fn, [&](const wal::Header& h) {
      if (h.region != o.region)
        fail(Code::usage, "WAL '{}' belongs to region '{}', not '{}'", o.wal_dir.string(), h.region, o.region);
    });
    return;
  }
  hash::Sha256 sha;
  wal::read_segment_views(
      t.path, true, fn,
      [&](const wal::Header& h) {
        if (h.region != *t.source)
          fail(Code::data, "segment '{}': offset 0: region '{}' in the mailbox of '{}'", t.path.string(), h.region,
               *t.source);
      },
      &sha);
  t.digest = sha.finish();
}

// Reads every record of the planned sources with `threads` threads (each taking the
// next segment in order), calling fn(thread, record, encoding) — concurrently from
// several threads, never for one thread index at a time twice. Fills the summary's
// record count and the replay watermarks of the mailbox streams. When segments fail,
// the error of the first of them in order is thrown (the one a single thread would
// have met).
using ThreadViewFn = std::function<void(size_t thread, const RecordView&, std::string_view)>;
void read_sources(const Options& o, Summary& sum, Sources& plan, size_t threads, const ThreadViewFn& fn) {
  std::vector<Task>& tasks = plan.tasks;

  std::mutex mu;  // guards what follows
  size_t taken = 0, read = 0;
  uint64_t records = 0;
  std::optional<std::pair<size_t, std::exception_ptr>> error;  // of the first failed task
  timeutil::Nanos last_progress = 0;
  auto progress = [&] {  // under mu
    if (!o.progress) return;
    timeutil::Nanos now = timeutil::monotonic_now();
    if (now - last_progress < timeutil::kSecond) return;
    last_progress = now;
    o.progress(fmt::format("read {} records from {} segments", sum.records + records,
                           sum.segments - tasks.size() + read));
  };
  auto work = [&](size_t thread) {
    for (;;) {
      size_t i;
      {
        std::lock_guard lock(mu);
        if (error || taken == tasks.size()) return;
        i = taken++;
      }
      uint64_t n = 0;
      try {
        read_task(o, tasks[i], [&](const RecordView& r, std::string_view enc) {
          if (o.since && r.ts < *o.since) return;
          ++n;
          fn(thread, r, enc);
        });
      } catch (...) {
        std::lock_guard lock(mu);
        if (!error || i < error->first) error.emplace(i, std::current_exception());
        return;
      }
      std::lock_guard lock(mu);
      records += n;
      ++read;
      progress();
    }
  };
  std::vector<std::thread> pool;
  for (size_t t = 1; t < threads; ++t) pool.emplace_back(work, t);
  work(0);
  for (auto& t : pool) t.join();
  if (error) std::rethrow_exception(error->second);
  sum.records += records;

  for (const MailboxStream& s : plan.streams) {
    const Task* last = nullptr;
    for (const Task& t : tasks)
      if (t.source == &s.source) last = &t;
    if (last) sum.watermarks.push_back(store::Watermark{s.source, last->sequence, last->digest, timeutil::now()});
  }
}

}  // namespace

Summary run(const Options& o, const std::function<void(const Difference&)>& on_difference) {
  Summary sum;
  timeutil::Nanos start = timeutil::monotonic_now();
  bool in_place = o.in_place || o.since.has_value();
  std::unique_ptr<store::Store> live;
  try {
    live = store::open(o.store_url);
  } catch (const Error& e) {
    // A damaged SQLite file cannot even be opened, so a fresh rebuild could not replace
    // it: it is moved aside (kept — it is evidence), and the rebuild starts from nothing.
    if (e.code() != Code::data || in_place || o.verify || !o.store_url.starts_with("sqlite://")) throw;
    stdfs::path file = o.store_url.substr(std::string_view("sqlite://").size());
    stdfs::path aside = file;
    aside += ".damaged-" + std::to_string(timeutil::now() / timeutil::kSecond);
    for (const char* x : {"", "-wal", "-shm"}) {
      std::error_code ec;
      stdfs::path from = file, to = aside;
      from += x;
      to += x;
      if (stdfs::exists(from, ec)) {
        stdfs::rename(from, to, ec);
        if (ec) throw sys_error("cannot move the damaged store aside", from.string(), ec.value());
      }
    }
    fs::sync_dir(stdfs::absolute(file).parent_path());
    if (o.warn)
      o.warn(fmt::format("{}; moved aside to '{}' (its evidence is lost to this rebuild)", e.what(), aside.string()));
    live = store::open(o.store_url);
  }

  if (in_place && !o.verify) {
    std::vector<Record> batch;
    auto flush = [&] {
      if (batch.empty()) return;
      store::ApplyStats st = live->apply(batch, nullptr);
      st.conflict_ids.clear();  // only the counts are reported: do not keep every id
      sum.applied += st;
      batch.clear();
    };
    // Applied in batches as they are read: a damaged segment stops the merge part way,
    // which is safe because applying is idempotent (rerun once the damage is dealt with).
    Sources plan = plan_sources(o, sum);
    read_sources(o, sum, plan, 1, [&](size_t, const RecordView& r, std::string_view) {
      batch.push_back(to_record(r));
      if (batch.size() >= 10000) flush();
    });
    flush();
    for (const store::Watermark& w : sum.watermarks) {
      auto cur = live->watermark(w.source);
      if (!cur || cur->sequence < w.sequence) live->set_watermark(w);
    }
    sum.winners = live->count();
    sum.conflicts = sum.applied.conflicts;
    sum.digest = store::content_digest(*live);
    sum.seconds = static_cast<double>(timeutil::monotonic_now() - start) / 1e9;
    return sum;
  }

  // Read and check on every CPU (at most a thread per segment), into one sorter.
  Sources plan = plan_sources(o, sum);
  size_t threads = o.threads ? o.threads : std::max(1u, std::thread::hardware_concurrency());
  threads = std::max<size_t>(1, std::min(threads, plan.tasks.size()));
  Sorter sorter(o.sort_memory, o.temp_dir.empty() ? stdfs::path("/var/tmp") : o.temp_dir);
  std::vector<Sorter::Batch> batches(threads);
  read_sources(o, sum, plan, threads, [&](size_t t, const RecordView&, std::string_view enc) {
    if (batches[t].add(enc, hash::sha256(enc))) sorter.add(batches[t]);
  });
  for (auto& b : batches) sorter.add(b);
  sorter.finish(threads);
  sum.runs = sorter.runs();
  std::vector<std::unique_ptr<Stream>> streams;
  sorter.streams(streams);
  Merger merger(std::move(streams));

  // The merge, first write wins and decoding run on a thread of their own (Pipeline),
  // beside the store's load or the scan of --verify.
  std::vector<store::Evidence> evidence;
  if (!o.verify) {
    // The live store's evidence survives the rebuild (it may hold conflicts whose
    // segments are gone from the WAL and the mailbox).
    try {
      live->scan_evidence([&](const store::Evidence& e) { evidence.push_back(e); });
    } catch (const Error& e) {
      if (o.warn) o.warn(fmt::format("cannot carry over the old store's conflict evidence: {}", e.what()));
    }
  }
  Group g;
  timeutil::Nanos now = timeutil::now();
  ContentDigest content;  // store::content_digest of what is loaded, computed on the way
  Pipeline pipe([&](Stored& out) {
    if (!merger.next_group(g)) {
      sort_unique(evidence);  // complete: bulk_load reads it now
      return false;
    }
    Group::decode(g.winner(), out);
    content.add(out.record.pcs_id, out.digest);
    ++sum.winners;
    if (g.firsts().size() > 1) {
      ++sum.conflicts;
      for (const Group::First& f : g.firsts()) {
        Stored s;
        Group::decode(f, s);
        evidence.push_back({std::move(s.record), s.digest, now});
      }
    }
    if (o.progress && sum.winners % 200000 == 0) o.progress(fmt::format("loaded {} records", sum.winners));
    return true;
  });
  auto next = [&](Stored& out) { return pipe.next(out); };

  if (o.verify) {
    Stored pending;
    bool have = next(pending);
    auto differ = [&](Difference d) {
      ++sum.differences;
      if (on_difference) on_difference(d);
    };
    // With --since-time the rebuilt side holds only the window's records: a store
    // record outside it is no difference, nor is one that is an earlier write than the
    // window's (what an in-place merge would keep).
    bool window = o.since.has_value();
    live->scan([&](const Stored& l) {
      while (have && pending.record.pcs_id < l.record.pcs_id) {
        differ({pending.record.pcs_id, std::nullopt, pending});
        have = next(pending);
      }
      if (have && pending.record.pcs_id == l.record.pcs_id) {
        bool differs = window ? first_write_before(pending.record, pending.digest, l.record, l.digest) : !(pending == l);
        if (differs) differ({l.record.pcs_id, l, pending});
        have = next(pending);
      } else if (!window) {
        differ({l.record.pcs_id, l, std::nullopt});
      }
    });
    while (have) {
      differ({pending.record.pcs_id, std::nullopt, pending});
      have = next(pending);
    }
    sum.digest = content.finish();
    sum.seconds = static_cast<double>(timeutil::monotonic_now() - start) / 1e9;
    return sum;
  }

  auto scratch = live->open_scratch();
  scratch->bulk_load(next, evidence);
  for (const store::Watermark& w : sum.watermarks) scratch->set_watermark(w);
  sum.digest = content.finish();
  live->replace_with(std::move(scratch));
  sum.seconds = static_cast<double>(timeutil::monotonic_now() - start) / 1e9;
  return sum;
}

}  // namespace flk::rebuild
