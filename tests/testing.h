// Helpers shared by the test binaries.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "pitlane/host.h"
#include "pitlane/worker.h"

namespace pitlane::testing {

// A namespace name unique to this test process and call ("t<pid>x<counter>"), so tests running
// in parallel under ctest never share segments. Removes its segments when destroyed.
class ScopedNamespace {
 public:
  ScopedNamespace();
  ~ScopedNamespace();
  ScopedNamespace(const ScopedNamespace&) = delete;
  ScopedNamespace& operator=(const ScopedNamespace&) = delete;
  const std::string& name() const { return name_; }

 private:
  std::string name_;
};

// A host for namespace `ns`; its log lines go to `log` (default: dropped). Records a test
// failure and returns null when it cannot start.
std::unique_ptr<Host> StartHost(const std::string& ns,
                                std::function<void(std::string_view)> log = {});
// A worker `id` in namespace `ns` that waits up to 5 s for the host and must attach. Records a
// test failure and returns null otherwise.
std::unique_ptr<Worker> StartWorker(const std::string& ns, const std::string& id);

// Whether /dev/shm has an entry `name` (a segment name, "/pitlane...."), of whatever type.
bool SegmentExists(const std::string& name);
// The names in /dev/shm of namespace `ns` (without the leading "/").
std::vector<std::string> SegmentsOf(const std::string& ns);

// Polls `host` from this thread until `done()` or `timeout`; returns done().
bool PollUntil(Host& host, const std::function<bool()>& done,
               std::chrono::steady_clock::duration timeout);
// The rings `host` has of worker `id`.
std::vector<RingStats> RingsOf(const Host& host, const std::string& id);

// The pid of a process that just exited and was reaped: a creator that is certainly dead.
pid_t DeadPid();
// Creates ring segment `name` stamped with `pid`, `start_time` and worker id `id`, as a worker
// would (kMinRingBytes of data); records a test failure when it cannot.
void MakeRing(const std::string& name, pid_t pid, uint64_t start_time, const char* id);

// Runs `body` in a fork()ed child and _exit()s with its result (100 if it returned nothing
// useful, 101 if it threw); never returns into gtest in the child.
pid_t ForkChild(const std::function<int()>& body);

// The built CLI: $PITLANE_CLI, else ../cli/pitlane next to this test binary.
std::string CliPath();
// Runs `pitlane <args>` through the shell (so `args` may redirect or pipe), killed after
// `limit`; returns its stdout and stderr together and sets *code to its exit status (128 + the
// signal when a signal ended it: 137 when it ran past `limit`).
std::string RunCli(const std::string& args, int* code,
                   std::chrono::seconds limit = std::chrono::seconds(60));

// Child processes of a test: SIGKILLed and reaped at destruction, whatever the test's outcome.
class Children {
 public:
  Children() = default;
  ~Children();
  Children(const Children&) = delete;
  Children& operator=(const Children&) = delete;

  pid_t Spawn(const std::function<int()>& body);
  void Kill(pid_t pid);
  // Reaps `pid` if it has exited; returns true with its wait status then.
  bool TryReap(pid_t pid, int* status);
  // Reaps `pid` (blocking); returns its wait status.
  int Reap(pid_t pid);

 private:
  std::vector<pid_t> pids_;
};

}  // namespace pitlane::testing
