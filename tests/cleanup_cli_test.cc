// `pitlane cleanup`: stale segments of dead processes go (and --dry-run only lists them); the
// segments of live processes stay. Runs the built CLI ($PITLANE_CLI, else ../cli/pitlane next
// to this test binary) against fake segments made with the shm API.
#include <unistd.h>

#include <cstdio>
#include <string>

#include "gtest/gtest.h"
#include "pitlane/registry.h"
#include "pitlane/shm.h"
#include "testing.h"

namespace pitlane {
namespace {

using testing::CliPath;
using testing::RunCli;
using testing::SegmentExists;

class CleanupCli : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::access(CliPath().c_str(), X_OK) != 0) GTEST_SKIP() << "no pitlane CLI at " << CliPath();
  }
  testing::ScopedNamespace ns_;
  const pid_t self_ = ::getpid();
  const uint64_t self_start_ = shm::ProcessStartTime(::getpid());
};

TEST_F(CleanupCli, RemovesDeadRingsAndRegistryKeepsLiveRing) {
  const pid_t dead = testing::DeadPid();
  const std::string stale_ring = shm::RingName(ns_.name(), dead, 0);
  const std::string live_ring = shm::RingName(ns_.name(), self_, 1);
  testing::MakeRing(stale_ring, dead, 4242, "gone-worker");
  testing::MakeRing(live_ring, self_, self_start_, "live-worker");
  // A registry whose host died (its lock is released), with no worker registered.
  {
    std::string log;
    auto reg = shm::CreateOrAdoptRegistry(ns_.name(), 0, &log);
    ASSERT_TRUE(reg.ok()) << reg.status().ToString();
    reg->header()->host_pid.store(static_cast<uint32_t>(dead));
    reg->header()->host_start_time.store(4242);
  }
  const std::string registry = shm::RegistryName(ns_.name());

  int code = -1;
  std::string out = RunCli("cleanup --dry-run --ns " + ns_.name(), &code);
  EXPECT_EQ(code, 0) << out;
  EXPECT_NE(out.find("would remove " + stale_ring + ": worker \"gone-worker\" pid " +
                     std::to_string(dead) + " is dead"),
            std::string::npos)
      << out;
  EXPECT_NE(
      out.find("would remove " + registry + ": host pid " + std::to_string(dead) + " is dead"),
      std::string::npos)
      << out;
  EXPECT_NE(out.find("kept " + live_ring + ": worker \"live-worker\" pid " + std::to_string(self_) +
                     " is running"),
            std::string::npos)
      << out;
  EXPECT_TRUE(SegmentExists(stale_ring));
  EXPECT_TRUE(SegmentExists(registry));
  EXPECT_TRUE(SegmentExists(live_ring));

  out = RunCli("cleanup --ns " + ns_.name(), &code);
  EXPECT_EQ(code, 0) << out;
  EXPECT_NE(out.find("removed " + stale_ring + ": "), std::string::npos) << out;
  EXPECT_NE(out.find("removed " + registry + ": "), std::string::npos) << out;
  EXPECT_NE(out.find("removed 2 stale segments"), std::string::npos) << out;
  EXPECT_FALSE(SegmentExists(stale_ring));
  EXPECT_FALSE(SegmentExists(registry));
  EXPECT_TRUE(SegmentExists(live_ring));

  // Nothing stale is left: a second run removes nothing.
  out = RunCli("cleanup --ns " + ns_.name(), &code);
  EXPECT_EQ(code, 0) << out;
  EXPECT_NE(out.find("removed 0 stale segments"), std::string::npos) << out;
  EXPECT_TRUE(SegmentExists(live_ring));
}

TEST_F(CleanupCli, KeepsRegistryWithLiveWorkerOrLiveHost) {
  std::string log;
  auto reg = shm::CreateOrAdoptRegistry(ns_.name(), 0, &log);
  ASSERT_TRUE(reg.ok()) << reg.status().ToString();
  const std::string registry = shm::RegistryName(ns_.name());
  int code = -1;

  // The host (this process) is alive.
  std::string out = RunCli("cleanup --ns " + ns_.name(), &code);
  EXPECT_EQ(code, 0) << out;
  EXPECT_NE(out.find("kept " + registry + ": host pid " + std::to_string(self_) + " is running"),
            std::string::npos)
      << out;
  EXPECT_TRUE(SegmentExists(registry));

  // The host is dead (its lock released) but a live worker is registered: a new host adopts
  // the registry.
  const pid_t dead = testing::DeadPid();
  reg->header()->host_pid.store(static_cast<uint32_t>(dead));
  reg->header()->host_start_time.store(4242);
  reg = shm::HostRegistry();
  auto worker_view = shm::OpenRegistry(ns_.name());
  ASSERT_TRUE(worker_view.ok()) << worker_view.status().ToString();
  ASSERT_GE(shm::ClaimWorkerSlot(*worker_view, self_, self_start_, "live-worker"), 0);
  out = RunCli("cleanup --ns " + ns_.name(), &code);
  EXPECT_EQ(code, 0) << out;
  EXPECT_NE(out.find("kept " + registry + ": 1 live worker (pid " + std::to_string(self_)),
            std::string::npos)
      << out;
  EXPECT_TRUE(SegmentExists(registry));
}

TEST_F(CleanupCli, RingWithUnreadableHeaderGoesOnlyWhenPidFromNameIsDead) {
  const pid_t dead = testing::DeadPid();
  const std::string garbage_dead = shm::RingName(ns_.name(), dead, 0);
  const std::string garbage_live = shm::RingName(ns_.name(), self_, 1);
  ASSERT_TRUE(shm::Segment::Create(garbage_dead, 100).ok());  // too small, no magic
  ASSERT_TRUE(shm::Segment::Create(garbage_live, 100).ok());
  int code = -1;
  const std::string out = RunCli("cleanup --ns " + ns_.name(), &code);
  EXPECT_EQ(code, 0) << out;
  EXPECT_NE(out.find("removed " + garbage_dead + ": header unusable"), std::string::npos) << out;
  EXPECT_NE(out.find("kept " + garbage_live + ": header unusable"), std::string::npos) << out;
  EXPECT_FALSE(SegmentExists(garbage_dead));
  EXPECT_TRUE(SegmentExists(garbage_live));
}

TEST_F(CleanupCli, EmptyNamespaceAndConflictingFlags) {
  int code = -1;
  std::string out = RunCli("cleanup --ns " + ns_.name(), &code);
  EXPECT_EQ(code, 0) << out;
  EXPECT_NE(out.find("no pitlane segments"), std::string::npos) << out;
  out = RunCli("cleanup --all --ns " + ns_.name(), &code);
  EXPECT_EQ(code, 2) << out;
}

}  // namespace
}  // namespace pitlane
