"""Helpers shared by the Python tests: a host process per test (pitlane_py_test_host, which
prints delivered events and stats as JSON lines) in a namespace of the test's own."""

from __future__ import annotations

import glob
import itertools
import json
import os
import queue
import subprocess
import threading
import time
import unittest
from typing import Callable, List, Optional

from pitlane import telemetry

_counter = itertools.count()

TIMEOUT = 15.0


def unique_namespace() -> str:
    """A namespace of this process and call: tests running in parallel never share one."""
    return f"py{os.getpid()}x{next(_counter)}"


def remove_segments(ns: str) -> None:
    for path in glob.glob(f"/dev/shm/pitlane.{ns}.*"):
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


class HostProcess:
    """pitlane_py_test_host for namespace `ns`, with its output parsed on a reader thread."""

    def __init__(self, ns: str, quiet: bool = False, grpc_listen: Optional[str] = None) -> None:
        exe = os.environ["PITLANE_PY_TEST_HOST"]
        args = [exe, "--ns", ns] + (["--quiet"] if quiet else [])
        if grpc_listen:
            args += ["--grpc-listen", grpc_listen]
        self.ns = ns
        self.proc = subprocess.Popen(
            args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, errors="replace"
        )
        self._events: List[dict] = []
        self._cond = threading.Condition()
        self._replies: "queue.Queue[dict]" = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        ready = self._reply(TIMEOUT)
        if ready.get("type") != "ready":
            raise AssertionError(f"host did not start: {ready}")
        self.pid = ready["pid"]
        self.grpc_port = ready.get("grpc_port", 0)
        self.final: Optional[dict] = None

    def _read(self) -> None:
        for line in self.proc.stdout:
            msg = json.loads(line)
            if msg["type"] == "event":
                with self._cond:
                    self._events.append(msg)
                    self._cond.notify_all()
            else:
                self._replies.put(msg)
        self._replies.put({"type": "eof"})

    def _reply(self, timeout: float) -> dict:
        try:
            return self._replies.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no answer from the host within {timeout} s") from None

    def command(self, line: str) -> dict:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self._reply(TIMEOUT)

    def stats(self) -> dict:
        return self.command("stats")

    def control(self, line: str) -> None:
        reply = self.command(line)
        if reply["type"] != "ok":
            raise AssertionError(f"{line!r}: {reply}")

    def events(self, name: Optional[str] = None) -> List[dict]:
        with self._cond:
            return [e for e in self._events if name is None or e["name"] == name]

    def wait_events(
        self, predicate: Callable[[List[dict]], bool], timeout: float = TIMEOUT
    ) -> List[dict]:
        """Waits until predicate(all events so far) holds; returns the events."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self._events):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"events not seen within {timeout} s; got {len(self._events)}: "
                        f"{self._events[-5:]}"
                    )
                self._cond.wait(left)
            return list(self._events)

    def wait_count(self, name: str, count: int, timeout: float = TIMEOUT) -> List[dict]:
        """Waits for `count` events named `name`; returns them."""
        self.wait_events(lambda evs: sum(e["name"] == name for e in evs) >= count, timeout)
        return self.events(name)

    def wait_stats(self, predicate: Callable[[dict], bool], timeout: float = TIMEOUT) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            s = self.stats()
            if predicate(s):
                return s
            if time.monotonic() > deadline:
                raise AssertionError(f"host stats never matched within {timeout} s: {s}")
            time.sleep(0.02)

    def close(self) -> dict:
        """Ends the host (end of stdin): it drains, prints its final stats and exits."""
        if self.final is None:
            try:
                self.proc.stdin.close()
            except BrokenPipeError:
                pass
            while True:
                msg = self._reply(TIMEOUT)
                if msg["type"] in ("eof",) or msg.get("final"):
                    self.final = msg
                    break
            self.proc.wait(timeout=TIMEOUT)
            self._reader.join(TIMEOUT)
            self.proc.stdout.close()
        return self.final


def ring_totals(stats: dict, pid: Optional[int] = None) -> dict:
    """Sums of the rings' counters in a host stats line (of process `pid` if given)."""
    keys = (
        "emitted", "published", "delivered", "dropped_full", "dropped_too_large",
        "suppressed_disabled", "suppressed_sampled", "suppressed_filtered",
    )
    total = {k: 0 for k in keys}
    total["rejected"] = {}
    for ring in stats["rings"]:
        if pid is not None and ring["pid"] != pid:
            continue
        for k in keys:
            total[k] += ring[k]
        for reason, n in ring["rejected"].items():
            total["rejected"][reason] = total["rejected"].get(reason, 0) + n
    return total


def worker_conserved(s: dict) -> bool:
    """emitted = suppressed + dropped + published, from telemetry.stats()."""
    return s["emitted"] == sum(s["suppressed"].values()) + sum(s["dropped"].values()) + s["published"]


class HostTestCase(unittest.TestCase):
    """Each test: its own namespace, a host in it, and the process's worker started there."""

    quiet_host = False

    def setUp(self) -> None:
        telemetry.shutdown()
        self.ns = unique_namespace()
        self.addCleanup(remove_segments, self.ns)
        self.host = HostProcess(self.ns, quiet=self.quiet_host)
        self.addCleanup(self._stop_host)
        self.worker_id = f"pyw-{self.ns}"
        info = telemetry.start(namespace=self.ns, worker_id=self.worker_id, attach_wait=TIMEOUT)
        self.assertTrue(info["attached"], info)
        self.addCleanup(telemetry.shutdown)

    def _stop_host(self) -> None:
        telemetry.shutdown()
        self.host.close()
        if self.host.proc.poll() is None:
            self.host.proc.kill()
            self.host.proc.wait()

    def assertConserved(self) -> None:
        s = telemetry.stats()
        self.assertTrue(worker_conserved(s), s)
