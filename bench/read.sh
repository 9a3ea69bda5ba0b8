#!/usr/bin/env bash
# bench/read.sh BUILD_DIR — flk's replay benchmarks, figures k) to m) (issue 5;
# bench/README.md, section "Replay (k–m)", explains each figure and its baseline).
#
# As in bench/run.sh and bench/ship.sh: every figure that has a baseline is measured
# beside it in the same run, runs interleaved (flk, baseline, flk, baseline, …), median
# of FLK_BENCH_RUNS runs, reported as a ratio. Prints a table and appends one JSON line
# per figure to BUILD_DIR/bench/results.jsonl. Nothing asserts a timing: the script exits
# 0 unless a command fails. Goals are printed for people to read.
#
#   k) Replay: flk-read --once --from file://MAILBOX of FLK_BENCH_READ_RECORDS records
#      (sealed 64 MiB segments shipped from region us-east-1 to us-west-2 by flk-ship
#      --once --to file://) into a fresh SQLite store, beside sqlite3's .import of the
#      same rows as CSV into a table of the same shape (the baseline of bench/run.sh's
#      rebuild figure).
#   l) End-to-end lag: gen_records --rate (FLK_BENCH_LAG_RATE records/s, ts = when each
#      record is written) | flk-wal append --segment-age → flk-ship --follow → flk-serve
#      (loopback, bearer token) → its mailbox → flk-read --follow --interval into SQLite,
#      for FLK_BENCH_LAG_SECONDS. Per record: the commit time flk-read prints for its
#      segment minus the record's ts (bench/lag_stats). There is no same-run baseline for
#      a lag: the reference is the seed's objective, 60 s.
#   m) Peak RSS (GNU time %M) of flk-read --once replaying a backlog of
#      FLK_BENCH_READ_BACKLOG segments of FLK_BENCH_READ_SEGMENT bytes into a fresh store,
#      beside flk-read --once replaying only the last FLK_BENCH_READ_SMALL_BACKLOG of them
#      into a store that holds the others already (replayed just before, untimed): both
#      end with the same store, only how far behind differs. A third figure, for
#      comparison: the first FLK_BENCH_READ_SMALL_BACKLOG segments alone into a fresh
#      store (a small store: SQLite's page cache does not fill).
#
# Knobs (environment):
#   FLK_BENCH_READ_RECORDS     records replayed in k)                     (default 1000000)
#   FLK_BENCH_RUNS             runs of k) and m), median reported         (default 3)
#   FLK_BENCH_LAG_SECONDS      how long the writer of l) runs             (default 60)
#   FLK_BENCH_LAG_RATE         records/s the writer of l) sends           (default 5000)
#   FLK_BENCH_LAG_SEGMENT_AGE  flk-wal append --segment-age in l)         (default 200ms)
#   FLK_BENCH_LAG_INTERVAL     flk-read --follow --interval in l)         (default 100ms)
#   FLK_BENCH_READ_SEGMENT     --segment-bytes of the m) WAL              (default 128KiB)
#   FLK_BENCH_READ_BACKLOG     segments in the large backlog of m)        (default 500)
#   FLK_BENCH_READ_SMALL_BACKLOG  segments in the small backlog of m): past what flk-read
#                              holds in flight (two steps of 16,384 records: 51 segments
#                              of 128 KiB), so that the figure shows whether memory grows
#                              beyond it                                  (default 64)
#   FLK_BENCH_READ_FIGURES     which figures: any of "replay lag rss"     (default all three)
#   FLK_BENCH_WORK             where WALs, mailboxes and stores go (its file system and
#                              disk decide what a sync costs)             (default BUILD_DIR/bench)
#   FLK_BENCH_COMMIT           the commit BUILD_DIR was built from, when it is not the
#                              HEAD of this source tree                   (default HEAD)
set -euo pipefail

