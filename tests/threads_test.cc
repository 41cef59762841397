// A multi-threaded worker (worker.h "Threads and rings", "fork()"; issue 2 "Tests:
// multi-threaded worker, thread exit, fork"): a ring per emitting thread, rings retired and
// reclaimed when their thread exits, the ring cap, drop mode until a host appears, fork()ed
// children on rings of their own, and a quarantined ring replaced by a fresh one.
//
// Host and Worker live in this process. Tests that fork() poll the host from the test thread
// (no host thread exists at fork time); the others run the host loop in the background.
// Events are python.call.stop {sequence_number: i} {command: <who>} so order can be checked per
// emitting thread (or process).
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <barrier>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "pitlane/host.h"
#include "pitlane/shm.h"
#include "pitlane/worker.h"
#include "testing.h"

namespace pitlane {
namespace {

using testing::PollUntil;
using testing::RingsOf;
using testing::SegmentExists;

using std::chrono::milliseconds;
using std::chrono::seconds;
using Clock = std::chrono::steady_clock;

constexpr char kStopEvent[] = "snakepit.python.call.stop";
constexpr char kTerminatedEvent[] = "snakepit.pool.worker.terminated";

// Delivered events, keyed by "<worker id>/<command>". Thread-safe: handlers may run on the
// host's background thread.
class Collector {
 public:
  void AttachTo(Host& host) {
    ASSERT_TRUE(host.Attach("seq", kStopEvent, [this](const EventView& v) {
                      const Value* s = v.measurement("sequence_number");
                      const auto cmd = v.meta("command");
                      std::lock_guard<std::mutex> lock(mu_);
                      if (s == nullptr || s->kind != Value::Kind::kInt || !cmd) {
                        ++malformed_;
                        return;
                      }
                      seqs_[std::string(v.worker_id) + "/" + std::string(*cmd)].push_back(s->i);
                    }).ok());
    ASSERT_TRUE(host.Attach("term", kTerminatedEvent, [this](const EventView& v) {
                      std::lock_guard<std::mutex> lock(mu_);
                      terminated_.emplace_back(std::string(v.worker_id),
                                               std::string(v.meta("reason").value_or("")));
                    }).ok());
  }

  std::vector<int64_t> Seqs(const std::string& worker, const std::string& cmd) const {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = seqs_.find(worker + "/" + cmd);
    return it == seqs_.end() ? std::vector<int64_t>{} : it->second;
  }
  size_t Delivered(const std::string& worker, const std::string& cmd) const {
    return Seqs(worker, cmd).size();
  }
  uint64_t malformed() const {
    std::lock_guard<std::mutex> lock(mu_);
    return malformed_;
  }
  std::vector<std::string> TerminatedReasons(const std::string& worker) const {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<std::string> out;
    for (const auto& [id, reason] : terminated_) {
      if (id == worker) out.push_back(reason);
    }
    return out;
  }

