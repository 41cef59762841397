// An out-of-tree worker with the gRPC transport, built against the installed pitlane package
// (tests/install/check.sh): find_package(pitlane COMPONENTS grpc) + pitlane::worker_grpc, and
// pkg-config pitlane-grpc. Linking that library is what makes WorkerTransport::kGrpc available;
// without it Worker::Start refuses the transport. No host listens at the target: the event
// waits in the transport's queue (ok).
#include <chrono>
#include <cstdio>
#include <string>

#include "pitlane/worker.h"

int main() {
  pitlane::WorkerOptions opts;
  opts.transport = pitlane::WorkerTransport::kGrpc;
  opts.grpc_target = "127.0.0.1:1";  // nothing listens there
  opts.attach_wait = std::chrono::milliseconds(0);
  auto started = pitlane::Worker::Start(opts);
  if (!started.ok()) {
    std::fprintf(stderr, "Worker::Start: %s\n", started.status().ToString().c_str());
    return 1;
  }
  pitlane::Worker& w = **started;
  const pitlane::EmitResult r =
      w.Emit("python.call.start", {{w.Measure("system_time"), int64_t{1}}});
  std::printf("transport: %s, emit: %s\n",
              std::string(pitlane::WorkerTransportName(w.transport())).c_str(),
              std::string(pitlane::EmitResultName(r)).c_str());
  return 0;
}
