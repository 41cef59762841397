#include "otlp_transport.h"

#include <grpcpp/grpcpp.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>
#include <zlib.h>

#include <cerrno>
#include <cctype>
#include <charconv>
#include <cstring>
#include <ctime>

#include "otlp/logs_service.grpc.pb.h"
#include "otlp/metrics_service.grpc.pb.h"
#include "otlp/rpc_status.pb.h"
#include "otlp/trace_service.grpc.pb.h"
#include "otlp_tls.h"

namespace pitlane::internal {
namespace {

using Clock = std::chrono::steady_clock;

constexpr const char* kHttpPaths[] = {"/v1/traces", "/v1/metrics", "/v1/logs"};
// A collector's answer is a small ExportServiceResponse; anything larger is not read.
constexpr size_t kMaxResponseBytes = 1 << 20;
// The longest wait a collector may ask for (Retry-After, RetryInfo); the exporter's
// max_retry_time bounds it further.
constexpr int64_t kMaxRetryDelaySeconds = 3600;

// A Retry-After value (RFC 9110 10.2.3) in seconds from `now`: delta-seconds, or an HTTP-date
// in the IMF-fixdate form every server sends ("Sun, 06 Nov 1994 08:49:37 GMT"; a date already
// past is 0). -1 when it is neither (the exporter's own backoff applies).
int64_t RetryAfterSeconds(std::string_view value, std::time_t now) {
  int64_t seconds = -1;
  const auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), seconds);
  if (ec == std::errc() && end == value.data() + value.size()) return seconds >= 0 ? seconds : -1;
  std::tm tm{};
  const std::string text(value);
  const char* rest = strptime(text.c_str(), "%a, %d %b %Y %H:%M:%S GMT", &tm);
  if (rest == nullptr || *rest != '\0') return -1;
  const std::time_t at = timegm(&tm);
  return at > now ? static_cast<int64_t>(at - now) : 0;
}

int RemainingMs(Clock::time_point deadline) {
  const auto left =
      std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return left <= 0 ? 0 : static_cast<int>(std::min<int64_t>(left, 1 << 30));
}

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(a[i])) !=
        std::tolower(static_cast<unsigned char>(b[i]))) {
      return false;
    }
  }
  return true;
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.remove_suffix(1);
  return s;
}

// An Export<Signal>ServiceResponse's partial_success into `r`. The three responses differ only
// in the name of the rejected count.
void TakePartialSuccess(const opentelemetry::proto::collector::trace::v1::ExportTraceServiceResponse& a,
                        OtlpSendResult* r) {
  r->rejected = static_cast<uint64_t>(std::max<int64_t>(a.partial_success().rejected_spans(), 0));
  r->partial_message = a.partial_success().error_message();
}
void TakePartialSuccess(
    const opentelemetry::proto::collector::metrics::v1::ExportMetricsServiceResponse& a,
    OtlpSendResult* r) {
  r->rejected =
      static_cast<uint64_t>(std::max<int64_t>(a.partial_success().rejected_data_points(), 0));
  r->partial_message = a.partial_success().error_message();
}
void TakePartialSuccess(const opentelemetry::proto::collector::logs::v1::ExportLogsServiceResponse& a,
                        OtlpSendResult* r) {
  r->rejected =
      static_cast<uint64_t>(std::max<int64_t>(a.partial_success().rejected_log_records(), 0));
  r->partial_message = a.partial_success().error_message();
}

// The delay a gRPC error's RetryInfo asks for: the grpc-status-details-bin trailer holds a
// google.rpc.Status whose details may carry a RetryInfo. -1 ms when there is none.
std::chrono::milliseconds RetryInfoDelay(const grpc::Status& st) {
  google::rpc::Status status;
  if (st.error_details().empty() || !status.ParseFromString(st.error_details())) {
    return std::chrono::milliseconds(-1);
  }
  for (const google::protobuf::Any& detail : status.details()) {
    google::rpc::RetryInfo info;
    if (!detail.Is<google::rpc::RetryInfo>() || !detail.UnpackTo(&info)) continue;
    const google::protobuf::Duration& d = info.retry_delay();
    if (d.seconds() < 0 || d.nanos() < 0) continue;
    return std::chrono::milliseconds(std::min<int64_t>(d.seconds(), kMaxRetryDelaySeconds) * 1000 +
                                     d.nanos() / 1'000'000);
  }
  return std::chrono::milliseconds(-1);
}

