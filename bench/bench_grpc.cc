// The gRPC transport, measured by the same scenario code as shared memory (bench_scenarios.h):
// each worker streams to the host's dial-in server on 127.0.0.1 (an ephemeral port), and in
// BM_Throughput_Grpc_DialOut the host dials a serving worker instead. The cases
// register next to their shm counterparts (Path::kGrpc), so one run interleaves them and
// bench/render.py can put the two side by side with their ratio.
#include <benchmark/benchmark.h>

#include <string>

#include "bench_scenarios.h"
#include "../tests/local_port.h"
#include "bench_util.h"

namespace pitlane::bench {
namespace {

FixtureOptions Grpc(bool busy_poll) {
  FixtureOptions o;
  o.busy_poll = busy_poll;
  o.configure_host = [](HostOptions& h) { h.grpc_listen = "127.0.0.1:0"; };
  o.configure_worker = [](WorkerOptions& w, Host& host) {
    w.transport = WorkerTransport::kGrpc;
    w.grpc_target = "127.0.0.1:" + std::to_string(host.grpc_port());
  };
  return o;
}

// Snakepit's direction: the worker serves StreamTelemetry and the host dials it (one worker).
FixtureOptions GrpcDialOut() {
  const std::string address = "127.0.0.1:" + std::to_string(testing::UnusedLocalPort());
  FixtureOptions o;
  o.busy_poll = true;
  o.configure_host = [address](HostOptions& h) { h.grpc_dial = {"served=" + address}; };
  o.configure_worker = [address](WorkerOptions& w, Host&) {
    w.transport = WorkerTransport::kGrpc;
    w.grpc_listen = address;
  };
  return o;
}

[[maybe_unused]] const int kRegistered = [] {
  AddCase(Scenario::kEmit, Path::kGrpc, [] {
    for (const double gap : {0.0, 500.0}) {
      const std::string name = "BM_Emit_Grpc/gap_ns:" + std::to_string(static_cast<int>(gap));
      benchmark::RegisterBenchmark(name.c_str(), [gap](benchmark::State& s) {
        RunEmitPerCall(s, Grpc(true), gap);
      })->Apply(Repeated);
    }
  });
  AddCase(Scenario::kEndToEnd, Path::kGrpc, [] {
    for (const bool busy : {true, false}) {
      const std::string name =
          std::string("BM_EndToEnd_Latency/grpc/") + (busy ? "busy_poll" : "backoff");
      benchmark::RegisterBenchmark(name.c_str(), [busy](benchmark::State& s) {
        RunEndToEndLatency(s, Grpc(busy), /*gap_ns=*/10000);
      })->Iterations(Pick<int64_t>(100000, 300));
    }
  });
  AddCase(Scenario::kFirstAfterIdle, Path::kGrpc, [] {
    benchmark::RegisterBenchmark("BM_FirstEventAfterIdle/grpc/backoff", [](benchmark::State& s) {
      RunFirstEventAfterIdle(s, Grpc(false), std::chrono::milliseconds(Pick(50, 5)));
    })->Iterations(Pick<int64_t>(200, 3));
  });
  AddCase(Scenario::kThroughput, Path::kGrpc, [] {
    for (const bool retry : {false, true}) {
      const std::string name = std::string("BM_Throughput_Grpc/") + (retry ? "retry" : "drop");
      benchmark::RegisterBenchmark(name.c_str(),
                                   [retry](benchmark::State& s) {
                                     RunThroughput(s, Grpc(true), /*workers=*/1, /*threads=*/1,
                                                   Pick<uint64_t>(2000000, 20000), retry);
                                   })
          ->Iterations(1)
          ->UseManualTime()
          ->Apply(Repeated);
    }
  });
  AddCase(Scenario::kThroughput, Path::kGrpc, [] {
    benchmark::RegisterBenchmark("BM_Throughput_Grpc_DialOut/retry",
                                 [](benchmark::State& s) {
                                   RunThroughput(s, GrpcDialOut(), /*workers=*/1, /*threads=*/1,
                                                 Pick<uint64_t>(2000000, 20000), /*retry=*/true);
                                 })
        ->Iterations(1)
        ->UseManualTime();
  });
  AddCase(Scenario::kThroughputThreads, Path::kGrpc, [] {
    // One stream per worker: `streams` workers with one emitting thread each.
    for (const int streams : {1, 4}) {
      const std::string name = "BM_Throughput_Grpc_Streams/streams:" + std::to_string(streams);
      benchmark::RegisterBenchmark(name.c_str(),
                                   [streams](benchmark::State& s) {
                                     RunThroughput(s, Grpc(true), streams, /*threads=*/1,
                                                   Pick<uint64_t>(2000000, 20000),
                                                   /*retry=*/true);
                                   })
          ->Iterations(1)
          ->UseManualTime();
    }
  });
  AddCase(Scenario::kIdleCpu, Path::kGrpc, [] {
    benchmark::RegisterBenchmark("BM_IdleCpu/grpc/backoff", [](benchmark::State& s) {
      RunIdleCpu(s, Grpc(false));
    })->Iterations(1);
  });
  return 0;
}();

}  // namespace
}  // namespace pitlane::bench
