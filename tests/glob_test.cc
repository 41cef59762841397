// Shell-style glob patterns (doc/catalog.md, "Patterns"): anchored, case-sensitive, `*`
// crosses dots, `?`, classes with ranges and negation; malformed patterns rejected.
#include "pitlane/glob.h"

#include <gtest/gtest.h>

#include <string>

namespace pitlane {
namespace {

bool Match(std::string_view pattern, std::string_view text) {
  EXPECT_TRUE(ValidatePattern(pattern).ok()) << ValidatePattern(pattern).ToString();
  return GlobMatch(pattern, text);
}

TEST(GlobTest, LiteralPatternMatchesOnlyTheExactName) {
  EXPECT_TRUE(Match("python.call.start", "python.call.start"));
  EXPECT_FALSE(Match("python.call.start", "python.call.stop"));
  EXPECT_FALSE(Match("python.call.start", "python.call.start2"));
}

TEST(GlobTest, PatternsAreAnchoredAtBothEnds) {
  EXPECT_FALSE(Match("call", "python.call.start"));
  EXPECT_FALSE(Match("python.call", "python.call.start"));
  EXPECT_FALSE(Match("call.start", "python.call.start"));
  EXPECT_TRUE(Match("*call*", "python.call.start"));
}

TEST(GlobTest, StarCrossesDots) {
  EXPECT_TRUE(Match("python.*", "python.tool.execution.start"));
  EXPECT_TRUE(Match("python.*.start", "python.tool.execution.start"));
  EXPECT_TRUE(Match("*.start", "python.tool.execution.start"));
  EXPECT_TRUE(Match("*", "anything.at.all"));
  EXPECT_TRUE(Match("*", ""));
  EXPECT_FALSE(Match("python.*", "pythonx"));
}

TEST(GlobTest, StarMatchesTheEmptyRun) {
  EXPECT_TRUE(Match("python.call*", "python.call"));
  EXPECT_TRUE(Match("python**call", "pythoncall"));
}

TEST(GlobTest, MatchingIsCaseSensitive) {
  EXPECT_FALSE(Match("Python.*", "python.call.start"));
  EXPECT_FALSE(Match("python.*", "Python.call.start"));
  EXPECT_FALSE(Match("PYTHON.CALL.START", "python.call.start"));
}

TEST(GlobTest, QuestionMarkMatchesExactlyOneCharacter) {
  EXPECT_TRUE(Match("python.call.st?rt", "python.call.start"));
  EXPECT_TRUE(Match("python?call.start", "python.call.start"));
  EXPECT_FALSE(Match("python.call.st?rt", "python.call.strt"));
  EXPECT_FALSE(Match("python.call.st?rt", "python.call.staart"));
  EXPECT_FALSE(Match("?", ""));
}

TEST(GlobTest, ClassMatchesOneMember) {
  EXPECT_TRUE(Match("pool.[sq]*", "pool.status"));
  EXPECT_TRUE(Match("pool.[sq]*", "pool.queue.timeout"));
  EXPECT_FALSE(Match("pool.[sq]*", "pool.worker.spawned"));
}

TEST(GlobTest, ClassRangesIncludeBothEnds) {
  EXPECT_TRUE(Match("v[0-9]", "v0"));
  EXPECT_TRUE(Match("v[0-9]", "v9"));
  EXPECT_FALSE(Match("v[0-9]", "va"));
  EXPECT_TRUE(Match("[a-cx]", "b"));
  EXPECT_TRUE(Match("[a-cx]", "x"));
  EXPECT_FALSE(Match("[a-cx]", "d"));
}

TEST(GlobTest, BangAndCaretNegateAClass) {
  EXPECT_FALSE(Match("pool.[!s]*", "pool.status"));
  EXPECT_TRUE(Match("pool.[!s]*", "pool.worker.spawned"));
  EXPECT_FALSE(Match("pool.[^s]*", "pool.status"));
  EXPECT_TRUE(Match("pool.[^s]*", "pool.worker.spawned"));
  EXPECT_FALSE(Match("[!a-z]", "q"));
  EXPECT_TRUE(Match("[!a-z]", "Q"));
}

TEST(GlobTest, NegatedClassStillConsumesOneCharacter) {
  EXPECT_FALSE(Match("a[!b]", "a"));
  EXPECT_TRUE(Match("a[!b]", "ac"));
}

TEST(GlobTest, BracketRightAfterOpenIsALiteralMember) {
  EXPECT_TRUE(Match("[]]", "]"));
  EXPECT_TRUE(Match("[]a]", "a"));
  EXPECT_FALSE(Match("[]a]", "b"));
  EXPECT_FALSE(Match("[!]]", "]"));
  EXPECT_TRUE(Match("[!]]", "x"));
  EXPECT_FALSE(Match("[^]]", "]"));
}

TEST(GlobTest, DashAtEdgesOfAClassIsLiteral) {
  EXPECT_TRUE(Match("[a-]", "-"));
  EXPECT_TRUE(Match("[-a]", "-"));
  EXPECT_FALSE(Match("[a-]", "b"));
}

TEST(GlobTest, StarBacktracksToFindALaterOccurrence) {
  EXPECT_TRUE(Match("*.stop", "python.stop.x.stop"));
  EXPECT_TRUE(Match("a*b*c", "aXbYbZc"));
  EXPECT_FALSE(Match("a*b*c", "aXbYbZ"));
}

TEST(GlobTest, PathologicalPatternFinishesWithTheRightAnswer) {
  const std::string text(10000, 'a');
  EXPECT_FALSE(Match("*a*a*a*a*a*b", text));
  EXPECT_TRUE(Match("*a*a*a*a*a*a", text));
  EXPECT_FALSE(Match("*a*a*a*a*a*b*", text));
  EXPECT_TRUE(Match("*a*a*a*a*a*b", text + "b"));
  std::string dots;
  for (int i = 0; i < 2000; ++i) dots += "x.";
  EXPECT_FALSE(Match("*.*.*.*.*.*.*.*.y", dots));
}

TEST(GlobTest, ValidPatternsAreAccepted) {
  for (const char* p : {"python.*", "python.tool.*", "tool.*", "*", "?", "[a-z]*", "[!x]", "[^x]",
                        "[]]", "]", "a]b", "pool.[sq]*"}) {
    EXPECT_TRUE(ValidatePattern(p).ok()) << p << ": " << ValidatePattern(p).ToString();
  }
  EXPECT_TRUE(ValidatePattern(std::string(kMaxPatternBytes, 'a')).ok());
}

TEST(GlobTest, UnclosedBracketIsRejectedNamingThePattern) {
  const Status s = ValidatePattern("python.[call");
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "pattern \"python.[call\" has an unclosed '['");
}

TEST(GlobTest, EmptyClassesAreRejected) {
  // A ']' right after '[' is a member, so these classes are never closed.
  for (const char* p : {"[]", "[!]", "[^]", "a[", "[!"}) {
    const Status s = ValidatePattern(p);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << p;
    EXPECT_NE(s.message().find("unclosed"), std::string::npos) << s.message();
  }
}

TEST(GlobTest, ReversedRangeIsRejected) {
  const Status s = ValidatePattern("v[9-0]");
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("9-0"), std::string::npos) << s.message();
}

