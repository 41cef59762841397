// The OTLP exporter's two ways to reach a collector: OTLP/HTTP (protobuf body, POST /v1/<signal>)
// over a small HTTP/1.1 client of its own, and OTLP/gRPC (the collector services' Export). Both
// make one blocking request at a time on the exporter's sender thread, bounded by a timeout.
//
// Why a hand-written HTTP/1.1 client rather than Boost.Beast: the exporter sends one request at
// a time from a thread of its own and must bound every step by OTEL_EXPORTER_OTLP_TIMEOUT.
// Beast's synchronous calls have no timeouts (tcp_stream's expiry applies to asynchronous
// operations only), so Beast would mean an io_context and an async state machine for a single
// POST; poll() on a plain socket bounds connect, write and read in a few lines. The client speaks
// only what OTLP/HTTP needs: POST with Content-Length, keep-alive, responses with Content-Length,
// chunked or close-delimited bodies, and the Retry-After header (delta-seconds or an
// HTTP-date); https:// through OpenSSL on the same socket and deadlines (otlp_tls.h). gRPC does
// its own TLS. Both read an accepted answer's partial success (OTLP specification, "Partial
// Success"); gRPC reads the RetryInfo of an error's status details.
//
// Thread safety: one thread uses an OtlpTransport at a time.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "pitlane/status.h"

namespace google::protobuf {
class MessageLite;
}

namespace pitlane::internal {

enum class OtlpSignal : uint8_t { kTraces = 0, kMetrics = 1, kLogs = 2 };

struct OtlpSendResult {
  enum class Kind : uint8_t {
    kOk,         // accepted, perhaps in part (`rejected`)
    kRetryable,  // 429/502/503/504, UNAVAILABLE & co. (RESOURCE_EXHAUSTED with RetryInfo), or
                 // the connection failed
    kFailed,     // refused for good (400, INVALID_ARGUMENT, ...): retrying would not help
  };
  Kind kind = Kind::kOk;
  std::chrono::milliseconds retry_after{-1};  // Retry-After / gRPC RetryInfo, -1 = none
  std::string error;                          // for the log: status line or gRPC status
  // kOk: the answer's partial_success — items the collector rejected (they must not be sent
  // again) and its message (a warning when nothing was rejected). An answer that does not
  // parse is a full success.
  uint64_t rejected = 0;
  std::string partial_message;
};

struct OtlpTransportConfig {
  bool grpc = false;
  std::string host;   // name or literal
  std::string port;   // decimal
  std::string base_path;  // HTTP: the endpoint's path ("" or "/prefix"), /v1/<signal> appended
  bool tls = false;       // https://
  std::string ca_pem;     // the roots TLS trusts (OTEL_EXPORTER_OTLP_CERTIFICATE); "" = system's
  std::vector<std::pair<std::string, std::string>> headers;
  std::chrono::milliseconds timeout{10000};
  bool gzip = false;
};

class OtlpTransport {
 public:
  // INVALID_ARGUMENT: ca_pem holds no certificate.
  static Result<std::unique_ptr<OtlpTransport>> Create(const OtlpTransportConfig& config);
  virtual ~OtlpTransport() = default;
  // Sends one Export<Signal>ServiceRequest, giving up (retryable) at `deadline` or after the
  // configured timeout, whichever comes first. REQUIRES: `request` is that message for `signal`.
  virtual OtlpSendResult Send(OtlpSignal signal, const google::protobuf::MessageLite& request,
                              std::chrono::steady_clock::time_point deadline) = 0;
};

// gzip (RFC 1952) of `in`.
Result<std::string> GzipCompress(const std::string& in);

}  // namespace pitlane::internal
