#include "pitlane/worker.h"

#include <linux/futex.h>
#include <pthread.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <new>
#include <thread>
#include <vector>

#include "clock.h"
#include "pitlane/control.h"
#include "remote.h"
#include "pitlane/correlation.h"
#include "pitlane/defaults.h"
#include "pitlane/registry.h"
#include "pitlane/shm.h"

namespace pitlane {

std::string_view WorkerTransportName(WorkerTransport t) {
  switch (t) {
    case WorkerTransport::kAuto: return "auto";
    case WorkerTransport::kShm: return "shm";
    case WorkerTransport::kGrpc: return "grpc";
  }
  return "?";
}

std::string_view EmitResultName(EmitResult r) {
  switch (r) {
    case EmitResult::kOk: return "ok";
    case EmitResult::kDroppedFull: return "dropped_full";
    case EmitResult::kDroppedTooLarge: return "dropped_too_large";
    case EmitResult::kDroppedNoRing: return "dropped_no_ring";
    case EmitResult::kSuppressedDisabled: return "suppressed_disabled";
    case EmitResult::kSuppressedSampled: return "suppressed_sampled";
    case EmitResult::kSuppressedFiltered: return "suppressed_filtered";
  }
  return "unknown";
}

namespace {

using shm::RingWriter;

// A compiled control state. Gates are immutable once published and live as long as the
// worker (control updates are rare; each costs one small allocation, freed at destruction).
struct Gate {
  GateTable table;
  ControlState state;
  uint64_t version = 0;
  uint64_t quarantine_epoch = 0;
};

struct ThreadRing {
  shm::Segment segment;
  RingWriter writer;
  uint32_t ring_slot = 0;
  const std::atomic<uint64_t>* control_version = nullptr;
  uint64_t seen_version = 0;
  const Gate* gate = nullptr;
  uint64_t quarantine_epoch_seen = 0;
};

constexpr uint32_t kMaxWorkersPerProcess = 16;

// Per thread, per Worker (by process-local index): the thread's ring, valid while `instance`
// equals the owning Worker's instance number.
struct TlsEntry {
  uint64_t instance = 0;
  ThreadRing* ring = nullptr;
  uint64_t denied_at_retire_count = ~uint64_t{0};  // ring cap reached at this retire count
};
thread_local TlsEntry t_rings[kMaxWorkersPerProcess];

// Per-thread sampling generator (xorshift64*), seeded from the thread's address and the TSC.
thread_local uint64_t t_rng = 0;
inline uint64_t NextRandom() noexcept {
  uint64_t x = t_rng;
  if (x == 0) [[unlikely]] {
    x = (reinterpret_cast<uintptr_t>(&t_rng) * 0x9E3779B97F4A7C15ull) ^ __rdtsc() ^ 1;
  }
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  t_rng = x;
  return x * 0x2545F4914F6CDD1Dull;
}

void Bump(std::atomic<uint64_t>& c) noexcept { RingWriter::Bump(c); }

struct Unringed {
  std::atomic<uint64_t> emitted{0}, dropped_no_ring{0}, suppressed_disabled{0},
      suppressed_sampled{0}, suppressed_filtered{0};
};

}  // namespace

class Worker::Impl {
 public:
  // ── configuration (immutable after Start, except across fork) ──
  std::string ns;
  std::string id;
  std::string explicit_id;  // as configured; empty when the id is the default
  uint64_t ring_bytes = 0;
  uint32_t max_rings = 64;
  uint64_t initial_position = 0;
  std::shared_ptr<const Catalog> catalog;
  bool tsc = false;
  uint64_t instance = 0;
  uint32_t tls_index = 0;
  pid_t pid = 0;
  uint64_t start_time = 0;

  // ── attachment; written under mu, read lock-free through the atomics ──
  mutable std::mutex mu;
  shm::Segment registry;
  std::atomic<bool> attached{false};
  std::atomic<shm::RegistryHeader*> registry_header{nullptr};
  shm::WorkerSlot* slot = nullptr;
  bool use_ids = true;
  bool forked = false;

  std::vector<std::unique_ptr<Gate>> gates;
  std::atomic<const Gate*> gate{nullptr};

  std::vector<std::unique_ptr<ThreadRing>> rings;
  std::atomic<uint64_t> retire_count{0};
  WorkerStats retired;  // counters of rings that are gone
  Unringed unringed;

  // ── gRPC mode (rqueue set): the queue the transport drains; the transport itself ──
  std::unique_ptr<internal::RemoteQueue> rqueue;
  std::unique_ptr<internal::RemoteTransport> rtransport;
  std::atomic<bool> remote_orphaned{false};  // a forked child: no transport of its own

  // ── background thread (attach, mirror counters) ──
  pthread_t bg{};
  bool bg_running = false;
  std::mutex bg_mu;
  std::condition_variable bg_cv;
  bool bg_stop = false;

