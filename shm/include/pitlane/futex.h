// Sleeping on a 32-bit word until another thread or process changes it: the one way pitlane
// threads wait for each other without spinning. The host's poll loop sleeps on the registry's
// `host_sleeping` flag (woken by workers that publish and by the host's own threads), the gRPC
// worker's transport on its queue's flag, and the benchmarks' wake-up floor on a counter.
#pragma once

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <ctime>

namespace pitlane::shm {

static_assert(sizeof(std::atomic<uint32_t>) == sizeof(uint32_t),
              "a futex word is a plain 32-bit word");

// Waits while `word` holds `value`, for at most `timeout`. Returns at once if it does not hold
// it; may also return early (a wake-up, a signal): callers look at the word again.
inline void FutexWait(std::atomic<uint32_t>& word, uint32_t value,
                      std::chrono::nanoseconds timeout) noexcept {
  const int64_t ns = timeout.count();
  timespec ts{static_cast<time_t>(ns / 1000000000), static_cast<long>(ns % 1000000000)};
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(&word), FUTEX_WAIT, value, &ts, nullptr, 0);
}

// Wakes one thread waiting on `word` (none: nothing happens). A syscall: callers make it only
// when a flag says someone sleeps.
inline void FutexWake(std::atomic<uint32_t>& word) noexcept {
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(&word), FUTEX_WAKE, 1, nullptr, nullptr, 0);
}

// The sleep flag: a sleeper stores 1, looks for work once more, then sleeps while the flag is
// 1 (SleepOnFlag); whoever gives it work clears the flag and wakes it only if it was set, so
// the syscall is made once per sleep, not once per piece of work.
inline void WakeIfSleeping(std::atomic<uint32_t>& flag) noexcept {
  if (flag.exchange(0, std::memory_order_acq_rel) != 0) FutexWake(flag);
}
inline void SleepOnFlag(std::atomic<uint32_t>& flag, std::chrono::nanoseconds timeout) noexcept {
  FutexWait(flag, 1, timeout);
  flag.store(0, std::memory_order_relaxed);
}

}  // namespace pitlane::shm
