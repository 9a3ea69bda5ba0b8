#!/bin/sh
# failover.sh — the manual failover of the multi-region DR runbook (flk(7), RUNBOOKS):
# take a region out of service without losing what it accepted. Run it on the region
# being drained, after its writes have stopped (or give --stop-writes CMD):
#
#   ./scripts/failover.sh --region us-east-1 --stop-writes 'kubectl scale deployment fractal-lba --replicas=0 -n flk-system'
#
# Steps: 1 stop writes; 2 seal the open WAL segment (flk-wal seal); 3 ship what is
# sealed (flk-ship --once; a running flk-ship --follow service does it too); 4 wait for
# the replication lag of every stream from this region to drain under --max-lag
# (flk-watermark wait); 5 remove the region from DNS / the load balancer (--dns-cmd CMD,
# else a reminder: provider-specific). Nothing moves to step 5 unless step 4 drained.
#
# Exit status: 0 drained (and the DNS command, if any, succeeded); 75 the lag did not
# drain before --timeout (the region is still in DNS: find the stuck stream with
# flk-watermark lag); the failing tool's status otherwise; 64 usage, 78 configuration,
# 127 a tool not found. POSIX sh.
set -eu

prog=failover.sh

usage() {
  cat <<EOF
Usage: $prog --region REGION (--stop-writes CMD | --writes-stopped) [--dns-cmd CMD]
                  [--max-lag DURATION] [--timeout DURATION] [--config FILE] [--dry-run]
       $prog --help

Drain a region before taking it out of service: stop its writes, seal and ship its
WAL, wait until every peer has applied it (replication lag under --max-lag), then
remove it from DNS.

  --region REGION       the region being drained: this host's (the configuration's)
  --stop-writes CMD     run CMD (sh -c) to stop the service's writes, e.g.
                        'kubectl scale deployment fractal-lba --replicas=0 -n flk-system'
  --writes-stopped      the writes are already stopped (one of the two is required:
                        records written during the drain would not be waited for)
  --dns-cmd CMD         run CMD (sh -c) to remove the region from DNS / the load
                        balancer once drained (default: print a reminder)
  --max-lag DURATION    the bound the lag must be under (default 60s, the seed's SLO)
  --timeout DURATION    give up waiting after this long (default 10m)
  --config FILE         the configuration (default: \$FLK_CONFIG, else /etc/flk/flk.yaml)
  --dry-run             print every step's command, run nothing
  -h, --help            print this help and exit

The flk tools are looked for on PATH, then in ../build/bin beside this script.
Exit status: 0 drained; 75 not drained before --timeout; a tool's status when a step
fails; 64 usage error; 78 configuration; 127 a tool not found.
EOF
}

# shellcheck source-path=SCRIPTDIR source=lib/runbook.sh
. "$(dirname "$0")/lib/runbook.sh"

region=
config=
stop_writes=
writes_stopped=0
dns_cmd=
max_lag=60s
timeout=10m
dry_run=0
while [ $# -gt 0 ]; do
  case $1 in
    -h | --help) usage; exit 0 ;;
    --region) need_value "$1" $#; region=$2; shift 2 ;;
    --region=*) region=${1#*=}; shift ;;
    --config) need_value "$1" $#; config=$2; shift 2 ;;
    --config=*) config=${1#*=}; shift ;;
    --stop-writes) need_value "$1" $#; stop_writes=$2; shift 2 ;;
    --stop-writes=*) stop_writes=${1#*=}; shift ;;
    --writes-stopped) writes_stopped=1; shift ;;
    --dns-cmd) need_value "$1" $#; dns_cmd=$2; shift 2 ;;
    --dns-cmd=*) dns_cmd=${1#*=}; shift ;;
    --max-lag) need_value "$1" $#; max_lag=$2; shift 2 ;;
    --max-lag=*) max_lag=${1#*=}; shift ;;
    --timeout) need_value "$1" $#; timeout=$2; shift 2 ;;
    --timeout=*) timeout=${1#*=}; shift ;;
    --dry-run) dry_run=1; shift ;;
    *) die 64 "unknown argument '$1' (see --help)" ;;
  esac
done

[ -n "$region" ] || die 64 "give --region REGION: the region being drained (this host's)"
if [ -n "$stop_writes" ] && [ "$writes_stopped" = 1 ]; then
  die 64 "--stop-writes and --writes-stopped contradict each other"
fi
if [ -z "$stop_writes" ] && [ "$writes_stopped" = 0 ]; then
  die 64 "stop the region's writes first: give --stop-writes CMD, or --writes-stopped once they are (records written during the drain would not be waited for)"
fi
valid_duration "$max_lag" || die 64 "invalid --max-lag '$max_lag': a duration such as 60s or 2m"
valid_duration "$timeout" || die 64 "invalid --timeout '$timeout': a duration such as 10m"
resolve_config
resolve_region
wal=$(find_tool flk-wal)
ship=$(find_tool flk-ship)
watermark=$(find_tool flk-watermark)

say "draining region '$region' (configuration '$config')"

step 1 "stop writes"
if [ -n "$stop_writes" ]; then
  must "--stop-writes failed" "nothing else was done" run sh -c "$stop_writes"
else
  say "the writes are stopped (--writes-stopped)"
fi

step 2 "seal the open WAL segment, so that it can be shipped"
must "flk-wal seal failed" "see its message above" run "$wal" --config "$config" seal >&2

step 3 "ship what is sealed"
# A running flk-ship --follow holds the targets' locks and ships by itself: 75 here
# (locked, or a peer not reachable yet) is left to the wait of step 4 to judge.
st=0
run "$ship" --config "$config" --once >&2 || st=$?
case $st in
  0 | 75) ;;
  *) die "$st" "flk-ship failed (exit $st): see its message above; the region is still in service" ;;
esac

step 4 "wait until every peer applied it (lag under $max_lag, at most $timeout)"
must "the replication lag did not drain" \
  "the region is still in DNS; see 'flk-watermark lag' for the stream that is behind, fix it and run this again" \
  run "$watermark" --config "$config" wait --max-lag "$max_lag" --timeout "$timeout"

step 5 "remove the region from DNS / the load balancer"
if [ -n "$dns_cmd" ]; then
  must "--dns-cmd failed" "the region is drained but still in DNS" run sh -c "$dns_cmd"
else
  say "drained; now remove '$region' from DNS / the global load balancer (Route53, Cloud DNS, ...): provider-specific, not done by this script"
fi
if [ "$dry_run" = 1 ]; then
  say "dry run: nothing was run"
else
  say "done: region '$region' is drained"
fi
