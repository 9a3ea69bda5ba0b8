# shellcheck shell=bash
# Helpers of tests/cli/flk-serve.bats: real flk-serve processes on loopback (HTTP and
# HTTPS), curl(1) as the client, real sealed segments made by `flk-wal append`, TLS
# material made by openssl(1), and checks of what the server left on disk.
#
# Load with `load serve_helpers` (it loads helpers). serve_setup_file (from setup_file)
# makes the fixtures once, in $BATS_FILE_TMPDIR/fix ($FIX):
#   $FIX/east/N.wal      sealed us-east-1 segments 1…22 (~4 KiB each)
#   $FIX/alt/N.wal       other sealed us-east-1 segments 1…2 (a conflict for east's)
#   $FIX/west/N.wal      a sealed us-west-2 segment 1
#   $FIX/big/1.wal       one large (~600 KiB) sealed us-east-1 segment 1
#   $FIX/tok/REGION      bearer tokens of us-east-1, us-west-2, eu-west-1 (mode 600)
#   $FIX/tls/            ca.pem, server.{pem,key} (127.0.0.1, localhost),
#                        client-REGION.{pem,key} (CN=REGION, signed by ca.pem),
#                        other-ca.pem and rogue.{pem,key} (CN=us-east-1, signed by other-ca)
# Every test works below $BATS_TEST_TMPDIR: the server's mailbox is $MB = $ROOT/mailbox,
# and $ROOT holds nothing else, so that anything the server writes outside the mailbox
# shows; the server runs in the empty directory $SCWD for the same reason.

load helpers

EAST=us-east-1
WEST=us-west-2
EU=eu-west-1

# seg DIR N: the fixture segment N of $FIX/DIR.
seg() { printf '%s/%s/%016d.wal' "$FIX" "$1" "$2"; }
# seg_name N: the file name of segment N.
seg_name() { printf '%016d.wal' "$1"; }
# sha FILE: its SHA-256 in hex.
sha() { sha256sum "$1" | cut -d' ' -f1; }

serve_setup_file() {
  [[ -x $FLK_BIN/flk-serve && -x $FLK_BIN/flk-wal ]] || {
    echo "flk-serve or flk-wal not found in FLK_BIN='$FLK_BIN': build first or set FLK_BIN" >&2
    return 1
  }
  local t
  for t in curl openssl jq sha256sum; do
    command -v "$t" >/dev/null || {
      echo "$t is needed by this suite" >&2
      return 1
    }
  done
  PATH=$FLK_BIN:$PATH
  FIX=$BATS_FILE_TMPDIR/fix
  export FIX
  export FLK_CONFIG=$BATS_FILE_TMPDIR/flk.yaml
  echo '# empty' >"$FLK_CONFIG"
  mkdir -p "$FIX/tok"
  make_wal east "$EAST" 900 east 4096 || return 1
  make_wal alt "$EAST" 40 alt 4096 || return 1
  make_wal west "$WEST" 10 west 4096 || return 1
  make_wal big "$EAST" 6000 big 8MiB || return 1
  local n
  n=$(find "$FIX/east" -name '*.wal' | wc -l)
  ((n >= 22)) || {
    echo "fixture: only $n east segments" >&2
    return 1
  }
  for t in "$EAST" "$WEST" "$EU"; do
    echo "tok-$t-$RANDOM$RANDOM$RANDOM" >"$FIX/tok/$t"
    chmod 600 "$FIX/tok/$t"
  done
  make_tls "$FIX/tls" >"$BATS_FILE_TMPDIR/openssl.log" 2>&1 || {
    cat "$BATS_FILE_TMPDIR/openssl.log" >&2
    return 1
  }
}

# make_wal NAME REGION RECORDS PREFIX SEGMENT-BYTES: a WAL $FIX/NAME of sealed segments.
make_wal() {
  REGION=$2 gen_records "$3" "$4" |
    flk-wal append --wal-dir "$FIX/$1" --region "$2" --segment-bytes "$5" >/dev/null || {
    echo "fixture: flk-wal append into $FIX/$1 failed" >&2
    return 1
  }
  if compgen -G "$FIX/$1/*.open" >/dev/null; then
    echo "fixture: $FIX/$1 has an open segment" >&2
    return 1
  fi
}

# make_tls DIR: a CA, a server certificate for 127.0.0.1 and localhost, client
# certificates for the three regions, and a second CA with a client of its own.
make_tls() {
  local d=$1 r
  mkdir -p "$d"
  new_ca "$d/ca" flk-test-ca || return 1
  new_ca "$d/other-ca" flk-other-ca || return 1
  new_cert "$d/server" "$d/ca" flk-server "subjectAltName=IP:127.0.0.1,DNS:localhost
extendedKeyUsage=serverAuth" || return 1
  for r in "$EAST" "$WEST" "$EU"; do
    new_cert "$d/client-$r" "$d/ca" "$r" "extendedKeyUsage=clientAuth" || return 1
  done
  new_cert "$d/rogue" "$d/other-ca" "$EAST" "extendedKeyUsage=clientAuth"
}

new_ca() {
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -keyout "$1.key" -out "$1.pem" -subj "/CN=$2" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
}

