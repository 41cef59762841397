// pitlane benchmarks: encode, emit (shm), pre-encoded emit, host drain.
//
// Per-call latencies are recorded for every sample with rdtsc, minus the measured cost of the
// timer itself, and reported as p50/p99/p99.9/max counters (ns). The host drains on the other
// core while the emit benchmarks run. PITLANE_BENCH_SMOKE=1 keeps sample counts tiny (ctest).
#include <benchmark/benchmark.h>
#include <sched.h>
#include <unistd.h>
#include <x86intrin.h>
#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "pitlane/catalog.h"
#include "pitlane/host.h"
#include "pitlane/record.h"
#include "pitlane/worker.h"

namespace {

using namespace pitlane;

bool Smoke() { return std::getenv("PITLANE_BENCH_SMOKE") != nullptr; }

void PinTo(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu % std::max(1u, std::thread::hardware_concurrency()), &set);
  sched_setaffinity(0, sizeof(set), &set);
}

double NsPerTick() {
  static const double v = [] {
    const auto t0 = std::chrono::steady_clock::now();
    const uint64_t c0 = __rdtsc();
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    const uint64_t c1 = __rdtsc();
    const auto t1 = std::chrono::steady_clock::now();
    return std::chrono::duration<double, std::nano>(t1 - t0).count() / double(c1 - c0);
  }();
  return v;
}

// Median cost of an empty rdtsc pair, in ticks.
uint64_t TimerOverheadTicks() {
  static const uint64_t v = [] {
    std::vector<uint64_t> s(10001);
    for (auto& x : s) {
      const uint64_t a = __rdtsc();
      const uint64_t b = __rdtsc();
      x = b - a;
    }
    std::nth_element(s.begin(), s.begin() + s.size() / 2, s.end());
    return s[s.size() / 2];
  }();
  return v;
}

void ReportPercentiles(benchmark::State& state, std::vector<uint64_t>& ticks) {
  if (ticks.empty()) return;
  std::sort(ticks.begin(), ticks.end());
  const double k = NsPerTick();
  const uint64_t over = TimerOverheadTicks();
  auto at = [&](double q) {
    const uint64_t t = ticks[std::min(ticks.size() - 1, size_t(q * double(ticks.size())))];
    return double(t > over ? t - over : 0) * k;
  };
  state.counters["p50_ns"] = at(0.50);
  state.counters["p99_ns"] = at(0.99);
  state.counters["p99.9_ns"] = at(0.999);
  state.counters["max_ns"] = double(ticks.back() > over ? ticks.back() - over : 0) * k;
}

// The typical event of the benchmark issue: python.call.stop, 3 measurements, 3 metadata, a
// 27-byte correlation id, a timestamp.
constexpr const char* kCorrelation = "pl-0123456789abcdef01234567";

void BM_Clock_Realtime(benchmark::State& state) {
  for (auto _ : state) {
    timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    benchmark::DoNotOptimize(ts);
  }
}
BENCHMARK(BM_Clock_Realtime);

void BM_Clock_Rdtsc(benchmark::State& state) {
  for (auto _ : state) benchmark::DoNotOptimize(__rdtsc());
}
BENCHMARK(BM_Clock_Rdtsc);

