#!/usr/bin/env python3
"""`pitlane host --otlp ENDPOINT` end to end, against tests/otlp/receiver.js (the official
OpenTelemetry JS decoder):

* a `pitlane emit` span end arrives as a span of the emitted trace id, a --metric counter as a
  monotonic Sum, and the status line counts what was exported;
* nested `telemetry.span`s of a Python worker arrive with their parentage, over shared memory
  and over gRPC (when the Python module is built);
* --metrics serves the exporter's counts as pitlane_otlp_* families, and `pitlane stat` (text
  and --json) shows them, read from the host's admin service, with the other exporters of the
  host (a --jsonl-file here), each as it reports itself.

usage: cli_host_exports.py PITLANE NODE [PYTHON_PACKAGE_DIR]
"""
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

pitlane, node = sys.argv[1], sys.argv[2]
python_dir = sys.argv[3] if len(sys.argv) > 3 else None
here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "..", "interop"))
from interop_util import wait_for  # noqa: E402  (the tests' shared polling)
WAIT = 20  # seconds any single condition may take on a loaded machine
trace = "0af7651916cd43dd8448eb211c80319c"
ns = f"ctest-otlp-cli-{os.getpid()}"

PY_WORKER = r"""
import sys
from pitlane import telemetry
telemetry.start(attach_wait=5)
assert telemetry.wait_attached(10), telemetry.stats()
with telemetry.span("python.call", {"command": sys.argv[1]}, correlation_id=sys.argv[2]):
    outer = telemetry.traceparent()
    with telemetry.span("tool.execution", {"tool": sys.argv[1]}):
        inner = telemetry.traceparent()
print(outer, inner)
telemetry.shutdown()
"""


def spans_of(requests):
    return [s for r in requests if r.get("signal") == "traces"
            for rs in r["request"]["resourceSpans"] for ss in rs["scopeSpans"]
            for s in ss["spans"]]


