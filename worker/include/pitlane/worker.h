// pitlane::Worker — what a worker process links to emit telemetry into shared memory.
//
// Threads and rings: every thread that emits gets its own SPSC ring (created on its first
// emit while a host is attached), so no lock is shared between emitting threads. When the
// thread exits its ring is retired: the host drains what is left, then unlinks it. At most
// `max_rings` rings per worker are their threads' own; threads beyond the cap share one more
// ring, each emit holding a spin lock around its write (cost: an atomic exchange and the lock's
// cache line moving between those threads; their events keep each thread's order). A thread
// that wrote into the shared ring moves to a ring of its own only once the host has read its
// events there, so its events reach handlers in the order it emitted them. A ring the host
// quarantined is replaced by a fresh one at the thread's next emit.
//
// fork(): the child never writes its parent's rings. An atfork handler detaches them in the
// child; the child's first emit registers it as a worker of its own (id: the default id with
// the child's pid, or "<explicit id>-<child pid>") with rings of its own.
//
// No host: Start() waits up to `attach_wait` for the namespace's host; until one appears the
// worker keeps what is emitted (EmitResult::kBuffered: `pre_attach_events` (1,024) or half a
// ring, the rest counted as dropped_no_ring), a background thread keeps looking (every 50 ms),
// and the attach
// publishes the kept events in order (worker/src/pre_attach.h) through the shared ring, which
// stays (one more ring of `ring_bytes`); threads whose events were kept write there until the
// host has read them, so their later events do not overtake them.
//
// Emit path: noexcept, no heap allocation, no syscall (it reads the TSC or the vDSO clock and,
// only when the host has flagged itself asleep, makes one FUTEX_WAKE). It takes a thread's
// ring from a thread_local cache; the first emit of a thread, and the first emit after a
// control update, take a slow path that may allocate.
//
// Gate, in order: enabled → sampling → filter → encode → enqueue. Suppressed events (disabled,
// sampled out, filtered) are counted per reason, apart from drops (ring full, record too large,
// no ring). Per ring: emitted = suppressed + dropped + published.
//
// Transport (README "Defaults"): `auto` uses shared memory when the namespace's host exists on
// this machine; otherwise gRPC when a host address is configured (PITLANE_GRPC_TARGET, or
// PITLANE_GRPC_LISTEN for a host that dials the worker); otherwise shared memory in drop mode
// until the host appears. gRPC needs the program to link pitlane::worker_grpc (the shm-only
// library carries no gRPC code). On gRPC the emit code, the gate and the counters are the same;
// events go into a bounded in-process queue (full: the newest is dropped and counted as
// dropped_full) that a transport thread streams to the host in batches, reconnecting with
// backoff. A forked child of a gRPC worker does not inherit the connection: its events are
// counted as dropped_no_ring.
//
// Thread safety: Emit and Stats from any thread. Start/destruction: one thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "pitlane/accounting.h"
#include "pitlane/catalog.h"
#include "pitlane/record.h"
#include "pitlane/status.h"

namespace pitlane {

// EmitResult (the outcome of one emit) lives in accounting.h with the counts it maps onto.

// An event resolved once against the worker's catalog. id 0: the catalog does not know the
// name; such events still travel (by name) and the host counts them as unknown.
struct EventHandle {
  uint16_t id = 0;
  std::string_view name;  // the catalog's wire name, or the name as given when unknown
};

enum class WorkerTransport : uint8_t { kAuto = 0, kShm = 1, kGrpc = 2 };
std::string_view WorkerTransportName(WorkerTransport t);

struct WorkerOptions {
  std::string ns;             // "" → PITLANE_NAMESPACE, else "default"
  std::string worker_id;      // "" → PITLANE_WORKER_ID, else <hostname>-<pid>
  uint64_t ring_bytes = 0;    // 0 → PITLANE_RING_BYTES, else 256 KiB (power of two)
  uint32_t max_rings = 64;    // threads' own rings per worker (plus one they share beyond)
  // Events kept before the first host (Snakepit's pre-stream buffer holds 1,024); at most half
  // a ring's worth of bytes. 0 keeps none.
  uint32_t pre_attach_events = 1024;
  // How long Start() waits for a host before going on in drop mode.
  std::chrono::milliseconds attach_wait{200};
  // First producer position of every ring (tests start near 2^64 to force wrap-around).
  uint64_t initial_position = 0;

