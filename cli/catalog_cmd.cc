// `pitlane catalog`: the compiled-in event catalog, as hosts and workers use it.
#include <cinttypes>
#include <cstdio>
#include <string>

#include "commands.h"
#include "pitlane/catalog.h"

namespace pitlane::cli {
namespace {

// Prints `words` wrapped at ~96 columns, indented by two spaces.
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

}  // namespace

int RunCatalog() {
  const auto catalog = Catalog::Default();
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
  std::printf("\nmeasurement keys (%zu; any other key rejects the whole event):\n",
              catalog->measurement_key_count());
  PrintWrapped(catalog->measurement_key_count(),
               [&](size_t i) { return catalog->MeasurementKey(static_cast<uint16_t>(i + 1)); });
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

}  // namespace pitlane::cli
