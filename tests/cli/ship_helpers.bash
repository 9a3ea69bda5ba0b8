# shellcheck shell=bash
# Helpers of the shipping suites (flk-ship.bats, flk-ship-faults.bats): real flk-serve
# mailboxes on loopback, the fault proxy ($FLK_TEST_LIB/faultproxy, tests/net/), ship
# configurations, and checks of watermarks and mailboxes against the WAL.
#
# Load with `load ship_helpers` (it loads helpers). Every process a test starts is
# recorded in $BATS_TEST_TMPDIR/pids and stopped by ship_teardown.

load helpers

# The regions of the suites: this one is $REGION (us-east-1).
WEST=us-west-2
EU=eu-west-1

ship_setup() {
  flk_setup || return 1
  local t
  for t in flk-ship flk-serve; do
    [[ -x $FLK_BIN/$t ]] || {
      echo "$t not found in FLK_BIN='$FLK_BIN'" >&2
      return 1
    }
  done
  STATE=$BATS_TEST_TMPDIR/state
  CFG=$BATS_TEST_TMPDIR/ship.yaml
  TOKEN=$BATS_TEST_TMPDIR/token # what us-east-1 presents and the servers accept
  echo "tok-$RANDOM$RANDOM-east" >"$TOKEN"
  chmod 600 "$TOKEN"
  PIDS=$BATS_TEST_TMPDIR/pids
  : >"$PIDS"
  export STATE CFG TOKEN
}

ship_teardown() {
  local pid
  [[ -f ${PIDS-} ]] || return 0
  while read -r pid; do
    [[ -n $pid ]] && kill "$pid" 2>/dev/null
  done <"$PIDS"
  while read -r pid; do
    [[ -n $pid ]] && wait_gone "$pid"
  done <"$PIDS"
  return 0
}

# wait_gone PID: waits (up to 5 s) until the process is gone; SIGKILL after that.
wait_gone() {
  local i
  for ((i = 0; i < 100; i++)); do
    kill -0 "$1" 2>/dev/null || return 0
    sleep 0.05
  done
  kill -9 "$1" 2>/dev/null
  return 0
}

# wait_file FILE: waits (up to 5 s) for FILE to exist and be non-empty.
wait_file() {
  local i
  for ((i = 0; i < 100; i++)); do
    [[ -s $1 ]] && return 0
    sleep 0.05
  done
  echo "timed out waiting for '$1'" >&2
  return 1
}

# start_server NAME [FLK-SERVE ARGS…]: flk-serve on 127.0.0.1 (a free port unless
# --listen is given) with mailbox $BATS_TEST_TMPDIR/NAME.mailbox, accepting $TOKEN as
# us-east-1; log in NAME.log (appended: a restarted server keeps one log), port in
# NAME.port, pid in NAME.pid.
start_server() {
  local name=$1 dir=$BATS_TEST_TMPDIR
  shift
  local listen=(--listen 127.0.0.1:0)
  [[ " $* " == *" --listen "* ]] && listen=()
  rm -f "$dir/$name.port"
  flk-serve "${listen[@]}" --port-file "$dir/$name.port" --mailbox "$dir/$name.mailbox" \
    --token-file "$REGION=$TOKEN" "$@" >>"$dir/$name.log" 2>&1 3>&- &
  echo $! >"$dir/$name.pid"
  echo $! >>"$PIDS"
  wait_file "$dir/$name.port" || { cat "$dir/$name.log" >&2; return 1; }
}

# stop_server NAME: SIGTERM, and wait until it is gone (its port is closed).
stop_server() {
  local pid
  pid=$(<"$BATS_TEST_TMPDIR/$1.pid")
  kill "$pid" 2>/dev/null
  wait_gone "$pid"
}

# restart_server NAME: starts NAME again on the port it had.
restart_server() {
  local port
  port=$(server_port "$1")
  start_server "$1" --listen "127.0.0.1:$port"
}

server_port() { tr -d '\n' <"$BATS_TEST_TMPDIR/$1.port"; }
server_url() { echo "http://127.0.0.1:$(server_port "$1")"; }

# start_proxy NAME TARGET-PORT [FAULTPROXY ARGS…]: the fault proxy in front of a port;
# its log (one line per connection and per fault) in NAME.log, port in NAME.port.
start_proxy() {
  local name=$1 target=$2 dir=$BATS_TEST_TMPDIR
  shift 2
  [[ -x $FLK_TEST_LIB/faultproxy ]] || {
    echo "faultproxy not built: '$FLK_TEST_LIB/faultproxy' (set FLK_TEST_LIB)" >&2
    return 1
  }
  rm -f "$dir/$name.port"
  "$FLK_TEST_LIB/faultproxy" --target "$target" --port-file "$dir/$name.port" "$@" >>"$dir/$name.log" 2>&1 3>&- &
  echo $! >"$dir/$name.pid"
  echo $! >>"$PIDS"
  wait_file "$dir/$name.port"
}

# A port nothing listens on: one the kernel just handed out and that was closed again.
closed_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# --- configurations ---------------------------------------------------------------------

# write_config [CRR LINES…]: $CFG for us-east-1 with paths.wal=$WAL, paths.state=$STATE,
# crr.enabled and the given lines (already indented under crr:).
write_config() {
  {
    printf 'region: %s\npaths:\n  wal: %s\n  state: %s\n' "$REGION" "$WAL" "$STATE"
    printf 'crr:\n  enabled: true\n'
    local l
    for l in "$@"; do printf '  %s\n' "$l"; done
  } >"$CFG"
}

