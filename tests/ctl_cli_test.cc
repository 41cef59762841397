// `pitlane ctl` against a real `pitlane host` process: control updates reach a worker of this
// test process through the host's admin socket; unknown workers and bad values exit 1 with the
// host's message, usage errors 2, no host 3. Also `pitlane host --admin / --no-admin`. Runs the
// built CLI ($PITLANE_CLI, else ../cli/pitlane next to this test binary).
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "testing.h"

namespace pitlane {
namespace {

using testing::CliPath;
using testing::RunCli;

using namespace std::chrono_literals;

bool Exists(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0;
}

std::string Contents(const std::string& path) {
  std::string out;
  if (FILE* f = std::fopen(path.c_str(), "r")) {
    std::array<char, 4096> buf;
    size_t n;
    while ((n = std::fread(buf.data(), 1, buf.size(), f)) > 0) out.append(buf.data(), n);
    std::fclose(f);
  }
  return out;
}

std::string SocketPath(const std::string& ns) { return "/tmp/pitlane." + ns + ".admin.sock"; }

// A `pitlane host` child process, its output in a log file.
class HostProcess {
 public:
  HostProcess(const std::vector<std::string>& args, const std::string& log) : log_(log) {
    pid_ = ::fork();
    if (pid_ == 0) {
      const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
      if (fd >= 0) {
        ::dup2(fd, 1);
        ::dup2(fd, 2);
      }
      const std::string cli = CliPath();
      std::vector<char*> argv{const_cast<char*>(cli.c_str()), const_cast<char*>("host")};
      for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
      argv.push_back(nullptr);
      ::execv(cli.c_str(), argv.data());
      ::_exit(127);
    }
  }
  ~HostProcess() {
    if (pid_ > 0 && !exited_) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    ::unlink(log_.c_str());
  }

  // SIGTERM, then the exit status (-1 if it did not exit within 10 s).
  int Terminate() {
    ::kill(pid_, SIGTERM);
    return Wait(10s);
  }
  // The exit code once it exits within `timeout`, else -1.
  int Wait(std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      int st = 0;
      if (::waitpid(pid_, &st, WNOHANG) == pid_) {
        exited_ = true;
        return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
      }
      std::this_thread::sleep_for(5ms);
    }
    return -1;
  }
  std::string Output() const { return Contents(log_); }

 private:
  pid_t pid_ = -1;
  bool exited_ = false;
  std::string log_;
};

class CtlCli : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::access(CliPath().c_str(), X_OK) != 0) GTEST_SKIP() << "no pitlane CLI at " << CliPath();
    host_ = std::make_unique<HostProcess>(
        std::vector<std::string>{"--ns", ns_.name(), "--interval", "3600"}, Log("host"));
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    while (!Exists(SocketPath(ns_.name())) && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(5ms);
    }
    ASSERT_TRUE(Exists(SocketPath(ns_.name()))) << host_->Output();
    worker_ = testing::StartWorker(ns_.name(), "ctl-w1");
    ASSERT_NE(worker_, nullptr);
    // The host lists a worker once its poll loop has seen the registry slot.
    std::string out;
    int code = -1;
    for (auto t = std::chrono::steady_clock::now(); std::chrono::steady_clock::now() < t + 10s;) {
      out = Ctl("show ctl-w1", &code);
      if (code == 0) break;
      std::this_thread::sleep_for(10ms);
    }
    ASSERT_EQ(code, 0) << out;
  }
  void TearDown() override {
    worker_.reset();
    if (host_) {
      EXPECT_EQ(host_->Terminate(), 0) << host_->Output();
      EXPECT_FALSE(Exists(SocketPath(ns_.name()))) << "the host left its admin socket behind";
    }
  }

  std::string Log(const std::string& what) const {
    return "/tmp/pitlane-ctl-test." + ns_.name() + "." + what + ".log";
  }
  std::string Ctl(const std::string& args, int* code) const {
    return RunCli("ctl --ns " + ns_.name() + " " + args, code);
  }
  EmitResult EmitMemory() {
    return worker_->Emit("python.memory.sampled", {{"rss_bytes", int64_t{1}}});
  }
  EmitResult EmitCpu() { return worker_->Emit("python.cpu.sampled", {{"cpu_percent", 2.5}}); }

  testing::ScopedNamespace ns_;
  std::unique_ptr<HostProcess> host_;
  std::unique_ptr<Worker> worker_;
};

