#!/usr/bin/env bash
# The Debian package `pitlane` (cpack -G DEB; cmake/pitlaneCPack.cmake) of a build tree:
#   - its contents (dpkg-deb -c): the command, man pages, completion, the systemd template unit,
#     dashboard, alert rules, environment file template, the Python module; its Depends;
#   - extracted into a temporary root: the command runs, the Python module imports from any
#     directory, and `systemd-analyze verify` accepts the unit (its ExecStart pointed into the
#     root; any diagnostic fails the test), and the unit runs the packaged command;
#   - `cmake --install --prefix P`: the unit runs P/bin/pitlane and verifies as installed; with
#     DESTDIR, and in a package made for another prefix, it names the prefix it runs from;
#   - when run as root and no `pitlane` package is installed already: `dpkg -i`, the installed
#     unit verified, the command and module used from their installed places, then `dpkg -r`
#     (also on failure).
# The libpitlane-dev package's contents are what install_consumer_builds builds against.
# Usage: debian_package.sh BUILD_DIR
set -uo pipefail
build="$(cd "$1" && pwd)"
tmp="$(mktemp -d /tmp/pitlane-deb-XXXXXX)"
installed=""
cleanup() {
  if [[ -n "$installed" ]]; then dpkg -r pitlane >/dev/null 2>&1; fi
  rm -rf "$tmp"
}
trap cleanup EXIT
fails=0
ok() { echo "ok: $*"; }
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }

prefix=$(sed -n 's/^set(CPACK_PACKAGING_INSTALL_PREFIX "\(.*\)")$/\1/p' "$build/CPackConfig.cmake")
[[ -n "$prefix" ]] || { echo "FAIL: no CPACK_PACKAGING_INSTALL_PREFIX in $build/CPackConfig.cmake"; exit 1; }
if ! (cd "$build" && cpack -G DEB -B "$tmp/out" -D CPACK_COMPONENTS_ALL="cli;service;python") \
    >"$tmp/cpack.log" 2>&1; then
  cat "$tmp/cpack.log"; echo "FAIL: cpack"; exit 1
fi
deb=$(ls "$tmp"/out/pitlane_*.deb 2>/dev/null | head -n 1)
[[ -n "$deb" ]] && ok "cpack -G DEB made $(basename "$deb")" || { echo "FAIL: no .deb"; exit 1; }

contents=$(dpkg-deb -c "$deb" | awk '{print $6}')
for f in bin/pitlane share/man/man1/pitlane.1 share/man/man1/pitlane-host.1 \
         share/bash-completion/completions/pitlane "lib/systemd/system/pitlane-host@.service" \
         share/pitlane/pitlane.json share/pitlane/pitlane-alerts.yml \
         share/pitlane/pitlane-host.env; do
  grep -qxF ".$prefix/$f" <<<"$contents" && ok "the package has $prefix/$f" || fail "missing $prefix/$f"
done
# The module's directory: lib/python3.X/dist-packages (/usr/local) or lib/python3/dist-packages.
pydir=$(grep -E "^\.$prefix/lib/python3[^/]*/dist-packages/pitlane/__init__\.py$" <<<"$contents" |
        sed -e 's|^\.||' -e 's|/pitlane/__init__\.py$||')
[[ -n "$pydir" ]] && ok "the package has the Python module in $pydir" || fail "no pitlane/__init__.py"
grep -qE "^\.$pydir/pitlane/_native\..*\.so$" <<<"$contents" && grep -qxF ".$pydir/pitlane/telemetry.py" <<<"$contents" &&
  ok "the package has the native module and telemetry.py" || fail "missing module files"
depends=$(dpkg-deb -f "$deb" Depends)
grep -q "libgrpc++" <<<"$depends" && grep -q python3 <<<"$depends" &&
  ok "Depends: $depends" || fail "Depends: $depends"

root="$tmp/root"
dpkg-deb -x "$deb" "$root"
"$root$prefix/bin/pitlane" --version | grep -q "^pitlane " && ok "the extracted command runs" ||
  fail "extracted pitlane --version"
(cd / && PYTHONPATH="$root$pydir" /usr/bin/python3 -c \
  'import pitlane.telemetry, sys; assert pitlane.telemetry.new_correlation_id().startswith("pl-")') &&
  ok "the extracted Python module imports from /" || fail "extracted Python module"

