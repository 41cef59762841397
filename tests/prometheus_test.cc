// The Prometheus exporter, end to end: a real Host and Worker in this process, /metrics fetched
// over loopback HTTP, every line checked against the text exposition grammar, and a real
// Prometheus server (Debian package `prometheus`) scraping the exporter and answering queries.
#include "pitlane/prometheus.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "pitlane/host.h"
#include "pitlane/worker.h"
#include "testing.h"

namespace pitlane {
namespace {

using namespace std::chrono_literals;

struct HttpResponse {
  int status = 0;
  std::string headers;  // raw, lower-cased
  std::string body;
};

// A one-shot HTTP/1.0 GET (or other method) over loopback; every read is bounded by a timeout.
HttpResponse Fetch(uint16_t port, const std::string& target, const std::string& method = "GET",
                   const std::string& extra_headers = "") {
  HttpResponse r;
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return r;
  timeval tv{5, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return r;
  }
  const std::string req =
      method + " " + target + " HTTP/1.0\r\nHost: 127.0.0.1\r\n" + extra_headers + "\r\n";
  if (::send(fd, req.data(), req.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(req.size())) {
    ::close(fd);
    return r;
  }
  std::string raw;
  char buf[8192];
  ssize_t n;
  while ((n = ::recv(fd, buf, sizeof buf, 0)) > 0) raw.append(buf, static_cast<size_t>(n));
  ::close(fd);
  const size_t split = raw.find("\r\n\r\n");
  if (split == std::string::npos || raw.size() < 12) return r;
  r.status = std::atoi(raw.c_str() + 9);  // "HTTP/1.x NNN"
  r.headers = raw.substr(0, split);
  for (char& c : r.headers) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  r.body = raw.substr(split + 4);
  return r;
}

// Checks every line of a text exposition 0.0.4 body; returns the offending lines.
std::vector<std::string> InvalidExpositionLines(const std::string& body) {
  static const std::regex kHelp(R"(# HELP [a-zA-Z_:][a-zA-Z0-9_:]* ([^\\]|\\[\\n])*)");
  static const std::regex kType(
      R"(# TYPE [a-zA-Z_:][a-zA-Z0-9_:]* (counter|gauge|summary|histogram|untyped))");
  static const std::regex kSample(
      R"([a-zA-Z_:][a-zA-Z0-9_:]*)"
      R"((\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\\n]|\\[\\"n])*"(,[a-zA-Z_][a-zA-Z0-9_]*="([^"\\\n]|\\[\\"n])*")*,?)?\})?)"
      R"( ([-+]?[0-9]*\.?[0-9]+([eE][-+]?[0-9]+)?|[-+]Inf|NaN)( -?[0-9]+)?)");
  std::vector<std::string> bad;
  if (!body.empty() && body.back() != '\n') bad.push_back("<no final newline>");
  std::istringstream in(body);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("# HELP ", 0) == 0 ? !std::regex_match(line, kHelp)
        : line.rfind("# TYPE ", 0) == 0 ? !std::regex_match(line, kType)
                                        : !std::regex_match(line, kSample)) {
      bad.push_back(line);
    }
  }
  return bad;
}

bool Contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

class PrometheusTest : public ::testing::Test {
 protected:
  void SetUp() override { StartHost(std::chrono::minutes(5)); }

  void StartHost(std::chrono::milliseconds departed_retention) {
    exporter_.reset();
    host_.reset();
    HostOptions ho;
    ho.ns = ns_.name();
    ho.log = [](std::string_view) {};
    ho.departed_retention = departed_retention;
    host_ = std::move(Host::Start(ho)).value();
  }

  void StartWorker(const std::string& id) {
    WorkerOptions wo;
    wo.ns = ns_.name();
    wo.worker_id = id;
    auto w = Worker::Start(wo);
    ASSERT_TRUE(w.ok()) << w.status().ToString();
    worker_ = std::move(w).value();
    ASSERT_TRUE(worker_->attached());
    Drain();
  }

  void StartExporter(std::vector<MetricSpec> specs = {}, size_t max_series = 1000,
                     MetricNaming naming = MetricNaming::kConventional) {
    PrometheusOptions po;
    po.listen = "127.0.0.1:0";
    po.specs = std::move(specs);
    po.max_series_per_metric = max_series;
    po.naming = naming;
    auto e = PrometheusExporter::Start(*host_, po);
    ASSERT_TRUE(e.ok()) << e.status().ToString();
    exporter_ = std::move(e).value();
    ASSERT_NE(exporter_->port(), 0);
  }

  void Drain() {
    for (int i = 0; i < 20; ++i) host_->PollOnce();
  }

  // Waits (bounded) until the exporter thread has aggregated `n` events.
  void WaitExported(uint64_t n) {
    const auto deadline = std::chrono::steady_clock::now() + 5s;
    while (exporter_->exported() < n && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(1ms);
    }
    ASSERT_GE(exporter_->exported(), n);
  }

  std::string Scrape() {
    HttpResponse r = Fetch(exporter_->port(), "/metrics");
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(InvalidExpositionLines(r.body), std::vector<std::string>());
    return r.body;
  }

  static MetricSpec Spec(const std::string& text) {
    auto s = MetricSpec::Parse(text);
    EXPECT_TRUE(s.ok()) << s.status().ToString();
    return s.ok() ? s.value() : MetricSpec();
  }

  testing::ScopedNamespace ns_;
  std::unique_ptr<Host> host_;
  std::unique_ptr<Worker> worker_;
  std::unique_ptr<PrometheusExporter> exporter_;
};

