#include "delivery.h"

#include "pitlane/shm.h"

namespace pitlane::internal {

Delivery::Delivery(const Catalog& catalog, HandlerRegistry& handlers)
    : catalog_(catalog), handlers_(handlers), folder_(catalog) {}

void Delivery::DeliverRecord(const uint8_t* payload, uint32_t length, const FoldContext& ctx,
                             Tally* source, HostSideMirror* source_mirror) {
  if (!decoder_.Decode(payload, length, time_, &raw_)) {
    Reject(shm::kRejectMalformed, 1, source, source_mirror);
    return;
  }
  Deliver(raw_, ctx, source, source_mirror);
}

void Delivery::Deliver(const RawEvent& raw, const FoldContext& ctx, Tally* source,
                       HostSideMirror* source_mirror) {
  const FoldOutcome out = folder_.Fold(raw, ctx, &view_);
  if (!out.delivered) {
    Reject(out.reject_reason, 1, source, source_mirror);
    return;
  }
  ++source->delivered;
  ++totals_.delivered;
  if (out.truncated) {
    ++source->truncated;
    ++totals_.truncated;
  }
  mirror_.StoreDelivered(totals_);
  if (source_mirror != nullptr) source_mirror->StoreDelivered(*source);
  handlers_.Dispatch(view_);
}

void Delivery::Reject(uint32_t reason, uint64_t n, Tally* source,
                      HostSideMirror* source_mirror) {
  if (source != nullptr) source->rejected[reason] += n;
  if (source != nullptr && source_mirror != nullptr) source_mirror->StoreRejected(*source, reason);
  totals_.rejected[reason] += n;
  mirror_.StoreRejected(totals_, reason);
}

void Delivery::EmitHostEvent(std::string_view canonical, std::span<const MeasurementView> m,
                             std::span<const MetadataView> md, std::string_view worker_id,
                             uint32_t pid) {
  const uint16_t id = catalog_.FindCanonical(canonical);
  if (id == 0) return;
  EventView v;
  v.event = &catalog_.event(id);
  v.timestamp_ns = static_cast<int64_t>(shm::UnixNowNs());
  v.measurements = m;
  v.metadata = md;
  v.worker_id = worker_id;
  v.worker_pid = pid;
  v.transport = Transport::kHost;
  host_events_.fetch_add(1, std::memory_order_relaxed);
  handlers_.Dispatch(v);
}

}  // namespace pitlane::internal
