// The host's own record verifier (host/src/record_verify.h) against the stock FlatBuffers
// Verifier it replaces, differentially: over records of every shape the encoder writes, over
// layouts only FlatBufferBuilder produces (shared vtables, vtables after their table, shared
// strings), over the known malicious shapes and over hundreds of thousands of random mutations
// of all of them. The verifier must accept exactly what
//   flatbuffers::Verifier(buf, n, 8, 1024) + VerifyEventBuffer
// accepts and whose struct vectors are 8-aligned (so: it accepts ⇒ the stock Verifier accepts),
// and what it accepts it must decode field for field as the flatc-generated accessors read it.
// Every buffer is copied into an allocation of exactly its size, so a read past the end is an
// AddressSanitizer report in the sanitizer build.
#include "../host/src/record_verify.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "../host/src/fold.h"
#include "flatbuffers/flatbuffers.h"
#include "pitlane/catalog.h"
#include "pitlane/fb/event_generated.h"
#include "pitlane/record.h"
#include "pitlane/shm_layout.h"

namespace pitlane {
namespace {

using internal::DecodedRecord;
using internal::RawMeasurement;
using internal::RawMeta;

const Catalog& Cat() { return *Catalog::Default(); }

// A buffer in an allocation of exactly `bytes.size()` bytes (malloc: 16-aligned).
class ExactBuffer {
 public:
  explicit ExactBuffer(const std::vector<uint8_t>& bytes)
      : size_(bytes.size()), data_(new uint8_t[std::max<size_t>(1, bytes.size())]) {
    if (!bytes.empty()) std::memcpy(data_.get(), bytes.data(), bytes.size());
  }
  const uint8_t* data() const { return data_.get(); }
  size_t size() const { return size_; }