  // Emit path for a thread without a ring.
  EmitResult EmitUnringed(EventHandle ev) noexcept {
    unringed.emitted.fetch_add(1, std::memory_order_relaxed);
    const Gate* g = gate.load(std::memory_order_acquire);
    const EmitResult gated = Decide(g, ev);
    switch (gated) {
      case EmitResult::kSuppressedDisabled:
        unringed.suppressed_disabled.fetch_add(1, std::memory_order_relaxed);
        return gated;
      case EmitResult::kSuppressedSampled:
        unringed.suppressed_sampled.fetch_add(1, std::memory_order_relaxed);
        return gated;
      case EmitResult::kSuppressedFiltered:
        unringed.suppressed_filtered.fetch_add(1, std::memory_order_relaxed);
        return gated;
      default:
        unringed.dropped_no_ring.fetch_add(1, std::memory_order_relaxed);
        return EmitResult::kDroppedNoRing;
    }
  }

  // enabled → sampling → filter. kOk means "passes the gate".
  static EmitResult Decide(const Gate* g, EventHandle ev) noexcept {
    GateDecision d;
    bool filtered;
    if (ev.id != 0 && ev.id < g->table.decision.size()) [[likely]] {
      d = g->table.decision[ev.id];
      filtered = g->table.filtered[ev.id] != 0;
    } else {
      // A name the catalog does not know: glob against the name itself (slow, rare).
      if (!g->state.enabled) return EmitResult::kSuppressedDisabled;
      d = GateTable::SamplingDecisionForName(g->state, ev.name);
      filtered = GateTable::FilterRejectsName(g->state, ev.name);
    }
    switch (d) {
      case GateDecision::kDisabled: return EmitResult::kSuppressedDisabled;
      case GateDecision::kSampledOut: return EmitResult::kSuppressedSampled;
      case GateDecision::kSample:
        if (NextRandom() >= g->table.sample_threshold) return EmitResult::kSuppressedSampled;
        break;
      default: break;
    }
    return filtered ? EmitResult::kSuppressedFiltered : EmitResult::kOk;
  }

  void InstallGate(const ControlState& state, uint64_t version, uint64_t quarantine_epoch) {
    auto g = std::make_unique<Gate>();
    g->table = GateTable::Compile(state, *catalog);
    g->state = state;
    g->version = version;
    g->quarantine_epoch = quarantine_epoch;
    gate.store(g.get(), std::memory_order_release);
    gates.push_back(std::move(g));
  }

  // Slow path: the thread has no ring (first emit, after fork, after a quarantine).
  ThreadRing* AcquireRing() noexcept {
    try {
      if (forked) ReattachAfterFork();
      if (!attached.load(std::memory_order_acquire)) return nullptr;
      TlsEntry& t = t_rings[tls_index];
      if (t.instance == instance && t.ring == nullptr &&
          t.denied_at_retire_count == retire_count.load(std::memory_order_relaxed)) {
        return nullptr;  // still over the ring cap
      }
      std::lock_guard<std::mutex> lock(mu);
      ThreadRing* r = CreateRingLocked();
      t.instance = instance;
      t.ring = r;
      t.denied_at_retire_count =
          r ? ~uint64_t{0} : retire_count.load(std::memory_order_relaxed);
      if (r) ArmThreadExit();
      return r;
    } catch (...) {
      return nullptr;
    }
  }

  ThreadRing* CreateRingLocked() {
    if (rings.size() >= max_rings || !attached.load(std::memory_order_relaxed)) return nullptr;
    const int32_t worker_slot_index = static_cast<int32_t>(
        (reinterpret_cast<char*>(slot) - static_cast<char*>(registry.base()) -
         sizeof(shm::RegistryHeader)) /
        shm::kWorkerSlotBytes);
    const int32_t ring_slot = shm::ClaimRingSlot(registry, static_cast<uint32_t>(worker_slot_index));
    if (ring_slot < 0) return nullptr;
    const std::string name = shm::RingName(ns, pid, static_cast<uint32_t>(ring_slot));
    Result<shm::Segment> seg = shm::Segment::Create(name, shm::RingSegmentBytes(ring_bytes), /*populate=*/true);
    if (!seg.ok() && seg.status().code() == StatusCode::kAlreadyExists) {
      // Left by a dead process that had our pid: it is stale by construction.
      shm::Segment::Unlink(name);
      seg = shm::Segment::Create(name, shm::RingSegmentBytes(ring_bytes), /*populate=*/true);
    }
    if (!seg.ok()) {
      shm::RingSlotAt(registry.base(), static_cast<uint32_t>(ring_slot))
          ->state.store(shm::kSlotFree, std::memory_order_release);
      return nullptr;
    }
    shm::RingInit init;
    init.data_bytes = ring_bytes;
    init.ring_slot = static_cast<uint32_t>(ring_slot);
    init.worker_slot = static_cast<uint32_t>(worker_slot_index);
    init.pid = pid;
    init.start_time = start_time;
    init.generation = slot->generation;
    init.worker_id = id;
    init.initial_position = initial_position;
    shm::InitRing(seg->base(), init);
    auto r = std::make_unique<ThreadRing>();
    r->segment = std::move(seg).value();
    r->writer = RingWriter(r->segment.base());
    r->ring_slot = static_cast<uint32_t>(ring_slot);
    r->control_version = &slot->control.version;
    const Gate* g = gate.load(std::memory_order_acquire);
    r->gate = g;
    r->seen_version = g->version;
    r->quarantine_epoch_seen = g->quarantine_epoch;
    shm::PublishRingSlot(registry, static_cast<uint32_t>(ring_slot), name, init.generation);
    rings.push_back(std::move(r));
    return rings.back().get();
  }

