// `pitlane stat`: a read-only view of a namespace's rings from outside the host process.
//
// It maps the registry and every registered ring segment read-only and reads the counters both
// sides keep in shared memory (shm_layout.h), so it works while the host is down too. Nothing
// in the mappings is trusted: every read runs under shm::RunGuarded (a worker may truncate its
// segment), strings are bounded copies, and each ring header is checked with
// shm::ValidateRingHeader before its counters are shown.
//
// Counter read order: host counters first, then the worker's outcome counters, then `emitted`
// last. The writers bump `emitted` before an outcome and `published` before the host can count
// the record delivered, so this order never shows more outcomes than events (in-flight events
// appear as a positive difference, never a negative one).
//
// --watch re-reads everything every --interval seconds until SIGINT/SIGTERM and adds per-ring
// rates (events/s emitted, delivered, dropped) computed from the previous refresh; a ring is
// matched across refreshes by segment name, pid and process start time.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "commands.h"
#include "pitlane/shm.h"
#include "pitlane/shm_layout.h"

namespace pitlane::cli {
namespace {

std::string Bounded(const char* s, size_t max) { return std::string(s, strnlen(s, max)); }

struct WorkerRow {
  uint32_t slot = 0;
  std::string id;
  uint32_t pid = 0;
  uint64_t start_time = 0;
  bool alive = false;
  uint64_t unringed_emitted = 0, unringed_dropped = 0, unringed_suppressed[3] = {};
};

struct RingRow {
  std::string segment;
  uint32_t slot = 0;
  bool registry_retired = false;
  std::string error;  // could not open / invalid header
  std::string worker_id;
  uint32_t pid = 0;
  uint64_t start_time = 0;
  bool alive = false;
  uint64_t capacity = 0, producer = 0, consumer = 0;
  bool writer_retired = false;
  uint64_t emitted = 0, published = 0, dropped_full = 0, dropped_too_large = 0;
  uint64_t suppressed_disabled = 0, suppressed_sampled = 0, suppressed_filtered = 0;
  uint64_t delivered = 0, truncated = 0, rejected[shm::kRejectReasonCount] = {};
  uint64_t quarantined = 0, quarantine_offset = 0;

