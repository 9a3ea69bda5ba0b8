#!/usr/bin/env bash
# bench/run.sh BUILD_DIR — flk's benchmarks (bench/README.md explains each figure).
#
# Every figure is measured beside its baseline in the same run, runs interleaved
# (flk, baseline, flk, baseline, …) so that noise on a shared machine hits both alike,
# and reported as the median of FLK_BENCH_RUNS runs and as a ratio. Prints a table and
# writes one JSON line per figure to BUILD_DIR/bench/results.jsonl.
#
# Nothing here asserts a timing: the script exits 0 unless a command fails. Goals are
# shown beside the figures for people to read.
#
# Knobs (environment):
#   FLK_BENCH_RECORDS   records for the append/cat figures      (default 1000000)
#   FLK_BENCH_RUNS      runs per figure, median reported        (default 5)
#   FLK_BENCH_BIG_MIB   WAL size of the large memory run, MiB    (default 1024)
#   FLK_BENCH_WORK      where WALs are written (its file system matters for syncs)
#                                                                (default BUILD_DIR/bench)
#   FLK_BENCH_ONLY      only one group of figures: wal (a-d) or rebuild (e)  (default both)
#   FLK_BENCH_REBUILD_RECORDS  records for the rebuild figure     (default 1000000)
#   FLK_BENCH_REBUILD_RUNS     runs of the rebuild figure         (default 3)
set -euo pipefail

