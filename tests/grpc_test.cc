// The gRPC transport: parity with shared memory (one table of events, typed over both
// transports), control parity, reconnects, refusals (token, size, malformed, bad control),
// back-pressure from a stalled host, transport events, transport selection.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <grpcpp/grpcpp.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "pitlane/defaults.h"
#include "pitlane/host.h"
#include "pitlane/record.h"
#include "pitlane/shm.h"
#include "pitlane/worker.h"
#include "snakepit_compat.grpc.pb.h"
#include "telemetry.grpc.pb.h"
#include "local_port.h"
#include "testing.h"

namespace pitlane {
namespace {

namespace pb = ::pitlane::v1;
using std::chrono::milliseconds;
using testing::ScopedNamespace;

bool WaitFor(const std::function<bool()>& pred, milliseconds timeout = milliseconds(10000)) {
  const auto until = std::chrono::steady_clock::now() + timeout;
  while (!pred()) {
    if (std::chrono::steady_clock::now() > until) return false;
    std::this_thread::sleep_for(milliseconds(2));
  }
  return true;
}

// What a handler saw, in a form both transports must agree on (timestamps and the order of
// map entries are transport details).
struct Seen {
  std::string name, correlation_id, worker_id;
  std::vector<std::string> measurements, metadata;
  Transport transport;
  bool operator==(const Seen& o) const {
    return name == o.name && correlation_id == o.correlation_id && worker_id == o.worker_id &&
           measurements == o.measurements && metadata == o.metadata;
  }
};

std::string Show(const Value& v) {
  switch (v.kind) {
    case Value::Kind::kInt: return "i:" + std::to_string(v.i);
    case Value::Kind::kDouble: return "d:" + std::to_string(v.d);
    default: return "s:" + std::string(v.s);
  }
}

Seen Capture(const EventView& e) {
  Seen s;
  s.name = std::string(e.name());
  s.correlation_id = std::string(e.correlation_id);
  s.worker_id = std::string(e.worker_id);
  s.transport = e.transport;
  for (const auto& m : e.measurements) s.measurements.push_back(std::string(m.key) + "=" + Show(m.value));
  for (const auto& m : e.metadata) {
    if (m.key == "timestamp_ns") continue;
    s.metadata.push_back(std::string(m.key) + "=" + std::string(m.value));
  }
  std::sort(s.measurements.begin(), s.measurements.end());
  std::sort(s.metadata.begin(), s.metadata.end());
  return s;
}

// Collects every event a host delivers (poll thread) for the test thread.
struct Collector {
  std::mutex mu;
  std::vector<Seen> seen;
  void Attach(Host& h, const std::string& id = "collector") {
    ASSERT_TRUE(h.Attach(id, "*", [this](const EventView& e) {
                   std::lock_guard<std::mutex> l(mu);
                   seen.push_back(Capture(e));
                 }).ok());
  }
  std::vector<Seen> Of(Transport t) {
    std::lock_guard<std::mutex> l(mu);
    std::vector<Seen> out;
    for (const auto& s : seen) {
      if (s.transport == t) out.push_back(s);
    }
    return out;
  }
  size_t Count(const std::string& name) {
    std::lock_guard<std::mutex> l(mu);
    return static_cast<size_t>(
        std::count_if(seen.begin(), seen.end(), [&](const Seen& s) { return s.name == name; }));
  }
};

uint64_t Folded(const HostStats& s) {
  uint64_t n = s.delivered;
  for (uint64_t r : s.rejected) n += r;
  return n;
}

// ── the two transports, as typed-test parameters ────────────────────────────────────────────
struct Shm {
  static constexpr Transport kTransport = Transport::kShm;
  static std::unique_ptr<Host> StartHost(const std::string& ns, const std::string&) {
    HostOptions o;
    o.ns = ns;
    o.log = [](std::string_view) {};
    auto h = Host::Start(o);
    return h.ok() ? std::move(h).value() : nullptr;
  }
  static std::unique_ptr<Worker> StartWorker(const std::string& ns, const std::string& id,
                                             const Host&) {
    WorkerOptions o;
    o.ns = ns;
    o.worker_id = id;
    o.transport = WorkerTransport::kShm;
    auto w = Worker::Start(o);
    return w.ok() ? std::move(w).value() : nullptr;
  }
};

// The lines a host logged, for tests that look for one.
struct HostLog {
  std::mutex mu;
  std::vector<std::string> lines;
  bool Has(std::string_view part) {
    std::lock_guard<std::mutex> g(mu);
    return std::any_of(lines.begin(), lines.end(), [&](const std::string& line) {
      return line.find(part) != std::string::npos;
    });
  }
};

std::unique_ptr<Host> StartGrpcHost(const std::string& ns, HostOptions o = {},
                                    HostLog* log = nullptr) {
  o.ns = ns;
  if (o.grpc_listen.empty() && o.grpc_dial.empty()) o.grpc_listen = "127.0.0.1:0";
  o.log = [log](std::string_view l) {
    if (log) {
      std::lock_guard<std::mutex> g(log->mu);
      log->lines.emplace_back(l);
    }
  };
  auto h = Host::Start(o);
  EXPECT_TRUE(h.ok()) << h.status().message();
  return h.ok() ? std::move(h).value() : nullptr;
}

// A host of `ns` that dials the worker `id` serving StreamTelemetry on loopback `port`.
std::unique_ptr<Host> StartHostDialing(const std::string& ns, const std::string& id, int port,
                                       HostLog* log = nullptr) {
  HostOptions o;
  o.grpc_dial = {id + "=127.0.0.1:" + std::to_string(port)};
  return StartGrpcHost(ns, o, log);
}

std::unique_ptr<Worker> StartGrpcWorker(const std::string& ns, const std::string& id,
                                        const std::string& target, WorkerOptions o = {}) {
  o.ns = ns;
  o.worker_id = id;
  o.transport = WorkerTransport::kGrpc;
  o.grpc_target = target;
  auto w = Worker::Start(o);
  EXPECT_TRUE(w.ok()) << w.status().message();
  return w.ok() ? std::move(w).value() : nullptr;
}

struct Grpc {
  static constexpr Transport kTransport = Transport::kGrpc;
  static std::unique_ptr<Host> StartHost(const std::string& ns, const std::string&) {
    return StartGrpcHost(ns);
  }
  static std::unique_ptr<Worker> StartWorker(const std::string& ns, const std::string& id,
                                             const Host& host) {
    return StartGrpcWorker(ns, id, "127.0.0.1:" + std::to_string(host.grpc_port()));
  }
};

// Snakepit's direction: the worker serves, the host dials it (and, both being pitlane with
// one catalog, receives its records as they are).
struct GrpcDialOut {
  static constexpr Transport kTransport = Transport::kGrpc;
  static inline int port = 0;  // where the next worker serves and the host dials
  static std::unique_ptr<Host> StartHost(const std::string& ns, const std::string& worker_id) {
    port = testing::UnusedLocalPort();
    return StartHostDialing(ns, worker_id, port);
  }
  static std::unique_ptr<Worker> StartWorker(const std::string& ns, const std::string& id,
                                             const Host&) {
    WorkerOptions o;
    o.grpc_listen = "127.0.0.1:" + std::to_string(port);
    return StartGrpcWorker(ns, id, /*target=*/"", o);
  }
};

// One table of test events. Each row: what the worker emits, what Emit answers, and what the
// host must make of it. Events over the catalog's limits are refused at emit (never published);
// a value over max_value_bytes is cut at emit (the host has nothing left to truncate).
struct Row {
  std::string what;
  std::function<EmitResult(Worker&)> emit;
  bool delivered;
  int reject_reason = -1;  // shm::RejectReason when published and not delivered
  bool truncated = false;  // by the host
  EmitResult result = EmitResult::kOk;
  bool published() const { return result != EmitResult::kDroppedOverLimit; }
};

size_t PublishedRows(const std::vector<Row>& table) {
  return static_cast<size_t>(std::count_if(table.begin(), table.end(),
                                           [](const Row& r) { return r.published(); }));
}

std::vector<Row> Table() {
  static const std::string long_value(2000, 'v');
  static const std::string long_key(70, 'k');
  static const std::string long_correlation(200, 'c');
  std::vector<Row> t;
  t.push_back({"valid typical event",
               [](Worker& w) {
                 return w.Emit("python.call.stop",
                               {{"duration", 1200}, {"response_size", 512}, {"cpu_percent", 3.5}},
                               {{"command", "predict"}, {"result", "ok"}, {"session_id", "s1"}},
                               "corr-000000000000000000001");
               },
               true});
  t.push_back({"canonical alias name",
               [](Worker& w) {
                 return w.Emit("python.tool.execution.stop", {{"duration", 5}}, {{"tool", "grep"}});
               },
               true});
  t.push_back({"unknown name",
               [](Worker& w) { return w.Emit("inference.start", {{"duration", 1}}); }, false,
               shm::kRejectUnknownEvent});
  t.push_back({"case variant of a known name",
               [](Worker& w) { return w.Emit("Python.call.start", {{"system_time", 1}}); }, false,
               shm::kRejectUnknownEvent});
  t.push_back({"bad measurement key",
               [](Worker& w) { return w.Emit("python.call.start", {{"bogus_key", 1}}); }, false,
               shm::kRejectBadMeasurementKey});
  t.push_back({"unknown metadata key kept as a string",
               [](Worker& w) {
                 return w.Emit("python.cpu.sampled", {{"cpu_percent", 12.5}},
                               {{"my_custom_key", "x"}});
               },
               true});
  t.push_back({"empty correlation id",
               [](Worker& w) { return w.Emit("python.memory.sampled", {{"rss_bytes", 1000}}, {}, ""); },
               true});
  t.push_back({"string measurement value",
               [](Worker& w) { return w.Emit("python.call.stop", {{"duration", "slow"}}); }, true});
  t.push_back({"too many measurements",
               [](Worker& w) {
                 static const char* keys[] = {
                     "duration", "duration_ms", "bytes", "system_time", "queue_depth",
                     "queue_time", "available_workers", "busy_workers", "total_workers",
                     "worker_count", "lifetime", "total_commands", "command_count", "downtime",
                     "restart_count", "retry_count", "request_size", "response_size",
                     "message_size", "sequence_number", "message_count", "network_time",
                     "uptime", "call_count", "affinity_duration", "commands_with_affinity",
                     "rss_bytes", "vms_bytes", "cpu_percent", "collected", "generation",
                     "latency_ms", "count"};
                 std::vector<Measurement> m;
                 for (const char* k : keys) m.emplace_back(k, 1);
                 return w.Emit(w.Event("python.gc.completed"), m, {});
               },
               false, -1, false, EmitResult::kDroppedOverLimit});
  t.push_back({"key over the limit",
               [](Worker& w) { return w.Emit("python.call.stop", {{"duration", 1}}, {{long_key, "x"}}); },
               false, -1, false, EmitResult::kDroppedOverLimit});
  t.push_back({"correlation id over the limit",
               [](Worker& w) {
                 return w.Emit("python.call.stop", {{"duration", 1}}, {}, long_correlation);
               },
               false, -1, false, EmitResult::kDroppedOverLimit});
  t.push_back({"value over the limit is truncated",
               [](Worker& w) {
                 return w.Emit("python.error.occurred", {{"count", 1}},
                               {{"error_type", "ValueError"}, {"traceback", long_value}});
               },
               true, -1, false, EmitResult::kOkTruncated});
  return t;
}

template <typename T>
class TransportParityTest : public ::testing::Test {
 protected:
  void SetUp() override {
    host_ = T::StartHost(ns_.name(), "parity-worker");
    ASSERT_NE(host_, nullptr);
    collector_.Attach(*host_);
    host_->RunInBackground();
    worker_ = T::StartWorker(ns_.name(), "parity-worker", *host_);
    ASSERT_NE(worker_, nullptr);
    ASSERT_TRUE(worker_->WaitAttached(milliseconds(10000)));
    // The host has seen the worker (shm: its poll thread discovered the slot).
    ASSERT_TRUE(WaitFor([&] { return host_->Control("parity-worker").ok(); }));
    ASSERT_EQ(worker_->transport(),
              T::kTransport == Transport::kShm ? WorkerTransport::kShm : WorkerTransport::kGrpc);
  }
  void TearDown() override {
    worker_.reset();
    host_.reset();
  }

