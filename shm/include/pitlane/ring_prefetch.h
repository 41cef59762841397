// Asking for a ring's lines before they are needed, on both sides of the ring.
//
// Writer. The host read every line of a ring one lap earlier, so when the writer comes round
// again the line sits in the host core's cache and a store to it must first take it back: a
// cache line moving between cores, ~50 ns or ~250 ns on the 2-vCPU VMs measured
// (BM_Floor_CacheLinePingPong). Left to the stores, a typical 292-byte record waits for up to
// five of them; asked for kWriteAheadBytes ahead with a prefetch for write, they have arrived
// by the time the writer gets there. BM_Emit_Shm, typical event, while lines took ~250 ns (old
// and new alternating, two rounds): back to back p50 130–140 → 50 ns, paced 500 ns apart p99
// 170–180 → 60–70 ns; while they took ~60 ns, no change.
//
// Reader. The host copies each record out after reading its header, so without help every
// line not yet in its cache is a miss in a chain of dependent loads. With 64 rings of 3000
// typical events (55 MB, beyond the 32 MiB L3) the hardware's own prefetching left the drain
// at 78–79 ns per event against 66 for one ring (0.84×); asking for the lines kReadAheadBytes
// ahead made it 67.5–69 ns (0.96–0.98×), one ring unchanged (BM_HostDrain, same binary,
// alternating, two rounds). doc/performance.md has both comparisons.
#pragma once

#include <cstdint>

namespace pitlane::shm {

// How far ahead of its position the writer asks for lines, and the reader.
inline constexpr uint64_t kWriteAheadBytes = 1024;
inline constexpr uint64_t kReadAheadBytes = 8192;

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

// Asks for the lines of the ring at `data` (ring positions masked by `mask`) that start in
// [from, to). Positions wrap past 2^64, so they are compared by distance. Calls that go on
// where the last one ended ask for each line once. Prefetches never fault, so any position
// is safe to pass.
enum class For : uint8_t { kRead, kWrite };
template <For kFor>
inline void PrefetchRingLines(const uint8_t* data, uint64_t mask, uint64_t from,
                              uint64_t to) noexcept {
  for (uint64_t at = (from + 63) & ~uint64_t{63}; static_cast<int64_t>(to - at) > 0; at += 64) {
    if constexpr (kFor == For::kWrite) {
      PrefetchForWrite(data + (at & mask));
    } else {
      __builtin_prefetch(data + (at & mask), 0, 3);
    }
  }
}

}  // namespace pitlane::shm
