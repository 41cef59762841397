// The host's admin gRPC service (see pitlane/admin.h).
#include "pitlane/admin.h"

#include <dirent.h>
#include <fcntl.h>
#include <grpcpp/grpcpp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "admin.grpc.pb.h"
#include "pitlane/grpc_common.h"
#include "pitlane/shm_layout.h"

namespace pitlane {
namespace {

namespace v1 = ::pitlane::v1;

constexpr std::string_view kUnixScheme = "unix:";
constexpr auto kShutdownGrace = std::chrono::seconds(1);

grpc::Status ToGrpc(const Status& s) {
  grpc::StatusCode code = grpc::StatusCode::UNKNOWN;
  switch (s.code()) {
    case StatusCode::kOk:
      return grpc::Status::OK;
    case StatusCode::kInvalidArgument:
      code = grpc::StatusCode::INVALID_ARGUMENT;
      break;
    case StatusCode::kNotFound:
      code = grpc::StatusCode::NOT_FOUND;
      break;
    case StatusCode::kAlreadyExists:
      code = grpc::StatusCode::ALREADY_EXISTS;
      break;
    case StatusCode::kPermissionDenied:
      code = grpc::StatusCode::PERMISSION_DENIED;
      break;
    case StatusCode::kFailedPrecondition:
      code = grpc::StatusCode::FAILED_PRECONDITION;
      break;
    case StatusCode::kResourceExhausted:
      code = grpc::StatusCode::RESOURCE_EXHAUSTED;
      break;
    case StatusCode::kUnavailable:
      code = grpc::StatusCode::UNAVAILABLE;
      break;
    case StatusCode::kDataLoss:
      code = grpc::StatusCode::DATA_LOSS;
      break;
    case StatusCode::kInternal:
      code = grpc::StatusCode::INTERNAL;
      break;
  }
  return grpc::Status(code, s.message());
}

std::string Quoted(std::string_view s) { return "\"" + std::string(s) + "\""; }

class AdminService final : public v1::Admin::Service {
 public:
  AdminService(Host& host, ExporterReports exporters)
      : host_(host), exporters_(std::move(exporters)) {}

  grpc::Status SetToggle(grpc::ServerContext*, const v1::SetToggleRequest* req,
                         v1::AdminControlReply* reply) override {
    if (!req->has_enabled()) {
      return ToGrpc(InvalidArgument("SetToggle needs \"enabled\" (true or false)"));
    }
    const bool enabled = req->enabled();
    return Apply(
        req->worker_id(), [&](const std::string& id) { return host_.Toggle(id, enabled); }, reply);
  }

  grpc::Status SetSampling(grpc::ServerContext*, const v1::SetSamplingRequest* req,
                           v1::AdminControlReply* reply) override {
    if (!req->has_sampling_rate()) {
      return ToGrpc(InvalidArgument("SetSampling needs \"sampling_rate\" (a number in [0, 1])"));
    }
    const double rate = req->sampling_rate();
    const std::vector<std::string> patterns(req->event_patterns().begin(),
                                            req->event_patterns().end());
    return Apply(
        req->worker_id(),
        [&](const std::string& id) { return host_.UpdateSampling(id, rate, patterns); }, reply);
  }

  grpc::Status SetFilter(grpc::ServerContext*, const v1::SetFilterRequest* req,
                         v1::AdminControlReply* reply) override {
    const std::vector<std::string> allow(req->allow().begin(), req->allow().end());
    const std::vector<std::string> deny(req->deny().begin(), req->deny().end());
    return Apply(
        req->worker_id(),
        [&](const std::string& id) { return host_.UpdateFilter(id, allow, deny); }, reply);
  }

  grpc::Status SetControl(grpc::ServerContext*, const v1::SetControlRequest* req,
                          v1::AdminControlReply* reply) override {
    if (!req->has_control()) {
      return ToGrpc(InvalidArgument("SetControl needs \"control\" (the whole control state)"));
    }
    ControlState state;
    // Validates the values as the worker will (INVALID_ARGUMENT before any worker changes).
    if (Status s = internal::ApplyControlState(req->control(), &state); !s.ok()) return ToGrpc(s);
    return Apply(
        req->worker_id(), [&](const std::string& id) { return host_.SetControl(id, state); },
        reply);
  }

  grpc::Status GetControl(grpc::ServerContext*, const v1::GetControlRequest* req,
                          v1::AdminControlReply* reply) override {
    Result<std::vector<std::string>> ids = Select(req->worker_id());
    if (!ids.ok()) return ToGrpc(ids.status());
    for (const std::string& id : ids.value()) {
      Result<ControlState> c = host_.Control(id);
      if (!c.ok()) {
        if (req->worker_id() == "*" && c.status().code() == StatusCode::kNotFound) continue;
        return ToGrpc(c.status());
      }
      AddWorker(id, c.value(), reply);
    }
    return grpc::Status::OK;
  }

