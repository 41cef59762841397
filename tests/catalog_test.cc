// The default event catalog (doc/catalog.md) and the catalog text format's rules.
#include "pitlane/catalog.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <string>

namespace pitlane {
namespace internal {
extern const std::string_view kDefaultCatalogText;
}  // namespace internal
namespace {

constexpr std::array<std::string_view, 34> kMeasurementKeys = {"duration",
                                                               "duration_ms",
                                                               "bytes",
                                                               "system_time",
                                                               "queue_depth",
                                                               "queue_time",
                                                               "available_workers",
                                                               "busy_workers",
                                                               "total_workers",
                                                               "worker_count",
                                                               "lifetime",
                                                               "total_commands",
                                                               "command_count",
                                                               "downtime",
                                                               "restart_count",
                                                               "retry_count",
                                                               "request_size",
                                                               "response_size",
                                                               "message_size",
                                                               "sequence_number",
                                                               "message_count",
                                                               "network_time",
                                                               "uptime",
                                                               "call_count",
                                                               "affinity_duration",
                                                               "commands_with_affinity",
                                                               "rss_bytes",
                                                               "vms_bytes",
                                                               "cpu_percent",
                                                               "collected",
                                                               "generation",
                                                               "latency_ms",
                                                               "count",
                                                               "python_pid"};

constexpr std::array<std::string_view, 46> kMetadataKeys = {"node",
                                                            "pool_name",
                                                            "worker_id",
                                                            "session_id",
                                                            "command",
                                                            "correlation_id",
                                                            "worker_pid",
                                                            "python_port",
                                                            "python_pid",
                                                            "mode",
                                                            "reason",
                                                            "planned",
                                                            "previous_pid",
                                                            "new_pid",
                                                            "retry_count",
                                                            "timeout_ms",
                                                            "result",
                                                            "error_type",
                                                            "error_category",
                                                            "error_message",
                                                            "traceback",
                                                            "rpc_method",
                                                            "grpc_status",
                                                            "stream_id",
                                                            "direction",
                                                            "is_final",
                                                            "tool",
                                                            "library",
                                                            "function",
                                                            "python_type",
                                                            "model",
                                                            "operation",
                                                            "timestamp_ns",
                                                            "worker_module",
                                                            "adapter_module",
                                                            "size",
                                                            "failure_reason",
                                                            "kind",
                                                            "device",
                                                            "dtype",
                                                            "shape",
                                                            "exit_code",
                                                            "payload_version",
                                                            "call_type",
                                                            "idempotent",
                                                            "retry"};

struct WorkerEvent {
  std::string_view wire;
  std::string_view canonical;
  SpanRole role;
};

// doc/catalog.md's layer-2 table, in order.
constexpr std::array<WorkerEvent, 11> kWorkerEvents = {{
    {"python.call.start", "python.call.start", SpanRole::kStart},
    {"python.call.stop", "python.call.stop", SpanRole::kStop},
    {"python.call.exception", "python.call.exception", SpanRole::kException},
    {"python.memory.sampled", "python.memory.sampled", SpanRole::kNone},
    {"python.cpu.sampled", "python.cpu.sampled", SpanRole::kNone},
    {"python.gc.completed", "python.gc.completed", SpanRole::kNone},
    {"python.error.occurred", "python.error.occurred", SpanRole::kNone},
    {"tool.execution.start", "python.tool.execution.start", SpanRole::kStart},
    {"tool.execution.stop", "python.tool.execution.stop", SpanRole::kStop},
    {"tool.execution.exception", "python.tool.execution.exception", SpanRole::kException},
    {"tool.result_size", "python.tool.result_size", SpanRole::kNone},
}};

constexpr std::array<std::string_view, 15> kInfrastructureEvents = {"pool.initialized",
                                                                    "pool.status",
                                                                    "pool.saturated",
                                                                    "pool.queue.enqueued",
                                                                    "pool.queue.dequeued",
                                                                    "pool.queue.timeout",
                                                                    "pool.worker.spawn_started",
                                                                    "pool.worker.spawned",
                                                                    "pool.worker.spawn_failed",
                                                                    "pool.worker.terminated",
                                                                    "pool.worker.restarted",
                                                                    "session.created",
                                                                    "session.destroyed",
                                                                    "session.affinity.assigned",
                                                                    "session.affinity.broken"};

constexpr std::array<std::pair<std::string_view, SpanRole>, 9> kTransportEvents = {{
    {"grpc.call.start", SpanRole::kStart},
    {"grpc.call.stop", SpanRole::kStop},
    {"grpc.call.exception", SpanRole::kException},
    {"grpc.stream.opened", SpanRole::kNone},
    {"grpc.stream.message", SpanRole::kNone},
    {"grpc.stream.closed", SpanRole::kNone},
    {"grpc.connection.established", SpanRole::kNone},
    {"grpc.connection.lost", SpanRole::kNone},
    {"grpc.connection.reconnected", SpanRole::kNone},
}};

constexpr std::string_view kMinimal =
    "root app\n"
    "measurement duration\n"
    "metadata node\n"
    "event job.start worker start job.start\n"
    "event job.stop worker stop job.stop legacy.job.stop\n"
    "event host.tick infrastructure none\n";

std::shared_ptr<const Catalog> MustParse(std::string_view text) {
  auto r = Catalog::Parse(text, "test");
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  return r.ok() ? r.value() : nullptr;
}

Status ParseError(std::string_view text) {
  auto r = Catalog::Parse(text, "user.catalog");
  EXPECT_FALSE(r.ok()) << "parsed:\n" << text;
  return r.ok() ? Status::Ok() : r.status();
}

void ExpectMessageContains(const Status& s, std::string_view what) {
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.ToString();
  EXPECT_NE(s.message().find(what), std::string::npos)
      << "message: " << s.message() << "\nexpected to contain: " << what;
}

TEST(CatalogTest, DefaultCatalogParsesAndIsASingleton) {
  auto r = Catalog::Parse(internal::kDefaultCatalogText, "catalog.txt");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  const auto a = Catalog::Default();
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a, Catalog::Default());
  EXPECT_EQ(a->root(), "snakepit");
  EXPECT_EQ(a->event_count(), 11u + 15u + 9u);
}

TEST(CatalogTest, DefaultHashIsStableAcrossParses) {
  auto r = Catalog::Parse(internal::kDefaultCatalogText, "again");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r.value()->hash(), Catalog::Default()->hash());
  EXPECT_NE(Catalog::Default()->hash(), 0u);
}

