// The host side of the installed package: links pitlane::host, starts a host in the namespace
// of $PITLANE_NAMESPACE and stops it again (tests/install/check.sh).
#include <cstdio>

#include "pitlane/host.h"

int main() {
  auto host = pitlane::Host::Start();
  if (!host.ok()) {
    std::fprintf(stderr, "Host::Start: %s\n", host.status().ToString().c_str());
    return 1;
  }
  std::printf("host: started\n");
  return 0;
}
