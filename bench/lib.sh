# shellcheck shell=bash
# Helpers shared by bench/run.sh, bench/ship.sh and bench/read.sh: sourced after `src`
# (the source tree) and `work` (the scratch directory) are set. Defines the table of
# results and the fields every JSON line carries ($common).

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

# The commit measured: the source tree's HEAD, or FLK_BENCH_COMMIT when the build was made
# from another tree (an export of a commit, while the working tree moves on).
# shellcheck disable=SC2154  # src and work are set by the sourcing script
commit=${FLK_BENCH_COMMIT:-$(git -C "$src" rev-parse --short HEAD 2>/dev/null || echo unknown)}
# shellcheck disable=SC2154
fs_type=$(df --output=fstype "$work" | tail -n 1)
started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
# shellcheck disable=SC2034  # used by the sourcing script
common="\"commit\":\"$commit\",\"started\":\"$started\",\"host_cpus\":$(nproc),\"fs\":\"$fs_type\""

# json_field FILE NAME: a numeric field of the one-line JSON object in FILE (the last
# one named NAME, when there are several).
json_field() { sed -n "s/.*\"$2\":\\([0-9.]*\\).*/\\1/p" "$1"; }

# sqlite_import_sql CSV: the sqlite3(1) script of the SQLite baselines: a new table of the
# shape of the store's `records` table (lib/flk/store/sqlite.cpp: the same eight columns,
# TEXT primary key, WITHOUT ROWID), then `.import` of CSV into it in one transaction.
sqlite_import_sql() {
  echo "CREATE TABLE records("
  echo "  pcs_id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, outcome INTEGER NOT NULL, ts INTEGER NOT NULL,"
  echo "  region TEXT NOT NULL, params TEXT, payload TEXT, digest BLOB NOT NULL) WITHOUT ROWID;"
  echo ".mode csv"
  echo ".import $1 records"
}

# sqlite_export_csv DB CSV: the rows of a flk SQLite store as CSV, in WAL order (ORDER BY
# ts), the digest as 64 hex characters — the baselines' input.
sqlite_export_csv() {
  sqlite3 -csv "$1" \
    "SELECT pcs_id, tenant_id, outcome, ts, region, params, payload, hex(digest) FROM records ORDER BY ts" >"$2"
}
