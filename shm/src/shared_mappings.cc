#include "shared_mappings.h"

#include <emmintrin.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>

namespace pitlane::shm::internal {
namespace {

enum EntryState : uint32_t { kFree = 0, kFilling, kLive, kLeaving };

struct Entry {
  std::atomic<uint32_t> state{kFree};
  // Signal handlers currently looking at this entry. ForgetMapping waits for 0 after it made
  // the entry kLeaving (both seq_cst: either the rescuer sees kLeaving and backs off, or
  // ForgetMapping sees the rescuer and waits for it).
  std::atomic<uint32_t> rescuers{0};
  std::atomic<uintptr_t> base{0};
  std::atomic<size_t> bytes{0};
  std::atomic<uint32_t> lost{0};
};

Entry g_entries[kMaxSharedMappings];

Entry* Find(const void* addr) {
  const auto a = reinterpret_cast<uintptr_t>(addr);
  for (Entry& e : g_entries) {
    // Acquire pairs with the release store of kLive in RegisterMapping: base and bytes are set.
    if (e.state.load(std::memory_order_acquire) != kLive) continue;
    const uintptr_t b = e.base.load(std::memory_order_relaxed);
    if (a >= b && a - b < e.bytes.load(std::memory_order_relaxed)) return &e;
  }
  return nullptr;
}

}  // namespace

bool RegisterMapping(void* base, size_t bytes) {
  InstallSigbusHandler();
  for (Entry& e : g_entries) {
    uint32_t expected = kFree;
    if (!e.state.compare_exchange_strong(expected, kFilling, std::memory_order_acquire)) continue;
    e.base.store(reinterpret_cast<uintptr_t>(base), std::memory_order_relaxed);
    e.bytes.store(bytes, std::memory_order_relaxed);
    e.lost.store(0, std::memory_order_relaxed);
    // Release pairs with the acquire load of the state in Find / RescueFault.
    e.state.store(kLive, std::memory_order_release);
    return true;
  }
  return false;
}

void ForgetMapping(void* base) {
  Entry* e = Find(base);
  if (e == nullptr) return;
  e->state.store(kLeaving, std::memory_order_seq_cst);
  while (e->rescuers.load(std::memory_order_seq_cst) != 0) _mm_pause();
  e->state.store(kFree, std::memory_order_release);
}

bool MappingLost(const void* addr) {
  const Entry* e = Find(addr);
  // Acquire pairs with the release store of `lost` in RescueFault (possibly another thread's).
  return e != nullptr && e->lost.load(std::memory_order_acquire) != 0;
}

bool RescueFault(const void* addr) {
  const auto a = reinterpret_cast<uintptr_t>(addr);
  for (Entry& e : g_entries) {
    if (e.state.load(std::memory_order_acquire) != kLive) continue;
    e.rescuers.fetch_add(1, std::memory_order_seq_cst);
    bool rescued = false;
    if (e.state.load(std::memory_order_seq_cst) == kLive) {
      const uintptr_t b = e.base.load(std::memory_order_relaxed);
      const size_t n = e.bytes.load(std::memory_order_relaxed);
      if (a >= b && a - b < n) {
        // The raw system call: async-signal-safe, and not seen by sanitizer interceptors. Two
        // threads faulting on the same mapping both replace it; the second replacement is a
        // no-op in effect (zeros over zeros).
        const long p = syscall(SYS_mmap, b, n, PROT_READ | PROT_WRITE,
                               MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
        rescued = p == static_cast<long>(b);
        // Release pairs with the acquire load in MappingLost.
        if (rescued) e.lost.store(1, std::memory_order_release);
      }
    }
    e.rescuers.fetch_sub(1, std::memory_order_seq_cst);
    if (rescued) return true;
  }
  return false;
}

}  // namespace pitlane::shm::internal
