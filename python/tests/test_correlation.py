"""Correlation ids: the contextvars-based current id (per thread, per asyncio task) and its use
by emit."""

from __future__ import annotations

import asyncio
import contextvars
import threading
import unittest

from pitlane import telemetry

from pitlane_testing import HostTestCase

START = "snakepit.python.call.start"


class CorrelationApiTest(unittest.TestCase):
    def test_no_current_id_gives_the_default(self) -> None:
        self.assertIsNone(telemetry.get_correlation_id())
        self.assertEqual(telemetry.get_correlation_id("-"), "-")

    def test_set_then_reset_restores_the_previous_id(self) -> None:
        outer = telemetry.set_correlation_id("a")
        inner = telemetry.set_correlation_id("b")
        self.assertEqual(telemetry.get_correlation_id(), "b")
        telemetry.reset_correlation_id(inner)
        self.assertEqual(telemetry.get_correlation_id(), "a")
        telemetry.reset_correlation_id(outer)
        self.assertIsNone(telemetry.get_correlation_id())

    def test_reset_with_none_does_nothing(self) -> None:
        token = telemetry.set_correlation_id("kept")
        try:
            telemetry.reset_correlation_id(None)
            self.assertEqual(telemetry.get_correlation_id(), "kept")
        finally:
            telemetry.reset_correlation_id(token)

    def test_set_returns_a_contextvars_token(self) -> None:
        token = telemetry.set_correlation_id("t")
        try:
            self.assertIsInstance(token, contextvars.Token)
        finally:
            telemetry.reset_correlation_id(token)

    def test_copied_context_does_not_leak_back(self) -> None:
        def inside() -> str:
            telemetry.set_correlation_id("in-copy")
            return telemetry.get_correlation_id()

        self.assertEqual(contextvars.copy_context().run(inside), "in-copy")
        self.assertIsNone(telemetry.get_correlation_id())


class CorrelationEmitTest(HostTestCase):
    def test_emit_carries_the_current_id(self) -> None:
        token = telemetry.set_correlation_id("current-1")
        try:
            telemetry.emit("python.call.start", {"system_time": 1})
        finally:
            telemetry.reset_correlation_id(token)
        telemetry.emit("python.call.start", {"system_time": 2})
        events = self.host.wait_count(START, 2)
        self.assertEqual([e["correlation_id"] for e in events], ["current-1", ""])

    def test_explicit_id_overrides_the_current_one(self) -> None:
        token = telemetry.set_correlation_id("current")
        try:
            telemetry.emit("python.call.start", {"system_time": 1}, None, "explicit")
            telemetry.emit("python.call.start", {"system_time": 1}, correlation_id="kw")
        finally:
            telemetry.reset_correlation_id(token)
        events = self.host.wait_count(START, 2)
        self.assertEqual([e["correlation_id"] for e in events], ["explicit", "kw"])

    def test_id_that_is_not_a_string_is_stringified(self) -> None:
        telemetry.emit("python.call.start", None, None, 4242)
        token = telemetry.set_correlation_id(7)  # type: ignore[arg-type]
        try:
            telemetry.emit("python.call.start")
        finally:
            telemetry.reset_correlation_id(token)
        events = self.host.wait_count(START, 2)
        self.assertEqual([e["correlation_id"] for e in events], ["4242", "7"])

    def test_id_over_128_bytes_is_refused_at_emit_and_counted(self) -> None:
        # The host would reject it (correlation_id_too_long): the worker refuses it instead of
        # saying "ok".
        self.assertEqual(telemetry.emit("python.call.start", None, None, "x" * 129),
                         "dropped_over_limit")
        self.assertEqual(telemetry.emit("python.call.start", None, None, "x" * 128), "ok")
        self.assertEqual(telemetry.stats()["dropped"]["too_large"], 1)
        host = self.host.wait_stats(lambda h: h["host"]["delivered"] == 1)
        self.assertEqual(host["host"]["rejected"]["correlation_id_too_long"], 0)

    def test_asyncio_tasks_each_keep_their_own_id(self) -> None:
        async def request(name: str, gate: asyncio.Event, other: asyncio.Event) -> None:
            telemetry.set_correlation_id(name)
            gate.set()
            await other.wait()  # the other task has set its id meanwhile
            telemetry.emit("python.call.start", {"system_time": 1}, {"command": name})
            self.assertEqual(telemetry.get_correlation_id(), name)

        async def main() -> None:
            a_ready, b_ready = asyncio.Event(), asyncio.Event()
            await asyncio.gather(request("task-a", a_ready, b_ready),
                                 request("task-b", b_ready, a_ready))
            self.assertIsNone(telemetry.get_correlation_id())

        asyncio.run(main())
        events = self.host.wait_count(START, 2)
        self.assertEqual({e["metadata"]["command"]: e["correlation_id"] for e in events},
                         {"task-a": "task-a", "task-b": "task-b"})

    def test_task_created_inside_a_span_inherits_its_id(self) -> None:
        async def child() -> None:
            telemetry.emit("python.call.start", {"system_time": 1}, {"command": "child"})

        async def main() -> str:
            async with telemetry.span("tool.execution"):
                await asyncio.create_task(child())
                return telemetry.get_correlation_id()

        span_id = asyncio.run(main())
        (event,) = self.host.wait_count(START, 1)
        self.assertEqual(event["correlation_id"], span_id)

    def test_threads_start_without_the_creating_threads_id(self) -> None:
        token = telemetry.set_correlation_id("main-thread")
        seen = []
        try:
            def body() -> None:
                seen.append(telemetry.get_correlation_id())
                telemetry.emit("python.call.start", {"system_time": 1}, {"command": "thread"})

            t = threading.Thread(target=body)
            t.start()
            t.join()
        finally:
            telemetry.reset_correlation_id(token)
        self.assertEqual(seen, [None])
        (event,) = self.host.wait_count(START, 1)
        self.assertEqual(event["correlation_id"], "")


if __name__ == "__main__":
    unittest.main()
