#!/usr/bin/env bats
# flk-diverge (DESIGN.md §1, §5): divergence between regions' dedup stores, found by a
# streaming merge of the stores, logged to the WORM ledger, reconciled by first write
# wins — on real deployments (deploy_helpers: WAL, SQLite store, mailbox, flk-serve with
# tokens per region, on loopback), with a real split-brain: the link between the regions
# cut (their endpoints point at a closed port), both writing the same pcs_ids.

load deploy_helpers

setup() {
  read_setup
}

teardown() {
  read_teardown
}

# dv R ARGS…: flk-diverge with R's configuration (bats run).
dv() {
  local r=$1
  shift
  run --separate-stderr flk-diverge --config "$(cfg_of "$r")" "$@"
}

# stores_of R…: --store R=URL for each region.
stores_of() {
  local r
  for r in "$@"; do printf -- '--store\n%s=%s\n' "$r" "$(store_of "$r")"; done
}

# cut_link R: R's endpoints point at a closed port (its shipper cannot reach a peer).
cut_link() {
  local port
  port=$(closed_port)
  sed -i "s|url: \"http://127.0.0.1:[0-9]*\"|url: \"http://127.0.0.1:$port\"|" "$(cfg_of "$1")"
}
heal_link() { region_config "$1"; }

# kinds: "KIND PCS_ID" of the scan output, sorted.
kinds() { jq -r '"\(.kind) \(.pcs_id)"' <<<"$output" | sort; }

# content_of URL: the content digest of a store: the body_sha256 in the header of its
# digest (written to stdout), checked against the SHA-256 of the body itself as
# `sed 1d | sha256sum` gives it (what scripts/demo.sh and the drills compare).
content_of() {
  local f want got
  f=$(mktemp "$BATS_TEST_TMPDIR/content.XXXXXX")
  flk-diverge digest --store "$1" >"$f"
  want=$(head -1 "$f" | jq -r .body_sha256)
  got=$(sed 1d "$f" | sha256sum | cut -c1-64)
  [[ $want =~ ^[0-9a-f]{64}$ && $want == "$got" ]] ||
    { echo "content_of $1: the header says body_sha256 '$want', the body's is '$got'" >&2; return 1; }
  echo "$want"
}

# header_bytes FILE: the length of a digest's header line, with its newline.
header_bytes() { head -1 "$1" | wc -c; }

# to_v1 FILE: a version 2 digest rewritten in version 1 (text), as earlier flk-diverge
# wrote it: the header without the body fields, then "BUCKET COUNT SUM" per non-empty
# bucket. Only for counts below 128 (one-byte varints).
to_v1() {
  head -1 "$1" | jq -c '.version = 1 | del(.body_bytes, .body_sha256)'
  tail -c +$(($(header_bytes "$1") + 1)) "$1" | od -An -v -tu1 | tr -s ' ' '\n' | sed '/^$/d' | awk '
    n == 0 && $1 >= 128 { print "to_v1: a count of 128 or more" > "/dev/stderr"; exit 1 }
    n == 0 && $1 == 0 { b++; next }
    n == 0 { count = $1; n = 16; sum = ""; next }
    { sum = sum sprintf("%02x", $1); if (--n == 0) print b++, count, sum }
    END { if (n) { print "to_v1: the body ends in a sum" > "/dev/stderr"; exit 1 } }'
}

