// pitlane::Host — polls every ring of a namespace, validates each event against the catalog
// and hands it to attached handlers.
//
// Poll loop: each pass loads the registry epoch (one acquire load) and rescans the slots only
// when it changed, then drains every ring in batches. The read path makes no syscall. When idle
// the loop spins briefly, then flags itself asleep in the registry and waits on a futex with a
// timeout; the first worker to publish after that wakes it (one FUTEX_WAKE). Busy-poll mode
// never sleeps. A worker that publishes exactly while the host falls asleep may miss the wake
// (its load of the flag can pass its own store on x86); the timeout bounds that delay.
//
// Trust: nothing read from a ring is trusted (see shm.h); every payload is verified with the
// FlatBuffers Verifier and folded by the catalog rules of doc/catalog.md. Rejections are counted
// per ring and reason; a corrupt ring is quarantined with a log line naming ring, worker and
// offset; its worker gets a fresh ring.
//
// Liveness: each worker process is watched through a pidfd (checked against its start time, so
// pid reuse cannot fake it alive) at most 100 ms apart. A dead worker's published records are
// drained, one `pool.worker.terminated` is emitted for it, and its segments are reclaimed.
//
// Remote workers (gRPC): a dial-in server and/or dial-out clients feed the same fold, handlers
// and control API; each remote worker appears in Rings() and Workers() with transport kGrpc.
//
// Thread safety: PollOnce/Run on one thread (the poll thread); handlers run on it and must not
// block. Every other method may be called from any thread.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "pitlane/accounting.h"
#include "pitlane/catalog.h"
#include "pitlane/control.h"
#include "pitlane/record.h"
#include "pitlane/shm_layout.h"
#include "pitlane/status.h"

namespace pitlane {

enum class Transport : uint8_t { kShm = 0, kGrpc = 1, kHost = 2 };
std::string_view TransportName(Transport t);

struct MeasurementView {
  std::string_view key;
  Value value;
};
struct MetadataView {
  std::string_view key;
  std::string_view value;
  uint16_t key_id = 0;  // known metadata key id, 0 = a plain string key
};

// A delivered event: a non-owning view valid only during the handler call.
struct EventView {
  const CatalogEvent* event = nullptr;
  int64_t timestamp_ns = 0;  // Unix epoch
  std::string_view correlation_id;
  // Span identity of a span's start/stop/exception event (schemas/event.fbs), as the worker
  // assigned it: span_id 0 = not a span event (or a worker that predates span ids);
  // parent_span_id 0 = a root span. The trace id is derived from the correlation id
  // (pitlane/trace_context.h).
  uint64_t span_id = 0;
  uint64_t parent_span_id = 0;
  std::span<const MeasurementView> measurements;
  std::span<const MetadataView> metadata;  // the worker's keys, then the host context
  std::string_view worker_id;
  uint32_t worker_pid = 0;
  Transport transport = Transport::kShm;

  std::string_view name() const { return event->host_name; }
  const Value* measurement(std::string_view key) const;
  std::optional<std::string_view> meta(std::string_view key) const;
};

using Handler = std::function<void(const EventView&)>;

struct HostOptions {
  std::string ns;         // "" → PITLANE_NAMESPACE, else "default"
  std::string node;       // "" → PITLANE_NODE, else the hostname
  std::string pool_name;  // "" → PITLANE_POOL_NAME, else "default"
  std::shared_ptr<const Catalog> catalog;  // null → the compiled-in default
  bool busy_poll = false;
  // Idle spinning before sleeping. The first emit after the host sleeps wakes it (one
  // FUTEX_WAKE, tens of µs on a VM): events further apart than this pay it each time
  // (doc/performance.md, "The emit that wakes the host").
  std::chrono::microseconds spin{200};
  std::chrono::milliseconds max_sleep{10};  // futex wait timeout when asleep
  size_t batch = 256;                       // records per ring per pass
  // A ring whose writer moved between each of the last two passes is left until 8 KiB (a
  // quarter of a smaller ring) wait, or for this long (0: read every ring at every pass).
  // Reading a busy ring one record behind its writer makes every emit wait for the cache lines
  // the host pulled over (doc/performance.md, "Emit back to back"); a quiet ring is always read
  // at once.
  std::chrono::microseconds hold_filling_ring{5};
  // Receives log lines (stale segments removed, quarantines, handler errors). Default: stderr.
  std::function<void(std::string_view)> log;

