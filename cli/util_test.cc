// The CLI's shared helpers that print what people read (util.cc, table.cc).
#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "commands.h"

namespace pitlane::cli {
namespace {

// Exact below 10,000; above, one unit below 1000 of it once rounded, never "5120.4k".
TEST(CompactTest, EachUnitStaysBelowAThousandOfIt) {
  EXPECT_EQ(Compact(0), "0");
  EXPECT_EQ(Compact(9999), "9999");
  EXPECT_EQ(Compact(10000), "10.0k");
  EXPECT_EQ(Compact(999'949), "999.9k");
  EXPECT_EQ(Compact(999'950), "1.00M");
  EXPECT_EQ(Compact(5'120'400), "5.12M");
  EXPECT_EQ(Compact(999'994'999), "999.99M");
  EXPECT_EQ(Compact(999'995'000), "1.00G");
  EXPECT_EQ(Compact(1'200'000'000), "1.20G");
  EXPECT_EQ(Compact(1'000'000'000'000), "1.00T");
  EXPECT_EQ(Compact(2'500'000'000'000'000), "2.50P");
  EXPECT_EQ(Compact(UINT64_MAX), "18.45E");
}

// Header and rows share one layout: names padded on the right, numbers on the left, the last
// column unpadded.
TEST(TextTableTest, HeaderAndRowsShareOneLayout) {
  const TextTable table = {{{"worker", 8, /*left=*/true, /*gap=*/2}, {"pid", 5}},
                           {{"law", 0, /*left=*/true, /*gap=*/2}}};
  EXPECT_EQ(table.Header(), "  worker     pid  law");
  EXPECT_EQ(table.Row({{"w1", "42"}, {"holds"}}), "  w1          42  holds");
  EXPECT_EQ(table.Row({{"a-long-worker-id", "123456"}, {"VIOLATED"}}),
            "  a-long-worker-id 123456  VIOLATED");  // a wide cell pushes, never cuts
}

// The law's counts in the law's order, whatever table they stand in.
TEST(TextTableTest, LawCellsFollowTheLawsOrder) {
  Tally t;
  t.emitted = 10;
  t.suppressed_sampled = 1;
  t.dropped_full = 2;
  t.published = 7;
  t.delivered = 4;
  t.rejected[shm::kRejectUnknownEvent] = 2;
  t.rejected[shm::kRejectBadMeasurementKey] = 1;
  const std::vector<Column> columns = LawColumns();
  ASSERT_EQ(columns.size(), 6u);
  EXPECT_STREQ(columns.front().header, "emitted");
  EXPECT_EQ(LawCells(t), (std::vector<std::string>{"10", "1", "2", "7", "4", "3"}));
  EXPECT_EQ(RejectedByReason(t), "unknown_event 2, bad_measurement_key 1");
  EXPECT_EQ(RejectedByReason(Tally{}), "");
}

}  // namespace
}  // namespace pitlane::cli
