"""Shared pieces of the interop drivers (tests/interop/*.py).

- `parse_args`: the command line every driver takes (--pitlane, --bindings) and the import path
  of the protoc-generated bindings (telemetry_pb2, snakepit_compat_pb2 and their *_grpc modules).
- `IngestStream`: a dial-in stream as an independent worker opens it, every reply recorded.
- `HostProcess`: a `pitlane host` child whose stdout (JSON lines, one per delivered event) and
  stderr (status lines) are collected by reader threads, stopped with SIGTERM (SIGKILL if it
  does not exit) whatever the outcome of the test.
- `wait_for`: polls a condition until a deadline; every synchronisation in the drivers goes
  through it, so a loaded machine only makes a test slower, never wrong.
- `check` / `eventually` / `main`: each passed check prints one "ok:" line; the first failed one
  prints "FAIL:" with the host's recent status lines and exits 1.
"""

import argparse
import collections
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import traceback

# The peers talk to each other directly: a proxy from the environment must not intercept
# loopback gRPC (grpc's C core honours these variables).
PROXY_VARIABLES = ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "grpc_proxy",
                   "no_grpc_proxy")
CHANNEL_OPTIONS = [("grpc.enable_http_proxy", 0)]

for _name in PROXY_VARIABLES:
    os.environ.pop(_name, None)


class CheckFailed(Exception):
    pass


_checks_passed = 0


def check(condition, what, detail=None):
    """Records one check: prints "ok: what", or raises CheckFailed with `detail`."""
    global _checks_passed
    if not condition:
        message = what if detail is None else f"{what}\n  {detail}"
        raise CheckFailed(message)
    _checks_passed += 1
    print(f"ok: {what}", flush=True)


def wait_for(predicate, timeout, what, still_running=None):
    """Polls `predicate` every 20 ms until it returns a true value (returned) or `timeout`
    seconds pass (CheckFailed naming `what`). `still_running`, if given, is polled too: once it
    returns false the wait fails at once instead of running into the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if still_running is not None and not still_running():
            raise CheckFailed(f"{what}: gave up, the process it depends on has exited")
        if time.monotonic() >= deadline:
            raise CheckFailed(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.02)


def eventually(predicate, timeout, what, still_running=None):
    """A check that holds once `predicate` does, within `timeout` seconds."""
    value = wait_for(predicate, timeout, what, still_running)
    check(True, what)
    return value


def parse_args(description):
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--pitlane", required=True, help="the pitlane executable")
    parser.add_argument("--bindings", required=True,
                        help="directory of the protoc-generated Python bindings")
    args = parser.parse_args()
    if not os.access(args.pitlane, os.X_OK):
        parser.error(f"{args.pitlane} is not an executable")
    if not os.path.exists(os.path.join(args.bindings, "telemetry_pb2.py")):
        parser.error(f"no generated bindings in {args.bindings}: build the pitlane_interop_bindings target")
    sys.path.insert(0, args.bindings)
    return args


def unique_namespace(tag):
    """A namespace of this process alone, so parallel ctest runs never share segments."""
    return f"interop-{tag}-{os.getpid()}"


def child_env(namespace):
    env = {k: v for k, v in os.environ.items() if k not in PROXY_VARIABLES}
    env["PITLANE_NAMESPACE"] = namespace
    for key in ("PITLANE_TRANSPORT", "PITLANE_GRPC_TARGET", "PITLANE_GRPC_LISTEN",
                "PITLANE_GRPC_TOKEN", "PITLANE_WORKER_ID"):
        env.pop(key, None)
    return env


class HostProcess:
    """`pitlane host --ns NAMESPACE --jsonl ARGS...` with its output collected."""

    STATUS_TAIL = 40

    def __init__(self, pitlane, namespace, args):
        self.pitlane = pitlane
        self.namespace = namespace
        self._lock = threading.Lock()
        self._events = []       # parsed JSON lines, in order
        self._bad_lines = []    # stdout lines that are not JSON objects
        self._status = []       # stderr lines
        command = [pitlane, "host", "--ns", namespace, "--jsonl", *args]
        print("running: " + " ".join(command), flush=True)
        self.proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=child_env(namespace),
                                     text=True, encoding="utf-8", errors="replace")
        self._readers = [
            threading.Thread(target=self._read_stdout, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for t in self._readers:
            t.start()

    def _read_stdout(self):
        for line in self.proc.stdout:
            line = line.rstrip("\n")
            try:
                event = json.loads(line)
                ok = isinstance(event, dict)
            except ValueError:
                ok = False
            with self._lock:
                if ok:
                    self._events.append(event)
                else:
                    self._bad_lines.append(line)

    def _read_stderr(self):
        for line in self.proc.stderr:
            with self._lock:
                self._status.append(line.rstrip("\n"))

    def running(self):
        return self.proc.poll() is None

    def events(self):
        with self._lock:
            return list(self._events)

    def bad_lines(self):
        with self._lock:
            return list(self._bad_lines)

    def status_lines(self):
        with self._lock:
            return list(self._status)

    def wait_status(self, pattern, timeout, what):
        """The first match of `pattern` on a status line, waiting up to `timeout` seconds."""
        regex = re.compile(pattern)

        def find():
            for line in self.status_lines():
                m = regex.search(line)
                if m:
                    return m
            return None

        return wait_for(find, timeout, what, still_running=self.running)

    def grpc_port(self, timeout=20):
        m = self.wait_status(r"gRPC dial-in for remote workers on (\S+):(\d+)", timeout,
                             "the host's 'gRPC dial-in for remote workers on HOST:PORT' line")
        return int(m.group(2))

    def wait_events(self, predicate, count, timeout, what):
        """A check: at least `count` JSON lines satisfy `predicate` within `timeout` seconds.
        Returns every line that does."""
        def enough():
            hits = [e for e in self.events() if predicate(e)]
            return hits if len(hits) >= count else None

        return eventually(enough, timeout, what, still_running=self.running)

    def stop(self, timeout=15):
        """SIGTERM, then SIGKILL after `timeout` s; joins the readers. Returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for t in self._readers:
            t.join(timeout=5)
        return self.proc.returncode

    def final_counts(self):
        """(delivered, rejected) from the last summary line the host printed."""
        regex = re.compile(r"delivered (\d+), rejected (\d+)")
        for line in reversed(self.status_lines()):
            m = regex.search(line)
            if m:
                return int(m.group(1)), int(m.group(2))
        return None

    def cleanup_segments(self):
        """Removes whatever a failed run left of this namespace in /dev/shm."""
        subprocess.run([self.pitlane, "cleanup", "--ns", self.namespace],
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=30, check=False)

    def describe(self):
        lines = self.status_lines()[-self.STATUS_TAIL:]
        out = [f"--- pitlane host (namespace {self.namespace}) status lines, last {len(lines)}:"]
        out += ["  " + s for s in lines]
        bad = self.bad_lines()
        if bad:
            out.append(f"--- stdout lines that are not JSON objects: {len(bad)}, first: {bad[0]!r}")
        return "\n".join(out)


