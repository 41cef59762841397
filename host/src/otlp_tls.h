// TLS for the OTLP/HTTP client (https:// endpoints), on OpenSSL: the roots it trusts, and one
// session's handshake, writes and reads over the client's non-blocking socket. No step waits:
// each says what the socket must become ready for, so the client waits with the same poll()
// and deadline as without TLS (otlp_transport.cc).
//
// The peer's certificate must chain to the trusted roots (OTEL_EXPORTER_OTLP_CERTIFICATE, else
// the system's) and name the endpoint's host (a DNS name, or an IP address literal); TLS 1.2
// at least. Writes never raise SIGPIPE (the socket is written with MSG_NOSIGNAL), as the plain
// client's do not.
//
// Thread safety: one thread uses a TlsClient at a time.
#pragma once

#include <sys/types.h>

#include <memory>
#include <string>

#include "pitlane/status.h"

typedef struct ssl_ctx_st SSL_CTX;
typedef struct ssl_st SSL;

namespace pitlane::internal {

// What one step on a non-blocking connection did: n > 0 bytes moved (a handshake step: done);
// n == 0 the peer closed the connection; n < 0 and wait != 0: try again once the socket is
// ready for `wait` (POLLIN / POLLOUT); n < 0 and wait == 0: failed, the error says why.
struct IoStep {
  ssize_t n = 0;
  short wait = 0;
};

class TlsClient {
 public:
  // ca_pem: the PEM certificates to trust; "" = the system's roots. INVALID_ARGUMENT when
  // ca_pem holds no certificate.
  static Result<std::unique_ptr<TlsClient>> Create(const std::string& ca_pem);
  ~TlsClient();
  TlsClient(const TlsClient&) = delete;
  TlsClient& operator=(const TlsClient&) = delete;

  // Starts a session on the connected socket `fd` for `host` (sent as SNI, checked against the
  // certificate). Ends the previous session, if any.
  void Begin(int fd, const std::string& host);
  IoStep Handshake(std::string* error);
  IoStep Write(const char* data, size_t n, std::string* error);
  IoStep Read(char* buf, size_t n, std::string* error);
  // Frees the session; the caller closes the socket.
  void End();

 private:
  explicit TlsClient(SSL_CTX* ctx) : ctx_(ctx) {}
  IoStep Step(int rc, std::string* error);

  SSL_CTX* ctx_;
  SSL* ssl_ = nullptr;
};

}  // namespace pitlane::internal
