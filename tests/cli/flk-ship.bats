#!/usr/bin/env bats
# flk-ship(1) end to end (DESIGN.md §4, §7, §8): a real WAL (flk-wal append), real
# flk-serve mailboxes on loopback, the file:// and "-" transports; two-region,
# multi-way and selective modes; watermarks under STATE/ship/, the mailbox compared
# byte for byte with the WAL, usage and configuration errors.
# Faults on the wire and on disk are in flk-ship-faults.bats.

load ship_helpers

setup() {
  ship_setup
}

teardown() {
  ship_teardown
}

# --- two-region over http ---------------------------------------------------------------

@test "two-region over http: every segment ships in order, one JSON line each, watermark = last" {
  make_wal 300
  local last
  last=$(last_sealed)
  ((last >= 3))
  start_server west
  config_two_region "$(server_url west)"

  run --separate-stderr ship
  assert_status 0
  # One line per segment, in order, each the segment's size and digest.
  assert_equal "$(seqs_of "$output")" "$(seq 1 "$last")" "sequences on stdout"
  local n line
  for ((n = 1; n <= last; n++)); do
    line=$(sed -n "${n}p" <<<"$output")
    jq -e --arg t $WEST --argjson b "$(file_size "$WAL/$(seg_name "$n")")" \
      --arg h "$(sha256sum <"$WAL/$(seg_name "$n")" | cut -d' ' -f1)" \
      '.target == $t and .bytes == $b and .sha256 == $h and .result == "stored" and .attempts == 1 and .records > 0' \
      <<<"$line" >/dev/null || { echo "bad line $n: $line" >&2; return 1; }
  done
  # Every record shipped is counted once.
  assert_equal "$(jq -s 'map(.records) | add' <<<"$output")" 300 "records shipped"

  assert_full_copy "$(stream_of west $WEST)"
  assert_in_order west
  # The watermark names the last segment, its digest and the totals.
  local wm
  wm=$(wm_file $WEST)
  jq -e --argjson s "$last" --arg h "$(sha256sum <"$WAL/$(seg_name "$last")" | cut -d' ' -f1)" \
    '.target == "us-west-2" and .sequence == $s and .sha256 == $h and .source_sha256 == $h
     and .segments_total == $s and .failures_total == 0' "$wm" >/dev/null || { cat "$wm" >&2; return 1; }

  # Again: nothing to ship, nothing sent, the watermark file unchanged.
  local before posted
  before=$(cat "$wm")
  posted=$(posts west | wc -l)
  run --separate-stderr ship
  assert_status 0
  [[ -z $output ]]
  assert_equal "$(cat "$wm")" "$before" "the watermark after an idle run"
  assert_equal "$(posts west | wc -l)" "$posted" "POSTs after an idle run"

  # New segments later: only those ship.
  make_wal 150 more
  local newlast
  newlast=$(last_sealed)
  ((newlast > last))
  run --separate-stderr ship
  assert_status 0
  assert_equal "$(seqs_of "$output")" "$(seq $((last + 1)) "$newlast")" "sequences of the second run"
  assert_equal "$(wm_seq $WEST)" "$newlast" "watermark"
  assert_full_copy "$(stream_of west $WEST)"
  assert_in_order west
  [[ -z $(posts west 200) && -z $(posts west 409) ]]
}

@test "an open segment is not shipped; once sealed it is" {
  make_wal 10
  gen_records 3 open | wal_append --keep-open >/dev/null
  local sealed
  sealed=$(last_sealed)
  start_server west
  config_two_region "$(server_url west)"
  run --separate-stderr ship
  assert_status 0
  assert_equal "$(seqs_of "$output")" "$(seq 1 "$sealed")"
  flk-wal seal --wal-dir "$WAL" >/dev/null
  run --separate-stderr ship
  assert_status 0
  assert_equal "$(seqs_of "$output")" "$((sealed + 1))"
  assert_full_copy "$(stream_of west $WEST)"
}

