#!/usr/bin/env bats
# flk-wal(1) when the disk fails (DESIGN.md §2 durability, §8 exit codes): a failed
# fdatasync/fsync or a full disk stops the writer with exit 74 naming the file, and no
# record of the batch that did not reach the disk is acknowledged; a WAL directory
# that cannot be created or written exits 73 naming it. After the fault a clean run
# recovers, `verify` passes and every record acknowledged before is still there.
#
# Faults come from the LD_PRELOAD shim tests/fault/faultfs.c ($FLK_TEST_LIB/libflkfault.so);
# every test also checks the shim's log, so a fault that did not happen fails the test.

load helpers

setup() {
  flk_setup
  SHIM=$FLK_TEST_LIB/libflkfault.so
  [[ -f $SHIM ]] || {
    echo "fault shim not built: '$SHIM' (set FLK_TEST_LIB)" >&2
    return 1
  }
  FAULT_LOG=$BATS_TEST_TMPDIR/faults.log
  ACKED=$BATS_TEST_TMPDIR/acked # pcs_ids acknowledged so far, across runs
  : >"$ACKED"
}

# with_faults VAR=VALUE… -- CMD…: runs CMD (a command or a helper function) with the
# shim preloaded and the variables set.
with_faults() {
  (
    while [[ $1 != -- ]]; do
      export "${1?}"
      shift
    done
    shift
    export LD_PRELOAD=$SHIM FLK_FAULT_LOG=$FAULT_LOG
    "$@"
  )
}

# The shim injected at least one fault of kind CALL (fdatasync, fsync, write) on a
# path containing PATH_PART.
assert_fault_injected() {
  if ! grep -q "^$1 .*$2" "$FAULT_LOG" 2>/dev/null; then
    echo "no '$1' fault on '*$2*' was injected; the shim's log:" >&2
    cat "$FAULT_LOG" >&2 2>/dev/null || echo "(empty)" >&2
    return 1
  fi
}

# A clean append of N records (acknowledged ones are added to $ACKED).
clean_append() {
  gen_records "$1" "$2" "${3:-1}" | wal_append --keep-open | pcs_ids >>"$ACKED"
}

# After a fault: a clean writer recovers (it may report what it cut), verify passes,
# segments are contiguous, and every pcs_id in $ACKED is in `cat`.
assert_recovers() {
  run --separate-stderr wal_append --segment-age 10ms </dev/null
  assert_status 0
  run --separate-stderr flk-wal verify --wal-dir "$WAL"
  assert_status 0
  assert_contiguous
  flk-wal cat --wal-dir "$WAL" | pcs_ids >"$BATS_TEST_TMPDIR/present"
  [[ -s $ACKED ]]
  assert_all_present "$ACKED" "$BATS_TEST_TMPDIR/present"
  assert_no_duplicates "$BATS_TEST_TMPDIR/present"
  run sh -c 'cd "$1" && sha256sum --strict -c ./*.wal.sha256' sh "$WAL"
  assert_status 0
}

