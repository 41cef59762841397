// Spans and correlation ids, end to end: what a Span emits arrives at a host handler as
// <op>.start {system_time}, then <op>.stop {duration} or <op>.exception {duration} with
// error_type and error_message.
#include <gtest/gtest.h>

#include <chrono>
#include <map>
#include <stdexcept>
#include <thread>
#include <string>
#include <vector>

#include "pitlane/correlation.h"
#include "pitlane/host.h"
#include "pitlane/span.h"
#include "pitlane/worker.h"
#include "testing.h"

namespace pitlane {
namespace {

using namespace std::chrono_literals;

struct Got {
  std::string name;
  std::string correlation_id;
  std::map<std::string, std::string> meta;
  std::map<std::string, int64_t> ints;
};

class SpanTest : public ::testing::Test {
 protected:
  void SetUp() override {
    host_ = testing::StartHost(ns_.name());
    ASSERT_NE(host_, nullptr);
    ASSERT_TRUE(host_->Attach("collect", "*", [this](const EventView& v) {
                        Got g;
                        g.name = std::string(v.name());
                        g.correlation_id = std::string(v.correlation_id);
                        for (const MetadataView& m : v.metadata) {
                          g.meta[std::string(m.key)] = std::string(m.value);
                        }
                        for (const MeasurementView& m : v.measurements) {
                          if (m.value.kind == Value::Kind::kInt) g.ints[std::string(m.key)] = m.value.i;
                        }
                        got_.push_back(std::move(g));
                      }).ok());
    worker_ = testing::StartWorker(ns_.name(), "span-worker");
    ASSERT_NE(worker_, nullptr);
  }

  void Drain() {
    for (int i = 0; i < 20; ++i) host_->PollOnce();
  }

