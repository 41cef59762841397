// Worker processes and the host in different processes (doc/architecture.md, "Liveness").
//
// Children are fork()ed from the test process while it has no other thread: the host is polled
// from the test thread (PollOnce), never from a background thread, and the test process never
// creates a Worker of its own. A child creates its Worker, emits, and leaves with _exit(): it
// never returns into gtest. Every child is SIGKILLed and reaped when its test ends, whatever
// the outcome.
//
// Every emitted event is python.call.stop carrying a measurement `sequence_number` = the
// child's emit counter (it advances on drops too) and metadata command = the child's index, so
// the host side can check order, duplicates and attribution per worker id.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "pitlane/host.h"
#include "pitlane/registry.h"
#include "pitlane/shm.h"
#include "pitlane/worker.h"
#include "testing.h"

namespace pitlane {
namespace {

using testing::Children;
using testing::PollUntil;
using testing::RingsOf;
using testing::SegmentExists;

using std::chrono::milliseconds;
using std::chrono::seconds;
using Clock = std::chrono::steady_clock;

constexpr char kStopEvent[] = "snakepit.python.call.stop";
constexpr char kTerminatedEvent[] = "snakepit.pool.worker.terminated";

// The liveness spec is 1 s (a 100 ms pidfd check); tests allow 3 s so a loaded machine does not
// make them flaky.
constexpr auto kLivenessBound = seconds(3);

std::string WorkerIdOf(int index) { return "mp-" + std::to_string(index); }

struct EmitterOptions {
  std::string ns;
  int index = 0;
  int64_t count = -1;  // < 0: forever
  bool graceful = false;  // destroy the Worker before exiting (else _exit with it attached)
  uint64_t ring_bytes = 0;
  int ready_fd = -1;      // if >= 0: after `count` emits, write one byte here and pause()
};

// Child body: emits python.call.stop {sequence_number: i} {command: "<index>"}.
int RunEmitter(const EmitterOptions& o) {
  WorkerOptions wo;
  wo.ns = o.ns;
  wo.worker_id = WorkerIdOf(o.index);
  wo.ring_bytes = o.ring_bytes;
  wo.attach_wait = seconds(5);
  Result<std::unique_ptr<Worker>> started = Worker::Start(wo);
  if (!started.ok()) return 2;
  std::unique_ptr<Worker> w = std::move(started).value();
  if (!w->attached()) return 3;
  const EventHandle ev = w->Event("python.call.stop");
  const MeasurementKey seq = w->Measure("sequence_number");
  const MetadataKey command = w->Meta("command");
  const std::string cmd = std::to_string(o.index);
  for (int64_t i = 0; o.count < 0 || i < o.count; ++i) {
    (void)w->Emit(ev, {{seq, i}}, {{command, cmd}});
  }
  if (o.ready_fd >= 0) {
    const char b = 1;
    if (::write(o.ready_fd, &b, 1) != 1) return 4;
    for (;;) ::pause();
  }
  if (!o.graceful) ::_exit(0);  // leave with the Worker still attached, rings unretired
  w.reset();
  return 0;
}

struct Terminated {
  std::string worker_id, reason, planned, meta_worker_id;
};

// What the host's handlers saw. Handlers run on the poll thread, which is the test thread here.
struct Collector {
  std::map<std::string, std::vector<int64_t>> seqs;  // per worker id, in delivery order
  uint64_t missing_sequence = 0;
  uint64_t wrong_command = 0;
  std::vector<Terminated> terminated;

