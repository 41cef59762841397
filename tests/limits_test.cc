// The catalog's per-event limits as both sides apply them: CheckEventLimits (what a worker
// refuses at emit) must refuse exactly what the host's fold rejects for size, under the same
// reason, and TruncateValue cuts where the fold cuts.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "../host/src/fold.h"
#include "pitlane/catalog.h"
#include "pitlane/limits.h"
#include "pitlane/shm_layout.h"

namespace pitlane {
namespace {

struct Case {
  std::string what;
  size_t measurements = 1;
  size_t metadata = 1;
  size_t key_bytes = 4;  // of the last metadata key (unknown to the catalog, sent by name)
  size_t correlation_bytes = 27;
};

class LimitsTest : public ::testing::Test {
 protected:
  // What the worker's check says and what the host's fold does, for the same event.
  std::pair<LimitBreach, internal::FoldOutcome> Both(const Case& c) {
    const std::string long_key(c.key_bytes, 'k');
    const std::string correlation(c.correlation_bytes, 'c');
    std::vector<Measurement> m(c.measurements, Measurement("duration", Value(int64_t{1})));
    std::vector<Metadata> d;
    std::vector<std::string> keys;
    for (size_t i = 0; i + 1 < c.metadata; ++i) keys.push_back("key" + std::to_string(i));
    for (const std::string& k : keys) d.emplace_back(k, "v");
    d.emplace_back(long_key, "v");
    const LimitBreach breach = CheckEventLimits(catalog_->limits(), m, d, correlation);

    std::vector<internal::RawMeasurement> rm;
    for (const Measurement& x : m) rm.push_back({0, x.key, x.value});
    std::vector<internal::RawMeta> rd;
    for (const Metadata& x : d) rd.push_back({0, x.key, x.value});
    internal::RawEvent raw;
    raw.name = "python.call.stop";
    raw.timestamp_ns = 1700000000000000000;
    raw.correlation_id = correlation;
    raw.measurements = rm;
    raw.metadata = rd;
    internal::FoldContext ctx;
    EventView view;
    return {breach, folder_.Fold(raw, ctx, &view)};
  }

  std::shared_ptr<const Catalog> catalog_ = Catalog::Default();
  internal::Folder folder_{*catalog_};
};

TEST_F(LimitsTest, WorkerCheckRefusesExactlyWhatTheHostRejectsForSize) {
  const struct {
    Case c;
    LimitBreach breach;
    uint32_t reject;
  } cases[] = {
      {{"32 measurements", 32}, LimitBreach::kNone, 0},
      {{"33 measurements", 33}, LimitBreach::kTooManyFields, shm::kRejectTooManyFields},
      {{"32 metadata", 1, 32}, LimitBreach::kNone, 0},
      {{"33 metadata", 1, 33}, LimitBreach::kTooManyFields, shm::kRejectTooManyFields},
      {{"64-byte key", 1, 1, 64}, LimitBreach::kNone, 0},
      {{"65-byte key", 1, 1, 65}, LimitBreach::kKeyTooLong, shm::kRejectKeyTooLong},
      {{"128-byte correlation id", 1, 1, 4, 128}, LimitBreach::kNone, 0},
      {{"129-byte correlation id", 1, 1, 4, 129}, LimitBreach::kCorrelationIdTooLong,
       shm::kRejectCorrelationIdTooLong},
  };
  for (const auto& k : cases) {
    const auto [breach, outcome] = Both(k.c);
    EXPECT_EQ(breach, k.breach) << k.c.what;
    EXPECT_EQ(outcome.delivered, k.breach == LimitBreach::kNone) << k.c.what;
    if (!outcome.delivered) {
      EXPECT_EQ(outcome.reject_reason, k.reject) << k.c.what;
    }
  }
}

TEST_F(LimitsTest, KeysGivenByCatalogIdAreNotMeasuredByName) {
  Measurement by_id(MeasurementKey{1, "duration"}, Value(int64_t{1}));
  by_id.key = std::string_view();  // the id is what travels
  EXPECT_EQ(CheckEventLimits(catalog_->limits(), {&by_id, 1}, {}, ""), LimitBreach::kNone);
}

TEST_F(LimitsTest, TruncateValueCutsAtTheLimitWithoutSplittingUtf8) {
  bool cut = false;
  const std::string exact(1024, 'a');
  EXPECT_EQ(TruncateValue(exact, 1024, &cut).size(), 1024u);
  EXPECT_FALSE(cut);
  const std::string over(70000, 'a');
  EXPECT_EQ(TruncateValue(over, 1024, &cut).size(), 1024u);
  EXPECT_TRUE(cut);
  const std::string utf8 = std::string(1023, 'a') + "\xc3\xa9";  // é straddles byte 1024
  cut = false;
  EXPECT_EQ(TruncateValue(utf8, 1024, &cut), std::string(1023, 'a'));
  EXPECT_TRUE(cut);
}

}  // namespace
}  // namespace pitlane
