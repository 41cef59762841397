// Runtime control of a worker's gate: toggle, sampling, allow/deny filters.
//
// The host validates a ControlState and ships it unchanged to the worker (shm control block or
// gRPC TelemetryControl); the worker compiles it against its own catalog into a GateTable, a
// per-event-id decision array, so the emit hot path is an array lookup, never a glob match.
// Both transports run this same code.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "pitlane/catalog.h"
#include "pitlane/status.h"

namespace pitlane {

inline constexpr size_t kMaxPatternsPerList = 32;

struct ControlState {
  bool enabled = true;
  double sampling_rate = 1.0;                  // in [0, 1]
  std::vector<std::string> sampling_patterns;  // empty: the rate applies to every event
  std::vector<std::string> allow;              // empty: everything allowed
  std::vector<std::string> deny;               // deny wins over allow

  // Ok, or INVALID_ARGUMENT naming the bad value (rate NaN / outside [0,1], malformed pattern,
  // more than kMaxPatternsPerList patterns in a list).
  Status Validate() const;
  bool operator==(const ControlState&) const = default;
};

// "enabled, sampling 0.5 of python.memory.*, allow all, deny python.cpu.*": how `pitlane ctl`
// shows a state and the host's log names one.
std::string Describe(const ControlState& state);

// What the gate does with an event id, decided once per control update. GateTable::decision
// holds only the toggle + sampling outcome; the filter outcome lives in GateTable::filtered.
enum class GateDecision : uint8_t {
  kPass = 0,        // enabled and not sampled: go on to the filter
  kSample = 1,      // Bernoulli draw against GateTable::sample_threshold, then the filter
  kSampledOut = 2,  // sampling rate 0 for this event: always suppressed (reason: sampled)
  kDisabled = 3,    // telemetry toggled off (reason: disabled)
};

// A compiled ControlState, indexed by catalog event id. The worker applies the gates in the
// documented order enabled -> sampling -> filter, so it counts each suppressed event under the
// first gate that stops it:
//
//   switch (decision[id]) {
//     case kDisabled:   suppressed, reason disabled
//     case kSampledOut: suppressed, reason sampled
//     case kSample:     if (!(draw < sample_threshold)) suppressed, reason sampled; else as kPass
//     case kPass:       if (filtered[id]) suppressed, reason filtered; else encode
//   }
//
// Index 0 stands for an event emitted by a name the catalog does not know, decided as if no
// pattern matched that name (sampling applies only when sampling_patterns is empty; the filter
// rejects it only when allow is non-empty). For the exact answer on a given name, use
// SamplingDecisionForName and FilterRejectsName (slow path: glob matches against the name).
struct GateTable {
  // size catalog.event_count() + 1; one of kPass, kSample, kSampledOut, kDisabled.
  std::vector<GateDecision> decision;
  // size catalog.event_count() + 1; 1 = the filter rejects this event (deny matches, or allow
  // is non-empty and nothing in it matches). Independent of enabled and sampling.
  std::vector<uint8_t> filtered;
  // Pass a kSample event when draw < sample_threshold, draw uniform over [0, 2^64):
  // floor(rate × 2^64). Not consulted for rate 0 (kSampledOut) or rate 1 (kPass).
  uint64_t sample_threshold = 0;

  // REQUIRES: state.Validate().ok() (an unvalidated state compiles without crashing: a NaN or
  // negative rate acts as 0, a rate above 1 as 1).
  static GateTable Compile(const ControlState& state, const Catalog& catalog);
  // Toggle + sampling outcome for a name the catalog does not know: kDisabled, kSampledOut,
  // kSample or kPass, by glob-matching the sampling patterns against the name itself.
  static GateDecision SamplingDecisionForName(const ControlState& state, std::string_view name);
  // Whether the filter rejects that name (deny wins; a non-empty allow list must match it).
  // The caller checks it only after SamplingDecisionForName let the event through.
  static bool FilterRejectsName(const ControlState& state, std::string_view name);
};

}  // namespace pitlane
