#!/usr/bin/env python3
"""`pitlane host --statsd` end to end, against Etsy's StatsD daemon (tests/statsd: npm ci there),
which parses and aggregates every line the way a StatsD deployment does:

* each event is one count of `<prefix>.<event>` per worker tag, a duration one timing in ms,
  a byte count one gauge, and a negative gauge arrives negative (sent as "0|g" then "-N|g");
* a worker id full of StatsD's separators reaches the daemon sanitised as one tag, not as a
  broken or forged line: the daemon counts no bad line;
* what the exporter reports (`pitlane stat --json`: datagrams and lines sent) is what the
  daemon received (its own packets_received and metrics_received counters).

usage: cli_host_statsd.py PITLANE NODE
"""
import json
import os
import socket
import subprocess
import sys
import tempfile

pitlane, node = sys.argv[1], sys.argv[2]
here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "..", "interop"))
from interop_util import CheckFailed, wait_for  # noqa: E402  (the tests' shared polling)
ns = f"ctest-statsd-cli-{os.getpid()}"
EVENT = "snakepit.python.call.stop"  # python.call.stop's host name
HOSTILE_ID = "w:2|x@y#z,q"           # every character that could split a StatsD line
SANITISED_ID = "w_2_x_y_z_q"


def free_port(kind):
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(*args):
    r = subprocess.run([pitlane, *args], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, f"pitlane {' '.join(args)}: exit {r.returncode}: {r.stderr}"
    return r.stdout


with tempfile.TemporaryDirectory() as tmp:
    flushes = os.path.join(tmp, "flushes.jsonl")
    port, mgmt_port = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_STREAM)
    config = os.path.join(tmp, "config.js")
    with open(config, "w") as f:
        f.write("(" + json.dumps({
            "address": "127.0.0.1", "port": port,
            "mgmt_address": "127.0.0.1", "mgmt_port": mgmt_port,
            "flushInterval": 200,
            "backends": [os.path.join(here, "flush_to_file.js")],
            "flushFile": flushes,
        }) + ")\n")

    def totals():
        """Counters and timers summed over every flush so far, the last value of each gauge."""
        counters, timers, gauges = {}, {}, {}
        if os.path.exists(flushes):
            with open(flushes) as f:
                for line in f:
                    if not line.endswith("\n"):
                        break  # a flush being written
                    d = json.loads(line)
                    for k, v in d["counters"].items():
                        counters[k] = counters.get(k, 0) + v
                    for k, v in d["timers"].items():
                        timers.setdefault(k, []).extend(v)
                    gauges.update(d["gauges"])
        return counters, timers, gauges

    daemon = subprocess.Popen([node, os.path.join(here, "node_modules/statsd/stats.js"), config],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    host = None
    try:
        # The daemon is up once a probe line comes back in a flush.
        def probe():
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.sendto(b"probe:1|c", ("127.0.0.1", port))
            return totals()[0].get("probe", 0) > 0
        wait_for(probe, 30, "the StatsD daemon to count a probe line")

        admin = f"unix:{tmp}/admin.sock"
        host = subprocess.Popen(
            [pitlane, "host", "--ns", ns, "--admin", admin, "--interval", "60",
             "--statsd", f"127.0.0.1:{port}", "--statsd-tags", "worker_id"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        wait_for(lambda: os.path.exists(f"{tmp}/admin.sock"), 20, "the host's admin socket")

        for i in range(5):
            run("emit", "--ns", ns, "--id", "w1", "python.call.stop",
                "-m", "duration=1500000", "-m", "response_size=512")
        for i in range(3):
            run("emit", "--ns", ns, "--id", HOSTILE_ID, "python.call.stop",
                "-m", "duration=250000", "-m", "queue_depth=-7")

        def report():
            d = json.loads(run("stat", "--ns", ns, "--json", "--admin", admin))
            for e in d.get("exporters") or []:
                if e["name"] == "statsd":
                    return e
            return None

        # Every event has been sent (a counter line each, so 8 at least) ...
        wait_for(lambda: (r := report()) and r["counts"].get("lines_sent", 0) >= 8, 20,
                 "the exporter to send the 8 events")

        # ... and what the exporter says it sent is what the daemon received. Host events
        # (workers leaving) may still be on their way: compare until both sides settle.
        def received():
            # Less the probes: one line in one datagram each.
            c = totals()[0]
            return (c.get("statsd.metrics_received", 0) - c.get("probe", 0),
                    c.get("statsd.packets_received", 0) - c.get("probe", 0))

        def sent():
            r = report()["counts"]
            return (r["lines_sent"], r["datagrams_sent"])

        last = {}

        def settled():
            last["sent"], last["received"] = sent(), received()
            return last["sent"] == last["received"]

        try:
            wait_for(settled, 10, "the daemon to receive what the exporter reports")
        except CheckFailed:
            pass  # reported below with the other checks
        counters, timers, gauges = totals()
        checks = []

        def check(what, got, want):
            ok = got == want
            checks.append(ok)
            print(f"{'ok' if ok else 'FAIL'}: {what}: {got!r}" + ("" if ok else f", want {want!r}"))

        w1, w2 = "worker_id=w1", f"worker_id={SANITISED_ID}"
        check("the daemon counted no bad line", counters.get("statsd.bad_lines_seen", 0), 0)
        check("w1's events are one count each", counters.get(f"pitlane.{EVENT};{w1}"), 5)
        check("the hostile worker's events are one count each, under its sanitised id",
              counters.get(f"pitlane.{EVENT};{w2}"), 3)
        check("w1's durations are timings in ms", timers.get(f"pitlane.{EVENT}.duration;{w1}"),
              [1.5] * 5)
        check("the hostile worker's durations are timings in ms",
              timers.get(f"pitlane.{EVENT}.duration;{w2}"), [0.25] * 3)
        check("a byte count is a gauge", gauges.get(f"pitlane.{EVENT}.response_size;{w1}"), 512)
        check("a negative gauge arrives negative",
              gauges.get(f"pitlane.{EVENT}.queue_depth;{w2}"), -7)
        check("the daemon received (lines, datagrams) as the exporter reports sending",
              last["received"], last["sent"])
        others = sorted(k for k in list(counters) + list(timers) + list(gauges)
                        if k.startswith("pitlane.") and w1 not in k and w2 not in k)
        check("no metric arrived without its worker tag", others, [])
        if not all(checks):
            sys.exit(1)
        print("OK")
    finally:
        if host is not None:
            host.terminate()
            out = host.communicate(timeout=20)[0]
            if host.returncode != 0:
                print(f"host exit {host.returncode}:\n{out}")
        daemon.terminate()
        daemon.wait(timeout=20)
        # A worker that exits just before its host stops leaves its ring (and so the registry)
        # for `pitlane cleanup`, as it would for an operator.
        subprocess.run([pitlane, "cleanup", "--ns", ns], capture_output=True, timeout=30)
