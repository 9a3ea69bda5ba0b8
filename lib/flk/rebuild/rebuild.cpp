#include "flk/rebuild/rebuild.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <queue>

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

// Records ordered by pcs_id, then by first write.
bool item_less(const Stored& a, const Stored& b) {
  if (a.record.pcs_id != b.record.pcs_id) return a.record.pcs_id < b.record.pcs_id;
  return first_write_before(a.record, a.digest, b.record, b.digest);
}

// The records of one pcs_id reduced to the first write of each outcome (at most three):
// the winner is the first of them; there is a conflict when there are two or more.
// Reducing is associative and commutative, so runs can be reduced apart and merged.
struct Group {
  std::vector<Stored> firsts;
  void add(const Stored& s) {
    for (Stored& f : firsts) {
      if (f.record.outcome != s.record.outcome) continue;
      if (first_write_before(s.record, s.digest, f.record, f.digest)) f = s;
      return;
    }
    firsts.push_back(s);
  }
  const Stored& winner() const {
    return *std::min_element(firsts.begin(), firsts.end(), [](const Stored& a, const Stored& b) {
      return first_write_before(a.record, a.digest, b.record, b.digest);
    });
  }
};

// A sorted run spilled to disk: [u32 length][32-byte digest][record encoding]…
class RunWriter {
 public:
  explicit RunWriter(const stdfs::path& path) : fd_(fs::Fd::open(path.string(), O_WRONLY | O_CREAT | O_TRUNC, 0600)) {}
  void add(const Stored& s) {
    size_t at = buf_.size();
    buf_.resize(at + 4);
    buf_.append(reinterpret_cast<const char*>(s.digest.data()), 32);
    encode_record(buf_, s.record);
    uint32_t len = static_cast<uint32_t>(buf_.size() - at - 4);
    std::memcpy(buf_.data() + at, &len, 4);
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

class RunReader {
 public:
  explicit RunReader(const stdfs::path& path) : src_(fs::Fd::open(path.string(), O_RDONLY)), name_(path.string()) {}
  bool next(Stored& out) {
    uint32_t len;
    size_t n = src_.read(&len, 4);
    if (n == 0) return false;
    if (n != 4 || len < 32) fail(Code::io, "sort run '{}': truncated", name_);
    buf_.resize(len);
    if (src_.read(buf_.data(), len) != len) fail(Code::io, "sort run '{}': truncated", name_);
    std::memcpy(out.digest.data(), buf_.data(), 32);
    std::string why;
    if (!decode_record(std::string_view(buf_).substr(32), out.record, &why))
      fail(Code::io, "sort run '{}': {}", name_, why);
    return true;
  }

 private:
  wal::FileSource src_;
  std::string name_;
  std::string buf_;
};

// An external merge sort of records by pcs_id, reduced per pcs_id to Groups.
class Sorter {
 public:
  Sorter(size_t memory, stdfs::path temp_dir) : memory_(memory), temp_dir_(std::move(temp_dir)) {}
  ~Sorter() {
    for (const auto& p : runs_) ::unlink(p.c_str());
  }

  void add(const Record& r) {
    bytes_ += sizeof(Stored) + r.pcs_id.size() + r.tenant_id.size() + (r.params ? r.params->size() : 0) +
              (r.payload ? r.payload->size() : 0);
    items_.push_back(Stored{r, record_digest(r)});
    if (bytes_ >= memory_) spill();
  }

  size_t runs() const { return runs_.size(); }

  // Starts the merge; then next_group() yields one pcs_id at a time, in order.
  void finish() {
    sort_items();
    for (const auto& p : runs_) readers_.push_back(std::make_unique<RunReader>(p));
    heads_.resize(readers_.size());
    for (size_t i = 0; i < readers_.size(); ++i)
      if (readers_[i]->next(heads_[i])) heap_.push(i);
  }

  bool next_group(Group& g) {
    g.firsts.clear();
    const std::string* id = nullptr;
    std::string current;
    for (;;) {
      // The smallest head among the runs and the in-memory items.
      const Stored* best = nullptr;
      int from = -2;  // -1: memory; ≥ 0: run index
      if (mem_at_ < items_.size()) {
        best = &items_[mem_at_];
        from = -1;
      }
      if (!heap_.empty() && (!best || item_less(heads_[heap_.top()], *best))) {
        best = &heads_[heap_.top()];
        from = static_cast<int>(heap_.top());
      }
      if (!best || (id && best->record.pcs_id != *id)) return id != nullptr;
      if (!id) {
        current = best->record.pcs_id;
        id = &current;
      }
      g.add(*best);
      if (from == -1) {
        ++mem_at_;
      } else {
        size_t i = heap_.top();
        heap_.pop();
        if (readers_[i]->next(heads_[i])) heap_.push(i);
      }
    }
  }

 private:
  // Sorts items_ by moving each record once (sorting an index, then permuting), not
  // by swapping whole records around in the sort.
  void sort_items() {
    std::vector<uint32_t> order(items_.size());
    for (uint32_t i = 0; i < order.size(); ++i) order[i] = i;
    std::sort(order.begin(), order.end(), [&](uint32_t a, uint32_t b) { return item_less(items_[a], items_[b]); });
    std::vector<Stored> sorted;
    sorted.reserve(items_.size());
    for (uint32_t i : order) sorted.push_back(std::move(items_[i]));
    items_ = std::move(sorted);
  }

  void spill() {
    sort_items();
    stdfs::path p = temp_dir_ / fmt::format("flk-rebuild.{}.run{}", ::getpid(), runs_.size());
    runs_.push_back(p);
    RunWriter w(p);
    // Reduce while writing: per pcs_id, the first write of each outcome.
    for (size_t i = 0; i < items_.size();) {
      Group g;
      size_t j = i;
      while (j < items_.size() && items_[j].record.pcs_id == items_[i].record.pcs_id) g.add(items_[j++]);
      for (const Stored& s : g.firsts) w.add(s);
      i = j;
    }
    w.flush();
    items_.clear();
    bytes_ = 0;
  }

  struct HeadGreater {
    Sorter* s;
    bool operator()(size_t a, size_t b) const { return item_less(s->heads_[b], s->heads_[a]); }
  };

  size_t memory_;
  stdfs::path temp_dir_;
  std::vector<Stored> items_;
  size_t bytes_ = 0;
  size_t mem_at_ = 0;
  std::vector<stdfs::path> runs_;
  std::vector<std::unique_ptr<RunReader>> readers_;
  std::vector<Stored> heads_;
  std::priority_queue<size_t, std::vector<size_t>, HeadGreater> heap_{HeadGreater{this}};
};

void sort_unique(std::vector<store::Evidence>& ev) {
  auto key = [](const store::Evidence& e) { return std::tie(e.record.pcs_id, e.digest); };
  std::sort(ev.begin(), ev.end(), [&](const auto& a, const auto& b) { return key(a) < key(b); });
  ev.erase(std::unique(ev.begin(), ev.end(), [&](const auto& a, const auto& b) { return key(a) == key(b); }), ev.end());
}

// Reads every record of the sources, calling fn; fills the summary's segment counts
// and the replay watermarks of the mailbox streams.
void read_sources(const Options& o, Summary& sum, const std::function<void(const Record&)>& fn) {
  auto keep = [&](const Record& r) {
    if (o.since && r.ts < *o.since) return;
    ++sum.records;
    fn(r);
  };
  auto skip_sealed = [&](const stdfs::path& p) {
    if (!o.since) return false;
    wal::SegmentStat st = wal::stat_segment({0, true, p});
    return st.counts.records == 0 || st.counts.last_ts < *o.since;
  };
  timeutil::Nanos last_progress = 0;
  auto progress = [&] {
    if (!o.progress) return;
    timeutil::Nanos now = timeutil::monotonic_now();
    if (now - last_progress < timeutil::kSecond) return;
    last_progress = now;
    o.progress(fmt::format("read {} records from {} segments", sum.records, sum.segments));
  };
  for (const auto& f : wal::list_segments(o.wal_dir)) {
    ++sum.segments;
    if (f.sealed && skip_sealed(f.path)) continue;
    wal::read_segment(f.path, f.sealed, keep, [&](const wal::Header& h) {
      if (h.region != o.region)
        fail(Code::usage, "WAL '{}' belongs to region '{}', not '{}'", o.wal_dir.string(), h.region, o.region);
    });
    progress();
  }
  if (!o.mailbox) return;
  for (const MailboxStream& s : list_mailbox(*o.mailbox, o.region)) {
    std::optional<store::Watermark> mark;
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
      hash::Sha256 sha;
      wal::read_segment(
          p, true, keep,
          [&](const wal::Header& h) {
            if (h.region != s.source)
              fail(Code::data, "segment '{}': offset 0: region '{}' in the mailbox of '{}'", p.string(), h.region,
                   s.source);
          },
          &sha);
      mark = store::Watermark{s.source, seq, sha.finish(), timeutil::now()};
      expect = seq + 1;
      progress();
    }
    if (mark) sum.watermarks.push_back(*mark);
  }
}

}  // namespace

