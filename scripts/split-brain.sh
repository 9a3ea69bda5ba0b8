#!/bin/sh
# split-brain.sh — the split-brain runbook (flk(7), RUNBOOKS; flk-diverge(1)): after a
# partition in which regions decided the same PCSs differently, find the conflicting
# writes, take the first write of each, reconcile the stores and verify.
#
#   ./scripts/split-brain.sh                 # detect and plan (changes nothing)
#   ./scripts/split-brain.sh --apply         # and reconcile
#
# Steps: 1 detect (flk-diverge scan over the regions' stores: diverge.stores of the
# configuration, or --store REGION=URL…); 2 the overlap window (earliest and latest ts
# of the conflicting records); 3 the first write of each (flk-diverge reconcile, a dry
# run: the plan); 4 with --apply, reconcile (installed everywhere, losers kept as
# evidence, each action in the WORM ledger); 5 verify (scan again: no divergence;
# flk-diverge verify-log: the ledger's chain holds — keep the head it prints).
# Let replication finish before (flk-watermark wait in every region): what is only
# late shows as "missing".
#
# Exit status: 0 no divergence, or reconciled and verified; 1 divergence found and
# not reconciled (without --apply: the plan is printed); 65 the ledger is damaged; a
# tool's status otherwise; 64 usage, 78 configuration, 127 a tool not found. POSIX sh.
set -eu

prog=split-brain.sh

usage() {
  cat <<EOF
Usage: $prog [--apply] [--store REGION=URL]... [--worm FILE] [--work-dir DIR]
                    [--config FILE] [--dry-run]
       $prog --help

Detect divergent outcomes between the regions' dedup stores, show the overlap
window and the first write of each, and with --apply reconcile and verify.

  --apply            reconcile (default: detect and print the plan, change nothing)
  --store REGION=URL a region's dedup store (repeatable; default: diverge.stores of
                     the configuration and this region's dedup.url)
  --worm FILE        the WORM ledger (default: paths.worm)
  --work-dir DIR     keep the findings and the plan there (default: a temporary
                     directory, removed at the end)
  --config FILE      the configuration (default: \$FLK_CONFIG, else /etc/flk/flk.yaml)
  --dry-run          print every step's command, run nothing
  -h, --help         print this help and exit

The flk tools are looked for on PATH, then in ../build/bin beside this script; jq is
needed for the overlap window.
Exit status: 0 nothing diverges (any more); 1 divergence left (no --apply); 65 the
ledger is damaged; a tool's status when a step fails; 64 usage error; 78
configuration; 127 a tool not found.
EOF
}

# shellcheck source-path=SCRIPTDIR source=lib/runbook.sh
. "$(dirname "$0")/lib/runbook.sh"

config=
apply=0
worm=
work=
dry_run=0
stores=
while [ $# -gt 0 ]; do
  case $1 in
    -h | --help) usage; exit 0 ;;
    --apply) apply=1; shift ;;
    --store) need_value "$1" $#; stores="$stores $(quote "--store=$2")"; shift 2 ;;
    --store=*) stores="$stores $(quote "$1")"; shift ;;
    --worm) need_value "$1" $#; worm=$2; shift 2 ;;
    --worm=*) worm=${1#*=}; shift ;;
    --work-dir) need_value "$1" $#; work=$2; shift 2 ;;
    --work-dir=*) work=${1#*=}; shift ;;
    --config) need_value "$1" $#; config=$2; shift 2 ;;
    --config=*) config=${1#*=}; shift ;;
    --dry-run) dry_run=1; shift ;;
    *) die 64 "unknown argument '$1' (see --help)" ;;
  esac
done

