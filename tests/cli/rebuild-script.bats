#!/usr/bin/env bats
# scripts/rebuild-dedup-from-wal.sh: the runbook's failback command line
#   ./scripts/rebuild-dedup-from-wal.sh --region us-east-1 --since-time <timestamp>
# with the region's WAL, mailbox and store from a test configuration (FLK_CONFIG), and
# what it refuses before anything is changed: a bad timestamp, another region, a
# missing configuration (issue 3; DESIGN.md §7, §8).

load helpers

SCRIPT=$FLK_SOURCE/scripts/rebuild-dedup-from-wal.sh

setup() {
  rebuild_setup || return 1
  STORE=$BATS_TEST_TMPDIR/dedup.db
  MAILBOX=$BATS_TEST_TMPDIR/mailbox
  write_config "$FLK_CONFIG" "$REGION"
  gen_records 3000 pcs | wal_append --segment-bytes 64KiB >/dev/null
  export TMPDIR=$BATS_TEST_TMPDIR
}

# write_config FILE REGION: the test region's configuration.
write_config() {
  cat >"$1" <<EOF
# flk.yaml for the rebuild script's tests
region: $2   # this region
paths:
  wal: $WAL
  mailbox: $MAILBOX
  state: $BATS_TEST_TMPDIR/state
dedup:
  url: sqlite://$STORE
EOF
}

# The ts of record I of gen_records, whole seconds.
ts_of() { printf '2026-11-26T08:%02d:%02dZ' $(($1 / 60 % 60)) $(($1 % 60)); }

dump() {
  sqlite3 "$STORE" "SELECT pcs_id, tenant_id, outcome, ts, region, params, payload, hex(digest) FROM records ORDER BY pcs_id;
                    SELECT pcs_id, hex(digest) FROM evidence ORDER BY 1, 2;
                    SELECT source, sequence, hex(digest) FROM watermarks ORDER BY 1;"
}
fingerprint() { dump | sha256sum | cut -c1-64; }

# A full rebuild of the WAL into STORE, directly with the tool; prints its digest.
full_rebuild() {
  flk-rebuild-dedup --region "$REGION" --wal-dir "$WAL" --no-mailbox --store "sqlite://$STORE" | jq -r .digest
}

assert_script_error() {
  if ! grep -q '^rebuild-dedup-from-wal.sh: error: ' <<<"${stderr-}"; then
    printf "stderr has no 'rebuild-dedup-from-wal.sh: error: ' line\n--- stderr\n%s\n" "${stderr-}" >&2
    return 1
  fi
}

# --- the runbook's command line -------------------------------------------------------

