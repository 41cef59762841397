// What both ends of pitlane's gRPC streams share (the worker's transport, the host's hub):
// control state <-> TelemetryControl / WorkerControlState, Tally <-> the counters messages, the
// bearer-token check, reading PEM files, and what an address to serve on or dial must look like.
#pragma once

#include <grpcpp/server_context.h>
#include <grpcpp/support/status.h>

#include <cstdint>
#include <string>
#include <string_view>

#include "pitlane/accounting.h"
#include "pitlane/control.h"
#include "pitlane/status.h"
#include "admin.pb.h"
#include "telemetry.pb.h"

namespace pitlane::internal {

// Metadata of a stream a pitlane host opens to a worker it dials (Snakepit's direction). The
// host announces itself and its catalog's hash; a pitlane worker answers (initial metadata)
// with its id, pid and catalog hash. A worker whose catalog hash the host announced sends its
// records as they are (TelemetryEvent.pitlane_records); otherwise one event per message.
inline constexpr char kHostMetadata[] = "x-pitlane-host";
inline constexpr char kCatalogHashMetadata[] = "x-pitlane-catalog-hash";
inline constexpr char kWorkerIdMetadata[] = "x-pitlane-worker-id";
inline constexpr char kPidMetadata[] = "x-pitlane-pid";
// Initial metadata of a worker that applies TelemetryControl.pitlane_state (its whole control
// state in one message); a host sends that message only to a worker that sent this.
inline constexpr char kControlStateMetadata[] = "x-pitlane-control-state";

// A control state as the three messages that set it completely: toggle, sampling, filter (an
// empty filter message still replaces both lists).
void ControlToMessages(const ControlState& state, pitlane::v1::TelemetryControl out[3]);

// A control state as the one message that sets all of it (WorkerControlState): what a host
// sends a pitlane worker that accepts it, so the worker never runs half an update.
void ControlToProto(const ControlState& state, pitlane::v1::WorkerControlState* out);
// The message as a state, field for field, not validated (ApplyControlState validates).
ControlState ControlFromProto(const pitlane::v1::WorkerControlState& msg);

// Applies one control message: it replaces the state of its kind (doc/architecture.md, "Control"),
// or all of it (pitlane_state). A message that sets nothing changes nothing (Snakepit's peers
// send and accept such messages). INVALID_ARGUMENT (state unchanged) for a value Validate()
// refuses.
Status ApplyControlMessage(const pitlane::v1::TelemetryControl& msg, ControlState* state);
// Replaces the whole state with `msg`; INVALID_ARGUMENT (state unchanged) as above.
Status ApplyControlState(const pitlane::v1::WorkerControlState& msg, ControlState* state);

// The worker-side counts of a Tally as the WorkerCounters message (`sent` is `published`), and
// back; the host-side counts are not part of the message.
void TallyToProto(const Tally& t, pitlane::v1::WorkerCounters* out);
Tally TallyFromProto(const pitlane::v1::WorkerCounters& c);
// Every count of a Tally as the admin service's AdminWorkerCounters (proto/admin.proto), and
// back (a rejection reason this build does not know is left out).
void TallyToAdmin(const Tally& t, pitlane::v1::AdminWorkerCounters* out);
Tally TallyFromAdmin(const pitlane::v1::AdminWorkerCounters& c);

// OK when `token` is empty or the call carries "authorization: Bearer <token>"; otherwise
// UNAUTHENTICATED saying whether the token was missing or wrong.
grpc::Status CheckBearerToken(const grpc::ServerContext& ctx, const std::string& token);

// The whole file, or NOT_FOUND naming it.
Result<std::string> ReadPemFile(const std::string& path);

// An address to serve on or dial: HOST:PORT, HOST a DNS name, an IPv4 address or a bracketed
// IPv6 address ([::1]), PORT decimal in 1–65535 (0 too for a server: "any free port"). gRPC
// itself takes the port modulo 65536 and defers the rest to the first connect, so a typo
// would serve or dial the wrong place silently. INVALID_ARGUMENT naming `what` (the flag or
// variable) and the address, saying what is wrong.
enum class AddressUse : uint8_t { kServe, kDial };
Status ValidateGrpcAddress(std::string_view address, AddressUse use, std::string_view what);

// A worker a host dials: "ID=HOST:PORT", or "HOST:PORT" (the id is then the address itself).
struct DialSpec {
  std::string id;
  std::string address;
};
// INVALID_ARGUMENT for an empty id or an address ValidateGrpcAddress refuses.
Result<DialSpec> ParseDialSpec(std::string_view spec, std::string_view what);

}  // namespace pitlane::internal
