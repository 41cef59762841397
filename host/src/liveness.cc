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
  CheckTruncation();
  ReclaimStrandedClaims();
  CheckLiveness();
  // Reclaim retired rings that are drained, and workers that are gone. RETIRED is a word in
  // the registry anyone can write: a live process that still maps a ring may still write it.
  std::vector<Worker*> gone;
  for (auto& [slot, w] : workers_) {
    if (!w->alive ||
        (w->leaving && !AnyWriterMayWrite(w->rings) && !WorkerMayStillBeAttached(*w))) {
      gone.push_back(w.get());
    }
  }
  for (Worker* w : gone) ReclaimWorker(w);
  std::vector<Ring*> done;
  for (Ring* r : drain_order_) {
    if (r->retired && !r->reader->HasUnreadUntrusted() && !AnyWriterMayWrite({r})) {
      done.push_back(r);
    }
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
    departed_total_.Add(it->second);
    if (at != departed_at_.end()) departed_at_.erase(at);
    it = departed_.erase(it);
  }
}

// Whether a writer may still write one of `rings`: its process lives (pidfd) and maps the
// segment. A worker unmaps a ring when it retires it, before the slot says so; a ring still
// mapped a pass later was marked retired by someone else (logged once).
bool ShmSource::AnyWriterMayWrite(const std::vector<Ring*>& rings) {
  for (Ring* r : rings) {
    if (!r->worker->alive ||
        !shm::MayBeMappedBy(r->worker->pid, r->segment.dev(), r->segment.ino(),
                            r->segment.base())) {
      continue;
    }
    if (++r->mapped_after_retire == 2) {
      hooks_.log("ring " + r->reader->name() + " of worker " + r->worker->id + " (pid " +
                 r->worker->pid_str + ") is marked retired but its process still maps it; " +
                 "it is read on and kept");
    }
    return true;
  }
  return false;
}

