// Helpers shared by the subcommands: errors, stop signals, stdout, number formatting, the
// validators of values CLI11 does not know.
#include <fcntl.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>

#include "commands.h"
#include "pitlane/admin.h"
#include "pitlane/defaults.h"
#include "pitlane/grpc_common.h"
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

namespace {

// The errno of the first write to stdout that failed; 0 while none did.
std::atomic<int> g_stdout_errno{0};

// stdout's writes (fopencookie): the same write(2)s to fd 1, keeping the errno of the first that
// failed. glibc drops a buffer whose write failed, so a later fflush succeeds with nothing left
// to write and the cause would be lost; and a writer may clearerr() to try again (the JSON lines
// exporter does), which must not hide that output was lost.
ssize_t WriteStdout(void* /*cookie*/, const char* buf, size_t size) {
  size_t done = 0;
  while (done < size) {
    const ssize_t n = ::write(STDOUT_FILENO, buf + done, size - done);
    if (n > 0) {
      done += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    int expected = 0;
    g_stdout_errno.compare_exchange_strong(expected, n < 0 ? errno : EIO);
    break;
  }
  return static_cast<ssize_t>(done);  // short: glibc marks the stream failed
}

}  // namespace

void OccupyClosedStdStreams() {
  for (int fd = STDIN_FILENO; fd <= STDERR_FILENO; ++fd) {
    if (::fcntl(fd, F_GETFD) != -1 || errno != EBADF) continue;
    // open() returns the lowest free descriptor: this one, since the lower ones are open.
    const int null_fd = ::open("/dev/null", fd == STDIN_FILENO ? O_RDONLY : O_WRONLY);
    if (null_fd >= 0 && null_fd != fd) ::close(null_fd);  // cannot happen; never leak it
  }
}

void WatchStdout() {
  signal(SIGPIPE, SIG_IGN);
  cookie_io_functions_t io = {};
  io.write = WriteStdout;
  FILE* watched = fopencookie(nullptr, "w", io);
  if (watched == nullptr) return;  // stdout as it was: failures seen, not always why
  // As glibc buffers fd 1: by line on a terminal, in blocks otherwise.
  setvbuf(watched, nullptr, ::isatty(STDOUT_FILENO) == 1 ? _IOLBF : _IOFBF, BUFSIZ);
  stdout = watched;
}

int StdoutError() {
  errno = 0;
  const bool flushed = std::fflush(stdout) == 0 && !std::ferror(stdout);
  if (const int err = g_stdout_errno.load(); err != 0) return err;
  if (flushed) return 0;
  return errno != 0 ? errno : EIO;  // stdout not watched (fopencookie failed)
}

int FinishStdout(const std::string& program, int code) {
  const int err = StdoutError();
  if (err == 0 || err == EPIPE) return code;  // EPIPE: the reader had what it wanted
  std::fprintf(stderr, "%s: cannot write to stdout: %s\n", program.c_str(), std::strerror(err));
  return code == 0 ? 1 : code;
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

namespace {

// A number of seconds in (0, max], or [0, max] with `zero`. CLI11's range check accepts NaN-free
// input only after conversion, so check the converted value.
CLI::Validator Seconds(bool zero, double max) {
  return CLI::Validator(
      [zero, max](std::string& in) -> std::string {
        double v = 0;
        size_t used = 0;
        try {
          v = std::stod(in, &used);
        } catch (...) {
          used = 0;
        }
        if (used == 0 || used != in.size() || !std::isfinite(v) || v < 0 || (v == 0 && !zero) ||
            v > max) {
          return "\"" + in + "\" is not a number of seconds in " + (zero ? "[0, " : "(0, ") +
                 std::to_string(static_cast<long long>(max)) + "]";
        }
        return {};
      },
      "SECONDS", "Seconds");
}

}  // namespace

CLI::Validator PositiveSeconds(double max) { return Seconds(/*zero=*/false, max); }
CLI::Validator NonNegativeSeconds(double max) { return Seconds(/*zero=*/true, max); }

CLI::Validator IntegerIn(int64_t min, int64_t max, const std::string& unit) {
  const std::string range = "[" + std::to_string(min) + ", " + std::to_string(max) + "]";
  return CLI::Validator(
      [min, max, unit, range](std::string& in) -> std::string {
        int64_t v = 0;
        const char* end = in.data() + in.size();
        const auto [p, ec] = std::from_chars(in.data(), end, v);
        if (in.empty() || ec != std::errc() || p != end || v < min || v > max) {
          return "\"" + in + "\" is not an integer" + (unit.empty() ? "" : " number of " + unit) +
                 " in " + range;
        }
        return {};
      },
      "INT in " + range, "IntegerIn");
}

CLI::Validator AdminAddress() {
  return CLI::Validator(
      [](std::string& in) -> std::string {
        if (in.rfind("unix:", 0) == 0) {
          return in.size() > 5 ? "" : "\"" + in + "\" has no path (expected unix:PATH)";
        }
        // TCP: as every HOST:PORT flag is checked (a port gRPC would take modulo 65536, a
        // "tcp:" prefix, ...), to dial.
        const Status s = internal::ValidateGrpcAddress(in, internal::AddressUse::kDial, "address");
        if (s.ok()) return {};
        std::string m = s.message();  // "... (expected HOST:PORT, e.g. ...)"
        if (!m.empty() && m.back() == ')') {
          m.insert(m.size() - 1, "; or unix:PATH");
        } else {
          m += " (or unix:PATH)";
        }
        return m;
      },
      "", "AdminAddress");
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
