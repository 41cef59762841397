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
#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "commands.h"
#include "pitlane/admin.h"
#include "pitlane/defaults.h"
#include "pitlane/grpc_common.h"
#include "pitlane/host.h"
#include "pitlane/jsonl_exporter.h"
#include "pitlane/otlp_exporter.h"
#include "pitlane/prometheus.h"
#include "pitlane/statsd_exporter.h"

namespace pitlane::cli {
namespace {

using Clock = std::chrono::steady_clock;
constexpr size_t kQueueCapacity = 65536;
// How long a stopping host goes on reading and reclaiming (Host::DrainAll) before it exits.
constexpr std::chrono::milliseconds kFinalDrain{500};

Clock::duration ToDuration(double seconds) {
  return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
}
double SecondsSince(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// The queue exporters of a run; created before any thread, so a bad path or address fails fast.
struct Exporters {
  std::unique_ptr<JsonLinesExporter> stdout_jsonl;
  std::unique_ptr<JsonLinesExporter> file_jsonl;
  std::unique_ptr<StatsdExporter> statsd;

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
};

// The services that read the host while it runs. Declared after the host: destroyed before it.
struct Services {
  std::unique_ptr<OtlpExporter> otlp;  // destroyed (flushed) after the Prometheus exporter
  std::unique_ptr<PrometheusExporter> metrics;
  std::unique_ptr<AdminServer> admin;
};

// Every exporter of a run as it reports itself: the status line, and `pitlane stat` through the
// admin service, show the same names and counts.
std::vector<ExporterReport> ReportsOf(const Exporters& e, const OtlpExporter* otlp) {
  std::vector<ExporterReport> out;
  for (const AsyncExporter* x : e.all()) out.push_back(x->Report());
  if (otlp != nullptr) out.push_back(otlp->Report());
  return out;
}

// Appends each exporter's counts to the status line.
void PrintExporterCounters(FILE* f, const Exporters& e, const OtlpExporter* otlp) {
  for (const ExporterReport& r : ReportsOf(e, otlp)) {
    std::fprintf(f, "; %s", DescribeReport(r).c_str());
  }
}

// Live workers get a row each; the gone ones (WorkerInfo::Gone()) are summed into one
// "(N departed)" row with those the host already folded (Host::Departed()), so short-lived
// workers do not grow the table.
void PrintWorkerTable(FILE* f, const Host& host) {
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
  const TextTable table = {
      {{"worker", 20, /*left=*/true, /*gap=*/2}, {"pid", 8}, {"alive", 5}, {"rings", 5}},
      LawColumns(),
      {{"law", 0, /*left=*/true, /*gap=*/2}}};
  std::fprintf(f, "%s\n", table.Header().c_str());
  for (const WorkerInfo& w : rows) {
    const std::string row =
        table.Row({{w.id, std::to_string(w.pid), w.alive ? "yes" : "no", std::to_string(w.rings)},
                   LawCells(w),
                   {LawVerdictName(w.Law())}});
    std::fprintf(f, "%s\n", row.c_str());
  }
  if (departed.workers > 0) {
    const std::string row =
        table.Row({{"(" + std::to_string(departed.workers) + " departed)", "-", "no", "0"},
                   LawCells(departed),
                   {LawVerdictName(departed.Law())}});
    std::fprintf(f, "%s\n", row.c_str());
  }
}

void PrintSummary(FILE* f, const Host& host, double t, const Exporters& exporters,
                  const OtlpExporter* otlp, bool jsonl) {
  const HostStats hs = host.Stats();
  std::fprintf(f,
               "t=%.1fs namespace \"%s\": delivered %" PRIu64 ", rejected %" PRIu64
               ", truncated %" PRIu64 ", workers terminated %" PRIu64
               ", quarantined rings %" PRIu64,
               t, host.ns().c_str(), hs.delivered, hs.rejected_total(), hs.truncated,
               hs.workers_terminated, hs.quarantined_rings);
  PrintExporterCounters(f, exporters, otlp);
  std::fprintf(f, "\n");
  if (!jsonl) PrintWorkerTable(f, host);
}

// Opens the queue exporters the flags ask for.
Status OpenExporters(const HostCmdOptions& o, Exporters* e) {
  const HostExporterOptions& x = o.exporters;
  if (o.jsonl) e->stdout_jsonl = std::make_unique<JsonLinesExporter>(stdout, kQueueCapacity);
  if (!x.jsonl_file.empty()) {
    auto f = JsonLinesExporter::OpenFile(x.jsonl_file, kQueueCapacity);
    // A valid path the system refused: a runtime failure, whatever the code.
    if (!f.ok()) return Unavailable(f.status().message());
    e->file_jsonl = std::move(f).value();
  }
  if (!x.statsd.empty()) {
    StatsdOptions so;
    so.address = x.statsd;
    so.prefix = x.statsd_prefix;
    so.tag_keys = x.statsd_tags;
    so.capacity = kQueueCapacity;
    auto s = StatsdExporter::Create(std::move(so));
    if (!s.ok()) return s.status();
    e->statsd = std::move(s).value();
  }
  return Status::Ok();
}

// The gRPC addresses, checked before any thread starts.
Status ValidateGrpcFlags(const HostCmdOptions& o) {
  if (!o.grpc_listen.empty()) {
    const Status s = internal::ValidateGrpcAddress(o.grpc_listen, internal::AddressUse::kServe,
                                                   "--grpc-listen");
    if (!s.ok()) return s;
  }
  for (const std::string& spec : o.grpc_dial) {
    if (auto d = internal::ParseDialSpec(spec, "--grpc-dial"); !d.ok()) return d.status();
  }
  return Status::Ok();
}

Result<HostOptions> HostOptionsFrom(const HostCmdOptions& o, const std::string& ns) {
  HostOptions ho;
  ho.ns = ns;
  ho.departed_retention =
      std::chrono::milliseconds(static_cast<int64_t>(o.exporters.departed_retention_s * 1000));
  ho.busy_poll = o.busy_poll;
  ho.spin = std::chrono::microseconds(o.spin_us);
  ho.grpc_listen = o.grpc_listen;
  ho.grpc_dial = o.grpc_dial;
  ho.grpc_tls_cert = o.grpc_tls_cert;
  ho.grpc_tls_key = o.grpc_tls_key;
  // The token: --grpc-token-file or --grpc-token (exclusive; visible in ps), else
  // $PITLANE_GRPC_TOKEN: a flag on the command line wins over the environment.
  ho.grpc_token = o.grpc_token;
  if (!o.grpc_token_file.empty()) {
    Result<std::string> t = ReadTokenFile(o.grpc_token_file);
    if (!t.ok()) return t.status();
    ho.grpc_token = std::move(t).value();
  } else if (ho.grpc_token.empty()) {
    if (const char* t = std::getenv(defaults::kGrpcTokenEnv)) ho.grpc_token = t;
  }
  if (!o.catalog_file.empty()) {
    Result<std::shared_ptr<const Catalog>> c = Catalog::LoadFile(o.catalog_file);
    if (!c.ok()) return c.status();
    ho.catalog = std::move(c).value();
  }
  return ho;
}

// Starts the OTLP exporter, the Prometheus endpoint and the admin service the flags ask for.
Status StartServices(Host& host, const HostCmdOptions& o, std::vector<MetricSpec> specs,
                     const Exporters& exporters, Services* s) {
  const HostExporterOptions& x = o.exporters;
  if (x.otlp) {
    OtlpOptions oo;
    oo.endpoint = x.otlp_endpoint;
    oo.protocol = x.otlp_protocol;
    oo.compression = x.otlp_compression;
    oo.logs = x.otlp_logs;
    oo.metrics = specs;
    Result<std::unique_ptr<OtlpExporter>> e = OtlpExporter::Start(host, std::move(oo));
    if (!e.ok()) return e.status();
    s->otlp = std::move(e).value();
  }
  if (!x.metrics.empty()) {
    std::function<std::string()> extra;
    if (s->otlp) extra = [e = s->otlp.get()] { return e->PrometheusText(); };
    Result<std::unique_ptr<PrometheusExporter>> m =
        StartMetrics(host, x, std::move(specs), std::move(extra));
    if (!m.ok()) return m.status();
    s->metrics = std::move(m).value();
  }
  if (!o.no_admin && o.admin != "off") {
    // `pitlane stat` reads every exporter's counts through the admin service (the admin
    // server is destroyed before the exporters: Services' member order, and `exporters` is
    // declared before `services` in RunHost).
    ExporterReports reports = [&exporters, otlp = s->otlp.get()] {
      return ReportsOf(exporters, otlp);
    };
    Result<std::unique_ptr<AdminServer>> a = AdminServer::Start(
        host, o.admin.empty() ? DefaultAdminAddress(host.ns()) : o.admin, std::move(reports));
    if (!a.ok()) {
      return Status(a.status().code(), "cannot serve the admin service: " + a.status().message());
    }
    s->admin = std::move(a).value();
  }
  return Status::Ok();
}

void PrintBanner(FILE* out, const HostCmdOptions& o, const Host& host, const Services& s) {
  // How it waits when idle: the spin decides which emits pay for waking it (--spin's help).
  const std::string idle =
      o.busy_poll ? ", busy-poll" : ", sleeps after " + std::to_string(o.spin_us) + " µs idle";
  std::fprintf(out, "pitlane host: namespace \"%s\", pid %d%s; Ctrl-C stops\n", host.ns().c_str(),
               static_cast<int>(getpid()), idle.c_str());
  if (s.metrics) {
    std::fprintf(out, "pitlane host: Prometheus metrics on %s\n",
                 MetricsUrl(o.exporters.metrics, s.metrics->port()).c_str());
  }
  if (s.otlp) {
    std::fprintf(out, "pitlane host: OpenTelemetry export to %s\n", s.otlp->Describe().c_str());
  }
  if (host.grpc_port() != 0) {
    std::fprintf(out, "pitlane host: gRPC dial-in for remote workers on %s:%d%s\n",
                 HostPart(o.grpc_listen).c_str(), host.grpc_port(),
                 o.grpc_tls_cert.empty() ? "" : " (TLS)");
  }
  for (const std::string& d : o.grpc_dial) {
    std::fprintf(out, "pitlane host: dialing worker %s\n", d.c_str());
  }
  if (s.admin) {
    std::fprintf(out, "pitlane host: admin service (pitlane ctl) on %s\n",
                 s.admin->address().c_str());
  }
  std::fflush(out);
}

// Prints a summary every interval until a stop signal, --duration or (--jsonl) a closed stdout;
// SIGHUP reopens --jsonl-file. Returns true when stdout closed. Summaries on a stdout that
// closed (`pitlane host | head -1`) stop, said once on stderr, and the host runs on: its work
// is its exporters and its workers, not the table (a service must not stop for its log reader).
bool ServeUntilStopped(const HostCmdOptions& o, const Host& host, const Exporters& e,
                       const OtlpExporter* otlp, FILE* out, Clock::time_point t0) {
  auto next = t0 + ToDuration(o.interval_s);
  const auto end = o.duration_s > 0 ? t0 + ToDuration(o.duration_s) : Clock::time_point::max();
  bool summaries = true;
  for (;;) {
    // With --jsonl, wake at least every 100 ms: a reader that left (EPIPE) stops the host soon.
    auto wake = std::min(next, end);
    if (o.jsonl) wake = std::min(wake, Clock::now() + std::chrono::milliseconds(100));
    const int sig = WaitForSignal(std::chrono::duration<double>(wake - Clock::now()).count());
    if (sig == SIGHUP) {
      // logrotate (create mode) renamed the file: write to a new one at the path.
      if (e.file_jsonl) e.file_jsonl->RequestReopen();
      std::fprintf(out, "pitlane host: SIGHUP, %s\n",
                   e.file_jsonl ? ("reopening " + o.exporters.jsonl_file).c_str()
                                : "nothing to reopen; running on");
      std::fflush(out);
    } else if (sig != 0) {
      std::fprintf(out, "pitlane host: %s, stopping\n", SignalName(sig));
      return false;
    }
    if (e.stdout_jsonl && e.stdout_jsonl->broken_pipe()) {
      std::fprintf(stderr,
                   "pitlane host: stdout closed (broken pipe) after %" PRIu64 " lines; stopping\n",
                   e.stdout_jsonl->lines_written());
      return true;
    }
    const auto now = Clock::now();
    if (now >= end) return false;  // the final summary follows
    if (now >= next) {
      if (summaries) {
        PrintSummary(out, host, SecondsSince(t0), e, otlp, o.jsonl);
        if (out != stdout) {
          std::fflush(out);
        } else if (const int err = StdoutError(); err != 0) {  // it flushes, and sees why
          summaries = false;
          const std::string why = err == EPIPE ? "stdout closed (broken pipe)"
                                               : std::string("cannot write to stdout: ") +
                                                     std::strerror(err);  // exit 1 at the end
          std::fprintf(stderr,
                       "pitlane host: %s: no more summaries; the host runs on until SIGTERM or "
                       "SIGINT\n",
                       why.c_str());
        }
      }
      next = std::max(next + ToDuration(o.interval_s), now);
    }
  }
}

// After the host stopped: the last summary, and what was lost on the way.
void PrintFinal(FILE* out, const HostCmdOptions& o, const Host& host, const Exporters& e,
                const OtlpExporter* otlp, Clock::time_point t0, bool broken_pipe) {
  PrintSummary(out, host, SecondsSince(t0), e, otlp, o.jsonl);
  for (const AsyncExporter* x : e.all()) {
    if (x->overflow() == 0) continue;
    std::fprintf(stderr,
                 "pitlane host: %" PRIu64
                 " events were not exported because an exporter queue (%zu entries) was full\n",
                 x->overflow(), x->capacity());
  }
  if (broken_pipe) {
    std::fprintf(stderr, "pitlane host: %" PRIu64 " events not printed after stdout closed\n",
                 e.stdout_jsonl->lines_lost());
  }
  std::fflush(out);
}

// Attaches the queue exporters under their handler ids and starts their threads.
Status AttachExporters(Host& host, Exporters& e) {
  const std::pair<AsyncExporter*, const char*> attach[] = {
      {e.stdout_jsonl.get(), "pitlane.cli.jsonl"},
      {e.file_jsonl.get(), "pitlane.cli.jsonl_file"},
      {e.statsd.get(), "pitlane.cli.statsd"}};
  for (const auto& [exporter, id] : attach) {
    if (exporter == nullptr) continue;
    exporter->Start();
    if (Status s = exporter->AttachTo(host, id); !s.ok()) return Internal(s.ToString());
  }
  return Status::Ok();
}

// --otlp's ENDPOINT, checked as OtlpExporter::Start checks it, so a typo is a usage error
// before the host starts rather than an exporter retrying a port that cannot exist.
CLI::Validator OtlpEndpoint() {
  return CLI::Validator(
      [](std::string& in) -> std::string {
        const Status s = CheckOtlpEndpoint(in);
        return s.ok() ? std::string() : s.message();
      },
      "", "OtlpEndpoint");
}

void AddExporterFlags(CLI::App* host_cmd, HostExporterOptions* o) {
  host_cmd
      ->add_option("--jsonl-file", o->jsonl_file,
                   "Append every delivered event as one JSON line to this file")
      ->type_name("PATH");
  auto* statsd = host_cmd
                     ->add_option("--statsd", o->statsd,
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
      ->check(NonNegativeSeconds(31'536'000))
      ->capture_default_str();
  auto* otlp = host_cmd
                   ->add_option_function<std::vector<std::string>>(
                       "--otlp",
                       [o](const std::vector<std::string>& v) {
                         o->otlp = true;
                         if (!v.empty()) o->otlp_endpoint = v.front();
                       },
                       "Export spans (and --metric metrics) to an OpenTelemetry collector; "
                       "ENDPOINT http://HOST:4318 or grpc://HOST:4317 (default: "
                       "OTEL_EXPORTER_OTLP_ENDPOINT, else http://localhost:4318)")
                   ->expected(0, 1)
                   ->type_name("[ENDPOINT]")
                   ->check(OtlpEndpoint());
  // The --otlp-* flags tune the exporter --otlp starts; without it they would change nothing.
  host_cmd
      ->add_option("--otlp-protocol", o->otlp_protocol,
                   "http/protobuf or grpc (overrides OTEL_EXPORTER_OTLP_PROTOCOL)")
      ->type_name("PROTOCOL")
      ->needs(otlp);
  host_cmd
      ->add_option("--otlp-compression", o->otlp_compression,
                   "gzip or none (overrides OTEL_EXPORTER_OTLP_COMPRESSION)")
      ->type_name("gzip|none")
      ->needs(otlp);
  host_cmd
      ->add_flag("--otlp-logs", o->otlp_logs,
                 "Also export events that are not spans as OpenTelemetry log records")
      ->needs(otlp);
}

}  // namespace

Result<std::vector<MetricSpec>> ParseMetricSpecs(const HostExporterOptions& x) {
  if (!x.metric_specs.empty() && x.metrics.empty() && !x.otlp) {
    return InvalidArgument("--metric needs --metrics or --otlp");
  }
  std::vector<MetricSpec> specs;
  for (const std::string& text : x.metric_specs) {
    Result<MetricSpec> spec = MetricSpec::Parse(text);
    if (!spec.ok()) return InvalidArgument(spec.status().message());
    specs.push_back(std::move(spec).value());
  }
  return specs;
}

Result<std::unique_ptr<PrometheusExporter>> StartMetrics(Host& host, const HostExporterOptions& x,
                                                         std::vector<MetricSpec> specs,
                                                         std::function<std::string()> extra) {
  PrometheusOptions po;
  po.listen = x.metrics;
  ParseMetricNaming(x.metric_naming, &po.naming);  // CLI11 checked the value
  po.specs = std::move(specs);
  po.extra = std::move(extra);
  return PrometheusExporter::Start(host, po);
}

int RunHost(const HostCmdOptions& o) {
  Result<std::string> ns = ResolveNamespace(o.ns);
  if (!ns.ok()) return Fail("host", ns.status());
  Exporters exporters;
  if (Status s = OpenExporters(o, &exporters); !s.ok()) return Fail("host", s);
  Result<std::vector<MetricSpec>> specs = ParseMetricSpecs(o.exporters);
  if (!specs.ok()) return Fail("host", specs.status());
  if (Status s = ValidateGrpcFlags(o); !s.ok()) return Fail("host", s);
  BlockStopSignals();  // before any thread: the main thread takes SIGINT/SIGTERM/SIGHUP

  Result<HostOptions> ho = HostOptionsFrom(o, ns.value());
  if (!ho.ok()) return Fail("host", ho.status());
  auto host_or = StartHost(ho.value());
  if (!host_or.ok()) return Fail("host", host_or.status());
  Host& host = *host_or.value();
  Services services;
  Status s = AttachExporters(host, exporters);
  if (s.ok()) s = StartServices(host, o, std::move(specs).value(), exporters, &services);
  if (!s.ok()) {
    exporters.StopAll();
    return Fail("host", s);
  }
  // In --jsonl mode stdout carries only events; status goes to stderr.
  FILE* out = o.jsonl ? stderr : stdout;
  PrintBanner(out, o, host, services);
  host.RunInBackground();
  const auto t0 = Clock::now();
  const bool broken_pipe = ServeUntilStopped(o, host, exporters, services.otlp.get(), out, t0);
  if (services.admin) services.admin->Stop();
  // A worker that left just before the stop (its process exited between two liveness checks)
  // is reclaimed now: its ring drained and unlinked, its termination reported, and the
  // namespace removed when no worker is left. Bounded, since live workers may keep publishing.
  host.DrainAll(kFinalDrain);
  exporters.StopAll();                           // each drains its queue first
  if (services.otlp) services.otlp->Shutdown();  // sends what is left, within its deadline
  PrintFinal(out, o, host, exporters, services.otlp.get(), t0, broken_pipe);
  return 0;
}

CLI::App* AddHostCommand(CLI::App* app, HostCmdOptions* o) {
  CLI::App* cmd = app->add_subcommand(
      "host", "Run a host: print delivered events as JSON lines, or a periodic per-worker summary");
  cmd->add_option("--ns", o->ns, "Namespace (default: $PITLANE_NAMESPACE or \"default\")")
      ->check(NamespaceName());
  auto* jsonl_flag =
      cmd->add_flag("--jsonl", o->jsonl, "Print every delivered event as one JSON line");
  cmd->add_flag("--summary", o->summary, "Print per-worker totals every interval (default)")
      ->excludes(jsonl_flag);
  cmd->add_option("--interval", o->interval_s, "Summary interval (seconds)")
      ->check(PositiveSeconds(3600))
      ->capture_default_str();
  auto* busy = cmd->add_flag("--busy-poll", o->busy_poll, "Never sleep when idle (lowest latency)");
  cmd->add_option("--spin", o->spin_us,
                  "Microseconds without events before the host sleeps (at most 1000000). The "
                  "first emit after it sleeps wakes it with a syscall (tens of µs on a VM): "
                  "above the usual gap between events, it spares the workers that at the cost "
                  "of a spinning host core")
      ->type_name("MICROSECONDS")
      ->capture_default_str()
      ->check(IntegerIn(0, 1'000'000, "microseconds"))
      ->excludes(busy);
  cmd->add_option("--duration", o->duration_s,
                  "Stop after this many seconds (default: until SIGINT/SIGTERM)")
      ->check(PositiveSeconds(31'536'000));
  cmd->add_option("--grpc-listen", o->grpc_listen,
                  "Serve gRPC dial-in for remote workers on HOST:PORT (port 0: any free port)")
      ->type_name("ADDR");
  cmd->add_option("--grpc-dial", o->grpc_dial,
                  "Dial a worker serving StreamTelemetry (repeatable): HOST:PORT or ID=HOST:PORT")
      ->type_name("ENDPOINT");
  auto* token_opt = cmd->add_option(
      "--grpc-token", o->grpc_token,
      "Bearer token required from dial-in workers and sent when dialing (visible in ps: prefer "
      "--grpc-token-file or $PITLANE_GRPC_TOKEN)");
  cmd->add_option("--grpc-token-file", o->grpc_token_file,
                  "Read the bearer token from this file (trailing newline ignored)")
      ->type_name("PATH")
      ->excludes(token_opt);
  cmd->add_option("--catalog", o->catalog_file,
                  "Run with this catalog file instead of the compiled-in one (format: "
                  "schemas/catalog.txt; workers with another catalog emit by name)")
      ->type_name("FILE");
  auto* tls_cert = cmd->add_option("--grpc-tls-cert", o->grpc_tls_cert,
                                   "PEM certificate: serve dial-in over TLS")
                       ->check(CLI::ExistingFile);
  auto* tls_key =
      cmd->add_option("--grpc-tls-key", o->grpc_tls_key, "PEM private key of --grpc-tls-cert")
          ->check(CLI::ExistingFile);
  tls_cert->needs(tls_key);
  tls_key->needs(tls_cert);
  AddExporterFlags(cmd, &o->exporters);
  auto* admin_opt = cmd->add_option("--admin", o->admin,
                                    "Serve the admin service (pitlane ctl) on unix:PATH or "
                                    "HOST:PORT; \"off\" disables it (default: "
                                    "unix:/tmp/pitlane.<ns>.admin.sock)")
                        ->type_name("ADDR");
  cmd->add_flag("--no-admin", o->no_admin, "Serve no admin service")->excludes(admin_opt);
  return cmd;
}

}  // namespace pitlane::cli
