#!/usr/bin/env bash
# bench/ship.sh BUILD_DIR — flk's shipping benchmarks, figures h) to j) (issue 4;
# bench/README.md, section "Shipping (h–j)", explains each figure and its baseline).
#
# As in bench/run.sh: every figure is measured beside its baseline in the same run, runs
# interleaved (flk, baseline, flk, baseline, …), median of FLK_BENCH_RUNS runs, reported
# as a ratio. Prints a table and appends one JSON line per figure to
# BUILD_DIR/bench/results.jsonl. Nothing asserts a timing: the script exits 0 unless a
# command fails. Goals are printed for people to read.
#
#   h) flk-ship → flk-serve over loopback HTTP (bearer token, mailbox on the same disk as
#      the WAL) of FLK_BENCH_SHIP_MIB MiB of sealed segments, with 1 MiB and 64 MiB
#      segments, beside a loop of one `curl --data-binary @file` per segment to the same
#      kind of server (same URLs, same headers, digests computed before the timing).
#   i) The same flk runs seen from the receiver: MB/s stored by flk-serve (fsync per
#      segment) beside raw_receive, write + fdatasync + rename + fsync(dir) of the same
#      files with no network and no checking.
#   j) Peak RSS (GNU time %M) of flk-ship and of flk-serve with 64 MiB segments, beside
#      the same with 1 MiB segments.
#
# Every run gets a fresh flk-serve (started under GNU time, so its RSS and CPU are those
# of the run), a fresh mailbox and a fresh ship state directory.
#
# Knobs (environment):
#   FLK_BENCH_SHIP_MIB  MiB of records to ship                     (default 1024)
#   FLK_BENCH_RUNS      runs per figure, median reported            (default 3)
#   FLK_BENCH_WORK      where the WALs and mailboxes go (its file system and disk decide
#                       what a sync costs)                          (default BUILD_DIR/bench)
set -euo pipefail

