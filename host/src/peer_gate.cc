#include "peer_gate.h"

#include <utility>

namespace pitlane::internal {

ControlState PeerGate::PeerPart(const ControlState& state) {
  ControlState peer;
  peer.enabled = state.enabled;
  return peer;
}

void PeerGate::Update(const ControlState& state, const Catalog& catalog) {
  auto table = std::make_shared<const GateTable>(GateTable::Compile(state, catalog));
  std::lock_guard<std::mutex> lock(mu_);
  table_ = std::move(table);
}

PeerGate::Verdict PeerGate::Judge(uint16_t event_id) {
  std::shared_ptr<const GateTable> table;
  {
    std::lock_guard<std::mutex> lock(mu_);
    table = table_;
  }
  if (!table || event_id >= table->decision.size()) return Verdict::kPass;
  switch (table->decision[event_id]) {
    case GateDecision::kDisabled:
      return Verdict::kDisabled;
    case GateDecision::kSampledOut:
      return Verdict::kSampled;
    case GateDecision::kSample:
      if (!(rng_() < table->sample_threshold)) return Verdict::kSampled;
      break;
    case GateDecision::kPass:
      break;
  }
  return table->filtered[event_id] ? Verdict::kFiltered : Verdict::kPass;
}

}  // namespace pitlane::internal
