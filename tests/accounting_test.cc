// The accounting vocabulary as every reader sees it: live readings never show more outcomes than
// events, settled ones satisfy the law exactly, and the host, `pitlane stat` and `pitlane
// cleanup` judge segments by one rule.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <thread>

#include "pitlane/accounting.h"
#include "pitlane/host.h"
#include "pitlane/shm.h"
#include "pitlane/shm_inspect.h"
#include "pitlane/worker.h"
#include "testing.h"

namespace pitlane {
namespace {

using testing::SegmentExists;

using std::chrono::milliseconds;
using std::chrono::seconds;

std::string Describe(const Tally& t) {
  return "emitted " + std::to_string(t.emitted) + " suppressed " + std::to_string(t.suppressed()) +
         " dropped " + std::to_string(t.dropped()) + " published " + std::to_string(t.published) +
         " delivered " + std::to_string(t.delivered) + " rejected " +
         std::to_string(t.rejected_total());
}

TEST(TallyTest, CountMapsEachEmitResultOntoExactlyOneOutcome) {
  Tally t;
  for (EmitResult r : {EmitResult::kOk, EmitResult::kDroppedFull, EmitResult::kDroppedTooLarge,
                       EmitResult::kDroppedNoRing, EmitResult::kSuppressedDisabled,
                       EmitResult::kSuppressedSampled, EmitResult::kSuppressedFiltered}) {
    t.Count(r);
  }
  EXPECT_EQ(t.emitted, 7u);
  EXPECT_EQ(t.published, 1u);
  EXPECT_EQ(t.dropped(), 3u);
  EXPECT_EQ(t.suppressed(), 3u);
  EXPECT_EQ(t.in_flight(), 0);
  t.delivered = 1;
  EXPECT_TRUE(t.Conserved());
  t.delivered = 2;  // more outcomes than events: no reading may ever show this
  EXPECT_FALSE(t.Consistent());
}

// A reader of Host::Rings() / Host::Workers() runs while a thread emits as fast as it can
// through a gate that suppresses half and a small ring that drops some: every row it sees must
// be explainable (events in flight, records unread, never the other way round), and once the
// worker is gone every row satisfies the law exactly.
// A gone worker whose numbers the law explains adds nothing unaccounted; one that lost events
// adds them whichever way they went; one whose segment was truncated cannot be checked and is
// counted as unverifiable instead.
TEST(LawVerdictTest, OneRuleJudgesSettledLiveBrokenAndLostReadings) {
  Tally settled;
  settled.emitted = 10;
  settled.suppressed_sampled = 2;
  settled.dropped_full = 1;
  settled.published = 7;
  settled.delivered = 6;
  settled.rejected[shm::kRejectUnknownEvent] = 1;
  Tally in_flight = settled;  // one event inside an emit, one record not read yet
  in_flight.emitted = 11;
  in_flight.delivered = 5;
  Tally broken = settled;  // more delivered than published
  broken.delivered = 9;
  struct Case {
    const char* what;
    Tally t;
    bool live, unverifiable;
    LawVerdict want;
    const char* mismatch;
  } cases[] = {
      {"settled, live", settled, true, false, LawVerdict::kHolds, ""},
      {"settled, gone", settled, false, false, LawVerdict::kHolds, ""},
      {"in flight, live", in_flight, true, false, LawVerdict::kInFlight,
       "emitted 11 != suppressed 2 + dropped 1 + published 7; "
       "published 7 != delivered 5 + rejected 1"},
      {"in flight, gone", in_flight, false, false, LawVerdict::kViolated,
       "emitted 11 != suppressed 2 + dropped 1 + published 7; "
       "published 7 != delivered 5 + rejected 1"},
      {"broken, live", broken, true, false, LawVerdict::kViolated,
       "published 7 != delivered 9 + rejected 1"},
      {"settled, segment lost", settled, false, true, LawVerdict::kUnverifiable, ""},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(JudgeLaw(c.t, c.live, c.unverifiable), c.want) << c.what;
    EXPECT_EQ(LawMismatch(c.t), c.mismatch) << c.what;
  }
  EXPECT_STREQ(LawVerdictName(LawVerdict::kHolds), "holds");
  EXPECT_STREQ(LawVerdictName(LawVerdict::kInFlight), "in flight");
  EXPECT_STREQ(LawVerdictName(LawVerdict::kViolated), "VIOLATED");
  EXPECT_STREQ(LawVerdictName(LawVerdict::kUnverifiable), "unverifiable");
}

TEST(DepartedWorkersTest, AddSumsGoneWorkersAndKeepsUnverifiableApartFromUnaccounted) {
  WorkerInfo settled;
  settled.emitted = 10;
  settled.published = 8;
  settled.dropped_full = 2;
  settled.delivered = 8;
  WorkerInfo lost = settled;
  lost.delivered = 5;      // 3 published records neither delivered nor rejected
  lost.dropped_full = 1;   // and 1 emitted event in no outcome
  WorkerInfo truncated = lost;
  truncated.segment_lost = true;
  EXPECT_TRUE(settled.Gone());
  EXPECT_EQ(settled.Unaccounted(), 0u);
  EXPECT_EQ(lost.Unaccounted(), 4u);
  EXPECT_EQ(truncated.Unaccounted(), 0u);

  DepartedWorkers d;
  d.Add(settled);
  d.Add(lost);
  d.Add(truncated);
  EXPECT_EQ(d.workers, 3u);
  EXPECT_EQ(d.emitted, 30u);
  EXPECT_EQ(d.delivered, 18u);
  EXPECT_EQ(d.unaccounted, 4u);
  EXPECT_EQ(d.unverifiable, 1u);

  WorkerInfo live = settled;
  live.alive = true;
  EXPECT_FALSE(live.Gone());
  WorkerInfo draining = settled;
  draining.rings = 1;
  EXPECT_FALSE(draining.Gone());
}

// The verdict the host's summary shows per worker and for the "(N departed)" row: a worker that
// is alive or still has a ring may have events in flight; gone ones must balance exactly.
TEST(LawVerdictTest, WorkerAndDepartedVerdictsFollowWhetherNumbersAreFinal) {
  WorkerInfo settled;
  settled.emitted = 10;
  settled.published = 10;
  settled.delivered = 10;
  WorkerInfo unread = settled;  // 2 records not read yet
  unread.delivered = 8;
  EXPECT_EQ(settled.Law(), LawVerdict::kHolds);
  EXPECT_EQ(unread.Law(), LawVerdict::kViolated);  // gone: nothing can still arrive
  WorkerInfo alive = unread;
  alive.alive = true;  // e.g. a worker between rings, or a gRPC worker whose records travel
  EXPECT_EQ(alive.Law(), LawVerdict::kInFlight);
  WorkerInfo draining = unread;
  draining.rings = 1;
  EXPECT_EQ(draining.Law(), LawVerdict::kInFlight);
  WorkerInfo truncated = unread;
  truncated.segment_lost = true;
  EXPECT_EQ(truncated.Law(), LawVerdict::kUnverifiable);

  DepartedWorkers d;
  EXPECT_EQ(d.Law(), LawVerdict::kHolds);
  d.Add(settled);
  EXPECT_EQ(d.Law(), LawVerdict::kHolds);
  d.Add(truncated);
  EXPECT_EQ(d.Law(), LawVerdict::kUnverifiable);  // one of them could not be checked
  d.Add(unread);
  EXPECT_EQ(d.Law(), LawVerdict::kViolated);  // a checked one left events unaccounted
}

TEST(HostStatsTest, RejectedTotalSumsEveryReason) {
  HostStats s;
  EXPECT_EQ(s.rejected_total(), 0u);
  s.rejected[shm::kRejectUnknownEvent] = 3;
  s.rejected[shm::kRejectBadMeasurementKey] = 4;
  EXPECT_EQ(s.rejected_total(), 7u);
}

TEST(AccountingTest, ConcurrentHostReaderNeverSeesMoreOutcomesThanEvents) {
  testing::ScopedNamespace ns;
  std::unique_ptr<Host> host = testing::StartHost(ns.name());
  ASSERT_NE(host, nullptr);
  host->RunInBackground();
  WorkerOptions wo;
  wo.ns = ns.name();
  wo.worker_id = "busy";
  wo.ring_bytes = 4096;  // fills quickly: dropped_full moves too
  Result<std::unique_ptr<Worker>> started = Worker::Start(wo);
  ASSERT_TRUE(started.ok()) << started.status().ToString();
  std::unique_ptr<Worker> w = std::move(started).value();
  ASSERT_TRUE(w->WaitAttached(seconds(5)));
  {
    // The first emit registers the ring; then sampling at 0.5 on everything.
    (void)w->Emit("python.call.stop", {{w->Measure("duration"), int64_t{1}}});
    Status s = host->UpdateSampling("busy", 0.5, {});
    for (int i = 0; i < 500 && s.code() == StatusCode::kNotFound; ++i) {
      std::this_thread::sleep_for(milliseconds(10));  // until the host has seen the worker
      s = host->UpdateSampling("busy", 0.5, {});
    }
    ASSERT_TRUE(s.ok()) << s.ToString();
    for (int i = 0; i < 100000 && w->Stats().suppressed_sampled == 0; ++i) {
      (void)w->Emit("python.call.stop", {{w->Measure("duration"), int64_t{1}}});
    }
    ASSERT_GT(w->Stats().suppressed_sampled, 0u) << "the sampling update never reached the worker";
  }

  std::atomic<bool> stop{false};
  std::thread emitter([&] {
    const EventHandle ev = w->Event("python.call.stop");
    const MeasurementKey d = w->Measure("duration");
    int64_t i = 0;
    while (!stop.load(std::memory_order_relaxed)) (void)w->Emit(ev, {{d, ++i}});
  });
  int readings = 0, rows = 0;
  const auto start = std::chrono::steady_clock::now();
  auto elapsed = [&] { return std::chrono::steady_clock::now() - start; };
  while ((readings < 3000 || elapsed() < seconds(1)) && elapsed() < seconds(5)) {
    for (const RingStats& r : host->Rings()) {
      ++rows;
      ASSERT_TRUE(r.Consistent()) << "reading " << readings << ": " << Describe(r);
    }
    for (const WorkerInfo& i : host->Workers()) {
      ASSERT_TRUE(i.Consistent()) << "reading " << readings << ": " << Describe(i);
    }
    ++readings;
  }
  stop = true;
  emitter.join();
  EXPECT_GT(rows, 0);
  const WorkerStats ws = w->Stats();
  EXPECT_GT(ws.suppressed_sampled, 0u);
  EXPECT_EQ(ws.in_flight(), 0) << Describe(ws);  // the worker alone has no host-side counts
  w.reset();
  ASSERT_TRUE(host->DrainAll(seconds(10)));
  for (const RingStats& r : host->Rings()) EXPECT_TRUE(r.Conserved()) << Describe(r);
  for (const WorkerInfo& i : host->Workers()) EXPECT_TRUE(i.Conserved()) << Describe(i);
}

// A ring-named segment whose header cannot be read: the pid in its name decides. Running → kept
// by both the host and cleanup's rule; gone → removed by both.
void MakeGarbageSegment(const std::string& name) {
  const int fd = ::shm_open(name.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
  ASSERT_GE(fd, 0) << name << ": " << std::strerror(errno);
  ASSERT_EQ(::ftruncate(fd, 8192), 0);
  const char junk[] = "not a ring header";
  ASSERT_EQ(::pwrite(fd, junk, sizeof(junk), 0), static_cast<ssize_t>(sizeof(junk)));
  ::close(fd);
}

TEST(AccountingTest, HostAndCleanupAgreeOnWhichSegmentsAreStale) {
  testing::ScopedNamespace ns;
  const std::string live = shm::RingName(ns.name(), ::getpid(), 7);
  const std::string dead = shm::RingName(ns.name(), testing::DeadPid(), 8);
  MakeGarbageSegment(live);
  MakeGarbageSegment(dead);
  shm::SegmentEntry live_entry, dead_entry;
  ASSERT_TRUE(shm::ParseSegmentName(live.substr(1), &live_entry));
  ASSERT_TRUE(shm::ParseSegmentName(dead.substr(1), &dead_entry));
  // The rule `pitlane cleanup` applies.
  EXPECT_FALSE(shm::RingStaleness(live_entry).stale) << shm::RingStaleness(live_entry).why;
  EXPECT_TRUE(shm::RingStaleness(dead_entry).stale) << shm::RingStaleness(dead_entry).why;
  // What the host does at start.
  {
    std::unique_ptr<Host> host = testing::StartHost(ns.name());
    ASSERT_NE(host, nullptr);
    EXPECT_TRUE(SegmentExists(live)) << "the host removed a segment whose creator runs";
    EXPECT_FALSE(SegmentExists(dead)) << "the host kept a segment whose creator is gone";
  }
  shm::Segment::Unlink(live);
}

TEST(WorkerStartTest, RegistryOfAnotherLayoutVersionIsReportedNotSilentlyDropMode) {
  testing::ScopedNamespace ns;
  const std::string name = shm::RegistryName(ns.name());
  const int fd = ::shm_open(name.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::ftruncate(fd, static_cast<off_t>(shm::kRegistryBytes)), 0);
  shm::RegistryHeader h{};
  h.magic = shm::kRegistryMagic;
  h.layout_version = shm::kLayoutVersion + 97;
  h.header_bytes = sizeof(shm::RegistryHeader);
  ASSERT_EQ(::pwrite(fd, &h, 16, 0), 16);
  ::close(fd);

  WorkerOptions wo;
  wo.ns = ns.name();
  wo.worker_id = "mismatched";
  wo.attach_wait = milliseconds(20);
  ::testing::internal::CaptureStderr();
  Result<std::unique_ptr<Worker>> w = Worker::Start(wo);
  const std::string err = ::testing::internal::GetCapturedStderr();
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  EXPECT_FALSE((*w)->attached());
  const Status why = (*w)->attach_status();
  EXPECT_EQ(why.code(), StatusCode::kFailedPrecondition) << why.ToString();
  const std::string versions = "layout version " + std::to_string(shm::kLayoutVersion + 97);
  EXPECT_NE(why.message().find(versions), std::string::npos) << why.ToString();
  EXPECT_NE(err.find(versions), std::string::npos) << "stderr: " << err;
  EXPECT_EQ((*w)->Emit("python.call.stop"), EmitResult::kDroppedNoRing);
}

TEST(WorkerStartTest, NoHostYetIsNotFoundAndQuiet) {
  testing::ScopedNamespace ns;
  WorkerOptions wo;
  wo.ns = ns.name();
  wo.worker_id = "early";
  wo.attach_wait = milliseconds(0);
  ::testing::internal::CaptureStderr();
  Result<std::unique_ptr<Worker>> w = Worker::Start(wo);
  const std::string err = ::testing::internal::GetCapturedStderr();
  ASSERT_TRUE(w.ok());
  EXPECT_EQ((*w)->attach_status().code(), StatusCode::kNotFound);
  EXPECT_EQ(err, "");
}

}  // namespace
}  // namespace pitlane
