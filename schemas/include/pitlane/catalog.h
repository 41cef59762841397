// The event catalog: the single source of truth for which events exist, what they are called
// on the wire and on the host, and which measurement and metadata keys are known.
//
// The default catalog (schemas/catalog.txt, Snakepit's) is compiled into the build; a host may
// load a user catalog file at start. Workers resolve names to compact ids once (handles) and emit
// by id; the gRPC path carries names and the host resolves them with the same catalog.
//
// Thread safety: a Catalog is immutable after construction; any thread may read it.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "pitlane/status.h"
#include "pitlane/units.h"

namespace pitlane {

enum class Layer : uint8_t { kInfrastructure = 1, kWorker = 2, kTransport = 3 };
enum class SpanRole : uint8_t { kNone = 0, kStart, kStop, kException };

std::string_view LayerName(Layer layer);
std::string_view SpanRoleName(SpanRole role);

// Limits of doc/catalog.md: over any of the first four the event is rejected (reason named); a
// metadata or string measurement value over max_value_bytes is truncated and counted.
struct CatalogLimits {
  uint32_t max_measurements = 32;
  uint32_t max_metadata = 32;
  uint32_t max_key_bytes = 64;
  uint32_t max_correlation_id_bytes = 128;
  uint32_t max_value_bytes = 1024;
};

struct CatalogEvent {
  uint16_t id = 0;                      // 1-based, catalog order
  std::string canonical;                // "python.tool.execution.start"
  std::string host_name;                // "snakepit.python.tool.execution.start"
  std::vector<std::string> wire_names;  // "tool.execution.start"; empty: host-only event
  Layer layer = Layer::kWorker;
  SpanRole role = SpanRole::kNone;
  // Worker-layer events only: a worker may send them (by wire or canonical name).
  bool admitted_from_workers() const { return layer == Layer::kWorker; }
};

class Catalog {
 public:
  // Text format (schemas/catalog.txt documents it). `origin` names the source in errors.
  static Result<std::shared_ptr<const Catalog>> Parse(std::string_view text,
                                                      std::string_view origin);
  static Result<std::shared_ptr<const Catalog>> LoadFile(const std::string& path);
  // The compiled-in default catalog. Never fails (the build checks the file).
  static std::shared_ptr<const Catalog> Default();

  std::string_view root() const { return root_; }
  // FNV-1a 64 over a normalised form of the catalog: equal catalogs have equal hashes.
  uint64_t hash() const { return hash_; }
  const CatalogLimits& limits() const { return limits_; }

  size_t event_count() const { return events_.size(); }
  // REQUIRES: 1 <= id <= event_count()
  const CatalogEvent& event(uint16_t id) const { return events_[id - 1]; }
  const std::vector<CatalogEvent>& events() const { return events_; }

  // Resolves a name a worker sent (wire name or canonical name, exact, case-sensitive) to a
  // worker-layer event id. 0 = unknown: never admitted.
  uint16_t FindWorkerEvent(std::string_view name) const;
  // Resolves a host name ("snakepit.pool.worker.terminated") of any layer. 0 = unknown.
  uint16_t FindHostEvent(std::string_view host_name) const;
  // Resolves canonical name of any layer ("pool.worker.terminated"). 0 = unknown.
  uint16_t FindCanonical(std::string_view canonical) const;

  // Measurement keys: 1-based ids; 0 = not in the allowlist.
  size_t measurement_key_count() const { return measurement_keys_.size(); }
  uint16_t MeasurementKeyId(std::string_view key) const;
  // REQUIRES: 1 <= id <= measurement_key_count()
  std::string_view MeasurementKey(uint16_t id) const { return measurement_keys_[id - 1]; }
  // The unit the catalog declares for a measurement key (units.h); kNone when it declares none.
  // Units describe values for exporters and do not change ids, so hash() ignores them.
  // REQUIRES: 1 <= id <= measurement_key_count()
  Unit MeasurementUnit(uint16_t id) const { return measurement_units_[id - 1]; }
  // The same by key; kNone for a key the catalog does not have.
  Unit MeasurementUnit(std::string_view key) const {
    const uint16_t id = MeasurementKeyId(key);
    return id == 0 ? Unit::kNone : MeasurementUnit(id);
  }

  // Known metadata keys: 1-based ids; 0 = unknown (kept as a plain string by the host).
  size_t metadata_key_count() const { return metadata_keys_.size(); }
  uint16_t MetadataKeyId(std::string_view key) const;
  std::string_view MetadataKey(uint16_t id) const { return metadata_keys_[id - 1]; }

  // Does glob `pattern` match event `id` (canonical name or any wire name)? See glob.h.
  bool PatternMatchesEvent(std::string_view pattern, uint16_t id) const;

 private:
  class Parser;  // catalog.cc: the text format, line by line

  // Open-addressing string -> id index (built once; lookups allocate nothing).
  class Index {
   public:
    void Build(const std::vector<std::pair<std::string_view, uint16_t>>& entries);
    uint16_t Find(std::string_view key) const;

   private:
    struct Slot {
      std::string_view key;
      uint16_t id = 0;
    };
    std::vector<Slot> slots_;
    uint64_t mask_ = 0;
    // Owns the bytes the slots' keys view, shared so a copied Catalog's views stay valid.
    std::shared_ptr<const std::string> arena_;
  };

  std::string root_;
  uint64_t hash_ = 0;
  CatalogLimits limits_;
  std::vector<CatalogEvent> events_;
  std::vector<std::string> measurement_keys_;
  std::vector<Unit> measurement_units_;  // parallel to measurement_keys_
  std::vector<std::string> metadata_keys_;
  Index worker_index_, host_index_, canonical_index_, measurement_index_, metadata_index_;
};

}  // namespace pitlane
