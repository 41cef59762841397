// Attacks on a namespace through /dev/shm, each as separate processes: an attacker that knows
// nothing of pitlane (tests/attacker/shm_attacker.cc: raw open/pwrite/ftruncate/mkfifo, optionally
// as another uid), a host process and worker processes. Each test asserts what must hold: every
// pitlane process survives, the host delivers what the honest workers published, the
// conservation law is exact, and /dev/shm is left as it should be. The README's threat model
// maps each attack class to the test here that covers it.
#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "pitlane/host.h"
#include "pitlane/registry.h"
#include "pitlane/shm.h"
#include "pitlane/worker.h"
#include "testing.h"

namespace pitlane {
namespace {

using testing::SegmentExists;
using testing::SegmentsOf;

using namespace std::chrono_literals;

constexpr uid_t kNobody = 65534;

std::string ShmPath(const std::string& name) { return "/dev/shm" + name; }

// Runs the attacker with `args`; returns its exit code (0: the attack was carried out).
int Attack(const std::vector<std::string>& args) {
  std::vector<char*> argv;
  std::string exe = PITLANE_SHM_ATTACKER;
  argv.push_back(exe.data());
  std::vector<std::string> copy = args;
  for (std::string& a : copy) argv.push_back(a.data());
  argv.push_back(nullptr);
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::execv(exe.c_str(), argv.data());
    ::_exit(127);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// "exited 0", "killed by signal 7 (Bus error)".
std::string DescribeStatus(int status) {
  if (WIFEXITED(status)) return "exited " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    return "killed by signal " + std::to_string(WTERMSIG(status)) + " (" +
           strsignal(WTERMSIG(status)) + ")";
  }
  return "status " + std::to_string(status);
}

// Reads lines from `fd` until EOF or `deadline`.
std::string ReadAll(int fd, std::chrono::steady_clock::time_point deadline, bool one_line) {
  std::string out;
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) break;
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) break;
    char buf[4096];
    const ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
    if (one_line && out.find('\n') != std::string::npos) break;
  }
  return out;
}

// A host in a process of its own. Its first report line is "started" or the error Host::Start
// returned; it then polls until Stop(), drains, and reports its final numbers as "key=value"
// lines before its Host is destroyed and it exits 0.
class HostProcess {
 public:
  HostProcess(testing::Children& children, const std::string& ns) {
    int report[2], stop[2];
    EXPECT_EQ(::pipe2(report, O_CLOEXEC), 0);
    EXPECT_EQ(::pipe2(stop, O_CLOEXEC), 0);
    pid_ = children.Spawn([&]() -> int {
      // Keep only our own pipe ends: a host started later must not hold this one's stop pipe
      // open (fork copies every descriptor).
      for (int fd = 3; fd < 1024; ++fd) {
        if (fd != report[1] && fd != stop[0]) ::close(fd);
      }
      return Body(ns, report[1], stop[0]);
    });
    ::close(report[1]);
    ::close(stop[0]);
    report_fd_ = report[0];
    stop_fd_ = stop[1];
    // The first line that is not a log line.
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    std::string text;
    for (;;) {
      const std::string more = ReadAll(report_fd_, deadline, /*one_line=*/true);
      if (more.empty()) break;
      text += more;
      size_t pos = 0, nl;
      bool found = false;
      while ((nl = text.find('\n', pos)) != std::string::npos) {
        const std::string line = text.substr(pos, nl - pos);
        pos = nl + 1;
        if (line.rfind("log=", 0) == 0) {
          logs_ += line.substr(4) + "\n";
        } else {
          started_ = line;
          found = true;
          break;
        }
      }
      text.erase(0, pos);
      if (found) break;
    }
    pending_ = text;
  }
  ~HostProcess() {
    if (stop_fd_ >= 0) ::close(stop_fd_);
    if (report_fd_ >= 0) ::close(report_fd_);
  }

  pid_t pid() const { return pid_; }
  // "started", the error Host::Start returned, or "" when the process said nothing in 10 s.
  const std::string& started() const { return started_; }
  // The host's log lines before it started.
  const std::string& logs() const { return logs_; }

  // Asks the host to drain and exit; returns its report. *status receives its wait status.
  std::map<std::string, std::string> Stop(testing::Children& children, int* status) {
    ::close(stop_fd_);
    stop_fd_ = -1;
    const std::string text =
        pending_ + ReadAll(report_fd_, std::chrono::steady_clock::now() + 30s, false);
    const auto deadline = std::chrono::steady_clock::now() + 5s;
    while (!children.TryReap(pid_, status)) {
      if (std::chrono::steady_clock::now() > deadline) {
        ADD_FAILURE() << "host process " << pid_ << " did not exit; killing it";
        children.Kill(pid_);
        *status = children.Reap(pid_);
        break;
      }
      std::this_thread::sleep_for(10ms);
    }
    std::map<std::string, std::string> kv;
    std::istringstream in(text);
    std::string line;
    while (std::getline(in, line)) {
      const size_t eq = line.find('=');
      if (eq == std::string::npos) continue;
      if (line.compare(0, eq, "log") == 0) {
        kv["log"] += line.substr(eq + 1) + "\n";
      } else {
        // A worker may have had several rings: "ring.w", "ring.w#2", ...
        std::string key = line.substr(0, eq);
        for (int k = 2; kv.count(key) != 0; ++k) key = line.substr(0, eq) + "#" + std::to_string(k);
        kv[key] = line.substr(eq + 1);
      }
    }
    return kv;
  }

 private:
  static void Say(int fd, const std::string& line) {
    const std::string l = line + "\n";
    (void)!::write(fd, l.data(), l.size());
  }

  static int Body(const std::string& ns, int report, int stop) {
    HostOptions o;
    o.ns = ns;
    o.log = [report](std::string_view line) { Say(report, "log=" + std::string(line)); };
    Result<std::unique_ptr<Host>> started = Host::Start(std::move(o));
    if (!started.ok()) {
      Say(report, started.status().ToString());
      return 0;
    }
    std::unique_ptr<Host> host = std::move(started).value();
    Say(report, "started");
    host->RunInBackground();
    char b;
    while (::read(stop, &b, 1) > 0) {
    }
    host->DrainAll(5s);
    const HostStats s = host->Stats();
    bool law = true;
    uint64_t emitted = 0;
    for (const RingStats& r : host->Rings()) {
      law &= r.Unverifiable() || r.Conserved();
      emitted += r.emitted;
      // "ring.<worker id>=<emitted> <published> <delivered> <rejected> <law> <quarantine>"
      Say(report, "ring." + r.worker_id + "=" + std::to_string(r.emitted) + " " +
                      std::to_string(r.published) + " " + std::to_string(r.delivered) + " " +
                      std::to_string(r.rejected_total()) + " " +
                      (r.Unverifiable() ? "unverifiable" : r.Conserved() ? "holds" : "VIOLATED") +
                      " " +
                      shm::QuarantineReasonName(r.quarantine_kind));
    }
    Say(report, "rings=" + std::to_string(host->Rings().size()));
    Say(report, "delivered=" + std::to_string(s.delivered));
    Say(report, "emitted=" + std::to_string(emitted));
    Say(report, "quarantined=" + std::to_string(s.quarantined_rings));
    Say(report, "truncated_quarantines=" +
                    std::to_string(s.quarantined_by_reason[shm::kQuarantineTruncated]));
    Say(report, "terminated=" + std::to_string(s.workers_terminated));
    Say(report, std::string("law=") + (law ? "holds" : "VIOLATED"));
    host.reset();
    Say(report, "end=1");
    return 0;
  }