if [ $# -ne 1 ] || [ ! -d "$1" ]; then
  echo "usage: bench/read.sh BUILD_DIR" >&2
  exit 2
fi
build=$(cd "$1" && pwd)
src=$(cd "$(dirname "$0")/.." && pwd)
bb=$build/bench
flk_wal=$build/bin/flk-wal
flk_ship=$build/bin/flk-ship
flk_serve=$build/bin/flk-serve
flk_read=$build/bin/flk-read
gen=$bb/gen_records
lag_stats=$bb/lag_stats
gnu_time=/usr/bin/time

records=${FLK_BENCH_READ_RECORDS:-1000000}
runs=${FLK_BENCH_RUNS:-3}
lag_seconds=${FLK_BENCH_LAG_SECONDS:-60}
lag_rate=${FLK_BENCH_LAG_RATE:-5000}
lag_age=${FLK_BENCH_LAG_SEGMENT_AGE:-200ms}
lag_interval=${FLK_BENCH_LAG_INTERVAL:-100ms}
rss_segment=${FLK_BENCH_READ_SEGMENT:-128KiB}
backlog=${FLK_BENCH_READ_BACKLOG:-500}
small_backlog=${FLK_BENCH_READ_SMALL_BACKLOG:-64}
figures=${FLK_BENCH_READ_FIGURES:-replay lag rss}
source_region=us-east-1
target_region=us-west-2
frame_bytes=200

for f in "$flk_wal" "$flk_ship" "$flk_serve" "$flk_read" "$gen" "$lag_stats"; do
  [ -e "$f" ] || { echo "bench/read.sh: error: '$f' is missing: build first" >&2; exit 1; }
done
if ! "$gnu_time" -f %M true >/dev/null 2>&1; then
  echo "bench/read.sh: error: GNU time ('$gnu_time') is missing: install the 'time' package" >&2
  exit 1
fi
command -v sqlite3 >/dev/null || { echo "bench/read.sh: error: sqlite3 is missing" >&2; exit 1; }

mkdir -p "$bb"
work=$(mktemp -d "${FLK_BENCH_WORK:-$bb}/read.XXXXXX")
# The background processes of figure l); the trap stops those still running.
serve_pid="" ship_pid="" read_time_pid=""
# stop PID: SIGTERM to a process of ours, then wait for it.
stop() {
  [ -n "$1" ] || return 0
  kill -TERM "$1" 2>/dev/null || true
  wait "$1" || true
}
# stop_timed PID: the same for a process running under GNU time (PID is time's): the
# signal goes to its child, so that time reports the child's figures.
stop_timed() {
  [ -n "$1" ] || return 0
  local child
  child=$(ps -o pid= --ppid "$1" | tr -d ' ' || true)
  [ -z "$child" ] || kill -TERM "$child" 2>/dev/null || true
  wait "$1" || true
}
cleanup() {
  stop_timed "$read_time_pid"
  stop "$ship_pid"
  stop "$serve_pid"
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
results=$bb/results.jsonl
: >"$work/results.tmp"
# shellcheck source=bench/lib.sh
. "$src/bench/lib.sh"

# want FIGURE: whether FIGURE (replay, lag, rss) is in FLK_BENCH_READ_FIGURES.
want() { [[ " $figures " == *" $1 "* ]]; }

# The configurations: the source region's (flk-ship, flk-serve) and the target's (flk-read).
cfg_a=$work/source.yaml
cfg_b=$work/target.yaml
printf 'region: %s\n' "$source_region" >"$cfg_a"
printf 'region: %s\n' "$target_region" >"$cfg_b"

# make_mailbox RECORDS_FILE NAME ARGS…: a WAL $work/wal-NAME of the records (flk-wal append
# ARGS…, --segment-age 1h so that only size and the end of input seal), shipped by
# flk-ship --once --to file:// into the mailbox $work/mb-NAME; sets $segments.
make_mailbox() {
  local input=$1 name=$2 wal mb stored
  shift 2
  wal=$work/wal-$name
  mb=$work/mb-$name
  "$flk_wal" append --wal-dir "$wal" --region "$source_region" --segment-age 1h "$@" <"$input" >/dev/null
  "$flk_ship" --config "$cfg_a" --once --target "$target_region" --to "file://$mb" --wal-dir "$wal" \
    --state-dir "$work/ship-$name" >"$work/ship-$name.out"
  segments=$(find "$wal" -maxdepth 1 -name '*.wal' | wc -l)
  stored=$(grep -c '"result":"stored"' "$work/ship-$name.out" || true)
  if [ "$stored" != "$segments" ] || [ "$segments" = 0 ]; then
    echo "bench/read.sh: error: flk-ship stored $stored of the $segments sealed segments of $wal" >&2
    exit 1
  fi
  rm -rf "$work/ship-$name"
}

# read_once MAILBOX STORE OUT: one flk-read --once of MAILBOX into a fresh SQLite store
# (removed first, with its -wal and -shm files, and a fresh state directory), under GNU
# time: OUT gets the JSON lines, $work/read.time "max-RSS-KiB user-s sys-s".
read_once() {
  rm -rf "$2" "$2-wal" "$2-shm" "$work/read-state"
  read_more "$@"
}

# read_more MAILBOX STORE OUT: the same into the store as it is (it goes on from its
# watermark).
read_more() {
  local mb=$1 db=$2 out=$3
  "$gnu_time" -f '%M %U %S' -o "$work/read.time" "$flk_read" --config "$cfg_b" --once --from "file://$mb" \
    --store "sqlite://$db" --state-dir "$work/read-state" >"$out"
}

# size_bytes SIZE: a size as flk-wal takes it (262144, 256KiB, 1MiB, 256K, …) in bytes.
size_bytes() {
  local v=$1 mult=1
  case $v in
    *KiB | *K) mult=1024 ;;
    *MiB | *M) mult=1048576 ;;
    *GiB | *G) mult=1073741824 ;;
  esac
  v=${v%%[KMG]*}
  echo $((v * mult))
}