@test "split-brain: scan finds exactly the conflicting and the missing pcs_ids, reconcile converges, replay changes nothing, the ledger verifies" {
  deploy $EAST $WEST
  write_in $EAST 100 east
  write_in $WEST 100 west
  ship_all
  read_all
  local worm=$BATS_TEST_TMPDIR/worm.jsonl
  mapfile -t S < <(stores_of $EAST $WEST)
  dv $EAST scan "${S[@]}" --worm "$worm"
  assert_status 0
  assert_equal "$output" "" "findings before the partition"

  # The partition: both regions accept writes for the same pcs_ids, with other outcomes.
  cut_link $EAST
  cut_link $WEST
  shared_in $EAST 30
  shared_in $WEST 30
  write_in $EAST 20 parted 1001
  run --separate-stderr flk-ship --config "$(cfg_of $EAST)" --once --deadline 1s
  assert_status 75

  dv $EAST scan "${S[@]}" --worm "$worm" --metrics-file "$BATS_TEST_TMPDIR/dv.prom"
  assert_status 1
  local expected
  expected=$( (for i in $(seq 1 30); do printf 'conflict shared-%06d\n' "$i"; done
    for i in $(seq 1001 1020); do printf 'missing parted-%06d\n' "$i"; done) | sort)
  assert_equal "$(kinds)" "$expected" "findings"
  jq -e -s 'map(select(.kind == "missing") | .regions["us-west-2"] == null) | all' <<<"$output"
  jq -e -s 'map(select(.kind == "conflict") | .regions["us-east-1"].outcome == "accepted" and .regions["us-west-2"].outcome == "rejected") | all' <<<"$output"
  grep -qx 'flk_crr_divergence_count{kind="conflict"} 30' "$BATS_TEST_TMPDIR/dv.prom"
  grep -qx 'flk_crr_divergence_count{kind="missing"} 20' "$BATS_TEST_TMPDIR/dv.prom"
  assert_equal "$(wc -l <"$worm")" 50 "ledger lines after the first scan"

  # Scanning again logs nothing new.
  dv $EAST scan "${S[@]}" --worm "$worm"
  assert_status 1
  assert_equal "$(wc -l <"$worm")" 50 "ledger lines after a second scan"

  # The dry run plans and changes nothing; --apply converges.
  dv $EAST reconcile "${S[@]}" --worm "$worm"
  assert_status 1
  assert_equal "$(jq -s length <<<"$output")" 50 "plans"
  jq -e -s 'map(select(.pcs_id | startswith("parted")) | .regions["us-west-2"] == "install" and .regions["us-east-1"] == "keep") | all' <<<"$output"
  dv $EAST scan "${S[@]}" --no-worm
  assert_status 1
  dv $EAST reconcile "${S[@]}" --worm "$worm" --apply
  assert_status 0
  dv $EAST scan "${S[@]}" --worm "$worm"
  assert_status 0
  assert_equal "$output" "" "findings after reconcile"

  # The winners are the first writes by (ts, region) of DESIGN.md §1: what a rebuild of
  # every WAL decides, once the link is back and everything is shipped and replayed —
  # which changes nothing further.
  local before
  before=$(flk-diverge digest --store "$(store_of $WEST)" | sha256sum)
  heal_link $EAST
  heal_link $WEST
  ship_all
  read_all
  dv $EAST scan "${S[@]}" --worm "$worm"
  assert_status 0
  local west east
  west=$(content_of "$(store_of $WEST)")
  east=$(content_of "$(store_of $EAST)")
  assert_equal "$west" "$east" "content digests of the two stores"
  verify_all

  dv $EAST verify-log "$worm"
  assert_status 0
  jq -e '.ok == true and .lines == 100' <<<"$output"
}

@test "missing rows: found in the region that lost them, and flk-rebuild-dedup puts them back" {
  deploy $EAST $WEST
  write_in $EAST 200 east
  write_in $WEST 100 west
  ship_all
  read_all
  mapfile -t S < <(stores_of $EAST $WEST)
  sqlite3 "$(rdir $WEST)/dedup.db" "DELETE FROM records WHERE pcs_id IN ('east-000007','east-000150','west-000042')"
  dv $EAST scan "${S[@]}" --no-worm
  assert_status 1
  assert_equal "$(kinds)" "missing east-000007
missing east-000150
missing west-000042" "findings"
  run --separate-stderr flk-rebuild-dedup --config "$(cfg_of $WEST)"
  assert_status 0
  dv $EAST scan "${S[@]}" --no-worm
  assert_status 0
}

