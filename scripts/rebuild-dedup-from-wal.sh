#!/bin/sh
# rebuild-dedup-from-wal.sh — the "Failback" step of the multi-region DR runbook:
# rebuild this region's dedup store from its inbox WAL (and from the segments peers
# shipped to its mailbox) with flk-rebuild-dedup(1).
#
#   ./scripts/rebuild-dedup-from-wal.sh --region us-east-1 --since-time <timestamp>
#
# The region's WAL, mailbox and store URL come from the configuration (--config FILE,
# else $FLK_CONFIG, else /etc/flk/flk.yaml), which the script hands to the tool:
# flk-rebuild-dedup reads the whole file itself (paths.wal, paths.mailbox, dedup.url).
# The script reads only the top-level 'region', to refuse a --region that is not this
# host's. Everything is checked before the tool runs: a bad argument or configuration
# changes nothing.
#
# Exit status: the tool's (0 done; 1 --verify found differences; 65 damaged WAL; 78
# configuration; see flk-rebuild-dedup(1)), or 64 for a usage error, 78 for a missing
# configuration file, 127 when flk-rebuild-dedup is not found. POSIX sh.
set -eu

prog=rebuild-dedup-from-wal.sh

usage() {
  cat <<EOF
Usage: $prog --region REGION [--since-time TIME] [--config FILE] [--verify] [--dry-run]
       $prog --help

Rebuild the region's dedup store from its WAL, and from what peers shipped to its
mailbox, with flk-rebuild-dedup(1).

  --region REGION    the region whose store is rebuilt; must be the configuration's
                     'region' when the configuration names one
  --since-time TIME  replay only records written at or after TIME, merging them into
                     the store as it is (without it: a full rebuild into a fresh store,
                     swapped in when complete). TIME is an RFC 3339 timestamp
                     (2026-11-26T08:00:00Z), @UNIX-SECONDS, or a duration ago (-2h,
                     '90m ago'); pick a time before the first record the store lost
  --config FILE      the configuration (default: \$FLK_CONFIG, else /etc/flk/flk.yaml);
                     the WAL is paths.wal, the store dedup.url, the mailbox
                     paths.mailbox (replayed too when the directory exists)
  --verify           compare instead: print each difference between the store and
                     the WAL as a JSON line, change nothing, exit 1 if any
  --dry-run          print the command that would run, and run nothing
  -h, --help         print this help and exit
  -- ARGS...         pass ARGS on to flk-rebuild-dedup (e.g. --temp-dir DIR)

flk-rebuild-dedup is looked for on PATH, then in ../build/bin beside this script.
Exit status: flk-rebuild-dedup's; 64 usage error, 78 missing configuration, 127 tool
not found.
EOF
}

# shellcheck source-path=SCRIPTDIR source=lib/runbook.sh
. "$(dirname "$0")/lib/runbook.sh"

region=
since=
since_set=0
config=
verify=0
dry_run=0
while [ $# -gt 0 ]; do
  case $1 in
    -h | --help)
      usage
      exit 0
      ;;
    --region)
      need_value "$1" $#
      region=$2
      shift 2
      ;;
    --region=*)
      region=${1#*=}
      shift
      ;;
    --since-time)
      need_value "$1" $#
      since=$2
      since_set=1
      shift 2
      ;;
    --since-time=*)
      since=${1#*=}
      since_set=1
      shift
      ;;
    --config)
      need_value "$1" $#
      config=$2
      shift 2
      ;;
    --config=*)
      config=${1#*=}
      shift
      ;;
    --verify)
      verify=1
      shift
      ;;
    --dry-run)
      dry_run=1
      shift
      ;;
    --)
      shift
      break
      ;;
    *)
      die 64 "unknown argument '$1' (see --help)"
      ;;
  esac
done

# --- the arguments -------------------------------------------------------------------

if [ "$since_set" = 1 ] && ! valid_time "$since"; then
  die 64 "invalid --since-time '$since': expected an RFC 3339 timestamp such as 2026-11-26T08:00:00Z (UTC 'Z' or an offset such as +01:00), @UNIX-SECONDS, or a duration ago such as -2h"
fi

# --- the configuration -------------------------------------------------------------

resolve_config
resolve_region

# --- the tool ----------------------------------------------------------------------

tool=$(find_tool flk-rebuild-dedup)

cmd="$(quote "$tool") --config $(quote "$config") --region $(quote "$region")"
if [ "$since_set" = 1 ]; then
  # One word with '=', so that a time such as -2h is never taken for an option.
  cmd="$cmd $(quote "--since-time=$since")"
fi
if [ "$verify" = 1 ]; then
  cmd="$cmd --verify"
fi
for arg in "$@"; do
  cmd="$cmd $(quote "$arg")"
done

if [ "$dry_run" = 1 ]; then
  printf '%s\n' "$cmd"
  exit 0
fi
printf '%s: running: %s\n' "$prog" "$cmd" >&2
eval "exec $cmd"
