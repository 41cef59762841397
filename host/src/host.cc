#include "pitlane/host.h"

#include <algorithm>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <thread>

#include "host_impl.h"
#include "pitlane/defaults.h"

namespace pitlane {

std::string_view TransportName(Transport t) {
  switch (t) {
    case Transport::kShm: return "shm";
    case Transport::kGrpc: return "grpc";
    case Transport::kHost: return "host";
  }
  return "unknown";
}

uint64_t WorkerInfo::Unaccounted() const {
  if (Unverifiable()) return 0;  // its worker counts cannot be checked against the host's
  return static_cast<uint64_t>(std::abs(in_flight())) + static_cast<uint64_t>(std::abs(unread()));
}

LawVerdict WorkerInfo::Law() const { return JudgeLaw(*this, /*live=*/!Gone(), Unverifiable()); }

void DepartedWorkers::Add(const WorkerInfo& gone) {
  static_cast<Tally&>(*this) += gone;
  ++workers;
  if (gone.Unverifiable()) ++unverifiable;
  unaccounted += gone.Unaccounted();
}

LawVerdict DepartedWorkers::Law() const {
  if (unaccounted > 0) return LawVerdict::kViolated;
  if (unverifiable > 0) return LawVerdict::kUnverifiable;
  return LawVerdict::kHolds;
}

const Value* EventView::measurement(std::string_view key) const {
  for (const MeasurementView& m : measurements) {
    if (m.key == key) return &m.value;
  }
  return nullptr;
}

std::optional<std::string_view> EventView::meta(std::string_view key) const {
  std::optional<std::string_view> found;
  for (const MetadataView& m : metadata) {
    if (m.key == key) found = m.value;  // the last wins: host context comes last
  }
  return found;
}

// ── Host::Impl ───────────────────────────────────────────────────────────────────────────────

Host::Impl::Impl(HostOptions options)
    : opt(std::move(options)),
      catalog(opt.catalog),
      handlers(*catalog, [this](const std::string& line) { Log(line); }),
      delivery(*catalog, handlers) {
  remote_ctx.node = opt.node;
  remote_ctx.pool_name = opt.pool_name;
  remote_ctx.transport = Transport::kGrpc;
}

void Host::Impl::Log(const std::string& line) const {
  if (opt.log) {
    opt.log(line);
  } else {
    std::fprintf(stderr, "pitlane host: %s\n", line.c_str());
  }
}

size_t Host::Impl::PollOnce() {
  polls.fetch_add(1, std::memory_order_relaxed);
  handlers.Refresh();
  shm->Discover();
  const auto now = std::chrono::steady_clock::now();
  size_t n = shm->Drain(now);
  if (hub) n += hub->Drain(delivery, remote_ctx);
  if (now >= next_housekeeping) {
    next_housekeeping = now + std::chrono::milliseconds(100);
    shm->Housekeeping();
  }
  if (now >= next_calibration) {
    // The TSC rate is first taken over 2 ms at start, which can be off by 0.2 % on a VM:
    // 2 ms of error by the end of the first second. Refining it at 10, 40, 160 and 640 ms
    // before settling at once a second keeps a young host's timestamps within microseconds.
    next_calibration = now + calibration_interval;
    calibration_interval = std::min(calibration_interval * 4, std::chrono::milliseconds(1000));
    delivery.Recalibrate();
  }
  return n;
}

bool Host::Impl::Pending() const { return shm->Pending() || (hub && !hub->Settled()); }

ControlState Host::Impl::ControlOf(const std::string& worker_id) const {
  std::lock_guard<std::mutex> lock(controls_mu_);
  auto it = controls_.find(worker_id);
  return it == controls_.end() ? ControlState() : it->second;
}

ControlState Host::Impl::AdoptControl(const std::string& worker_id, const ControlState& found) {
  bool adopted;
  ControlState state;
  {
    std::lock_guard<std::mutex> lock(controls_mu_);
    const auto [it, inserted] = controls_.emplace(worker_id, found);
    adopted = inserted;
    state = it->second;
  }
  if (adopted && !(found == ControlState())) {
    Log("worker \"" + worker_id + "\" keeps the control state a previous host applied to it (" +
        Describe(found) + ")");
  }
  return state;
}

bool Host::Impl::Knows(const std::string& worker_id) const {
  return shm->Knows(worker_id) || (hub && hub->Knows(worker_id));
}

Status Host::Impl::ApplyControl(const std::string& worker_id,
                                const std::function<void(ControlState&)>& change) {
  std::lock_guard<std::mutex> apply(apply_mu_);
  if (!Knows(worker_id)) {
    return NotFound("no worker with id \"" + worker_id + "\" has attached to namespace \"" +
                    opt.ns + "\"" + (hub ? " or connected over gRPC" : ""));
  }
  ControlState next = ControlOf(worker_id);
  change(next);
  if (Status s = next.Validate(); !s.ok()) return s;
  {
    std::lock_guard<std::mutex> lock(controls_mu_);
    controls_[worker_id] = next;
  }
  shm->WriteControl(worker_id, next);
  if (hub && hub->Knows(worker_id)) hub->PushControl(worker_id, next);
  return Status::Ok();
}

// ── Host ─────────────────────────────────────────────────────────────────────────────────────

Result<std::unique_ptr<Host>> Host::Start(HostOptions options) {
  if (options.ns.empty()) options.ns = defaults::Namespace();
  if (Status s = shm::ValidateNamespace(options.ns); !s.ok()) return s;
  if (options.node.empty()) options.node = defaults::Node();
  if (options.pool_name.empty()) options.pool_name = defaults::PoolName();
  if (!options.catalog) options.catalog = Catalog::Default();
  if (options.batch == 0) return InvalidArgument("batch must be at least 1");
  if (options.hold_filling_ring.count() < 0) {
    return InvalidArgument("hold_filling_ring must not be negative");
  }
  auto impl = std::make_unique<Impl>(std::move(options));
  Impl* raw = impl.get();
  auto log = [raw](const std::string& line) { raw->Log(line); };
  auto control_of = [raw](const std::string& id) { return raw->ControlOf(id); };
  auto adopt_control = [raw](const std::string& id, const ControlState& found) {
    return raw->AdoptControl(id, found);
  };
  Result<std::unique_ptr<internal::ShmSource>> shm = internal::ShmSource::Start(
      impl->opt, *impl->catalog, impl->delivery, {log, control_of, adopt_control});
  if (!shm.ok()) return shm.status();
  impl->shm = std::move(shm).value();
  if (!impl->opt.grpc_listen.empty() || !impl->opt.grpc_dial.empty()) {
    internal::RemoteHub::Hooks hooks;
    hooks.wake = [raw] { raw->WakeLoop(); };
    hooks.log = [raw](std::string_view line) { raw->Log(std::string(line)); };
    hooks.control_of = control_of;
    hooks.adopt_control = adopt_control;
    Result<std::unique_ptr<internal::RemoteHub>> hub =
        internal::RemoteHub::Start(impl->opt, *impl->catalog, std::move(hooks));
    if (!hub.ok()) return hub.status();
    impl->hub = std::move(hub).value();
  }
  return std::unique_ptr<Host>(new Host(std::move(impl)));
}

Host::Host(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Host::~Host() {
  Stop();
  impl_->hub.reset();  // closes remote streams before the rest goes
  impl_->shm.reset();
}

size_t Host::PollOnce() { return impl_->PollOnce(); }
void Host::Run(const std::atomic<bool>& stop) { impl_->Run(stop); }

void Host::RunInBackground() {
  if (impl_->loop.joinable()) return;
  impl_->loop_stop.store(false);
  impl_->loop = std::thread([this] { impl_->Run(impl_->loop_stop); });
}

void Host::Stop() {
  if (!impl_->loop.joinable()) return;
  impl_->loop_stop.store(true);
  impl_->WakeLoop();
  impl_->loop.join();
}

bool Host::DrainAll(std::chrono::milliseconds timeout) {
  const bool was_running = impl_->loop.joinable();
  Stop();
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  bool done = false;
  while (std::chrono::steady_clock::now() < deadline) {
    impl_->shm->Discover(/*force=*/true);
    impl_->PollOnce();
    impl_->next_housekeeping = {};
    impl_->PollOnce();
    if (!impl_->Pending()) {
      done = true;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  if (was_running) RunInBackground();
  return done;
}

Status Host::Attach(const std::string& handler_id, const std::string& event, Handler handler) {
  return impl_->handlers.Attach(handler_id, {event}, std::move(handler));
}

Status Host::AttachMany(const std::string& handler_id, const std::vector<std::string>& events,
                        Handler handler) {
  return impl_->handlers.Attach(handler_id, events, std::move(handler));
}

bool Host::Detach(const std::string& handler_id) { return impl_->handlers.Detach(handler_id); }
std::vector<HandlerInfo> Host::Handlers() const { return impl_->handlers.List(); }
std::vector<std::string> Host::DetachedHandlers() const { return impl_->handlers.Detached(); }

Status Host::Toggle(const std::string& worker_id, bool enabled) {
  return impl_->ApplyControl(worker_id, [&](ControlState& s) { s.enabled = enabled; });
}

Status Host::UpdateSampling(const std::string& worker_id, double rate,
                            const std::vector<std::string>& patterns) {
  return impl_->ApplyControl(worker_id, [&](ControlState& s) {
    s.sampling_rate = rate;
    s.sampling_patterns = patterns;
  });
}

Status Host::UpdateFilter(const std::string& worker_id, const std::vector<std::string>& allow,
                          const std::vector<std::string>& deny) {
  return impl_->ApplyControl(worker_id, [&](ControlState& s) {
    s.allow = allow;
    s.deny = deny;
  });
}

Status Host::SetControl(const std::string& worker_id, const ControlState& state) {
  return impl_->ApplyControl(worker_id, [&](ControlState& s) { s = state; });
}

Result<ControlState> Host::Control(const std::string& worker_id) const {
  if (!impl_->Knows(worker_id)) {
    return NotFound("no worker with id \"" + worker_id + "\" has attached");
  }
  return impl_->ControlOf(worker_id);
}

std::vector<RingStats> Host::Rings() const {
  std::vector<RingStats> out = impl_->shm->Rings();
  if (impl_->hub) {
    for (RingStats& r : impl_->hub->Rings()) out.push_back(std::move(r));
  }
  return out;
}

std::vector<WorkerInfo> Host::Workers() const {
  std::vector<WorkerInfo> out = impl_->shm->Workers();
  if (impl_->hub) {
    for (WorkerInfo& w : impl_->hub->Workers()) out.push_back(std::move(w));
  }
  for (WorkerInfo& w : out) w.control = impl_->ControlOf(w.id);
  return out;
}

DepartedWorkers Host::Departed() const { return impl_->shm->Departed(); }

HostStats Host::Stats() const {
  const Impl& h = *impl_;
  HostStats s;
  const Tally t = h.delivery.Totals();
  s.delivered = t.delivered;
  s.truncated = t.truncated;
  std::copy(std::begin(t.rejected), std::end(t.rejected), std::begin(s.rejected));
  s.host_events = h.delivery.host_events();
  s.handler_errors = h.handlers.errors();
  s.quarantined_rings = h.shm->quarantined();
  h.shm->QuarantinedByReason(s.quarantined_by_reason);
  s.workers_terminated = h.shm->terminated();
  s.polls = h.polls.load(std::memory_order_relaxed);
  s.sleeps = h.sleeps.load(std::memory_order_relaxed);
  return s;
}

const Catalog& Host::catalog() const { return *impl_->catalog; }
const std::string& Host::ns() const { return impl_->opt.ns; }
int Host::grpc_port() const { return impl_->hub ? impl_->hub->port() : 0; }

}  // namespace pitlane