 private:
  mutable std::mutex mu_;
  std::map<std::string, std::vector<int64_t>> seqs_;
  std::vector<std::pair<std::string, std::string>> terminated_;
  uint64_t malformed_ = 0;
};

// Strictly increasing (in order, no duplicates).
void ExpectInOrder(const std::vector<int64_t>& s, const std::string& what) {
  for (size_t i = 1; i < s.size(); ++i) {
    ASSERT_GT(s[i], s[i - 1]) << what << ": out of order or duplicated at " << i;
  }
}

// Exactly 0, 1, ..., n-1.
void ExpectExactly(const std::vector<int64_t>& s, int64_t first, int64_t n,
                   const std::string& what) {
  ASSERT_EQ(s.size(), static_cast<size_t>(n)) << what;
  for (int64_t i = 0; i < n; ++i) ASSERT_EQ(s[i], first + i) << what << " at " << i;
}

std::string Describe(const RingStats& r) {
  return r.segment + ": emitted " + std::to_string(r.emitted) + " suppressed " +
         std::to_string(r.suppressed()) + " dropped " + std::to_string(r.dropped()) +
         " published " + std::to_string(r.published) + " delivered " +
         std::to_string(r.delivered) + " rejected " + std::to_string(r.rejected_total());
}

bool WorkerConserved(const WorkerStats& s) {
  return s.emitted == s.suppressed() + s.dropped() + s.published;
}

std::unique_ptr<Host> StartHost(const testing::ScopedNamespace& ns,
                                std::function<void(std::string_view)> log = {}) {
  HostOptions o;
  o.ns = ns.name();
  o.log = std::move(log);
  Result<std::unique_ptr<Host>> h = Host::Start(o);
  EXPECT_TRUE(h.ok()) << h.status().ToString();
  return h.ok() ? std::move(h).value() : nullptr;
}

std::unique_ptr<Worker> StartWorker(const testing::ScopedNamespace& ns, const std::string& id,
                                    WorkerOptions o = {}) {
  o.ns = ns.name();
  o.worker_id = id;
  Result<std::unique_ptr<Worker>> w = Worker::Start(o);
  EXPECT_TRUE(w.ok()) << w.status().ToString();
  return w.ok() ? std::move(w).value() : nullptr;
}

// Emits python.call.stop {sequence_number: seq} {command: cmd}.
class Emitter {
 public:
  explicit Emitter(Worker& w)
      : w_(w),
        ev_(w.Event("python.call.stop")),
        seq_(w.Measure("sequence_number")),
        cmd_(w.Meta("command")) {}
  EmitResult Emit(int64_t seq, std::string_view cmd) {
    return w_.Emit(ev_, {{seq_, seq}}, {{cmd_, cmd}});
  }

 private:
  Worker& w_;
  EventHandle ev_;
  MeasurementKey seq_;
  MetadataKey cmd_;
};

TEST(ThreadsTest, EachThreadGetsItsOwnRing) {
  testing::ScopedNamespace ns;
  Collector c;  // outlives the host, whose handlers point into it
  std::unique_ptr<Host> host = StartHost(ns);
  ASSERT_NE(host, nullptr);
  c.AttachTo(*host);
  host->RunInBackground();
  std::unique_ptr<Worker> w = StartWorker(ns, "threads");
  ASSERT_NE(w, nullptr);
  ASSERT_TRUE(w->attached());

  constexpr int kThreads = 4;
  constexpr int64_t kEvents = 20'000;
  std::barrier all_have_rings(kThreads + 1), all_done(kThreads + 1), may_exit(kThreads + 1);
  std::vector<uint64_t> not_ok(kThreads, 0);
  std::vector<uint64_t> other_results(kThreads, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      Emitter e(*w);
      const std::string cmd = "t" + std::to_string(t);
      for (int64_t i = 0; i < kEvents; ++i) {
        const EmitResult r = e.Emit(i, cmd);
        if (r != EmitResult::kOk) {
          ++not_ok[t];
          if (r != EmitResult::kDroppedFull) ++other_results[t];
        }
        if (i == 0) all_have_rings.arrive_and_wait();
      }
      all_done.arrive_and_wait();
      may_exit.arrive_and_wait();
    });
  }
  all_have_rings.arrive_and_wait();
  const WorkerStats running = w->Stats();
  EXPECT_EQ(running.live_rings, static_cast<uint32_t>(kThreads));
  all_done.arrive_and_wait();
  const WorkerStats done = w->Stats();
  EXPECT_EQ(done.live_rings, static_cast<uint32_t>(kThreads));
  may_exit.arrive_and_wait();
  for (std::thread& th : threads) th.join();
  EXPECT_EQ(w->Stats().live_rings, 0u);  // every thread's ring was retired at its exit

