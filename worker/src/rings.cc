// The shared-memory lane of a worker: attaching to the namespace's registry, one ring per
// emitting thread (created on its first emit, retired when it exits), control-block polling,
// the ringless fallback, and what fork() does to all of it.
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <new>

#include "pitlane/defaults.h"
#include "pitlane/futex.h"
#include "worker_impl.h"

namespace pitlane {

using internal::ThreadRing;
using internal::kMaxWorkersPerProcess;

using internal::TlsEntry;
using internal::t_rings;

thread_local constinit TlsEntry internal::t_rings[kMaxWorkersPerProcess];

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

// fork() happens with every worker's background thread waiting, never mid-work (it works with
// bg_mu held), and with no worker's `mu` held. Waiting matters for more than our own state:
// a thread inside malloc at fork() leaves the allocator's lock held in the child under
// allocators that do not take it across fork (GCC 12's AddressSanitizer: the child's first
// allocation of that size then blocks forever).
void AtforkPrepare() {
  g_mu.lock();
  for (Worker::Impl* w : g_workers) {
    if (w) {
      w->bg_mu.lock();
      w->mu.lock();
    }
  }
}
void AtforkParent() {
  for (Worker::Impl* w : g_workers) {
    if (w) {
      w->mu.unlock();
      w->bg_mu.unlock();
    }
  }
  g_mu.unlock();
}
void AtforkChild() {
  for (Worker::Impl* w : g_workers) {
    if (w) {
      w->mu.unlock();
      w->bg_mu.unlock();
      w->ForgetParentInChild();
    }
  }
  for (TlsEntry& t : t_rings) t = TlsEntry();
  g_mu.unlock();
}

}  // namespace

// Emit path for a thread without a ring: the same gate, counted in process memory. Before the
// first attach an event the gate lets through goes to the pre-attach buffer (kBuffered: the
// caller encodes it there through PreAttachLane, which counts it if it does not fit).
EmitResult Worker::Impl::EmitUnringed(EventHandle ev) noexcept {
  const EmitResult gated = internal::Decide(gates.current(), ev);
  if (gated == EmitResult::kOk && pre_attach && !attached.load(std::memory_order_acquire) &&
      awaiting_host.load(std::memory_order_relaxed)) {
    return EmitResult::kBuffered;
  }
  unringed.emitted.fetch_add(1, std::memory_order_relaxed);
  const EmitResult outcome = gated == EmitResult::kOk ? EmitResult::kDroppedNoRing : gated;
  unringed.CountOutcome(outcome);
  return outcome;
}

uint8_t* internal::PreAttachLane::Reserve(Worker::Impl& w, size_t size,
                                          EmitResult* drop) noexcept {
  uint8_t* at = size != 0 ? w.pre_attach->Reserve(size) : nullptr;
  if (at == nullptr) [[unlikely]] {
    // A record that cannot be encoded is too large; otherwise the buffer is full, or the attach
    // flushed it meanwhile: no ring for this event.
    *drop = size == 0 ? EmitResult::kDroppedTooLarge : EmitResult::kDroppedNoRing;
    w.unringed.emitted.fetch_add(1, std::memory_order_relaxed);
    w.unringed.CountOutcome(*drop);
  }
  return at;
}

void internal::PreAttachLane::Commit(Worker::Impl& w) noexcept {
  w.pre_attach->Commit();
  // This thread's next events must follow these: remember to look where the attach puts them.
  TlsEntry& t = t_rings[w.tls_index];
  if (t.instance != w.instance) t = TlsEntry{.instance = w.instance};
  t.kept = true;
}

