// The emit path, the one skeleton every emit runs for either lane (shared-memory ring or gRPC
// queue): admit (count emitted, gate) → prepare the record → reserve → write → commit. Per ring
// (or queue): emitted = suppressed + dropped + published (doc/architecture.md, "Accounting").
// The lanes themselves are ring_lane.h (RingLane, PreAttachLane) and, below, QueueLane.
#include <cstring>
#include <new>
#include <type_traits>

#include "clock.h"
#include "pitlane/correlation.h"
#include "pitlane/limits.h"
#include "pitlane/worker.h"
#include "ring_lane.h"
#include "worker_impl.h"

namespace pitlane {

// ── the gRPC lane ────────────────────────────────────────────────────────────────────────────

EmitResult internal::QueueLane::Admit(Worker::Impl& w, EventHandle ev) noexcept {
  EmitCounters& c = w.rqueue->counters;
  c.emitted.fetch_add(1, std::memory_order_relaxed);
  EmitResult outcome = Decide(w.gates.current(), ev);
  if (outcome == EmitResult::kOk && w.remote_orphaned.load(std::memory_order_relaxed)) {
    outcome = EmitResult::kDroppedNoRing;  // a forked child: no connection of its own
  }
  if (outcome != EmitResult::kOk) [[unlikely]] c.CountOutcome(outcome);
  return outcome;
}

uint8_t* internal::QueueLane::Reserve(Worker::Impl& w, size_t size, EmitResult* drop) noexcept {
  bool too_large = false;
  uint8_t* at = size != 0 && size <= 0xFFFFFFF0u
                    ? w.rqueue->Reserve(static_cast<uint32_t>(size), &too_large)
                    : (too_large = true, nullptr);
  if (at == nullptr) {
    *drop = too_large ? EmitResult::kDroppedTooLarge : EmitResult::kDroppedFull;
    w.rqueue->counters.CountOutcome(*drop);
  }
  return at;
}

// `published` is counted by the transport when it hands the record to the stream.
void internal::QueueLane::Commit(Worker::Impl& w) noexcept { w.rqueue->Commit(); }

namespace {

// The record of one emit, from its fields. Prepare sizes it after the gate let it through (the
// clock is read only for events that go on) and applies the catalog's limits as the host will
// (schemas/limits.h): an event over them is refused (kDroppedOverLimit), one with a value over
// max_value_bytes is cut first (kOkTruncated); Write encodes it. The same for both lanes (the
// gRPC lane stamps with CLOCK_REALTIME and always encodes catalog ids: StartRemote sets tsc and
// use_ids so); a pre-attach record is stamped with CLOCK_REALTIME and names everything.
struct FieldsRecord {
  FieldsRecord(std::span<const Measurement> m, std::span<const Metadata> md,
               std::string_view cid, SpanIds s = {}) noexcept
      : measurements(m), metadata(md), correlation_id(cid), span(s) {}

  std::span<const Measurement> measurements;
  std::span<const Metadata> metadata;
  std::string_view correlation_id;
  SpanIds span;  // a span's events only (span.h)
  bool pre_attach = false;
  RecordFields f;
  PreparedRecord p;  // default-initialised: its 1 KiB of id arrays are written by Prepare only

  // kOk, kDroppedOverLimit, or kOkTruncated (to be emitted through PublishCut).
  EmitResult verdict = EmitResult::kOk;

  size_t Prepare(const Worker::Impl& w, EventHandle ev) noexcept {
    const bool tsc = w.tsc && !pre_attach;
    const bool use_ids = w.use_ids && !pre_attach;
    const internal::Stamp stamp = internal::ReadStamp(tsc);
    f.event_id = use_ids ? ev.id : 0;
    f.name = ev.name;
    f.timestamp = stamp.value;
    f.clock = stamp.clock;
    f.correlation_id = correlation_id.empty() ? CurrentCorrelationId() : correlation_id;
    const CatalogLimits& limits = w.catalog->limits();
    if (CheckEventLimits(limits, measurements, metadata, f.correlation_id) != LimitBreach::kNone)
        [[unlikely]] {
      verdict = EmitResult::kDroppedOverLimit;
      return 0;
    }
    if (HasLongValue(limits.max_value_bytes)) [[unlikely]] {
      verdict = EmitResult::kOkTruncated;
      return 0;
    }
    f.measurements = measurements.data();
    f.measurement_count = measurements.size();
    f.metadata = metadata.data();
    f.metadata_count = metadata.size();
    f.span = span;
    PrepareRecord(f, w.catalog.get(), use_ids, &p);
    return p.size;
  }
  void Write(uint8_t* at) const noexcept { EncodeRecord(f, p, at); }

