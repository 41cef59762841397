// `pitlane ctl`: runtime control of a running host's workers through its admin gRPC service
// (host/include/pitlane/admin.h, proto/admin.proto).
//
//   pitlane ctl [--ns NS | --admin ADDR] toggle WORKER on|off
//   pitlane ctl [--ns NS | --admin ADDR] sampling WORKER RATE [PATTERN...]
//   pitlane ctl [--ns NS | --admin ADDR] filter WORKER [--allow P]... [--deny P]...
//   pitlane ctl [--ns NS | --admin ADDR] set WORKER on|off [--sampling RATE [--pattern P]...]
//                                            [--allow P]... [--deny P]...
//   pitlane ctl [--ns NS | --admin ADDR] workers [--json]
//   pitlane ctl [--ns NS | --admin ADDR] show WORKER [--json]
//
// WORKER is a worker id, or "*" for every worker the host knows. The host is reached at
// --admin, else at the namespace's default socket (DefaultAdminAddress). Every call has a
// kAdminCallTimeoutSeconds deadline.
//
// `set` replaces the whole state in one update (the worker never runs a mix of old and new);
// what it does not give takes its default: sampling 1 of every event, no filter.
//
// Exit codes: 0 done; 1 the host refused (its message is printed: unknown worker, bad value);
// 2 usage (a malformed --admin address too); 3 no host reachable at the address (or it did not
// answer in time).
#include <grpcpp/grpcpp.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "admin.grpc.pb.h"
#include "commands.h"
#include "pitlane/admin.h"
#include "pitlane/grpc_common.h"
#include "pitlane/shm_inspect.h"
#include "pitlane/shm_layout.h"

