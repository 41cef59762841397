// The emit hot path performs zero heap allocations: every global operator new / delete is
// replaced by a counting version, and only allocations made on the emitting thread while a
// thread_local flag is set are counted.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <new>
#include <string_view>

#include "pitlane/correlation.h"
#include "pitlane/host.h"
#include "pitlane/worker.h"
#include "testing.h"

namespace {

thread_local bool t_counting = false;
thread_local uint64_t t_allocations = 0;

void* Allocate(std::size_t n) {
  if (t_counting) ++t_allocations;
  if (n == 0) n = 1;
  void* p = std::malloc(n);
  if (p == nullptr) throw std::bad_alloc();
  return p;
}

void* AllocateAligned(std::size_t n, std::align_val_t al) {
  if (t_counting) ++t_allocations;
  const std::size_t a = static_cast<std::size_t>(al);
  std::size_t size = (n + a - 1) / a * a;
  if (size == 0) size = a;
  void* p = std::aligned_alloc(a, size);
  if (p == nullptr) throw std::bad_alloc();
  return p;
}

}  // namespace

// ─── every replaceable allocation function ───────────────────────────────────────────────────
void* operator new(std::size_t n) { return Allocate(n); }
void* operator new[](std::size_t n) { return Allocate(n); }
void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
  try {
    return Allocate(n);
  } catch (...) {
    return nullptr;
  }
}
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept {
  try {
    return Allocate(n);
  } catch (...) {
    return nullptr;
  }
}
void* operator new(std::size_t n, std::align_val_t al) { return AllocateAligned(n, al); }
void* operator new[](std::size_t n, std::align_val_t al) { return AllocateAligned(n, al); }
void* operator new(std::size_t n, std::align_val_t al, const std::nothrow_t&) noexcept {
  try {
    return AllocateAligned(n, al);
  } catch (...) {
    return nullptr;
  }
}
void* operator new[](std::size_t n, std::align_val_t al, const std::nothrow_t&) noexcept {
  try {
    return AllocateAligned(n, al);
  } catch (...) {
    return nullptr;
  }
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t, const std::nothrow_t&) noexcept {
  std::free(p);
}

namespace pitlane {

static void PrintTo(EmitResult r, std::ostream* os) { *os << EmitResultName(r); }

namespace {

using namespace std::chrono_literals;

// Counts the allocations the calling thread makes while alive.
class CountAllocations {
 public:
  CountAllocations() : start_(t_allocations) { t_counting = true; }
  ~CountAllocations() { t_counting = false; }
  uint64_t count() const { return t_allocations - start_; }

 private:
  uint64_t start_;
};

TEST(AllocTest, CountingOperatorNewSeesAllocations) {
  uint64_t n = 0;
  {
    CountAllocations c;
    auto* p = new int(1);
    delete p;
    auto* a = new (std::align_val_t{64}) int[4];
    ::operator delete[](a, std::align_val_t{64});
    std::string s(100, 'x');
    n = c.count();
  }
  EXPECT_GE(n, 3u);
}

// The typical event: python.call.stop, three measurements and three metadata entries through
// pre-resolved handles, a 27-byte correlation id.
class TypicalEvent {
 public:
  explicit TypicalEvent(const Worker& w)
      : event_(w.Event("python.call.stop")),
        duration_(w.Measure("duration")),
        response_size_(w.Measure("response_size")),
        cpu_percent_(w.Measure("cpu_percent")),
        command_(w.Meta("command")),
        worker_id_(w.Meta("worker_id")),
        result_(w.Meta("result")) {}

  EmitResult Emit(Worker& w, int64_t i) {
    const Measurement m[] = {{duration_, i}, {response_size_, int64_t{512}},
                             {cpu_percent_, 3.5}};
    const Metadata md[] = {{command_, "predict"}, {worker_id_, "alloc-worker"}, {result_, "ok"}};
    return w.Emit(event_, m, md, kCorrelationId);
  }

  static constexpr std::string_view kCorrelationId = "pl-0123456789abcdef01234567";

 private:
  EventHandle event_;
  MeasurementKey duration_, response_size_, cpu_percent_;
  MetadataKey command_, worker_id_, result_;
};

struct Fixture {
  testing::ScopedNamespace ns;
  std::unique_ptr<Host> host;
  std::unique_ptr<Worker> worker;
  std::atomic<uint64_t> delivered{0};

  void Start(uint64_t ring_bytes) {
    HostOptions ho;
    ho.ns = ns.name();
    ho.log = [](std::string_view) {};
    Result<std::unique_ptr<Host>> h = Host::Start(ho);
    ASSERT_TRUE(h.ok()) << h.status().ToString();
    host = std::move(h).value();
    ASSERT_TRUE(host->Attach("count", "snakepit.python.call.stop",
                             [this](const EventView&) { delivered.fetch_add(1); })
                    .ok());
    WorkerOptions wo;
    wo.ns = ns.name();
    wo.worker_id = "alloc-worker";
    wo.attach_wait = 5s;
    wo.ring_bytes = ring_bytes;
    Result<std::unique_ptr<Worker>> w = Worker::Start(wo);
    ASSERT_TRUE(w.ok()) << w.status().ToString();
    worker = std::move(w).value();
    ASSERT_TRUE(worker->attached());
    // Let the host discover the worker (it writes the control block then) before any warm-up:
    // the first emit after a control update takes the documented slow path, which may allocate.
    const auto deadline = std::chrono::steady_clock::now() + 5s;
    bool known = false;
    while (!known && std::chrono::steady_clock::now() < deadline) {
      host->PollOnce();
      for (const WorkerInfo& i : host->Workers()) known |= i.id == "alloc-worker" && i.alive;
    }
    ASSERT_TRUE(known) << "host never discovered the worker";
  }

