# shellcheck shell=bash
# Helpers shared by bench/run.sh and bench/ship.sh: sourced after `src` (the source
# tree) and `work` (the scratch directory) are set. Defines the table of results and
# the fields every JSON line carries ($common).

table=()

say() { printf 'bench: %s\n' "$*" >&2; }

# Floating point with awk: calc 'expr'.
calc() { awk "BEGIN { printf \"%.6g\", $1 }"; }

median() {
  printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 }
    END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.6g\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# Seconds elapsed since $1 (an $EPOCHREALTIME value).
since() { calc "$EPOCHREALTIME - $1"; }

# fmt2 X: X with two decimals.
fmt2() { LC_ALL=C printf '%.2f' "$1"; }

json_array() {
  local IFS=,
  printf '[%s]' "$*"
}

# human N: 1234567 → 1,234,567 (integers) or 3 significant decimals.
human() { LC_ALL=C awk -v x="$1" 'BEGIN {
    if (x >= 1000) { s = sprintf("%.0f", x); o = "";
      while (length(s) > 3) { o = "," substr(s, length(s) - 2) o; s = substr(s, 1, length(s) - 3) }
      print s o }
    else printf "%.3g\n", x }'; }

# row FIGURE FLK BASELINE RATIO NOTE — one line of the printed table.
row() { table+=("$(printf '%-34s %18s %18s %7s  %s' "$1" "$2" "$3" "$4" "$5")"); }

# shellcheck disable=SC2154  # src and work are set by the sourcing script
commit=$(git -C "$src" rev-parse --short HEAD 2>/dev/null || echo unknown)
# shellcheck disable=SC2154
fs_type=$(df --output=fstype "$work" | tail -n 1)
started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
# shellcheck disable=SC2034  # used by the sourcing script
common="\"commit\":\"$commit\",\"started\":\"$started\",\"host_cpus\":$(nproc),\"fs\":\"$fs_type\""
