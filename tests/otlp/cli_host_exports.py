#!/usr/bin/env python3
"""`pitlane host --otlp ENDPOINT` end to end: a `pitlane emit` span end reaches the test collector
(tests/otlp/receiver.js, the official OpenTelemetry JS decoder) as a span of the emitted trace,
a --metric counter arrives as a monotonic Sum, and the status line counts what was exported.

usage: cli_host_exports.py PITLANE NODE
"""
import json
import os
import subprocess
import sys
import tempfile
import time

pitlane, node = sys.argv[1], sys.argv[2]
here = os.path.dirname(os.path.abspath(__file__))
trace = "0af7651916cd43dd8448eb211c80319c"
ns = f"ctest-otlp-cli-{os.getpid()}"

with tempfile.TemporaryDirectory() as tmp:
    out = os.path.join(tmp, "requests.jsonl")
    receiver = subprocess.Popen([node, os.path.join(here, "receiver.js"), "--out", out],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        ready = receiver.stdout.readline().split()
        assert ready[:1] == ["ready"], f"receiver did not start: {ready}"
        http_port = ready[1]
        host = subprocess.Popen(
            [pitlane, "host", "--ns", ns, "--no-admin", "--duration", "3", "--interval", "5",
             "--otlp", f"http://127.0.0.1:{http_port}",
             "--metric", "counter(snakepit.python.call.stop.count)"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env=dict(os.environ, OTEL_SERVICE_NAME="cli-test"))
        for _ in range(50):
            r = subprocess.run([pitlane, "emit", "--ns", ns, "python.call.stop", "-m",
                                "duration=2000", "--correlation-id", trace],
                               capture_output=True, text=True)
            if r.returncode == 0:
                break
            time.sleep(0.1)
        assert r.returncode == 0, r.stdout + r.stderr
        status, _ = host.communicate(timeout=30)
        print(status)
        assert host.returncode == 0, f"pitlane host exited {host.returncode}"
        assert f"OpenTelemetry export to http/protobuf http://127.0.0.1:{http_port}" in status
        assert "otlp: spans 1, metric points 1, logs 0, retried 0, dropped 0" in status, status

        requests = [json.loads(line) for line in open(out)]
        spans = [s for r in requests if r["signal"] == "traces"
                 for rs in r["request"]["resourceSpans"] for ss in rs["scopeSpans"]
                 for s in ss["spans"]]
        assert len(spans) == 1, spans
        assert spans[0]["traceId"] == trace and spans[0]["name"] == "python.call", spans[0]
        resource = [r for r in requests if r["signal"] == "traces"][0]["request"][
            "resourceSpans"][0]["resource"]["attributes"]
        assert {"key": "service.name", "value": {"stringValue": "cli-test"}} in resource, resource
        metrics = [m for r in requests if r["signal"] == "metrics"
                   for rm in r["request"]["resourceMetrics"] for sm in rm["scopeMetrics"]
                   for m in sm["metrics"]]
        assert metrics and metrics[-1]["name"] == "snakepit.python.call.stop.count", metrics
        assert metrics[-1]["sum"]["isMonotonic"] is True
        assert metrics[-1]["sum"]["dataPoints"][0]["asInt"] == "1", metrics[-1]
    finally:
        receiver.stdin.close()
        receiver.wait(timeout=10)
print("OK")
