#include "bench_util.h"

#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <numeric>
#include <thread>

#include "../worker/src/clock.h"
#include "pitlane/catalog.h"

namespace pitlane::bench {

bool Smoke() {
  static const bool smoke = std::getenv("PITLANE_BENCH_SMOKE") != nullptr;
  return smoke;
}

int Repetitions() {
  const char* env = std::getenv("PITLANE_BENCH_REPETITIONS");
  const int n = env ? std::atoi(env) : 1;
  return n > 0 ? n : 1;
}

void Repeated(benchmark::internal::Benchmark* b) {
  if (Repetitions() > 1) b->Repetitions(Repetitions());
}

void PinTo(int cpu) {
  const int cpus = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu % cpus, &set);
  sched_setaffinity(0, sizeof(set), &set);
}

LinePingPong::LinePingPong() {
  PinTo(kWorkerCore);
  echo_ = std::thread([this] {
    PinTo(kHostCore);
    uint64_t seen = 0;
    while (true) {
      uint64_t v;
      // Acquire pairs with the release store of `ping_` in RoundTrip.
      while ((v = ping_.v.load(std::memory_order_acquire)) == seen) {
        if (stop_.load(std::memory_order_relaxed)) return;
      }
      seen = v;
      pong_.v.store(v, std::memory_order_release);
    }
  });
}

LinePingPong::~LinePingPong() {
  stop_.store(true);
  echo_.join();
}

void LinePingPong::RoundTrip(uint64_t i) {
  ping_.v.store(i, std::memory_order_release);
  // Acquire pairs with the echo thread's release store of `pong_`.
  while (pong_.v.load(std::memory_order_acquire) != i) {
  }
}

