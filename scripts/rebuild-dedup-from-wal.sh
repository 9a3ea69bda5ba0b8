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

# die STATUS MESSAGE
die() {
  printf '%s: error: %s\n' "$prog" "$2" >&2
  exit "$1"
}

# need_value OPTION REMAINING_ARGS: OPTION must be followed by a value.
need_value() {
  [ "$2" -ge 2 ] || die 64 "option '$1' needs a value (see --help)"
}

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

if [ -n "$region" ] && ! printf '%s\n' "$region" | grep -Eqx '[a-z0-9][a-z0-9-]{0,62}'; then
  die 64 "invalid --region '$region': a region name is [a-z0-9][a-z0-9-]{0,62}, e.g. us-east-1"
fi

# The forms flk-rebuild-dedup accepts for a time (flk-rebuild-dedup(1)); the tool checks
# the value again (dates that do not exist, ranges) before it opens the store.
valid_time() {
  printf '%s\n' "$1" | grep -Eqx \
    -e '[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?([Zz]|[+-][0-9]{2}:[0-9]{2})' \
    -e '@[0-9]+(\.[0-9]+)?' \
    -e 'now' \
    -e '-([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h|d))+' \
    -e '([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h|d))+ ago'
}
if [ "$since_set" = 1 ] && ! valid_time "$since"; then
  die 64 "invalid --since-time '$since': expected an RFC 3339 timestamp such as 2026-11-26T08:00:00Z (UTC 'Z' or an offset such as +01:00), @UNIX-SECONDS, or a duration ago such as -2h"
fi

# --- the configuration -------------------------------------------------------------

if [ -n "$config" ]; then
  config_from="--config"
elif [ -n "${FLK_CONFIG:-}" ]; then
  config=$FLK_CONFIG
  config_from="FLK_CONFIG"
else
  config=/etc/flk/flk.yaml
  config_from="the default path"
fi
if [ ! -e "$config" ]; then
  die 78 "configuration '$config' ($config_from) does not exist: give --config FILE or set FLK_CONFIG"
fi
if [ ! -f "$config" ] || [ ! -r "$config" ]; then
  die 78 "configuration '$config' ($config_from) is not a readable file"
fi

# yaml_get FILE KEY [CHILD]: the scalar value of the top-level KEY, or of KEY's CHILD
# (block or flow mapping), with quotes and comments removed; empty when absent. Enough
# YAML for flk.yaml(5)'s 'region'; flk-rebuild-dedup parses and checks the whole file.
yaml_get() {
  awk -v key="$2" -v child="${3-}" '
    function clean(v,   q) {
      q = sprintf("%c", 39)
      sub(/^[ \t]+/, "", v)
      if (substr(v, 1, 1) == "\"") { v = substr(v, 2); sub(/".*$/, "", v); return v }
      if (substr(v, 1, 1) == q) { v = substr(v, 2); v = substr(v, 1, index(v, q) - 1); return v }
      sub(/[ \t]+#.*$/, "", v)
      sub(/[ \t]+$/, "", v)
      return v
    }
    # The value of CHILD in a flow mapping "{a: 1, b: 2}".
    function flow(v,   n, parts, i, p) {
      sub(/^[ \t]*\{/, "", v)
      sub(/\}.*$/, "", v)
      n = split(v, parts, ",")
      for (i = 1; i <= n; i++) {
        p = parts[i]
        sub(/^[ \t]+/, "", p)
        if (index(p, child ":") == 1 || p ~ ("^" child "[ \t]+:")) { sub(/^[^:]*:/, "", p); return clean(p) }
      }
      return ""
    }
    inblock {
      if ($0 ~ /^[ \t]*(#.*)?$/) next
      if ($0 !~ /^[ \t]/) exit
      match($0, /^[ \t]+/)
      if (indent == 0) indent = RLENGTH
      if (RLENGTH != indent) next
      line = substr($0, RLENGTH + 1)
      if (index(line, child ":") == 1 || line ~ ("^" child "[ \t]+:")) { sub(/^[^:]*:/, "", line); print clean(line); exit }
      next
    }
    index($0, key ":") == 1 || $0 ~ ("^" key "[ \t]+:") {
      v = $0
      sub(/^[^:]*:/, "", v)
      if (child == "") { print clean(v); exit }
      w = clean(v)
      if (substr(w, 1, 1) == "{") { print flow(v); exit }
      inblock = 1
      indent = 0
    }
  ' "$1"
}

config_region=$(yaml_get "$config" region)
if [ -n "$region" ] && [ -n "$config_region" ] && [ "$region" != "$config_region" ]; then
  die 64 "--region '$region' does not match the region of configuration '$config' ('$config_region'): check which region this host is and which configuration it uses"
fi
if [ -z "$region" ] && [ -z "$config_region" ]; then
  die 64 "no region: give --region or set 'region' in configuration '$config'"
fi
[ -n "$region" ] || region=$config_region

# --- the tool ----------------------------------------------------------------------

here=$(cd "$(dirname "$0")" && pwd)
if tool=$(command -v flk-rebuild-dedup 2>/dev/null) && [ -n "$tool" ]; then
  :
elif [ -x "$here/../build/bin/flk-rebuild-dedup" ]; then
  tool=$(cd "$here/../build/bin" && pwd)/flk-rebuild-dedup
elif [ -x "$here/flk-rebuild-dedup" ]; then
  tool=$here/flk-rebuild-dedup
else
  die 127 "flk-rebuild-dedup not found on PATH nor in '$here/../build/bin': build it (make) or put it on PATH"
fi

# quote WORD: WORD as one shell word (single-quoted when it needs to be).
quote() {
  case $1 in
    '' | *[!A-Za-z0-9_@%+=:,./-]*)
      printf "'%s'" "$(printf '%s' "$1" | sed "s/'/'\\\\''/g")"
      ;;
    *) printf '%s' "$1" ;;
  esac
}

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