if [ $# -ne 1 ] || [ ! -d "$1" ]; then
  echo "usage: bench/run.sh BUILD_DIR" >&2
  exit 2
fi
build=$(cd "$1" && pwd)
src=$(cd "$(dirname "$0")/.." && pwd)
bb=$build/bench
flk_wal=$build/bin/flk-wal
flk_rebuild=$build/bin/flk-rebuild-dedup
gen=$bb/gen_records
raw=$bb/raw_append
lockstep=$bb/lockstep
shim=$bb/libflkbench_synclog.so
gnu_time=/usr/bin/time

records=${FLK_BENCH_RECORDS:-1000000}
runs=${FLK_BENCH_RUNS:-5}
big_mib=${FLK_BENCH_BIG_MIB:-1024}
region=us-east-1
frame_bytes=200

for f in "$flk_wal" "$flk_rebuild" "$gen" "$raw" "$lockstep" "$shim"; do
  [ -e "$f" ] || { echo "bench/run.sh: error: '$f' is missing: build first (make BUILD=$1)" >&2; exit 1; }
done
if ! "$gnu_time" -f %M true >/dev/null 2>&1; then
  echo "bench/run.sh: error: GNU time ('$gnu_time') is missing: install the 'time' package" >&2
  exit 1
fi

mkdir -p "$bb"
work=$(mktemp -d "${FLK_BENCH_WORK:-$bb}/work.XXXXXX")
trap 'rm -rf "$work"' EXIT
results=$bb/results.jsonl
: >"$results.tmp"
table=()

say() { printf 'bench: %s\n' "$*" >&2; }

# Floating point with awk: calc 'expr'.
calc() { awk "BEGIN { printf \"%.6g\", $1 }"; }

median() {
  printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 }
    END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.6g\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# Seconds elapsed since $1 (an $EPOCHREALTIME value).
since() { calc "$EPOCHREALTIME - $1"; }

# Total size in bytes of the segment files of a WAL directory.
wal_bytes() { find "$1" -maxdepth 1 \( -name '*.wal' -o -name '*.open' \) -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }'; }

# fmt2 X: X with two decimals.
fmt2() { LC_ALL=C printf '%.2f' "$1"; }

json_array() {
  local IFS=,
  printf '[%s]' "$*"
}

# human N: 1234567 → 1,234,567 (integers) or 3 significant decimals.
human() { LC_ALL=C awk -v x="$1" 'BEGIN {
    if (x >= 1000) { s = sprintf("%.0f", x); o = "";
      while (length(s) > 3) { o = "," substr(s, length(s) - 2) o; s = substr(s, 1, length(s) - 3) }
      print s o }
    else printf "%.3g\n", x }'; }

# row FIGURE FLK BASELINE RATIO NOTE — one line of the printed table.
row() { table+=("$(printf '%-34s %18s %18s %7s  %s' "$1" "$2" "$3" "$4" "$5")"); }

commit=$(git -C "$src" rev-parse --short HEAD 2>/dev/null || echo unknown)
fs_type=$(df --output=fstype "$work" | tail -n 1)
started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
common="\"commit\":\"$commit\",\"started\":\"$started\",\"host_cpus\":$(nproc),\"fs\":\"$fs_type\""

# want GROUP: whether the figures of GROUP (wal, rebuild) run (FLK_BENCH_ONLY).
want() { [ -z "${FLK_BENCH_ONLY:-}" ] || [ "$FLK_BENCH_ONLY" = "$1" ]; }

# The WAL figures a) to d), not indented: FLK_BENCH_ONLY=rebuild skips them.
if want wal; then
# ---------------------------------------------------------------------------------------
# a) Append throughput with group commit, 200-byte frames.
#
# Baseline: raw_append, a plain write(2) + fdatasync(2) loop. "Same batches" is made
# exact rather than estimated: every timed flk run carries the synclog LD_PRELOAD shim,
# which notes how many bytes flk wrote before each fdatasync; the baseline run that
# follows replays exactly that list (same syncs, same bytes per sync). The ratio is the
# median of the per-pair ratios flk/raw (a pair runs back to back).
#
# Two ways to feed stdin: from a file (flk's LineReader reads 1 MiB at a time, so about
# 1 MiB of JSON per batch) and through a pipe (a read returns at most what the pipe
# holds — 64 KiB by default — so batches are far smaller and syncs far more).
input=$work/records.jsonl
say "generating $records records of $frame_bytes-byte frames"
"$gen" "$records" --frame-bytes "$frame_bytes" --region "$region" >"$input"
input_bytes=$(stat -c %s "$input")

# sync_seconds SYNCLOG KIND: seconds the process spent in KIND (fdatasync/fsync) calls.
sync_seconds() { awk -v k="$2" '$1 == k { s += $3 } END { printf "%.6g\n", s / 1e9 }' "$1"; }

append_figure() {
  local mode=$1 i t wal log flk_s=() raw_s=() ratio_s=() cpu_s=() flk_sync_s=() raw_sync_s=()
  say "append, stdin from a $mode: $runs runs of flk-wal append and raw_append"
  for ((i = 1; i <= runs; i++)); do
    wal=$work/wal-$mode
    log=$work/synclog-$mode
    rm -rf "$wal" "$work/raw.out"
    t=$EPOCHREALTIME
    if [ "$mode" = file ]; then
      "$gnu_time" -f '%U %S' -o "$work/cpu" env FLK_BENCH_SYNCLOG="$log" LD_PRELOAD="$shim" \
        "$flk_wal" append --wal-dir "$wal" --region "$region" --keep-open <"$input" >/dev/null
    else
      # The cat is the point: it makes stdin a pipe.
      # shellcheck disable=SC2002
      cat "$input" | "$gnu_time" -f '%U %S' -o "$work/cpu" env FLK_BENCH_SYNCLOG="$log" LD_PRELOAD="$shim" \
        "$flk_wal" append --wal-dir "$wal" --region "$region" --keep-open >/dev/null
    fi
    flk_s+=("$(since "$t")")
    cpu_s+=("$(tail -n 1 "$work/cpu" | awk '{ print $1 + $2 }')")
    flk_sync_s+=("$(sync_seconds "$log" fdatasync)")
    t=$EPOCHREALTIME
    "$raw" "$log" "$work/raw.out" >"$work/raw.txt"
    raw_s+=("$(since "$t")")
    raw_sync_s+=("$(awk '{ printf "%.6g\n", $6 / 1e9 }' "$work/raw.txt")")
    ratio_s+=("$(calc "${raw_s[-1]} / ${flk_s[-1]}")")
  done
  bytes=$(wal_bytes "$wal")
  syncs=$(awk '$1 == "fdatasync" { n++ } END { print n + 0 }' "$log")
  fsyncs=$(awk '$1 == "fsync" { n++ } END { print n + 0 }' "$log")
  if [ "$syncs" -eq 0 ]; then
    echo "bench/run.sh: error: the synclog shim saw no fdatasync: the baseline would be meaningless" >&2
    exit 1
  fi
  local flk_t raw_t flk_rps raw_rps ratio per_rec per_batch segs cpu fsync_s flk_sync raw_sync
  flk_t=$(median "${flk_s[@]}")
  raw_t=$(median "${raw_s[@]}")
  flk_rps=$(calc "$records / $flk_t")
  raw_rps=$(calc "$records / $raw_t")
  ratio=$(median "${ratio_s[@]}")
  per_rec=$(calc "$bytes / $records")
  per_batch=$(calc "$records / $syncs")
  segs=$(find "$wal" -maxdepth 1 \( -name '*.wal' -o -name '*.open' \) | wc -l)
  cpu=$(median "${cpu_s[@]}")
  flk_sync=$(median "${flk_sync_s[@]}")
  raw_sync=$(median "${raw_sync_s[@]}")
  fsync_s=$(sync_seconds "$log" fsync)
  printf '{"figure":"append.%s","unit":"records/s","flk":%s,"baseline":%s,"baseline_name":"raw write+fdatasync, same batches","ratio":%s,"goal":"ratio >= 0.8 and >= 200000 records/s","runs":%s,"records":%s,"input_bytes":%s,"wal_bytes":%s,"wal_bytes_per_record":%s,"fdatasyncs":%s,"fsyncs":%s,"records_per_batch":%s,"segments":%s,"flk_seconds":%s,"baseline_seconds":%s,"flk_cpu_seconds":%s,"flk_fdatasync_seconds":%s,"baseline_fdatasync_seconds":%s,"flk_fsync_seconds_last_run":%s,%s}\n' \
    "$mode" "$flk_rps" "$raw_rps" "$ratio" "$runs" "$records" "$input_bytes" "$bytes" "$per_rec" "$syncs" "$fsyncs" \
    "$per_batch" "$segs" "$(json_array "${flk_s[@]}")" "$(json_array "${raw_s[@]}")" "$(json_array "${cpu_s[@]}")" \
    "$(json_array "${flk_sync_s[@]}")" "$(json_array "${raw_sync_s[@]}")" "$fsync_s" "$common" >>"$results.tmp"
  row "append, stdin $mode (rec/s)" "$(human "$flk_rps")" "$(human "$raw_rps")" "$(fmt2 "$ratio")" \
    "$syncs syncs of $(human "$per_batch") rec, $(human "$per_rec") WAL B/rec; s: wall $(fmt2 "$flk_t")/$(fmt2 "$raw_t"), fdatasync $(fmt2 "$flk_sync")/$(fmt2 "$raw_sync"), flk CPU $(fmt2 "$cpu")"
}

append_figure file
append_figure pipe
small_wal=$work/wal-file
small_bytes=$(wal_bytes "$small_wal")
rm -rf "$work/wal-pipe"

# ---------------------------------------------------------------------------------------
# b) Append throughput when every batch is small: a closed-loop client (lockstep) sends
# B lines and waits for their B acknowledgements before the next batch. Baseline: the
# same batches replayed by raw_append, as in a).
lockstep_figure() {
  local b=$1 n=$2 i t wal log flk_s=() raw_s=() ratio_s=() flk_sync_s=() raw_sync_s=()
  say "append, lockstep batches of $b: $runs runs of $n records"
  for ((i = 1; i <= runs; i++)); do
    wal=$work/wal-lockstep
    log=$work/synclog-lockstep
    rm -rf "$wal" "$work/raw.out"
    t=$EPOCHREALTIME
    FLK_BENCH_CHILD_PRELOAD=$shim FLK_BENCH_SYNCLOG=$log \
      "$lockstep" "$input" "$b" "$n" -- "$flk_wal" append --wal-dir "$wal" --region "$region" --keep-open
    flk_s+=("$(since "$t")")
    flk_sync_s+=("$(sync_seconds "$log" fdatasync)")
    t=$EPOCHREALTIME
    "$raw" "$log" "$work/raw.out" >"$work/raw.txt"
    raw_s+=("$(since "$t")")
    raw_sync_s+=("$(awk '{ printf "%.6g\n", $6 / 1e9 }' "$work/raw.txt")")
    ratio_s+=("$(calc "${raw_s[-1]} / ${flk_s[-1]}")")
  done
  local flk_rps raw_rps ratio syncs flk_sync raw_sync
  syncs=$(awk '$1 == "fdatasync" { n++ } END { print n + 0 }' "$log")
  flk_rps=$(calc "$n / $(median "${flk_s[@]}")")
  raw_rps=$(calc "$n / $(median "${raw_s[@]}")")
  ratio=$(median "${ratio_s[@]}")
  flk_sync=$(median "${flk_sync_s[@]}")
  raw_sync=$(median "${raw_sync_s[@]}")
  printf '{"figure":"append.lockstep_%s","unit":"records/s","flk":%s,"baseline":%s,"baseline_name":"raw write+fdatasync, same batches","ratio":%s,"runs":%s,"records":%s,"batch":%s,"fdatasyncs":%s,"flk_seconds":%s,"baseline_seconds":%s,"flk_fdatasync_seconds":%s,"baseline_fdatasync_seconds":%s,%s}\n' \
    "$b" "$flk_rps" "$raw_rps" "$ratio" "$runs" "$n" "$b" "$syncs" "$(json_array "${flk_s[@]}")" \
    "$(json_array "${raw_s[@]}")" "$(json_array "${flk_sync_s[@]}")" "$(json_array "${raw_sync_s[@]}")" "$common" >>"$results.tmp"
  row "append, lockstep batch $b (rec/s)" "$(human "$flk_rps")" "$(human "$raw_rps")" \
    "$(fmt2 "$ratio")" "$n records, $syncs syncs; fdatasync s $(fmt2 "$flk_sync")/$(fmt2 "$raw_sync")"
  rm -rf "$wal"
}

lockstep_figure 1 2000
lockstep_figure 100 50000

# ---------------------------------------------------------------------------------------
# c) Decode throughput: flk-wal cat of the WAL from a) (file mode) against cat(1) of the
# same segment files, both to /dev/null, page cache warm (one untimed run of each first).
# MB/s = WAL bytes (10^6) per second.
say "cat: $runs runs of flk-wal cat and cat(1) over $(human "$small_bytes") WAL bytes"
segments=()
while IFS= read -r f; do segments+=("$f"); done < <(find "$small_wal" -maxdepth 1 \( -name '*.wal' -o -name '*.open' \) | sort)
"$flk_wal" cat --wal-dir "$small_wal" >/dev/null
cat "${segments[@]}" >/dev/null
flk_s=()
raw_s=()
ratio_s=()
for ((i = 1; i <= runs; i++)); do
  t=$EPOCHREALTIME
  "$flk_wal" cat --wal-dir "$small_wal" >/dev/null
  flk_s+=("$(since "$t")")
  t=$EPOCHREALTIME
  cat "${segments[@]}" >/dev/null
  raw_s+=("$(since "$t")")
  ratio_s+=("$(calc "${raw_s[-1]} / ${flk_s[-1]}")")
done
flk_mbps=$(calc "$small_bytes / 1e6 / $(median "${flk_s[@]}")")
raw_mbps=$(calc "$small_bytes / 1e6 / $(median "${raw_s[@]}")")
ratio=$(median "${ratio_s[@]}")
cat_rps=$(calc "$records / $(median "${flk_s[@]}")")
printf '{"figure":"cat","unit":"MB/s","flk":%s,"baseline":%s,"baseline_name":"cat(1) of the segment files","ratio":%s,"runs":%s,"wal_bytes":%s,"records":%s,"flk_records_per_second":%s,"flk_seconds":%s,"baseline_seconds":%s,%s}\n' \
  "$flk_mbps" "$raw_mbps" "$ratio" "$runs" "$small_bytes" "$records" "$cat_rps" "$(json_array "${flk_s[@]}")" \
  "$(json_array "${raw_s[@]}")" "$common" >>"$results.tmp"
row "cat (MB/s of WAL)" "$(human "$flk_mbps")" "$(human "$raw_mbps")" "$(fmt2 "$ratio")" \
  "$(human "$cat_rps") rec/s decoded to JSON"

# ---------------------------------------------------------------------------------------
# d) Peak memory (max RSS, GNU time %M) of append and cat at two WAL sizes: the WAL of
# a) and one of FLK_BENCH_BIG_MIB MiB. The baseline is the same command at the smaller
# size: a ratio near 1 shows memory does not grow with the WAL. Goal ≤ 32 MiB.
# Input comes from a file (1 MiB batches, the largest flk makes).
rss() { # rss OUTFILE CMD… — runs CMD under GNU time, prints max RSS in KiB
  local out=$1
  shift
  "$gnu_time" -f %M -o "$work/rss" "$@" >"$out"
  tail -n 1 "$work/rss"
}
big_records=$(((big_mib << 20) / frame_bytes))
say "memory: append and cat of $records records, then of $big_records records (~$big_mib MiB)"
wal=$work/wal-mem-small
small_append_kib=$(rss /dev/null "$flk_wal" append --wal-dir "$wal" --region "$region" --keep-open <"$input")
small_cat_kib=$(rss /dev/null "$flk_wal" cat --wal-dir "$wal")
rm -rf "$wal" "$small_wal" "$input"
floor_kib=$(rss /dev/null "$flk_wal" --help)

big_input=$work/big.jsonl
"$gen" "$big_records" --frame-bytes "$frame_bytes" --region "$region" >"$big_input"
wal=$work/wal-mem-big
big_append_kib=$(rss /dev/null "$flk_wal" append --wal-dir "$wal" --region "$region" --keep-open <"$big_input")
rm -f "$big_input"
big_bytes=$(wal_bytes "$wal")
big_cat_kib=$(rss /dev/null "$flk_wal" cat --wal-dir "$wal")
rm -rf "$wal"

for what in append cat; do
  if [ "$what" = append ]; then s=$small_append_kib b=$big_append_kib; else s=$small_cat_kib b=$big_cat_kib; fi
  printf '{"figure":"max_rss.%s","unit":"KiB","flk":%s,"baseline":%s,"baseline_name":"same command on the smaller WAL","ratio":%s,"goal":"<= 32768 KiB, independent of WAL size","wal_bytes":%s,"baseline_wal_bytes":%s,"process_floor_kib":%s,%s}\n' \
    "$what" "$b" "$s" "$(calc "$b / $s")" "$big_bytes" "$small_bytes" "$floor_kib" "$common" >>"$results.tmp"
  row "max RSS, $what (MiB)" "$(fmt2 "$(calc "$b / 1024")") @$(calc "$big_bytes / 1048576" | xargs printf '%.0f')MiB" \
    "$(fmt2 "$(calc "$s / 1024")") @$(calc "$small_bytes / 1048576" | xargs printf '%.0f')MiB" \
    "$(fmt2 "$(calc "$b / $s")")" "goal <= 32 MiB; flk-wal --help alone: $(fmt2 "$(calc "$floor_kib / 1024")") MiB"
done

fi # want wal

# ---------------------------------------------------------------------------------------
# e) Rebuild of the dedup store into SQLite: flk-rebuild-dedup (a fresh rebuild into an
# empty store: read the WAL, external sort by pcs_id, first write wins, bulk load, swap)
# of a WAL of FLK_BENCH_REBUILD_RECORDS records of 200-byte frames, beside sqlite3(1)'s
# `.import` of the same rows as CSV into a new file with the same schema (the records
# table of lib/flk/store/sqlite.cpp: same columns, TEXT primary key, WITHOUT ROWID).
# The CSV is exported from the rebuilt store, so it holds exactly the stored rows, in
# pcs_id order — the baseline's best case (B-tree appends); the digest travels as hex
# text. Both write with one transaction. records/s = records / wall time; ratio =
# baseline time / flk time, median of the pairs. Also peak memory (GNU time %M) of the
# rebuild at the default --sort-memory and at 64MiB, beside sqlite3's.
rebuild_cfg=$work/rebuild.yaml
rebuild_db=$work/rebuild.db

# rebuild_run WAL OUT ARGS…: one fresh rebuild of WAL into an empty $rebuild_db; OUT gets
# the summary line, $work/rss the max RSS in KiB.
rebuild_run() {
  local wal=$1 out=$2
  shift 2
  rm -f "$rebuild_db" "$rebuild_db"-wal "$rebuild_db"-shm "$rebuild_db".rebuild
  "$gnu_time" -f %M -o "$work/rss" "$flk_rebuild" --config "$rebuild_cfg" --region "$region" --wal-dir "$wal" \
    --no-mailbox --temp-dir "$work" --store "sqlite://$rebuild_db" "$@" >"$out"
}

# json_field FILE NAME: a numeric field of the one-line JSON object in FILE.
json_field() { sed -n "s/.*\"$2\":\\([0-9.]*\\).*/\\1/p" "$1"; }

rebuild_figure() {
  local n=$1 rruns=$2 wal=$work/wal-rebuild base=$work/import.db csv=$work/rows.csv sql=$work/import.sql
  local i t flk_s=() base_s=() ratio_s=() rss_s=() base_rss_s=()
  if ! command -v sqlite3 >/dev/null; then
    say "rebuild: sqlite3 is not installed: figure skipped"
    return 0
  fi
  say "rebuild: $rruns runs of flk-rebuild-dedup and sqlite3 .import of $n records"
  "$gen" "$n" --frame-bytes "$frame_bytes" --region "$region" |
    "$flk_wal" append --wal-dir "$wal" --region "$region" >/dev/null
  echo "# bench: no mailbox, no store of the host" >"$rebuild_cfg"
  rebuild_run "$wal" "$work/rebuild.json"
  sqlite3 -csv "$rebuild_db" \
    "SELECT pcs_id, tenant_id, outcome, ts, region, params, payload, hex(digest) FROM records ORDER BY ts" >"$csv"
  {
    echo "CREATE TABLE records("
    echo "  pcs_id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, outcome INTEGER NOT NULL, ts INTEGER NOT NULL,"
    echo "  region TEXT NOT NULL, params TEXT, payload TEXT, digest BLOB NOT NULL) WITHOUT ROWID;"
    echo ".mode csv"
    echo ".import $csv records"
  } >"$sql"
  for ((i = 1; i <= rruns; i++)); do
    t=$EPOCHREALTIME
    rebuild_run "$wal" "$work/rebuild.json"
    flk_s+=("$(since "$t")")
    rss_s+=("$(tail -n 1 "$work/rss")")
    rm -f "$base" "$base"-journal
    t=$EPOCHREALTIME
    "$gnu_time" -f %M -o "$work/rss" sqlite3 "$base" <"$sql"
    base_s+=("$(since "$t")")
    base_rss_s+=("$(tail -n 1 "$work/rss")")
    ratio_s+=("$(calc "${base_s[-1]} / ${flk_s[-1]}")")
  done
  local got_flk got_base spilled
  got_flk=$(json_field "$work/rebuild.json" winners)
  got_base=$(sqlite3 "$base" "SELECT count(*) FROM records")
  if [ "$got_flk" != "$n" ] || [ "$got_base" != "$n" ]; then
    echo "bench/run.sh: error: rebuild: expected $n rows; flk stored '$got_flk', sqlite3 imported '$got_base'" >&2
    exit 1
  fi
  spilled=$(json_field "$work/rebuild.json" sort_runs)
  # Peak memory with a smaller sort budget: bounded by --sort-memory, not by the WAL.
  rebuild_run "$wal" "$work/rebuild64.json" --sort-memory 64MiB
  local rss64 runs64
  rss64=$(tail -n 1 "$work/rss")
  runs64=$(json_field "$work/rebuild64.json" sort_runs)
  local flk_t base_t flk_rps base_rps ratio rss base_rss wal_b db_b base_b
  flk_t=$(median "${flk_s[@]}")
  base_t=$(median "${base_s[@]}")
  flk_rps=$(calc "$n / $flk_t")
  base_rps=$(calc "$n / $base_t")
  ratio=$(median "${ratio_s[@]}")
  rss=$(median "${rss_s[@]}")
  base_rss=$(median "${base_rss_s[@]}")
  wal_b=$(wal_bytes "$wal")
  db_b=$(stat -c %s "$rebuild_db")
  base_b=$(stat -c %s "$base")
  printf '{"figure":"rebuild.sqlite","unit":"records/s","flk":%s,"baseline":%s,"baseline_name":"sqlite3 .import of the same rows as CSV, same schema","ratio":%s,"goal":"ratio >= 5 and >= 500000 records/s","runs":%s,"records":%s,"wal_bytes":%s,"store_bytes":%s,"baseline_store_bytes":%s,"sort_runs":%s,"flk_seconds":%s,"baseline_seconds":%s,"flk_max_rss_kib":%s,"baseline_max_rss_kib":%s,%s}\n' \
    "$flk_rps" "$base_rps" "$ratio" "$rruns" "$n" "$wal_b" "$db_b" "$base_b" "$spilled" "$(json_array "${flk_s[@]}")" \
    "$(json_array "${base_s[@]}")" "$(json_array "${rss_s[@]}")" "$(json_array "${base_rss_s[@]}")" "$common" >>"$results.tmp"
  printf '{"figure":"max_rss.rebuild","unit":"KiB","flk":%s,"baseline":%s,"baseline_name":"sqlite3 .import of the same rows","ratio":%s,"goal":"bounded by --sort-memory, independent of WAL size","sort_memory":"64MiB","sort_runs":%s,"default_sort_memory_kib":%s,"default_sort_runs":%s,"records":%s,%s}\n' \
    "$rss64" "$base_rss" "$(calc "$rss64 / $base_rss")" "$runs64" "$rss" "$spilled" "$n" "$common" >>"$results.tmp"
  row "rebuild into SQLite (rec/s)" "$(human "$flk_rps")" "$(human "$base_rps")" "$(fmt2 "$ratio")" \
    "$(human "$n") rec, $rruns runs; s: $(fmt2 "$flk_t")/$(fmt2 "$base_t"); goal >= 5.00 and >= 500,000 rec/s"
  row "max RSS, rebuild (MiB)" "$(fmt2 "$(calc "$rss64 / 1024")") @64MiB" "$(fmt2 "$(calc "$base_rss / 1024")")" \
    "$(fmt2 "$(calc "$rss64 / $base_rss")")" \
    "--sort-memory 64MiB: $runs64 runs; default 256MiB: $(fmt2 "$(calc "$rss / 1024")") MiB, $spilled runs"
  rm -rf "$wal" "$rebuild_db" "$base" "$csv"
}

if want rebuild; then
  rebuild_figure "${FLK_BENCH_REBUILD_RECORDS:-1000000}" "${FLK_BENCH_REBUILD_RUNS:-3}"
fi

mv "$results.tmp" "$results"

# ---------------------------------------------------------------------------------------
printf '\nflk benchmarks — commit %s, %s CPUs, WAL on %s, %s runs per figure (median)\n' "$commit" "$(nproc)" "$fs_type" "$runs"
printf '%-34s %18s %18s %7s  %s\n' "figure" "flk" "baseline" "ratio" "notes"
printf '%s\n' "${table[@]}"
cat <<EOF

Baselines: append = raw_append, plain write(2)+fdatasync(2) replaying the exact batches
(bytes per sync) flk made in the paired run, recorded by an LD_PRELOAD shim; cat = cat(1)
of the same segment files; max RSS = the same command on the smaller WAL; rebuild =
sqlite3's .import of the same rows as CSV into the same schema (its max RSS: sqlite3's).
ratio = baseline time / flk time (median of pairs) for throughput, big / small for memory.
Goals: append >= 0.8 of raw and >= 200,000 records/s; max RSS <= 32 MiB at any WAL size;
rebuild >= 5x sqlite3 .import and >= 500,000 records/s, memory bounded by --sort-memory.
JSON lines: $results
EOF
