#include "pitlane/shm.h"

#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <fstream>
#include <algorithm>
#include <atomic>
#include <mutex>
#include <sstream>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

#include "segment_file.h"
#include "shared_mappings.h"

namespace pitlane::shm {

const char* RejectReasonName(uint32_t reason) {
  switch (reason) {
    case kRejectUnknownEvent: return "unknown_event";
    case kRejectBadMeasurementKey: return "bad_measurement_key";
    case kRejectTooManyFields: return "too_many_fields";
    case kRejectKeyTooLong: return "key_too_long";
    case kRejectCorrelationIdTooLong: return "correlation_id_too_long";
    case kRejectMalformed: return "malformed";
    case kRejectLost: return "lost";
    default: return "unknown_reason";
  }
}

const char* QuarantineReasonName(uint32_t reason) {
  switch (reason) {
    case kQuarantineNone: return "none";
    case kQuarantineProducerOutside: return "producer_outside_ring";
    case kQuarantineProducerMisaligned: return "producer_misaligned";
    case kQuarantineSkipPastProducer: return "skip_past_producer";
    case kQuarantineZeroLength: return "zero_length";
    case kQuarantineTooLong: return "too_long";
    case kQuarantineCrossesEnd: return "crosses_end";
    case kQuarantinePastProducer: return "past_producer";
    case kQuarantineSequenceBackwards: return "sequence_backwards";
    case kQuarantineTruncated: return "truncated";
    case kQuarantineSequenceGap: return "sequence_gap";
    default: return "unknown_reason";
  }
}

bool CanPrefetchForWrite() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  // CPUID leaf 0x80000001, ECX bit 8: PRFCHW (PREFETCHW). Asked once per process.
  static const bool has = [] {
    unsigned a, b, c, d;
    return __get_cpuid(0x80000001, &a, &b, &c, &d) != 0 && (c & bit_PRFCHW) != 0;
  }();
  return has;
#else
  return true;
#endif
}

namespace {

// What a quarantine reason means, in the words RingReader::error() reports.
const char* QuarantineMessage(QuarantineReason reason) {
  switch (reason) {
    case kQuarantineProducerOutside: return "producer position is outside the ring";
    case kQuarantineProducerMisaligned: return "producer position is not 8-byte aligned";
    case kQuarantineSkipPastProducer: return "skip marker runs past the producer position";
    case kQuarantineZeroLength: return "record of length 0";
    case kQuarantineTooLong: return "record longer than max_record_bytes";
    case kQuarantineCrossesEnd: return "record crosses the end of the data area";
    case kQuarantinePastProducer: return "record runs past the producer position";
    case kQuarantineSequenceBackwards: return "record sequence number went backwards";
    case kQuarantineTruncated: return "segment was truncated under the reader (SIGBUS)";
    case kQuarantineSequenceGap:
      return "record sequence number jumps further than the ring holds records";
    default: return "unknown quarantine reason";
  }
}

}  // namespace

Status ValidateNamespace(std::string_view ns) {
  if (ns.empty() || ns.size() > 48) {
    return InvalidArgument("namespace \"" + std::string(ns) + "\" must be 1..48 bytes");
  }
  for (char c : ns) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == '-';
    if (!ok) {
      return InvalidArgument("namespace \"" + std::string(ns) +
                             "\" may contain only letters, digits, '.', '_' and '-'");
    }
  }
  return Status::Ok();
}

std::string SegmentPrefix(std::string_view ns) { return "pitlane." + std::string(ns) + "."; }
std::string RegistryName(std::string_view ns) { return "/" + SegmentPrefix(ns) + "registry"; }
std::string RingName(std::string_view ns, pid_t pid, uint32_t slot) {
  return "/" + SegmentPrefix(ns) + "ring." + std::to_string(pid) + "." + std::to_string(slot);
}