TEST(CatalogTest, DefaultLimitsMatchCatalogDoc) {
  const CatalogLimits& l = Catalog::Default()->limits();
  EXPECT_EQ(l.max_measurements, 32u);
  EXPECT_EQ(l.max_metadata, 32u);
  EXPECT_EQ(l.max_key_bytes, 64u);
  EXPECT_EQ(l.max_correlation_id_bytes, 128u);
  EXPECT_EQ(l.max_value_bytes, 1024u);
}

TEST(CatalogTest, WorkerEventsComeFirstInTableOrder) {
  const auto c = Catalog::Default();
  for (size_t i = 0; i < kWorkerEvents.size(); ++i) {
    const CatalogEvent& ev = c->event(static_cast<uint16_t>(i + 1));
    SCOPED_TRACE(ev.canonical);
    EXPECT_EQ(ev.id, i + 1);
    EXPECT_EQ(ev.canonical, kWorkerEvents[i].canonical);
    EXPECT_EQ(ev.layer, Layer::kWorker);
    EXPECT_TRUE(ev.admitted_from_workers());
    EXPECT_EQ(ev.role, kWorkerEvents[i].role);
    ASSERT_EQ(ev.wire_names.size(), 1u);
    EXPECT_EQ(ev.wire_names[0], kWorkerEvents[i].wire);
  }
}

TEST(CatalogTest, AllElevenWorkerEventsResolveByWireName) {
  const auto c = Catalog::Default();
  for (size_t i = 0; i < kWorkerEvents.size(); ++i) {
    EXPECT_EQ(c->FindWorkerEvent(kWorkerEvents[i].wire), i + 1) << kWorkerEvents[i].wire;
  }
}

TEST(CatalogTest, WorkerEventsAlsoResolveByCanonicalName) {
  const auto c = Catalog::Default();
  for (size_t i = 0; i < kWorkerEvents.size(); ++i) {
    EXPECT_EQ(c->FindWorkerEvent(kWorkerEvents[i].canonical), i + 1) << kWorkerEvents[i].canonical;
  }
}

