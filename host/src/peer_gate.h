// The part of a worker's control state the host applies itself, for a dial-out peer that is
// not a pitlane worker (Snakepit's Python worker, say).
//
// Such a peer applies the toggle as pitlane means it, but not the rest: Snakepit's worker
// samples every event at the rate whatever the patterns (sampling one pattern silences or
// thins the whole worker), and matches allow/deny against the name it emits only (deny
// `python.tool.*` does not stop its `tool.execution.*` events). So it is sent only the toggle,
// with rate 1 and an empty filter, and the host decides sampling and filters on arrival with
// the same compiled table (GateTable) a pitlane worker uses, counting what it stops as
// suppressed (sampled / filtered) for that worker. What `pitlane ctl show` reports is then what
// happens. A dial-out stream is gated this way until the peer shows it is a pitlane worker
// (its x-pitlane-pid header on the first message).
//
// Thread safety: Update from any thread; Judge from one thread (the poll thread) at a time.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <random>

#include "pitlane/catalog.h"
#include "pitlane/control.h"

namespace pitlane::internal {

class PeerGate {
 public:
  enum class Verdict : uint8_t { kPass, kDisabled, kSampled, kFiltered };

  // What the peer is sent: the toggle; sampling rate 1 for every event; no filter.
  static ControlState PeerPart(const ControlState& state);

  // Takes `state` as the worker's control from now on.
  void Update(const ControlState& state, const Catalog& catalog);
  // For the event the catalog calls `event_id` (0: a name it does not know), by the gate order
  // enabled -> sampling -> filter.
  Verdict Judge(uint16_t event_id);

 private:
  std::mutex mu_;
  std::shared_ptr<const GateTable> table_;  // guarded by mu_; null: nothing to apply
  std::mt19937_64 rng_{std::random_device{}()};
};

}  // namespace pitlane::internal
