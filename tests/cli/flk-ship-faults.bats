#!/usr/bin/env bats
# flk-ship(1) when things go wrong (DESIGN.md §4, §8): bytes damaged in transit,
# connections reset or stalled (through the fault proxy tests/net/faultproxy.cpp,
# whose log proves each fault happened), a receiver restarted mid-run, a lost
# acknowledgement, refused authentication, TLS verification, a WAL segment damaged on
# disk, and flk-ship killed with SIGKILL at random moments. Throughout: the watermark
# never passes what the receiver stored, and the mailbox ends byte-identical to the WAL.

load ship_helpers

setup() {
  ship_setup
}

teardown() {
  ship_teardown
}

# proxied_two_region PROXY-ARGS…: server "west", the fault proxy "proxy" in front of it,
# and a two-region configuration that ships through the proxy.
proxied_two_region() {
  start_server west
  start_proxy proxy "$(server_port west)" "$@"
  config_two_region "http://127.0.0.1:$(server_port proxy)"
}

# assert_proxy_did PATTERN: the proxy's log has a line matching PATTERN (grep -E).
assert_proxy_did() {
  grep -Eq -- "$1" "$BATS_TEST_TMPDIR/proxy.log" || {
    printf 'the proxy did not %s; its log:\n' "$1" >&2
    cat "$BATS_TEST_TMPDIR/proxy.log" >&2
    return 1
  }
}

# json_line SEQ: the JSON line of segment SEQ in $output.
json_line() { jq -c "select(.sequence == $1)" <<<"$output"; }

# --- damage and failures on the wire ----------------------------------------------------

@test "a byte corrupted in transit: the receiver answers 400 and stores nothing, the shipper retries" {
  make_wal 300
  proxied_two_region --connections 1 --corrupt-offset 1000
  run --separate-stderr ship -v
  assert_status 0
  assert_proxy_did "conn 1: corrupted body byte 1000"
  # Segment 1 took two attempts: the first refused as damaged, the second stored.
  json_line 1 | jq -e '.attempts >= 2 and .result == "stored"' >/dev/null || { json_line 1 >&2; return 1; }
  assert_equal "$(posts west 400 | head -1)" 1 "the refused POST"
  grep -q 'POST /v1/segments/us-east-1/us-west-2/1 400' "$BATS_TEST_TMPDIR/west.log"
  # Nothing else was retried, and what is stored is the WAL, byte for byte.
  assert_equal "$(jq -c 'select(.sequence > 1 and .attempts != 1)' <<<"$output")" ""
  assert_full_copy "$(stream_of west $WEST)"
  assert_equal "$(wm_seq $WEST)" "$(last_sealed)"
  jq -e '.failures_total >= 1' "$(wm_file $WEST)" >/dev/null
}

@test "a connection reset mid-transfer is retried" {
  make_wal 300
  proxied_two_region --connections 1 --reset-after 1500
  run --separate-stderr ship
  assert_status 0
  assert_proxy_did "conn 1: reset after 1500 bytes"
  json_line 1 | jq -e '.attempts >= 2 and .result == "stored"' >/dev/null || { json_line 1 >&2; return 1; }
  assert_full_copy "$(stream_of west $WEST)"
  assert_equal "$(wm_seq $WEST)" "$(last_sealed)"
  assert_in_order west
}

@test "a stalled target: --timeout fails the attempt and it is retried" {
  make_wal 200
  proxied_two_region --connections 1 --stall-after 1500
  run --separate-stderr ship --timeout 1s --deadline 10s
  assert_status 0
  assert_proxy_did "conn 1: stalled after 1500 bytes"
  json_line 1 | jq -e '.attempts == 2 and .ms >= 900' >/dev/null || { json_line 1 >&2; return 1; }
  assert_full_copy "$(stream_of west $WEST)"
}

@test "a target that always stalls: exit 75 after the deadline, watermark unchanged" {
  make_wal 200
  proxied_two_region --stall-after 1500
  local t0=$SECONDS
  run --separate-stderr ship --timeout 1s --deadline 2s
  assert_status 75
  ((SECONDS - t0 <= 8))
  assert_proxy_did "conn 2: stalled after 1500 bytes"
  assert_stderr_has "flk-ship: error: " "'$WEST'" "giving up"
  [[ -z $output ]]
  assert_equal "$(wm_seq $WEST)" 0 "watermark"
  [[ -z $(sealed_numbers "$(stream_of west $WEST)") ]]
}