uint64_t ProcessStartTime(pid_t pid) {
  char path[64];
  std::snprintf(path, sizeof(path), "/proc/%d/stat", static_cast<int>(pid));
  const int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  char buf[1024];
  const ssize_t n = ::read(fd, buf, sizeof(buf) - 1);
  ::close(fd);
  if (n <= 0) return 0;
  buf[n] = '\0';
  // The command name (field 2) may contain spaces and parentheses: skip to the last ')'.
  const char* p = nullptr;
  for (ssize_t i = n - 1; i >= 0; --i) {
    if (buf[i] == ')') {
      p = buf + i + 1;
      break;
    }
  }
  if (p == nullptr) return 0;
  // After ')': field 3 (state) ... field 22 (starttime) = the 20th token.
  int field = 2;
  while (*p != '\0') {
    while (*p == ' ') ++p;
    ++field;
    if (field == 22) return std::strtoull(p, nullptr, 10);
    while (*p != ' ' && *p != '\0') ++p;
  }
  return 0;
}

bool ProcessAlive(pid_t pid, uint64_t start_time) {
  if (pid <= 0 || start_time == 0 || ProcessStartTime(pid) != start_time) return false;
  // A killed process nobody has reaped yet (a zombie) is dead for our purposes.
  char path[64];
  std::snprintf(path, sizeof(path), "/proc/%d/stat", static_cast<int>(pid));
  const int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  char buf[512];
  const ssize_t n = ::read(fd, buf, sizeof(buf) - 1);
  ::close(fd);
  if (n <= 0) return false;
  buf[n] = '\0';
  const char* paren = std::strrchr(buf, ')');
  return paren != nullptr && paren[1] == ' ' && paren[2] != 'Z' && paren[2] != 'X';
}

size_t MappingsOf(pid_t pid, dev_t dev, ino_t ino, const void* own) {
  if (pid <= 0) return 0;
  const auto skip = pid == ::getpid() ? reinterpret_cast<unsigned long long>(own) : 0;
  char path[64];
  std::snprintf(path, sizeof(path), "/proc/%d/maps", static_cast<int>(pid));
  FILE* f = std::fopen(path, "re");
  if (f == nullptr) return errno != ENOENT && errno != ESRCH ? kUnknownMappings : 0;
  // "7f00-7f01 rw-s 00000000 00:1a 12345   /dev/shm/pitlane.ns.ring.1.0": the device as hex
  // major:minor, then the inode. Lines can be long (paths): read in pieces, parse line starts.
  char line[512];
  size_t mappings = 0;
  bool at_line_start = true;
  while (std::fgets(line, sizeof(line), f) != nullptr) {
    const bool starts = at_line_start;
    at_line_start = std::strchr(line, '\n') != nullptr;
    if (!starts) continue;
    unsigned major_dev = 0, minor_dev = 0;
    unsigned long long start = 0, inode = 0;
    if (std::sscanf(line, "%llx-%*s %*s %*s %x:%x %llu", &start, &major_dev, &minor_dev,
                    &inode) == 4 &&
        inode == ino && major_dev == major(dev) && minor_dev == minor(dev) &&
        (skip == 0 || start != skip)) {
      ++mappings;
    }
  }
  std::fclose(f);
  return mappings;
}

bool MayBeMappedBy(pid_t pid, dev_t dev, ino_t ino, const void* own) {
  return MappingsOf(pid, dev, ino, own) != 0;
}

bool MayBeMappedBy(pid_t pid, const std::string& name) {
  struct stat st;
  if (::lstat(internal::SegmentPath(name).c_str(), &st) != 0) return false;
  return MayBeMappedBy(pid, st.st_dev, st.st_ino);
}

uint64_t UnixNowNs() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

// ─── Segment ─────────────────────────────────────────────────────────────────────────────────

