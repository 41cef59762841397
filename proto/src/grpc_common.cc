#include "pitlane/grpc_common.h"

#include <fstream>
#include <sstream>
#include <string_view>

namespace pitlane::internal {

namespace pb = ::pitlane::v1;

void ControlToMessages(const ControlState& s, pb::TelemetryControl out[3]) {
  out[0].mutable_toggle()->set_enabled(s.enabled);
  pb::TelemetrySamplingUpdate* sampling = out[1].mutable_sampling();
  sampling->set_sampling_rate(s.sampling_rate);
  for (const std::string& p : s.sampling_patterns) sampling->add_event_patterns(p);
  pb::TelemetryEventFilter* filter = out[2].mutable_filter();  // empty lists: allow everything
  for (const std::string& p : s.allow) filter->add_allow(p);
  for (const std::string& p : s.deny) filter->add_deny(p);
}

Status ApplyControlMessage(const pb::TelemetryControl& msg, ControlState* state) {
  ControlState next = *state;
  switch (msg.control_case()) {
    case pb::TelemetryControl::kToggle: next.enabled = msg.toggle().enabled(); break;
    case pb::TelemetryControl::kSampling:
      next.sampling_rate = msg.sampling().sampling_rate();
      next.sampling_patterns.assign(msg.sampling().event_patterns().begin(),
                                    msg.sampling().event_patterns().end());
      break;
    case pb::TelemetryControl::kFilter:
      next.allow.assign(msg.filter().allow().begin(), msg.filter().allow().end());
      next.deny.assign(msg.filter().deny().begin(), msg.filter().deny().end());
      break;
    default: return InvalidArgument("control message sets no toggle, sampling or filter");
  }
  if (Status s = next.Validate(); !s.ok()) return s;
  *state = std::move(next);
  return Status::Ok();
}

grpc::Status CheckBearerToken(const grpc::ServerContext& ctx, const std::string& token) {
  if (token.empty()) return grpc::Status::OK;
  const auto& md = ctx.client_metadata();
  const auto it = md.find("authorization");
  if (it == md.end()) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "missing bearer token");
  }
  if (std::string_view(it->second.data(), it->second.size()) != "Bearer " + token) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "wrong bearer token");
  }
  return grpc::Status::OK;
}

Result<std::string> ReadPemFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return NotFound("cannot read " + path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void TallyToProto(const Tally& t, pitlane::v1::WorkerCounters* out) {
  out->set_emitted(t.emitted);
  out->set_sent(t.published);
  out->set_dropped_full(t.dropped_full);
  out->set_dropped_too_large(t.dropped_too_large);
  out->set_dropped_no_ring(t.dropped_no_ring);
  out->set_suppressed_disabled(t.suppressed_disabled);
  out->set_suppressed_sampled(t.suppressed_sampled);
  out->set_suppressed_filtered(t.suppressed_filtered);
}

Tally TallyFromProto(const pitlane::v1::WorkerCounters& c) {
  Tally t;
  t.emitted = c.emitted();
  t.published = c.sent();
  t.dropped_full = c.dropped_full();
  t.dropped_too_large = c.dropped_too_large();
  t.dropped_no_ring = c.dropped_no_ring();
  t.suppressed_disabled = c.suppressed_disabled();
  t.suppressed_sampled = c.suppressed_sampled();
  t.suppressed_filtered = c.suppressed_filtered();
  return t;
}

}  // namespace pitlane::internal