  ASSERT_TRUE(host->DrainAll(seconds(10)));
  EXPECT_EQ(c.malformed(), 0u);
  uint64_t thread_drops = 0;
  for (int t = 0; t < kThreads; ++t) {
    const std::string cmd = "t" + std::to_string(t);
    SCOPED_TRACE(cmd);
    const std::vector<int64_t> s = c.Seqs("threads", cmd);
    ExpectInOrder(s, cmd);
    EXPECT_EQ(other_results[t], 0u);
    EXPECT_EQ(s.size() + not_ok[t], static_cast<size_t>(kEvents));
    if (!s.empty()) {
      EXPECT_GE(s.front(), 0);
      EXPECT_LT(s.back(), kEvents);
    }
    thread_drops += not_ok[t];
  }
  const std::vector<RingStats> rings = RingsOf(*host, "threads");
  ASSERT_EQ(rings.size(), static_cast<size_t>(kThreads));
  std::set<std::string> segments;
  uint64_t ring_drops = 0;
  for (const RingStats& r : rings) {
    SCOPED_TRACE(Describe(r));
    segments.insert(r.segment);
    EXPECT_TRUE(r.Conserved());
    EXPECT_EQ(r.emitted, static_cast<uint64_t>(kEvents));  // one thread's events, no more
    EXPECT_EQ(r.rejected_total(), 0u);
    EXPECT_TRUE(r.retired);
    EXPECT_TRUE(r.reclaimed);
    ring_drops += r.dropped();
  }
  EXPECT_EQ(segments.size(), static_cast<size_t>(kThreads));
  EXPECT_EQ(ring_drops, thread_drops);
  const WorkerStats s = w->Stats();
  EXPECT_EQ(s.emitted, static_cast<uint64_t>(kThreads * kEvents));
  EXPECT_TRUE(WorkerConserved(s));
}

TEST(ThreadsTest, ExitedThreadRingIsRetiredAndReclaimed) {
  testing::ScopedNamespace ns;
  Collector c;  // outlives the host, whose handlers point into it
  std::unique_ptr<Host> host = StartHost(ns);
  ASSERT_NE(host, nullptr);
  c.AttachTo(*host);
  host->RunInBackground();
  WorkerOptions wo;
  wo.ring_bytes = 1 << 20;  // 1,000 events fit even if the host does not run meanwhile
  std::unique_ptr<Worker> w = StartWorker(ns, "exiting", wo);
  ASSERT_NE(w, nullptr);
  ASSERT_TRUE(w->attached());

  constexpr int64_t kEvents = 1'000;
  uint64_t not_ok = 0;
  std::thread([&] {
    Emitter e(*w);
    for (int64_t i = 0; i < kEvents; ++i) not_ok += e.Emit(i, "gone") != EmitResult::kOk;
  }).join();
  EXPECT_EQ(not_ok, 0u);
  EXPECT_EQ(w->Stats().live_rings, 0u);

  ASSERT_TRUE(host->DrainAll(seconds(10)));
  ExpectExactly(c.Seqs("exiting", "gone"), 0, kEvents, "exited thread");
  std::vector<RingStats> rings = RingsOf(*host, "exiting");
  ASSERT_EQ(rings.size(), 1u);
  EXPECT_TRUE(rings[0].retired);
  EXPECT_TRUE(rings[0].reclaimed);
  EXPECT_TRUE(rings[0].Conserved()) << Describe(rings[0]);
  EXPECT_EQ(rings[0].delivered, static_cast<uint64_t>(kEvents));
  EXPECT_FALSE(SegmentExists(rings[0].segment)) << rings[0].segment;
  const std::string old_segment = rings[0].segment;

  // The worker itself lives on: no terminated event, and another thread still gets a ring.
  EXPECT_TRUE(c.TerminatedReasons("exiting").empty());
  EXPECT_EQ(host->Stats().workers_terminated, 0u);
  Emitter e(*w);
  for (int64_t i = 0; i < 10; ++i) ASSERT_EQ(e.Emit(i, "main"), EmitResult::kOk);
  EXPECT_EQ(w->Stats().live_rings, 1u);
  ASSERT_TRUE(host->DrainAll(seconds(10)));
  ExpectExactly(c.Seqs("exiting", "main"), 0, 10, "main thread");
  rings = RingsOf(*host, "exiting");
  ASSERT_EQ(rings.size(), 2u);
  EXPECT_FALSE(rings[1].reclaimed);
  EXPECT_TRUE(rings[1].Conserved()) << Describe(rings[1]);
  EXPECT_TRUE(SegmentExists(rings[1].segment));
}

