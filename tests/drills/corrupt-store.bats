#!/usr/bin/env bats
# Chaos drill 3 of the seed ("Corrupt dedup store (verify rebuild from WAL)"), made
# measurable: three regions on loopback, converged (2000 records each, 30 pcs_ids decided
# differently by us-east-1 and us-west-2, so that the stores hold conflict evidence
# too); then us-west-2's SQLite store is damaged — truncated, pages overwritten in the
# middle, rows deleted — one way per test. Each time the damage is
#   detected:  by the tools an operator runs — flk-diverge scan over the three stores (the
#              timer of scripts/systemd) and flk-rebuild-dedup --verify — with the exit
#              status and message asserted;
#   rebuilt:   by the failback runbook, scripts/rebuild-dedup-from-wal.sh --region R
#              --since-time T, from the region's WAL and the segments peers shipped to its
#              mailbox. The runbook's --since-time merges into the live store in place,
#              which needs a store SQLite can read: when the file is malformed, that run
#              fails (exit 65, the store untouched) and the operator runs the script
#              without --since-time, a full rebuild into a fresh store swapped in at the
#              end — what flk-rebuild-dedup(1) says to do for a lost store;
#   checked:   the rebuilt store's content digest (flk-diverge digest, header line
#              removed) equals the healthy peers', a scan is clean, every store is the
#              rebuild of its WAL and mailbox, and the region replicates on from there
#              (its replay watermarks are right: a further round applies without a gap).

# shellcheck disable=SC2154 # status, output, stderr, lines: set by bats' run
load drill_helpers

setup() {
  drill_setup
}

teardown() {
  drill_teardown
}

R=$WEST # the region whose store is damaged

# converged: the three regions, replicated and verified. HEALTHY: the content digest of
# the healthy peers' stores; DB: the damaged region's SQLite file; STORES: --store
# arguments of the three.
converged() {
  deploy "$EAST" "$WEST" "$EU"
  write_in "$EAST" 2000 east
  write_in "$WEST" 2000 west
  write_in "$EU" 2000 eu
  shared_in "$EAST" 30
  shared_in "$WEST" 30
  ship_all
  read_all
  verify_all
  HEALTHY=$(content_digest "$EAST")
  assert_equal "$(content_digest "$EU")" "$HEALTHY" "eu-west-1's content digest"
  assert_equal "$(content_digest "$R")" "$HEALTHY" "$R's content digest before the damage"
  DB=$(db_of "$R")
  mapfile -t STORES < <(stores_args "$EAST" "$WEST" "$EU")
  WINNERS=$(winners_of "$R")
  # Nothing holds the store, and SQLite left no write-ahead log beside it: the file is
  # the whole store, so damaging the file damages the store.
  [[ ! -e $DB-wal ]]
  ((WINNERS == 6030))
}

# runbook [ARGS…]: the failback runbook's script for region R (bats run).
runbook() {
  run --separate-stderr "$FLK_SOURCE/scripts/rebuild-dedup-from-wal.sh" --config "$(cfg_of "$R")" --region "$R" "$@"
}

# assert_malformed: --verify and scan both refuse the store: exit 65 (a data error),
# naming the store and SQLite's diagnosis.
assert_malformed() {
  run --separate-stderr flk-rebuild-dedup --config "$(cfg_of "$R")" --verify
  assert_status 65 || return 1
  assert_stderr_has "flk-rebuild-dedup: error: store 'sqlite://$DB': database disk image is malformed" || return 1
  run --separate-stderr flk-diverge --config "$(cfg_of "$R")" scan --no-worm "${STORES[@]}"
  assert_status 65 || return 1
  assert_stderr_has "flk-diverge: error: store 'sqlite://$DB': database disk image is malformed" || return 1
  report "detected: flk-rebuild-dedup --verify exit 65, flk-diverge scan exit 65: database disk image is malformed"
}

