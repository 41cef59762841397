// pitlane accounting: the one vocabulary every layer counts events in.
//
// Every event a worker emits ends in exactly one outcome, and every published record in exactly
// one host outcome. Per ring, per worker and per namespace the conservation law holds:
//
//   emitted   = suppressed + dropped + published     (worker side: EmitResult outcomes)
//   published = delivered + rejected                 (host side, once everything is read)
//
// `Tally` holds both sides. The ring segment, the worker's process memory, the gRPC
// `WorkerCounters` message, the host's per-ring and per-worker statistics, `pitlane stat`, the
// admin service and Prometheus all speak it; each boundary has one conversion (ReadWorkerCounters
// / ReadHostCounters / ReadUnringed / StoreUnringed here, TallyToProto / TallyFromProto in
// grpc_common.h).
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <string_view>

#include "pitlane/shm_layout.h"

namespace pitlane {

// The outcome of one emit; each value names exactly one Tally count (kOk, kOkTruncated:
// published; kDroppedOverLimit: dropped_too_large), except kBuffered, an event not counted yet.
enum class EmitResult : uint8_t {
  kOk = 0,
  kDroppedFull,         // ring (or gRPC queue) full: the newest event is dropped, never blocks
  kDroppedTooLarge,     // record larger than the ring's max record size, or > 255 fields
  kDroppedNoRing,       // no host attached yet, or the ring cap is reached
  kSuppressedDisabled,  // telemetry toggled off
  kSuppressedSampled,   // lost the sampling draw
  kSuppressedFiltered,  // denied, or not in the allow list
  // Published with a value cut to the catalog's max_value_bytes, where the host would cut it.
  kOkTruncated,
  // Over the catalog's limits (field counts, key or correlation id length): the host would
  // reject it. Counted as dropped_too_large.
  kDroppedOverLimit,
  // No host yet: kept (in order, bounded) until the worker's first ring; counted when it is
  // published or dropped then (worker/src/pre_attach.h).
  kBuffered,
};
std::string_view EmitResultName(EmitResult r);

struct Tally {
  // ── worker side ──
  uint64_t emitted = 0;
  uint64_t published = 0;  // shm: committed to a ring; gRPC: handed to the stream
  uint64_t dropped_full = 0;
  uint64_t dropped_too_large = 0;
  uint64_t dropped_no_ring = 0;
  // Filled by the host, never by a worker: events a worker counted as emitted but that died
  // with it (killed inside an emit) or were sent over gRPC and never arrived.
  uint64_t dropped_in_flight = 0;
  uint64_t suppressed_disabled = 0;
  uint64_t suppressed_sampled = 0;
  uint64_t suppressed_filtered = 0;
  // ── host side ──
  uint64_t delivered = 0;
  uint64_t truncated = 0;  // delivered with a value cut to the catalog's max value size
  uint64_t rejected[shm::kRejectReasonCount] = {};

  uint64_t suppressed() const {
    return suppressed_disabled + suppressed_sampled + suppressed_filtered;
  }
  uint64_t dropped() const {
    return dropped_full + dropped_too_large + dropped_no_ring + dropped_in_flight;
  }
  uint64_t rejected_total() const {
    uint64_t n = 0;
    for (uint64_t r : rejected) n += r;
    return n;
  }
  // emitted − (suppressed + dropped + published): events inside an emit at the moment of reading.
  int64_t in_flight() const {
    return static_cast<int64_t>(emitted - suppressed() - dropped() - published);
  }
  // published − (delivered + rejected): records the host has not read yet.
  int64_t unread() const { return static_cast<int64_t>(published - delivered - rejected_total()); }

  // The law, exactly: nothing in flight, nothing unread, every event in one outcome.
  bool Conserved() const { return in_flight() == 0 && unread() == 0; }
  // What a reading taken while events flow must satisfy: no outcome count exceeds what explains
  // it (events may be in flight or unread, never negative). Readers get this by reading in the
  // order of ReadWorkerCounters; a reading that fails it means a counter is wrong.
  bool Consistent() const { return in_flight() >= 0 && unread() >= 0; }

