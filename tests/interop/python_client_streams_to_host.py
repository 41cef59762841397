#!/usr/bin/python3
"""ctest interop_python_client_streams_to_host.

An independent worker — grpcio with bindings that protoc generated from proto/telemetry.proto —
streams to `pitlane host --grpc-listen 127.0.0.1:0 --jsonl` through
pitlane.v1.TelemetryIngest/StreamTelemetry:

- the first message carries WorkerHello; the host answers with the worker's full control state
  (toggle, sampling, filter; initial_state_complete on the last of them);
- two batches of TelemetryEvent follow (first_sequence 0 and 3); the host acks up to the last
  sequence number;
- the host's JSON lines hold exactly the catalog-valid events, in order, with their names,
  measurements (int and float kept apart), metadata, correlation ids and timestamps, the
  context keys (worker_id, node) set by the host whatever the worker sent; the event with an
  unknown name and the one with a measurement key outside the allowlist are rejected and
  counted, never delivered;
- the host reports the stream's opening and its orderly close as grpc.* transport events;
- workers that close their side right after their last batch each get the ack for everything
  they sent before the stream ends;
- a stream whose first message has no WorkerHello ends with INVALID_ARGUMENT;
- against a host started with --grpc-token, a stream without the token and one with a wrong
  token end with UNAUTHENTICATED and deliver nothing, and one with the token is served.
"""

import os

import interop_util as iu

WAIT = 20  # seconds any single condition may take on a loaded machine
# Workers that close their side at once after their last batch: how many, and what they send.
CLOSERS = 40
CLOSER_BATCHES = 8
CLOSER_BATCH_EVENTS = 5


def make_event(pb, wire_name, measurements, metadata, correlation_id, timestamp_ns):
    e = pb.TelemetryEvent(event_parts=wire_name.split("."), metadata=metadata,
                          correlation_id=correlation_id, timestamp_ns=timestamp_ns)
    for key, value in measurements.items():
        if isinstance(value, int):
            e.measurements[key].int_value = value
        elif isinstance(value, float):
            e.measurements[key].float_value = value
        else:
            e.measurements[key].string_value = value
    return e


def typed(measurements):
    """{key: (type name, value)}: 2 and 2.0 compare equal in Python, an int and a double on the
    wire must not."""
    return {k: (type(v).__name__, v) for k, v in measurements.items()}


CONTEXT_KEYS = {"node", "worker_id", "pool_name", "worker_pid", "correlation_id", "timestamp_ns"}


def check_delivered(line, case, worker_id, pid):
    name = case["host_name"]
    iu.check(line["name"] == name, f"{name}: delivered under its host name", line)
    iu.check(line["transport"] == "grpc" and line["worker_id"] == worker_id
             and line["worker_pid"] == pid,
             f"{name}: transport grpc, worker_id {worker_id}, worker_pid {pid}", line)
    iu.check(line["timestamp_ns"] == case["timestamp_ns"]
             and line["correlation_id"] == case["correlation_id"],
             f"{name}: timestamp_ns and correlation_id as sent", line)
    iu.check(typed(line["measurements"]) == typed(case["measurements"]),
             f"{name}: measurements as sent, ints and doubles kept apart",
             f"sent {case['measurements']}, delivered {line['measurements']}")
    md = line["metadata"]
    sent = {k: v for k, v in case["metadata"].items() if k not in CONTEXT_KEYS}
    iu.check(all(md.get(k) == v for k, v in sent.items()),
             f"{name}: every non-context metadata key as sent (unknown keys kept as strings)",
             f"sent {case['metadata']}, delivered {md}")
    iu.check(md.get("worker_id") == worker_id and md.get("worker_pid") == str(pid)
             and md.get("timestamp_ns") == str(case["timestamp_ns"])
             and md.get("node") not in (None, "", case["metadata"].get("node")),
             f"{name}: context metadata (worker_id, worker_pid, node, timestamp_ns) from the host",
             md)
    iu.check(md.get("correlation_id") == (case["correlation_id"] or None),
             f"{name}: correlation_id in metadata exactly when one was sent", md)
    extra = set(md) - set(sent) - CONTEXT_KEYS
    iu.check(not extra, f"{name}: no metadata the worker did not send", sorted(extra))


