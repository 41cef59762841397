// The OTLP exporter against a collector pitlane did not write: tests/otlp/receiver.js decodes
// every request with the official OpenTelemetry JS protobuf code (and @grpc/grpc-js for
// OTLP/gRPC) and writes JSON; these tests assert on that JSON. Both protocols, with and without
// gzip; retries; a collector that is down; span pairing; metrics; logs; options.
//
// REQUIRES: node, and `npm ci` run in tests/otlp (build.sh test does it).
#include "pitlane/otlp_exporter.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "otlp_receiver.h"
#include "pitlane/record.h"
#include "pitlane/trace_context.h"
#include "testing.h"

namespace pitlane {
namespace {

using json = nlohmann::json;
using namespace std::chrono_literals;
using testing::OtlpReceiver;

constexpr const char* kTrace = "4bf92f3577b34da6a3ce929d0e0e4736";

// A span event record with identity, published like a worker's (Worker::EmitEncoded).
void EmitSpanRecord(Worker& w, std::string_view event, SpanIds span,
                    std::initializer_list<Measurement> ms, std::initializer_list<Metadata> md,
                    std::string_view correlation, int64_t unix_ns) {
  RecordFields f;
  f.event_id = w.Event(event).id;
  ASSERT_NE(f.event_id, 0) << event;
  f.timestamp = static_cast<uint64_t>(unix_ns);
  f.clock = 0;  // UnixNs
  f.correlation_id = correlation;
  f.measurements = ms.begin();
  f.measurement_count = ms.size();
  f.metadata = md.begin();
  f.metadata_count = md.size();
  f.span = span;
  PreparedRecord p;
  PrepareRecord(f, &w.catalog(), true, &p);
  ASSERT_GT(p.size, 0u);
  std::vector<uint64_t> buf((p.size + 7) / 8);
  EncodeRecord(f, p, reinterpret_cast<uint8_t*>(buf.data()));
  ASSERT_EQ(w.EmitEncoded(w.Event(event), reinterpret_cast<const uint8_t*>(buf.data()), p.size),
            EmitResult::kOk);
}

// Every span of every traces request, by name.
std::map<std::string, json> SpansByName(const std::vector<json>& requests) {
  std::map<std::string, json> out;
  for (const json& r : requests) {
    if (r.value("signal", "") != "traces") continue;
    for (const json& rs : r["request"]["resourceSpans"]) {
      for (const json& ss : rs["scopeSpans"]) {
        for (const json& s : ss["spans"]) out[s["name"].get<std::string>()] = s;
      }
    }
  }
  return out;
}

size_t CountSpans(const std::vector<json>& requests) {
  size_t n = 0;
  for (const json& r : requests) {
    if (r.value("signal", "") != "traces") continue;
    for (const json& rs : r["request"]["resourceSpans"]) {
      for (const json& ss : rs["scopeSpans"]) n += ss["spans"].size();
    }
  }
  return n;
}

// The attribute `key` of an OTLP attribute list (as the decoder's JSON gives it), or null.
json Attr(const json& attrs, std::string_view key) {
  for (const json& kv : attrs) {
    if (kv["key"] == key) return kv["value"];
  }
  return nullptr;
}

std::map<std::string, const char*> BaseEnv() {
  return {{"OTEL_SERVICE_NAME", "checkout"},
          {"OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test,team=a%20b"}};
}

// The exporter counts a request after the collector answered it: the receiver may have it first.
OtlpStats WaitStats(const OtlpExporter& e, const std::function<bool(const OtlpStats&)>& done) {
  const auto until = std::chrono::steady_clock::now() + 10s;
  OtlpStats s = e.Stats();
  while (!done(s) && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(5ms);
    s = e.Stats();
  }
  return s;
}

struct Case {
  const char* protocol;
  const char* compression;
};

class OtlpExporterTest : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override {
    host_ = testing::StartHost(ns_.name());
    ASSERT_NE(host_, nullptr);
    worker_ = testing::StartWorker(ns_.name(), "otlp-worker");
    ASSERT_NE(worker_, nullptr);
  }

  OtlpOptions Options(const OtlpReceiver& r) {
    OtlpOptions o;
    const bool grpc = std::string(GetParam().protocol) == "grpc";
    o.endpoint = "http://127.0.0.1:" + std::to_string(grpc ? r.grpc_port() : r.http_port());
    o.protocol = GetParam().protocol;
    o.compression = GetParam().compression;
    o.batch_delay = 50ms;
    o.metric_interval = 100ms;
    o.initial_backoff = 10ms;
    o.getenv = [env = BaseEnv()](const char* name) -> const char* {
      auto it = env.find(name);
      return it == env.end() ? nullptr : it->second;
    };
    return o;
  }

  // Polls the host until the receiver has `n` requests matching `pred` (or 20 s pass).
  std::vector<json> PollUntil(OtlpReceiver& r, const std::function<bool(const std::vector<json>&)>& done) {
    const auto until = std::chrono::steady_clock::now() + 20s;
    std::vector<json> got;
    while (std::chrono::steady_clock::now() < until) {
      host_->PollOnce();
      got = r.Requests();
      if (done(got)) return got;
      std::this_thread::sleep_for(5ms);
    }
    ADD_FAILURE() << "the receiver did not get what was expected; it has " << got.size()
                  << " requests";
    return got;
  }

