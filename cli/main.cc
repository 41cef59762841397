// pitlane — command-line entry point: parses the subcommands (CLI11) and runs one of them.
#include <CLI/CLI.hpp>
#include <cmath>
#include <cstdio>
#include <string>

#include "commands.h"
#include "host_exporters.h"
#include "pitlane/correlation.h"

namespace {

// A positive, finite number of seconds (CLI11's range check accepts NaN-free input only after
// conversion, so check the converted value here).
CLI::Validator PositiveSeconds(double max) {
  return CLI::Validator(
      [max](std::string& in) -> std::string {
        double v = 0;
        size_t used = 0;
        try {
          v = std::stod(in, &used);
        } catch (...) {
          return "\"" + in + "\" is not a number of seconds";
        }
        if (used != in.size() || !std::isfinite(v) || v <= 0 || v > max) {
          return "\"" + in + "\" is not a number of seconds in (0, " +
                 std::to_string(static_cast<long long>(max)) + "]";
        }
        return {};
      },
      "SECONDS", "PositiveSeconds");
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"pitlane: shared-memory telemetry transport (host, workers, tools)", "pitlane"};
  app.require_subcommand(0, 1);  // 0 only with --version / --help (checked below)
  app.set_help_all_flag("--help-all", "Show help for every subcommand");
  app.set_version_flag("--version", "pitlane " PITLANE_VERSION, "Print the version and exit");

  using namespace pitlane::cli;

  DemoOptions demo;
  auto* demo_cmd = app.add_subcommand(
      "demo", "Run a host and N worker processes emitting a realistic mix; live table + summary");
  demo_cmd->add_option("--workers", demo.workers, "Worker processes")
      ->check(CLI::Range(1, 64))
      ->capture_default_str();
  demo_cmd->add_option("--duration", demo.duration_s, "How long the workers emit (seconds)")
      ->check(PositiveSeconds(86400))
      ->capture_default_str();
  demo_cmd->add_option("--rate", demo.rate, "Events per second per worker")
      ->check(CLI::Range(int64_t{1}, int64_t{10'000'000}))
      ->capture_default_str();
  demo_cmd->add_option("--remote", demo.remote,
                       "Extra workers that stream to the host over loopback gRPC")
      ->check(CLI::Range(0, 16))
      ->capture_default_str();
  demo_cmd->add_option("--ns", demo.ns, "Namespace (default: $PITLANE_NAMESPACE or \"default\")")
      ->check(NamespaceName());
  demo_cmd
      ->add_option("--metrics", demo.metrics,
                   "Serve Prometheus /metrics on ADDR with the event metrics the shipped Grafana "
                   "dashboard uses (e.g. 127.0.0.1:9464)")
      ->type_name("ADDR");

  DemoWorkerOptions dw;
  auto* dw_cmd = app.add_subcommand("demo-worker", "A worker process of `pitlane demo`");
  dw_cmd->group("");  // hidden
  dw_cmd->add_option("--ns", dw.ns)->required();
  dw_cmd->add_option("--id", dw.id)->required();
  dw_cmd->add_option("--grpc-target", dw.grpc_target);
  dw_cmd->add_option("--duration", dw.duration_s)->check(PositiveSeconds(86400));
  dw_cmd->add_option("--rate", dw.rate)->check(CLI::Range(int64_t{1}, int64_t{10'000'000}));

  HostCmdOptions host;
  bool summary_flag = false;
  auto* host_cmd = app.add_subcommand(
      "host", "Run a host: print delivered events as JSON lines, or a periodic per-worker summary");
  host_cmd->add_option("--ns", host.ns, "Namespace (default: $PITLANE_NAMESPACE or \"default\")")
      ->check(NamespaceName());
  auto* jsonl_flag =
      host_cmd->add_flag("--jsonl", host.jsonl, "Print every delivered event as one JSON line");
  host_cmd->add_flag("--summary", summary_flag, "Print per-worker totals every interval (default)")
      ->excludes(jsonl_flag);
  host_cmd->add_option("--interval", host.interval_s, "Summary interval (seconds)")
      ->check(PositiveSeconds(3600))
      ->capture_default_str();
  host_cmd->add_flag("--busy-poll", host.busy_poll, "Never sleep when idle (lowest latency)");
  host_cmd
      ->add_option("--duration", host.duration_s,
                   "Stop after this many seconds (default: until SIGINT/SIGTERM)")
      ->check(PositiveSeconds(31'536'000));
  host_cmd
      ->add_option("--grpc-listen", host.grpc_listen,
                   "Serve gRPC dial-in for remote workers on HOST:PORT (port 0: any free port)")
      ->type_name("ADDR");
  host_cmd
      ->add_option("--grpc-dial", host.grpc_dial,
                   "Dial a worker serving StreamTelemetry (repeatable): HOST:PORT or ID=HOST:PORT")
      ->type_name("ENDPOINT");
  auto* token_opt = host_cmd->add_option(
      "--grpc-token", host.grpc_token,
      "Bearer token required from dial-in workers and sent when dialing (visible in ps: prefer "
      "--grpc-token-file or $PITLANE_GRPC_TOKEN)");
  host_cmd
      ->add_option("--grpc-token-file", host.grpc_token_file,
                   "Read the bearer token from this file (trailing newline ignored)")
      ->type_name("PATH")
      ->excludes(token_opt);
  host_cmd
      ->add_option("--catalog", host.catalog_file,
                   "Run with this catalog file instead of the compiled-in one (format: "
                   "schemas/catalog.txt; workers with another catalog emit by name)")
      ->type_name("FILE");
  auto* tls_cert = host_cmd->add_option("--grpc-tls-cert", host.grpc_tls_cert,
                                        "PEM certificate: serve dial-in over TLS")
                       ->check(CLI::ExistingFile);
  auto* tls_key = host_cmd->add_option("--grpc-tls-key", host.grpc_tls_key,
                                       "PEM private key of --grpc-tls-cert")
                      ->check(CLI::ExistingFile);
  tls_cert->needs(tls_key);
  tls_key->needs(tls_cert);
  HostExporterOptions host_exporters;
  AddHostExporterFlags(host_cmd, &host_exporters);
  auto* admin_opt =
      host_cmd
          ->add_option("--admin", host.admin,
                       "Serve the admin service (pitlane ctl) on unix:PATH or HOST:PORT; \"off\" "
                       "disables it (default: unix:/tmp/pitlane.<ns>.admin.sock)")
          ->type_name("ADDR");
  host_cmd->add_flag("--no-admin", host.no_admin, "Serve no admin service")->excludes(admin_opt);

