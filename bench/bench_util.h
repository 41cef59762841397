// Shared pieces of the pitlane benchmarks: timing (rdtsc, its overhead, percentiles), CPU time,
// pinning, the typical event, a host + worker fixture, and the ordered case registry.
//
// Every case registers through AddCase() instead of BENCHMARK(): main() registers them sorted by
// scenario and then transport, so one run interleaves the shm and gRPC cases of each scenario
// whatever the link order of the files that define them.
//
// PITLANE_BENCH_SMOKE=1 makes every case tiny (the bench_smoke ctest); Smoke() tells.
#pragma once

#include <benchmark/benchmark.h>
#include <emmintrin.h>
#include <x86intrin.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "pitlane/host.h"
#include "pitlane/record.h"
#include "pitlane/worker.h"

namespace pitlane::bench {

bool Smoke();
// Picks the full or the smoke value.
template <typename T>
T Pick(T full, T smoke) {
  return Smoke() ? smoke : full;
}

// How often the cases whose numbers move with the machine's load run (each reported, plus their
// mean/median/stddev/cv): PITLANE_BENCH_REPETITIONS, default 1.
int Repetitions();
// Benchmark::Apply hook: repeats the case Repetitions() times (names get "/repeats:N" only when
// N > 1).
void Repeated(benchmark::internal::Benchmark* b);

// Pins the calling thread to `cpu` (modulo the CPUs there are).
void PinTo(int cpu);
// The emitting side runs on this core, the host's poll loop on the other one.
inline constexpr int kWorkerCore = 0;
inline constexpr int kHostCore = 1;

// A 64-bit atomic alone on its cache line: a position or flag one core writes and the other reads.
struct alignas(64) LineWord {
  std::atomic<uint64_t> v{0};
};

// A cache line bounced between kWorkerCore (the calling thread, which it pins there) and an echo
// thread on kHostCore: RoundTrip(i) writes i and waits until the echo thread writes it back.
// On this kind of VM the cost of a line moving between the two vCPUs changes over time (where
// the hypervisor places them), and every back-to-back emit pays for lines the host read.
class LinePingPong {
 public:
  LinePingPong();
  ~LinePingPong();  // stops and joins the echo thread
  void RoundTrip(uint64_t i);

 private:
  LineWord ping_, pong_;
  std::atomic<bool> stop_{false};
  std::thread echo_;
};
// The median one-way cost of moving a cache line from kWorkerCore to kHostCore, in ns, over
// `round_trips` (~10 ms). Fixture::RunHostOnOtherCore records it as `line_transfer_ns` just
// before the host starts (kHostCore must be idle), so each result carries the machine state it
// ran in.
double LineTransferNs(int round_trips = 20000);

// rdtsc ticks → ns, calibrated once against steady_clock.
double NsPerTick();
// Median cost of an empty Ticks() pair, in ticks (subtracted from every sample).
uint64_t TimerOverheadTicks();
// rdtsc between two lfences: the operation timed between two Ticks() cannot drift out of the
// interval (rdtsc alone is not ordered with the instructions around it).
inline uint64_t Ticks() {
  _mm_lfence();
  const uint64_t t = __rdtsc();
  _mm_lfence();
  return t;
}

// Collects one sample per operation and reports p50/p99/p99.9/max (and the mean) in ns.
class Samples {
 public:
  // Keeps at most `capacity` samples (the first ones).
  explicit Samples(size_t capacity) { v_.reserve(capacity); }
  // A sample in rdtsc ticks that includes one timer overhead (t1 - t0 of two Ticks() reads).
  void AddTicks(uint64_t ticks) { v_.push_back(ticks); }
  bool full() const { return v_.size() >= v_.capacity(); }
  // Ticks minus the timer overhead, in ns, divided by `divisor` (2 for a round trip, or the
  // number of operations a sample timed), as counters named with `prefix`.
  void ReportTicks(benchmark::State& state, double divisor = 1.0, std::string_view prefix = "");

