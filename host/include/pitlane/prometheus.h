// pitlane::PrometheusExporter — serves a Host's transport counters and event-derived metrics on
// an HTTP `/metrics` endpoint in the Prometheus text exposition format 0.0.4.
//
// Three kinds of series share the endpoint:
//  * Transport counters, computed at scrape time from Host::Workers() (per worker id: live and
//    reclaimed rings and ringless threads), Host::Departed(), Rings() and Stats():
//    pitlane_events_total, pitlane_published_total, pitlane_delivered_total,
//    pitlane_dropped_total{reason}, pitlane_suppressed_total{reason},
//    pitlane_rejected_total{reason}, pitlane_unaccounted_events (the conservation law's
//    imbalance over settled numbers), pitlane_ring_fill_ratio{segment}, pitlane_workers_alive
//    and host totals. Every reason of every known worker is exported from the start, at 0. A
//    worker gone for HostOptions::departed_retention leaves Host::Workers(): its totals move into
//    the series labelled worker_id="(departed)" (Host::Departed()), so sums over workers never
//    go back and short-lived workers do not grow the scrape forever.
//  * Event-derived metrics declared by MetricSpecs (counter, last_value, sum, summary,
//    histogram over one event and one measurement, labelled by metadata tags). The host handler
//    only copies the event into the bounded queue of an AsyncExporter; aggregation runs on the
//    exporter's thread. Label cardinality is bounded per metric: once a metric has
//    max_series_per_metric label sets, events with a new label set are counted in
//    pitlane_metric_series_overflow_total{metric} instead of creating a series.
//  * The process (process_cpu_seconds_total, process_resident_memory_bytes, ... from
//    /proc/self, the names every Prometheus client library uses) and pitlane_build_info.
//
// Names and units (MetricNaming): by default names follow the Prometheus conventions — values
// in base units converted from the catalog's measurement units (nanosecond durations become
// `..._duration_seconds`, `rss_bytes` stays bytes), counters end in `_total` — so a scrape
// passes `promtool check metrics`. MetricNaming::kSnakepit gives the names
// TelemetryMetricsPrometheus gives Snakepit's Telemetry.Metrics definitions (the spec name with
// dots as underscores, values unconverted unless the spec says `unit: {native, millisecond}`),
// so Snakepit's documented PromQL (`snakepit_python_call_stop_duration_bucket`,
// `snakepit_python_call_exception_count`, ...) works unchanged.
//
// Label values come from workers and are untrusted: they are escaped per the exposition format
// (backslash, double quote, newline) and invalid UTF-8 is replaced with U+FFFD. Numbers print in
// the shortest form that reads back as the same double (`le="0.1"`, not 0.10000000000000001).
//
// HTTP: Boost.Beast on one thread of the exporter's own. GET/HEAD /metrics → 200 with
// Content-Type `text/plain; version=0.0.4; charset=utf-8`, gzip-encoded when the request's
// Accept-Encoding allows gzip (Prometheus asks for it); other paths → 404; other methods → 405.
//
// Thread safety: Start/destruction on one thread; Render(), port() and the counters from any.
// REQUIRES: the Host outlives the exporter.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "pitlane/host.h"
#include "pitlane/status.h"
#include "pitlane/units.h"

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
  std::vector<double> buckets;    // histogram upper bounds, in the exported unit; empty →
                                  // defaults suited to that unit
  std::string help;               // `help:` or `description:`; empty → generated from kind,
                                  // event and measurement
  std::string name;               // exported name as is; empty → derived (MetricNaming)
  // Telemetry.Metrics' `unit:`. `unit: u` says the measurement is in `u` (instead of the unit
  // the catalog declares); `unit: {from, to}` also converts it to `to` under
  // MetricNaming::kSnakepit. MetricNaming::kConventional always exports the base unit.
  std::optional<Unit> unit_from, unit_to;

  // Text form: `<kind>(<name>[, tags: [k, ...]][, buckets: [n, ...]][, unit: ...]
  // [, help: "..."][, name: n])` (`description:` is Telemetry.Metrics' word for help:), e.g.
  //   summary("snakepit.python.call.stop.duration", tags: [worker_id, command])
  //   last_value(snakepit.pool.status.queue_depth)
  //   counter(snakepit.python.call.stop.count, tags: [:command])
  //   histogram(snakepit.python.call.stop.duration, unit: {native, millisecond},
  //             buckets: [1, 10, 100])
  // The name is `<event>.<measurement>` (quoted or bare); tags and units may be written as
  // atoms (`:k`); units are those of units.h (`native` = nanosecond).
  static Result<MetricSpec> Parse(std::string_view text);
  // `<event>.<measurement>` with every character outside the metric alphabet as '_' — the name
  // under MetricNaming::kSnakepit when `name` is empty.
  std::string MetricName() const;
};

enum class MetricNaming : uint8_t {
  kConventional,  // base units with their suffix (_seconds, _bytes); counters end in _total
  kSnakepit,      // TelemetryMetricsPrometheus' names for Snakepit's documented queries
};
// "conventional" / "snakepit"; false for anything else.
bool ParseMetricNaming(std::string_view text, MetricNaming* out);

// [a-zA-Z_:][a-zA-Z0-9_:]*: every other byte becomes '_', a leading digit gets a '_' prefix.
std::string SanitizeMetricName(std::string_view name);

struct PrometheusOptions {
  std::string listen = "127.0.0.1:9464";  // "host:port" or "[v6]:port"; port 0 → ephemeral
  std::vector<MetricSpec> specs;
  size_t max_series_per_metric = 1000;
  size_t queue_capacity = 65536;  // events queued for aggregation before overflow counts
  MetricNaming naming = MetricNaming::kConventional;
  // Families appended to every scrape, in the exposition format with their HELP and TYPE lines
  // (e.g. OtlpExporter::PrometheusText). Called on the HTTP thread; must outlive the exporter.
  std::function<std::string()> extra;
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
