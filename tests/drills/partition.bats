#!/usr/bin/env bats
# Chaos drill 2 of the seed ("Introduce network partition (verify split-brain
# detection)"), made measurable: three regions on loopback, each running flk-serve,
# flk-ship --follow and flk-read --follow (its conflicts to the region's WORM ledger).
# The links between us-east-1 and us-west-2 — both ways — go through the fault-injecting
# TCP proxy (tests/net/faultproxy.cpp): us-east-1's endpoint for us-west-2 is a proxy in
# front of us-west-2's flk-serve, and the other way round; eu-west-1 reaches both
# directly. The partition is the proxies restarted on their ports with --reset-after 0
# (every connection is reset as soon as the client sends a byte); healing is the proxies
# restarted without faults. During the partition both sides decide the same pcs_ids with
# different outcomes (shared_in: us-east-1 accepts, us-west-2 rejects, each at its own
# time) and write records of their own; eu-west-1 goes on writing and replicating with
# both.
#
# Two ways a split-brain ends, one test each:
#   1. detected while partitioned, by the runbook of flk(7): flk-diverge scan over the
#      three stores finds exactly the split-brain pcs_ids as conflicts (and the records
#      one side never received as missing); reconcile installs the first write
#      everywhere; a new scan is clean; the ledger verifies. After healing, replay
#      changes nothing: every store is the rebuild of its WAL and mailbox, one digest.
#   2. healed before anyone scans: replay alone converges (first write wins is a
#      commutative merge), so a scan afterwards is clean and reconcile has nothing to do
#      — the split-brain is detected by the readers instead, which log exactly the
#      split-brain pcs_ids as conflicts to the WORM ledgers and count them in
#      flk_crr_read_records_total{result="conflict"}. (So a partition shorter than the
#      period of the flk-diverge timer never raises flk_crr_divergence_count.)

# shellcheck disable=SC2154 # status, output, stderr, lines: set by bats' run
load drill_helpers

setup() {
  drill_setup || return 1
  [[ -x $FLK_TEST_LIB/faultproxy ]] || {
    echo "faultproxy not built: '$FLK_TEST_LIB/faultproxy' (set FLK_TEST_LIB)" >&2
    return 1
  }
}

teardown() {
  drill_teardown
}

# route R PEER PORT: R's endpoint for PEER goes to 127.0.0.1:PORT.
route() {
  sed -i -E "s|^(    $2: \\{url: \"http://127.0.0.1:)[0-9]+\"|\\1$3\"|" "$(cfg_of "$1")"
  grep -q "^    $2: {url: \"http://127.0.0.1:$3\"" "$(cfg_of "$1")" || {
    echo "route $1 -> $2: no endpoint line in $(cfg_of "$1")" >&2
    return 1
  }
}

# link_setup: proxies link-east-west (us-east-1 → us-west-2's flk-serve) and
# link-west-east (the other way), fault free, and the two configurations routed through
# them. Call before the services start.
link_setup() {
  start_proxy link-east-west "$(tr -d '\n' <"$(rdir "$WEST")/port")" || return 1
  start_proxy link-west-east "$(tr -d '\n' <"$(rdir "$EAST")/port")" || return 1
  route "$EAST" "$WEST" "$(server_port link-east-west)" || return 1
  route "$WEST" "$EAST" "$(server_port link-west-east)"
}

# link_mode NAME [FAULTPROXY ARGS…]: restarts proxy NAME on its port with these faults.
link_mode() {
  local name=$1 port target
  shift
  port=$(server_port "$name")
  target=$(sed -nE 's/.*forwarding to 127.0.0.1:([0-9]+).*/\1/p' "$BATS_TEST_TMPDIR/$name.log" | head -1)
  kill "$(<"$BATS_TEST_TMPDIR/$name.pid")"
  wait_gone "$(<"$BATS_TEST_TMPDIR/$name.pid")"
  start_proxy "$name" "$target" --listen "127.0.0.1:$port" "$@"
}
partition() { link_mode link-east-west --reset-after 0 && link_mode link-west-east --reset-after 0; }
heal() { link_mode link-east-west && link_mode link-west-east; }

# drained_to R TARGET…: flk-watermark wait in R for the streams to these targets only.
drained_to() {
  local r=$1 t args=()
  shift
  for t in "$@"; do args+=(--target "$t"); done
  run --separate-stderr flk-watermark --config "$(cfg_of "$r")" wait "${args[@]}" --max-lag 10ms --timeout 60s --interval 100ms -q
  if [[ $status != 0 ]]; then
    printf 'streams %s -> %s did not drain (exit %s):\n%s\n%s\n' "$r" "$*" "$status" "$output" "$stderr" >&2
    return 1
  fi
}

# dv ARGS…: flk-diverge with us-east-1's configuration (bats run).
dv() { run --separate-stderr flk-diverge --config "$(cfg_of "$EAST")" "$@"; }

# kinds: "KIND PCS_ID" of the JSON lines in $output, sorted.
kinds() { jq -r '"\(.kind) \(.pcs_id)"' <<<"$output" | LC_ALL=C sort; }

