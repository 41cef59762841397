// Verification and decoding of one event record — a FlatBuffer of schemas/event.fbs, copied out
// of a ring — in a single pass written for that schema, instead of the generic
// flatbuffers::Verifier followed by a second pass through the generated accessors.
//
// Contract: VerifyEventRecord(buf, size) accepts a buffer if and only if
//
//   flatbuffers::Verifier v(buf, size, /*max_depth=*/kRecordMaxDepth,
//                           /*max_tables=*/kRecordMaxTables);
//   fb::VerifyEventBuffer(v)
//
// accepts it (flatbuffers 2.0 semantics, restated below) AND the elements of non-empty `ints`
// and `floats` struct vectors are 8-byte aligned in memory (the stock Verifier checks only
// their 4-byte length field, and the decoder reads the elements as 8-byte values).
// tests/record_verify_test.cc holds it to that, differentially, over mutated records.
//
// The stock rules, with n = size and every offset relative to buf:
//   range(o, len)     len < n && o <= n - len          (strict: nothing spans the whole buffer)
//   scalar(o, s)      o % s == 0 && range(o, s)         (alignment relative to the buffer start)
//   buffer            n >= 12, bytes 4..7 == "PLEV", a uoffset at 0 leading to the Event table
//   uoffset at p      scalar(p, 4), v = u32(p), v != 0, v < 2^31, range(p + v, 1) → target p + v
//   table at t        scalar(t, 4), vt = t - i32(t) (mod 2^64), scalar(vt, 2), vs = u16(vt) even,
//                     range(vt, vs); field slot f is present iff f < vs and u16(vt + f) != 0
//   scalar field      scalar(t + slot, size of the field)
//   string at s       scalar(s, 4), len = u32(s) < 2^31 - 1, range(s, 4 + len),
//                     range(s + 4 + len, 1) and that byte is 0
//   vector at v       scalar(v, 4), count = u32(v) < (2^31 - 1) / elem, range(v, 4 + elem*count)
//   table vectors     element i is the table at e + u32(e), e = v + 4 + 4i (the element offsets
//                     themselves are not checked beyond that)
//   limits            nesting depth <= 8 (this schema nests 2 tables deep), tables <= 1024
//                     (the Event, its Measure tables and its Meta tables, shared ones counted
//                     each time they are referenced)
//
// Thread safety: pure functions; any thread may call them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

#include "fold.h"

