#include "pitlane/statsd_exporter.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <unistd.h>

#include <charconv>
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>
#include <utility>

#include "pitlane/units.h"

namespace pitlane {
namespace {

bool IsReserved(unsigned char c) {
  return c < 0x21 || c > 0x7e || c == ':' || c == '|' || c == '@' || c == '#' || c == ',';
}

// Shortest round-trip decimal in fixed notation ("0.25", "1.234567", "12").
std::string FormatDouble(double v) {
  char buf[400];  // fixed notation of DBL_MAX is 309 digits
  const auto r = std::to_chars(buf, buf + sizeof(buf), v, std::chars_format::fixed);
  return std::string(buf, r.ptr);
}

// Measurements that are points in time, not quantities (Snakepit's span starts carry
// `system_time`, Unix-epoch nanoseconds): as a gauge they would only plot the clock.
bool IsTimestamp(std::string_view key) { return key == "system_time"; }

// `host` (an IPv4/IPv6 literal or a name: /etc/hosts, DNS) and `port` → a socket address, the
// first getaddrinfo gives for UDP.
Status Resolve(const std::string& host, uint16_t port, sockaddr_storage* addr, socklen_t* len) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_DGRAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* res = nullptr;
  const std::string port_text = std::to_string(port);
  if (const int rc = getaddrinfo(host.c_str(), port_text.c_str(), &hints, &res); rc != 0) {
    return Status(rc == EAI_NONAME || rc == EAI_FAIL ? StatusCode::kNotFound
                                                     : StatusCode::kUnavailable,
                  "cannot resolve host \"" + host + "\" (" + gai_strerror(rc) + ")");
  }
  *len = res->ai_addrlen;
  std::memcpy(addr, res->ai_addr, *len);
  freeaddrinfo(res);  // pairs with getaddrinfo
  return Status::Ok();
}

// "HOST:PORT" → host and port; IPv6 literals in brackets.
Status SplitAddress(const std::string& address, std::string* host, uint16_t* port) {
  const auto bad = [&](const std::string& why) {
    return InvalidArgument("StatsD address \"" + address + "\": " + why +
                           " (expected HOST:PORT, e.g. 127.0.0.1:8125, [::1]:8125 or "
                           "localhost:8125)");
  };
  std::string port_text;
  if (!address.empty() && address[0] == '[') {
    const size_t close = address.find(']');
    if (close == std::string::npos || close + 1 >= address.size() || address[close + 1] != ':') {
      return bad("unterminated IPv6 literal or missing port");
    }
    *host = address.substr(1, close - 1);
    port_text = address.substr(close + 2);
  } else {
    const size_t colon = address.rfind(':');
    if (colon == std::string::npos) return bad("missing port");
    *host = address.substr(0, colon);
    if (host->find(':') != std::string::npos) return bad("IPv6 literals need brackets");
    port_text = address.substr(colon + 1);
  }
  if (host->empty()) return bad("missing host");
  // Digits and dots are meant as an IPv4 address: strict dotted quads only (getaddrinfo would
  // take "1.2.3" as 1.2.0.3 and send "999.1.1.1" to DNS).
  in_addr v4{};
  if (host->find_first_not_of("0123456789.") == std::string::npos &&
      inet_pton(AF_INET, host->c_str(), &v4) != 1) {
    return bad("host \"" + *host + "\" is not an IPv4 address");
  }
  unsigned value = 0;
  const auto r = std::from_chars(port_text.data(), port_text.data() + port_text.size(), value);
  if (port_text.empty() || r.ec != std::errc() || r.ptr != port_text.data() + port_text.size() ||
      value == 0 || value > 65535) {
    return bad("port \"" + port_text + "\" is not in 1..65535");
  }
  *port = static_cast<uint16_t>(value);
  return Status::Ok();
}

}  // namespace

std::string StatsdExporter::Sanitize(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (IsReserved(static_cast<unsigned char>(c))) c = '_';
  }
  return out;
}

Result<std::unique_ptr<StatsdExporter>> StatsdExporter::Create(StatsdOptions options) {
  if (!(options.sample_rate > 0 && options.sample_rate <= 1)) {
    return InvalidArgument("StatsD sample rate " + FormatDouble(options.sample_rate) +
                           " is outside (0, 1]");
  }
  if (options.max_datagram_bytes < 64) {
    return InvalidArgument("StatsD max datagram size " +
                           std::to_string(options.max_datagram_bytes) + " is below 64 bytes");
  }
  std::string host;
  uint16_t port = 0;
  if (Status s = SplitAddress(options.address, &host, &port); !s.ok()) return s;

  sockaddr_storage addr{};
  socklen_t len = 0;
  if (Status s = Resolve(host, port, &addr, &len); !s.ok()) {
    return Status(s.code(), "StatsD address \"" + options.address + "\": " + s.message());
  }
  const int fd = socket(addr.ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    return Unavailable("cannot create a UDP socket for StatsD address \"" + options.address +
                       "\": " + std::strerror(errno));
  }
  return std::unique_ptr<StatsdExporter>(
      new StatsdExporter(std::move(options), std::move(host), port, fd, addr, len));
}

