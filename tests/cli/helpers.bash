# shellcheck shell=bash
# Shared helpers for the bats suites under tests/cli (and tests/drills).
#
# Load with `load helpers` (drills: `load ../cli/helpers`). The suites run the built
# tools; where to find them:
#   FLK_SOURCE    the source tree (default: two levels above this file)
#   FLK_BIN       the tools (default: $FLK_SOURCE/build/bin)
#   FLK_TEST_LIB  test helpers such as libflkfault.so (default: $FLK_SOURCE/build/tests)
# CTest sets all three (tests/CMakeLists.txt). Every test works in its own
# $BATS_TEST_TMPDIR, which bats removes afterwards.
#
# JSON is checked with jq(1) (scripts/install-deps.sh installs it).

bats_require_minimum_version 1.5.0

FLK_SOURCE=${FLK_SOURCE:-$(cd "${BASH_SOURCE[0]%/*}/../.." && pwd)}
FLK_BIN=${FLK_BIN:-$FLK_SOURCE/build/bin}
FLK_TEST_LIB=${FLK_TEST_LIB:-$FLK_SOURCE/build/tests}
export FLK_SOURCE FLK_BIN FLK_TEST_LIB

# The region the suites write as.
REGION=us-east-1

# Call from setup(): checks the tools exist, puts them first on PATH, keeps the
# host's configuration out of the way and gives the test a WAL directory ($WAL).
flk_setup() {
  if [[ ! -x $FLK_BIN/flk-wal ]]; then
    echo "flk-wal not found in FLK_BIN='$FLK_BIN': build first (make) or set FLK_BIN" >&2
    return 1
  fi
  command -v jq >/dev/null || {
    echo "jq is needed by the suites (scripts/install-deps.sh installs it)" >&2
    return 1
  }
  PATH=$FLK_BIN:$PATH
  # A configuration in the environment or in /etc must not leak into the tests: an
  # empty one (the suites give --region and --wal-dir).
  export FLK_CONFIG=$BATS_TEST_TMPDIR/flk.yaml
  echo '# empty: tests give --region and --wal-dir' >"$FLK_CONFIG"
  WAL=$BATS_TEST_TMPDIR/wal
  export WAL
}

# gen_records N [PREFIX] [FIRST]: N JSON Lines records on stdout, pcs_ids
# PREFIX-000001… (from FIRST, default 1), every field present, outcomes cycling,
# ts one apart in nanoseconds from 2026-11-26T08:00:00.000000001Z so that every ts
# has nine fraction digits that survive formatting unchanged.
gen_records() {
  local n=$1 prefix=${2:-pcs} first=${3:-1}
  awk -v n="$n" -v p="$prefix" -v first="$first" -v region="$REGION" 'BEGIN {
    split("accepted escalated rejected", oc, " ")
    for (i = first; i < first + n; i++) {
      ns = 100000001 + i * 1000      # never ends in a zero digit
      printf "{\"pcs_id\":\"%s-%06d\",\"tenant_id\":\"tenant-%d\",\"outcome\":\"%s\",", p, i, i % 5, oc[i % 3 + 1]
      printf "\"ts\":\"2026-11-26T08:%02d:%02d.%09dZ\",\"region\":\"%s\",", int(i / 60) % 60, i % 60, ns % 1000000000, region
      printf "\"params\":\"v%d\",\"payload\":{\"n\":%d,\"doc\":\"%s-%06d\"}}\n", i % 4, i, p, i
    }
  }'
}

# One record with only the required fields.
min_record() { printf '{"pcs_id":"%s","tenant_id":"t","outcome":"accepted"}\n' "$1"; }

# wal_append ARGS…: flk-wal append into $WAL as $REGION (stdin: records).
wal_append() { flk-wal append --wal-dir "$WAL" --region "$REGION" "$@"; }

# The pcs_ids of JSON Lines (records or acks) on stdin, one a line, in order.
pcs_ids() { jq -r .pcs_id; }

