#include "pitlane/otlp_exporter.h"

#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <sstream>
#include <thread>
#include <unordered_map>
#include <utility>

#include "otlp/logs_service.pb.h"
#include "otlp/metrics_service.pb.h"
#include "otlp/trace_service.pb.h"
#include "otlp_transport.h"
#include "pitlane/exporter.h"
#include "pitlane/trace_context.h"
#include "pitlane/units.h"

namespace pitlane {

namespace {

namespace common = opentelemetry::proto::common::v1;
namespace trace = opentelemetry::proto::trace::v1;
namespace metrics = opentelemetry::proto::metrics::v1;
namespace logs = opentelemetry::proto::logs::v1;
namespace collector = opentelemetry::proto::collector;
using internal::OtlpSendResult;
using internal::OtlpSignal;
using SteadyClock = std::chrono::steady_clock;

constexpr std::string_view kScopeName = "pitlane";

int64_t NowUnixNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string PercentDecode(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size()) {
      const std::string hex(s.substr(i + 1, 2));
      char* end = nullptr;
      const long v = std::strtol(hex.c_str(), &end, 16);
      if (end == hex.c_str() + 2) {
        out.push_back(static_cast<char>(v));
        i += 2;
        continue;
      }
    }
    out.push_back(s[i]);
  }
  return out;
}

std::string_view TrimSpaces(std::string_view s) {
  while (!s.empty() && s.front() == ' ') s.remove_prefix(1);
  while (!s.empty() && s.back() == ' ') s.remove_suffix(1);
  return s;
}

// "k=v,k2=v2" (W3C Baggage-like, as OTEL_EXPORTER_OTLP_HEADERS and OTEL_RESOURCE_ATTRIBUTES
// are written). INVALID_ARGUMENT names `what` and the entry without '='.
Result<std::vector<std::pair<std::string, std::string>>> ParseKeyValues(std::string_view text,
                                                                        std::string_view what) {
  std::vector<std::pair<std::string, std::string>> out;
  size_t pos = 0;
  while (pos <= text.size()) {
    const size_t comma = std::min(text.find(',', pos), text.size());
    const std::string_view entry = TrimSpaces(text.substr(pos, comma - pos));
    pos = comma + 1;
    if (entry.empty()) continue;
    const size_t eq = entry.find('=');
    if (eq == std::string_view::npos || TrimSpaces(entry.substr(0, eq)).empty()) {
      return InvalidArgument(std::string(what) + ": \"" + std::string(entry) +
                             "\" is not key=value");
    }
    out.emplace_back(PercentDecode(TrimSpaces(entry.substr(0, eq))),
                     PercentDecode(TrimSpaces(entry.substr(eq + 1))));
  }
  return out;
}

void SetString(common::KeyValue* kv, std::string_view key, std::string_view value) {
  kv->set_key(std::string(key));
  kv->mutable_value()->set_string_value(std::string(value));
}

void AddAttribute(google::protobuf::RepeatedPtrField<common::KeyValue>* attrs,
                  std::string_view key, const OwnedEvent::Measurement& m) {
  common::KeyValue* kv = attrs->Add();
  kv->set_key(std::string(key));
  switch (m.kind) {
    case Value::Kind::kInt: kv->mutable_value()->set_int_value(m.i); break;
    case Value::Kind::kDouble: kv->mutable_value()->set_double_value(m.d); break;
    case Value::Kind::kString: kv->mutable_value()->set_string_value(m.s); break;
  }
}

double AsDouble(const OwnedEvent::Measurement& m, bool* ok) {
  *ok = m.kind != Value::Kind::kString;
  return m.kind == Value::Kind::kInt ? static_cast<double>(m.i) : m.d;
}

std::string BytesOf(const TraceId& id) { return std::string(id.begin(), id.end()); }
std::string BytesOf(uint64_t span_id) {
  const auto b = SpanIdBytes(span_id);
  return std::string(b.begin(), b.end());
}

// Metadata the host adds that the span or record carries in its own fields (timestamp) or
// under pitlane.* names.
bool IsContextKey(std::string_view k) {
  return k == "timestamp_ns" || k == "correlation_id" || k == "worker_id" || k == "worker_pid" ||
         k == "node" || k == "pool_name";
}

// Attributes every span and log record carries: the worker's identity and the event's own
// metadata (context keys renamed), then its measurements except `skip`.
void EventAttributes(const OwnedEvent& e, std::string_view skip,
                     google::protobuf::RepeatedPtrField<common::KeyValue>* attrs) {
  for (const auto& [k, v] : e.metadata) {
    if (IsContextKey(k)) continue;
    SetString(attrs->Add(), k, v);
  }
  for (const OwnedEvent::Measurement& m : e.measurements) {
    if (m.key != skip) AddAttribute(attrs, m.key, m);
  }
}

void IdentityAttributes(const OwnedEvent& e,
                        google::protobuf::RepeatedPtrField<common::KeyValue>* attrs) {
  SetString(attrs->Add(), "pitlane.worker.id", e.worker_id);
  common::KeyValue* pid = attrs->Add();
  pid->set_key("pitlane.worker.pid");
  pid->mutable_value()->set_int_value(e.worker_pid);
  if (const std::string* node = e.meta("node")) SetString(attrs->Add(), "pitlane.node", *node);
  if (const std::string* pool = e.meta("pool_name")) {
    SetString(attrs->Add(), "pitlane.pool_name", *pool);
  }
  SetString(attrs->Add(), "pitlane.transport", TransportName(e.transport));
  // A correlation id that is not itself the trace id is kept (trace_context.h).
  if (!e.correlation_id.empty() && !IsTraceIdHex(e.correlation_id)) {
    SetString(attrs->Add(), "pitlane.correlation_id", e.correlation_id);
  }
}