// An OTLP/HTTP answer body (protobuf, as the request was) into `r`; one that does not parse is
// left as a full success.
void TakePartialSuccess(OtlpSignal signal, const std::string& body, OtlpSendResult* r) {
  namespace ct = opentelemetry::proto::collector;
  auto take = [&](auto answer) {
    if (answer.ParseFromString(body)) TakePartialSuccess(answer, r);
  };
  switch (signal) {
    case OtlpSignal::kTraces: take(ct::trace::v1::ExportTraceServiceResponse()); break;
    case OtlpSignal::kMetrics: take(ct::metrics::v1::ExportMetricsServiceResponse()); break;
    case OtlpSignal::kLogs: take(ct::logs::v1::ExportLogsServiceResponse()); break;
  }
}

// OTLP/HTTP over a keep-alive connection, reopened after any error.
class HttpTransport final : public OtlpTransport {
 public:
  // tls: for https:// (null: plain http://).
  HttpTransport(OtlpTransportConfig c, std::unique_ptr<TlsClient> tls)
      : c_(std::move(c)), tls_(std::move(tls)) {}
  ~HttpTransport() override { Close(); }

  OtlpSendResult Send(OtlpSignal signal, const google::protobuf::MessageLite& message,
                      Clock::time_point until) override {
    const Clock::time_point deadline = std::min(until, Clock::now() + c_.timeout);
    std::string request;
    if (!message.SerializeToString(&request)) return Failed("cannot serialize the request");
    std::string body;
    if (c_.gzip) {
      Result<std::string> z = GzipCompress(request);
      if (!z.ok()) return Failed(z.status().message());
      body = std::move(*z);
    }
    const std::string& payload = c_.gzip ? body : request;
    std::string head = "POST " + c_.base_path + kHttpPaths[static_cast<int>(signal)] +
                       " HTTP/1.1\r\nHost: " + c_.host + ":" + c_.port +
                       "\r\nContent-Type: application/x-protobuf\r\nContent-Length: " +
                       std::to_string(payload.size()) + "\r\n";
    if (c_.gzip) head += "Content-Encoding: gzip\r\n";
    for (const auto& [k, v] : c_.headers) head += k + ": " + v + "\r\n";
    head += "\r\n";

    // A kept-alive connection the server closed meanwhile fails on first use: one fresh retry.
    for (int attempt = 0; attempt < 2; ++attempt) {
      const bool reused = fd_ >= 0;
      std::string error;
      if (fd_ < 0 && !Connect(deadline, &error)) return Retryable("connect: " + error);
      if (!WriteAll(head, deadline, &error) || !WriteAll(payload, deadline, &error)) {
        Close();
        if (reused && attempt == 0) continue;
        return Retryable("write: " + error);
      }
      OtlpSendResult r;
      int status = 0;
      std::string answer;
      if (!ReadResponse(deadline, &status, &r.retry_after, &answer, &error)) {
        Close();
        if (reused && attempt == 0 && error == "connection closed") continue;
        return Retryable("read: " + error);
      }
      if (status >= 200 && status < 300) {
        TakePartialSuccess(signal, answer, &r);
        return r;
      }
      r.error = "HTTP " + std::to_string(status);
      r.kind = status == 429 || status == 502 || status == 503 || status == 504
                   ? OtlpSendResult::Kind::kRetryable
                   : OtlpSendResult::Kind::kFailed;
      return r;
    }
    return Retryable("connection closed");
  }

 private:
  static OtlpSendResult Retryable(std::string e) {
    return {OtlpSendResult::Kind::kRetryable, std::chrono::milliseconds(-1), std::move(e)};
  }
  static OtlpSendResult Failed(std::string e) {
    return {OtlpSendResult::Kind::kFailed, std::chrono::milliseconds(-1), std::move(e)};
  }

  void Close() {
    if (tls_) tls_->End();
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
    in_.clear();
  }

