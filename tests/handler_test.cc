// Host handlers: attach / attach_many / detach / list, unknown event names, and a handler that
// throws (detached and reported while the others and the host keep going).
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "pitlane/host.h"
#include "pitlane/worker.h"
#include "testing.h"

namespace pitlane {
namespace {

using namespace std::chrono_literals;

constexpr const char* kWorkerId = "handler-worker";

class HandlerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    host_ = testing::StartHost(ns_.name(),
                               [this](std::string_view line) { log_.emplace_back(line); });
    ASSERT_NE(host_, nullptr);
    worker_ = testing::StartWorker(ns_.name(), kWorkerId);
    ASSERT_NE(worker_, nullptr);
  }

  void TearDown() override {
    if (!host_) return;
    host_->Stop();
    worker_.reset();
    ASSERT_TRUE(host_->DrainAll(5s));
    for (const RingStats& r : host_->Rings()) EXPECT_TRUE(r.Conserved()) << r.segment;
  }

  void EmitAndDrain(std::string_view name, int n = 1) {
    for (int i = 0; i < n; ++i) ASSERT_EQ(worker_->Emit(name), EmitResult::kOk);
    ASSERT_TRUE(host_->DrainAll(5s));
  }

  static std::vector<std::string> Ids(const std::vector<HandlerInfo>& hs) {
    std::vector<std::string> ids;
    for (const HandlerInfo& h : hs) ids.push_back(h.id);
    std::sort(ids.begin(), ids.end());
    return ids;
  }

  testing::ScopedNamespace ns_;
  std::unique_ptr<Host> host_;
  std::unique_ptr<Worker> worker_;
  std::vector<std::string> log_;
};

TEST_F(HandlerTest, AttachAttachManyDetachAndList) {
  int a = 0, b = 0, all = 0;
  std::vector<std::string> b_names;
  ASSERT_TRUE(host_->Attach("a", "snakepit.python.call.stop", [&](const EventView&) { ++a; }).ok());
  ASSERT_TRUE(host_
                  ->AttachMany("b", {"snakepit.python.call.start", "snakepit.python.call.stop"},
                               [&](const EventView& v) {
                                 ++b;
                                 b_names.emplace_back(v.name());
                               })
                  .ok());
  ASSERT_TRUE(host_->Attach("all", "*", [&](const EventView& v) {
                  if (v.transport != Transport::kHost) ++all;
                }).ok());

  const std::vector<HandlerInfo> listed = host_->Handlers();
  EXPECT_EQ(Ids(listed), (std::vector<std::string>{"a", "all", "b"}));
  for (const HandlerInfo& h : listed) {
    if (h.id == "b") {
      EXPECT_EQ(h.events, (std::vector<std::string>{"snakepit.python.call.start",
                                                    "snakepit.python.call.stop"}));
    }
    if (h.id == "a") {
      EXPECT_EQ(h.events, std::vector<std::string>{"snakepit.python.call.stop"});
    }
  }

  EmitAndDrain("python.call.start");
  EmitAndDrain("python.call.stop");
  EmitAndDrain("tool.execution.start");
  EXPECT_EQ(a, 1);
  EXPECT_EQ(b, 2);
  EXPECT_EQ(b_names, (std::vector<std::string>{"snakepit.python.call.start",
                                               "snakepit.python.call.stop"}));
  EXPECT_EQ(all, 3);

  EXPECT_TRUE(host_->Detach("b"));
  EXPECT_FALSE(host_->Detach("b"));
  EXPECT_FALSE(host_->Detach("never-attached"));
  EXPECT_EQ(Ids(host_->Handlers()), (std::vector<std::string>{"a", "all"}));
  EmitAndDrain("python.call.stop");
  EXPECT_EQ(a, 2);
  EXPECT_EQ(b, 2);
  EXPECT_EQ(all, 4);

  // The id is free again after a detach.
  EXPECT_TRUE(host_->Attach("b", "snakepit.python.call.start", [&](const EventView&) { ++b; }).ok());
  EmitAndDrain("python.call.start");
  EXPECT_EQ(b, 3);
}