  pid_t pid_ = -1;
  int report_fd_ = -1;
  int stop_fd_ = -1;
  std::string started_;
  std::string logs_;
  std::string pending_;
};


// A worker in a process of its own: attaches (5 s), then emits python.call.stop events in
// bursts of `burst` with a short pause until Stop(), then detaches gracefully and reports its
// WorkerStats as "emitted=... published=... dropped=..." before exiting 0.
class WorkerProcess {
 public:
  // `total` >= 0: emit that many events, then idle until Stop(). The first emit comes
  // `start_after` after attaching (until then the worker has no ring).
  WorkerProcess(testing::Children& children, const std::string& ns, const std::string& id,
                int burst = 100, int64_t total = -1,
                std::chrono::milliseconds start_after = std::chrono::milliseconds(0)) {
    int report[2], stop[2];
    EXPECT_EQ(::pipe2(report, O_CLOEXEC), 0);
    EXPECT_EQ(::pipe2(stop, O_CLOEXEC), 0);
    pid_ = children.Spawn([&]() -> int {
      for (int fd = 3; fd < 1024; ++fd) {
        if (fd != report[1] && fd != stop[0]) ::close(fd);
      }
      return Body(ns, id, burst, total, start_after, report[1], stop[0]);
    });
    ::close(report[1]);
    ::close(stop[0]);
    report_fd_ = report[0];
    stop_fd_ = stop[1];
    attached_ = ReadAll(report_fd_, std::chrono::steady_clock::now() + 10s, true) == "attached\n";
  }
  ~WorkerProcess() {
    if (stop_fd_ >= 0) ::close(stop_fd_);
    if (report_fd_ >= 0) ::close(report_fd_);
  }
  pid_t pid() const { return pid_; }
  bool attached() const { return attached_; }
  // The ring segment of its (single) emitting thread, once its first emit made it (10 s at
  // most; "" if it never appears). `other_than` names a ring to ignore: the one it replaced.
  std::string RingSegment(const std::string& ns, const std::string& other_than = "") const {
    const std::string prefix = shm::SegmentPrefix(ns) + "ring." + std::to_string(pid_) + ".";
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    std::string found;
    while (found.empty() && std::chrono::steady_clock::now() < deadline) {
      if (DIR* d = ::opendir("/dev/shm")) {
        while (dirent* e = ::readdir(d)) {
          if (std::strncmp(e->d_name, prefix.c_str(), prefix.size()) == 0 &&
              "/" + std::string(e->d_name) != other_than) {
            found = e->d_name;
          }
        }
        ::closedir(d);
      }
      if (found.empty()) std::this_thread::sleep_for(5ms);
    }
    return found.empty() ? found : "/" + found;
  }
  // Stops emitting, detaches; returns its report line and sets *status to its wait status.
  std::string Stop(testing::Children& children, int* status) {
    ::close(stop_fd_);
    stop_fd_ = -1;
    const std::string text = ReadAll(report_fd_, std::chrono::steady_clock::now() + 20s, false);
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    while (!children.TryReap(pid_, status)) {
      if (std::chrono::steady_clock::now() > deadline) {
        ADD_FAILURE() << "worker process " << pid_ << " did not exit; killing it";
        children.Kill(pid_);
        *status = children.Reap(pid_);
        break;
      }
      std::this_thread::sleep_for(10ms);
    }
    return text;
  }

 private:
  static int Body(const std::string& ns, const std::string& id, int burst, int64_t total,
                  std::chrono::milliseconds start_after, int report, int stop) {
    WorkerOptions o;
    o.ns = ns;
    o.worker_id = id;
    o.attach_wait = 5s;
    Result<std::unique_ptr<Worker>> started = Worker::Start(o);
    if (!started.ok() || !(*started)->attached()) {
      (void)!::write(report, "not attached\n", 13);
      return 2;
    }
    std::unique_ptr<Worker> w = std::move(started).value();
    (void)!::write(report, "attached\n", 9);
    std::this_thread::sleep_for(start_after);
    const EventHandle ev = w->Event("python.call.stop");
    const MeasurementKey seq = w->Measure("sequence_number");
    ::fcntl(stop, F_SETFL, O_NONBLOCK);
    int64_t i = 0;
    for (;;) {
      for (int k = 0; k < burst && (total < 0 || i < total); ++k, ++i) (void)w->Emit(ev, {{seq, i}});
      char b;
      if (::read(stop, &b, 1) == 0) break;  // EOF: the parent wants us to stop
      std::this_thread::sleep_for(1ms);
    }
    const WorkerStats s = w->Stats();
    w.reset();
    const std::string line = "emitted=" + std::to_string(s.emitted) +
                             " published=" + std::to_string(s.published) +
                             " dropped=" + std::to_string(s.dropped()) + "\n";
    (void)!::write(report, line.data(), line.size());
    return 0;
  }

  pid_t pid_ = -1;
  int report_fd_ = -1;
  int stop_fd_ = -1;
  bool attached_ = false;
};

// "<emitted> <published> <delivered> <rejected> <law> <quarantine>" of a host report line.
struct RingLine {
  uint64_t emitted = 0, published = 0, delivered = 0, rejected = 0;
  std::string law, quarantine;
};
RingLine ParseRing(const std::string& text) {
  RingLine r;
  std::istringstream in(text);
  in >> r.emitted >> r.published >> r.delivered >> r.rejected >> r.law >> r.quarantine;
  return r;
}

bool ExitedZero(int status) { return WIFEXITED(status) && WEXITSTATUS(status) == 0; }

// ─── Adoption: what sits under a segment's name is checked before it is used ───────────────

TEST(AdoptionAttack, RegistryPrecreatedByAnotherUidIsRefusedAndLeftToItsOwner) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to act as uid " << kNobody;
  testing::ScopedNamespace ns;
  testing::Children children;
  const std::string reg = shm::RegistryName(ns.name());
  ASSERT_EQ(Attack({"--uid", std::to_string(kNobody), "create", ShmPath(reg), "600",
                    std::to_string(shm::kRegistryBytes)}),
            0);
  HostProcess host(children, ns.name());
  EXPECT_NE(host.started().find("PERMISSION_DENIED: refusing " + ShmPath(reg) + " (owner "),
            std::string::npos)
      << host.started();
  EXPECT_NE(host.started().find("(uid 65534), mode 0600, a regular file)"), std::string::npos)
      << host.started();
  EXPECT_NE(host.started().find("remove it as its owner or root (rm " + ShmPath(reg) + ")"),
            std::string::npos)
      << host.started();
  // A worker refuses it too, for the same reason.
  WorkerOptions wo;
  wo.ns = ns.name();
  wo.worker_id = "w";
  Result<std::unique_ptr<Worker>> w = Worker::Start(wo);
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  EXPECT_FALSE((*w)->attached());
  EXPECT_EQ((*w)->attach_status().code(), StatusCode::kPermissionDenied)
      << (*w)->attach_status().ToString();
  w->reset();
  // The owner may truncate its file: nothing of ours has it mapped.
  EXPECT_EQ(Attack({"--uid", std::to_string(kNobody), "truncate", ShmPath(reg), "0"}), 0);
  int status = 0;
  host.Stop(children, &status);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << DescribeStatus(status);
  // The file is left to its owner.
  struct stat st;
  ASSERT_EQ(::lstat(ShmPath(reg).c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, kNobody);
}

