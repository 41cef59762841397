// Fault tests (issue 6 "Fault tests"): permissions, stale or half-initialised segments at host
// start, a SIGKILL loop, ring-full conservation under a slow host.
//
// Like multiprocess_test.cc: children are fork()ed while the test process has no other thread
// (the host is polled from the test thread, the test process never creates a Worker), a child
// leaves with _exit() and never returns into gtest, and every child is SIGKILLed and reaped when
// its test ends.
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "pitlane/host.h"
#include "pitlane/registry.h"
#include "pitlane/shm.h"
#include "pitlane/shm_layout.h"
#include "pitlane/worker.h"
#include "testing.h"

namespace pitlane {
namespace {

using testing::Children;
using testing::PollUntil;
using testing::SegmentExists;
using testing::SegmentsOf;

using std::chrono::milliseconds;
using std::chrono::seconds;
using Clock = std::chrono::steady_clock;

constexpr char kStopEvent[] = "snakepit.python.call.stop";

std::string Joined(const std::vector<std::string>& lines) {
  std::string s;
  for (const std::string& l : lines) s += "  " + l + "\n";
  return s;
}

bool AnyLineHas(const std::vector<std::string>& lines, std::initializer_list<std::string> parts) {
  for (const std::string& l : lines) {
    bool all = true;
    for (const std::string& p : parts) all &= l.find(p) != std::string::npos;
    if (all) return true;
  }
  return false;
}

// Child body: a Worker with `worker_id` emits python.call.stop {sequence_number: n}, where n is
// the number of its earlier emits that returned kOk (so what reaches the host must be exactly
// 0, 1, 2, ... with no gap). `count` < 0: forever. `ready_fd` >= 0: after `count` emits, write
// one byte and pause().
struct EmitterOptions {
  std::string ns;
  std::string worker_id;
  int64_t count = -1;
  uint64_t ring_bytes = 0;
  bool graceful = false;
  int ready_fd = -1;
  bool seq_counts_ok = true;  // false: sequence_number = the emit counter
  int64_t pause_every = 0;    // > 0: sleep 1 ms after every this many emits
};

int RunEmitter(const EmitterOptions& o) {
  WorkerOptions wo;
  wo.ns = o.ns;
  wo.worker_id = o.worker_id;
  wo.ring_bytes = o.ring_bytes;
  wo.attach_wait = seconds(5);
  Result<std::unique_ptr<Worker>> started = Worker::Start(wo);
  if (!started.ok()) return 2;
  std::unique_ptr<Worker> w = std::move(started).value();
  if (!w->attached()) return 3;
  const EventHandle ev = w->Event("python.call.stop");
  const MeasurementKey seq = w->Measure("sequence_number");
  int64_t ok = 0;
  for (int64_t i = 0; o.count < 0 || i < o.count; ++i) {
    const int64_t n = o.seq_counts_ok ? ok : i;
    if (w->Emit(ev, {{seq, n}}) == EmitResult::kOk) ++ok;
    if (o.pause_every > 0 && (i + 1) % o.pause_every == 0) {
      std::this_thread::sleep_for(milliseconds(1));
    }
  }
  if (o.ready_fd >= 0) {
    const char b = 1;
    if (::write(o.ready_fd, &b, 1) != 1) return 4;
    for (;;) ::pause();
  }
  if (!o.graceful) ::_exit(0);
  w.reset();
  return 0;
}

// Per worker pid: delivered sequence numbers, in delivery order.
struct PidCollector {
  std::map<uint32_t, std::vector<int64_t>> seqs;
  uint64_t missing_sequence = 0;