# --- file:// and the stream "-" ---------------------------------------------------------

@test "file:// transport: the mailbox tree in a directory, sidecars sha256sum-compatible" {
  make_wal 300
  local box=$BATS_TEST_TMPDIR/shared
  config_two_region "file://$box"
  run --separate-stderr ship
  assert_status 0
  assert_equal "$(seqs_of "$output")" "$(seq 1 "$(last_sealed)")"
  assert_full_copy "$(stream_of "$box" $WEST)"
  assert_equal "$(wm_seq $WEST)" "$(last_sealed)"
  # Shipping again after losing the watermark: duplicates, nothing rewritten.
  rm "$(wm_file $WEST)"
  run --separate-stderr ship
  assert_status 0
  [[ $(jq -r .result <<<"$output" | sort -u) == duplicate ]]
  assert_full_copy "$(stream_of "$box" $WEST)"
}

# check_stream FILE FROM TO: FILE is the framed stream of segments FROM..TO of $WAL to
# us-west-2 — header lines parsed, bodies cut out with tail/head -c and compared.
check_stream() {
  local file=$1 from=$2 to=$3 off=0 n line f tag src dst seq bytes sha total
  total=$(file_size "$file")
  for ((n = from; n <= to; n++)); do
    line=$(tail -c +$((off + 1)) "$file" | head -n 1)
    read -r tag src dst seq bytes sha <<<"$line"
    f=$WAL/$(seg_name "$n")
    assert_equal "$tag $src $dst $seq" "FLKSEG/1 $REGION $WEST $n" "frame header at offset $off" || return 1
    assert_equal "$bytes" "$(file_size "$f")" "size in frame $n" || return 1
    assert_equal "$sha" "$(sha256sum <"$f" | cut -d' ' -f1)" "digest in frame $n" || return 1
    off=$((off + ${#line} + 1))
    tail -c +$((off + 1)) "$file" | head -c "$bytes" | cmp - "$f" || return 1
    off=$((off + bytes))
  done
  assert_equal "$off" "$total" "end of the stream"
}

@test "--to - writes framed segments to stdout, JSON lines to stderr, and moves no watermark" {
  make_wal 300
  local last
  last=$(last_sealed)
  config_two_region "http://127.0.0.1:1" # never used: --to overrides it
  ship --to - >"$BATS_TEST_TMPDIR/stream" 2>"$BATS_TEST_TMPDIR/err"
  check_stream "$BATS_TEST_TMPDIR/stream" 1 "$last"
  # The per-segment lines are on stderr (stdout carries the segments).
  assert_equal "$(grep '^{' "$BATS_TEST_TMPDIR/err" | jq -r .sequence)" "$(seq 1 "$last")"
  [[ ! -e $(wm_file $WEST) ]]

  # Again: the same stream, since nothing moved.
  ship --to - >"$BATS_TEST_TMPDIR/stream2" 2>/dev/null
  cmp "$BATS_TEST_TMPDIR/stream" "$BATS_TEST_TMPDIR/stream2"

  # --after N starts after N; --advance moves the watermark.
  ship --to - --after 2 --advance >"$BATS_TEST_TMPDIR/stream3" 2>/dev/null
  check_stream "$BATS_TEST_TMPDIR/stream3" 3 "$last"
  assert_equal "$(wm_seq $WEST)" "$last"
  # Now nothing is left to stream.
  ship --to - >"$BATS_TEST_TMPDIR/stream4" 2>/dev/null
  [[ ! -s $BATS_TEST_TMPDIR/stream4 ]]
}

# --- multi-way --------------------------------------------------------------------------

@test "multi-way: both peers get everything" {
  make_wal 300
  start_server west
  start_server eu
  config_multi_way "$(server_url west)" "$(server_url eu)"
  run --separate-stderr ship
  assert_status 0
  local last
  last=$(last_sealed)
  assert_equal "$(jq -r 'select(.target == "us-west-2") | .sequence' <<<"$output")" "$(seq 1 "$last")"
  assert_equal "$(jq -r 'select(.target == "eu-west-1") | .sequence' <<<"$output")" "$(seq 1 "$last")"
  assert_full_copy "$(stream_of west $WEST)"
  assert_full_copy "$(stream_of eu $EU)"
  assert_equal "$(wm_seq $WEST) $(wm_seq $EU)" "$last $last"
  # Each server got only its own stream.
  [[ ! -e $(stream_of west $EU) && ! -e $(stream_of eu $WEST) ]]
}

@test "multi-way: a peer that is down does not hold up the other; it resumes in order later" {
  make_wal 200
  start_server west
  start_server eu
  config_multi_way "$(server_url west)" "$(server_url eu)"
  run --separate-stderr ship
  assert_status 0
  local first
  first=$(last_sealed)

  # eu-west-1 goes down; more segments are sealed.
  local eu_wm
  eu_wm=$(wm_position $EU)
  stop_server eu
  make_wal 150 more
  local last
  last=$(last_sealed)
  local t0=$SECONDS
  run --separate-stderr ship
  assert_status 75
  ((SECONDS - t0 < 10))
  assert_stderr_has "flk-ship: error: " "'$EU'"
  # us-west-2 is fully shipped, eu-west-1's watermark stays at what it acknowledged.
  assert_equal "$(jq -r 'select(.target == "us-west-2") | .sequence' <<<"$output")" "$(seq $((first + 1)) "$last")"
  [[ -z $(jq -r 'select(.target == "eu-west-1") | .sequence' <<<"$output") ]]
  assert_full_copy "$(stream_of west $WEST)"
  assert_equal "$(wm_seq $WEST)" "$last"
  assert_equal "$(wm_seq $EU)" "$first"
  assert_equal "$(wm_position $EU)" "$eu_wm" "eu-west-1's watermark"
  # The failed attempts are counted in it (they survive the run, for the metrics).
  jq -e '.failures_total >= 1' "$(wm_file $EU)" >/dev/null

  # Back up on the same port: the rest ships, in order, nothing sent twice.
  restart_server eu
  run --separate-stderr ship
  assert_status 0
  assert_equal "$(jq -r .sequence <<<"$output")" "$(seq $((first + 1)) "$last")"
  assert_equal "$(jq -r .target <<<"$output" | sort -u)" "$EU"
  assert_full_copy "$(stream_of eu $EU)"
  assert_in_order eu
  [[ -z $(posts eu 200) ]]
  assert_equal "$(wm_seq $EU)" "$last"
}

@test "multi-way: a peer never reachable keeps watermark 0, the other is shipped, exit 75" {
  make_wal 200
  start_server west
  local port
  port=$(closed_port)
  config_multi_way "$(server_url west)" "http://127.0.0.1:$port"
  run --separate-stderr ship
  assert_status 75
  assert_stderr_has "'$EU'" "giving up"
  assert_full_copy "$(stream_of west $WEST)"
  assert_equal "$(wm_seq $WEST)" "$(last_sealed)"
  assert_equal "$(wm_seq $EU)" 0

  # The server comes up there: everything ships from 1.
  start_server eu --listen "127.0.0.1:$port"
  run --separate-stderr ship
  assert_status 0
  assert_equal "$(jq -r .sequence <<<"$output")" "$(seq 1 "$(last_sealed)")"
  assert_full_copy "$(stream_of eu $EU)"
  assert_in_order eu
}

# --- selective --------------------------------------------------------------------------

# tenant_records N PREFIX TENANT…: N records cycling over the tenants.
tenant_records() {
  local n=$1 p=$2
  shift 2
  gen_records "$n" "$p" | jq -c --args '.tenant_id = $ARGS.positional[(.payload.n % ($ARGS.positional | length))]' "$@"
}

# The records of the segments of a received stream, read by flk-wal from a copy, one
# file after the other. (Not `--wal-dir`: a re-encoded segment's header keeps the
# source's previous-segment digest, so the directory's chain check refuses it.)
received_records() {
  local copy=$BATS_TEST_TMPDIR/copy-$RANDOM f
  cp -r "$1" "$copy"
  for f in "$copy"/*.wal; do
    flk-wal cat "$f" || return 1
  done
}

@test "selective: each target gets every sequence, holding only its tenants' records" {
  # Mixed segments, then a segment of tenant-c only (routed nowhere), then tenant-a only.
  tenant_records 300 mix tenant-a tenant-b tenant-c | wal_append --segment-bytes 4096 >/dev/null
  tenant_records 6 conly tenant-c | wal_append >/dev/null
  tenant_records 6 aonly tenant-a | wal_append >/dev/null
  local last
  last=$(last_sealed)
  start_server west
  start_server eu
  write_config "replicationMode: selective" "policies:" \
    "  - {tenantID: tenant-a, targetRegions: [$WEST]}" "  - {tenantID: tenant-b, targetRegions: [$EU]}" \
    "endpoints:" "$(endpoint $WEST "$(server_url west)")" "$(endpoint $EU "$(server_url eu)")"
  run --separate-stderr ship
  assert_status 0
  local w e
  w=$(stream_of west $WEST)
  e=$(stream_of eu $EU)
  # Contiguous: every source sequence reached both targets.
  assert_equal "$(sealed_numbers "$w")" "$(seq 1 "$last")" "us-west-2's segments"
  assert_equal "$(sealed_numbers "$e")" "$(seq 1 "$last")" "eu-west-1's segments"
  assert_sidecars "$w"
  assert_sidecars "$e"
  flk-wal verify --wal-dir "$WAL" >/dev/null # the source is untouched

  # Only their tenants, and every one of them.
  received_records "$w" >"$BATS_TEST_TMPDIR/west.jsonl"
  received_records "$e" >"$BATS_TEST_TMPDIR/eu.jsonl"
  flk-wal cat --wal-dir "$WAL" >"$BATS_TEST_TMPDIR/all.jsonl"
  assert_equal "$(jq -r .tenant_id "$BATS_TEST_TMPDIR/west.jsonl" | sort -u)" tenant-a
  assert_equal "$(jq -r .tenant_id "$BATS_TEST_TMPDIR/eu.jsonl" | sort -u)" tenant-b
  assert_equal "$(jq -c 'select(.tenant_id == "tenant-a")' "$BATS_TEST_TMPDIR/all.jsonl")" \
    "$(cat "$BATS_TEST_TMPDIR/west.jsonl")" "tenant-a's records at us-west-2"
  assert_equal "$(jq -c 'select(.tenant_id == "tenant-b")' "$BATS_TEST_TMPDIR/all.jsonl")" \
    "$(cat "$BATS_TEST_TMPDIR/eu.jsonl")" "tenant-b's records at eu-west-1"
  ! grep -q tenant-a "$e"/*.wal
  ! grep -q tenant-b "$w"/*.wal
  ! grep -q tenant-c "$w"/*.wal "$e"/*.wal

  # The tenant-c segment is empty at both; the tenant-a one empty at eu-west-1 only.
  local conly=$((last - 1))
  assert_equal "$(jq -r "select(.target == \"$EU\" and .sequence == $conly) | .records" <<<"$output")" 0
  assert_equal "$(jq -r "select(.target == \"$WEST\" and .sequence == $conly) | .records" <<<"$output")" 0
  assert_equal "$(jq -r "select(.target == \"$EU\" and .sequence == $last) | .records" <<<"$output")" 0
  assert_equal "$(jq -r "select(.target == \"$WEST\" and .sequence == $last) | .records" <<<"$output")" 6
  # The JSON lines' digests are those of what was stored, and the watermark keeps both.
  local h
  h=$(cut -d' ' -f1 "$w/$(seg_name "$last").sha256")
  assert_equal "$(jq -r "select(.target == \"$WEST\" and .sequence == $last) | .sha256" <<<"$output")" "$h"
  jq -e --arg h "$h" --arg s "$(sha256sum <"$WAL/$(seg_name "$last")" | cut -d' ' -f1)" \
    '.sha256 == $h and .source_sha256 == $s' "$(wm_file $WEST)" >/dev/null
  # Nothing is left in the outbox.
  [[ -z $(find "$STATE" -name '*.wal') ]]

  # Losing the watermarks: re-encoding is deterministic, the re-ship is duplicate.
  rm "$(wm_file $WEST)" "$(wm_file $EU)"
  run --separate-stderr ship
  assert_status 0
  assert_equal "$(jq -r .result <<<"$output" | sort | uniq -c | awk '{print $1, $2}')" "$((2 * last)) duplicate"
  [[ -z $(posts west 409) && -z $(posts eu 409) ]]
  assert_equal "$(sealed_numbers "$w")" "$(seq 1 "$last")"
}

# --- usage and configuration errors -----------------------------------------------------

@test "a target that is not in the configuration is a usage error (64)" {
  make_wal 5
  config_two_region "file://$BATS_TEST_TMPDIR/box"
  run --separate-stderr ship --target ap-south-1
  assert_status 64
  assert_stderr_has "flk-ship: error: " "'ap-south-1'"
  [[ -z $output && ! -e $BATS_TEST_TMPDIR/box ]]
}

@test "a target without endpoint is a configuration error (78)" {
  make_wal 5
  write_config "targetRegions: [$WEST]"
  run --separate-stderr ship
  assert_status 78
  assert_stderr_has "flk-ship: error: " "no endpoint" "'$WEST'"
}

@test "replication disabled is a configuration error (78)" {
  make_wal 5
  config_two_region "file://$BATS_TEST_TMPDIR/box"
  sed -i 's/enabled: true/enabled: false/' "$CFG"
  run --separate-stderr ship
  assert_status 78
  assert_stderr_has "flk-ship: error: " "crr.enabled"
  [[ ! -e $BATS_TEST_TMPDIR/box ]]
}

@test "--advance without --to - is a usage error (64)" {
  make_wal 5
  config_two_region "file://$BATS_TEST_TMPDIR/box"
  run --separate-stderr ship --advance
  assert_status 64
  assert_stderr_has "flk-ship: error: " "--advance"
  run --separate-stderr ship --to "file://$BATS_TEST_TMPDIR/box" --advance
  assert_status 64
  [[ ! -e $BATS_TEST_TMPDIR/box ]]
}

@test "a malformed watermark file is a data error (65) naming it, and is left alone" {
  make_wal 5
  config_two_region "file://$BATS_TEST_TMPDIR/box"
  mkdir -p "$STATE/ship"
  echo '{"target":"us-west-2","sequence":"three"}' >"$(wm_file $WEST)"
  run --separate-stderr ship
  assert_status 65
  assert_stderr_has "flk-ship: error: " "$(wm_file $WEST)"
  assert_equal "$(cat "$(wm_file $WEST)")" '{"target":"us-west-2","sequence":"three"}'
  [[ -z $output && ! -e $BATS_TEST_TMPDIR/box/$REGION ]]
  printf 'not json' >"$(wm_file $WEST)"
  run --separate-stderr ship
  assert_status 65
  assert_stderr_has "$(wm_file $WEST)"
}

@test "a configuration error names the file and key (78)" {
  config_two_region "file://$BATS_TEST_TMPDIR/box"
  echo "  retry: {initialBackoff: 5}" >>"$CFG"
  run --separate-stderr flk-ship --config "$CFG" --once
  assert_status 78
  assert_stderr_has "$CFG" "crr.retry.initialBackoff"
}