# full_rebuild: the runbook as an operator runs it on a malformed store: with
# --since-time first (in place: refused, exit 65, the file untouched), then without it
# (a fresh store from the WAL and the mailbox, swapped in). A fresh rebuild opens the
# live store first (to carry its conflict evidence over); when SQLite cannot read even
# the file's schema (a truncated file), it stops there with exit 65 although
# flk-rebuild-dedup(1) says a rebuild goes on without unreadable evidence — then the
# operator moves the damaged file aside (kept for the post-mortem) and runs the script
# again, which builds the store from nothing.
full_rebuild() {
  local before
  before=$(sha256sum <"$DB")
  runbook --since-time 2026-11-26T00:00:00Z
  assert_status 65 || return 1
  assert_stderr_has "database disk image is malformed" || return 1
  assert_equal "$(sha256sum <"$DB")" "$before" "the store after the refused in-place run" || return 1
  runbook
  if [[ $status == 65 && $stderr == *"database disk image is malformed"* ]]; then
    assert_equal "$(sha256sum <"$DB")" "$before" "the store after the refused fresh rebuild" || return 1
    report "the fresh rebuild refused the malformed file (exit 65: $(grep -o 'database disk image is malformed' <<<"$stderr")); moved aside, run again"
    mv "$DB" "$DB.damaged"
    runbook
  fi
  assert_status 0 || return 1
  jq -e --argjson w "$WINNERS" '.mode == "fresh" and .winners == $w and .watermarks == 2' <<<"${lines[-1]}" >/dev/null || {
    echo "unexpected summary: ${lines[-1]}" >&2
    return 1
  }
  report "rebuilt (runbook without --since-time, fresh): $(jq -r '"\(.records) records from \(.segments) segments, \(.winners) winners, \(.seconds) s"' <<<"${lines[-1]}")"
  local said
  said=$(grep -v 'running:' <<<"$stderr" | head -2 | tr '\n' ' ')
  [[ -z $said ]] || report "the rebuild said: $said"
}

# assert_restored: the rebuilt store holds what the healthy peers hold, and the region
# replicates on from it.
assert_restored() {
  local d
  d=$(content_digest "$R")
  assert_equal "$d" "$HEALTHY" "$R's content digest after the rebuild (flk-diverge digest)" || return 1
  run --separate-stderr flk-diverge --config "$(cfg_of "$R")" scan --no-worm "${STORES[@]}"
  assert_status 0 || return 1
  verify_all || return 1
  report "restored: content digest of $R equals the healthy peers' (${d:0:16}), scan clean, every store is its rebuild"
  # Replication goes on from the rebuilt watermarks: new records everywhere, one round.
  local r
  ROUND=$((${ROUND:-0} + 1))
  for r in "$EAST" "$WEST" "$EU"; do write_in "$r" 50 "round$ROUND-$r"; done
  ship_all || return 1
  read_all || return 1
  assert_equal "$(read_out "$R" | jq -s 'map(.records) | add')" 100 "records the rebuilt region read in the next round" || return 1
  verify_all || return 1
  assert_equal "$(winners_of "$R")" $((WINNERS + 150)) "winners in $R after the next round"
}

@test "truncated store: to a third it is malformed (detected, exit 65; fully rebuilt); to zero bytes it is empty (detected as missing; the runbook's --since-time restores it)" {
  converged
  local size
  size=$(stat -c %s "$DB")

  truncate -s $((size / 3)) "$DB"
  report "truncated $R's store from $size to $((size / 3)) bytes"
  assert_malformed
  # A reader that meets the store fails too (at its first pass), rather than skip.
  run --separate-stderr flk-read --config "$(cfg_of "$R")" --once
  assert_status 65
  full_rebuild
  assert_restored

  # An empty file is a valid, empty SQLite database: nothing is malformed, everything
  # is missing — the stores' comparison says so, and the runbook, replaying the WAL and
  # the mailbox from before the first record, puts it all back in place.
  # shellcheck disable=SC2030 # read by the helpers this test calls (same subshell)
  WINNERS=$(winners_of "$R")
  truncate -s 0 "$DB"
  report "truncated $R's store to 0 bytes"
  run --separate-stderr flk-rebuild-dedup --config "$(cfg_of "$R")" --verify
  assert_status 1
  assert_equal "$(jq -s 'map(select(.kind == "missing")) | length' <<<"$output")" "$WINNERS" "missing records (--verify)"
  run --separate-stderr flk-diverge --config "$(cfg_of "$R")" scan --no-worm "${STORES[@]}"
  assert_status 1
  jq -e -s --argjson w "$WINNERS" --arg r "$R" 'length == $w and all(.kind == "missing" and .regions[$r] == null)' <<<"$output" >/dev/null
  report "detected: flk-rebuild-dedup --verify exit 1 and flk-diverge scan exit 1, $WINNERS records missing in $R"
  HEALTHY=$(content_digest "$EAST")
  runbook --since-time 2026-11-26T00:00:00Z
  assert_status 0
  jq -e --argjson w "$WINNERS" '.mode == "in-place" and .winners == $w' <<<"${lines[-1]}"
  report "rebuilt (runbook --since-time, in place): $(jq -r '"\(.records) records, \(.inserted) inserted, \(.seconds) s"' <<<"${lines[-1]}")"
  assert_restored
}

