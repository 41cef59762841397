// pitlane benchmarks: main(), the machine floor, and the worker's side of the shm transport —
// encode, emit, end-to-end latency, first event after idle, live throughput.
//
// Per-call latencies are recorded for every sample with a fenced rdtsc (Ticks()), minus the
// measured cost of the timer itself, and reported as p50/p99/p99.9/max/mean counters (ns). The
// emitting thread runs on one core, the host's poll loop on the other. Host-side cases are in
// bench_host.cc, memory and idle CPU in bench_resources.cc, the gRPC transport in bench_grpc.cc
// (built when the gRPC worker is). PITLANE_BENCH_SMOKE=1 keeps every case tiny (ctest bench_smoke).
#include <benchmark/benchmark.h>
#include <emmintrin.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <thread>
#include <vector>

#include "bench_scenarios.h"
#include "bench_util.h"
#include "pitlane/catalog.h"
#include "pitlane/futex.h"
#include "pitlane/ring_prefetch.h"

namespace pitlane::bench {
namespace {

// ── machine floor ───────────────────────────────────────────────────────────────────────────

void BM_Clock_Realtime(benchmark::State& state) {
  for (auto _ : state) benchmark::DoNotOptimize(RealtimeNs());
}

void BM_Clock_Rdtsc(benchmark::State& state) {
  for (auto _ : state) benchmark::DoNotOptimize(__rdtsc());
}

// memcpy of a record-sized block between two L1-resident buffers (the length is a run-time
// value, as in the ring reader's copy-out). One copy is below the timer's resolution (the TSC
// reads in ~10 ns steps here), so each sample times a batch of 16 and is reported per copy.
void BM_Floor_Memcpy(benchmark::State& state) {
  constexpr int kBatch = 16;
  alignas(64) static uint8_t src[4096], dst[kBatch][512];
  std::memset(src, 0x5A, sizeof src);
  size_t n = static_cast<size_t>(state.range(0));
  benchmark::DoNotOptimize(n);
  Samples samples(Pick<size_t>(500000, 1000));
  for (auto _ : state) {
    const uint64_t t0 = Ticks();
    for (int i = 0; i < kBatch; ++i) std::memcpy(dst[i], src + 64 * i, n);
    benchmark::ClobberMemory();
    const uint64_t t1 = Ticks();
    if (!samples.full()) samples.AddTicks(t1 - t0);
  }
  samples.ReportTicks(state, /*divisor=*/kBatch);
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * kBatch * state.range(0));
}

// One cache line written on one core and read on the other and back (threads pinned to the
// two cores, spinning without pause): each sample is a round trip, reported halved (one way).
void BM_Floor_CacheLinePingPong(benchmark::State& state) {
  LinePingPong pp;
  Samples samples(Pick<size_t>(1000000, 1000));
  uint64_t i = 0;
  for (auto _ : state) {
    const uint64_t t0 = Ticks();
    pp.RoundTrip(++i);
    const uint64_t t1 = Ticks();
    if (!samples.full()) samples.AddTicks(t1 - t0);
  }
  samples.ReportTicks(state, /*divisor=*/2.0);
}

// What a reader that copies records out costs the writer of a ring, with no pitlane code: a
// bare byte ring of 1 MiB, 288-byte records written back to back by this thread (kWorkerCore),
// the position published after each (release); a reader thread on kHostCore takes every 8 KiB
// and, with `reader_copies` 1, copies them out first (as pitlane's host does), with 0 only
// advances its position. Reported: ns per record written (mean over the run), and the line
// transfer measured at the start. The difference between the two is what the machine charges
// the writer for lines another core has read (on the AMD VM: nothing while lines move in
// ~50 ns, several times the write itself while they take ~240 ns).
void BM_Floor_RingWithReader(benchmark::State& state) {
  constexpr uint64_t kRing = 1 << 20, kRecord = 288, kBatch = 8 << 10;
  const bool copies = state.range(0) != 0;
  // The writer asks for each line 1 KiB before it writes there, as RingWriter does
  // (pitlane/ring_prefetch.h).
  const bool write_ahead = state.range(1) != 0 && shm::CanPrefetchForWrite();
  state.counters["line_transfer_ns"] = LineTransferNs();
  std::vector<uint8_t> ring(kRing);
  LineWord written, read;
  std::atomic<bool> stop{false};
  PinTo(kWorkerCore);
  std::thread reader([&] {
    PinTo(kHostCore);
    std::vector<uint8_t> out(kBatch * 2);
    uint64_t rp = 0;
    while (!stop.load(std::memory_order_relaxed)) {
      // Acquire pairs with the writer's release store of `written`.
      const uint64_t wp = written.v.load(std::memory_order_acquire);
      if (wp - rp < kBatch) {
        // Not spinning on `written`: that would take its line from the writer at every look.
        for (int i = 0; i < 40; ++i) _mm_pause();
        continue;
      }
      for (uint64_t at = rp; copies && at < wp;) {
        const uint64_t off = at % kRing, n = std::min({wp - at, kRing - off, uint64_t{kBatch}});
        std::memcpy(out.data(), ring.data() + off, n);
        benchmark::ClobberMemory();
        at += n;
      }
      rp = wp;
      // Release pairs with the writer's acquire load: the bytes before rp may be overwritten.
      read.v.store(rp, std::memory_order_release);
    }
  });
  uint8_t record[kRecord];
  std::memset(record, 0x5A, sizeof record);
  uint64_t wp = 0, seen_read = 0, records = 0;
  const auto t0 = std::chrono::steady_clock::now();
  for (auto _ : state) {
    for (int i = 0; i < 1000; ++i) {
      while (wp + kRecord - seen_read > kRing) seen_read = read.v.load(std::memory_order_acquire);
      const uint64_t off = wp % kRing;
      if (off + kRecord > kRing) {  // no record wraps: skip to the start
        wp += kRing - off;
        continue;
      }
      std::memcpy(ring.data() + off, record, kRecord);
      if (write_ahead) {
        shm::PrefetchRingLines<shm::For::kWrite>(ring.data(), kRing - 1, wp + shm::kWriteAheadBytes,
                                                 wp + kRecord + shm::kWriteAheadBytes);
      }
      wp += kRecord;
      written.v.store(wp, std::memory_order_release);
      ++records;
    }
  }
  const double ns = std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0).count();
  stop.store(true);
  reader.join();
  state.counters["ns_per_record"] = ns / static_cast<double>(std::max<uint64_t>(records, 1));
}

