// The hand-written FlatBuffer encoder (record.h): every record it produces must be a valid
// FlatBuffer of schemas/event.fbs that the stock Verifier accepts and the flatc-generated
// accessors read back exactly.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "pitlane/catalog.h"
#include "pitlane/fb/event_generated.h"
#include "pitlane/record.h"

namespace pitlane {
namespace {

constexpr size_t kGuardBytes = 64;
constexpr uint8_t kGuardByte = 0xA5;

const Catalog& Cat() { return *Catalog::Default(); }

// A record encoded into an 8-aligned buffer of exactly p.size bytes followed by guard bytes.
struct Encoded {
  PreparedRecord prepared;
  std::unique_ptr<uint64_t[]> storage;
  const uint8_t* data() const { return reinterpret_cast<const uint8_t*>(storage.get()); }
  size_t size() const { return prepared.size; }
};

std::unique_ptr<Encoded> Encode(const RecordFields& f, const Catalog* catalog, bool use_ids) {
  auto e = std::make_unique<Encoded>();
  PrepareRecord(f, catalog, use_ids, &e->prepared);
  const size_t size = e->prepared.size;
  if (size == 0) return e;
  const size_t words = (size + kGuardBytes + 7) / 8;
  e->storage.reset(new uint64_t[words]);
  std::memset(e->storage.get(), kGuardByte, words * 8);
  EncodeRecord(f, e->prepared, reinterpret_cast<uint8_t*>(e->storage.get()));
  return e;
}

std::string_view View(const flatbuffers::String* s) {
  return s == nullptr ? std::string_view() : std::string_view(s->c_str(), s->size());
}

bool SameDouble(double a, double b) { return std::memcmp(&a, &b, sizeof a) == 0; }

// Encodes `f`, verifies it and checks every field read back through the generated accessors
// against what the encoder was given (and how the catalog resolves each key).
void ExpectRoundTrip(const RecordFields& f, const Catalog* catalog, bool use_ids) {
  SCOPED_TRACE(::testing::Message() << "measurements=" << f.measurement_count
                                  << " metadata=" << f.metadata_count << " use_ids=" << use_ids);
  const std::unique_ptr<Encoded> enc = Encode(f, catalog, use_ids);
  ASSERT_GT(enc->size(), 0u);
  const uint8_t* buf = enc->data();

  // Nothing written past p.size.
  for (size_t i = enc->size(); i < enc->size() + kGuardBytes; ++i) {
    ASSERT_EQ(buf[i], kGuardByte) << "encoder wrote " << i - enc->size() + 1
                                  << " bytes past p.size = " << enc->size();
  }

  // The stock Verifier (default limits) and the host's stricter limits both accept it.
  {
    flatbuffers::Verifier v(buf, enc->size());
    ASSERT_TRUE(fb::VerifyEventBuffer(v));
  }
  {
    flatbuffers::Verifier v(buf, enc->size(), /*max_depth=*/8, /*max_tables=*/1024);
    ASSERT_TRUE(fb::VerifyEventBuffer(v));
  }
  ASSERT_TRUE(fb::EventBufferHasIdentifier(buf));
  ASSERT_EQ(std::memcmp(buf + 4, "PLEV", 4), 0);

  const fb::Event* e = fb::GetEvent(buf);
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->event_id(), f.event_id);
  if (f.event_id == 0) {
    ASSERT_NE(e->name(), nullptr);
    EXPECT_EQ(View(e->name()), f.name);
  } else {
    EXPECT_EQ(e->name(), nullptr);
  }
  EXPECT_EQ(e->timestamp(), f.timestamp);
  EXPECT_EQ(static_cast<uint8_t>(e->clock()), f.clock);
  if (f.correlation_id.empty()) {
    EXPECT_EQ(e->correlation_id(), nullptr);
  } else {
    ASSERT_NE(e->correlation_id(), nullptr);
    EXPECT_EQ(View(e->correlation_id()), f.correlation_id);
  }
  EXPECT_EQ(e->span_id(), f.span.span_id);
  EXPECT_EQ(e->parent_span_id(), f.span.span_id != 0 ? f.span.parent_span_id : 0u);

