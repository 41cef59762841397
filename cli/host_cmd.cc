// `pitlane host`: runs a host for a namespace until SIGINT/SIGTERM or --duration.
//
// Exporters (host/include/pitlane/*_exporter.h) each run on a thread of their own behind a
// bounded queue (kQueueCapacity entries): the poll thread only copies each event into it, and
// an event that finds the queue full is counted as that exporter's overflow (reported every
// interval and at exit), never waited for.
//   --jsonl               one JSON object per delivered event on stdout (status → stderr)
//   --jsonl-file PATH     the same, appended to PATH
//   --statsd HOST:PORT    StatsD lines over UDP (--statsd-prefix, --statsd-tags k1,k2)
// --summary (default, and alongside --jsonl-file/--statsd): per-worker totals every interval.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <csignal>
#include <cstdio>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "commands.h"
#include "host_exporters.h"
#include "pitlane/admin.h"
#include "pitlane/defaults.h"
#include "pitlane/grpc_common.h"
#include "pitlane/prometheus.h"
#include "pitlane/host.h"
#include "pitlane/jsonl_exporter.h"
#include "pitlane/otlp_exporter.h"
#include "pitlane/statsd_exporter.h"

namespace pitlane::cli {
namespace {

using Clock = std::chrono::steady_clock;
constexpr size_t kQueueCapacity = 65536;

// The exporters a run has, for the status lines.
struct Exporters {
  std::unique_ptr<JsonLinesExporter> stdout_jsonl;
  std::unique_ptr<JsonLinesExporter> file_jsonl;
  std::unique_ptr<StatsdExporter> statsd;
  const OtlpExporter* otlp = nullptr;  // owned by RunHost (it must go before the host)

