#!/usr/bin/env bats
# flk-serve(1): the mailbox server against the real binary over loopback, with curl(1)
# as the client — storing (201/200/409/400/413), what lands in the mailbox and nothing
# else, bearer tokens and client certificates, hostile paths, reading back, the
# Prometheus page, SIGTERM and kill -9 during an upload, and concurrent POSTs
# (DESIGN.md §4, §8; the protocol in lib/flk/transport/server.hpp).

load serve_helpers

setup_file() { serve_setup_file; }
setup() { serve_setup; }
teardown() { serve_teardown; }

S1=mailbox/us-east-1/us-west-2/0000000000000001.wal

# --- storing -------------------------------------------------------------------------

@test "POST stores a segment (201) with a sha256sum -c sidecar; the same again is 200 and changes nothing" {
  start_tokens
  post "$(seg east 1)" "$EAST/$WEST/1"
  assert_code 201
  assert_body '. == {"result":"stored","source":"us-east-1","target":"us-west-2","sequence":1}'
  assert_equal "$(header X-Flk-Sha256)" "$(sha "$(seg east 1)")" "X-Flk-Sha256 of the answer"
  assert_stored "$EAST" "$WEST" 1 "$(seg east 1)"
  assert_tree "$S1" "$S1.sha256"
  local before
  before=$(stat -c '%i %y %s' "$MB/$EAST/$WEST/$(seg_name 1)" "$MB/$EAST/$WEST/$(seg_name 1).sha256")

  post "$(seg east 1)" "$EAST/$WEST/1"
  assert_code 200
  assert_body '. == {"result":"duplicate","source":"us-east-1","target":"us-west-2","sequence":1}'
  assert_equal "$(stat -c '%i %y %s' "$MB/$EAST/$WEST/$(seg_name 1)" "$MB/$EAST/$WEST/$(seg_name 1).sha256")" \
    "$before" "inode, mtime and size of the stored segment and sidecar"
  assert_tree "$S1" "$S1.sha256"
  assert_log "^flk-serve: 127\.0\.0\.1:[0-9]+ POST /v1/segments/us-east-1/us-west-2/1 201 in=$(file_size "$(seg east 1)") .* peer=us-east-1$" \
    "^flk-serve: 127\.0\.0\.1:[0-9]+ POST /v1/segments/us-east-1/us-west-2/1 200 .* peer=us-east-1$"
}

@test "a different valid segment at a stored address is 409 and the first is kept" {
  start_tokens
  post "$(seg east 1)" "$EAST/$WEST/1"
  assert_code 201
  cmp -s "$(seg east 1)" "$(seg alt 1)" && { echo "fixture: alt/1 equals east/1" >&2; return 1; }
  post "$(seg alt 1)" "$EAST/$WEST/1"
  assert_error 409 conflict
  assert_stored "$EAST" "$WEST" 1 "$(seg east 1)"
  assert_tree "$S1" "$S1.sha256"
  assert_log " POST /v1/segments/us-east-1/us-west-2/1 409 "
}

@test "a wrong X-Flk-Sha256 is 400 digest_mismatch and stores nothing" {
  start_tokens
  DIGEST=$(sha "$(seg east 2)") post "$(seg east 1)" "$EAST/$WEST/1"
  assert_error 400 digest_mismatch
  assert_tree
  # One flipped hex digit.
  local d
  d=$(sha "$(seg east 1)")
  d=$([[ ${d:0:1} == 0 ]] && echo 1 || echo 0)${d:1}
  DIGEST=$d post "$(seg east 1)" "$EAST/$WEST/1"
  assert_error 400 digest_mismatch
  assert_tree
  # Upper-case hex of the right digest is still the right digest, or a clean 400.
  DIGEST=$(sha "$(seg east 1)" | tr a-f A-F) post "$(seg east 1)" "$EAST/$WEST/1"
  [[ $CODE == 201 || $CODE == 400 ]] || assert_code "201 or 400"
}

@test "a segment whose header names another region or sequence than the URL is 400 invalid_segment" {
  start_tokens
  # A us-west-2 segment posted as us-east-1's (by a token that may write us-east-1).
  post "$(seg west 1)" "$EAST/$WEST/1"
  assert_error 400 invalid_segment
  assert_body '.error | contains("us-west-2")'
  # us-east-1's segment 2 posted as its segment 1, and segment 1 as 2.
  post "$(seg east 2)" "$EAST/$WEST/1"
  assert_error 400 invalid_segment
  post "$(seg east 1)" "$EAST/$WEST/2"
  assert_error 400 invalid_segment
  assert_tree
  # The right address works.
  post "$(seg east 2)" "$EAST/$WEST/2"
  assert_code 201
  assert_tree mailbox/us-east-1/us-west-2/0000000000000002.wal{,.sha256}
}

@test "garbage, truncated, unsealed and empty bodies are 400 and store nothing" {
  start_tokens
  local f=$BATS_TEST_TMPDIR/bad size
  size=$(file_size "$(seg east 1)")

  head -c 4096 /dev/urandom >"$f"
  post "$f" "$EAST/$WEST/1"
  assert_error 400 invalid_segment

  printf 'hello, this is not a segment\n' >"$f"
  post "$f" "$EAST/$WEST/1"
  assert_error 400 invalid_segment

  # Truncated: the seal (and the end of the last record) cut off.
  head -c $((size - 20)) "$(seg east 1)" >"$f"
  post "$f" "$EAST/$WEST/1"
  assert_error 400 invalid_segment
  # Only the header.
  head -c 192 "$(seg east 1)" >"$f"
  post "$f" "$EAST/$WEST/1"
  assert_error 400 invalid_segment

  # An open (unsealed) segment, straight from a WAL.
  min_record a | flk-wal append --wal-dir "$BATS_TEST_TMPDIR/w" --region "$EAST" --keep-open >/dev/null
  f=$BATS_TEST_TMPDIR/w/0000000000000001.open
  [[ -f $f ]]
  post "$f" "$EAST/$WEST/1"
  assert_error 400 invalid_segment
  assert_body '.error | contains("seal")'

  # A damaged byte in the middle (the sidecar digest is of the damaged bytes).
  cp "$(seg east 1)" "$BATS_TEST_TMPDIR/flipped"
  flip_byte "$BATS_TEST_TMPDIR/flipped" 1000
  post "$BATS_TEST_TMPDIR/flipped" "$EAST/$WEST/1"
  assert_error 400 invalid_segment

  # Empty.
  : >"$BATS_TEST_TMPDIR/empty"
  post "$BATS_TEST_TMPDIR/empty" "$EAST/$WEST/1"
  assert_code 400
  assert_body '.reason == "invalid_segment"'
  assert_tree
  assert_healthy
}

