#include "pitlane/shm_inspect.h"

#include <dirent.h>
#include <signal.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "pitlane/registry.h"
#include "pitlane/shm.h"

namespace pitlane::shm {

namespace {

std::string Bounded(const char* s, size_t max) { return std::string(s, strnlen(s, max)); }

bool AllDigits(const std::string& s) {
  if (s.empty()) return false;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
  }
  return true;
}

// Without a start time to compare, only "does a process with this pid exist".
bool PidRunning(pid_t pid) { return pid > 0 && (::kill(pid, 0) == 0 || errno == EPERM); }

}  // namespace

bool ParseSegmentName(const std::string& file, SegmentEntry* e) {
  static constexpr std::string_view kPrefix = "pitlane.";
  if (file.compare(0, kPrefix.size(), kPrefix) != 0) return false;
  const std::string rest = file.substr(kPrefix.size());
  static constexpr std::string_view kRegistry = ".registry";
  if (rest.size() > kRegistry.size() &&
      rest.compare(rest.size() - kRegistry.size(), kRegistry.size(), kRegistry) == 0) {
    e->ns = rest.substr(0, rest.size() - kRegistry.size());
    e->registry = true;
  } else {
    // A namespace may contain dots: parse from the end.
    const size_t slot_dot = rest.rfind('.');
    if (slot_dot == std::string::npos || slot_dot == 0) return false;
    const size_t pid_dot = rest.rfind('.', slot_dot - 1);
    if (pid_dot == std::string::npos || pid_dot < 5) return false;
    const std::string pid = rest.substr(pid_dot + 1, slot_dot - pid_dot - 1);
    if (!AllDigits(pid) || pid.size() > 9 || !AllDigits(rest.substr(slot_dot + 1))) return false;
    if (rest.compare(pid_dot - 5, 5, ".ring") != 0) return false;
    e->ns = rest.substr(0, pid_dot - 5);
    e->pid = static_cast<pid_t>(std::stol(pid));
  }
  if (!ValidateNamespace(e->ns).ok()) return false;
  e->name = "/" + file;
  return true;
}

std::vector<SegmentEntry> ListSegments(const std::string& ns) {
  std::vector<SegmentEntry> out;
  DIR* d = opendir("/dev/shm");
  if (d == nullptr) return out;
  while (dirent* de = readdir(d)) {
    SegmentEntry e;
    if (!ParseSegmentName(de->d_name, &e)) continue;
    if (!ns.empty() && e.ns != ns) continue;
    struct stat st;
    if (::lstat(("/dev/shm" + e.name).c_str(), &st) == 0) {
      e.bytes = static_cast<uint64_t>(st.st_size);
    }
    out.push_back(std::move(e));
  }
  closedir(d);
  return out;
}

