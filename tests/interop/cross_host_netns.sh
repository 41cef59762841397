#!/usr/bin/env bash
# ctest interop_cross_host_netns: a host and a worker as two machines.
#
# Two network namespaces joined by a veth pair stand for two machines on one link. `pitlane host
# --grpc-listen <ipA>:0 --jsonl` runs in the first; in the second, `pitlane emit` runs with
# PITLANE_TRANSPORT=auto and PITLANE_GRPC_TARGET=<ipA>:<port> inside a private mount namespace
# with its own tmpfs on /dev/shm, so it cannot see the host's shared memory, like a process on
# another machine. Checked:
#   - the worker cannot see the host's registry segment, which does exist on the host's side;
#   - it falls back to gRPC: its event arrives over the link as a JSON line with transport
#     "grpc", its name, measurements, metadata, correlation id and the worker's pid, and (when
#     `pitlane ctl` exists) the host's worker table lists it as a gRPC worker;
#   - the control case: the same command in the worker's network namespace but with the shared
#     /dev/shm chooses shared memory (transport "shm"), so the private /dev/shm is what made the
#     difference;
#   - the host exits 0 on SIGTERM having rejected nothing.
# Skips (exit 77) when not root or when network namespaces or a veth pair cannot be created.
# Everything it creates (namespaces, veth pair, processes, segments, files) is removed on exit,
# whatever the outcome.
set -uo pipefail

SKIP=77
PITLANE=${1:?usage: cross_host_netns.sh PATH/TO/pitlane}
PY=/usr/bin/python3
WAIT=20  # seconds any single condition may take on a loaded machine

tag=$$x$((RANDOM % 1000))  # unique per run; short enough for 15-byte interface names
ns_host=pitlane-xh-$tag-host
ns_worker=pitlane-xh-$tag-worker
veth_host=plh$tag      # interface names are at most 15 bytes
veth_worker=plw$tag
# RFC 2544's benchmarking range: the two addresses exist only on this veth pair.
ip_host=198.18.0.1
ip_worker=198.18.0.2
pitlane_ns=interop-netns-$tag
work=$(mktemp -d "${TMPDIR:-/tmp}/pitlane-netns.XXXXXX")
host_pid=
emit_running=
created=()
checks=0

# The peers talk to each other directly: no proxy from the environment.
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY grpc_proxy no_grpc_proxy
unset PITLANE_TRANSPORT PITLANE_GRPC_TARGET PITLANE_GRPC_LISTEN PITLANE_GRPC_TOKEN PITLANE_WORKER_ID
export PITLANE_NAMESPACE=$pitlane_ns