void Segment::Unmap() {
  if (base_ == nullptr) return;
  internal::ForgetMapping(base_);  // before munmap: the range may be reused right after
  ::munmap(base_, size_);
  base_ = nullptr;
  size_ = 0;
}
Segment::~Segment() { Unmap(); }
Segment::Segment(Segment&& o) noexcept
    : base_(o.base_), size_(o.size_), name_(std::move(o.name_)), dev_(o.dev_), ino_(o.ino_) {
  o.base_ = nullptr;
  o.size_ = 0;
}
Segment& Segment::operator=(Segment&& o) noexcept {
  if (this != &o) {
    Unmap();
    base_ = o.base_;
    size_ = o.size_;
    name_ = std::move(o.name_);
    dev_ = o.dev_;
    ino_ = o.ino_;
    o.base_ = nullptr;
    o.size_ = 0;
  }
  return *this;
}

namespace {

std::string Errno(int err) { return std::strerror(err); }

}  // namespace

Result<Segment> Segment::Create(const std::string& name, size_t bytes, bool populate) {
  const std::string path = internal::SegmentPath(name);
  const int fd =
      internal::OpenSegmentFd(path, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_NONBLOCK, 0600);
  if (fd < 0) {
    const int err = errno;
    if (err == EEXIST) return Status(StatusCode::kAlreadyExists, "segment " + name + " exists");
    if (err == EACCES) return PermissionDenied("cannot create segment " + name + ": " + Errno(err));
    return Unavailable("cannot create segment " + name + ": " + Errno(err));
  }
  // open() applies the umask; the mode must be exactly 0600 whatever it is.
  struct stat st;
  if (::fchmod(fd, 0600) != 0 || ::ftruncate(fd, static_cast<off_t>(bytes)) != 0 ||
      ::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    ::unlink(path.c_str());
    return ResourceExhausted("cannot size segment " + name + " to " + std::to_string(bytes) +
                             " bytes: " + Errno(err));
  }
  Result<Segment> s = Map(fd, name, bytes, /*writable=*/true, populate, st);
  if (!s.ok()) ::unlink(path.c_str());
  return s;
}

Result<Segment> Segment::Open(const std::string& name, size_t min_bytes, bool writable,
                              bool populate) {
  Result<internal::SegmentFile> f = internal::OpenSegmentFile(name, writable);
  if (!f.ok()) return f.status();
  const size_t bytes = static_cast<size_t>(f->st.st_size);
  if (bytes == 0) {
    ::close(f->fd);
    return DataLoss("segment " + name + " is empty (0 bytes): half-initialised or truncated");
  }
  if (bytes < min_bytes) {
    ::close(f->fd);
    return DataLoss("segment " + name + " is " + std::to_string(bytes) +
                    " bytes, smaller than the " + std::to_string(min_bytes) +
                    " its layout needs (half-initialised or truncated)");
  }
  return Map(f->fd, name, bytes, writable, populate, f->st);
}

Result<Segment> Segment::Map(int fd, const std::string& name, size_t bytes, bool writable,
                             bool populate, const struct stat& st) {
  void* p = ::mmap(nullptr, bytes, PROT_READ | (writable ? PROT_WRITE : 0),
                   MAP_SHARED | (populate ? MAP_POPULATE : 0), fd, 0);
  const int err = errno;
  ::close(fd);
  if (p == MAP_FAILED) return Unavailable("cannot map segment " + name + ": " + Errno(err));
  // Entered before anyone touches it: a truncation from now on cannot kill this process.
  if (!internal::RegisterMapping(p, bytes)) {
    ::munmap(p, bytes);
    return ResourceExhausted("cannot map segment " + name + ": this process already maps " +
                             std::to_string(internal::kMaxSharedMappings) + " segments");
  }
  Segment s;
  s.base_ = p;
  s.size_ = bytes;
  s.name_ = name;
  s.dev_ = st.st_dev;
  s.ino_ = st.st_ino;
  return s;
}

bool Segment::lost() const { return base_ != nullptr && internal::MappingLost(base_); }

