#!/usr/bin/python3
"""Python emit cost: pitlane (shared memory, host draining in another process) against the
seed's grpcio path (events built as pitlane.v1.TelemetryEvent, put on a bounded queue.Queue and
streamed by a grpcio call whose request generator yields them, to a local grpcio server in
another process).

    /usr/bin/python3 python/bench_emit.py --build-dir build            # full run
    /usr/bin/python3 python/bench_emit.py --build-dir build --smoke    # tiny counts (ctest)

Per path it reports, for the same typical event (python.call.stop, 3 measurements, 3 metadata,
a 27-byte correlation id, dicts built once):
  * emit cpu      the emitting thread's CPU time (time.thread_time_ns) over the back-to-back
                  loop / events: what the emitting thread pays per event (on the grpcio path the
                  stream's own thread is not included)
  * emit mean     the same loop in chunks of 1,000 calls: the median chunk's wall time per call
                  (chunks in which the process was descheduled by other load do not move it)
  * loop mean     the whole loop's time / events, descheduling included
  * p50 / p99     time.perf_counter_ns() around each call, minus the timer's own median cost
  * delivered/s   events the receiver got / time from the first emit until it had them all
  * dropped       events the path dropped (ring full / queue full)
The emitting process runs on CPU 0 and the receiver on CPU 1 when there are two CPUs.

Smoke mode checks the accounting only (every event delivered or counted as dropped), never the
timings.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import random
import subprocess
import sys
import threading
import time
from typing import Dict, List, Optional

EVENT = "python.call.stop"
MEASUREMENTS = {"duration": 1_234_567, "response_size": 512, "latency_ms": 1.25}
METADATA = {"command": "predict", "result": "ok", "session_id": "sess-0042"}
CORRELATION_ID = "pl-0123456789abcdef01234567"
GRPC_METHOD = "/pitlane.v1.TelemetryIngest/StreamTelemetry"
SEED_MAX_BUFFER = 1024  # the seed's TelemetryStream(max_buffer=1024)


def percentile(sorted_values: List[int], q: float) -> int:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def timer_overhead_ns(samples: int) -> int:
    pc = time.perf_counter_ns
    deltas = []
    for _ in range(samples):
        t0 = pc()
        t1 = pc()
        deltas.append(t1 - t0)
    deltas.sort()
    return deltas[len(deltas) // 2]


def timed_calls(fn, count: int, overhead: int) -> Dict[str, float]:
    """Times each call of fn(EVENT, MEASUREMENTS, METADATA, CORRELATION_ID)."""
    pc = time.perf_counter_ns
    samples = [0] * count
    for i in range(count):
        t0 = pc()
        fn(EVENT, MEASUREMENTS, METADATA, CORRELATION_ID)
        samples[i] = pc() - t0
    samples.sort()
    return {
        "p50_ns": max(0, percentile(samples, 0.50) - overhead),
        "p99_ns": max(0, percentile(samples, 0.99) - overhead),
        "p999_ns": max(0, percentile(samples, 0.999) - overhead),
    }


def loop_calls(fn, count: int, chunk: int = 1_000) -> Dict[str, float]:
    """Back-to-back calls in chunks. Returns the elapsed ns, the calling thread's CPU time per
    call, and the median chunk's wall time per call (the back-to-back cost without the chunks
    in which the process was descheduled)."""
    m, d, c = MEASUREMENTS, METADATA, CORRELATION_ID
    pc = time.perf_counter_ns
    per_call = []
    cpu0 = time.thread_time_ns()
    start = pc()
    left = count
    while left > 0:
        n = min(chunk, left)
        t0 = pc()
        for _ in range(n):
            fn(EVENT, m, d, c)
        per_call.append((pc() - t0) / n)
        left -= n
    elapsed = pc() - start
    cpu = time.thread_time_ns() - cpu0
    per_call.sort()
    return {"elapsed_ns": elapsed, "cpu_ns": cpu / count,
            "median_chunk_ns": per_call[len(per_call) // 2]}


TWO_CPUS = len(os.sched_getaffinity(0)) >= 2
PIN = TWO_CPUS  # --no-pin clears it


def pin_self(cpu: int) -> None:
    """Pins the calling thread (and the threads it creates later) to `cpu`."""
    if PIN:
        os.sched_setaffinity(0, {cpu})


def on_cpu1() -> None:
    """preexec_fn of the receivers: pinned before they start any thread."""
    pin_self(1)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


# ── pitlane over shared memory ────────────────────────────────────────────────────────────────

class Host:
    def __init__(self, exe: str, ns: str, busy_poll: bool) -> None:
        args = [exe, "--ns", ns, "--quiet"] + (["--busy-poll"] if busy_poll else [])
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, preexec_fn=on_cpu1)
        ready = json.loads(self.proc.stdout.readline())
        if ready.get("type") != "ready":
            raise SystemExit(f"host did not start: {ready}")

    def stats(self) -> dict:
        self.proc.stdin.write("stats\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def delivered(self) -> int:
        return self.stats()["host"]["delivered"]

    def close(self) -> dict:
        self.proc.stdin.close()
        final = json.loads(self.proc.stdout.readline())
        self.proc.wait(timeout=30)
        return final


def wait_until(predicate, timeout: float = 30.0) -> float:
    """Polls predicate() until true; returns the monotonic time it became true."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit("receiver did not get every event in time")
        time.sleep(0.0005)
    return time.perf_counter_ns()


