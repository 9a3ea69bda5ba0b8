#!/usr/bin/env bats
# The systemd units and timers (scripts/systemd/) and the crontab (scripts/cron/):
# `systemd-analyze verify` finds nothing to say about any of them, in a temporary root
# (--root) that holds the units, the system's own units and the built tools at the
# paths the units name (/usr/local/bin/flk-*); every service is sandboxed and rated
# "OK" by `systemd-analyze security`; the timers start services that exist; and every
# ExecStart= and crontab command runs for real in a small deployment (deploy_helpers),
# with the test's configuration, tools and metrics directory put in for the paths.

# shellcheck disable=SC2154 # status, output, stderr: set by bats' run

load deploy_helpers

UNITS=${FLK_SOURCE:?}/scripts/systemd
CRONTAB=$FLK_SOURCE/scripts/cron/flk.crontab
SYSTEM_UNITS=/usr/lib/systemd/system # the system's own units (sysinit.target …)

setup() {
  command -v systemd-analyze >/dev/null ||
    skip "systemd-analyze is not installed (Debian package systemd; scripts/install-deps.sh installs it)"
}

teardown() {
  [[ -z ${PIDS-} ]] || read_teardown
}

# make_root: $ROOT, a root for `systemd-analyze --root`: the system's units, flk's units
# in /etc/systemd/system and the built tools in /usr/local/bin (hard links, else copies).
make_root() {
  ROOT=$BATS_TEST_TMPDIR/root
  mkdir -p "$ROOT/usr/local/bin" "$ROOT/etc/systemd/system" "$ROOT/usr/lib/systemd"
  [[ -d $SYSTEM_UNITS ]] || { echo "no system units in '$SYSTEM_UNITS'" >&2; return 1; }
  cp -r "$SYSTEM_UNITS" "$ROOT/usr/lib/systemd/system"
  local t
  for t in "$FLK_BIN"/flk-*; do
    ln -L "$t" "$ROOT/usr/local/bin/" 2>/dev/null || cp -L "$t" "$ROOT/usr/local/bin/"
  done
  cp "$UNITS"/*.service "$UNITS"/*.timer "$ROOT/etc/systemd/system/"
}

# unit_names: the file names of flk's units.
unit_names() { (cd "$UNITS" && ls -- *.service *.timer); }

@test "the units: a --follow service and a timer variant for flk-ship and flk-read; flk-serve; timers for the metrics, health and divergence" {
  assert_equal "$(unit_names | sort | tr '\n' ' ')" "flk-diverge.service flk-diverge.timer flk-health.service flk-health.timer flk-read-once.service flk-read.service flk-read.timer flk-serve.service flk-ship-once.service flk-ship.service flk-ship.timer flk-watermark-metrics.service flk-watermark-metrics.timer " "units"
}

@test "systemd-analyze verify: nothing to say about any unit or timer" {
  make_root
  local needed
  for needed in flk-serve flk-ship flk-read flk-watermark flk-health; do
    [[ -x $ROOT/usr/local/bin/$needed ]] || { echo "$needed is not built in FLK_BIN='$FLK_BIN'" >&2; return 1; }
  done
  # flk-diverge(1) is being written: until it is built its units cannot be verified.
  local units=()
  mapfile -t units < <(unit_names)
  if [[ ! -x $ROOT/usr/local/bin/flk-diverge ]]; then
    echo "# pending: flk-diverge.service and .timer (flk-diverge is not built in FLK_BIN)" >&3
    mapfile -t units < <(printf '%s\n' "${units[@]}" | grep -v '^flk-diverge\.')
  fi
  cd "$ROOT/etc/systemd/system"
  run systemd-analyze verify --man=no --root="$ROOT" "${units[@]}"
  # verify exits 0 on unknown keys and bad values (it only warns): any output fails.
  if [[ $status != 0 || -n $output ]]; then
    printf 'systemd-analyze verify (exit %s):\n%s\n' "$status" "$output" >&2
    return 1
  fi

  # And it does say something about a broken unit (the check can fail).
  printf '[Service]\nExecStart=/usr/local/bin/flk-ship --once\nProtectSystem=bogus\n' >"$ROOT/etc/systemd/system/flk-broken.service"
  run systemd-analyze verify --man=no --root="$ROOT" flk-broken.service
  [[ $output == *"protect system value"* ]] || { echo "verify said nothing of a bad value: $output" >&2; return 1; }
  rm "$ROOT/usr/local/bin/flk-ship"
  run systemd-analyze verify --man=no --root="$ROOT" flk-ship.service
  [[ $status != 0 && $output == *"/usr/local/bin/flk-ship"* ]]
}

@test "every service is sandboxed (the flk user, a read-only system, no privileges) and systemd-analyze security rates it OK" {
  make_root
  local f d level
  for f in "$UNITS"/*.service; do
    for d in User=flk ProtectSystem=strict 'ReadWritePaths=/var/lib/flk( |$)' NoNewPrivileges=yes PrivateTmp=yes \
      ProtectHome=yes PrivateDevices=yes 'CapabilityBoundingSet=$' 'SystemCallFilter=@system-service$' \
      'RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6$' 'ExecStart=/usr/local/bin/flk-[a-z-]+ --config /etc/flk/flk.yaml( |$)'; do
      grep -qE "^$d" "$f" || { echo "${f##*/}: no $d" >&2; return 1; }
    done
    run systemd-analyze security --offline=yes --root="$ROOT" "${f##*/}"
    level=$(sed -n 's/.*Overall exposure level for .*: \([0-9.]*\) .*/\1/p' <<<"$output")
    [[ -n $level ]] || { echo "$output" >&2; return 1; }
    awk -v l="$level" 'BEGIN { exit !(l <= 2.0) }' || { echo "${f##*/}: exposure level $level (over 2.0)" >&2; return 1; }
  done
}

