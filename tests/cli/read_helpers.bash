# shellcheck shell=bash
# Helpers of the replay suites (flk-read.bats, flk-read-e2e.bats): one directory per
# region under $BATS_TEST_TMPDIR (WAL, mailbox, state, SQLite store, tokens, config),
# shipping with flk-ship, replaying with flk-read, and comparing stores by content only:
# `flk-rebuild-dedup --verify` exits 0 when a store equals the rebuild of a WAL and a
# mailbox, and its summary's "digest" is that content's digest. (SQLite tables are not
# read directly: the store's schema is not part of the contract.)
#
# Load with `load read_helpers` (it loads ship_helpers, hence helpers). Every process a
# test starts in the background is recorded in $PIDS and stopped by read_teardown.

load ship_helpers

# shellcheck disable=SC2034 # used by the suites that load this file
EAST=us-east-1 # = $REGION of helpers.bash
# WEST and EU come from ship_helpers: us-west-2, eu-west-1.

read_setup() {
  ship_setup || return 1
  local t
  for t in flk-read flk-rebuild-dedup; do
    [[ -x $FLK_BIN/$t ]] || {
      echo "$t not found in FLK_BIN='$FLK_BIN'" >&2
      return 1
    }
  done
  # The host's mailbox and state (/var/lib/flk) must never be read or written: the
  # default configuration names directories of the test that do not exist.
  printf 'paths:\n  mailbox: %s\n  state: %s\n' "$BATS_TEST_TMPDIR/no-mailbox" "$BATS_TEST_TMPDIR/no-state" >"$FLK_CONFIG"
  export TMPDIR=$BATS_TEST_TMPDIR
  STORE_URLS=() # PostgreSQL / Redis stores made by backend_url, dropped in teardown
}

read_teardown() {
  ship_teardown
  drop_backend_stores
  return 0
}

# --- per-region layout --------------------------------------------------------------------

rdir() { echo "$BATS_TEST_TMPDIR/r-$1"; }
wal_of() { echo "$(rdir "$1")/wal"; }
mb_of() { echo "$(rdir "$1")/mailbox"; }
state_of() { echo "$(rdir "$1")/state"; }
cfg_of() { echo "$(rdir "$1")/flk.yaml"; }
# sqlite_of R [NAME]: a SQLite store URL of region R (NAME default "dedup").
sqlite_of() { echo "sqlite://$(rdir "$1")/${2:-dedup}.db"; }

# append_in R N PREFIX [FIRST] [SEGMENT-BYTES]: N generated records written by region R
# (their "region" field is R) into R's WAL, in segments of SEGMENT-BYTES (default 4096),
# all sealed.
append_in() {
  local r=$1 n=$2 p=$3 first=${4:-1} bytes=${5:-4096}
  mkdir -p "$(rdir "$r")"
  REGION=$r gen_records "$n" "$p" "$first" |
    flk-wal append --wal-dir "$(wal_of "$r")" --region "$r" --segment-bytes "$bytes" >/dev/null
}

# records_in R FILE [SEGMENT-BYTES]: the JSON Lines records of FILE into R's WAL.
records_in() {
  mkdir -p "$(rdir "$1")"
  flk-wal append --wal-dir "$(wal_of "$1")" --region "$1" --segment-bytes "${3:-4096}" <"$2" >/dev/null
}

# sealed_of R: the number of sealed segments in R's WAL.
sealed_of() { sealed_numbers "$(wal_of "$1")" | wc -l; }

# ship_cfg SRC TARGET…: a multi-way configuration of region SRC (its WAL and state)
# shipping to every TARGET; prints its path. (The endpoints are left out: the callers
# give --to.)
ship_cfg() {
  local src=$1 cfg
  shift
  cfg=$(rdir "$src")/ship.yaml
  mkdir -p "$(rdir "$src")"
  {
    printf 'region: %s\npaths:\n  wal: %s\n  state: %s\n' "$src" "$(wal_of "$src")" "$(state_of "$src")"
    printf 'crr:\n  enabled: true\n  replicationMode: multi-way\n  peers: [%s]\n' "$(IFS=,; echo "$*")"
  } >"$cfg"
  echo "$cfg"
}