  void AttachTo(Host& host) {
    ASSERT_TRUE(host.Attach("seq", kStopEvent, [this](const EventView& v) {
                      const Value* s = v.measurement("sequence_number");
                      if (s == nullptr || s->kind != Value::Kind::kInt) {
                        ++missing_sequence;
                        return;
                      }
                      seqs[v.worker_pid].push_back(s->i);
                    }).ok());
  }
  size_t Delivered(uint32_t pid) const {
    auto it = seqs.find(pid);
    return it == seqs.end() ? 0 : it->second.size();
  }
};

std::unique_ptr<Host> StartHost(const std::string& ns, std::vector<std::string>* log = nullptr) {
  HostOptions o;
  o.ns = ns;
  if (log != nullptr) o.log = [log](std::string_view l) { log->emplace_back(l); };
  Result<std::unique_ptr<Host>> h = Host::Start(o);
  EXPECT_TRUE(h.ok()) << h.status().ToString();
  return h.ok() ? std::move(h).value() : nullptr;
}

// A worker child with `worker_id` emits `events` events and exits gracefully; the host
// delivers them all.
void ExpectWorkerDelivers(Host& host, const std::string& ns, const std::string& worker_id,
                          int64_t events) {
  PidCollector c;
  c.AttachTo(host);
  Children children;
  const pid_t pid = children.Spawn([&] {
    EmitterOptions o;
    o.ns = ns;
    o.worker_id = worker_id;
    o.count = events;
    o.graceful = true;
    o.ring_bytes = 1 << 20;
    return RunEmitter(o);
  });
  int status = -1;
  ASSERT_TRUE(PollUntil(host, [&] { return children.TryReap(pid, &status); }, seconds(20)));
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "child status " << status;
  ASSERT_TRUE(host.DrainAll(seconds(10)));
  host.Detach("seq");
  EXPECT_EQ(c.missing_sequence, 0u);
  ASSERT_EQ(c.Delivered(static_cast<uint32_t>(pid)), static_cast<size_t>(events));
  const std::vector<int64_t>& s = c.seqs[static_cast<uint32_t>(pid)];
  for (int64_t i = 0; i < events; ++i) ASSERT_EQ(s[i], i);
}

// ─── 1. Permissions ─────────────────────────────────────────────────────────────────────────

TEST(FaultTest, SegmentsAre0600AndAnotherUserGetsANamedError) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to drop to uid 65534";
  testing::ScopedNamespace ns;
  const mode_t old_umask = ::umask(0);
  struct RestoreUmask {
    mode_t m;
    ~RestoreUmask() { ::umask(m); }
  } restore{old_umask};

  std::unique_ptr<Host> host = StartHost(ns.name());
  ASSERT_NE(host, nullptr);

  // A worker child creates its ring (with umask 0 inherited) and waits.
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  Children children;
  children.Spawn([&] {
    ::close(ready[0]);
    EmitterOptions o;
    o.ns = ns.name();
    o.worker_id = "perm";
    o.count = 10;
    o.ready_fd = ready[1];
    return RunEmitter(o);
  });
  ::close(ready[1]);
  char b = 0;
  ASSERT_EQ(::read(ready[0], &b, 1), 1) << "the worker child never got ready";
  ::close(ready[0]);
  ASSERT_TRUE(PollUntil(*host, [&] { return !host->Rings().empty(); }, seconds(10)));
  const std::string ring = host->Rings()[0].segment;
  const std::string registry = shm::RegistryName(ns.name());

  for (const std::string& name : {registry, ring}) {
    struct stat st {};
    ASSERT_EQ(::stat(("/dev/shm" + name).c_str(), &st), 0) << name;
    EXPECT_EQ(st.st_mode & 07777, 0600u) << name << " mode " << std::oct << (st.st_mode & 07777);
    EXPECT_EQ(st.st_uid, 0u) << name;
  }

  // An unprivileged process opens both.
  int out[2];
  ASSERT_EQ(::pipe(out), 0);
  const pid_t opener = children.Spawn([&] {
    ::close(out[0]);
    std::string msg;
    if (::setgroups(0, nullptr) != 0 || ::setgid(65534) != 0 || ::setuid(65534) != 0) {
      msg = "could not drop privileges";
    } else {
      Result<shm::Segment> seg = shm::Segment::Open(ring, 0);
      msg += (seg.ok() ? std::string("OK") : seg.status().ToString()) + "\n";
      Result<shm::Segment> reg = shm::OpenRegistry(ns.name());
      msg += (reg.ok() ? std::string("OK") : reg.status().ToString()) + "\n";
    }
    (void)!::write(out[1], msg.data(), msg.size());
    ::close(out[1]);
    return 0;
  });
  ::close(out[1]);
  std::string got;
  char buf[512];
  for (ssize_t n; (n = ::read(out[0], buf, sizeof buf)) > 0;) got.append(buf, static_cast<size_t>(n));
  ::close(out[0]);
  const int status = children.Reap(opener);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;

