#!/usr/bin/env bash
# The three-region demo: us-east-1, us-west-2 and eu-west-1 on loopback, each with its
# inbox WAL, SQLite dedup store, mailbox, state, WORM ledger, tokens and flk.yaml (in the
# shape of the source document), its flk-serve, and flk-ship / flk-read running as
# --follow services. Every region writes a stream of PCS decisions; they replicate (lag,
# health, metrics); the link us-east-1 <-> eu-west-1 is cut and both sides decide the
# same PCSs differently (a split-brain); flk-diverge finds it, the link heals, the
# conflicts that replay cannot settle are reconciled, and the demo checks that all
# three regions converged. Everything happens in a temporary directory; every process
# it starts is stopped when it ends, however it ends.
#
# Usage: scripts/demo.sh [BINDIR]      (default: $FLK_BIN, else build/bin)
# Environment:
#   DEMO_RECORDS=N        records each region writes in its stream (default 3000)
#   FLK_DEMO_KEEP=1       keep the temporary directory (logs, stores, ledgers)
#   FLK_DEMO_SABOTAGE=1   skip the reconciliation: the demo must then fail
# Exit status: 0 when every region converged, 1 when not, other codes when a step failed.
set -euo pipefail
set -o errtrace # the ERR trap (below) in functions and subshells too

started=$(date +%s%N)
here=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:-${FLK_BIN:-$here/build/bin}}
case $bin in /*) ;; *) bin=$(pwd)/$bin ;; esac
records=${DEMO_RECORDS:-3000}
sabotage=${FLK_DEMO_SABOTAGE:-0}

REGIONS=(us-east-1 us-west-2 eu-west-1)
EAST=us-east-1 WEST=us-west-2 EU=eu-west-1
SPLIT=200                # PCSs both sides of the split decide, differently
FRESH=300                # other PCSs each side decides during the split

die() {
  printf 'demo.sh: error: %s\n' "$*" >&2
  exit 2
}

for t in flk-wal flk-serve flk-ship flk-read flk-watermark flk-health flk-diverge flk-rebuild-dedup; do
  [[ -x $bin/$t ]] || die "cannot run '$bin/$t': build the tools first (make)"
done
for t in jq sqlite3 awk; do
  command -v "$t" >/dev/null || die "'$t' is needed (scripts/install-deps.sh installs it)"
done
if ! [[ $records =~ ^[0-9]+$ ]] || ((records < 500)); then
  die "DEMO_RECORDS must be a number of at least 500, not '$records'"
fi
records=$((10#$records))
SHARED=$((records / 10)) # PCSs every region decides, alike
PATH=$bin:$PATH

umask 077
tmp=$(mktemp -d "${TMPDIR:-/tmp}/flk-demo.XXXXXX")
declare -A procs=() # pid -> what it is, for every background process still running

alive() {
  local s
  s=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
  [[ $s != Z* ]]
}

cleanup() {
  local rc=$? pid i any
  trap - EXIT INT TERM
  ((${#procs[@]} == 0)) || echo "demo.sh: stopping the ${#procs[@]} processes still running" >&2
  for pid in "${!procs[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for ((i = 0; i < 50; i++)); do
    any=0
    for pid in "${!procs[@]}"; do
      if alive "$pid"; then any=1 && break; fi
    done
    ((any)) || break
    sleep 0.1
  done
  for pid in "${!procs[@]}"; do
    if alive "$pid"; then
      echo "demo.sh: ${procs[$pid]} (pid $pid) did not stop on SIGTERM: killed" >&2
      kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
  done
  if [[ ${FLK_DEMO_KEEP:-0} == 1 ]]; then
    echo "(kept: $tmp)"
  else
    rm -rf "$tmp"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'echo "demo.sh: error: line $LINENO: exit status $?: $BASH_COMMAND" >&2' ERR

# --- printing ------------------------------------------------------------------------

n_step=0
step() {
  n_step=$((n_step + 1))
  printf '\n[%d] %s\n' "$n_step" "$*"
}
# say TEXT: a line of explanation; cmd ARGS: the command about to run ($D is $tmp).
say() { printf '    %s\n' "$*"; }
cmd() { printf '  $ %s\n' "${*//"$tmp"/\$D}"; }
indent() { sed -e "s|$tmp|\$D|g" -e 's/^/    /'; }
elapsed() { echo $((($(date +%s%N) - started) / 1000000000)); }

# --- per region ----------------------------------------------------------------------

