// Reading a namespace from outside its host: the segments in /dev/shm, what a registry and its
// rings say, and the one rule for when a segment is stale. The host (stale cleanup at start),
// `pitlane stat` and `pitlane cleanup` all use these, so they agree.
//
// Nothing read is trusted: mappings are opened read-only, every access runs under a SIGBUS
// guard (shm::Guarded), strings are bounded copies and ring headers are validated before any
// counter is believed.
//
// Staleness (doc/architecture.md, "Stale segments"):
//  - a ring segment is stale when its creator is dead: the pid and start time in its header
//    (robust against pid reuse); when the header is unusable, when the pid in its name is not
//    running at all. A ring a live host has registered is that host's to reclaim, never stale.
//  - a file under a segment name that pitlane would not adopt (another owner, a mode other than
//    0600, not a regular file: segment_file.h) is never stale: whoever made it removes it.
//  - a registry's host runs while it holds the registry's lock (registry.h, NamespaceHostPid).
//  - a registry is stale when its host is dead (or none ever attached) and no worker slot
//    belongs to a live process. A registry that is not readable as one (bad magic, too small,
//    another layout version) is never stale: it may be being created, or belong to another
//    build.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "pitlane/accounting.h"

namespace pitlane::shm {

// A pitlane segment in /dev/shm, as its name describes it.
struct SegmentEntry {
  std::string name;  // "/pitlane.<ns>.registry" or "/pitlane.<ns>.ring.<pid>.<slot>"
  std::string ns;
  bool registry = false;
  pid_t pid = 0;  // ring: from the name
  uint64_t bytes = 0;
};
// Parses a /dev/shm file name ("pitlane.<ns>.registry", "pitlane.<ns>.ring.<pid>.<slot>").
bool ParseSegmentName(const std::string& file, SegmentEntry* out);
// Every pitlane segment of `ns` ("" = of every namespace).
std::vector<SegmentEntry> ListSegments(const std::string& ns);

// One ring named by a registry, read from its segment.
struct InspectedRing : Tally {
  std::string segment;
  uint32_t slot = 0;
  bool registry_retired = false;  // its ring slot says RETIRED
  std::string error;              // could not open it, or its header is invalid
  std::string worker_id;
  uint32_t pid = 0;
  uint64_t start_time = 0;
  bool alive = false;  // its writer's process runs
  uint64_t capacity = 0, producer = 0, consumer = 0;
  bool writer_retired = false;
  bool quarantined = false;
  uint64_t quarantine_offset = 0;

  uint64_t used() const { return producer - consumer < capacity ? producer - consumer : capacity; }
};

// One claimed worker slot.
struct InspectedWorker {
  uint32_t slot = 0;
  uint32_t state = 0;  // shm::SlotState
  std::string id;
  uint32_t pid = 0;
  uint64_t start_time = 0;
  bool alive = false;
  Tally unringed;  // events of its threads that had no ring
};

struct InspectedRegistry {
  std::string error;  // non-empty: the registry could not be read as one (and why)
  uint32_t host_pid = 0;
  uint64_t host_start_time = 0;
  bool host_alive = false;
  std::vector<InspectedWorker> workers;  // every slot not FREE
  std::vector<InspectedRing> rings;      // every READY or RETIRED ring slot
};
// Reads the registry of `ns` and, with `read_rings`, every ring segment it names.
InspectedRegistry InspectRegistry(const std::string& ns, bool read_rings);

struct Staleness {
  bool stale = false;
  std::string why;  // a sentence fragment: "worker \"w\" pid 12 is dead"
};
Staleness RegistryStaleness(const InspectedRegistry& r);
Staleness RingStaleness(const SegmentEntry& ring);

// What cleaning one stale-candidate file did, or with a dry run would do.
enum class CleanupOutcome {
  kKept,         // not stale (`why` says whose it is)
  kWouldRemove,  // dry run: stale
  kRemoved,
  kChanged,  // stale when judged, not any more right before the unlink: kept
  kGone,     // stale, but someone else removed it meanwhile
  kFailed,   // stale, and the unlink failed (`why` is the system's reason)
};
struct CleanupStep {
  std::string name;  // the segment ("/pitlane.<ns>...") or file path
  uint64_t bytes = 0;
  CleanupOutcome outcome = CleanupOutcome::kKept;
  std::string why;
};
// Judges every segment of `ns` ("" = of every namespace) by the rule above — registries first,
// so a ring a live host has registered is kept — and, unless `dry_run`, unlinks each stale one
// after judging it again right before (a host or worker may have appeared meanwhile). One step
// per segment, registries first.
std::vector<CleanupStep> CleanStaleSegments(const std::string& ns, bool dry_run);

}  // namespace pitlane::shm