 private:
  size_t size_;
  std::unique_ptr<uint8_t[]> data_;
};

// What the stock Verifier says, with the host's limits, plus the alignment the host requires
// of struct vector elements on top of it (non-empty vectors only: an empty one has nothing to
// read, and FlatBufferBuilder writes it with its data misaligned).
bool ReferenceAccepts(const uint8_t* buf, size_t size) {
  flatbuffers::Verifier v(buf, size, internal::kRecordMaxDepth, internal::kRecordMaxTables);
  if (!fb::VerifyEventBuffer(v)) return false;
  const fb::Event* e = fb::GetEvent(buf);
  auto aligned = [](const auto* vec) {
    return vec == nullptr || vec->size() == 0 || reinterpret_cast<uintptr_t>(vec->Data()) % 8 == 0;
  };
  return aligned(e->ints()) && aligned(e->floats());
}

std::string_view View(const flatbuffers::String* s) {
  return s == nullptr ? std::string_view() : std::string_view(s->c_str(), s->size());
}

bool SameValue(const Value& a, const Value& b) {
  if (a.kind != b.kind) return false;
  switch (a.kind) {
    case Value::Kind::kInt:
      return a.i == b.i;
    case Value::Kind::kDouble:
      return std::memcmp(&a.d, &b.d, sizeof a.d) == 0;
    case Value::Kind::kString:
      return a.s == b.s;
  }
  return false;
}

// The record as the generated accessors read it (REQUIRES: ReferenceAccepts), in the order
// and with the conventions DecodeEventRecord documents.
struct Reference {
  DecodedRecord rec;
  std::vector<RawMeasurement> measurements;
  std::vector<RawMeta> metadata;
};
Reference ReferenceDecode(const uint8_t* buf) {
  Reference r;
  const fb::Event* e = fb::GetEvent(buf);
  r.rec.event_id = e->event_id();
  r.rec.name = View(e->name());
  r.rec.timestamp = e->timestamp();
  r.rec.clock = static_cast<uint8_t>(e->clock());
  r.rec.correlation_id = View(e->correlation_id());
  r.rec.span_id = e->span_id();
  r.rec.parent_span_id = e->parent_span_id();
  if (e->ints()) {
    for (const fb::IntMeasure* m : *e->ints()) {
      r.measurements.push_back(
          RawMeasurement{m->key() == 0 ? uint16_t{0xFFFF} : m->key(), {}, Value(m->value())});
    }
  }
  if (e->floats()) {
    for (const fb::FloatMeasure* m : *e->floats()) {
      r.measurements.push_back(
          RawMeasurement{m->key() == 0 ? uint16_t{0xFFFF} : m->key(), {}, Value(m->value())});
    }
  }
  if (e->measures()) {
    for (const fb::Measure* m : *e->measures()) {
      RawMeasurement x{m->key_id(), View(m->key()), {}};
      switch (m->type()) {
        case fb::ValueType::Int:
          x.value = Value(m->int_value());
          break;
        case fb::ValueType::Float:
          x.value = Value(m->float_value());
          break;
        default:
          x.value = Value(View(m->string_value()));
      }
      r.measurements.push_back(x);
    }
  }
  if (e->meta()) {
    for (const fb::Meta* m : *e->meta()) {
      r.metadata.push_back(RawMeta{m->key_id(), View(m->key()), View(m->value())});
    }
  }
  return r;
}

// Runs both verifiers (and the decoder) over `bytes`; returns what they agreed on. Records a
// failure, with `what` and the bytes, when they disagree.
bool ExpectAgreement(const std::vector<uint8_t>& bytes, const std::string& what) {
  const ExactBuffer b(bytes);
  const bool ref = ReferenceAccepts(b.data(), b.size());
  const bool ours = internal::VerifyEventRecord(b.data(), b.size());
  static RawMeasurement measurements[internal::Folder::kMaxFields];
  static RawMeta metadata[internal::Folder::kMaxFields];
  DecodedRecord rec;
  const bool decoded = internal::DecodeEventRecord(b.data(), b.size(), measurements, metadata,
                                                   internal::Folder::kMaxFields, &rec);
  auto dump = [&] {
    std::string hex;
    for (size_t i = 0; i < bytes.size() && i < 512; ++i) {
      static const char* d = "0123456789abcdef";
      hex += d[bytes[i] >> 4];
      hex += d[bytes[i] & 15];
      if (i % 4 == 3) hex += ' ';
    }
    return what + " (" + std::to_string(bytes.size()) + " bytes): " + hex;
  };
  if (ours != ref) {
    ADD_FAILURE() << "stock " << (ref ? "accepts" : "refuses") << ", ours "
                  << (ours ? "accepts" : "refuses") << ": " << dump();
    return false;
  }
  if (decoded != ours) {
    ADD_FAILURE() << "DecodeEventRecord and VerifyEventRecord disagree: " << dump();
    return false;
  }
  if (!ours) return false;
  const Reference want = ReferenceDecode(b.data());
  bool same = rec.event_id == want.rec.event_id && rec.name == want.rec.name &&
              rec.timestamp == want.rec.timestamp && rec.clock == want.rec.clock &&
              rec.correlation_id == want.rec.correlation_id && rec.span_id == want.rec.span_id &&
              rec.parent_span_id == want.rec.parent_span_id;
  const bool too_many = want.measurements.size() > internal::Folder::kMaxFields ||
                        want.metadata.size() > internal::Folder::kMaxFields;
  if (too_many) {
    same = same && rec.too_many_fields && rec.measurement_count == 0 && rec.metadata_count == 0;
  } else {
    same = same && !rec.too_many_fields && rec.measurement_count == want.measurements.size() &&
           rec.metadata_count == want.metadata.size();
    for (size_t i = 0; same && i < want.measurements.size(); ++i) {
      same = measurements[i].key_id == want.measurements[i].key_id &&
             measurements[i].key == want.measurements[i].key &&
             SameValue(measurements[i].value, want.measurements[i].value);
    }
    for (size_t i = 0; same && i < want.metadata.size(); ++i) {
      same = metadata[i].key_id == want.metadata[i].key_id &&
             metadata[i].key == want.metadata[i].key && metadata[i].value == want.metadata[i].value;
    }
  }
  if (!same) ADD_FAILURE() << "decoded differently from the generated accessors: " << dump();
  return same;
}

// ── inputs ──────────────────────────────────────────────────────────────────────────────────

std::vector<uint8_t> Encode(const RecordFields& f, bool use_ids) {
  PreparedRecord p;
  PrepareRecord(f, &Cat(), use_ids, &p);
  EXPECT_GT(p.size, 0u);
  std::vector<uint64_t> aligned((p.size + 7) / 8);
  EncodeRecord(f, p, reinterpret_cast<uint8_t*>(aligned.data()));
  const auto* b = reinterpret_cast<const uint8_t*>(aligned.data());
  return std::vector<uint8_t>(b, b + p.size);
}

// Random records through the worker's encoder: every kind of measurement (by id as ints and
// floats, strings, unknown keys by name), known and unknown metadata keys, events by id or by
// name, with or without correlation id.
class EncoderRecords {
 public:
  explicit EncoderRecords(uint64_t seed) : rng_(seed) {}
  std::vector<uint8_t> Next() {
    values_.clear();
    values_.reserve(64);  // at most ~20 per record: the views never move
    std::vector<Measurement> ms;
    std::vector<Metadata> md;
    const size_t nm = Pick(6), nd = Pick(6);
    for (size_t i = 0; i < nm; ++i) {
      const uint16_t id = static_cast<uint16_t>(1 + rng_() % Cat().measurement_key_count());
      const std::string_view known = Cat().MeasurementKey(id);
      switch (rng_() % 5) {
        case 0:
          ms.emplace_back(MeasurementKey{id, known}, static_cast<int64_t>(rng_()));
          break;
        case 1:
          ms.emplace_back(MeasurementKey{id, known}, static_cast<double>(rng_() % 1000) / 7);
          break;
        case 2:
          ms.emplace_back(MeasurementKey{id, known}, Str(Pick(20)));
          break;
        case 3:
          ms.emplace_back(Str(1 + Pick(12)), static_cast<int64_t>(rng_() % 100));
          break;
        default:
          ms.emplace_back(Str(1 + Pick(12)), 0.5);
      }
    }
    for (size_t i = 0; i < nd; ++i) {
      const uint16_t id = static_cast<uint16_t>(1 + rng_() % Cat().metadata_key_count());
      if (rng_() % 3 != 0) {
        md.emplace_back(MetadataKey{id, Cat().MetadataKey(id)}, Str(Pick(24)));
      } else {
        md.emplace_back(Str(1 + Pick(16)), Str(Pick(24)));
      }
    }
    RecordFields f;
    f.event_id = static_cast<uint16_t>(rng_() % 4 == 0 ? 0 : 1 + rng_() % Cat().event_count());
    f.name = Str(Pick(30));
    f.timestamp = rng_();
    f.clock = static_cast<uint8_t>(rng_() % 3);
    f.correlation_id = rng_() % 2 ? Str(Pick(64)) : std::string_view();
    if (rng_() % 3 == 0) f.span = SpanIds{rng_() | 1, rng_() % 2 ? rng_() : 0};
    f.measurements = ms.data();
    f.measurement_count = ms.size();
    f.metadata = md.data();
    f.metadata_count = md.size();
    return Encode(f, rng_() % 8 != 0);
  }