  // Adds one event with outcome `r` (emitted and the outcome's count).
  void Count(EmitResult r);
  Tally& operator+=(const Tally& o);
};

// What a reading of a Tally says about the law, the one rule the host's table, `pitlane stat`
// and the demo apply:
//   kHolds        Conserved()
//   kInFlight     `live` (read while its writer may still emit) and Consistent(): events are
//                 inside an emit or not read yet
//   kViolated     anything else: a count is wrong
//   kUnverifiable `unverifiable` (its segment was truncated, or could not be read): its
//                 worker-side counts are only as last read, so nothing can be judged
enum class LawVerdict { kHolds, kInFlight, kViolated, kUnverifiable };
LawVerdict JudgeLaw(const Tally& t, bool live, bool unverifiable = false);
// "holds", "in flight", "VIOLATED", "unverifiable"
const char* LawVerdictName(LawVerdict v);
// Which equation fails and by how much, e.g. "emitted 5 != suppressed 1 + dropped 0 +
// published 3"; the two failing equations joined by "; "; empty when Conserved().
std::string LawMismatch(const Tally& t);

// Process-memory counters of emits that did not go through a ring's counters (threads without a
// ring; the gRPC transport). Any thread may count; any thread may Load.
struct EmitCounters {
  std::atomic<uint64_t> emitted{0}, published{0}, dropped_full{0}, dropped_too_large{0},
      dropped_no_ring{0}, suppressed_disabled{0}, suppressed_sampled{0}, suppressed_filtered{0};

  // Counts the outcome only (emitted is counted when the emit starts, see Tally's read order).
  void CountOutcome(EmitResult r) noexcept;
  // Outcomes first, `emitted` last: a reading is Consistent() while emits run.
  Tally Load() const;
  void Reset();
};

// The host-side counts of a Tally, for readers on other threads: one thread stores (the poll
// thread, after a batch), any thread loads. Host memory only: no worker can write it.
class HostSideMirror {
 public:
  void Store(const Tally& t);
  // Only what one delivery or one rejection changed (the poll thread's per-event path).
  void StoreDelivered(const Tally& t) {
    delivered_.store(t.delivered, std::memory_order_relaxed);
    truncated_.store(t.truncated, std::memory_order_relaxed);
  }
  void StoreRejected(const Tally& t, uint32_t reason) {
    rejected_[reason].store(t.rejected[reason], std::memory_order_relaxed);
  }
  Tally Load() const;

 private:
  std::atomic<uint64_t> delivered_{0}, truncated_{0};
  std::atomic<uint64_t> rejected_[shm::kRejectReasonCount] = {};
};

// The one mapping of an emit's outcome onto its count: the field of `c` (a Tally, EmitCounters
// or a ring's shm::WorkerCounters — they share field names) that `r` increments; kOk and
// kOkTruncated are published. REQUIRES: r is not kBuffered (counted later, when it is
// published or dropped); for a ring's counters, not kDroppedNoRing (a ring exists). Inline:
// the emit path counts every outcome through it.
template <class Counters>
inline auto& OutcomeField(Counters& c, EmitResult r) {
  switch (r) {
    case EmitResult::kOk:
    case EmitResult::kOkTruncated:
    case EmitResult::kBuffered: return c.published;
    case EmitResult::kDroppedFull: return c.dropped_full;
    case EmitResult::kDroppedTooLarge:
    case EmitResult::kDroppedOverLimit: return c.dropped_too_large;
    case EmitResult::kDroppedNoRing:
      if constexpr (requires { c.dropped_no_ring; }) return c.dropped_no_ring;
      return c.dropped_too_large;  // unreachable for a ring (see REQUIRES)
    case EmitResult::kSuppressedDisabled: return c.suppressed_disabled;
    case EmitResult::kSuppressedSampled: return c.suppressed_sampled;
    case EmitResult::kSuppressedFiltered: break;
  }
  return c.suppressed_filtered;
}

// Copies of counters in shared memory. They read plain atomics and validate nothing: a caller
// reading a mapping someone else can resize runs them under shm::Guarded.
//
// One reading of a ring: the host side first (the host's own counts, or ReadHostCounters of the
// segment), then ReadRing, which reads the worker's outcomes before `emitted` (the writer counts
// `emitted` before an outcome) and counts a record the host has read as published even when the
// writer has not yet counted it (it counts after its release store). A reading taken that way
// while the writer runs is always Consistent().
Tally ReadHostCounters(const shm::HostCounters& c);
Tally ReadRing(const shm::WorkerCounters& worker, const Tally& host_side);
Tally ReadUnringed(const shm::UnringedCounters& c);
void StoreUnringed(const Tally& t, shm::UnringedCounters* c);

}  // namespace pitlane
