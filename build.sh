#!/usr/bin/env bash
# pitlane's one entry point (README "Quick start"):
#   ./build.sh demo [pitlane demo flags...]   install missing packages, build, run the demo
#   ./build.sh test                           install missing packages, build, run every test
#                                             (ASan/UBSan suite in build-asan first, then the
#                                             main suite with the short fuzz run; README "Testing")
#   ./build.sh --help                         the usage below
# Idempotent: packages already installed are not touched, the build is incremental.
set -euo pipefail

cd "$(dirname "$0")"

# Every flag of `pitlane demo` (its --help; tests/ops/completion.sh checks the two agree), all
# passed on to it.
usage() {
  echo "usage: $0 demo [--workers N=4] [--remote N=0] [--duration SECONDS=8]"
  echo "                  [--rate EVENTS_PER_SEC_PER_WORKER=20000] [--ns NAME] [--metrics ADDR]"
  echo "         install what is missing, build, run \`pitlane demo\` with these flags (its --help)"
  echo "       $0 test"
  echo "         install what is missing, build, run every test"
}

[[ $# -ge 1 ]] || { usage >&2; exit 2; }
command="$1"
shift
case "$command" in
  -h | --help) usage; exit 0 ;;
  demo) ;;
  test) [[ $# -eq 0 ]] || { usage >&2; exit 2; } ;;
  *) usage >&2; exit 2 ;;
esac

# ── (a) Debian packages ───────────────────────────────────────────────────────────────────────
# `demo` installs what building the libraries and the `pitlane` command needs; `test` adds what
# the tests drive: googletest/benchmark, clang for the fuzz run, Prometheus and promtool, the
# Python module and its interop peers, matplotlib (bench/render.py), help2man and man/groff
# (man pages), systemd-analyze and dpkg-dev (the Debian package test), python3-venv,
# python3-setuptools and python3-wheel (the offline pip install test), nodejs (the OTLP tests'
# collector, tests/otlp), openssl (the certificate of the OTLP https tests' collector),
# liblttng-ust-dev and lttng-tools (the benchmarks' LTTng-UST comparison, which
# bench_script_smoke runs).
packages=(
  build-essential cmake pkg-config libboost-dev libflatbuffers-dev flatbuffers-compiler
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libcli11-dev nlohmann-json3-dev zlib1g-dev libssl-dev
)
if [[ $command == test ]]; then
  packages+=(
    libbenchmark-dev libgtest-dev libgmock-dev clang libclang-rt-14-dev prometheus
    python3-dev pybind11-dev python3-grpcio python3-protobuf python3-matplotlib iproute2
    help2man man-db groff-base systemd dpkg-dev python3-venv python3-setuptools python3-wheel
    nodejs openssl liblttng-ust-dev lttng-tools
  )
fi
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
# The demo needs only the libraries and the command; the tests and benchmarks are built for
# `test` (a later `test` reconfigures the same build directory and builds the rest).
with_tests=OFF
[[ $command == test ]] && with_tests=ON
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPITLANE_BUILD_CLI=ON \
  -DPITLANE_BUILD_TESTS=$with_tests -DPITLANE_BUILD_BENCHMARKS=$with_tests
if [[ $command == demo ]]; then
  cmake --build build -j"$(nproc)" --target pitlane
else
  cmake --build build -j"$(nproc)"
fi

# ── (c) run ───────────────────────────────────────────────────────────────────────────────────
case "$command" in
  demo) exec ./build/cli/pitlane demo "$@" ;;
  test)
    # The OTLP tests' collector (tests/otlp/receiver.js) decodes with the official OpenTelemetry
    # JS packages, pinned by tests/otlp/package-lock.json (Debian's nodejs may come without npm).
    if ! command -v npm >/dev/null; then
      apt-get install -y --no-install-recommends npm
    fi
    npm ci --prefix tests/otlp --no-audit --no-fund
    # The StatsD test's server: Etsy's StatsD daemon, pinned by tests/statsd/package-lock.json
    # (its optional dependencies are syslog and proxy extras the test does not use).
    npm ci --prefix tests/statsd --omit=optional --no-audit --no-fund
    # First the shm, worker and host tests again under AddressSanitizer + UndefinedBehavior-
    # Sanitizer, in a second build dir (Debug: ~2x faster to build than -O2 with sanitizers,
    # and the suite is not CPU-bound). Not there: the CLI and benchmark tests (not built), the
    # fuzz run (it has its own ASan/UBSan build), install_consumer_builds (packaging; it needs
    # the CLI).
    cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DPITLANE_SANITIZE=address,undefined \
      -DPITLANE_BUILD_CLI=OFF -DPITLANE_BUILD_TESTS=ON -DPITLANE_BUILD_BENCHMARKS=OFF
    cmake --build build-asan -j"$(nproc)"
    echo "build.sh: running the ASan/UBSan suite (build-asan)"
    if ! ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
        ctest --test-dir build-asan --output-on-failure -j2 --timeout 600 \
          -E '^install_consumer_builds$'; then
      echo "build.sh: the ASan/UBSan suite failed (build-asan); see above" >&2
      exit 1
    fi
    # Then the main suite: ctest's summary is the last thing printed; its exit code is ours.
    exec ctest --test-dir build --output-on-failure -j2 --timeout 900
    ;;
esac
