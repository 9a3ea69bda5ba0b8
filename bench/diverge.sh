#!/usr/bin/env bash
# bench/diverge.sh BUILD_DIR — flk-diverge's benchmarks (issue 6, "Performance";
# bench/README.md, section "Divergence", explains each figure and its baseline).
#
# As in bench/run.sh: every figure is measured beside its baseline in the same run, runs
# interleaved (flk, baseline, flk, baseline, …), median of FLK_BENCH_RUNS runs, reported
# as a ratio (baseline time / flk time). Prints a table and appends one JSON line per
# figure to BUILD_DIR/bench/results.jsonl. Nothing asserts a timing: the script exits 0
# unless a command fails or a result is wrong (the scans must find exactly the planted
# conflicts). Goals are printed for people to read.
#
#   1) flk-diverge scan of two SQLite stores of FLK_BENCH_DIVERGE_RECORDS records each
#      that differ in FLK_BENCH_DIVERGE_CONFLICTS pcs_ids (same pcs_id, another outcome,
#      an earlier ts, written into the second store only), beside sqlite3 dumping both
#      stores sorted by pcs_id (SELECT pcs_id, outcome … ORDER BY pcs_id, the two dumps
#      at once, as flk scans the two stores at once) into files, then comm -3 of them.
#      Max RSS of the scan (GNU time %M) beside the same scan of stores a fifth the size.
#   2) flk-diverge digest of the first store, with 65536 buckets (the default) and with
#      FLK_BENCH_DIVERGE_BIG_BUCKETS, beside sqlite3 dumping the columns a digest hashes
#      (pcs_id, outcome, ts, region) sorted by pcs_id into a file; the digest's size; and
#      the bytes two regions exchange to find the differences: ONE digest (the first
#      store's, as sent; the other region compares it with its own store,
#      `compare A --store URL`) + the extract of the first store's rows in the buckets
#      `compare` names (`flk-diverge extract`, sent back and scanned there with
#      `scan --buckets`), beside the store's size. The notes also give the bytes with
#      both digests sent.
#
# The stores take a while to build (gen_records | flk-wal append, flk-rebuild-dedup,
# then flk-rebuild-dedup --in-place of a WAL of the conflicting records into a copy),
# so they are kept in FLK_BENCH_WORK/diverge-stores/ and reused by later runs when they
# were made with the same record and conflict counts (delete the directory to rebuild
# them). Building needs up to 1.3 KB of disk per record (checked with df first); the kept
# stores take about 0.5 KB per record (2.5 GB for 5,000,000).
#
# Knobs (environment):
#   FLK_BENCH_DIVERGE_RECORDS        records per store                  (default 5000000)
#   FLK_BENCH_DIVERGE_SMALL_RECORDS  records per store of the RSS comparison
#                                                                (default a fifth: 1000000)
#   FLK_BENCH_DIVERGE_CONFLICTS      pcs_ids that differ                (default 1000)
#   FLK_BENCH_DIVERGE_BIG_BUCKETS    the second digest bucket count     (default 262144)
#   FLK_BENCH_RUNS                   runs per figure, median reported   (default 3)
#   FLK_BENCH_DIVERGE_ONLY           "exchange": only the stores of FLK_BENCH_DIVERGE_RECORDS
#                                    and the exchange figures (digests made once, untimed;
#                                    no scan, memory or digest timing figure)
#                                                                (default: every figure)
#   FLK_BENCH_WORK                   where the stores and dumps go      (default BUILD_DIR/bench)
#   FLK_BENCH_COMMIT                 the commit BUILD_DIR was built from, when it is not
#                                    the HEAD of this source tree       (default HEAD)
set -euo pipefail

