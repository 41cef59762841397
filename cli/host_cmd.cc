// `pitlane host`: runs a host for a namespace until SIGINT/SIGTERM or --duration.
//
// --jsonl: every delivered event becomes one JSON object per line on stdout. The handler runs
// on the poll thread, so it only copies the event into a bounded queue (kQueueCapacity
// entries); a printer thread formats and writes. When the queue is full the event is counted
// as overflow (reported on stderr every interval and at exit), never waited for.
// --summary (default): per-worker totals every interval on stdout.
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cinttypes>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <deque>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "commands.h"
#include "pitlane/host.h"

namespace pitlane::cli {
namespace {

using Clock = std::chrono::steady_clock;
constexpr size_t kQueueCapacity = 65536;

struct OwnedValue {
  Value::Kind kind;
  int64_t i;
  double d;
  std::string s;
};

// A delivered event copied out of the handler's non-owning view.
struct OwnedEvent {
  std::string name;
  int64_t timestamp_ns = 0;
  std::string correlation_id;
  std::vector<std::pair<std::string, OwnedValue>> measurements;
  std::vector<std::pair<std::string, std::string>> metadata;
  std::string worker_id;
  uint32_t worker_pid = 0;
  Transport transport = Transport::kShm;

  explicit OwnedEvent(const EventView& e)
      : name(e.name()),
        timestamp_ns(e.timestamp_ns),
        correlation_id(e.correlation_id),
        worker_id(e.worker_id),
        worker_pid(e.worker_pid),
        transport(e.transport) {
    measurements.reserve(e.measurements.size());
    for (const MeasurementView& m : e.measurements) {
      measurements.push_back({std::string(m.key), OwnedValue{m.value.kind, m.value.i, m.value.d,
                                                             std::string(m.value.s)}});
    }
    metadata.reserve(e.metadata.size());
    for (const MetadataView& m : e.metadata) {
      metadata.emplace_back(std::string(m.key), std::string(m.value));
    }
  }

  nlohmann::ordered_json ToJson() const {
    nlohmann::ordered_json m = nlohmann::ordered_json::object();
    for (const auto& [k, v] : measurements) {
      switch (v.kind) {
        case Value::Kind::kInt:
          m[k] = v.i;
          break;
        case Value::Kind::kDouble:
          m[k] = v.d;
          break;
        case Value::Kind::kString:
          m[k] = v.s;
          break;
      }
    }
    nlohmann::ordered_json md = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata) md[k] = v;  // host context comes last and wins
    nlohmann::ordered_json j;
    j["name"] = name;
    j["timestamp_ns"] = timestamp_ns;
    j["correlation_id"] = correlation_id;
    j["measurements"] = std::move(m);
    j["metadata"] = std::move(md);
    j["worker_id"] = worker_id;
    j["worker_pid"] = worker_pid;
    j["transport"] = std::string(TransportName(transport));
    return j;
  }
};

// Bounded queue from the poll thread (producer) to the printer thread (consumer); counts
// the events it had no room for.
class EventQueue {
 public:
  void Push(const EventView& e) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (q_.size() >= kQueueCapacity) {
        ++overflow_;
        return;
      }
      q_.emplace_back(e);
    }
    cv_.notify_one();
  }
  // Waits up to 100 ms for events; moves them all into `out`. False once closed and empty.
  bool PopAll(std::deque<OwnedEvent>* out) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_for(lock, std::chrono::milliseconds(100), [this] { return !q_.empty() || closed_; });
    out->swap(q_);
    return !(closed_ && out->empty());
  }
  void Close() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      closed_ = true;
    }
    cv_.notify_one();
  }
  uint64_t overflow() const {
    std::lock_guard<std::mutex> lock(mu_);
    return overflow_;
  }

 private:
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<OwnedEvent> q_;
  uint64_t overflow_ = 0;
  bool closed_ = false;
};

void Printer(EventQueue* queue, std::atomic<uint64_t>* printed, std::atomic<bool>* broken) {
  std::deque<OwnedEvent> batch;
  std::string out;
  while (queue->PopAll(&batch)) {
    out.clear();
    for (const OwnedEvent& e : batch) {
      out += e.ToJson().dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
      out += '\n';
    }
    const size_t n = batch.size();
    batch.clear();
    if (n == 0 || broken->load()) continue;
    if (std::fwrite(out.data(), 1, out.size(), stdout) != out.size() || std::fflush(stdout) != 0) {
      broken->store(true);  // stdout closed (e.g. `| head`): keep draining, stop writing
      continue;
    }
    printed->fetch_add(n, std::memory_order_relaxed);
  }
}