TEST_F(PrometheusTest, ServesExpositionFormatWithItsContentType) {
  StartExporter();
  const HttpResponse r = Fetch(exporter_->port(), "/metrics");
  ASSERT_EQ(r.status, 200);
  EXPECT_TRUE(Contains(r.headers, "content-type: text/plain; version=0.0.4; charset=utf-8"))
      << r.headers;
  EXPECT_EQ(InvalidExpositionLines(r.body), std::vector<std::string>());
  EXPECT_TRUE(Contains(r.body, "\npitlane_workers_alive 0\n")) << r.body;
  EXPECT_TRUE(Contains(r.body, "# TYPE pitlane_dropped_total counter\n"));
}

TEST_F(PrometheusTest, UnknownPathIs404AndPostIs405) {
  StartExporter();
  EXPECT_EQ(Fetch(exporter_->port(), "/").status, 404);
  EXPECT_EQ(Fetch(exporter_->port(), "/metricsx").status, 404);
  EXPECT_EQ(Fetch(exporter_->port(), "/metrics?x=1").status, 200);
  EXPECT_EQ(Fetch(exporter_->port(), "/metrics", "POST").status, 405);
}

TEST_F(PrometheusTest, EveryReasonIsExportedAtZeroBeforeAnyEvent) {
  StartWorker("w0");
  StartExporter();
  const std::string body = Scrape();
  for (const char* reason : {"full", "too_large", "no_ring", "in_flight"}) {
    EXPECT_TRUE(Contains(body, std::string("pitlane_dropped_total{worker_id=\"w0\",reason=\"") +
                                   reason + "\"} 0\n"))
        << reason;
  }
  for (const char* reason : {"disabled", "sampled", "filtered"}) {
    EXPECT_TRUE(Contains(body, std::string("pitlane_suppressed_total{worker_id=\"w0\",reason=\"") +
                                   reason + "\"} 0\n"))
        << reason;
  }
  for (uint32_t i = 0; i < shm::kRejectReasonCount; ++i) {
    EXPECT_TRUE(Contains(body, std::string("pitlane_rejected_total{worker_id=\"w0\",reason=\"") +
                                   shm::RejectReasonName(i) + "\"} 0\n"))
        << shm::RejectReasonName(i);
  }
  EXPECT_TRUE(Contains(body, "pitlane_events_total{worker_id=\"w0\"} 0\n")) << body;
  EXPECT_TRUE(Contains(body, "\npitlane_workers_alive 1\n"));
  EXPECT_TRUE(Contains(body, "\npitlane_exporter_overflow_total 0\n"));
}

TEST_F(PrometheusTest, CountsEmittedDeliveredAndRejectedPerWorker) {
  StartWorker("w1");
  StartExporter();
  for (int i = 0; i < 3; ++i) ASSERT_EQ(worker_->Emit("python.call.stop"), EmitResult::kOk);
  ASSERT_EQ(worker_->Emit("no.such.event"), EmitResult::kOk);
  Drain();
  const std::string body = Scrape();
  EXPECT_TRUE(Contains(body, "pitlane_events_total{worker_id=\"w1\"} 4\n")) << body;
  EXPECT_TRUE(Contains(body, "pitlane_published_total{worker_id=\"w1\"} 4\n"));
  EXPECT_TRUE(Contains(body, "pitlane_delivered_total{worker_id=\"w1\"} 3\n"));
  EXPECT_TRUE(
      Contains(body, "pitlane_rejected_total{worker_id=\"w1\",reason=\"unknown_event\"} 1\n"));
  EXPECT_TRUE(Contains(body, "pitlane_ring_fill_ratio{worker_id=\"w1\",segment=\""));
}

TEST_F(PrometheusTest, CountersStayMonotonicWhenTheWorkerGoesAway) {
  StartWorker("w2");
  StartExporter();
  for (int i = 0; i < 5; ++i) ASSERT_EQ(worker_->Emit("python.call.stop"), EmitResult::kOk);
  Drain();
  EXPECT_TRUE(Contains(Scrape(), "pitlane_delivered_total{worker_id=\"w2\"} 5\n"));
  worker_.reset();  // retires its rings; the host reclaims them
  EXPECT_TRUE(host_->DrainAll(5s));
  const std::string body = Scrape();
  EXPECT_TRUE(Contains(body, "pitlane_delivered_total{worker_id=\"w2\"} 5\n")) << body;
  EXPECT_TRUE(Contains(body, "pitlane_events_total{worker_id=\"w2\"} 5\n"));
  EXPECT_FALSE(Contains(body, "pitlane_ring_fill_ratio{worker_id=\"w2\""));
}

