// shm::CleanStaleSegments (shm_inspect.h): every segment of a namespace judged by the one
// staleness rule, registries first; a dry run removes nothing; a ring a live host registered
// stays whatever its writer's state; each step says why.
#include <unistd.h>

#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "pitlane/registry.h"
#include "pitlane/shm.h"
#include "pitlane/shm_inspect.h"
#include "testing.h"

namespace pitlane {
namespace {

using testing::SegmentExists;

using shm::CleanupOutcome;
using shm::CleanupStep;

const CleanupStep* Find(const std::vector<CleanupStep>& steps, const std::string& name) {
  for (const CleanupStep& s : steps) {
    if (s.name == name) return &s;
  }
  return nullptr;
}

class CleanStaleTest : public ::testing::Test {
 protected:
  // A registry whose host died (lock released, pid word of a dead process), no worker in it.
  void MakeOrphanRegistry() {
    std::string log;
    auto reg = shm::CreateOrAdoptRegistry(ns_.name(), 0, &log);
    ASSERT_TRUE(reg.ok()) << reg.status().ToString();
    reg->header()->host_pid.store(static_cast<uint32_t>(dead_));
    reg->header()->host_start_time.store(4242);
  }

  testing::ScopedNamespace ns_;
  const pid_t self_ = ::getpid();
  const uint64_t self_start_ = shm::ProcessStartTime(::getpid());
  const pid_t dead_ = testing::DeadPid();
};

TEST_F(CleanStaleTest, DryRunSaysWhatWouldGoAndRemovesNothing) {
  const std::string dead_ring = shm::RingName(ns_.name(), dead_, 0);
  const std::string live_ring = shm::RingName(ns_.name(), self_, 1);
  testing::MakeRing(dead_ring, dead_, 4242, "gone-worker");
  testing::MakeRing(live_ring, self_, self_start_, "live-worker");

  const std::vector<CleanupStep> steps = shm::CleanStaleSegments(ns_.name(), /*dry_run=*/true);
  ASSERT_EQ(steps.size(), 2u);
  const CleanupStep* dead = Find(steps, dead_ring);
  const CleanupStep* live = Find(steps, live_ring);
  ASSERT_NE(dead, nullptr);
  ASSERT_NE(live, nullptr);
  EXPECT_EQ(dead->outcome, CleanupOutcome::kWouldRemove);
  EXPECT_EQ(dead->why, "worker \"gone-worker\" pid " + std::to_string(dead_) + " is dead");
  EXPECT_GT(dead->bytes, 0u);
  EXPECT_EQ(live->outcome, CleanupOutcome::kKept);
  EXPECT_EQ(live->why, "worker \"live-worker\" pid " + std::to_string(self_) + " is running");
  EXPECT_TRUE(SegmentExists(dead_ring));
  EXPECT_TRUE(SegmentExists(live_ring));
}

TEST_F(CleanStaleTest, RemovesDeadRingAndOrphanRegistryRegistryFirst) {
  const std::string dead_ring = shm::RingName(ns_.name(), dead_, 0);
  testing::MakeRing(dead_ring, dead_, 4242, "gone-worker");
  MakeOrphanRegistry();
  const std::string registry = shm::RegistryName(ns_.name());

  const std::vector<CleanupStep> steps = shm::CleanStaleSegments(ns_.name(), /*dry_run=*/false);
  ASSERT_EQ(steps.size(), 2u);
  EXPECT_EQ(steps[0].name, registry);
  EXPECT_EQ(steps[0].outcome, CleanupOutcome::kRemoved) << steps[0].why;
  EXPECT_NE(steps[0].why.find("host pid " + std::to_string(dead_) + " is dead"),
            std::string::npos)
      << steps[0].why;
  EXPECT_EQ(steps[1].name, dead_ring);
  EXPECT_EQ(steps[1].outcome, CleanupOutcome::kRemoved) << steps[1].why;
  EXPECT_FALSE(SegmentExists(registry));
  EXPECT_FALSE(SegmentExists(dead_ring));
  EXPECT_TRUE(shm::CleanStaleSegments(ns_.name(), false).empty());
}

TEST_F(CleanStaleTest, RingRegisteredWithLiveHostIsKeptThoughItsWriterIsDead) {
  std::string log;
  auto host = shm::CreateOrAdoptRegistry(ns_.name(), 0, &log);  // this process: a live host
  ASSERT_TRUE(host.ok()) << host.status().ToString();
  const std::string ring = shm::RingName(ns_.name(), dead_, 0);
  testing::MakeRing(ring, dead_, 4242, "gone-worker");
  auto view = shm::OpenRegistry(ns_.name());
  ASSERT_TRUE(view.ok()) << view.status().ToString();
  const int32_t worker_slot = shm::ClaimWorkerSlot(*view, dead_, 4242, "gone-worker");
  ASSERT_GE(worker_slot, 0);
  const int32_t ring_slot = shm::ClaimRingSlot(*view, static_cast<uint32_t>(worker_slot));
  ASSERT_GE(ring_slot, 0);
  shm::PublishRingSlot(*view, static_cast<uint32_t>(ring_slot), ring, 1);

  const std::vector<CleanupStep> steps = shm::CleanStaleSegments(ns_.name(), /*dry_run=*/false);
  const CleanupStep* r = Find(steps, ring);
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(r->outcome, CleanupOutcome::kKept);
  EXPECT_NE(r->why.find("registered with a live host"), std::string::npos) << r->why;
  const CleanupStep* reg = Find(steps, shm::RegistryName(ns_.name()));
  ASSERT_NE(reg, nullptr);
  EXPECT_EQ(reg->outcome, CleanupOutcome::kKept);
  EXPECT_TRUE(SegmentExists(ring));
}

TEST_F(CleanStaleTest, RegistryOfAnotherLayoutIsNeverRemoved) {
  const std::string registry = shm::RegistryName(ns_.name());
  auto seg = shm::Segment::Create(registry, shm::kRegistryBytes);
  ASSERT_TRUE(seg.ok()) << seg.status().ToString();  // all zeros: no magic

  const std::vector<CleanupStep> steps = shm::CleanStaleSegments(ns_.name(), /*dry_run=*/false);
  ASSERT_EQ(steps.size(), 1u);
  EXPECT_EQ(steps[0].outcome, CleanupOutcome::kKept);
  EXPECT_NE(steps[0].why.find("bad magic"), std::string::npos) << steps[0].why;
  EXPECT_TRUE(SegmentExists(registry));
}

}  // namespace
}  // namespace pitlane