@test "the receiver restarted mid-run: the shipper retries and finishes, in order" {
  gen_records 1200 | wal_append --segment-bytes 2048 >/dev/null
  local last
  last=$(last_sealed)
  ((last >= 40))
  # A slow link (the proxy delays each chunk) so the restart lands mid-run.
  proxied_two_region --delay 20
  ship --deadline 20s >"$BATS_TEST_TMPDIR/out" 2>"$BATS_TEST_TMPDIR/err" 3>&- &
  local pid=$! i
  for ((i = 0; i < 200; i++)); do
    (($(sealed_numbers "$(stream_of west $WEST)" | wc -l) >= 5)) && break
    sleep 0.05
  done
  stop_server west
  local stored_before
  stored_before=$(sealed_numbers "$(stream_of west $WEST)" | wc -l)
  ((stored_before < last)) || { echo "the run ended before the restart" >&2; return 1; }
  sleep 0.5
  restart_server west
  local status=0
  wait "$pid" || status=$?
  assert_status 0
  assert_equal "$(jq -r .sequence "$BATS_TEST_TMPDIR/out")" "$(seq 1 "$last")"
  jq -e -s 'any(.[]; .attempts >= 2)' "$BATS_TEST_TMPDIR/out" >/dev/null
  assert_full_copy "$(stream_of west $WEST)"
  assert_in_order west
  [[ -z $(posts west 409) ]]
  assert_equal "$(wm_seq $WEST)" "$last"
}

# --- acknowledgements and authentication ------------------------------------------------

@test "a lost acknowledgement: re-shipping answers duplicate and duplicates nothing" {
  make_wal 300
  start_server west
  config_two_region "$(server_url west)"
  run --separate-stderr ship
  assert_status 0
  local box listing
  box=$(stream_of west $WEST)
  listing=$(cd "$box" && ls --full-time && sha256sum -- *)
  # The shipper "crashed" before it recorded the acknowledgement.
  rm "$(wm_file $WEST)"
  run --separate-stderr ship
  assert_status 0
  assert_equal "$(jq -r .result <<<"$output" | sort -u)" duplicate
  assert_equal "$(jq -r .sequence <<<"$output")" "$(seq 1 "$(last_sealed)")"
  assert_equal "$(cd "$box" && ls --full-time && sha256sum -- *)" "$listing" "the mailbox after the re-ship"
  assert_equal "$(posts west 200)" "$(seq 1 "$(last_sealed)")"
  [[ -z $(posts west 409) ]]
  assert_equal "$(wm_seq $WEST)" "$(last_sealed)"
}

@test "a wrong token: exit 77 at once with a clear message, nothing stored" {
  make_wal 200
  start_server west
  config_two_region "$(server_url west)"
  echo wrong-token >"$BATS_TEST_TMPDIR/wrong"
  chmod 600 "$BATS_TEST_TMPDIR/wrong"
  sed -i "s#tokenFile: \"$TOKEN\"#tokenFile: \"$BATS_TEST_TMPDIR/wrong\"#" "$CFG"
  grep -q wrong "$CFG"
  local t0=$SECONDS
  run --separate-stderr ship --deadline 60s
  assert_status 77
  ((SECONDS - t0 <= 3))
  assert_stderr_has "flk-ship: error: " "'$WEST'" 401 "unknown bearer token"
  [[ -z $output ]]
  assert_equal "$(posts west | wc -l)" 1 "POSTs (not retried)"
  [[ -z $(sealed_numbers "$(stream_of west $WEST)") && ! -e $(wm_file $WEST) ]]
  [[ $stderr != *wrong-token* ]] # the token itself is never printed
}

@test "a token file readable by everyone is refused (78) before anything is sent" {
  make_wal 5
  start_server west
  config_two_region "$(server_url west)"
  chmod 644 "$TOKEN"
  run --separate-stderr ship
  assert_status 78
  assert_stderr_has "$TOKEN"
  [[ -z $(posts west) ]]
}

# --- TLS --------------------------------------------------------------------------------

# make_ca NAME: a self-signed CA NAME.pem / NAME.key in $BATS_TEST_TMPDIR.
make_ca() {
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -keyout "$BATS_TEST_TMPDIR/$1.key" -out "$BATS_TEST_TMPDIR/$1.pem" -subj "/CN=flk test $1" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
}

