#!/usr/bin/python3
"""ctest interop_control_kept_across_host_restart.

A restarted host keeps the control state its predecessor applied to a worker that dials in,
driven by an independent peer: a grpcio client with bindings that protoc generated from
proto/telemetry.proto, playing a worker that applies each control_state it receives and
announces the state it runs in its hello (`WorkerHello.current_control`).

- `pitlane host --grpc-listen 127.0.0.1:0` sends the worker its initial state (enabled);
- `pitlane ctl toggle kept off` reaches the worker as a control_state with enabled false;
- the host stops on SIGTERM (exit 0); a new `pitlane host` on the same port gets the worker's
  hello carrying that state, sends it back as its initial state, says in its log that it kept
  it, and `pitlane ctl show kept` reports it disabled;
- a worker of another id that announces the defaults gets the defaults, and one announcing a
  state the host must refuse (sampling rate 2) is not believed: it gets the defaults too.
"""

import os
import subprocess

import interop_util as iu

WAIT = 20  # seconds any single condition may take on a loaded machine


def body(hosts):
    args = iu.parse_args(__doc__)
    import grpc
    import telemetry_pb2 as pb
    import telemetry_pb2_grpc as pb_grpc

    ns = iu.unique_namespace("restart-control")

    def ctl(*words):
        r = subprocess.run([args.pitlane, "ctl", "--ns", ns, *words], stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, env=iu.child_env(ns), timeout=30)
        print(f"pitlane ctl {' '.join(words)} -> {r.returncode}: {r.stdout.strip()} "
              f"{r.stderr.strip()}", flush=True)
        return r

    def open_stream(port, worker_id, running):
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        hello = pb.WorkerHello(worker_id=worker_id, pid=os.getpid(), node="interop-restart",
                               accepts_control_state=True)
        hello.current_control.CopyFrom(running)
        stream = iu.IngestStream(grpc, pb_grpc, channel, first=pb.TelemetryUpstream(hello=hello))
        iu.wait_for(stream.settled, WAIT, f"{worker_id}: the host's initial control state")
        return channel, stream

    def states(stream):
        return [r.control_state for r in stream.snapshot().replies if r.HasField("control_state")]

    defaults = pb.WorkerControlState(enabled=True, sampling_rate=1.0)

    first = iu.HostProcess(args.pitlane, ns, ["--grpc-listen", "127.0.0.1:0", "--interval", "3600"])
    hosts.append(first)
    port = first.grpc_port()
    channel, stream = open_stream(port, "kept", defaults)
    iu.check(states(stream) and states(stream)[0].enabled, "the first host's initial state is enabled",
             states(stream))
    r = ctl("toggle", "kept", "off")
    iu.check(r.returncode == 0, "pitlane ctl toggle kept off exits 0", r.stderr)
    iu.eventually(lambda: len(states(stream)) >= 2, WAIT, "the toggle reaches the worker")
    running = states(stream)[-1]  # what this worker now applies
    iu.check(not running.enabled, "the worker runs disabled", running)
    stream.close_send()
    stream.wait_finished("the first stream ends")
    channel.close()
    iu.check(first.stop() == 0, "the first host exits 0 on SIGTERM", first.describe())

    second = iu.HostProcess(args.pitlane, ns,
                            ["--grpc-listen", f"127.0.0.1:{port}", "--interval", "3600"])
    hosts.append(second)
    second.grpc_port()
    channel, stream = open_stream(port, "kept", running)
    initial = states(stream)
    iu.check(initial and initial[0] == running,
             "the restarted host's initial state is the one the worker runs", initial)
    second.wait_status(r'worker "kept" keeps the control state a previous host applied to it '
                       r'\(disabled', WAIT, "the restarted host's log line about the kept state")
    r = ctl("show", "kept")
    iu.check(r.returncode == 0 and "kept: disabled" in r.stdout,
             "pitlane ctl show kept reports it disabled", r.stdout + r.stderr)

    # Another id announcing the defaults, and one announcing a state no host accepts.
    other_channel, other = open_stream(port, "fresh", defaults)
    iu.check(states(other) and states(other)[0] == defaults, "a fresh worker gets the defaults",
             states(other))
    invalid = pb.WorkerControlState(enabled=False, sampling_rate=2.0)
    bad_channel, bad = open_stream(port, "liar", invalid)
    iu.check(states(bad) and states(bad)[0] == defaults,
             "an announced state the host refuses is not adopted", states(bad))
    for s, c in ((stream, channel), (other, other_channel), (bad, bad_channel)):
        s.close_send()
        s.wait_finished("a stream ends")
        c.close()
    iu.check(second.stop() == 0, "the restarted host exits 0 on SIGTERM", second.describe())


if __name__ == "__main__":
    iu.main(body)
