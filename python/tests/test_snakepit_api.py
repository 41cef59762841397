"""pitlane.snakepit.telemetry in place of Snakepit's snakepit_bridge.telemetry: every public
name, used the way Snakepit's own tests (priv/python/tests/test_telemetry.py,
test_telemetry_stream.py, test_serialization_policy.py) and guides use it, with events reaching
a real pitlane host; and the backend chosen by SNAKEPIT_TELEMETRY_BACKEND."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import subprocess
import sys
import threading
import unittest
from unittest import mock

from pitlane import telemetry as pitlane_telemetry
from pitlane.snakepit import telemetry
from pitlane.snakepit.telemetry.backends.base import TelemetryBackend
from pitlane.snakepit.telemetry.backends.composite import CompositeBackend
from pitlane.snakepit.telemetry.backends.grpc import GrpcBackend
from pitlane.snakepit.telemetry.backends.shm import ShmBackend
from pitlane.snakepit.telemetry.backends.stderr import StderrBackend
from pitlane.snakepit.telemetry.stream import TelemetryStream

from pitlane_testing import TIMEOUT, HostProcess, HostTestCase, remove_segments, unique_namespace

# snakepit_bridge.telemetry.__all__ (Snakepit v0.13.0), restated.
SNAKEPIT_PUBLIC_NAMES = [
    "emit", "span", "set_backend", "get_backend", "is_enabled", "setup_tracing", "get_tracer",
    "correlation_filter", "new_correlation_id", "set_correlation_id", "reset_correlation_id",
    "get_correlation_id", "outgoing_metadata", "CORRELATION_HEADER", "otel_span",
]

W3C_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
W3C_SPAN = "00f067aa0ba902b7"

TOOL_START = "snakepit.python.tool.execution.start"
TOOL_STOP = "snakepit.python.tool.execution.stop"
TOOL_EXCEPTION = "snakepit.python.tool.execution.exception"
RESULT_SIZE = "snakepit.python.tool.result_size"


class RecordingBackend:
    """The MockBackend of Snakepit's serialization tests: duck-typed, records every call."""

    def __init__(self) -> None:
        self.events: list = []

    def emit(self, event, measurements, metadata, correlation_id):
        self.events.append({"event": event, "measurements": measurements,
                            "metadata": metadata, "correlation_id": correlation_id})


class BrokenBackend:
    def emit(self, event, measurements, metadata, correlation_id):
        raise RuntimeError("Telemetry backend is broken!")


class SwappedBackend(unittest.TestCase):
    """Installs a backend for one test and restores the previous one, as Snakepit's tests do."""

    def use(self, backend) -> None:
        original = telemetry.get_backend()
        telemetry.set_backend(backend)
        self.addCleanup(telemetry.set_backend, original)


class PublicNamesTest(unittest.TestCase):
    def test_module_exports_exactly_snakepits_public_names(self) -> None:
        self.assertEqual(sorted(telemetry.__all__), sorted(SNAKEPIT_PUBLIC_NAMES))
        for name in SNAKEPIT_PUBLIC_NAMES:
            self.assertTrue(hasattr(telemetry, name), name)

    def test_correlation_header_is_snakepits(self) -> None:
        self.assertEqual(telemetry.CORRELATION_HEADER, "x-snakepit-correlation-id")

    def test_new_correlation_id_is_32_hex_digits_and_unique(self) -> None:
        ids = {telemetry.new_correlation_id() for _ in range(100)}
        self.assertEqual(len(ids), 100)
        for cid in ids:
            self.assertRegex(cid, r"^[0-9a-f]{32}$")


