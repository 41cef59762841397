// Hand-written FlatBuffer encoder for schemas/event.fbs.
//
// FlatBuffers only require that a uoffset points forward and that every scalar is aligned to
// its size relative to the buffer start, so the record is laid out front to back, parents
// before children, in one pass with no builder state:
//
//   0    uint32 root offset (= T)             4   "PLEV" file identifier
//   8    Event vtable (22 bytes + 2 pad; with span ids 26 bytes + 6 pad)
//   T    Event table, T = 32 (40 bytes; with span ids T = 40 and 56 bytes):
//        +0 soffset to vtable  +4 name  +8 correlation_id  +12 ints  +16 timestamp (u64)
//        +24 floats  +28 measures  +32 meta  +36 event_id (u16)  +38 clock (u8)
//        +40 span_id (u64)  +48 parent_span_id (u64)   (only when span_id != 0)
//   72/96 [ints]   4 pad, uint32 count, count × IntMeasure{key u16, 6 pad, value i64}
//        [floats] same shape with FloatMeasure
//        [meta]   uint32 count, count × uint32 offsets to Meta tables
//        [measures] uint32 count, count × uint32 offsets to Measure tables
//        pad to 8
//        [Measure vtable 16 B][Measure tables, 32 B each] (only if measures)
//        [Meta vtables 2 × 12 B: key_id+value / key+value][Meta tables, 16 B each]
//        strings: uint32 length, bytes, NUL, pad to 4
//
// Absent fields have a 0 vtable entry. A test runs the stock Verifier and the generated
// accessors over records of every shape (tests/record_test.cc).
#include <cstring>

#include "pitlane/catalog.h"
#include "pitlane/record.h"

