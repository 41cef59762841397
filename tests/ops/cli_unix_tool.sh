#!/usr/bin/env bash
# `pitlane` as a Unix tool (README "Operating a host"): --version, exit codes (2 usage, 1
# runtime), `--ns ""`, a closed stdout pipe, SIGHUP reopening --jsonl-file, SIGTERM with the
# summary, departed workers summed in one row, `cleanup` of a dead host's admin socket,
# `catalog [--catalog FILE] --json`, `stat --json`, `host --catalog FILE`, `stat --watch` and `demo` ending on a
# closed stdout, SIGINT with the summary, the gRPC token from a file or the environment and not
# in argv, `host --spin` (bad values refused; a long spin keeps the idle host on the CPU), a
# full stdout (exit 1 naming it) against a reader that left (exit 0) for every command that
# prints, `--otlp*` checked like the other flags, `emit` refused the registry (not "no host"),
# `cleanup`'s summary counting what it lists, `catalog`'s units, `stat` as another uid on
# root's namespace (the permission error names the fix).
# Usage: cli_unix_tool.sh PITLANE
set -uo pipefail

pitlane="$1"
tmp="$(mktemp -d /tmp/pitlane-cli-unix-XXXXXX)"
ns="ctest-cli-unix-$$"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null; done
  "$pitlane" cleanup --ns "$ns" >/dev/null 2>&1
  "$pitlane" cleanup --ns "$ns-b" >/dev/null 2>&1
  "$pitlane" cleanup --ns "$ns-hup" >/dev/null 2>&1
  "$pitlane" cleanup --ns "$ns-demo" >/dev/null 2>&1
  "$pitlane" cleanup --ns "$ns-uid" >/dev/null 2>&1
  "$pitlane" cleanup --ns "$ns-perm" >/dev/null 2>&1
  "$pitlane" cleanup --ns "$ns-closed" >/dev/null 2>&1
  [[ -n "${KEEP:-}" ]] || rm -rf "$tmp"
}
trap cleanup EXIT

fails=0
ok() { echo "ok: $*"; }
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
# expect_rc WANT WHAT -- command...: runs it, compares the exit code.
expect_rc() {
  local want="$1" what="$2"
  shift 3
  "$@" >"$tmp/out" 2>"$tmp/err"
  local rc=$?
  if [[ $rc -eq $want ]]; then ok "$what (exit $rc)"; else
    fail "$what: exit $rc, want $want; stderr: $(head -c 400 "$tmp/err")"
  fi
}
# wait_for SECONDS WHAT -- condition...: polls every 50 ms.
wait_for() {
  local seconds="$1" what="$2"
  shift 3
  local deadline=$((SECONDS + seconds))
  while ! "$@" 2>/dev/null; do
    if ((SECONDS >= deadline)); then fail "timed out: $what"; return 1; fi
    sleep 0.05
  done
  return 0
}
# full_stdout WHAT -- command...: with stdout on /dev/full (ENOSPC) the command fails (exit 1)
# with one line on stderr naming stdout and the errno text.
full_stdout() {
  local what="$1"
  shift 2
  "$@" >/dev/full 2>"$tmp/err"
  local rc=$?
  if [[ $rc -eq 1 && $(wc -l <"$tmp/err") -eq 1 ]] &&
     grep -qE '^pitlane( [a-z]+)?: cannot write to stdout: No space left on device$' "$tmp/err"; then
    ok "$what > /dev/full: exit 1, saying so"
  else
    fail "$what > /dev/full: exit $rc, want 1; stderr: $(head -c 400 "$tmp/err")"
  fi
}
# reader_gone WHAT -- command...: with stdout a pipe whose reader has already left (what
# `| head -1` leaves a command that prints more than a line) the command ends normally: exit 0,
# nothing on stderr, not killed by SIGPIPE (141).
reader_gone() {
  local what="$1"
  shift 2
  /usr/bin/python3 -c 'import os, subprocess, sys
r, w = os.pipe()
os.close(r)
rc = subprocess.run(sys.argv[1:], stdout=w).returncode  # SIGPIPE as a shell leaves it
sys.exit(128 - rc if rc < 0 else rc)' "$@" 2>"$tmp/err"
  local rc=$?
  if [[ $rc -eq 0 && ! -s "$tmp/err" ]]; then ok "$what | (reader gone): exit 0, silent"; else
    fail "$what | (reader gone): exit $rc, want 0; stderr: $(head -c 400 "$tmp/err")"
  fi
}

