// The worker's gate (enabled → sampling → filter) driven through the host's control API:
// Host::Toggle / UpdateSampling / UpdateFilter, a real Worker and a real Host in this process.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "pitlane/host.h"
#include "pitlane/worker.h"
#include "testing.h"

namespace pitlane {

// gtest prints EmitResult by name.
static void PrintTo(EmitResult r, std::ostream* os) { *os << EmitResultName(r); }

namespace {

using namespace std::chrono_literals;

constexpr const char* kWorkerId = "gate-worker";

class GateTest : public ::testing::Test {
 protected:
  void SetUp() override {
    HostOptions ho;
    ho.ns = ns_.name();
    ho.log = [](std::string_view) {};
    Result<std::unique_ptr<Host>> host = Host::Start(ho);
    ASSERT_TRUE(host.ok()) << host.status().ToString();
    host_ = std::move(host).value();
    ASSERT_TRUE(host_->Attach("count", "*", [this](const EventView& v) {
                  if (v.transport == Transport::kHost) return;
                  delivered_.fetch_add(1, std::memory_order_relaxed);
                  std::lock_guard<std::mutex> lock(mu_);
                  by_name_[std::string(v.name())]++;
                }).ok());
    StartWorker(kWorkerId);
  }

  void TearDown() override {
    if (!host_) return;
    worker_.reset();
    ASSERT_TRUE(host_->DrainAll(10s));
    ExpectConserved();
  }

  void StartWorker(const std::string& id, uint64_t ring_bytes = 0) {
    WorkerOptions wo;
    wo.ns = ns_.name();
    wo.worker_id = id;
    wo.attach_wait = 5s;
    wo.ring_bytes = ring_bytes;
    Result<std::unique_ptr<Worker>> worker = Worker::Start(wo);
    ASSERT_TRUE(worker.ok()) << worker.status().ToString();
    worker_ = std::move(worker).value();
    ASSERT_TRUE(worker_->attached());
    WaitHostKnows(id);
  }

  // Polls the host until it has discovered a live worker with this id (and written its control
  // state, if it remembers one).
  void WaitHostKnows(const std::string& id) {
    const auto deadline = std::chrono::steady_clock::now() + 5s;
    while (std::chrono::steady_clock::now() < deadline) {
      host_->PollOnce();
      for (const WorkerInfo& w : host_->Workers()) {
        if (w.id == id && w.alive) return;
      }
    }
    FAIL() << "host never discovered worker " << id;
  }

  EmitResult Emit(std::string_view name) { return worker_->Emit(name, {}, {}); }

  // Emits `name` n times and expects every result to be `expected`.
  void ExpectAll(std::string_view name, int n, EmitResult expected) {
    for (int i = 0; i < n; ++i) {
      const EmitResult r = Emit(name);
      ASSERT_EQ(r, expected) << name << " emit " << i << ": " << EmitResultName(r) << ", expected "
                             << EmitResultName(expected);
    }
  }

  void Drain() { ASSERT_TRUE(host_->DrainAll(10s)); }

  void ExpectConserved() {
    for (const RingStats& r : host_->Rings()) {
      EXPECT_TRUE(r.Conserved()) << r.segment << ": emitted " << r.emitted << " suppressed "
                                 << r.suppressed() << " dropped " << r.dropped() << " published "
                                 << r.published << " delivered " << r.delivered << " rejected "
                                 << r.rejected_total();
    }
  }

  RingStats Totals() const {
    RingStats t;
    for (const RingStats& r : host_->Rings()) {
      t.emitted += r.emitted;
      t.published += r.published;
      t.dropped_full += r.dropped_full;
      t.dropped_too_large += r.dropped_too_large;
      t.suppressed_disabled += r.suppressed_disabled;
      t.suppressed_sampled += r.suppressed_sampled;
      t.suppressed_filtered += r.suppressed_filtered;
      t.delivered += r.delivered;
    }
    return t;
  }

