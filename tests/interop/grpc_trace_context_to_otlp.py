#!/usr/bin/python3
"""ctest interop_grpc_trace_context_to_otlp.

W3C Trace Context across real gRPC calls into a Python worker, checked where the trace ends up:
a `pitlane host --otlp` exporting to tests/otlp/receiver.js (the official OpenTelemetry JS
decoder; pitlane decodes nothing there).

The worker is a Python grpcio server written the way a Snakepit worker is (`pitlane.snakepit`
drop-in, SNAKEPIT_TELEMETRY_BACKEND=shm): its ExecuteTool handler opens
`telemetry.otel_span(..., context_metadata=context.invocation_metadata())`, a
`telemetry.span("tool.execution")` inside it, and calls the worker's own Inner method with
`telemetry.outgoing_metadata()`; Inner opens the same scope and a `telemetry.span("python.call")`.
This driver is the first caller:

- a W3C caller (only a `traceparent` entry): the tool span continues the caller's trace with
  the caller's span as its parent; Inner receives the correlation id and a `traceparent` naming
  the tool span, and its span is the tool span's child — at the receiver, with those ids;
- a Snakepit caller (only `x-snakepit-correlation-id`, not 32 hex digits): both spans share the
  trace id the correlation id maps to, carry it as pitlane.correlation_id, and Inner's span is
  the tool span's child;
- a caller whose traceparent belongs to another trace than its correlation header: the header
  decides the trace and the foreign span does not become a parent;
- a malformed traceparent is ignored: the call succeeds and starts a trace of its own.

usage: grpc_trace_context_to_otlp.py --pitlane PITLANE --bindings DIR --node NODE
       --python-dir BUILD/python
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

import interop_util as iu

WAIT = 30  # seconds any single condition may take on a loaded machine
HERE = os.path.dirname(os.path.abspath(__file__))
RECEIVER = os.path.join(HERE, "..", "otlp", "receiver.js")

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
CALLER_TRACEPARENT = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"
SNAKEPIT_CORRELATION = "cid-interop-7"

# The worker: a grpcio server with two unary methods on raw bytes (JSON), its telemetry through
# pitlane.snakepit over shared memory. Prints "ready PORT", serves until stdin closes.
WORKER = r"""
import json, sys
from concurrent import futures
import grpc
from pitlane import telemetry as pitlane_telemetry
from pitlane.snakepit import telemetry

def received(context):
    keep = ("traceparent", telemetry.CORRELATION_HEADER)
    return {k: v for k, v in context.invocation_metadata() if k in keep}

def execute_tool(request, context):
    with telemetry.otel_span("ExecuteTool", context_metadata=context.invocation_metadata()):
        with telemetry.span("tool.execution", {"tool": "outer"}):
            sent = telemetry.outgoing_metadata()
            inner = channel.unary_unary("/interop.Tools/Inner")(b"{}", metadata=sent, timeout=20)
    return json.dumps({"received": received(context), "sent": dict(sent),
                       "inner": json.loads(inner)}).encode()

def inner(request, context):
    with telemetry.otel_span("Inner", context_metadata=context.invocation_metadata()):
        with telemetry.span("python.call", {"command": "inner"}):
            pass
    return json.dumps({"received": received(context)}).encode()

handlers = {name: grpc.unary_unary_rpc_method_handler(fn) for name, fn in
            (("ExecuteTool", execute_tool), ("Inner", inner))}