// An operation's name: the canonical event name without its role suffix.
std::string OperationName(const CatalogEvent& ev) {
  const std::string& c = ev.canonical;
  const size_t dot = c.rfind('.');
  return dot == std::string::npos ? c : c.substr(0, dot);
}

const std::vector<double> kSecondsBuckets = {.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10};
// The OpenTelemetry SDKs' default explicit bucket boundaries.
const std::vector<double> kOtelBuckets = {0,   5,    10,   25,   50,   75,   100,  250,
                                          500, 750, 1000, 2500, 5000, 7500, 10000};

}  // namespace

OtlpUnit OtlpUnitOf(const Catalog& catalog, std::string_view key) {
  const Unit u = catalog.MeasurementUnit(key);
  switch (DimensionOf(u)) {
    case UnitDimension::kTime: return {"s", BaseUnitsPer(u)};
    case UnitDimension::kMemory: return {"By", BaseUnitsPer(u)};
    case UnitDimension::kNone: break;
  }
  return {"1", 1};
}

// ── the exporter ─────────────────────────────────────────────────────────────────────────────

class OtlpExporter::Impl final : public AsyncExporter {
 public:
  struct Resolved {
    internal::OtlpTransportConfig transport;
    std::string describe;
    std::vector<std::pair<std::string, std::string>> resource;
  };

  Impl(Host& host, OtlpOptions o, Resolved r, std::unique_ptr<internal::OtlpTransport> transport)
      : AsyncExporter(o.queue_capacity),
        host_(host),
        o_(std::move(o)),
        describe_(std::move(r.describe)),
        transport_(std::move(transport)),
        rng_(std::random_device{}()) {
    for (const auto& [k, v] : r.resource) SetString(resource_.add_attributes(), k, v);
    for (const MetricSpec& spec : o_.metrics) {
      Metric m;
      m.spec = spec;
      m.name = spec.name.empty() ? spec.event + "." + spec.measurement : spec.name;
      m.unit = spec.kind == MetricKind::kCounter ? OtlpUnit{"1", 1}
                                                   : OtlpUnitOf(host.catalog(), spec.measurement);
      if (spec.kind == MetricKind::kHistogram || spec.kind == MetricKind::kSummary) {
        // Spec buckets are in the measurement's own unit, like Prometheus'; OTLP's are in the
        // metric's unit.
        if (spec.buckets.empty()) {
          m.bounds = m.unit.unit == "s" ? kSecondsBuckets : kOtelBuckets;
        } else {
          for (double b : spec.buckets) m.bounds.push_back(b * m.unit.scale);
        }
        std::sort(m.bounds.begin(), m.bounds.end());
        m.bounds.erase(std::unique(m.bounds.begin(), m.bounds.end()), m.bounds.end());
      }
      metrics_.push_back(std::move(m));
    }
    start_ns_ = NowUnixNs();
    next_metrics_ = SteadyClock::now() + o_.metric_interval;
  }

  ~Impl() override { Shutdown(); }