  grpc::Status ListWorkers(grpc::ServerContext*, const v1::ListWorkersRequest*,
                           v1::ListWorkersReply* reply) override {
    reply->set_namespace_(host_.ns());
    for (const WorkerInfo& w : host_.Workers()) {
      v1::AdminWorker* out = reply->add_workers();
      out->set_worker_id(w.id);
      out->set_pid(w.pid);
      out->set_transport(std::string(TransportName(w.transport)));
      out->set_alive(w.alive);
      out->set_rings(w.rings);
      internal::ControlToProto(w.control, out->mutable_control());
      // Its totals (Host::Workers: its rings, live and reclaimed, and its ringless threads).
      internal::TallyToAdmin(w, out->mutable_counters());
    }
    return grpc::Status::OK;
  }

  grpc::Status ListExporters(grpc::ServerContext*, const v1::ListExportersRequest*,
                             v1::ListExportersReply* reply) override {
    if (!exporters_) return grpc::Status::OK;
    for (const ExporterReport& e : exporters_()) {
      v1::AdminExporter* out = reply->add_exporters();
      out->set_name(e.name);
      out->set_target(e.target);
      for (const auto& [name, value] : e.counts) {
        v1::AdminCount* c = out->add_counts();
        c->set_name(name);
        c->set_value(value);
      }
    }
    return grpc::Status::OK;
  }

 private:
  // The worker ids a request selects: the id itself, or every worker the host lists for "*".
  Result<std::vector<std::string>> Select(const std::string& selector) const {
    if (selector.empty()) {
      return InvalidArgument("worker_id is empty: give a worker id, or \"*\" for every worker");
    }
    if (selector != "*") return std::vector<std::string>{selector};
    std::vector<std::string> ids;
    for (const WorkerInfo& w : host_.Workers()) {
      bool seen = false;
      for (const std::string& id : ids) seen |= id == w.id;
      if (!seen) ids.push_back(w.id);
    }
    if (ids.empty()) {
      return NotFound("no worker has attached to namespace " + Quoted(host_.ns()) +
                      ", so \"*\" selects none");
    }
    return ids;
  }

  // Applies one control update to the selected workers; the host validates it (NOT_FOUND
  // first, then INVALID_ARGUMENT). An update replaces whole fields and every stored state is
  // valid, so whether an update is valid does not depend on the worker: with "*", a bad value
  // is refused at the first worker, before any worker changed. A worker that left between the
  // listing and its update is skipped.
  grpc::Status Apply(const std::string& selector,
                     const std::function<Status(const std::string&)>& apply,
                     v1::AdminControlReply* reply) {
    Result<std::vector<std::string>> ids = Select(selector);
    if (!ids.ok()) return ToGrpc(ids.status());
    const bool all = selector == "*";
    for (const std::string& id : ids.value()) {
      Status s = apply(id);
      if (!s.ok()) {
        if (all && s.code() == StatusCode::kNotFound) continue;
        return ToGrpc(s);
      }
      Result<ControlState> c = host_.Control(id);
      if (c.ok()) AddWorker(id, c.value(), reply);
    }
    return grpc::Status::OK;
  }

  static void AddWorker(const std::string& id, const ControlState& c,
                        v1::AdminControlReply* reply) {
    v1::AdminWorkerControl* w = reply->add_workers();
    w->set_worker_id(id);
    internal::ControlToProto(c, w->mutable_control());
  }