TEST_F(CtlCli, ToggleOffSuppressesTheWorkersEventsAndShowReportsIt) {
  ASSERT_EQ(EmitMemory(), EmitResult::kOk);
  int code = -1;
  std::string out = Ctl("toggle ctl-w1 off", &code);
  EXPECT_EQ(code, 0) << out;
  EXPECT_NE(out.find("ctl-w1: disabled"), std::string::npos) << out;
  EXPECT_EQ(EmitMemory(), EmitResult::kSuppressedDisabled);

  out = Ctl("show ctl-w1 --json", &code);
  EXPECT_EQ(code, 0) << out;
  EXPECT_NE(out.find("{\"workers\":[{\"worker_id\":\"ctl-w1\",\"control\":{\"enabled\":false,"),
            std::string::npos)
      << out;

  out = Ctl("toggle ctl-w1 on", &code);
  EXPECT_EQ(code, 0) << out;
  EXPECT_EQ(EmitMemory(), EmitResult::kOk);
}

TEST_F(CtlCli, SamplingAndFilterReplaceTheWorkersState) {
  int code = -1;
  std::string out = Ctl("sampling ctl-w1 0 'python.memory.*'", &code);
  EXPECT_EQ(code, 0) << out;
  EXPECT_NE(out.find("ctl-w1: enabled, sampling 0 of python.memory.*, allow all, deny none"),
            std::string::npos)
      << out;
  EXPECT_EQ(EmitMemory(), EmitResult::kSuppressedSampled);
  EXPECT_EQ(EmitCpu(), EmitResult::kOk);

  out = Ctl("filter ctl-w1 --allow 'python.*' --deny 'python.cpu.*' --deny 'tool.*'", &code);
  EXPECT_EQ(code, 0) << out;
  EXPECT_EQ(EmitCpu(), EmitResult::kSuppressedFiltered);

  out = Ctl("show ctl-w1", &code);
  EXPECT_EQ(code, 0) << out;
  EXPECT_NE(out.find("ctl-w1: enabled, sampling 0 of python.memory.*, allow python.*, deny "
                     "python.cpu.* tool.*"),
            std::string::npos)
      << out;

  // A new sampling update replaces the patterns; a filter with no list removes the filter.
  out = Ctl("sampling ctl-w1 1", &code);
  EXPECT_EQ(code, 0) << out;
  out = Ctl("filter ctl-w1", &code);
  EXPECT_EQ(code, 0) << out;
  EXPECT_NE(out.find("ctl-w1: enabled, sampling 1 of every event, allow all, deny none"),
            std::string::npos)
      << out;
  EXPECT_EQ(EmitMemory(), EmitResult::kOk);
  EXPECT_EQ(EmitCpu(), EmitResult::kOk);
}

// `set` replaces the whole state in one update: the parts it does not give return to their
// defaults, and a value the host refuses changes nothing.
TEST_F(CtlCli, SetReplacesTheWholeStateInOneUpdate) {
  int code = -1;
  std::string out = Ctl("sampling ctl-w1 0 'python.memory.*'", &code);
  ASSERT_EQ(code, 0) << out;
  out = Ctl("set ctl-w1 on --deny 'python.cpu.*'", &code);
  EXPECT_EQ(code, 0) << out;
  EXPECT_NE(out.find("ctl-w1: enabled, sampling 1 of every event, allow all, deny python.cpu.*"),
            std::string::npos)
      << out;
  EXPECT_EQ(EmitCpu(), EmitResult::kSuppressedFiltered);
  EXPECT_EQ(EmitMemory(), EmitResult::kOk);  // the sampling it did not give is back to 1

  out = Ctl("set ctl-w1 off --sampling 0.5 --pattern 'tool.*' --pattern 'python.memory.*' "
            "--allow 'python.*'",
            &code);
  EXPECT_EQ(code, 0) << out;
  EXPECT_NE(out.find("ctl-w1: disabled, sampling 0.5 of tool.* python.memory.*, allow python.*, "
                     "deny none"),
            std::string::npos)
      << out;
  EXPECT_EQ(EmitMemory(), EmitResult::kSuppressedDisabled);

  out = Ctl("set ctl-w1 on --sampling 2", &code);
  EXPECT_EQ(code, 1) << out;
  EXPECT_NE(out.find("sampling rate 2 is outside [0, 1]"), std::string::npos) << out;
  out = Ctl("set ctl-w1 on --sampling half", &code);
  EXPECT_EQ(code, 2) << out;
  out = Ctl("set ctl-w1 maybe", &code);
  EXPECT_EQ(code, 2) << out;
  out = Ctl("show ctl-w1", &code);
  EXPECT_NE(out.find("ctl-w1: disabled, sampling 0.5 of tool.* python.memory.*"),
            std::string::npos)
      << out;
}