 private:
  std::vector<uint64_t> v_;
};

// Percentiles of `ns` (sorted in place) as counters `<prefix>p50_ns` ... `<prefix>max_ns` plus
// `<prefix>mean_ns` and `samples`.
void ReportPercentilesNs(benchmark::State& state, std::vector<double>& ns,
                         std::string_view prefix = "");

// CPU time of the whole process (user + sys, every thread), in ns.
int64_t ProcessCpuNs();
// CPU time of the calling thread, in ns.
int64_t ThreadCpuNs();
int64_t RealtimeNs();
int64_t MonotonicNs();

// The typical event of the benchmarks: python.call.stop with 3 measurements (two ints, one
// float), 3 metadata entries of known keys and a 27-byte correlation id.
inline constexpr const char* kCorrelation = "pl-0123456789abcdef01234567";
struct TypicalEvent {
  explicit TypicalEvent(const Worker& w, std::string_view result = "ok");
  // `response_size` 512 unless given (the latency cases number their events with it).
  EmitResult Emit(Worker& w, int64_t response_size = 512) const {
    return w.Emit(ev, {{kd, 1234}, {kr, response_size}, {kc, 3.5}},
                  {{mc, "predict"}, {mw, "w1"}, {mr, result}}, kCorrelation);
  }
  EventHandle ev;
  MeasurementKey kd, kr, kc;
  MetadataKey mc, mw, mr;
  std::string_view result;
};

// The typical event encoded into `out` (8-aligned); returns its size. `result` is the value of
// the `result` metadata entry (vary it to vary the record's size).
size_t EncodeTypicalRecord(const Catalog& catalog, uint8_t* out, size_t capacity,
                           std::string_view result = "ok");

// python.call.stop with no measurements and no correlation id, sized by one `result` metadata
// value so that the record is exactly `bytes` long: 72 (no metadata at all, the smallest
// record) or a multiple of 4 from 128 up.
class SizedEvent {
 public:
  SizedEvent(const Worker& w, size_t bytes);
  EmitResult Emit(Worker& w) const {
    if (with_meta_) return w.Emit(ev_, {}, {{mr_, value_}});
    return w.Emit(ev_);
  }
  size_t bytes() const { return bytes_; }

 private:
  EventHandle ev_;
  MetadataKey mr_;
  std::string value_;
  bool with_meta_ = false;
  size_t bytes_ = 0;
};

// A host and its workers, all in this process, in a namespace of their own.
struct FixtureOptions {
  bool busy_poll = true;
  uint64_t ring_bytes = 1 << 20;
  std::chrono::milliseconds max_sleep{10};  // HostOptions::max_sleep
  int workers = 1;
  // Transport hooks: adjust the host's options before Host::Start, and each worker's options
  // before Worker::Start (the host has started by then, e.g. to read the port it bound).
  std::function<void(HostOptions&)> configure_host;
  std::function<void(WorkerOptions&, Host&)> configure_worker;
};
// Destruction: the workers go first while the host still polls (a gRPC worker flushes what it
// queued), then the host drains what is left and stops.
class Fixture {
 public:
  explicit Fixture(const FixtureOptions& o);
  ~Fixture();
  Fixture(const Fixture&) = delete;
  Fixture& operator=(const Fixture&) = delete;

  // The host's poll loop on kHostCore (the loop thread inherits the affinity of the thread
  // that starts it); the calling thread on kWorkerCore.
  // Records the cache line's core-to-core cost of the moment in `state` as line_transfer_ns
  // first (LineTransferNs; kHostCore must still be idle).
  void RunHostOnOtherCore(benchmark::State& state);
  Host& host() { return *host_; }
  Worker& worker(int i = 0) { return *workers_[static_cast<size_t>(i)]; }
  int workers() const { return static_cast<int>(workers_.size()); }
  const std::string& ns() const { return ns_; }

 private:
  std::string ns_;
  std::unique_ptr<Host> host_;
  std::vector<std::unique_ptr<Worker>> workers_;
};

// Spins (pause) until `deadline_ticks`.
inline void SpinUntil(uint64_t deadline_ticks) {
  while (__rdtsc() < deadline_ticks) _mm_pause();
}
inline uint64_t NsToTicks(double ns) { return static_cast<uint64_t>(ns / NsPerTick()); }

// ── ordered registration ──────────────────────────────────────────────────────────────────────
// Scenarios in the order a run shows them; within one, shm cases come before gRPC cases.
enum class Scenario : int {
  kMachineFloor = 0,
  kEncode,
  kEmit,
  kHostStages,
  kHostDrain,
  kEndToEnd,
  kFirstAfterIdle,
  kThroughput,
  kThroughputThreads,
  kRecordSize,
  kMemory,
  kIdleCpu,
};
enum class Path : int { kShm = 0, kGrpc = 1 };

// Queues `add` (which calls benchmark::RegisterBenchmark) for main(). Returns 0, so it can
// initialise a namespace-scope constant.
int AddCase(Scenario scenario, Path path, std::function<void()> add);
// Registers the queued cases in order (main() calls it once).
void RegisterCases();

// The clock a worker of this process stamps events with ("tsc" or "realtime"; the worker's own
// rule: the TSC only when it is the kernel's clocksource, unless PITLANE_CLOCK=realtime).
std::string StampClockName();

}  // namespace pitlane::bench