  testing::ScopedNamespace ns_;
  std::unique_ptr<Host> host_;
  std::unique_ptr<Worker> worker_;
  std::atomic<uint64_t> delivered_{0};
  std::mutex mu_;
  std::map<std::string, uint64_t> by_name_;
};

// ─── toggle ──────────────────────────────────────────────────────────────────────────────────

TEST_F(GateTest, ToggleOffSuppressesEveryEventAsDisabled) {
  ASSERT_EQ(Emit("python.call.stop"), EmitResult::kOk);
  const uint64_t version_before = worker_->applied_control_version();
  ASSERT_TRUE(host_->Toggle(kWorkerId, false).ok());
  ExpectAll("python.call.stop", 10, EmitResult::kSuppressedDisabled);
  EXPECT_NE(worker_->applied_control_version(), version_before);
  // Unknown names are suppressed too: nothing leaves a disabled worker.
  ExpectAll("inference.start", 3, EmitResult::kSuppressedDisabled);
  ASSERT_TRUE(host_->Toggle(kWorkerId, true).ok());
  ExpectAll("python.call.stop", 2, EmitResult::kOk);

  const WorkerStats ws = worker_->Stats();
  EXPECT_EQ(ws.suppressed_disabled, 13u);
  EXPECT_EQ(ws.suppressed_sampled, 0u);
  EXPECT_EQ(ws.suppressed_filtered, 0u);
  Drain();
  EXPECT_EQ(delivered_.load(), 3u);
  const RingStats t = Totals();
  EXPECT_EQ(t.suppressed_disabled, 13u);
  EXPECT_EQ(t.emitted, 16u);
}

// ─── sampling ────────────────────────────────────────────────────────────────────────────────

TEST_F(GateTest, SamplingAtOneTenthDeliversAboutOneTenthOf100000) {
  worker_.reset();
  Drain();
  StartWorker(kWorkerId, 1 << 22);
  host_->RunInBackground();
  ASSERT_TRUE(host_->UpdateSampling(kWorkerId, 0.1, {}).ok());
  std::map<EmitResult, uint64_t> results;
  constexpr int kEmits = 100000;
  for (int i = 0; i < kEmits; ++i) results[Emit("python.call.stop")]++;
  const uint64_t ok = results[EmitResult::kOk];
  const uint64_t sampled = results[EmitResult::kSuppressedSampled];
  EXPECT_EQ(ok + sampled, static_cast<uint64_t>(kEmits)) << "other outcomes than ok / sampled";
  EXPECT_GE(ok, 9000u);
  EXPECT_LE(ok, 11000u);
  Drain();
  host_->Stop();
  EXPECT_EQ(delivered_.load(), ok);
  EXPECT_EQ(worker_->Stats().suppressed_sampled, sampled);
  EXPECT_EQ(Totals().suppressed_sampled, sampled);
}

TEST_F(GateTest, SamplingRatesZeroAndOneAreExact) {
  ASSERT_TRUE(host_->UpdateSampling(kWorkerId, 0.0, {}).ok());
  ExpectAll("python.call.stop", 10000, EmitResult::kSuppressedSampled);
  ASSERT_TRUE(host_->UpdateSampling(kWorkerId, 1.0, {}).ok());
  for (int round = 0; round < 10; ++round) {
    ExpectAll("python.call.stop", 1000, EmitResult::kOk);
    Drain();  // keep the default-sized ring from filling
  }
  EXPECT_EQ(delivered_.load(), 10000u);
  EXPECT_EQ(worker_->Stats().suppressed_sampled, 10000u);
}

TEST_F(GateTest, SamplingPatternsMatchCanonicalAndWireNames) {
  struct Case {
    const char* pattern;
    bool tool_sampled;
    bool python_call_sampled;
  };
  const Case cases[] = {
      {"python.*", true, true},
      {"python.tool.*", true, false},
      {"tool.*", true, false},
      {"Python.*", false, false},
      {"tool.execution.start", true, false},
      {"python.call.st*", false, true},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.pattern);
    ASSERT_TRUE(host_->UpdateSampling(kWorkerId, 0.0, {c.pattern}).ok());
    for (const char* tool : {"tool.execution.start", "python.tool.execution.start"}) {
      EXPECT_EQ(Emit(tool),
                c.tool_sampled ? EmitResult::kSuppressedSampled : EmitResult::kOk)
          << tool;
    }
    EXPECT_EQ(Emit("python.call.start"),
              c.python_call_sampled ? EmitResult::kSuppressedSampled : EmitResult::kOk);
    Drain();
  }
}

// ─── filter ──────────────────────────────────────────────────────────────────────────────────

TEST_F(GateTest, DenyWinsOverAllowAndEmptyAllowAllowsEverything) {
  ASSERT_TRUE(host_->UpdateFilter(kWorkerId, {"python.*"}, {"python.call.*"}).ok());
  EXPECT_EQ(Emit("python.call.stop"), EmitResult::kSuppressedFiltered);
  EXPECT_EQ(Emit("python.memory.sampled"), EmitResult::kOk);
  EXPECT_EQ(Emit("tool.execution.stop"), EmitResult::kOk);  // canonical python.tool.execution.stop

  ASSERT_TRUE(host_->UpdateFilter(kWorkerId, {"python.call.stop"}, {"python.call.stop"}).ok());
  EXPECT_EQ(Emit("python.call.stop"), EmitResult::kSuppressedFiltered);

  ASSERT_TRUE(host_->UpdateFilter(kWorkerId, {"tool.*"}, {}).ok());
  EXPECT_EQ(Emit("python.call.start"), EmitResult::kSuppressedFiltered);
  EXPECT_EQ(Emit("tool.execution.start"), EmitResult::kOk);
  EXPECT_EQ(Emit("inference.start"), EmitResult::kSuppressedFiltered);  // not in the allow list

  ASSERT_TRUE(host_->UpdateFilter(kWorkerId, {}, {}).ok());
  for (const char* name : {"python.call.start", "python.call.stop", "tool.execution.start",
                           "python.gc.completed", "tool.result_size"}) {
    EXPECT_EQ(Emit(name), EmitResult::kOk) << name;
  }
  ASSERT_TRUE(host_->UpdateFilter(kWorkerId, {}, {"python.gc.*"}).ok());
  EXPECT_EQ(Emit("python.gc.completed"), EmitResult::kSuppressedFiltered);
  EXPECT_EQ(Emit("python.call.start"), EmitResult::kOk);

  EXPECT_EQ(worker_->Stats().suppressed_filtered, 5u);
  Drain();
  EXPECT_EQ(Totals().suppressed_filtered, 5u);
}

// The gates apply in order and each suppressed event is counted under the first that stops it.
TEST_F(GateTest, SuppressedEventsAreCountedPerReasonInWorkerAndRingStats) {
  ASSERT_TRUE(host_->UpdateFilter(kWorkerId, {}, {"python.gc.*"}).ok());
  ASSERT_TRUE(host_->UpdateSampling(kWorkerId, 0.0, {"tool.*"}).ok());
  ExpectAll("python.gc.completed", 3, EmitResult::kSuppressedFiltered);
  ExpectAll("tool.execution.start", 4, EmitResult::kSuppressedSampled);
  ExpectAll("python.call.start", 5, EmitResult::kOk);
  ASSERT_TRUE(host_->Toggle(kWorkerId, false).ok());
  ExpectAll("python.gc.completed", 6, EmitResult::kSuppressedDisabled);  // disabled comes first
  ExpectAll("tool.execution.start", 1, EmitResult::kSuppressedDisabled);

  const WorkerStats ws = worker_->Stats();
  EXPECT_EQ(ws.suppressed_filtered, 3u);
  EXPECT_EQ(ws.suppressed_sampled, 4u);
  EXPECT_EQ(ws.suppressed_disabled, 7u);
  EXPECT_EQ(ws.published, 5u);
  EXPECT_EQ(ws.emitted, 19u);
  Drain();
  const RingStats t = Totals();
  EXPECT_EQ(t.suppressed_filtered, 3u);
  EXPECT_EQ(t.suppressed_sampled, 4u);
  EXPECT_EQ(t.suppressed_disabled, 7u);
  EXPECT_EQ(t.published, 5u);
  EXPECT_EQ(t.delivered, 5u);
  EXPECT_EQ(t.emitted, 19u);
  ExpectConserved();
}

// ─── updates replace, invalid input changes nothing ──────────────────────────────────────────

TEST_F(GateTest, EachUpdateReplacesThePreviousStateOfItsKind) {
  ASSERT_TRUE(host_->UpdateSampling(kWorkerId, 0.0, {"tool.*"}).ok());
  ASSERT_TRUE(host_->UpdateSampling(kWorkerId, 0.0, {"python.call.*"}).ok());
  EXPECT_EQ(Emit("tool.execution.start"), EmitResult::kOk);
  EXPECT_EQ(Emit("python.call.start"), EmitResult::kSuppressedSampled);

  ASSERT_TRUE(host_->UpdateFilter(kWorkerId, {"python.call.*"}, {"tool.*"}).ok());
  ASSERT_TRUE(host_->UpdateFilter(kWorkerId, {}, {"python.gc.*"}).ok());
  EXPECT_EQ(Emit("tool.execution.start"), EmitResult::kOk);  // old deny and allow both gone
  EXPECT_EQ(Emit("python.memory.sampled"), EmitResult::kOk);
  EXPECT_EQ(Emit("python.gc.completed"), EmitResult::kSuppressedFiltered);

  // A toggle leaves sampling and filter alone, and the other way round.
  ASSERT_TRUE(host_->Toggle(kWorkerId, false).ok());
  ASSERT_TRUE(host_->Toggle(kWorkerId, true).ok());
  Result<ControlState> c = host_->Control(kWorkerId);
  ASSERT_TRUE(c.ok());
  EXPECT_TRUE(c->enabled);
  EXPECT_EQ(c->sampling_rate, 0.0);
  EXPECT_EQ(c->sampling_patterns, std::vector<std::string>{"python.call.*"});
  EXPECT_TRUE(c->allow.empty());
  EXPECT_EQ(c->deny, std::vector<std::string>{"python.gc.*"});
  EXPECT_EQ(Emit("python.call.start"), EmitResult::kSuppressedSampled);
  EXPECT_EQ(Emit("python.gc.completed"), EmitResult::kSuppressedFiltered);

  ASSERT_TRUE(host_->UpdateSampling(kWorkerId, 1.0, {}).ok());
  c = host_->Control(kWorkerId);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->deny, std::vector<std::string>{"python.gc.*"});
  EXPECT_EQ(Emit("python.call.start"), EmitResult::kOk);
}