namespace pitlane::cli {
namespace {

namespace v1 = ::pitlane::v1;
using json = nlohmann::ordered_json;

constexpr int kExitRefused = 1;
constexpr int kExitUsage = 2;
constexpr int kExitUnreachable = 3;

// Where the host is and how to tell the user to start one.
struct Target {
  std::string address;
  std::string start_hint;  // the `pitlane host ...` command that would serve `address`
  std::string ns;          // set when `address` is the namespace's default socket (--ns)
};

// Why nothing answers at `t`, and what to do. A namespace's host that runs (its registry says
// so) but does not serve the default socket was started with --admin elsewhere (a TCP
// HOST:PORT, which `ctl --ns` cannot guess) or with --no-admin: starting a host is then the
// wrong advice.
std::string Unreachable(const Target& t) {
  const std::string no_host =
      "no host is serving " + t.address + "; is `" + t.start_hint + "` running?";
  if (t.ns.empty()) return no_host;
  const std::string tcp =
      "started with `--admin HOST:PORT` is reached with `pitlane ctl --admin HOST:PORT`";
  const shm::InspectedRegistry reg = shm::InspectRegistry(t.ns, /*read_rings=*/false);
  if (reg.error.empty() && reg.host_pid != 0 && reg.host_alive) {
    return "the host of namespace \"" + t.ns + "\" (pid " + std::to_string(reg.host_pid) +
           ") is running but serves no admin service at " + t.address + ": a host " + tcp +
           " (the address it printed at start), one started with --no-admin serves none";
  }
  return no_host + " (a host " + tcp + ")";
}

std::string FormatRate(double r) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%g", r);
  return buf;
}

// "enabled, sampling 0.5 of python.memory.*, allow all, deny python.cpu.*"
std::string Describe(const v1::WorkerControlState& c) {
  return pitlane::Describe(internal::ControlFromProto(c));
}

json ControlJson(const v1::WorkerControlState& c) {
  json j;
  j["enabled"] = c.enabled();
  j["sampling_rate"] = c.sampling_rate();
  j["sampling_patterns"] =
      std::vector<std::string>(c.sampling_patterns().begin(), c.sampling_patterns().end());
  j["allow"] = std::vector<std::string>(c.allow().begin(), c.allow().end());
  j["deny"] = std::vector<std::string>(c.deny().begin(), c.deny().end());
  return j;
}

json CountersJson(const v1::AdminWorkerCounters& c) {
  json j;
  j["emitted"] = c.emitted();
  j["published"] = c.published();
  j["delivered"] = c.delivered();
  j["dropped_full"] = c.dropped_full();
  j["dropped_too_large"] = c.dropped_too_large();
  j["dropped_in_flight"] = c.dropped_in_flight();
  j["dropped_no_ring"] = c.dropped_no_ring();
  j["suppressed_disabled"] = c.suppressed_disabled();
  j["suppressed_sampled"] = c.suppressed_sampled();
  j["suppressed_filtered"] = c.suppressed_filtered();
  j["suppressed_no_ring"] = c.suppressed_no_ring();
  j["rejected"] = c.rejected();
  const Tally t = internal::TallyFromAdmin(c);
  json reasons = json::object();
  for (uint32_t i = 0; i < shm::kRejectReasonCount; ++i) {
    reasons[shm::RejectReasonName(i)] = t.rejected[i];
  }
  j["rejected_by_reason"] = std::move(reasons);
  j["truncated"] = c.truncated();
  return j;
}

// Runs one call with the admin deadline; prints why it failed and returns the exit code.
template <typename Call>
int Invoke(const Target& t, Call call) {
  grpc::ClientContext ctx;
  ctx.set_deadline(AdminDeadline());
  const grpc::Status s = call(&ctx);
  if (s.ok()) return 0;
  switch (s.error_code()) {
    case grpc::StatusCode::UNAVAILABLE:
      Error("ctl", Unreachable(t));
      return kExitUnreachable;
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      Error("ctl", "the host serving " + t.address + " did not answer within " +
                       FormatRate(kAdminCallTimeoutSeconds) + " s");
      return kExitUnreachable;
    case grpc::StatusCode::UNIMPLEMENTED:
      Error("ctl",
            t.address + " does not serve pitlane's admin service (" + s.error_message() + ")");
      return kExitUnreachable;
    default:
      Error("ctl", s.error_message());
      return kExitRefused;
  }
}

int PrintControls(const v1::AdminControlReply& reply, bool as_json) {
  if (as_json) {
    json workers = json::array();
    for (const v1::AdminWorkerControl& w : reply.workers()) {
      json j;
      j["worker_id"] = w.worker_id();
      j["control"] = ControlJson(w.control());
      workers.push_back(std::move(j));
    }
    json doc;
    doc["workers"] = std::move(workers);
    std::printf("%s\n", doc.dump().c_str());
    return 0;
  }
  for (const v1::AdminWorkerControl& w : reply.workers()) {
    std::printf("%s: %s\n", w.worker_id().c_str(), Describe(w.control()).c_str());
  }
  return 0;
}

int PrintWorkers(const v1::ListWorkersReply& reply, bool as_json) {
  if (as_json) {
    json workers = json::array();
    for (const v1::AdminWorker& w : reply.workers()) {
      json j;
      j["worker_id"] = w.worker_id();
      j["pid"] = w.pid();
      j["transport"] = w.transport();
      j["alive"] = w.alive();
      j["rings"] = w.rings();
      j["control"] = ControlJson(w.control());
      j["counters"] = CountersJson(w.counters());
      workers.push_back(std::move(j));
    }
    json doc;
    doc["namespace"] = reply.namespace_();
    doc["workers"] = std::move(workers);
    std::printf("%s\n", doc.dump().c_str());
    return 0;
  }
  if (reply.workers().empty()) {
    std::printf("namespace \"%s\": no worker has attached\n", reply.namespace_().c_str());
    return 0;
  }
  std::printf("namespace \"%s\": %d worker%s\n", reply.namespace_().c_str(), reply.workers_size(),
              reply.workers_size() == 1 ? "" : "s");
  const TextTable table = {{{"worker", 20, /*left=*/true, /*gap=*/0},
                            {"pid", 8},
                            {"transport", 9, /*left=*/true},
                            {"alive", 5},
                            {"rings", 5}},
                           LawColumns(),
                           {{"control", 0, /*left=*/true, /*gap=*/2}}};
  std::printf("%s\n", table.Header().c_str());
  for (const v1::AdminWorker& w : reply.workers()) {
    const std::string row = table.Row({{w.worker_id(), std::to_string(w.pid()), w.transport(),
                                        w.alive() ? "yes" : "no", std::to_string(w.rings())},
                                       LawCells(internal::TallyFromAdmin(w.counters())),
                                       {Describe(w.control())}});
    std::printf("%s\n", row.c_str());
  }
  return 0;
}

// A number as typed ("0.25", "1", "nan"); range checks are the host's.
bool ParseRate(const std::string& text, double* out) {
  if (text.empty()) return false;
  char* end = nullptr;
  *out = std::strtod(text.c_str(), &end);
  return end == text.c_str() + text.size();
}

}  // namespace

