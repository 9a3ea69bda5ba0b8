#!/usr/bin/env bats
# Every tool: --help and --version exit 0, and its man page's SYNOPSIS names exactly
# the options --help lists (-q/-v stand for --quiet/--verbose there). flk-wal, whose
# SYNOPSIS is per verb, and flk-rebuild-dedup are checked in their own suites.

load helpers

setup() {
  flk_setup
  command -v mandoc >/dev/null || skip "mandoc is not installed"
}

# check_synopsis TOOL: compares `TOOL --help` with man/TOOL.1's SYNOPSIS.
check_synopsis() {
  local tool=$1 help_opts man_opts
  run --separate-stderr "$tool" --help
  assert_status 0
  help_opts=$(grep -oE -- '--[a-z][a-z-]*' <<<"$output" | grep -vx -e --quiet -e --verbose | sort -u)
  [[ -n $help_opts ]]
  run --separate-stderr "$tool" --version
  assert_status 0
  [[ $output =~ ^$tool\ .*[0-9]+\.[0-9]+\.[0-9]+ ]]
  man_opts=$(mandoc -Tascii "$FLK_SOURCE/man/$tool.1" | col -b |
    sed -n '/^SYNOPSIS/,/^DESCRIPTION/p' | grep -oE -- '--[a-z][a-z-]*' | sort -u)
  assert_equal "$man_opts" "$help_opts" "options of $tool(1)'s SYNOPSIS (expected: those of --help)"
  # And the OPTIONS section describes each of them.
  local o
  for o in $help_opts; do
    [[ $o == --help || $o == --version ]] && continue
    mandoc -Tascii "$FLK_SOURCE/man/$tool.1" | col -b | sed -n '/^OPTIONS/,/^[A-Z]/p' | grep -q -- "$o" ||
      { echo "$tool(1) OPTIONS does not describe $o" >&2; return 1; }
  done
}

@test "flk-ship: --help matches flk-ship(1)" { check_synopsis flk-ship; }
@test "flk-serve: --help matches flk-serve(1)" { check_synopsis flk-serve; }
@test "flk-read: --help matches flk-read(1)" { check_synopsis flk-read; }
@test "flk-health: --help matches flk-health(1)" { check_synopsis flk-health; }

@test "usage errors exit 64 with the tool's name and a hint" {
  local tool
  for tool in flk-ship flk-serve flk-read flk-watermark flk-diverge flk-health; do
    run --separate-stderr "$tool" --no-such-option
    assert_status 64
    [[ $stderr == "$tool: error: "* ]]
    assert_stderr_has "Try '$tool --help'"
  done
}

# check_subcommands TOOL SUB…: the options of `TOOL SUB --help` for every SUB (and of
# `TOOL --help`) are exactly those of TOOL(1)'s SYNOPSIS, and OPTIONS describes each.
check_subcommands() {
  local tool=$1 sub help_opts man_opts o
  shift
  help_opts=$(for sub in "$@"; do
    "$tool" "$sub" --help | grep -oE -- '--[a-z][a-z-]*'
  done; "$tool" --help | grep -oE -- '--[a-z][a-z-]*')
  help_opts=$(grep -vx -e --quiet -e --verbose <<<"$help_opts" | sort -u)
  man_opts=$(mandoc -Tascii "$FLK_SOURCE/man/$tool.1" | col -b |
    sed -n '/^SYNOPSIS/,/^DESCRIPTION/p' | grep -oE -- '--[a-z][a-z-]*' | sort -u)
  assert_equal "$man_opts" "$help_opts" "options of $tool(1)'s SYNOPSIS (expected: those of the subcommands' --help)"
  for o in $help_opts; do
    [[ $o == --help || $o == --version ]] && continue
    mandoc -Tascii "$FLK_SOURCE/man/$tool.1" | col -b | sed -n '/^OPTIONS/,/^[A-Z]/p' | grep -q -- "$o" ||
      { echo "$tool(1) OPTIONS does not describe $o" >&2; return 1; }
  done
  run --separate-stderr "$tool" --version
  assert_status 0
}

@test "flk-watermark: every subcommand's --help options are in flk-watermark(1)'s SYNOPSIS and OPTIONS, and only those" {
  check_subcommands flk-watermark show set reset lag wait metrics
}

@test "flk-diverge: every subcommand's --help options are in flk-diverge(1)'s SYNOPSIS and OPTIONS, and only those" {
  check_subcommands flk-diverge scan reconcile digest compare verify-log
}