TEST(CatalogTest, ToolEventsResolveByWireAndCanonicalName) {
  const auto c = Catalog::Default();
  const uint16_t id = c->FindWorkerEvent("tool.execution.stop");
  ASSERT_NE(id, 0);
  EXPECT_EQ(c->FindWorkerEvent("python.tool.execution.stop"), id);
  EXPECT_EQ(c->FindCanonical("python.tool.execution.stop"), id);
  EXPECT_EQ(c->FindHostEvent("snakepit.python.tool.execution.stop"), id);
  EXPECT_EQ(c->event(id).host_name, "snakepit.python.tool.execution.stop");
  // The wire alias is not a canonical or host name of its own.
  EXPECT_EQ(c->FindCanonical("tool.execution.stop"), 0);
  EXPECT_EQ(c->FindHostEvent("snakepit.tool.execution.stop"), 0);
}

TEST(CatalogTest, HostNameIsRootDotCanonicalForEveryEvent) {
  const auto c = Catalog::Default();
  for (const CatalogEvent& ev : c->events()) {
    EXPECT_EQ(ev.host_name, "snakepit." + ev.canonical);
    EXPECT_EQ(c->FindHostEvent(ev.host_name), ev.id) << ev.host_name;
    EXPECT_EQ(c->FindCanonical(ev.canonical), ev.id) << ev.canonical;
  }
  EXPECT_EQ(c->FindHostEvent("snakepit.python.call.start"), 1);
  EXPECT_EQ(c->FindHostEvent("snakepit.pool.worker.terminated"),
            c->FindCanonical("pool.worker.terminated"));
}

TEST(CatalogTest, InfrastructureEventsFollowInOrderAndAreHostOnly) {
  const auto c = Catalog::Default();
  for (size_t i = 0; i < kInfrastructureEvents.size(); ++i) {
    const auto id = static_cast<uint16_t>(kWorkerEvents.size() + i + 1);
    const CatalogEvent& ev = c->event(id);
    EXPECT_EQ(ev.canonical, kInfrastructureEvents[i]);
    EXPECT_EQ(ev.layer, Layer::kInfrastructure);
    EXPECT_EQ(ev.role, SpanRole::kNone);
    EXPECT_TRUE(ev.wire_names.empty());
    EXPECT_FALSE(ev.admitted_from_workers());
  }
}

TEST(CatalogTest, TransportEventsComeLastWithTheirSpanRoles) {
  const auto c = Catalog::Default();
  for (size_t i = 0; i < kTransportEvents.size(); ++i) {
    const auto id =
        static_cast<uint16_t>(kWorkerEvents.size() + kInfrastructureEvents.size() + i + 1);
    const CatalogEvent& ev = c->event(id);
    EXPECT_EQ(ev.canonical, kTransportEvents[i].first);
    EXPECT_EQ(ev.layer, Layer::kTransport);
    EXPECT_EQ(ev.role, kTransportEvents[i].second);
    EXPECT_TRUE(ev.wire_names.empty());
  }
}

TEST(CatalogTest, CaseVariantsAreUnknown) {
  const auto c = Catalog::Default();
  EXPECT_EQ(c->FindWorkerEvent("Python.call.start"), 0);
  EXPECT_EQ(c->FindWorkerEvent("PYTHON.CALL.START"), 0);
  EXPECT_EQ(c->FindWorkerEvent("Tool.execution.start"), 0);
  EXPECT_EQ(c->FindCanonical("Python.call.start"), 0);
  EXPECT_EQ(c->FindHostEvent("Snakepit.python.call.start"), 0);
}

TEST(CatalogTest, UnknownWorkerNamesResolveToZero) {
  const auto c = Catalog::Default();
  for (std::string_view name :
       {"inference.start", "snakepit.serialization.unserializable_marker", "", "python",
        "python.call", "python.call.start.", "python.call.start ", "tool.execution"}) {
    EXPECT_EQ(c->FindWorkerEvent(name), 0) << '"' << name << '"';
  }
}

