#!/usr/bin/env bats
# flk-wal(1) on damaged WALs (DESIGN.md §2): every kind of damage is reported by
# `verify` (exit 65, naming the segment file and the byte offset) and stops `cat`
# (exit 65) after the good records before it, never printing a damaged or foreign
# record. A torn tail of the open segment — what a crash leaves — is not damage: the
# next writer cuts it, says so, and carries on.
#
# The fixture: 64 records in sealed segments of about 20 records (--segment-bytes
# 2KiB; $NSEG segments, $R2 records in segment 2), and a pristine copy to compute
# what cat should print.

load helpers

setup() {
  flk_setup
  gen_records 64 dmg >"$BATS_TEST_TMPDIR/in.jsonl"
  wal_append --segment-bytes 2KiB --segment-age 10ms <"$BATS_TEST_TMPDIR/in.jsonl" >"$BATS_TEST_TMPDIR/acks"
  assert_contiguous
  NSEG=$(segment_numbers | wc -l)
  R2=$(flk-wal ls --wal-dir "$WAL" | jq -r 'select(.segment == 2) | .records')
  ((NSEG >= 4 && R2 >= 10))
  [[ $(segment_path "$NSEG") == *.wal ]]
  PRISTINE=$BATS_TEST_TMPDIR/pristine
  cp -a "$WAL" "$PRISTINE"
  SEG2=$WAL/0000000000000002.wal
  # The helpers parse frames as flk-wal(5) describes: R2 records and the seal.
  [[ $(frame_offsets "$SEG2" | wc -l) == $((R2 + 1)) ]]
  [[ $(($(frame_offsets "$SEG2" | tail -1) + 40)) == "$(file_size "$SEG2")" ]]
}

# The records cat should print before damage in segment SEG after its first K records.
records_before() {
  local seg=$1 k=$2 s
  for ((s = 1; s < seg; s++)); do flk-wal cat "$(segment_path "$s" "$PRISTINE")"; done
  flk-wal cat "$(segment_path "$seg" "$PRISTINE")" | head -n "$k"
}

# The Nth (from 0) frame offset of a segment file; fails when there is none.
frame_offset() {
  local off
  off=$(frame_offsets "$1" | sed -n "$(($2 + 1))p")
  [[ -n $off ]] || { echo "'$1' has no frame $2" >&2; return 1; }
  echo "$off"
}