TEST_F(CtlCli, WorkersListsPidTransportAndCountersAsTableAndJson) {
  for (int i = 0; i < 3; ++i) ASSERT_EQ(EmitMemory(), EmitResult::kOk);
  const std::string pid = std::to_string(::getpid());
  int code = -1;
  std::string out;
  // The host delivers asynchronously: poll until its counters show the three events.
  for (auto t = std::chrono::steady_clock::now(); std::chrono::steady_clock::now() < t + 10s;) {
    out = Ctl("workers --json", &code);
    if (code != 0 || out.find("\"delivered\":3,") != std::string::npos) break;
    std::this_thread::sleep_for(20ms);
  }
  EXPECT_EQ(code, 0) << out;
  EXPECT_NE(out.find("{\"namespace\":\"" + ns_.name() +
                     "\",\"workers\":[{\"worker_id\":\"ctl-w1\""
                     ",\"pid\":" +
                     pid + ",\"transport\":\"shm\",\"alive\":true,\"rings\":1,"),
            std::string::npos)
      << out;
  EXPECT_NE(out.find("\"emitted\":3,\"published\":3,\"delivered\":3,"), std::string::npos) << out;

  out = Ctl("workers", &code);
  EXPECT_EQ(code, 0) << out;
  EXPECT_NE(out.find("worker "), std::string::npos) << out;
  EXPECT_NE(out.find("ctl-w1"), std::string::npos) << out;
  EXPECT_NE(out.find(" " + pid + " shm "), std::string::npos) << out;
}

TEST_F(CtlCli, StarSelectsEveryWorker) {
  auto second = testing::StartWorker(ns_.name(), "ctl-w2");
  ASSERT_NE(second, nullptr);
  int code = -1;
  std::string out;
  for (auto t = std::chrono::steady_clock::now(); std::chrono::steady_clock::now() < t + 10s;) {
    out = Ctl("show ctl-w2", &code);
    if (code == 0) break;
    std::this_thread::sleep_for(10ms);
  }
  ASSERT_EQ(code, 0) << out;
  out = Ctl("toggle '*' off", &code);
  EXPECT_EQ(code, 0) << out;
  EXPECT_NE(out.find("ctl-w1: disabled"), std::string::npos) << out;
  EXPECT_NE(out.find("ctl-w2: disabled"), std::string::npos) << out;
  EXPECT_EQ(second->Emit("python.gc.completed", {{"collected", int64_t{1}}}),
            EmitResult::kSuppressedDisabled);
}

TEST_F(CtlCli, UnknownWorkerExits1NamingIt) {
  int code = -1;
  const std::string out = Ctl("toggle no-such-worker off", &code);
  EXPECT_EQ(code, 1) << out;
  EXPECT_NE(out.find("pitlane ctl: no worker with id \"no-such-worker\""), std::string::npos)
      << out;
}

