#!/usr/bin/env bats
# The three-region demo (scripts/demo.sh, `make demo`) with the built tools: it exits 0,
# its summary reports one content digest for the three regions and conflicts found
# then reconciled; with FLK_DEMO_SABOTAGE=1 (no reconciliation) its convergence check
# fails; and however it ends (success, failure, SIGTERM) it leaves no process and no
# temporary directory behind. Each run gets its own TMPDIR, whose path is in the command
# line of every process the demo starts: the marker pgrep looks for.

load helpers

setup() {
  flk_setup
  command -v sqlite3 >/dev/null || skip "sqlite3 is needed by the demo"
  DEMO=$FLK_SOURCE/scripts/demo.sh
  DEMO_TMP=$BATS_TEST_TMPDIR/demo-tmp
  mkdir -p "$DEMO_TMP"
}

teardown() {
  # Should a run have left anything behind, stop it (by the marker only) so that
  # other suites are not disturbed; the test has already failed.
  local pid
  for pid in $(pgrep -f "$DEMO_TMP" || true); do kill -KILL "$pid" 2>/dev/null || true; done
  return 0
}

# demo [ENV=VALUE...]: the demo with the tools of FLK_BIN, in DEMO_TMP (bats run).
demo() {
  run --separate-stderr env TMPDIR="$DEMO_TMP" "$@" "$DEMO" "$FLK_BIN" 3>&-
}

# assert_nothing_left: no process of the demo runs, and its temporary directory is gone.
assert_nothing_left() {
  local left
  left=$(pgrep -af "$DEMO_TMP" || true)
  [[ -z $left ]] || {
    printf 'processes left behind:\n%s\n' "$left" >&2
    return 1
  }
  left=$(find "$DEMO_TMP" -mindepth 1 -maxdepth 1)
  [[ -z $left ]] || {
    printf 'left in TMPDIR:\n%s\n' "$left" >&2
    return 1
  }
}

# summary_digests: the content digest of each region, from the summary, one a line.
summary_digests() {
  sed -n '/^\[[0-9]*\] Summary$/,$p' <<<"$output" | sed -nE 's/^ +content digest ([0-9a-f]{64})$/\1/p'
}

@test "the demo converges: one content digest in three regions, conflicts found then reconciled" {
  demo
  assert_status 0
  assert_nothing_left

  # Every region in the summary, each with a digest, all equal.
  local r digests
  for r in us-east-1 us-west-2 eu-west-1; do
    grep -qE "^  $r +[0-9]+ records written, [0-9]+ segments shipped" <<<"$output" || {
      echo "no summary line for $r" >&2
      return 1
    }
  done
  digests=$(summary_digests)
  assert_equal "$(wc -l <<<"$digests")" 3 "number of digests in the summary"
  assert_equal "$(sort -u <<<"$digests" | wc -l)" 1 "distinct digests in the summary"

  # Conflicts: found during the split, some settled by replay, the rest reconciled,
  # none left.
  local line found settled reconciled left
  line=$(grep -E '^ +conflicts: ' <<<"$output")
  [[ $line =~ conflicts:\ ([0-9]+)\ found.*\ ([0-9]+)\ settled\ by\ replay.*\ ([0-9]+)\ reconciled.*\ ([0-9]+)\ divergent ]] || {
    echo "no conflicts line in the summary: '$line'" >&2
    return 1
  }
  found=${BASH_REMATCH[1]} settled=${BASH_REMATCH[2]} reconciled=${BASH_REMATCH[3]} left=${BASH_REMATCH[4]}
  ((found > 0)) || { echo "no conflict found: $line" >&2 && return 1; }
  ((reconciled > 0)) || { echo "nothing reconciled: $line" >&2 && return 1; }
  assert_equal "$((settled + reconciled))" "$found" "conflicts settled by replay + reconciled"
  assert_equal "$left" 0 "divergent PCSs left"
  grep -q '^ *converged: yes' <<<"$output"

  # What it shows on the way: the split detected (flk-diverge scan exit 1), health
  # degraded and restored, the final scan and the ledgers sound.
  grep -qE '^ +exit 1: [1-9][0-9]* conflicts' <<<"$output"
  grep -qE 'flk_region_health_status\{region="eu-west-1"\} 0' <<<"$output"
  grep -qE '^ +flk_crr_divergence_count\{kind="conflict"\} 0$' <<<"$output"
  [[ $(grep -c 'ledger ok=true' <<<"$output") == 3 ]]
  ! grep -q 'ledger ok=false' <<<"$output"
}

@test "FLK_DEMO_SABOTAGE=1 skips the reconciliation: the convergence check fails" {
  demo FLK_DEMO_SABOTAGE=1
  assert_status 1
  assert_nothing_left
  assert_stderr_has "demo.sh: error: the regions did not converge" "flk-diverge scan exits 1"
  grep -q '^ *converged: NO' <<<"$output"
  ! grep -q 'converged: yes' <<<"$output"
  # eu-west-1 kept its own outcome for the conflicts replay could not settle.
  local digests
  digests=$(summary_digests)
  assert_equal "$(wc -l <<<"$digests")" 3 "number of digests in the summary"
  assert_equal "$(sort -u <<<"$digests" | wc -l)" 2 "distinct digests in the summary"
}

@test "SIGTERM in the middle stops every process the demo started and removes its directory" {
  env TMPDIR="$DEMO_TMP" "$DEMO" "$FLK_BIN" >"$BATS_TEST_TMPDIR/out" 2>"$BATS_TEST_TMPDIR/err" 3>&- &
  local pid=$! i
  # Until the regions write their streams: servers, shippers, readers and writers run.
  for ((i = 0; i < 300; i++)); do
    grep -q '^\[5\]' "$BATS_TEST_TMPDIR/out" && break
    sleep 0.1
  done
  grep -q '^\[5\]' "$BATS_TEST_TMPDIR/out" || {
    cat "$BATS_TEST_TMPDIR/out" "$BATS_TEST_TMPDIR/err" >&2
    return 1
  }
  [[ -n $(pgrep -f "$DEMO_TMP") ]]
  kill -TERM "$pid"
  status=0
  wait "$pid" || status=$?
  assert_equal "$status" 143 "exit status after SIGTERM"
  assert_nothing_left
}
