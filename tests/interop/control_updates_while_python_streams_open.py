#!/usr/bin/python3
"""ctest interop_control_updates_while_python_streams_open.

Control updates that race streams opening, driven by independent peers: grpcio clients with
bindings that protoc generated from proto/telemetry.proto and proto/admin.proto.

`pitlane host --grpc-listen 127.0.0.1:0 --admin unix:PATH` serves dial-in streams while four
threads of this driver replace every worker's control state ("*") through the admin service as
fast as grpcio lets them, and other threads open stream after stream, each under a new worker id.
Half of the workers announce that they apply the whole state in one message
(`accepts_control_state`), half are Snakepit-style peers that get it as three messages.

- every stream's first message(s) are its initial state, and nothing of an update comes before
  them: one `control_state` message with `initial_state_complete` for the first kind; exactly
  toggle, sampling and filter, `initial_state_complete` on the third, for the other;
- every stream then receives updates, each in its peer's form, and ends OK when the worker
  closes its side;
- the host keeps running through all of it (an update that reached a stream before the stream
  could write once terminated the host) and exits 0 on SIGTERM, having reported each stream's
  opening and orderly close;
- a grpcio worker that keeps sending but never reads has its stream cancelled once the host's
  writes to it block, closed as "cancelled: the peer stopped reading", while the admin
  service's updates to it go on (they once waited behind that stream for good).
"""

import os
import threading
import time

import interop_util as iu

WAIT = 20           # seconds any single condition may take on a loaded machine
ROUNDS = 30         # rounds of streams opened together
PER_ROUND = 10      # streams per round (half of each kind)
UPDATES_SEEN = 2    # updates each stream must receive before it closes
UPDATERS = 4        # threads replacing the control state, each on a channel of its own


class RecordingStream(iu.IngestStream):
    """A dial-in stream under a new worker id that announces, or not, that it applies the whole
    state in one message."""

    def __init__(self, grpc, pb, pb_grpc, channel, worker_id, whole_state):
        super().__init__(grpc, pb_grpc, channel, first=pb.TelemetryUpstream(
            hello=pb.WorkerHello(worker_id=worker_id, pid=os.getpid(), node="interop-race",
                                 accepts_control_state=whole_state)))
        self.worker_id = worker_id
        self.whole_state = whole_state

    def messages(self):
        """Every control message so far as (kind, initial_state_complete); acks left out."""
        out = []
        for r in self.snapshot().replies:
            if r.HasField("control_state"):
                out.append(("state", r.initial_state_complete))
            elif r.HasField("control"):
                out.append((r.control.WhichOneof("control"), r.initial_state_complete))
        return out

    def updates_after_initial_state(self):
        per_message = 1 if self.whole_state else 3
        return max(0, len(self.messages()) - per_message) // per_message


def check_initial_state(stream):
    """The stream's first message(s) are its initial state, complete, with no update among them."""
    messages, error = stream.messages(), stream.snapshot().error
    who = f"{stream.worker_id} ({'whole state' if stream.whole_state else 'three parts'})"
    iu.check(error is None, f"{who}: the stream ended OK", error)
    if stream.whole_state:
        iu.check(messages[:1] == [("state", True)],
                 f"{who}: the first message is the whole state, marked initial_state_complete",
                 messages[:4])
        iu.check(all(m == ("state", False) for m in messages[1:]),
                 f"{who}: every update after it is one whole-state message", messages[1:6])
        return
    parts = ["toggle", "sampling", "filter"]
    iu.check(messages[:3] == [("toggle", False), ("sampling", False), ("filter", True)],
             f"{who}: toggle, sampling, filter first, initial_state_complete on the third only",
             messages[:6])
    rest = messages[3:]
    iu.check(all(m == (parts[i % 3], False) for i, m in enumerate(rest)),
             f"{who}: updates follow as toggle, sampling, filter, never marked initial", rest[:6])


