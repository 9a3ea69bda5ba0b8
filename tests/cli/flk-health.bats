#!/usr/bin/env bats
# flk-health (flk-health(1)): the peers' /healthz probed in real deployments on one
# machine (deploy_helpers: regions with WAL, SQLite store, mailbox and flk-serve with
# tokens on loopback); a stopped, stalled or broken peer; --peer with file:// and
# https (TLS from the configuration's endpoint); and the canary, applied by the peers'
# flk-ship / flk-read run while it waits, or not applied in time.

load deploy_helpers

setup() {
  read_setup
  [[ -x $FLK_BIN/flk-health ]] || {
    echo "flk-health not found in FLK_BIN='$FLK_BIN'" >&2
    return 1
  }
}

teardown() {
  read_teardown
}

# health R ARGS…: flk-health with R's configuration (bats run: status, output, stderr).
health() {
  local r=$1
  shift
  run --separate-stderr flk-health --config "$(cfg_of "$r")" "$@"
}

# line_of REGION: the JSON line of REGION in the last output.
line_of() { jq -c --arg r "$1" 'select(.region == $r)' <<<"$output"; }

# serve_pid_of R: the pid of R's flk-serve (deploy starts them in the order of REGIONS).
serve_pid_of() {
  local i
  for i in "${!REGIONS[@]}"; do
    [[ ${REGIONS[i]} == "$1" ]] && sed -n "$((i + 1))p" "$PIDS" && return 0
  done
  return 1
}

# port_of R: R's flk-serve port.
port_of() { tr -d '\n' <"$(rdir "$1")/port"; }

@test "every peer healthy: one line each (status 200, latency), exit 0; the metrics written atomically" {
  deploy $EAST $WEST $EU
  local m=$BATS_TEST_TMPDIR/health.prom
  health $EAST --metrics-file "$m"
  assert_status 0
  assert_equal "${#lines[@]}" 2 "lines"
  assert_equal "$(jq -r .region <<<"$output" | sort | tr '\n' ' ')" "$EU $WEST " "regions"
  line_of $WEST | jq -e --arg u "http://127.0.0.1:$(port_of $WEST)" \
    '.url == $u and .healthy == true and .status == 200 and (.ms | type == "number") and (has("error") | not) and (has("canary_ms") | not)'
  line_of $EU | jq -e '.healthy == true and .status == 200'
  assert_equal "$stderr" "" "stderr"
  grep -qx "flk_region_health_status{region=\"$WEST\"} 1" "$m"
  grep -qx "flk_region_health_status{region=\"$EU\"} 1" "$m"
  grep -qx '# TYPE flk_region_health_status gauge' "$m"
  grep -qE "^flk_region_health_probe_seconds\{region=\"$WEST\"\} [0-9.e-]+$" "$m"
  run ! grep -q flk_region_canary_seconds "$m"
  [[ -z $(find "$BATS_TEST_TMPDIR" -maxdepth 1 -name 'health.prom?*') ]] # no temp file left
  if command -v promtool >/dev/null; then promtool check metrics <"$m"; fi

  # --metrics-file -: the text on stdout instead of the JSON lines.
  health $EAST --metrics-file -
  assert_status 0
  grep -qx "flk_region_health_status{region=\"$WEST\"} 1" <<<"$output"
  run ! grep -q '^{' <<<"$output"
}

@test "a stopped flk-serve: unhealthy (status null, why), exit 69, named on stderr even with -q; metric 0" {
  deploy $EAST $WEST $EU
  local pid
  pid=$(serve_pid_of $WEST)
  kill "$pid"
  wait_gone "$pid"
  local m=$BATS_TEST_TMPDIR/health.prom
  health $EAST -q --metrics-file "$m" --timeout 2s
  assert_status 69
  line_of $WEST | jq -e '.healthy == false and .status == null and (.error | test("GET .*/healthz"))'
  line_of $EU | jq -e '.healthy == true and .status == 200'
  assert_stderr_has "flk-health: error: region '$WEST' is unhealthy: GET 'http://127.0.0.1:$(port_of $WEST)/healthz'"
  [[ $stderr != *"'$EU'"* ]]
  grep -qx "flk_region_health_status{region=\"$WEST\"} 0" "$m"
  grep -qx "flk_region_health_status{region=\"$EU\"} 1" "$m"
}

@test "a mailbox that is gone: /healthz answers 503, the line says so" {
  deploy $EAST $WEST
  mv "$(mb_of $WEST)" "$(mb_of $WEST).away"
  health $EAST
  assert_status 69
  line_of $WEST | jq -e '.healthy == false and .status == 503 and (.error | test("503 mailbox .* is not writable"))'
  mv "$(mb_of $WEST).away" "$(mb_of $WEST)"
  health $EAST
  assert_status 0
}

@test "--timeout: a peer that accepts the connection and never answers is unhealthy once it passes" {
  deploy $EAST $WEST
  start_proxy stall "$(port_of $WEST)" --stall-after 0
  local t0=$SECONDS
  health $EAST --peer "$WEST=http://127.0.0.1:$(server_port stall)" --timeout 1s
  assert_status 69
  ((SECONDS - t0 < 10))
  line_of $WEST | jq -e '.healthy == false and .status == null and .ms >= 900'
}

