#!/usr/bin/env bash
# The Python module installs with pip offline from the source tree, with Debian's python3 tools
# only: a venv (--system-site-packages: Debian's setuptools and wheel) and
#   pip install --no-build-isolation --no-index python/
# taking the extension from the build tree (PITLANE_BUILD_DIR). Then, from another directory,
# the venv's interpreter imports it from the venv and its events reach a host.
# Usage: pip_install.sh PITLANE BUILD_DIR SOURCE_DIR
set -uo pipefail
pitlane="$1" build="$(cd "$2" && pwd)" source="$(cd "$3" && pwd)"
tmp="$(mktemp -d /tmp/pitlane-pip-XXXXXX)"
ns="ctest-pip-$$"
host=""
cleanup() {
  [[ -n "$host" ]] && kill -TERM "$host" 2>/dev/null && wait "$host" 2>/dev/null
  "$pitlane" cleanup --ns "$ns" >/dev/null 2>&1
  rm -rf "$tmp"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; exit 1; }

# pip builds in the source directory (build/, *.egg-info): a copy keeps the tree clean.
mkdir -p "$tmp/src"
cp -r "$source/python" "$tmp/src/python"
cp "$source/CMakeLists.txt" "$tmp/src/"
/usr/bin/python3 -m venv --system-site-packages "$tmp/venv" || fail "python3 -m venv (python3-venv)"
PITLANE_BUILD_DIR="$build" "$tmp/venv/bin/pip" install --no-build-isolation --no-index \
  "$tmp/src/python" >"$tmp/pip.log" 2>&1 || { cat "$tmp/pip.log"; fail "pip install"; }
echo "ok: pip install --no-build-isolation --no-index python/"

"$pitlane" host --ns "$ns" --jsonl --no-admin >"$tmp/host.out" 2>"$tmp/host.err" &
host=$!
for _ in $(seq 100); do grep -q "Ctrl-C stops" "$tmp/host.err" && break; sleep 0.05; done
cd / || fail "cd /"
env -u PYTHONPATH PITLANE_NAMESPACE="$ns" "$tmp/venv/bin/python" - "$tmp/venv" <<'PY' || fail "the installed module"
import sys
import pitlane
from pitlane import telemetry
assert pitlane.__file__.startswith(sys.argv[1]), f"imported from {pitlane.__file__}"
assert pitlane.__version__[0].isdigit(), pitlane.__version__
from pitlane.snakepit import telemetry as snakepit_telemetry  # the subpackages are installed too
assert snakepit_telemetry.__file__.startswith(sys.argv[1]), snakepit_telemetry.__file__
telemetry.start(worker_id="pip-worker", attach_wait=2.0)
assert telemetry.emit("python.memory.sampled", {"rss_bytes": 1234}) == "ok"
telemetry.shutdown()
print(f"ok: pitlane {pitlane.__version__} imported from the venv ({pitlane.__file__}), emitted")
PY
for _ in $(seq 100); do grep -q '"worker_id":"pip-worker"' "$tmp/host.out" && break; sleep 0.05; done
grep -q '"rss_bytes":1234' "$tmp/host.out" || fail "the host did not receive the event"
echo "ok: the event reached the host"
echo "all checks passed"