namespace {
// The one truncation probe (Segment and RingReader): touches `last`, the mapping's last byte,
// under the SIGBUS guard. True when someone truncated the file under the mapping at `base`.
bool ProbeTruncated(const void* base, const volatile uint8_t* last) {
  return !Guarded([&] { (void)*last; }) || internal::MappingLost(base);
}
}  // namespace

bool Segment::Truncated() const {
  return base_ != nullptr &&
         ProbeTruncated(base_, static_cast<const uint8_t*>(base_) + size_ - 1);
}

bool Segment::Unlink(const std::string& name) { return ::shm_unlink(name.c_str()) == 0; }

// ─── Ring header ─────────────────────────────────────────────────────────────────────────────

Status ValidateRingHeader(const RingHeader& h, size_t mapped_bytes, std::string_view name) {
  const std::string n(name);
  if (h.magic != kRingMagic) return DataLoss("segment " + n + " is not a pitlane ring (bad magic)");
  if (h.layout_version != kLayoutVersion) {
    return FailedPrecondition("segment " + n + " has layout version " +
                              std::to_string(h.layout_version) + ", this build reads version " +
                              std::to_string(kLayoutVersion));
  }
  const uint64_t d = h.data_bytes;
  if (h.header_bytes != kRingHeaderBytes || d < kMinRingBytes || d > kMaxRingBytes ||
      (d & (d - 1)) != 0) {
    return DataLoss("segment " + n + " has an invalid header (header_bytes " +
                    std::to_string(h.header_bytes) + ", data_bytes " + std::to_string(d) + ")");
  }
  if (h.max_record_bytes < kRecordHeaderBytes + 8 || h.max_record_bytes > d / 4 ||
      (h.max_record_bytes & 7) != 0) {
    return DataLoss("segment " + n + " has an invalid max_record_bytes " +
                    std::to_string(h.max_record_bytes));
  }
  if (mapped_bytes < RingSegmentBytes(d)) {
    return DataLoss("segment " + n + " is " + std::to_string(mapped_bytes) + " bytes, its header " +
                    "claims " + std::to_string(RingSegmentBytes(d)));
  }
  return Status::Ok();
}

void InitRing(void* base, const RingInit& init) {
  auto* h = static_cast<RingHeader*>(base);
  h->layout_version = kLayoutVersion;
  h->header_bytes = kRingHeaderBytes;
  h->data_bytes = init.data_bytes;
  uint64_t max_record = init.data_bytes / 4;
  if (max_record > (64u << 10)) max_record = 64u << 10;
  h->max_record_bytes = static_cast<uint32_t>(max_record);
  h->ring_slot = init.ring_slot;
  h->pid = static_cast<uint32_t>(init.pid);
  h->worker_slot = init.worker_slot;
  h->start_time = init.start_time;
  h->generation = init.generation;
  h->created_unix_ns = UnixNowNs();
  std::memset(h->worker_id, 0, sizeof(h->worker_id));
  std::memcpy(h->worker_id, init.worker_id.data(),
              std::min<size_t>(init.worker_id.size(), kWorkerIdBytes - 1));
  h->producer.store(init.initial_position, std::memory_order_relaxed);
  h->consumer.store(init.initial_position, std::memory_order_relaxed);
  // Release pairs with the host's acquire load of the magic in RingReader::Attach.
  std::atomic_ref<uint64_t>(h->magic).store(kRingMagic, std::memory_order_release);
}

// ─── SIGBUS guard ────────────────────────────────────────────────────────────────────────────
// A worker may ftruncate its segment while the host reads it (tmpfs segments cannot be sealed,
// and whoever can open one read-write can resize it). Touching a page past the new end raises
// SIGBUS. The host touches mappings only inside a guard: sigsetjmp(env, 0) (no syscall: the
// signal mask is not saved) and a process-wide SIGBUS handler installed with SA_NODEFER that
// siglongjmps back when the faulting thread has a guard armed, and otherwise restores the
// default action and re-raises.