class CorrelationTest(unittest.TestCase):
    # test_telemetry.py: test_span_uses_incoming_correlation_metadata
    def test_otel_span_uses_incoming_correlation_metadata(self) -> None:
        metadata = ("x-snakepit-correlation-id", "cid-123")
        with telemetry.otel_span("test-span", context_metadata=[metadata]) as span_object:
            self.assertIsNone(span_object)  # no OpenTelemetry SDK: no span object
            self.assertEqual(telemetry.get_correlation_id(), "cid-123")
        self.assertIsNone(telemetry.get_correlation_id())

    def test_otel_span_header_key_is_case_insensitive_and_falls_back_to_current_then_new(self) -> None:
        with telemetry.otel_span("s", context_metadata=[("X-Snakepit-Correlation-Id", "cid-up")]):
            self.assertEqual(telemetry.get_correlation_id(), "cid-up")
        token = telemetry.set_correlation_id("cid-outer")
        try:
            with telemetry.otel_span("s", context_metadata=[("other", "x")]):
                self.assertEqual(telemetry.get_correlation_id(), "cid-outer")
        finally:
            telemetry.reset_correlation_id(token)
        with telemetry.otel_span("s"):
            self.assertRegex(telemetry.get_correlation_id(), r"^[0-9a-f]{32}$")
        self.assertIsNone(telemetry.get_correlation_id())

    def test_correlation_id_is_pitlanes_context_variable(self) -> None:
        # One variable: what Snakepit's gRPC server sets from the header is what pitlane's
        # emit reads, and the reverse.
        token = telemetry.set_correlation_id("cid-shared")
        try:
            self.assertEqual(pitlane_telemetry.get_correlation_id(), "cid-shared")
        finally:
            telemetry.reset_correlation_id(token)
        token = pitlane_telemetry.set_correlation_id("cid-back")
        try:
            self.assertEqual(telemetry.get_correlation_id(), "cid-back")
        finally:
            pitlane_telemetry.reset_correlation_id(token)

    def test_get_correlation_id_default_and_reset_without_token(self) -> None:
        self.assertEqual(telemetry.get_correlation_id("-"), "-")
        telemetry.reset_correlation_id(None)
        telemetry.reset_correlation_id()  # as Snakepit's guides call it: does nothing
        self.assertIsNone(telemetry.get_correlation_id())

    # test_telemetry.py: test_outgoing_metadata_includes_active_correlation
    def test_outgoing_metadata_includes_active_correlation(self) -> None:
        token = telemetry.set_correlation_id("cid-456")
        try:
            metadata = telemetry.outgoing_metadata()
            self.assertIn((telemetry.CORRELATION_HEADER, "cid-456"), metadata)
        finally:
            telemetry.reset_correlation_id(token)

    # test_telemetry.py: test_proxy_outgoing_metadata_carries_correlation (the proxy's call)
    def test_outgoing_metadata_keeps_initial_entries_and_adds_nothing_without_an_id(self) -> None:
        self.assertEqual(telemetry.outgoing_metadata([("a", "1")]), [("a", "1")])
        self.assertEqual(telemetry.outgoing_metadata(), [])
        token = telemetry.set_correlation_id("cid-proxy")
        try:
            self.assertEqual(telemetry.outgoing_metadata((("a", "1"),)),
                             [("a", "1"), (telemetry.CORRELATION_HEADER, "cid-proxy")])
        finally:
            telemetry.reset_correlation_id(token)

    def test_otel_span_continues_a_traceparent_when_no_correlation_header_came(self) -> None:
        value = f"00-{W3C_TRACE}-{W3C_SPAN}-01"
        with telemetry.otel_span("rpc", context_metadata=[("Traceparent", value)]):
            self.assertEqual(telemetry.get_correlation_id(), W3C_TRACE)
            # No span of its own yet: the next call's parent is the caller's span.
            self.assertIn(("traceparent", value), telemetry.outgoing_metadata())
        self.assertIsNone(telemetry.get_correlation_id())
        self.assertIsNone(pitlane_telemetry.traceparent())

    def test_otel_span_ignores_a_malformed_traceparent(self) -> None:
        for bad in ("", "00-zz-00f067aa0ba902b7-01", f"00-{'0' * 32}-{W3C_SPAN}-01"):
            with telemetry.otel_span("rpc", context_metadata=[("traceparent", bad)]):
                self.assertRegex(telemetry.get_correlation_id(), r"^[0-9a-f]{32}$")
                self.assertNotEqual(telemetry.get_correlation_id(), W3C_TRACE)
                self.assertEqual(telemetry.outgoing_metadata(),
                                 [(telemetry.CORRELATION_HEADER, telemetry.get_correlation_id())])

    def test_outgoing_metadata_adds_the_current_spans_traceparent_beside_the_header(self) -> None:
        self.use_recorder()
        with telemetry.span("tool.execution", {"tool": "t"}, "cid-out"):
            metadata = telemetry.outgoing_metadata([("a", "1")])
            expected = pitlane_telemetry.traceparent()
        self.assertRegex(expected, r"^00-[0-9a-f]{32}-[0-9a-f]{16}-01$")
        self.assertEqual(metadata, [("a", "1"), (telemetry.CORRELATION_HEADER, "cid-out"),
                                    ("traceparent", expected)])

    def test_outgoing_metadata_keeps_a_traceparent_the_caller_put_there(self) -> None:
        self.use_recorder()
        mine = ("traceparent", f"00-{W3C_TRACE}-{W3C_SPAN}-00")
        with telemetry.span("tool.execution", None, "cid-own"):
            metadata = telemetry.outgoing_metadata([mine])
        self.assertEqual(metadata, [mine, (telemetry.CORRELATION_HEADER, "cid-own")])

    def use_recorder(self) -> None:
        original = telemetry.get_backend()
        telemetry.set_backend(RecordingBackend())
        self.addCleanup(telemetry.set_backend, original)

    # test_telemetry.py: test_logging_filter_injects_correlation
    def test_logging_filter_injects_correlation(self) -> None:
        token = telemetry.set_correlation_id("cid-log")
        try:
            record = logging.LogRecord(name="snakepit", level=logging.INFO, pathname=__file__,
                                       lineno=10, msg="hello", args=(), exc_info=None)
            log_filter = telemetry.correlation_filter()
            self.assertIsInstance(log_filter, logging.Filter)
            self.assertTrue(log_filter.filter(record))
            self.assertEqual(record.correlation_id, "cid-log")
        finally:
            telemetry.reset_correlation_id(token)
        record = logging.LogRecord("snakepit", logging.INFO, __file__, 1, "x", (), None)
        telemetry.correlation_filter().filter(record)
        self.assertEqual(record.correlation_id, "-")

    # test_telemetry.py: test_log_record_factory_adds_correlation_id
    def test_setup_tracing_makes_every_log_record_carry_the_correlation_id(self) -> None:
        os.environ["SNAKEPIT_OTEL_CONSOLE"] = "0"
        telemetry.setup_tracing()
        telemetry.setup_tracing()  # idempotent
        self.assertIsNone(telemetry.get_tracer())  # no OpenTelemetry SDK installed
        stream = io.StringIO()
        handler = logging.StreamHandler(stream)
        handler.setFormatter(logging.Formatter("%(correlation_id)s"))
        logger = logging.getLogger("telemetry-test")
        logger.handlers = [handler]
        logger.setLevel(logging.INFO)
        logger.propagate = False
        logger.info("no correlation context")
        self.assertEqual(stream.getvalue().strip().splitlines()[-1], "-")
        token = telemetry.set_correlation_id("cid-factory")
        try:
            logger.info("context set")
        finally:
            telemetry.reset_correlation_id(token)
        self.assertEqual(stream.getvalue().strip().splitlines()[-1], "cid-factory")


