// proto/otlp/ is our own text of the OpenTelemetry protocol messages: these tests pin the field
// numbers and wire types of every field the exporter writes to the specification's
// (opentelemetry-proto v1), and the collector services' gRPC method paths. The end-to-end tests
// (tests/otlp/) decode what pitlane sends with the official JavaScript decoder.
#include <gtest/gtest.h>

#include "otlp/logs_service.grpc.pb.h"
#include "otlp/metrics_service.grpc.pb.h"
#include "otlp/trace_service.grpc.pb.h"

namespace {

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;

struct Spec {
  const char* name;
  int number;
  FieldDescriptor::Type type;
  bool repeated = false;
};

void ExpectFields(const Descriptor* d, std::initializer_list<Spec> fields) {
  for (const Spec& s : fields) {
    const FieldDescriptor* f = d->FindFieldByName(s.name);
    ASSERT_NE(f, nullptr) << d->full_name() << "." << s.name;
    EXPECT_EQ(f->number(), s.number) << d->full_name() << "." << s.name;
    EXPECT_EQ(f->type(), s.type) << d->full_name() << "." << s.name;
    EXPECT_EQ(f->is_repeated(), s.repeated) << d->full_name() << "." << s.name;
  }
}

constexpr auto kString = FieldDescriptor::TYPE_STRING;
constexpr auto kBytes = FieldDescriptor::TYPE_BYTES;
constexpr auto kMsg = FieldDescriptor::TYPE_MESSAGE;
constexpr auto kFixed64 = FieldDescriptor::TYPE_FIXED64;
constexpr auto kFixed32 = FieldDescriptor::TYPE_FIXED32;
constexpr auto kEnum = FieldDescriptor::TYPE_ENUM;
constexpr auto kUint32 = FieldDescriptor::TYPE_UINT32;
constexpr auto kDouble = FieldDescriptor::TYPE_DOUBLE;

TEST(OtlpProtoTest, CommonAndResourceFieldsMatchTheSpecification) {
  namespace c = opentelemetry::proto::common::v1;
  ExpectFields(c::AnyValue::descriptor(),
               {{"string_value", 1, kString}, {"bool_value", 2, FieldDescriptor::TYPE_BOOL},
                {"int_value", 3, FieldDescriptor::TYPE_INT64}, {"double_value", 4, kDouble},
                {"array_value", 5, kMsg}, {"kvlist_value", 6, kMsg}, {"bytes_value", 7, kBytes}});
  ExpectFields(c::KeyValue::descriptor(), {{"key", 1, kString}, {"value", 2, kMsg}});
  ExpectFields(c::InstrumentationScope::descriptor(),
               {{"name", 1, kString}, {"version", 2, kString}, {"attributes", 3, kMsg, true}});
  ExpectFields(opentelemetry::proto::resource::v1::Resource::descriptor(),
               {{"attributes", 1, kMsg, true}, {"dropped_attributes_count", 2, kUint32}});
}

TEST(OtlpProtoTest, SpanFieldsMatchTheSpecification) {
  namespace t = opentelemetry::proto::trace::v1;
  ExpectFields(t::ResourceSpans::descriptor(),
               {{"resource", 1, kMsg}, {"scope_spans", 2, kMsg, true}, {"schema_url", 3, kString}});
  ExpectFields(t::ScopeSpans::descriptor(), {{"scope", 1, kMsg}, {"spans", 2, kMsg, true}});
  ExpectFields(t::Span::descriptor(),
               {{"trace_id", 1, kBytes}, {"span_id", 2, kBytes}, {"trace_state", 3, kString},
                {"parent_span_id", 4, kBytes}, {"flags", 16, kFixed32}, {"name", 5, kString},
                {"kind", 6, kEnum}, {"start_time_unix_nano", 7, kFixed64},
                {"end_time_unix_nano", 8, kFixed64}, {"attributes", 9, kMsg, true},
                {"events", 11, kMsg, true}, {"status", 15, kMsg}});
  ExpectFields(t::Span::Event::descriptor(), {{"time_unix_nano", 1, kFixed64},
                                              {"name", 2, kString},
                                              {"attributes", 3, kMsg, true}});
  ExpectFields(t::Status::descriptor(), {{"message", 2, kString}, {"code", 3, kEnum}});
  EXPECT_EQ(t::Status::STATUS_CODE_ERROR, 2);
  EXPECT_EQ(t::Span::SPAN_KIND_INTERNAL, 1);
}

TEST(OtlpProtoTest, MetricFieldsMatchTheSpecification) {
  namespace m = opentelemetry::proto::metrics::v1;
  ExpectFields(m::Metric::descriptor(),
               {{"name", 1, kString}, {"description", 2, kString}, {"unit", 3, kString},
                {"gauge", 5, kMsg}, {"sum", 7, kMsg}, {"histogram", 9, kMsg}});
  ExpectFields(m::Sum::descriptor(),
               {{"data_points", 1, kMsg, true}, {"aggregation_temporality", 2, kEnum},
                {"is_monotonic", 3, FieldDescriptor::TYPE_BOOL}});
  ExpectFields(m::NumberDataPoint::descriptor(),
               {{"attributes", 7, kMsg, true}, {"start_time_unix_nano", 2, kFixed64},
                {"time_unix_nano", 3, kFixed64}, {"as_double", 4, kDouble},
                {"as_int", 6, FieldDescriptor::TYPE_SFIXED64}});
  ExpectFields(m::HistogramDataPoint::descriptor(),
               {{"attributes", 9, kMsg, true}, {"start_time_unix_nano", 2, kFixed64},
                {"time_unix_nano", 3, kFixed64}, {"count", 4, kFixed64}, {"sum", 5, kDouble},
                {"bucket_counts", 6, kFixed64, true}, {"explicit_bounds", 7, kDouble, true},
                {"min", 11, kDouble}, {"max", 12, kDouble}});
  EXPECT_EQ(m::AGGREGATION_TEMPORALITY_CUMULATIVE, 2);
}

TEST(OtlpProtoTest, LogRecordFieldsMatchTheSpecification) {
  namespace l = opentelemetry::proto::logs::v1;
  ExpectFields(l::LogRecord::descriptor(),
               {{"time_unix_nano", 1, kFixed64}, {"observed_time_unix_nano", 11, kFixed64},
                {"severity_number", 2, kEnum}, {"severity_text", 3, kString}, {"body", 5, kMsg},
                {"attributes", 6, kMsg, true}, {"flags", 8, kFixed32}, {"trace_id", 9, kBytes},
                {"span_id", 10, kBytes}, {"event_name", 12, kString}});
  EXPECT_EQ(l::SEVERITY_NUMBER_INFO, 9);
  EXPECT_EQ(l::SEVERITY_NUMBER_ERROR, 17);
}

TEST(OtlpProtoTest, CollectorServicesHaveTheSpecificationsMethodPaths) {
  namespace ct = opentelemetry::proto::collector;
  EXPECT_EQ(ct::trace::v1::TraceService::service_full_name(),
            std::string("opentelemetry.proto.collector.trace.v1.TraceService"));
  EXPECT_EQ(ct::metrics::v1::MetricsService::service_full_name(),
            std::string("opentelemetry.proto.collector.metrics.v1.MetricsService"));
  EXPECT_EQ(ct::logs::v1::LogsService::service_full_name(),
            std::string("opentelemetry.proto.collector.logs.v1.LogsService"));
  ExpectFields(ct::trace::v1::ExportTraceServiceRequest::descriptor(),
               {{"resource_spans", 1, kMsg, true}});
  ExpectFields(ct::metrics::v1::ExportMetricsServiceRequest::descriptor(),
               {{"resource_metrics", 1, kMsg, true}});
  ExpectFields(ct::logs::v1::ExportLogsServiceRequest::descriptor(),
               {{"resource_logs", 1, kMsg, true}});
  ExpectFields(ct::trace::v1::ExportTracePartialSuccess::descriptor(),
               {{"rejected_spans", 1, FieldDescriptor::TYPE_INT64},
                {"error_message", 2, kString}});
}

}  // namespace