TEST(CatalogTest, HostNamesSentAsWireNamesAreUnknown) {
  const auto c = Catalog::Default();
  EXPECT_EQ(c->FindWorkerEvent("snakepit.python.call.start"), 0);
  EXPECT_EQ(c->FindWorkerEvent("snakepit.python.tool.execution.start"), 0);
}

TEST(CatalogTest, InfrastructureAndTransportEventsSentByAWorkerAreUnknown) {
  const auto c = Catalog::Default();
  for (std::string_view name : kInfrastructureEvents) {
    EXPECT_EQ(c->FindWorkerEvent(name), 0) << name;
    EXPECT_NE(c->FindCanonical(name), 0) << name;
  }
  for (const auto& [name, role] : kTransportEvents) {
    EXPECT_EQ(c->FindWorkerEvent(name), 0) << name;
    EXPECT_NE(c->FindCanonical(name), 0) << name;
  }
  EXPECT_EQ(c->FindWorkerEvent("snakepit.pool.worker.terminated"), 0);
}

TEST(CatalogTest, ThirtyFourMeasurementKeysInDocumentedOrder) {
  const auto c = Catalog::Default();
  ASSERT_EQ(c->measurement_key_count(), kMeasurementKeys.size());
  for (size_t i = 0; i < kMeasurementKeys.size(); ++i) {
    const auto id = static_cast<uint16_t>(i + 1);
    EXPECT_EQ(c->MeasurementKey(id), kMeasurementKeys[i]);
    EXPECT_EQ(c->MeasurementKeyId(kMeasurementKeys[i]), id) << kMeasurementKeys[i];
  }
}

TEST(CatalogTest, FortySixMetadataKeysInDocumentedOrder) {
  const auto c = Catalog::Default();
  ASSERT_EQ(c->metadata_key_count(), kMetadataKeys.size());
  for (size_t i = 0; i < kMetadataKeys.size(); ++i) {
    const auto id = static_cast<uint16_t>(i + 1);
    EXPECT_EQ(c->MetadataKey(id), kMetadataKeys[i]);
    EXPECT_EQ(c->MetadataKeyId(kMetadataKeys[i]), id) << kMetadataKeys[i];
  }
}

TEST(CatalogTest, UnknownKeysResolveToZero) {
  const auto c = Catalog::Default();
  EXPECT_EQ(c->MeasurementKeyId("node"), 0);  // metadata, not a measurement
  EXPECT_EQ(c->MeasurementKeyId("Duration"), 0);
  EXPECT_EQ(c->MeasurementKeyId(""), 0);
  EXPECT_EQ(c->MetadataKeyId("duration"), 0);
  EXPECT_EQ(c->MetadataKeyId("user_key"), 0);
}

TEST(CatalogTest, KeysInBothListsHaveAnIdInEach) {
  const auto c = Catalog::Default();
  EXPECT_EQ(c->MeasurementKeyId("python_pid"), 34);
  EXPECT_EQ(c->MetadataKeyId("python_pid"), 9);
  EXPECT_EQ(c->MeasurementKeyId("retry_count"), 16);
  EXPECT_EQ(c->MetadataKeyId("retry_count"), 15);
}

TEST(CatalogTest, PythonTwoLevelPatternsMatchToolEvents) {
  const auto c = Catalog::Default();
  const uint16_t tool = c->FindWorkerEvent("tool.execution.start");
  const uint16_t call = c->FindWorkerEvent("python.call.start");
  EXPECT_TRUE(c->PatternMatchesEvent("python.*", tool));
  EXPECT_TRUE(c->PatternMatchesEvent("python.tool.*", tool));
  EXPECT_TRUE(c->PatternMatchesEvent("tool.*", tool));
  EXPECT_TRUE(c->PatternMatchesEvent("python.*", call));
  EXPECT_FALSE(c->PatternMatchesEvent("tool.*", call));
  EXPECT_FALSE(c->PatternMatchesEvent("python.tool.*", call));
}

TEST(CatalogTest, CapitalisedPatternMatchesNoEvent) {
  const auto c = Catalog::Default();
  for (const CatalogEvent& ev : c->events()) {
    EXPECT_FALSE(c->PatternMatchesEvent("Python.*", ev.id)) << ev.canonical;
  }
}

