#!/usr/bin/env bats
# flk-ship --follow as a service: a segment reaches the target within about a second
# of its seal, one kept-alive connection carries every segment, SIGTERM stops it
# cleanly with the watermark at the last acknowledged segment, and the metrics file
# tells the truth.

load helpers

setup() {
  flk_setup
  TOKEN=$BATS_TEST_TMPDIR/token
  echo "follow-token-$RANDOM$RANDOM" >"$TOKEN"
  chmod 600 "$TOKEN"
  MB=$BATS_TEST_TMPDIR/mailbox
  STATE=$BATS_TEST_TMPDIR/state
  flk-serve --listen 127.0.0.1:0 --port-file "$BATS_TEST_TMPDIR/port" --mailbox "$MB" \
    --token-file "$REGION=$TOKEN" 2>"$BATS_TEST_TMPDIR/serve.log" &
  SERVE_PID=$!
  for _ in $(seq 100); do [[ -s $BATS_TEST_TMPDIR/port ]] && break; sleep 0.05; done
  PORT=$(cat "$BATS_TEST_TMPDIR/port")
  cat >"$FLK_CONFIG" <<EOF
region: $REGION
paths: {wal: $WAL, state: $STATE}
crr:
  enabled: true
  targetRegions: [us-west-2]
  endpoints:
    us-west-2: {url: "http://127.0.0.1:$PORT", tokenFile: $TOKEN}
  retry: {initialBackoff: 50ms, maxBackoff: 200ms, deadline: 5s}
EOF
  mkdir -p "$WAL"
}

teardown() {
  [[ -n ${SHIP_PID-} ]] && kill -9 "$SHIP_PID" 2>/dev/null
  kill "$SERVE_PID" 2>/dev/null
  wait 2>/dev/null || true
}

# wait_for FILE SECONDS: until FILE exists; fails after SECONDS.
wait_for() {
  local i
  for ((i = 0; i < $2 * 20; i++)); do
    [[ -e $1 ]] && return 0
    sleep 0.05
  done
  echo "'$1' did not appear within $2 s" >&2
  return 1
}

@test "--follow ships each segment within about a second of its seal, over one connection" {
  flk-ship --follow --metrics-file "$BATS_TEST_TMPDIR/ship.prom" >"$BATS_TEST_TMPDIR/out" 2>"$BATS_TEST_TMPDIR/err" &
  SHIP_PID=$!
  local dest=$MB/$REGION/us-west-2 n start took
  for n in 1 2 3; do
    gen_records 50 "f$n" | wal_append -q >/dev/null
    # The append sealed segment n at end of input: measure from here.
    [[ -e $WAL/$(printf %016d "$n").wal ]]
    start=$(date +%s%N)
    wait_for "$dest/$(printf %016d "$n").wal" 5
    took=$((($(date +%s%N) - start) / 1000000))
    echo "segment $n arrived after $took ms"
    ((took < 2500))
    cmp "$WAL/$(printf %016d "$n").wal" "$dest/$(printf %016d "$n").wal"
  done
  # The watermark follows; the JSON lines say what was shipped.
  for _ in $(seq 50); do
    [[ $(jq -r .sequence "$STATE/ship/us-west-2.json" 2>/dev/null) == 3 ]] && break
    sleep 0.1
  done
  assert_equal "$(jq -r .sequence "$STATE/ship/us-west-2.json")" 3
  assert_equal "$(jq -r .sequence "$BATS_TEST_TMPDIR/out" | tr '\n' ' ')" "1 2 3 "
  assert_equal "$(jq -r .result "$BATS_TEST_TMPDIR/out" | sort -u)" stored
  # Connection reuse: every POST came from the same client port.
  assert_equal "$(grep -c ' POST ' "$BATS_TEST_TMPDIR/serve.log")" 3
  assert_equal "$(grep ' POST ' "$BATS_TEST_TMPDIR/serve.log" | awk '{print $2}' | sort -u | wc -l)" 1

  kill -TERM "$SHIP_PID"
  status=0
  wait "$SHIP_PID" || status=$?
  SHIP_PID=
  assert_status 0
  # The metrics file was written and is valid Prometheus text.
  grep -q '^flk_crr_ship_watermark_sequence{source="us-east-1",target="us-west-2"} 3$' "$BATS_TEST_TMPDIR/ship.prom"
  grep -q '^flk_crr_shipped_segments_total{source="us-east-1",target="us-west-2"} 3$' "$BATS_TEST_TMPDIR/ship.prom"
  grep -q '^flk_crr_ship_pending_segments{source="us-east-1",target="us-west-2"} 0$' "$BATS_TEST_TMPDIR/ship.prom"
  grep -q '^flk_crr_ship_lag_seconds{source="us-east-1",target="us-west-2"} 0$' "$BATS_TEST_TMPDIR/ship.prom"
  if command -v promtool >/dev/null; then promtool check metrics <"$BATS_TEST_TMPDIR/ship.prom"; fi
}