@test "the runbook's command line repairs a store that lost its recent records" {
  local full
  full=$(full_rebuild)
  sqlite3 "$STORE" "DELETE FROM records WHERE pcs_id >= 'pcs-002001'"
  # Exactly the seed's command line, from the source tree, with the configuration from
  # the environment.
  cd "$FLK_SOURCE"
  run --separate-stderr ./scripts/rebuild-dedup-from-wal.sh --region us-east-1 --since-time "$(ts_of 2000)"
  assert_status 0
  [[ ${#lines[@]} == 1 ]]
  jq -e --arg d "$full" --arg s "sqlite://$STORE" \
    '.region == "us-east-1" and .store == $s and .mode == "in-place" and .records == 1001 and
     .inserted == 1000 and .winners == 3000 and .digest == $d' <<<"$output" >/dev/null
  # The command it ran is on stderr, for the operator's log.
  assert_stderr_has "running:" "flk-rebuild-dedup" "--since-time=$(ts_of 2000)"

  run --separate-stderr flk-rebuild-dedup --region "$REGION" --wal-dir "$WAL" --no-mailbox \
    --store "sqlite://$STORE" --verify
  assert_status 0
}

@test "without --since-time the script rebuilds a fresh store; the store may not exist yet" {
  [[ ! -e $STORE ]]
  run --separate-stderr "$SCRIPT" --region us-east-1
  assert_status 0
  jq -e '.mode == "fresh" and .winners == 3000' <<<"$output" >/dev/null
  local digest
  digest=$(jq -r .digest <<<"$output")
  rm "$STORE"
  assert_equal "$(full_rebuild)" "$digest" "digest"
}

@test "the region can come from the configuration alone" {
  run --separate-stderr "$SCRIPT" --since-time "$(ts_of 1)"
  assert_status 0
  jq -e '.region == "us-east-1" and .inserted == 3000' <<<"$output" >/dev/null
}

@test "--verify compares and changes nothing: exit 1 and the lost records, then exit 0 once repaired" {
  full_rebuild >/dev/null
  sqlite3 "$STORE" "DELETE FROM records WHERE pcs_id IN ('pcs-000005', 'pcs-002999')"
  local before
  before=$(fingerprint)
  run --separate-stderr "$SCRIPT" --region us-east-1 --verify
  assert_status 1
  assert_equal "$(jq -r 'select(.kind) | "\(.pcs_id) \(.kind)"' <<<"$output")" \
    "$(printf 'pcs-000005 missing\npcs-002999 missing')" "differences"
  assert_equal "$(fingerprint)" "$before" "store after --verify"

  run --separate-stderr "$SCRIPT" --region us-east-1 --since-time "$(ts_of 1)"
  assert_status 0
  run --separate-stderr "$SCRIPT" --region us-east-1 --verify
  assert_status 0
}

@test "the configuration's mailbox is replayed: a peer's records, conflicts and watermark" {
  local west=$BATS_TEST_TMPDIR/wal-west
  {
    REGION=us-west-2 gen_records 5 pcs | jq -c '.outcome = "rejected" | .ts = "2026-11-26T07:00:00Z"'
    REGION=us-west-2 gen_records 20 west
  } | flk-wal append --wal-dir "$west" --region us-west-2 --segment-bytes 512 >/dev/null
  mkdir -p "$MAILBOX/us-west-2/us-east-1"
  cp "$west"/*.wal "$west"/*.wal.sha256 "$MAILBOX/us-west-2/us-east-1/"
  run --separate-stderr "$SCRIPT" --region us-east-1
  assert_status 0
  jq -e '.winners == 3020 and .watermarks == 1 and .conflicts > 0' <<<"$output" >/dev/null
  [[ $(sqlite3 "$STORE" "SELECT source FROM watermarks") == us-west-2 ]]
  [[ $(sqlite3 "$STORE" "SELECT region FROM records WHERE pcs_id = 'pcs-000001'") == us-west-2 ]]
  (($(sqlite3 "$STORE" "SELECT count(*) FROM evidence") > 0))
}

@test "time forms: RFC 3339 with an offset, @seconds, a duration ago" {
  full_rebuild >/dev/null
  run --separate-stderr "$SCRIPT" --region us-east-1 --since-time 2026-11-26T09:33:20+01:00
  assert_status 0
  jq -e '.records == 1001' <<<"$output" >/dev/null
  run --separate-stderr "$SCRIPT" --region us-east-1 --since-time @1795680000
  assert_status 0
  run --separate-stderr "$SCRIPT" --region us-east-1 --since-time -1h
  assert_status 0
  jq -e '.records == 0' <<<"$output" >/dev/null
  run --separate-stderr "$SCRIPT" --region us-east-1 --since-time '100000h ago'
  assert_status 0
  jq -e '.records == 3000' <<<"$output" >/dev/null
}

# --- refused before anything changes ----------------------------------------------------

@test "a bad timestamp exits 64 with a clear error and changes nothing" {
  full_rebuild >/dev/null
  sqlite3 "$STORE" "DELETE FROM records WHERE pcs_id >= 'pcs-002001'"
  local before t
  before=$(fingerprint)
  for t in yesterday 2026-11-26 '2026-11-26T08:00:00' 26/11/2026 '' -5 '5m'; do
    run --separate-stderr "$SCRIPT" --region us-east-1 --since-time "$t"
    assert_status 64
    assert_script_error
    assert_stderr_has "--since-time '$t'" "RFC 3339"
    [[ -z $output ]]
  done
  # Well-formed but impossible: flk-rebuild-dedup refuses it before it opens the store.
  run --separate-stderr "$SCRIPT" --region us-east-1 --since-time 2026-02-30T00:00:00Z
  assert_status 64
  assert_stderr_has "2026-02-30T00:00:00Z" "no such date"
  assert_equal "$(fingerprint)" "$before" "store after bad timestamps"
}

@test "a region that is not the configuration's exits 64 naming both, and creates nothing" {
  run --separate-stderr "$SCRIPT" --region us-west-2 --since-time "$(ts_of 1)"
  assert_status 64
  assert_script_error
  assert_stderr_has "'us-west-2'" "'us-east-1'" "$FLK_CONFIG"
  [[ -z $output ]]
  [[ ! -e $STORE ]]
  run --separate-stderr "$SCRIPT" --region US_EAST --since-time "$(ts_of 1)"
  assert_status 64
  assert_stderr_has "'US_EAST'"
  [[ ! -e $STORE ]]
}

@test "no region anywhere exits 64" {
  sed -i '/^region:/d' "$FLK_CONFIG"
  run --separate-stderr "$SCRIPT" --since-time "$(ts_of 1)"
  assert_status 64
  assert_script_error
  assert_stderr_has "no region"
  [[ ! -e $STORE ]]
}

@test "a missing configuration is an error (78) naming it, from FLK_CONFIG or --config" {
  FLK_CONFIG=$BATS_TEST_TMPDIR/missing.yaml run --separate-stderr "$SCRIPT" --region us-east-1 --since-time "$(ts_of 1)"
  assert_status 78
  assert_script_error
  assert_stderr_has "$BATS_TEST_TMPDIR/missing.yaml" FLK_CONFIG
  run --separate-stderr "$SCRIPT" --config "$BATS_TEST_TMPDIR/missing.yaml" --region us-east-1
  assert_status 78
  assert_stderr_has "$BATS_TEST_TMPDIR/missing.yaml"
  [[ ! -e $STORE ]]
}

@test "--config names the configuration; an invalid one is the tool's configuration error (78)" {
  local other="$BATS_TEST_TMPDIR/other conf.yaml"
  write_config "$other" eu-west-1
  echo '# nothing' >"$FLK_CONFIG"
  run --separate-stderr "$SCRIPT" --config "$other" --region us-east-1
  assert_status 64
  assert_stderr_has "'eu-west-1'" "$other"
  write_config "$other" us-east-1
  echo "bogus_key: 1" >>"$other"
  run --separate-stderr "$SCRIPT" --config "$other" --region us-east-1
  assert_status 78
  assert_stderr_has bogus_key
  [[ ! -e $STORE ]]
}

@test "usage: --help exits 0; unknown arguments and missing values exit 64" {
  run --separate-stderr "$SCRIPT" --help
  assert_status 0
  [[ $output == *Usage:* && $output == *--since-time* && $output == *--dry-run* && $output == *--verify* ]]
  run --separate-stderr "$SCRIPT" --region us-east-1 --frobnicate
  assert_status 64
  assert_script_error
  assert_stderr_has --frobnicate
  run --separate-stderr "$SCRIPT" --region
  assert_status 64
  assert_stderr_has "'--region'"
}

@test "--dry-run prints the command it would run and changes nothing; the command works" {
  run --separate-stderr "$SCRIPT" --region us-east-1 --since-time "$(ts_of 2000)" --dry-run
  assert_status 0
  [[ ${#lines[@]} == 1 ]]
  [[ $output == *flk-rebuild-dedup* && $output == *"--config $FLK_CONFIG"* && $output == *"--region us-east-1"* ]]
  [[ $output == *"--since-time=$(ts_of 2000)"* ]]
  [[ ! -e $STORE ]]
  # Arguments after -- go to the tool, quoted for the shell.
  mkdir "$BATS_TEST_TMPDIR/sort runs"
  run --separate-stderr "$SCRIPT" --region us-east-1 --dry-run -- --temp-dir "$BATS_TEST_TMPDIR/sort runs"
  assert_status 0
  [[ ! -e $STORE ]]
  local cmd=$output
  run --separate-stderr eval "$cmd"
  assert_status 0
  jq -e '.mode == "fresh" and .winners == 3000' <<<"$output" >/dev/null
}

@test "flk-rebuild-dedup is found beside the script (../build/bin) when it is not on PATH" {
  local tree=$BATS_TEST_TMPDIR/tree
  mkdir -p "$tree/scripts/lib" "$tree/build"
  cp "$SCRIPT" "$tree/scripts/"
  cp "$FLK_SOURCE/scripts/lib/runbook.sh" "$tree/scripts/lib/"
  ln -s "$FLK_BIN" "$tree/build/bin"
  PATH=/usr/bin:/bin run --separate-stderr "$tree/scripts/rebuild-dedup-from-wal.sh" --region us-east-1 --dry-run
  assert_status 0
  [[ $output == "$tree/build/bin/flk-rebuild-dedup "* ]]
  rm "$tree/build/bin"
  PATH=/usr/bin:/bin run -127 --separate-stderr "$tree/scripts/rebuild-dedup-from-wal.sh" --region us-east-1
  assert_script_error
  assert_stderr_has "flk-rebuild-dedup not found"
}

@test "the script is clean under shellcheck and runs under dash" {
  command -v shellcheck >/dev/null || skip "shellcheck is not installed"
  run shellcheck -x "$SCRIPT"
  assert_status 0
  command -v dash >/dev/null || skip "dash is not installed"
  run --separate-stderr dash "$SCRIPT" --region us-east-1 --since-time "$(ts_of 1)"
  assert_status 0
}
