"""pitlane.telemetry.emit: delivery to a C++ host, the value conversion rules, the counters and
the host's catalog rejections."""

from __future__ import annotations

import collections
import decimal
import math
import os
import re
import types
import unittest
from collections.abc import Mapping

from pitlane import telemetry

from pitlane_testing import (
    TIMEOUT,
    HostProcess,
    HostTestCase,
    remove_segments,
    ring_totals,
    unique_namespace,
    worker_conserved,
)

STOP = "snakepit.python.call.stop"
START = "snakepit.python.call.start"
MEMORY = "snakepit.python.memory.sampled"


class Shouting:
    def __str__(self) -> str:
        return "LOUD"


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no text for you")


class Interrupting:
    def __str__(self) -> str:
        raise KeyboardInterrupt


class DurationKey:
    """A measurement key that is not a str but prints as an allowed key."""

    def __str__(self) -> str:
        return "duration"


class ReadOnlyMapping(Mapping):
    def __init__(self, **items) -> None:
        self._items = dict(items)

    def __getitem__(self, key):
        return self._items[key]

    def __iter__(self):
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)


class BrokenMapping(Mapping):
    def __getitem__(self, key):
        raise LookupError(key)

    def __iter__(self):
        raise RuntimeError("cannot iterate")

    def __len__(self) -> int:
        return 1


class EmitDeliveryTest(HostTestCase):
    def test_event_reaches_host_with_name_measurements_metadata_and_correlation_id(self) -> None:
        result = telemetry.emit(
            "python.call.stop",
            {"duration": 1234, "response_size": 512},
            {"command": "predict", "result": "ok"},
            correlation_id="pl-abc",
        )
        self.assertEqual(result, "ok")
        (event,) = self.host.wait_count(STOP, 1)
        self.assertEqual(event["measurements"], {"duration": 1234, "response_size": 512})
        self.assertEqual(event["metadata"]["command"], "predict")
        self.assertEqual(event["metadata"]["result"], "ok")
        self.assertEqual(event["correlation_id"], "pl-abc")
        self.assertEqual(event["worker_id"], self.worker_id)
        self.assertEqual(event["worker_pid"], os.getpid())
        self.assertEqual(event["transport"], "shm")

    def test_keyword_arguments_and_canonical_names_are_accepted(self) -> None:
        self.assertEqual(
            telemetry.emit(event_name="python.tool.execution.start",
                           measurements={"system_time": 7}, metadata={"tool": "search"}),
            "ok",
        )
        (event,) = self.host.wait_count("snakepit.python.tool.execution.start", 1)
        self.assertEqual(event["measurements"], {"system_time": 7})
        self.assertEqual(event["metadata"]["tool"], "search")

    def test_measurements_and_metadata_may_be_omitted(self) -> None:
        self.assertEqual(telemetry.emit("python.call.start"), "ok")
        self.assertEqual(telemetry.emit("python.call.start", None, None, None), "ok")
        events = self.host.wait_count(START, 2)
        self.assertEqual(events[0]["measurements"], {})
        self.assertEqual(events[0]["correlation_id"], "")

    def test_signature_errors_raise_type_error(self) -> None:
        with self.assertRaises(TypeError):
            telemetry.emit()  # type: ignore[call-arg]
        with self.assertRaises(TypeError):
            telemetry.emit("python.call.start", colour="red")  # type: ignore[call-arg]
        with self.assertRaises(TypeError):
            telemetry.emit("python.call.start", {}, {}, None, 5)  # type: ignore[call-arg]
        with self.assertRaises(TypeError):
            telemetry.emit("python.call.start", event_name="x")  # type: ignore[call-arg]

    def test_stats_conserve_every_event_and_match_the_host(self) -> None:
        for i in range(50):
            telemetry.emit("python.memory.sampled", {"rss_bytes": i}, {"python_pid": "1"})
        self.host.wait_count(MEMORY, 50)
        s = telemetry.stats()
        self.assertEqual(s["emitted"], 50)
        self.assertEqual(s["published"], 50)
        self.assertTrue(worker_conserved(s), s)
        self.assertEqual(s["worker_id"], self.worker_id)
        self.assertEqual(s["namespace"], self.ns)
        self.assertTrue(s["attached"])
        self.assertEqual(s["live_rings"], 1)
        self.assertEqual(telemetry.dropped_count(), 0)
        host = self.host.wait_stats(lambda h: ring_totals(h)["delivered"] == 50)
        self.assertTrue(all(r["conserved"] for r in host["rings"]), host)


