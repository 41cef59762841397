#!/usr/bin/env bash
# The bash completion (packaging/completions/pitlane) offers exactly the options each
# subcommand's --help lists, completes commands and values; the generated man pages render
# without groff warnings and carry the exit status, signals and every subcommand.
# Usage: completion.sh PITLANE SOURCE_DIR MAN_DIR (MAN_DIR "" when help2man was not found)
set -uo pipefail
pitlane="$1" source="$2" man_dir="$3"
fails=0
ok() { echo "ok: $*"; }
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }

# The completion runs `pitlane` for event names: the binary under test, first on PATH.
bin_dir="$(mktemp -d /tmp/pitlane-completion-XXXXXX)"
trap 'rm -rf "$bin_dir"' EXIT
ln -s "$(readlink -f "$pitlane")" "$bin_dir/pitlane"
export PATH="$bin_dir:$PATH"
# shellcheck source=/dev/null
source "$source/packaging/completions/pitlane"

complete_words() {  # complete_words WORD... : the candidates for the last word
  COMP_WORDS=("$@")
  COMP_CWORD=$(($# - 1))
  COMP_LINE="$*"
  COMP_POINT=${#COMP_LINE}
  COMPREPLY=()
  _pitlane
  printf '%s\n' "${COMPREPLY[@]}" | sort -u
}

for cmd in demo host stat cleanup emit ctl catalog; do
  want=$("$pitlane" "$cmd" --help | grep -oE '^ +(-[a-zA-Z], ?)?--[a-z][a-z-]*' |
         grep -oE -- '--[a-z][a-z-]*' | sort -u)
  got=$(complete_words pitlane "$cmd" -- | grep -- '^--' | sort -u)
  if [[ "$want" == "$got" ]]; then ok "$cmd: the completion offers the options of --help"; else
    fail "$cmd: options differ (< --help, > completion):"$'\n'"$(diff <(echo "$want") <(echo "$got"))"
  fi
done
# `./build.sh demo` passes its flags on to `pitlane demo`: its usage names every one of them.
want=$("$pitlane" demo --help | grep -oE '^ +(-[a-zA-Z], ?)?--[a-z][a-z-]*' |
       grep -oE -- '--[a-z][a-z-]*' | grep -vxE -- '--help(-all)?' | sort -u)
got=$(bash "$source/build.sh" --help 2>&1 | grep -oE -- '--[a-z][a-z-]*' | grep -vxE -- '--help(-all)?' |
      sort -u)
if [[ "$want" == "$got" ]]; then ok "build.sh's usage names the options of pitlane demo"; else
  fail "build.sh demo options differ (< demo --help, > build.sh --help):"$'\n'"$(diff <(echo "$want") <(echo "$got"))"
fi
[[ "$(complete_words pitlane ho)" == host ]] && ok "commands complete" || fail "pitlane ho: $(complete_words pitlane ho)"
[[ "$(complete_words pitlane host --metric-naming s)" == snakepit ]] && ok "--metric-naming values" ||
  fail "--metric-naming s: $(complete_words pitlane host --metric-naming s)"
got=$(complete_words pitlane emit python.call.s | tr '\n' ' ')
[[ "$got" == "python.call.start python.call.stop " ]] && ok "event names from the catalog" ||
  fail "emit python.call.s: $got"
[[ "$(complete_words pitlane --ver)" == --version ]] && ok "--version completes" || fail "--ver"

if [[ -z "$man_dir" ]]; then
  echo "skipped: man pages (help2man not found at configure time)"
else
  for page in "$man_dir"/*.1; do
    warnings=$(groff -man -Tutf8 -ww -z "$page" 2>&1)
    [[ -z "$warnings" ]] && ok "$(basename "$page") renders without warnings" ||
      fail "$(basename "$page"): $warnings"
  done
  text=$(MANWIDTH=200 man -l "$man_dir/pitlane.1" 2>/dev/null)
  for want in "EXIT STATUS" SIGNALS SIGHUP PITLANE_GRPC_TOKEN "--jsonl-file" "--metric-naming" \
              "--grpc-token-file" "--version"; do
    grep -qF -- "$want" <<<"$text" && ok "pitlane(1) has $want" || fail "pitlane(1) lacks $want"
  done
  [[ $(ls "$man_dir"/pitlane-*.1 | wc -l) -eq 7 ]] && ok "a page per command" || fail "pages: $(ls "$man_dir")"
fi
((fails == 0)) && echo "all checks passed" || { echo "$fails check(s) failed"; exit 1; }