namespace {

thread_local sigjmp_buf* t_guard = nullptr;
struct sigaction g_previous_sigbus;

void OnSigbus(int sig, siginfo_t* info, void* ctx) {
  // A fault inside one of our segment mappings: someone truncated the file. The mapping now
  // holds private zeros (shared_mappings.h), so returning retries the access harmlessly.
  const bool rescued = internal::RescueFault(info->si_addr);
  if (t_guard != nullptr) {
    sigjmp_buf* env = t_guard;
    t_guard = nullptr;
    siglongjmp(*env, 1);
  }
  if (rescued) return;
  if (g_previous_sigbus.sa_flags & SA_SIGINFO) {
    if (g_previous_sigbus.sa_sigaction != nullptr) {
      g_previous_sigbus.sa_sigaction(sig, info, ctx);
      return;
    }
  } else if (g_previous_sigbus.sa_handler != SIG_DFL && g_previous_sigbus.sa_handler != SIG_IGN) {
    g_previous_sigbus.sa_handler(sig);
    return;
  }
  signal(SIGBUS, SIG_DFL);
  raise(SIGBUS);
}

}  // namespace

void internal::InstallSigbusHandler() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction sa;
    std::memset(&sa, 0, sizeof(sa));
    sa.sa_sigaction = OnSigbus;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGBUS, &sa, &g_previous_sigbus);
  });
}

__attribute__((noinline)) bool RunGuarded(void (*fn)(void*), void* arg) {
  internal::InstallSigbusHandler();
  sigjmp_buf env;
  if (sigsetjmp(env, 0) != 0) return false;  // t_guard already cleared by the handler
  t_guard = &env;
  fn(arg);
  t_guard = nullptr;
  return true;
}

// ─── RingReader ──────────────────────────────────────────────────────────────────────────────

namespace {

// Why a previous host's snapshot (position and counts `k`) cannot be true of the ring whose
// positions and published count are given; empty when it can.
std::string SnapshotContradiction(const RingReader& r, uint64_t consumer, uint64_t producer,
                                  uint64_t snapshot_position, uint64_t published,
                                  const Tally& k) {
  // Untrusted like everything in the segment: the snapshot's position must lie between the
  // consumer and the producer (it is ahead of the consumer only when the previous host died
  // between the two stores).
  const uint64_t ahead = snapshot_position - consumer;
  if (ahead > producer - consumer || ahead > r.capacity() || (ahead & 7) != 0) {
    return "its host snapshot is at position " + std::to_string(snapshot_position) +
           ", outside [consumer " + std::to_string(consumer) + ", producer " +
           std::to_string(producer) + "]";
  }
  // Nor may its counts break the law against the ring: records accounted for cannot exceed
  // what the writer published (+1: a writer killed between publishing a record and counting
  // it), and what it published beyond them must fit between the snapshot and the producer.
  const uint64_t seen = k.delivered + k.rejected_total();
  const uint64_t room = (producer - snapshot_position) / RecordBytes(1);
  if (k.truncated > k.delivered || seen > published + 1 ||
      (published > seen && published - seen > room)) {
    return "its host snapshot's counts (" + std::to_string(k.delivered) + " delivered, " +
           std::to_string(k.rejected_total()) + " rejected) contradict the " +
           std::to_string(published) + " records its writer published";
  }
  return "";
}

}  // namespace

