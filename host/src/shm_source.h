// The shared-memory source of a host: the namespace registry, the workers and rings found in
// it, draining them into the Delivery, liveness and reclaim.
//
// Discovery: each poll pass loads the registry epoch (one acquire load) and rescans the slots
// only when it changed. Draining: each ring is read in batches by its pull reader
// (shm::RingReader::ReadBatch), the copies are delivered, then the reader publishes. Liveness
// (liveness.cc): each worker process is watched through a pidfd checked against its start
// time, at most every 100 ms; a dead or departed worker's rings are drained, one
// `pool.worker.terminated` is emitted, its segments are unlinked and its slots freed.
//
// Thread safety: Discover, Drain, Housekeeping, AnyUnread, Pending on the poll thread. Rings,
// Workers, Knows and WriteControl from any thread: they take mu_, under which the poll thread
// changes the containers.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "delivery.h"
#include "pitlane/host.h"
#include "pitlane/registry.h"
#include "pitlane/shm.h"

namespace pitlane::internal {

class ShmSource {
 public:
  struct Hooks {
    std::function<void(const std::string&)> log;
    std::function<ControlState(const std::string&)> control_of;  // the host's state for an id
    // A worker's slot holds a state a previous host wrote for it: the host's state for the id
    // from now on, unless it has one of its own (then that one). Returns the state to apply.
    std::function<ControlState(const std::string&, const ControlState&)> adopt_control;
  };
  // Creates or adopts the registry of options.ns and removes stale segments of dead processes.
  static Result<std::unique_ptr<ShmSource>> Start(const HostOptions& options,
                                                  const Catalog& catalog, Delivery& delivery,
                                                  Hooks hooks);
  // Closes pidfds; unlinks the registry when no worker slot is in use (else a restarted host
  // adopts it).
  ~ShmSource();
  ShmSource(const ShmSource&) = delete;
  ShmSource& operator=(const ShmSource&) = delete;

  // Poll thread.
  void Discover(bool force = false);
  // `now`: the pass's steady-clock time (a ring its writer is filling may be held back a while).
  size_t Drain(std::chrono::steady_clock::time_point now);
  // The last Drain held back at least one ring its writer is filling.
  bool Holding() const { return holding_; }
  void Housekeeping();
  bool AnyUnread() const;
  // Something is not accounted for yet: unread records, a dead or leaving worker, a retired ring.
  bool Pending() const;

  // Any thread.
  std::vector<RingStats> Rings() const;
  // Per worker id: live workers and the departed ones the host still remembers.
  std::vector<WorkerInfo> Workers() const;
  DepartedWorkers Departed() const;
  bool Knows(const std::string& worker_id) const;
  void WriteControl(const std::string& worker_id, const ControlState& state);
  uint64_t quarantined() const;
  void QuarantinedByReason(uint64_t out[shm::kQuarantineReasonCount]) const;
  uint64_t terminated() const;
  shm::RegistryHeader* header() const { return header_; }
  uint64_t seen_epoch() const { return seen_epoch_; }

 private:
  struct Ring;
  struct Worker {
    uint32_t slot = 0;
    uint64_t generation = 0;
    std::string id;
    pid_t pid = 0;
    std::string pid_str;
    uint64_t start_time = 0;
    int pidfd = -1;
    bool alive = true;
    bool leaving = false;  // the Worker object was destroyed (graceful)
    uint32_t attached_after_retire = 0;  // passes that found it leaving, its process attached
    bool generation_forged = false;  // its slot's generation was rewritten (reported once)
    std::vector<Ring*> rings;
  };
  struct Ring {
    uint32_t slot = 0;
    uint64_t generation = 0;
    shm::Segment segment;
    std::optional<shm::RingReader> reader;
    Worker* worker = nullptr;
    bool retired = false;
    // Housekeeping passes that found the ring retired (or its worker leaving) while its
    // process still mapped it (poll thread).
    int mapped_after_retire = 0;
    bool quarantine_reported = false;
    // The reader's host-side counts as other threads may read them (the poll thread stores
    // after every batch; the reader's own Tally is the poll thread's).
    HostSideMirror counts;
    // The worker-side counts as last read from the segment (poll thread, each housekeeping
    // pass; GUARDED_BY(mu_)): what StatsOf reports once the segment was truncated.
    Tally last_worker_side;
    // The writer's position at the previous pass, whether it had moved since the pass before,
    // and when a pass first held the ring back ({}: none); poll thread (DrainRing).
    uint64_t seen_producer = 0;
    bool writer_moving = false;
    std::chrono::steady_clock::time_point held_since{};
  };