  void Shutdown() {
    if (!handler_id_.empty()) host_.Detach(handler_id_);
    handler_id_.clear();
    Stop();  // the converter thread: whatever it still had queued becomes pending items
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!stopping_) {
        stopping_ = true;
        stop_deadline_ = SteadyClock::now() + o_.shutdown_deadline;
      }
    }
    cv_.notify_all();
    if (sender_.joinable()) sender_.join();
  }

  Status StartAndAttach() {
    Start();
    sender_ = std::thread([this] { SenderLoop(); });
    const std::string id = "pitlane.otlp." + std::to_string(reinterpret_cast<uintptr_t>(this));
    Status s = AttachTo(host_, id);
    if (s.ok()) handler_id_ = id;
    return s;
  }

  OtlpStats Stats() const {
    std::lock_guard<std::mutex> lock(mu_);
    OtlpStats s = stats_;
    s.dropped_queue_full_events = overflow();
    return s;
  }

  const std::string& describe() const { return describe_; }

 protected:
  // ── conversion (the AsyncExporter thread) ──
  void Export(const OwnedEvent& e) override {
    const uint16_t id = host_.catalog().FindHostEvent(e.name);
    if (id == 0) return;
    const CatalogEvent& ev = host_.catalog().event(id);
    UpdateMetrics(e);
    const bool span_role = ev.role != SpanRole::kNone;
    if (o_.traces && span_role) {
      if (ev.role == SpanRole::kStart) {
        if (e.span_id != 0) Open(e);
      } else {
        EndSpan(e, ev);
      }
      return;
    }
    if (o_.logs && !span_role) ToLogRecord(e, ev);
  }

 private:
  struct OpenSpan {
    uint64_t order = 0;
    OwnedEvent start;
  };

  struct Series {
    std::vector<std::pair<std::string, std::string>> labels;
    int64_t start_ns = 0;
    uint64_t count = 0;
    double sum = 0, last = 0, min = 0, max = 0;
    std::vector<uint64_t> buckets;
  };
  struct Metric {
    MetricSpec spec;
    std::string name;
    OtlpUnit unit;
    std::vector<double> bounds;
    std::map<std::vector<std::string>, Series> series;  // by tag values
  };

  // open_ and open_order_ always hold the same spans (one order entry per open span), so both
  // stay within max_open_spans whatever the workers send.
  void Open(const OwnedEvent& e) {
    if (auto it = open_.find(e.span_id); it != open_.end()) {
      // A second start under an open span's id (only a misbehaving worker sends one): the
      // later start replaces the earlier.
      open_order_.erase(it->second.order);
      open_.erase(it);
    }
    if (open_.size() >= o_.max_open_spans) {
      const auto oldest = open_order_.begin();
      open_.erase(oldest->second);
      open_order_.erase(oldest);
      std::lock_guard<std::mutex> lock(mu_);
      ++stats_.open_spans_evicted;
    }
    const uint64_t order = next_order_++;
    open_.emplace(e.span_id, OpenSpan{order, e});
    open_order_.emplace(order, e.span_id);
  }

  void EndSpan(const OwnedEvent& e, const CatalogEvent& ev) {
    std::optional<OwnedEvent> start;
    if (e.span_id != 0) {
      if (auto it = open_.find(e.span_id); it != open_.end()) {
        open_order_.erase(it->second.order);
        start = std::move(it->second.start);
        open_.erase(it);
      }
    }
    trace::Span s;
    std::optional<TraceId> tid = TraceIdFromCorrelationId(e.correlation_id);
    if (!tid) {
      // No correlation id: a trace of its own.
      TraceId r;
      for (auto& b : r) b = static_cast<uint8_t>(rng_());
      tid = r;
    }
    s.set_trace_id(BytesOf(*tid));
    uint64_t span_id = e.span_id;
    while (span_id == 0) span_id = rng_();  // an end from a worker without span ids
    s.set_span_id(BytesOf(span_id));
    if (e.parent_span_id != 0) s.set_parent_span_id(BytesOf(e.parent_span_id));
    s.set_flags(1);  // sampled
    s.set_name(OperationName(ev));
    s.set_kind(trace::Span::SPAN_KIND_INTERNAL);
    int64_t begin = e.timestamp_ns;
    if (start) {
      begin = start->timestamp_ns;
    } else {
      {
        std::lock_guard<std::mutex> lock(mu_);
        ++stats_.unpaired_ends;
      }
      if (const OwnedEvent::Measurement* d = e.measurement("duration");
          d != nullptr && d->kind == Value::Kind::kInt && d->i > 0) {
        begin = e.timestamp_ns - d->i;
      }
    }
    s.set_start_time_unix_nano(static_cast<uint64_t>(std::max<int64_t>(begin, 0)));
    s.set_end_time_unix_nano(static_cast<uint64_t>(std::max<int64_t>(e.timestamp_ns, begin)));
    IdentityAttributes(e, s.mutable_attributes());
    if (start) EventAttributes(*start, "system_time", s.mutable_attributes());
    for (const auto& [k, v] : e.metadata) {
      // The stop event repeats the start's metadata (both span helpers copy it).
      if (IsContextKey(k) || k == "error_type" || k == "error_message") continue;
      if (start && start->meta(k) != nullptr && *start->meta(k) == v) continue;
      SetString(s.add_attributes(), k, v);
    }
    for (const OwnedEvent::Measurement& m : e.measurements) {
      if (m.key != "duration") AddAttribute(s.mutable_attributes(), m.key, m);
    }
    if (ev.role == SpanRole::kException) {
      const std::string* type = e.meta("error_type");
      const std::string* message = e.meta("error_message");
      s.mutable_status()->set_code(trace::Status::STATUS_CODE_ERROR);
      if (message) s.mutable_status()->set_message(*message);
      trace::Span::Event* x = s.add_events();
      x->set_name("exception");
      x->set_time_unix_nano(s.end_time_unix_nano());
      SetString(x->add_attributes(), "exception.type", type ? *type : "");
      SetString(x->add_attributes(), "exception.message", message ? *message : "");
    }
    Enqueue(&pending_spans_, std::move(s));
  }

  void ToLogRecord(const OwnedEvent& e, const CatalogEvent& ev) {
    logs::LogRecord r;
    r.set_time_unix_nano(static_cast<uint64_t>(std::max<int64_t>(e.timestamp_ns, 0)));
    r.set_observed_time_unix_nano(static_cast<uint64_t>(NowUnixNs()));
    const bool error = ev.canonical.find("error") != std::string::npos ||
                       ev.canonical.find("exception") != std::string::npos ||
                       ev.canonical.find("failed") != std::string::npos;
    r.set_severity_number(error ? logs::SEVERITY_NUMBER_ERROR : logs::SEVERITY_NUMBER_INFO);
    r.set_severity_text(error ? "ERROR" : "INFO");
    r.set_event_name(e.name);
    r.mutable_body()->set_string_value(e.name);
    if (const std::optional<TraceId> tid = TraceIdFromCorrelationId(e.correlation_id)) {
      r.set_trace_id(BytesOf(*tid));
      if (e.span_id != 0) r.set_span_id(BytesOf(e.span_id));
    }
    IdentityAttributes(e, r.mutable_attributes());
    EventAttributes(e, "", r.mutable_attributes());
    Enqueue(&pending_logs_, std::move(r));
  }

  template <typename T>
  void Enqueue(std::vector<T>* pending, T item) {
    bool wake;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (pending_spans_.size() + pending_logs_.size() >= o_.max_pending) {
        ++stats_.dropped_pending_full;
        return;
      }
      pending->push_back(std::move(item));
      // The sender wakes when a batch starts (to time its delay) and when one is full.
      wake = oldest_pending_ == SteadyClock::time_point{} || pending->size() >= o_.max_batch;
      if (oldest_pending_ == SteadyClock::time_point{}) oldest_pending_ = SteadyClock::now();
    }
    if (wake) cv_.notify_all();
  }

  void UpdateMetrics(const OwnedEvent& e) {
    for (Metric& m : metrics_) {
      if (m.spec.event != e.name) continue;
      double v = 0;
      if (m.spec.kind != MetricKind::kCounter) {
        const OwnedEvent::Measurement* x = e.measurement(m.spec.measurement);
        bool numeric = false;
        if (x == nullptr || !std::isfinite(v = AsDouble(*x, &numeric)) || !numeric) continue;
        v *= m.unit.scale;
      }
      std::vector<std::string> key;
      for (const std::string& tag : m.spec.tags) {
        const std::string* value = e.meta(tag);
        key.push_back(value ? *value : (tag == "worker_id" ? e.worker_id : std::string()));
      }
      std::lock_guard<std::mutex> lock(metrics_mu_);
      if (m.series.size() >= o_.max_series_per_metric && m.series.count(key) == 0) {
        std::lock_guard<std::mutex> stats_lock(mu_);  // order: metrics_mu_, then mu_
        ++stats_.metric_series_overflow;
        continue;
      }
      auto [it, fresh] = m.series.try_emplace(key);
      Series& s = it->second;
      if (fresh) {
        for (size_t i = 0; i < m.spec.tags.size(); ++i) s.labels.emplace_back(m.spec.tags[i], key[i]);
        s.start_ns = start_ns_;
        s.buckets.assign(m.bounds.size() + 1, 0);
        s.min = s.max = v;
      }
      ++s.count;
      s.sum += v;
      s.last = v;
      s.min = std::min(s.min, v);
      s.max = std::max(s.max, v);
      if (!m.bounds.empty()) {
        s.buckets[std::lower_bound(m.bounds.begin(), m.bounds.end(), v) - m.bounds.begin()]++;
      }
    }
  }

  // ── sending (the sender thread) ──

  void SenderLoop() {
    std::unique_lock<std::mutex> lock(mu_);
    while (true) {
      const SteadyClock::time_point now = SteadyClock::now();
      const bool full =
          pending_spans_.size() >= o_.max_batch || pending_logs_.size() >= o_.max_batch;
      const bool batch_due =
          oldest_pending_ != SteadyClock::time_point{} && now >= oldest_pending_ + o_.batch_delay;
      const bool metrics_due = !metrics_.empty() && (stopping_ || now >= next_metrics_);
      if (!stopping_ && !full && !batch_due && !metrics_due) {
        SteadyClock::time_point wake = SteadyClock::time_point::max();
        if (oldest_pending_ != SteadyClock::time_point{}) wake = oldest_pending_ + o_.batch_delay;
        if (!metrics_.empty()) wake = std::min(wake, next_metrics_);
        if (wake == SteadyClock::time_point::max()) {
          cv_.wait(lock);
        } else {
          cv_.wait_until(lock, wake);
        }
        continue;
      }
      std::vector<trace::Span> spans;
      std::vector<logs::LogRecord> records;
      if (stopping_ || full || batch_due) {
        Take(&pending_spans_, &spans);
        Take(&pending_logs_, &records);
        oldest_pending_ = pending_spans_.empty() && pending_logs_.empty()
                              ? SteadyClock::time_point{}
                              : now;
      }
      if (metrics_due) next_metrics_ = now + o_.metric_interval;
      const bool last = stopping_ && pending_spans_.empty() && pending_logs_.empty();
      lock.unlock();
      if (!spans.empty()) SendSpans(std::move(spans));
      if (!records.empty()) SendLogs(std::move(records));
      if (metrics_due) SendMetrics();
      if (last) return;
      lock.lock();
    }
  }

  template <typename T>
  void Take(std::vector<T>* from, std::vector<T>* to) {
    const size_t n = stopping_ ? from->size() : std::min(from->size(), o_.max_batch);
    to->assign(std::make_move_iterator(from->begin()), std::make_move_iterator(from->begin() + n));
    from->erase(from->begin(), from->begin() + n);
  }

  void FillScope(common::InstrumentationScope* scope) { scope->set_name(std::string(kScopeName)); }

  void SendSpans(std::vector<trace::Span> spans) {
    collector::trace::v1::ExportTraceServiceRequest req;
    trace::ResourceSpans* rs = req.add_resource_spans();
    *rs->mutable_resource() = resource_;
    trace::ScopeSpans* ss = rs->add_scope_spans();
    FillScope(ss->mutable_scope());
    for (trace::Span& s : spans) *ss->add_spans() = std::move(s);
    const size_t accepted = Deliver(OtlpSignal::kTraces, req, spans.size());
    std::lock_guard<std::mutex> lock(mu_);
    stats_.spans_exported += accepted;
  }

  void SendLogs(std::vector<logs::LogRecord> records) {
    collector::logs::v1::ExportLogsServiceRequest req;
    logs::ResourceLogs* rl = req.add_resource_logs();
    *rl->mutable_resource() = resource_;
    logs::ScopeLogs* sl = rl->add_scope_logs();
    FillScope(sl->mutable_scope());
    for (logs::LogRecord& r : records) *sl->add_log_records() = std::move(r);
    const size_t accepted = Deliver(OtlpSignal::kLogs, req, records.size());
    std::lock_guard<std::mutex> lock(mu_);
    stats_.logs_exported += accepted;
  }

  void SendMetrics() {
    collector::metrics::v1::ExportMetricsServiceRequest req;
    metrics::ResourceMetrics* rm = req.add_resource_metrics();
    *rm->mutable_resource() = resource_;
    metrics::ScopeMetrics* sm = rm->add_scope_metrics();
    FillScope(sm->mutable_scope());
    const uint64_t now = static_cast<uint64_t>(NowUnixNs());
    size_t points = 0;
    {
      std::lock_guard<std::mutex> lock(metrics_mu_);
      for (const Metric& m : metrics_) {
        if (m.series.empty()) continue;
        metrics::Metric* out = sm->add_metrics();
        out->set_name(m.name);
        out->set_unit(std::string(m.unit.unit));
        out->set_description(m.spec.help.empty()
                                 ? std::string(MetricKindName(m.spec.kind)) + " of " +
                                       m.spec.event +
                                       (m.spec.kind == MetricKind::kCounter
                                            ? std::string()
                                            : " " + m.spec.measurement)
                                 : m.spec.help);
        for (const auto& [key, s] : m.series) {
          ++points;
          google::protobuf::RepeatedPtrField<common::KeyValue>* attrs;
          switch (m.spec.kind) {
            case MetricKind::kCounter:
            case MetricKind::kSum: {
              metrics::Sum* sum = out->mutable_sum();
              sum->set_is_monotonic(m.spec.kind == MetricKind::kCounter || s.min >= 0);
              sum->set_aggregation_temporality(metrics::AGGREGATION_TEMPORALITY_CUMULATIVE);
              metrics::NumberDataPoint* p = sum->add_data_points();
              if (m.spec.kind == MetricKind::kCounter) {
                p->set_as_int(static_cast<int64_t>(s.count));
              } else {
                p->set_as_double(s.sum);
              }
              p->set_start_time_unix_nano(static_cast<uint64_t>(s.start_ns));
              p->set_time_unix_nano(now);
              attrs = p->mutable_attributes();
              break;
            }
            case MetricKind::kLastValue: {
              metrics::NumberDataPoint* p = out->mutable_gauge()->add_data_points();
              p->set_as_double(s.last);
              p->set_time_unix_nano(now);
              attrs = p->mutable_attributes();
              break;
            }
            default: {
              metrics::Histogram* h = out->mutable_histogram();
              h->set_aggregation_temporality(metrics::AGGREGATION_TEMPORALITY_CUMULATIVE);
              metrics::HistogramDataPoint* p = h->add_data_points();
              p->set_start_time_unix_nano(static_cast<uint64_t>(s.start_ns));
              p->set_time_unix_nano(now);
              p->set_count(s.count);
              p->set_sum(s.sum);
              p->set_min(s.min);
              p->set_max(s.max);
              for (double b : m.bounds) p->add_explicit_bounds(b);
              for (uint64_t c : s.buckets) p->add_bucket_counts(c);
              attrs = p->mutable_attributes();
            }
          }
          for (const auto& [k, v] : s.labels) SetString(attrs->Add(), k, v);
        }
      }
    }
    if (points == 0) return;
    const size_t accepted = Deliver(OtlpSignal::kMetrics, req, points);
    std::lock_guard<std::mutex> lock(mu_);
    stats_.metric_points_exported += accepted;
  }

  // Sends with retries; returns how many of the request's `items` the collector accepted. The
  // others are counted under the reason they were dropped.
  size_t Deliver(OtlpSignal signal, const google::protobuf::MessageLite& req, size_t items) {
    const SteadyClock::time_point first = SteadyClock::now();
    std::chrono::milliseconds backoff = o_.initial_backoff;
    while (true) {
      SteadyClock::time_point until = SteadyClock::time_point::max();
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (stopping_) until = stop_deadline_;  // a request never outlives shutdown's deadline
      }
      const OtlpSendResult r = transport_->Send(signal, req, until);
      if (r.kind == OtlpSendResult::Kind::kOk) return Accepted(r, items);
      std::unique_lock<std::mutex> lock(mu_);
      if (r.kind == OtlpSendResult::Kind::kFailed) {
        stats_.dropped_refused += items;
        lock.unlock();
        LogLine("OTLP " + describe_ + " refused " + std::to_string(items) + " items: " + r.error);
        return 0;
      }
      // Full jitter: a uniform wait in [0, backoff]; a Retry-After replaces it.
      std::chrono::milliseconds wait =
          r.retry_after.count() >= 0
              ? r.retry_after
              : std::chrono::milliseconds(std::uniform_int_distribution<int64_t>(
                    0, backoff.count())(rng_sender_));
      backoff = std::min(backoff * 2, o_.max_backoff);
      const SteadyClock::time_point at = SteadyClock::now() + wait;
      const SteadyClock::time_point limit =
          stopping_ ? stop_deadline_ : first + o_.max_retry_time;
      if (at >= limit) {
        (stopping_ ? stats_.dropped_shutdown : stats_.dropped_retries_exhausted) += items;
        lock.unlock();
        LogLine("OTLP " + describe_ + ": gave up on " + std::to_string(items) + " items after " +
            r.error);
        return 0;
      }
      ++stats_.retries;
      // A shutdown during the wait ends it early when its deadline comes before the retry.
      cv_.wait_until(lock, at, [&] { return stopping_ && stop_deadline_ <= at; });
      if (stopping_ && stop_deadline_ <= at) {
        stats_.dropped_shutdown += items;
        return 0;
      }
    }
  }

  // A request the collector took, perhaps in part: what it rejected is dropped for good (the
  // specification forbids sending it again). Its message is logged the first time only, since
  // a collector that rejects some items tends to reject them in every request.
  size_t Accepted(const OtlpSendResult& r, size_t items) {
    const size_t rejected = static_cast<size_t>(std::min<uint64_t>(r.rejected, items));
    bool first = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      ++stats_.requests;
      stats_.dropped_rejected += rejected;
      if ((rejected > 0 || !r.partial_message.empty()) && !partial_success_logged_) {
        partial_success_logged_ = first = true;
      }
    }
    if (first) {
      Log("OTLP " + describe_ + ": the collector rejected " + std::to_string(rejected) + " of " +
          std::to_string(items) + " items: \"" + r.partial_message +
          "\" (later partial successes are only counted)");
    }
    return items - rejected;
  }

  void LogLine(const std::string& line) {
    // At most one line per second: a collector that is down must not flood the host's log.
    const auto now = SteadyClock::now();
    if (now - last_log_ < std::chrono::seconds(1)) return;
    last_log_ = now;
    Log(line);
  }

  void Log(const std::string& line) {
    if (o_.log) {
      o_.log(line);
    } else {
      std::fprintf(stderr, "%s\n", line.c_str());
    }
  }

  Host& host_;
  std::string handler_id_;  // set once attached
  const OtlpOptions o_;
  const std::string describe_;
  std::unique_ptr<internal::OtlpTransport> transport_;
  opentelemetry::proto::resource::v1::Resource resource_;

  // Converter thread only.
  std::mt19937_64 rng_;
  std::unordered_map<uint64_t, OpenSpan> open_;
  std::map<uint64_t, uint64_t> open_order_;  // order → span id, oldest first
  uint64_t next_order_ = 0;

  // Metrics: updated by the converter, read by the sender.
  std::mutex metrics_mu_;
  std::vector<Metric> metrics_;
  int64_t start_ns_ = 0;

  // Sender thread only.
  std::mt19937_64 rng_sender_{std::random_device{}()};
  SteadyClock::time_point last_log_{};
  bool partial_success_logged_ = false;  // under mu_

  // Shared between the converter, the sender and Stats().
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<trace::Span> pending_spans_;
  std::vector<logs::LogRecord> pending_logs_;
  SteadyClock::time_point oldest_pending_{};  // when the current batch began; {} = none
  SteadyClock::time_point next_metrics_{};
  bool stopping_ = false;
  SteadyClock::time_point stop_deadline_{};
  OtlpStats stats_;
  std::thread sender_;
};