@test "selective replication: a tenant not routed to a region is not missing there; one that is, is" {
  deploy $EAST $WEST $EU
  write_in $EAST 100 east
  # A selective configuration: tenant-1 goes to us-west-2 only, tenant-2 everywhere.
  local cfg=$BATS_TEST_TMPDIR/selective.yaml
  printf 'region: %s\ncrr:\n  enabled: true\n  replicationMode: selective\n  policies:\n' $EAST >"$cfg"
  printf '    - {tenantID: tenant-1, targetRegions: [%s]}\n    - {tenantID: tenant-2, targetRegions: [%s, %s]}\n' \
    $WEST $WEST $EU >>"$cfg"
  # Only tenant-1 and tenant-2 records reach us-west-2, only tenant-2 reaches eu-west-1.
  flk-wal cat --wal-dir "$(wal_of $EAST)" | jq -c 'select(.tenant_id == "tenant-1" or .tenant_id == "tenant-2")' \
    >"$BATS_TEST_TMPDIR/west.jsonl"
  jq -c 'select(.tenant_id == "tenant-2")' "$BATS_TEST_TMPDIR/west.jsonl" >"$BATS_TEST_TMPDIR/eu.jsonl"
  flk-wal append --wal-dir "$BATS_TEST_TMPDIR/west-in" --region $EAST <"$BATS_TEST_TMPDIR/west.jsonl" >/dev/null
  flk-wal append --wal-dir "$BATS_TEST_TMPDIR/eu-in" --region $EAST <"$BATS_TEST_TMPDIR/eu.jsonl" >/dev/null
  flk-rebuild-dedup --region $EAST --wal-dir "$BATS_TEST_TMPDIR/west-in" --store "$(store_of $WEST)" --in-place --no-mailbox -q >/dev/null
  flk-rebuild-dedup --region $EAST --wal-dir "$BATS_TEST_TMPDIR/eu-in" --store "$(store_of $EU)" --in-place --no-mailbox -q >/dev/null
  run --separate-stderr flk-diverge --config "$cfg" scan --no-worm $(stores_of $EAST $WEST $EU)
  assert_status 0
  # Without the policies every tenant is expected everywhere: many "missing".
  dv $EAST scan --no-worm $(stores_of $EAST $WEST $EU)
  assert_status 1
  assert_equal "$(jq -r .kind <<<"$output" | sort -u)" missing "kinds without policies"
  assert_equal "$(jq -s length <<<"$output")" 80 "pcs_ids of tenants 0, 3, 4 (missing in two regions) and 1 (missing in eu-west-1)"
  # A routed tenant's record lost in us-west-2 is missing there.
  sqlite3 "$(rdir $WEST)/dedup.db" "DELETE FROM records WHERE pcs_id = 'east-000006'"
  run --separate-stderr flk-diverge --config "$cfg" scan --no-worm $(stores_of $EAST $WEST $EU)
  assert_status 1
  assert_equal "$(kinds)" "missing east-000006" "findings with policies"
}