// Under the Snakepit naming values stay in the measurement's unit, as Telemetry.Metrics leaves
// them without `unit:`.
TEST_F(PrometheusTest, EventMetricsFollowTheirSpecs) {
  StartWorker("w3");
  StartExporter({Spec("counter(snakepit.python.call.stop.count, tags: [:command])"),
                 Spec("summary(\"snakepit.python.call.stop.duration\", tags: [worker_id])"),
                 Spec("histogram(snakepit.python.call.stop.duration, buckets: [10, 100], "
                      "name: \"call_duration\", help: \"Call time.\")"),
                 Spec("last_value(snakepit.python.call.stop.duration, name: call_last)"),
                 Spec("sum(snakepit.python.call.stop.duration, name: call_sum)")},
                1000, MetricNaming::kSnakepit);
  for (int d : {5, 50, 500}) {
    ASSERT_EQ(worker_->Emit("python.call.stop", {{"duration", d}}, {{"command", "predict"}}),
              EmitResult::kOk);
  }
  Drain();
  WaitExported(3);
  const std::string body = Scrape();
  EXPECT_TRUE(Contains(body, "snakepit_python_call_stop_count{command=\"predict\"} 3\n")) << body;
  EXPECT_TRUE(Contains(body, "# TYPE snakepit_python_call_stop_duration summary\n"));
  EXPECT_TRUE(Contains(body, "snakepit_python_call_stop_duration_count{worker_id=\"w3\"} 3\n"));
  EXPECT_TRUE(Contains(body, "snakepit_python_call_stop_duration_sum{worker_id=\"w3\"} 555\n"));
  EXPECT_TRUE(Contains(body, "# HELP call_duration Call time.\n"));
  EXPECT_TRUE(Contains(body, "call_duration_bucket{le=\"10\"} 1\n"));
  EXPECT_TRUE(Contains(body, "call_duration_bucket{le=\"100\"} 2\n"));
  EXPECT_TRUE(Contains(body, "call_duration_bucket{le=\"+Inf\"} 3\n"));
  EXPECT_TRUE(Contains(body, "call_duration_count 3\n"));
  EXPECT_TRUE(Contains(body, "# TYPE call_last gauge\ncall_last 500\n"));
  EXPECT_TRUE(Contains(body, "# TYPE call_sum counter\ncall_sum 555\n"));
  EXPECT_TRUE(Contains(body, "pitlane_metric_series_overflow_total{metric=\"call_duration\"} 0\n"));
}

TEST_F(PrometheusTest, HostileLabelValuesAreEscaped) {
  const std::string hostile = "a\"b\\c\nd";
  StartWorker("evil" + hostile);
  StartExporter({Spec("counter(snakepit.python.call.stop.count, tags: [worker_id, command])")});
  ASSERT_EQ(worker_->Emit("python.call.stop", {}, {{"command", hostile + "\xff"}}),
            EmitResult::kOk);
  Drain();
  WaitExported(1);
  const std::string body = Scrape();  // checks every line against the grammar
  const std::string escaped = R"(a\"b\\c\nd)";
  EXPECT_TRUE(Contains(body, "pitlane_delivered_total{worker_id=\"evil" + escaped + "\"} 1\n"))
      << body;
  EXPECT_TRUE(Contains(body, "snakepit_python_call_stop_count_total{worker_id=\"evil" + escaped +
                                 "\",command=\"" + escaped + "\xEF\xBF\xBD\"} 1\n"))
      << body;
}

TEST_F(PrometheusTest, NewLabelSetsBeyondTheCapAreCountedNotCreated) {
  StartWorker("w4");
  StartExporter({Spec("counter(snakepit.python.call.stop.count, tags: [command])")}, 2);
  for (const char* c : {"a", "b", "c", "d", "a"}) {
    ASSERT_EQ(worker_->Emit("python.call.stop", {}, {{"command", c}}), EmitResult::kOk);
  }
  Drain();
  WaitExported(5);
  const std::string body = Scrape();
  EXPECT_TRUE(Contains(body, "snakepit_python_call_stop_count_total{command=\"a\"} 2\n")) << body;
  EXPECT_TRUE(Contains(body, "snakepit_python_call_stop_count_total{command=\"b\"} 1\n"));
  EXPECT_FALSE(Contains(body, "command=\"c\""));
  EXPECT_FALSE(Contains(body, "command=\"d\""));
  EXPECT_TRUE(Contains(
      body,
      "pitlane_metric_series_overflow_total{metric=\"snakepit_python_call_stop_count_total\"} 2\n"));
}

TEST(ExpositionValidatorTest, RejectsUnescapedLabelValues) {
  EXPECT_TRUE(InvalidExpositionLines("# HELP a b\\nc\n# TYPE a counter\na{x=\"1\\\"\"} 1\n").empty());
  EXPECT_EQ(InvalidExpositionLines("a{x=\"1\"\"} 1\n").size(), 1u);
  EXPECT_EQ(InvalidExpositionLines("a{x=\"1\\q\"} 1\n").size(), 1u);
  EXPECT_EQ(InvalidExpositionLines("a{x=\"1\n\"} 1\n").size(), 2u);
  EXPECT_EQ(InvalidExpositionLines("a.b 1\n").size(), 1u);
}

TEST(MetricSpecTest, ParsesTheTelemetryMetricsForm) {
  auto s = MetricSpec::Parse("summary(\"snakepit.python.call.stop.duration\", tags: [worker_id, command])");
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_EQ(s->kind, MetricKind::kSummary);
  EXPECT_EQ(s->event, "snakepit.python.call.stop");
  EXPECT_EQ(s->measurement, "duration");
  EXPECT_EQ(s->tags, (std::vector<std::string>{"worker_id", "command"}));
  EXPECT_EQ(s->MetricName(), "snakepit_python_call_stop_duration");
  auto h = MetricSpec::Parse("histogram(a.b.c, buckets: [1, 2.5, 1e3])");
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  EXPECT_EQ(h->buckets, (std::vector<double>{1, 2.5, 1000}));
}