# ── version and exit codes ────────────────────────────────────────────────────────────────────
expect_rc 0 "--version" -- "$pitlane" --version
grep -qE '^pitlane [0-9]+\.[0-9]+\.[0-9]+$' "$tmp/out" && ok "--version prints the version" ||
  fail "--version printed: $(cat "$tmp/out")"
expect_rc 2 "no command is a usage error" -- "$pitlane"
expect_rc 2 "an unknown option is a usage error" -- "$pitlane" host --bogus
expect_rc 2 '--ns "" is a usage error' -- "$pitlane" host --ns ""
grep -q 'namespace is empty' "$tmp/err" && ok '--ns "" says why' || fail "--ns \"\": $(cat "$tmp/err")"
for cmd in stat emit cleanup demo; do
  extra=(); [[ $cmd == emit ]] && extra=(python.call.start)
  expect_rc 2 "$cmd --ns \"\" is a usage error" -- "$pitlane" "$cmd" --ns "" "${extra[@]}"
done
expect_rc 2 'ctl --ns "" is a usage error' -- "$pitlane" ctl --ns "" workers
expect_rc 2 "a malformed metric spec is a usage error" -- \
  "$pitlane" host --ns "$ns" --metrics 127.0.0.1:0 --metric 'gauge(x.y)' --duration 1
expect_rc 2 "an unknown --metric-naming is a usage error" -- \
  "$pitlane" host --ns "$ns" --metrics 127.0.0.1:0 --metric-naming camel --duration 1
expect_rc 1 "an unwritable --jsonl-file is a runtime failure" -- \
  "$pitlane" host --ns "$ns" --jsonl-file "$tmp/no/such/dir/x.jsonl" --duration 1
expect_rc 1 "a missing --catalog file is a runtime failure" -- \
  "$pitlane" host --ns "$ns" --catalog "$tmp/missing.txt" --duration 1
printf 'root app\nbogus line\n' >"$tmp/bad-catalog.txt"
expect_rc 2 "a malformed --catalog file is a usage error" -- \
  "$pitlane" host --ns "$ns" --catalog "$tmp/bad-catalog.txt" --duration 1
expect_rc 1 "an unreadable --grpc-token-file is a runtime failure" -- \
  "$pitlane" host --ns "$ns" --grpc-token-file "$tmp/missing-token" --duration 1
expect_rc 1 "a StatsD name that does not resolve is a runtime failure" -- \
  "$pitlane" host --ns "$ns" --statsd no-such-host.invalid:8125 --duration 1
PITLANE_RING_BYTES=3 expect_rc 2 "emit with a malformed PITLANE_RING_BYTES is a usage error" -- \
  "$pitlane" emit --ns "$ns" python.call.start
expect_rc 1 "emit without a host is a runtime failure" -- "$pitlane" emit --ns "$ns" python.call.start
expect_rc 2 "a malformed StatsD address is a usage error" -- \
  "$pitlane" host --ns "$ns" --statsd 999.1.1.1:8125 --duration 1
for bad in -1 abc 1000001; do
  expect_rc 2 "--spin $bad is a usage error" -- "$pitlane" host --ns "$ns" --spin "$bad" --duration 1
  grep -qxF "pitlane host: --spin: \"$bad\" is not an integer number of microseconds in [0, 1000000]" \
    "$tmp/err" && ok "--spin $bad says what it wants" || fail "--spin $bad: $(cat "$tmp/err")"
done
for bad in -5 abc 31536001; do
  expect_rc 2 "--departed-retention $bad is a usage error" -- \
    "$pitlane" host --ns "$ns" --departed-retention "$bad" --duration 1
  grep -qxF "pitlane host: --departed-retention: \"$bad\" is not a number of seconds in [0, 31536000]" \
    "$tmp/err" && ok "--departed-retention $bad says what it wants" ||
    fail "--departed-retention $bad: $(cat "$tmp/err")"
