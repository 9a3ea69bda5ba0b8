#!/usr/bin/env bats
# flk-watermark (DESIGN.md §4, §6): watermarks and lag of real deployments on one
# machine (deploy_helpers: regions with WAL, SQLite store, mailbox, flk-serve with
# tokens on loopback). Lag is measured at the source from its WAL, its ship watermark
# and the report flk-read leaves in the mailbox it reads; these tests move each of the
# three and check the lag, its parts, `wait`'s exit codes, the metrics and the moves of
# `set` / `reset`.

load deploy_helpers

setup() {
  read_setup
}

teardown() {
  read_teardown
}

# wm R ARGS…: flk-watermark with R's configuration (bats run: status, output, stderr).
wm() {
  local r=$1
  shift
  run --separate-stderr flk-watermark --config "$(cfg_of "$r")" "$@"
}

# lag_field FIELD: FIELD of the (only) JSON line of the last `wm R lag`.
lag_field() { jq -r ".$1" <<<"$output"; }

# now_records R N PREFIX: N records written in R now (ts = now), all sealed.
now_records() {
  local i
  for ((i = 1; i <= $2; i++)); do min_record "$3-$i"; done >"$(rdir "$1")/now.jsonl"
  records_in "$1" "$(rdir "$1")/now.jsonl"
}

@test "lag: the ship part until shipped, the apply part until read, 0 when caught up; it grows while the reader is stopped" {
  deploy $EAST $WEST
  write_in $EAST 300 east

  wm $EAST lag
  assert_status 0
  assert_equal "$(lag_field source)/$(lag_field target)" "$EAST/$WEST" "stream"
  [[ $(lag_field stale) == false ]]
  assert_equal "$(lag_field applied_sequence)" 0 "applied before any read"
  # gen_records' first ts is 2026-11-26T08:00:01: the lag is that record's age.
  local expected
  expected=$(($(date +%s) - $(date -d 2026-11-26T08:00:01Z +%s)))
  jq -e --argjson e "$expected" '.lag_seconds >= $e - 2 and .lag_seconds <= $e + 2 and .ship_seconds == .lag_seconds and .apply_seconds == 0' <<<"$output"

  ship_all
  wm $EAST lag
  assert_status 0
  jq -e '.ship_seconds == 0 and .apply_seconds > 0 and .lag_seconds == .apply_seconds and (.oldest_unapplied_ts | startswith("2026-11-26T08:00:01."))' <<<"$output"
  assert_equal "$(lag_field shipped_sequence)" "$(sealed_of $EAST)" "shipped"

  read_all
  wm $EAST lag
  assert_status 0
  jq -e '.lag_seconds == 0 and .ship_seconds == 0 and .apply_seconds == 0 and .stale == false' <<<"$output"
  assert_equal "$(lag_field applied_sequence)" "$(sealed_of $EAST)" "applied (reported by flk-read through flk-serve? no: file://)"

  # The reader stops; new records are shipped but wait: the lag is their age, growing.
  now_records $EAST 20 fresh
  ship_all
  wm $EAST lag --json
  local first
  first=$(lag_field lag_seconds)
  jq -e '.apply_seconds > 0 and .ship_seconds == 0' <<<"$output"
  sleep 1.2
  wm $EAST lag --json
  jq -e --argjson f "$first" '.lag_seconds >= $f + 1' <<<"$output"
  read_all
  wm $EAST lag
  jq -e '.lag_seconds == 0' <<<"$output"
}

@test "lag counts the open segment: written, not yet sealed, is not shipped" {
  deploy $EAST $WEST
  local i
  for ((i = 1; i <= 5; i++)); do min_record "open-$i"; done |
    flk-wal append --wal-dir "$(wal_of $EAST)" --region $EAST --keep-open >/dev/null
  [[ $(sealed_of $EAST) == 0 ]]
  sleep 1.1
  wm $EAST lag
  assert_status 0
  jq -e '.ship_seconds >= 1 and .ship_seconds < 30 and .lag_seconds == .ship_seconds and .shipped_sequence == 0 and .wal_sequence == 1' <<<"$output"
}

