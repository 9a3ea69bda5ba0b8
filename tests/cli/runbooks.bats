#!/usr/bin/env bats
# The runbook scripts (scripts/failover.sh, failback.sh, split-brain.sh; flk(7),
# RUNBOOKS) on real deployments (deploy_helpers: regions on loopback with WAL, SQLite
# store, mailbox and flk-serve): what each step does, that a failed step stops the
# runbook before the next, and that bad input gets a clear error and changes nothing.

load deploy_helpers

setup() {
  read_setup
  S=$FLK_SOURCE/scripts
}

teardown() {
  read_teardown
}

# fingerprint R: what a runbook might change in region R (WAL, store, state, mailbox).
fingerprint() {
  find "$(rdir "$1")" -type f ! -name '*.log' ! -name port -printf '%P %s %T@\n' 2>/dev/null | sort | sha256sum
}

@test "every runbook script: --help, shellcheck clean, runs under dash; unknown options are 64" {
  local s
  for s in failover failback split-brain rebuild-dedup-from-wal; do
    run --separate-stderr "$S/$s.sh" --help
    assert_status 0
    [[ ${lines[0]} == "Usage: $s.sh "* ]]
    run --separate-stderr "$S/$s.sh" --no-such-option
    assert_status 64
    assert_stderr_has "$s.sh: error: unknown argument '--no-such-option'"
    if command -v shellcheck >/dev/null; then shellcheck -x "$S/$s.sh"; fi
    if command -v dash >/dev/null; then
      run --separate-stderr dash "$S/$s.sh" --help
      assert_status 0
    fi
  done
}

@test "bad input changes nothing: another region, a missing configuration, a bad time or duration, writes not stopped" {
  deploy $EAST $WEST
  write_in $EAST 100 east
  local before
  before=$(fingerprint $EAST)
  export FLK_CONFIG=$(cfg_of $EAST)
  run --separate-stderr "$S/failover.sh" --region $WEST --writes-stopped
  assert_status 64
  assert_stderr_has "failover.sh: error: --region '$WEST' does not match the region of configuration"
  run --separate-stderr "$S/failover.sh" --region $EAST
  assert_status 64
  assert_stderr_has "stop the region's writes first"
  run --separate-stderr "$S/failover.sh" --region $EAST --writes-stopped --max-lag soon
  assert_status 64
  assert_stderr_has "invalid --max-lag 'soon'"
  run --separate-stderr "$S/failover.sh" --region $EAST --writes-stopped --config "$BATS_TEST_TMPDIR/none.yaml"
  assert_status 78
  assert_stderr_has "configuration '$BATS_TEST_TMPDIR/none.yaml' (--config) does not exist"
  run --separate-stderr "$S/failback.sh" --region $EAST --since-time yesterday
  assert_status 64
  assert_stderr_has "invalid --since-time 'yesterday'"
  run --separate-stderr "$S/failback.sh" --region EAST
  assert_status 64
  assert_stderr_has "invalid --region 'EAST'"
  run --separate-stderr "$S/failback.sh"
  assert_status 64
  run --separate-stderr "$S/split-brain.sh" --config "$BATS_TEST_TMPDIR/none.yaml"
  assert_status 78
  run --separate-stderr "$S/split-brain.sh" --store nonsense
  assert_status 64
  assert_stderr_has "expected REGION=URL"
  # A step that fails ends the runbook with its status, before the next step runs.
  run --separate-stderr "$S/failover.sh" --region $EAST --stop-writes "exit 3"
  assert_status 3
  assert_stderr_has "failover.sh: error: --stop-writes failed (exit 3): nothing else was done"
  [[ $stderr != *"step 2"* ]]
  assert_equal "$(fingerprint $EAST)" "$before" "region $EAST after refused runs"
}

@test "--dry-run prints each step's command and runs none" {
  deploy $EAST $WEST
  write_in $EAST 100 east
  local before
  before=$(fingerprint $EAST)
  run --separate-stderr "$S/failover.sh" --config "$(cfg_of $EAST)" --region $EAST --stop-writes "touch $BATS_TEST_TMPDIR/stopped" \
    --dns-cmd "touch $BATS_TEST_TMPDIR/dns" --dry-run
  assert_status 0
  assert_stderr_has "would run: sh -c 'touch $BATS_TEST_TMPDIR/stopped'" "flk-wal --config" " seal" "flk-ship --config" \
    "flk-watermark --config" "wait --max-lag 60s --timeout 10m" "dry run: nothing was run"
  run --separate-stderr "$S/failback.sh" --config "$(cfg_of $EAST)" --region $EAST --dry-run
  assert_status 0
  assert_stderr_has "would run: " "flk-wal --config" "verify" "flk-rebuild-dedup --config" "--verify" "flk-read --config"
  run --separate-stderr "$S/split-brain.sh" --config "$(cfg_of $EAST)" --store "$EAST=$(store_of $EAST)" \
    --store "$WEST=$(store_of $WEST)" --apply --dry-run
  assert_status 0
  assert_stderr_has "would run: " " scan --store=$EAST=" " reconcile --store=" "--no-worm" "--apply" " verify-log"
  [[ ! -e $BATS_TEST_TMPDIR/stopped && ! -e $BATS_TEST_TMPDIR/dns ]]
  assert_equal "$(fingerprint $EAST)" "$before" "region $EAST after dry runs"
}

