// `pitlane cleanup`: removes the shared-memory segments dead processes left behind.
//
// A segment is removed only when every process that could still use it is gone:
//  - a ring segment (/pitlane.<ns>.ring.<pid>.<slot>) when its creator is dead: the pid and
//    start time of its header (shm::ProcessAlive, robust against pid reuse), or — header
//    unreadable or invalid — the pid in its name is not running at all. A ring a live host has
//    registered is left to that host, which drains what is left and unlinks it itself.
//  - a registry (/pitlane.<ns>.registry) when its host is dead (or none ever attached) and no
//    worker slot belongs to a live process. A registry that is not readable as one (bad magic,
//    too small, another layout version) is only reported: it may be being created right now, or
//    belong to a live process of another build.
// Every decision is re-checked right before the unlink. --dry-run only says what would go.
#include <dirent.h>
#include <signal.h>
#include <sys/stat.h>

#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "commands.h"
#include "pitlane/shm.h"
#include "pitlane/shm_layout.h"

namespace pitlane::cli {
namespace {

std::string Bounded(const char* s, size_t max) { return std::string(s, strnlen(s, max)); }

bool PidRunning(pid_t pid) { return pid > 0 && (::kill(pid, 0) == 0 || errno == EPERM); }

// A segment in /dev/shm that belongs to pitlane, split into its parts.
struct Entry {
  std::string name;  // "/pitlane.<ns>...."
  std::string ns;
  bool registry = false;
  pid_t pid = 0;  // ring: from the name
  uint64_t bytes = 0;
};

bool AllDigits(const std::string& s) {
  if (s.empty()) return false;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
  }
  return true;
}

// Parses "pitlane.<ns>.registry" and "pitlane.<ns>.ring.<pid>.<slot>" (a namespace may contain
// dots, so parse from the end).
bool Parse(const std::string& file, Entry* e) {
  static constexpr std::string_view kPrefix = "pitlane.";
  if (file.compare(0, kPrefix.size(), kPrefix) != 0) return false;
  const std::string rest = file.substr(kPrefix.size());
  static constexpr std::string_view kRegistry = ".registry";
  if (rest.size() > kRegistry.size() &&
      rest.compare(rest.size() - kRegistry.size(), kRegistry.size(), kRegistry) == 0) {
    e->ns = rest.substr(0, rest.size() - kRegistry.size());
    e->registry = true;
  } else {
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
  if (!shm::ValidateNamespace(e->ns).ok()) return false;
  e->name = "/" + file;
  return true;
}

std::vector<Entry> List(const std::string& only_ns) {
  std::vector<Entry> out;
  DIR* d = opendir("/dev/shm");
  if (d == nullptr) return out;
  while (dirent* de = readdir(d)) {
    Entry e;
    if (!Parse(de->d_name, &e)) continue;
    if (!only_ns.empty() && e.ns != only_ns) continue;
    struct stat st;
    if (::stat(("/dev/shm" + e.name).c_str(), &st) == 0)
      e.bytes = static_cast<uint64_t>(st.st_size);
    out.push_back(std::move(e));
  }
  closedir(d);
  return out;
}

// ── registries ───────────────────────────────────────────────────────────────────────────────

struct RegistryView {
  const shm::Segment* seg = nullptr;
  uint64_t magic = 0;
  uint32_t version = 0;
  uint32_t host_pid = 0;
  uint64_t host_start_time = 0;
  std::vector<std::pair<uint32_t, uint64_t>> worker_procs;  // pid, start time of used slots
  std::vector<std::string> ring_segments;                   // READY or RETIRED ring slots
};

void CopyRegistry(void* arg) {
  auto* v = static_cast<RegistryView*>(arg);
  void* base = v->seg->base();
  const auto* h = static_cast<const shm::RegistryHeader*>(base);
  v->magic = h->magic;
  v->version = h->layout_version;
  if (v->magic != shm::kRegistryMagic || v->version != shm::kLayoutVersion) return;
  v->host_pid = h->host_pid.load(std::memory_order_acquire);
  v->host_start_time = h->host_start_time.load(std::memory_order_relaxed);
  for (uint32_t i = 0; i < shm::kMaxWorkers; ++i) {
    const shm::WorkerSlot* s = shm::WorkerSlotAt(base, i);
    if (s->state.load(std::memory_order_acquire) == shm::kSlotFree) continue;
    v->worker_procs.emplace_back(s->pid, s->start_time);
  }
  for (uint32_t i = 0; i < shm::kMaxRings; ++i) {
    const shm::RingSlot* s = shm::RingSlotAt(base, i);
    const uint32_t state = s->state.load(std::memory_order_acquire);
    if (state != shm::kSlotReady && state != shm::kSlotRetired) continue;
    v->ring_segments.push_back(Bounded(s->segment_name, shm::kSegmentNameBytes));
  }
}

struct Verdict {
  bool stale = false;
  std::string why;
  bool host_alive = false;              // registries: a live host owns the namespace
  std::vector<std::string> ring_names;  // registries: rings it has registered
};

Verdict JudgeRegistry(const std::string& name) {
  Verdict v;
  auto seg = shm::Segment::Open(name, 0, /*writable=*/false);
  if (!seg.ok()) {
    v.why = "cannot be read: " + seg.status().ToString();
    return v;
  }
  if (seg->size() < shm::kRegistryBytes) {
    v.why = "is " + std::to_string(seg->size()) +
            " bytes, smaller than a registry: still being created, or not pitlane's; remove it "
            "by hand (rm /dev/shm" +
            name + ") if no process uses it";
    return v;
  }
  RegistryView r{&seg.value()};
  if (!shm::RunGuarded(CopyRegistry, &r)) {
    v.why = "was truncated while being read (SIGBUS)";
    return v;
  }
  if (r.magic != shm::kRegistryMagic) {
    v.why = "is not a pitlane registry (bad magic; maybe still being created)";
    return v;
  }
  if (r.version != shm::kLayoutVersion) {
    v.why = "has layout version " + std::to_string(r.version) + " (this build reads " +
            std::to_string(shm::kLayoutVersion) + "): left to the build that made it";
    return v;
  }
  v.ring_names = std::move(r.ring_segments);
  if (r.host_pid != 0 && shm::ProcessAlive(static_cast<pid_t>(r.host_pid), r.host_start_time)) {
    v.host_alive = true;
    v.why = "host pid " + std::to_string(r.host_pid) + " is running";
    return v;
  }
  uint32_t live = 0;
  uint32_t first_live = 0;
  for (const auto& [pid, start] : r.worker_procs) {
    if (shm::ProcessAlive(static_cast<pid_t>(pid), start)) {
      if (live++ == 0) first_live = pid;
    }
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
          " and no live worker is registered (" + std::to_string(r.worker_procs.size()) + " dead)";
  return v;
}

// ── rings ────────────────────────────────────────────────────────────────────────────────────

struct RingView {
  const shm::Segment* seg = nullptr;
  alignas(64) unsigned char header[sizeof(shm::RingHeader)];
  uint64_t producer = 0, consumer = 0;
};

void CopyRingHeader(void* arg) {
  auto* v = static_cast<RingView*>(arg);
  std::memcpy(v->header, v->seg->base(), sizeof(v->header));
  const auto* h = static_cast<const shm::RingHeader*>(v->seg->base());
  v->consumer = h->consumer.load(std::memory_order_acquire);
  v->producer = h->producer.load(std::memory_order_acquire);
}

Verdict JudgeRing(const Entry& e) {
  Verdict v;
  std::string header_problem;
  auto seg = shm::Segment::Open(e.name, shm::kRingHeaderBytes, /*writable=*/false);
  if (seg.ok()) {
    RingView r{&seg.value(), {}};
    if (shm::RunGuarded(CopyRingHeader, &r)) {
      const auto& h = *reinterpret_cast<const shm::RingHeader*>(r.header);
      Status s = shm::ValidateRingHeader(h, seg->size(), e.name);
      if (s.ok()) {
        const std::string who = "worker \"" + Bounded(h.worker_id, shm::kWorkerIdBytes) +
                                "\" pid " + std::to_string(h.pid);
        if (shm::ProcessAlive(static_cast<pid_t>(h.pid), h.start_time)) {
          v.why = who + " is running";
          return v;
        }
        v.stale = true;
        v.why = who + " is dead";
        const uint64_t unread = r.producer - r.consumer;
        if (unread != 0 && unread <= h.data_bytes) {
          v.why += " (" + std::to_string(unread) + " bytes of records never read)";
        }
        return v;
      }
      header_problem = s.ToString();
    } else {
      header_problem = "truncated while being read (SIGBUS)";
    }
  } else {
    header_problem = seg.status().ToString();
  }
  // No usable header: fall back to the pid in the name, without the pid-reuse guard.
  if (PidRunning(e.pid)) {
    v.why = "header unusable (" + header_problem + ") and pid " + std::to_string(e.pid) +
            " from its name is running";
    return v;
  }
  v.stale = true;
  v.why = "header unusable (" + header_problem + ") and pid " + std::to_string(e.pid) +
          " from its name is not running";
  return v;
}

}  // namespace

int RunCleanup(const CleanupOptions& o) {
  std::string only_ns;
  if (!o.all) {
    auto ns_or = ResolveNamespace(o.ns);
    if (!ns_or.ok()) {
      Error("cleanup", ns_or.status().message());
      return 2;
    }
    only_ns = ns_or.value();
  }
  const std::vector<Entry> entries = List(only_ns);
  const std::string scope_text = o.all ? "all namespaces" : "namespace \"" + only_ns + "\"";
  if (entries.empty()) {
    std::printf("no pitlane segments in /dev/shm for %s\n", scope_text.c_str());
    return 0;
  }

  // Registries first: a ring a live host has registered is that host's to reclaim.
  std::vector<std::string> hosted_rings;
  std::vector<std::pair<const Entry*, Verdict>> verdicts;
  for (const Entry& e : entries) {
    if (!e.registry) continue;
    Verdict v = JudgeRegistry(e.name);
    if (v.host_alive) {
      hosted_rings.insert(hosted_rings.end(), v.ring_names.begin(), v.ring_names.end());
    }
    verdicts.emplace_back(&e, std::move(v));
  }
  for (const Entry& e : entries) {
    if (e.registry) continue;
    bool hosted = false;
    for (const std::string& n : hosted_rings) hosted |= n == e.name;
    Verdict v = JudgeRing(e);
    if (v.stale && hosted) {
      v.stale = false;
      v.why += "; registered with a live host, which drains and unlinks it";
    }
    verdicts.emplace_back(&e, std::move(v));
  }

  int removed = 0, kept = 0, failed = 0;
  uint64_t removed_bytes = 0;
  for (auto& [e, v] : verdicts) {
    if (!v.stale) {
      ++kept;
      std::printf("kept %s: %s\n", e->name.c_str(), v.why.c_str());
      continue;
    }
    if (o.dry_run) {
      ++removed;
      removed_bytes += e->bytes;
      std::printf("would remove %s: %s\n", e->name.c_str(), v.why.c_str());
      continue;
    }
    // Re-check right before the unlink: a host or worker may have appeared meanwhile.
    const Verdict again = e->registry ? JudgeRegistry(e->name) : JudgeRing(*e);
    if (!again.stale) {
      ++kept;
      std::printf("kept %s: %s (changed while cleaning)\n", e->name.c_str(), again.why.c_str());
      continue;
    }
    if (!shm::Segment::Unlink(e->name)) {
      if (errno == ENOENT) {
        std::printf("gone %s: removed by someone else meanwhile\n", e->name.c_str());
        continue;
      }
      ++failed;
      Error("cleanup", "could not remove " + e->name + ": " + std::strerror(errno));
      continue;
    }
    ++removed;
    removed_bytes += e->bytes;
    std::printf("removed %s: %s\n", e->name.c_str(), v.why.c_str());
  }
  std::printf("%s %d stale segment%s (%" PRIu64 " KiB), kept %d, in %s\n",
              o.dry_run ? "would remove" : "removed", removed, removed == 1 ? "" : "s",
              removed_bytes >> 10, kept, scope_text.c_str());
  return failed == 0 ? 0 : 1;
}

}  // namespace pitlane::cli
