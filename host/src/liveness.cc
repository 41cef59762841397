// ShmSource's liveness and reclaim: which workers are gone, draining what they left, unlinking
// their segments and freeing their slots; and the stale segments of dead processes at start.
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <set>

#include "pitlane/registry.h"
#include "pitlane/shm_inspect.h"
#include "shm_source.h"

namespace pitlane::internal {

void ShmSource::Housekeeping() {
  CheckLiveness();
  // Reclaim retired rings that are drained, and workers that are gone.
  std::vector<Worker*> gone;
  for (auto& [slot, w] : workers_) {
    if (!w->alive || w->leaving) gone.push_back(w.get());
  }
  for (Worker* w : gone) ReclaimWorker(w);
  std::vector<Ring*> done;
  for (Ring* r : drain_order_) {
    if (r->retired && !r->reader->HasUnreadUntrusted()) done.push_back(r);
  }
  for (Ring* r : done) {
    DrainRing(r);  // pick up anything published between the check and the retire
    if (!r->reader->HasUnreadUntrusted()) ReclaimRing(r);
  }
  std::lock_guard<std::mutex> lock(mu_);
  RetireDepartedLocked();
}

void ShmSource::NoteDepartedLocked(const std::string& id) {
  departed_at_[id] = std::chrono::steady_clock::now();
}

void ShmSource::RetireDepartedLocked() {
  if (departed_.empty()) return;
  const auto now = std::chrono::steady_clock::now();
  std::set<std::string> live;
  for (const auto& [slot, w] : workers_) live.insert(w->id);
  for (auto it = departed_.begin(); it != departed_.end();) {
    const auto at = departed_at_.find(it->first);
    const bool expired = at == departed_at_.end() || now - at->second >= opt_.departed_retention;
    if (!expired || live.count(it->first)) {
      ++it;
      continue;
    }
    const WorkerInfo& gone = it->second;
    static_cast<Tally&>(departed_total_) += gone;
    ++departed_total_.workers;
    departed_total_.unaccounted += static_cast<uint64_t>(std::abs(gone.in_flight())) +
                                   static_cast<uint64_t>(std::abs(gone.unread()));
    if (at != departed_at_.end()) departed_at_.erase(at);
    it = departed_.erase(it);
  }
}

// A worker is alive while its pidfd does not signal exit (a pidfd names one process, whatever
// later reuses its pid); without a pidfd, while /proc shows its pid with its start time.
void ShmSource::CheckLiveness() {
  std::vector<pollfd> fds;
  std::vector<Worker*> polled;
  for (auto& [slot, w] : workers_) {
    if (w->alive && w->pidfd >= 0) {
      fds.push_back({w->pidfd, POLLIN, 0});
      polled.push_back(w.get());
    } else if (w->alive && w->pidfd < 0) {
      w->alive = shm::ProcessAlive(w->pid, w->start_time);
    }
  }
  if (!fds.empty() && ::poll(fds.data(), fds.size(), 0) > 0) {
    for (size_t i = 0; i < fds.size(); ++i) {
      if (fds[i].revents & (POLLIN | POLLHUP | POLLERR | POLLNVAL)) polled[i]->alive = false;
    }
  }
}

// Drains everything the worker published, emits its terminated event, frees its slots.
void ShmSource::ReclaimWorker(Worker* w) {
  // Rings the worker registered that this host has not opened yet (it died before a rescan)
  // still hold published records: open them now. Ring slots it claimed but never published
  // (it died in between) are freed, with the segment it may have created.
  {
    std::lock_guard<std::mutex> lock(mu_);
    const bool slot_still_ours =
        shm::WorkerSlotAt(registry_.base(), w->slot)->generation == w->generation;
    for (uint32_t i = 0; slot_still_ours && i < shm::kMaxRings; ++i) {
      shm::RingSlot* s = shm::RingSlotAt(registry_.base(), i);
      const uint32_t state = s->state.load(std::memory_order_acquire);
      if (s->worker_slot != w->slot) continue;
      if ((state == shm::kSlotReady || state == shm::kSlotRetired) &&
          s->generation == w->generation && rings_.find(i) == rings_.end()) {
        AddRing(i, s);
      } else if (state == shm::kSlotClaiming && !w->alive) {
        shm::Segment::Unlink(shm::RingName(opt_.ns, w->pid, i));
        s->state.store(shm::kSlotFree, std::memory_order_release);
      }
    }
  }
  for (Ring* r : w->rings) {
    for (int i = 0; i < 100000 && DrainRing(r) > 0; ++i) {
    }
  }
  // Planned: the Worker object was destroyed (slot RETIRED) before the process went away. A
  // process normally exits right after that, so whether it is still alive does not matter;
  // the slot is re-read in case the process died before a rescan saw the RETIRED state.
  shm::WorkerSlot* ws = shm::WorkerSlotAt(registry_.base(), w->slot);
  const bool planned = w->leaving || (ws->generation == w->generation &&
                                      ws->state.load(std::memory_order_acquire) ==
                                          shm::kSlotRetired);
  const std::vector<Ring*> rs = w->rings;
  for (Ring* r : rs) ReclaimRing(r);
  terminated_.fetch_add(1, std::memory_order_relaxed);
  EmitTerminated(*w, planned);
  if (w->pidfd >= 0) ::close(w->pidfd);
  std::lock_guard<std::mutex> lock(mu_);
  WorkerInfo& d = departed_[w->id];
  d.id = w->id;
  d.pid = static_cast<uint32_t>(w->pid);
  NoteDepartedLocked(w->id);
  // Free the slot only if it is still the claim we know (generation unchanged). Its ringless
  // threads' counts go into the departed totals first. Reset its control block: the next
  // claimer (maybe another worker id) must not inherit this worker's toggle/sampling/filter;
  // the host re-applies what it remembers for that id.
  if (ws->generation == w->generation) {
    static_cast<Tally&>(d) += ReadUnringed(ws->unringed);
    if (ws->control.version.load(std::memory_order_relaxed) != 0) {
      shm::WriteControl(&ws->control, ControlState());
    }
    ws->state.store(shm::kSlotFree, std::memory_order_release);
  }
  workers_.erase(w->slot);
}

void ShmSource::EmitTerminated(const Worker& w, bool planned) {
  const Catalog& cat = delivery_.catalog();
  const MetadataView md[] = {
      {"reason", planned ? "shutdown" : "process_exited", cat.MetadataKeyId("reason")},
      {"planned", planned ? "true" : "false", cat.MetadataKeyId("planned")},
      {"worker_id", w.id, cat.MetadataKeyId("worker_id")},
      {"worker_pid", w.pid_str, cat.MetadataKeyId("worker_pid")},
      {"node", opt_.node, cat.MetadataKeyId("node")},
      {"pool_name", opt_.pool_name, cat.MetadataKeyId("pool_name")},
  };
  const int64_t lifetime_ns = 0;
  const MeasurementView m[] = {{"lifetime", Value(lifetime_ns)}};
  delivery_.EmitHostEvent("pool.worker.terminated", m, md, w.id, static_cast<uint32_t>(w.pid));
}

void ShmSource::ReclaimRing(Ring* r) {
  RingStats final_stats = StatsOf(*r);
  // A writer killed inside an emit has counted it as emitted and nothing else.
  if (!r->worker->alive && final_stats.in_flight() > 0) {
    final_stats.dropped_in_flight = static_cast<uint64_t>(final_stats.in_flight());
  }
  if (final_stats.quarantined && final_stats.unread() > 0) {
    // Whatever the worker published that we never read is lost: count it, so the ring's
    // accounting still closes.
    const uint64_t lost = static_cast<uint64_t>(final_stats.unread());
    r->reader->counts().rejected[shm::kRejectLost] += lost;
    final_stats.rejected[shm::kRejectLost] += lost;
    delivery_.Reject(shm::kRejectLost, lost, nullptr);
  }
  final_stats.reclaimed = true;
  final_stats.used_bytes = 0;
  std::lock_guard<std::mutex> lock(mu_);
  shm::Segment::Unlink(r->reader->name());
  shm::RingSlot* s = shm::RingSlotAt(registry_.base(), r->slot);
  if (s->generation == r->generation) s->state.store(shm::kSlotFree, std::memory_order_release);
  WorkerInfo& d = departed_[final_stats.worker_id];
  d.id = final_stats.worker_id;
  d.pid = final_stats.pid;
  NoteDepartedLocked(final_stats.worker_id);
  static_cast<Tally&>(d) += final_stats;
  ++d.rings_total;
  d.quarantined |= final_stats.quarantined;
  history_.push_back(std::move(final_stats));
  if (history_.size() > kReclaimedRingHistory) history_.pop_front();
  auto& wr = r->worker->rings;
  wr.erase(std::remove(wr.begin(), wr.end(), r), wr.end());
  drain_order_.erase(std::remove(drain_order_.begin(), drain_order_.end(), r), drain_order_.end());
  rings_.erase(r->slot);
}

// Removes ring segments of this namespace that no registry slot refers to, by the one
// staleness rule (shm_inspect.h) `pitlane cleanup` applies too.
void ShmSource::CleanStale() {
  std::set<std::string> referenced;
  for (const auto& [slot, r] : rings_) referenced.insert(r->reader->name());
  for (const shm::SegmentEntry& e : shm::ListSegments(opt_.ns)) {
    if (e.registry || referenced.count(e.name) != 0) continue;
    const shm::Staleness st = shm::RingStaleness(e);
    if (st.stale) {
      shm::Segment::Unlink(e.name);
      hooks_.log("removed stale segment " + e.name + " (" + st.why + ")");
    }
  }
}

}  // namespace pitlane::internal
