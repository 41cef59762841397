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

With --snakepit: `pitlane host --metric-naming snakepit` with the metric definitions of
Snakepit's telemetry guide, demo workers, and the guide's PromQL and Grafana expressions
verbatim (SNAKEPIT_QUERIES): each is valid on the server, every metric it reads is in the
scrape, and the ones over worker events return data.
Usage: prometheus_dashboards.py PITLANE SOURCE_DIR [--snakepit]
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

# Snakepit's "Client Telemetry Integration Guide", section Prometheus Integration: its
# Telemetry.Metrics definitions, one line each. Two changes, both for its own queries below:
# the call duration is a histogram (its p95 query reads _bucket; a summary has none), and the
# counters its queries read but it does not define are added (call stop count, restarts).
SNAKEPIT_DEFINITIONS = [
    'last_value("snakepit.pool.status.queue_depth", tags: [:node, :pool_name], description: "Current pool queue depth")',
    'last_value("snakepit.pool.status.available_workers", tags: [:node, :pool_name], description: "Available workers")',
    'last_value("snakepit.pool.status.busy_workers", tags: [:node, :pool_name], description: "Busy workers")',
    'histogram("snakepit.python.call.stop.duration", unit: {:native, :millisecond}, tags: [:node, :pool_name, :command], description: "Python call duration")',
    'counter("snakepit.python.call.exception.count", tags: [:node, :pool_name, :error_type], description: "Python exceptions")',
    'counter("snakepit.pool.worker.spawned.count", tags: [:node, :pool_name], description: "Workers spawned")',
    'counter("snakepit.pool.worker.terminated.count", tags: [:node, :pool_name, :reason], description: "Workers terminated")',
    'last_value("snakepit.python.memory.sampled.rss_bytes", tags: [:node, :worker_id], description: "Python process RSS memory")',
    'counter("snakepit.python.call.stop.count")',
    'counter("snakepit.pool.worker.restarted.count", tags: [:node, :pool_name])',
]
# The guide's "Performance Dashboard Queries": the sample PromQL, then the sample Grafana
# dashboard's expressions, as written. True: it must return data from pitlane workers. False:
# it reads only what Snakepit's Elixir pool emits (pool status, restarts), which a pitlane
# host has no pool for, or (the error rate) divides series whose labels differ (error_type), so
# it is empty wherever exceptions carry an error type, in Snakepit too.
SNAKEPIT_QUERIES = {
    "rate(snakepit_python_call_stop_duration_sum[5m]) /\nrate(snakepit_python_call_stop_duration_count[5m])": True,
    'snakepit_pool_status_queue_depth{node="node1@host"}': False,
    "rate(snakepit_pool_worker_restarted_count[5m])": False,
    "rate(snakepit_python_call_exception_count[5m]) /\nrate(snakepit_python_call_stop_count[5m])": False,
    "histogram_quantile(0.95,\n  rate(snakepit_python_call_stop_duration_bucket[5m])\n)": True,
    "snakepit_python_memory_sampled_rss_bytes": True,
    "rate(snakepit_python_call_stop_count[5m])": True,
    "rate(snakepit_python_call_stop_duration_sum[5m]) / rate(snakepit_python_call_stop_duration_count[5m])": True,
    "snakepit_pool_status_queue_depth": False,
    "snakepit_pool_status_available_workers + snakepit_pool_status_busy_workers": False,
}
# Metrics of worker events (and of the host's own pool.worker.terminated): each has data alone.
SNAKEPIT_WORKER_METRICS = ("snakepit_python_", "snakepit_pool_worker_terminated_")


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


def start_prometheus(tmp, metrics_port, rules_file=None):
    """Debian's prometheus scraping 127.0.0.1:metrics_port every second; (process, web port)."""
    web_port = free_port()
    with open(os.path.join(tmp, "prometheus.yml"), "w") as cfg:
        cfg.write("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n")
        if rules_file:
            cfg.write(f"rule_files:\n  - {rules_file}\n")
        cfg.write("scrape_configs:\n  - job_name: pitlane\n    static_configs:\n"
                  f"      - targets: ['127.0.0.1:{metrics_port}']\n")
    prom_log = open(os.path.join(tmp, "prometheus.log"), "w")
    prom = subprocess.Popen(
        [PROMETHEUS, f"--config.file={tmp}/prometheus.yml",
         f"--storage.tsdb.path={tmp}/data", f"--web.listen-address=127.0.0.1:{web_port}"],
        stdout=prom_log, stderr=subprocess.STDOUT)
    return prom, web_port


def wait_for_data(web_port, pending, deadline):
    """Queries each {what: expr} every second until it returns data or the deadline passes;
    prints each outcome and returns the ones that never did."""
    pending = dict(pending)
    answers = {}
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
    return pending


def wait_for_line(path, text, proc, what):
    deadline = time.monotonic() + 10
    while text.encode() not in open(path, "rb").read():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"FAIL: {what} did not start:\n" + open(path).read())
        time.sleep(0.05)


def stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)  # the demo stops and reaps its workers; Prometheus too
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def dashboards(pitlane, source, tmp, procs, ns):
    """The shipped dashboard and alert rules against `pitlane demo --metrics`."""
    dashboard = json.load(open(os.path.join(source, "packaging/grafana/pitlane.json")))
    rules_file = os.path.join(source, "packaging/prometheus/pitlane-alerts.yml")
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 15, "the dashboard has its panels"

    metrics_port = free_port()
    demo_log = open(os.path.join(tmp, "demo.log"), "w")
    demo = subprocess.Popen(
        [pitlane, "demo", "--ns", ns, "--workers", "3", "--duration", "40", "--rate", "2000",
         "--metrics", f"127.0.0.1:{metrics_port}"], stdout=demo_log, stderr=subprocess.STDOUT)
    procs.append(demo)
    wait_for_line(os.path.join(tmp, "demo.log"), "Prometheus metrics on", demo, "the demo")
    prom, web_port = start_prometheus(tmp, metrics_port, rules_file)
    procs.append(prom)

    rules = []
    for group in re.findall(r"^\s+- alert: (\w+)\n(?:\s+#.*\n)*\s+expr: (.+)$",
                            open(rules_file).read(), re.M):
        rules.append(group)
    assert len(rules) >= 6, "the rules file has its alerts"
    pending = {e: e.replace("$__rate_interval", "15s") for e in exprs}
    pending.update({f"alert {name}": alert_measure(expr) for name, expr in rules})
    deadline = time.monotonic() + DEADLINE_S
    pending = wait_for_data(web_port, pending, deadline)

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
        return False
    print(f"ok: {len(exprs)} dashboard expressions and {len(rules)} alert measures return data")
    return True


def snakepit(pitlane, tmp, procs, ns):
    """Snakepit's documented queries against `pitlane host --metric-naming snakepit`."""
    metrics_port = free_port()
    host_log = os.path.join(tmp, "host.log")
    args = [pitlane, "host", "--ns", ns, "--no-admin", "--metrics", f"127.0.0.1:{metrics_port}",
            "--metric-naming", "snakepit"]
    for definition in SNAKEPIT_DEFINITIONS:
        args += ["--metric", definition]
    host = subprocess.Popen(args, stdout=open(host_log, "w"), stderr=subprocess.STDOUT)
    procs.append(host)
    wait_for_line(host_log, "Prometheus metrics on", host, "pitlane host")
    # Two workers; the short one ends, so the host emits pool.worker.terminated for it.
    for wid, seconds in (("snake-w0", "40"), ("snake-w1", "2")):
        procs.append(subprocess.Popen(
            [pitlane, "demo-worker", "--ns", ns, "--id", wid, "--duration", seconds, "--rate",
             "2000"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    prom, web_port = start_prometheus(tmp, metrics_port)
    procs.append(prom)

    names = set()
    for expr in SNAKEPIT_QUERIES:
        names.update(re.findall(r"\bsnakepit_[a-z_]+", expr))
    pending = {f"metric {n}": n for n in names if n.startswith(SNAKEPIT_WORKER_METRICS)}
    pending["metric snakepit_pool_worker_terminated_count"] = (
        "snakepit_pool_worker_terminated_count")
    pending.update({f"query {q!r}": q for q, data in SNAKEPIT_QUERIES.items() if data})
    pending = wait_for_data(web_port, pending, time.monotonic() + DEADLINE_S)
    # Series of pool events pitlane never sees are declared (# TYPE) all the same.
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as r:
        scrape = r.read().decode()
    missing = [n for n in sorted(names) if not re.search(rf"^(# TYPE )?{n}[{{ ]", scrape, re.M)]
    for name in missing:
        print(f"FAIL: the scrape has no {name}")
    if not missing:
        print(f"ok: the scrape serves all {len(names)} metrics the guide's queries read")
    invalid = []
    for q in SNAKEPIT_QUERIES:
        answer = query(web_port, q)
        if answer.get("status") != "success":
            invalid.append(q)
            print(f"FAIL: query {q!r}: {json.dumps(answer)[:400]}")
    if not invalid:
        print(f"ok: all {len(SNAKEPIT_QUERIES)} of the guide's expressions are valid PromQL")
    return not (missing or pending or invalid)


def main():
    pitlane, source = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    with_snakepit = sys.argv[3:] == ["--snakepit"]
    if not os.access(PROMETHEUS, os.X_OK):
        print(f"skipped: {PROMETHEUS} is not installed (Debian package prometheus)")
        return 77
    ns = f"ctest-ops-dash-{os.getpid()}"
    tmp = tempfile.mkdtemp(prefix="pitlane-ops-prom-")
    procs = []
    try:
        if with_snakepit:
            ok = snakepit(pitlane, tmp, procs, ns)
        else:
            ok = dashboards(pitlane, source, tmp, procs, ns)
        if not ok:
            print("prometheus log (tail):\n" +
                  open(os.path.join(tmp, "prometheus.log")).read()[-3000:])
            return 1
        return 0
    finally:
        for p in reversed(procs):
            stop(p)
        subprocess.run([pitlane, "cleanup", "--ns", ns], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
