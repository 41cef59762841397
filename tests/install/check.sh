#!/bin/sh
# Installs a pitlane build tree into a fresh prefix and builds outside consumers against it:
#   - CMake, COMPONENTS worker, with gRPC and Protobuf made unfindable: a shared-memory worker
#     needs neither (tests/install/main.cc; with no host it must report buffered: kept for one);
#   - CMake, COMPONENTS grpc: the same worker with the gRPC transport (PITLANE_TRANSPORT=grpc);
#   - CMake, COMPONENTS host prometheus otlp: a host, a host serving /metrics and the admin
#     service, and a host with the OpenTelemetry exporter (host_main.cc, prometheus_main.cc,
#     otlp_main.cc);
#   - CMake, an unknown component: configuring fails naming it;
#   - pkg-config pitlane (= pitlane-worker), pitlane-grpc, pitlane-host, pitlane-prometheus and
#     pitlane-otlp: the same programs with `g++ $(pkg-config --cflags --libs ...)`, linked and run;
#   - every header the README documents is installed, and every document an installed header
#     cites;
#   - the systemd unit runs <prefix>/bin/pitlane.
#
# usage: check.sh <build dir> [<temp parent dir>]
#   The install prefix is a unique directory made with mktemp -d under <temp parent dir>
#   (default: $TMPDIR or /tmp) and removed on exit. Nothing here touches the network.
set -eu

build=${1:?usage: check.sh <build dir> [<temp parent dir>]}
parent=${2:-${TMPDIR:-/tmp}}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$parent"
tmp=$(mktemp -d "$parent/pitlane-install.XXXXXX")
trap 'rm -rf "$tmp"' EXIT INT TERM

step() { echo "== $*"; }
run_logged() {  # run_logged LOG command...: runs it, prints LOG if it fails
  log=$1
  shift
  "$@" >"$log" 2>&1 || { cat "$log"; echo "failed: $*"; exit 1; }
}

step "cmake --install $build --prefix $tmp/prefix"
run_logged "$tmp/install.log" cmake --install "$build" --prefix "$tmp/prefix"
for f in include/pitlane/worker.h include/pitlane/span.h include/pitlane/correlation.h \
         include/pitlane/host.h include/pitlane/admin.h include/pitlane/prometheus.h \
         include/pitlane/jsonl_exporter.h include/pitlane/statsd_exporter.h \
         include/pitlane/exporter.h include/pitlane/units.h include/pitlane/fb/event_generated.h \
         include/pitlane/otlp_exporter.h include/pitlane/trace_context.h \
         include/pitlane/accounting.h include/pitlane/catalog.h include/pitlane/defaults.h \
         include/pitlane/limits.h include/pitlane/shm_layout.h \
         bin/pitlane share/doc/pitlane/README.md; do
  [ -e "$tmp/prefix/$f" ] || { echo "missing after install: $f"; exit 1; }
done
# The systemd unit runs the command of this prefix, not of the one the build was configured with.
unit="$tmp/prefix/lib/systemd/system/pitlane-host@.service"
execstart=$(sed -n 's/^ExecStart=\([^ ]*\) .*/\1/p' "$unit")
[ "$execstart" = "$tmp/prefix/bin/pitlane" ] ||
  { echo "$unit runs '$execstart', not $tmp/prefix/bin/pitlane"; exit 1; }
