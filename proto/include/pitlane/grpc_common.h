// What both ends of pitlane's gRPC streams share (the worker's transport, the host's hub):
// control state <-> TelemetryControl, the bearer-token check, reading PEM files.
#pragma once

#include <grpcpp/server_context.h>
#include <grpcpp/support/status.h>

#include <string>

#include "pitlane/accounting.h"
#include "pitlane/control.h"
#include "pitlane/status.h"
#include "telemetry.pb.h"

namespace pitlane::internal {

// A control state as the three messages that set it completely: toggle, sampling, filter (an
// empty filter message still replaces both lists).
void ControlToMessages(const ControlState& state, pitlane::v1::TelemetryControl out[3]);

// Applies one control message: it replaces the state of its kind (doc/architecture.md, "Control").
// INVALID_ARGUMENT (state unchanged) for a message that sets nothing or a value Validate()
// refuses.
Status ApplyControlMessage(const pitlane::v1::TelemetryControl& msg, ControlState* state);

// The worker-side counts of a Tally as the WorkerCounters message (`sent` is `published`), and
// back; the host-side counts are not part of the message.
void TallyToProto(const Tally& t, pitlane::v1::WorkerCounters* out);
Tally TallyFromProto(const pitlane::v1::WorkerCounters& c);

// OK when `token` is empty or the call carries "authorization: Bearer <token>"; otherwise
// UNAUTHENTICATED saying whether the token was missing or wrong.
grpc::Status CheckBearerToken(const grpc::ServerContext& ctx, const std::string& token);

// The whole file, or NOT_FOUND naming it.
Result<std::string> ReadPemFile(const std::string& path);

}  // namespace pitlane::internal