TEST(CatalogTest, PatternsDoNotMatchTheHostName) {
  const auto c = Catalog::Default();
  EXPECT_FALSE(c->PatternMatchesEvent("snakepit.*", c->FindCanonical("pool.status")));
  EXPECT_FALSE(c->PatternMatchesEvent("*", 0));
  EXPECT_FALSE(c->PatternMatchesEvent("*", static_cast<uint16_t>(c->event_count() + 1)));
}

TEST(CatalogTest, LayerAndRoleNames) {
  EXPECT_EQ(LayerName(Layer::kInfrastructure), "infrastructure");
  EXPECT_EQ(LayerName(Layer::kWorker), "worker");
  EXPECT_EQ(LayerName(Layer::kTransport), "transport");
  EXPECT_EQ(SpanRoleName(SpanRole::kNone), "none");
  EXPECT_EQ(SpanRoleName(SpanRole::kStart), "start");
  EXPECT_EQ(SpanRoleName(SpanRole::kStop), "stop");
  EXPECT_EQ(SpanRoleName(SpanRole::kException), "exception");
}

TEST(CatalogTest, UserCatalogWithSeveralWireNames) {
  const auto c = MustParse(kMinimal);
  ASSERT_NE(c, nullptr);
  EXPECT_EQ(c->event_count(), 3u);
  EXPECT_EQ(c->FindWorkerEvent("job.stop"), 2);
  EXPECT_EQ(c->FindWorkerEvent("legacy.job.stop"), 2);
  EXPECT_EQ(c->FindHostEvent("app.job.stop"), 2);
  EXPECT_EQ(c->FindWorkerEvent("host.tick"), 0);
  EXPECT_EQ(c->FindHostEvent("app.host.tick"), 3);
  EXPECT_TRUE(c->PatternMatchesEvent("legacy.*", 2));
  EXPECT_FALSE(c->PatternMatchesEvent("legacy.*", 1));
}

TEST(CatalogTest, LargeCatalogResolvesEveryName) {
  std::string text = "root big\n";
  for (int i = 0; i < 3000; ++i) {
    text += "event e" + std::to_string(i) + " worker none w" + std::to_string(i) + "\n";
    text += "measurement m" + std::to_string(i) + "\n";
  }
  const auto c = MustParse(text);
  ASSERT_NE(c, nullptr);
  for (int i = 0; i < 3000; ++i) {
    EXPECT_EQ(c->FindWorkerEvent("w" + std::to_string(i)), i + 1);
    EXPECT_EQ(c->FindWorkerEvent("e" + std::to_string(i)), i + 1);
    EXPECT_EQ(c->MeasurementKeyId("m" + std::to_string(i)), i + 1);
  }
  EXPECT_EQ(c->FindWorkerEvent("w3000"), 0);
}

TEST(CatalogTest, CopiedCatalogStillResolvesNames) {
  Catalog copy;
  {
    const auto original = MustParse(kMinimal);
    ASSERT_NE(original, nullptr);
    copy = *original;
  }  // original destroyed: the copy must not view its strings
  EXPECT_EQ(copy.FindWorkerEvent("legacy.job.stop"), 2);
  EXPECT_EQ(copy.FindHostEvent("app.host.tick"), 3);
  EXPECT_EQ(copy.MetadataKeyId("node"), 1);
}

TEST(CatalogTest, DefaultConstructedCatalogKnowsNothing) {
  const Catalog empty;
  EXPECT_EQ(empty.FindWorkerEvent("python.call.start"), 0);
  EXPECT_EQ(empty.MeasurementKeyId("duration"), 0);
}

TEST(CatalogTest, HashIgnoresCommentsWhitespaceAndDefaultLimits) {
  const auto a = MustParse(kMinimal);
  const auto b = MustParse(
      "# a comment\n"
      "\r\n"
      "  root   app  \r\n"
      "limit max_key_bytes 64\n"
      "\tmeasurement\tduration\n"
      "   # indented comment\n"
      "metadata node\n"
      "event job.start   worker  start   job.start\n"
      "event job.stop worker stop job.stop   legacy.job.stop\n"
      "event host.tick infrastructure none");
  ASSERT_TRUE(a && b);
  EXPECT_EQ(a->hash(), b->hash());
}

