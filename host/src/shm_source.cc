#include "shm_source.h"

#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "pitlane/registry.h"

namespace pitlane::internal {

namespace {
int PidfdOpen(pid_t pid) { return static_cast<int>(syscall(SYS_pidfd_open, pid, 0)); }
}  // namespace

ShmSource::ShmSource(const HostOptions& options, Delivery& delivery, Hooks hooks)
    : opt_(options), delivery_(delivery), hooks_(std::move(hooks)) {
  ctx_.node = opt_.node;
  ctx_.pool_name = opt_.pool_name;
  ctx_.transport = Transport::kShm;
}

Result<std::unique_ptr<ShmSource>> ShmSource::Start(const HostOptions& options,
                                                    const Catalog& catalog, Delivery& delivery,
                                                    Hooks hooks) {
  std::unique_ptr<ShmSource> s(new ShmSource(options, delivery, std::move(hooks)));
  std::string log;
  Result<shm::HostRegistry> reg = shm::CreateOrAdoptRegistry(options.ns, catalog.hash(), &log);
  if (!reg.ok()) return reg.status();
  s->registry_ = std::move(reg).value();
  s->header_ = s->registry_.header();
  for (size_t pos = 0; pos < log.size();) {
    const size_t end = log.find('\n', pos);
    s->hooks_.log(log.substr(pos, end - pos));
    pos = end == std::string::npos ? log.size() : end + 1;
  }
  // An adopted registry: pick up its workers and rings before deciding what is stale.
  s->Discover();
  s->CleanStale();
  return s;
}

ShmSource::~ShmSource() {
  if (header_ == nullptr) return;  // Start failed before it had a registry
  header_->host_pid.store(0, std::memory_order_release);
  bool any = false;
  for (uint32_t i = 0; i < shm::kMaxWorkers; ++i) {
    any |= shm::WorkerSlotAt(registry_.base(), i)->state.load(std::memory_order_acquire) !=
           shm::kSlotFree;
  }
  for (auto& [slot, w] : workers_) {
    if (w->pidfd >= 0) ::close(w->pidfd);
  }
  // With no worker left the namespace is gone; otherwise a restarted host adopts it.
  if (!any) registry_.UnlinkIfHeld();
}

// ── discovery ────────────────────────────────────────────────────────────────────────────────

void ShmSource::Discover(bool force) {
  // Acquire pairs with the workers' release fetch_add in shm::BumpEpoch.
  const uint64_t epoch = header_->registry_epoch.load(std::memory_order_acquire);
  if (epoch == seen_epoch_ && !force) return;
  seen_epoch_ = epoch;
  std::lock_guard<std::mutex> lock(mu_);
  for (uint32_t i = 0; i < shm::kMaxWorkers; ++i) {
    shm::WorkerSlot* s = shm::WorkerSlotAt(registry_.base(), i);
    // Acquire pairs with the worker's release store of READY/RETIRED.
    const uint32_t state = s->state.load(std::memory_order_acquire);
    if (state != shm::kSlotReady && state != shm::kSlotRetired) continue;
    auto it = workers_.find(i);
    if (it != workers_.end() && it->second->generation != s->generation &&
        !it->second->generation_forged) {
      // Only this host frees a slot (after reclaiming its worker), so a known worker's
      // generation cannot change honestly. Whether the worker lives is its process's business
      // (the pidfd), never a word anyone can write.
      it->second->generation_forged = true;
      hooks_.log("worker slot " + std::to_string(i) + " of worker " + it->second->id + " (pid " +
                 it->second->pid_str + ") had its generation rewritten; ignored");
    }
    if (it == workers_.end()) AddWorker(i, s);
    if (state == shm::kSlotRetired) {
      auto w = workers_.find(i);
      if (w != workers_.end()) w->second->leaving = true;
    }
  }
  for (uint32_t i = 0; i < shm::kMaxRings; ++i) {
    shm::RingSlot* s = shm::RingSlotAt(registry_.base(), i);
    const uint32_t state = s->state.load(std::memory_order_acquire);
    if (state != shm::kSlotReady && state != shm::kSlotRetired) continue;
    auto it = rings_.find(i);
    if (it == rings_.end()) {
      AddRing(i, s);
      it = rings_.find(i);
    }
    if (it != rings_.end() && state == shm::kSlotRetired) it->second->retired = true;
  }
}

// REQUIRES: mu_ held.
void ShmSource::AddWorker(uint32_t index, shm::WorkerSlot* s) {
  auto w = std::make_unique<Worker>();
  w->slot = index;
  w->generation = s->generation;
  char id[shm::kWorkerIdBytes];
  std::memcpy(id, s->worker_id, sizeof(id));
  id[sizeof(id) - 1] = '\0';
  w->id = id;
  w->pid = static_cast<pid_t>(s->pid);
  w->pid_str = std::to_string(w->pid);
  w->start_time = s->start_time;
  w->pidfd = PidfdOpen(w->pid);
  // pidfd first, then the start time: if it matches, the pidfd is the right process.
  w->alive = w->pidfd >= 0 && shm::ProcessAlive(w->pid, w->start_time);
  seen_ids_.insert(w->id);
  // A block a previous host of the namespace wrote for this very worker (same slot
  // generation) holds the control state applied to it: a restarted host keeps that state
  // instead of undoing it (unless it has a state of its own for the id). Otherwise the host's
  // state for the id. Always write the block: a slot never written holds zeros (enabled = 0,
  // rate = 0), which a later BumpQuarantineEpoch would publish as "disabled"; a reused slot
  // holds the previous worker's state.
  ControlState found;
  uint64_t version = 0, quarantine_epoch = 0, written_for = 0;
  const bool left_for_it =
      shm::ReadControl(&s->control, &found, &version, &quarantine_epoch, &written_for) &&
      written_for == s->generation;
  const ControlState state =
      left_for_it ? hooks_.adopt_control(w->id, found) : hooks_.control_of(w->id);
  shm::WriteControl(&s->control, state, s->generation);
  workers_[index] = std::move(w);
}

// REQUIRES: mu_ held.
void ShmSource::AddRing(uint32_t index, shm::RingSlot* s) {
  auto w = workers_.find(s->worker_slot);
  if (w == workers_.end()) {
    // No worker in that slot. (A dead worker's unopened rings are picked up by ReclaimWorker;
    // segments nobody refers to are removed as stale at the next host start.)
    return;
  }
  // Whose ring it is comes from the process, not from the slot's generation word (anyone can
  // rewrite that, and a worker copies its slot's word into every ring it makes): the segment
  // is named by the worker's pid and this slot, and its creator's pid and start time are the
  // worker's (checked below, after the adoption checks).
  // The one segment a ring slot may name is derived from its identity: its worker's pid and
  // the slot index. Whatever segment_name says, no other segment is opened for the slot.
  const std::string seg_name = shm::RingName(opt_.ns, w->second->pid, index);
  char named[shm::kSegmentNameBytes];
  std::memcpy(named, s->segment_name, sizeof(named));
  named[sizeof(named) - 1] = '\0';
  if (seg_name != named) {
    hooks_.log("ignoring ring slot " + std::to_string(index) + " of worker " + w->second->id +
               ": it names " + std::string(named) + ", the segment of this slot is " + seg_name);
    return;
  }
  Result<shm::Segment> seg =
      shm::Segment::Open(seg_name, shm::kRingHeaderBytes, /*writable=*/true, /*populate=*/true);
  if (!seg.ok()) {
    hooks_.log("cannot open ring " + seg_name + " of worker " + w->second->id + ": " +
               seg.status().message());
    return;
  }
  // One file, one reader: the same file under another name (a hard link) is not read twice.
  for (const Ring* other : drain_order_) {
    if (other->segment.dev() == seg->dev() && other->segment.ino() == seg->ino()) {
      hooks_.log("ignoring ring " + seg_name + " of worker " + w->second->id +
                 ": it is the file already read as " + other->reader->name());
      return;
    }
  }
  Result<shm::RingReader> reader = shm::RingReader::Attach(seg->base(), seg->size(), seg_name);
  if (!reader.ok()) {
    hooks_.log("refusing ring " + seg_name + " of worker " + w->second->id + ": " +
               reader.status().message());
    return;
  }
  uint32_t creator = 0;
  uint64_t creator_start = 0;
  const shm::RingHeader* h = reader->header();
  if (!shm::Guarded([&] {
        creator = h->pid;
        creator_start = h->start_time;
      }) ||
      creator != static_cast<uint32_t>(w->second->pid) || creator_start != w->second->start_time) {
    // A segment left under this name by an earlier process with the same pid (or a forgery).
    hooks_.log("ignoring ring " + seg_name + " of worker " + w->second->id +
               ": it was not created by that worker's process (pid " + w->second->pid_str + ")");
    return;
  }
  if (!reader->snapshot_refused().empty()) {
    hooks_.log("ring " + seg_name + " of worker " + w->second->id + ": not resuming from its " +
               "counters, " + reader->snapshot_refused() + "; reading it from the consumer " +
               "position with counts of zero (its law cannot be checked)");
  }
  auto r = std::make_unique<Ring>();
  r->slot = index;
  r->generation = s->generation;
  r->segment = std::move(seg).value();
  r->reader.emplace(std::move(reader).value());
  r->counts.Store(r->reader->counts());  // a restarted host resumes from the snapshot's counts
  r->worker = w->second.get();
  w->second->rings.push_back(r.get());
  drain_order_.push_back(r.get());
  rings_[index] = std::move(r);
}

// ── draining ─────────────────────────────────────────────────────────────────────────────────

// A ring whose writer moved between each of the last two passes is being filled right now.
// Reading its newest records would pull the cache lines the writer is writing, and will write
// next, over to this core one record at a time, and each emit would wait for them to come back
// (doc/performance.md, "Emit back to back"). Such a ring is read once kBusyBatchBytes are
// waiting, far enough behind the writer, or a quarter of a smaller ring (which a writer would
// otherwise fill, and then drop, while it is held), or once it has been held back for
// HostOptions::hold_filling_ring. A ring whose writer was quiet at the previous pass (paced
// events, the first record of a burst) is read at once, so holding back costs a busy ring at most
// that long in latency and a quiet one nothing.
constexpr uint64_t kBusyBatchBytes = 8 << 10;

shm::ReadHold ShmSource::HoldFor(const Ring& r, std::chrono::steady_clock::time_point now) const {
  using TimePoint = std::chrono::steady_clock::time_point;
  const bool expired =
      r.held_since != TimePoint{} && now - r.held_since >= opt_.hold_filling_ring;
  if (!r.writer_moving || expired || opt_.hold_filling_ring.count() == 0) return {};
  // Held at this pass only if the writer moved again since the last one (ReadBatch checks).
  return {r.seen_producer, std::min(kBusyBatchBytes, r.reader->capacity() / 4)};
}

size_t ShmSource::DrainRing(Ring* r, shm::ReadHold hold,
                             std::chrono::steady_clock::time_point now) {
  shm::RingReader& reader = *r->reader;
  if (reader.state() != shm::RingReader::State::kOk) return 0;
  const size_t n = reader.ReadBatch(opt_.batch, &batch_, hold);
  // The writer as this pass saw it: whether it moved since the previous one, and since when the
  // ring has been held back ({}: it was read).
  r->writer_moving = batch_.producer != r->seen_producer;
  r->seen_producer = batch_.producer;
  if (!batch_.held) {
    r->held_since = {};
  } else if (r->held_since == std::chrono::steady_clock::time_point{}) {
    r->held_since = now;
  }
  // Nothing new: what the ring's header shows is already current. Publishing anyway would
  // rewrite the snapshot, the host counters and `consumer` on every pass over every ring.
  if (n == 0 && batch_.lost == 0 && reader.state() == shm::RingReader::State::kOk) return 0;
  if (batch_.lost != 0) delivery_.Reject(shm::kRejectLost, batch_.lost, nullptr);
  ctx_.worker_id = r->worker->id;
  ctx_.worker_pid = r->worker->pid_str;
  ctx_.pid = static_cast<uint32_t>(r->worker->pid);
  for (const shm::RecordBatch::Record& rec : batch_.records) {
    delivery_.DeliverRecord(batch_.payload(rec), rec.length, ctx_, &reader.counts(), &r->counts);
  }
  reader.Publish();
  if (n != 0 || batch_.lost != 0 || reader.state() != shm::RingReader::State::kOk) {
    r->counts.Store(r->reader->counts());
  }
  if (reader.state() != shm::RingReader::State::kOk) ReportQuarantine(r);
  return n;
}

void ShmSource::ReportQuarantine(Ring* r) {
  if (r->quarantine_reported) return;
  r->quarantine_reported = true;
  const shm::RingReader& reader = *r->reader;
  quarantined_.fetch_add(1, std::memory_order_relaxed);
  quarantined_by_reason_[reader.quarantine_reason()].fetch_add(1, std::memory_order_relaxed);
  hooks_.log("quarantined ring " + reader.name() + " of worker " + r->worker->id +
             " at offset " + std::to_string(reader.error_offset()) + ": " + reader.error());
  // Tell the worker (through its control block) to replace the ring.
  shm::BumpQuarantineEpoch(&shm::WorkerSlotAt(registry_.base(), r->worker->slot)->control);
}

size_t ShmSource::Drain(std::chrono::steady_clock::time_point now) {
  size_t n = 0;
  holding_ = false;
  for (Ring* r : drain_order_) {
    n += DrainRing(r, HoldFor(*r, now), now);
    holding_ |= r->held_since != std::chrono::steady_clock::time_point{};
  }
  return n;
}

bool ShmSource::AnyUnread() const {
  for (const Ring* r : drain_order_) {
    if (r->reader->HasUnreadUntrusted()) return true;
  }
  return false;
}

bool ShmSource::Pending() const {
  if (AnyUnread()) return true;
  for (const auto& [slot, w] : workers_) {
    if (!w->alive || w->leaving) return true;
  }
  for (const Ring* r : drain_order_) {
    if (r->retired) return true;
  }
  return false;
}

// ── statistics and control ───────────────────────────────────────────────────────────────────

// REQUIRES: mu_ held (or the poll thread).
RingStats ShmSource::StatsOf(const Ring& r) const {
  const shm::RingReader& reader = *r.reader;
  RingStats s;
  s.segment = reader.name();
  s.worker_id = r.worker->id;
  s.pid = static_cast<uint32_t>(r.worker->pid);
  s.ring_slot = r.slot;
  s.worker_alive = r.worker->alive;
  s.retired = r.retired;
  s.quarantined = reader.state() != shm::RingReader::State::kOk;
  s.quarantine_reason = reader.error();
  s.quarantine_kind = reader.quarantine_reason();
  s.capacity = reader.capacity();
  // The host's own counts are the authority (read first: see accounting.h's read order).
  const Tally host_side = r.counts.Load();
  Tally t = host_side;
  uint64_t producer = reader.consumer();
  const shm::RingHeader* h = reader.header();
  s.history_unknown = !reader.snapshot_refused().empty();
  s.segment_lost = reader.quarantine_reason() == shm::kQuarantineTruncated;
  if (s.segment_lost) {
    // The mapping now holds zeros: the worker side as last read, the host side as counted.
    t = r.last_worker_side;
    for (uint32_t i = 0; i < shm::kRejectReasonCount; ++i) t.rejected[i] = host_side.rejected[i];
    t.delivered = host_side.delivered;
    t.truncated = host_side.truncated;
  } else {
    shm::Guarded([&] {
      t = ReadRing(h->worker, host_side);
      producer = h->producer.load(std::memory_order_relaxed);
    });
  }
  static_cast<Tally&>(s) = t;
  s.used_bytes = std::min(producer - reader.consumer(), s.capacity);
  return s;
}

std::vector<RingStats> ShmSource::Rings() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<RingStats> out(history_.begin(), history_.end());
  for (const Ring* r : drain_order_) out.push_back(StatsOf(*r));
  return out;
}