// How often the vCPU the host runs on is away: a thread pinned to kHostCore reads the TSC back
// to back for one second and counts the gaps between two reads longer than 5 µs (interrupts,
// the hypervisor running something else). No latency below the gaps' length can be promised
// at a percentile their share of time reaches.
void BM_Floor_CpuGaps(benchmark::State& state) {
  PinTo(kHostCore);
  const uint64_t min_gap = NsToTicks(5000);
  uint64_t gaps = 0, gap_ticks = 0, longest = 0, span = 0;
  for (auto _ : state) {
    const uint64_t start = Ticks();
    const uint64_t end = start + NsToTicks(Pick(1e9, 1e7));
    uint64_t last = start, t;
    while ((t = __rdtsc()) < end) {
      const uint64_t g = t - last;
      if (g > min_gap) {
        ++gaps;
        gap_ticks += g;
        longest = std::max(longest, g);
      }
      last = t;
    }
    span += t - start;
  }
  PinTo(kWorkerCore);
  const double secs = static_cast<double>(span) * NsPerTick() / 1e9;
  state.counters["gaps_per_s"] = static_cast<double>(gaps) / secs;
  state.counters["away_pct"] = 100.0 * static_cast<double>(gap_ticks) / static_cast<double>(span);
  state.counters["mean_gap_ns"] =
      gaps ? static_cast<double>(gap_ticks) * NsPerTick() / static_cast<double>(gaps) : 0;
  state.counters["max_gap_ns"] = static_cast<double>(longest) * NsPerTick();
}