# new_cert BASE CA CN EXTENSIONS
new_cert() {
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$1.key" -out "$1.csr" -subj "/CN=$3" || return 1
  printf '%s\n' "$4" >"$1.ext"
  openssl x509 -req -in "$1.csr" -CA "$2.pem" -CAkey "$2.key" -CAcreateserial -days 2 \
    -extfile "$1.ext" -out "$1.pem"
}

# From setup(): the per-test directories and state.
serve_setup() {
  flk_setup || return 1
  ROOT=$BATS_TEST_TMPDIR/root
  MB=$ROOT/mailbox
  SCWD=$BATS_TEST_TMPDIR/cwd
  SLOG=$BATS_TEST_TMPDIR/serve.log
  mkdir -p "$ROOT" "$SCWD"
  : >"$SLOG"
  SERVE_PID=
  SCHEME=http
  TLS_ARGS=()
  as "$EAST"
  export ROOT MB SCWD SLOG
}

# From teardown(): stops the server and every background client still running.
serve_teardown() {
  stop_serve KILL
  local pid
  for pid in $(jobs -p); do
    kill "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
  done
  return 0
}

# start_serve ARGS…: starts flk-serve on 127.0.0.1:0 with the mailbox $MB (extra
# arguments as given; stderr appended to $SLOG) and waits until it listens. Sets
# SERVE_PID, PORT and BASE (the URL, per SCHEME: http or https).
start_serve() {
  local pf=$BATS_TEST_TMPDIR/port
  rm -f "$pf"
  # exec: $! is flk-serve itself; 3>&-: bats does not wait on it.
  (cd "$SCWD" && exec flk-serve --listen 127.0.0.1:0 --port-file "$pf" --mailbox "$MB" "$@" \
    2>>"$SLOG" 3>&-) &
  SERVE_PID=$!
  for _ in $(seq 100); do
    [[ -s $pf ]] && break
    if ! kill -0 "$SERVE_PID" 2>/dev/null; then
      echo "flk-serve exited before listening" >&2
      cat "$SLOG" >&2
      SERVE_PID=
      return 1
    fi
    sleep 0.05
  done
  [[ -s $pf ]] || {
    echo "flk-serve wrote no port file in 5 s" >&2
    return 1
  }
  PORT=$(<"$pf")
  [[ $PORT =~ ^[1-9][0-9]*$ ]] || {
    echo "port file holds '$PORT'" >&2
    return 1
  }
  BASE=$SCHEME://127.0.0.1:$PORT
}

# start_tokens [ARGS…]: a server accepting the three regions' tokens.
start_tokens() {
  start_serve --token-file "$EAST=$FIX/tok/$EAST" --token-file "$WEST=$FIX/tok/$WEST" \
    --token-file "$EU=$FIX/tok/$EU" "$@"
}

# stop_serve [SIGNAL]: signals the server (TERM by default) and waits; SERVE_RC is its
# exit status.
# shellcheck disable=SC2034 # SERVE_RC is for the caller
stop_serve() {
  SERVE_RC=
  [[ -n ${SERVE_PID-} ]] || return 0
  kill -"${1:-TERM}" "$SERVE_PID" 2>/dev/null || true # (it may have exited already)
  SERVE_RC=0
  wait "$SERVE_PID" 2>/dev/null || SERVE_RC=$?
  SERVE_PID=
}

# as REGION | as none | as token VALUE: the Authorization header of later requests.
as() {
  case $1 in
    none) AUTH=() ;;
    token) AUTH=(-H "Authorization: Bearer $2") ;;
    *) AUTH=(-H "Authorization: Bearer $(<"$FIX/tok/$1")") ;;
  esac
}

# req METHOD PATH [CURL-ARGS…]: one request to $BASE. Sets CODE (the HTTP status, 000
# when there was none), CURL_RC, BODY (the response body, also in $RESP) and HDRS
# (the file of response headers). A further -o would be ignored: read $RESP. Never
# fails by itself.
req() {
  local method=$1 path=$2
  shift 2
  RESP=$BATS_TEST_TMPDIR/resp.body
  HDRS=$BATS_TEST_TMPDIR/resp.headers
  rm -f "$RESP" "$HDRS"
  CURL_RC=0
  CODE=$(curl -sS --max-time 20 -X "$method" -H 'Expect:' "${TLS_ARGS[@]}" "${AUTH[@]}" \
    -o "$RESP" -D "$HDRS" -w '%{http_code}' "$@" "$BASE$path" 2>"$BATS_TEST_TMPDIR/curl.err") || CURL_RC=$?
  BODY=
  [[ -f $RESP ]] && BODY=$(tr -d '\0' <"$RESP") # (a segment's bytes are compared with cmp "$RESP")
  return 0
}

# get PATH [CURL-ARGS…]
get() { req GET "$@"; }

