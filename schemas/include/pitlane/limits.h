// The catalog's limits on one event (CatalogLimits, catalog.h; values in schemas/catalog.txt),
// as rules both sides apply: the host when it folds an event, the worker when it emits one, so
// a worker never publishes an event the host would reject for its size, and cuts a long value
// where the host would cut it.
//
// Thread safety: pure functions.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>

#include "pitlane/catalog.h"
#include "pitlane/record.h"

namespace pitlane {

// Which limit an event breaks; the host rejects it under the reject reason of the same name.
enum class LimitBreach : uint8_t {
  kNone = 0,
  kTooManyFields,          // more than max_measurements measurements or max_metadata metadata
  kKeyTooLong,             // a key longer than max_key_bytes
  kCorrelationIdTooLong,   // a correlation id longer than max_correlation_id_bytes
};

// The first limit the event breaks, in the host's order: field counts, correlation id, keys.
LimitBreach CheckEventLimits(const CatalogLimits& limits, std::span<const Measurement> measurements,
                             std::span<const Metadata> metadata,
                             std::string_view correlation_id) noexcept;

// `s` cut to at most `max_bytes` without splitting a UTF-8 sequence; sets *truncated when cut.
inline std::string_view TruncateValue(std::string_view s, size_t max_bytes,
                                      bool* truncated) noexcept {
  if (s.size() <= max_bytes) [[likely]] return s;
  *truncated = true;
  size_t n = max_bytes;
  while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80) --n;
  return s.substr(0, n);
}

}  // namespace pitlane
