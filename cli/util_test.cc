// The CLI's shared helpers that print what people read (util.cc).
#include <gtest/gtest.h>

#include <cstdint>

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

}  // namespace
}  // namespace pitlane::cli
