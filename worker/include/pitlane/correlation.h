// Correlation ids: a per-thread current id that emits pick up when they are given none.
//
// Thread safety: the current id is thread_local; scopes must be destroyed on the thread that
// created them, in reverse order (they are RAII objects on the stack).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "pitlane/catalog.h"

namespace pitlane {

// The catalog's default limit (schemas/catalog.txt): longer ids are rejected by the host.
inline constexpr size_t kMaxCorrelationIdBytes = CatalogLimits{}.max_correlation_id_bytes;

// A fresh random id: "pl-" + 24 hex digits (27 bytes), like the typical ids of the catalog.
std::string NewCorrelationId();

// The current thread's id; empty when none is set.
std::string_view CurrentCorrelationId() noexcept;

// Sets the current id for its lifetime and restores the previous one when destroyed. Ids longer
// than kMaxCorrelationIdBytes are cut (the host would reject them).
class CorrelationScope {
 public:
  explicit CorrelationScope(std::string_view id) noexcept;
  ~CorrelationScope();
  CorrelationScope(const CorrelationScope&) = delete;
  CorrelationScope& operator=(const CorrelationScope&) = delete;

 private:
  char previous_[kMaxCorrelationIdBytes];
  uint8_t previous_len_;
};

// The seed's token API, for code that cannot hold a scope on the stack.
struct CorrelationToken {
  char previous[kMaxCorrelationIdBytes];
  uint8_t previous_len = 0;
};
CorrelationToken SetCorrelationId(std::string_view id) noexcept;
void ResetCorrelationId(const CorrelationToken& token) noexcept;

}  // namespace pitlane