// The kept events go into the shared ring, where the threads that emitted them keep writing
// until the host has read them (TlsEntry), so each thread's events stay in order. The ring then
// stays the worker's shared ring.
void Worker::Impl::FlushPreAttachLocked() {
  if (!pre_attach || pre_attach->closed()) return;
  // Nobody holds shared_lock yet: a thread reaches the shared ring only through mu (held here)
  // or once kept_in is set. Should it be held anyway, the lock order (shared_lock, then mu)
  // forbids waiting: the kept events then go into a ring of their own, in order among
  // themselves.
  const bool own_shared =
      shared == nullptr && shared_lock.exchange(1, std::memory_order_acquire) == 0;
  ThreadRing* r =
      pre_attach->pending() != 0 ? CreateRingLocked(/*for_shared=*/own_shared) : nullptr;
  const internal::PreAttachBuffer::Flushed f =
      pre_attach->Flush([&](const uint8_t* record, size_t size) {
        if (r == nullptr) {  // no ring to be had (cap or registry full): counted, not lost
          unringed.emitted.fetch_add(1, std::memory_order_relaxed);
          unringed.CountOutcome(EmitResult::kDroppedNoRing);
          return false;
        }
        shm::WorkerCounters& c = r->writer.counters();
        shm::RingWriter::Bump(c.emitted);
        shm::RingWriter::Reserve why = shm::RingWriter::Reserve::kTooLarge;
        uint8_t* at = r->writer.TryReserve(static_cast<uint32_t>(size), &why);
        if (at == nullptr) {
          shm::RingWriter::Bump(OutcomeField(
              c, why == shm::RingWriter::Reserve::kFull ? EmitResult::kDroppedFull
                                                         : EmitResult::kDroppedTooLarge));
          return false;
        }
        std::memcpy(at, record, size);
        r->writer.Commit();
        return true;
      });
  if (own_shared) {
    shared = r;
    kept_in = r;
    if (r != nullptr) kept_until = r->writer.position();
    UnlockShared();
  } else if (r != nullptr) {
    RetireLocked(r);  // no thread writes it again: the host drains and reclaims it
  }
  if (f.published != 0) WakeHost();
}

void Worker::Impl::DropPreAttach() {
  if (!pre_attach) return;
  pre_attach->Flush([&](const uint8_t*, size_t) {
    unringed.emitted.fetch_add(1, std::memory_order_relaxed);
    unringed.CountOutcome(EmitResult::kDroppedNoRing);
    return false;
  });
}

// ── rings ────────────────────────────────────────────────────────────────────────────────────

// Slow path: the thread has no ring (first emit, after fork, after a quarantine).
ThreadRing* Worker::Impl::AcquireRing() noexcept {
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
    t.denied_at_retire_count = r ? ~uint64_t{0} : retire_count.load(std::memory_order_relaxed);
    if (r) ArmThreadExit();
    return r;
  } catch (...) {
    return nullptr;
  }
}

ThreadRing* Worker::Impl::LockShared() noexcept {
  // Acquire pairs with the release in UnlockShared: the previous holder's writes to the ring
  // (and to `shared`) are visible.
  while (shared_lock.exchange(1, std::memory_order_acquire) != 0) _mm_pause();
  if (shared == nullptr) {
    try {
      std::lock_guard<std::mutex> lock(mu);  // lock order: shared_lock, then mu
      shared = CreateRingLocked(/*for_shared=*/true);
    } catch (...) {
    }
  }
  if (shared == nullptr) UnlockShared();
  return shared;
}

void Worker::Impl::UnlockShared() noexcept { shared_lock.store(0, std::memory_order_release); }

ThreadRing* Worker::Impl::LockSharedWhileUnread(TlsEntry& t) noexcept {
  if (t.kept) {
    // Kept events wait for the attach; once attached, kept_in says where it put them.
    if (!attached.load(std::memory_order_acquire)) return nullptr;
    std::lock_guard<std::mutex> lock(mu);  // before shared_lock: the lock order
    t.kept = false;
    t.unread_in = kept_in;
    t.unread_until = kept_until;
  }
  if (t.unread_in == nullptr) return nullptr;
  while (shared_lock.exchange(1, std::memory_order_acquire) != 0) _mm_pause();
  // A shared ring replaced since (quarantined) took its unread records with it: nothing to
  // wait for. (A replacement at the same address only keeps the thread here a little longer.)
  if (shared != nullptr && shared == t.unread_in && !shared->writer.ReadUpTo(t.unread_until)) {
    return shared;
  }
  UnlockShared();
  t.unread_in = nullptr;
  return nullptr;
}