  testing::ScopedNamespace ns_;
  std::unique_ptr<Host> host_;
  std::unique_ptr<Worker> worker_;
};

TEST_P(OtlpExporterTest, NestedSpansArriveAsOneTraceWithParentageStatusAndResource) {
  OtlpReceiver r;
  ASSERT_TRUE(r.Start());
  auto exporter = OtlpExporter::Start(*host_, Options(r));
  ASSERT_TRUE(exporter.ok()) << exporter.status().ToString();

  const int64_t t0 = 1'700'000'000'000'000'000;
  const SpanIds parent{0x1111111111111111ull, 0};
  const SpanIds child{0x2222222222222222ull, parent.span_id};
  const SpanIds failing{0x3333333333333333ull, parent.span_id};
  EmitSpanRecord(*worker_, "python.call.start", parent, {{"system_time", t0}},
                 {{"command", "predict"}}, kTrace, t0);
  EmitSpanRecord(*worker_, "tool.execution.start", child, {{"system_time", t0 + 1000}},
                 {{"tool", "embed"}}, kTrace, t0 + 1000);
  EmitSpanRecord(*worker_, "tool.execution.stop", child, {{"duration", int64_t{4000}}},
                 {{"tool", "embed"}}, kTrace, t0 + 5000);
  EmitSpanRecord(*worker_, "tool.execution.start", failing, {{"system_time", t0 + 6000}},
                 {{"tool", "rank"}}, kTrace, t0 + 6000);
  EmitSpanRecord(*worker_, "tool.execution.exception", failing, {{"duration", int64_t{1000}}},
                 {{"tool", "rank"}, {"error_type", "ValueError"}, {"error_message", "bad rank"}},
                 kTrace, t0 + 7000);
  EmitSpanRecord(*worker_, "python.call.stop", parent, {{"duration", int64_t{9000}}},
                 {{"command", "predict"}, {"result", "ok"}}, kTrace, t0 + 9000);

  const std::vector<json> got =
      PollUntil(r, [](const std::vector<json>& g) { return CountSpans(g) >= 3; });
  ASSERT_EQ(CountSpans(got), 3u);
  EXPECT_EQ(got.front()["protocol"], GetParam().protocol);
  // HTTP: Content-Encoding; gRPC: the grpc-encoding of the call.
  EXPECT_EQ(got.front()["encoding"],
            std::string(GetParam().compression) == "gzip" ? "gzip" : "identity");

  std::vector<json> spans;
  json resource;
  for (const json& rq : got) {
    if (rq["signal"] != "traces") continue;
    resource = rq["request"]["resourceSpans"][0]["resource"];
  }
  EXPECT_EQ(Attr(resource["attributes"], "service.name")["stringValue"], "checkout");
  EXPECT_EQ(Attr(resource["attributes"], "deployment.environment")["stringValue"], "test");
  EXPECT_EQ(Attr(resource["attributes"], "team")["stringValue"], "a b");
  EXPECT_EQ(Attr(resource["attributes"], "process.pid")["stringValue"],
            std::to_string(getpid()));
  EXPECT_FALSE(Attr(resource["attributes"], "host.name").is_null());

  const auto by_name = SpansByName(got);
  ASSERT_EQ(by_name.count("python.call"), 1u);
  const json& p = by_name.at("python.call");
  EXPECT_EQ(p["traceId"], kTrace);
  EXPECT_EQ(p["spanId"], SpanIdHex(parent.span_id));
  EXPECT_FALSE(p.contains("parentSpanId") && !p["parentSpanId"].get<std::string>().empty());
  EXPECT_EQ(p["kind"], "SPAN_KIND_INTERNAL");
  EXPECT_EQ(p["startTimeUnixNano"], std::to_string(t0));
  EXPECT_EQ(p["endTimeUnixNano"], std::to_string(t0 + 9000));
  EXPECT_EQ(Attr(p["attributes"], "command")["stringValue"], "predict");
  EXPECT_EQ(Attr(p["attributes"], "result")["stringValue"], "ok");
  EXPECT_EQ(Attr(p["attributes"], "pitlane.worker.id")["stringValue"], "otlp-worker");
  EXPECT_TRUE(Attr(p["attributes"], "pitlane.correlation_id").is_null())
      << "a 32-hex correlation id is the trace id, not an attribute";
  EXPECT_FALSE(p.contains("status") && p["status"].contains("code"));

  // Both tool spans are children of python.call in the same trace. By name: the map keeps the
  // last "tool.execution", so look at all spans.
  int children = 0;
  for (const json& rq : got) {
    if (rq["signal"] != "traces") continue;
    for (const json& s : rq["request"]["resourceSpans"][0]["scopeSpans"][0]["spans"]) {
      if (s["name"] != "python.tool.execution") continue;
      ++children;
      EXPECT_EQ(s["traceId"], kTrace);
      EXPECT_EQ(s["parentSpanId"], SpanIdHex(parent.span_id));
      if (s["spanId"] == SpanIdHex(child.span_id)) {
        EXPECT_EQ(s["startTimeUnixNano"], std::to_string(t0 + 1000));
        EXPECT_EQ(s["endTimeUnixNano"], std::to_string(t0 + 5000));
        EXPECT_FALSE(s.contains("status") && s["status"].contains("code"));
      } else {
        EXPECT_EQ(s["spanId"], SpanIdHex(failing.span_id));
        EXPECT_EQ(s["status"]["code"], "STATUS_CODE_ERROR");
        EXPECT_EQ(s["status"]["message"], "bad rank");
        ASSERT_EQ(s["events"].size(), 1u);
        EXPECT_EQ(s["events"][0]["name"], "exception");
        EXPECT_EQ(s["events"][0]["timeUnixNano"], std::to_string(t0 + 7000));
        EXPECT_EQ(Attr(s["events"][0]["attributes"], "exception.type")["stringValue"],
                  "ValueError");
        EXPECT_EQ(Attr(s["events"][0]["attributes"], "exception.message")["stringValue"],
                  "bad rank");
      }
    }
  }
  EXPECT_EQ(children, 2);
  const OtlpStats s = WaitStats(**exporter, [](const OtlpStats& s) { return s.spans_exported >= 3; });
  EXPECT_EQ(s.spans_exported, 3u);
  EXPECT_EQ(s.dropped(), 0u);
  EXPECT_EQ(s.unpaired_ends, 0u);
}

TEST_P(OtlpExporterTest, MetricsHaveTheirKindUnitAndValues) {
  OtlpReceiver r;
  ASSERT_TRUE(r.Start());
  OtlpOptions o = Options(r);
  o.traces = false;
  for (const char* text : {"counter(snakepit.python.call.stop.count, tags: [command])",
                           "histogram(snakepit.python.call.stop.duration, buckets: [1000000, 1e9])",
                           "last_value(snakepit.python.memory.sampled.rss_bytes)"}) {
    auto spec = MetricSpec::Parse(text);
    ASSERT_TRUE(spec.ok()) << spec.status().ToString();
    o.metrics.push_back(*spec);
  }
  auto exporter = OtlpExporter::Start(*host_, o);
  ASSERT_TRUE(exporter.ok()) << exporter.status().ToString();
  for (int64_t d : {int64_t{500'000}, int64_t{2'000'000}, int64_t{3'000'000'000}}) {  // 0.5 ms, 2 ms, 3 s
    ASSERT_EQ(worker_->Emit("python.call.stop", {{"duration", d}}, {{"command", "predict"}}),
              EmitResult::kOk);
  }
  ASSERT_EQ(worker_->Emit("python.memory.sampled", {{"rss_bytes", int64_t{1} << 30}}),
            EmitResult::kOk);

  std::map<std::string, json> metrics;
  PollUntil(r, [&](const std::vector<json>& g) {
    metrics.clear();
    for (const json& rq : g) {
      if (rq["signal"] != "metrics") continue;
      for (const json& m : rq["request"]["resourceMetrics"][0]["scopeMetrics"][0]["metrics"]) {
        metrics[m["name"].get<std::string>()] = m;
      }
    }
    return metrics.size() == 3 &&
           metrics["snakepit.python.call.stop.count"]["sum"]["dataPoints"][0]["asInt"] == "3" &&
           metrics["snakepit.python.call.stop.duration"]["histogram"]["dataPoints"][0]["count"] ==
               "3";
  });
  ASSERT_EQ(metrics.size(), 3u);
  const json& count = metrics["snakepit.python.call.stop.count"];
  EXPECT_EQ(count["unit"], "1");
  EXPECT_EQ(count["sum"]["isMonotonic"], true);
  EXPECT_EQ(count["sum"]["aggregationTemporality"], "AGGREGATION_TEMPORALITY_CUMULATIVE");
  EXPECT_EQ(Attr(count["sum"]["dataPoints"][0]["attributes"], "command")["stringValue"],
            "predict");

  const json& h = metrics["snakepit.python.call.stop.duration"];
  EXPECT_EQ(h["unit"], "s");
  const json& hp = h["histogram"]["dataPoints"][0];
  EXPECT_NEAR(hp["sum"].get<double>(), 3.0025, 1e-9);
  EXPECT_NEAR(hp["min"].get<double>(), 0.0005, 1e-12);
  EXPECT_NEAR(hp["max"].get<double>(), 3.0, 1e-12);
  ASSERT_EQ(hp["explicitBounds"].size(), 2u);  // the spec's ns bounds, in seconds
  EXPECT_NEAR(hp["explicitBounds"][0].get<double>(), 0.001, 1e-12);
  EXPECT_NEAR(hp["explicitBounds"][1].get<double>(), 1.0, 1e-12);
  EXPECT_EQ(hp["bucketCounts"], json::array({"1", "1", "1"}));

  const json& g = metrics["snakepit.python.memory.sampled.rss_bytes"];
  EXPECT_EQ(g["unit"], "By");
  EXPECT_EQ(g["gauge"]["dataPoints"][0]["asDouble"].get<double>(), double(int64_t{1} << 30));
}

TEST_P(OtlpExporterTest, LogsAreOptInAndCarryTraceIds) {
  OtlpReceiver r;
  ASSERT_TRUE(r.Start());
  OtlpOptions o = Options(r);
  o.logs = true;
  auto exporter = OtlpExporter::Start(*host_, o);
  ASSERT_TRUE(exporter.ok()) << exporter.status().ToString();
  ASSERT_EQ(worker_->Emit("python.error.occurred", {{"count", 1}},
                          {{"error_type", "KeyError"}, {"error_message", "k"}}, kTrace),
            EmitResult::kOk);
  json rec;
  PollUntil(r, [&](const std::vector<json>& g) {
    for (const json& rq : g) {
      if (rq["signal"] == "logs") rec = rq["request"]["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0];
    }
    return !rec.is_null();
  });
  ASSERT_FALSE(rec.is_null());
  // (LogRecord.event_name is newer than the decoder's proto: the body names the event too.)
  EXPECT_EQ(rec["body"]["stringValue"], "snakepit.python.error.occurred");
  EXPECT_EQ(rec["severityNumber"], "SEVERITY_NUMBER_ERROR");
  EXPECT_EQ(rec["traceId"], kTrace);
  EXPECT_EQ(Attr(rec["attributes"], "error_type")["stringValue"], "KeyError");
  EXPECT_EQ(Attr(rec["attributes"], "count")["intValue"], "1");
}

TEST_P(OtlpExporterTest, CollectorAnswering503ThreeTimesLosesNothing) {
  OtlpReceiver r;
  ASSERT_TRUE(r.Start({"--fail-first", "3"}));
  auto exporter = OtlpExporter::Start(*host_, Options(r));
  ASSERT_TRUE(exporter.ok()) << exporter.status().ToString();
  for (uint64_t i = 1; i <= 50; ++i) {
    EmitSpanRecord(*worker_, "tool.execution.start", {i, 0}, {{"system_time", 1}}, {}, kTrace, 1000);
    EmitSpanRecord(*worker_, "tool.execution.stop", {i, 0}, {{"duration", 5}}, {}, kTrace, 2000);
    if (i % 10 == 0) std::this_thread::sleep_for(60ms);  // several batches, so several 503s
  }
  const std::vector<json> got =
      PollUntil(r, [](const std::vector<json>& g) { return CountSpans(g) >= 50; });
  EXPECT_EQ(CountSpans(got), 50u);
  std::set<std::string> ids;
  for (const auto& [name, s] : SpansByName(got)) (void)name;
  for (const json& rq : got) {
    for (const json& s : rq["request"]["resourceSpans"][0]["scopeSpans"][0]["spans"]) {
      ids.insert(s["spanId"].get<std::string>());
    }
  }
  EXPECT_EQ(ids.size(), 50u) << "each span exactly once";
  const OtlpStats s =
      WaitStats(**exporter, [](const OtlpStats& s) { return s.spans_exported >= 50; });
  EXPECT_EQ(s.retries, 3u);
  EXPECT_EQ(s.spans_exported, 50u);
  EXPECT_EQ(s.dropped(), 0u);
}

// Items of one request by signal, as the receiver decoded them.
size_t ItemsOf(const json& request) {
  const std::string signal = request.value("signal", "");
  const json& body = request["request"];
  size_t n = 0;
  if (signal == "traces") {
    for (const json& rs : body["resourceSpans"]) {
      for (const json& ss : rs["scopeSpans"]) n += ss["spans"].size();
    }
  } else if (signal == "logs") {
    for (const json& rl : body["resourceLogs"]) {
      for (const json& sl : rl["scopeLogs"]) n += sl["logRecords"].size();
    }
  } else if (signal == "metrics") {
    for (const json& rm : body["resourceMetrics"]) {
      for (const json& sm : rm["scopeMetrics"]) {
        for (const json& m : sm["metrics"]) {
          for (const char* kind : {"sum", "gauge", "histogram"}) {
            if (m.contains(kind)) n += m[kind]["dataPoints"].size();
          }
        }
      }
    }
  }
  return n;
}

// A collector may take a request and reject some of its items (OTLP partial success): those
// are dropped for good — counted as rejected, not exported, not retried — and the collector's
// message is logged once, not per request. Every signal, since each names its count its own way.
TEST_P(OtlpExporterTest, ItemsRejectedInAPartialSuccessAreCountedAsRejectedAndLoggedOnce) {
  OtlpReceiver r;
  ASSERT_TRUE(r.Start({"--partial-reject", "2", "--partial-message", "spans too old"}));
  OtlpOptions o = Options(r);
  o.logs = true;
  auto spec = MetricSpec::Parse("counter(snakepit.python.error.occurred.count)");
  ASSERT_TRUE(spec.ok()) << spec.status().ToString();
  o.metrics.push_back(*spec);
  std::mutex mu;
  std::vector<std::string> lines;
  o.log = [&](std::string_view line) {
    std::lock_guard<std::mutex> lock(mu);
    lines.emplace_back(line);
  };
  auto exporter = OtlpExporter::Start(*host_, o);
  ASSERT_TRUE(exporter.ok()) << exporter.status().ToString();
  for (uint64_t i = 1; i <= 30; ++i) {
    EmitSpanRecord(*worker_, "tool.execution.start", {i, 0}, {{"system_time", 1}}, {}, kTrace, 1000);
    EmitSpanRecord(*worker_, "tool.execution.stop", {i, 0}, {{"duration", 5}}, {}, kTrace, 2000);
    if (i % 10 == 0) {
      ASSERT_EQ(worker_->Emit("python.error.occurred", {{"count", 1}},
                              {{"error_type", "KeyError"}, {"error_message", "k"}}),
                EmitResult::kOk);
      std::this_thread::sleep_for(60ms);  // several batches, so several partial successes
    }
  }
  PollUntil(r, [](const std::vector<json>& g) {
    std::map<std::string, size_t> items;
    for (const json& rq : g) items[rq.value("signal", "")] += ItemsOf(rq);
    return items["traces"] >= 30 && items["logs"] >= 3 && items["metrics"] >= 1;
  });
  (*exporter)->Shutdown();  // every request answered: the counts are final

  std::map<std::string, size_t> sent, rejected;
  size_t requests = 0;
  for (const json& rq : r.Requests()) {
    if (!rq.contains("signal")) continue;  // (a header line)
    const size_t items = ItemsOf(rq);
    sent[rq["signal"]] += items;
    rejected[rq["signal"]] += std::min<size_t>(2, items);
    ++requests;
  }
  EXPECT_EQ(sent["traces"], 30u);
  ASSERT_GT(rejected["traces"], 0u);
  ASSERT_GT(rejected["logs"], 0u);
  ASSERT_GT(rejected["metrics"], 0u);
  const OtlpStats s = (*exporter)->Stats();
  EXPECT_EQ(s.requests, requests);
  EXPECT_EQ(s.spans_exported, sent["traces"] - rejected["traces"]);
  EXPECT_EQ(s.logs_exported, sent["logs"] - rejected["logs"]);
  EXPECT_EQ(s.metric_points_exported, sent["metrics"] - rejected["metrics"]);
  EXPECT_EQ(s.dropped_rejected, rejected["traces"] + rejected["logs"] + rejected["metrics"]);
  EXPECT_EQ(s.dropped(), s.dropped_rejected);
  EXPECT_EQ(s.retries, 0u) << "rejected items are not sent again";
  EXPECT_NE((*exporter)->PrometheusText().find(
                "pitlane_otlp_dropped_total{reason=\"rejected\"} " +
                std::to_string(s.dropped_rejected) + "\n"),
            std::string::npos);
  std::lock_guard<std::mutex> lock(mu);
  ASSERT_EQ(lines.size(), 1u) << "the first partial success is logged, later ones counted";
  EXPECT_NE(lines[0].find("spans too old"), std::string::npos) << lines[0];
}

// ── one protocol is enough for these ──

class OtlpHttpTest : public ::testing::Test {
 protected:
  void SetUp() override {
    host_ = testing::StartHost(ns_.name());
    ASSERT_NE(host_, nullptr);
    worker_ = testing::StartWorker(ns_.name(), "otlp-worker");
    ASSERT_NE(worker_, nullptr);
  }
  static OtlpOptions Options(int port, std::map<std::string, const char*> env = {}) {
    OtlpOptions o;
    if (port != 0) o.endpoint = "http://127.0.0.1:" + std::to_string(port);
    o.batch_delay = 20ms;
    o.initial_backoff = 1ms;
    o.max_backoff = 5ms;
    o.log = [](std::string_view) {};
    o.getenv = [env = std::move(env)](const char* name) -> const char* {
      auto it = env.find(name);
      return it == env.end() ? nullptr : it->second;
    };
    return o;
  }
  void Pump(const std::function<bool()>& done) {
    const auto until = std::chrono::steady_clock::now() + 20s;
    while (!done() && std::chrono::steady_clock::now() < until) {
      host_->PollOnce();
      std::this_thread::sleep_for(2ms);
    }
  }
  testing::ScopedNamespace ns_;
  std::unique_ptr<Host> host_;
  std::unique_ptr<Worker> worker_;
};

// A port nobody listens on: connections are refused at once (a privileged port no test binds).
int ClosedPort() { return 1; }

TEST_F(OtlpHttpTest, CollectorDownKeepsTheHostDeliveringWithBoundedPendingAndCountedDrops) {
  OtlpOptions o = Options(ClosedPort());
  o.max_pending = 100;
  o.max_batch = 50;
  o.max_retry_time = 200ms;
  o.shutdown_deadline = 100ms;
  auto exporter = OtlpExporter::Start(*host_, o);
  ASSERT_TRUE(exporter.ok()) << exporter.status().ToString();
  uint64_t delivered = 0;
  ASSERT_TRUE(host_->Attach("count", "*", [&](const EventView&) { ++delivered; }).ok());
  constexpr uint64_t kSpans = 2000;
  for (uint64_t i = 1; i <= kSpans; ++i) {
    ASSERT_EQ(worker_->Emit("tool.execution.stop", {{"duration", 5}}), EmitResult::kOk);
    if (i % 200 == 0) {
      while (host_->PollOnce() > 0) {
      }
    }
  }
  Pump([&] { return delivered == kSpans; });
  EXPECT_EQ(delivered, kSpans) << "the host kept delivering to its other handlers";
  const OtlpStats s = WaitStats(**exporter, [&](const OtlpStats& s) {
    return s.dropped_pending_full + s.dropped_retries_exhausted >= kSpans - o.max_pending &&
           s.retries > 0;
  });
  EXPECT_EQ(s.spans_exported, 0u);
  EXPECT_GT(s.dropped_pending_full, 0u) << "pending is bounded: the overflow is dropped";
  EXPECT_GT(s.retries, 0u);
  exporter->reset();  // flush attempt within the (short) shutdown deadline
}

TEST_F(OtlpHttpTest, AllItemsAreAccountedForWhenTheCollectorIsDown) {
  OtlpOptions o = Options(ClosedPort());
  o.max_pending = 10;
  o.max_batch = 5;
  o.max_retry_time = 50ms;
  o.shutdown_deadline = 50ms;
  auto exporter = OtlpExporter::Start(*host_, o);
  ASSERT_TRUE(exporter.ok());
  for (int i = 0; i < 100; ++i) {
    ASSERT_EQ(worker_->Emit("tool.execution.stop", {{"duration", 5}}), EmitResult::kOk);
  }
  Pump([&] { return host_->PollOnce() == 0 && (*exporter)->Stats().dropped() > 0; });
  OtlpExporter* e = exporter->get();
  const OtlpStats s = WaitStats(*e, [](const OtlpStats& s) {
    return s.dropped_pending_full + s.dropped_retries_exhausted + s.dropped_shutdown == 100;
  });
  // Every span was dropped under exactly one reason (none still pending once retries ran out).
  EXPECT_EQ(s.dropped_pending_full + s.dropped_retries_exhausted, 100u);
}

TEST_F(OtlpHttpTest, RefusedRequestsAreDroppedNotRetried) {
  OtlpReceiver r;
  ASSERT_TRUE(r.Start({"--fail-first", "1", "--fail-status", "400"}));
  auto exporter = OtlpExporter::Start(*host_, Options(r.http_port()));
  ASSERT_TRUE(exporter.ok());
  ASSERT_EQ(worker_->Emit("tool.execution.stop", {{"duration", 5}}), EmitResult::kOk);
  Pump([&] { return (*exporter)->Stats().dropped_refused == 1; });
  const OtlpStats s = (*exporter)->Stats();
  EXPECT_EQ(s.dropped_refused, 1u);
  EXPECT_EQ(s.retries, 0u);
}

// The wait a collector asks for: HTTP's Retry-After (delta-seconds, or an HTTP-date as RFC
// 9110 allows), OTLP/gRPC's google.rpc.RetryInfo in the error's status details.
TEST_F(OtlpHttpTest, TheCollectorsRetryDelayIsHonouredOverBothProtocols) {
  struct Case {
    const char* name;
    bool grpc;
    std::vector<std::string> receiver_args;
    std::chrono::milliseconds at_least;
  };
  const Case cases[] = {
      {"http, seconds", false, {"--retry-after", "1"}, 1s},
      {"grpc, RetryInfo", true, {"--retry-after", "1"}, 1s},
      // 2 s ahead in whole seconds: 1-2 s away.
      {"http, date", false, {"--retry-after-date", "2"}, 900ms},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    OtlpReceiver r;
    std::vector<std::string> args = {"--fail-first", "1"};
    args.insert(args.end(), c.receiver_args.begin(), c.receiver_args.end());
    ASSERT_TRUE(r.Start(args));
    OtlpOptions o = Options(0);
    o.endpoint = c.grpc ? "grpc://127.0.0.1:" + std::to_string(r.grpc_port())
                        : "http://127.0.0.1:" + std::to_string(r.http_port());
    auto exporter = OtlpExporter::Start(*host_, o);
    ASSERT_TRUE(exporter.ok()) << exporter.status().ToString();
    const auto t0 = std::chrono::steady_clock::now();
    ASSERT_EQ(worker_->Emit("tool.execution.stop", {{"duration", 5}}), EmitResult::kOk);
    Pump([&] { return (*exporter)->Stats().spans_exported == 1; });
    // The backoff alone would have retried within 5 ms; the collector asked for a second or more.
    EXPECT_GE(std::chrono::steady_clock::now() - t0, c.at_least);
    EXPECT_EQ((*exporter)->Stats().retries, 1u);
    EXPECT_EQ(CountSpans(r.Requests()), 1u);
  }
}

// The specification: RESOURCE_EXHAUSTED is retryable only when the collector signals with a
// RetryInfo that it will recover; without one the batch is refused, not retried.
TEST_F(OtlpHttpTest, GrpcResourceExhaustedIsRetriedOnlyWithRetryInfo) {
  for (const bool retry_info : {false, true}) {
    SCOPED_TRACE(retry_info ? "with RetryInfo" : "without RetryInfo");
    OtlpReceiver r;
    std::vector<std::string> args = {"--fail-first", "1", "--fail-grpc-code", "RESOURCE_EXHAUSTED"};
    if (retry_info) args.insert(args.end(), {"--retry-after", "0"});
    ASSERT_TRUE(r.Start(args));
    OtlpOptions o = Options(0);
    o.endpoint = "grpc://127.0.0.1:" + std::to_string(r.grpc_port());
    auto exporter = OtlpExporter::Start(*host_, o);
    ASSERT_TRUE(exporter.ok()) << exporter.status().ToString();
    ASSERT_EQ(worker_->Emit("tool.execution.stop", {{"duration", 5}}), EmitResult::kOk);
    Pump([&] {
      const OtlpStats s = (*exporter)->Stats();
      return s.spans_exported + s.dropped() == 1;
    });
    const OtlpStats s = (*exporter)->Stats();
    EXPECT_EQ(s.retries, retry_info ? 1u : 0u);
    EXPECT_EQ(s.spans_exported, retry_info ? 1u : 0u);
    EXPECT_EQ(s.dropped_refused, retry_info ? 0u : 1u);
  }
}

TEST_F(OtlpHttpTest, HeadersFromTheEnvironmentReachTheCollectorOverBothProtocols) {
  OtlpReceiver r;
  ASSERT_TRUE(r.Start());
  for (bool grpc : {false, true}) {
    const std::string endpoint =
        (grpc ? "grpc://127.0.0.1:" : "http://127.0.0.1:") +
        std::to_string(grpc ? r.grpc_port() : r.http_port());
    OtlpOptions o = Options(0, {{"OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.c_str()},
                                {"OTEL_EXPORTER_OTLP_HEADERS", "x-test-header=v%3D1"}});
    auto exporter = OtlpExporter::Start(*host_, o);
    ASSERT_TRUE(exporter.ok()) << exporter.status().ToString();
    EXPECT_EQ((*exporter)->Describe().substr(0, 4), grpc ? "grpc" : "http");
    ASSERT_EQ(worker_->Emit("tool.execution.stop", {{"duration", 5}}), EmitResult::kOk);
    Pump([&] { return (*exporter)->Stats().spans_exported == 1; });
  }
  int headers = 0;
  for (const json& j : r.Requests()) {
    if (j.contains("header")) {
      EXPECT_EQ(j["header"], "v=1");
      ++headers;
    }
  }
  EXPECT_EQ(headers, 2);
}

TEST_F(OtlpHttpTest, InvalidSettingsAreRefusedByName) {
  struct Bad {
    std::map<std::string, const char*> env;
    const char* names;
  };
  for (const Bad& b : std::vector<Bad>{
           {{{"OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"}}, "http/json"},
           {{{"OTEL_EXPORTER_OTLP_CERTIFICATE", "/nonexistent/ca.pem"}},
            "OTEL_EXPORTER_OTLP_CERTIFICATE \"/nonexistent/ca.pem\" cannot be read"},
           {{{"OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector:4318"},
             {"OTEL_EXPORTER_OTLP_CERTIFICATE", "/etc/passwd"}},
            "no PEM certificate"},
           {{{"OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector:4317"},
             {"OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"},
             {"OTEL_EXPORTER_OTLP_CERTIFICATE", "/etc/passwd"}},
            "no PEM certificate"},
           {{{"OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318"}}, "collector:4318"},
           {{{"OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:99999"}},
            "port 99999 is not in 1-65535"},
           {{{"OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:0"}}, "port 0 is not in 1-65535"},
           {{{"OTEL_EXPORTER_OTLP_TIMEOUT", "soon"}}, "OTEL_EXPORTER_OTLP_TIMEOUT"},
           {{{"OTEL_EXPORTER_OTLP_COMPRESSION", "zstd"}}, "zstd"},
           {{{"OTEL_EXPORTER_OTLP_HEADERS", "novalue"}}, "OTEL_EXPORTER_OTLP_HEADERS"},
           {{{"OTEL_RESOURCE_ATTRIBUTES", "a=b,c"}}, "OTEL_RESOURCE_ATTRIBUTES"},
           {{{"OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"},
             {"OTEL_EXPORTER_OTLP_ENDPOINT", "grpc://h:4317"}},
            "grpc://"}}) {
    auto e = OtlpExporter::Start(*host_, Options(0, b.env));
    ASSERT_FALSE(e.ok()) << b.names;
    EXPECT_EQ(e.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(e.status().message().find(b.names), std::string::npos) << e.status().message();
  }
}

// A self-signed certificate for `names` (a subjectAltName value), made with the openssl command;
// removed with the object.
class SelfSignedCertificate {
 public:
  explicit SelfSignedCertificate(const std::string& names) {
    char dir[] = "/tmp/pitlane-otlp-tls-XXXXXX";
    dir_ = mkdtemp(dir) ? dir : "";
    const std::string cmd =
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 "
        "-subj /CN=localhost -addext subjectAltName=" + names + " -keyout " + key() + " -out " +
        cert() + " >/dev/null 2>&1";
    ok_ = !dir_.empty() && std::system(cmd.c_str()) == 0;
  }
  ~SelfSignedCertificate() {
    std::error_code ec;
    if (!dir_.empty()) std::filesystem::remove_all(dir_, ec);
  }
  bool ok() const { return ok_; }
  std::string cert() const { return dir_ + "/cert.pem"; }
  std::string key() const { return dir_ + "/key.pem"; }

 private:
  std::string dir_;
  bool ok_ = false;
};

// https:// reaches a collector whose certificate is trusted (OTEL_EXPORTER_OTLP_CERTIFICATE,
// as this one is self-signed) over both protocols. (An IP address, not localhost: gRPC's DNS
// resolver, c-ares, leaks a few bytes that the sanitizer build would report.)
TEST_F(OtlpHttpTest, HttpsExportsToACollectorWhoseCertificateIsTrusted) {
  SelfSignedCertificate c("IP:127.0.0.1");
  ASSERT_TRUE(c.ok()) << "the openssl command failed";
  OtlpReceiver r;
  ASSERT_TRUE(r.Start({"--tls-cert", c.cert(), "--tls-key", c.key()}));
  const std::string ca = c.cert();
  for (const bool grpc : {false, true}) {
    SCOPED_TRACE(grpc ? "grpc" : "http/protobuf");
    const std::string endpoint =
        "https://127.0.0.1:" + std::to_string(grpc ? r.grpc_port() : r.http_port());
    auto exporter = OtlpExporter::Start(
        *host_, Options(0, {{"OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.c_str()},
                            {"OTEL_EXPORTER_OTLP_PROTOCOL", grpc ? "grpc" : "http/protobuf"},
                            {"OTEL_EXPORTER_OTLP_CERTIFICATE", ca.c_str()}}));
    ASSERT_TRUE(exporter.ok()) << exporter.status().ToString();
    EXPECT_EQ((*exporter)->Describe(),
              std::string(grpc ? "grpc" : "http/protobuf") + " " + endpoint);
    ASSERT_EQ(worker_->Emit("tool.execution.stop", {{"duration", 5}}), EmitResult::kOk);
    Pump([&] { return (*exporter)->Stats().spans_exported == 1; });
    EXPECT_EQ((*exporter)->Stats().spans_exported, 1u);
    EXPECT_EQ((*exporter)->Stats().retries, 0u);
  }
  EXPECT_EQ(CountSpans(r.Requests()), 2u);
}

// Without the collector's root, or with an endpoint the certificate does not name, nothing is
// sent: the handshake fails, is retried like a connection failure, and the items are dropped
// when the retries run out, with the reason logged.
TEST_F(OtlpHttpTest, HttpsSendsNothingToAnUntrustedOrMisnamedCollector) {
  SelfSignedCertificate c("DNS:localhost");
  ASSERT_TRUE(c.ok()) << "the openssl command failed";
  OtlpReceiver r;
  ASSERT_TRUE(r.Start({"--tls-cert", c.cert(), "--tls-key", c.key()}));
  const std::string ca = c.cert();
  struct Case {
    const char* host;
    const char* certificate;  // null: the system's roots
  };
  for (const Case k : {Case{"localhost", nullptr}, Case{"127.0.0.1", ca.c_str()}}) {
    SCOPED_TRACE(k.host);
    const std::string endpoint = std::string("https://") + k.host + ":" +
                                 std::to_string(r.http_port());
    std::map<std::string, const char*> env = {{"OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.c_str()}};
    if (k.certificate) env["OTEL_EXPORTER_OTLP_CERTIFICATE"] = k.certificate;
    OtlpOptions o = Options(0, env);
    o.max_retry_time = 300ms;
    auto lines = std::make_shared<std::vector<std::string>>();
    auto mu = std::make_shared<std::mutex>();
    o.log = [lines, mu](std::string_view line) {
      std::lock_guard<std::mutex> lock(*mu);
      lines->emplace_back(line);
    };
    auto exporter = OtlpExporter::Start(*host_, o);
    ASSERT_TRUE(exporter.ok()) << exporter.status().ToString();
    ASSERT_EQ(worker_->Emit("tool.execution.stop", {{"duration", 5}}), EmitResult::kOk);
    Pump([&] { return (*exporter)->Stats().dropped_retries_exhausted == 1; });
    EXPECT_EQ((*exporter)->Stats().dropped_retries_exhausted, 1u);
    EXPECT_EQ((*exporter)->Stats().spans_exported, 0u);
    std::lock_guard<std::mutex> lock(*mu);
    ASSERT_FALSE(lines->empty());
    EXPECT_NE(lines->back().find("TLS handshake: certificate"), std::string::npos) << lines->back();
  }
  EXPECT_EQ(CountSpans(r.Requests()), 0u);
}

TEST_F(OtlpHttpTest, FlagsOverrideTheEnvironment) {
  OtlpReceiver r;
  ASSERT_TRUE(r.Start());
  OtlpOptions o = Options(r.http_port(), {{"OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1"},
                                          {"OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"}});
  o.protocol = "http/protobuf";
  o.service_name = "from-flag";
  auto exporter = OtlpExporter::Start(*host_, o);
  ASSERT_TRUE(exporter.ok()) << exporter.status().ToString();
  EXPECT_EQ((*exporter)->Describe(),
            "http/protobuf http://127.0.0.1:" + std::to_string(r.http_port()));
  ASSERT_EQ(worker_->Emit("tool.execution.stop", {{"duration", 5}}), EmitResult::kOk);
  Pump([&] { return (*exporter)->Stats().spans_exported == 1; });
  const std::vector<json> got = r.Requests();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(Attr(got[0]["request"]["resourceSpans"][0]["resource"]["attributes"],
                 "service.name")["stringValue"],
            "from-flag");
}

TEST_F(OtlpHttpTest, EndsWithoutTheirStartAreExportedAndOpenSpansAreBounded) {
  OtlpReceiver r;
  ASSERT_TRUE(r.Start());
  OtlpOptions o = Options(r.http_port());
  o.max_open_spans = 2;
  auto exporter = OtlpExporter::Start(*host_, o);
  ASSERT_TRUE(exporter.ok());
  const int64_t t = 1'700'000'000'000'000'000;
  for (uint64_t id : {1, 2, 3}) {  // three starts, room for two: span 1 is evicted
    EmitSpanRecord(*worker_, "python.call.start", {id, 0}, {{"system_time", t}}, {}, "req-1",
                   t + static_cast<int64_t>(id));
  }
  // A repeated start of an open span replaces it (and takes no second place in the map).
  EmitSpanRecord(*worker_, "python.call.start", {3, 0}, {{"system_time", t}}, {}, "req-1", t + 3);
  EmitSpanRecord(*worker_, "python.call.stop", {1, 0}, {{"duration", int64_t{700}}}, {}, "req-1",
                 t + 1000);
  EmitSpanRecord(*worker_, "python.call.stop", {3, 0}, {{"duration", int64_t{997}}}, {}, "req-1",
                 t + 1000);
  Pump([&] { return (*exporter)->Stats().spans_exported == 2; });
  const OtlpStats s = (*exporter)->Stats();
  EXPECT_EQ(s.open_spans_evicted, 1u);
  EXPECT_EQ(s.unpaired_ends, 1u);
  std::map<std::string, json> by_id;
  for (const json& rq : r.Requests()) {
    for (const json& sp : rq["request"]["resourceSpans"][0]["scopeSpans"][0]["spans"]) {
      by_id[sp["spanId"].get<std::string>()] = sp;
    }
  }
  ASSERT_EQ(by_id.size(), 2u);
  // Span 1 lost its start: it begins `duration` before its end.
  EXPECT_EQ(by_id[SpanIdHex(1)]["startTimeUnixNano"], std::to_string(t + 1000 - 700));
  EXPECT_EQ(by_id[SpanIdHex(3)]["startTimeUnixNano"], std::to_string(t + 3));
  // "req-1" is not a trace id: it maps to one, and is kept as an attribute.
  EXPECT_EQ(by_id[SpanIdHex(1)]["traceId"], TraceIdHex(*TraceIdFromCorrelationId("req-1")));
  EXPECT_EQ(Attr(by_id[SpanIdHex(1)]["attributes"], "pitlane.correlation_id")["stringValue"],
            "req-1");
}

TEST_F(OtlpHttpTest, ShutdownGivesUpOnAHungCollectorAtItsDeadline) {
  // A collector that accepts connections and never answers: the kernel completes the
  // handshake for the listen backlog, nobody reads.
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(listen(fd, 8), 0);
  ASSERT_EQ(getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  OtlpOptions o = Options(ntohs(addr.sin_port));
  o.timeout = 60s;              // far beyond the test's patience
  o.batch_delay = 60s;          // nothing is sent before shutdown
  o.shutdown_deadline = 300ms;
  auto exporter = OtlpExporter::Start(*host_, o);
  ASSERT_TRUE(exporter.ok());
  ASSERT_EQ(worker_->Emit("tool.execution.stop", {{"duration", 5}}), EmitResult::kOk);
  Pump([&] { return host_->PollOnce() == 0; });
  const auto t0 = std::chrono::steady_clock::now();
  (*exporter)->Shutdown();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 30s) << "the request outlived the deadline";
  const OtlpStats s = (*exporter)->Stats();
  EXPECT_EQ(s.dropped_shutdown, 1u);
  EXPECT_EQ(s.spans_exported, 0u);
  close(fd);
}

TEST_F(OtlpHttpTest, AnOversizedAnswerIsNotReadWhole) {
  // A "collector" that answers every request with 200 and a 64 MiB body, sent for real.
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(listen(fd, 8), 0);
  ASSERT_EQ(getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> sent{0};
  std::thread server([&] {
    const std::string head = "HTTP/1.1 200 OK\r\nContent-Length: 67108864\r\n\r\n";
    const std::string chunk(65536, 'x');
    while (!stop) {
      pollfd p{fd, POLLIN, 0};
      if (poll(&p, 1, 50) != 1) continue;
      const int c = accept4(fd, nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0) continue;
      char buf[4096];
      (void)recv(c, buf, sizeof buf, 0);
      (void)send(c, head.data(), head.size(), MSG_NOSIGNAL);
      for (int i = 0; i < 1024 && !stop; ++i) {
        const ssize_t n = send(c, chunk.data(), chunk.size(), MSG_NOSIGNAL);
        if (n <= 0) break;
        sent += static_cast<uint64_t>(n);
      }
      close(c);
    }
  });
  OtlpOptions o = Options(ntohs(addr.sin_port));
  o.max_retry_time = 100ms;
  auto exporter = OtlpExporter::Start(*host_, o);
  ASSERT_TRUE(exporter.ok());
  ASSERT_EQ(worker_->Emit("tool.execution.stop", {{"duration", 5}}), EmitResult::kOk);
  Pump([&] { return (*exporter)->Stats().dropped_retries_exhausted == 1; });
  const OtlpStats s = (*exporter)->Stats();
  stop = true;
  server.join();
  close(fd);
  EXPECT_EQ(s.dropped_retries_exhausted, 1u) << "an answer that never fits is a failed attempt";
  EXPECT_EQ(s.spans_exported, 0u);
}

TEST_F(OtlpHttpTest, MetricSeriesAreBoundedPerMetricAndTheOverflowCounted) {
  OtlpReceiver r;
  ASSERT_TRUE(r.Start());
  OtlpOptions o = Options(r.http_port());
  o.traces = false;
  o.max_series_per_metric = 2;
  o.metric_interval = 50ms;
  o.metrics.push_back(MetricSpec::Parse("counter(snakepit.python.call.stop.count, tags: [command])").value());
  auto exporter = OtlpExporter::Start(*host_, o);
  ASSERT_TRUE(exporter.ok());
  for (const char* command : {"a", "b", "c", "a"}) {
    ASSERT_EQ(worker_->Emit("python.call.stop", {{"duration", 1}}, {{"command", command}}),
              EmitResult::kOk);
  }
  Pump([&] { return (*exporter)->Stats().metric_series_overflow == 1 &&
                    (*exporter)->Stats().metric_points_exported >= 2; });
  EXPECT_EQ((*exporter)->Stats().metric_series_overflow, 1u);
  json points;
  for (const json& rq : r.Requests()) {
    points = rq["request"]["resourceMetrics"][0]["scopeMetrics"][0]["metrics"][0]["sum"]["dataPoints"];
  }
  ASSERT_EQ(points.size(), 2u);
  std::map<std::string, std::string> counts;
  for (const json& p : points) counts[Attr(p["attributes"], "command")["stringValue"]] = p["asInt"];
  EXPECT_EQ(counts, (std::map<std::string, std::string>{{"a", "2"}, {"b", "1"}}));
}

INSTANTIATE_TEST_SUITE_P(Protocols, OtlpExporterTest,
                         ::testing::Values(Case{"http/protobuf", "none"},
                                           Case{"http/protobuf", "gzip"}, Case{"grpc", "none"},
                                           Case{"grpc", "gzip"}),
                         [](const ::testing::TestParamInfo<Case>& i) {
                           return std::string(i.param.protocol == std::string("grpc") ? "Grpc"
                                                                                       : "Http") +
                                  (std::string(i.param.compression) == "gzip" ? "Gzip" : "");
                         });

}  // namespace
}  // namespace pitlane
