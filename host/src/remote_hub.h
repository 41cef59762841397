// The host's gRPC side: the dial-in server (TelemetryIngest, for workers that dial the host) and
// the dial-out clients (the host dials workers that serve StreamTelemetry, Snakepit's direction).
//
// Stream threads never touch handlers or the fold: they queue what they read (bounded; a full
// inbox blocks the stream thread, which back-pressures the worker, whose queue then drops and
// counts) and wake the poll loop. The poll thread drains the inbox in order through the same
// Delivery as the rings and emits the catalog's transport events (grpc.stream.opened|closed,
// grpc.connection.established|lost|reconnected) as host events.
//
// Control: on every stream (re)open the host sends the worker's full control state (toggle,
// sampling, filter), then every update. Acks: the dial-in stream tells the worker up to which
// sequence number its events were delivered or counted, so the worker can forget them; a
// re-sent batch the host already saw is skipped by sequence number.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "delivery.h"
#include "pitlane/control.h"
#include "pitlane/host.h"
#include "pitlane/status.h"

namespace pitlane::internal {

class RemoteHub {
 public:
  struct Hooks {
    std::function<void()> wake;  // wakes the poll loop (any thread)
    std::function<void(std::string_view)> log;
    std::function<ControlState(const std::string&)> control_of;  // the host's state for an id
    // A dial-in worker's hello carries the state it runs: the host's state for the id from now
    // on, unless it has one of its own (Host::Impl::AdoptControl).
    std::function<ControlState(const std::string&, const ControlState&)> adopt_control;
  };
  static Result<std::unique_ptr<RemoteHub>> Start(const HostOptions& options,
                                                  const Catalog& catalog, Hooks hooks);
  ~RemoteHub();
  RemoteHub(const RemoteHub&) = delete;
  RemoteHub& operator=(const RemoteHub&) = delete;

  int port() const;  // the dial-in server's bound port, 0 when not serving

  // Poll thread: delivers everything queued. Returns the number of events.
  size_t Drain(Delivery& delivery, const FoldContext& base);
  bool Pending() const;

  // Any thread.
  bool Knows(const std::string& worker_id) const;
  // Sends `state` to every open stream of `worker_id` (no-op when none is open: the state is
  // sent when the worker connects).
  void PushControl(const std::string& worker_id, const ControlState& state);
  std::vector<RingStats> Rings() const;
  std::vector<WorkerInfo> Workers() const;
  // Every connected worker has sent all it counted and the host has folded it.
  bool Settled() const;

  class Impl;

 private:
  explicit RemoteHub(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace pitlane::internal
