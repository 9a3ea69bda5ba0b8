#!/usr/bin/env bats
# flk-read --follow as a service: a segment shipped into the mailbox is applied within
# about a second of its arrival, an error (a gap) is reported once rather than at every
# look and the source resumes when the gap is filled, and SIGTERM stops it with exit 0.

load read_helpers

setup() {
  read_setup
  MB=$(mb_of $WEST)
  STORE=$(sqlite_of $WEST)
}

teardown() {
  [[ -n ${READ_PID-} ]] && kill -9 "$READ_PID" 2>/dev/null
  wait 2>/dev/null || true
  read_teardown
}

# start_follow: flk-read --follow as us-west-2 on its mailbox, output to files.
start_follow() {
  flk-read --region $WEST --store "$STORE" --state-dir "$(state_of $WEST)" --from "file://$MB" \
    --follow --interval 200ms >"$BATS_TEST_TMPDIR/out" 2>"$BATS_TEST_TMPDIR/err" &
  READ_PID=$!
}

# stop_follow: SIGTERM to the reader, which must exit 0.
stop_follow() {
  kill -TERM "$READ_PID"
  local rc=0
  wait "$READ_PID" || rc=$?
  READ_PID=
  assert_equal "$rc" 0 "exit status after SIGTERM"
}

# wait_applied N SECONDS: until the reader printed a line for sequence N; fails after SECONDS.
wait_applied() {
  local i
  for ((i = 0; i < $2 * 20; i++)); do
    jq -e --argjson n "$1" 'select(.sequence == $n)' "$BATS_TEST_TMPDIR/out" >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  echo "segment $1 was not applied within $2 s" >&2
  cat "$BATS_TEST_TMPDIR/err" >&2
  return 1
}

@test "--follow applies each shipped segment within about a second" {
  start_follow
  local n start took
  for n in 1 2 3; do
    append_in $EAST 20 "f$n" $((n * 100)) 1000000
    ship_file $EAST "$MB" $WEST >/dev/null
    start=$(date +%s%N)
    wait_applied "$n" 5
    took=$((($(date +%s%N) - start) / 1000000))
    echo "segment $n applied after $took ms"
    ((took < 1500))
  done
  stop_follow
  assert_equal "$(jq -r .sequence "$BATS_TEST_TMPDIR/out" | tr '\n' ' ')" "1 2 3 "
  assert_store_equals $WEST "$STORE" "$MB" "$BATS_TEST_TMPDIR/no-wal"
}

@test "--follow: a gap is reported once, and the source resumes when it is filled" {
  local n
  for n in 1 2 3; do append_in $EAST 20 "g$n" $((n * 100)) 1000000; done
  ship_file $EAST "$MB" $WEST >/dev/null
  local held=$MB/$EAST/$WEST/0000000000000002.wal
  mv "$held" "$BATS_TEST_TMPDIR/held.wal"
  mv "$held.sha256" "$BATS_TEST_TMPDIR/held.wal.sha256"
  start_follow
  wait_applied 1 5
  sleep 1 # five more looks at the gap
  assert_equal "$(grep -c 'segment 2 is missing' "$BATS_TEST_TMPDIR/err")" 1 "gap reports"
  [[ $(jq -r .sequence "$BATS_TEST_TMPDIR/out") == 1 ]]
  mv "$BATS_TEST_TMPDIR/held.wal.sha256" "$held.sha256"
  mv "$BATS_TEST_TMPDIR/held.wal" "$held"
  wait_applied 3 5
  stop_follow
  assert_equal "$(jq -r .sequence "$BATS_TEST_TMPDIR/out" | tr '\n' ' ')" "1 2 3 "
}