void BM_Encode_TypicalEvent(benchmark::State& state) {
  const auto catalog = Catalog::Default();
  const MeasurementKey kd{catalog->MeasurementKeyId("duration"), "duration"};
  const MeasurementKey kr{catalog->MeasurementKeyId("response_size"), "response_size"};
  const MeasurementKey kc{catalog->MeasurementKeyId("cpu_percent"), "cpu_percent"};
  const MetadataKey mc{catalog->MetadataKeyId("command"), "command"};
  const MetadataKey mw{catalog->MetadataKeyId("worker_id"), "worker_id"};
  const MetadataKey mr{catalog->MetadataKeyId("result"), "result"};
  alignas(8) uint8_t buf[1024];
  const Measurement m[] = {{kd, 1234}, {kr, 512}, {kc, 3.5}};
  const Metadata md[] = {{mc, "predict"}, {mw, "w1"}, {mr, "ok"}};
  size_t bytes = 0;
  for (auto _ : state) {
    RecordFields f;
    f.event_id = catalog->FindWorkerEvent("python.call.stop");
    f.timestamp = __rdtsc();
    f.clock = 2;
    f.correlation_id = kCorrelation;
    f.measurements = m;
    f.measurement_count = 3;
    f.metadata = md;
    f.metadata_count = 3;
    PreparedRecord p;
    PrepareRecord(f, catalog.get(), true, &p);
    EncodeRecord(f, p, buf);
    bytes = p.size;
    benchmark::DoNotOptimize(buf);
  }
  state.counters["record_bytes"] = double(bytes);
}
BENCHMARK(BM_Encode_TypicalEvent);

struct Fixture {
  std::string ns = "bench" + std::to_string(getpid());
  std::unique_ptr<Host> host;
  std::unique_ptr<Worker> worker;

  explicit Fixture(bool busy_poll, uint64_t ring_bytes = 1 << 20) {
    HostOptions ho;
    ho.ns = ns;
    ho.busy_poll = busy_poll;
    ho.log = [](std::string_view) {};
    host = std::move(Host::Start(ho)).value();
    WorkerOptions wo;
    wo.ns = ns;
    wo.worker_id = "bench";
    wo.ring_bytes = ring_bytes;
    worker = std::move(Worker::Start(wo)).value();
  }
  // The calling thread (the emitter) on core 0, the host's poll loop on core 1.
  void DrainOnOtherCore() {
    PinTo(0);
    // The loop thread inherits the affinity of the thread that starts it.
    std::thread starter([this] {
      PinTo(1);
      host->RunInBackground();
    });
    starter.join();
  }
  ~Fixture() {
    worker.reset();
    host->DrainAll(std::chrono::seconds(5));
    host.reset();
  }
};

void BM_Emit_Shm(benchmark::State& state) {
  Fixture fx(/*busy_poll=*/true);
  fx.DrainOnOtherCore();
  Worker& w = *fx.worker;
  const EventHandle ev = w.Event("python.call.stop");
  const MeasurementKey kd = w.Measure("duration"), kr = w.Measure("response_size"),
                       kc = w.Measure("cpu_percent");
  const MetadataKey mc = w.Meta("command"), mw = w.Meta("worker_id"), mr = w.Meta("result");
  std::vector<uint64_t> ticks;
  ticks.reserve(Smoke() ? 1000 : 2000000);
  uint64_t dropped = 0;
  (void)w.Emit(ev, {{kd, 1}}, {});  // creates the thread's ring
  for (auto _ : state) {
    const uint64_t t0 = __rdtsc();
    const EmitResult r = w.Emit(ev, {{kd, 1234}, {kr, 512}, {kc, 3.5}},
                                {{mc, "predict"}, {mw, "w1"}, {mr, "ok"}}, kCorrelation);
    const uint64_t t1 = __rdtsc();
    if (ticks.size() < ticks.capacity()) ticks.push_back(t1 - t0);
    dropped += r != EmitResult::kOk;
    // Pace the emitter below the host's drain rate (state.range(0) ns between emits), so the
    // samples are emits into a ring the host keeps up with, not drops of a full one.
    const uint64_t until = t1 + static_cast<uint64_t>(state.range(0) / NsPerTick());
    while (__rdtsc() < until) _mm_pause();
  }
  ReportPercentiles(state, ticks);
  state.counters["dropped"] = double(dropped);
  fx.host->Stop();
}
BENCHMARK(BM_Emit_Shm)->Arg(0)->Arg(500)->ArgName("gap_ns");

