// libFuzzer target: the host's read path (shm::RingReader, then the record verification and
// catalog fold the host runs on every payload) over a ring segment whose header, positions and
// data area come from the fuzz input; and, in registry mode, the readers of a namespace registry
// and its slot tables. Whatever the input, the reader must not crash, hang or read out of
// bounds (ASan/UBSan), and must hand the sink only payloads that fit a record.
//
// Build and run: tests/fuzz/run.sh [SECONDS] [--corpus DIR] (README "Testing").
//
// Input layout (missing bytes read as zero):
//   byte 0        mode (bits 0-1) and data-area size (bits 2-3: 4, 8, 16 or 64 KiB)
//   mode 0 "raw": the segment as a worker could leave it
//     byte 1      which header fields to take from the input instead of a valid InitRing
//                 (bit 0 magic, 1 layout_version, 2 header_bytes, 3 data_bytes,
//                 4 max_record_bytes, 5 host counters)
//     +8 each     magic, data_bytes, max_record_bytes|layout_version, header_bytes|-,
//                 delivered, rejected[kRejectLost] (the sequence the reader expects next)
//     +8          consumer position, +8 producer - consumer
//     rest        data area, repeated to fill it
//   mode 1 "records": valid record headers written by RingWriter, hostile payloads
//     +8          initial position (aligned down to 8; near 2^64 is fine)
//     repeated    uint16 length, then that many payload bytes (a fuzzed FlatBuffer)
//   mode 2 "mutated": a valid event record with byte edits, so the Verifier sees almost-valid
//     FlatBuffers (bad vtable offsets, vector lengths, missing NULs) far more often
//     repeated    uint16 offset, uint8 xor, uint8 op (op bit 0: also write 0xFF.. as a
//                 uint32 length at that offset)
//   mode 3 as mode 1, then garbage bytes spliced over the producer position and one header
//   byte 0 bits 6 and 7 both set, "registry": the namespace registry and its slot tables as any process of the
//     user could leave them, read by what reads a registry from outside its host (the
//     inspector behind host start, `pitlane stat` and `pitlane cleanup`) and by a host adopting
//     it. The inspector must return bounded rows; nothing may crash, hang or read out of bounds.
//     byte 1      bit 0: keep the identity fields valid (magic, version, geometry, catalog hash)
//     +256        the registry header (identity fields overwritten when bit 0 is set)
//     repeated    uint8 kind (bit 0: ring slot, else worker slot), uint16 index, uint8 n, then
//                 n bytes over the start of that slot (state, pid, start time, generation,
//                 names, counters, control block)
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <string>

#include "../../host/src/fold.h"
#include "pitlane/catalog.h"
#include "pitlane/record.h"
#include "pitlane/registry.h"
#include "pitlane/shm.h"
#include "pitlane/shm_inspect.h"
#include "../ring_drain.h"

namespace {

using namespace pitlane;
using namespace pitlane::shm;

constexpr uint64_t kSizes[4] = {4096, 8192, 16384, 65536};
constexpr size_t kMaxSegment = kRingHeaderBytes + 65536;

class Input {
 public:
  Input(const uint8_t* d, size_t n) : d_(d), n_(n) {}
  uint64_t U64() { return Take(8); }
  uint32_t U32() { return static_cast<uint32_t>(Take(4)); }
  uint16_t U16() { return static_cast<uint16_t>(Take(2)); }
  uint8_t U8() { return static_cast<uint8_t>(Take(1)); }
  size_t left() const { return n_ - pos_; }
  const uint8_t* rest() const { return d_ + pos_; }
  void Skip(size_t k) { pos_ += k < left() ? k : left(); }

 private:
  uint64_t Take(size_t k) {
    uint64_t v = 0;
    const size_t m = k < left() ? k : left();
    std::memcpy(&v, d_ + pos_, m);
    pos_ += m;
    return v;
  }
  const uint8_t* d_;
  size_t n_;
  size_t pos_ = 0;
};

struct Globals {
  std::shared_ptr<const Catalog> catalog = Catalog::Default();
  internal::TimeConverter time;  // calibrates once (a 2 ms sleep): not per input
  internal::RecordDecoder decoder;
  internal::Folder folder{*catalog};
  uint8_t* segment = static_cast<uint8_t*>(std::aligned_alloc(4096, kMaxSegment));
  uint8_t valid_record[512];
  size_t valid_size = 0;

