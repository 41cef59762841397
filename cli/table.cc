// The per-worker tables of `pitlane host` and `pitlane demo`: fixed-width columns whose header
// and rows are laid out by one definition, and the conservation law's counts in one order; and
// the one-line form of an exporter's report (the host's status line, `pitlane stat`).
#include <initializer_list>
#include <string>
#include <vector>

#include "commands.h"
#include "pitlane/shm_layout.h"

namespace pitlane::cli {

TextTable::TextTable(std::initializer_list<std::vector<Column>> parts) {
  for (const std::vector<Column>& part : parts) {
    columns_.insert(columns_.end(), part.begin(), part.end());
  }
}

std::string TextTable::Header() const {
  std::vector<std::string> headers;
  for (const Column& c : columns_) headers.emplace_back(c.header);
  return Row({headers});
}

std::string TextTable::Row(std::initializer_list<std::vector<std::string>> parts) const {
  std::string out;
  size_t i = 0;
  for (const std::vector<std::string>& part : parts) {
    for (const std::string& cell : part) {
      // A row with more cells than columns is a programming error; print them unpadded.
      const Column c = i < columns_.size() ? columns_[i] : Column{"", 0, false, 1};
      ++i;
      out.append(static_cast<size_t>(c.gap), ' ');
      const size_t pad = cell.size() < static_cast<size_t>(c.width)
                             ? static_cast<size_t>(c.width) - cell.size()
                             : 0;
      if (!c.left) out.append(pad, ' ');
      out += cell;
      if (c.left) out.append(pad, ' ');
    }
  }
  return out;
}

std::vector<Column> LawColumns() {
  return {{"emitted", 10},   {"suppressed", 10}, {"dropped", 9},
          {"published", 10}, {"delivered", 10},  {"rejected", 9}};
}

std::vector<std::string> LawCells(const Tally& t) {
  return {std::to_string(t.emitted),   std::to_string(t.suppressed()),
          std::to_string(t.dropped()), std::to_string(t.published),
          std::to_string(t.delivered), std::to_string(t.rejected_total())};
}

std::string RejectedByReason(const Tally& t) {
  std::string out;
  for (uint32_t i = 0; i < shm::kRejectReasonCount; ++i) {
    if (t.rejected[i] == 0) continue;
    if (!out.empty()) out += ", ";
    out += std::string(shm::RejectReasonName(i)) + " " + std::to_string(t.rejected[i]);
  }
  return out;
}

std::string DescribeReport(const ExporterReport& r) {
  std::string out = r.name + " → " + r.target + ":";
  const char* sep = " ";
  for (const auto& [name, value] : r.counts) {
    out += sep + name + " " + std::to_string(value);
    sep = ", ";
  }
  return out;
}

}  // namespace pitlane::cli