done
# OpenTelemetry flags are checked as strictly as the other exporters': the endpoint's port like
# every HOST:PORT flag, and --otlp-* only with --otlp (as --statsd-* with --statsd).
for bad in http://localhost:99999 grpc://127.0.0.1:0 http://localhost:port/v1; do
  expect_rc 2 "--otlp $bad is a usage error" -- \
    "$pitlane" host --ns "$ns" --no-admin --otlp "$bad" --duration 1
  grep -q -- "--otlp" "$tmp/err" && ok "--otlp $bad names the flag" || fail "--otlp $bad: $(cat "$tmp/err")"
done
for flag in --otlp-logs "--otlp-protocol grpc" "--otlp-compression gzip"; do
  # shellcheck disable=SC2086
  expect_rc 2 "$flag without --otlp is a usage error" -- \
    "$pitlane" host --ns "$ns" --no-admin $flag --duration 1
  grep -q -- "${flag%% *} requires --otlp" "$tmp/err" && ok "$flag without --otlp says so" ||
    fail "$flag without --otlp: $(cat "$tmp/err")"
done
OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:9 OTEL_EXPORTER_OTLP_COMPRESSION=gzip \
  expect_rc 0 "--otlp --otlp-logs with the endpoint from OTEL_EXPORTER_OTLP_ENDPOINT" -- \
  "$pitlane" host --ns "$ns" --no-admin --otlp --otlp-logs --duration 0.3
grep -q "OpenTelemetry export to http/protobuf http://127.0.0.1:9" "$tmp/out" &&
  ok "the environment's endpoint is used" || fail "OTEL_EXPORTER_OTLP_ENDPOINT: $(cat "$tmp/out")"
expect_rc 0 "--otlp http://HOST without a port takes the protocol's default" -- \
  "$pitlane" host --ns "$ns" --no-admin --otlp http://127.0.0.1 --otlp-protocol grpc --duration 0.3
expect_rc 2 "--spin with --busy-poll is a usage error" -- \
  "$pitlane" host --ns "$ns" --spin 10 --busy-poll --duration 1
# --spin reaches the host: with nothing to read, a host told to spin 1 s burns ~1 s of CPU
# before it sleeps; with the default 200 µs it sleeps at once (its CPU time, from getrusage).
host_cpu() {
  /usr/bin/python3 -c 'import resource, subprocess, sys
subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
r = resource.getrusage(resource.RUSAGE_CHILDREN)
print(r.ru_utime + r.ru_stime)' "$pitlane" host --ns "$ns" --no-admin --duration 2 "$@"
}
spun=$(host_cpu --spin 1000000) && slept=$(host_cpu) &&
  /usr/bin/python3 -c "import sys; sys.exit(0 if $spun >= 0.3 and $slept <= 0.15 else 1)" &&
  ok "--spin 1000000 spins before sleeping (${spun} s of CPU; default: ${slept} s)" ||
  fail "--spin: host CPU ${spun:-?} s with --spin 1000000, ${slept:-?} s with the default"

# ── catalog ───────────────────────────────────────────────────────────────────────────────────
expect_rc 0 "catalog --json" -- "$pitlane" catalog --json
/usr/bin/python3 - "$tmp/out" <<'EOF' && ok "catalog --json is one JSON document with units" || fail "catalog --json"
import json, sys
d = json.load(open(sys.argv[1]))
assert d["root"] == "snakepit" and len(d["events"]) > 11, d
units = {m["key"]: m["unit"] for m in d["measurement_keys"]}
assert units["duration"] == "nanosecond" and units["rss_bytes"] == "byte" and units["count"] is None
EOF
printf 'root app\nmeasurement duration nanosecond\nevent job.start worker start job.start\n' \
  >"$tmp/catalog.txt"
expect_rc 0 "catalog --catalog FILE --json" -- "$pitlane" catalog --catalog "$tmp/catalog.txt" --json
/usr/bin/python3 -c 'import json, sys; d = json.load(open(sys.argv[1])); assert d["root"] == "app" and [e["host_name"] for e in d["events"]] == ["app.job.start"], d' \
  "$tmp/out" && ok "catalog --catalog FILE --json shows the file's catalog" || fail "catalog --catalog: $(cat "$tmp/out")"
expect_rc 0 "catalog" -- "$pitlane" catalog
grep -qF "duration (nanosecond)" "$tmp/out" && grep -qF "rss_bytes (byte)" "$tmp/out" &&
  grep -qE '(^| )count( |$)' "$tmp/out" && ok "catalog lists the measurement keys with their units" ||
  fail "catalog text without units: $(grep -A3 'measurement keys' "$tmp/out")"
