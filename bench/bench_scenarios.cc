#include "bench_scenarios.h"

#include <emmintrin.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <vector>

#include <sys/wait.h>
#include <unistd.h>

namespace pitlane::bench {
namespace {

// Emit → handler latencies, on one clock: the emitting thread stamps the TSC (Ticks()) into
// `emitted_[i]` just before it emits event i, which carries i as its `response_size`; the
// handler, on the host's poll thread, reads the TSC when the event reaches it. Neither the
// worker's event timestamp nor its conversion to Unix time (whose rate the host refines while
// it runs, off by ~100 µs in its first tenth of a second) is involved.
// Thread safety: emitted_[i] is written before event i is published (the ring's release) and
// read after the host acquired it; `count_` (release) publishes the samples to the benchmark.
class LatencyLog {
 public:
  explicit LatencyLog(size_t capacity) : emitted_(capacity), ticks_(capacity) {}
  // On the emitting thread, just before emitting event `i`.
  void Emitting(size_t i) {
    if (i < emitted_.size()) emitted_[i] = Ticks();
  }
  // On the host's poll thread.
  void Delivered(const EventView& v) {
    const uint64_t now = Ticks();
    const size_t c = count_.load(std::memory_order_relaxed);
    const Value* index = v.measurement("response_size");
    if (index != nullptr && index->kind == Value::Kind::kInt && index->i >= 0 &&
        static_cast<size_t>(index->i) < emitted_.size() && c < ticks_.size()) {
      ticks_[c] = now - emitted_[static_cast<size_t>(index->i)];
    }
    // Release pairs with the acquire in count(): the sample is written before it is counted.
    count_.store(c + 1, std::memory_order_release);
  }
  size_t count() const { return count_.load(std::memory_order_acquire); }
  // Waits (sleeping, not spinning: the benchmark thread must not compete with the host's core)
  // until `n` events have been recorded or `timeout` passes; returns the count.
  size_t WaitFor(size_t n, std::chrono::milliseconds timeout) const {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    size_t c;
    while ((c = count()) < n && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
    return c;
  }
  // The samples from the `first`-th on, in ns (timer overhead not subtracted: one Ticks() on
  // each side, ~10 ns).
  std::vector<double> RecordedNs(size_t first = 0) const {
    const size_t n = std::min(count(), ticks_.size());
    std::vector<double> ns;
    for (size_t i = std::min(first, n); i < n; ++i) {
      ns.push_back(static_cast<double>(ticks_[i]) * NsPerTick());
    }
    return ns;
  }

 private:
  std::vector<uint64_t> emitted_;
  std::vector<uint64_t> ticks_;
  std::atomic<size_t> count_{0};
};

void AttachLatencyHandler(Host& host, LatencyLog* log) {
  const Status s = host.Attach("bench-latency", "snakepit.python.call.stop",
                               [log](const EventView& v) { log->Delivered(v); });
  if (!s.ok()) {
    std::fprintf(stderr, "attach: %s\n", s.ToString().c_str());
    std::abort();
  }
}

// Counts the typical events the host delivers into `*delivered`. Only the poll thread writes:
// a relaxed load and store, no locked instruction.
void AttachCounter(Host& host, std::atomic<uint64_t>* delivered) {
  const Status s =
      host.Attach("bench-count", "snakepit.python.call.stop", [delivered](const EventView&) {
        delivered->store(delivered->load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
      });
  if (!s.ok()) std::abort();
}

// Waits until `delivered` reaches `want` or `timeout` passes, sleeping `poll` between looks
// (zero: spinning, for the end of a timed interval).
void WaitDelivered(const std::atomic<uint64_t>& delivered, uint64_t want,
                   std::chrono::seconds timeout, std::chrono::microseconds poll) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (delivered.load(std::memory_order_relaxed) < want &&
         std::chrono::steady_clock::now() < deadline) {
    if (poll.count() == 0) {
      _mm_pause();
    } else {
      std::this_thread::sleep_for(poll);
    }
  }
}

// Emits the typical event; a lossless producer (`retry`) emits it again while the ring or
// queue is full. Adds the emits made to `*attempts`.
EmitResult EmitOnce(Worker& w, const TypicalEvent& te, bool retry, uint64_t* attempts) {
  EmitResult r = te.Emit(w);
  ++*attempts;
  while (retry && r == EmitResult::kDroppedFull) {
    _mm_pause();
    r = te.Emit(w);
    ++*attempts;
  }
  return r;
}

template <typename Event>
void EmitPerCall(benchmark::State& state, Fixture& fx, const Event& event, double gap_ns) {
  Worker& w = fx.worker();
  Samples samples(Pick<size_t>(2000000, 1000));
  uint64_t dropped = 0;
  (void)event.Emit(w);  // the thread's first emit takes the slow path (creates its ring)
  const uint64_t gap = NsToTicks(gap_ns);
  for (auto _ : state) {
    const uint64_t t0 = Ticks();
    const EmitResult r = event.Emit(w);
    const uint64_t t1 = Ticks();
    if (!samples.full()) samples.AddTicks(t1 - t0);
    dropped += r != EmitResult::kOk;
    // Paced below the host's drain rate, the samples are emits into a ring the host keeps up
    // with rather than drops of a full one.
    if (gap != 0) SpinUntil(t1 + gap);
  }
  samples.ReportTicks(state);
  state.counters["dropped"] = static_cast<double>(dropped);
  state.counters["dropped_pct"] =
      100.0 * static_cast<double>(dropped) / static_cast<double>(state.iterations());
}

}  // namespace

void RunEmitPerCall(benchmark::State& state, const FixtureOptions& options, double gap_ns,
                    size_t record_bytes) {
  Fixture fx(options);
  fx.RunHostOnOtherCore(state);
  if (record_bytes == 0) {
    EmitPerCall(state, fx, TypicalEvent(fx.worker()), gap_ns);
  } else {
    const SizedEvent event(fx.worker(), record_bytes);
    EmitPerCall(state, fx, event, gap_ns);
    state.counters["record_bytes"] = static_cast<double>(event.bytes());
  }
}

namespace {

// The typical event encoded once; each emit publishes its bytes.
class PreEncodedEvent {
 public:
  explicit PreEncodedEvent(const Worker& w)
      : ev_(w.Event("python.call.stop")), size_(EncodeTypicalRecord(w.catalog(), buf_, sizeof buf_)) {}
  EmitResult Emit(Worker& w) const { return w.EmitEncoded(ev_, buf_, size_); }

