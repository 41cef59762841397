// The worker's remote path, shared by pitlane::worker (the queue, the gate, the counters) and
// pitlane::worker_grpc (the transport that empties the queue onto a gRPC stream).
//
// In gRPC mode Worker::Emit runs the same gate as on shared memory, then encodes the same
// FlatBuffer record into a RemoteQueue: a bounded in-process byte ring that any thread may write
// (a short spin lock around reserve + encode) and one transport thread drains in batches. A full
// queue drops the newest event and counts it, exactly like a full shm ring; the emitting thread
// never blocks and makes no syscall unless the transport thread flagged itself asleep.
//
// The transport is linked only into programs that link pitlane::worker_grpc: that library
// registers its factory at static-initialisation time (RegisterRemoteTransport), so a shm-only
// worker carries no gRPC code at all.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "pitlane/accounting.h"
#include "pitlane/catalog.h"
#include "pitlane/control.h"
#include "pitlane/status.h"

namespace pitlane::internal {

// Bounded multi-producer, single-consumer queue of encoded records.
class RemoteQueue {
 public:
  // `bytes`: a power of two ≥ 64 KiB. Records larger than min(bytes / 4, 1 MiB) are refused.
  explicit RemoteQueue(size_t bytes);
  RemoteQueue(const RemoteQueue&) = delete;
  RemoteQueue& operator=(const RemoteQueue&) = delete;

  // Producer. On success the queue is locked until Commit(): write exactly `size` bytes at the
  // returned (8-byte aligned) address, then call Commit(). nullptr: full (or too large, see
  // *too_large), and the queue is not locked.
  uint8_t* Reserve(uint32_t size, bool* too_large) noexcept;
  void Commit() noexcept;

  // Consumer: appends up to `max_records` records (at most `max_bytes` in all, but always at
  // least one if any is queued) to `data`, each at an 8-byte aligned offset, and (offset, size)
  // to `out`. Returns the count.
  size_t Pop(std::vector<uint8_t>* data, std::vector<std::pair<uint32_t, uint32_t>>* out,
             size_t max_records, size_t max_bytes);
  // Consumer: waits until a record is queued or `timeout` passes (futex; producers wake it
  // only when it flagged itself asleep). Returns !Empty().
  bool Wait(std::chrono::milliseconds timeout);
  // Wakes a consumer blocked in Wait (shutdown).
  void WakeConsumer() noexcept;
  bool Empty() const noexcept;
  uint32_t max_record() const noexcept { return max_record_; }

  EmitCounters counters;  // `published`: handed to the stream

 private:
  void Lock() noexcept;
  void Unlock() noexcept { lock_.store(0, std::memory_order_release); }

  std::unique_ptr<uint8_t[]> buf_;
  size_t cap_ = 0;
  uint32_t max_record_ = 0;
  std::atomic<uint32_t> lock_{0};
  std::atomic<uint64_t> head_{0};  // consumer position
  std::atomic<uint64_t> tail_{0};  // producer position (under lock_)
  uint64_t pending_tail_ = 0;      // tail_ after the reserved record (under lock_)
  std::atomic<uint32_t> sleeping_{0};
};

struct RemoteConfig {
  std::string target;  // dial the host's TelemetryIngest here ("" = do not dial)
  std::string listen;  // serve StreamTelemetry here for a host to dial ("" = do not serve)
  std::string token;   // bearer token sent to / required from the peer ("" = none)
  std::string tls_ca;  // PEM file: dial with TLS, trusting this CA ("" = plaintext)
  std::string worker_id;
  std::string node;
  uint32_t pid = 0;
  std::shared_ptr<const Catalog> catalog;
  RemoteQueue* queue = nullptr;
  // Applies a complete control state through the worker's gate (thread-safe).
  std::function<void(const ControlState&)> apply_control;
  std::function<void(std::string_view)> log;
  std::chrono::milliseconds flush_timeout{2000};
};

class RemoteTransport {
 public:
  // Flushes what is queued (bounded by flush_timeout), sends the final counters, closes.
  virtual ~RemoteTransport() = default;
  // A host is connected and has sent its control state.
  virtual bool connected() const = 0;
  // The bound port when serving (config.listen), else 0.
  virtual int listen_port() const = 0;
};

using RemoteTransportFactory = Result<std::unique_ptr<RemoteTransport>> (*)(RemoteConfig config);
void RegisterRemoteTransport(RemoteTransportFactory factory);
RemoteTransportFactory RegisteredRemoteTransport();

}  // namespace pitlane::internal
