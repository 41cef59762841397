// The shared-memory lane of the emit path, inline: the thread's ring from its thread-local
// cache, a control refresh when the host changed the block, the gate, reserve and commit.
// Slow paths (the first emit of a thread, a control change, a quarantined ring) are in rings.cc.
// Forced inline: GCC 12 keeps these out of line in EmitVia, which costs ~15 instructions per
// emit (callgrind, BM_Emit_Shm) over the single function the emit path was before the lanes.
#pragma once

#include "worker_impl.h"

namespace pitlane::internal {

[[gnu::always_inline]] inline EmitResult RingLane::Admit(Worker::Impl& w, EventHandle ev) noexcept {
  TlsEntry& t = t_rings[w.tls_index];
  ThreadRing* r = t.instance == w.instance ? t.ring : nullptr;
  if (r == nullptr) [[unlikely]] {
    // Earlier events of this thread the host has not read in the shared ring: follow them.
    r = t.instance == w.instance && (t.kept || t.unread_in != nullptr)
            ? w.LockSharedWhileUnread(t)
            : nullptr;
    if (r != nullptr) {
      shared = true;
    } else if ((r = w.AcquireRing()) == nullptr) {
      // Over the ring cap: the shared ring, if there is one to be had.
      r = w.attached.load(std::memory_order_acquire) ? w.LockShared() : nullptr;
      if (r == nullptr) return w.EmitUnringed(ev);
      shared = true;
    }
  }
  const uint64_t version = r->control_version->load(std::memory_order_relaxed);
  if (version != r->seen_version) [[unlikely]] {
    r = w.OnControlChange(r, version);
    if (r == nullptr) {
      if (shared) w.UnlockShared();
      return w.EmitUnringed(ev);
    }
  }
  shm::WorkerCounters& c = r->writer.counters();
  shm::RingWriter::Bump(c.emitted);
  const EmitResult gated = Decide(r->gate, ev);
  if (gated != EmitResult::kOk) [[unlikely]] {
    shm::RingWriter::Bump(OutcomeField(c, gated));
    if (shared) w.UnlockShared();
    return gated;
  }
  ring = r;
  return EmitResult::kOk;
}

[[gnu::always_inline]] inline uint8_t* RingLane::Reserve(Worker::Impl& w, size_t size, EmitResult* drop) noexcept {
  shm::RingWriter::Reserve why = shm::RingWriter::Reserve::kTooLarge;
  uint8_t* at = size != 0 && size < 0xFFFFFFF0u
                    ? ring->writer.TryReserve(static_cast<uint32_t>(size), &why)
                    : nullptr;
  if (at == nullptr) [[unlikely]] {
    shm::WorkerCounters& c = ring->writer.counters();
    const bool full = why == shm::RingWriter::Reserve::kFull;
    *drop = full ? EmitResult::kDroppedFull : EmitResult::kDroppedTooLarge;
    shm::RingWriter::Bump(full ? c.dropped_full : c.dropped_too_large);
    if (shared) w.UnlockShared();
  }
  return at;
}

[[gnu::always_inline]] inline void RingLane::Commit(Worker::Impl& w) noexcept {
  ring->writer.Commit();
  if (shared) [[unlikely]] {
    w.NoteSharedWrite();
    w.UnlockShared();
  }
  // One FUTEX_WAKE if the host flagged itself asleep.
  if (w.registry_header.load(std::memory_order_relaxed)->host_sleeping.load(
          std::memory_order_relaxed) != 0) [[unlikely]] {
    w.WakeHost();
  }
}

}  // namespace pitlane::internal
