// `pitlane cleanup`: removes the shared-memory segments dead processes left behind.
//
// The staleness rule is the library's (shm_inspect.h), the one the host applies at start. A ring
// a live host has registered is that host's to reclaim. An admin socket
// (/tmp/pitlane.<ns>.admin.sock, DefaultAdminAddress) no server accepts connections on is
// removed too: its host died without removing it. Every decision is re-checked right before the
// unlink. --dry-run only says what would go.
#include <dirent.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "commands.h"
#include "pitlane/admin.h"
#include "pitlane/shm.h"
#include "pitlane/shm_inspect.h"

namespace pitlane::cli {
namespace {

struct Verdict : shm::Staleness {
  std::vector<std::string> hosted_rings;  // registries with a live host: the rings it owns
};

Verdict Judge(const shm::SegmentEntry& e) {
  Verdict v;
  if (!e.registry) {
    static_cast<shm::Staleness&>(v) = shm::RingStaleness(e);
    return v;
  }
  const shm::InspectedRegistry r = shm::InspectRegistry(e.ns, /*read_rings=*/false);
  static_cast<shm::Staleness&>(v) = shm::RegistryStaleness(r);
  if (r.error.empty() && r.host_alive) {
    for (const shm::InspectedRing& ring : r.rings) v.hosted_rings.push_back(ring.segment);
  }
  return v;
}

// Removes the default admin sockets (of `only_ns`, or of every namespace when it is empty)
// that no server accepts connections on; prints each. Returns how many could not be removed.
int CleanupAdminSockets(const std::string& only_ns, bool dry_run) {
  // The file names DefaultAdminAddress gives, split around the namespace: "unix:" dir prefix
  // <ns> suffix ("/tmp/", "pitlane.", ".admin.sock").
  const std::string pattern = DefaultAdminAddress("\x01").substr(std::strlen("unix:"));
  const size_t at = pattern.find('\x01');
  const std::string dir = pattern.substr(0, pattern.rfind('/', at) + 1);
  const std::string prefix = pattern.substr(dir.size(), at - dir.size());
  const std::string suffix = pattern.substr(at + 1);
  std::vector<std::string> paths;
  if (!only_ns.empty()) {
    paths.push_back(dir + prefix + only_ns + suffix);
  } else if (DIR* d = ::opendir(dir.c_str())) {
    while (const dirent* de = ::readdir(d)) {
      const std::string n = de->d_name;
      if (n.size() > prefix.size() + suffix.size() && n.compare(0, prefix.size(), prefix) == 0 &&
          n.compare(n.size() - suffix.size(), suffix.size(), suffix) == 0) {
        paths.push_back(dir + n);
      }
    }
    ::closedir(d);  // pairs with opendir
  }
  int failed = 0;
  for (const std::string& path : paths) {
    Result<bool> stale = IsStaleAdminSocket(path);
    if (!stale.ok()) {
      std::printf("kept %s: %s\n", path.c_str(), stale.status().message().c_str());
      continue;
    }
    if (!*stale) {
      struct stat st {};
      if (::lstat(path.c_str(), &st) == 0) {
        std::printf("kept %s: a live host serves it\n", path.c_str());
      }
      continue;
    }
    if (dry_run) {
      std::printf("would remove %s: admin socket nobody serves (its host is gone)\n",
                  path.c_str());
      continue;
    }
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
      ++failed;
      Error("cleanup", "could not remove " + path + ": " + std::strerror(errno));
      continue;
    }
    std::printf("removed %s: admin socket nobody serves (its host is gone)\n", path.c_str());
  }
  return failed;
}

}  // namespace

int RunCleanup(const CleanupOptions& o) {
  std::string only_ns;
  if (!o.all) {
    auto ns_or = ResolveNamespace(o.ns);
    if (!ns_or.ok()) {
      Error("cleanup", ns_or.status().message());
      return 2;
    }
    only_ns = ns_or.value();
  }
  const std::vector<shm::SegmentEntry> entries = shm::ListSegments(only_ns);
  const std::string scope_text = o.all ? "all namespaces" : "namespace \"" + only_ns + "\"";
  const int socket_failures = CleanupAdminSockets(only_ns, o.dry_run);
  if (entries.empty()) {
    std::printf("no pitlane segments in /dev/shm for %s\n", scope_text.c_str());
    return socket_failures == 0 ? 0 : 1;
  }

  // Registries first: a ring a live host has registered is that host's to reclaim.
  std::vector<std::string> hosted_rings;
  std::vector<std::pair<const shm::SegmentEntry*, Verdict>> verdicts;
  for (const shm::SegmentEntry& e : entries) {
    if (!e.registry) continue;
    Verdict v = Judge(e);
    hosted_rings.insert(hosted_rings.end(), v.hosted_rings.begin(), v.hosted_rings.end());
    verdicts.emplace_back(&e, std::move(v));
  }
  for (const shm::SegmentEntry& e : entries) {
    if (e.registry) continue;
    bool hosted = false;
    for (const std::string& n : hosted_rings) hosted |= n == e.name;
    Verdict v = Judge(e);
    if (v.stale && hosted) {
      v.stale = false;
      v.why += "; registered with a live host, which drains and unlinks it";
    }
    verdicts.emplace_back(&e, std::move(v));
  }

  int removed = 0, kept = 0, failed = 0;
  uint64_t removed_bytes = 0;
  for (auto& [e, v] : verdicts) {
    if (!v.stale) {
      ++kept;
      std::printf("kept %s: %s\n", e->name.c_str(), v.why.c_str());
      continue;
    }
    if (o.dry_run) {
      ++removed;
      removed_bytes += e->bytes;
      std::printf("would remove %s: %s\n", e->name.c_str(), v.why.c_str());
      continue;
    }
    // Re-check right before the unlink: a host or worker may have appeared meanwhile.
    const Verdict again = Judge(*e);
    if (!again.stale) {
      ++kept;
      std::printf("kept %s: %s (changed while cleaning)\n", e->name.c_str(), again.why.c_str());
      continue;
    }
    if (!shm::Segment::Unlink(e->name)) {
      if (errno == ENOENT) {
        std::printf("gone %s: removed by someone else meanwhile\n", e->name.c_str());
        continue;
      }
      ++failed;
      Error("cleanup", "could not remove " + e->name + ": " + std::strerror(errno));
      continue;
    }
    ++removed;
    removed_bytes += e->bytes;
    std::printf("removed %s: %s\n", e->name.c_str(), v.why.c_str());
  }
  std::printf("%s %d stale segment%s (%" PRIu64 " KiB), kept %d, in %s\n",
              o.dry_run ? "would remove" : "removed", removed, removed == 1 ? "" : "s",
              removed_bytes >> 10, kept, scope_text.c_str());
  return failed + socket_failures == 0 ? 0 : 1;
}

}  // namespace pitlane::cli