@test "digest and compare: 1,000,000 records, 10 planted conflicts: the differing buckets hold all 10, scan --buckets finds exactly them" {
  local n=${FLK_TEST_DIVERGE_RECORDS:-1000000} d=$BATS_TEST_TMPDIR
  mkdir -p "$d/a" "$d/b"
  REGION=$EAST gen_records "$n" big | flk-wal append --wal-dir "$d/wal" --region $EAST --segment-bytes 64MiB >/dev/null
  flk-rebuild-dedup --region $EAST --wal-dir "$d/wal" --store "sqlite://$d/a/dedup.db" --no-mailbox -q >/dev/null
  cp "$d/a/dedup.db" "$d/b/dedup.db"
  # 10 earlier writes with another outcome (gen_records gives i % 3 == 0 "accepted"), in
  # region B only: conflicts that win there.
  local ids=() i
  for i in 9 1236 99999 123456 250002 500001 654321 777777 888888 999999; do ids+=("$(printf 'big-%06d' "$i")"); done
  for i in "${ids[@]}"; do
    printf '{"pcs_id":"%s","tenant_id":"tenant-0","outcome":"escalated","ts":"2026-11-25T00:00:00Z","region":"%s"}\n' "$i" $WEST
  done | flk-wal append --wal-dir "$d/planted" --region $WEST >/dev/null
  flk-rebuild-dedup --region $WEST --wal-dir "$d/planted" --store "sqlite://$d/b/dedup.db" --in-place --no-mailbox -q >/dev/null

  flk-diverge digest --store "sqlite://$d/a/dedup.db" --region $EAST --output "$d/a.digest"
  flk-diverge digest --store "sqlite://$d/b/dedup.db" --region $WEST --output "$d/b.digest"
  jq -e --argjson n "$n" '.format == "flk-diverge-digest" and .version == 2 and .records == $n and .buckets == 65536' <<<"$(head -1 "$d/a.digest")"
  # Format 2: the body is body_bytes long, at most 17 bytes a bucket (counts below 128).
  local body
  body=$(head -1 "$d/a.digest" | jq .body_bytes)
  assert_equal $(($(header_bytes "$d/a.digest") + body)) "$(stat -c %s "$d/a.digest")" "header + body_bytes"
  ((body <= 17 * 65536 && body >= 65536))
  run --separate-stderr flk-diverge compare "$d/a.digest" "$d/b.digest"
  assert_status 1
  printf '%s\n' "$output" >"$d/buckets"
  local nb
  nb=$(wc -l <"$d/buckets")
  ((nb >= 1 && nb <= 10))
  # A digest is about a megabyte, a fraction of the stores'.
  local dsize ssize
  dsize=$(stat -c %s "$d/a.digest") ssize=$(stat -c %s "$d/a/dedup.db")
  ((dsize * 100 < ssize))

  # One digest against the other store (what a region does with a peer's digest): the
  # same buckets, and the same counts.
  run --separate-stderr flk-diverge compare "$d/a.digest" --store "sqlite://$d/b/dedup.db"
  assert_status 1
  assert_equal "$output" "$(cat "$d/buckets")" "compare --store's buckets (expected: compare of the two digests')"
  # The digest on standard input ('-'), as from ssh PEER flk-diverge digest: the same.
  run --separate-stderr bash -c "flk-diverge compare - --store 'sqlite://$d/b/dedup.db' <'$d/a.digest'"
  assert_status 1
  assert_equal "$output" "$(cat "$d/buckets")" "compare - --store"
  run --separate-stderr bash -c "cat '$d/a.digest' | flk-diverge compare - '$d/b.digest'"
  assert_status 1
  assert_equal "$output" "$(cat "$d/buckets")" "compare - FILE from a pipe"
  run --separate-stderr flk-diverge compare - - </dev/null
  assert_status 64
  # The other way round too, with another bucket count: the digest's is used.
  flk-diverge digest --store "sqlite://$d/b/dedup.db" --buckets 4096 --output "$d/b4096.digest"
  run --separate-stderr flk-diverge compare "$d/b4096.digest" --store "sqlite://$d/a/dedup.db"
  assert_status 1
  printf '%s\n' "$output" >"$d/buckets4096"
  jq -e -s 'length >= 1 and length <= 10 and all(.buckets == 4096 and .a_count == .b_count)' "$d/buckets4096"
  run --separate-stderr flk-diverge scan --no-worm --store "$EAST=sqlite://$d/a/dedup.db" \
    --store "$WEST=sqlite://$d/b/dedup.db" --buckets "@$d/buckets4096" --bucket-count 4096
  assert_status 1
  assert_equal "$(kinds)" "$(printf 'conflict %s\n' "${ids[@]}" | sort)" "findings in the buckets of compare --store"

  run --separate-stderr flk-diverge scan --no-worm --store "$EAST=sqlite://$d/a/dedup.db" \
    --store "$WEST=sqlite://$d/b/dedup.db" --buckets "@$d/buckets"
  assert_status 1
  assert_equal "$(kinds)" "$(printf 'conflict %s\n' "${ids[@]}" | sort)" "findings in the differing buckets"

  # Over a WAN: B extracts its rows of those buckets (winners and evidence) into a store
  # file of its own, A scans and plans with it — the same findings and the same plan as
  # with B's store itself; the file is a fraction of the store and appears whole.
  run --separate-stderr flk-diverge extract --store "sqlite://$d/b/dedup.db" --buckets "@$d/buckets" \
    --output "$d/b.extract"
  assert_status 0
  local want_records xsize
  want_records=$(jq -s 'map(.b_count) | add' "$d/buckets")
  xsize=$(stat -c %s "$d/b.extract")
  jq -e --argjson r "$want_records" --argjson nb "$nb" --argjson bytes "$xsize" \
    '.records == $r and .evidence == 20 and .buckets == $nb and .bucket_count == 65536 and .bytes == $bytes' <<<"$output"
  ((xsize * 100 < ssize))
  assert_equal "$(find "$d" -maxdepth 1 -name '.b.extract*')" "" "temporary files left by extract"
  run --separate-stderr flk-diverge scan --no-worm --store "$EAST=sqlite://$d/a/dedup.db" \
    --store "$WEST=sqlite://$d/b.extract" --buckets "@$d/buckets"
  assert_status 1
  assert_equal "$(kinds)" "$(printf 'conflict %s\n' "${ids[@]}" | sort)" "findings against the extract"
  local plan_store
  run --separate-stderr flk-diverge reconcile --no-worm --store "$EAST=sqlite://$d/a/dedup.db" \
    --store "$WEST=sqlite://$d/b/dedup.db" --buckets "@$d/buckets"
  assert_status 1
  plan_store=$output
  [ "$(wc -l <<<"$plan_store")" = 10 ]
  run --separate-stderr flk-diverge reconcile --no-worm --store "$EAST=sqlite://$d/a/dedup.db" \
    --store "$WEST=sqlite://$d/b.extract" --buckets "@$d/buckets"
  assert_status 1
  assert_equal "$(sed "s|$d/b.extract|STORE|g" <<<"$output")" "$(sed "s|$d/b/dedup.db|STORE|g" <<<"$plan_store")" \
    "reconcile's plan with the extract (expected: with the store)"
  # Compared over other buckets, or all, an extract would make every pcs_id it does not
  # hold missing: refused.
  run --separate-stderr flk-diverge scan --no-worm --store "$EAST=sqlite://$d/a/dedup.db" \
    --store "$WEST=sqlite://$d/b.extract"
  assert_status 64
  assert_equal "$stderr" "flk-diverge: error: region '$WEST': store 'sqlite://$d/b.extract' is an extract of $nb buckets (of 65536): compare it only over those, with --buckets (the list it was made from) and --bucket-count 65536"
  run --separate-stderr flk-diverge reconcile --apply --no-worm --store "$EAST=sqlite://$d/a/dedup.db" \
    --store "$WEST=sqlite://$d/b.extract" --buckets "@$d/buckets4096" --bucket-count 4096
  assert_status 64
  [[ $stderr == *"is an extract of $nb buckets"* ]]

  # Never over an existing file; the list must be of the bucket count given.
  run --separate-stderr flk-diverge extract --store "sqlite://$d/b/dedup.db" --buckets "@$d/buckets" \
    --output "$d/b.extract"
  assert_status 73
  assert_equal "$stderr" "flk-diverge: error: cannot create extract '$d/b.extract': '$d/b.extract' exists (remove it, or name another file)"
  assert_equal "$(stat -c %s "$d/b.extract")" "$xsize" "the extract after a refused second one"
  run --separate-stderr flk-diverge extract --store "sqlite://$d/b/dedup.db" --buckets "@$d/buckets4096" \
    --output "$d/c.extract"
  assert_status 64
  [[ $stderr == *"made with 4096 buckets, not 65536"* ]]
  [ ! -e "$d/c.extract" ]
  run --separate-stderr flk-diverge extract --store "sqlite://$d/b/dedup.db" --buckets 1,65536 --output "$d/c.extract"
  assert_status 64
  assert_equal "$stderr" "flk-diverge: error: --buckets: '65536' is not a bucket number below 65536"
  [ ! -e "$d/c.extract" ]
  # Where no file can be made (the directory is a file): 73, nothing left behind.
  run --separate-stderr flk-diverge extract --store "sqlite://$d/b/dedup.db" --buckets "@$d/buckets" \
    --output "$d/b.extract/c.extract"
  assert_status 73
  assert_equal "$stderr" "flk-diverge: error: cannot create directory '$d/b.extract': Not a directory"
  assert_equal "$(stat -c %s "$d/b.extract")" "$xsize" "the extract after a refused one beneath it"
  assert_equal "$(find "$d" -maxdepth 1 -name '.*extract*')" "" "temporary files left by a refused extract"

  # Equal stores: equal digests, compare exits 0.
  flk-diverge digest --store "sqlite://$d/a/dedup.db" --region $EAST --output "$d/a2.digest"
  run flk-diverge compare "$d/a.digest" "$d/a2.digest"
  assert_status 0
  run --separate-stderr flk-diverge compare "$d/a.digest" --store "sqlite://$d/a/dedup.db"
  assert_status 0
  assert_equal "$output" "" "compare --store of a store with its own digest"
}