@test "wait: 0 once every stream drains, 75 when the timeout passes first (naming the stream)" {
  deploy $EAST $WEST $EU
  now_records $EAST 50 w
  ship_all

  wm $EAST wait --max-lag 10ms --timeout 1s --interval 200ms
  assert_status 75
  assert_stderr_has "flk-watermark: error: lag still at or over 10ms after 1s" "$EAST -> $WEST: " "$EAST -> $EU: "

  # The readers run while wait waits: it returns 0 as soon as both drained.
  # The records are over a second old by now: the bound is not met until they are applied.
  flk-watermark --config "$(cfg_of $EAST)" wait --max-lag 500ms --timeout 30s --interval 100ms \
    >"$BATS_TEST_TMPDIR/wait.out" 2>"$BATS_TEST_TMPDIR/wait.err" &
  local waiter=$!
  sleep 0.5
  kill -0 $waiter # still waiting: nothing applied yet
  read_all
  local rc=0
  wait $waiter || rc=$?
  assert_equal "$rc" 0 "wait's exit status ($(cat "$BATS_TEST_TMPDIR/wait.err"))"
  assert_equal "$(jq -r '"\(.target) \(.lag_seconds)"' "$BATS_TEST_TMPDIR/wait.out" | sort)" "$EU 0
$WEST 0" "final lags"
}

@test "a target that cannot be asked: lag from its last report, marked stale, exit 75; metrics say so" {
  deploy $EAST $WEST
  write_in $EAST 100 east
  ship_all
  read_all
  wm $EAST lag
  assert_status 0
  local applied
  applied=$(lag_field applied_sequence)
  ((applied > 0))

  kill "$(pgrep -f "flk-serve --config $(cfg_of $WEST)")"
  wait_gone "$(rdir $WEST)/port" 2>/dev/null || true
  write_in $EAST 100 more 101
  wm $EAST lag --probe-timeout 2s
  assert_status 75
  assert_stderr_has "flk-watermark: error: target '$WEST': cannot learn what it applied"
  jq -e --argjson a "$applied" '.stale == true and .applied_sequence == $a and .ship_seconds > 0' <<<"$output"

  wm $EAST metrics --probe-timeout 2s
  assert_status 0
  grep -qx "flk_crr_lag_stale{source=\"$EAST\",target=\"$WEST\"} 1" <<<"$output"
  grep -q "^flk_crr_lag_seconds{source=\"$EAST\",target=\"$WEST\"} [1-9]" <<<"$output"
  grep -qx "flk_crr_applied_sequence{source=\"$EAST\",target=\"$WEST\"} $applied" <<<"$output"
}

@test "metrics: the Prometheus text, written atomically with --metrics-file; promtool accepts it" {
  deploy $EAST $WEST
  write_in $EAST 100 east
  ship_all
  read_all
  wm $EAST metrics --metrics-file "$BATS_TEST_TMPDIR/lag.prom"
  assert_status 0
  assert_equal "$output" "" "stdout"
  local m=$BATS_TEST_TMPDIR/lag.prom
  grep -qx "flk_crr_lag_seconds{source=\"$EAST\",target=\"$WEST\"} 0" "$m"
  grep -qx "flk_crr_lag_stale{source=\"$EAST\",target=\"$WEST\"} 0" "$m"
  grep -qx "# TYPE flk_crr_lag_seconds gauge" "$m"
  if command -v promtool >/dev/null; then promtool check metrics <"$m"; fi
}