def run(hosts):
    args = iu.parse_args(__doc__)
    import grpc
    import telemetry_pb2 as pb
    import telemetry_pb2_grpc as pb_grpc

    pid = os.getpid()
    ns = iu.unique_namespace("ingest")
    host = iu.HostProcess(args.pitlane, ns, ["--grpc-listen", "127.0.0.1:0", "--no-admin",
                                             "--duration", "120"])
    hosts.append(host)
    port = host.grpc_port()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=iu.CHANNEL_OPTIONS)

    # ── hello, then the control state ──────────────────────────────────────────────────────
    worker_id = "py-ingest-client"
    stream = iu.IngestStream(grpc, pb_grpc, channel)
    stream.send(pb.TelemetryUpstream(
        hello=pb.WorkerHello(worker_id=worker_id, pid=pid, node="interop-python", catalog_hash=0)))
    iu.wait_for(stream.settled, WAIT, "initial_state_complete from the host")
    _, controls, complete_at, _, error, _ = stream.snapshot()
    iu.check(error is None and complete_at == 3,
             "initial control state: three control messages, initial_state_complete on the third",
             f"controls {[str(c) for c in controls]}, complete at {complete_at}, error {error}")
    kinds = [c.WhichOneof("control") for c in controls[:3]]
    iu.check(sorted(kinds) == ["filter", "sampling", "toggle"],
             "initial control state carries toggle, sampling and filter", kinds)
    by_kind = {c.WhichOneof("control"): c for c in controls[:3]}
    iu.check(by_kind["toggle"].toggle.enabled, "initial toggle: enabled")
    iu.check(by_kind["sampling"].sampling.sampling_rate == 1.0
             and list(by_kind["sampling"].sampling.event_patterns) == [],
             "initial sampling: rate 1 for every event", by_kind["sampling"])
    iu.check(not by_kind["filter"].filter.allow and not by_kind["filter"].filter.deny,
             "initial filter: empty allow and deny lists", by_kind["filter"])

    # ── two batches: valid events, one unknown name, one bad measurement key ────────────────
    t0 = 1_700_000_000_000_000_000
    cases = [
        dict(wire="python.call.start", host_name="snakepit.python.call.start",
             measurements={"system_time": 123456789, "request_size": 512},
             metadata={"command": "predict", "session_id": "s-1"}, correlation_id="corr-1"),
        dict(wire="python.bogus.event", host_name=None, measurements={"duration": 1},
             metadata={"command": "predict"}, correlation_id="corr-1"),
        dict(wire="python.call.stop", host_name="snakepit.python.call.stop",
             measurements={"duration": 1500, "response_size": 64},
             metadata={"command": "predict", "result": "ok", "tenant": "blue"},
             correlation_id="corr-1"),
        dict(wire="python.cpu.sampled", host_name="snakepit.python.cpu.sampled",
             measurements={"cpu_percent": 12.5}, metadata={"python_pid": str(pid)},
             correlation_id=""),
        dict(wire="python.call.stop", host_name=None,
             measurements={"duration": 7, "not_a_catalog_key": 1},
             metadata={"command": "predict"}, correlation_id="corr-2"),
        dict(wire="python.memory.sampled", host_name="snakepit.python.memory.sampled",
             measurements={"rss_bytes": 104857600, "vms_bytes": 209715200},
             metadata={"python_pid": str(pid), "worker_id": "spoofed", "node": "spoofed-node"},
             correlation_id=""),
        dict(wire="tool.execution.stop", host_name="snakepit.python.tool.execution.stop",
             measurements={"duration": 2.5},
             metadata={"tool": "search", "operation": "query"}, correlation_id="corr-3"),
        dict(wire="python.error.occurred", host_name="snakepit.python.error.occurred",
             measurements={"count": 1},
             metadata={"error_type": "ValueError", "error_message": "bad input: ünïcode ✓"},
             correlation_id="corr-3"),
    ]
    for i, c in enumerate(cases):
        c["timestamp_ns"] = t0 + i * 1000
    events = [make_event(pb, c["wire"], c["measurements"], c["metadata"], c["correlation_id"],
                         c["timestamp_ns"]) for c in cases]
    stream.send(pb.TelemetryUpstream(events=events[:3], first_sequence=0))
    stream.send(pb.TelemetryUpstream(events=events[3:], first_sequence=3))
    iu.wait_for(lambda: stream.snapshot().acked >= len(events) or stream.snapshot().finished,
                WAIT,
                f"acked_sequence {len(events)} from the host")
    iu.check(stream.snapshot().acked == len(events),
             f"the host acked every sequence number below {len(events)}",
             f"acked {stream.snapshot().acked}, error {stream.snapshot().error}")

    # Acked means folded: the JSON lines only lag behind the exporter's queue.
    valid = [c for c in cases if c["host_name"]]
    delivered = host.wait_events(lambda e: e.get("worker_id") == worker_id
                                 and e.get("transport") != "host",
                                 len(valid), WAIT, f"{len(valid)} JSON lines of {worker_id}")
    iu.check([e["name"] for e in delivered] == [c["host_name"] for c in valid],
             "exactly the catalog-valid events were delivered, in emit order",
             [e["name"] for e in delivered])
    for line, case in zip(delivered, valid):
        check_delivered(line, case, worker_id, pid)

    # ── orderly close ──────────────────────────────────────────────────────────────────────
    stream.close_send()
    error = stream.wait_finished("the host to end the stream after the worker closed its side")
    iu.check(error is None, "the stream ends with OK once the worker closes its side", error)
    opened = host.wait_events(lambda e: e.get("name") == "snakepit.grpc.stream.opened"
                              and e.get("worker_id") == worker_id, 1, WAIT,
                              "grpc.stream.opened for the worker")
    iu.check(opened[0]["metadata"].get("direction") == "dial_in",
             "the host reports the stream as opened, direction dial_in", opened[0])
    closed = host.wait_events(lambda e: e.get("name") == "snakepit.grpc.stream.closed"
                              and e.get("worker_id") == worker_id, 1, WAIT,
                              "grpc.stream.closed for the worker")
    iu.check(closed[0]["metadata"].get("reason") == "closed by the worker",
             "the host reports the orderly close", closed[0])

    # ── a stream without WorkerHello ───────────────────────────────────────────────────────
    nameless = iu.IngestStream(grpc, pb_grpc, channel)
    nameless.send(pb.TelemetryUpstream(events=[events[0]], first_sequence=0))
    nameless.wait_finished("the host to refuse a stream without WorkerHello")
    iu.check(nameless.code() == grpc.StatusCode.INVALID_ARGUMENT,
             "a stream whose first message lacks WorkerHello ends with INVALID_ARGUMENT",
             nameless.code())
    nameless.close_send()

    # ── workers that close their side right after their last batch ─────────────────────────
    # Each must still get the ack for everything it sent before its stream ends.
    closers = []
    for i in range(CLOSERS):
        s = iu.IngestStream(grpc, pb_grpc, channel)
        s.send(pb.TelemetryUpstream(hello=pb.WorkerHello(worker_id=f"py-closer-{i}", pid=pid)))
        for b in range(CLOSER_BATCHES):
            batch = [make_event(pb, "python.cpu.sampled", {"cpu_percent": float(b)}, {}, "",
                                t0 + b) for _ in range(CLOSER_BATCH_EVENTS)]
            s.send(pb.TelemetryUpstream(events=batch, first_sequence=b * CLOSER_BATCH_EVENTS))
        s.close_send()
        closers.append(s)
    sent = CLOSER_BATCHES * CLOSER_BATCH_EVENTS
    short = []
    for i, s in enumerate(closers):
        error = s.wait_finished(f"py-closer-{i}'s stream to end")
        if error is not None or s.snapshot().acked != sent:
            short.append((i, s.snapshot().acked, error))
    iu.check(not short,
             f"{CLOSERS} workers that close right after sending {sent} events each get ack {sent} "
             "before their stream ends OK", f"short (worker, acked, error): {short[:5]}")

    rc = host.stop()
    iu.check(rc == 0, "the host exits 0 on SIGTERM", rc)
    iu.check(not host.bad_lines(), "every stdout line of the host is a JSON object",
             host.bad_lines()[:3])
    iu.check(not any(e.get("name") == "snakepit.grpc.connection.lost" for e in host.events()),
             "the orderly close was not reported as a lost connection")
    final = iu.worker_events(host.events(), worker_id)
    iu.check(len(final) == len(valid)
             and not any("bogus" in e.get("name", "") for e in host.events()),
             "nothing else of the worker was delivered, the unknown name never",
             [e["name"] for e in final])
    counts = host.final_counts()
    iu.check(counts is not None and counts[1] == 2,
             "the host counted the unknown event and the bad measurement key as rejected (2)",
             host.status_lines()[-3:])
    channel.close()

    # ── bearer token ───────────────────────────────────────────────────────────────────────
    token = f"interop-token-{pid}"
    ns_token = iu.unique_namespace("ingest-token")
    secured = iu.HostProcess(args.pitlane, ns_token,
                             ["--grpc-listen", "127.0.0.1:0", "--grpc-token", token,
                              "--no-admin", "--duration", "120"])
    hosts.append(secured)
    channel = grpc.insecure_channel(f"127.0.0.1:{secured.grpc_port()}",
                                    options=iu.CHANNEL_OPTIONS)
    attempts = [("py-no-token", ()), ("py-wrong-token", (("authorization", "Bearer nope"),))]
    for attempt_id, metadata in attempts:
        s = iu.IngestStream(grpc, pb_grpc, channel, metadata)
        s.send(pb.TelemetryUpstream(hello=pb.WorkerHello(worker_id=attempt_id, pid=pid),
                                    events=[events[0]], first_sequence=0))
        s.wait_finished(f"the host to refuse {attempt_id}")
        iu.check(s.code() == grpc.StatusCode.UNAUTHENTICATED and not s.snapshot().controls,
                 f"{attempt_id}: the stream ends with UNAUTHENTICATED before any control",
                 f"code {s.code()}, controls {len(s.snapshot().controls)}")
        s.close_send()
    authorised = iu.IngestStream(grpc, pb_grpc, channel,
                              (("authorization", f"Bearer {token}"),))
    authorised.send(pb.TelemetryUpstream(hello=pb.WorkerHello(worker_id="py-token", pid=pid),
                                         events=[events[0]], first_sequence=0))
    iu.eventually(authorised.settled, WAIT, "with the right token the stream is served")
    iu.check(authorised.snapshot().initial_complete_at == 3
             and authorised.snapshot().error is None,
             "the authorised stream receives the full control state",
             authorised.snapshot())
    secured.wait_events(lambda e: e.get("worker_id") == "py-token"
                        and e.get("name") == "snakepit.python.call.start", 1, WAIT,
                        "the authorised stream's event is delivered")
    authorised.close_send()
    authorised.wait_finished("the authorised stream to end")
    secured.stop()
    refused = [e for e in secured.events()
               if e.get("worker_id") in {a for a, _ in attempts}]
    iu.check(not refused, "nothing of the unauthenticated streams reached the host",
             [e.get("name") for e in refused])
    channel.close()


if __name__ == "__main__":
    iu.main(run)
