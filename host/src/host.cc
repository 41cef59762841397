#include "pitlane/host.h"

#include <dirent.h>
#include <emmintrin.h>
#include <linux/futex.h>
#include <poll.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <deque>
#include <map>
#include <mutex>
#include <thread>
#include <unordered_map>

#include "fold.h"
#include "remote_hub.h"
#include "pitlane/defaults.h"
#include "pitlane/registry.h"
#include "pitlane/shm.h"

namespace pitlane {

std::string_view TransportName(Transport t) {
  switch (t) {
    case Transport::kShm: return "shm";
    case Transport::kGrpc: return "grpc";
    case Transport::kHost: return "host";
  }
  return "unknown";
}

const Value* EventView::measurement(std::string_view key) const {
  for (const MeasurementView& m : measurements) {
    if (m.key == key) return &m.value;
  }
  return nullptr;
}

std::optional<std::string_view> EventView::meta(std::string_view key) const {
  std::optional<std::string_view> found;
  for (const MetadataView& m : metadata) {
    if (m.key == key) found = m.value;  // the last wins: host context comes last
  }
  return found;
}

uint64_t RingStats::rejected_total() const {
  uint64_t n = 0;
  for (uint64_t r : rejected) n += r;
  return n;
}

bool RingStats::Conserved() const {
  return emitted == suppressed() + dropped() + published &&
         published == delivered + rejected_total();
}

namespace {

using internal::FoldContext;
using internal::Folder;
using internal::RawEvent;

int PidfdOpen(pid_t pid) { return static_cast<int>(syscall(SYS_pidfd_open, pid, 0)); }

struct HostRing;

struct HostWorker {
  uint32_t slot = 0;
  uint64_t generation = 0;
  std::string id;
  pid_t pid = 0;
  std::string pid_str;
  uint64_t start_time = 0;
  int pidfd = -1;
  bool alive = true;
  bool leaving = false;  // the Worker object was destroyed (graceful)
  std::vector<HostRing*> rings;
};

struct HostRing {
  uint32_t slot = 0;
  uint64_t generation = 0;
  shm::Segment segment;
  std::optional<shm::RingReader> reader;
  HostWorker* worker = nullptr;
  bool retired = false;
  bool quarantine_reported = false;
  RingStats final_stats;  // filled when reclaimed
};

// Handler table: rebuilt (copy-on-write) by Attach/Detach; the poll thread picks up a new one
// when `version` changes.
struct HandlerEntry {
  std::string id;
  std::vector<std::string> events;
  std::shared_ptr<Handler> fn;
  bool all = false;
};
struct HandlerTable {
  std::vector<HandlerEntry> entries;
  // Per event id: the handlers to call, in attach order.
  std::vector<std::vector<std::pair<std::string, std::shared_ptr<Handler>>>> by_event;
};

}  // namespace

class Host::Impl : public shm::RecordSink {
 public:
  HostOptions opt;
  std::shared_ptr<const Catalog> catalog;
  shm::Segment registry;
  shm::RegistryHeader* header = nullptr;
  internal::TimeConverter time;
  Folder folder;
  internal::RecordDecoder decoder;

  // Poll-thread state. Other threads read it only under `mu`; the poll thread mutates the
  // containers only under `mu`.
  mutable std::mutex mu;
  std::map<uint32_t, std::unique_ptr<HostWorker>> workers;  // by worker slot
  std::map<uint32_t, std::unique_ptr<HostRing>> rings;      // by ring slot
  std::vector<HostRing*> ring_list;                         // drain order
  std::deque<RingStats> history;                            // reclaimed rings
  std::map<std::string, ControlState> controls;             // by worker id, survives re-attach
  std::map<std::string, bool> seen_ids;
  uint64_t seen_epoch = ~uint64_t{0};
  std::chrono::steady_clock::time_point next_housekeeping{};
  std::chrono::steady_clock::time_point next_calibration{};

  // Counters (poll thread writes, others read).
  std::atomic<uint64_t> delivered{0}, truncated{0}, host_events{0}, handler_errors{0},
      quarantined{0}, terminated{0}, polls{0}, sleeps{0};
  std::atomic<uint64_t> rejected[shm::kRejectReasonCount] = {};
  std::atomic<uint64_t> quarantined_by_reason[shm::kQuarantineReasonCount] = {};

  // Handlers.
  mutable std::mutex handlers_mu;
  std::shared_ptr<const HandlerTable> handlers_shared = std::make_shared<HandlerTable>();
  std::atomic<uint64_t> handlers_version{1};
  std::shared_ptr<const HandlerTable> handlers;  // poll thread's copy
  uint64_t handlers_seen = 0;
  std::vector<std::string> detached;
  std::vector<std::string> to_detach;  // poll thread: handlers that threw this pass

  // The record being drained (for OnRecord).
  HostRing* current = nullptr;
  FoldContext current_ctx;

  std::thread loop;
  std::atomic<bool> loop_stop{false};

  // gRPC: remote workers (null when neither grpc_listen nor grpc_dial is set).
  std::unique_ptr<internal::RemoteHub> hub;
  internal::RemoteHub::Sink hub_sink;
  FoldContext remote_ctx;