class Updater(threading.Thread):
    """Replaces `worker_id`'s control state ("*": every worker's) through the admin service until
    stopped, alternating enabled and disabled; `patterns` go in each of its lists."""

    def __init__(self, grpc, admin_pb, admin_grpc, pb, address, worker_id="*", patterns=()):
        super().__init__(daemon=True)
        self._worker_id = worker_id
        self._patterns = list(patterns)
        self._grpc = grpc
        self._channel = grpc.insecure_channel(address, options=iu.CHANNEL_OPTIONS)
        self._admin = admin_grpc.AdminStub(self._channel)
        self._admin_pb = admin_pb
        self._pb = pb
        self._done = threading.Event()
        self.calls = 0
        self.unexpected = []

    def run(self):
        enabled = False
        while not self._done.is_set():
            request = self._admin_pb.SetControlRequest(
                worker_id=self._worker_id, control=self._pb.WorkerControlState(
                    enabled=enabled, sampling_rate=1.0, sampling_patterns=self._patterns,
                    allow=self._patterns, deny=self._patterns))
            try:
                self._admin.SetControl(request, timeout=WAIT)
                self.calls += 1
                enabled = not enabled
            except self._grpc.RpcError as e:
                # Before the first worker is known, "*" selects nothing.
                if e.code() != self._grpc.StatusCode.NOT_FOUND:
                    self.unexpected.append(f"{e.code()}: {e.details()}")
                    return

    def stop(self):
        self._done.set()
        self.join(timeout=WAIT)
        self._channel.close()


def run(hosts):
    args = iu.parse_args(__doc__)
    import grpc
    import admin_pb2 as admin_pb
    import admin_pb2_grpc as admin_grpc
    import telemetry_pb2 as pb
    import telemetry_pb2_grpc as pb_grpc

    ns = iu.unique_namespace("control-race")
    admin_address = f"unix:/tmp/pitlane-interop-race-{os.getpid()}.admin.sock"
    host = iu.HostProcess(args.pitlane, ns, ["--grpc-listen", "127.0.0.1:0",
                                             "--admin", admin_address, "--duration", "300"])
    hosts.append(host)
    channel = grpc.insecure_channel(f"127.0.0.1:{host.grpc_port()}", options=iu.CHANNEL_OPTIONS)
    host.wait_status(r"admin service \(pitlane ctl\) on", WAIT, "the host's admin service line")

    updaters = [Updater(grpc, admin_pb, admin_grpc, pb, admin_address) for _ in range(UPDATERS)]
    for u in updaters:
        u.start()
    streams = []
    try:
        for r in range(ROUNDS):
            batch = [RecordingStream(grpc, pb, pb_grpc, channel, f"race-{r}-{i}",
                                     whole_state=(i % 2 == 0))
                     for i in range(PER_ROUND)]
            streams += batch
            for s in batch:
                iu.wait_for(lambda s=s: s.updates_after_initial_state() >= UPDATES_SEEN
                            or s.snapshot().finished, WAIT,
                            f"{s.worker_id}: its initial state and {UPDATES_SEEN} updates",
                            still_running=host.running)
            for s in batch:
                s.close_send()
            for s in batch:
                iu.wait_for(lambda s=s: s.snapshot().finished, WAIT, f"{s.worker_id}: the stream ends",
                            still_running=host.running)
            iu.check(host.running(), f"round {r}: the host is still running", host.describe())
    finally:
        for u in updaters:
            u.stop()

    unexpected = [x for u in updaters for x in u.unexpected]
    iu.check(not unexpected, "every admin update was accepted", unexpected[:3])
    print(f"{sum(u.calls for u in updaters)} admin updates while {len(streams)} streams opened",
          flush=True)
    for s in streams:
        check_initial_state(s)
        iu.check(s.updates_after_initial_state() >= UPDATES_SEEN,
                 f"{s.worker_id}: received updates while open",
                 s.messages()[:8])
    whole = [s for s in streams if s.whole_state]
    iu.check(whole and all(m[0] == "state" for s in whole for m in s.messages()),
             "workers that accept the whole state never get it in three parts")

    opened = host.wait_events(lambda e: e.get("name") == "snakepit.grpc.stream.opened"
                              and e.get("worker_id", "").startswith("race-"), len(streams),
                              WAIT, "grpc.stream.opened for every stream")
    iu.check(len({e["worker_id"] for e in opened}) == len(streams),
             "the host reports each stream's opening once", len(opened))
    closed = host.wait_events(lambda e: e.get("name") == "snakepit.grpc.stream.closed"
                              and e.get("worker_id", "").startswith("race-"), len(streams),
                              WAIT, "grpc.stream.closed for every stream")
    iu.check(all(e["metadata"].get("reason") == "closed by the worker" for e in closed),
             "every stream closed in order", [e["metadata"].get("reason") for e in closed][:5])
    check_stalled_peer_is_cancelled(host, channel, admin_address, grpc, pb, pb_grpc, admin_pb,
                                    admin_grpc)
    channel.close()
    rc = host.stop()
    iu.check(rc == 0, "the host exits 0 on SIGTERM", f"{rc}\n{host.describe()}")