TEST(AdoptionAttack, WorldWritableRegistryIsRefused) {
  testing::ScopedNamespace ns;
  testing::Children children;
  const std::string reg = shm::RegistryName(ns.name());
  ASSERT_EQ(Attack({"create", ShmPath(reg), "666", std::to_string(shm::kRegistryBytes)}), 0);
  HostProcess host(children, ns.name());
  EXPECT_NE(host.started().find("FAILED_PRECONDITION: refusing " + ShmPath(reg)),
            std::string::npos)
      << host.started();
  EXPECT_NE(host.started().find("mode 0666"), std::string::npos) << host.started();
  int status = 0;
  host.Stop(children, &status);
  EXPECT_TRUE(SegmentExists(reg));
}

TEST(AdoptionAttack, FifoInPlaceOfTheRegistryNeverBlocksTheHost) {
  testing::ScopedNamespace ns;
  testing::Children children;
  const std::string reg = shm::RegistryName(ns.name());
  ASSERT_EQ(Attack({"fifo", ShmPath(reg)}), 0);
  HostProcess host(children, ns.name());  // reports within 10 s or the test fails
  EXPECT_NE(host.started().find("refusing " + ShmPath(reg)), std::string::npos) << host.started();
  EXPECT_NE(host.started().find("a FIFO"), std::string::npos) << host.started();
  int status = 0;
  host.Stop(children, &status);
  EXPECT_TRUE(WIFEXITED(status)) << DescribeStatus(status);
}

// ─── One host per namespace ─────────────────────────────────────────────────────────────────

TEST(SecondHostAttack, SecondHostIsRefusedNamingTheFirstsPidAndTakesOverWhenItDies) {
  testing::ScopedNamespace ns;
  testing::Children children;
  HostProcess first(children, ns.name());
  ASSERT_EQ(first.started(), "started");
  HostProcess second(children, ns.name());
  EXPECT_NE(second.started().find("ALREADY_EXISTS: namespace \"" + ns.name() +
                                  "\" already has a running host (pid " +
                                  std::to_string(first.pid()) + ")"),
            std::string::npos)
      << second.started();
  // The first host dies without a word: the kernel drops its lock, a new host takes over.
  children.Kill(first.pid());
  children.Reap(first.pid());
  HostProcess third(children, ns.name());
  EXPECT_EQ(third.started(), "started");
  int status = 0;
  third.Stop(children, &status);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << DescribeStatus(status);
  EXPECT_FALSE(SegmentExists(shm::RegistryName(ns.name())));
}

TEST(SecondHostAttack, AHostNeverUnlinksARegistryItDoesNotHold) {
  testing::ScopedNamespace ns;
  testing::Children children;
  const std::string reg = shm::RegistryName(ns.name());
  HostProcess first(children, ns.name());
  ASSERT_EQ(first.started(), "started");
  // Someone removes the first host's registry name; a second host creates a new registry.
  ASSERT_EQ(Attack({"unlink", ShmPath(reg)}), 0);
  HostProcess second(children, ns.name());
  ASSERT_EQ(second.started(), "started");
  struct stat before;
  ASSERT_EQ(::lstat(ShmPath(reg).c_str(), &before), 0);
  // The first host exits normally: the second's registry stays.
  int status = 0;
  first.Stop(children, &status);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << DescribeStatus(status);
  struct stat after;
  ASSERT_EQ(::lstat(ShmPath(reg).c_str(), &after), 0);
  EXPECT_EQ(after.st_ino, before.st_ino);
  second.Stop(children, &status);
  EXPECT_FALSE(SegmentExists(reg));
}


// ─── Truncation: no mapping someone else can resize may kill a pitlane process ─────────────

class RingTruncationAttack : public ::testing::TestWithParam<int> {};

TEST_P(RingTruncationAttack, HostAndVictimSurviveAndOtherWorkersLoseNothing) {
  testing::ScopedNamespace ns;
  testing::Children children;
  HostProcess host(children, ns.name());
  ASSERT_EQ(host.started(), "started");
  WorkerProcess victim(children, ns.name(), "victim");
  WorkerProcess bystander(children, ns.name(), "bystander");
  ASSERT_TRUE(victim.attached());
  ASSERT_TRUE(bystander.attached());
  std::this_thread::sleep_for(100ms);  // both write, the host drains
  const std::string ring = victim.RingSegment(ns.name());
  ASSERT_FALSE(ring.empty());
  ASSERT_EQ(Attack({"truncate", ShmPath(ring), std::to_string(GetParam())}), 0);
  // The victim keeps writing; the host quarantines the ring and the victim replaces it. Wait for
  // the replacement rather than a fixed time: under a sanitizer on a loaded machine it can take
  // well over the 300 ms that is typical.
  EXPECT_FALSE(victim.RingSegment(ns.name(), ring).empty()) << "the victim never got a fresh ring";
  std::this_thread::sleep_for(100ms);  // the fresh ring carries some events

  int status = 0;
  const std::string victim_report = victim.Stop(children, &status);
  EXPECT_TRUE(ExitedZero(status)) << "victim worker " << DescribeStatus(status);
  const std::string bystander_report = bystander.Stop(children, &status);
  EXPECT_TRUE(ExitedZero(status)) << "bystander worker " << DescribeStatus(status);
  std::map<std::string, std::string> report = host.Stop(children, &status);
  EXPECT_TRUE(ExitedZero(status)) << "host " << DescribeStatus(status);
  EXPECT_EQ(report["end"], "1") << report["log"];
  EXPECT_EQ(report["truncated_quarantines"], "1") << report["log"];
  // The bystander's ring: everything it emitted delivered, the law exact.
  const RingLine b = ParseRing(report["ring.bystander"]);
  EXPECT_GT(b.emitted, 0u);
  EXPECT_EQ(b.delivered, b.published) << report["ring.bystander"];
  EXPECT_EQ(b.law, "holds") << report["ring.bystander"];
  EXPECT_NE(bystander_report.find("emitted=" + std::to_string(b.emitted) + " "),
            std::string::npos)
      << bystander_report << " vs " << report["ring.bystander"];
  // The victim's truncated ring is quarantined as such and replaced by a fresh one; no ring of
  // its says VIOLATED.
  int truncated = 0, rings = 0;
  for (const auto& [key, value] : report) {
    if (key.rfind("ring.victim", 0) != 0) continue;
    ++rings;
    const RingLine v = ParseRing(value);
    truncated += v.quarantine == "truncated";
    // The truncated ring's worker counts died with it: not checkable, and said so. The fresh
    // ring's law is exact.
    EXPECT_EQ(v.law, v.quarantine == "truncated" ? "unverifiable" : "holds")
        << key << " " << value << "\n" << victim_report;
  }
  EXPECT_EQ(truncated, 1);
  EXPECT_EQ(rings, 2) << "the victim got a fresh ring";
  // Nothing of the namespace is left behind.
  EXPECT_EQ(SegmentsOf(ns.name()), std::vector<std::string>{});
}