  ScopedNamespace ns_;
  Collector collector_;
  std::unique_ptr<Host> host_;
  std::unique_ptr<Worker> worker_;
};

using Transports = ::testing::Types<Shm, Grpc, GrpcDialOut>;
TYPED_TEST_SUITE(TransportParityTest, Transports);

TYPED_TEST(TransportParityTest, EveryTableRowMeansTheSameOnThisTransport) {
  const std::vector<Row> table = Table();
  for (const Row& r : table) EXPECT_EQ(r.emit(*this->worker_), r.result) << r.what;
  ASSERT_TRUE(WaitFor([&] { return Folded(this->host_->Stats()) >= PublishedRows(table); }));

  const HostStats s = this->host_->Stats();
  uint64_t want_delivered = 0, want_truncated = 0;
  uint64_t want_rejected[shm::kRejectReasonCount] = {};
  for (const Row& r : table) {
    if (r.delivered) ++want_delivered;
    else if (r.reject_reason >= 0) ++want_rejected[r.reject_reason];
    if (r.truncated) ++want_truncated;
  }
  EXPECT_EQ(s.delivered, want_delivered);
  EXPECT_EQ(s.truncated, want_truncated);
  for (uint32_t i = 0; i < shm::kRejectReasonCount; ++i) {
    EXPECT_EQ(s.rejected[i], want_rejected[i]) << "reason " << i;
  }

  const std::vector<Seen> seen = this->collector_.Of(TypeParam::kTransport);
  ASSERT_EQ(seen.size(), want_delivered);
  EXPECT_EQ(seen[0].name, "snakepit.python.call.stop");
  EXPECT_EQ(seen[0].correlation_id, "corr-000000000000000000001");
  EXPECT_EQ(seen[0].measurements,
            (std::vector<std::string>{"cpu_percent=d:3.500000", "duration=i:1200",
                                      "response_size=i:512"}));
  EXPECT_NE(std::find(seen[0].metadata.begin(), seen[0].metadata.end(), "worker_id=parity-worker"),
            seen[0].metadata.end());
  EXPECT_NE(std::find(seen[0].metadata.begin(), seen[0].metadata.end(),
                      "worker_pid=" + std::to_string(getpid())),
            seen[0].metadata.end());
  EXPECT_EQ(seen[1].name, "snakepit.python.tool.execution.stop");
  EXPECT_NE(std::find(seen[2].metadata.begin(), seen[2].metadata.end(), "my_custom_key=x"),
            seen[2].metadata.end());
  EXPECT_EQ(seen[3].correlation_id, "");
  EXPECT_EQ(seen[4].measurements, std::vector<std::string>{"duration=s:slow"});
  const auto tb = std::find_if(seen[5].metadata.begin(), seen[5].metadata.end(),
                               [](const std::string& m) { return m.rfind("traceback=", 0) == 0; });
  ASSERT_NE(tb, seen[5].metadata.end());
  EXPECT_EQ(tb->size(), std::string("traceback=").size() + 1024);

  // Worker side: every event within the limits published, the rest counted as too large; per
  // ring/stream the conservation law holds.
  ASSERT_TRUE(this->host_->DrainAll(milliseconds(5000)));
  const WorkerStats ws = this->worker_->Stats();
  EXPECT_EQ(ws.emitted, table.size());
  EXPECT_EQ(ws.published, PublishedRows(table));
  EXPECT_EQ(ws.dropped_too_large, table.size() - PublishedRows(table));
  ASSERT_TRUE(WaitFor([&] {
    for (const RingStats& r : this->host_->Rings()) {
      if (r.worker_id == "parity-worker" && r.transport == TypeParam::kTransport &&
          r.emitted == table.size() && r.Conserved()) {
        return true;
      }
    }
    return false;
  }));
}

TEST(TransportParity, ShmAndBothGrpcDirectionsDeliverIdenticalEvents) {
  auto run = [](auto tag) {
    using T = decltype(tag);
    ScopedNamespace ns;
    Collector c;
    auto host = T::StartHost(ns.name(), "same-id");
    EXPECT_NE(host, nullptr);
    c.Attach(*host);
    host->RunInBackground();
    auto worker = T::StartWorker(ns.name(), "same-id", *host);
    EXPECT_TRUE(worker->WaitAttached(milliseconds(10000)));
    const std::vector<Row> table = Table();
    for (const Row& r : table) r.emit(*worker);
    EXPECT_TRUE(WaitFor([&] { return Folded(host->Stats()) >= PublishedRows(table); }));
    HostStats s = host->Stats();
    worker.reset();
    return std::make_pair(c.Of(T::kTransport), s);
  };
  const auto [shm_seen, shm_stats] = run(Shm{});
  for (const auto& [grpc_seen, grpc_stats] : {run(Grpc{}), run(GrpcDialOut{})}) {
    EXPECT_EQ(shm_seen, grpc_seen);
    EXPECT_EQ(shm_stats.delivered, grpc_stats.delivered);
    EXPECT_EQ(shm_stats.truncated, grpc_stats.truncated);
    for (uint32_t i = 0; i < shm::kRejectReasonCount; ++i) {
      EXPECT_EQ(shm_stats.rejected[i], grpc_stats.rejected[i]) << "reason " << i;
    }
  }
}

// ── control parity ───────────────────────────────────────────────────────────────────────────
template <typename T>
class ControlParityTest : public TransportParityTest<T> {};
TYPED_TEST_SUITE(ControlParityTest, Transports);

// Emits `name` until the gate answers `want` (control reaches the worker asynchronously on
// both transports). Returns false on timeout.
bool EmitUntil(Worker& w, const char* name, EmitResult want) {
  return WaitFor([&] { return w.Emit(name, {{"cpu_percent", 1.0}}) == want; });
}

TYPED_TEST(ControlParityTest, ToggleSamplingAndFiltersApplyIdentically) {
  Host& h = *this->host_;
  Worker& w = *this->worker_;
  const std::string id = "parity-worker";

  ASSERT_TRUE(h.UpdateFilter(id, {}, {"python.memory.*"}).ok());
  ASSERT_TRUE(EmitUntil(w, "python.memory.sampled", EmitResult::kSuppressedFiltered));
  for (int i = 0; i < 10; ++i) {
    EXPECT_EQ(w.Emit("python.memory.sampled", {{"rss_bytes", 1}}), EmitResult::kSuppressedFiltered);
    EXPECT_EQ(w.Emit("python.cpu.sampled", {{"cpu_percent", 1.0}}), EmitResult::kOk);
  }

  // Sampling replaces sampling only (the filter stays); rate 0 and 1 are exact.
  ASSERT_TRUE(h.UpdateSampling(id, 0.0, {"python.cpu.*"}).ok());
  ASSERT_TRUE(EmitUntil(w, "python.cpu.sampled", EmitResult::kSuppressedSampled));
  for (int i = 0; i < 10; ++i) {
    EXPECT_EQ(w.Emit("python.cpu.sampled", {{"cpu_percent", 1.0}}), EmitResult::kSuppressedSampled);
    EXPECT_EQ(w.Emit("python.memory.sampled", {{"rss_bytes", 1}}), EmitResult::kSuppressedFiltered);
    EXPECT_EQ(w.Emit("python.gc.completed", {{"collected", 1}}), EmitResult::kOk);
  }

  ASSERT_TRUE(h.Toggle(id, false).ok());
  ASSERT_TRUE(EmitUntil(w, "python.gc.completed", EmitResult::kSuppressedDisabled));
  EXPECT_EQ(w.Emit("python.call.stop", {{"duration", 1}}), EmitResult::kSuppressedDisabled);

  ASSERT_TRUE(h.Toggle(id, true).ok());
  ASSERT_TRUE(h.UpdateFilter(id, {"python.call.*"}, {}).ok());
  ASSERT_TRUE(h.UpdateSampling(id, 1.0, {}).ok());
  ASSERT_TRUE(EmitUntil(w, "python.cpu.sampled", EmitResult::kSuppressedFiltered));
  EXPECT_EQ(w.Emit("python.call.stop", {{"duration", 1}}), EmitResult::kOk);

  // Invalid control changes nothing on either transport.
  EXPECT_EQ(h.UpdateSampling(id, 7.0, {}).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(h.UpdateFilter(id, {"["}, {}).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(h.Toggle("no-such-worker", false).code(), StatusCode::kNotFound);
  const Result<ControlState> state = h.Control(id);
  ASSERT_TRUE(state.ok());
  EXPECT_EQ(state->sampling_rate, 1.0);
  EXPECT_EQ(state->allow, std::vector<std::string>{"python.call.*"});
  EXPECT_EQ(w.Emit("python.call.stop", {{"duration", 1}}), EmitResult::kOk);
}

// ── a TCP proxy the test can cut, to break a live stream without stopping the host ────────────
class Proxy {
 public:
  explicit Proxy(int upstream_port) : upstream_(upstream_port) {
    listen_fd_ = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(listen_fd_, reinterpret_cast<sockaddr*>(&a), sizeof a);
    socklen_t len = sizeof a;
    getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    listen(listen_fd_, 16);
    thread_ = std::thread([this] { Loop(); });
  }
  ~Proxy() {
    stop_ = true;
    thread_.join();
    CutAll();
    close(listen_fd_);
  }
  int port() const { return port_; }
  // Closes every proxied connection (both directions), as a crashed peer would.
  void CutAll() {
    std::lock_guard<std::mutex> l(mu_);
    for (auto& [a, b] : pairs_) {
      shutdown(a, SHUT_RDWR);
      shutdown(b, SHUT_RDWR);
      close(a);
      close(b);
    }
    pairs_.clear();
    ++cuts_;
  }
  // While paused, new connections are refused (accepted and closed at once).
  void Pause(bool on) { paused_ = on; }

 private:
  void Loop() {
    std::vector<char> buf(1 << 16);
    while (!stop_) {
      std::vector<pollfd> fds{{listen_fd_, POLLIN, 0}};
      {
        std::lock_guard<std::mutex> l(mu_);
        for (auto& [a, b] : pairs_) {
          fds.push_back({a, POLLIN, 0});
          fds.push_back({b, POLLIN, 0});
        }
      }
      if (poll(fds.data(), fds.size(), 20) <= 0) continue;
      if (fds[0].revents & POLLIN) {
        int c = accept(listen_fd_, nullptr, nullptr);
        if (c >= 0 && paused_) {
          close(c);
        } else if (c >= 0) {
          int u = socket(AF_INET, SOCK_STREAM, 0);
          sockaddr_in a{};
          a.sin_family = AF_INET;
          a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
          a.sin_port = htons(static_cast<uint16_t>(upstream_));
          if (connect(u, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) {
            std::lock_guard<std::mutex> l(mu_);
            pairs_.emplace_back(c, u);
          } else {
            close(c);
            close(u);
          }
        }
      }
      std::lock_guard<std::mutex> l(mu_);
      for (size_t i = 1; i < fds.size(); ++i) {
        if (!(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
        const size_t p = (i - 1) / 2;
        if (p >= pairs_.size()) continue;
        const int from = fds[i].fd;
        const int to = from == pairs_[p].first ? pairs_[p].second : pairs_[p].first;
        const ssize_t n = read(from, buf.data(), buf.size());
        if (n <= 0 || write(to, buf.data(), static_cast<size_t>(n)) != n) {
          close(pairs_[p].first);
          close(pairs_[p].second);
          pairs_.erase(pairs_.begin() + static_cast<long>(p));
          break;  // indices shifted: poll again
        }
      }
    }
  }

  int upstream_;
  int listen_fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false}, paused_{false};
  std::thread thread_;
  std::mutex mu_;
  std::vector<std::pair<int, int>> pairs_;
  int cuts_ = 0;
};


RingStats RemoteRing(Host& h, const std::string& id) {
  for (const RingStats& r : h.Rings()) {
    if (r.worker_id == id && r.transport == Transport::kGrpc) return r;
  }
  return {};
}

TEST(GrpcReconnect, CutStreamsReconnectWithControlReappliedAndNothingLost) {
  ScopedNamespace ns;
  auto host = StartGrpcHost(ns.name());
  ASSERT_NE(host, nullptr);
  Collector c;
  c.Attach(*host);
  host->RunInBackground();
  Proxy proxy(host->grpc_port());
  auto w = StartGrpcWorker(ns.name(), "flaky", "127.0.0.1:" + std::to_string(proxy.port()));
  ASSERT_NE(w, nullptr);
  ASSERT_TRUE(w->WaitAttached(milliseconds(10000)));
  ASSERT_TRUE(host->UpdateFilter("flaky", {}, {"python.memory.*"}).ok());
  ASSERT_TRUE(EmitUntil(*w, "python.memory.sampled", EmitResult::kSuppressedFiltered));

  constexpr int kEvents = 20000;
  int sent = 0;
  for (int round = 0; round < 4; ++round) {
    for (int i = 0; i < kEvents / 4; ++i, ++sent) {
      ASSERT_EQ(w->Emit("python.call.stop", {{"duration", 1}, {"sequence_number", sent}}),
                EmitResult::kOk);
    }
    proxy.Pause(true);
    proxy.CutAll();  // mid-stream: some batches are in flight
    ASSERT_TRUE(WaitFor([&] { return !w->attached(); }));
    // While disconnected the worker keeps queueing (its pre-connect buffer).
    EXPECT_EQ(w->Emit("python.call.stop", {{"duration", 1}, {"sequence_number", sent++}}),
              EmitResult::kOk);
    proxy.Pause(false);
    ASSERT_TRUE(w->WaitAttached(milliseconds(15000))) << "round " << round;
    // The host re-sent the worker's full control state on reconnect.
    EXPECT_EQ(w->Emit("python.memory.sampled", {{"rss_bytes", 1}}), EmitResult::kSuppressedFiltered);
  }
  ASSERT_TRUE(WaitFor([&] { return c.Count("snakepit.python.call.stop") >= static_cast<size_t>(sent); }, milliseconds(20000)));
  w.reset();  // flushes, sends its final counters
  ASSERT_TRUE(host->DrainAll(milliseconds(5000)));
  // Exactly once: re-sent batches the host had already folded are skipped by sequence number.
  EXPECT_EQ(c.Count("snakepit.python.call.stop"), static_cast<size_t>(sent));
  const RingStats r = RemoteRing(*host, "flaky");
  EXPECT_EQ(r.dropped_in_flight, 0u);
  EXPECT_TRUE(r.Conserved()) << "emitted " << r.emitted << " published " << r.published
                             << " delivered " << r.delivered;
  EXPECT_EQ(c.Count("snakepit.grpc.connection.reconnected"), 4u);
  EXPECT_GE(c.Count("snakepit.grpc.connection.lost"), 4u);
  EXPECT_EQ(c.Count("snakepit.grpc.connection.established"), 1u);
}

TEST(GrpcReconnect, HostReplacedOnTheSamePortReceivesWhatTheOldOneNeverAcknowledged) {
  ScopedNamespace ns;
  std::mutex mu;
  std::set<int64_t> seqs;
  auto record = [&](Host& h) {
    ASSERT_TRUE(h.Attach("seq", "snakepit.python.call.stop", [&](const EventView& e) {
                   std::lock_guard<std::mutex> l(mu);
                   seqs.insert(e.measurement("sequence_number")->i);
                 }).ok());
  };
  auto host = StartGrpcHost(ns.name());
  ASSERT_NE(host, nullptr);
  record(*host);
  host->RunInBackground();
  const int port = host->grpc_port();
  auto w = StartGrpcWorker(ns.name(), "survivor", "127.0.0.1:" + std::to_string(port));
  ASSERT_TRUE(w->WaitAttached(milliseconds(10000)));
  constexpr int kEvents = 30000;
  for (int i = 0; i < kEvents / 2; ++i) w->Emit("python.call.stop", {{"sequence_number", i}});
  host.reset();  // the host goes away mid-stream
  for (int i = kEvents / 2; i < kEvents; ++i) w->Emit("python.call.stop", {{"sequence_number", i}});
  HostOptions o;
  o.grpc_listen = "127.0.0.1:" + std::to_string(port);
  host = StartGrpcHost(ns.name(), o);
  ASSERT_NE(host, nullptr);
  record(*host);
  host->RunInBackground();
  ASSERT_TRUE(WaitFor([&] {
    std::lock_guard<std::mutex> l(mu);
    return seqs.size() == static_cast<size_t>(kEvents);
  }, milliseconds(30000))) << seqs.size();
  const WorkerStats ws = w->Stats();
  EXPECT_EQ(ws.emitted, static_cast<uint64_t>(kEvents));
  EXPECT_EQ(ws.dropped(), 0u);
}

// A restarted host keeps the control state its predecessor applied to a dial-in worker, as it
// does for a local one (host_restart_test): the worker's hello carries the state it runs, and a
// host with no state of its own for the id takes it.
TEST(GrpcReconnect, HostReplacedOnTheSamePortKeepsTheControlStateAppliedToTheWorker) {
  ScopedNamespace ns;
  auto host = StartGrpcHost(ns.name());
  ASSERT_NE(host, nullptr);
  host->RunInBackground();
  const int port = host->grpc_port();
  auto w = StartGrpcWorker(ns.name(), "steady", "127.0.0.1:" + std::to_string(port));
  ASSERT_NE(w, nullptr);
  ASSERT_TRUE(w->WaitAttached(milliseconds(10000)));
  ControlState applied;
  applied.deny = {"python.cpu.sampled"};
  ASSERT_TRUE(host->SetControl("steady", applied).ok());
  ASSERT_TRUE(EmitUntil(*w, "python.cpu.sampled", EmitResult::kSuppressedFiltered));
  host.reset();

  HostOptions o;
  o.grpc_listen = "127.0.0.1:" + std::to_string(port);
  host = StartGrpcHost(ns.name(), o);
  ASSERT_NE(host, nullptr);
  host->RunInBackground();
  ASSERT_TRUE(WaitFor([&] { return host->Control("steady").ok(); }, milliseconds(30000)));
  EXPECT_EQ(host->Control("steady").value(), applied);
  // Once the new stream carries events, the worker has had the new host's initial state: the
  // kept one (a reset would let the denied event out).
  ASSERT_EQ(w->Emit("python.call.stop", {{"duration", 1}}), EmitResult::kOk);
  ASSERT_TRUE(WaitFor([&] { return host->Stats().delivered >= 1; }, milliseconds(30000)));
  for (int i = 0; i < 50; ++i) {
    ASSERT_EQ(w->Emit("python.cpu.sampled", {{"cpu_percent", 1.0}}),
              EmitResult::kSuppressedFiltered) << "emit " << i;
    std::this_thread::sleep_for(milliseconds(2));
  }
}

// ── refusals ────────────────────────────────────────────────────────────────────────────────
std::unique_ptr<pb::TelemetryIngest::Stub> IngestClient(int port) {
  return pb::TelemetryIngest::NewStub(
      grpc::CreateChannel("127.0.0.1:" + std::to_string(port), grpc::InsecureChannelCredentials()));
}

grpc::Status OneShot(pb::TelemetryIngest::Stub& ingest, const pb::TelemetryUpstream& msg,
                     const std::string& token = "") {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  if (!token.empty()) ctx.AddMetadata("authorization", "Bearer " + token);
  auto s = ingest.StreamTelemetry(&ctx);
  s->Write(msg);
  s->WritesDone();
  pb::TelemetryDownstream d;
  while (s->Read(&d)) {
  }
  return s->Finish();
}

pb::TelemetryUpstream Hello(const std::string& id) {
  pb::TelemetryUpstream m;
  m.mutable_hello()->set_worker_id(id);
  m.mutable_hello()->set_pid(1);
  return m;
}

TEST(GrpcRefusals, MissingOrWrongTokenIsUnauthenticatedAndChangesNothing) {
  ScopedNamespace ns;
  HostOptions o;
  o.grpc_token = "s3cret";
  auto host = StartGrpcHost(ns.name(), o);
  ASSERT_NE(host, nullptr);
  host->RunInBackground();
  auto ingest = IngestClient(host->grpc_port());
  pb::TelemetryUpstream m = Hello("intruder");
  auto* e = m.add_events();
  e->add_event_parts("python");
  e->add_event_parts("call");
  e->add_event_parts("stop");
  EXPECT_EQ(OneShot(*ingest, m).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(OneShot(*ingest, m, "wrong").error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(host->Toggle("intruder", false).code(), StatusCode::kNotFound);
  EXPECT_EQ(Folded(host->Stats()), 0u);

  // A worker with the wrong token never attaches; with the right one it does.
  WorkerOptions wo;
  wo.grpc_token = "wrong";
  wo.flush_timeout = milliseconds(100);
  auto bad = StartGrpcWorker(ns.name(), "bad-token", "127.0.0.1:" + std::to_string(host->grpc_port()), wo);
  EXPECT_FALSE(bad->WaitAttached(milliseconds(500)));
  wo.grpc_token = "s3cret";
  auto good = StartGrpcWorker(ns.name(), "good-token", "127.0.0.1:" + std::to_string(host->grpc_port()), wo);
  EXPECT_TRUE(good->WaitAttached(milliseconds(10000)));
  EXPECT_EQ(OneShot(*ingest, m, "s3cret").error_code(), grpc::StatusCode::OK);
}

TEST(GrpcRefusals, OversizedMessageIsResourceExhausted) {
  ScopedNamespace ns;
  HostOptions o;
  o.grpc_max_message_bytes = 64 * 1024;
  auto host = StartGrpcHost(ns.name(), o);
  ASSERT_NE(host, nullptr);
  host->RunInBackground();
  auto ingest = IngestClient(host->grpc_port());
  pb::TelemetryUpstream m = Hello("big");
  auto* e = m.add_events();
  e->add_event_parts("python");
  (*e->mutable_metadata())["traceback"] = std::string(100 * 1024, 'x');
  EXPECT_EQ(OneShot(*ingest, m).error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_EQ(Folded(host->Stats()), 0u);
}

// A bad grpc_dial entry fails Host::Start. A worker dialing the host's grpc_listen port meanwhile
// must not get a stream from the host being given up: Start would wait for that stream to end
// before it returned, and the stream's thread would then run on the torn-down host.
TEST(GrpcRefusals, BadDialEntryFailsStartBeforeAWorkerDialingTheListenPortGetsAStream) {
  ScopedNamespace ns;
  const std::string address = "127.0.0.1:" + std::to_string(testing::UnusedLocalPort());
  // A worker that dials every 5 ms until the port is served and holds the stream it gets.
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 5);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 5);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 5);
  auto ingest = pb::TelemetryIngest::NewStub(
      grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args));
  grpc::ClientContext ctx;
  ctx.set_wait_for_ready(true);
  std::atomic<bool> got_state{false};
  std::thread worker([&] {
    auto s = ingest->StreamTelemetry(&ctx);
    pb::TelemetryDownstream d;
    if (s->Write(Hello("early"))) {
      while (s->Read(&d)) got_state.store(got_state.load() || d.initial_state_complete());
    }
    (void)s->Finish();
  });
  HostOptions o;
  o.ns = ns.name();
  o.grpc_listen = address;
  // Many good entries before the bad one: the host checks them for a while.
  o.grpc_dial.assign(1000000, "same=127.0.0.1:1");
  o.grpc_dial.push_back(std::string(64, 'x') + "=127.0.0.1:1");  // a worker id over 63 bytes
  std::atomic<bool> returned{false};
  std::thread starter([&] {
    Result<std::unique_ptr<Host>> h = Host::Start(o);
    EXPECT_EQ(h.status().code(), StatusCode::kInvalidArgument) << h.status().message();
    returned.store(true);
  });
  EXPECT_TRUE(WaitFor([&] { return returned.load(); }))
      << "Host::Start waits for the stream of a worker that dialed the host it gave up";
  EXPECT_FALSE(got_state.load()) << "a host that failed to start served a worker";
  ctx.TryCancel();
  worker.join();
  starter.join();
}

TEST(GrpcRefusals, StreamWithoutHelloIsInvalidArgument) {
  ScopedNamespace ns;
  auto host = StartGrpcHost(ns.name());
  ASSERT_NE(host, nullptr);
  host->RunInBackground();
  auto ingest = IngestClient(host->grpc_port());
  pb::TelemetryUpstream m;
  m.add_events()->add_event_parts("python");
  const grpc::Status st = OneShot(*ingest, m);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(st.error_message().find("WorkerHello"), std::string::npos);
  EXPECT_EQ(OneShot(*ingest, Hello(std::string(100, 'x'))).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_TRUE(host->Workers().empty());
}

TEST(GrpcRefusals, GarbageEventsAreCountedNotFatal) {
  ScopedNamespace ns;
  auto host = StartGrpcHost(ns.name());
  ASSERT_NE(host, nullptr);
  host->RunInBackground();
  auto ingest = IngestClient(host->grpc_port());
  pb::TelemetryUpstream m = Hello("garbage");
  m.add_events();                                           // no name at all
  m.add_events()->add_event_parts("");                      // empty name
  auto* e = m.add_events();                                 // a value with no oneof set
  e->add_event_parts("python");
  e->add_event_parts("call");
  e->add_event_parts("stop");
  (*e->mutable_measurements())["duration"];
  EXPECT_TRUE(OneShot(*ingest, m).ok());
  ASSERT_TRUE(WaitFor([&] { return Folded(host->Stats()) == 3; }));
  EXPECT_EQ(host->Stats().rejected[shm::kRejectUnknownEvent], 2u);
}

TEST(GrpcAccounting, WorkerCountsReachTheHostUnderTheirOwnReasons) {
  ScopedNamespace ns;
  auto host = StartGrpcHost(ns.name());
  ASSERT_NE(host, nullptr);
  host->RunInBackground();
  auto ingest = IngestClient(host->grpc_port());
  pb::TelemetryUpstream m = Hello("counted");
  for (int i = 0; i < 3; ++i) {
    auto* e = m.add_events();
    e->add_event_parts("python");
    e->add_event_parts("call");
    e->add_event_parts("stop");
  }
  m.set_first_sequence(0);
  pb::WorkerCounters* c = m.mutable_counters();
  c->set_emitted(12);
  c->set_sent(3);
  c->set_dropped_full(1);
  c->set_dropped_too_large(2);
  c->set_dropped_no_ring(4);
  c->set_suppressed_sampled(2);
  EXPECT_TRUE(OneShot(*ingest, m).ok());
  ASSERT_TRUE(WaitFor([&] { return Folded(host->Stats()) == 3; }));
  ASSERT_TRUE(WaitFor([&] {
    for (const RingStats& r : host->Rings()) {
      if (r.worker_id == "counted" && r.emitted == 12) return true;
    }
    return false;
  }));
  for (const RingStats& r : host->Rings()) {
    if (r.worker_id != "counted") continue;
    EXPECT_EQ(r.dropped_full, 1u);
    EXPECT_EQ(r.dropped_too_large, 2u);
    EXPECT_EQ(r.dropped_no_ring, 4u);
    EXPECT_EQ(r.suppressed_sampled, 2u);
    EXPECT_EQ(r.published, 3u);
    EXPECT_EQ(r.delivered, 3u);
    EXPECT_TRUE(r.Conserved()) << "in flight " << r.in_flight() << ", unread " << r.unread();
  }
  for (const WorkerInfo& w : host->Workers()) {
    if (w.id == "counted") {
      EXPECT_EQ(w.dropped_no_ring, 4u);
    }
  }
}

}  // namespace
namespace internal {
extern const std::string_view kDefaultCatalogText;  // generated from schemas/catalog.txt
}  // namespace internal
namespace {

// ── event records ───────────────────────────────────────────────────────────────────────────
std::string EncodedRecord(const std::string& event, int64_t duration) {
  const std::shared_ptr<const Catalog> cat = Catalog::Default();
  const Measurement m[] = {{"duration", duration}};
  RecordFields f;
  f.event_id = cat->FindWorkerEvent(event);
  f.name = event;
  f.timestamp = shm::UnixNowNs();
  f.clock = 0;  // Unix nanoseconds
  f.measurements = m;
  f.measurement_count = 1;
  PreparedRecord p;
  PrepareRecord(f, cat.get(), /*use_ids=*/true, &p);
  std::string out(p.size, '\0');
  EncodeRecord(f, p, reinterpret_cast<uint8_t*>(out.data()));
  return out;
}

TEST(GrpcRecords, RecordsOfAWorkerWithTheHostsCatalogAreDecodedLikeRingRecords) {
  ScopedNamespace ns;
  auto host = StartGrpcHost(ns.name());
  ASSERT_NE(host, nullptr);
  std::atomic<int64_t> duration{0};
  ASSERT_TRUE(host->Attach("d", "snakepit.python.call.stop", [&](const EventView& e) {
                    duration = e.measurement("duration")->i;
                  }).ok());
  host->RunInBackground();
  auto ingest = IngestClient(host->grpc_port());
  pb::TelemetryUpstream m = Hello("raw");
  m.mutable_hello()->set_catalog_hash(Catalog::Default()->hash());
  m.add_records(EncodedRecord("python.call.stop", 4242));
  m.add_records(std::string("\x10\x00\x00\x00PLEVgarbage", 15));
  EXPECT_TRUE(OneShot(*ingest, m).ok());
  ASSERT_TRUE(WaitFor([&] { return Folded(host->Stats()) == 2; }));
  EXPECT_EQ(host->Stats().delivered, 1u);
  EXPECT_EQ(host->Stats().rejected[shm::kRejectMalformed], 1u);
  EXPECT_EQ(duration.load(), 4242);
}

TEST(GrpcRecords, RecordsAgainstAnotherCatalogAreRefusedNotMisread) {
  ScopedNamespace ns;
  HostLog log;
  auto host = StartGrpcHost(ns.name(), {}, &log);
  ASSERT_NE(host, nullptr);
  host->RunInBackground();
  auto ingest = IngestClient(host->grpc_port());
  pb::TelemetryUpstream m = Hello("other-catalog");
  m.mutable_hello()->set_catalog_hash(Catalog::Default()->hash() + 1);
  m.add_records(EncodedRecord("python.call.stop", 1));
  EXPECT_TRUE(OneShot(*ingest, m).ok());
  ASSERT_TRUE(WaitFor([&] { return Folded(host->Stats()) == 1; }));
  EXPECT_EQ(host->Stats().delivered, 0u);
  EXPECT_EQ(host->Stats().rejected[shm::kRejectMalformed], 1u);
  EXPECT_TRUE(log.Has("another catalog"));
}

TEST(GrpcRecords, WorkerOfAnotherCatalogStreamsNamedEventsInstead) {
  ScopedNamespace ns;
  // The default catalog plus one event: another hash, the same names for the default events.
  auto custom = Catalog::Parse(std::string(internal::kDefaultCatalogText) +
                                   "\nevent python.model.loaded worker none model.loaded\n",
                               "custom");
  ASSERT_TRUE(custom.ok()) << custom.status().ToString();
  HostOptions o;
  o.catalog = *custom;
  auto host = StartGrpcHost(ns.name(), o);
  ASSERT_NE(host, nullptr);
  ASSERT_NE(host->catalog().hash(), Catalog::Default()->hash());
  host->RunInBackground();
  auto w = StartGrpcWorker(ns.name(), "named", "127.0.0.1:" + std::to_string(host->grpc_port()));
  ASSERT_TRUE(w->WaitAttached(milliseconds(10000)));
  for (int i = 0; i < 100; ++i) w->Emit("python.call.stop", {{"duration", i}});
  ASSERT_TRUE(WaitFor([&] { return host->Stats().delivered == 100; }))
      << host->Stats().delivered << " delivered, "
      << host->Stats().rejected[shm::kRejectMalformed] << " malformed";
}

// ── back-pressure ───────────────────────────────────────────────────────────────────────────
TEST(GrpcBackpressure, StalledHostKeepsWorkerMemoryBoundedAndCountsOverflow) {
  ScopedNamespace ns;
  auto host = StartGrpcHost(ns.name());
  ASSERT_NE(host, nullptr);
  // The host polls once (the worker attaches), then stalls: nothing drains its inbox.
  WorkerOptions o;
  o.grpc_queue_bytes = 1 << 20;
  o.flush_timeout = milliseconds(20000);
  auto w = StartGrpcWorker(ns.name(), "stalled", "127.0.0.1:" + std::to_string(host->grpc_port()), o);
  ASSERT_TRUE(w->WaitAttached(milliseconds(10000)));
  constexpr uint64_t kEvents = 400000;
  for (uint64_t i = 0; i < kEvents; ++i) w->Emit("python.call.stop", {{"duration", 1}});
  const WorkerStats stalled = w->Stats();
  EXPECT_GT(stalled.dropped_full, 0u) << "a 1 MiB queue cannot hold 400k events";
  EXPECT_EQ(stalled.emitted, kEvents);
  // The host resumes: everything not dropped arrives, and the books balance.
  Collector c;
  c.Attach(*host);
  host->RunInBackground();
  ASSERT_TRUE(WaitFor([&] { return c.Count("snakepit.python.call.stop") == kEvents - w->Stats().dropped_full; },
                      milliseconds(60000)));
  w.reset();
  ASSERT_TRUE(host->DrainAll(milliseconds(5000)));
  const RingStats r = RemoteRing(*host, "stalled");
  EXPECT_EQ(r.emitted, kEvents);
  EXPECT_EQ(r.dropped_full, stalled.dropped_full);
  EXPECT_TRUE(r.Conserved());
}

// ── the host dials the worker (Snakepit's direction) ─────────────────────────────────────────
TEST(GrpcDialOut, HostDialsAServingWorkerAtSnakepitsPathAndControlsIt) {
  ScopedNamespace ns;
  WorkerOptions wo;
  wo.grpc_listen = "127.0.0.1:0";
  const std::unique_ptr<Worker> w = StartGrpcWorker(ns.name(), "served", /*target=*/"", wo);
  ASSERT_NE(w, nullptr);
  const int port = w->grpc_listen_port();
  ASSERT_GT(port, 0);

  auto host = StartHostDialing(ns.name(), "served", port);
  ASSERT_NE(host, nullptr);
  Collector c;
  c.Attach(*host);
  host->RunInBackground();
  ASSERT_TRUE(w->WaitAttached(milliseconds(10000)));
  for (int i = 0; i < 100; ++i) w->Emit("python.call.stop", {{"duration", i}});
  ASSERT_TRUE(WaitFor([&] { return c.Count("snakepit.python.call.stop") == 100; }));
  ASSERT_TRUE(host->Toggle("served", false).ok());
  ASSERT_TRUE(EmitUntil(*w, "python.cpu.sampled", EmitResult::kSuppressedDisabled));
  const auto seen = c.Of(Transport::kGrpc);
  ASSERT_FALSE(seen.empty());
  EXPECT_EQ(seen[0].worker_id, "served");
  // The worker reports its counters to a pitlane host.
  ASSERT_TRUE(WaitFor([&] {
    const RingStats r = RemoteRing(*host, "served");
    return r.suppressed_disabled > 0 && r.emitted >= 101;
  })) << "suppressed " << RemoteRing(*host, "served").suppressed_disabled << " emitted "
      << RemoteRing(*host, "served").emitted << " worker emitted " << w->Stats().emitted;
  EXPECT_GE(c.Count("snakepit.grpc.connection.established"), 1u);
}

// A worker serving StreamTelemetry on an ephemeral port, and a client of it at Snakepit's
// path: what a host that dials the worker uses.
struct ServedWorker {
  std::unique_ptr<Worker> worker;
  std::unique_ptr<::snakepit::bridge::BridgeService::Stub> host_side;
};
ServedWorker StartServedWorker(const std::string& ns, const std::string& id) {
  WorkerOptions o;
  o.grpc_listen = "127.0.0.1:0";
  ServedWorker s{StartGrpcWorker(ns, id, /*target=*/"", o), nullptr};
  if (s.worker) {
    s.host_side = ::snakepit::bridge::BridgeService::NewStub(
        grpc::CreateChannel("127.0.0.1:" + std::to_string(s.worker->grpc_listen_port()),
                            grpc::InsecureChannelCredentials()));
  }
  return s;
}

// What a serving worker sends depends on who dialed it: a pitlane host announcing the worker's
// own catalog gets each batch as one message of records with the counters after them; a pitlane
// host of another catalog, and a Snakepit host, get one named event per message.
TEST(GrpcDialOut, APitlaneHostOfTheSameCatalogReceivesRecordsOthersNamedEvents) {
  struct Case {
    const char* what;
    std::vector<std::pair<std::string, std::string>> metadata;
    bool records;
    bool counters;
  };
  const std::string hash = std::to_string(Catalog::Default()->hash());
  const std::string other = std::to_string(Catalog::Default()->hash() + 1);
  const Case cases[] = {
      {"pitlane host, same catalog", {{"x-pitlane-host", "1"}, {"x-pitlane-catalog-hash", hash}},
       true, true},
      {"pitlane host, other catalog",
       {{"x-pitlane-host", "1"}, {"x-pitlane-catalog-hash", other}}, false, true},
      {"Snakepit host", {}, false, false},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    ScopedNamespace ns;
    ServedWorker served = StartServedWorker(ns.name(), "served");
    ASSERT_NE(served.worker, nullptr);
    Worker& w = *served.worker;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
    for (const auto& [k, v] : c.metadata) ctx.AddMetadata(k, v);
    auto s = served.host_side->StreamTelemetry(&ctx);
    ASSERT_TRUE(w.WaitAttached(milliseconds(10000)));
    constexpr int kEvents = 50;
    for (int i = 0; i < kEvents; ++i) {
      ASSERT_EQ(w.Emit("python.call.stop", {{"duration", i}}), EmitResult::kOk);
    }
    int records = 0, events = 0, counter_reports = 0;
    pb::TelemetryEvent e;
    // Read until every event arrived and, from a worker that reports counters, the report
    // that follows its batch.
    while ((records + events < kEvents || (c.counters && counter_reports == 0)) && s->Read(&e)) {
      records += e.pitlane_records_size();
      if (e.event_parts_size() > 0) ++events;
      if (e.has_pitlane_counters()) ++counter_reports;
      if (e.pitlane_records_size() > 0) {
        EXPECT_EQ(e.event_parts_size(), 0);
      }
    }
    EXPECT_EQ(records, c.records ? kEvents : 0);
    EXPECT_EQ(events, c.records ? 0 : kEvents);
    EXPECT_EQ(counter_reports > 0, c.counters);
    const auto& md = ctx.GetServerInitialMetadata();
    const auto worker_hash = md.find("x-pitlane-catalog-hash");
    ASSERT_NE(worker_hash, md.end());
    EXPECT_EQ(std::string(worker_hash->second.data(), worker_hash->second.size()), hash);
    ctx.TryCancel();
    s->Finish();
  }
}

TEST(GrpcDialOut, BadControlFromAHostIsInvalidArgumentAndKeepsThePreviousState) {
  ScopedNamespace ns;
  ServedWorker served = StartServedWorker(ns.name(), "strict");
  ASSERT_NE(served.worker, nullptr);
  Worker& w = *served.worker;
  {
    grpc::ClientContext ctx;
    auto s = served.host_side->StreamTelemetry(&ctx);
    pb::TelemetryControl off;
    off.mutable_toggle()->set_enabled(false);
    ASSERT_TRUE(s->Write(off));
    ASSERT_TRUE(EmitUntil(w, "python.cpu.sampled", EmitResult::kSuppressedDisabled));
    pb::TelemetryControl bad;
    bad.mutable_sampling()->set_sampling_rate(7.0);
    s->Write(bad);
    s->WritesDone();
    pb::TelemetryEvent e;
    while (s->Read(&e)) {
    }
    const grpc::Status st = s->Finish();
    EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_NE(st.error_message().find("7"), std::string::npos) << st.error_message();
  }
  // Still disabled (the refused message changed nothing).
  EXPECT_EQ(w.Emit("python.cpu.sampled", {{"cpu_percent", 1.0}}), EmitResult::kSuppressedDisabled);
}

TEST(GrpcDialOut, SecondHostIsRefusedWhileOneIsStreaming) {
  ScopedNamespace ns;
  WorkerOptions wo;
  wo.grpc_listen = "127.0.0.1:0";
  const std::unique_ptr<Worker> w = StartGrpcWorker(ns.name(), "single", /*target=*/"", wo);
  ASSERT_NE(w, nullptr);
  // pitlane's own service path (the dial-out tests above use Snakepit's).
  auto chan = grpc::CreateChannel("127.0.0.1:" + std::to_string(w->grpc_listen_port()),
                                  grpc::InsecureChannelCredentials());
  auto host_side = pb::TelemetryService::NewStub(chan);
  grpc::ClientContext first;
  auto s1 = host_side->StreamTelemetry(&first);
  pb::TelemetryControl on;
  on.mutable_toggle()->set_enabled(true);
  ASSERT_TRUE(s1->Write(on));
  ASSERT_TRUE(w->WaitAttached(milliseconds(10000)));
  grpc::ClientContext second;
  auto s2 = host_side->StreamTelemetry(&second);
  s2->WritesDone();
  pb::TelemetryEvent e;
  while (s2->Read(&e)) {
  }
  EXPECT_EQ(s2->Finish().error_code(), grpc::StatusCode::ALREADY_EXISTS);
  first.TryCancel();
}

// ── the whole control state in one message (proto: WorkerControlState) ───────────────────────
// A pitlane worker gets each control update as one message and applies it in one step; a
// worker applying the three parts one by one would, going from {disabled} to {enabled, deny X},
// run {enabled} alone for a moment and let X out.
template <typename T>
class GrpcWholeControlStateTest : public TransportParityTest<T> {};
using GrpcDirections = ::testing::Types<Grpc, GrpcDialOut>;
TYPED_TEST_SUITE(GrpcWholeControlStateTest, GrpcDirections);

TYPED_TEST(GrpcWholeControlStateTest, SwitchFromDisabledToEnabledWithDenyLetsNoDeniedEventOut) {
  Host& h = *this->host_;
  Worker& w = *this->worker_;
  const std::string id = "parity-worker";
  // Dial-out: the host controls the worker as a pitlane worker once it has seen its pid header.
  ASSERT_TRUE(WaitFor([&] {
    for (const WorkerInfo& i : h.Workers()) {
      if (i.id == id && i.pid == static_cast<uint32_t>(getpid())) return true;
    }
    return false;
  }));
  ControlState off;
  off.enabled = false;
  ControlState on_deny;
  on_deny.deny = {"python.cpu.*"};
  ASSERT_TRUE(h.SetControl(id, off).ok());
  // Another event shows when the worker is disabled; what it sent before that is the baseline.
  ASSERT_TRUE(EmitUntil(w, "python.gc.completed", EmitResult::kSuppressedDisabled));
  // Over gRPC an event counts as published when the stream's writer takes it, after Emit has
  // returned: the baseline waits until nothing emitted before is still queued.
  ASSERT_TRUE(WaitFor([&] { return w.Stats().in_flight() == 0; }));
  const uint64_t sent_before = w.Stats().published;

  // The emitter: the denied event in a tight loop, each outcome counted.
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> ok{0}, disabled{0}, filtered{0}, other{0};
  std::atomic<int> last{-1};
  std::thread emitter([&] {
    while (!stop.load(std::memory_order_relaxed)) {
      const EmitResult r = w.Emit("python.cpu.sampled", {{"cpu_percent", 1.0}});
      switch (r) {
        case EmitResult::kOk: ok.fetch_add(1); break;
        case EmitResult::kSuppressedDisabled: disabled.fetch_add(1); break;
        case EmitResult::kSuppressedFiltered: filtered.fetch_add(1); break;
        default: other.fetch_add(1); break;
      }
      last.store(static_cast<int>(r));
    }
  });
  // Each switch waits until the emitter has seen the new state: an outcome that differs from
  // the previous state's, so the next switch starts from a state the worker really runs.
  constexpr int kSwitches = 200;
  bool switched = true;
  for (int i = 0; i < kSwitches && switched; ++i) {
    ASSERT_TRUE(h.SetControl(id, on_deny).ok());
    switched = WaitFor([&] { return last.load() == int(EmitResult::kSuppressedFiltered); });
    ASSERT_TRUE(h.SetControl(id, off).ok());
    switched = switched &&
               WaitFor([&] { return last.load() == int(EmitResult::kSuppressedDisabled); });
  }
  stop.store(true);
  emitter.join();
  ASSERT_TRUE(switched) << "the worker did not follow a switch";

  EXPECT_EQ(ok.load(), 0u) << "denied events emitted and sent while the worker switched";
  EXPECT_EQ(other.load(), 0u);
  EXPECT_GT(filtered.load(), 0u);
  EXPECT_GT(disabled.load(), 0u);
  const WorkerStats ws = w.Stats();
  EXPECT_EQ(ws.published, sent_before);
  EXPECT_EQ(ws.suppressed_filtered, filtered.load());
  ASSERT_TRUE(WaitFor([&] {
    const RingStats r = RemoteRing(h, id);
    return r.emitted == ws.emitted && r.Conserved();
  }));
  EXPECT_EQ(this->collector_.Count("snakepit.python.cpu.sampled"), 0u);
}

// What a host writes to one stream, in order: each control update as a toggle, sampling or
// filter message, or as the whole state.
struct ControlWire {
  enum Kind { kToggle, kSampling, kFilter, kWhole };
  struct Message {
    Kind kind;
    bool enabled;  // kToggle and kWhole
  };
  std::mutex mu;
  std::vector<Message> messages;

  void Add(const pb::TelemetryControl& c) {
    switch (c.control_case()) {
      case pb::TelemetryControl::kToggle: Push({kToggle, c.toggle().enabled()}); break;
      case pb::TelemetryControl::kSampling: Push({kSampling, false}); break;
      case pb::TelemetryControl::kFilter: Push({kFilter, false}); break;
      case pb::TelemetryControl::kPitlaneState: Push({kWhole, c.pitlane_state().enabled()}); break;
      default: break;
    }
  }
  void Push(Message m) {
    std::lock_guard<std::mutex> l(mu);
    messages.push_back(m);
  }
  std::vector<Message> Snapshot() {
    std::lock_guard<std::mutex> l(mu);
    return messages;
  }
  size_t Count() { return Snapshot().size(); }
  bool AnyWhole() {
    for (const Message& m : Snapshot()) {
      if (m.kind == kWhole) return true;
    }
    return false;
  }
};

// Toggles `id` off, on, off and checks that each update reached `wire` as `per_update`
// messages from index `base` on: one whole state, or toggle, sampling, filter.
void ExpectMessagesPerUpdate(Host& h, const std::string& id, ControlWire& wire, size_t base,
                             size_t per_update) {
  const bool states[] = {false, true, false};
  for (size_t k = 0; k < 3; ++k) {
    ASSERT_TRUE(h.Toggle(id, states[k]).ok());
    ASSERT_TRUE(WaitFor([&] { return wire.Count() >= base + (k + 1) * per_update; }))
        << "update " << k << ": " << wire.Count() - base << " messages";
  }
  const std::vector<ControlWire::Message> m = wire.Snapshot();
  ASSERT_EQ(m.size(), base + 3 * per_update);
  for (size_t k = 0; k < 3; ++k) {
    const ControlWire::Message* u = &m[base + k * per_update];
    SCOPED_TRACE("update " + std::to_string(k));
    if (per_update == 1) {
      EXPECT_EQ(u[0].kind, ControlWire::kWhole);
    } else {
      ASSERT_EQ(per_update, 3u);
      EXPECT_EQ(u[0].kind, ControlWire::kToggle);
      EXPECT_EQ(u[1].kind, ControlWire::kSampling);
      EXPECT_EQ(u[2].kind, ControlWire::kFilter);
    }
    EXPECT_EQ(u[0].enabled, states[k]);
  }
}

// ── control racing a stream's opening ──────────────────────────────────────────────────────
// What must hold: the first thing a stream receives is its whole initial state (its first
// message carries the host's catalog hash), an update that lands while the stream opens comes
// after it, and the host never writes to a stream before it can.

// Opens a stream as worker `id` (a foreign peer: the state comes as three messages), returns
// the downstream messages up to the one completing the initial state, then closes the stream.
std::vector<pb::TelemetryDownstream> OpenAndReadInitialState(pb::TelemetryIngest::Stub& ingest,
                                                             const std::string& id) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  auto s = ingest.StreamTelemetry(&ctx);
  pb::TelemetryUpstream hello;
  hello.mutable_hello()->set_worker_id(id);
  hello.mutable_hello()->set_pid(1);
  std::vector<pb::TelemetryDownstream> got;
  if (s->Write(hello)) {
    pb::TelemetryDownstream d;
    while (s->Read(&d)) {
      got.push_back(d);
      if (d.initial_state_complete()) break;
    }
  }
  s->WritesDone();
  pb::TelemetryDownstream rest;
  while (s->Read(&rest)) {
  }
  (void)s->Finish();
  return got;
}

TEST(GrpcControlRace, UpdatesWhileStreamsOpenArriveAfterEachStreamsInitialState) {
  ScopedNamespace ns;
  auto host = StartGrpcHost(ns.name());
  ASSERT_NE(host, nullptr);
  host->RunInBackground();
  auto ingest = IngestClient(host->grpc_port());
  const std::string id = "racer";
  ASSERT_FALSE(OpenAndReadInitialState(*ingest, id).empty());  // known to the host from now on

  // Updates back to back for the whole test, while streams of that worker open and close.
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> updates{0};
  std::thread updater([&] {
    ControlState on, off;
    off.enabled = false;
    while (!stop.load()) {
      ASSERT_TRUE(host->SetControl(id, updates.load() % 2 == 0 ? off : on).ok());
      updates.fetch_add(1);
    }
  });
  constexpr int kStreams = 300;
  int complete = 0, hash_first = 0;
  for (int i = 0; i < kStreams; ++i) {
    const std::vector<pb::TelemetryDownstream> got = OpenAndReadInitialState(*ingest, id);
    complete += !got.empty() && got.back().initial_state_complete();
    // Only the initial state's first message carries the catalog hash: an update written
    // ahead of it would come first without one.
    hash_first += !got.empty() && got.front().catalog_hash() != 0;
  }
  stop.store(true);
  updater.join();
  EXPECT_EQ(complete, kStreams) << "streams that did not receive a whole initial state";
  EXPECT_EQ(hash_first, kStreams) << "streams whose first message was not the initial state";
  EXPECT_GT(updates.load(), static_cast<uint64_t>(kStreams)) << "the updates did not race";
}

bool OpenStreamOf(Host& h, const std::string& id) {
  for (const WorkerInfo& w : h.Workers()) {
    if (w.id == id && w.alive) return true;
  }
  return false;
}

// A host whose inbox is full waits for its poll thread before it takes more from any stream. A
// control update must not wait for it too: the thread that polls may be the one making the
// update (an application that polls and controls its host from one thread, a handler), and it
// would then never poll again.
TEST(GrpcControlRace, UpdateForAStreamOpeningBehindAFullInboxDoesNotWaitForThePollThread) {
  ScopedNamespace ns;
  auto host = StartGrpcHost(ns.name());  // not polled: its inbox only fills
  ASSERT_NE(host, nullptr);
  auto ingest = IngestClient(host->grpc_port());
  // One worker fills the inbox (65536 events) with its first message.
  grpc::ClientContext flood_ctx;
  auto flood = ingest->StreamTelemetry(&flood_ctx);
  pb::TelemetryUpstream hello = Hello("flood");
  for (int i = 0; i < (1 << 17); ++i) hello.add_events();
  ASSERT_TRUE(flood->Write(hello));
  // Its initial state arrives just before the host queues that message's events.
  pb::TelemetryDownstream d;
  while (flood->Read(&d) && !d.initial_state_complete()) {
  }
  ASSERT_TRUE(d.initial_state_complete());
  // Another worker's stream opens behind the full inbox.
  grpc::ClientContext x_ctx;
  auto x = ingest->StreamTelemetry(&x_ctx);
  ASSERT_TRUE(x->Write(Hello("x")));
  ASSERT_TRUE(WaitFor([&] { return OpenStreamOf(*host, "x"); }));

  // The thread that polls the host updates that worker's control before it polls again.
  std::atomic<bool> updated{false};
  std::thread app([&] {
    EXPECT_TRUE(host->Toggle("x", false).ok());
    updated.store(true);
  });
  EXPECT_TRUE(WaitFor([&] { return updated.load(); }))
      << "the update waits for a poll that only its own thread would make";
  // Polling (what that thread does next) lets a stuck update through, so the test can end.
  while (!updated.load()) {
    host->PollOnce();
    std::this_thread::sleep_for(milliseconds(1));
  }
  app.join();
  flood_ctx.TryCancel();
  x_ctx.TryCancel();
  (void)flood->Finish();
  (void)x->Finish();
}

// ── the last ack ────────────────────────────────────────────────────────────────────────────
// A worker that closes its side is sent, before the stream ends, an ack for everything it sent
// that the host folded meanwhile.
TEST(GrpcAcks, WorkerClosingItsSideIsAckedForEverythingItSent) {
  ScopedNamespace ns;
  auto host = StartGrpcHost(ns.name());
  ASSERT_NE(host, nullptr);
  host->RunInBackground();
  auto ingest = IngestClient(host->grpc_port());
  constexpr int kStreams = 40, kBatches = 8, kPerBatch = 500;
  int short_acked = 0;
  uint64_t next = 0;
  for (int s = 0; s < kStreams; ++s) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    auto stream = ingest->StreamTelemetry(&ctx);
    ASSERT_TRUE(stream->Write(Hello("acked")));
    for (int b = 0; b < kBatches; ++b) {
      pb::TelemetryUpstream m;
      m.set_first_sequence(next);
      for (int i = 0; i < kPerBatch; ++i) m.add_events()->add_event_parts("x");
      next += kPerBatch;
      ASSERT_TRUE(stream->Write(m));
    }
    stream->WritesDone();
    uint64_t acked = 0;
    pb::TelemetryDownstream d;
    while (stream->Read(&d)) acked = std::max<uint64_t>(acked, d.acked_sequence());
    ASSERT_TRUE(stream->Finish().ok());
    short_acked += acked != next;
  }
  EXPECT_EQ(short_acked, 0) << "of " << kStreams << " streams ended without an ack for all they sent";
}

// Replaces worker `id`'s control state in a loop, as fast as SetControl returns, until Stop.
// Each update is one or three messages to the worker's stream, so a stream whose peer does not
// read fills up. Stalled() waits for the host to cancel that stream, then for the updates to go
// on; false, with why, otherwise.
class UpdateLoop {
 public:
  UpdateLoop(Host& host, const std::string& id)
      : thread_([this, &host, id] {
          for (uint64_t i = 0; !stop_.load(); ++i) {
            ControlState s;
            s.enabled = i % 2 == 0;
            (void)host.SetControl(id, s);
            updates_.fetch_add(1);
          }
        }) {}
  ~UpdateLoop() { Stop(); }
  void Stop() {
    stop_.store(true);
    if (thread_.joinable()) thread_.join();
  }
  ::testing::AssertionResult CancelledAndGoingOn(HostLog& log, const std::string& id) {
    if (!WaitFor([&] { return log.Has("stream of worker " + id + " cancelled"); },
                 milliseconds(120000))) {
      return ::testing::AssertionFailure()
             << "no stalled stream was cancelled after " << updates_.load() << " updates";
    }
    // Before the watchdog, the updates stopped here for good.
    const uint64_t at_cancel = updates_.load();
    if (!WaitFor([&] { return updates_.load() > at_cancel + 100; })) {
      return ::testing::AssertionFailure()
             << updates_.load() << " updates, " << at_cancel << " at the cancel";
    }
    return ::testing::AssertionSuccess();
  }

 private:
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> updates_{0};
  std::thread thread_;
};

// A peer that keeps sending but never reads: once gRPC's buffers for it are full, a write to
// it blocks. The host cancels that stream (StreamHandle, kStalledWrite) instead of blocking
// every control update behind it forever; the updates go on and the peer may reconnect.
TEST(GrpcStalledPeer, PeerThatStopsReadingIsCancelledAndControlUpdatesGoOn) {
  ScopedNamespace ns;
  HostLog log;
  auto host = StartGrpcHost(ns.name(), {}, &log);
  ASSERT_NE(host, nullptr);
  host->RunInBackground();
  auto ingest = IngestClient(host->grpc_port());
  grpc::ClientContext ctx;
  auto stream = ingest->StreamTelemetry(&ctx);
  ASSERT_TRUE(stream->Write(Hello("deaf")));
  std::atomic<bool> stop{false};
  std::thread sender([&] {  // events (so acks too), and never a Read
    for (uint64_t next = 0; !stop.load(); ++next) {
      pb::TelemetryUpstream m;
      m.set_first_sequence(next);
      m.add_events()->add_event_parts("x");
      if (!stream->Write(m)) break;
    }
  });
  ASSERT_TRUE(WaitFor([&] { return host->SetControl("deaf", ControlState()).ok(); }));
  UpdateLoop updates(*host, "deaf");
  EXPECT_TRUE(updates.CancelledAndGoingOn(log, "deaf"));
  stop.store(true);
  ctx.TryCancel();  // also frees an update blocked in a host that never cancelled
  sender.join();
  updates.Stop();
  EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::CANCELLED);
}

TEST(GrpcWholeControlState, DialInWorkerThatAcceptsItGetsOneMessagePerUpdateOthersThree) {
  for (const bool accepts : {true, false}) {
    SCOPED_TRACE(accepts ? "worker accepts control_state" : "foreign client");
    ScopedNamespace ns;
    auto host = StartGrpcHost(ns.name());
    ASSERT_NE(host, nullptr);
    host->RunInBackground();
    auto ingest = IngestClient(host->grpc_port());
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    auto stream = ingest->StreamTelemetry(&ctx);
    pb::TelemetryUpstream hello = Hello("wire");
    hello.mutable_hello()->set_accepts_control_state(accepts);
    ASSERT_TRUE(stream->Write(hello));

    ControlWire wire;
    std::atomic<int> complete_at{-1};  // messages read when initial_state_complete arrived
    std::atomic<uint64_t> catalog_hash_at{0};
    std::thread reader([&] {
      pb::TelemetryDownstream d;
      while (stream->Read(&d)) {
        if (d.has_control_state()) {
          pb::TelemetryControl c;
          *c.mutable_pitlane_state() = d.control_state();
          wire.Add(c);
        }
        if (d.has_control()) wire.Add(d.control());
        if (d.catalog_hash() != 0 && wire.Count() == 1) catalog_hash_at.store(d.catalog_hash());
        if (d.initial_state_complete()) complete_at.store(static_cast<int>(wire.Count()));
      }
    });
    const size_t initial = accepts ? 1 : 3;
    // The initial state: its first message carries the host's catalog hash, its last
    // initial_state_complete.
    ASSERT_TRUE(WaitFor([&] { return complete_at.load() >= 0; }));
    EXPECT_EQ(complete_at.load(), static_cast<int>(initial));
    EXPECT_EQ(catalog_hash_at.load(), host->catalog().hash());
    ExpectMessagesPerUpdate(*host, "wire", wire, initial, accepts ? 1 : 3);
    EXPECT_EQ(wire.AnyWhole(), accepts);
    ctx.TryCancel();
    reader.join();
    stream->Finish();
  }
}

// Serves `service` on an ephemeral loopback port (*port: the port, 0 when it failed).
std::unique_ptr<grpc::Server> ServeOnLoopback(grpc::Service* service, int* port) {
  grpc::ServerBuilder b;
  b.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), port);
  b.RegisterService(service);
  return b.BuildAndStart();
}

// A peer serving StreamTelemetry at Snakepit's path that records the control messages it is
// sent. As a pitlane worker it answers with pitlane's headers (pid, catalog, and that it applies
// the whole state) and a counters message; as Snakepit's worker, with nothing.
class ControlRecordingPeer final : public ::snakepit::bridge::BridgeService::Service {
 public:
  explicit ControlRecordingPeer(bool pitlane) : pitlane_(pitlane) {}
  grpc::Status StreamTelemetry(
      grpc::ServerContext* ctx,
      grpc::ServerReaderWriter<pb::TelemetryEvent, pb::TelemetryControl>* stream) override {
    if (pitlane_) {
      ctx->AddInitialMetadata("x-pitlane-worker-id", "peer");
      ctx->AddInitialMetadata("x-pitlane-pid", std::to_string(getpid()));
      ctx->AddInitialMetadata("x-pitlane-catalog-hash",
                              std::to_string(Catalog::Default()->hash()));
      ctx->AddInitialMetadata("x-pitlane-control-state", "1");
      pb::TelemetryEvent counters;
      counters.mutable_pitlane_counters();
      stream->Write(counters);
    }
    pb::TelemetryControl c;
    while (stream->Read(&c)) wire.Add(c);
    return grpc::Status::OK;
  }
  ControlWire wire;

