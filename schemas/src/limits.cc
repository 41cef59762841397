#include "pitlane/limits.h"

namespace pitlane {

LimitBreach CheckEventLimits(const CatalogLimits& limits, std::span<const Measurement> measurements,
                             std::span<const Metadata> metadata,
                             std::string_view correlation_id) noexcept {
  if (measurements.size() > limits.max_measurements || metadata.size() > limits.max_metadata) {
    return LimitBreach::kTooManyFields;
  }
  if (correlation_id.size() > limits.max_correlation_id_bytes) {
    return LimitBreach::kCorrelationIdTooLong;
  }
  // A key given by id is the catalog's own spelling, which the catalog keeps within the limit.
  for (const Measurement& m : measurements) {
    if (m.key_id == 0 && m.key.size() > limits.max_key_bytes) return LimitBreach::kKeyTooLong;
  }
  for (const Metadata& m : metadata) {
    if (m.key_id == 0 && m.key.size() > limits.max_key_bytes) return LimitBreach::kKeyTooLong;
  }
  return LimitBreach::kNone;
}

}  // namespace pitlane
