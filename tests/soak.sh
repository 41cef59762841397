#!/usr/bin/env bash
# Soak (not part of CI): N demo workers emit against a host for M minutes while workers are
# killed (SIGKILL) and replaced, and the host is restarted (alternately SIGTERM and SIGKILL) at
# random. At the end it prints the conservation check of every ring
#   emitted = suppressed + dropped + published,  published = delivered + rejected
# (from `pitlane stat --json` while the last host still runs, and from the per-worker "law"
# column every host prints when it stops) and the peak resident memory (VmHWM) of the hosts and
# workers. Exit status 0 only if no ring violated the law.
#
#   tests/soak.sh [--workers N=4] [--minutes M=5] [--rate R=20000] [--seed S=1]
#                 [--pitlane PATH=build/cli/pitlane]
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
workers=4
minutes=5
rate=20000
seed=1
pitlane="$root/build/cli/pitlane"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --workers) workers="$2"; shift 2 ;;
    --minutes) minutes="$2"; shift 2 ;;
    --rate) rate="$2"; shift 2 ;;
    --seed) seed="$2"; shift 2 ;;
    --pitlane) pitlane="$2"; shift 2 ;;
    *) echo "usage: $0 [--workers N] [--minutes M] [--rate R] [--seed S] [--pitlane PATH]" >&2
       exit 2 ;;
  esac
done
[[ -x "$pitlane" ]] || { echo "soak.sh: $pitlane not built (./build.sh test builds it)" >&2; exit 2; }

RANDOM=$seed
ns="soak$$"
logs="$(mktemp -d /tmp/pitlane-soak.XXXXXX)"
end=$((SECONDS + minutes * 60))
declare -A wpid=()   # slot -> pid
declare -A wgen=()   # slot -> respawn count
host_pid=""
host_gen=0
kills=0
host_restarts=0
peak_host_kb=0
peak_worker_kb=0

hwm() {  # VmHWM of a live pid in KiB, 0 if gone
  awk '/^VmHWM:/ {print $2; found=1} END {if (!found) print 0}' "/proc/$1/status" 2>/dev/null || echo 0
}
note_peak() {
  local kb
  if [[ -n "$host_pid" ]]; then
    kb=$(hwm "$host_pid"); (( kb > peak_host_kb )) && peak_host_kb=$kb
  fi
  for p in "${wpid[@]}"; do
    kb=$(hwm "$p"); (( kb > peak_worker_kb )) && peak_worker_kb=$kb
  done
  return 0
}
start_host() {
  host_gen=$((host_gen + 1))
  "$pitlane" host --ns "$ns" --interval 3600 >"$logs/host.$host_gen.log" 2>&1 &
  host_pid=$!
  sleep 0.3
}
stop_host() {  # $1: signal
  note_peak
  kill -"$1" "$host_pid" 2>/dev/null || true
  wait "$host_pid" 2>/dev/null || true
  host_pid=""
}
start_worker() {  # $1: slot; runs until the end of the soak
  local left=$((end - SECONDS)); (( left < 1 )) && left=1
  wgen[$1]=$(( ${wgen[$1]:-0} + 1 ))
  "$pitlane" demo-worker --ns "$ns" --id "soak-w$1-${wgen[$1]}" --duration "$left" --rate "$rate" \
    >>"$logs/worker.$1.log" 2>&1 &
  wpid[$1]=$!
}
cleanup() {
  for p in "${wpid[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  [[ -n "$host_pid" ]] && kill -9 "$host_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  "$pitlane" cleanup --ns "$ns" >/dev/null 2>&1 || true
}
trap cleanup EXIT

echo "soak: namespace $ns, $workers workers at $rate events/s for $minutes min, seed $seed, logs in $logs"
start_host
for ((i = 0; i < workers; ++i)); do start_worker "$i"; done

violations_live=0
checks=0
check_live() {  # conservation of every live ring, while a host runs
  local json
  json="$("$pitlane" stat --ns "$ns" --json 2>/dev/null)" || return 0
  checks=$((checks + 1))
  local bad
  bad=$(jq '[.rings[]? | select(.conserved == false)] | length' <<<"$json")
  if (( bad > 0 )); then
    violations_live=$((violations_live + bad))
    jq -c '.rings[] | select(.conserved == false)' <<<"$json" >>"$logs/violations.jsonl"
  fi
}

while (( SECONDS < end - 5 )); do
  sleep $((2 + RANDOM % 4))
  note_peak
  case $((RANDOM % 4)) in
    0|1)  # kill a random worker mid-emit and replace it
      slot=$((RANDOM % workers))
      kill -9 "${wpid[$slot]}" 2>/dev/null || true
      wait "${wpid[$slot]}" 2>/dev/null || true
      kills=$((kills + 1))
      start_worker "$slot"
      ;;
    2)  # restart the host; workers keep emitting (and dropping when full) meanwhile
      if (( RANDOM % 2 )); then stop_host TERM; else stop_host KILL; fi
      host_restarts=$((host_restarts + 1))
      sleep 0.$((RANDOM % 10))
      start_host
      ;;
    3) check_live ;;
  esac
done

# Let the workers finish on their own, then give the host time to drain and reclaim.
for p in "${wpid[@]}"; do wait "$p" 2>/dev/null || true; done
note_peak
sleep 2
check_live
final_json="$("$pitlane" stat --ns "$ns" --json 2>/dev/null || echo '{}')"
stop_host TERM
wpid=()

# Per-worker rows of every host's final summary (hosts killed with SIGKILL print none; the
# next host adopts their rings and accounts for them).
# Workers gone for good are summed into one "(N departed)" row.
rows=$(grep -hE "^  (soak-w|\([0-9]+ departed\))" "$logs"/host.*.log | wc -l)
holds=$(grep -hE "^  (soak-w|\([0-9]+ departed\))" "$logs"/host.*.log | grep -c " holds$" || true)
violated=$(grep -hE "^  (soak-w|\([0-9]+ departed\))" "$logs"/host.*.log | grep -c "VIOLATED" || true)
echo
echo "soak: ${minutes} min, $workers workers, $kills worker kills, $host_restarts host restarts" \
     "($host_gen hosts)"
echo "soak: last host's summary:"
tail -n $((workers * 40)) "$logs/host.$host_gen.log" | sed -n '/^t=/,$p' | tail -n 40
echo "soak: live-ring checks: $checks, rings not conserved: $violations_live"
echo "soak: rings left in the namespace at the end: $(jq '.rings | length' <<<"$final_json" 2>/dev/null || echo '?')"
echo "soak: per-worker law in the summaries of hosts that stopped cleanly: $rows rows," \
     "$holds holds, $violated VIOLATED, the rest in flight (live rings)"
echo "soak: peak memory (VmHWM): host $((peak_host_kb / 1024)) MiB, worker $((peak_worker_kb / 1024)) MiB"
if (( violations_live > 0 || violated > 0 )); then
  echo "soak: FAILED: conservation violated (see $logs)"
  exit 1
fi
echo "soak: conservation holds"