# first_writes: "PCS_ID OUTCOME" of the first write of each split-brain pcs_id, by the
# rule of DESIGN.md §1 — the smallest (ts, region, digest) — from shared_in's times:
# us-east-1 (accepted) writes shared-n at second (3n mod 50) + 10, us-west-2 (rejected)
# at (n mod 50) + 10; at equal times us-east-1 < us-west-2.
first_writes() {
  local n o
  for ((n = 1; n <= SPLIT; n++)); do
    if (((3 * n) % 50 <= n % 50)); then o=accepted; else o=rejected; fi
    printf 'shared-%06d %s\n' "$n" "$o"
  done
}

SPLIT=30 # split-brain pcs_ids
SOLO=20  # records each side writes alone during the partition

# split_brain: the partition and the writes during it; eu-west-1's streams drain (it
# replicates with both sides), the links between the two sides stay cut.
split_brain() {
  T_PART=$(now_us)
  partition || return 1
  shared_in "$EAST" "$SPLIT"
  shared_in "$WEST" "$SPLIT"
  write_in "$EAST" "$SOLO" parted-e 1001
  write_in "$WEST" "$SOLO" parted-w 1001
  write_in "$EU" "$SOLO" eu-during 1001
  drained_to "$EAST" "$EU" || return 1
  drained_to "$WEST" "$EU" || return 1
  drained_to "$EU" "$EAST" "$WEST" || return 1
  # The cut is real: neither side has the other's records, the proxies reset, and the
  # source of each cut stream knows it cannot ask its target.
  assert_equal "$(ids_in "$WEST" 'parted-e-%')" "" "us-east-1's records in us-west-2" || return 1
  assert_equal "$(ids_in "$EAST" 'parted-w-%')" "" "us-west-2's records in us-east-1" || return 1
  grep -q 'reset after 0 bytes' "$BATS_TEST_TMPDIR/link-east-west.log" || return 1
  grep -q 'reset after 0 bytes' "$BATS_TEST_TMPDIR/link-west-east.log" || return 1
  run --separate-stderr flk-watermark --config "$(cfg_of "$EAST")" lag --target "$WEST" --probe-timeout 1s
  assert_status 75 || return 1
  jq -e '.stale == true and .ship_seconds > 0' <<<"$output" >/dev/null
}

# converged_before: three regions with 100 records each, replicated by the services,
# scanned clean.
converged_before() {
  deploy "$EAST" "$WEST" "$EU"
  link_setup
  local r
  for r in "${REGIONS[@]}"; do start_follow "$r"; done
  for r in "${REGIONS[@]}"; do write_in "$r" 100 "pre-$r"; done
  wait_drained "${REGIONS[@]}"
  mapfile -t STORES < <(stores_args "${REGIONS[@]}")
  dv scan "${STORES[@]}" --no-worm
  assert_status 0
}

# ship_failures R TARGET: failed attempts of R's shipper to TARGET (its metrics file).
ship_failures() {
  sed -nE "s/^flk_crr_ship_failures_total\\{source=\"$1\",target=\"$2\"\\} ([0-9]+)$/\\1/p" "$(rdir "$1")/ship.prom"
}

