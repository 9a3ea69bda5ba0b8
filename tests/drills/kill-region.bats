#!/usr/bin/env bats
# Chaos drill 1 of the seed (docs: "Kill random region (verify RTO <5 min)"), made
# measurable: three regions on loopback, each running what a region runs — a writer (a
# paced producer piped into `flk-wal append --segment-age 200ms`), flk-ship --follow,
# flk-read --follow --interval 100ms and flk-serve. Every process of one region, chosen at
# random (FLK_DRILL_VICTIM=REGION picks it), is killed with SIGKILL while records flow.
#
# Measured and asserted:
#   RPO      the records the victim acknowledged before the kill that its peers' stores
#            lacked at kill time, and their age (kill time - the oldest one's ts). The
#            objective here is 2 s (the seed's is 2 min); the assertion is looser,
#            FLK_DRILL_RPO_BOUND_MS (default 10000), so that a loaded 2-core machine
#            does not fail the drill on scheduling noise; the figure is printed against
#            the 2 s goal. Also printed: the records that had not even reached a peer's
#            mailbox — lost for good if the region never came back.
#   the survivors keep accepting and replicating between themselves: what each writes
#            after the kill reaches the other's store (time printed); flk-health sees the
#            victim unhealthy (exit 69).
#   recovery the victim restarted (flk-serve on the port the peers know, its writer,
#            shipper and reader): time until it and its peers caught up; after the writers
#            stop and every region drains, no acknowledged record of any region is missing
#            from any store, every store is the rebuild of its WAL and mailbox with one
#            content digest, and the victim's WAL verifies (the open segment the kill tore
#            was recovered by the next append).

# shellcheck disable=SC2154 # status, output, stderr, lines: set by bats' run
load drill_helpers

setup() {
  drill_setup
}

teardown() {
  drill_teardown
}

RPO_GOAL_MS=2000
RPO_BOUND_MS=${FLK_DRILL_RPO_BOUND_MS:-10000}

# wait_until SECONDS COMMAND…: runs COMMAND every 100 ms until it succeeds; fails after
# SECONDS. WAITED_US: how long it took.
wait_until() {
  local limit=$(($1 * 1000000)) t0
  shift
  t0=$(now_us)
  until "$@"; do
    if (($(now_us) - t0 > limit)); then
      echo "timed out after $((limit / 1000000)) s waiting for: $*" >&2
      return 1
    fi
    sleep 0.1
  done
  WAITED_US=$(($(now_us) - t0))
}

# store_holds R FILE: R's store holds every pcs_id listed in FILE (sorted).
store_holds() { [[ -z $(LC_ALL=C comm -23 "$2" <(ids_in "$1")) ]]; }

# at_least R PATTERN N: R's store holds N or more pcs_ids LIKE PATTERN.
at_least() { (($(ids_in "$1" "$2" | wc -l) >= $3)); }

# oldest_ts GEN-LOG IDS-FILE: the earliest ts among the pcs_ids of IDS-FILE, from the
# writer's log of what it wrote.
oldest_ts() {
  LC_ALL=C join <(jq -r '"\(.pcs_id) \(.ts)"' "$1" | LC_ALL=C sort -k1,1) "$2" | cut -d' ' -f2 | LC_ALL=C sort | head -1
}

# age_of WHAT IDS-FILE: sets AGE_MS (kill time - the oldest ts among the pcs_ids of
# IDS-FILE, 0 when there are none) and AGE_TEXT ("WHAT: N records, the oldest written X s
# before the kill"). Not in a subshell: the caller reads both.
age_of() {
  local n oldest
  n=$(grep -c . "$2" || true)
  AGE_MS=0
  AGE_TEXT="$1: 0 records"
  ((n > 0)) || return 0
  oldest=$(oldest_ts "$(rdir "$VICTIM")/gen-$VICTIM-a.jsonl" "$2")
  [[ -n $oldest ]] || { echo "no ts found for the pcs_ids of $2" >&2; return 1; }
  AGE_MS=$(((T_KILL - $(ts_us "$oldest")) / 1000))
  AGE_TEXT="$1: $n records, the oldest written $(secs $((AGE_MS * 1000))) s before the kill"
}