 private:
  const bool pitlane_;
};

TEST(GrpcWholeControlState, DialedPitlaneWorkerGetsOneMessagePerUpdateASnakepitPeerThree) {
  for (const bool pitlane : {true, false}) {
    SCOPED_TRACE(pitlane ? "pitlane worker" : "Snakepit worker");
    ScopedNamespace ns;
    ControlRecordingPeer peer(pitlane);
    int port = 0;
    std::unique_ptr<grpc::Server> server = ServeOnLoopback(&peer, &port);
    ASSERT_GT(port, 0);
    auto host = StartHostDialing(ns.name(), "peer", port);
    ASSERT_NE(host, nullptr);
    host->RunInBackground();
    // Until the peer shows it is a pitlane worker, the host sends it the three parts, once (a
    // second time only if the state changed while the stream was being registered); a pitlane
    // worker then gets the whole state.
    size_t base = 3;
    if (pitlane) {
      ASSERT_TRUE(WaitFor([&] { return peer.wire.AnyWhole(); }));
      base = peer.wire.Count();
    } else {
      ASSERT_TRUE(WaitFor([&] { return peer.wire.Count() >= base; }));
    }
    ExpectMessagesPerUpdate(*host, "peer", peer.wire, base, pitlane ? 1 : 3);
    if (!pitlane) {
      EXPECT_FALSE(peer.wire.AnyWhole());
    }
    host.reset();
    server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
  }
}

// A worker serving StreamTelemetry that never reads what the host sends it.
class DeafPeer final : public ::snakepit::bridge::BridgeService::Service {
 public:
  grpc::Status StreamTelemetry(
      grpc::ServerContext* ctx,
      grpc::ServerReaderWriter<pb::TelemetryEvent, pb::TelemetryControl>*) override {
    streams.fetch_add(1);
    while (!ctx->IsCancelled()) std::this_thread::sleep_for(milliseconds(10));
    return grpc::Status::OK;
  }
  std::atomic<int> streams{0};
};

// The same for the direction Snakepit uses: the host dials a worker that never reads. Its
// stream is cancelled, the updates go on, and the host dials it again.
TEST(GrpcStalledPeer, DialedWorkerThatNeverReadsIsCancelledAndRedialed) {
  ScopedNamespace ns;
  DeafPeer peer;
  int port = 0;
  std::unique_ptr<grpc::Server> server = ServeOnLoopback(&peer, &port);
  ASSERT_GT(port, 0);
  HostLog log;
  auto host = StartHostDialing(ns.name(), "deaf", port, &log);
  ASSERT_NE(host, nullptr);
  host->RunInBackground();
  ASSERT_TRUE(WaitFor([&] { return peer.streams.load() == 1; }));
  UpdateLoop updates(*host, "deaf");
  EXPECT_TRUE(updates.CancelledAndGoingOn(log, "deaf"));
  EXPECT_TRUE(WaitFor([&] { return peer.streams.load() >= 2; })) << "the host did not redial";
  // Ending the peer's calls also frees an update blocked in a host that never cancelled.
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
  updates.Stop();
  host.reset();
}

// A host that sends the three parts (an older pitlane host) still controls a dial-in worker:
// each message replaces its kind, as before.
class PartsSendingHost final : public pb::TelemetryIngest::Service {
 public:
  grpc::Status StreamTelemetry(
      grpc::ServerContext*,
      grpc::ServerReaderWriter<pb::TelemetryDownstream, pb::TelemetryUpstream>* stream) override {
    pb::TelemetryUpstream up;
    if (!stream->Read(&up)) return grpc::Status::OK;
    accepts_control_state.store(up.hello().accepts_control_state());
    pb::TelemetryDownstream d[3];
    d[0].mutable_control()->mutable_toggle()->set_enabled(false);
    d[0].set_catalog_hash(Catalog::Default()->hash());
    d[1].mutable_control()->mutable_sampling()->set_sampling_rate(1.0);
    d[2].mutable_control()->mutable_filter()->add_deny("python.cpu.*");
    d[2].set_initial_state_complete(true);
    for (const auto& m : d) stream->Write(m);
    while (!enable.load()) std::this_thread::sleep_for(milliseconds(2));
    pb::TelemetryDownstream on;
    on.mutable_control()->mutable_toggle()->set_enabled(true);
    stream->Write(on);
    while (stream->Read(&up)) {
    }
    return grpc::Status::OK;
  }
  std::atomic<bool> accepts_control_state{false};
  std::atomic<bool> enable{false};
};

TEST(GrpcWholeControlState, DialInWorkerStillAppliesTheThreePartsOfAHostThatSendsThem) {
  ScopedNamespace ns;
  PartsSendingHost host;
  int port = 0;
  std::unique_ptr<grpc::Server> server = ServeOnLoopback(&host, &port);
  ASSERT_GT(port, 0);
  WorkerOptions wo;
  wo.flush_timeout = milliseconds(200);
  auto w = StartGrpcWorker(ns.name(), "parts", "127.0.0.1:" + std::to_string(port), wo);
  ASSERT_NE(w, nullptr);
  ASSERT_TRUE(w->WaitAttached(milliseconds(10000)));
  EXPECT_TRUE(host.accepts_control_state.load());
  ASSERT_TRUE(EmitUntil(*w, "python.gc.completed", EmitResult::kSuppressedDisabled));
  host.enable.store(true);
  ASSERT_TRUE(EmitUntil(*w, "python.gc.completed", EmitResult::kOk));
  // The toggle replaced the toggle only: the filter from before still holds.
  EXPECT_EQ(w->Emit("python.cpu.sampled", {{"cpu_percent", 1.0}}), EmitResult::kSuppressedFiltered);
  w.reset();
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
}

// ── transport selection (README "Defaults") ─────────────────────────────────────────────────
class EnvGuard {
 public:
  EnvGuard(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    if (value) setenv(name, value, 1);
    else unsetenv(name);
  }
  ~EnvGuard() {
    if (old_) setenv(name_, old_->c_str(), 1);
    else unsetenv(name_);
  }

