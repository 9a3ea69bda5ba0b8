#!/usr/bin/env bats
# flk-rebuild-dedup(1): a rebuild equals the store it replaces (fresh, in place, from a
# time), --verify finds what a damaged store lost, conflicts from the mailbox keep their
# evidence and the earlier write, damage and kill -9 leave the old store intact, bad
# URLs are configuration errors, and PostgreSQL and Redis hold what SQLite holds
# (DESIGN.md §1, §3, §8; issue 3).
#
# SQLite stores are inspected with sqlite3(1); the back ends' digests are compared
# through the summary line's "digest". PostgreSQL and Redis run when the servers of
# tests/servers/ wrote $FLK_TEST_SERVERS/postgres.url and redis.url (CTest's "servers"
# fixture), and are skipped otherwise.

load helpers

setup() {
  rebuild_setup || return 1
  # The configuration names a mailbox that does not exist, so that no mailbox of the
  # host (/var/lib/flk/mailbox) is replayed unless a test asks for one.
  printf 'paths:\n  mailbox: %s\n' "$BATS_TEST_TMPDIR/no-mailbox" >"$FLK_CONFIG"
  export TMPDIR=$BATS_TEST_TMPDIR
}

# --- helpers -------------------------------------------------------------------------

# db NAME: the SQLite file of store NAME; url NAME: its URL.
db() { echo "$BATS_TEST_TMPDIR/$1.db"; }
url() { echo "sqlite://$(db "$1")"; }

# rb ARGS…: flk-rebuild-dedup of $WAL as $REGION.
rb() { flk-rebuild-dedup --region "$REGION" --wal-dir "$WAL" "$@"; }

# The last stdout line of `run` (the summary) and one of its fields.
summary() { printf '%s\n' "${lines[-1]}"; }
field() { jq -r ".$1" <<<"${lines[-1]}"; }

# assert_summary JQ-FILTER…: the summary line satisfies every filter.
assert_summary() {
  local f
  for f in "$@"; do
    if ! jq -e "$f" <<<"${lines[-1]-}" >/dev/null 2>&1; then
      printf 'summary fails: %s\n--- stdout\n%s\n--- stderr\n%s\n' "$f" "${output-}" "${stderr-}" >&2
      return 1
    fi
  done
}

assert_rb_error() {
  if ! grep -q '^flk-rebuild-dedup: error: ' <<<"${stderr-}"; then
    printf "stderr has no 'flk-rebuild-dedup: error: ' line\n--- stderr\n%s\n" "${stderr-}" >&2
    return 1
  fi
}

# dump NAME: everything a SQLite store holds, as text (records, evidence, watermarks).
dump() {
  sqlite3 "$(db "$1")" \
    "SELECT 'r', pcs_id, tenant_id, outcome, ts, region, params, payload, hex(digest) FROM records ORDER BY pcs_id;
     SELECT 'e', pcs_id, hex(digest), outcome, ts, region FROM evidence ORDER BY pcs_id, digest;
     SELECT 'w', source, sequence, hex(digest) FROM watermarks ORDER BY source;"
}
fingerprint() { dump "$1" | sha256sum | cut -c1-64; }
count() { sqlite3 "$(db "$1")" "SELECT count(*) FROM ${2:-records}"; }

# append_wal N [PREFIX]: N records into $WAL in small segments.
append_wal() { gen_records "$1" "${2:-pcs}" | wal_append --segment-bytes 64KiB >/dev/null; }

# The ts of record I of gen_records, whole seconds (records ≥ I have ts ≥ this).
ts_of() { printf '2026-11-26T08:%02d:%02dZ' $(($1 / 60 % 60)) $(($1 % 60)); }

# --- the command line ---------------------------------------------------------------

@test "--help and --version exit 0; the man page's SYNOPSIS has every option of --help" {
  run --separate-stderr flk-rebuild-dedup --help
  assert_status 0
  local help_opts man_opts
  # -q and -v stand for --quiet and --verbose in the SYNOPSIS, as in flk-wal(1).
  help_opts=$(grep -oE -- '--[a-z][a-z-]*' <<<"$output" | grep -vx -e --quiet -e --verbose | sort -u)
  [[ $help_opts == *--since-time* && $help_opts == *--verify* && $help_opts == *--in-place* ]]
  run --separate-stderr flk-rebuild-dedup --version
  assert_status 0
  [[ $output =~ ^flk-rebuild-dedup\ .*[0-9]+\.[0-9]+\.[0-9]+ ]]

  command -v mandoc >/dev/null || skip "mandoc is not installed"
  man_opts=$(mandoc -Tascii "$FLK_SOURCE/man/flk-rebuild-dedup.1" | col -b |
    sed -n '/^SYNOPSIS/,/^DESCRIPTION/p' | grep -oE -- '--[a-z][a-z-]*' | sort -u)
  assert_equal "$man_opts" "$help_opts" "options of the SYNOPSIS (expected: those of --help)"
}

