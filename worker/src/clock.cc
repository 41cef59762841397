#include "clock.h"

#include <fstream>
#include <sstream>
#include <string>

namespace pitlane::internal {

bool TscIsUsable() {
  static const bool usable = [] {
    if (const char* env = std::getenv("PITLANE_CLOCK"); env && std::string(env) == "realtime") {
      return false;
    }
    std::ifstream cs("/sys/devices/system/clocksource/clocksource0/current_clocksource");
    std::string source;
    cs >> source;
    if (source != "tsc") return false;
    std::ifstream cpu("/proc/cpuinfo");
    std::string line;
    while (std::getline(cpu, line)) {
      if (line.rfind("flags", 0) == 0) {
        return line.find(" constant_tsc") != std::string::npos &&
               line.find(" nonstop_tsc") != std::string::npos;
      }
    }
    return false;
  }();
  return usable;
}

}  // namespace pitlane::internal
