// StatsdExporter end to end: a real host and worker in one process, the exporter pointed at a
// UDP socket the test binds on 127.0.0.1:0; the datagrams received are split into lines and
// checked (names, values, |c, |ms, |g, |@rate, tags, sanitising, batching).
#include "pitlane/statsd_exporter.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "pitlane/host.h"
#include "pitlane/worker.h"
#include "testing.h"

namespace pitlane {
namespace {

using namespace std::chrono_literals;

class StatsdExporterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (catalog_ == nullptr) {
      host_ = testing::StartHost(ns_.name());
    } else {
      HostOptions ho;
      ho.ns = ns_.name();
      ho.log = [](std::string_view) {};
      ho.catalog = catalog_;
      host_ = std::move(Host::Start(ho)).value();
    }
    ASSERT_NE(host_, nullptr);
    worker_ = testing::StartWorker(ns_.name(), "statsd-worker");
    ASSERT_NE(worker_, nullptr);

    fd_ = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    ASSERT_GE(fd_, 0);
    const int rcvbuf = 4 << 20;
    setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    socklen_t len = sizeof(addr);
    ASSERT_EQ(getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len), 0);
    address_ = "127.0.0.1:" + std::to_string(ntohs(addr.sin_port));
  }
  void TearDown() override {
    if (fd_ >= 0) close(fd_);
  }

  std::unique_ptr<StatsdExporter> Make(StatsdOptions o) {
    o.address = address_;
    auto r = StatsdExporter::Create(std::move(o));
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    auto e = std::move(r).value();
    e->Start();
    EXPECT_TRUE(e->AttachTo(*host_, "statsd").ok());
    return e;
  }

  // Receives datagrams until `want` of them arrived or the deadline passed.
  std::vector<std::string> ReceiveDatagrams(uint64_t want) {
    std::vector<std::string> out;
    const auto deadline = std::chrono::steady_clock::now() + 5s;
    while (out.size() < want && std::chrono::steady_clock::now() < deadline) {
      pollfd p{fd_, POLLIN, 0};
      if (poll(&p, 1, 100) <= 0) continue;
      char buf[65536];
      const ssize_t n = recv(fd_, buf, sizeof(buf), 0);
      if (n > 0) out.emplace_back(buf, static_cast<size_t>(n));
    }
    return out;
  }

  static std::vector<std::string> SplitLines(const std::vector<std::string>& datagrams) {
    std::vector<std::string> lines;
    for (const std::string& d : datagrams) {
      size_t start = 0;
      while (start <= d.size()) {
        const size_t nl = std::min(d.find('\n', start), d.size());
        lines.push_back(d.substr(start, nl - start));
        start = nl + 1;
      }
    }
    return lines;
  }

  // Stops the exporter (sending what is queued) and returns every line it sent.
  std::vector<std::string> StopAndCollect(StatsdExporter& e) {
    EXPECT_TRUE(host_->DrainAll(5s));
    e.Stop();
    EXPECT_EQ(e.send_errors(), 0u);
    return SplitLines(ReceiveDatagrams(e.datagrams_sent()));
  }

  testing::ScopedNamespace ns_;
  std::shared_ptr<const Catalog> catalog_;  // the host's; null → the compiled-in one
  std::unique_ptr<Host> host_;
  std::unique_ptr<Worker> worker_;
  int fd_ = -1;
  std::string address_;
};