TEST_F(CtlCli, RateTheHostRefusesExits1WithItsMessageAndChangesNothing) {
  int code = -1;
  std::string out = Ctl("sampling ctl-w1 1.5 'tool.*'", &code);
  EXPECT_EQ(code, 1) << out;
  EXPECT_NE(out.find("sampling rate 1.5 is outside [0, 1]"), std::string::npos) << out;
  out = Ctl("sampling ctl-w1 nan", &code);
  EXPECT_EQ(code, 1) << out;
  EXPECT_NE(out.find("NaN"), std::string::npos) << out;
  out = Ctl("sampling ctl-w1 -0.5", &code);
  EXPECT_EQ(code, 1) << out;
  EXPECT_NE(out.find("sampling rate -0.5 is outside [0, 1]"), std::string::npos) << out;
  out = Ctl("filter ctl-w1 --deny 'python.[cpu'", &code);
  EXPECT_EQ(code, 1) << out;
  EXPECT_NE(out.find("python.[cpu"), std::string::npos) << out;

  out = Ctl("show ctl-w1", &code);
  EXPECT_EQ(code, 0) << out;
  EXPECT_NE(out.find("ctl-w1: enabled, sampling 1 of every event, allow all, deny none"),
            std::string::npos)
      << out;
}

TEST_F(CtlCli, UsageErrorsExit2) {
  int code = -1;
  std::string out = Ctl("sampling ctl-w1 half", &code);
  EXPECT_EQ(code, 2) << out;
  EXPECT_NE(out.find("sampling rate \"half\" is not a number"), std::string::npos) << out;
  out = Ctl("toggle ctl-w1 maybe", &code);
  EXPECT_EQ(code, 2) << out;
  out = Ctl("toggle ctl-w1", &code);
  EXPECT_EQ(code, 2) << out;
  out = Ctl("", &code);
  EXPECT_EQ(code, 2) << out;
  out = Ctl("--admin unix:/tmp/x.sock workers", &code);  // --ns and --admin exclude each other
  EXPECT_EQ(code, 2) << out;
  out = RunCli("ctl --ns 'bad ns!' workers", &code);
  EXPECT_EQ(code, 2) << out;
  // Nothing reached the host.
  out = Ctl("show ctl-w1", &code);
  EXPECT_NE(out.find("ctl-w1: enabled, sampling 1 of every event"), std::string::npos) << out;
}

TEST_F(CtlCli, SecondHostOnALiveAdminSocketIsRefused) {
  testing::ScopedNamespace other;
  HostProcess second({"--ns", other.name(), "--admin", "unix:" + SocketPath(ns_.name())},
                     Log("second"));
  EXPECT_EQ(second.Wait(10s), 1) << second.Output();
  EXPECT_NE(
      second.Output().find("another host is serving the admin socket " + SocketPath(ns_.name())),
      std::string::npos)
      << second.Output();
  int code = -1;
  const std::string out = Ctl("show ctl-w1", &code);  // the first host still serves it
  EXPECT_EQ(code, 0) << out;
}

// ─── without the fixture's host ──────────────────────────────────────────────────────────────

class CtlCliNoHost : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::access(CliPath().c_str(), X_OK) != 0) GTEST_SKIP() << "no pitlane CLI at " << CliPath();
  }
  testing::ScopedNamespace ns_;
};

TEST_F(CtlCliNoHost, NoHostExits3AndSaysHowToStartOne) {
  int code = -1;
  std::string out = RunCli("ctl --ns " + ns_.name() + " workers", &code);
  EXPECT_EQ(code, 3) << out;
  EXPECT_NE(out.find("pitlane ctl: no host is serving unix:" + SocketPath(ns_.name()) +
                     "; is `pitlane host --ns " + ns_.name() + "` running?"),
            std::string::npos)
      << out;
  out = RunCli("ctl --admin 127.0.0.1:1 toggle w off", &code);
  EXPECT_EQ(code, 3) << out;
  EXPECT_NE(out.find("is `pitlane host --admin 127.0.0.1:1` running?"), std::string::npos) << out;
}

