#!/usr/bin/env bats
# flk-read (DESIGN.md §1, §3, §4, §8): one reader replaying what flk-ship shipped —
# file://, - (stdin) and http:// from flk-serve — into a SQLite store: every segment
# in order, one JSON line each, the replay watermark (a re-run applies nothing, later
# segments only), several sources, --source; damage (a flipped byte, a wrong sidecar, a
# gap, a segment of another region, a broken chain, a truncated stream) stops that
# source at the last good segment with exit 65 while the others go on; conflicts
# between two regions are resolved by first write wins.
#
# Stores are compared by content with `flk-rebuild-dedup --verify` (read_helpers.bash):
# "the store holds exactly the records of the good segments" is a --verify against a
# mailbox holding only those segments; "the watermark did not move past the last good
# segment" is shown by repairing the damage and seeing the next run apply exactly the
# segments from the damaged one on.

load read_helpers

setup() {
  read_setup
  # The reader is us-west-2; MB its mailbox, STORE its store.
  MB=$(mb_of $WEST)
  STORE=$(sqlite_of $WEST)
  GOOD=$BATS_TEST_TMPDIR/good-mailbox # what the store must equal after a fault
}

teardown() {
  read_teardown
}

# mailbox_of RECORDS DIR: a mailbox DIR for us-west-2 holding the JSON Lines RECORDS,
# each region's own in a WAL of its own (DIR-REGION), shipped as flk-ship would.
mailbox_of() {
  local r
  for r in $EAST $EU; do
    jq -c --arg r "$r" 'select(.region == $r)' "$1" |
      flk-wal append --wal-dir "$2-$r" --region "$r" --segment-bytes 4096 >/dev/null
    mkdir -p "$2/$r/$WEST"
    cp "$2-$r"/*.wal "$2-$r"/*.wal.sha256 "$2/$r/$WEST/"
  done
}

# --- the happy path ------------------------------------------------------------------------

@test "file://: every segment applied in order, one JSON line each; a re-run applies nothing; later segments only" {
  append_in $EAST 300 pcs
  local last
  last=$(sealed_of $EAST)
  ((last >= 5))
  run --separate-stderr ship_file $EAST "$MB" $WEST
  assert_status 0
  local shipped=$output
  # Before replay the store is not the rebuild: a comparison that can fail.
  assert_store_differs $WEST "$STORE" "$MB"

  run --separate-stderr rd $WEST "$STORE"
  assert_status 0
  assert_lines_shape
  assert_equal "$(seqs $EAST)" "$(seq 1 "$last")" "sequences applied"
  # Each line counts the records of its segment (as flk-ship shipped them), all new.
  assert_equal "$(jq -c '[.sequence, .records]' <<<"$output")" "$(jq -c '[.sequence, .records]' <<<"$shipped")" \
    "records per segment"
  assert_equal "$(total records) $(total applied) $(total duplicates) $(total conflicts)" "300 300 0 0" \
    "records applied duplicates conflicts"
  assert_sha_of_stream $EAST "$MB/$EAST/$WEST"
  [[ -z $stderr ]]
  assert_store_equals $WEST "$STORE" "$MB"
  local digest=$DIGEST

  # The watermark: nothing to do, nothing printed, the store unchanged.
  run --separate-stderr rd $WEST "$STORE"
  assert_status 0
  [[ -z $output ]]
  assert_store_equals $WEST "$STORE" "$MB"
  assert_equal "$DIGEST" "$digest" "digest after an idle run"

  # More segments later: only those.
  append_in $EAST 150 more
  local newlast
  newlast=$(sealed_of $EAST)
  ((newlast > last))
  ship_file $EAST "$MB" $WEST >/dev/null
  run --separate-stderr rd $WEST "$STORE"
  assert_status 0
  assert_equal "$(seqs $EAST)" "$(seq $((last + 1)) "$newlast")" "sequences of the second run"
  assert_equal "$(total records) $(total applied)" "150 150"
  assert_store_equals $WEST "$STORE" "$MB"
  [[ $DIGEST != "$digest" ]]
}

@test "--from -: flk-ship --to - | flk-read --from - applies the stream; the same stream again applies nothing" {
  append_in $EAST 300 pcs
  local last
  last=$(sealed_of $EAST)
  pipe() { ship_stream $EAST $WEST "$@" | rd $WEST "$STORE" --from -; }
  run --separate-stderr pipe
  assert_status 0
  assert_lines_shape
  assert_equal "$(seqs $EAST)" "$(seq 1 "$last")" "sequences applied from stdin"
  assert_equal "$(total records) $(total applied)" "300 300"
  # The same segments in a mailbox, to compare with.
  ship_file $EAST "$MB" $WEST >/dev/null
  assert_sha_of_stream $EAST "$MB/$EAST/$WEST"
  assert_store_equals $WEST "$STORE" "$MB"
  local digest=$DIGEST

  # Re-delivery of everything (flk-ship --to - moves no watermark): nothing applied.
  run --separate-stderr pipe
  assert_status 0
  [[ -z $output ]]
  assert_store_equals $WEST "$STORE" "$MB"
  assert_equal "$DIGEST" "$digest"

  # Later segments: the whole stream again, only the new ones are applied.
  append_in $EAST 100 more
  run --separate-stderr pipe --after 0
  assert_status 0
  assert_equal "$(seqs $EAST)" "$(seq $((last + 1)) "$(sealed_of $EAST)")"
  ship_file $EAST "$MB" $WEST >/dev/null
  assert_store_equals $WEST "$STORE" "$MB"
  # No scratch file is left behind (the per-source lock and counters stay).
  assert_equal "$(find "$(state_of $WEST)" -type f ! -name '*.lock' ! -name "$EAST.json")" "" "files left in the state directory"
}

@test "--from http://: pulls from the flk-serve holding the stream with the target region's token" {
  # us-east-1 ships to the mailbox server; us-west-2 and eu-west-1 have tokens there too.
  local wtok=$BATS_TEST_TMPDIR/token-west etok=$BATS_TEST_TMPDIR/token-eu other=$BATS_TEST_TMPDIR/token-unknown
  echo "tok-$RANDOM-west" >"$wtok"
  echo "tok-$RANDOM-eu" >"$etok"
  echo "tok-$RANDOM-unknown" >"$other"
  chmod 600 "$wtok" "$etok" "$other"
  make_wal 300 # $WAL, us-east-1 (ship_helpers)
  local last
  last=$(last_sealed)
  start_server west --token-file "$WEST=$wtok" --token-file "$EU=$etok"
  config_two_region "$(server_url west)"
  run --separate-stderr ship
  assert_status 0
  local smb=$BATS_TEST_TMPDIR/west.mailbox

  run --separate-stderr rd $WEST "$STORE" --from "$(server_url west)" --token-file "$wtok"
  assert_status 0
  assert_lines_shape
  assert_equal "$(seqs $EAST)" "$(seq 1 "$last")" "sequences pulled over http"
  assert_equal "$(total records) $(total applied)" "300 300"
  assert_sha_of_stream $EAST "$smb/$EAST/$WEST"
  # The server saw us-west-2 fetch every segment.
  local n
  for ((n = 1; n <= last; n++)); do
    grep -Eq "GET /v1/segments/$EAST/$WEST/$n 200 .*peer=$WEST" "$BATS_TEST_TMPDIR/west.log" ||
      { echo "no GET of segment $n by $WEST" >&2; cat "$BATS_TEST_TMPDIR/west.log" >&2; return 1; }
  done
  assert_store_equals $WEST "$STORE" "$smb"
  # Fetched segments are not left behind (the per-source locks and counters stay).
  assert_equal "$(find "$(state_of $WEST)" -type f ! -name '*.lock' ! -name '*.json')" "" "files left in the state directory"

  run --separate-stderr rd $WEST "$STORE" --from "$(server_url west)" --token-file "$wtok"
  assert_status 0
  [[ -z $output ]]

  # Refusals are 77 and apply nothing: a peer that is neither source nor target (403),
  # an unknown token and no token (401).
  local refused
  refused=$(sqlite_of $WEST refused)
  run --separate-stderr rd $WEST "$refused" --from "$(server_url west)" --token-file "$etok" --source $EAST
  assert_status 77
  assert_stderr_has "flk-read: error: " "403"
  run --separate-stderr rd $WEST "$refused" --from "$(server_url west)" --token-file "$other"
  assert_status 77
  assert_stderr_has "flk-read: error: " "401"
  run --separate-stderr rd $WEST "$refused" --from "$(server_url west)"
  assert_status 77
  [[ -z $output ]]
  mkdir -p "$BATS_TEST_TMPDIR/empty-mailbox"
  assert_store_equals $WEST "$refused" "$BATS_TEST_TMPDIR/empty-mailbox"

  # A server that is down: 75 (try again later), nothing applied.
  stop_server west
  run --separate-stderr rd $WEST "$refused" --from "$(server_url west)" --token-file "$wtok" --timeout 2s
  assert_status 75
  assert_store_equals $WEST "$refused" "$BATS_TEST_TMPDIR/empty-mailbox"
}

@test "several sources at once; --source replays only the sources named; streams to other targets are ignored" {
  append_in $EAST 200 e
  append_in $EU 200 eu
  # us-east-1 ships to us-west-2 and eu-west-1 into the same directory: the stream to
  # eu-west-1 is not us-west-2's.
  ship_file $EAST "$MB" $WEST $EU >/dev/null
  ship_file $EU "$MB" $WEST >/dev/null
  [[ -d $MB/$EAST/$EU ]]

  run --separate-stderr rd $WEST "$STORE" --source $EU
  assert_status 0
  assert_equal "$(seqs $EU)" "$(seq 1 "$(sealed_of $EU)")"
  [[ -z $(seqs $EAST) ]]
  stream_copy "$MB" $EU $WEST "$GOOD"
  assert_store_equals $WEST "$STORE" "$GOOD"

  # Without --source: every source that shipped here; eu-west-1 is caught up already.
  run --separate-stderr rd $WEST "$STORE"
  assert_status 0
  assert_equal "$(seqs $EAST)" "$(seq 1 "$(sealed_of $EAST)")"
  [[ -z $(seqs $EU) ]]
  assert_store_equals $WEST "$STORE" "$MB"
  local digest=$DIGEST

  # A fresh store, both sources in one run, named twice with --source.
  local both
  both=$(sqlite_of $WEST both)
  run --separate-stderr rd $WEST "$both" --source $EAST --source $EU
  assert_status 0
  assert_lines_shape
  assert_equal "$(seqs $EAST)" "$(seq 1 "$(sealed_of $EAST)")"
  assert_equal "$(seqs $EU)" "$(seq 1 "$(sealed_of $EU)")"
  assert_equal "$(total records)" 400
  assert_store_equals $WEST "$both" "$MB"
  assert_equal "$DIGEST" "$digest" "digest of the one-run store"

  # A source with nothing shipped: nothing to do.
  run --separate-stderr rd $WEST "$both" --source ap-south-1
  assert_status 0
  [[ -z $output ]]
}

# --- damage ----------------------------------------------------------------------------------

# two_sources: us-east-1 (300 records, ≥ 6 segments) and eu-west-1 (100) shipped to $MB;
# ORIG keeps a copy of the mailbox for repairs.
two_sources() {
  append_in $EAST 300 pcs
  append_in $EU 100 eu
  ship_file $EAST "$MB" $WEST >/dev/null
  ship_file $EU "$MB" $WEST >/dev/null
  EAST_LAST=$(sealed_of $EAST)
  EU_LAST=$(sealed_of $EU)
  ((EAST_LAST >= 6 && EU_LAST >= 2))
  ORIG=$BATS_TEST_TMPDIR/orig-mailbox
  cp -a "$MB" "$ORIG"
  SEG=$MB/$EAST/$WEST # us-east-1's stream
}

# good_mailbox LAST: $GOOD holds us-east-1's segments 1..LAST and all of eu-west-1's.
good_mailbox() {
  rm -rf "$GOOD"
  stream_copy "$ORIG" $EAST $WEST "$GOOD" "$1"
  stream_copy "$ORIG" $EU $WEST "$GOOD"
}

# after_repair FIRST: puts the original mailbox back; the next run must apply exactly
# us-east-1's segments FIRST..last (so the watermark stood at FIRST-1), and the store
# then equals the rebuild of everything.
after_repair() {
  rm -rf "$MB"
  cp -a "$ORIG" "$MB"
  run --separate-stderr rd $WEST "$STORE"
  assert_status 0
  assert_equal "$(seqs $EAST)" "$(seq "$1" "$EAST_LAST")" "sequences applied after the repair"
  [[ -z $(seqs $EU) ]]
  assert_store_equals $WEST "$STORE" "$MB"
}

# damaged_run SEQ: runs the reader on the damaged mailbox; exit 65, us-east-1 applied up
# to SEQ-1, eu-west-1 fully; the store holds exactly those segments; a second run
# applies nothing more and fails the same way.
damaged_run() {
  local bad=$1
  run --separate-stderr rd $WEST "$STORE"
  assert_status 65
  assert_stderr_has "flk-read: error: " "source '$EAST'"
  assert_equal "$(seqs $EAST)" "$(seq 1 $((bad - 1)))" "us-east-1's segments applied before the damage"
  assert_equal "$(seqs $EU)" "$(seq 1 "$EU_LAST")" "eu-west-1's segments (another source goes on)"
  local first_stderr=$stderr
  good_mailbox $((bad - 1))
  assert_store_equals $WEST "$STORE" "$GOOD"
  assert_store_differs $WEST "$STORE" "$ORIG"
  run --separate-stderr rd $WEST "$STORE"
  assert_status 65
  [[ -z $output ]]
  assert_equal "$stderr" "$first_stderr" "the error of the second run"
  stderr=$first_stderr
}

# flip_in_frame FILE K: flips a byte in the middle of frame K's payload; sets FRAME_OFF
# to the frame's offset.
flip_in_frame() {
  local offs
  mapfile -t offs < <(frame_offsets "$1")
  FRAME_OFF=${offs[$2]}
  flip_byte "$1" $((FRAME_OFF + 16 + 20))
}

@test "a flipped byte in a mailbox segment (sidecar fixed too, so only the frame checksum sees it): 65 with source, sequence and offset" {
  two_sources
  flip_in_frame "$SEG/$(seg_name 3)" 2
  set_sidecar "$SEG/$(seg_name 3)"
  damaged_run 3
  assert_stderr_has "segment 3" "offset $FRAME_OFF" "checksum"
  after_repair 3
}

@test "a flipped byte in a mailbox segment whose sidecar still holds the shipped digest: 65 naming source, sequence, offset" {
  two_sources
  flip_in_frame "$SEG/$(seg_name 4)" 5
  damaged_run 4
  assert_stderr_has "segment 4" "offset $FRAME_OFF"
  after_repair 4
}

@test "an intact segment whose sidecar declares another digest: 65 naming both digests" {
  two_sources
  local real
  real=$(sha256sum <"$SEG/$(seg_name 3)" | cut -c1-64)
  cp "$SEG/$(seg_name 2).sha256" "$SEG/$(seg_name 3).sha256"
  sed -i "s/$(seg_name 2)/$(seg_name 3)/" "$SEG/$(seg_name 3).sha256"
  damaged_run 3
  assert_stderr_has "segment 3" "$real" "$(cut -c1-64 "$SEG/$(seg_name 3).sha256")"
  after_repair 3
}

@test "a gap (segment 3 of 5 deleted): 65 naming the missing sequence; 1-2 applied, nothing after" {
  append_in $EAST 200 pcs
  append_in $EU 100 eu
  ship_file $EAST "$MB" $WEST >/dev/null
  ship_file $EU "$MB" $WEST >/dev/null
  EAST_LAST=$(sealed_of $EAST)
  EU_LAST=$(sealed_of $EU)
  assert_equal "$EAST_LAST" 5 "segments of us-east-1"
  ORIG=$BATS_TEST_TMPDIR/orig-mailbox
  cp -a "$MB" "$ORIG"
  rm "$MB/$EAST/$WEST/$(seg_name 3)" "$MB/$EAST/$WEST/$(seg_name 3).sha256"
  damaged_run 3
  assert_stderr_has "segment 3 is missing"
  after_repair 3
}

@test "a segment whose header names another region, in us-east-1's stream: 65" {
  two_sources
  # eu-west-1's segment 2, with a sidecar that matches it, as us-east-1's segment 2.
  cp "$MB/$EU/$WEST/$(seg_name 2)" "$SEG/$(seg_name 2)"
  set_sidecar "$SEG/$(seg_name 2)"
  damaged_run 2
  assert_stderr_has "segment 2" "'$EU'"
  after_repair 2
}

@test "a broken chain (segment 2 from another us-east-1 WAL, correct sidecar): 65 broken chain" {
  two_sources
  local other=$BATS_TEST_TMPDIR/other-wal
  REGION=$EAST gen_records 300 other | flk-wal append --wal-dir "$other" --region $EAST --segment-bytes 4096 >/dev/null
  cp "$other/$(seg_name 2)" "$other/$(seg_name 2).sha256" "$SEG/"
  (cd "$SEG" && sha256sum -c --quiet "$(seg_name 2).sha256")
  damaged_run 2
  assert_stderr_has "segment 2" "broken chain"
  after_repair 2
}

@test "a stream on stdin truncated mid-segment: 65, the complete segments before it applied" {
  append_in $EAST 300 pcs
  local last
  last=$(sealed_of $EAST)
  ship_stream $EAST $WEST >"$BATS_TEST_TMPDIR/stream"
  # Cut 100 bytes into the body of segment 4.
  local at
  at=$(grep -abo "FLKSEG/1 $EAST $WEST 4 " "$BATS_TEST_TMPDIR/stream" | cut -d: -f1)
  [[ -n $at ]]
  local hl
  hl=$(tail -c +$((at + 1)) "$BATS_TEST_TMPDIR/stream" | head -n 1 | wc -c)
  head -c $((at + hl + 100)) "$BATS_TEST_TMPDIR/stream" >"$BATS_TEST_TMPDIR/cut"
  run --separate-stderr rd $WEST "$STORE" --from - <"$BATS_TEST_TMPDIR/cut"
  assert_status 65
  assert_stderr_has "flk-read: error: " "stdin"
  assert_equal "$(seqs $EAST)" "1
2
3" "segments applied"
  ship_file $EAST "$MB" $WEST >/dev/null
  rm -rf "$GOOD"
  stream_copy "$MB" $EAST $WEST "$GOOD" 3
  assert_store_equals $WEST "$STORE" "$GOOD"
  # Cut inside a frame's header line: the same.
  head -c $((at + 10)) "$BATS_TEST_TMPDIR/stream" >"$BATS_TEST_TMPDIR/cut2"
  run --separate-stderr rd $WEST "$STORE" --from - <"$BATS_TEST_TMPDIR/cut2"
  assert_status 65
  [[ -z $output ]]
  # The whole stream: 4.. applied.
  run --separate-stderr rd $WEST "$STORE" --from - <"$BATS_TEST_TMPDIR/stream"
  assert_status 0
  assert_equal "$(seqs $EAST)" "$(seq 4 "$last")"
  assert_store_equals $WEST "$STORE" "$MB"
}

@test "a stream segment addressed to another region is a data error (65), nothing after it applied" {
  append_in $EAST 100 pcs
  run --separate-stderr rd $EU "$(sqlite_of $EU)" --from - < <(ship_stream $EAST $WEST)
  assert_status 65
  assert_stderr_has "flk-read: error: " "'$WEST'" "'$EU'"
  [[ -z $output ]]
}

# --- conflicts ------------------------------------------------------------------------------

# conflict_records R OUTCOME: 60 records c-… with OUTCOME (us-east-1 at 10:00:30; eu-west-1
# later for n%3==0, earlier for n%3==1, at the same time for n%3==2 — the region breaks
# the tie) and 30 records s-… with the same outcome at both (us-east-1 earlier for odd n).
conflict_records() {
  local r=$1 o=$2
  {
    REGION=$r gen_records 60 c
    REGION=$r gen_records 30 s
  } | jq -c --arg r "$r" --arg o "$o" '
    (.payload.n) as $n
    | if (.pcs_id | startswith("c-")) then
        .outcome = $o
        | .ts = (if $r == "us-east-1" then "2026-11-26T10:00:30Z"
                 elif $n % 3 == 0 then "2026-11-26T10:00:40Z"
                 elif $n % 3 == 1 then "2026-11-26T10:00:20Z"
                 else "2026-11-26T10:00:30Z" end)
      else
        .outcome = "escalated"
        | .ts = (if $r == "us-east-1" then "2026-11-26T10:00:30Z"
                 elif $n % 2 == 1 then "2026-11-26T10:00:40Z"
                 else "2026-11-26T10:00:20Z" end)
      end'
}

@test "conflicts: two regions' outcomes for the same pcs_ids shipped to a third; the first write by (ts, region) wins in any order" {
  conflict_records $EAST accepted >"$BATS_TEST_TMPDIR/east.jsonl"
  conflict_records $EU rejected >"$BATS_TEST_TMPDIR/eu.jsonl"
  records_in $EAST "$BATS_TEST_TMPDIR/east.jsonl"
  records_in $EU "$BATS_TEST_TMPDIR/eu.jsonl"
  ship_file $EAST "$MB" $WEST >/dev/null
  ship_file $EU "$MB" $WEST >/dev/null

  # eu-west-1 first, then us-east-1: us-east-1 replaces the winners it wrote first —
  # 20 c-… (n%3==0) and 15 s-… (odd n); all 60 c-… are conflicts, the s-… are not.
  local worm=$BATS_TEST_TMPDIR/worm.jsonl
  run --separate-stderr rd $WEST "$STORE" --source $EU --worm "$worm"
  assert_status 0
  assert_equal "$(total records) $(total applied) $(total conflicts)" "90 90 0"
  run --separate-stderr rd $WEST "$STORE" --source $EAST --worm "$worm"
  assert_status 0
  assert_lines_shape
  assert_equal "$(total records) $(total applied) $(total later) $(total duplicates) $(total conflicts)" \
    "90 35 55 0 60" "us-east-1's records applied later duplicates conflicts"
  assert_store_equals $WEST "$STORE" "$MB"
  # Each conflict is in the WORM ledger: its pcs_id, both records, the winner; the chain verifies.
  assert_equal "$(jq -r .pcs_id "$worm" | sort)" "$(jq -r .pcs_id "$BATS_TEST_TMPDIR/east.jsonl" | grep '^c-' | sort)" "pcs_ids in the ledger"
  jq -e -s 'map(.event == "conflict" and .source == "us-east-1" and (.records | length) == 2
    and ([.records[].outcome] | sort) == ["accepted", "rejected"] and (.winner as $w | [.records[].digest] | index($w)) != null) | all' "$worm"
  run --separate-stderr flk-diverge verify-log "$worm"
  assert_status 0
  local digest=$DIGEST

  # The other order into another store: eu-west-1 replaces 40 + 15; the same content.
  local other
  other=$(sqlite_of $WEST other)
  run --separate-stderr rd $WEST "$other" --source $EAST
  assert_status 0
  assert_equal "$(total applied) $(total conflicts)" "90 0"
  run --separate-stderr rd $WEST "$other" --source $EU
  assert_status 0
  assert_equal "$(total applied) $(total later) $(total conflicts)" "55 35 60"
  assert_store_equals $WEST "$other" "$MB"
  assert_equal "$DIGEST" "$digest" "digest of the store filled in the other order"

  # The winners, computed here by (ts, region) — not by the rebuild — form a mailbox
  # whose rebuild the store equals.
  local x=$BATS_TEST_TMPDIR/winners
  jq -s -c 'group_by(.pcs_id) | map(min_by([.ts, .region])) | .[]' \
    "$BATS_TEST_TMPDIR/east.jsonl" "$BATS_TEST_TMPDIR/eu.jsonl" >"$x.jsonl"
  assert_equal "$(jq -r .region "$x.jsonl" | sort | uniq -c | awk '{print $1, $2}')" "55 eu-west-1
35 us-east-1" "winners by region"
  mailbox_of "$x.jsonl" "$x"
  assert_store_equals $WEST "$STORE" "$x"
  assert_equal "$DIGEST" "$digest" "digest of the winners alone"
  # And a mailbox with the losers' side as winners is not what the store holds.
  rm -rf "$x" "$x-$EAST" "$x-$EU"
  jq -s -c 'group_by(.pcs_id) | map(max_by([.ts, .region])) | .[]' \
    "$BATS_TEST_TMPDIR/east.jsonl" "$BATS_TEST_TMPDIR/eu.jsonl" >"$x.jsonl"
  mailbox_of "$x.jsonl" "$x"
  assert_store_differs $WEST "$STORE" "$x"
  assert_equal "$(jq -s 'map(select(.kind == "different")) | length' <<<"$VERIFY_OUT")" 90 "pcs_ids with another winner"
}

# --- the command line -----------------------------------------------------------------------

@test "usage errors (64) and a bad store URL (78)" {
  run --separate-stderr flk-read --store "$STORE" --from "file://$MB" --state-dir "$(state_of $WEST)"
  assert_status 64
  assert_stderr_has "flk-read: error: " "region"
  run --separate-stderr flk-read --region $WEST --store "$STORE" --state-dir "$(state_of $WEST)" --from - --follow
  assert_status 64
  assert_stderr_has "flk-read: error: " "--follow"
  run --separate-stderr rd $WEST "$STORE" --source 'Not A Region'
  assert_status 64
  run --separate-stderr rd $WEST 'mysql://db/flk'
  assert_status 78
  assert_stderr_has "flk-read: error: " "mysql://db/flk"
}
