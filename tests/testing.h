// Helpers shared by the test binaries.
#pragma once

#include <string>

namespace pitlane::testing {

// A namespace name unique to this test process and call ("t<pid>x<counter>"), so tests running
// in parallel under ctest never share segments. Removes its segments when destroyed.
class ScopedNamespace {
 public:
  ScopedNamespace();
  ~ScopedNamespace();
  ScopedNamespace(const ScopedNamespace&) = delete;
  ScopedNamespace& operator=(const ScopedNamespace&) = delete;
  const std::string& name() const { return name_; }

 private:
  std::string name_;
};

}  // namespace pitlane::testing