@test "overwritten pages: random bytes over records pages in the middle of the file: detected (exit 65), fully rebuilt, digest equal" {
  converged
  # The leaf pages of the records table (SQLite's dbstat, read while the file is sound);
  # four from its middle are overwritten with pseudo-random bytes (a fixed AES-CTR key
  # stream: the same damage every run).
  local ps pages mid n
  ps=$(sqlite3 "$DB" 'PRAGMA page_size')
  mapfile -t pages < <(sqlite3 "$DB" "SELECT pageno FROM dbstat WHERE name = 'records' AND pagetype = 'leaf' ORDER BY pageno")
  ((${#pages[@]} >= 20))
  mid=$((${#pages[@]} / 2))
  for n in "${pages[@]:mid:4}"; do
    openssl enc -aes-128-ctr -K 000102030405060708090a0b0c0d0e0f -iv "$(printf '%032x' "$n")" </dev/zero 2>/dev/null |
      head -c "$ps" | dd of="$DB" bs="$ps" seek=$((n - 1)) conv=notrunc status=none
  done
  report "overwrote pages ${pages[*]:mid:4} (of ${#pages[@]} records leaf pages, $ps bytes each) of $R's store"
  assert_malformed
  full_rebuild
  assert_restored
}

@test "deleted rows: the lost pcs_ids are found exactly (scan and --verify exit 1), the runbook's --since-time from the oldest one restores them" {
  converged
  local ids=(east-000007 east-001500 west-000042 west-001999 eu-000001 eu-000777 shared-000003 shared-000025)
  local list
  list=$(printf "'%s'," "${ids[@]}")
  sqlite3 "$DB" "DELETE FROM records WHERE pcs_id IN (${list%,})"
  report "deleted ${#ids[@]} rows of $R's records table"
  local want
  want=$(printf 'missing %s\n' "${ids[@]}" | LC_ALL=C sort)

  run --separate-stderr flk-diverge --config "$(cfg_of "$R")" scan --no-worm "${STORES[@]}"
  assert_status 1
  assert_equal "$(jq -r '"\(.kind) \(.pcs_id)"' <<<"$output" | LC_ALL=C sort)" "$want" "scan's findings"
  jq -e -s --arg r "$R" 'all(.regions[$r] == null)' <<<"$output"
  # The window: the oldest lost record's time (what the runbook asks for).
  local since
  since=$(jq -s -r --arg r "$R" '[.[] | .regions | to_entries[] | select(.key != $r) | .value.ts] | min' <<<"$output")
  run --separate-stderr flk-rebuild-dedup --config "$(cfg_of "$R")" --verify
  assert_status 1
  assert_equal "$(jq -r 'select(.kind) | "\(.kind) \(.pcs_id)"' <<<"$output" | LC_ALL=C sort)" "$want" "--verify's differences"
  report "detected: flk-diverge scan exit 1 and flk-rebuild-dedup --verify exit 1, exactly the ${#ids[@]} deleted pcs_ids missing; oldest lost ts $since"

  runbook --since-time "$since"
  assert_status 0
  # shellcheck disable=SC2031 # set by converged() in this test
  jq -e --argjson n ${#ids[@]} --argjson w "$WINNERS" '.mode == "in-place" and .inserted == $n and .winners == $w' <<<"${lines[-1]}"
  report "rebuilt (runbook --since-time $since, in place): $(jq -r '"\(.records) records replayed, \(.inserted) inserted, \(.seconds) s"' <<<"${lines[-1]}")"
  assert_restored
}