@test "digest format 2: header and body agree, stdout works, version 1 is still read, a damaged digest exits 65 naming it" {
  local d=$BATS_TEST_TMPDIR s
  s="sqlite://$d/s.db"
  REGION=$EAST gen_records 3000 x | flk-wal append --wal-dir "$d/wal" --region $EAST >/dev/null
  flk-rebuild-dedup --region $EAST --wal-dir "$d/wal" --store "$s" --no-mailbox -q >/dev/null
  flk-diverge digest --store "$s" --buckets 256 --region $EAST --output "$d/a.digest"
  local header hlen size
  header=$(head -1 "$d/a.digest") hlen=$(header_bytes "$d/a.digest") size=$(stat -c %s "$d/a.digest")
  jq -e --arg s "$s" '.version == 2 and .buckets == 256 and .records == 3000 and .region == "us-east-1" and .store == $s' <<<"$header"
  assert_equal "$(jq .body_bytes <<<"$header")" $((size - hlen)) "body_bytes"
  assert_equal "$(jq -r .body_sha256 <<<"$header")" "$(tail -c +$((hlen + 1)) "$d/a.digest" | sha256sum | cut -c1-64)" "body_sha256"
  # 256 buckets of about 12 pcs_ids: none empty, 17 bytes each.
  assert_equal $((size - hlen)) $((256 * 17)) "body size"

  # To stdout: the same body.
  flk-diverge digest --store "$s" --buckets 256 >"$d/stdout.digest"
  cmp <(sed 1d "$d/a.digest") <(sed 1d "$d/stdout.digest")
  run --separate-stderr flk-diverge compare "$d/a.digest" "$d/stdout.digest"
  assert_status 0

  # Version 1 (text), as earlier versions wrote it: read, equal to version 2 and to the store.
  to_v1 "$d/a.digest" >"$d/v1.digest"
  assert_equal "$(wc -l <"$d/v1.digest")" 257 "lines of the version 1 digest"
  run --separate-stderr flk-diverge compare "$d/v1.digest" "$d/a.digest"
  assert_status 0
  run --separate-stderr flk-diverge compare "$d/v1.digest" --store "$s"
  assert_status 0
  # … and a difference in it is one: a count changed in bucket 9.
  sed -i '11s/^9 \([0-9]*\) /9 1\1 /' "$d/v1.digest"
  run --separate-stderr flk-diverge compare "$d/v1.digest" --store "$s"
  assert_status 1
  jq -e '.bucket == 9 and .a_count == ("1\(.b_count)" | tonumber)' <<<"$output"

  # Damage: cut short, bytes added, one byte altered (in a count, in a sum).
  local bad=$d/bad.digest body=$((size - hlen))
  head -c -1 "$d/a.digest" >"$bad"
  run --separate-stderr flk-diverge compare "$bad" "$d/a.digest"
  assert_status 65
  assert_stderr_has "flk-diverge: error: digest '$bad': body is $((body - 1)) bytes, the header says $body"
  { cat "$d/a.digest"; printf '\n'; } >"$bad"
  run --separate-stderr flk-diverge compare "$d/a.digest" "$bad"
  assert_status 65
  assert_stderr_has "flk-diverge: error: digest '$bad': body is $((body + 1)) bytes, the header says $body"
  local at byte
  for at in 0 $((17 * 100 + 5)) $((body - 1)); do
    cp "$d/a.digest" "$bad"
    byte=$(od -An -tu1 -j $((hlen + at)) -N1 "$bad" | tr -d ' ')
    printf "\\$(printf %03o $((byte ^ 4)))" | dd of="$bad" bs=1 seek=$((hlen + at)) conv=notrunc status=none
    run cmp -s "$bad" "$d/a.digest"
    assert_status 1
    run --separate-stderr flk-diverge compare "$bad" --store "$s"
    assert_status 65
    assert_stderr_has "flk-diverge: error: digest '$bad': the body's SHA-256 is "
  done
  # The header edited: another bucket count (the body no longer fits it).
  { head -1 "$d/a.digest" | jq -c '.buckets = 255'; sed 1d "$d/a.digest"; } >"$bad"
  run --separate-stderr flk-diverge compare "$bad" --store "$s"
  assert_status 65
  assert_stderr_has "flk-diverge: error: digest '$bad': the body has 17 bytes after the last bucket"

  # compare takes two digests, or one and --store.
  run --separate-stderr flk-diverge compare "$d/a.digest"
  assert_status 64
  assert_stderr_has "flk-diverge: error: " "--store"
  run --separate-stderr flk-diverge compare "$d/a.digest" "$d/a.digest" --store "$s"
  assert_status 64
}