void Worker::Impl::NoteSharedWrite() noexcept {
  TlsEntry& t = t_rings[tls_index];
  if (t.instance != instance) t = TlsEntry{.instance = instance};
  t.unread_in = shared;
  t.unread_until = shared->writer.position();
}

// REQUIRES: mu held. `for_shared`: the shared ring, one more than max_rings.
ThreadRing* Worker::Impl::CreateRingLocked(bool for_shared) {
  // `rings` holds the shared ring too (`shared` is written only under mu): it takes none of the
  // max_rings places of the threads' own rings.
  // A lost (truncated) registry reaches no host: a ring published in it would never be read.
  if (rings.size() >= max_rings + (for_shared || shared != nullptr ? 1 : 0) ||
      !attached.load(std::memory_order_relaxed) || registry.lost()) {
    return nullptr;
  }
  const auto worker_slot = static_cast<uint32_t>(
      (reinterpret_cast<char*>(slot) - static_cast<char*>(registry.base()) -
       sizeof(shm::RegistryHeader)) /
      shm::kWorkerSlotBytes);
  const int32_t ring_slot = shm::ClaimRingSlot(registry, worker_slot);
  if (ring_slot < 0) return nullptr;
  const std::string name = shm::RingName(ns, pid, static_cast<uint32_t>(ring_slot));
  const size_t bytes = shm::RingSegmentBytes(ring_bytes);
  Result<shm::Segment> seg = shm::Segment::Create(name, bytes, /*populate=*/true);
  if (!seg.ok() && seg.status().code() == StatusCode::kAlreadyExists) {
    // Left by a dead process that had our pid: it is stale by construction.
    shm::Segment::Unlink(name);
    seg = shm::Segment::Create(name, bytes, /*populate=*/true);
  }
  if (!seg.ok()) {
    shm::RingSlotAt(registry.base(), static_cast<uint32_t>(ring_slot))
        ->state.store(shm::kSlotFree, std::memory_order_release);
    return nullptr;
  }
  shm::RingInit init;
  init.data_bytes = ring_bytes;
  init.ring_slot = static_cast<uint32_t>(ring_slot);
  init.worker_slot = worker_slot;
  init.pid = pid;
  init.start_time = start_time;
  init.generation = slot->generation;
  init.worker_id = id;
  init.initial_position = initial_position;
  shm::InitRing(seg->base(), init);
  auto r = std::make_unique<ThreadRing>();
  r->segment = std::move(seg).value();
  r->writer = shm::RingWriter(r->segment.base());
  r->ring_slot = static_cast<uint32_t>(ring_slot);
  r->control_version = &slot->control.version;
  const internal::Gate* g = gates.current();
  r->gate = g;
  r->seen_version = g->version;
  r->quarantine_epoch_seen = g->quarantine_epoch;
  shm::PublishRingSlot(registry, static_cast<uint32_t>(ring_slot), name, init.generation);
  rings.push_back(std::move(r));
  return rings.back().get();
}