@test "--peer: only those peers; file:// mailboxes are healthy when writable directories; bad specs are usage errors" {
  deploy $EAST $WEST $EU
  mkdir -p "$BATS_TEST_TMPDIR/shared"
  health $EAST --peer "$WEST=file://$BATS_TEST_TMPDIR/shared" --peer "$EU=file://$BATS_TEST_TMPDIR/nowhere"
  assert_status 69
  assert_equal "${#lines[@]}" 2 "lines"
  line_of $WEST | jq -e '.healthy == true and .status == null and (.url | startswith("file://"))'
  line_of $EU | jq -e '.healthy == false and (.error | test("not a directory"))'

  health $EAST --peer "$WEST=http://127.0.0.1:$(port_of $WEST)"
  assert_status 0
  assert_equal "$(jq -r .region <<<"$output")" "$WEST" "the only peer"

  local bad
  for bad in "$WEST" "=http://x" "$WEST=" "Bad_Region=http://x" "$WEST=ftp://x" "$WEST=-"; do
    health $EAST --peer "$bad"
    assert_status 64
    [[ $stderr == "flk-health: error: "* ]]
    [[ -z $output ]]
  done
  health $EAST --peer "$WEST=file:///a" --peer "$WEST=file:///b"
  assert_status 64
  assert_stderr_has "region '$WEST' given twice"
  health $EAST --canary-timeout 5s
  assert_status 64
}

@test "no peer: replication disabled or no endpoint is a configuration error (78)" {
  printf 'region: %s\n' $EAST >"$BATS_TEST_TMPDIR/off.yaml"
  run --separate-stderr flk-health --config "$BATS_TEST_TMPDIR/off.yaml"
  assert_status 78
  assert_stderr_has "flk-health: error: replication is disabled"
  printf 'region: %s\ncrr:\n  enabled: true\n  targetRegions: [%s]\n' $EAST $WEST >"$BATS_TEST_TMPDIR/noep.yaml"
  run --separate-stderr flk-health --config "$BATS_TEST_TMPDIR/noep.yaml"
  assert_status 78
  assert_stderr_has "no endpoint for target '$WEST'"
  # The canary needs a region.
  run --separate-stderr flk-health --peer "$WEST=file://$BATS_TEST_TMPDIR" --canary
  assert_status 78
  assert_stderr_has "--canary: no region"
}

@test "https: the endpoint's CA file verifies the peer; without it the peer is unhealthy" {
  command -v openssl >/dev/null || skip "openssl is not installed"
  local tls=$BATS_TEST_TMPDIR/tls
  mkdir -p "$tls"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj /CN=localhost \
    -addext subjectAltName=IP:127.0.0.1,DNS:localhost -keyout "$tls/key.pem" -out "$tls/cert.pem" 2>/dev/null
  start_server tlsw --tls-cert "$tls/cert.pem" --tls-key "$tls/key.pem"
  local url
  url="https://127.0.0.1:$(server_port tlsw)"
  printf 'region: %s\ncrr:\n  enabled: true\n  targetRegions: [%s]\n  endpoints:\n    %s: {url: "%s", caFile: "%s"}\n' \
    $EAST $WEST $WEST "$url" "$tls/cert.pem" >"$BATS_TEST_TMPDIR/tls.yaml"
  run --separate-stderr flk-health --config "$BATS_TEST_TMPDIR/tls.yaml"
  assert_status 0
  jq -e --arg u "$url" '.url == $u and .healthy == true and .status == 200' <<<"$output"
  # --peer for a region the configuration has an endpoint for: its CA file applies.
  run --separate-stderr flk-health --config "$BATS_TEST_TMPDIR/tls.yaml" --peer "$WEST=$url"
  assert_status 0
  # A region without an endpoint in the configuration: the system CAs do not know it.
  run --separate-stderr flk-health --config "$BATS_TEST_TMPDIR/tls.yaml" --peer "$EU=$url"
  assert_status 69
  jq -e '.healthy == false and .status == null and (.error | test("certificate"; "i"))' <<<"$output"
}

# canary_bg R ARGS…: flk-health --canary in the background (output in canary.out/.err,
# pid in CANARY); waits until its canary is sealed in R's WAL.
canary_bg() {
  local r=$1 i
  shift
  flk-health --config "$(cfg_of "$r")" --canary "$@" >"$BATS_TEST_TMPDIR/canary.out" 2>"$BATS_TEST_TMPDIR/canary.err" 3>&- &
  CANARY=$!
  for ((i = 0; i < 100; i++)); do
    [[ $(sealed_of "$r") -ge 1 ]] && return 0
    sleep 0.05
  done
  echo "no canary segment in $(wal_of "$r")" >&2
  cat "$BATS_TEST_TMPDIR/canary.err" >&2
  return 1
}

