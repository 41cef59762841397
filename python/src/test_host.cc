// pitlane_py_test_host — a pitlane::Host for the Python tests and python/bench_emit.py.
//
//   pitlane_py_test_host --ns NAME [--quiet] [--busy-poll] [--grpc-listen HOST:PORT]
//
// Starts a host in namespace NAME with one "*" handler and prints one JSON object per line on
// stdout:
//   {"type":"ready","ns":...,"pid":...,"grpc_port":...}      once the host runs
//   {"type":"event","name":...,"timestamp_ns":...,"correlation_id":...,"span_id":...,
//    "parent_span_id":...,"measurements":{...},
//    "metadata":{...},"worker_id":...,"worker_pid":...,"transport":...}
//                                                            per delivered event (not --quiet)
//   {"type":"stats","final":false,"host":{...},"rings":[...],"workers":[...]}
//   {"type":"ok"} / {"type":"error","message":...}          answers to control commands
// Measurement values keep their kind: an int64 is a JSON integer, a double always has a '.' or
// an exponent (NaN and infinities as Python's json reads them: NaN, Infinity, -Infinity), a
// string is a JSON string.
//
// Commands, one per line on stdin:
//   stats                                  prints a stats line
//   drain MILLISECONDS                     Host::DrainAll, then a stats line ("drained": bool)
//   toggle WORKER 0|1                      Host::Toggle
//   sampling WORKER RATE [PATTERN ...]     Host::UpdateSampling
//   filter WORKER ALLOW DENY               Host::UpdateFilter; comma-separated lists, "-" = none
// End of stdin, SIGTERM or SIGINT: drains (up to 2 s), prints the final stats line
// ("final": true) and exits 0.
#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "pitlane/host.h"
#include "pitlane/shm_layout.h"

namespace {

std::mutex g_out_mu;

void WriteLine(const std::string& line) {
  std::lock_guard<std::mutex> lock(g_out_mu);
  std::fwrite(line.data(), 1, line.size(), stdout);
  std::fputc('\n', stdout);
  std::fflush(stdout);
}

void AppendString(std::string& out, std::string_view s) {
  out.push_back('"');
  for (const char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof(buf), "\\u%04x", static_cast<unsigned>(c));
          out += buf;
        } else {
          out.push_back(c);
        }
    }
  }
  out.push_back('"');
}

void AppendDouble(std::string& out, double d) {
  if (std::isnan(d)) {
    out += "NaN";
    return;
  }
  if (std::isinf(d)) {
    out += d > 0 ? "Infinity" : "-Infinity";
    return;
  }
  char buf[40];
  std::snprintf(buf, sizeof(buf), "%.17g", d);
  out += buf;
  if (std::strpbrk(buf, ".eE") == nullptr) out += ".0";
}

void AppendValue(std::string& out, const pitlane::Value& v) {
  switch (v.kind) {
    case pitlane::Value::Kind::kInt:
      out += std::to_string(v.i);
      break;
    case pitlane::Value::Kind::kDouble:
      AppendDouble(out, v.d);
      break;
    case pitlane::Value::Kind::kString:
      AppendString(out, v.s);
      break;
  }
}

template <typename T>
void Field(std::string& out, std::string_view key, const T& value, bool comma = true) {
  if (comma) out.push_back(',');
  AppendString(out, key);
  out.push_back(':');
  if constexpr (std::is_same_v<T, bool>) {
    out += value ? "true" : "false";
  } else if constexpr (std::is_integral_v<T>) {
    out += std::to_string(value);
  } else {
    AppendString(out, value);
  }
}

std::string EventJson(const pitlane::EventView& e) {
  std::string out = "{\"type\":\"event\"";
  Field(out, "name", e.name());
  Field(out, "timestamp_ns", e.timestamp_ns);
  Field(out, "correlation_id", e.correlation_id);
  Field(out, "span_id", e.span_id);  // 0: none
  Field(out, "parent_span_id", e.parent_span_id);
  out += ",\"measurements\":{";
  bool first = true;
  for (const pitlane::MeasurementView& m : e.measurements) {
    if (!first) out.push_back(',');
    first = false;
    AppendString(out, m.key);
    out.push_back(':');
    AppendValue(out, m.value);
  }
  out += "},\"metadata\":{";
  first = true;
  for (const pitlane::MetadataView& m : e.metadata) {
    if (!first) out.push_back(',');
    first = false;
    AppendString(out, m.key);
    out.push_back(':');
    AppendString(out, m.value);
  }
  out.push_back('}');
  Field(out, "worker_id", e.worker_id);
  Field(out, "worker_pid", e.worker_pid);
  Field(out, "transport", pitlane::TransportName(e.transport));
  out.push_back('}');
  return out;
}

