// Asking for the ring's next lines before the writer stores to them.
//
// The host read every line of a ring one lap earlier, so when the writer comes round again the
// line sits in the host core's cache and a store to it must first take it back: a cache line
// moving between cores, ~50 ns or ~250 ns on the 2-vCPU VMs measured
// (BM_Floor_CacheLinePingPong). Left to the stores, a typical 292-byte record waits for up to
// five of them; asked for 1 KiB ahead with a prefetch for write, they have arrived by the time
// the writer gets there. BM_Emit_Shm, typical event, while lines took ~250 ns (one binary, the
// two settings alternating, two rounds): back to back p50 140 → 50 ns and p99 330 → 260 ns,
// paced 500 ns apart p99 175 → 60 ns; while they took ~60 ns, no change. doc/performance.md has
// the whole comparison.
#pragma once

#include <cstdint>

namespace pitlane::shm {

// How far ahead of the producer position the writer asks for lines.
inline constexpr uint64_t kWriteAheadBytes = 1024;

// Whether PrefetchForWrite may run here: the CPU has PREFETCHW (x86: CPUID PRFCHW), or this is
// not x86, where the compiler's write prefetch is used.
bool CanPrefetchForWrite() noexcept;

// Asks for `p`'s cache line in a state the next store can write without waiting. A hint: it
// neither faults nor changes memory. REQUIRES: CanPrefetchForWrite().
inline void PrefetchForWrite(const void* p) noexcept {
#if defined(__x86_64__) || defined(__i386__)
  // Written out because GCC's __builtin_prefetch(p, 1) emits PREFETCHW only when built with
  // -mprfchw; otherwise it emits PREFETCHT0, which brings the line shared and leaves taking it
  // back to the store — measured: no effect at all.
  asm volatile("prefetchw %0" : : "m"(*static_cast<const char*>(p)));
#else
  __builtin_prefetch(p, 1, 3);
#endif
}

}  // namespace pitlane::shm