namespace pitlane::internal {

// The limits the host verifies records with.
inline constexpr uint32_t kRecordMaxDepth = 8;
inline constexpr uint32_t kRecordMaxTables = 1024;

// DecodedRecord, the Event's own fields as DecodeEventRecord finds them, is in fold.h (the
// decoder keeps one as scratch).

// Implementation (header-only, so the decode inlines into RecordDecoder::Decode and every
// target that compiles fold.cc gets it with no extra source).
namespace record_verify_detail {

#define PITLANE_RV_INLINE [[gnu::always_inline]] inline

// FLATBUFFERS_MAX_BUFFER_SIZE: vector and string lengths are refused at or above this / elem.
inline constexpr size_t kMaxBufferSize = (size_t{1} << 31) - 1;
// FLATBUFFERS_MIN_BUFFER_SIZE: root uoffset, soffset to the vtable, vtable size, table size.
inline constexpr size_t kMinBufferSize = 12;

// Fields of schemas/event.fbs by id (vtable slot = 4 + 2 * id), as flatc numbers them.
namespace event_field {
inline constexpr size_t kEventId = 0, kName = 1, kTimestamp = 2, kClock = 3, kCorrelationId = 4,
                        kInts = 5, kFloats = 6, kMeasures = 7, kMeta = 8, kSpanId = 9,
                        kParentSpanId = 10, kCount = 11;
}
namespace measure_field {
inline constexpr size_t kKeyId = 0, kKey = 1, kType = 2, kIntValue = 3, kFloatValue = 4,
                        kStringValue = 5, kCount = 6;
}
namespace meta_field {
inline constexpr size_t kKeyId = 0, kKey = 1, kValue = 2, kCount = 3;
}
// IntMeasure / FloatMeasure: key u16 at 0, 6 bytes of padding, value at 8.
inline constexpr size_t kStructMeasureBytes = 16;
inline constexpr uint8_t kValueTypeInt = 0, kValueTypeFloat = 1;

PITLANE_RV_INLINE uint16_t Load16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
PITLANE_RV_INLINE uint32_t Load32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
PITLANE_RV_INLINE uint64_t Load64(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// A table whose header and vtable passed the checks, with the offset of each of its kFields
// fields inside the table (0: absent) copied out of the vtable.
template <size_t kFields>
struct Table {
  // Only `has_vtable` is initialised: TableStart() writes the rest before anything reads it
  // (zeroing the whole struct per table shows up in the per-record cost).
  size_t at;
  bool has_vtable = false;  // `vtable` and `field` hold a checked vtable
  size_t vtable;
  uint16_t field[kFields];
};

// The stock Verifier's checks (see the contract above) over one buffer of n >= 12 bytes.
class Checker {
 public:
  // REQUIRES: size >= kMinBufferSize.
  Checker(const uint8_t* buf, size_t size) : b_(buf), n_(size) {}

  // range(off, len) for a fixed len below kMinBufferSize: its `len < n` half always holds.
  PITLANE_RV_INLINE bool FitsSmall(size_t off, size_t len) const { return off <= n_ - len; }
  // range(off, len) in general.
  PITLANE_RV_INLINE bool Fits(size_t off, size_t len) const { return len < n_ && off <= n_ - len; }
  // scalar(off, size). REQUIRES: size is 1, 2, 4 or 8.
  PITLANE_RV_INLINE bool Scalar(size_t off, size_t size) const {
    return (off & (size - 1)) == 0 && FitsSmall(off, size);
  }

  // The uoffset stored at `at`: its target, or 0 when it is invalid (a valid target is never 0:
  // the offset is not).
  PITLANE_RV_INLINE size_t Offset(size_t at) const {
    if (!Scalar(at, 4)) return 0;
    const uint32_t v = Load32(b_ + at);
    if (v == 0 || v > 0x7FFFFFFFu || !FitsSmall(at + v, 1)) return 0;
    return at + v;
  }

  PITLANE_RV_INLINE bool String(size_t at, std::string_view* out) const {
    if (!Scalar(at, 4)) return false;
    const uint32_t len = Load32(b_ + at);
    const size_t end = at + 4 + len;
    // range(at, 4 + len) is implied by range(end, 1): end <= n - 1 gives at + 4 + len < n.
    if (len >= kMaxBufferSize || !FitsSmall(end, 1) || b_[end] != 0) return false;
    *out = std::string_view(reinterpret_cast<const char*>(b_ + at + 4), len);
    return true;
  }

  // The vector at `at`: its element count, or -1 when it is invalid.
  PITLANE_RV_INLINE int64_t Vector(size_t at, size_t elem_bytes) const {
    if (!Scalar(at, 4)) return -1;
    const uint32_t c = Load32(b_ + at);
    if (c >= kMaxBufferSize / elem_bytes || !Fits(at, 4 + elem_bytes * size_t{c})) return -1;
    return c;
  }

  // Checks the table at `at` and copies its field offsets into `t`. A table whose vtable is the
  // one `t` already holds (the tables of a vector usually share one) reuses the copy.
  template <size_t kFields>
  PITLANE_RV_INLINE bool TableStart(size_t at, Table<kFields>* t) const {
    if (!Scalar(at, 4)) return false;
    const auto soffset = static_cast<int32_t>(Load32(b_ + at));
    // Unsigned arithmetic, as the stock Verifier does it: a vtable "before" offset 0 wraps to
    // a huge offset that fails the range check.
    const size_t vt = at - static_cast<size_t>(static_cast<int64_t>(soffset));
    t->at = at;
    if (t->has_vtable && vt == t->vtable) return true;
    if (!Scalar(vt, 2)) return false;
    const uint16_t vbytes = Load16(b_ + vt);
    if ((vbytes & 1) != 0 || !Fits(vt, vbytes)) return false;
    constexpr size_t kFull = 4 + 2 * kFields;
    if (vbytes >= kFull) {
      std::memcpy(t->field, b_ + vt + 4, 2 * kFields);
    } else {
      // A shorter vtable (older writer, or absent trailing fields): the rest are absent.
      for (size_t i = 0; i < kFields; ++i) {
        t->field[i] = 4 + 2 * i < vbytes ? Load16(b_ + vt + 4 + 2 * i) : 0;
      }
    }
    t->vtable = vt;
    t->has_vtable = true;
    return true;
  }

  // A scalar field of `bytes` (1, 2 or 8): its offset, 0 when absent; false when invalid.
  template <size_t kFields>
  PITLANE_RV_INLINE bool ScalarField(const Table<kFields>& t, size_t field, size_t bytes,
                                     size_t* at) const {
    const uint16_t o = t.field[field];
    *at = o == 0 ? 0 : t.at + o;
    return o == 0 || Scalar(*at, bytes);
  }

  // An optional string field (absent: an empty view).
  template <size_t kFields>
  PITLANE_RV_INLINE bool StringField(const Table<kFields>& t, size_t field,
                                     std::string_view* out) const {
    const uint16_t o = t.field[field];
    if (o == 0) {
      *out = std::string_view();
      return true;
    }
    const size_t s = Offset(t.at + o);
    return s != 0 && String(s, out);
  }

  // An optional vector field: `*at` is the vector's offset (its length field), `*count` its
  // length (0 when absent, and then `*at` is 0).
  template <size_t kFields>
  PITLANE_RV_INLINE bool VectorField(const Table<kFields>& t, size_t field, size_t elem_bytes,
                                     size_t* at, uint32_t* count) const {
    const uint16_t o = t.field[field];
    *at = 0;
    *count = 0;
    if (o == 0) return true;
    const size_t v = Offset(t.at + o);
    if (v == 0) return false;
    const int64_t c = Vector(v, elem_bytes);
    if (c < 0) return false;
    *at = v;
    *count = static_cast<uint32_t>(c);
    return true;
  }

 private:
  const uint8_t* b_;
  size_t n_;
};

// A struct vector's elements are read as 8-byte values: they must be 8-aligned in memory. (An
// empty vector has no element to read; FlatBufferBuilder leaves its data misaligned.)
PITLANE_RV_INLINE bool StructElementsAligned(const uint8_t* buf, size_t vector_at) {
  return (reinterpret_cast<uintptr_t>(buf + vector_at + 4) & 7) == 0;
}

// The Event table's fields: where each scalar is (0: absent), its strings, and where each
// vector is with its length (0 and 0: absent).
struct EventFields {
  size_t event_id_at, timestamp_at, clock_at, span_id_at, parent_span_id_at;
  std::string_view name, correlation_id;
  size_t ints_at, floats_at, measures_at, meta_at;
  uint32_t n_ints, n_floats, n_measures, n_meta;
};

// Checks the root Event table and every field of it; false: malformed.
PITLANE_RV_INLINE bool CheckEventTable(const Checker& c, const uint8_t* buf, EventFields* e) {
  const size_t root = c.Offset(0);
  Table<event_field::kCount> ev;
  if (root == 0 || !c.TableStart(root, &ev)) return false;
  return c.ScalarField(ev, event_field::kEventId, 2, &e->event_id_at) &&
         c.StringField(ev, event_field::kName, &e->name) &&
         c.ScalarField(ev, event_field::kTimestamp, 8, &e->timestamp_at) &&
         c.ScalarField(ev, event_field::kClock, 1, &e->clock_at) &&
         c.StringField(ev, event_field::kCorrelationId, &e->correlation_id) &&
         c.VectorField(ev, event_field::kInts, kStructMeasureBytes, &e->ints_at, &e->n_ints) &&
         (e->n_ints == 0 || StructElementsAligned(buf, e->ints_at)) &&
         c.VectorField(ev, event_field::kFloats, kStructMeasureBytes, &e->floats_at,
                       &e->n_floats) &&
         (e->n_floats == 0 || StructElementsAligned(buf, e->floats_at)) &&
         c.VectorField(ev, event_field::kMeasures, 4, &e->measures_at, &e->n_measures) &&
         c.VectorField(ev, event_field::kMeta, 4, &e->meta_at, &e->n_meta) &&
         c.ScalarField(ev, event_field::kSpanId, 8, &e->span_id_at) &&
         c.ScalarField(ev, event_field::kParentSpanId, 8, &e->parent_span_id_at);
}

PITLANE_RV_INLINE void DecodeEventFields(const uint8_t* buf, const EventFields& e,
                                         DecodedRecord* out) {
  out->event_id = e.event_id_at ? Load16(buf + e.event_id_at) : 0;
  out->name = e.name;
  out->timestamp = e.timestamp_at ? Load64(buf + e.timestamp_at) : 0;
  out->clock = e.clock_at ? buf[e.clock_at] : 0;
  out->correlation_id = e.correlation_id;
  out->span_id = e.span_id_at ? Load64(buf + e.span_id_at) : 0;
  out->parent_span_id = e.parent_span_id_at ? Load64(buf + e.parent_span_id_at) : 0;
}

// The ints then the floats struct vectors into `m` (their elements were checked with the
// vectors). Returns the entry after the last one written.
PITLANE_RV_INLINE RawMeasurement* DecodeStructMeasures(const uint8_t* buf, const EventFields& e,
                                                       RawMeasurement* m) {
  const uint8_t* p = buf + e.ints_at + 4;
  for (uint32_t i = 0; i < e.n_ints; ++i, p += kStructMeasureBytes, ++m) {
    const uint16_t key = Load16(p);
    m->key_id = key == 0 ? uint16_t{0xFFFF} : key;
    m->key = std::string_view();
    m->value = Value(static_cast<int64_t>(Load64(p + 8)));
  }
  p = buf + e.floats_at + 4;
  for (uint32_t i = 0; i < e.n_floats; ++i, p += kStructMeasureBytes, ++m) {
    const uint16_t key = Load16(p);
    double d;
    std::memcpy(&d, p + 8, sizeof d);
    m->key_id = key == 0 ? uint16_t{0xFFFF} : key;
    m->key = std::string_view();
    m->value = Value(d);
  }
  return m;
}

// Checks every Measure table and, when `out` is not null, decodes them into it.
PITLANE_RV_INLINE bool WalkMeasureTables(const Checker& c, const uint8_t* buf,
                                         const EventFields& e, RawMeasurement* out) {
  Table<measure_field::kCount> mt;
  for (uint32_t i = 0; i < e.n_measures; ++i) {
    const size_t slot = e.measures_at + 4 + 4 * size_t{i};
    size_t key_id_at, type_at, int_at, float_at;
    std::string_view key, string_value;
    if (!c.TableStart(slot + Load32(buf + slot), &mt) ||
        !c.ScalarField(mt, measure_field::kKeyId, 2, &key_id_at) ||
        !c.StringField(mt, measure_field::kKey, &key) ||
        !c.ScalarField(mt, measure_field::kType, 1, &type_at) ||
        !c.ScalarField(mt, measure_field::kIntValue, 8, &int_at) ||
        !c.ScalarField(mt, measure_field::kFloatValue, 8, &float_at) ||
        !c.StringField(mt, measure_field::kStringValue, &string_value)) {
      return false;
    }
    if (out == nullptr) continue;
    RawMeasurement& m = out[i];
    m.key_id = key_id_at ? Load16(buf + key_id_at) : 0;
    m.key = key;
    switch (type_at ? buf[type_at] : kValueTypeInt) {
      case kValueTypeInt:
        m.value = Value(static_cast<int64_t>(int_at ? Load64(buf + int_at) : 0));
        break;
      case kValueTypeFloat: {
        double d = 0;
        if (float_at) std::memcpy(&d, buf + float_at, sizeof d);
        m.value = Value(d);
        break;
      }
      default:
        m.value = Value(string_value);
    }
  }
  return true;
}

// Checks every Meta table and, when `out` is not null, decodes them into it.
PITLANE_RV_INLINE bool WalkMetaTables(const Checker& c, const uint8_t* buf, const EventFields& e,
                                      RawMeta* out) {
  Table<meta_field::kCount> dt;
  for (uint32_t i = 0; i < e.n_meta; ++i) {
    const size_t slot = e.meta_at + 4 + 4 * size_t{i};
    size_t key_id_at;
    std::string_view key, value;
    if (!c.TableStart(slot + Load32(buf + slot), &dt) ||
        !c.ScalarField(dt, meta_field::kKeyId, 2, &key_id_at) ||
        !c.StringField(dt, meta_field::kKey, &key) ||
        !c.StringField(dt, meta_field::kValue, &value)) {
      return false;
    }
    if (out == nullptr) continue;
    out[i].key_id = key_id_at ? Load16(buf + key_id_at) : 0;
    out[i].key = key;
    out[i].value = value;
  }
  return true;
}

template <bool kDecode>
bool Walk(const uint8_t* buf, size_t size, RawMeasurement* measurements, RawMeta* metadata,
          size_t capacity, DecodedRecord* out) {
  if (size < kMinBufferSize || std::memcmp(buf + 4, "PLEV", 4) != 0) return false;
  const Checker c(buf, size);
  EventFields e;
  if (!CheckEventTable(c, buf, &e)) return false;
  // The Event plus every Measure and Meta table reference (depth is at most 2 here).
  if (1 + size_t{e.n_measures} + size_t{e.n_meta} > kRecordMaxTables) return false;

  const size_t total_measurements = size_t{e.n_ints} + e.n_floats + e.n_measures;
  const bool decode = kDecode && total_measurements <= capacity && e.n_meta <= capacity;
  if constexpr (kDecode) {
    DecodeEventFields(buf, e, out);
    out->too_many_fields = !decode;
    out->measurement_count = decode ? total_measurements : 0;
    out->metadata_count = decode ? e.n_meta : 0;
  }
  RawMeasurement* measure_tables_out =
      decode ? DecodeStructMeasures(buf, e, measurements) : nullptr;
  return WalkMeasureTables(c, buf, e, measure_tables_out) &&
         WalkMetaTables(c, buf, e, decode ? metadata : nullptr);
}

#undef PITLANE_RV_INLINE

}  // namespace record_verify_detail

// true: `buf` is a valid event record (see the contract above).
inline bool VerifyEventRecord(const uint8_t* buf, size_t size) {
  return record_verify_detail::Walk<false>(buf, size, nullptr, nullptr, 0, nullptr);
}

// Verifies like VerifyEventRecord and, in the same pass, decodes the record: measurements in
// the order ints, floats, measures (an IntMeasure/FloatMeasure key of 0 becomes 0xFFFF, which
// no catalog has, so the fold rejects it); metadata in order. `measurements` and `metadata`
// hold `capacity` entries each. false: malformed (nothing in the outputs is meaningful).
inline bool DecodeEventRecord(const uint8_t* buf, size_t size, RawMeasurement* measurements,
                              RawMeta* metadata, size_t capacity, DecodedRecord* out) {
  return record_verify_detail::Walk<true>(buf, size, measurements, metadata, capacity, out);
}

}  // namespace pitlane::internal