rdir() { echo "$tmp/$1"; }
cfg() { echo "$tmp/$1/flk.yaml"; }
store() { echo "sqlite://$tmp/$1/dedup.db"; }
port() { cat "$tmp/$1/serve.port"; }
others() {
  local p
  for p in "${REGIONS[@]}"; do [[ $p == "$1" ]] || echo "$p"; done
}

# start NAME LOG CMD...: CMD in the background, stdout to LOG.out, stderr to LOG.err;
# sets PID.
start() {
  local name=$1 log=$2
  shift 2
  "$@" </dev/null >>"$log.out" 2>>"$log.err" &
  PID=$!
  procs[$PID]=$name
}
# stop PID: SIGTERM, and its exit status must be 0.
stop() {
  local rc=0 name=${procs[$1]}
  kill -TERM "$1" 2>/dev/null || true
  wait "$1" || rc=$?
  unset "procs[$1]"
  ((rc == 0)) || die "$name exited $rc after SIGTERM"
}

# A closed port on loopback: where an endpoint points once its link is cut.
closed_port() {
  local p
  for p in 1 9 47 99 1023 2999 4444; do
    (: <>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || {
      echo "$p"
      return
    }
  done
  die "no closed port found on 127.0.0.1"
}

# config R [CUT]: writes R's flk.yaml: its paths and store, multi-way replication to the
# other two (us-east-1: selective, tenant-d to us-west-2 only), their endpoints (once
# their servers listen; CUT's at a closed port), the tokens, and every store for
# flk-diverge.
config() {
  local r=$1 cut=${2:-} p
  {
    printf 'region: %s\n' "$r"
    printf 'paths:\n'
    printf '  wal: %s\n  mailbox: %s\n  state: %s\n  worm: %s\n' \
      "$(rdir "$r")/wal" "$(rdir "$r")/mailbox" "$(rdir "$r")/state" "$(rdir "$r")/worm.jsonl"
    printf 'wal:\n  segmentBytes: 64KiB\n  segmentAge: 200ms\n'
    printf 'dedup:\n  url: %s\n' "$(store "$r")"
    printf 'crr:\n  enabled: true\n  sourceRegion: %s\n' "$r"
    if [[ $r == "$EAST" ]]; then
      printf '  replicationMode: selective\n  policies:\n'
      for p in tenant-a tenant-b tenant-c; do
        printf '    - tenantID: %s\n      targetRegions: [%s, %s]\n' "$p" "$WEST" "$EU"
      done
      printf '    - tenantID: tenant-d\n      targetRegions: [%s]\n' "$WEST"
    else
      printf '  replicationMode: multi-way\n  peers: [%s]\n' "$(others "$r" | paste -sd, | sed 's/,/, /')"
    fi
    if [[ -s $(rdir "$(others "$r" | head -n 1)")/serve.port ]]; then
      printf '  endpoints:\n'
      for p in $(others "$r"); do
        printf '    %s:\n' "$p"
        if [[ $p == "$cut" ]]; then
          printf '      url: http://127.0.0.1:%s   # the link is cut\n' "$CLOSED"
        else
          printf '      url: http://127.0.0.1:%s\n' "$(port "$p")"
        fi
        printf '      tokenFile: %s\n' "$(rdir "$r")/tokens/to-$p"
      done
    fi
    printf '  retry: {initialBackoff: 100ms, maxBackoff: 1s, deadline: 10s}\n'
    printf 'serve:\n  tokens:\n'
    for p in $(others "$r"); do printf '    %s: %s\n' "$p" "$(rdir "$r")/tokens/from-$p"; done
    printf 'diverge:\n  stores:\n'
    for p in "${REGIONS[@]}"; do printf '    %s: %s\n' "$p" "$(store "$p")"; done
  } >"$(cfg "$r")"
}

# gen REGION N FIRST TENANTS...: N decisions (no ts: flk-wal append stamps the time it
# reads them); REGION "shared" makes PCSs every region decides alike.
gen() {
  local r=$1 n=$2 first=$3
  shift 3
  awk -v r="$r" -v n="$n" -v first="$first" -v tenants="$*" 'BEGIN {
    nt = split(tenants, t, " ")
    k = r == "shared" ? 0 : r == "us-east-1" ? 1 : r == "us-west-2" ? 2 : 3
    for (i = first; i < first + n; i++) {
      id = ""
      for (j = 1; j <= 6; j++) id = id sprintf("%08x", ((i + 1) * 2654435761 * (2 * j + 1) + k * 2246822519 * j) % 4294967296)
      x = (i * 7 + k * 3) % 20
      o = x < 2 ? "escalated" : x == 2 ? "rejected" : "accepted"
      printf "{\"pcs_id\":\"%s%08x%08x\",\"tenant_id\":\"%s\",\"outcome\":\"%s\",\"params\":\"tolerance-v1.4\"}\n", id, k, i, t[i % nt + 1], o
    }
  }'
}

