#include "pitlane/defaults.h"

#include <unistd.h>

#include <cerrno>
#include <cstdlib>

namespace pitlane::defaults {
namespace {

std::string Env(const char* name, const std::string& fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? std::string(v) : fallback;
}

}  // namespace

std::string Hostname() {
  char buf[256] = {};
  if (gethostname(buf, sizeof(buf) - 1) != 0 || buf[0] == '\0') return "localhost";
  return buf;
}

std::string Namespace() { return Env(kNamespaceEnv, kNamespace); }
std::string WorkerId() { return Env(kWorkerIdEnv, Hostname() + "-" + std::to_string(getpid())); }
std::string Node() { return Env(kNodeEnv, Hostname()); }
std::string PoolName() { return Env(kPoolNameEnv, kPoolName); }

Result<uint64_t> RingBytes() {
  const char* v = std::getenv(kRingBytesEnv);
  if (v == nullptr || *v == '\0') return kRingBytes;
  errno = 0;
  char* end = nullptr;
  const unsigned long long n = std::strtoull(v, &end, 10);
  if (errno != 0 || end == v || *end != '\0' || n < 4096 || n > (64ull << 20) || (n & (n - 1))) {
    return InvalidArgument(std::string(kRingBytesEnv) + "=" + v +
                           " is not a power of two between 4096 and 67108864");
  }
  return static_cast<uint64_t>(n);
}

}  // namespace pitlane::defaults
