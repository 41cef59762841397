// Worker::Impl: the state of a worker and the two lanes an emit can take.
//
//   Emit ─► EmitVia<Lane> (emit.cc): Admit (count emitted, gate) → Prepare record → Reserve →
//           Write → Commit
//   RingLane  (rings.cc): the thread's own shm ring; threads without one count as ringless
//   QueueLane (emit.cc): the bounded queue the gRPC transport streams from
//   the gate and control state (gate.h / gate.cc)
//
// Thread safety: `mu` guards the rings, the registry attachment and the installed gates; the
// emit path reads them lock-free through the atomics and the thread-local ring cache.
#pragma once

#include <pthread.h>
#include <sys/types.h>

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "gate.h"
#include "pitlane/registry.h"
#include "pre_attach.h"
#include "pitlane/shm.h"
#include "pitlane/worker.h"
#include "remote.h"

namespace pitlane {

namespace internal {

// A thread's ring and what it last saw of the control block.
struct ThreadRing {
  shm::Segment segment;
  shm::RingWriter writer;
  uint32_t ring_slot = 0;
  const std::atomic<uint64_t>* control_version = nullptr;
  uint64_t seen_version = 0;
  const Gate* gate = nullptr;
  uint64_t quarantine_epoch_seen = 0;
};

inline constexpr uint32_t kMaxWorkersPerProcess = 16;

// Per thread, per Worker (by process-local index): the thread's ring, valid while `instance`
// equals the owning Worker's instance number. Defined in rings.cc; constinit so the emit path
// reads it without a TLS wrapper call.
//
// A thread's events must reach the host in the order it emitted them, and the host reads each
// ring in turn, a batch at a time. So a thread whose events went into the shared ring (over
// the cap, or kept before the attach, which publishes them there) writes only there until the
// host has read past its last one there (`unread_in`, `unread_until`); then it may take a ring
// of its own.
struct TlsEntry {
  uint64_t instance = 0;
  ThreadRing* ring = nullptr;
  uint64_t denied_at_retire_count = ~uint64_t{0};  // ring cap reached at this retire count
  bool kept = false;  // the pre-attach buffer holds events of this thread: the attach's ring
  const ThreadRing* unread_in = nullptr;  // the shared ring, while the host has not read ...
  uint64_t unread_until = 0;              // ... up to this producer position
};
extern thread_local constinit TlsEntry t_rings[kMaxWorkersPerProcess];

// The two lanes an emit can take. Admit counts the event as emitted and runs the gate (a
// non-kOk result is the event's outcome, already counted); Reserve returns where to write
// `size` bytes or counts the drop; Commit publishes.
struct RingLane {  // ring_lane.h: inline, the emit hot path
  ThreadRing* ring = nullptr;
  bool shared = false;  // `ring` is the worker's shared ring, locked until Commit / a drop
  EmitResult Admit(Worker::Impl& w, EventHandle ev) noexcept;
  uint8_t* Reserve(Worker::Impl& w, size_t size, EmitResult* drop) noexcept;
  void Commit(Worker::Impl& w) noexcept;
};
struct QueueLane {  // emit.cc
  EmitResult Admit(Worker::Impl& w, EventHandle ev) noexcept;
  uint8_t* Reserve(Worker::Impl& w, size_t size, EmitResult* drop) noexcept;
  void Commit(Worker::Impl& w) noexcept;
};
// Before any host is attached (RingLane::Admit said kBuffered): the pre-attach buffer. Its
// events are counted (unringed) only when dropped here, or when the flush publishes them.
struct PreAttachLane {  // rings.cc
  uint8_t* Reserve(Worker::Impl& w, size_t size, EmitResult* drop) noexcept;
  void Commit(Worker::Impl& w) noexcept;
};

}  // namespace internal

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
  Status attach_error;  // why the last attach attempt failed (GUARDED_BY(mu))

  internal::GateSet gates;

  std::vector<std::unique_ptr<internal::ThreadRing>> rings;
  std::atomic<uint64_t> retire_count{0};
  Tally retired;                  // counts of rings that are gone (GUARDED_BY(mu))
  EmitCounters unringed;          // events of threads without a ring
  // Events emitted before the first attach, published by the attach (shm mode only), while
  // the namespace simply has no host yet (the last attach found no registry): an incompatible
  // or full registry means no attach is coming, and events count as dropped_no_ring at once.
  std::unique_ptr<internal::PreAttachBuffer> pre_attach;
  std::atomic<bool> awaiting_host{true};

  // Threads beyond max_rings share one more ring instead of losing their events: whoever holds
  // `shared_lock` is its single producer (a spin lock around one emit). `shared` is created
  // on first need (or by the attach, for the kept events) and replaced with both shared_lock
  // and mu held, so either lock makes it safe to read.
  internal::ThreadRing* shared = nullptr;
  std::atomic<uint32_t> shared_lock{0};
  // Returns the shared ring locked (UnlockShared releases it), or nullptr (unlocked) when the
  // worker is not attached or no ring can be had.
  internal::ThreadRing* LockShared() noexcept;
  void UnlockShared() noexcept;
  // The shared ring, locked, while the host has not read this thread's last record in it
  // (TlsEntry); nullptr (unlocked) once it has, and the thread may take a ring of its own.
  internal::ThreadRing* LockSharedWhileUnread(internal::TlsEntry& t) noexcept;
  // After this thread committed a record into the shared ring (still locked).
  void NoteSharedWrite() noexcept;
  // Where the attach published the kept events (the shared ring, or nullptr when it had no
  // ring for them) and the producer position after them (GUARDED_BY(mu)).
  const internal::ThreadRing* kept_in = nullptr;
  uint64_t kept_until = 0;

  // ── gRPC mode (rqueue set): the queue the transport drains; the transport itself ──
  std::unique_ptr<internal::RemoteQueue> rqueue;
  std::unique_ptr<internal::RemoteTransport> rtransport;
  std::atomic<bool> remote_orphaned{false};  // a forked child: no transport of its own

  // ── background thread (attach, mirror counters, control for ringless threads) ──
  pthread_t bg{};
  bool bg_running = false;
  std::mutex bg_mu;
  std::condition_variable bg_cv;
  bool bg_stop = false;
  bool bg_started = false;  // guarded by bg_mu: the thread runs (StartBackground waits for it)

  // rings.cc
  EmitResult EmitUnringed(EventHandle ev) noexcept;
  internal::ThreadRing* AcquireRing() noexcept;
  internal::ThreadRing* CreateRingLocked(bool for_shared = false);
  internal::ThreadRing* OnControlChange(internal::ThreadRing* r, uint64_t version) noexcept;
  void RetireLocked(internal::ThreadRing* r);
  bool TryAttach();
  void MirrorUnringed();
  void PollControlLocked();
  void StartBackground();
  void StopBackground();
  void WakeHost() noexcept;
  void ForgetParentInChild();
  void ReattachAfterFork();
  void ArmThreadExit();
  Status Register();  // takes one of the process's kMaxWorkersPerProcess places
  void Unregister();
  void Leave();  // destruction: retire every ring, hand the slot back
  // REQUIRES: mu held, attached. Publishes the pre-attach buffer through the shared ring.
  void FlushPreAttachLocked();
  // Counts what is still buffered as dropped_no_ring (no host ever came).
  void DropPreAttach();

  // worker.cc
  Status StartRemote(const WorkerOptions& o);
  Tally Counts() const;
  Status AttachStatus() const;
};

}  // namespace pitlane
