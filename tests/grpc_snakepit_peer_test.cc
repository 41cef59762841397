// A pitlane worker serving StreamTelemetry to a Snakepit-style host (Snakepit's method path,
// /snakepit.bridge.BridgeService/StreamTelemetry): the messages and stream lifecycles a
// Snakepit host produces are taken as Snakepit's worker takes them.
#include <gtest/gtest.h>
#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "pitlane/worker.h"
#include "snakepit_compat.grpc.pb.h"
#include "telemetry.grpc.pb.h"
#include "testing.h"

namespace pitlane {
namespace {

namespace pb = ::pitlane::v1;
using std::chrono::milliseconds;

bool WaitFor(const std::function<bool()>& pred) {
  const auto until = std::chrono::steady_clock::now() + milliseconds(10000);
  while (!pred()) {
    if (std::chrono::steady_clock::now() > until) return false;
    std::this_thread::sleep_for(milliseconds(2));
  }
  return true;
}

class SnakepitHostTest : public ::testing::Test {
 protected:
  void SetUp() override {
    WorkerOptions wo;
    wo.ns = ns_.name();
    wo.worker_id = "served";
    wo.transport = WorkerTransport::kGrpc;
    wo.grpc_listen = "127.0.0.1:0";
    wo.flush_timeout = milliseconds(200);
    auto w = Worker::Start(wo);
    ASSERT_TRUE(w.ok()) << w.status().ToString();
    worker_ = std::move(w).value();
    stub_ = ::snakepit::bridge::BridgeService::NewStub(
        grpc::CreateChannel("127.0.0.1:" + std::to_string(worker_->grpc_listen_port()),
                            grpc::InsecureChannelCredentials()));
  }

  using Stream = grpc::ClientReaderWriter<pb::TelemetryControl, pb::TelemetryEvent>;

  // Every call ends within 10 s, so a refusal or a lost event fails the test, not hangs it.
  static std::unique_ptr<grpc::ClientContext> Context() {
    auto ctx = std::make_unique<grpc::ClientContext>();
    ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    return ctx;
  }

  static pb::TelemetryControl Toggle(bool on) {
    pb::TelemetryControl c;
    c.mutable_toggle()->set_enabled(on);
    return c;
  }

  testing::ScopedNamespace ns_;
  std::unique_ptr<Worker> worker_;
  std::unique_ptr<::snakepit::bridge::BridgeService::Stub> stub_;
};

TEST_F(SnakepitHostTest, ReRegisteringHostReplacesItsStreamInsteadOfAlreadyExists) {
  // Snakepit's host re-registers a worker by cancelling its stream and opening a new one at
  // once; the old stream has not ended on the worker's side yet.
  std::unique_ptr<grpc::ClientContext> ctx = Context();
  std::unique_ptr<Stream> stream = stub_->StreamTelemetry(ctx.get());
  ASSERT_TRUE(stream->Write(Toggle(true)));
  ASSERT_TRUE(worker_->WaitAttached(milliseconds(10000)));
  for (int round = 0; round < 10; ++round) {
    ctx->TryCancel();
    (void)stream->Finish();
    ctx = Context();
    stream = stub_->StreamTelemetry(ctx.get());
    ASSERT_TRUE(stream->Write(Toggle(true))) << "round " << round;
    // The new stream carries events: it was not refused. (An event the old stream had already
    // taken when its host cancelled it is lost with it, so emit until one arrives.)
    std::atomic<bool> seen{false};
    std::thread emitter([&] {
      while (!seen.load()) {
        (void)worker_->Emit("python.cpu.sampled", {{"cpu_percent", double(round)}});
        std::this_thread::sleep_for(milliseconds(2));
      }
    });
    pb::TelemetryEvent e;
    bool got = false;
    while (!got && stream->Read(&e)) {
      got = e.measurements().count("cpu_percent") != 0 &&
            e.measurements().at("cpu_percent").float_value() == round;
    }
    seen.store(true);
    emitter.join();
    ASSERT_TRUE(got) << "round " << round << ": " << stream->Finish().error_message();
  }
  ctx->TryCancel();
}

TEST_F(SnakepitHostTest, EmptyControlMessageIsIgnoredAndTheStreamGoesOn) {
  std::unique_ptr<grpc::ClientContext> ctx = Context();
  std::unique_ptr<Stream> stream = stub_->StreamTelemetry(ctx.get());
  ASSERT_TRUE(stream->Write(pb::TelemetryControl()));  // sets nothing, as Snakepit may send
  ASSERT_TRUE(stream->Write(Toggle(false)));
  ASSERT_TRUE(WaitFor([&] {
    return worker_->Emit("python.cpu.sampled", {{"cpu_percent", 1.0}}) ==
           EmitResult::kSuppressedDisabled;
  }));
  ASSERT_TRUE(stream->Write(pb::TelemetryControl()));
  ASSERT_TRUE(stream->Write(Toggle(true)));
  ASSERT_TRUE(WaitFor([&] {
    return worker_->Emit("python.cpu.sampled", {{"cpu_percent", 2.0}}) == EmitResult::kOk;
  }));
  pb::TelemetryEvent e;
  ASSERT_TRUE(stream->Read(&e)) << stream->Finish().error_message();  // still open
  ctx->TryCancel();
}

}  // namespace
}  // namespace pitlane
