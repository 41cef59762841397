// `pitlane demo`: a host in this process and N worker processes (this executable again, hidden
// subcommand `demo-worker`) emitting a realistic mix, a live per-worker table, and a closing
// summary that checks the conservation law per worker.
//
// Process/thread order matters: the workers are posix_spawn'ed before this process creates any
// thread (the host's poll thread starts after), and SIGINT/SIGTERM are blocked here and taken by
// the main thread with sigtimedwait. The workers run in their own process group (a terminal's
// Ctrl-C reaches only the parent, which stops them with SIGTERM so they exit cleanly and their
// Worker destructor retires their rings) and die with the parent (PR_SET_PDEATHSIG).
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <memory>
#include <mutex>
#include <random>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "commands.h"
#include "pitlane/correlation.h"
#include "pitlane/host.h"
#include "pitlane/prometheus.h"
#include "pitlane/span.h"
#include "pitlane/worker.h"

extern char** environ;

namespace pitlane::cli {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

// ── the worker process ───────────────────────────────────────────────────────────────────────

volatile std::sig_atomic_t g_worker_stop = 0;
extern "C" void OnWorkerStop(int) { g_worker_stop = 1; }

// One worker's event mix. Each Step() emits one "thing a Python worker does" and returns how
// many events it emitted (a span is two, a failing call with a nested tool span is five...).
class Mix {
 public:
  explicit Mix(Worker& w)
      : w_(w),
        call_(ResolveSpan(w, "python.call")),
        tool_(ResolveSpan(w, "tool.execution")),
        memory_(w.Event("python.memory.sampled")),
        cpu_(w.Event("python.cpu.sampled")),
        gc_(w.Event("python.gc.completed")),
        error_(w.Event("python.error.occurred")),
        result_size_(w.Event("tool.result_size")),
        inference_(w.Event("inference.start")),  // not in the catalog: the host rejects it
        rss_(w.Measure("rss_bytes")),
        vms_(w.Measure("vms_bytes")),
        cpu_percent_(w.Measure("cpu_percent")),
        bytes_(w.Measure("bytes")),
        duration_(w.Measure("duration")),
        collected_(w.Measure("collected")),
        generation_(w.Measure("generation")),
        count_(w.Measure("count")),
        command_(w.Meta("command")),
        session_(w.Meta("session_id")),
        tool_key_(w.Meta("tool")),
        operation_(w.Meta("operation")),
        python_pid_(w.Meta("python_pid")),
        error_type_(w.Meta("error_type")),
        error_message_(w.Meta("error_message")),
        traceback_(w.Meta("traceback")),
        model_(w.Meta("model")),
        pid_(std::to_string(getpid())),
        session_id_("session-" + std::to_string(getpid() % 1000)),
        rng_(static_cast<uint64_t>(getpid()) * 0x9E3779B97F4A7C15ull) {
    // A deep-recursion traceback: larger than the ring's largest record (64 KiB with the
    // default 256 KiB ring); the worker cuts it to the catalog's 1 KiB (kOkTruncated).
    huge_traceback_.reserve(96 << 10);
    while (huge_traceback_.size() < (96u << 10)) {
      huge_traceback_ += "  File \"model.py\", line 42, in forward\n    return self.forward(x)\n";
    }
  }