class ValueConversionTest(HostTestCase):
    def emit_one(self, measurements=None, metadata=None) -> dict:
        before = len(self.host.events(STOP))
        self.assertEqual(telemetry.emit("python.call.stop", measurements, metadata), "ok")
        return self.host.wait_count(STOP, before + 1)[-1]

    def test_bool_measurements_become_int_zero_or_one(self) -> None:
        event = self.emit_one({"duration": True, "response_size": False})
        self.assertEqual(event["measurements"], {"duration": 1, "response_size": 0})
        self.assertIs(type(event["measurements"]["duration"]), int)

    def test_ints_at_the_int64_limits_stay_ints(self) -> None:
        event = self.emit_one({"duration": 2**63 - 1, "response_size": -(2**63)})
        self.assertEqual(event["measurements"], {"duration": 2**63 - 1, "response_size": -(2**63)})

    def test_ints_beyond_int64_become_their_decimal_string(self) -> None:
        event = self.emit_one({"duration": 2**63, "response_size": -(2**63) - 1})
        self.assertEqual(event["measurements"],
                         {"duration": str(2**63), "response_size": str(-(2**63) - 1)})

    def test_int_subclass_beyond_int64_keeps_its_digits(self) -> None:
        class Big(int):
            def __str__(self) -> str:
                return "big"

        event = self.emit_one({"duration": Big(2**64)})
        self.assertEqual(event["measurements"], {"duration": str(2**64)})

    def test_floats_stay_doubles(self) -> None:
        event = self.emit_one({"duration": 1.0, "response_size": -2.5e-300})
        self.assertEqual(event["measurements"], {"duration": 1.0, "response_size": -2.5e-300})
        self.assertIs(type(event["measurements"]["duration"]), float)

    def test_nan_and_infinities_travel_unchanged(self) -> None:
        event = self.emit_one({"duration": math.nan, "response_size": math.inf,
                               "bytes": -math.inf})
        m = event["measurements"]
        self.assertTrue(math.isnan(m["duration"]))
        self.assertEqual(m["response_size"], math.inf)
        self.assertEqual(m["bytes"], -math.inf)

    def test_other_measurement_values_become_their_str(self) -> None:
        event = self.emit_one({"duration": decimal.Decimal("1.25"), "response_size": None,
                               "bytes": Shouting(), "count": "already text"})
        self.assertEqual(event["measurements"], {"duration": "1.25", "response_size": "None",
                                                 "bytes": "LOUD", "count": "already text"})

    def test_metadata_values_are_stringified(self) -> None:
        event = self.emit_one(None, {"command": 42, "result": None, "model": 1.5,
                                     "device": ["a", 1], "tool": Shouting(), "kind": True})
        md = event["metadata"]
        self.assertEqual(md["command"], "42")
        self.assertEqual(md["result"], "None")
        self.assertEqual(md["model"], "1.5")
        self.assertEqual(md["device"], "['a', 1]")
        self.assertEqual(md["tool"], "LOUD")
        self.assertEqual(md["kind"], "True")

    def test_non_string_keys_are_stringified(self) -> None:
        event = self.emit_one({DurationKey(): 5}, {7: "seven", None: "none", ("a", 1): "tuple"})
        self.assertEqual(event["measurements"], {"duration": 5})
        md = event["metadata"]
        self.assertEqual(md["7"], "seven")
        self.assertEqual(md["None"], "none")
        self.assertEqual(md["('a', 1)"], "tuple")

    def test_event_name_that_is_not_a_string_is_stringified(self) -> None:
        class Name:
            def __str__(self) -> str:
                return "python.call.stop"

        self.assertEqual(telemetry.emit(Name(), {"duration": 3}), "ok")
        (event,) = self.host.wait_count(STOP, 1)
        self.assertEqual(event["measurements"], {"duration": 3})

    def test_values_whose_str_raises_are_sent_as_unprintable_type_and_counted(self) -> None:
        before = telemetry.stats()["conversion_errors"]
        event = self.emit_one({"duration": Unprintable()}, {"command": Unprintable()})
        self.assertEqual(event["measurements"], {"duration": "<unprintable Unprintable>"})
        self.assertEqual(event["metadata"]["command"], "<unprintable Unprintable>")
        self.assertEqual(telemetry.stats()["conversion_errors"] - before, 2)

    def test_unicode_text_is_sent_as_utf8_and_lone_surrogates_as_escapes(self) -> None:
        event = self.emit_one(None, {"command": "prédire ✓", "result": "bad\udcffend"})
        self.assertEqual(event["metadata"]["command"], "prédire ✓")
        self.assertEqual(event["metadata"]["result"], "bad\\udcffend")

    def test_mappings_other_than_dict_are_accepted(self) -> None:
        event = self.emit_one(types.MappingProxyType({"duration": 9}),
                              ReadOnlyMapping(command="m", result="r"))
        self.assertEqual(event["measurements"], {"duration": 9})
        self.assertEqual(event["metadata"]["command"], "m")
        event = self.emit_one(collections.OrderedDict(duration=10), collections.Counter(a=2))
        self.assertEqual(event["measurements"], {"duration": 10})
        self.assertEqual(event["metadata"]["a"], "2")

    def test_argument_that_is_not_a_mapping_is_counted_and_not_emitted(self) -> None:
        before = telemetry.stats()["not_emitted"]["invalid_argument"]
        self.assertEqual(telemetry.emit("python.call.stop", [("duration", 1)]), "invalid_argument")
        self.assertEqual(telemetry.emit("python.call.stop", {"duration": 1}, "command=x"),
                         "invalid_argument")
        self.assertEqual(telemetry.emit("python.call.stop", BrokenMapping()), "invalid_argument")
        s = telemetry.stats()
        self.assertEqual(s["not_emitted"]["invalid_argument"] - before, 3)
        self.assertEqual(s["emitted"], 0)

    def test_keyboard_interrupt_raised_by_a_value_propagates_and_nothing_is_emitted(self) -> None:
        with self.assertRaises(KeyboardInterrupt):
            telemetry.emit("python.call.stop", {"duration": Interrupting()})
        with self.assertRaises(KeyboardInterrupt):
            telemetry.emit("python.call.stop", None, {"command": Interrupting()})
        self.assertEqual(telemetry.stats()["emitted"], 0)

    def test_dict_mutated_by_a_value_str_does_not_break_emit(self) -> None:
        metadata: dict = {}

        class Mutator:
            def __str__(self) -> str:
                metadata.clear()
                metadata.update({f"k{i}": i for i in range(50)})
                return "mutated"

        metadata["command"] = Mutator()
        result = telemetry.emit("python.call.stop", {"duration": 1}, metadata)
        self.assertIn(result, ("ok", "invalid_argument", "dropped_over_limit"))