// The control block changed since this ring last looked. Returns the ring to use: the same, or
// a fresh one when the host quarantined it.
ThreadRing* Worker::Impl::OnControlChange(ThreadRing* r, uint64_t version) noexcept {
  // The host is mid-write: keep the current gate and look again at the next emit, rather than
  // wait inside the emit path.
  if (version & 1) return r;
  try {
    std::lock_guard<std::mutex> lock(mu);
    PollControlLocked();
    const internal::Gate* g = gates.current();
    r->gate = g;
    r->seen_version = version;
    if (g->quarantine_epoch != r->quarantine_epoch_seen) {
      r->quarantine_epoch_seen = g->quarantine_epoch;
      // Acquire pairs with the host's release of its counters (shm_layout.h: HostCounters).
      // A ring someone truncated is lost to both sides: its mapping holds private zeros here
      // (so the host's quarantine flag cannot be read from it). Probe it rather than rely on
      // lost(): this thread may not have touched a missing page yet, and the epoch is seen
      // only once.
      if (r->writer.header()->host.quarantined.load(std::memory_order_acquire) != 0 ||
          r->segment.Truncated()) {
        if (r == shared) {  // REQUIRES here: shared_lock held by this thread
          RetireLocked(r);
          shared = CreateRingLocked(/*for_shared=*/true);
          return shared;
        }
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

// REQUIRES: mu held. Installs the control block's state when its version moved on.
void Worker::Impl::PollControlLocked() {
  // Acquire pairs with the host's release store of the even version in shm::WriteControl.
  const uint64_t v = slot->control.version.load(std::memory_order_acquire);
  if (v == gates.current()->version) return;
  ControlState s;
  uint64_t read_version = 0, qe = 0;
  if (shm::ReadControl(&slot->control, &s, &read_version, &qe)) {
    gates.Install(s, *catalog, read_version, qe);
  }
}

// REQUIRES: mu held. Publishes the ring's last state and hands it to the host.
void Worker::Impl::RetireLocked(ThreadRing* r) {
  retired += ReadRing(r->writer.counters(), Tally());
  // Release pairs with the host's acquire load of `retired`: no write follows.
  r->writer.header()->worker.retired.store(1, std::memory_order_release);
  const uint32_t ring_slot = r->ring_slot;
  // Unmapped before the slot says RETIRED: the host reclaims a ring only once this process no
  // longer maps it (anyone can write RETIRED into a slot).
  rings.erase(std::find_if(rings.begin(), rings.end(),
                           [r](const std::unique_ptr<ThreadRing>& p) { return p.get() == r; }));
  shm::RetireRingSlot(registry, ring_slot);
  retire_count.fetch_add(1, std::memory_order_relaxed);
}

// ── attaching ────────────────────────────────────────────────────────────────────────────────

bool Worker::Impl::TryAttach() {
  Result<shm::Segment> reg = shm::OpenRegistry(ns);
  std::lock_guard<std::mutex> lock(mu);
  if (attached.load(std::memory_order_relaxed)) return true;
  if (!reg.ok()) {
    attach_error = reg.status();
    awaiting_host.store(attach_error.code() == StatusCode::kNotFound, std::memory_order_relaxed);
    return false;
  }
  const int32_t index = shm::ClaimWorkerSlot(*reg, pid, start_time, id);
  if (index < 0) {
    awaiting_host.store(false, std::memory_order_relaxed);
    attach_error = ResourceExhausted("namespace \"" + ns + "\" has no free worker slot (at most " +
                                     std::to_string(shm::kMaxWorkers) + " workers)");
    return false;
  }
  attach_error = Status::Ok();
  registry = std::move(reg).value();
  slot = shm::WorkerSlotAt(registry.base(), static_cast<uint32_t>(index));
  use_ids = shm::Header(registry)->catalog_hash == catalog->hash();
  registry_header.store(shm::Header(registry), std::memory_order_release);
  attached.store(true, std::memory_order_release);
  FlushPreAttachLocked();
  return true;
}

// REQUIRES: mu held.
void Worker::Impl::MirrorUnringed() {
  if (slot != nullptr) StoreUnringed(unringed.Load(), &slot->unringed);
}

void Worker::Impl::StartBackground() {
  bg_stop = false;
  bg_started = false;  // no thread runs yet: nothing else reads it
  auto main = [](void* arg) -> void* {
    auto* self = static_cast<Impl*>(arg);
    // The work below runs with bg_mu held, so fork() (AtforkPrepare) finds this thread waiting.
    std::unique_lock<std::mutex> lock(self->bg_mu);
    self->bg_started = true;
    self->bg_cv.notify_all();
    while (!self->bg_stop) {
      if (!self->attached.load(std::memory_order_acquire)) {
        self->TryAttach();
      } else {
        std::lock_guard<std::mutex> l(self->mu);
        self->MirrorUnringed();
        // Threads without a ring see control updates through here (ring threads on emit).
        self->PollControlLocked();
      }
      self->bg_cv.wait_for(lock, std::chrono::milliseconds(50), [self] { return self->bg_stop; });
    }
    return nullptr;
  };
  bg_running = pthread_create(&bg, nullptr, main, this) == 0;
  // Return once the thread runs: a new thread's start (the C library's and a sanitizer's
  // set-up, which allocate) happens before it takes bg_mu, so a fork() right after Start
  // could otherwise find it mid-allocation.
  std::unique_lock<std::mutex> lock(bg_mu);
  bg_cv.wait(lock, [this] { return bg_started || !bg_running; });
}

void Worker::Impl::StopBackground() {
  if (!bg_running) return;
  {
    std::lock_guard<std::mutex> lock(bg_mu);
    bg_stop = true;
  }
  bg_cv.notify_all();
  pthread_join(bg, nullptr);
  bg_running = false;
}

void Worker::Impl::WakeHost() noexcept {
  shm::WakeIfSleeping(registry_header.load(std::memory_order_relaxed)->host_sleeping);
}

// ── fork ─────────────────────────────────────────────────────────────────────────────────────

// Called in the child of fork() (single-threaded): forget the parent's rings and slot.
void Worker::Impl::ForgetParentInChild() {
  if (rqueue) {
    // The transport's threads and connection belong to the parent: never touch them (not even
    // to destroy them) in the child, whose events are counted as dropped_no_ring.
    (void)rtransport.release();
    remote_orphaned.store(true, std::memory_order_relaxed);
    rqueue->counters.Reset();
    return;
  }
  for (auto& r : rings) r.reset();  // unmaps; never retires: the parent still writes them
  rings.clear();
  attached.store(false, std::memory_order_relaxed);
  registry_header.store(nullptr, std::memory_order_relaxed);
  slot = nullptr;
  registry = shm::Segment();
  bg_running = false;  // the thread does not exist in the child
  // The parent's background thread was waiting on bg_cv at fork() (AtforkPrepare): the child's
  // copies carry the state of a thread that does not exist here, and destroying or notifying
  // bg_cv would wait for that waiter forever. Re-create both in place; the copies are never
  // destroyed.
  new (&bg_mu) std::mutex();
  new (&bg_cv) std::condition_variable();
  bg_stop = false;
  forked = true;
  retired = Tally();
  unringed.Reset();
  if (pre_attach) pre_attach->ResetInChild();
  shared = nullptr;  // unmapped with the parent's rings above
  shared_lock.store(0, std::memory_order_relaxed);
  kept_in = nullptr;
  kept_until = 0;
}

void Worker::Impl::ReattachAfterFork() {
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

// ── process-wide registration ────────────────────────────────────────────────────────────────

void Worker::Impl::ArmThreadExit() { t_exit_hook.armed = true; }

Status Worker::Impl::Register() {
  std::lock_guard<std::mutex> lock(g_mu);
  static std::once_flag atfork_once;
  std::call_once(atfork_once, [] { pthread_atfork(AtforkPrepare, AtforkParent, AtforkChild); });
  for (uint32_t i = 0; i < kMaxWorkersPerProcess; ++i) {
    if (g_workers[i] == nullptr) {
      tls_index = i;
      instance = g_next_instance++;
      g_workers[i] = this;
      return Status::Ok();
    }
  }
  return ResourceExhausted("at most " + std::to_string(kMaxWorkersPerProcess) +
                           " pitlane::Worker objects may live in one process");
}

void Worker::Impl::Unregister() {
  std::lock_guard<std::mutex> lock(g_mu);
  if (g_workers[tls_index] == this) g_workers[tls_index] = nullptr;
}

// Retires every ring and hands the slot back (the host drains, reclaims and emits the
// worker's terminated event).
void Worker::Impl::Leave() {
  std::lock_guard<std::mutex> lock(g_mu);
  if (g_workers[tls_index] == this) g_workers[tls_index] = nullptr;
  std::lock_guard<std::mutex> l(mu);
  while (!rings.empty()) RetireLocked(rings.back().get());
  if (slot != nullptr) {
    MirrorUnringed();
    slot->state.store(shm::kSlotRetired, std::memory_order_release);
    shm::BumpEpoch(registry);
  }
}

}  // namespace pitlane