  // Expected placement of each measurement, resolved independently of the encoder.
  size_t ni = 0, nf = 0, ng = 0;
  const auto* ints = e->ints();
  const auto* floats = e->floats();
  const auto* measures = e->measures();
  for (size_t i = 0; i < f.measurement_count; ++i) {
    SCOPED_TRACE(::testing::Message() << "measurement " << i);
    const Measurement& m = f.measurements[i];
    uint16_t id = 0;
    if (use_ids) id = m.key_id != 0 ? m.key_id : (catalog ? catalog->MeasurementKeyId(m.key) : 0);
    if (id != 0 && m.value.kind == Value::Kind::kInt) {
      ASSERT_NE(ints, nullptr);
      ASSERT_LT(ni, ints->size());
      const fb::IntMeasure* im = ints->Get(static_cast<flatbuffers::uoffset_t>(ni++));
      EXPECT_EQ(reinterpret_cast<uintptr_t>(im) % alignof(fb::IntMeasure), 0u);
      EXPECT_EQ(im->key(), id);
      EXPECT_EQ(im->value(), m.value.i);
    } else if (id != 0 && m.value.kind == Value::Kind::kDouble) {
      ASSERT_NE(floats, nullptr);
      ASSERT_LT(nf, floats->size());
      const fb::FloatMeasure* fm = floats->Get(static_cast<flatbuffers::uoffset_t>(nf++));
      EXPECT_EQ(reinterpret_cast<uintptr_t>(fm) % alignof(fb::FloatMeasure), 0u);
      EXPECT_EQ(fm->key(), id);
      EXPECT_TRUE(SameDouble(fm->value(), m.value.d)) << fm->value() << " vs " << m.value.d;
    } else {
      ASSERT_NE(measures, nullptr);
      ASSERT_LT(ng, measures->size());
      const fb::Measure* gm = measures->Get(static_cast<flatbuffers::uoffset_t>(ng++));
      EXPECT_EQ(gm->key_id(), id);
      EXPECT_EQ(View(gm->key()), m.key);
      EXPECT_EQ(static_cast<uint8_t>(gm->type()), static_cast<uint8_t>(m.value.kind));
      switch (m.value.kind) {
        case Value::Kind::kInt: EXPECT_EQ(gm->int_value(), m.value.i); break;
        case Value::Kind::kDouble:
          EXPECT_TRUE(SameDouble(gm->float_value(), m.value.d));
          break;
        case Value::Kind::kString: EXPECT_EQ(View(gm->string_value()), m.value.s); break;
      }
    }
  }
  EXPECT_EQ(ints ? ints->size() : 0u, ni);
  EXPECT_EQ(floats ? floats->size() : 0u, nf);
  EXPECT_EQ(measures ? measures->size() : 0u, ng);