 private:
  const char* name_;
  std::optional<std::string> old_;
};

TEST(GrpcTransportSelection, AutoPrefersALocalHostAndFallsBackToGrpc) {
  ScopedNamespace ns;
  auto host = StartGrpcHost(ns.name());
  ASSERT_NE(host, nullptr);
  host->RunInBackground();
  const std::string target = "127.0.0.1:" + std::to_string(host->grpc_port());
  EnvGuard t(defaults::kGrpcTargetEnv, target.c_str());
  EnvGuard m(defaults::kTransportEnv, "auto");
  WorkerOptions o;
  o.ns = ns.name();
  o.worker_id = "local";
  auto local = Worker::Start(o);
  ASSERT_TRUE(local.ok());
  EXPECT_EQ((*local)->transport(), WorkerTransport::kShm);

  ScopedNamespace elsewhere;  // no host on this machine for this namespace
  o.ns = elsewhere.name();
  o.worker_id = "remote";
  auto remote = Worker::Start(o);
  ASSERT_TRUE(remote.ok());
  EXPECT_EQ((*remote)->transport(), WorkerTransport::kGrpc);
  EXPECT_TRUE((*remote)->WaitAttached(milliseconds(10000)));
}

TEST(GrpcTransportSelection, BadOrIncompleteSettingsAreClearErrors) {
  ScopedNamespace ns;
  {
    EnvGuard m(defaults::kTransportEnv, "carrier-pigeon");
    WorkerOptions o;
    o.ns = ns.name();
    auto w = Worker::Start(o);
    ASSERT_FALSE(w.ok());
    EXPECT_NE(w.status().message().find("carrier-pigeon"), std::string::npos);
  }
  {
    EnvGuard t(defaults::kGrpcTargetEnv, nullptr);
    EnvGuard l(defaults::kGrpcListenEnv, nullptr);
    WorkerOptions o;
    o.ns = ns.name();
    o.transport = WorkerTransport::kGrpc;
    auto w = Worker::Start(o);
    ASSERT_FALSE(w.ok());
    EXPECT_NE(w.status().message().find("PITLANE_GRPC_TARGET"), std::string::npos);
  }
  {
    WorkerOptions o;
    o.ns = ns.name();
    o.transport = WorkerTransport::kGrpc;
    o.grpc_target = "127.0.0.1:1";
    o.grpc_queue_bytes = 1000;
    auto w = Worker::Start(o);
    ASSERT_FALSE(w.ok());
    EXPECT_NE(w.status().message().find("power of two"), std::string::npos);
  }
  {
    HostOptions o;
    o.ns = ns.name();
    o.grpc_dial = {"=127.0.0.1:5"};
    auto h = Host::Start(o);
    EXPECT_FALSE(h.ok());
  }
  // The worker's own addresses follow the host's rules: gRPC alone would serve 470400 as port
  // 11648 and accept a target it can never dial.
  struct Bad {
    const char* listen;
    const char* target;
    const char* names;
    const char* why;
  };
  for (const Bad& b : {Bad{"127.0.0.1:470400", "", "PITLANE_GRPC_LISTEN", "0-65535"},
                       Bad{"noport", "", "PITLANE_GRPC_LISTEN", "no port"},
                       Bad{"", "a=b=c", "PITLANE_GRPC_TARGET", "no port"},
                       Bad{"", "127.0.0.1:99999", "PITLANE_GRPC_TARGET", "out of range"},
                       Bad{"", "127.0.0.1:0", "PITLANE_GRPC_TARGET", "cannot be dialed"}}) {
    WorkerOptions o;
    o.ns = ns.name();
    o.transport = WorkerTransport::kGrpc;
    o.grpc_listen = b.listen;
    o.grpc_target = b.target;
    auto w = Worker::Start(o);
    ASSERT_FALSE(w.ok()) << b.listen << b.target;
    EXPECT_EQ(w.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(w.status().message().find(b.names), std::string::npos) << w.status().message();
    EXPECT_NE(w.status().message().find(b.why), std::string::npos) << w.status().message();
  }
}

TEST(GrpcTransportSelection, WorkerWithoutAHostQueuesThenDeliversWhenItAppears) {
  ScopedNamespace ns;
  // Reserve a port, then free it for the host that comes later.
  auto probe = StartGrpcHost(ns.name());
  const int port = probe->grpc_port();
  probe.reset();
  WorkerOptions o;
  o.flush_timeout = milliseconds(10000);
  auto w = StartGrpcWorker(ns.name(), "early", "127.0.0.1:" + std::to_string(port), o);
  ASSERT_NE(w, nullptr);
  EXPECT_FALSE(w->attached());
  for (int i = 0; i < 1000; ++i) EXPECT_EQ(w->Emit("python.call.stop", {{"duration", i}}), EmitResult::kOk);
  HostOptions ho;
  ho.grpc_listen = "127.0.0.1:" + std::to_string(port);
  auto host = StartGrpcHost(ns.name(), ho);
  ASSERT_NE(host, nullptr);
  Collector c;
  c.Attach(*host);
  host->RunInBackground();
  ASSERT_TRUE(WaitFor([&] { return c.Count("snakepit.python.call.stop") == 1000; }, milliseconds(20000)));
}

}  // namespace
}  // namespace pitlane