@test "partition us-east-1 | us-west-2: scan finds exactly the split-brain, reconcile converges, replay after healing changes nothing" {
  converged_before
  split_brain
  local ledger d=$BATS_TEST_TMPDIR
  ledger=$(rdir "$EAST")/worm.jsonl # us-east-1's paths.worm: its reader logs there too

  # 1. Detect.
  dv scan "${STORES[@]}" --worm "$ledger" --metrics-file "$d/diverge.prom"
  assert_status 1
  local expected
  expected=$( (seq -f 'conflict shared-%06g' 1 "$SPLIT"
    seq -f 'missing parted-e-%06g' 1001 $((1000 + SOLO))
    seq -f 'missing parted-w-%06g' 1001 $((1000 + SOLO))) | LC_ALL=C sort)
  assert_equal "$(kinds)" "$expected" "findings during the partition"
  printf '%s\n' "$output" >"$d/findings.jsonl"
  # Each side holds its own outcome; eu-west-1, which received both, the first write.
  jq -e -s 'map(select(.kind == "conflict")) | all(.regions["us-east-1"].outcome == "accepted" and .regions["us-west-2"].outcome == "rejected")' "$d/findings.jsonl"
  assert_equal "$(jq -r 'select(.kind == "conflict") | "\(.pcs_id) \(.regions["eu-west-1"].outcome)"' "$d/findings.jsonl" | LC_ALL=C sort)" \
    "$(first_writes)" "eu-west-1's winners"
  jq -e -s 'map(select(.kind == "missing")) | all((.pcs_id | startswith("parted-e")) == (.regions["us-west-2"] == null)
    and (.pcs_id | startswith("parted-w")) == (.regions["us-east-1"] == null) and .regions["eu-west-1"] != null)' "$d/findings.jsonl"
  grep -qx "flk_crr_divergence_count{kind=\"conflict\"} $SPLIT" "$d/diverge.prom"
  grep -qx "flk_crr_divergence_count{kind=\"missing\"} $((2 * SOLO))" "$d/diverge.prom"
  report "detected during the partition: $SPLIT conflicts, $((2 * SOLO)) missing; ship failures so far us-east-1->us-west-2 $(ship_failures "$EAST" "$WEST"), us-west-2->us-east-1 $(ship_failures "$WEST" "$EAST")"

  # 2-3. The overlap window and the plan: the first write of each, everywhere.
  report "overlap window: $(jq -s -r '[.[] | select(.kind == "conflict") | .regions[] | select(.) | .ts] | "\(min) .. \(max)"' "$d/findings.jsonl")"
  dv reconcile "${STORES[@]}" --worm "$ledger"
  assert_status 1
  assert_equal "$(jq -s length <<<"$output")" $((SPLIT + 2 * SOLO)) "plans"
  assert_equal "$(jq -r 'select(.pcs_id | startswith("shared-")) | "\(.pcs_id) \(.winner.outcome)"' <<<"$output" | LC_ALL=C sort)" \
    "$(first_writes)" "planned winners"

  # 4-5. Reconcile, scan again, verify the ledger.
  dv reconcile "${STORES[@]}" --worm "$ledger" --apply
  assert_status 0
  dv scan "${STORES[@]}" --worm "$ledger"
  assert_status 0
  assert_equal "$output" "" "findings after reconcile"
  local digest
  digest=$(content_digest "$EAST")
  assert_equal "$(content_digest "$WEST")" "$digest" "us-west-2's content digest after reconcile"
  assert_equal "$(content_digest "$EU")" "$digest" "eu-west-1's content digest after reconcile"
  dv verify-log "$ledger"
  assert_status 0
  jq -e --argjson n $((2 * (SPLIT + 2 * SOLO))) '.ok == true and .lines >= $n' <<<"$output"

  # Healing: the shippers, retrying all along, deliver; the readers apply; nothing moves.
  local t_heal
  t_heal=$(now_us)
  heal
  wait_drained "${REGIONS[@]}"
  report "healed: every stream drained $(secs $(($(now_us) - t_heal))) s after the links came back (partitioned for $(secs $((t_heal - T_PART))) s)"
  local r
  for r in "${REGIONS[@]}"; do stop_follow "$r"; done
  dv scan "${STORES[@]}" --worm "$ledger"
  assert_status 0
  for r in "${REGIONS[@]}"; do
    assert_equal "$(content_digest "$r")" "$digest" "$r's content digest after healing"
  done
  verify_all
  for r in "$WEST" "$EU" "$EAST"; do
    dv verify-log "$(rdir "$r")/worm.jsonl"
    assert_status 0
  done
  # shellcheck disable=SC2153 # DIGEST: set by verify_all
  report "converged: content digest ${DIGEST:0:16} in all three regions; ledger of us-east-1: $(jq -r '"\(.lines) lines, head \(.head[0:24])"' <<<"$output")"
}

@test "partition healed before any scan: replay converges by first write wins, the readers log exactly the split-brain to the ledgers" {
  converged_before
  split_brain

  local t_heal r
  t_heal=$(now_us)
  heal
  wait_drained "${REGIONS[@]}"
  report "healed: every stream drained $(secs $(($(now_us) - t_heal))) s after the links came back"
  for r in "${REGIONS[@]}"; do stop_follow "$r"; done

  # The readers found the split-brain: each region's ledger names exactly the split-brain
  # pcs_ids (eu-west-1 while partitioned, when the second side's segment arrived; each
  # side when the other's did), with both records as evidence.
  local want
  want=$(seq -f 'shared-%06g' 1 "$SPLIT")
  for r in "${REGIONS[@]}"; do
    dv verify-log "$(rdir "$r")/worm.jsonl"
    assert_status 0
    assert_equal "$(jq -r 'select(.event == "conflict") | .pcs_id' "$(rdir "$r")/worm.jsonl" | LC_ALL=C sort -u)" "$want" \
      "split-brain pcs_ids in $r's ledger"
    jq -e -s 'map(select(.event == "conflict")) | all(.records | map(.outcome) | unique == ["accepted", "rejected"])' \
      "$(rdir "$r")/worm.jsonl"
  done

  # What monitoring sees of it: the readers' conflict counters (flk_crr_read_records_total
  # {result="conflict"}); flk_crr_divergence_count stays 0 — a scan after healing finds
  # nothing (below).
  local c
  for r in "${REGIONS[@]}"; do
    c=$(sed -nE 's/^flk_crr_read_records_total\{.*result="conflict".*\} ([0-9]+)$/\1/p' "$(rdir "$r")/read.prom" | paste -sd+ | bc)
    ((c == SPLIT))
    report "$r: flk_crr_read_records_total{result=\"conflict\"} sums to $c"
  done

  # Every store holds the first write of each: nothing left to scan or reconcile.
  dv scan "${STORES[@]}" --no-worm
  assert_status 0
  dv reconcile "${STORES[@]}" --no-worm
  assert_status 0
  verify_all
  report "converged without reconcile: content digest ${DIGEST:0:16} in all three regions"
}
