// The clock the worker stamps events with: the invariant TSC when the kernel itself uses it as
// its clocksource (so it is synchronised across cores and processes), else CLOCK_REALTIME via
// the vDSO. The record says which (event.fbs Clock); the host converts to Unix-epoch ns.
#pragma once

#include <x86intrin.h>

#include <cstdint>
#include <ctime>

namespace pitlane::internal {

// fb::Clock values.
inline constexpr uint8_t kClockUnixNs = 0;
inline constexpr uint8_t kClockTsc = 2;

// Decided once per process.
bool TscIsUsable();

inline uint64_t RealtimeNs() noexcept {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

struct Stamp {
  uint64_t value;
  uint8_t clock;
};

inline Stamp ReadStamp(bool tsc) noexcept {
  if (tsc) return {__rdtsc(), kClockTsc};
  return {RealtimeNs(), kClockUnixNs};
}

}  // namespace pitlane::internal
