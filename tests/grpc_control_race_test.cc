// Control updates racing a dial-in stream's opening. What must hold: the first thing a stream
// receives is its whole initial state (its first message carries the host's catalog hash), an
// update that lands while the stream opens comes after it, and the host never writes to a
// stream before it can.
#include <gtest/gtest.h>
#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <thread>

#include "pitlane/host.h"
#include "telemetry.grpc.pb.h"
#include "testing.h"

namespace pitlane {
namespace {

namespace pb = ::pitlane::v1;
using namespace std::chrono_literals;

// Opens a stream as worker `id` (a foreign peer: the state comes as three messages), returns
// the downstream messages up to the one completing the initial state, then closes the stream.
std::vector<pb::TelemetryDownstream> OpenAndReadInitialState(pb::TelemetryIngest::Stub& ingest,
                                                             const std::string& id) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + 10s);
  auto s = ingest.StreamTelemetry(&ctx);
  pb::TelemetryUpstream hello;
  hello.mutable_hello()->set_worker_id(id);
  hello.mutable_hello()->set_pid(1);
  std::vector<pb::TelemetryDownstream> got;
  if (s->Write(hello)) {
    pb::TelemetryDownstream d;
    while (s->Read(&d)) {
      got.push_back(d);
      if (d.initial_state_complete()) break;
    }
  }
  s->WritesDone();
  pb::TelemetryDownstream rest;
  while (s->Read(&rest)) {
  }
  (void)s->Finish();
  return got;
}

TEST(GrpcControlRace, UpdatesWhileStreamsOpenArriveAfterEachStreamsInitialState) {
  testing::ScopedNamespace ns;
  HostOptions o;
  o.ns = ns.name();
  o.log = [](std::string_view) {};
  o.grpc_listen = "127.0.0.1:0";
  Result<std::unique_ptr<Host>> started = Host::Start(o);
  ASSERT_TRUE(started.ok()) << started.status().ToString();
  std::unique_ptr<Host> host = std::move(started).value();
  host->RunInBackground();
  auto channel = grpc::CreateChannel("127.0.0.1:" + std::to_string(host->grpc_port()),
                                     grpc::InsecureChannelCredentials());
  auto ingest = pb::TelemetryIngest::NewStub(channel);
  ASSERT_TRUE(channel->WaitForConnected(std::chrono::system_clock::now() + 5s));
  const std::string id = "racer";
  ASSERT_FALSE(OpenAndReadInitialState(*ingest, id).empty());  // known to the host from now on

  // Updates back to back for the whole test, while streams of that worker open and close.
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> updates{0};
  std::thread updater([&] {
    ControlState on, off;
    off.enabled = false;
    while (!stop.load()) {
      ASSERT_TRUE(host->SetControl(id, updates.load() % 2 == 0 ? off : on).ok());
      updates.fetch_add(1);
    }
  });
  constexpr int kStreams = 300;
  int complete = 0, hash_first = 0;
  for (int i = 0; i < kStreams; ++i) {
    const std::vector<pb::TelemetryDownstream> got = OpenAndReadInitialState(*ingest, id);
    complete += !got.empty() && got.back().initial_state_complete();
    // Only the initial state's first message carries the catalog hash: an update written
    // ahead of it would come first without one.
    hash_first += !got.empty() && got.front().catalog_hash() != 0;
  }
  stop.store(true);
  updater.join();
  EXPECT_EQ(complete, kStreams) << "streams that did not receive a whole initial state";
  EXPECT_EQ(hash_first, kStreams) << "streams whose first message was not the initial state";
  EXPECT_GT(updates.load(), static_cast<uint64_t>(kStreams)) << "the updates did not race";
}

}  // namespace
}  // namespace pitlane