TEST(CatalogTest, HashDiffersWhenAnEventIsAdded) {
  const std::string base(internal::kDefaultCatalogText);
  const auto extended = MustParse(base + "event pool.drained infrastructure none\n");
  ASSERT_NE(extended, nullptr);
  EXPECT_NE(extended->hash(), Catalog::Default()->hash());
}

TEST(CatalogTest, HashDiffersForAnyRealChange) {
  const auto base = MustParse(kMinimal);
  ASSERT_NE(base, nullptr);
  const std::string text(kMinimal);
  const auto replaced = [&](std::string_view from, std::string_view to) {
    std::string t = text;
    t.replace(t.find(from), from.size(), to);
    return t;
  };
  const std::string variants[] = {
      replaced("root app", "root app2"),
      text + "limit max_value_bytes 2048\n",
      text + "measurement bytes\n",
      text + "metadata tool\n",
      replaced("job.start worker start", "job.start worker none"),
      replaced("host.tick infrastructure", "host.tick transport"),
      replaced(" legacy.job.stop", ""),
      // Same events, reordered: ids change, so the hash must too.
      "root app\nmeasurement duration\nmetadata node\n"
      "event job.stop worker stop job.stop legacy.job.stop\n"
      "event job.start worker start job.start\n"
      "event host.tick infrastructure none\n",
  };
  for (const std::string& v : variants) {
    const auto c = MustParse(v);
    ASSERT_NE(c, nullptr) << v;
    EXPECT_NE(c->hash(), base->hash()) << v;
  }
}

TEST(CatalogTest, ExplicitLimitsAreApplied) {
  const auto c =
      MustParse(std::string(kMinimal) + "limit max_measurements 8\nlimit max_value_bytes 4096\n");
  ASSERT_NE(c, nullptr);
  EXPECT_EQ(c->limits().max_measurements, 8u);
  EXPECT_EQ(c->limits().max_value_bytes, 4096u);
  EXPECT_EQ(c->limits().max_metadata, 32u);
}

TEST(CatalogTest, UnknownDirectiveIsRejectedWithLineNumber) {
  ExpectMessageContains(ParseError("root app\n# c\nevnt a.b worker none a.b\n"),
                        "user.catalog:3: unknown directive \"evnt\"");
}

TEST(CatalogTest, MissingRootIsRejected) {
  ExpectMessageContains(ParseError("event a.b worker none a.b\n"), "user.catalog: missing 'root");
}

TEST(CatalogTest, DuplicateRootIsRejected) {
  ExpectMessageContains(ParseError("root a\nroot b\n"), "user.catalog:2: duplicate 'root'");
}

TEST(CatalogTest, DuplicateEventIsRejected) {
  ExpectMessageContains(
      ParseError("root app\nevent a.b infrastructure none\nevent a.b transport none\n"),
      "user.catalog:3: duplicate event name \"a.b\"");
}

TEST(CatalogTest, WireNameSharedByTwoEventsIsRejected) {
  ExpectMessageContains(
      ParseError("root app\nevent a.one worker none x.y\nevent a.two worker none x.y\n"),
      "user.catalog:3: duplicate event name \"x.y\" (already used by \"a.one\")");
}

TEST(CatalogTest, WireNameEqualToAnotherCanonicalNameIsRejected) {
  ExpectMessageContains(
      ParseError("root app\nevent pool.status infrastructure none\nevent a.b worker none "
                 "pool.status\n"),
      "user.catalog:3: duplicate event name \"pool.status\"");
  ExpectMessageContains(
      ParseError("root app\nevent a.b worker none x.y\nevent x.y infrastructure none\n"),
      "user.catalog:3: duplicate event name \"x.y\"");
}

TEST(CatalogTest, RepeatedWireNameWithinAnEventIsRejected) {
  ExpectMessageContains(ParseError("root app\nevent a.b worker none x.y x.y\n"),
                        "user.catalog:2: event \"a.b\": duplicate wire name \"x.y\"");
}

TEST(CatalogTest, BadLayerIsRejected) {
  ExpectMessageContains(ParseError("root app\nevent a.b python none a.b\n"),
                        "user.catalog:2: event \"a.b\": bad layer \"python\"");
}

