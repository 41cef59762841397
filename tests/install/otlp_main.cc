// The OpenTelemetry exporter of the installed package: links pitlane::otlp, starts a host in the
// namespace of $PITLANE_NAMESPACE with an OTLP exporter attached (no collector is needed to
// start one: it connects when it first sends), prints what it sends to, and shows that the
// library's option checks run by having a bad protocol refused (tests/install/check.sh).
#include <cstdio>

#include "pitlane/host.h"
#include "pitlane/otlp_exporter.h"

int main() {
  auto host = pitlane::Host::Start();
  if (!host.ok()) {
    std::fprintf(stderr, "Host::Start: %s\n", host.status().ToString().c_str());
    return 1;
  }
  pitlane::OtlpOptions options;
  options.endpoint = "http://127.0.0.1:4318";
  options.getenv = [](const char*) -> const char* { return nullptr; };
  auto exporter = pitlane::OtlpExporter::Start(**host, options);
  if (!exporter.ok()) {
    std::fprintf(stderr, "OtlpExporter::Start: %s\n", exporter.status().ToString().c_str());
    return 1;
  }
  std::printf("otlp exporter to %s\n", (*exporter)->Describe().c_str());
  (*exporter)->Shutdown();
  options.protocol = "bogus";
  auto refused = pitlane::OtlpExporter::Start(**host, options);
  std::printf("bogus protocol: %s\n",
              refused.ok() ? "accepted" : refused.status().ToString().c_str());
  return refused.ok() ? 1 : 0;
}