std::vector<WorkerInfo> ShmSource::Workers() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::map<std::string, WorkerInfo> by_id = departed_;
  for (auto& [id, info] : by_id) info.alive = false;
  for (const auto& [slot, w] : workers_) {
    WorkerInfo& i = by_id[w->id];
    i.id = w->id;
    i.pid = static_cast<uint32_t>(w->pid);
    i.alive = w->alive && !w->leaving;
    const shm::UnringedCounters& u = shm::WorkerSlotAt(registry_.base(), slot)->unringed;
    static_cast<Tally&>(i) += ReadUnringed(u);
    for (const Ring* r : w->rings) {
      const RingStats s = StatsOf(*r);
      static_cast<Tally&>(i) += s;
      ++i.rings;
      ++i.rings_total;
      i.used_bytes += s.used_bytes;
      i.capacity += s.capacity;
      i.quarantined |= s.quarantined;
      i.segment_lost |= s.segment_lost;
      i.history_unknown |= s.history_unknown;
    }
  }
  std::vector<WorkerInfo> out;
  for (auto& [id, info] : by_id) out.push_back(std::move(info));
  return out;
}

DepartedWorkers ShmSource::Departed() const {
  std::lock_guard<std::mutex> lock(mu_);
  return departed_total_;
}

bool ShmSource::Knows(const std::string& worker_id) const {
  std::lock_guard<std::mutex> lock(mu_);
  return seen_ids_.count(worker_id) != 0;
}

void ShmSource::WriteControl(const std::string& worker_id, const ControlState& state) {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& [slot, w] : workers_) {
    if (w->id == worker_id && w->alive) {
      shm::WorkerSlot* s = shm::WorkerSlotAt(registry_.base(), slot);
      shm::WriteControl(&s->control, state, s->generation);
    }
  }
}

uint64_t ShmSource::quarantined() const { return quarantined_.load(std::memory_order_relaxed); }
void ShmSource::QuarantinedByReason(uint64_t out[shm::kQuarantineReasonCount]) const {
  for (uint32_t i = 0; i < shm::kQuarantineReasonCount; ++i) {
    out[i] = quarantined_by_reason_[i].load(std::memory_order_relaxed);
  }
}
uint64_t ShmSource::terminated() const { return terminated_.load(std::memory_order_relaxed); }

}  // namespace pitlane::internal