  void Finish() {
    worker.reset();
    ASSERT_TRUE(host->DrainAll(10s));
    for (const RingStats& r : host->Rings()) EXPECT_TRUE(r.Conserved()) << r.segment;
  }
};

constexpr int kEmits = 10000;

TEST(AllocTest, TenThousandTypicalEmitsAllocateNothing) {
  Fixture f;
  f.Start(1 << 22);  // room for every event: the host does not poll during the loop
  TypicalEvent ev(*f.worker);
  for (int i = 0; i < 10; ++i) ASSERT_EQ(ev.Emit(*f.worker, i), EmitResult::kOk);  // warm-up

  uint64_t ok = 0, allocations = 0;
  {
    CountAllocations count;
    for (int i = 0; i < kEmits; ++i) ok += ev.Emit(*f.worker, i) == EmitResult::kOk;
    allocations = count.count();
  }
  EXPECT_EQ(allocations, 0u);
  EXPECT_EQ(ok, static_cast<uint64_t>(kEmits));
  ASSERT_TRUE(f.host->DrainAll(10s));
  EXPECT_EQ(f.delivered.load(), static_cast<uint64_t>(kEmits + 10));
  f.Finish();
}

TEST(AllocTest, EmitsWithAHostPollingOnItsOwnThreadAllocateNothing) {
  Fixture f;
  f.Start(1 << 20);
  f.host->RunInBackground();
  TypicalEvent ev(*f.worker);
  for (int i = 0; i < 10; ++i) ASSERT_EQ(ev.Emit(*f.worker, i), EmitResult::kOk);

  uint64_t ok = 0, dropped = 0, allocations = 0;
  {
    CountAllocations count;
    for (int i = 0; i < kEmits; ++i) {
      const EmitResult r = ev.Emit(*f.worker, i);
      ok += r == EmitResult::kOk;
      dropped += r == EmitResult::kDroppedFull;
    }
    allocations = count.count();
  }
  EXPECT_EQ(allocations, 0u);
  EXPECT_EQ(ok + dropped, static_cast<uint64_t>(kEmits));
  ASSERT_TRUE(f.host->DrainAll(10s));
  EXPECT_EQ(f.delivered.load(), ok + 10);
  f.Finish();
}

// The paths that do not publish are allocation-free too: scoped correlation ids, suppressed
// events (after the first emit that applied the control update) and a full ring.
TEST(AllocTest, SuppressedAndDroppedEmitsAllocateNothing) {
  Fixture f;
  f.Start(4096);
  TypicalEvent ev(*f.worker);
  ASSERT_EQ(ev.Emit(*f.worker, 0), EmitResult::kOk);

  // Full ring: the host never polls here.
  uint64_t full = 0, allocations = 0;
  {
    CountAllocations count;
    for (int i = 0; i < kEmits; ++i) full += ev.Emit(*f.worker, i) == EmitResult::kDroppedFull;
    allocations = count.count();
  }
  EXPECT_EQ(allocations, 0u);
  EXPECT_GT(full, static_cast<uint64_t>(kEmits) - 20);
  ASSERT_TRUE(f.host->DrainAll(10s));

  // Scoped correlation id instead of an explicit one.
  {
    CorrelationScope scope("pl-scoped-0123456789abcdef0");
    const EventHandle e = f.worker->Event("python.call.start");
    const MeasurementKey st = f.worker->Measure("system_time");
    ASSERT_EQ(f.worker->Emit(e, {{st, 1}}), EmitResult::kOk);
    uint64_t ok = 0;
    {
      CountAllocations count;
      for (int i = 0; i < 10; ++i) ok += f.worker->Emit(e, {{st, i}}) == EmitResult::kOk;
      allocations = count.count();
    }
    EXPECT_EQ(allocations, 0u);
    EXPECT_EQ(ok, 10u);
  }
  ASSERT_TRUE(f.host->DrainAll(10s));

  // Disabled.
  ASSERT_TRUE(f.host->Toggle("alloc-worker", false).ok());
  ASSERT_EQ(ev.Emit(*f.worker, 0), EmitResult::kSuppressedDisabled);  // applies the update
  uint64_t suppressed = 0;
  {
    CountAllocations count;
    for (int i = 0; i < kEmits; ++i) {
      suppressed += ev.Emit(*f.worker, i) == EmitResult::kSuppressedDisabled;
    }
    allocations = count.count();
  }
  EXPECT_EQ(allocations, 0u);
  EXPECT_EQ(suppressed, static_cast<uint64_t>(kEmits));
  f.Finish();
}

}  // namespace
}  // namespace pitlane