# Output that cannot be written is an error; a reader that has what it wanted is not.
full_stdout "catalog" -- "$pitlane" catalog
full_stdout "catalog --json" -- "$pitlane" catalog --json
full_stdout "--help" -- "$pitlane" --help
full_stdout "host --help" -- "$pitlane" host --help
full_stdout "--version" -- "$pitlane" --version
full_stdout "cleanup --dry-run" -- "$pitlane" cleanup --ns "$ns" --dry-run
reader_gone "catalog" -- "$pitlane" catalog
reader_gone "catalog --json" -- "$pitlane" catalog --json
reader_gone "--help-all" -- "$pitlane" --help-all
expect_rc 2 "catalog --catalog with a malformed file is a usage error" -- \
  "$pitlane" catalog --catalog "$tmp/bad-catalog.txt" --json
expect_rc 1 "catalog --catalog with a missing file is a runtime failure" -- \
  "$pitlane" catalog --catalog "$tmp/missing.txt" --json
"$pitlane" host --ns "$ns" --catalog "$tmp/catalog.txt" --jsonl --no-admin --duration 30 \
  >"$tmp/catalog.out" 2>"$tmp/catalog.err" &
host=$!; pids+=("$host")
wait_for 10 "host with --catalog starts" -- grep -q "Ctrl-C stops" "$tmp/catalog.err"
"$pitlane" emit --ns "$ns" job.start -m duration=5 >/dev/null 2>&1
wait_for 10 "an event of the custom catalog is delivered" -- grep -q '"name":"app.job.start"' "$tmp/catalog.out" &&
  ok "host --catalog FILE delivers the file's events"
kill -TERM "$host"; wait "$host"
# The emitting process above is dead and its ring may still be there: a host started now would
# report its termination as an event of its own, which would race the next test's first line.
"$pitlane" cleanup --ns "$ns" >/dev/null 2>&1

# ── a closed stdout pipe ──────────────────────────────────────────────────────────────────────
( for _ in $(seq 1 40); do
    "$pitlane" emit --ns "$ns" python.call.start -m system_time=1 >/dev/null 2>&1
    sleep 0.1
  done ) &
emitter=$!; pids+=("$emitter")
start=$SECONDS
timeout 30 "$pitlane" host --ns "$ns" --jsonl --no-admin 2>"$tmp/pipe.err" | head -1 >"$tmp/pipe.out"
rcs=("${PIPESTATUS[@]}")
kill "$emitter" 2>/dev/null; wait "$emitter" 2>/dev/null
# How many lines went out before `head` closed the pipe depends on when the next event came
# (an emitting process's own termination is one); the host must say the number it wrote.
said=$(sed -nE 's/.*stdout closed \(broken pipe\) after ([0-9]+) lines; stopping.*/\1/p' "$tmp/pipe.err")
written=$(sed -nE 's/.*jsonl → stdout: lines_written ([0-9]+),.*/\1/p' "$tmp/pipe.err" | tail -1)
if [[ ${rcs[0]} -eq 0 ]] && grep -q '"name":"snakepit' "$tmp/pipe.out" &&
   [[ -n "$said" && "$said" -ge 1 && "$said" == "$written" ]]; then
  ok "pitlane host --jsonl | head -1 stops after $said line(s), exit 0, in $((SECONDS - start)) s"
else
  fail "broken pipe: exit ${rcs[0]}; stderr: $(cat "$tmp/pipe.err")"
fi
grep -qE 'events not printed after stdout closed' "$tmp/pipe.err" && ok "the lost lines are counted" ||
  fail "no count of lost lines: $(cat "$tmp/pipe.err")"

# Summaries (no --jsonl) whose reader left: they stop, said once, and the host runs on (its
# exporters and workers do not depend on who reads its table).
mkfifo "$tmp/summary.fifo"
"$pitlane" host --ns "$ns" --no-admin --interval 0.2 >"$tmp/summary.fifo" 2>"$tmp/summary.err" &
host=$!; pids+=("$host")
head -1 <"$tmp/summary.fifo" >"$tmp/summary.out"
wait_for 10 "the host notices its stdout closed" -- grep -q 'no more summaries' "$tmp/summary.err"
sleep 0.5
if kill -0 "$host" 2>/dev/null && [[ $(grep -c 'no more summaries' "$tmp/summary.err") -eq 1 ]]; then
  ok "pitlane host | head -1 stops its summaries, says so once and runs on"
