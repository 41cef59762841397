#!/usr/bin/python3
"""The shipped Grafana dashboard and Prometheus alert rules, against a real Prometheus server.

Runs the demo (`pitlane demo --metrics ADDR`: a host serving /metrics with the event metrics
the dashboard uses, and three worker processes emitting the demo's mix), and Debian's
`prometheus` on a free port with a temporary storage directory, scraping the demo every second
and evaluating packaging/prometheus/pitlane-alerts.yml. Then, through the HTTP query API:
  - every expression of every panel of packaging/grafana/pitlane.json returns data
    ($__rate_interval as 15s, Grafana's value for a 1 s scrape interval is 4 x 1 s; 15 s keeps
    a few samples in each window);
  - every alert rule evaluates without error (/api/v1/rules health "ok"), and its measure (the
    expression left of its last top-level comparison) returns data.
Usage: prometheus_dashboards.py PITLANE SOURCE_DIR
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

PROMETHEUS = "/usr/bin/prometheus"
DEADLINE_S = 45


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def query(port, expr):
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return json.load(r)
    except OSError as e:
        return {"status": "error", "error": str(e)}


def alert_measure(expr):
    """`A > B` → `A`: the expression left of the last top-level comparison."""
    depth, cut = 0, None
    for i, c in enumerate(expr):
        depth += c in "([{"
        depth -= c in ")]}"
        if depth == 0 and expr[i:i + 3] in (" > ", " < "):
            cut = i
    if cut is None:
        raise SystemExit(f"FAIL: alert expression has no top-level comparison: {expr}")
    return expr[:cut]


def stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)  # the demo stops and reaps its workers; Prometheus too
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main():
    pitlane, source = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    if not os.access(PROMETHEUS, os.X_OK):
        print(f"skipped: {PROMETHEUS} is not installed (Debian package prometheus)")
        return 77
    dashboard = json.load(open(os.path.join(source, "packaging/grafana/pitlane.json")))
    rules_file = os.path.join(source, "packaging/prometheus/pitlane-alerts.yml")
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 15, "the dashboard has its panels"

    ns = f"ctest-ops-dash-{os.getpid()}"
    tmp = tempfile.mkdtemp(prefix="pitlane-ops-prom-")
    procs = []
    try:
        metrics_port = free_port()
        demo_log = open(os.path.join(tmp, "demo.log"), "w")
        demo = subprocess.Popen(
            [pitlane, "demo", "--ns", ns, "--workers", "3", "--duration", "40", "--rate", "2000",
             "--metrics", f"127.0.0.1:{metrics_port}"], stdout=demo_log, stderr=subprocess.STDOUT)
        procs.append(demo)
        deadline = time.monotonic() + 10
        while b"Prometheus metrics on" not in open(os.path.join(tmp, "demo.log"), "rb").read():
            if demo.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("FAIL: the demo did not start:\n" +
                                 open(os.path.join(tmp, "demo.log")).read())
            time.sleep(0.05)

        web_port = free_port()
        with open(os.path.join(tmp, "prometheus.yml"), "w") as cfg:
            cfg.write("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                      f"rule_files:\n  - {rules_file}\n"
                      "scrape_configs:\n  - job_name: pitlane\n    static_configs:\n"
                      f"      - targets: ['127.0.0.1:{metrics_port}']\n")
        prom_log = open(os.path.join(tmp, "prometheus.log"), "w")
        prom = subprocess.Popen(
            [PROMETHEUS, f"--config.file={tmp}/prometheus.yml",
             f"--storage.tsdb.path={tmp}/data", f"--web.listen-address=127.0.0.1:{web_port}"],
            stdout=prom_log, stderr=subprocess.STDOUT)
        procs.append(prom)

        rules = []
        for group in re.findall(r"^\s+- alert: (\w+)\n(?:\s+#.*\n)*\s+expr: (.+)$",
                                open(rules_file).read(), re.M):
            rules.append(group)
        assert len(rules) >= 6, "the rules file has its alerts"
        pending = {e: e.replace("$__rate_interval", "15s") for e in exprs}
        pending.update({f"alert {name}": alert_measure(expr) for name, expr in rules})
        answers = {}
        deadline = time.monotonic() + DEADLINE_S
        while pending and time.monotonic() < deadline:
            for what, expr in list(pending.items()):
                answer = query(web_port, expr)
                answers[what] = answer
                if answer.get("status") == "success" and answer["data"]["result"]:
                    print(f"ok: returns data: {what}", flush=True)
                    del pending[what]
            if pending:
                time.sleep(1)
        for what in pending:
            print(f"FAIL: no data for {what}\n  query: {pending[what]}\n"
                  f"  last answer: {json.dumps(answers.get(what))[:400]}")

        # Health is "unknown" until a rule's first evaluation (every second here).
        while True:
            with urllib.request.urlopen(f"http://127.0.0.1:{web_port}/api/v1/rules",
                                        timeout=5) as r:
                loaded = [rule for g in json.load(r)["data"]["groups"] for rule in g["rules"]]
            bad = [(r["name"], r.get("health"), r.get("lastError")) for r in loaded
                   if r.get("health") != "ok"]
            if (not bad and len(loaded) == len(rules)) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        if len(loaded) != len(rules):
            print(f"FAIL: Prometheus loaded {len(loaded)} rules, the file has {len(rules)}")
            bad.append(("count", len(loaded), len(rules)))
        for name, health, error in bad:
            print(f"FAIL: rule {name}: health {health}: {error}")
        if not bad:
            print(f"ok: all {len(loaded)} alert rules evaluate (health ok)")
        if pending or bad:
            prom_log.flush()
            print("prometheus log (tail):\n" + open(os.path.join(tmp, "prometheus.log")).read()[-3000:])
            return 1
        print(f"ok: {len(exprs)} dashboard expressions and {len(rules)} alert measures return data")
        return 0
    finally:
        for p in reversed(procs):
            stop(p)
        subprocess.run([pitlane, "cleanup", "--ns", ns], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