TEST_F(HandlerTest, AttachingAnUnknownEventNameIsNotFound) {
  const auto noop = [](const EventView&) {};
  for (const char* name : {"python.call.stop", "snakepit.python.call.nope", "Snakepit.python.call.stop",
                           "snakepit.*", ""}) {
    const Status s = host_->Attach("h", name, noop);
    EXPECT_EQ(s.code(), StatusCode::kNotFound) << name << ": " << s.ToString();
    EXPECT_NE(s.message().find(name), std::string::npos) << s.message();
  }
  // One bad name in a list attaches nothing.
  const Status many =
      host_->AttachMany("h", {"snakepit.python.call.stop", "snakepit.no.such.event"}, noop);
  EXPECT_EQ(many.code(), StatusCode::kNotFound);
  EXPECT_TRUE(host_->Handlers().empty());

  // Host-side events of the catalog can be attached to.
  EXPECT_TRUE(host_->Attach("term", "snakepit.pool.worker.terminated", noop).ok());
  EXPECT_TRUE(host_->Attach("grpc", "snakepit.grpc.call.start", noop).ok());
  // Other misuse.
  EXPECT_EQ(host_->Attach("term", "snakepit.python.call.stop", noop).code(),
            StatusCode::kAlreadyExists);
  EXPECT_EQ(host_->Attach("", "snakepit.python.call.stop", noop).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(host_->Attach("null", "snakepit.python.call.stop", Handler()).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(host_->AttachMany("none", {}, noop).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(Ids(host_->Handlers()), (std::vector<std::string>{"grpc", "term"}));
}

TEST_F(HandlerTest, AThrowingHandlerIsDetachedAndReportedWhileOthersKeepReceiving) {
  int bad_calls = 0, odd_calls = 0, before = 0, after = 0;
  ASSERT_TRUE(host_->Attach("before", "*", [&](const EventView& v) {
                  if (v.transport != Transport::kHost) ++before;
                }).ok());
  ASSERT_TRUE(host_->Attach("bad", "snakepit.python.call.stop", [&](const EventView&) {
                  ++bad_calls;
                  throw std::runtime_error("boom");
                }).ok());
  ASSERT_TRUE(host_->Attach("odd", "snakepit.python.call.stop", [&](const EventView&) {
                  ++odd_calls;
                  throw 42;
                }).ok());
  ASSERT_TRUE(host_->Attach("after", "*", [&](const EventView& v) {
                  if (v.transport != Transport::kHost) ++after;
                }).ok());

  // Several events in one drain pass: the throwing handlers see only the first.
  EmitAndDrain("python.call.stop", 5);
  EXPECT_EQ(bad_calls, 1);
  EXPECT_EQ(odd_calls, 1);
  EXPECT_EQ(before, 5);
  EXPECT_EQ(after, 5);

  std::vector<std::string> detached = host_->DetachedHandlers();
  std::sort(detached.begin(), detached.end());
  EXPECT_EQ(detached, (std::vector<std::string>{"bad: boom", "odd: unknown exception"}));
  EXPECT_EQ(host_->Stats().handler_errors, 2u);
  EXPECT_EQ(Ids(host_->Handlers()), (std::vector<std::string>{"after", "before"}));
  const bool logged = std::any_of(log_.begin(), log_.end(), [](const std::string& l) {
    return l.find("bad") != std::string::npos && l.find("boom") != std::string::npos;
  });
  EXPECT_TRUE(logged);

  // The host keeps going.
  EmitAndDrain("python.call.stop", 3);
  EmitAndDrain("python.call.start", 2);
  EXPECT_EQ(bad_calls, 1);
  EXPECT_EQ(odd_calls, 1);
  EXPECT_EQ(before, 10);
  EXPECT_EQ(after, 10);
  EXPECT_EQ(host_->Stats().handler_errors, 2u);
  EXPECT_EQ(host_->Stats().delivered, 10u);

  // The id may be attached again.
  EXPECT_TRUE(host_->Attach("bad", "snakepit.python.call.stop", [&](const EventView&) {
                  ++bad_calls;
                }).ok());
  EmitAndDrain("python.call.stop");
  EXPECT_EQ(bad_calls, 2);
}

TEST_F(HandlerTest, HandlersAttachedWhileTheHostRunsStartReceiving) {
  std::atomic<int> got{0};
  host_->RunInBackground();
  ASSERT_TRUE(host_->Attach("late", "snakepit.python.call.stop", [&](const EventView&) {
                  got.fetch_add(1);
                }).ok());
  const auto deadline = std::chrono::steady_clock::now() + 5s;
  // The attach takes effect at the loop's next pass: keep emitting until one arrives.
  while (got.load() == 0 && std::chrono::steady_clock::now() < deadline) {
    ASSERT_EQ(worker_->Emit("python.call.stop"), EmitResult::kOk);
    std::this_thread::sleep_for(1ms);
  }
  EXPECT_GT(got.load(), 0);
  EXPECT_TRUE(host_->Detach("late"));
}

TEST_F(HandlerTest, InfrastructureHandlerSeesTheWorkerTerminatedOnce) {
  std::vector<std::string> ids;
  ASSERT_TRUE(host_->Attach("term", "snakepit.pool.worker.terminated", [&](const EventView& v) {
                  ids.emplace_back(v.worker_id);
                  EXPECT_EQ(v.transport, Transport::kHost);
                }).ok());
  EmitAndDrain("python.call.stop");
  worker_.reset();
  ASSERT_TRUE(host_->DrainAll(5s));
  EXPECT_EQ(ids, std::vector<std::string>{kWorkerId});
}

}  // namespace
}  // namespace pitlane
