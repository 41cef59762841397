// Helpers shared by the subcommands: errors, stop signals, number formatting.
#include <signal.h>
#include <time.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>

#include "commands.h"
#include "pitlane/defaults.h"
#include "pitlane/shm.h"

namespace pitlane::cli {

void Error(std::string_view cmd, std::string_view message) {
  std::fprintf(stderr, "pitlane %.*s: %.*s\n", static_cast<int>(cmd.size()), cmd.data(),
               static_cast<int>(message.size()), message.data());
}

void BlockStopSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  signal(SIGPIPE, SIG_IGN);
}

int WaitForSignal(double seconds) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  if (seconds < 0) seconds = 0;
  timespec ts;
  ts.tv_sec = static_cast<time_t>(seconds);
  ts.tv_nsec = static_cast<long>((seconds - static_cast<double>(ts.tv_sec)) * 1e9);
  for (;;) {
    const int sig = sigtimedwait(&set, nullptr, &ts);
    if (sig > 0) return sig;
    if (errno == EAGAIN) return 0;
    if (errno != EINTR) return 0;
    // EINTR: another signal (e.g. SIGCHLD with a handler) interrupted the wait; the remaining
    // time is not reported, so waiting the full period again is acceptable for a UI tick.
  }
}

std::string Compact(uint64_t n) {
  char buf[32];
  if (n < 10000) {
    std::snprintf(buf, sizeof(buf), "%llu", static_cast<unsigned long long>(n));
  } else if (n < 10000000) {
    std::snprintf(buf, sizeof(buf), "%.1fk", static_cast<double>(n) / 1e3);
  } else {
    std::snprintf(buf, sizeof(buf), "%.2fM", static_cast<double>(n) / 1e6);
  }
  return buf;
}

Result<std::string> ResolveNamespace(const std::string& ns) {
  std::string n = ns.empty() ? defaults::Namespace() : ns;
  Status s = shm::ValidateNamespace(n);
  if (!s.ok()) return s;
  return n;
}

}  // namespace pitlane::cli