// Threads beyond max_rings share one more ring: nothing is dropped, each keeps its order.
TEST(ThreadsTest, RingCapExtraThreadsShareOneRing) {
  testing::ScopedNamespace ns;
  Collector c;  // outlives the host, whose handlers point into it
  std::unique_ptr<Host> host = StartHost(ns);
  ASSERT_NE(host, nullptr);
  c.AttachTo(*host);
  host->RunInBackground();
  WorkerOptions wo;
  wo.max_rings = 2;
  wo.ring_bytes = 1 << 20;
  std::unique_ptr<Worker> w = StartWorker(ns, "capped", wo);
  ASSERT_NE(w, nullptr);
  ASSERT_TRUE(w->attached());

  constexpr int kThreads = 3;
  constexpr int64_t kEvents = 1'000;
  std::atomic<int> turn{0};  // first emits happen in thread order: 0 and 1 get the rings
  std::barrier all_alive(kThreads + 1), all_done(kThreads + 1), may_exit(kThreads + 1);
  std::vector<std::map<EmitResult, uint64_t>> results(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      Emitter e(*w);
      const std::string cmd = "t" + std::to_string(t);
      while (turn.load() != t) std::this_thread::yield();
      ++results[t][e.Emit(0, cmd)];
      turn.store(t + 1);
      all_alive.arrive_and_wait();  // all three threads alive (two rings + the shared one)
      for (int64_t i = 1; i < kEvents; ++i) ++results[t][e.Emit(i, cmd)];
      all_done.arrive_and_wait();  // nobody exits (and frees a ring) before all are done
      may_exit.arrive_and_wait();  // nor before the stats below are read
    });
  }
  all_alive.arrive_and_wait();
  EXPECT_EQ(w->Stats().live_rings, 3u);
  all_done.arrive_and_wait();
  const WorkerStats s = w->Stats();
  may_exit.arrive_and_wait();
  for (std::thread& th : threads) th.join();

  EXPECT_EQ(results[0][EmitResult::kOk], static_cast<uint64_t>(kEvents));
  EXPECT_EQ(results[1][EmitResult::kOk], static_cast<uint64_t>(kEvents));
  EXPECT_EQ(results[2][EmitResult::kOk], static_cast<uint64_t>(kEvents));
  EXPECT_EQ(s.live_rings, 3u);
  EXPECT_EQ(s.emitted, static_cast<uint64_t>(kThreads * kEvents));
  EXPECT_EQ(s.dropped_no_ring, 0u);
  EXPECT_EQ(s.published, static_cast<uint64_t>(kThreads * kEvents));
  EXPECT_TRUE(WorkerConserved(s));

  ASSERT_TRUE(host->DrainAll(seconds(10)));
  ExpectExactly(c.Seqs("capped", "t0"), 0, kEvents, "t0");
  ExpectExactly(c.Seqs("capped", "t1"), 0, kEvents, "t1");
  ExpectExactly(c.Seqs("capped", "t2"), 0, kEvents, "t2 (shared ring)");
  const std::vector<RingStats> rings = RingsOf(*host, "capped");
  ASSERT_EQ(rings.size(), 3u);
  for (const RingStats& r : rings) EXPECT_TRUE(r.Conserved()) << Describe(r);

  // The cap counts live rings: with the threads gone, a new thread gets a ring of its own
  // again (the shared ring stays until the worker ends).
  EXPECT_EQ(w->Stats().live_rings, 1u);
  Emitter e(*w);
  EXPECT_EQ(e.Emit(0, "main"), EmitResult::kOk);
  EXPECT_EQ(w->Stats().live_rings, 2u);
}