void AppendRejected(std::string& out, const uint64_t* rejected) {
  out += ",\"rejected\":{";
  for (uint32_t r = 0; r < pitlane::shm::kRejectReasonCount; ++r) {
    Field(out, pitlane::shm::RejectReasonName(r), rejected[r], r != 0);
  }
  out.push_back('}');
}

std::string StatsJson(const pitlane::Host& host, bool final, int drained) {
  std::string out = "{\"type\":\"stats\"";
  Field(out, "final", final);
  if (drained >= 0) Field(out, "drained", drained == 1);
  const pitlane::HostStats hs = host.Stats();
  out += ",\"host\":{";
  Field(out, "delivered", hs.delivered, false);
  AppendRejected(out, hs.rejected);
  Field(out, "truncated", hs.truncated);
  Field(out, "host_events", hs.host_events);
  Field(out, "quarantined_rings", hs.quarantined_rings);
  Field(out, "workers_terminated", hs.workers_terminated);
  out += "},\"rings\":[";
  bool first = true;
  for (const pitlane::RingStats& r : host.Rings()) {
    if (!first) out.push_back(',');
    first = false;
    out.push_back('{');
    Field(out, "segment", r.segment, false);
    Field(out, "worker_id", r.worker_id);
    Field(out, "pid", r.pid);
    Field(out, "retired", r.retired);
    Field(out, "reclaimed", r.reclaimed);
    Field(out, "quarantined", r.quarantined);
    Field(out, "emitted", r.emitted);
    Field(out, "published", r.published);
    Field(out, "dropped_full", r.dropped_full);
    Field(out, "dropped_too_large", r.dropped_too_large);
    Field(out, "dropped_in_flight", r.dropped_in_flight);
    Field(out, "suppressed_disabled", r.suppressed_disabled);
    Field(out, "suppressed_sampled", r.suppressed_sampled);
    Field(out, "suppressed_filtered", r.suppressed_filtered);
    Field(out, "delivered", r.delivered);
    Field(out, "truncated", r.truncated);
    AppendRejected(out, r.rejected);
    Field(out, "conserved", r.Conserved());
    out.push_back('}');
  }
  out += "],\"workers\":[";
  first = true;
  for (const pitlane::WorkerInfo& w : host.Workers()) {
    if (!first) out.push_back(',');
    first = false;
    out.push_back('{');
    Field(out, "id", w.id, false);
    Field(out, "pid", w.pid);
    Field(out, "alive", w.alive);
    Field(out, "rings", w.rings);
    Field(out, "emitted", w.emitted);
    Field(out, "dropped_no_ring", w.dropped_no_ring);
    Field(out, "suppressed", w.suppressed());
    Field(out, "delivered", w.delivered);
    out.push_back('}');
  }
  out += "]}";
  return out;
}

std::string StatusJson(const pitlane::Status& s) {
  if (s.ok()) return "{\"type\":\"ok\"}";
  std::string out = "{\"type\":\"error\"";
  Field(out, "message", s.ToString());
  out.push_back('}');
  return out;
}

std::vector<std::string> Words(const std::string& line) {
  std::istringstream in(line);
  std::vector<std::string> words;
  for (std::string w; in >> w;) words.push_back(w);
  return words;
}