TEST_F(CtlCliNoHost, SocketThatNeverAnswersExits3AfterTheDeadline) {
  // Accepts connections (the kernel's backlog) but never speaks gRPC.
  const std::string path = "/tmp/pitlane-ctl-test." + ns_.name() + ".mute.sock";
  const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  std::snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path.c_str());
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)), 0);
  ASSERT_EQ(::listen(fd, 16), 0);
  int code = -1;
  const std::string out = RunCli("ctl --admin unix:" + path + " workers", &code);
  ::close(fd);
  ::unlink(path.c_str());
  EXPECT_EQ(code, 3) << out;
  EXPECT_NE(out.find("the host serving unix:" + path + " did not answer within 5 s"),
            std::string::npos)
      << out;
}

// A process of another uid (65534) that listens at `path` with a world-connectable socket, as a
// user could while no host of ours serves a default admin path in /tmp; counts the connections
// it accepts. Needs root (to drop to that uid).
class ForeignAdminSocket {
 public:
  explicit ForeignAdminSocket(const std::string& path) : path_(path) {
    int ready[2], seen[2];
    if (::pipe(ready) != 0 || ::pipe(seen) != 0) return;
    pid_ = ::fork();
    if (pid_ == 0) {
      ::close(ready[0]);
      ::close(seen[0]);
      if (::setgroups(0, nullptr) != 0 || ::setgid(65534) != 0 || ::setuid(65534) != 0) _exit(2);
      const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
      sockaddr_un sa{};
      sa.sun_family = AF_UNIX;
      std::snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path.c_str());
      if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0 ||
          ::chmod(path.c_str(), 0777) != 0 || ::listen(fd, 16) != 0) {
        _exit(3);
      }
      (void)!::write(ready[1], "r", 1);
      while (true) {
        const int c = ::accept(fd, nullptr, nullptr);
        if (c >= 0) {
          (void)!::write(seen[1], "c", 1);
          ::close(c);
        }
      }
    }
    ::close(ready[1]);
    ::close(seen[1]);
    char r = 0;
    ready_ = ::read(ready[0], &r, 1) == 1;
    ::close(ready[0]);
    seen_ = seen[0];
    ::fcntl(seen_, F_SETFL, O_NONBLOCK);
  }
  ~ForeignAdminSocket() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    if (seen_ >= 0) ::close(seen_);
    ::unlink(path_.c_str());
  }
  bool ready() const { return ready_; }
  // Connections accepted since the last call.
  int Connections() {
    int n = 0;
    char buf[64];
    ssize_t got;
    while ((got = ::read(seen_, buf, sizeof buf)) > 0) n += static_cast<int>(got);
    return n;
  }

 private:
  std::string path_;
  pid_t pid_ = -1;
  int seen_ = -1;
  bool ready_ = false;
};

// Threat model: another uid puts a socket at a namespace's default admin path. Nothing of ours
// connects to it: `pitlane ctl` exits 3 naming its owner, a host refuses to serve there, `pitlane
// stat` does not ask it for a running host's exporters, and cleanup leaves it to its owner.
TEST_F(CtlCliNoHost, AdminSocketOfAnotherUidIsNeverConnectedTo) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to act as uid 65534";
  const std::string path = SocketPath(ns_.name());
  ForeignAdminSocket foreign(path);
  ASSERT_TRUE(foreign.ready());
  const std::string owner = "belongs to uid 65534, not to uid 0";

  int code = -1;
  std::string out = RunCli("ctl --ns " + ns_.name() + " toggle '*' off", &code);
  EXPECT_EQ(code, 3) << out;
  EXPECT_NE(out.find("pitlane ctl: admin socket " + path + " " + owner), std::string::npos) << out;
  EXPECT_EQ(foreign.Connections(), 0) << "pitlane ctl connected to the other uid's socket";

  out = RunCli("host --ns " + ns_.name() + " --duration 5", &code);
  EXPECT_EQ(code, 1) << out;
  EXPECT_NE(out.find(owner), std::string::npos) << out;
  EXPECT_EQ(foreign.Connections(), 0) << "pitlane host probed the other uid's socket";

  // A host serving its admin service elsewhere: `pitlane stat` asks the namespace's default
  // path for its exporters, and refuses it.
  const std::string own = "/tmp/pitlane-ctl-test." + ns_.name() + ".own.sock";
  HostProcess host({"--ns", ns_.name(), "--admin", "unix:" + own, "--interval", "3600"},
                   "/tmp/pitlane-ctl-test." + ns_.name() + ".foreign.log");
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (!Exists(own) && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(5ms);
  }
  ASSERT_TRUE(Exists(own)) << host.Output();
  out = RunCli("stat --ns " + ns_.name(), &code);
  EXPECT_NE(out.find(owner), std::string::npos) << out;
  EXPECT_EQ(foreign.Connections(), 0) << "pitlane stat connected to the other uid's socket";
  out = RunCli("ctl --admin unix:" + own + " workers", &code);  // its own socket: served
  EXPECT_EQ(code, 0) << out;
  EXPECT_EQ(host.Terminate(), 0) << host.Output();

  out = RunCli("cleanup --ns " + ns_.name(), &code);
  EXPECT_TRUE(Exists(path)) << out;
  EXPECT_NE(out.find(owner), std::string::npos) << out;
  EXPECT_EQ(foreign.Connections(), 0) << "pitlane cleanup probed the other uid's socket";
}