if [ $# -ne 1 ] || [ ! -d "$1" ]; then
  echo "usage: bench/diverge.sh BUILD_DIR" >&2
  exit 2
fi
build=$(cd "$1" && pwd)
src=$(cd "$(dirname "$0")/.." && pwd)
bb=$build/bench
flk_wal=$build/bin/flk-wal
flk_rebuild=$build/bin/flk-rebuild-dedup
flk_diverge=$build/bin/flk-diverge
gen=$bb/gen_records
gnu_time=/usr/bin/time

records=${FLK_BENCH_DIVERGE_RECORDS:-5000000}
small_records=${FLK_BENCH_DIVERGE_SMALL_RECORDS:-$((records / 5))}
conflicts=${FLK_BENCH_DIVERGE_CONFLICTS:-1000}
big_buckets=${FLK_BENCH_DIVERGE_BIG_BUCKETS:-262144}
runs=${FLK_BENCH_RUNS:-3}
only=${FLK_BENCH_DIVERGE_ONLY:-}
default_buckets=65536
region_a=us-east-1
region_b=us-west-2
frame_bytes=200
recipe=1 # how the cached stores are made: bump when that changes

die() {
  echo "bench/diverge.sh: error: $*" >&2
  exit 1
}

for f in "$flk_wal" "$flk_rebuild" "$flk_diverge" "$gen"; do
  [ -e "$f" ] || die "'$f' is missing: build first (make BUILD=$1)"
done
if ! "$gnu_time" -f %M true >/dev/null 2>&1; then
  die "GNU time ('$gnu_time') is missing: install the 'time' package"
fi
for tool in sqlite3 comm; do
  command -v "$tool" >/dev/null || die "'$tool' is missing"
done
for v in records small_records conflicts big_buckets runs; do
  [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer, not '${!v}'"
done
if [ "$conflicts" -gt "$small_records" ] || [ "$small_records" -gt "$records" ]; then
  die "need conflicts ($conflicts) <= small records ($small_records) <= records ($records)"
fi
[ -z "$only" ] || [ "$only" = exchange ] || die "FLK_BENCH_DIVERGE_ONLY must be 'exchange' or unset, not '$only'"

mkdir -p "$bb"
base_dir=${FLK_BENCH_WORK:-$bb}
mkdir -p "$base_dir"
work=$(mktemp -d "$base_dir/diverge.XXXXXX")
cache=$base_dir/diverge-stores
building="" # the stores being built, removed when the script stops before they are complete
cleanup() { rm -rf "$work" ${building:+"$building"}; }
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
results=$bb/results.jsonl
: >"$work/results.tmp"
# shellcheck source=bench/lib.sh
. "$src/bench/lib.sh"

# icalc EXPR: an awk expression rounded to an integer (byte counts in the JSON lines).
icalc() { awk "BEGIN { printf \"%.0f\", $1 }"; }

# field_of FILE NAME: a numeric field of the one-line JSON object in FILE (the last one
# named NAME).
field_of() { sed -n "s/.*\"$2\":\\([0-9.]*\\).*/\\1/p" "$1" | tail -n 1; }

# The configuration every flk tool reads here: none of the host's stores, WAL or ledger.
cfg=$work/flk.yaml
echo "# bench: no mailbox, no store of the host" >"$cfg"

# ---------------------------------------------------------------------------------------
# The stores, built once per (records, conflicts) and kept in $cache.
#
# a.db: a fresh flk-rebuild-dedup of a WAL of N gen_records records (region us-east-1,
# 200-byte frames). b.db: a copy of a.db into which flk-rebuild-dedup --in-place merged a
# WAL of region us-west-2 holding, for every (N/K)-th record, the same record with another
# outcome (accepted → rejected, escalated/rejected → accepted) and a ts one day earlier:
# an earlier write replaces the stored winner (first write wins), so b.db differs from
# a.db in exactly K pcs_ids, each a conflict. ids: those pcs_ids, sorted.
# stamp: one JSON line describing the stores; they are reused only when it matches.

# store_dir N: where the stores of N records are kept.
store_dir() { echo "$cache/n$1-c$conflicts"; }

# stamp_ok DIR N: DIR holds complete stores of N records (same recipe, same sizes).
stamp_ok() {
  local dir=$1 n=$2 st=$1/stamp
  [ -s "$st" ] && [ -s "$dir/a.db" ] && [ -s "$dir/b.db" ] && [ -s "$dir/ids" ] || return 1
  [ "$(field_of "$st" recipe)" = "$recipe" ] && [ "$(field_of "$st" records)" = "$n" ] &&
    [ "$(field_of "$st" conflicts)" = "$conflicts" ] &&
    [ "$(field_of "$st" a_bytes)" = "$(stat -c %s "$dir/a.db")" ] &&
    [ "$(field_of "$st" b_bytes)" = "$(stat -c %s "$dir/b.db")" ] &&
    [ "$(wc -l <"$dir/ids")" = "$conflicts" ]
}

# need_disk BYTES DIR: fail early when DIR's file system has less than BYTES free.
need_disk() {
  local avail
  avail=$(df --output=avail -B1 "$2" | tail -n 1 | tr -d ' ')
  [ "$avail" -ge "$1" ] ||
    die "$2 has $(human "$avail") bytes free; building the stores needs about $(human "$1") (set FLK_BENCH_WORK)"
}

ensure_stores() {
  local n=$1 dir tmp every t
  dir=$(store_dir "$n")
  if stamp_ok "$dir" "$n"; then
    say "stores of $(human "$n") records: reusing $dir"
    return 0
  fi
  rm -rf "$dir"
  mkdir -p "$cache"
  need_disk $((n * 1300)) "$cache"
  tmp=$(mktemp -d "$cache/build.XXXXXX")
  building=$tmp
  t=$EPOCHREALTIME
  say "stores of $(human "$n") records with $conflicts conflicts: building in $tmp (kept for later runs)"
  "$gen" "$n" --frame-bytes "$frame_bytes" --region "$region_a" >"$tmp/records.jsonl"
  # The conflicting records: every (N/K)-th one, another outcome, one day earlier.
  every=$((n / conflicts))
  LC_ALL=C awk -v every="$every" -v want="$conflicts" '
    NR % every == 0 && c < want {
      if (!sub(/"outcome":"accepted"/, "\"outcome\":\"rejected\""))
        if (!sub(/"outcome":"(escalated|rejected)"/, "\"outcome\":\"accepted\"")) { bad = NR; exit }
      if (sub(/"ts":"2024-05-01T/, "\"ts\":\"2024-04-30T") != 1) { bad = NR; exit }
      print; c++
    }
    END {
      if (bad) { print "awk: unexpected record on line " bad > "/dev/stderr"; exit 1 }
      if (c != want) { print "awk: " c " conflicting records, expected " want > "/dev/stderr"; exit 1 }
    }' "$tmp/records.jsonl" >"$tmp/conflicts.jsonl"
  sed -n 's/^{"pcs_id":"\([0-9a-f]*\)".*/\1/p' "$tmp/conflicts.jsonl" | LC_ALL=C sort -u >"$tmp/ids"
  [ "$(wc -l <"$tmp/ids")" = "$conflicts" ] || die "the conflicting records do not have $conflicts distinct pcs_ids"
  "$flk_wal" append --wal-dir "$tmp/wal-a" --region "$region_a" <"$tmp/records.jsonl" >/dev/null
  rm -f "$tmp/records.jsonl"
  "$flk_wal" append --wal-dir "$tmp/wal-b" --region "$region_b" <"$tmp/conflicts.jsonl" >/dev/null
  "$flk_rebuild" --config "$cfg" --region "$region_a" --wal-dir "$tmp/wal-a" --no-mailbox --temp-dir "$tmp" \
    --store "sqlite://$tmp/a.db" >"$tmp/rebuild-a.json"
  [ "$(field_of "$tmp/rebuild-a.json" winners)" = "$n" ] || die "rebuild of a.db: not $n winners: $(cat "$tmp/rebuild-a.json")"
  rm -rf "$tmp/wal-a"
  cp "$tmp/a.db" "$tmp/b.db"
  "$flk_rebuild" --config "$cfg" --region "$region_b" --wal-dir "$tmp/wal-b" --no-mailbox --in-place \
    --store "sqlite://$tmp/b.db" >"$tmp/rebuild-b.json"
  if [ "$(field_of "$tmp/rebuild-b.json" replaced)" != "$conflicts" ] ||
    [ "$(field_of "$tmp/rebuild-b.json" winners)" != "$n" ]; then
    die "in-place merge into b.db: expected $conflicts replaced, $n winners: $(cat "$tmp/rebuild-b.json")"
  fi
  rm -rf "$tmp/wal-b"
  # The rows' bytes as a remote scan would fetch them: the eight columns of `records`
  # (lib/flk/store/sqlite.cpp), text and blobs at their length (all ASCII), the two
  # integers (outcome, ts) at 8 bytes each.
  local row_bytes
  row_bytes=$(sqlite3 "$tmp/a.db" "SELECT sum(length(pcs_id) + length(tenant_id) + 16 + length(region)
    + coalesce(length(params), 0) + coalesce(length(payload), 0) + length(digest)) FROM records")
  printf '{"recipe":%s,"records":%s,"conflicts":%s,"a_bytes":%s,"b_bytes":%s,"row_bytes":%s,"build_seconds":%s}\n' \
    "$recipe" "$n" "$conflicts" "$(stat -c %s "$tmp/a.db")" "$(stat -c %s "$tmp/b.db")" "$row_bytes" "$(since "$t")" \
    >"$tmp/stamp"
  mkdir -p "$dir"
  mv "$tmp/a.db" "$tmp/b.db" "$tmp/ids" "$tmp/conflicts.jsonl" "$tmp/rebuild-a.json" "$tmp/rebuild-b.json" "$dir/"
  mv "$tmp/stamp" "$dir/stamp" # last: its presence means complete
  rm -rf "$tmp"
  building=""
  say "  built in $(fmt2 "$(since "$t")") s"
}

ensure_stores "$records"
[ "$small_records" = "$records" ] || [ -n "$only" ] || ensure_stores "$small_records"
dir=$(store_dir "$records")
small_dir=$(store_dir "$small_records")

# ---------------------------------------------------------------------------------------
# 1) scan, beside sqlite3 dumps + comm -3.
load_start=$(cut -d ' ' -f 1-3 /proc/loadavg)

# flk_scan DIR OUT: flk-diverge scan of DIR's two stores, findings to OUT, stderr to
# OUT.err, GNU time's "%M %U %S" (KiB, s, s) to OUT.time. Checks that it found exactly the
# planted conflicts: their number, or with a third argument "full" the pcs_ids themselves,
# and that it compared every pcs_id.
flk_scan() {
  local d=$1 out=$2 rc=0 n
  n=$(field_of "$d/stamp" records)
  "$gnu_time" -f '%M %U %S' -o "$out.time" "$flk_diverge" --config "$cfg" -v scan \
    --store "$region_a=sqlite://$d/a.db" --store "$region_b=sqlite://$d/b.db" --no-worm >"$out" 2>"$out.err" || rc=$?
  [ "$rc" = 1 ] || { cat "$out.err" >&2; die "flk-diverge scan exited $rc, expected 1 (divergences found)"; }
  check_findings "$d" "$out" "${3:-}"
  grep -q "^flk-diverge: $n pcs_ids compared in .*: $conflicts conflict(s), 0 missing" "$out.err" ||
    { cat "$out.err" >&2; die "flk-diverge scan did not compare $n pcs_ids and find $conflicts conflicts, 0 missing"; }
}

# check_findings DIR OUT [full]: OUT holds exactly one conflict line per planted pcs_id.
check_findings() {
  local got kinds
  got=$(wc -l <"$2")
  kinds=$(grep -c '"kind":"conflict"' "$2" || true)
  if [ "$got" != "$conflicts" ] || [ "$kinds" != "$conflicts" ]; then
    die "flk-diverge scan: $got findings ($kinds conflicts), expected exactly $conflicts conflicts"
  fi
  if [ "${3:-}" = full ]; then
    sed -n 's/^{"pcs_id":"\([0-9a-f]*\)".*/\1/p' "$2" | LC_ALL=C sort -u | cmp -s - "$1/ids" ||
      die "flk-diverge scan: the pcs_ids found are not the $conflicts planted ones ($1/ids)"
  fi
}

# base_scan DIR: the baseline, sqlite3 dumps of both stores (at once, into files) then
# comm -3; sets base_dump_s and base_comm_s. Checks that comm found 2 lines for each
# planted pcs_id (one per store), and with "full" that they are the planted pcs_ids.
base_scan() {
  local d=$1 t pa pb got
  local q="SELECT pcs_id, outcome FROM records ORDER BY pcs_id"
  rm -f "$work/a.txt" "$work/b.txt" "$work/comm.out"
  t=$EPOCHREALTIME
  sqlite3 "$d/a.db" "$q" >"$work/a.txt" &
  pa=$!
  sqlite3 "$d/b.db" "$q" >"$work/b.txt" &
  pb=$!
  wait "$pa"
  wait "$pb"
  base_dump_s=$(since "$t")
  t=$EPOCHREALTIME
  LC_ALL=C comm -3 "$work/a.txt" "$work/b.txt" >"$work/comm.out"
  base_comm_s=$(since "$t")
  got=$(wc -l <"$work/comm.out")
  [ "$got" = $((2 * conflicts)) ] || die "baseline: comm -3 printed $got lines, expected $((2 * conflicts))"
  if [ "${2:-}" = full ]; then
    sed 's/^\t//; s/|.*//' "$work/comm.out" | LC_ALL=C sort -u | cmp -s - "$d/ids" ||
      die "baseline: the pcs_ids comm -3 found are not the $conflicts planted ones"
  fi
}

a_bytes=$(field_of "$dir/stamp" a_bytes)
b_bytes=$(field_of "$dir/stamp" b_bytes)
dump_bytes=null # the scan's dump, unknown without the scan figures
if [ -z "$only" ]; then
  say "scan: one untimed run of each (warms the page cache; every pcs_id found checked), then $runs runs"
  flk_scan "$dir" "$work/findings" full
  base_scan "$dir" full
  dump_bytes=$(stat -c %s "$work/a.txt")
  flk_s=()
  base_s=()
  ratio_s=()
  dump_s=()
  comm_s=()
  rss_s=()
  cpu_s=()
  for ((i = 1; i <= runs; i++)); do
    t=$EPOCHREALTIME
    flk_scan "$dir" "$work/findings"
    flk_s+=("$(since "$t")")
    rss_s+=("$(tail -n 1 "$work/findings.time" | awk '{ print $1 }')")
    cpu_s+=("$(tail -n 1 "$work/findings.time" | awk '{ print $2 + $3 }')")
    t=$EPOCHREALTIME
    base_scan "$dir"
    base_s+=("$(since "$t")")
    dump_s+=("$base_dump_s")
    comm_s+=("$base_comm_s")
    ratio_s+=("$(calc "${base_s[-1]} / ${flk_s[-1]}")")
    say "  run $i: flk-diverge scan $(fmt2 "${flk_s[-1]}") s (CPU $(fmt2 "${cpu_s[-1]}") s), sqlite3 + comm $(fmt2 "${base_s[-1]}") s (dumps $(fmt2 "$base_dump_s"), comm $(fmt2 "$base_comm_s"))"
  done
  rm -f "$work/a.txt" "$work/b.txt"
  flk_t=$(median "${flk_s[@]}")
  base_t=$(median "${base_s[@]}")
  ratio=$(median "${ratio_s[@]}")
  flk_rps=$(calc "$records / $flk_t")
  base_rps=$(calc "$records / $base_t")
  cpu=$(median "${cpu_s[@]}")
  rss=$(median "${rss_s[@]}")
  printf '{"figure":"diverge.scan","unit":"records/s","flk":%s,"baseline":%s,"baseline_name":"sqlite3 dumps of both stores (at once) sorted by pcs_id into files, then comm -3","ratio":%s,"goal":"ratio >= 3","runs":%s,"records":%s,"conflicts":%s,"store_bytes":[%s,%s],"dump_bytes":%s,"flk_seconds":%s,"baseline_seconds":%s,"baseline_dump_seconds":%s,"baseline_comm_seconds":%s,"ratios":%s,"flk_cpu_seconds":%s,"flk_max_rss_kib":%s,%s}\n' \
    "$flk_rps" "$base_rps" "$ratio" "$runs" "$records" "$conflicts" "$a_bytes" "$b_bytes" "$dump_bytes" \
    "$(json_array "${flk_s[@]}")" "$(json_array "${base_s[@]}")" "$(json_array "${dump_s[@]}")" \
    "$(json_array "${comm_s[@]}")" "$(json_array "${ratio_s[@]}")" "$(json_array "${cpu_s[@]}")" \
    "$(json_array "${rss_s[@]}")" "$common" >>"$work/results.tmp"
  row "scan, 2 SQLite stores (rec/s)" "$(human "$flk_rps")" "$(human "$base_rps")" "$(fmt2 "$ratio")" \
    "$(human "$records") rec/store, $conflicts conflicts found by both; s: $(fmt2 "$flk_t")/$(fmt2 "$base_t") (dumps $(fmt2 "$(median "${dump_s[@]}")") + comm $(fmt2 "$(median "${comm_s[@]}")")); flk CPU $(fmt2 "$cpu") s; goal >= 3.00"

  # Memory: the same scan of stores a fifth the size (same number of conflicts).
  small_rss_s=()
  if [ "$small_records" != "$records" ]; then
    say "scan: $runs runs on the stores of $(human "$small_records") records, for memory"
    small_s=()
    flk_scan "$small_dir" "$work/findings-small" full
    for ((i = 1; i <= runs; i++)); do
      t=$EPOCHREALTIME
      flk_scan "$small_dir" "$work/findings-small"
      small_s+=("$(since "$t")")
      small_rss_s+=("$(tail -n 1 "$work/findings-small.time" | awk '{ print $1 }')")
    done
    small_rss=$(median "${small_rss_s[@]}")
    small_t=$(median "${small_s[@]}")
  else
    small_rss_s=("${rss_s[@]}")
    small_rss=$rss
    small_t=$flk_t
  fi
  "$gnu_time" -f %M -o "$work/floor.time" "$flk_diverge" --help >/dev/null
  floor_kib=$(tail -n 1 "$work/floor.time")
  printf '{"figure":"max_rss.diverge_scan","unit":"KiB","flk":%s,"baseline":%s,"baseline_name":"the same scan of stores of %s records","ratio":%s,"goal":"independent of store size","records":%s,"baseline_records":%s,"flk_samples":%s,"baseline_samples":%s,"baseline_scan_seconds":%s,"process_floor_kib":%s,%s}\n' \
    "$rss" "$small_rss" "$small_records" "$(calc "$rss / $small_rss")" "$records" "$small_records" \
    "$(json_array "${rss_s[@]}")" "$(json_array "${small_rss_s[@]}")" "$small_t" "$floor_kib" "$common" >>"$work/results.tmp"
  row "max RSS, scan (MiB)" "$(fmt2 "$(calc "$rss / 1024")") @$(human "$records")" \
    "$(fmt2 "$(calc "$small_rss / 1024")") @$(human "$small_records")" "$(fmt2 "$(calc "$rss / $small_rss")")" \
    "goal: constant (ratio ~1.00); scan of $(human "$small_records"): $(fmt2 "$small_t") s; flk-diverge --help alone $(fmt2 "$(calc "$floor_kib / 1024")") MiB"
fi

# ---------------------------------------------------------------------------------------
# 2) digest: time beside a dump of the columns it hashes; size; bytes to exchange.
#
# Exchange = one digest (a region sends its own; the other compares it with its store,
# `compare A --store URL`, and never sends its digest) + the extract of the first
# store's rows in the differing buckets (`flk-diverge extract`: a SQLite store file,
# measured), which the other region scans against its own. Goal: <= 1% of the store's
# size. With both digests sent (each region sends its own), for comparison: in the notes;
# the rows' bytes alone (differing buckets × the eight columns at their length / buckets,
# see ensure_stores) too.
row_bytes=$(field_of "$dir/stamp" row_bytes)
bucket_counts=("$default_buckets")
[ "$big_buckets" = "$default_buckets" ] || bucket_counts+=("$big_buckets")
declare -A dg_s dgb_s dgr_s dg_rss
both_notes=()
dump_q="SELECT pcs_id, outcome, ts, region FROM records ORDER BY pcs_id"
if [ -z "$only" ]; then
  say "digest: $runs runs of flk-diverge digest (--buckets ${bucket_counts[*]}) and sqlite3 dumps of (pcs_id, outcome, ts, region)"
  for ((i = 1; i <= runs; i++)); do
    for nb in "${bucket_counts[@]}"; do
      rm -f "$work/a-$nb.digest"
      t=$EPOCHREALTIME
      "$gnu_time" -f %M -o "$work/digest.time" "$flk_diverge" --config "$cfg" digest --store "sqlite://$dir/a.db" \
        --buckets "$nb" --region "$region_a" --output "$work/a-$nb.digest"
      ft=$(since "$t")
      dg_rss[$nb]+="$(tail -n 1 "$work/digest.time") "
      rm -f "$work/dump.txt"
      t=$EPOCHREALTIME
      sqlite3 "$dir/a.db" "$dump_q" >"$work/dump.txt"
      bt=$(since "$t")
      dg_s[$nb]+="$ft "
      dgb_s[$nb]+="$bt "
      dgr_s[$nb]+="$(calc "$bt / $ft") "
      say "  run $i, $nb buckets: digest $(fmt2 "$ft") s, sqlite3 dump $(fmt2 "$bt") s"
    done
  done
  full_dump_bytes=$(stat -c %s "$work/dump.txt")
  rm -f "$work/dump.txt"
else
  say "digest: flk-diverge digest of a.db, once (--buckets ${bucket_counts[*]}; FLK_BENCH_DIVERGE_ONLY=exchange: untimed)"
  for nb in "${bucket_counts[@]}"; do
    "$flk_diverge" --config "$cfg" digest --store "sqlite://$dir/a.db" --buckets "$nb" --region "$region_a" \
      --output "$work/a-$nb.digest"
  done
fi

# shellcheck disable=SC2086 # the per-count lists are space-separated on purpose
for nb in "${bucket_counts[@]}"; do
  # The other side's digest, the comparison, and a scan of only the differing buckets
  # (once, checked: it must find exactly the planted conflicts).
  "$flk_diverge" --config "$cfg" digest --store "sqlite://$dir/b.db" --buckets "$nb" --region "$region_b" \
    --output "$work/b-$nb.digest"
  rc=0
  "$flk_diverge" compare "$work/a-$nb.digest" "$work/b-$nb.digest" >"$work/differ-$nb" || rc=$?
  [ "$rc" = 1 ] || die "flk-diverge compare exited $rc, expected 1 (buckets differ)"
  differ=$(wc -l <"$work/differ-$nb")
  if [ "$differ" -lt 1 ] || [ "$differ" -gt "$conflicts" ]; then
    die "compare: $differ differing buckets for $conflicts conflicts"
  fi
  # What the receiving region does with the one digest sent: the same buckets.
  rc=0
  "$flk_diverge" --config "$cfg" compare "$work/a-$nb.digest" --store "sqlite://$dir/b.db" \
    >"$work/differ-store-$nb" || rc=$?
  [ "$rc" = 1 ] || die "flk-diverge compare --store exited $rc, expected 1 (buckets differ)"
  cmp -s "$work/differ-$nb" "$work/differ-store-$nb" ||
    die "compare A --store B named other buckets than compare A B ($work/differ-store-$nb, $work/differ-$nb)"
  # The first region extracts the rows of those buckets (a SQLite store file: what it
  # sends back), the second scans them against its own store.
  rm -f "$work/a-$nb.extract"
  t=$EPOCHREALTIME
  "$flk_diverge" --config "$cfg" extract --store "sqlite://$dir/a.db" --buckets "@$work/differ-$nb" \
    --bucket-count "$nb" --output "$work/a-$nb.extract" >"$work/extract-$nb.json"
  extract_t=$(since "$t")
  rc=0
  t=$EPOCHREALTIME
  "$flk_diverge" --config "$cfg" -v scan --buckets "@$work/differ-$nb" --bucket-count "$nb" \
    --store "$region_a=sqlite://$work/a-$nb.extract" --store "$region_b=sqlite://$dir/b.db" --no-worm \
    >"$work/bfindings-$nb" 2>"$work/bfindings-$nb.err" || rc=$?
  bscan_t=$(since "$t")
  [ "$rc" = 1 ] || { cat "$work/bfindings-$nb.err" >&2; die "scan --buckets exited $rc, expected 1"; }
  check_findings "$dir" "$work/bfindings-$nb" full

  a_dg=$(stat -c %s "$work/a-$nb.digest")
  b_dg=$(stat -c %s "$work/b-$nb.digest")
  x_bytes=$(stat -c %s "$work/a-$nb.extract")
  x_records=$(json_field "$work/extract-$nb.json" records)
  per_bucket=$(calc "$row_bytes / $nb")
  rows_bytes=$(icalc "$differ * $row_bytes / $nb")
  exchange=$(icalc "$a_dg + $x_bytes")
  pct=$(calc "100 * $exchange / $a_bytes")
  exchange_both=$(icalc "$a_dg + $b_dg + $x_bytes")
  pct_both=$(calc "100 * $exchange_both / $a_bytes")
  both_notes+=("$nb buckets: $(human "$a_dg") + $(human "$b_dg") + $(human "$x_bytes") = $(human "$exchange_both") B = $(fmt2 "$pct_both")%")
  if [ -z "$only" ]; then
    ft=$(median ${dg_s[$nb]})
    bt=$(median ${dgb_s[$nb]})
    dr=$(median ${dgr_s[$nb]})
    drss=$(median ${dg_rss[$nb]})
    printf '{"figure":"diverge.digest_%s","unit":"records/s","flk":%s,"baseline":%s,"baseline_name":"sqlite3 dump of pcs_id, outcome, ts, region sorted by pcs_id into a file","ratio":%s,"runs":%s,"records":%s,"buckets":%s,"digest_bytes":%s,"store_bytes":%s,"dump_bytes":%s,"flk_seconds":%s,"baseline_seconds":%s,"ratios":%s,"flk_max_rss_kib":%s,%s}\n' \
      "$nb" "$(calc "$records / $ft")" "$(calc "$records / $bt")" "$dr" "$runs" "$records" "$nb" "$a_dg" "$a_bytes" \
      "$full_dump_bytes" "$(json_array ${dg_s[$nb]})" "$(json_array ${dgb_s[$nb]})" "$(json_array ${dgr_s[$nb]})" \
      "$(json_array ${dg_rss[$nb]})" "$common" >>"$work/results.tmp"
    row "digest, $nb buckets (rec/s)" "$(human "$(calc "$records / $ft")")" "$(human "$(calc "$records / $bt")")" \
      "$(fmt2 "$dr")" "s: $(fmt2 "$ft")/$(fmt2 "$bt"); digest $(human "$a_dg") B = $(fmt2 "$(calc "100 * $a_dg / $a_bytes")")% of the store ($(human "$a_bytes") B); max RSS $(fmt2 "$(calc "$drss / 1024")") MiB"
  fi
  printf '{"figure":"diverge.exchange_%s","unit":"bytes","flk":%s,"baseline":%s,"baseline_name":"the store (a.db)","ratio":%s,"goal":"<= 1%% of the store","percent_of_store":%s,"records":%s,"conflicts":%s,"buckets":%s,"digest_bytes":[%s,%s],"digests_sent":1,"exchange_both_digests":%s,"percent_of_store_both_digests":%s,"differing_buckets":%s,"extract_bytes":%s,"extract_records":%s,"extract_seconds":%s,"row_bytes":%s,"bucket_row_bytes":%s,"differing_rows_bytes_model":%s,"sorted_dump_bytes":%s,"scan_buckets_seconds":%s,%s}\n' \
    "$nb" "$exchange" "$a_bytes" "$(calc "$a_bytes / $exchange")" "$pct" "$records" "$conflicts" "$nb" "$a_dg" "$b_dg" \
    "$exchange_both" "$pct_both" "$differ" "$x_bytes" "$x_records" "$extract_t" "$row_bytes" "$per_bucket" "$rows_bytes" \
    "$dump_bytes" "$bscan_t" "$common" \
    >>"$work/results.tmp"
  row "exchange, $nb buckets (B)" "$(human "$exchange")" "$(human "$a_bytes")" "$(fmt2 "$(calc "$a_bytes / $exchange")")" \
    "$(fmt2 "$pct")% of the store, goal <= 1%: one digest $(human "$a_dg") + the extract of $differ differing buckets $(human "$x_bytes") ($(human "$x_records") records, $(fmt2 "$extract_t") s; the rows' bytes alone: $(human "$rows_bytes")); both digests: $(fmt2 "$pct_both")%; scan --buckets of the extract $(fmt2 "$bscan_t") s"
done

load_end=$(cut -d ' ' -f 1-3 /proc/loadavg)
# Every line says how busy the machine was (load averages 1, 5, 15 min, at the start of
# the figures and at the end): a shared 2-core VM moves these figures a lot.
sed "s/}\$/,\"loadavg_start\":\"$load_start\",\"loadavg_end\":\"$load_end\"}/" "$work/results.tmp" >>"$results"

# ---------------------------------------------------------------------------------------
printf '\nflk divergence benchmarks — commit %s, %s CPUs, stores on %s, %s runs per figure (median), %s records per store, %s conflicts\n' \
  "$commit" "$(nproc)" "$fs_type" "$runs" "$(human "$records")" "$conflicts"
printf 'load average %s at the start of the figures, %s at the end\n' "$load_start" "$load_end"
printf '%-34s %18s %18s %7s  %s\n' "figure" "flk" "baseline" "ratio" "notes"
printf '%s\n' "${table[@]}"
if [ -z "$only" ]; then
  cat <<EOF

Baselines: scan = sqlite3 dumping both stores at once ('SELECT pcs_id, outcome FROM records
ORDER BY pcs_id', $(human "$dump_bytes") B each) into files, then 'comm -3' of the two;
max RSS = the same scan of stores of $(human "$small_records") records; digest = sqlite3 dumping the
columns a digest hashes (pcs_id, outcome, ts, region) sorted by pcs_id into a file;
exchange = the store's size ($(human "$a_bytes") B).
ratio = baseline time / flk time (median of pairs); big / small for memory; store / exchange for bytes.
EOF
else
  printf '\nFLK_BENCH_DIVERGE_ONLY=exchange: the exchange figures only; ratio = store / exchange.\n'
fi
cat <<EOF
Exchange = one digest (the first store's, as sent: the receiving region compares it with
its own store, 'compare A --store URL' — checked to name the same buckets as comparing
the two digests — and sends no digest back) + the file 'flk-diverge extract' writes of the
first store's rows in the differing buckets (a SQLite store, sent back uncompressed),
which the receiving region scans with 'scan --buckets' against its own store (checked: it
finds exactly the planted conflicts). "The rows' bytes alone" = differing buckets x the
eight columns of 'records' at their length ($(human "$row_bytes") B for the whole store) /
buckets. Protocol overhead is not counted.
With both digests sent (each region its own), of the store's $(human "$a_bytes") B:
$(printf '  %s\n' "${both_notes[@]}")
Goals: scan >= 3x the baseline, memory independent of the stores' size; exchange <= 1% of
the store. Both scans must find exactly the $conflicts planted conflicts (checked).
JSON lines appended to: $results
EOF
