// Events a shared-memory worker emits before any host is attached, kept in emission order until
// the worker has a ring to publish them into (Snakepit's worker likewise buffers 1,024 events
// until its stream opens).
//
// Bounded by events and bytes: an event that does not fit is not kept, and the caller counts it
// as dropped_no_ring, so nothing is lost silently. Records are encoded when emitted, stamped
// with CLOCK_REALTIME and naming the event and keys by name (the host's catalog is not known
// yet), and gated by the control state of that moment (the defaults, before a host is known).
// An event counts as emitted when it is published into a ring or dropped, so the ring's
// conservation law holds and a buffered event appears in neither yet.
//
// Thread safety: any thread; one short lock per call (emit before attach is a slow path).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <vector>

namespace pitlane::internal {

class PreAttachBuffer {
 public:
  // At most `max_events` records (WorkerOptions::pre_attach_events) of `max_bytes` in all:
  // what one flush may publish (the caller's ring must hold it).
  PreAttachBuffer(size_t max_events, size_t max_bytes)
      : max_events_(max_events), max_bytes_(max_bytes) {}

  // Returns where to encode a record of `size` bytes (8-byte aligned), or nullptr when the
  // buffer is full or closed. REQUIRES: Commit() before the next Reserve on any thread (the
  // buffer stays locked in between).
  uint8_t* Reserve(size_t size);
  void Commit();

  // Hands every record to `publish` in emission order and empties the buffer; a record
  // `publish` refuses (returns false) is counted in the return value's second field. After
  // the first Flush the buffer takes no more records (the worker has rings from then on).
  struct Flushed {
    uint64_t published = 0;
    uint64_t refused = 0;
  };
  Flushed Flush(const std::function<bool(const uint8_t* record, size_t size)>& publish);

  size_t pending() const;
  bool closed() const;

  // In the child of fork(): the parent's records are the parent's to publish; start empty and
  // open (the mutex may have been held by a parent thread at fork()).
  void ResetInChild();

 private:
  mutable std::mutex mu_;
  const size_t max_events_;
  const size_t max_bytes_;
  std::vector<uint64_t> data_;                   // records, each padded to 8 bytes
  std::vector<std::pair<size_t, size_t>> index_;  // (offset in bytes, size) per record
  size_t bytes_ = 0;
  bool closed_ = false;
};

}  // namespace pitlane::internal
