// pitlane's emit beside an LTTng-UST tracepoint carrying the same typical event, in one run:
// blocks of emits alternate between the two, so both see the same machine at the same time.
// The pitlane host (back-off, as users run it) drains on kHostCore; LTTng's consumer daemon is
// a separate process that bench/run.sh starts (a session recording pitlane_bench:*) and pins
// to the same core. Both sides buffer 4 MiB per producer. Built when Debian's liblttng-ust-dev
// is found.
#include <benchmark/benchmark.h>

#include <string>

#include "bench_util.h"
#include "lttng/pitlane_bench_tp.h"

namespace pitlane::bench {
namespace {

// Emits per block before switching to the other tracer: long enough that each block runs in
// its own steady state (the other consumer has caught up), short enough that both blocks of a
// pair see the same machine.
const uint64_t kBlock = Pick<uint64_t>(10000, 100);

void RunEmitVsLttng(benchmark::State& state, double gap_ns) {
  if (!lttng_ust_tracepoint_enabled(pitlane_bench, typical_event)) {
    state.SkipWithError(
        "no LTTng session records pitlane_bench:typical_event: run this case through "
        "bench/run.sh, which starts one (Debian: lttng-tools)");
    return;
  }
  FixtureOptions o;
  o.busy_poll = false;
  o.ring_bytes = 4 << 20;  // as LTTng's channel in run.sh: 4 MiB per producer
  Fixture fx(o);
  fx.RunHostOnOtherCore(state);
  Worker& w = fx.worker();
  const TypicalEvent te(w);
  (void)te.Emit(w);  // the thread's ring
  lttng_ust_tracepoint(pitlane_bench, typical_event, te.ev.id, kCorrelation, 1234, 512, 3.5,
                       "predict", "w1", "ok");
  const size_t per_side = Pick<size_t>(2000000, 1000);
  Samples pitlane(per_side), lttng(per_side);
  uint64_t i = 0, dropped = 0;
  const uint64_t gap = NsToTicks(gap_ns);
  for (auto _ : state) {
    const bool ours = (i++ / kBlock) % 2 == 0;
    uint64_t t0, t1;
    if (ours) {
      t0 = Ticks();
      const EmitResult r = te.Emit(w);
      t1 = Ticks();
      dropped += r != EmitResult::kOk;
      if (!pitlane.full()) pitlane.AddTicks(t1 - t0);
    } else {
      t0 = Ticks();
      lttng_ust_tracepoint(pitlane_bench, typical_event, te.ev.id, kCorrelation, 1234, 512, 3.5,
                           "predict", "w1", "ok");
      t1 = Ticks();
      if (!lttng.full()) lttng.AddTicks(t1 - t0);
    }
    if (gap != 0) SpinUntil(t1 + gap);
  }
  pitlane.ReportTicks(state, 1.0, "pitlane_");
  lttng.ReportTicks(state, 1.0, "lttng_");
  for (const std::string p : {"p50", "p99", "p99.9"}) {
    const double theirs = state.counters["lttng_" + p + "_ns"];
    state.counters["ratio_" + p] = theirs > 0 ? state.counters["pitlane_" + p + "_ns"] / theirs : 0;
  }
  state.counters["pitlane_dropped"] = static_cast<double>(dropped);
}

[[maybe_unused]] const int kRegistered = [] {
  AddCase(Scenario::kEmit, Path::kShm, [] {
    for (const double gap : {0.0, 500.0}) {
      const std::string name = "BM_Emit_VsLttng/gap_ns:" + std::to_string(static_cast<int>(gap));
      benchmark::RegisterBenchmark(name.c_str(), [gap](benchmark::State& s) {
        RunEmitVsLttng(s, gap);
      })->Apply(Repeated);
    }
  });
  return 0;
}();

}  // namespace
}  // namespace pitlane::bench