namespace pitlane {
namespace {

// ── TLS ────────────────────────────────────────────────────────────────────────────────────
TEST(GrpcTls, WorkerTrustingTheHostsCaStreamsOverTlsAndAPlaintextOneCannot) {
  if (std::system("command -v openssl >/dev/null 2>&1") != 0) {
    GTEST_SKIP() << "openssl is not installed (needed to make a test certificate)";
  }
  char dir_template[] = "/tmp/pitlane-tls-XXXXXX";
  const char* dir = mkdtemp(dir_template);
  ASSERT_NE(dir, nullptr);
  const std::string cert = std::string(dir) + "/cert.pem", key = std::string(dir) + "/key.pem";
  const std::string cmd = "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost "
                          "-addext subjectAltName=DNS:localhost,IP:127.0.0.1 -keyout " +
                          key + " -out " + cert + " >/dev/null 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0);
  ScopedNamespace ns;
  HostOptions o;
  o.grpc_tls_cert = cert;
  o.grpc_tls_key = key;
  auto host = StartGrpcHost(ns.name(), o);
  ASSERT_NE(host, nullptr);
  Collector c;
  c.Attach(*host);
  host->RunInBackground();
  // An IP target (the certificate names it too): no DNS lookup, so no resolver state.
  const std::string target = "127.0.0.1:" + std::to_string(host->grpc_port());

  WorkerOptions wo;
  wo.grpc_tls_ca = cert;
  auto w = StartGrpcWorker(ns.name(), "tls-worker", target, wo);
  ASSERT_NE(w, nullptr);
  ASSERT_TRUE(w->WaitAttached(milliseconds(10000)));
  for (int i = 0; i < 10; ++i) w->Emit("python.call.stop", {{"duration", i}});
  EXPECT_TRUE(WaitFor([&] { return c.Count("snakepit.python.call.stop") == 10; }));

  WorkerOptions plain;
  plain.flush_timeout = milliseconds(100);
  auto p = StartGrpcWorker(ns.name(), "plain-worker", target, plain);
  ASSERT_NE(p, nullptr);
  EXPECT_FALSE(p->WaitAttached(milliseconds(1000)));

  WorkerOptions missing;
  missing.grpc_tls_ca = std::string(dir) + "/no-such-ca.pem";
  WorkerOptions mo = missing;
  mo.ns = ns.name();
  mo.worker_id = "no-ca";
  mo.transport = WorkerTransport::kGrpc;
  mo.grpc_target = target;
  auto m = Worker::Start(mo);
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find("no-such-ca.pem"), std::string::npos);
  w.reset();
  p.reset();
  host.reset();
  std::system(("rm -rf " + std::string(dir)).c_str());
}

}  // namespace
}  // namespace pitlane
