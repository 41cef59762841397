// ControlState validation and its compilation into a GateTable (see control.h).
//
// Why the filter is a separate vector: the worker's gate order is enabled -> sampling ->
// filter, and a suppressed event is counted under the first gate that stops it. An event that
// is both subject to a 0 < rate < 1 draw and filtered is "sampled" when the draw fails and
// "filtered" when it succeeds, which one byte per event cannot encode. So `decision` carries the
// toggle + sampling outcome and `filtered` the filter outcome, and the worker checks the latter
// only for events the former let through.
#include "pitlane/control.h"

#include <charconv>
#include <cmath>
#include <cstdio>
#include <limits>

#include "pitlane/glob.h"

namespace pitlane {
namespace {

// "a b c", or `if_empty` for no words.
std::string JoinOr(const std::vector<std::string>& words, const char* if_empty) {
  if (words.empty()) return if_empty;
  std::string out;
  for (const std::string& w : words) {
    if (!out.empty()) out += ' ';
    out += w;
  }
  return out;
}

// Shortest text that reads back as `v` ("0.1", "-0.1", "nan", "inf").
std::string FormatDouble(double v) {
  char buf[64];
  const auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  if (ec != std::errc()) return "?";
  return std::string(buf, end);
}

Status ValidateList(std::string_view list_name, const std::vector<std::string>& patterns) {
  if (patterns.size() > kMaxPatternsPerList) {
    return InvalidArgument(std::string(list_name) + " has " + std::to_string(patterns.size()) +
                           " patterns; at most " + std::to_string(kMaxPatternsPerList) +
                           " are allowed");
  }
  for (size_t i = 0; i < patterns.size(); ++i) {
    Status s = ValidatePattern(patterns[i]);
    if (!s.ok()) {
      return InvalidArgument(std::string(list_name) + "[" + std::to_string(i) +
                             "]: " + s.message());
    }
  }
  return Status::Ok();
}

// The sampling outcome for an event subject to sampling. NaN and negatives act as 0.
GateDecision RateDecision(double rate) {
  if (!(rate > 0.0)) return GateDecision::kSampledOut;
  if (rate >= 1.0) return GateDecision::kPass;
  return GateDecision::kSample;
}

// floor(rate × 2^64) for 0 < rate < 1. ldexp is exact (a power-of-two scaling) and the product
// is below 2^64 for every double below 1; the clamp only guards that claim.
uint64_t SampleThreshold(double rate) {
  if (!(rate > 0.0)) return 0;
  if (rate >= 1.0) return std::numeric_limits<uint64_t>::max();
  const double scaled = std::ldexp(rate, 64);
  if (scaled >= 18446744073709551616.0) return std::numeric_limits<uint64_t>::max();
  return static_cast<uint64_t>(scaled);
}

template <typename Matches>
bool AnyMatches(const std::vector<std::string>& patterns, Matches matches) {
  for (const std::string& p : patterns) {
    if (matches(p)) return true;
  }
  return false;
}

// Deny wins; an empty allow list allows everything.
template <typename Matches>
bool FilterRejects(const ControlState& state, Matches matches) {
  if (AnyMatches(state.deny, matches)) return true;
  return !state.allow.empty() && !AnyMatches(state.allow, matches);
}

template <typename Matches>
GateDecision SamplingDecision(const ControlState& state, Matches matches) {
  if (!state.enabled) return GateDecision::kDisabled;
  const bool sampled =
      state.sampling_patterns.empty() || AnyMatches(state.sampling_patterns, matches);
  return sampled ? RateDecision(state.sampling_rate) : GateDecision::kPass;
}

}  // namespace

Status ControlState::Validate() const {
  if (std::isnan(sampling_rate)) return InvalidArgument("sampling rate is NaN; expected [0, 1]");
  if (sampling_rate < 0.0 || sampling_rate > 1.0) {
    return InvalidArgument("sampling rate " + FormatDouble(sampling_rate) + " is outside [0, 1]");
  }
  if (Status s = ValidateList("sampling_patterns", sampling_patterns); !s.ok()) return s;
  if (Status s = ValidateList("allow", allow); !s.ok()) return s;
  if (Status s = ValidateList("deny", deny); !s.ok()) return s;
  return Status::Ok();
}

GateTable GateTable::Compile(const ControlState& state, const Catalog& catalog) {
  const size_t n = catalog.event_count();
  GateTable table;
  table.decision.assign(n + 1, GateDecision::kPass);
  table.filtered.assign(n + 1, 0);
  table.sample_threshold = SampleThreshold(state.sampling_rate);

  // Index 0: an unknown name, as if no pattern matched it.
  const auto no_match = [](const std::string&) { return false; };
  table.decision[0] = SamplingDecision(state, no_match);
  table.filtered[0] = FilterRejects(state, no_match) ? 1 : 0;

  for (size_t i = 1; i <= n; ++i) {
    const auto id = static_cast<uint16_t>(i);
    const auto matches = [&](const std::string& p) { return catalog.PatternMatchesEvent(p, id); };
    table.decision[i] = SamplingDecision(state, matches);
    table.filtered[i] = FilterRejects(state, matches) ? 1 : 0;
  }
  return table;
}

GateDecision GateTable::SamplingDecisionForName(const ControlState& state, std::string_view name) {
  return SamplingDecision(state, [&](const std::string& p) { return GlobMatch(p, name); });
}

bool GateTable::FilterRejectsName(const ControlState& state, std::string_view name) {
  return FilterRejects(state, [&](const std::string& p) { return GlobMatch(p, name); });
}

std::string Describe(const ControlState& state) {
  char rate[32];
  std::snprintf(rate, sizeof rate, "%g", state.sampling_rate);
  return std::string(state.enabled ? "enabled" : "disabled") + ", sampling " + rate + " of " +
         JoinOr(state.sampling_patterns, "every event") + ", allow " +
         JoinOr(state.allow, "all") + ", deny " + JoinOr(state.deny, "none");
}

}  // namespace pitlane