namespace pitlane {
namespace {

// A record without span ids keeps the layout it had before they existed (72 bytes of head); a
// span event's longer vtable pushes its table to 40, and the table grows by the two ids.
constexpr uint32_t kEventTable = 32, kSpanEventTable = 40;
constexpr uint32_t kEventTableBytes = 40, kSpanEventTableBytes = 56;
inline uint32_t EventTableAt(const RecordFields& f) {
  return f.span.span_id != 0 ? kSpanEventTable : kEventTable;
}
inline size_t FixedBytes(const RecordFields& f) {
  return f.span.span_id != 0 ? kSpanEventTable + kSpanEventTableBytes      // 96
                             : kEventTable + kEventTableBytes;             // 72
}
constexpr uint32_t kMeasureVtableBytes = 16;
constexpr uint32_t kMeasureTableBytes = 32;
constexpr uint32_t kMetaVtableBytes = 12;
constexpr uint32_t kMetaTableBytes = 16;

inline size_t StringBytes(size_t len) { return (len + 4 + 1 + 3) & ~size_t{3}; }
inline size_t Align8(size_t n) { return (n + 7) & ~size_t{7}; }

inline void Put16(uint8_t* p, uint16_t v) { std::memcpy(p, &v, 2); }
inline void Put32(uint8_t* p, uint32_t v) { std::memcpy(p, &v, 4); }
inline void Put64(uint8_t* p, uint64_t v) { std::memcpy(p, &v, 8); }

// Copies n bytes with at most two overlapping loads/stores per size class, so the short keys
// and values of a typical event never pay for a libc call. Reads stay inside [src, src + n).
inline void CopySmall(uint8_t* dst, const char* src, size_t n) {
  if (n >= 16) {
    std::memcpy(dst, src, n);
  } else if (n >= 8) {
    uint64_t a, b;
    std::memcpy(&a, src, 8);
    std::memcpy(&b, src + n - 8, 8);
    std::memcpy(dst, &a, 8);
    std::memcpy(dst + n - 8, &b, 8);
  } else if (n >= 4) {
    uint32_t a, b;
    std::memcpy(&a, src, 4);
    std::memcpy(&b, src + n - 4, 4);
    std::memcpy(dst, &a, 4);
    std::memcpy(dst + n - 4, &b, 4);
  } else {
    for (size_t i = 0; i < n; ++i) dst[i] = static_cast<uint8_t>(src[i]);
  }
}

// Writes the string at `*cur`, returns its position and advances `*cur`.
inline uint32_t PutString(uint8_t* base, size_t* cur, std::string_view s) {
  const size_t pos = *cur;
  const size_t bytes = StringBytes(s.size());
  Put32(base + pos, static_cast<uint32_t>(s.size()));
  // Zero the slot's last word first (it holds the NUL terminator and the padding), then copy.
  Put32(base + pos + bytes - 4, 0);
  CopySmall(base + pos + 4, s.data(), s.size());
  *cur = pos + bytes;
  return static_cast<uint32_t>(pos);
}

// Stores a forward uoffset at `field_pos` pointing to `target_pos`.
inline void PutOffset(uint8_t* base, size_t field_pos, size_t target_pos) {
  Put32(base + field_pos, static_cast<uint32_t>(target_pos - field_pos));
}

}  // namespace

void PrepareRecord(const RecordFields& f, const Catalog* catalog, bool use_ids,
                   PreparedRecord* p) noexcept {
  p->size = 0;
  if (f.measurement_count > kMaxEncodedFields || f.metadata_count > kMaxEncodedFields) return;
  size_t strings = 0;
  if (f.event_id == 0) strings += StringBytes(f.name.size());
  if (!f.correlation_id.empty()) strings += StringBytes(f.correlation_id.size());

  uint16_t ints = 0, floats = 0, general = 0;
  for (size_t i = 0; i < f.measurement_count; ++i) {
    const Measurement& m = f.measurements[i];
    uint16_t id = 0;
    if (use_ids) id = m.key_id != 0 ? m.key_id : (catalog ? catalog->MeasurementKeyId(m.key) : 0);
    p->measurement_ids[i] = id;
    if (id != 0 && m.value.kind == Value::Kind::kInt) {
      ++ints;
    } else if (id != 0 && m.value.kind == Value::Kind::kDouble) {
      ++floats;
    } else {
      ++general;
      strings += StringBytes(m.key.size()) +
                 StringBytes(m.value.kind == Value::Kind::kString ? m.value.s.size() : 0);
    }
  }
  for (size_t i = 0; i < f.metadata_count; ++i) {
    const Metadata& m = f.metadata[i];
    uint16_t id = 0;
    if (use_ids) id = m.key_id != 0 ? m.key_id : (catalog ? catalog->MetadataKeyId(m.key) : 0);
    p->metadata_ids[i] = id;
    strings += StringBytes(m.value.size());
    if (id == 0) strings += StringBytes(m.key.size());
  }
  size_t size = FixedBytes(f);
  if (ints) size += 8 + 16 * size_t{ints};
  if (floats) size += 8 + 16 * size_t{floats};
  if (f.metadata_count) size += 4 + 4 * f.metadata_count;
  if (general) size += 4 + 4 * size_t{general};
  size = Align8(size);
  if (general) size += kMeasureVtableBytes + kMeasureTableBytes * size_t{general};
  if (f.metadata_count) size += 2 * kMetaVtableBytes + kMetaTableBytes * f.metadata_count;
  size += strings;
  p->size = size;
  p->int_count = ints;
  p->float_count = floats;
  p->general_count = general;
}

namespace {

// One record being written front to back (the layout at the top of this file): `b` is the
// buffer, `et` the Event table's position and `cur` the next free byte. Each step writes one
// region and leaves `cur` after it; EncodeRecord runs them in layout order.
struct RecordEncoder {
  const RecordFields& f;
  const PreparedRecord& p;
  uint8_t* b;
  uint32_t et;
  size_t cur;

  // Where the offset vectors and the tables they point to start (0 when absent).
  struct Tables {
    size_t meta_vec = 0, general_vec = 0, measure_tables = 0, meta_tables = 0, meta_vt = 0;
  };

