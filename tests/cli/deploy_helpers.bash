# shellcheck shell=bash
# shellcheck disable=SC2154 # output, status, lines, stderr: set by bats' run
# A deployment of N regions on one machine, for the end-to-end suites (flk-read-e2e.bats,
# flk-watermark.bats): each region with its WAL, dedup store, mailbox, state, tokens per
# peer, its configuration (as an operator writes it) and its flk-serve on loopback; and
# the rounds run on it (write, ship, read, verify). Load with `load deploy_helpers` (it
# loads read_helpers); call read_setup / read_teardown from setup / teardown.

load read_helpers

store_of() { cat "$(rdir "$1")/store.url"; }

# region_config R: R's flk.yaml: paths, dedup.url, crr (two-region: targetRegions; more:
# multi-way peers), endpoints of the peers whose servers run (their .port files),
# short retries, serve.tokens.
region_config() {
  local r=$1 p peers=()
  for p in "${REGIONS[@]}"; do [[ $p != "$r" ]] && peers+=("$p"); done
  {
    printf 'region: %s\npaths:\n  wal: %s\n  mailbox: %s\n  state: %s\n' "$r" "$(wal_of "$r")" "$(mb_of "$r")" "$(state_of "$r")"
    printf 'dedup:\n  url: "%s"\n' "$(store_of "$r")"
    printf 'crr:\n  enabled: true\n  sourceRegion: %s\n' "$r"
    if ((${#peers[@]} == 1)); then
      printf '  targetRegions: [%s]\n' "${peers[0]}"
    else
      local joined
      joined=$(IFS=,; echo "${peers[*]}")
      printf '  replicationMode: multi-way\n  peers: [%s]\n' "${joined//,/, }"
    fi
    if [[ -s $(rdir "${peers[0]}")/port ]]; then
      printf '  endpoints:\n'
      for p in "${peers[@]}"; do
        printf '    %s: {url: "http://127.0.0.1:%s", tokenFile: "%s"}\n' "$p" "$(tr -d '\n' <"$(rdir "$p")/port")" \
          "$(rdir "$r")/tokens/to-$p"
      done
    fi
    printf '  retry: {initialBackoff: 50ms, maxBackoff: 200ms, deadline: 3s}\n'
    printf 'serve:\n  tokens:\n'
    for p in "${peers[@]}"; do printf '    %s: "%s"\n' "$p" "$(rdir "$r")/tokens/from-$p"; done
  } >"$(cfg_of "$r")"
}

# deploy [--store postgres|redis] R…: the regions, each with a token per peer (the file
# R presents to P is P's accepted token from R), its configuration and its flk-serve
# (--listen 127.0.0.1:0, the rest from the configuration). Sets REGIONS.
deploy() {
  local backend=sqlite
  if [[ $1 == --store ]]; then backend=$2 && shift 2; fi
  REGIONS=("$@")
  local r p t
  for r in "${REGIONS[@]}"; do
    mkdir -p "$(rdir "$r")/tokens"
    if [[ $backend == sqlite ]]; then sqlite_of "$r" >"$(rdir "$r")/store.url"; else backend_url "$backend" >"$(rdir "$r")/store.url"; fi
  done
  for r in "${REGIONS[@]}"; do
    for p in "${REGIONS[@]}"; do
      [[ $p == "$r" ]] && continue
      t="tok-$r-to-$p-$RANDOM$RANDOM"
      echo "$t" >"$(rdir "$r")/tokens/to-$p"
      echo "$t" >"$(rdir "$p")/tokens/from-$r"
    done
  done
  chmod 600 "$BATS_TEST_TMPDIR"/r-*/tokens/*
  for r in "${REGIONS[@]}"; do
    region_config "$r"
    flk-serve --config "$(cfg_of "$r")" --listen 127.0.0.1:0 --port-file "$(rdir "$r")/port" \
      >>"$(rdir "$r")/serve.log" 2>&1 3>&- &
    echo $! >>"$PIDS"
  done
  for r in "${REGIONS[@]}"; do
    wait_file "$(rdir "$r")/port" || { cat "$(rdir "$r")/serve.log" >&2; return 1; }
  done
  for r in "${REGIONS[@]}"; do region_config "$r"; done
}

# write_in R N PREFIX [FIRST] [SEGMENT-BYTES]: R's backend decides N records: into its
# WAL, and into its own store (merged in place from the WAL, as first write wins would).
write_in() {
  append_in "$@"
  flk-rebuild-dedup --config "$(cfg_of "$1")" --in-place --no-mailbox -q >/dev/null
}

# shared_in R N: N records shared-… that every region writes with its own outcome and
# time (conflicts across regions).
shared_in() {
  local r=$1 n=$2 o k
  case $r in us-east-1) o=accepted k=3 ;; us-west-2) o=rejected k=1 ;; *) o=escalated k=2 ;; esac
  REGION=$r gen_records "$n" shared | jq -c --arg o $o --argjson k $k \
    '.outcome = $o | .ts = "2026-11-26T11:00:\((.payload.n * $k) % 50 + 10).000000001Z"' >"$(rdir "$r")/shared.jsonl"
  records_in "$r" "$(rdir "$r")/shared.jsonl"
  flk-rebuild-dedup --config "$(cfg_of "$r")" --in-place --no-mailbox -q >/dev/null
}

# ship_all: flk-ship --once in every region that has written (has a WAL); all must
# succeed. SHIPPED: their JSON lines.
ship_all() {
  local r
  SHIPPED=
  for r in "${REGIONS[@]}"; do
    [[ -d $(wal_of "$r") ]] || continue
    run --separate-stderr flk-ship --config "$(cfg_of "$r")" --once
    assert_status 0 || return 1
    SHIPPED+=$output$'\n'
  done
}

# read_all: flk-read --once in every region (from its own mailbox, by configuration);
# all must succeed. READ_OUT[R]: each one's JSON lines (in $(rdir R)/read.out).
read_all() {
  local r
  for r in "${REGIONS[@]}"; do
    run --separate-stderr flk-read --config "$(cfg_of "$r")" --once
    assert_status 0 || return 1
    printf '%s\n' "$output" >"$(rdir "$r")/read.out"
  done
}
read_out() { grep '^{' "$(rdir "$1")/read.out" || true; }

# verify_all: every region's store equals the rebuild of its WAL and mailbox, and all
# report one content digest; sets DIGEST.
verify_all() {
  local r first=
  for r in "${REGIONS[@]}"; do
    run --separate-stderr flk-rebuild-dedup --config "$(cfg_of "$r")" --verify
    if [[ $status != 0 ]]; then
      printf "region %s: its store is not the rebuild (exit %s):\n%s\n%s\n" "$r" "$status" "$(head -20 <<<"$output")" "$stderr" >&2
      return 1
    fi
    DIGEST=$(jq -r .digest <<<"${lines[-1]}")
    [[ $DIGEST =~ ^[0-9a-f]{64}$ ]] || { echo "no digest: ${lines[-1]}" >&2; return 1; }
    if [[ -z $first ]]; then
      first=$DIGEST
    elif [[ $DIGEST != "$first" ]]; then
      echo "region $r reports digest $DIGEST, ${REGIONS[0]} reports $first" >&2
      return 1
    fi
  done
}

# winners_of R: the number of pcs_ids in R's store (the --verify summary's winners).
winners_of() {
  flk-rebuild-dedup --config "$(cfg_of "$1")" --verify 2>/dev/null | tail -n 1 | jq -r .winners
}

# assert_read_all_of R SOURCE…: R's last read applied exactly the sealed segments of each
# SOURCE's WAL from FROM_<n>+1 on (FROM set by the caller as "SOURCE:N" words, default 0).
assert_read_from() {
  local r=$1 s from last
  shift
  for s in "$@"; do
    from=${s#*:} s=${s%%:*}
    last=$(sealed_of "$s")
    assert_equal "$(seqs "$s" "$(read_out "$r")")" "$( ((last > from)) && seq $((from + 1)) "$last")" \
      "segments of $s applied in $r" || return 1
  done
}

