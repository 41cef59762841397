// When the host reads a ring: at once while its writer is quiet; in batches, bounded in bytes
// and in time (HostOptions::hold_filling_ring), while the writer is filling it
// (host/src/shm_source.cc, HoldFor). The host here runs no loop of its own: each PollOnce is one
// pass, so which pass reads what is exact. The time bound is set far above how long a pass takes
// (sanitizer builds included) except where the bound itself is tested.
#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <string>
#include <thread>

#include "pitlane/host.h"
#include "pitlane/worker.h"
#include "testing.h"

namespace pitlane {
namespace {

using namespace std::chrono_literals;

class DrainHoldTest : public ::testing::Test {
 protected:
  void SetUp() override { Start(std::chrono::seconds(10)); }

  void Start(std::chrono::microseconds hold) {
    worker_.reset();
    host_.reset();
    HostOptions o;
    o.ns = ns_.name();
    o.log = [](std::string_view) {};
    o.hold_filling_ring = hold;
    Result<std::unique_ptr<Host>> host = Host::Start(std::move(o));
    ASSERT_TRUE(host.ok()) << host.status().ToString();
    host_ = std::move(host).value();
    worker_ = testing::StartWorker(ns_.name(), "hold-worker");
    ASSERT_NE(worker_, nullptr);
    ev_ = worker_->Event("python.call.start");
  }

  void Emit(int n = 1) {
    for (int i = 0; i < n; ++i) {
      ASSERT_EQ(worker_->Emit(ev_, {{"system_time", int64_t{i}}}), EmitResult::kOk);
    }
  }
  uint64_t Delivered() const { return host_->Stats().delivered; }

  testing::ScopedNamespace ns_;
  std::unique_ptr<Host> host_;
  std::unique_ptr<Worker> worker_;
  EventHandle ev_;
};

TEST_F(DrainHoldTest, ANegativeLimitIsRefused) {
  HostOptions o;
  o.ns = ns_.name();
  o.hold_filling_ring = std::chrono::microseconds(-1);
  EXPECT_EQ(Host::Start(std::move(o)).status().code(), StatusCode::kInvalidArgument);
}

TEST_F(DrainHoldTest, ALimitOfZeroReadsAFillingRingAtEveryPass) {
  Start(std::chrono::microseconds(0));
  Emit();
  host_->PollOnce();
  Emit();
  host_->PollOnce();
  EXPECT_EQ(Delivered(), 2u);
}

TEST_F(DrainHoldTest, AQuietWritersRecordIsReadAtTheNextPass) {
  Emit();
  host_->PollOnce();  // discovers the ring: its writer was not seen moving before
  EXPECT_EQ(Delivered(), 1u);
  for (int i = 0; i < 3; ++i) host_->PollOnce();  // the writer is quiet: nothing held back
  Emit();
  host_->PollOnce();  // moved since the previous pass, which saw it still: read at once
  EXPECT_EQ(Delivered(), 2u);
}

TEST_F(DrainHoldTest, AFillingRingIsHeldUntilTheWriterPausesThenReadWhole) {
  Emit();
  host_->PollOnce();
  ASSERT_EQ(Delivered(), 1u);
  Emit();
  host_->PollOnce();  // moved at this pass and the previous one: being filled, held back
  EXPECT_EQ(Delivered(), 1u);
  Emit();
  host_->PollOnce();  // still filling, a few hundred bytes waiting: held
  EXPECT_EQ(Delivered(), 1u);
  host_->PollOnce();  // the writer paused: everything waiting is read
  EXPECT_EQ(Delivered(), 3u);
}

TEST_F(DrainHoldTest, AFillingRingIsReadOnceEnoughIsWaiting) {
  Emit();
  host_->PollOnce();
  Emit();
  host_->PollOnce();  // filling: held
  ASSERT_EQ(Delivered(), 1u);
  Emit(200);  // well past the batch a filling ring is held for (8 KiB)
  host_->PollOnce();
  EXPECT_EQ(Delivered(), 202u);
}

TEST_F(DrainHoldTest, ASmallRingIsReadOnceAQuarterOfItIsWaiting) {
  // A 16 KiB ring: held back for the usual 8 KiB, a writer going on would fill it while held.
  WorkerOptions o;
  o.ns = ns_.name();
  o.worker_id = "small-ring-worker";
  o.ring_bytes = 16 << 10;
  o.attach_wait = std::chrono::seconds(5);
  Result<std::unique_ptr<Worker>> small = Worker::Start(std::move(o));
  ASSERT_TRUE(small.ok()) << small.status().ToString();
  worker_ = std::move(small).value();
  ev_ = worker_->Event("python.call.start");
  Emit();
  host_->PollOnce();
  Emit();
  host_->PollOnce();  // filling: held
  ASSERT_EQ(Delivered(), 1u);
  // 104 bytes per record in the ring: 50 of them are more than a quarter of the ring (4 KiB)
  // and less than the 8 KiB a larger ring is held for.
  Emit(50);
  host_->PollOnce();
  EXPECT_EQ(Delivered(), 52u);
}

TEST_F(DrainHoldTest, AFillingRingIsNotHeldLongerThanTheLimit) {
  Start(std::chrono::microseconds(100));
  Emit();
  host_->PollOnce();
  Emit();
  host_->PollOnce();  // filling: held from now on
  ASSERT_EQ(Delivered(), 1u);
  // The writer keeps moving at every pass, a record at a time; the host reads anyway once the
  // ring has been held for the limit (100 µs; this waits 1 ms between passes).
  uint64_t delivered = 1;
  for (int pass = 0; pass < 10 && delivered < 2; ++pass) {
    std::this_thread::sleep_for(1ms);
    Emit();
    host_->PollOnce();
    delivered = Delivered();
  }
  EXPECT_GT(delivered, 1u);
}

}  // namespace
}  // namespace pitlane