@test "failover: stop writes, seal the open segment, ship, wait until the peer applied it, then DNS; not drained is 75 and no DNS" {
  deploy $EAST $WEST
  write_in $EAST 200 east
  # The last records sit in the open segment.
  local i
  for ((i = 1; i <= 7; i++)); do min_record "open-$i"; done |
    flk-wal append --wal-dir "$(wal_of $EAST)" --region $EAST --keep-open >/dev/null

  # us-west-2's reader is not running: the lag cannot drain.
  run --separate-stderr "$S/failover.sh" --config "$(cfg_of $EAST)" --region $EAST --writes-stopped \
    --max-lag 5s --timeout 2s --dns-cmd "touch $BATS_TEST_TMPDIR/dns"
  assert_status 75
  assert_stderr_has "step 4" "the replication lag did not drain (exit 75): the region is still in DNS"
  [[ ! -e $BATS_TEST_TMPDIR/dns ]]
  [[ -z $(find "$(wal_of $EAST)" -name '*.open' -size +0) ]] # sealed by step 2

  # With it running, the drain completes and DNS is updated.
  flk-read --config "$(cfg_of $WEST)" --follow --interval 100ms >/dev/null 2>"$BATS_TEST_TMPDIR/read.err" &
  echo $! >>"$PIDS"
  run --separate-stderr "$S/failover.sh" --config "$(cfg_of $EAST)" --region $EAST \
    --stop-writes "touch $BATS_TEST_TMPDIR/stopped" --max-lag 5s --timeout 30s --dns-cmd "touch $BATS_TEST_TMPDIR/dns"
  assert_status 0
  [[ -e $BATS_TEST_TMPDIR/stopped && -e $BATS_TEST_TMPDIR/dns ]]
  assert_stderr_has "done: region '$EAST' is drained"
  # Everything us-east-1 acknowledged is in us-west-2's store, the open segment's records too.
  run --separate-stderr flk-watermark --config "$(cfg_of $EAST)" lag
  jq -e '.lag_seconds == 0' <<<"$output"
  sqlite3 "$(rdir $WEST)/dedup.db" "SELECT count(*) FROM records WHERE pcs_id LIKE 'open-%'" | grep -qx 7
}

@test "failback: a lost store is rebuilt, a damaged one moved aside and rebuilt, peers' writes replayed; verified" {
  deploy $EAST $WEST
  write_in $EAST 300 east
  write_in $WEST 200 west
  ship_all
  read_all
  verify_all
  local digest=$DIGEST

  # The outage: us-east-1's store is lost; us-west-2 goes on writing and shipping.
  rm -f "$(rdir $EAST)/dedup.db"*
  write_in $WEST 50 during 201
  run --separate-stderr flk-ship --config "$(cfg_of $WEST)" --once
  assert_status 0
  run --separate-stderr "$S/failback.sh" --config "$(cfg_of $EAST)" --region $EAST
  assert_status 0
  assert_stderr_has "rebuilding it in full" "step 3" "step 5" "10% -> 25% -> 50% -> 100%"
  read_all
  verify_all
  [[ $DIGEST != "$digest" ]] # the records written during the outage are in

  # A damaged store: moved aside (kept), rebuilt; the result equals the peer's.
  dd if=/dev/urandom of="$(rdir $EAST)/dedup.db" bs=4096 count=2 conv=notrunc 2>/dev/null
  run --separate-stderr "$S/failback.sh" --config "$(cfg_of $EAST)" --region $EAST
  assert_status 0
  assert_stderr_has "is damaged: moving it aside"
  ls "$(rdir $EAST)"/dedup.db.damaged-* >/dev/null
  verify_all

  # Rows lost, with --since-time: only the records since then are merged back.
  sqlite3 "$(rdir $EAST)/dedup.db" "DELETE FROM records WHERE pcs_id IN ('east-000299', 'east-000300')"
  run --separate-stderr "$S/failback.sh" --config "$(cfg_of $EAST)" --region $EAST --since-time 2026-11-26T08:04:00Z
  assert_status 0
  assert_stderr_has "merging the records since 2026-11-26T08:04:00Z"
  verify_all
}

@test "split-brain: detect, the overlap window, the plan (exit 1, nothing changed), --apply reconciles and verifies" {
  deploy $EAST $WEST
  write_in $EAST 100 east
  write_in $WEST 100 west
  ship_all
  read_all
  local worm=$BATS_TEST_TMPDIR/worm.jsonl
  printf 'diverge:\n  stores:\n    %s: "%s"\n' $WEST "$(store_of $WEST)" >>"$(cfg_of $EAST)"
  run --separate-stderr "$S/split-brain.sh" --config "$(cfg_of $EAST)" --worm "$worm"
  assert_status 0
  assert_stderr_has "no divergence: nothing to do"

  # The partition: both regions decide the same PCSs, each its own way.
  shared_in $EAST 25
  shared_in $WEST 25
  local before
  before=$(sqlite3 "$(rdir $EAST)/dedup.db" "SELECT count(*), sum(outcome) FROM records")
  run --separate-stderr "$S/split-brain.sh" --config "$(cfg_of $EAST)" --worm "$worm" --work-dir "$BATS_TEST_TMPDIR/w"
  assert_status 1
  assert_stderr_has "found 25 conflicting and 0 missing pcs_id(s)" "conflicting writes between 2026-11-26T11:00:" \
    "$EAST: 25 record(s)" "not reconciled: run again with --apply"
  assert_equal "$(jq -s length "$BATS_TEST_TMPDIR/w/plan.jsonl")" 25 "plans"
  assert_equal "$(sqlite3 "$(rdir $EAST)/dedup.db" "SELECT count(*), sum(outcome) FROM records")" "$before" "store after the plan"

  run --separate-stderr "$S/split-brain.sh" --config "$(cfg_of $EAST)" --worm "$worm" --apply
  assert_status 0
  assert_stderr_has "step 4" "step 5" "reconciled and verified"
  run --separate-stderr flk-diverge --config "$(cfg_of $EAST)" scan --no-worm
  assert_status 0
  run --separate-stderr flk-diverge verify-log "$worm"
  assert_status 0
}
