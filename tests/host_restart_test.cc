// A host that stops (or dies) while workers keep writing, and a new host that adopts the
// namespace: the rings are re-attached, counting resumes where the previous host stopped and
// the conservation law holds over the whole run.
#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <string_view>
#include <vector>

#include "pitlane/host.h"
#include "pitlane/worker.h"
#include "testing.h"

namespace pitlane {
namespace {

using namespace std::chrono_literals;

using testing::StartHost;

TEST(HostRestartTest, NewHostAdoptsRingsAndKeepsThePreviousHostsCounts) {
  testing::ScopedNamespace ns;
  auto host = StartHost(ns.name());
  ASSERT_NE(host, nullptr);
  WorkerOptions wo;
  wo.ns = ns.name();
  wo.worker_id = "survivor";
  wo.ring_bytes = 1 << 20;
  auto worker = std::move(Worker::Start(wo)).value();
  ASSERT_TRUE(worker->attached());
  const EventHandle ev = worker->Event("python.call.stop");
  for (int i = 0; i < 1000; ++i) ASSERT_EQ(worker->Emit(ev, {{"duration", i}}), EmitResult::kOk);
  (void)worker->Emit("inference.start");  // one rejection, so rejected counts survive too
  for (int i = 0; i < 20; ++i) host->PollOnce();
  ASSERT_EQ(host->Stats().delivered, 1000u);
  host.reset();  // the worker is alive: the registry stays for the next host

  // Written while no host runs: published, not yet delivered.
  for (int i = 0; i < 500; ++i) ASSERT_EQ(worker->Emit(ev, {{"duration", i}}), EmitResult::kOk);

  auto next = StartHost(ns.name());
  ASSERT_NE(next, nullptr);
  for (int i = 0; i < 20; ++i) next->PollOnce();
  EXPECT_EQ(next->Stats().delivered, 500u);  // only what it delivered itself
  const std::vector<RingStats> rings = next->Rings();
  ASSERT_EQ(rings.size(), 1u);
  EXPECT_EQ(rings[0].delivered, 1500u);
  EXPECT_EQ(rings[0].rejected[shm::kRejectUnknownEvent], 1u);
  EXPECT_EQ(rings[0].rejected[shm::kRejectLost], 0u);
  EXPECT_EQ(rings[0].published, 1501u);
  EXPECT_TRUE(rings[0].Conserved());
  worker.reset();
  ASSERT_TRUE(next->DrainAll(5s));
}

TEST(HostRestartTest, SecondHostForALiveNamespaceIsRefused) {
  testing::ScopedNamespace ns;
  auto host = StartHost(ns.name());
  ASSERT_NE(host, nullptr);
  HostOptions o;
  o.ns = ns.name();
  Result<std::unique_ptr<Host>> second = Host::Start(o);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), StatusCode::kAlreadyExists);
  EXPECT_NE(second.status().message().find("already has a running host"), std::string::npos)
      << second.status().message();
}

// Control applied to a worker survives a restart of its host: the new host finds the state in
// the worker's slot, written for that very worker, and keeps it instead of resetting the worker
// to the defaults. A worker that takes the slot after it is freed starts from the defaults.
TEST(HostRestartTest, RestartedHostKeepsTheControlStateItsPredecessorApplied) {
  testing::ScopedNamespace ns;
  auto host = StartHost(ns.name());
  ASSERT_NE(host, nullptr);
  auto worker = testing::StartWorker(ns.name(), "controlled");
  ASSERT_NE(worker, nullptr);
  for (int i = 0; i < 5; ++i) host->PollOnce();
  ControlState applied;
  applied.enabled = true;
  applied.sampling_rate = 0.25;
  applied.sampling_patterns = {"python.memory.*"};
  applied.deny = {"python.cpu.sampled"};
  ASSERT_TRUE(host->SetControl("controlled", applied).ok());
  EXPECT_EQ(worker->Emit("python.cpu.sampled", {{"cpu_percent", 1.0}}),
            EmitResult::kSuppressedFiltered);
  host.reset();

  std::vector<std::string> log;
  auto next = StartHost(ns.name(), [&](std::string_view line) { log.emplace_back(line); });
  ASSERT_NE(next, nullptr);
  for (int i = 0; i < 5; ++i) next->PollOnce();
  Result<ControlState> kept = next->Control("controlled");
  ASSERT_TRUE(kept.ok()) << kept.status().ToString();
  EXPECT_EQ(kept.value(), applied);
  EXPECT_EQ(worker->Emit("python.cpu.sampled", {{"cpu_percent", 1.0}}),
            EmitResult::kSuppressedFiltered);
  bool said = false;
  for (const std::string& line : log) said |= line.find("\"controlled\" keeps") != std::string::npos;
  EXPECT_TRUE(said) << "the host did not say it kept the worker's state";

  // The worker leaves; a worker of another id in the freed slot gets the defaults.
  worker.reset();
  ASSERT_TRUE(next->DrainAll(5s));
  auto newcomer = testing::StartWorker(ns.name(), "newcomer");
  ASSERT_NE(newcomer, nullptr);
  for (int i = 0; i < 5; ++i) next->PollOnce();
  Result<ControlState> fresh = next->Control("newcomer");
  ASSERT_TRUE(fresh.ok()) << fresh.status().ToString();
  EXPECT_EQ(fresh.value(), ControlState());
  EXPECT_EQ(newcomer->Emit("python.cpu.sampled", {{"cpu_percent", 1.0}}), EmitResult::kOk);
  newcomer.reset();
  ASSERT_TRUE(next->DrainAll(5s));
}

}  // namespace
}  // namespace pitlane
