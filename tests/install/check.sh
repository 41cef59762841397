#!/bin/sh
# Installs a pitlane build tree into a fresh prefix and builds tests/install/main.cc against it,
# once through find_package(pitlane CONFIG) and once through pkg-config, and runs them: with no
# host in their (unique) namespace each must report dropped_no_ring. host_main.cc checks that
# pitlane::host links too.
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

step "cmake --install $build --prefix $tmp/prefix"
cmake --install "$build" --prefix "$tmp/prefix" >"$tmp/install.log" || {
  cat "$tmp/install.log"
  exit 1
}
for f in include/pitlane/worker.h include/pitlane/host.h include/pitlane/fb/event_generated.h \
         bin/pitlane; do
  [ -e "$tmp/prefix/$f" ] || { echo "missing after install: $f"; exit 1; }
done
# lib/ or lib/<multiarch>/, depending on how the build was configured.
pc=$(find "$tmp/prefix" -name pitlane.pc | head -n 1)
config=$(find "$tmp/prefix" -name pitlaneConfig.cmake | head -n 1)
[ -n "$pc" ] || { echo "missing after install: pitlane.pc"; exit 1; }
[ -n "$config" ] && [ -e "$(dirname "$config")/pitlaneConfigVersion.cmake" ] ||
  { echo "missing after install: pitlaneConfig.cmake / pitlaneConfigVersion.cmake"; exit 1; }

# A sanitizer build's static libraries need the sanitizer runtime at link time too.
extra=${PITLANE_CHECK_CXXFLAGS:-}

# Each run gets its own namespace so no host (and no other test) is found.
export PITLANE_NAMESPACE="install-check-$$"

step "find_package(pitlane CONFIG): configure + build tests/install"
cmake -S "$here" -B "$tmp/build" -DCMAKE_PREFIX_PATH="$tmp/prefix" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_CXX_FLAGS="$extra" \
  >"$tmp/configure.log" 2>&1 || { cat "$tmp/configure.log"; exit 1; }
cmake --build "$tmp/build" >"$tmp/build.log" 2>&1 || { cat "$tmp/build.log"; exit 1; }
out=$("$tmp/build/app")
echo "app: $out"
case "$out" in *dropped_no_ring*) ;; *) echo "expected dropped_no_ring"; exit 1 ;; esac
out=$("$tmp/build/host_app")
echo "host_app: $out"

step "pkg-config: g++ -std=c++20 main.cc \$(pkg-config --cflags --libs pitlane)"
flags=$(PKG_CONFIG_PATH="$(dirname "$pc")" pkg-config --cflags --libs pitlane)
echo "pkg-config: $flags"
# shellcheck disable=SC2086  # the flag lists are meant to split
g++ -std=c++20 $extra -o "$tmp/app-pc" "$here/main.cc" $flags
out=$("$tmp/app-pc")
echo "app-pc: $out"
case "$out" in *dropped_no_ring*) ;; *) echo "expected dropped_no_ring"; exit 1 ;; esac

echo "install_consumer_builds: OK"