# ship_file SRC MAILBOX TARGET… [-- FLK-SHIP ARGS]: ships SRC's WAL to every TARGET over
# file://MAILBOX (watermarks in SRC's state). Prints flk-ship's JSON lines.
ship_file() {
  local src=$1 mb=$2 targets=()
  shift 2
  while (($#)) && [[ $1 != -- ]]; do targets+=("$1") && shift; done
  [[ ${1-} == -- ]] && shift
  flk-ship --config "$(ship_cfg "$src" "${targets[@]}")" --once --to "file://$mb" \
    --initial-backoff 50ms --max-backoff 200ms --deadline 2s "$@"
}

# ship_stream SRC TARGET [FLK-SHIP ARGS]: SRC's segments for TARGET as a framed stream on
# stdout (flk-ship --to -; its JSON lines are dropped).
ship_stream() {
  local src=$1 target=$2
  shift 2
  flk-ship --config "$(ship_cfg "$src" "$target")" --once --to - "$@" 2>/dev/null
}

# rd R STORE [FLK-READ ARGS…]: flk-read --once as region R into STORE; --from defaults
# to R's mailbox (file://), --state-dir to R's state.
rd() {
  local r=$1 store=$2
  shift 2
  local from=(--from "file://$(mb_of "$r")")
  [[ " $* " == *" --from "* ]] && from=()
  flk-read --region "$r" --store "$store" --state-dir "$(state_of "$r")" "${from[@]}" --once "$@"
}

# --- comparing stores ------------------------------------------------------------------

# verify R STORE MAILBOX [WAL]: runs flk-rebuild-dedup --verify of STORE against the
# rebuild of R's WAL (or WAL; an empty directory is made when there is none) and
# MAILBOX; sets VERIFY_OUT (its stdout), VERIFY_STATUS and DIGEST (the summary's
# digest: the content's). Never fails by itself.
verify() {
  local r=$1 store=$2 mb=$3 wal=${4:-$(wal_of "$1")}
  mkdir -p "$wal" "$mb"
  VERIFY_STATUS=0
  VERIFY_OUT=$(flk-rebuild-dedup --verify --region "$r" --wal-dir "$wal" --mailbox "$mb" --store "$store" \
    2>"$BATS_TEST_TMPDIR/verify.err") || VERIFY_STATUS=$?
  DIGEST=$(tail -n 1 <<<"$VERIFY_OUT" | jq -r '.digest // empty' 2>/dev/null)
}

# assert_store_equals R STORE MAILBOX [WAL]: STORE holds exactly the rebuild of R's WAL
# (or WAL) and MAILBOX: --verify exits 0 with no difference. Sets DIGEST.
assert_store_equals() {
  verify "$@"
  if [[ $VERIFY_STATUS != 0 ]] || ! tail -n 1 <<<"$VERIFY_OUT" | jq -e '.differences == 0' >/dev/null 2>&1; then
    {
      echo "store '$2' is not the rebuild of region $1's WAL and mailbox '$3' (status $VERIFY_STATUS):"
      head -n 20 <<<"$VERIFY_OUT"
      cat "$BATS_TEST_TMPDIR/verify.err"
    } >&2
    return 1
  fi
  [[ -n $DIGEST ]] || { echo "no digest in: $VERIFY_OUT" >&2; return 1; }
}

# assert_store_differs R STORE MAILBOX [WAL]: the opposite (exit 1, differences listed):
# proves a comparison can fail.
assert_store_differs() {
  verify "$@"
  if [[ $VERIFY_STATUS != 1 ]]; then
    echo "expected store '$2' to differ from the rebuild of '$3' (status $VERIFY_STATUS): $VERIFY_OUT" >&2
    return 1
  fi
}

# stream_copy MAILBOX SOURCE TARGET DEST-MAILBOX [LAST]: copies the stream SOURCE→TARGET
# of MAILBOX into DEST-MAILBOX, segments 1..LAST only (default: all), with sidecars.
stream_copy() {
  local src_dir=$1/$2/$3 dst_dir=$4/$2/$3 last=${5:-} n
  mkdir -p "$dst_dir"
  for n in $(sealed_numbers "$src_dir"); do
    [[ -n $last ]] && ((n > last)) && break
    cp "$src_dir/$(seg_name "$n")" "$src_dir/$(seg_name "$n").sha256" "$dst_dir/"
  done
}

# set_sidecar FILE: rewrites FILE's sidecar for its current bytes.
set_sidecar() { (cd "${1%/*}" && sha256sum "${1##*/}" >"${1##*/}.sha256"); }

# --- JSON lines of flk-read --------------------------------------------------------------

# seqs SOURCE [JSON]: the sequences applied from SOURCE in JSON lines (default $output),
# one a line, in order.
seqs() { jq -r --arg s "$1" 'select(.source == $s) | .sequence' <<<"${2-$output}"; }
# total FIELD [SOURCE] [JSON]: the sum of FIELD over the JSON lines (of SOURCE).
total() {
  jq -s --arg s "${2-}" "map(select(\$s == \"\" or .source == \$s) | .$1) | add // 0" <<<"${3-$output}"
}

# assert_lines_shape [JSON]: every line has the documented fields with sane values.
assert_lines_shape() {
  local j=${1-$output}
  [[ -n $j ]] || { echo "no JSON lines" >&2; return 1; }
  jq -e -s 'all(.[]; (.source | type == "string") and (.sequence | type == "number" and . >= 1)
      and (.records | type == "number") and (.applied | type == "number")
      and (.duplicates | type == "number") and (.conflicts | type == "number")
      and .applied + .duplicates + .later == .records and (.sha256 | test("^[0-9a-f]{64}$")))' \
    <<<"$j" >/dev/null || { printf 'malformed JSON lines:\n%s\n' "$j" >&2; return 1; }
}

# assert_sha_of_stream SOURCE STREAM-DIR [JSON]: each line's sha256 is the SHA-256 of
# the segment it names in STREAM-DIR.
assert_sha_of_stream() {
  local s=$1 dir=$2 j=${3-$output} seq sha
  while read -r seq sha; do
    assert_equal "$sha" "$(sha256sum <"$dir/$(seg_name "$seq")" | cut -c1-64)" "sha256 of $s segment $seq" || return 1
  done < <(jq -r --arg s "$s" 'select(.source == $s) | "\(.sequence) \(.sha256)"' <<<"$j")
}

# --- PostgreSQL and Redis ------------------------------------------------------------------

# need_server NAME: skips the test unless the CTest fixture's servers are there.
need_server() {
  [[ -n ${FLK_TEST_SERVERS:-} ]] ||
    skip "FLK_TEST_SERVERS is unset: no $1 server (CTest's servers fixture, or tests/servers/start.sh DIR)"
  [[ -s $FLK_TEST_SERVERS/$1.url ]] || skip "no $1 server: '$FLK_TEST_SERVERS/$1.url' is missing"
}

# backend_url NAME: an isolated store on the test server NAME (postgres: ?schema=,
# redis: ?prefix=), remembered for teardown.
backend_url() {
  local u param
  u=$(<"$FLK_TEST_SERVERS/$1.url")
  if [[ $1 == postgres ]]; then param=schema; else param=prefix; fi
  local unique
  unique=rd_$(date +%s)_$$_$RANDOM$RANDOM
  if [[ $u == *\?* ]]; then u="$u&$param=$unique"; else u="$u?$param=$unique"; fi
  STORE_URLS+=("$u")
  echo "$u" >>"$BATS_TEST_TMPDIR/backend-urls"
  echo "$u"
}

# Best effort: drops the schemas and keys the test's backend stores made.
drop_backend_stores() {
  local u
  [[ -f $BATS_TEST_TMPDIR/backend-urls ]] || return 0
  while read -r u; do drop_store "$u"; done <"$BATS_TEST_TMPDIR/backend-urls"
}
