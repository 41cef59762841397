// Shell-style glob matching for sampling and filter patterns (see glob.h).
//
// GlobMatch is the classic iterative matcher: it remembers only the most recent `*` and, on a
// mismatch, lets that star swallow one more character. Backtracking to earlier stars is never
// needed (a later star can absorb anything an earlier one could), so the worst case is
// O(|pattern| × |text|) with no recursion, whatever the pattern — `*a*a*a*a*a*b` against a long
// run of `a`s included.
#include "pitlane/glob.h"

#include <string>

namespace pitlane {
namespace {

constexpr size_t kNoClass = std::string_view::npos;

// The pattern as it appears in a message: quoted, non-printable bytes as \xNN, long patterns
// cut short so a hostile control message cannot make a huge log line.
std::string QuotePattern(std::string_view pattern) {
  constexpr size_t kShown = 2 * kMaxPatternBytes;
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out = "\"";
  for (size_t i = 0; i < pattern.size() && i < kShown; ++i) {
    const auto c = static_cast<unsigned char>(pattern[i]);
    if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') {
      out += static_cast<char>(c);
    } else {
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 0xf];
    }
  }
  if (pattern.size() > kShown) out += "...";
  out += '"';
  return out;
}

// Scans the class that opens at pattern[open] == '['. Returns the index just past its closing
// ']', or kNoClass when the class is never closed. A ']' right after '[' or after the negation
// ('!' or '^') is a member, not the end. When `c` is given, *matched says whether it belongs to
// the class (negation applied). When `bad_range` is given, it receives the position of the
// first range whose ends are reversed ("z-a"), or kNoClass.
size_t ScanClass(std::string_view pattern, size_t open, const char* c, bool* matched,
                 size_t* bad_range) {
  size_t i = open + 1;
  bool negate = false;
  if (i < pattern.size() && (pattern[i] == '!' || pattern[i] == '^')) {
    negate = true;
    ++i;
  }
  bool found = false;
  bool first = true;
  if (bad_range != nullptr) *bad_range = kNoClass;
  while (i < pattern.size()) {
    const auto lo = static_cast<unsigned char>(pattern[i]);
    if (lo == ']' && !first) {
      if (matched != nullptr) *matched = found != negate;
      return i + 1;
    }
    first = false;
    // "a-z" is a range unless the '-' is the last member ("[a-]").
    if (i + 2 < pattern.size() && pattern[i + 1] == '-' && pattern[i + 2] != ']') {
      const auto hi = static_cast<unsigned char>(pattern[i + 2]);
      if (hi < lo && bad_range != nullptr && *bad_range == kNoClass) *bad_range = i;
      if (c != nullptr) {
        const auto ch = static_cast<unsigned char>(*c);
        if (ch >= lo && ch <= hi) found = true;
      }
      i += 3;
    } else {
      if (c != nullptr && static_cast<unsigned char>(*c) == lo) found = true;
      ++i;
    }
  }
  return kNoClass;
}

}  // namespace

Status ValidatePattern(std::string_view pattern) {
  if (pattern.empty()) return InvalidArgument("pattern \"\" is empty");
  if (pattern.size() > kMaxPatternBytes) {
    return InvalidArgument("pattern " + QuotePattern(pattern) + " is " +
                           std::to_string(pattern.size()) + " bytes; at most " +
                           std::to_string(kMaxPatternBytes) + " are allowed");
  }
  for (size_t i = 0; i < pattern.size(); ++i) {
    const auto c = static_cast<unsigned char>(pattern[i]);
    if (c <= 0x20 || c >= 0x7f) {
      return InvalidArgument("pattern " + QuotePattern(pattern) + " has a space or a " +
                             "non-printable character at offset " + std::to_string(i));
    }
  }
  for (size_t i = 0; i < pattern.size(); ++i) {
    if (pattern[i] != '[') continue;
    size_t bad_range = kNoClass;
    const size_t end = ScanClass(pattern, i, nullptr, nullptr, &bad_range);
    if (end == kNoClass) {
      return InvalidArgument("pattern " + QuotePattern(pattern) + " has an unclosed '['");
    }
    if (bad_range != kNoClass) {
      return InvalidArgument("pattern " + QuotePattern(pattern) + " has a reversed range '" +
                             std::string(pattern.substr(bad_range, 3)) + "'");
    }
    i = end - 1;
  }
  return Status::Ok();
}

// A malformed pattern (not validated) still never reads out of bounds: an unclosed '[' is then
// taken as a literal character.
bool GlobMatch(std::string_view pattern, std::string_view text) {
  size_t p = 0;
  size_t t = 0;
  size_t star_p = kNoClass;  // pattern index just past the last '*' seen
  size_t star_t = 0;         // text index that star currently stops at
  while (t < text.size()) {
    if (p < pattern.size()) {
      const char pc = pattern[p];
      if (pc == '*') {
        star_p = ++p;
        star_t = t;
        continue;
      }
      if (pc == '?') {
        ++p;
        ++t;
        continue;
      }
      if (pc == '[') {
        bool matched = false;
        const size_t end = ScanClass(pattern, p, &text[t], &matched, nullptr);
        if (end != kNoClass ? matched : text[t] == '[') {
          p = end != kNoClass ? end : p + 1;
          ++t;
          continue;
        }
      } else if (pc == text[t]) {
        ++p;
        ++t;
        continue;
      }
    }
    if (star_p == kNoClass) return false;
    // Let the last star absorb one more character and retry the rest of the pattern.
    p = star_p;
    t = ++star_t;
  }
  while (p < pattern.size() && pattern[p] == '*') ++p;
  return p == pattern.size();
}

}  // namespace pitlane
