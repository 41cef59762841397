// pitlane::OtlpExporter — sends a Host's events to an OpenTelemetry collector over OTLP
// (doc/otlp.md has the mapping; README "OpenTelemetry" the flags and variables).
//
//  * Spans: a span's start and stop/exception events (catalog roles S, P, X) pair by their span
//    id into one OTLP span: name = the operation ("python.call"), kind INTERNAL, start/end from
//    the two records' timestamps, trace id from the correlation id (pitlane/trace_context.h),
//    parent = the record's parent span id, metadata and measurements as attributes, worker
//    identity as pitlane.worker.* attributes. An exception event ends it with status ERROR and an
//    `exception` event (exception.type / exception.message). Open spans wait in a bounded map;
//    when it is full the oldest is evicted (counted). An end without its start (evicted, or
//    started before the exporter) is still exported, starting `duration` before its end.
//  * Metrics: MetricSpecs (the Prometheus exporter's language, prometheus.h) aggregated on the
//    exporter's thread and sent every metric_interval as cumulative series: counter and sum →
//    monotonic Sum, last_value → Gauge, summary and histogram → Histogram; UCUM units from the
//    catalog's unit of the measurement (OtlpUnitOf).
//  * Logs (opt-in): every other event → a LogRecord carrying the trace and span ids it has.
//
// Never hurts the host: the host's handler only copies the event into the bounded queue of an
// AsyncExporter (overflow counted); conversion runs on that queue's thread; a sender thread
// batches (max_batch items or batch_delay, whichever first), sends, and retries retryable
// failures (HTTP 429/502/503/504, gRPC UNAVAILABLE & co. — RESOURCE_EXHAUSTED only with a
// RetryInfo —, connection errors) with exponential backoff and full jitter, honouring HTTP
// Retry-After and gRPC RetryInfo, for up to max_retry_time. Items a collector
// rejects in a partial success are dropped and counted (its message logged once). Items
// waiting to be sent are bounded by max_pending; beyond it they are dropped and counted.
// Destruction flushes within shutdown_deadline, then counts what is left as dropped.
//
// Thread safety: Start/Shutdown/destruction on one thread; Stats() from any thread.
// REQUIRES: the Host outlives the exporter.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "pitlane/exporter.h"
#include "pitlane/host.h"
#include "pitlane/prometheus.h"
#include "pitlane/status.h"

namespace pitlane {

// Every string left empty (and every nullopt) takes the standard variable, then the default.
struct OtlpOptions {
  // OTEL_EXPORTER_OTLP_ENDPOINT. "http://HOST:PORT[/base]" (http/protobuf: /v1/<signal> is
  // appended), "grpc://HOST:PORT" (selects grpc), "https://..." (TLS, either protocol).
  // Default http://localhost:4318 (http/protobuf) or http://localhost:4317 (grpc).
  std::string endpoint;
  std::string protocol;     // OTEL_EXPORTER_OTLP_PROTOCOL: "http/protobuf" (default) | "grpc"
  std::string headers;      // OTEL_EXPORTER_OTLP_HEADERS: "k=v,k2=v2" (values %-decoded)
  std::optional<std::chrono::milliseconds> timeout;  // OTEL_EXPORTER_OTLP_TIMEOUT; 10 s
  std::string compression;  // OTEL_EXPORTER_OTLP_COMPRESSION: "gzip" | "none" (default)
  // OTEL_EXPORTER_OTLP_CERTIFICATE: a PEM file of the roots https:// trusts (a private CA, a
  // self-signed collector); default the system's. The certificate must name the endpoint's host.
  std::string certificate;
  std::string service_name;  // OTEL_SERVICE_NAME, else service.name of the next; "pitlane"
  std::string resource_attributes;  // OTEL_RESOURCE_ATTRIBUTES: "k=v,..." (%-decoded)

  bool traces = true;
  bool logs = false;
  std::vector<MetricSpec> metrics;