def bench_shm(build: str, events: int, timed: int, overhead: int, busy_poll: bool,
              ring_bytes: int) -> dict:
    os.environ["PITLANE_RING_BYTES"] = str(ring_bytes)
    from pitlane import telemetry

    ns = f"bench{os.getpid()}"
    host = Host(os.path.join(build, "python", "pitlane_py_test_host"), ns, busy_poll)
    try:
        telemetry.start(namespace=ns, worker_id="bench-py", attach_wait=10)
        emit = telemetry.emit
        loop_calls(emit, min(events, 10_000))  # warm-up: ring, caches
        base = telemetry.stats()
        t0 = time.perf_counter_ns()
        loop = loop_calls(emit, events)
        after = telemetry.stats()
        published = after["published"] - base["published"]
        done = wait_until(lambda: host.delivered() >= after["published"])
        latency = timed_calls(emit, timed, overhead)
        final_worker = telemetry.shutdown()
        final_host = host.close()
    finally:
        if host.proc.poll() is None:
            host.proc.kill()
        for name in os.listdir("/dev/shm"):
            if name.startswith(f"pitlane.{ns}."):
                os.unlink(os.path.join("/dev/shm", name))
    dropped = sum(final_worker["dropped"].values())
    return {
        "emit_cpu_ns": loop["cpu_ns"],
        "emit_mean_ns": loop["median_chunk_ns"],
        "loop_mean_ns": loop["elapsed_ns"] / events,
        **latency,
        "delivered_per_s": published / ((done - t0) / 1e9),
        "dropped": dropped,
        "emitted": final_worker["emitted"],
        "accounted": final_worker["emitted"] == final_worker["published"] + dropped
        + sum(final_worker["suppressed"].values())
        and final_host["host"]["delivered"] == final_worker["published"],
    }


# ── the seed's grpcio path ────────────────────────────────────────────────────────────────────

