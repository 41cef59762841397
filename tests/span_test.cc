// Spans and correlation ids, end to end: what a Span emits arrives at a host handler as
// <op>.start {system_time}, then <op>.stop {duration} or <op>.exception {duration} with
// error_type and error_message.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <map>
#include <set>
#include <stdexcept>
#include <thread>
#include <string>
#include <vector>

#include "pitlane/correlation.h"
#include "pitlane/host.h"
#include "pitlane/span.h"
#include "pitlane/trace_context.h"
#include "pitlane/worker.h"
#include "testing.h"

namespace pitlane {
namespace {

using namespace std::chrono_literals;

struct Got {
  std::string name;
  std::string correlation_id;
  uint64_t span_id = 0, parent_span_id = 0;
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
                        g.span_id = v.span_id;
                        g.parent_span_id = v.parent_span_id;
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

TEST_F(SpanTest, NestedSpansCarryTheirIdsAndTheEnclosingSpanAsParent) {
  const SpanEvents call = ResolveSpan(*worker_, "python.call");
  const SpanEvents tool = ResolveSpan(*worker_, "tool.execution");
  uint64_t outer_id = 0, inner_id = 0, sibling_id = 0;
  EXPECT_EQ(CurrentSpanId(), 0u);
  {
    Span outer(*worker_, call);
    outer_id = outer.span_id();
    EXPECT_EQ(CurrentSpanId(), outer_id);
    {
      Span inner(*worker_, tool);
      inner_id = inner.span_id();
      EXPECT_EQ(inner.parent_span_id(), outer_id);
    }
    EXPECT_EQ(CurrentSpanId(), outer_id);  // restored when the inner span ended
    EXPECT_THROW(WithSpan(*worker_, tool, [&]() -> int {
                   sibling_id = CurrentSpanId();
                   throw std::runtime_error("x");
                 }),
                 std::runtime_error);
  }
  EXPECT_EQ(CurrentSpanId(), 0u);
  Drain();
  ASSERT_EQ(got_.size(), 6u);
  EXPECT_NE(outer_id, 0u);
  EXPECT_NE(inner_id, outer_id);
  EXPECT_NE(sibling_id, inner_id);
  // start/stop of one span share its ids; every child names the outer span.
  EXPECT_EQ(got_[0].span_id, outer_id);
  EXPECT_EQ(got_[0].parent_span_id, 0u);
  EXPECT_EQ(got_[1].span_id, inner_id);
  EXPECT_EQ(got_[1].parent_span_id, outer_id);
  EXPECT_EQ(got_[2].span_id, inner_id);
  EXPECT_EQ(got_[2].parent_span_id, outer_id);
  EXPECT_EQ(got_[3].span_id, sibling_id);
  EXPECT_EQ(got_[4].name, "snakepit.python.tool.execution.exception");
  EXPECT_EQ(got_[4].span_id, sibling_id);
  EXPECT_EQ(got_[4].parent_span_id, outer_id);
  EXPECT_EQ(got_[5].span_id, outer_id);
}

TEST_F(SpanTest, ASpanEventWithAValueCutAtEmitKeepsItsIds) {
  const std::string traceback(5000, 'x');  // over max_value_bytes: the worker cuts it
  const Measurement m[] = {{"duration", int64_t{5}}};
  const Metadata md[] = {{"traceback", traceback}};
  EXPECT_EQ(worker_->EmitSpanEvent(worker_->Event("python.call.exception"), SpanIds{77, 66}, m, md,
                                   "0af7651916cd43dd8448eb211c80319c"),
            EmitResult::kOkTruncated);
  Drain();
  ASSERT_EQ(got_.size(), 1u);
  EXPECT_LT(got_[0].meta.at("traceback").size(), traceback.size());
  EXPECT_EQ(got_[0].span_id, 77u);
  EXPECT_EQ(got_[0].parent_span_id, 66u);
}

TEST_F(SpanTest, SpanWithoutACorrelationIdStartsATraceOf32HexDigits) {
  const SpanEvents call = ResolveSpan(*worker_, "python.call");
  const SpanEvents tool = ResolveSpan(*worker_, "tool.execution");
  {
    Span outer(*worker_, call);
    EXPECT_TRUE(IsTraceIdHex(outer.correlation_id()));
    EXPECT_EQ(CurrentCorrelationId(), outer.correlation_id());
    Span inner(*worker_, tool);
    EXPECT_EQ(inner.correlation_id(), outer.correlation_id());
  }
  EXPECT_EQ(CurrentCorrelationId(), "");
  Drain();
  ASSERT_EQ(got_.size(), 4u);
  for (const Got& g : got_) EXPECT_EQ(g.correlation_id, got_[0].correlation_id);
}

TEST_F(SpanTest, TraceContextScopeContinuesAnIncomingTraceparent) {
  const SpanEvents call = ResolveSpan(*worker_, "python.call");
  std::string outgoing;
  uint64_t span_id = 0;
  {
    TraceContextScope incoming("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
    ASSERT_TRUE(incoming.ok());
    EXPECT_EQ(CurrentTraceparent(), "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
    Span span(*worker_, call);
    span_id = span.span_id();
    outgoing = CurrentTraceparent();
  }
  EXPECT_EQ(CurrentSpanId(), 0u);
  EXPECT_EQ(CurrentCorrelationId(), "");
  EXPECT_EQ(CurrentTraceparent(), "");
  EXPECT_EQ(outgoing, "00-4bf92f3577b34da6a3ce929d0e0e4736-" + SpanIdHex(span_id) + "-01");
  Drain();
  ASSERT_EQ(got_.size(), 2u);
  EXPECT_EQ(got_[0].correlation_id, "4bf92f3577b34da6a3ce929d0e0e4736");
  EXPECT_EQ(got_[0].parent_span_id, 0x00f067aa0ba902b7ull);

  TraceContextScope bad("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01");
  EXPECT_FALSE(bad.ok());
  EXPECT_EQ(CurrentCorrelationId(), "");
}

TEST(SpanIdTest, IdsAreNonZeroAndDistinctAcrossThreads) {
  std::vector<uint64_t> ids[4];
  std::vector<std::thread> threads;
  for (auto& v : ids) {
    threads.emplace_back([&v] {
      for (int i = 0; i < 10000; ++i) v.push_back(NewSpanId());
    });
  }
  for (std::thread& t : threads) t.join();
  std::set<uint64_t> all;
  for (const auto& v : ids) all.insert(v.begin(), v.end());
  EXPECT_EQ(all.size(), 40000u);
  EXPECT_EQ(all.count(0), 0u);
}

TEST(SpanIdTest, AForkedChildDoesNotRepeatItsParentsIds) {
  (void)NewSpanId();  // the parent thread's generator is seeded before the fork
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    uint64_t ids[100];
    for (uint64_t& id : ids) id = NewSpanId();
    const ssize_t n = write(fds[1], ids, sizeof ids);
    _exit(n == static_cast<ssize_t>(sizeof ids) ? 0 : 1);
  }
  close(fds[1]);
  uint64_t child[100];
  size_t got = 0;
  while (got < sizeof child) {
    const ssize_t n = read(fds[0], reinterpret_cast<char*>(child) + got, sizeof child - got);
    if (n <= 0) break;
    got += static_cast<size_t>(n);
  }
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_EQ(got, sizeof child);
  std::set<uint64_t> parent;
  for (int i = 0; i < 100; ++i) parent.insert(NewSpanId());
  for (uint64_t id : child) EXPECT_EQ(parent.count(id), 0u) << "the child repeated an id";
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
