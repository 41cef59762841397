// Host::Impl: the parts of a host and how a poll pass strings them together.
//
//   sources ──► Delivery (decode → fold → count → HandlerRegistry::Dispatch)
//   ShmSource: registry, rings, liveness (shm_source.cc, liveness.cc)
//   RemoteHub: gRPC streams (remote_hub.cc)
//   Run: the idle back-off (poll_loop.cc)
//
// Thread safety: PollOnce and Run on the poll thread. Control (ApplyControl, Control) from any
// thread: control_mu_ serialises updates; controls_ is read by the sources' hooks under it.
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "delivery.h"
#include "handlers.h"
#include "pitlane/host.h"
#include "remote_hub.h"
#include "shm_source.h"

namespace pitlane {

class Host::Impl {
 public:
  explicit Impl(HostOptions options);

  size_t PollOnce();
  void Run(const std::atomic<bool>& stop);  // poll_loop.cc
  void WakeLoop();                          // poll_loop.cc
  bool Pending() const;                     // poll thread

  void Log(const std::string& line) const;
  // Applies `change` to the worker's control state, validates it, stores it and sends it to
  // the worker over whichever transport it uses.
  Status ApplyControl(const std::string& worker_id,
                      const std::function<void(ControlState&)>& change);
  ControlState ControlOf(const std::string& worker_id) const;
  // `found` was left in the worker's slot by a previous host of the namespace: it becomes this
  // host's state for the id unless the host has one already. Returns the state to apply.
  ControlState AdoptControl(const std::string& worker_id, const ControlState& found);
  bool Knows(const std::string& worker_id) const;

  const HostOptions opt;
  const std::shared_ptr<const Catalog> catalog;
  internal::HandlerRegistry handlers;
  internal::Delivery delivery;
  std::unique_ptr<internal::ShmSource> shm;
  std::unique_ptr<internal::RemoteHub> hub;  // null without grpc_listen / grpc_dial
  internal::FoldContext remote_ctx;

  std::atomic<uint64_t> polls{0}, sleeps{0};
  std::chrono::steady_clock::time_point next_housekeeping{};
  std::chrono::steady_clock::time_point next_calibration{};
  std::chrono::milliseconds calibration_interval{10};  // grows to 1 s (PollOnce)

  std::thread loop;
  std::atomic<bool> loop_stop{false};

 private:
  std::mutex apply_mu_;                          // serialises ApplyControl
  mutable std::mutex controls_mu_;               // lock order: apply_mu_, then sources, then this
  std::map<std::string, ControlState> controls_;  // by worker id; GUARDED_BY(controls_mu_)
};

}  // namespace pitlane
