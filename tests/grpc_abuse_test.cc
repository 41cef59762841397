// Resource abuse of the host's gRPC service: streams that never say hello, more streams than
// the host serves at once. What must hold: a bounded cost per stream (a cap answered with
// RESOURCE_EXHAUSTED), silent streams cancelled after the hello timeout, every server thread
// they held given back once they end, the heap they used given back too (no growth from one
// round of streams to the next), and the service still working for honest workers.
#include <dirent.h>
#include <gtest/gtest.h>
#include <malloc.h>
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "pitlane/host.h"
#include "telemetry.grpc.pb.h"
#include "testing.h"

namespace pitlane {
namespace {

namespace pb = ::pitlane::v1;
using namespace std::chrono_literals;

size_t ThreadsOfThisProcess() {
  size_t n = 0;
  if (DIR* d = ::opendir("/proc/self/task")) {
    while (dirent* e = ::readdir(d)) n += e->d_name[0] != '.';
    ::closedir(d);
  }
  return n;
}

struct SilentStream {
  grpc::ClientContext ctx;
  std::unique_ptr<grpc::ClientReaderWriter<pb::TelemetryUpstream, pb::TelemetryDownstream>> s;
};

TEST(GrpcAbuse, SilentStreamsBeyondTheCapAreRefusedTheRestTimeOutAndTheirThreadsComeBack) {
  testing::ScopedNamespace ns;
  HostOptions o;
  o.ns = ns.name();
  o.log = [](std::string_view) {};
  o.grpc_listen = "127.0.0.1:0";
  o.grpc_max_streams = 8;
  o.grpc_hello_timeout = 300ms;
  Result<std::unique_ptr<Host>> started = Host::Start(o);
  ASSERT_TRUE(started.ok()) << started.status().ToString();
  std::unique_ptr<Host> host = std::move(started).value();
  host->RunInBackground();
  auto channel = grpc::CreateChannel("127.0.0.1:" + std::to_string(host->grpc_port()),
                                     grpc::InsecureChannelCredentials());
  auto ingest = pb::TelemetryIngest::NewStub(channel);
  ASSERT_TRUE(channel->WaitForConnected(std::chrono::system_clock::now() + 5s));
  std::this_thread::sleep_for(100ms);
  const size_t threads_before = ThreadsOfThisProcess();

  // The server threads that held the streams are given back (the server keeps a few idle
  // ones); a stream's seat is free once its thread has left the handler.
  auto wait_threads_back = [&] {
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    while (ThreadsOfThisProcess() > threads_before + 2 &&
           std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(20ms);
    }
    return ThreadsOfThisProcess() <= threads_before + 2;
  };
  // Heap bytes in use (client and host share this process). A sanitizer's allocator reports 0.
  auto heap_in_use = [] { return static_cast<size_t>(::mallinfo2().uordblks); };
  std::vector<size_t> heap_after_round;
  for (int round = 0; round < 3; ++round) {
    constexpr int kStreams = 40;
    std::vector<std::unique_ptr<SilentStream>> streams;
    for (int i = 0; i < kStreams; ++i) {
      auto s = std::make_unique<SilentStream>();
      s->ctx.set_deadline(std::chrono::system_clock::now() + 20s);
      s->s = ingest->StreamTelemetry(&s->ctx);
      streams.push_back(std::move(s));
    }
    std::map<grpc::StatusCode, int> outcomes;
    for (auto& s : streams) {
      pb::TelemetryDownstream d;
      while (s->s->Read(&d)) {
      }
      outcomes[s->s->Finish().error_code()]++;
    }
    EXPECT_EQ(outcomes[grpc::StatusCode::RESOURCE_EXHAUSTED], kStreams - 8) << "round " << round;
    EXPECT_EQ(outcomes[grpc::StatusCode::DEADLINE_EXCEEDED] + outcomes[grpc::StatusCode::CANCELLED],
              8)
        << "round " << round;
    EXPECT_TRUE(wait_threads_back()) << "round " << round << ": " << ThreadsOfThisProcess()
                                     << " threads, " << threads_before << " before";
    heap_after_round.push_back(heap_in_use());
  }
  // The first round may leave caches behind (channel, completion queues); later rounds of the
  // same streams must not add to them.
  if (heap_after_round[0] != 0) {
    constexpr size_t kSlack = 256 << 10;
    EXPECT_LE(heap_after_round[2], heap_after_round[1] + kSlack)
        << "heap in use after rounds: " << heap_after_round[0] << ", " << heap_after_round[1]
        << ", " << heap_after_round[2] << " bytes";
  }
  std::printf("heap in use after each round: %zu, %zu, %zu bytes\n", heap_after_round[0],
              heap_after_round[1], heap_after_round[2]);


  // An honest worker still gets in and is known to the host.
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + 10s);
  auto s = ingest->StreamTelemetry(&ctx);
  pb::TelemetryUpstream hello;
  hello.mutable_hello()->set_worker_id("honest");
  hello.mutable_hello()->set_pid(1);
  ASSERT_TRUE(s->Write(hello));
  pb::TelemetryDownstream d;
  EXPECT_TRUE(s->Read(&d));  // the initial control state
  s->WritesDone();
  while (s->Read(&d)) {
  }
  EXPECT_TRUE(s->Finish().ok());
  bool known = false;
  for (const WorkerInfo& w : host->Workers()) known |= w.id == "honest";
  EXPECT_TRUE(known);
}

}  // namespace
}  // namespace pitlane