TEST_F(CtlCliNoHost, StaleSocketOfADeadHostExits3) {
  const std::string path = SocketPath(ns_.name());
  {
    HostProcess killed({"--ns", ns_.name()}, "/tmp/pitlane-ctl-test." + ns_.name() + ".log");
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    while (!Exists(path) && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(5ms);
    }
    ASSERT_TRUE(Exists(path)) << killed.Output();
  }  // SIGKILLed: the socket file stays
  ASSERT_TRUE(Exists(path));
  int code = -1;
  const std::string out = RunCli("ctl --ns " + ns_.name() + " workers", &code);
  EXPECT_EQ(code, 3) << out;
  EXPECT_NE(out.find("no host is serving"), std::string::npos) << out;

  // A new host replaces the stale socket and serves it.
  HostProcess next({"--ns", ns_.name(), "--interval", "3600"},
                   "/tmp/pitlane-ctl-test." + ns_.name() + ".next.log");
  std::string listing;
  for (auto t = std::chrono::steady_clock::now(); std::chrono::steady_clock::now() < t + 10s;) {
    listing = RunCli("ctl --ns " + ns_.name() + " workers", &code);
    if (code == 0) break;
    std::this_thread::sleep_for(20ms);
  }
  EXPECT_EQ(code, 0) << listing << next.Output();
  EXPECT_NE(listing.find("no worker has attached"), std::string::npos) << listing;
  EXPECT_EQ(next.Terminate(), 0) << next.Output();
  EXPECT_FALSE(Exists(path));
}

TEST_F(CtlCliNoHost, HostWithNoAdminOrAdminOffServesNoSocket) {
  for (const char* flag : {"--no-admin", "--admin=off"}) {
    HostProcess host({"--ns", ns_.name(), flag, "--duration", "0.5"},
                     "/tmp/pitlane-ctl-test." + ns_.name() + ".log");
    EXPECT_EQ(host.Wait(10s), 0) << flag << ": " << host.Output();
    EXPECT_EQ(host.Output().find("admin service"), std::string::npos) << host.Output();
    EXPECT_FALSE(Exists(SocketPath(ns_.name()))) << flag;
  }
}