@test "usage errors exit 64: unknown option, bad --since-time, no region, --mailbox with --no-mailbox" {
  append_wal 10
  run --separate-stderr rb --store "$(url a)" --no-such-option
  assert_status 64
  assert_rb_error
  run --separate-stderr rb --store "$(url a)" --since-time yesterday-ish
  assert_status 64
  assert_rb_error
  assert_stderr_has --since-time yesterday-ish
  [[ ! -e $(db a) ]]
  run --separate-stderr flk-rebuild-dedup --wal-dir "$WAL" --store "$(url a)"
  assert_status 64
  assert_stderr_has region
  mkdir "$BATS_TEST_TMPDIR/mb"
  run --separate-stderr rb --store "$(url a)" --mailbox "$BATS_TEST_TMPDIR/mb" --no-mailbox
  assert_status 64
  assert_rb_error
}

@test "a WAL of another region is refused (64); a missing WAL directory is 66" {
  append_wal 10
  run --separate-stderr flk-rebuild-dedup --region eu-west-1 --wal-dir "$WAL" --store "$(url a)"
  assert_status 64
  assert_rb_error
  assert_stderr_has "'$REGION'" "'eu-west-1'"
  run --separate-stderr flk-rebuild-dedup --region "$REGION" --wal-dir "$BATS_TEST_TMPDIR/nowhere" --store "$(url a)"
  assert_status 66
  assert_stderr_has "$BATS_TEST_TMPDIR/nowhere"
}

@test "bad store URLs exit 78 naming the URL with the password masked; unreachable servers exit 69" {
  append_wal 10
  run --separate-stderr rb --store 'mysql://flk:s3cret@db.example/flk'
  assert_status 78
  assert_rb_error
  assert_stderr_has "mysql://flk:***@db.example/flk"
  [[ ${stderr} != *s3cret* ]]
  run --separate-stderr rb --store 'sqlite://'
  assert_status 78
  assert_stderr_has "'sqlite://'"
  run --separate-stderr rb --store 'dedup.db'
  assert_status 78
  assert_stderr_has "'dedup.db'"
  # Nothing listens on port 1.
  run --separate-stderr rb --store 'postgres://flk:s3cret@127.0.0.1:1/flk?connect_timeout=2'
  assert_status 69
  assert_rb_error
  assert_stderr_has "postgres://flk:***@127.0.0.1:1/flk"
  [[ ${stderr} != *s3cret* ]]
  run --separate-stderr rb --store 'redis://:s3cret@127.0.0.1:1/0'
  assert_status 69
  assert_rb_error
  assert_stderr_has "127.0.0.1:1"
  [[ ${stderr} != *s3cret* ]]
}

# --- rebuild equals the original ------------------------------------------------------

@test "a store too damaged to open (truncated): --verify and --in-place refuse (65); a fresh rebuild moves it aside and rebuilds" {
  append_wal 2000
  run --separate-stderr rb --store "$(url a)"
  assert_status 0
  local digest
  digest=$(field digest)
  truncate -s $(($(stat -c %s "$(db a)") / 3)) "$(db a)"
  local damaged
  damaged=$(sha256sum <"$(db a)")
  run --separate-stderr rb --store "$(url a)" --verify
  assert_status 65
  assert_stderr_has "malformed"
  run --separate-stderr rb --store "$(url a)" --in-place
  assert_status 65
  run --separate-stderr rb --store "$(url a)"
  assert_status 0
  assert_stderr_has "flk-rebuild-dedup: warning: store '$(url a)'" "moved aside to '$(db a).damaged-"
  assert_equal "$(field digest)" "$digest" "digest of the rebuilt store"
  assert_equal "$(sha256sum <"$(db a)".damaged-*)" "$damaged" "the damaged file, kept as it was"
  [[ $(count a) == 2000 ]]
}

