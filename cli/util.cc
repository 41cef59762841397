// Helpers shared by the subcommands: errors, stop signals, per-worker aggregation.
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

uint64_t WorkerTotals::rejected_total() const {
  uint64_t n = 0;
  for (uint64_t r : rejected) n += r;
  return n;
}

std::vector<WorkerTotals> Aggregate(const std::vector<RingStats>& rings,
                                    const std::vector<WorkerInfo>& workers,
                                    std::vector<std::pair<std::string, Unringed>>* unringed) {
  std::vector<WorkerTotals> out;
  auto find = [&out](const std::string& id) -> WorkerTotals& {
    for (WorkerTotals& t : out) {
      if (t.id == id) return t;
    }
    out.emplace_back();
    out.back().id = id;
    return out.back();
  };
  for (const RingStats& r : rings) {
    WorkerTotals& t = find(r.worker_id);
    t.pid = r.pid;
    ++t.rings;
    t.emitted += r.emitted;
    t.published += r.published;
    t.dropped_full += r.dropped_full;
    t.dropped_too_large += r.dropped_too_large;
    t.suppressed_disabled += r.suppressed_disabled;
    t.suppressed_sampled += r.suppressed_sampled;
    t.suppressed_filtered += r.suppressed_filtered;
    t.delivered += r.delivered;
    t.truncated += r.truncated;
    for (uint32_t i = 0; i < shm::kRejectReasonCount; ++i) t.rejected[i] += r.rejected[i];
    t.quarantined |= r.quarantined;
    if (!r.reclaimed) {
      ++t.live_rings;
      t.used_bytes += r.used_bytes;
      t.capacity += r.capacity;
      if (r.capacity > 0) {
        t.max_fill = std::max(t.max_fill,
                              static_cast<double>(r.used_bytes) / static_cast<double>(r.capacity));
      }
    }
  }
  for (const WorkerInfo& w : workers) {
    // Keep the highest values seen: the registry copy only grows while the worker lives.
    auto it = std::find_if(unringed->begin(), unringed->end(),
                           [&w](const auto& p) { return p.first == w.id; });
    if (it == unringed->end()) {
      unringed->push_back({w.id, {}});
      it = unringed->end() - 1;
    }
    it->second.emitted = std::max(it->second.emitted, w.unringed_emitted);
    it->second.dropped = std::max(it->second.dropped, w.unringed_dropped);
    it->second.suppressed = std::max(it->second.suppressed, w.unringed_suppressed);
    WorkerTotals& t = find(w.id);
    t.pid = w.pid;
    t.alive = w.alive;
  }
  for (const auto& [id, u] : *unringed) {
    WorkerTotals& t = find(id);
    t.emitted += u.emitted;
    t.dropped_no_ring += u.dropped;
    t.unringed_suppressed += u.suppressed;
  }
  return out;
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