  Host& host_;
  ExporterReports exporters_;  // may be empty: no exporter reports
};

// ── unix socket set-up ───────────────────────────────────────────────────────────────────────

std::string Errno(int err) { return std::strerror(err); }

// A failed file-system call: PERMISSION_DENIED when it was refused, FAILED_PRECONDITION otherwise
// (missing directory, not a directory, read-only file system...).
Status FileError(int err, const std::string& what) {
  const std::string message = what + ": " + Errno(err);
  return err == EACCES || err == EPERM ? PermissionDenied(message) : FailedPrecondition(message);
}

bool FitsSunPath(const std::string& path) { return path.size() < sizeof(sockaddr_un{}.sun_path); }

// The one rule for a file at an admin socket path: it is used (served after a dead host,
// probed, connected to) only when it is a socket owned by this process's effective uid. /tmp is
// world-writable: while no host of ours serves a default path, another uid can put a socket
// there, to receive our control commands or to feed `pitlane stat` numbers of its making. The
// sticky bit keeps it from replacing a file of ours, so checking the file once is enough.
Status CheckSocketFile(const std::string& path, const struct stat& st) {
  if (!S_ISSOCK(st.st_mode)) {
    return FailedPrecondition(path +
                              " exists and is not a socket; remove it or choose another "
                              "admin address");
  }
  if (st.st_uid != ::geteuid()) {
    return PermissionDenied("admin socket " + path + " belongs to uid " +
                            std::to_string(st.st_uid) + ", not to uid " +
                            std::to_string(::geteuid()) +
                            " (this process): not using it; its owner or root can remove it, "
                            "or choose another namespace or admin address");
  }
  return Status::Ok();
}

enum class Probe { kAbsent, kStale };

// What is at `path`: nothing, or a socket of ours nobody serves (connect refused).
// ALREADY_EXISTS when a server accepts connections on it; CheckSocketFile's errors.
Result<Probe> ProbeSocket(const std::string& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return Probe::kAbsent;
    return FileError(errno, "cannot inspect admin socket " + path);
  }
  if (Status ok = CheckSocketFile(path, st); !ok.ok()) return ok;
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Internal("socket(AF_UNIX): " + Errno(errno));
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  std::memcpy(sa.sun_path, path.c_str(), path.size() + 1);
  const int rc = ::connect(fd, reinterpret_cast<const sockaddr*>(&sa), sizeof(sa));
  const int err = errno;
  ::close(fd);
  if (rc == 0) {
    return Status(StatusCode::kAlreadyExists, "another host is serving the admin socket " + path +
                                                  " (stop it, or choose another admin "
                                                  "address)");
  }
  if (err == ECONNREFUSED) return Probe::kStale;
  if (err == ENOENT) return Probe::kAbsent;  // removed meanwhile
  return FileError(err, "cannot probe admin socket " + path);
}

// DefaultAdminAddress's socket path, around the namespace.
constexpr std::string_view kAdminSocketDir = "/tmp/";
constexpr std::string_view kAdminSocketPrefix = "pitlane.";
constexpr std::string_view kAdminSocketSuffix = ".admin.sock";

// The default admin socket path of `ns`, or of every namespace with one when `ns` is empty.
std::vector<std::string> DefaultAdminSocketPaths(const std::string& ns) {
  std::vector<std::string> paths;
  if (!ns.empty()) {
    paths.push_back(DefaultAdminAddress(ns).substr(kUnixScheme.size()));
    return paths;
  }
  DIR* d = ::opendir(std::string(kAdminSocketDir).c_str());
  if (d == nullptr) return paths;
  while (const dirent* de = ::readdir(d)) {
    const std::string_view n = de->d_name;
    if (n.size() > kAdminSocketPrefix.size() + kAdminSocketSuffix.size() &&
        n.starts_with(kAdminSocketPrefix) && n.ends_with(kAdminSocketSuffix)) {
      paths.push_back(std::string(kAdminSocketDir) + std::string(n));
    }
  }
  ::closedir(d);  // pairs with opendir
  return paths;
}

// Ok for HOST:PORT (port in [0, 65535]); INVALID_ARGUMENT naming the address otherwise.
Status ValidateTcpAddress(const std::string& address) {
  const size_t colon = address.rfind(':');
  const auto bad = [&](const std::string& why) {
    return InvalidArgument("admin address " + Quoted(address) + " " + why +
                           " (expected unix:PATH or HOST:PORT)");
  };
  if (colon == std::string::npos) return bad("has no port");
  const std::string host = address.substr(0, colon);
  const std::string port = address.substr(colon + 1);
  if (host.empty()) return bad("has no host");
  if (port.empty() || port.size() > 5 ||
      port.find_first_not_of("0123456789") != std::string::npos || std::stoi(port) > 65535) {
    return bad("has no port in [0, 65535]");
  }
  if (host.find('/') != std::string::npos || host.find(' ') != std::string::npos) {
    return bad("is not a host name or address");
  }
  return Status::Ok();
}

void ConfigureBuilder(grpc::ServerBuilder& b, grpc::Service* service) {
  b.RegisterService(service);
  // A control plane with a handful of calls: keep the thread count small.
  b.SetSyncServerOption(grpc::ServerBuilder::SyncServerOption::NUM_CQS, 1);
  b.SetSyncServerOption(grpc::ServerBuilder::SyncServerOption::MIN_POLLERS, 1);
  b.SetSyncServerOption(grpc::ServerBuilder::SyncServerOption::MAX_POLLERS, 2);
}

}  // namespace

