#!/usr/bin/python3
"""ctest interop_host_dials_python_worker.

Snakepit's direction: a Python grpcio server built from bindings that protoc generated from
proto/snakepit_compat.proto serves /snakepit.bridge.BridgeService/StreamTelemetry the way a
Snakepit worker does — the handler yields TelemetryEvent messages (event_parts such as
["python", "call", "stop"]) as the worker emits them while a thread of its own reads the
host's TelemetryControl messages and records them — and `pitlane host --grpc-dial
py=127.0.0.1:PORT --jsonl` dials it:

- the host sends the worker's full control state (toggle, sampling, filter) when the stream
  opens, announcing itself with metadata x-pitlane-host;
- the catalog-valid events the worker yields are delivered (JSON lines, worker_id "py",
  transport grpc) in order with their measurements, metadata and correlation ids; an event with
  an unknown name is not delivered;
- when `pitlane ctl` exists: it lists worker "py" as a live gRPC worker whose unknown event was
  counted as rejected; `toggle py off` reaches the worker as a TelemetryControl message;
  `sampling py 0.25 'python.memory.*'` and `filter py --allow 'python.*' --deny
  'python.cpu.*'`, which a Snakepit worker cannot apply as pitlane means them (it samples every
  event and matches wire names only), reach it as rate 1 and an empty filter while `ctl show`
  reports the rules as set; after the worker restarts on the same port the host redials it,
  reports the reconnection and replays that state; then the host itself samples out and
  filters the worker's events by those rules (canonical names included), counts them as
  suppressed, and takes the worker's pid from its events' python_pid. Without `pitlane ctl`
  these checks are skipped with a message.
"""

import json
import queue
import shutil
import subprocess
import tempfile
import threading
import time
from concurrent import futures

import interop_util as iu

WAIT = 20  # seconds any single condition may take on a loaded machine