  const size_t nl = got.find('\n');
  ASSERT_NE(nl, std::string::npos) << got;
  const std::string ring_err = got.substr(0, nl);
  const std::string reg_err = got.substr(nl + 1);
  for (const auto& [err, name] :
       {std::pair{ring_err, ring}, std::pair{reg_err, registry}}) {
    SCOPED_TRACE(err);
    EXPECT_NE(err.rfind("OK", 0), 0u) << "uid 65534 opened " << name;
    EXPECT_NE(err.find("PERMISSION_DENIED"), std::string::npos);
    EXPECT_NE(err.find(name), std::string::npos) << "does not name the segment";
    EXPECT_TRUE(err.find("uid 0") != std::string::npos || err.find("root") != std::string::npos)
        << "does not name the owner";
    EXPECT_NE(err.find("600"), std::string::npos) << "does not name the mode";
  }
}

// ─── 2. Bad segments at host start ──────────────────────────────────────────────────────────

// Plants a registry segment of `bytes` bytes filled by `fill`.
void PlantSegment(const std::string& name, size_t bytes, const std::function<void(uint8_t*)>& fill) {
  const int fd = ::shm_open(name.c_str(), O_RDWR | O_CREAT | O_EXCL, 0600);
  ASSERT_GE(fd, 0) << name << ": " << std::strerror(errno);
  if (bytes > 0) {
    ASSERT_EQ(::ftruncate(fd, static_cast<off_t>(bytes)), 0);
    void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    ASSERT_NE(p, MAP_FAILED);
    fill(static_cast<uint8_t*>(p));
    ::munmap(p, bytes);
  }
  ::close(fd);
}

void FillRandom(uint8_t* p, size_t bytes, uint32_t seed) {
  std::mt19937_64 rng(seed);
  for (size_t i = 0; i + 8 <= bytes; i += 8) {
    const uint64_t v = rng();
    std::memcpy(p + i, &v, 8);
  }
}

// Host::Start over whatever is planted in `ns`: succeeds quickly, logs a line with all of
// `parts`, and a worker can then attach and deliver.
void ExpectStartCopes(const std::string& ns, std::initializer_list<std::string> parts) {
  std::vector<std::string> log;
  const auto t0 = Clock::now();
  std::unique_ptr<Host> host = StartHost(ns, &log);
  const auto took = Clock::now() - t0;
  ASSERT_NE(host, nullptr);
  EXPECT_LT(took, seconds(5)) << std::chrono::duration_cast<milliseconds>(took).count() << " ms";
  EXPECT_TRUE(AnyLineHas(log, parts)) << "log:\n" << Joined(log);
  ExpectWorkerDelivers(*host, ns, "bad-seg", 100);
}

TEST(FaultTest, HostStartRemovesOrRefusesBadSegments) {
  const size_t kBytes = shm::kRegistryBytes;
  {
    SCOPED_TRACE("garbage registry");
    testing::ScopedNamespace ns;
    const std::string name = shm::RegistryName(ns.name());
    PlantSegment(name, kBytes, [&](uint8_t* p) { FillRandom(p, kBytes, 42); });
    ExpectStartCopes(ns.name(), {"removing registry", name, "magic"});
  }
  {
    SCOPED_TRACE("zero-size registry");
    testing::ScopedNamespace ns;
    const std::string name = shm::RegistryName(ns.name());
    PlantSegment(name, 0, nullptr);
    ExpectStartCopes(ns.name(), {"removing registry", name, "0 bytes"});
  }
  {
    SCOPED_TRACE("registry of layout version 99");
    testing::ScopedNamespace ns;
    const std::string name = shm::RegistryName(ns.name());
    PlantSegment(name, kBytes, [&](uint8_t* p) {
      auto* h = reinterpret_cast<shm::RegistryHeader*>(p);
      h->magic = shm::kRegistryMagic;
      h->layout_version = 99;
      h->header_bytes = sizeof(shm::RegistryHeader);
      h->max_workers = shm::kMaxWorkers;
      h->max_rings = shm::kMaxRings;
      h->worker_slot_bytes = shm::kWorkerSlotBytes;
      h->ring_slot_bytes = sizeof(shm::RingSlot);
    });
    ExpectStartCopes(ns.name(), {"removing registry", name, "99",
                                 std::to_string(shm::kLayoutVersion)});
    // The worker side: a clear error naming both versions.
  }
  {
    SCOPED_TRACE("garbage ring of a dead pid");
    testing::ScopedNamespace ns;
    const pid_t dead = ::fork();
    if (dead == 0) ::_exit(0);
    ASSERT_GT(dead, 0);
    ASSERT_EQ(::waitpid(dead, nullptr, 0), dead);
    const std::string ring = shm::RingName(ns.name(), dead, 0);
    const size_t bytes = shm::RingSegmentBytes(64 << 10);
    PlantSegment(ring, bytes, [&](uint8_t* p) { FillRandom(p, bytes, 7); });
    ASSERT_TRUE(SegmentExists(ring));
    ExpectStartCopes(ns.name(), {"removed stale segment", ring});
    EXPECT_FALSE(SegmentExists(ring));
  }
}

TEST(FaultTest, WorkerSeesBothVersionsOfAMismatchedRegistry) {
  testing::ScopedNamespace ns;
  const std::string name = shm::RegistryName(ns.name());
  PlantSegment(name, shm::kRegistryBytes, [](uint8_t* p) {
    auto* h = reinterpret_cast<shm::RegistryHeader*>(p);
    h->magic = shm::kRegistryMagic;
    h->layout_version = 99;
  });
  Result<shm::Segment> reg = shm::OpenRegistry(ns.name());
  ASSERT_FALSE(reg.ok());
  EXPECT_EQ(reg.status().code(), StatusCode::kFailedPrecondition) << reg.status().ToString();
  EXPECT_NE(reg.status().message().find("99"), std::string::npos) << reg.status().ToString();
  EXPECT_NE(reg.status().message().find("version " + std::to_string(shm::kLayoutVersion)),
            std::string::npos)
      << reg.status().ToString();
  EXPECT_NE(reg.status().message().find(name), std::string::npos) << reg.status().ToString();
}

// ─── 3. Kill loop ───────────────────────────────────────────────────────────────────────────

TEST(FaultTest, KillLoopLosesNothingPublished) {
  int iterations = 200;
  if (const char* e = std::getenv("PITLANE_KILL_LOOP"); e != nullptr && *e != '\0') {
    iterations = std::atoi(e);
  }
  testing::ScopedNamespace ns;
  PidCollector c;  // outlives the host, whose handlers point into it
  std::unique_ptr<Host> host = StartHost(ns.name());
  ASSERT_NE(host, nullptr);
  c.AttachTo(*host);
  const std::string id = "killed";
  const auto t0 = Clock::now();

  Children children;
  for (int i = 0; i < iterations; ++i) {
    SCOPED_TRACE("iteration " + std::to_string(i));
    const uint64_t terminated_before = host->Stats().workers_terminated;
    const pid_t pid = children.Spawn([&] {
      EmitterOptions o;
      o.ns = ns.name();
      o.worker_id = id;
      o.ring_bytes = 64 << 10;
      return RunEmitter(o);  // forever
    });
    const uint32_t upid = static_cast<uint32_t>(pid);
    const size_t target = static_cast<size_t>(i % 50 + 1) * 20;
    int early = 0;
    ASSERT_TRUE(PollUntil(
        *host, [&] { return c.Delivered(upid) >= target || children.TryReap(pid, &early); },
        seconds(20)))
        << "delivered only " << c.Delivered(upid);
    ASSERT_GE(c.Delivered(upid), target) << "child exited early, status " << early;
    ASSERT_EQ(::kill(pid, SIGKILL), 0);
    const int status = children.Reap(pid);
    ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << status;
    ASSERT_TRUE(PollUntil(
        *host, [&] { return host->Stats().workers_terminated > terminated_before; }, seconds(10)))
        << "the host never noticed the killed worker";

    const std::vector<int64_t>& s = c.seqs[upid];
    for (size_t k = 0; k < s.size(); ++k) {
      ASSERT_EQ(s[k], static_cast<int64_t>(k)) << "gap, duplicate or reorder at " << k;
    }
    std::vector<RingStats> rings;
    for (RingStats& r : host->Rings()) {
      if (r.pid == upid) rings.push_back(std::move(r));
    }
    ASSERT_EQ(rings.size(), 1u);
    const RingStats& r = rings[0];
    EXPECT_EQ(r.worker_id, id);
    EXPECT_TRUE(r.reclaimed) << r.segment;
    EXPECT_FALSE(r.quarantined) << r.segment << ": " << r.quarantine_reason;
    EXPECT_EQ(r.rejected_total(), 0u) << r.segment;
    EXPECT_EQ(r.delivered, s.size()) << r.segment;
    EXPECT_TRUE(r.Conserved()) << r.segment << ": emitted " << r.emitted << " published "
                               << r.published << " dropped " << r.dropped() << " delivered "
                               << r.delivered << " rejected " << r.rejected_total();
    EXPECT_LE(r.dropped_in_flight, 1u) << r.segment;
    EXPECT_FALSE(SegmentExists(r.segment)) << r.segment << " still in /dev/shm";
    if (::testing::Test::HasFailure()) break;
  }
  ASSERT_TRUE(host->DrainAll(seconds(5)));
  EXPECT_EQ(c.missing_sequence, 0u);
  EXPECT_EQ(host->Stats().workers_terminated, static_cast<uint64_t>(iterations));
  const std::vector<std::string> left = SegmentsOf(ns.name());
  for (const std::string& e : left) {
    EXPECT_EQ(e.find(".ring."), std::string::npos) << e << " left in /dev/shm";
  }
  EXPECT_EQ(left.size(), 1u) << Joined(left);
  std::printf("[ kill loop ] %d iterations in %lld ms\n", iterations,
              static_cast<long long>(
                  std::chrono::duration_cast<milliseconds>(Clock::now() - t0).count()));
}

// ─── 4. Ring-full conservation under a slow host ───────────────────────────────────────────

TEST(FaultTest, RingFullConservationUnderASlowHost) {
  constexpr int kWorkers = 8;
  constexpr int64_t kEvents = 1'000'000;
  testing::ScopedNamespace ns;
  PidCollector c;
  std::unique_ptr<Host> host = StartHost(ns.name());
  ASSERT_NE(host, nullptr);
  c.AttachTo(*host);

  Children children;
  std::vector<pid_t> pids;
  for (int i = 0; i < kWorkers; ++i) {
    pids.push_back(children.Spawn([&, i] {
      EmitterOptions o;
      o.ns = ns.name();
      o.worker_id = "slow-" + std::to_string(i);
      o.count = kEvents;
      o.ring_bytes = 64 << 10;
      o.seq_counts_ok = false;
      return RunEmitter(o);
    }));
  }
  std::vector<bool> exited(kWorkers, false);
  const auto deadline = Clock::now() + seconds(40);
  for (;;) {
    bool all = true;
    for (int i = 0; i < kWorkers; ++i) {
      int status = 0;
      if (!exited[i] && children.TryReap(pids[i], &status)) {
        exited[i] = true;
        EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "child " << i << " status " << status;
      }
      all &= exited[i];
    }
    if (all) break;
    ASSERT_LT(Clock::now(), deadline) << "workers did not finish";
    host->PollOnce();
    std::this_thread::sleep_for(milliseconds(1));
  }
  ASSERT_TRUE(host->DrainAll(seconds(20)));
  EXPECT_EQ(c.missing_sequence, 0u);

  for (int i = 0; i < kWorkers; ++i) {
    const std::string id = "slow-" + std::to_string(i);
    SCOPED_TRACE(id);
    RingStats sum;
    int n = 0;
    for (const RingStats& r : host->Rings()) {
      if (r.worker_id != id) continue;
      ++n;
      EXPECT_TRUE(r.reclaimed) << r.segment;
      EXPECT_TRUE(r.Conserved()) << r.segment;
      sum.emitted += r.emitted;
      sum.published += r.published;
      sum.dropped_full += r.dropped_full;
      sum.dropped_too_large += r.dropped_too_large;
      sum.dropped_in_flight += r.dropped_in_flight;
      sum.suppressed_disabled += r.suppressed_disabled;
      sum.suppressed_sampled += r.suppressed_sampled;
      sum.suppressed_filtered += r.suppressed_filtered;
      sum.delivered += r.delivered;
      for (size_t k = 0; k < shm::kRejectReasonCount; ++k) sum.rejected[k] += r.rejected[k];
    }
    ASSERT_GE(n, 1);
    EXPECT_EQ(sum.emitted, static_cast<uint64_t>(kEvents));
    EXPECT_TRUE(sum.Conserved()) << "emitted " << sum.emitted << " published " << sum.published
                                 << " dropped " << sum.dropped() << " suppressed "
                                 << sum.suppressed() << " delivered " << sum.delivered
                                 << " rejected " << sum.rejected_total();
    EXPECT_EQ(sum.emitted, sum.dropped() + sum.published);
    EXPECT_EQ(sum.rejected_total(), 0u);
    EXPECT_GT(sum.dropped_full, 0u);
    EXPECT_EQ(sum.dropped_in_flight, 0u);
    EXPECT_EQ(sum.delivered, c.Delivered(static_cast<uint32_t>(pids[i])));
    // Delivered in order, no duplicates (sequence_number is the emit counter here).
    const std::vector<int64_t>& s = c.seqs[static_cast<uint32_t>(pids[i])];
    for (size_t k = 1; k < s.size(); ++k) ASSERT_GT(s[k], s[k - 1]) << "at " << k;
  }
}

// ─── 5. The host process killed while workers write, then restarted ─────────────────────────

// Child body: a host for `ns` polling on its own thread; writes one byte to `ready_fd` once it
// runs, then waits to be killed.
int RunHostChild(const std::string& ns, int ready_fd) {
  HostOptions o;
  o.ns = ns;
  o.log = [](std::string_view) {};
  Result<std::unique_ptr<Host>> h = Host::Start(o);
  if (!h.ok()) return 2;
  (*h)->RunInBackground();
  const char b = 1;
  if (::write(ready_fd, &b, 1) != 1) return 3;
  for (;;) ::pause();
}

pid_t SpawnHostAndWait(Children& children, const std::string& ns) {
  int fds[2];
  if (::pipe(fds) != 0) return -1;
  const pid_t pid = children.Spawn([&] { return RunHostChild(ns, fds[1]); });
  ::close(fds[1]);
  char b = 0;
  const bool ready = ::read(fds[0], &b, 1) == 1;
  ::close(fds[0]);
  return ready ? pid : -1;
}

TEST(FaultTest, HostKilledWhileWorkersWriteThenRestartedKeepsTheBooksBalanced) {
  constexpr int kWorkers = 3;
  constexpr int64_t kEvents = 300'000;
  testing::ScopedNamespace ns;
  Children children;
  const pid_t first_host = SpawnHostAndWait(children, ns.name());
  ASSERT_GT(first_host, 0) << "the first host did not start";
  std::vector<pid_t> workers;
  for (int i = 0; i < kWorkers; ++i) {
    workers.push_back(children.Spawn([&, i] {
      EmitterOptions o;
      o.ns = ns.name();
      o.worker_id = "writer-" + std::to_string(i);
      o.count = kEvents;
      o.ring_bytes = 64 << 10;
      o.seq_counts_ok = false;
      o.pause_every = 1000;  // ~300 ms of writing: the host dies and returns meanwhile
      o.graceful = true;
      return RunEmitter(o);
    }));
  }
  std::this_thread::sleep_for(milliseconds(60));
  ASSERT_EQ(::kill(first_host, SIGKILL), 0);
  const int host_status = children.Reap(first_host);
  ASSERT_TRUE(WIFSIGNALED(host_status)) << host_status;
  // No host: the workers go on (never blocking); their rings fill and drops are counted.
  std::this_thread::sleep_for(milliseconds(120));
  for (pid_t w : workers) {
    int status = 0;
    EXPECT_FALSE(children.TryReap(w, &status)) << "a worker ended while the host was down";
  }

  PidCollector c;
  std::unique_ptr<Host> host = StartHost(ns.name());  // adopts the namespace and its rings
  ASSERT_NE(host, nullptr);
  c.AttachTo(*host);
  std::vector<bool> exited(kWorkers, false);
  ASSERT_TRUE(PollUntil(
      *host,
      [&] {
        bool all = true;
        for (int i = 0; i < kWorkers; ++i) {
          int status = 0;
          if (!exited[i] && children.TryReap(workers[i], &status)) {
            exited[i] = true;
            EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
                << "worker " << i << " status " << status;
          }
          all &= exited[i];
        }
        return all;
      },
      seconds(60)));
  ASSERT_TRUE(host->DrainAll(seconds(10)));
  for (int i = 0; i < kWorkers; ++i) {
    const std::string id = "writer-" + std::to_string(i);
    SCOPED_TRACE(id);
    RingStats sum;
    for (const RingStats& r : host->Rings()) {
      if (r.worker_id != id) continue;
      EXPECT_TRUE(r.reclaimed) << r.segment;
      EXPECT_FALSE(r.quarantined) << r.quarantine_reason;
      sum.emitted += r.emitted;
      sum.published += r.published;
      sum.dropped_full += r.dropped_full;
      sum.dropped_too_large += r.dropped_too_large;
      sum.dropped_in_flight += r.dropped_in_flight;
      sum.delivered += r.delivered;
      for (size_t k = 0; k < shm::kRejectReasonCount; ++k) sum.rejected[k] += r.rejected[k];
    }
    // Over the whole run, across both hosts: nothing unaccounted for.
    EXPECT_EQ(sum.emitted, static_cast<uint64_t>(kEvents));
    EXPECT_EQ(sum.emitted, sum.dropped() + sum.published);
    EXPECT_EQ(sum.published, sum.delivered + sum.rejected_total())
        << "published " << sum.published << " delivered " << sum.delivered;
    EXPECT_GT(sum.dropped_full, 0u) << "the rings never filled while the host was down";
    EXPECT_EQ(sum.rejected_total(), 0u);
  }
  EXPECT_EQ(c.missing_sequence, 0u);
}

TEST(FaultTest, CrashLoopOfHostAndWorkersLeavesNoSegmentsBehind) {
  int iterations = 20;
  if (const char* e = std::getenv("PITLANE_CRASH_LOOP"); e != nullptr && *e != '\0') {
    iterations = std::atoi(e);
  }
  testing::ScopedNamespace ns;
  size_t most = 0;
  for (int i = 0; i < iterations; ++i) {
    SCOPED_TRACE("iteration " + std::to_string(i));
    Children children;
    const pid_t host = SpawnHostAndWait(children, ns.name());
    ASSERT_GT(host, 0);
    // A fresh host drains and reclaims what the previous round's dead workers left (at its
    // first housekeeping pass, once its handlers can see their last events): only its registry
    // remains.
    const auto until = Clock::now() + seconds(20);  // generous: sanitizer builds are slow
    while (SegmentsOf(ns.name()).size() > 1 && Clock::now() < until) {
      std::this_thread::sleep_for(milliseconds(5));
    }
    const std::vector<std::string> at_start = SegmentsOf(ns.name());
    EXPECT_EQ(at_start.size(), 1u) << Joined(at_start);
    std::vector<pid_t> workers;
    for (int k = 0; k < 2; ++k) {
      workers.push_back(children.Spawn([&, k] {
        EmitterOptions o;
        o.ns = ns.name();
        o.worker_id = "looped-" + std::to_string(k);
        o.ring_bytes = 64 << 10;
        o.pause_every = 1000;
        return RunEmitter(o);  // forever
      }));
    }
    std::this_thread::sleep_for(milliseconds(30 + 10 * (i % 5)));
    most = std::max(most, SegmentsOf(ns.name()).size());
    // Kill in a varying order: host first, workers first, or interleaved.
    std::vector<pid_t> order = {host, workers[0], workers[1]};
    std::rotate(order.begin(), order.begin() + (i % 3), order.end());
    for (pid_t p : order) ::kill(p, SIGKILL);
    for (pid_t p : order) children.Reap(p);
  }
  // The last round's leftovers go with the next host's start, and that host's registry goes
  // with the host when no worker is left.
  {
    std::unique_ptr<Host> host = StartHost(ns.name());
    ASSERT_NE(host, nullptr);
    PollUntil(*host, [&] { return SegmentsOf(ns.name()).size() <= 1; }, seconds(20));
    const std::vector<std::string> left = SegmentsOf(ns.name());
    EXPECT_EQ(left.size(), 1u) << Joined(left);
  }
  EXPECT_TRUE(SegmentsOf(ns.name()).empty()) << Joined(SegmentsOf(ns.name()));
  EXPECT_LE(most, 3u) << "more segments than one registry and a ring per live worker";
}

// ─── Closed standard streams ─────────────────────────────────────────────────────────────────

// A process started with its standard streams closed (a daemon, `pitlane host >&-`) gets 0, 1
// and 2 from open(). A segment on one of them would take the process's own writes to stdout or
// stderr: the registry's descriptor is held for the host's lifetime. The child here is such a
// process running a host and a worker; whatever it writes to 0, 1 and 2 must not reach a
// segment, so a second worker still attaches and its event is delivered.
TEST(FaultTest, ProcessWithClosedStandardStreamsKeepsItsSegmentsOffThem) {
  testing::ScopedNamespace ns;
  Children children;
  const pid_t pid = children.Spawn([&] {
    for (int fd = 0; fd <= 2; ++fd) ::close(fd);
    HostOptions ho;
    ho.ns = ns.name();
    Result<std::unique_ptr<Host>> host = Host::Start(ho);
    if (!host.ok()) return 2;
    WorkerOptions wo;
    wo.ns = ns.name();
    wo.worker_id = "first";
    Result<std::unique_ptr<Worker>> first = Worker::Start(wo);
    if (!first.ok() || (*first)->Emit("python.call.stop", {{"duration", 1}}) != EmitResult::kOk) {
      return 3;
    }
    const char junk[] = "a line meant for a closed standard stream\n";
    for (int fd = 0; fd <= 2; ++fd) (void)!::write(fd, junk, sizeof(junk) - 1);
    wo.worker_id = "second";
    Result<std::unique_ptr<Worker>> second = Worker::Start(wo);
    if (!second.ok()) return 4;
    if ((*second)->Emit("python.call.stop", {{"duration", 2}}) != EmitResult::kOk) return 5;
    const bool delivered = PollUntil(
        **host, [&] { return (*host)->Stats().delivered == 2; }, seconds(10));
    return delivered ? 0 : 6;
  });
  const int status = children.Reap(pid);
  // 2: no host; 3: the first worker failed; 4: the registry was overwritten (the second worker
  // found no registry it could read); 5, 6: its event was not delivered.
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "child status " << status;
}

}  // namespace
}  // namespace pitlane
