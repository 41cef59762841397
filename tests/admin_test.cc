// The host's admin gRPC service (pitlane/admin.h): an in-process Host with real workers, an
// AdminServer on a unix socket (or TCP) and a gRPC client. Control updates reach the workers'
// gates; unknown workers are NOT_FOUND naming the id; bad values are INVALID_ARGUMENT with the
// host's message and change nothing; the socket is 0600, a stale one is replaced and a live one
// refused.
#include "pitlane/admin.h"

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <limits>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "admin.grpc.pb.h"
#include "pitlane/grpc_common.h"
#include "testing.h"

namespace pitlane {
namespace {

namespace v1 = ::pitlane::v1;
using namespace std::chrono_literals;

std::string PathOf(const std::string& unix_address) { return unix_address.substr(5); }

bool Exists(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0;
}

// A socket file at `path` that nobody serves (bound, then closed): what a SIGKILLed host leaves.
void MakeStaleSocket(const std::string& path) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  std::strncpy(sa.sun_path, path.c_str(), sizeof(sa.sun_path) - 1);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)), 0) << std::strerror(errno);
  ::close(fd);
  ASSERT_TRUE(Exists(path));
}

// The admin message carries every count of a Tally, both ways, with no field left behind; a
// rejection reason this build does not know is left out rather than misfiled.
TEST(AdminCountersTest, EveryTallyCountSurvivesTheAdminMessage) {
  Tally t;
  uint64_t next = 1;
  for (uint64_t* f : {&t.emitted, &t.published, &t.dropped_full, &t.dropped_too_large,
                      &t.dropped_no_ring, &t.dropped_in_flight, &t.suppressed_disabled,
                      &t.suppressed_sampled, &t.suppressed_filtered, &t.delivered,
                      &t.truncated}) {
    *f = next++;
  }
  for (uint64_t& r : t.rejected) r = next++;
  v1::AdminWorkerCounters msg;
  internal::TallyToAdmin(t, &msg);
  EXPECT_EQ(msg.rejected(), t.rejected_total());
  EXPECT_EQ(msg.rejected_by_reason_size(), static_cast<int>(shm::kRejectReasonCount));
  (*msg.mutable_rejected_by_reason())["a_reason_from_a_newer_host"] = 999;
  const Tally back = internal::TallyFromAdmin(msg);
  EXPECT_EQ(std::memcmp(&back, &t, sizeof(Tally)), 0);
}

class AdminTest : public ::testing::Test {
 protected:
  void SetUp() override {
    host_ = testing::StartHost(ns_.name());
    ASSERT_NE(host_, nullptr);
    host_->RunInBackground();
    Result<std::unique_ptr<AdminServer>> s = AdminServer::Start(*host_, Address());
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    server_ = std::move(s).value();
    admin_ = Connect(server_->address());
  }

  std::string Address() const { return DefaultAdminAddress(ns_.name()); }