@test "a missing or malformed X-Flk-Sha256 header is 400 bad_digest" {
  start_tokens
  local d
  d=$(sha "$(seg east 1)")
  DIGEST= post "$(seg east 1)" "$EAST/$WEST/1"
  assert_error 400 bad_digest
  DIGEST=${d:0:63} post "$(seg east 1)" "$EAST/$WEST/1"
  assert_error 400 bad_digest
  DIGEST=${d}00 post "$(seg east 1)" "$EAST/$WEST/1"
  assert_error 400 bad_digest
  DIGEST=${d:0:63}g post "$(seg east 1)" "$EAST/$WEST/1"
  assert_error 400 bad_digest
  DIGEST="sha256:$d" post "$(seg east 1)" "$EAST/$WEST/1"
  assert_error 400 bad_digest
  assert_tree
}

@test "a body over --max-body is 413, with Content-Length and chunked, and stores nothing" {
  start_tokens --max-body 3000
  local f
  f=$(seg east 1)
  (($(file_size "$f") > 3000))
  post "$f" "$EAST/$WEST/1"
  assert_error 413 too_large
  post "$f" "$EAST/$WEST/1" -H 'Transfer-Encoding: chunked'
  assert_error 413 too_large
  assert_tree
  assert_healthy
  assert_log " POST /v1/segments/us-east-1/us-west-2/1 413 "
  # At the limit exactly, it is stored.
  stop_serve
  start_tokens --max-body "$(file_size "$f")"
  post "$f" "$EAST/$WEST/1" -H 'Transfer-Encoding: chunked'
  assert_code 201
  assert_stored "$EAST" "$WEST" 1 "$f"
}

# --- authentication ------------------------------------------------------------------

@test "tokens: none is 401 with WWW-Authenticate, an unknown one 401, another region's source 403" {
  start_tokens
  as none
  post "$(seg east 1)" "$EAST/$WEST/1"
  assert_error 401 unauthenticated
  [[ $(header WWW-Authenticate) == Bearer* ]] || { echo "WWW-Authenticate: '$(header WWW-Authenticate)'" >&2; return 1; }
  get "/v1/segments/$EAST/$WEST"
  assert_error 401 unauthenticated
  get /v1/streams
  assert_error 401 unauthenticated

  as token "tok-not-known-$RANDOM"
  post "$(seg east 1)" "$EAST/$WEST/1"
  assert_error 401 unauthenticated
  [[ $(header WWW-Authenticate) == Bearer* ]]
  as token ""
  post "$(seg east 1)" "$EAST/$WEST/1"
  assert_code 401
  # Basic instead of Bearer.
  AUTH=(-u "us-east-1:$(<"$FIX/tok/$EAST")")
  post "$(seg east 1)" "$EAST/$WEST/1"
  assert_code 401

  # us-west-2's token may not write us-east-1's stream (nor may eu-west-1's).
  as "$WEST"
  post "$(seg east 1)" "$EAST/$WEST/1"
  assert_error 403 forbidden
  as "$EU"
  post "$(seg east 1)" "$EAST/$EU/1"
  assert_error 403 forbidden
  assert_tree
  assert_log " POST /v1/segments/us-east-1/us-west-2/1 401 .* peer=-$" " POST /v1/segments/us-east-1/us-west-2/1 403 .* peer=us-west-2$"

  # us-west-2 writes its own.
  as "$WEST"
  post "$(seg west 1)" "$WEST/$EAST/1"
  assert_code 201
  assert_stored "$WEST" "$EAST" 1 "$(seg west 1)"
}

@test "tokens: reading needs to be the stream's source or target; /healthz and /metrics need no token" {
  start_tokens
  post "$(seg east 1)" "$EAST/$WEST/1"
  assert_code 201
  as "$EU"
  get "/v1/segments/$EAST/$WEST/1"
  assert_error 403 forbidden
  get "/v1/segments/$EAST/$WEST"
  assert_error 403 forbidden
  get "/v1/head/$EAST/$WEST"
  assert_error 403 forbidden
  get /v1/streams
  assert_code 200
  assert_equal "$BODY" "" "streams eu-west-1 may see"
  # The target reads it.
  as "$WEST"
  get "/v1/segments/$EAST/$WEST/1"
  assert_code 200
  cmp "$RESP" "$(seg east 1)"
  get /v1/streams
  assert_code 200
  assert_equal "$(jq -c '[.source, .target, .sequence]' <<<"$BODY")" '["us-east-1","us-west-2",1]' "streams us-west-2 sees"

  as none
  get /healthz
  assert_code 200
  assert_equal "$BODY" ok "healthz"
  get /metrics
  assert_code 200
  [[ $BODY == *flk_serve_segments_total* ]]
}