TEST_F(StatsdExporterTest, CounterTimingsGaugesAndTagsPerEvent) {
  StatsdOptions o;
  o.prefix = "app";
  o.tag_keys = {"worker_id", "command", "absent"};
  auto exporter = Make(o);
  ASSERT_EQ(worker_->Emit("python.call.stop",
                          {{"duration", int64_t{2'500'000}},  // ns
                           {"latency_ms", 7.5},               // already ms
                           {"queue_depth", int64_t{4}},
                           {"cpu_percent", 12.25},
                           {"bytes", int64_t{-3}},
                           {"count", "not a number"}},
                          {{"command", "predict"}}),
            EmitResult::kOk);
  const std::vector<std::string> lines = StopAndCollect(*exporter);
  const std::string tags = "|#worker_id:statsd-worker,command:predict";
  const std::string base = "app.snakepit.python.call.stop";
  const std::vector<std::string> want = {
      base + ":1|c" + tags,
      base + ".duration:2.5|ms" + tags,
      base + ".latency_ms:7.5|ms" + tags,
      base + ".queue_depth:4|g" + tags,
      base + ".cpu_percent:12.25|g" + tags,
      base + ".bytes:0|g" + tags,  // a negative gauge is set to 0 first ...
      base + ".bytes:-3|g" + tags, // ... then changed by -3
  };
  // The counter comes first; measurements follow in the order the host delivers them.
  ASSERT_EQ(lines.size(), want.size());
  EXPECT_EQ(lines[0], want[0]);
  std::vector<std::string> sorted_lines = lines, sorted_want = want;
  std::sort(sorted_lines.begin(), sorted_lines.end());
  std::sort(sorted_want.begin(), sorted_want.end());
  EXPECT_EQ(sorted_lines, sorted_want);
  const auto zero = std::find(lines.begin(), lines.end(), want[5]);
  const auto negative = std::find(lines.begin(), lines.end(), want[6]);
  EXPECT_EQ(negative - zero, 1);
  EXPECT_EQ(exporter->lines_sent(), want.size());
  EXPECT_EQ(exporter->datagrams_sent(), 1u);
}

// The report the host's status line and `pitlane stat` show: the kind, the address it sends to
// and every count, each equal to its accessor.
TEST_F(StatsdExporterTest, ReportNamesTheAddressAndEveryCount) {
  auto exporter = Make(StatsdOptions());
  ASSERT_EQ(worker_->Emit("python.call.start", {{"system_time", int64_t{7}}}), EmitResult::kOk);
  const std::vector<std::string> lines = StopAndCollect(*exporter);
  ASSERT_FALSE(lines.empty());
  const ExporterReport r = exporter->Report();
  EXPECT_EQ(r.name, "statsd");
  EXPECT_EQ(r.target, "udp " + address_);
  const std::vector<std::pair<std::string, uint64_t>> want = {
      {"datagrams_sent", 1},          {"lines_sent", lines.size()}, {"overflow", 0},
      {"send_errors", 0},             {"sampled_out", 0},           {"skipped_values", 0},
      {"resolves", 0}};
  EXPECT_EQ(r.counts, want);
}

TEST_F(StatsdExporterTest, HostileMetadataIsSanitisedInTags) {
  StatsdOptions o;
  o.tag_keys = {"command", "transport"};
  auto exporter = Make(o);
  ASSERT_EQ(worker_->Emit("python.call.start", {}, {{"command", "a:b|c@d#e,f\ng h\xFF"}}),
            EmitResult::kOk);
  const std::vector<std::string> lines = StopAndCollect(*exporter);
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0], "pitlane.snakepit.python.call.start:1|c|#command:a_b_c_d_e_f_g_h_,transport:shm");
  EXPECT_EQ(StatsdExporter::Sanitize("ok.name-1_x"), "ok.name-1_x");
  EXPECT_EQ(StatsdExporter::Sanitize("x:|@#,\n\r\t y"), "x_________y");
}

TEST_F(StatsdExporterTest, SampleRateBelowOneSamplesAndMarksTheLines) {
  constexpr uint64_t kEvents = 400;
  StatsdOptions o;
  o.sample_rate = 0.25;
  o.seed = 42;
  auto exporter = Make(o);
  for (uint64_t i = 0; i < kEvents; ++i) {
    ASSERT_EQ(worker_->Emit("python.call.stop",
                            {{"duration", int64_t{1'000'000}}, {"queue_depth", int64_t{1}}}),
              EmitResult::kOk);
  }
  const std::vector<std::string> lines = StopAndCollect(*exporter);
  EXPECT_EQ(exporter->exported(), kEvents);
  const uint64_t kept = kEvents - exporter->sampled_out();
  EXPECT_GT(kept, kEvents / 8);  // expected 100; far outside these bounds is a broken sampler
  EXPECT_LT(kept, kEvents / 2);
  ASSERT_EQ(lines.size(), 3 * kept);
  for (size_t i = 0; i < lines.size(); i += 3) {
    EXPECT_EQ(lines[i], "pitlane.snakepit.python.call.stop:1|c|@0.25");
    EXPECT_EQ(lines[i + 1], "pitlane.snakepit.python.call.stop.duration:1|ms|@0.25");
    EXPECT_EQ(lines[i + 2], "pitlane.snakepit.python.call.stop.queue_depth:1|g");  // no rate
  }
}

