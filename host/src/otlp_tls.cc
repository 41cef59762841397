#include "otlp_tls.h"

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace pitlane::internal {
namespace {

// OpenSSL's socket BIO writes with write(2), which raises SIGPIPE when the collector has closed
// the connection; this one writes with send(MSG_NOSIGNAL) and is otherwise the socket BIO.
int SendNoSignal(BIO* bio, const char* data, int n) {
  const ssize_t r = ::send(static_cast<int>(BIO_get_fd(bio, nullptr)), data,
                           static_cast<size_t>(n), MSG_NOSIGNAL);
  BIO_clear_retry_flags(bio);
  if (r < 0 && (errno == EAGAIN || errno == EINTR)) BIO_set_retry_write(bio);
  return static_cast<int>(r);
}

BIO_METHOD* SocketWithoutSigpipe() {
  static BIO_METHOD* const method = [] {
    const BIO_METHOD* socket = BIO_s_socket();
    BIO_METHOD* m = BIO_meth_new(BIO_TYPE_SOCKET, "socket without SIGPIPE");
    BIO_meth_set_write(m, SendNoSignal);
    BIO_meth_set_read(m, BIO_meth_get_read(socket));
    BIO_meth_set_puts(m, BIO_meth_get_puts(socket));
    BIO_meth_set_ctrl(m, BIO_meth_get_ctrl(socket));
    BIO_meth_set_create(m, BIO_meth_get_create(socket));
    BIO_meth_set_destroy(m, BIO_meth_get_destroy(socket));
    return m;
  }();
  return method;
}

// OpenSSL's error queue (and a failed certificate check) as one line; clears the queue.
std::string OpenSslError(SSL* ssl) {
  std::string out;
  if (ssl != nullptr) {
    const long verify = SSL_get_verify_result(ssl);
    if (verify != X509_V_OK) out = std::string("certificate: ") + X509_verify_cert_error_string(verify);
  }
  while (const unsigned long e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    if (out.empty()) out = buf;
  }
  return out.empty() ? "TLS error" : out;
}

}  // namespace

Result<std::unique_ptr<TlsClient>> TlsClient::Create(const std::string& ca_pem) {
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  if (ctx == nullptr) return Internal("TLS: " + OpenSslError(nullptr));
  std::unique_ptr<TlsClient> client(new TlsClient(ctx));
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
  // A collector that closes without close_notify ends the response like a plain socket would.
  SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
  if (ca_pem.empty()) {
    SSL_CTX_set_default_verify_paths(ctx);
    return client;
  }
  BIO* bio = BIO_new_mem_buf(ca_pem.data(), static_cast<int>(ca_pem.size()));
  X509_STORE* store = SSL_CTX_get_cert_store(ctx);
  int added = 0;
  while (X509* cert = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr)) {
    added += X509_STORE_add_cert(store, cert) == 1;
    X509_free(cert);
  }
  BIO_free(bio);
  ERR_clear_error();  // the end of the PEM data is reported as an error
  if (added == 0) return InvalidArgument("no PEM certificate in it");
  return client;
}

TlsClient::~TlsClient() {
  End();
  SSL_CTX_free(ctx_);
}

void TlsClient::Begin(int fd, const std::string& host) {
  End();
  ssl_ = SSL_new(ctx_);
  BIO* bio = BIO_new(SocketWithoutSigpipe());
  BIO_set_fd(bio, fd, BIO_NOCLOSE);
  SSL_set_bio(ssl_, bio, bio);
  in6_addr addr;
  if (inet_pton(AF_INET, host.c_str(), &addr) == 1 || inet_pton(AF_INET6, host.c_str(), &addr) == 1) {
    X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl_), host.c_str());
  } else {
    SSL_set_tlsext_host_name(ssl_, host.c_str());
    SSL_set1_host(ssl_, host.c_str());
  }
  SSL_set_connect_state(ssl_);
}

// errno is cleared first: SSL_ERROR_SYSCALL with errno 0 is an end of file.
IoStep TlsClient::Handshake(std::string* error) {
  errno = 0;
  return Step(SSL_connect(ssl_), error);
}

IoStep TlsClient::Write(const char* data, size_t n, std::string* error) {
  errno = 0;
  return Step(SSL_write(ssl_, data, static_cast<int>(std::min<size_t>(n, 1 << 30))), error);
}

IoStep TlsClient::Read(char* buf, size_t n, std::string* error) {
  errno = 0;
  return Step(SSL_read(ssl_, buf, static_cast<int>(std::min<size_t>(n, 1 << 30))), error);
}

void TlsClient::End() {
  if (ssl_ != nullptr) SSL_free(ssl_);  // frees the BIO; the socket stays the caller's
  ssl_ = nullptr;
}

IoStep TlsClient::Step(int rc, std::string* error) {
  if (rc > 0) return {rc, 0};
  switch (SSL_get_error(ssl_, rc)) {
    case SSL_ERROR_WANT_READ:
      return {-1, POLLIN};
    case SSL_ERROR_WANT_WRITE:
      return {-1, POLLOUT};
    case SSL_ERROR_ZERO_RETURN:
      return {0, 0};
    case SSL_ERROR_SYSCALL:
      if (errno == 0) return {0, 0};
      *error = std::strerror(errno);
      ERR_clear_error();
      return {-1, 0};
    default:
      *error = OpenSslError(ssl_);
      return {-1, 0};
  }
}

}  // namespace pitlane::internal