  // The control block changed since this ring last looked. Returns the ring to use: the same,
  // or a fresh one when the host quarantined it.
  ThreadRing* OnControlChange(ThreadRing* r, uint64_t version) noexcept {
    // The host is mid-write: keep the current gate and look again at the next emit, rather
    // than wait inside the emit path.
    if (version & 1) return r;
    try {
      std::lock_guard<std::mutex> lock(mu);
      const Gate* g = gate.load(std::memory_order_acquire);
      if (g->version != version) {
        ControlState s;
        uint64_t read_version = 0, qe = 0;
        if (shm::ReadControl(&slot->control, &s, &read_version, &qe)) {
          InstallGate(s, read_version, qe);
          g = gate.load(std::memory_order_acquire);
        }
      }
      r->gate = g;
      r->seen_version = version;
      if (g->quarantine_epoch != r->quarantine_epoch_seen) {
        r->quarantine_epoch_seen = g->quarantine_epoch;
        if (r->writer.header()->host.quarantined.load(std::memory_order_acquire) != 0) {
          RetireLocked(r);
          ThreadRing* fresh = CreateRingLocked();
          t_rings[tls_index].ring = fresh;
          return fresh;
        }
      }
      return r;
    } catch (...) {
      return r;
    }
  }

  // REQUIRES: mu held. Publishes the ring's last state and hands it to the host.
  void RetireLocked(ThreadRing* r) {
    const shm::WorkerCounters& c = r->writer.counters();
    retired.emitted += c.emitted.load(std::memory_order_relaxed);
    retired.published += c.published.load(std::memory_order_relaxed);
    retired.dropped_full += c.dropped_full.load(std::memory_order_relaxed);
    retired.dropped_too_large += c.dropped_too_large.load(std::memory_order_relaxed);
    retired.suppressed_disabled += c.suppressed_disabled.load(std::memory_order_relaxed);
    retired.suppressed_sampled += c.suppressed_sampled.load(std::memory_order_relaxed);
    retired.suppressed_filtered += c.suppressed_filtered.load(std::memory_order_relaxed);
    // Release pairs with the host's acquire load of `retired`: no write follows.
    r->writer.header()->worker.retired.store(1, std::memory_order_release);
    shm::RetireRingSlot(registry, r->ring_slot);
    rings.erase(std::find_if(rings.begin(), rings.end(),
                             [r](const std::unique_ptr<ThreadRing>& p) { return p.get() == r; }));
    retire_count.fetch_add(1, std::memory_order_relaxed);
  }

  bool TryAttach() {
    Result<shm::Segment> reg = shm::OpenRegistry(ns);
    if (!reg.ok()) return false;
    std::lock_guard<std::mutex> lock(mu);
    if (attached.load(std::memory_order_relaxed)) return true;
    const int32_t index = shm::ClaimWorkerSlot(*reg, pid, start_time, id);
    if (index < 0) return false;
    registry = std::move(reg).value();
    slot = shm::WorkerSlotAt(registry.base(), static_cast<uint32_t>(index));
    use_ids = shm::Header(registry)->catalog_hash == catalog->hash();
    registry_header.store(shm::Header(registry), std::memory_order_release);
    attached.store(true, std::memory_order_release);
    return true;
  }

  void MirrorUnringed() {
    if (slot == nullptr) return;
    shm::UnringedCounters& u = slot->unringed;
    u.emitted.store(unringed.emitted.load(std::memory_order_relaxed), std::memory_order_relaxed);
    u.dropped_no_ring.store(unringed.dropped_no_ring.load(std::memory_order_relaxed),
                            std::memory_order_relaxed);
    u.suppressed_disabled.store(unringed.suppressed_disabled.load(std::memory_order_relaxed),
                                std::memory_order_relaxed);
    u.suppressed_sampled.store(unringed.suppressed_sampled.load(std::memory_order_relaxed),
                               std::memory_order_relaxed);
    u.suppressed_filtered.store(unringed.suppressed_filtered.load(std::memory_order_relaxed),
                                std::memory_order_relaxed);
  }

  static void* BackgroundMain(void* arg) {
    auto* self = static_cast<Impl*>(arg);
    std::unique_lock<std::mutex> lock(self->bg_mu);
    while (!self->bg_stop) {
      lock.unlock();
      if (!self->attached.load(std::memory_order_acquire)) {
        self->TryAttach();
      } else {
        std::lock_guard<std::mutex> l(self->mu);
        self->MirrorUnringed();
        // Threads without a ring see control updates through here (ring threads on emit).
        const uint64_t v = self->slot->control.version.load(std::memory_order_acquire);
        if (v != self->gate.load(std::memory_order_relaxed)->version) {
          ControlState s;
          uint64_t read_version = 0, qe = 0;
          if (shm::ReadControl(&self->slot->control, &s, &read_version, &qe)) {
            self->InstallGate(s, read_version, qe);
          }
        }
      }
      lock.lock();
      self->bg_cv.wait_for(lock, std::chrono::milliseconds(50), [self] { return self->bg_stop; });
    }
    return nullptr;
  }