void BM_Emit_PreEncoded(benchmark::State& state) {
  Fixture fx(/*busy_poll=*/true);
  fx.DrainOnOtherCore();
  Worker& w = *fx.worker;
  const EventHandle ev = w.Event("python.call.stop");
  const auto& catalog = w.catalog();
  alignas(8) uint8_t buf[1024];
  const Measurement m[] = {{w.Measure("duration"), 1234}, {w.Measure("response_size"), 512},
                           {w.Measure("cpu_percent"), 3.5}};
  const Metadata md[] = {{w.Meta("command"), "predict"}, {w.Meta("worker_id"), "w1"},
                         {w.Meta("result"), "ok"}};
  RecordFields f;
  f.event_id = ev.id;
  f.timestamp = 0;
  f.correlation_id = kCorrelation;
  f.measurements = m;
  f.measurement_count = 3;
  f.metadata = md;
  f.metadata_count = 3;
  PreparedRecord p;
  PrepareRecord(f, &catalog, true, &p);
  EncodeRecord(f, p, buf);
  std::vector<uint64_t> ticks;
  ticks.reserve(Smoke() ? 1000 : 2000000);
  (void)w.EmitEncoded(ev, buf, p.size);
  for (auto _ : state) {
    const uint64_t t0 = __rdtsc();
    benchmark::DoNotOptimize(w.EmitEncoded(ev, buf, p.size));
    const uint64_t t1 = __rdtsc();
    if (ticks.size() < ticks.capacity()) ticks.push_back(t1 - t0);
  }
  ReportPercentiles(state, ticks);
  fx.host->Stop();
}
BENCHMARK(BM_Emit_PreEncoded);

// Host drain of pre-filled rings, steady state: one emitting thread per ring (kept alive, so
// the rings stay mapped and warm), each fills its ring with `per_ring` typical events; then the
// host drains them all on one core: copy out, verify, catalog fold, (no) handler.
void BM_HostDrain(benchmark::State& state) {
  const int rings = static_cast<int>(state.range(0));
  const int per_ring = Smoke() ? 100 : 3000;
  Fixture fx(/*busy_poll=*/false, /*ring_bytes=*/4 << 20);
  Worker& w = *fx.worker;
  const EventHandle ev = w.Event("python.call.stop");
  const MeasurementKey kd = w.Measure("duration"), kr = w.Measure("response_size"),
                       kc = w.Measure("cpu_percent");
  const MetadataKey mc = w.Meta("command"), mw = w.Meta("worker_id"), mr = w.Meta("result");
  std::atomic<int> round{0}, filled{0};
  std::atomic<bool> done{false};
  std::vector<std::thread> threads;
  for (int r = 0; r < rings; ++r) {
    threads.emplace_back([&] {
      int seen = 0;
      while (true) {
        while (round.load() == seen && !done.load()) std::this_thread::yield();
        if (done.load()) return;
        seen = round.load();
        for (int i = 0; i < per_ring; ++i) {
          (void)w.Emit(ev, {{kd, i}, {kr, 512}, {kc, 3.5}},
                       {{mc, "predict"}, {mw, "w1"}, {mr, "ok"}}, kCorrelation);
        }
        filled.fetch_add(1);
      }
    });
  }
  uint64_t events = 0;
  for (auto _ : state) {
    state.PauseTiming();
    filled.store(0);
    round.fetch_add(1);
    while (filled.load() < rings) std::this_thread::yield();
    fx.host->PollOnce();  // discovers new rings (first round), then drains
    state.ResumeTiming();
    size_t n;
    while ((n = fx.host->PollOnce()) > 0) events += n;
  }
  done.store(true);
  for (auto& t : threads) t.join();
  state.counters["events_per_s"] = benchmark::Counter(double(events), benchmark::Counter::kIsRate);
  state.counters["dropped"] = double(w.Stats().dropped());
}
BENCHMARK(BM_HostDrain)->Arg(1)->Arg(4)->Arg(16)->Arg(64)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