# The sequence numbers of the segments in DIR (default $WAL), in order.
segment_numbers() {
  local f
  for f in "${1:-$WAL}"/*.wal "${1:-$WAL}"/*.open; do
    [[ -e $f ]] || continue
    f=${f##*/}
    echo $((10#${f:0:16}))
  done | sort -n
}

# The path of segment N of DIR (default $WAL), sealed or open.
segment_path() {
  local name
  name=$(printf '%016d' "$1")
  if [[ -e ${2:-$WAL}/$name.wal ]]; then echo "${2:-$WAL}/$name.wal"; else echo "${2:-$WAL}/$name.open"; fi
}

# Fails unless the segments of DIR (default $WAL) are numbered 1, 2, … N without a gap.
assert_contiguous() {
  local want=1 n
  while read -r n; do
    if [[ $n != "$want" ]]; then
      echo "segments are not contiguous: expected $want, found $n" >&2
      segment_numbers "${1:-$WAL}" | tr '\n' ' ' >&2
      return 1
    fi
    want=$((want + 1))
  done < <(segment_numbers "${1:-$WAL}")
  if [[ $want == 1 ]]; then
    echo "no segments in '${1:-$WAL}'" >&2
    return 1
  fi
}

# file_size FILE
file_size() { stat -c %s "$1"; }

# flip_byte FILE OFFSET: inverts every bit of one byte in place.
flip_byte() {
  local v
  v=$(od -An -tu1 -j "$2" -N1 "$1" | tr -d ' ')
  [[ -n $v ]] || { echo "flip_byte: '$1' has no byte at offset $2" >&2; return 1; }
  # shellcheck disable=SC2059  # the format is an octal escape built on purpose
  printf "\\$(printf %03o $((v ^ 255)))" | dd of="$1" bs=1 seek="$2" count=1 conv=notrunc status=none
}

# frame_offsets FILE: the offset of every frame of a segment, in order, after the
# 192-byte header. A frame is a 16-byte head (u32 payload length at offset 0, …) and
# its payload, per flk-wal(5) and lib/flk/wal/format.hpp. Fails on a missing file.
frame_offsets() {
  local file=$1 size off=192 len
  size=$(file_size "$file") || return 1
  while ((off + 16 <= size)); do
    echo "$off"
    len=$(od -An -tu4 -j "$off" -N4 "$file" | tr -d ' ')
    [[ -n $len ]] || return 1
    off=$((off + 16 + len))
  done
}

# Assertions on the result of `run` (bats sets $status, $output, $stderr, $lines).
assert_status() {
  if [[ ${status-} != "$1" ]]; then
    {
      echo "expected exit status $1, got ${status-}"
      echo "--- stdout"
      printf '%s\n' "${output-}"
      echo "--- stderr"
      printf '%s\n' "${stderr-}"
    } >&2
    return 1
  fi
}

# assert_stderr_has STRING…: stderr contains every STRING (fixed strings).
assert_stderr_has() {
  local s
  for s in "$@"; do
    if [[ ${stderr-} != *"$s"* ]]; then
      printf 'stderr lacks %q\n--- stderr\n%s\n' "$s" "${stderr-}" >&2
      return 1
    fi
  done
}

# assert_error_line: stderr holds a diagnostic in the shape of DESIGN.md §8.
assert_error_line() {
  if ! grep -q '^flk-wal: error: ' <<<"${stderr-}"; then
    printf "stderr has no 'flk-wal: error: ' line\n--- stderr\n%s\n" "${stderr-}" >&2
    return 1
  fi
}

# assert_equal ACTUAL EXPECTED [WHAT]
assert_equal() {
  if [[ $1 != "$2" ]]; then
    printf '%s differs\n--- expected\n%s\n--- actual\n%s\n' "${3:-value}" "$2" "$1" >&2
    return 1
  fi
}

# assert_all_present ACKED PRESENT: every line of file ACKED is a line of file PRESENT.
assert_all_present() {
  local missing
  missing=$(comm -23 <(sort -u "$1") <(sort -u "$2"))
  if [[ -n $missing ]]; then
    echo "$(wc -l <<<"$missing") acknowledged records are missing, e.g.:" >&2
    head -5 <<<"$missing" >&2
    return 1
  fi
}

# assert_no_duplicates FILE: no line occurs twice.
assert_no_duplicates() {
  local dup
  dup=$(sort "$1" | uniq -d)
  if [[ -n $dup ]]; then
    echo "duplicated lines in '$1', e.g.:" >&2
    head -5 <<<"$dup" >&2
    return 1
  fi
}

# is_ack LINE…: every line is exactly {"pcs_id":"…","segment":N,"offset":N}.
ACK_RE='^\{"pcs_id":"[^"]+","segment":[1-9][0-9]*,"offset":[1-9][0-9]*\}$'
assert_acks() {
  local l
  for l in "$@"; do
    if ! [[ $l =~ $ACK_RE ]]; then
      printf 'not an acknowledgement line: %q\n' "$l" >&2
      return 1
    fi
  done
}

# json_all FILTER: every JSON value on stdin satisfies the jq FILTER (and there is one).
json_all() {
  if ! jq -s -e "length > 0 and all(.[]; $1)" >/dev/null; then
    echo "not every JSON line satisfies: $1" >&2
    return 1
  fi
}

# Call from setup() of suites that run flk-rebuild-dedup against SQLite stores.
rebuild_setup() {
  flk_setup || return 1
  [[ -x $FLK_BIN/flk-rebuild-dedup ]] || {
    echo "flk-rebuild-dedup not found in FLK_BIN='$FLK_BIN'" >&2
    return 1
  }
  command -v sqlite3 >/dev/null || {
    echo "sqlite3 is needed by this suite (scripts/install-deps.sh installs it)" >&2
    return 1
  }
}

# drop_store URL: best effort, removes what a PostgreSQL (?schema=NAME) or Redis
# (?prefix=NAME) store of a test left behind: the schema and its rebuild twin, the keys.
drop_store() {
  local u=$1 name rest auth='' hostport db cli
  case $u in
    postgres*)
      command -v psql >/dev/null || return 0
      name=${u##*schema=}
      psql -q "${u%%\?*}" -c "DROP SCHEMA IF EXISTS \"$name\" CASCADE; DROP SCHEMA IF EXISTS \"${name}_rebuild\" CASCADE" \
        >/dev/null 2>&1 || true
      ;;
    redis*)
      command -v redis-cli >/dev/null || return 0
      name=${u##*prefix=}
      rest=${u%%\?*}
      rest=${rest#redis://}
      if [[ $rest == *@* ]]; then auth=${rest%%@*} rest=${rest#*@}; fi
      hostport=${rest%%/*}
      db=0
      [[ $rest == */* ]] && db=${rest#*/}
      cli=(redis-cli --no-auth-warning -h "${hostport%:*}" -p "${hostport##*:}" -n "${db:-0}")
      [[ -n $auth ]] && cli+=(-a "${auth#*:}")
      "${cli[@]}" --scan --pattern "$name:*" 2>/dev/null | xargs -r "${cli[@]}" DEL >/dev/null 2>&1 || true
      ;;
  esac
}