Result<RingReader> RingReader::Attach(void* base, size_t mapped_bytes, std::string name) {
  if (mapped_bytes < sizeof(RingHeader)) {
    return DataLoss("segment " + name + " is " + std::to_string(mapped_bytes) +
                    " bytes, too small for a ring header");
  }
  RingReader r;
  r.h_ = static_cast<RingHeader*>(base);
  r.name_ = std::move(name);
  RingHeader copy;
  uint64_t consumer = 0, producer = 0, snapshot_position = 0, snapshot_count = 0, published = 0;
  HostSnapshot* snapshot = nullptr;
  RingHeader* h = r.h_;
  Tally& k = r.counts_;
  const bool ok = Guarded([&] {
    // Acquire pairs with the release store of the magic in InitRing.
    copy.magic = std::atomic_ref<uint64_t>(h->magic).load(std::memory_order_acquire);
    copy.layout_version = h->layout_version;
    copy.header_bytes = h->header_bytes;
    copy.data_bytes = h->data_bytes;
    copy.max_record_bytes = h->max_record_bytes;
    consumer = h->consumer.load(std::memory_order_acquire);
    // A restarted host resumes where the previous one stopped, from its last complete snapshot
    // (shm_layout.h): the position and the counts that go with it. Acquire pairs with the
    // release store of snapshot_count in Publish.
    snapshot_count = h->snapshot_count.load(std::memory_order_acquire);
    if (snapshot_count != 0) {
      snapshot = &h->snapshots[(snapshot_count - 1) & 1];
      snapshot_position = snapshot->counted_through.load(std::memory_order_relaxed);
      k.delivered = snapshot->delivered.load(std::memory_order_relaxed);
      k.truncated = snapshot->truncated.load(std::memory_order_relaxed);
      for (uint32_t i = 0; i < kRejectReasonCount; ++i) {
        k.rejected[i] = snapshot->rejected[i].load(std::memory_order_relaxed);
      }
    }
    producer = h->producer.load(std::memory_order_acquire);
    published = h->worker.published.load(std::memory_order_relaxed);
  });
  if (!ok) return DataLoss("segment " + r.name_ + " was truncated while attaching");
  if (Status s = ValidateRingHeader(copy, mapped_bytes, r.name_); !s.ok()) return s;
  r.data_ = static_cast<const uint8_t*>(base) + kRingHeaderBytes;
  r.capacity_ = copy.data_bytes;
  r.mask_ = r.capacity_ - 1;
  r.max_record_ = copy.max_record_bytes;
  r.rpos_ = consumer;
  if (snapshot != nullptr) {
    if (std::string why = SnapshotContradiction(r, consumer, producer, snapshot_position,
                                                published, k);
        why.empty()) {
      r.rpos_ = snapshot_position;
    } else {
      // Not adopted: what this host counts starts here, so the ring's law cannot be checked.
      r.snapshot_refused_ = std::move(why);
      k = Tally{};
      r.resync_ = true;
    }
  }
  r.snapshot_count_ = snapshot_count;
  // The sequence expected next is the number of records accounted for.
  r.expected_seq_ = static_cast<uint32_t>(k.delivered + k.rejected_total());
  if ((r.rpos_ & 7) != 0) {
    return DataLoss("segment " + r.name_ + " has a misaligned consumer position " +
                    std::to_string(r.rpos_));
  }
  return r;
}

void RingReader::Quarantine(QuarantineReason reason, uint64_t offset) {
  // Another thread's fault replaced the mapping with zeros: what looked corrupt is the
  // truncation.
  if (internal::MappingLost(h_)) reason = kQuarantineTruncated;
  state_ = reason == kQuarantineTruncated ? State::kBusError : State::kCorrupt;
  reason_ = reason;
  error_offset_ = offset;
  error_ = QuarantineMessage(reason);
}

