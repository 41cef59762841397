// `pitlane emit`: emits one event from the shell through a short-lived Worker.
#include <CLI/CLI.hpp>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <string>
#include <vector>

#include "commands.h"
#include "pitlane/correlation.h"
#include "pitlane/worker.h"

namespace pitlane::cli {
namespace {

// int64 if the whole text is one, else a finite double, else the string itself.
Value ParseValue(const std::string& text) {
  int64_t i = 0;
  const char* end = text.data() + text.size();
  auto [p, ec] = std::from_chars(text.data(), end, i);
  if (ec == std::errc() && p == end && !text.empty()) return Value(i);
  if (!text.empty()) {
    char* stop = nullptr;
    const double d = std::strtod(text.c_str(), &stop);
    if (stop == text.c_str() + text.size() && std::isfinite(d) &&
        text.find_first_of("xXpP") == std::string::npos) {  // no hex floats, plain decimals
      return Value(d);
    }
  }
  return Value(std::string_view(text));
}

std::string Describe(const Value& v) {
  switch (v.kind) {
    case Value::Kind::kInt:
      return std::to_string(v.i) + " (int64)";
    case Value::Kind::kDouble: {
      char buf[64];
      std::snprintf(buf, sizeof(buf), "%.17g (double)", v.d);
      return buf;
    }
    case Value::Kind::kString:
      return "\"" + std::string(v.s) + "\" (string)";
  }
  return "?";
}

// The measurements and metadata of the command line, as views into strings it owns.
struct Fields {
  std::deque<std::string> store;  // deque: stable addresses for the views
  std::vector<Measurement> measurements;
  std::vector<Metadata> metadata;