# gen_split REGION: the SPLIT PCSs (tenants a-d) both sides of the split decide:
# us-east-1 accepts, eu-west-1 escalates; 2 ms apart, and of each tenant's, half were
# decided first in us-east-1, half in eu-west-1. Times from BASE_NS (1.5 s ago).
gen_split() {
  local s=$((BASE_NS / 1000000000))
  awk -v r="$1" -v n="$SPLIT" -v frac=$((BASE_NS % 1000000000)) \
    -v d0="$(date -u -d "@$s" +%Y-%m-%dT%H:%M:%S)" -v d1="$(date -u -d "@$((s + 1))" +%Y-%m-%dT%H:%M:%S)" 'BEGIN {
    split("tenant-a tenant-b tenant-c tenant-d", t, " ")
    for (i = 0; i < n; i++) {
      off = i * 2000000 + 1000000
      if (r == "eu-west-1") off += (int(i / 4) % 2 == 0 ? 500000 : -500000)
      ns = frac + off
      d = ns >= 1000000000 ? d1 : d0
      if (ns >= 1000000000) ns -= 1000000000
      id = ""
      for (j = 1; j <= 6; j++) id = id sprintf("%08x", ((i + 1) * 2654435761 * (2 * j + 1) + 9 * 2246822519 * j) % 4294967296)
      printf "{\"pcs_id\":\"%s%08x%08x\",\"tenant_id\":\"%s\",\"outcome\":\"%s\",\"ts\":\"%s.%09dZ\",\"params\":\"%s\"}\n", id, 9, i, t[i % 4 + 1],
        r == "eu-west-1" ? "escalated" : "accepted", d, ns, r == "eu-west-1" ? "tolerance-v1.5" : "tolerance-v1.4"
    }
  }'
}

# write R FILE [PACE]: R's backend decides the records of FILE: flk-wal append, in the
# background, fed in tenths PACE seconds apart when PACE is given. Adds its pid to WRITERS.
WRITERS=()
write() {
  local r=$1 f=$2 pace=${3:-} in=$2
  if [[ -n $pace ]]; then
    in=$f.fifo
    mkfifo "$in"
    awk -v n=$((($(wc -l <"$f") + 9) / 10)) -v pace="$pace" \
      '{ print } NR % n == 0 { fflush(); system("sleep " pace) }' "$f" </dev/null >"$in" 2>>"$(rdir "$r")/feed.err" &
    procs[$!]="the feed of flk-wal append in $r"
    WRITERS+=("$!")
  fi
  flk-wal --config "$(cfg "$r")" append <"$in" >>"$(rdir "$r")/append.out" 2>>"$(rdir "$r")/append.err" &
  procs[$!]="flk-wal append in $r"
  WRITERS+=("$!")
}
# writers_done: waits for every writer; each must exit 0.
writers_done() {
  local pid rc
  for pid in "${WRITERS[@]}"; do
    rc=0
    wait "$pid" || rc=$?
    ((rc == 0)) || die "${procs[$pid]} exited $rc: $(tail -n 3 "$tmp"/*/append.err)"
    unset "procs[$pid]"
  done
  WRITERS=()
}
# own R: R's own decisions into R's own store, as its backend does (an in-place merge of
# its WAL: first write wins, like replay).
own() { flk-rebuild-dedup --config "$(cfg "$1")" --in-place --no-mailbox -q; }

start_ship() {
  start "flk-ship --follow in $1" "$(rdir "$1")/ship" \
    flk-ship --config "$(cfg "$1")" --follow --metrics-file "$(rdir "$1")/ship.prom"
  SHIP[$1]=$PID
}
declare -A SHIP=()

# drain R [TARGET...]: flk-watermark wait in R until nothing written in R is pending at
# TARGET (default: every peer): lag under 1 ms, which only 0 is. Lines to R/wait.out.
drain() {
  local r=$1 t=() x
  shift
  for x in "$@"; do t+=(--target "$x"); done
  flk-watermark --config "$(cfg "$r")" wait --max-lag 1ms --interval 100ms --timeout 60s --probe-timeout 2s -q \
    "${t[@]}" >"$(rdir "$r")/wait.out" || die "replication from $r did not drain in 60 s: $(cat "$(rdir "$r")/wait.out")"
}

