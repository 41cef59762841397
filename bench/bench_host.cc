// The host's side of the shm transport: the cost of each stage a record goes through
// (verification, decode, catalog fold) on one typical record, and the host draining pre-filled
// rings — by ring count, with the same total spread over more rings, and by record size.
#include <benchmark/benchmark.h>

#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "../host/src/fold.h"
#include "../host/src/record_verify.h"
#include "bench_util.h"
#include "flatbuffers/flatbuffers.h"
#include "pitlane/catalog.h"
#include "pitlane/fb/event_generated.h"

namespace pitlane::bench {
namespace {

// ── stages, on one typical record (284 bytes) in L1 ─────────────────────────────────────────

struct TypicalRecord {
  TypicalRecord() : size(EncodeTypicalRecord(*catalog, buf, sizeof buf)) {}
  std::shared_ptr<const Catalog> catalog = Catalog::Default();
  alignas(8) uint8_t buf[1024];
  size_t size;
};

size_t TypicalRecordBytes() {
  const TypicalRecord rec;
  return rec.size;
}

// flatbuffers::Verifier with the host's limits, alone: the baseline the host's own verifier is
// held to (record_verify.h).
void BM_HostStage_VerifyStock(benchmark::State& state) {
  const TypicalRecord rec;
  Samples samples(Pick<size_t>(2000000, 1000));
  bool all = true;
  for (auto _ : state) {
    const uint64_t t0 = Ticks();
    flatbuffers::Verifier v(rec.buf, rec.size, internal::kRecordMaxDepth,
                            internal::kRecordMaxTables);
    const bool ok = fb::VerifyEventBuffer(v);
    benchmark::DoNotOptimize(ok);
    const uint64_t t1 = Ticks();
    all &= ok;
    if (!samples.full()) samples.AddTicks(t1 - t0);
  }
  if (!all) state.SkipWithError("the stock Verifier refused the typical record");
  samples.ReportTicks(state);
  state.counters["record_bytes"] = static_cast<double>(rec.size);
}

// The host's verifier alone (no decode).
void BM_HostStage_Verify(benchmark::State& state) {
  const TypicalRecord rec;
  Samples samples(Pick<size_t>(2000000, 1000));
  bool all = true;
  for (auto _ : state) {
    const uint64_t t0 = Ticks();
    const bool ok = internal::VerifyEventRecord(rec.buf, rec.size);
    benchmark::DoNotOptimize(ok);
    const uint64_t t1 = Ticks();
    all &= ok;
    if (!samples.full()) samples.AddTicks(t1 - t0);
  }
  if (!all) state.SkipWithError("the host's verifier refused the typical record");
  samples.ReportTicks(state);
}

// What the host runs per record before the fold: verify + decode into a RawEvent (including
// the clock conversion).
void BM_HostStage_Decode(benchmark::State& state) {
  const TypicalRecord rec;
  const internal::TimeConverter time;
  internal::RecordDecoder decoder;
  Samples samples(Pick<size_t>(2000000, 1000));
  bool all = true;
  for (auto _ : state) {
    internal::RawEvent raw;
    const uint64_t t0 = Ticks();
    const bool ok = decoder.Decode(rec.buf, static_cast<uint32_t>(rec.size), time, &raw);
    benchmark::DoNotOptimize(raw);
    const uint64_t t1 = Ticks();
    all &= ok && raw.measurements.size() == 3;
    if (!samples.full()) samples.AddTicks(t1 - t0);
  }
  if (!all) state.SkipWithError("the typical record did not decode");
  samples.ReportTicks(state);
}

// The catalog fold (internal::Folder) of the decoded typical event, as handlers get it.
void BM_HostStage_Fold(benchmark::State& state) {
  const TypicalRecord rec;
  const internal::TimeConverter time;
  internal::RecordDecoder decoder;
  internal::RawEvent raw;
  if (!decoder.Decode(rec.buf, static_cast<uint32_t>(rec.size), time, &raw)) {
    state.SkipWithError("the typical record did not decode");
    return;
  }
  internal::Folder folder(*rec.catalog);
  internal::FoldContext ctx;
  ctx.node = "bench-node";
  ctx.pool_name = "default";
  ctx.worker_id = "bench-0";
  ctx.worker_pid = "12345";
  ctx.pid = 12345;
  Samples samples(Pick<size_t>(2000000, 1000));
  bool all = true;
  for (auto _ : state) {
    EventView view;
    const uint64_t t0 = Ticks();
    const internal::FoldOutcome out = folder.Fold(raw, ctx, &view);
    benchmark::DoNotOptimize(view);
    const uint64_t t1 = Ticks();
    all &= out.delivered;
    if (!samples.full()) samples.AddTicks(t1 - t0);
  }
  if (!all) state.SkipWithError("the typical event was not delivered by the fold");
  samples.ReportTicks(state);
}

// ── drain ───────────────────────────────────────────────────────────────────────────────────

// Host drain of pre-filled rings, steady state: one emitting thread per ring (kept alive, so
// the rings stay mapped), each fills its ring with `per_ring` events per round; then the host
// drains them all on one core: copy out, verify, decode, catalog fold (no handler attached).
// The filling threads wait on a condition variable meanwhile. Counters: events_per_s,
// bytes_per_s, cpu_ns_per_event (process CPU time ÷ events) and host_thread_cpu_ns_per_event
// (the draining thread's own CPU time ÷ events).
// `sized_bytes` 0: the typical event; else a SizedEvent of that many bytes.
void RunHostDrain(benchmark::State& state, int rings, int per_ring, size_t sized_bytes) {
  const size_t record_bytes = sized_bytes == 0 ? TypicalRecordBytes() : sized_bytes;
  FixtureOptions o;
  o.busy_poll = false;
  o.ring_bytes = 4 << 20;
  Fixture fx(o);
  Worker& w = fx.worker();
  // `start` wakes the fillers for a round (once); `done` wakes the host thread once every ring
  // is full (only the last filler notifies), so no wake-ups are left running while it drains.
  std::mutex mu;
  std::condition_variable start, done_filling;
  int round = 0, filled = 0;
  bool done = false;
  std::vector<std::thread> threads;
  for (int r = 0; r < rings; ++r) {
    threads.emplace_back([&] {
      PinTo(kWorkerCore);
      auto fill = [&](const auto& event) {
        int seen = 0;
        while (true) {
          // Round 0 creates the thread's ring with one event; later rounds fill it.
          const int n = seen == 0 ? 1 : per_ring;
          for (int i = 0; i < n; ++i) (void)event.Emit(w);
          std::unique_lock<std::mutex> lock(mu);
          if (++filled == rings) done_filling.notify_one();
          start.wait(lock, [&] { return round != seen || done; });
          if (done) return;
          seen = round;
        }
      };
      if (sized_bytes == 0) {
        fill(TypicalEvent(w));
      } else {
        fill(SizedEvent(w, sized_bytes));
      }
    });
  }
  auto wait_filled = [&] {
    std::unique_lock<std::mutex> lock(mu);
    done_filling.wait(lock, [&] { return filled == rings; });
  };
  PinTo(kHostCore);
  wait_filled();
  // Discover every ring and drain the round-0 events.
  while (static_cast<int>(fx.host().Rings().size()) < rings) fx.host().PollOnce();
  while (fx.host().PollOnce() > 0) {
  }
  uint64_t events = 0;
  int64_t cpu = 0, thread_cpu = 0;
  for (auto _ : state) {
    state.PauseTiming();
    {
      std::lock_guard<std::mutex> lock(mu);
      filled = 0;
      ++round;
    }
    start.notify_all();
    wait_filled();
    const int64_t cpu0 = ProcessCpuNs(), thread0 = ThreadCpuNs();
    state.ResumeTiming();
    size_t n;
    while ((n = fx.host().PollOnce()) > 0) events += n;
    state.PauseTiming();
    thread_cpu += ThreadCpuNs() - thread0;
    cpu += ProcessCpuNs() - cpu0;
    state.ResumeTiming();
  }
  {
    std::lock_guard<std::mutex> lock(mu);
    done = true;
  }
  start.notify_all();
  for (auto& t : threads) t.join();
  state.counters["events_per_s"] =
      benchmark::Counter(static_cast<double>(events), benchmark::Counter::kIsRate);
  state.counters["bytes_per_s"] =
      benchmark::Counter(static_cast<double>(events * record_bytes), benchmark::Counter::kIsRate);
  state.counters["cpu_ns_per_event"] =
      static_cast<double>(cpu) / static_cast<double>(std::max<uint64_t>(1, events));
  state.counters["host_thread_cpu_ns_per_event"] =
      static_cast<double>(thread_cpu) / static_cast<double>(std::max<uint64_t>(1, events));
  state.counters["record_bytes"] = static_cast<double>(record_bytes);
  state.counters["dropped"] = static_cast<double>(w.Stats().dropped());
  const HostStats hs = fx.host().Stats();
  uint64_t rejected = 0;
  for (uint64_t r : hs.rejected) rejected += r;
  state.counters["rejected"] = static_cast<double>(rejected);
}

[[maybe_unused]] const int kRegistered = [] {
  AddCase(Scenario::kHostStages, Path::kShm, [] {
    benchmark::RegisterBenchmark("BM_HostStage_VerifyStock", BM_HostStage_VerifyStock)
        ->Apply(Repeated);
    benchmark::RegisterBenchmark("BM_HostStage_Verify", BM_HostStage_Verify)->Apply(Repeated);
    benchmark::RegisterBenchmark("BM_HostStage_Decode", BM_HostStage_Decode)->Apply(Repeated);
    benchmark::RegisterBenchmark("BM_HostStage_Fold", BM_HostStage_Fold)->Apply(Repeated);
  });
  AddCase(Scenario::kHostDrain, Path::kShm, [] {
    // A pre-filled ring of 3000 typical events per ring: with 64 rings a round is ~55 MB of
    // records, far more than the caches hold.
    for (const int rings : {1, 4, 16, 64}) {
      const std::string name = "BM_HostDrain/rings:" + std::to_string(rings);
      benchmark::RegisterBenchmark(
          name.c_str(),
          [rings](benchmark::State& s) { RunHostDrain(s, rings, Pick(3000, 100), 0); })
          ->UseRealTime()
          ->Apply(Repeated);
    }
    // The same 3072 events per round spread over more rings: what each ring costs the host
    // beyond the events it holds, at the same memory footprint.
    for (const int rings : {1, 4, 16, 64}) {
      const std::string name = "BM_HostDrain_SameTotal/rings:" + std::to_string(rings);
      benchmark::RegisterBenchmark(
          name.c_str(),
          [rings](benchmark::State& s) { RunHostDrain(s, rings, Pick(3072, 128) / rings, 0); })
          ->UseRealTime()
          ->Apply(Repeated);
    }
  });
  AddCase(Scenario::kRecordSize, Path::kShm, [] {
    for (const size_t bytes : {72u, 128u, 256u, 512u, 1024u}) {
      const std::string name = "BM_HostDrain_RecordSize/bytes:" + std::to_string(bytes);
      benchmark::RegisterBenchmark(name.c_str(), [bytes](benchmark::State& s) {
        RunHostDrain(s, 1, Pick(3000, 100), bytes);
      })->UseRealTime();
    }
  });
  return 0;
}();

}  // namespace
}  // namespace pitlane::bench