TEST_F(CtlCliNoHost, HostServesTheAdminServiceOnATcpAddressWhenAsked) {
  HostProcess host({"--ns", ns_.name(), "--admin", "127.0.0.1:0", "--interval", "3600"},
                   "/tmp/pitlane-ctl-test." + ns_.name() + ".log");
  std::string address;
  for (auto t = std::chrono::steady_clock::now(); std::chrono::steady_clock::now() < t + 10s;) {
    const std::string out = host.Output();
    const std::string marker = "admin service (pitlane ctl) on ";
    const size_t at = out.find(marker);
    if (at != std::string::npos && out.find('\n', at) != std::string::npos) {
      address = out.substr(at + marker.size(), out.find('\n', at) - at - marker.size());
      break;
    }
    std::this_thread::sleep_for(10ms);
  }
  ASSERT_EQ(address.rfind("127.0.0.1:", 0), 0u) << host.Output();
  EXPECT_NE(address, "127.0.0.1:0");
  EXPECT_FALSE(Exists(SocketPath(ns_.name())));
  int code = -1;
  const std::string out = RunCli("ctl --admin " + address + " workers", &code);
  EXPECT_EQ(code, 0) << out;
  EXPECT_NE(out.find("namespace \"" + ns_.name() + "\": no worker has attached"), std::string::npos)
      << out;
  // Asked by namespace, ctl finds no socket; the host runs, so the hint is not to start one but
  // how to reach the one serving TCP.
  const std::string by_ns = RunCli("ctl --ns " + ns_.name() + " workers", &code);
  EXPECT_EQ(code, 3) << by_ns;
  EXPECT_NE(by_ns.find("the host of namespace \"" + ns_.name() + "\""), std::string::npos) << by_ns;
  EXPECT_NE(by_ns.find("is running"), std::string::npos) << by_ns;
  EXPECT_NE(by_ns.find("pitlane ctl --admin HOST:PORT"), std::string::npos) << by_ns;
  EXPECT_EQ(by_ns.find("is `pitlane host --ns"), std::string::npos) << by_ns;
  EXPECT_EQ(host.Terminate(), 0) << host.Output();
}

// An address that is neither unix:PATH nor HOST:PORT (port 1-65535) is a usage error wherever a
// client takes --admin, before anything is dialed: never "no host" (3) for a typo.
TEST_F(CtlCliNoHost, MalformedAdminAddressIsAUsageError) {
  for (const std::string bad :
       {"tcp:1.2.3.4", "bogus", "127.0.0.1:99999", "127.0.0.1:0", "[::1:80", "unix:"}) {
    int code = -1;
    std::string out = RunCli("ctl --admin '" + bad + "' workers", &code);
    EXPECT_EQ(code, 2) << bad << ": " << out;
    EXPECT_NE(out.find("pitlane ctl: --admin: "), std::string::npos) << out;
    out = RunCli("stat --ns " + ns_.name() + " --admin '" + bad + "'", &code);
    EXPECT_EQ(code, 2) << bad << ": " << out;
    EXPECT_NE(out.find("pitlane stat: --admin: "), std::string::npos) << out;
  }
  int code = -1;
  const std::string out = RunCli("ctl --admin 127.0.0.1:1 workers", &code);  // well-formed
  EXPECT_EQ(code, 3) << out;
}

TEST_F(CtlCliNoHost, BadAdminAddressOfTheHostExits2) {
  HostProcess host({"--ns", ns_.name(), "--admin", "no-port-here"},
                   "/tmp/pitlane-ctl-test." + ns_.name() + ".log");
  EXPECT_EQ(host.Wait(10s), 2) << host.Output();
  EXPECT_NE(host.Output().find("admin address \"no-port-here\" has no port"), std::string::npos)
      << host.Output();
}

// A host stopped right after a worker left (here `pitlane emit`, which exits at once) still
// reclaims that worker before it exits: the worker's ring is drained and unlinked, its
// termination reported, and with no worker left the namespace's registry goes too.
TEST_F(CtlCliNoHost, HostStoppedRightAfterAWorkerLeftReclaimsItAndLeavesNothingBehind) {
  HostProcess host({"--ns", ns_.name(), "--interval", "3600"},
                   "/tmp/pitlane-ctl-test." + ns_.name() + ".stop.log");
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (!Exists(SocketPath(ns_.name())) && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(5ms);
  }
  ASSERT_TRUE(Exists(SocketPath(ns_.name()))) << host.Output();
  int code = -1;
  const std::string out = RunCli("emit --ns " + ns_.name() + " python.call.stop", &code);
  ASSERT_EQ(code, 0) << out;
  EXPECT_EQ(host.Terminate(), 0) << host.Output();
  EXPECT_EQ(testing::SegmentsOf(ns_.name()), std::vector<std::string>{}) << host.Output();
  EXPECT_NE(host.Output().find("delivered 1,"), std::string::npos) << host.Output();
  EXPECT_NE(host.Output().find("workers terminated 1"), std::string::npos) << host.Output();
}

}  // namespace
}  // namespace pitlane