@test "timers start services that exist; the periodic ship and read variants conflict with their --follow services" {
  local t unit
  for t in "$UNITS"/*.timer; do
    unit=$(sed -n 's/^Unit=//p' "$t")
    [[ -n $unit ]] || unit=$(basename "$t" .timer).service
    [[ -f $UNITS/$unit ]] || { echo "${t##*/} starts '$unit', which is not in $UNITS" >&2; return 1; }
    grep -q '^Type=oneshot$' "$UNITS/$unit" || { echo "$unit (of ${t##*/}) is not Type=oneshot" >&2; return 1; }
    grep -q '^WantedBy=timers.target$' "$t"
  done
  for t in ship read; do
    assert_equal "$(sed -n 's/^Unit=//p' "$UNITS/flk-$t.timer")" "flk-$t-once.service" "the unit of flk-$t.timer"
    grep -qx "Conflicts=flk-$t.service" "$UNITS/flk-$t.timer"
    grep -q -- '--follow' "$UNITS/flk-$t.service"
    grep -q -- '--once' "$UNITS/flk-$t-once.service"
  done
}

@test "Documentation= names man pages that exist" {
  local page name sec
  for page in $(sed -n 's/^Documentation=//p' "$UNITS"/*.service "$UNITS"/*.timer | tr ' ' '\n' | sort -u); do
    [[ $page =~ ^man:([a-z.-]+)\(([0-9])\)$ ]] || { echo "not a man: reference: $page" >&2; return 1; }
    name=${BASH_REMATCH[1]} sec=${BASH_REMATCH[2]}
    [[ -f $FLK_SOURCE/man/$name.$sec ]] && continue
    if [[ $name == flk-diverge ]]; then
      echo "# pending: man/flk-diverge.1 (being written)" >&3
      continue
    fi
    echo "$page: no man/$name.$sec" >&2
    return 1
  done
}

# run_deployment: a deployment of two regions that wrote, with us-west-2's segments
# shipped to us-east-1; CFG_EAST a copy of us-east-1's configuration that also listens
# on a free port (serve.listen) and names the regions' stores (diverge.stores, when
# flk-diverge is built); METRICS an empty directory for the metrics files.
run_deployment() {
  read_setup
  deploy $EAST $WEST
  write_in $EAST 40 east
  write_in $WEST 40 west
  flk-ship --config "$(cfg_of $WEST)" --once >/dev/null
  CFG_EAST=$BATS_TEST_TMPDIR/east-units.yaml
  sed "s/^serve:\$/serve:\n  listen: \"127.0.0.1:$(closed_port)\"/" "$(cfg_of $EAST)" >"$CFG_EAST"
  if [[ -x $FLK_BIN/flk-diverge ]]; then
    printf 'diverge:\n  stores:\n    %s: "%s"\n    %s: "%s"\n' $EAST "$(store_of $EAST)" $WEST "$(store_of $WEST)" >>"$CFG_EAST"
  fi
  METRICS=$BATS_TEST_TMPDIR/node-exporter
  mkdir -p "$METRICS"
}

# local_paths: a command line of the units or the crontab with the test's tools,
# configuration and metrics directory in place of the installed ones.
local_paths() {
  sed -e "s|/usr/local/bin/|$FLK_BIN/|g" -e "s|/etc/flk/flk.yaml|$CFG_EAST|g" \
    -e "s|/var/lib/prometheus/node-exporter|$METRICS|g"
}

@test "every ExecStart= runs: one-shot services succeed, --follow services run until SIGTERM and then exit 0" {
  run_deployment
  local f cmd argv name ok pid rc
  for f in "$UNITS"/*.service; do
    name=${f##*/}
    cmd=$(sed -n 's/^ExecStart=//p' "$f")
    [[ $cmd != *[\"\'\$\\\;\|\&\<\>]* ]] || { echo "$name: ExecStart= holds characters systemd would quote differently" >&2; return 1; }
    read -ra argv <<<"$(local_paths <<<"$cmd")"
    if [[ $name == flk-diverge.* && ! -x $FLK_BIN/flk-diverge ]]; then
      echo "# pending: $name (flk-diverge is not built in FLK_BIN)" >&3
      continue
    fi
    if grep -q '^Type=oneshot$' "$f"; then
      ok=" 0 $(sed -n 's/^SuccessExitStatus=//p' "$f") "
      run --separate-stderr "${argv[@]}"
      [[ $ok == *" $status "* ]] || { printf '%s: exit %s (success:%s)\n%s\n' "$name" "$status" "$ok" "$stderr" >&2; return 1; }
    else
      "${argv[@]}" >"$BATS_TEST_TMPDIR/$name.out" 2>&1 3>&- &
      pid=$!
      sleep 1
      kill -0 $pid || { echo "$name: exited at once:" >&2 && cat "$BATS_TEST_TMPDIR/$name.out" >&2; return 1; }
      kill -TERM $pid
      rc=0
      wait $pid || rc=$?
      [[ $rc == 0 ]] || { echo "$name: exit $rc after SIGTERM:" >&2 && cat "$BATS_TEST_TMPDIR/$name.out" >&2; return 1; }
    fi
  done
  # The services wrote their metrics where node_exporter reads them.
  for f in flk-ship flk-read flk-lag flk-health; do
    grep -q '^# TYPE flk_' "$METRICS/$f.prom" || { echo "no metrics in '$METRICS/$f.prom'" >&2; return 1; }
  done
  grep -qx "flk_region_health_status{region=\"$WEST\"} 1" "$METRICS/flk-health.prom"
}

@test "the crontab: each job is five time fields, the user flk and an flk tool, and runs in a deployment with success" {
  run_deployment
  local line n=0 fields cmd
  while IFS= read -r line; do
    [[ -z $line || $line == \#* || $line =~ ^[A-Z_]+= ]] && continue
    read -ra fields <<<"$line"
    local i
    for i in 0 1 2 3 4; do
      [[ ${fields[i]} =~ ^(\*|[0-9]+)(-[0-9]+)?(/[0-9]+)?(,[0-9]+)*$ ]] || { echo "bad time field '${fields[i]}' in: $line" >&2; return 1; }
    done
    [[ ${fields[5]} == flk && ${fields[6]} == flk-* ]] || { echo "not 'flk flk-TOOL …': $line" >&2; return 1; }
    [[ ${fields[6]} == flk-diverge && ! -x $FLK_BIN/flk-diverge ]] && echo "# pending: the flk-diverge job (not built)" >&3 && continue
    cmd=$(cut -d' ' -f7- <<<"$line" | local_paths)
    run --separate-stderr env PATH="$FLK_BIN:/usr/bin:/bin" sh -c "$cmd"
    [[ $status == 0 && -z $output && -z $stderr ]] || { printf 'job failed (exit %s): %s\n%s%s\n' "$status" "$cmd" "$output" "$stderr" >&2; return 1; }
    n=$((n + 1))
  done <"$CRONTAB"
  ((n >= 4))
  grep -q '^# TYPE flk_crr_lag_seconds gauge$' "$METRICS/flk-lag.prom"
}
