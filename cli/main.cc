// pitlane — command-line entry point: each command registers its flags (CLI11), the command
// line picks one, and its Run* function gives the exit code. What happened to stdout is judged
// here, once for every command (FinishStdout): a reader that left is a normal end, output that
// could not be written is a failure.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <optional>
#include <sstream>
#include <string>

#include "commands.h"

namespace {

// "pitlane host": the program and the command the command line chose, as errors name them.
std::string Program(const CLI::App& app) {
  std::string where = "pitlane";
  for (const CLI::App* sub : app.get_subcommands()) where = "pitlane " + sub->get_name();
  return where;
}

// Parses the command line into the registered option structs. Returns an exit code when there
// is nothing to run (help, version, or a usage error, printed as "pitlane <command>: ...").
std::optional<int> Parse(CLI::App& app, int argc, char** argv) {
  if (argc > 1 && argv[1][0] != '-') {
    bool known = false;
    for (const CLI::App* sub : app.get_subcommands({})) known |= sub->get_name() == argv[1];
    if (!known) {
      std::fprintf(stderr, "pitlane: unknown command \"%s\" (see pitlane --help)\n", argv[1]);
      return 2;
    }
  }
  // Help and version go through stdio's stdout (the one WatchStdout watches), not std::cout.
  const auto print = [&app](const CLI::Error& e) {
    std::ostringstream out;
    const int code = app.exit(e, out);
    std::fputs(out.str().c_str(), stdout);
    return code;
  };
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return print(e);
  } catch (const CLI::CallForAllHelp& e) {
    return print(e);
  } catch (const CLI::CallForVersion& e) {
    return print(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "%s: %s\n", Program(app).c_str(), e.what());
    return 2;
  }
  return std::nullopt;
}

// Runs the command the command line chose; returns its exit code and sets *program to the name
// its errors go by ("pitlane host").
int Run(int argc, char** argv, std::string* program) {
  CLI::App app{"pitlane: shared-memory telemetry transport (host, workers, tools)", "pitlane"};
  app.require_subcommand(0, 1);  // 0 only with --version / --help (checked below)
  app.set_help_all_flag("--help-all", "Show help for every subcommand");
  app.set_version_flag("--version", "pitlane " PITLANE_VERSION, "Print the version and exit");

  using namespace pitlane::cli;
  DemoOptions demo;
  DemoWorkerOptions demo_worker;
  HostCmdOptions host;
  StatOptions stat;
  CleanupOptions cleanup;
  EmitOptions emit;
  CtlOptions ctl;
  CatalogOptions catalog;
  const CLI::App* demo_cmd = AddDemoCommand(&app, &demo);
  const CLI::App* demo_worker_cmd = AddDemoWorkerCommand(&app, &demo_worker);
  const CLI::App* host_cmd = AddHostCommand(&app, &host);
  const CLI::App* stat_cmd = AddStatCommand(&app, &stat);
  const CLI::App* cleanup_cmd = AddCleanupCommand(&app, &cleanup);
  const CLI::App* emit_cmd = AddEmitCommand(&app, &emit);
  const CLI::App* ctl_cmd = AddCtlCommand(&app, &ctl);
  const CLI::App* catalog_cmd = AddCatalogCommand(&app, &catalog);

  const std::optional<int> parsed = Parse(app, argc, argv);
  *program = Program(app);
  if (parsed) return *parsed;
  if (*demo_cmd) return RunDemo(demo);
  if (*demo_worker_cmd) return RunDemoWorker(demo_worker);
  if (*host_cmd) return RunHost(host);
  if (*stat_cmd) return RunStat(stat);
  if (*cleanup_cmd) return RunCleanup(cleanup);
  if (*emit_cmd) return RunEmit(emit);
  if (*ctl_cmd) return RunCtl(ctl);
  if (*catalog_cmd) return RunCatalog(catalog);
  std::fprintf(stderr, "pitlane: a command is required (see pitlane --help)\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  pitlane::cli::OccupyClosedStdStreams();  // before anything opens a descriptor
  pitlane::cli::WatchStdout();             // before anything prints: see FinishStdout
  std::string program = "pitlane";
  const int code = Run(argc, argv, &program);
  return pitlane::cli::FinishStdout(program, code);
}