INSTANTIATE_TEST_SUITE_P(ToSize, RingTruncationAttack, ::testing::Values(0, 4096),
                         [](const auto& info) { return "Bytes" + std::to_string(info.param); });

class RegistryTruncationAttack : public ::testing::TestWithParam<int> {};

TEST_P(RegistryTruncationAttack, HostAndWorkersSurviveAndAttachedRingsDeliverEverything) {
  testing::ScopedNamespace ns;
  testing::Children children;
  HostProcess host(children, ns.name());
  ASSERT_EQ(host.started(), "started");
  WorkerProcess a(children, ns.name(), "a");
  WorkerProcess b(children, ns.name(), "b");
  ASSERT_TRUE(a.attached());
  ASSERT_TRUE(b.attached());
  std::this_thread::sleep_for(100ms);
  ASSERT_EQ(Attack({"truncate", ShmPath(shm::RegistryName(ns.name())),
                    std::to_string(GetParam())}),
            0);
  std::this_thread::sleep_for(300ms);
  int status = 0;
  const std::string ra = a.Stop(children, &status);
  EXPECT_TRUE(ExitedZero(status)) << "worker a " << DescribeStatus(status);
  const std::string rb = b.Stop(children, &status);
  EXPECT_TRUE(ExitedZero(status)) << "worker b " << DescribeStatus(status);
  std::map<std::string, std::string> report = host.Stop(children, &status);
  EXPECT_TRUE(ExitedZero(status)) << "host " << DescribeStatus(status);
  EXPECT_NE(report["log"].find("registry"), std::string::npos) << report["log"];
  // The rings were attached before the registry was lost: every event reaches the host.
  for (const char* id : {"a", "b"}) {
    const RingLine r = ParseRing(report[std::string("ring.") + id]);
    EXPECT_GT(r.emitted, 0u) << id;
    EXPECT_EQ(r.delivered, r.emitted) << id << ": " << report[std::string("ring.") + id];
    EXPECT_EQ(r.law, "holds") << id;
  }
  EXPECT_EQ(SegmentsOf(ns.name()), std::vector<std::string>{});
}

INSTANTIATE_TEST_SUITE_P(ToSize, RegistryTruncationAttack, ::testing::Values(0, 4096),
                         [](const auto& info) { return "Bytes" + std::to_string(info.param); });

TEST(StaleTruncationAttack, HostsStartAmongStaleSegmentsBeingTruncatedAndRemoveThem) {
  testing::ScopedNamespace ns;
  testing::Children children;
  // 200 stale rings of a process that is gone, each a full ring-sized file.
  const pid_t gone = children.Spawn([] { return 0; });
  children.Reap(gone);
  for (int i = 0; i < 200; ++i) {
    ASSERT_EQ(Attack({"create", ShmPath(shm::RingName(ns.name(), gone, i)), "600",
                      std::to_string(shm::RingSegmentBytes(shm::kMinRingBytes))}),
              0);
  }
  // The attacker truncates them to 0 and 4 KiB and back, round after round, while ten hosts
  // start and stop one after the other.
  const pid_t churn = children.Spawn([&] {
    return Attack({"churn", shm::SegmentPrefix(ns.name()) + "ring.", "1500"});
  });
  for (int i = 0; i < 10; ++i) {
    HostProcess host(children, ns.name());
    EXPECT_EQ(host.started(), "started") << "host " << i << ": " << host.logs();
    int status = 0;
    host.Stop(children, &status);
    EXPECT_TRUE(ExitedZero(status)) << "host " << i << " " << DescribeStatus(status);
  }
  EXPECT_TRUE(ExitedZero(children.Reap(churn)));
  HostProcess last(children, ns.name());
  EXPECT_EQ(last.started(), "started");
  int status = 0;
  last.Stop(children, &status);
  EXPECT_EQ(SegmentsOf(ns.name()), std::vector<std::string>{});
}

// ─── Forged bookkeeping: what a same-uid process writes into the registry ──────────────────

// Byte offsets of registry fields, from the layout specification (shm_layout.h); the attacker
// gets them as plain numbers.
size_t WorkerSlotOffset(uint32_t i) { return sizeof(shm::RegistryHeader) + size_t{i} * shm::kWorkerSlotBytes; }
size_t RingSlotOffset(uint32_t i) {
  return sizeof(shm::RegistryHeader) + size_t{shm::kMaxWorkers} * shm::kWorkerSlotBytes +
         size_t{i} * sizeof(shm::RingSlot);
}
constexpr size_t kEpochOffset = offsetof(shm::RegistryHeader, registry_epoch);

// The worker slot of `pid` in `ns`'s registry (read by the test, not the attacker).
struct SlotOf {
  int32_t index = -1;
  uint64_t generation = 0;
};
SlotOf FindWorkerSlot(const std::string& ns, pid_t pid) {
  SlotOf out;
  Result<shm::Segment> reg = shm::OpenRegistry(ns);
  if (!reg.ok()) return out;
  for (uint32_t i = 0; i < shm::kMaxWorkers; ++i) {
    const shm::WorkerSlot* w = shm::WorkerSlotAt(reg->base(), i);
    if (w->state.load() == shm::kSlotReady && w->pid == static_cast<uint32_t>(pid)) {
      out.index = static_cast<int32_t>(i);
      out.generation = w->generation;
    }
  }
  return out;
}
uint32_t SlotState(const std::string& ns, size_t offset) {
  Result<shm::Segment> reg = shm::OpenRegistry(ns);
  if (!reg.ok()) return ~0u;
  return reinterpret_cast<const std::atomic<uint32_t>*>(static_cast<const char*>(reg->base()) +
                                                         offset)->load();
}

std::string Hex(uint64_t v) {
  char b[24];
  std::snprintf(b, sizeof(b), "0x%llx", static_cast<unsigned long long>(v));
  return b;
}