# canary_wait: waits for the background canary; CANARY_STATUS its exit status, output
# and stderr its streams.
canary_wait() {
  CANARY_STATUS=0
  wait "$CANARY" || CANARY_STATUS=$?
  output=$(<"$BATS_TEST_TMPDIR/canary.out")
  stderr=$(<"$BATS_TEST_TMPDIR/canary.err")
}

@test "--canary: each peer applies the sentinel record (ship and read run while it waits); its time is reported and exported" {
  deploy $EAST $WEST $EU
  write_in $EAST 50 east # earlier traffic, shipped and applied already
  write_in $WEST 20 west
  write_in $EU 20 eu
  ship_all
  read_all
  local before
  before=$(sealed_of $EAST)
  local m=$BATS_TEST_TMPDIR/canary.prom
  canary_bg $EAST --canary-timeout 30s --metrics-file "$m" -v
  sleep 0.3
  kill -0 "$CANARY" # waiting: nothing shipped yet
  ship_all
  read_all
  canary_wait
  assert_equal "$CANARY_STATUS" 0 "flk-health --canary's exit status ($stderr)"

  local seq=$((before + 1))
  assert_equal "$(sealed_of $EAST)" "$seq" "the canary's segment, sealed"
  local rec
  rec=$(flk-wal cat "$(segment_path $seq "$(wal_of $EAST)")")
  jq -e --arg r $EAST '(.pcs_id | test("^flk-canary-" + $r + "-[0-9]{19}$")) and .tenant_id == "flk-canary" and .outcome == "accepted" and .region == $r' <<<"$rec"
  assert_stderr_has "canary '$(jq -r .pcs_id <<<"$rec")' written in segment $seq"
  local r
  for r in $WEST $EU; do
    line_of $r | jq -e --argjson s $seq \
      '.healthy == true and .status == 200 and .canary_sequence == $s and .applied_sequence == $s and .canary_ms > 0 and .canary_ms < 30000'
    grep -qE "^flk_region_canary_seconds\{region=\"$r\"\} [0-9.e-]+$" "$m"
    grep -qx "flk_region_health_status{region=\"$r\"} 1" "$m"
  done
  # The canary is in the local store as well as the peers': every store is the rebuild
  # of its WAL and mailbox, and all hold the same records.
  verify_all
}

@test "--canary: a peer whose reader does not run is unhealthy once --canary-timeout passes; the other is measured" {
  deploy $EAST $WEST $EU
  local m=$BATS_TEST_TMPDIR/canary.prom
  canary_bg $EAST --canary-timeout 3s --metrics-file "$m"
  ship_all
  run --separate-stderr flk-read --config "$(cfg_of $WEST)" --once
  assert_status 0
  canary_wait
  assert_equal "$CANARY_STATUS" 69 "exit status ($stderr)"
  line_of $WEST | jq -e '.healthy == true and (.canary_ms | type == "number")'
  line_of $EU | jq -e '.healthy == false and .status == 200 and .canary_ms == null and .applied_sequence == null and (.error | test("canary \\(segment 1\\) not applied within 3s \\(applied: no report\\)"))'
  assert_stderr_has "flk-health: error: region '$EU' is unhealthy: canary (segment 1) not applied within 3s"
  grep -qx "flk_region_health_status{region=\"$EU\"} 0" "$m"
  grep -q "^flk_region_canary_seconds{region=\"$WEST\"} " "$m"
  run ! grep -q "^flk_region_canary_seconds{region=\"$EU\"}" "$m"
}

@test "--canary: a stopped peer is not waited for" {
  deploy $EAST $WEST
  local pid
  pid=$(serve_pid_of $WEST)
  kill "$pid"
  wait_gone "$pid"
  local t0=$SECONDS
  health $EAST --canary --canary-timeout 20s --timeout 1s
  assert_status 69
  ((SECONDS - t0 < 10))
  line_of $WEST | jq -e '.healthy == false and .status == null and .canary_ms == null and .canary_sequence == 1'
}

@test "--canary while flk-wal append holds the WAL: exit 75 naming the holder, nothing written, no peer probed" {
  deploy $EAST $WEST
  mkfifo "$BATS_TEST_TMPDIR/in"
  flk-wal append --wal-dir "$(wal_of $EAST)" --region $EAST <"$BATS_TEST_TMPDIR/in" >/dev/null 2>&1 3>&- &
  local writer=$!
  exec 4>"$BATS_TEST_TMPDIR/in"
  local i
  for ((i = 0; i < 100; i++)); do
    [[ $(cat "$(wal_of $EAST)/LOCK" 2>/dev/null) == "$writer" ]] && break
    sleep 0.05
  done
  health $EAST --canary --canary-timeout 1s
  local st=$status
  exec 4>&- # end of the writer's input: it exits
  wait $writer
  status=$st
  assert_status 75
  assert_stderr_has "flk-health: error: the canary cannot write to WAL '$(wal_of $EAST)' (waited 1s for its lock): cannot lock" "held by pid $writer"
  assert_equal "$output" "" "stdout"
  [[ $(sealed_of $EAST) == 0 ]]
}