else
  fail "summaries on a closed stdout: $(cat "$tmp/summary.err")"
fi
kill -TERM "$host"; wait "$host"; rc=$?
[[ $rc -eq 0 ]] && ok "and SIGTERM still stops it, exit 0" || fail "SIGTERM after the pipe closed: exit $rc"

# stat --watch and the demo print in a loop until stopped: a reader that left stops them too.
start=$SECONDS
timeout 20 "$pitlane" stat --ns "$ns" --watch --json --interval 0.1 2>"$tmp/watch.err" |
  head -1 >/dev/null
rcs=("${PIPESTATUS[@]}")
if [[ ${rcs[0]} -eq 0 ]] && grep -q 'pitlane stat: stdout closed (broken pipe); stopping' "$tmp/watch.err"; then
  ok "pitlane stat --watch --json | head -1 stops, exit 0, in $((SECONDS - start)) s"
else
  fail "stat --watch | head -1: exit ${rcs[0]}; stderr: $(head -c 400 "$tmp/watch.err")"
fi
start=$SECONDS
timeout 60 "$pitlane" demo --ns "$ns-demo" --workers 1 --duration 30 2>"$tmp/demo.err" |
  head -1 >/dev/null
rcs=("${PIPESTATUS[@]}")
if [[ ${rcs[0]} -eq 0 ]] && ((SECONDS - start < 15)) &&
   grep -q 'pitlane demo: stdout closed (broken pipe); stopping the workers' "$tmp/demo.err"; then
  ok "pitlane demo | head -1 stops its workers, exit 0, in $((SECONDS - start)) s"
else
  fail "demo | head -1: exit ${rcs[0]} after $((SECONDS - start)) s; stderr: $(head -c 400 "$tmp/demo.err")"
fi

# ── SIGHUP reopens --jsonl-file; SIGTERM stops with the summary ───────────────────────────────
"$pitlane" host --ns "$ns-hup" --jsonl-file "$tmp/events.jsonl" --interval 0.2 >"$tmp/hup.out" 2>&1 &
host=$!; pids+=("$host")
wait_for 10 "host with --jsonl-file starts" -- grep -q "Ctrl-C stops" "$tmp/hup.out"
"$pitlane" emit --ns "$ns-hup" --id hup-1 python.call.start -m system_time=1 >/dev/null 2>&1
wait_for 10 "first line in the file" -- grep -q hup-1 "$tmp/events.jsonl"
mv "$tmp/events.jsonl" "$tmp/events.jsonl.1"
kill -HUP "$host"
wait_for 10 "SIGHUP acknowledged" -- grep -q "SIGHUP, reopening" "$tmp/hup.out"
"$pitlane" emit --ns "$ns-hup" --id hup-2 python.call.start -m system_time=2 >/dev/null 2>&1
if wait_for 10 "a new file after SIGHUP" -- grep -q hup-2 "$tmp/events.jsonl"; then
  ok "SIGHUP reopens --jsonl-file at its path"
fi
kill -0 "$host" 2>/dev/null && ok "the host runs on after SIGHUP" || fail "SIGHUP ended the host"
grep -q hup-2 "$tmp/events.jsonl.1" && fail "an event went to the rotated file after SIGHUP"
# Workers gone are one "(N departed)" row.
wait_for 10 "departed row" -- grep -qE '^  \(2 departed\) ' "$tmp/hup.out" &&
  ok "gone workers are summed into one departed row"
# stat --json: one document a script reads, with a live worker's ring in it.
"$pitlane" demo-worker --ns "$ns-hup" --id stat-json --duration 5 --rate 200 >/dev/null 2>&1 &
worker=$!; pids+=("$worker")
stat_json() {
  # The worker registers before its first event takes a ring: wait for a ring with an event.
  "$pitlane" stat --ns "$ns-hup" --json >"$tmp/stat.json" 2>"$tmp/stat.err" &&
    /usr/bin/python3 -c 'import json, sys
sys.exit(not any(r.get("worker_id") == "stat-json" and r.get("emitted", 0) > 0 for r in json.load(open(sys.argv[1]))["rings"]))' \
      "$tmp/stat.json"
}
if wait_for 10 "stat --json lists the worker's ring" -- stat_json; then
  /usr/bin/python3 - "$tmp/stat.json" "$ns-hup" "$host" <<'EOF' && ok "stat --json is one JSON document with the host and the rings" ||
