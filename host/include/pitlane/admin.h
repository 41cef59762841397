// pitlane::AdminServer — the host's admin gRPC service (proto/admin.proto, service
// pitlane.v1.Admin): toggle, sampling and filter updates for any worker the host knows, the
// control state of a worker, a listing of the workers with their counters, and the counts of
// the exporters the host runs (when its owner passes them). It is built only
// on the public Host API (Toggle / UpdateSampling / UpdateFilter / Control / Workers / Rings),
// so it reaches every worker Host::Workers() lists, whatever its transport. `pitlane ctl` is its
// command-line client; `pitlane host` serves it by default.
//
// Addresses:
//   unix:PATH   a unix socket (e.g. unix:/tmp/pitlane.default.admin.sock). The socket is created
//               mode 0600 whatever the umask: it is bound inside a fresh 0700 directory next to
//               PATH, made 0600, then renamed onto PATH, so no other user can connect at any
//               time. A socket file at PATH that no process serves any more (a dead host's) is
//               replaced; a live one, one of another uid, or anything at PATH that is not a
//               socket, is refused.
//               Stop() removes PATH (if it is still this server's socket).
//   HOST:PORT   TCP, e.g. 127.0.0.1:7420 or [::1]:0 (port 0: the kernel picks one; see port()).
//               No authentication: bind to a loopback address unless the network is trusted.
// DefaultAdminAddress(ns) is unix:/tmp/pitlane.<ns>.admin.sock — one per namespace, the same
// for the host and for `pitlane ctl --ns NS`.
//
// Errors on the wire: an unknown worker → NOT_FOUND naming the id; a bad value (sampling rate
// NaN or outside [0, 1], empty or malformed pattern, too many patterns, a required field left
// out) → INVALID_ARGUMENT with the host's message. A failed request changes nothing. A worker id
// of "*" selects every worker Host::Workers() lists (NOT_FOUND when there is none); the value is
// validated once before any worker is changed.
//
// Thread safety: the service runs on gRPC's threads and calls the Host, whose control and
// listing methods may be called from any thread. Stop() (or destruction) must happen before the
// Host is destroyed; it waits for calls in progress.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "pitlane/exporter.h"
#include "pitlane/host.h"
#include "pitlane/shm_inspect.h"
#include "pitlane/status.h"

namespace pitlane {

// How long an admin call may take before a client gives up (`pitlane ctl` uses it).
inline constexpr double kAdminCallTimeoutSeconds = 5.0;

// "unix:/tmp/pitlane.<ns>.admin.sock"
std::string DefaultAdminAddress(std::string_view ns);

// Whether a client may talk to `address`: OK for HOST:PORT and for a unix path with nothing at
// it (connecting then fails as "no host"); for a file there, OK only when it is a socket owned
// by the effective uid — PERMISSION_DENIED naming its owner otherwise (another uid put it in
// /tmp), FAILED_PRECONDITION when it is not a socket. The server, `pitlane stat` (AdminReader)
// and `pitlane ctl` apply the same rule.
Status CheckAdminSocketOwner(const std::string& address);

// Removes the default admin sockets (DefaultAdminAddress) of `ns` ("" = of every namespace)
// that no server accepts connections on: a host that died left them behind. One step per socket
// file found (kKept: a live host serves it, or it is not a socket or cannot be probed — `why`
// says which); with `dry_run` nothing is removed. `pitlane cleanup` runs it.
std::vector<shm::CleanupStep> CleanStaleAdminSockets(const std::string& ns, bool dry_run);

// The exporters a host runs, each as it reports itself (AsyncExporter::Report for the JSONL and
// StatsD exporters, OtlpExporter::Report).
using ExporterReports = std::function<std::vector<ExporterReport>()>;

// What a tool reads from a running host's admin service (`pitlane stat`). Creating it connects
// nothing; each call connects when needed, so one client serves a tool that asks repeatedly.
class AdminReader {
 public:
  explicit AdminReader(std::string address);  // as AdminServer::Start takes it
  ~AdminReader();
  AdminReader(const AdminReader&) = delete;
  AdminReader& operator=(const AdminReader&) = delete;

  const std::string& address() const;
  // ListExporters: the exporters the host reports, as AdminServer got them from its owner.
  // UNAVAILABLE with gRPC's message when nothing answered at `address` by `deadline`.
  Result<std::vector<ExporterReport>> ListExporters(
      std::chrono::system_clock::time_point deadline) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

class AdminServer {
 public:
  // Serves `host` on `address` (see above). INVALID_ARGUMENT for an address that is neither
  // form (or a unix path too long for a socket), ALREADY_EXISTS when a live server owns the unix
  // socket, FAILED_PRECONDITION when PATH is not a socket or its directory is unusable,
  // PERMISSION_DENIED when the file system refuses, UNAVAILABLE when gRPC cannot listen. Each
  // message names the address or path.
  // `exporters`, when given, lists the exporters the host runs for ListExporters (called on
  // gRPC's threads; must stay callable until Stop()).
  static Result<std::unique_ptr<AdminServer>> Start(Host& host, const std::string& address,
                                                    ExporterReports exporters = {});
  ~AdminServer();  // Stop()
  AdminServer(const AdminServer&) = delete;
  AdminServer& operator=(const AdminServer&) = delete;

  // Stops accepting calls, waits for those in progress (cancelling any still running after 1 s)
  // and removes the unix socket. Idempotent.
  void Stop();

  // The address served, in the form a client dials: "unix:/tmp/..." or "127.0.0.1:40123" (with
  // the port the kernel chose when the address asked for port 0).
  const std::string& address() const;
  // The TCP port served; 0 for a unix socket.
  int port() const;

  class Impl;

 private:
  explicit AdminServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace pitlane