// The metric definitions of Snakepit's telemetry guide ("Prometheus Integration"), as written
// there but on one line each (tests/ops/prometheus_dashboards.py serves them to a real
// Prometheus): Telemetry.Metrics' `description:` is the help text.
TEST(MetricSpecTest, ReadsSnakepitsDocumentedDefinitions) {
  const char* const definitions[] = {
      R"(last_value("snakepit.pool.status.queue_depth", tags: [:node, :pool_name], description: "Current pool queue depth"))",
      R"(last_value("snakepit.pool.status.available_workers", tags: [:node, :pool_name], description: "Available workers"))",
      R"(last_value("snakepit.pool.status.busy_workers", tags: [:node, :pool_name], description: "Busy workers"))",
      R"(summary("snakepit.python.call.stop.duration", unit: {:native, :millisecond}, tags: [:node, :pool_name, :command], description: "Python call duration"))",
      R"(counter("snakepit.python.call.exception.count", tags: [:node, :pool_name, :error_type], description: "Python exceptions"))",
      R"(counter("snakepit.pool.worker.spawned.count", tags: [:node, :pool_name], description: "Workers spawned"))",
      R"(counter("snakepit.pool.worker.terminated.count", tags: [:node, :pool_name, :reason], description: "Workers terminated"))",
      R"(last_value("snakepit.python.memory.sampled.rss_bytes", tags: [:node, :worker_id], description: "Python process RSS memory"))"};
  for (const char* text : definitions) {
    auto s = MetricSpec::Parse(text);
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    EXPECT_FALSE(s->help.empty()) << text;
  }
  auto d = MetricSpec::Parse(definitions[3]);
  EXPECT_EQ(d->help, "Python call duration");
  EXPECT_EQ(d->tags, (std::vector<std::string>{"node", "pool_name", "command"}));
  EXPECT_EQ(d->unit_to, Unit::kMillisecond);
}

TEST(MetricSpecTest, RejectsMalformedTextNamingTheProblem) {
  for (const char* bad : {"gauge(a.b)", "summary(a.b", "summary(nodot)", "sum(a.b, colour: [x])",
                          "histogram(a.b, buckets: [x])", "counter(a.b) trailing"}) {
    auto s = MetricSpec::Parse(bad);
    ASSERT_FALSE(s.ok()) << bad;
    EXPECT_EQ(s.status().code(), StatusCode::kInvalidArgument);
    EXPECT_TRUE(Contains(s.status().message(), bad)) << s.status().message();
  }
}

TEST(MetricNameTest, SanitizesToThePrometheusAlphabet) {
  EXPECT_EQ(SanitizeMetricName("snakepit.pool.status.queue_depth"),
            "snakepit_pool_status_queue_depth");
  EXPECT_EQ(SanitizeMetricName("9lives-x:y"), "_9lives_x:y");
}

TEST_F(PrometheusTest, StartRejectsUnknownEventsAndBadAddresses) {
  PrometheusOptions po;
  po.listen = "127.0.0.1:0";
  po.specs = {Spec("summary(snakepit.no.such.event.duration)")};
  auto e = PrometheusExporter::Start(*host_, po);
  ASSERT_FALSE(e.ok());
  EXPECT_TRUE(Contains(e.status().message(), "snakepit.no.such.event")) << e.status().message();
  po.specs.clear();
  po.listen = "not-an-address";
  EXPECT_FALSE(PrometheusExporter::Start(*host_, po).ok());
  po.listen = "127.0.0.1:99999";
  EXPECT_FALSE(PrometheusExporter::Start(*host_, po).ok());
}

TEST_F(PrometheusTest, DurationsAreExportedInSecondsAndSizesInBytes) {
  StartWorker("units");
  StartExporter({Spec("summary(snakepit.python.call.stop.duration, tags: [worker_id])"),
                 Spec("last_value(snakepit.python.memory.sampled.rss_bytes)"),
                 Spec("sum(snakepit.python.tool.result_size.bytes)"),
                 Spec("counter(snakepit.python.call.exception.count)")});
  ASSERT_EQ(worker_->Emit("python.call.stop", {{"duration", int64_t{1'500'000}}}),
            EmitResult::kOk);  // 1.5 ms in nanoseconds, the catalog's unit for duration
  ASSERT_EQ(worker_->Emit("python.memory.sampled", {{"rss_bytes", int64_t{512} << 20}}),
            EmitResult::kOk);
  ASSERT_EQ(worker_->Emit("tool.result_size", {{"bytes", 2048}}), EmitResult::kOk);
  ASSERT_EQ(worker_->Emit("python.call.exception", {{"duration", 10}}), EmitResult::kOk);
  Drain();
  WaitExported(4);
  const std::string body = Scrape();
  EXPECT_TRUE(Contains(body, "# TYPE snakepit_python_call_stop_duration_seconds summary\n"))
      << body;
  EXPECT_TRUE(Contains(body, "snakepit_python_call_stop_duration_seconds_sum{worker_id=\"units\"} "
                             "0.0015\n"));
  EXPECT_TRUE(Contains(body, "snakepit_python_memory_sampled_rss_bytes 536870912\n"));
  EXPECT_TRUE(Contains(body, "# TYPE snakepit_python_tool_result_size_bytes_total counter\n"
                             "snakepit_python_tool_result_size_bytes_total 2048\n"));
  EXPECT_TRUE(Contains(body, "snakepit_python_call_exception_count_total 1\n"));
  EXPECT_TRUE(Contains(body, "measurement duration, in seconds."));
}

