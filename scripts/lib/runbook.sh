# shellcheck shell=sh disable=SC2154 # prog: set by the script that sources this file
# runbook.sh — what the runbook scripts of scripts/ share (POSIX sh; sourced, not run):
# messages and exit codes, the configuration they read, the flk tools they run, and
# running a step (or, with --dry-run, only printing it).
#
#   prog=failover.sh
#   . "$(dirname "$0")/lib/runbook.sh"
#
# Exit codes are those of flk(7): 64 usage, 78 configuration, 127 a tool not found;
# a step that fails exits with the tool's status.

# die STATUS MESSAGE: "PROG: error: MESSAGE" on stderr, exit STATUS.
die() {
  printf '%s: error: %s\n' "$prog" "$2" >&2
  exit "$1"
}

# say MESSAGE: a progress line on stderr (the scripts' stdout is the tools' output).
say() {
  printf '%s: %s\n' "$prog" "$1" >&2
}

# need_value OPTION REMAINING_ARGS: OPTION must be followed by a value.
need_value() {
  [ "$2" -ge 2 ] || die 64 "option '$1' needs a value (see --help)"
}

# valid_region NAME: a region name of flk.yaml(5).
valid_region() {
  printf '%s\n' "$1" | grep -Eqx '[a-z0-9][a-z0-9-]{0,62}'
}

# valid_time TIME: the forms flk's tools accept for a time (flk-rebuild-dedup(1)); the
# tools check the value again (dates that do not exist, ranges).
valid_time() {
  printf '%s\n' "$1" | grep -Eqx \
    -e '[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?([Zz]|[+-][0-9]{2}:[0-9]{2})' \
    -e '@[0-9]+(\.[0-9]+)?' \
    -e 'now' \
    -e '-([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h|d))+' \
    -e '([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h|d))+ ago'
}

# valid_duration D: 500ms, 60s, 10m, 1h30m…
valid_duration() {
  printf '%s\n' "$1" | grep -Eqx '([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h|d))+'
}

# resolve_config: sets config (the file) and config_from (how it was chosen) from
# $config (--config), else $FLK_CONFIG, else /etc/flk/flk.yaml; it must be readable.
resolve_config() {
  if [ -n "${config-}" ]; then
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
}

# yaml_get FILE KEY [CHILD]: the scalar value of the top-level KEY, or of KEY's CHILD
# (block or flow mapping), with quotes and comments removed; empty when absent. Enough
# YAML for flk.yaml(5)'s 'region'; the tools parse and check the whole file.
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

# resolve_region: $region (--region) must be the configuration's 'region' when it names
# one; sets region from it when not given; one of them must be there.
resolve_region() {
  if [ -n "${region-}" ] && ! valid_region "$region"; then
    die 64 "invalid --region '$region': a region name is [a-z0-9][a-z0-9-]{0,62}, e.g. us-east-1"
  fi
  config_region=$(yaml_get "$config" region)
  if [ -n "${region-}" ] && [ -n "$config_region" ] && [ "$region" != "$config_region" ]; then
    die 64 "--region '$region' does not match the region of configuration '$config' ('$config_region'): check which region this host is and which configuration it uses"
  fi
  if [ -z "${region-}" ] && [ -z "$config_region" ]; then
    die 64 "no region: give --region or set 'region' in configuration '$config'"
  fi
  [ -n "${region-}" ] || region=$config_region
}

# find_tool NAME: the path of flk tool NAME — on PATH, else in ../build/bin beside the
# scripts, else beside them; exit 127 naming it when there is none.
find_tool() {
  runbook_here=$(cd "$(dirname "$0")" && pwd)
  if runbook_tool=$(command -v "$1" 2>/dev/null) && [ -n "$runbook_tool" ]; then
    printf '%s\n' "$runbook_tool"
  elif [ -x "$runbook_here/../build/bin/$1" ]; then
    printf '%s/%s\n' "$(cd "$runbook_here/../build/bin" && pwd)" "$1"
  elif [ -x "$runbook_here/$1" ]; then
    printf '%s/%s\n' "$runbook_here" "$1"
  else
    die 127 "$1 not found on PATH nor in '$runbook_here/../build/bin': build it (make) or put it on PATH"
  fi
}

# quote WORD: WORD as one shell word (single-quoted when it needs to be).
quote() {
  case $1 in
    '' | *[!A-Za-z0-9_@%+=:,./-]*)
      printf "'%s'" "$(printf '%s' "$1" | sed "s/'/'\\\\''/g")"
      ;;
    *) printf '%s' "$1" ;;
  esac
}

# quote_all ARGS…: the words, quoted and separated by spaces.
quote_all() {
  runbook_out=
  for runbook_w in "$@"; do
    runbook_out="$runbook_out${runbook_out:+ }$(quote "$runbook_w")"
  done
  printf '%s' "$runbook_out"
}

# step N TEXT: announces step N of the runbook.
step() {
  printf '%s: step %s: %s\n' "$prog" "$1" "$2" >&2
}

# run CMD ARGS…: prints the command; unless $dry_run is 1, runs it and returns its
# status (the caller decides what a failure means — must, below, when it ends the runbook).
run() {
  printf '%s: %s %s\n' "$prog" "$([ "${dry_run:-0}" = 1 ] && echo would run: || echo running:)" "$(quote_all "$@")" >&2
  [ "${dry_run:-0}" = 1 ] && return 0
  "$@"
}

# must WHAT ADVICE CMD ARGS…: runs CMD ARGS… (usually `run …`); if it fails, exits with
# its status: "PROG: error: WHAT (exit N): ADVICE".
must() {
  must_what=$1 must_advice=$2
  shift 2
  must_st=0
  "$@" || must_st=$?
  [ "$must_st" = 0 ] || die "$must_st" "$must_what (exit $must_st): $must_advice"
}