  Globals() {
    const Measurement m[] = {{"system_time", int64_t{12345}}, {"duration", 2.5}};
    const Metadata md[] = {{"command", "predict"}, {"unknown_key", "v"}};
    RecordFields f;
    f.name = "python.call.start";
    f.timestamp = 1700000000000000000ull;
    f.correlation_id = "corr-1";
    f.measurements = m;
    f.measurement_count = 2;
    f.metadata = md;
    f.metadata_count = 2;
    PreparedRecord p;
    PrepareRecord(f, catalog.get(), /*use_ids=*/true, &p);
    if (p.size == 0 || p.size > sizeof(valid_record)) std::abort();
    alignas(8) static uint8_t tmp[sizeof(valid_record)];
    EncodeRecord(f, p, tmp);
    std::memcpy(valid_record, tmp, p.size);
    valid_size = p.size;
  }
};

Globals& G() {
  static Globals* g = new Globals();
  return *g;
}

// Runs what the host runs on each payload: Verifier + decode, then the catalog fold.
class FoldingSink : public RecordSink {
 public:
  explicit FoldingSink(uint32_t max_record) : max_record_(max_record) {}
  void OnRecord(const uint8_t* payload, uint32_t length, uint32_t) override {
    if (RecordBytes(length) > max_record_) __builtin_trap();  // the reader's own contract
    Globals& g = G();
    internal::RawEvent raw;
    if (!g.decoder.Decode(payload, length, g.time, &raw)) return;
    internal::FoldContext ctx;
    ctx.node = "fuzz";
    ctx.worker_id = "fuzz-worker";
    ctx.worker_pid = "1";
    ctx.pid = 1;
    EventView view;
    const internal::FoldOutcome out = g.folder.Fold(raw, ctx, &view);
    if (out.delivered) {
      // Touch every byte the handler could see.
      size_t sum = view.name().size() + view.correlation_id.size();
      for (const MeasurementView& m : view.measurements) {
        sum += m.key.size();
        if (m.value.kind == Value::Kind::kString) {
          for (char c : m.value.s) sum += static_cast<unsigned char>(c);
        }
      }
      for (const MetadataView& m : view.metadata) {
        for (char c : m.key) sum += static_cast<unsigned char>(c);
        for (char c : m.value) sum += static_cast<unsigned char>(c);
      }
      sink_.fetch_add(sum, std::memory_order_relaxed);
    }
  }
  void OnLost(uint64_t) override {}
  std::atomic<size_t> sink_{0};  // keeps the reads above from being optimised out

 private:
  uint32_t max_record_;
};

void InitValid(uint8_t* seg, uint64_t data_bytes, uint64_t position) {
  std::memset(seg, 0, kRingHeaderBytes + data_bytes);
  RingInit init;
  init.data_bytes = data_bytes;
  init.pid = 1;
  init.start_time = 1;
  init.worker_id = "fuzz-worker";
  init.initial_position = position;
  InitRing(seg, init);
}

void DrainAll(uint8_t* seg, size_t mapped) {
  Result<RingReader> r = RingReader::Attach(seg, mapped, "/pitlane.fuzz.ring.1.0");
  if (!r.ok()) return;
  FoldingSink sink(r->header()->max_record_bytes);  // validated by Attach; nothing rewrites it
  // Bounded: every pass stops after 64 records; a ring holds at most capacity/16 records.
  for (int i = 0; i < 16 && r->state() == RingReader::State::kOk; ++i) {
    if (Drain(*r, 64, sink) == 0) break;
  }
}

void RawMode(Input& in, uint8_t* seg, uint64_t data_bytes) {
  InitValid(seg, data_bytes, 0);
  auto* h = reinterpret_cast<RingHeader*>(seg);
  const uint8_t which = in.U8();
  const uint64_t magic = in.U64();
  const uint64_t db = in.U64();
  const uint64_t mr_lv = in.U64();
  const uint64_t hb = in.U64();
  const uint64_t delivered = in.U64();
  const uint64_t lost = in.U64();
  if (which & 1) h->magic = magic;
  if (which & 2) h->layout_version = static_cast<uint32_t>(mr_lv >> 32);
  if (which & 4) h->header_bytes = static_cast<uint32_t>(hb);
  if (which & 8) h->data_bytes = db;
  if (which & 16) h->max_record_bytes = static_cast<uint32_t>(mr_lv);
  if (which & 32) {
    h->host.delivered.store(delivered);
    h->host.rejected[kRejectLost].store(lost);
  }
  const uint64_t consumer = in.U64();
  const uint64_t delta = in.U64();
  h->consumer.store(consumer);
  h->producer.store(consumer + delta);
  uint8_t* data = seg + kRingHeaderBytes;
  if (in.left() > 0) {
    for (uint64_t off = 0; off < data_bytes; off += in.left()) {
      std::memcpy(data + off, in.rest(), std::min<uint64_t>(in.left(), data_bytes - off));
    }
  }
  DrainAll(seg, kRingHeaderBytes + data_bytes);
}

void RecordsMode(Input& in, uint8_t* seg, uint64_t data_bytes, bool splice) {
  InitValid(seg, data_bytes, in.U64() & ~uint64_t{7});
  RingWriter w(seg);
  const uint32_t max_payload = reinterpret_cast<RingHeader*>(seg)->max_record_bytes -
                               kRecordHeaderBytes;
  while (in.left() > 2) {
    uint32_t len = in.U16() % (max_payload + 1);
    if (len == 0) len = 1;
    const size_t have = std::min<size_t>(len, in.left());
    RingWriter::Reserve why;
    uint8_t* p = w.TryReserve(len, &why);
    if (p == nullptr) break;
    std::memset(p, 0, len);
    std::memcpy(p, in.rest(), have);
    in.Skip(have);
    w.Commit();
    if (splice && in.left() >= 16) break;
  }
  if (splice) {
    auto* h = reinterpret_cast<RingHeader*>(seg);
    const uint64_t p = h->producer.load();
    h->producer.store(p + (static_cast<int64_t>(static_cast<int8_t>(in.U8())) * 8));
    RecordHeader bad{in.U32(), in.U32()};
    const uint64_t at = (in.U16() * 8ull) & (data_bytes - 1);
    std::memcpy(seg + kRingHeaderBytes + at, &bad, sizeof(bad));
  }
  DrainAll(seg, kRingHeaderBytes + data_bytes);
}

void MutatedMode(Input& in, uint8_t* seg, uint64_t data_bytes) {
  Globals& g = G();
  InitValid(seg, data_bytes, 0);
  RingWriter w(seg);
  for (int rec = 0; rec < 4 && in.left() > 0; ++rec) {
    alignas(8) uint8_t buf[sizeof(g.valid_record) + 8];
    size_t size = g.valid_size;
    std::memcpy(buf, g.valid_record, size);
    const int edits = 1 + in.U8() % 8;
    for (int e = 0; e < edits; ++e) {
      const uint16_t off = in.U16() % size;
      const uint8_t x = in.U8();
      const uint8_t op = in.U8();
      buf[off] ^= x;
      if ((op & 1) && off + 4 <= size) {
        const uint32_t big = 0x80000000u >> (op >> 4);
        std::memcpy(buf + off, &big, 4);
      }
      if (op & 2) size = off + 1;  // cut the buffer short (e.g. an unterminated string)
    }
    RingWriter::Reserve why;
    uint8_t* p = w.TryReserve(static_cast<uint32_t>(size), &why);
    if (p == nullptr) break;
    std::memcpy(p, buf, size);
    w.Commit();
  }
  DrainAll(seg, kRingHeaderBytes + data_bytes);
}

}  // namespace

