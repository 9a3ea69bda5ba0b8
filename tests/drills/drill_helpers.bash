# shellcheck shell=bash
# shellcheck disable=SC2154 # output, status, lines, stderr: set by bats' run
# Helpers of the chaos drills (tests/drills/*.bats, the seed's monthly exercises made
# measurable): a real three-region deployment on loopback (tests/cli/deploy_helpers.bash:
# WAL, SQLite store, mailbox, state, tokens per peer, configuration and flk-serve per
# region), and on it what a region runs in production — a writer (a paced producer piped
# into `flk-wal append`), `flk-ship --follow`, `flk-read --follow` — so that a drill can
# kill, cut or corrupt pieces of it while records flow.
#
# Load with `load drill_helpers` from a drill; call drill_setup / drill_teardown from
# setup / teardown. Every process started here is recorded in $PIDS (stopped by the
# teardown) and per region in $(rdir R)/procs ("NAME PID" lines), so that a drill can
# signal one region's processes by their ids.
#
# Measured figures are printed as TAP comments on fd 3 (`report …`): `bats --tap` and
# the CTest log show them.

# bats resolves a relative `load` against the directory of the test file, and
# deploy_helpers loads its own helpers (read_helpers, ship_helpers, helpers) by plain
# name: load it with tests/cli (beside this file's directory) as that directory, then
# put it back.
_drill_dir=$BATS_TEST_DIRNAME
BATS_TEST_DIRNAME=$(cd "$(dirname "${BASH_SOURCE[0]}")/../cli" && pwd)
load deploy_helpers
BATS_TEST_DIRNAME=$_drill_dir
unset _drill_dir

drill_setup() {
  read_setup || return 1
  local t
  for t in flk-diverge flk-watermark flk-health; do
    [[ -x $FLK_BIN/$t ]] || {
      echo "$t not found in FLK_BIN='$FLK_BIN'" >&2
      return 1
    }
  done
  command -v sqlite3 >/dev/null || {
    echo "sqlite3 is needed by the drills (scripts/install-deps.sh installs it)" >&2
    return 1
  }
}

