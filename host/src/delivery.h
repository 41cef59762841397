// The one path every event takes once its transport has read it, whichever transport that was:
// decode (a ring record) → fold through the catalog → count the outcome (for its source and
// host-wide) → dispatch to the handlers. Sources (the shm rings, the gRPC hub) only read bytes
// and keep per-source bookkeeping; every rule about what an event means lives behind Deliver.
//
// Thread safety: Deliver*, Reject and EmitHostEvent on the poll thread; Totals() from any thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <span>
#include <string_view>

#include "fold.h"
#include "handlers.h"
#include "pitlane/accounting.h"
#include "pitlane/host.h"

namespace pitlane::internal {

class Delivery {
 public:
  Delivery(const Catalog& catalog, HandlerRegistry& handlers);

  // A record in the event.fbs format (a ring record, or a pitlane worker's record over gRPC):
  // verified and decoded, then Deliver. Malformed records are rejected as such.
  void DeliverRecord(const uint8_t* payload, uint32_t length, const FoldContext& ctx,
                     Tally* source, HostSideMirror* source_mirror = nullptr);
  // An event a transport has already decoded (a foreign peer's protobuf event).
  // `source_mirror`, when given, receives the source's counts before a handler sees the event,
  // so a reader on another thread never sees an event handled but not yet counted.
  void Deliver(const RawEvent& raw, const FoldContext& ctx, Tally* source,
               HostSideMirror* source_mirror = nullptr);
  // Counts `n` events rejected for `reason` that never reached the fold (lost in a sequence
  // gap, ...). `source` may be null when the source counted them itself.
  void Reject(uint32_t reason, uint64_t n, Tally* source,
              HostSideMirror* source_mirror = nullptr);
  // Events the host emits itself go through the same dispatch (counted apart, not in a Tally).
  void EmitHostEvent(std::string_view canonical, std::span<const MeasurementView> m,
                     std::span<const MetadataView> md, std::string_view worker_id, uint32_t pid);

  const Catalog& catalog() const { return catalog_; }

  // Recalibrates the TSC → Unix time conversion (about once a second).
  void Recalibrate() { time_.Recalibrate(); }

  // Host-wide counts (delivered, truncated, rejected), and the host's own events. An event is
  // counted before a handler sees it.
  Tally Totals() const { return mirror_.Load(); }
  uint64_t host_events() const { return host_events_.load(std::memory_order_relaxed); }

 private:
  const Catalog& catalog_;
  HandlerRegistry& handlers_;
  Folder folder_;
  RecordDecoder decoder_;
  // Scratch for the event being delivered, reused: DeliverRecord's decode writes every field of
  // `raw_` and the fold every field of `view_`, and locals were zeroed per event (`rep stos`).
  RawEvent raw_;
  EventView view_;
  TimeConverter time_;
  Tally totals_;  // poll thread
  HostSideMirror mirror_;
  std::atomic<uint64_t> host_events_{0};
};

}  // namespace pitlane::internal