@test "the ledger: an edited, deleted, reordered or truncated line fails verify-log (65) naming it" {
  deploy $EAST $WEST
  write_in $EAST 50 east
  shared_in $EAST 12
  shared_in $WEST 12
  local worm=$BATS_TEST_TMPDIR/worm.jsonl
  dv $EAST scan --worm "$worm" $(stores_of $EAST $WEST)
  assert_status 1
  assert_equal "$(wc -l <"$worm")" 62 "ledger lines"
  dv $EAST verify-log "$worm"
  assert_status 0
  local head
  head=$(jq -r .head <<<"$output")

  local bad=$BATS_TEST_TMPDIR/bad.jsonl
  sed '5s/"event":"divergence"/"event":"divergencE"/' "$worm" >"$bad"
  dv $EAST verify-log "$bad"
  assert_status 65
  assert_stderr_has "flk-diverge: error: ledger '$bad': line 6"
  sed '10d' "$worm" >"$bad"
  dv $EAST verify-log "$bad"
  assert_status 65
  assert_stderr_has "line 10"
  awk 'NR == 4 { held = $0; next } NR == 5 { print; print held; next } { print }' "$worm" >"$bad"
  dv $EAST verify-log "$bad"
  assert_status 65
  assert_stderr_has "line 4"
  head -c -20 "$worm" >"$bad"
  dv $EAST verify-log "$bad"
  assert_status 65
  assert_stderr_has "line 62"
  # Whole lines cut from the end: only a head kept elsewhere tells.
  head -n 60 "$worm" >"$bad"
  dv $EAST verify-log "$bad"
  assert_status 0
  dv $EAST verify-log "$bad" --head "$head"
  assert_status 65
  dv $EAST verify-log "$worm" --head "$head"
  assert_status 0
}