TEST(CatalogTest, BadRoleIsRejected) {
  ExpectMessageContains(ParseError("root app\nevent a.b worker begin a.b\n"),
                        "user.catalog:2: event \"a.b\": bad role \"begin\"");
}

TEST(CatalogTest, WorkerEventWithoutWireNamesIsRejected) {
  ExpectMessageContains(ParseError("root app\n\nevent a.b worker start\n"),
                        "user.catalog:3: worker-layer event \"a.b\" has no wire names");
}

TEST(CatalogTest, HostOnlyEventWithWireNamesIsRejected) {
  ExpectMessageContains(ParseError("root app\nevent a.b infrastructure none a.b\n"),
                        "user.catalog:2: infrastructure-layer event \"a.b\" has wire names");
}

TEST(CatalogTest, MalformedEventLineIsRejected) {
  ExpectMessageContains(ParseError("root app\nevent a.b worker\n"), "user.catalog:2: expected");
  ExpectMessageContains(ParseError("root app\nevent a..b worker none a.b\n"),
                        "user.catalog:2: event name \"a..b\"");
  ExpectMessageContains(ParseError("root app\nevent a.b worker none x*\n"),
                        "user.catalog:2: event \"a.b\": wire name \"x*\"");
  ExpectMessageContains(ParseError("root snake pit\n"), "user.catalog:1: expected 'root");
}

TEST(CatalogTest, DuplicateKeysAreRejected) {
  ExpectMessageContains(ParseError("root app\nmeasurement bytes\nmeasurement bytes\n"),
                        "user.catalog:3: duplicate measurement key \"bytes\" (first on line 2)");
  ExpectMessageContains(ParseError("root app\nmetadata node\n\nmetadata node\n"),
                        "user.catalog:4: duplicate metadata key \"node\"");
}

TEST(CatalogTest, KeyLongerThanMaxKeyBytesIsRejected) {
  const std::string long_key(65, 'k');
  ExpectMessageContains(ParseError("root app\nmeasurement " + long_key + "\n"),
                        "user.catalog:2: measurement key \"" + long_key + "\" is 65 bytes");
  // The limit applies wherever it appears in the file.
  ExpectMessageContains(ParseError("root app\nmetadata abcdef\nlimit max_key_bytes 5\n"),
                        "user.catalog:2: metadata key \"abcdef\" is 6 bytes");
  EXPECT_NE(MustParse("root app\nmeasurement " + std::string(64, 'k') + "\n"), nullptr);
}

TEST(CatalogTest, BadLimitsAreRejected) {
  ExpectMessageContains(ParseError("root app\nlimit max_widgets 3\n"),
                        "user.catalog:2: unknown limit \"max_widgets\"");
  ExpectMessageContains(ParseError("root app\nlimit max_metadata 0\n"),
                        "user.catalog:2: limit \"max_metadata\" value \"0\"");
  ExpectMessageContains(ParseError("root app\nlimit max_metadata 12x\n"), "user.catalog:2:");
  ExpectMessageContains(ParseError("root app\nlimit max_metadata 4294967296\n"), "user.catalog:2:");
  ExpectMessageContains(ParseError("root app\nlimit max_metadata 4\nlimit max_metadata 5\n"),
                        "user.catalog:3: duplicate limit \"max_metadata\"");
}

TEST(CatalogTest, MoreThan65535EventsIsRejected) {
  std::string text = "root app\n";
  for (int i = 0; i < 65535; ++i) text += "event e" + std::to_string(i) + " transport none\n";
  EXPECT_NE(MustParse(text), nullptr);
  text += "event one.too.many transport none\n";
  ExpectMessageContains(ParseError(text), "user.catalog:65537: more than 65535 events");
}

TEST(CatalogTest, MoreThan65535MeasurementKeysIsRejected) {
  std::string text = "root app\n";
  for (int i = 0; i < 65536; ++i) text += "measurement k" + std::to_string(i) + "\n";
  ExpectMessageContains(ParseError(text), "user.catalog:65537: more than 65535 measurement keys");
}