Status CheckAdminSocketOwner(const std::string& address) {
  if (address.rfind(kUnixScheme, 0) != 0) return Status::Ok();
  const std::string path = address.substr(kUnixScheme.size());
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) return Status::Ok();  // nothing there: nobody to trust
  return CheckSocketFile(path, st);
}

std::string DefaultAdminAddress(std::string_view ns) {
  return std::string(kUnixScheme) + std::string(kAdminSocketDir) + std::string(kAdminSocketPrefix) +
         std::string(ns) + std::string(kAdminSocketSuffix);
}

std::vector<shm::CleanupStep> CleanStaleAdminSockets(const std::string& ns, bool dry_run) {
  std::vector<shm::CleanupStep> steps;
  for (const std::string& path : DefaultAdminSocketPaths(ns)) {
    shm::CleanupStep step;
    step.name = path;
    Result<Probe> probe = ProbeSocket(path);
    if (!probe.ok()) {
      step.why = probe.status().code() == StatusCode::kAlreadyExists ? "a live host serves it"
                                                                     : probe.status().message();
      steps.push_back(std::move(step));
      continue;
    }
    if (*probe == Probe::kAbsent) continue;
    step.why = "admin socket nobody serves (its host is gone)";
    if (dry_run) {
      step.outcome = shm::CleanupOutcome::kWouldRemove;
    } else if (::unlink(path.c_str()) == 0) {
      step.outcome = shm::CleanupOutcome::kRemoved;
    } else if (errno == ENOENT) {
      step.outcome = shm::CleanupOutcome::kGone;
    } else {
      step.outcome = shm::CleanupOutcome::kFailed;
      step.why = Errno(errno);
    }
    steps.push_back(std::move(step));
  }
  return steps;
}

class AdminServer::Impl {
 public:
  Impl(Host& host, ExporterReports exporters) : service(host, std::move(exporters)) {}

  AdminService service;
  std::unique_ptr<grpc::Server> server;
  std::string address;
  int port = 0;
  // The unix socket this server put in place, removed at Stop() if it is still that file.
  std::string socket_path;
  dev_t socket_dev = 0;
  ino_t socket_ino = 0;
  std::mutex stop_mu;
  bool stopped = false;

  Status StartUnix(const std::string& path);
  Status StartTcp(const std::string& address);
};

Status AdminServer::Impl::StartUnix(const std::string& path) {
  if (path.empty()) return InvalidArgument("admin address \"unix:\" has no path");
  if (!FitsSunPath(path)) {
    return InvalidArgument("admin socket path " + path + " is longer than " +
                           std::to_string(sizeof(sockaddr_un{}.sun_path) - 1) + " bytes");
  }
  Result<Probe> probe = ProbeSocket(path);
  if (!probe.ok()) return probe.status();

  // Bind in a private directory beside `path` (same file system, so the rename is atomic), make
  // the socket 0600, then rename it onto `path`.
  const size_t slash = path.rfind('/');
  const std::string dir = slash == std::string::npos ? "."
                          : slash == 0               ? "/"
                                                     : path.substr(0, slash);
  std::string tmp_dir = (dir == "/" ? "" : dir) + "/.pitlane-admin.XXXXXX";
  if (::mkdtemp(tmp_dir.data()) == nullptr) {
    return FileError(errno, "cannot create a directory in " + dir + " for the admin socket");
  }
  const std::string tmp_sock = tmp_dir + "/s";
  const auto cleanup_tmp = [&] {
    ::unlink(tmp_sock.c_str());
    ::rmdir(tmp_dir.c_str());
  };
  if (!FitsSunPath(tmp_sock)) {
    cleanup_tmp();
    return InvalidArgument("admin socket directory " + dir + " is too long a path for a socket");
  }

  grpc::ServerBuilder builder;
  builder.AddListeningPort(std::string(kUnixScheme) + tmp_sock, grpc::InsecureServerCredentials());
  ConfigureBuilder(builder, &service);
  server = builder.BuildAndStart();
  if (server == nullptr) {
    cleanup_tmp();
    return Unavailable("cannot listen on unix socket " + tmp_sock);
  }
  const auto fail = [&](Status s) {
    server->Shutdown();
    server->Wait();
    server.reset();
    cleanup_tmp();
    return s;
  };
  if (::chmod(tmp_sock.c_str(), 0600) != 0) {
    return fail(Internal("chmod 0600 " + tmp_sock + ": " + Errno(errno)));
  }
  // A path that was free must still be free (another server may have appeared meanwhile); a
  // stale socket is replaced.
  int rc = -1;
  if (probe.value() == Probe::kAbsent) {
    rc = ::renameat2(AT_FDCWD, tmp_sock.c_str(), AT_FDCWD, path.c_str(), RENAME_NOREPLACE);
    if (rc != 0 && errno == EINVAL) rc = ::rename(tmp_sock.c_str(), path.c_str());
  } else {
    rc = ::rename(tmp_sock.c_str(), path.c_str());
  }
  if (rc != 0) {
    const int err = errno;
    if (err == EEXIST) {
      return fail(Status(StatusCode::kAlreadyExists, "another server created the admin socket " +
                                                         path + " while this one was starting"));
    }
    return fail(FileError(err, "cannot put the admin socket at " + path));
  }
  ::rmdir(tmp_dir.c_str());
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0) {
    socket_dev = st.st_dev;
    socket_ino = st.st_ino;
  }
  socket_path = path;
  address = std::string(kUnixScheme) + path;
  return Status::Ok();
}