namespace {

// What the reader may do with the header at ring offset `off`, `unread` bytes before the
// producer position: a skip marker moves the read position `advance` bytes to the start of the
// data area; a record is `advance` bytes long and follows `gap` sequence numbers nobody will
// deliver (lost). `fault` says why neither holds.
struct RecordStep {
  QuarantineReason fault = kQuarantineNone;
  bool skip = false;
  uint64_t advance = 0;
  uint32_t gap = 0;
};

inline RecordStep CheckRecordHeader(const RecordHeader& hdr, uint64_t off, uint64_t unread,
                                    uint32_t expected_seq, uint64_t capacity,
                                    uint32_t max_record) {
  RecordStep s;
  if (hdr.length == kSkipMarker) {
    s.skip = true;
    s.advance = capacity - off;
    if (s.advance > unread) s.fault = kQuarantineSkipPastProducer;
    return s;
  }
  s.advance = RecordBytes(hdr.length);
  s.gap = hdr.seq - expected_seq;
  if (hdr.length == 0) {
    s.fault = kQuarantineZeroLength;
  } else if (s.advance > max_record) {
    s.fault = kQuarantineTooLong;
  } else if (off + s.advance > capacity) {
    s.fault = kQuarantineCrossesEnd;
  } else if (s.advance > unread) {
    s.fault = kQuarantinePastProducer;
  } else if (s.gap >= 0x80000000u) {
    s.fault = kQuarantineSequenceBackwards;
  } else if (s.gap > capacity / RecordBytes(1)) {
    // At most capacity / 16 records are ever published and unread at once, so a larger gap
    // is corruption, not loss (it would count billions of events as lost).
    s.fault = kQuarantineSequenceGap;
  }
  return s;
}

}  // namespace

size_t RingReader::ReadBatch(size_t max_records, RecordBatch* out, ReadHold hold) {
  out->records = {};
  out->lost = 0;
  out->producer = rpos_;
  out->held = false;
  if (state_ != State::kOk) return 0;
  // Room for at least one record of the largest size; a batch ends when the next record does
  // not fit (allocates only the first time a ring with larger records is read).
  const size_t room = std::max<size_t>(64 << 10, max_record_);
  if (out->bytes.size() < room) out->bytes.resize(room);
  if (out->storage.size() < max_records) out->storage.resize(max_records);

  // Everything the guarded copy needs, as plain locals: it touches the mapping only to copy
  // out, and on SIGBUS leaves with what it has copied so far.
  RingHeader* const h = h_;
  const uint8_t* const data = data_;
  const uint64_t capacity = capacity_, mask = mask_;
  const uint32_t max_record = max_record_;
  uint64_t rp = rpos_;
  uint32_t expected = expected_seq_;
  bool resync = resync_;
  uint8_t* const dst = out->bytes.data();
  const size_t dst_size = out->bytes.size();
  RecordBatch::Record* const records = out->storage.data();
  size_t used = 0, n = 0;
  uint64_t lost = 0;
  uint64_t seen = rp;
  bool held = false;
  QuarantineReason fault = kQuarantineNone;

  const bool ok = Guarded([&] {
    // Acquire pairs with the worker's release store in RingWriter::Commit.
    const uint64_t wp = h->producer.load(std::memory_order_acquire);
    seen = wp;
    const uint64_t avail = wp - rp;
    if (avail > capacity) return void(fault = kQuarantineProducerOutside);
    if ((avail & 7) != 0) return void(fault = kQuarantineProducerMisaligned);
    if (wp != hold.unless_producer_at && avail != 0 && avail < hold.min_bytes) {
      return void(held = true);
    }
    if (resync && rp != wp) {
      // The first read after a refused snapshot: the sequence goes on from the first record
      // found (past a skip marker, the one at the start of the data area, once written).
      const uint64_t off = rp & mask;
      RecordHeader first;
      std::memcpy(&first, data + off, sizeof(first));
      if (first.length == kSkipMarker && capacity - off < wp - rp) {
        std::memcpy(&first, data, sizeof(first));
      }
      if (first.length != kSkipMarker) {
        expected = first.seq;
        resync = false;
      }
    }
    uint64_t asked = rp;  // lines before it were asked for (ring_prefetch.h)
    while (rp != wp && n < max_records) {
      const uint64_t ahead = std::min(wp - rp, kReadAheadBytes);
      PrefetchRingLines<For::kRead>(data, mask, asked, rp + ahead);
      asked = rp + ahead;
      const uint64_t off = rp & mask;
      RecordHeader hdr;
      std::memcpy(&hdr, data + off, sizeof(hdr));  // copy once, never re-read
      const RecordStep step = CheckRecordHeader(hdr, off, wp - rp, expected, capacity, max_record);
      if (step.fault != kQuarantineNone) return void(fault = step.fault);
      if (!step.skip) {
        const size_t padded = AlignUp8(hdr.length);
        if (used + padded > dst_size) return;  // the batch is full: the rest waits
        std::memcpy(dst + used, data + off + kRecordHeaderBytes, hdr.length);
        records[n++] = {static_cast<uint32_t>(used), hdr.length, hdr.seq, step.gap};
        used += padded;
        lost += step.gap;
        expected = hdr.seq + 1;
      }
      rp += step.advance;
      // A SIGBUS leaves through siglongjmp from one of the loads from the mapping above: keep
      // the compiler from holding this record's progress in registers past the next such load,
      // so what the guard returns with is exactly the records copied whole.
      std::atomic_signal_fence(std::memory_order_seq_cst);
    }
  });
  out->producer = seen;
  out->held = held;
  // Everything copied before a fault or a bad header is whole and stays readable.
  rpos_ = rp;
  expected_seq_ = expected;
  resync_ = resync;
  out->records = std::span<const RecordBatch::Record>(records, n);
  out->lost = lost;
  counts_.rejected[kRejectLost] += lost;
  if (!ok) {
    Quarantine(kQuarantineTruncated, rp & mask_);
  } else if (fault != kQuarantineNone) {
    Quarantine(fault, rp & mask_);
  }
  return n;
}