void PrintSummary(FILE* f, Host& host, double t, uint64_t overflow, bool jsonl, uint64_t printed,
                  std::vector<std::pair<std::string, Unringed>>* unringed) {
  const HostStats hs = host.Stats();
  uint64_t rej = 0;
  for (uint64_t r : hs.rejected) rej += r;
  std::fprintf(f,
               "t=%.1fs namespace \"%s\": delivered %" PRIu64 ", rejected %" PRIu64
               ", truncated %" PRIu64 ", workers terminated %" PRIu64
               ", quarantined rings %" PRIu64,
               t, host.ns().c_str(), hs.delivered, rej, hs.truncated, hs.workers_terminated,
               hs.quarantined_rings);
  if (jsonl) std::fprintf(f, ", printed %" PRIu64 ", queue overflow %" PRIu64, printed, overflow);
  std::fprintf(f, "\n");
  if (jsonl) return;
  const auto totals = Aggregate(host.Rings(), host.Workers(), unringed);
  if (totals.empty()) return;
  std::fprintf(f, "  %-20s %8s %5s %5s %10s %10s %9s %10s %9s  %s\n", "worker", "pid", "alive",
               "rings", "emitted", "delivered", "dropped", "suppressed", "rejected", "law");
  for (const WorkerTotals& w : totals) {
    // Live rings are read while their writer runs, so a mismatch there means events in
    // flight; once every ring of the worker is reclaimed the numbers are final.
    const bool holds = w.emitted == w.suppressed() + w.dropped() + w.published &&
                       w.published == w.delivered + w.rejected_total();
    const char* law = holds ? "holds" : w.live_rings > 0 ? "in flight" : "VIOLATED";
    std::fprintf(f,
                 "  %-20s %8u %5s %5u %10" PRIu64 " %10" PRIu64 " %9" PRIu64 " %10" PRIu64
                 " %9" PRIu64 "  %s\n",
                 w.id.c_str(), w.pid, w.alive ? "yes" : "no", w.rings, w.emitted, w.delivered,
                 w.dropped(), w.suppressed(), w.rejected_total(), law);
  }
}

}  // namespace

int RunHost(const HostCmdOptions& o) {
  auto ns_or = ResolveNamespace(o.ns);
  if (!ns_or.ok()) {
    Error("host", ns_or.status().message());
    return 2;
  }
  BlockStopSignals();  // before any thread: the main thread takes SIGINT/SIGTERM

  HostOptions ho;
  ho.ns = ns_or.value();
  ho.busy_poll = o.busy_poll;
  auto host_or = Host::Start(ho);
  if (!host_or.ok()) {
    Error("host",
          "cannot start a host for namespace \"" + ho.ns + "\": " + host_or.status().ToString());
    return 1;
  }
  Host& host = *host_or.value();

  EventQueue queue;
  std::atomic<uint64_t> printed{0};
  std::atomic<bool> broken{false};
  std::thread printer;
  if (o.jsonl) {
    Status s =
        host.Attach("pitlane.cli.jsonl", "*", [&queue](const EventView& e) { queue.Push(e); });
    if (!s.ok()) {
      Error("host", s.ToString());
      return 1;
    }
    printer = std::thread(Printer, &queue, &printed, &broken);
  }
  // In --jsonl mode stdout carries only events; status goes to stderr.
  FILE* status_out = o.jsonl ? stderr : stdout;
  std::fprintf(status_out, "pitlane host: namespace \"%s\", pid %d%s; Ctrl-C stops\n",
               ho.ns.c_str(), static_cast<int>(getpid()), o.busy_poll ? ", busy-poll" : "");
  std::fflush(status_out);
  host.RunInBackground();

  std::vector<std::pair<std::string, Unringed>> unringed;
  const auto t0 = Clock::now();
  auto next =
      t0 + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o.interval_s));
  const auto end = o.duration_s > 0 ? t0 + std::chrono::duration_cast<Clock::duration>(
                                               std::chrono::duration<double>(o.duration_s))
                                    : Clock::time_point::max();
  for (;;) {
    const auto wake = std::min(next, end);
    const int sig = WaitForSignal(std::chrono::duration<double>(wake - Clock::now()).count());
    if (sig != 0) {
      std::fprintf(status_out, "pitlane host: %s, stopping\n",
                   sig == SIGINT ? "SIGINT" : "SIGTERM");
      break;
    }
    const auto now = Clock::now();
    if (now >= end) break;  // the final summary follows
    if (now >= next) {
      PrintSummary(status_out, host, std::chrono::duration<double>(now - t0).count(),
                   queue.overflow(), o.jsonl, printed.load(), &unringed);
      std::fflush(status_out);
      next +=
          std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o.interval_s));
      if (next < now) next = now;
    }
  }
  host.Stop();
  if (printer.joinable()) {
    queue.Close();
    printer.join();
  }
  PrintSummary(status_out, host, std::chrono::duration<double>(Clock::now() - t0).count(),
               queue.overflow(), o.jsonl, printed.load(), &unringed);
  if (o.jsonl && queue.overflow() > 0) {
    std::fprintf(stderr,
                 "pitlane host: %" PRIu64
                 " events were not printed because the output queue (%zu entries) was full\n",
                 queue.overflow(), kQueueCapacity);
  }
  std::fflush(status_out);
  return 0;
}

}  // namespace pitlane::cli