  int Step() {
    ++steps_;
    if (steps_ % 50000 == 0) {
      (void)w_.Emit(error_, {{count_, 1}},
                    {{error_type_, "RecursionError"},
                     {error_message_, "maximum recursion depth exceeded"},
                     {traceback_, huge_traceback_}});
      return 1;
    }
    const uint64_t r = rng_() % 1000;
    if (r < 400) return Call();
    if (r < 600) {
      (void)w_.Emit(memory_,
                    {{rss_, static_cast<int64_t>(200'000'000 + rng_() % 50'000'000)},
                     {vms_, static_cast<int64_t>(900'000'000 + rng_() % 50'000'000)}},
                    {{python_pid_, pid_}});
      return 1;
    }
    if (r < 800) {
      (void)w_.Emit(cpu_, {{cpu_percent_, static_cast<double>(rng_() % 10000) / 100.0}},
                    {{python_pid_, pid_}});
      return 1;
    }
    if (r < 940) return Tool(/*fail=*/rng_() % 100 < 3);
    if (r < 970) {
      (void)w_.Emit(gc_, {{duration_, static_cast<int64_t>(rng_() % 2'000'000)},
                          {collected_, static_cast<int64_t>(rng_() % 500)},
                          {generation_, static_cast<int64_t>(rng_() % 3)}});
      return 1;
    }
    if (r < 990) {
      (void)w_.Emit(error_, {{count_, 1}},
                    {{error_type_, "ValueError"},
                     {error_message_, "could not convert string to float: 'n/a'"},
                     {traceback_,
                      "Traceback (most recent call last):\n  File \"app.py\", "
                      "line 7, in <module>\nValueError: could not convert"}});
      return 1;
    }
    if (r < 995) {
      // An event name outside the catalog (rejected by the host as unknown_event).
      (void)w_.Emit(inference_, {{duration_, 1}}, {{model_, "llama-3-8b"}});
      return 1;
    }
    // A measurement key outside the allowlist: the whole event is rejected
    // (bad_measurement_key).
    (void)w_.Emit(memory_, {{rss_, 1}, {"gpu_memory_bytes", 8'000'000'000}}, {{python_pid_, pid_}});
    return 1;
  }

 private:
  // A python.call span with its own correlation id; 6% raise, some run a tool inside.
  int Call() {
    CorrelationScope scope(NewCorrelationId());
    const bool nested = rng_() % 10 == 0;
    const bool fail = rng_() % 100 < 6;
    int n = 2;
    try {
      WithSpan(w_, call_,
               [&] {
                 if (nested) n += Tool(false);
                 if (fail) throw std::runtime_error("CUDA out of memory");
               },
               {{command_, "predict"}, {session_, session_id_}});
    } catch (const std::runtime_error&) {
      // Expected: the span recorded it as python.call.exception.
    }
    return n;
  }

  int Tool(bool fail) {
    Span span(w_, tool_, {{tool_key_, "web_search"}, {operation_, "query"}});
    if (fail) {
      span.Fail("TimeoutError", "tool did not answer within 30 s");
      return 2;
    }
    (void)w_.Emit(result_size_, {{bytes_, static_cast<int64_t>(rng_() % 65536)}},
                  {{tool_key_, "web_search"}});
    return 3;
  }

  Worker& w_;
  SpanEvents call_, tool_;
  EventHandle memory_, cpu_, gc_, error_, result_size_, inference_;
  MeasurementKey rss_, vms_, cpu_percent_, bytes_, duration_, collected_, generation_, count_;
  MetadataKey command_, session_, tool_key_, operation_, python_pid_, error_type_, error_message_,
      traceback_, model_;
  std::string pid_, session_id_, huge_traceback_;
  std::mt19937_64 rng_;
  uint64_t steps_ = 0;
};

}  // namespace

int RunDemoWorker(const DemoWorkerOptions& o) {
  struct sigaction sa = {};
  sa.sa_handler = OnWorkerStop;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
  prctl(PR_SET_PDEATHSIG, SIGTERM);
  if (getppid() == 1) return 1;  // the parent died before we got here

  WorkerOptions wo;
  wo.ns = o.ns;
  wo.worker_id = o.id;
  wo.attach_wait = std::chrono::milliseconds(1000);
  if (!o.grpc_target.empty()) {
    wo.transport = WorkerTransport::kGrpc;
    wo.grpc_target = o.grpc_target;
    wo.flush_timeout = std::chrono::seconds(5);
  }
  auto started = Worker::Start(wo);
  if (!started.ok()) {
    Error("demo-worker", o.id + ": " + started.status().ToString());
    return 2;
  }
  Worker& w = **started;
  if (!w.WaitAttached(std::chrono::seconds(3))) {
    Error("demo-worker", o.id + ": no host is running for namespace \"" + o.ns + "\"");
    return 3;
  }
  Mix mix(w);
  const auto t0 = Clock::now();
  const auto end =
      t0 + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o.duration_s));
  uint64_t sent = 0;
  while (!g_worker_stop) {
    const auto now = Clock::now();
    if (now >= end) break;
    // Pace: emit until on schedule, then sleep a millisecond.
    const double target = static_cast<double>(o.rate) * Seconds(now - t0);
    while (static_cast<double>(sent) < target && !g_worker_stop) sent += mix.Step();
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return 0;  // ~Worker retires the rings; the host drains and reclaims them
}

// ── the parent: host, children, table, summary ───────────────────────────────────────────────

namespace {

struct Child {
  std::string id;
  bool remote = false;  // streams over gRPC
  pid_t pid = -1;
  bool reaped = false;
  int status = 0;
};

std::string FormatDouble(double v) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.17g", v);
  return buf;
}

Result<pid_t> SpawnWorker(const DemoOptions& o, const std::string& ns, const std::string& id,
                          const std::string& grpc_target = "") {
  const std::string duration = FormatDouble(o.duration_s);
  const std::string rate = std::to_string(o.rate);
  std::vector<std::string> args = {"pitlane", "demo-worker", "--ns",   ns,       "--id",
                                   id,        "--duration",  duration, "--rate", rate};
  if (!grpc_target.empty()) {
    args.push_back("--grpc-target");
    args.push_back(grpc_target);
  }
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);

  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  // Own process group: Ctrl-C reaches only the parent, which stops the workers cleanly.
  posix_spawnattr_setpgroup(&attr, 0);
  sigset_t none, defaults;
  sigemptyset(&none);
  posix_spawnattr_setsigmask(&attr, &none);  // the parent blocks SIGINT/SIGTERM; the child not
  sigemptyset(&defaults);
  sigaddset(&defaults, SIGPIPE);
  sigaddset(&defaults, SIGINT);
  sigaddset(&defaults, SIGTERM);
  posix_spawnattr_setsigdefault(&attr, &defaults);
  posix_spawnattr_setflags(&attr,
                           POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  pid_t pid = -1;
  const int rc = posix_spawn(&pid, "/proc/self/exe", nullptr, &attr, argv.data(), environ);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) {
    return Internal("posix_spawn of /proc/self/exe for worker " + id +
                    " failed: " + std::strerror(rc));
  }
  return pid;
}

std::string ExitText(const Child& c) {
  if (!c.reaped) return "running";
  if (WIFEXITED(c.status)) return "exit " + std::to_string(WEXITSTATUS(c.status));
  if (WIFSIGNALED(c.status)) {
    const char* abbrev = sigabbrev_np(WTERMSIG(c.status));
    return abbrev ? std::string("SIG") + abbrev : "signal " + std::to_string(WTERMSIG(c.status));
  }
  return "?";
}

// The live table. On a terminal it redraws in place; otherwise it prints plain lines.
class Table {
 public:
  explicit Table(bool tty) : tty_(tty) {}

