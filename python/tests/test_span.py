"""pitlane.telemetry.span: start/stop/exception events as the C++ Span emits them, as a context
manager (sync and async) and as a decorator (functions and coroutine functions)."""

from __future__ import annotations

import asyncio
import time
import unittest

from pitlane import _native, telemetry

from pitlane_testing import HostTestCase

START = "snakepit.python.call.start"
STOP = "snakepit.python.call.stop"
EXCEPTION = "snakepit.python.call.exception"
TOOL_START = "snakepit.python.tool.execution.start"
TOOL_STOP = "snakepit.python.tool.execution.stop"


class Muted(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no message")


class SpanTest(HostTestCase):
    def names(self, count: int) -> list:
        events = self.host.wait_events(lambda evs: len(evs) >= count)
        return [e["name"] for e in events]

    def test_success_emits_start_with_system_time_then_stop_with_duration(self) -> None:
        before = time.time_ns()
        with telemetry.span("python.call", {"command": "predict"}):
            time.sleep(0.01)
        start = self.host.wait_count(START, 1)[0]
        stop = self.host.wait_count(STOP, 1)[0]
        self.assertEqual(list(start["measurements"]), ["system_time"])
        self.assertGreaterEqual(start["measurements"]["system_time"], before)
        self.assertLessEqual(start["measurements"]["system_time"], time.time_ns())
        self.assertEqual(list(stop["measurements"]), ["duration"])
        self.assertGreaterEqual(stop["measurements"]["duration"], 10_000_000)
        self.assertEqual(start["metadata"]["command"], "predict")
        self.assertEqual(stop["metadata"]["command"], "predict")
        self.assertNotIn("error_type", stop["metadata"])
        self.assertEqual(self.host.events(EXCEPTION), [])

    def test_exception_emits_exception_event_with_type_and_message_then_propagates(self) -> None:
        with self.assertRaisesRegex(ValueError, "model not loaded"):
            with telemetry.span("python.call", {"command": "predict"}):
                raise ValueError("model not loaded")
        (event,) = self.host.wait_count(EXCEPTION, 1)
        self.assertEqual(event["metadata"]["error_type"], "ValueError")
        self.assertEqual(event["metadata"]["error_message"], "model not loaded")
        self.assertEqual(event["metadata"]["command"], "predict")
        self.assertEqual(list(event["measurements"]), ["duration"])
        self.assertEqual(self.host.events(STOP), [])

    def test_keyboard_interrupt_is_recorded_and_propagates(self) -> None:
        with self.assertRaises(KeyboardInterrupt):
            with telemetry.span("python.call"):
                raise KeyboardInterrupt
        (event,) = self.host.wait_count(EXCEPTION, 1)
        self.assertEqual(event["metadata"]["error_type"], "KeyboardInterrupt")
        self.assertEqual(event["metadata"]["error_message"], "")

    def test_exception_whose_str_raises_is_recorded_as_unprintable(self) -> None:
        with self.assertRaises(Muted):
            with telemetry.span("python.call"):
                raise Muted()
        (event,) = self.host.wait_count(EXCEPTION, 1)
        self.assertEqual(event["metadata"]["error_type"], "Muted")
        self.assertEqual(event["metadata"]["error_message"], "<unprintable Muted>")

    def test_cancelled_task_records_cancelled_error(self) -> None:
        async def main() -> None:
            entered = asyncio.Event()

            async def body() -> None:
                async with telemetry.span("python.call", {"command": "slow"}):
                    entered.set()
                    await asyncio.sleep(60)

            task = asyncio.ensure_future(body())
            await entered.wait()
            task.cancel()
            with self.assertRaises(asyncio.CancelledError):
                await task

        asyncio.run(main())
        (event,) = self.host.wait_count(EXCEPTION, 1)
        self.assertEqual(event["metadata"]["error_type"], "CancelledError")
        self.assertEqual(event["metadata"]["command"], "slow")

    def test_nested_spans_share_the_outer_correlation_id(self) -> None:
        with telemetry.span("python.call") as outer:
            outer_id = telemetry.get_correlation_id()
            with telemetry.span("tool.execution", {"tool": "search"}):
                self.assertEqual(telemetry.get_correlation_id(), outer_id)
                telemetry.emit("tool.result_size", {"bytes": 10}, {"tool": "search"})
        self.assertIsInstance(outer, telemetry.span)
        self.assertEqual(self.names(5), [START, TOOL_START, "snakepit.python.tool.result_size",
                                          TOOL_STOP, STOP])
        self.assertEqual({e["correlation_id"] for e in self.host.events()}, {outer_id})

    def test_span_without_a_current_id_creates_one_for_its_duration(self) -> None:
        self.assertIsNone(telemetry.get_correlation_id())
        with telemetry.span("python.call"):
            inside = telemetry.get_correlation_id()
        self.assertRegex(inside, r"^[0-9a-f]{32}$")  # a new trace: the id is a W3C trace id
        self.assertIsNone(telemetry.get_correlation_id())
        with telemetry.span("python.call"):
            second = telemetry.get_correlation_id()
        self.assertNotEqual(inside, second)
        events = self.host.wait_count(STOP, 2)
        self.assertEqual([e["correlation_id"] for e in events], [inside, second])

    def test_span_picks_up_the_current_correlation_id(self) -> None:
        token = telemetry.set_correlation_id("request-42")
        try:
            with telemetry.span("python.call"):
                pass
        finally:
            telemetry.reset_correlation_id(token)
        self.assertEqual({e["correlation_id"] for e in self.host.wait_count(STOP, 1)},
                         {"request-42"})
        self.assertEqual(self.host.events(START)[0]["correlation_id"], "request-42")

    def test_explicit_correlation_id_wins_and_is_current_inside(self) -> None:
        token = telemetry.set_correlation_id("outer")
        try:
            with telemetry.span("python.call", correlation_id="explicit"):
                self.assertEqual(telemetry.get_correlation_id(), "explicit")
            self.assertEqual(telemetry.get_correlation_id(), "outer")
        finally:
            telemetry.reset_correlation_id(token)
        self.assertEqual(self.host.wait_count(STOP, 1)[0]["correlation_id"], "explicit")

    def test_decorated_function_is_one_span_per_call_and_keeps_its_result(self) -> None:
        @telemetry.span("python.call", {"command": "add"})
        def add(a: int, b: int) -> int:
            """Adds."""
            return a + b

        self.assertEqual(add(2, 3), 5)
        self.assertEqual(add(b=1, a=1), 2)
        self.assertEqual(add.__name__, "add")
        self.assertEqual(add.__doc__, "Adds.")
        starts = self.host.wait_count(START, 2)
        stops = self.host.wait_count(STOP, 2)
        self.assertEqual(len({e["correlation_id"] for e in stops}), 2)
        self.assertEqual([e["correlation_id"] for e in starts], [e["correlation_id"] for e in stops])

    def test_decorated_function_that_raises_emits_the_exception_event(self) -> None:
        @telemetry.span("python.call")
        def fail() -> None:
            raise KeyError("missing")

        with self.assertRaises(KeyError):
            fail()
        (event,) = self.host.wait_count(EXCEPTION, 1)
        self.assertEqual(event["metadata"]["error_type"], "KeyError")
        self.assertEqual(event["metadata"]["error_message"], "'missing'")  # str(KeyError)

    def test_decorated_recursive_function_nests_its_spans(self) -> None:
        @telemetry.span("python.call")
        def depth(n: int) -> int:
            return 0 if n == 0 else 1 + depth(n - 1)

        self.assertEqual(depth(2), 2)
        self.assertEqual(self.names(6), [START, START, START, STOP, STOP, STOP])
        self.assertEqual(len({e["correlation_id"] for e in self.host.events()}), 1)

    def test_decorated_coroutine_function_spans_its_awaits(self) -> None:
        @telemetry.span("tool.execution", {"tool": "fetch"})
        async def fetch(x: int) -> int:
            await asyncio.sleep(0.005)
            return x * 2

        self.assertTrue(asyncio.iscoroutinefunction(fetch))
        self.assertEqual(asyncio.run(fetch(21)), 42)
        stop = self.host.wait_count(TOOL_STOP, 1)[0]
        self.assertGreaterEqual(stop["measurements"]["duration"], 5_000_000)
        self.assertEqual(stop["metadata"]["tool"], "fetch")

    def test_decorated_coroutine_function_records_its_exception(self) -> None:
        @telemetry.span("tool.execution")
        async def broken() -> None:
            await asyncio.sleep(0)
            raise TimeoutError("upstream")

        with self.assertRaises(TimeoutError):
            asyncio.run(broken())
        (event,) = self.host.wait_count("snakepit.python.tool.execution.exception", 1)
        self.assertEqual(event["metadata"]["error_type"], "TimeoutError")
        self.assertEqual(event["metadata"]["error_message"], "upstream")


class SpanIdentityTest(HostTestCase):
    """Span ids and parents in the records (schemas/event.fbs), and W3C trace context."""

    def test_nested_spans_carry_ids_and_the_enclosing_span_as_parent(self) -> None:
        with telemetry.span("python.call"):
            with telemetry.span("tool.execution"):
                pass
        outer_start, outer_stop = self.host.wait_count(START, 1)[0], self.host.wait_count(STOP, 1)[0]
        inner_start = self.host.wait_count(TOOL_START, 1)[0]
        inner_stop = self.host.wait_count(TOOL_STOP, 1)[0]
        self.assertNotEqual(outer_start["span_id"], 0)
        self.assertEqual(outer_start["span_id"], outer_stop["span_id"])
        self.assertEqual(outer_start["parent_span_id"], 0)
        self.assertEqual(inner_start["span_id"], inner_stop["span_id"])
        self.assertNotEqual(inner_start["span_id"], outer_start["span_id"])
        self.assertEqual(inner_start["parent_span_id"], outer_start["span_id"])
        self.assertEqual(inner_stop["parent_span_id"], outer_start["span_id"])
        # A new trace: its correlation id is a 32-hex-digit trace id, shared by both spans.
        self.assertRegex(outer_start["correlation_id"], r"^[0-9a-f]{32}$")
        self.assertEqual(inner_start["correlation_id"], outer_start["correlation_id"])

    def test_concurrent_tasks_each_nest_under_their_own_span(self) -> None:
        async def task(name: str) -> None:
            with telemetry.span("python.call", {"command": name}):
                await asyncio.sleep(0.01)
                with telemetry.span("tool.execution", {"tool": name}):
                    await asyncio.sleep(0.01)

        async def both() -> None:
            await asyncio.gather(task("a"), task("b"))

        asyncio.run(both())
        starts = {e["metadata"]["command"]: e for e in self.host.wait_count(START, 2)}
        for tool in self.host.wait_count(TOOL_START, 2):
            self.assertEqual(tool["parent_span_id"], starts[tool["metadata"]["tool"]]["span_id"])

    def test_emit_takes_span_ids_as_keywords_and_refuses_bad_ones(self) -> None:
        self.assertEqual(
            telemetry.emit("python.call.start", {"system_time": 1}, span_id=2**64 - 1,
                           parent_span_id=7),
            "ok",
        )
        (start,) = self.host.wait_count(START, 1)
        self.assertEqual((start["span_id"], start["parent_span_id"]), (2**64 - 1, 7))
        with self.assertRaises(OverflowError):
            telemetry.emit("python.call.start", span_id=-1)
        with self.assertRaises(TypeError):
            telemetry.emit("python.call.start", span_id="7")

    def test_plain_emit_has_no_span_identity(self) -> None:
        telemetry.emit("tool.result_size", {"bytes": 1})
        (event,) = self.host.wait_count("snakepit.python.tool.result_size", 1)
        self.assertEqual(event["span_id"], 0)

    def test_continue_trace_makes_the_callers_span_the_parent(self) -> None:
        value = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        with telemetry.continue_trace(value) as ctx:
            self.assertTrue(ctx.ok)
            with telemetry.span("python.call"):
                outgoing = telemetry.traceparent()
        (start,) = self.host.wait_count(START, 1)
        self.assertEqual(start["correlation_id"], "4bf92f3577b34da6a3ce929d0e0e4736")
        self.assertEqual(start["parent_span_id"], 0x00F067AA0BA902B7)
        self.assertEqual(
            outgoing, f"00-4bf92f3577b34da6a3ce929d0e0e4736-{start['span_id']:016x}-01"
        )
        self.assertIsNone(telemetry.traceparent())  # outside any span again

    def test_invalid_traceparent_changes_nothing(self) -> None:
        for bad in (None, "", "00-zz-00f067aa0ba902b7-01", 42):
            with telemetry.continue_trace(bad) as ctx:
                self.assertFalse(ctx.ok)
                self.assertIsNone(telemetry.get_correlation_id())

    def test_continue_trace_with_the_callers_correlation_id_keeps_it_and_takes_its_span(self) -> None:
        trace = _native.trace_id_hex("req-7")
        with telemetry.continue_trace(f"00-{trace}-00f067aa0ba902b7-01", "req-7") as ctx:
            self.assertTrue(ctx.ok)
            self.assertEqual(telemetry.get_correlation_id(), "req-7")
            with telemetry.span("python.call"):
                pass
        self.assertIsNone(telemetry.get_correlation_id())
        (start,) = self.host.wait_count(START, 1)
        self.assertEqual(start["correlation_id"], "req-7")
        self.assertEqual(start["parent_span_id"], 0x00F067AA0BA902B7)

    def test_continue_trace_of_another_trace_than_the_correlation_id_takes_no_parent(self) -> None:
        value = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        for correlation in ("req-7", "0123456789abcdef0123456789abcdef"):
            with telemetry.continue_trace(value, correlation) as ctx:
                self.assertFalse(ctx.ok)
                self.assertEqual(telemetry.get_correlation_id(), correlation)
                with telemetry.span("python.call"):
                    pass
        for start in self.host.wait_count(START, 2):
            self.assertEqual(start["parent_span_id"], 0)
        with telemetry.continue_trace("garbage", "req-8") as ctx:
            self.assertFalse(ctx.ok)
            self.assertEqual(telemetry.get_correlation_id(), "req-8")
        self.assertIsNone(telemetry.get_correlation_id())

    def test_a_correlation_id_that_is_not_hex_maps_to_a_stable_trace_id(self) -> None:
        with telemetry.span("python.call", correlation_id="req-42"):
            tp = telemetry.traceparent()
        with telemetry.span("python.call", correlation_id="req-42"):
            tp2 = telemetry.traceparent()
        self.assertEqual(tp.split("-")[1], tp2.split("-")[1])
        self.assertNotEqual(tp.split("-")[2], tp2.split("-")[2])


if __name__ == "__main__":
    unittest.main()
