#!/usr/bin/env python3
"""render.py --compare, against two small result files, the emit cases' cache-line note and the
first-event row's floor (ctest bench_render_compare)."""
import contextlib
import io
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import render  # noqa: E402


def result(cases):
    return {"context": {}, "benchmarks": [
        dict({"name": name, "run_name": name, "run_type": "iteration", "time_unit": "ns",
              "real_time": 1.0, "cpu_time": 1.0, "iterations": 1}, **values)
        for name, values in cases.items()]}


def run(args):
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = render.main(args)
    return code, out.getvalue()


def main():
    failures = []

    def expect(cond, what):
        if not cond:
            failures.append(what)

    with tempfile.TemporaryDirectory() as d:
        old, new = os.path.join(d, "old.json"), os.path.join(d, "new.json")
        with open(old, "w") as f:
            json.dump(result({"BM_A": {"p50_ns": 100.0},
                              "BM_B": {"events_per_s": 1e6},
                              "BM_OnlyOld": {"p50_ns": 5.0}}), f)
        with open(new, "w") as f:
            json.dump(result({"BM_A": {"p50_ns": 50.0},
                              "BM_B": {"events_per_s": 0.5e6},
                              "BM_OnlyNew": {"p50_ns": 5.0}}), f)
        code, out = run([new, "--compare", old])
        expect(code == 0, f"exit code {code}")
        expect("| BM_A | p50_ns | 100 ns | 50 ns | -50.0 % (better) |" in out,
               "a latency that halved is reported as better:\n" + out)
        expect("| BM_B | events_per_s | 1.00 M/s | 500 k/s | -50.0 % |" in out,
               "a rate that halved is reported, not as better:\n" + out)
        expect("BM_OnlyOld" not in out.split("Before (")[-1] and
               "BM_OnlyNew" not in out.split("Before (")[-1],
               "cases in only one run are left out of the comparison:\n" + out)
        code, _ = run([new, "--compare", os.path.join(d, "missing.json")])
        expect(code == 2, f"a missing OLD file exits 2, not {code}")
    # Each emit case's cache-line cost is reported beside the results, named by case.
    rows = {}
    for name, v in (("BM_Emit_Shm/gap_ns:0", 230.0), ("BM_Emit_Shm/gap_ns:500", 45.0)):
        rows[name] = render.Row(name)
        rows[name].values = {"line_transfer_ns": v}
    note = " ".join(render.line_transfer_note(rows))
    expect("paced 45 ns" in note and "back to back 230 ns" in note,
           "the line transfer of each emit case is in the note:\n" + note)
    expect(render.line_transfer_note({}) == [], "no note without the counter")
    # The first-event goal row names the bare wake-up measured beside it, and the floor table
    # lists it.
    rows = {}
    for name, v in (("BM_FirstEventAfterIdle/shm/backoff", {"p99_ns": 250e3}),
                    ("BM_Floor_WakeAfterIdle", {"p50_ns": 47e3, "p99_ns": 230e3,
                                                "max_ns": 400e3, "samples": 200.0,
                                                "idle_ms": 50.0})):
        rows[name] = render.Row(name)
        rows[name].values = v
    goals = "\n".join(render.goals(rows))
    expect("250 µs (a bare thread wake-up: 230 µs) | **no**" in goals,
           "the first-event row shows the bare wake-up beside it:\n" + goals)
    floors = "\n".join(render.floor_and_resources(rows))
    expect("47.0 µs / 230 µs" in floors, "the floor table lists the bare wake-up:\n" + floors)
    # The emit call of the first event after idle has rows of its own, from its `emit_` counters.
    rows = {}
    for name, v in (("BM_FirstEventAfterIdle/shm/backoff", {"p50_ns": 60e3, "emit_p50_ns": 17e3}),
                    ("BM_FirstEventAfterIdle/shm/busy_poll", {"p50_ns": 6e3})):
        rows[name] = render.Row(name)
        rows[name].values = v
    lat = "\n".join(render.latency_table(rows, False))
    expect("| its emit call, back-off host (wakes it) | 17.0 µs |" in lat,
           "the emit call's row reads the emit_ counters:\n" + lat)
    expect("its emit call, busy-poll host" not in lat,
           "a case without emit_ counters has no emit-call row:\n" + lat)
    for f in failures:
        print("FAIL:", f)
    print("render_test:", "ok" if not failures else f"{len(failures)} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
