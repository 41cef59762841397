#include "pitlane/registry.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <thread>

#include "segment_file.h"
#include "shared_mappings.h"

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
  // Release pairs with the acquire load of the magic in OpenRegistry / CopyIdentity.
  std::atomic_ref<uint64_t>(h->magic).store(kRegistryMagic, std::memory_order_release);
}

// The identity fields of a registry header, copied out of the mapping under a guard.
struct RegistryIdentity {
  uint64_t magic = 0;
  uint32_t layout_version = 0;
  uint32_t header_bytes = 0;
  uint32_t max_workers = 0;
  uint32_t max_rings = 0;
  uint32_t worker_slot_bytes = 0;
  uint32_t ring_slot_bytes = 0;
  uint64_t catalog_hash = 0;
  uint32_t host_pid = 0;
};

// False when the mapping was truncated under the copy.
bool CopyIdentity(const void* base, RegistryIdentity* out) {
  const auto* h = static_cast<const RegistryHeader*>(base);
  RegistryIdentity& o = *out;
  return Guarded([&] {
    // Acquire pairs with the release store of the magic in InitRegistryHeader.
    o.magic =
        std::atomic_ref<uint64_t>(const_cast<uint64_t&>(h->magic)).load(std::memory_order_acquire);
    o.layout_version = h->layout_version;
    o.header_bytes = h->header_bytes;
    o.max_workers = h->max_workers;
    o.max_rings = h->max_rings;
    o.worker_slot_bytes = h->worker_slot_bytes;
    o.ring_slot_bytes = h->ring_slot_bytes;
    o.catalog_hash = h->catalog_hash;
    o.host_pid = h->host_pid.load(std::memory_order_relaxed);
  });
}

// Why an existing registry cannot be used as is, or "" when it can.
std::string CheckIdentity(const RegistryIdentity& h, uint64_t catalog_hash) {
  if (h.magic != kRegistryMagic) return "it is not an initialised pitlane registry (bad magic)";
  if (h.layout_version != kLayoutVersion) {
    return "it has layout version " + std::to_string(h.layout_version) +
           ", this build uses version " + std::to_string(kLayoutVersion);
  }
  if (h.header_bytes != sizeof(RegistryHeader) || h.max_workers != kMaxWorkers ||
      h.max_rings != kMaxRings || h.worker_slot_bytes != kWorkerSlotBytes ||
      h.ring_slot_bytes != sizeof(RingSlot)) {
    return "its geometry differs from this build's";
  }
  // Workers compare hashes when they attach; ones attached under the old catalog keep emitting
  // by id. Refuse rather than misread their ids.
  if (h.catalog_hash != catalog_hash) return "it was created for a different catalog";
  return "";
}

// The pid /proc/locks names as holder of a flock on the file `st` describes, or 0. The kernel
// writes this table, so unlike the registry's host_pid word it cannot be forged.
pid_t FlockHolder(const struct stat& st) {
  FILE* f = std::fopen("/proc/locks", "re");
  if (f == nullptr) return 0;
  char want[64];
  std::snprintf(want, sizeof(want), "%02x:%02x:%lu", major(st.st_dev), minor(st.st_dev),
                static_cast<unsigned long>(st.st_ino));
  char line[256];
  pid_t holder = 0;
  while (holder == 0 && std::fgets(line, sizeof(line), f) != nullptr) {
    // "1: FLOCK  ADVISORY  WRITE 1234 00:1a:5678 0 EOF"; waiters have "->" after the index.
    char kind[16], advisory[16], access[16], file[64];
    int pid = 0;
    if (std::strstr(line, "->") != nullptr) continue;
    if (std::sscanf(line, "%*s %15s %15s %15s %d %63s", kind, advisory, access, &pid, file) != 5) {
      continue;
    }
    if (std::strcmp(kind, "FLOCK") == 0 && std::strcmp(file, want) == 0) holder = pid;
  }
  std::fclose(f);
  return holder;
}

// The running host of the registry open as `fd`: 0 when nobody holds its lock. Probes with a
// shared lock on a descriptor of our own (flock locks belong to open file descriptions, so
// this conflicts with a host's exclusive lock even inside the host's own process).
pid_t LockedBy(int fd, const struct stat& st, const void* mapped_header) {
  if (::flock(fd, LOCK_SH | LOCK_NB) == 0) {
    ::flock(fd, LOCK_UN);
    return 0;
  }
  if (const pid_t pid = FlockHolder(st); pid > 0) return pid;
  // No /proc/locks entry we can read (another pid namespace): fall back to the word the host
  // wrote. -1 = "a host, pid unknown".
  RegistryIdentity id;
  if (mapped_header != nullptr && CopyIdentity(mapped_header, &id) && id.host_pid != 0) {
    return static_cast<pid_t>(id.host_pid);
  }
  return -1;
}

std::string HostPidText(pid_t pid) {
  return pid > 0 ? "pid " + std::to_string(pid) : std::string("pid unknown");
}

}  // namespace