verify() {  # verify UNIT_FILE [MAN_DIR]: systemd-analyze verify prints nothing for a clean unit
  local out
  out=$(MANPATH="${2:-$root$prefix/share/man}:$prefix/share/man" systemd-analyze verify "$1" 2>&1)
  if [[ -z "$out" ]]; then ok "systemd-analyze verify accepts $1"; else
    fail "systemd-analyze verify $1:"$'\n'"$out"
  fi
}
execstart() { sed -n 's/^ExecStart=\([^ ]*\) .*/\1/p' "$1"; }  # the unit's command
expect_execstart() {  # expect_execstart UNIT_FILE COMMAND
  local got
  got=$(execstart "$1")
  [[ "$got" == "$2" ]] && ok "$1 runs $2" || fail "$1 runs '$got', not $2"
}
# The packaged unit runs the command where the package puts it (/usr/bin/pitlane for a build
# configured with CMAKE_INSTALL_PREFIX=/usr).
expect_execstart "$root$prefix/lib/systemd/system/pitlane-host@.service" "$prefix/bin/pitlane"
mkdir -p "$tmp/units"
sed "s|$prefix/bin/pitlane|$root$prefix/bin/pitlane|" "$root$prefix/lib/systemd/system/pitlane-host@.service" \
  >"$tmp/units/pitlane-host@.service"
verify "$tmp/units/pitlane-host@.service"
cp "$tmp/units/pitlane-host@.service" "$tmp/units/pitlane-host@demo.service"
verify "$tmp/units/pitlane-host@demo.service"
# The check must be able to fail: a unit with an unknown key is reported.
printf '[Service]\nExecStart=/bin/true\nNoSuchKey=1\n' >"$tmp/units/broken.service"
[[ -n "$(systemd-analyze verify "$tmp/units/broken.service" 2>&1)" ]] &&
  ok "systemd-analyze verify reports a broken unit" || fail "verify does not report problems"

# The unit is written for the prefix an install actually uses, not the one the build was
# configured with: `cmake --install --prefix P` (README "Installing and linking") runs P/bin/pitlane
# and verifies as it is; with DESTDIR it names the prefix, not the staging directory; a package
# made for another prefix names that one.
other="$tmp/prefix"
if cmake --install "$build" --prefix "$other" --component cli >"$tmp/install.log" 2>&1 &&
   cmake --install "$build" --prefix "$other" --component service >>"$tmp/install.log" 2>&1; then
  expect_execstart "$other/lib/systemd/system/pitlane-host@.service" "$other/bin/pitlane"
  grep -qF "$other/share/pitlane/pitlane-host.env" "$other/lib/systemd/system/pitlane-host@.service" &&
    ok "the unit names the env file template under $other" || fail "the unit's env file template"
  verify "$other/lib/systemd/system/pitlane-host@.service" "$other/share/man"
else
  fail "cmake --install --prefix $other: $(cat "$tmp/install.log")"
fi
if DESTDIR="$tmp/stage" cmake --install "$build" --prefix /opt/pitlane --component service \
    >"$tmp/destdir.log" 2>&1; then
  expect_execstart "$tmp/stage/opt/pitlane/lib/systemd/system/pitlane-host@.service" \
    /opt/pitlane/bin/pitlane
else
  fail "DESTDIR=... cmake --install --prefix /opt/pitlane: $(cat "$tmp/destdir.log")"
fi
if (cd "$build" && cpack -G DEB -B "$tmp/out-usr" -D CPACK_COMPONENTS_ALL=service \
      -D CPACK_PACKAGING_INSTALL_PREFIX=/usr) >"$tmp/cpack-usr.log" 2>&1; then
  mkdir -p "$tmp/root-usr"
  dpkg-deb -x "$(ls "$tmp"/out-usr/pitlane_*.deb | head -n 1)" "$tmp/root-usr"
  expect_execstart "$tmp/root-usr/usr/lib/systemd/system/pitlane-host@.service" /usr/bin/pitlane
else
  fail "cpack with CPACK_PACKAGING_INSTALL_PREFIX=/usr: $(cat "$tmp/cpack-usr.log")"
fi

if [[ $(id -u) -ne 0 ]]; then
  echo "skipped: dpkg -i (not root)"
elif dpkg-query -W -f='${Status}' pitlane 2>/dev/null | grep -q "install ok installed"; then
  echo "skipped: dpkg -i (a pitlane package is installed already; left alone)"
else
  if dpkg -i "$deb" >"$tmp/dpkg.log" 2>&1; then
    installed=yes
    ok "dpkg -i $(basename "$deb")"
    verify "$prefix/lib/systemd/system/pitlane-host@.service"
    "$prefix/bin/pitlane" --version >/dev/null && ok "the installed command runs" ||
      fail "installed pitlane"
    (cd / && env -u PYTHONPATH /usr/bin/python3 -c 'import pitlane.telemetry') &&
      ok "the installed Python module imports from /" || fail "installed Python module"
    dpkg -r pitlane >"$tmp/dpkg-r.log" 2>&1 && installed="" && [[ ! -e "$prefix/bin/pitlane" ]] &&
      ok "dpkg -r removes it" || fail "dpkg -r: $(cat "$tmp/dpkg-r.log")"
  else
    fail "dpkg -i: $(cat "$tmp/dpkg.log")"
  fi
fi
((fails == 0)) && echo "all checks passed" || { echo "$fails check(s) failed"; exit 1; }
