// Benchmark bodies that do not depend on the transport: the same code measures a worker that
// writes shared-memory rings and one that streams to the host over gRPC; only the fixture's
// options differ (FixtureOptions::configure_host / configure_worker).
#pragma once

#include <benchmark/benchmark.h>

#include <chrono>
#include <cstdint>

#include "bench_util.h"

namespace pitlane::bench {

// Per-call cost of Worker::Emit, paced `gap_ns` apart (0: back to back) while the host drains
// on the other core: the typical event, or (record_bytes != 0) a SizedEvent of that size.
// Counters: percentiles, `dropped`, `record_bytes`.
void RunEmitPerCall(benchmark::State& state, const FixtureOptions& options, double gap_ns,
                    size_t record_bytes = 0);

// The same for an already encoded typical record (Worker::EmitEncoded): the cost of reserving,
// copying and committing alone.
void RunEmitPreEncodedPerCall(benchmark::State& state, const FixtureOptions& options,
                              double gap_ns);

// Emit → handler latency on one clock (the TSC read just before Emit and in the handler), for
// typical events paced `gap_ns` apart. Counters: percentiles, `lost` (emitted but not
// delivered within the timeout).
void RunEndToEndLatency(benchmark::State& state, const FixtureOptions& options, double gap_ns);

// The same latency for an event emitted after `idle` without events (each iteration is one
// event), so a back-off host is asleep when it is published. Counters: percentiles,
// `emit_p50_ns`... (the Emit call alone: cold caches, and the FUTEX_WAKE when the host sleeps),
// `host_sleeps_per_event`.
void RunFirstEventAfterIdle(benchmark::State& state, const FixtureOptions& options,
                            std::chrono::milliseconds idle);

// Live producers and the host on the two cores: `workers` Worker objects × `threads` emitting
// threads each (pinned to kWorkerCore), `events` typical events in all. `retry`: a producer
// that finds its ring/queue full retries the same event (lossless throughput) instead of
// dropping it. Counters: delivered_per_s, emitted_per_s, dropped_pct, cpu_ns_per_event (CPU
// time of the whole process ÷ delivered events).
void RunThroughput(benchmark::State& state, const FixtureOptions& options, int workers, int threads,
                   uint64_t events, bool retry);

// An idle host (one worker attached and connected, no events) for 1.5 s: process CPU time ÷
// wall time. Counters: idle_cpu_pct, host_sleeps_per_s.
void RunIdleCpu(benchmark::State& state, const FixtureOptions& options);

// `processes` producer processes (forked, each its own Worker and ring, all pinned to
// kWorkerCore), `events` typical events in all, lossless (a full ring is retried), against the
// busy-poll host of this process on kHostCore. Counters: delivered_per_s, host_cpu_ns_per_event
// (this process's CPU time ÷ delivered events: the host's cost), lost.
void RunProducerProcesses(benchmark::State& state, int processes, uint64_t events);

}  // namespace pitlane::bench
