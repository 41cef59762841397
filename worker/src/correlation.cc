#include "pitlane/correlation.h"

#include <x86intrin.h>

#include <atomic>
#include <cstring>
#include <random>

namespace pitlane {
namespace {

thread_local char t_id[kMaxCorrelationIdBytes];
thread_local uint8_t t_len = 0;

void Store(std::string_view id) noexcept {
  const size_t n = std::min(id.size(), kMaxCorrelationIdBytes);
  std::memcpy(t_id, id.data(), n);
  t_len = static_cast<uint8_t>(n);
}

}  // namespace

std::string NewCorrelationId() {
  thread_local std::mt19937_64 rng(std::random_device{}() ^ __rdtsc());
  static constexpr char kHex[] = "0123456789abcdef";
  std::string id = "pl-";
  for (int word = 0; word < 2; ++word) {
    uint64_t v = rng();
    for (int i = 0; i < 12; ++i, v >>= 4) id.push_back(kHex[v & 15]);
  }
  return id;
}

std::string_view CurrentCorrelationId() noexcept { return {t_id, t_len}; }

CorrelationScope::CorrelationScope(std::string_view id) noexcept : previous_len_(t_len) {
  std::memcpy(previous_, t_id, t_len);
  Store(id);
}

CorrelationScope::~CorrelationScope() { Store({previous_, previous_len_}); }

CorrelationToken SetCorrelationId(std::string_view id) noexcept {
  CorrelationToken token;
  std::memcpy(token.previous, t_id, t_len);
  token.previous_len = t_len;
  Store(id);
  return token;
}

void ResetCorrelationId(const CorrelationToken& token) noexcept {
  Store({token.previous, token.previous_len});
}

}  // namespace pitlane