def run(hosts):
    args = iu.parse_args(__doc__)
    import grpc
    import snakepit_compat_pb2_grpc as bridge_grpc
    import telemetry_pb2 as pb

    class SnakepitWorker(bridge_grpc.BridgeServiceServicer):
        """StreamTelemetry as Snakepit's Python worker serves it: events leave through the
        handler's generator, controls are consumed by a thread of their own."""

        def __init__(self):
            self.outbox = queue.Queue()
            self._lock = threading.Lock()
            self._controls = []
            self._calls = []

        def emit(self, event):
            self.outbox.put(event)

        def controls(self):
            with self._lock:
                return list(self._controls)

        def calls(self):
            with self._lock:
                return list(self._calls)

        def _consume(self, request_iterator):
            try:
                for control in request_iterator:
                    with self._lock:
                        self._controls.append(control)
            except grpc.RpcError:
                pass  # the call ended (host stopped or this server shut down)

        def StreamTelemetry(self, request_iterator, context):
            with self._lock:
                self._calls.append(dict(context.invocation_metadata()))
            threading.Thread(target=self._consume, args=(request_iterator,), daemon=True).start()
            while context.is_active():
                try:
                    event = self.outbox.get(timeout=0.05)
                except queue.Empty:
                    continue
                yield event

    def serve(port):
        """A worker serving on 127.0.0.1:port (0: any free port); returns (worker, server, port)."""
        worker = SnakepitWorker()
        deadline = time.monotonic() + WAIT
        while True:
            server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
            bridge_grpc.add_BridgeServiceServicer_to_server(worker, server)
            try:
                bound = server.add_insecure_port(f"127.0.0.1:{port}")
            except RuntimeError:
                bound = 0
            if bound:
                server.start()
                return worker, server, bound
            server.stop(None)
            if time.monotonic() >= deadline:
                raise iu.CheckFailed(f"cannot serve on 127.0.0.1:{port} again")
            time.sleep(0.1)

    def event(wire_name, measurements, metadata, correlation_id=""):
        e = pb.TelemetryEvent(event_parts=wire_name.split("."), metadata=metadata,
                              correlation_id=correlation_id, timestamp_ns=time.time_ns())
        for key, value in measurements.items():
            if isinstance(value, int):
                e.measurements[key].int_value = value
            else:
                e.measurements[key].float_value = value
        return e

    def control_state(controls):
        """The state a sequence of TelemetryControl messages leaves, as a worker applies them."""
        state = {}
        for c in controls:
            kind = c.WhichOneof("control")
            if kind == "toggle":
                state["enabled"] = c.toggle.enabled
            elif kind == "sampling":
                state["sampling"] = (c.sampling.sampling_rate, list(c.sampling.event_patterns))
            elif kind == "filter":
                state["filter"] = (list(c.filter.allow), list(c.filter.deny))
        return state

    servers = []
    workdir = tempfile.mkdtemp(prefix="pitlane-interop-")
    try:
        worker, server, port = serve(0)
        servers.append(server)
        # `pitlane ctl` and the host's admin service come together: probe before starting.
        probe = subprocess.run([args.pitlane, "ctl", "--help"], stdin=subprocess.DEVNULL,
                               capture_output=True, text=True, timeout=30, check=False)
        have_ctl = probe.returncode == 0
        ns = iu.unique_namespace("dial")
        admin = f"unix:{workdir}/admin.sock"
        host = iu.HostProcess(args.pitlane, ns, ["--grpc-dial", f"py=127.0.0.1:{port}",
                                                 "--duration", "120"]
                              + (["--admin", admin] if have_ctl else []))
        hosts.append(host)

        # ── the control state, first thing on the stream ─────────────────────────────────────
        iu.wait_for(lambda: len(worker.controls()) >= 3, WAIT,
                    "the host's initial control state at the Python worker",
                    still_running=host.running)
        first = worker.controls()[:3]
        iu.check([c.WhichOneof("control") for c in first] == ["toggle", "sampling", "filter"],
                 "the host sends toggle, sampling and filter first",
                 [c.WhichOneof("control") for c in first])
        state = control_state(first)
        iu.check(state == {"enabled": True, "sampling": (1.0, []), "filter": ([], [])},
                 "initial control state: enabled, rate 1 for every event, no filter", state)
        metadata = worker.calls()[0]
        iu.check(metadata.get("x-pitlane-host") == "1" and "authorization" not in metadata,
                 "the host announces itself (x-pitlane-host) and sends no token unasked", metadata)

        # ── events, as a Snakepit worker yields them ─────────────────────────────────────────
        sent = [
            ("snakepit.python.call.start",
             event("python.call.start", {"system_time": 42, "request_size": 128},
                   {"command": "predict", "session_id": "s-9"}, "corr-py-1")),
            ("snakepit.python.call.stop",
             event("python.call.stop", {"duration": 1500, "response_size": 256},
                   {"command": "predict", "result": "ok"}, "corr-py-1")),
            (None, event("python.not.in.catalog", {"duration": 1}, {"command": "predict"})),
            ("snakepit.python.tool.execution.stop",
             event("tool.execution.stop", {"duration": 0.75},
                   {"tool": "search", "operation": "query"}, "corr-py-2")),
        ]
        for _, e in sent:
            worker.emit(e)
        valid = [(name, e) for name, e in sent if name]
        # The last valid event follows the unknown one: once it is a JSON line the host has
        # folded (and rejected) the unknown one too.
        delivered = host.wait_events(lambda e: e.get("worker_id") == "py"
                                     and e.get("transport") != "host",
                                     len(valid), WAIT, f"{len(valid)} JSON lines of worker py")
        iu.check([e["name"] for e in delivered] == [name for name, _ in valid],
                 "the valid events arrive in order; the unknown name is not delivered",
                 [e["name"] for e in delivered])
        for line, (name, e) in zip(delivered, valid):
            measurements = {k: (v.int_value if v.WhichOneof("value") == "int_value"
                                else v.float_value) for k, v in e.measurements.items()}
            iu.check(line["transport"] == "grpc" and line["metadata"].get("worker_id") == "py",
                     f"{name}: transport grpc, worker_id py", line)
            iu.check(line["measurements"] == measurements
                     and all(type(line["measurements"][k]) is type(v)
                             for k, v in measurements.items()),
                     f"{name}: measurements as yielded", (line["measurements"], measurements))
            iu.check(all(line["metadata"].get(k) == v for k, v in e.metadata.items())
                     and line["correlation_id"] == e.correlation_id
                     and line["timestamp_ns"] == e.timestamp_ns,
                     f"{name}: metadata, correlation id and timestamp as yielded", line)
        opened = [e for e in host.events() if e.get("name") == "snakepit.grpc.stream.opened"
                  and e.get("worker_id") == "py"]
        iu.check(len(opened) == 1 and opened[0]["metadata"].get("direction") == "dial_out",
                 "the host reports one stream opened to py, direction dial_out", opened)

        # ── runtime control through `pitlane ctl` ────────────────────────────────────────────
        if not have_ctl:
            print("skipped: `pitlane ctl` is not available in this build "
                  f"({(probe.stderr or probe.stdout).strip()}); the control checks did not run",
                  flush=True)
        else:
            def ctl(*words):
                command = [args.pitlane, "ctl", "--admin", admin, *words]
                r = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True,
                                   text=True, timeout=30, check=False)
                iu.check(r.returncode == 0, "pitlane ctl " + " ".join(words) + " exits 0",
                         f"exit {r.returncode}: {r.stderr.strip()} {r.stdout.strip()}")
                return r.stdout

            listing = json.loads(ctl("workers", "--json"))
            py = [w for w in listing["workers"] if w["worker_id"] == "py"]
            iu.check(len(py) == 1 and py[0]["transport"] == "grpc" and py[0]["alive"],
                     "pitlane ctl workers lists py as a live gRPC worker", listing)
            counters = py[0]["counters"]
            iu.check(counters["delivered"] == len(valid)
                     and counters["rejected_by_reason"].get("unknown_event") == 1,
                     "the unknown event is counted as rejected (unknown_event), the rest delivered",
                     counters)

            def expect(update, predicate, what, target=worker):
                before = len(target.controls())
                ctl(*update)
                iu.eventually(lambda: any(predicate(c) for c in target.controls()[before:]), WAIT,
                              what, still_running=host.running)

            expect(("toggle", "py", "off"),
                   lambda c: c.WhichOneof("control") == "toggle" and not c.toggle.enabled,
                   "the Python worker received toggle{enabled: false}")
            # A Snakepit worker would sample every event at 0.25 and match the filter against
            # wire names only: it is sent what it applies exactly, the host does the rest.
            expect(("sampling", "py", "0.25", "python.memory.*"),
                   lambda c: c.WhichOneof("control") == "sampling"
                   and c.sampling.sampling_rate == 1.0
                   and list(c.sampling.event_patterns) == [],
                   "the Python worker received sampling{1.0, []} (the host samples)")
            expect(("filter", "py", "--allow", "python.*", "--deny", "python.cpu.*"),
                   lambda c: c.WhichOneof("control") == "filter"
                   and list(c.filter.allow) == [] and list(c.filter.deny) == [],
                   "the Python worker received an empty filter (the host filters)")
            wanted = {"enabled": False, "sampling": (1.0, []), "filter": ([], [])}
            iu.check(control_state(worker.controls()) == wanted,
                     "the worker holds only the toggle ctl set",
                     control_state(worker.controls()))
            shown = json.loads(ctl("show", "py", "--json"))["workers"][0]["control"]
            iu.check(shown == {"enabled": False, "sampling_rate": 0.25,
                               "sampling_patterns": ["python.memory.*"],
                               "allow": ["python.*"], "deny": ["python.cpu.*"]},
                     "pitlane ctl show reports the rules as set", shown)

            # The worker restarts on the same port: the host redials and replays the state.
            server.stop(None)
            servers.remove(server)
            host.wait_events(lambda e: e.get("name") == "snakepit.grpc.connection.lost"
                             and e.get("worker_id") == "py", 1, WAIT,
                             "the host reports the lost connection once the worker stops")
            restarted, server, _ = serve(port)
            servers.append(server)
            iu.eventually(lambda: control_state(restarted.controls()) == wanted, WAIT,
                          "after the restart the host replays toggle off, sampling and filter",
                          still_running=host.running)
            host.wait_events(lambda e: e.get("name") == "snakepit.grpc.connection.reconnected"
                             and e.get("worker_id") == "py", 1, WAIT,
                             "the host reports the reconnection (grpc.connection.reconnected)")
            expect(("toggle", "py", "on"),
                   lambda c: c.WhichOneof("control") == "toggle" and c.toggle.enabled,
                   "the restarted worker received toggle{enabled: true}", restarted)
            restarted.emit(event("python.call.stop", {"duration": 9}, {"command": "after"}))
            host.wait_events(lambda e: e.get("name") == "snakepit.python.call.stop"
                             and e.get("metadata", {}).get("command") == "after", 1, WAIT,
                             "the restarted worker's events are delivered")

            # ── the host applies what the Snakepit worker cannot ─────────────────────────────
            ctl("sampling", "py", "0", "python.memory.*")
            ctl("filter", "py", "--deny", "python.tool.*")
            before = json.loads(ctl("workers", "--json"))
            before = [w for w in before["workers"] if w["worker_id"] == "py"][0]["counters"]
            pid = {"python_pid": "4242"}
            restarted.emit(event("python.memory.sampled", {"rss_bytes": 1}, pid))   # sampled out
            restarted.emit(event("tool.execution.start", {"system_time": 1}, pid))  # denied
            restarted.emit(event("python.cpu.sampled", {"cpu_percent": 1.5}, pid))  # delivered
            cpu = host.wait_events(lambda e: e.get("name") == "snakepit.python.cpu.sampled"
                                   and e.get("worker_id") == "py", 1, WAIT,
                                   "the event no rule stops is delivered")[-1]
            iu.check(cpu["metadata"].get("worker_pid") == "4242" and cpu["worker_pid"] == 4242,
                     "the worker's pid is taken from its events (python_pid)", cpu)
            names = [e["name"] for e in host.events() if e.get("worker_id") == "py"]
            iu.check("snakepit.python.memory.sampled" not in names
                     and "snakepit.python.tool.execution.start" not in names,
                     "sampling 0 on python.memory.* and deny python.tool.* (a canonical name "
                     "of tool.execution.start) stop those events at the host", names)

            def suppressed():
                listing = json.loads(ctl("workers", "--json"))
                now = [w for w in listing["workers"] if w["worker_id"] == "py"][0]["counters"]
                return (now["suppressed_sampled"] - before["suppressed_sampled"],
                        now["suppressed_filtered"] - before["suppressed_filtered"])

            iu.eventually(lambda: suppressed() == (1, 1), WAIT,
                          "the host counts them as suppressed (sampled 1, filtered 1)",
                          still_running=host.running)

        rc = host.stop()
        iu.check(rc == 0, "the host exits 0 on SIGTERM", rc)
        iu.check(not host.bad_lines(), "every stdout line of the host is a JSON object",
                 host.bad_lines()[:3])
        iu.check(not any("not.in.catalog" in e.get("name", "") for e in host.events()),
                 "the unknown event never reached the JSON lines")
    finally:
        for s in servers:
            s.stop(None)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    iu.main(run)