// ─── HostRegistry ────────────────────────────────────────────────────────────────────────────

HostRegistry::~HostRegistry() { Release(); }

HostRegistry::HostRegistry(HostRegistry&& o) noexcept
    : base_(o.base_), size_(o.size_), name_(std::move(o.name_)), lock_fd_(o.lock_fd_),
      dev_(o.dev_), ino_(o.ino_) {
  o.base_ = nullptr;
  o.size_ = 0;
  o.lock_fd_ = -1;
}

HostRegistry& HostRegistry::operator=(HostRegistry&& o) noexcept {
  if (this != &o) {
    Release();
    base_ = o.base_;
    size_ = o.size_;
    name_ = std::move(o.name_);
    lock_fd_ = o.lock_fd_;
    dev_ = o.dev_;
    ino_ = o.ino_;
    o.base_ = nullptr;
    o.size_ = 0;
    o.lock_fd_ = -1;
  }
  return *this;
}

void HostRegistry::Release() {
  if (base_ != nullptr) {
    internal::ForgetMapping(base_);
    ::munmap(base_, size_);
    base_ = nullptr;
  }
  if (lock_fd_ >= 0) ::close(lock_fd_);  // releases the flock taken in CreateOrAdoptRegistry
  lock_fd_ = -1;
}

bool HostRegistry::Lost() const {
  if (base_ == nullptr) return false;
  // Touch the last byte: a truncation shows even if nothing else touched the missing pages.
  const volatile char* last = static_cast<const char*>(base_) + size_ - 1;
  const bool touched = Guarded([&] { (void)*last; });
  return !touched || internal::MappingLost(base_);
}

bool HostRegistry::UnlinkIfHeld() {
  struct stat st;
  if (lock_fd_ < 0 || ::lstat(internal::SegmentPath(name_).c_str(), &st) != 0) return false;
  if (st.st_dev != dev_ || st.st_ino != ino_) return false;  // someone else's file by now
  return Segment::Unlink(name_);
}

namespace {

// The registry file, open read-write, and whether this call created it.
struct RegistryFile {
  int fd = -1;
  struct stat st {};
  bool created = false;
};

// 1. Creates the registry file, or opens the existing one (no symlink followed, never blocking,
//    only a regular file of ours with mode 0600). NOT_FOUND when the name was unlinked between
//    the two (try again).
Result<RegistryFile> OpenOrCreateRegistryFile(const std::string& name, const std::string& path) {
  RegistryFile f;
  f.fd = internal::OpenSegmentFd(path, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_NONBLOCK, 0600);
  f.created = f.fd >= 0;
  if (f.created) {
    // open() applies the umask; the mode must be exactly 0600 whatever it is.
    if (::fchmod(f.fd, 0600) != 0 || ::fstat(f.fd, &f.st) != 0) {
      const int err = errno;
      ::close(f.fd);
      ::unlink(path.c_str());
      return Unavailable("cannot set up registry " + path + ": " + std::strerror(err));
    }
    return f;
  }
  if (errno != EEXIST) {
    return Unavailable("cannot create registry " + path + ": " + std::strerror(errno));
  }
  Result<internal::SegmentFile> existing = internal::OpenSegmentFile(name, /*writable=*/true);
  if (!existing.ok()) return existing.status();
  f.fd = existing->fd;
  f.st = existing->st;
  return f;
}

enum class LockOutcome { kHeld, kTryAgain };

// 2. Becomes the namespace's host: takes the exclusive lock on the file, held until this host
//    goes away. kTryAgain when the holder just exited or the name now refers to another file;
//    ALREADY_EXISTS naming the running host. Closes the file unless the lock is held.
Result<LockOutcome> LockAsHost(const RegistryFile& f, const std::string& ns,
                               const std::string& path) {
  if (::flock(f.fd, LOCK_EX | LOCK_NB) != 0) {
    void* hdr = nullptr;
    if (f.st.st_size >= static_cast<off_t>(sizeof(RegistryHeader))) {
      hdr = ::mmap(nullptr, sizeof(RegistryHeader), PROT_READ, MAP_SHARED, f.fd, 0);
      if (hdr == MAP_FAILED) hdr = nullptr;
    }
    const pid_t holder = LockedBy(f.fd, f.st, hdr);
    if (hdr != nullptr) ::munmap(hdr, sizeof(RegistryHeader));
    ::close(f.fd);
    if (holder == 0) return LockOutcome::kTryAgain;  // the holder just exited
    return Status(StatusCode::kAlreadyExists, "namespace \"" + ns +
                                                  "\" already has a running host (" +
                                                  HostPidText(holder) + "); registry " + path);
  }
  // The name may have been unlinked and reused between our open and our lock: the lock is
  // only worth something on the file the name refers to now.
  struct stat now;
  if (::lstat(path.c_str(), &now) != 0 || now.st_dev != f.st.st_dev ||
      now.st_ino != f.st.st_ino) {
    ::close(f.fd);
    return LockOutcome::kTryAgain;
  }
  return LockOutcome::kHeld;
}

// 4. Stamps this process as the registry's host; says so in `log` when it adopted the file.
void StampHost(RegistryHeader* h, bool adopted, const std::string& name, std::string* log) {
  const pid_t self = ::getpid();
  const uint32_t previous = h->host_pid.load(std::memory_order_relaxed);
  h->host_start_time.store(ProcessStartTime(self), std::memory_order_relaxed);
  h->host_generation.fetch_add(1, std::memory_order_relaxed);
  h->host_pid.store(static_cast<uint32_t>(self), std::memory_order_release);
  if (adopted && log != nullptr) {
    *log += "adopted registry " + name +
            (previous == 0 ? std::string(" left by a host that exited with workers attached")
                           : " of a host that is gone (pid " + std::to_string(previous) + ")") +
            "\n";
  }
}

}  // namespace