  void AttachTo(Host& host) {
    ASSERT_TRUE(host.Attach("seq", kStopEvent, [this](const EventView& v) {
                      const std::string id(v.worker_id);
                      const Value* s = v.measurement("sequence_number");
                      if (s == nullptr || s->kind != Value::Kind::kInt) {
                        ++missing_sequence;
                        return;
                      }
                      seqs[id].push_back(s->i);
                      const auto cmd = v.meta("command");
                      if (!cmd || *cmd != id.substr(id.rfind('-') + 1)) ++wrong_command;
                    }).ok());
    ASSERT_TRUE(host.Attach("term", kTerminatedEvent, [this](const EventView& v) {
                      Terminated t;
                      t.worker_id = std::string(v.worker_id);
                      t.reason = std::string(v.meta("reason").value_or("<none>"));
                      t.planned = std::string(v.meta("planned").value_or("<none>"));
                      t.meta_worker_id = std::string(v.meta("worker_id").value_or("<none>"));
                      terminated.push_back(std::move(t));
                    }).ok());
  }

  size_t Delivered(const std::string& id) const {
    auto it = seqs.find(id);
    return it == seqs.end() ? 0 : it->second.size();
  }

  std::vector<Terminated> TerminatedOf(const std::string& id) const {
    std::vector<Terminated> out;
    for (const Terminated& t : terminated) {
      if (t.worker_id == id) out.push_back(t);
    }
    return out;
  }
};

// Every delivered sequence number of `id` is in [0, limit) and strictly increasing (in order,
// no duplicates).
void ExpectStrictlyIncreasing(const Collector& c, const std::string& id, int64_t limit) {
  auto it = c.seqs.find(id);
  ASSERT_NE(it, c.seqs.end()) << id << " delivered nothing";
  const std::vector<int64_t>& s = it->second;
  for (size_t i = 0; i < s.size(); ++i) {
    ASSERT_GE(s[i], 0) << id << " at " << i;
    if (limit >= 0) {
      ASSERT_LT(s[i], limit) << id << " at " << i;
    }
    if (i > 0) {
      ASSERT_GT(s[i], s[i - 1]) << id << ": sequence_number out of order or duplicated at " << i;
    }
  }
}

bool AliveInHost(const Host& host, const std::string& id) {
  for (const WorkerInfo& w : host.Workers()) {
    if (w.id == id && w.alive) return true;
  }
  return false;
}

std::unique_ptr<Host> StartHost(const testing::ScopedNamespace& ns) {
  HostOptions o;
  o.ns = ns.name();
  Result<std::unique_ptr<Host>> h = Host::Start(o);
  EXPECT_TRUE(h.ok()) << h.status().ToString();
  return h.ok() ? std::move(h).value() : nullptr;
}

// A killed worker's ring: everything it published was delivered, nothing torn, nothing
// rejected; the segment is gone. An emit interrupted by SIGKILL counted as emitted but reached
// no outcome is accounted as dropped_in_flight (at most one), so the law holds exactly.
void ExpectKilledRingAccounted(const Host& host, const Collector& c, const std::string& id) {
  const std::vector<RingStats> rings = RingsOf(host, id);
  ASSERT_EQ(rings.size(), 1u) << id;
  const RingStats& r = rings[0];
  EXPECT_TRUE(r.reclaimed) << r.segment;
  EXPECT_FALSE(r.quarantined) << r.segment << ": " << r.quarantine_reason;
  EXPECT_EQ(r.rejected_total(), 0u) << r.segment;
  EXPECT_EQ(r.published, r.delivered + r.rejected_total()) << r.segment;
  EXPECT_EQ(r.delivered, c.Delivered(id)) << r.segment;
  EXPECT_TRUE(r.Conserved()) << r.segment;
  EXPECT_LE(r.dropped_in_flight, 1u) << r.segment;
  EXPECT_FALSE(SegmentExists(r.segment)) << r.segment << " still in /dev/shm";
}

TEST(MultiProcessTest, WorkerProcessesEmitWhileHostReads) {
  testing::ScopedNamespace ns;
  Collector c;  // outlives the host, whose handlers point into it
  std::unique_ptr<Host> host = StartHost(ns);
  ASSERT_NE(host, nullptr);
  c.AttachTo(*host);

  constexpr int kChildren = 3;
  constexpr int64_t kEvents = 50'000;
  Children children;
  std::vector<pid_t> pids;
  for (int i = 0; i < kChildren; ++i) {
    // Each child leaves without destroying its Worker: the host drains what is left in the ring
    // after it notices the process is gone.
    pids.push_back(children.Spawn([&ns, i] {
      EmitterOptions o;
      o.ns = ns.name();
      o.index = i;
      o.count = kEvents;
      return RunEmitter(o);
    }));
  }
  // The host reads while the children emit.
  std::vector<bool> exited(kChildren, false);
  ASSERT_TRUE(PollUntil(
      *host,
      [&] {
        bool all = true;
        for (int i = 0; i < kChildren; ++i) {
          int status = 0;
          if (!exited[i] && children.TryReap(pids[i], &status)) {
            exited[i] = true;
            EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "child " << i << " status " << status;
          }
          all &= exited[i];
        }
        return all;
      },
      seconds(60)));
  ASSERT_TRUE(host->DrainAll(seconds(10)));

  EXPECT_EQ(c.missing_sequence, 0u);
  EXPECT_EQ(c.wrong_command, 0u);
  EXPECT_EQ(host->Stats().workers_terminated, static_cast<uint64_t>(kChildren));
  for (int i = 0; i < kChildren; ++i) {
    const std::string id = WorkerIdOf(i);
    SCOPED_TRACE(id);
    ExpectStrictlyIncreasing(c, id, kEvents);
    const std::vector<RingStats> rings = RingsOf(*host, id);
    ASSERT_EQ(rings.size(), 1u);
    const RingStats& r = rings[0];
    EXPECT_TRUE(r.reclaimed);
    EXPECT_TRUE(r.Conserved()) << "emitted " << r.emitted << " published " << r.published
                               << " dropped " << r.dropped() << " delivered " << r.delivered
                               << " rejected " << r.rejected_total();
    EXPECT_EQ(r.emitted, static_cast<uint64_t>(kEvents));
    EXPECT_EQ(r.suppressed(), 0u);
    EXPECT_EQ(r.rejected_total(), 0u);
    EXPECT_EQ(r.dropped_too_large, 0u);
    EXPECT_EQ(r.delivered, c.Delivered(id));
    EXPECT_EQ(c.Delivered(id) + r.dropped_full, static_cast<uint64_t>(kEvents));
    const std::vector<Terminated> t = c.TerminatedOf(id);
    ASSERT_EQ(t.size(), 1u);
    EXPECT_EQ(t[0].reason, "process_exited");
    EXPECT_FALSE(SegmentExists(r.segment));
  }
}

TEST(MultiProcessTest, WorkerKilledMidBurstLosesNothingPublished) {
  testing::ScopedNamespace ns;
  Collector c;  // outlives the host, whose handlers point into it
  std::unique_ptr<Host> host = StartHost(ns);
  ASSERT_NE(host, nullptr);
  c.AttachTo(*host);
  const std::string id = WorkerIdOf(0);

  Children children;
  const pid_t pid = children.Spawn([&ns] {
    EmitterOptions o;
    o.ns = ns.name();
    o.index = 0;
    return RunEmitter(o);  // forever
  });
  ASSERT_TRUE(PollUntil(*host, [&] { return c.Delivered(id) >= 20'000; }, seconds(60)))
      << "delivered only " << c.Delivered(id);
  EXPECT_TRUE(AliveInHost(*host, id));

  // Kill it mid-burst, and leave it unreaped (a zombie still has /proc/<pid>/stat with its
  // start time): the host must notice through its pidfd.
  children.Kill(pid);
  const auto killed_at = Clock::now();
  ASSERT_TRUE(PollUntil(*host, [&] { return host->Stats().workers_terminated == 1; }, seconds(10)))
      << "the host never noticed the killed worker";
  const auto noticed_after = Clock::now() - killed_at;
  EXPECT_LE(noticed_after, kLivenessBound)
      << std::chrono::duration_cast<milliseconds>(noticed_after).count() << " ms";
  const int status = children.Reap(pid);
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << status;

  EXPECT_FALSE(AliveInHost(*host, id));
  EXPECT_EQ(c.missing_sequence, 0u);
  EXPECT_EQ(c.wrong_command, 0u);
  ExpectStrictlyIncreasing(c, id, -1);
  ExpectKilledRingAccounted(*host, c, id);
  const std::vector<Terminated> t = c.TerminatedOf(id);
  ASSERT_EQ(t.size(), 1u);
  EXPECT_EQ(t[0].reason, "process_exited");
  EXPECT_EQ(t[0].planned, "false");
  EXPECT_EQ(t[0].meta_worker_id, id);

  // Nothing more arrives for it, and it is not terminated twice.
  const size_t delivered = c.Delivered(id);
  for (int i = 0; i < 50; ++i) host->PollOnce();
  ASSERT_TRUE(host->DrainAll(seconds(5)));
  EXPECT_EQ(c.Delivered(id), delivered);
  EXPECT_EQ(c.TerminatedOf(id).size(), 1u);
  EXPECT_EQ(host->Stats().workers_terminated, 1u);
}

TEST(MultiProcessTest, GracefulExitDeliversEverythingAndEmitsShutdown) {
  testing::ScopedNamespace ns;
  Collector c;  // outlives the host, whose handlers point into it
  std::unique_ptr<Host> host = StartHost(ns);
  ASSERT_NE(host, nullptr);
  c.AttachTo(*host);
  const std::string id = WorkerIdOf(0);
  constexpr int64_t kEvents = 10'000;

  Children children;
  const pid_t pid = children.Spawn([&ns] {
    EmitterOptions o;
    o.ns = ns.name();
    o.index = 0;
    o.count = kEvents;
    o.graceful = true;
    o.ring_bytes = 4 << 20;  // room for all 10,000 even if the host never ran meanwhile
    return RunEmitter(o);
  });
  int status = -1;
  ASSERT_TRUE(PollUntil(*host, [&] { return children.TryReap(pid, &status); }, seconds(30)));
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  ASSERT_TRUE(host->DrainAll(seconds(10)));

  ASSERT_EQ(c.Delivered(id), static_cast<size_t>(kEvents));
  const std::vector<int64_t>& s = c.seqs[id];
  for (int64_t i = 0; i < kEvents; ++i) ASSERT_EQ(s[i], i);
  const std::vector<RingStats> rings = RingsOf(*host, id);
  ASSERT_EQ(rings.size(), 1u);
  EXPECT_TRUE(rings[0].reclaimed);
  EXPECT_TRUE(rings[0].Conserved());
  EXPECT_EQ(rings[0].emitted, static_cast<uint64_t>(kEvents));
  EXPECT_EQ(rings[0].delivered, static_cast<uint64_t>(kEvents));
  EXPECT_FALSE(SegmentExists(rings[0].segment));
  const std::vector<Terminated> t = c.TerminatedOf(id);
  ASSERT_EQ(t.size(), 1u);
  EXPECT_EQ(t[0].reason, "shutdown");
  EXPECT_EQ(t[0].planned, "true");
  EXPECT_EQ(host->Stats().workers_terminated, 1u);
}

TEST(MultiProcessTest, DeadWorkerNoticedWithinOneSecond) {
  testing::ScopedNamespace ns;
  Collector c;  // outlives the host, whose handlers point into it
  std::unique_ptr<Host> host = StartHost(ns);
  ASSERT_NE(host, nullptr);
  c.AttachTo(*host);
  const std::string id = WorkerIdOf(0);

  int ready[2];
  ASSERT_EQ(::pipe2(ready, O_CLOEXEC), 0);
  Children children;
  const pid_t pid = children.Spawn([&ns, &ready] {
    ::close(ready[0]);
    EmitterOptions o;
    o.ns = ns.name();
    o.index = 0;
    o.count = 10;
    o.ready_fd = ready[1];
    return RunEmitter(o);  // emits 10, then idles
  });
  ::close(ready[1]);
  char b = 0;
  ASSERT_EQ(::read(ready[0], &b, 1), 1);
  ::close(ready[0]);
  ASSERT_TRUE(PollUntil(*host, [&] { return c.Delivered(id) == 10; }, seconds(10)));
  // An idle worker is alive: idle is not dead.
  for (int i = 0; i < 30; ++i) {
    host->PollOnce();
    std::this_thread::sleep_for(milliseconds(10));
  }
  EXPECT_TRUE(AliveInHost(*host, id));
  EXPECT_EQ(host->Stats().workers_terminated, 0u);

  children.Kill(pid);
  const int status = children.Reap(pid);
  EXPECT_TRUE(WIFSIGNALED(status)) << status;
  const auto killed_at = Clock::now();
  ASSERT_TRUE(PollUntil(*host, [&] { return c.TerminatedOf(id).size() == 1; }, seconds(10)));
  const auto noticed_after = Clock::now() - killed_at;
  EXPECT_LE(noticed_after, kLivenessBound)
      << std::chrono::duration_cast<milliseconds>(noticed_after).count() << " ms";
  EXPECT_EQ(c.TerminatedOf(id)[0].reason, "process_exited");
  EXPECT_FALSE(AliveInHost(*host, id));
  ExpectKilledRingAccounted(*host, c, id);
}

TEST(MultiProcessTest, ProcessAliveChecksStartTimeAgainstPidReuse) {
  const pid_t self = ::getpid();
  const uint64_t start = shm::ProcessStartTime(self);
  ASSERT_NE(start, 0u);
  EXPECT_TRUE(shm::ProcessAlive(self, start));
  // Same pid, another start time: a different process that happens to have the pid.
  EXPECT_FALSE(shm::ProcessAlive(self, start + 1));
  EXPECT_FALSE(shm::ProcessAlive(self, start - 1));
  EXPECT_FALSE(shm::ProcessAlive(self, 0));
}

TEST(MultiProcessTest, WorkerSlotWithReusedPidCountsAsDead) {
  testing::ScopedNamespace ns;
  Collector c;  // outlives the host, whose handlers point into it
  std::unique_ptr<Host> host = StartHost(ns);
  ASSERT_NE(host, nullptr);
  c.AttachTo(*host);

  // Two slots stamped with this (live) process's pid: one with its real start time, one with
  // another start time — the slot of a dead process whose pid was reused by us.
  Result<shm::Segment> reg = shm::OpenRegistry(ns.name());
  ASSERT_TRUE(reg.ok()) << reg.status().ToString();
  const uint64_t start = shm::ProcessStartTime(::getpid());
  ASSERT_GE(shm::ClaimWorkerSlot(*reg, ::getpid(), start, "genuine"), 0);
  ASSERT_GE(shm::ClaimWorkerSlot(*reg, ::getpid(), start + 7, "impostor"), 0);

  const auto claimed_at = Clock::now();
  ASSERT_TRUE(PollUntil(*host, [&] { return c.TerminatedOf("impostor").size() == 1; }, seconds(10)));
  EXPECT_LE(Clock::now() - claimed_at, kLivenessBound);
  EXPECT_EQ(c.TerminatedOf("impostor")[0].reason, "process_exited");
  // The genuine one stays alive across several liveness checks.
  for (int i = 0; i < 30; ++i) {
    host->PollOnce();
    std::this_thread::sleep_for(milliseconds(10));
  }
  EXPECT_TRUE(AliveInHost(*host, "genuine"));
  EXPECT_FALSE(AliveInHost(*host, "impostor"));
  EXPECT_TRUE(c.TerminatedOf("genuine").empty());
  EXPECT_EQ(host->Stats().workers_terminated, 1u);
}

TEST(MultiProcessTest, NofMWorkersKilled) {
  testing::ScopedNamespace ns;
  Collector c;  // outlives the host, whose handlers point into it
  std::unique_ptr<Host> host = StartHost(ns);
  ASSERT_NE(host, nullptr);
  c.AttachTo(*host);

  constexpr int kChildren = 4;
  Children children;
  std::vector<pid_t> pids;
  for (int i = 0; i < kChildren; ++i) {
    pids.push_back(children.Spawn([&ns, i] {
      EmitterOptions o;
      o.ns = ns.name();
      o.index = i;
      return RunEmitter(o);  // forever
    }));
  }
  auto all_delivered_at_least = [&](const std::vector<int>& which, size_t n) {
    for (int i : which) {
      if (c.Delivered(WorkerIdOf(i)) < n) return false;
    }
    return true;
  };
  ASSERT_TRUE(PollUntil(*host, [&] { return all_delivered_at_least({0, 1, 2, 3}, 2'000); },
                        seconds(60)));

  // Kill 0 and 2.
  children.Kill(pids[0]);
  children.Kill(pids[2]);
  const auto killed_at = Clock::now();
  ASSERT_TRUE(PollUntil(*host, [&] { return host->Stats().workers_terminated == 2; }, seconds(10)));
  EXPECT_LE(Clock::now() - killed_at, kLivenessBound);
  children.Reap(pids[0]);
  children.Reap(pids[2]);
  ASSERT_EQ(c.TerminatedOf(WorkerIdOf(0)).size(), 1u);
  ASSERT_EQ(c.TerminatedOf(WorkerIdOf(2)).size(), 1u);
  EXPECT_TRUE(c.TerminatedOf(WorkerIdOf(1)).empty());
  EXPECT_TRUE(c.TerminatedOf(WorkerIdOf(3)).empty());
  ExpectKilledRingAccounted(*host, c, WorkerIdOf(0));
  ExpectKilledRingAccounted(*host, c, WorkerIdOf(2));

  // The other two keep delivering.
  const size_t before1 = c.Delivered(WorkerIdOf(1));
  const size_t before3 = c.Delivered(WorkerIdOf(3));
  ASSERT_TRUE(PollUntil(*host,
                        [&] {
                          return c.Delivered(WorkerIdOf(1)) >= before1 + 2'000 &&
                                 c.Delivered(WorkerIdOf(3)) >= before3 + 2'000;
                        },
                        seconds(60)));
  EXPECT_TRUE(AliveInHost(*host, WorkerIdOf(1)));
  EXPECT_TRUE(AliveInHost(*host, WorkerIdOf(3)));
  EXPECT_FALSE(AliveInHost(*host, WorkerIdOf(0)));
  EXPECT_FALSE(AliveInHost(*host, WorkerIdOf(2)));
  EXPECT_EQ(host->Stats().workers_terminated, 2u);
  EXPECT_EQ(c.terminated.size(), 2u);

  // Then the rest go too; every worker ends accounted for, each terminated exactly once.
  children.Kill(pids[1]);
  children.Kill(pids[3]);
  ASSERT_TRUE(PollUntil(*host, [&] { return host->Stats().workers_terminated == 4; }, seconds(10)));
  ASSERT_TRUE(host->DrainAll(seconds(5)));
  EXPECT_EQ(c.terminated.size(), 4u);
  EXPECT_EQ(c.missing_sequence, 0u);
  EXPECT_EQ(c.wrong_command, 0u);
  for (int i = 0; i < kChildren; ++i) {
    SCOPED_TRACE(WorkerIdOf(i));
    EXPECT_EQ(c.TerminatedOf(WorkerIdOf(i)).size(), 1u);
    ExpectStrictlyIncreasing(c, WorkerIdOf(i), -1);
    ExpectKilledRingAccounted(*host, c, WorkerIdOf(i));
  }
}

}  // namespace
}  // namespace pitlane