// A forger fills a free worker slot (a pid that is gone) and a ring slot naming the victim's
// live segment, then bumps the epoch. The host must neither open the victim's segment a second
// time (delivering its events twice) nor unlink it when it reclaims the forger's slots.
TEST(ForgedSlotAttack, RingSlotNamingAnotherWorkersSegmentIsNeverOpenedNorUnlinked) {
  testing::ScopedNamespace ns;
  testing::Children children;
  HostProcess host(children, ns.name());
  ASSERT_EQ(host.started(), "started");
  WorkerProcess victim(children, ns.name(), "victim");
  ASSERT_TRUE(victim.attached());
  std::this_thread::sleep_for(50ms);
  const std::string victim_ring = victim.RingSegment(ns.name());
  ASSERT_FALSE(victim_ring.empty());
  const SlotOf v = FindWorkerSlot(ns.name(), victim.pid());
  ASSERT_GE(v.index, 0);
  const pid_t gone = children.Spawn([] { return 0; });
  children.Reap(gone);
  const std::string reg = ShmPath(shm::RegistryName(ns.name()));
  const uint32_t ws = shm::kMaxWorkers - 1, rs = shm::kMaxRings - 1;
  // Two forged ring slots: one in the forger's worker slot, one claiming to be the victim's.
  ASSERT_EQ(Attack({"write64", reg, std::to_string(WorkerSlotOffset(ws) + 8), "4242"}), 0);
  ASSERT_EQ(Attack({"write64", reg, std::to_string(WorkerSlotOffset(ws) + 16), "7"}), 0);
  ASSERT_EQ(Attack({"writestr", reg, std::to_string(WorkerSlotOffset(ws) + 64), "forger"}), 0);
  ASSERT_EQ(Attack({"write64", reg, std::to_string(WorkerSlotOffset(ws)),
                    Hex(uint64_t{static_cast<uint32_t>(gone)} << 32 | shm::kSlotReady)}),
            0);
  for (const auto& [slot, owner, generation] :
       {std::tuple<uint32_t, uint32_t, uint64_t>{rs, ws, 7},
        {rs - 1, static_cast<uint32_t>(v.index), v.generation}}) {
    ASSERT_EQ(Attack({"writestr", reg, std::to_string(RingSlotOffset(slot) + 16), victim_ring}), 0);
    ASSERT_EQ(Attack({"write64", reg, std::to_string(RingSlotOffset(slot) + 8),
                      std::to_string(generation)}),
              0);
    ASSERT_EQ(Attack({"write64", reg, std::to_string(RingSlotOffset(slot)),
                      Hex(uint64_t{owner} << 32 | shm::kSlotReady)}),
              0);
  }
  ASSERT_EQ(Attack({"write64", reg, std::to_string(kEpochOffset), "1000000"}), 0);
  std::this_thread::sleep_for(500ms);  // several liveness passes: the forger is reclaimed
  EXPECT_TRUE(SegmentExists(victim_ring));

  int status = 0;
  const std::string victim_report = victim.Stop(children, &status);
  EXPECT_TRUE(ExitedZero(status)) << DescribeStatus(status);
  std::map<std::string, std::string> report = host.Stop(children, &status);
  EXPECT_TRUE(ExitedZero(status)) << DescribeStatus(status);
  const RingLine r = ParseRing(report["ring.victim"]);
  EXPECT_NE(victim_report.find("emitted=" + std::to_string(r.emitted) + " "), std::string::npos)
      << victim_report << " vs " << report["ring.victim"];
  EXPECT_EQ(r.delivered, r.published) << report["ring.victim"];
  EXPECT_EQ(r.law, "holds");
  EXPECT_EQ(report["delivered"], std::to_string(r.delivered)) << "events delivered twice";
  EXPECT_EQ(report["rings"], "1") << report["log"];
}

// A host and one emitting worker "victim" in processes of their own, and what an attack on the
// victim aims at: its ring segment, its worker slot and the registry's path. `ready` says
// whether all of it was found.
// One 8-byte write that marks worker slot `ws` (held by `pid`) RETIRED, as a Worker does when it
// is destroyed, and the registry epoch bumped so the host looks. 0 when the attacker succeeded.
int ForgeRetiredWorkerSlot(const std::string& registry, uint32_t ws, pid_t pid) {
  if (int rc = Attack({"write64", registry, std::to_string(WorkerSlotOffset(ws)),
                       Hex(uint64_t{static_cast<uint32_t>(pid)} << 32 | shm::kSlotRetired)});
      rc != 0) {
    return rc;
  }
  return Attack({"write64", registry, std::to_string(kEpochOffset), "3000000"});
}

struct LiveVictim {
  LiveVictim(testing::Children& children, const std::string& ns)
      : registry(ShmPath(shm::RegistryName(ns))), host(children, ns), victim(children, ns, "victim") {
    if (host.started() != "started" || !victim.attached()) return;
    ring = victim.RingSegment(ns);
    slot = FindWorkerSlot(ns, victim.pid());
    ready = !ring.empty() && slot.index >= 0;
  }
  // One 8-byte write to the victim's slot generation, and the epoch bumped so the host looks.
  bool RewriteGeneration() const {
    return Attack({"write64", registry, std::to_string(WorkerSlotOffset(slot.index) + 16),
                   std::to_string(slot.generation + 1000)}) == 0 &&
           Attack({"write64", registry, std::to_string(kEpochOffset), "2000000"}) == 0;
  }
  const std::string registry;
  HostProcess host;
  WorkerProcess victim;
  std::string ring;
  SlotOf slot;
  bool ready = false;
};

// One 8-byte write to a live worker's slot generation: the worker is not declared terminated
// and its ring is not unlinked while it writes (liveness comes from the process, via pidfd).
TEST(ForgedSlotAttack, GenerationScribbleOnALiveWorkerNeitherTerminatesItNorUnlinksItsRing) {
  testing::ScopedNamespace ns;
  testing::Children children;
  LiveVictim t(children, ns.name());
  ASSERT_TRUE(t.ready);
  ASSERT_TRUE(t.RewriteGeneration());
  std::this_thread::sleep_for(500ms);
  EXPECT_TRUE(SegmentExists(t.ring));
  int status = 0;
  const std::string victim_report = t.victim.Stop(children, &status);
  EXPECT_TRUE(ExitedZero(status)) << DescribeStatus(status);
  std::map<std::string, std::string> report = t.host.Stop(children, &status);
  const RingLine r = ParseRing(report["ring.victim"]);
  EXPECT_NE(victim_report.find("emitted=" + std::to_string(r.emitted) + " "), std::string::npos)
      << victim_report << " vs " << report["ring.victim"];
  EXPECT_EQ(r.delivered, r.published) << report["ring.victim"];
  EXPECT_EQ(r.law, "holds");
}

// The ring slot index in a ring segment's name ("/pitlane.<ns>.ring.<pid>.<slot>").
uint32_t RingSlotOfSegment(const std::string& ring) {
  return static_cast<uint32_t>(std::stoul(ring.substr(ring.rfind('.') + 1)));
}

// 8-byte writes mark a live worker's slot and its ring's slot RETIRED. Whether a ring's writer
// is done is the process's word (a worker unmaps a ring it retires, before it retires its
// slot), not the registry's: the host keeps reading the ring, never unlinks it, does not
// declare the worker gone, and every event the worker published is delivered.
TEST(ForgedSlotAttack, RetiredStateForgedOnALiveWorkerNeitherUnlinksItsRingNorLosesItsEvents) {
  testing::ScopedNamespace ns;
  testing::Children children;
  LiveVictim t(children, ns.name());
  ASSERT_TRUE(t.ready);
  const uint32_t ws = static_cast<uint32_t>(t.slot.index);
  ASSERT_EQ(Attack({"write64", t.registry, std::to_string(RingSlotOffset(RingSlotOfSegment(t.ring))),
                    Hex(uint64_t{ws} << 32 | shm::kSlotRetired)}),
            0);
  ASSERT_EQ(ForgeRetiredWorkerSlot(t.registry, ws, t.victim.pid()), 0);
  std::this_thread::sleep_for(500ms);  // several housekeeping passes
  EXPECT_TRUE(SegmentExists(t.ring)) << "the host unlinked a live worker's ring";
  int status = 0;
  const std::string victim_report = t.victim.Stop(children, &status);
  EXPECT_TRUE(ExitedZero(status)) << DescribeStatus(status);
  std::map<std::string, std::string> report = t.host.Stop(children, &status);
  EXPECT_TRUE(ExitedZero(status)) << DescribeStatus(status);
  const RingLine r = ParseRing(report["ring.victim"]);
  EXPECT_NE(victim_report.find("emitted=" + std::to_string(r.emitted) + " "), std::string::npos)
      << victim_report << " vs " << report["ring.victim"] << "\n" << report["log"];
  EXPECT_EQ(r.delivered, r.published) << report["ring.victim"];
  EXPECT_EQ(r.law, "holds") << report["ring.victim"];
  EXPECT_EQ(report["rings"], "1") << report["log"];
  EXPECT_EQ(report["terminated"], "1") << "one worker, terminated once: " << report["log"];
  EXPECT_EQ(SegmentsOf(ns.name()), std::vector<std::string>{});
}

