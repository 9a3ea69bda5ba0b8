#!/usr/bin/env bats
# flk-wal(1): the command-line contract of the inbox WAL tool — options, exit codes,
# acknowledgements, round trips through cat, ls, seal, rotation, sidecars, and what
# happens to bad input (DESIGN.md §1, §2, §8).

load helpers

setup() {
  flk_setup
}

# --- options and exit codes ---------------------------------------------------------

@test "--help prints usage with every verb and exits 0" {
  run --separate-stderr flk-wal --help
  assert_status 0
  [[ $output == *Usage:* ]]
  local verb
  for verb in append cat ls verify seal; do
    [[ $output == *"$verb"* ]] || { echo "--help does not mention '$verb'" >&2; return 1; }
  done
  run --separate-stderr flk-wal append --help
  assert_status 0
  [[ $output == *--segment-bytes* && $output == *--segment-age* && $output == *--keep-open* ]]
}

@test "--version prints the version and exits 0" {
  run --separate-stderr flk-wal --version
  assert_status 0
  [[ $output =~ ^flk-wal\ .*[0-9]+\.[0-9]+\.[0-9]+ ]]
}

@test "an unknown option is a usage error (64) in git's message style" {
  run --separate-stderr flk-wal append --no-such-option --wal-dir "$WAL" --region "$REGION"
  assert_status 64
  assert_error_line
  assert_stderr_has "--no-such-option"
  [[ -z $output ]]
  [[ ! -e $WAL ]]

  run --separate-stderr flk-wal --no-such-option ls --wal-dir "$WAL"
  assert_status 64
  assert_error_line
  assert_stderr_has "--no-such-option"
}

@test "a missing or unknown verb is a usage error (64)" {
  run --separate-stderr flk-wal
  assert_status 64
  assert_error_line
  run --separate-stderr flk-wal frobnicate
  assert_status 64
  assert_error_line
}

@test "bad option values are usage errors (64) naming the value" {
  run --separate-stderr wal_append --segment-bytes lots </dev/null
  assert_status 64
  assert_stderr_has lots
  run --separate-stderr wal_append --segment-age soon </dev/null
  assert_status 64
  assert_stderr_has soon
  run --separate-stderr flk-wal append --wal-dir "$WAL" --region US_EAST </dev/null
  assert_status 64
  assert_stderr_has US_EAST
  run --separate-stderr flk-wal cat --wal-dir "$WAL" --since yesterday-ish
  assert_status 64
  assert_stderr_has "--since" yesterday-ish
}

@test "append without a region (no --region, none configured) is a usage error (64)" {
  run --separate-stderr flk-wal append --wal-dir "$WAL" < <(min_record a)
  assert_status 64
  assert_error_line
  assert_stderr_has region
}

@test "the region can come from the configuration file" {
  printf 'region: eu-west-1\npaths:\n  wal: %s\n' "$WAL" >"$BATS_TEST_TMPDIR/c.yaml"
  run --separate-stderr flk-wal --config "$BATS_TEST_TMPDIR/c.yaml" append --keep-open < <(min_record a)
  assert_status 0
  run --separate-stderr flk-wal --config "$BATS_TEST_TMPDIR/c.yaml" cat
  assert_status 0
  [[ $(jq -r .region <<<"$output") == eu-west-1 ]]
}

@test "a named configuration file that does not exist is a configuration error (78)" {
  FLK_CONFIG=$BATS_TEST_TMPDIR/missing.yaml run --separate-stderr flk-wal ls --wal-dir "$WAL"
  assert_status 78
  assert_error_line
  assert_stderr_has "$BATS_TEST_TMPDIR/missing.yaml"
  run --separate-stderr flk-wal --config "$BATS_TEST_TMPDIR/missing.yaml" ls --wal-dir "$WAL"
  assert_status 78
}

@test "a segment size below the minimum is a usage error (64)" {
  run --separate-stderr wal_append --segment-bytes 511 < <(min_record a)
  assert_status 64
  assert_error_line
  assert_stderr_has 511
  [[ -z $output ]]
  run --separate-stderr wal_append --segment-bytes 512 --keep-open < <(min_record a)
  assert_status 0
}