class BackendManagementTest(SwappedBackend):
    # test_serialization_policy.py: the MockBackend installed with set_backend
    def test_set_backend_routes_emit_and_span_to_any_object_with_emit(self) -> None:
        recorder = RecordingBackend()
        self.use(recorder)
        self.assertIs(telemetry.get_backend(), recorder)
        self.assertTrue(telemetry.is_enabled())
        telemetry.emit("snakepit.serialization.unserializable_marker", {"first_seen": 1},
                       {"type": "CustomObject"})
        with self.assertRaises(ValueError):
            with telemetry.span("tool.execution", {"tool": "t"}, "cid-span"):
                raise ValueError("bad input")
        names = [e["event"] for e in recorder.events]
        self.assertEqual(names, ["snakepit.serialization.unserializable_marker",
                                 "tool.execution.start", "tool.execution.exception"])
        first = recorder.events[0]
        self.assertEqual(first["measurements"], {"first_seen": 1})
        self.assertEqual(first["metadata"], {"type": "CustomObject"})
        self.assertIsNone(first["correlation_id"])
        start, exc = recorder.events[1], recorder.events[2]
        self.assertEqual(list(start["measurements"]), ["system_time"])
        self.assertEqual(start["correlation_id"], "cid-span")
        self.assertEqual(list(exc["measurements"]), ["duration"])
        self.assertEqual(exc["metadata"], {"tool": "t", "error_type": "ValueError",
                                           "error_message": "bad input"})

    def test_set_backend_none_disables_telemetry_and_emit_is_a_no_op(self) -> None:
        self.use(None)
        self.assertIsNone(telemetry.get_backend())
        self.assertFalse(telemetry.is_enabled())
        self.assertIsNone(telemetry.emit("tool.result_size", {"bytes": 1}))
        with telemetry.span("tool.execution"):
            pass

    def test_a_broken_backend_raises_through_emit_as_in_snakepit(self) -> None:
        self.use(BrokenBackend())
        with self.assertRaisesRegex(RuntimeError, "broken"):
            telemetry.emit("tool.result_size", {"bytes": 1})

    def test_emit_without_correlation_id_passes_the_current_one(self) -> None:
        recorder = RecordingBackend()
        self.use(recorder)
        with telemetry.otel_span("rpc", context_metadata=[(telemetry.CORRELATION_HEADER, "cid-h")]):
            telemetry.emit("tool.result_size", {"bytes": 1})
        telemetry.emit("tool.result_size", {"bytes": 2}, None, "explicit")
        self.assertEqual([e["correlation_id"] for e in recorder.events], ["cid-h", "explicit"])

    def test_composite_backend_sends_to_each_and_survives_a_broken_one(self) -> None:
        a, b = RecordingBackend(), RecordingBackend()
        composite = CompositeBackend([a, BrokenBackend(), b])
        self.use(composite)
        with self.assertLogs("pitlane.snakepit.telemetry.backends.composite", "WARNING"):
            results = telemetry.emit("tool.result_size", {"bytes": 3})
        telemetry.emit("tool.result_size", {"bytes": 4})  # logged once, counted twice
        self.assertEqual(results, [None, None, None])
        self.assertEqual(len(a.events), 2)
        self.assertEqual(len(b.events), 2)
        self.assertEqual(composite.errors, 2)
        with self.assertRaises(AttributeError):
            composite.stream  # none of these has a stream
        with self.assertRaises(ValueError):
            CompositeBackend([])

    def test_backends_are_telemetry_backends(self) -> None:
        for cls in (StderrBackend, ShmBackend, GrpcBackend, CompositeBackend):
            self.assertTrue(issubclass(cls, TelemetryBackend), cls)
        with self.assertRaises(TypeError):
            TelemetryBackend()  # abstract, as in Snakepit