  testing::ScopedNamespace ns_;
  std::vector<Got> got_;
  std::unique_ptr<Host> host_;
  std::unique_ptr<Worker> worker_;
};

TEST_F(SpanTest, SuccessfulSpanEmitsStartThenStopWithDuration) {
  const SpanEvents call = ResolveSpan(*worker_, "python.call");
  {
    Span span(*worker_, call, {{"command", "predict"}});
  }
  Drain();
  ASSERT_EQ(got_.size(), 2u);
  EXPECT_EQ(got_[0].name, "snakepit.python.call.start");
  EXPECT_GT(got_[0].ints.at("system_time"), 0);
  EXPECT_EQ(got_[1].name, "snakepit.python.call.stop");
  EXPECT_GE(got_[1].ints.at("duration"), 0);
  EXPECT_EQ(got_[1].meta.at("command"), "predict");  // the stop carries the span's metadata
}

TEST_F(SpanTest, WithSpanRecordsExceptionTypeAndMessageThenRethrows) {
  const SpanEvents tool = ResolveSpan(*worker_, "tool.execution");
  EXPECT_THROW(WithSpan(*worker_, tool, [] { throw std::invalid_argument("bad input"); },
                        {{"tool", "grep"}}),
               std::invalid_argument);
  Drain();
  ASSERT_EQ(got_.size(), 2u);
  EXPECT_EQ(got_[0].name, "snakepit.python.tool.execution.start");
  EXPECT_EQ(got_[1].name, "snakepit.python.tool.execution.exception");
  EXPECT_EQ(got_[1].meta.at("error_type"), "std::invalid_argument");
  EXPECT_EQ(got_[1].meta.at("error_message"), "bad input");
  EXPECT_EQ(got_[1].meta.at("tool"), "grep");
  EXPECT_GE(got_[1].ints.at("duration"), 0);
}

TEST_F(SpanTest, WithSpanReturnsTheValueOnSuccess) {
  const SpanEvents call = ResolveSpan(*worker_, "python.call");
  EXPECT_EQ(WithSpan(*worker_, call, [] { return 41 + 1; }), 42);
  Drain();
  ASSERT_EQ(got_.size(), 2u);
  EXPECT_EQ(got_[1].name, "snakepit.python.call.stop");
}

TEST_F(SpanTest, SpanDestroyedByUnwindingEmitsExceptionEvent) {
  const SpanEvents call = ResolveSpan(*worker_, "python.call");
  try {
    Span span(*worker_, call);
    throw std::runtime_error("boom");
  } catch (const std::runtime_error&) {
  }
  Drain();
  ASSERT_EQ(got_.size(), 2u);
  EXPECT_EQ(got_[1].name, "snakepit.python.call.exception");
  EXPECT_EQ(got_[1].meta.at("error_type"), "unwound");
}

TEST_F(SpanTest, FailMakesTheSpanEndWithTheExceptionEvent) {
  const SpanEvents call = ResolveSpan(*worker_, "python.call");
  {
    Span span(*worker_, call);
    span.Fail("TimeoutError", "took too long");
  }
  Drain();
  ASSERT_EQ(got_.size(), 2u);
  EXPECT_EQ(got_[1].name, "snakepit.python.call.exception");
  EXPECT_EQ(got_[1].meta.at("error_type"), "TimeoutError");
  EXPECT_EQ(got_[1].meta.at("error_message"), "took too long");
}

TEST_F(SpanTest, NestedSpansPickUpTheScopedCorrelationId) {
  const SpanEvents call = ResolveSpan(*worker_, "python.call");
  const SpanEvents tool = ResolveSpan(*worker_, "tool.execution");
  const std::string id = NewCorrelationId();
  {
    CorrelationScope scope(id);
    Span outer(*worker_, call);
    { Span inner(*worker_, tool); }
  }
  (void)worker_->Emit("python.call.start");  // after the scope: no id
  Drain();
  ASSERT_EQ(got_.size(), 5u);
  const std::vector<std::string> order = {
      "snakepit.python.call.start", "snakepit.python.tool.execution.start",
      "snakepit.python.tool.execution.stop", "snakepit.python.call.stop"};
  for (size_t i = 0; i < order.size(); ++i) {
    EXPECT_EQ(got_[i].name, order[i]);
    EXPECT_EQ(got_[i].correlation_id, id);
    EXPECT_EQ(got_[i].meta.at("correlation_id"), id);
  }
  EXPECT_EQ(got_[4].correlation_id, "");
  EXPECT_EQ(got_[4].meta.count("correlation_id"), 0u);
}

TEST(CorrelationTest, ScopesRestoreThePreviousIdInReverseOrder) {
  EXPECT_EQ(CurrentCorrelationId(), "");
  {
    CorrelationScope a("a");
    EXPECT_EQ(CurrentCorrelationId(), "a");
    {
      CorrelationScope b("b");
      EXPECT_EQ(CurrentCorrelationId(), "b");
    }
    EXPECT_EQ(CurrentCorrelationId(), "a");
  }
  EXPECT_EQ(CurrentCorrelationId(), "");
}

TEST(CorrelationTest, TokenApiSetsAndResets) {
  const CorrelationToken t1 = SetCorrelationId("outer");
  const CorrelationToken t2 = SetCorrelationId("inner");
  EXPECT_EQ(CurrentCorrelationId(), "inner");
  ResetCorrelationId(t2);
  EXPECT_EQ(CurrentCorrelationId(), "outer");
  ResetCorrelationId(t1);
  EXPECT_EQ(CurrentCorrelationId(), "");
}

TEST(CorrelationTest, IdsAreThreadLocal) {
  CorrelationScope scope("main-thread");
  std::string seen = "unset";
  std::thread([&] { seen = std::string(CurrentCorrelationId()); }).join();
  EXPECT_EQ(seen, "");
  EXPECT_EQ(CurrentCorrelationId(), "main-thread");
}

TEST(CorrelationTest, NewIdsAreDistinctAndShaped) {
  const std::string a = NewCorrelationId(), b = NewCorrelationId();
  EXPECT_NE(a, b);
  EXPECT_EQ(a.size(), 27u);
  EXPECT_EQ(a.rfind("pl-", 0), 0u);
}

}  // namespace
}  // namespace pitlane
