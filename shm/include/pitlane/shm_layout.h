// pitlane shared-memory layout, version 1. This comment is the specification: a compatible
// reader or writer can be written from it alone.
//
// Two kinds of POSIX shared-memory segment live in a namespace <ns> ([A-Za-z0-9._-]{1,48}):
//
//   /pitlane.<ns>.registry          created by the host, one per namespace
//   /pitlane.<ns>.ring.<pid>.<slot> created by a worker process, one per emitting thread
//
// Both are created with mode 0600 (fchmod after create, so the umask does not matter), mapped
// MAP_SHARED, and hold only fixed-width integers, NUL-terminated char arrays, offsets (never
// pointers) and std::atomic<uint32_t|uint64_t> (lock-free, address-free on every target we
// build for, pinned by static_assert). There is no lock in shared memory: a process killed at
// any instruction leaves the other side able to go on.
//
// ─── Registry segment ─────────────────────────────────────────────────────────────────────────
// offset        size   field                     writer   notes
// 0             8      magic "PITLREG1"          host     written last at creation (release)
// 8             4      layout_version            host     kLayoutVersion
// 12            4      header_bytes              host     sizeof(RegistryHeader) = 256
// 16            4      max_workers               host     kMaxWorkers
// 20            4      max_rings                 host     kMaxRings
// 24            4      worker_slot_bytes         host     kWorkerSlotBytes = 16384
// 28            4      ring_slot_bytes           host     sizeof(RingSlot) = 128
// 32            8      catalog_hash              host     Catalog::hash() of the host's catalog
// 40            24     reserved (0)
// 64            4      host_pid                  host     atomic; 0 = no host attached
// 72            8      host_start_time           host     atomic; /proc/<pid>/stat starttime
// 80            8      host_generation           host     atomic; +1 each time a host attaches
// 128           8      registry_epoch            workers  atomic fetch_add(release) after a slot
//                                                         becomes READY or RETIRED; host loads it
//                                                         (acquire) once per poll pass and rescans
//                                                         the slots only when it changed
// 192           4      host_sleeping             both     futex word: host stores 1 before it
//                                                         sleeps; a worker that reads 1 after
//                                                         publishing exchanges 0 and FUTEX_WAKEs
// 256           kMaxWorkers * 16384   WorkerSlot[]
// 256+W*16384   kMaxRings * 128       RingSlot[]
//
// WorkerSlot (16384 bytes, one per worker process):
// +0     4     state            workers/host  FREE(0) -CAS-> CLAIMING(1) -> READY(2) (worker,
//                                              release); host sets FREE after reclaiming
// +4     4     pid              worker
// +8     8     start_time       worker        /proc/<pid>/stat field 22 (pid-reuse guard)
// +16    8     generation       worker        +1 on every claim of this slot
// +64    64    worker_id        worker        NUL-terminated
// +128   64    unringed counters worker       events emitted by threads that had no ring
//                                              (no host yet, ring cap reached): emitted,
//                                              dropped_no_ring, suppressed{disabled,sampled,
//                                              filtered}; mirrored from process memory
// +192   ...   ControlBlock     host          seqlock: `version` odd while the host writes;
//                                              the worker copies the block, then re-reads
//                                              `version` (acquire, pairs with the host's
//                                              release store of the even value) and retries
//                                              if it changed. An unchanged version costs the
//                                              emit path one relaxed load.
//
// RingSlot (128 bytes, one per live ring):
// +0     4     state            workers/host  FREE(0) -CAS-> CLAIMING(1) -> READY(2) ->
//                                              RETIRED(3) (worker: thread exited, no more
//                                              writes; the worker unmaps the ring first);
//                                              host sets FREE after draining and unlinking
//                                              the segment, once the worker's process no
//                                              longer maps it (/proc/<pid>/maps)
// +4     4     worker_slot      worker
// +8     8     generation       worker        copy of the ring header's generation
// +16    64    segment_name     worker        NUL-terminated, "/pitlane.<ns>.ring.<pid>.<slot>"
//
// ─── Ring segment ─────────────────────────────────────────────────────────────────────────────
// offset  size  field                      writer   notes
// 0       8     magic "PITLRNG1"           worker   written last at creation (release)
// 8       4     layout_version             worker
// 12      4     header_bytes               worker   kRingHeaderBytes = 4096 (data is page aligned)
// 16      8     data_bytes                 worker   power of two, 4 KiB .. 64 MiB
// 24      4     max_record_bytes           worker   record header + payload, <= data_bytes / 4
// 28      4     ring_slot                  worker   index of its RingSlot in the registry
// 32      4     pid                        worker
// 36      4     worker_slot                worker
// 40      8     start_time                 worker   /proc/<pid>/stat starttime of the creator
// 48      8     generation                 worker
// 56      8     created_unix_ns            worker
// 64      64    worker_id                  worker   NUL-terminated
// 128     64    WorkerCounters             worker   relaxed stores by the single writer thread
// 192     128   HostCounters               host     relaxed stores by the poll thread
// 320     8     producer position          worker   release store after the record is complete
// 384     8     consumer position          host     release store once per drained batch
// 448     8     snapshot_count             host     release store after a HostSnapshot is complete
// 512     2x128 HostSnapshot[2]            host     written alternately, see below
// 768     3328  reserved (0)
// 4096    data_bytes  data area
//
// Positions are monotonically increasing uint64 byte counts (they may start anywhere, even near
// 2^64, and wrap modulo 2^64); the offset in the data area is position & (data_bytes - 1).
// The producer's release store pairs with the host's acquire load of the producer position:
// everything the worker wrote into the record (and its counters) before the store is visible to
// the host after the load. The host's release store of the consumer position pairs with the
// worker's acquire load of it (done only when the ring looks full): bytes the host has finished
// copying may then be overwritten.
//
// A host that dies between storing its counters and the consumer position must not leave a
// successor with counters that disagree with the position (the successor would count records
// twice, or see sequence numbers "go backwards"). So after each drained batch the host also
// writes a HostSnapshot {position counted through, delivered, truncated, rejected[]} into the
// slot it did not write last (snapshot_count & 1) and then release-stores snapshot_count + 1.
// A successor resumes from snapshots[(snapshot_count - 1) & 1]: complete by construction,
// position and counters consistent. The records after that position are read again (handlers
// may see an event twice across a host crash; the counters never do).
//
// Records are 8-byte aligned and never cross the end of the data area:
//   +0  uint32 length   payload bytes (not counting this header or padding), or kSkipMarker
//   +4  uint32 seq      low 32 bits of the ring's record sequence (0, 1, 2, ...); drops do not
//                       consume sequence numbers, so a gap means records were lost
//   +8  payload         a FlatBuffer of schemas/event.fbs, padded with zeros to 8 bytes
// A record occupies 8 + align8(length) bytes. When it does not fit before the end of the data
// area, the writer puts a header with length = kSkipMarker at the current offset (meaning "the
// rest of the area is padding") and writes the record at offset 0. A record is never published
// partially: a worker killed mid-write leaves the producer position before it.
//
// Per ring, the conservation law every tool checks:
//   emitted = suppressed + dropped + published      (WorkerCounters)
//   published = delivered + rejected                (HostCounters, once the ring is drained)
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace pitlane::shm {

inline constexpr size_t kCacheLineBytes = 64;
inline constexpr uint32_t kLayoutVersion = 2;
inline constexpr uint64_t kRegistryMagic = 0x314745524C544950ull;  // "PITLREG1" little-endian
inline constexpr uint64_t kRingMagic = 0x31474E524C544950ull;      // "PITLRNG1" little-endian
inline constexpr uint32_t kMaxWorkers = 256;
inline constexpr uint32_t kMaxRings = 1024;
inline constexpr uint32_t kWorkerIdBytes = 64;  // including the NUL
inline constexpr uint32_t kSegmentNameBytes = 64;
inline constexpr uint32_t kRingHeaderBytes = 4096;
inline constexpr uint32_t kRecordHeaderBytes = 8;
inline constexpr uint32_t kSkipMarker = 0xFFFFFFFFu;
inline constexpr uint64_t kMinRingBytes = 4096;
inline constexpr uint64_t kMaxRingBytes = 64ull << 20;
// 256 KiB: ~1,200 typical (~200 B) records, i.e. a 1 ms host stall at 1 M events/s per thread
// is absorbed without drops, while 64 rings cost 16 MiB of address space (resident only as
// touched). Override with PITLANE_RING_BYTES.
inline constexpr uint64_t kDefaultRingBytes = 256 << 10;

enum SlotState : uint32_t { kSlotFree = 0, kSlotClaiming = 1, kSlotReady = 2, kSlotRetired = 3 };

static_assert(std::atomic<uint32_t>::is_always_lock_free);
static_assert(std::atomic<uint64_t>::is_always_lock_free);
static_assert(sizeof(std::atomic<uint64_t>) == 8 && sizeof(std::atomic<uint32_t>) == 4);

// ─── Registry ────────────────────────────────────────────────────────────────────────────────
struct RegistryHeader {
  uint64_t magic;
  uint32_t layout_version;
  uint32_t header_bytes;
  uint32_t max_workers;
  uint32_t max_rings;
  uint32_t worker_slot_bytes;
  uint32_t ring_slot_bytes;
  uint64_t catalog_hash;
  uint64_t reserved0[3];
  alignas(kCacheLineBytes) std::atomic<uint32_t> host_pid;
  uint32_t reserved1;
  std::atomic<uint64_t> host_start_time;
  std::atomic<uint64_t> host_generation;
  alignas(kCacheLineBytes) std::atomic<uint64_t> registry_epoch;
  alignas(kCacheLineBytes) std::atomic<uint32_t> host_sleeping;
};
static_assert(sizeof(RegistryHeader) == 256);
static_assert(offsetof(RegistryHeader, catalog_hash) == 32);
static_assert(offsetof(RegistryHeader, host_pid) == 64);
static_assert(offsetof(RegistryHeader, host_start_time) == 72);
static_assert(offsetof(RegistryHeader, host_generation) == 80);
static_assert(offsetof(RegistryHeader, registry_epoch) == 128);
static_assert(offsetof(RegistryHeader, host_sleeping) == 192);

// Worker-written counters of events emitted by threads that had no ring. Mirrored from the
// worker's process memory by its background thread (so they lag by up to ~100 ms).
struct UnringedCounters {
  std::atomic<uint64_t> emitted;
  std::atomic<uint64_t> dropped_no_ring;
  std::atomic<uint64_t> suppressed_disabled;
  std::atomic<uint64_t> suppressed_sampled;
  std::atomic<uint64_t> suppressed_filtered;
  uint64_t reserved[3];
};
static_assert(sizeof(UnringedCounters) == 64);

inline constexpr uint32_t kControlTextBytes = 16000;

// Host-written control state of one worker (see pitlane::ControlState). Patterns are stored
// NUL-terminated, back to back in `text`: first the sampling patterns, then allow, then deny.
struct ControlBlock {
  std::atomic<uint64_t> version;  // seqlock: odd while the host writes; 0 = never written
  uint32_t enabled;               // 0 or 1
  uint32_t text_bytes;            // bytes of `text` in use
  double sampling_rate;
  uint16_t sampling_count;
  uint16_t allow_count;
  uint16_t deny_count;
  uint16_t reserved0;
  uint64_t quarantine_epoch;      // +1 whenever the host quarantines one of this worker's rings
  uint64_t written_for;           // the WorkerSlot generation the state was written for
  uint64_t reserved1[2];
  char text[kControlTextBytes];
};
static_assert(offsetof(ControlBlock, text) == 64);

struct WorkerSlot {
  std::atomic<uint32_t> state;
  uint32_t pid;
  uint64_t start_time;
  uint64_t generation;
  uint64_t reserved0[5];
  char worker_id[kWorkerIdBytes];
  UnringedCounters unringed;
  alignas(kCacheLineBytes) ControlBlock control;
};
static_assert(sizeof(WorkerSlot) <= 16384);
inline constexpr size_t kWorkerSlotBytes = 16384;
static_assert(offsetof(WorkerSlot, worker_id) == 64);
static_assert(offsetof(WorkerSlot, unringed) == 128);
static_assert(offsetof(WorkerSlot, control) == 192);

struct RingSlot {
  std::atomic<uint32_t> state;
  uint32_t worker_slot;
  uint64_t generation;
  char segment_name[kSegmentNameBytes];
  uint64_t reserved[6];
};
static_assert(sizeof(RingSlot) == 128);
static_assert(offsetof(RingSlot, segment_name) == 16);

inline constexpr size_t kRegistryBytes =
    sizeof(RegistryHeader) + kMaxWorkers * kWorkerSlotBytes + kMaxRings * sizeof(RingSlot);

inline WorkerSlot* WorkerSlotAt(void* registry_base, uint32_t i) {
  return reinterpret_cast<WorkerSlot*>(static_cast<char*>(registry_base) +
                                       sizeof(RegistryHeader) + size_t{i} * kWorkerSlotBytes);
}
inline RingSlot* RingSlotAt(void* registry_base, uint32_t i) {
  return reinterpret_cast<RingSlot*>(static_cast<char*>(registry_base) + sizeof(RegistryHeader) +
                                     size_t{kMaxWorkers} * kWorkerSlotBytes +
                                     size_t{i} * sizeof(RingSlot));
}

// ─── Ring ────────────────────────────────────────────────────────────────────────────────────
struct WorkerCounters {
  std::atomic<uint64_t> emitted;
  std::atomic<uint64_t> published;
  std::atomic<uint64_t> dropped_full;
  std::atomic<uint64_t> dropped_too_large;
  std::atomic<uint64_t> suppressed_disabled;
  std::atomic<uint64_t> suppressed_sampled;
  std::atomic<uint64_t> suppressed_filtered;
  std::atomic<uint64_t> retired;  // 1 once the writer thread has exited (release)
};
static_assert(sizeof(WorkerCounters) == 64);

// Why the host rejected a published record. Order is part of the layout.
enum RejectReason : uint32_t {
  kRejectUnknownEvent = 0,
  kRejectBadMeasurementKey,
  kRejectTooManyFields,
  kRejectKeyTooLong,
  kRejectCorrelationIdTooLong,
  kRejectMalformed,  // record header or FlatBuffer failed verification
  kRejectLost,       // sequence gap, or never read because the ring was quarantined
  kRejectReasonCount,
};
const char* RejectReasonName(uint32_t reason);

// Why the host stopped reading a ring (host memory only, never in the segment): one counter per
// reason in HostStats, so each kind of malicious or broken record header is told apart.
enum QuarantineReason : uint8_t {
  kQuarantineNone = 0,
  kQuarantineProducerOutside,    // producer position outside [consumer, consumer + capacity]
  kQuarantineProducerMisaligned, // producer position not 8-byte aligned
  kQuarantineSkipPastProducer,   // a skip marker runs past the producer position
  kQuarantineZeroLength,         // record length 0
  kQuarantineTooLong,            // record longer than max_record_bytes (or overflowing)
  kQuarantineCrossesEnd,         // record crosses the end of the data area
  kQuarantinePastProducer,       // record runs past the producer position
  kQuarantineSequenceBackwards,  // record sequence number went backwards
  kQuarantineTruncated,          // the segment was truncated under the reader (SIGBUS)
  kQuarantineSequenceGap,        // a sequence number jumps further than the ring holds records
  kQuarantineReasonCount,
};
const char* QuarantineReasonName(uint32_t reason);

struct HostCounters {
  std::atomic<uint64_t> delivered;
  std::atomic<uint64_t> truncated;  // delivered events with a value cut to max_value_bytes
  std::atomic<uint64_t> rejected[kRejectReasonCount];
  std::atomic<uint64_t> quarantined;        // 1 once the host stopped reading this ring
  std::atomic<uint64_t> quarantine_offset;  // data-area offset where it found corruption
  uint64_t reserved[5];
};
static_assert(sizeof(HostCounters) == 128);

struct HostSnapshot {
  std::atomic<uint64_t> counted_through;  // ring position the counters below account up to
  std::atomic<uint64_t> delivered;
  std::atomic<uint64_t> truncated;
  std::atomic<uint64_t> rejected[kRejectReasonCount];
  uint64_t reserved[16 - 3 - kRejectReasonCount];
};
static_assert(sizeof(HostSnapshot) == 128);

struct RingHeader {
  uint64_t magic;
  uint32_t layout_version;
  uint32_t header_bytes;
  uint64_t data_bytes;
  uint32_t max_record_bytes;
  uint32_t ring_slot;
  uint32_t pid;
  uint32_t worker_slot;
  uint64_t start_time;
  uint64_t generation;
  uint64_t created_unix_ns;
  char worker_id[kWorkerIdBytes];
  WorkerCounters worker;
  HostCounters host;
  alignas(kCacheLineBytes) std::atomic<uint64_t> producer;
  alignas(kCacheLineBytes) std::atomic<uint64_t> consumer;
  alignas(kCacheLineBytes) std::atomic<uint64_t> snapshot_count;
  alignas(kCacheLineBytes) HostSnapshot snapshots[2];
};
static_assert(offsetof(RingHeader, data_bytes) == 16);
static_assert(offsetof(RingHeader, max_record_bytes) == 24);
static_assert(offsetof(RingHeader, start_time) == 40);
static_assert(offsetof(RingHeader, created_unix_ns) == 56);
static_assert(offsetof(RingHeader, worker_id) == 64);
static_assert(offsetof(RingHeader, worker) == 128);
static_assert(offsetof(RingHeader, host) == 192);
static_assert(offsetof(RingHeader, producer) == 320);
static_assert(offsetof(RingHeader, consumer) == 384);
static_assert(offsetof(RingHeader, snapshot_count) == 448);
static_assert(offsetof(RingHeader, snapshots) == 512);
static_assert(sizeof(RingHeader) <= kRingHeaderBytes);

struct RecordHeader {
  uint32_t length;
  uint32_t seq;
};
static_assert(sizeof(RecordHeader) == kRecordHeaderBytes);

inline constexpr uint64_t AlignUp8(uint64_t n) { return (n + 7) & ~uint64_t{7}; }
inline constexpr uint64_t RecordBytes(uint64_t payload) { return kRecordHeaderBytes + AlignUp8(payload); }

}  // namespace pitlane::shm
