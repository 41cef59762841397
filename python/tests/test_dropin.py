"""What a Snakepit pool needs from pitlane beyond the API (issue "Drop-in for Snakepit users"):
no lost or falsely acknowledged events, and a worker id per process. Each test runs real
processes against a real host."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import unittest

from pitlane import telemetry

from pitlane_testing import (TIMEOUT, HostProcess, HostTestCase, remove_segments, ring_totals,
                             unique_namespace)

START = "snakepit.python.call.start"
PITLANE = os.path.join(os.environ["PITLANE_PY_BUILD_DIR"], "cli", "pitlane")


def free_port() -> int:
    """A port nothing listens on (bound and released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PITLANE_GRPC", "PITLANE_TRANSPORT", "PITLANE_WORKER_ID",
                                "SNAKEPIT_TELEMETRY"))}
    env.update(extra)
    return env


class HostCase(unittest.TestCase):
    def start_host(self, grpc: bool = False) -> HostProcess:
        ns = unique_namespace()
        host = HostProcess(ns, grpc_listen="127.0.0.1:0" if grpc else None)
        self.addCleanup(remove_segments, ns)
        self.addCleanup(host.close)
        return host


SPAWN = r"""
import json, multiprocessing, os, sys
from pitlane import telemetry

def child(queue):
    telemetry.emit("python.call.start", {"system_time": 2}, {"command": "child"})
    queue.put(telemetry.shutdown()["worker_id"])

if __name__ == "__main__":
    telemetry.emit("python.call.start", {"system_time": 1}, {"command": "parent"})
    ctx = multiprocessing.get_context(sys.argv[1])
    queue = ctx.Queue()
    proc = ctx.Process(target=child, args=(queue,))
    proc.start()
    child_id = queue.get(timeout=30)
    proc.join(30)
    print(json.dumps({"parent": telemetry.shutdown()["worker_id"], "child": child_id,
                      "child_pid": proc.pid}))
"""


class SpawnedChildTest(HostCase):
    def test_spawn_and_forkserver_children_get_their_own_worker_id(self) -> None:
        for method in ("spawn", "forkserver"):
            with self.subTest(method=method):
                host = self.start_host()
                script = os.path.join(self.tmpdir(), "spawn_main.py")
                with open(script, "w") as f:
                    f.write(SPAWN)
                out = subprocess.run(
                    [sys.executable, script, method], capture_output=True, text=True,
                    timeout=TIMEOUT * 2,
                    env=clean_env(PITLANE_NAMESPACE=host.ns, PITLANE_WORKER_ID="pool-w1"))
                self.assertEqual(out.returncode, 0, out.stderr)
                ids = json.loads(out.stdout)
                self.assertEqual(ids["parent"], "pool-w1")
                self.assertEqual(ids["child"], f"pool-w1-{ids['child_pid']}")
                events = host.wait_count(START, 2)
                by_command = {e["metadata"]["command"]: e["worker_id"] for e in events}
                self.assertEqual(by_command, {"parent": "pool-w1", "child": ids["child"]})

    def tmpdir(self) -> str:
        import tempfile
        d = tempfile.TemporaryDirectory()
        self.addCleanup(d.cleanup)
        return d.name


@unittest.skipUnless(os.path.exists(PITLANE), "the pitlane CLI is not built")
class EmitCommandTest(HostCase):
    def emit(self, env: dict) -> subprocess.CompletedProcess:
        return subprocess.run([PITLANE, "emit", "--ns", env["PITLANE_NAMESPACE"],
                               "python.call.start", "-m", "system_time=1"],
                              capture_output=True, text=True, timeout=TIMEOUT * 2, env=env)

    def test_emit_over_grpc_with_no_host_listening_fails_and_never_says_ok(self) -> None:
        ns = unique_namespace()
        self.addCleanup(remove_segments, ns)
        out = self.emit(clean_env(PITLANE_NAMESPACE=ns, PITLANE_TRANSPORT="grpc",
                                  PITLANE_GRPC_TARGET=f"127.0.0.1:{free_port()}"))
        self.assertEqual(out.returncode, 1, out)
        self.assertIn("not_delivered", out.stdout)
        self.assertNotIn(": ok", out.stdout)
        self.assertIn("the event was not delivered", out.stderr)

    def test_emit_over_grpc_to_a_listening_host_is_delivered(self) -> None:
        host = self.start_host(grpc=True)
        out = self.emit(clean_env(PITLANE_NAMESPACE=unique_namespace(), PITLANE_TRANSPORT="grpc",
                                  PITLANE_GRPC_TARGET=f"127.0.0.1:{host.grpc_port}"))
        self.assertEqual(out.returncode, 0, out)
        self.assertIn(": ok", out.stdout)
        self.assertEqual(host.wait_count(START, 1)[0]["transport"], "grpc")


class BurstTest(HostTestCase):
    quiet_host = True

    def test_ten_thousand_event_burst_from_one_thread_is_not_dropped(self) -> None:
        # Python's default ring (4 MiB, defaults.h) holds the whole burst, whether or not the
        # host runs during it.
        self.assertNotIn("PITLANE_RING_BYTES", os.environ)
        m = {"duration": 1500, "response_size": 256, "latency_ms": 1.5}
        md = {"command": "predict", "result": "ok", "session_id": "s-1"}
        outcomes = {telemetry.emit("python.call.stop", m, md, "0123456789abcdef0123456789a")
                    for _ in range(10_000)}
        self.assertEqual(outcomes, {"ok"})
        s = telemetry.stats()
        self.assertEqual((s["emitted"], s["published"]), (10_000, 10_000))
        self.host.wait_stats(lambda h: ring_totals(h)["delivered"] == 10_000)


if __name__ == "__main__":
    unittest.main()