@test "show: ship watermarks per target and replay watermarks per source, JSON Lines or a table" {
  deploy $EAST $WEST
  write_in $EAST 300 east
  write_in $WEST 100 west
  ship_all
  read_all
  local es ws
  es=$(sealed_of $EAST) ws=$(sealed_of $WEST)

  wm $EAST show
  assert_status 0
  assert_equal "$(jq -r '"\(.kind) \(.source) \(.target) \(.sequence) \(.behind)"' <<<"$output")" \
    "ship $EAST $WEST $es 0
replay $WEST $EAST $ws 0" "$EAST's watermarks"
  jq -s -e 'map(.sha256 | test("^[0-9a-f]{64}$")) | all' <<<"$output"

  # More to ship and to read: "behind" says how many segments wait.
  write_in $EAST 100 later 301
  ship_all
  wm $WEST show
  assert_equal "$(jq -r 'select(.kind == "replay") | "\(.source) \(.sequence) \(.behind)"' <<<"$output")" \
    "$EAST $es $(($(sealed_of $EAST) - es))" "$WEST's replay of $EAST"

  # On a terminal: a table with a header.
  run script -qec "flk-watermark --config '$(cfg_of $EAST)' show" /dev/null
  [[ ${lines[0]} == KIND*SOURCE*TARGET*SEQUENCE*BEHIND*TIME*SHA256* ]]
  [[ ${lines[1]} == ship*"$EAST"*"$WEST"* ]]
}

@test "reset and set: back is safe (re-read and re-ship change nothing), forward needs --force, a running reader's lock refuses" {
  deploy $EAST $WEST
  write_in $EAST 300 east
  write_in $WEST 20 west
  ship_all
  read_all
  verify_all
  local before=$DIGEST es
  es=$(sealed_of $EAST)
  ((es >= 4))

  # Replay watermark back to 0: everything is applied again, all duplicates.
  wm $WEST reset --source $EAST
  assert_status 0
  jq -e --argjson s "$es" '.before.sequence == $s and .after.sequence == 0 and .forced == false' <<<"$output"
  read_all
  assert_read_from $WEST "$EAST:0"
  jq -s -e 'map(.applied) | add == 0' <<<"$(read_out $WEST)"
  verify_all
  assert_equal "$DIGEST" "$before" "digest after a re-read"

  # Back to 2: segments 3… again.
  wm $WEST set --source $EAST 2
  assert_status 0
  read_all
  assert_read_from $WEST "$EAST:2"

  # Forward without --force: refused (64), nothing moved.
  wm $WEST set --source $EAST 2
  wm $WEST reset --source $EAST
  wm $WEST set --source $EAST 3
  assert_status 64
  assert_stderr_has "would skip segments 1-3" "give --force"
  wm $WEST show
  assert_equal "$(jq -r "select(.source == \"$EAST\") | .sequence" <<<"$output")" 0 "replay watermark after a refused move"
  # With --force: moved (and said); the next read starts at 4, its chain checked against 3's digest.
  wm $WEST set --source $EAST 3 --force
  assert_status 0
  assert_stderr_has "warning: skipped segments 1-3"
  read_all
  assert_read_from $WEST "$EAST:3"

  # A segment the mailbox does not hold cannot be a watermark (its digest is unknown).
  wm $WEST set --source $EAST 999 --force
  assert_status 66
  assert_stderr_has "no segment 999 of source '$EAST'"

  # Ship watermark: reset → everything shipped again, answered "duplicate".
  wm $EAST reset --target $WEST
  assert_status 0
  run --separate-stderr flk-ship --config "$(cfg_of $EAST)" --once
  assert_status 0
  assert_equal "$(jq -r .result <<<"$output" | sort -u)" duplicate "results of a re-ship"
  assert_equal "$(jq -s length <<<"$output")" "$es" "segments re-shipped"
  wm $EAST set --target $WEST $((es + 1))
  assert_status 66
  write_in $EAST 50 more 301
  wm $EAST set --target $WEST $((es + 1))
  assert_status 64
  assert_stderr_has "would skip segment $((es + 1))" "never be shipped to '$WEST'"

  # While flk-read (or flk-ship) holds its lock, nothing moves: 75, the holder named.
  flock "$(state_of $WEST)/read/$EAST.lock" sleep 5 &
  local holder=$!
  sleep 0.3
  wm $WEST reset --source $EAST
  kill $holder
  assert_status 75
  assert_stderr_has "cannot lock '$(state_of $WEST)/read/$EAST.lock'"
}