@test "no authentication: refused (78) unless --no-auth on loopback; --no-auth elsewhere is 64" {
  run --separate-stderr flk-serve --listen 127.0.0.1:0 --mailbox "$MB"
  assert_status 78
  assert_stderr_has "flk-serve: error: " "without authentication" "--no-auth"
  [[ ! -e $MB ]]

  run --separate-stderr flk-serve --listen 0.0.0.0:0 --mailbox "$MB" --no-auth
  assert_status 64
  assert_stderr_has "flk-serve: error: " "--no-auth" "0.0.0.0"
  [[ ! -e $MB ]]

  run --separate-stderr flk-serve --listen 127.0.0.1:0 --mailbox "$MB" --no-auth --token-file "$FIX/tok/$EAST"
  assert_status 64
  assert_stderr_has "--no-auth"

  # On loopback with --no-auth it serves, and anyone may write anything.
  start_serve --no-auth
  as none
  post "$(seg west 1)" "$WEST/$EAST/1"
  assert_code 201
  post "$(seg east 1)" "$EAST/$WEST/1"
  assert_code 201
  assert_log "listening on 127\.0\.0\.1:0 \(port $PORT\)"
  stop_serve
  assert_equal "$SERVE_RC" 0 "exit status after SIGTERM"
}

@test "a token file readable by others is refused (78); an empty or missing one too" {
  local t=$BATS_TEST_TMPDIR/token
  echo "tok-$RANDOM$RANDOM" >"$t"
  chmod 644 "$t"
  run --separate-stderr flk-serve --listen 127.0.0.1:0 --mailbox "$MB" --token-file "$EAST=$t"
  assert_status 78
  assert_stderr_has "flk-serve: error: " "$t" "readable"
  chmod 600 "$t"
  : >"$t"
  run --separate-stderr flk-serve --listen 127.0.0.1:0 --mailbox "$MB" --token-file "$EAST=$t"
  assert_status 78
  assert_stderr_has "$t" "empty"
  run --separate-stderr flk-serve --listen 127.0.0.1:0 --mailbox "$MB" --token-file "$EAST=$t.missing"
  assert_status 78
  assert_stderr_has "$t.missing"
  [[ ! -e $MB ]]
}

# --- TLS -----------------------------------------------------------------------------

@test "https with --client-ca: no client certificate and another CA's certificate fail the handshake" {
  local tls=$FIX/tls
  SCHEME=https
  start_serve --tls-cert "$tls/server.pem" --tls-key "$tls/server.key" --client-ca "$tls/ca.pem"
  as none
  TLS_ARGS=(--cacert "$tls/ca.pem")
  get /healthz
  assert_no_response
  post "$(seg east 1)" "$EAST/$WEST/1"
  assert_no_response
  TLS_ARGS=(--cacert "$tls/ca.pem" --cert "$tls/rogue.pem" --key "$tls/rogue.key")
  get /healthz
  assert_no_response
  post "$(seg east 1)" "$EAST/$WEST/1"
  assert_no_response
  assert_tree
  # The right certificate gets through.
  TLS_ARGS=(--cacert "$tls/ca.pem" --cert "$tls/client-$EAST.pem" --key "$tls/client-$EAST.key")
  get /healthz
  assert_code 200
}

@test "https with --client-ca: CN=us-east-1 may write us-east-1's streams only, and read what it is party to" {
  local tls=$FIX/tls
  SCHEME=https
  start_serve --tls-cert "$tls/server.pem" --tls-key "$tls/server.key" --client-ca "$tls/ca.pem"
  as none
  TLS_ARGS=(--cacert "$tls/ca.pem" --cert "$tls/client-$EAST.pem" --key "$tls/client-$EAST.key")
  post "$(seg east 1)" "$EAST/$WEST/1"
  assert_code 201
  assert_stored "$EAST" "$WEST" 1 "$(seg east 1)"
  post "$(seg west 1)" "$WEST/$EAST/1"
  assert_error 403 forbidden
  get "/v1/segments/$EAST/$WEST/1"
  assert_code 200
  cmp "$RESP" "$(seg east 1)"
  assert_log " POST /v1/segments/us-east-1/us-west-2/1 201 .* peer=us-east-1$" \
    " POST /v1/segments/us-west-2/us-east-1/1 403 .* peer=us-east-1$"
  # eu-west-1's certificate may not read us-east-1→us-west-2.
  TLS_ARGS=(--cacert "$tls/ca.pem" --cert "$tls/client-$EU.pem" --key "$tls/client-$EU.key")
  get "/v1/segments/$EAST/$WEST/1"
  assert_error 403 forbidden
  assert_tree "$S1" "$S1.sha256"
}

@test "https with tokens and client certificates: a token of another region than the certificate is 403" {
  local tls=$FIX/tls
  SCHEME=https
  start_tokens --tls-cert "$tls/server.pem" --tls-key "$tls/server.key" --client-ca "$tls/ca.pem"
  TLS_ARGS=(--cacert "$tls/ca.pem" --cert "$tls/client-$EAST.pem" --key "$tls/client-$EAST.key")
  as "$WEST"
  post "$(seg west 1)" "$WEST/$EAST/1"
  assert_error 403 forbidden
  as none
  post "$(seg east 1)" "$EAST/$WEST/1"
  assert_error 401 unauthenticated
  as "$EAST"
  post "$(seg east 1)" "$EAST/$WEST/1"
  assert_code 201
  assert_tree "$S1" "$S1.sha256"
}