  // Header, vtable and Event table. Vtable: [vtable bytes, table bytes, field offsets by id].
  void EventTable() {
    Put32(b + 0, et);
    std::memcpy(b + 4, "PLEV", 4);
    const bool has_name = f.event_id == 0;  // an event travels by id, or by name when id is 0
    const bool has_span = f.span.span_id != 0;
    // The vtable is written as 64-bit words of four entries each. (Built as a uint16_t array,
    // GCC stored it in halves and reloaded it as one vector, a store-to-load forwarding stall
    // that was ~30 % of this function in a profile of BM_Emit_Shm.)
    auto entries = [](uint64_t e0, uint64_t e1, uint64_t e2, uint64_t e3) {
      return e0 | e1 << 16 | e2 << 32 | e3 << 48;
    };
    Put64(b + 8, entries(has_span ? 26 : 22,                             // vtable bytes
                         has_span ? kSpanEventTableBytes : kEventTableBytes,
                         f.event_id != 0 ? 36 : 0,                      // event_id
                         has_name ? 4 : 0));                            // name
    Put64(b + 16, entries(16,                                           // timestamp
                          38,                                           // clock
                          f.correlation_id.empty() ? 0 : 8,             // correlation_id
                          p.int_count ? 12 : 0));                       // ints
    Put64(b + 24, entries(p.float_count ? 24 : 0,                       // floats
                          p.general_count ? 28 : 0,                     // measures
                          f.metadata_count ? 32 : 0,                    // meta
                          has_span ? 40 : 0));  // span_id; without span ids: padding to 32
    // parent_span_id, then padding to 40.
    if (has_span) Put64(b + 32, 48);
    uint8_t* t = b + et;
    Put32(t, et - 8);  // soffset: the vtable is at 8
    std::memset(t + 4, 0, 12);
    Put64(t + 16, f.timestamp);
    std::memset(t + 24, 0, 12);
    Put16(t + 36, f.event_id);
    t[38] = f.clock;
    t[39] = 0;
    if (has_span) {
      Put64(t + 40, f.span.span_id);
      Put64(t + 48, f.span.parent_span_id);
    }
  }

  // The ints or floats struct vector: 4 bytes of padding then the count, so elements start
  // 8-aligned.
  void StructVector(uint16_t count, uint32_t field, Value::Kind kind) {
    Put32(b + cur, 0);
    PutOffset(b, et + field, cur + 4);
    Put32(b + cur + 4, count);
    uint8_t* e = b + cur + 8;
    for (size_t i = 0; i < f.measurement_count; ++i) {
      const Measurement& m = f.measurements[i];
      if (p.measurement_ids[i] == 0 || m.value.kind != kind) continue;
      Put64(e, p.measurement_ids[i]);  // key (u16) + 6 bytes of zero padding
      if (kind == Value::Kind::kInt) {
        Put64(e + 8, static_cast<uint64_t>(m.value.i));
      } else {
        std::memcpy(e + 8, &m.value.d, 8);
      }
      e += 16;
    }
    cur += 8 + 16 * size_t{count};
  }

  // The meta and measures offset vectors, then room for the tables they will point to, with
  // the tables' shared vtables written.
  Tables OffsetVectorsAndVtables() {
    Tables t;
    if (f.metadata_count) {
      t.meta_vec = cur;
      PutOffset(b, et + 32, t.meta_vec);
      Put32(b + cur, static_cast<uint32_t>(f.metadata_count));
      cur += 4 + 4 * f.metadata_count;
    }
    if (p.general_count) {
      t.general_vec = cur;
      PutOffset(b, et + 28, t.general_vec);
      Put32(b + cur, p.general_count);
      cur += 4 + 4 * size_t{p.general_count};
    }
    if (cur & 7) {
      Put32(b + cur, 0);
      cur += 4;
    }
    // Measure tables (general path). Vtable: key_id, key, type, int_value, float_value,
    // string_value. Table: +0 soffset +4 key +8 int_value +16 float_value +24 string_value
    // +28 key_id +30 type +31 pad.
    if (p.general_count) {
      static constexpr uint16_t kMeasureVt[8] = {16, kMeasureTableBytes, 28, 4, 30, 8, 16, 24};
      std::memcpy(b + cur, kMeasureVt, sizeof(kMeasureVt));
      cur += kMeasureVtableBytes;
      t.measure_tables = cur;
      cur += kMeasureTableBytes * size_t{p.general_count};
    }
    if (f.metadata_count) {
      // Vtable A (known key): key_id at 12, no key, value at 8. Vtable B (named key): key at 4.
      static constexpr uint16_t kMetaVt[12] = {10, kMetaTableBytes, 12, 0, 8, 0,
                                               10, kMetaTableBytes, 0,  4, 8, 0};
      t.meta_vt = cur;
      std::memcpy(b + cur, kMetaVt, sizeof(kMetaVt));
      cur += 2 * kMetaVtableBytes;
      t.meta_tables = cur;
      cur += kMetaTableBytes * f.metadata_count;
    }
    return t;
  }

