#!/usr/bin/env bash
# The Python module installs with pip offline from the source tree, with Debian's python3 tools
# only: a venv (--system-site-packages: Debian's setuptools and wheel) and README "Installing and
# linking"'s command, as written, from the root of a copy of the tree whose build/ is BUILD_DIR:
#   PITLANE_BUILD_DIR=$PWD/build ~/venv/bin/pip install --no-build-isolation --no-index ./python
# taking the extension from the build tree. A relative PITLANE_BUILD_DIR (pip runs the build in
# python/, so `build` would mean python/build) and a build dir without the extension fail with
# an error naming the directory. What pip leaves in python/ is ignored by the tree's .gitignore.
# Then, from another directory, the venv's interpreter imports the module from the venv and its
# events reach a host.
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

# pip builds in the source directory (python/build/, python/pitlane.egg-info/): a copy keeps the
# tree clean; its build/ is the build tree, as in a checkout built by build.sh.
mkdir -p "$tmp/src"
cp -r "$source/python" "$tmp/src/python"
rm -rf "$tmp/src/python/build" "$tmp/src/python/"*.egg-info  # an earlier pip run's, if any
cp "$source/CMakeLists.txt" "$tmp/src/"
ln -s "$build" "$tmp/src/build"
before=$(cd "$tmp/src/python" && ls -A)
/usr/bin/python3 -m venv --system-site-packages "$tmp/venv" || fail "python3 -m venv (python3-venv)"
pip=("$tmp/venv/bin/pip" install --no-build-isolation --no-index ./python)
cd "$tmp/src" || fail "cd $tmp/src"  # the root of the (copied) tree

# A relative PITLANE_BUILD_DIR is refused, saying where pip would have looked and what to give.
if PITLANE_BUILD_DIR=build "${pip[@]}" >"$tmp/pip-relative.log" 2>&1; then
  fail "PITLANE_BUILD_DIR=build (relative) installed"
fi
for want in "PITLANE_BUILD_DIR=build is relative" "$tmp/src/python/build" "absolute" \
            'PITLANE_BUILD_DIR=$PWD/build'; do
  grep -qF -- "$want" "$tmp/pip-relative.log" ||
    { cat "$tmp/pip-relative.log"; fail "PITLANE_BUILD_DIR=build: no \"$want\" in pip's output"; }
done
echo "ok: PITLANE_BUILD_DIR=build (relative) fails saying it must be absolute"
# A build dir without the extension: the error names the directory it looked in.
if PITLANE_BUILD_DIR="$tmp/nobuild" "${pip[@]}" >"$tmp/pip-missing.log" 2>&1; then
  fail "PITLANE_BUILD_DIR=$tmp/nobuild installed"
fi
grep -qF "no pitlane/_native*.so in $tmp/nobuild/python/pitlane" "$tmp/pip-missing.log" ||
  { cat "$tmp/pip-missing.log"; fail "PITLANE_BUILD_DIR=$tmp/nobuild: the error does not name the directory"; }
echo "ok: a build dir without the extension fails naming $tmp/nobuild/python/pitlane"

# The README's command.
PITLANE_BUILD_DIR=$PWD/build "${pip[@]}" >"$tmp/pip.log" 2>&1 || { cat "$tmp/pip.log"; fail "pip install"; }
echo "ok: PITLANE_BUILD_DIR=\$PWD/build pip install --no-build-isolation --no-index ./python"

# What pip left in python/ stays out of `git status` in a checkout.
if git -C "$source" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  left=$(comm -13 <(sort <<<"$before") <(cd "$tmp/src/python" && ls -A | sort))
  [[ -n "$left" ]] || fail "pip left nothing in python/ (the check would prove nothing)"
  for entry in $left; do
    [[ -d "$tmp/src/python/$entry" ]] && entry="$entry/"
    git -C "$source" check-ignore -q --no-index "python/$entry" ||
      fail "pip leaves python/$entry, which .gitignore does not ignore"
  done
  echo "ok: .gitignore ignores what pip leaves in python/: "$left
else
  echo "skipped: .gitignore check ($source is not a git work tree)"
fi

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