server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("interop.Tools", handlers),))
port = server.add_insecure_port("127.0.0.1:0")
server.start()
channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.enable_http_proxy", 0)])
pitlane_telemetry.start(attach_wait=5, transport="shm")  # the transport ShmBackend asks for
assert pitlane_telemetry.wait_attached(20), pitlane_telemetry.stats()
print("ready", port, flush=True)
sys.stdin.read()
server.stop(None)
"""


def spans_at(out):
    """Every span the receiver decoded, by span id."""
    spans = {}
    if os.path.exists(out):
        with open(out) as f:
            for line in f:
                r = json.loads(line)
                if r.get("signal") != "traces":
                    continue
                for rs in r["request"]["resourceSpans"]:
                    for ss in rs["scopeSpans"]:
                        for s in ss["spans"]:
                            spans[s["spanId"]] = s
    return spans


def attributes(span):
    return {a["key"]: a["value"].get("stringValue") for a in span.get("attributes", [])}


def run(hosts):
    parser = argparse.ArgumentParser(description=__doc__)
    for name in ("--pitlane", "--bindings", "--node", "--python-dir"):
        parser.add_argument(name, required=True)
    args = parser.parse_args()
    import grpc

    tmp = tempfile.TemporaryDirectory()
    out = os.path.join(tmp.name, "requests.jsonl")
    receiver = subprocess.Popen([args.node, RECEIVER, "--out", out], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)
    worker = None
    try:
        ready = receiver.stdout.readline().split()
        iu.check(ready[:1] == ["ready"], "the OTLP receiver listens", ready)
        ns = iu.unique_namespace("traceparent")
        host = iu.HostProcess(args.pitlane, ns, ["--no-admin", "--interval", "60",
                                                 "--otlp", f"http://127.0.0.1:{ready[1]}"])
        hosts.append(host)
        iu.wait_for(lambda: host.status_lines(), WAIT, "the host's first status line",
                    still_running=host.running)
        env = iu.child_env(ns)
        env.update(PYTHONPATH=args.python_dir, PITLANE_TRANSPORT="shm",
                   SNAKEPIT_TELEMETRY_BACKEND="shm")
        worker = subprocess.Popen([sys.executable, "-c", WORKER], env=env,
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = worker.stdout.readline().split()
        iu.check(line[:1] == ["ready"], "the Python worker serves gRPC", line)
        channel = grpc.insecure_channel(f"127.0.0.1:{line[1]}", options=iu.CHANNEL_OPTIONS)
        execute = channel.unary_unary("/interop.Tools/ExecuteTool")

        def call(metadata):
            return json.loads(execute(b"{}", metadata=metadata, timeout=30))

        def exported_pair(reply):
            """(tool span, inner span) at the receiver for one ExecuteTool call."""
            _, trace, tool_id, _ = reply["inner"]["received"]["traceparent"].split("-")

            def find():
                spans = spans_at(out)
                tool = spans.get(tool_id)
                inner = [s for s in spans.values() if s.get("parentSpanId") == tool_id]
                return (tool, inner[0]) if tool and inner else None

            tool, inner = iu.eventually(find, WAIT, f"both spans of trace {trace} exported")
            return trace, tool, inner

        # A W3C caller.
        reply = call([("traceparent", CALLER_TRACEPARENT)])
        got = reply["inner"]["received"]
        iu.check(got.get("x-snakepit-correlation-id") == CALLER_TRACE,
                 "Inner receives the caller's trace id as its correlation id", got)
        trace, tool, inner = exported_pair(reply)
        iu.check(trace == CALLER_TRACE and tool["traceId"] == CALLER_TRACE ==
                 inner["traceId"], "both exported spans are in the caller's trace",
                 (tool, inner))
        iu.check(tool.get("parentSpanId") == CALLER_SPAN,
                 "the tool span's parent is the caller's span from its traceparent", tool)
        iu.check(tool["name"] == "python.tool.execution" and inner["name"] == "python.call",
                 "the spans are the tool execution and the inner call",
                 (tool["name"], inner["name"]))
        iu.check(reply["sent"]["traceparent"] == f"00-{CALLER_TRACE}-{tool['spanId']}-01",
                 "outgoing_metadata() sent the tool span as the next call's parent",
                 reply["sent"])

        # A Snakepit caller: the correlation header alone.
        reply = call([("x-snakepit-correlation-id", SNAKEPIT_CORRELATION)])
        iu.check(reply["inner"]["received"].get("x-snakepit-correlation-id") ==
                 SNAKEPIT_CORRELATION, "Inner receives the caller's correlation id", reply)
        trace, tool, inner = exported_pair(reply)
        iu.check(tool["traceId"] == inner["traceId"] == trace and not tool.get("parentSpanId"),
                 "a Snakepit caller's call is one trace rooted at the tool span", (tool, inner))
        iu.check(attributes(tool).get("pitlane.correlation_id") == SNAKEPIT_CORRELATION ==
                 attributes(inner).get("pitlane.correlation_id"),
                 "both spans carry the correlation id as pitlane.correlation_id",
                 (attributes(tool), attributes(inner)))

        # A traceparent of another trace than the correlation header's.
        reply = call([("x-snakepit-correlation-id", SNAKEPIT_CORRELATION),
                      ("traceparent", CALLER_TRACEPARENT)])
        foreign_trace, tool, _ = exported_pair(reply)
        iu.check(foreign_trace == trace and not tool.get("parentSpanId"),
                 "the correlation header decides the trace; the foreign span is no parent", tool)

        # A malformed traceparent.
        reply = call([("traceparent", "00-not-a-trace-01")])
        fresh_trace, tool, inner = exported_pair(reply)
        iu.check(fresh_trace not in (CALLER_TRACE, trace) and not tool.get("parentSpanId"),
                 "a malformed traceparent is ignored: a trace of its own", tool)
        channel.close()
    finally:
        if worker is not None:
            worker.stdin.close()
            try:
                worker.wait(timeout=20)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
        receiver.stdin.close()
        receiver.wait(timeout=10)
        tmp.cleanup()


if __name__ == "__main__":
    iu.main(run)