  // One send or receive on the connection, through TLS when it has it.
  IoStep Send(const char* data, size_t n, std::string* error) {
    if (tls_) return tls_->Write(data, n, error);
    return Plain(::send(fd_, data, n, MSG_NOSIGNAL), POLLOUT, error);
  }
  IoStep Receive(char* buf, size_t n, std::string* error) {
    if (tls_) return tls_->Read(buf, n, error);
    return Plain(::recv(fd_, buf, n, 0), POLLIN, error);
  }
  static IoStep Plain(ssize_t r, short wait, std::string* error) {
    if (r >= 0) return {r, 0};
    if (errno == EAGAIN || errno == EINTR) return {-1, wait};
    *error = std::strerror(errno);
    return {-1, 0};
  }

  // Waits for what a step asked for: true when it is worth another try. false with *error set:
  // the step failed, the peer closed, or the deadline passed.
  bool Await(const IoStep& step, Clock::time_point deadline, std::string* error) {
    if (step.n == 0) *error = "connection closed";
    if (step.n >= 0 || step.wait == 0) return false;
    pollfd p{fd_, step.wait, 0};
    if (::poll(&p, 1, RemainingMs(deadline)) == 1) return true;
    *error = "timed out";
    return false;
  }

  // The TLS handshake on the connected socket; the peer's certificate must be trusted and name
  // the endpoint's host.
  bool Handshake(Clock::time_point deadline, std::string* error) {
    tls_->Begin(fd_, c_.host);
    while (true) {
      const IoStep step = tls_->Handshake(error);
      if (step.n > 0) return true;
      if (!Await(step, deadline, error)) {
        *error = "TLS handshake: " + *error;
        return false;
      }
    }
  }