@test "https: a name not in the certificate fails, so does an unknown CA and plain http to it" {
  local tls=$FIX/tls
  SCHEME=https
  start_tokens --tls-cert "$tls/server.pem" --tls-key "$tls/server.key"
  TLS_ARGS=(--cacert "$tls/ca.pem")
  get /healthz
  assert_code 200
  # localhost is in the certificate too.
  curl -sS --max-time 10 --cacert "$tls/ca.pem" "https://localhost:$PORT/healthz" >/dev/null
  # A name that resolves to the server but is not in its certificate.
  local rc=0
  curl -sS --max-time 10 --cacert "$tls/ca.pem" --resolve "flk.us-west-2.example:$PORT:127.0.0.1" \
    "https://flk.us-west-2.example:$PORT/healthz" 2>"$BATS_TEST_TMPDIR/err" || rc=$?
  assert_equal "$rc" 60 "curl's exit status (peer certificate cannot be authenticated)"
  grep -qi "certificate\|subject\|name" "$BATS_TEST_TMPDIR/err"
  # A client trusting another CA.
  TLS_ARGS=(--cacert "$tls/other-ca.pem")
  get /healthz
  assert_no_response
  assert_equal "$CURL_RC" 60 "curl's exit status with another CA"
  # Plain http to the https port.
  TLS_ARGS=()
  BASE=http://127.0.0.1:$PORT
  post "$(seg east 1)" "$EAST/$WEST/1"
  [[ $CODE != 2* ]] || assert_code "no 2xx"
  get /healthz
  [[ $CODE != 200 ]] || assert_code "not 200"
  assert_tree
  # …and the server goes on serving https.
  BASE=https://127.0.0.1:$PORT
  TLS_ARGS=(--cacert "$tls/ca.pem")
  post "$(seg east 1)" "$EAST/$WEST/1"
  assert_code 201
}

@test "TLS configuration errors: a missing key, unreadable files, --client-ca without TLS" {
  local tls=$FIX/tls
  run --separate-stderr flk-serve --listen 127.0.0.1:0 --mailbox "$MB" --token-file "$EAST=$FIX/tok/$EAST" \
    --tls-cert "$tls/server.pem"
  assert_status 64
  assert_stderr_has "--tls-key"
  run --separate-stderr flk-serve --listen 127.0.0.1:0 --mailbox "$MB" --client-ca "$tls/ca.pem"
  assert_status 64
  assert_stderr_has "--client-ca"
  run --separate-stderr flk-serve --listen 127.0.0.1:0 --mailbox "$MB" --token-file "$EAST=$FIX/tok/$EAST" \
    --tls-cert "$tls/server.pem" --tls-key "$tls/no-such.key"
  assert_status 78
  assert_stderr_has "$tls/no-such.key"
  # A key that does not belong to the certificate.
  run --separate-stderr flk-serve --listen 127.0.0.1:0 --mailbox "$MB" --token-file "$EAST=$FIX/tok/$EAST" \
    --tls-cert "$tls/server.pem" --tls-key "$tls/rogue.key"
  assert_status 78
  assert_stderr_has "flk-serve: error: "
}

# --- paths ---------------------------------------------------------------------------