def serve_grpc(build: str) -> None:
    """The receiver: a generic stream-stream handler that counts the events of every
    TelemetryUpstream it reads and never replies. Prints its port, then one line per stream."""
    import grpc
    from concurrent import futures

    sys.path.insert(0, os.path.join(build, "python", "proto"))
    import telemetry_pb2 as pb

    lock = threading.Lock()

    def stream(request_iterator, context):
        received = 0
        for upstream in request_iterator:
            received += len(upstream.events)
        with lock:
            print(json.dumps({"received": received}), flush=True)
        return iter(())

    handler = grpc.method_handlers_generic_handler(
        "pitlane.v1.TelemetryIngest",
        {"StreamTelemetry": grpc.stream_stream_rpc_method_handler(
            stream, request_deserializer=pb.TelemetryUpstream.FromString,
            response_serializer=pb.TelemetryControl.SerializeToString)},
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(json.dumps({"port": port}), flush=True)
    sys.stdin.read()  # until the benchmark closes our stdin
    server.stop(grace=1).wait()


class SeedTelemetryStream:
    """The seed's TelemetryStream emit path on grpcio: each event is built as a
    pitlane.v1.TelemetryEvent, put on a bounded queue (full: dropped and counted), and a
    streaming call's request generator yields it. The request serializer frames one event as a
    TelemetryUpstream (field 2, `events`), byte for byte what TelemetryUpstream(events=[event])
    serializes to."""

    def __init__(self, channel, pb, max_buffer: int = SEED_MAX_BUFFER) -> None:
        self.pb = pb
        self.enabled = True
        self.sampling_rate = 1.0
        self._allow: List[str] = []
        self._deny: List[str] = []
        self.dropped_count = 0
        self.sent = 0
        self._queue: "queue.Queue[Optional[object]]" = queue.Queue(maxsize=max_buffer)
        call = channel.stream_stream(GRPC_METHOD, request_serializer=self._frame,
                                     response_deserializer=pb.TelemetryControl.FromString)
        self._responses = call(self._events())
        self._done = threading.Thread(target=self._drain, daemon=True)
        self._done.start()

    @staticmethod
    def _frame(event) -> bytes:
        body = event.SerializeToString()
        n, prefix = len(body), bytearray(b"\x12")
        while n >= 0x80:
            prefix.append((n & 0x7F) | 0x80)
            n >>= 7
        prefix.append(n)
        return bytes(prefix) + body

    def _events(self):
        while True:
            event = self._queue.get()
            if event is None:
                return
            self.sent += 1
            yield event

    def _drain(self) -> None:
        for _ in self._responses:
            pass

    def emit(self, event_name, measurements, metadata=None, correlation_id=None) -> None:
        if not self.enabled:
            return
        if self.sampling_rate < 1.0 and random.random() > self.sampling_rate:
            return
        if self._deny or self._allow:
            import fnmatch
            if any(fnmatch.fnmatch(event_name, p) for p in self._deny):
                return
            if self._allow and not any(fnmatch.fnmatch(event_name, p) for p in self._allow):
                return
        event = self.pb.TelemetryEvent(
            event_parts=event_name.split("."),
            timestamp_ns=time.time_ns(),
            correlation_id=correlation_id or "",
        )
        for key, value in measurements.items():
            if isinstance(value, bool):
                value = int(value)
            field = event.measurements[key]
            if isinstance(value, int):
                field.int_value = value
            elif isinstance(value, float):
                field.float_value = value
            else:
                field.string_value = str(value)
        for key, value in (metadata or {}).items():
            event.metadata[key] = str(value)
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            self.dropped_count += 1

    def close(self, timeout: float = 60.0) -> None:
        self._queue.put(None)
        self._done.join(timeout)


def bench_grpc(build: str, events: int, timed: int, overhead: int) -> dict:
    import grpc

    sys.path.insert(0, os.path.join(build, "python", "proto"))
    import telemetry_pb2 as pb

    server = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--serve-grpc",
                               "--build-dir", build], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, preexec_fn=on_cpu1)
    try:
        port = json.loads(server.stdout.readline())["port"]
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        grpc.channel_ready_future(channel).result(timeout=30)

        def run(count: int, timed_count: int) -> dict:
            stream = SeedTelemetryStream(channel, pb)
            t0 = time.perf_counter_ns()
            loop = loop_calls(stream.emit, count)
            latency = timed_calls(stream.emit, timed_count, overhead) if timed_count else {}
            stream.close()
            done = time.perf_counter_ns()
            received = json.loads(server.stdout.readline())["received"]
            return {"loop": loop, "latency": latency, "received": received,
                    "dropped": stream.dropped_count, "sent": stream.sent,
                    "seconds": (done - t0) / 1e9}

        run(min(events, 10_000), 0)  # warm-up: connection, bindings
        r = run(events, timed)
        channel.close()
    finally:
        server.stdin.close()
        server.wait(timeout=30)
    return {
        "emit_cpu_ns": r["loop"]["cpu_ns"],
        "emit_mean_ns": r["loop"]["median_chunk_ns"],
        "loop_mean_ns": r["loop"]["elapsed_ns"] / events,
        **r["latency"],
        "delivered_per_s": r["received"] / r["seconds"],
        "dropped": r["dropped"],
        "emitted": events + timed,
        "accounted": r["received"] == r["sent"] and r["sent"] + r["dropped"] == events + timed,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--build-dir", default="build", help="pitlane's CMake build directory")
    parser.add_argument("--events", type=int, default=500_000, help="events per loop")
    parser.add_argument("--timed", type=int, default=200_000, help="individually timed emits")
    parser.add_argument("--smoke", action="store_true", help="tiny counts, accounting only")
    parser.add_argument("--busy-poll", action="store_true", help="the host never sleeps")
    parser.add_argument("--ring-bytes", type=int, default=4 << 20,
                        help="PITLANE_RING_BYTES of the emitting thread's ring (default 4 MiB: "
                             "absorbs the host being descheduled on a shared machine)")
    parser.add_argument("--no-pin", dest="pin", action="store_false",
                        help="do not pin the emitter to CPU 0 and the receivers to CPU 1")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--serve-grpc", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    build = os.path.abspath(args.build_dir)
    if args.serve_grpc:
        serve_grpc(build)
        return 0
    sys.path.insert(0, os.path.join(build, "python"))
    if args.smoke:
        args.events, args.timed = 2_000, 1_000
    if args.events <= 0 or args.timed <= 0:
        parser.error("--events and --timed must be positive")

    global PIN
    PIN = PIN and args.pin
    pin_self(0)
    overhead = timer_overhead_ns(20_000 if args.smoke else 200_000)
    shm = bench_shm(build, args.events, args.timed, overhead, args.busy_poll, args.ring_bytes)
    grpc_path = bench_grpc(build, args.events, args.timed, overhead)
    ratio = grpc_path["emit_cpu_ns"] / shm["emit_cpu_ns"]
    ratio_p50 = grpc_path["p50_ns"] / max(1, shm["p50_ns"])
    results = {"events": args.events, "timed": args.timed, "timer_overhead_ns": overhead,
               "cpu": cpu_model(), "cpus": os.cpu_count(), "pinned": PIN,
               "shm": shm, "grpcio": grpc_path,
               "emit_cost_ratio": ratio, "p50_ratio": ratio_p50}

    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(f"events per loop {args.events}, individually timed {args.timed}, "
              f"timer overhead {overhead} ns subtracted from p50/p99")
        print(f"{results['cpu']}, {results['cpus']} CPUs, "
              f"{'emitter on CPU 0, receiver on CPU 1' if results['pinned'] else 'not pinned'}")
        print(f"{'path':<8} {'emit cpu':>9} {'emit mean':>10} {'loop mean':>10} {'p50':>8} "
              f"{'p99':>8} {'p99.9':>9} {'delivered/s':>12} {'dropped':>8}")
        for name, r in (("shm", shm), ("grpcio", grpc_path)):
            print(f"{name:<8} {r['emit_cpu_ns']:>7.0f}ns {r['emit_mean_ns']:>8.0f}ns "
                  f"{r['loop_mean_ns']:>8.0f}ns {r['p50_ns']:>6}ns {r['p99_ns']:>6}ns "
                  f"{r['p999_ns']:>7}ns {r['delivered_per_s']:>12,.0f} {r['dropped']:>8}")
        print(f"grpcio / shm emit cost: {ratio:.1f}x (emit cpu), {ratio_p50:.1f}x (p50)")
        if not args.smoke:
            print(f"goal <= 1 us per shm emit: {'met' if shm['emit_cpu_ns'] <= 1000 else 'NOT met'}"
                  f"; goal >= 20x cheaper than grpcio: {'met' if ratio >= 20 else 'NOT met'}")
    for name, r in (("shm", shm), ("grpcio", grpc_path)):
        if not r["accounted"]:
            print(f"{name}: events not accounted for: {r}", file=sys.stderr)
            return 1
    if not args.json:
        print("accounting: every event delivered or counted as dropped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