with tempfile.TemporaryDirectory() as tmp:
    out = os.path.join(tmp, "requests.jsonl")
    events_file = os.path.join(tmp, "events.jsonl")  # --jsonl-file: a second exporter

    def requests():
        if not os.path.exists(out):
            return []
        with open(out) as f:
            return [json.loads(line) for line in f if line.strip()]

    receiver = subprocess.Popen([node, os.path.join(here, "receiver.js"), "--out", out],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    host = None
    try:
        ready = receiver.stdout.readline().split()
        assert ready[:1] == ["ready"], f"receiver did not start: {ready}"
        http_port = ready[1]
        host = subprocess.Popen(
            [pitlane, "host", "--ns", ns, "--admin", f"unix:{tmp}/admin.sock", "--interval", "60",
             "--grpc-listen", "127.0.0.1:0", "--metrics", "127.0.0.1:0",
             "--otlp", f"http://127.0.0.1:{http_port}", "--jsonl-file", events_file,
             "--metric", "counter(snakepit.python.call.stop.count)"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env=dict(os.environ, OTEL_SERVICE_NAME="cli-test"))
        lines = []
        reader = threading.Thread(target=lambda: lines.extend(host.stdout), daemon=True)
        reader.start()
        grpc_line = wait_for(lambda: next((l for l in lines if "gRPC dial-in" in l), None),
                             WAIT, "the host's gRPC port")
        grpc_port = re.search(r":(\d+)", grpc_line.split(" on ")[1]).group(1)

        r = None
        for _ in range(50):
            r = subprocess.run([pitlane, "emit", "--ns", ns, "python.call.stop", "-m",
                                "duration=2000", "--correlation-id", trace],
                               capture_output=True, text=True)
            if r.returncode == 0:
                break
            time.sleep(0.1)
        assert r.returncode == 0, r.stdout + r.stderr
        expected = 1

        python_runs = []
        if python_dir:
            for transport, corr in (("shm", "a" * 32), ("grpc", "b" * 32)):
                env = dict(os.environ, PYTHONPATH=python_dir, PITLANE_NAMESPACE=ns,
                           PITLANE_TRANSPORT=transport,
                           PITLANE_GRPC_TARGET=f"127.0.0.1:{grpc_port}")
                w = subprocess.run(["python3", "-c", PY_WORKER, transport, corr], env=env,
                                   capture_output=True, text=True, timeout=60)
                assert w.returncode == 0, w.stdout + w.stderr
                outer_tp, inner_tp = w.stdout.split()
                python_runs.append((transport, corr, outer_tp, inner_tp))
                expected += 2

        wait_for(lambda: len(spans_of(requests())) >= expected, WAIT, f"{expected} spans")
        metrics_line = next(l for l in lines if "Prometheus metrics on" in l)
        scrape_url = metrics_line.split(" on ")[1].strip()

        def scrape():
            text = urllib.request.urlopen(scrape_url, timeout=10).read().decode()
            return text if (f'pitlane_otlp_exported_total{{signal="traces"}} {expected}\n'
                            in text) else None
        text = wait_for(scrape, WAIT, "the exported spans on /metrics")
        assert "# TYPE pitlane_otlp_dropped_total counter" in text, text
        assert 'pitlane_otlp_dropped_total{reason="pending_full"} 0' in text, text
        assert "pitlane_otlp_retries_total 0" in text, text
        # `pitlane stat` shows the same counts, read from the host's admin service.
        admin = ["--admin", f"unix:{tmp}/admin.sock"]
        stat = subprocess.run([pitlane, "stat", "--ns", ns, "--json"] + admin,
                              capture_output=True, text=True, timeout=30)
        assert stat.returncode == 0, stat.stdout + stat.stderr
        exporters = json.loads(stat.stdout)["exporters"]
        # Every exporter of the host reports itself, the JSONL file's too.
        assert [e["name"] for e in exporters] == ["jsonl", "otlp"], exporters
        assert exporters[0]["target"] == events_file, exporters
        assert exporters[0]["counts"]["lines_written"] >= 1, exporters
        assert exporters[0]["counts"]["overflow"] == 0, exporters
        assert exporters[1]["target"] == f"http/protobuf http://127.0.0.1:{http_port}", exporters
        counts = exporters[1]["counts"]
        assert counts["spans_exported"] == expected and counts["dropped_refused"] == 0, counts
        assert counts["retries"] == 0 and "metric_points_exported" in counts, counts
        stat_text = subprocess.run([pitlane, "stat", "--ns", ns] + admin, capture_output=True,
                                   text=True, timeout=30).stdout
        assert re.search(f"exporter otlp → http/protobuf http://127.0.0.1:{http_port}: "
                         f"spans_exported {expected}, ", stat_text), stat_text
        assert f"exporter jsonl → {events_file}: lines_written " in stat_text, stat_text
        print("pitlane stat:", counts)
        host.send_signal(signal.SIGINT)
        host.wait(timeout=30)
        reader.join(timeout=10)
        status = "".join(lines)
        print(status)
        assert host.returncode == 0, f"pitlane host exited {host.returncode}"
        assert f"OpenTelemetry export to http/protobuf http://127.0.0.1:{http_port}" in status
        assert re.search(f"otlp → http/protobuf http://127.0.0.1:{http_port}: spans_exported "
                         f"{expected}, metric_points_exported [1-9][0-9]*, logs_exported 0, "
                         "requests [1-9][0-9]*, retries 0, dropped_queue_full_events 0, ",
                         status), status
        # The status line's JSONL count is what the file holds once the host stopped.
        with open(events_file) as f:
            written = sum(1 for _ in f)
        assert written >= expected, written
        assert f"jsonl → {events_file}: lines_written {written}, overflow 0, " in status, status

        spans = spans_of(requests())
        assert len(spans) == expected, spans
        emitted = [s for s in spans if s["traceId"] == trace]
        assert len(emitted) == 1 and emitted[0]["name"] == "python.call", emitted
        resource = [r for r in requests() if r["signal"] == "traces"][0]["request"][
            "resourceSpans"][0]["resource"]["attributes"]
        assert {"key": "service.name", "value": {"stringValue": "cli-test"}} in resource, resource

        for transport, corr, outer_tp, inner_tp in python_runs:
            _, outer_trace, outer_id, _ = outer_tp.split("-")
            _, inner_trace, inner_id, _ = inner_tp.split("-")
            assert outer_trace == inner_trace == corr, (outer_tp, inner_tp)
            by_id = {s["spanId"]: s for s in spans if s["traceId"] == corr}
            assert set(by_id) == {outer_id, inner_id}, (transport, by_id)
            assert by_id[inner_id]["parentSpanId"] == outer_id, (transport, by_id)
            assert by_id[inner_id]["name"] == "python.tool.execution"
            assert not by_id[outer_id].get("parentSpanId"), by_id[outer_id]
            attrs = {a["key"]: a["value"] for a in by_id[inner_id]["attributes"]}
            assert attrs["pitlane.transport"]["stringValue"] == transport, attrs
            print(f"python over {transport}: {outer_id} -> {inner_id} OK")

        metrics = [m for r in requests() if r["signal"] == "metrics"
                   for rm in r["request"]["resourceMetrics"] for sm in rm["scopeMetrics"]
                   for m in sm["metrics"]]
        assert metrics and metrics[-1]["name"] == "snakepit.python.call.stop.count", metrics
        assert metrics[-1]["sum"]["isMonotonic"] is True
        # The emitted stop and each Python worker's python.call.stop.
        assert metrics[-1]["sum"]["dataPoints"][0]["asInt"] == str(1 + len(python_runs)), metrics
    finally:
        if host and host.poll() is None:
            host.kill()
            host.wait()
        receiver.stdin.close()
        receiver.wait(timeout=10)
        # A worker that exits just before its host stops leaves its ring (and so the registry)
        # for `pitlane cleanup`, as it would for an operator.
        subprocess.run([pitlane, "cleanup", "--ns", ns], capture_output=True, timeout=30)
print("OK")
