// The worker's gate: enabled → sampling → filter, decided from a compiled control state.
//
// A Gate is immutable once installed. Control updates are rare; each installs a new Gate
// (one small allocation) that lives as long as the worker, so the emit path can hold a plain
// pointer to the gate it last saw without reference counting.
#pragma once

#include <x86intrin.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include "pitlane/accounting.h"
#include "pitlane/control.h"
#include "pitlane/worker.h"

namespace pitlane::internal {

struct Gate {
  GateTable table;
  ControlState state;
  uint64_t version = 0;           // the control-block version it was compiled from
  uint64_t quarantine_epoch = 0;  // the host's quarantine count for this worker at that time
};

// The gates a worker has installed; current() is what new emits use.
// Thread safety: Install under the owner's mutex; current() from any thread.
class GateSet {
 public:
  void Install(const ControlState& state, const Catalog& catalog, uint64_t version,
               uint64_t quarantine_epoch);
  // Acquire pairs with the release store in Install: the Gate's contents are visible.
  const Gate* current() const { return current_.load(std::memory_order_acquire); }
  void Clear();  // REQUIRES: no emit in progress (destruction, a forked child)

 private:
  std::vector<std::unique_ptr<Gate>> all_;
  std::atomic<const Gate*> current_{nullptr};
};

// Per-thread sampling generator (xorshift64*), seeded from the thread's address and the TSC.
inline uint64_t NextRandom() noexcept {
  thread_local uint64_t state = 0;
  uint64_t x = state;
  if (x == 0) [[unlikely]] {
    x = (reinterpret_cast<uintptr_t>(&state) * 0x9E3779B97F4A7C15ull) ^ __rdtsc() ^ 1;
  }
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  state = x;
  return x * 0x2545F4914F6CDD1Dull;
}

// enabled → sampling → filter. kOk means "passes the gate"; otherwise the suppression reason.
inline EmitResult Decide(const Gate* g, EventHandle ev) noexcept {
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

}  // namespace pitlane::internal