class StderrBackendTest(unittest.TestCase):
    def capture(self, *args) -> str:
        saved = sys.stderr
        sys.stderr = io.StringIO()
        try:
            StderrBackend().emit(*args)
            return sys.stderr.getvalue()
        finally:
            sys.stderr = saved

    def test_writes_snakepits_telemetry_json_line(self) -> None:
        out = self.capture("tool.execution.start", {"system_time": 5}, {"tool": "predict"}, "abc")
        self.assertTrue(out.startswith("TELEMETRY:") and out.endswith("\n"), out)
        payload = json.loads(out[len("TELEMETRY:"):])
        self.assertEqual(list(payload), ["event", "measurements", "metadata", "timestamp_ns",
                                         "correlation_id"])
        self.assertEqual(payload["event"], "tool.execution.start")
        self.assertEqual(payload["measurements"], {"system_time": 5})
        self.assertEqual(payload["metadata"], {"tool": "predict"})
        self.assertEqual(payload["correlation_id"], "abc")
        self.assertIsInstance(payload["timestamp_ns"], int)

    def test_unencodable_value_gives_an_error_line_not_an_exception(self) -> None:
        out = self.capture("tool.result_size", {"bytes": object()}, None, None)
        self.assertTrue(out.startswith("TELEMETRY_ERROR: "), out)


