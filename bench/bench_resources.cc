// Memory of the shm transport: per ring (mapping size and resident pages) and the host's
// resident memory with 64 rings of a worker process.
#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "bench_util.h"
#include "pitlane/shm.h"

namespace pitlane::bench {
namespace {

struct SegmentMemory {
  size_t mapped = 0;    // size of the segment (what every side maps)
  size_t resident = 0;  // its pages in memory (tmpfs pages exist once, whoever maps them)
};

// Size and resident pages of the shared-memory segment `name` ("/pitlane...."), via mincore
// over a read-only mapping of our own.
SegmentMemory MeasureSegment(const std::string& name) {
  SegmentMemory m;
  const int fd = shm_open(name.c_str(), O_RDONLY, 0);
  if (fd < 0) return m;
  struct stat st;
  if (fstat(fd, &st) == 0 && st.st_size > 0) {
    m.mapped = static_cast<size_t>(st.st_size);
    void* p = mmap(nullptr, m.mapped, PROT_READ, MAP_SHARED, fd, 0);
    if (p != MAP_FAILED) {
      const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
      std::vector<unsigned char> vec((m.mapped + page - 1) / page);
      if (mincore(p, m.mapped, vec.data()) == 0) {
        for (unsigned char v : vec) m.resident += (v & 1) ? page : 0;
      }
      munmap(p, m.mapped);
    }
  }
  close(fd);
  return m;
}

// One worker ring of `ring_bytes` (data area): its segment's size and resident bytes after the
// first event, and after the ring has wrapped twice; and the namespace registry's.
void BM_Memory_Ring(benchmark::State& state) {
  const uint64_t ring_bytes = static_cast<uint64_t>(state.range(0));
  for (auto _ : state) {
    FixtureOptions o;
    o.busy_poll = false;
    o.ring_bytes = ring_bytes;
    Fixture fx(o);
    Worker& w = fx.worker();
    const TypicalEvent te(w);
    (void)te.Emit(w);
    while (fx.host().Rings().empty()) fx.host().PollOnce();
    fx.host().PollOnce();
    const std::string segment = fx.host().Rings().front().segment;
    const SegmentMemory first = MeasureSegment(segment);
    // Two laps of the ring, drained as it goes.
    const uint64_t events = 2 * ring_bytes / 256 + 1;
    for (uint64_t i = 0; i < events; ++i) {
      while (te.Emit(w) == EmitResult::kDroppedFull) fx.host().PollOnce();
    }
    while (fx.host().PollOnce() > 0) {
    }
    const SegmentMemory wrapped = MeasureSegment(segment);
    const SegmentMemory registry = MeasureSegment(shm::RegistryName(fx.ns()));
    state.counters["segment_bytes"] = static_cast<double>(first.mapped);
    state.counters["resident_after_first_event"] = static_cast<double>(first.resident);
    state.counters["resident_after_wrap"] = static_cast<double>(wrapped.resident);
    state.counters["registry_bytes"] = static_cast<double>(registry.mapped);
    state.counters["registry_resident"] = static_cast<double>(registry.resident);
  }
}

// Fields of /proc/self/status in bytes (VmRSS, RssAnon, RssShmem, ...).
int64_t StatusBytes(const char* field) {
  std::ifstream in("/proc/self/status");
  std::string line;
  const std::string key = std::string(field) + ":";
  while (std::getline(in, line)) {
    if (line.rfind(key, 0) == 0) return std::atoll(line.c_str() + key.size()) * 1024;
  }
  return 0;
}

// Runs in a fork()ed child: a worker whose `rings` threads each emit one event (each creating
// its ring) and stay alive until the parent writes to `done_fd`. Never returns.
[[noreturn]] void RingOwnerChild(const std::string& ns, int rings, int ready_fd, int done_fd) {
  WorkerOptions wo;
  wo.ns = ns;
  wo.worker_id = "bench-rss";
  wo.attach_wait = std::chrono::seconds(5);
  Result<std::unique_ptr<Worker>> w = Worker::Start(wo);
  if (!w.ok() || !(*w)->attached()) _exit(3);
  std::atomic<int> emitted{0};
  std::atomic<bool> release{false};
  std::vector<std::thread> threads;
  for (int i = 0; i < rings; ++i) {
    threads.emplace_back([&] {
      const TypicalEvent te(**w);
      (void)te.Emit(**w);
      emitted.fetch_add(1);
      while (!release.load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    });
  }
  while (emitted.load() < rings) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  const char one = 1;
  if (write(ready_fd, &one, 1) != 1) _exit(4);
  char byte;
  const ssize_t got = read(done_fd, &byte, 1);
  release.store(true);
  for (auto& t : threads) t.join();
  w->reset();
  _exit(got == 1 ? 0 : 5);
}

// The host's resident memory with `rings` rings of another process: VmRSS before the host
// starts, after it starts, and once it has mapped and drained every ring (split into anonymous
// memory and the shared ring pages it maps).
void BM_Memory_HostRss(benchmark::State& state) {
  const int rings = static_cast<int>(state.range(0));
  for (auto _ : state) {
    const int64_t rss0 = StatusBytes("VmRSS"), anon0 = StatusBytes("RssAnon"),
                  shmem0 = StatusBytes("RssShmem");
    HostOptions ho;
    ho.ns = "benchrss" + std::to_string(getpid());
    ho.log = [](std::string_view) {};
    Result<std::unique_ptr<Host>> started = Host::Start(ho);
    if (!started.ok()) {
      state.SkipWithError(started.status().ToString().c_str());
      return;
    }
    std::unique_ptr<Host> host = std::move(started).value();
    const int64_t rss_started = StatusBytes("VmRSS");
    int ready[2], done[2];
    if (pipe(ready) != 0 || pipe(done) != 0) {
      state.SkipWithError("pipe failed");
      return;
    }
    const pid_t child = fork();
    if (child == 0) {
      close(ready[0]);
      close(done[1]);
      RingOwnerChild(ho.ns, rings, ready[1], done[0]);
    }
    close(ready[1]);
    close(done[0]);
    pollfd pfd{ready[0], POLLIN, 0};
    char byte = 0;
    const bool child_ready = poll(&pfd, 1, 20000) == 1 && read(ready[0], &byte, 1) == 1;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (child_ready && std::chrono::steady_clock::now() < deadline &&
           (static_cast<int>(host->Rings().size()) < rings ||
            host->Stats().delivered < static_cast<uint64_t>(rings))) {
      host->PollOnce();
    }
    const int64_t rss = StatusBytes("VmRSS"), anon = StatusBytes("RssAnon"),
                  shmem = StatusBytes("RssShmem");
    const size_t seen = host->Rings().size();
    const char one = 1;
    (void)!write(done[1], &one, 1);
    int status = 0;
    waitpid(child, &status, 0);
    close(ready[0]);
    close(done[1]);
    host->DrainAll(std::chrono::seconds(5));
    host.reset();
    if (!child_ready || static_cast<int>(seen) < rings) {
      state.SkipWithError("the worker process did not bring up its rings");
      return;
    }
    state.counters["rings"] = static_cast<double>(seen);
    state.counters["host_rss_bytes"] = static_cast<double>(rss - rss0);
    state.counters["host_rss_started"] = static_cast<double>(rss_started - rss0);
    state.counters["host_anon_bytes"] = static_cast<double>(anon - anon0);
    state.counters["host_shmem_bytes"] = static_cast<double>(shmem - shmem0);
    state.counters["host_rss_per_ring"] =
        static_cast<double>(rss - rss_started) / static_cast<double>(rings);
  }
}

[[maybe_unused]] const int kRegistered = [] {
  AddCase(Scenario::kMemory, Path::kShm, [] {
    benchmark::RegisterBenchmark("BM_Memory_Ring", BM_Memory_Ring)
        ->ArgName("ring_bytes")
        ->Arg(256 << 10)
        ->Arg(1 << 20)
        ->Iterations(1);
    benchmark::RegisterBenchmark("BM_Memory_HostRss", BM_Memory_HostRss)
        ->ArgName("rings")
        ->Arg(64)
        ->Iterations(1);
  });
  return 0;
}();

}  // namespace
}  // namespace pitlane::bench