 private:
  size_t Pick(size_t below) { return static_cast<size_t>(rng_() % (below + 1)); }
  std::string_view Str(size_t n) {
    std::string s(n, ' ');
    for (char& c : s) c = static_cast<char>('a' + rng_() % 26);
    values_.push_back(std::move(s));
    return values_.back();
  }
  std::mt19937_64 rng_;
  std::vector<std::string> values_;  // the strings the current record's views point into
};

// Records made with FlatBufferBuilder: back-to-front layout, vtables deduplicated (so a table's
// vtable may come after it), strings shared between fields, tables shared between vector slots.
std::vector<uint8_t> BuilderRecord(std::mt19937_64& rng) {
  flatbuffers::FlatBufferBuilder b(256);
  auto str = [&](size_t n) {
    std::string s(n, 'x');
    for (char& c : s) c = static_cast<char>('a' + rng() % 26);
    return b.CreateString(s);
  };
  const auto shared = str(rng() % 9);
  std::vector<flatbuffers::Offset<fb::Meta>> metas;
  const size_t nd = rng() % 5;
  for (size_t i = 0; i < nd; ++i) {
    if (i > 0 && rng() % 4 == 0) {
      metas.push_back(metas.back());  // the same table twice
    } else {
      metas.push_back(
          fb::CreateMeta(b, static_cast<uint16_t>(rng() % 3), rng() % 2 ? shared : str(rng() % 10),
                         rng() % 3 ? str(rng() % 20) : flatbuffers::Offset<flatbuffers::String>()));
    }
  }
  std::vector<flatbuffers::Offset<fb::Measure>> measures;
  const size_t ng = rng() % 4;
  for (size_t i = 0; i < ng; ++i) {
    measures.push_back(fb::CreateMeasure(
        b, static_cast<uint16_t>(rng() % 40), rng() % 2 ? str(rng() % 12) : shared,
        static_cast<fb::ValueType>(rng() % 4), static_cast<int64_t>(rng()),
        1.25 * static_cast<double>(rng() % 9),
        rng() % 2 ? str(rng() % 12) : flatbuffers::Offset<flatbuffers::String>()));
  }
  std::vector<fb::IntMeasure> ints;
  std::vector<fb::FloatMeasure> floats;
  for (size_t i = rng() % 4; i > 0; --i) {
    ints.emplace_back(static_cast<uint16_t>(rng() % 40), static_cast<int64_t>(rng()));
  }
  for (size_t i = rng() % 3; i > 0; --i) {
    floats.emplace_back(static_cast<uint16_t>(rng() % 40), static_cast<double>(rng() % 100) / 3);
  }
  const auto mv = metas.empty() && rng() % 2
                      ? flatbuffers::Offset<flatbuffers::Vector<flatbuffers::Offset<fb::Meta>>>()
                      : b.CreateVector(metas);
  const auto gv = measures.empty() && rng() % 2
                      ? flatbuffers::Offset<flatbuffers::Vector<flatbuffers::Offset<fb::Measure>>>()
                      : b.CreateVector(measures);
  const auto iv = ints.empty() && rng() % 2
                      ? flatbuffers::Offset<flatbuffers::Vector<const fb::IntMeasure*>>()
                      : b.CreateVectorOfStructs(ints);
  const auto fv = floats.empty() && rng() % 2
                      ? flatbuffers::Offset<flatbuffers::Vector<const fb::FloatMeasure*>>()
                      : b.CreateVectorOfStructs(floats);
  const auto name = rng() % 2 ? str(rng() % 25) : flatbuffers::Offset<flatbuffers::String>();
  const auto corr = rng() % 2 ? (rng() % 2 ? shared : str(rng() % 30))
                              : flatbuffers::Offset<flatbuffers::String>();
  fb::EventBuilder eb(b);
  if (rng() % 2) eb.add_event_id(static_cast<uint16_t>(rng() % 20));
  if (!name.IsNull()) eb.add_name(name);
  if (rng() % 2) eb.add_timestamp(rng());
  if (rng() % 2) eb.add_clock(static_cast<fb::Clock>(rng() % 3));
  if (!corr.IsNull()) eb.add_correlation_id(corr);
  if (!iv.IsNull()) eb.add_ints(iv);
  if (!fv.IsNull()) eb.add_floats(fv);
  if (!gv.IsNull()) eb.add_measures(gv);
  if (!mv.IsNull()) eb.add_meta(mv);
  b.Finish(eb.Finish(), fb::EventIdentifier());
  return std::vector<uint8_t>(b.GetBufferPointer(), b.GetBufferPointer() + b.GetSize());
}

// One random edit of a record: bit flips, "interesting" 16/32-bit values at aligned and
// unaligned offsets (vtable entries, offsets, lengths), truncation, extension, word swaps.
std::vector<uint8_t> Mutate(std::vector<uint8_t> p, std::mt19937_64& rng) {
  if (p.empty()) return p;
  const uint32_t n = static_cast<uint32_t>(p.size());
  const uint32_t interesting[] = {
      0,          1,          2, 3,     4,     7,     8,     0xFFFFFFFF, 0xFFFFFFFC, 0x7FFFFFFF,
      0x80000000, 0x7FFFFFFC, n, n - 1, n - 4, n + 4, n / 2, 0xFFFF,     0xFFFE,     0x10000};
  const int edits = 1 + static_cast<int>(rng() % 3);
  for (int e = 0; e < edits && !p.empty(); ++e) {
    const size_t size = p.size();
    const size_t at = rng() % size;
    switch (rng() % 8) {
      case 0:
      case 1:
        p[at] ^= static_cast<uint8_t>(1u << (rng() % 8));
        break;
      case 2:
        p[at] = static_cast<uint8_t>(rng());
        break;
      case 3: {  // a 32-bit value, usually where an offset or a length would be
        const size_t w = (rng() % 4 ? at & ~size_t{3} : at);
        if (w + 4 <= size) {
          uint32_t v = interesting[rng() % std::size(interesting)];
          if (rng() % 3 == 0) {
            uint32_t cur;
            std::memcpy(&cur, p.data() + w, 4);
            v = cur + static_cast<uint32_t>(static_cast<int>(rng() % 17) - 8);
          }
          std::memcpy(p.data() + w, &v, 4);
        }
        break;
      }
      case 4: {  // a 16-bit value (vtable size or field offset)
        const size_t w = at & ~size_t{1};
        if (w + 2 <= size) {
          const uint16_t v = static_cast<uint16_t>(rng() % 3 == 0 ? rng() : rng() % 64);
          std::memcpy(p.data() + w, &v, 2);
        }
        break;
      }
      case 5:
        p.resize(rng() % size);
        break;
      case 6:
        for (size_t k = 1 + rng() % 16; k > 0; --k) p.push_back(static_cast<uint8_t>(rng()));
        break;
      default: {
        const size_t a = (rng() % size) & ~size_t{3}, b = (rng() % size) & ~size_t{3};
        if (a + 4 <= size && b + 4 <= size) {
          for (int i = 0; i < 4; ++i) std::swap(p[a + i], p[b + i]);
        }
      }
    }
  }
  return p;
}

// ── malicious shapes (the payload attacks of hostile_shm_test.cc, and more) ─────────────────

struct Shape {
  std::string label;
  std::vector<uint8_t> bytes;
};

void Put32(std::vector<uint8_t>& v, size_t at, uint32_t x) { std::memcpy(v.data() + at, &x, 4); }
void Put16(std::vector<uint8_t>& v, size_t at, uint16_t x) { std::memcpy(v.data() + at, &x, 2); }
uint32_t Get32(const std::vector<uint8_t>& v, size_t at) {
  uint32_t x;
  std::memcpy(&x, v.data() + at, 4);
  return x;
}

std::vector<Shape> MaliciousShapes() {
  flatbuffers::FlatBufferBuilder b;
  const uint16_t key = Cat().MeasurementKeyId("system_time");
  const auto name = b.CreateString("python.call.start");
  const std::vector<fb::IntMeasure> ints{fb::IntMeasure(key, 42)};
  const auto iv = b.CreateVectorOfStructs(ints);
  const auto corr = b.CreateString("corr");
  fb::EventBuilder eb(b);
  eb.add_name(name);
  eb.add_ints(iv);
  eb.add_correlation_id(corr);
  eb.add_timestamp(1);
  b.Finish(eb.Finish(), fb::EventIdentifier());
  const std::vector<uint8_t> base(b.GetBufferPointer(), b.GetBufferPointer() + b.GetSize());
  const fb::Event* ev = fb::GetEvent(b.GetBufferPointer());
  auto offset_of = [&](const void* p) {
    return static_cast<size_t>(static_cast<const uint8_t*>(p) - b.GetBufferPointer());
  };
  const size_t root = Get32(base, 0);
  std::vector<Shape> out;
  auto add = [&](std::string label, std::vector<uint8_t> p) {
    out.push_back({std::move(label), std::move(p)});
  };
  {
    auto p = base;
    Put32(p, root, static_cast<uint32_t>(-static_cast<int32_t>(p.size() * 16)));
    add("vtable offset pointing outside the buffer", p);
  }
  {
    auto p = base;
    Put32(p, root, Get32(p, root) + 1);
    add("table with a misaligned soffset", p);
  }
  {
    auto p = base;
    const size_t vtable = root - static_cast<int32_t>(Get32(p, root));
    const uint16_t huge = 0xFFF0;
    std::memcpy(p.data() + vtable, &huge, 2);
    add("vtable larger than the buffer", p);
  }
  {
    auto p = base;
    const size_t vtable = root - static_cast<int32_t>(Get32(p, root));
    const uint16_t odd = 7;
    std::memcpy(p.data() + vtable, &odd, 2);
    add("vtable of odd size", p);
  }
  {
    auto p = base;
    Put32(p, offset_of(ev->ints()), 0x80000000u);
    add("vector length 2^31", p);
  }
  {
    auto p = base;
    p[offset_of(ev->name()->c_str()) + ev->name()->size()] = 'x';
    add("string without NUL terminator", p);
  }
  {
    auto p = base;
    Put32(p, offset_of(ev->name()), 0x7FFFFFF0u);
    add("string length past the end", p);
  }
  {
    auto p = base;
    Put32(p, 0, static_cast<uint32_t>(p.size()));
    add("root offset at the end of the buffer", p);
  }
  {
    auto p = base;
    Put32(p, 0, 0);
    add("root offset 0", p);
  }
  {
    auto p = base;
    std::memcpy(p.data() + 4, "XXXX", 4);
    add("wrong file identifier", p);
  }
  {
    auto p = base;
    p.resize(p.size() / 2);
    add("FlatBuffer cut in half", p);
  }
  add("11 bytes", std::vector<uint8_t>(base.begin(), base.begin() + 11));
  add("empty", {});
  {
    // A [Meta] vector of 1100 references to one table: over the 1024-table budget.
    flatbuffers::FlatBufferBuilder m;
    const auto k = m.CreateString("k");
    const auto meta = fb::CreateMeta(m, 0, k, k);
    const std::vector<flatbuffers::Offset<fb::Meta>> metas(1100, meta);
    const auto mv = m.CreateVector(metas);
    fb::EventBuilder e(m);
    e.add_meta(mv);
    m.Finish(e.Finish(), fb::EventIdentifier());
    add("1100 tables sharing one subtree",
        std::vector<uint8_t>(m.GetBufferPointer(), m.GetBufferPointer() + m.GetSize()));
  }
  {
    // An encoder record whose ints uoffset is moved 4 bytes back, onto the vector's padding
    // word, which now claims 1 element: the stock Verifier accepts it (it checks the length
    // field's alignment only); the element is 4 bytes off 8-alignment.
    const Measurement ms[] = {
        {MeasurementKey{Cat().MeasurementKeyId("duration"), "duration"}, int64_t{5}}};
    RecordFields f;
    f.event_id = 1;
    f.measurements = ms;
    f.measurement_count = 1;
    std::vector<uint8_t> p = Encode(f, true);
    constexpr size_t kIntsField = 32 + 12;  // Event table + its `ints` slot (record_writer.cc)
    const size_t vec = kIntsField + Get32(p, kIntsField);
    Put32(p, kIntsField, Get32(p, kIntsField) - 4);
    Put32(p, vec - 4, 1);
    add("struct vector with misaligned elements", p);
  }
  {
    // A span event whose span_id slot is moved 4 bytes: no longer 8-aligned.
    RecordFields f;
    f.event_id = 1;
    f.span = SpanIds{7, 3};
    std::vector<uint8_t> p = Encode(f, true);
    constexpr size_t kVtable = 8, kSpanIdSlot = 4 + 2 * 9;  // record_writer.cc
    Put16(p, kVtable + kSpanIdSlot, 44);
    add("span id misaligned", p);
  }
  {
    // A record written before span ids existed (a vtable that ends at `meta`), read by a
    // FlatBufferBuilder of today's schema: valid, no span ids.
    flatbuffers::FlatBufferBuilder m;
    fb::EventBuilder e(m);
    e.add_event_id(1);
    e.add_timestamp(5);
    m.Finish(e.Finish(), fb::EventIdentifier());
    add("record without span fields (valid)",
        std::vector<uint8_t>(m.GetBufferPointer(), m.GetBufferPointer() + m.GetSize()));
  }
  {
    // The builder's own layout of a span event (its vtable order, not the encoder's).
    flatbuffers::FlatBufferBuilder m;
    fb::EventBuilder e(m);
    e.add_event_id(1);
    e.add_span_id(0x0123456789abcdefull);
    e.add_parent_span_id(42);
    m.Finish(e.Finish(), fb::EventIdentifier());
    add("builder span event (valid)",
        std::vector<uint8_t>(m.GetBufferPointer(), m.GetBufferPointer() + m.GetSize()));
  }
  {
    // Empty struct vectors whose (absent) elements would be misaligned: valid, nothing to read.
    flatbuffers::FlatBufferBuilder m;
    const auto iv = m.CreateVectorOfStructs(std::vector<fb::IntMeasure>{});
    fb::EventBuilder e(m);
    e.add_event_id(1);
    e.add_ints(iv);
    m.Finish(e.Finish(), fb::EventIdentifier());
    add("empty struct vector (valid)",
        std::vector<uint8_t>(m.GetBufferPointer(), m.GetBufferPointer() + m.GetSize()));
  }
  return out;
}

bool IsValidShape(const Shape& s) { return s.label.find("(valid)") != std::string::npos; }

// ── tests ───────────────────────────────────────────────────────────────────────────────────

TEST(RecordVerifyTest, AcceptsAndDecodesEveryRecordTheEncoderWrites) {
  EncoderRecords gen(1);
  for (int i = 0; i < 20000; ++i) {
    const std::vector<uint8_t> rec = gen.Next();
    ASSERT_TRUE(ExpectAgreement(rec, "encoder record " + std::to_string(i)))
        << "the stock Verifier must accept what the encoder writes";
  }
}

TEST(RecordVerifyTest, AgreesWithTheStockVerifierOnFlatBufferBuilderLayouts) {
  std::mt19937_64 rng(2);
  for (int i = 0; i < 20000; ++i) {
    ExpectAgreement(BuilderRecord(rng), "builder record " + std::to_string(i));
  }
}

TEST(RecordVerifyTest, AgreesWithTheStockVerifierOnRandomlyMutatedRecords) {
  std::mt19937_64 rng(3);
  EncoderRecords gen(4);
  size_t accepted = 0, refused = 0;
  for (int i = 0; i < 150000; ++i) {
    const std::vector<uint8_t> base = i % 3 == 0 ? BuilderRecord(rng) : gen.Next();
    std::vector<uint8_t> m = Mutate(base, rng);
    if (rng() % 4 == 0) m = Mutate(m, rng);  // edits on top of edits
    (ExpectAgreement(m, "mutation " + std::to_string(i)) ? accepted : refused)++;
    if (HasFailure()) break;
  }
  // Both outcomes are exercised, so a verifier that accepts (or refuses) everything fails.
  EXPECT_GT(accepted, 10000u);
  EXPECT_GT(refused, 10000u);
}

TEST(RecordVerifyTest, RefusesEveryKnownMaliciousShapeAndAcceptsTheValidOnes) {
  for (const Shape& s : MaliciousShapes()) {
    SCOPED_TRACE(s.label);
    const ExactBuffer b(s.bytes);
    EXPECT_EQ(internal::VerifyEventRecord(b.data(), b.size()), IsValidShape(s));
    ExpectAgreement(s.bytes, s.label);
  }
}

TEST(RecordVerifyTest, MutationsOfMaliciousShapesNeverPassWhereTheStockVerifierFails) {
  std::mt19937_64 rng(5);
  const std::vector<Shape> shapes = MaliciousShapes();
  for (int i = 0; i < 30000 && !HasFailure(); ++i) {
    const Shape& s = shapes[rng() % shapes.size()];
    ExpectAgreement(Mutate(s.bytes, rng), s.label + " mutated " + std::to_string(i));
  }
}

TEST(RecordVerifyTest, RefusesStructVectorsTheStockVerifierLetsThroughMisaligned) {
  for (const Shape& s : MaliciousShapes()) {
    if (s.label != "struct vector with misaligned elements") continue;
    const ExactBuffer b(s.bytes);
    flatbuffers::Verifier v(b.data(), b.size(), internal::kRecordMaxDepth,
                            internal::kRecordMaxTables);
    ASSERT_TRUE(fb::VerifyEventBuffer(v)) << "the shape no longer tests the extra check";
    EXPECT_FALSE(internal::VerifyEventRecord(b.data(), b.size()));
    return;
  }
  FAIL() << "shape not found";
}

TEST(RecordVerifyTest, ReportsTooManyFieldsWithoutDecodingThem) {
  std::vector<std::string> keys;
  std::vector<Metadata> md;
  keys.reserve(300);
  for (int i = 0; i < 255; ++i) {
    keys.push_back("k" + std::to_string(i));
    md.emplace_back(keys.back(), "v");
  }
  std::vector<Measurement> ms;
  for (int i = 0; i < 255; ++i) ms.emplace_back(MeasurementKey{1, Cat().MeasurementKey(1)}, i);
  RecordFields f;
  f.event_id = 1;
  f.metadata = md.data();
  f.metadata_count = md.size();
  f.measurements = ms.data();
  f.measurement_count = ms.size();
  const ExactBuffer b(Encode(f, true));
  RawMeasurement measurements[internal::Folder::kMaxFields];
  RawMeta metadata[internal::Folder::kMaxFields];
  DecodedRecord rec;
  // Capacity 256 holds them; 100 does not.
  ASSERT_TRUE(internal::DecodeEventRecord(b.data(), b.size(), measurements, metadata, 256, &rec));
  EXPECT_FALSE(rec.too_many_fields);
  EXPECT_EQ(rec.measurement_count, 255u);
  EXPECT_EQ(rec.metadata_count, 255u);
  EXPECT_EQ(metadata[254].key, "k254");
  ASSERT_TRUE(internal::DecodeEventRecord(b.data(), b.size(), measurements, metadata, 100, &rec));
  EXPECT_TRUE(rec.too_many_fields);
  EXPECT_EQ(rec.event_id, 1);  // the Event's own fields are still decoded
  EXPECT_EQ(rec.measurement_count, 0u);
  EXPECT_EQ(rec.metadata_count, 0u);
}

// ── the decode + fold path the host runs ────────────────────────────────────────────────────

// What a handler sees for one record: decoded by the host's decoder, folded by the catalog.
struct Folded {
  bool decoded = false;
  internal::FoldOutcome outcome;
  EventView view;
};

class HostPath {
 public:
  Folded Run(const std::vector<uint8_t>& bytes) {
    buf_ = std::make_unique<ExactBuffer>(bytes);
    Folded f;
    internal::RawEvent raw;
    f.decoded = decoder_.Decode(buf_->data(), static_cast<uint32_t>(buf_->size()), time_, &raw);
    if (f.decoded) f.outcome = folder_.Fold(raw, ctx_, &f.view);
    return f;
  }