  const auto* meta = e->meta();
  EXPECT_EQ(meta ? meta->size() : 0u, f.metadata_count);
  for (size_t i = 0; i < f.metadata_count && meta && i < meta->size(); ++i) {
    SCOPED_TRACE(::testing::Message() << "metadata " << i);
    const Metadata& m = f.metadata[i];
    uint16_t id = 0;
    if (use_ids) id = m.key_id != 0 ? m.key_id : (catalog ? catalog->MetadataKeyId(m.key) : 0);
    const fb::Meta* em = meta->Get(static_cast<flatbuffers::uoffset_t>(i));
    EXPECT_EQ(em->key_id(), id);
    if (id == 0) {
      ASSERT_NE(em->key(), nullptr);
      EXPECT_EQ(View(em->key()), m.key);
    } else {
      EXPECT_EQ(em->key(), nullptr);  // known keys travel by id only
    }
    ASSERT_NE(em->value(), nullptr);
    EXPECT_EQ(View(em->value()), m.value);
  }
}

RecordFields Base(std::string_view event = "python.call.stop") {
  RecordFields f;
  f.event_id = Cat().FindWorkerEvent(event);
  f.timestamp = 0x0123456789ABCDEFull;
  f.clock = static_cast<uint8_t>(fb::Clock::MonotonicNs);
  return f;
}

MeasurementKey MKey(std::string_view k) { return {Cat().MeasurementKeyId(k), k}; }
MetadataKey DKey(std::string_view k) { return {Cat().MetadataKeyId(k), k}; }

TEST(RecordTest, EventWithNoFieldsVerifiesAndReadsBack) {
  RecordFields f = Base();
  ASSERT_NE(f.event_id, 0);
  ExpectRoundTrip(f, &Cat(), true);
  f.clock = static_cast<uint8_t>(fb::Clock::UnixNs);
  f.timestamp = 0;
  ExpectRoundTrip(f, &Cat(), true);
  f.clock = static_cast<uint8_t>(fb::Clock::Tsc);
  f.timestamp = std::numeric_limits<uint64_t>::max();
  ExpectRoundTrip(f, &Cat(), true);
}

TEST(RecordTest, IntMeasurementsTravelAsStructsWithCatalogIds) {
  const Measurement ms[] = {
      {MKey("duration"), int64_t{1234}},
      {"response_size", 512},  // resolved by name through the catalog
      {MKey("bytes"), std::numeric_limits<int64_t>::min()},
      {MKey("count"), std::numeric_limits<int64_t>::max()},
      {MKey("generation"), -1},
  };
  RecordFields f = Base();
  f.measurements = ms;
  f.measurement_count = std::size(ms);
  ExpectRoundTrip(f, &Cat(), true);
  const std::unique_ptr<Encoded> enc = Encode(f, &Cat(), true);
  const fb::Event* e = fb::GetEvent(enc->data());
  ASSERT_NE(e->ints(), nullptr);
  EXPECT_EQ(e->ints()->size(), 5u);
  EXPECT_EQ(e->floats(), nullptr);
  EXPECT_EQ(e->measures(), nullptr);
  EXPECT_EQ(e->ints()->Get(1)->key(), Cat().MeasurementKeyId("response_size"));
}

TEST(RecordTest, FloatMeasurementsKeepEveryBitOfTheDouble) {
  const Measurement ms[] = {
      {MKey("cpu_percent"), 3.5},
      {MKey("latency_ms"), -0.0},
      {MKey("duration_ms"), std::numeric_limits<double>::infinity()},
      {MKey("queue_time"), std::numeric_limits<double>::quiet_NaN()},
      {MKey("network_time"), std::numeric_limits<double>::denorm_min()},
      {"uptime", 1e300},
  };
  RecordFields f = Base("python.cpu.sampled");
  f.measurements = ms;
  f.measurement_count = std::size(ms);
  ExpectRoundTrip(f, &Cat(), true);
  const std::unique_ptr<Encoded> enc = Encode(f, &Cat(), true);
  const fb::Event* e = fb::GetEvent(enc->data());
  EXPECT_EQ(e->ints(), nullptr);
  ASSERT_NE(e->floats(), nullptr);
  EXPECT_EQ(e->floats()->size(), 6u);
  EXPECT_EQ(e->measures(), nullptr);
}

TEST(RecordTest, StringMeasurementsTravelAsTablesWithTheirKeyId) {
  const Measurement ms[] = {
      {MKey("request_size"), "big"},
      {"duration", std::string_view("")},
      {MKey("system_time"), 7},
      {MKey("cpu_percent"), 0.25},
  };
  RecordFields f = Base("python.call.start");
  f.measurements = ms;
  f.measurement_count = std::size(ms);
  ExpectRoundTrip(f, &Cat(), true);
  const std::unique_ptr<Encoded> enc = Encode(f, &Cat(), true);
  const fb::Event* e = fb::GetEvent(enc->data());
  ASSERT_NE(e->measures(), nullptr);
  ASSERT_EQ(e->measures()->size(), 2u);
  EXPECT_EQ(e->measures()->Get(0)->key_id(), Cat().MeasurementKeyId("request_size"));
  EXPECT_EQ(e->measures()->Get(0)->type(), fb::ValueType::String);
  EXPECT_EQ(View(e->measures()->Get(0)->string_value()), "big");
}

TEST(RecordTest, MeasurementKeysUnknownToTheCatalogTravelByName) {
  const Measurement ms[] = {
      {"bogus_int", 42},
      {"bogus_float", 2.5},
      {"bogus_string", "text"},
      {MKey("duration"), 9},
  };
  RecordFields f = Base();
  f.measurements = ms;
  f.measurement_count = std::size(ms);
  ExpectRoundTrip(f, &Cat(), true);
  const std::unique_ptr<Encoded> enc = Encode(f, &Cat(), true);
  const fb::Event* e = fb::GetEvent(enc->data());
  ASSERT_NE(e->measures(), nullptr);
  ASSERT_EQ(e->measures()->size(), 3u);
  for (const fb::Measure* m : *e->measures()) EXPECT_EQ(m->key_id(), 0);
  EXPECT_EQ(e->measures()->Get(0)->type(), fb::ValueType::Int);
  EXPECT_EQ(e->measures()->Get(0)->int_value(), 42);
  EXPECT_EQ(e->measures()->Get(1)->type(), fb::ValueType::Float);
  EXPECT_EQ(e->measures()->Get(1)->float_value(), 2.5);
}

TEST(RecordTest, MetadataKnownKeysTravelByIdAndUnknownKeysByName) {
  const Metadata md[] = {
      {DKey("command"), "predict"},
      {"result", "ok"},  // known, resolved by name
      {"custom_key", "custom value"},
      {"another.unknown-key_1", ""},
      {DKey("traceback"), std::string_view("line 1\nline 2\n\0inside", 21)},
  };
  RecordFields f = Base();
  f.metadata = md;
  f.metadata_count = std::size(md);
  ExpectRoundTrip(f, &Cat(), true);
  const std::unique_ptr<Encoded> enc = Encode(f, &Cat(), true);
  const fb::Event* e = fb::GetEvent(enc->data());
  ASSERT_NE(e->meta(), nullptr);
  EXPECT_EQ(e->meta()->Get(1)->key_id(), Cat().MetadataKeyId("result"));
  EXPECT_EQ(e->meta()->Get(2)->key_id(), 0);
  EXPECT_EQ(View(e->meta()->Get(2)->key()), "custom_key");
}

TEST(RecordTest, EventByNameCarriesTheNameAndNoId) {
  for (std::string_view name : {"inference.start", "python.call.start", "Python.call.start",
                                "x", ""}) {
    SCOPED_TRACE(name);
    const Measurement ms[] = {{"duration", 1}};
    const Metadata md[] = {{"command", "c"}};
    RecordFields f = Base();
    f.event_id = 0;
    f.name = name;
    f.measurements = ms;
    f.measurement_count = 1;
    f.metadata = md;
    f.metadata_count = 1;
    ExpectRoundTrip(f, &Cat(), true);
  }
}

TEST(RecordTest, CorrelationIdEmptyIsAbsentAndLongIdsReadBack) {
  const std::string id128(128, 'c');
  const std::string id27 = "pl-0123456789abcdef01234567";
  for (std::string_view id : {std::string_view(), std::string_view(id27), std::string_view(id128),
                              std::string_view("a")}) {
    SCOPED_TRACE(id.size());
    const Measurement ms[] = {{MKey("duration"), 5}};
    RecordFields f = Base();
    f.correlation_id = id;
    f.measurements = ms;
    f.measurement_count = 1;
    ExpectRoundTrip(f, &Cat(), true);
  }
}

TEST(RecordTest, TypicalEventMixesEveryKindOfField) {
  const Measurement ms[] = {{MKey("duration"), 1234}, {MKey("response_size"), 512},
                            {MKey("cpu_percent"), 3.5}, {"request_size", "big"},
                            {"unknown_measure", 1.0}};
  const Metadata md[] = {{DKey("command"), "predict"}, {DKey("worker_id"), "w1"},
                         {DKey("result"), "ok"}, {"custom", "x"}};
  RecordFields f = Base();
  f.correlation_id = "pl-0123456789abcdef01234567";
  f.measurements = ms;
  f.measurement_count = std::size(ms);
  f.metadata = md;
  f.metadata_count = std::size(md);
  ExpectRoundTrip(f, &Cat(), true);
  f.event_id = 0;
  f.name = "python.call.stop";
  ExpectRoundTrip(f, &Cat(), true);
}

// 255 measurements of every kind (by id, by name, unknown) and 255 metadata entries.
std::vector<Measurement> ManyMeasurements(size_t n, std::vector<std::string>* keys) {
  keys->clear();
  keys->reserve(n);
  std::vector<Measurement> ms;
  const size_t known = Cat().measurement_key_count();
  for (size_t i = 0; i < n; ++i) {
    switch (i % 5) {
      case 0: ms.emplace_back(MeasurementKey{static_cast<uint16_t>(1 + i % known),
                                             Cat().MeasurementKey(static_cast<uint16_t>(1 + i % known))},
                              static_cast<int64_t>(i) * -7);
        break;
      case 1: ms.emplace_back(Cat().MeasurementKey(static_cast<uint16_t>(1 + i % known)),
                              static_cast<double>(i) / 3);
        break;
      case 2: keys->push_back("unknown_" + std::to_string(i));
        ms.emplace_back(keys->back(), static_cast<int64_t>(i));
        break;
      case 3: keys->push_back("string_" + std::to_string(i));
        ms.emplace_back(keys->back(), std::string_view(keys->back()));
        break;
      default: ms.emplace_back(Cat().MeasurementKey(static_cast<uint16_t>(1 + i % known)),
                               std::string_view("v"));
    }
  }
  return ms;
}

std::vector<Metadata> ManyMetadata(size_t n, std::vector<std::string>* keys) {
  keys->clear();
  keys->reserve(n);
  std::vector<Metadata> md;
  const size_t known = Cat().metadata_key_count();
  for (size_t i = 0; i < n; ++i) {
    if (i % 2 == 0) {
      const auto id = static_cast<uint16_t>(1 + i % known);
      md.emplace_back(MetadataKey{id, Cat().MetadataKey(id)}, "known");
    } else {
      keys->push_back("meta_" + std::to_string(i));
      md.emplace_back(keys->back(), std::string_view(keys->back()));
    }
  }
  return md;
}

TEST(RecordTest, MaximumOf255FieldsOfEachKindEncodes) {
  std::vector<std::string> mkeys, dkeys;
  const std::vector<Measurement> ms = ManyMeasurements(kMaxEncodedFields, &mkeys);
  const std::vector<Metadata> md = ManyMetadata(kMaxEncodedFields, &dkeys);
  RecordFields f = Base();
  f.correlation_id = "pl-0123456789abcdef01234567";
  f.measurements = ms.data();
  f.measurement_count = ms.size();
  f.metadata = md.data();
  f.metadata_count = md.size();
  ExpectRoundTrip(f, &Cat(), true);
  ExpectRoundTrip(f, &Cat(), false);
}

TEST(RecordTest, SpanIdsTravelOnlyOnSpanEventsAndCostTwentyFourBytes) {
  const Measurement ms[] = {{MKey("duration"), int64_t{1500}}};
  const Metadata md[] = {{DKey("command"), "predict"}, {"custom", "x"}};
  RecordFields f = Base();
  f.correlation_id = "0af7651916cd43dd8448eb211c80319c";
  f.measurements = ms;
  f.measurement_count = 1;
  f.metadata = md;
  f.metadata_count = 2;
  PreparedRecord plain;
  PrepareRecord(f, &Cat(), true, &plain);
  ExpectRoundTrip(f, &Cat(), true);

  f.span = SpanIds{0xb7ad6b7169203331ull, 0x00f067aa0ba902b7ull};
  PreparedRecord with_span;
  PrepareRecord(f, &Cat(), true, &with_span);
  EXPECT_EQ(with_span.size, plain.size + 24);  // two ids, a longer vtable and its padding
  ExpectRoundTrip(f, &Cat(), true);
  ExpectRoundTrip(f, &Cat(), false);

  f.span = SpanIds{~uint64_t{0}, 0};  // a root span
  ExpectRoundTrip(f, &Cat(), true);
}

TEST(RecordTest, MoreThan255FieldsCannotBeEncoded) {
  std::vector<std::string> mkeys, dkeys;
  const std::vector<Measurement> ms = ManyMeasurements(kMaxEncodedFields + 1, &mkeys);
  const std::vector<Metadata> md = ManyMetadata(kMaxEncodedFields + 1, &dkeys);
  PreparedRecord p;
  RecordFields f = Base();
  f.measurements = ms.data();
  f.measurement_count = ms.size();
  PrepareRecord(f, &Cat(), true, &p);
  EXPECT_EQ(p.size, 0u);

  f = Base();
  f.metadata = md.data();
  f.metadata_count = md.size();
  PrepareRecord(f, &Cat(), true, &p);
  EXPECT_EQ(p.size, 0u);

  f.metadata_count = kMaxEncodedFields;
  PrepareRecord(f, &Cat(), true, &p);
  EXPECT_GT(p.size, 0u);
}

TEST(RecordTest, LongStringsReadBackWhole) {
  const std::string huge_value(100000, 'v');
  const std::string long_key(1000, 'k');
  const std::string long_name(5000, 'n');
  std::string odd;
  for (int len = 0; len < 9; ++len) odd += 'x';  // lengths around the 4-byte padding
  const Measurement ms[] = {{"request_size", std::string_view(huge_value)},
                            {std::string_view(long_key), 1},
                            {"a", std::string_view(odd.data(), 5)},
                            {"bb", std::string_view(odd.data(), 6)},
                            {"ccc", std::string_view(odd.data(), 7)},
                            {"dddd", std::string_view(odd.data(), 8)}};
  const Metadata md[] = {{DKey("traceback"), huge_value},
                         {std::string_view(long_key), huge_value},
                         {"k", std::string_view(odd.data(), 3)}};
  RecordFields f = Base();
  f.event_id = 0;
  f.name = long_name;
  f.correlation_id = huge_value;
  f.measurements = ms;
  f.measurement_count = std::size(ms);
  f.metadata = md;
  f.metadata_count = std::size(md);
  ExpectRoundTrip(f, &Cat(), true);
}

TEST(RecordTest, WithoutIdsEveryKeyTravelsByName) {
  const Measurement ms[] = {{MKey("duration"), 1234}, {MKey("cpu_percent"), 3.5},
                            {"response_size", 5}, {"request_size", "big"}};
  const Metadata md[] = {{DKey("command"), "predict"}, {"result", "ok"}, {"custom", "x"}};
  RecordFields f = Base();
  f.event_id = 0;  // the worker passes the event by name too when its catalog differs
  f.name = "python.call.stop";
  f.measurements = ms;
  f.measurement_count = std::size(ms);
  f.metadata = md;
  f.metadata_count = std::size(md);
  ExpectRoundTrip(f, &Cat(), false);
  const std::unique_ptr<Encoded> enc = Encode(f, &Cat(), false);
  const fb::Event* e = fb::GetEvent(enc->data());
  EXPECT_EQ(e->ints(), nullptr);
  EXPECT_EQ(e->floats(), nullptr);
  ASSERT_NE(e->measures(), nullptr);
  EXPECT_EQ(e->measures()->size(), 4u);
  for (const fb::Meta* m : *e->meta()) EXPECT_EQ(m->key_id(), 0);
}

TEST(RecordTest, WithoutACatalogOnlyPreResolvedKeysTravelById) {
  const Measurement ms[] = {{MKey("duration"), 1}, {"response_size", 2}};
  const Metadata md[] = {{DKey("command"), "c"}, {"result", "ok"}};
  RecordFields f = Base();
  f.measurements = ms;
  f.measurement_count = std::size(ms);
  f.metadata = md;
  f.metadata_count = std::size(md);
  ExpectRoundTrip(f, nullptr, true);
}

// Random shapes from a fixed seed: every one verifies and reads back.
TEST(RecordTest, RandomShapesAllVerifyAndReadBack) {
  std::mt19937_64 rng(20240601);
  const auto pick = [&](size_t n) { return static_cast<size_t>(rng() % n); };
  for (int iter = 0; iter < 1500; ++iter) {
    std::vector<std::string> strings;
    strings.reserve(1200);
    const auto random_string = [&](size_t max_len) -> std::string_view {
      std::string s(pick(max_len + 1), '\0');
      for (char& c : s) c = static_cast<char>('a' + pick(26));
      strings.push_back(std::move(s));
      return strings.back();
    };
    std::vector<Measurement> ms;
    const size_t nm = pick(4) == 0 ? pick(kMaxEncodedFields + 1) : pick(8);
    for (size_t i = 0; i < nm; ++i) {
      std::string_view key;
      uint16_t key_id = 0;
      switch (pick(3)) {
        case 0: key_id = static_cast<uint16_t>(1 + pick(Cat().measurement_key_count()));
                key = Cat().MeasurementKey(key_id);
                break;
        case 1: key = Cat().MeasurementKey(static_cast<uint16_t>(1 + pick(Cat().measurement_key_count())));
                break;
        default: key = random_string(70);
      }
      Value v;
      switch (pick(3)) {
        case 0: v = Value(static_cast<int64_t>(rng())); break;
        case 1: v = Value(static_cast<double>(static_cast<int64_t>(rng())) / 1024.0); break;
        default: v = Value(random_string(pick(10) == 0 ? 3000 : 40));
      }
      if (key_id != 0) {
        ms.emplace_back(MeasurementKey{key_id, key}, v);
      } else {
        ms.emplace_back(key, v);
      }
    }
    std::vector<Metadata> md;
    const size_t nd = pick(4) == 0 ? pick(kMaxEncodedFields + 1) : pick(8);
    for (size_t i = 0; i < nd; ++i) {
      const std::string_view value = random_string(pick(10) == 0 ? 3000 : 40);
      if (pick(2) == 0) {
        const auto id = static_cast<uint16_t>(1 + pick(Cat().metadata_key_count()));
        md.emplace_back(MetadataKey{id, Cat().MetadataKey(id)}, value);
      } else {
        md.emplace_back(random_string(70), value);
      }
    }
    RecordFields f;
    if (pick(3) == 0) {
      f.event_id = 0;
      f.name = random_string(40);
    } else {
      f.event_id = static_cast<uint16_t>(1 + pick(Cat().event_count()));
    }
    f.timestamp = rng();
    f.clock = static_cast<uint8_t>(pick(3));
    f.correlation_id = pick(2) == 0 ? std::string_view() : random_string(140);
    f.measurements = ms.data();
    f.measurement_count = ms.size();
    f.metadata = md.data();
    f.metadata_count = md.size();
    const bool use_ids = pick(5) != 0;
    SCOPED_TRACE(iter);
    ExpectRoundTrip(f, pick(6) == 0 ? nullptr : &Cat(), use_ids);
    if (HasFatalFailure() || HasNonfatalFailure()) return;
  }
}

}  // namespace
}  // namespace pitlane