Result<HostRegistry> CreateOrAdoptRegistry(const std::string& ns, uint64_t catalog_hash,
                                           std::string* log) {
  if (Status s = ValidateNamespace(ns); !s.ok()) return s;
  const std::string name = RegistryName(ns);
  const std::string path = internal::SegmentPath(name);
  for (int attempt = 0; attempt < 8; ++attempt) {
    Result<RegistryFile> file = OpenOrCreateRegistryFile(name, path);
    if (!file.ok()) {
      if (file.status().code() == StatusCode::kNotFound) continue;  // raced with an unlink
      return file.status();
    }
    const bool created = file->created;
    Result<LockOutcome> lock = LockAsHost(*file, ns, path);
    if (!lock.ok()) return lock.status();
    if (*lock == LockOutcome::kTryAgain) continue;
    HostRegistry reg;
    reg.name_ = name;
    reg.lock_fd_ = file->fd;
    reg.dev_ = file->st.st_dev;
    reg.ino_ = file->st.st_ino;
    // 3. Map it. We hold the lock, so no other host uses this file; only a process of our uid
    //    (the file is ours, 0600) may still resize it, and the mapping table survives that.
    if (created && ::ftruncate(file->fd, static_cast<off_t>(kRegistryBytes)) != 0) {
      const int err = errno;
      reg.UnlinkIfHeld();
      return ResourceExhausted("cannot size registry " + path + " to " +
                               std::to_string(kRegistryBytes) + " bytes: " + std::strerror(err));
    }
    std::string why;
    if (!created && static_cast<size_t>(file->st.st_size) != kRegistryBytes) {
      why = "it is " + std::to_string(file->st.st_size) + " bytes, expected " +
            std::to_string(kRegistryBytes);
    } else {
      void* p = ::mmap(nullptr, kRegistryBytes, PROT_READ | PROT_WRITE, MAP_SHARED, file->fd, 0);
      if (p == MAP_FAILED) {
        const int err = errno;
        if (created) reg.UnlinkIfHeld();
        return ResourceExhausted("cannot map registry " + path + ": " + std::strerror(err));
      }
      if (!internal::RegisterMapping(p, kRegistryBytes)) {
        ::munmap(p, kRegistryBytes);
        if (created) reg.UnlinkIfHeld();
        return ResourceExhausted("cannot map registry " + path + ": this process maps " +
                                 std::to_string(internal::kMaxSharedMappings) + " segments");
      }
      reg.base_ = p;
      reg.size_ = kRegistryBytes;
      if (created) {
        InitRegistryHeader(p, catalog_hash);
      } else {
        RegistryIdentity id;
        why = CopyIdentity(p, &id) ? CheckIdentity(id, catalog_hash)
                                   : "it was truncated while being read";
      }
    }
    if (why.empty()) {
      StampHost(reg.header(), /*adopted=*/!created, name, log);
      return reg;
    }
    // Unusable, and ours to replace: we hold its lock, so no host uses it.
    if (log) *log += "removing registry " + name + ": " + why + "\n";
    reg.UnlinkIfHeld();
  }
  return Unavailable("could not create registry " + path + " (kept racing with another process)");
}

Result<pid_t> NamespaceHostPid(const std::string& ns) {
  if (Status s = ValidateNamespace(ns); !s.ok()) return s;
  Result<internal::SegmentFile> f = internal::OpenSegmentFile(RegistryName(ns), false);
  if (!f.ok()) return f.status();
  const pid_t pid = LockedBy(f->fd, f->st, nullptr);
  ::close(f->fd);
  return pid;
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

void WriteControl(ControlBlock* b, const ControlState& state, uint64_t generation) {
  BeginWrite(b);
  b->written_for = generation;
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
                 uint64_t* quarantine_epoch, uint64_t* written_for) {
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
    const uint64_t generation = b->written_for;
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
    if (written_for != nullptr) *written_for = generation;
    return true;
  }
  return false;
}

}  // namespace pitlane::shm