  void Draw(double t, const std::vector<WorkerInfo>& totals, const std::vector<uint64_t>& rates,
            const std::vector<std::string>& notes, size_t notes_total, const HostStats& hs) {
    std::vector<std::string> lines;
    char buf[512];
    std::snprintf(buf, sizeof(buf),
                  "t=%5.1fs  host: delivered %s  rejected %s  polls %s  sleeps %s", t,
                  Compact(hs.delivered).c_str(), Compact(hs.rejected_total()).c_str(),
                  Compact(hs.polls).c_str(), Compact(hs.sleeps).c_str());
    lines.push_back(buf);
    lines.push_back(kTable.Header());
    for (size_t i = 0; i < totals.size(); ++i) {
      const WorkerInfo& w = totals[i];
      const uint64_t other_rej = w.rejected_total() - w.rejected[shm::kRejectUnknownEvent] -
                                 w.rejected[shm::kRejectBadMeasurementKey];
      const std::string dropped = Compact(w.dropped_full) + "/" + Compact(w.dropped_too_large) +
                                  (w.dropped_no_ring ? "/" + Compact(w.dropped_no_ring) : "");
      const std::string supp = Compact(w.suppressed_disabled) + "/" +
                               Compact(w.suppressed_sampled) + "/" + Compact(w.suppressed_filtered);
      const std::string rej = Compact(w.rejected[shm::kRejectUnknownEvent]) + "/" +
                              Compact(w.rejected[shm::kRejectBadMeasurementKey]) + "/" +
                              Compact(other_rej);
      std::string fill = "-";
      if (w.rings > 0 && w.capacity > 0) {
        std::snprintf(buf, sizeof(buf), "%.1f%%",
                      100.0 * static_cast<double>(w.used_bytes) / static_cast<double>(w.capacity));
        fill = buf;
      }
      lines.push_back(
          kTable.Row({{w.id, std::to_string(w.pid), Compact(rates[i]), Compact(w.emitted),
                       Compact(w.delivered), dropped, supp, rej, fill}}));
    }
    // On a terminal the latest notes stay under the table; in a log each note appears once.
    const size_t fresh = std::min(notes.size(), notes_total - notes_seen_);
    for (size_t i = tty_ ? 0 : notes.size() - fresh; i < notes.size(); ++i) {
      lines.push_back(notes[i]);
    }
    notes_seen_ = notes_total;

    std::string out;
    if (tty_ && drawn_ > 0) {
      out += "\033[" + std::to_string(drawn_) + "A";  // back to the top of the last table
    }
    for (const std::string& l : lines) {
      out += l;
      if (tty_) out += "\033[K";  // clear what a longer previous line left
      out += "\n";
    }
    if (tty_)
      out += "\033[J";
    else
      out += "\n";
    std::fwrite(out.data(), 1, out.size(), stdout);  // the caller flushes: StdoutError()
    drawn_ = lines.size();
  }