  // ── gRPC: remote workers (README "gRPC fallback") ──
  // Dial-in server address ("0.0.0.0:7070", "127.0.0.1:0" for any free port; "" = none).
  std::string grpc_listen;
  // Workers to dial (they serve StreamTelemetry): "HOST:PORT" or "ID=HOST:PORT".
  std::vector<std::string> grpc_dial;
  // Bearer token required from dial-in workers and sent when dialing ("" = none).
  std::string grpc_token;
  // PEM files: serve dial-in over TLS (both or neither).
  std::string grpc_tls_cert, grpc_tls_key;
  // Larger messages are refused with RESOURCE_EXHAUSTED.
  size_t grpc_max_message_bytes = 4u << 20;
  // Dial-in streams open at once; more are refused with RESOURCE_EXHAUSTED (each open stream
  // holds a server thread until it ends).
  size_t grpc_max_streams = 64;
  // A dial-in stream that has not sent its WorkerHello within this time is cancelled.
  std::chrono::milliseconds grpc_hello_timeout{5000};
  // How long a gone shared-memory worker (not alive, every ring reclaimed) stays in Workers()
  // under its own id, so tables and exporters show its final numbers; then its totals fold into
  // Departed() and its entry goes, so short-lived workers (`vm-<pid>` ids) do not grow the
  // host's memory, the summary or the scrape forever.
  std::chrono::milliseconds departed_retention = std::chrono::minutes(5);
};

struct HandlerInfo {
  std::string id;
  std::vector<std::string> events;
};

// One ring as the host sees it (live, or reclaimed and kept in the history), with its counts.
// A live reading is Consistent() (events may be in flight); a reclaimed ring is Conserved().
struct RingStats : Tally {
  std::string segment;  // shm segment name, or "grpc:<peer>" for a remote worker
  Transport transport = Transport::kShm;
  std::string worker_id;
  uint32_t pid = 0;
  uint32_t ring_slot = 0;
  bool worker_alive = false;
  bool retired = false;      // writer thread exited
  bool reclaimed = false;    // segment unlinked; final numbers
  bool quarantined = false;
  // Someone truncated the segment: the worker-side counts are the last ones read before (at
  // most ~100 ms old), so the law cannot be checked for this ring; the host-side counts are the
  // host's own and exact.
  bool segment_lost = false;
  // A restarted host refused the counter snapshot the previous one left in the ring (it
  // contradicts the ring: forged or corrupt) and counts only what it has read since, so the
  // law cannot be checked for this ring either. Its events are still read and delivered.
  bool history_unknown = false;
  bool Unverifiable() const { return segment_lost || history_unknown; }
  std::string quarantine_reason;  // the reader's message (what, and where)
  shm::QuarantineReason quarantine_kind = shm::kQuarantineNone;
  uint64_t capacity = 0;
  uint64_t used_bytes = 0;
};

// One worker (by id) with the totals of everything it emitted: its rings, live and reclaimed,
// and the events of its threads that had no ring — or its gRPC stream's counts.
struct WorkerInfo : Tally {
  std::string id;
  Transport transport = Transport::kShm;
  uint32_t pid = 0;
  bool alive = false;
  uint32_t rings = 0;        // live rings
  uint32_t rings_total = 0;  // rings seen, live and reclaimed
  uint64_t used_bytes = 0;   // over live rings
  uint64_t capacity = 0;    // over live rings
  bool quarantined = false;  // one of its rings was quarantined
  bool segment_lost = false;  // one of its rings was truncated: the law cannot be checked
  bool history_unknown = false;  // one of its rings' snapshots was refused: the same
  ControlState control;
  bool Unverifiable() const { return segment_lost || history_unknown; }