void RingReader::Publish() {
  RingHeader* const h = h_;
  const Tally& c = counts_;
  const bool live = state_ == State::kOk;
  const uint64_t rpos = rpos_, error_offset = error_offset_;
  uint64_t snapshots = snapshot_count_;
  const bool ok = Guarded([&] {
    if (live) {
      // The snapshot a successor resumes from: the slot not written last, then the count.
      HostSnapshot& s = h->snapshots[snapshots & 1];
      s.counted_through.store(rpos, std::memory_order_relaxed);
      s.delivered.store(c.delivered, std::memory_order_relaxed);
      s.truncated.store(c.truncated, std::memory_order_relaxed);
      for (uint32_t i = 0; i < kRejectReasonCount; ++i) {
        s.rejected[i].store(c.rejected[i], std::memory_order_relaxed);
      }
      // Release pairs with the acquire load of snapshot_count in Attach.
      h->snapshot_count.store(snapshots + 1, std::memory_order_release);
      ++snapshots;
    }
    HostCounters& hc = h->host;
    hc.delivered.store(c.delivered, std::memory_order_relaxed);
    hc.truncated.store(c.truncated, std::memory_order_relaxed);
    for (uint32_t i = 0; i < kRejectReasonCount; ++i) {
      hc.rejected[i].store(c.rejected[i], std::memory_order_relaxed);
    }
    if (!live) {
      hc.quarantine_offset.store(error_offset, std::memory_order_relaxed);
      hc.quarantined.store(1, std::memory_order_relaxed);
    }
    // Release pairs with the worker's acquire load of `consumer` in TryReserve: the bytes
    // before rpos have been copied out and may be overwritten.
    if (live) h->consumer.store(rpos, std::memory_order_release);
  });
  snapshot_count_ = snapshots;
  if (!ok && state_ == State::kOk) {
    Quarantine(kQuarantineTruncated, rpos_ & mask_);
  }
}

uint64_t RingReader::LoadProducerUntrusted() const {
  uint64_t v = rpos_;
  const RingHeader* h = h_;
  Guarded([&] { v = h->producer.load(std::memory_order_acquire); });
  return v;
}

void RingReader::CheckTruncated() {
  if (state_ != State::kOk) return;
  if (ProbeTruncated(h_, data_ + capacity_ - 1)) {
    Quarantine(kQuarantineTruncated, rpos_ & mask_);
  }
}

bool RingReader::HasUnreadUntrusted() const {
  return state_ == State::kOk && LoadProducerUntrusted() != rpos_;
}

}  // namespace pitlane::shm
