#!/bin/sh
# failback.sh — the failback of the multi-region DR runbook (flk(7), RUNBOOKS): bring a
# region back into service after an outage. Run it on the returning region, with its
# flk-serve running and its writes still off:
#
#   ./scripts/failback.sh --region us-east-1 [--since-time <timestamp>]
#
# Steps: 1 verify the WAL (flk-wal verify: a damaged WAL stops here, 65); 2 check the
# dedup store against the WAL and the mailbox (flk-rebuild-dedup --verify) and, when it
# is lost, unreadable or differs, rebuild it with rebuild-dedup-from-wal.sh (from
# --since-time when given and the store is readable, else in full); 3 replay what peers
# shipped meanwhile (flk-read --once); 4 verify: the store equals its rebuild, and — when
# diverge.stores names the peers' stores — no divergence (flk-diverge scan); 5 print
# the ramp notes (re-enable in the load balancer, 10% → 25% → 50% → 100%, what to watch
# between steps). The script never turns traffic back on itself.
#
# Exit status: 0 ready to ramp; 1 a verification found differences (see its output);
# the failing tool's status otherwise (65 damaged WAL, 69 store unreachable, 75 a peer
# unreachable: run again); 64 usage, 78 configuration, 127 a tool not found. POSIX sh.
set -eu

prog=failback.sh

usage() {
  cat <<EOF
Usage: $prog --region REGION [--since-time TIME] [--config FILE] [--dry-run]
       $prog --help

Bring a region back after an outage: verify its WAL, rebuild its dedup store if it
was lost or damaged, replay what peers shipped meanwhile, verify, and print the
traffic ramp notes.

  --region REGION    the returning region: this host's (the configuration's)
  --since-time TIME  when the store must be rebuilt and is still readable, replay only
                     the records from TIME on (merged into it); without it, or when the
                     store is unreadable, a full rebuild. TIME: an RFC 3339 timestamp
                     (2026-11-26T08:00:00Z), @UNIX-SECONDS, or a duration ago (-2h)
  --config FILE      the configuration (default: \$FLK_CONFIG, else /etc/flk/flk.yaml)
  --dry-run          print every step's command, run nothing
  -h, --help         print this help and exit

The flk tools are looked for on PATH, then in ../build/bin beside this script.
Exit status: 0 ready to ramp; 1 a verification found differences; a tool's status
when a step fails; 64 usage error; 78 configuration; 127 a tool not found.
EOF
}

# shellcheck source-path=SCRIPTDIR source=lib/runbook.sh
. "$(dirname "$0")/lib/runbook.sh"

region=
config=
since=
since_set=0
dry_run=0
while [ $# -gt 0 ]; do
  case $1 in
    -h | --help) usage; exit 0 ;;
    --region) need_value "$1" $#; region=$2; shift 2 ;;
    --region=*) region=${1#*=}; shift ;;
    --config) need_value "$1" $#; config=$2; shift 2 ;;
    --config=*) config=${1#*=}; shift ;;
    --since-time) need_value "$1" $#; since=$2; since_set=1; shift 2 ;;
    --since-time=*) since=${1#*=}; since_set=1; shift ;;
    --dry-run) dry_run=1; shift ;;
    *) die 64 "unknown argument '$1' (see --help)" ;;
  esac
done

[ -n "$region" ] || die 64 "give --region REGION: the returning region (this host's)"
if [ "$since_set" = 1 ] && ! valid_time "$since"; then
  die 64 "invalid --since-time '$since': expected an RFC 3339 timestamp such as 2026-11-26T08:00:00Z, @UNIX-SECONDS, or a duration ago such as -2h"
fi
resolve_config
resolve_region
wal=$(find_tool flk-wal)
rebuild=$(find_tool flk-rebuild-dedup)
read=$(find_tool flk-read)
diverge=$(find_tool flk-diverge)
here=$(cd "$(dirname "$0")" && pwd)

say "failback of region '$region' (configuration '$config')"

step 1 "verify the WAL"
must "flk-wal verify: the WAL is damaged" "see flk-wal(1) before going on; nothing was changed" \
  run "$wal" --config "$config" verify >/dev/null

step 2 "check the dedup store against the WAL and the mailbox"
st=0
run "$rebuild" --config "$config" --verify >/dev/null || st=$?
case $st in
  0)
    say "the store equals its rebuild: no rebuild needed"
    ;;
  1 | 65)
    if [ "$st" = 65 ]; then
      # A damaged store cannot be opened, so it cannot be replaced in place. An SQLite
      # file is moved aside (kept: it is evidence) and rebuilt from nothing; other back
      # ends need the operator (flk-rebuild-dedup(1)).
      url=$(yaml_get "$config" dedup url)
      case $url in
        sqlite://*)
          file=${url#sqlite://}
          aside="$file.damaged-$(date -u +%Y%m%dT%H%M%SZ)"
          say "the store '$url' is damaged: moving it aside to '$aside'"
          if [ "$dry_run" = 0 ]; then
            for x in "" -wal -shm; do
              if [ -e "$file$x" ]; then mv "$file$x" "$aside$x"; fi
            done
          fi
          since_set=0
          ;;
        *)
          die 65 "the store '$url' is damaged and is not an SQLite file: repair or recreate it (flk-rebuild-dedup(1)), then run this again"
          ;;
      esac
    fi
    if [ "$st" = 1 ] && [ "$since_set" = 1 ]; then
      say "the store differs from its rebuild: merging the records since $since"
      must "the rebuild failed" "see its message above" \
        run "$here/rebuild-dedup-from-wal.sh" --config "$config" --region "$region" --since-time "$since"
    else
      say "the store differs from its rebuild or cannot be read (exit $st): rebuilding it in full"
      must "the rebuild failed" "see its message above" \
        run "$here/rebuild-dedup-from-wal.sh" --config "$config" --region "$region"
    fi
    ;;
  *)
    die "$st" "cannot check the dedup store (flk-rebuild-dedup --verify, exit $st): see its message above"
    ;;
esac

step 3 "replay what peers shipped meanwhile"
must "flk-read failed" "see its message above; run this again once it is fixed" \
  run "$read" --config "$config" --once >/dev/null

step 4 "verify"
must "the store still differs from its rebuild" "run 'flk-rebuild-dedup --verify' to see how" \
  run "$rebuild" --config "$config" --verify >/dev/null
if grep -Eq '^diverge:' "$config"; then
  must "flk-diverge scan: the regions' stores diverge" "see the split-brain runbook (scripts/split-brain.sh)" \
    run "$diverge" --config "$config" scan --no-worm
else
  say "no diverge.stores in the configuration: the comparison with the peers' stores is skipped"
fi

step 5 "ramp traffic back"
cat >&2 <<EOF
$prog: region '$region' is ready. Re-enable it in the load balancer / DNS and ramp
$prog: traffic 10% -> 25% -> 50% -> 100%, a few minutes per step; between steps check
$prog:   flk_crr_lag_seconds (under 60s), flk_crr_divergence_count (0),
$prog:   flk_region_health_status (1), and 'flk-watermark lag' from this region.
EOF
if [ "$dry_run" = 1 ]; then
  say "dry run: nothing was run"
fi
