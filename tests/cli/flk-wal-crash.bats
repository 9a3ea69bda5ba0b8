#!/usr/bin/env bats
# The crash test (DESIGN.md §2): `flk-wal append` on a continuous stream, with small
# segments so that rotations and seals happen all the time, is killed with SIGKILL at
# random moments, round after round; each round's writer first recovers from the
# previous kill. At the end every acknowledged record must be in the WAL, in the
# segment its acknowledgement named, exactly once; `verify` must pass and the segment
# numbers must be contiguous.
#
#   FLK_CRASH_ROUNDS  rounds (default 30)       FLK_CRASH_SEED  $RANDOM seed (default: random)

load helpers

setup() {
  flk_setup
  ACKS=$BATS_TEST_TMPDIR/acks # every acknowledgement line of every round
  : >"$ACKS"
}

# crash_stream ROUND: an endless stream of records (about 4000 a second, in small
# bursts), pcs_ids crash-ROUND-N.
crash_stream() {
  awk -v r="$1" 'BEGIN {
    for (i = 1; ; i++) {
      printf "{\"pcs_id\":\"crash-%d-%07d\",\"tenant_id\":\"tenant-%d\",\"outcome\":\"accepted\",\"params\":\"v1\",\"payload\":{\"round\":%d,\"n\":%d}}\n", r, i, i % 7, r, i
      if (i % 20 == 0) { fflush(); system("sleep 0.005") }
    }
  }'
}

# run_and_kill ROUND: one writer on the stream, SIGKILLed after a random 20–700 ms.
# Its complete acknowledgement lines are added to $ACKS; its stderr stays in
# err.ROUND. Fails when the writer did not die of the kill (it stopped by itself).
run_and_kill() {
  local round=$1 out=$BATS_TEST_TMPDIR/acks.$1 err=$BATS_TEST_TMPDIR/err.$1 pid status=0
  crash_stream "$round" 3>&- |
    flk-wal append --wal-dir "$WAL" --region "$REGION" --segment-bytes 6KiB --segment-age 100ms \
      >"$out" 2>"$err" 3>&- &
  pid=$!
  sleep "0.$(printf %03d $((RANDOM % 680 + 20)))"
  kill -KILL "$pid" 2>/dev/null || true
  # (Braces and 2>/dev/null: no "Killed" job notice from bash.)
  { wait "$pid"; } 2>/dev/null || status=$?
  if [[ $status != 137 ]]; then
    echo "round $round: flk-wal append exited with $status before it was killed (stderr follows):" >&2
    cat "$err" >&2
    echo "(exit 0 means it saw the end of its input or a SIGTERM/SIGINT from elsewhere)" >&2
    return 1
  fi
  # A kill can cut the last line short: keep whole acknowledgements only.
  grep -E "$ACK_RE" "$out" >>"$ACKS" || true
}