  explicit Impl(std::shared_ptr<const Catalog> cat)
      : catalog(std::move(cat)), folder(*catalog) {}

  void Log(const std::string& line) {
    if (opt.log) {
      opt.log(line);
    } else {
      std::fprintf(stderr, "pitlane host: %s\n", line.c_str());
    }
  }

  // ── records ──────────────────────────────────────────────────────────────────────────────
  void OnRecord(const uint8_t* payload, uint32_t length, uint32_t) override {
    shm::RingReader::Counters& c = current->reader->counters();
    RawEvent raw;
    if (!decoder.Decode(payload, length, time, &raw)) {
      ++c.rejected[shm::kRejectMalformed];
      BumpLocal(rejected[shm::kRejectMalformed], 1);
      return;
    }
    EventView view;
    const internal::FoldOutcome out = folder.Fold(raw, current_ctx, &view);
    if (!out.delivered) {
      ++c.rejected[out.reject_reason];
      BumpLocal(rejected[out.reject_reason], 1);
      return;
    }
    ++c.delivered;
    BumpLocal(delivered, 1);
    if (out.truncated) {
      ++c.truncated;
      BumpLocal(truncated, 1);
    }
    Dispatch(view);
  }

  void OnLost(uint64_t count) override { BumpLocal(rejected[shm::kRejectLost], count); }