  ShmSource(const HostOptions& options, Delivery& delivery, Hooks hooks);
  void AddWorker(uint32_t index, shm::WorkerSlot* s);
  void AddRing(uint32_t index, shm::RingSlot* s);
  // Reads a batch of `r`, unless `hold` leaves it for a later pass (`now`: this pass's time).
  // Final drains (retired rings, reclaim) read with no hold.
  size_t DrainRing(Ring* r, shm::ReadHold hold = {},
                   std::chrono::steady_clock::time_point now = {});
  // The hold for `r` at this pass: none unless its writer moved at the previous pass and the
  // ring has not been held for hold_filling_ring yet (shm_source.cc).
  shm::ReadHold HoldFor(const Ring& r, std::chrono::steady_clock::time_point now) const;
  void ReportQuarantine(Ring* r);
  // liveness.cc
  void CheckLiveness();
  // Folds departed_ entries older than departed_retention (and not alive again) into
  // departed_total_. REQUIRES: mu_ held.
  void RetireDepartedLocked();
  // Records that `id` departed now (a ring of it was reclaimed, or the worker). REQUIRES: mu_.
  void NoteDepartedLocked(const std::string& id);
  void CheckTruncation();
  void ReclaimStrandedClaims();
  bool SlotStillOf(const Worker& w) const;
  bool AnyWriterMayWrite(const std::vector<Ring*>& rings);
  bool WorkerMayStillBeAttached(Worker& w);
  void UnlinkRingUnlessMapped(pid_t pid, uint32_t slot);
  void ReclaimWorker(Worker* w);
  void ReclaimRing(Ring* r);
  void EmitTerminated(const Worker& w, bool planned);
  RingStats StatsOf(const Ring& r) const;
  void CleanStale();

  const HostOptions& opt_;
  Delivery& delivery_;
  Hooks hooks_;
  shm::HostRegistry registry_;
  shm::RegistryHeader* header_ = nullptr;
  uint64_t seen_epoch_ = ~uint64_t{0};
  bool holding_ = false;  // poll thread (Drain)
  bool registry_lost_ = false;  // poll thread: reported once
  // Who holds a CLAIMING slot: the worker slot it names (a ring slot's claimer is the process
  // in that worker slot), that process's pid and start time.
  struct Claimer {
    uint32_t worker_slot = 0;
    pid_t pid = 0;
    uint64_t start_time = 0;
    bool operator==(const Claimer&) const = default;
  };
  // Poll thread: slots found CLAIMING at the last housekeeping pass. A claim lasts
  // microseconds; one still there a pass later, by the same claimer, whose claimer is gone was
  // left by a process that died mid-claim.
  std::map<uint32_t, Claimer> claiming_workers_, claiming_rings_;
  shm::RecordBatch batch_;  // poll thread: the copy of the ring being drained
  FoldContext ctx_;         // poll thread: the context of the ring being drained

  mutable std::mutex mu_;
  std::map<uint32_t, std::unique_ptr<Worker>> workers_;  // by worker slot; GUARDED_BY(mu_)
  std::map<uint32_t, std::unique_ptr<Ring>> rings_;      // by ring slot; GUARDED_BY(mu_)
  std::vector<Ring*> drain_order_;                       // GUARDED_BY(mu_)
  // The last kReclaimedRingHistory reclaimed rings, for Rings() (their totals live on in
  // departed_ / departed_total_, so dropping old entries loses no count); GUARDED_BY(mu_).
  static constexpr size_t kReclaimedRingHistory = 256;
  std::deque<RingStats> history_;
  std::map<std::string, WorkerInfo> departed_;  // by id: totals of what is reclaimed; GUARDED_BY(mu_)
  // When each departed_ entry last changed; GUARDED_BY(mu_).
  std::map<std::string, std::chrono::steady_clock::time_point> departed_at_;
  DepartedWorkers departed_total_;  // departed_ entries past the retention; GUARDED_BY(mu_)
  std::set<std::string> seen_ids_;                       // GUARDED_BY(mu_)

  std::atomic<uint64_t> quarantined_{0}, terminated_{0};
  std::atomic<uint64_t> quarantined_by_reason_[shm::kQuarantineReasonCount] = {};
};

}  // namespace pitlane::internal
