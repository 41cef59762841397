// pitlane/trace_context.h: correlation id → trace id, span id bytes, W3C traceparent. The
// traceparent cases come from the W3C Trace Context specification's examples and its rules
// for invalid values.
#include <gtest/gtest.h>

#include <set>
#include <string>

#include "pitlane/trace_context.h"

namespace pitlane {
namespace {

TEST(TraceContextTest, ThirtyTwoHexCorrelationIdIsTheTraceId) {
  const auto id = TraceIdFromCorrelationId("4bf92f3577b34da6a3ce929d0e0e4736");
  ASSERT_TRUE(id.has_value());
  EXPECT_EQ(TraceIdHex(*id), "4bf92f3577b34da6a3ce929d0e0e4736");
  // Snakepit's uuid4().hex is lowercase; an uppercase id names the same trace.
  EXPECT_EQ(TraceIdHex(*TraceIdFromCorrelationId("4BF92F3577B34DA6A3CE929D0E0E4736")),
            "4bf92f3577b34da6a3ce929d0e0e4736");
}

TEST(TraceContextTest, OtherCorrelationIdsMapDeterministicallyAndDistinctly) {
  const auto a = TraceIdFromCorrelationId("pl-0123456789abcdef01234567");
  const auto b = TraceIdFromCorrelationId("pl-0123456789abcdef01234567");
  const auto c = TraceIdFromCorrelationId("pl-0123456789abcdef01234568");
  ASSERT_TRUE(a && b && c);
  EXPECT_EQ(*a, *b);
  EXPECT_NE(*a, *c);
  // FNV-1a-64("a") = af63dc4c8601ec8c: the documented mapping, pinned so every implementation
  // (C++, Python through the native module) agrees.
  EXPECT_EQ(TraceIdHex(*TraceIdFromCorrelationId("a")).substr(0, 16), "af63dc4c8601ec8c");
  // 31 and 33 hex digits are not trace ids: they map (not parse).
  EXPECT_NE(TraceIdHex(*TraceIdFromCorrelationId("4bf92f3577b34da6a3ce929d0e0e473")),
            "4bf92f3577b34da6a3ce929d0e0e473");
  EXPECT_FALSE(TraceIdFromCorrelationId("").has_value());
  std::set<std::string> seen;
  for (int i = 0; i < 10000; ++i) {
    seen.insert(TraceIdHex(*TraceIdFromCorrelationId("req-" + std::to_string(i))));
  }
  EXPECT_EQ(seen.size(), 10000u);
}

TEST(TraceContextTest, AllZeroTraceIdIsNeverProduced) {
  EXPECT_EQ(TraceIdHex(*TraceIdFromCorrelationId("00000000000000000000000000000000")),
            "00000000000000000000000000000001");
}

TEST(TraceContextTest, SpanIdsAreBigEndianSoHexAndBytesAgree) {
  EXPECT_EQ(SpanIdHex(0x00f067aa0ba902b7ull), "00f067aa0ba902b7");
  const auto b = SpanIdBytes(0x00f067aa0ba902b7ull);
  EXPECT_EQ(b[0], 0x00);
  EXPECT_EQ(b[1], 0xf0);
  EXPECT_EQ(b[7], 0xb7);
}

TEST(TraceContextTest, ParsesTheSpecificationsExampleAndProducesItBack) {
  const std::string v = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
  const auto tp = ParseTraceparent(v);
  ASSERT_TRUE(tp.has_value());
  EXPECT_EQ(TraceIdHex(tp->trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
  EXPECT_EQ(tp->parent_span_id, 0x00f067aa0ba902b7ull);
  EXPECT_EQ(tp->flags, 1);
  EXPECT_EQ(FormatTraceparent(tp->trace_id, tp->parent_span_id, tp->flags), v);
  EXPECT_EQ(FormatTraceparent(tp->trace_id, 0xab, 0), "00-4bf92f3577b34da6a3ce929d0e0e4736-00000000000000ab-00");
}

TEST(TraceContextTest, RefusesInvalidTraceparents) {
  for (const char* bad : {
           "",
           "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",        // no flags
           "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",   // v00 with extra
           "00-00000000000000000000000000000000-00f067aa0ba902b7-01",     // zero trace id
           "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",     // zero parent id
           "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",     // uppercase
           "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",     // version ff
           "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",     // separator
           "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",     // not hex
       }) {
    EXPECT_FALSE(ParseTraceparent(bad).has_value()) << bad;
  }
  // A future version may append fields after a '-'.
  EXPECT_TRUE(
      ParseTraceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra").has_value());
  EXPECT_FALSE(
      ParseTraceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01extra").has_value());
}

}  // namespace
}  // namespace pitlane
