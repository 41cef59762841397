// pitlane::shm — POSIX shared-memory segments and the SPSC byte ring over them.
//
// The layout is specified in shm_layout.h. This header has the three halves that touch it:
//  - Segment: create (0600, O_EXCL) / open / unlink a named mapping, with errors that name the
//    segment, its owner and its mode;
//  - RingWriter: the worker's half. One writer thread; never blocks, never allocates, makes no
//    syscall;
//  - RingReader: the host's half, a pull reader. Trusts nothing in the mapping: copies
//    positions and headers before use, bounds-checks every offset, copies a batch of payloads
//    out under one SIGBUS guard (a worker may ftruncate its segment at any time) and hands only
//    the copy on.
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "pitlane/accounting.h"
#include "pitlane/ring_prefetch.h"
#include "pitlane/shm_layout.h"
#include "pitlane/status.h"

namespace pitlane::shm {

// Ok when `ns` is usable in segment names: [A-Za-z0-9._-], 1..48 bytes.
Status ValidateNamespace(std::string_view ns);
std::string RegistryName(std::string_view ns);                         // "/pitlane.<ns>.registry"
std::string RingName(std::string_view ns, pid_t pid, uint32_t slot);  // "/pitlane.<ns>.ring.<pid>.<slot>"
std::string SegmentPrefix(std::string_view ns);                        // "pitlane.<ns>." (in /dev/shm)

// /proc/<pid>/stat field 22 (clock ticks since boot at which the process started); 0 if the
// process does not exist. With the pid it identifies a process robustly against pid reuse.
uint64_t ProcessStartTime(pid_t pid);
// True when `pid` runs and started at `start_time`.
bool ProcessAlive(pid_t pid, uint64_t start_time);
// Whether process `pid` may still have the file (`dev`, `ino`) mapped: true when
// /proc/<pid>/maps lists it, or exists but cannot be read (then nobody can tell); false when
// the process is gone or lists no mapping of it. The kernel's word, not a word in shared
// memory: a worker unmaps a ring when it retires it, so a ring its process still maps may
// still be written. When `pid` is the calling process (host and worker in one process), the
// mapping that starts at `own` (the caller's reader) does not count. REQUIRES: the caller
// knows `pid` is still the process it means (a pidfd).
bool MayBeMappedBy(pid_t pid, dev_t dev, ino_t ino, const void* own = nullptr);
// How many mappings of the file (`dev`, `ino`) process `pid` has, on the same terms (the one
// at `own` not counted); kUnknownMappings when /proc/<pid>/maps exists but cannot be read.
inline constexpr size_t kUnknownMappings = ~size_t{0};
size_t MappingsOf(pid_t pid, dev_t dev, ino_t ino, const void* own = nullptr);
// The same for the file segment `name` refers to now (false when there is none).
bool MayBeMappedBy(pid_t pid, const std::string& name);
uint64_t UnixNowNs();

// An owned shared-memory mapping. Movable, not copyable; unmaps on destruction (it never
// unlinks: call Unlink with the name).
class Segment {
 public:
  Segment() = default;
  ~Segment();
  Segment(Segment&& o) noexcept;
  Segment& operator=(Segment&& o) noexcept;
  Segment(const Segment&) = delete;
  Segment& operator=(const Segment&) = delete;

  // Creates `name` exclusively with mode 0600 (whatever the umask) and `bytes` of zeros.
  // `populate` maps every page up front (MAP_POPULATE), so the first lap of a ring takes no
  // page fault on the emit or read path; the sparse registry is not populated.
  static Result<Segment> Create(const std::string& name, size_t bytes, bool populate = false);
  // Maps an existing segment read-write (or read-only), after the adoption checks of
  // segment_file.h (no symlink followed, never blocking, a regular 0600 file of the effective
  // uid). Errors name the segment, its owner and mode when refused, and its size when it is
  // smaller than `min_bytes`.
  static Result<Segment> Open(const std::string& name, size_t min_bytes, bool writable = true,
                              bool populate = false);
  static bool Unlink(const std::string& name);