# lag_lines: flk-watermark lag's JSON lines, one short line per stream.
lag_lines() {
  jq -r '"\(.source) -> \(.target): lag \(.lag_seconds * 1000 | round / 1000) s (ship \(.ship_seconds * 1000 | round / 1000) s, apply \(.apply_seconds * 1000 | round / 1000) s); segments: written \(.wal_sequence), shipped \(.shipped_sequence), applied \(.applied_sequence)\(if .stale then "; STALE: the target cannot be asked" else "" end)"'
}
health_lines() {
  jq -r '"\(.region) \(if .healthy then "healthy" else "UNHEALTHY" end) (\(.url), status \(.status), \(.ms) ms\(if .canary_ms then ", canary applied after \(.canary_ms) ms" else "" end))\(if .error then ": \(.error)" else "" end)"'
}
# short: a finding or plan line with its digests and pcs_id cut short.
short() {
  jq -c '.pcs_id |= .[0:12] + "..." | (.regions // {}) |= map_values(if type == "object" then .digest |= .[0:8] + "..." else . end)
    | if .winner then .winner.digest |= .[0:8] + "..." else . end'
}
# read_totals R: what R's reader applied so far: "SEGMENTS RECORDS APPLIED DUPLICATES LATER CONFLICTS".
read_totals() {
  jq -rs 'def s(f): map(f) | add // 0; "\(length) \(s(.records)) \(s(.applied)) \(s(.duplicates)) \(s(.later)) \(s(.conflicts))"' \
    "$(rdir "$1")/read.out"
}
# scan NAME: flk-diverge scan over the three stores (as us-east-1, whose policies are the
# selective ones) into NAME.jsonl, metrics into NAME.prom; sets SCAN_RC, CONFLICTS, MISSING.
scan() {
  SCAN_RC=0
  flk-diverge --config "$(cfg "$EAST")" scan --metrics-file "$tmp/$1.prom" >"$tmp/$1.jsonl" || SCAN_RC=$?
  ((SCAN_RC <= 1)) || die "flk-diverge scan exited $SCAN_RC"
  CONFLICTS=$(grep -c '"kind":"conflict"' "$tmp/$1.jsonl" || true)
  MISSING=$(grep -c '"kind":"missing"' "$tmp/$1.jsonl" || true)
}
# metrics ERE FILE...: the metrics matching ERE, after the region whose file it is.
metrics() {
  local f from
  for f in "${@:2}"; do
    from=${f%/*}
    from=${from#"$tmp"}
    grep -E "^($1)" "$f" | sed "s|^|${from:+${from#/}: }|" | indent
  done
}

# content digest of a store: flk-diverge digest without its header line, hashed.
digest_of() { flk-diverge --config "$(cfg "$1")" digest --store "$2" | sed 1d | sha256sum | cut -c1-64; }

# =====================================================================================

printf 'flk demo: three regions, replication, a split-brain and its repair (D=%s)\n' "$tmp"
[[ $sabotage == 1 ]] && printf '(FLK_DEMO_SABOTAGE=1: the reconciliation will be skipped; the demo must fail)\n'

step "Three regions: a WAL, a SQLite store, a mailbox, state, a WORM ledger, tokens and flk.yaml each"
CLOSED=$(closed_port)
for r in "${REGIONS[@]}"; do mkdir -p "$(rdir "$r")"/{tokens,wal,mailbox,state}; done
for r in "${REGIONS[@]}"; do
  for p in $(others "$r"); do
    tok=$(od -An -tx1 -N24 /dev/urandom | tr -d ' \n')
    echo "$tok" >"$(rdir "$r")/tokens/to-$p"
    echo "$tok" >"$(rdir "$p")/tokens/from-$r"
  done
  config "$r"
done
say "tokens: one per link direction, held by both ends ($(find "$tmp" -path "*/tokens/*" -type f | wc -l) files, mode $(stat -c '%a' "$tmp"/*/tokens/* | sort -u | paste -sd' '));"
say "us-east-1/tokens: $(cd "$(rdir "$EAST")/tokens" && echo *)"

step "flk-serve in each region: the mailbox peers ship to (bearer tokens, loopback, a free port)"
for r in "${REGIONS[@]}"; do
  [[ $r == "$EAST" ]] && cmd flk-serve --config "$(cfg "$r")" --listen 127.0.0.1:0 --port-file "$(rdir "$r")/serve.port"
  start "flk-serve of $r" "$(rdir "$r")/serve" \
    flk-serve --config "$(cfg "$r")" --listen 127.0.0.1:0 --port-file "$(rdir "$r")/serve.port" -q
done
for r in "${REGIONS[@]}"; do
  for ((i = 0; i < 100; i++)); do
    [[ -s $(rdir "$r")/serve.port ]] && break
    sleep 0.05
  done
  [[ -s $(rdir "$r")/serve.port ]] || die "flk-serve of $r did not start: $(cat "$(rdir "$r")/serve.err")"
done
for r in "${REGIONS[@]}"; do config "$r"; done
say "$(for r in "${REGIONS[@]}"; do printf '%s: 127.0.0.1:%s  ' "$r" "$(port "$r")"; done)"
say "us-east-1's flk.yaml (it is selective: tenant-d goes to us-west-2 only), diverge.stores left out:"
sed '/^diverge:/,$d' "$(cfg "$EAST")" | indent
say "us-west-2 and eu-west-1 are multi-way:"
grep -h -A1 'replicationMode' "$(cfg "$WEST")" | indent

step "Replication services: flk-ship --follow and flk-read --follow in each region"
cmd flk-ship --config "$(cfg "$EAST")" --follow --metrics-file "$(rdir "$EAST")/ship.prom"
cmd flk-read --config "$(cfg "$EAST")" --follow --interval 100ms --metrics-file "$(rdir "$EAST")/read.prom"
for r in "${REGIONS[@]}"; do
  start_ship "$r"
  start "flk-read --follow in $r" "$(rdir "$r")/read" \
    flk-read --config "$(cfg "$r")" --follow --interval 100ms --metrics-file "$(rdir "$r")/read.prom"
done
say "(and the same in us-west-2 and eu-west-1: $(( ${#procs[@]} )) processes now)"

step "A stream of decisions in every region: $records each, $SHARED of them PCSs all three decide (alike)"
for r in "${REGIONS[@]}"; do
  if [[ $r == "$EAST" ]]; then tenants=(tenant-a tenant-b tenant-c tenant-d); else tenants=(tenant-a tenant-b tenant-c); fi
  gen shared "$SHARED" 0 tenant-a tenant-b tenant-c >"$(rdir "$r")/shared.jsonl"
  gen "$r" $((records - SHARED)) 0 "${tenants[@]}" >"$(rdir "$r")/own.jsonl"
  awk 'NR == FNR { s[++ns] = $0; next } { print } FNR % 9 == 0 && k < ns { print s[++k] } END { while (k < ns) print s[++k] }' \
    "$(rdir "$r")/shared.jsonl" "$(rdir "$r")/own.jsonl" >"$(rdir "$r")/stream.jsonl"
done
head -n 1 "$(rdir "$EAST")/stream.jsonl" | indent
cmd flk-wal --config "$(cfg "$EAST")" append '<' decisions '>' acks   "# in all three, fed over 2 s"
for r in "${REGIONS[@]}"; do write "$r" "$(rdir "$r")/stream.jsonl" 0.2; done
sleep 1
say "one second in, where us-east-1's streams stand:"
cmd flk-watermark --config "$(cfg "$EAST")" lag
flk-watermark --config "$(cfg "$EAST")" lag --json --probe-timeout 2s 2>/dev/null | lag_lines | indent || true
writers_done
say "acknowledged: $(for r in "${REGIONS[@]}"; do printf '%s %s  ' "$r" "$(wc -l <"$(rdir "$r")/append.out")"; done)"
say "each region's backend also puts its own decisions in its own store:"
cmd flk-rebuild-dedup --config "$(cfg "$EAST")" --in-place --no-mailbox
for r in "${REGIONS[@]}"; do own "$r" >"$(rdir "$r")/own.out"; done
jq -c '{region, mode, records, inserted, winners}' "$(rdir "$EAST")/own.out" | indent

step "Replication drains: flk-watermark wait until every record is applied in every peer"
cmd flk-watermark --config "$(cfg "$EAST")" wait --max-lag 1ms --timeout 60s "# 1ms: nothing pending (the runbook's bound is 60s)"
for r in "${REGIONS[@]}"; do drain "$r"; done
for r in "${REGIONS[@]}"; do lag_lines <"$(rdir "$r")/wait.out"; done | indent
for r in "${REGIONS[@]}"; do
  read -r segs recs appl dups later confl < <(read_totals "$r")
  say "$r: flk-read applied $segs segments ($recs records: $appl new winners, $dups duplicates, $later later writes of a shared PCS, $confl conflicts)"
done
say "shipped so far: $(for r in "${REGIONS[@]}"; do printf '%s %s segments  ' "$r" "$(grep -c . "$(rdir "$r")/ship.out")"; done)"

step "Health: flk-health in each region probes its peers; a canary from us-west-2"
cmd flk-health --config "$(cfg "$EAST")" --metrics-file "$(rdir "$EAST")/health.prom"
for r in "${REGIONS[@]}"; do
  flk-health --config "$(cfg "$r")" --timeout 5s --metrics-file "$(rdir "$r")/health.prom" -q >"$(rdir "$r")/health.jsonl" ||
    die "flk-health in $r: a peer is unhealthy: $(cat "$(rdir "$r")/health.jsonl")"
done
health_lines <"$(rdir "$EAST")/health.jsonl" | indent
cmd flk-health --config "$(cfg "$WEST")" --canary --canary-timeout 30s
flk-health --config "$(cfg "$WEST")" --timeout 5s --canary --canary-timeout 30s | health_lines | indent ||
  die "the canary from us-west-2 was not applied everywhere in 30 s"
drain "$WEST"
say "metrics (flk-watermark metrics, flk-health --metrics-file):"
for r in "${REGIONS[@]}"; do flk-watermark --config "$(cfg "$r")" metrics --metrics-file "$(rdir "$r")/lag.prom" --probe-timeout 2s; done
metrics flk_crr_lag_seconds "$tmp"/*/lag.prom
metrics flk_region_health_status "$(rdir "$EAST")/health.prom"
if command -v curl >/dev/null; then
  cmd curl -s "http://127.0.0.1:$(port "$WEST")/metrics" '|' grep flk_serve_segments_total
  curl -s "http://127.0.0.1:$(port "$WEST")/metrics" | grep '^flk_serve_segments_total' | indent || true
fi

step "Selective replication: us-east-1 ships tenant-d to us-west-2 only"
for p in "$WEST" "$EU"; do
  d=$(rdir "$p")/mailbox/$EAST/$p
  n=$(flk-wal --config "$(cfg "$p")" cat "$d"/*.wal | jq -r .tenant_id | sort | uniq -c | awk '{ printf "%s %s, ", $2, $1 }')
  say "shipped to $p: $(find "$d" -name '*.wal' | wc -l) segments; records by tenant: ${n%, }"
done
scan scan-selective
cmd flk-diverge --config "$(cfg "$EAST")" scan
say "exit $SCAN_RC: $CONFLICTS conflicts, $MISSING missing (eu-west-1 lacks tenant-d by policy, which is not a divergence)"
((SCAN_RC == 0)) || die "the regions diverge before the split: $(head -n 3 "$tmp/scan-selective.jsonl")"

step "Cut the link us-east-1 <-> eu-west-1: each one's endpoint for the other is a closed port now"
config "$EAST" "$EU"
config "$EU" "$EAST"
for r in "$EAST" "$EU"; do
  stop "${SHIP[$r]}"
  start_ship "$r"
done
sed -n "/^  endpoints:/,/^  retry:/p" "$(cfg "$EAST")" | sed "\$d" | indent
cmd flk-health --config "$(cfg "$EAST")"
rc=0
flk-health --config "$(cfg "$EAST")" --timeout 5s --metrics-file "$(rdir "$EAST")/health.prom" -q >"$tmp/health-cut.jsonl" 2>/dev/null || rc=$?
health_lines <"$tmp/health-cut.jsonl" | indent
say "exit $rc; $(grep -h '^flk_region_health_status' "$(rdir "$EAST")/health.prom" | paste -sd' ')"
((rc == 69)) || die "flk-health in us-east-1 should find eu-west-1 unhealthy (exit 69), not exit $rc"

step "Split-brain: both sides decide the same $SPLIT PCSs, differently, and $FRESH others each"
BASE_NS=$(($(date +%s%N) - 1500000000))
gen_split "$EAST" >"$(rdir "$EAST")/split.jsonl"
gen_split "$EU" >"$(rdir "$EU")/split.jsonl"
gen "$EAST" "$FRESH" "$records" tenant-a tenant-b tenant-c tenant-d >>"$(rdir "$EAST")/split.jsonl"
gen "$EU" "$FRESH" "$records" tenant-a tenant-b tenant-c >>"$(rdir "$EU")/split.jsonl"
say "us-east-1: $(head -n 1 "$(rdir "$EAST")/split.jsonl" | jq -c '{pcs_id: (.pcs_id[0:12] + "..."), tenant_id, outcome, ts, params}')"
say "eu-west-1: $(head -n 1 "$(rdir "$EU")/split.jsonl" | jq -c '{pcs_id: (.pcs_id[0:12] + "..."), tenant_id, outcome, ts, params}')"
write "$EAST" "$(rdir "$EAST")/split.jsonl"
write "$EU" "$(rdir "$EU")/split.jsonl"
writers_done
own "$EAST" >/dev/null
own "$EU" >/dev/null
drain "$EAST" "$WEST"
drain "$EU" "$WEST"
drain "$WEST"
warning=$(grep -h -m 1 "127.0.0.1:$CLOSED/" "$(rdir "$EAST")/ship.err" | sed -E "s/^flk-ship: warning: //; s/POST '[^']*': //" || true)
[[ -z $warning ]] || say "flk-ship in us-east-1, on standard error: $warning (in a loop, with backoff)"
say "us-west-2 got both sides; us-east-1 and eu-west-1 only their own. us-east-1's streams:"
cmd flk-watermark --config "$(cfg "$EAST")" lag
rc=0
flk-watermark --config "$(cfg "$EAST")" lag --json --probe-timeout 2s >"$tmp/lag-cut.jsonl" 2>/dev/null || rc=$?
lag_lines <"$tmp/lag-cut.jsonl" | indent
say "exit $rc (75: a target could not be asked)"
flk-watermark --config "$(cfg "$EAST")" metrics --metrics-file "$(rdir "$EAST")/lag.prom" --probe-timeout 2s 2>/dev/null || true
metrics 'flk_crr_lag_seconds|flk_crr_lag_stale' "$(rdir "$EAST")/lag.prom"

step "Detect: flk-diverge scan over the three stores"
cmd flk-diverge --config "$(cfg "$EAST")" scan --metrics-file "\$D/scan-split.prom" '>' findings.jsonl
scan scan-split
FOUND=$CONFLICTS
say "(missing: decided on one side and not seen on the other; counted for us-east-1's records only, as"
say " flk-diverge takes the policies of the configuration it runs with, us-east-1's, as every region's)"
say "exit $SCAN_RC: $CONFLICTS conflicts, $MISSING missing; a sample:"
grep -m 1 '"kind":"conflict"' "$tmp/scan-split.jsonl" | short | indent
metrics flk_crr_divergence_count "$tmp/scan-split.prom"
((SCAN_RC == 1 && FOUND > 0)) || die "flk-diverge scan found no conflict after the split (exit $SCAN_RC)"

step "Heal the link, and let replication finish (the runbook's order)"
config "$EAST"
config "$EU"
for r in "$EAST" "$EU"; do
  stop "${SHIP[$r]}"
  start_ship "$r"
done
for r in "${REGIONS[@]}"; do drain "$r"; done
for r in "${REGIONS[@]}"; do flk-health --config "$(cfg "$r")" --timeout 5s --metrics-file "$(rdir "$r")/health.prom" -q >/dev/null; done
say "every stream drained (lag 0); flk-health exits 0 everywhere again"
for r in "${REGIONS[@]}"; do
  read -r segs recs appl dups later confl < <(read_totals "$r")
  say "$r: flk-read met $confl conflicting records while replaying (both sides kept as evidence, and logged to its WORM ledger)"
done
cmd flk-diverge --config "$(cfg "$EAST")" scan
scan scan-healed
LEFT=$CONFLICTS
say "exit $SCAN_RC: $CONFLICTS conflicts, $MISSING missing. Replay settled $((FOUND - LEFT)) of $FOUND by first write wins;"
LEFT_D=$(grep '"kind":"conflict"' "$tmp/scan-healed.jsonl" | grep -c '"tenant_id":"tenant-d"' || true)
if ((LEFT > 0 && LEFT_D == LEFT)); then
  say "the $LEFT left are tenant-d PCSs that us-east-1 decided first: its records never go to eu-west-1"
  say "(policy), so eu-west-1 keeps its own outcome until they are reconciled. A sample:"
else
  say "of the $LEFT left, $LEFT_D are tenant-d PCSs (not replicated to eu-west-1). A sample:"
fi
grep -m 1 '"kind":"conflict"' "$tmp/scan-healed.jsonl" | short | indent || true

step "Reconcile: the first write of each, installed where it is not"
RECONCILED=0
if [[ $sabotage == 1 ]]; then
  say "FLK_DEMO_SABOTAGE=1: skipping flk-diverge reconcile"
else
  cmd flk-diverge --config "$(cfg "$EAST")" reconcile
  rc=0
  flk-diverge --config "$(cfg "$EAST")" reconcile >"$tmp/plan.jsonl" || rc=$?
  say "exit $rc: $(grep -c . "$tmp/plan.jsonl" || true) PCSs to reconcile; one:"
  head -n 1 "$tmp/plan.jsonl" | short | indent
  cmd flk-diverge --config "$(cfg "$EAST")" reconcile --apply
  flk-diverge --config "$(cfg "$EAST")" reconcile --apply >"$tmp/reconciled.jsonl"
  RECONCILED=$(grep -c '"applied":true' "$tmp/reconciled.jsonl" || true)
  say "exit 0: $RECONCILED reconciled"
fi

step "Verify: no divergence left, the ledgers' hash chains hold"
cmd flk-diverge --config "$(cfg "$EAST")" scan --metrics-file "\$D/scan-final.prom"
scan scan-final
FINAL_RC=$SCAN_RC FINAL_LEFT=$((CONFLICTS + MISSING))
say "exit $SCAN_RC: $CONFLICTS conflicts, $MISSING missing"
cmd flk-diverge --config "$(cfg "$EAST")" verify-log
for r in "${REGIONS[@]}"; do
  flk-diverge --config "$(cfg "$r")" verify-log | jq -r --arg r "$r" '"\($r): ledger ok=\(.ok), \(.lines) lines, head \(.head[0:20])..."' | indent
done
say "the metrics, now:"
for r in "${REGIONS[@]}"; do flk-watermark --config "$(cfg "$r")" metrics --metrics-file "$(rdir "$r")/lag.prom" --probe-timeout 2s; done
metrics flk_crr_lag_seconds "$tmp"/*/lag.prom
metrics flk_region_health_status "$tmp"/*/health.prom
metrics flk_crr_divergence_count "$tmp/scan-final.prom"

step "Stop the services (SIGTERM: each exits 0)"
for r in "${REGIONS[@]}"; do stop "${SHIP[$r]}"; done
for pid in "${!procs[@]}"; do [[ ${procs[$pid]} == flk-read* ]] && stop "$pid"; done
for pid in "${!procs[@]}"; do [[ ${procs[$pid]} == flk-serve* ]] && stop "$pid"; done
say "$(( ${#procs[@]} )) processes left"

step "Converged? One content digest in every region"
say "us-east-1's own tenant-d records are, by policy, in us-east-1 and us-west-2 only: the digest compared"
say "is that of each store without them (a copy: sqlite3 VACUUM INTO, then DELETE them); with them, us-east-1"
say "and us-west-2 must have one digest too."
cmd flk-diverge --config "$(cfg "$EAST")" digest --store "sqlite://\$D/us-east-1/compared.db" '|' sed 1d '|' sha256sum
declare -A FULL=() COMPARED=()
for r in "${REGIONS[@]}"; do
  FULL[$r]=$(digest_of "$r" "$(store "$r")")
  rm -f "$(rdir "$r")/compared.db"
  sqlite3 "$(rdir "$r")/dedup.db" "VACUUM INTO '$(rdir "$r")/compared.db'"
  sqlite3 "$(rdir "$r")/compared.db" "DELETE FROM records WHERE tenant_id = 'tenant-d' AND region = '$EAST'"
  COMPARED[$r]=$(digest_of "$r" "sqlite://$(rdir "$r")/compared.db")
  say "$r: ${COMPARED[$r]}  (whole store: ${FULL[$r]:0:16}...)"
done
why=()
((FINAL_RC == 0)) || why+=("flk-diverge scan exits $FINAL_RC: $FINAL_LEFT divergent PCSs")
[[ ${COMPARED[$EAST]} == "${COMPARED[$WEST]}" && ${COMPARED[$WEST]} == "${COMPARED[$EU]}" ]] ||
  why+=("the three stores have different content digests")
[[ ${FULL[$EAST]} == "${FULL[$WEST]}" ]] || why+=("the whole stores of us-east-1 and us-west-2 differ")

step "Summary"
for r in "${REGIONS[@]}"; do
  printf '  %-9s  %d records written, %d segments shipped (%s)\n             content digest %s\n' "$r" \
    "$(wc -l <"$(rdir "$r")/append.out")" "$(grep -c . "$(rdir "$r")/ship.out")" \
    "$(jq -rs 'group_by(.target) | map("\(length) to \(.[0].target)") | join(", ")' "$(rdir "$r")/ship.out")" "${COMPARED[$r]}"
done
say "conflicts: $FOUND found by flk-diverge scan during the split; $((FOUND - LEFT)) settled by replay;" \
  "$RECONCILED reconciled; $FINAL_LEFT divergent PCSs left"
say "elapsed: $(elapsed) s"
if ((${#why[@]} == 0)); then
  say "converged: yes (one content digest in the three regions, flk-diverge scan exits 0)"
else
  say "converged: NO"
  printf 'demo.sh: error: the regions did not converge: %s\n' "$(printf '%s; ' "${why[@]}" | sed 's/; $//')" >&2
  exit 1
fi
