// The catalog fold shared by every transport: a transport turns what it received into a
// RawEvent (names or ids, values, metadata), and Folder::Fold applies the rules of doc/catalog.md —
// unknown event, measurement allowlist, limits, truncation, host context — producing the
// EventView handlers see. One implementation, so an event means the same whichever way it came.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "pitlane/catalog.h"
#include "pitlane/host.h"
#include "pitlane/shm_layout.h"

namespace pitlane::internal {

struct RawMeasurement {
  uint16_t key_id = 0;  // catalog id, or 0 with `key` set
  std::string_view key;
  Value value;
};
struct RawMeta {
  uint16_t key_id = 0;
  std::string_view key;
  std::string_view value;
};
struct RawEvent {
  uint16_t event_id = 0;  // catalog id, or 0 with `name` set
  std::string_view name;
  int64_t timestamp_ns = 0;  // Unix epoch
  std::string_view correlation_id;
  uint64_t span_id = 0;  // event.fbs span identity; 0 = none
  uint64_t parent_span_id = 0;
  std::span<const RawMeasurement> measurements;
  std::span<const RawMeta> metadata;
};

// The Event's own fields, as DecodeEventRecord (record_verify.h) found them. Strings point into
// the buffer; absent strings are empty.
struct DecodedRecord {
  uint16_t event_id = 0;
  std::string_view name;
  uint64_t timestamp = 0;
  uint8_t clock = 0;  // fb::Clock
  std::string_view correlation_id;
  uint64_t span_id = 0;         // 0: absent (not a span event)
  uint64_t parent_span_id = 0;  // 0: absent (a root span)
  size_t measurement_count = 0;  // entries written to `measurements` (ints, floats, measures)
  size_t metadata_count = 0;     // entries written to `metadata`
  // The record is valid but holds more than `capacity` measurements or metadata entries: none
  // of them was decoded (counts are 0; the fields above are).
  bool too_many_fields = false;
};

// Who sent the event: merged over the worker's metadata under the same keys.
struct FoldContext {
  std::string_view node;
  std::string_view pool_name;
  std::string_view worker_id;
  std::string_view worker_pid;  // decimal
  uint32_t pid = 0;
  Transport transport = Transport::kShm;
};

struct FoldOutcome {
  bool delivered = false;
  uint32_t reject_reason = 0;  // shm::RejectReason when !delivered
  bool truncated = false;      // a value was cut to max_value_bytes
};

class Folder {
 public:
  static constexpr size_t kMaxFields = 256;
  static constexpr size_t kContextFields = 6;

  explicit Folder(const Catalog& catalog);
  // `out` points into this Folder's scratch memory and `raw`'s memory; valid until the next
  // call. Allocates nothing.
  FoldOutcome Fold(const RawEvent& raw, const FoldContext& ctx, EventView* out);

 private:
  const Catalog& catalog_;
  // Metadata key ids of the host context keys, and which known ids are context keys (so the
  // per-event work is array lookups, not string hashing).
  uint16_t node_id_, worker_id_id_, pool_name_id_, worker_pid_id_, correlation_id_id_,
      timestamp_ns_id_;
  std::vector<uint8_t> is_context_;
  MeasurementView measurements_[kMaxFields];
  MetadataView metadata_[kMaxFields + kContextFields];
  // The `timestamp_ns` context value of the last event, and the values of its digits above
  // the last 4 and above the last 8 (kNoDigits: not reusable).
  std::string_view FormatTimestamp(int64_t ns);
  static constexpr uint64_t kNoDigits = ~uint64_t{0};
  char timestamp_[24];
  size_t timestamp_len_ = 0;
  uint64_t timestamp_high4_ = kNoDigits, timestamp_high8_ = kNoDigits;
};

// Converts a record's clock reading to Unix-epoch nanoseconds (TSC calibrated against
// CLOCK_REALTIME; refreshed by Recalibrate, which the host calls about once a second).
class TimeConverter {
 public:
  TimeConverter();
  void Recalibrate();
  int64_t ToUnixNs(uint8_t clock, uint64_t value) const;

 private:
  uint64_t tsc_ref_ = 0;
  int64_t unix_ref_ = 0;
  int64_t mono_minus_unix_ = 0;
  uint64_t tsc_origin_ = 0;
  int64_t unix_origin_ = 0;
  double ns_per_tick_ = 0;
};

// Verifies a ring record (record_verify.h: the FlatBuffers Verifier's checks plus the file
// identifier, decoded in the same pass) and exposes it as a RawEvent.
class RecordDecoder {
 public:
  // false: malformed (the Verifier refused it). `out` valid until the next call.
  bool Decode(const uint8_t* payload, uint32_t length, const TimeConverter& time, RawEvent* out);

 private:
  // Scratch reused by every record, like the arrays: a successful DecodeEventRecord writes
  // every field of it, and a local one was zeroed per record (a `rep stos`).
  DecodedRecord record_;
  RawMeasurement measurements_[Folder::kMaxFields];
  RawMeta metadata_[Folder::kMaxFields];
};

}  // namespace pitlane::internal