@test "flk-read --metrics-file: watermark, pending, records by result; counters survive the next run" {
  deploy $EAST $WEST
  write_in $EAST 200 east
  shared_in $EAST 10
  shared_in $WEST 10
  ship_all
  local m=$BATS_TEST_TMPDIR/read.prom
  run --separate-stderr flk-read --config "$(cfg_of $WEST)" --once --metrics-file "$m"
  assert_status 0
  local es
  es=$(sealed_of $EAST)
  grep -qx "flk_crr_read_watermark_sequence{source=\"$EAST\",target=\"$WEST\"} $es" "$m"
  grep -qx "flk_crr_read_pending_segments{source=\"$EAST\",target=\"$WEST\"} 0" "$m"
  grep -qx "flk_crr_read_segments_total{source=\"$EAST\",target=\"$WEST\"} $es" "$m"
  grep -qx "flk_crr_read_records_total{source=\"$EAST\",target=\"$WEST\",result=\"applied\"} 200" "$m"
  grep -qx "flk_crr_read_records_total{source=\"$EAST\",target=\"$WEST\",result=\"conflict\"} 10" "$m"
  grep -qx "flk_crr_read_up{source=\"$EAST\",target=\"$WEST\"} 1" "$m"
  if command -v promtool >/dev/null; then promtool check metrics <"$m"; fi

  # A re-read: the counters go on from where they were.
  flk-watermark --config "$(cfg_of $WEST)" reset --source $EAST >/dev/null
  run --separate-stderr flk-read --config "$(cfg_of $WEST)" --once --metrics-file "$m"
  assert_status 0
  grep -qx "flk_crr_read_segments_total{source=\"$EAST\",target=\"$WEST\"} $((2 * es))" "$m"
  grep -qx "flk_crr_read_records_total{source=\"$EAST\",target=\"$WEST\",result=\"duplicate\"} 200" "$m"
  # The shared records lost to us-west-2's earlier writes again: later and conflict both.
  grep -qx "flk_crr_read_records_total{source=\"$EAST\",target=\"$WEST\",result=\"later\"} 20" "$m"
  grep -qx "flk_crr_read_records_total{source=\"$EAST\",target=\"$WEST\",result=\"conflict\"} 20" "$m"
}

@test "usage: no subcommand, set without a sequence or a stream, --target with --source (64)" {
  deploy $EAST $WEST
  wm $EAST
  assert_status 64
  wm $EAST set --source $WEST
  assert_status 64
  wm $EAST set 3
  assert_status 64
  assert_stderr_has "give --target REGION or --source REGION"
  wm $EAST set --source $WEST --target $WEST 3
  assert_status 64
  wm $EAST wait --timeout 1s
  assert_status 64
  wm $EAST lag --target eu-central-1
  assert_status 64
  assert_stderr_has "target 'eu-central-1' is not a target of region '$EAST'"
}

@test "pull: a reader over http reports to the source's flk-serve, and the source's lag sees it" {
  deploy $EAST $WEST
  write_in $EAST 200 east
  # us-east-1 ships into its own mailbox; us-west-2 pulls from us-east-1's flk-serve.
  run --separate-stderr flk-ship --config "$(cfg_of $EAST)" --once --to "file://$(mb_of $EAST)"
  assert_status 0
  local pull_cfg=$(rdir $EAST)/pull.yaml es
  es=$(sealed_of $EAST)
  sed "s|url: \"http://127.0.0.1:[0-9]*\"|url: \"file://$(mb_of $EAST)\"|" "$(cfg_of $EAST)" >"$pull_cfg"
  run --separate-stderr flk-watermark --config "$pull_cfg" lag
  assert_status 0
  jq -e '.applied_sequence == 0 and .apply_seconds > 0 and .ship_seconds == 0' <<<"$output"

  run --separate-stderr flk-read --config "$(cfg_of $WEST)" --once \
    --from "http://127.0.0.1:$(tr -d '\n' <"$(rdir $EAST)/port")" --token-file "$(rdir $WEST)/tokens/to-$EAST"
  assert_status 0
  assert_equal "$(jq -r .sequence "$(mb_of $EAST)/$EAST/$WEST/applied.json")" "$es" "the report in us-east-1's mailbox"
  run --separate-stderr flk-watermark --config "$pull_cfg" lag
  assert_status 0
  jq -e --argjson s "$es" '.applied_sequence == $s and .lag_seconds == 0' <<<"$output"
}