  StatOptions stat;
  auto* stat_cmd = app.add_subcommand(
      "stat",
      "Show the rings of a namespace read-only from outside the host (works when it is down)");
  stat_cmd->add_option("--ns", stat.ns, "Namespace (default: $PITLANE_NAMESPACE or \"default\")")
      ->check(NamespaceName());
  stat_cmd->add_flag("--json", stat.json,
                     "Print one JSON document (with --watch: one per refresh, one per line)");
  auto* watch_flag =
      stat_cmd->add_flag("--watch", stat.watch,
                         "Refresh until SIGINT, with per-ring rates since the previous refresh");
  stat_cmd->add_option("--interval", stat.interval_s, "Refresh interval of --watch (seconds)")
      ->check(PositiveSeconds(3600))
      ->capture_default_str()
      ->needs(watch_flag);

  CleanupOptions cleanup;
  auto* cleanup_cmd = app.add_subcommand(
      "cleanup", "Remove stale shared-memory segments of dead processes and say why");
  auto* cleanup_ns = cleanup_cmd
                         ->add_option("--ns", cleanup.ns,
                                      "Namespace (default: $PITLANE_NAMESPACE or \"default\")")
                         ->check(NamespaceName());
  cleanup_cmd->add_flag("--all", cleanup.all, "Every pitlane namespace in /dev/shm")
      ->excludes(cleanup_ns);
  cleanup_cmd->add_flag("--dry-run", cleanup.dry_run, "Only say what would be removed");

  EmitOptions emit;
  auto* emit_cmd = app.add_subcommand("emit", "Emit one event from the shell");
  emit_cmd->add_option("--ns", emit.ns, "Namespace (default: $PITLANE_NAMESPACE or \"default\")")
      ->check(NamespaceName());
  emit_cmd->add_option("--id", emit.id,
                       "Worker id (default: $PITLANE_WORKER_ID or <hostname>-<pid>)");
  emit_cmd->add_option("EVENT", emit.event, "Event wire name, e.g. python.call.start")->required();
  emit_cmd
      ->add_option("-m,--measurement", emit.measurements,
                   "Measurement key=value (int64, else double, else string); repeatable")
      ->allow_extra_args(false);
  emit_cmd->add_option("-d,--metadata", emit.metadata, "Metadata key=value; repeatable")
      ->allow_extra_args(false);
  emit_cmd->add_option("--correlation-id", emit.correlation_id, "Correlation id (<= 128 bytes)")
      ->check(CLI::Validator(
          [](std::string& in) -> std::string {
            if (in.size() > pitlane::kMaxCorrelationIdBytes) {
              return "correlation id of " + std::to_string(in.size()) +
                     " bytes is longer than 128 bytes";
            }
            return {};
          },
          "ID", "CorrelationId"));

  CtlOptions ctl;
  CLI::App* ctl_cmd = AddCtlCommand(&app, &ctl);

  CatalogOptions catalog;
  auto* catalog_cmd = app.add_subcommand(
      "catalog", "List the catalog's events and its measurement/metadata keys");
  catalog_cmd->add_option("--catalog", catalog.file, "A catalog file to check and list instead")
      ->type_name("FILE");
  catalog_cmd->add_flag("--json", catalog.json, "Print one JSON document");

  if (argc > 1 && argv[1][0] != '-') {
    bool known = false;
    for (const CLI::App* sub : app.get_subcommands({})) known |= sub->get_name() == argv[1];
    if (!known) {
      std::fprintf(stderr, "pitlane: unknown command \"%s\" (see pitlane --help)\n", argv[1]);
      return 2;
    }
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::string where = "pitlane";
    for (const CLI::App* sub : app.get_subcommands()) where = "pitlane " + sub->get_name();
    std::fprintf(stderr, "%s: %s\n", where.c_str(), e.what());
    return 2;
  }

  if (*demo_cmd) return RunDemo(demo);
  if (*dw_cmd) return RunDemoWorker(dw);
  if (*host_cmd) return RunHost(host, host_exporters);
  if (*stat_cmd) return RunStat(stat);
  if (*cleanup_cmd) return RunCleanup(cleanup);
  if (*emit_cmd) return RunEmit(emit);
  if (*ctl_cmd) return RunCtl(ctl);
  if (*catalog_cmd) return RunCatalog(catalog);
  std::fprintf(stderr, "pitlane: a command is required (see pitlane --help)\n");
  return 2;
}