import json, sys
d = json.load(open(sys.argv[1]))
assert d["namespace"] == sys.argv[2] and d["host"] == {"pid": int(sys.argv[3]), "alive": True}, d
ring = [r for r in d["rings"] if r.get("worker_id") == "stat-json"][0]
assert ring["alive"] and ring["emitted"] > 0 and ring["capacity"] > 0, ring
assert set(ring["dropped"]) == {"full", "too_large"} and "unknown_event" in ring["rejected"], ring
assert all(r["conserved"] for r in d["rings"] if "error" not in r), d["rings"]
EOF
    fail "stat --json: $(head -c 600 "$tmp/stat.json")"
fi
# Every command that prints, against a running host: a full stdout fails, a reader that left
# does not.
full_stdout "stat --json" -- "$pitlane" stat --ns "$ns-hup" --json
full_stdout "stat" -- "$pitlane" stat --ns "$ns-hup"
full_stdout "ctl workers" -- "$pitlane" ctl --ns "$ns-hup" workers
full_stdout "ctl workers --json" -- "$pitlane" ctl --ns "$ns-hup" workers --json
full_stdout "emit" -- "$pitlane" emit --ns "$ns-hup" --id full-1 python.call.start
reader_gone "stat --json" -- "$pitlane" stat --ns "$ns-hup" --json
reader_gone "ctl workers" -- "$pitlane" ctl --ns "$ns-hup" workers
reader_gone "emit" -- "$pitlane" emit --ns "$ns-hup" --id gone-1 python.call.start
kill -TERM "$worker"; wait "$worker" 2>/dev/null
kill -TERM "$host"; wait "$host"; rc=$?
if [[ $rc -eq 0 ]] && grep -q "SIGTERM, stopping" "$tmp/hup.out" &&
   tail -5 "$tmp/hup.out" | grep -q "reopens 1, reopen_errors 0"; then
  ok "SIGTERM stops with the summary (exit 0)"
else
  fail "SIGTERM: exit $rc; $(tail -5 "$tmp/hup.out")"
fi
[[ ! -e "/tmp/pitlane.$ns-hup.admin.sock" ]] && ok "a host stopped by SIGTERM removes its admin socket" ||
  fail "the admin socket outlived SIGTERM"

# ── cleanup removes the admin socket of a dead host ───────────────────────────────────────────
sock="/tmp/pitlane.$ns.admin.sock"
"$pitlane" host --ns "$ns" >"$tmp/dead.out" 2>&1 &
host=$!; pids+=("$host")
wait_for 10 "admin socket" -- test -S "$sock"
expect_rc 0 "cleanup keeps a live host's socket" -- "$pitlane" cleanup --ns "$ns"
test -S "$sock" && ok "a served admin socket is kept" || fail "cleanup removed a served socket"
# The summary counts what the lines before it list: the registry and the socket kept.
kept_lines=$(grep -c '^kept ' "$tmp/out")
kept_said=$(sed -nE 's/.*, kept ([0-9]+), in namespace.*/\1/p' "$tmp/out")
[[ $kept_lines -eq 2 && "$kept_said" == "$kept_lines" ]] &&
  ok "cleanup's summary counts the $kept_lines kept items it lists" ||
  fail "cleanup lists $kept_lines kept, says ${kept_said:-?}: $(cat "$tmp/out")"
kill -KILL "$host"; wait "$host" 2>/dev/null
expect_rc 0 "cleanup --dry-run" -- "$pitlane" cleanup --ns "$ns" --dry-run
grep -q "would remove $sock: admin socket nobody serves" "$tmp/out" && test -S "$sock" &&
  ok "cleanup --dry-run names the stale socket and keeps it" || fail "dry run: $(cat "$tmp/out")"
expect_rc 0 "cleanup" -- "$pitlane" cleanup --ns "$ns"
if grep -q "removed $sock" "$tmp/out" && ! test -e "$sock"; then
  ok "cleanup removes a dead host's admin socket"