StatsdExporter::StatsdExporter(StatsdOptions options, std::string host, uint16_t port, int fd,
                               const sockaddr_storage& addr, socklen_t len)
    : AsyncExporter(options.capacity),
      options_(std::move(options)),
      host_(std::move(host)),
      port_(port),
      fd_(fd),
      addr_(addr),
      addr_len_(len),
      rng_(options_.seed != 0 ? options_.seed : std::random_device{}()) {
  if (options_.sample_rate < 1) rate_suffix_ = "|@" + FormatDouble(options_.sample_rate);
}

StatsdExporter::~StatsdExporter() {
  Stop();
  close(fd_);
}

ExporterReport StatsdExporter::Report() const {
  const bool v6 = host_.find(':') != std::string::npos;
  return {"statsd",
          "udp " + (v6 ? "[" + host_ + "]" : host_) + ":" + std::to_string(port_),
          {{"datagrams_sent", datagrams_sent()},
           {"lines_sent", lines_sent()},
           {"overflow", overflow()},
           {"send_errors", send_errors()},
           {"sampled_out", sampled_out()},
           {"skipped_values", skipped_values()},
           {"resolves", resolves()}}};
}

uint64_t StatsdExporter::AppendLines(const OwnedEvent& e) {
  std::string tags;
  for (const std::string& key : options_.tag_keys) {
    std::string value;
    if (const std::string* m = e.meta(key)) {
      value = *m;
    } else if (key == "worker_id") {
      value = e.worker_id;
    } else if (key == "worker_pid") {
      value = std::to_string(e.worker_pid);
    } else if (key == "transport") {
      value = std::string(TransportName(e.transport));
    } else {
      continue;
    }
    tags += tags.empty() ? "|#" : ",";
    tags += Sanitize(key);
    tags += ':';
    tags += Sanitize(value);
  }
  std::string base = options_.prefix.empty() ? std::string() : Sanitize(options_.prefix) + ".";
  base += Sanitize(e.name);

  lines_.push_back(base + ":1|c" + rate_suffix_ + tags);
  uint64_t skipped = 0;
  for (const OwnedEvent::Measurement& m : e.measurements) {
    if (m.kind == Value::Kind::kString) continue;
    if (m.kind == Value::Kind::kDouble && !std::isfinite(m.d)) {
      ++skipped;
      continue;
    }
    if (IsTimestamp(m.key)) continue;
    const std::string name = base + "." + Sanitize(m.key) + ":";
    // A duration by the catalog's unit for its key is a timing, in StatsD's milliseconds.
    if (const Unit unit = catalog().MeasurementUnit(m.key);
        DimensionOf(unit) == UnitDimension::kTime) {
      const double v = m.kind == Value::Kind::kInt ? static_cast<double>(m.i) : m.d;
      const double ms = v * UnitFactor(unit, Unit::kMillisecond);
      lines_.push_back(name + FormatDouble(ms) + "|ms" + rate_suffix_ + tags);
      continue;
    }
    const std::string value =
        m.kind == Value::Kind::kInt ? std::to_string(m.i) : FormatDouble(m.d);
    if (value[0] == '-') lines_.push_back(name + "0|g" + tags);
    lines_.push_back(name + value + "|g" + tags);
  }
  return skipped;
}

void StatsdExporter::Export(const OwnedEvent& event) {
  if (options_.sample_rate < 1 &&
      std::uniform_real_distribution<double>(0, 1)(rng_) >= options_.sample_rate) {
    sampled_out_.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  lines_.clear();
  const uint64_t skipped = AppendLines(event);
  if (skipped > 0) skipped_values_.fetch_add(skipped, std::memory_order_relaxed);
  for (const std::string& line : lines_) {
    const size_t need = datagram_.empty() ? line.size() : datagram_.size() + 1 + line.size();
    if (!datagram_.empty() && need > options_.max_datagram_bytes) Send();
    if (!datagram_.empty()) datagram_ += '\n';
    datagram_ += line;
    ++datagram_lines_;
  }
}

void StatsdExporter::Flush() { Send(); }

void StatsdExporter::Send() {
  if (datagram_.empty()) return;
  const ssize_t n = sendto(fd_, datagram_.data(), datagram_.size(), MSG_NOSIGNAL,
                           reinterpret_cast<const sockaddr*>(&addr_), addr_len_);
  if (n == static_cast<ssize_t>(datagram_.size())) {
    datagrams_sent_.fetch_add(1, std::memory_order_relaxed);
    lines_sent_.fetch_add(datagram_lines_, std::memory_order_relaxed);
  } else {
    send_errors_.fetch_add(1, std::memory_order_relaxed);
    ReResolve();
  }
  datagram_.clear();
  datagram_lines_ = 0;
}

void StatsdExporter::ReResolve() {
  // A failed send may mean the name now points elsewhere (a restarted statsd container):
  // resolve again, at most once per kReResolveInterval so a dead agent costs no DNS storm.
  const auto now = std::chrono::steady_clock::now();
  if (now - last_resolve_ < kReResolveInterval) return;
  last_resolve_ = now;
  sockaddr_storage addr{};
  socklen_t len = 0;
  if (!Resolve(host_, port_, &addr, &len).ok()) return;  // keep the old address
  resolves_.fetch_add(1, std::memory_order_relaxed);
  if (addr.ss_family != addr_.ss_family) {
    const int fd = socket(addr.ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return;
    close(fd_);  // pairs with the socket() of the previous family
    fd_ = fd;
  }
  addr_ = addr;
  addr_len_ = len;
}

}  // namespace pitlane