StreamState = collections.namedtuple(
    "StreamState", "replies controls initial_complete_at acked error finished")


class IngestStream:
    """One dial-in stream (pitlane.v1.TelemetryIngest/StreamTelemetry), opened the way an
    independent worker would: requests come from a queue that grpcio's sending thread drains,
    replies are read in order on a thread of their own."""

    def __init__(self, grpc, pb_grpc, channel, metadata=(), first=None):
        """`first`: a TelemetryUpstream to queue before the call starts (the hello)."""
        self._grpc = grpc
        self._requests = queue.Queue()
        self._cv = threading.Condition()
        self._replies = []     # every TelemetryDownstream, in order
        self._error = None     # the grpc.RpcError the call ended with
        self._finished = False
        if first is not None:
            self._requests.put(first)
        ingest = pb_grpc.TelemetryIngestStub(channel)
        self._call = ingest.StreamTelemetry(self._request_iterator(), metadata=list(metadata))
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _request_iterator(self):
        while True:
            message = self._requests.get()
            if message is None:
                return
            yield message

    def _read(self):
        try:
            for reply in self._call:
                with self._cv:
                    self._replies.append(reply)
        except self._grpc.RpcError as e:
            with self._cv:
                self._error = e
        finally:
            with self._cv:
                self._finished = True

    def send(self, message):
        self._requests.put(message)

    def close_send(self):
        self._requests.put(None)

    def snapshot(self):
        """StreamState: the replies; the TelemetryControl messages among them; how many of those
        had arrived when initial_state_complete did (None: not yet); the highest ack; how the
        call ended."""
        with self._cv:
            replies, error, finished = list(self._replies), self._error, self._finished
        controls, complete_at, acked = [], None, 0
        for r in replies:
            if r.HasField("control"):
                controls.append(r.control)
            if r.initial_state_complete and complete_at is None:
                complete_at = len(controls)
            acked = max(acked, r.acked_sequence)
        return StreamState(replies, controls, complete_at, acked, error, finished)

    def wait_finished(self, what, timeout=20):
        wait_for(lambda: self.snapshot().finished, timeout, what)
        return self.snapshot().error

    def settled(self):
        """The initial control state is complete, or the call has ended."""
        state = self.snapshot()
        return state.initial_complete_at is not None or state.finished

    def code(self):
        error = self.snapshot().error
        return None if error is None else error.code()


def worker_events(events, worker_id):
    """The JSON lines of events a worker sent (the host's own events about it, transport "host",
    left out)."""
    return [e for e in events if e.get("worker_id") == worker_id and e.get("transport") != "host"]


def main(body):
    """Runs `body(hosts)`, which appends every HostProcess it starts to `hosts` (each is stopped
    and its namespace cleaned up whatever happens), and exits 0 when every check passed, 1 on
    the first failure."""
    hosts = []
    status = 0
    try:
        body(hosts)
    except CheckFailed as e:
        print(f"FAIL: {e}", flush=True)
        status = 1
    except Exception:  # a driver bug or an unexpected gRPC error: report it as a failure
        print("FAIL: unexpected error\n" + traceback.format_exc(), flush=True)
        status = 1
    finally:
        for h in hosts:
            rc = h.stop()
            if status == 1:
                print(h.describe(), flush=True)
                print(f"--- pitlane host exit code {rc}", flush=True)
            h.cleanup_segments()
    if status == 0:
        print(f"{_checks_passed} checks passed", flush=True)
    sys.exit(status)