class PitlaneBackendTest(HostTestCase, SwappedBackend):
    """The pitlane backends deliver to the test's host through the worker HostTestCase started."""

    def test_shm_backend_delivers_emit_and_span_events_with_the_current_correlation_id(self) -> None:
        self.use(ShmBackend())
        self.assertEqual(telemetry.emit("tool.execution.start", {"system_time": 123},
                                        {"tool": "telemetry_demo", "operation": "buffered"},
                                        correlation_id="cid-buffered"), "ok")
        with telemetry.otel_span("rpc", context_metadata=[(telemetry.CORRELATION_HEADER, "cid-rpc")]):
            with telemetry.span("tool.execution", {"tool": "web"}):
                telemetry.emit("tool.result_size", {"bytes": 42}, {"tool": "web"})
        (first, second) = self.host.wait_count(TOOL_START, 2)
        self.assertEqual(first["measurements"], {"system_time": 123})
        self.assertEqual(first["metadata"]["operation"], "buffered")
        self.assertEqual(first["correlation_id"], "cid-buffered")
        (size,) = self.host.wait_count(RESULT_SIZE, 1)
        (stop,) = self.host.wait_count(TOOL_STOP, 1)
        for e in (second, size, stop):
            self.assertEqual(e["correlation_id"], "cid-rpc")
            self.assertEqual(e["transport"], "shm")
        self.assertEqual(size["measurements"], {"bytes": 42})

    def test_span_events_carry_span_ids_through_the_shm_backend(self) -> None:
        self.use(ShmBackend())
        value = f"00-{W3C_TRACE}-{W3C_SPAN}-01"
        with telemetry.otel_span("rpc", context_metadata=[("traceparent", value)]):
            with telemetry.span("tool.execution", {"tool": "outer"}):
                with telemetry.span("tool.execution", {"tool": "inner"}):
                    pass
        starts = {e["metadata"]["tool"]: e for e in self.host.wait_count(TOOL_START, 2)}
        stops = {e["metadata"]["tool"]: e for e in self.host.wait_count(TOOL_STOP, 2)}
        outer, inner = starts["outer"], starts["inner"]
        self.assertEqual(outer["correlation_id"], W3C_TRACE)
        self.assertEqual(outer["parent_span_id"], int(W3C_SPAN, 16))
        self.assertNotEqual(outer["span_id"], 0)
        self.assertEqual(inner["parent_span_id"], outer["span_id"])
        for tool in ("outer", "inner"):
            self.assertEqual(stops[tool]["span_id"], starts[tool]["span_id"])

    def test_a_composite_gives_span_ids_to_pitlane_backends_and_four_arguments_to_others(self) -> None:
        recorder = RecordingBackend()
        self.use(CompositeBackend([ShmBackend(), recorder]))
        with telemetry.span("tool.execution", {"tool": "both"}, "cid-both"):
            pass
        (start,) = self.host.wait_count(TOOL_START, 1)
        self.assertNotEqual(start["span_id"], 0)
        self.assertEqual([e["event"] for e in recorder.events],
                         ["tool.execution.start", "tool.execution.stop"])
        self.assertEqual(recorder.events[0]["correlation_id"], "cid-both")

    # test_telemetry_stream.py: test_emit_from_foreign_thread_is_delivered_when_stream_active
    def test_emit_from_foreign_thread_is_delivered(self) -> None:
        self.use(ShmBackend())

        def emit_from_thread() -> None:
            telemetry.emit("tool.result_size", {"bytes": 42}, {"tool": "telemetry_demo"},
                           correlation_id="cid-thread")

        emitter = threading.Thread(target=emit_from_thread)
        emitter.start()
        emitter.join(timeout=TIMEOUT)
        self.assertFalse(emitter.is_alive())
        (event,) = self.host.wait_count(RESULT_SIZE, 1)
        self.assertEqual(event["measurements"]["bytes"], 42)
        self.assertEqual(event["metadata"]["tool"], "telemetry_demo")
        self.assertEqual(event["correlation_id"], "cid-thread")

    def test_async_span_in_tasks_keeps_each_tasks_correlation_id(self) -> None:
        self.use(ShmBackend())

        async def call(cid: str) -> None:
            with telemetry.otel_span("rpc", context_metadata=[(telemetry.CORRELATION_HEADER, cid)]):
                async with telemetry.span("tool.execution", {"tool": cid}):
                    await asyncio.sleep(0.01)

        async def main() -> None:
            await asyncio.gather(*(call(f"cid-{n}") for n in range(4)))

        asyncio.run(main())
        for e in self.host.wait_count(TOOL_STOP, 4):
            self.assertEqual(e["correlation_id"], e["metadata"]["tool"])

    def test_stream_dropped_count_path_counts_events_not_sent(self) -> None:
        # The snippet Snakepit's guides show: get_backend().stream.dropped_count.
        backend = ShmBackend()
        self.use(backend)
        self.assertIsInstance(telemetry.get_backend().stream.dropped_count, int)
        before = telemetry.get_backend().stream.dropped_count
        s = pitlane_telemetry.stats()
        self.assertEqual(before, sum(s["dropped"].values()) + sum(s["not_emitted"].values()))
        backend.stream.close()  # retires the worker; later emits are not sent, and counted
        self.assertEqual(telemetry.emit("tool.result_size", {"bytes": 1}), "no_worker")
        self.assertEqual(telemetry.get_backend().stream.dropped_count, before + 1)

    def test_composite_of_shm_and_stderr_sends_to_both(self) -> None:
        self.use(CompositeBackend([ShmBackend(), StderrBackend()]))
        saved = sys.stderr
        sys.stderr = io.StringIO()
        try:
            results = telemetry.emit("tool.result_size", {"bytes": 7}, {"tool": "both"})
            line = sys.stderr.getvalue()
        finally:
            sys.stderr = saved
        self.assertEqual(results, ["ok", None])
        self.assertEqual(json.loads(line[len("TELEMETRY:"):])["metadata"], {"tool": "both"})
        (event,) = self.host.wait_count(RESULT_SIZE, 1)
        self.assertEqual(event["metadata"]["tool"], "both")
        self.assertIs(telemetry.get_backend().stream, telemetry.get_backend().backends[0].stream)

    def test_snakepit_guide_snippets_run_unchanged_but_for_the_import(self) -> None:
        # The Python snippets of Snakepit's README, guides/observability.md and
        # guides/python-adapters.md, restated with stand-ins for the model.
        self.use(ShmBackend())
        predict = lambda x: x  # noqa: E731

        telemetry.emit(
            "tool.execution.stop",
            {"duration": 1234, "bytes": 5000},
            {"tool": "predict", "status": "success"},
            correlation_id="abc-123",
        )
        with telemetry.span("inference", {"model": "gpt-4"}):
            predict(1)
        with telemetry.span("complex_operation"):
            with telemetry.span("preprocessing"):
                processed = predict(2)
            with telemetry.span("inference"):
                predict(processed)
        correlation_id = telemetry.new_correlation_id()
        self.addCleanup(telemetry.set_correlation_id, None)  # the snippet keeps no token
        telemetry.set_correlation_id(correlation_id)
        self.assertEqual(telemetry.get_correlation_id(), correlation_id)
        telemetry.reset_correlation_id()
        metadata = telemetry.outgoing_metadata()
        self.assertIn((telemetry.CORRELATION_HEADER, correlation_id), metadata)
        telemetry.emit("model.inference", measurements={"latency_ms": 45, "tokens": 128},
                       metadata={"model": "gpt-4", "batch_size": 1})
        with telemetry.span("data_processing", {"stage": "preprocessing"}):
            predict(3)
        if telemetry.is_enabled():
            telemetry.emit("custom.event", {"value": 42})
        self.assertGreaterEqual(telemetry.get_backend().stream.dropped_count, 0)

        # Every event is accounted for by the host: tool.execution.stop delivered; the names
        # outside Snakepit's catalog (inference.*, model.inference, ...) counted as unknown.
        self.host.wait_count(TOOL_STOP, 1)
        host = self.host.wait_stats(lambda h: sum(r["published"] for r in h["rings"]) == 13
                                    and sum(r["delivered"] + sum(r["rejected"].values())
                                            for r in h["rings"]) == 13)
        rejected = sum(r["rejected"]["unknown_event"] for r in host["rings"])
        self.assertEqual(rejected, 12)


