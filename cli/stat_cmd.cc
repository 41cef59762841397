// `pitlane stat`: a read-only view of a namespace's rings from outside the host process.
//
// It reads the registry and every registered ring segment from outside (shm::InspectRegistry:
// read-only, guarded, validated), so it works while the host is down too. Counts are read in
// accounting.h's order, so in-flight events appear as a positive difference, never a negative
// one.
//
// While the host runs, the counts of its exporters (OpenTelemetry: exported, retried, dropped by
// reason) come from its admin service (ListExporters), the one part that needs the host.
//
// --watch re-reads everything every --interval seconds until SIGINT/SIGTERM and adds per-ring
// rates (events/s emitted, delivered, dropped) computed from the previous refresh; a ring is
// matched across refreshes by segment name, pid and process start time.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <memory>
#include <ctime>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "commands.h"
#include "pitlane/admin.h"
#include "pitlane/shm.h"
#include "pitlane/shm_inspect.h"

namespace pitlane::cli {
namespace {

using RegistryCopy = shm::InspectedRegistry;
using RingRow = shm::InspectedRing;

double FillPercent(const RingRow& r) {
  return r.capacity ? 100.0 * static_cast<double>(r.used()) / static_cast<double>(r.capacity) : 0;
}
// Read from outside while its writer may still emit: events may be in flight (JudgeLaw).
LawVerdict LawOf(const RingRow& r) { return JudgeLaw(r, /*live=*/true); }

// The exporters of a running host, from its admin service; `error` says why there are none.
struct HostExporters {
  bool asked = false;  // false: the host is not running, so nothing was asked
  std::vector<ExporterReport> exporters;
  std::string error;
};

// The admin service of the namespace's host: --admin, else the namespace's default socket.
std::string AdminAddressOf(const StatOptions& o, const std::string& ns) {
  return o.admin.empty() ? DefaultAdminAddress(ns) : o.admin;
}

HostExporters ReadExporters(const RegistryCopy& reg, const AdminReader& admin) {
  HostExporters out;
  if (reg.host_pid == 0 || !reg.host_alive) return out;
  out.asked = true;
  Result<std::vector<ExporterReport>> reports = admin.ListExporters(AdminDeadline());
  if (!reports.ok()) {
    out.error = "the host's admin service at " + admin.address() + " did not answer (" +
                reports.status().message() + "); exporter counts need it (pitlane host --admin)";
    return out;
  }
  out.exporters = std::move(reports).value();
  return out;
}

// Per-ring rates since the previous refresh of --watch (parallel to RegistryCopy::rings).
struct Rate {
  bool known = false;  // false: first sight of this ring (or it was unreadable)
  double emitted = 0, delivered = 0, dropped = 0;  // per second
};

using json = nlohmann::ordered_json;

json JsonDoc(const std::string& ns, const RegistryCopy& reg, const std::vector<Rate>* rates) {
  json doc;
  doc["namespace"] = ns;
  doc["registry"] = shm::RegistryName(ns);
  doc["host"] = {{"pid", reg.host_pid}, {"alive", reg.host_alive}};
  json workers = json::array();
  for (const shm::InspectedWorker& w : reg.workers) {
    if (w.state != shm::kSlotReady) continue;
    workers.push_back({{"worker_id", w.id},
                       {"pid", w.pid},
                       {"alive", w.alive},
                       {"unringed",
                        {{"emitted", w.unringed.emitted},
                         {"dropped_no_ring", w.unringed.dropped_no_ring},
                         {"suppressed_disabled", w.unringed.suppressed_disabled},
                         {"suppressed_sampled", w.unringed.suppressed_sampled},
                         {"suppressed_filtered", w.unringed.suppressed_filtered}}}});
  }
  doc["workers"] = workers;
  json rings = json::array();
  for (size_t ri = 0; ri < reg.rings.size(); ++ri) {
    const RingRow& r = reg.rings[ri];
    json j;
    j["segment"] = r.segment;
    j["ring_slot"] = r.slot;
    if (!r.error.empty()) {
      j["error"] = r.error;
      rings.push_back(j);
      continue;
    }
    json rejected = json::object();
    for (uint32_t i = 0; i < shm::kRejectReasonCount; ++i) {
      rejected[shm::RejectReasonName(i)] = r.rejected[i];
    }
    j["worker_id"] = r.worker_id;
    j["pid"] = r.pid;
    j["alive"] = r.alive;
    j["retired"] = r.writer_retired || r.registry_retired;
    j["capacity"] = r.capacity;
    j["used_bytes"] = r.used();
    j["fill_percent"] = FillPercent(r);
    j["emitted"] = r.emitted;
    j["published"] = r.published;
    j["delivered"] = r.delivered;
    j["truncated"] = r.truncated;
    j["dropped"] = {{"full", r.dropped_full}, {"too_large", r.dropped_too_large}};
    j["suppressed"] = {{"disabled", r.suppressed_disabled},
                       {"sampled", r.suppressed_sampled},
                       {"filtered", r.suppressed_filtered}};
    j["rejected"] = rejected;
    j["quarantined"] = r.quarantined != 0;
    if (r.quarantined) j["quarantine_offset"] = r.quarantine_offset;
    j["unread"] = r.unread();
    j["law"] = LawVerdictName(LawOf(r));
    j["conserved"] = LawOf(r) != LawVerdict::kViolated;  // every count explained so far
    j["settled"] = r.Conserved();                         // nothing in flight either
    if (rates != nullptr) {
      const Rate& rt = (*rates)[ri];
      if (rt.known) {
        j["rates"] = {{"emitted_per_s", rt.emitted},
                      {"delivered_per_s", rt.delivered},
                      {"dropped_per_s", rt.dropped}};
      } else {
        j["rates"] = nullptr;  // first refresh that saw this ring
      }
    }
    rings.push_back(j);
  }
  doc["rings"] = rings;
  return doc;
}

// "exporters": one object per exporter with its counts; null when the host is not running;
// "exporters_error" when it runs but its admin service did not answer.
void AddExporters(const HostExporters& x, json* doc) {
  if (!x.asked) {
    (*doc)["exporters"] = nullptr;
    return;
  }
  if (!x.error.empty()) (*doc)["exporters_error"] = x.error;
  json list = json::array();
  for (const ExporterReport& e : x.exporters) {
    json counts = json::object();
    for (const auto& [name, value] : e.counts) counts[name] = value;
    list.push_back({{"name", e.name}, {"target", e.target}, {"counts", std::move(counts)}});
  }
  (*doc)["exporters"] = std::move(list);
}

void PrintExporters(const HostExporters& x) {
  if (!x.asked) return;
  if (!x.error.empty()) {
    std::printf("exporters: %s\n", x.error.c_str());
    return;
  }
  if (x.exporters.empty()) std::printf("exporters: none reporting\n");
  for (const ExporterReport& e : x.exporters) {
    std::printf("exporter %s\n", DescribeReport(e).c_str());
  }
}

void PrintText(const std::string& ns, const RegistryCopy& reg, const std::vector<Rate>* rates) {
  size_t workers = 0;
  for (const shm::InspectedWorker& w : reg.workers) workers += w.state == shm::kSlotReady;
  std::printf(
      "namespace \"%s\" (%s): host %s, %zu workers, %zu rings\n", ns.c_str(),
      shm::RegistryName(ns).c_str(),
      reg.host_pid == 0
          ? "not attached"
          : ("pid " + std::to_string(reg.host_pid) + (reg.host_alive ? " running" : " DOWN")).c_str(),
      workers, reg.rings.size());
  for (const shm::InspectedWorker& w : reg.workers) {
    if (w.state != shm::kSlotReady) continue;
    std::printf("worker %-20s pid %-8u %s", w.id.c_str(), w.pid, w.alive ? "alive" : "DEAD");
    if (w.unringed.emitted != 0) {
      std::printf("  ringless threads: emitted %" PRIu64 ", dropped no_ring %" PRIu64
                  ", suppressed %" PRIu64 "/%" PRIu64 "/%" PRIu64,
                  w.unringed.emitted, w.unringed.dropped_no_ring, w.unringed.suppressed_disabled,
                  w.unringed.suppressed_sampled, w.unringed.suppressed_filtered);
    }
    std::printf("\n");
  }
  for (size_t ri = 0; ri < reg.rings.size(); ++ri) {
    const RingRow& r = reg.rings[ri];
    std::printf("\n%s (slot %u)\n", r.segment.c_str(), r.slot);
    if (!r.error.empty()) {
      std::printf("  unreadable: %s\n", r.error.c_str());
      continue;
    }
    const std::string rej = RejectedByReason(r);
    std::printf("  worker %s  pid %u %s%s  capacity %" PRIu64 " KiB  fill %.1f%%%s\n",
                r.worker_id.c_str(), r.pid, r.alive ? "alive" : "DEAD",
                (r.writer_retired || r.registry_retired) ? " (retired)" : "", r.capacity >> 10,
                FillPercent(r), r.quarantined ? "  QUARANTINED" : "");
    if (r.quarantined) {
      std::printf("  quarantined at data offset %" PRIu64 "\n", r.quarantine_offset);
    }
    std::printf(
        "  emitted %" PRIu64 " = suppressed %" PRIu64 " (disabled %" PRIu64 ", sampled %" PRIu64
        ", filtered %" PRIu64 ") + dropped %" PRIu64 " (full %" PRIu64 ", too_large %" PRIu64
        ") + published %" PRIu64 "%s\n",
        r.emitted, r.suppressed(), r.suppressed_disabled, r.suppressed_sampled,
        r.suppressed_filtered, r.dropped(), r.dropped_full, r.dropped_too_large, r.published,
        r.in_flight() == 0 ? ""
                           : ("  [" + std::to_string(r.in_flight()) + " being emitted]").c_str());
    std::printf("  published %" PRIu64 " = delivered %" PRIu64 " + rejected %" PRIu64 "%s%s%s\n",
                r.published, r.delivered, r.rejected_total(),
                rej.empty() ? "" : (" (" + rej + ")").c_str(),
                r.unread() == 0 ? "" : (" + unread " + std::to_string(r.unread())).c_str(),
                r.truncated ? ("; truncated " + std::to_string(r.truncated)).c_str() : "");
    const LawVerdict law = LawOf(r);
    std::printf("  conservation: %s%s\n", LawVerdictName(law),
                law == LawVerdict::kViolated ? (" (" + LawMismatch(r) + ")").c_str()
                : law == LawVerdict::kInFlight
                    ? " (events being emitted or not read yet; they settle once read)"
                    : "");
    if (rates != nullptr) {
      const Rate& rt = (*rates)[ri];
      if (rt.known) {
        std::printf("  rate: emitted %s/s, delivered %s/s, dropped %s/s\n",
                    Compact(static_cast<uint64_t>(rt.emitted + 0.5)).c_str(),
                    Compact(static_cast<uint64_t>(rt.delivered + 0.5)).c_str(),
                    Compact(static_cast<uint64_t>(rt.dropped + 0.5)).c_str());
      } else {
        std::printf("  rate: (new ring, shown from the next refresh)\n");
      }
    }
  }
}

// Rates of `cur` against `prev` over `dt` seconds; a ring absent from `prev`, or whose counters
// went back (a new ring under a reused name), has no rate yet.
std::vector<Rate> Rates(const RegistryCopy& cur, const RegistryCopy* prev, double dt) {
  std::vector<Rate> out(cur.rings.size());
  if (prev == nullptr || dt <= 0) return out;
  for (size_t i = 0; i < cur.rings.size(); ++i) {
    const RingRow& r = cur.rings[i];
    if (!r.error.empty()) continue;
    for (const RingRow& p : prev->rings) {
      if (!p.error.empty() || p.segment != r.segment || p.pid != r.pid ||
          p.start_time != r.start_time) {
        continue;
      }
      if (r.emitted < p.emitted || r.delivered < p.delivered || r.dropped() < p.dropped()) break;
      out[i].known = true;
      out[i].emitted = static_cast<double>(r.emitted - p.emitted) / dt;
      out[i].delivered = static_cast<double>(r.delivered - p.delivered) / dt;
      out[i].dropped = static_cast<double>(r.dropped() - p.dropped()) / dt;
      break;
    }
  }
  return out;
}

int Watch(const std::string& ns, const StatOptions& o) {
  const AdminReader admin(AdminAddressOf(o, ns));
  BlockStopSignals();  // SIGINT/SIGTERM end the loop (WaitForSignal) instead of the process
  const bool tty = !o.json && ::isatty(STDOUT_FILENO) == 1;
  RegistryCopy prev;
  bool have_prev = false;
  auto prev_at = std::chrono::steady_clock::now();
  for (bool first = true;; first = false) {
    RegistryCopy reg = shm::InspectRegistry(ns, /*read_rings=*/true);
    const std::string err = reg.error;
    const auto now = std::chrono::steady_clock::now();
    const double dt = std::chrono::duration<double>(now - prev_at).count();
    const auto unix_ns = static_cast<int64_t>(shm::UnixNowNs());
    if (o.json) {
      json doc;
      if (!err.empty()) {
        doc["namespace"] = ns;
        doc["error"] = err;
      } else {
        const std::vector<Rate> rates = Rates(reg, have_prev ? &prev : nullptr, dt);
        doc = JsonDoc(ns, reg, &rates);
        AddExporters(ReadExporters(reg, admin), &doc);
      }
      doc["time_unix_ns"] = unix_ns;
      doc["interval_s"] = first ? 0.0 : dt;  // seconds since the previous refresh
      std::printf("%s\n", doc.dump(-1, ' ', false, json::error_handler_t::replace).c_str());
    } else {
      if (tty) {
        std::printf("\033[H\033[2J");  // cursor home, clear screen
      } else if (!first) {
        std::printf("\n");
      }
      const time_t t = static_cast<time_t>(unix_ns / 1'000'000'000);
      char when[32];
      tm local{};
      ::localtime_r(&t, &local);
      std::strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S", &local);
      std::printf("── pitlane stat --watch  %s  every %gs (Ctrl-C to stop) ──\n", when,
                  o.interval_s);
      if (!err.empty()) {
        std::printf("%s\n", err.c_str());
      } else {
        const std::vector<Rate> rates = Rates(reg, have_prev ? &prev : nullptr, dt);
        PrintText(ns, reg, &rates);
        PrintExporters(ReadExporters(reg, admin));
      }
    }
    if (const int write_err = StdoutError(); write_err != 0) {  // main reports others (exit 1)
      // `pitlane stat --watch | head -1`: the reader has what it wanted.
      if (write_err == EPIPE) Error("stat", "stdout closed (broken pipe); stopping");
      return 0;
    }
    if (err.empty()) {
      prev = std::move(reg);
      have_prev = true;
    } else {
      have_prev = false;
    }
    prev_at = now;
    if (WaitForSignal(o.interval_s) != 0) return 0;
  }
}

}  // namespace

int RunStat(const StatOptions& o) {
  auto ns_or = ResolveNamespace(o.ns);
  if (!ns_or.ok()) return Fail("stat", ns_or.status());
  const std::string ns = ns_or.value();
  if (o.watch) return Watch(ns, o);
  const RegistryCopy reg = shm::InspectRegistry(ns, /*read_rings=*/true);
  if (!reg.error.empty()) {
    Error("stat", reg.error);
    return 1;
  }
  const HostExporters exporters = ReadExporters(reg, AdminReader(AdminAddressOf(o, ns)));
  if (o.json) {
    json doc = JsonDoc(ns, reg, nullptr);
    AddExporters(exporters, &doc);
    std::printf("%s\n", doc.dump(2, ' ', false, json::error_handler_t::replace).c_str());
  } else {
    PrintText(ns, reg, nullptr);
    PrintExporters(exporters);
  }
  return 0;
}

CLI::App* AddStatCommand(CLI::App* app, StatOptions* o) {
  CLI::App* cmd = app->add_subcommand(
      "stat",
      "Show the rings of a namespace read-only from outside the host (works when it is down)");
  cmd->add_option("--ns", o->ns, "Namespace (default: $PITLANE_NAMESPACE or \"default\")")
      ->check(NamespaceName());
  cmd->add_flag("--json", o->json,
                "Print one JSON document (with --watch: one per refresh, one per line)");
  cmd->add_option("--admin", o->admin,
                  "Where the running host's admin service is, for its exporters' counts: "
                  "unix:PATH or HOST:PORT (default: the namespace's socket)")
      ->type_name("ADDR")
      ->check(AdminAddress());
  auto* watch_flag = cmd->add_flag(
      "--watch", o->watch, "Refresh until SIGINT, with per-ring rates since the previous refresh");
  cmd->add_option("--interval", o->interval_s, "Refresh interval of --watch (seconds)")
      ->check(PositiveSeconds(3600))
      ->capture_default_str()
      ->needs(watch_flag);
  return cmd;
}

}  // namespace pitlane::cli
