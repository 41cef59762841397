// StatsdExporter: turns events into StatsD lines sent over UDP (fire and forget).
//
// Per event (the event's host name, e.g. snakepit.python.call.stop):
//   <prefix>.<event>:1|c[|@rate][|#tags]                 one counter line
//   <prefix>.<event>.<key>:<value>|ms[|@rate][|#tags]    numeric measurement whose key the
//                                                        catalog gives a time unit
//                                                        (duration: nanosecond, latency_ms:
//                                                        millisecond, ...): a timing,
//                                                        converted to milliseconds. The
//                                                        catalog is the attached host's
//                                                        (AttachTo), else the compiled-in one.
//   <prefix>.<event>.<key>:<value>|g[|#tags]             any other numeric measurement: a
//                                                        gauge. A negative value is sent as
//                                                        "0|g" then "-N|g": a leading sign
//                                                        means "change by" in StatsD.
// String measurements are not sent. Non-finite doubles are skipped (and counted).
//
// Sampling: with sample_rate < 1 each event is kept with that probability (whole: counter and
// measurements) and its counter and timing lines carry "|@rate" so the server scales them
// back; gauges are absolute and carry no rate. Sampled-out events are counted.
//
// Tags (DogStatsD "|#k:v,k2:v2"): for each key in `tag_keys`, the event's last metadata value
// under that key; "worker_id", "worker_pid" and "transport" fall back to the event's own
// fields. A missing key is left out.
//
// Sanitising: in metric names, tag keys and tag values every byte that is not printable ASCII
// (0x21..0x7e), and each of ':' '|' '@' '#' ',', becomes '_', so nothing a worker sends can
// split or forge a line.
//
// Lines are joined with '\n' into datagrams of at most `max_datagram_bytes` (a line longer
// than that goes alone); a datagram is sent when the next line would not fit and at the end
// of every batch. Failed sends are counted, never retried.
//
// Thread safety: as AsyncExporter; the counters may be read from any thread.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include <netinet/in.h>
#include <sys/socket.h>

#include "pitlane/exporter.h"
#include "pitlane/status.h"

namespace pitlane {

struct StatsdOptions {
  // "HOST:PORT": HOST an IPv4 literal, an IPv6 literal in brackets ("[::1]:8125") or a name
  // ("statsd.internal", "localhost"). Resolved at Create(), and again after a failed send (at
  // most once per second), so a name that moves is followed.
  std::string address = "127.0.0.1:8125";
  std::string prefix = "pitlane";  // "" → no prefix
  double sample_rate = 1.0;        // (0, 1]
  std::vector<std::string> tag_keys;
  size_t max_datagram_bytes = 1400;  // fits a typical MTU
  size_t capacity = 65536;           // queue entries
  uint64_t seed = 0;                 // sampling RNG seed; 0 → random
};

class StatsdExporter : public AsyncExporter {
 public:
  // Fails with kInvalidArgument for a malformed address, port or option, kNotFound when the
  // name does not resolve, and kUnavailable when resolving or creating a socket fails.
  static Result<std::unique_ptr<StatsdExporter>> Create(StatsdOptions options);
  ~StatsdExporter() override;  // Stop()s (sending what is queued), closes the socket

  // Replaces every byte not allowed in a name or tag with '_'.
  static std::string Sanitize(std::string_view s);

  uint64_t datagrams_sent() const { return datagrams_sent_.load(std::memory_order_relaxed); }
  uint64_t lines_sent() const { return lines_sent_.load(std::memory_order_relaxed); }
  uint64_t send_errors() const { return send_errors_.load(std::memory_order_relaxed); }
  uint64_t sampled_out() const { return sampled_out_.load(std::memory_order_relaxed); }
  uint64_t skipped_values() const { return skipped_values_.load(std::memory_order_relaxed); }
  // Successful resolutions after a failed send.
  uint64_t resolves() const { return resolves_.load(std::memory_order_relaxed); }

  // "statsd", "udp HOST:PORT", and the counts above with the queue's overflow.
  ExporterReport Report() const override;

 protected:
  void Export(const OwnedEvent& event) override;
  void Flush() override;

 private:
  static constexpr std::chrono::seconds kReResolveInterval{1};

  StatsdExporter(StatsdOptions options, std::string host, uint16_t port, int fd,
                 const sockaddr_storage& addr, socklen_t len);
  // Appends the lines of `event` to lines_; returns how many values were skipped.
  uint64_t AppendLines(const OwnedEvent& event);
  void Send();
  void ReResolve();

  const StatsdOptions options_;
  const std::string host_;
  const uint16_t port_;
  // Exporter thread only (ReResolve may replace them).
  int fd_;
  sockaddr_storage addr_;
  socklen_t addr_len_;
  std::chrono::steady_clock::time_point last_resolve_{};
  std::string rate_suffix_;  // "|@0.25" or ""
  // Exporter thread only.
  std::mt19937_64 rng_;
  std::string datagram_;
  uint64_t datagram_lines_ = 0;
  std::vector<std::string> lines_;
  std::atomic<uint64_t> datagrams_sent_{0};
  std::atomic<uint64_t> lines_sent_{0};
  std::atomic<uint64_t> send_errors_{0};
  std::atomic<uint64_t> sampled_out_{0};
  std::atomic<uint64_t> skipped_values_{0};
  std::atomic<uint64_t> resolves_{0};
};

}  // namespace pitlane