else
  fail "cleanup: $(cat "$tmp/out")"
fi
grep -qE "^removed [0-9]+ stale segments? \([0-9]+ KiB\) and 1 admin socket, kept 0, in namespace" "$tmp/out" &&
  ok "cleanup's summary counts the socket it removed" || fail "cleanup's summary: $(cat "$tmp/out")"

# ── emit refused the namespace's segments: says so, not "no host" ─────────────────────────────
# A host of root's (segments 0600) and `pitlane emit` as nobody: the host runs, the emit cannot
# open its registry, and its last word must be that, with the path, not "no host is running".
if [[ $(id -u) -eq 0 ]] && command -v runuser >/dev/null &&
   runuser -u nobody -- "$pitlane" --version >/dev/null 2>&1; then
  "$pitlane" host --ns "$ns-perm" --no-admin >"$tmp/perm.out" 2>&1 &
  host=$!; pids+=("$host")
  wait_for 10 "host for the permission check" -- grep -q "Ctrl-C stops" "$tmp/perm.out"
  runuser -u nobody -- "$pitlane" emit --ns "$ns-perm" python.call.stop >"$tmp/out" 2>"$tmp/err"
  rc=$?
  last=$(tail -1 "$tmp/err")
  if [[ $rc -eq 1 ]] && [[ $last == "pitlane emit: "*"/dev/shm/pitlane.$ns-perm.registry"*"Permission denied"* ]] &&
     ! grep -q "no host is running" "$tmp/err"; then
    ok "emit as another uid names the registry it may not open (exit 1)"
  else
    fail "emit as another uid: exit $rc; stderr: $(cat "$tmp/err")"
  fi
  kill -TERM "$host"; wait "$host"
else
  echo "skipped: emit as another uid (needs root and runuser)"
fi

# ── gRPC token from a file or the environment, never in argv ──────────────────────────────────
# grpc_host NAME ENV_TOKEN [FLAG...]: a host serving gRPC dial-in with $PITLANE_GRPC_TOKEN set
# to ENV_TOKEN ("" = none), its events in $tmp/NAME.jsonl; sets host and port.
grpc_host() {
  local name="$1" env_token="$2"
  shift 2
  PITLANE_GRPC_TOKEN="$env_token" "$pitlane" host --ns "$ns" --no-admin \
    --grpc-listen 127.0.0.1:0 --jsonl-file "$tmp/$name.jsonl" "$@" >"$tmp/$name.out" 2>&1 &
  host=$!; pids+=("$host")
  wait_for 10 "gRPC host $name" -- grep -q "gRPC dial-in for remote workers on" "$tmp/$name.out"
  port=$(sed -n 's/.*gRPC dial-in for remote workers on 127.0.0.1:\([0-9]*\).*/\1/p' "$tmp/$name.out")
}
# grpc_emit ID TOKEN: one event from worker ID over gRPC to the host on $port, with TOKEN.
grpc_emit() {
  PITLANE_TRANSPORT=grpc PITLANE_GRPC_TARGET="127.0.0.1:$port" PITLANE_GRPC_TOKEN="$2" \
    "$pitlane" emit --ns "$ns-b" --id "$1" python.call.start -m system_time=1 >/dev/null 2>&1
}
# served NAME ID WHAT: the host NAME delivered worker ID's event (waits for it).
served() {
  wait_for 10 "$3" -- grep -q "\"worker_id\":\"$2\"" "$tmp/$1.jsonl" && ok "$3"
}
# refused NAME ID WHAT: the host NAME delivered nothing of worker ID (after served waited).
refused() {
  grep -q "\"worker_id\":\"$2\"" "$tmp/$1.jsonl" && fail "served, yet: $3" || ok "$3"
}

secret="s3cret-$$-token"
printf '%s\n' "$secret" >"$tmp/token"
grpc_host grpc "" --grpc-token-file "$tmp/token"
if tr '\0' ' ' <"/proc/$host/cmdline" | grep -q "$secret"; then fail "the token is in argv"; else
  ok "the token is not in the host's argv"
fi
grpc_emit grpc-good "$secret"
grpc_emit grpc-bad wrong
served grpc grpc-good "the token from --grpc-token-file admits a worker"
refused grpc grpc-bad "a wrong token is refused"
kill -TERM "$host"; wait "$host"