double LineTransferNs(int round_trips) {
  LinePingPong pp;
  std::vector<uint64_t> ticks(static_cast<size_t>(round_trips));
  for (int i = 0; i < round_trips; ++i) {
    const uint64_t t0 = Ticks();
    pp.RoundTrip(static_cast<uint64_t>(i) + 1);
    ticks[static_cast<size_t>(i)] = Ticks() - t0;
  }
  std::nth_element(ticks.begin(), ticks.begin() + round_trips / 2, ticks.end());
  return static_cast<double>(ticks[static_cast<size_t>(round_trips / 2)]) * NsPerTick() / 2;
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

uint64_t TimerOverheadTicks() {
  static const uint64_t v = [] {
    std::vector<uint64_t> s(10001);
    for (auto& x : s) {
      const uint64_t a = Ticks();
      const uint64_t b = Ticks();
      x = b - a;
    }
    std::nth_element(s.begin(), s.begin() + s.size() / 2, s.end());
    return s[s.size() / 2];
  }();
  return v;
}

void ReportPercentilesNs(benchmark::State& state, std::vector<double>& ns,
                         std::string_view prefix) {
  if (ns.empty()) return;
  std::sort(ns.begin(), ns.end());
  auto at = [&](double q) {
    return ns[std::min(ns.size() - 1, static_cast<size_t>(q * static_cast<double>(ns.size())))];
  };
  const std::string p(prefix);
  state.counters[p + "p50_ns"] = at(0.50);
  state.counters[p + "p99_ns"] = at(0.99);
  state.counters[p + "p99.9_ns"] = at(0.999);
  state.counters[p + "max_ns"] = ns.back();
  state.counters[p + "mean_ns"] =
      std::accumulate(ns.begin(), ns.end(), 0.0) / static_cast<double>(ns.size());
  state.counters[p + "samples"] = static_cast<double>(ns.size());
}

void Samples::ReportTicks(benchmark::State& state, double divisor, std::string_view prefix) {
  const double k = NsPerTick();
  const uint64_t over = TimerOverheadTicks();
  std::vector<double> ns(v_.size());
  for (size_t i = 0; i < v_.size(); ++i) {
    ns[i] = static_cast<double>(v_[i] > over ? v_[i] - over : 0) * k / divisor;
  }
  ReportPercentilesNs(state, ns, prefix);
  state.counters["timer_overhead_ns"] = static_cast<double>(over) * k;
}

namespace {
int64_t ClockNs(clockid_t id) {
  timespec ts;
  clock_gettime(id, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}
}  // namespace

int64_t ProcessCpuNs() { return ClockNs(CLOCK_PROCESS_CPUTIME_ID); }
int64_t ThreadCpuNs() { return ClockNs(CLOCK_THREAD_CPUTIME_ID); }
int64_t RealtimeNs() { return ClockNs(CLOCK_REALTIME); }
int64_t MonotonicNs() { return ClockNs(CLOCK_MONOTONIC); }

TypicalEvent::TypicalEvent(const Worker& w, std::string_view result_value)
    : ev(w.Event("python.call.stop")),
      kd(w.Measure("duration")),
      kr(w.Measure("response_size")),
      kc(w.Measure("cpu_percent")),
      mc(w.Meta("command")),
      mw(w.Meta("worker_id")),
      mr(w.Meta("result")),
      result(result_value) {}

size_t EncodeTypicalRecord(const Catalog& catalog, uint8_t* out, size_t capacity,
                           std::string_view result) {
  const MeasurementKey kd{catalog.MeasurementKeyId("duration"), "duration"};
  const MeasurementKey kr{catalog.MeasurementKeyId("response_size"), "response_size"};
  const MeasurementKey kc{catalog.MeasurementKeyId("cpu_percent"), "cpu_percent"};
  const MetadataKey mc{catalog.MetadataKeyId("command"), "command"};
  const MetadataKey mw{catalog.MetadataKeyId("worker_id"), "worker_id"};
  const MetadataKey mr{catalog.MetadataKeyId("result"), "result"};
  const Measurement m[] = {{kd, 1234}, {kr, 512}, {kc, 3.5}};
  const Metadata md[] = {{mc, "predict"}, {mw, "w1"}, {mr, result}};
  RecordFields f;
  f.event_id = catalog.FindWorkerEvent("python.call.stop");
  f.timestamp = static_cast<uint64_t>(RealtimeNs());
  f.clock = 0;  // fb::Clock::UnixNs
  f.correlation_id = kCorrelation;
  f.measurements = m;
  f.measurement_count = 3;
  f.metadata = md;
  f.metadata_count = 3;
  PreparedRecord p;
  PrepareRecord(f, &catalog, true, &p);
  if (p.size == 0 || p.size > capacity) {
    std::fprintf(stderr, "typical record does not fit %zu bytes\n", capacity);
    std::abort();
  }
  EncodeRecord(f, p, out);
  return p.size;
}

SizedEvent::SizedEvent(const Worker& w, size_t bytes)
    : ev_(w.Event("python.call.stop")), mr_(w.Meta("result")) {
  // The fixed part (header, Event vtable and table) is 72 bytes; one metadata entry adds its
  // vector (8), the two Meta vtables (24), its table (16) and the value string (4 + len + NUL,
  // padded to 4).
  constexpr size_t kFixed = 72, kOneMeta = 72 + 8 + 24 + 16;
  if (bytes != kFixed) {
    if (bytes < kOneMeta + 8 || bytes % 4 != 0) {
      std::fprintf(stderr, "SizedEvent: %zu bytes is not a size this event can have\n", bytes);
      std::abort();
    }
    value_.assign(bytes - kOneMeta - 5, 'v');
    with_meta_ = true;
  }
  const Metadata md[] = {{mr_, value_}};
  RecordFields f;
  f.event_id = ev_.id;
  f.metadata = md;
  f.metadata_count = with_meta_ ? 1 : 0;
  PreparedRecord p;
  PrepareRecord(f, &w.catalog(), true, &p);
  if (p.size != bytes) {
    std::fprintf(stderr, "SizedEvent: encodes to %zu bytes, not %zu\n", p.size, bytes);
    std::abort();
  }
  bytes_ = p.size;
}

Fixture::Fixture(const FixtureOptions& o) : ns_("bench" + std::to_string(getpid())) {
  HostOptions ho;
  ho.ns = ns_;
  ho.busy_poll = o.busy_poll;
  ho.max_sleep = o.max_sleep;
  ho.log = [](std::string_view) {};
  if (o.configure_host) o.configure_host(ho);
  // The host is started, and the workers too, from threads pinned to their cores, so threads
  // they start (a transport's stream threads) inherit the right core.
  std::thread([&] {
    PinTo(kHostCore);
    Result<std::unique_ptr<Host>> h = Host::Start(ho);
    if (!h.ok()) {
      std::fprintf(stderr, "host: %s\n", h.status().ToString().c_str());
      std::abort();
    }
    host_ = std::move(h).value();
  }).join();
  std::thread([&] {
    PinTo(kWorkerCore);
    for (int i = 0; i < o.workers; ++i) {
      WorkerOptions wo;
      wo.ns = ns_;
      wo.worker_id = "bench-" + std::to_string(i);
      wo.ring_bytes = o.ring_bytes;
      if (o.configure_worker) o.configure_worker(wo, *host_);
      Result<std::unique_ptr<Worker>> w = Worker::Start(wo);
      if (!w.ok()) {
        std::fprintf(stderr, "worker: %s\n", w.status().ToString().c_str());
        std::abort();
      }
      if (!(*w)->WaitAttached(std::chrono::seconds(10))) {
        std::fprintf(stderr, "worker %s did not attach to the host\n", wo.worker_id.c_str());
        std::abort();
      }
      workers_.push_back(std::move(w).value());
    }
  }).join();
}

void Fixture::RunHostOnOtherCore(benchmark::State& state) {
  // Measured while kHostCore is still idle: the machine state this case runs in.
  state.counters["line_transfer_ns"] = LineTransferNs();
  PinTo(kWorkerCore);
  std::thread starter([this] {
    PinTo(kHostCore);
    host_->RunInBackground();
  });
  starter.join();
}

Fixture::~Fixture() {
  workers_.clear();
  host_->DrainAll(std::chrono::seconds(5));
  host_.reset();
}

namespace {
struct QueuedCase {
  Scenario scenario;
  Path path;
  size_t seq;
  std::function<void()> add;
};
std::vector<QueuedCase>& Queue() {
  static auto* q = new std::vector<QueuedCase>();
  return *q;
}
}  // namespace

int AddCase(Scenario scenario, Path path, std::function<void()> add) {
  Queue().push_back({scenario, path, Queue().size(), std::move(add)});
  return 0;
}

void RegisterCases() {
  std::vector<QueuedCase>& q = Queue();
  std::sort(q.begin(), q.end(), [](const QueuedCase& a, const QueuedCase& b) {
    if (a.scenario != b.scenario) return a.scenario < b.scenario;
    if (a.path != b.path) return a.path < b.path;
    return a.seq < b.seq;
  });
  for (const QueuedCase& c : q) c.add();
}

std::string StampClockName() { return internal::TscIsUsable() ? "tsc" : "realtime"; }

}  // namespace pitlane::bench
