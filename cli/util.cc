// Helpers shared by the subcommands: errors, stop signals, number formatting.
#include <signal.h>
#include <time.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>

#include "commands.h"
#include "pitlane/admin.h"
#include "pitlane/defaults.h"
#include "pitlane/shm.h"

namespace pitlane::cli {

void Error(std::string_view cmd, std::string_view message) {
  std::fprintf(stderr, "pitlane %.*s: %.*s\n", static_cast<int>(cmd.size()), cmd.data(),
               static_cast<int>(message.size()), message.data());
}

namespace {
sigset_t StopSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGHUP);
  return set;
}
}  // namespace

void BlockStopSignals() {
  const sigset_t set = StopSignals();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  signal(SIGPIPE, SIG_IGN);
}

const char* SignalName(int sig) {
  switch (sig) {
    case SIGINT: return "SIGINT";
    case SIGTERM: return "SIGTERM";
    case SIGHUP: return "SIGHUP";
  }
  return "a signal";
}

int WaitForSignal(double seconds) {
  const sigset_t set = StopSignals();
  if (seconds < 0) seconds = 0;
  timespec ts;
  ts.tv_sec = static_cast<time_t>(seconds);
  ts.tv_nsec = static_cast<long>((seconds - static_cast<double>(ts.tv_sec)) * 1e9);
  for (;;) {
    const int sig = sigtimedwait(&set, nullptr, &ts);
    if (sig > 0) return sig;
    if (errno == EAGAIN) return 0;
    if (errno != EINTR) return 0;
    // EINTR: another signal (e.g. SIGCHLD with a handler) interrupted the wait; the remaining
    // time is not reported, so waiting the full period again is acceptable for a UI tick.
  }
}

std::chrono::system_clock::time_point AdminDeadline() {
  return std::chrono::system_clock::now() +
         std::chrono::duration_cast<std::chrono::system_clock::duration>(
             std::chrono::duration<double>(kAdminCallTimeoutSeconds));
}

bool StdoutClosed() {
  static bool closed = false;  // a reader that left does not come back
  if (!closed && std::fflush(stdout) != 0 && errno == EPIPE) closed = true;
  return closed;
}

std::string Compact(uint64_t n) {
  char buf[32];
  if (n < 10000) {
    std::snprintf(buf, sizeof(buf), "%llu", static_cast<unsigned long long>(n));
    return buf;
  }
  // Each unit below 1000 of it once rounded ("999.9k", then "1.00M"; never "5120.4k"), up to
  // E, where uint64_t ends (18.45E).
  double v = static_cast<double>(n) / 1e3;
  if (v < 999.95) {
    std::snprintf(buf, sizeof(buf), "%.1fk", v);
    return buf;
  }
  const char* unit = "MGTPE";
  for (v /= 1e3; v >= 999.995 && unit[1] != '\0'; v /= 1e3) ++unit;
  std::snprintf(buf, sizeof(buf), "%.2f%c", v, *unit);
  return buf;
}

Result<std::string> ResolveNamespace(const std::string& ns) {
  std::string n = ns.empty() ? defaults::Namespace() : ns;
  Status s = shm::ValidateNamespace(n);
  if (!s.ok()) return s;
  return n;
}

Result<std::unique_ptr<Host>> StartHost(const HostOptions& options) {
  Result<std::unique_ptr<Host>> host = Host::Start(options);
  if (!host.ok()) {
    return Unavailable("cannot start a host for namespace \"" + options.ns +
                       "\": " + host.status().ToString());
  }
  return host;
}

std::string HostPart(const std::string& address) { return address.substr(0, address.rfind(':')); }

std::string MetricsUrl(const std::string& listen, uint16_t port) {
  return "http://" + HostPart(listen) + ":" + std::to_string(port) + "/metrics";
}

}  // namespace pitlane::cli

namespace pitlane::cli {

// CLI11's range check accepts NaN-free input only after conversion, so check the converted value.
CLI::Validator PositiveSeconds(double max) {
  return CLI::Validator(
      [max](std::string& in) -> std::string {
        double v = 0;
        size_t used = 0;
        try {
          v = std::stod(in, &used);
        } catch (...) {
          return "\"" + in + "\" is not a number of seconds";
        }
        if (used != in.size() || !std::isfinite(v) || v <= 0 || v > max) {
          return "\"" + in + "\" is not a number of seconds in (0, " +
                 std::to_string(static_cast<long long>(max)) + "]";
        }
        return {};
      },
      "SECONDS", "PositiveSeconds");
}

CLI::Validator NamespaceName() {
  return CLI::Validator(
      [](std::string& in) -> std::string {
        if (in.empty()) {
          return "namespace is empty (omit --ns for $PITLANE_NAMESPACE or \"default\")";
        }
        return {};
      },
      "NAME", "NamespaceName");
}

int ExitCodeOf(const Status& s) {
  if (s.ok()) return 0;
  return s.code() == StatusCode::kInvalidArgument ? 2 : 1;
}

int Fail(std::string_view cmd, const Status& s) {
  Error(cmd, s.message());
  return ExitCodeOf(s);
}

Result<std::string> ReadTokenFile(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "re");
  if (f == nullptr) {
    return Unavailable("cannot read the gRPC token file \"" + path + "\": " +
                       std::strerror(errno));
  }
  std::string token;
  char buf[4096];
  for (size_t n; (n = std::fread(buf, 1, sizeof buf, f)) > 0;) token.append(buf, n);
  std::fclose(f);  // pairs with the fopen above
  while (!token.empty() && (token.back() == '\n' || token.back() == '\r')) token.pop_back();
  if (token.empty()) {
    return InvalidArgument("the gRPC token file \"" + path + "\" is empty");
  }
  return token;
}

}  // namespace pitlane::cli
