#include "fold.h"

#include <x86intrin.h>

#include <ctime>

#include "pitlane/fb/event_generated.h"

namespace pitlane::internal {
namespace {

// Cuts `s` to at most `max` bytes without splitting a UTF-8 sequence.
std::string_view Truncate(std::string_view s, size_t max, bool* truncated) {
  if (s.size() <= max) return s;
  *truncated = true;
  size_t n = max;
  while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80) --n;
  return s.substr(0, n);
}

bool IsContextKey(std::string_view k) {
  return k == "node" || k == "worker_id" || k == "pool_name" || k == "worker_pid" ||
         k == "correlation_id" || k == "timestamp_ns";
}

size_t FormatInt(int64_t v, char* out) {
  char tmp[24];
  size_t n = 0;
  const bool neg = v < 0;
  uint64_t u = neg ? ~static_cast<uint64_t>(v) + 1 : static_cast<uint64_t>(v);
  do {
    tmp[n++] = static_cast<char>('0' + u % 10);
    u /= 10;
  } while (u != 0);
  size_t k = 0;
  if (neg) out[k++] = '-';
  while (n > 0) out[k++] = tmp[--n];
  return k;
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

FoldOutcome Folder::Fold(const RawEvent& raw, const FoldContext& ctx, EventView* out) {
  FoldOutcome r;
  const CatalogLimits& lim = catalog_.limits();
  uint16_t id = raw.event_id;
  if (id != 0) {
    if (id > catalog_.event_count() || !catalog_.event(id).admitted_from_workers()) id = 0;
  } else {
    id = catalog_.FindWorkerEvent(raw.name);
  }
  if (id == 0) {
    r.reject_reason = shm::kRejectUnknownEvent;
    return r;
  }
  if (raw.measurements.size() > lim.max_measurements || raw.metadata.size() > lim.max_metadata ||
      raw.measurements.size() > kMaxFields || raw.metadata.size() > kMaxFields) {
    r.reject_reason = shm::kRejectTooManyFields;
    return r;
  }
  if (raw.correlation_id.size() > lim.max_correlation_id_bytes) {
    r.reject_reason = shm::kRejectCorrelationIdTooLong;
    return r;
  }
  size_t nm = 0;
  for (const RawMeasurement& m : raw.measurements) {
    std::string_view key;
    if (m.key_id != 0) {
      if (m.key_id > catalog_.measurement_key_count()) {
        r.reject_reason = shm::kRejectBadMeasurementKey;
        return r;
      }
      key = catalog_.MeasurementKey(m.key_id);
    } else {
      if (m.key.size() > lim.max_key_bytes) {
        r.reject_reason = shm::kRejectKeyTooLong;
        return r;
      }
      const uint16_t kid = catalog_.MeasurementKeyId(m.key);
      if (kid == 0) {
        r.reject_reason = shm::kRejectBadMeasurementKey;
        return r;
      }
      key = catalog_.MeasurementKey(kid);
    }
    Value v = m.value;
    if (v.kind == Value::Kind::kString) v.s = Truncate(v.s, lim.max_value_bytes, &r.truncated);
    measurements_[nm++] = MeasurementView{key, v};
  }
  size_t nd = 0;
  for (const RawMeta& m : raw.metadata) {
    std::string_view key;
    uint16_t kid = 0;
    if (m.key_id != 0) {
      if (m.key_id > catalog_.metadata_key_count()) {
        r.reject_reason = shm::kRejectMalformed;
        return r;
      }
      kid = m.key_id;
      key = catalog_.MetadataKey(kid);
      if (is_context_[kid]) continue;  // the host's context overrides the worker's value
    } else {
      if (m.key.size() > lim.max_key_bytes) {
        r.reject_reason = shm::kRejectKeyTooLong;
        return r;
      }
      key = m.key;
      kid = catalog_.MetadataKeyId(key);
      if (kid != 0 ? is_context_[kid] != 0 : IsContextKey(key)) continue;
    }
    metadata_[nd++] = MetadataView{key, Truncate(m.value, lim.max_value_bytes, &r.truncated), kid};
  }
  metadata_[nd++] = MetadataView{"node", ctx.node, node_id_};
  metadata_[nd++] = MetadataView{"worker_id", ctx.worker_id, worker_id_id_};
  metadata_[nd++] = MetadataView{"pool_name", ctx.pool_name, pool_name_id_};
  metadata_[nd++] = MetadataView{"worker_pid", ctx.worker_pid, worker_pid_id_};
  if (!raw.correlation_id.empty()) {
    metadata_[nd++] = MetadataView{"correlation_id", raw.correlation_id, correlation_id_id_};
  }
  metadata_[nd++] = MetadataView{
      "timestamp_ns", std::string_view(timestamp_, FormatInt(raw.timestamp_ns, timestamp_)),
      timestamp_ns_id_};

  out->event = &catalog_.event(id);
  out->timestamp_ns = raw.timestamp_ns;
  out->correlation_id = raw.correlation_id;
  out->measurements = std::span<const MeasurementView>(measurements_, nm);
  out->metadata = std::span<const MetadataView>(metadata_, nd);
  out->worker_id = ctx.worker_id;
  out->worker_pid = ctx.pid;
  out->transport = ctx.transport;
  r.delivered = true;
  return r;
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
  switch (clock) {
    case static_cast<uint8_t>(fb::Clock::Tsc): {
      const double delta = static_cast<double>(static_cast<int64_t>(value - tsc_ref_));
      return unix_ref_ + static_cast<int64_t>(delta * ns_per_tick_);
    }
    case static_cast<uint8_t>(fb::Clock::MonotonicNs):
      return static_cast<int64_t>(value) - mono_minus_unix_;
    default:
      return static_cast<int64_t>(value);
  }
}

bool RecordDecoder::Decode(const uint8_t* payload, uint32_t length, const TimeConverter& time,
                           RawEvent* out) {
  // Our schema nests three levels (Event → Meta → string); refuse anything deeper or bigger.
  flatbuffers::Verifier verifier(payload, length, /*max_depth=*/8, /*max_tables=*/1024);
  if (!fb::VerifyEventBuffer(verifier)) return false;
  const fb::Event* e = fb::GetEvent(payload);
  // flatbuffers 2.0's Verifier checks a struct vector's length field for 4-byte alignment but
  // not its 8-aligned struct elements; reading a misaligned IntMeasure/FloatMeasure is UB.
  // (`payload` is the reader's 8-aligned copy, so the address is the buffer offset mod 8.)
  auto aligned = [](const auto* v) {
    return v == nullptr || reinterpret_cast<uintptr_t>(v->Data()) % 8 == 0;
  };
  if (!aligned(e->ints()) || !aligned(e->floats())) return false;
  out->event_id = e->event_id();
  out->name = e->name() ? std::string_view(e->name()->c_str(), e->name()->size()) : "";
  out->timestamp_ns = time.ToUnixNs(static_cast<uint8_t>(e->clock()), e->timestamp());
  out->correlation_id = e->correlation_id()
                            ? std::string_view(e->correlation_id()->c_str(), e->correlation_id()->size())
                            : std::string_view();
  size_t nm = 0;
  const size_t total_m = (e->ints() ? e->ints()->size() : 0) + (e->floats() ? e->floats()->size() : 0) +
                         (e->measures() ? e->measures()->size() : 0);
  const size_t total_md = e->meta() ? e->meta()->size() : 0;
  if (total_m > Folder::kMaxFields || total_md > Folder::kMaxFields) {
    // Too many to even look at: report as too many fields via an oversized span.
    out->measurements = std::span<const RawMeasurement>(measurements_, Folder::kMaxFields);
    out->metadata = std::span<const RawMeta>(metadata_, 0);
    for (size_t i = 0; i < Folder::kMaxFields; ++i) measurements_[i] = RawMeasurement{};
    return true;
  }
  if (e->ints()) {
    for (const fb::IntMeasure* m : *e->ints()) {
      measurements_[nm++] = RawMeasurement{m->key() == 0 ? uint16_t{0xFFFF} : m->key(), {}, Value(m->value())};
    }
  }
  if (e->floats()) {
    for (const fb::FloatMeasure* m : *e->floats()) {
      measurements_[nm++] = RawMeasurement{m->key() == 0 ? uint16_t{0xFFFF} : m->key(), {}, Value(m->value())};
    }
  }
  if (e->measures()) {
    for (const fb::Measure* m : *e->measures()) {
      RawMeasurement& r = measurements_[nm++];
      r.key_id = m->key_id();
      r.key = m->key() ? std::string_view(m->key()->c_str(), m->key()->size()) : "";
      switch (m->type()) {
        case fb::ValueType::Int: r.value = Value(m->int_value()); break;
        case fb::ValueType::Float: r.value = Value(m->float_value()); break;
        default:
          r.value = Value(m->string_value()
                              ? std::string_view(m->string_value()->c_str(), m->string_value()->size())
                              : std::string_view());
      }
    }
  }
  size_t nd = 0;
  if (e->meta()) {
    for (const fb::Meta* m : *e->meta()) {
      RawMeta& r = metadata_[nd++];
      r.key_id = m->key_id();
      r.key = m->key() ? std::string_view(m->key()->c_str(), m->key()->size()) : "";
      r.value = m->value() ? std::string_view(m->value()->c_str(), m->value()->size()) : "";
    }
  }
  out->measurements = std::span<const RawMeasurement>(measurements_, nm);
  out->metadata = std::span<const RawMeta>(metadata_, nd);
  return true;
}

}  // namespace pitlane::internal
