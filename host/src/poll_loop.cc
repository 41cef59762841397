// The host's poll loop and its idle back-off. A host behind its producers polls again at once;
// level with them, it pauses briefly between passes (see Run); an idle one spins for `spin`, then
// flags itself asleep in the registry and waits on that futex word with a timeout; the first
// worker to publish after that wakes it (one FUTEX_WAKE). Busy-poll mode never sleeps. A worker
// that publishes exactly while the host falls asleep may miss the wake (its load of the flag
// can pass its own store on x86); the timeout bounds that delay.
#include <emmintrin.h>

#include <algorithm>

#include "host_impl.h"
#include "pitlane/futex.h"

namespace pitlane {
namespace {
// Records in one pass that mean the host is behind its producers and should not pause.
constexpr size_t kCatchingUp = 32;
// Pauses between passes that found the host level with its producers: ~90 ns here (AMD EPYC,
// 23 ns per pause), ~4x that on Intel cores since Skylake.
constexpr int kPauses = 4;
// How long a pass that read nothing because it held back a ring its writer is filling waits
// before the next (at most HostOptions::hold_filling_ring). Each pass reads every ring's
// `producer`, the line the writer stores to at every commit: looked at every ~100 ns, that line
// is taken from the writer's core as often, and a back-to-back writer waits for it each time
// (slow-state typical emit p50/p99 165/426 → 140/320 ns; doc/performance.md).
constexpr auto kHeldPause = std::chrono::microseconds(1);
}  // namespace

void Host::Impl::WakeLoop() { shm::WakeIfSleeping(shm->header()->host_sleeping); }

void Host::Impl::Run(const std::atomic<bool>& stop) {
  shm::RegistryHeader* h = shm->header();
  auto idle_since = std::chrono::steady_clock::now();
  while (!stop.load(std::memory_order_relaxed)) {
    const size_t n = PollOnce();
    // Behind the producers (a pass that read many records): drain again at once.
    if (n >= kCatchingUp) {
      idle_since = std::chrono::steady_clock::now();
      continue;
    }
    // Level with them (nothing new, or a few records): wait a moment before the next pass.
    // Passes back to back would re-read each ring's producer position and its newest records
    // while the writer is still writing there, pulling those cache lines away from it (a line
    // moves between cores in ~100-150 ns); after the pause the next pass finds whole lines the
    // writer is done with. The pause adds at most its own length (~0.5 µs) to the latency of
    // a record that lands during it.
    for (int i = 0; i < kPauses; ++i) _mm_pause();
    // Only holding a filling ring back: nothing to read before more of it is written.
    if (n == 0 && shm->Holding()) {
      const auto until = std::chrono::steady_clock::now() +
                         std::min<std::chrono::nanoseconds>(kHeldPause, opt.hold_filling_ring);
      while (std::chrono::steady_clock::now() < until) _mm_pause();
    }
    if (n > 0) {
      idle_since = std::chrono::steady_clock::now();
      continue;
    }
    if (opt.busy_poll) continue;
    if (std::chrono::steady_clock::now() - idle_since < opt.spin) continue;
    // Flag ourselves asleep, then look once more so a record published before the flag became
    // visible is not left waiting for the timeout.
    h->host_sleeping.store(1, std::memory_order_seq_cst);
    if (shm->AnyUnread() || (hub && hub->Pending()) ||
        h->registry_epoch.load(std::memory_order_seq_cst) != shm->seen_epoch()) {
      h->host_sleeping.store(0, std::memory_order_relaxed);
      continue;
    }
    sleeps.fetch_add(1, std::memory_order_relaxed);
    shm::SleepOnFlag(h->host_sleeping, opt.max_sleep);
  }
}

}  // namespace pitlane
