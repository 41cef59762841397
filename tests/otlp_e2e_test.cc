// End to end: nested pitlane::Spans in a C++ worker → the host (over shared memory, and over
// gRPC both ways) → the OTLP exporter → tests/otlp/receiver.js (the official OpenTelemetry JS decoder).
// The spans arrive as one trace with the right parentage, whichever transport carried them.
#include <gtest/gtest.h>

#include <chrono>
#include <map>
#include <stdexcept>
#include <string>
#include <thread>

#include "otlp_receiver.h"
#include "pitlane/correlation.h"
#include "pitlane/otlp_exporter.h"
#include "pitlane/span.h"
#include "pitlane/trace_context.h"
#include "testing.h"

namespace pitlane {
namespace {

using json = nlohmann::json;
using namespace std::chrono_literals;

// How the worker's events reach the host: its ring; gRPC dial-in (the host serves, the worker
// streams its records unchanged); gRPC dial-out (the worker serves StreamTelemetry, the host
// dials it and receives TelemetryEvent messages, Snakepit's direction).
enum class Path { kShm, kGrpcDialIn, kGrpcHostDials };

class OtlpEndToEndTest : public ::testing::TestWithParam<Path> {};

TEST_P(OtlpEndToEndTest, NestedCppSpansArriveAsOneTraceWithTheirParentage) {
  testing::ScopedNamespace ns;
  WorkerOptions wo;
  wo.ns = ns.name();
  wo.worker_id = "e2e-worker";
  wo.transport = GetParam() == Path::kShm ? WorkerTransport::kShm : WorkerTransport::kGrpc;
  HostOptions ho;
  ho.ns = ns.name();
  ho.log = [](std::string_view) {};
  Result<std::unique_ptr<Worker>> worker = Status::Ok();
  if (GetParam() == Path::kGrpcHostDials) {
    wo.grpc_listen = "127.0.0.1:0";
    worker = Worker::Start(wo);
    ASSERT_TRUE(worker.ok()) << worker.status().ToString();
    ho.grpc_dial = {"e2e-worker=127.0.0.1:" + std::to_string((*worker)->grpc_listen_port())};
  } else if (GetParam() == Path::kGrpcDialIn) {
    ho.grpc_listen = "127.0.0.1:0";
  }
  auto host = Host::Start(ho);
  ASSERT_TRUE(host.ok()) << host.status().ToString();
  testing::OtlpReceiver r;
  ASSERT_TRUE(r.Start());
  OtlpOptions o;
  o.endpoint = "http://127.0.0.1:" + std::to_string(r.http_port());
  o.batch_delay = 20ms;
  o.getenv = [](const char*) -> const char* { return nullptr; };
  auto exporter = OtlpExporter::Start(**host, o);
  ASSERT_TRUE(exporter.ok()) << exporter.status().ToString();
  (*host)->RunInBackground();

  if (GetParam() == Path::kGrpcDialIn) {
    wo.grpc_target = "127.0.0.1:" + std::to_string((*host)->grpc_port());
  }
  if (GetParam() != Path::kGrpcHostDials) worker = Worker::Start(wo);
  ASSERT_TRUE(worker.ok()) << worker.status().ToString();
  ASSERT_TRUE((*worker)->WaitAttached(10s));
  ASSERT_EQ((*worker)->transport(), wo.transport);

  const SpanEvents call = ResolveSpan(**worker, "python.call");
  const SpanEvents tool = ResolveSpan(**worker, "tool.execution");
  const std::string trace = "0af7651916cd43dd8448eb211c80319c";
  uint64_t outer_id = 0, inner_id = 0, failed_id = 0;
  {
    CorrelationScope scope(trace);
    Span outer(**worker, call, {{"command", "predict"}});
    outer_id = outer.span_id();
    {
      Span inner(**worker, tool, {{"tool", "embed"}});
      inner_id = inner.span_id();
      std::this_thread::sleep_for(2ms);
    }
    EXPECT_THROW(WithSpan(**worker, tool,
                          [&]() -> int {
                            failed_id = CurrentSpanId();
                            throw std::out_of_range("no such row");
                          }),
                 std::out_of_range);
  }

  std::map<std::string, json> by_id;
  const auto until = std::chrono::steady_clock::now() + 20s;
  while (by_id.size() < 3 && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(20ms);
    by_id.clear();
    for (const json& rq : r.Requests()) {
      for (const json& s : rq["request"]["resourceSpans"][0]["scopeSpans"][0]["spans"]) {
        by_id[s["spanId"].get<std::string>()] = s;
      }
    }
  }
  ASSERT_EQ(by_id.size(), 3u);
  const json& outer = by_id[SpanIdHex(outer_id)];
  const json& inner = by_id[SpanIdHex(inner_id)];
  const json& failed = by_id[SpanIdHex(failed_id)];
  for (const json* s : {&outer, &inner, &failed}) EXPECT_EQ((*s)["traceId"], trace);
  EXPECT_EQ(outer["name"], "python.call");
  EXPECT_FALSE(outer.contains("parentSpanId") && !outer["parentSpanId"].get<std::string>().empty());
  EXPECT_EQ(inner["name"], "python.tool.execution");
  EXPECT_EQ(inner["parentSpanId"], SpanIdHex(outer_id));
  EXPECT_EQ(failed["parentSpanId"], SpanIdHex(outer_id));
  EXPECT_EQ(failed["status"]["code"], "STATUS_CODE_ERROR");
  EXPECT_EQ(failed["events"][0]["name"], "exception");
  // The inner span lasted at least its 2 ms sleep and lies within the outer one.
  const auto at = [](const json& s, const char* k) { return std::stoull(s[k].get<std::string>()); };
  EXPECT_GE(at(inner, "endTimeUnixNano") - at(inner, "startTimeUnixNano"), 2000000u);
  EXPECT_LE(at(outer, "startTimeUnixNano"), at(inner, "startTimeUnixNano"));
  EXPECT_GE(at(outer, "endTimeUnixNano"), at(inner, "endTimeUnixNano"));
  bool transport_seen = false;
  for (const json& kv : inner["attributes"]) {
    if (kv["key"] == "pitlane.transport") {
      transport_seen = true;
      EXPECT_EQ(kv["value"]["stringValue"], GetParam() == Path::kShm ? "shm" : "grpc");
    }
  }
  EXPECT_TRUE(transport_seen);
  worker->reset();
  exporter->reset();
  (*host)->Stop();
}

INSTANTIATE_TEST_SUITE_P(Transports, OtlpEndToEndTest,
                         ::testing::Values(Path::kShm, Path::kGrpcDialIn, Path::kGrpcHostDials),
                         [](const ::testing::TestParamInfo<Path>& i) {
                           return i.param == Path::kShm          ? "Shm"
                                  : i.param == Path::kGrpcDialIn ? "GrpcDialIn"
                                                                 : "GrpcHostDials";
                         });

}  // namespace
}  // namespace pitlane