  bool Connect(Clock::time_point deadline, std::string* error) {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    addrinfo* res = nullptr;
    if (const int rc = getaddrinfo(c_.host.c_str(), c_.port.c_str(), &hints, &res); rc != 0) {
      *error = c_.host + ": " + gai_strerror(rc);
      return false;
    }
    for (addrinfo* a = res; a != nullptr; a = a->ai_next) {
      const int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                              a->ai_protocol);
      if (fd < 0) continue;
      int one = 1;
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      int rc = ::connect(fd, a->ai_addr, a->ai_addrlen);
      if (rc != 0 && errno == EINPROGRESS) {
        pollfd p{fd, POLLOUT, 0};
        rc = ::poll(&p, 1, RemainingMs(deadline)) == 1 ? 0 : (errno = ETIMEDOUT, -1);
        if (rc == 0) {
          int err = 0;
          socklen_t len = sizeof err;
          getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
          if (err != 0) errno = err, rc = -1;
        }
      }
      if (rc == 0) {
        fd_ = fd;
        freeaddrinfo(res);
        if (tls_ && !Handshake(deadline, error)) {
          Close();
          return false;
        }
        return true;
      }
      *error = std::strerror(errno);
      ::close(fd);
    }
    freeaddrinfo(res);
    if (error->empty()) *error = "no address";
    return false;
  }

  bool WriteAll(const std::string& data, Clock::time_point deadline, std::string* error) {
    size_t done = 0;
    while (done < data.size()) {
      const IoStep step = Send(data.data() + done, data.size() - done, error);
      if (step.n > 0) {
        done += static_cast<size_t>(step.n);
      } else if (!Await(step, deadline, error)) {
        return false;
      }
    }
    return true;
  }

  // Appends what the socket has to in_. false: closed, error or deadline.
  bool Fill(Clock::time_point deadline, std::string* error) {
    if (in_.size() > kMaxResponseBytes) {
      *error = "response larger than 1 MiB";
      return false;
    }
    char buf[16384];
    while (true) {
      const IoStep step = Receive(buf, sizeof buf, error);
      if (step.n > 0) {
        in_.append(buf, static_cast<size_t>(step.n));
        return true;
      }
      if (!Await(step, deadline, error)) return false;
    }
  }

  // The status, Retry-After and body of the next response.
  bool ReadResponse(Clock::time_point deadline, int* status,
                    std::chrono::milliseconds* retry_after, std::string* body,
                    std::string* error) {
    size_t end;
    while ((end = in_.find("\r\n\r\n")) == std::string::npos) {
      if (!Fill(deadline, error)) return false;
    }
    const std::string_view head(in_.data(), end);
    // "HTTP/1.1 503 Service Unavailable"
    const size_t sp = head.find(' ');
    if (head.substr(0, 5) != "HTTP/" || sp == std::string_view::npos ||
        std::from_chars(head.data() + sp + 1, head.data() + head.size(), *status).ec !=
            std::errc()) {
      *error = "malformed status line";
      return false;
    }
    int64_t content_length = -1;
    bool chunked = false, close = false;
    size_t pos = head.find("\r\n");
    while (pos != std::string_view::npos && pos < head.size()) {
      const size_t next = head.find("\r\n", pos + 2);
      const std::string_view line =
          head.substr(pos + 2, (next == std::string_view::npos ? head.size() : next) - pos - 2);
      pos = next;
      const size_t colon = line.find(':');
      if (colon == std::string_view::npos) continue;
      const std::string_view name = Trim(line.substr(0, colon));
      const std::string_view value = Trim(line.substr(colon + 1));
      if (EqualsIgnoreCase(name, "content-length")) {
        std::from_chars(value.data(), value.data() + value.size(), content_length);
      } else if (EqualsIgnoreCase(name, "transfer-encoding")) {
        chunked = value.find("chunked") != std::string_view::npos;
      } else if (EqualsIgnoreCase(name, "connection")) {
        close = EqualsIgnoreCase(value, "close");
      } else if (EqualsIgnoreCase(name, "retry-after")) {
        if (const int64_t seconds = RetryAfterSeconds(value, std::time(nullptr)); seconds >= 0) {
          *retry_after =
              std::chrono::milliseconds(std::min(seconds, kMaxRetryDelaySeconds) * 1000);
        }
      }
    }
    in_.erase(0, end + 4);
    body->clear();
    if (chunked) {
      while (true) {
        size_t eol;
        while ((eol = in_.find("\r\n")) == std::string::npos) {
          if (!Fill(deadline, error)) return false;
        }
        size_t size = 0;
        std::from_chars(in_.data(), in_.data() + eol, size, 16);
        while (in_.size() < eol + 2 + size + 2) {
          if (!Fill(deadline, error)) return false;
        }
        body->append(in_, eol + 2, size);
        in_.erase(0, eol + 2 + size + 2);
        if (size == 0) break;  // (trailers are not expected from a collector)
      }
    } else if (content_length >= 0) {
      while (in_.size() < static_cast<size_t>(content_length)) {
        if (!Fill(deadline, error)) return false;
      }
      body->assign(in_, 0, static_cast<size_t>(content_length));
      in_.erase(0, static_cast<size_t>(content_length));
    } else {
      while (Fill(deadline, error)) {
      }
      body->swap(in_);
      in_.clear();
      close = true;
    }
    if (close) Close();
    return true;
  }

  const OtlpTransportConfig c_;
  const std::unique_ptr<TlsClient> tls_;
  int fd_ = -1;
  std::string in_;  // received and not yet consumed
};

// OTLP/gRPC through the collector services' generated stubs.
class GrpcTransport final : public OtlpTransport {
 public:
  explicit GrpcTransport(const OtlpTransportConfig& c) : c_(c) {
    const std::string target = c.host + ":" + c.port;
    grpc::SslCredentialsOptions roots;
    roots.pem_root_certs = c.ca_pem;  // "": gRPC's default roots
    channel_ = grpc::CreateChannel(
        target, c.tls ? grpc::SslCredentials(roots) : grpc::InsecureChannelCredentials());
    traces_ = opentelemetry::proto::collector::trace::v1::TraceService::NewStub(channel_);
    metrics_ = opentelemetry::proto::collector::metrics::v1::MetricsService::NewStub(channel_);
    logs_ = opentelemetry::proto::collector::logs::v1::LogsService::NewStub(channel_);
  }