class TelemetryStreamBeforeTheHostTest(unittest.TestCase):
    """test_telemetry_stream.py: what a stream emits before its host is there is kept, up to
    ``max_buffer``, and delivered when the host appears; the rest is counted as dropped."""

    def setUp(self) -> None:
        pitlane_telemetry.shutdown()
        self.ns = unique_namespace()
        self.addCleanup(remove_segments, self.ns)
        self.addCleanup(pitlane_telemetry.shutdown)
        env = mock.patch.dict(os.environ, {"PITLANE_NAMESPACE": self.ns})
        env.start()
        self.addCleanup(env.stop)

    def attach_host(self) -> HostProcess:
        host = HostProcess(self.ns)
        self.addCleanup(host.close)
        self.assertTrue(pitlane_telemetry.wait_attached(TIMEOUT))
        return host

    # test_telemetry_stream.py: test_emit_before_stream_attach_is_buffered_and_flushed
    def test_emit_before_the_host_is_kept_and_delivered_when_it_appears(self) -> None:
        stream = TelemetryStream(max_buffer=4)
        self.assertEqual(stream.emit("tool.execution.start", {"system_time": 123},
                                     {"tool": "telemetry_demo", "operation": "buffered"},
                                     correlation_id="cid-buffered"), "buffered")
        host = self.attach_host()
        (event,) = host.wait_count(TOOL_START, 1)
        self.assertEqual(event["measurements"]["system_time"], 123)
        self.assertEqual(event["metadata"]["tool"], "telemetry_demo")
        self.assertEqual(event["metadata"]["operation"], "buffered")
        self.assertEqual(event["correlation_id"], "cid-buffered")
        self.assertEqual(stream.dropped_count, 0)

    # test_telemetry_stream.py: test_pre_stream_buffer_respects_capacity_and_tracks_drops
    def test_max_buffer_bounds_the_kept_events_and_the_rest_are_counted(self) -> None:
        stream = TelemetryStream(max_buffer=1)
        outcomes = [stream.emit("tool.execution.start", {"system_time": 1}, {"index": "first"}),
                    stream.emit("tool.execution.start", {"system_time": 2}, {"index": "second"})]
        self.assertEqual(outcomes, ["buffered", "dropped_no_ring"])
        host = self.attach_host()
        (event,) = host.wait_count(TOOL_START, 1)
        self.assertEqual(event["metadata"]["index"], "first")
        self.assertEqual(stream.dropped_count, 1)
        self.assertEqual(stream.emit("tool.execution.start", {"system_time": 3},
                                     {"index": "third"}), "ok")
        self.assertEqual([e["metadata"]["index"] for e in host.wait_count(TOOL_START, 2)],
                         ["first", "third"])

    def test_max_buffer_must_be_positive(self) -> None:
        with self.assertRaises(ValueError):
            TelemetryStream(max_buffer=0)


