// `pitlane catalog [--catalog FILE] [--json]`: the compiled-in event catalog (or a catalog
// file, as `pitlane host --catalog FILE` would load it), for people or for scripts.
#include <CLI/CLI.hpp>
#include <cinttypes>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "commands.h"
#include "pitlane/catalog.h"

namespace pitlane::cli {
namespace {

// Prints `count` items ("key", "key (unit)") wrapped at ~96 columns, indented by two spaces.
template <typename Get>
void PrintWrapped(size_t count, Get get) {
  std::string line = " ";
  for (size_t i = 0; i < count; ++i) {
    const std::string w(get(i));
    if (line.size() + 1 + w.size() > 96) {
      std::printf("%s\n", line.c_str());
      line = " ";
    }
    line += " " + w;
  }
  if (line.size() > 1) std::printf("%s\n", line.c_str());
}

// One JSON document: root, hash (16 hex digits), limits, events (id, host and canonical name,
// layer, role, wire names), measurement keys with their units, metadata keys.
void PrintJson(const Catalog& catalog) {
  using Json = nlohmann::ordered_json;
  char hash[17];
  std::snprintf(hash, sizeof hash, "%016" PRIx64, catalog.hash());
  Json events = Json::array();
  for (const CatalogEvent& e : catalog.events()) {
    events.push_back({{"id", e.id},
                      {"host_name", e.host_name},
                      {"canonical", e.canonical},
                      {"layer", std::string(LayerName(e.layer))},
                      {"role", std::string(SpanRoleName(e.role))},
                      {"wire_names", e.wire_names}});
  }
  Json measurements = Json::array();
  for (uint16_t id = 1; id <= catalog.measurement_key_count(); ++id) {
    const std::string_view unit = UnitName(catalog.MeasurementUnit(id));
    measurements.push_back({{"key", std::string(catalog.MeasurementKey(id))},
                            {"unit", unit.empty() ? Json(nullptr) : Json(std::string(unit))}});
  }
  Json metadata = Json::array();
  for (uint16_t id = 1; id <= catalog.metadata_key_count(); ++id) {
    metadata.push_back(std::string(catalog.MetadataKey(id)));
  }
  const CatalogLimits& l = catalog.limits();
  const Json doc = {{"root", catalog.root()},
                    {"hash", hash},
                    {"limits",
                     {{"max_measurements", l.max_measurements},
                      {"max_metadata", l.max_metadata},
                      {"max_key_bytes", l.max_key_bytes},
                      {"max_correlation_id_bytes", l.max_correlation_id_bytes},
                      {"max_value_bytes", l.max_value_bytes}}},
                    {"events", std::move(events)},
                    {"measurement_keys", std::move(measurements)},
                    {"metadata_keys", std::move(metadata)}};
  std::printf("%s\n", doc.dump().c_str());
}

}  // namespace

int RunCatalog(const CatalogOptions& o) {
  std::shared_ptr<const Catalog> catalog = Catalog::Default();
  if (!o.file.empty()) {
    Result<std::shared_ptr<const Catalog>> c = Catalog::LoadFile(o.file);
    if (!c.ok()) return Fail("catalog", c.status());
    catalog = std::move(c).value();
  }
  if (o.json) {
    PrintJson(*catalog);
    return 0;
  }
  std::printf("catalog: root \"%.*s\", %zu events, hash %016" PRIx64 "\n",
              static_cast<int>(catalog->root().size()), catalog->root().data(),
              catalog->event_count(), catalog->hash());
  std::printf("\n%-4s %-46s %-15s %-10s %s\n", "id", "host name", "layer", "role",
              "wire names (what a worker sends)");
  for (const CatalogEvent& e : catalog->events()) {
    std::string wires;
    for (const std::string& w : e.wire_names) wires += (wires.empty() ? "" : ", ") + w;
    if (wires.empty()) wires = "- (host only)";
    std::printf("%-4u %-46s %-15s %-10s %s\n", e.id, e.host_name.c_str(),
                std::string(LayerName(e.layer)).c_str(), std::string(SpanRoleName(e.role)).c_str(),
                wires.c_str());
  }
  const CatalogLimits& l = catalog->limits();
  std::printf(
      "\nmeasurement keys (%zu, with the unit the catalog gives them; any other key rejects the "
      "whole event):\n",
      catalog->measurement_key_count());
  PrintWrapped(catalog->measurement_key_count(), [&](size_t i) {
    const auto id = static_cast<uint16_t>(i + 1);
    const std::string_view unit = UnitName(catalog->MeasurementUnit(id));
    std::string key(catalog->MeasurementKey(id));
    return unit.empty() ? key : key + " (" + std::string(unit) + ")";
  });
  std::printf("\nknown metadata keys (%zu; other keys are kept as plain strings):\n",
              catalog->metadata_key_count());
  PrintWrapped(catalog->metadata_key_count(),
               [&](size_t i) { return catalog->MetadataKey(static_cast<uint16_t>(i + 1)); });
  std::printf(
      "\nlimits: %u measurements, %u metadata entries, keys <= %u bytes, correlation id "
      "<= %u bytes, values truncated at %u bytes\n",
      l.max_measurements, l.max_metadata, l.max_key_bytes, l.max_correlation_id_bytes,
      l.max_value_bytes);
  return 0;
}

CLI::App* AddCatalogCommand(CLI::App* app, CatalogOptions* o) {
  CLI::App* cmd =
      app->add_subcommand("catalog", "List the catalog's events and its measurement/metadata keys");
  cmd->add_option("--catalog", o->file, "A catalog file to check and list instead")
      ->type_name("FILE");
  cmd->add_flag("--json", o->json, "Print one JSON document");
  return cmd;
}

}  // namespace pitlane::cli