  // Counters only the poll thread writes: a relaxed load and store, no locked instruction.
  static void BumpLocal(std::atomic<uint64_t>& c, uint64_t n) {
    c.store(c.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }

  void Dispatch(const EventView& view) {
    if (view.event->id >= handlers->by_event.size()) return;  // no handler attached yet
    const auto& list = handlers->by_event[view.event->id];
    for (const auto& [id, fn] : list) {
      // A handler that threw earlier in this pass is already detached: never call it again
      // (the table copy we iterate is refreshed only at the next pass).
      if (!to_detach.empty() &&
          std::find(to_detach.begin(), to_detach.end(), id) != to_detach.end()) {
        continue;
      }
      try {
        (*fn)(view);
      } catch (const std::exception& e) {
        HandlerFailed(id, e.what());
      } catch (...) {
        HandlerFailed(id, "unknown exception");
      }
    }
  }

  void HandlerFailed(const std::string& id, const std::string& what) {
    if (std::find(to_detach.begin(), to_detach.end(), id) != to_detach.end()) return;
    handler_errors.fetch_add(1, std::memory_order_relaxed);
    to_detach.push_back(id);
    Log("handler \"" + id + "\" threw (" + what + "); detached");
    std::lock_guard<std::mutex> lock(handlers_mu);
    detached.push_back(id + ": " + what);
  }

  void RefreshHandlers() {
    if (!to_detach.empty()) {
      std::vector<std::string> ids;
      ids.swap(to_detach);
      for (const std::string& id : ids) RemoveHandler(id);
    }
    const uint64_t v = handlers_version.load(std::memory_order_acquire);
    if (v != handlers_seen) {
      std::lock_guard<std::mutex> lock(handlers_mu);
      handlers = handlers_shared;
      handlers_seen = handlers_version.load(std::memory_order_relaxed);
    }
  }

  bool RemoveHandler(const std::string& id) {
    std::lock_guard<std::mutex> lock(handlers_mu);
    auto table = std::make_shared<HandlerTable>(*handlers_shared);
    const auto it = std::find_if(table->entries.begin(), table->entries.end(),
                                 [&](const HandlerEntry& e) { return e.id == id; });
    if (it == table->entries.end()) return false;
    table->entries.erase(it);
    Rebuild(*table);
    handlers_shared = std::move(table);
    handlers_version.fetch_add(1, std::memory_order_release);
    return true;
  }

  void Rebuild(HandlerTable& t) const {
    t.by_event.assign(catalog->event_count() + 1, {});
    for (const HandlerEntry& e : t.entries) {
      for (uint16_t id = 1; id <= catalog->event_count(); ++id) {
        const bool match =
            e.all || std::find(e.events.begin(), e.events.end(), catalog->event(id).host_name) !=
                         e.events.end();
        if (match) t.by_event[id].emplace_back(e.id, e.fn);
      }
    }
  }

  // Events the host emits itself go through the same handler dispatch.
  void EmitHostEvent(std::string_view canonical, std::span<const MeasurementView> m,
                     std::span<const MetadataView> md, std::string_view worker_id, uint32_t pid) {
    const uint16_t id = catalog->FindCanonical(canonical);
    if (id == 0) return;
    EventView v;
    v.event = &catalog->event(id);
    v.timestamp_ns = static_cast<int64_t>(shm::UnixNowNs());
    v.measurements = m;
    v.metadata = md;
    v.worker_id = worker_id;
    v.worker_pid = pid;
    v.transport = Transport::kHost;
    host_events.fetch_add(1, std::memory_order_relaxed);
    Dispatch(v);
  }

  // ── discovery ────────────────────────────────────────────────────────────────────────────
  void Discover() {
    // Acquire pairs with the workers' release fetch_add in shm::BumpEpoch.
    const uint64_t epoch = header->registry_epoch.load(std::memory_order_acquire);
    if (epoch == seen_epoch) return;
    seen_epoch = epoch;
    std::lock_guard<std::mutex> lock(mu);
    for (uint32_t i = 0; i < shm::kMaxWorkers; ++i) {
      shm::WorkerSlot* s = shm::WorkerSlotAt(registry.base(), i);
      // Acquire pairs with the worker's release store of READY/RETIRED.
      const uint32_t state = s->state.load(std::memory_order_acquire);
      auto it = workers.find(i);
      if (state == shm::kSlotReady || state == shm::kSlotRetired) {
        if (it != workers.end() && it->second->generation != s->generation) {
          // The slot was freed and claimed again while we were not looking.
          it->second->alive = false;
        }
        if (it == workers.end()) AddWorker(i, s);
        if (state == shm::kSlotRetired) {
          auto w = workers.find(i);
          if (w != workers.end()) w->second->leaving = true;
        }
      }
    }
    for (uint32_t i = 0; i < shm::kMaxRings; ++i) {
      shm::RingSlot* s = shm::RingSlotAt(registry.base(), i);
      const uint32_t state = s->state.load(std::memory_order_acquire);
      if (state != shm::kSlotReady && state != shm::kSlotRetired) continue;
      auto it = rings.find(i);
      if (it == rings.end()) {
        AddRing(i, s);
        it = rings.find(i);
      }
      if (it != rings.end() && state == shm::kSlotRetired) it->second->retired = true;
    }
  }

  void AddWorker(uint32_t index, shm::WorkerSlot* s) {
    auto w = std::make_unique<HostWorker>();
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
    seen_ids[w->id] = true;
    // Always write the block: a slot never written holds zeros (enabled = 0, rate = 0), which a
    // later BumpQuarantineEpoch would publish as "disabled"; a reused slot holds the previous
    // worker's state.
    auto c = controls.find(w->id);
    shm::WriteControl(&s->control, c != controls.end() ? c->second : ControlState());
    workers[index] = std::move(w);
  }

  void AddRing(uint32_t index, shm::RingSlot* s) {
    char name[shm::kSegmentNameBytes];
    std::memcpy(name, s->segment_name, sizeof(name));
    name[sizeof(name) - 1] = '\0';
    const std::string seg_name = name;
    const uint32_t worker_slot = s->worker_slot;
    const std::string prefix = "/" + shm::SegmentPrefix(opt.ns) + "ring.";
    auto w = workers.find(worker_slot);
    if (seg_name.rfind(prefix, 0) != 0 || w == workers.end() ||
        w->second->generation != s->generation) {
      // Not a name of ours, or not a ring of the worker now in that slot: never open arbitrary
      // segments a slot points to. (A dead worker's unopened rings are picked up by
      // ReclaimWorker; segments nobody refers to are removed as stale at the next host start.)
      return;
    }
    Result<shm::Segment> seg =
        shm::Segment::Open(seg_name, shm::kRingHeaderBytes, /*writable=*/true, /*populate=*/true);
    if (!seg.ok()) {
      Log("cannot open ring " + seg_name + " of worker " + w->second->id + ": " +
          seg.status().message());
      return;
    }
    Result<shm::RingReader> reader =
        shm::RingReader::Attach(seg->base(), seg->size(), seg_name);
    if (!reader.ok()) {
      Log("refusing ring " + seg_name + " of worker " + w->second->id + ": " +
          reader.status().message());
      return;
    }
    auto r = std::make_unique<HostRing>();
    r->slot = index;
    r->generation = s->generation;
    r->segment = std::move(seg).value();
    r->reader.emplace(std::move(reader).value());
    r->worker = w->second.get();
    w->second->rings.push_back(r.get());
    ring_list.push_back(r.get());
    rings[index] = std::move(r);
  }

  // ── draining ─────────────────────────────────────────────────────────────────────────────
  size_t DrainRing(HostRing* r) {
    if (r->reader->state() != shm::RingReader::State::kOk) return 0;
    current = r;
    current_ctx.worker_id = r->worker->id;
    current_ctx.worker_pid = r->worker->pid_str;
    current_ctx.pid = static_cast<uint32_t>(r->worker->pid);
    const size_t n = r->reader->Drain(opt.batch, *this);
    if (r->reader->state() != shm::RingReader::State::kOk && !r->quarantine_reported) {
      r->quarantine_reported = true;
      quarantined.fetch_add(1, std::memory_order_relaxed);
      quarantined_by_reason[r->reader->quarantine_reason()].fetch_add(1, std::memory_order_relaxed);
      Log("quarantined ring " + r->reader->name() + " of worker " + r->worker->id + " at offset " +
          std::to_string(r->reader->error_offset()) + ": " + r->reader->error());
      // Tell the worker (through its control block) to replace the ring.
      shm::WorkerSlot* s = shm::WorkerSlotAt(registry.base(), r->worker->slot);
      shm::BumpQuarantineEpoch(&s->control);
    }
    return n;
  }

  size_t DrainPass() {
    size_t n = 0;
    for (HostRing* r : ring_list) n += DrainRing(r);
    return n;
  }

  // ── housekeeping: liveness, reclaim ──────────────────────────────────────────────────────
  void Housekeeping() {
    std::vector<pollfd> fds;
    std::vector<HostWorker*> polled;
    for (auto& [slot, w] : workers) {
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
    // Reclaim retired rings that are drained, and workers that are gone.
    std::vector<HostWorker*> gone;
    for (auto& [slot, w] : workers) {
      if (!w->alive || w->leaving) gone.push_back(w.get());
    }
    for (HostWorker* w : gone) ReclaimWorker(w);
    std::vector<HostRing*> done;
    for (HostRing* r : ring_list) {
      if (r->retired && !r->reader->HasUnreadUntrusted()) done.push_back(r);
    }
    for (HostRing* r : done) {
      DrainRing(r);  // pick up anything published between the check and the retire
      if (!r->reader->HasUnreadUntrusted()) ReclaimRing(r);
    }
  }

  // Drains everything the worker published, emits its terminated event, frees its slots.
  void ReclaimWorker(HostWorker* w) {
    // Rings the worker registered that this host has not opened yet (it died before a rescan)
    // still hold published records: open them now. Ring slots it claimed but never published
    // (it died in between) are freed, with the segment it may have created.
    {
      std::lock_guard<std::mutex> lock(mu);
      const bool slot_still_ours =
          shm::WorkerSlotAt(registry.base(), w->slot)->generation == w->generation;
      for (uint32_t i = 0; slot_still_ours && i < shm::kMaxRings; ++i) {
        shm::RingSlot* s = shm::RingSlotAt(registry.base(), i);
        const uint32_t state = s->state.load(std::memory_order_acquire);
        if (s->worker_slot != w->slot) continue;
        if ((state == shm::kSlotReady || state == shm::kSlotRetired) &&
            s->generation == w->generation && rings.find(i) == rings.end()) {
          AddRing(i, s);
        } else if (state == shm::kSlotClaiming && !w->alive) {
          shm::Segment::Unlink(shm::RingName(opt.ns, w->pid, i));
          s->state.store(shm::kSlotFree, std::memory_order_release);
        }
      }
    }
    for (HostRing* r : w->rings) {
      for (int i = 0; i < 100000 && DrainRing(r) > 0; ++i) {
      }
    }
    // Planned: the Worker object was destroyed (slot RETIRED) before the process went away. A
    // process normally exits right after that, so whether it is still alive does not matter;
    // the slot is re-read in case the process died before a rescan saw the RETIRED state.
    const shm::WorkerSlot* ws = shm::WorkerSlotAt(registry.base(), w->slot);
    const bool planned =
        w->leaving || (ws->generation == w->generation &&
                       ws->state.load(std::memory_order_acquire) == shm::kSlotRetired);
    std::vector<HostRing*> rs = w->rings;
    for (HostRing* r : rs) ReclaimRing(r);
    terminated.fetch_add(1, std::memory_order_relaxed);
    const MetadataView md[] = {
        {"reason", planned ? "shutdown" : "process_exited", catalog->MetadataKeyId("reason")},
        {"planned", planned ? "true" : "false", catalog->MetadataKeyId("planned")},
        {"worker_id", w->id, catalog->MetadataKeyId("worker_id")},
        {"worker_pid", w->pid_str, catalog->MetadataKeyId("worker_pid")},
        {"node", opt.node, catalog->MetadataKeyId("node")},
        {"pool_name", opt.pool_name, catalog->MetadataKeyId("pool_name")},
    };
    const int64_t lifetime_ns = 0;
    const MeasurementView m[] = {{"lifetime", Value(lifetime_ns)}};
    EmitHostEvent("pool.worker.terminated", m, md, w->id, static_cast<uint32_t>(w->pid));
    if (w->pidfd >= 0) ::close(w->pidfd);
    std::lock_guard<std::mutex> lock(mu);
    shm::WorkerSlot* s = shm::WorkerSlotAt(registry.base(), w->slot);
    // Free the slot only if it is still the claim we know (generation unchanged). Reset its
    // control block first: the next claimer (maybe another worker id) must not inherit this
    // worker's toggle/sampling/filter; the host re-applies what it remembers for that id.
    if (s->generation == w->generation) {
      if (s->control.version.load(std::memory_order_relaxed) != 0) {
        shm::WriteControl(&s->control, ControlState());
      }
      s->state.store(shm::kSlotFree, std::memory_order_release);
    }
    workers.erase(w->slot);
  }

  RingStats StatsOf(const HostRing* r) const {
    RingStats s;
    s.segment = r->reader->name();
    s.worker_id = r->worker->id;
    s.pid = static_cast<uint32_t>(r->worker->pid);
    s.ring_slot = r->slot;
    s.worker_alive = r->worker->alive;
    s.retired = r->retired;
    s.quarantined = r->reader->state() != shm::RingReader::State::kOk;
    s.quarantine_reason = r->reader->error();
    s.quarantine_kind = r->reader->quarantine_reason();
    s.capacity = r->reader->capacity();
    struct Ctx {
      const HostRing* r;
      RingStats* s;
    } ctx{r, &s};
    shm::RunGuarded(
        [](void* p) {
          auto* c = static_cast<Ctx*>(p);
          const shm::RingHeader* h = c->r->reader->header();
          const shm::WorkerCounters& w = h->worker;
          RingStats& s = *c->s;
          s.emitted = w.emitted.load(std::memory_order_relaxed);
          s.published = w.published.load(std::memory_order_relaxed);
          s.dropped_full = w.dropped_full.load(std::memory_order_relaxed);
          s.dropped_too_large = w.dropped_too_large.load(std::memory_order_relaxed);
          s.suppressed_disabled = w.suppressed_disabled.load(std::memory_order_relaxed);
          s.suppressed_sampled = w.suppressed_sampled.load(std::memory_order_relaxed);
          s.suppressed_filtered = w.suppressed_filtered.load(std::memory_order_relaxed);
          const uint64_t used = h->producer.load(std::memory_order_relaxed) -
                                h->consumer.load(std::memory_order_relaxed);
          s.used_bytes = std::min(used, s.capacity);
          const shm::HostCounters& hc = h->host;
          s.delivered = hc.delivered.load(std::memory_order_relaxed);
          s.truncated = hc.truncated.load(std::memory_order_relaxed);
          for (uint32_t i = 0; i < shm::kRejectReasonCount; ++i) {
            s.rejected[i] = hc.rejected[i].load(std::memory_order_relaxed);
          }
        },
        &ctx);
    return s;
  }

  void ReclaimRing(HostRing* r) {
    RingStats final_stats = StatsOf(r);
    // A writer killed between publishing a record and counting it leaves `published` short by
    // that record; the host read it (with its sequence number), so it was published.
    final_stats.published =
        std::max(final_stats.published, final_stats.delivered + final_stats.rejected_total());
    // Likewise a writer killed inside an emit has counted it as emitted and nothing else.
    const uint64_t accounted =
        final_stats.suppressed() + final_stats.dropped() + final_stats.published;
    if (!r->worker->alive && final_stats.emitted > accounted) {
      final_stats.dropped_in_flight = final_stats.emitted - accounted;
    }
    if (final_stats.quarantined) {
      // Whatever the worker published that we never read is lost: count it, so the ring's
      // accounting still closes.
      const uint64_t seen = final_stats.delivered + final_stats.rejected_total();
      if (final_stats.published > seen) {
        const uint64_t lost = final_stats.published - seen;
        r->reader->counters().rejected[shm::kRejectLost] += lost;
        final_stats.rejected[shm::kRejectLost] += lost;
        rejected[shm::kRejectLost].fetch_add(lost, std::memory_order_relaxed);
      }
    }
    final_stats.reclaimed = true;
    final_stats.used_bytes = 0;
    std::lock_guard<std::mutex> lock(mu);
    shm::Segment::Unlink(r->reader->name());
    shm::RingSlot* s = shm::RingSlotAt(registry.base(), r->slot);
    if (s->generation == r->generation) s->state.store(shm::kSlotFree, std::memory_order_release);
    history.push_back(std::move(final_stats));
    if (history.size() > 4096) history.pop_front();
    auto& wr = r->worker->rings;
    wr.erase(std::remove(wr.begin(), wr.end(), r), wr.end());
    ring_list.erase(std::remove(ring_list.begin(), ring_list.end(), r), ring_list.end());
    rings.erase(r->slot);
  }

  // Removes ring segments of dead processes that no registry slot refers to.
  void CleanStale() {
    const std::string prefix = shm::SegmentPrefix(opt.ns) + "ring.";
    DIR* d = opendir("/dev/shm");
    if (d == nullptr) return;
    std::vector<std::string> names;
    while (dirent* e = readdir(d)) {
      if (std::strncmp(e->d_name, prefix.c_str(), prefix.size()) == 0) names.push_back(e->d_name);
    }
    closedir(d);
    for (const std::string& n : names) {
      const std::string full = "/" + n;
      bool referenced = false;
      for (const auto& [slot, r] : rings) referenced |= r->reader->name() == full;
      if (referenced) continue;
      const pid_t pid = static_cast<pid_t>(std::atol(n.c_str() + prefix.size()));
      uint64_t start_time = 0;
      if (Result<shm::Segment> seg = shm::Segment::Open(full, 0, false); seg.ok()) {
        if (seg->size() >= sizeof(shm::RingHeader)) {
          start_time = static_cast<const shm::RingHeader*>(seg->base())->start_time;
        }
      }
      if (!shm::ProcessAlive(pid, start_time)) {
        shm::Segment::Unlink(full);
        Log("removed stale segment " + full + " (creator pid " + std::to_string(pid) +
            " is gone)");
      }
    }
  }

  void WakeLoop() {
    if (header->host_sleeping.exchange(0, std::memory_order_acq_rel) == 1) {
      syscall(SYS_futex, reinterpret_cast<uint32_t*>(&header->host_sleeping), FUTEX_WAKE, 1,
              nullptr, nullptr, 0);
    }
  }

  // What the poll thread does with remote events: the same counters and dispatch as rings.
  void PrepareHubSink() {
    hub_sink.event = [this](const internal::FoldOutcome& out, const EventView& view) {
      if (!out.delivered) {
        BumpLocal(rejected[out.reject_reason], 1);
        return;
      }
      BumpLocal(delivered, 1);
      if (out.truncated) BumpLocal(truncated, 1);
      Dispatch(view);
    };
    hub_sink.host_event = [this](std::string_view canonical, std::span<const MeasurementView> m,
                                 std::span<const MetadataView> md, std::string_view worker_id,
                                 uint32_t pid) { EmitHostEvent(canonical, m, md, worker_id, pid); };
    remote_ctx.node = opt.node;
    remote_ctx.pool_name = opt.pool_name;
    remote_ctx.transport = Transport::kGrpc;
  }

  size_t PollOnce() {
    polls.fetch_add(1, std::memory_order_relaxed);
    RefreshHandlers();
    Discover();
    size_t n = DrainPass();
    if (hub) n += hub->Drain(folder, remote_ctx, hub_sink);
    const auto now = std::chrono::steady_clock::now();
    if (now >= next_housekeeping) {
      next_housekeeping = now + std::chrono::milliseconds(100);
      Housekeeping();
      if (now >= next_calibration) {
        next_calibration = now + std::chrono::seconds(1);
        time.Recalibrate();
      }
    }
    return n;
  }

  bool AnyUnread() const {
    for (HostRing* r : ring_list) {
      if (r->reader->HasUnreadUntrusted()) return true;
    }
    return false;
  }

  void Run(const std::atomic<bool>& stop) {
    auto idle_since = std::chrono::steady_clock::now();
    while (!stop.load(std::memory_order_relaxed)) {
      if (PollOnce() > 0) {
        idle_since = std::chrono::steady_clock::now();
        continue;
      }
      if (opt.busy_poll) {
        // Re-reading every producer position back to back would pull each ring's producer
        // line away from its writer on every pass; a few pauses between empty passes keep it
        // with the writer at a cost of ~100 ns of added latency.
        for (int i = 0; i < 16; ++i) _mm_pause();
        continue;
      }
      const auto now = std::chrono::steady_clock::now();
      if (now - idle_since < opt.spin) {
        _mm_pause();
        continue;
      }
      // Flag ourselves asleep, then look once more so a record published before the flag
      // became visible is not left waiting for the timeout.
      header->host_sleeping.store(1, std::memory_order_seq_cst);
      if (AnyUnread() || (hub && hub->Pending()) ||
          header->registry_epoch.load(std::memory_order_seq_cst) != seen_epoch) {
        header->host_sleeping.store(0, std::memory_order_relaxed);
        continue;
      }
      sleeps.fetch_add(1, std::memory_order_relaxed);
      const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(opt.max_sleep).count();
      timespec ts{static_cast<time_t>(ns / 1000000000), static_cast<long>(ns % 1000000000)};
      syscall(SYS_futex, reinterpret_cast<uint32_t*>(&header->host_sleeping), FUTEX_WAIT, 1, &ts,
              nullptr, 0);
      header->host_sleeping.store(0, std::memory_order_relaxed);
    }
  }
};

Result<std::unique_ptr<Host>> Host::Start(HostOptions options) {
  if (options.ns.empty()) options.ns = defaults::Namespace();
  if (Status s = shm::ValidateNamespace(options.ns); !s.ok()) return s;
  if (options.node.empty()) options.node = defaults::Node();
  if (options.pool_name.empty()) options.pool_name = defaults::PoolName();
  if (!options.catalog) options.catalog = Catalog::Default();
  if (options.batch == 0) return InvalidArgument("batch must be at least 1");
  auto impl = std::make_unique<Impl>(options.catalog);
  impl->opt = std::move(options);
  std::string log;
  Result<shm::Segment> reg =
      shm::CreateOrAdoptRegistry(impl->opt.ns, impl->catalog->hash(), &log);
  if (!reg.ok()) return reg.status();
  impl->registry = std::move(reg).value();
  impl->header = shm::Header(impl->registry);
  impl->current_ctx.node = impl->opt.node;
  impl->current_ctx.pool_name = impl->opt.pool_name;
  impl->current_ctx.transport = Transport::kShm;
  impl->handlers = impl->handlers_shared;
  for (size_t pos = 0; pos < log.size();) {
    const size_t end = log.find('\n', pos);
    impl->Log(log.substr(pos, end - pos));
    pos = end == std::string::npos ? log.size() : end + 1;
  }
  {
    // Adopted registry: pick up its workers and rings before deciding what is stale.
    impl->Discover();
    impl->CleanStale();
  }
  if (!impl->opt.grpc_listen.empty() || !impl->opt.grpc_dial.empty()) {
    impl->PrepareHubSink();
    internal::RemoteHub::Hooks hooks;
    Host::Impl* raw = impl.get();
    hooks.wake = [raw] { raw->WakeLoop(); };
    hooks.log = [raw](std::string_view line) { raw->Log(std::string(line)); };
    hooks.control_of = [raw](const std::string& id) {
      std::lock_guard<std::mutex> lock(raw->mu);
      auto it = raw->controls.find(id);
      return it == raw->controls.end() ? ControlState() : it->second;
    };
    Result<std::unique_ptr<internal::RemoteHub>> hub =
        internal::RemoteHub::Start(impl->opt, *impl->catalog, std::move(hooks));
    if (!hub.ok()) return hub.status();
    impl->hub = std::move(hub).value();
  }
  return std::unique_ptr<Host>(new Host(std::move(impl)));
}

Host::Host(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Host::~Host() {
  Stop();
  Impl& h = *impl_;
  h.hub.reset();  // closes remote streams before the rest goes
  h.header->host_pid.store(0, std::memory_order_release);
  bool any = false;
  for (uint32_t i = 0; i < shm::kMaxWorkers; ++i) {
    any |= shm::WorkerSlotAt(h.registry.base(), i)->state.load(std::memory_order_acquire) !=
           shm::kSlotFree;
  }
  for (auto& [slot, w] : h.workers) {
    if (w->pidfd >= 0) ::close(w->pidfd);
  }
  // With no worker left the namespace is gone; otherwise a restarted host adopts it.
  if (!any) shm::Segment::Unlink(h.registry.name());
}

size_t Host::PollOnce() { return impl_->PollOnce(); }
void Host::Run(const std::atomic<bool>& stop) { impl_->Run(stop); }

void Host::RunInBackground() {
  if (impl_->loop.joinable()) return;
  impl_->loop_stop.store(false);
  impl_->loop = std::thread([this] { impl_->Run(impl_->loop_stop); });
}

void Host::Stop() {
  if (!impl_->loop.joinable()) return;
  impl_->loop_stop.store(true);
  // Wake the loop if it sleeps.
  impl_->header->host_sleeping.store(0);
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(&impl_->header->host_sleeping), FUTEX_WAKE, 1,
          nullptr, nullptr, 0);
  impl_->loop.join();
}

bool Host::DrainAll(std::chrono::milliseconds timeout) {
  const bool was_running = impl_->loop.joinable();
  Stop();
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  bool done = false;
  while (std::chrono::steady_clock::now() < deadline) {
    impl_->seen_epoch = ~uint64_t{0};  // rescan
    impl_->PollOnce();
    impl_->next_housekeeping = {};
    impl_->PollOnce();
    bool pending = impl_->AnyUnread();
    for (const auto& [slot, w] : impl_->workers) pending |= !w->alive || w->leaving;
    for (HostRing* r : impl_->ring_list) pending |= r->retired;
    if (impl_->hub) pending |= !impl_->hub->Settled();
    if (!pending) {
      done = true;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  if (was_running) RunInBackground();
  return done;
}

Status Host::Attach(const std::string& handler_id, const std::string& event, Handler handler) {
  return AttachMany(handler_id, {event}, std::move(handler));
}

Status Host::AttachMany(const std::string& handler_id, const std::vector<std::string>& events,
                        Handler handler) {
  if (handler_id.empty()) return InvalidArgument("handler id must not be empty");
  if (!handler) return InvalidArgument("handler \"" + handler_id + "\" has no callback");
  if (events.empty()) return InvalidArgument("handler \"" + handler_id + "\" names no event");
  HandlerEntry e;
  e.id = handler_id;
  for (const std::string& name : events) {
    if (name == "*") {
      e.all = true;
    } else if (impl_->catalog->FindHostEvent(name) == 0) {
      return NotFound("event \"" + name + "\" is not in the catalog (host names look like \"" +
                      std::string(impl_->catalog->root()) + ".python.call.stop\")");
    }
    e.events.push_back(name);
  }
  e.fn = std::make_shared<Handler>(std::move(handler));
  std::lock_guard<std::mutex> lock(impl_->handlers_mu);
  for (const HandlerEntry& x : impl_->handlers_shared->entries) {
    if (x.id == handler_id) {
      return Status(StatusCode::kAlreadyExists, "handler \"" + handler_id + "\" is attached");
    }
  }
  auto table = std::make_shared<HandlerTable>(*impl_->handlers_shared);
  table->entries.push_back(std::move(e));
  impl_->Rebuild(*table);
  impl_->handlers_shared = std::move(table);
  impl_->handlers_version.fetch_add(1, std::memory_order_release);
  return Status::Ok();
}

bool Host::Detach(const std::string& handler_id) { return impl_->RemoveHandler(handler_id); }

std::vector<HandlerInfo> Host::Handlers() const {
  std::lock_guard<std::mutex> lock(impl_->handlers_mu);
  std::vector<HandlerInfo> out;
  for (const HandlerEntry& e : impl_->handlers_shared->entries) out.push_back({e.id, e.events});
  return out;
}

std::vector<std::string> Host::DetachedHandlers() const {
  std::lock_guard<std::mutex> lock(impl_->handlers_mu);
  return impl_->detached;
}

namespace {

Status ApplyControl(Host::Impl& h, const std::string& worker_id,
                    const std::function<void(ControlState&)>& change) {
  std::lock_guard<std::mutex> lock(h.mu);
  const bool remote = h.hub && h.hub->Knows(worker_id);
  if (h.seen_ids.find(worker_id) == h.seen_ids.end() && !remote) {
    return NotFound("no worker with id \"" + worker_id + "\" has attached to namespace \"" +
                    h.opt.ns + "\"" + (h.hub ? " or connected over gRPC" : ""));
  }
  ControlState next = h.controls.count(worker_id) ? h.controls[worker_id] : ControlState();
  change(next);
  if (Status s = next.Validate(); !s.ok()) return s;
  h.controls[worker_id] = next;
  for (auto& [slot, w] : h.workers) {
    if (w->id == worker_id && w->alive) {
      shm::WriteControl(&shm::WorkerSlotAt(h.registry.base(), slot)->control, next);
    }
  }
  if (remote) h.hub->PushControl(worker_id, next);
  return Status::Ok();
}

}  // namespace

Status Host::Toggle(const std::string& worker_id, bool enabled) {
  return ApplyControl(*impl_, worker_id, [&](ControlState& s) { s.enabled = enabled; });
}

Status Host::UpdateSampling(const std::string& worker_id, double rate,
                            const std::vector<std::string>& patterns) {
  return ApplyControl(*impl_, worker_id, [&](ControlState& s) {
    s.sampling_rate = rate;
    s.sampling_patterns = patterns;
  });
}

Status Host::UpdateFilter(const std::string& worker_id, const std::vector<std::string>& allow,
                          const std::vector<std::string>& deny) {
  return ApplyControl(*impl_, worker_id, [&](ControlState& s) {
    s.allow = allow;
    s.deny = deny;
  });
}

Result<ControlState> Host::Control(const std::string& worker_id) const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  if (impl_->seen_ids.find(worker_id) == impl_->seen_ids.end() &&
      !(impl_->hub && impl_->hub->Knows(worker_id))) {
    return NotFound("no worker with id \"" + worker_id + "\" has attached");
  }
  auto it = impl_->controls.find(worker_id);
  return it == impl_->controls.end() ? ControlState() : it->second;
}

std::vector<RingStats> Host::Rings() const {
  std::vector<RingStats> out;
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    out.assign(impl_->history.begin(), impl_->history.end());
    for (const HostRing* r : impl_->ring_list) out.push_back(impl_->StatsOf(r));
  }
  if (impl_->hub) {
    for (RingStats& r : impl_->hub->Rings()) out.push_back(std::move(r));
  }
  return out;
}

std::vector<WorkerInfo> Host::Workers() const {
  std::vector<WorkerInfo> out = ShmWorkers();
  if (impl_->hub) {
    for (WorkerInfo& w : impl_->hub->Workers()) out.push_back(std::move(w));
  }
  return out;
}

std::vector<WorkerInfo> Host::ShmWorkers() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  std::vector<WorkerInfo> out;
  for (const auto& [slot, w] : impl_->workers) {
    WorkerInfo i;
    i.id = w->id;
    i.pid = static_cast<uint32_t>(w->pid);
    i.alive = w->alive && !w->leaving;
    i.rings = static_cast<uint32_t>(w->rings.size());
    auto c = impl_->controls.find(w->id);
    if (c != impl_->controls.end()) i.control = c->second;
    const shm::UnringedCounters& u = shm::WorkerSlotAt(impl_->registry.base(), slot)->unringed;
    i.unringed_emitted = u.emitted.load(std::memory_order_relaxed);
    i.unringed_dropped = u.dropped_no_ring.load(std::memory_order_relaxed);
    i.unringed_suppressed = u.suppressed_disabled.load(std::memory_order_relaxed) +
                            u.suppressed_sampled.load(std::memory_order_relaxed) +
                            u.suppressed_filtered.load(std::memory_order_relaxed);
    out.push_back(std::move(i));
  }
  return out;
}

HostStats Host::Stats() const {
  const Impl& h = *impl_;
  HostStats s;
  s.delivered = h.delivered.load(std::memory_order_relaxed);
  for (uint32_t i = 0; i < shm::kRejectReasonCount; ++i) {
    s.rejected[i] = h.rejected[i].load(std::memory_order_relaxed);
  }
  s.truncated = h.truncated.load(std::memory_order_relaxed);
  s.host_events = h.host_events.load(std::memory_order_relaxed);
  s.handler_errors = h.handler_errors.load(std::memory_order_relaxed);
  s.quarantined_rings = h.quarantined.load(std::memory_order_relaxed);
  for (uint32_t i = 0; i < shm::kQuarantineReasonCount; ++i) {
    s.quarantined_by_reason[i] = h.quarantined_by_reason[i].load(std::memory_order_relaxed);
  }
  s.workers_terminated = h.terminated.load(std::memory_order_relaxed);
  s.polls = h.polls.load(std::memory_order_relaxed);
  s.sleeps = h.sleeps.load(std::memory_order_relaxed);
  return s;
}

const Catalog& Host::catalog() const { return *impl_->catalog; }
const std::string& Host::ns() const { return impl_->opt.ns; }
int Host::grpc_port() const { return impl_->hub ? impl_->hub->port() : 0; }

}  // namespace pitlane