  // ── transport ──
  WorkerTransport transport = WorkerTransport::kAuto;  // kAuto → PITLANE_TRANSPORT, else auto
  std::string grpc_target;  // "" → PITLANE_GRPC_TARGET: the host's dial-in address
  std::string grpc_listen;  // "" → PITLANE_GRPC_LISTEN: serve StreamTelemetry for a host to dial
  std::string grpc_token;   // "" → PITLANE_GRPC_TOKEN: bearer token
  std::string grpc_tls_ca;  // "" → PITLANE_GRPC_TLS_CA: PEM CA file; dial with TLS
  uint64_t grpc_queue_bytes = 0;  // 0 → PITLANE_GRPC_QUEUE_BYTES, else 4 MiB (power of two)
  // How long destruction waits for queued events to reach the host.
  std::chrono::milliseconds flush_timeout{2000};
};

// The worker's own view of its events (host-side counts stay zero): sums of all its rings,
// live and retired, plus the events of ringless threads; or the gRPC transport's counts.
struct WorkerStats : Tally {
  uint32_t live_rings = 0;
  bool attached = false;
  // Events emitted before any host was attached, kept to be published when one is (kBuffered);
  // not counted in the tally yet.
  uint64_t pending = 0;
};

class Worker {
 public:
  static Result<std::unique_ptr<Worker>> Start(WorkerOptions options = {});
  // Retires every ring (the host drains and reclaims them) and releases the worker slot.
  ~Worker();
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  EventHandle Event(std::string_view name) const;
  MeasurementKey Measure(std::string_view key) const;
  MetadataKey Meta(std::string_view key) const;

  // Hot path. An empty correlation_id means "the current scoped id" (correlation.h).
  EmitResult Emit(EventHandle event, std::span<const Measurement> measurements,
                  std::span<const Metadata> metadata,
                  std::string_view correlation_id = {}) noexcept;
  EmitResult Emit(EventHandle event, std::initializer_list<Measurement> measurements = {},
                  std::initializer_list<Metadata> metadata = {},
                  std::string_view correlation_id = {}) noexcept {
    return Emit(event, std::span<const Measurement>(measurements.begin(), measurements.size()),
                std::span<const Metadata>(metadata.begin(), metadata.size()), correlation_id);
  }
  // Convenience: resolves `name` (a hash lookup) on every call.
  EmitResult Emit(std::string_view name, std::initializer_list<Measurement> measurements = {},
                  std::initializer_list<Metadata> metadata = {},
                  std::string_view correlation_id = {}) noexcept {
    return Emit(Event(name), measurements, metadata, correlation_id);
  }
  // A span's event (span.h): Emit, with the span's identity in the record.
  EmitResult EmitSpanEvent(EventHandle event, SpanIds span,
                           std::span<const Measurement> measurements,
                           std::span<const Metadata> metadata,
                           std::string_view correlation_id = {}) noexcept;
  // Publishes an already-encoded record (a FlatBuffer of event.fbs, whose gate decision is made
  // from `event`). The host verifies it like any other.
  EmitResult EmitEncoded(EventHandle event, const uint8_t* record, size_t size) noexcept;

  // Sums of all rings (live and retired) plus the events of ringless threads.
  WorkerStats Stats() const;
  bool attached() const;
  // Why the worker is not attached (OK when it is, or over gRPC): NOT_FOUND while no host has
  // created the namespace (normal drop mode), FAILED_PRECONDITION for a registry of another
  // layout version, RESOURCE_EXHAUSTED when the namespace has no free worker slot, ... Start()
  // also prints the reason to stderr when it is anything but NOT_FOUND.
  Status attach_status() const;
  const std::string& id() const;
  const std::string& ns() const;
  const Catalog& catalog() const;
  // The control-block version this worker last applied (0: none received).
  uint64_t applied_control_version() const;
  // kShm or kGrpc: what Start() chose.
  WorkerTransport transport() const;
  // The bound port when serving StreamTelemetry (grpc_listen), else 0.
  int grpc_listen_port() const;
  // Blocks until attached to a host (gRPC: connected and its control state received) or
  // `timeout` passes. Returns attached().
  bool WaitAttached(std::chrono::milliseconds timeout) const;

  class Impl;

 private:
  explicit Worker(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace pitlane