// Telemetry.Metrics' conversions apply under the Snakepit naming; the conventional naming keeps
// base units whatever the target (so a scrape stays promtool-clean) and reads the source.
TEST_F(PrometheusTest, SpecUnitConvertsLikeTelemetryMetrics) {
  StartWorker("unit-spec");
  StartExporter({Spec("summary(snakepit.python.call.stop.duration, unit: {:native, :millisecond})"),
                 Spec("last_value(snakepit.python.memory.sampled.rss_bytes, unit: {byte, "
                      "megabyte})"),
                 Spec("last_value(snakepit.python.call.exception.duration, unit: microsecond)")},
                1000, MetricNaming::kSnakepit);
  ASSERT_EQ(worker_->Emit("python.call.stop", {{"duration", int64_t{1'500'000}}}),
            EmitResult::kOk);
  ASSERT_EQ(worker_->Emit("python.memory.sampled", {{"rss_bytes", int64_t{3} << 19}}),
            EmitResult::kOk);
  ASSERT_EQ(worker_->Emit("python.call.exception", {{"duration", 250}}), EmitResult::kOk);
  Drain();
  WaitExported(3);
  const std::string body = Scrape();
  EXPECT_TRUE(Contains(body, "snakepit_python_call_stop_duration_sum 1.5\n")) << body;
  EXPECT_TRUE(Contains(body, "snakepit_python_memory_sampled_rss_bytes 1.5\n"));
  EXPECT_TRUE(Contains(body, "snakepit_python_call_exception_duration 250\n"));

  exporter_.reset();
  StartExporter({Spec("summary(snakepit.python.call.stop.duration, unit: {:native, :millisecond})"),
                 Spec("last_value(snakepit.python.call.exception.duration, unit: microsecond)")});
  ASSERT_EQ(worker_->Emit("python.call.stop", {{"duration", int64_t{1'500'000}}}),
            EmitResult::kOk);
  ASSERT_EQ(worker_->Emit("python.call.exception", {{"duration", 250}}), EmitResult::kOk);
  Drain();
  WaitExported(2);
  const std::string conventional = Scrape();
  EXPECT_TRUE(Contains(conventional, "snakepit_python_call_stop_duration_seconds_sum 0.0015\n"))
      << conventional;
  EXPECT_TRUE(Contains(conventional, "snakepit_python_call_exception_duration_seconds 0.00025\n"));
  EXPECT_FALSE(MetricSpec::Parse("summary(a.b, unit: {byte, second})").ok());
  EXPECT_FALSE(MetricSpec::Parse("summary(a.b, unit: {native, fortnight})").ok());
}

TEST_F(PrometheusTest, DefaultBucketsSuitTheUnitAndPrintShortest) {
  StartWorker("buckets");
  StartExporter({Spec("histogram(snakepit.python.call.stop.duration)"),
                 Spec("histogram(snakepit.python.memory.sampled.rss_bytes)"),
                 Spec("histogram(snakepit.python.gc.completed.collected)")});
  ASSERT_EQ(worker_->Emit("python.call.stop", {{"duration", int64_t{2'000'000}}}),
            EmitResult::kOk);  // 2 ms
  ASSERT_EQ(worker_->Emit("python.memory.sampled", {{"rss_bytes", int64_t{100} << 20}}),
            EmitResult::kOk);  // 100 MiB
  ASSERT_EQ(worker_->Emit("python.gc.completed", {{"collected", 42}}),
            EmitResult::kOk);  // a plain number: no unit in the catalog
  Drain();
  WaitExported(3);
  const std::string body = Scrape();
  const std::string d = "snakepit_python_call_stop_duration_seconds_bucket";
  EXPECT_TRUE(Contains(body, d + "{le=\"0.001\"} 0\n")) << body;
  EXPECT_TRUE(Contains(body, d + "{le=\"0.0025\"} 1\n"));
  EXPECT_TRUE(Contains(body, d + "{le=\"0.1\"} 1\n"));
  EXPECT_TRUE(Contains(body, d + "{le=\"10\"} 1\n"));
  const std::string m = "snakepit_python_memory_sampled_rss_bytes_bucket";
  EXPECT_TRUE(Contains(body, m + "{le=\"67108864\"} 0\n"));
  EXPECT_TRUE(Contains(body, m + "{le=\"268435456\"} 1\n"));
  EXPECT_TRUE(Contains(body, m + "{le=\"1073741824\"} 1\n"));
  const std::string n = "snakepit_python_gc_completed_collected_bucket";
  EXPECT_TRUE(Contains(body, n + "{le=\"1\"} 0\n"));
  EXPECT_TRUE(Contains(body, n + "{le=\"25\"} 0\n"));
  EXPECT_TRUE(Contains(body, n + "{le=\"50\"} 1\n"));
  EXPECT_TRUE(Contains(body, n + "{le=\"100000\"} 1\n"));
  EXPECT_FALSE(Contains(body, "00000000001")) << body;
  EXPECT_FALSE(Contains(body, "99999999")) << body;
}