  void* base() const { return base_; }
  size_t size() const { return size_; }
  const std::string& name() const { return name_; }
  bool valid() const { return base_ != nullptr; }
  // The file's identity when it was opened: one file is mapped at most once by the host.
  dev_t dev() const { return dev_; }
  ino_t ino() const { return ino_; }
  // True once someone truncated the file under this mapping: it now holds private zeros
  // (see "Threat model" in README.md), and what it shows is no longer the segment.
  bool lost() const;
  // Touches the mapping's last byte: true when someone truncated the file under it (lost() is
  // true from then on). lost() alone notices only once an access happened to fault.
  bool Truncated() const;

 private:
  static Result<Segment> Map(int fd, const std::string& name, size_t bytes, bool writable,
                             bool populate, const struct stat& st);
  void Unmap();

  void* base_ = nullptr;
  size_t size_ = 0;
  std::string name_;
  dev_t dev_ = 0;
  ino_t ino_ = 0;
};

// Checks the identity fields of a ring header copy: magic, layout version (the message names
// both versions), sizes. `mapped_bytes` is the size of the mapping holding it.
Status ValidateRingHeader(const RingHeader& copy, size_t mapped_bytes, std::string_view name);

// Initialises a freshly created ring mapping. Positions start at `initial_position` (a multiple
// of 8; tests start near 2^64 to force position wrap-around). Writes the magic last (release).
struct RingInit {
  uint64_t data_bytes = kDefaultRingBytes;
  uint32_t ring_slot = 0;
  uint32_t worker_slot = 0;
  pid_t pid = 0;
  uint64_t start_time = 0;
  uint64_t generation = 0;
  std::string_view worker_id;
  uint64_t initial_position = 0;
};
void InitRing(void* base, const RingInit& init);
inline size_t RingSegmentBytes(uint64_t data_bytes) { return kRingHeaderBytes + data_bytes; }

// The worker's half of one ring. One writer thread at a time; counters may be read by anyone.
class RingWriter {
 public:
  enum class Reserve : uint8_t { kOk, kFull, kTooLarge };

  RingWriter() = default;
  // REQUIRES: `base` maps an initialised ring of RingSegmentBytes(data_bytes) bytes.
  explicit RingWriter(void* base)
      : h_(static_cast<RingHeader*>(base)),
        data_(static_cast<uint8_t*>(base) + kRingHeaderBytes),
        capacity_(h_->data_bytes),
        mask_(h_->data_bytes - 1),
        max_record_(h_->max_record_bytes),
        wpos_(h_->producer.load(std::memory_order_relaxed)),
        cached_rpos_(h_->consumer.load(std::memory_order_acquire)),
        seq_(static_cast<uint32_t>(h_->worker.published.load(std::memory_order_relaxed))),
        ahead_(CanPrefetchForWrite() ? std::min(kWriteAheadBytes, capacity_ / 4) : 0) {}

  // Reserves room for a record of `payload` bytes and returns where to write it (8-aligned,
  // zero-padded to 8), or nullptr with *why set. Nothing is visible to the host until Commit().
  uint8_t* TryReserve(uint32_t payload, Reserve* why) noexcept {
    const uint64_t rec = RecordBytes(payload);
    if (rec > max_record_) [[unlikely]] {
      *why = Reserve::kTooLarge;
      return nullptr;
    }
    const uint64_t off = wpos_ & mask_;
    const uint64_t contig = capacity_ - off;
    const uint64_t pad = rec > contig ? contig : 0;
    const uint64_t need = pad + rec;
    if (wpos_ + need - cached_rpos_ > capacity_) {
      // Acquire pairs with the host's release store of `consumer` after it copied the records.
      cached_rpos_ = h_->consumer.load(std::memory_order_acquire);
      if (wpos_ + need - cached_rpos_ > capacity_) {
        *why = Reserve::kFull;
        return nullptr;
      }
    }
    if (pad != 0) {
      const RecordHeader skip{kSkipMarker, 0};
      std::memcpy(data_ + off, &skip, sizeof(skip));
    }
    pending_off_ = (wpos_ + pad) & mask_;
    pending_next_ = wpos_ + need;
    pending_len_ = payload;
    uint8_t* payload_at = data_ + pending_off_ + kRecordHeaderBytes;
    std::memset(payload_at + AlignUp8(payload) - 8, 0, 8);  // zero the padding
    *why = Reserve::kOk;
    return payload_at;
  }