# drill_teardown: stops everything the drill started; when the test failed, the tail of
# every log of the regions goes to stderr (bats prints it with the failure).
drill_teardown() {
  if [[ -z ${BATS_TEST_COMPLETED-} ]]; then
    local f
    for f in "$BATS_TEST_TMPDIR"/r-*/*.log "$BATS_TEST_TMPDIR"/*.log; do
      [[ -s $f ]] || continue
      printf -- '--- %s (tail)\n' "${f#"$BATS_TEST_TMPDIR"/}" >&2
      tail -n 15 "$f" >&2
    done
  fi
  read_teardown
}

# report TEXT…: one measured figure, as a TAP comment ("# TEXT").
report() { echo "# $*" >&3; }

# now_us: the wall clock in microseconds since the epoch (no fork).
now_us() { echo "${EPOCHREALTIME/./}"; }

# ts_us RFC3339: a record's ts in microseconds since the epoch.
ts_us() { echo $(($(date -u -d "$1" +%s%N) / 1000)); }

# secs MICROSECONDS: as seconds with three decimals.
secs() { printf '%d.%03d' $(($1 / 1000000)) $((($1 % 1000000) / 1000)); }

# --- the processes of a region -------------------------------------------------------------

# track R NAME PID: PID is R's process NAME (and is stopped by the teardown).
track() {
  echo "$3" >>"$PIDS"
  echo "$2 $3" >>"$(rdir "$1")/procs"
}

# pids_of R [NAME…]: the pids of R's processes (of those NAMEs; default all) that run.
pids_of() {
  local r=$1 name pid
  shift
  [[ -f $(rdir "$r")/procs ]] || return 0
  while read -r name pid; do
    if (($# == 0)) || [[ " $* " == *" $name "* ]]; then
      kill -0 "$pid" 2>/dev/null && echo "$pid"
    fi
  done <"$(rdir "$r")/procs"
  return 0
}

# serve_of R: R's flk-serve started by deploy (found by its configuration's path, which
# is unique to the test), recorded as R's process "serve" once.
serve_of() {
  local pid
  pid=$(pgrep -f -- "flk-serve --config $(cfg_of "$1") " | head -1)
  [[ -n $pid ]] || { echo "no flk-serve of $1 runs" >&2; return 1; }
  grep -q "^serve $pid\$" "$(rdir "$1")/procs" 2>/dev/null || echo "serve $pid" >>"$(rdir "$1")/procs"
  echo "$pid"
}

# gen_live R PREFIX PER-TICK TICK: a region's backend deciding records now, forever:
# every TICK seconds PER-TICK records PREFIX-000001…, each with ts = the wall clock when
# it is written (RFC 3339, microseconds), on stdout; each line also goes to fd 4 (the
# drill's log of what was written, from which the ts of an acknowledged pcs_id is taken).
gen_live() {
  local r=$1 prefix=$2 per=$3 tick=$4 n=0 i t now batch
  local -a oc=(accepted escalated rejected)
  export TZ=UTC
  while :; do
    batch=
    for ((i = 0; i < per; i++)); do
      n=$((n + 1))
      now=$EPOCHREALTIME
      printf -v t '%(%Y-%m-%dT%H:%M:%S)T' "${now%.*}"
      printf -v batch '%s{"pcs_id":"%s-%06d","tenant_id":"tenant-%d","outcome":"%s","ts":"%s.%sZ","region":"%s","params":"v1","payload":{"n":%d}}\n' \
        "$batch" "$prefix" "$n" $((n % 5)) "${oc[n % 3]}" "$t" "${now#*.}" "$r" "$n"
    done
    printf '%s' "$batch" >&4
    printf '%s' "$batch" || return 0
    sleep "$tick"
  done
}

# start_writer R PREFIX [PER-TICK] [TICK]: R's backend writing continuously (gen_live,
# default 5 records every 50 ms) into `flk-wal append --segment-age 200ms` of R's WAL;
# the acknowledgements in $(rdir R)/acks-PREFIX.jsonl, what was written in
# gen-PREFIX.jsonl, the writer's stderr in writer-PREFIX.log. R's processes "gen" and
# "writer".
start_writer() {
  local r=$1 p=$2 d
  d=$(rdir "$1")
  rm -f "$d/fifo-$p"
  mkfifo "$d/fifo-$p"
  gen_live "$r" "$p" "${3:-5}" "${4:-0.05}" >"$d/fifo-$p" 4>>"$d/gen-$p.jsonl" 3>&- &
  track "$r" gen $!
  flk-wal --config "$(cfg_of "$r")" append --segment-age 200ms <"$d/fifo-$p" \
    >>"$d/acks-$p.jsonl" 2>>"$d/writer-$p.log" 3>&- &
  track "$r" writer $!
}

# stop_writer R: ends R's producer; `flk-wal append` then reads the end of its input,
# acknowledges and seals what it read, and exits — with status 0 (checked).
stop_writer() {
  local gen writer rc=0
  gen=$(pids_of "$1" gen)
  writer=$(pids_of "$1" writer)
  [[ -n $gen ]] && kill -TERM "$gen"
  [[ -n $writer ]] || return 0
  wait "$writer" || rc=$?
  [[ $rc == 0 ]] || { echo "flk-wal append of $1 exited $rc" >&2; return 1; }
}

# start_follow R: R's replication services: flk-ship --follow and flk-read --follow
# (--interval 100ms, WORM ledger $(rdir R)/worm.jsonl), logs ship.log / read.log, JSON
# lines ship.out / read-follow.out, metrics ship.prom / read.prom. R's processes "ship"
# and "read".
start_follow() {
  local r=$1 d
  d=$(rdir "$1")
  # (flk-ship --follow stops when the WAL directory does not exist yet: an installation
  # creates it, as paths.wal of the package would.)
  mkdir -p "$(wal_of "$r")"
  flk-ship --config "$(cfg_of "$r")" --follow --metrics-file "$d/ship.prom" >>"$d/ship.out" 2>>"$d/ship.log" 3>&- &
  track "$r" ship $!
  flk-read --config "$(cfg_of "$r")" --follow --interval 100ms --worm "$d/worm.jsonl" --metrics-file "$d/read.prom" \
    >>"$d/read-follow.out" 2>>"$d/read.log" 3>&- &
  track "$r" read $!
}

# stop_follow R: SIGTERM to R's shipper and reader; both must exit 0.
stop_follow() {
  local pid rc
  for pid in $(pids_of "$1" ship read); do
    kill -TERM "$pid"
    rc=0
    wait "$pid" || rc=$?
    [[ $rc == 0 ]] || { echo "a follow service of $1 (pid $pid) exited $rc" >&2; return 1; }
  done
}

# start_serve_on R: R's flk-serve again, on the port it had (the peers' configurations
# name it), until it listens (its --port-file written); tried again for a few seconds
# when it exits first (the port briefly unavailable).
start_serve_on() {
  local r=$1 port i pid pf
  port=$(tr -d '\n' <"$(rdir "$r")/port")
  pf=$(rdir "$r")/port.again
  for ((i = 0; i < 20; i++)); do
    rm -f "$pf"
    flk-serve --config "$(cfg_of "$r")" --listen "127.0.0.1:$port" --port-file "$pf" \
      >>"$(rdir "$r")/serve.log" 2>&1 3>&- &
    pid=$!
    while [[ ! -s $pf ]] && kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
    if [[ -s $pf ]]; then
      track "$r" serve "$pid"
      return 0
    fi
    wait "$pid" 2>/dev/null
    sleep 0.25
  done
  echo "flk-serve of $r cannot listen on port $port again" >&2
  return 1
}

# --- what the stores hold ----------------------------------------------------------------

# db_of R: the SQLite file of R's store.
db_of() { echo "$(rdir "$1")/dedup.db"; }

# ids_in R [LIKE]: the pcs_ids in R's store (LIKE: an SQL pattern), sorted. The records
# table is flk(7)'s documented SQLite layout; read while the services run (WAL mode).
ids_in() {
  sqlite3 -cmd '.timeout 10000' "$(db_of "$1")" \
    "SELECT pcs_id FROM records WHERE pcs_id LIKE '${2:-%}'" | LC_ALL=C sort
}

# acked R PREFIX: the pcs_ids R's writer acknowledged (complete ack lines), sorted.
acked() {
  grep -h '^{.*}$' "$(rdir "$1")/acks-$2.jsonl" 2>/dev/null | jq -r .pcs_id | LC_ALL=C sort
}

# wait_drained R… : in each region, flk-watermark wait until nothing it wrote is pending
# at any target (lag under 10 ms: the records are older than that), 60 s at most.
wait_drained() {
  local r
  for r in "$@"; do
    run --separate-stderr flk-watermark --config "$(cfg_of "$r")" wait --max-lag 10ms --timeout 60s --interval 100ms -q
    if [[ $status != 0 ]]; then
      printf 'region %s did not drain (exit %s):\n%s\n%s\n' "$r" "$status" "$output" "$stderr" >&2
      return 1
    fi
  done
}

# own_writes_in_store R…: the backend's own decisions into its own store, as write_in
# does: the region's WAL merged into the store in place (first write wins).
own_writes_in_store() {
  local r
  for r in "$@"; do
    flk-rebuild-dedup --config "$(cfg_of "$r")" --in-place --no-mailbox -q >/dev/null || return 1
  done
}

# content_digest R: the bucketed content digest of R's store (flk-diverge digest without
# its header line, which names the region and the time), as one SHA-256.
content_digest() {
  flk-diverge digest --store "$(store_of "$1")" | sed 1d | sha256sum | cut -c1-64
}

# stores_args R…: --store R=URL for each region (one word a line, for mapfile).
stores_args() {
  local r
  for r in "$@"; do printf -- '--store\n%s=%s\n' "$r" "$(store_of "$r")"; done
}

# assert_subset SMALL-FILE BIG-FILE WHAT: every line of SMALL is in BIG (both sorted).
assert_subset() {
  local missing
  missing=$(LC_ALL=C comm -23 "$1" "$2")
  if [[ -n $missing ]]; then
    printf '%s: %s lines missing, e.g.:\n%s\n' "$3" "$(wc -l <<<"$missing")" "$(head -5 <<<"$missing")" >&2
    return 1
  fi
}
