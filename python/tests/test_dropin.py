"""What a Snakepit pool needs from pitlane beyond the API (issue "Drop-in for Snakepit users"):
no lost or falsely acknowledged events, and a worker id per process. Each test runs real
processes against a real host."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import unittest
from unittest import mock

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

    def test_a_malformed_grpc_address_is_a_usage_error(self) -> None:
        for variable, address, why in (("PITLANE_GRPC_TARGET", "noport", "no port"),
                                       ("PITLANE_GRPC_TARGET", "127.0.0.1:0", "cannot be dialed"),
                                       ("PITLANE_GRPC_LISTEN", "127.0.0.1:470400", "0-65535")):
            with self.subTest(variable=variable, address=address):
                ns = unique_namespace()
                self.addCleanup(remove_segments, ns)
                out = self.emit(clean_env(PITLANE_NAMESPACE=ns, PITLANE_TRANSPORT="grpc",
                                          **{variable: address}))
                self.assertEqual(out.returncode, 2, out)
                self.assertIn(variable, out.stderr)
                self.assertIn(why, out.stderr)
                # The same rule for a Python worker: start() raises.
                with mock.patch.dict(os.environ, {variable: address}), \
                        self.assertRaisesRegex(ValueError, variable):
                    telemetry.start(namespace=ns, worker_id="bad-address", transport="grpc")

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


class ManyThreadsTest(unittest.TestCase):
    def test_threads_beyond_the_ring_cap_share_a_ring_and_lose_nothing(self) -> None:
        # 70 threads alive at once: 64 get rings of their own (the default cap), the other six
        # share one more. Small rings keep the 65 mappings cheap.
        telemetry.shutdown()
        ns = unique_namespace()
        self.addCleanup(remove_segments, ns)
        host = HostProcess(ns, quiet=True)
        self.addCleanup(host.close)
        self.addCleanup(telemetry.shutdown)
        with mock.patch.dict(os.environ, {"PITLANE_RING_BYTES": "65536"}):
            self.assertTrue(telemetry.start(namespace=ns, worker_id="many",
                                            attach_wait=TIMEOUT)["attached"])
        threads, each = 70, 50
        alive = threading.Barrier(threads)
        outcomes: list = []

        def emitter(t: int) -> None:
            alive.wait(TIMEOUT)
            mine = [telemetry.emit("python.memory.sampled", {"rss_bytes": t * 1000 + i})
                    for i in range(each)]
            alive.wait(TIMEOUT)  # nobody exits (and frees a ring) before all have emitted
            outcomes.extend(mine)

        workers = [threading.Thread(target=emitter, args=(t,)) for t in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(TIMEOUT)
        self.assertEqual(outcomes, ["ok"] * (threads * each))
        s = telemetry.stats()
        self.assertEqual(s["dropped"]["no_ring"], 0)
        self.assertEqual(s["published"], threads * each)
        host.wait_stats(lambda h: ring_totals(h)["delivered"] == threads * each)


class PreAttachTest(unittest.TestCase):
    """Emits before any host exists: kept in order, never blocking, overflow counted."""

    def setUp(self) -> None:
        telemetry.shutdown()
        self.ns = unique_namespace()
        self.addCleanup(remove_segments, self.ns)
        self.addCleanup(telemetry.shutdown)

    def start_host(self) -> HostProcess:
        host = HostProcess(self.ns)
        self.addCleanup(host.close)
        return host

    def test_events_before_the_host_are_buffered_then_delivered_in_order(self) -> None:
        telemetry.start(namespace=self.ns, worker_id="early", attach_wait=0)
        outcomes = [telemetry.emit("python.memory.sampled", {"rss_bytes": i})
                    for i in range(10)]
        self.assertEqual(set(outcomes), {"buffered"})
        s = telemetry.stats()
        self.assertEqual((s["pending"], s["emitted"], s["published"]), (10, 0, 0))
        host = self.start_host()
        self.assertTrue(telemetry.wait_attached(TIMEOUT))
        events = host.wait_count("snakepit.python.memory.sampled", 10)
        self.assertEqual([e["measurements"]["rss_bytes"] for e in events], list(range(10)))
        self.assertEqual(telemetry.emit("python.memory.sampled", {"rss_bytes": 10}), "ok")
        host.wait_count("snakepit.python.memory.sampled", 11)
        s = telemetry.stats()
        self.assertEqual((s["pending"], s["emitted"], s["published"]), (0, 11, 11))

    def test_buffer_overflow_is_counted_as_dropped_no_ring(self) -> None:
        telemetry.start(namespace=self.ns, worker_id="early", attach_wait=0)
        outcomes = [telemetry.emit("python.memory.sampled", {"rss_bytes": i})
                    for i in range(1100)]
        self.assertEqual(outcomes.count("buffered"), 1024)
        self.assertEqual(outcomes[1024:], ["dropped_no_ring"] * 76)
        host = self.start_host()
        self.assertTrue(telemetry.wait_attached(TIMEOUT))
        events = host.wait_count("snakepit.python.memory.sampled", 1024)
        self.assertEqual([e["measurements"]["rss_bytes"] for e in events], list(range(1024)))
        s = telemetry.stats()
        self.assertEqual(s["dropped"]["no_ring"], 76)
        self.assertEqual(s["emitted"], 1100)
        self.assertTrue(s["emitted"] == s["published"] + sum(s["dropped"].values())
                        + sum(s["suppressed"].values()), s)

    def test_pre_attach_events_bounds_what_is_kept(self) -> None:
        telemetry.start(namespace=self.ns, worker_id="early", attach_wait=0, pre_attach_events=2)
        outcomes = [telemetry.emit("python.memory.sampled", {"rss_bytes": i}) for i in range(3)]
        self.assertEqual(outcomes, ["buffered", "buffered", "dropped_no_ring"])
        telemetry.shutdown()
        for bad, error in ((-1, ValueError), (1 << 32, ValueError), ("2", TypeError)):
            with self.assertRaises(error):
                telemetry.start(namespace=self.ns, attach_wait=0, pre_attach_events=bad)

    def test_first_emit_without_a_host_does_not_wait_for_one(self) -> None:
        # The lazy start of the first emit does not wait for a host: the event is buffered.
        env = clean_env(PITLANE_NAMESPACE=self.ns)
        out = subprocess.run(
            [sys.executable, "-c",
             "from pitlane import telemetry; import json; "
             "r = telemetry.emit('python.call.start', {'system_time': 1}); "
             "print(json.dumps([r, telemetry.stats()['attached']]))"],
            env=env, capture_output=True, text=True, timeout=TIMEOUT)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertEqual(json.loads(out.stdout), ["buffered", False])


class LimitsAtEmitTest(HostTestCase):
    """The worker applies the host's limits (schemas/catalog.txt) when it emits."""

    def test_events_the_host_would_reject_for_size_are_refused_and_counted(self) -> None:
        cases = {
            "33 metadata entries": ({"duration": 1}, {f"k{i}": "v" for i in range(33)}, None),
            "a 65-byte key": ({"duration": 1}, {"k" * 65: "v"}, None),
            "a 129-byte correlation id": ({"duration": 1}, {}, "c" * 129),
            "33 measurements": ({"duration": i for i in range(1)} | {
                f"m{i}": i for i in range(32)}, {}, None),
        }
        for what, (m, md, cid) in cases.items():
            with self.subTest(what):
                self.assertEqual(telemetry.emit("python.call.stop", m, md, cid),
                                 "dropped_over_limit")
        # Within the limits: 32 of each, a 64-byte key, a 128-byte id.
        self.assertEqual(telemetry.emit("python.call.stop", {"duration": 1},
                                        {f"k{i}": "v" for i in range(31)} | {"k" * 64: "v"},
                                        "c" * 128), "ok")
        self.host.wait_count("snakepit.python.call.stop", 1)
        s = telemetry.stats()
        self.assertEqual(s["dropped"]["too_large"], 4)
        host = self.host.wait_stats(lambda h: ring_totals(h)["delivered"] == 1)
        self.assertEqual(sum(ring_totals(host)["rejected"].values()), 0)

    def test_long_values_are_cut_where_the_host_cuts_them_not_dropped(self) -> None:
        message = "x" * (70 << 10)  # bigger than the largest record a ring takes
        with self.assertRaises(ValueError):
            with telemetry.span("python.call"):
                raise ValueError(message)
        self.assertEqual(telemetry.emit("python.error.occurred", {"count": 1},
                                        {"error_message": message}), "ok_truncated")
        (exc,) = self.host.wait_count("snakepit.python.call.exception", 1)
        self.assertEqual(exc["metadata"]["error_message"], "x" * 1024)
        (err,) = self.host.wait_count("snakepit.python.error.occurred", 1)
        self.assertEqual(err["metadata"]["error_message"], "x" * 1024)
        self.assertEqual(telemetry.stats()["dropped"]["too_large"], 0)