stop_pid() {  # SIGTERM, up to 10 s, then SIGKILL; sets stopped_rc
  local pid=$1 i
  stopped_rc=
  kill -0 "$pid" 2>/dev/null && kill -TERM "$pid" 2>/dev/null
  for ((i = 0; i < 500; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.02
  done
  kill -KILL "$pid" 2>/dev/null
  wait "$pid"
  stopped_rc=$?
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [[ -n $emit_running ]]; then stop_pid "$emit_running"; fi
  if [[ -n $host_pid ]]; then stop_pid "$host_pid"; fi
  for n in "${created[@]}"; do ip netns del "$n" 2>/dev/null; done
  "$PITLANE" cleanup --ns "$pitlane_ns" >/dev/null 2>&1
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

skip() {
  echo "SKIP: $*"
  exit "$SKIP"
}
ok() {
  echo "ok: $*"
  checks=$((checks + 1))
}
fail() {
  echo "FAIL: $*"
  local f
  for f in "$work"/*.err "$work"/*.out "$work"/host.jsonl; do
    [[ -s $f ]] || continue
    echo "--- ${f##*/} (last 30 lines)"
    tail -n 30 "$f"
  done
  exit 1
}
# Polls a command (its output discarded) every 20 ms for up to WAIT seconds; fails naming $1
# when it never succeeds.
wait_until() {
  local what=$1 i
  shift
  for ((i = 0; i < WAIT * 50; i++)); do
    "$@" >/dev/null 2>&1 && return 0
    if [[ -n $host_pid ]] && ! kill -0 "$host_pid" 2>/dev/null; then
      fail "$what: the host has exited"
    fi
    sleep 0.02
  done
  fail "timed out after $WAIT s waiting for $what"
}

[[ $(id -u) -eq 0 ]] || skip "needs root to create network namespaces and mount a tmpfs"
command -v ip >/dev/null || skip "iproute2's ip is not installed"
command -v unshare >/dev/null || skip "util-linux's unshare is not installed"
[[ -x $PY ]] || fail "$PY is needed to read the host's JSON lines"
[[ -x $PITLANE ]] || fail "$PITLANE is not an executable"

# ── two "machines" on one link ────────────────────────────────────────────────────────────────
err=$(ip netns add "$ns_host" 2>&1) || skip "ip netns add failed: $err"
created+=("$ns_host")
err=$(ip netns add "$ns_worker" 2>&1) || skip "ip netns add failed: $err"
created+=("$ns_worker")
err=$(ip link add "$veth_host" netns "$ns_host" type veth peer name "$veth_worker" \
        netns "$ns_worker" 2>&1) || skip "cannot create a veth pair: $err"
ip -n "$ns_host" addr add "$ip_host/30" dev "$veth_host" &&
  ip -n "$ns_worker" addr add "$ip_worker/30" dev "$veth_worker" &&
  ip -n "$ns_host" link set lo up && ip -n "$ns_worker" link set lo up &&
  ip -n "$ns_host" link set "$veth_host" up && ip -n "$ns_worker" link set "$veth_worker" up ||
  fail "cannot configure the veth pair"
ok "network namespaces $ns_host ($ip_host) and $ns_worker ($ip_worker) joined by a veth pair"

# ── the host, on the first machine ────────────────────────────────────────────────────────────
# `pitlane ctl` and the host's admin service come together.
admin=()
if "$PITLANE" ctl --help >/dev/null 2>&1; then admin=(--admin "unix:$work/admin.sock"); fi
ip netns exec "$ns_host" "$PITLANE" host --ns "$pitlane_ns" --jsonl \
  --grpc-listen "$ip_host:0" "${admin[@]}" --duration 120 \
  </dev/null >"$work/host.jsonl" 2>"$work/host.err" &
host_pid=$!
listen_line() { grep -oE "gRPC dial-in for remote workers on $ip_host:[0-9]+" "$work/host.err"; }
wait_until "the host's 'gRPC dial-in for remote workers on $ip_host:PORT' line" listen_line
port=$(listen_line | head -n1 | sed 's/.*://')
ok "the host serves gRPC dial-in on $ip_host:$port inside $ns_host"
registry=/dev/shm/pitlane.$pitlane_ns.registry
wait_until "the host's registry segment $registry" test -e "$registry"

# The JSON lines of the events worker $1 sent (the host's own events about it, transport "host",
# left out), one per line; exits 1 when there is none.
lines_of() {
  "$PY" - "$work/host.jsonl" "$1" <<'EOF'
import json, sys
path, worker = sys.argv[1], sys.argv[2]
found = 0
with open(path, encoding="utf-8", errors="replace") as f:
    for line in f:
        try:
            e = json.loads(line)
        except ValueError:
            continue  # a line still being written
        if e.get("worker_id") == worker and e.get("transport") != "host":
            print(json.dumps(e, sort_keys=True))
            found += 1
sys.exit(0 if found else 1)
EOF
}

# Runs `pitlane emit` in the worker's network namespace, in the background, bounded in time.
# $1: "private" (own tmpfs on /dev/shm) or "shared"; the rest: emit's arguments. Sets emit_pid
# (the emitting process itself: ip, unshare and sh each exec the next) and emit_rc.
run_emit() {
  local mode=$1 i
  shift
  local env=(env PITLANE_NAMESPACE="$pitlane_ns" PITLANE_TRANSPORT=auto
             PITLANE_GRPC_TARGET="$ip_host:$port")
  if [[ $mode == private ]]; then
    ip netns exec "$ns_worker" "${env[@]}" unshare --mount --propagation private \
      sh -c 'mount -t tmpfs -o size=16m,mode=1777 tmpfs /dev/shm || exit 90
             if [ -e "/dev/shm/pitlane.$PITLANE_NAMESPACE.registry" ]; then exit 91; fi
             echo "worker: private /dev/shm, $(ls -A /dev/shm | wc -l) entries" >&2
             exec "$@"' sh "$PITLANE" emit "$@" \
      </dev/null >"$work/emit-$mode.out" 2>"$work/emit-$mode.err" &
  else
    ip netns exec "$ns_worker" "${env[@]}" "$PITLANE" emit "$@" \
      </dev/null >"$work/emit-$mode.out" 2>"$work/emit-$mode.err" &
  fi
  emit_pid=$!
  emit_running=$emit_pid
  for ((i = 0; i < 30 * 50; i++)); do
    kill -0 "$emit_pid" 2>/dev/null || break
    sleep 0.02
  done
  stop_pid "$emit_pid"
  emit_running=
  emit_rc=$stopped_rc
}

# ── the worker, on the second machine, with a /dev/shm of its own ─────────────────────────────
remote_id=remote-$tag
run_emit private --id "$remote_id" python.call.stop -m duration=4321 -m response_size=99 \
  -d command=cross-host -d result=ok --correlation-id "cross-$tag"
[[ $emit_rc -ne 90 ]] || fail "cannot mount a tmpfs on /dev/shm in a private mount namespace"
[[ $emit_rc -ne 91 ]] || fail "the worker's private /dev/shm still shows the host's registry"
[[ $emit_rc -eq 0 ]] || fail "pitlane emit in $ns_worker exited $emit_rc"
ok "the worker's /dev/shm is private: the host's registry (present at $registry) is not there"
grep -q "python.call.stop: ok (worker $remote_id" "$work/emit-private.out" ||
  fail "pitlane emit did not report ok: $(cat "$work/emit-private.out")"
ok "pitlane emit in $ns_worker reports ok (pid $emit_pid)"

wait_until "the remote worker's event in the host's JSON lines" lines_of "$remote_id"
remote_line=$(lines_of "$remote_id")
"$PY" - "$remote_line" "$remote_id" "$emit_pid" "cross-$tag" <<'EOF' ||
  fail "the remote event is not as emitted: $remote_line"
import json, sys
lines, worker, pid, corr = sys.argv[1].splitlines(), sys.argv[2], int(sys.argv[3]), sys.argv[4]
assert len(lines) == 1, f"{len(lines)} events of {worker}, expected 1"
e = json.loads(lines[0])
assert e["name"] == "snakepit.python.call.stop", e["name"]
assert e["transport"] == "grpc", f"transport {e['transport']}"
assert e["worker_pid"] == pid, f"worker_pid {e['worker_pid']}, emit ran as {pid}"
assert e["correlation_id"] == corr, e["correlation_id"]
assert e["measurements"] == {"duration": 4321, "response_size": 99}, e["measurements"]
md = e["metadata"]
assert md.get("command") == "cross-host" and md.get("result") == "ok", md
assert md.get("worker_id") == worker and md.get("worker_pid") == str(pid), md
EOF
ok "its event crossed the link over gRPC: transport grpc, worker $remote_id, pid $emit_pid," \
  "measurements and metadata as emitted"

if [[ ${#admin[@]} -gt 0 ]]; then
  "$PITLANE" ctl --admin "unix:$work/admin.sock" workers >"$work/ctl-workers.out" 2>&1 ||
    fail "pitlane ctl workers failed: $(cat "$work/ctl-workers.out")"
  echo "--- the host's worker table (pitlane ctl workers):"
  cat "$work/ctl-workers.out"
  "$PITLANE" ctl --admin "unix:$work/admin.sock" workers --json >"$work/ctl-workers-json.out" \
    2>&1 || fail "pitlane ctl workers --json failed: $(cat "$work/ctl-workers-json.out")"
  "$PY" - "$work/ctl-workers-json.out" "$remote_id" <<'EOF' ||
    fail "the host's worker table does not list $remote_id as a gRPC worker"
import json, sys
doc = json.load(open(sys.argv[1]))
w = [w for w in doc["workers"] if w["worker_id"] == sys.argv[2]]
assert len(w) == 1 and w[0]["transport"] == "grpc", w
assert w[0]["counters"]["delivered"] == 1 and w[0]["counters"]["rejected"] == 0, w
EOF
  ok "the host's worker table lists $remote_id with transport grpc, 1 delivered, 0 rejected"
else
  echo "skipped: \`pitlane ctl\` is not available in this build; the worker table was not read"
fi

# ── control case: the same network namespace, the shared /dev/shm ─────────────────────────────
local_id=shared-shm-$tag
run_emit shared --id "$local_id" python.call.start -m system_time=7 -d command=same-machine
[[ $emit_rc -eq 0 ]] || fail "pitlane emit with the shared /dev/shm exited $emit_rc"
wait_until "the shared-/dev/shm worker's event in the host's JSON lines" lines_of "$local_id"
"$PY" -c 'import json, sys; e = json.loads(sys.argv[1]); assert e["transport"] == "shm", e' \
  "$(lines_of "$local_id")" ||
  fail "with the shared /dev/shm the worker did not choose shm: $(lines_of "$local_id")"
ok "with the shared /dev/shm the same settings choose shared memory (transport shm)"

# ── the host stops cleanly ────────────────────────────────────────────────────────────────────
pid=$host_pid
host_pid=
stop_pid "$pid"
[[ $stopped_rc -eq 0 ]] || fail "the host exited $stopped_rc on SIGTERM"
summary=$(grep -E "delivered [0-9]+, rejected [0-9]+" "$work/host.err" | tail -n 1)
[[ $summary == *"rejected 0,"* ]] || fail "the host's final summary shows rejected events: $summary"
[[ $(lines_of "$remote_id" | wc -l) -eq 1 ]] ||
  fail "the remote worker's event was delivered more than once"
ok "the host exits 0 on SIGTERM, rejected nothing, delivered the remote event once"
echo "$checks checks passed"