TEST_F(PrometheusTest, SnakepitNamingGivesTheNamesOfSnakepitsQueries) {
  StartWorker("snake");
  // Snakepit's documented Telemetry.Metrics definitions.
  StartExporter({Spec("histogram(snakepit.python.call.stop.duration, "
                      "unit: {:native, :millisecond}, tags: [:command])"),
                 Spec("counter(snakepit.python.call.stop.count)"),
                 Spec("counter(snakepit.python.call.exception.count, tags: [:error_type])"),
                 Spec("last_value(snakepit.pool.status.queue_depth, tags: [:node, :pool_name])"),
                 Spec("last_value(snakepit.python.memory.sampled.rss_bytes, tags: [:worker_id])"),
                 Spec("histogram(snakepit.python.call.exception.duration)")},
                1000, MetricNaming::kSnakepit);
  ASSERT_EQ(worker_->Emit("python.call.stop", {{"duration", int64_t{3'000'000}}},
                          {{"command", "predict"}}),
            EmitResult::kOk);
  ASSERT_EQ(worker_->Emit("python.call.exception", {{"duration", 5}}, {{"error_type", "E"}}),
            EmitResult::kOk);
  ASSERT_EQ(worker_->Emit("python.memory.sampled", {{"rss_bytes", 4096}}), EmitResult::kOk);
  Drain();
  WaitExported(3);
  const std::string body = Scrape();
  EXPECT_TRUE(Contains(body,
                       "snakepit_python_call_stop_duration_bucket{command=\"predict\",le=\"5\"} 1\n"))
      << body;
  EXPECT_TRUE(Contains(body, "snakepit_python_call_stop_duration_sum{command=\"predict\"} 3\n"));
  EXPECT_TRUE(Contains(body, "snakepit_python_call_stop_count 1\n"));
  EXPECT_TRUE(Contains(body, "snakepit_python_call_exception_count{error_type=\"E\"} 1\n"));
  EXPECT_TRUE(Contains(body, "# TYPE snakepit_pool_status_queue_depth gauge\n"));
  EXPECT_TRUE(Contains(body, "snakepit_python_memory_sampled_rss_bytes{worker_id=\"snake\"} 4096\n"));
  // Unconverted nanoseconds get the default bounds scaled to nanoseconds, printed as written.
  EXPECT_TRUE(Contains(body, "snakepit_python_call_exception_duration_bucket{le=\"100000\"} 1\n"));
  EXPECT_TRUE(Contains(body, "snakepit_python_call_exception_duration_bucket{le=\"250000\"} 1\n"));
  EXPECT_FALSE(Contains(body, "00000000001")) << body;
}

TEST_F(PrometheusTest, ProcessMetricsAndBuildInfoAreExported) {
  StartExporter();
  const std::string body = Scrape();
  for (const char* family :
       {"# TYPE process_cpu_seconds_total counter\n", "# TYPE process_resident_memory_bytes gauge\n",
        "# TYPE process_virtual_memory_bytes gauge\n", "# TYPE process_start_time_seconds gauge\n",
        "# TYPE process_open_fds gauge\n", "# TYPE process_max_fds gauge\n"}) {
    EXPECT_TRUE(Contains(body, family)) << family;
  }
  const std::smatch rss = [&] {
    std::smatch m;
    std::regex_search(body, m, std::regex("\nprocess_resident_memory_bytes ([0-9.e+]+)\n"));
    return m;
  }();
  ASSERT_FALSE(rss.empty()) << body;
  EXPECT_GT(std::stod(rss[1]), 1e6);  // this test binary is bigger than 1 MB resident
  std::smatch start;
  ASSERT_TRUE(std::regex_search(body, start, std::regex("\nprocess_start_time_seconds ([0-9.e+]+)\n")));
  const double now = std::chrono::duration<double>(
                         std::chrono::system_clock::now().time_since_epoch()).count();
  EXPECT_LE(std::stod(start[1]), now + 1);
  EXPECT_GT(std::stod(start[1]), now - 3600);
  EXPECT_TRUE(Contains(body, std::string("pitlane_build_info{version=\"") + PITLANE_VERSION + "\""));
}

std::string Gunzip(const std::string& z) {
  z_stream s{};
  if (inflateInit2(&s, 15 + 16) != Z_OK) return "<inflateInit2 failed>";
  std::string out;
  char buf[65536];
  s.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(z.data()));
  s.avail_in = static_cast<uInt>(z.size());
  int rc = Z_OK;
  while (rc == Z_OK) {
    s.next_out = reinterpret_cast<Bytef*>(buf);
    s.avail_out = sizeof buf;
    rc = inflate(&s, Z_NO_FLUSH);
    out.append(buf, sizeof buf - s.avail_out);
  }
  inflateEnd(&s);
  return rc == Z_STREAM_END ? out : "<not a gzip stream>";
}

TEST_F(PrometheusTest, GzipWhenTheScraperAsks) {
  StartWorker("gz");
  StartExporter();
  const HttpResponse plain = Fetch(exporter_->port(), "/metrics");
  EXPECT_FALSE(Contains(plain.headers, "content-encoding"));
  const HttpResponse z = Fetch(exporter_->port(), "/metrics", "GET",
                               "Accept-Encoding: gzip, deflate\r\n");
  ASSERT_EQ(z.status, 200);
  EXPECT_TRUE(Contains(z.headers, "content-encoding: gzip")) << z.headers;
  EXPECT_LT(z.body.size(), plain.body.size() / 3);
  const std::string body = Gunzip(z.body);
  EXPECT_EQ(InvalidExpositionLines(body), std::vector<std::string>());
  EXPECT_TRUE(Contains(body, "pitlane_events_total{worker_id=\"gz\"} 0\n")) << body;
  const HttpResponse refused = Fetch(exporter_->port(), "/metrics", "GET",
                                     "Accept-Encoding: gzip;q=0, identity\r\n");
  EXPECT_FALSE(Contains(refused.headers, "content-encoding")) << refused.headers;
}