  OtlpSendResult Send(OtlpSignal signal, const google::protobuf::MessageLite& request,
                      Clock::time_point until) override {
    namespace ct = opentelemetry::proto::collector;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() +
                     std::min<Clock::duration>(c_.timeout, until - Clock::now()));
    for (const auto& [k, v] : c_.headers) ctx.AddMetadata(Lower(k), v);
    if (c_.gzip) ctx.set_compression_algorithm(GRPC_COMPRESS_GZIP);
    OtlpSendResult r;
    grpc::Status st;
    switch (signal) {
      case OtlpSignal::kTraces: {
        ct::trace::v1::ExportTraceServiceResponse resp;
        st = traces_->Export(
            &ctx, static_cast<const ct::trace::v1::ExportTraceServiceRequest&>(request), &resp);
        if (st.ok()) TakePartialSuccess(resp, &r);
        break;
      }
      case OtlpSignal::kMetrics: {
        ct::metrics::v1::ExportMetricsServiceResponse resp;
        st = metrics_->Export(
            &ctx, static_cast<const ct::metrics::v1::ExportMetricsServiceRequest&>(request),
            &resp);
        if (st.ok()) TakePartialSuccess(resp, &r);
        break;
      }
      case OtlpSignal::kLogs: {
        ct::logs::v1::ExportLogsServiceResponse resp;
        st = logs_->Export(
            &ctx, static_cast<const ct::logs::v1::ExportLogsServiceRequest&>(request), &resp);
        if (st.ok()) TakePartialSuccess(resp, &r);
        break;
      }
    }
    if (st.ok()) return r;
    r.error = "gRPC " + std::to_string(st.error_code()) + " " + st.error_message();
    r.retry_after = RetryInfoDelay(st);
    switch (st.error_code()) {
      // The specification's retryable codes. RESOURCE_EXHAUSTED only when the collector says
      // with a RetryInfo that it will recover; without one, retrying would only add load.
      case grpc::StatusCode::RESOURCE_EXHAUSTED:
        r.kind = r.retry_after.count() >= 0 ? OtlpSendResult::Kind::kRetryable
                                            : OtlpSendResult::Kind::kFailed;
        break;
      case grpc::StatusCode::CANCELLED:
      case grpc::StatusCode::DEADLINE_EXCEEDED:
      case grpc::StatusCode::ABORTED:
      case grpc::StatusCode::OUT_OF_RANGE:
      case grpc::StatusCode::UNAVAILABLE:
      case grpc::StatusCode::DATA_LOSS:
        r.kind = OtlpSendResult::Kind::kRetryable;
        break;
      default:
        r.kind = OtlpSendResult::Kind::kFailed;
    }
    return r;
  }

 private:
  static std::string Lower(std::string s) {
    for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return s;
  }

  const OtlpTransportConfig c_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<opentelemetry::proto::collector::trace::v1::TraceService::Stub> traces_;
  std::unique_ptr<opentelemetry::proto::collector::metrics::v1::MetricsService::Stub> metrics_;
  std::unique_ptr<opentelemetry::proto::collector::logs::v1::LogsService::Stub> logs_;
};

}  // namespace

Result<std::unique_ptr<OtlpTransport>> OtlpTransport::Create(const OtlpTransportConfig& config) {
  std::unique_ptr<TlsClient> tls;
  if (config.tls) {  // also for gRPC, which takes the same roots: refused alike when bad
    Result<std::unique_ptr<TlsClient>> client = TlsClient::Create(config.ca_pem);
    if (!client.ok()) return client.status();
    tls = std::move(*client);
  }
  if (config.grpc) return std::unique_ptr<OtlpTransport>(std::make_unique<GrpcTransport>(config));
  return std::unique_ptr<OtlpTransport>(std::make_unique<HttpTransport>(config, std::move(tls)));
}

Result<std::string> GzipCompress(const std::string& in) {
  z_stream z{};
  // windowBits 15 + 16: a gzip header and trailer instead of zlib's.
  if (deflateInit2(&z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
    return Internal("gzip: deflateInit2 failed");
  }
  std::string out(deflateBound(&z, in.size()), '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  z.avail_in = static_cast<uInt>(in.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  const int rc = deflate(&z, Z_FINISH);
  out.resize(z.total_out);
  deflateEnd(&z);
  if (rc != Z_STREAM_END) return Internal("gzip: deflate failed");
  return out;
}

}  // namespace pitlane::internal