// Without a host the worker keeps events (bounded, worker/src/pre_attach.h) and publishes them,
// in order, when it attaches.
TEST(ThreadsTest, NoHostMeansEventsAreKeptThenPublishedOnAttach) {
  testing::ScopedNamespace ns;
  WorkerOptions wo;
  wo.attach_wait = milliseconds(0);
  std::unique_ptr<Worker> w = StartWorker(ns, "early", wo);
  ASSERT_NE(w, nullptr);
  EXPECT_FALSE(w->attached());
  Emitter e(*w);
  constexpr int64_t kEvents = 100;
  for (int64_t i = 0; i < kEvents; ++i) ASSERT_EQ(e.Emit(i, "before"), EmitResult::kBuffered);
  WorkerStats s = w->Stats();
  EXPECT_EQ(s.emitted, 0u);  // counted when published
  EXPECT_EQ(s.pending, static_cast<uint64_t>(kEvents));
  EXPECT_EQ(s.live_rings, 0u);
  EXPECT_FALSE(s.attached);

  Collector c;  // outlives the host, whose handlers point into it
  std::unique_ptr<Host> host = StartHost(ns);
  ASSERT_NE(host, nullptr);
  c.AttachTo(*host);
  host->RunInBackground();
  // The worker's background thread looks every 50 ms; 3 s is a loose bound for a loaded box.
  ASSERT_TRUE(w->WaitAttached(seconds(3)));
  for (int64_t i = 0; i < kEvents; ++i) ASSERT_EQ(e.Emit(i, "after"), EmitResult::kOk);
  ASSERT_TRUE(host->DrainAll(seconds(10)));
  ExpectExactly(c.Seqs("early", "after"), 0, kEvents, "after attach");
  ExpectExactly(c.Seqs("early", "before"), 0, kEvents, "kept before attach");
  s = w->Stats();
  EXPECT_EQ(s.emitted, static_cast<uint64_t>(2 * kEvents));
  EXPECT_EQ(s.dropped_no_ring, 0u);
  EXPECT_EQ(s.pending, 0u);
  EXPECT_EQ(s.published, static_cast<uint64_t>(2 * kEvents));
  EXPECT_TRUE(WorkerConserved(s));
  // The kept events went through the shared ring; the thread writes there too until the host
  // has read past them, then moves to a ring of its own. Whether the host got there before the
  // last "after" emit depends on timing (it holds back a ring its writer is still filling), so
  // the events took one ring or two; either way every one was delivered, in order, above.
  const std::vector<RingStats> rings = RingsOf(*host, "early");
  ASSERT_GE(rings.size(), 1u);
  ASSERT_LE(rings.size(), 2u);
  uint64_t delivered = 0;
  for (const RingStats& r : rings) {
    EXPECT_TRUE(r.Conserved()) << Describe(r);
    delivered += r.delivered;
  }
  EXPECT_EQ(delivered, static_cast<uint64_t>(2 * kEvents));
}

using testing::ForkChild;

// Reaps `pid` on scope exit (after a SIGKILL if it still runs).
struct ChildGuard {
  pid_t pid;
  bool reaped = false;
  ~ChildGuard() {
    if (pid > 0 && !reaped) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
    }
  }
};

// Child body: checks its worker id, emits `n` events tagged "child", optionally destroys the
// Worker. Exit codes: 0 ok, 3 wrong id, 4 an emit was not delivered to a ring.
int EmitInForkedChild(std::unique_ptr<Worker>& w, const std::string& parent_id, int64_t n,
                      bool destroy) {
  Emitter e(*w);
  for (int64_t i = 0; i < n; ++i) {
    if (e.Emit(i, "child") != EmitResult::kOk) return 4;
  }
  if (w->id() != parent_id + "-" + std::to_string(::getpid())) return 3;
  if (destroy) w.reset();
  return 0;
}

