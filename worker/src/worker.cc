#include "pitlane/worker.h"

#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <thread>

#include "clock.h"
#include "pitlane/defaults.h"
#include "worker_impl.h"

namespace pitlane {

std::string_view WorkerTransportName(WorkerTransport t) {
  switch (t) {
    case WorkerTransport::kAuto: return "auto";
    case WorkerTransport::kShm: return "shm";
    case WorkerTransport::kGrpc: return "grpc";
  }
  return "?";
}

namespace {

std::string EnvOr(const std::string& value, const char* env) {
  if (!value.empty()) return value;
  const char* e = std::getenv(env);
  return e ? std::string(e) : std::string();
}

// README "Defaults": PITLANE_TRANSPORT = auto | shm | grpc.
Result<WorkerTransport> ChooseTransport(WorkerOptions& o, const std::string& ns) {
  WorkerTransport t = o.transport;
  if (t == WorkerTransport::kAuto) {
    const std::string env = EnvOr("", defaults::kTransportEnv);
    if (env == "shm") {
      t = WorkerTransport::kShm;
    } else if (env == "grpc") {
      t = WorkerTransport::kGrpc;
    } else if (!env.empty() && env != "auto") {
      return InvalidArgument(std::string(defaults::kTransportEnv) + "=\"" + env +
                             "\" is not one of auto, shm, grpc");
    }
  }
  o.grpc_target = EnvOr(o.grpc_target, defaults::kGrpcTargetEnv);
  o.grpc_listen = EnvOr(o.grpc_listen, defaults::kGrpcListenEnv);
  o.grpc_token = EnvOr(o.grpc_token, defaults::kGrpcTokenEnv);
  o.grpc_tls_ca = EnvOr(o.grpc_tls_ca, defaults::kGrpcTlsCaEnv);
  const bool remote_configured = !o.grpc_target.empty() || !o.grpc_listen.empty();
  if (t == WorkerTransport::kAuto) {
    // Shared memory when this machine runs the namespace's host; gRPC when a remote host is
    // configured and it does not; otherwise shared memory in drop mode until the host appears.
    const bool local_host = shm::OpenRegistry(ns).ok();
    t = !local_host && remote_configured ? WorkerTransport::kGrpc : WorkerTransport::kShm;
  }
  if (t == WorkerTransport::kGrpc) {
    if (!remote_configured) {
      return InvalidArgument(
          "transport grpc needs a host address: set PITLANE_GRPC_TARGET (the host's dial-in "
          "address) or PITLANE_GRPC_LISTEN (an address for the host to dial)");
    }
    if (internal::RegisteredRemoteTransport() == nullptr) {
      return FailedPrecondition(
          "transport grpc is selected but this program links only pitlane::worker; link "
          "pitlane::worker_grpc for the gRPC transport");
    }
  }
  return t;
}

Result<uint64_t> RingBytesOption(uint64_t n) {
  if (n == 0) return defaults::RingBytes();
  if (n < shm::kMinRingBytes || n > shm::kMaxRingBytes || (n & (n - 1)) != 0) {
    return InvalidArgument("ring size " + std::to_string(n) +
                           " is not a power of two between 4096 and 67108864");
  }
  return n;
}

Result<uint64_t> QueueBytesOption(uint64_t n) {
  if (n == 0) {
    n = uint64_t{4} << 20;
    const std::string env = EnvOr("", defaults::kGrpcQueueBytesEnv);
    if (!env.empty()) {
      char* end = nullptr;
      n = std::strtoull(env.c_str(), &end, 10);
      if (end == env.c_str() || *end != '\0') n = 0;
    }
  }
  if (n < (uint64_t{64} << 10) || n > (uint64_t{1} << 30) || (n & (n - 1))) {
    return InvalidArgument("gRPC queue size " + std::to_string(n) +
                           " is not a power of two between 65536 and 1073741824 (" +
                           defaults::kGrpcQueueBytesEnv + ")");
  }
  return n;
}

}  // namespace

Status Worker::Impl::StartRemote(const WorkerOptions& o) {
  Result<uint64_t> qbytes = QueueBytesOption(o.grpc_queue_bytes);
  if (!qbytes.ok()) return qbytes.status();
  tsc = false;  // events leave the machine: stamp them with CLOCK_REALTIME
  use_ids = true;
  rqueue = std::make_unique<internal::RemoteQueue>(static_cast<size_t>(*qbytes));
  internal::RemoteConfig c;
  c.target = o.grpc_target;
  c.listen = o.grpc_listen;
  c.token = o.grpc_token;
  c.tls_ca = o.grpc_tls_ca;
  c.worker_id = id;
  c.node = defaults::Hostname();
  c.pid = static_cast<uint32_t>(pid);
  c.catalog = catalog;
  c.queue = rqueue.get();
  c.flush_timeout = o.flush_timeout;
  c.apply_control = [this](const ControlState& state) {
    std::lock_guard<std::mutex> lock(mu);
    gates.Install(state, *catalog, gates.current()->version + 1, 0);
  };
  c.log = [](std::string_view line) {
    std::fprintf(stderr, "pitlane worker: %.*s\n", static_cast<int>(line.size()), line.data());
  };
  Result<std::unique_ptr<internal::RemoteTransport>> t =
      internal::RegisteredRemoteTransport()(std::move(c));
  if (!t.ok()) return t.status();
  rtransport = std::move(t).value();
  return Status::Ok();
}

Tally Worker::Impl::Counts() const {
  if (rqueue) return rqueue->counters.Load();
  std::lock_guard<std::mutex> lock(mu);
  Tally t = retired;
  for (const auto& r : rings) t += ReadRing(r->writer.counters(), Tally());
  t += unringed.Load();
  return t;
}

// ── Worker ───────────────────────────────────────────────────────────────────────────────────

Result<std::unique_ptr<Worker>> Worker::Start(WorkerOptions options) {
  auto impl = std::make_unique<Impl>();
  impl->ns = options.ns.empty() ? defaults::Namespace() : options.ns;
  if (Status s = shm::ValidateNamespace(impl->ns); !s.ok()) return s;
  const char* env_id = std::getenv(defaults::kWorkerIdEnv);
  impl->explicit_id = !options.worker_id.empty() ? options.worker_id
                                                  : (env_id && *env_id ? std::string(env_id) : "");
  impl->id = impl->explicit_id.empty() ? defaults::WorkerId() : impl->explicit_id;
  if (impl->id.size() >= shm::kWorkerIdBytes) {
    return InvalidArgument("worker id \"" + impl->id + "\" is longer than " +
                           std::to_string(shm::kWorkerIdBytes - 1) + " bytes");
  }
  Result<uint64_t> ring_bytes = RingBytesOption(options.ring_bytes);
  if (!ring_bytes.ok()) return ring_bytes.status();
  if (options.max_rings == 0 || options.max_rings > shm::kMaxRings) {
    return InvalidArgument("max_rings " + std::to_string(options.max_rings) +
                           " is outside 1.." + std::to_string(shm::kMaxRings));
  }
  if ((options.initial_position & 7) != 0) {
    return InvalidArgument("initial_position must be a multiple of 8");
  }
  impl->ring_bytes = *ring_bytes;
  impl->max_rings = options.max_rings;
  impl->initial_position = options.initial_position;
  impl->catalog = Catalog::Default();
  impl->tsc = internal::TscIsUsable();
  impl->pid = getpid();
  impl->start_time = shm::ProcessStartTime(impl->pid);
  impl->gates.Install(ControlState(), *impl->catalog, 0, 0);
  if (Status s = impl->Register(); !s.ok()) return s;

  Result<WorkerTransport> mode = ChooseTransport(options, impl->ns);
  if (!mode.ok()) {
    impl->Unregister();
    return mode.status();
  }
  if (*mode == WorkerTransport::kGrpc) {
    if (Status st = impl->StartRemote(options); !st.ok()) {
      impl->Unregister();
      return st;
    }
    return std::unique_ptr<Worker>(new Worker(std::move(impl)));
  }

  // Half a ring: one flush publishes all of it into the shared ring.
  impl->pre_attach = std::make_unique<internal::PreAttachBuffer>(options.pre_attach_events,
                                                                  impl->ring_bytes / 2);
  const auto deadline = std::chrono::steady_clock::now() + options.attach_wait;
  while (!impl->TryAttach() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  if (Status why = impl->AttachStatus(); !why.ok() && why.code() != StatusCode::kNotFound) {
    // No host yet (NOT_FOUND) is the normal drop mode; anything else the user must hear about.
    std::fprintf(stderr, "pitlane worker: %s; events are counted as dropped_no_ring until a host "
                         "attaches\n", why.message().c_str());
  }
  impl->StartBackground();
  return std::unique_ptr<Worker>(new Worker(std::move(impl)));
}

Worker::Worker(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Worker::~Worker() {
  // gRPC: flush what is queued (bounded by flush_timeout) and close the stream.
  impl_->rtransport.reset();
  impl_->StopBackground();
  impl_->DropPreAttach();  // no host came for them
  impl_->Leave();
}

EventHandle Worker::Event(std::string_view name) const {
  const Catalog& cat = *impl_->catalog;
  const uint16_t id = cat.FindWorkerEvent(name);
  if (id == 0) return {0, name};
  return {id, cat.event(id).wire_names.front()};
}

MeasurementKey Worker::Measure(std::string_view key) const {
  const uint16_t id = impl_->catalog->MeasurementKeyId(key);
  return {id, id ? impl_->catalog->MeasurementKey(id) : key};
}

MetadataKey Worker::Meta(std::string_view key) const {
  const uint16_t id = impl_->catalog->MetadataKeyId(key);
  return {id, id ? impl_->catalog->MetadataKey(id) : key};
}

WorkerStats Worker::Stats() const {
  WorkerStats s;
  static_cast<Tally&>(s) = impl_->Counts();
  if (!impl_->rqueue) {
    std::lock_guard<std::mutex> lock(impl_->mu);
    s.live_rings = static_cast<uint32_t>(impl_->rings.size());
  }
  s.attached = attached();
  s.pending = impl_->pre_attach ? impl_->pre_attach->pending() : 0;
  return s;
}

bool Worker::attached() const {
  if (impl_->rqueue) {
    return impl_->rtransport && !impl_->remote_orphaned.load(std::memory_order_relaxed) &&
           impl_->rtransport->connected();
  }
  return impl_->attached.load(std::memory_order_acquire);
}

Status Worker::attach_status() const { return impl_->AttachStatus(); }

Status Worker::Impl::AttachStatus() const {
  std::lock_guard<std::mutex> lock(mu);
  if (rqueue || attached.load(std::memory_order_relaxed) || attach_error.ok()) {
    return Status::Ok();
  }
  return Status(attach_error.code(),
                "not attached to namespace \"" + ns + "\": " + attach_error.message());
}

WorkerTransport Worker::transport() const {
  return impl_->rqueue ? WorkerTransport::kGrpc : WorkerTransport::kShm;
}
int Worker::grpc_listen_port() const {
  return impl_->rtransport && !impl_->remote_orphaned.load(std::memory_order_relaxed)
             ? impl_->rtransport->listen_port()
             : 0;
}
const std::string& Worker::id() const { return impl_->id; }
const std::string& Worker::ns() const { return impl_->ns; }
const Catalog& Worker::catalog() const { return *impl_->catalog; }
uint64_t Worker::applied_control_version() const { return impl_->gates.current()->version; }

bool Worker::WaitAttached(std::chrono::milliseconds timeout) const {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!attached() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return attached();
}

}  // namespace pitlane