@test "hostile paths are 400/404, never reach the disk, and the server keeps serving" {
  start_tokens
  local f p long
  f=$(seg east 1)
  long=$(printf 'a%.0s' $(seq 64))
  local -a paths=(
    "/v1/segments/../x/1"
    "/v1/segments/us-east-1/../../x/1"
    "/v1/segments/us-east-1/us-west-2/../../../x/1"
    "/v1/segments/%2e%2e/x/1"
    "/v1/segments/us-east-1/%2e%2e/1"
    "/v1/segments/us-east-1/%2E%2E%2Fx/1"
    "/v1/segments/us-east-1/..%2f..%2fx/1"
    "/v1/segments/us-east-1/us-west-2/..%2f1"
    "/v1/segments/US-EAST-1/us-west-2/1"
    "/v1/segments/us-east-1/US-WEST-2/1"
    "/v1/segments/us-east-1/us%2fwest-2/1"
    "/v1/segments/us-east-1/us-west-2%2f..%2f..%2fx/1"
    "/v1/segments/us-east-1/-west/1"
    "/v1/segments/us-east-1/us_west_2/1"
    "/v1/segments/us-east-1/us-west-2%00/1"
    "/v1/segments/us-east-1/$long/1"
    "/v1/segments/$long/us-west-2/1"
    "/v1/segments/us-east-1/us-west-2/0"
    "/v1/segments/us-east-1/us-west-2/0000000000000000"
    "/v1/segments/us-east-1/us-west-2/00000000000000001"
    "/v1/segments/us-east-1/us-west-2/12345678901234567"
    "/v1/segments/us-east-1/us-west-2/1a"
    "/v1/segments/us-east-1/us-west-2/-1"
    "/v1/segments/us-east-1/us-west-2/+1"
    "/v1/segments/us-east-1/us-west-2/0x1"
    "/v1/segments/us-east-1/us-west-2/1.wal"
    "/v1/segments/us-east-1/us-west-2/%31"
    "/v1/segments/us-east-1"
    "/v1/segments//us-west-2/1"
    "/v1/segments/us-east-1/us-west-2/1/extra"
    "/v1//segments/us-east-1/us-west-2/1"
  )
  local auth codes post_code get_code health_code t=$BATS_TEST_TMPDIR
  auth="Authorization: Bearer $(<"$FIX/tok/$EAST")"
  for p in "${paths[@]}"; do
    # One curl: the POST (Connection: close — see the keep-alive test), the same path
    # with GET, and /healthz to show the server still serves.
    codes=$(curl -sS --max-time 10 --path-as-is -H 'Expect:' -H 'Connection: close' -H "$auth" \
      -H "X-Flk-Sha256: $(sha "$f")" --data-binary "@$f" -o "$t/post.body" -w '%{http_code} ' "$BASE$p" \
      --next --path-as-is -H "$auth" -o "$t/get.body" -w '%{http_code} ' "$BASE$p" \
      --next -o "$t/health.body" -w '%{http_code}' "$BASE/healthz" 2>&1) || true
    read -r post_code get_code health_code <<<"$codes"
    # %31 is "1" percent-encoded: the server may decode it; then it is a real address.
    if [[ $p == */%31 && $codes == "201 200 200" ]]; then
      cmp "$t/get.body" "$f"
      rm -f "$MB/$EAST/$WEST/$(seg_name 1)"{,.sha256}
      continue
    fi
    if [[ $post_code != 400 && $post_code != 404 ]] || ! jq -e '.reason | type == "string"' "$t/post.body" >/dev/null; then
      echo "POST $p: $codes: $(cat "$t/post.body")" >&2
      return 1
    fi
    if [[ $get_code != 400 && $get_code != 404 ]]; then
      echo "GET $p: $codes: $(cat "$t/get.body")" >&2
      return 1
    fi
    assert_equal "$health_code $(cat "$t/health.body")" "200 ok" "/healthz after $p"
  done
  # Reads outside the mailbox.
  echo secret >"$BATS_TEST_TMPDIR/secret"
  for p in /v1/segments/../../secret "/v1/segments/%2e%2e/%2e%2e/secret" "/v1/head/../.." "/v1/head/%2e%2e/%2e%2e" \
    /../../secret "/%2e%2e/%2e%2e/secret" /metrics/../secret /v1/streams/../../secret; do
    req GET "$p" --path-as-is
    [[ $CODE == 400 || $CODE == 404 ]] || { echo "GET $p: HTTP $CODE: $BODY" >&2; return 1; }
    [[ $BODY != *secret* ]]
  done
  # Nothing was written: no file anywhere but what the test made, no stray directory.
  assert_tree
  assert_equal "$(find "$ROOT" -mindepth 1 -type d ! -path "$MB" ! -path "$MB/*" | head)" "" "directories outside the mailbox"
  assert_equal "$(find "$BATS_TEST_TMPDIR" -name x -o -name '*.wal' -path "$BATS_TEST_TMPDIR/root/*" | head)" "" "stray files"
  if [[ -d $MB ]]; then
    assert_equal "$(find "$MB" -mindepth 1 -type d | sed "s|^$MB/||" | grep -Ev '^(\.incoming|[a-z0-9][a-z0-9-]{0,62}(/[a-z0-9][a-z0-9-]{0,62})?)$' | head)" \
      "" "directories in the mailbox that are not regions"
  fi
  # A real POST still works.
  post "$f" "$EAST/$WEST/1"
  assert_code 201
  assert_stored "$EAST" "$WEST" 1 "$f"
}

@test "a 63-character region is valid; the sequence may have 16 digits, leading zeros included" {
  start_tokens
  local long
  long=a$(printf 'b%.0s' $(seq 62))
  post "$(seg east 1)" "$EAST/$long/0000000000000001"
  assert_code 201
  assert_stored "$EAST" "$long" 1 "$(seg east 1)"
  post "$(seg east 1)" "$EAST/$long/1"
  assert_code 200
  get "/v1/segments/$EAST/$long/9999999999999999"
  assert_error 404 not_found
}

# --- reading -------------------------------------------------------------------------

@test "GET returns the stored bytes with X-Flk-Sha256; a missing segment is 404" {
  start_tokens
  local n
  for n in 1 2 3; do
    post "$(seg east "$n")" "$EAST/$WEST/$n"
    assert_code 201
  done
  for n in 1 2 3; do
    get "/v1/segments/$EAST/$WEST/$n"
    assert_code 200
    cmp "$RESP" "$(seg east "$n")"
    assert_equal "$(header X-Flk-Sha256)" "$(sha "$(seg east "$n")")" "X-Flk-Sha256 of segment $n"
    assert_equal "$(header Content-Length)" "$(file_size "$(seg east "$n")")" "Content-Length of segment $n"
  done
  get "/v1/segments/$EAST/$WEST/0000000000000002"
  assert_code 200
  cmp "$RESP" "$(seg east 2)"
  get "/v1/segments/$EAST/$WEST/4"
  assert_error 404 not_found
  get "/v1/segments/$EAST/$EU/1"
  assert_error 404 not_found
  as "$EU"
  get "/v1/segments/$EU/$EAST/1"
  assert_error 404 not_found
}

@test "listing with ?after= and &limit=, the head, and /v1/streams" {
  start_tokens
  local n
  for n in 1 2 3 4 5; do
    post "$(seg east "$n")" "$EAST/$WEST/$n"
    assert_code 201
  done
  post "$(seg east 1)" "$EAST/$EU/1"
  assert_code 201
  as "$WEST"
  post "$(seg west 1)" "$WEST/$EAST/1"
  assert_code 201

  as "$EAST"
  local want
  want=$(for n in 1 2 3 4 5; do
    jq -nc --argjson s "$n" --argjson b "$(file_size "$(seg east "$n")")" --arg d "$(sha "$(seg east "$n")")" \
      '{sequence: $s, bytes: $b, sha256: $d}'
  done)
  get "/v1/segments/$EAST/$WEST"
  assert_code 200
  assert_equal "$BODY" "$want" "listing"
  get "/v1/segments/$EAST/$WEST/"
  assert_code 200
  assert_equal "$BODY" "$want" "listing (trailing slash)"
  get "/v1/segments/$EAST/$WEST?after=2"
  assert_code 200
  assert_equal "$(jq -r .sequence <<<"$BODY" | tr '\n' ' ')" "3 4 5 " "after=2"
  get "/v1/segments/$EAST/$WEST?after=1&limit=2"
  assert_code 200
  assert_equal "$BODY" "$(sed -n 2,3p <<<"$want")" "after=1&limit=2"
  get "/v1/segments/$EAST/$WEST?after=5"
  assert_code 200
  assert_equal "$BODY" "" "after=5"
  get "/v1/segments/$EAST/$WEST?limit=0"
  assert_code 200
  assert_equal "$BODY" "" "limit=0"
  get "/v1/segments/$EAST/$WEST?after=-1"
  assert_error 400 bad_request
  get "/v1/segments/$EAST/$WEST?limit=lots"
  assert_error 400 bad_request
  get "/v1/segments/$EAST/$EU?after=0"
  assert_code 200
  assert_equal "$(jq -c '[.sequence, .bytes]' <<<"$BODY")" "[1,$(file_size "$(seg east 1)")]" "listing of us-east-1→eu-west-1"
  get "/v1/segments/$EAST/ap-south-1"
  assert_code 200
  assert_equal "$BODY" "" "listing of a stream that does not exist"

  # The head: the last sequence, its digest and the last ts its seal records.
  local last_ts
  last_ts=$(flk-wal cat "$(seg east 5)" | jq -r .ts | sort | tail -n 1)
  get "/v1/head/$EAST/$WEST"
  assert_code 200
  assert_body ".source == \"$EAST\" and .target == \"$WEST\" and .sequence == 5" \
    ".sha256 == \"$(sha "$(seg east 5)")\"" ".last_ts == \"$last_ts\"" '.last_ts_ns | type == "number"' \
    'keys == ["last_ts","last_ts_ns","sequence","sha256","source","target"]'
  get "/v1/head/$EAST/ap-south-1"
  assert_code 200
  assert_body '. == {"source":"us-east-1","target":"ap-south-1","sequence":0}'

  # /v1/streams: the head of every stream the peer is party to.
  get /v1/streams
  assert_code 200
  assert_equal "$(jq -c '[.source, .target, .sequence]' <<<"$BODY" | tr '\n' ' ')" \
    '["us-east-1","eu-west-1",1] ["us-east-1","us-west-2",5] ["us-west-2","us-east-1",1] ' "streams of us-east-1"
  as "$EU"
  get /v1/streams
  assert_code 200
  assert_equal "$(jq -c '[.source, .target, .sequence]' <<<"$BODY" | tr '\n' ' ')" \
    '["us-east-1","eu-west-1",1] ' "streams of eu-west-1"
}

# --- metrics -------------------------------------------------------------------------

@test "/metrics is valid Prometheus text and its counters follow what happened" {
  command -v promtool >/dev/null || skip "promtool (Debian: prometheus) is not installed"
  start_tokens
  as none
  get /metrics
  assert_code 200
  promtool check metrics <<<"$BODY"
  grep -Fxq 'flk_serve_segments_total{result="stored"} 0' <<<"$BODY"

  as "$EAST"
  post "$(seg east 1)" "$EAST/$WEST/1" # stored
  post "$(seg east 2)" "$EAST/$WEST/2" # stored
  post "$(seg east 1)" "$EAST/$WEST/1" # duplicate
  post "$(seg alt 1)" "$EAST/$WEST/1"  # conflict
  DIGEST=$(sha "$(seg east 2)") post "$(seg east 3)" "$EAST/$WEST/3" # rejected: digest mismatch
  post "$(seg west 1)" "$EAST/$WEST/3"                                 # rejected: invalid segment
  # Connection: close — a refused body is left unread, and on a kept-alive connection
  # the server would parse it as a further request (a 400 of its own; see the test
  # "a refused POST does not desynchronise a kept-alive connection").
  as none
  post "$(seg east 3)" "$EAST/$WEST/3" -H 'Connection: close' # 401
  as "$WEST"
  post "$(seg east 3)" "$EAST/$WEST/3" -H 'Connection: close' # 403
  get "/v1/segments/$WEST/$EAST/7"     # 404

  as none
  get /metrics
  assert_code 200
  [[ $(header Content-Type) == text/plain* ]]
  printf '%s\n' "$BODY" >"$BATS_TEST_TMPDIR/metrics"
  promtool check metrics <"$BATS_TEST_TMPDIR/metrics"
  local want
  want=$(printf '%s\n' \
    'flk_serve_segments_total{result="stored"} 2' \
    'flk_serve_segments_total{result="duplicate"} 1' \
    'flk_serve_segments_total{result="conflict"} 1' \
    'flk_serve_segments_total{result="rejected"} 2' \
    'flk_serve_responses_total{code="200"} 2' \
    'flk_serve_responses_total{code="201"} 2' \
    'flk_serve_responses_total{code="400"} 2' \
    'flk_serve_responses_total{code="401"} 1' \
    'flk_serve_responses_total{code="403"} 1' \
    'flk_serve_responses_total{code="404"} 1' \
    'flk_serve_responses_total{code="409"} 1' \
    'flk_serve_mailbox_sequence{source="us-east-1",target="us-west-2"} 2')
  local l
  while read -r l; do
    grep -Fxq "$l" "$BATS_TEST_TMPDIR/metrics" || {
      printf 'metrics lack: %s\n--- metrics\n' "$l" >&2
      cat "$BATS_TEST_TMPDIR/metrics" >&2
      return 1
    }
  done <<<"$want"
  # received bytes: at least the two stored segments.
  local rx
  rx=$(awk '$1 == "flk_serve_received_bytes_total" { print $2 }' "$BATS_TEST_TMPDIR/metrics")
  (($(printf '%.0f' "$rx") >= $(file_size "$(seg east 1)") + $(file_size "$(seg east 2)")))
  grep -q '^# TYPE flk_serve_segments_total counter$' "$BATS_TEST_TMPDIR/metrics"
}

# --- connections ---------------------------------------------------------------------

# keep_alive_pair CURL-ARGS-OF-THE-FIRST…: one curl, two requests on one connection —
# the given POST, then GET /v1/streams as us-east-1; prints both statuses.
keep_alive_pair() {
  curl -sS --max-time 20 -H 'Expect:' -o /dev/null -w '%{http_code} %{num_connects}\n' "$@" \
    --next -H "Authorization: Bearer $(<"$FIX/tok/$EAST")" -o /dev/null -w '%{http_code} %{num_connects}\n' \
    "$BASE/v1/streams"
}

@test "a refused POST does not desynchronise a kept-alive connection" {
  start_tokens
  local f
  f=$(seg east 1)
  # 401, then a good request on the same connection: 200, and no stray response.
  run --separate-stderr keep_alive_pair -H "X-Flk-Sha256: $(sha "$f")" --data-binary "@$f" \
    "$BASE/v1/segments/$EAST/$WEST/1"
  assert_status 0
  assert_equal "$output" $'401 1\n200 0' "statuses and new connections"
  # The refused body was read and dropped: no request was made of its bytes.
  assert_equal "$(grep -c ' 400 ' "$SLOG")" 0 "400 responses in the log"
  # 413 by Content-Length and chunked, then a good request.
  stop_serve
  start_tokens --max-body 1000
  run --separate-stderr keep_alive_pair -H "Authorization: Bearer $(<"$FIX/tok/$EAST")" \
    -H "X-Flk-Sha256: $(sha "$f")" --data-binary "@$f" "$BASE/v1/segments/$EAST/$WEST/1"
  assert_status 0
  [[ ${lines[0]} == "413 "* && ${lines[1]} == "200 "* ]] || assert_equal "$output" "413 …, 200 …" "statuses"
  run --separate-stderr keep_alive_pair -H "Authorization: Bearer $(<"$FIX/tok/$EAST")" -H 'Transfer-Encoding: chunked' \
    -H "X-Flk-Sha256: $(sha "$f")" --data-binary "@$f" "$BASE/v1/segments/$EAST/$WEST/1"
  assert_status 0
  [[ ${lines[0]} == "413 "* && ${lines[1]} == "200 "* ]] || assert_equal "$output" "413 …, 200 …" "statuses"
  # A body too large to drop ends the connection (Connection: close); cpp-httplib 0.11
  # then still parses what the client had sent before closing, and logs a 400 for it
  # on the dead connection — at most one per refused body, never seen by a client.
  (($(grep -c ' 400 ' "$SLOG") <= 2))
}

# --- signals and crashes -------------------------------------------------------------

@test "SIGTERM during a slow upload: the request is finished (201), then the server exits 0" {
  start_tokens
  local f pid rc=0
  f=$(seg big 1)
  (($(file_size "$f") > 400000))
  curl -sS --max-time 30 -H 'Expect:' "${AUTH[@]}" -H "X-Flk-Sha256: $(sha "$f")" --data-binary "@$f" \
    --limit-rate 250k -o "$BATS_TEST_TMPDIR/up.body" -w '%{http_code}' \
    "$BASE/v1/segments/$EAST/$WEST/1" >"$BATS_TEST_TMPDIR/up.code" 2>"$BATS_TEST_TMPDIR/up.err" 3>&- &
  pid=$!
  # The body is being received (flk-serve gathers it in 1 MiB writes, so the temp file
  # stays empty for a while: its existence is the sign), half a second into it.
  wait_for_file "$MB/.incoming/*" 0
  sleep 0.5
  kill -TERM "$SERVE_PID"
  sleep 0.2
  # Still uploading; the server has not exited.
  kill -0 "$SERVE_PID"
  wait "$pid" || rc=$?
  assert_equal "$rc" 0 "curl's exit status ($(cat "$BATS_TEST_TMPDIR/up.err"))"
  assert_equal "$(<"$BATS_TEST_TMPDIR/up.code")" 201 "HTTP status of the upload"
  wait_for_exit "$SERVE_PID" 5
  local src=0
  wait "$SERVE_PID" || src=$?
  SERVE_PID=
  assert_equal "$src" 0 "flk-serve's exit status"
  assert_stored "$EAST" "$WEST" 1 "$f"
  assert_tree "$S1" "$S1.sha256"
  assert_log " POST /v1/segments/us-east-1/us-west-2/1 201 in=$(file_size "$f") "
}

@test "kill -9 during an upload: no partial segment is visible or served, and a re-POST works" {
  start_tokens
  local f pid
  f=$(seg big 1)
  curl -sS --max-time 30 -H 'Expect:' "${AUTH[@]}" -H "X-Flk-Sha256: $(sha "$f")" --data-binary "@$f" \
    --limit-rate 250k -o /dev/null -w '%{http_code}' \
    "$BASE/v1/segments/$EAST/$WEST/1" >"$BATS_TEST_TMPDIR/up.code" 2>/dev/null 3>&- &
  pid=$!
  wait_for_file "$MB/.incoming/*" 0 # receiving (gathered in 1 MiB writes: the file may be empty)
  sleep 0.5
  stop_serve KILL
  assert_equal "$SERVE_RC" 137 "exit status of the killed server"
  wait "$pid" || true
  [[ $(<"$BATS_TEST_TMPDIR/up.code") != 2* ]]
  # Only a temp file, never a partial N.wal.
  [[ ! -e $MB/$EAST/$WEST/$(seg_name 1) && ! -e $MB/$EAST/$WEST/$(seg_name 1).sha256 ]]
  local leftovers
  leftovers=$(root_files | grep -v "^mailbox/\.incoming/" || true)
  assert_equal "$leftovers" "" "files besides temps in .incoming/"

  start_tokens
  get "/v1/segments/$EAST/$WEST/1"
  assert_error 404 not_found
  get "/v1/segments/$EAST/$WEST"
  assert_code 200
  assert_equal "$BODY" "" "listing after the crash"
  get "/v1/head/$EAST/$WEST"
  assert_code 200
  assert_body '.sequence == 0'
  post "$f" "$EAST/$WEST/1"
  assert_code 201
  assert_stored "$EAST" "$WEST" 1 "$f"
  get "/v1/segments/$EAST/$WEST/1"
  assert_code 200
  cmp "$RESP" "$f"
}

# --- concurrency ---------------------------------------------------------------------

@test "20 parallel POSTs of different segments all land" {
  start_tokens
  local n pids=()
  for n in $(seq 20); do
    curl -sS --max-time 30 -H 'Expect:' "${AUTH[@]}" -H "X-Flk-Sha256: $(sha "$(seg east "$n")")" \
      --data-binary "@$(seg east "$n")" -o /dev/null -w '%{http_code}\n' \
      "$BASE/v1/segments/$EAST/$WEST/$n" >"$BATS_TEST_TMPDIR/code.$n" 2>&1 3>&- &
    pids+=($!)
  done
  for n in "${pids[@]}"; do wait "$n"; done
  assert_equal "$(cat "$BATS_TEST_TMPDIR"/code.* | sort | uniq -c | awk '{ print $1, $2 }')" "20 201" "statuses"
  local want=()
  for n in $(seq 20); do
    assert_stored "$EAST" "$WEST" "$n" "$(seg east "$n")"
    want+=("mailbox/$EAST/$WEST/$(seg_name "$n")" "mailbox/$EAST/$WEST/$(seg_name "$n").sha256")
  done
  assert_tree "${want[@]}"
  get "/v1/head/$EAST/$WEST"
  assert_body '.sequence == 20'
}

@test "10 parallel POSTs of the same segment: exactly one 201, nine 200" {
  start_tokens
  local n pids=() f
  f=$(seg east 1)
  for n in $(seq 10); do
    curl -sS --max-time 30 -H 'Expect:' "${AUTH[@]}" -H "X-Flk-Sha256: $(sha "$f")" \
      --data-binary "@$f" -o /dev/null -w '%{http_code}\n' \
      "$BASE/v1/segments/$EAST/$WEST/1" >"$BATS_TEST_TMPDIR/code.$n" 2>&1 3>&- &
    pids+=($!)
  done
  for n in "${pids[@]}"; do wait "$n"; done
  assert_equal "$(cat "$BATS_TEST_TMPDIR"/code.* | sort | uniq -c | awk '{ print $1, $2 }')" $'9 200\n1 201' "statuses"
  assert_stored "$EAST" "$WEST" 1 "$f"
  assert_tree "$S1" "$S1.sha256"
  as none
  get /metrics
  grep -Fxq 'flk_serve_segments_total{result="stored"} 1' <<<"$BODY"
  grep -Fxq 'flk_serve_segments_total{result="duplicate"} 9' <<<"$BODY"
}

@test "parallel POSTs of two different segments at one address: one 201, the other 409, the winner intact" {
  start_tokens
  local n pids=()
  for n in $(seq 6); do
    local f
    f=$( ((n % 2)) && seg east 1 || seg alt 1)
    curl -sS --max-time 30 -H 'Expect:' "${AUTH[@]}" -H "X-Flk-Sha256: $(sha "$f")" \
      --data-binary "@$f" -o /dev/null -w "%{http_code} $((n % 2))\n" \
      "$BASE/v1/segments/$EAST/$WEST/1" >"$BATS_TEST_TMPDIR/code.$n" 2>&1 3>&- &
    pids+=($!)
  done
  for n in "${pids[@]}"; do wait "$n"; done
  local winner
  winner=$(awk '$1 == 201 { print $2 }' "$BATS_TEST_TMPDIR"/code.*)
  [[ $winner == 0 || $winner == 1 ]] || { cat "$BATS_TEST_TMPDIR"/code.* >&2; return 1; }
  # The winner's kind: 1 × 201 + 2 × 200; the loser's: 3 × 409.
  assert_equal "$(awk -v w="$winner" '{ print ($2 == w ? "w" : "l"), $1 }' "$BATS_TEST_TMPDIR"/code.* | sort | uniq -c | awk '{ print $1, $2, $3 }')" \
    $'3 l 409\n2 w 200\n1 w 201' "statuses"
  if ((winner)); then assert_stored "$EAST" "$WEST" 1 "$(seg east 1)"; else assert_stored "$EAST" "$WEST" 1 "$(seg alt 1)"; fi
  assert_tree "$S1" "$S1.sha256"
}

@test "PUT /v1/applied: only the stream's target reports; the head carries the report; bad bodies are 400/411/413" {
  start_tokens
  post "$(seg east 1)" "$EAST/$WEST/1"
  assert_code 201
  local report='{"sequence":1,"sha256":"'$(sha "$(seg east 1)")'","time":"2026-11-26T09:00:00.5Z"}'
  # The source, a third region and no token may not report what the target applied.
  as "$EAST"
  req PUT "/v1/applied/$EAST/$WEST" -H 'Content-Type: application/json' --data-binary "$report"
  assert_error 403 forbidden
  as "$EU"
  req PUT "/v1/applied/$EAST/$WEST" -H 'Content-Type: application/json' --data-binary "$report"
  assert_error 403 forbidden
  as none
  req PUT "/v1/applied/$EAST/$WEST" --data-binary "$report"
  assert_code 401
  [[ ! -e $MB/$EAST/$WEST/applied.json ]]

  as "$WEST"
  req PUT "/v1/applied/$EAST/$WEST" -H 'Content-Type: application/json' --data-binary "$report"
  assert_code 204
  assert_equal "$(jq -c . "$MB/$EAST/$WEST/applied.json")" "$(jq -c . <<<"$report")" "the report on disk"
  # Both parties see it in the head.
  for r in "$WEST" "$EAST"; do
    as "$r"
    get "/v1/head/$EAST/$WEST"
    assert_code 200
    assert_equal "$(jq -c '[.sequence, .applied.sequence, .applied.time]' <<<"$BODY")" '[1,1,"2026-11-26T09:00:00.5Z"]' "head seen by $r"
  done

  as "$WEST"
  req PUT "/v1/applied/$EAST/$WEST" --data-binary '{"sequence":"x"}'
  assert_error 400 bad_request
  req PUT "/v1/applied/$EAST/$WEST" --data-binary "$(head -c 5000 /dev/zero | tr '\0' ' ')"
  assert_error 413 too_large
  req PUT "/v1/applied/$EAST/$WEST" -H 'Transfer-Encoding: chunked' --data-binary "$report"
  assert_error 411 length_required
  # The report on disk is still the good one; the server still serves.
  assert_equal "$(jq -r .sequence "$MB/$EAST/$WEST/applied.json")" 1 "report after bad ones"
  assert_healthy
}
