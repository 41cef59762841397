#include "pitlane/registry.h"

#include <unistd.h>

#include <atomic>
#include <cstring>
#include <thread>

namespace pitlane::shm {
namespace {

void InitRegistryHeader(void* base, uint64_t catalog_hash) {
  auto* h = static_cast<RegistryHeader*>(base);
  h->layout_version = kLayoutVersion;
  h->header_bytes = sizeof(RegistryHeader);
  h->max_workers = kMaxWorkers;
  h->max_rings = kMaxRings;
  h->worker_slot_bytes = kWorkerSlotBytes;
  h->ring_slot_bytes = sizeof(RingSlot);
  h->catalog_hash = catalog_hash;
  // Release pairs with the acquire load of the magic in OpenRegistry / CreateOrAdoptRegistry.
  std::atomic_ref<uint64_t>(h->magic).store(kRegistryMagic, std::memory_order_release);
}

// Why an existing registry cannot be used as is, or "" when it can.
std::string CheckRegistry(const Segment& seg) {
  const auto* h = static_cast<const RegistryHeader*>(seg.base());
  const uint64_t magic =
      std::atomic_ref<uint64_t>(const_cast<uint64_t&>(h->magic)).load(std::memory_order_acquire);
  if (magic != kRegistryMagic) return "it is not an initialised pitlane registry (bad magic)";
  if (h->layout_version != kLayoutVersion) {
    return "it has layout version " + std::to_string(h->layout_version) +
           ", this build uses version " + std::to_string(kLayoutVersion);
  }
  if (h->header_bytes != sizeof(RegistryHeader) || h->max_workers != kMaxWorkers ||
      h->max_rings != kMaxRings || h->worker_slot_bytes != kWorkerSlotBytes ||
      h->ring_slot_bytes != sizeof(RingSlot)) {
    return "its geometry differs from this build's";
  }
  return "";
}

}  // namespace

Result<Segment> CreateOrAdoptRegistry(const std::string& ns, uint64_t catalog_hash,
                                      std::string* log) {
  if (Status s = ValidateNamespace(ns); !s.ok()) return s;
  const std::string name = RegistryName(ns);
  const pid_t self = ::getpid();
  const uint64_t self_start = ProcessStartTime(self);
  for (int attempt = 0; attempt < 3; ++attempt) {
    Result<Segment> created = Segment::Create(name, kRegistryBytes);
    if (created.ok()) {
      InitRegistryHeader(created->base(), catalog_hash);
      RegistryHeader* h = Header(*created);
      h->host_start_time.store(self_start, std::memory_order_relaxed);
      h->host_generation.store(1, std::memory_order_relaxed);
      h->host_pid.store(static_cast<uint32_t>(self), std::memory_order_release);
      return created;
    }
    if (created.status().code() != StatusCode::kAlreadyExists) return created.status();
    Result<Segment> existing = Segment::Open(name, 0);
    if (!existing.ok()) {
      if (existing.status().code() == StatusCode::kNotFound) continue;  // raced with an unlink
      if (existing.status().code() == StatusCode::kDataLoss) {
        if (log) *log += "removing registry " + name + ": " + existing.status().message() + "\n";
        Segment::Unlink(name);
        continue;
      }
      return existing.status();
    }
    std::string why = existing->size() < kRegistryBytes
                          ? "it is " + std::to_string(existing->size()) + " bytes, expected " +
                                std::to_string(kRegistryBytes)
                          : CheckRegistry(*existing);
    if (why.empty()) {
      RegistryHeader* h = Header(*existing);
      const pid_t owner = static_cast<pid_t>(h->host_pid.load(std::memory_order_acquire));
      const uint64_t owner_start = h->host_start_time.load(std::memory_order_relaxed);
      if (owner != 0 && ProcessAlive(owner, owner_start)) {
        return Status(StatusCode::kAlreadyExists,
                      "namespace \"" + ns + "\" already has a running host (pid " +
                          std::to_string(owner) + ")");
      }
      if (h->catalog_hash != catalog_hash) {
        // Workers compare hashes when they attach; ones attached under the old catalog keep
        // emitting by id. Refuse rather than misread their ids.
        why = "it was created for a different catalog";
      } else {
        h->host_start_time.store(self_start, std::memory_order_relaxed);
        h->host_generation.fetch_add(1, std::memory_order_relaxed);
        h->host_pid.store(static_cast<uint32_t>(self), std::memory_order_release);
        if (log) {
          *log += "adopted registry " + name +
                  (owner == 0 ? std::string(" left by a host that exited with workers attached")
                              : " of a dead host (pid " + std::to_string(owner) + ")") +
                  "\n";
        }
        return existing;
      }
    }
    if (log) *log += "removing registry " + name + ": " + why + "\n";
    Segment::Unlink(name);
  }
  return Unavailable("could not create registry " + name + " (kept racing with another process)");
}

Result<Segment> OpenRegistry(const std::string& ns) {
  if (Status s = ValidateNamespace(ns); !s.ok()) return s;
  const std::string name = RegistryName(ns);
  Result<Segment> seg = Segment::Open(name, sizeof(RegistryHeader));
  if (!seg.ok()) return seg.status();
  const auto* h = static_cast<const RegistryHeader*>(seg->base());
  const uint64_t magic =
      std::atomic_ref<uint64_t>(const_cast<uint64_t&>(h->magic)).load(std::memory_order_acquire);
  if (magic == 0) return Unavailable("registry " + name + " is still being initialised");
  if (magic != kRegistryMagic) return DataLoss("registry " + name + " is not a pitlane registry");
  if (h->layout_version != kLayoutVersion) {
    return FailedPrecondition("registry " + name + " has layout version " +
                              std::to_string(h->layout_version) + ", this worker uses version " +
                              std::to_string(kLayoutVersion));
  }
  if (seg->size() < kRegistryBytes) {
    return DataLoss("registry " + name + " is " + std::to_string(seg->size()) +
                    " bytes, expected " + std::to_string(kRegistryBytes));
  }
  return seg;
}

int32_t ClaimWorkerSlot(const Segment& registry, pid_t pid, uint64_t start_time,
                        const std::string& worker_id) {
  for (uint32_t i = 0; i < kMaxWorkers; ++i) {
    WorkerSlot* w = WorkerSlotAt(registry.base(), i);
    uint32_t expected = kSlotFree;
    if (!w->state.compare_exchange_strong(expected, kSlotClaiming, std::memory_order_acquire)) {
      continue;
    }
    w->pid = static_cast<uint32_t>(pid);
    w->start_time = start_time;
    w->generation += 1;
    std::memset(w->worker_id, 0, sizeof(w->worker_id));
    std::memcpy(w->worker_id, worker_id.data(), std::min<size_t>(worker_id.size(), kWorkerIdBytes - 1));
    std::memset(static_cast<void*>(&w->unringed), 0, sizeof(w->unringed));
    // Release pairs with the host's acquire load of the slot state when it rescans.
    w->state.store(kSlotReady, std::memory_order_release);
    BumpEpoch(registry);
    return static_cast<int32_t>(i);
  }
  return -1;
}

int32_t ClaimRingSlot(const Segment& registry, uint32_t worker_slot) {
  for (uint32_t i = 0; i < kMaxRings; ++i) {
    RingSlot* r = RingSlotAt(registry.base(), i);
    uint32_t expected = kSlotFree;
    if (r->state.compare_exchange_strong(expected, kSlotClaiming, std::memory_order_acquire)) {
      r->worker_slot = worker_slot;
      return static_cast<int32_t>(i);
    }
  }
  return -1;
}

void PublishRingSlot(const Segment& registry, uint32_t ring_slot, const std::string& segment,
                     uint64_t generation) {
  RingSlot* r = RingSlotAt(registry.base(), ring_slot);
  r->generation = generation;
  std::memset(r->segment_name, 0, sizeof(r->segment_name));
  std::memcpy(r->segment_name, segment.data(), std::min<size_t>(segment.size(), kSegmentNameBytes - 1));
  // Release pairs with the host's acquire load of the slot state when it rescans.
  r->state.store(kSlotReady, std::memory_order_release);
  BumpEpoch(registry);
}

void RetireRingSlot(const Segment& registry, uint32_t ring_slot) {
  RingSlot* r = RingSlotAt(registry.base(), ring_slot);
  uint32_t expected = kSlotReady;
  if (r->state.compare_exchange_strong(expected, kSlotRetired, std::memory_order_release)) {
    BumpEpoch(registry);
  }
}

void BumpEpoch(const Segment& registry) {
  // Release pairs with the host's acquire load of registry_epoch in its poll pass.
  Header(registry)->registry_epoch.fetch_add(1, std::memory_order_release);
}

namespace {

void BeginWrite(ControlBlock* b) {
  uint64_t v = b->version.load(std::memory_order_relaxed);
  if (v & 1) ++v;  // a previous writer died mid-write; start from the next even value
  b->version.store(v + 1, std::memory_order_relaxed);
  std::atomic_thread_fence(std::memory_order_release);
}

void EndWrite(ControlBlock* b) {
  const uint64_t v = b->version.load(std::memory_order_relaxed);
  // Release pairs with the worker's acquire load of `version` in ReadControl.
  b->version.store(v + 1, std::memory_order_release);
}

}  // namespace

void WriteControl(ControlBlock* b, const ControlState& state) {
  BeginWrite(b);
  b->enabled = state.enabled ? 1 : 0;
  b->sampling_rate = state.sampling_rate;
  size_t used = 0;
  auto put = [&](const std::vector<std::string>& list) -> uint16_t {
    uint16_t n = 0;
    for (const std::string& p : list) {
      if (used + p.size() + 1 > kControlTextBytes) break;  // Validate() bounds this; belt and braces
      std::memcpy(b->text + used, p.data(), p.size());
      b->text[used + p.size()] = '\0';
      used += p.size() + 1;
      ++n;
    }
    return n;
  };
  b->sampling_count = put(state.sampling_patterns);
  b->allow_count = put(state.allow);
  b->deny_count = put(state.deny);
  b->text_bytes = static_cast<uint32_t>(used);
  EndWrite(b);
}

void BumpQuarantineEpoch(ControlBlock* b) {
  BeginWrite(b);
  b->quarantine_epoch += 1;
  EndWrite(b);
}

bool ReadControl(const ControlBlock* b, ControlState* out, uint64_t* version,
                 uint64_t* quarantine_epoch) {
  static thread_local char text[kControlTextBytes];
  for (int attempt = 0; attempt < 1000; ++attempt) {
    // Acquire pairs with the host's release store in EndWrite.
    const uint64_t v1 = b->version.load(std::memory_order_acquire);
    if (v1 == 0) {
      *version = 0;
      return false;
    }
    if (v1 & 1) {
      std::this_thread::yield();
      continue;
    }
    const uint32_t enabled = b->enabled;
    const double rate = b->sampling_rate;
    const uint16_t counts[3] = {b->sampling_count, b->allow_count, b->deny_count};
    const uint32_t used = std::min<uint32_t>(b->text_bytes, kControlTextBytes);
    const uint64_t qe = b->quarantine_epoch;
    std::memcpy(text, b->text, used);
    std::atomic_thread_fence(std::memory_order_acquire);
    if (b->version.load(std::memory_order_relaxed) != v1) continue;

    ControlState s;
    s.enabled = enabled != 0;
    s.sampling_rate = rate;
    std::vector<std::string>* lists[3] = {&s.sampling_patterns, &s.allow, &s.deny};
    size_t pos = 0;
    for (int l = 0; l < 3; ++l) {
      for (uint16_t k = 0; k < counts[l]; ++k) {
        if (pos >= used) return false;
        const void* nul = std::memchr(text + pos, '\0', used - pos);
        if (nul == nullptr) return false;
        const size_t len = static_cast<const char*>(nul) - (text + pos);
        lists[l]->emplace_back(text + pos, len);
        pos += len + 1;
      }
    }
    if (!s.Validate().ok()) return false;
    *out = std::move(s);
    *version = v1;
    *quarantine_epoch = qe;
    return true;
  }
  return false;
}

}  // namespace pitlane::shm