 private:
  // Counts are Compact; the breakdowns follow the order of Tally's fields.
  inline static const TextTable kTable = {{{"worker", 10, /*left=*/true, /*gap=*/0},
                                           {"pid", 7},
                                           {"ev/s", 6},
                                           {"emitted", 8},
                                           {"delivered", 9},
                                           {"dropped full/big", 16, /*left=*/true, /*gap=*/2},
                                           {"suppressed dis/smp/flt", 22, /*left=*/true},
                                           {"rejected unk/key/other", 22, /*left=*/true},
                                           {"fill", 6}}};
  bool tty_;
  size_t drawn_ = 0;
  size_t notes_seen_ = 0;
};

void ReapNonBlocking(std::vector<Child>& children) {
  for (Child& c : children) {
    if (c.reaped) continue;
    if (waitpid(c.pid, &c.status, WNOHANG) == c.pid) c.reaped = true;
  }
}
bool AllReaped(const std::vector<Child>& children) {
  return std::all_of(children.begin(), children.end(), [](const Child& c) { return c.reaped; });
}

// SIGTERM, a grace period for a clean exit, then SIGKILL; reaps everything.
void StopChildren(std::vector<Child>& children) {
  for (Child& c : children) {
    if (!c.reaped) kill(c.pid, SIGTERM);
  }
  const auto deadline = Clock::now() + std::chrono::seconds(3);
  while (!AllReaped(children) && Clock::now() < deadline) {
    ReapNonBlocking(children);
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  for (Child& c : children) {
    if (c.reaped) continue;
    kill(c.pid, SIGKILL);
    if (waitpid(c.pid, &c.status, 0) == c.pid) c.reaped = true;
  }
}

}  // namespace

int RunDemo(const DemoOptions& o) {
  auto ns_or = ResolveNamespace(o.ns);
  if (!ns_or.ok()) return Fail("demo", ns_or.status());
  const std::string ns = ns_or.value();
  // Before any thread exists: every thread created later inherits the blocked mask.
  BlockStopSignals();

  std::mutex notes_mu;
  std::vector<std::string> notes;  // host log lines and control actions, shown under the table
  size_t notes_total = 0;          // notes ever added
  auto note = [&](std::string line) {
    std::lock_guard<std::mutex> lock(notes_mu);
    ++notes_total;
    notes.push_back(std::move(line));
    if (notes.size() > 6) notes.erase(notes.begin());
  };

  HostOptions ho;
  ho.ns = ns;
  ho.log = [&](std::string_view line) { note("host: " + std::string(line)); };
  if (o.remote > 0) ho.grpc_listen = "127.0.0.1:0";  // remote workers dial in over loopback
  auto host_or = StartHost(ho);
  if (!host_or.ok()) return Fail("demo", host_or.status());
  Host& host = *host_or.value();

  std::mutex term_mu;
  std::set<std::string> terminated;  // workers whose pool.worker.terminated the host emitted
  Status st =
      host.Attach("demo.terminated", std::string(host.catalog().root()) + ".pool.worker.terminated",
                  [&](const EventView& e) {
                    std::lock_guard<std::mutex> lock(term_mu);
                    terminated.insert(std::string(e.worker_id));
                  });
  if (!st.ok()) {
    Error("demo", st.ToString());
    return 1;
  }

  // Spawn the workers: N over shared memory, then --remote ones over loopback gRPC. Without
  // --remote this process is still single-threaded here; with it the host's gRPC threads run
  // already, which posix_spawn tolerates (the child execs at once; nothing of ours runs in it).
  std::vector<Child> children;
  const std::string grpc_target =
      o.remote > 0 ? "127.0.0.1:" + std::to_string(host.grpc_port()) : std::string();
  for (int i = 0; i < o.workers + o.remote; ++i) {
    const bool remote = i >= o.workers;
    Child c;
    c.remote = remote;
    c.id = remote ? "demo-r" + std::to_string(i - o.workers) : "demo-w" + std::to_string(i);
    auto pid = SpawnWorker(o, ns, c.id, remote ? grpc_target : std::string());
    if (!pid.ok()) {
      StopChildren(children);
      return Fail("demo", pid.status());
    }
    c.pid = pid.value();
    children.push_back(c);
  }

  // --metrics: the host's /metrics with the event metrics packaging/grafana/pitlane.json and
  // packaging/prometheus/pitlane-alerts.yml query (the same list as packaging/pitlane-host.env).
  // Destroyed before the host (declared after it).
  std::unique_ptr<PrometheusExporter> metrics;
  if (!o.metrics.empty()) {
    HostExporterOptions x;  // as `pitlane host --metrics ADDR --metric SPEC ...` has them
    x.metrics = o.metrics;
    x.metric_specs = {"histogram(snakepit.python.call.stop.duration, tags: [command])",
                      "counter(snakepit.python.call.exception.count, tags: [error_type])",
                      "last_value(snakepit.python.memory.sampled.rss_bytes, tags: [worker_id])"};
    Result<std::unique_ptr<PrometheusExporter>> m =
        StartMetrics(host, x, ParseMetricSpecs(x).value());  // the specs above are valid
    if (!m.ok()) {
      StopChildren(children);
      return Fail("demo", m.status());
    }
    metrics = std::move(m).value();
    note("Prometheus metrics on " + MetricsUrl(o.metrics, metrics->port()));
  }

  const bool tty = isatty(STDOUT_FILENO) == 1;
  const std::string remote =
      o.remote > 0 ? " + " + std::to_string(o.remote) + " over gRPC (127.0.0.1:" +
                         std::to_string(host.grpc_port()) + ")"
                   : "";
  std::printf("pitlane demo: namespace \"%s\", host pid %d, %d workers%s x %" PRId64
              " events/s for %g s%s\n",
              ns.c_str(), static_cast<int>(getpid()), o.workers, remote.c_str(), o.rate,
              o.duration_s, tty ? " (Ctrl-C stops early)" : "");
  std::fflush(stdout);

  host.RunInBackground();

  Table table(tty);
  std::vector<std::pair<std::string, uint64_t>> last_emitted;
  const auto t0 = Clock::now();
  auto last_tick = t0;
  const double tick = 0.5;
  bool control_applied = false;
  bool interrupted = false;
  const double deadline = o.duration_s + 15;  // workers that do not finish by then are stopped
  for (;;) {
    const double since = Seconds(Clock::now() - last_tick);
    const int sig = WaitForSignal(tick - since);
    if (sig != 0) {
      interrupted = true;
      break;
    }
    const auto now = Clock::now();
    const double dt = Seconds(now - last_tick);
    last_tick = now;
    const double t = Seconds(now - t0);

    if (!control_applied && t >= o.duration_s / 2) {
      control_applied = true;
      Status s = host.UpdateSampling(children[0].id, 0.5, {"python.memory.*"});
      note("control: " + children[0].id +
           " sampling python.memory.* at 0.5: " + (s.ok() ? std::string("applied") : s.ToString()));
      if (children.size() > 1) {
        s = host.UpdateFilter(children[1].id, {}, {"python.cpu.*"});
        note("control: " + children[1].id +
             " deny python.cpu.*: " + (s.ok() ? std::string("applied") : s.ToString()));
      }
    }

    ReapNonBlocking(children);
    auto totals = host.Workers();
    std::stable_sort(totals.begin(), totals.end(), [&children](const auto& a, const auto& b) {
      auto rank = [&children](const std::string& id) {
        for (size_t i = 0; i < children.size(); ++i) {
          if (children[i].id == id) return i;
        }
        return children.size();
      };
      return rank(a.id) < rank(b.id);
    });
    std::vector<uint64_t> rates;
    for (const WorkerInfo& w : totals) {
      auto it = std::find_if(last_emitted.begin(), last_emitted.end(),
                             [&w](const auto& p) { return p.first == w.id; });
      if (it == last_emitted.end()) {
        last_emitted.push_back({w.id, 0});
        it = last_emitted.end() - 1;
      }
      const uint64_t delta = w.emitted - std::min(w.emitted, it->second);
      it->second = w.emitted;
      rates.push_back(dt > 0 ? static_cast<uint64_t>(static_cast<double>(delta) / dt) : 0);
    }
    std::vector<std::string> shown;
    size_t shown_total;
    {
      std::lock_guard<std::mutex> lock(notes_mu);
      shown = notes;
      shown_total = notes_total;
    }
    table.Draw(t, totals, rates, shown, shown_total, host.Stats());
    if (const int write_err = StdoutError(); write_err != 0) {  // nobody reads the table
      // `pitlane demo | head -1`; any other failure is main's to report (exit 1).
      if (write_err == EPIPE) Error("demo", "stdout closed (broken pipe); stopping the workers");
      interrupted = true;
      break;
    }

    if (AllReaped(children)) break;
    if (t > deadline) {
      note("workers still running " + FormatDouble(deadline) + " s after start: stopping them");
      break;
    }
  }

  if (interrupted) std::printf("interrupted: stopping the workers\n");
  StopChildren(children);
  host.Stop();
  const bool drained = host.DrainAll(std::chrono::seconds(5));

  // ── summary ──
  const std::vector<WorkerInfo> totals = host.Workers();
  std::printf("\nsummary: namespace \"%s\", %.1f s%s%s\n", ns.c_str(), Seconds(Clock::now() - t0),
              interrupted ? " (interrupted)" : "", drained ? "" : " (host did not drain in 5 s)");
  const TextTable summary = {{{"worker", 10, /*left=*/true, /*gap=*/0}, {"process", 9, true}},
                             LawColumns(),
                             {{"term", 5}, {"law", 0, /*left=*/true, /*gap=*/2}}};
  std::printf("%s\n", summary.Header().c_str());
  int failed = 0;
  std::vector<std::string> details;
  Tally all;  // over every worker, for the rejections by reason
  for (const Child& c : children) {
    WorkerInfo w;
    w.id = c.id;
    for (const WorkerInfo& t : totals) {
      if (t.id == c.id) w = t;
    }
    all += w;
    // Every worker has stopped and the host has drained: the law must hold exactly.
    const bool ok = w.Law() == LawVerdict::kHolds && w.rings_total > 0;
    bool term;
    {
      std::lock_guard<std::mutex> lock(term_mu);
      term = terminated.count(c.id) > 0;
    }
    // pool.worker.terminated is about local processes the host watches.
    const char* term_cell = c.remote ? "-" : term ? "yes" : "no";
    std::printf(
        "%s\n",
        summary.Row({{c.id, ExitText(c)}, LawCells(w), {term_cell, ok ? "OK" : "FAIL"}}).c_str());
    if (!ok) {
      ++failed;
      if (w.rings_total == 0) details.push_back(c.id + ": the host never saw a ring of this worker");
      if (w.segment_lost) details.push_back(c.id + ": a ring of this worker was truncated");
      if (w.history_unknown) details.push_back(c.id + ": a ring's counter snapshot was refused");
      if (!w.Conserved()) {
        details.push_back(c.id + ": " + LawMismatch(w) +
                          (w.rings == 0 ? "" : " (rings not drained yet)"));
      }
    }
    if (w.suppressed() > 0 || w.dropped() > 0) {
      char buf[256];
      std::snprintf(buf, sizeof(buf),
                    "  %s: suppressed disabled=%" PRIu64 " sampled=%" PRIu64 " filtered=%" PRIu64
                    "; dropped full=%" PRIu64 " too_large=%" PRIu64 " no_ring=%" PRIu64,
                    c.id.c_str(), w.suppressed_disabled, w.suppressed_sampled,
                    w.suppressed_filtered, w.dropped_full, w.dropped_too_large, w.dropped_no_ring);
      details.push_back(buf);
    }
  }
  for (const std::string& d : details) std::printf("%s\n", d.c_str());
  const std::string reasons = RejectedByReason(all);
  std::printf("  rejected by reason: %s\n", reasons.empty() ? "none" : reasons.c_str());
  std::printf(
      "law: emitted = suppressed + dropped + published, published = delivered + rejected\n");
  if (failed == 0) {
    std::printf("all %zu workers OK\n", children.size());
  } else {
    std::printf("%d of %zu workers FAIL\n", failed, children.size());
  }
  std::fflush(stdout);
  return failed == 0 ? 0 : 1;
}

CLI::App* AddDemoCommand(CLI::App* app, DemoOptions* o) {
  CLI::App* cmd = app->add_subcommand(
      "demo", "Run a host and N worker processes emitting a realistic mix; live table + summary");
  cmd->add_option("--workers", o->workers, "Worker processes")
      ->check(IntegerIn(1, 64))
      ->capture_default_str();
  cmd->add_option("--duration", o->duration_s, "How long the workers emit (seconds)")
      ->check(PositiveSeconds(86400))
      ->capture_default_str();
  cmd->add_option("--rate", o->rate, "Events per second per worker")
      ->check(IntegerIn(1, 10'000'000, "events per second"))
      ->capture_default_str();
  cmd->add_option("--remote", o->remote, "Extra workers that stream to the host over loopback gRPC")
      ->check(IntegerIn(0, 16))
      ->capture_default_str();
  cmd->add_option("--ns", o->ns, "Namespace (default: $PITLANE_NAMESPACE or \"default\")")
      ->check(NamespaceName());
  cmd->add_option("--metrics", o->metrics,
                  "Serve Prometheus /metrics on ADDR with the event metrics the shipped Grafana "
                  "dashboard uses (e.g. 127.0.0.1:9464)")
      ->type_name("ADDR");
  return cmd;
}

CLI::App* AddDemoWorkerCommand(CLI::App* app, DemoWorkerOptions* o) {
  CLI::App* cmd = app->add_subcommand("demo-worker", "A worker process of `pitlane demo`");
  cmd->group("");  // hidden
  cmd->add_option("--ns", o->ns)->required();
  cmd->add_option("--id", o->id)->required();
  cmd->add_option("--grpc-target", o->grpc_target);
  cmd->add_option("--duration", o->duration_s)->check(PositiveSeconds(86400));
  cmd->add_option("--rate", o->rate)->check(IntegerIn(1, 10'000'000, "events per second"));
  return cmd;
}

}  // namespace pitlane::cli
