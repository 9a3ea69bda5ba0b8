#!/bin/sh
# tests/fuzz/run.sh BUILD_DIR SECONDS — builds the libFuzzer target for the WAL segment
# reader (segment_reader_fuzz.cpp) into BUILD_DIR and fuzzes it for SECONDS seconds.
# Exits non-zero when the build fails or the fuzzer finds a crash, a leak, undefined
# behaviour or a broken invariant; the input is then left in BUILD_DIR/artifacts/.
#
# Built with clang++ -fsanitize=fuzzer,address,undefined from only the library sources
# the reader needs (lib/flk/util, lib/flk/core, lib/flk/wal/segment.cpp), archived so
# that the linker takes only what is used. Objects are rebuilt when any source or
# header under lib/flk, or this directory, is newer than them.
#
# The corpus lives in BUILD_DIR/corpus and grows from run to run; seeds (valid segments,
# record encodings and JSON lines) are written by the target itself into BUILD_DIR/seeds,
# plus segments written by the real `flk-wal append` when $FLK_BIN/flk-wal exists.
#
# Environment: CXX (default clang++), FLK_BIN, FLK_FUZZ_ARGS (extra libFuzzer flags,
# e.g. "-jobs=2 -workers=2").
set -eu

if [ $# -ne 2 ]; then
  echo "usage: tests/fuzz/run.sh BUILD_DIR SECONDS" >&2
  exit 2
fi
out=$1
seconds=$2
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
cxx=${CXX:-clang++}
case $cxx in *clang*) ;; *) cxx=clang++ ;; esac  # libFuzzer needs clang whatever CXX is
if ! command -v "$cxx" >/dev/null 2>&1; then
  echo "tests/fuzz/run.sh: error: '$cxx' not found: libFuzzer needs clang (scripts/install-deps.sh)" >&2
  exit 1
fi

mkdir -p "$out/obj" "$out/corpus" "$out/seeds" "$out/artifacts"

flags="-std=c++20 -g -O1 -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all"
flags="$flags -D_FILE_OFFSET_BITS=64 -I$src/lib"
libs="-lfmt -lcrypto -lxxhash"
if pkg-config --exists simdjson 2>/dev/null; then libs="$libs $(pkg-config --libs simdjson)"; fi

sources="$src/lib/flk/util/*.cpp $src/lib/flk/core/*.cpp $src/lib/flk/wal/segment.cpp"
target=$out/segment_reader_fuzz

# Rebuild everything when anything the target depends on changed (the set is small).
stale=no
if [ ! -x "$target" ]; then
  stale=yes
elif [ -n "$(find "$src/lib/flk" "$here" -newer "$target" \( -name '*.cpp' -o -name '*.hpp' -o -name run.sh \) | head -n 1)" ]; then
  stale=yes
fi

if [ "$stale" = yes ]; then
  echo "fuzz: building $target" >&2
  rm -f "$out"/obj/*.o "$out/libflkfuzz.a"
  # Two compilers at a time: the machine may be small. Library sources get coverage
  # instrumentation without libFuzzer's main (fuzzer-no-link).
  pids=""
  n=0
  # shellcheck disable=SC2086  # $sources and $flags are meant to split
  for f in $sources; do
    o=$out/obj/$(echo "${f#"$src"/lib/}" | tr / _).o
    # shellcheck disable=SC2086
    $cxx $flags -fsanitize=fuzzer-no-link -c "$f" -o "$o" &
    pids="$pids $!"
    n=$((n + 1))
    if [ $((n % 2)) -eq 0 ]; then
      for p in $pids; do wait "$p"; done
      pids=""
    fi
  done
  for p in $pids; do wait "$p"; done
  ar rcs "$out/libflkfuzz.a" "$out"/obj/*.o
  # shellcheck disable=SC2086
  $cxx $flags -fsanitize=fuzzer "$here/segment_reader_fuzz.cpp" "$out/libflkfuzz.a" \
    -Wl,--as-needed $libs -o "$target.tmp"
  mv "$target.tmp" "$target"
fi

# Seeds: the target writes its own; add segments from the real writer when it is built.
FLK_FUZZ_WRITE_SEEDS=$out/seeds "$target"
if [ -n "${FLK_BIN:-}" ] && [ -x "$FLK_BIN/flk-wal" ]; then
  wal=$out/seed-wal
  rm -rf "$wal"
  {
    echo '{"pcs_id":"p-1","tenant_id":"t-1","outcome":"accepted","ts":"2024-05-01T00:00:00Z"}'
    echo '{"pcs_id":"p-2","tenant_id":"t-2","outcome":"escalated","ts":"2024-05-01T00:00:01.5Z","params":"x=1"}'
    echo '{"pcs_id":"p-3","tenant_id":"t-3","outcome":"rejected","ts":"2024-05-01T00:00:02Z","payload":{"a":[1,"b"]}}'
  } | "$FLK_BIN/flk-wal" append --wal-dir "$wal" --region us-east-1 --segment-bytes 512 --keep-open >/dev/null
  for f in "$wal"/*.wal "$wal"/*.open; do
    [ -e "$f" ] && cp "$f" "$out/seeds/flk-wal-$(basename "$f")"
  done
  rm -rf "$wal"
fi

echo "fuzz: running $target for $seconds s (corpus $out/corpus)" >&2
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
# shellcheck disable=SC2086  # FLK_FUZZ_ARGS is a list of flags
exec "$target" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=16384 \
  -use_value_profile=1 -dict="$here/segment_reader.dict" -print_final_stats=1 \
  -artifact_prefix="$out/artifacts/" ${FLK_FUZZ_ARGS:-} "$out/corpus" "$out/seeds"