  // The Measure tables of the measurements that travel with a key string or a string value,
  // each followed (in the string region) by its key and value.
  void MeasureTables(const Tables& t) {
    size_t k = 0;
    for (size_t i = 0; i < f.measurement_count; ++i) {
      const Measurement& m = f.measurements[i];
      const uint16_t id = p.measurement_ids[i];
      if (id != 0 && m.value.kind != Value::Kind::kString) continue;
      const size_t tp = t.measure_tables + kMeasureTableBytes * k;
      PutOffset(b, t.general_vec + 4 + 4 * k, tp);
      Put32(b + tp, static_cast<uint32_t>(tp - (t.measure_tables - kMeasureVtableBytes)));
      Put64(b + tp + 8, m.value.kind == Value::Kind::kInt ? static_cast<uint64_t>(m.value.i) : 0);
      const double d = m.value.kind == Value::Kind::kDouble ? m.value.d : 0.0;
      std::memcpy(b + tp + 16, &d, 8);
      Put16(b + tp + 28, id);
      b[tp + 30] = static_cast<uint8_t>(m.value.kind);
      b[tp + 31] = 0;
      PutOffset(b, tp + 4, PutString(b, &cur, m.key));
      PutOffset(b, tp + 24,
                PutString(b, &cur, m.value.kind == Value::Kind::kString ? m.value.s : ""));
      ++k;
    }
  }

  // The Meta tables, each followed (in the string region) by its key when it has no id, and
  // its value.
  void MetaTables(const Tables& t) {
    for (size_t i = 0; i < f.metadata_count; ++i) {
      const Metadata& m = f.metadata[i];
      const uint16_t id = p.metadata_ids[i];
      const size_t tp = t.meta_tables + kMetaTableBytes * i;
      PutOffset(b, t.meta_vec + 4 + 4 * i, tp);
      const size_t vt = id != 0 ? t.meta_vt : t.meta_vt + kMetaVtableBytes;
      Put32(b + tp, static_cast<uint32_t>(tp - vt));
      Put32(b + tp + 4, 0);
      Put16(b + tp + 12, id);
      Put16(b + tp + 14, 0);
      if (id == 0) PutOffset(b, tp + 4, PutString(b, &cur, m.key));
      PutOffset(b, tp + 8, PutString(b, &cur, m.value));
    }
  }
};

}  // namespace

void EncodeRecord(const RecordFields& f, const PreparedRecord& p, uint8_t* b) noexcept {
  RecordEncoder e{f, p, b, EventTableAt(f), FixedBytes(f)};
  e.EventTable();
  if (p.int_count) e.StructVector(p.int_count, 12, Value::Kind::kInt);
  if (p.float_count) e.StructVector(p.float_count, 24, Value::Kind::kDouble);
  const RecordEncoder::Tables t = e.OffsetVectorsAndVtables();
  // Strings, after every table that refers to them.
  if (f.event_id == 0) PutOffset(b, e.et + 4, PutString(b, &e.cur, f.name));
  if (!f.correlation_id.empty()) PutOffset(b, e.et + 8, PutString(b, &e.cur, f.correlation_id));
  if (p.general_count) e.MeasureTables(t);
  e.MetaTables(t);
}

}  // namespace pitlane
