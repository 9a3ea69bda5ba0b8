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
#   FLK_BENCH_ONLY      only one group of figures: wal (a-d), rebuild (e), servers (f, g), or
#                       ship (h-j: bench/ship.sh, which `make bench` runs after this script)
#                                                                (default all)
#   FLK_BENCH_REBUILD_RECORDS  records for the rebuild figures    (default 1000000)
#   FLK_BENCH_REBUILD_RUNS     runs of the rebuild figures        (default 3)
#   FLK_BENCH_SERVERS   1: also the PostgreSQL and Redis figures f) and g), which start
#                       throwaway servers with tests/servers/start.sh (default 0)
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
servers_dir="" # set while the servers of figures f) and g) run; the trap stops them
cleanup() {
  if [ -n "$servers_dir" ]; then
    "$src/tests/servers/stop.sh" "$servers_dir" >/dev/null 2>&1 || echo "bench/run.sh: warning: could not stop the servers in $servers_dir" >&2
    rm -rf "$servers_dir"
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
results=$bb/results.jsonl
: >"$results.tmp"
# shellcheck source=bench/lib.sh
. "$src/bench/lib.sh"

# Total size in bytes of the segment files of a WAL directory.
wal_bytes() { find "$1" -maxdepth 1 \( -name '*.wal' -o -name '*.open' \) -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }'; }

# want GROUP: whether the figures of GROUP (wal, rebuild, servers) run (FLK_BENCH_ONLY).
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
# WAL order (ORDER BY ts), as an application would insert them; the digest travels as
# hex text. Both write with one transaction. records/s = records / wall time; ratio =
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

# ---------------------------------------------------------------------------------------
# f) and g), only with FLK_BENCH_SERVERS=1: the rebuild of e) into PostgreSQL and into
# Redis, on throwaway servers that tests/servers/start.sh starts in a directory under
# the bench directory (stopped by the EXIT trap, whatever happens). One WAL of
# FLK_BENCH_REBUILD_RECORDS records; every flk run is a fresh rebuild into a store that
# does not exist (schema dropped, FLUSHDB: untimed).
#
# f) Baseline: psql's \copy of the same rows as CSV, in WAL order (exported ORDER BY ts
#    from the store flk rebuilt, as e) does; the digest as bytea hex, '\x…', which COPY
#    reads directly: no staging step), into an empty table created (untimed) with the
#    DDL of lib/flk/store/postgres.cpp: same columns, pcs_id text COLLATE "C" PRIMARY KEY.
#    One statement, one transaction; the server runs with fsync=off.
# g) Baseline: redis-cli --pipe of the commands flk's bulk_load sends: per chunk of 1000
#    records one HSET of 1000 (pcs_id, value) pairs into a hash and one ZADD of 1000
#    (0, pcs_id) pairs into a sorted set, in WAL order. Each value has the length of
#    flk's (measured from the store flk rebuilt: HSTRLEN of 1000 random fields) and is
#    cut from the row's CSV text. The RESP file is made by awk from the CSV, untimed;
#    FLUSHDB (untimed) before every run.
servers_figures() {
  local n=$1 rruns=$2 wal=$work/wal-servers csv=$work/servers.csv resp=$work/servers.resp
  local i t pg_url redis_url got
  say "servers: starting PostgreSQL and Redis (tests/servers/start.sh)"
  servers_dir=$(mktemp -d "$bb/servers.XXXXXX")
  chmod 755 "$servers_dir" # as root, PostgreSQL runs as user postgres and must reach it
  "$src/tests/servers/start.sh" "$servers_dir" >&2
  pg_url=$(cat "$servers_dir/postgres.url")
  redis_url=$(cat "$servers_dir/redis.url")
  pgq() { PGOPTIONS='-c client_min_messages=warning' psql -X -q -v ON_ERROR_STOP=1 -d "$pg_url" "$@"; }
  # redis://:PASSWORD@HOST:PORT/DB (tests/servers/redis.sh); redis-cli -u refuses the empty user.
  local r_host r_port r_pass r_db
  read -r r_pass r_host r_port r_db < <(echo "$redis_url" | sed -n 's|^redis://:\([^@]*\)@\([^:/]*\):\([0-9]*\)/\([0-9]*\)$|\1 \2 \3 \4|p')
  [ -n "$r_db" ] || { echo "bench/run.sh: error: unexpected Redis URL from tests/servers/redis.sh" >&2; exit 1; }
  rcli() { REDISCLI_AUTH=$r_pass redis-cli -h "$r_host" -p "$r_port" -n "$r_db" "$@"; }

  say "servers: writing a WAL of $n records"
  "$gen" "$n" --frame-bytes "$frame_bytes" --region "$region" |
    "$flk_wal" append --wal-dir "$wal" --region "$region" >/dev/null
  echo "# bench: no mailbox, no store of the host" >"$rebuild_cfg"
  # server_rebuild STORE OUT: one rebuild of the WAL into STORE, summary line to OUT.
  server_rebuild() {
    "$flk_rebuild" --config "$rebuild_cfg" --region "$region" --wal-dir "$wal" --no-mailbox --temp-dir "$work" \
      --store "$1" >"$2"
  }
  # server_result NAME BASELINE_NAME N FLK_S… -- BASE_S… -- RATIO_S… -- NOTE JSON_EXTRA
  server_result() {
    local name=$1 bname=$2 label=$3 note=$4 extra=$5 flk_t base_t flk_rps base_rps ratio
    shift 5
    local -a fs=() bs=() rs=()
    while [ "$1" != -- ]; do fs+=("$1"); shift; done
    shift
    while [ "$1" != -- ]; do bs+=("$1"); shift; done
    shift
    rs=("$@")
    flk_t=$(median "${fs[@]}")
    base_t=$(median "${bs[@]}")
    flk_rps=$(calc "$n / $flk_t")
    base_rps=$(calc "$n / $base_t")
    ratio=$(median "${rs[@]}")
    printf '{"figure":"rebuild.%s","unit":"records/s","flk":%s,"baseline":%s,"baseline_name":"%s","ratio":%s,"goal":"ratio >= 0.8","runs":%s,"records":%s,"flk_seconds":%s,"baseline_seconds":%s,%s%s}\n' \
      "$name" "$flk_rps" "$base_rps" "$bname" "$ratio" "$rruns" "$n" "$(json_array "${fs[@]}")" \
      "$(json_array "${bs[@]}")" "$extra" "$common" >>"$results.tmp"
    row "$label" "$(human "$flk_rps")" "$(human "$base_rps")" "$(fmt2 "$ratio")" \
      "$(human "$n") rec, $rruns runs; s: $(fmt2 "$flk_t")/$(fmt2 "$base_t"); $note"
  }

  # f) PostgreSQL.
  local flk_s=() base_s=() ratio_s=() pg_store="$pg_url?schema=bench_flk"
  local drop_flk="DROP SCHEMA IF EXISTS bench_flk CASCADE; DROP SCHEMA IF EXISTS bench_flk_rebuild CASCADE"
  local make_base="DROP SCHEMA IF EXISTS bench_base CASCADE; CREATE SCHEMA bench_base;
    CREATE TABLE bench_base.records (pcs_id text COLLATE \"C\" NOT NULL, tenant_id text NOT NULL,
      outcome smallint NOT NULL, ts bigint NOT NULL, region text NOT NULL, params text, payload text,
      digest bytea NOT NULL, CONSTRAINT records_pkey PRIMARY KEY (pcs_id))"
  say "servers: $rruns runs of flk-rebuild-dedup into PostgreSQL and psql \\copy"
  pgq -c "$drop_flk"
  server_rebuild "$pg_store" "$work/pg.json" # untimed: warms the cache, makes the CSV
  pgq -c "\\copy (SELECT pcs_id, tenant_id, outcome, ts, region, params, payload, digest FROM bench_flk.records ORDER BY ts) TO '$csv' WITH (FORMAT csv)"
  for ((i = 1; i <= rruns; i++)); do
    pgq -c "$drop_flk"
    t=$EPOCHREALTIME
    server_rebuild "$pg_store" "$work/pg.json"
    flk_s+=("$(since "$t")")
    pgq -c "$make_base"
    t=$EPOCHREALTIME
    pgq -c "\\copy bench_base.records FROM '$csv' WITH (FORMAT csv)"
    base_s+=("$(since "$t")")
    ratio_s+=("$(calc "${base_s[-1]} / ${flk_s[-1]}")")
  done
  got=$(pgq -At -c "SELECT (SELECT count(*) FROM bench_flk.records) || ' ' || (SELECT count(*) FROM bench_base.records)")
  if [ "$(json_field "$work/pg.json" winners)" != "$n" ] || [ "$got" != "$n $n" ]; then
    echo "bench/run.sh: error: rebuild into PostgreSQL: expected $n rows; flk, baseline: '$got'" >&2
    exit 1
  fi
  local pg_bytes base_bytes
  pg_bytes=$(pgq -At -c "SELECT pg_total_relation_size('bench_flk.records')")
  base_bytes=$(pgq -At -c "SELECT pg_total_relation_size('bench_base.records')")
  server_result postgres 'psql \\copy of the same rows as CSV (WAL order) into the same table, primary key in place' \
    "rebuild into PostgreSQL (rec/s)" "goal >= 0.80; table+index MB $(human "$(calc "$pg_bytes / 1e6")")/$(human "$(calc "$base_bytes / 1e6")")" \
    "\"store_bytes\":$pg_bytes,\"baseline_store_bytes\":$base_bytes,\"server\":\"$(pgq -At -c 'SHOW server_version' | awk '{ print $1 }')\"," \
    "${flk_s[@]}" -- "${base_s[@]}" -- "${ratio_s[@]}"
  pgq -c "$drop_flk; DROP SCHEMA IF EXISTS bench_base CASCADE"

  # g) Redis.
  flk_s=() base_s=() ratio_s=()
  local redis_store="$redis_url?prefix=benchflk" gen_no hkey vlen lens
  local lua="local f = redis.call('HRANDFIELD', KEYS[1], 1000) local mn, mx, s = -1, 0, 0
    for _, x in ipairs(f) do local l = redis.call('HSTRLEN', KEYS[1], x) s = s + l
      if mn < 0 or l < mn then mn = l end if l > mx then mx = l end end
    return {mn, mx, math.floor(s / #f + 0.5)}"
  say "servers: $rruns runs of flk-rebuild-dedup into Redis and redis-cli --pipe"
  rcli FLUSHDB >/dev/null
  server_rebuild "$redis_store" "$work/redis.json" # untimed: measures the value length
  gen_no=$(rcli HGET benchflk:meta current)
  hkey=benchflk:g$gen_no:r
  lens=$(rcli EVAL "$lua" 1 "$hkey" | tr '\n' ' ')
  vlen=$(echo "$lens" | awk '$3 ~ /^[0-9]+$/ && $3 > 0 { print $3 }')
  [ -n "$vlen" ] || { echo "bench/run.sh: error: cannot measure flk's Redis values: '$lens'" >&2; exit 1; }
  [ "$(echo "$lens" | awk '{ print $1 == $2 }')" = 1 ] || say "servers: flk's Redis values vary in length ($lens): the baseline uses the mean"
  # The keys have the length of flk's ({prefix}:g{G}:r and :ids).
  LC_ALL=C awk -v N="$n" -v L="$vlen" -v hkey="benchfl0:g$gen_no:r" -v zkey="benchfl0:g$gen_no:ids" -v C=1000 '
    function zadd(   j) {
      printf "*%d\r\n$4\r\nZADD\r\n$%d\r\n%s\r\n", 2 + 2 * k, length(zkey), zkey
      for (j = 1; j <= k; j++) printf "$1\r\n0\r\n$%d\r\n%s\r\n", length(z[j]), z[j]
      k = 0
    }
    {
      c = index($0, ","); id = substr($0, 1, c - 1); rest = substr($0, c + 1)
      if (k == 0) {
        m = N - NR + 1; if (m > C) m = C
        printf "*%d\r\n$4\r\nHSET\r\n$%d\r\n%s\r\n", 2 + 2 * m, length(hkey), hkey
      }
      v = rest; while (length(v) < L) v = v rest
      printf "$%d\r\n%s\r\n$%d\r\n%s\r\n", length(id), id, L, substr(v, 1, L)
      z[++k] = id
      if (k == m) zadd()
    }
    END { if (NR != N) { print "awk: expected " N " CSV lines, read " NR > "/dev/stderr"; exit 1 } }
  ' "$csv" >"$resp"
  for ((i = 1; i <= rruns; i++)); do
    rcli FLUSHDB >/dev/null
    t=$EPOCHREALTIME
    server_rebuild "$redis_store" "$work/redis.json"
    flk_s+=("$(since "$t")")
    rcli FLUSHDB >/dev/null
    t=$EPOCHREALTIME
    rcli --pipe <"$resp" >"$work/pipe.out"
    base_s+=("$(since "$t")")
    ratio_s+=("$(calc "${base_s[-1]} / ${flk_s[-1]}")")
  done
  got="$(rcli HLEN "benchfl0:g$gen_no:r") $(rcli ZCARD "benchfl0:g$gen_no:ids")"
  if [ "$(json_field "$work/redis.json" winners)" != "$n" ] || [ "$got" != "$n $n" ] ||
    ! grep -q 'errors: 0,' "$work/pipe.out"; then
    echo "bench/run.sh: error: rebuild into Redis: expected $n records; baseline hash, zset: '$got'" >&2
    cat "$work/pipe.out" >&2
    exit 1
  fi
  server_result redis 'redis-cli --pipe of the same HSET + ZADD commands (1000 pairs each, values of the same length)' \
    "rebuild into Redis (rec/s)" "goal >= 0.80; value $vlen B" \
    "\"value_bytes\":$vlen,\"command_bytes\":$(stat -c %s "$resp"),\"server\":\"$(rcli INFO server | tr -d '\r' | sed -n 's/^redis_version://p')\"," \
    "${flk_s[@]}" -- "${base_s[@]}" -- "${ratio_s[@]}"
  rcli FLUSHDB >/dev/null
  rm -rf "$wal" "$csv" "$resp"

  "$src/tests/servers/stop.sh" "$servers_dir" >&2
  rm -rf "$servers_dir"
  servers_dir=""
}

if [ "${FLK_BENCH_SERVERS:-0}" = 1 ] && want servers; then
  for tool in psql redis-cli; do
    command -v "$tool" >/dev/null || { echo "bench/run.sh: error: FLK_BENCH_SERVERS=1 needs '$tool'" >&2; exit 1; }
  done
  servers_figures "${FLK_BENCH_REBUILD_RECORDS:-1000000}" "${FLK_BENCH_REBUILD_RUNS:-3}"
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
With FLK_BENCH_SERVERS=1: rebuild into PostgreSQL beside psql \\copy of the same rows as
CSV into the same table (primary key in place), and into Redis beside redis-cli --pipe of
the same HSET + ZADD commands (1000 pairs each, values of the same length); goals >= 0.8.
JSON lines: $results
EOF