@test "a fresh rebuild and an in-place rebuild hold the same content; --verify agrees" {
  append_wal 2000
  gen_records 500 pcs | wal_append --segment-bytes 64KiB >/dev/null # exact duplicates
  run --separate-stderr rb --store "$(url a)"
  assert_status 0
  [[ ${#lines[@]} == 1 && -z $stderr ]]
  assert_summary '.mode == "fresh"' '.region == "us-east-1"' '.records == 2500' '.winners == 2000' \
    '.conflicts == 0' '.segments > 2' '.watermarks == 0' '.digest | test("^[0-9a-f]{64}$")'
  local fresh
  fresh=$(field digest)
  [[ $(count a) == 2000 ]]

  run --separate-stderr rb --store "$(url b)" --in-place
  assert_status 0
  assert_summary '.mode == "in-place"' '.inserted == 2000' '.duplicates == 500' '.replaced == 0' '.winners == 2000'
  assert_equal "$(field digest)" "$fresh" "digest of the in-place rebuild"
  assert_equal "$(dump b)" "$(dump a)" "content of the in-place store"

  # Every field survives: the records come back as flk-wal wrote them.
  assert_equal "$(sqlite3 "$(db a)" "SELECT payload FROM records WHERE pcs_id = 'pcs-000042'")" '{"n":42,"doc":"pcs-000042"}'

  run --separate-stderr rb --store "$(url a)" --verify
  assert_status 0
  [[ ${#lines[@]} == 1 ]]
  assert_summary '.mode == "verify"' '.differences == 0' ".digest == \"$fresh\""

  # A second fresh rebuild replaces the store with the same content.
  local before
  before=$(fingerprint a)
  run --separate-stderr rb --store "$(url a)"
  assert_status 0
  assert_equal "$(fingerprint a)" "$before" "store after a second fresh rebuild"
  [[ ! -e $(db a).rebuild ]]
}

@test "the external sort (many runs in --temp-dir) gives the same store as an in-memory sort" {
  append_wal 3000
  mkdir "$BATS_TEST_TMPDIR/runs"
  run --separate-stderr rb --store "$(url a)"
  assert_status 0
  assert_summary '.sort_runs == 0'
  local digest
  digest=$(field digest)
  run --separate-stderr rb --store "$(url b)" --sort-memory 64KiB --temp-dir "$BATS_TEST_TMPDIR/runs"
  assert_status 0
  assert_summary '.sort_runs > 3' ".digest == \"$digest\""
  assert_equal "$(dump b)" "$(dump a)" "content after the external sort"
  # The runs are removed at the end.
  [[ -z $(ls -A "$BATS_TEST_TMPDIR/runs") ]]
}

# --- a partially lost store -----------------------------------------------------------

@test "--verify lists what a damaged store lost (missing), gained (extra) and changed (different), exit 1" {
  append_wal 3000
  rb --store "$(url a)" >/dev/null
  local before
  sqlite3 "$(db a)" "DELETE FROM records WHERE pcs_id IN ('pcs-002001', 'pcs-002002', 'pcs-002500');
                     UPDATE records SET tenant_id = 'tampered', digest = randomblob(32) WHERE pcs_id = 'pcs-000007';
                     INSERT INTO records SELECT 'zz-stray', tenant_id, outcome, ts, region, params, payload, digest
                       FROM records WHERE pcs_id = 'pcs-000001';"
  before=$(fingerprint a)
  run --separate-stderr rb --store "$(url a)" --verify
  assert_status 1
  assert_summary '.mode == "verify"' '.differences == 5' '.winners == 3000'
  local diffs
  diffs=$(printf '%s\n' "${lines[@]:0:${#lines[@]}-1}")
  assert_equal "$(jq -r '[.pcs_id, .kind] | @tsv' <<<"$diffs")" \
    "$(printf 'pcs-000007\tdifferent\npcs-002001\tmissing\npcs-002002\tmissing\npcs-002500\tmissing\nzz-stray\textra')" \
    "differences"
  json_all '(.kind == "missing") == (.store == null) and (.kind == "extra") == (.rebuilt == null)' <<<"$diffs"
  jq -s -e '.[1].rebuilt | .pcs_id == "pcs-002001" and .outcome == "accepted" and .tenant_id == "tenant-1" and
    .ts == "2026-11-26T08:33:21.102001001Z" and (.digest | test("^[0-9a-f]{64}$"))' <<<"$diffs" >/dev/null
  jq -s -e '.[0] | .store.tenant_id == "tampered" and .rebuilt.tenant_id == "tenant-2"' <<<"$diffs" >/dev/null
  # --verify changed nothing.
  assert_equal "$(fingerprint a)" "$before" "store after --verify"
}

@test "a --since-time rebuild from before the lost records restores the store to a full rebuild's content" {
  append_wal 3000
  run --separate-stderr rb --store "$(url full)"
  assert_status 0
  local full
  full=$(field digest)
  cp "$(db full)" "$(db a)"
  # The store lost records written from record 2001 on (as if restored from an old copy).
  sqlite3 "$(db a)" "DELETE FROM records WHERE pcs_id >= 'pcs-002001'"
  [[ $(count a) == 2000 ]]

  run --separate-stderr rb --store "$(url a)" --since-time "$(ts_of 2000)"
  assert_status 0
  assert_summary '.mode == "in-place"' '.records == 1001' '.inserted == 1000' '.duplicates == 1' \
    ".digest == \"$full\"" '.winners == 3000'
  assert_equal "$(dump a)" "$(dump full)" "store after the --since-time rebuild"

  run --separate-stderr rb --store "$(url a)" --verify
  assert_status 0
  assert_summary '.differences == 0'
}

@test "a --since-time after the lost records leaves them lost, and --verify still says so" {
  append_wal 3000
  rb --store "$(url a)" >/dev/null
  sqlite3 "$(db a)" "DELETE FROM records WHERE pcs_id = 'pcs-000100'"
  run --separate-stderr rb --store "$(url a)" --since-time "$(ts_of 2000)"
  assert_status 0
  assert_summary '.inserted == 0'
  run --separate-stderr rb --store "$(url a)" --verify
  assert_status 1
  assert_equal "$(jq -r 'select(.kind) | .pcs_id' <<<"$output")" pcs-000100
}

# Was a bug (fixed in a3c00d9): the digest column alone was compared, so a field changed
# behind an intact digest went unseen.
@test "--verify finds a record whose fields were changed behind an intact digest" {
  append_wal 100
  rb --store "$(url a)" >/dev/null
  sqlite3 "$(db a)" "UPDATE records SET tenant_id = 'tampered' WHERE pcs_id = 'pcs-000007'"
  run --separate-stderr rb --store "$(url a)" --verify
  assert_status 1
  assert_equal "$(jq -r 'select(.kind) | [.pcs_id, .kind] | @tsv' <<<"$output")" "$(printf 'pcs-000007\tdifferent')"
}

# Was a bug (fixed in a3c00d9): with --since-time, --verify compared the
# whole store with the records since the time only.
@test "--verify --since-time on an intact store finds no differences" {
  append_wal 3000
  rb --store "$(url a)" >/dev/null
  run --separate-stderr rb --store "$(url a)" --verify --since-time "$(ts_of 2000)"
  assert_status 0
  assert_summary '.differences == 0'
}

# --- conflicts from the mailbox --------------------------------------------------------

# make_mailbox: a us-west-2 WAL whose records pcs-000001…10 conflict with $WAL's (other
# outcome; 1–5 written earlier than us-east-1's, 6–10 later) plus 20 of its own, and a
# mailbox $MB/us-west-2/us-east-1/ holding its sealed segments and their sidecars.
make_mailbox() {
  local west=$BATS_TEST_TMPDIR/wal-west
  MB=$BATS_TEST_TMPDIR/mailbox
  {
    REGION=us-west-2 gen_records 10 pcs | jq -c '.outcome = (if .outcome == "accepted" then "rejected" else "accepted" end)
      | .ts = (if (.pcs_id < "pcs-000006") then "2026-11-26T07:00:00Z" else "2026-11-26T09:00:00Z" end)'
    REGION=us-west-2 gen_records 20 west 1
  } | flk-wal append --wal-dir "$west" --region us-west-2 --segment-bytes 512 >/dev/null
  mkdir -p "$MB/us-west-2/us-east-1" "$MB/eu-west-1/us-west-2"
  cp "$west"/*.wal "$west"/*.wal.sha256 "$MB/us-west-2/us-east-1/"
  # Segments addressed to another target are not for us-east-1.
  cp "$west"/*.wal "$MB/eu-west-1/us-west-2/"
  WEST_LAST=$(find "$west" -name '*.wal' | sort | tail -n 1)
}

@test "conflicts via the mailbox: the earlier write wins, evidence rows are kept, the watermark is set" {
  append_wal 100
  make_mailbox
  run --separate-stderr rb --store "$(url a)" --mailbox "$MB"
  assert_status 0
  assert_summary '.records == 130' '.winners == 120' '.conflicts == 10' '.watermarks == 1'
  local fresh
  fresh=$(field digest)
  # The winner is the earlier write: us-west-2's for 1–5, us-east-1's for 6–10.
  assert_equal "$(sqlite3 "$(db a)" "SELECT pcs_id, region, ts FROM records WHERE pcs_id <= 'pcs-000010' ORDER BY pcs_id" |
    awk -F'|' '{ print $1, $2 }')" "$(for i in 1 2 3 4 5; do printf 'pcs-%06d us-west-2\n' "$i"; done
      for i in 6 7 8 9 10; do printf 'pcs-%06d us-east-1\n' "$i"; done)" "winners"
  # Both sides of every conflict are evidence: two outcomes for each of the ten pcs_ids.
  assert_equal "$(sqlite3 "$(db a)" "SELECT pcs_id, count(*), count(DISTINCT outcome), count(DISTINCT region)
      FROM evidence GROUP BY pcs_id" | sort | awk -F'|' '{ print $2 $3 $4 }' | uniq -c | awk '{ print $1, $2 }')" \
    "10 222" "evidence per pcs_id"
  [[ $(count a evidence) == 20 ]]
  # The watermark of us-west-2 is its last segment: sequence and SHA-256.
  local seq sha
  seq=$(basename "$WEST_LAST" .wal)
  sha=$(sha256sum "$WEST_LAST" | cut -c1-64)
  assert_equal "$(sqlite3 "$(db a)" "SELECT source, sequence, lower(hex(digest)) FROM watermarks")" \
    "us-west-2|$((10#$seq))|$sha" "watermarks"

  # In place, into an empty store, in the other order: the same winners and evidence.
  run --separate-stderr rb --store "$(url b)" --mailbox "$MB" --in-place
  assert_status 0
  assert_summary '.conflicts == 10' '.watermarks == 1' ".digest == \"$fresh\""
  assert_equal "$(dump b)" "$(dump a)" "in-place store with conflicts"

  run --separate-stderr rb --store "$(url a)" --mailbox "$MB" --verify
  assert_status 0
  assert_summary '.differences == 0' '.conflicts == 10'
}

@test "conflict evidence survives a rebuild that no longer sees the conflict" {
  append_wal 100
  make_mailbox
  rb --store "$(url a)" --mailbox "$MB" >/dev/null
  [[ $(count a evidence) == 20 ]]
  local evidence
  evidence=$(sqlite3 "$(db a)" "SELECT pcs_id, hex(digest), detected_at FROM evidence ORDER BY 1, 2")
  # The mailbox is gone (say, cleaned up): the records of us-west-2 go, the evidence stays.
  run --separate-stderr rb --store "$(url a)" --no-mailbox
  assert_status 0
  assert_summary '.conflicts == 0' '.winners == 100'
  assert_equal "$(sqlite3 "$(db a)" "SELECT pcs_id, hex(digest), detected_at FROM evidence ORDER BY 1, 2")" \
    "$evidence" "evidence after the rebuild"
  # … and a rebuild that sees the conflict again keeps each evidence row once.
  run --separate-stderr rb --store "$(url a)" --mailbox "$MB"
  assert_status 0
  [[ $(count a evidence) == 20 ]]
}

@test "a mailbox with a missing segment is replayed up to the gap, with a warning" {
  append_wal 100
  make_mailbox
  local n
  n=$(find "$MB/us-west-2/us-east-1" -name '*.wal' | wc -l)
  ((n >= 3))
  rm "$MB/us-west-2/us-east-1/0000000000000002.wal"
  run --separate-stderr rb --store "$(url a)" --mailbox "$MB"
  assert_status 0
  assert_stderr_has "us-west-2" "segment 2 is missing"
  assert_summary '.watermarks == 1'
  [[ $(sqlite3 "$(db a)" "SELECT sequence FROM watermarks WHERE source = 'us-west-2'") == 1 ]]
}

# --- damage and crashes --------------------------------------------------------------

@test "a damaged WAL segment stops the rebuild (65) naming segment and offset; the old store is untouched" {
  append_wal 2000
  rb --store "$(url a)" >/dev/null
  sqlite3 "$(db a)" "DELETE FROM records WHERE pcs_id = 'pcs-000003'" # so that a rebuild would change it
  local before seg off
  before=$(fingerprint a)
  seg=$(segment_path 2)
  off=$(frame_offsets "$seg" | sed -n 5p)
  flip_byte "$seg" $((off + 40))

  run --separate-stderr rb --store "$(url a)"
  assert_status 65
  assert_rb_error
  assert_stderr_has "$seg" "offset $off"
  [[ -z $output ]]
  assert_equal "$(fingerprint a)" "$before" "store after a failed fresh rebuild"
  [[ ! -e $(db a).rebuild ]]

  run --separate-stderr rb --store "$(url a)" --verify
  assert_status 65
  assert_stderr_has "$seg" "offset $off"
  assert_equal "$(fingerprint a)" "$before" "store after a failed --verify"
}

@test "kill -9 during a fresh rebuild of 200,000 records leaves the old store intact; a rerun completes" {
  gen_records 200000 big | wal_append >/dev/null
  mkdir "$BATS_TEST_TMPDIR/runs"
  local opts=(--store "$(url a)" --sort-memory 8MiB --temp-dir "$BATS_TEST_TMPDIR/runs")
  # The clean result, and how long it takes.
  local t0 clean seconds
  t0=$EPOCHREALTIME
  run --separate-stderr rb --store "$(url clean)" --sort-memory 8MiB --temp-dir "$BATS_TEST_TMPDIR/runs"
  assert_status 0
  assert_summary '.winners == 200000' '.sort_runs > 0'
  clean=$(field digest)
  seconds=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { print b - a }')

  # The old store: an earlier, smaller content.
  gen_records 1000 old | flk-wal append --wal-dir "$BATS_TEST_TMPDIR/wal-old" --region "$REGION" >/dev/null
  flk-rebuild-dedup --region "$REGION" --wal-dir "$BATS_TEST_TMPDIR/wal-old" --store "$(url a)" >/dev/null
  local old round delay pid killed=0
  old=$(fingerprint a)
  for round in 1 2 3 4 5 6 7 8; do
    # A moment within the first 60% of a clean run: before the swap.
    delay=$(awk -v s="$seconds" -v r="$RANDOM" 'BEGIN { printf "%.3f", s * (0.05 + 0.55 * r / 32768) }')
    flk-rebuild-dedup --region "$REGION" --wal-dir "$WAL" "${opts[@]}" >/dev/null 2>&1 &
    pid=$!
    sleep "$delay"
    kill -9 "$pid" 2>/dev/null || true
    local status=0
    wait "$pid" || status=$?
    local now
    now=$(fingerprint a)
    if ((status != 137)); then
      # The run finished before the kill (a fast machine): then the store must be the
      # complete rebuild. Put the old store back and try again.
      assert_equal "$status" 0 "exit status of a run that was not killed"
      assert_equal "$now" "$(fingerprint clean)" "store after a run that completed"
      echo "round $round: the rebuild completed before kill -9 (after ${delay}s)" >&3
      flk-rebuild-dedup --region "$REGION" --wal-dir "$BATS_TEST_TMPDIR/wal-old" --store "$(url a)" >/dev/null
      continue
    fi
    killed=$((killed + 1))
    assert_equal "$now" "$old" "store after kill -9 in round $round"
    [[ $(sqlite3 "$(db a)" "PRAGMA integrity_check") == ok ]]
  done
  ((killed > 0))

  run --separate-stderr rb "${opts[@]}"
  assert_status 0
  assert_summary ".digest == \"$clean\"" '.winners == 200000'
  assert_equal "$(fingerprint a)" "$(fingerprint clean)" "store after the rerun"
  [[ ! -e $(db a).rebuild ]]
}

@test "progress goes to stderr when it is a terminal, and nowhere otherwise" {
  command -v script >/dev/null || skip "script(1) is not installed"
  gen_records 210000 big | wal_append >/dev/null
  run --separate-stderr rb --store "$(url a)"
  assert_status 0
  [[ -z $stderr ]]
  local cmd
  printf -v cmd '%q ' flk-rebuild-dedup --region "$REGION" --wal-dir "$WAL" --store "$(url b)"
  run script -qec "$cmd >/dev/null" /dev/null
  assert_status 0
  [[ $output == *"flk-rebuild-dedup: loaded 200000 records"* ]]
}

# --- PostgreSQL and Redis ---------------------------------------------------------------

# need_server NAME: skips the test unless the test servers wrote FLK_TEST_SERVERS/NAME.url.
need_server() {
  [[ -n ${FLK_TEST_SERVERS:-} && -s $FLK_TEST_SERVERS/$1.url ]] || skip "no $1 server (FLK_TEST_SERVERS/$1.url)"
}

# server_url NAME PARAM: the URL the test servers wrote, with PARAM=<unique> added.
server_url() {
  local u
  u=$(<"$FLK_TEST_SERVERS/$1.url")
  local unique
  unique=rb_$(date +%s)_$$_$RANDOM
  if [[ $u == *\?* ]]; then echo "$u&$2=$unique"; else echo "$u?$2=$unique"; fi
}

# same_as_sqlite URL URL2 [REBUILD-ARGS…]: fresh (twice: the second replaces the first),
# in place (into URL2), --verify and a --since-time merge all give SQLite's digest.
same_as_sqlite() {
  local u=$1 u2=$2
  shift 2
  run --separate-stderr rb --store "$(url a)" "$@"
  assert_status 0
  local want winners conflicts
  want=$(field digest)
  winners=$(field winners)
  conflicts=$(field conflicts)
  run --separate-stderr rb --store "$u" "$@"
  assert_status 0
  assert_summary '.mode == "fresh"' ".winners == $winners" ".conflicts == $conflicts" ".digest == \"$want\""
  run --separate-stderr rb --store "$u" "$@"
  assert_status 0
  assert_summary ".digest == \"$want\""
  run --separate-stderr rb --store "$u2" --in-place "$@"
  assert_status 0
  assert_summary ".inserted == $winners" ".digest == \"$want\""
  run --separate-stderr rb --store "$u" --verify "$@"
  assert_status 0
  assert_summary '.differences == 0'
  # A --since-time merge into the rebuilt store changes nothing.
  run --separate-stderr rb --store "$u" --since-time "$(ts_of 2000)" "$@"
  assert_status 0
  assert_summary '.inserted == 0' ".digest == \"$want\""
}

@test "PostgreSQL: rebuilds of the WAL give the same digest as SQLite" {
  need_server postgres
  # shellcheck disable=SC2030 # teardown reads it (same subshell)
  PG_URLS=("$(server_url postgres schema)" "$(server_url postgres schema)")
  append_wal 3000
  same_as_sqlite "${PG_URLS[@]}"
}

@test "PostgreSQL: rebuilds with conflicts from the mailbox give the same digest and evidence as SQLite" {
  need_server postgres
  # shellcheck disable=SC2030 # teardown reads it (same subshell)
  PG_URLS=("$(server_url postgres schema)" "$(server_url postgres schema)")
  append_wal 3000
  make_mailbox
  same_as_sqlite "${PG_URLS[@]}" --mailbox "$MB"
  if command -v psql >/dev/null; then
    local schema=${PG_URLS[0]##*schema=}
    [[ $(psql -XAtq "${PG_URLS[0]%%\?*}" -c "SELECT count(*) FROM \"$schema\".evidence") == 20 ]]
  fi
}

@test "Redis: rebuilds of the WAL give the same digest as SQLite" {
  need_server redis
  # shellcheck disable=SC2030 # teardown reads it (same subshell)
  REDIS_URLS=("$(server_url redis prefix)" "$(server_url redis prefix)")
  append_wal 3000
  same_as_sqlite "${REDIS_URLS[@]}"
}

@test "Redis: rebuilds with conflicts from the mailbox give the same digest as SQLite" {
  need_server redis
  # shellcheck disable=SC2030 # teardown reads it (same subshell)
  REDIS_URLS=("$(server_url redis prefix)" "$(server_url redis prefix)")
  append_wal 3000
  make_mailbox
  same_as_sqlite "${REDIS_URLS[@]}" --mailbox "$MB"
}

# shellcheck disable=SC2031 # set by the test, read here: bats runs both in one subshell
teardown() {
  # Best effort: drop what the PostgreSQL and Redis tests created.
  local u
  for u in "${PG_URLS[@]}" "${REDIS_URLS[@]}"; do drop_store "$u"; done
}
