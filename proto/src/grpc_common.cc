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

void ControlToProto(const ControlState& s, pb::WorkerControlState* out) {
  out->set_enabled(s.enabled);
  out->set_sampling_rate(s.sampling_rate);
  for (const std::string& p : s.sampling_patterns) out->add_sampling_patterns(p);
  for (const std::string& p : s.allow) out->add_allow(p);
  for (const std::string& p : s.deny) out->add_deny(p);
}

ControlState ControlFromProto(const pb::WorkerControlState& msg) {
  ControlState s;
  s.enabled = msg.enabled();
  s.sampling_rate = msg.sampling_rate();
  s.sampling_patterns.assign(msg.sampling_patterns().begin(), msg.sampling_patterns().end());
  s.allow.assign(msg.allow().begin(), msg.allow().end());
  s.deny.assign(msg.deny().begin(), msg.deny().end());
  return s;
}

Status ApplyControlState(const pb::WorkerControlState& msg, ControlState* state) {
  ControlState next = ControlFromProto(msg);
  if (Status s = next.Validate(); !s.ok()) return s;
  *state = std::move(next);
  return Status::Ok();
}

Status ApplyControlMessage(const pb::TelemetryControl& msg, ControlState* state) {
  if (msg.control_case() == pb::TelemetryControl::kPitlaneState) {
    return ApplyControlState(msg.pitlane_state(), state);
  }
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
    default: return Status::Ok();  // sets nothing: ignored, as Snakepit's worker does
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

namespace {

// The worker's outcome counts, which both counters messages (WorkerCounters, AdminWorkerCounters)
// name as Tally does.
template <class Message>
void WriteOutcomes(const Tally& t, Message* out) {
  out->set_emitted(t.emitted);
  out->set_dropped_full(t.dropped_full);
  out->set_dropped_too_large(t.dropped_too_large);
  out->set_dropped_no_ring(t.dropped_no_ring);
  out->set_suppressed_disabled(t.suppressed_disabled);
  out->set_suppressed_sampled(t.suppressed_sampled);
  out->set_suppressed_filtered(t.suppressed_filtered);
}

template <class Message>
void ReadOutcomes(const Message& c, Tally* t) {
  t->emitted = c.emitted();
  t->dropped_full = c.dropped_full();
  t->dropped_too_large = c.dropped_too_large();
  t->dropped_no_ring = c.dropped_no_ring();
  t->suppressed_disabled = c.suppressed_disabled();
  t->suppressed_sampled = c.suppressed_sampled();
  t->suppressed_filtered = c.suppressed_filtered();
}

}  // namespace

void TallyToProto(const Tally& t, pitlane::v1::WorkerCounters* out) {
  WriteOutcomes(t, out);
  out->set_sent(t.published);
}

Tally TallyFromProto(const pitlane::v1::WorkerCounters& c) {
  Tally t;
  ReadOutcomes(c, &t);
  t.published = c.sent();
  return t;
}

void TallyToAdmin(const Tally& t, pitlane::v1::AdminWorkerCounters* out) {
  WriteOutcomes(t, out);
  out->set_published(t.published);
  out->set_dropped_in_flight(t.dropped_in_flight);
  out->set_delivered(t.delivered);
  out->set_truncated(t.truncated);
  for (uint32_t i = 0; i < shm::kRejectReasonCount; ++i) {
    (*out->mutable_rejected_by_reason())[shm::RejectReasonName(i)] = t.rejected[i];
  }
  out->set_rejected(t.rejected_total());
}

Tally TallyFromAdmin(const pitlane::v1::AdminWorkerCounters& c) {
  Tally t;
  ReadOutcomes(c, &t);
  t.published = c.published();
  t.dropped_in_flight = c.dropped_in_flight();
  t.delivered = c.delivered();
  t.truncated = c.truncated();
  for (uint32_t i = 0; i < shm::kRejectReasonCount; ++i) {
    const auto it = c.rejected_by_reason().find(shm::RejectReasonName(i));
    if (it != c.rejected_by_reason().end()) t.rejected[i] = it->second;
  }
  return t;
}

namespace {

bool IsDnsNameChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '.' || c == '_';
}

// An IPv6 literal: hex digits, ':' and '.' (an embedded IPv4), then optionally '%' and a zone
// (an interface name).
bool IsIpv6Literal(std::string_view s) {
  const size_t zone = s.find('%');
  if (zone == std::string_view::npos || zone + 1 < s.size()) {
    for (char c : s.substr(0, zone)) {
      if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F') ||
            c == ':' || c == '.')) {
        return false;
      }
    }
    if (zone == std::string_view::npos) return s.find(':') != std::string_view::npos;
    for (char c : s.substr(zone + 1)) {
      if (!IsDnsNameChar(c)) return false;
    }
    return s.substr(0, zone).find(':') != std::string_view::npos;
  }
  return false;
}

}  // namespace

Status ValidateGrpcAddress(std::string_view address, AddressUse use, std::string_view what) {
  const auto bad = [&](std::string_view why) {
    return InvalidArgument(std::string(what) + " \"" + std::string(address) + "\": " +
                           std::string(why) + " (expected HOST:PORT, e.g. 127.0.0.1:7070 or " +
                           "[::1]:7070)");
  };
  const size_t colon = address.rfind(':');
  if (colon == std::string_view::npos) return bad("no port");
  const std::string_view host = address.substr(0, colon);
  const std::string_view port = address.substr(colon + 1);
  if (host.empty()) return bad("no host");
  if (host.front() == '[') {
    if (host.size() < 3 || host.back() != ']') return bad("unterminated [IPv6] host");
    if (!IsIpv6Literal(host.substr(1, host.size() - 2))) {
      return bad("not an IPv6 address in brackets");
    }
  } else {
    for (char c : host) {
      if (c == ':') return bad("an IPv6 host must be in brackets");
      if (!IsDnsNameChar(c)) return bad("the host is not a name or an IP address");
    }
  }
  if (port.empty() || port.size() > 5) return bad("the port is not a number in 0-65535");
  uint32_t n = 0;
  for (char c : port) {
    if (c < '0' || c > '9') return bad("the port is not a number in 0-65535");
    n = n * 10 + static_cast<uint32_t>(c - '0');
  }
  if (n > 65535) return bad("port out of range (0-65535)");
  if (n == 0 && use == AddressUse::kDial) return bad("port 0 cannot be dialed");
  return Status::Ok();
}

Result<DialSpec> ParseDialSpec(std::string_view spec, std::string_view what) {
  DialSpec d;
  const size_t eq = spec.find('=');
  d.address = std::string(eq == std::string_view::npos ? spec : spec.substr(eq + 1));
  d.id = std::string(eq == std::string_view::npos ? spec : spec.substr(0, eq));
  if (d.id.empty()) {
    return InvalidArgument(std::string(what) + " \"" + std::string(spec) +
                           "\": empty worker id (expected HOST:PORT or ID=HOST:PORT)");
  }
  if (Status s = ValidateGrpcAddress(d.address, AddressUse::kDial, what); !s.ok()) return s;
  return d;
}

}  // namespace pitlane::internal