if [ $# -ne 1 ] || [ ! -d "$1" ]; then
  echo "usage: bench/ship.sh BUILD_DIR" >&2
  exit 2
fi
build=$(cd "$1" && pwd)
src=$(cd "$(dirname "$0")/.." && pwd)
bb=$build/bench
flk_wal=$build/bin/flk-wal
flk_ship=$build/bin/flk-ship
flk_serve=$build/bin/flk-serve
gen=$bb/gen_records
raw=$bb/raw_receive
gnu_time=/usr/bin/time

ship_mib=${FLK_BENCH_SHIP_MIB:-1024}
runs=${FLK_BENCH_RUNS:-3}
source_region=us-east-1
target_region=us-west-2
frame_bytes=200
sizes=(1MiB 64MiB)

for f in "$flk_wal" "$flk_ship" "$flk_serve" "$gen" "$raw"; do
  [ -e "$f" ] || { echo "bench/ship.sh: error: '$f' is missing: build first" >&2; exit 1; }
done
if ! "$gnu_time" -f %M true >/dev/null 2>&1; then
  echo "bench/ship.sh: error: GNU time ('$gnu_time') is missing: install the 'time' package" >&2
  exit 1
fi
command -v curl >/dev/null || { echo "bench/ship.sh: error: curl is missing" >&2; exit 1; }

mkdir -p "$bb"
work=$(mktemp -d "${FLK_BENCH_WORK:-$bb}/ship.XXXXXX")
time_pid=""  # GNU time running the current flk-serve; the trap stops it
stop_server() {
  [ -n "$time_pid" ] || return 0
  local child
  child=$(ps -o pid= --ppid "$time_pid" | tr -d ' ' || true)
  [ -z "$child" ] || kill -TERM "$child" 2>/dev/null || true
  wait "$time_pid" || true
  time_pid=""
}
cleanup() {
  stop_server
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
results=$bb/results.jsonl
: >"$work/results.tmp"
# shellcheck source=bench/lib.sh
. "$src/bench/lib.sh"

# The configuration both tools read (flk-ship takes its source region from it), the
# token flk-ship presents and flk-serve accepts as peer us-east-1.
cfg=$work/flk.yaml
printf 'region: %s\n' "$source_region" >"$cfg"
tok=$work/token
(umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$tok" && echo >>"$tok")
token=$(head -n 1 "$tok")

# start_server MAILBOX TAG: a fresh flk-serve under GNU time (max RSS, CPU → $work/serve-TAG.time);
# sets $port.
start_server() {
  local mb=$1 tag=$2 i
  rm -f "$work/port"
  "$gnu_time" -f '%M %U %S' -o "$work/serve-$tag.time" "$flk_serve" --config "$cfg" --listen 127.0.0.1:0 \
    --port-file "$work/port" --token-file "$source_region=$tok" --mailbox "$mb" 2>"$work/serve-$tag.log" &
  time_pid=$!
  for ((i = 0; i < 200; i++)); do
    [ -s "$work/port" ] && break
    kill -0 "$time_pid" 2>/dev/null || { cat "$work/serve-$tag.log" >&2; exit 1; }
    sleep 0.05
  done
  port=$(cat "$work/port")
}

# ---------------------------------------------------------------------------------------
# The WALs, made once, untimed: the same records (200-byte frames, as bench/run.sh) appended
# with --segment-bytes 1MiB and 64MiB. --segment-age 1h so that only size seals segments.
records=$(((ship_mib << 20) / frame_bytes))
say "generating $records records ($ship_mib MiB of $frame_bytes-byte frames)"
"$gen" "$records" --frame-bytes "$frame_bytes" --region "$source_region" >"$work/records.jsonl"
declare -A files_of digests_of seqs_of bytes_of count_of
for size in "${sizes[@]}"; do
  wal=$work/wal-$size
  say "WAL with --segment-bytes $size"
  "$flk_wal" append --wal-dir "$wal" --region "$source_region" --segment-bytes "$size" --segment-age 1h \
    <"$work/records.jsonl" >/dev/null
  mapfile -t segs < <(find "$wal" -maxdepth 1 -name '*.wal' | sort)
  [ "${#segs[@]}" -gt 0 ] || { echo "bench/ship.sh: error: no sealed segment in $wal" >&2; exit 1; }
  # Digests for the curl loop, computed here and checked against flk's sidecars.
  sha256sum "${segs[@]}" >"$work/sums-$size"
  while read -r hex f; do
    side=$(awk '{ print $1 }' "$f.sha256")
    [ "$side" = "$hex" ] || { echo "bench/ship.sh: error: $f: sha256sum $hex, sidecar $side" >&2; exit 1; }
  done <"$work/sums-$size"
  files_of[$size]="${segs[*]}"
  digests_of[$size]=$(awk '{ printf "%s ", $1 }' "$work/sums-$size")
  seqs_of[$size]=$(for f in "${segs[@]}"; do b=${f##*/}; b=${b%.wal}; echo -n "$((10#$b)) "; done)
  bytes_of[$size]=$(stat -c %s "${segs[@]}" | awk '{ s += $1 } END { print s }')
  count_of[$size]=${#segs[@]}
  say "  ${#segs[@]} sealed segments, $(human "${bytes_of[$size]}") bytes"
done
rm -f "$work/records.jsonl"

# check_mailbox DIR SIZE: the stream directory holds exactly the shipped segments.
check_mailbox() {
  local dir=$1/$source_region/$target_region size=$2 n
  n=$(find "$dir" -maxdepth 1 -name '*.wal' | wc -l)
  if [ "$n" != "${count_of[$size]}" ]; then
    echo "bench/ship.sh: error: mailbox $dir holds $n segments, expected ${count_of[$size]}" >&2
    exit 1
  fi
}

# One run of each side for one segment size: flk-ship, the curl loop, raw_receive.
declare -A flk_s curl_s raw_s hr_s ir_s ship_rss serve_rss ship_cpu serve_cpu
run_once() {
  local size=$1 i=$2 t mb st codes f k
  local -a files digests seqs
  read -r -a files <<<"${files_of[$size]}"
  read -r -a digests <<<"${digests_of[$size]}"
  read -r -a seqs <<<"${seqs_of[$size]}"

  # flk-ship → flk-serve.
  mb=$work/mb-flk
  st=$work/state
  rm -rf "$mb" "$st"
  start_server "$mb" "flk-$size"
  t=$EPOCHREALTIME
  "$gnu_time" -f '%M %U %S' -o "$work/ship.time" "$flk_ship" --config "$cfg" --target "$target_region" \
    --to "http://127.0.0.1:$port" --wal-dir "$work/wal-$size" --state-dir "$st" --token-file "$tok" \
    >"$work/ship.out"
  local ft
  ft=$(since "$t")
  stop_server
  [ "$(grep -c '"result":"stored"' "$work/ship.out")" = "${count_of[$size]}" ] ||
    { echo "bench/ship.sh: error: flk-ship did not store ${count_of[$size]} segments:" >&2; tail -3 "$work/ship.out" >&2; exit 1; }
  check_mailbox "$mb" "$size"
  if [ "$i" = 1 ]; then # once: the received bytes are the sent ones
    (cd "$mb/$source_region/$target_region" && sed 's|  .*/|  |' "$work/sums-$size" | sha256sum --quiet -c -) ||
      { echo "bench/ship.sh: error: the mailbox's segments differ from the WAL's" >&2; exit 1; }
  fi
  flk_s[$size]+="$ft "
  ship_rss[$size]+="$(awk '{ print $1 }' "$work/ship.time") "
  ship_cpu[$size]+="$(awk '{ print $2 + $3 }' "$work/ship.time") "
  serve_rss[$size]+="$(tail -n 1 "$work/serve-flk-$size.time" | awk '{ print $1 }') "
  serve_cpu[$size]+="$(tail -n 1 "$work/serve-flk-$size.time" | awk '{ print $2 + $3 }') "
  rm -rf "$mb" "$st"

  # Baseline of h): one curl process per segment, same URL, same headers, fresh mailbox.
  mb=$work/mb-curl
  rm -rf "$mb"
  start_server "$mb" "curl-$size"
  codes=$work/curl.codes
  : >"$codes"
  local url="http://127.0.0.1:$port/v1/segments/$source_region/$target_region"
  t=$EPOCHREALTIME
  for ((k = 0; k < ${#files[@]}; k++)); do
    curl -sS -o /dev/null -w '%{http_code}\n' -H "Authorization: Bearer $token" -H "X-Flk-Sha256: ${digests[k]}" \
      -H 'Content-Type: application/octet-stream' -H 'Expect:' --data-binary "@${files[k]}" "$url/${seqs[k]}" >>"$codes"
  done
  local ct
  ct=$(since "$t")
  stop_server
  [ "$(grep -c '^201$' "$codes")" = "${count_of[$size]}" ] ||
    { echo "bench/ship.sh: error: curl: not every segment stored (HTTP $(sort "$codes" | uniq -c | tr '\n' ' '))" >&2; exit 1; }
  check_mailbox "$mb" "$size"
  curl_s[$size]+="$ct "
  rm -rf "$mb"

  # Baseline of i): raw_receive of the same files into a fresh directory.
  rm -rf "$work/raw"
  mkdir -p "$work/raw"
  t=$EPOCHREALTIME
  "$raw" "$work/raw" "${files[@]}" >/dev/null
  local rt
  rt=$(since "$t")
  raw_s[$size]+="$rt "
  rm -rf "$work/raw"

  hr_s[$size]+="$(calc "$ct / $ft") "
  ir_s[$size]+="$(calc "$rt / $ft") "
  say "  $size run $i: flk-ship $(fmt2 "$ft") s, curl loop $(fmt2 "$ct") s, raw_receive $(fmt2 "$rt") s"
}

say "$runs runs of: flk-ship, curl loop, raw_receive, for each segment size (${sizes[*]})"
for ((i = 1; i <= runs; i++)); do
  for size in "${sizes[@]}"; do run_once "$size" "$i"; done
done

# ---------------------------------------------------------------------------------------
# The figures.
# shellcheck disable=SC2086 # the per-size lists are space-separated on purpose
for size in "${sizes[@]}"; do
  bytes=${bytes_of[$size]}
  n=${count_of[$size]}
  ft=$(median ${flk_s[$size]})
  ct=$(median ${curl_s[$size]})
  rt=$(median ${raw_s[$size]})
  hr=$(median ${hr_s[$size]})
  ir=$(median ${ir_s[$size]})
  goal=$([ "$size" = 1MiB ] && echo 3 || echo 0.9)
  f_mbps=$(calc "$bytes / 1e6 / $ft")
  c_mbps=$(calc "$bytes / 1e6 / $ct")
  r_mbps=$(calc "$bytes / 1e6 / $rt")
  scpu=$(median ${ship_cpu[$size]})
  vcpu=$(median ${serve_cpu[$size]})
  printf '{"figure":"ship.http_%s","unit":"MB/s","flk":%s,"baseline":%s,"baseline_name":"one curl --data-binary @file per segment, same URLs and headers","ratio":%s,"goal":"ratio >= %s","runs":%s,"segments":%s,"bytes":%s,"flk_seconds":%s,"baseline_seconds":%s,"ratios":%s,"flk_ship_cpu_seconds":%s,"flk_serve_cpu_seconds":%s,%s}\n' \
    "$size" "$f_mbps" "$c_mbps" "$hr" "$goal" "$runs" "$n" "$bytes" "$(json_array ${flk_s[$size]})" \
    "$(json_array ${curl_s[$size]})" "$(json_array ${hr_s[$size]})" "$(json_array ${ship_cpu[$size]})" \
    "$(json_array ${serve_cpu[$size]})" "$common" >>"$work/results.tmp"
  row "ship, $size segments (MB/s)" "$(human "$f_mbps")" "$(human "$c_mbps")" "$(fmt2 "$hr")" \
    "$n segs; s: $(fmt2 "$ft")/$(fmt2 "$ct"); CPU s ship $(fmt2 "$scpu"), serve $(fmt2 "$vcpu"); goal >= $goal"
  printf '{"figure":"receive.fsync_%s","unit":"MB/s","flk":%s,"baseline":%s,"baseline_name":"raw_receive: write + fdatasync + rename + fsync(dir) per file","ratio":%s,"runs":%s,"segments":%s,"bytes":%s,"flk_seconds":%s,"baseline_seconds":%s,"ratios":%s,%s}\n' \
    "$size" "$f_mbps" "$r_mbps" "$ir" "$runs" "$n" "$bytes" "$(json_array ${flk_s[$size]})" \
    "$(json_array ${raw_s[$size]})" "$(json_array ${ir_s[$size]})" "$common" >>"$work/results.tmp"
  row "receive+fsync, $size segs (MB/s)" "$(human "$f_mbps")" "$(human "$r_mbps")" "$(fmt2 "$ir")" \
    "s: $(fmt2 "$ft")/$(fmt2 "$rt"); flk = the flk-ship runs above"
done
for prog in ship serve; do
  declare -n rss_map=${prog}_rss
  big=$(median ${rss_map[64MiB]})
  small=$(median ${rss_map[1MiB]})
  printf '{"figure":"max_rss.%s","unit":"KiB","flk":%s,"baseline":%s,"baseline_name":"the same with 1 MiB segments","ratio":%s,"goal":"<= 65536 KiB, independent of segment size","runs":%s,"flk_samples":%s,"baseline_samples":%s,%s}\n' \
    "$prog" "$big" "$small" "$(calc "$big / $small")" "$runs" "$(json_array ${rss_map[64MiB]})" \
    "$(json_array ${rss_map[1MiB]})" "$common" >>"$work/results.tmp"
  row "max RSS, flk-$prog (MiB)" "$(fmt2 "$(calc "$big / 1024")") @64MiB" "$(fmt2 "$(calc "$small / 1024")") @1MiB" \
    "$(fmt2 "$(calc "$big / $small")")" "goal <= 64 MiB at any segment size"
  unset -n rss_map
done

cat "$work/results.tmp" >>"$results"

printf '\nflk shipping benchmarks — commit %s, %s CPUs, WAL and mailbox on %s, %s runs per figure (median), %s MiB of records\n' \
  "$commit" "$(nproc)" "$fs_type" "$runs" "$ship_mib"
printf '%-34s %18s %18s %7s  %s\n' "figure" "flk" "baseline" "ratio" "notes"
printf '%s\n' "${table[@]}"
cat <<EOF

Baselines: ship = one 'curl --data-binary @file' process per segment to a flk-serve of its
own (same URLs, same Authorization, X-Flk-Sha256 and Expect headers, digests computed before
the timing); receive = raw_receive, write + fdatasync + rename + fsync(dir) of the same files
without a network; max RSS = the same run with 1 MiB segments.
ratio = baseline time / flk time (median of pairs) for throughput, 64 MiB / 1 MiB for memory.
Goals: ship >= 3x the curl loop with 1 MiB segments, >= 0.9x with 64 MiB segments;
max RSS <= 64 MiB for flk-ship and flk-serve, independent of the segment size.
JSON lines appended to: $results
EOF
