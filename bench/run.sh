#!/usr/bin/env bash
# Runs the pitlane benchmark suite and renders its results: bench/results/pitlane_bench.json
# (google benchmark's JSON, with the machine under "pitlane_machine"), bench/results/results.md
# (the table for the README) and bench/results/chart.png.
#
#   bench/run.sh [BUILD_DIR]                  full run (BUILD_DIR default: build)
#   bench/run.sh --repetitions 5 [BUILD_DIR]  repetitions of the cases that move with load (3)
#   bench/run.sh --filter REGEX [BUILD_DIR]   only the matching cases (--benchmark_filter),
#                                             written to a new temporary directory unless --out
#   bench/run.sh --out DIR [BUILD_DIR]        write the results into DIR instead
#   bench/run.sh --compare OLD.json ...       after the run, print before/after per case
#                                             against an earlier run's pitlane_bench.json
#                                             (bench/render.py NEW.json --compare OLD.json
#                                             does the same without running)
#   bench/run.sh --smoke [BUILD_DIR]          every case tiny (PITLANE_BENCH_SMOKE=1), rendered
#                                             into a temporary directory that is then removed;
#                                             bench/results/ is not touched (ctest
#                                             bench_script_smoke)
#
# Needs a built pitlane_bench (cmake --build BUILD_DIR --target pitlane_bench) and Debian's
# python3-matplotlib for /usr/bin/python3. Pin nothing yourself: the cases pin their threads.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
smoke=0
repetitions=3
filter=""
out=""
compare=""
build_dir=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --smoke) smoke=1; shift ;;
    --repetitions) repetitions="$2"; shift 2 ;;
    --filter) filter="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --compare) compare="$2"; shift 2 ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    -*) echo "run.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) build_dir="$1"; shift ;;
  esac
done
if [[ -n "$compare" && ! -r "$compare" ]]; then
  echo "run.sh: --compare $compare: no such readable file" >&2
  exit 2
fi
if ! [[ "$repetitions" =~ ^[1-9][0-9]*$ ]]; then
  echo "run.sh: --repetitions must be a positive integer, not '$repetitions'" >&2
  exit 2
fi
build_dir="${build_dir:-$root/build}"
bin="$build_dir/bench/pitlane_bench"
if [[ ! -x "$bin" ]]; then
  echo "run.sh: $bin not found (build it: cmake --build $build_dir --target pitlane_bench)" >&2
  exit 2
fi
python=/usr/bin/python3
if [[ ! -x "$python" ]]; then
  echo "run.sh: $python not found (Debian: apt-get install python3 python3-matplotlib)" >&2
  exit 2
fi

remove_out=0
if [[ $smoke == 1 ]]; then
  out="$(mktemp -d "${TMPDIR:-/tmp}/pitlane-bench-smoke.XXXXXX")"
  [[ -n "${PITLANE_BENCH_KEEP:-}" ]] || remove_out=1
  export PITLANE_BENCH_SMOKE=1
  repetitions=2  # exercises the aggregate (median, cv) path of render.py
  min_time=(--benchmark_min_time=0.001)
else
  if [[ -z "$out" && -n "$filter" ]]; then
    # A partial run never replaces the full results in bench/results/.
    out="$(mktemp -d "${TMPDIR:-/tmp}/pitlane-bench.XXXXXX")"
  fi
  out="${out:-$root/bench/results}"
  mkdir -p "$out"
  min_time=()
fi
export PITLANE_BENCH_REPETITIONS="$repetitions"

# The machine, before the run: its load decides whether the results carry a "noisy" note.
load_start="$(cut -d' ' -f1 /proc/loadavg)"
cpu_model="$(lscpu 2>/dev/null | sed -n 's/^Model name:[[:space:]]*//p' | head -1)"
kernel="$(uname -sr)"
commit="$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)"
# The results directory is this script's output, not a change to what is measured.
dirty="$(git -C "$root" status --porcelain -- ':!bench/results' 2>/dev/null | head -1)"
[[ -n "$dirty" ]] && commit="$commit+changes"

json="$out/pitlane_bench.json"
args=(--benchmark_out="$json" --benchmark_out_format=json "${min_time[@]}")
[[ -n "$filter" ]] && args+=(--benchmark_filter="$filter")

