#include "gate.h"

namespace pitlane::internal {

void GateSet::Install(const ControlState& state, const Catalog& catalog, uint64_t version,
                      uint64_t quarantine_epoch) {
  auto g = std::make_unique<Gate>();
  g->table = GateTable::Compile(state, catalog);
  g->state = state;
  g->version = version;
  g->quarantine_epoch = quarantine_epoch;
  // Release pairs with the acquire load in current().
  current_.store(g.get(), std::memory_order_release);
  all_.push_back(std::move(g));
}

void GateSet::Clear() {
  current_.store(nullptr, std::memory_order_relaxed);
  all_.clear();
}

}  // namespace pitlane::internal