# $PITLANE_GRPC_TOKEN (the unit's env file) when no flag gives one; a flag wins over it.
# SIGINT (Ctrl-C) stops with the summary as SIGTERM does.
grpc_host grpc-env "$secret"
grpc_emit env-good "$secret"
grpc_emit env-none ""
served grpc-env env-good "the token from \$PITLANE_GRPC_TOKEN admits a worker"
refused grpc-env env-none "a worker without the environment's token is refused"
kill -INT "$host"; wait "$host"; rc=$?
if [[ $rc -eq 0 ]] && grep -q "SIGINT, stopping" "$tmp/grpc-env.out" &&
   tail -3 "$tmp/grpc-env.out" | grep -qE '^t=[0-9.]+s namespace'; then
  ok "SIGINT stops with the summary (exit 0)"
else
  fail "SIGINT: exit $rc; $(tail -5 "$tmp/grpc-env.out")"
fi
grpc_host grpc-both from-env --grpc-token-file "$tmp/token"
grpc_emit both-file "$secret"
grpc_emit both-env from-env
served grpc-both both-file "--grpc-token-file wins over \$PITLANE_GRPC_TOKEN"
refused grpc-both both-env "the environment's token does not admit a worker then"
kill -TERM "$host"; wait "$host"

# ── another uid's namespace ───────────────────────────────────────────────────────────────────
# `pitlane stat` as nobody on a namespace of root's (README "Troubleshooting"): refused, naming
# the file, its owner and mode, and the fix.
nobody=(setpriv --reuid 65534 --regid 65534 --clear-groups)
if [[ $(id -u) -ne 0 ]] || ! command -v setpriv >/dev/null; then
  echo "skipped: stat as another uid (needs root and setpriv)"
elif ! "${nobody[@]}" "$pitlane" --version >/dev/null 2>&1; then
  echo "skipped: stat as another uid (uid 65534 cannot run $pitlane)"
else
  "$pitlane" host --ns "$ns-uid" --no-admin --duration 30 >"$tmp/uid.out" 2>&1 &
  host=$!
  pids+=("$host")
  if wait_for 10 "the host of $ns-uid" -- test -e "/dev/shm/pitlane.$ns-uid.registry"; then
    expect_rc 1 "stat as uid 65534 on root's namespace is a runtime failure" -- \
      "${nobody[@]}" "$pitlane" stat --ns "$ns-uid"
    for want in "PERMISSION_DENIED: cannot open /dev/shm/pitlane.$ns-uid.registry" \
                "(owner root (uid 0), mode 0600, a regular file) as uid 65534" \
                "run as uid 0 (root), the owner of this namespace's segments" \
                "or choose another namespace (--ns / PITLANE_NAMESPACE)"; do
      grep -qF -- "$want" "$tmp/err" && ok "stat as uid 65534 says \"$want\"" ||
        fail "stat as uid 65534: no \"$want\" in: $(cat "$tmp/err")"
    done
  fi
  kill -TERM "$host"; wait "$host"
fi

# Started with its standard streams closed (a supervisor, `>&-`): whatever the command opens
# must not take their place, or its output lands there (once, the host's summaries went into
# the registry and the demo's workers refused it as "not a pitlane registry").
"$pitlane" host --ns "$ns-closed" --duration 1 --interval 0.2 <&- >&- 2>&-
rc=$?
[[ $rc -eq 0 ]] && ok "host with 0-2 closed runs and exits 0" || fail "host with 0-2 closed: exit $rc"
[[ -z "$(ls /dev/shm | grep -F "pitlane.$ns-closed.")" ]] &&
  ok "host with 0-2 closed leaves nothing in /dev/shm" ||
  fail "host with 0-2 closed left: $(ls /dev/shm | grep -F "pitlane.$ns-closed.")"
"$pitlane" demo --ns "$ns-closed" --workers 2 --duration 1 >&- 2>"$tmp/closed.err"
rc=$?
[[ $rc -eq 0 ]] && ok "demo with stdout closed runs and exits 0" ||
  fail "demo with stdout closed: exit $rc: $(head -c 400 "$tmp/closed.err")"

if ((fails > 0)); then
  echo "$fails check(s) failed"
  exit 1
fi
echo "all checks passed"