@test "kill a random region: the others go on, RPO measured, it restarts and catches up, no acknowledged record is lost" {
  deploy "$EAST" "$WEST" "$EU"
  VICTIM=${FLK_DRILL_VICTIM:-${REGIONS[RANDOM % 3]}}
  local r s d=$BATS_TEST_TMPDIR survivors=()
  for r in "${REGIONS[@]}"; do
    serve_of "$r" >/dev/null
    start_follow "$r"
    start_writer "$r" "$r-a"
    [[ $r == "$VICTIM" ]] || survivors+=("$r")
  done
  report "victim: $VICTIM (survivors: ${survivors[*]})"

  # Records flow everywhere before the kill: each store holds 200 records of each peer.
  for r in "${REGIONS[@]}"; do
    for s in "${REGIONS[@]}"; do
      [[ $s == "$r" ]] || wait_until 30 at_least "$r" "$s-a-%" 200
    done
  done
  sleep 1

  # --- the kill: every process of the victim at once -------------------------------------
  local vp
  mapfile -t vp < <(pids_of "$VICTIM")
  assert_equal "${#vp[@]}" 5 "processes of $VICTIM running (serve, ship, read, gen, writer)"
  kill -KILL "${vp[@]}"
  T_KILL=$(now_us)
  # What the peers' stores held at that moment.
  for s in "${survivors[@]}"; do ids_in "$s" "$VICTIM-a-%" >"$d/applied-at-kill.$s"; done
  for r in "${vp[@]}"; do { wait "$r" || true; } 2>/dev/null; done
  for r in "${vp[@]}"; do
    if kill -0 "$r" 2>/dev/null; then
      echo "process $r of $VICTIM survived SIGKILL" >&2
      return 1
    fi
  done
  # What the kill left in the victim's WAL: its open segment holds acknowledged records
  # that were never sealed, hence never shipped.
  local segs open
  segs=$(flk-wal ls --json --wal-dir "$(wal_of "$VICTIM")")
  open=$(jq -c 'select(.state == "open") | {segment, records, bytes}' <<<"$segs")
  report "the kill left $(grep -c . <<<"$segs") segments in $VICTIM's WAL; the open one: ${open:-none}"

  # RPO: acknowledged by the victim before the kill, lacking in a peer's store at kill time.
  acked "$VICTIM" "$VICTIM-a" >"$d/victim-acked"
  local n_acked worst=0
  n_acked=$(wc -l <"$d/victim-acked")
  ((n_acked >= 200))
  for s in "${survivors[@]}"; do
    LC_ALL=C comm -23 "$d/victim-acked" "$d/applied-at-kill.$s" >"$d/lacked.$s"
    age_of "acknowledged by $VICTIM, not applied in $s at the kill" "$d/lacked.$s"
    report "RPO $s: $AGE_TEXT (of $n_acked acknowledged; goal ${RPO_GOAL_MS} ms, asserted <= ${RPO_BOUND_MS} ms)"
    ((AGE_MS <= worst)) || worst=$AGE_MS
  done
  # Lost for good if the region never came back: in no peer's mailbox (what a peer
  # received it applies without the victim's help).
  for s in "${survivors[@]}"; do
    compgen -G "$(mb_of "$s")/$VICTIM/$s/*.wal" >/dev/null || continue
    flk-wal cat "$(mb_of "$s")/$VICTIM/$s/"*.wal | jq -r .pcs_id
  done | LC_ALL=C sort -u >"$d/received"
  LC_ALL=C comm -23 "$d/victim-acked" "$d/received" >"$d/unreceived"
  age_of "acknowledged by $VICTIM, in no peer's mailbox at the kill" "$d/unreceived"
  report "RPO exposure: $AGE_TEXT"
  if ((worst <= RPO_GOAL_MS)); then
    report "RPO age ${worst} ms: within the ${RPO_GOAL_MS} ms goal"
  else
    report "RPO age ${worst} ms: OVER the ${RPO_GOAL_MS} ms goal (asserted bound ${RPO_BOUND_MS} ms)"
  fi
  ((worst <= RPO_BOUND_MS))

  # --- the survivors go on ------------------------------------------------------------------
  run --separate-stderr flk-health --config "$(cfg_of "${survivors[0]}")" --timeout 2s
  assert_status 69
  jq -e -s --arg v "$VICTIM" --arg o "${survivors[1]}" \
    'length == 2 and (map(select(.region == $v))[0].healthy == false) and (map(select(.region == $o))[0].healthy == true)' <<<"$output"
  report "flk-health in ${survivors[0]}: exit 69, $VICTIM unhealthy ($(jq -r --arg v "$VICTIM" 'select(.region == $v) | .error' <<<"$output" | cut -c1-80))"

  local n_kill=()
  for s in "${survivors[@]}"; do n_kill+=("$(wc -l <"$(rdir "$s")/acks-$s-a.jsonl")"); done
  sleep 2
  local i=0 o
  for s in "${survivors[@]}"; do
    tail -n +$((n_kill[i] + 1)) "$(rdir "$s")/acks-$s-a.jsonl" | grep '^{.*}$' | jq -r .pcs_id | LC_ALL=C sort >"$d/after-kill.$s"
    (($(wc -l <"$d/after-kill.$s") >= 20)) # still accepting writes
    i=$((i + 1))
  done
  for s in "${survivors[@]}"; do
    for o in "${survivors[@]}"; do
      [[ $o == "$s" ]] && continue
      wait_until 30 store_holds "$o" "$d/after-kill.$s"
      report "after the kill, what $s wrote in the next 2 s was all applied in $o $(secs "$WAITED_US") s later"
    done
  done

  # --- the victim comes back ------------------------------------------------------------------
  local t_restart
  t_restart=$(now_us)
  start_serve_on "$VICTIM"
  start_writer "$VICTIM" "$VICTIM-b"
  start_follow "$VICTIM"
  for s in "${survivors[@]}"; do acked "$s" "$s-a" >"$d/before-restart.$s"; done
  for s in "${survivors[@]}"; do
    wait_until 60 store_holds "$VICTIM" "$d/before-restart.$s"
    wait_until 60 store_holds "$s" "$d/victim-acked"
  done
  report "recovery: $VICTIM restarted; it and its peers caught up $(secs $(($(now_us) - t_restart))) s later (down for $(secs $((t_restart - T_KILL))) s; RTO objective 5 min)"
  grep -h 'recovering' "$(rdir "$VICTIM")/writer-$VICTIM-b.log" | head -3 | while read -r l; do report "restarted writer: $l"; done

  # --- drain, and nothing lost ------------------------------------------------------------
  sleep 1
  for r in "${REGIONS[@]}"; do stop_writer "$r"; done
  wait_drained "${REGIONS[@]}"
  for r in "${REGIONS[@]}"; do stop_follow "$r"; done
  own_writes_in_store "${REGIONS[@]}"

  local all=$d/all-acked
  for r in "${REGIONS[@]}"; do
    for f in "$(rdir "$r")"/acks-*.jsonl; do grep -h '^{.*}$' "$f" | jq -r .pcs_id; done
  done | LC_ALL=C sort >"$all"
  assert_no_duplicates "$all"
  for r in "${REGIONS[@]}"; do
    ids_in "$r" >"$d/final.$r"
    assert_subset "$all" "$d/final.$r" "acknowledged records in the store of $r"
  done
  verify_all
  report "converged: $(wc -l <"$all") acknowledged records ($n_acked by $VICTIM before the kill) in all three stores, digest ${DIGEST:0:16}"

  run --separate-stderr flk-wal verify --wal-dir "$(wal_of "$VICTIM")"
  assert_status 0
  jq -e -s 'all(.[]; .ok == true)' <<<"$output" >/dev/null
}