std::vector<std::string> List(const std::string& csv) {
  std::vector<std::string> out;
  if (csv == "-") return out;
  std::string item;
  std::istringstream in(csv);
  while (std::getline(in, item, ',')) {
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

// Runs one command line; returns the JSON line to print.
std::string Command(pitlane::Host& host, const std::string& line) {
  const std::vector<std::string> w = Words(line);
  if (w.empty()) return "";
  try {
    if (w[0] == "stats" && w.size() == 1) return StatsJson(host, false, -1);
    if (w[0] == "drain" && w.size() == 2) {
      const bool drained = host.DrainAll(std::chrono::milliseconds(std::stoll(w[1])));
      return StatsJson(host, false, drained ? 1 : 0);
    }
    if (w[0] == "toggle" && w.size() == 3 && (w[2] == "0" || w[2] == "1")) {
      return StatusJson(host.Toggle(w[1], w[2] == "1"));
    }
    if (w[0] == "sampling" && w.size() >= 3) {
      return StatusJson(host.UpdateSampling(w[1], std::stod(w[2]),
                                            std::vector<std::string>(w.begin() + 3, w.end())));
    }
    if (w[0] == "filter" && w.size() == 4) {
      return StatusJson(host.UpdateFilter(w[1], List(w[2]), List(w[3])));
    }
  } catch (const std::exception& e) {  // std::stoll / std::stod on a malformed number
    return StatusJson(pitlane::InvalidArgument("bad number in \"" + line + "\": " + e.what()));
  }
  return StatusJson(pitlane::InvalidArgument("unknown command \"" + line + "\""));
}

// Answers the command lines on stdin until it ends or SIGTERM/SIGINT arrives on `sfd`.
void ServeCommands(pitlane::Host& host, int sfd) {
  std::string pending;
  pollfd fds[2] = {{STDIN_FILENO, POLLIN, 0}, {sfd, POLLIN, 0}};
  for (;;) {
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      std::perror("poll");
      break;
    }
    if (fds[1].revents & POLLIN) break;
    if (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) {
      char buf[4096];
      const ssize_t n = read(STDIN_FILENO, buf, sizeof(buf));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;  // end of stdin
      pending.append(buf, static_cast<size_t>(n));
      for (size_t nl; (nl = pending.find('\n')) != std::string::npos;) {
        const std::string line = pending.substr(0, nl);
        pending.erase(0, nl + 1);
        const std::string reply = Command(host, line);
        if (!reply.empty()) WriteLine(reply);
      }
    }
  }
}

int Usage() {
  std::fprintf(stderr,
               "usage: pitlane_py_test_host --ns NAME [--quiet] [--busy-poll] "
               "[--grpc-listen HOST:PORT]\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  pitlane::HostOptions options;
  bool quiet = false;
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    if (a == "--ns" && i + 1 < argc) {
      options.ns = argv[++i];
    } else if (a == "--quiet") {
      quiet = true;
    } else if (a == "--busy-poll") {
      options.busy_poll = true;
    } else if (a == "--grpc-listen" && i + 1 < argc) {
      options.grpc_listen = argv[++i];
    } else {
      return Usage();
    }
  }
  if (options.ns.empty()) return Usage();

  // SIGTERM/SIGINT are read from a signalfd by the main loop: blocked before any thread exists
  // so every thread inherits the mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  const int sfd = signalfd(-1, &signals, SFD_CLOEXEC);
  if (sfd < 0) {
    std::perror("signalfd");
    return 1;
  }

  options.log = [](std::string_view line) {
    std::fprintf(stderr, "host: %.*s\n", static_cast<int>(line.size()), line.data());
  };
  pitlane::Result<std::unique_ptr<pitlane::Host>> started = pitlane::Host::Start(options);
  if (!started.ok()) {
    std::fprintf(stderr, "%s\n", started.status().ToString().c_str());
    return 1;
  }
  pitlane::Host& host = **started;
  pitlane::Status attached = host.Attach("print", "*", [quiet](const pitlane::EventView& e) {
    if (!quiet) WriteLine(EventJson(e));
  });
  if (!attached.ok()) {
    std::fprintf(stderr, "%s\n", attached.ToString().c_str());
    return 1;
  }
  host.RunInBackground();
  {
    std::string ready = "{\"type\":\"ready\"";
    Field(ready, "ns", host.ns());
    Field(ready, "pid", static_cast<int64_t>(getpid()));
    Field(ready, "grpc_port", static_cast<int64_t>(host.grpc_port()));
    ready.push_back('}');
    WriteLine(ready);
  }

  ServeCommands(host, sfd);
  const bool drained = host.DrainAll(std::chrono::seconds(2));
  host.Stop();
  WriteLine(StatsJson(host, true, drained ? 1 : 0));
  return 0;
}