@test "the ledger: two scans appending at once, many times, keep one chain" {
  deploy $EAST $WEST $EU
  shared_in $EAST 40
  shared_in $WEST 40
  shared_in $EU 40
  local worm=$BATS_TEST_TMPDIR/worm.jsonl i p1 p2 p3
  for i in $(seq 1 6); do
    flk-diverge --config "$(cfg_of $EAST)" scan --worm "$worm" $(stores_of $EAST $WEST) >/dev/null &
    p1=$!
    flk-diverge --config "$(cfg_of $EAST)" scan --worm "$worm" $(stores_of $EAST $EU) >/dev/null &
    p2=$!
    flk-diverge --config "$(cfg_of $EAST)" scan --worm "$worm" $(stores_of $WEST $EU) >/dev/null &
    p3=$!
    wait $p1 $p2 $p3 || true # each exits 1: divergences found
  done
  dv $EAST verify-log "$worm"
  assert_status 0
  ((${#output} > 0))
  jq -e '.lines >= 80' <<<"$output"
}

@test "stores on SQLite, PostgreSQL and Redis compare by content: equal digests, one planted difference found" {
  [[ -n ${FLK_TEST_SERVERS-} ]] || skip "FLK_TEST_SERVERS is unset: no PostgreSQL or Redis (CTest's servers fixture)"
  local d=$BATS_TEST_TMPDIR pg rd
  REGION=$EAST gen_records 3000 x | flk-wal append --wal-dir "$d/wal" --region $EAST >/dev/null
  pg=$(backend_url postgres) rd=$(backend_url redis)
  local url
  for url in "sqlite://$d/s.db" "$pg" "$rd"; do
    flk-rebuild-dedup --region $EAST --wal-dir "$d/wal" --store "$url" --no-mailbox -q >/dev/null
  done
  local c_sqlite c_pg c_rd
  c_sqlite=$(content_of "sqlite://$d/s.db")
  c_pg=$(content_of "$pg")
  c_rd=$(content_of "$rd")
  assert_equal "$c_pg" "$c_sqlite" "PostgreSQL's content digest"
  assert_equal "$c_rd" "$c_sqlite" "Redis's content digest"
  flk-diverge digest --store "$pg" --output "$d/pg.digest"
  run --separate-stderr flk-diverge compare "$d/pg.digest" --store "$rd"
  assert_status 0
  run --separate-stderr flk-diverge scan --no-worm --store "a=sqlite://$d/s.db" --store "b=$pg" --store "c=$rd"
  assert_status 0
  printf '{"pcs_id":"x-000777","tenant_id":"t","outcome":"rejected","ts":"2026-11-20T00:00:00Z","region":"%s"}\n' $WEST |
    flk-wal append --wal-dir "$d/p" --region $WEST >/dev/null
  flk-rebuild-dedup --region $WEST --wal-dir "$d/p" --store "$rd" --in-place --no-mailbox -q >/dev/null
  run --separate-stderr flk-diverge scan --no-worm --store "a=sqlite://$d/s.db" --store "b=$pg" --store "c=$rd"
  assert_status 1
  assert_equal "$(kinds)" "conflict x-000777" "findings"
  jq -e '.regions.c.outcome == "rejected" and .regions.a.outcome == .regions.b.outcome' <<<"$output"
}

@test "usage and input errors: one store, a bad --store, a bad bucket list, a bad digest, no ledger" {
  deploy $EAST $WEST
  dv $EAST scan --store "$EAST=$(store_of $EAST)"
  assert_status 64
  assert_stderr_has "at least two regions"
  dv $EAST scan --store nonsense --store "$WEST=$(store_of $WEST)"
  assert_status 64
  assert_stderr_has "expected REGION=URL"
  dv $EAST scan --no-worm $(stores_of $EAST $WEST) --buckets 1,x
  assert_status 64
  assert_stderr_has "'x' is not a bucket number"
  dv $EAST scan --no-worm $(stores_of $EAST $WEST) --buckets 70000
  assert_status 64
  echo 'garbage' >"$BATS_TEST_TMPDIR/g.digest"
  dv $EAST compare "$BATS_TEST_TMPDIR/g.digest" "$BATS_TEST_TMPDIR/g.digest"
  assert_status 65
  assert_stderr_has "digest '$BATS_TEST_TMPDIR/g.digest': line 1"
  dv $EAST verify-log "$BATS_TEST_TMPDIR/none.jsonl"
  assert_status 66
  # A digest that cannot be written: a clear error, nothing left behind.
  dv $EAST digest --store "$(store_of $EAST)" --output "$BATS_TEST_TMPDIR/no/such/dir/a.digest"
  [[ $status != 0 ]]
  assert_stderr_has "flk-diverge: error: " "$BATS_TEST_TMPDIR/no/such/dir"
  [[ ! -e $BATS_TEST_TMPDIR/no ]]
  # A binary digest is not written to a terminal (script(1) gives it one): 64, said why.
  run script -qec "flk-diverge --config '$(cfg_of $EAST)' digest --store '$(store_of $EAST)'" /dev/null
  assert_status 64
  [[ $output == *"flk-diverge: error: a digest is binary: not writing it to a terminal"* ]]
  dv $EAST scan --no-worm --store "$EAST=$(store_of $EAST)" --store "$WEST=mysql://x"
  assert_status 78
}