// HostOptions::departed_retention 0: a gone worker leaves Host::Workers() at once, into
// Host::Departed(). (With the default 5 minutes it stays: CountersStayMonotonicWhen...)
TEST_F(PrometheusTest, GoneWorkersRetireIntoDepartedAfterTheRetention) {
  StartHost(std::chrono::milliseconds(0));
  StartWorker("short-lived");
  StartExporter();
  for (int i = 0; i < 5; ++i) ASSERT_EQ(worker_->Emit("python.call.stop"), EmitResult::kOk);
  Drain();
  EXPECT_TRUE(Contains(Scrape(), "pitlane_delivered_total{worker_id=\"short-lived\"} 5\n"));
  worker_.reset();
  EXPECT_TRUE(host_->DrainAll(5s));
  for (const WorkerInfo& w : host_->Workers()) EXPECT_NE(w.id, "short-lived");
  const DepartedWorkers departed = host_->Departed();
  EXPECT_EQ(departed.workers, 1u);
  EXPECT_EQ(departed.delivered, 5u);
  EXPECT_TRUE(departed.Conserved());
  EXPECT_EQ(departed.unaccounted, 0u);
  const std::string body = Scrape();
  EXPECT_FALSE(Contains(body, "worker_id=\"short-lived\"")) << body;
  EXPECT_TRUE(Contains(body, "pitlane_delivered_total{worker_id=\"(departed)\"} 5\n"));
  EXPECT_TRUE(Contains(body, "pitlane_events_total{worker_id=\"(departed)\"} 5\n"));
  EXPECT_TRUE(Contains(body, "pitlane_unaccounted_events{worker_id=\"(departed)\"} 0\n"));
  EXPECT_TRUE(Contains(body, "\npitlane_workers_departed_total 1\n"));
  // A second one adds to the same series: sums over workers never go back.
  StartWorker("short-lived-2");
  ASSERT_EQ(worker_->Emit("python.call.stop"), EmitResult::kOk);
  Drain();
  worker_.reset();
  EXPECT_TRUE(host_->DrainAll(5s));
  const std::string after = Scrape();
  EXPECT_TRUE(Contains(after, "pitlane_delivered_total{worker_id=\"(departed)\"} 6\n")) << after;
  EXPECT_TRUE(Contains(after, "\npitlane_workers_departed_total 2\n"));
}

// Short-lived workers (`vm-<pid>` ids, one ring each) do not grow the host: past the retention
// their totals are one departed sum, and Host::Rings() keeps the last 256 reclaimed rings.
TEST_F(PrometheusTest, ShortLivedWorkersDoNotGrowTheHostOrTheScrape) {
  StartHost(std::chrono::milliseconds(0));
  StartExporter();
  constexpr int kWorkers = 300;
  for (int i = 0; i < kWorkers; ++i) {
    StartWorker("vm-" + std::to_string(i));
    ASSERT_EQ(worker_->Emit("python.call.stop"), EmitResult::kOk);
    worker_.reset();
    ASSERT_TRUE(host_->DrainAll(5s)) << i;
  }
  EXPECT_TRUE(host_->Workers().empty());
  EXPECT_LE(host_->Rings().size(), 256u);
  const DepartedWorkers departed = host_->Departed();
  EXPECT_EQ(departed.workers, static_cast<uint64_t>(kWorkers));
  EXPECT_EQ(departed.delivered, static_cast<uint64_t>(kWorkers));
  EXPECT_TRUE(departed.Conserved());
  const std::string body = Scrape();
  EXPECT_FALSE(Contains(body, "worker_id=\"vm-")) << body;
  EXPECT_TRUE(Contains(body, "pitlane_delivered_total{worker_id=\"(departed)\"} 300\n")) << body;
}

// `promtool check metrics` (the linter Prometheus ships) on a scrape with every metric spec the
// README shows, each with data.
TEST_F(PrometheusTest, PromtoolAcceptsAScrapeWithEveryReadmeSpec) {
  if (::access("/usr/bin/promtool", X_OK) != 0) GTEST_SKIP() << "promtool is not installed";
  std::ifstream readme(std::string(PITLANE_SOURCE_DIR) + "/README.md");
  ASSERT_TRUE(readme.good());
  const std::string text((std::istreambuf_iterator<char>(readme)), std::istreambuf_iterator<char>());
  // A spec as the README writes one: in a C++ string or a shell argument.
  const std::regex spec_re(
      R"re((?:counter|sum|last_value|summary|histogram)\((?:[^()'"]|"(?:[^"\\]|\\.)*"|\\")*\))re");
  std::vector<MetricSpec> specs;
  std::set<std::string> seen;
  for (auto it = std::sregex_iterator(text.begin(), text.end(), spec_re);
       it != std::sregex_iterator(); ++it) {
    std::string spec = std::regex_replace(it->str(), std::regex(R"(\\")"), "\"");
    if (spec.find("snakepit.") == std::string::npos || !seen.insert(spec).second) continue;
    auto parsed = MetricSpec::Parse(spec);
    ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
    specs.push_back(*parsed);
  }
  ASSERT_GE(specs.size(), 5u) << "the README's operator section shows at least five specs";
  StartWorker("lint");
  // One measurement may be shown as a summary and as a histogram (one name each): an exporter
  // per round, each with one spec per measurement.
  while (!specs.empty()) {
    std::vector<MetricSpec> round, rest;
    for (const MetricSpec& spec : specs) {
      bool taken = false;
      for (const MetricSpec& r : round) {
        taken |= r.event == spec.event && r.measurement == spec.measurement;
      }
      (taken ? rest : round).push_back(spec);
    }
    specs = std::move(rest);
    exporter_.reset();
    StartExporter(round);
    for (int i = 0; i < 3; ++i) {
      ASSERT_EQ(worker_->Emit("python.call.stop", {{"duration", 1000 * (i + 1)}},
                              {{"command", "predict"}}),
                EmitResult::kOk);
      ASSERT_EQ(worker_->Emit("python.call.exception", {{"duration", 10}},
                              {{"command", "predict"}, {"error_type", "ValueError"}}),
                EmitResult::kOk);
      ASSERT_EQ(worker_->Emit("python.memory.sampled", {{"rss_bytes", 1 << 20}}),
                EmitResult::kOk);
      ASSERT_EQ(worker_->Emit("tool.result_size", {{"bytes", 100}}, {{"tool", "t"}}),
                EmitResult::kOk);
    }
    Drain();
    std::set<std::string> events;
    for (const MetricSpec& spec : round) {
      if (spec.event.rfind("snakepit.python.", 0) == 0) events.insert(spec.event);
    }
    WaitExported(3 * events.size());
    const std::string body = Scrape();
    char path[] = "/tmp/pitlane-promtool-XXXXXX";
    const int fd = ::mkstemp(path);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::write(fd, body.data(), body.size()), static_cast<ssize_t>(body.size()));
    ::close(fd);
    const std::string cmd = std::string("/usr/bin/promtool check metrics < ") + path + " 2>&1";
    FILE* p = ::popen(cmd.c_str(), "r");
    ASSERT_NE(p, nullptr);
    std::string out;
    char buf[4096];
    for (size_t n; (n = std::fread(buf, 1, sizeof buf, p)) > 0;) out.append(buf, n);
    const int rc = ::pclose(p);
    ::unlink(path);
    EXPECT_EQ(rc, 0) << "promtool check metrics:\n" << out << "\nscrape:\n" << body;
    EXPECT_EQ(out, "") << body;
  }
}