namespace {

// Copies a ring's header and counters out of `seg` (host counters first: accounting.h's read
// order). Fills `r` or its error.
void ReadInspectedRing(const Segment& seg, InspectedRing* r) {
  alignas(64) unsigned char header[sizeof(RingHeader)];
  const auto* h = static_cast<const RingHeader*>(seg.base());
  Tally t;
  const bool ok = Guarded([&] {
    std::memcpy(header, seg.base(), sizeof(header));
    r->consumer = h->consumer.load(std::memory_order_acquire);
    const Tally host_side = ReadHostCounters(h->host);
    r->quarantined = h->host.quarantined.load(std::memory_order_relaxed) != 0;
    r->quarantine_offset = h->host.quarantine_offset.load(std::memory_order_relaxed);
    // Acquire pairs with the writer's release store of `producer`.
    r->producer = h->producer.load(std::memory_order_acquire);
    r->writer_retired = h->worker.retired.load(std::memory_order_acquire) != 0;
    t = ReadRing(h->worker, host_side);
  });
  if (!ok) {
    r->error = "segment " + r->segment + " was truncated while being read (SIGBUS)";
    return;
  }
  const auto& copy = *reinterpret_cast<const RingHeader*>(header);
  if (Status s = ValidateRingHeader(copy, seg.size(), r->segment); !s.ok()) {
    r->error = s.ToString();
    return;
  }
  static_cast<Tally&>(*r) = t;
  r->worker_id = Bounded(copy.worker_id, kWorkerIdBytes);
  r->pid = copy.pid;
  r->start_time = copy.start_time;
  r->capacity = copy.data_bytes;
  r->alive = ProcessAlive(static_cast<pid_t>(r->pid), r->start_time);
}

// Copies the registry's slots out of `seg` under the guard into plain memory allocated before
// it (a SIGBUS must not leave an object half-built), then turns them into rows. Returns an
// error message, or "".
std::string CopyRegistry(const Segment& seg, const std::string& name,
                         InspectedRegistry* into) {
  InspectedRegistry& out = *into;
  void* base = seg.base();
  const auto* h = static_cast<const RegistryHeader*>(base);
  struct RawWorker {
    uint32_t state, pid;
    uint64_t start_time;
    char id[kWorkerIdBytes];
    Tally unringed;
  };
  struct RawRing {
    uint32_t state;
    char name[kSegmentNameBytes];
  };
  std::vector<RawWorker> raw_workers(kMaxWorkers);
  std::vector<RawRing> raw_rings(kMaxRings);
  uint64_t magic = 0;
  uint32_t version = 0;
  const bool ok = Guarded([&] {
    magic = h->magic;
    version = h->layout_version;
    if (magic != kRegistryMagic || version != kLayoutVersion) return;
    out.host_pid = h->host_pid.load(std::memory_order_acquire);
    out.host_start_time = h->host_start_time.load(std::memory_order_relaxed);
    for (uint32_t i = 0; i < kMaxWorkers; ++i) {
      const WorkerSlot* s = WorkerSlotAt(base, i);
      RawWorker& w = raw_workers[i];
      // Acquire pairs with the worker's release store of its slot state.
      w.state = s->state.load(std::memory_order_acquire);
      if (w.state == kSlotFree) continue;
      w.pid = s->pid;
      w.start_time = s->start_time;
      std::memcpy(w.id, s->worker_id, sizeof(w.id));
      w.unringed = ReadUnringed(s->unringed);
    }
    for (uint32_t i = 0; i < kMaxRings; ++i) {
      const RingSlot* s = RingSlotAt(base, i);
      raw_rings[i].state = s->state.load(std::memory_order_acquire);
      std::memcpy(raw_rings[i].name, s->segment_name, sizeof(raw_rings[i].name));
    }
  });
  if (!ok) {
    return "segment " + name + " was truncated while being read (SIGBUS)";
  }
  if (magic != kRegistryMagic) {
    return "segment " + name + " is not a pitlane registry (bad magic; maybe still being created)";
  }
  if (version != kLayoutVersion) {
    return "segment " + name + " has layout version " + std::to_string(version) +
           ", this build reads version " + std::to_string(kLayoutVersion);
  }
  for (uint32_t i = 0; i < kMaxWorkers; ++i) {
    const RawWorker& w = raw_workers[i];
    if (w.state == kSlotFree) continue;
    out.workers.push_back({i, w.state, Bounded(w.id, kWorkerIdBytes), w.pid, w.start_time,
                           false, w.unringed});
  }
  for (uint32_t i = 0; i < kMaxRings; ++i) {
    const RawRing& r = raw_rings[i];
    if (r.state != kSlotReady && r.state != kSlotRetired) continue;
    out.rings.emplace_back();
    out.rings.back().slot = i;
    out.rings.back().registry_retired = r.state == kSlotRetired;
    out.rings.back().segment = Bounded(r.name, kSegmentNameBytes);
  }
  return {};
}

}  // namespace

InspectedRegistry InspectRegistry(const std::string& ns, bool read_rings) {
  InspectedRegistry out;
  const std::string name = RegistryName(ns);
  Result<Segment> seg = Segment::Open(name, 0, /*writable=*/false);
  if (!seg.ok()) {
    out.error = seg.status().code() == StatusCode::kNotFound
                    ? "no pitlane namespace \"" + ns + "\": segment " + name + " does not exist"
                    : seg.status().ToString();
    return out;
  }
  if (seg->size() < kRegistryBytes) {
    out.error = "segment " + name + " is " + std::to_string(seg->size()) +
                " bytes, smaller than a registry (" + std::to_string(kRegistryBytes) +
                "): not a pitlane registry, or still being created";
    return out;
  }
  out.error = CopyRegistry(*seg, name, &out);
  if (!out.error.empty()) {
    out.workers.clear();
    out.rings.clear();
    return out;
  }
  // A host is running while it holds the registry's lock (registry.h); the pid word in the
  // header is whatever the last writer put there.
  Result<pid_t> holder = NamespaceHostPid(ns);
  out.host_alive = holder.ok() && *holder != 0;
  if (holder.ok() && *holder > 0) out.host_pid = static_cast<uint32_t>(*holder);
  for (InspectedWorker& w : out.workers) {
    w.alive = ProcessAlive(static_cast<pid_t>(w.pid), w.start_time);
  }
  if (!read_rings) return out;
  const std::string prefix = "/" + SegmentPrefix(ns) + "ring.";
  for (InspectedRing& r : out.rings) {
    if (r.segment.compare(0, prefix.size(), prefix) != 0) {
      r.error = "registry names segment \"" + r.segment + "\", outside this namespace";
      continue;
    }
    Result<Segment> rs = Segment::Open(r.segment, kRingHeaderBytes, /*writable=*/false);
    if (!rs.ok()) {
      r.error = rs.status().ToString();
      continue;
    }
    ReadInspectedRing(*rs, &r);
  }
  return out;
}