  uint64_t suppressed() const {
    return suppressed_disabled + suppressed_sampled + suppressed_filtered;
  }
  uint64_t dropped() const { return dropped_full + dropped_too_large; }
  uint64_t rejected_total() const {
    uint64_t n = 0;
    for (uint64_t r : rejected) n += r;
    return n;
  }
  uint64_t used() const { return std::min(producer - consumer, capacity); }
  double fill() const { return capacity ? 100.0 * static_cast<double>(used()) / capacity : 0; }
  // emitted − (suppressed + dropped + published): events being emitted right now (0 at rest).
  int64_t emitting() const {
    return static_cast<int64_t>(emitted - suppressed() - dropped() - published);
  }
  // published − (delivered + rejected): records the host has not read yet.
  int64_t unread() const { return static_cast<int64_t>(published - delivered - rejected_total()); }
  bool conserved() const { return error.empty() && emitting() >= 0 && unread() >= 0; }
  bool settled() const { return emitting() == 0 && unread() == 0; }
};

struct RegistryCopy {
  const shm::Segment* seg = nullptr;
  uint64_t magic = 0;
  uint32_t version = 0;
  uint32_t host_pid = 0;
  uint64_t host_start_time = 0;
  std::vector<WorkerRow> workers;
  std::vector<RingRow> rings;
};

void CopyRegistry(void* arg) {
  auto* c = static_cast<RegistryCopy*>(arg);
  void* base = c->seg->base();
  const auto* h = static_cast<const shm::RegistryHeader*>(base);
  c->magic = h->magic;
  c->version = h->layout_version;
  if (c->magic != shm::kRegistryMagic || c->version != shm::kLayoutVersion) return;
  c->host_pid = h->host_pid.load(std::memory_order_acquire);
  c->host_start_time = h->host_start_time.load(std::memory_order_relaxed);
  for (uint32_t i = 0; i < shm::kMaxWorkers; ++i) {
    const shm::WorkerSlot* s = shm::WorkerSlotAt(base, i);
    if (s->state.load(std::memory_order_acquire) != shm::kSlotReady) continue;
    WorkerRow w;
    w.slot = i;
    w.pid = s->pid;
    w.start_time = s->start_time;
    w.id = Bounded(s->worker_id, shm::kWorkerIdBytes);
    w.unringed_emitted = s->unringed.emitted.load(std::memory_order_relaxed);
    w.unringed_dropped = s->unringed.dropped_no_ring.load(std::memory_order_relaxed);
    w.unringed_suppressed[0] = s->unringed.suppressed_disabled.load(std::memory_order_relaxed);
    w.unringed_suppressed[1] = s->unringed.suppressed_sampled.load(std::memory_order_relaxed);
    w.unringed_suppressed[2] = s->unringed.suppressed_filtered.load(std::memory_order_relaxed);
    c->workers.push_back(std::move(w));
  }
  for (uint32_t i = 0; i < shm::kMaxRings; ++i) {
    const shm::RingSlot* s = shm::RingSlotAt(base, i);
    const uint32_t state = s->state.load(std::memory_order_acquire);
    if (state != shm::kSlotReady && state != shm::kSlotRetired) continue;
    RingRow r;
    r.slot = i;
    r.registry_retired = state == shm::kSlotRetired;
    r.segment = Bounded(s->segment_name, shm::kSegmentNameBytes);
    c->rings.push_back(std::move(r));
  }
}

struct RingCopy {
  const shm::Segment* seg = nullptr;
  alignas(64) unsigned char header[sizeof(shm::RingHeader)];
  RingRow* row;
};

void CopyRing(void* arg) {
  auto* c = static_cast<RingCopy*>(arg);
  std::memcpy(c->header, c->seg->base(), sizeof(c->header));
  const auto* h = static_cast<const shm::RingHeader*>(c->seg->base());
  RingRow& r = *c->row;
  // Host counters, then worker outcomes, then emitted (see the file comment).
  r.consumer = h->consumer.load(std::memory_order_acquire);
  r.delivered = h->host.delivered.load(std::memory_order_relaxed);
  r.truncated = h->host.truncated.load(std::memory_order_relaxed);
  for (uint32_t i = 0; i < shm::kRejectReasonCount; ++i) {
    r.rejected[i] = h->host.rejected[i].load(std::memory_order_relaxed);
  }
  r.quarantined = h->host.quarantined.load(std::memory_order_relaxed);
  r.quarantine_offset = h->host.quarantine_offset.load(std::memory_order_relaxed);
  // Acquire pairs with the writer's release store of `producer` (its counters are visible).
  r.producer = h->producer.load(std::memory_order_acquire);
  r.published = h->worker.published.load(std::memory_order_relaxed);
  r.dropped_full = h->worker.dropped_full.load(std::memory_order_relaxed);
  r.dropped_too_large = h->worker.dropped_too_large.load(std::memory_order_relaxed);
  r.suppressed_disabled = h->worker.suppressed_disabled.load(std::memory_order_relaxed);
  r.suppressed_sampled = h->worker.suppressed_sampled.load(std::memory_order_relaxed);
  r.suppressed_filtered = h->worker.suppressed_filtered.load(std::memory_order_relaxed);
  r.writer_retired = h->worker.retired.load(std::memory_order_acquire) != 0;
  std::atomic_thread_fence(std::memory_order_acquire);
  r.emitted = h->worker.emitted.load(std::memory_order_relaxed);
}

void ReadRing(const std::string& ns, RingRow& r) {
  const std::string prefix = "/" + shm::SegmentPrefix(ns) + "ring.";
  if (r.segment.compare(0, prefix.size(), prefix) != 0) {
    r.error = "registry names segment \"" + r.segment + "\", outside this namespace";
    return;
  }
  auto seg = shm::Segment::Open(r.segment, shm::kRingHeaderBytes, /*writable=*/false);
  if (!seg.ok()) {
    r.error = seg.status().ToString();
    return;
  }
  RingCopy c{&seg.value(), {}, &r};
  if (!shm::RunGuarded(CopyRing, &c)) {
    r.error = "segment " + r.segment + " was truncated while being read (SIGBUS)";
    return;
  }
  const auto& h = *reinterpret_cast<const shm::RingHeader*>(c.header);
  Status s = shm::ValidateRingHeader(h, seg->size(), r.segment);
  if (!s.ok()) {
    r.error = s.ToString();
    return;
  }
  r.worker_id = Bounded(h.worker_id, shm::kWorkerIdBytes);
  r.pid = h.pid;
  r.start_time = h.start_time;
  r.capacity = h.data_bytes;
  r.alive = shm::ProcessAlive(static_cast<pid_t>(r.pid), r.start_time);
}

// Per-ring rates since the previous refresh of --watch (parallel to RegistryCopy::rings).
struct Rate {
  bool known = false;  // false: first sight of this ring (or it was unreadable)
  double emitted = 0, delivered = 0, dropped = 0;  // per second
};

using json = nlohmann::ordered_json;

json JsonDoc(const std::string& ns, const RegistryCopy& reg, bool host_alive,
             const std::vector<Rate>* rates) {
  json doc;
  doc["namespace"] = ns;
  doc["registry"] = shm::RegistryName(ns);
  doc["host"] = {{"pid", reg.host_pid}, {"alive", host_alive}};
  json workers = json::array();
  for (const WorkerRow& w : reg.workers) {
    workers.push_back({{"worker_id", w.id},
                       {"pid", w.pid},
                       {"alive", w.alive},
                       {"unringed",
                        {{"emitted", w.unringed_emitted},
                         {"dropped_no_ring", w.unringed_dropped},
                         {"suppressed_disabled", w.unringed_suppressed[0]},
                         {"suppressed_sampled", w.unringed_suppressed[1]},
                         {"suppressed_filtered", w.unringed_suppressed[2]}}}});
  }
  doc["workers"] = workers;
  json rings = json::array();
  for (size_t ri = 0; ri < reg.rings.size(); ++ri) {
    const RingRow& r = reg.rings[ri];
    json j;
    j["segment"] = r.segment;
    j["ring_slot"] = r.slot;
    if (!r.error.empty()) {
      j["error"] = r.error;
      rings.push_back(j);
      continue;
    }
    json rejected = json::object();
    for (uint32_t i = 0; i < shm::kRejectReasonCount; ++i) {
      rejected[shm::RejectReasonName(i)] = r.rejected[i];
    }
    j["worker_id"] = r.worker_id;
    j["pid"] = r.pid;
    j["alive"] = r.alive;
    j["retired"] = r.writer_retired || r.registry_retired;
    j["capacity"] = r.capacity;
    j["used_bytes"] = r.used();
    j["fill_percent"] = r.fill();
    j["emitted"] = r.emitted;
    j["published"] = r.published;
    j["delivered"] = r.delivered;
    j["truncated"] = r.truncated;
    j["dropped"] = {{"full", r.dropped_full}, {"too_large", r.dropped_too_large}};
    j["suppressed"] = {{"disabled", r.suppressed_disabled},
                       {"sampled", r.suppressed_sampled},
                       {"filtered", r.suppressed_filtered}};
    j["rejected"] = rejected;
    j["quarantined"] = r.quarantined != 0;
    if (r.quarantined) j["quarantine_offset"] = r.quarantine_offset;
    j["unread"] = r.unread();
    j["conserved"] = r.conserved();
    j["settled"] = r.settled();
    if (rates != nullptr) {
      const Rate& rt = (*rates)[ri];
      if (rt.known) {
        j["rates"] = {{"emitted_per_s", rt.emitted},
                      {"delivered_per_s", rt.delivered},
                      {"dropped_per_s", rt.dropped}};
      } else {
        j["rates"] = nullptr;  // first refresh that saw this ring
      }
    }
    rings.push_back(j);
  }
  doc["rings"] = rings;
  return doc;
}

void PrintText(const std::string& ns, const RegistryCopy& reg, bool host_alive,
               const std::vector<Rate>* rates) {
  std::printf(
      "namespace \"%s\" (%s): host %s, %zu workers, %zu rings\n", ns.c_str(),
      shm::RegistryName(ns).c_str(),
      reg.host_pid == 0
          ? "not attached"
          : ("pid " + std::to_string(reg.host_pid) + (host_alive ? " running" : " DOWN")).c_str(),
      reg.workers.size(), reg.rings.size());
  for (const WorkerRow& w : reg.workers) {
    std::printf("worker %-20s pid %-8u %s", w.id.c_str(), w.pid, w.alive ? "alive" : "DEAD");
    if (w.unringed_emitted != 0) {
      std::printf("  ringless threads: emitted %" PRIu64 ", dropped no_ring %" PRIu64
                  ", suppressed %" PRIu64 "/%" PRIu64 "/%" PRIu64,
                  w.unringed_emitted, w.unringed_dropped, w.unringed_suppressed[0],
                  w.unringed_suppressed[1], w.unringed_suppressed[2]);
    }
    std::printf("\n");
  }
  for (size_t ri = 0; ri < reg.rings.size(); ++ri) {
    const RingRow& r = reg.rings[ri];
    std::printf("\n%s (slot %u)\n", r.segment.c_str(), r.slot);
    if (!r.error.empty()) {
      std::printf("  unreadable: %s\n", r.error.c_str());
      continue;
    }
    std::string rej;
    for (uint32_t i = 0; i < shm::kRejectReasonCount; ++i) {
      if (r.rejected[i] == 0) continue;
      if (!rej.empty()) rej += ", ";
      rej += std::string(shm::RejectReasonName(i)) + " " + std::to_string(r.rejected[i]);
    }
    std::printf("  worker %s  pid %u %s%s  capacity %" PRIu64 " KiB  fill %.1f%%%s\n",
                r.worker_id.c_str(), r.pid, r.alive ? "alive" : "DEAD",
                (r.writer_retired || r.registry_retired) ? " (retired)" : "", r.capacity >> 10,
                r.fill(), r.quarantined ? "  QUARANTINED" : "");
    if (r.quarantined) {
      std::printf("  quarantined at data offset %" PRIu64 "\n", r.quarantine_offset);
    }
    std::printf(
        "  emitted %" PRIu64 " = suppressed %" PRIu64 " (disabled %" PRIu64 ", sampled %" PRIu64
        ", filtered %" PRIu64 ") + dropped %" PRIu64 " (full %" PRIu64 ", too_large %" PRIu64
        ") + published %" PRIu64 "%s\n",
        r.emitted, r.suppressed(), r.suppressed_disabled, r.suppressed_sampled,
        r.suppressed_filtered, r.dropped(), r.dropped_full, r.dropped_too_large, r.published,
        r.emitting() == 0 ? ""
                          : ("  [" + std::to_string(r.emitting()) + " being emitted]").c_str());
    std::printf("  published %" PRIu64 " = delivered %" PRIu64 " + rejected %" PRIu64 "%s%s%s\n",
                r.published, r.delivered, r.rejected_total(),
                rej.empty() ? "" : (" (" + rej + ")").c_str(),
                r.unread() == 0 ? "" : (" + unread " + std::to_string(r.unread())).c_str(),
                r.truncated ? ("; truncated " + std::to_string(r.truncated)).c_str() : "");
    std::printf("  conservation: %s\n",
                !r.conserved() ? "VIOLATED"
                : r.settled()  ? "holds"
                               : "holds (records in flight: unread = published - delivered - "
                                 "rejected)");
    if (rates != nullptr) {
      const Rate& rt = (*rates)[ri];
      if (rt.known) {
        std::printf("  rate: emitted %s/s, delivered %s/s, dropped %s/s\n",
                    Compact(static_cast<uint64_t>(rt.emitted + 0.5)).c_str(),
                    Compact(static_cast<uint64_t>(rt.delivered + 0.5)).c_str(),
                    Compact(static_cast<uint64_t>(rt.dropped + 0.5)).c_str());
      } else {
        std::printf("  rate: (new ring, shown from the next refresh)\n");
      }
    }
  }
}

// Reads the registry of `ns` and every ring it names. Returns an error message, or "" when
// `reg` and `host_alive` are filled in.
std::string Read(const std::string& ns, RegistryCopy* reg, bool* host_alive) {
  const std::string name = shm::RegistryName(ns);
  auto seg = shm::Segment::Open(name, 0, /*writable=*/false);
  if (!seg.ok()) {
    if (seg.status().code() == StatusCode::kNotFound) {
      return "no pitlane namespace \"" + ns + "\": segment " + name + " does not exist";
    }
    return seg.status().ToString();
  }
  if (seg->size() < shm::kRegistryBytes) {
    return "segment " + name + " is " + std::to_string(seg->size()) +
           " bytes, smaller than a registry (" + std::to_string(shm::kRegistryBytes) +
           "): not a pitlane registry, or still being created";
  }
  reg->seg = &seg.value();
  if (!shm::RunGuarded(CopyRegistry, reg)) {
    return "segment " + name + " was truncated while being read (SIGBUS)";
  }
  reg->seg = nullptr;
  if (reg->magic != shm::kRegistryMagic) {
    return "segment " + name + " is not a pitlane registry (bad magic; maybe still being created)";
  }
  if (reg->version != shm::kLayoutVersion) {
    return "segment " + name + " has layout version " + std::to_string(reg->version) +
           ", this build reads version " + std::to_string(shm::kLayoutVersion);
  }
  *host_alive = reg->host_pid != 0 &&
                shm::ProcessAlive(static_cast<pid_t>(reg->host_pid), reg->host_start_time);
  for (WorkerRow& w : reg->workers) {
    w.alive = shm::ProcessAlive(static_cast<pid_t>(w.pid), w.start_time);
  }
  for (RingRow& r : reg->rings) ReadRing(ns, r);
  return {};
}

// Rates of `cur` against `prev` over `dt` seconds; a ring absent from `prev`, or whose counters
// went back (a new ring under a reused name), has no rate yet.
std::vector<Rate> Rates(const RegistryCopy& cur, const RegistryCopy* prev, double dt) {
  std::vector<Rate> out(cur.rings.size());
  if (prev == nullptr || dt <= 0) return out;
  for (size_t i = 0; i < cur.rings.size(); ++i) {
    const RingRow& r = cur.rings[i];
    if (!r.error.empty()) continue;
    for (const RingRow& p : prev->rings) {
      if (!p.error.empty() || p.segment != r.segment || p.pid != r.pid ||
          p.start_time != r.start_time) {
        continue;
      }
      if (r.emitted < p.emitted || r.delivered < p.delivered || r.dropped() < p.dropped()) break;
      out[i].known = true;
      out[i].emitted = static_cast<double>(r.emitted - p.emitted) / dt;
      out[i].delivered = static_cast<double>(r.delivered - p.delivered) / dt;
      out[i].dropped = static_cast<double>(r.dropped() - p.dropped()) / dt;
      break;
    }
  }
  return out;
}

int Watch(const std::string& ns, const StatOptions& o) {
  BlockStopSignals();  // SIGINT/SIGTERM end the loop (WaitForSignal) instead of the process
  const bool tty = !o.json && ::isatty(STDOUT_FILENO) == 1;
  RegistryCopy prev;
  bool have_prev = false;
  auto prev_at = std::chrono::steady_clock::now();
  for (bool first = true;; first = false) {
    RegistryCopy reg;
    bool host_alive = false;
    const std::string err = Read(ns, &reg, &host_alive);
    const auto now = std::chrono::steady_clock::now();
    const double dt = std::chrono::duration<double>(now - prev_at).count();
    const auto unix_ns = static_cast<int64_t>(shm::UnixNowNs());
    if (o.json) {
      json doc;
      if (!err.empty()) {
        doc["namespace"] = ns;
        doc["error"] = err;
      } else {
        const std::vector<Rate> rates = Rates(reg, have_prev ? &prev : nullptr, dt);
        doc = JsonDoc(ns, reg, host_alive, &rates);
      }
      doc["time_unix_ns"] = unix_ns;
      doc["interval_s"] = first ? 0.0 : dt;  // seconds since the previous refresh
      std::printf("%s\n", doc.dump(-1, ' ', false, json::error_handler_t::replace).c_str());
    } else {
      if (tty) {
        std::printf("\033[H\033[2J");  // cursor home, clear screen
      } else if (!first) {
        std::printf("\n");
      }
      const time_t t = static_cast<time_t>(unix_ns / 1'000'000'000);
      char when[32];
      tm local{};
      ::localtime_r(&t, &local);
      std::strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S", &local);
      std::printf("── pitlane stat --watch  %s  every %gs (Ctrl-C to stop) ──\n", when,
                  o.interval_s);
      if (!err.empty()) {
        std::printf("%s\n", err.c_str());
      } else {
        const std::vector<Rate> rates = Rates(reg, have_prev ? &prev : nullptr, dt);
        PrintText(ns, reg, host_alive, &rates);
      }
    }
    std::fflush(stdout);
    if (err.empty()) {
      prev = std::move(reg);
      have_prev = true;
    } else {
      have_prev = false;
    }
    prev_at = now;
    if (WaitForSignal(o.interval_s) != 0) return 0;
  }
}

}  // namespace

int RunStat(const StatOptions& o) {
  auto ns_or = ResolveNamespace(o.ns);
  if (!ns_or.ok()) {
    Error("stat", ns_or.status().message());
    return 2;
  }
  const std::string ns = ns_or.value();
  if (o.watch) return Watch(ns, o);
  RegistryCopy reg;
  bool host_alive = false;
  const std::string err = Read(ns, &reg, &host_alive);
  if (!err.empty()) {
    Error("stat", err);
    return 1;
  }
  if (o.json) {
    std::printf("%s\n", JsonDoc(ns, reg, host_alive, nullptr)
                            .dump(2, ' ', false, json::error_handler_t::replace)
                            .c_str());
  } else {
    PrintText(ns, reg, host_alive, nullptr);
  }
  return 0;
}

}  // namespace pitlane::cli