@unittest.skipUnless(os.path.exists(PITLANE), "the pitlane CLI is not built")
class HostAddressTest(unittest.TestCase):
    def run_host(self, ns: str, *flags: str) -> subprocess.CompletedProcess:
        return subprocess.run([PITLANE, "host", "--ns", ns, "--no-admin", "--duration", "0.2",
                               *flags], capture_output=True, text=True, timeout=TIMEOUT * 2,
                              env=clean_env())

    def segments(self, ns: str) -> list:
        return [p for p in os.listdir("/dev/shm") if p.startswith(f"pitlane.{ns}.")]

    def test_bad_addresses_are_usage_errors_that_leave_nothing_behind(self) -> None:
        for flag, address, why in (("--grpc-listen", "127.0.0.1:470400", "0-65535"),
                                   ("--grpc-listen", "127.0.0.1:99999", "out of range"),
                                   ("--grpc-listen", "noport", "no port"),
                                   ("--grpc-dial", "a=b=c", "no port"),
                                   ("--grpc-dial", "w=127.0.0.1:0", "cannot be dialed")):
            with self.subTest(flag=flag, address=address):
                ns = unique_namespace()
                self.addCleanup(remove_segments, ns)
                out = self.run_host(ns, flag, address)
                self.assertEqual(out.returncode, 2, out)
                self.assertIn(flag, out.stderr)
                self.assertIn(why, out.stderr)
                self.assertEqual(self.segments(ns), [])

    def test_a_port_another_process_serves_fails_the_start_and_leaves_nothing(self) -> None:
        with socket.socket() as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen()
            ns = unique_namespace()
            self.addCleanup(remove_segments, ns)
            out = self.run_host(ns, "--grpc-listen", f"127.0.0.1:{busy.getsockname()[1]}")
        self.assertEqual(out.returncode, 1, out)
        self.assertIn("cannot serve gRPC", out.stderr)
        self.assertEqual(self.segments(ns), [])


if __name__ == "__main__":
    unittest.main()