TEST_F(StatsdExporterTest, LinesAreBatchedIntoDatagramsUpToTheLimit) {
  constexpr uint64_t kEvents = 300;
  StatsdOptions o;
  o.max_datagram_bytes = 512;
  auto exporter = Make(o);
  for (uint64_t i = 0; i < kEvents; ++i) {
    ASSERT_EQ(worker_->Emit("python.call.start", {{"request_size", static_cast<int64_t>(i)}}),
              EmitResult::kOk);
  }
  ASSERT_TRUE(host_->DrainAll(5s));
  exporter->Stop();
  const std::vector<std::string> datagrams = ReceiveDatagrams(exporter->datagrams_sent());
  ASSERT_EQ(datagrams.size(), exporter->datagrams_sent());
  EXPECT_LT(datagrams.size(), kEvents);  // several events per datagram
  for (const std::string& d : datagrams) {
    EXPECT_LE(d.size(), 512u);
    EXPECT_NE(d.back(), '\n');
  }
  const std::vector<std::string> lines = SplitLines(datagrams);
  EXPECT_EQ(lines.size(), 2 * kEvents);
  EXPECT_EQ(exporter->lines_sent(), 2 * kEvents);
  EXPECT_EQ(lines[1], "pitlane.snakepit.python.call.start.request_size:0|g");
  EXPECT_EQ(lines.back(), "pitlane.snakepit.python.call.start.request_size:299|g");
}

TEST(StatsdCreateTest, BadAddressesAndOptionsAreRejectedWithTheReason) {
  for (const std::string bad : {"", "127.0.0.1", "127.0.0.1:", "127.0.0.1:0", "127.0.0.1:65536",
                                "127.0.0.1:12x", "::1:8125", "[::1:8125", "[::1]8125",
                                "999.1.1.1:8125", "1.2.3:8125",
                                ":8125"}) {
    StatsdOptions o;
    o.address = bad;
    auto r = StatsdExporter::Create(o);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(r.status().message().find("\"" + bad + "\""), std::string::npos)
        << r.status().message();
  }
  for (double rate : {0.0, -0.5, 1.5}) {
    StatsdOptions o;
    o.sample_rate = rate;
    EXPECT_FALSE(StatsdExporter::Create(o).ok()) << rate;
  }
}

// system_time is a Unix-epoch timestamp: as a gauge it would only plot the clock.
TEST_F(StatsdExporterTest, TimestampsAreNotSentAsGauges) {
  auto exporter = Make(StatsdOptions{});
  ASSERT_EQ(worker_->Emit("python.call.start",
                          {{"system_time", int64_t{1'700'000'000'000'000'000}},
                           {"request_size", int64_t{12}}}),
            EmitResult::kOk);
  const std::vector<std::string> lines = StopAndCollect(*exporter);
  EXPECT_EQ(lines, (std::vector<std::string>{"pitlane.snakepit.python.call.start:1|c",
                                             "pitlane.snakepit.python.call.start.request_size:12|g"}));
}

// Which values are timings comes from the host's catalog, not from key names: `wait` in seconds
// and `duration` in microseconds are timings in milliseconds; `latency_total`, declared without
// a unit, is a gauge.
class StatsdCatalogUnitsTest : public StatsdExporterTest {
 protected:
  void SetUp() override {
    catalog_ = Catalog::Parse(
                   "root app\n"
                   "measurement wait second\n"
                   "measurement duration microsecond\n"
                   "measurement latency_total\n"
                   "event job.stop worker stop job.stop\n",
                   "statsd test catalog")
                   .value();
    StatsdExporterTest::SetUp();
  }
};

TEST_F(StatsdCatalogUnitsTest, TimingsFollowTheCatalogsUnits) {
  auto exporter = Make(StatsdOptions{});
  ASSERT_EQ(worker_->Emit("job.stop", {{"wait", int64_t{2}},
                                       {"duration", int64_t{1500}},
                                       {"latency_total", int64_t{7}}}),
            EmitResult::kOk);
  std::vector<std::string> lines = StopAndCollect(*exporter);
  std::sort(lines.begin(), lines.end());
  EXPECT_EQ(lines, (std::vector<std::string>{"pitlane.app.job.stop.duration:1.5|ms",
                                             "pitlane.app.job.stop.latency_total:7|g",
                                             "pitlane.app.job.stop.wait:2000|ms",
                                             "pitlane.app.job.stop:1|c"}));
}