// ── options ──────────────────────────────────────────────────────────────────────────────────

namespace {

std::string Env(const OtlpOptions& o, const char* name) {
  const char* v = o.getenv ? o.getenv(name) : std::getenv(name);
  return v ? std::string(v) : std::string();
}

// Where the trusted roots come from, for messages: the option or the variable.
std::string CertificateName(const OtlpOptions& o) {
  return !o.certificate.empty() ? "\"" + o.certificate + "\""
                                : "OTEL_EXPORTER_OTLP_CERTIFICATE \"" +
                                      Env(o, "OTEL_EXPORTER_OTLP_CERTIFICATE") + "\"";
}

// The PEM roots TLS is to trust (OtlpOptions::certificate, else OTEL_EXPORTER_OTLP_CERTIFICATE);
// "" when neither names a file: the system's roots.
Result<std::string> ReadCertificate(const OtlpOptions& o) {
  const std::string path =
      !o.certificate.empty() ? o.certificate : Env(o, "OTEL_EXPORTER_OTLP_CERTIFICATE");
  if (path.empty()) return std::string();
  std::ifstream in(path, std::ios::binary);
  std::ostringstream pem;
  pem << in.rdbuf();
  if (!in) {
    return InvalidArgument("OTLP certificate " + CertificateName(o) + " cannot be read");
  }
  return pem.str();
}

std::string HostName() {
  char buf[256] = {};
  if (gethostname(buf, sizeof buf - 1) != 0) return "unknown";
  return buf;
}

using Resolved = OtlpExporter::Impl::Resolved;

// An endpoint SCHEME://HOST[:PORT][/BASE], split. `port` is empty when the endpoint gives none
// (the protocol's default applies); `host` has no brackets; `base_path` no trailing slash.
struct EndpointParts {
  std::string scheme, host, port, base_path;
};
Result<EndpointParts> ParseEndpoint(std::string_view endpoint) {
  const std::string e(endpoint);
  const size_t scheme_end = e.find("://");
  EndpointParts p;
  p.scheme = scheme_end == std::string::npos ? "" : e.substr(0, scheme_end);
  if (p.scheme != "http" && p.scheme != "https" && p.scheme != "grpc") {
    return InvalidArgument("OTLP endpoint \"" + e +
                           "\": expected http://HOST:PORT, https://HOST:PORT or grpc://HOST:PORT");
  }
  const std::string rest = e.substr(scheme_end + 3);
  const size_t slash = rest.find('/');
  const std::string authority = rest.substr(0, slash);
  p.base_path = slash == std::string::npos ? "" : rest.substr(slash);
  while (!p.base_path.empty() && p.base_path.back() == '/') p.base_path.pop_back();
  // A colon outside an [IPv6] host starts the port, which must then be one that can be dialed.
  const size_t colon = authority.rfind(':');
  const size_t bracket = authority.rfind(']');
  const bool has_port = colon != std::string::npos && (bracket == std::string::npos || colon > bracket);
  p.host = has_port ? authority.substr(0, colon) : authority;
  if (has_port) {
    p.port = authority.substr(colon + 1);
    uint32_t n = 0;
    const auto [end, ec] = std::from_chars(p.port.data(), p.port.data() + p.port.size(), n);
    if (p.port.empty() || ec != std::errc() || end != p.port.data() + p.port.size()) {
      return InvalidArgument("OTLP endpoint \"" + e + "\": port \"" + p.port +
                             "\" is not a number");
    }
    if (n == 0 || n > 65535) {
      return InvalidArgument("OTLP endpoint \"" + e + "\": port " + p.port +
                             " is not in 1-65535");
    }
  }
  if (p.host.size() > 2 && p.host.front() == '[') p.host = p.host.substr(1, p.host.size() - 2);
  if (p.host.empty()) return InvalidArgument("OTLP endpoint \"" + e + "\" has no host");
  return p;
}

// Protocol, scheme, host, port and base path: the options, else the OTEL_EXPORTER_OTLP_*
// variables, else the defaults. Sets *protocol to the one chosen.
Status ResolveEndpoint(const OtlpOptions& o, Resolved* r, std::string* protocol) {
  // Protocol: the option, else the variable, else a grpc:// endpoint, else http/protobuf.
  std::string endpoint = !o.endpoint.empty() ? o.endpoint : Env(o, "OTEL_EXPORTER_OTLP_ENDPOINT");
  *protocol = !o.protocol.empty() ? o.protocol : Env(o, "OTEL_EXPORTER_OTLP_PROTOCOL");
  if (protocol->empty()) *protocol = endpoint.rfind("grpc://", 0) == 0 ? "grpc" : "http/protobuf";
  if (*protocol != "grpc" && *protocol != "http/protobuf") {
    return InvalidArgument("OTLP protocol \"" + *protocol +
                           "\" is not supported (grpc, http/protobuf)");
  }
  r->transport.grpc = *protocol == "grpc";
  if (endpoint.empty()) {
    endpoint = r->transport.grpc ? "http://localhost:4317" : "http://localhost:4318";
  }
  Result<EndpointParts> parts = ParseEndpoint(endpoint);
  if (!parts.ok()) return parts.status();
  if (parts->scheme == "grpc" && !r->transport.grpc) {
    return InvalidArgument("OTLP endpoint \"" + endpoint + "\" is grpc:// but the protocol is " +
                           *protocol);
  }
  r->transport.tls = parts->scheme == "https";
  auto ca_pem = ReadCertificate(o);
  if (!ca_pem.ok()) return ca_pem.status();
  r->transport.ca_pem = std::move(*ca_pem);
  r->transport.host = std::move(parts->host);
  r->transport.port = parts->port.empty() ? (r->transport.grpc ? "4317" : "4318") : parts->port;
  r->transport.base_path = std::move(parts->base_path);
  return Status::Ok();
}

// Headers, timeout and compression of every request.
Status ResolveRequests(const OtlpOptions& o, Resolved* r) {
  const std::string headers = !o.headers.empty() ? o.headers : Env(o, "OTEL_EXPORTER_OTLP_HEADERS");
  auto parsed_headers = ParseKeyValues(headers, "OTEL_EXPORTER_OTLP_HEADERS");
  if (!parsed_headers.ok()) return parsed_headers.status();
  r->transport.headers = std::move(*parsed_headers);
  if (o.timeout) {
    r->transport.timeout = *o.timeout;
  } else if (const std::string t = Env(o, "OTEL_EXPORTER_OTLP_TIMEOUT"); !t.empty()) {
    char* end = nullptr;
    const long long ms = std::strtoll(t.c_str(), &end, 10);
    if (end == t.c_str() || *end != '\0' || ms <= 0) {
      return InvalidArgument("OTEL_EXPORTER_OTLP_TIMEOUT \"" + t +
                             "\" is not a positive number of milliseconds");
    }
    r->transport.timeout = std::chrono::milliseconds(ms);
  }
  const std::string compression =
      !o.compression.empty() ? o.compression : Env(o, "OTEL_EXPORTER_OTLP_COMPRESSION");
  if (!compression.empty() && compression != "gzip" && compression != "none") {
    return InvalidArgument("OTLP compression \"" + compression + "\" is not supported (gzip, none)");
  }
  r->transport.gzip = compression == "gzip";
  return Status::Ok();
}

// Resource: OTEL_RESOURCE_ATTRIBUTES, then service.name, host.name and process.pid.
Status ResolveResource(const OtlpOptions& o, Resolved* r) {
  const std::string attrs =
      !o.resource_attributes.empty() ? o.resource_attributes : Env(o, "OTEL_RESOURCE_ATTRIBUTES");
  auto resource = ParseKeyValues(attrs, "OTEL_RESOURCE_ATTRIBUTES");
  if (!resource.ok()) return resource.status();
  std::string service = !o.service_name.empty() ? o.service_name : Env(o, "OTEL_SERVICE_NAME");
  for (auto it = resource->begin(); it != resource->end();) {
    if (it->first == "service.name") {
      if (service.empty()) service = it->second;
      it = resource->erase(it);
    } else {
      ++it;
    }
  }
  r->resource.emplace_back("service.name", service.empty() ? "pitlane" : service);
  r->resource.emplace_back("host.name", HostName());
  r->resource.emplace_back("process.pid", std::to_string(getpid()));
  r->resource.emplace_back("telemetry.sdk.name", "pitlane");
  for (auto& kv : *resource) r->resource.push_back(std::move(kv));
  return Status::Ok();
}

// The metric specs name catalog events and measurement keys; the bounds are positive.
Status CheckSpecsAndBounds(const Catalog& catalog, const OtlpOptions& o) {
  for (const MetricSpec& spec : o.metrics) {
    const std::string what = std::string(MetricKindName(spec.kind)) + "(" + spec.event + "." +
                             spec.measurement + ")";
    if (catalog.FindHostEvent(spec.event) == 0) {
      return InvalidArgument("OTLP metric " + what + ": no event \"" + spec.event +
                             "\" in the catalog");
    }
    if (spec.kind != MetricKind::kCounter && catalog.MeasurementKeyId(spec.measurement) == 0) {
      return InvalidArgument("OTLP metric " + what + ": no measurement key \"" +
                             spec.measurement + "\" in the catalog");
    }
  }
  if (o.max_batch == 0 || o.max_pending == 0 || o.max_open_spans == 0) {
    return InvalidArgument("OTLP max_batch, max_pending and max_open_spans must be positive");
  }
  return Status::Ok();
}

}  // namespace