  // Publishes the reserved record. REQUIRES: the last TryReserve returned non-null.
  void Commit() noexcept {
    const RecordHeader hdr{pending_len_, seq_++};
    std::memcpy(data_ + pending_off_, &hdr, sizeof(hdr));
    // Release pairs with the host's acquire load of `producer`: the record is complete.
    h_->producer.store(pending_next_, std::memory_order_release);
    // Counted after the store: a writer killed in between leaves `published` one short of what
    // the host read, which the host reconciles (it holds the record's sequence number); counted
    // before, a record that never became visible would look published and lost.
    Bump(h_->worker.published);
    const uint64_t before = wpos_;
    wpos_ = pending_next_;
    WriteAhead(before);
  }

  WorkerCounters& counters() { return h_->worker; }
  RingHeader* header() const { return h_; }
  // The producer position after the last committed record.
  uint64_t position() const { return wpos_; }
  // Whether the host has read every record before producer position `pos` (positions wrap).
  bool ReadUpTo(uint64_t pos) const {
    // Acquire pairs with the host's release store of `consumer` after it copied the records.
    return static_cast<int64_t>(h_->consumer.load(std::memory_order_acquire) - pos) >= 0;
  }

  // Single-writer counter increment: a relaxed load and store, no read-modify-write.
  static void Bump(std::atomic<uint64_t>& c) noexcept {
    c.store(c.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  }

 private:
  // Asks for the lines that came within ahead_ bytes of the producer position since it was at
  // `before` (ring_prefetch.h says why).
  void WriteAhead(uint64_t before) noexcept {
    if (ahead_ != 0) PrefetchRingLines<For::kWrite>(data_, mask_, before + ahead_, wpos_ + ahead_);
  }

  RingHeader* h_ = nullptr;
  uint8_t* data_ = nullptr;
  uint64_t capacity_ = 0;
  uint64_t mask_ = 0;
  uint32_t max_record_ = 0;
  uint64_t wpos_ = 0;
  uint64_t cached_rpos_ = 0;
  uint32_t seq_ = 0;
  uint64_t pending_off_ = 0;
  uint64_t pending_next_ = 0;
  uint32_t pending_len_ = 0;
  uint64_t ahead_ = 0;  // 0: no write-ahead
};

// Runs `fn` with SIGBUS turned into a `false` return instead of death, for touching a mapping
// someone may truncate under us. Not reentrant; one guard per thread at a time. `fn` must not
// own anything that needs a destructor (a SIGBUS leaves it by siglongjmp) and must not call out
// into code that does: copy out under the guard, then work on the copy.
bool RunGuarded(void (*fn)(void*), void* arg);
template <class F>
bool Guarded(F&& fn) {
  using Fn = std::remove_reference_t<F>;
  return RunGuarded([](void* p) { (*static_cast<Fn*>(p))(); }, &fn);
}

// Records copied out of a ring by RingReader::ReadBatch: host memory, untouched by any worker.
struct RecordBatch {
  struct Record {
    uint32_t offset = 0;  // into `bytes`, 8-aligned
    uint32_t length = 0;  // payload bytes
    uint32_t seq = 0;     // the record's sequence number
    uint32_t lost_before = 0;  // records missing (sequence gap) just before this one
  };
  std::vector<uint8_t> bytes;
  std::span<const Record> records;  // this batch's records, in `storage`
  uint64_t lost = 0;  // sum of lost_before
  // The (untrusted) producer position ReadBatch saw, and whether it read nothing because of
  // its `hold` (ReadHold).
  uint64_t producer = 0;
  bool held = false;
  // Grown once to the largest batch asked for and never shrunk or re-filled: resizing it per
  // batch zeroed up to 4 KiB per pass (14 % of the busy-poll host's time, perf).
  std::vector<Record> storage;

