// The CLI's shared helpers that print what people read (util.cc, table.cc), and the validators
// whose messages people read when a value is wrong.
#include <gtest/gtest.h>

#include <CLI/CLI.hpp>
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

// What a validator says of `value` ("" when it takes it).
std::string Check(const CLI::Validator& v, std::string value) { return v(value); }

// Integers: "not an integer (number of UNIT) in [MIN, MAX]" for what is not a number at all as
// for what is out of range, never CLI11's "Value abc not in range 0 to 1000000".
TEST(ValidatorTest, IntegerInSaysWhatItWants) {
  const CLI::Validator spin = IntegerIn(0, 1'000'000, "microseconds");
  EXPECT_EQ(Check(spin, "0"), "");
  EXPECT_EQ(Check(spin, "1000000"), "");
  for (const char* bad : {"abc", "-1", "1000001", "", "1.5", "10x", "99999999999999999999"}) {
    EXPECT_EQ(Check(spin, bad), "\"" + std::string(bad) +
                                    "\" is not an integer number of microseconds in [0, 1000000]");
  }
  EXPECT_EQ(Check(IntegerIn(1, 64), "0"), "\"0\" is not an integer in [1, 64]");
}

// Seconds: fractions are fine; the range reads as one, never "0.000000 to 31536000.000000".
TEST(ValidatorTest, SecondsSayTheirRange) {
  EXPECT_EQ(Check(NonNegativeSeconds(31'536'000), "0"), "");
  EXPECT_EQ(Check(NonNegativeSeconds(31'536'000), "0.5"), "");
  for (const char* bad : {"-5", "abc", "31536001", "nan", "inf", ""}) {
    EXPECT_EQ(Check(NonNegativeSeconds(31'536'000), bad),
              "\"" + std::string(bad) + "\" is not a number of seconds in [0, 31536000]");
  }
  EXPECT_EQ(Check(PositiveSeconds(3600), "0.25"), "");
  EXPECT_EQ(Check(PositiveSeconds(3600), "0"), "\"0\" is not a number of seconds in (0, 3600]");
}

// A client's --admin: unix:PATH, or HOST:PORT that can be dialed; "tcp:1.2.3.4" is no address.
TEST(ValidatorTest, AdminAddressTakesUnixPathsAndDialableHostPorts) {
  const CLI::Validator admin = AdminAddress();
  for (const char* good : {"unix:/tmp/x.sock", "127.0.0.1:7420", "[::1]:7420", "localhost:1"}) {
    EXPECT_EQ(Check(admin, good), "") << good;
  }
  for (const char* bad : {"tcp:1.2.3.4", "bogus", "127.0.0.1:99999", "127.0.0.1:0", "unix:"}) {
    const std::string why = Check(admin, bad);
    EXPECT_NE(why.find(std::string("\"") + bad + "\""), std::string::npos) << why;
    EXPECT_NE(why.find("unix:PATH"), std::string::npos) << why;
  }
}

}  // namespace
}  // namespace pitlane::cli