# applied_of OUT: records flk-read applied, over its JSON lines.
applied_of() { sed -n 's/.*"applied":\([0-9]*\).*/\1/p' "$1" | awk '{ s += $1 } END { print s + 0 }'; }

# ---------------------------------------------------------------------------------------
# k) Replay into SQLite, beside sqlite3 .import of the same rows.
if want replay; then
  say "replay: generating $records records ($frame_bytes-byte frames), WAL of 64 MiB segments, shipped to file://"
  "$gen" "$records" --frame-bytes "$frame_bytes" --region "$source_region" >"$work/records.jsonl"
  make_mailbox "$work/records.jsonl" replay
  rm -f "$work/records.jsonl"
  replay_segments=$segments
  db=$work/replay.db
  base=$work/import.db
  csv=$work/rows.csv
  sql=$work/import.sql
  flk_s=() base_s=() ratio_s=() rss_s=() cpu_s=() base_rss_s=()
  say "replay: $runs runs of flk-read --once ($replay_segments segments) and sqlite3 .import"
  for ((i = 1; i <= runs; i++)); do
    t=$EPOCHREALTIME
    read_once "$work/mb-replay" "$db" "$work/replay.out"
    flk_s+=("$(since "$t")")
    rss_s+=("$(tail -n 1 "$work/read.time" | awk '{ print $1 }')")
    cpu_s+=("$(tail -n 1 "$work/read.time" | awk '{ print $2 + $3 }')")
    got=$(applied_of "$work/replay.out")
    [ "$got" = "$records" ] ||
      { echo "bench/read.sh: error: replay: flk-read applied $got records, expected $records" >&2; exit 1; }
    if [ "$i" = 1 ]; then # the baseline's input: the rows flk stored, in WAL order (untimed)
      sqlite_export_csv "$db" "$csv"
      sqlite_import_sql "$csv" >"$sql"
    fi
    rm -f "$base" "$base-journal"
    t=$EPOCHREALTIME
    "$gnu_time" -f %M -o "$work/base.time" sqlite3 "$base" <"$sql"
    base_s+=("$(since "$t")")
    base_rss_s+=("$(tail -n 1 "$work/base.time")")
    ratio_s+=("$(calc "${base_s[-1]} / ${flk_s[-1]}")")
    say "  run $i: flk-read $(fmt2 "${flk_s[-1]}") s, sqlite3 .import $(fmt2 "${base_s[-1]}") s"
  done
  got_flk=$(sqlite3 "$db" "SELECT count(*) FROM records")
  got_base=$(sqlite3 "$base" "SELECT count(*) FROM records")
  if [ "$got_flk" != "$records" ] || [ "$got_base" != "$records" ]; then
    echo "bench/read.sh: error: replay: expected $records rows; flk stored '$got_flk', sqlite3 imported '$got_base'" >&2
    exit 1
  fi
  flk_t=$(median "${flk_s[@]}")
  base_t=$(median "${base_s[@]}")
  flk_rps=$(calc "$records / $flk_t")
  base_rps=$(calc "$records / $base_t")
  ratio=$(median "${ratio_s[@]}")
  rss=$(median "${rss_s[@]}")
  cpu=$(median "${cpu_s[@]}")
  mapfile -t seg_ms < <(sed -n 's/.*"ms":\([0-9]*\).*/\1/p' "$work/replay.out")
  printf '{"figure":"read.replay_sqlite","unit":"records/s","flk":%s,"baseline":%s,"baseline_name":"sqlite3 .import of the same rows as CSV (WAL order), same table shape","ratio":%s,"goal":"ratio >= 3","runs":%s,"records":%s,"segments":%s,"segment_bytes":"64MiB","store_bytes":%s,"baseline_store_bytes":%s,"flk_seconds":%s,"baseline_seconds":%s,"ratios":%s,"flk_cpu_seconds":%s,"flk_max_rss_kib":%s,"baseline_max_rss_kib":%s,"last_run_segment_ms":%s,%s}\n' \
    "$flk_rps" "$base_rps" "$ratio" "$runs" "$records" "$replay_segments" "$(stat -c %s "$db")" "$(stat -c %s "$base")" \
    "$(json_array "${flk_s[@]}")" "$(json_array "${base_s[@]}")" "$(json_array "${ratio_s[@]}")" \
    "$(json_array "${cpu_s[@]}")" "$(json_array "${rss_s[@]}")" "$(json_array "${base_rss_s[@]}")" \
    "$(json_array "${seg_ms[@]}")" "$common" >>"$work/results.tmp"
  row "replay into SQLite (rec/s)" "$(human "$flk_rps")" "$(human "$base_rps")" "$(fmt2 "$ratio")" \
    "$(human "$records") rec, $replay_segments segs of 64MiB; s: $(fmt2 "$flk_t")/$(fmt2 "$base_t"); flk CPU $(fmt2 "$cpu") s, RSS $(fmt2 "$(calc "$rss / 1024")") MiB; goal >= 3.00"
  rm -rf "$work/wal-replay" "$work/mb-replay" "$db" "$db-wal" "$db-shm" "$base" "$csv" "$sql"
