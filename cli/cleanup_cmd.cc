// `pitlane cleanup`: removes the shared-memory segments dead processes left behind, and the
// admin sockets of hosts that died.
//
// The rules are the library's: shm::CleanStaleSegments (shm_inspect.h, the staleness rule the
// host applies at start) and CleanStaleAdminSockets (admin.h). This command prints what each
// step did and why; --dry-run only says what would go.
#include <CLI/CLI.hpp>
#include <cinttypes>
#include <cstdio>
#include <string>
#include <vector>

#include "commands.h"
#include "pitlane/admin.h"
#include "pitlane/shm_inspect.h"

namespace pitlane::cli {
namespace {

// Tallies of the steps a summary line reports.
struct CleanupCounts {
  int removed = 0, kept = 0, failed = 0;
  uint64_t removed_bytes = 0;
};

// Prints one line per step ("removed NAME: why", ...); a failed unlink goes to stderr.
CleanupCounts PrintSteps(const std::vector<shm::CleanupStep>& steps) {
  CleanupCounts n;
  for (const shm::CleanupStep& s : steps) {
    const char* name = s.name.c_str();
    switch (s.outcome) {
      case shm::CleanupOutcome::kKept:
        ++n.kept;
        std::printf("kept %s: %s\n", name, s.why.c_str());
        break;
      case shm::CleanupOutcome::kChanged:
        ++n.kept;
        std::printf("kept %s: %s (changed while cleaning)\n", name, s.why.c_str());
        break;
      case shm::CleanupOutcome::kWouldRemove:
      case shm::CleanupOutcome::kRemoved:
        ++n.removed;
        n.removed_bytes += s.bytes;
        std::printf("%s %s: %s\n",
                    s.outcome == shm::CleanupOutcome::kRemoved ? "removed" : "would remove", name,
                    s.why.c_str());
        break;
      case shm::CleanupOutcome::kGone:
        std::printf("gone %s: removed by someone else meanwhile\n", name);
        break;
      case shm::CleanupOutcome::kFailed:
        ++n.failed;
        Error("cleanup", "could not remove " + s.name + ": " + s.why);
        break;
    }
  }
  return n;
}

}  // namespace

int RunCleanup(const CleanupOptions& o) {
  std::string only_ns;
  if (!o.all) {
    auto ns_or = ResolveNamespace(o.ns);
    if (!ns_or.ok()) return Fail("cleanup", ns_or.status());
    only_ns = ns_or.value();
  }
  const std::string scope_text = o.all ? "all namespaces" : "namespace \"" + only_ns + "\"";
  const CleanupCounts sockets = PrintSteps(CleanStaleAdminSockets(only_ns, o.dry_run));
  const std::vector<shm::CleanupStep> steps = shm::CleanStaleSegments(only_ns, o.dry_run);
  if (steps.empty()) {
    std::printf("no pitlane segments in /dev/shm for %s\n", scope_text.c_str());
    return sockets.failed == 0 ? 0 : 1;
  }
  // The summary counts what the lines above it removed and kept: segments and admin sockets.
  const CleanupCounts n = PrintSteps(steps);
  const std::string removed_sockets = sockets.removed == 0
                                          ? ""
                                          : " and " + std::to_string(sockets.removed) +
                                                " admin socket" + (sockets.removed == 1 ? "" : "s");
  std::printf("%s %d stale segment%s (%" PRIu64 " KiB)%s, kept %d, in %s\n",
              o.dry_run ? "would remove" : "removed", n.removed, n.removed == 1 ? "" : "s",
              n.removed_bytes >> 10, removed_sockets.c_str(), n.kept + sockets.kept,
              scope_text.c_str());
  return n.failed + sockets.failed == 0 ? 0 : 1;
}

CLI::App* AddCleanupCommand(CLI::App* app, CleanupOptions* o) {
  CLI::App* cmd = app->add_subcommand(
      "cleanup", "Remove stale shared-memory segments of dead processes and say why");
  auto* cleanup_ns =
      cmd->add_option("--ns", o->ns, "Namespace (default: $PITLANE_NAMESPACE or \"default\")")
          ->check(NamespaceName());
  cmd->add_flag("--all", o->all, "Every pitlane namespace in /dev/shm")->excludes(cleanup_ns);
  cmd->add_flag("--dry-run", o->dry_run, "Only say what would be removed");
  return cmd;
}

}  // namespace pitlane::cli