resolve_config
diverge=$(find_tool flk-diverge)
command -v jq >/dev/null 2>&1 || die 127 "jq not found: it is needed for the overlap window (apt-get install jq)"
# The stores and the ledger, as words for flk-diverge (quoted: eval'd below).
args="$stores"
[ -z "$worm" ] || args="$args $(quote "--worm=$worm")"
if [ -z "$work" ]; then
  work=$(mktemp -d "${TMPDIR:-/tmp}/split-brain.XXXXXX")
  trap 'rm -rf "$work"' EXIT
else
  mkdir -p "$work" || die 73 "cannot create --work-dir '$work'"
fi

# diverge SUBCOMMAND ARGS…: flk-diverge with the configuration, the stores and the
# ledger; returns its status.
diverge() {
  sub=$1
  shift
  eval "set -- $(quote "$diverge") --config $(quote "$config") $(quote "$sub") $args $(quote_all "$@")"
  run "$@"
}

if [ "$dry_run" = 1 ]; then
  # What each step would run (the later ones depend on what the first finds).
  step 1 "detect"
  diverge scan
  step 3 "the plan"
  diverge reconcile --no-worm
  if [ "$apply" = 1 ]; then
    step 4 "reconcile"
    diverge reconcile --apply
    step 5 "verify"
    diverge scan
    eval "set -- $(quote "$diverge") --config $(quote "$config") verify-log ${worm:+$(quote "$worm")}"
    run "$@"
  fi
  say "dry run: nothing was run"
  exit 0
fi

step 1 "detect: compare the regions' stores"
st=0
diverge scan >"$work/findings.jsonl" || st=$?
case $st in
  0)
    say "no divergence: nothing to do"
    exit 0
    ;;
  1) ;;
  *) die "$st" "flk-diverge scan failed (exit $st): see its message above" ;;
esac
conflicts=$(jq -s 'map(select(.kind == "conflict")) | length' "$work/findings.jsonl")
missing=$(jq -s 'map(select(.kind == "missing")) | length' "$work/findings.jsonl")
say "found $conflicts conflicting and $missing missing pcs_id(s) (findings: $work/findings.jsonl)"

step 2 "the overlap window: when the conflicting writes were made"
if [ "$conflicts" -gt 0 ]; then
  window=$(jq -r -s '[.[] | select(.kind == "conflict") | .regions[] | select(. != null) | .ts] | "\(min) .. \(max)"' \
    "$work/findings.jsonl")
  say "conflicting writes between $window"
  jq -r -s '[.[] | select(.kind == "conflict") | .regions | to_entries[] | select(.value != null) | .key]
    | group_by(.) | map("\(.[0]): \(length) record(s)") | .[]' "$work/findings.jsonl" |
    while read -r line; do say "  $line"; done
else
  say "no conflicting outcomes, only missing records (replication not finished, or rows lost)"
fi

step 3 "the first write of each: the plan"
st=0
diverge reconcile --no-worm >"$work/plan.jsonl" || st=$?
case $st in
  0 | 1) ;;
  *) die "$st" "flk-diverge reconcile (plan) failed (exit $st): see its message above" ;;
esac
jq -r -s 'map(.regions | to_entries[] | select(.value == "install") | .key) | group_by(.)
  | map("\(.[0]): \(length) install(s)") | .[]' "$work/plan.jsonl" | while read -r line; do say "  $line"; done
say "plan: $work/plan.jsonl"

if [ "$apply" = 0 ]; then
  say "not reconciled: run again with --apply to install the first writes"
  exit 1
fi

step 4 "reconcile"
must "flk-diverge reconcile --apply failed" "see its message above; run this again" diverge reconcile --apply >/dev/null

step 5 "verify"
must "flk-diverge scan: divergence remains after reconciling" \
  "a region may still be writing, or a store refused the changes" diverge scan >/dev/null
eval "set -- $(quote "$diverge") --config $(quote "$config") verify-log ${worm:+$(quote "$worm")}"
must "the WORM ledger does not verify" "keep it as it is (evidence) and see flk-diverge(1)" run "$@"
say "reconciled and verified; keep the ledger head printed above somewhere else"
