#!/usr/bin/env bash
# pitlane's one entry point (README "Quick start"):
#   ./build.sh demo [pitlane demo flags...]   install missing packages, build, run the demo
#   ./build.sh test                           install missing packages, build, run every test
# Idempotent: packages already installed are not touched, the build is incremental.
set -euo pipefail

cd "$(dirname "$0")"

usage() {
  echo "usage: $0 demo [--workers N] [--duration SECONDS] [--rate N] [--ns NAME]" >&2
  echo "       $0 test" >&2
  exit 2
}

[[ $# -ge 1 ]] || usage
command="$1"
shift
case "$command" in
  demo) ;;
  test) [[ $# -eq 0 ]] || usage ;;
  *) usage ;;
esac

# ── (a) Debian packages ───────────────────────────────────────────────────────────────────────
packages=(
  build-essential cmake pkg-config libboost-dev libflatbuffers-dev flatbuffers-compiler
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler libbenchmark-dev
  libgtest-dev libgmock-dev libcli11-dev nlohmann-json3-dev
)
missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if [[ ${#missing[@]} -gt 0 ]]; then
  if [[ $(id -u) -eq 0 ]]; then
    echo "build.sh: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y --no-install-recommends "${missing[@]}"
  else
    echo "build.sh: missing Debian packages; install them with:" >&2
    echo "  sudo apt-get update && sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
    echo "(or run this script as root: sudo $0 $command)" >&2
    exit 1
  fi
fi

# ── (b) configure and build ───────────────────────────────────────────────────────────────────
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DPITLANE_BUILD_CLI=ON -DPITLANE_BUILD_TESTS=ON -DPITLANE_BUILD_BENCHMARKS=ON
cmake --build build -j"$(nproc)"

# ── (c) run ───────────────────────────────────────────────────────────────────────────────────
case "$command" in
  demo) exec ./build/cli/pitlane demo "$@" ;;
  # ctest's summary is the last thing printed; its exit code is ours.
  test) exec ctest --test-dir build --output-on-failure -j2 --timeout 600 ;;
esac
