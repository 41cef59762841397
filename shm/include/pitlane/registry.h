// The namespace registry: how workers and the host find each other without syscalls on the hot
// path (layout in shm_layout.h). Slots are claimed by compare-and-swap and stamped with pid and
// process start time, so the host can tell a dead claimer from a live one even after pid reuse.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>

#include "pitlane/control.h"
#include "pitlane/shm.h"

namespace pitlane::shm {

inline RegistryHeader* Header(const Segment& registry) {
  return static_cast<RegistryHeader*>(registry.base());
}

// Host: creates the namespace's registry, or adopts an existing one whose host is dead (its
// live workers and rings stay registered). A registry that is garbage, of another layout
// version or too small is removed and recreated; `log` receives one line per such decision.
// Fails with ALREADY_EXISTS when a live host owns the namespace.
Result<Segment> CreateOrAdoptRegistry(const std::string& ns, uint64_t catalog_hash,
                                      std::string* log);

// Worker: opens the registry of `ns`. NOT_FOUND when no host has created it yet;
// FAILED_PRECONDITION naming both versions when its layout version differs; UNAVAILABLE while
// it is still being initialised.
Result<Segment> OpenRegistry(const std::string& ns);

// Worker: claims a free worker slot for this process. Returns the slot index or -1 when full.
int32_t ClaimWorkerSlot(const Segment& registry, pid_t pid, uint64_t start_time,
                        const std::string& worker_id);
// Worker: claims a free ring slot. Returns the index or -1 when full. The slot is CLAIMING
// until PublishRingSlot.
int32_t ClaimRingSlot(const Segment& registry, uint32_t worker_slot);
void PublishRingSlot(const Segment& registry, uint32_t ring_slot, const std::string& segment,
                     uint64_t generation);
// Worker: the ring's writer thread exited; the host drains then frees the slot.
void RetireRingSlot(const Segment& registry, uint32_t ring_slot);
// Any slot transition the host must notice: registry_epoch += 1 (release).
void BumpEpoch(const Segment& registry);

// Host: writes `state` into the block under its seqlock.
void WriteControl(ControlBlock* block, const ControlState& state);
// Host: bumps quarantine_epoch (under the seqlock) so the worker notices a quarantined ring.
void BumpQuarantineEpoch(ControlBlock* block);
// Worker: copies a consistent snapshot. Returns false if the block was never written or the
// snapshot is not self-consistent (a host bug or a hostile writer); `version` receives the
// version read.
bool ReadControl(const ControlBlock* block, ControlState* out, uint64_t* version,
                 uint64_t* quarantine_epoch);

}  // namespace pitlane::shm