CLI::App* AddCtlCommand(CLI::App* app, CtlOptions* o) {
  CLI::App* ctl = app->add_subcommand(
      "ctl", "Control a running host's workers (toggle, sampling, filter, set) and list them");
  ctl->require_subcommand(1);
  CLI::Option* ns = ctl->add_option(
      "--ns", o->ns,
      "Namespace of the host (default: $PITLANE_NAMESPACE or \"default\"); its admin socket is " +
          DefaultAdminAddress("<ns>"))->check(NamespaceName());
  ctl->add_option("--admin", o->admin, "The host's admin address: unix:PATH or HOST:PORT")
      ->type_name("ADDR")
      ->check(AdminAddress())
      ->excludes(ns);

  const auto add = [&](const char* name, const char* help, CtlAction action) {
    CLI::App* sub = ctl->add_subcommand(name, help);
    sub->fallthrough();  // --ns / --admin may come after the action too
    sub->parse_complete_callback([o, action] { o->action = action; });
    return sub;
  };
  const char* worker_help = "Worker id, or \"*\" for every worker the host knows";

  CLI::App* toggle = add("toggle", "Turn a worker's telemetry on or off", CtlAction::kToggle);
  toggle->add_option("WORKER", o->worker, worker_help)->required();
  toggle->add_option("STATE", o->state, "on or off")
      ->required()
      ->check(CLI::IsMember({"on", "off"}));

  CLI::App* sampling =
      add("sampling",
          "Replace a worker's sampling: keep RATE (0..1) of the events matching the patterns "
          "(no pattern: every event)",
          CtlAction::kSampling);
  sampling->add_option("WORKER", o->worker, worker_help)->required();
  sampling->add_option("RATE", o->rate, "Fraction of events kept, in [0, 1]")->required();
  sampling->add_option("PATTERN", o->patterns, "Event glob, e.g. 'python.memory.*'");

  CLI::App* filter = add("filter",
                         "Replace a worker's allow and deny lists (deny wins; neither list: no "
                         "filter)",
                         CtlAction::kFilter);
  filter->add_option("WORKER", o->worker, worker_help)->required();
  filter->add_option("--allow", o->allow, "Event glob to allow (repeatable)")
      ->allow_extra_args(false)
      ->type_name("PATTERN");
  filter->add_option("--deny", o->deny, "Event glob to deny (repeatable)")
      ->allow_extra_args(false)
      ->type_name("PATTERN");

  CLI::App* set = add("set",
                       "Replace a worker's whole control state in one update; what is not given "
                       "takes its default (sampling 1 of every event, no filter)",
                       CtlAction::kSet);
  set->add_option("WORKER", o->worker, worker_help)->required();
  set->add_option("STATE", o->state, "on or off")->required()->check(CLI::IsMember({"on", "off"}));
  set->add_option("--sampling", o->rate, "Fraction of events kept, in [0, 1] (default 1)")
      ->type_name("RATE");
  set->add_option("--pattern", o->patterns,
                  "Event glob the sampling applies to (repeatable; none: every event)")
      ->allow_extra_args(false)
      ->type_name("PATTERN");
  set->add_option("--allow", o->allow, "Event glob to allow (repeatable)")
      ->allow_extra_args(false)
      ->type_name("PATTERN");
  set->add_option("--deny", o->deny, "Event glob to deny (repeatable)")
      ->allow_extra_args(false)
      ->type_name("PATTERN");

  CLI::App* workers = add("workers",
                          "List the host's workers: pid, transport, alive, rings, control "
                          "state and event counters",
                          CtlAction::kWorkers);
  workers->add_flag("--json", o->json, "Print one JSON document");

  CLI::App* show = add("show", "Show a worker's control state", CtlAction::kShow);
  show->add_option("WORKER", o->worker, worker_help)->required();
  show->add_flag("--json", o->json, "Print one JSON document");
  return ctl;
}

