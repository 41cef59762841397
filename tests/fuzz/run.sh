#!/usr/bin/env bash
# Builds and runs the RingReader libFuzzer target (tests/fuzz/ring_reader_fuzz.cc) under
# ASan + UBSan. Exits non-zero on any crash, hang (per-input timeout), leak or sanitizer report.
#
#   tests/fuzz/run.sh                 20-second run (what ctest's fuzz_ring_reader_short does)
#   tests/fuzz/run.sh 3600            one hour
#   tests/fuzz/run.sh 600 --corpus DIR   keep and grow a corpus in DIR
#
# Options: --build-dir DIR  a configured CMake build dir that holds generated/ (default: build,
#          else any build*/ with generated/); --out DIR  where the binary goes (default
#          <build-dir>/fuzz). Needs clang++ with libFuzzer (Debian: clang libclang-rt-14-dev).
set -euo pipefail

root="$(cd "$(dirname "$0")/../.." && pwd)"
seconds=20
corpus=""
build_dir=""
out=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --corpus) corpus="$2"; shift 2 ;;
    --build-dir) build_dir="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    [0-9]*) seconds="$1"; shift ;;
    *) echo "usage: $0 [SECONDS=20] [--corpus DIR] [--build-dir DIR] [--out DIR]" >&2; exit 2 ;;
  esac
done

if [[ -z "$build_dir" ]]; then
  for d in "$root/build" "$root"/build*; do
    if [[ -f "$d/generated/catalog_data.cc" && -f "$d/generated/pitlane/fb/event_generated.h" ]]; then
      build_dir="$d"
      break
    fi
  done
fi
gen="$build_dir/generated"
if [[ -z "$build_dir" || ! -f "$gen/catalog_data.cc" || ! -f "$gen/pitlane/fb/event_generated.h" ]]; then
  echo "run.sh: no build dir with generated/catalog_data.cc and event_generated.h" \
       "(configure and build first, e.g. ./build.sh test, or pass --build-dir)" >&2
  exit 2
fi
out="${out:-$build_dir/fuzz}"
mkdir -p "$out"
bin="$out/ring_reader_fuzz"
CXX="${CLANGXX:-clang++}"

sources=(
  "$root/tests/fuzz/ring_reader_fuzz.cc"
  "$root"/schemas/src/*.cc "$gen/catalog_data.cc"
  "$root"/shm/src/*.cc
  "$root/host/src/fold.cc"
)
# Rebuild only when a source or header is newer than the binary.
if [[ ! -x "$bin" ]] || [[ -n "$(find "$root/tests/fuzz" "$root/schemas" "$root/shm" "$root/host" \
    "$gen" -newer "$bin" \( -name '*.cc' -o -name '*.h' \) -print -quit)" ]]; then
  echo "run.sh: building $bin"
  "$CXX" -std=c++20 -O1 -g -fno-omit-frame-pointer -fsanitize=fuzzer,address,undefined \
    -fno-sanitize-recover=undefined -Wall -Wextra -Wno-missing-field-initializers \
    -I"$root/schemas/include" -I"$root/shm/include" -I"$root/host/include" -I"$gen" \
    "${sources[@]}" -o "$bin.tmp" -lflatbuffers -lpthread -lrt
  mv "$bin.tmp" "$bin"
fi

args=(-max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1)
if [[ -n "$corpus" ]]; then
  mkdir -p "$corpus"
  args+=("$corpus")
fi
# Crash reproducers go to $out (crash-<sha1>), not to the working directory.
echo "run.sh: fuzzing for ${seconds}s"
exec "$bin" "${args[@]}" -artifact_prefix="$out/"
