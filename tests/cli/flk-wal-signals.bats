#!/usr/bin/env bats
# flk-wal seal beside a running append (SIGUSR1), and a graceful stop (SIGTERM).

load helpers

setup() { flk_setup; }

# Starts `flk-wal append` reading from a FIFO that this test writes to; APPEND_PID,
# FIFO and fd 7 (the writing end) are set.
start_append() {
  FIFO=$BATS_TEST_TMPDIR/in
  mkfifo "$FIFO"
  # exec: $! is flk-wal itself (signals reach it); 3>&-: bats does not wait on it.
  (exec flk-wal append --wal-dir "$WAL" --region "$REGION" "$@" <"$FIFO" >"$BATS_TEST_TMPDIR/acks" \
    2>"$BATS_TEST_TMPDIR/err" 3>&-) &
  APPEND_PID=$!
  exec 7>"$FIFO"
}

wait_for_acks() {  # N: until N acknowledgements were printed (5 s at most)
  local i
  for i in $(seq 50); do
    [[ $(wc -l <"$BATS_TEST_TMPDIR/acks") -ge $1 ]] && return 0
    sleep 0.1
  done
  echo "only $(wc -l <"$BATS_TEST_TMPDIR/acks") of $1 acks" >&2
  return 1
}

@test "seal while an append runs: the writer seals on request, the append goes on" {
  start_append --segment-age 1h
  min_record a >&7
  min_record b >&7
  wait_for_acks 2
  run --separate-stderr flk-wal seal --wal-dir "$WAL" --region "$REGION"
  assert_status 0
  assert_equal "$(jq -r '"\(.segment) \(.state) \(.records)"' <<<"$output")" "1 sealed 2" "seal output"
  [[ -f $WAL/0000000000000001.wal && ! -e $WAL/0000000000000001.open ]]
  # The append keeps going, into segment 2.
  min_record c >&7
  wait_for_acks 3
  assert_equal "$(tail -n 1 "$BATS_TEST_TMPDIR/acks" | jq -r .segment)" 2 "segment of the record after the seal"
  exec 7>&-
  wait "$APPEND_PID"
  run --separate-stderr flk-wal verify --wal-dir "$WAL"
  assert_status 0
  assert_equal "$(flk-wal cat --wal-dir "$WAL" | pcs_ids | tr '\n' ' ')" "a b c " "records"
}

@test "seal with nothing open, beside a running append, is a quiet success" {
  start_append --segment-age 1h
  sleep 0.3
  run --separate-stderr flk-wal seal --wal-dir "$WAL" --region "$REGION"
  assert_status 0
  assert_equal "$output" "" "stdout"
  exec 7>&-
  wait "$APPEND_PID"
}

@test "seal refuses when the lock holder is not flk-wal append" {
  mkdir -p "$WAL"
  # Hold the WAL's lock from another program (flock(1)) with an open segment present.
  min_record a | wal_append --keep-open >/dev/null
  flock "$WAL/LOCK" sleep 5 3>&- &
  local holder=$!
  sleep 0.3
  run --separate-stderr flk-wal seal --wal-dir "$WAL" --region "$REGION"
  kill "$holder" 2>/dev/null || true
  wait "$holder" 2>/dev/null || true
  assert_status 75
  assert_stderr_has "flk-wal: error: cannot lock '$WAL/LOCK': held by"
  assert_stderr_has "not a running flk-wal append"
  [[ -f $WAL/0000000000000001.open ]]  # nothing was sealed behind the holder's back
}

@test "SIGTERM: append commits what it read, seals, and exits 0" {
  start_append --segment-age 1h
  min_record a >&7
  min_record b >&7
  wait_for_acks 2
  kill -TERM "$APPEND_PID"
  local status=0
  wait "$APPEND_PID" || status=$?
  exec 7>&-
  assert_equal "$status" 0 "exit status"
  [[ -f $WAL/0000000000000001.wal && ! -e $WAL/0000000000000001.open ]]
  assert_equal "$(flk-wal cat --wal-dir "$WAL" | pcs_ids | tr '\n' ' ')" "a b " "records"
}

@test "SIGTERM with --keep-open leaves the segment open for the next run" {
  start_append --segment-age 1h --keep-open
  min_record a >&7
  wait_for_acks 1
  kill -TERM "$APPEND_PID"
  wait "$APPEND_PID"
  exec 7>&-
  [[ -f $WAL/0000000000000001.open ]]
  min_record b | wal_append --keep-open >/dev/null
  assert_equal "$(flk-wal cat --wal-dir "$WAL" | pcs_ids | tr '\n' ' ')" "a b " "records"
}
