// The subcommands of the `pitlane` executable and the helpers they share.
//
// Each command's file registers its flags (CLI11) into its option struct below (Add*Command);
// main.cc parses the command line and calls that command's Run* function, which returns the
// process exit code. Errors a user must read go to stderr
// as one line, "pitlane <command>: <what>", naming the bad value.
#pragma once

#include <chrono>
#include <csignal>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "pitlane/exporter.h"
#include "pitlane/host.h"
#include "pitlane/prometheus.h"
#include "pitlane/status.h"

namespace CLI {
class App;
class Validator;
}

namespace pitlane::cli {

struct DemoOptions {
  std::string ns;
  int workers = 4;
  int remote = 0;  // extra workers that stream over loopback gRPC
  double duration_s = 8;
  int64_t rate = 20000;  // events per second per worker
  std::string metrics;   // "" → none; else serve Prometheus /metrics on ADDR (dashboard specs)
};
struct DemoWorkerOptions {
  std::string ns;
  std::string id;
  std::string grpc_target;  // set: a remote worker streaming to the host over gRPC
  double duration_s = 8;
  int64_t rate = 20000;
};
// The exporter flags of `pitlane host` (--jsonl-file, --statsd*, --metrics, --metric*,
// --departed-retention, --otlp*).
struct HostExporterOptions {
  std::string jsonl_file;  // "" → none; else append JSON lines to this file
  std::string statsd;      // "" → none; else HOST:PORT
  std::string statsd_prefix = "pitlane";
  std::vector<std::string> statsd_tags;   // metadata keys sent as DogStatsD tags
  std::string metrics;                    // "" → none; else serve Prometheus /metrics on ADDR
  std::vector<std::string> metric_specs;  // event metrics, e.g. summary(...duration, tags: [...])
  std::string metric_naming = "conventional";  // or "snakepit" (PrometheusOptions::naming)
  double departed_retention_s = 300;           // HostOptions::departed_retention
  // OpenTelemetry (README "OpenTelemetry"): empty values take the OTEL_EXPORTER_OTLP_* variables.
  bool otlp = false;
  std::string otlp_endpoint;     // http://HOST:4318 | grpc://HOST:4317
  std::string otlp_protocol;     // http/protobuf | grpc
  std::string otlp_compression;  // gzip | none
  bool otlp_logs = false;
};
struct HostCmdOptions {
  std::string ns;
  bool jsonl = false;
  bool summary = false;  // --summary: what runs without --jsonl anyway; said explicitly
  double interval_s = 2;
  bool busy_poll = false;
  int64_t spin_us = HostOptions{}.spin.count();  // --spin: idle spinning before sleeping (µs)
  double duration_s = 0;  // 0: until SIGINT/SIGTERM
  // gRPC: remote workers (HostOptions::grpc_*).
  std::string grpc_listen;
  std::vector<std::string> grpc_dial;
  std::string grpc_token;
  std::string grpc_token_file;  // the token, read from a file (not visible in ps)
  std::string grpc_tls_cert, grpc_tls_key;
  std::string catalog_file;  // "" → the compiled-in catalog (Catalog::LoadFile otherwise)
  std::string admin;      // admin service address; "" → DefaultAdminAddress(ns), "off" → none
  bool no_admin = false;  // --no-admin: serve no admin service
  HostExporterOptions exporters;
};
struct StatOptions {
  std::string ns;
  std::string admin;  // the host's admin address; empty: DefaultAdminAddress(ns)
  bool json = false;
  bool watch = false;  // refresh every `interval_s` until SIGINT/SIGTERM, with rates
  double interval_s = 1;
};
struct CleanupOptions {
  std::string ns;
  bool all = false;      // every namespace found in /dev/shm
  bool dry_run = false;  // only say what would be removed
};
struct EmitOptions {
  std::string ns;
  std::string id;
  std::string event;
  std::vector<std::string> measurements;  // key=value
  std::vector<std::string> metadata;      // key=value
  std::string correlation_id;
};

struct CatalogOptions {
  std::string file;  // "" → the compiled-in catalog
  bool json = false;
};

// Each command registers its flags on `app` (Add*Command: returns the subcommand, which is set
// when the command line chose it) and runs with them (Run*: returns the exit code).
CLI::App* AddDemoCommand(CLI::App* app, DemoOptions* o);
CLI::App* AddDemoWorkerCommand(CLI::App* app, DemoWorkerOptions* o);
CLI::App* AddHostCommand(CLI::App* app, HostCmdOptions* o);
CLI::App* AddStatCommand(CLI::App* app, StatOptions* o);
CLI::App* AddCleanupCommand(CLI::App* app, CleanupOptions* o);
CLI::App* AddEmitCommand(CLI::App* app, EmitOptions* o);
CLI::App* AddCatalogCommand(CLI::App* app, CatalogOptions* o);
int RunDemo(const DemoOptions& o);
int RunDemoWorker(const DemoWorkerOptions& o);
int RunHost(const HostCmdOptions& o);
int RunStat(const StatOptions& o);
int RunCleanup(const CleanupOptions& o);
int RunEmit(const EmitOptions& o);
int RunCatalog(const CatalogOptions& o);

// `pitlane ctl` (ctl_cmd.cc): control a running host's workers through its admin service.
enum class CtlAction { kNone, kToggle, kSampling, kFilter, kSet, kWorkers, kShow };
struct CtlOptions {
  std::string ns;     // the host of this namespace, at its default admin socket
  std::string admin;  // or this admin address (unix:PATH or HOST:PORT)
  CtlAction action = CtlAction::kNone;
  std::string worker;                    // a worker id, or "*"
  std::string state;                     // toggle, set: "on" / "off"
  std::string rate;                      // sampling, set: the rate as typed (the host checks it)
  std::vector<std::string> patterns;     // sampling, set: sampling patterns
  std::vector<std::string> allow, deny;  // filter, set: filter lists
  bool json = false;
};
// Registers `ctl` and its actions on `app`; returns the `ctl` subcommand.
CLI::App* AddCtlCommand(CLI::App* app, CtlOptions* o);
int RunCtl(const CtlOptions& o);

// ── a host and its /metrics, as `pitlane host` and `pitlane demo` start them ──────────────────

// Host::Start, its failure worded for an error line ("cannot start a host for namespace ...")
// and a runtime failure (exit 1) whatever its code: the flags were checked before (util.cc).
Result<std::unique_ptr<Host>> StartHost(const HostOptions& options);
// The --metric specs of `x`, parsed; kInvalidArgument for a bad one, or for specs with neither
// --metrics nor --otlp to export them (host_cmd.cc).
Result<std::vector<MetricSpec>> ParseMetricSpecs(const HostExporterOptions& x);
// Serves Prometheus /metrics for `host` on x.metrics with x.metric_naming and `specs`; `extra`,
// when set, is appended to every scrape (host_cmd.cc).
Result<std::unique_ptr<PrometheusExporter>> StartMetrics(Host& host, const HostExporterOptions& x,
                                                         std::vector<MetricSpec> specs,
                                                         std::function<std::string()> extra = {});
// "127.0.0.1" of "127.0.0.1:9464", "[::1]" of "[::1]:0": a listen address without its port.
std::string HostPart(const std::string& address);
// "http://HOST:PORT/metrics" of a /metrics served on `listen` at the bound `port`.
std::string MetricsUrl(const std::string& listen, uint16_t port);

// ── shared helpers (util.cc) ──────────────────────────────────────────────────────────────────

// Prints "pitlane <cmd>: <message>" to stderr.
void Error(std::string_view cmd, std::string_view message);

// Blocks SIGINT, SIGTERM and SIGHUP in the calling thread (call before creating threads, so
// every thread inherits the mask). The main thread then takes them with WaitForSignal: SIGHUP
// reopens `pitlane host`'s --jsonl-file and stops every other command, like SIGINT and SIGTERM.
void BlockStopSignals();
// Waits up to `seconds` for SIGINT/SIGTERM/SIGHUP (blocked by BlockStopSignals). Returns the
// signal number, or 0 when the time passed.
int WaitForSignal(double seconds);

// Opens /dev/null on each of descriptors 0, 1 and 2 that is closed (a command started with
// `>&-`, or by a supervisor that closed them). Otherwise the first descriptors the command opens
// take their place (the gRPC library's event fds, the admin socket), and writes meant for
// stdout would go to them. Output to a stream closed at start is then discarded.
void OccupyClosedStdStreams();

// stdout, for every command (main.cc calls WatchStdout first and FinishStdout last). SIGPIPE is
// ignored, so a reader that left (`| head -1`) is an EPIPE write error rather than death by
// signal, and stdout becomes a stream that keeps the errno of its first failed write.
void WatchStdout();
// Flushes stdout; 0 while every write to it succeeded, else the errno of the first that failed
// (EPIPE: its reader left; ENOSPC, EIO, ...: it cannot take what is written). Sticky: a stdout
// that failed stays failed. A command that prints in a loop asks this (nothing else ends it
// with SIGPIPE ignored) and stops.
int StdoutError();
// The exit code of a command that returned `code`, after flushing stdout: `code` when every
// write succeeded or the reader left (a normal end, said nothing); otherwise "PROGRAM: cannot
// write to stdout: <errno text>" on stderr and 1 (or `code` if that already says failure).
int FinishStdout(const std::string& program, int code);

// When an admin call (`pitlane ctl`, `pitlane stat`'s exporter counts) started now gives up:
// kAdminCallTimeoutSeconds from now.
std::chrono::system_clock::time_point AdminDeadline();
// "SIGINT", "SIGTERM", "SIGHUP".
const char* SignalName(int sig);

// "12.3k", "4.56M", "1.20G" (... "18.45E"): compact counts for the live tables people read
// (scripts read --json, which has exact integers).
std::string Compact(uint64_t n);
// A positive, finite number of seconds, at most `max`: "\"0\" is not a number of seconds in
// (0, 3600]".
CLI::Validator PositiveSeconds(double max);
// The same from 0 on: "\"-5\" is not a number of seconds in [0, 31536000]".
CLI::Validator NonNegativeSeconds(double max);
// A decimal integer in [min, max], `unit` naming what it counts ("" for a plain number):
// "\"abc\" is not an integer number of microseconds in [0, 1000000]". CLI11's Range says
// "Value abc not in range 0 to 1000000" of what is no number at all.
CLI::Validator IntegerIn(int64_t min, int64_t max, const std::string& unit = "");
// --admin of a client (`ctl`, `stat`): unix:PATH, or HOST:PORT checked as every address flag
// (internal::ValidateGrpcAddress, to dial: port 1-65535); anything else is a usage error, not
// an address nothing answers at.
CLI::Validator AdminAddress();
// --ns: an explicit empty name is a mistake (a shell variable that was not set), not a request
// for the default: a usage error.
CLI::Validator NamespaceName();
// The exit code for a failed Status: 2 when the command line was wrong (kInvalidArgument), 1
// when it was right and the system refused (cannot open, bind, resolve, ...); 0 for ok.
int ExitCodeOf(const Status& s);
// Prints the error line of failed `s` for `cmd` (Error) and returns its exit code (ExitCodeOf).
int Fail(std::string_view cmd, const Status& s);
// The contents of a token file without its trailing newline; kInvalidArgument when empty,
// kUnavailable when unreadable.
Result<std::string> ReadTokenFile(const std::string& path);

// The namespace to use: `ns`, else PITLANE_NAMESPACE, else "default"; validated.
Result<std::string> ResolveNamespace(const std::string& ns);

// ── tables (table.cc) ─────────────────────────────────────────────────────────────────────────

// One column of a fixed-width text table.
struct Column {
  const char* header;
  int width = 0;      // cells are padded to it; 0: not padded (a last column)
  bool left = false;  // names left-aligned, numbers right-aligned
  int gap = 1;        // spaces before the column
};
// A table whose header and rows are laid out by one list of columns, so they cannot drift
// apart. Built from parts (a command's own columns, LawColumns(), ...), filled the same way.
class TextTable {
 public:
  TextTable(std::initializer_list<std::vector<Column>> parts);
  std::string Header() const;
  std::string Row(std::initializer_list<std::vector<std::string>> parts) const;

 private:
  std::vector<Column> columns_;
};
// The conservation law's counts in its order (emitted = suppressed + dropped + published,
// published = delivered + rejected): the same columns in every per-worker table that judges the
// law (`pitlane host`'s summary, `pitlane demo`'s), so a row can be checked by eye.
std::vector<Column> LawColumns();
std::vector<std::string> LawCells(const Tally& t);
// The non-zero rejected counts by reason: "unknown_event 3, bad_measurement_key 2"; "" if none.
std::string RejectedByReason(const Tally& t);
// One exporter's report on one line: "otlp → http/protobuf http://…: spans_exported 5, …". The
// host's status line and `pitlane stat` both print it so.
std::string DescribeReport(const ExporterReport& r);

}  // namespace pitlane::cli
