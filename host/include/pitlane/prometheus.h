// pitlane::PrometheusExporter — serves a Host's transport counters and event-derived metrics on
// an HTTP `/metrics` endpoint in the Prometheus text exposition format 0.0.4.
//
// Two kinds of series share the endpoint:
//  * Transport counters, computed at scrape time from Host::Rings()/Workers()/Stats() and
//    summed per worker_id: pitlane_events_total, pitlane_published_total,
//    pitlane_delivered_total, pitlane_dropped_total{reason}, pitlane_suppressed_total{reason},
//    pitlane_rejected_total{reason}, pitlane_ring_fill_ratio{segment}, pitlane_workers_alive and
//    host totals. Every reason of every known worker is exported from the start, at 0. Counters
//    stay monotonic when rings are reclaimed: a reclaimed ring's final numbers are folded into
//    an accumulator of the exporter's own the first time it is seen, so the host dropping old
//    history does not make them go back.
//  * Event-derived metrics declared by MetricSpecs (counter, last_value, sum, summary,
//    histogram over one event and one measurement, labelled by metadata tags). The host handler
//    only copies the event into the bounded queue of an AsyncExporter; aggregation runs on the
//    exporter's thread. Label cardinality is bounded per metric: once a metric has
//    max_series_per_metric label sets, events with a new label set are counted in
//    pitlane_metric_series_overflow_total{metric} instead of creating a series.
//
// Label values come from workers and are untrusted: they are escaped per the exposition format
// (backslash, double quote, newline) and invalid UTF-8 is replaced with U+FFFD.
//
// HTTP: Boost.Beast on one thread of the exporter's own. GET/HEAD /metrics → 200 with
// Content-Type `text/plain; version=0.0.4; charset=utf-8`; other paths → 404; other methods →
// 405.
//
// Thread safety: Start/destruction on one thread; Render(), port() and the counters from any.
// REQUIRES: the Host outlives the exporter.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "pitlane/host.h"
#include "pitlane/status.h"

namespace pitlane {

enum class MetricKind : uint8_t {
  kCounter,    // number of events (counter)
  kLastValue,  // the measurement's last value (gauge)
  kSum,        // sum of the measurement (counter)
  kSummary,    // <name>_count and <name>_sum (summary)
  kHistogram,  // <name>_bucket{le}, <name>_count, <name>_sum (histogram)
};
std::string_view MetricKindName(MetricKind kind);

// One event-derived metric, as Telemetry.Metrics declares them.
struct MetricSpec {
  MetricKind kind = MetricKind::kCounter;
  std::string event;        // host event name: "snakepit.python.call.stop"
  std::string measurement;  // "duration"; for a counter only the metric name's last segment
  std::vector<std::string> tags;  // metadata keys; "worker_id" falls back to the event's worker
  std::vector<double> buckets;    // histogram upper bounds; empty → Prometheus' defaults
  std::string help;               // empty → generated from kind, event and measurement
  std::string name;               // exported name; empty → Sanitize(event + "." + measurement)

  // Text form: `<kind>(<name>[, tags: [k, ...]][, buckets: [n, ...]][, help: "..."])`, e.g.
  //   summary("snakepit.python.call.stop.duration", tags: [worker_id, command])
  //   last_value(snakepit.pool.status.queue_depth)
  //   counter(snakepit.python.call.stop.count, tags: [:command])
  //   histogram(snakepit.python.call.stop.duration, buckets: [1000, 1e6, 1e9])
  // The name is `<event>.<measurement>` (quoted or bare); tags may be written as atoms (`:k`).
  static Result<MetricSpec> Parse(std::string_view text);
  // The exported metric family name.
  std::string MetricName() const;
};

// [a-zA-Z_:][a-zA-Z0-9_:]*: every other byte becomes '_', a leading digit gets a '_' prefix.
std::string SanitizeMetricName(std::string_view name);

struct PrometheusOptions {
  std::string listen = "127.0.0.1:9464";  // "host:port" or "[v6]:port"; port 0 → ephemeral
  std::vector<MetricSpec> specs;
  size_t max_series_per_metric = 1000;
  size_t queue_capacity = 65536;  // events queued for aggregation before overflow counts
};

class PrometheusExporter {
 public:
  // Validates the specs against the host's catalog, attaches the aggregation handler (when there
  // are specs) and starts serving. Errors name the spec or the address.
  static Result<std::unique_ptr<PrometheusExporter>> Start(Host& host,
                                                           PrometheusOptions options);
  ~PrometheusExporter();  // detaches from the host, stops the server and the exporter thread
  PrometheusExporter(const PrometheusExporter&) = delete;
  PrometheusExporter& operator=(const PrometheusExporter&) = delete;

  // The body /metrics serves now.
  std::string Render();
  uint16_t port() const;
  // Events aggregated so far / dropped because the aggregation queue was full.
  uint64_t exported() const;
  uint64_t overflow() const;

  class Impl;

 private:
  explicit PrometheusExporter(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace pitlane