@test "a WAL that belongs to another region is refused (64) and left alone" {
  gen_records 2 r | wal_append --keep-open >/dev/null
  run --separate-stderr flk-wal append --wal-dir "$WAL" --region eu-west-1 < <(min_record x)
  assert_status 64
  assert_error_line
  assert_stderr_has "'$REGION'" "'eu-west-1'"
  [[ -z $output ]]
  [[ $(flk-wal cat --wal-dir "$WAL" | wc -l) == 2 ]]
}

@test "reading a WAL directory that does not exist exits 66 naming it" {
  run --separate-stderr flk-wal cat --wal-dir "$BATS_TEST_TMPDIR/nowhere"
  assert_status 66
  assert_error_line
  assert_stderr_has "$BATS_TEST_TMPDIR/nowhere"
  run --separate-stderr flk-wal verify --wal-dir "$BATS_TEST_TMPDIR/nowhere"
  assert_status 66
  run --separate-stderr flk-wal ls --wal-dir "$BATS_TEST_TMPDIR/nowhere"
  assert_status 66
}

# --- append and its acknowledgements ------------------------------------------------

@test "append acknowledges every record with one JSON line: pcs_id, segment, offset" {
  gen_records 25 ack >"$BATS_TEST_TMPDIR/in.jsonl"
  run --separate-stderr wal_append --keep-open <"$BATS_TEST_TMPDIR/in.jsonl"
  assert_status 0
  [[ ${#lines[@]} == 25 ]]
  assert_acks "${lines[@]}"
  assert_equal "$(pcs_ids <<<"$output")" "$(pcs_ids <"$BATS_TEST_TMPDIR/in.jsonl")" "acknowledged pcs_ids"
  # One segment; the first record follows the 192-byte header; offsets strictly rise.
  [[ $(jq -r .segment <<<"$output" | sort -u) == 1 ]]
  [[ $(jq -r .offset <<<"${lines[0]}") == 192 ]]
  jq -r .offset <<<"$output" | awk 'NR > 1 && $1 <= prev { exit 1 } { prev = $1 }'
  # With --keep-open the segment stays open and holds exactly what was acknowledged.
  [[ -f $WAL/0000000000000001.open && ! -e $WAL/0000000000000001.wal ]]
  run --separate-stderr flk-wal cat --wal-dir "$WAL"
  assert_status 0
  [[ ${#lines[@]} == 25 ]]
}

@test "append of empty input writes nothing and exits 0" {
  run --separate-stderr wal_append </dev/null
  assert_status 0
  [[ -z $output ]]
  run --separate-stderr flk-wal cat --wal-dir "$WAL"
  assert_status 0
  [[ -z $output ]]
}

@test "blank lines in the input are skipped, and line numbers still count them" {
  { min_record a; echo; echo '   '; min_record b; echo 'not json'; } >"$BATS_TEST_TMPDIR/in"
  run --separate-stderr wal_append --keep-open <"$BATS_TEST_TMPDIR/in"
  assert_status 65
  [[ ${#lines[@]} == 2 ]]
  assert_stderr_has "line 5"
}

@test "CRLF line ends are accepted" {
  run --separate-stderr wal_append --keep-open < <(min_record crlf-1 | sed 's/$/\r/'; min_record crlf-2 | sed 's/$/\r/')
  assert_status 0
  [[ ${#lines[@]} == 2 ]]
  [[ $(flk-wal cat --wal-dir "$WAL" | pcs_ids | tr '\n' ' ') == "crlf-1 crlf-2 " ]]
}

@test "a last line without a newline is appended" {
  run --separate-stderr wal_append --keep-open < <(min_record a; printf '{"pcs_id":"b","tenant_id":"t","outcome":"accepted"}')
  assert_status 0
  [[ ${#lines[@]} == 2 ]]
  [[ $(flk-wal cat --wal-dir "$WAL" | pcs_ids | tr '\n' ' ') == "a b " ]]
}

@test "a second writer on the same WAL is refused with a temporary failure (75)" {
  # The first writer holds the lock while it waits for more input.
  mkfifo "$BATS_TEST_TMPDIR/fifo"
  wal_append --keep-open <"$BATS_TEST_TMPDIR/fifo" >"$BATS_TEST_TMPDIR/acks" 2>/dev/null 3>&- &
  local pid=$!
  exec 7>"$BATS_TEST_TMPDIR/fifo"
  min_record first >&7
  local i
  for i in $(seq 50); do [[ -s $BATS_TEST_TMPDIR/acks ]] && break; sleep 0.1; done
  run --separate-stderr wal_append < <(min_record second)
  exec 7>&-
  wait "$pid"
  assert_status 75
  assert_error_line
  assert_stderr_has "$WAL/LOCK"
  [[ $(flk-wal cat --wal-dir "$WAL" | pcs_ids) == first ]]
}

# --- cat: round trips ----------------------------------------------------------------

@test "cat round-trips every field exactly, ts to the nanosecond, payload minified" {
  # flk-wal(1): the payload "is stored minified (without white space outside
  # strings), with its object keys in the order given"; timestamps come back in UTC
  # with 'Z' and the fraction's trailing zeros removed; fields in the order of §1.
  cat >"$BATS_TEST_TMPDIR/in.jsonl" <<'EOF'
{"pcs_id":"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08","tenant_id":"tenant-a","outcome":"accepted","ts":"2026-11-26T08:00:00.123456789Z","region":"us-east-1","params":"pcs-v3;strict","payload":{"zeta":1,"alpha":{"y":[3,{"d":4,"c":5}],"b":"x"},"mid":null}}
{"pcs_id":"id with spaces ~!","tenant_id":"tenant-b","outcome":"escalated","ts":"1999-12-31T23:59:59.000000001Z","region":"us-east-1"}
{"pcs_id":"r","tenant_id":"t\u00e9nant \"quoted\"","outcome":"rejected","ts":"2026-11-26T08:00:01Z","payload":[1, "two" , { "b" : true, "a" : false, "s": "  spaced  " }]}
{"region":"us-east-1","payload":"just a string","ts":"2026-11-26T08:00:02.500Z","outcome":"accepted","tenant_id":"t","pcs_id":"reordered"}
{"pcs_id":"zoned","tenant_id":"t","outcome":"accepted","ts":"2026-11-26T10:00:03.000000010+02:00","params":null,"payload":null}
EOF
  run --separate-stderr wal_append --keep-open <"$BATS_TEST_TMPDIR/in.jsonl"
  assert_status 0
  [[ ${#lines[@]} == 5 ]]
  run --separate-stderr flk-wal cat --wal-dir "$WAL"
  assert_status 0
  local expected
  expected=$(cat <<'EOF'
{"pcs_id":"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08","tenant_id":"tenant-a","outcome":"accepted","ts":"2026-11-26T08:00:00.123456789Z","region":"us-east-1","params":"pcs-v3;strict","payload":{"zeta":1,"alpha":{"y":[3,{"d":4,"c":5}],"b":"x"},"mid":null}}
{"pcs_id":"id with spaces ~!","tenant_id":"tenant-b","outcome":"escalated","ts":"1999-12-31T23:59:59.000000001Z","region":"us-east-1"}
{"pcs_id":"r","tenant_id":"ténant \"quoted\"","outcome":"rejected","ts":"2026-11-26T08:00:01Z","region":"us-east-1","payload":[1,"two",{"b":true,"a":false,"s":"  spaced  "}]}
{"pcs_id":"reordered","tenant_id":"t","outcome":"accepted","ts":"2026-11-26T08:00:02.5Z","region":"us-east-1","payload":"just a string"}
{"pcs_id":"zoned","tenant_id":"t","outcome":"accepted","ts":"2026-11-26T08:00:03.00000001Z","region":"us-east-1"}
EOF
  )
  # Compare as JSON first (a clearer failure), then byte for byte.
  assert_equal "$(jq -cS . <<<"$output")" "$(jq -cS . <<<"$expected")" "records (as JSON)"
  assert_equal "$output" "$expected" "cat output"
}

@test "cat returns many generated records unchanged and in order, across segments" {
  gen_records 300 rt >"$BATS_TEST_TMPDIR/in.jsonl"
  run --separate-stderr wal_append --segment-bytes 8KiB --segment-age 50ms <"$BATS_TEST_TMPDIR/in.jsonl"
  assert_status 0
  [[ ${#lines[@]} == 300 ]]
  (($(segment_numbers | wc -l) > 3))
  flk-wal cat --wal-dir "$WAL" >"$BATS_TEST_TMPDIR/out.jsonl"
  # Same records (keys of payloads sorted on both sides), same order.
  assert_equal "$(jq -cS . <"$BATS_TEST_TMPDIR/out.jsonl")" "$(jq -cS . <"$BATS_TEST_TMPDIR/in.jsonl")" "records"
  # The ts strings come back byte for byte.
  assert_equal "$(jq -r .ts <"$BATS_TEST_TMPDIR/out.jsonl")" "$(jq -r .ts <"$BATS_TEST_TMPDIR/in.jsonl")" "ts"
}

@test "a record without ts gets the time of append; without region, the WAL's region" {
  local before after ts
  before=$(date -u +%s)
  run --separate-stderr wal_append --keep-open < <(min_record now)
  assert_status 0
  after=$(date -u +%s)
  run --separate-stderr flk-wal cat --wal-dir "$WAL"
  assert_status 0
  [[ $(jq -r .region <<<"$output") == "$REGION" ]]
  ts=$(jq -r .ts <<<"$output")
  [[ $ts =~ ^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?Z$ ]]
  ts=$(date -u -d "$ts" +%s)
  ((ts >= before && ts <= after))
}

@test "cat reads given segment files instead of a directory" {
  gen_records 40 seg | wal_append --segment-bytes 2KiB --segment-age 50ms >/dev/null
  local second
  second=$(segment_path 2)
  run --separate-stderr flk-wal cat "$second"
  assert_status 0
  [[ ${#lines[@]} -ge 1 ]]
  local want
  want=$(flk-wal ls --wal-dir "$WAL" --json | jq -r 'select(.segment == 2) | .records')
  [[ ${#lines[@]} == "$want" ]]
}

@test "cat of a named segment file that does not exist exits 66 naming it" {
  run --separate-stderr flk-wal cat "$BATS_TEST_TMPDIR/0000000000000001.wal"
  assert_status 66
  assert_error_line
  assert_stderr_has "$BATS_TEST_TMPDIR/0000000000000001.wal"
}

@test "cat --since prints only records with ts at or after the time" {
  {
    printf '{"pcs_id":"old","tenant_id":"t","outcome":"accepted","ts":"2026-11-26T07:59:59.999999999Z"}\n'
    printf '{"pcs_id":"edge","tenant_id":"t","outcome":"accepted","ts":"2026-11-26T08:00:00Z"}\n'
    printf '{"pcs_id":"new","tenant_id":"t","outcome":"accepted","ts":"2026-11-26T08:00:00.000000001Z"}\n'
    printf '{"pcs_id":"older","tenant_id":"t","outcome":"accepted","ts":"2020-01-01T00:00:00Z"}\n'
    printf '{"pcs_id":"zoned","tenant_id":"t","outcome":"accepted","ts":"2026-11-26T09:30:00+02:00"}\n'
  } | wal_append --segment-bytes 512 --segment-age 50ms >/dev/null
  run --separate-stderr flk-wal cat --wal-dir "$WAL" --since 2026-11-26T08:00:00Z
  assert_status 0
  assert_equal "$(pcs_ids <<<"$output" | tr '\n' ' ')" "edge new " "records since 08:00"
  run --separate-stderr flk-wal cat --wal-dir "$WAL" --since 2026-11-26T07:00:00Z
  assert_status 0
  # 09:30+02:00 is 07:30Z, and comes back in UTC.
  assert_equal "$(pcs_ids <<<"$output" | tr '\n' ' ')" "old edge new zoned " "records since 07:00"
  [[ $(jq -r 'select(.pcs_id == "zoned") | .ts' <<<"$output") == 2026-11-26T07:30:00Z ]]
  run --separate-stderr flk-wal cat --wal-dir "$WAL" --since @0
  assert_status 0
  [[ ${#lines[@]} == 5 ]]
  run --separate-stderr flk-wal cat --wal-dir "$WAL" --since now
  assert_status 0
  [[ -z $output ]]
}

# --- ls, seal, sidecars --------------------------------------------------------------

@test "ls --json describes every segment with its fields" {
  gen_records 30 ls | wal_append --segment-bytes 2KiB --segment-age 50ms >/dev/null
  gen_records 2 open 100 | wal_append --keep-open >/dev/null
  run --separate-stderr flk-wal ls --wal-dir "$WAL" --json
  assert_status 0
  local n
  n=$(segment_numbers | wc -l)
  [[ ${#lines[@]} == "$n" ]]
  # Every line has every field, with the right types.
  json_all '(.segment | type == "number") and (.state == "sealed" or .state == "open")
         and (.records | type == "number") and (.bytes | type == "number")
         and (.sha256 | test("^[0-9a-f]{64}$")) and .region == "us-east-1" and (.file | type == "string")
         and (.first_ts | type == "string") and (.last_ts | type == "string")' <<<"$output"
  # Numbered 1…n, all sealed but the last; records add up; sizes and digests are the files'.
  assert_equal "$(jq -r .segment <<<"$output" | tr '\n' ' ')" "$(seq -s ' ' 1 "$n") " "segment numbers"
  [[ $(jq -r .state <<<"$output" | sort | uniq -c | awk '{print $2 "=" $1}' | tr '\n' ' ') == "open=1 sealed=$((n - 1)) " ]]
  [[ $(jq -r .state <<<"${lines[n - 1]}") == open ]]
  [[ $(jq -s 'map(.records) | add' <<<"$output") == 32 ]]
  local line file
  for line in "${lines[@]}"; do
    file=$(jq -r .file <<<"$line")
    [[ $(jq -r .bytes <<<"$line") == "$(file_size "$file")" ]]
    [[ $(jq -r .sha256 <<<"$line") == "$(sha256sum "$file" | cut -d' ' -f1)" ]]
  done
  # first/last ts of a sealed segment are its records' extremes.
  local first last
  first=$(flk-wal cat "$(segment_path 1)" | jq -r .ts | sort | head -1)
  last=$(flk-wal cat "$(segment_path 1)" | jq -r .ts | sort | tail -1)
  [[ $(jq -r .first_ts <<<"${lines[0]}") == "$first" ]]
  [[ $(jq -r .last_ts <<<"${lines[0]}") == "$last" ]]
}

@test "ls without --json on a terminal-less stdout still prints JSON Lines; empty WAL lists nothing" {
  mkdir -p "$WAL"
  run --separate-stderr flk-wal ls --wal-dir "$WAL"
  assert_status 0
  [[ -z $output ]]
  gen_records 3 x | wal_append --keep-open >/dev/null
  run --separate-stderr flk-wal ls --wal-dir "$WAL"
  assert_status 0
  json_all '.segment == 1 and .state == "open" and .records == 3' <<<"$output"
}

@test "seal seals the open segment, prints it, and writes a sha256sum sidecar" {
  gen_records 5 s | wal_append --keep-open >/dev/null
  [[ -f $WAL/0000000000000001.open ]]
  run --separate-stderr flk-wal seal --wal-dir "$WAL" --region "$REGION"
  assert_status 0
  [[ ${#lines[@]} == 1 ]]
  json_all '.segment == 1 and .state == "sealed" and .records == 5 and (.sha256 | length == 64)' <<<"$output"
  [[ ! -e $WAL/0000000000000001.open && -f $WAL/0000000000000001.wal && -f $WAL/0000000000000001.wal.sha256 ]]
  [[ $(jq -r .sha256 <<<"$output") == "$(sha256sum "$WAL/0000000000000001.wal" | cut -d' ' -f1)" ]]
  [[ $(jq -r .first_ts <<<"$output") == "$(gen_records 5 s | jq -r .ts | sort | head -1)" ]]
  [[ $(jq -r .last_ts <<<"$output") == "$(gen_records 5 s | jq -r .ts | sort | tail -1)" ]]
  # Nothing more to seal: exit 0, no output, no new segment.
  run --separate-stderr flk-wal seal --wal-dir "$WAL" --region "$REGION"
  assert_status 0
  [[ -z $output ]]
  assert_equal "$(segment_numbers)" 1 "segments"
  # The next append starts segment 2, chained to 1.
  gen_records 1 s 6 | wal_append --keep-open >/dev/null
  assert_equal "$(segment_numbers | tr '\n' ' ')" "1 2 " "segments"
  run --separate-stderr flk-wal verify --wal-dir "$WAL"
  assert_status 0
}

@test "seal of a WAL with another region is refused" {
  gen_records 1 s | wal_append --keep-open >/dev/null
  run --separate-stderr flk-wal seal --wal-dir "$WAL" --region eu-west-1
  assert_status 64
  assert_stderr_has "$REGION" eu-west-1
  [[ -f $WAL/0000000000000001.open ]]
}

@test "append without --keep-open seals at end of input once the segment is due" {
  gen_records 3 e | wal_append --segment-age 200ms >/dev/null
  [[ -f $WAL/0000000000000001.wal && ! -e $WAL/0000000000000001.open ]]
}

@test "sha256sum -c passes on every sidecar, and verify passes" {
  gen_records 200 sum | wal_append --segment-bytes 2KiB --segment-age 50ms >/dev/null
  local n
  n=$(compgen -G "$WAL/*.wal.sha256" | wc -l)
  ((n > 5))
  [[ $n == "$(compgen -G "$WAL/*.wal" | wc -l)" ]]
  run sh -c 'cd "$1" && sha256sum --strict -c ./*.wal.sha256' sh "$WAL"
  assert_status 0
  [[ $(grep -c ': OK$' <<<"$output") == "$n" ]]
  run --separate-stderr flk-wal verify --wal-dir "$WAL"
  assert_status 0
  [[ ${#lines[@]} == "$n" ]]
  json_all '.ok == true and .state == "sealed"' <<<"$output"
}

# --- rotation ------------------------------------------------------------------------

@test "rotation by --segment-bytes: many segments, none too large, all records, contiguous" {
  gen_records 500 rot >"$BATS_TEST_TMPDIR/in.jsonl"
  run --separate-stderr wal_append --segment-bytes 2KiB --segment-age 1h --keep-open <"$BATS_TEST_TMPDIR/in.jsonl"
  assert_status 0
  [[ ${#lines[@]} == 500 ]]
  local n
  n=$(segment_numbers | wc -l)
  ((n >= 20))
  assert_contiguous
  # Only the last is open; every sealed one is at most 2 KiB.
  [[ $(compgen -G "$WAL/*.open" | wc -l) == 1 && -f $(segment_path "$n") && $(segment_path "$n") == *.open ]]
  local f
  for f in "$WAL"/*.wal; do
    (($(file_size "$f") <= 2048)) || { echo "'$f' is $(file_size "$f") bytes" >&2; return 1; }
  done
  # Acks name non-decreasing segments; within a segment, offsets rise.
  jq -r '"\(.segment) \(.offset)"' <<<"$output" |
    awk '$1 < s || ($1 == s && $2 <= o) { print "out of order at " NR; exit 1 } { s = $1; o = $2 }'
  [[ $(jq -r .segment <<<"${lines[499]}") == "$n" ]]
  # Each acknowledged record is in the segment its ack names.
  local seg
  for seg in $(seq 1 "$n"); do
    diff <(jq -r "select(.segment == $seg) | .pcs_id" <<<"$output") \
      <(flk-wal cat "$(segment_path "$seg")" | pcs_ids)
  done
  run --separate-stderr flk-wal cat --wal-dir "$WAL"
  assert_status 0
  assert_equal "$(pcs_ids <<<"$output")" "$(pcs_ids <"$BATS_TEST_TMPDIR/in.jsonl")" "records"
  run --separate-stderr flk-wal verify --wal-dir "$WAL"
  assert_status 0
}

@test "a record larger than --segment-bytes gets a segment of its own" {
  local big
  big=$(head -c 3000 /dev/zero | tr '\0' x)
  {
    min_record a
    printf '{"pcs_id":"big","tenant_id":"t","outcome":"accepted","payload":"%s"}\n' "$big"
    min_record b
  } | wal_append --segment-bytes 1KiB --segment-age 1h --keep-open >"$BATS_TEST_TMPDIR/acks"
  assert_equal "$(jq -r '"\(.pcs_id) \(.segment)"' <"$BATS_TEST_TMPDIR/acks" | tr '\n' ' ')" "a 1 big 2 b 3 " "acks"
  run --separate-stderr flk-wal verify --wal-dir "$WAL"
  assert_status 0
}

@test "rotation by --segment-age: a slow writer's first record is sealed before the second arrives" {
  (
    min_record slow-1
    sleep 2
    min_record slow-2
  ) | wal_append --segment-age 500ms >"$BATS_TEST_TMPDIR/acks" 2>"$BATS_TEST_TMPDIR/err" &
  local pid=$!
  sleep 1.3
  # Half-way through the pause: segment 1 is sealed (with its sidecar) and nothing is open.
  local sealed_early=no
  [[ -f $WAL/0000000000000001.wal && -f $WAL/0000000000000001.wal.sha256 && ! -e $WAL/0000000000000001.open ]] &&
    sealed_early=yes
  wait "$pid"
  [[ $sealed_early == yes ]] || { ls -l "$WAL" >&2; cat "$BATS_TEST_TMPDIR/err" >&2; return 1; }
  assert_equal "$(jq -r '"\(.pcs_id) \(.segment)"' <"$BATS_TEST_TMPDIR/acks" | tr '\n' ' ')" "slow-1 1 slow-2 2 " "acks"
  # At end of input the second is sealed too.
  [[ -f $WAL/0000000000000002.wal && ! -e $WAL/0000000000000002.open ]]
  [[ $(flk-wal cat "$WAL/0000000000000001.wal" | pcs_ids) == slow-1 ]]
  run --separate-stderr flk-wal verify --wal-dir "$WAL"
  assert_status 0
}

@test "-v reports sealed segments on stderr; -q keeps stderr quiet" {
  run --separate-stderr flk-wal -v append --wal-dir "$WAL" --region "$REGION" --segment-age 10ms < <(gen_records 2 v)
  assert_status 0
  assert_stderr_has sealed '"segment":1'
  run --separate-stderr flk-wal -q append --wal-dir "$WAL" --region "$REGION" --segment-age 10ms < <(gen_records 2 q 3)
  assert_status 0
  [[ -z $stderr ]]
}

# --- bad input -----------------------------------------------------------------------
#
# Two good records, the bad one on line 3, then a good one that must not be reached.
# Exit 65; stderr names line 3 and the field; both good records are acknowledged and
# readable; the bad line (and what follows) wrote nothing.

bad_input() {
  local bad=$1
  shift
  {
    gen_records 2 good
    printf '%s\n' "$bad"
    gen_records 1 after 3
  } >"$BATS_TEST_TMPDIR/in.jsonl"
  run --separate-stderr wal_append --keep-open <"$BATS_TEST_TMPDIR/in.jsonl"
  assert_status 65
  assert_error_line
  assert_stderr_has "line 3" "$@"
  # Both records before the bad line are acknowledged, and only they.
  [[ ${#lines[@]} == 2 ]]
  assert_acks "${lines[@]}"
  assert_equal "$(pcs_ids <<<"$output" | tr '\n' ' ')" "good-000001 good-000002 " "acknowledged"
  # The open segment ends right after the second record: the bad line wrote nothing.
  local end
  end=$(flk-wal ls --wal-dir "$WAL" --json | jq -r .bytes)
  [[ $end == "$(file_size "$WAL/0000000000000001.open")" ]]
  (($(jq -r .offset <<<"${lines[1]}") < end))
  # Readable by cat, exactly as given.
  run --separate-stderr flk-wal cat --wal-dir "$WAL"
  assert_status 0
  assert_equal "$(jq -cS . <<<"$output")" "$(gen_records 2 good | jq -cS .)" "records read back"
  run --separate-stderr flk-wal verify --wal-dir "$WAL"
  assert_status 0
  # The next run appends after them.
  run --separate-stderr wal_append --keep-open < <(gen_records 1 next 4)
  assert_status 0
  [[ $(flk-wal cat --wal-dir "$WAL" | pcs_ids | tr '\n' ' ') == "good-000001 good-000002 next-000004 " ]]
}

@test "bad input: malformed JSON" {
  bad_input '{"pcs_id":"x","tenant_id":"t","outcome":' "malformed JSON"
}

@test "bad input: a field given twice" {
  bad_input '{"pcs_id":"x","tenant_id":"t","outcome":"accepted","outcome":"rejected"}' "field 'outcome'"
}

@test "bad input: not an object" {
  bad_input '["pcs_id","x"]' "object"
}

@test "bad input: missing field" {
  bad_input '{"pcs_id":"x","outcome":"accepted"}' "field 'tenant_id'" missing
}

@test "bad input: missing pcs_id" {
  bad_input '{"tenant_id":"t","outcome":"accepted"}' "field 'pcs_id'" missing
}

@test "bad input: unknown field" {
  bad_input '{"pcs_id":"x","tenant_id":"t","outcome":"accepted","colour":"red"}' "field 'colour'" unknown
}

@test "bad input: unknown outcome" {
  bad_input '{"pcs_id":"x","tenant_id":"t","outcome":"maybe"}' "field 'outcome'" maybe
}

@test "bad input: wrong type" {
  bad_input '{"pcs_id":42,"tenant_id":"t","outcome":"accepted"}' "field 'pcs_id'" string
}

@test "bad input: bad ts (no such date)" {
  bad_input '{"pcs_id":"x","tenant_id":"t","outcome":"accepted","ts":"2026-02-30T00:00:00Z"}' "field 'ts'" 2026-02-30
}

@test "bad input: bad ts (no time zone)" {
  bad_input '{"pcs_id":"x","tenant_id":"t","outcome":"accepted","ts":"2026-11-26T08:00:00"}' "field 'ts'"
}

@test "bad input: bad ts (ten fraction digits)" {
  bad_input '{"pcs_id":"x","tenant_id":"t","outcome":"accepted","ts":"2026-11-26T08:00:00.1234567891Z"}' "field 'ts'"
}

@test "bad input: oversized pcs_id (256 bytes)" {
  local id
  id=$(head -c 256 /dev/zero | tr '\0' a)
  bad_input "{\"pcs_id\":\"$id\",\"tenant_id\":\"t\",\"outcome\":\"accepted\"}" "field 'pcs_id'" 255
}

@test "a pcs_id of exactly 255 bytes is accepted" {
  local id
  id=$(head -c 255 /dev/zero | tr '\0' a)
  run --separate-stderr wal_append --keep-open < <(min_record "$id")
  assert_status 0
  [[ $(flk-wal cat --wal-dir "$WAL" | pcs_ids) == "$id" ]]
}

@test "bad input: empty pcs_id" {
  bad_input '{"pcs_id":"","tenant_id":"t","outcome":"accepted"}' "field 'pcs_id'"
}

@test "bad input: control character in pcs_id" {
  bad_input '{"pcs_id":"a\u0007b","tenant_id":"t","outcome":"accepted"}' "field 'pcs_id'"
}

@test "bad input: invalid UTF-8" {
  bad_input $'{"pcs_id":"x","tenant_id":"t\xff\xfe","outcome":"accepted"}' "UTF-8"
}

@test "bad input: tenant_id of 256 bytes (128 two-byte characters)" {
  local t
  t=$(printf 'é%.0s' $(seq 128))
  bad_input "{\"pcs_id\":\"x\",\"tenant_id\":\"$t\",\"outcome\":\"accepted\"}" "field 'tenant_id'" 255
}

@test "bad input: control character in tenant_id" {
  bad_input '{"pcs_id":"x","tenant_id":"a\nb","outcome":"accepted"}' "field 'tenant_id'"
}

@test "bad input: bad region name" {
  bad_input '{"pcs_id":"x","tenant_id":"t","outcome":"accepted","region":"US_East-1"}' "field 'region'" US_East-1
}

@test "bad input: region differing from --region" {
  bad_input '{"pcs_id":"x","tenant_id":"t","outcome":"accepted","region":"eu-west-1"}' "field 'region'" eu-west-1 "$REGION"
}

@test "bad input: payload over 1 MiB" {
  local big
  big=$(head -c $((1024 * 1024 + 10)) /dev/zero | tr '\0' x)
  bad_input "{\"pcs_id\":\"x\",\"tenant_id\":\"t\",\"outcome\":\"accepted\",\"payload\":\"$big\"}" "field 'payload'"
}

@test "bad input on the first line writes nothing at all" {
  run --separate-stderr wal_append --keep-open <<<'{"pcs_id":"x"'
  assert_status 65
  assert_stderr_has "line 1"
  [[ -z $output ]]
  run --separate-stderr flk-wal cat --wal-dir "$WAL"
  assert_status 0
  [[ -z $output ]]
}

@test "bad input after a pause: the earlier batch stays acknowledged and durable" {
  run --separate-stderr wal_append --keep-open < <(
    gen_records 3 early
    sleep 0.3
    echo '{"pcs_id":"x","tenant_id":"t","outcome":"later"}'
  )
  assert_status 65
  assert_stderr_has "line 4" "field 'outcome'"
  [[ ${#lines[@]} == 3 ]]
  [[ $(flk-wal cat --wal-dir "$WAL" | pcs_ids | tr '\n' ' ') == "early-000001 early-000002 early-000003 " ]]
}