Status CheckOtlpEndpoint(std::string_view endpoint) {
  Result<EndpointParts> parts = ParseEndpoint(endpoint);
  return parts.ok() ? Status::Ok() : parts.status();
}

Result<std::unique_ptr<OtlpExporter>> OtlpExporter::Start(Host& host, OtlpOptions o) {
  Impl::Resolved r;
  std::string protocol;
  if (Status s = ResolveEndpoint(o, &r, &protocol); !s.ok()) return s;
  if (Status s = ResolveRequests(o, &r); !s.ok()) return s;
  if (Status s = ResolveResource(o, &r); !s.ok()) return s;
  if (Status s = CheckSpecsAndBounds(host.catalog(), o); !s.ok()) return s;
  r.describe = protocol + " " +
               (r.transport.tls ? "https://" : r.transport.grpc ? "grpc://" : "http://") +
               r.transport.host + ":" + r.transport.port + r.transport.base_path;
  auto transport = internal::OtlpTransport::Create(r.transport);
  if (!transport.ok() && transport.status().code() == StatusCode::kInvalidArgument) {
    return InvalidArgument("OTLP certificate " + CertificateName(o) + ": " +
                           transport.status().message());
  }
  if (!transport.ok()) return transport.status();
  auto impl = std::make_unique<Impl>(host, std::move(o), std::move(r), std::move(*transport));
  if (Status s = impl->StartAndAttach(); !s.ok()) return s;
  return std::unique_ptr<OtlpExporter>(new OtlpExporter(std::move(impl)));
}