// Whether the Worker object behind a slot marked RETIRED may still exist. A Worker unmaps the
// registry when it is destroyed, right after marking its slot RETIRED, so its process then maps
// the registry no more often than its other attached workers do. A slot someone else marked
// RETIRED leaves its live Worker's mapping in place (and is logged once).
bool ShmSource::WorkerMayStillBeAttached(Worker& w) {
  size_t others = 0;
  for (const auto& [slot, o] : workers_) {
    others += o.get() != &w && o->pid == w.pid && o->alive && !o->leaving;
  }
  const size_t maps = shm::MappingsOf(w.pid, registry_.dev(), registry_.ino(), registry_.base());
  if (maps != shm::kUnknownMappings && maps <= others) return false;
  if (++w.attached_after_retire == 2) {
    hooks_.log("worker slot " + std::to_string(w.slot) + " of worker " + w.id + " (pid " +
               w.pid_str + ") is marked retired but its process still maps the registry; " +
               "the worker is kept");
  }
  return true;
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

// Segments someone truncated. A writer into a truncated ring writes into private zeros and
// never publishes again, so draining alone might never notice; the registry's loss shows only
// when a missing page is touched.
void ShmSource::CheckTruncation() {
  for (Ring* r : drain_order_) {
    if (r->reader->state() == shm::RingReader::State::kOk) {
      // Kept for the day the segment is truncated (StatsOf): after that it reads as zeros.
      Tally worker_side;
      const shm::RingHeader* h = r->reader->header();
      if (shm::Guarded([&] { worker_side = ReadRing(h->worker, Tally()); }) &&
          !r->segment.lost()) {
        std::lock_guard<std::mutex> lock(mu_);
        r->last_worker_side = worker_side;
      }
    }
    r->reader->CheckTruncated();
    if (r->reader->state() != shm::RingReader::State::kOk) ReportQuarantine(r);
  }
  if (!registry_lost_ && registry_.Lost()) {
    registry_lost_ = true;
    hooks_.log("registry " + registry_.name() + " was truncated by another process: workers " +
               "that attach from now on are not seen until the host restarts; rings already " +
               "attached are still read");
  }
}

// Frees slots left CLAIMING by a process that died mid-claim (seen CLAIMING two passes in a
// row with the same claimer, and the claimer gone), with the ring segment such a claimer may
// have created. A claimer is its pid and start time, as for any worker: a process that reused
// the pid does not keep a dead claim alive. A live claimer keeps its claim however long it
// takes (it may be stopped). Slots this host holds a worker or ring for are its own to free.
// Ring slots are judged before the worker slot that names their claimer.
void ShmSource::ReclaimStrandedClaims() {
  std::lock_guard<std::mutex> lock(mu_);
  std::map<uint32_t, Claimer> workers_now, rings_now;
  for (uint32_t i = 0; i < shm::kMaxRings; ++i) {
    shm::RingSlot* s = shm::RingSlotAt(registry_.base(), i);
    if (rings_.count(i) != 0 || s->state.load(std::memory_order_acquire) != shm::kSlotClaiming) {
      continue;
    }
    // Its claimer is the process in worker slot `ws` (none: gone).
    const uint32_t ws = s->worker_slot;
    Claimer c{ws, 0, 0};
    if (ws < shm::kMaxWorkers) {
      const shm::WorkerSlot* w = shm::WorkerSlotAt(registry_.base(), ws);
      if (w->state.load(std::memory_order_acquire) != shm::kSlotFree) {
        c.pid = static_cast<pid_t>(w->pid);
        c.start_time = w->start_time;
      }
    }
    auto before = claiming_rings_.find(i);
    uint32_t expected = shm::kSlotClaiming;
    if (before != claiming_rings_.end() && before->second == c &&
        !shm::ProcessAlive(c.pid, c.start_time) &&
        s->state.compare_exchange_strong(expected, shm::kSlotFree, std::memory_order_release)) {
      // The segment such a claimer made is named by its pid. The pid may be another process's
      // by now: its segment is left alone if that process maps it.
      UnlinkRingUnlessMapped(c.pid, i);
      hooks_.log("freed ring slot " + std::to_string(i) + " left claiming by a process that is gone");
      continue;
    }
    rings_now[i] = c;
  }
  for (uint32_t i = 0; i < shm::kMaxWorkers; ++i) {
    shm::WorkerSlot* s = shm::WorkerSlotAt(registry_.base(), i);
    if (workers_.count(i) != 0 ||
        s->state.load(std::memory_order_acquire) != shm::kSlotClaiming) {
      continue;
    }
    const Claimer c{i, static_cast<pid_t>(s->pid), s->start_time};
    auto before = claiming_workers_.find(i);
    // Kept while a ring slot still claimed names it: that claim is judged (and the segment its
    // claimer made found by the pid) first.
    const bool names_a_ring_claim =
        std::any_of(rings_now.begin(), rings_now.end(),
                    [i](const auto& ring) { return ring.second.worker_slot == i; });
    uint32_t expected = shm::kSlotClaiming;
    if (!names_a_ring_claim && before != claiming_workers_.end() && before->second == c &&
        !shm::ProcessAlive(c.pid, c.start_time) &&
        s->state.compare_exchange_strong(expected, shm::kSlotFree, std::memory_order_release)) {
      hooks_.log("freed worker slot " + std::to_string(i) + " left claiming by pid " +
                 std::to_string(c.pid) + ", which is gone");
      continue;
    }
    workers_now[i] = c;
  }
  claiming_workers_ = std::move(workers_now);
  claiming_rings_ = std::move(rings_now);
}

// Unlinks ring segment `slot` of `pid` unless that process maps it (a live writer's ring is
// never unlinked).
void ShmSource::UnlinkRingUnlessMapped(pid_t pid, uint32_t slot) {
  if (pid <= 0) return;
  const std::string name = shm::RingName(opt_.ns, pid, slot);
  if (shm::MayBeMappedBy(pid, name)) {
    hooks_.log("kept ring segment " + name + ": process " + std::to_string(pid) + " maps it");
    return;
  }
  shm::Segment::Unlink(name);
}

// Whether the worker slot still holds `w`'s claim: the same process (pid and start time). Not
// the generation: anyone can rewrite it, and only this host frees a slot for a new claim.
bool ShmSource::SlotStillOf(const Worker& w) const {
  const shm::WorkerSlot* s = shm::WorkerSlotAt(registry_.base(), w.slot);
  return s->pid == static_cast<uint32_t>(w.pid) && s->start_time == w.start_time;
}

// Drains everything the worker published, emits its terminated event, frees its slots.
void ShmSource::ReclaimWorker(Worker* w) {
  // Rings the worker registered that this host has not opened yet (it died before a rescan)
  // still hold published records: open them now. Ring slots it claimed but never published
  // (it died in between) are freed, with the segment it may have created.
  {
    std::lock_guard<std::mutex> lock(mu_);
    const bool slot_still_ours = SlotStillOf(*w);
    for (uint32_t i = 0; slot_still_ours && i < shm::kMaxRings; ++i) {
      shm::RingSlot* s = shm::RingSlotAt(registry_.base(), i);
      const uint32_t state = s->state.load(std::memory_order_acquire);
      if (s->worker_slot != w->slot) continue;
      if ((state == shm::kSlotReady || state == shm::kSlotRetired) &&
          rings_.find(i) == rings_.end()) {
        AddRing(i, s);
      } else if (state == shm::kSlotClaiming && !w->alive) {
        UnlinkRingUnlessMapped(w->pid, i);
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
  const bool planned =
      w->leaving ||
      (SlotStillOf(*w) && ws->state.load(std::memory_order_acquire) == shm::kSlotRetired);
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
  // Free the slot only if it is still this worker's claim (SlotStillOf). Its ringless
  // threads' counts go into the departed totals first. Reset its control block: the next
  // claimer (maybe another worker id) must not inherit this worker's toggle/sampling/filter;
  // the host re-applies what it remembers for that id.
  if (SlotStillOf(*w)) {
    static_cast<Tally&>(d) += ReadUnringed(ws->unringed);
    if (ws->control.version.load(std::memory_order_relaxed) != 0) {
      shm::WriteControl(&ws->control, ControlState(), /*generation=*/0);
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
  if (!r->worker->alive && !final_stats.Unverifiable() && final_stats.in_flight() > 0) {
    final_stats.dropped_in_flight = static_cast<uint64_t>(final_stats.in_flight());
  }
  if (final_stats.quarantined && !final_stats.Unverifiable() && final_stats.unread() > 0) {
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
  d.segment_lost |= final_stats.segment_lost;
  d.history_unknown |= final_stats.history_unknown;
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