Status AdminServer::Impl::StartTcp(const std::string& addr) {
  if (Status s = ValidateTcpAddress(addr); !s.ok()) return s;
  grpc::ServerBuilder builder;
  builder.AddListeningPort(addr, grpc::InsecureServerCredentials(), &port);
  ConfigureBuilder(builder, &service);
  server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    if (server != nullptr) {
      server->Shutdown();
      server->Wait();
      server.reset();
    }
    return Unavailable("cannot listen on " + addr +
                       " (address in use, or not an address of this machine)");
  }
  address = addr.substr(0, addr.rfind(':') + 1) + std::to_string(port);
  return Status::Ok();
}

Result<std::unique_ptr<AdminServer>> AdminServer::Start(Host& host, const std::string& address,
                                                      ExporterReports exporters) {
  auto impl = std::make_unique<Impl>(host, std::move(exporters));
  Status s;
  if (address.rfind(kUnixScheme, 0) == 0) {
    std::string path = address.substr(kUnixScheme.size());
    if (path.rfind("//", 0) == 0) path.erase(0, 2);  // unix:///abs/path, gRPC's other spelling
    s = impl->StartUnix(path);
  } else {
    s = impl->StartTcp(address);
  }
  if (!s.ok()) return s;
  return std::unique_ptr<AdminServer>(new AdminServer(std::move(impl)));
}

AdminServer::AdminServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

AdminServer::~AdminServer() { Stop(); }

void AdminServer::Stop() {
  std::lock_guard<std::mutex> lock(impl_->stop_mu);
  if (impl_->stopped) return;
  impl_->stopped = true;
  impl_->server->Shutdown(std::chrono::system_clock::now() + kShutdownGrace);
  impl_->server->Wait();
  if (!impl_->socket_path.empty()) {
    struct stat st {};
    if (::lstat(impl_->socket_path.c_str(), &st) == 0 && st.st_dev == impl_->socket_dev &&
        st.st_ino == impl_->socket_ino) {
      ::unlink(impl_->socket_path.c_str());
    }
  }
}

const std::string& AdminServer::address() const { return impl_->address; }
int AdminServer::port() const { return impl_->port; }

// ── AdminReader ─────────────────────────────────────────────────────────────────────────────

struct AdminReader::Impl {
  std::string address;
  std::unique_ptr<v1::Admin::Stub> stub;
};

AdminReader::AdminReader(std::string address) : impl_(std::make_unique<Impl>()) {
  impl_->address = std::move(address);
  impl_->stub =
      v1::Admin::NewStub(grpc::CreateChannel(impl_->address, grpc::InsecureChannelCredentials()));
}

AdminReader::~AdminReader() = default;

const std::string& AdminReader::address() const { return impl_->address; }

Result<std::vector<ExporterReport>> AdminReader::ListExporters(
    std::chrono::system_clock::time_point deadline) const {
  if (Status mine = CheckAdminSocketOwner(impl_->address); !mine.ok()) return mine;
  grpc::ClientContext ctx;
  ctx.set_deadline(deadline);
  v1::ListExportersReply reply;
  const grpc::Status s = impl_->stub->ListExporters(&ctx, {}, &reply);
  if (!s.ok()) return Unavailable(s.error_message());
  // The inverse of AdminService::ListExporters.
  std::vector<ExporterReport> out;
  for (const v1::AdminExporter& e : reply.exporters()) {
    ExporterReport r{e.name(), e.target(), {}};
    for (const v1::AdminCount& c : e.counts()) r.counts.emplace_back(c.name(), c.value());
    out.push_back(std::move(r));
  }
  return out;
}

}  // namespace pitlane
