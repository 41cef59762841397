// The host's idle back-off. A busy host polls back to back; an idle one spins for `spin`, then
// flags itself asleep in the registry and waits on that futex word with a timeout; the first
// worker to publish after that wakes it (one FUTEX_WAKE). Busy-poll mode never sleeps. A worker
// that publishes exactly while the host falls asleep may miss the wake (its load of the flag
// can pass its own store on x86); the timeout bounds that delay.
#include <emmintrin.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "host_impl.h"

namespace pitlane {

void Host::Impl::WakeLoop() {
  shm::RegistryHeader* h = shm->header();
  if (h->host_sleeping.exchange(0, std::memory_order_acq_rel) == 1) {
    syscall(SYS_futex, reinterpret_cast<uint32_t*>(&h->host_sleeping), FUTEX_WAKE, 1, nullptr,
            nullptr, 0);
  }
}

void Host::Impl::Run(const std::atomic<bool>& stop) {
  shm::RegistryHeader* h = shm->header();
  auto idle_since = std::chrono::steady_clock::now();
  while (!stop.load(std::memory_order_relaxed)) {
    if (PollOnce() > 0) {
      idle_since = std::chrono::steady_clock::now();
      continue;
    }
    if (opt.busy_poll) {
      // Re-reading every producer position back to back would pull each ring's producer line
      // away from its writer on every pass; a few pauses between empty passes keep it with the
      // writer at a cost of ~100 ns of added latency.
      for (int i = 0; i < 16; ++i) _mm_pause();
      continue;
    }
    const auto now = std::chrono::steady_clock::now();
    if (now - idle_since < opt.spin) {
      _mm_pause();
      continue;
    }
    // Flag ourselves asleep, then look once more so a record published before the flag became
    // visible is not left waiting for the timeout.
    h->host_sleeping.store(1, std::memory_order_seq_cst);
    if (shm->AnyUnread() || (hub && hub->Pending()) ||
        h->registry_epoch.load(std::memory_order_seq_cst) != shm->seen_epoch()) {
      h->host_sleeping.store(0, std::memory_order_relaxed);
      continue;
    }
    sleeps.fetch_add(1, std::memory_order_relaxed);
    const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(opt.max_sleep).count();
    timespec ts{static_cast<time_t>(ns / 1000000000), static_cast<long>(ns % 1000000000)};
    syscall(SYS_futex, reinterpret_cast<uint32_t*>(&h->host_sleeping), FUTEX_WAIT, 1, &ts,
            nullptr, 0);
    h->host_sleeping.store(0, std::memory_order_relaxed);
  }
}

}  // namespace pitlane
