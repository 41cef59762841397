#include "fold.h"

#include <x86intrin.h>

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <ctime>
#include <type_traits>

#include "pitlane/fb/event_generated.h"
#include "pitlane/limits.h"
#include "record_verify.h"

namespace pitlane::internal {
namespace {

bool IsContextKey(std::string_view k) {
  return k == "node" || k == "worker_id" || k == "pool_name" || k == "worker_pid" ||
         k == "correlation_id" || k == "timestamp_ns";
}

// Writes `v` (< 10^4) as exactly 4 ASCII digits, zero-padded, with one 32-bit store: the
// digits are split in parallel in lanes of one register (2+2 digits in 16-bit lanes, then 1+1
// in bytes), dividing by 100 and by 10 with multiply-shifts that are exact in this range.
inline void Put4Digits(uint32_t v, char* out) {
  const uint32_t h = (v * 5243) >> 19;                         // ab (v / 100)
  const uint32_t y = h | ((v - 100 * h) << 16);                // ab | cd
  const uint32_t t = ((y * 103) >> 10) & 0x000F000Fu;          // tens
  const uint32_t d = (t | ((y - 10 * t) << 8)) + 0x30303030u;  // a b c d
  std::memcpy(out, &d, 4);
}

// Writes `v` (< 10^8) as exactly 8 ASCII digits, zero-padded, with one 64-bit store (the
// same lanes as Put4Digits, with 4+4 digits in 32-bit lanes first).
inline void Put8Digits(uint32_t v, char* out) {
  const uint64_t x = (v / 10000) | (uint64_t{v % 10000} << 32);          // abcd | efgh
  const uint64_t h = ((x * 5243) >> 19) & 0x0000007F0000007Full;         // ab | ef
  const uint64_t y = h | ((x - 100 * h) << 16);                          // ab cd | ef gh
  const uint64_t t = ((y * 103) >> 10) & 0x000F000F000F000Full;          // tens
  const uint64_t d = (t | ((y - 10 * t) << 8)) + 0x3030303030303030ull;  // a b c d e f g h
  std::memcpy(out, &d, 8);
}

// Decimal `v` into `out` (at least 20 bytes); returns the length. Works in 8-digit chunks.
size_t FormatInt(int64_t v, char* out) {
  size_t k = 0;
  uint64_t u = static_cast<uint64_t>(v);
  if (v < 0) {
    out[k++] = '-';
    u = ~u + 1;
  }
  char tmp[24];
  // Chunks of 8 digits from the right: at most 3 for a 20-digit magnitude.
  char* end = tmp + sizeof tmp;
  char* p = end;
  while (u >= 100000000) {
    p -= 8;
    Put8Digits(static_cast<uint32_t>(u % 100000000), p);
    u /= 100000000;
  }
  auto small = static_cast<uint32_t>(u);  // < 10^8: no leading zeros
  do {
    *--p = static_cast<char>('0' + small % 10);
    small /= 10;
  } while (small != 0);
  const size_t n = static_cast<size_t>(end - p);
  std::memcpy(out + k, p, n);
  return k + n;
}

int64_t ClockNs(clockid_t id) {
  timespec ts;
  clock_gettime(id, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

}  // namespace

Folder::Folder(const Catalog& catalog)
    : catalog_(catalog),
      node_id_(catalog.MetadataKeyId("node")),
      worker_id_id_(catalog.MetadataKeyId("worker_id")),
      pool_name_id_(catalog.MetadataKeyId("pool_name")),
      worker_pid_id_(catalog.MetadataKeyId("worker_pid")),
      correlation_id_id_(catalog.MetadataKeyId("correlation_id")),
      timestamp_ns_id_(catalog.MetadataKeyId("timestamp_ns")),
      is_context_(catalog.metadata_key_count() + 1, 0) {
  for (uint16_t id = 1; id <= catalog.metadata_key_count(); ++id) {
    is_context_[id] = IsContextKey(catalog.MetadataKey(id)) ? 1 : 0;
  }
}

namespace {

// A FoldOutcome built in registers. Field by field, GCC assembles the returned 12-byte struct
// in memory with byte and word stores and reloads it as wider words, which stalls
// store-to-load forwarding on every event.
inline FoldOutcome Outcome(bool delivered, uint32_t reject_reason, bool truncated) {
  static_assert(sizeof(FoldOutcome) == 12 && offsetof(FoldOutcome, delivered) == 0 &&
                offsetof(FoldOutcome, reject_reason) == 4 && offsetof(FoldOutcome, truncated) == 8);
  const uint64_t low = uint64_t{delivered} | (uint64_t{reject_reason} << 32);
  const uint32_t high = truncated ? 1 : 0;
  static_assert(std::is_trivially_copyable_v<FoldOutcome>);
  FoldOutcome r;
  std::memcpy(static_cast<void*>(&r), &low, sizeof low);
  std::memcpy(reinterpret_cast<char*>(&r) + sizeof low, &high, sizeof high);
  return r;
}

FoldOutcome Rejected(uint32_t reason) { return Outcome(false, reason, false); }

// Entries are written field by field: an aggregate temporary goes through the stack, and
// reading it back as wider words than it was written stalls store-to-load forwarding.
inline void Put(MetadataView* d, std::string_view key, std::string_view value, uint16_t key_id) {
  d->key = key;
  d->value = value;
  d->key_id = key_id;
}

}  // namespace

FoldOutcome Folder::Fold(const RawEvent& raw, const FoldContext& ctx, EventView* out) {
  const CatalogLimits& lim = catalog_.limits();
  uint16_t id = raw.event_id;
  if (id != 0) {
    if (id > catalog_.event_count() || !catalog_.event(id).admitted_from_workers()) id = 0;
  } else {
    id = catalog_.FindWorkerEvent(raw.name);
  }
  if (id == 0) return Rejected(shm::kRejectUnknownEvent);
  if (raw.measurements.size() > lim.max_measurements || raw.metadata.size() > lim.max_metadata ||
      raw.measurements.size() > kMaxFields || raw.metadata.size() > kMaxFields) {
    return Rejected(shm::kRejectTooManyFields);
  }
  if (raw.correlation_id.size() > lim.max_correlation_id_bytes) {
    return Rejected(shm::kRejectCorrelationIdTooLong);
  }
  bool truncated = false;
  size_t nm = 0;
  for (const RawMeasurement& m : raw.measurements) {
    std::string_view key;
    if (m.key_id != 0) {
      if (m.key_id > catalog_.measurement_key_count()) {
        return Rejected(shm::kRejectBadMeasurementKey);
      }
      key = catalog_.MeasurementKey(m.key_id);
    } else {
      if (m.key.size() > lim.max_key_bytes) return Rejected(shm::kRejectKeyTooLong);
      const uint16_t kid = catalog_.MeasurementKeyId(m.key);
      if (kid == 0) return Rejected(shm::kRejectBadMeasurementKey);
      key = catalog_.MeasurementKey(kid);
    }
    MeasurementView& v = measurements_[nm++];
    v.key = key;
    v.value = m.value;
    if (v.value.kind == Value::Kind::kString) {
      v.value.s = TruncateValue(v.value.s, lim.max_value_bytes, &truncated);
    }
  }
  size_t nd = 0;
  for (const RawMeta& m : raw.metadata) {
    std::string_view key;
    uint16_t kid = 0;
    if (m.key_id != 0) {
      if (m.key_id > catalog_.metadata_key_count()) return Rejected(shm::kRejectMalformed);
      kid = m.key_id;
      key = catalog_.MetadataKey(kid);
      if (is_context_[kid]) continue;  // the host's context overrides the worker's value
    } else {
      if (m.key.size() > lim.max_key_bytes) return Rejected(shm::kRejectKeyTooLong);
      key = m.key;
      kid = catalog_.MetadataKeyId(key);
      if (kid != 0 ? is_context_[kid] != 0 : IsContextKey(key)) continue;
    }
    Put(&metadata_[nd++], key, TruncateValue(m.value, lim.max_value_bytes, &truncated), kid);
  }
  Put(&metadata_[nd++], "node", ctx.node, node_id_);
  Put(&metadata_[nd++], "worker_id", ctx.worker_id, worker_id_id_);
  Put(&metadata_[nd++], "pool_name", ctx.pool_name, pool_name_id_);
  Put(&metadata_[nd++], "worker_pid", ctx.worker_pid, worker_pid_id_);
  if (!raw.correlation_id.empty()) {
    Put(&metadata_[nd++], "correlation_id", raw.correlation_id, correlation_id_id_);
  }
  Put(&metadata_[nd++], "timestamp_ns", FormatTimestamp(raw.timestamp_ns), timestamp_ns_id_);

  out->event = &catalog_.event(id);
  out->timestamp_ns = raw.timestamp_ns;
  out->correlation_id = raw.correlation_id;
  out->span_id = raw.span_id;
  out->parent_span_id = raw.parent_span_id;
  out->measurements = std::span<const MeasurementView>(measurements_, nm);
  out->metadata = std::span<const MetadataView>(metadata_, nd);
  out->worker_id = ctx.worker_id;
  out->worker_pid = ctx.pid;
  out->transport = ctx.transport;
  return Outcome(true, 0, truncated);
}

std::string_view Folder::FormatTimestamp(int64_t ns) {
  // Consecutive events share the digits above the last 4 (they change every 10 µs) or at least
  // those above the last 8 (every 100 ms): while they do, only the last 4 or 8 digits are
  // rewritten. Both suffixes lie inside the number once it has 9 digits or more.
  constexpr uint64_t kLow4 = 10000, kLow8 = 100000000;
  if (ns >= static_cast<int64_t>(kLow8)) {
    const auto u = static_cast<uint64_t>(ns);
    const uint64_t high4 = u / kLow4;
    if (high4 == timestamp_high4_) {
      Put4Digits(static_cast<uint32_t>(u - high4 * kLow4), timestamp_ + timestamp_len_ - 4);
      return std::string_view(timestamp_, timestamp_len_);
    }
    if (u / kLow8 == timestamp_high8_) {
      Put8Digits(static_cast<uint32_t>(u % kLow8), timestamp_ + timestamp_len_ - 8);
      timestamp_high4_ = high4;
      return std::string_view(timestamp_, timestamp_len_);
    }
  }
  timestamp_len_ = FormatInt(ns, timestamp_);
  const bool cacheable = ns >= static_cast<int64_t>(kLow8);
  timestamp_high4_ = cacheable ? static_cast<uint64_t>(ns) / kLow4 : kNoDigits;
  timestamp_high8_ = cacheable ? static_cast<uint64_t>(ns) / kLow8 : kNoDigits;
  return std::string_view(timestamp_, timestamp_len_);
}

TimeConverter::TimeConverter() {
  tsc_origin_ = __rdtsc();
  unix_origin_ = ClockNs(CLOCK_REALTIME);
  // A first rate from a short baseline; Recalibrate lengthens it.
  timespec pause{0, 2000000};
  nanosleep(&pause, nullptr);
  Recalibrate();
}

void TimeConverter::Recalibrate() {
  // Take the pair with the smallest gap between the two clock reads.
  uint64_t best_gap = ~uint64_t{0};
  for (int i = 0; i < 5; ++i) {
    const uint64_t t0 = __rdtsc();
    const int64_t u = ClockNs(CLOCK_REALTIME);
    const uint64_t t1 = __rdtsc();
    if (t1 - t0 < best_gap) {
      best_gap = t1 - t0;
      tsc_ref_ = t0 + (t1 - t0) / 2;
      unix_ref_ = u;
    }
  }
  if (tsc_ref_ > tsc_origin_ && unix_ref_ > unix_origin_) {
    ns_per_tick_ = static_cast<double>(unix_ref_ - unix_origin_) /
                   static_cast<double>(tsc_ref_ - tsc_origin_);
  }
  mono_minus_unix_ = ClockNs(CLOCK_MONOTONIC) - ClockNs(CLOCK_REALTIME);
}

int64_t TimeConverter::ToUnixNs(uint8_t clock, uint64_t value) const {
  // `value` comes from a worker: any 64-bit pattern. The arithmetic wraps (unsigned) and the
  // scaled TSC delta is clamped before it becomes an integer, so no value is undefined
  // behaviour; a sane timestamp converts exactly as before.
  switch (clock) {
    case static_cast<uint8_t>(fb::Clock::Tsc): {
      const double delta = static_cast<double>(static_cast<int64_t>(value - tsc_ref_));
      const double ns = std::clamp(delta * ns_per_tick_, -9.2e18, 9.2e18);
      return static_cast<int64_t>(static_cast<uint64_t>(unix_ref_) +
                                  static_cast<uint64_t>(static_cast<int64_t>(ns)));
    }
    case static_cast<uint8_t>(fb::Clock::MonotonicNs):
      return static_cast<int64_t>(value - static_cast<uint64_t>(mono_minus_unix_));
    default:
      return static_cast<int64_t>(value);
  }
}

bool RecordDecoder::Decode(const uint8_t* payload, uint32_t length, const TimeConverter& time,
                           RawEvent* out) {
  DecodedRecord& rec = record_;
  if (!DecodeEventRecord(payload, length, measurements_, metadata_, Folder::kMaxFields, &rec)) {
    return false;
  }
  out->event_id = rec.event_id;
  out->name = rec.name;
  out->timestamp_ns = time.ToUnixNs(rec.clock, rec.timestamp);
  out->correlation_id = rec.correlation_id;
  out->span_id = rec.span_id;
  out->parent_span_id = rec.parent_span_id;
  if (rec.too_many_fields) {
    // Too many to even look at: report as too many fields via an oversized span.
    for (size_t i = 0; i < Folder::kMaxFields; ++i) measurements_[i] = RawMeasurement{};
    out->measurements = std::span<const RawMeasurement>(measurements_, Folder::kMaxFields);
    out->metadata = std::span<const RawMeta>(metadata_, 0);
    return true;
  }
  out->measurements = std::span<const RawMeasurement>(measurements_, rec.measurement_count);
  out->metadata = std::span<const RawMeta>(metadata_, rec.metadata_count);
  return true;
}

}  // namespace pitlane::internal