 private:
  EventHandle ev_;
  alignas(8) uint8_t buf_[1024];
  size_t size_;
};

}  // namespace

void RunEmitPreEncodedPerCall(benchmark::State& state, const FixtureOptions& options,
                              double gap_ns) {
  Fixture fx(options);
  fx.RunHostOnOtherCore(state);
  const PreEncodedEvent event(fx.worker());
  EmitPerCall(state, fx, event, gap_ns);
}

void RunEndToEndLatency(benchmark::State& state, const FixtureOptions& options, double gap_ns) {
  const size_t n = static_cast<size_t>(state.max_iterations) + 1;
  LatencyLog log(n);  // outlives the host
  Fixture fx(options);
  AttachLatencyHandler(fx.host(), &log);
  fx.RunHostOnOtherCore(state);
  Worker& w = fx.worker();
  const TypicalEvent te(w);
  size_t ok = 0, i = 0;
  const uint64_t gap = NsToTicks(gap_ns);
  for (auto _ : state) {
    log.Emitting(i);
    ok += te.Emit(w, static_cast<int64_t>(i)) == EmitResult::kOk;
    ++i;
    SpinUntil(Ticks() + gap);
  }
  const size_t got = log.WaitFor(ok, std::chrono::seconds(10));
  std::vector<double> ns = log.RecordedNs();
  ReportPercentilesNs(state, ns);
  state.counters["lost"] = static_cast<double>(ok - std::min(ok, got));
  state.counters["not_emitted"] = static_cast<double>(state.iterations() - ok);
}

void RunFirstEventAfterIdle(benchmark::State& state, const FixtureOptions& options,
                            std::chrono::milliseconds idle) {
  const size_t n = static_cast<size_t>(state.max_iterations) + 2;
  LatencyLog log(n);  // outlives the host
  Fixture fx(options);
  AttachLatencyHandler(fx.host(), &log);
  fx.RunHostOnOtherCore(state);
  Worker& w = fx.worker();
  const TypicalEvent te(w);
  log.Emitting(0);
  (void)te.Emit(w, 0);  // creates the ring; not a sample
  log.WaitFor(1, std::chrono::seconds(5));
  const size_t first = log.count();
  const uint64_t sleeps0 = fx.host().Stats().sleeps;
  // The emit call itself: after `idle` it runs on cold caches and, when the host is asleep,
  // makes the one syscall of the emit path (FUTEX_WAKE).
  Samples emit_calls(static_cast<size_t>(state.max_iterations));
  size_t ok = 0, i = 1;
  for (auto _ : state) {
    std::this_thread::sleep_for(idle);
    const size_t before = log.count();
    log.Emitting(i);
    const uint64_t t0 = Ticks();
    const EmitResult emitted = te.Emit(w, static_cast<int64_t>(i));
    const uint64_t t1 = Ticks();
    if (!emit_calls.full()) emit_calls.AddTicks(t1 - t0);
    if (emitted == EmitResult::kOk) {
      ++ok;
      log.WaitFor(before + 1, std::chrono::seconds(1));
    }
    ++i;
  }
  const size_t got = log.WaitFor(first + ok, std::chrono::seconds(5));
  const uint64_t sleeps = fx.host().Stats().sleeps - sleeps0;
  std::vector<double> ns = log.RecordedNs(first);
  emit_calls.ReportTicks(state, 1.0, "emit_");
  ReportPercentilesNs(state, ns);
  state.counters["lost"] = static_cast<double>(first + ok - std::min(first + ok, got));
  state.counters["idle_ms"] = static_cast<double>(idle.count());
  state.counters["host_sleeps_per_event"] =
      static_cast<double>(sleeps) / static_cast<double>(state.iterations());
}

void RunThroughput(benchmark::State& state, const FixtureOptions& options, int workers, int threads,
                   uint64_t events, bool retry) {
  FixtureOptions o = options;
  o.workers = workers;
  std::atomic<uint64_t> delivered{0};  // outlives the host, whose handler counts into it
  Fixture fx(o);
  AttachCounter(fx.host(), &delivered);
  fx.RunHostOnOtherCore(state);
  const int producers = workers * threads;
  const uint64_t per_producer = std::max<uint64_t>(1, events / static_cast<uint64_t>(producers));

  double delivered_per_s = 0, emitted_per_s = 0, dropped_pct = 0, cpu_ns = 0, retries_per_event = 0;
  uint64_t total_ok = 0;
  for (auto _ : state) {
    std::atomic<int> warmed{0};
    std::atomic<uint64_t> warm_ok{0};
    std::atomic<bool> go{false};
    std::atomic<uint64_t> ok{0}, attempts{0};
    std::vector<std::thread> pool;
    for (int p = 0; p < producers; ++p) {
      pool.emplace_back([&, p] {
        PinTo(kWorkerCore);
        Worker& w = fx.worker(p % workers);
        const TypicalEvent te(w);
        // The first emit creates this thread's ring (or stream); it is not measured.
        warm_ok.fetch_add(te.Emit(w) == EmitResult::kOk);
        warmed.fetch_add(1);
        while (!go.load(std::memory_order_acquire)) _mm_pause();
        uint64_t n_ok = 0, n_attempts = 0;
        for (uint64_t i = 0; i < per_producer; ++i) {
          n_ok += EmitOnce(w, te, retry, &n_attempts) == EmitResult::kOk;
        }
        ok.fetch_add(n_ok);
        attempts.fetch_add(n_attempts);
      });
    }
    while (warmed.load() < producers) std::this_thread::yield();
    // The warm-up events are delivered before the clock starts.
    WaitDelivered(delivered, warm_ok.load(), std::chrono::seconds(10),
                  std::chrono::microseconds(100));
    const uint64_t base = delivered.load(std::memory_order_relaxed);
    const int64_t cpu0 = ProcessCpuNs();
    const int64_t t0 = MonotonicNs();
    go.store(true, std::memory_order_release);
    for (auto& t : pool) t.join();
    const int64_t t_emitted = MonotonicNs();
    WaitDelivered(delivered, base + ok.load(), std::chrono::seconds(30),
                  std::chrono::microseconds(0));
    const int64_t t1 = MonotonicNs();
    const int64_t cpu1 = ProcessCpuNs();
    const uint64_t got = delivered.load(std::memory_order_relaxed) - base;
    const double secs = static_cast<double>(t1 - t0) / 1e9;
    state.SetIterationTime(secs);
    delivered_per_s = static_cast<double>(got) / secs;
    emitted_per_s =
        static_cast<double>(attempts.load()) / (static_cast<double>(t_emitted - t0) / 1e9);
    const uint64_t published_or_dropped = per_producer * static_cast<uint64_t>(producers);
    dropped_pct = 100.0 * static_cast<double>(published_or_dropped - ok.load()) /
                  static_cast<double>(published_or_dropped);
    cpu_ns = static_cast<double>(cpu1 - cpu0) / static_cast<double>(std::max<uint64_t>(1, got));
    total_ok = ok.load();
    retries_per_event = static_cast<double>(attempts.load() - published_or_dropped) /
                        static_cast<double>(published_or_dropped);
    state.counters["lost"] = static_cast<double>(total_ok - std::min(total_ok, got));
  }
  state.counters["delivered_per_s"] = delivered_per_s;
  state.counters["emitted_per_s"] = emitted_per_s;
  state.counters["dropped_pct"] = dropped_pct;
  state.counters["cpu_ns_per_event"] = cpu_ns;
  if (retry) state.counters["full_retries_per_event"] = retries_per_event;
  state.counters["events"] = static_cast<double>(total_ok);
  state.counters["producers"] = producers;
}

void RunIdleCpu(benchmark::State& state, const FixtureOptions& options) {
  for (auto _ : state) {
    Fixture fx(options);
    Worker& w = fx.worker();
    const TypicalEvent te(w);
    fx.RunHostOnOtherCore(state);
    (void)te.Emit(w);  // the ring (or stream) exists and has carried an event
    std::this_thread::sleep_for(std::chrono::milliseconds(Pick(300, 20)));  // settle
    const uint64_t sleeps0 = fx.host().Stats().sleeps;
    const int64_t cpu0 = ProcessCpuNs(), t0 = MonotonicNs();
    std::this_thread::sleep_for(std::chrono::milliseconds(Pick(1500, 50)));
    const int64_t cpu1 = ProcessCpuNs(), t1 = MonotonicNs();
    const uint64_t sleeps = fx.host().Stats().sleeps - sleeps0;
    const double wall = static_cast<double>(t1 - t0);
    state.counters["idle_cpu_pct"] = 100.0 * static_cast<double>(cpu1 - cpu0) / wall;
    state.counters["host_sleeps_per_s"] = static_cast<double>(sleeps) / (wall / 1e9);
  }
}

namespace {

// One producer process of RunProducerProcesses: attaches a Worker of its own to `ns`, creates
// its ring with one event, says so on `ready`, waits for `go` to close, emits `events` typical
// events (retrying when the ring is full) and writes how many it published to `ready`.
[[noreturn]] void ProducerProcess(const std::string& ns, int index, uint64_t events, int ready,
                                  int go) {
  PinTo(kWorkerCore);
  WorkerOptions wo;
  wo.ns = ns;
  wo.worker_id = "bench-proc-" + std::to_string(index);
  Result<std::unique_ptr<Worker>> started = Worker::Start(wo);
  if (!started.ok() || !(*started)->WaitAttached(std::chrono::seconds(10))) _exit(2);
  Worker& w = **started;
  const TypicalEvent te(w);
  const char warm = te.Emit(w) == EmitResult::kOk ? 1 : 0;
  if (::write(ready, &warm, 1) != 1) _exit(3);
  char c;
  while (::read(go, &c, 1) > 0) {
  }
  uint64_t ok = 0, attempts = 0;
  for (uint64_t i = 0; i < events; ++i) {
    ok += EmitOnce(w, te, /*retry=*/true, &attempts) == EmitResult::kOk;
  }
  if (::write(ready, &ok, sizeof ok) != sizeof ok) _exit(4);
  started->reset();
  _exit(0);
}

}  // namespace

void RunProducerProcesses(benchmark::State& state, int processes, uint64_t events) {
  std::atomic<uint64_t> delivered{0};  // outlives the host, whose handler counts into it
  FixtureOptions o;
  o.workers = 0;
  Fixture fx(o);
  AttachCounter(fx.host(), &delivered);
  fx.RunHostOnOtherCore(state);
  const uint64_t per_process = std::max<uint64_t>(1, events / static_cast<uint64_t>(processes));
  double rate = 0, cpu_ns = 0;
  uint64_t lost = 0;
  for (auto _ : state) {
    // One pipe per producer for its two reports; one shared `go` pipe whose close starts all.
    std::vector<int> ready(static_cast<size_t>(processes));
    std::vector<pid_t> pids;
    int go[2];
    if (::pipe(go) != 0) std::abort();
    for (int p = 0; p < processes; ++p) {
      int fds[2];
      if (::pipe(fds) != 0) std::abort();
      const pid_t pid = ::fork();
      if (pid == 0) {
        ::close(go[1]);
        ::close(fds[0]);
        ProducerProcess(fx.ns(), p, per_process, fds[1], go[0]);
      }
      ::close(fds[1]);
      ready[static_cast<size_t>(p)] = fds[0];
      pids.push_back(pid);
    }
    ::close(go[0]);
    uint64_t warm = 0;
    for (const int fd : ready) {
      char c = 0;
      if (::read(fd, &c, 1) != 1) std::abort();
      warm += static_cast<uint64_t>(c);
    }
    // The warm-up events are delivered before the clock starts.
    WaitDelivered(delivered, warm, std::chrono::seconds(10), std::chrono::microseconds(100));
    const uint64_t base = delivered.load(std::memory_order_relaxed);
    const int64_t cpu0 = ProcessCpuNs();
    const int64_t t0 = MonotonicNs();
    ::close(go[1]);
    uint64_t ok = 0;
    for (const int fd : ready) {
      uint64_t n = 0;
      if (::read(fd, &n, sizeof n) != sizeof n) std::abort();
      ok += n;
      ::close(fd);
    }
    WaitDelivered(delivered, base + ok, std::chrono::seconds(30), std::chrono::microseconds(20));
    const int64_t t1 = MonotonicNs();
    const int64_t cpu1 = ProcessCpuNs();
    for (const pid_t pid : pids) ::waitpid(pid, nullptr, 0);
    const uint64_t got = delivered.load(std::memory_order_relaxed) - base;
    state.SetIterationTime(static_cast<double>(t1 - t0) / 1e9);
    rate = static_cast<double>(got) / (static_cast<double>(t1 - t0) / 1e9);
    cpu_ns = static_cast<double>(cpu1 - cpu0) / static_cast<double>(std::max<uint64_t>(1, got));
    lost = ok - std::min(ok, got);
  }
  state.counters["delivered_per_s"] = rate;
  state.counters["host_cpu_ns_per_event"] = cpu_ns;
  state.counters["lost"] = static_cast<double>(lost);
  state.counters["producers"] = processes;
}

}  // namespace pitlane::bench