TEST_F(GateTest, InvalidControlInputIsRejectedAndChangesNothing) {
  ASSERT_TRUE(host_->UpdateSampling(kWorkerId, 0.0, {"tool.*"}).ok());
  ASSERT_TRUE(host_->UpdateFilter(kWorkerId, {"python.*"}, {"python.gc.*"}).ok());
  EXPECT_EQ(Emit("tool.execution.start"), EmitResult::kSuppressedSampled);
  const uint64_t applied = worker_->applied_control_version();
  Result<ControlState> before = host_->Control(kWorkerId);
  ASSERT_TRUE(before.ok());

  const double nan = std::numeric_limits<double>::quiet_NaN();
  for (double rate : {nan, -0.1, 1.5, -std::numeric_limits<double>::infinity(),
                      std::numeric_limits<double>::infinity()}) {
    const Status s = host_->UpdateSampling(kWorkerId, rate, {"python.*"});
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << rate << ": " << s.ToString();
    EXPECT_FALSE(s.message().empty());
  }
  EXPECT_EQ(host_->UpdateSampling(kWorkerId, 0.5, {"python.[call"}).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(host_->UpdateFilter(kWorkerId, {"python.[call"}, {}).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(host_->UpdateFilter(kWorkerId, {}, {"python.[call"}).code(),
            StatusCode::kInvalidArgument);
  const Status unknown = host_->Toggle("no-such-worker", false);
  EXPECT_EQ(unknown.code(), StatusCode::kNotFound);
  EXPECT_NE(unknown.message().find("no-such-worker"), std::string::npos) << unknown.message();
  EXPECT_EQ(host_->UpdateSampling("no-such-worker", 0.5, {}).code(), StatusCode::kNotFound);
  EXPECT_EQ(host_->UpdateFilter("no-such-worker", {}, {}).code(), StatusCode::kNotFound);
  EXPECT_EQ(host_->Control("no-such-worker").status().code(), StatusCode::kNotFound);

  Result<ControlState> after = host_->Control(kWorkerId);
  ASSERT_TRUE(after.ok());
  EXPECT_TRUE(*after == *before);
  // Nothing reached the worker either.
  EXPECT_EQ(Emit("tool.execution.start"), EmitResult::kSuppressedSampled);
  EXPECT_EQ(Emit("python.gc.completed"), EmitResult::kSuppressedFiltered);
  EXPECT_EQ(Emit("python.call.start"), EmitResult::kOk);
  EXPECT_EQ(worker_->applied_control_version(), applied);
}

// ─── control survives a restart ──────────────────────────────────────────────────────────────

TEST_F(GateTest, ControlStateIsReappliedWhenAWorkerWithTheSameIdReattaches) {
  ASSERT_EQ(Emit("python.call.stop"), EmitResult::kOk);
  ASSERT_TRUE(host_->Toggle(kWorkerId, false).ok());
  ASSERT_TRUE(host_->UpdateFilter(kWorkerId, {}, {"python.gc.*"}).ok());
  EXPECT_EQ(Emit("python.call.stop"), EmitResult::kSuppressedDisabled);
  worker_.reset();
  Drain();

  StartWorker(kWorkerId);
  EXPECT_EQ(Emit("python.call.stop"), EmitResult::kSuppressedDisabled);
  ASSERT_TRUE(host_->Toggle(kWorkerId, true).ok());
  EXPECT_EQ(Emit("python.call.stop"), EmitResult::kOk);
  EXPECT_EQ(Emit("python.gc.completed"), EmitResult::kSuppressedFiltered);
}

// A new worker id must not inherit the control state of whoever held its registry slot before.
TEST_F(GateTest, ANewWorkerIdStartsWithDefaultControlState) {
  ASSERT_EQ(Emit("python.call.stop"), EmitResult::kOk);
  ASSERT_TRUE(host_->Toggle(kWorkerId, false).ok());
  ASSERT_TRUE(host_->UpdateSampling(kWorkerId, 0.0, {}).ok());
  EXPECT_EQ(Emit("python.call.stop"), EmitResult::kSuppressedDisabled);
  worker_.reset();
  Drain();

  StartWorker("another-worker");
  EXPECT_EQ(Emit("python.call.stop"), EmitResult::kOk);
  EXPECT_EQ(Emit("tool.execution.start"), EmitResult::kOk);
  Result<ControlState> c = host_->Control("another-worker");
  ASSERT_TRUE(c.ok());
  EXPECT_TRUE(*c == ControlState());
}

}  // namespace
}  // namespace pitlane
