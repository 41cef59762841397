// The gRPC contract must stay wire-compatible with Snakepit's snakepit_bridge.proto: these tests
// pin every field number and type, and the compatibility service's method path.
#include <gtest/gtest.h>

#include "snakepit_compat.grpc.pb.h"
#include "snakepit_compat.pb.h"
#include "telemetry.pb.h"

namespace {

using google::protobuf::FieldDescriptor;

void ExpectField(const google::protobuf::Descriptor* d, const char* name, int number,
                 FieldDescriptor::Type type) {
  const FieldDescriptor* f = d->FindFieldByName(name);
  ASSERT_NE(f, nullptr) << d->full_name() << "." << name;
  EXPECT_EQ(f->number(), number) << d->full_name() << "." << name;
  EXPECT_EQ(f->type(), type) << d->full_name() << "." << name;
}

TEST(ProtoContractTest, TelemetryEventFieldsMatchSnakepit) {
  const auto* d = pitlane::v1::TelemetryEvent::descriptor();
  ExpectField(d, "event_parts", 1, FieldDescriptor::TYPE_STRING);
  EXPECT_TRUE(d->FindFieldByName("event_parts")->is_repeated());
  ExpectField(d, "measurements", 2, FieldDescriptor::TYPE_MESSAGE);
  EXPECT_TRUE(d->FindFieldByName("measurements")->is_map());
  ExpectField(d, "metadata", 3, FieldDescriptor::TYPE_MESSAGE);
  EXPECT_TRUE(d->FindFieldByName("metadata")->is_map());
  ExpectField(d, "timestamp_ns", 4, FieldDescriptor::TYPE_INT64);
  ExpectField(d, "correlation_id", 5, FieldDescriptor::TYPE_STRING);
  // pitlane's extensions, beyond Snakepit's numbers (a Snakepit peer skips them).
  ExpectField(d, "pitlane_span_id", 101, FieldDescriptor::TYPE_FIXED64);
  ExpectField(d, "pitlane_parent_span_id", 102, FieldDescriptor::TYPE_FIXED64);
}

TEST(ProtoContractTest, ValueAndControlOneofsMatchSnakepit) {
  const auto* v = pitlane::v1::TelemetryValue::descriptor();
  ExpectField(v, "int_value", 1, FieldDescriptor::TYPE_INT64);
  ExpectField(v, "float_value", 2, FieldDescriptor::TYPE_DOUBLE);
  ExpectField(v, "string_value", 3, FieldDescriptor::TYPE_STRING);
  const auto* c = pitlane::v1::TelemetryControl::descriptor();
  ExpectField(c, "toggle", 1, FieldDescriptor::TYPE_MESSAGE);
  ExpectField(c, "sampling", 2, FieldDescriptor::TYPE_MESSAGE);
  ExpectField(c, "filter", 3, FieldDescriptor::TYPE_MESSAGE);
  // pitlane's extension, beyond Snakepit's numbers (sent only to a pitlane worker).
  ExpectField(c, "pitlane_state", 100, FieldDescriptor::TYPE_MESSAGE);
  ExpectField(pitlane::v1::TelemetryToggle::descriptor(), "enabled", 1, FieldDescriptor::TYPE_BOOL);
  const auto* s = pitlane::v1::TelemetrySamplingUpdate::descriptor();
  ExpectField(s, "sampling_rate", 1, FieldDescriptor::TYPE_DOUBLE);
  ExpectField(s, "event_patterns", 2, FieldDescriptor::TYPE_STRING);
  const auto* f = pitlane::v1::TelemetryEventFilter::descriptor();
  ExpectField(f, "allow", 1, FieldDescriptor::TYPE_STRING);
  ExpectField(f, "deny", 2, FieldDescriptor::TYPE_STRING);
}

TEST(ProtoContractTest, CompatServiceIsReachableAtSnakepitMethodPath) {
  // Loads the compatibility file's descriptors (nothing else in this binary references them).
  google::protobuf::internal::AssignDescriptors(&descriptor_table_snakepit_5fcompat_2eproto);
  const google::protobuf::FileDescriptor* file =
      google::protobuf::DescriptorPool::generated_pool()->FindFileByName("snakepit_compat.proto");
  ASSERT_NE(file, nullptr);
  const auto* svc = file->FindServiceByName("BridgeService");
  ASSERT_NE(svc, nullptr);
  const auto* m = svc->FindMethodByName("StreamTelemetry");
  ASSERT_NE(m, nullptr);
  EXPECT_EQ("/" + svc->full_name() + "/" + m->name(), "/snakepit.bridge.BridgeService/StreamTelemetry");
  EXPECT_TRUE(m->client_streaming());
  EXPECT_TRUE(m->server_streaming());
  // The generated service class carries the same name.
  EXPECT_EQ(std::string(snakepit::bridge::BridgeService::service_full_name()),
            "snakepit.bridge.BridgeService");
}

TEST(ProtoContractTest, EventRoundTripsThroughTheWire) {
  pitlane::v1::TelemetryEvent e;
  e.add_event_parts("python");
  e.add_event_parts("call");
  e.add_event_parts("stop");
  (*e.mutable_measurements())["duration"].set_int_value(42);
  (*e.mutable_metadata())["command"] = "predict";
  e.set_timestamp_ns(123);
  e.set_correlation_id("pl-1");
  pitlane::v1::TelemetryEvent back;
  ASSERT_TRUE(back.ParseFromString(e.SerializeAsString()));
  EXPECT_EQ(back.event_parts_size(), 3);
  EXPECT_EQ(back.measurements().at("duration").int_value(), 42);
  EXPECT_EQ(back.metadata().at("command"), "predict");
  EXPECT_EQ(back.correlation_id(), "pl-1");
}

}  // namespace
