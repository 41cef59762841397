// What a worker promises a Snakepit pool beyond the ring: events emitted before any host exists
// are kept and published in order once one appears (never blocking the emit), and the catalog's
// limits are applied when the event is emitted, so `Emit` never says "ok" for an event the
// host will reject, and a long value is cut instead of dropping the event.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "pitlane/host.h"
#include "pitlane/worker.h"
#include "testing.h"

namespace pitlane {
namespace {

using std::chrono::milliseconds;

// Collects what a host delivers.
struct Seen {
  std::mutex mu;
  std::vector<int64_t> rss;              // python.memory.sampled rss_bytes, in delivery order
  std::vector<std::string> error_messages;  // python.error.occurred error_message
  size_t Count() {
    std::lock_guard<std::mutex> lock(mu);
    return rss.size() + error_messages.size();
  }
};

bool WaitFor(const std::function<bool()>& pred) {
  const auto until = std::chrono::steady_clock::now() + milliseconds(10000);
  while (!pred()) {
    if (std::chrono::steady_clock::now() > until) return false;
    std::this_thread::sleep_for(milliseconds(2));
  }
  return true;
}

// A host that collects into `seen` and reads only when the test polls it (DrainAll, PollOnce).
std::unique_ptr<Host> PolledHost(const std::string& ns, Seen* seen) {
  std::unique_ptr<Host> host = testing::StartHost(ns);
  if (!host) return nullptr;
  EXPECT_TRUE(host->Attach("seen", "*", [seen](const EventView& e) {
                    std::lock_guard<std::mutex> lock(seen->mu);
                    if (const Value* v = e.measurement("rss_bytes")) seen->rss.push_back(v->i);
                    if (auto m = e.meta("error_message")) seen->error_messages.emplace_back(*m);
                  }).ok());
  return host;
}

// The same, reading on its own thread.
std::unique_ptr<Host> CollectingHost(const std::string& ns, Seen* seen) {
  std::unique_ptr<Host> host = PolledHost(ns, seen);
  if (host) host->RunInBackground();
  return host;
}

// A worker started while its namespace has no host.
std::unique_ptr<Worker> EarlyWorker(const std::string& ns, uint64_t ring_bytes = 0) {
  WorkerOptions o;
  o.ns = ns;
  o.worker_id = "early";
  o.attach_wait = milliseconds(0);
  o.ring_bytes = ring_bytes;
  auto w = Worker::Start(o);
  EXPECT_TRUE(w.ok()) << w.status().ToString();
  return w.ok() ? std::move(w).value() : nullptr;
}

// A worker attached to its namespace's host with at most `max_rings` rings of its threads' own.
std::unique_ptr<Worker> CappedWorker(const std::string& ns, uint32_t max_rings,
                                     uint64_t ring_bytes = 0) {
  WorkerOptions o;
  o.ns = ns;
  o.worker_id = "capped";
  o.max_rings = max_rings;
  o.ring_bytes = ring_bytes;
  o.attach_wait = milliseconds(5000);
  auto w = Worker::Start(o);
  EXPECT_TRUE(w.ok()) << w.status().ToString();
  EXPECT_TRUE(w.ok() && (*w)->attached());
  return w.ok() ? std::move(w).value() : nullptr;
}

// 0, 1, ..., n - 1: the values one thread emitted, in its order.
std::vector<int64_t> Sequence(int n) {
  std::vector<int64_t> v(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) v[static_cast<size_t>(i)] = i;
  return v;
}

TEST(PreAttachTest, EventsBeforeTheHostArePublishedInOrderWhenItAppears) {
  testing::ScopedNamespace ns;
  std::unique_ptr<Worker> w = EarlyWorker(ns.name());
  ASSERT_TRUE(w);
  const EventHandle mem = w->Event("python.memory.sampled");
  for (int i = 0; i < 100; ++i) {
    ASSERT_EQ(w->Emit(mem, {{"rss_bytes", i}}), EmitResult::kBuffered) << i;
  }
  WorkerStats s = w->Stats();
  EXPECT_EQ(s.pending, 100u);
  EXPECT_EQ(s.emitted, 0u);  // counted when published or dropped

  Seen seen;
  std::unique_ptr<Host> host = CollectingHost(ns.name(), &seen);
  ASSERT_TRUE(host);
  ASSERT_TRUE(w->WaitAttached(milliseconds(10000)));
  ASSERT_TRUE(WaitFor([&] { return seen.Count() == 100; }));
  EXPECT_EQ(seen.rss, Sequence(100));
  s = w->Stats();
  EXPECT_EQ(s.pending, 0u);
  EXPECT_EQ(s.emitted, 100u);
  EXPECT_EQ(s.published, 100u);
}

TEST(PreAttachTest, AThreadsEventsKeepTheirOrderAcrossTheAttach) {
  // Events kept before the host and events emitted right after the attach come from the same
  // thread: the host must deliver all the kept ones first, whatever order it reads rings in.
  testing::ScopedNamespace ns;
  std::unique_ptr<Worker> w = EarlyWorker(ns.name(), 1 << 20);  // half of it keeps all 1,000
  ASSERT_TRUE(w);
  const EventHandle mem = w->Event("python.memory.sampled");
  constexpr int kKept = 1000, kAfter = 1000;
  for (int i = 0; i < kKept; ++i) {
    ASSERT_EQ(w->Emit(mem, {{"rss_bytes", i}}), EmitResult::kBuffered) << i;
  }
  // The host exists but reads nothing until both kinds of events are in shared memory.
  Seen seen;
  std::unique_ptr<Host> host = PolledHost(ns.name(), &seen);
  ASSERT_TRUE(host);
  ASSERT_TRUE(w->WaitAttached(milliseconds(10000)));
  for (int i = kKept; i < kKept + kAfter; ++i) {
    ASSERT_EQ(w->Emit(mem, {{"rss_bytes", i}}), EmitResult::kOk) << i;
  }
  ASSERT_TRUE(host->DrainAll(milliseconds(10000)));
  std::lock_guard<std::mutex> lock(seen.mu);
  EXPECT_EQ(seen.rss, Sequence(kKept + kAfter));
}

TEST(PreAttachTest, OverflowBeyondTheBufferIsCountedAsNoRing) {
  testing::ScopedNamespace ns;
  // The buffer takes half a ring: room for more than 1,024 of these.
  std::unique_ptr<Worker> w = EarlyWorker(ns.name(), 1 << 20);
  ASSERT_TRUE(w);
  const EventHandle mem = w->Event("python.memory.sampled");
  size_t buffered = 0, dropped = 0;
  for (int i = 0; i < 1100; ++i) {
    const EmitResult r = w->Emit(mem, {{"rss_bytes", i}});
    if (r == EmitResult::kBuffered) ++buffered;
    if (r == EmitResult::kDroppedNoRing) ++dropped;
  }
  EXPECT_EQ(buffered, 1024u);
  EXPECT_EQ(dropped, 76u);
  const WorkerStats s = w->Stats();
  EXPECT_EQ(s.dropped_no_ring, 76u);
  EXPECT_EQ(s.emitted, 76u);
}

TEST(SharedRingTest, ThreadsBeyondTheRingCapShareOneRingAndLoseNothing) {
  testing::ScopedNamespace ns;
  Seen seen;
  std::unique_ptr<Host> host = CollectingHost(ns.name(), &seen);
  ASSERT_TRUE(host);
  std::unique_ptr<Worker> w = CappedWorker(ns.name(), 2);
  ASSERT_TRUE(w);
  constexpr int kThreads = 6, kEach = 200;
  const EventHandle mem = w->Event("python.memory.sampled");
  std::vector<std::thread> threads;
  std::atomic<int> not_ok{0}, started{0}, finished{0};
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      // All threads live at once, so 4 of them are over the cap.
      ++started;
      while (started.load() < kThreads) std::this_thread::yield();
      for (int i = 0; i < kEach; ++i) {
        // rss_bytes = thread * 10000 + i: each thread's events must arrive in its order.
        if (w->Emit(mem, {{"rss_bytes", t * 10000 + i}}) != EmitResult::kOk) ++not_ok;
      }
      ++finished;
      while (finished.load() < kThreads) std::this_thread::yield();
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(not_ok.load(), 0);
  ASSERT_TRUE(WaitFor([&] { return seen.Count() == kThreads * kEach; }));
  std::vector<int64_t> last(kThreads, -1);
  {
    std::lock_guard<std::mutex> lock(seen.mu);
    for (int64_t v : seen.rss) {
      const int64_t t = v / 10000, i = v % 10000;
      EXPECT_EQ(i, last[t] + 1) << "thread " << t;
      last[t] = i;
    }
  }
  const WorkerStats s = w->Stats();
  EXPECT_EQ(s.dropped_no_ring, 0u);
  EXPECT_EQ(s.published, static_cast<uint64_t>(kThreads * kEach));
  EXPECT_LE(s.live_rings, 3u);  // max_rings, plus the one they share
}

TEST(SharedRingTest, AThreadMovingToARingOfItsOwnKeepsItsOrder) {
  // Over the cap a thread writes into the shared ring; when a ring frees up it may take one of
  // its own, but not before the host has read what it left in the shared ring.
  testing::ScopedNamespace ns;
  Seen seen;
  std::unique_ptr<Host> host = PolledHost(ns.name(), &seen);
  ASSERT_TRUE(host);
  std::unique_ptr<Worker> w = CappedWorker(ns.name(), 1, 1 << 20);
  ASSERT_TRUE(w);
  const EventHandle mem = w->Event("python.memory.sampled");
  std::atomic<int> step{0};
  std::thread holder([&] {  // takes the one ring, and frees it when it exits
    EXPECT_EQ(w->Emit(mem, {{"rss_bytes", -1}}), EmitResult::kOk);
    step.store(1);
    while (step.load() != 2) std::this_thread::yield();
  });
  while (step.load() != 1) std::this_thread::yield();
  constexpr int kShared = 1000, kAfter = 1000;
  for (int i = 0; i < kShared; ++i) {
    ASSERT_EQ(w->Emit(mem, {{"rss_bytes", i}}), EmitResult::kOk);  // over the cap: shared
  }
  step.store(2);
  holder.join();
  // Two passes: the host reclaims the freed ring and reads part of the shared one.
  host->PollOnce();
  host->PollOnce();
  for (int i = kShared; i < kShared + kAfter; ++i) {
    ASSERT_EQ(w->Emit(mem, {{"rss_bytes", i}}), EmitResult::kOk);
  }
  ASSERT_TRUE(host->DrainAll(milliseconds(10000)));
  // All read: the next event goes into a ring of the thread's own.
  ASSERT_EQ(w->Emit(mem, {{"rss_bytes", kShared + kAfter}}), EmitResult::kOk);
  EXPECT_EQ(w->Stats().live_rings, 2u);
  ASSERT_TRUE(host->DrainAll(milliseconds(10000)));
  std::vector<int64_t> mine;
  {
    std::lock_guard<std::mutex> lock(seen.mu);
    for (int64_t v : seen.rss) {
      if (v >= 0) mine.push_back(v);
    }
  }
  EXPECT_EQ(mine, Sequence(kShared + kAfter + 1));
}

class LimitsAtEmitTest : public ::testing::Test {
 protected:
  void SetUp() override {
    host_ = CollectingHost(ns_.name(), &seen_);
    ASSERT_TRUE(host_);
    worker_ = testing::StartWorker(ns_.name(), "limits");
    ASSERT_TRUE(worker_);
  }
  testing::ScopedNamespace ns_;
  Seen seen_;
  std::unique_ptr<Host> host_;
  std::unique_ptr<Worker> worker_;
};

TEST_F(LimitsAtEmitTest, EventsOverTheHostsLimitsAreRefusedAndCounted) {
  const std::string long_key(65, 'k');
  const std::string long_id(129, 'c');
  std::vector<Metadata> many;
  std::vector<std::string> keys;
  for (int i = 0; i < 33; ++i) keys.push_back("k" + std::to_string(i));
  for (const std::string& k : keys) many.emplace_back(k, "v");
  const EventHandle stop = worker_->Event("python.call.stop");
  const Measurement d("duration", Value(1));
  EXPECT_EQ(worker_->Emit(stop, {&d, 1}, many), EmitResult::kDroppedOverLimit);
  EXPECT_EQ(worker_->Emit(stop, {d}, {{long_key, "v"}}), EmitResult::kDroppedOverLimit);
  EXPECT_EQ(worker_->Emit(stop, {d}, {}, long_id), EmitResult::kDroppedOverLimit);
  many.pop_back();  // 32: within
  EXPECT_EQ(worker_->Emit(stop, {&d, 1}, many), EmitResult::kOk);
  ASSERT_TRUE(host_->DrainAll(milliseconds(10000)));
  const WorkerStats s = worker_->Stats();
  EXPECT_EQ(s.dropped_too_large, 3u);
  EXPECT_EQ(s.published, 1u);
  EXPECT_EQ(host_->Stats().delivered, 1u);
  uint64_t rejected = 0;
  for (uint64_t r : host_->Stats().rejected) rejected += r;
  EXPECT_EQ(rejected, 0u);
}

TEST_F(LimitsAtEmitTest, ValueOverTheLimitIsCutNotTheWholeEventDropped) {
  const std::string message(96 << 10, 'x');  // bigger than the largest record a ring takes
  EXPECT_EQ(worker_->Emit("python.error.occurred", {{"count", 1}}, {{"error_message", message}}),
            EmitResult::kOkTruncated);
  ASSERT_TRUE(WaitFor([&] { return seen_.Count() == 1; }));
  EXPECT_EQ(seen_.error_messages.at(0), std::string(1024, 'x'));
  EXPECT_EQ(worker_->Stats().dropped_too_large, 0u);
}

}  // namespace
}  // namespace pitlane
