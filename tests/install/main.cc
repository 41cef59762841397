// A tiny out-of-tree worker built against the installed pitlane package (tests/install/check.sh):
// with find_package(pitlane CONFIG) + pitlane::worker, and with pkg-config. Linked with
// pitlane::worker_grpc (pkg-config pitlane-grpc) it is also the gRPC consumer, run with
// PITLANE_TRANSPORT=grpc: linking that library is what makes the transport available, without
// it Worker::Start refuses it.
#include <chrono>
#include <cstdio>
#include <string>

#include "pitlane/worker.h"

int main() {
  pitlane::WorkerOptions opts;
  opts.attach_wait = std::chrono::milliseconds(0);  // do not wait for a host
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