class CatalogRejectionTest(HostTestCase):
    def test_unknown_event_is_published_then_rejected_and_counted_by_the_host(self) -> None:
        self.assertEqual(telemetry.emit("inference.start", {"duration": 1}), "ok")
        host = self.host.wait_stats(lambda h: h["host"]["rejected"]["unknown_event"] == 1)
        self.assertEqual(ring_totals(host)["rejected"]["unknown_event"], 1)
        self.assertEqual(self.host.events(), [])

    def test_measurement_key_outside_the_allowlist_rejects_the_whole_event(self) -> None:
        self.assertEqual(telemetry.emit("python.call.stop", {"duration": 1, "flops": 2}), "ok")
        host = self.host.wait_stats(lambda h: h["host"]["rejected"]["bad_measurement_key"] == 1)
        self.assertEqual(host["host"]["delivered"], 0)
        self.assertEqual(self.host.events(STOP), [])

    def test_unknown_metadata_keys_are_kept_as_plain_strings(self) -> None:
        telemetry.emit("python.call.stop", {"duration": 1}, {"my_label": "x"})
        (event,) = self.host.wait_count(STOP, 1)
        self.assertEqual(event["metadata"]["my_label"], "x")

    def test_host_control_suppresses_events_and_counts_them_per_reason(self) -> None:
        self.host.wait_stats(lambda h: any(w["id"] == self.worker_id for w in h["workers"]))
        self.host.control(f"toggle {self.worker_id} 0")
        self.wait_outcome("python.call.start", "suppressed_disabled")
        self.host.control(f"toggle {self.worker_id} 1")
        self.host.control(f"filter {self.worker_id} - python.call.*")
        self.wait_outcome("python.call.start", "suppressed_filtered")
        self.host.control(f"filter {self.worker_id} - -")
        self.host.control(f"sampling {self.worker_id} 0 python.memory.*")
        self.wait_outcome("python.memory.sampled", "suppressed_sampled")
        self.assertEqual(telemetry.emit("python.call.start", {"system_time": 1}), "ok")
        s = telemetry.stats()
        for reason in ("disabled", "filtered", "sampled"):
            self.assertGreaterEqual(s["suppressed"][reason], 1, s)
        self.assertTrue(worker_conserved(s), s)

    def wait_outcome(self, event: str, outcome: str) -> None:
        # The worker applies a control update at its next emit after the host wrote it.
        for _ in range(500):
            if telemetry.emit(event) == outcome:
                return
        self.fail(f"{event} never became {outcome}")


