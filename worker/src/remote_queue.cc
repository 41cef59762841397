#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <mutex>

#include "pitlane/futex.h"
#include "remote.h"

namespace pitlane::internal {

namespace {

constexpr uint32_t kSkip = 0xFFFFFFFFu;
constexpr size_t kHeader = 8;  // u32 size, u32 reserved

inline size_t Padded(size_t n) { return (n + 7) & ~size_t{7}; }

std::mutex g_factory_mu;
RemoteTransportFactory g_factory = nullptr;

}  // namespace

void RegisterRemoteTransport(RemoteTransportFactory factory) {
  std::lock_guard<std::mutex> lock(g_factory_mu);
  g_factory = factory;
}

RemoteTransportFactory RegisteredRemoteTransport() {
  std::lock_guard<std::mutex> lock(g_factory_mu);
  return g_factory;
}

RemoteQueue::RemoteQueue(size_t bytes)
    : buf_(new uint8_t[bytes]),
      cap_(bytes),
      max_record_(static_cast<uint32_t>(std::min<size_t>(bytes / 4, size_t{1} << 20))) {
  std::memset(buf_.get(), 0, bytes);
}

void RemoteQueue::Lock() noexcept {
  while (lock_.exchange(1, std::memory_order_acquire) != 0) {
    while (lock_.load(std::memory_order_relaxed) != 0) _mm_pause();
  }
}

uint8_t* RemoteQueue::Reserve(uint32_t size, bool* too_large) noexcept {
  *too_large = size == 0 || size > max_record_;
  if (*too_large) return nullptr;
  const size_t need = kHeader + Padded(size);
  Lock();
  const uint64_t head = head_.load(std::memory_order_acquire);
  uint64_t tail = tail_.load(std::memory_order_relaxed);
  const size_t at = tail & (cap_ - 1);
  const size_t to_end = cap_ - at;
  // A record never wraps: if it does not fit before the end, a skip marker fills the rest.
  const size_t total = need <= to_end ? need : to_end + need;
  if (tail + total - head > cap_) {
    Unlock();
    return nullptr;
  }
  if (need > to_end) {
    uint32_t skip = kSkip;
    std::memcpy(buf_.get() + at, &skip, sizeof skip);
    tail += to_end;
  }
  uint8_t* rec = buf_.get() + (tail & (cap_ - 1));
  std::memcpy(rec, &size, sizeof size);
  pending_tail_ = tail + need;
  return rec + kHeader;  // still locked; Commit() publishes
}

void RemoteQueue::Commit() noexcept {
  // Release: the consumer's acquire load of tail_ sees the record (and any skip marker).
  tail_.store(pending_tail_, std::memory_order_release);
  Unlock();
  if (sleeping_.load(std::memory_order_seq_cst) != 0) WakeConsumer();
}

void RemoteQueue::WakeConsumer() noexcept { shm::WakeIfSleeping(sleeping_); }

bool RemoteQueue::Empty() const noexcept {
  return head_.load(std::memory_order_acquire) == tail_.load(std::memory_order_acquire);
}

bool RemoteQueue::Wait(std::chrono::milliseconds timeout) {
  if (!Empty()) return true;
  sleeping_.store(1, std::memory_order_seq_cst);
  if (!Empty()) {
    sleeping_.store(0, std::memory_order_relaxed);
    return true;
  }
  shm::SleepOnFlag(sleeping_, timeout);
  return !Empty();
}

size_t RemoteQueue::Pop(std::vector<uint8_t>* data,
                        std::vector<std::pair<uint32_t, uint32_t>>* out, size_t max_records,
                        size_t max_bytes) {
  // Producers only append past tail_, so the consumer reads [head, tail) without the lock; the
  // space is handed back by the release store of head_.
  uint64_t head = head_.load(std::memory_order_relaxed);
  const uint64_t tail = tail_.load(std::memory_order_acquire);
  size_t n = 0, bytes = 0;
  while (head != tail && n < max_records) {
    const uint8_t* rec = buf_.get() + (head & (cap_ - 1));
    uint32_t size = 0;
    std::memcpy(&size, rec, sizeof size);
    if (size == kSkip) {
      head += cap_ - (head & (cap_ - 1));
      continue;
    }
    if (n > 0 && bytes + size > max_bytes) break;
    // Records keep the 8-byte alignment FlatBuffers' 8-byte structs need.
    data->resize(Padded(data->size()));
    const size_t offset = data->size();
    data->insert(data->end(), rec + kHeader, rec + kHeader + size);
    out->emplace_back(static_cast<uint32_t>(offset), size);
    bytes += size;
    ++n;
    head += kHeader + Padded(size);
  }
  head_.store(head, std::memory_order_release);
  return n;
}

}  // namespace pitlane::internal