TEST(GlobTest, EmptyPatternIsRejected) {
  EXPECT_EQ(ValidatePattern("").code(), StatusCode::kInvalidArgument);
}

TEST(GlobTest, OverlongPatternIsRejected) {
  const Status s = ValidatePattern(std::string(kMaxPatternBytes + 1, 'a'));
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find(std::to_string(kMaxPatternBytes + 1)), std::string::npos)
      << s.message();
}

TEST(GlobTest, SpacesAndNonPrintableBytesAreRejected) {
  for (const std::string& p : {std::string("python call"), std::string("tab\there"),
                               std::string("nul\0x", 5), std::string("caf\xc3\xa9")}) {
    const Status s = ValidatePattern(p);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << p;
  }
  // The message escapes the byte instead of echoing it.
  EXPECT_NE(ValidatePattern(std::string("a\x01")).message().find("\\x01"), std::string::npos);
}

TEST(GlobTest, MalformedPatternNeverReadsOutOfBounds) {
  // GlobMatch's precondition is a valid pattern; violating it must still be safe.
  EXPECT_TRUE(GlobMatch("a[", "a["));
  EXPECT_FALSE(GlobMatch("a[", "ab"));
  EXPECT_FALSE(GlobMatch("[!", "x"));
}

}  // namespace
}  // namespace pitlane