  void StartBackground() {
    bg_stop = false;
    bg_running = pthread_create(&bg, nullptr, &Impl::BackgroundMain, this) == 0;
  }

  void StopBackground() {
    if (!bg_running) return;
    {
      std::lock_guard<std::mutex> lock(bg_mu);
      bg_stop = true;
    }
    bg_cv.notify_all();
    pthread_join(bg, nullptr);
    bg_running = false;
  }

  void WakeHost() noexcept {
    shm::RegistryHeader* h = registry_header.load(std::memory_order_relaxed);
    if (h->host_sleeping.exchange(0, std::memory_order_acq_rel) == 1) {
      syscall(SYS_futex, reinterpret_cast<uint32_t*>(&h->host_sleeping), FUTEX_WAKE, 1, nullptr,
              nullptr, 0);
    }
  }

  // Called in the child of fork() (single-threaded): forget the parent's rings and slot.
  void ForgetParentInChild() {
    if (rqueue) {
      // The transport's threads and connection belong to the parent: never touch them (not
      // even to destroy them) in the child, whose events are counted as dropped_no_ring.
      (void)rtransport.release();
      remote_orphaned.store(true, std::memory_order_relaxed);
      internal::RemoteCounters& c = rqueue->counters;
      for (auto* x : {&c.emitted, &c.sent, &c.dropped_full, &c.dropped_too_large,
                      &c.dropped_no_ring, &c.suppressed_disabled, &c.suppressed_sampled,
                      &c.suppressed_filtered}) {
        x->store(0, std::memory_order_relaxed);
      }
      return;
    }
    for (auto& r : rings) r.reset();  // unmaps; never retires: the parent still writes them
    rings.clear();
    attached.store(false, std::memory_order_relaxed);
    registry_header.store(nullptr, std::memory_order_relaxed);
    slot = nullptr;
    registry = shm::Segment();
    bg_running = false;  // the thread does not exist in the child
    // The parent's background thread may have been waiting on bg_cv (or holding bg_mu) at
    // fork(): the child's copies carry the state of a thread that does not exist here, and
    // destroying or notifying bg_cv would wait for that waiter forever. Re-create both in
    // place; the copies are never destroyed.
    new (&bg_mu) std::mutex();
    new (&bg_cv) std::condition_variable();
    bg_stop = false;
    forked = true;
    retired = WorkerStats();
    for (auto* c : {&unringed.emitted, &unringed.dropped_no_ring, &unringed.suppressed_disabled,
                    &unringed.suppressed_sampled, &unringed.suppressed_filtered}) {
      c->store(0, std::memory_order_relaxed);
    }
  }

  void ReattachAfterFork() {
    std::unique_lock<std::mutex> lock(mu);
    if (!forked) return;
    forked = false;
    pid = getpid();
    start_time = shm::ProcessStartTime(pid);
    id = explicit_id.empty() ? defaults::Hostname() + "-" + std::to_string(pid)
                             : explicit_id + "-" + std::to_string(pid);
    lock.unlock();
    TryAttach();
    StartBackground();
  }