// A forged RETIRED on the slot of a live worker that has no ring yet: the worker is not
// declared terminated nor its slot freed (its process still maps the registry, which a
// destroyed Worker does not), so the events it emits afterwards are all delivered.
TEST(ForgedSlotAttack, RetiredStateForgedOnALiveWorkerWithoutARingKeepsTheWorker) {
  testing::ScopedNamespace ns;
  testing::Children children;
  HostProcess host(children, ns.name());
  ASSERT_EQ(host.started(), "started");
  WorkerProcess victim(children, ns.name(), "victim", /*burst=*/100, /*total=*/1000,
                       /*start_after=*/1500ms);
  ASSERT_TRUE(victim.attached());
  const SlotOf slot = FindWorkerSlot(ns.name(), victim.pid());
  ASSERT_GE(slot.index, 0);
  ASSERT_EQ(ForgeRetiredWorkerSlot(ShmPath(shm::RegistryName(ns.name())),
                                   static_cast<uint32_t>(slot.index), victim.pid()),
            0);
  std::this_thread::sleep_for(500ms);  // several housekeeping passes before the victim emits
  ASSERT_FALSE(victim.RingSegment(ns.name()).empty()) << "the victim never made a ring";
  std::this_thread::sleep_for(500ms);  // its 1,000 events are written and read
  int status = 0;
  const std::string victim_report = victim.Stop(children, &status);
  EXPECT_TRUE(ExitedZero(status)) << DescribeStatus(status);
  std::map<std::string, std::string> report = host.Stop(children, &status);
  EXPECT_TRUE(ExitedZero(status)) << DescribeStatus(status);
  const std::string logs = host.logs() + report["log"];
  const RingLine r = ParseRing(report["ring.victim"]);
  EXPECT_EQ(r.published, 1000u) << report["ring.victim"] << "\n" << logs;
  EXPECT_EQ(r.delivered, 1000u) << report["ring.victim"] << "\n" << logs;
  EXPECT_EQ(r.law, "holds") << report["ring.victim"];
  EXPECT_EQ(report["terminated"], "1") << "terminated once, when it left: " << logs;
  EXPECT_NE(logs.find("still maps the registry"), std::string::npos) << logs;
  EXPECT_EQ(SegmentsOf(ns.name()), std::vector<std::string>{});
}

// After a generation rewrite on a live worker's slot, the rings the worker creates later carry
// the rewritten word. They are still its rings (the segment is named by its pid and made by
// its process): the host reads them, and nothing the worker publishes is lost.
TEST(ForgedSlotAttack, RingsCreatedAfterAGenerationScribbleAreStillRead) {
  testing::ScopedNamespace ns;
  testing::Children children;
  LiveVictim t(children, ns.name());
  ASSERT_TRUE(t.ready);
  ASSERT_TRUE(t.RewriteGeneration());
  // Make the worker create a ring after the scribble: truncating its ring gets it a fresh one.
  std::this_thread::sleep_for(200ms);
  ASSERT_EQ(Attack({"truncate", ShmPath(t.ring), "0"}), 0);
  const std::string fresh = t.victim.RingSegment(ns.name(), t.ring);
  ASSERT_FALSE(fresh.empty()) << "the victim never got a fresh ring";
  std::this_thread::sleep_for(200ms);  // the fresh ring carries events
  int status = 0;
  t.victim.Stop(children, &status);
  EXPECT_TRUE(ExitedZero(status)) << DescribeStatus(status);
  std::map<std::string, std::string> report = t.host.Stop(children, &status);
  EXPECT_TRUE(ExitedZero(status)) << DescribeStatus(status);
  int rings = 0, fresh_rings = 0;
  for (const auto& [key, value] : report) {
    if (key.rfind("ring.victim", 0) != 0) continue;
    ++rings;
    const RingLine r = ParseRing(value);
    if (r.quarantine == "truncated") continue;
    ++fresh_rings;
    EXPECT_GT(r.published, 0u) << key << " " << value;
    EXPECT_EQ(r.delivered, r.published) << key << " " << value;
    EXPECT_EQ(r.law, "holds") << key << " " << value;
  }
  EXPECT_EQ(rings, 2) << report["log"];
  EXPECT_EQ(fresh_rings, 1) << "the ring made after the scribble was never read\n"
                            << report["log"];
  EXPECT_EQ(SegmentsOf(ns.name()), std::vector<std::string>{});
}

// Slots left CLAIMING by a process that died mid-claim are freed within the liveness interval,
// by a running host and by one that starts later.
TEST(ForgedSlotAttack, SlotsLeftClaimingByADeadProcessAreFreed) {
  testing::ScopedNamespace ns;
  testing::Children children;
  const pid_t gone = children.Spawn([] { return 0; });
  children.Reap(gone);
  const std::string reg = ShmPath(shm::RegistryName(ns.name()));
  auto strand = [&](uint32_t ws, uint32_t rs) {
    ASSERT_EQ(Attack({"write64", reg, std::to_string(WorkerSlotOffset(ws)),
                      Hex(uint64_t{static_cast<uint32_t>(gone)} << 32 | shm::kSlotClaiming)}),
              0);
    ASSERT_EQ(Attack({"write64", reg, std::to_string(RingSlotOffset(rs)),
                      Hex(uint64_t{ws} << 32 | shm::kSlotClaiming)}),
              0);
  };
  {
    HostProcess host(children, ns.name());
    ASSERT_EQ(host.started(), "started");
    WorkerProcess keeper(children, ns.name(), "keeper");  // keeps the registry across hosts
    ASSERT_TRUE(keeper.attached());
    strand(10, 20);
    const auto deadline = std::chrono::steady_clock::now() + 2s;
    while ((SlotState(ns.name(), WorkerSlotOffset(10)) != shm::kSlotFree ||
            SlotState(ns.name(), RingSlotOffset(20)) != shm::kSlotFree) &&
           std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(20ms);
    }
    EXPECT_EQ(SlotState(ns.name(), WorkerSlotOffset(10)), shm::kSlotFree);
    EXPECT_EQ(SlotState(ns.name(), RingSlotOffset(20)), shm::kSlotFree);
    int status = 0;
    host.Stop(children, &status);
    // With no host running, strand two more; the next host frees them.
    strand(11, 21);
    HostProcess next(children, ns.name());
    ASSERT_EQ(next.started(), "started");
    const auto deadline2 = std::chrono::steady_clock::now() + 2s;
    while ((SlotState(ns.name(), WorkerSlotOffset(11)) != shm::kSlotFree ||
            SlotState(ns.name(), RingSlotOffset(21)) != shm::kSlotFree) &&
           std::chrono::steady_clock::now() < deadline2) {
      std::this_thread::sleep_for(20ms);
    }
    EXPECT_EQ(SlotState(ns.name(), WorkerSlotOffset(11)), shm::kSlotFree);
    EXPECT_EQ(SlotState(ns.name(), RingSlotOffset(21)), shm::kSlotFree);
    keeper.Stop(children, &status);
    next.Stop(children, &status);
  }
  EXPECT_EQ(SegmentsOf(ns.name()), std::vector<std::string>{});
}

