// The namespace registry: how workers and the host find each other without syscalls on the hot
// path (layout in shm_layout.h). Slots are claimed by compare-and-swap and stamped with pid and
// process start time, so the host can tell a dead claimer from a live one even after pid reuse.
#pragma once

#include <sys/types.h>

#include <sys/stat.h>

#include <cstdint>
#include <string>

#include "pitlane/control.h"
#include "pitlane/shm.h"

namespace pitlane::shm {

inline RegistryHeader* Header(const Segment& registry) {
  return static_cast<RegistryHeader*>(registry.base());
}

// The host's hold on its namespace: the registry mapping, and an exclusive flock(2) on the
// registry file held for the host's lifetime. The kernel releases the lock when the host exits
// or dies, so the lock (not the host_pid word, which anyone who can open the file can write)
// decides whether a namespace has a host. Movable, not copyable; unmaps and releases the lock
// on destruction (it never unlinks: see UnlinkIfHeld).
class HostRegistry {
 public:
  HostRegistry() = default;
  ~HostRegistry();
  HostRegistry(HostRegistry&& o) noexcept;
  HostRegistry& operator=(HostRegistry&& o) noexcept;
  HostRegistry(const HostRegistry&) = delete;
  HostRegistry& operator=(const HostRegistry&) = delete;

  void* base() const { return base_; }
  size_t size() const { return size_; }
  const std::string& name() const { return name_; }
  RegistryHeader* header() const { return static_cast<RegistryHeader*>(base_); }
  dev_t dev() const { return dev_; }
  ino_t ino() const { return ino_; }
  // True once someone truncated the registry under this host (touches its last page, guarded):
  // the mapping then holds private zeros (see shared_mappings.h), so no worker can be
  // discovered through it any more.
  bool Lost() const;
  // Removes the registry's name if it still refers to the file this host holds (same device
  // and inode) and returns whether it did. A host never unlinks a registry it does not hold.
  bool UnlinkIfHeld();

 private:
  friend Result<HostRegistry> CreateOrAdoptRegistry(const std::string& ns, uint64_t catalog_hash,
                                                    std::string* log);
  void Release();

  void* base_ = nullptr;
  size_t size_ = 0;
  std::string name_;
  int lock_fd_ = -1;
  dev_t dev_ = 0;
  ino_t ino_ = 0;
};

// Host: becomes the host of namespace `ns`: creates its registry, or adopts an existing one
// whose host is gone (its live workers and rings stay registered). Before adopting, the file
// must be a regular file owned by the effective uid with mode 0600 (else PERMISSION_DENIED or
// FAILED_PRECONDITION naming the file, its owner, mode and the fix; the file is left alone).
// Fails with ALREADY_EXISTS naming the running host's pid when another host holds the lock.
// A registry that is garbage, of another layout version, too small or made for another catalog
// is unlinked (only ever while holding its lock) and recreated; `log` receives one line per
// such decision.
Result<HostRegistry> CreateOrAdoptRegistry(const std::string& ns, uint64_t catalog_hash,
                                           std::string* log);

// The pid of the host holding the lock of `ns`'s registry; 0 when the registry exists and no
// host holds it (a host that died releases it). NOT_FOUND when there is no registry; the
// adoption checks' errors when the file may not be adopted.
Result<pid_t> NamespaceHostPid(const std::string& ns);

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

// Host: writes `state` into the block under its seqlock, for the worker whose slot has
// generation `generation` (0: for no worker in particular).
void WriteControl(ControlBlock* block, const ControlState& state, uint64_t generation);
// Host: bumps quarantine_epoch (under the seqlock) so the worker notices a quarantined ring.
void BumpQuarantineEpoch(ControlBlock* block);
// Worker: copies a consistent snapshot. Returns false if the block was never written or the
// snapshot is not self-consistent (a host bug or a hostile writer); `version` receives the
// version read, `written_for` (when not null) the generation the state was written for.
bool ReadControl(const ControlBlock* block, ControlState* out, uint64_t* version,
                 uint64_t* quarantine_epoch, uint64_t* written_for = nullptr);

}  // namespace pitlane::shm