void ForkedChildTest(bool child_destroys_worker) {
  testing::ScopedNamespace ns;
  // Polled from this thread: no host thread exists when we fork.
  Collector c;  // outlives the host, whose handlers point into it
  std::unique_ptr<Host> host = StartHost(ns);
  ASSERT_NE(host, nullptr);
  c.AttachTo(*host);
  WorkerOptions wo;
  wo.ring_bytes = 1 << 20;  // the child's 1,000 events fit even if the host falls behind
  std::unique_ptr<Worker> w = StartWorker(ns, "forker", wo);
  ASSERT_NE(w, nullptr);
  ASSERT_TRUE(w->attached());

  Emitter e(*w);
  for (int64_t i = 0; i < 100; ++i) ASSERT_EQ(e.Emit(i, "parent"), EmitResult::kOk);
  ASSERT_TRUE(PollUntil(*host, [&] { return c.Delivered("forker", "parent") == 100; }, seconds(10)));

  constexpr int64_t kChildEvents = 1'000;
  const pid_t child = ForkChild(
      [&] { return EmitInForkedChild(w, "forker", kChildEvents, child_destroys_worker); });
  ASSERT_GT(child, 0);
  ChildGuard guard{child};
  const std::string child_id = "forker-" + std::to_string(child);
  int status = -1;
  ASSERT_TRUE(PollUntil(
      *host,
      [&] {
        if (::waitpid(child, &status, WNOHANG) != child) return false;
        guard.reaped = true;
        return true;
      },
      seconds(20)))
      << "the forked child did not exit";
  ASSERT_TRUE(WIFEXITED(status)) << status;
  ASSERT_EQ(WEXITSTATUS(status), 0);

  // The parent goes on on its own ring, undisturbed.
  for (int64_t i = 100; i < 200; ++i) ASSERT_EQ(e.Emit(i, "parent"), EmitResult::kOk);
  ASSERT_TRUE(host->DrainAll(seconds(10)));

  ExpectExactly(c.Seqs("forker", "parent"), 0, 200, "parent");
  EXPECT_EQ(c.Delivered("forker", "child"), 0u);
  ExpectExactly(c.Seqs(child_id, "child"), 0, kChildEvents, "child");
  EXPECT_EQ(c.Delivered(child_id, "parent"), 0u);
  EXPECT_EQ(c.malformed(), 0u);

  const std::string ring_prefix = "/pitlane." + ns.name() + ".ring.";
  const std::vector<RingStats> parent_rings = RingsOf(*host, "forker");
  ASSERT_EQ(parent_rings.size(), 1u);
  const RingStats& pr = parent_rings[0];
  EXPECT_EQ(pr.segment.rfind(ring_prefix + std::to_string(::getpid()) + ".", 0), 0u) << pr.segment;
  EXPECT_EQ(pr.pid, static_cast<uint32_t>(::getpid()));
  EXPECT_FALSE(pr.reclaimed);
  EXPECT_TRUE(pr.Conserved()) << Describe(pr);
  EXPECT_EQ(pr.emitted, 200u);
  EXPECT_EQ(pr.delivered, 200u);
  EXPECT_EQ(pr.rejected_total(), 0u);

  const std::vector<RingStats> child_rings = RingsOf(*host, child_id);
  ASSERT_EQ(child_rings.size(), 1u);
  const RingStats& cr = child_rings[0];
  EXPECT_EQ(cr.segment.rfind(ring_prefix + std::to_string(child) + ".", 0), 0u) << cr.segment;
  EXPECT_EQ(cr.pid, static_cast<uint32_t>(child));
  EXPECT_TRUE(cr.reclaimed);
  EXPECT_TRUE(cr.Conserved()) << Describe(cr);
  EXPECT_EQ(cr.emitted, static_cast<uint64_t>(kChildEvents));
  EXPECT_EQ(cr.delivered, static_cast<uint64_t>(kChildEvents));
  EXPECT_FALSE(SegmentExists(cr.segment));

  // The child is a worker of its own, terminated once; the parent is not.
  const std::vector<std::string> reasons = c.TerminatedReasons(child_id);
  ASSERT_EQ(reasons.size(), 1u);
  EXPECT_EQ(reasons[0], child_destroys_worker ? "shutdown" : "process_exited");
  EXPECT_TRUE(c.TerminatedReasons("forker").empty());
  const WorkerStats s = w->Stats();
  EXPECT_EQ(s.emitted, 200u);
  EXPECT_EQ(s.published, 200u);
  EXPECT_EQ(s.live_rings, 1u);
}

TEST(ThreadsTest, ForkedChildGetsItsOwnRings) { ForkedChildTest(/*child_destroys_worker=*/false); }

// Python multiprocessing children may shut the inherited worker down cleanly: the forked
// child's Worker must be destructible (its background thread and its locks are its own).
TEST(ThreadsTest, ForkedChildShutsDownItsWorkerCleanly) {
  ForkedChildTest(/*child_destroys_worker=*/true);
}