// A slot left CLAIMING under a pid some other process runs by now (pid reuse: here the test's
// own pid with another start time) is freed like a dead one's, with the segment the claimer
// left under that pid: a claimer is its pid and start time, not its pid alone.
TEST(ForgedSlotAttack, SlotsLeftClaimingUnderAReusedPidAreFreed) {
  testing::ScopedNamespace ns;
  testing::Children children;
  HostProcess host(children, ns.name());
  ASSERT_EQ(host.started(), "started");
  const std::string reg = ShmPath(shm::RegistryName(ns.name()));
  const uint32_t ws = 12, rs = 22;
  const uint32_t reused = static_cast<uint32_t>(::getpid());
  const std::string left = shm::RingName(ns.name(), static_cast<pid_t>(reused), rs);
  ASSERT_EQ(Attack({"create", ShmPath(left), "600",
                    std::to_string(shm::RingSegmentBytes(shm::kMinRingBytes))}),
            0);
  ASSERT_EQ(Attack({"write64", reg, std::to_string(WorkerSlotOffset(ws) + 8), "1"}), 0);
  ASSERT_EQ(Attack({"write64", reg, std::to_string(WorkerSlotOffset(ws)),
                    Hex(uint64_t{reused} << 32 | shm::kSlotClaiming)}),
            0);
  ASSERT_EQ(Attack({"write64", reg, std::to_string(RingSlotOffset(rs)),
                    Hex(uint64_t{ws} << 32 | shm::kSlotClaiming)}),
            0);
  const auto deadline = std::chrono::steady_clock::now() + 5s;
  while ((SlotState(ns.name(), WorkerSlotOffset(ws)) != shm::kSlotFree ||
          SlotState(ns.name(), RingSlotOffset(rs)) != shm::kSlotFree || SegmentExists(left)) &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(20ms);
  }
  EXPECT_EQ(SlotState(ns.name(), WorkerSlotOffset(ws)), shm::kSlotFree);
  EXPECT_EQ(SlotState(ns.name(), RingSlotOffset(rs)), shm::kSlotFree);
  EXPECT_FALSE(SegmentExists(left));
  int status = 0;
  host.Stop(children, &status);
  EXPECT_TRUE(ExitedZero(status)) << DescribeStatus(status);
  EXPECT_EQ(SegmentsOf(ns.name()), std::vector<std::string>{});
}

// A restarted host keeps the control state its predecessor wrote into a live worker's slot
// (host_restart_test). Same uid can write that block at any time, so the host promises only this
// much about what it adopts: a block that does not validate (a sampling rate of 2), or one
// written for another claim of the slot (its generation changed), is not adopted: the worker
// gets the defaults, and the host runs on.
TEST(ForgedControlAttack, ARestartedHostAdoptsNoControlBlockItCannotTrust) {
  testing::ScopedNamespace ns;
  auto worker_host = testing::StartHost(ns.name());
  ASSERT_NE(worker_host, nullptr);
  auto worker = testing::StartWorker(ns.name(), "victim");
  ASSERT_NE(worker, nullptr);
  const SlotOf slot = FindWorkerSlot(ns.name(), ::getpid());
  ASSERT_GE(slot.index, 0);
  const std::string reg = ShmPath(shm::RegistryName(ns.name()));
  const size_t block =
      WorkerSlotOffset(static_cast<uint32_t>(slot.index)) + offsetof(shm::WorkerSlot, control);
  ControlState applied;
  applied.deny = {"python.cpu.sampled"};
  const auto emit_cpu = [&] { return worker->Emit("python.cpu.sampled", {{"cpu_percent", 1.0}}); };

  // Each forgery, written while no host runs, then a new host adopts the namespace.
  const std::vector<std::pair<std::string, std::pair<size_t, std::string>>> forgeries = {
      {"sampling rate 2", {offsetof(shm::ControlBlock, sampling_rate), "0x4000000000000000"}},
      {"written for another claim of the slot",
       {offsetof(shm::ControlBlock, written_for), std::to_string(slot.generation + 1)}},
  };
  std::unique_ptr<Host> host = std::move(worker_host);
  for (const auto& [what, field] : forgeries) {
    for (int i = 0; i < 5; ++i) host->PollOnce();
    ASSERT_TRUE(host->SetControl("victim", applied).ok()) << what;
    ASSERT_EQ(emit_cpu(), EmitResult::kSuppressedFiltered) << what;
    host.reset();
    ASSERT_EQ(Attack({"write64", reg, std::to_string(block + field.first), field.second}), 0)
        << what;
    std::vector<std::string> log;
    host = testing::StartHost(ns.name(), [&](std::string_view l) { log.emplace_back(l); });
    ASSERT_NE(host, nullptr) << what;
    for (int i = 0; i < 5; ++i) host->PollOnce();
    Result<ControlState> now = host->Control("victim");
    ASSERT_TRUE(now.ok()) << what << ": " << now.status().ToString();
    EXPECT_EQ(now.value(), ControlState()) << what;
    EXPECT_EQ(emit_cpu(), EmitResult::kOk) << what;
    for (const std::string& line : log) EXPECT_EQ(line.find("keeps"), std::string::npos) << line;
  }
  worker.reset();
  EXPECT_TRUE(host->DrainAll(5s));
}


// ─── Forged records and counters in a ring ──────────────────────────────────────────────────

// The victim's ring header as the test reads it (pitlane code on the test's side only).
struct RingPeek {
  uint64_t producer = 0, data_bytes = 0, published = 0, snapshot_count = 0;
};
RingPeek PeekRing(const std::string& name) {
  RingPeek p;
  Result<shm::Segment> seg = shm::Segment::Open(name, shm::kRingHeaderBytes, false);
  if (!seg.ok()) return p;
  const auto* h = static_cast<const shm::RingHeader*>(seg->base());
  p.producer = h->producer.load();
  p.data_bytes = h->data_bytes;
  p.published = h->worker.published.load();
  p.snapshot_count = h->snapshot_count.load();
  return p;
}

// Waits until `published` records are in `ring` and the host has read them all.
bool WaitDrained(const std::string& ring, uint64_t published, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    Result<shm::Segment> seg = shm::Segment::Open(ring, shm::kRingHeaderBytes, false);
    if (seg.ok()) {
      const auto* h = static_cast<const shm::RingHeader*>(seg->base());
      if (h->worker.published.load() == published && h->producer.load() == h->consumer.load()) {
        return true;
      }
    }
    std::this_thread::sleep_for(10ms);
  }
  return false;
}

