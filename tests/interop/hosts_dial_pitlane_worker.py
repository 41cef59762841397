#!/usr/bin/python3
"""ctest interop_hosts_dial_pitlane_worker.

A pitlane worker serving StreamTelemetry (the Python module, PITLANE_TRANSPORT=grpc,
PITLANE_GRPC_LISTEN) is dialed at Snakepit's method path by a grpcio client built from bindings
that protoc generated here — the decoder is grpcio's and protobuf's, not pitlane's. What the
worker sends depends on who dials it:

- a Snakepit host (no pitlane metadata): one named TelemetryEvent per event, no counters; the
  worker's initial metadata names its catalog hash (x-pitlane-catalog-hash);
- a pitlane host announcing that hash: batches of event records as they are (pitlane_records,
  each a FlatBuffer with file identifier "PLEV") with the worker's counters after them, and no
  named events;
- a pitlane host announcing another catalog: named events again, with counters.

usage: hosts_dial_pitlane_worker.py --pitlane PITLANE --bindings DIR --python-dir DIR
"""

import argparse
import os
import socket
import subprocess
import sys
import threading

EVENTS = 50
WAIT = 30  # seconds any single exchange may take on a loaded machine

WORKER = r"""
import sys, time
from pitlane import telemetry
telemetry.start(attach_wait=0)
assert telemetry.wait_attached(60), telemetry.stats()
for i in range(int(sys.argv[1])):
    telemetry.emit("python.call.stop", {"duration": i})
time.sleep(3)
telemetry.shutdown()
"""


def unused_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dial_and_read(iu, rpc, python_dir, metadata, want_counters):
    """Starts a serving worker, dials it with `metadata`, reads until every event arrived (and,
    when `want_counters`, a counters report); returns (named events, records, counter reports,
    the worker's initial metadata)."""
    port = unused_port()
    env = iu.child_env(iu.unique_namespace("dialed"))
    env.update(PYTHONPATH=python_dir, PITLANE_TRANSPORT="grpc",
               PITLANE_GRPC_LISTEN=f"127.0.0.1:{port}")
    worker = subprocess.Popen([sys.executable, "-c", WORKER, str(EVENTS)], env=env)
    try:
        import grpc
        channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=iu.CHANNEL_OPTIONS)
        grpc.channel_ready_future(channel).result(timeout=WAIT)
        stub = rpc.BridgeServiceStub(channel)
        done = threading.Event()

        def no_control():  # the host side stays open, sending nothing
            done.wait()
            return
            yield

        call = stub.StreamTelemetry(no_control(), metadata=metadata, timeout=WAIT)
        named, records, counters = [], [], 0
        for msg in call:
            if msg.event_parts:
                named.append(".".join(msg.event_parts))
            records.extend(msg.pitlane_records)
            counters += msg.HasField("pitlane_counters")
            if len(named) + len(records) >= EVENTS and (counters or not want_counters):
                break
        initial = dict(call.initial_metadata())
        done.set()
        call.cancel()
        channel.close()
        return named, records, counters, initial
    finally:
        worker.wait(timeout=WAIT)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pitlane", required=True)
    parser.add_argument("--bindings", required=True)
    parser.add_argument("--python-dir", required=True)
    args = parser.parse_args()
    sys.path.insert(0, args.bindings)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import interop_util as iu
    import snakepit_compat_pb2_grpc as rpc

    def body(_hosts):
        named, records, counters, initial = dial_and_read(iu, rpc, args.python_dir, [], False)
        iu.check(len(named) == EVENTS and not records and counters == 0,
                 "a Snakepit host gets one named event per message and no counters",
                 f"{len(named)} named, {len(records)} records, {counters} counter reports")
        iu.check(set(named) == {"python.call.stop"}, "the events carry their wire name", named[:3])
        catalog_hash = initial.get("x-pitlane-catalog-hash", "")
        iu.check(catalog_hash.isdigit(), "the worker names its catalog hash", initial)

        named, records, counters, _ = dial_and_read(
            iu, rpc, args.python_dir,
            [("x-pitlane-host", "1"), ("x-pitlane-catalog-hash", catalog_hash)], True)
        iu.check(len(records) == EVENTS and not named and counters > 0,
                 "a pitlane host of the same catalog gets the records as they are, and counters",
                 f"{len(named)} named, {len(records)} records, {counters} counter reports")
        iu.check(all(r[4:8] == b"PLEV" for r in records),
                 "each record is an event FlatBuffer (file identifier PLEV)", records[:1])

        other = str(int(catalog_hash) + 1)
        named, records, counters, _ = dial_and_read(
            iu, rpc, args.python_dir,
            [("x-pitlane-host", "1"), ("x-pitlane-catalog-hash", other)], True)
        iu.check(len(named) == EVENTS and not records and counters > 0,
                 "a pitlane host of another catalog gets named events, and counters",
                 f"{len(named)} named, {len(records)} records, {counters} counter reports")

    iu.main(body)


if __name__ == "__main__":
    main()