# post FILE SOURCE/TARGET/SEQ [CURL-ARGS…]: POSTs FILE there with its SHA-256 in
# X-Flk-Sha256; DIGEST=HEX overrides the header's value and DIGEST= leaves it out.
post() {
  local file=$1 addr=$2 d
  shift 2
  d=${DIGEST-$(sha "$file")}
  local hdr=()
  [[ -n $d ]] && hdr=(-H "X-Flk-Sha256: $d")
  req POST "/v1/segments/$addr" "${hdr[@]}" -H 'Content-Type: application/octet-stream' \
    --data-binary "@$file" "$@"
}

# header NAME: the value of a response header of the last request (CR stripped).
header() {
  [[ -f $HDRS ]] || return 0
  awk -v n="$1" 'BEGIN { n = tolower(n) } {
    sub(/\r$/, ""); i = index($0, ":")
    if (i && tolower(substr($0, 1, i - 1)) == n) { v = substr($0, i + 1); sub(/^[ \t]+/, "", v); print v }
  }' "$HDRS"
}

# assert_code STATUS: the last request got that HTTP status.
assert_code() {
  if [[ $CODE != "$1" ]]; then
    {
      echo "expected HTTP $1, got $CODE (curl exit $CURL_RC)"
      echo "--- body"
      printf '%s\n' "$BODY"
      echo "--- curl"
      cat "$BATS_TEST_TMPDIR/curl.err"
      echo "--- server log (tail)"
      tail -n 20 "$SLOG"
    } >&2
    return 1
  fi
}

# assert_body JQ-FILTER…: the last response body (one JSON value) satisfies each filter.
assert_body() {
  local f
  for f in "$@"; do
    if ! jq -e "$f" <<<"$BODY" >/dev/null 2>&1; then
      printf 'response body fails: %s\n--- body\n%s\n' "$f" "$BODY" >&2
      return 1
    fi
  done
}

# assert_error STATUS REASON: an error response of that status, a JSON object with that
# reason and a non-empty error message.
assert_error() {
  assert_code "$1" || return 1
  assert_body ".reason == \"$2\"" '.error | type == "string" and length > 0' 'keys == ["error", "reason"]'
}

# assert_fails: the last request got no HTTP response at all (a TLS or protocol failure).
assert_no_response() {
  if [[ $CURL_RC == 0 || $CODE != 000 ]]; then
    echo "expected the request to fail without a response; curl exit $CURL_RC, HTTP $CODE" >&2
    printf '%s\n' "$BODY" >&2
    return 1
  fi
}

# root_files: every non-directory below $ROOT (relative paths, sorted), except the stream
# locks MAILBOX/SOURCE/TARGET/.lock, which the mailbox keeps by design.
root_files() {
  find "$ROOT" -mindepth 1 ! -type d -printf '%P\n' | grep -Ev '^mailbox/[a-z0-9-]+/[a-z0-9-]+/\.lock$' | sort
}

# assert_tree PATH…: the files below $ROOT are exactly these (relative to $ROOT), and
# the server's working directory is still empty.
assert_tree() {
  local want have
  want=$(printf '%s\n' "$@" | sed '/^$/d' | sort)
  have=$(root_files)
  assert_equal "$have" "$want" "files below $ROOT" || return 1
  assert_equal "$(find "$SCWD" -mindepth 1 | head -5)" "" "files in the server's working directory"
}

# assert_stored SOURCE TARGET SEQ FILE: the mailbox holds FILE's bytes as that segment,
# with a sidecar that `sha256sum -c` accepts.
assert_stored() {
  local dir=$MB/$1/$2 name
  name=$(seg_name "$3")
  cmp "$dir/$name" "$4" || return 1
  assert_equal "$(<"$dir/$name.sha256")" "$(sha "$4")  $name" "sidecar $dir/$name.sha256" || return 1
  (cd "$dir" && sha256sum --strict -c "$name.sha256" >/dev/null) || {
    echo "sha256sum -c fails in $dir" >&2
    return 1
  }
}

# assert_log ERE…: the server's stderr has a line matching each extended regex.
assert_log() {
  local re
  for re in "$@"; do
    if ! grep -Eq -- "$re" "$SLOG"; then
      printf 'server log lacks /%s/\n--- log\n' "$re" >&2
      cat "$SLOG" >&2
      return 1
    fi
  done
}

# assert_healthy: the server still answers.
assert_healthy() {
  local saved=("${AUTH[@]}")
  AUTH=()
  get /healthz
  AUTH=("${saved[@]}")
  assert_code 200 && assert_equal "$BODY" ok "healthz body"
}

# wait_for_exit PID [SECONDS]: until PID (a child) has exited (default 10 s); fails
# if it has not.
wait_for_exit() {
  for _ in $(seq $((${2:-10} * 20))); do
    kill -0 "$1" 2>/dev/null || return 0
    sleep 0.05
  done
  echo "process $1 still runs after ${2:-10} s" >&2
  return 1
}

# wait_for_file GLOB [MIN-BYTES]: until a file matching GLOB has at least MIN-BYTES
# (default 1) bytes (10 s at most).
wait_for_file() {
  local f
  for _ in $(seq 200); do
    for f in $1; do
      [[ -f $f && $(stat -c %s "$f") -ge ${2:-1} ]] && return 0
    done
    sleep 0.05
  done
  echo "no file '$1' of ${2:-1} bytes or more appeared" >&2
  return 1
}
