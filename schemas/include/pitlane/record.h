// The values an emitter hands to pitlane, and the encoder that turns them into one event
// record: a FlatBuffer of schemas/event.fbs written straight into caller memory (a reserved
// ring slot) without FlatBufferBuilder, in two passes (size, then bytes) over the inputs.
//
// Thread safety: all functions are pure; any thread may call them.
#pragma once

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace pitlane {

class Catalog;

// A measurement value: int64, double or string (Snakepit's TelemetryValue oneof).
struct Value {
  enum class Kind : uint8_t { kInt = 0, kDouble = 1, kString = 2 };
  Kind kind = Kind::kInt;
  int64_t i = 0;
  double d = 0;
  std::string_view s;

  constexpr Value() = default;
  template <std::integral T>
  constexpr Value(T v) : kind(Kind::kInt), i(static_cast<int64_t>(v)) {}  // NOLINT
  template <std::floating_point T>
  constexpr Value(T v) : kind(Kind::kDouble), d(static_cast<double>(v)) {}  // NOLINT
  constexpr Value(std::string_view v) : kind(Kind::kString), s(v) {}        // NOLINT
  constexpr Value(const char* v) : kind(Kind::kString), s(v) {}             // NOLINT
};

// A measurement key resolved once against the catalog (Worker::MeasurementKey("duration")).
struct MeasurementKey {
  uint16_t id = 0;  // 0: not in the worker's catalog
  std::string_view name;
};
// A metadata key resolved once against the catalog.
struct MetadataKey {
  uint16_t id = 0;  // 0: unknown to the catalog (kept as a plain string by the host)
  std::string_view name;
};

struct Measurement {
  std::string_view key;
  uint16_t key_id = 0;  // 0: resolve `key` by name at emit (a hash lookup)
  Value value;

  constexpr Measurement(std::string_view k, Value v) : key(k), value(v) {}
  constexpr Measurement(MeasurementKey k, Value v) : key(k.name), key_id(k.id), value(v) {}
};

struct Metadata {
  std::string_view key;
  std::string_view value;
  uint16_t key_id = 0;  // 0: resolve `key` by name at emit

  constexpr Metadata(std::string_view k, std::string_view v) : key(k), value(v) {}
  constexpr Metadata(MetadataKey k, std::string_view v) : key(k.name), value(v), key_id(k.id) {}
};

// Span identity of a span's events (event.fbs span_id / parent_span_id; trace_context.h).
struct SpanIds {
  uint64_t span_id = 0;         // 0: not a span event
  uint64_t parent_span_id = 0;  // 0: a root span
};

// One event to encode. Measurements/metadata with key_id 0 and a key the catalog knows are
// resolved by Prepare(); keys it does not know travel by name.
struct RecordFields {
  uint16_t event_id = 0;      // 0: `name` carries the event name
  std::string_view name;      // written only when event_id == 0
  uint64_t timestamp = 0;
  uint8_t clock = 0;          // pitlane::fb::Clock
  std::string_view correlation_id;
  const Measurement* measurements = nullptr;
  size_t measurement_count = 0;
  const Metadata* metadata = nullptr;
  size_t metadata_count = 0;
  SpanIds span;  // written when span.span_id != 0
};

// Fields beyond this are not encoded; Prepare() reports the event as too large instead.
inline constexpr size_t kMaxEncodedFields = 255;

// The result of the sizing pass: resolved key ids and the exact encoded size.
struct PreparedRecord {
  size_t size = 0;  // bytes EncodeRecord writes; 0 = cannot encode (too many fields)
  uint16_t measurement_ids[kMaxEncodedFields];
  uint16_t metadata_ids[kMaxEncodedFields];
  uint16_t int_count = 0, float_count = 0, general_count = 0;
};

// Sizing pass. `catalog` may be null (every key then travels by name unless key_id is set).
// `use_ids` false makes every key travel by name (the worker does this when its catalog differs
// from the host's; it then also passes the event by name, event_id 0).
void PrepareRecord(const RecordFields& f, const Catalog* catalog, bool use_ids,
                   PreparedRecord* out) noexcept;

// Writes the FlatBuffer. REQUIRES: `out` 8-byte aligned with p.size writable bytes; p came from
// PrepareRecord(f, ...) with p.size > 0.
void EncodeRecord(const RecordFields& f, const PreparedRecord& p, uint8_t* out) noexcept;

}  // namespace pitlane