// One record whose sequence number jumps by 2^31 - 16: no ring can hold that many records, so
// it is corruption (the ring is quarantined under its own reason), not two billion lost events.
TEST(ForgedRecordAttack, SequenceJumpLargerThanTheRingIsQuarantinedNotCountedAsLoss) {
  testing::ScopedNamespace ns;
  testing::Children children;
  HostProcess host(children, ns.name());
  ASSERT_EQ(host.started(), "started");
  WorkerProcess victim(children, ns.name(), "victim", 100, /*total=*/1000);
  ASSERT_TRUE(victim.attached());
  const std::string ring = victim.RingSegment(ns.name());
  ASSERT_FALSE(ring.empty());
  ASSERT_TRUE(WaitDrained(ring, 1000, 5s));
  const RingPeek p = PeekRing(ring);
  ASSERT_EQ(p.published, 1000u);
  const uint64_t off = p.producer & (p.data_bytes - 1);
  ASSERT_LE(off + 16, p.data_bytes);
  const std::string path = ShmPath(ring);
  const uint64_t header = 8 | (uint64_t{static_cast<uint32_t>(p.published + 0x7FFFFFF0u)} << 32);
  ASSERT_EQ(Attack({"write64", path, std::to_string(shm::kRingHeaderBytes + off), Hex(header)}), 0);
  ASSERT_EQ(Attack({"write64", path, std::to_string(shm::kRingHeaderBytes + off + 8), "0"}), 0);
  ASSERT_EQ(Attack({"write64", path, std::to_string(offsetof(shm::RingHeader, producer)),
                    std::to_string(p.producer + 16)}),
            0);
  std::this_thread::sleep_for(200ms);
  int status = 0;
  victim.Stop(children, &status);
  EXPECT_TRUE(ExitedZero(status)) << DescribeStatus(status);
  std::map<std::string, std::string> report = host.Stop(children, &status);
  EXPECT_TRUE(ExitedZero(status)) << DescribeStatus(status);
  const RingLine r = ParseRing(report["ring.victim"]);
  EXPECT_EQ(r.quarantine, "sequence_gap") << report["ring.victim"];
  EXPECT_EQ(r.delivered, 1000u);
  EXPECT_EQ(r.rejected, 0u) << report["ring.victim"];
  EXPECT_EQ(r.law, "holds") << report["ring.victim"];
}

// A host restarted over a ring whose counter snapshot was forged never adopts the forged
// numbers, and still reads the ring: what the worker writes after the restart is delivered,
// and the ring's law is reported as unverifiable (the host counts only what it read since).
TEST(ForgedRecordAttack, RestartedHostRefusesAForgedCounterSnapshotAndStillReadsTheRing) {
  testing::ScopedNamespace ns;
  testing::Children children;
  int status = 0;
  auto first = std::make_unique<HostProcess>(children, ns.name());
  ASSERT_EQ(first->started(), "started");
  WorkerProcess victim(children, ns.name(), "victim", /*burst=*/1);  // ~1 event per ms, on
  ASSERT_TRUE(victim.attached());
  const std::string ring = victim.RingSegment(ns.name());
  ASSERT_FALSE(ring.empty());
  std::this_thread::sleep_for(300ms);
  first->Stop(children, &status);  // the worker stays (and goes on emitting): so does the ring
  const RingPeek p = PeekRing(ring);
  ASSERT_GT(p.snapshot_count, 0u);
  const size_t snap = offsetof(shm::RingHeader, snapshots) +
                      ((p.snapshot_count - 1) & 1) * sizeof(shm::HostSnapshot);
  ASSERT_EQ(Attack({"write64", ShmPath(ring),
                    std::to_string(snap + offsetof(shm::HostSnapshot, delivered)), "1000000000"}),
            0);
  HostProcess second(children, ns.name());
  ASSERT_EQ(second.started(), "started");
  std::this_thread::sleep_for(300ms);
  const std::string victim_report = victim.Stop(children, &status);
  EXPECT_TRUE(ExitedZero(status)) << DescribeStatus(status);
  std::map<std::string, std::string> report = second.Stop(children, &status);
  EXPECT_TRUE(ExitedZero(status)) << DescribeStatus(status);
  ASSERT_EQ(report.count("ring.victim"), 1u) << "the ring was not read\n" << report["log"];
  const RingLine r = ParseRing(report["ring.victim"]);
  EXPECT_GT(r.delivered, 100u) << report["ring.victim"];  // ~300 emitted after the restart
  EXPECT_LT(r.delivered, r.published) << report["ring.victim"];  // not the first host's
  EXPECT_EQ(r.law, "unverifiable") << report["ring.victim"];
  EXPECT_EQ(r.quarantine, "none") << report["ring.victim"];
  const std::string logs = second.logs() + report["log"];
  EXPECT_NE(logs.find("not resuming from its counters"), std::string::npos) << logs;
}

// Workers SIGKILLed while emitting flat out: some die inside Emit (counted as emitted, never
// published). That is an honest crash, accounted as such: the host's table never says VIOLATED.
TEST(CrashAttack, WorkersKilledInsideEmitAreAccountedAndTheLawHolds) {
  testing::ScopedNamespace ns;
  testing::Children children;
  HostProcess host(children, ns.name());
  ASSERT_EQ(host.started(), "started");
  for (int i = 0; i < 12; ++i) {
    WorkerProcess w(children, ns.name(), "crash" + std::to_string(i), 100000);
    ASSERT_TRUE(w.attached());
    std::this_thread::sleep_for(std::chrono::milliseconds(5 + 3 * i));
    children.Kill(w.pid());
    children.Reap(w.pid());
  }
  int status = 0;
  std::map<std::string, std::string> report = host.Stop(children, &status);
  EXPECT_TRUE(ExitedZero(status)) << DescribeStatus(status);
  EXPECT_EQ(report["terminated"], "12");
  EXPECT_EQ(report["law"], "holds");
  for (const auto& [key, value] : report) {
    if (key.rfind("ring.", 0) == 0) {
      EXPECT_EQ(ParseRing(value).law, "holds") << key << " " << value;
    }
  }
  EXPECT_EQ(SegmentsOf(ns.name()), std::vector<std::string>{});
}

// ─── The CLI meets a FIFO where a segment should be ────────────────────────────────────────

TEST(AdoptionAttack, FifosInPlaceOfSegmentsNeverBlockStatOrCleanup) {
  const std::string cli = testing::CliPath();
  if (::access(cli.c_str(), X_OK) != 0) GTEST_SKIP() << "no pitlane CLI at " << cli;
  testing::ScopedNamespace ns;
  const std::string reg = shm::RegistryName(ns.name());
  const std::string ring = shm::RingName(ns.name(), 1, 0);
  ASSERT_EQ(Attack({"fifo", ShmPath(reg)}), 0);
  ASSERT_EQ(Attack({"fifo", ShmPath(ring)}), 0);
  for (const char* cmd : {"stat", "cleanup --dry-run", "cleanup"}) {
    int code = -1;
    // Killed after 5 s: it blocked.
    const std::string out = testing::RunCli(std::string(cmd) + " --ns " + ns.name(), &code, 5s);
    EXPECT_NE(code, 128 + SIGKILL) << "pitlane " << cmd << " blocked: " << out;
    EXPECT_NE(out.find("FIFO"), std::string::npos) << "pitlane " << cmd << ": " << out;
  }
  // Not segments of ours: cleanup leaves them to whoever made them.
  EXPECT_TRUE(SegmentExists(reg));
  EXPECT_TRUE(SegmentExists(ring));
}

}  // namespace
}  // namespace pitlane