fi

# ---------------------------------------------------------------------------------------
# l) End-to-end lag at a steady rate.
# lag_field FILE OBJECT FIELD: a number inside one of lag_stats' objects ("lag_ms", …).
lag_field() { sed -n "s/.*\"$2\":{[^}]*\"$3\":\\([-0-9.]*\\).*/\\1/p" "$1"; }

if want lag; then
  n=$((lag_rate * lag_seconds))
  wal=$work/wal-lag
  mb=$work/mb-lag
  db=$work/lag.db
  tok=$work/token
  (umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$tok" && echo >>"$tok")
  say "lag: flk-serve on loopback, flk-ship --follow, flk-read --follow --interval $lag_interval"
  rm -f "$work/port"
  "$flk_serve" --config "$cfg_a" --listen 127.0.0.1:0 --port-file "$work/port" --token-file "$source_region=$tok" \
    --mailbox "$mb" 2>"$work/serve.log" &
  serve_pid=$!
  for ((i = 0; i < 200; i++)); do
    [ -s "$work/port" ] && break
    kill -0 "$serve_pid" 2>/dev/null || { cat "$work/serve.log" >&2; exit 1; }
    sleep 0.05
  done
  port=$(cat "$work/port")
  mkdir -p "$wal"
  "$flk_ship" --config "$cfg_a" --follow --target "$target_region" --to "http://127.0.0.1:$port" --wal-dir "$wal" \
    --state-dir "$work/ship-lag" --token-file "$tok" >"$work/ship-lag.out" 2>"$work/ship-lag.err" &
  ship_pid=$!
  "$gnu_time" -f '%M %U %S' -o "$work/read-lag.time" "$flk_read" --config "$cfg_b" --follow --interval "$lag_interval" \
    --from "file://$mb" --store "sqlite://$db" --state-dir "$work/read-lag" >"$work/read-lag.out" 2>"$work/read-lag.err" &
  read_time_pid=$!
  say "lag: $n records at $lag_rate/s for $lag_seconds s into flk-wal append --segment-age $lag_age"
  "$gen" "$n" --frame-bytes "$frame_bytes" --region "$source_region" --rate "$lag_rate" 2>"$work/gen.err" |
    "$gnu_time" -f '%M %U %S' -o "$work/append-lag.time" "$flk_wal" append --wal-dir "$wal" --region "$source_region" \
      --segment-age "$lag_age" >/dev/null
  sed 's/^/bench: lag: /' "$work/gen.err" >&2
  # append sealed the last segment at the end of its input; wait until flk-read applied it.
  lag_segments=$(find "$wal" -maxdepth 1 -name '*.wal' | wc -l)
  for ((i = 0; i < 600; i++)); do
    [ "$(wc -l <"$work/read-lag.out")" -ge "$lag_segments" ] && break
    sleep 0.1
  done
  stop_timed "$read_time_pid"
  read_time_pid=""
  stop "$ship_pid"
  ship_pid=""
  stop "$serve_pid"
  serve_pid=""
  if [ "$(wc -l <"$work/read-lag.out")" != "$lag_segments" ]; then
    echo "bench/read.sh: error: lag: flk-read applied $(wc -l <"$work/read-lag.out") of $lag_segments segments within a minute of the last one:" >&2
    tail -n 3 "$work/ship-lag.err" "$work/read-lag.err" >&2
    exit 1
  fi
  "$lag_stats" "$work/read-lag.out" "$wal" "$mb/$source_region/$target_region" >"$work/lag.json"
  got=$(sed -n 's/^{"records":\([0-9]*\),.*/\1/p' "$work/lag.json")
  got_store=$(sqlite3 "$db" "SELECT count(*) FROM records")
  if [ "$got" != "$n" ] || [ "$got_store" != "$n" ]; then
    echo "bench/read.sh: error: lag: expected $n records; lag_stats counted '$got', the store holds '$got_store'" >&2
    exit 1
  fi
  p50=$(lag_field "$work/lag.json" lag_ms p50)
  p99=$(lag_field "$work/lag.json" lag_ms p99)
  lag_max=$(lag_field "$work/lag.json" lag_ms max)
  rate_got=$(sed -n 's/.*"rate":\([0-9.]*\),.*/\1/p' "$work/lag.json")
  read_rss=$(tail -n 1 "$work/read-lag.time" | awk '{ print $1 }')
  read_cpu=$(tail -n 1 "$work/read-lag.time" | awk '{ print $2 + $3 }')
  append_cpu=$(tail -n 1 "$work/append-lag.time" | awk '{ print $2 + $3 }')
  stages=""
  for s in ts_to_sealed sealed_to_mailbox mailbox_to_commit; do
    stages+="$s $(fmt2 "$(lag_field "$work/lag.json" "${s}_ms" p50)")/$(fmt2 "$(lag_field "$work/lag.json" "${s}_ms" p99)"), "
  done
  stats=$(sed 's/^{//; s/}$//' "$work/lag.json")
  printf '{"figure":"read.lag","unit":"ms","flk":%s,"p50_ms":%s,"max_ms":%s,"baseline":60000,"baseline_name":"the seed'"'"'s lag objective, 60 s (no same-run baseline exists for a lag)","ratio":%s,"goal":"p99 <= 1000 ms","rate_asked":%s,"seconds":%s,"segment_age":"%s","read_interval":"%s","segments":%s,"flk_read_max_rss_kib":%s,"flk_read_cpu_seconds":%s,"flk_wal_append_cpu_seconds":%s,"stats":{%s},%s}\n' \
    "$p99" "$p50" "$lag_max" "$(calc "60000 / $p99")" "$lag_rate" "$lag_seconds" "$lag_age" "$lag_interval" \
    "$lag_segments" "$read_rss" "$read_cpu" "$append_cpu" "$stats" "$common" >>"$work/results.tmp"
  row "end-to-end lag, p99 (ms)" "$(fmt2 "$p99")" "60000 (SLO)" "$(fmt2 "$(calc "60000 / $p99")")" \
    "p50 $(fmt2 "$p50"), max $(fmt2 "$lag_max"); $(human "$n") rec at $(human "$rate_got")/s, $lag_segments segs, --segment-age $lag_age, --interval $lag_interval; goal p99 <= 1000"
  row "  lag by stage, p50/p99 (ms)" "" "" "" \
    "${stages%, } (file mtimes: rough); flk-read per segment $(fmt2 "$(lag_field "$work/lag.json" segment_apply_ms p50)")/$(fmt2 "$(lag_field "$work/lag.json" segment_apply_ms p99)")"
  rm -rf "$wal" "$mb" "$db" "$db-wal" "$db-shm" "$work/ship-lag" "$work/read-lag"
fi

# ---------------------------------------------------------------------------------------
# m) Peak memory of a replay: a large backlog beside a small one, the same store at the
# end; and the small one into a small store.
if want rss; then
  seg_bytes=$(size_bytes "$rss_segment")
  per_seg=$((seg_bytes / frame_bytes)) # a little more than fits: at least FLK_BENCH_READ_BACKLOG segments
  n=$((per_seg * backlog))
  say "rss: WAL of $n records in segments of $rss_segment (about $backlog), shipped to file://"
  "$gen" "$n" --frame-bytes "$frame_bytes" --region "$source_region" >"$work/records.jsonl"
  make_mailbox "$work/records.jsonl" rss --segment-bytes "$rss_segment"
  rm -f "$work/records.jsonl"
  big_segments=$segments
  # Hard links to segments and their sidecars: the first FIRST..LAST of the stream into a
  # mailbox of their own.
  stream=$work/mb-rss/$source_region/$target_region
  link_segments() {
    local to=$1/$source_region/$target_region k f
    mkdir -p "$to"
    for ((k = $2; k <= $3; k++)); do
      f=$(printf '%016d.wal' "$k")
      ln "$stream/$f" "$stream/$f.sha256" "$to/"
    done
  }
  link_segments "$work/mb-rss-small" 1 "$small_backlog"                 # the first ones, into a fresh store
  link_segments "$work/mb-rss-head" 1 $((big_segments - small_backlog)) # all but the last ones: the store before
  db=$work/rss.db
  big_rss=() behind_rss=() small_rss=() big_s=() behind_s=()
  floor_kib=$("$gnu_time" -f %M "$flk_read" --help 2>&1 >/dev/null | tail -n 1)
  say "rss: $runs runs of flk-read --once of $big_segments segments into a fresh store, of the last $small_backlog into a store holding the others, of the first $small_backlog into a fresh store"
  for ((i = 1; i <= runs; i++)); do
    t=$EPOCHREALTIME
    read_once "$work/mb-rss" "$db" "$work/rss-big.out"
    big_s+=("$(since "$t")")
    big_rss+=("$(tail -n 1 "$work/read.time" | awk '{ print $1 }')")
    got=$(applied_of "$work/rss-big.out")
    [ "$got" = "$n" ] || { echo "bench/read.sh: error: rss: flk-read applied $got records, expected $n" >&2; exit 1; }
    read_once "$work/mb-rss-head" "$db" "$work/rss-head.out" # untimed
    t=$EPOCHREALTIME
    read_more "$work/mb-rss" "$db" "$work/rss-behind.out"
    behind_s+=("$(since "$t")")
    behind_rss+=("$(tail -n 1 "$work/read.time" | awk '{ print $1 }')")
    got=$(($(applied_of "$work/rss-head.out") + $(applied_of "$work/rss-behind.out")))
    [ "$got" = "$n" ] || { echo "bench/read.sh: error: rss: flk-read applied $got records in two runs, expected $n" >&2; exit 1; }
    [ "$(grep -c . "$work/rss-behind.out")" = "$small_backlog" ] ||
      { echo "bench/read.sh: error: rss: the second run did not replay exactly the last $small_backlog segments" >&2; exit 1; }
    read_once "$work/mb-rss-small" "$db" "$work/rss-small.out"
    small_rss+=("$(tail -n 1 "$work/read.time" | awk '{ print $1 }')")
    small_records=$(applied_of "$work/rss-small.out")
    say "  run $i: $big_segments segs $(fmt2 "$(calc "${big_rss[-1]} / 1024")") MiB in $(fmt2 "${big_s[-1]}") s; the last $small_backlog $(fmt2 "$(calc "${behind_rss[-1]} / 1024")") MiB in $(fmt2 "${behind_s[-1]}") s; the first $small_backlog, fresh store: $(fmt2 "$(calc "${small_rss[-1]} / 1024")") MiB"
  done
  big=$(median "${big_rss[@]}")
  behind=$(median "${behind_rss[@]}")
  sm=$(median "${small_rss[@]}")
  big_t=$(median "${big_s[@]}")
  big_rps=$(calc "$n / $big_t")
  printf '{"figure":"max_rss.read","unit":"KiB","flk":%s,"baseline":%s,"baseline_name":"the last %s segments, into a store holding the others","ratio":%s,"goal":"independent of the backlog","runs":%s,"segment_bytes":"%s","segments":%s,"baseline_segments":%s,"records":%s,"flk_samples":%s,"baseline_samples":%s,"flk_seconds":%s,"baseline_seconds":%s,"small_store_kib":%s,"small_store_samples":%s,"small_store_records":%s,"process_floor_kib":%s,%s}\n' \
    "$big" "$behind" "$small_backlog" "$(calc "$big / $behind")" "$runs" "$rss_segment" "$big_segments" "$small_backlog" "$n" \
    "$(json_array "${big_rss[@]}")" "$(json_array "${behind_rss[@]}")" "$(json_array "${big_s[@]}")" \
    "$(json_array "${behind_s[@]}")" "$sm" "$(json_array "${small_rss[@]}")" "$small_records" "$floor_kib" "$common" >>"$work/results.tmp"
  row "max RSS, flk-read (MiB)" "$(fmt2 "$(calc "$big / 1024")") @$big_segments" "$(fmt2 "$(calc "$behind / 1024")") @$small_backlog" \
    "$(fmt2 "$(calc "$big / $behind")")" "segs of $rss_segment, the same store at the end; $big_segments segs replayed at $(human "$big_rps") rec/s; the first $small_backlog into a fresh (small) store: $(fmt2 "$(calc "$sm / 1024")") MiB; flk-read --help alone: $(fmt2 "$(calc "$floor_kib / 1024")") MiB"
  rm -rf "$work/wal-rss" "$work/mb-rss" "$work/mb-rss-small" "$work/mb-rss-head" "$db" "$db-wal" "$db-shm"
fi

cat "$work/results.tmp" >>"$results"

printf '\nflk replay benchmarks — commit %s, %s CPUs, WAL, mailbox and store on %s, %s runs (median)\n' \
  "$commit" "$(nproc)" "$fs_type" "$runs"
printf '%-34s %18s %18s %7s  %s\n' "figure" "flk" "baseline" "ratio" "notes"
printf '%s\n' "${table[@]}"
cat <<EOF

Baselines: replay = sqlite3's .import of the same rows as CSV (WAL order) into a new table
of the store's shape, one transaction; lag = none in the same run: the reference is the
seed's objective of 60 s (ratio = 60 s / p99); max RSS = the last $small_backlog segments only,
into a store holding the others (the same store at the end: only the backlog differs).
ratio = baseline time / flk time (median of pairs) for the replay, large / small backlog
for memory.
Goals: replay >= 3x sqlite3 .import; lag p99 <= 1 s at $lag_rate records/s; flk-read's
memory independent of the backlog.
JSON lines appended to: $results
EOF