OtlpExporter::OtlpExporter(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

OtlpExporter::~OtlpExporter() = default;

OtlpStats OtlpExporter::Stats() const { return impl_->Stats(); }

void OtlpExporter::Shutdown() { impl_->Shutdown(); }

std::string OtlpExporter::Describe() const { return impl_->describe(); }

ExporterReport OtlpExporter::Report() const {
  const OtlpStats s = Stats();
  return {"otlp",
          Describe(),
          {{"spans_exported", s.spans_exported},
           {"metric_points_exported", s.metric_points_exported},
           {"logs_exported", s.logs_exported},
           {"requests", s.requests},
           {"retries", s.retries},
           {"dropped_queue_full_events", s.dropped_queue_full_events},
           {"dropped_pending_full", s.dropped_pending_full},
           {"dropped_refused", s.dropped_refused},
           {"dropped_rejected", s.dropped_rejected},
           {"dropped_retries_exhausted", s.dropped_retries_exhausted},
           {"dropped_shutdown", s.dropped_shutdown},
           {"open_spans_evicted", s.open_spans_evicted},
           {"unpaired_ends", s.unpaired_ends},
           {"metric_series_overflow", s.metric_series_overflow}}};
}

std::string OtlpExporter::PrometheusText() const {
  const OtlpStats s = Stats();
  std::string out;
  auto family = [&](const char* name, const char* help) {
    out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " counter\n";
  };
  auto sample = [&](const char* name, const char* labels, uint64_t v) {
    out += std::string(name) + labels + " " + std::to_string(v) + "\n";
  };
  family("pitlane_otlp_exported_total", "Items the OTLP collector accepted, by signal.");
  sample("pitlane_otlp_exported_total", "{signal=\"traces\"}", s.spans_exported);
  sample("pitlane_otlp_exported_total", "{signal=\"metrics\"}", s.metric_points_exported);
  sample("pitlane_otlp_exported_total", "{signal=\"logs\"}", s.logs_exported);
  family("pitlane_otlp_requests_total", "OTLP requests the collector accepted.");
  sample("pitlane_otlp_requests_total", "", s.requests);
  family("pitlane_otlp_retries_total", "OTLP attempts made after a retryable failure.");
  sample("pitlane_otlp_retries_total", "", s.retries);
  family("pitlane_otlp_dropped_total",
         "Events (queue_full) and items (the other reasons) the OTLP exporter dropped.");
  sample("pitlane_otlp_dropped_total", "{reason=\"queue_full\"}", s.dropped_queue_full_events);
  sample("pitlane_otlp_dropped_total", "{reason=\"pending_full\"}", s.dropped_pending_full);
  sample("pitlane_otlp_dropped_total", "{reason=\"refused\"}", s.dropped_refused);
  sample("pitlane_otlp_dropped_total", "{reason=\"rejected\"}", s.dropped_rejected);
  sample("pitlane_otlp_dropped_total", "{reason=\"retries_exhausted\"}",
         s.dropped_retries_exhausted);
  sample("pitlane_otlp_dropped_total", "{reason=\"shutdown\"}", s.dropped_shutdown);
  family("pitlane_otlp_open_spans_evicted_total", "Started spans evicted before their end.");
  sample("pitlane_otlp_open_spans_evicted_total", "", s.open_spans_evicted);
  family("pitlane_otlp_unpaired_ends_total", "Span ends exported without their start.");
  sample("pitlane_otlp_unpaired_ends_total", "", s.unpaired_ends);
  family("pitlane_otlp_metric_series_overflow_total",
         "Events not aggregated: their metric had no room for a new series.");
  sample("pitlane_otlp_metric_series_overflow_total", "", s.metric_series_overflow);
  return out;
}

}  // namespace pitlane