  static std::unique_ptr<v1::Admin::Stub> Connect(const std::string& address) {
    return v1::Admin::NewStub(grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
  }

  // A worker the host has listed (so control updates find it).
  Worker* AddWorker(const std::string& id) {
    workers_.push_back(testing::StartWorker(ns_.name(), id));
    Worker* w = workers_.back().get();
    EXPECT_NE(w, nullptr);
    const auto deadline = std::chrono::steady_clock::now() + 5s;
    while (std::chrono::steady_clock::now() < deadline) {
      for (const WorkerInfo& i : host_->Workers()) {
        if (i.id == id) return w;
      }
      std::this_thread::sleep_for(2ms);
    }
    ADD_FAILURE() << "host never listed worker " << id;
    return w;
  }

  static std::unique_ptr<grpc::ClientContext> Ctx() {
    auto c = std::make_unique<grpc::ClientContext>();
    c->set_deadline(std::chrono::system_clock::now() + 5s);
    return c;
  }

  static grpc::Status ToggleVia(v1::Admin::Stub& admin, const std::string& id, bool on,
                                v1::AdminControlReply* reply = nullptr) {
    v1::SetToggleRequest req;
    req.set_worker_id(id);
    req.set_enabled(on);
    v1::AdminControlReply local;
    return admin.SetToggle(Ctx().get(), req, reply ? reply : &local);
  }
  grpc::Status Toggle(const std::string& id, bool on, v1::AdminControlReply* reply = nullptr) {
    return ToggleVia(*admin_, id, on, reply);
  }
  grpc::Status Sampling(const std::string& id, double rate, std::vector<std::string> patterns,
                        v1::AdminControlReply* reply = nullptr) {
    v1::SetSamplingRequest req;
    req.set_worker_id(id);
    req.set_sampling_rate(rate);
    for (const std::string& p : patterns) req.add_event_patterns(p);
    v1::AdminControlReply local;
    return admin_->SetSampling(Ctx().get(), req, reply ? reply : &local);
  }
  grpc::Status Filter(const std::string& id, std::vector<std::string> allow,
                      std::vector<std::string> deny, v1::AdminControlReply* reply = nullptr) {
    v1::SetFilterRequest req;
    req.set_worker_id(id);
    for (const std::string& p : allow) req.add_allow(p);
    for (const std::string& p : deny) req.add_deny(p);
    v1::AdminControlReply local;
    return admin_->SetFilter(Ctx().get(), req, reply ? reply : &local);
  }
  grpc::Status Get(const std::string& id, v1::AdminControlReply* reply) {
    v1::GetControlRequest req;
    req.set_worker_id(id);
    return admin_->GetControl(Ctx().get(), req, reply);
  }
  v1::ListWorkersReply List() {
    v1::ListWorkersReply reply;
    const grpc::Status s = admin_->ListWorkers(Ctx().get(), v1::ListWorkersRequest(), &reply);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return reply;
  }
  ControlState HostControl(const std::string& id) const {
    Result<ControlState> c = host_->Control(id);
    EXPECT_TRUE(c.ok()) << c.status().ToString();
    return c.ok() ? c.value() : ControlState();
  }

  testing::ScopedNamespace ns_;
  std::unique_ptr<Host> host_;
  std::unique_ptr<AdminServer> server_;
  std::unique_ptr<v1::Admin::Stub> admin_;
  std::vector<std::unique_ptr<Worker>> workers_;
};

void ExpectStatus(const grpc::Status& s, grpc::StatusCode code, const std::string& text) {
  EXPECT_EQ(s.error_code(), code) << s.error_message();
  EXPECT_NE(s.error_message().find(text), std::string::npos)
      << "message: " << s.error_message() << "\nexpected to contain: " << text;
}

// ─── control updates ─────────────────────────────────────────────────────────────────────────

TEST_F(AdminTest, ToggleOffReachesTheWorkersGate) {
  Worker* w = AddWorker("adm-w1");
  ASSERT_EQ(w->Emit("python.call.stop", {{"duration", int64_t{5}}}), EmitResult::kOk);
  v1::AdminControlReply reply;
  ASSERT_TRUE(Toggle("adm-w1", false, &reply).ok());
  ASSERT_EQ(reply.workers_size(), 1);
  EXPECT_EQ(reply.workers(0).worker_id(), "adm-w1");
  EXPECT_FALSE(reply.workers(0).control().enabled());
  EXPECT_FALSE(HostControl("adm-w1").enabled);
  EXPECT_EQ(w->Emit("python.call.stop", {{"duration", int64_t{5}}}),
            EmitResult::kSuppressedDisabled);
  ASSERT_TRUE(Toggle("adm-w1", true).ok());
  EXPECT_EQ(w->Emit("python.call.stop", {{"duration", int64_t{5}}}), EmitResult::kOk);
}

TEST_F(AdminTest, SamplingReplacesRateAndPatternsAndReachesTheGate) {
  Worker* w = AddWorker("adm-w1");
  ASSERT_TRUE(Sampling("adm-w1", 0.5, {"python.gc.*", "tool.*"}).ok());
  ControlState c = HostControl("adm-w1");
  EXPECT_EQ(c.sampling_rate, 0.5);
  EXPECT_EQ(c.sampling_patterns, (std::vector<std::string>{"python.gc.*", "tool.*"}));

  v1::AdminControlReply reply;
  ASSERT_TRUE(Sampling("adm-w1", 0.0, {"python.memory.*"}, &reply).ok());
  c = HostControl("adm-w1");
  EXPECT_EQ(c.sampling_rate, 0.0);
  EXPECT_EQ(c.sampling_patterns, std::vector<std::string>{"python.memory.*"});
  ASSERT_EQ(reply.workers_size(), 1);
  EXPECT_EQ(reply.workers(0).control().sampling_rate(), 0.0);
  ASSERT_EQ(reply.workers(0).control().sampling_patterns_size(), 1);
  EXPECT_EQ(reply.workers(0).control().sampling_patterns(0), "python.memory.*");

  EXPECT_EQ(w->Emit("python.memory.sampled", {{"rss_bytes", int64_t{1}}}),
            EmitResult::kSuppressedSampled);
  EXPECT_EQ(w->Emit("python.gc.completed", {{"collected", int64_t{1}}}), EmitResult::kOk);
}

TEST_F(AdminTest, FilterReplacesBothListsAndDenyReachesTheGate) {
  Worker* w = AddWorker("adm-w1");
  ASSERT_TRUE(Filter("adm-w1", {"python.*"}, {"python.cpu.*"}).ok());
  ControlState c = HostControl("adm-w1");
  EXPECT_EQ(c.allow, std::vector<std::string>{"python.*"});
  EXPECT_EQ(c.deny, std::vector<std::string>{"python.cpu.*"});
  EXPECT_EQ(w->Emit("python.cpu.sampled", {{"cpu_percent", 1.5}}), EmitResult::kSuppressedFiltered);
  EXPECT_EQ(w->Emit("python.gc.completed", {{"collected", int64_t{1}}}), EmitResult::kOk);

  ASSERT_TRUE(Filter("adm-w1", {}, {}).ok());  // both lists empty: no filter
  c = HostControl("adm-w1");
  EXPECT_TRUE(c.allow.empty());
  EXPECT_TRUE(c.deny.empty());
  EXPECT_EQ(w->Emit("python.cpu.sampled", {{"cpu_percent", 1.5}}), EmitResult::kOk);
}

TEST_F(AdminTest, GetControlReturnsTheHostsState) {
  AddWorker("adm-w1");
  ASSERT_TRUE(host_->UpdateSampling("adm-w1", 0.25, {"tool.*"}).ok());
  ASSERT_TRUE(host_->UpdateFilter("adm-w1", {}, {"python.gc.*"}).ok());
  ASSERT_TRUE(host_->Toggle("adm-w1", false).ok());
  v1::AdminControlReply reply;
  ASSERT_TRUE(Get("adm-w1", &reply).ok());
  ASSERT_EQ(reply.workers_size(), 1);
  const v1::WorkerControlState& c = reply.workers(0).control();
  EXPECT_FALSE(c.enabled());
  EXPECT_EQ(c.sampling_rate(), 0.25);
  ASSERT_EQ(c.sampling_patterns_size(), 1);
  EXPECT_EQ(c.sampling_patterns(0), "tool.*");
  EXPECT_EQ(c.allow_size(), 0);
  ASSERT_EQ(c.deny_size(), 1);
  EXPECT_EQ(c.deny(0), "python.gc.*");
}

TEST_F(AdminTest, StarSelectsEveryWorker) {
  AddWorker("adm-a");
  AddWorker("adm-b");
  v1::AdminControlReply reply;
  ASSERT_TRUE(Toggle("*", false, &reply).ok());
  ASSERT_EQ(reply.workers_size(), 2);
  EXPECT_FALSE(HostControl("adm-a").enabled);
  EXPECT_FALSE(HostControl("adm-b").enabled);
  ASSERT_TRUE(Sampling("*", 0.75, {}).ok());
  EXPECT_EQ(HostControl("adm-a").sampling_rate, 0.75);
  EXPECT_EQ(HostControl("adm-b").sampling_rate, 0.75);
  v1::AdminControlReply all;
  ASSERT_TRUE(Get("*", &all).ok());
  ASSERT_EQ(all.workers_size(), 2);
  for (const v1::AdminWorkerControl& w : all.workers()) {
    EXPECT_FALSE(w.control().enabled()) << w.worker_id();
    EXPECT_EQ(w.control().sampling_rate(), 0.75) << w.worker_id();
  }
}

// ─── listing ─────────────────────────────────────────────────────────────────────────────────

TEST_F(AdminTest, ListWorkersReportsPidTransportRingsControlAndCounters) {
  Worker* w = AddWorker("adm-w1");
  ASSERT_TRUE(host_->UpdateFilter("adm-w1", {}, {"python.cpu.*"}).ok());
  for (int i = 0; i < 10; ++i) {
    ASSERT_EQ(w->Emit("python.call.stop", {{"duration", int64_t{i}}}), EmitResult::kOk);
  }
  ASSERT_EQ(w->Emit("python.cpu.sampled", {{"cpu_percent", 1.0}}), EmitResult::kSuppressedFiltered);
  ASSERT_EQ(w->Emit("inference.start"), EmitResult::kOk);  // not in the catalog: rejected
  ASSERT_TRUE(host_->DrainAll(10s));

  const v1::ListWorkersReply list = List();
  EXPECT_EQ(list.namespace_(), ns_.name());
  ASSERT_EQ(list.workers_size(), 1);
  const v1::AdminWorker& a = list.workers(0);
  EXPECT_EQ(a.worker_id(), "adm-w1");
  EXPECT_EQ(a.pid(), static_cast<uint32_t>(::getpid()));
  EXPECT_EQ(a.transport(), "shm");
  EXPECT_TRUE(a.alive());
  EXPECT_EQ(a.rings(), 1u);
  EXPECT_TRUE(a.control().enabled());
  ASSERT_EQ(a.control().deny_size(), 1);
  EXPECT_EQ(a.control().deny(0), "python.cpu.*");
  const v1::AdminWorkerCounters& c = a.counters();
  EXPECT_EQ(c.emitted(), 12u);
  EXPECT_EQ(c.published(), 11u);
  EXPECT_EQ(c.delivered(), 10u);
  EXPECT_EQ(c.suppressed_filtered(), 1u);
  EXPECT_EQ(c.rejected(), 1u);
  EXPECT_EQ(c.rejected_by_reason().at(shm::RejectReasonName(shm::kRejectUnknownEvent)), 1u);
  EXPECT_EQ(c.rejected_by_reason().size(), static_cast<size_t>(shm::kRejectReasonCount));
}

TEST_F(AdminTest, ListWorkersWithNoWorkerIsEmpty) {
  const v1::ListWorkersReply list = List();
  EXPECT_EQ(list.namespace_(), ns_.name());
  EXPECT_EQ(list.workers_size(), 0);
}

// ─── unhappy paths: nothing changes ──────────────────────────────────────────────────────────

TEST_F(AdminTest, UnknownWorkerIsNotFoundNamingTheIdOnEveryRpc) {
  AddWorker("adm-w1");
  ExpectStatus(Toggle("no-such-worker", false), grpc::StatusCode::NOT_FOUND, "\"no-such-worker\"");
  ExpectStatus(Sampling("no-such-worker", 0.5, {}), grpc::StatusCode::NOT_FOUND,
               "\"no-such-worker\"");
  ExpectStatus(Filter("no-such-worker", {}, {"python.*"}), grpc::StatusCode::NOT_FOUND,
               "\"no-such-worker\"");
  v1::AdminControlReply reply;
  ExpectStatus(Get("no-such-worker", &reply), grpc::StatusCode::NOT_FOUND, "\"no-such-worker\"");
  EXPECT_EQ(HostControl("adm-w1"), ControlState());
}

TEST_F(AdminTest, RateOutsideUnitIntervalOrNanIsInvalidArgumentAndChangesNothing) {
  AddWorker("adm-w1");
  ASSERT_TRUE(Sampling("adm-w1", 0.5, {"tool.*"}).ok());
  const ControlState before = HostControl("adm-w1");
  ExpectStatus(Sampling("adm-w1", 1.5, {}), grpc::StatusCode::INVALID_ARGUMENT,
               "sampling rate 1.5 is outside [0, 1]");
  ExpectStatus(Sampling("adm-w1", -0.1, {}), grpc::StatusCode::INVALID_ARGUMENT,
               "sampling rate -0.1 is outside [0, 1]");
  ExpectStatus(Sampling("adm-w1", std::numeric_limits<double>::quiet_NaN(), {}),
               grpc::StatusCode::INVALID_ARGUMENT, "NaN");
  ExpectStatus(Sampling("adm-w1", std::numeric_limits<double>::infinity(), {}),
               grpc::StatusCode::INVALID_ARGUMENT, "outside [0, 1]");
  EXPECT_EQ(HostControl("adm-w1"), before);
}

TEST_F(AdminTest, EmptyMalformedOrTooManyPatternsAreInvalidArgumentAndChangeNothing) {
  AddWorker("adm-w1");
  ASSERT_TRUE(Filter("adm-w1", {"python.*"}, {}).ok());
  const ControlState before = HostControl("adm-w1");
  ExpectStatus(Sampling("adm-w1", 0.5, {""}), grpc::StatusCode::INVALID_ARGUMENT,
               "sampling_patterns[0]");
  ExpectStatus(Filter("adm-w1", {"python.[call"}, {}), grpc::StatusCode::INVALID_ARGUMENT,
               "python.[call");
  ExpectStatus(Filter("adm-w1", {}, {"tool.*", "bad pattern"}), grpc::StatusCode::INVALID_ARGUMENT,
               "deny[1]");
  std::vector<std::string> many;
  for (size_t i = 0; i <= kMaxPatternsPerList; ++i) many.push_back("e" + std::to_string(i));
  EXPECT_EQ(Filter("adm-w1", many, {}).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(HostControl("adm-w1"), before);
}

TEST_F(AdminTest, MissingRequiredFieldsAreInvalidArgument) {
  AddWorker("adm-w1");
  v1::AdminControlReply reply;
  v1::SetToggleRequest toggle;
  toggle.set_worker_id("adm-w1");
  ExpectStatus(admin_->SetToggle(Ctx().get(), toggle, &reply), grpc::StatusCode::INVALID_ARGUMENT,
               "enabled");
  v1::SetSamplingRequest sampling;
  sampling.set_worker_id("adm-w1");
  sampling.add_event_patterns("tool.*");
  ExpectStatus(admin_->SetSampling(Ctx().get(), sampling, &reply),
               grpc::StatusCode::INVALID_ARGUMENT, "sampling_rate");
  ExpectStatus(Toggle("", false), grpc::StatusCode::INVALID_ARGUMENT, "worker_id is empty");
  EXPECT_EQ(HostControl("adm-w1"), ControlState());
}

TEST_F(AdminTest, StarWithABadValueChangesNoWorker) {
  AddWorker("adm-a");
  AddWorker("adm-b");
  ExpectStatus(Sampling("*", 2.0, {}), grpc::StatusCode::INVALID_ARGUMENT,
               "sampling rate 2 is outside [0, 1]");
  ExpectStatus(Filter("*", {"["}, {}), grpc::StatusCode::INVALID_ARGUMENT, "allow[0]");
  EXPECT_EQ(HostControl("adm-a"), ControlState());
  EXPECT_EQ(HostControl("adm-b"), ControlState());
}

TEST_F(AdminTest, StarWithNoWorkerIsNotFound) {
  ExpectStatus(Toggle("*", false), grpc::StatusCode::NOT_FOUND, ns_.name());
  v1::AdminControlReply reply;
  ExpectStatus(Get("*", &reply), grpc::StatusCode::NOT_FOUND, "no worker has attached");
}

// ─── the socket ──────────────────────────────────────────────────────────────────────────────

TEST_F(AdminTest, DefaultAddressIsAPerNamespaceSocketCreated0600) {
  EXPECT_EQ(server_->address(), "unix:/tmp/pitlane." + ns_.name() + ".admin.sock");
  EXPECT_EQ(server_->port(), 0);
  struct stat st {};
  ASSERT_EQ(::lstat(PathOf(server_->address()).c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0600u);
}

TEST_F(AdminTest, SocketIs0600WhateverTheUmask) {
  server_.reset();
  const mode_t old = ::umask(0);
  Result<std::unique_ptr<AdminServer>> s = AdminServer::Start(*host_, Address());
  ::umask(old);
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  struct stat st {};
  ASSERT_EQ(::lstat(PathOf(Address()).c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
}

TEST_F(AdminTest, SecondServerOnALiveSocketIsRefusedAndTheFirstKeepsServing) {
  AddWorker("adm-w1");
  Result<std::unique_ptr<AdminServer>> second = AdminServer::Start(*host_, Address());
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), StatusCode::kAlreadyExists);
  EXPECT_NE(second.status().message().find(PathOf(Address())), std::string::npos)
      << second.status().message();
  EXPECT_TRUE(Toggle("adm-w1", false).ok());
}

TEST_F(AdminTest, StaleSocketOfADeadServerIsReplaced) {
  server_.reset();
  const std::string path = PathOf(Address());
  ASSERT_FALSE(Exists(path));
  MakeStaleSocket(path);
  Result<std::unique_ptr<AdminServer>> s = AdminServer::Start(*host_, Address());
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  AddWorker("adm-w1");
  EXPECT_TRUE(ToggleVia(*Connect(Address()), "adm-w1", false).ok());
  EXPECT_FALSE(HostControl("adm-w1").enabled);
}

TEST_F(AdminTest, SomethingOtherThanASocketAtThePathIsRefusedAndKept) {
  server_.reset();
  const std::string path = PathOf(Address());
  { std::ofstream(path) << "not a socket"; }
  Result<std::unique_ptr<AdminServer>> s = AdminServer::Start(*host_, Address());
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(s.status().message().find("is not a socket"), std::string::npos)
      << s.status().message();
  EXPECT_TRUE(Exists(path));
  ::unlink(path.c_str());
}

TEST_F(AdminTest, CleanupKeepsTheServedSocketAndRemovesOneNobodyServes) {
  const std::string path = PathOf(Address());
  std::vector<shm::CleanupStep> steps = CleanStaleAdminSockets(ns_.name(), /*dry_run=*/false);
  ASSERT_EQ(steps.size(), 1u);
  EXPECT_EQ(steps[0].name, path);
  EXPECT_EQ(steps[0].outcome, shm::CleanupOutcome::kKept);
  EXPECT_EQ(steps[0].why, "a live host serves it");
  EXPECT_TRUE(Exists(path));

  server_.reset();
  MakeStaleSocket(path);
  steps = CleanStaleAdminSockets(ns_.name(), /*dry_run=*/true);
  ASSERT_EQ(steps.size(), 1u);
  EXPECT_EQ(steps[0].outcome, shm::CleanupOutcome::kWouldRemove);
  EXPECT_TRUE(Exists(path));
  steps = CleanStaleAdminSockets(ns_.name(), /*dry_run=*/false);
  ASSERT_EQ(steps.size(), 1u);
  EXPECT_EQ(steps[0].outcome, shm::CleanupOutcome::kRemoved);
  EXPECT_FALSE(Exists(path));
  EXPECT_TRUE(CleanStaleAdminSockets(ns_.name(), false).empty());
}

TEST_F(AdminTest, CleanupKeepsAFileThatIsNotASocketSayingSo) {
  server_.reset();
  const std::string path = PathOf(Address());
  { std::ofstream(path) << "not a socket"; }
  const std::vector<shm::CleanupStep> steps = CleanStaleAdminSockets(ns_.name(), false);
  ASSERT_EQ(steps.size(), 1u);
  EXPECT_EQ(steps[0].outcome, shm::CleanupOutcome::kKept);
  EXPECT_NE(steps[0].why.find("is not a socket"), std::string::npos) << steps[0].why;
  EXPECT_TRUE(Exists(path));
  ::unlink(path.c_str());
}

TEST_F(AdminTest, CleanupOfEveryNamespaceFindsThisNamespacesStaleSocket) {
  server_.reset();
  const std::string path = PathOf(Address());
  MakeStaleSocket(path);
  const std::vector<shm::CleanupStep> steps = CleanStaleAdminSockets("", /*dry_run=*/true);
  bool found = false;
  for (const shm::CleanupStep& s : steps) {
    if (s.name != path) continue;
    found = true;
    EXPECT_EQ(s.outcome, shm::CleanupOutcome::kWouldRemove);
  }
  EXPECT_TRUE(found);
  ::unlink(path.c_str());
}

TEST_F(AdminTest, StopRemovesTheSocketAndCallsThenFailUnavailable) {
  const std::string path = PathOf(server_->address());
  ASSERT_TRUE(Exists(path));
  server_->Stop();
  server_->Stop();  // idempotent
  EXPECT_FALSE(Exists(path));
  v1::ListWorkersReply reply;
  EXPECT_EQ(admin_->ListWorkers(Ctx().get(), v1::ListWorkersRequest(), &reply).error_code(),
            grpc::StatusCode::UNAVAILABLE);
}

TEST_F(AdminTest, StopLeavesASocketThatIsNoLongerItsOwn) {
  const std::string path = PathOf(server_->address());
  ASSERT_EQ(::unlink(path.c_str()), 0);
  MakeStaleSocket(path);  // someone else's file now
  server_->Stop();
  EXPECT_TRUE(Exists(path));
  ::unlink(path.c_str());
}

TEST_F(AdminTest, TcpPortZeroServesOnThePortTheKernelChose) {
  Result<std::unique_ptr<AdminServer>> s = AdminServer::Start(*host_, "127.0.0.1:0");
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  ASSERT_GT((*s)->port(), 0);
  EXPECT_EQ((*s)->address(), "127.0.0.1:" + std::to_string((*s)->port()));
  AddWorker("adm-w1");
  ASSERT_TRUE(ToggleVia(*Connect((*s)->address()), "adm-w1", false).ok());
  EXPECT_FALSE(HostControl("adm-w1").enabled);
}

TEST_F(AdminTest, ListExportersReportsWhatTheOwnerPassesInOrderAndNothingWithoutIt) {
  {
    v1::ListExportersReply reply;
    ASSERT_TRUE(admin_->ListExporters(Ctx().get(), {}, &reply).ok());
    EXPECT_EQ(reply.exporters_size(), 0);
  }
  uint64_t exported = 7;
  Result<std::unique_ptr<AdminServer>> s = AdminServer::Start(*host_, "127.0.0.1:0", [&] {
    return std::vector<ExporterReport>{
        {"otlp", "grpc http://collector:4317", {{"spans_exported", exported}, {"retries", 2}}}};
  });
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  auto admin = Connect((*s)->address());
  for (const uint64_t want : {7, 9}) {
    exported = want;  // read at each call, not at start
    v1::ListExportersReply reply;
    ASSERT_TRUE(admin->ListExporters(Ctx().get(), {}, &reply).ok());
    ASSERT_EQ(reply.exporters_size(), 1);
    const v1::AdminExporter& e = reply.exporters(0);
    EXPECT_EQ(e.name(), "otlp");
    EXPECT_EQ(e.target(), "grpc http://collector:4317");
    ASSERT_EQ(e.counts_size(), 2);
    EXPECT_EQ(e.counts(0).name(), "spans_exported");
    EXPECT_EQ(e.counts(0).value(), want);
    EXPECT_EQ(e.counts(1).name(), "retries");
    EXPECT_EQ(e.counts(1).value(), 2u);
  }
}

// A tool's reading of the exporters is what the owner passed the server, and a host that does
// not answer is UNAVAILABLE, not an empty list.
TEST_F(AdminTest, AdminReaderReadsTheExportersBackAndSaysWhenNothingAnswers) {
  Result<std::unique_ptr<AdminServer>> s = AdminServer::Start(*host_, "127.0.0.1:0", [] {
    return std::vector<ExporterReport>{
        {"otlp", "grpc http://collector:4317", {{"spans_exported", 7}, {"retries", 2}}}};
  });
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  const AdminReader reader((*s)->address());
  EXPECT_EQ(reader.address(), (*s)->address());
  const auto deadline = [] { return std::chrono::system_clock::now() + std::chrono::seconds(5); };
  for (int call = 0; call < 2; ++call) {  // one reader, asked again
    Result<std::vector<ExporterReport>> got = reader.ListExporters(deadline());
    ASSERT_TRUE(got.ok()) << got.status().ToString();
    ASSERT_EQ(got->size(), 1u);
    EXPECT_EQ((*got)[0].name, "otlp");
    EXPECT_EQ((*got)[0].target, "grpc http://collector:4317");
    EXPECT_EQ((*got)[0].counts, (std::vector<std::pair<std::string, uint64_t>>{
                                    {"spans_exported", 7}, {"retries", 2}}));
  }
  const std::string address = (*s)->address();
  (*s)->Stop();
  Result<std::vector<ExporterReport>> gone = AdminReader(address).ListExporters(deadline());
  ASSERT_FALSE(gone.ok());
  EXPECT_EQ(gone.status().code(), StatusCode::kUnavailable);
}

TEST_F(AdminTest, MalformedAddressesAreInvalidArgumentNamingTheAddress) {
  for (const std::string& bad :
       {std::string("no-port"), std::string("localhost:"), std::string(":7420"),
        std::string("127.0.0.1:65536"), std::string("127.0.0.1:http"), std::string("unix:"),
        "unix:/tmp/" + std::string(120, 'x')}) {
    Result<std::unique_ptr<AdminServer>> s = AdminServer::Start(*host_, bad);
    ASSERT_FALSE(s.ok()) << bad;
    EXPECT_EQ(s.status().code(), StatusCode::kInvalidArgument) << bad;
    if (bad.rfind("unix:", 0) != 0) {
      EXPECT_NE(s.status().message().find("\"" + bad + "\""), std::string::npos)
          << s.status().message();
    }
  }
}

TEST_F(AdminTest, UnixSocketInAMissingDirectoryFailsNamingTheDirectory) {
  const std::string dir = "/tmp/pitlane-no-such-dir-" + ns_.name();
  Result<std::unique_ptr<AdminServer>> s = AdminServer::Start(*host_, "unix:" + dir + "/a.sock");
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.status().message().find(dir), std::string::npos) << s.status().message();
}

}  // namespace
}  // namespace pitlane