 private:
  internal::TimeConverter time_;
  internal::RecordDecoder decoder_;
  internal::Folder folder_{Cat()};
  internal::FoldContext ctx_{"node-1", "pool", "worker-1", "4242", 4242, Transport::kShm};
  std::unique_ptr<ExactBuffer> buf_;
};

std::vector<uint8_t> UnixStamped(int64_t ns) {
  const Measurement ms[] = {{MeasurementKey{Cat().MeasurementKeyId("duration"), "duration"}, 1}};
  RecordFields f;
  f.event_id = Cat().FindWorkerEvent("python.call.stop");
  f.timestamp = static_cast<uint64_t>(ns);
  f.clock = static_cast<uint8_t>(fb::Clock::UnixNs);
  f.measurements = ms;
  f.measurement_count = 1;
  return Encode(f, true);
}

TEST(RecordDecodeFoldTest, TimestampMetadataIsTheDecimalTimeWhateverTheSequence) {
  HostPath host;
  std::vector<int64_t> seq = {1763940000123456789,
                              1763940000123456790,
                              1763940000199999999,
                              1763940000200000000,
                              1763940000200000001,
                              1763940000123456789,
                              99999999,
                              100000000,
                              100000001,
                              0,
                              -1,
                              -100000000,
                              999999999999,
                              1000000000000,
                              1000000000001,
                              std::numeric_limits<int64_t>::max(),
                              std::numeric_limits<int64_t>::min()};
  std::mt19937_64 rng(6);
  int64_t t = 1763940000000000000;
  for (int i = 0; i < 5000; ++i) {
    t += static_cast<int64_t>(rng() % 3000000);  // steps across the 10^8 boundaries
    seq.push_back(t);
  }
  for (int i = 0; i < 5000; ++i) {
    t += static_cast<int64_t>(rng() % 3000);  // steps across the 10^4 boundaries
    seq.push_back(t);
  }
  seq.push_back(t - 1);  // backwards
  seq.push_back(t - 20000);
  for (const int64_t ns : seq) {
    SCOPED_TRACE(ns);
    const Folded f = host.Run(UnixStamped(ns));
    ASSERT_TRUE(f.decoded);
    ASSERT_TRUE(f.outcome.delivered);
    EXPECT_EQ(f.view.timestamp_ns, ns);
    EXPECT_EQ(f.view.meta("timestamp_ns"), std::to_string(ns));
  }
}

// The fold of what the host's decoder produced equals the fold of what the generated accessors
// read, for records of every shape: same outcome, event, measurements and metadata.
TEST(RecordDecodeFoldTest, FoldsToTheSameEventAsTheGeneratedAccessorsRead) {
  HostPath host;
  internal::Folder folder(Cat());
  const internal::FoldContext ctx{"node-1", "pool", "worker-1", "4242", 4242, Transport::kShm};
  const internal::TimeConverter time;
  EncoderRecords gen(7);
  std::mt19937_64 rng(8);
  size_t delivered = 0;
  for (int i = 0; i < 5000 && !HasFailure(); ++i) {
    const std::vector<uint8_t> bytes = i % 2 ? gen.Next() : BuilderRecord(rng);
    SCOPED_TRACE(i);
    const Folded ours = host.Run(bytes);
    ASSERT_TRUE(ours.decoded);
    const ExactBuffer b(bytes);
    const Reference ref = ReferenceDecode(b.data());
    internal::RawEvent raw;
    raw.event_id = ref.rec.event_id;
    raw.name = ref.rec.name;
    raw.timestamp_ns = time.ToUnixNs(ref.rec.clock, ref.rec.timestamp);
    raw.correlation_id = ref.rec.correlation_id;
    raw.measurements = ref.measurements;
    raw.metadata = ref.metadata;
    EventView want;
    const internal::FoldOutcome out = folder.Fold(raw, ctx, &want);
    ASSERT_EQ(ours.outcome.delivered, out.delivered);
    ASSERT_EQ(ours.outcome.reject_reason, out.reject_reason);
    ASSERT_EQ(ours.outcome.truncated, out.truncated);
    if (!out.delivered) continue;
    ++delivered;
    EXPECT_EQ(ours.view.event, want.event);
    EXPECT_EQ(ours.view.correlation_id, want.correlation_id);
    ASSERT_EQ(ours.view.measurements.size(), want.measurements.size());
    for (size_t k = 0; k < want.measurements.size(); ++k) {
      EXPECT_EQ(ours.view.measurements[k].key, want.measurements[k].key);
      EXPECT_TRUE(SameValue(ours.view.measurements[k].value, want.measurements[k].value));
    }
    ASSERT_EQ(ours.view.metadata.size(), want.metadata.size());
    for (size_t k = 0; k < want.metadata.size(); ++k) {
      EXPECT_EQ(ours.view.metadata[k].key, want.metadata[k].key);
      EXPECT_EQ(ours.view.metadata[k].key_id, want.metadata[k].key_id);
      // timestamp_ns: the clocks convert the same within one calibration.
      if (want.metadata[k].key != "timestamp_ns") {
        EXPECT_EQ(ours.view.metadata[k].value, want.metadata[k].value);
      }
    }
  }
  EXPECT_GT(delivered, 100u);
}

// Timestamps come from workers: every clock converts any 64-bit value without overflow (the
// sanitizer build turns a signed overflow into a failure), consistently with its neighbours.
TEST(RecordDecodeFoldTest, ClockConversionOfHostileTimestampsIsDefinedForEveryClock) {
  const internal::TimeConverter time;
  const uint64_t hostile[] = {0,
                              1,
                              0x7FFFFFFFFFFFFFFFull,
                              0x8000000000000000ull,
                              0xFFFFFFFFFFFFFFFFull,
                              0xFFFFFFFFFFFFFFFEull,
                              0x8000000000000001ull};
  for (const uint64_t v : hostile) {
    SCOPED_TRACE(v);
    EXPECT_EQ(time.ToUnixNs(static_cast<uint8_t>(fb::Clock::UnixNs), v), static_cast<int64_t>(v));
    // Monotonic nanoseconds shift by a fixed offset, wrapping at the ends of the range.
    const int64_t a = time.ToUnixNs(static_cast<uint8_t>(fb::Clock::MonotonicNs), v);
    const int64_t b = time.ToUnixNs(static_cast<uint8_t>(fb::Clock::MonotonicNs), v + 1);
    EXPECT_EQ(static_cast<uint64_t>(b) - static_cast<uint64_t>(a), 1u);
    // TSC ticks far from the calibration point saturate instead of overflowing.
    (void)time.ToUnixNs(static_cast<uint8_t>(fb::Clock::Tsc), v);
    (void)time.ToUnixNs(0xFF, v);  // an unknown clock reads as Unix nanoseconds
  }
  HostPath host;
  for (const uint64_t v : hostile) {
    for (const uint8_t clock : {0, 1, 2, 7}) {
      const Measurement ms[] = {
          {MeasurementKey{Cat().MeasurementKeyId("duration"), "duration"}, 1}};
      RecordFields f;
      f.event_id = Cat().FindWorkerEvent("python.call.stop");
      f.timestamp = v;
      f.clock = clock;
      f.measurements = ms;
      f.measurement_count = 1;
      const Folded folded = host.Run(Encode(f, true));
      ASSERT_TRUE(folded.decoded);
      EXPECT_TRUE(folded.outcome.delivered);
      EXPECT_EQ(folded.view.meta("timestamp_ns"), std::to_string(folded.view.timestamp_ns));
    }
  }
}

TEST(RecordDecodeFoldTest, RecordsWithMoreFieldsThanTheHostDecodesAreRejectedAsTooMany) {
  flatbuffers::FlatBufferBuilder b;
  const std::vector<fb::IntMeasure> ints(300, fb::IntMeasure(1, 7));
  const auto iv = b.CreateVectorOfStructs(ints);
  fb::EventBuilder eb(b);
  eb.add_event_id(Cat().FindWorkerEvent("python.call.stop"));
  eb.add_ints(iv);
  b.Finish(eb.Finish(), fb::EventIdentifier());
  HostPath host;
  const Folded f =
      host.Run(std::vector<uint8_t>(b.GetBufferPointer(), b.GetBufferPointer() + b.GetSize()));
  ASSERT_TRUE(f.decoded);
  EXPECT_FALSE(f.outcome.delivered);
  EXPECT_EQ(f.outcome.reject_reason, shm::kRejectTooManyFields);
}

TEST(RecordDecodeFoldTest, MalformedRecordsAreRefusedBeforeTheFoldAndValidShapesPass) {
  HostPath host;
  for (const Shape& s : MaliciousShapes()) {
    SCOPED_TRACE(s.label);
    EXPECT_EQ(host.Run(s.bytes).decoded, IsValidShape(s));
  }
}

}  // namespace
}  // namespace pitlane