# make_cert CA NAME SAN: a server certificate NAME.pem / NAME.key signed by CA.
make_cert() {
  local d=$BATS_TEST_TMPDIR
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$d/$2.key" -out "$d/$2.csr" \
    -subj "/CN=$2" 2>/dev/null
  printf 'subjectAltName=%s\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' "$3" >"$d/$2.ext"
  openssl x509 -req -in "$d/$2.csr" -CA "$d/$1.pem" -CAkey "$d/$1.key" -CAcreateserial -days 2 \
    -extfile "$d/$2.ext" -out "$d/$2.pem" 2>/dev/null
  chmod 600 "$d/$2.key"
}

# tls_config SERVER CA: two-region over https to SERVER, verified with CA.pem.
tls_config() {
  write_config "targetRegions: [$WEST]" "endpoints:" \
    "$(endpoint $WEST "https://127.0.0.1:$(server_port "$1")" "caFile: \"$BATS_TEST_TMPDIR/$2.pem\"")"
}

@test "TLS: with the right CA file shipping works; a wrong CA or a name mismatch is refused (77)" {
  command -v openssl >/dev/null || skip "openssl is not installed"
  make_ca ca
  make_ca other
  make_cert ca good "IP:127.0.0.1,DNS:localhost"
  make_cert ca misnamed "DNS:flk.us-west-2.example"
  make_wal 200
  local d=$BATS_TEST_TMPDIR
  start_server west --tls-cert "$d/good.pem" --tls-key "$d/good.key"
  start_server misnamed --tls-cert "$d/misnamed.pem" --tls-key "$d/misnamed.key"

  # A CA that did not sign the server's certificate.
  tls_config west other
  local t0=$SECONDS
  run --separate-stderr ship --deadline 60s
  assert_status 77
  ((SECONDS - t0 <= 3))
  assert_stderr_has "flk-ship: error: " "'$WEST'" "https://127.0.0.1"
  [[ -z $output && ! -e $(wm_file $WEST) ]]

  # The right CA, but the certificate names another host.
  tls_config misnamed ca
  run --separate-stderr ship --deadline 60s
  assert_status 77
  assert_stderr_has "flk-ship: error: " "'$WEST'"
  [[ -z $(sealed_numbers "$(stream_of misnamed $WEST)") ]]

  # The right CA and name.
  tls_config west ca
  run --separate-stderr ship
  assert_status 0
  assert_equal "$(jq -r .sequence <<<"$output")" "$(seq 1 "$(last_sealed)")"
  assert_full_copy "$(stream_of west $WEST)"
  assert_equal "$(wm_seq $WEST)" "$(last_sealed)"
}

# make_client_cert CA NAME: a client certificate NAME.pem / NAME.key (CN=NAME) signed by CA.
make_client_cert() {
  local d=$BATS_TEST_TMPDIR
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$d/$2.key" -out "$d/$2.csr" \
    -subj "/CN=$2" 2>/dev/null
  printf 'basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n' >"$d/$2.ext"
  openssl x509 -req -in "$d/$2.csr" -CA "$d/$1.pem" -CAkey "$d/$1.key" -CAcreateserial -days 2 \
    -extfile "$d/$2.ext" -out "$d/$2.pem" 2>/dev/null
  chmod 600 "$d/$2.key"
}

# tls_client_config SERVER CLIENT: https to SERVER (CA ca.pem), presenting CLIENT's certificate.
tls_client_config() {
  local d=$BATS_TEST_TMPDIR
  write_config "targetRegions: [$WEST]" "endpoints:" \
    "$(endpoint $WEST "https://127.0.0.1:$(server_port "$1")" \
      "caFile: \"$d/ca.pem\", certFile: \"$d/$2.pem\", keyFile: \"$d/$2.key\"")"
}

@test "TLS client certificates: the region's own is accepted; another CA's, another region's or none is refused (77)" {
  command -v openssl >/dev/null || skip "openssl is not installed"
  make_ca ca
  make_ca other
  make_cert ca good "IP:127.0.0.1,DNS:localhost"
  make_client_cert ca "$REGION"
  make_client_cert other stranger
  make_client_cert ca eu-west-1
  make_wal 150
  local d=$BATS_TEST_TMPDIR
  start_server west --tls-cert "$d/good.pem" --tls-key "$d/good.key" --client-ca "$d/ca.pem"

  # No certificate: the server requires one.
  tls_config west ca
  run --separate-stderr ship --deadline 60s
  assert_status 77
  assert_stderr_has "flk-ship: error: " "'$WEST'"
  [[ -z $output && -z $(sealed_numbers "$(stream_of west $WEST)") ]]

  # A certificate from a CA the server does not trust: the handshake fails.
  tls_client_config west stranger
  run --separate-stderr ship --deadline 60s
  assert_status 77
  assert_stderr_has "flk-ship: error: " "'$WEST'"
  [[ -z $output && -z $(sealed_numbers "$(stream_of west $WEST)") ]]

  # A good certificate of another region than the token's: refused.
  tls_client_config west eu-west-1
  run --separate-stderr ship --deadline 60s
  assert_status 77
  assert_stderr_has "403" "the certificate is 'eu-west-1'"
  [[ -z $(sealed_numbers "$(stream_of west $WEST)") ]]

  # The region's own certificate: everything ships.
  tls_client_config west "$REGION"
  run --separate-stderr ship
  assert_status 0
  assert_full_copy "$(stream_of west $WEST)"
}