# endpoint REGION URL [MORE]: one line of crr.endpoints (give it after "endpoints:").
endpoint() { echo "  $1: {url: \"$2\", tokenFile: \"$TOKEN\"${3:+, $3}}"; }

# config_two_region URL: two-region to us-west-2 at URL.
config_two_region() { write_config "targetRegions: [$WEST]" "endpoints:" "$(endpoint $WEST "$1")"; }

# config_multi_way URL-WEST URL-EU
config_multi_way() {
  write_config "replicationMode: multi-way" "peers: [$WEST, $EU]" "endpoints:" \
    "$(endpoint $WEST "$1")" "$(endpoint $EU "$2")"
}

# ship [ARGS…]: flk-ship --once on $CFG with short retries: --initial-backoff 50ms,
# --max-backoff 200ms, --deadline 2s unless ARGS give them.
ship() {
  local defaults=() o
  for o in "--initial-backoff 50ms" "--max-backoff 200ms" "--deadline 2s"; do
    [[ " $* " == *" ${o% *} "* ]] || defaults+=("${o% *}" "${o#* }")
  done
  flk-ship --config "$CFG" --once "${defaults[@]}" "$@"
}

# --- the WAL ----------------------------------------------------------------------------

# make_wal N [PREFIX] [FIRST]: appends N generated records in 4 KiB segments (all sealed).
make_wal() {
  gen_records "$1" "${2:-pcs}" "${3:-1}" | wal_append --segment-bytes 4096 >/dev/null
}

# The sequence numbers of the sealed segments of DIR (default $WAL), in order.
sealed_numbers() {
  local f
  for f in "${1:-$WAL}"/*.wal; do
    [[ -e $f ]] || continue
    f=${f##*/}
    echo $((10#${f:0:16}))
  done | sort -n
}
last_sealed() { sealed_numbers "$WAL" | tail -1; }
seg_name() { printf '%016d.wal' "$1"; }

# --- watermarks -------------------------------------------------------------------------

wm_file() { echo "$STATE/ship/$1.json"; }
# wm_position TARGET: where the watermark stands (sequence, digests, time) — what must
# not move when nothing was acknowledged; failures_total may grow. "none" when absent.
wm_position() {
  if [[ -e $(wm_file "$1") ]]; then
    jq -c '{sequence, sha256, source_sha256, time, segments_total, bytes_total}' "$(wm_file "$1")"
  else echo none; fi
}
# wm_seq TARGET: the watermark's sequence, 0 when there is none.
wm_seq() {
  if [[ -e $(wm_file "$1") ]]; then jq -r .sequence "$(wm_file "$1")"; else echo 0; fi
}

# --- mailboxes --------------------------------------------------------------------------

# stream_of MAILBOX-DIR-OR-SERVER-NAME TARGET: the stream directory us-east-1 → TARGET.
stream_of() {
  local m=$1
  [[ -d $m ]] || m=$BATS_TEST_TMPDIR/$1.mailbox
  echo "$m/$REGION/$2"
}

# assert_sidecars DIR: every segment of DIR has a sidecar and `sha256sum -c` passes.
assert_sidecars() {
  local f out
  for f in "$1"/*.wal; do
    [[ -e $f ]] || continue
    [[ -e $f.sha256 ]] || { echo "no sidecar for '$f'" >&2; return 1; }
  done
  out=$(cd "$1" && sha256sum --strict -c -- *.sha256 2>&1) || {
    printf 'sha256sum -c failed in %s:\n%s\n' "$1" "$out" >&2
    return 1
  }
}

# assert_full_copy STREAM-DIR [LAST]: the stream holds exactly segments 1..LAST
# (default: the last sealed one of $WAL), each byte-identical to the WAL's, with
# valid sidecars, and nothing else.
assert_full_copy() {
  local dir=$1 last=${2:-$(last_sealed)} n want
  [[ -d $dir ]] || { echo "no stream directory '$dir'" >&2; return 1; }
  want=$(seq 1 "$last")
  assert_equal "$(sealed_numbers "$dir")" "$want" "segments in '$dir'" || return 1
  for ((n = 1; n <= last; n++)); do
    cmp "$WAL/$(seg_name "$n")" "$dir/$(seg_name "$n")" || return 1
  done
  assert_sidecars "$dir"
  if compgen -G "$dir/../../.incoming/*" >/dev/null; then
    echo "temp files left in '$dir': $(ls -A "$dir")" >&2
    return 1
  fi
}

# posts NAME [STATUS]: the sequence numbers the server NAME answered POST with STATUS
# (default: any), in the order of its log.
posts() {
  local re=" POST /v1/segments/$REGION/[a-z0-9-]+/[0-9]+ ${2:-[0-9]+} "
  grep -E -- "$re" "$BATS_TEST_TMPDIR/$1.log" | sed -E 's#.* POST /v1/segments/[^/]+/[^/]+/([0-9]+) .*#\1#'
}

# assert_in_order NAME: the segments the server stored (201) came in order 1, 2, 3…
assert_in_order() {
  local got want
  got=$(posts "$1" 201)
  want=$(seq 1 "$(wc -l <<<"$got")")
  assert_equal "$got" "$want" "the order of stored segments in $1.log"
}

# seqs_of JSON-LINES: the sequence numbers of a ship run's stdout, in order.
seqs_of() { jq -r .sequence <<<"$1"; }