# verify fails (65) naming FILE and "offset OFFSET" on stderr, and its JSON line for
# that segment says ok:false with the same problem.
assert_verify_names() {
  local file=$1 offset=$2
  run --separate-stderr flk-wal verify --wal-dir "$WAL"
  assert_status 65
  assert_error_line
  assert_stderr_has "segment '$file'" "offset $offset"
  assert_stderr_has "1 damaged segment"
  local seq
  seq=$(basename "$file")
  seq=$((10#${seq:0:16}))
  json_all "if .segment == $seq then (.ok == false and (.problem | contains(\"offset $offset\"))) else .ok end" <<<"$output"
}

# cat fails (65) naming FILE and "offset OFFSET", after printing exactly EXPECTED.
assert_cat_stops() {
  local file=$1 offset=$2 expected=$3
  run --separate-stderr flk-wal cat --wal-dir "$WAL"
  assert_status 65
  assert_error_line
  assert_stderr_has "segment '$file'" "offset $offset"
  assert_equal "$output" "$expected" "records printed before the damage"
}

@test "the fixture verifies, and cat prints every record" {
  run --separate-stderr flk-wal verify --wal-dir "$WAL"
  assert_status 0
  run --separate-stderr flk-wal cat --wal-dir "$WAL"
  assert_status 0
  assert_equal "$(jq -cS . <<<"$output")" "$(jq -cS . <"$BATS_TEST_TMPDIR/in.jsonl")" "records"
}

@test "a flipped byte in a record of a sealed segment: verify and cat name the segment and offset" {
  local off
  off=$(frame_offset "$SEG2" 7)
  flip_byte "$SEG2" $((off + 40))
  assert_verify_names "$SEG2" "$off"
  assert_stderr_has "checksum"
  assert_cat_stops "$SEG2" "$off" "$(records_before 2 7)"
  # The damaged record is never printed, nor anything after it.
  local damaged
  damaged=$(flk-wal cat "$PRISTINE/0000000000000002.wal" | sed -n 8p | pcs_ids)
  [[ -n $damaged && $output != *"$damaged"* ]]
}

@test "a flipped byte in a frame's length: verify and cat name the segment and offset" {
  local off
  off=$(frame_offset "$SEG2" 3)
  flip_byte "$SEG2" $((off + 1))
  assert_verify_names "$SEG2" "$off"
  assert_cat_stops "$SEG2" "$off" "$(records_before 2 3)"
}

@test "a flipped byte in the last record before the seal is damage, not a torn tail" {
  local off
  off=$(frame_offset "$SEG2" $((R2 - 1)))
  flip_byte "$SEG2" $((off + 20))
  assert_verify_names "$SEG2" "$off"
  assert_cat_stops "$SEG2" "$off" "$(records_before 2 $((R2 - 1)))"
}

@test "a flipped byte in the seal frame: verify and cat name the segment and offset" {
  local off
  off=$(frame_offset "$SEG2" "$R2")
  flip_byte "$SEG2" $((off + 18))
  assert_verify_names "$SEG2" "$off"
  assert_cat_stops "$SEG2" "$off" "$(records_before 2 "$R2")"
}

@test "a truncated seal trailer (5 bytes cut): verify and cat name the segment and offset" {
  local off
  off=$(frame_offset "$SEG2" "$R2")
  truncate -s -5 "$SEG2"
  assert_verify_names "$SEG2" "$off"
  assert_cat_stops "$SEG2" "$off" "$(records_before 2 "$R2")"
}

@test "a sealed segment whose whole seal trailer is cut: verify and cat fail" {
  local off
  off=$(frame_offset "$SEG2" "$R2")
  truncate -s "$off" "$SEG2"
  assert_verify_names "$SEG2" "$off"
  assert_stderr_has "seal"
  # All records are intact, but the segment is not what was sealed (and shipped).
  assert_cat_stops "$SEG2" "$off" "$(records_before 2 "$R2")"
}

@test "a sealed segment cut at a frame boundary (seal and last records lost): cat must not succeed" {
  # What a truncating copy or a bad restore leaves: the file simply ends early, at a
  # frame boundary. Three acknowledged records are gone; cat must say so.
  local off
  off=$(frame_offset "$SEG2" $((R2 - 3)))
  truncate -s "$off" "$SEG2"
  assert_verify_names "$SEG2" "$off"
  assert_cat_stops "$SEG2" "$off" "$(records_before 2 $((R2 - 3)))"
}

@test "damaged header magic: verify and cat name the segment and offset 0" {
  flip_byte "$SEG2" 0
  assert_verify_names "$SEG2" 0
  assert_stderr_has "magic"
  assert_cat_stops "$SEG2" 0 "$(records_before 2 0)"
}

@test "a damaged header field (the region) fails the header checksum at offset 0" {
  flip_byte "$SEG2" 97
  assert_verify_names "$SEG2" 0
  assert_cat_stops "$SEG2" 0 "$(records_before 2 0)"
}

@test "a middle segment replaced by one from another WAL: broken chain at offset 32" {
  # Another WAL of the same region with the same numbering: its segment 2 is a
  # perfectly valid segment (with a matching sidecar), but not this WAL's.
  local other=$BATS_TEST_TMPDIR/other
  gen_records 64 foreign | flk-wal append --wal-dir "$other" --region "$REGION" --segment-bytes 2KiB \
    --segment-age 10ms >/dev/null
  cp "$other/0000000000000002.wal" "$other/0000000000000002.wal.sha256" "$WAL/"
  assert_verify_names "$SEG2" 32
  assert_stderr_has "chain"
  # cat must not pass the foreign records off as this WAL's.
  run --separate-stderr flk-wal cat --wal-dir "$WAL"
  assert_status 65
  assert_error_line
  assert_stderr_has "segment '$SEG2'" "offset 32"
  [[ $output != *foreign-* ]] || { echo "cat printed records of the other WAL" >&2; return 1; }
  assert_equal "$output" "$(records_before 2 0)" "records printed before the damage"
}

@test "a middle segment replaced without its sidecar: verify reports digest or chain" {
  local other=$BATS_TEST_TMPDIR/other
  gen_records 64 foreign | flk-wal append --wal-dir "$other" --region "$REGION" --segment-bytes 2KiB \
    --segment-age 10ms >/dev/null
  cp "$other/0000000000000002.wal" "$WAL/"
  run --separate-stderr flk-wal verify --wal-dir "$WAL"
  assert_status 65
  assert_stderr_has "segment '$SEG2'"
}

@test "a sidecar that does not match its segment: verify fails naming both" {
  # Change the first hex digit of the digest.
  if [[ $(head -c1 "$SEG2.sha256") == 0 ]]; then sed -i 's/^0/1/' "$SEG2.sha256"; else sed -i 's/^./0/' "$SEG2.sha256"; fi
  [[ $(cut -d' ' -f1 "$SEG2.sha256") != "$(sha256sum "$SEG2" | cut -d' ' -f1)" ]]
  run --separate-stderr flk-wal verify --wal-dir "$WAL"
  assert_status 65
  assert_stderr_has "segment '$SEG2'" "sidecar" "$SEG2.sha256"
}

@test "a deleted middle segment (a gap): verify names the segment after it; cat refuses the gap" {
  rm "$SEG2" "$SEG2.sha256"
  local seg3=$WAL/0000000000000003.wal
  run --separate-stderr flk-wal verify --wal-dir "$WAL"
  assert_status 65
  assert_error_line
  assert_stderr_has "segment '$seg3'" "gap"
  assert_stderr_has "1 damaged segment"
  json_all 'if .segment == 3 then .ok == false else .ok end' <<<"$output"
  # cat must not print segments 3 and 4 as if 2 had never existed.
  run --separate-stderr flk-wal cat --wal-dir "$WAL"
  assert_status 65
  assert_error_line
  assert_stderr_has "$seg3"
  assert_equal "$output" "$(records_before 2 0)" "records printed before the gap"
}

@test "cat --since still refuses a gap and a foreign segment after the skipped ones" {
  # --since skips sealed segments that end before the time; the chain must still hold
  # across them (flk-wal(1): their sidecars link it).
  local since
  since=$(flk-wal cat "$WAL/0000000000000003.wal" | jq -r .ts | head -1)
  rm "$SEG2" "$SEG2.sha256"
  run --separate-stderr flk-wal cat --wal-dir "$WAL" --since "$since"
  assert_status 65
  assert_stderr_has "0000000000000003.wal"
  rm -rf "$WAL"
  cp -a "$PRISTINE" "$WAL"
  local other=$BATS_TEST_TMPDIR/other
  gen_records 64 foreign | flk-wal append --wal-dir "$other" --region "$REGION" --segment-bytes 2KiB \
    --segment-age 10ms >/dev/null
  cp "$other/0000000000000003.wal" "$other/0000000000000003.wal.sha256" "$WAL/"
  run --separate-stderr flk-wal cat --wal-dir "$WAL" --since "$since"
  assert_status 65
  assert_stderr_has "0000000000000003.wal" "offset 32"
  [[ $output != *foreign-* ]]
}

@test "cat of named segment files may skip numbers, but checks the chain between neighbours" {
  run --separate-stderr flk-wal cat "$WAL/0000000000000001.wal" "$WAL/0000000000000003.wal"
  assert_status 0
  assert_equal "$output" "$(flk-wal cat "$PRISTINE/0000000000000001.wal"; flk-wal cat "$PRISTINE/0000000000000003.wal")" \
    "records of segments 1 and 3"
  local other=$BATS_TEST_TMPDIR/other
  gen_records 64 foreign | flk-wal append --wal-dir "$other" --region "$REGION" --segment-bytes 2KiB \
    --segment-age 10ms >/dev/null
  run --separate-stderr flk-wal cat "$WAL/0000000000000001.wal" "$other/0000000000000002.wal"
  assert_status 65
  assert_stderr_has "$other/0000000000000002.wal" "offset 32"
  [[ $output != *foreign-* ]]
}

@test "a deleted middle segment (a gap): append refuses to write" {
  rm "$SEG2" "$SEG2.sha256"
  run --separate-stderr wal_append < <(gen_records 1 late 100)
  assert_status 65
  assert_error_line
  assert_stderr_has "$WAL" "segment 2"
  [[ -z $output ]]
  assert_equal "$(segment_numbers | tr '\n' ' ')" "1 $(seq -s ' ' 3 "$NSEG") " "segments"
}

@test "damage inside the open segment (not at its tail) is reported, never cut" {
  gen_records 10 open 100 | wal_append --keep-open >/dev/null
  local open off size
  open=$(segment_path $((NSEG + 1)))
  off=$(frame_offset "$open" 4)
  rm -rf "$PRISTINE"
  cp -a "$WAL" "$PRISTINE"
  flip_byte "$open" $((off + 30))
  size=$(file_size "$open")
  run --separate-stderr flk-wal verify --wal-dir "$WAL"
  assert_status 65
  assert_stderr_has "segment '$open'" "offset $off"
  assert_cat_stops "$open" "$off" "$(records_before $((NSEG + 1)) 4)"
  # The writer refuses too: cutting here would drop five acknowledged records.
  run --separate-stderr wal_append < <(gen_records 1 late 200)
  assert_status 65
  assert_stderr_has "segment '$open'" "offset $off"
  [[ -z $output ]]
  [[ $(file_size "$open") == "$size" ]]
}

# --- torn tails: what a crash leaves; recovered, not reported -------------------------

# Four records appended to an open segment $OPEN (after the fixture's sealed ones).
open_segment_with_tail() {
  gen_records 4 tail 100 | wal_append --keep-open >"$BATS_TEST_TMPDIR/tail-acks"
  OPEN=$(segment_path $((NSEG + 1)))
  [[ -f $OPEN ]]
}

@test "a torn tail of the open segment: the next append cuts it, says so, and succeeds" {
  open_segment_with_tail
  local last
  last=$(frame_offset "$OPEN" 3)
  truncate -s -5 "$OPEN"
  # Before recovery: verify passes (with a note), cat prints all but the torn record.
  run --separate-stderr flk-wal verify --wal-dir "$WAL"
  assert_status 0
  assert_stderr_has "torn tail" "offset $last"
  run --separate-stderr flk-wal cat --wal-dir "$WAL"
  assert_status 0
  assert_equal "$(pcs_ids <<<"$output" | tail -4 | tr '\n' ' ')" "dmg-000064 tail-000100 tail-000101 tail-000102 " \
    "last records"
  # The next append recovers.
  run --separate-stderr wal_append --segment-age 10ms < <(gen_records 2 after 300)
  assert_status 0
  assert_stderr_has recovering "$OPEN" "cut torn tail" "offset $last"
  [[ ${#lines[@]} == 2 ]]
  run --separate-stderr flk-wal verify --wal-dir "$WAL"
  assert_status 0
  [[ -z $stderr ]]
  assert_contiguous
  run --separate-stderr flk-wal cat --wal-dir "$WAL"
  assert_status 0
  [[ $(pcs_ids <<<"$output" | grep -c '^tail-') == 3 ]]
  [[ $(pcs_ids <<<"$output" | tail -2 | tr '\n' ' ') == "after-000300 after-000301 " ]]
  [[ ${#lines[@]} == $((64 + 3 + 2)) ]]
}

@test "a torn tail inside the last frame head is cut too" {
  open_segment_with_tail
  local last
  last=$(frame_offset "$OPEN" 3)
  truncate -s $((last + 7)) "$OPEN"
  run --separate-stderr wal_append --keep-open < <(gen_records 1 after 300)
  assert_status 0
  assert_stderr_has recovering "cut torn tail" "offset $last"
  run --separate-stderr flk-wal verify --wal-dir "$WAL"
  assert_status 0
}

@test "zeros after the last frame of the open segment (a crash after the size grew) are cut" {
  open_segment_with_tail
  local end
  end=$(file_size "$OPEN")
  truncate -s +4096 "$OPEN"
  run --separate-stderr wal_append --keep-open < <(gen_records 1 after 300)
  assert_status 0
  assert_stderr_has recovering "cut torn tail" "offset $end" "4096 bytes dropped"
  # Records that waited through a crash are due at once: the recovered segment is
  # sealed where its good frames end, and the new record starts the next one.
  [[ $(file_size "${OPEN%.open}.wal") == $((end + 40)) ]]
  [[ $(jq -r '"\(.segment) \(.offset)"' <<<"$output") == "$((NSEG + 2)) 192" ]]
  run --separate-stderr flk-wal verify --wal-dir "$WAL"
  assert_status 0
  [[ $(flk-wal cat --wal-dir "$WAL" | pcs_ids | grep -c '^tail-') == 4 ]]
}

@test "a segment sealed but not renamed before a crash is finished by the next writer" {
  open_segment_with_tail
  flk-wal seal --wal-dir "$WAL" --region "$REGION" >/dev/null
  # Undo the rename and the sidecar: the seal frame is durable, the rest was not.
  mv "${OPEN%.open}.wal" "$OPEN"
  rm "${OPEN%.open}.wal.sha256"
  run --separate-stderr wal_append --keep-open < <(gen_records 1 after 300)
  assert_status 0
  assert_stderr_has recovering "finished sealing"
  [[ $(jq -r .segment <<<"$output") == $((NSEG + 2)) ]]
  [[ -f ${OPEN%.open}.wal && -f ${OPEN%.open}.wal.sha256 && ! -e $OPEN ]]
  run --separate-stderr flk-wal verify --wal-dir "$WAL"
  assert_status 0
  run sh -c 'cd "$1" && sha256sum --strict -c ./*.wal.sha256' sh "$WAL"
  assert_status 0
}

@test "a missing sidecar of the last sealed segment is rewritten by the next writer" {
  local last
  last=$(segment_path "$NSEG")
  rm "$last.sha256"
  run --separate-stderr flk-wal verify --wal-dir "$WAL"
  assert_status 0
  assert_stderr_has "sidecar"
  run --separate-stderr wal_append --keep-open </dev/null
  assert_status 0
  assert_stderr_has recovering "sidecar"
  run sh -c 'cd "$1" && sha256sum --strict -c "$2"' sh "$WAL" "${last##*/}.sha256"
  assert_status 0
}

@test "a missing sidecar of a middle segment is rewritten by the next writer" {
  rm "$SEG2.sha256"
  run --separate-stderr flk-wal verify --wal-dir "$WAL"
  assert_status 0
  assert_stderr_has "sidecar"
  run --separate-stderr wal_append --keep-open </dev/null
  assert_status 0
  assert_stderr_has recovering "$SEG2" "sidecar"
  run sh -c 'cd "$1" && sha256sum --strict -c ./*.wal.sha256' sh "$WAL"
  assert_status 0
  [[ $(grep -c ': OK$' <<<"$output") == "$NSEG" ]]
}