class DropTest(HostTestCase):
    def test_value_the_host_would_cut_is_cut_at_emit_not_the_event_dropped(self) -> None:
        # 300 KiB would make a record beyond any ring's largest: cut to the catalog's 1 KiB
        # where the host would cut it, the event delivered.
        result = telemetry.emit("python.error.occurred", {"count": 1},
                                {"traceback": "x" * (300 * 1024)})
        self.assertEqual(result, "ok_truncated")
        (event,) = self.host.wait_count("snakepit.python.error.occurred", 1)
        self.assertEqual(event["metadata"]["traceback"], "x" * 1024)
        self.assertEqual(telemetry.dropped_count(), 0)
        s = telemetry.stats()
        self.assertEqual(s["published"], 1)
        self.assertTrue(worker_conserved(s), s)


class LifecycleTest(unittest.TestCase):
    def setUp(self) -> None:
        telemetry.shutdown()
        self.ns = unique_namespace()
        self.addCleanup(remove_segments, self.ns)
        self.addCleanup(telemetry.shutdown)

    def test_new_correlation_id_has_the_cpp_format_and_is_unique(self) -> None:
        ids = {telemetry.new_correlation_id() for _ in range(1000)}
        self.assertEqual(len(ids), 1000)
        for i in ids:
            self.assertRegex(i, r"^pl-[0-9a-f]{24}$")

    def test_without_a_host_events_are_kept_until_one_appears(self) -> None:
        info = telemetry.start(namespace=self.ns, worker_id="lonely", attach_wait=0)
        self.assertFalse(info["attached"])
        self.assertEqual(telemetry.emit("python.call.start"), "buffered")
        self.assertEqual(telemetry.dropped_count(), 0)
        s = telemetry.stats()
        self.assertEqual((s["pending"], s["emitted"]), (1, 0))

    def test_worker_attaches_when_the_host_appears_later(self) -> None:
        telemetry.start(namespace=self.ns, worker_id="early", attach_wait=0)
        host = HostProcess(self.ns)
        self.addCleanup(host.close)
        self.assertTrue(telemetry.wait_attached(TIMEOUT))
        self.assertEqual(telemetry.emit("python.call.start", {"system_time": 1}), "ok")
        host.wait_count(START, 1)

    def test_first_emit_starts_the_worker_from_the_environment(self) -> None:
        host = HostProcess(self.ns)
        self.addCleanup(host.close)
        saved = {k: os.environ.get(k) for k in ("PITLANE_NAMESPACE", "PITLANE_WORKER_ID")}
        self.addCleanup(self._restore_env, saved)
        os.environ["PITLANE_NAMESPACE"] = self.ns
        os.environ["PITLANE_WORKER_ID"] = "from-env"
        self.assertFalse(telemetry.stats()["running"])
        self.assertEqual(telemetry.emit("python.call.start", {"system_time": 1}), "ok")
        s = telemetry.stats()
        self.assertEqual((s["namespace"], s["worker_id"]), (self.ns, "from-env"))
        (event,) = host.wait_count(START, 1)
        self.assertEqual(event["worker_id"], "from-env")

    def test_bad_environment_makes_emit_return_no_worker_without_raising(self) -> None:
        saved = {"PITLANE_NAMESPACE": os.environ.get("PITLANE_NAMESPACE")}
        self.addCleanup(self._restore_env, saved)
        os.environ["PITLANE_NAMESPACE"] = "not a valid/namespace"
        before = telemetry.stats()["not_emitted"]["no_worker"]
        self.assertEqual(telemetry.emit("python.call.start"), "no_worker")
        s = telemetry.stats()
        self.assertEqual(s["not_emitted"]["no_worker"] - before, 1)
        self.assertIn("not a valid/namespace", s["start_error"])
        self.assertFalse(s["running"])

    def test_invalid_start_arguments_raise_value_error(self) -> None:
        with self.assertRaises(ValueError):
            telemetry.start(namespace="bad/ns")
        with self.assertRaises(ValueError):
            telemetry.start(namespace=self.ns, worker_id="w" * 200)
        with self.assertRaises(ValueError):
            telemetry.start(namespace=self.ns, attach_wait=-1)
        self.assertFalse(telemetry.stats()["running"])

    def test_start_again_keeps_the_worker_and_a_different_namespace_raises(self) -> None:
        telemetry.start(namespace=self.ns, worker_id="same", attach_wait=0)
        self.assertEqual(telemetry.start(namespace=self.ns)["worker_id"], "same")
        self.assertEqual(telemetry.start()["worker_id"], "same")
        with self.assertRaises(RuntimeError):
            telemetry.start(namespace=self.ns + "other")
        with self.assertRaises(RuntimeError):
            telemetry.start(worker_id="different")

    def test_shutdown_retires_the_rings_and_the_host_reclaims_them(self) -> None:
        host = HostProcess(self.ns)
        self.addCleanup(host.close)
        telemetry.start(namespace=self.ns, worker_id="leaving", attach_wait=TIMEOUT)
        self.assertEqual(telemetry.emit("python.call.start", {"system_time": 1}), "ok")
        last = telemetry.shutdown()
        self.assertEqual(last["emitted"], 1)
        self.assertFalse(telemetry.stats()["running"])
        stats = host.wait_stats(lambda h: h["host"]["workers_terminated"] == 1
                                and all(r["reclaimed"] for r in h["rings"]))
        self.assertEqual(ring_totals(stats)["delivered"], 1)
        host.wait_count("snakepit.pool.worker.terminated", 1)

    @staticmethod
    def _restore_env(saved: dict) -> None:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


if __name__ == "__main__":
    unittest.main()
