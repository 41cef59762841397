#include "testing.h"

#include <dirent.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cstring>

namespace pitlane::testing {

ScopedNamespace::ScopedNamespace() {
  static std::atomic<int> counter{0};
  name_ = "t" + std::to_string(getpid()) + "x" + std::to_string(counter.fetch_add(1));
}

ScopedNamespace::~ScopedNamespace() {
  const std::string prefix = "pitlane." + name_ + ".";
  if (DIR* d = opendir("/dev/shm")) {
    while (dirent* e = readdir(d)) {
      if (std::strncmp(e->d_name, prefix.c_str(), prefix.size()) == 0) {
        shm_unlink(("/" + std::string(e->d_name)).c_str());
      }
    }
    closedir(d);
  }
}

}  // namespace pitlane::testing