# The documents the installed headers cite (README.md, doc/<name>.md) lie in share/doc/pitlane.
for doc in $(grep -ohE '(README|doc/[a-z_-]+)\.md' "$tmp/prefix/include/pitlane"/*.h | sort -u); do
  [ -e "$tmp/prefix/share/doc/pitlane/${doc#doc/}" ] ||
    { echo "an installed header cites $doc, which is not installed"; exit 1; }
done
# lib/ or lib/<multiarch>/, depending on how the build was configured.
config=$(find "$tmp/prefix" -name pitlaneConfig.cmake | head -n 1)
[ -n "$config" ] && [ -e "$(dirname "$config")/pitlaneConfigVersion.cmake" ] ||
  { echo "missing after install: pitlaneConfig.cmake / pitlaneConfigVersion.cmake"; exit 1; }
pcdir=$(dirname "$(find "$tmp/prefix" -name pitlane.pc | head -n 1)")
for pc in pitlane pitlane-worker pitlane-proto pitlane-grpc pitlane-host pitlane-prometheus \
          pitlane-otlp; do
  [ -e "$pcdir/$pc.pc" ] || { echo "missing after install: $pc.pc"; exit 1; }
done

# A sanitizer build's static libraries need the sanitizer runtime at link time too.
extra=${PITLANE_CHECK_CXXFLAGS:-}

# Each run gets its own namespace so no host (and no other test) is found.
export PITLANE_NAMESPACE="install-check-$$"

expect_in() {  # expect_in TEXT WHAT
  case "$1" in *"$2"*) ;; *) echo "expected \"$2\" in: $1"; exit 1 ;; esac
}

# build_consumer NAME CMAKE_ARGS...: tests/install configured in $tmp/NAME against the prefix, built.
build_consumer() {
  name=$1
  shift
  run_logged "$tmp/configure-$name.log" cmake -S "$here" -B "$tmp/$name" \
    -DCMAKE_PREFIX_PATH="$tmp/prefix" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_FLAGS="$extra" "$@"
  run_logged "$tmp/build-$name.log" cmake --build "$tmp/$name"
}
# run_consumer "ENV..." PROGRAM TEXT...: runs PROGRAM with the assignments ENV, prints what it
# says, requires each TEXT in it.
run_consumer() {
  vars=$1 prog=$2
  shift 2
  # shellcheck disable=SC2086  # the assignments are meant to split
  out=$(env $vars "$prog")
  echo "$(basename "$prog"): $out"
  for want in "$@"; do expect_in "$out" "$want"; done
}
# The gRPC transport, towards an address where no host listens: the event waits in its queue.
grpc_env="PITLANE_TRANSPORT=grpc PITLANE_GRPC_TARGET=127.0.0.1:1"

step "find_package(pitlane COMPONENTS worker), gRPC and Protobuf unfindable"
build_consumer worker -DCMAKE_DISABLE_FIND_PACKAGE_gRPC=ON -DCMAKE_DISABLE_FIND_PACKAGE_Protobuf=ON
run_consumer "" "$tmp/worker/app" "emit: buffered"

step "find_package(pitlane COMPONENTS grpc)"
build_consumer grpc -DCONSUMER=grpc
run_consumer "$grpc_env" "$tmp/grpc/grpc_app" "transport: grpc, emit: ok"

step "find_package(pitlane COMPONENTS host prometheus otlp)"
build_consumer host -DCONSUMER=host
run_consumer "" "$tmp/host/host_app" "host: started"
run_consumer "" "$tmp/host/prometheus_app" "build info served"
run_consumer "" "$tmp/host/otlp_app" "otlp exporter to http/protobuf http://127.0.0.1:4318" \
  'bogus protocol: INVALID_ARGUMENT'

step "find_package(pitlane COMPONENTS nonesuch) fails naming the component"
mkdir -p "$tmp/unknown"
printf 'cmake_minimum_required(VERSION 3.20)\nproject(u LANGUAGES CXX)\nfind_package(pitlane CONFIG REQUIRED COMPONENTS nonesuch)\n' \
  >"$tmp/unknown/CMakeLists.txt"
if cmake -S "$tmp/unknown" -B "$tmp/unknown/build" -DCMAKE_PREFIX_PATH="$tmp/prefix" \
    >"$tmp/unknown.log" 2>&1; then
  echo "an unknown component configured"; exit 1
fi
expect_in "$(cat "$tmp/unknown.log")" 'unknown pitlane component "nonesuch"'

export PKG_CONFIG_PATH="$pcdir"
for case in "pitlane main.cc app-pc emit:+buffered" \
            "pitlane-worker main.cc app-worker-pc emit:+buffered" \
            "pitlane-grpc main.cc grpc-pc transport:+grpc,+emit:+ok grpc" \
            "pitlane-host host_main.cc host-pc host:+started" \
            "pitlane-prometheus prometheus_main.cc prometheus-pc build+info+served" \
            "pitlane-otlp otlp_main.cc otlp-pc otlp+exporter+to+http/protobuf"; do
  # shellcheck disable=SC2086  # the fields are meant to split
  set -- $case
  step "pkg-config: g++ -std=c++20 $2 \$(pkg-config --cflags --libs $1)"
  flags=$(pkg-config --cflags --libs "$1")
  # shellcheck disable=SC2086  # the flag lists are meant to split
  run_logged "$tmp/$3.log" g++ -std=c++20 $extra -o "$tmp/$3" "$here/$2" $flags
  vars=""
  [ "${5:-}" = grpc ] && vars=$grpc_env
  run_consumer "$vars" "$tmp/$3" "$(echo "$4" | tr + ' ')"
done

echo "install_consumer_builds: OK"