// A registry segment of this process's own namespace, rewritten for every input.
void RegistryMode(Input& in) {
  static const std::string ns = "fuzz" + std::to_string(::getpid());
  static const std::string name = RegistryName(ns);
  static const bool cleanup = [] {
    std::atexit([] { Segment::Unlink(name); });
    return true;
  }();
  (void)cleanup;
  Segment::Unlink(name);
  Result<Segment> seg = Segment::Create(name, kRegistryBytes);
  if (!seg.ok()) std::abort();
  auto* base = static_cast<uint8_t*>(seg->base());
  const uint8_t flags = in.U8();
  for (size_t i = 0; i < sizeof(RegistryHeader); ++i) base[i] = in.U8();
  if (flags & 1) {
    auto* h = reinterpret_cast<RegistryHeader*>(base);
    h->magic = kRegistryMagic;
    h->layout_version = kLayoutVersion;
    h->header_bytes = sizeof(RegistryHeader);
    h->max_workers = kMaxWorkers;
    h->max_rings = kMaxRings;
    h->worker_slot_bytes = kWorkerSlotBytes;
    h->ring_slot_bytes = sizeof(RingSlot);
    h->catalog_hash = G().catalog->hash();
  }
  while (in.left() >= 4) {
    const uint8_t kind = in.U8();
    const uint16_t index = in.U16();
    const uint8_t n = in.U8();
    uint8_t* slot = (kind & 1)
                        ? reinterpret_cast<uint8_t*>(RingSlotAt(base, index % kMaxRings))
                        : reinterpret_cast<uint8_t*>(WorkerSlotAt(base, index % kMaxWorkers));
    for (uint8_t k = 0; k < n && in.left() > 0; ++k) slot[k] = in.U8();
  }
  const InspectedRegistry r = InspectRegistry(ns, /*read_rings=*/true);
  if (r.workers.size() > kMaxWorkers || r.rings.size() > kMaxRings) __builtin_trap();
  for (const InspectedWorker& w : r.workers) {
    if (w.id.size() > kWorkerIdBytes) __builtin_trap();  // a bounded copy, NUL or not
  }
  for (const InspectedRing& ring : r.rings) {
    if (ring.segment.size() > kSegmentNameBytes) __builtin_trap();
  }
  (void)RegistryStaleness(r);
  std::string log;
  // Adopts it, or replaces it when it is not one this build can use; never crashes either way.
  Result<HostRegistry> host = CreateOrAdoptRegistry(ns, G().catalog->hash(), &log);
  (void)host;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Input in(data, size);
  const uint8_t sel = in.U8();
  if ((sel & 0xC0) == 0xC0) {
    RegistryMode(in);
    return 0;
  }
  const uint64_t data_bytes = kSizes[(sel >> 2) & 3];
  uint8_t* seg = G().segment;
  switch (sel & 3) {
    case 0: RawMode(in, seg, data_bytes); break;
    case 1: RecordsMode(in, seg, data_bytes, /*splice=*/false); break;
    case 2: MutatedMode(in, seg, data_bytes); break;
    default: RecordsMode(in, seg, data_bytes, /*splice=*/true); break;
  }
  return 0;
}
