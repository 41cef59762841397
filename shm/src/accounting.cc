#include "pitlane/accounting.h"

#include <algorithm>

namespace pitlane {

std::string_view EmitResultName(EmitResult r) {
  switch (r) {
    case EmitResult::kOk: return "ok";
    case EmitResult::kDroppedFull: return "dropped_full";
    case EmitResult::kDroppedTooLarge: return "dropped_too_large";
    case EmitResult::kDroppedNoRing: return "dropped_no_ring";
    case EmitResult::kSuppressedDisabled: return "suppressed_disabled";
    case EmitResult::kSuppressedSampled: return "suppressed_sampled";
    case EmitResult::kSuppressedFiltered: return "suppressed_filtered";
    case EmitResult::kOkTruncated: return "ok_truncated";
    case EmitResult::kDroppedOverLimit: return "dropped_over_limit";
    case EmitResult::kBuffered: return "buffered";
  }
  return "unknown";
}

void Tally::Count(EmitResult r) {
  if (r == EmitResult::kBuffered) return;  // counted when it is published or dropped
  ++emitted;
  ++OutcomeField(*this, r);
}

Tally& Tally::operator+=(const Tally& o) {
  emitted += o.emitted;
  published += o.published;
  dropped_full += o.dropped_full;
  dropped_too_large += o.dropped_too_large;
  dropped_no_ring += o.dropped_no_ring;
  dropped_in_flight += o.dropped_in_flight;
  suppressed_disabled += o.suppressed_disabled;
  suppressed_sampled += o.suppressed_sampled;
  suppressed_filtered += o.suppressed_filtered;
  delivered += o.delivered;
  truncated += o.truncated;
  for (uint32_t i = 0; i < shm::kRejectReasonCount; ++i) rejected[i] += o.rejected[i];
  return *this;
}

namespace {

uint64_t Load(const std::atomic<uint64_t>& a) { return a.load(std::memory_order_relaxed); }
// An outcome count read before `emitted`: acquire keeps the later load of `emitted` after it.
// With the writer's order (emitted, then the outcome) the reading never shows more outcomes
// than events. The writers store with relaxed order and rely on x86-64's store order, the only
// target pitlane builds for (it reads the TSC and spins with _mm_pause).
uint64_t LoadOutcome(const std::atomic<uint64_t>& a) { return a.load(std::memory_order_acquire); }

}  // namespace

void EmitCounters::CountOutcome(EmitResult r) noexcept {
  if (r == EmitResult::kBuffered) return;  // counted when it is published or dropped
  OutcomeField(*this, r).fetch_add(1, std::memory_order_relaxed);
}

Tally EmitCounters::Load() const {
  Tally t;
  t.published = LoadOutcome(published);
  t.dropped_full = LoadOutcome(dropped_full);
  t.dropped_too_large = LoadOutcome(dropped_too_large);
  t.dropped_no_ring = LoadOutcome(dropped_no_ring);
  t.suppressed_disabled = LoadOutcome(suppressed_disabled);
  t.suppressed_sampled = LoadOutcome(suppressed_sampled);
  t.suppressed_filtered = LoadOutcome(suppressed_filtered);
  t.emitted = pitlane::Load(emitted);
  return t;
}

void EmitCounters::Reset() {
  for (auto* c : {&emitted, &published, &dropped_full, &dropped_too_large, &dropped_no_ring,
                  &suppressed_disabled, &suppressed_sampled, &suppressed_filtered}) {
    c->store(0, std::memory_order_relaxed);
  }
}

void HostSideMirror::Store(const Tally& t) {
  delivered_.store(t.delivered, std::memory_order_relaxed);
  truncated_.store(t.truncated, std::memory_order_relaxed);
  for (uint32_t i = 0; i < shm::kRejectReasonCount; ++i) {
    rejected_[i].store(t.rejected[i], std::memory_order_relaxed);
  }
}

Tally HostSideMirror::Load() const {
  Tally t;
  t.delivered = pitlane::Load(delivered_);
  t.truncated = pitlane::Load(truncated_);
  for (uint32_t i = 0; i < shm::kRejectReasonCount; ++i) t.rejected[i] = pitlane::Load(rejected_[i]);
  return t;
}


Tally ReadHostCounters(const shm::HostCounters& c) {
  Tally t;
  t.delivered = Load(c.delivered);
  t.truncated = Load(c.truncated);
  for (uint32_t i = 0; i < shm::kRejectReasonCount; ++i) t.rejected[i] = Load(c.rejected[i]);
  return t;
}

Tally ReadRing(const shm::WorkerCounters& c, const Tally& host_side) {
  Tally t = host_side;
  t.published = LoadOutcome(c.published);
  t.dropped_full = LoadOutcome(c.dropped_full);
  t.dropped_too_large = LoadOutcome(c.dropped_too_large);
  t.suppressed_disabled = LoadOutcome(c.suppressed_disabled);
  t.suppressed_sampled = LoadOutcome(c.suppressed_sampled);
  t.suppressed_filtered = LoadOutcome(c.suppressed_filtered);
  t.emitted = Load(c.emitted);  // last (see LoadOutcome)
  // A record the host read carries its sequence number: it was published, whether or not the
  // writer has counted it yet (it counts after its release store of the producer position).
  t.published = std::max(t.published, t.delivered + t.rejected_total());
  return t;
}

LawVerdict JudgeLaw(const Tally& t, bool live, bool unverifiable) {
  if (unverifiable) return LawVerdict::kUnverifiable;
  if (t.Conserved()) return LawVerdict::kHolds;
  return live && t.Consistent() ? LawVerdict::kInFlight : LawVerdict::kViolated;
}

const char* LawVerdictName(LawVerdict v) {
  switch (v) {
    case LawVerdict::kHolds: return "holds";
    case LawVerdict::kInFlight: return "in flight";
    case LawVerdict::kViolated: return "VIOLATED";
    case LawVerdict::kUnverifiable: return "unverifiable";
  }
  return "?";
}

std::string LawMismatch(const Tally& t) {
  std::string out;
  if (t.in_flight() != 0) {
    out = "emitted " + std::to_string(t.emitted) + " != suppressed " +
          std::to_string(t.suppressed()) + " + dropped " + std::to_string(t.dropped()) +
          " + published " + std::to_string(t.published);
  }
  if (t.unread() != 0) {
    if (!out.empty()) out += "; ";
    out += "published " + std::to_string(t.published) + " != delivered " +
           std::to_string(t.delivered) + " + rejected " + std::to_string(t.rejected_total());
  }
  return out;
}

Tally ReadUnringed(const shm::UnringedCounters& c) {
  Tally t;
  t.dropped_no_ring = LoadOutcome(c.dropped_no_ring);
  t.suppressed_disabled = LoadOutcome(c.suppressed_disabled);
  t.suppressed_sampled = LoadOutcome(c.suppressed_sampled);
  t.suppressed_filtered = LoadOutcome(c.suppressed_filtered);
  t.emitted = Load(c.emitted);
  return t;
}

void StoreUnringed(const Tally& t, shm::UnringedCounters* c) {
  // `emitted` first: a reader (ReadUnringed: outcomes, then emitted) never sees more outcomes
  // than events.
  c->emitted.store(t.emitted, std::memory_order_relaxed);
  c->dropped_no_ring.store(t.dropped_no_ring, std::memory_order_release);
  c->suppressed_disabled.store(t.suppressed_disabled, std::memory_order_release);
  c->suppressed_sampled.store(t.suppressed_sampled, std::memory_order_release);
  c->suppressed_filtered.store(t.suppressed_filtered, std::memory_order_release);
}

}  // namespace pitlane