def check_stalled_peer_is_cancelled(host, channel, admin_address, grpc, pb, pb_grpc, admin_pb,
                                    admin_grpc):
    """A grpcio worker that keeps sending but never reads: once gRPC's buffers for it are full,
    the host's writes to it block. The host cancels its stream after 5 s, and the admin service's
    updates go on, instead of every update waiting behind that stream for good."""
    deaf = "race-deaf"
    done = threading.Event()

    def requests():
        yield pb.TelemetryUpstream(hello=pb.WorkerHello(worker_id=deaf, pid=os.getpid()))
        seq = 0
        while not done.is_set():
            e = pb.TelemetryEvent(event_parts=["python", "cpu", "sampled"])
            e.measurements["cpu_percent"].float_value = 1.0
            yield pb.TelemetryUpstream(events=[e], first_sequence=seq)
            seq += 1
            time.sleep(0.002)

    # The call's replies are never read: grpcio then takes no more from the connection.
    call = pb_grpc.TelemetryIngestStub(channel).StreamTelemetry(requests())
    admin = admin_grpc.AdminStub(grpc.insecure_channel(admin_address, options=iu.CHANNEL_OPTIONS))

    def known():
        try:
            admin.GetControl(admin_pb.GetControlRequest(worker_id=deaf), timeout=WAIT)
            return True
        except grpc.RpcError:
            return False

    iu.wait_for(known, WAIT, f"{deaf} known to the host")
    # Large states (every list full of long patterns) fill the peer's buffers in a few hundred
    # updates.
    patterns = [f"python.{'x' * 100}.{i}" for i in range(32)]
    updater = Updater(grpc, admin_pb, admin_grpc, pb, admin_address, deaf, patterns)
    updater.start()
    try:
        host.wait_status(f"stream of worker {deaf} cancelled", 90,
                         f"the host to cancel {deaf}'s stream after it stopped reading")
        at_cancel = updater.calls
        iu.eventually(lambda: updater.calls > at_cancel + 20 or updater.unexpected, WAIT,
                      "admin updates go on after the stalled stream was cancelled")
    finally:
        updater.stop()
        done.set()
        call.cancel()
    iu.check(not updater.unexpected, "every admin update was answered", updater.unexpected[:3])
    closed = host.wait_events(lambda e: e.get("name") == "snakepit.grpc.stream.closed"
                              and e.get("worker_id") == deaf, 1, WAIT,
                              f"grpc.stream.closed for {deaf}")
    iu.check(closed[0]["metadata"].get("reason", "").startswith(
                 "cancelled: the peer stopped reading"),
             f"{deaf}'s stream closed as stalled", closed[0]["metadata"])


if __name__ == "__main__":
    iu.main(run)
