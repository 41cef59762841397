// Shell-style glob patterns for sampling and filters: `*` matches any run of characters
// (crossing dots), `?` one character, `[abc]` / `[a-z]` / `[!a-z]` (or `[^...]`) a class.
// Anchored at both ends, case-sensitive, no escapes.
#pragma once

#include <string_view>

#include "pitlane/status.h"

namespace pitlane {

inline constexpr size_t kMaxPatternBytes = 128;

// Ok when `pattern` is usable: non-empty, at most kMaxPatternBytes, printable ASCII without
// spaces, every `[` closed by a `]` with a non-empty class. The message names the pattern.
Status ValidatePattern(std::string_view pattern);

// REQUIRES: ValidatePattern(pattern).ok()
bool GlobMatch(std::string_view pattern, std::string_view text);

}  // namespace pitlane