@test "--follow keeps retrying a target that is down and catches up when it returns" {
  kill "$SERVE_PID"
  wait "$SERVE_PID" 2>/dev/null || true
  gen_records 40 down | wal_append -q >/dev/null
  flk-ship --follow --metrics-file "$BATS_TEST_TMPDIR/ship.prom" >"$BATS_TEST_TMPDIR/out" 2>"$BATS_TEST_TMPDIR/err" &
  SHIP_PID=$!
  sleep 1.5
  # Nothing acknowledged, the failure is counted and the lag shows the waiting record.
  [[ ! -e $STATE/ship/us-west-2.json ]] || assert_equal "$(jq -r .sequence "$STATE/ship/us-west-2.json")" 0
  grep -q '^flk_crr_ship_up{source="us-east-1",target="us-west-2"} 0$' "$BATS_TEST_TMPDIR/ship.prom"
  grep -q '^flk_crr_ship_pending_segments{source="us-east-1",target="us-west-2"} 1$' "$BATS_TEST_TMPDIR/ship.prom"
  run awk '/^flk_crr_ship_lag_seconds/ {print ($2 > 0)}' "$BATS_TEST_TMPDIR/ship.prom"
  [[ $output == 1 ]]
  grep -q "flk-ship: warning: target 'us-west-2': segment 1: POST 'http://127.0.0.1:$PORT/v1/segments/us-east-1/us-west-2/1': .*; retrying for up to 5s" "$BATS_TEST_TMPDIR/err"

  # The same port again: the shipper finds it within its backoff.
  flk-serve --listen "127.0.0.1:$PORT" --mailbox "$MB" --token-file "$REGION=$TOKEN" 2>>"$BATS_TEST_TMPDIR/serve.log" &
  SERVE_PID=$!
  wait_for "$MB/$REGION/us-west-2/0000000000000001.wal" 10
  cmp "$WAL/0000000000000001.wal" "$MB/$REGION/us-west-2/0000000000000001.wal"
  kill -TERM "$SHIP_PID"
  status=0
  wait "$SHIP_PID" || status=$?
  SHIP_PID=
  assert_status 0
  assert_equal "$(jq -r .sequence "$STATE/ship/us-west-2.json")" 1
}

@test "a second shipper for the same target is refused while the first holds it" {
  flk-ship --follow >/dev/null 2>&1 &
  SHIP_PID=$!
  sleep 0.5
  run --separate-stderr flk-ship --once
  assert_status 75
  assert_stderr_has "held by pid $SHIP_PID" "us-west-2.lock"
}

@test "--follow started before the WAL exists waits for it (said once), then ships its first segment" {
  rm -rf "$WAL"
  flk-ship --follow >"$BATS_TEST_TMPDIR/out" 2>"$BATS_TEST_TMPDIR/err" &
  SHIP_PID=$!
  sleep 1.2
  kill -0 "$SHIP_PID" # still running
  gen_records 20 first | wal_append -q >/dev/null
  wait_for "$MB/$REGION/us-west-2/$(printf %016d 1).wal" 5
  kill -TERM "$SHIP_PID"
  local st=0
  wait "$SHIP_PID" || st=$?
  SHIP_PID=
  assert_equal "$st" 0 "exit status after SIGTERM"
  assert_equal "$(grep -c 'does not exist yet: waiting for it' "$BATS_TEST_TMPDIR/err")" 1 "the warning, once"
  assert_equal "$(jq -r .sequence "$BATS_TEST_TMPDIR/out")" 1 "shipped"
}
