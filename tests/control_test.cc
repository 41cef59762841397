// ControlState validation and its compilation into per-event gate decisions
// (doc/architecture.md, "Control": enabled -> sampling -> filter; deny wins; empty allow
// allows everything; no sampling patterns = every event).
#include "pitlane/control.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>

namespace pitlane {
namespace {

class ControlTest : public ::testing::Test {
 protected:
  std::shared_ptr<const Catalog> catalog_ = Catalog::Default();
  uint16_t Id(std::string_view canonical) const {
    const uint16_t id = catalog_->FindCanonical(canonical);
    EXPECT_NE(id, 0) << canonical;
    return id;
  }
  GateTable Compile(const ControlState& s) const {
    EXPECT_TRUE(s.Validate().ok()) << s.Validate().ToString();
    GateTable t = GateTable::Compile(s, *catalog_);
    EXPECT_EQ(t.decision.size(), catalog_->event_count() + 1);
    EXPECT_EQ(t.filtered.size(), catalog_->event_count() + 1);
    return t;
  }
};

void ExpectInvalid(const ControlState& s, std::string_view what) {
  const Status st = s.Validate();
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << st.ToString();
  EXPECT_NE(st.message().find(what), std::string::npos)
      << "message: " << st.message() << "\nexpected to contain: " << what;
}

std::vector<std::string> Patterns(size_t n) {
  std::vector<std::string> v;
  for (size_t i = 0; i < n; ++i) v.push_back("e" + std::to_string(i) + ".*");
  return v;
}

TEST(ControlStateTest, DefaultStateIsValid) { EXPECT_TRUE(ControlState{}.Validate().ok()); }

TEST(ControlStateTest, RatesAtTheBoundsAreValid) {
  for (double r : {0.0, 1.0, 0.5, 1e-300, -0.0}) {
    ControlState s;
    s.sampling_rate = r;
    EXPECT_TRUE(s.Validate().ok()) << r;
  }
}

TEST(ControlStateTest, NanRateIsRejected) {
  ControlState s;
  s.sampling_rate = std::numeric_limits<double>::quiet_NaN();
  ExpectInvalid(s, "NaN");
}

TEST(ControlStateTest, NegativeRateIsRejectedNamingTheValue) {
  ControlState s;
  s.sampling_rate = -0.1;
  ExpectInvalid(s, "sampling rate -0.1 is outside [0, 1]");
}

TEST(ControlStateTest, RateAboveOneIsRejectedNamingTheValue) {
  ControlState s;
  s.sampling_rate = 1.1;
  ExpectInvalid(s, "sampling rate 1.1 is outside [0, 1]");
  s.sampling_rate = std::numeric_limits<double>::infinity();
  ExpectInvalid(s, "inf");
}

TEST(ControlStateTest, MalformedPatternIsRejectedNamingItsList) {
  ControlState s;
  s.sampling_patterns = {"python.*", "python.[call"};
  ExpectInvalid(s, "sampling_patterns[1]: pattern \"python.[call\" has an unclosed '['");
  s = ControlState{};
  s.allow = {""};
  ExpectInvalid(s, "allow[0]: pattern \"\" is empty");
  s = ControlState{};
  s.deny = {"a b"};
  ExpectInvalid(s, "deny[0]: pattern \"a b\"");
}

TEST(ControlStateTest, ThirtyTwoPatternsPerListAreAllowed) {
  ControlState s;
  s.sampling_patterns = Patterns(kMaxPatternsPerList);
  s.allow = Patterns(kMaxPatternsPerList);
  s.deny = Patterns(kMaxPatternsPerList);
  EXPECT_TRUE(s.Validate().ok()) << s.Validate().ToString();
}

TEST(ControlStateTest, ThirtyThreePatternsInAnyListAreRejected) {
  ControlState s;
  s.sampling_patterns = Patterns(33);
  ExpectInvalid(s, "sampling_patterns has 33 patterns; at most 32");
  s = ControlState{};
  s.allow = Patterns(33);
  ExpectInvalid(s, "allow has 33 patterns");
  s = ControlState{};
  s.deny = Patterns(33);
  ExpectInvalid(s, "deny has 33 patterns");
}

TEST_F(ControlTest, DefaultStatePassesEveryEvent) {
  const GateTable t = Compile(ControlState{});
  for (size_t i = 0; i < t.decision.size(); ++i) {
    EXPECT_EQ(t.decision[i], GateDecision::kPass) << i;
    EXPECT_EQ(t.filtered[i], 0) << i;
  }
}

TEST_F(ControlTest, DisabledSuppressesEveryEventIncludingUnknownNames) {
  ControlState s;
  s.enabled = false;
  s.sampling_rate = 0.5;
  const GateTable t = Compile(s);
  for (size_t i = 0; i < t.decision.size(); ++i) {
    EXPECT_EQ(t.decision[i], GateDecision::kDisabled) << i;
  }
  EXPECT_EQ(GateTable::SamplingDecisionForName(s, "inference.start"), GateDecision::kDisabled);
}

TEST_F(ControlTest, RateZeroSamplesOutEveryEvent) {
  ControlState s;
  s.sampling_rate = 0.0;
  const GateTable t = Compile(s);
  for (size_t i = 0; i < t.decision.size(); ++i) {
    EXPECT_EQ(t.decision[i], GateDecision::kSampledOut) << i;
  }
}

TEST_F(ControlTest, RateOnePassesWithoutADraw) {
  ControlState s;
  s.sampling_rate = 1.0;
  s.sampling_patterns = {"python.*"};
  const GateTable t = Compile(s);
  EXPECT_EQ(t.decision[Id("python.call.start")], GateDecision::kPass);
  EXPECT_EQ(t.decision[Id("pool.status")], GateDecision::kPass);
}

TEST_F(ControlTest, RateHalfDrawsForEveryEvent) {
  ControlState s;
  s.sampling_rate = 0.5;
  const GateTable t = Compile(s);
  for (size_t i = 0; i < t.decision.size(); ++i) {
    EXPECT_EQ(t.decision[i], GateDecision::kSample) << i;
  }
  EXPECT_EQ(t.sample_threshold, uint64_t{1} << 63);
}

TEST_F(ControlTest, ThresholdForRateTenthIsATenthOfTwoToThe64) {
  ControlState s;
  s.sampling_rate = 0.1;
  const GateTable t = Compile(s);
  const double expected = 0.1 * 18446744073709551616.0;
  EXPECT_NEAR(static_cast<double>(t.sample_threshold), expected, expected * 1e-12);
}

TEST_F(ControlTest, ThresholdForTheLargestRateBelowOneDoesNotOverflow) {
  ControlState s;
  s.sampling_rate = std::nextafter(1.0, 0.0);
  const GateTable t = Compile(s);
  EXPECT_EQ(t.decision[1], GateDecision::kSample);
  EXPECT_GT(t.sample_threshold, std::numeric_limits<uint64_t>::max() - 4096);
}

TEST_F(ControlTest, SamplingPatternsScopeTheRate) {
  ControlState s;
  s.sampling_rate = 0.25;
  s.sampling_patterns = {"tool.*"};
  const GateTable t = Compile(s);
  EXPECT_EQ(t.decision[Id("python.tool.execution.start")], GateDecision::kSample);
  EXPECT_EQ(t.decision[Id("python.tool.result_size")], GateDecision::kSample);
  EXPECT_EQ(t.decision[Id("python.call.start")], GateDecision::kPass);
  EXPECT_EQ(t.decision[Id("pool.status")], GateDecision::kPass);
  // Unknown names match no pattern: not sampled.
  EXPECT_EQ(t.decision[0], GateDecision::kPass);
}

TEST_F(ControlTest, PatternScopedRateZeroSamplesOutOnlyMatches) {
  ControlState s;
  s.sampling_rate = 0.0;
  s.sampling_patterns = {"python.call.*", "grpc.*"};
  const GateTable t = Compile(s);
  EXPECT_EQ(t.decision[Id("python.call.stop")], GateDecision::kSampledOut);
  EXPECT_EQ(t.decision[Id("grpc.stream.message")], GateDecision::kSampledOut);
  EXPECT_EQ(t.decision[Id("python.gc.completed")], GateDecision::kPass);
}

TEST_F(ControlTest, DenyRejectsMatchingEvents) {
  ControlState s;
  s.deny = {"python.memory.*", "pool.queue.*"};
  const GateTable t = Compile(s);
  EXPECT_EQ(t.filtered[Id("python.memory.sampled")], 1);
  EXPECT_EQ(t.filtered[Id("pool.queue.timeout")], 1);
  EXPECT_EQ(t.filtered[Id("python.cpu.sampled")], 0);
  // The filter does not change the toggle/sampling decision.
  EXPECT_EQ(t.decision[Id("python.memory.sampled")], GateDecision::kPass);
}

TEST_F(ControlTest, DenyWinsOverAllow) {
  ControlState s;
  s.allow = {"python.*"};
  s.deny = {"python.tool.*"};
  const GateTable t = Compile(s);
  EXPECT_EQ(t.filtered[Id("python.tool.execution.stop")], 1);
  EXPECT_EQ(t.filtered[Id("python.call.stop")], 0);
  EXPECT_EQ(t.filtered[Id("pool.status")], 1);  // not in the allow list
}

TEST_F(ControlTest, EmptyAllowListAllowsEverything) {
  ControlState s;
  s.deny = {"nothing.matches.this"};
  const GateTable t = Compile(s);
  for (size_t i = 0; i < t.filtered.size(); ++i) EXPECT_EQ(t.filtered[i], 0) << i;
}

TEST_F(ControlTest, NonEmptyAllowListRestrictsToMatches) {
  ControlState s;
  s.allow = {"tool.*"};
  const GateTable t = Compile(s);
  EXPECT_EQ(t.filtered[Id("python.tool.execution.start")], 0);
  EXPECT_EQ(t.filtered[Id("python.tool.result_size")], 0);
  EXPECT_EQ(t.filtered[Id("python.call.start")], 1);
  EXPECT_EQ(t.filtered[Id("session.created")], 1);
  EXPECT_EQ(t.filtered[0], 1);  // an unknown name matches no allow pattern
}

TEST_F(ControlTest, PatternsMatchWireAndCanonicalNames) {
  ControlState s;
  s.deny = {"python.tool.execution.*"};
  s.allow = {"tool.*", "python.call.*"};
  const GateTable t = Compile(s);
  EXPECT_EQ(t.filtered[Id("python.tool.execution.start")], 1);  // canonical name denied
  EXPECT_EQ(t.filtered[Id("python.tool.result_size")], 0);      // wire name allowed
  EXPECT_EQ(t.filtered[Id("python.call.exception")], 0);
}

TEST_F(ControlTest, CapitalisedPatternsMatchNothing) {
  ControlState s;
  s.deny = {"Python.*"};
  s.sampling_rate = 0.0;
  s.sampling_patterns = {"Python.*"};
  const GateTable t = Compile(s);
  for (size_t i = 1; i < t.decision.size(); ++i) {
    EXPECT_EQ(t.decision[i], GateDecision::kPass) << i;
    EXPECT_EQ(t.filtered[i], 0) << i;
  }
}

TEST_F(ControlTest, EventBothSampledAndFilteredKeepsBothOutcomes) {
  // The worker counts the sampling outcome first, then the filter for draws that pass.
  ControlState s;
  s.sampling_rate = 0.5;
  s.deny = {"python.call.*"};
  const GateTable t = Compile(s);
  EXPECT_EQ(t.decision[Id("python.call.start")], GateDecision::kSample);
  EXPECT_EQ(t.filtered[Id("python.call.start")], 1);
}

TEST(GateNameTest, SamplingDecisionForUnknownNameUsesTheNameItself) {
  ControlState s;
  s.sampling_rate = 0.0;
  s.sampling_patterns = {"inference.*"};
  EXPECT_EQ(GateTable::SamplingDecisionForName(s, "inference.start"), GateDecision::kSampledOut);
  EXPECT_EQ(GateTable::SamplingDecisionForName(s, "other.start"), GateDecision::kPass);
  s.sampling_rate = 0.3;
  EXPECT_EQ(GateTable::SamplingDecisionForName(s, "inference.start"), GateDecision::kSample);
  s.sampling_patterns.clear();
  EXPECT_EQ(GateTable::SamplingDecisionForName(s, "other.start"), GateDecision::kSample);
}

TEST(GateNameTest, FilterForUnknownNameDenyWinsAndEmptyAllowAllows) {
  ControlState s;
  EXPECT_FALSE(GateTable::FilterRejectsName(s, "inference.start"));
  s.allow = {"inference.*"};
  EXPECT_FALSE(GateTable::FilterRejectsName(s, "inference.start"));
  EXPECT_TRUE(GateTable::FilterRejectsName(s, "other.start"));
  s.deny = {"*.start"};
  EXPECT_TRUE(GateTable::FilterRejectsName(s, "inference.start"));
  EXPECT_FALSE(GateTable::FilterRejectsName(s, "inference.stop"));
}

}  // namespace
}  // namespace pitlane
