#include "testing.h"

#include <dirent.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "pitlane/shm.h"

namespace pitlane::testing {

ScopedNamespace::ScopedNamespace() {
  static std::atomic<int> counter{0};
  name_ = "t" + std::to_string(getpid()) + "x" + std::to_string(counter.fetch_add(1));
}

ScopedNamespace::~ScopedNamespace() {
  for (const std::string& segment : SegmentsOf(name_)) shm_unlink(("/" + segment).c_str());
}

bool SegmentExists(const std::string& name) {
  struct stat st;
  return ::lstat(("/dev/shm" + name).c_str(), &st) == 0;
}

std::vector<std::string> SegmentsOf(const std::string& ns) {
  std::vector<std::string> out;
  const std::string prefix = shm::SegmentPrefix(ns);
  if (DIR* d = ::opendir("/dev/shm")) {
    while (dirent* e = ::readdir(d)) {
      if (std::strncmp(e->d_name, prefix.c_str(), prefix.size()) == 0) out.push_back(e->d_name);
    }
    ::closedir(d);
  }
  return out;
}

bool PollUntil(Host& host, const std::function<bool()>& done,
               std::chrono::steady_clock::duration timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!done()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    if (host.PollOnce() == 0) std::this_thread::yield();
  }
  return true;
}

std::vector<RingStats> RingsOf(const Host& host, const std::string& id) {
  std::vector<RingStats> out;
  for (RingStats& r : host.Rings()) {
    if (r.worker_id == id) out.push_back(std::move(r));
  }
  return out;
}

std::unique_ptr<Host> StartHost(const std::string& ns,
                                std::function<void(std::string_view)> log) {
  HostOptions o;
  o.ns = ns;
  o.log = log ? std::move(log) : [](std::string_view) {};
  Result<std::unique_ptr<Host>> host = Host::Start(std::move(o));
  EXPECT_TRUE(host.ok()) << host.status().ToString();
  return host.ok() ? std::move(host).value() : nullptr;
}

std::unique_ptr<Worker> StartWorker(const std::string& ns, const std::string& id) {
  WorkerOptions o;
  o.ns = ns;
  o.worker_id = id;
  o.attach_wait = std::chrono::seconds(5);
  Result<std::unique_ptr<Worker>> worker = Worker::Start(std::move(o));
  EXPECT_TRUE(worker.ok()) << worker.status().ToString();
  if (!worker.ok()) return nullptr;
  EXPECT_TRUE((*worker)->attached()) << "worker " << id << " did not attach to " << ns;
  return std::move(worker).value();
}

pid_t DeadPid() {
  const pid_t child = ::fork();
  if (child == 0) ::_exit(0);
  int st = 0;
  ::waitpid(child, &st, 0);
  return child;
}

void MakeRing(const std::string& name, pid_t pid, uint64_t start_time, const char* id) {
  auto seg = shm::Segment::Create(name, shm::RingSegmentBytes(shm::kMinRingBytes));
  ASSERT_TRUE(seg.ok()) << seg.status().ToString();
  shm::RingInit init;
  init.data_bytes = shm::kMinRingBytes;
  init.pid = pid;
  init.start_time = start_time;
  init.worker_id = id;
  shm::InitRing(seg->base(), init);
}

pid_t ForkChild(const std::function<int()>& body) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    int code = 100;
    try {
      code = body();
    } catch (...) {
      code = 101;
    }
    ::_exit(code);
  }
  return pid;
}

Children::~Children() {
  for (pid_t p : pids_) {
    if (p > 0) {
      ::kill(p, SIGKILL);
      ::waitpid(p, nullptr, 0);
    }
  }
}

pid_t Children::Spawn(const std::function<int()>& body) {
  const pid_t pid = ForkChild(body);
  pids_.push_back(pid);
  return pid;
}

void Children::Kill(pid_t pid) { ASSERT_EQ(::kill(pid, SIGKILL), 0); }

bool Children::TryReap(pid_t pid, int* status) {
  for (pid_t& p : pids_) {
    if (p != pid) continue;
    if (::waitpid(pid, status, WNOHANG) == pid) {
      p = -1;
      return true;
    }
    return false;
  }
  return false;
}

int Children::Reap(pid_t pid) {
  int status = -1;
  for (pid_t& p : pids_) {
    if (p == pid) {
      ::waitpid(pid, &status, 0);
      p = -1;
    }
  }
  return status;
}

std::string CliPath() {
  if (const char* env = std::getenv("PITLANE_CLI")) return env;
  char self[4096];
  const ssize_t n = ::readlink("/proc/self/exe", self, sizeof(self) - 1);
  if (n <= 0) return {};
  std::string dir(self, static_cast<size_t>(n));
  dir.resize(dir.rfind('/'));
  return dir + "/../cli/pitlane";
}

std::string RunCli(const std::string& args, int* code, std::chrono::seconds limit) {
  const std::string cmd = "timeout -s KILL " + std::to_string(limit.count()) + " " + CliPath() +
                          " " + args + " 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) return "popen failed";
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
  const int st = ::pclose(p);
  *code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  return out;
}

}  // namespace pitlane::testing