  // "key=value" → views of key and value in `store`. Empty key or no '=' is an error naming
  // the argument and what it was meant to be.
  Result<std::pair<std::string_view, std::string_view>> Split(const std::string& arg,
                                                              const char* what) {
    const size_t eq = arg.find('=');
    if (eq == std::string::npos || eq == 0) {
      return InvalidArgument(std::string(what) + " \"" + arg + "\" is not key=value");
    }
    const std::string& key = store.emplace_back(arg.substr(0, eq));
    const std::string& value = store.emplace_back(arg.substr(eq + 1));
    return std::pair<std::string_view, std::string_view>(key, value);
  }
};

Status ParseFields(const EmitOptions& o, Fields* f) {
  for (const std::string& arg : o.measurements) {
    auto kv = f->Split(arg, "measurement");
    if (!kv.ok()) return kv.status();
    f->measurements.emplace_back(kv->first, ParseValue(std::string(kv->second)));
  }
  for (const std::string& arg : o.metadata) {
    auto kv = f->Split(arg, "metadata");
    if (!kv.ok()) return kv.status();
    f->metadata.emplace_back(kv->first, kv->second);
  }
  return Status::Ok();
}

// Names the host would reject are worth a note before the emit, not an error: the event is
// still published and counted.
void NoteNamesOutsideTheCatalog(Worker& w, EventHandle ev, const EmitOptions& o,
                                const Fields& f) {
  if (ev.id == 0) {
    std::fprintf(stderr,
                 "pitlane emit: note: \"%s\" is not in the catalog; the host will reject it "
                 "(unknown_event)\n",
                 o.event.c_str());
  }
  for (const Measurement& m : f.measurements) {
    if (w.Measure(m.key).id == 0) {
      std::fprintf(stderr,
                   "pitlane emit: note: measurement key \"%.*s\" is not in the catalog; the host "
                   "will reject the whole event (bad_measurement_key)\n",
                   static_cast<int>(m.key.size()), m.key.data());
    }
  }
}

// Prints the outcome of the emit and returns the exit code.
int Report(const Worker& w, const EmitOptions& o, const Fields& f, EmitResult r, bool attached) {
  // Over gRPC an event is queued ("ok") whether or not a host is there to take it: without a
  // connected host it would be lost when this process exits, so that is no success.
  const bool published = r == EmitResult::kOk || r == EmitResult::kOkTruncated;
  const bool undeliverable = published && !attached;
  std::printf("%s: %s (worker %s, namespace \"%s\", %s)\n", o.event.c_str(),
              undeliverable ? "not_delivered" : std::string(EmitResultName(r)).c_str(),
              w.id().c_str(), w.ns().c_str(),
              std::string(WorkerTransportName(w.transport())).c_str());
  for (const Measurement& m : f.measurements) {
    std::printf("  measurement %.*s = %s\n", static_cast<int>(m.key.size()), m.key.data(),
                Describe(m.value).c_str());
  }
  if (undeliverable) {
    Error("emit", "no host connected over gRPC within 1 s (PITLANE_GRPC_TARGET / "
                  "PITLANE_GRPC_LISTEN); the event was not delivered");
    return 1;
  }
  if (published) return 0;
  if (r == EmitResult::kDroppedNoRing || r == EmitResult::kBuffered) {
    // Not attached: NOT_FOUND is a namespace without a host. Anything else (its registry
    // refused to this uid, of another layout version, without a free slot) is a namespace this
    // process could not join, most often while its host runs: say why (the worker library's
    // status), not that there is no host.
    const Status why = w.attach_status();
    if (attached) {
      Error("emit", "the worker has no ring (ring cap reached)");
    } else if (!why.ok() && why.code() != StatusCode::kNotFound) {
      Error("emit", why.message() + "; the event was not delivered");
    } else {
      Error("emit", "no host is running for namespace \"" + w.ns() + "\"");
    }
  } else {
    Error("emit", "event not published: " + std::string(EmitResultName(r)));
  }
  return 1;
}

}  // namespace

int RunEmit(const EmitOptions& o) {
  auto ns = ResolveNamespace(o.ns);
  if (!ns.ok()) return Fail("emit", ns.status());
  if (o.event.empty()) {
    Error("emit", "the event name is empty");
    return 2;
  }
  Fields fields;
  if (Status s = ParseFields(o, &fields); !s.ok()) {
    Error("emit", s.message());
    return 2;
  }
  WorkerOptions wo;
  wo.ns = ns.value();
  wo.worker_id = o.id;
  wo.attach_wait = std::chrono::milliseconds(0);  // WaitAttached below bounds the wait
  auto started = Worker::Start(wo);
  if (!started.ok()) {
    Error("emit", started.status().ToString());
    return ExitCodeOf(started.status());  // a bad --id or ring size is a usage error
  }
  Worker& w = **started;
  const bool attached = w.WaitAttached(std::chrono::milliseconds(1000));
  const EventHandle ev = w.Event(o.event);
  NoteNamesOutsideTheCatalog(w, ev, o, fields);
  const EmitResult r = w.Emit(ev, fields.measurements, fields.metadata, o.correlation_id);
  return Report(w, o, fields, r, attached);
}

CLI::App* AddEmitCommand(CLI::App* app, EmitOptions* o) {
  CLI::App* cmd = app->add_subcommand("emit", "Emit one event from the shell");
  cmd->add_option("--ns", o->ns, "Namespace (default: $PITLANE_NAMESPACE or \"default\")")
      ->check(NamespaceName());
  cmd->add_option("--id", o->id, "Worker id (default: $PITLANE_WORKER_ID or <hostname>-<pid>)");
  cmd->add_option("EVENT", o->event, "Event wire name, e.g. python.call.start")->required();
  cmd->add_option("-m,--measurement", o->measurements,
                  "Measurement key=value (int64, else double, else string); repeatable")
      ->allow_extra_args(false);
  cmd->add_option("-d,--metadata", o->metadata, "Metadata key=value; repeatable")
      ->allow_extra_args(false);
  cmd->add_option("--correlation-id", o->correlation_id, "Correlation id (<= 128 bytes)")
      ->check(CLI::Validator(
          [](std::string& in) -> std::string {
            if (in.size() > kMaxCorrelationIdBytes) {
              return "correlation id of " + std::to_string(in.size()) + " bytes is longer than " +
                     std::to_string(kMaxCorrelationIdBytes) + " bytes";
            }
            return {};
          },
          "ID", "CorrelationId"));
  return cmd;
}

}  // namespace pitlane::cli
