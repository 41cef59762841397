// The exporter flags of `pitlane host` (--jsonl-file, --statsd, --statsd-prefix, --statsd-tags,
// --metrics, --metric, --otlp, --otlp-protocol, --otlp-compression, --otlp-logs),
// kept beside host_cmd.cc, which implements both functions.
#pragma once

#include <string>
#include <vector>

#include "commands.h"

namespace CLI {
class App;
}

namespace pitlane::cli {

struct HostExporterOptions {
  std::string jsonl_file;             // "" → none; else append JSON lines to this file
  std::string statsd;                 // "" → none; else HOST:PORT
  std::string statsd_prefix = "pitlane";
  std::vector<std::string> statsd_tags;  // metadata keys sent as DogStatsD tags
  std::string metrics;                   // "" → none; else serve Prometheus /metrics on ADDR
  std::vector<std::string> metric_specs;  // event metrics, e.g. summary(...duration, tags: [...])
  std::string metric_naming = "conventional";  // or "snakepit" (PrometheusOptions::naming)
  double departed_retention_s = 300;           // HostOptions::departed_retention
  // OpenTelemetry (README "OpenTelemetry"): empty values take the OTEL_EXPORTER_OTLP_* variables.
  bool otlp = false;
  std::string otlp_endpoint;     // http://HOST:4318 | grpc://HOST:4317
  std::string otlp_protocol;     // http/protobuf | grpc
  std::string otlp_compression;  // gzip | none
  bool otlp_logs = false;
};

// Registers the exporter flags on the `host` subcommand.
void AddHostExporterFlags(CLI::App* host_cmd, HostExporterOptions* o);
// RunHost (commands.h) with exporters; RunHost(o) is RunHost(o, {}).
int RunHost(const HostCmdOptions& o, const HostExporterOptions& exporters);

}  // namespace pitlane::cli