@test "the shim is inert without fault variables" {
  run --separate-stderr with_faults -- flk-wal append --wal-dir "$WAL" --region "$REGION" --segment-age 10ms \
    < <(gen_records 20 inert)
  assert_status 0
  [[ ${#lines[@]} == 20 ]]
  [[ ! -e $FAULT_LOG ]]
  run --separate-stderr flk-wal verify --wal-dir "$WAL"
  assert_status 0
}

@test "fdatasync fails: exit 74 naming the segment, no acknowledgement for the batch" {
  clean_append 5 before
  run --separate-stderr with_faults FLK_FAULT_FDATASYNC=EIO FLK_FAULT_PATH_MATCH=.open -- \
    wal_append --keep-open < <(gen_records 3 unsynced)
  assert_status 74
  assert_error_line
  assert_fault_injected fdatasync .open
  # The error names the very segment whose sync failed.
  local failed
  failed=$(awk '$1 == "fdatasync" { print $2; exit }' "$FAULT_LOG")
  [[ $failed == "$WAL"/*.open ]]
  assert_stderr_has "'$failed'" "Input/output error"
  [[ -z $output ]] || { echo "acknowledged records that were not synced: $output" >&2; return 1; }
  assert_recovers
}

@test "fdatasync fails mid-stream: earlier batches stay acknowledged, the failed one is not" {
  run --separate-stderr with_faults FLK_FAULT_FDATASYNC=EIO FLK_FAULT_SYNC_AFTER=1 FLK_FAULT_PATH_MATCH=.open -- \
    wal_append --keep-open < <(
      gen_records 4 first
      sleep 0.5
      gen_records 4 second 5
    )
  assert_status 74
  assert_fault_injected fdatasync "$WAL/0000000000000001.open"
  assert_stderr_has "'$WAL/0000000000000001.open'"
  # Exactly the first batch is acknowledged.
  assert_equal "$(pcs_ids <<<"$output" | tr '\n' ' ')" "first-000001 first-000002 first-000003 first-000004 " "acks"
  pcs_ids <<<"$output" >>"$ACKED"
  assert_recovers
}

@test "a failed fdatasync is never retried: the writer stops at the first failure" {
  run --separate-stderr with_faults FLK_FAULT_FDATASYNC=EIO FLK_FAULT_PATH_MATCH=.open -- \
    wal_append --keep-open < <(
      gen_records 1 a
      sleep 0.3
      gen_records 1 b 2
    )
  assert_status 74
  [[ -z $output ]]
  # One attempt only (LevelDB: the file's state after a failed sync is unknown).
  [[ $(grep -c '^fdatasync ' "$FAULT_LOG") == 1 ]]
}

@test "fsync fails while sealing: exit 74 naming the segment; a clean run finishes the seal" {
  clean_append 6 sealme
  run --separate-stderr with_faults FLK_FAULT_FSYNC=EIO FLK_FAULT_PATH_MATCH=.open -- \
    flk-wal seal --wal-dir "$WAL" --region "$REGION"
  assert_status 74
  assert_error_line
  assert_fault_injected fsync "$WAL/0000000000000001.open"
  assert_stderr_has "'$WAL/0000000000000001.open'"
  [[ -z $output ]]
  # Not sealed: no sealed file and no sidecar appeared.
  [[ -f $WAL/0000000000000001.open && ! -e $WAL/0000000000000001.wal && ! -e $WAL/0000000000000001.wal.sha256 ]]
  assert_recovers
  [[ -f $WAL/0000000000000001.wal ]]
}

@test "fsync fails while rotating: exit 74, no acknowledgement for the batch, recovery" {
  clean_append 3 early
  # Sync number 1 (sealing the recovered segment) succeeds, 2 (creating the next) too;
  # the seal of that one by rotation fails.
  run --separate-stderr with_faults FLK_FAULT_FSYNC=EIO FLK_FAULT_SYNC_AFTER=2 FLK_FAULT_PATH_MATCH=.open -- \
    wal_append --segment-bytes 2KiB --keep-open < <(gen_records 60 rot)
  assert_status 74
  assert_fault_injected fsync .open
  local failed
  failed=$(awk '$1 == "fsync" { print $2; exit }' "$FAULT_LOG")
  assert_stderr_has "'$failed'"
  [[ -z $output ]]
  assert_recovers
}

@test "the disk fills up (ENOSPC): exit 74 naming the segment, only synced batches acknowledged" {
  clean_append 5 before
  run --separate-stderr with_faults FLK_FAULT_WRITE_ENOSPC_AFTER=2000 FLK_FAULT_PATH_MATCH=.open -- \
    wal_append --keep-open < <(
      gen_records 3 fits
      sleep 0.5
      gen_records 100 overflows 4
    )
  assert_status 74
  assert_error_line
  assert_fault_injected write .open
  local failed
  failed=$(awk '$1 == "write" { print $2; exit }' "$FAULT_LOG")
  [[ $failed == "$WAL"/*.open ]]
  assert_stderr_has "'$failed'" "No space left on device"
  assert_equal "$(pcs_ids <<<"$output" | tr '\n' ' ')" "fits-000001 fits-000002 fits-000003 " "acks"
  pcs_ids <<<"$output" >>"$ACKED"
  # The short write left a partial frame; the next writer cuts it.
  run --separate-stderr wal_append --keep-open </dev/null
  assert_status 0
  assert_stderr_has recovering "cut torn tail"
  assert_recovers
}

@test "the disk is full before the segment header fits: exit 74, nothing acknowledged" {
  run --separate-stderr with_faults FLK_FAULT_WRITE_ENOSPC_AFTER=100 FLK_FAULT_PATH_MATCH=.open -- \
    wal_append --keep-open < <(gen_records 3 nope)
  assert_status 74
  assert_fault_injected write .open
  assert_stderr_has "$WAL/" "No space left on device"
  [[ -z $output ]]
  # No half-written segment is left behind to trip the next writer.
  clean_append 2 after
  assert_recovers
}

@test "the disk is full when writing the digest sidecar: exit 74; a clean run finishes the seal" {
  clean_append 4 side
  run --separate-stderr with_faults FLK_FAULT_WRITE_ENOSPC_AFTER=0 FLK_FAULT_PATH_MATCH=.sha256 -- \
    flk-wal seal --wal-dir "$WAL" --region "$REGION"
  assert_status 74
  assert_fault_injected write .wal.sha256
  assert_stderr_has "$WAL/0000000000000001.wal.sha256" "No space left on device"
  [[ -z $output ]]
  [[ ! -e $WAL/0000000000000001.wal.sha256 ]]
  assert_recovers
  [[ -f $WAL/0000000000000001.wal.sha256 ]]
}

@test "fdatasync fails with ENOSPC (delayed allocation): exit 74 as well" {
  clean_append 2 before
  run --separate-stderr with_faults FLK_FAULT_FDATASYNC=ENOSPC FLK_FAULT_PATH_MATCH=.open -- \
    wal_append --keep-open < <(gen_records 2 late 3)
  assert_status 74
  assert_fault_injected fdatasync .open
  assert_stderr_has "No space left on device"
  [[ -z $output ]]
  assert_recovers
}

# --- a WAL directory that cannot be created or written: 73 ---------------------------

@test "a WAL directory under a file (/dev/null/x): exit 73 naming the path" {
  run --separate-stderr flk-wal append --wal-dir /dev/null/wal --region "$REGION" < <(gen_records 1 x)
  assert_status 73
  assert_error_line
  assert_stderr_has "/dev/null"
  [[ -z $output ]]
}

@test "a WAL directory that is a file: exit 73 naming it" {
  echo 'not a directory' >"$BATS_TEST_TMPDIR/file"
  run --separate-stderr flk-wal append --wal-dir "$BATS_TEST_TMPDIR/file" --region "$REGION" < <(gen_records 1 x)
  assert_status 73
  assert_error_line
  assert_stderr_has "'$BATS_TEST_TMPDIR/file'"
  [[ $(cat "$BATS_TEST_TMPDIR/file") == 'not a directory' ]]
}

@test "an unwritable WAL directory (chmod 555): exit 73 naming it" {
  [[ $(id -u) != 0 ]] || skip "root ignores file modes (see the read-only mount test)"
  clean_append 2 before
  chmod 555 "$WAL"
  rm -f "$WAL/LOCK" 2>/dev/null || true
  run --separate-stderr wal_append < <(gen_records 1 x 3)
  chmod 755 "$WAL"
  assert_status 73
  assert_error_line
  assert_stderr_has "$WAL"
  [[ -z $output ]]
}

@test "an unwritable parent directory (chmod 555): exit 73 naming the WAL directory" {
  [[ $(id -u) != 0 ]] || skip "root ignores file modes (see the read-only mount test)"
  mkdir "$BATS_TEST_TMPDIR/ro"
  chmod 555 "$BATS_TEST_TMPDIR/ro"
  run --separate-stderr flk-wal append --wal-dir "$BATS_TEST_TMPDIR/ro/wal" --region "$REGION" < <(gen_records 1 x)
  chmod 755 "$BATS_TEST_TMPDIR/ro"
  assert_status 73
  assert_stderr_has "$BATS_TEST_TMPDIR/ro/wal"
}

# Runs CMD… with DIR bind-mounted read-only in a private mount namespace (root only;
# skips the test where namespaces or mounts are not allowed).
with_readonly() {
  local dir=$1
  shift
  # shellcheck disable=SC2016
  unshare -m sh -c 'mount --bind "$1" "$1" && mount -o remount,ro,bind "$1" "$1" && shift && exec "$@"' \
    sh "$dir" "$@"
}

readonly_or_skip() {
  [[ $(id -u) == 0 ]] || skip "needs root for a read-only bind mount (the chmod tests cover non-root)"
  mkdir -p "$1"
  # shellcheck disable=SC2016
  unshare -m sh -c 'mount --bind "$1" "$1" && mount -o remount,ro,bind "$1" "$1"' sh "$1" 2>/dev/null ||
    skip "no mount namespaces here"
}

@test "a read-only file system: creating the WAL directory exits 73 naming it" {
  readonly_or_skip "$BATS_TEST_TMPDIR/ro"
  run --separate-stderr with_readonly "$BATS_TEST_TMPDIR/ro" \
    flk-wal append --wal-dir "$BATS_TEST_TMPDIR/ro/wal" --region "$REGION" < <(gen_records 1 x)
  assert_status 73
  assert_error_line
  assert_stderr_has "'$BATS_TEST_TMPDIR/ro/wal'" "Read-only file system"
}

@test "a read-only file system under an existing WAL: append exits 73 naming it; data intact" {
  readonly_or_skip "$WAL"
  clean_append 3 before
  run --separate-stderr with_readonly "$WAL" \
    flk-wal append --wal-dir "$WAL" --region "$REGION" < <(gen_records 1 x 4)
  assert_status 73
  assert_error_line
  assert_stderr_has "$WAL/" "Read-only file system"
  [[ -z $output ]]
  assert_recovers
}