  void StopAll() {
    for (AsyncExporter* e : all()) e->Stop();
  }
  std::vector<AsyncExporter*> all() const {
    std::vector<AsyncExporter*> v;
    for (AsyncExporter* e : {static_cast<AsyncExporter*>(stdout_jsonl.get()),
                             static_cast<AsyncExporter*>(file_jsonl.get()),
                             static_cast<AsyncExporter*>(statsd.get())}) {
      if (e != nullptr) v.push_back(e);
    }
    return v;
  }
  // Appends each exporter's counters to the status line.
  void Print(FILE* f) const {
    const char* sep = ", ";
    if (stdout_jsonl) {
      std::fprintf(f, "%sprinted %" PRIu64 ", queue overflow %" PRIu64 ", not printed %" PRIu64,
                   sep, stdout_jsonl->lines_written(), stdout_jsonl->overflow(),
                   stdout_jsonl->lines_lost());
      sep = "; ";
    }
    if (file_jsonl) {
      std::fprintf(f, "%sjsonl file: written %" PRIu64 ", queue overflow %" PRIu64
                   ", write errors %" PRIu64 ", reopened %" PRIu64 ", reopen errors %" PRIu64,
                   sep, file_jsonl->lines_written(), file_jsonl->overflow(),
                   file_jsonl->write_errors(), file_jsonl->reopens(),
                   file_jsonl->reopen_errors());
      sep = "; ";
    }
    if (statsd) {
      std::fprintf(f, "%sstatsd: datagrams %" PRIu64 ", queue overflow %" PRIu64
                   ", send errors %" PRIu64, sep, statsd->datagrams_sent(),
                   statsd->overflow(), statsd->send_errors());
      sep = "; ";
    }
    if (otlp) {
      const OtlpStats s = otlp->Stats();
      std::fprintf(f,
                   "%sotlp: spans %" PRIu64 ", metric points %" PRIu64 ", logs %" PRIu64
                   ", retried %" PRIu64 ", dropped %" PRIu64 " (queue full %" PRIu64
                   ", pending full %" PRIu64 ", refused %" PRIu64 ", rejected %" PRIu64
                   ", retries exhausted %" PRIu64 ", shutdown %" PRIu64 ")",
                   sep, s.spans_exported, s.metric_points_exported, s.logs_exported, s.retries,
                   s.dropped(), s.dropped_queue_full_events, s.dropped_pending_full,
                   s.dropped_refused, s.dropped_rejected, s.dropped_retries_exhausted,
                   s.dropped_shutdown);
    }
  }
};

void PrintSummary(FILE* f, Host& host, double t, const Exporters& exporters, bool jsonl) {
  const HostStats hs = host.Stats();
  uint64_t rej = 0;
  for (uint64_t r : hs.rejected) rej += r;
  std::fprintf(f,
               "t=%.1fs namespace \"%s\": delivered %" PRIu64 ", rejected %" PRIu64
               ", truncated %" PRIu64 ", workers terminated %" PRIu64
               ", quarantined rings %" PRIu64,
               t, host.ns().c_str(), hs.delivered, rej, hs.truncated, hs.workers_terminated,
               hs.quarantined_rings);
  exporters.Print(f);
  std::fprintf(f, "\n");
  if (jsonl) return;
  // Live workers get a row each; the gone ones (WorkerInfo::Gone()) are summed into
  // one "(N departed)" row with those the host already folded (Host::Departed()), so
  // short-lived workers do not grow the table.
  std::vector<WorkerInfo> rows;
  DepartedWorkers departed = host.Departed();
  for (WorkerInfo& w : host.Workers()) {
    if (w.Gone()) {
      departed.Add(w);
    } else {
      rows.push_back(std::move(w));
    }
  }
  if (rows.empty() && departed.workers == 0) return;
  std::fprintf(f, "  %-20s %8s %5s %5s %10s %10s %9s %10s %9s  %s\n", "worker", "pid", "alive",
               "rings", "emitted", "delivered", "dropped", "suppressed", "rejected", "law");
  auto print_row = [f](const std::string& id, const std::string& pid, bool alive, uint32_t rings,
                       const Tally& t, const char* law) {
    std::fprintf(f,
                 "  %-20s %8s %5s %5u %10" PRIu64 " %10" PRIu64 " %9" PRIu64 " %10" PRIu64
                 " %9" PRIu64 "  %s\n",
                 id.c_str(), pid.c_str(), alive ? "yes" : "no", rings, t.emitted, t.delivered,
                 t.dropped(), t.suppressed(), t.rejected_total(), law);
  };
  for (const WorkerInfo& w : rows) {
    // Live rings are read while their writer runs, so a difference there means events in
    // flight; once every ring of the worker is reclaimed the numbers are final.
    // A ring someone truncated keeps its worker-side counts as last read: not checkable.
    const char* law = w.segment_lost                  ? "unverifiable (segment truncated)"
                      : w.Conserved()                 ? "holds"
                      : w.rings > 0 && w.Consistent() ? "in flight"
                                                      : "VIOLATED";
    print_row(w.id, std::to_string(w.pid), w.alive, w.rings, w, law);
  }
  if (departed.workers > 0) {
    print_row("(" + std::to_string(departed.workers) + " departed)", "-", false, 0, departed,
              departed.unaccounted > 0 ? "VIOLATED" : "holds");
  }
}

}  // namespace

void AddHostExporterFlags(CLI::App* host_cmd, HostExporterOptions* o) {
  host_cmd
      ->add_option("--jsonl-file", o->jsonl_file,
                   "Append every delivered event as one JSON line to this file")
      ->type_name("PATH");
  auto* statsd = host_cmd->add_option("--statsd", o->statsd,
                                      "Send StatsD lines over UDP to HOST:PORT (IPv4, [IPv6] or "
                                      "localhost)")
                    ->type_name("HOST:PORT");
  host_cmd->add_option("--statsd-prefix", o->statsd_prefix, "Prefix of every StatsD metric name")
      ->type_name("PREFIX")
      ->capture_default_str()
      ->needs(statsd);
  host_cmd
      ->add_option("--statsd-tags", o->statsd_tags,
                   "Metadata keys sent as DogStatsD tags, e.g. worker_id,command")
      ->type_name("KEY,...")
      ->delimiter(',')
      ->needs(statsd);
  auto* metrics = host_cmd
                      ->add_option("--metrics", o->metrics,
                                   "Serve Prometheus /metrics on ADDR (e.g. 127.0.0.1:9464)")
                      ->type_name("ADDR");
  host_cmd
      ->add_option("--metric", o->metric_specs,
                   "An event metric to export (to --metrics and/or --otlp), e.g. "
                   "'summary(snakepit.python.call.stop.duration, tags: [worker_id, command])' "
                   "(repeatable)")
      ->type_name("SPEC");
  host_cmd
      ->add_option("--metric-naming", o->metric_naming,
                   "conventional: base units and _total (promtool-clean); snakepit: the names "
                   "Snakepit's documented PromQL uses")
      ->check(CLI::IsMember({"conventional", "snakepit"}))
      ->capture_default_str()
      ->needs(metrics);
  host_cmd
      ->add_option("--departed-retention", o->departed_retention_s,
                   "Seconds a gone worker keeps its own row and series before it is summed into "
                   "\"(departed)\"")
      ->check(CLI::Range(0.0, 31'536'000.0))
      ->capture_default_str();
  host_cmd
      ->add_option_function<std::vector<std::string>>(
          "--otlp",
          [o](const std::vector<std::string>& v) {
            o->otlp = true;
            if (!v.empty()) o->otlp_endpoint = v.front();
          },
          "Export spans (and --metric metrics) to an OpenTelemetry collector; ENDPOINT "
          "http://HOST:4318 or grpc://HOST:4317 (default: OTEL_EXPORTER_OTLP_ENDPOINT, else "
          "http://localhost:4318)")
      ->expected(0, 1)
      ->type_name("[ENDPOINT]");
  host_cmd->add_option("--otlp-protocol", o->otlp_protocol,
                       "http/protobuf or grpc (overrides OTEL_EXPORTER_OTLP_PROTOCOL)")
      ->type_name("PROTOCOL");
  host_cmd->add_option("--otlp-compression", o->otlp_compression,
                       "gzip or none (overrides OTEL_EXPORTER_OTLP_COMPRESSION)")
      ->type_name("gzip|none");
  host_cmd->add_flag("--otlp-logs", o->otlp_logs,
                     "Also export events that are not spans as OpenTelemetry log records");
}

int RunHost(const HostCmdOptions& o) { return RunHost(o, HostExporterOptions{}); }

int RunHost(const HostCmdOptions& o, const HostExporterOptions& x) {
  auto ns_or = ResolveNamespace(o.ns);
  if (!ns_or.ok()) {
    Error("host", ns_or.status().message());
    return 2;
  }
  // Exporters are created before any thread: a bad path or address fails fast.
  Exporters exporters;
  if (o.jsonl) exporters.stdout_jsonl = std::make_unique<JsonLinesExporter>(stdout, kQueueCapacity);
  if (!x.jsonl_file.empty()) {
    auto f = JsonLinesExporter::OpenFile(x.jsonl_file, kQueueCapacity);
    if (!f.ok()) {
      Error("host", f.status().message());
      return 1;  // a valid path the system refused: a runtime failure
    }
    exporters.file_jsonl = std::move(f).value();
  }
  if (!x.statsd.empty()) {
    StatsdOptions so;
    so.address = x.statsd;
    so.prefix = x.statsd_prefix;
    so.tag_keys = x.statsd_tags;
    so.capacity = kQueueCapacity;
    auto s = StatsdExporter::Create(std::move(so));
    if (!s.ok()) {
      Error("host", s.status().message());
      return ExitCodeOf(s.status());
    }
    exporters.statsd = std::move(s).value();
  }
  if (!x.metric_specs.empty() && x.metrics.empty() && !x.otlp) {
    Error("host", "--metric needs --metrics or --otlp");
    return 2;
  }
  std::vector<MetricSpec> specs;
  for (const std::string& text : x.metric_specs) {
    Result<MetricSpec> spec = MetricSpec::Parse(text);
    if (!spec.ok()) {
      Error("host", spec.status().message());
      return 2;
    }
    specs.push_back(std::move(spec).value());
  }
  PrometheusOptions prometheus;
  if (!x.metrics.empty()) {
    prometheus.listen = x.metrics;
    ParseMetricNaming(x.metric_naming, &prometheus.naming);  // CLI11 checked the value
    prometheus.specs = specs;
  }
  if (!o.grpc_listen.empty()) {
    const Status s = internal::ValidateGrpcAddress(o.grpc_listen, internal::AddressUse::kServe,
                                                   "--grpc-listen");
    if (!s.ok()) {
      Error("host", s.message());
      return 2;
    }
  }
  for (const std::string& spec : o.grpc_dial) {
    if (auto d = internal::ParseDialSpec(spec, "--grpc-dial"); !d.ok()) {
      Error("host", d.status().message());
      return 2;
    }
  }
  BlockStopSignals();  // before any thread: the main thread takes SIGINT/SIGTERM/SIGHUP

  HostOptions ho;
  ho.ns = ns_or.value();
  ho.departed_retention =
      std::chrono::milliseconds(static_cast<int64_t>(x.departed_retention_s * 1000));
  ho.busy_poll = o.busy_poll;
  ho.grpc_listen = o.grpc_listen;
  ho.grpc_dial = o.grpc_dial;
  // The token: --grpc-token-file, else $PITLANE_GRPC_TOKEN, else --grpc-token (visible in ps).
  ho.grpc_token = o.grpc_token;
  if (!o.grpc_token_file.empty()) {
    Result<std::string> t = ReadTokenFile(o.grpc_token_file);
    if (!t.ok()) {
      Error("host", t.status().message());
      return ExitCodeOf(t.status());
    }
    ho.grpc_token = std::move(t).value();
  } else if (ho.grpc_token.empty()) {
    if (const char* t = std::getenv(defaults::kGrpcTokenEnv)) ho.grpc_token = t;
  }
  if (!o.catalog_file.empty()) {
    Result<std::shared_ptr<const Catalog>> c = Catalog::LoadFile(o.catalog_file);
    if (!c.ok()) {
      Error("host", c.status().message());
      return ExitCodeOf(c.status());
    }
    ho.catalog = std::move(c).value();
  }
  ho.grpc_tls_cert = o.grpc_tls_cert;
  ho.grpc_tls_key = o.grpc_tls_key;
  auto host_or = Host::Start(ho);
  if (!host_or.ok()) {
    Error("host",
          "cannot start a host for namespace \"" + ho.ns + "\": " + host_or.status().ToString());
    return 1;
  }
  Host& host = *host_or.value();

  const std::pair<AsyncExporter*, const char*> attach[] = {
      {exporters.stdout_jsonl.get(), "pitlane.cli.jsonl"},
      {exporters.file_jsonl.get(), "pitlane.cli.jsonl_file"},
      {exporters.statsd.get(), "pitlane.cli.statsd"}};
  for (const auto& [exporter, id] : attach) {
    if (exporter == nullptr) continue;
    exporter->Start();
    if (Status s = exporter->AttachTo(host, id); !s.ok()) {
      Error("host", s.ToString());
      exporters.StopAll();
      return 1;
    }
  }
  // Destroyed (flushed) before the host as well, and after the Prometheus exporter that shows
  // its counts.
  std::unique_ptr<OtlpExporter> otlp;
  if (x.otlp) {
    OtlpOptions oo;
    oo.endpoint = x.otlp_endpoint;
    oo.protocol = x.otlp_protocol;
    oo.compression = x.otlp_compression;
    oo.logs = x.otlp_logs;
    oo.metrics = specs;
    Result<std::unique_ptr<OtlpExporter>> e = OtlpExporter::Start(host, std::move(oo));
    if (!e.ok()) {
      Error("host", e.status().message());
      exporters.StopAll();
      return ExitCodeOf(e.status());
    }
    otlp = std::move(e).value();
    exporters.otlp = otlp.get();
  }
  // Destroyed before the host (declared after it): it reads the host at every scrape.
  std::unique_ptr<PrometheusExporter> metrics;
  if (!x.metrics.empty()) {
    if (otlp) prometheus.extra = [e = otlp.get()] { return e->PrometheusText(); };
    Result<std::unique_ptr<PrometheusExporter>> m = PrometheusExporter::Start(host, prometheus);
    if (!m.ok()) {
      Error("host", m.status().message());
      exporters.StopAll();
      return ExitCodeOf(m.status());
    }
    metrics = std::move(m).value();
  }
  // The admin service (`pitlane ctl`), on the namespace's socket unless --admin says otherwise.
  // Destroyed before the host too, and stopped before it at exit.
  std::unique_ptr<AdminServer> admin;
  if (!o.no_admin && o.admin != "off") {
    Result<std::unique_ptr<AdminServer>> a =
        AdminServer::Start(host, o.admin.empty() ? DefaultAdminAddress(ho.ns) : o.admin);
    if (!a.ok()) {
      Error("host", "cannot serve the admin service: " + a.status().message());
      exporters.StopAll();
      return ExitCodeOf(a.status());
    }
    admin = std::move(a).value();
  }
  // In --jsonl mode stdout carries only events; status goes to stderr.
  FILE* status_out = o.jsonl ? stderr : stdout;
  std::fprintf(status_out, "pitlane host: namespace \"%s\", pid %d%s; Ctrl-C stops\n",
               ho.ns.c_str(), static_cast<int>(getpid()), o.busy_poll ? ", busy-poll" : "");
  if (metrics) {
    std::fprintf(status_out, "pitlane host: Prometheus metrics on http://%s:%u/metrics\n",
                 x.metrics.substr(0, x.metrics.rfind(':')).c_str(),
                 static_cast<unsigned>(metrics->port()));
  }
  if (otlp) {
    std::fprintf(status_out, "pitlane host: OpenTelemetry export to %s\n",
                 otlp->Describe().c_str());
  }
  if (host.grpc_port() != 0) {
    std::fprintf(status_out, "pitlane host: gRPC dial-in for remote workers on %s:%d%s\n",
                 o.grpc_listen.substr(0, o.grpc_listen.rfind(':')).c_str(), host.grpc_port(),
                 o.grpc_tls_cert.empty() ? "" : " (TLS)");
  }
  for (const std::string& d : o.grpc_dial) {
    std::fprintf(status_out, "pitlane host: dialing worker %s\n", d.c_str());
  }
  if (admin) {
    std::fprintf(status_out, "pitlane host: admin service (pitlane ctl) on %s\n",
                 admin->address().c_str());
  }
  std::fflush(status_out);
  host.RunInBackground();

  const auto t0 = Clock::now();
  auto next =
      t0 + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o.interval_s));
  const auto end = o.duration_s > 0 ? t0 + std::chrono::duration_cast<Clock::duration>(
                                               std::chrono::duration<double>(o.duration_s))
                                    : Clock::time_point::max();
  bool broken_pipe = false;
  for (;;) {
    // With --jsonl, wake at least every 100 ms: a reader that left (EPIPE) stops the host soon.
    auto wake = std::min(next, end);
    if (o.jsonl) wake = std::min(wake, Clock::now() + std::chrono::milliseconds(100));
    const int sig = WaitForSignal(std::chrono::duration<double>(wake - Clock::now()).count());
    if (sig == SIGHUP) {
      // logrotate (create mode) renamed the file: write to a new one at the path.
      if (exporters.file_jsonl) exporters.file_jsonl->RequestReopen();
      std::fprintf(status_out, "pitlane host: SIGHUP, %s\n",
                   exporters.file_jsonl ? ("reopening " + x.jsonl_file).c_str()
                                        : "nothing to reopen; running on");
      std::fflush(status_out);
    } else if (sig != 0) {
      std::fprintf(status_out, "pitlane host: %s, stopping\n", SignalName(sig));
      break;
    }
    if (exporters.stdout_jsonl && exporters.stdout_jsonl->broken_pipe()) {
      broken_pipe = true;
      std::fprintf(stderr,
                   "pitlane host: stdout closed (broken pipe) after %" PRIu64
                   " lines; stopping\n",
                   exporters.stdout_jsonl->lines_written());
      break;
    }
    const auto now = Clock::now();
    if (now >= end) break;  // the final summary follows
    if (now >= next) {
      PrintSummary(status_out, host, std::chrono::duration<double>(now - t0).count(), exporters,
                   o.jsonl);
      std::fflush(status_out);
      next +=
          std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o.interval_s));
      if (next < now) next = now;
    }
  }
  if (admin) admin->Stop();
  host.Stop();
  exporters.StopAll();  // each drains its queue first
  if (otlp) otlp->Shutdown();  // sends what is left, within its deadline
  PrintSummary(status_out, host, std::chrono::duration<double>(Clock::now() - t0).count(),
               exporters, o.jsonl);
  for (const AsyncExporter* e : exporters.all()) {
    if (e->overflow() == 0) continue;
    std::fprintf(stderr,
                 "pitlane host: %" PRIu64
                 " events were not exported because an exporter queue (%zu entries) was full\n",
                 e->overflow(), e->capacity());
  }
  if (broken_pipe) {
    std::fprintf(stderr, "pitlane host: %" PRIu64 " events not printed after stdout closed\n",
                 exporters.stdout_jsonl->lines_lost());
  }
  std::fflush(status_out);
  return 0;
}

}  // namespace pitlane::cli