# --- the local WAL damaged --------------------------------------------------------------

@test "a sealed WAL segment damaged on disk: exit 65 naming it, the watermark stops before it" {
  make_wal 300
  local last
  last=$(last_sealed)
  ((last >= 4))
  local bad=$WAL/$(seg_name 3) sidecar
  sidecar=$(cat "$bad.sha256")
  flip_byte "$bad" $(($(file_size "$bad") / 2))
  assert_equal "$(cat "$bad.sha256")" "$sidecar"
  start_server west
  config_two_region "$(server_url west)"
  run --separate-stderr ship --deadline 30s
  assert_status 65
  assert_stderr_has "flk-ship: error: " "$bad"
  assert_equal "$(jq -r .sequence <<<"$output")" "$(printf '1\n2')"
  assert_equal "$(wm_seq $WEST)" 2
  assert_full_copy "$(stream_of west $WEST)" 2
  # Still refused on the next run, and nothing moves.
  run --separate-stderr ship
  assert_status 65
  assert_equal "$(wm_seq $WEST)" 2
}

# --- kill -9 ----------------------------------------------------------------------------

# assert_wm_within_mailbox: the watermark names a segment the server stored, with the
# digest it stored, and the mailbox holds 1..its last without a gap.
assert_wm_within_mailbox() {
  local box=$1 wm head stored wm_json={}
  [[ -e $(wm_file $WEST) ]] && wm_json=$(<"$(wm_file $WEST)")
  wm=$(jq -r '.sequence // 0' <<<"$wm_json")
  stored=$(sealed_numbers "$box") # once: the server may still be storing a killed run's POST
  head=$(tail -1 <<<"$stored")
  head=${head:-0}
  ((wm <= head)) || { echo "watermark $wm is past what the server stored ($head)" >&2; return 1; }
  if ((head > 0)); then
    assert_equal "$stored" "$(seq 1 "$head")" "the mailbox's segments" || return 1
  fi
  if ((wm > 0)); then
    assert_equal "$(jq -r .sha256 <<<"$wm_json")" "$(cut -d' ' -f1 "$box/$(seg_name "$wm").sha256")" \
      "the watermark's digest" || return 1
  fi
}

@test "kill -9 at random moments of a long shipment: every rerun resumes, nothing lost or conflicting" {
  gen_records 1500 | wal_append --segment-bytes 512 >/dev/null
  local last box
  last=$(last_sealed)
  ((last >= 100))
  start_server west
  config_two_region "$(server_url west)"
  box=$(stream_of west $WEST)
  local round pid wm prev=0 midway=0
  # Until 6 runs were killed mid-shipment (a busy machine starts slowly: up to 40 runs).
  for ((round = 1; round <= 40 && midway < 6 && prev < last; round++)); do
    # flk-ship itself, not a subshell running it: the SIGKILL must hit the shipper.
    flk-ship --config "$CFG" --once --initial-backoff 50ms --max-backoff 200ms --deadline 10s \
      >>"$BATS_TEST_TMPDIR/out" 2>>"$BATS_TEST_TMPDIR/err" 3>&- &
    pid=$!
    sleep "$(printf '0.%03d' $((RANDOM % 130 + 20)))" # 20 to 149 ms
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    ! kill -0 "$pid" 2>/dev/null
    assert_wm_within_mailbox "$box"
    wm=$(wm_seq $WEST)
    ((wm > prev && wm < last)) && midway=$((midway + 1)) # killed in the middle of shipping
    prev=$wm
  done
  ((midway >= 3)) || { echo "only $midway of $((round - 1)) runs were killed while shipping" >&2; return 1; }
  run --separate-stderr ship
  assert_status 0
  assert_full_copy "$box"
  assert_equal "$(wm_seq $WEST)" "$last"
  [[ -z $(posts west 409) ]]
  assert_in_order west
}