Staleness RegistryStaleness(const InspectedRegistry& r) {
  Staleness v;
  if (!r.error.empty()) {
    v.why = r.error + "; left alone";
    return v;
  }
  if (r.host_alive) {
    v.why = "host pid " + std::to_string(r.host_pid) + " is running";
    return v;
  }
  uint32_t live = 0, first_live = 0;
  for (const InspectedWorker& w : r.workers) {
    if (w.alive && live++ == 0) first_live = w.pid;
  }
  if (live != 0) {
    v.why = std::to_string(live) + " live worker" + (live == 1 ? "" : "s") + " (pid " +
            std::to_string(first_live) + (live == 1 ? "" : ", ...") +
            ") registered; a new host adopts it";
    return v;
  }
  v.stale = true;
  v.why = (r.host_pid == 0 ? std::string("no host attached")
                           : "host pid " + std::to_string(r.host_pid) + " is dead") +
          " and no live worker is registered (" + std::to_string(r.workers.size()) + " dead)";
  return v;
}

Staleness RingStaleness(const SegmentEntry& e) {
  Staleness v;
  InspectedRing r;
  r.segment = e.name;
  Result<Segment> seg = Segment::Open(e.name, kRingHeaderBytes, /*writable=*/false);
  if (seg.ok()) {
    ReadInspectedRing(*seg, &r);
  } else if (seg.status().code() == StatusCode::kPermissionDenied ||
             seg.status().code() == StatusCode::kFailedPrecondition) {
    // Not a file pitlane would adopt (another owner, another mode, a FIFO...): whoever made it
    // removes it.
    v.why = seg.status().message() + "; left alone";
    return v;
  } else {
    r.error = seg.status().ToString();
  }
  if (r.error.empty()) {
    const std::string who = "worker \"" + r.worker_id + "\" pid " + std::to_string(r.pid);
    if (r.alive) {
      v.why = who + " is running";
      return v;
    }
    v.stale = true;
    v.why = who + " is dead";
    const uint64_t unread = r.producer - r.consumer;
    if (unread != 0 && unread <= r.capacity) {
      v.why += " (" + std::to_string(unread) + " bytes of records never read)";
    }
    return v;
  }
  // No usable header: fall back to the pid in the name, without the pid-reuse guard.
  const std::string problem = "header unusable (" + r.error + ") and pid " +
                              std::to_string(e.pid) + " from its name is ";
  if (PidRunning(e.pid)) {
    v.why = problem + "running";
    return v;
  }
  v.stale = true;
  v.why = problem + "not running";
  return v;
}

}  // namespace pitlane::shm

namespace pitlane::shm {
namespace {

struct Verdict : Staleness {
  std::vector<std::string> hosted_rings;  // a registry with a live host: the rings it owns
};

Verdict Judge(const SegmentEntry& e) {
  Verdict v;
  if (!e.registry) {
    static_cast<Staleness&>(v) = RingStaleness(e);
    return v;
  }
  const InspectedRegistry r = InspectRegistry(e.ns, /*read_rings=*/false);
  static_cast<Staleness&>(v) = RegistryStaleness(r);
  if (r.error.empty() && r.host_alive) {
    for (const InspectedRing& ring : r.rings) v.hosted_rings.push_back(ring.segment);
  }
  return v;
}

// Unlinks the stale `e` of `step` unless a fresh judgement keeps it.
void RemoveIfStillStale(const SegmentEntry& e, CleanupStep* step) {
  const Verdict again = Judge(e);
  if (!again.stale) {
    step->outcome = CleanupOutcome::kChanged;
    step->why = again.why;
    return;
  }
  if (Segment::Unlink(e.name)) {
    step->outcome = CleanupOutcome::kRemoved;
    return;
  }
  if (errno == ENOENT) {
    step->outcome = CleanupOutcome::kGone;
    return;
  }
  step->outcome = CleanupOutcome::kFailed;
  step->why = std::strerror(errno);
}

}  // namespace

std::vector<CleanupStep> CleanStaleSegments(const std::string& ns, bool dry_run) {
  const std::vector<SegmentEntry> entries = ListSegments(ns);
  std::vector<std::pair<const SegmentEntry*, Verdict>> verdicts;
  std::vector<std::string> hosted_rings;
  for (const SegmentEntry& e : entries) {
    if (!e.registry) continue;
    Verdict v = Judge(e);
    hosted_rings.insert(hosted_rings.end(), v.hosted_rings.begin(), v.hosted_rings.end());
    verdicts.emplace_back(&e, std::move(v));
  }
  for (const SegmentEntry& e : entries) {
    if (e.registry) continue;
    Verdict v = Judge(e);
    const bool hosted =
        std::find(hosted_rings.begin(), hosted_rings.end(), e.name) != hosted_rings.end();
    if (v.stale && hosted) {
      v.stale = false;
      v.why += "; registered with a live host, which drains and unlinks it";
    }
    verdicts.emplace_back(&e, std::move(v));
  }
  std::vector<CleanupStep> steps;
  for (const auto& [e, v] : verdicts) {
    CleanupStep& step = steps.emplace_back();
    step.name = e->name;
    step.bytes = e->bytes;
    step.why = v.why;
    if (!v.stale) continue;  // kKept
    if (dry_run) {
      step.outcome = CleanupOutcome::kWouldRemove;
      continue;
    }
    RemoveIfStillStale(*e, &step);
  }
  return steps;
}

}  // namespace pitlane::shm
