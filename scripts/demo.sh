#!/bin/sh
# An end-to-end run of the inbox WAL: generate records, append them, list, verify
# and print them, then show what damage and a crash look like. Everything happens in
# a temporary directory that is removed at the end.
#
# Usage: scripts/demo.sh [BINDIR]     (default: $FLK_BIN, else build/bin)
#        DEMO_RECORDS=N scripts/demo.sh   (default: 5000 records)
set -eu

cd "$(dirname "$0")/.."
bin=${1:-${FLK_BIN:-build/bin}}
case $bin in /*) ;; *) bin=$(pwd)/$bin ;; esac
wal_tool=$bin/flk-wal
records=${DEMO_RECORDS:-5000}

die() {
  echo "demo.sh: error: $*" >&2
  exit 1
}

[ -x "$wal_tool" ] || die "cannot run '$wal_tool': build the tools first (make)"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/flk-demo.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

step() {
  printf '\n== %s\n' "$*"
}

# "segment 3: 517 records, 65490 bytes, sha256 1f2e3d4c5b6a7988..." from ls/seal JSON.
summarize() {
  sed -E 's/^\{"segment":([0-9]+),"state":"([a-z]+)","records":([0-9]+),.*"bytes":([0-9]+),"sha256":"(.{16}).*/  segment \1 (\2): \3 records, \4 bytes, sha256 \5.../'
}

# A configuration of our own, so that nothing on this machine (/etc/flk/flk.yaml,
# $FLK_CONFIG) changes the run: small segments, so that there are several of them.
cat >"$tmp/flk.yaml" <<EOF
region: us-east-1
paths:
  wal: $tmp/wal
wal:
  segmentBytes: 64KiB
  segmentAge: 200ms
EOF
FLK_CONFIG=$tmp/flk.yaml
export FLK_CONFIG

step "configuration ($FLK_CONFIG)"
sed 's/^/  /' "$FLK_CONFIG"

step "generate $records records"
awk -v n="$records" 'BEGIN {
  split("tenant-a tenant-b tenant-c", tenants, " ")
  for (i = 0; i < n; i++) {
    outcome = "accepted"
    if (i % 10 == 3) outcome = "escalated"
    if (i % 17 == 5) outcome = "rejected"
    s = int(i / 1000)
    printf "{\"pcs_id\":\"%064x\",\"tenant_id\":\"%s\",\"outcome\":\"%s\",", i * 2654435761 % 4294967296, tenants[i % 3 + 1], outcome
    printf "\"ts\":\"2026-11-26T08:%02d:%02d.%03dZ\",\"params\":\"tolerance-v1.4\"", int(s / 60) % 60, s % 60, i % 1000
    if (i % 50 == 0) printf ",\"payload\":{\"n\":%d,\"dims\":[3,4]}", i
    printf "}\n"
  }
}' >"$tmp/records.jsonl"
head -n 2 "$tmp/records.jsonl" | sed 's/^/  /'

step "append them: one acknowledgement per record, printed once it is on disk"
"$wal_tool" append <"$tmp/records.jsonl" >"$tmp/acks.jsonl"
acks=$(wc -l <"$tmp/acks.jsonl")
[ "$acks" -eq "$records" ] || die "expected $records acknowledgements, got $acks"
echo "  $acks acknowledgements; the first and the last:"
sed -n '1p;$p' "$tmp/acks.jsonl" | sed 's/^/  /'

step "flk-wal ls"
"$wal_tool" ls >"$tmp/ls.jsonl"
summarize <"$tmp/ls.jsonl"
segments=$(wc -l <"$tmp/ls.jsonl")

step "flk-wal verify: every checksum, every seal, every digest, the hash chain"
"$wal_tool" verify >"$tmp/verify.jsonl"
ok=$(grep -c '"ok":true' "$tmp/verify.jsonl" || true)
echo "  $ok of $segments segments sound (exit status 0)"

step "flk-wal cat: the records back, as JSON Lines"
"$wal_tool" cat >"$tmp/cat.jsonl"
n=$(wc -l <"$tmp/cat.jsonl")
[ "$n" -eq "$records" ] || die "expected $records records from cat, got $n"
head -n 3 "$tmp/cat.jsonl" | sed 's/^/  /'
escalated=$(grep -c '"outcome":"escalated"' "$tmp/cat.jsonl" || true)
echo "  ... $n records, $escalated of them escalated"
since=$("$wal_tool" cat --since 2026-11-26T08:00:04Z | wc -l)
echo "  flk-wal cat --since 2026-11-26T08:00:04Z: $since records"
echo "  the digests are sha256sum(1)'s: $(cd "$tmp/wal" && cat ./*.wal.sha256 | sha256sum -c --quiet && echo 'sha256sum -c: all OK')"

step "damage: flip one bit in a copy of segment 2 and verify the copy"
cp -R "$tmp/wal" "$tmp/damaged"
victim=$tmp/damaged/0000000000000002.wal
[ -f "$victim" ] || die "no segment 2: too few records for a demo ($records)"
at=211 # 192-byte header, 16-byte frame head, then a byte of the first record's ts
byte=$(od -An -tu1 -j "$at" -N 1 "$victim" | tr -d ' ')
# shellcheck disable=SC2059 # the format is the octal escape of the new byte
printf "\\$(printf '%03o' $((byte ^ 1)))" | dd of="$victim" bs=1 seek="$at" conv=notrunc 2>/dev/null
rc=0
"$wal_tool" verify --wal-dir "$tmp/damaged" >"$tmp/damaged.jsonl" 2>"$tmp/damaged.err" || rc=$?
sed 's/^/  /' "$tmp/damaged.err"
grep '"ok":false' "$tmp/damaged.jsonl" | sed 's/^/  /'
echo "  exit status $rc"
[ "$rc" -eq 65 ] || die "verify of a damaged copy exited $rc, not 65"

step "a crash: a torn tail in the open segment is cut when the writer next opens the WAL"
head -n 10 "$tmp/records.jsonl" | sed 's/"pcs_id":"0/"pcs_id":"f/' |
  "$wal_tool" append --keep-open >/dev/null
for open_segment in "$tmp/wal"/*.open; do :; done
[ -f "$open_segment" ] || die "no open segment after append --keep-open"
printf 'half a frame' >>"$open_segment"
"$wal_tool" verify 2>&1 >/dev/null | sed 's/^/  /'
head -n 1 "$tmp/records.jsonl" | sed 's/"pcs_id":"0/"pcs_id":"e/' |
  "$wal_tool" append 2>&1 >/dev/null | sed 's/^/  /'
"$wal_tool" verify >/dev/null
total=$("$wal_tool" cat | wc -l)
[ "$total" -eq $((records + 11)) ] || die "expected $((records + 11)) records after recovery, got $total"
echo "  the WAL verifies again and holds $total records"

step "summary"
echo "  appended and acknowledged:  $records records in $segments sealed segments"
echo "  verify:                     $ok of $segments segments sound"
echo "  a one-bit flip:             found by verify, exit status $rc"
echo "  a torn tail:                cut on recovery, nothing acknowledged lost"
echo "  (all of it in $tmp, now removed)"