  bool HasLongValue(size_t max) const noexcept {
    for (const Measurement& m : measurements) {
      if (m.value.kind == Value::Kind::kString && m.value.s.size() > max) return true;
    }
    for (const Metadata& m : metadata) {
      if (m.value.size() > max) return true;
    }
    return false;
  }
};

// An already-encoded record (its fields are the caller's to keep within the limits).
struct BytesRecord {
  const uint8_t* bytes;
  size_t size;
  static constexpr EmitResult verdict = EmitResult::kOk;
  size_t Prepare(const Worker::Impl&, EventHandle) const noexcept { return size; }
  void Write(uint8_t* at) const noexcept { std::memcpy(at, bytes, size); }
};

template <class Lane, class Record>
EmitResult Publish(Lane& lane, Worker::Impl& w, EventHandle ev, Record& rec) noexcept;

// A record with values over max_value_bytes, emitted with copies cut where the host would cut
// them (within the limits, so at most kMaxEncodedFields of each). Off the hot path.
template <class Lane>
[[gnu::noinline]] EmitResult PublishCut(Lane& lane, Worker::Impl& w, EventHandle ev,
                                        const FieldsRecord& rec) noexcept {
  const size_t max = w.catalog->limits().max_value_bytes;
  if (rec.measurements.size() > kMaxEncodedFields || rec.metadata.size() > kMaxEncodedFields) {
    EmitResult drop = EmitResult::kOk;
    (void)lane.Reserve(w, 0, &drop);  // counts it as too large
    return drop;
  }
  alignas(Measurement) unsigned char m_store[kMaxEncodedFields * sizeof(Measurement)];
  alignas(Metadata) unsigned char d_store[kMaxEncodedFields * sizeof(Metadata)];
  auto* m = reinterpret_cast<Measurement*>(m_store);
  auto* d = reinterpret_cast<Metadata*>(d_store);
  bool cut = false;
  for (size_t i = 0; i < rec.measurements.size(); ++i) {
    new (&m[i]) Measurement(rec.measurements[i]);
    if (m[i].value.kind == Value::Kind::kString) m[i].value.s = TruncateValue(m[i].value.s, max, &cut);
  }
  for (size_t i = 0; i < rec.metadata.size(); ++i) {
    new (&d[i]) Metadata(rec.metadata[i]);
    d[i].value = TruncateValue(d[i].value, max, &cut);
  }
  FieldsRecord short_rec({m, rec.measurements.size()}, {d, rec.metadata.size()},
                         rec.correlation_id, rec.span);
  short_rec.pre_attach = rec.pre_attach;
  const EmitResult r = Publish(lane, w, ev, short_rec);
  return r == EmitResult::kOk ? EmitResult::kOkTruncated : r;
}

// Prepare → reserve (or count the drop) → write → commit. kOk: published.
template <class Lane, class Record>
inline EmitResult Publish(Lane& lane, Worker::Impl& w, EventHandle ev, Record& rec) noexcept {
  const size_t size = rec.Prepare(w, ev);
  if constexpr (std::is_same_v<Record, FieldsRecord>) {
    if (rec.verdict != EmitResult::kOk) [[unlikely]] {
      if (rec.verdict == EmitResult::kOkTruncated) return PublishCut(lane, w, ev, rec);
      EmitResult drop = EmitResult::kOk;
      (void)lane.Reserve(w, 0, &drop);  // a size-0 reservation counts it as too large
      return EmitResult::kDroppedOverLimit;
    }
  }
  EmitResult drop = EmitResult::kOk;
  uint8_t* at = lane.Reserve(w, size, &drop);
  if (at == nullptr) [[unlikely]] return drop;
  rec.Write(at);
  lane.Commit(w);
  return EmitResult::kOk;
}

// Every emit: admit (count emitted, gate) → publish. Per ring: emitted = suppressed + dropped +
// published. Before the first attach, admitted events go to the pre-attach buffer instead.
template <class Lane, class Record>
inline EmitResult EmitVia(Worker::Impl& w, EventHandle ev, Record& rec) noexcept {
  Lane lane;
  const EmitResult admitted = lane.Admit(w, ev);
  if (admitted == EmitResult::kOk) [[likely]] return Publish(lane, w, ev, rec);
  if (admitted != EmitResult::kBuffered) return admitted;
  internal::PreAttachLane pre;
  if constexpr (std::is_same_v<Record, FieldsRecord>) rec.pre_attach = true;
  const EmitResult r = Publish(pre, w, ev, rec);
  return r == EmitResult::kOk || r == EmitResult::kOkTruncated ? EmitResult::kBuffered : r;
}

template <class Record>
inline EmitResult EmitAny(Worker::Impl& w, EventHandle ev, Record& rec) noexcept {
  return w.rqueue ? EmitVia<internal::QueueLane>(w, ev, rec)
                  : EmitVia<internal::RingLane>(w, ev, rec);
}

}  // namespace

EmitResult Worker::Emit(EventHandle ev, std::span<const Measurement> measurements,
                        std::span<const Metadata> metadata,
                        std::string_view correlation_id) noexcept {
  FieldsRecord rec(measurements, metadata, correlation_id);
  return EmitAny(*impl_, ev, rec);
}

EmitResult Worker::EmitSpanEvent(EventHandle ev, SpanIds span,
                                 std::span<const Measurement> measurements,
                                 std::span<const Metadata> metadata,
                                 std::string_view correlation_id) noexcept {
  FieldsRecord rec(measurements, metadata, correlation_id, span);
  return EmitAny(*impl_, ev, rec);
}

EmitResult Worker::EmitEncoded(EventHandle ev, const uint8_t* record, size_t size) noexcept {
  BytesRecord rec{record, size};
  return EmitAny(*impl_, ev, rec);
}

}  // namespace pitlane