  void ArmThreadExit();
  void Unregister();
  Status StartRemote(const WorkerOptions& o);
};

namespace {

std::mutex g_mu;  // guards g_workers; lock order: g_mu before Impl::mu
Worker::Impl* g_workers[kMaxWorkersPerProcess] = {};
uint64_t g_next_instance = 1;

// Retires the exiting thread's rings of every live Worker.
struct ThreadExitHook {
  bool armed = false;
  ~ThreadExitHook() {
    std::lock_guard<std::mutex> lock(g_mu);
    for (uint32_t i = 0; i < kMaxWorkersPerProcess; ++i) {
      TlsEntry& t = t_rings[i];
      Worker::Impl* w = g_workers[i];
      if (t.ring != nullptr && w != nullptr && w->instance == t.instance) {
        std::lock_guard<std::mutex> l(w->mu);
        w->RetireLocked(t.ring);
      }
      t = TlsEntry();
    }
  }
};
thread_local ThreadExitHook t_exit_hook;

void AtforkPrepare() {
  g_mu.lock();
  for (Worker::Impl* w : g_workers) {
    if (w) w->mu.lock();
  }
}
void AtforkParent() {
  for (Worker::Impl* w : g_workers) {
    if (w) w->mu.unlock();
  }
  g_mu.unlock();
}
void AtforkChild() {
  for (Worker::Impl* w : g_workers) {
    if (w) {
      w->mu.unlock();
      w->ForgetParentInChild();
    }
  }
  for (TlsEntry& t : t_rings) t = TlsEntry();
  g_mu.unlock();
}

}  // namespace

void Worker::Impl::ArmThreadExit() { t_exit_hook.armed = true; }

void Worker::Impl::Unregister() {
  std::lock_guard<std::mutex> lock(g_mu);
  if (g_workers[tls_index] == this) g_workers[tls_index] = nullptr;
}

namespace {

std::string EnvOr(const std::string& value, const char* env) {
  if (!value.empty()) return value;
  const char* e = std::getenv(env);
  return e ? std::string(e) : std::string();
}

// README "Defaults": PITLANE_TRANSPORT = auto | shm | grpc.
Result<WorkerTransport> ChooseTransport(WorkerOptions& o, const std::string& ns) {
  WorkerTransport t = o.transport;
  if (t == WorkerTransport::kAuto) {
    const std::string env = EnvOr("", defaults::kTransportEnv);
    if (env == "shm") {
      t = WorkerTransport::kShm;
    } else if (env == "grpc") {
      t = WorkerTransport::kGrpc;
    } else if (!env.empty() && env != "auto") {
      return InvalidArgument(std::string(defaults::kTransportEnv) + "=\"" + env +
                             "\" is not one of auto, shm, grpc");
    }
  }
  o.grpc_target = EnvOr(o.grpc_target, defaults::kGrpcTargetEnv);
  o.grpc_listen = EnvOr(o.grpc_listen, defaults::kGrpcListenEnv);
  o.grpc_token = EnvOr(o.grpc_token, defaults::kGrpcTokenEnv);
  o.grpc_tls_ca = EnvOr(o.grpc_tls_ca, defaults::kGrpcTlsCaEnv);
  const bool remote_configured = !o.grpc_target.empty() || !o.grpc_listen.empty();
  if (t == WorkerTransport::kAuto) {
    // Shared memory when this machine runs the namespace's host; gRPC when a remote host is
    // configured and it does not; otherwise shared memory in drop mode until the host appears.
    const bool local_host = shm::OpenRegistry(ns).ok();
    t = !local_host && remote_configured ? WorkerTransport::kGrpc : WorkerTransport::kShm;
  }
  if (t == WorkerTransport::kGrpc) {
    if (!remote_configured) {
      return InvalidArgument(
          "transport grpc needs a host address: set PITLANE_GRPC_TARGET (the host's dial-in "
          "address) or PITLANE_GRPC_LISTEN (an address for the host to dial)");
    }
    if (internal::RegisteredRemoteTransport() == nullptr) {
      return FailedPrecondition(
          "transport grpc is selected but this program links only pitlane::worker; link "
          "pitlane::worker_grpc for the gRPC transport");
    }
  }
  return t;
}

}  // namespace

Status Worker::Impl::StartRemote(const WorkerOptions& o) {
  uint64_t qbytes = o.grpc_queue_bytes;
  if (qbytes == 0) {
    const std::string env = EnvOr("", defaults::kGrpcQueueBytesEnv);
    qbytes = uint64_t{4} << 20;
    if (!env.empty()) {
      char* end = nullptr;
      qbytes = std::strtoull(env.c_str(), &end, 10);
      if (end == env.c_str() || *end != '\0') qbytes = 0;
    }
  }
  if (qbytes < (uint64_t{64} << 10) || qbytes > (uint64_t{1} << 30) || (qbytes & (qbytes - 1))) {
    return InvalidArgument("gRPC queue size " + std::to_string(qbytes) +
                           " is not a power of two between 65536 and 1073741824 (" +
                           defaults::kGrpcQueueBytesEnv + ")");
  }
  tsc = false;  // events leave the machine: stamp them with CLOCK_REALTIME
  use_ids = true;
  rqueue = std::make_unique<internal::RemoteQueue>(static_cast<size_t>(qbytes));
  internal::RemoteConfig c;
  c.target = o.grpc_target;
  c.listen = o.grpc_listen;
  c.token = o.grpc_token;
  c.tls_ca = o.grpc_tls_ca;
  c.worker_id = id;
  c.node = defaults::Hostname();
  c.pid = static_cast<uint32_t>(pid);
  c.catalog = catalog;
  c.queue = rqueue.get();
  c.flush_timeout = o.flush_timeout;
  c.apply_control = [this](const ControlState& state) {
    std::lock_guard<std::mutex> lock(mu);
    InstallGate(state, gate.load(std::memory_order_relaxed)->version + 1, 0);
  };
  c.log = [](std::string_view line) {
    std::fprintf(stderr, "pitlane worker: %.*s\n", static_cast<int>(line.size()), line.data());
  };
  Result<std::unique_ptr<internal::RemoteTransport>> t =
      internal::RegisteredRemoteTransport()(std::move(c));
  if (!t.ok()) return t.status();
  rtransport = std::move(t).value();
  return Status::Ok();
}

namespace {
Result<WorkerTransport> ChooseTransport(WorkerOptions& o, const std::string& ns);
}  // namespace

Result<std::unique_ptr<Worker>> Worker::Start(WorkerOptions options) {
  auto impl = std::make_unique<Impl>();
  impl->ns = options.ns.empty() ? defaults::Namespace() : options.ns;
  if (Status s = shm::ValidateNamespace(impl->ns); !s.ok()) return s;
  const char* env_id = std::getenv(defaults::kWorkerIdEnv);
  impl->explicit_id = !options.worker_id.empty() ? options.worker_id
                                                  : (env_id && *env_id ? std::string(env_id) : "");
  impl->id = impl->explicit_id.empty() ? defaults::WorkerId() : impl->explicit_id;
  if (impl->id.size() >= shm::kWorkerIdBytes) {
    return InvalidArgument("worker id \"" + impl->id + "\" is longer than " +
                           std::to_string(shm::kWorkerIdBytes - 1) + " bytes");
  }
  if (options.ring_bytes == 0) {
    Result<uint64_t> env = defaults::RingBytes();
    if (!env.ok()) return env.status();
    impl->ring_bytes = *env;
  } else {
    const uint64_t n = options.ring_bytes;
    if (n < shm::kMinRingBytes || n > shm::kMaxRingBytes || (n & (n - 1)) != 0) {
      return InvalidArgument("ring size " + std::to_string(n) +
                             " is not a power of two between 4096 and 67108864");
    }
    impl->ring_bytes = n;
  }
  if (options.max_rings == 0 || options.max_rings > shm::kMaxRings) {
    return InvalidArgument("max_rings " + std::to_string(options.max_rings) +
                           " is outside 1.." + std::to_string(shm::kMaxRings));
  }
  if ((options.initial_position & 7) != 0) {
    return InvalidArgument("initial_position must be a multiple of 8");
  }
  impl->max_rings = options.max_rings;
  impl->initial_position = options.initial_position;
  impl->catalog = Catalog::Default();
  impl->tsc = internal::TscIsUsable();
  impl->pid = getpid();
  impl->start_time = shm::ProcessStartTime(impl->pid);
  impl->InstallGate(ControlState(), 0, 0);

  {
    std::lock_guard<std::mutex> lock(g_mu);
    static std::once_flag atfork_once;
    std::call_once(atfork_once, [] { pthread_atfork(AtforkPrepare, AtforkParent, AtforkChild); });
    uint32_t index = kMaxWorkersPerProcess;
    for (uint32_t i = 0; i < kMaxWorkersPerProcess; ++i) {
      if (g_workers[i] == nullptr) {
        index = i;
        break;
      }
    }
    if (index == kMaxWorkersPerProcess) {
      return ResourceExhausted("at most " + std::to_string(kMaxWorkersPerProcess) +
                               " pitlane::Worker objects may live in one process");
    }
    impl->tls_index = index;
    impl->instance = g_next_instance++;
    g_workers[index] = impl.get();
  }

  Result<WorkerTransport> mode = ChooseTransport(options, impl->ns);
  if (!mode.ok()) {
    impl->Unregister();
    return mode.status();
  }
  if (*mode == WorkerTransport::kGrpc) {
    if (Status st = impl->StartRemote(options); !st.ok()) {
      impl->Unregister();
      return st;
    }
    return std::unique_ptr<Worker>(new Worker(std::move(impl)));
  }

  const auto deadline = std::chrono::steady_clock::now() + options.attach_wait;
  while (!impl->TryAttach() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  impl->StartBackground();
  return std::unique_ptr<Worker>(new Worker(std::move(impl)));
}

Worker::Worker(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Worker::~Worker() {
  Impl& w = *impl_;
  // gRPC: flush what is queued (bounded by flush_timeout) and close the stream.
  w.rtransport.reset();
  w.StopBackground();
  std::lock_guard<std::mutex> lock(g_mu);
  g_workers[w.tls_index] = nullptr;
  std::lock_guard<std::mutex> l(w.mu);
  while (!w.rings.empty()) w.RetireLocked(w.rings.back().get());
  if (w.slot != nullptr) {
    w.MirrorUnringed();
    // The worker leaves: the host drains its retired rings, emits its terminated event and
    // frees the slot.
    w.slot->state.store(shm::kSlotRetired, std::memory_order_release);
    shm::BumpEpoch(w.registry);
  }
}

namespace {

// The part of every emit before encoding: the thread's ring, a control refresh when the host
// changed it, the emitted count and the gate. kOk with *out set means "encode and publish".
inline EmitResult Admit(Worker::Impl& w, EventHandle ev, ThreadRing** out) noexcept {
  TlsEntry& t = t_rings[w.tls_index];
  ThreadRing* r = t.instance == w.instance ? t.ring : nullptr;
  if (r == nullptr) [[unlikely]] {
    r = w.AcquireRing();
    if (r == nullptr) return w.EmitUnringed(ev);
  }
  const uint64_t version = r->control_version->load(std::memory_order_relaxed);
  if (version != r->seen_version) [[unlikely]] {
    r = w.OnControlChange(r, version);
    if (r == nullptr) return w.EmitUnringed(ev);
  }
  shm::WorkerCounters& c = r->writer.counters();
  Bump(c.emitted);
  const EmitResult gated = Worker::Impl::Decide(r->gate, ev);
  if (gated != EmitResult::kOk) [[unlikely]] {
    Bump(gated == EmitResult::kSuppressedDisabled  ? c.suppressed_disabled
         : gated == EmitResult::kSuppressedSampled ? c.suppressed_sampled
                                                   : c.suppressed_filtered);
    return gated;
  }
  *out = r;
  return EmitResult::kOk;
}

// A reservation that failed: count it by reason.
inline EmitResult CountDrop(ThreadRing* r, RingWriter::Reserve why) noexcept {
  shm::WorkerCounters& c = r->writer.counters();
  if (why == RingWriter::Reserve::kFull) {
    Bump(c.dropped_full);
    return EmitResult::kDroppedFull;
  }
  Bump(c.dropped_too_large);
  return EmitResult::kDroppedTooLarge;
}

// After a publish: one FUTEX_WAKE if the host flagged itself asleep.
inline void WakeHostIfAsleep(Worker::Impl& w) noexcept {
  if (w.registry_header.load(std::memory_order_relaxed)->host_sleeping.load(
          std::memory_order_relaxed) != 0) [[unlikely]] {
    w.WakeHost();
  }
}

// The record of one emit, sized — the same for both transports (gRPC mode stamps with
// CLOCK_REALTIME and always encodes catalog ids: StartRemote sets tsc and use_ids so).
inline void PrepareEmit(const Worker::Impl& w, EventHandle ev,
                        std::span<const Measurement> measurements,
                        std::span<const Metadata> metadata, std::string_view correlation_id,
                        RecordFields* f, PreparedRecord* p) noexcept {
  const internal::Stamp stamp = internal::ReadStamp(w.tsc);
  f->event_id = w.use_ids ? ev.id : 0;
  f->name = ev.name;
  f->timestamp = stamp.value;
  f->clock = stamp.clock;
  f->correlation_id = correlation_id.empty() ? CurrentCorrelationId() : correlation_id;
  f->measurements = measurements.data();
  f->measurement_count = measurements.size();
  f->metadata = metadata.data();
  f->metadata_count = metadata.size();
  PrepareRecord(*f, w.catalog.get(), w.use_ids, p);
}

// gRPC mode: the same gate and counters, then the record goes into the transport's queue.
inline EmitResult AdmitRemote(Worker::Impl& w, EventHandle ev) noexcept {
  internal::RemoteCounters& c = w.rqueue->counters;
  c.emitted.fetch_add(1, std::memory_order_relaxed);
  const EmitResult gated = Worker::Impl::Decide(w.gate.load(std::memory_order_acquire), ev);
  if (gated != EmitResult::kOk) [[unlikely]] {
    (gated == EmitResult::kSuppressedDisabled  ? c.suppressed_disabled
     : gated == EmitResult::kSuppressedSampled ? c.suppressed_sampled
                                               : c.suppressed_filtered)
        .fetch_add(1, std::memory_order_relaxed);
    return gated;
  }
  if (w.remote_orphaned.load(std::memory_order_relaxed)) [[unlikely]] {
    c.dropped_no_ring.fetch_add(1, std::memory_order_relaxed);
    return EmitResult::kDroppedNoRing;
  }
  return EmitResult::kOk;
}

inline uint8_t* ReserveRemote(Worker::Impl& w, size_t size, EmitResult* drop) noexcept {
  bool too_large = false;
  uint8_t* at = size != 0 && size <= 0xFFFFFFF0u
                    ? w.rqueue->Reserve(static_cast<uint32_t>(size), &too_large)
                    : (too_large = true, nullptr);
  if (at == nullptr) {
    internal::RemoteCounters& c = w.rqueue->counters;
    (too_large ? c.dropped_too_large : c.dropped_full).fetch_add(1, std::memory_order_relaxed);
    *drop = too_large ? EmitResult::kDroppedTooLarge : EmitResult::kDroppedFull;
  }
  return at;
}

}  // namespace

EmitResult Worker::Emit(EventHandle ev, std::span<const Measurement> measurements,
                        std::span<const Metadata> metadata,
                        std::string_view correlation_id) noexcept {
  Impl& w = *impl_;
  if (w.rqueue) [[unlikely]] {
    if (const EmitResult admitted = AdmitRemote(w, ev); admitted != EmitResult::kOk) {
      return admitted;
    }
    RecordFields f;
    PreparedRecord p;
    PrepareEmit(w, ev, measurements, metadata, correlation_id, &f, &p);
    EmitResult drop = EmitResult::kOk;
    uint8_t* at = ReserveRemote(w, p.size, &drop);
    if (at == nullptr) return drop;
    EncodeRecord(f, p, at);
    w.rqueue->Commit();
    return EmitResult::kOk;
  }
  ThreadRing* r = nullptr;
  if (const EmitResult admitted = Admit(w, ev, &r); admitted != EmitResult::kOk) return admitted;

  RecordFields f;
  PreparedRecord p;
  PrepareEmit(w, ev, measurements, metadata, correlation_id, &f, &p);
  RingWriter::Reserve why = RingWriter::Reserve::kTooLarge;
  uint8_t* at = p.size != 0 ? r->writer.TryReserve(static_cast<uint32_t>(p.size), &why) : nullptr;
  if (at == nullptr) [[unlikely]] return CountDrop(r, why);
  EncodeRecord(f, p, at);
  r->writer.Commit();
  WakeHostIfAsleep(w);
  return EmitResult::kOk;
}

EmitResult Worker::EmitEncoded(EventHandle ev, const uint8_t* record, size_t size) noexcept {
  Impl& w = *impl_;
  if (w.rqueue) [[unlikely]] {
    if (const EmitResult admitted = AdmitRemote(w, ev); admitted != EmitResult::kOk) {
      return admitted;
    }
    EmitResult drop = EmitResult::kOk;
    uint8_t* at = ReserveRemote(w, size, &drop);
    if (at == nullptr) return drop;
    std::memcpy(at, record, size);
    w.rqueue->Commit();
    return EmitResult::kOk;
  }
  ThreadRing* r = nullptr;
  if (const EmitResult admitted = Admit(w, ev, &r); admitted != EmitResult::kOk) return admitted;
  RingWriter::Reserve why = RingWriter::Reserve::kTooLarge;
  uint8_t* at = size != 0 && size < 0xFFFFFFF0u
                    ? r->writer.TryReserve(static_cast<uint32_t>(size), &why)
                    : nullptr;
  if (at == nullptr) [[unlikely]] return CountDrop(r, why);
  std::memcpy(at, record, size);
  r->writer.Commit();
  WakeHostIfAsleep(w);
  return EmitResult::kOk;
}

EventHandle Worker::Event(std::string_view name) const {
  const Catalog& cat = *impl_->catalog;
  const uint16_t id = cat.FindWorkerEvent(name);
  if (id == 0) return {0, name};
  return {id, cat.event(id).wire_names.front()};
}

MeasurementKey Worker::Measure(std::string_view key) const {
  const uint16_t id = impl_->catalog->MeasurementKeyId(key);
  return {id, id ? impl_->catalog->MeasurementKey(id) : key};
}

MetadataKey Worker::Meta(std::string_view key) const {
  const uint16_t id = impl_->catalog->MetadataKeyId(key);
  return {id, id ? impl_->catalog->MetadataKey(id) : key};
}

WorkerStats Worker::Stats() const {
  const Impl& w = *impl_;
  if (w.rqueue) {
    const internal::RemoteCounters& c = w.rqueue->counters;
    WorkerStats s;
    s.emitted = c.emitted.load(std::memory_order_relaxed);
    s.published = c.sent.load(std::memory_order_relaxed);
    s.dropped_full = c.dropped_full.load(std::memory_order_relaxed);
    s.dropped_too_large = c.dropped_too_large.load(std::memory_order_relaxed);
    s.dropped_no_ring = c.dropped_no_ring.load(std::memory_order_relaxed);
    s.suppressed_disabled = c.suppressed_disabled.load(std::memory_order_relaxed);
    s.suppressed_sampled = c.suppressed_sampled.load(std::memory_order_relaxed);
    s.suppressed_filtered = c.suppressed_filtered.load(std::memory_order_relaxed);
    s.attached = attached();
    return s;
  }
  std::lock_guard<std::mutex> lock(w.mu);
  WorkerStats s = w.retired;
  for (const auto& r : w.rings) {
    const shm::WorkerCounters& c = r->writer.counters();
    s.emitted += c.emitted.load(std::memory_order_relaxed);
    s.published += c.published.load(std::memory_order_relaxed);
    s.dropped_full += c.dropped_full.load(std::memory_order_relaxed);
    s.dropped_too_large += c.dropped_too_large.load(std::memory_order_relaxed);
    s.suppressed_disabled += c.suppressed_disabled.load(std::memory_order_relaxed);
    s.suppressed_sampled += c.suppressed_sampled.load(std::memory_order_relaxed);
    s.suppressed_filtered += c.suppressed_filtered.load(std::memory_order_relaxed);
  }
  s.emitted += w.unringed.emitted.load(std::memory_order_relaxed);
  s.dropped_no_ring += w.unringed.dropped_no_ring.load(std::memory_order_relaxed);
  s.suppressed_disabled += w.unringed.suppressed_disabled.load(std::memory_order_relaxed);
  s.suppressed_sampled += w.unringed.suppressed_sampled.load(std::memory_order_relaxed);
  s.suppressed_filtered += w.unringed.suppressed_filtered.load(std::memory_order_relaxed);
  s.live_rings = static_cast<uint32_t>(w.rings.size());
  s.attached = w.attached.load(std::memory_order_acquire);
  return s;
}

bool Worker::attached() const {
  if (impl_->rqueue) {
    return impl_->rtransport && !impl_->remote_orphaned.load(std::memory_order_relaxed) &&
           impl_->rtransport->connected();
  }
  return impl_->attached.load(std::memory_order_acquire);
}
WorkerTransport Worker::transport() const {
  return impl_->rqueue ? WorkerTransport::kGrpc : WorkerTransport::kShm;
}
int Worker::grpc_listen_port() const {
  return impl_->rtransport && !impl_->remote_orphaned.load(std::memory_order_relaxed)
             ? impl_->rtransport->listen_port()
             : 0;
}
const std::string& Worker::id() const { return impl_->id; }
const std::string& Worker::ns() const { return impl_->ns; }
const Catalog& Worker::catalog() const { return *impl_->catalog; }
uint64_t Worker::applied_control_version() const {
  return impl_->gate.load(std::memory_order_acquire)->version;
}

bool Worker::WaitAttached(std::chrono::milliseconds timeout) const {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!attached() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return attached();
}

}  // namespace pitlane