// The floor under BM_FirstEventAfterIdle: waking a thread asleep on the other vCPU, with
// nothing of pitlane's but the futex calls the host sleeps and is woken with (pitlane/futex.h).
// A thread on kHostCore sleeps on a word with the back-off host's timeout (HostOptions::
// max_sleep, so it also wakes as often); this thread, on kWorkerCore, sleeps `idle` like the
// emitting thread there, then reads the clock, bumps the word and wakes it; the sleeper reads
// the clock as soon as it runs again. The same placement, idle time, sample count and clock as
// the pitlane case, run right after it.
void RunFloorWakeAfterIdle(benchmark::State& state, std::chrono::milliseconds idle) {
  const size_t n = static_cast<size_t>(state.max_iterations);
  std::vector<uint64_t> woke_at(n), woken_at(n);
  std::atomic<uint32_t> word{0};
  std::atomic<size_t> samples{0};
  std::atomic<bool> stop{false};
  // Bumps the word and wakes the sleeper.
  auto bump = [&] {
    word.fetch_add(1, std::memory_order_release);
    shm::FutexWake(word);
  };
  std::thread sleeper([&] {
    PinTo(kHostCore);
    uint32_t seen = 0;
    while (!stop.load(std::memory_order_relaxed)) {
      shm::FutexWait(word, seen, HostOptions{}.max_sleep);
      // Acquire pairs with the waker's release increment: woke_at[i] is written before it.
      const uint32_t now = word.load(std::memory_order_acquire);
      if (now == seen) continue;  // the timeout, as the back-off host sees it
      const uint64_t t = Ticks();
      const size_t i = samples.load(std::memory_order_relaxed);
      if (i < n) woken_at[i] = t;
      // Release pairs with the acquire in the waker's wait: the sample before the count.
      samples.store(i + 1, std::memory_order_release);
      seen = now;
    }
  });
  PinTo(kWorkerCore);
  size_t i = 0;
  for (auto _ : state) {
    std::this_thread::sleep_for(idle);
    woke_at[i] = Ticks();
    bump();
    ++i;
    // Sleeping between looks, as LatencyLog::WaitFor does, so this core is as idle as there.
    while (samples.load(std::memory_order_acquire) < i) {
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  }
  stop.store(true);
  bump();
  sleeper.join();
  std::vector<double> ns;
  for (size_t k = 0; k < i; ++k) {
    ns.push_back(static_cast<double>(woken_at[k] - woke_at[k]) * NsPerTick());
  }
  ReportPercentilesNs(state, ns);
  state.counters["idle_ms"] = static_cast<double>(idle.count());
}

// ── worker side ─────────────────────────────────────────────────────────────────────────────

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
  const uint16_t event_id = catalog->FindWorkerEvent("python.call.stop");
  size_t bytes = 0;
  for (auto _ : state) {
    RecordFields f;
    f.event_id = event_id;
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
  state.counters["record_bytes"] = static_cast<double>(bytes);
}

// Publishing an already-encoded record (no encode, no clock read).
FixtureOptions Shm(bool busy_poll) {
  FixtureOptions o;
  o.busy_poll = busy_poll;
  return o;
}

// Sizes of the record-size scaling cases (SizedEvent).
constexpr int64_t kRecordSizes[] = {72, 128, 256, 512, 1024};

[[maybe_unused]] const int kRegistered = [] {
  AddCase(Scenario::kMachineFloor, Path::kShm, [] {
    benchmark::RegisterBenchmark("BM_Clock_Realtime", BM_Clock_Realtime)->Apply(Repeated);
    benchmark::RegisterBenchmark("BM_Clock_Rdtsc", BM_Clock_Rdtsc)->Apply(Repeated);
    benchmark::RegisterBenchmark("BM_Floor_Memcpy", BM_Floor_Memcpy)
        ->ArgName("bytes")
        ->Arg(64)
        ->Arg(128)
        ->Arg(256)
        ->Apply(Repeated);
    benchmark::RegisterBenchmark("BM_Floor_CpuGaps", BM_Floor_CpuGaps)->Iterations(1);
    benchmark::RegisterBenchmark("BM_Floor_CacheLinePingPong", BM_Floor_CacheLinePingPong)
        ->Iterations(Pick<int64_t>(1000000, 1000))
        ->Apply(Repeated);
    benchmark::RegisterBenchmark("BM_Floor_RingWithReader", BM_Floor_RingWithReader)
        ->ArgNames({"reader_copies", "write_ahead"})
        ->Args({0, 0})
        ->Args({1, 0})
        ->Args({1, 1})
        ->Iterations(Pick<int64_t>(4000, 10))
        ->Apply(Repeated);
  });
  AddCase(Scenario::kEncode, Path::kShm, [] {
    benchmark::RegisterBenchmark("BM_Encode_TypicalEvent", BM_Encode_TypicalEvent)->Apply(Repeated);
  });
  AddCase(Scenario::kEmit, Path::kShm, [] {
    for (const double gap : {0.0, 500.0}) {
      const std::string name = "BM_Emit_Shm/gap_ns:" + std::to_string(static_cast<int>(gap));
      benchmark::RegisterBenchmark(name.c_str(), [gap](benchmark::State& s) {
        RunEmitPerCall(s, Shm(true), gap);
      })->Apply(Repeated);
    }
    // Paced as well: back to back, a pre-encoded emit is faster than the host's drain, so some
    // timed emits find the ring full (dropped_pct says how many) and the host's reads run right
    // behind the emitting thread's writes; paced, every emit lands.
    for (const double gap : {0.0, 500.0}) {
      const std::string name =
          "BM_Emit_PreEncoded/gap_ns:" + std::to_string(static_cast<int>(gap));
      benchmark::RegisterBenchmark(name.c_str(), [gap](benchmark::State& s) {
        RunEmitPreEncodedPerCall(s, Shm(true), gap);
      })->Apply(Repeated);
    }
  });
  AddCase(Scenario::kEndToEnd, Path::kShm, [] {
    for (const bool busy : {true, false}) {
      const std::string name =
          std::string("BM_EndToEnd_Latency/shm/") + (busy ? "busy_poll" : "backoff");
      benchmark::RegisterBenchmark(name.c_str(), [busy](benchmark::State& s) {
        RunEndToEndLatency(s, Shm(busy), /*gap_ns=*/10000);
      })->Iterations(Pick<int64_t>(100000, 300));
    }
  });
  AddCase(Scenario::kFirstAfterIdle, Path::kShm, [] {
    benchmark::RegisterBenchmark("BM_FirstEventAfterIdle/shm/backoff", [](benchmark::State& s) {
      RunFirstEventAfterIdle(s, Shm(false), std::chrono::milliseconds(Pick(50, 5)));
    })->Iterations(Pick<int64_t>(200, 3));
    benchmark::RegisterBenchmark("BM_Floor_WakeAfterIdle", [](benchmark::State& s) {
      RunFloorWakeAfterIdle(s, std::chrono::milliseconds(Pick(50, 5)));
    })->Iterations(Pick<int64_t>(200, 3));
    // The same with a host that never sleeps: nothing to wake, the emit call's caches alone.
    benchmark::RegisterBenchmark("BM_FirstEventAfterIdle/shm/busy_poll", [](benchmark::State& s) {
      RunFirstEventAfterIdle(s, Shm(true), std::chrono::milliseconds(Pick(50, 5)));
    })->Iterations(Pick<int64_t>(200, 3));
  });
  AddCase(Scenario::kThroughput, Path::kShm, [] {
    for (const bool retry : {false, true}) {
      const std::string name = std::string("BM_Throughput_Shm/") + (retry ? "retry" : "drop");
      benchmark::RegisterBenchmark(name.c_str(),
                                   [retry](benchmark::State& s) {
                                     RunThroughput(s, Shm(true), /*workers=*/1, /*threads=*/1,
                                                   Pick<uint64_t>(4000000, 20000), retry);
                                   })
          ->Iterations(1)
          ->UseManualTime()
          ->Apply(Repeated);
    }
  });
  AddCase(Scenario::kThroughputThreads, Path::kShm, [] {
    // Emitting threads of one worker, each with its own ring, all on the worker's core.
    for (const int threads : {1, 2, 4}) {
      const std::string name = "BM_Throughput_Shm_Threads/threads:" + std::to_string(threads);
      benchmark::RegisterBenchmark(name.c_str(),
                                   [threads](benchmark::State& s) {
                                     RunThroughput(s, Shm(true), /*workers=*/1, threads,
                                                   Pick<uint64_t>(4000000, 20000),
                                                   /*retry=*/true);
                                   })
          ->Iterations(1)
          ->UseManualTime();
    }
  });
  AddCase(Scenario::kThroughputThreads, Path::kShm, [] {
    // Producer processes, each a worker with its own ring, all on the worker's core.
    for (const int processes : {1, 2, 4, 8}) {
      const std::string name = "BM_Throughput_Shm_Processes/processes:" + std::to_string(processes);
      benchmark::RegisterBenchmark(name.c_str(),
                                   [processes](benchmark::State& s) {
                                     RunProducerProcesses(s, processes,
                                                          Pick<uint64_t>(4000000, 20000));
                                   })
          ->Iterations(1)
          ->UseManualTime();
    }
  });
  AddCase(Scenario::kIdleCpu, Path::kShm, [] {
    for (const bool busy : {false, true}) {
      const std::string name = std::string("BM_IdleCpu/shm/") + (busy ? "busy_poll" : "backoff");
      benchmark::RegisterBenchmark(name.c_str(), [busy](benchmark::State& s) {
        RunIdleCpu(s, Shm(busy));
      })->Iterations(1);
    }
  });
  AddCase(Scenario::kRecordSize, Path::kShm, [] {
    for (const int64_t bytes : kRecordSizes) {
      const std::string name = "BM_Emit_Shm_RecordSize/bytes:" + std::to_string(bytes);
      benchmark::RegisterBenchmark(name.c_str(), [bytes](benchmark::State& s) {
        RunEmitPerCall(s, Shm(true), /*gap_ns=*/500, static_cast<size_t>(bytes));
      });
    }
    // Back to back as well: then the writer waits for the lines the host read a lap earlier
    // (BM_Floor_RingWithReader), so what an emit costs follows the lines its record fills.
    for (const int64_t bytes : kRecordSizes) {
      const std::string name =
          "BM_Emit_Shm_RecordSize_BackToBack/bytes:" + std::to_string(bytes);
      benchmark::RegisterBenchmark(name.c_str(), [bytes](benchmark::State& s) {
        RunEmitPerCall(s, Shm(true), /*gap_ns=*/0, static_cast<size_t>(bytes));
      });
    }
  });
  return 0;
}();

}  // namespace
}  // namespace pitlane::bench

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::AddCustomContext("pitlane_stamp_clock", pitlane::bench::StampClockName());
  benchmark::AddCustomContext("pitlane_smoke", pitlane::bench::Smoke() ? "1" : "0");
#ifdef PITLANE_BENCH_GRPC
  benchmark::AddCustomContext("pitlane_grpc", "1");
#else
  benchmark::AddCustomContext("pitlane_grpc", "0");
#endif
  benchmark::AddCustomContext("pitlane_repetitions", std::to_string(pitlane::bench::Repetitions()));
  pitlane::bench::RegisterCases();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