TEST(ThreadsTest, QuarantinedRingIsReplaced) {
  testing::ScopedNamespace ns;
  std::mutex log_mu;
  std::vector<std::string> log;
  Collector c;  // outlives the host, whose handlers point into it
  std::unique_ptr<Host> host = StartHost(ns, [&](std::string_view line) {
    std::lock_guard<std::mutex> lock(log_mu);
    log.emplace_back(line);
  });
  ASSERT_NE(host, nullptr);
  c.AttachTo(*host);
  std::unique_ptr<Worker> w = StartWorker(ns, "victim");
  ASSERT_NE(w, nullptr);
  ASSERT_TRUE(w->attached());
  Emitter e(*w);
  for (int64_t i = 0; i < 10; ++i) ASSERT_EQ(e.Emit(i, "main"), EmitResult::kOk);
  ASSERT_TRUE(PollUntil(*host, [&] { return c.Delivered("victim", "main") == 10; }, seconds(10)));
  std::vector<RingStats> rings = RingsOf(*host, "victim");
  ASSERT_EQ(rings.size(), 1u);
  const std::string old_segment = rings[0].segment;

  // A hostile writer: a garbage record header at the producer position, then producer += 8.
  uint64_t offset = 0;
  {
    Result<shm::Segment> seg = shm::Segment::Open(old_segment, shm::kRingHeaderBytes);
    ASSERT_TRUE(seg.ok()) << seg.status().ToString();
    auto* h = static_cast<shm::RingHeader*>(seg->base());
    const uint64_t producer = h->producer.load(std::memory_order_relaxed);
    offset = producer & (h->data_bytes - 1);
    const shm::RecordHeader garbage{0xDEADBEEFu, 0x12345678u};
    std::memcpy(static_cast<uint8_t*>(seg->base()) + shm::kRingHeaderBytes + offset, &garbage,
                sizeof(garbage));
    h->producer.store(producer + 8, std::memory_order_release);
  }
  ASSERT_TRUE(PollUntil(*host, [&] { return host->Stats().quarantined_rings == 1; }, seconds(10)));
  {
    std::lock_guard<std::mutex> lock(log_mu);
    bool found = false;
    for (const std::string& line : log) {
      if (line.find("quarantine") != std::string::npos &&
          line.find(old_segment) != std::string::npos && line.find("victim") != std::string::npos &&
          line.find("offset " + std::to_string(offset)) != std::string::npos) {
        found = true;
      }
    }
    std::string all;
    for (const std::string& line : log) all += line + "\n";
    EXPECT_TRUE(found) << "no log line names ring " << old_segment << ", worker victim and offset "
                       << offset << "; log:\n"
                       << all;
  }
  // Nothing after the garbage is read from the quarantined ring.
  for (int i = 0; i < 20; ++i) host->PollOnce();
  EXPECT_EQ(c.Delivered("victim", "main"), 10u);

  // The worker's next emits go to a fresh ring and are delivered.
  for (int64_t i = 10; i < 20; ++i) ASSERT_EQ(e.Emit(i, "main"), EmitResult::kOk);
  ASSERT_TRUE(PollUntil(*host, [&] { return c.Delivered("victim", "main") == 20; }, seconds(10)));
  ExpectExactly(c.Seqs("victim", "main"), 0, 20, "victim");
  ASSERT_TRUE(host->DrainAll(seconds(10)));
  rings = RingsOf(*host, "victim");
  ASSERT_EQ(rings.size(), 2u);
  const RingStats* old_ring = nullptr;
  const RingStats* new_ring = nullptr;
  for (const RingStats& r : rings) (r.segment == old_segment ? old_ring : new_ring) = &r;
  ASSERT_NE(old_ring, nullptr);
  ASSERT_NE(new_ring, nullptr);
  EXPECT_TRUE(old_ring->quarantined);
  EXPECT_TRUE(old_ring->reclaimed);  // retired by the worker, then reclaimed by the host
  EXPECT_TRUE(old_ring->Conserved()) << Describe(*old_ring);
  EXPECT_FALSE(SegmentExists(old_segment));
  EXPECT_FALSE(new_ring->quarantined);
  EXPECT_FALSE(new_ring->reclaimed);
  EXPECT_EQ(new_ring->delivered, 10u);
  EXPECT_TRUE(new_ring->Conserved()) << Describe(*new_ring);
  const WorkerStats s = w->Stats();
  EXPECT_EQ(s.live_rings, 1u);
  EXPECT_EQ(s.emitted, 20u);
  EXPECT_EQ(s.published, 20u);
  EXPECT_TRUE(WorkerConserved(s));
}

}  // namespace
}  // namespace pitlane