  // Not alive and no live ring: its numbers are final.
  bool Gone() const { return !alive && rings == 0; }
  // The law for this reading (JudgeLaw): a worker that is not Gone() may still emit, so a
  // difference is events in flight; a gone one's numbers are final and must balance exactly.
  LawVerdict Law() const;
  // Events a gone worker's numbers leave unexplained (|in_flight()| + |unread()|); 0 unless
  // something is broken, and 0 when Unverifiable() (its law cannot be checked). Meaningless for a
  // worker that is not Gone(): its events may be in flight.
  uint64_t Unaccounted() const;
};

// The shared-memory workers gone for longer than HostOptions::departed_retention, summed.
struct DepartedWorkers : Tally {
  uint64_t workers = 0;
  // Over the folded workers, each worker's Unaccounted(): what the conservation law cannot
  // account for. 0 unless something is broken.
  uint64_t unaccounted = 0;
  // Folded workers one of whose rings someone truncated or whose snapshot was refused
  // (RingStats::Unverifiable()): their law cannot be checked, and they are not in `unaccounted`.
  uint64_t unverifiable = 0;

  // Folds one gone worker (WorkerInfo::Gone()) into the sum.
  void Add(const WorkerInfo& gone);
  // The law over the folded workers: kViolated when any left events unaccounted, else
  // kUnverifiable when any could not be checked, else kHolds. The sum of gone workers is final,
  // so nothing is in flight.
  LawVerdict Law() const;
};

struct HostStats {
  uint64_t delivered = 0;
  uint64_t rejected[shm::kRejectReasonCount] = {};
  uint64_t truncated = 0;
  uint64_t host_events = 0;       // events the host emitted itself (terminated, ...)
  uint64_t handler_errors = 0;    // handlers detached because they threw
  uint64_t quarantined_rings = 0;
  uint64_t quarantined_by_reason[shm::kQuarantineReasonCount] = {};  // shm::QuarantineReason
  uint64_t workers_terminated = 0;
  uint64_t polls = 0, sleeps = 0;

  uint64_t rejected_total() const {
    uint64_t n = 0;
    for (uint64_t r : rejected) n += r;
    return n;
  }
};

class Host {
 public:
  // Creates (or adopts) the namespace registry, removes stale segments of dead processes.
  static Result<std::unique_ptr<Host>> Start(HostOptions options = {});
  ~Host();  // stops the background loop if running; unlinks the registry when no worker remains
  Host(const Host&) = delete;
  Host& operator=(const Host&) = delete;

  // One poll pass; returns the number of records handed to the fold.
  size_t PollOnce();
  // Polls until `stop` becomes true (with the idle back-off unless busy_poll).
  void Run(const std::atomic<bool>& stop);
  // Runs the loop on a thread of the host's own until Stop() or destruction.
  void RunInBackground();
  void Stop();
  // Polls until every ring is drained and every dead/retired worker reclaimed, or `timeout`.
  // Returns true when everything published so far is accounted for.
  bool DrainAll(std::chrono::milliseconds timeout);

  // Handlers: `events` are host names ("snakepit.python.call.stop") or "*" for all events.
  Status Attach(const std::string& handler_id, const std::string& event, Handler handler);
  Status AttachMany(const std::string& handler_id, const std::vector<std::string>& events,
                    Handler handler);
  bool Detach(const std::string& handler_id);
  std::vector<HandlerInfo> Handlers() const;
  // Handlers detached because they threw: "<id>: <what()>".
  std::vector<std::string> DetachedHandlers() const;

  // Control. Each update replaces the previous state of its kind; invalid input changes nothing.
  Status Toggle(const std::string& worker_id, bool enabled);
  Status UpdateSampling(const std::string& worker_id, double rate,
                        const std::vector<std::string>& patterns);
  Status UpdateFilter(const std::string& worker_id, const std::vector<std::string>& allow,
                      const std::vector<std::string>& deny);
  // Replaces the whole state in one update: the worker goes from the old state to `state`
  // without running a mix of the two (say enabled before the new deny list is in place).
  Status SetControl(const std::string& worker_id, const ControlState& state);
  Result<ControlState> Control(const std::string& worker_id) const;

  std::vector<RingStats> Rings() const;
  std::vector<WorkerInfo> Workers() const;
  DepartedWorkers Departed() const;
  HostStats Stats() const;
  const Catalog& catalog() const;
  const std::string& ns() const;
  // The dial-in server's bound port (HostOptions::grpc_listen), 0 when not serving.
  int grpc_port() const;

  class Impl;

 private:
  explicit Host(std::unique_ptr<Impl> impl);
  std::vector<WorkerInfo> ShmWorkers() const;
  std::unique_ptr<Impl> impl_;
};

}  // namespace pitlane