Summary run(const Options& o, const std::function<void(const Difference&)>& on_difference) {
  Summary sum;
  timeutil::Nanos start = timeutil::monotonic_now();
  auto live = store::open(o.store_url);
  bool in_place = o.in_place || o.since.has_value();

  if (in_place && !o.verify) {
    std::vector<Record> batch;
    auto flush = [&] {
      if (batch.empty()) return;
      sum.applied += live->apply(batch, nullptr);
      batch.clear();
    };
    // Applied in batches as they are read: a damaged segment stops the merge part way,
    // which is safe because applying is idempotent (rerun once the damage is dealt with).
    read_sources(o, sum, [&](const Record& r) {
      batch.push_back(r);
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

  stdfs::path temp = o.temp_dir.empty() ? stdfs::path("/var/tmp") : o.temp_dir;
  Sorter sorter(o.sort_memory, temp);
  read_sources(o, sum, [&](const Record& r) { sorter.add(r); });
  sorter.finish();
  sum.runs = sorter.runs();

  std::vector<store::Evidence> evidence;
  Group g;
  timeutil::Nanos now = timeutil::now();
  hash::Sha256 content;  // store::content_digest of what is loaded, computed on the way
  auto next = [&](Stored& out) {
    if (!sorter.next_group(g)) {
      sort_unique(evidence);  // complete: bulk_load reads it now
      return false;
    }
    out = g.winner();
    uint8_t n = static_cast<uint8_t>(out.record.pcs_id.size());
    content.update(&n, 1);
    content.update(out.record.pcs_id);
    content.update(out.digest.data(), out.digest.size());
    ++sum.winners;
    if (g.firsts.size() > 1) {
      ++sum.conflicts;
      for (const Stored& s : g.firsts) evidence.push_back({s.record, s.digest, now});
    }
    if (o.progress && sum.winners % 200000 == 0) o.progress(fmt::format("loaded {} records", sum.winners));
    return true;
  };

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

  // The live store's evidence survives the rebuild (it may hold conflicts whose
  // segments are gone from the WAL and the mailbox).
  try {
    live->scan_evidence([&](const store::Evidence& e) { evidence.push_back(e); });
  } catch (const Error& e) {
    if (o.warn) o.warn(fmt::format("cannot carry over the old store's conflict evidence: {}", e.what()));
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