TEST(CatalogTest, LoadFileOfMissingPathIsNotFoundNamingThePath) {
  const std::string path = "/nonexistent/pitlane/catalog-" + std::to_string(getpid()) + ".txt";
  auto r = Catalog::LoadFile(path);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kNotFound);
  EXPECT_NE(r.status().message().find(path), std::string::npos) << r.status().message();
}

TEST(CatalogTest, LoadFileParsesAndNamesTheFileInErrors) {
  const std::string path =
      ::testing::TempDir() + "pitlane_catalog_test_" + std::to_string(getpid()) + ".txt";
  {
    std::FILE* f = std::fopen(path.c_str(), "w");
    ASSERT_NE(f, nullptr);
    std::fputs(std::string(kMinimal).c_str(), f);
    std::fclose(f);
  }
  auto r = Catalog::LoadFile(path);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r.value()->hash(), MustParse(kMinimal)->hash());
  {
    std::FILE* f = std::fopen(path.c_str(), "w");
    ASSERT_NE(f, nullptr);
    std::fputs("root app\nbogus\n", f);
    std::fclose(f);
  }
  auto bad = Catalog::LoadFile(path);
  std::remove(path.c_str());
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find(path + ":2:"), std::string::npos) << bad.status().message();
}

TEST(StatusTest, CodeNamesUseGrpcSpelling) {
  EXPECT_EQ(StatusCodeName(StatusCode::kOk), "OK");
  EXPECT_EQ(StatusCodeName(StatusCode::kInvalidArgument), "INVALID_ARGUMENT");
  EXPECT_EQ(StatusCodeName(StatusCode::kNotFound), "NOT_FOUND");
  EXPECT_EQ(StatusCodeName(StatusCode::kAlreadyExists), "ALREADY_EXISTS");
  EXPECT_EQ(StatusCodeName(StatusCode::kPermissionDenied), "PERMISSION_DENIED");
  EXPECT_EQ(StatusCodeName(StatusCode::kFailedPrecondition), "FAILED_PRECONDITION");
  EXPECT_EQ(StatusCodeName(StatusCode::kResourceExhausted), "RESOURCE_EXHAUSTED");
  EXPECT_EQ(StatusCodeName(StatusCode::kUnavailable), "UNAVAILABLE");
  EXPECT_EQ(StatusCodeName(StatusCode::kDataLoss), "DATA_LOSS");
  EXPECT_EQ(StatusCodeName(StatusCode::kInternal), "INTERNAL");
}

TEST(StatusTest, ToStringIsCodeColonMessageOrOk) {
  EXPECT_EQ(Status::Ok().ToString(), "OK");
  EXPECT_EQ(InvalidArgument("sampling rate 1.5 is outside [0, 1]").ToString(),
            "INVALID_ARGUMENT: sampling rate 1.5 is outside [0, 1]");
  EXPECT_EQ(NotFound("x").ToString(), "NOT_FOUND: x");
}

TEST(CatalogUnitTest, MeasurementUnitsAreReadAndLeaveIdsAndHashAlone) {
  const auto plain = MustParse(kMinimal);
  std::string with_unit(kMinimal);
  with_unit.replace(with_unit.find("measurement duration"), 20, "measurement duration nanosecond");
  const auto united = MustParse(with_unit);
  ASSERT_TRUE(plain && united);
  EXPECT_EQ(united->MeasurementUnit(united->MeasurementKeyId("duration")), Unit::kNanosecond);
  EXPECT_EQ(plain->MeasurementUnit(plain->MeasurementKeyId("duration")), Unit::kNone);
  EXPECT_EQ(united->hash(), plain->hash());
  const auto def = Catalog::Default();
  EXPECT_EQ(def->MeasurementUnit(def->MeasurementKeyId("duration_ms")), Unit::kMillisecond);
  EXPECT_EQ(def->MeasurementUnit(def->MeasurementKeyId("rss_bytes")), Unit::kByte);
  EXPECT_EQ(def->MeasurementUnit(def->MeasurementKeyId("cpu_percent")), Unit::kNone);
  with_unit.replace(with_unit.find("nanosecond"), 10, "fortnight");
  ExpectMessageContains(ParseError(with_unit), "measurement unit \"fortnight\"");
  ExpectMessageContains(ParseError("root app\nmetadata node byte\n"), "expected 'metadata <key>'");
}

}  // namespace
}  // namespace pitlane
