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
struct Group {
  struct First {
    std::string enc;
    hash::Digest digest;
    View view() const { return view_of(enc, digest); }
  };
  std::vector<First> firsts;

  void add(const View& v) {
    for (First& f : firsts) {
      View fv = f.view();
      if (fv.outcome != v.outcome) continue;
      if (view_less(v, fv)) f = First{std::string(v.enc), *v.digest};
      return;
    }
    firsts.push_back(First{std::string(v.enc), *v.digest});
  }
  const First& winner() const {
    return *std::min_element(firsts.begin(), firsts.end(),
                             [](const First& a, const First& b) { return view_less(a.view(), b.view()); });
  }
  // The bytes were validated when they were read from the WAL (or a sort run we wrote).
  static Stored decode(const First& f) { return Stored{to_record(view_validated(f.enc)), f.digest}; }
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

class RunReader {
 public:
  explicit RunReader(const stdfs::path& path) : src_(fs::Fd::open(path.string(), O_RDONLY)), name_(path.string()) {}
  // Reads the next record; view() shows it until the next call.
  bool next() {
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
  const View& view() const { return view_; }

 private:
  wal::FileSource src_;
  std::string name_;
  std::string buf_;
  hash::Digest digest_{};
  View view_;
};

// An external merge sort of records by pcs_id, reduced per pcs_id to Groups. Records
// are held as their canonical encodings in one arena (no object per field), sorted
// through a small index; memory is bounded by `memory` whatever the input's size.
class Sorter {
 public:
  Sorter(size_t memory, stdfs::path temp_dir) : memory_(memory), temp_dir_(std::move(temp_dir)) {}
  ~Sorter() {
    for (const auto& p : runs_) ::unlink(p.c_str());
  }

  void add(std::string_view enc, const hash::Digest& digest) {
    if (arena_.capacity() == 0) {  // reserve once: growth by doubling would overshoot the bound
      arena_.reserve(memory_ * 3 / 4);
      items_.reserve(memory_ / 4 / sizeof(Item));
    }
    View v = view_of(enc, digest);
    // The first 8 bytes of the pcs_id, big-endian: most comparisons end here.
    uint64_t prefix = 0;
    for (size_t i = 0; i < 8; ++i)
      prefix = prefix << 8 | (i < v.id.size() ? static_cast<uint8_t>(v.id[i]) : 0);
    items_.push_back(Item{arena_.size(), static_cast<uint32_t>(enc.size()), prefix, digest});
    arena_.append(enc);
    if (arena_.size() + items_.size() * sizeof(Item) >= memory_) spill();
  }

  size_t runs() const { return runs_.size(); }

  // Starts the merge; then next_group() yields one pcs_id at a time, in order.
  void finish() {
    sort_items();
    for (const auto& p : runs_) readers_.push_back(std::make_unique<RunReader>(p));
    for (size_t i = 0; i < readers_.size(); ++i)
      if (readers_[i]->next()) heap_.push(i);
  }

  bool next_group(Group& g) {
    g.firsts.clear();
    std::string id;
    bool started = false;
    for (;;) {
      // The smallest head among the runs and the in-memory items.
      std::optional<View> best;
      int from = -2;  // -1: memory; ≥ 0: run index
      if (mem_at_ < items_.size()) {
        best = view(items_[mem_at_]);
        from = -1;
      }
      if (!heap_.empty() && (!best || view_less(readers_[heap_.top()]->view(), *best))) {
        best = readers_[heap_.top()]->view();
        from = static_cast<int>(heap_.top());
      }
      if (!best || (started && best->id != id)) return started;
      if (!started) {
        id.assign(best->id);
        started = true;
      }
      g.add(*best);
      if (from == -1) {
        ++mem_at_;
      } else {
        size_t i = heap_.top();
        heap_.pop();
        if (readers_[i]->next()) heap_.push(i);
      }
    }
  }

 private:
  struct Item {
    size_t at;  // of the encoding in arena_
    uint32_t len;
    uint64_t prefix;  // of the pcs_id (see add)
    hash::Digest digest;
  };

  View view(const Item& it) const { return view_of(std::string_view(arena_).substr(it.at, it.len), it.digest); }

  void sort_items() {
    std::sort(items_.begin(), items_.end(), [&](const Item& a, const Item& b) {
      if (a.prefix != b.prefix) return a.prefix < b.prefix;
      return view_less(view(a), view(b));
    });
  }

  void spill() {
    sort_items();
    stdfs::path p = temp_dir_ / fmt::format("flk-rebuild.{}.run{}", ::getpid(), runs_.size());
    runs_.push_back(p);
    RunWriter w(p);
    // Reduce while writing: per pcs_id, the first write of each outcome.
    Group g;
    for (size_t i = 0; i < items_.size();) {
      g.firsts.clear();
      View head = view(items_[i]);
      size_t j = i;
      while (j < items_.size() && view(items_[j]).id == head.id) g.add(view(items_[j++]));
      for (const Group::First& f : g.firsts) w.add(f.enc, f.digest);
      i = j;
    }
    w.flush();
    items_.clear();
    arena_.clear();
  }

  struct HeadGreater {
    Sorter* s;
    bool operator()(size_t a, size_t b) const { return view_less(s->readers_[b]->view(), s->readers_[a]->view()); }
  };

  size_t memory_;
  stdfs::path temp_dir_;
  std::string arena_;
  std::vector<Item> items_;
  size_t mem_at_ = 0;
  std::vector<stdfs::path> runs_;
  std::vector<std::unique_ptr<RunReader>> readers_;
  std::priority_queue<size_t, std::vector<size_t>, HeadGreater> heap_{HeadGreater{this}};
};

void sort_unique(std::vector<store::Evidence>& ev) {
  auto key = [](const store::Evidence& e) { return std::tie(e.record.pcs_id, e.digest); };
  std::sort(ev.begin(), ev.end(), [&](const auto& a, const auto& b) { return key(a) < key(b); });
  ev.erase(std::unique(ev.begin(), ev.end(), [&](const auto& a, const auto& b) { return key(a) == key(b); }), ev.end());
}

// Reads every record of the sources, calling fn; fills the summary's segment counts
// and the replay watermarks of the mailbox streams.
void read_sources(const Options& o, Summary& sum, const wal::RecordViewFn& fn) {
  auto keep = [&](const RecordView& r, std::string_view enc) {
    if (o.since && r.ts < *o.since) return;
    ++sum.records;
    fn(r, enc);
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
    wal::read_segment_views(f.path, f.sealed, keep, [&](const wal::Header& h) {
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
      wal::read_segment_views(
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
    read_sources(o, sum, [&](const RecordView& r, std::string_view) {
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

  stdfs::path temp = o.temp_dir.empty() ? stdfs::path("/var/tmp") : o.temp_dir;
  Sorter sorter(o.sort_memory, temp);
  read_sources(o, sum, [&](const RecordView&, std::string_view enc) { sorter.add(enc, hash::sha256(enc)); });
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
    out = Group::decode(g.winner());
    uint8_t n = static_cast<uint8_t>(out.record.pcs_id.size());
    content.update(&n, 1);
    content.update(out.record.pcs_id);
    content.update(out.digest.data(), out.digest.size());
    ++sum.winners;
    if (g.firsts.size() > 1) {
      ++sum.conflicts;
      for (const Group::First& f : g.firsts) {
        Stored s = Group::decode(f);
        evidence.push_back({std::move(s.record), s.digest, now});
      }
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
