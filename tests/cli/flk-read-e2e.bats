#!/usr/bin/env bats
# Cross-region replication end to end on one machine (DESIGN.md §1, §3, §4, §7): two
# and three regions (us-east-1, us-west-2, eu-west-1), each with its own WAL, dedup
# store, mailbox and flk-serve (bearer tokens per peer, on loopback), configured as an
# operator would (crr.targetRegions / crr.peers, crr.endpoints with tokenFile,
# serve.tokens). Records are appended in every region and also written to its own
# store (as the backend does; here by `flk-rebuild-dedup --in-place --no-mailbox`),
# `flk-ship --once` runs everywhere, then `flk-read --once` everywhere from its own
# mailbox (file://). Then every region's store must equal the rebuild of its WAL and
# mailbox (`flk-rebuild-dedup --verify`), and every region must report the same content
# digest — including after duplicated, delayed and re-read deliveries, after kill -9
# of flk-read during a long replay, and with the stores on PostgreSQL and Redis.

load deploy_helpers

setup() {
  read_setup
}

teardown() {
  read_teardown
}

# --- two and three regions -----------------------------------------------------------------

@test "two regions: ship and read both ways over flk-serve; both stores equal their rebuild, one digest" {
  deploy $EAST $WEST
  write_in $EAST 300 east
  write_in $WEST 200 west
  shared_in $EAST 40
  shared_in $WEST 40
  ship_all
  # Shipped but not yet read: no store equals its rebuild (the comparison can fail).
  local r
  for r in $EAST $WEST; do
    run --separate-stderr flk-rebuild-dedup --config "$(cfg_of $r)" --verify
    assert_status 1
  done
  # Each flk-serve stored the peer's stream, byte for byte.
  cmp <(cd "$(wal_of $EAST)" && cat ./*.wal) <(cd "$(mb_of $WEST)/$EAST/$WEST" && cat ./*.wal)
  cmp <(cd "$(wal_of $WEST)" && cat ./*.wal) <(cd "$(mb_of $EAST)/$WEST/$EAST" && cat ./*.wal)
  grep -q "peer=$EAST" "$(rdir $WEST)/serve.log"
  read_all
  assert_read_from $WEST $EAST:0
  assert_read_from $EAST $WEST:0
  # The 40 shared pcs_ids conflict at both: counted where the second write arrived.
  assert_equal "$(total conflicts "" "$(read_out $WEST)") $(total conflicts "" "$(read_out $EAST)")" "40 40" \
    "conflicts seen by the readers"
  verify_all
  for r in $EAST $WEST; do assert_equal "$(winners_of $r)" 540 "pcs_ids in $r"; done

  # Again: nothing shipped, nothing read, nothing changed.
  local digest=$DIGEST
  ship_all
  [[ -z ${SHIPPED//$'\n'/} ]]
  read_all
  [[ -z $(read_out $EAST)$(read_out $WEST) ]]
  verify_all
  assert_equal "$DIGEST" "$digest"
}

@test "three regions, multi-way: every store equals its rebuild and all report one digest, round after round" {
  deploy $EAST $WEST $EU
  write_in $EAST 250 east
  write_in $WEST 150 west
  write_in $EU 200 eu
  shared_in $EAST 30
  shared_in $WEST 30
  shared_in $EU 30
  ship_all
  # Every region shipped every sealed segment to both peers.
  local r p
  for r in $EAST $WEST $EU; do
    for p in $EAST $WEST $EU; do
      [[ $p == "$r" ]] && continue
      assert_equal "$(sealed_numbers "$(mb_of "$p")/$r/$p")" "$(seq 1 "$(sealed_of "$r")")" "stream $r → $p"
    done
  done
  read_all
  assert_read_from $EAST $WEST:0 $EU:0
  assert_read_from $WEST $EAST:0 $EU:0
  assert_read_from $EU $EAST:0 $WEST:0
  verify_all
  local digest=$DIGEST
  for r in $EAST $WEST $EU; do assert_equal "$(winners_of $r)" 630 "pcs_ids in $r"; done

  # A second round: new records everywhere; only the new segments travel and are read.
  local before_e before_w before_u
  before_e=$(sealed_of $EAST) before_w=$(sealed_of $WEST) before_u=$(sealed_of $EU)
  write_in $EAST 100 east 1001
  write_in $WEST 100 west 1001
  write_in $EU 100 eu 1001
  ship_all
  read_all
  assert_read_from $EAST $WEST:$before_w $EU:$before_u
  assert_read_from $WEST $EAST:$before_e $EU:$before_u
  assert_read_from $EU $EAST:$before_e $WEST:$before_w
  verify_all
  [[ $DIGEST != "$digest" ]]
  for r in $EAST $WEST $EU; do assert_equal "$(winners_of $r)" 930 "pcs_ids in $r"; done
}

@test "duplicate, delayed and out-of-order delivery, and re-reads: stores and digests unchanged" {
  deploy $EAST $WEST $EU
  write_in $EAST 200 east
  write_in $WEST 200 west
  write_in $EU 200 eu
  shared_in $EAST 30
  shared_in $WEST 30
  shared_in $EU 30
  # Interleaved: us-west-2 reads after each region shipped, the others once at the end.
  local r
  for r in $EAST $EU $WEST; do
    run --separate-stderr flk-ship --config "$(cfg_of "$r")" --once
    assert_status 0
    run --separate-stderr flk-read --config "$(cfg_of $WEST)" --once
    assert_status 0
  done
  read_all
  verify_all
  local digest=$DIGEST

  # Lost ship watermarks: everything is shipped again; the servers answer "duplicate".
  rm "$BATS_TEST_TMPDIR"/r-*/state/ship/*.json
  ship_all
  [[ -n $SHIPPED ]]
  assert_equal "$(grep '^{' <<<"$SHIPPED" | jq -r .result | sort -u)" duplicate "results of the re-shipment"
  # Re-reading: nothing applied; the stores and digests are unchanged.
  read_all
  for r in $EAST $WEST $EU; do [[ -z $(read_out "$r") ]]; done
  verify_all
  assert_equal "$DIGEST" "$digest" "digest after duplicates"

  # Delayed delivery: new segments from us-east-1; in eu-west-1's mailbox the first of
  # them is held back (it arrives after the later ones). The reader refuses the gap
  # (65), applies none of the later ones, and takes all of them in order once it came.
  local first=$(($(sealed_of $EAST) + 1))
  write_in $EAST 200 east 5001
  ship_all
  local held=$BATS_TEST_TMPDIR/held
  mkdir -p "$held"
  mv "$(mb_of $EU)/$EAST/$EU/$(seg_name $first)" "$(mb_of $EU)/$EAST/$EU/$(seg_name $first).sha256" "$held/"
  run --separate-stderr flk-read --config "$(cfg_of $EU)" --once
  assert_status 65
  assert_stderr_has "flk-read: error: " "source '$EAST'" "segment $first is missing"
  [[ -z $(seqs $EAST) ]]
  mv "$held"/* "$(mb_of $EU)/$EAST/$EU/"
  read_all
  assert_equal "$(seqs $EAST "$(read_out $EU)")" "$(seq "$first" "$(sealed_of $EAST)")" "eu-west-1 after the delay"
  verify_all
  digest=$DIGEST

  # And a re-read after all that, and a re-shipment of everything once more.
  rm "$BATS_TEST_TMPDIR"/r-*/state/ship/*.json
  ship_all
  read_all
  for r in $EAST $WEST $EU; do [[ -z $(read_out "$r") ]]; done
  verify_all
  assert_equal "$DIGEST" "$digest" "digest at the end"
}

# --- kill -9 during a long replay --------------------------------------------------------------

@test "kill -9 of flk-read at random moments of a long replay: the store ends equal to an uninterrupted replay" {
  # Two sources of many small segments (about 10 records each), shipped to us-west-2.
  local mb
  mb=$(mb_of $WEST)
  local p1 p2
  append_in $EAST 3000 east 1 1024 &
  p1=$!
  append_in $EU 3000 eu 1 1024 &
  p2=$!
  wait $p1 && wait $p2
  ship_file $EAST "$mb" $WEST >/dev/null &
  p1=$!
  ship_file $EU "$mb" $WEST >/dev/null &
  p2=$!
  wait $p1 && wait $p2
  local total=$(($(sealed_of $EAST) + $(sealed_of $EU)))
  ((total >= 500))

  # The uninterrupted replay, timed.
  local ref t0 t_ms
  ref=$(sqlite_of $WEST reference)
  t0=$(date +%s%N)
  rd $WEST "$ref" --batch 0 >/dev/null
  t_ms=$((($(date +%s%N) - t0) / 1000000))
  assert_store_equals $WEST "$ref" "$mb"
  local want=$DIGEST

  # Runs killed after a random 2 ms .. max(10 ms, T/5), until one completes; at least
  # 10 rounds (at most 80). Several kills must land mid-replay: when the machine's load
  # changed since T was measured and the replay completed first, the store is removed
  # and it starts again with kills twice as early (at most 4 attempts).
  local store round killed mid done_at pid st n got span d attempt=0
  store=$(sqlite_of $WEST killed)
  span=$((t_ms / 5 > 10 ? t_ms / 5 : 10))
  while :; do
    attempt=$((attempt + 1)) round=0 killed=0 mid=0 done_at=0 got=0
    rm -f "${store#sqlite://}" "${store#sqlite://}-wal" "${store#sqlite://}-shm"
    : >"$BATS_TEST_TMPDIR/all.out"
    while ((round < 80)) && { ((done_at == 0)) || ((round < 10)); }; do
      round=$((round + 1))
      # Emptied here, not only by the reader's redirection: a kill that lands before the
      # forked shell has opened round.out (2 ms on a loaded machine) would otherwise leave
      # the previous round's lines in it, to be counted twice.
      : >"$BATS_TEST_TMPDIR/round.out"
      # flk-read itself, not a shell function's subshell: the kill must reach the reader.
      # --batch 0: one transaction (and one line) per segment, so that kills land between
      # commits and the lines tell where (batching commits the same way, several at once).
      flk-read --region $WEST --store "$store" --from "file://$mb" --state-dir "$(state_of $WEST)" --once --batch 0 \
        >"$BATS_TEST_TMPDIR/round.out" 2>/dev/null &
      pid=$!
      d=$((2 + RANDOM % (span - 1)))
      sleep "$(printf '%d.%03d' $((d / 1000)) $((d % 1000)))"
      kill -9 "$pid" 2>/dev/null || true
      st=0
      wait "$pid" || st=$?
      n=$(grep -c '^{.*}$' "$BATS_TEST_TMPDIR/round.out" || true)
      { cat "$BATS_TEST_TMPDIR/round.out" && echo; } >>"$BATS_TEST_TMPDIR/all.out" # a cut line stays alone
      got=$((got + n))
      if ((st == 137)); then
        killed=$((killed + 1))
        # Mid-replay: it had applied segments, and some were still to come.
        ((n > 0 && got < total)) && mid=$((mid + 1))
      else
        assert_equal "$st" 0 "exit status of round $round"
        ((done_at == 0)) && done_at=$round
      fi
    done
    echo "# attempt $attempt: $round rounds, $killed killed, $mid of them mid-replay; T = $t_ms ms, kills within $span ms; done at round $done_at" >&3
    ((round >= 10))
    ((mid >= 4)) && break
    ((attempt < 4)) || { echo "only $mid kills landed mid-replay ($killed killed)" >&2; return 1; }
    span=$((span / 2 > 10 ? span / 2 : 10))
  done

  # A last run completes whatever is left (there may be nothing).
  run --separate-stderr rd $WEST "$store"
  assert_status 0
  printf '%s\n' "$output" >>"$BATS_TEST_TMPDIR/all.out"
  # No segment was applied twice; each source's segments came in order; a segment may
  # lack its line only when the kill fell between its commit and its line (one per kill).
  local s all
  all=$(grep '^{.*}$' "$BATS_TEST_TMPDIR/all.out")
  for s in $EAST $EU; do
    seqs "$s" "$all" | sort -n -c || { echo "$s:" $(seqs "$s" "$all") >&2; grep -n . "$BATS_TEST_TMPDIR/all.out" | tail -40 >&2; return 1; }
    [[ -z $(seqs "$s" "$all" | uniq -d) ]]
  done
  (($(wc -l <<<"$all") + killed >= total))
  # Nothing was skipped: the store is the uninterrupted one.
  assert_store_equals $WEST "$store" "$mb"
  assert_equal "$DIGEST" "$want" "digest after the kills"
  run --separate-stderr rd $WEST "$store"
  assert_status 0
  [[ -z $output ]]
}

@test "kill -9 of flk-read while its group of segments is applied and not yet committed: none of the group is there, a rerun completes it" {
  # By default a backlog is committed in groups of up to --batch records (one transaction
  # over many segments), applied on a thread of its own while the next segments are
  # verified. A kill before the commit must leave the store as it was before the group.
  local mb
  mb=$(mb_of $WEST)
  append_in $EAST 150000 east 1 65536
  ship_file $EAST "$mb" $WEST >/dev/null
  local total store db rounds=0 before after t0 t_ms
  total=$(sealed_of $EAST)
  ((total >= 100))
  # The uninterrupted replay, timed.
  t0=$(date +%s%N)
  rd $WEST "$(sqlite_of $WEST reference)" --batch 8192 >"$BATS_TEST_TMPDIR/reference.out"
  t_ms=$((($(date +%s%N) - t0) / 1000000))
  assert_equal "$(jq -s 'map(.records) | add' "$BATS_TEST_TMPDIR/reference.out")" 150000
  store=$(sqlite_of $WEST grouped)
  db=${store#sqlite://}
  # Groups commit after 8192 records (--batch): each run is killed somewhere in the
  # middle of its remaining work, between and during commits.
  local killed=0 k d pid st printed last wm
  for k in 1 2 3 4 5 6; do
    rounds=$((rounds + 1))
    before=$(sqlite3 "$db" "SELECT count(*) FROM records" 2>/dev/null || echo 0)
    : >"$BATS_TEST_TMPDIR/round.out"
    flk-read --region $WEST --store "$store" --from "file://$mb" --state-dir "$(state_of $WEST)" --once --batch 8192 \
      >"$BATS_TEST_TMPDIR/round.out" 2>/dev/null &
    pid=$!
    d=$((t_ms / 8 + RANDOM % (t_ms / 8 + 1)))
    sleep "$(printf '%d.%03d' $((d / 1000)) $((d % 1000)))"
    kill -9 "$pid" 2>/dev/null || true
    st=0
    wait "$pid" || st=$?
    ((st == 137)) && killed=$((killed + 1))
    # The store holds whole committed groups: exactly the records of the segments up to
    # its watermark (nothing of a group cut by the kill), at least those whose lines
    # were printed (each line follows its group's commit; a kill between the commit and
    # the lines may cut the lines of the last group, never add one).
    after=$(sqlite3 "$db" "SELECT count(*) FROM records")
    wm=$(sqlite3 "$db" "SELECT sequence FROM watermarks WHERE source = '$EAST'")
    assert_equal "$after" "$(jq -s --argjson w "${wm:-0}" 'map(select(.sequence <= $w) | .records) | add // 0' \
      "$BATS_TEST_TMPDIR/reference.out")" "round $rounds (killed after $d ms): records = those of segments 1..${wm:-0}"
    printed=$(jq -s 'map(.applied) | add // 0' "$BATS_TEST_TMPDIR/round.out")
    ((after >= before + printed)) || { echo "round $rounds: $after records, $before before + $printed printed" >&2; return 1; }
    last=$(jq -s 'map(.sequence) | max // 0' "$BATS_TEST_TMPDIR/round.out")
    ((${wm:-0} >= last)) || { echo "round $rounds: watermark ${wm:-0} behind the last line printed, $last" >&2; return 1; }
  done
  echo "# $rounds rounds, $killed killed mid-replay; T = $t_ms ms" >&3
  ((killed >= 3))
  run --separate-stderr rd $WEST "$store"
  assert_status 0
  assert_store_equals $WEST "$store" "$mb"
  assert_equal "$(sqlite3 "$db" "SELECT count(*) FROM records")" 150000
}

# --- PostgreSQL and Redis -------------------------------------------------------------------

# backend_round: three regions with stores on the back end; the same assertions as the
# SQLite suites, plus duplicates and re-reads.
backend_round() {
  deploy --store "$1" $EAST $WEST $EU
  write_in $EAST 200 east
  write_in $WEST 150 west
  write_in $EU 150 eu
  shared_in $EAST 30
  shared_in $WEST 30
  shared_in $EU 30
  ship_all
  read_all
  assert_read_from $EAST $WEST:0 $EU:0
  assert_read_from $WEST $EAST:0 $EU:0
  assert_read_from $EU $EAST:0 $WEST:0
  verify_all
  local digest=$DIGEST r
  for r in $EAST $WEST $EU; do assert_equal "$(winners_of $r)" 530 "pcs_ids in $r"; done
  # The same digest as a SQLite store of the same inputs.
  local lite
  lite=$(sqlite_of $WEST lite)
  rd $WEST "$lite" >/dev/null
  flk-rebuild-dedup --region $WEST --wal-dir "$(wal_of $WEST)" --no-mailbox --in-place --store "$lite" -q >/dev/null
  assert_store_equals $WEST "$lite" "$(mb_of $WEST)"
  assert_equal "$DIGEST" "$digest" "digest of a SQLite store of us-west-2's inputs"

  rm "$BATS_TEST_TMPDIR"/r-*/state/ship/*.json
  ship_all
  assert_equal "$(grep '^{' <<<"$SHIPPED" | jq -r .result | sort -u)" duplicate
  read_all
  for r in $EAST $WEST $EU; do [[ -z $(read_out "$r") ]]; done
  verify_all
  assert_equal "$DIGEST" "$digest" "digest after duplicates"
}

@test "PostgreSQL stores: three regions equal their rebuilds, one digest, duplicates change nothing" {
  need_server postgres
  backend_round postgres
}

@test "Redis stores: three regions equal their rebuilds, one digest, duplicates change nothing" {
  need_server redis
  backend_round redis
}