# A child interpreter that imports the module under SNAKEPIT_TELEMETRY_BACKEND and emits.
CHILD = r"""
import json, sys
from pitlane.snakepit import telemetry
backend = telemetry.get_backend()
result = telemetry.emit("tool.result_size", {"bytes": 9}, {"tool": "env"})
info = {"backend": type(backend).__name__ if backend is not None else None,
        "members": [type(b).__name__ for b in getattr(backend, "backends", [])],
        "result": result}
if backend is not None and hasattr(backend, "backends") or hasattr(backend, "stream"):
    from pitlane import telemetry as pt
    pt.wait_attached(10)
    info["after_attach"] = telemetry.emit("tool.result_size", {"bytes": 10}, {"tool": "env"})
    info["transport"] = pt.stats()["transport"]
    pt.shutdown()
print(json.dumps(info))
"""


class EnvironmentSelectionTest(unittest.TestCase):
    def run_child(self, value, extra=None, expect_ok=True):
        env = dict(os.environ)
        for k in ("PITLANE_TRANSPORT", "PITLANE_GRPC_TARGET", "PITLANE_GRPC_LISTEN",
                  "SNAKEPIT_TELEMETRY_BACKEND"):
            env.pop(k, None)
        if value is not None:
            env["SNAKEPIT_TELEMETRY_BACKEND"] = value
        env.update(extra or {})
        out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True,
                             text=True, timeout=TIMEOUT * 2)
        if expect_ok:
            self.assertEqual(out.returncode, 0, out.stderr)
        return out

    def with_host(self, grpc: bool = False) -> HostProcess:
        ns = unique_namespace()
        host = HostProcess(ns, grpc_listen="127.0.0.1:0" if grpc else None)
        self.addCleanup(remove_segments, ns)
        self.addCleanup(host.close)
        return host

    def test_unset_selects_pitlane_over_shared_memory_when_the_host_is_local(self) -> None:
        host = self.with_host()
        out = self.run_child(None, {"PITLANE_NAMESPACE": host.ns})
        info = json.loads(out.stdout)
        self.assertEqual(info["backend"], "PitlaneBackend")
        self.assertEqual(info["transport"], "shm")
        self.assertEqual(info["after_attach"], "ok")
        self.assertEqual(host.wait_count(RESULT_SIZE, 1)[0]["transport"], "shm")

    def test_shm_selects_shared_memory(self) -> None:
        host = self.with_host()
        info = json.loads(self.run_child("shm", {"PITLANE_NAMESPACE": host.ns}).stdout)
        self.assertEqual((info["backend"], info["transport"]), ("ShmBackend", "shm"))
        host.wait_count(RESULT_SIZE, 1)

    def test_grpc_selects_pitlanes_grpc_transport_even_with_a_local_host(self) -> None:
        host = self.with_host(grpc=True)
        info = json.loads(self.run_child("grpc", {
            "PITLANE_NAMESPACE": host.ns, "PITLANE_WORKER_ID": "py-env-grpc",
            "PITLANE_GRPC_TARGET": f"127.0.0.1:{host.grpc_port}"}).stdout)
        self.assertEqual((info["backend"], info["transport"]), ("GrpcBackend", "grpc"))
        event = host.wait_count(RESULT_SIZE, 1)[0]
        self.assertEqual((event["transport"], event["worker_id"]), ("grpc", "py-env-grpc"))

    def test_stderr_writes_snakepits_lines(self) -> None:
        out = self.run_child("stderr")
        info = json.loads(out.stdout)
        self.assertEqual(info["backend"], "StderrBackend")
        self.assertIsNone(info["result"])
        payload = json.loads(out.stderr.splitlines()[0][len("TELEMETRY:"):])
        self.assertEqual(payload["event"], "tool.result_size")

    def test_several_names_send_to_each(self) -> None:
        host = self.with_host()
        out = self.run_child(" shm , stderr ", {"PITLANE_NAMESPACE": host.ns})
        info = json.loads(out.stdout)
        self.assertEqual(info["backend"], "CompositeBackend")
        self.assertEqual(info["members"], ["ShmBackend", "StderrBackend"])
        self.assertEqual(info["after_attach"], ["ok", None])
        self.assertEqual(sum(line.startswith("TELEMETRY:") for line in out.stderr.splitlines()), 2)
        host.wait_count(RESULT_SIZE, 1)

    def test_none_disables_telemetry(self) -> None:
        info = json.loads(self.run_child("none").stdout)
        self.assertIsNone(info["backend"])
        self.assertIsNone(info["result"])

    def test_invalid_values_fail_the_import_naming_the_variable(self) -> None:
        for value, why in (("bogus", "unknown backend 'bogus'"),
                           ("shm,grpc", "one process has one pitlane worker"),
                           ("stderr,stderr", "named twice"),
                           ("none,stderr", "unknown backend 'none'")):
            out = self.run_child(value, expect_ok=False)
            self.assertNotEqual(out.returncode, 0, value)
            self.assertIn("ValueError: SNAKEPIT_TELEMETRY_BACKEND=", out.stderr)
            self.assertIn(why, out.stderr)


README = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "README.md")


class ReadmeSnippetTest(unittest.TestCase):
    def test_the_coming_from_snakepit_snippet_runs_as_written(self) -> None:
        try:
            import grpc  # noqa: F401  (the snippet serves a gRPC call, as a Snakepit worker)
        except ImportError:
            self.skipTest("grpcio is not installed (Debian: python3-grpcio)")
        with open(README) as f:
            section = f.read().split("\n## Coming from Snakepit\n", 1)[1]
        snippet = section.split("```python\n", 1)[1].split("\n```", 1)[0]
        ns = unique_namespace()
        host = HostProcess(ns)
        self.addCleanup(remove_segments, ns)
        self.addCleanup(host.close)
        env = {k: v for k, v in os.environ.items()
               if k not in ("PITLANE_TRANSPORT", "PITLANE_GRPC_TARGET", "PITLANE_GRPC_LISTEN",
                            "SNAKEPIT_TELEMETRY_BACKEND")}
        env["PITLANE_NAMESPACE"] = ns
        out = subprocess.run([sys.executable, "-c", snippet], env=env, capture_output=True,
                             text=True, timeout=TIMEOUT * 2)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertEqual(out.stdout.splitlines(), ["correlation id: req-42", "0"])
        start, = host.wait_count(TOOL_START, 1)
        self.assertEqual(start["correlation_id"], "req-42")
        stops = host.wait_count(TOOL_STOP, 2)
        self.assertEqual(sorted(e["correlation_id"] for e in stops), ["", "req-42"])


if __name__ == "__main__":
    unittest.main()