# The LTTng-UST comparison (BM_Emit_VsLttng, built when liblttng-ust-dev was found) needs a
# recording session: a session daemon (started here if none runs, stopped again after), one
# session recording pitlane_bench:typical_event into a temporary directory, and its consumer
# daemon pinned to core 1, where pitlane's host drains. Its discarded-event count is read
# when the session is destroyed.
lttng_session=""
lttng_started_sessiond=0
lttng_discarded=-1
lttng_cases="$("$bin" --benchmark_list_tests ${filter:+--benchmark_filter="$filter"} | grep -c VsLttng || true)"
live_sessiond() { ps -eo pid=,stat=,comm= | awk '$3 == "lttng-sessiond" && $2 !~ /Z/ {print $1}'; }
lttng_start() {
  if [[ "$lttng_cases" == 0 ]]; then return; fi
  if ! command -v lttng >/dev/null || ! command -v lttng-sessiond >/dev/null; then
    echo "run.sh: lttng-tools not installed: the LTTng-UST cases will report an error" >&2
    return
  fi
  # (`lttng create` would start a session daemon itself; starting it here lets this script
  # stop exactly the one it started.)
  if [[ -z "$(live_sessiond)" ]]; then
    lttng-sessiond --daemonize --no-kernel >/dev/null 2>&1 && lttng_started_sessiond=1
  fi
  lttng_trace="$(mktemp -d "${TMPDIR:-/tmp}/pitlane-bench-lttng.XXXXXX")"
  lttng_session="pitlane-bench-$$"
  # 4 sub-buffers of 1 MiB per CPU: the same 4 MiB a pitlane ring of the case has, enough for
  # a whole block of 10,000 typical events on either side.
  lttng create "$lttng_session" --output="$lttng_trace" >/dev/null &&
    lttng enable-channel -u -s "$lttng_session" --subbuf-size=1M --num-subbuf=4 bench \
      >/dev/null &&
    lttng enable-event -u -s "$lttng_session" -c bench pitlane_bench:typical_event >/dev/null &&
    lttng start "$lttng_session" >/dev/null || {
      echo "run.sh: could not start an LTTng session (see lttng's messages above)" >&2
      lttng_session=""
      return
    }
  for p in $(pgrep -x lttng-consumerd); do taskset -a -p -c 1 "$p" >/dev/null 2>&1 || true; done
}
lttng_stop() {
  if [[ -z "$lttng_session" ]]; then return; fi
  local said
  said="$(lttng destroy "$lttng_session" 2>&1 || true)"
  lttng_discarded="$(sed -n 's/.*Warning: \([0-9]*\) events were discarded.*/\1/p' <<<"$said" | head -1)"
  lttng_discarded="${lttng_discarded:-0}"
  rm -rf "$lttng_trace"
  if [[ $lttng_started_sessiond == 1 ]]; then kill $(live_sessiond) 2>/dev/null || true; fi
  lttng_session=""
}
cleanup() {
  lttng_stop
  if [[ $remove_out == 1 ]]; then rm -rf "$out"; fi
}
trap cleanup EXIT

echo "run.sh: $bin (repetitions $repetitions, load average $load_start) → $out"
lttng_start
"$bin" "${args[@]}"
lttng_stop
load_end="$(cut -d' ' -f1 /proc/loadavg)"

# Record the machine next to the numbers, in the same file, compactly.
"$python" - "$json" "$load_start" "$load_end" "$cpu_model" "$kernel" "$commit" \
    "$lttng_discarded" <<'EOF'
import json, sys
path, load, load_end, model, kernel, commit, lttng_discarded = sys.argv[1:8]
with open(path) as f:
    data = json.load(f)
data["context"]["pitlane_machine"] = {
    "load_avg_at_start": float(load), "load_avg_at_end": float(load_end), "cpu_model": model,
    "kernel": kernel, "commit": commit}
if int(lttng_discarded) >= 0:
    data["context"]["pitlane_machine"]["lttng_discarded"] = int(lttng_discarded)
with open(path, "w") as f:
    json.dump(data, f, separators=(",", ":"))
    f.write("\n")
EOF

"$python" "$root/bench/render.py" "$json" --markdown "$out/results.md" --chart "$out/chart.png" \
  ${compare:+--compare "$compare"}
if [[ $smoke == 1 ]]; then
  for f in "$json" "$out/results.md" "$out/chart.png"; do
    if [[ ! -s "$f" ]]; then
      echo "run.sh: $f is missing or empty" >&2
      exit 1
    fi
  done
  # With lttng-tools installed, the LTTng-UST comparison must have run, not reported an error.
  if [[ "$lttng_cases" != 0 ]] && command -v lttng >/dev/null; then
    "$python" - "$json" <<'EOF'
import json, sys
rows = [b for b in json.load(open(sys.argv[1]))["benchmarks"] if "VsLttng" in b["name"]]
bad = [b["name"] + ": " + b["error_message"] for b in rows if b.get("error_occurred")]
if not rows or bad or not all("lttng_p50_ns" in b for b in rows):
    sys.exit("run.sh: the LTTng-UST comparison did not run: " + ("; ".join(bad) or "no rows"))
EOF
  fi
  echo "run.sh: smoke run rendered $(wc -l < "$out/results.md") table lines and a chart"
fi