  size_t max_batch = 512;                          // items per request
  std::chrono::milliseconds batch_delay{1000};     // the longest an item waits for a batch
  std::chrono::milliseconds metric_interval{10000};
  size_t max_pending = 8192;       // spans + log records waiting to be sent
  size_t max_open_spans = 16384;   // started spans waiting for their end
  size_t max_series_per_metric = 1000;  // label sets per metric; events of new ones beyond it are counted
  size_t queue_capacity = 65536;   // the host handler's queue (AsyncExporter)
  std::chrono::milliseconds initial_backoff{250};
  std::chrono::milliseconds max_backoff{5000};
  std::chrono::milliseconds max_retry_time{30000};  // then the batch is dropped (counted)
  std::chrono::milliseconds shutdown_deadline{5000};

  // Environment lookup (null: ::getenv). Tests substitute their own.
  std::function<const char*(const char*)> getenv;
  // Log lines (retries given up, refusals), rate-limited by the exporter. Null: stderr.
  std::function<void(std::string_view)> log;
};

// What happened to everything the exporter was handed.
struct OtlpStats {
  uint64_t spans_exported = 0;
  uint64_t metric_points_exported = 0;
  uint64_t logs_exported = 0;
  uint64_t requests = 0;  // successful requests
  uint64_t retries = 0;   // attempts after a retryable failure
  // Dropped, by reason. Events: the handler's queue was full. Items (spans / log records /
  // metric points): pending was full, the collector refused the request, the collector
  // accepted the request but rejected these items (its partial success), retries ran out, or
  // shutdown's deadline passed.
  uint64_t dropped_queue_full_events = 0;
  uint64_t dropped_pending_full = 0;
  uint64_t dropped_refused = 0;
  uint64_t dropped_rejected = 0;
  uint64_t dropped_retries_exhausted = 0;
  uint64_t dropped_shutdown = 0;
  uint64_t open_spans_evicted = 0;  // exported later without their start, or never ended
  uint64_t unpaired_ends = 0;       // ends whose start was not seen
  uint64_t metric_series_overflow = 0;  // events not aggregated: their metric had no room for a new series
  uint64_t dropped() const {
    return dropped_queue_full_events + dropped_pending_full + dropped_refused +
           dropped_rejected + dropped_retries_exhausted + dropped_shutdown;
  }
};

// The UCUM unit OTLP metrics of a measurement carry, and the factor that converts pitlane's
// value into it, from the unit the catalog declares for the measurement (units.h): times →
// "s" (nanoseconds ×1e-9, milliseconds ×1e-3), sizes → "By", no unit (counts, ratios, ids) →
// "1". The same conversion to base units as the Prometheus exporter's.
struct OtlpUnit {
  std::string_view unit;
  double scale = 1;
};
OtlpUnit OtlpUnitOf(const Catalog& catalog, std::string_view measurement_key);

// Whether `endpoint` has the form OtlpExporter::Start accepts, SCHEME://HOST[:PORT][/BASE]
// with SCHEME http, https or grpc and PORT in 1-65535: INVALID_ARGUMENT naming what is wrong.
// For a command line to refuse a typo before it starts anything.
Status CheckOtlpEndpoint(std::string_view endpoint);

class OtlpExporter {
 public:
  // Resolves the options against the environment, attaches to `host` and starts the threads.
  // INVALID_ARGUMENT names the option or variable at fault.
  static Result<std::unique_ptr<OtlpExporter>> Start(Host& host, OtlpOptions options);
  ~OtlpExporter();  // Shutdown()
  OtlpExporter(const OtlpExporter&) = delete;
  OtlpExporter& operator=(const OtlpExporter&) = delete;

  // Detaches from the host, sends what is queued within shutdown_deadline (the rest counts as
  // dropped_shutdown) and stops the threads. Idempotent; Stats() stays readable.
  void Shutdown();

  OtlpStats Stats() const;
  // "http/protobuf http://localhost:4318" — what it sends to, for the status line.
  std::string Describe() const;
  // Stats() as Prometheus families (PrometheusOptions::extra): pitlane_otlp_exported_total
  // {signal}, pitlane_otlp_requests_total, pitlane_otlp_retries_total,
  // pitlane_otlp_dropped_total{reason}, pitlane_otlp_open_spans_evicted_total,
  // pitlane_otlp_unpaired_ends_total, pitlane_otlp_metric_series_overflow_total.
  std::string PrometheusText() const;
  // Stats() and Describe() for the admin service: name "otlp", one count per OtlpStats field
  // under that field's name.
  ExporterReport Report() const;

  class Impl;

 private:
  explicit OtlpExporter(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace pitlane