# check_wal ACKS: the WAL holds every acknowledged record of file ACKS, in the
# segment its acknowledgement names, and no record twice; verify passes; segments
# are contiguous and all sealed.
check_wal() {
  local acks=$1 present=$BATS_TEST_TMPDIR/present f seq
  [[ -s $acks ]] || { echo "no acknowledgements to check" >&2; return 1; }
  if ! flk-wal verify --wal-dir "$WAL" >"$BATS_TEST_TMPDIR/verify.out" 2>"$BATS_TEST_TMPDIR/verify.err"; then
    echo "verify failed:" >&2
    cat "$BATS_TEST_TMPDIR/verify.err" >&2
    return 1
  fi
  assert_contiguous || return 1
  if compgen -G "$WAL/*.open" >/dev/null; then
    echo "an open segment is left after the final run" >&2
    return 1
  fi
  # "pcs_id segment" for every record in the WAL, read segment by segment …
  for f in "$WAL"/*.wal; do
    seq=${f##*/}
    seq=$((10#${seq:0:16}))
    flk-wal cat "$f" | jq -r --arg s "$seq" '"\(.pcs_id) \($s)"' || return 1
  done >"$present"
  # … must include "pcs_id segment" of every acknowledgement, and hold no pcs_id twice.
  jq -r '"\(.pcs_id) \(.segment)"' "$acks" >"$BATS_TEST_TMPDIR/acked"
  assert_all_present "$BATS_TEST_TMPDIR/acked" "$present" || return 1
  cut -d' ' -f1 "$present" >"$present.ids"
  assert_no_duplicates "$present.ids" || return 1
  # The whole-WAL reader agrees.
  flk-wal cat --wal-dir "$WAL" | pcs_ids | sort >"$present.cat"
  sort "$present.ids" | cmp -s - "$present.cat" || {
    echo "cat --wal-dir and cat of each segment disagree" >&2
    return 1
  }
}

@test "kill -9 at random moments: every acknowledged record survives" {
  local rounds=${FLK_CRASH_ROUNDS:-30} seed=${FLK_CRASH_SEED:-$((($$ + SECONDS * 7919) % 32768))} round
  RANDOM=$seed
  echo "# crash test: $rounds rounds, FLK_CRASH_SEED=$seed" >&3
  local acked_rounds=0
  for ((round = 1; round <= rounds; round++)); do
    local before
    before=$(wc -l <"$ACKS")
    run_and_kill "$round"
    (($(wc -l <"$ACKS") > before)) && acked_rounds=$((acked_rounds + 1))
    # Every round but the first starts by recovering; it may report what it cut
    # or finished, and nothing else.
    if grep -v -e '^flk-wal: recovering: ' "$BATS_TEST_TMPDIR/err.$round" | grep -q .; then
      echo "round $round: unexpected messages:" >&2
      cat "$BATS_TEST_TMPDIR/err.$round" >&2
      return 1
    fi
  done
  # A final writer recovers from the last kill and seals.
  run --separate-stderr wal_append --segment-age 10ms </dev/null
  assert_status 0

  local n_acks n_segments cuts finished
  n_acks=$(wc -l <"$ACKS")
  n_segments=$(segment_numbers | wc -l)
  cuts=$(cat "$BATS_TEST_TMPDIR"/err.* | grep -c 'cut torn tail' || true)
  finished=$(cat "$BATS_TEST_TMPDIR"/err.* | grep -c 'finished sealing' || true)
  echo "# crash test: $n_acks acknowledgements in $acked_rounds rounds, $n_segments segments, $cuts torn tails cut, $finished seals finished" >&3
  # The test has teeth only if the writers did work before they were killed.
  ((acked_rounds >= rounds / 2)) || { echo "only $acked_rounds of $rounds rounds acknowledged anything" >&2; return 1; }
  ((n_segments > rounds))

  check_wal "$ACKS"
}

@test "the crash checker catches a lost acknowledged record" {
  # The checker above must not pass vacuously: lose one acknowledged record (damage
  # the last frame of the open segment, which recovery cuts as a torn tail — see
  # CAVEATS in flk-wal(5)) and it must fail, naming the record.
  gen_records 30 lost | wal_append --segment-bytes 2KiB --keep-open >"$ACKS"
  [[ $(wc -l <"$ACKS") == 30 ]]
  run check_wal "$ACKS"
  # Not yet: an open segment is left.
  assert_status 1
  wal_append --segment-age 10ms </dev/null
  run check_wal "$ACKS"
  assert_status 0

  rm -rf "$WAL"
  gen_records 30 lost | wal_append --segment-bytes 2KiB --keep-open >"$ACKS"
  local open
  open=$(compgen -G "$WAL/*.open")
  truncate -s -3 "$open"
  wal_append --segment-age 10ms </dev/null 2>"$BATS_TEST_TMPDIR/recover.err"
  grep -q 'cut torn tail' "$BATS_TEST_TMPDIR/recover.err"
  run check_wal "$ACKS"
  assert_status 1
  [[ $output == *"acknowledged records are missing"* && $output == *lost-000030* ]]
}

@test "the crash checker catches a record in the wrong segment and a duplicate" {
  gen_records 30 dup | wal_append --segment-bytes 2KiB --segment-age 10ms >"$ACKS"
  run check_wal "$ACKS"
  assert_status 0
  # An acknowledgement that names the wrong segment.
  sed '1s/"segment":1,/"segment":2,/' "$ACKS" >"$BATS_TEST_TMPDIR/wrong"
  run check_wal "$BATS_TEST_TMPDIR/wrong"
  assert_status 1
  # A record written twice.
  gen_records 1 dup | wal_append --segment-age 10ms >/dev/null
  run check_wal "$ACKS"
  assert_status 1
  [[ $output == *duplicated* ]]
}
