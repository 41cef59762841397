"""Emitting from several Python threads (a ring each) and from a multiprocessing child made by
fork (a worker id and rings of its own)."""

from __future__ import annotations

import multiprocessing
import os
import threading
import unittest

from pitlane import telemetry

from pitlane_testing import HostTestCase, ring_totals, worker_conserved

MEMORY = "snakepit.python.memory.sampled"
START = "snakepit.python.call.start"


def _child_emits(count: int, results) -> None:
    """Runs in the forked child: emits `count` events, reports its own view."""
    outcomes = [telemetry.emit("python.memory.sampled", {"rss_bytes": i},
                               {"python_pid": str(os.getpid())}) for i in range(count)]
    s = telemetry.stats()
    results.put({"pid": os.getpid(), "outcomes": sorted(set(outcomes)),
                 "worker_id": s["worker_id"], "emitted": s["emitted"],
                 "published": s["published"]})


class ThreadsTest(HostTestCase):
    def test_each_thread_emits_through_its_own_ring_and_nothing_is_lost(self) -> None:
        threads, per_thread = 4, 500
        barrier = threading.Barrier(threads)
        outcomes: list = []

        def body(n: int) -> None:
            barrier.wait()
            got = [telemetry.emit("python.memory.sampled", {"rss_bytes": i},
                                  {"python_pid": f"t{n}"}) for i in range(per_thread)]
            outcomes.extend(got)

        workers = [threading.Thread(target=body, args=(n,)) for n in range(threads)]
        for t in workers:
            t.start()
        for t in workers:
            t.join()
        self.assertEqual(len(outcomes), threads * per_thread)
        ok = outcomes.count("ok")
        self.assertEqual(set(outcomes) - {"ok", "dropped_full"}, set())
        events = self.host.wait_count(MEMORY, ok)
        by_thread: dict = {}
        for e in events:
            by_thread.setdefault(e["metadata"]["python_pid"], []).append(e["measurements"]["rss_bytes"])
        self.assertEqual(set(by_thread), {f"t{n}" for n in range(threads)})
        for values in by_thread.values():
            self.assertEqual(values, sorted(values))  # each ring keeps its thread's order
        # Every thread got a ring of its own; they are retired when the threads exit.
        host = self.host.wait_stats(lambda h: len(h["rings"]) >= threads
                                    and ring_totals(h)["delivered"] == ok)
        self.assertGreaterEqual(len({r["segment"] for r in host["rings"]}), threads)
        s = telemetry.stats()
        self.assertEqual(s["emitted"], threads * per_thread)
        self.assertEqual(s["published"], ok)
        self.assertTrue(worker_conserved(s), s)

    def test_short_lived_threads_retire_their_rings_and_lose_nothing(self) -> None:
        # Emits from many short-lived threads (a thread pool's churn): rings are retired and
        # their events still delivered.
        for batch in range(3):
            ts = [threading.Thread(target=telemetry.emit,
                                   args=("python.call.start", {"system_time": batch}))
                  for _ in range(8)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
        self.host.wait_count(START, 24)
        host = self.host.wait_stats(lambda h: all(r["conserved"] for r in h["rings"])
                                    and sum(r["retired"] or r["reclaimed"]
                                                  for r in h["rings"]) == 24)
        self.assertTrue(all(r["conserved"] for r in host["rings"]), host)


class ForkTest(HostTestCase):
    def test_forked_child_emits_through_rings_of_its_own(self) -> None:
        # The parent has a ring before forking: the child must not write into it.
        self.assertEqual(telemetry.emit("python.call.start", {"system_time": 1}), "ok")
        ctx = multiprocessing.get_context("fork")
        results = ctx.Queue()
        child = ctx.Process(target=_child_emits, args=(200, results))
        child.start()
        report = results.get(timeout=30)
        child.join(30)
        self.assertEqual(child.exitcode, 0)

        self.assertEqual(report["pid"], child.pid)
        self.assertEqual(report["worker_id"], f"{self.worker_id}-{child.pid}")
        self.assertEqual(report["outcomes"], ["ok"])
        self.assertEqual((report["emitted"], report["published"]), (200, 200))

        events = self.host.wait_count(MEMORY, 200)
        self.assertEqual({e["worker_pid"] for e in events}, {child.pid})
        self.assertEqual({e["worker_id"] for e in events}, {f"{self.worker_id}-{child.pid}"})
        self.assertEqual([e["measurements"]["rss_bytes"] for e in events], list(range(200)))

        # The child's rings are its own segments, and the parent's counters never saw them.
        host = self.host.wait_stats(lambda h: ring_totals(h, child.pid)["delivered"] == 200)
        child_rings = [r for r in host["rings"] if r["pid"] == child.pid]
        parent_rings = [r for r in host["rings"] if r["pid"] == os.getpid()]
        self.assertTrue(child_rings and parent_rings, host)
        self.assertFalse({r["segment"] for r in child_rings} & {r["segment"] for r in parent_rings})
        self.assertEqual(ring_totals(host, os.getpid())["emitted"], 1)
        s = telemetry.stats()
        self.assertEqual((s["emitted"], s["published"]), (1, 1))
        self.assertEqual(s["worker_id"], self.worker_id)

        # The parent keeps emitting through its own ring after the fork.
        self.assertEqual(telemetry.emit("python.call.start", {"system_time": 2}), "ok")
        parent_events = self.host.wait_count(START, 2)
        self.assertEqual({e["worker_pid"] for e in parent_events}, {os.getpid()})
        # The child exited without retiring: the host notices and reclaims its rings.
        self.host.wait_stats(lambda h: all(r["reclaimed"] for r in h["rings"]
                                           if r["pid"] == child.pid))


if __name__ == "__main__":
    unittest.main()