int RunCtl(const CtlOptions& o) {
  Target t;
  if (!o.admin.empty()) {  // checked by AdminAddress() at parse time
    t.address = o.admin;
    t.start_hint = "pitlane host --admin " + o.admin;
  } else {
    Result<std::string> ns = ResolveNamespace(o.ns);
    if (!ns.ok()) {
      Error("ctl", ns.status().message());
      return kExitUsage;
    }
    t.address = DefaultAdminAddress(ns.value());
    t.start_hint = "pitlane host --ns " + ns.value();
    t.ns = ns.value();
  }
  double rate = 1;  // `set` without --sampling: every event
  const bool rate_given = o.action == CtlAction::kSampling || !o.rate.empty();
  if (rate_given && !ParseRate(o.rate, &rate)) {
    Error("ctl", "sampling rate \"" + o.rate + "\" is not a number");
    return kExitUsage;
  }

  if (Status mine = CheckAdminSocketOwner(t.address); !mine.ok()) {
    Error("ctl", mine.message());
    return kExitUnreachable;
  }
  // The generated gRPC client of the admin service.
  const auto admin =
      v1::Admin::NewStub(grpc::CreateChannel(t.address, grpc::InsecureChannelCredentials()));
  v1::AdminControlReply control;
  int rc = 0;
  switch (o.action) {
    case CtlAction::kToggle: {
      v1::SetToggleRequest req;
      req.set_worker_id(o.worker);
      req.set_enabled(o.state == "on");
      rc = Invoke(t, [&](grpc::ClientContext* c) { return admin->SetToggle(c, req, &control); });
      break;
    }
    case CtlAction::kSampling: {
      v1::SetSamplingRequest req;
      req.set_worker_id(o.worker);
      req.set_sampling_rate(rate);
      for (const std::string& p : o.patterns) req.add_event_patterns(p);
      rc = Invoke(t, [&](grpc::ClientContext* c) { return admin->SetSampling(c, req, &control); });
      break;
    }
    case CtlAction::kFilter: {
      v1::SetFilterRequest req;
      req.set_worker_id(o.worker);
      for (const std::string& p : o.allow) req.add_allow(p);
      for (const std::string& p : o.deny) req.add_deny(p);
      rc = Invoke(t, [&](grpc::ClientContext* c) { return admin->SetFilter(c, req, &control); });
      break;
    }
    case CtlAction::kSet: {
      ControlState state;
      state.enabled = o.state == "on";
      state.sampling_rate = rate;
      state.sampling_patterns = o.patterns;
      state.allow = o.allow;
      state.deny = o.deny;
      v1::SetControlRequest req;
      req.set_worker_id(o.worker);
      internal::ControlToProto(state, req.mutable_control());
      rc = Invoke(t, [&](grpc::ClientContext* c) { return admin->SetControl(c, req, &control); });
      break;
    }
    case CtlAction::kShow: {
      v1::GetControlRequest req;
      req.set_worker_id(o.worker);
      rc = Invoke(t, [&](grpc::ClientContext* c) { return admin->GetControl(c, req, &control); });
      break;
    }
    case CtlAction::kWorkers: {
      v1::ListWorkersReply list;
      rc = Invoke(t, [&](grpc::ClientContext* c) {
        return admin->ListWorkers(c, v1::ListWorkersRequest(), &list);
      });
      return rc != 0 ? rc : PrintWorkers(list, o.json);
    }
    case CtlAction::kNone:
      Error("ctl", "no action given (toggle, sampling, filter, set, workers or show)");
      return kExitUsage;
  }
  return rc != 0 ? rc : PrintControls(control, o.json);
}

}  // namespace pitlane::cli