// A host name (not only a literal or localhost): the machine's own name, from /etc/hosts.
TEST_F(StatsdExporterTest, AHostNameResolves) {
  char name[256] = {};
  ASSERT_EQ(gethostname(name, sizeof name - 1), 0);
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_DGRAM;
  addrinfo* res = nullptr;
  if (getaddrinfo(name, nullptr, &hints, &res) != 0) GTEST_SKIP() << name << " does not resolve";
  freeaddrinfo(res);
  // A receiver on every IPv4 address of this machine (the name may map to 127.0.1.1).
  const int any = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_ANY);
  ASSERT_EQ(bind(any, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  socklen_t len = sizeof(addr);
  ASSERT_EQ(getsockname(any, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  close(fd_);
  fd_ = any;  // ReceiveDatagrams reads it; TearDown closes it
  StatsdOptions o;
  o.address = std::string(name) + ":" + std::to_string(ntohs(addr.sin_port));
  auto r = StatsdExporter::Create(o);
  ASSERT_TRUE(r.ok()) << o.address << ": " << r.status().ToString();
  auto exporter = std::move(r).value();
  exporter->Start();
  ASSERT_TRUE(exporter->AttachTo(*host_, "statsd").ok());
  ASSERT_EQ(worker_->Emit("python.call.stop"), EmitResult::kOk);
  EXPECT_EQ(StopAndCollect(*exporter),
            (std::vector<std::string>{"pitlane.snakepit.python.call.stop:1|c"}));
}

TEST(StatsdCreateTest, AnUnknownNameIsNotFoundRatherThanAUsageError) {
  StatsdOptions o;
  o.address = "no-such-host.invalid:8125";  // RFC 2606: never resolves
  auto r = StatsdExporter::Create(o);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().code(), StatusCode::kInvalidArgument) << r.status().ToString();
  EXPECT_NE(r.status().message().find("no-such-host.invalid"), std::string::npos);
}

// Sending to the IPv4 broadcast address without SO_BROADCAST fails (EACCES) every time: each
// failure may re-resolve the name, at most once per second.
TEST(StatsdCreateTest, FailedSendsResolveTheNameAgainAtMostOncePerSecond) {
  testing::ScopedNamespace ns;
  auto host = testing::StartHost(ns.name());
  ASSERT_NE(host, nullptr);
  auto worker = testing::StartWorker(ns.name(), "statsd-broadcast");
  ASSERT_NE(worker, nullptr);
  StatsdOptions o;
  o.address = "255.255.255.255:8125";
  auto r = StatsdExporter::Create(o);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  auto exporter = std::move(r).value();
  exporter->Start();
  ASSERT_TRUE(exporter->AttachTo(*host, "statsd").ok());
  for (int batch = 0; batch < 3; ++batch) {
    ASSERT_EQ(worker->Emit("python.call.stop"), EmitResult::kOk);
    ASSERT_TRUE(host->DrainAll(5s));
    const auto deadline = std::chrono::steady_clock::now() + 5s;
    while (exporter->send_errors() <= static_cast<uint64_t>(batch) &&
           std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(1ms);
    }
  }
  exporter->Stop();
  EXPECT_EQ(exporter->send_errors(), 3u);
  EXPECT_EQ(exporter->datagrams_sent(), 0u);
  EXPECT_GE(exporter->resolves(), 1u);
  EXPECT_LE(exporter->resolves(), 2u);  // three failures within about a second
}

TEST(StatsdCreateTest, LiteralsAndLocalhostResolve) {
  for (const std::string good : {"127.0.0.1:8125", "localhost:8125"}) {
    StatsdOptions o;
    o.address = good;
    auto r = StatsdExporter::Create(o);
    EXPECT_TRUE(r.ok()) << good << ": " << r.status().ToString();
  }
  const int v6 = socket(AF_INET6, SOCK_DGRAM, 0);
  if (v6 < 0) GTEST_SKIP() << "no IPv6 sockets here";
  close(v6);
  StatsdOptions o;
  o.address = "[::1]:8125";
  auto r = StatsdExporter::Create(o);
  EXPECT_TRUE(r.ok()) << r.status().ToString();
}

}  // namespace
}  // namespace pitlane