  const uint8_t* payload(const Record& r) const { return bytes.data() + r.offset; }
};

// For RingReader::ReadBatch: read nothing while the writer is still writing and little is
// waiting, i.e. when the producer position is not `unless_producer_at` (it moved since the
// caller last looked) and fewer than `min_bytes` are unread. {}: no hold.
struct ReadHold {
  uint64_t unless_producer_at = 0;
  uint64_t min_bytes = 0;
};

// The host's half of one ring: a pull reader in the manner of a log reader. One reader thread.
// ReadBatch copies a batch of records out of the mapping under one SIGBUS guard, checking
// every position and header it copies; the caller decodes and counts them in plain code, then
// Publish releases the space to the writer and mirrors the host's counts into the segment.
// Nothing read from the mapping is re-read after it was validated. The host-side counts
// (delivered, truncated, rejected) live in this object, in host memory: they are the authority,
// the segment holds a mirror.
class RingReader {
 public:
  enum class State : uint8_t { kOk, kCorrupt, kBusError };

  // Validates the header (identity fields are copied once here and never re-read). A host
  // snapshot left by a previous host is resumed from when it agrees with the ring; one that
  // contradicts it is not adopted: the reader then starts at the consumer position with counts
  // of zero and the sequence of the first record it finds (snapshot_refused() says why).
  static Result<RingReader> Attach(void* base, size_t mapped_bytes, std::string name);

  // Replaces `out`'s records with up to `max_records` published records (skip markers are
  // consumed silently), unless `hold` applies (then out->held, nothing read). Sequence gaps are
  // counted as rejected (lost) here. On corruption or SIGBUS the ring is quarantined (state()
  // says why) and the records before the bad one are still returned. Returns the number of
  // records; out->producer is the producer position it saw.
  size_t ReadBatch(size_t max_records, RecordBatch* out, ReadHold hold = {});
  // Makes the space of everything read so far writable again (release) and mirrors the host
  // counts and a resumable snapshot into the segment. Call after counting a batch.
  void Publish();

  // Touches the last byte of the data area (guarded): a segment truncated under the reader is
  // quarantined now, not only once a record reaches the missing pages (a writer whose ring
  // was truncated writes into private zeros, so its records never would).
  void CheckTruncated();

  State state() const { return state_; }
  QuarantineReason quarantine_reason() const { return reason_; }
  const std::string& error() const { return error_; }
  // Why the previous host's snapshot was not adopted; empty when it was (or there was none).
  const std::string& snapshot_refused() const { return snapshot_refused_; }
  uint64_t error_offset() const { return error_offset_; }
  const std::string& name() const { return name_; }
  uint64_t capacity() const { return capacity_; }
  uint64_t consumer() const { return rpos_; }
  RingHeader* header() const { return h_; }
  // Untrusted snapshot of the worker-written producer position (guarded; rpos on SIGBUS).
  uint64_t LoadProducerUntrusted() const;
  bool HasUnreadUntrusted() const;

  // The host-side counts (poll thread); Publish() mirrors them.
  Tally& counts() { return counts_; }
  const Tally& counts() const { return counts_; }

 private:
  RingReader() = default;
  void Quarantine(QuarantineReason reason, uint64_t offset);

  RingHeader* h_ = nullptr;
  const uint8_t* data_ = nullptr;
  std::string name_;
  uint64_t capacity_ = 0;
  uint64_t mask_ = 0;
  uint32_t max_record_ = 0;
  uint64_t rpos_ = 0;
  uint32_t expected_seq_ = 0;
  bool resync_ = false;  // the next record read sets expected_seq_ (a refused snapshot)
  std::string snapshot_refused_;
  uint64_t snapshot_count_ = 0;  // HostSnapshots written (ours and our predecessors')
  State state_ = State::kOk;
  QuarantineReason reason_ = kQuarantineNone;
  std::string error_;
  uint64_t error_offset_ = 0;
  Tally counts_;  // host side only
};

}  // namespace pitlane::shm