// ---- A real Prometheus server scraping the exporter ----

uint16_t FreeLoopbackPort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  uint16_t port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port = ntohs(addr.sin_port);
  }
  ::close(fd);
  return port;
}

class RealPrometheusTest : public PrometheusTest {
 protected:
  static constexpr const char* kBinary = "/usr/bin/prometheus";

  void TearDown() override {
    if (pid_ > 0) {
      ::kill(pid_, SIGTERM);
      int status = 0;
      const auto deadline = std::chrono::steady_clock::now() + 10s;
      while (::waitpid(pid_, &status, WNOHANG) == 0) {
        if (std::chrono::steady_clock::now() > deadline) {
          ::kill(pid_, SIGKILL);
          ::waitpid(pid_, &status, 0);
          break;
        }
        std::this_thread::sleep_for(20ms);
      }
    }
    if (!dir_.empty()) {
      std::error_code ec;
      std::filesystem::remove_all(dir_, ec);
    }
  }

  std::string Log() const {
    std::ifstream in(dir_ / "prometheus.log");
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }

  pid_t pid_ = -1;
  std::filesystem::path dir_;
};

TEST_F(RealPrometheusTest, ScrapesTheExporterAndQueriesReturnTheCounters) {
  if (::access(kBinary, X_OK) != 0) GTEST_SKIP() << kBinary << " is not installed";
  StartWorker("prom-worker");
  // A metadata value Prometheus would refuse unless escaped and made valid UTF-8.
  StartExporter({Spec("counter(snakepit.python.call.stop.count, tags: [command])")});
  for (int i = 0; i < 3; ++i) {
    ASSERT_EQ(worker_->Emit("python.call.stop", {}, {{"command", "q\"\\\n\xff"}}),
              EmitResult::kOk);
  }
  Drain();
  WaitExported(3);

  char tmpl[] = "/tmp/pitlane-prom-XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  dir_ = tmpl;
  const uint16_t web_port = FreeLoopbackPort();
  ASSERT_NE(web_port, 0);
  {
    std::ofstream cfg(dir_ / "prometheus.yml");
    cfg << "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        << "scrape_configs:\n  - job_name: pitlane\n    static_configs:\n"
        << "      - targets: ['127.0.0.1:" << exporter_->port() << "']\n";
  }
  const std::string config = "--config.file=" + (dir_ / "prometheus.yml").string();
  const std::string storage = "--storage.tsdb.path=" + (dir_ / "data").string();
  const std::string listen = "--web.listen-address=127.0.0.1:" + std::to_string(web_port);
  const std::string log = (dir_ / "prometheus.log").string();
  pid_ = ::fork();
  ASSERT_GE(pid_, 0);
  if (pid_ == 0) {
    const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd >= 0) {
      ::dup2(fd, 1);
      ::dup2(fd, 2);
    }
    ::execl(kBinary, kBinary, config.c_str(), storage.c_str(), listen.c_str(),
            static_cast<char*>(nullptr));
    ::_exit(127);
  }

  // pitlane_delivered_total{worker_id="prom-worker"}
  const std::string query =
      "/api/v1/query?query=pitlane_delivered_total%7Bworker_id%3D%22prom-worker%22%7D";
  const std::string escaped_query =
      "/api/v1/query?query=snakepit_python_call_stop_count_total";
  std::string last;
  bool delivered_ok = false, escaped_ok = false;
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  while (std::chrono::steady_clock::now() < deadline && !(delivered_ok && escaped_ok)) {
    const HttpResponse r = Fetch(web_port, query);
    last = r.body;
    delivered_ok = r.status == 200 && Contains(r.body, "\"status\":\"success\"") &&
                   Contains(r.body, "\"worker_id\":\"prom-worker\"") &&
                   Contains(r.body, ",\"3\"]");
    if (delivered_ok) {
      const HttpResponse e = Fetch(web_port, escaped_query);
      last = e.body;
      // JSON of the label value q"\<LF><U+FFFD>.
      escaped_ok = Contains(e.body, R"("command":"q\"\\\n)") &&
                   Contains(e.body, ",\"3\"]");
    }
    if (!(delivered_ok && escaped_ok)) std::this_thread::sleep_for(250ms);
  }
  EXPECT_TRUE(delivered_ok) << "last answer: " << last << "\nprometheus log:\n" << Log();
  EXPECT_TRUE(escaped_ok) << "last answer: " << last << "\nprometheus log:\n" << Log();
}

}  // namespace
}  // namespace pitlane
