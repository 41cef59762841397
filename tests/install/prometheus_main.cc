// The Prometheus exporter and the admin service of the installed package: starts a host in
// $PITLANE_NAMESPACE, serves /metrics on an ephemeral port and the admin service on a Unix
// socket of its own, and prints whether the scrape has the build info (tests/install/check.sh).
#include <unistd.h>

#include <cstdio>
#include <string>

#include "pitlane/admin.h"
#include "pitlane/host.h"
#include "pitlane/prometheus.h"

int main() {
  auto host = pitlane::Host::Start();
  if (!host.ok()) {
    std::fprintf(stderr, "Host::Start: %s\n", host.status().ToString().c_str());
    return 1;
  }
  pitlane::PrometheusOptions po;
  po.listen = "127.0.0.1:0";
  po.specs.push_back(
      pitlane::MetricSpec::Parse("histogram(snakepit.python.call.stop.duration)").value());
  auto metrics = pitlane::PrometheusExporter::Start(**host, po);
  if (!metrics.ok()) {
    std::fprintf(stderr, "PrometheusExporter::Start: %s\n", metrics.status().ToString().c_str());
    return 1;
  }
  const std::string socket = "unix:/tmp/pitlane-install-check-" + std::to_string(getpid());
  auto admin = pitlane::AdminServer::Start(**host, socket);
  if (!admin.ok()) {
    std::fprintf(stderr, "AdminServer::Start: %s\n", admin.status().ToString().c_str());
    return 1;
  }
  const std::string body = (*metrics)->Render();
  const bool ok =
      body.find("pitlane_build_info{") != std::string::npos &&
      body.find("# TYPE snakepit_python_call_stop_duration_seconds histogram") != std::string::npos;
  std::printf("prometheus: %s\n", ok ? "build info served" : "unexpected scrape");
  return ok ? 0 : 1;
}
