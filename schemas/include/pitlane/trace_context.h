// Trace identity shared by every pitlane component: how a correlation id becomes an
// OpenTelemetry trace id, how span ids are written, and W3C Trace Context `traceparent`
// (https://www.w3.org/TR/trace-context/, version 00) parse and produce.
//
// Trace id: a correlation id of exactly 32 hex digits (Snakepit's `uuid4().hex`, or a W3C trace
// id) IS the trace id (its 16 bytes, case-insensitively). Any other non-empty correlation id
// maps deterministically to 16 bytes: FNV-1a-64 of its bytes (big-endian) followed by FNV-1a-64
// of its bytes started from the first hash XOR 0x9e3779b97f4a7c15 (big-endian); the exporter
// then also keeps the correlation id as an attribute. An all-zero result (invalid in W3C) has
// its last byte set to 1. An empty correlation id has no trace id.
//
// Span id: the worker's uint64 (schemas/event.fbs `span_id`) written big-endian, so its 16
// lowercase hex digits read the same in a traceparent and in an OTLP span. 0 means none.
//
// Thread safety: pure functions; any thread may call them.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace pitlane {

using TraceId = std::array<uint8_t, 16>;

// true: `s` is 32 hex digits (either case).
bool IsTraceIdHex(std::string_view s) noexcept;
// The trace id of a correlation id (see above). nullopt for an empty one.
std::optional<TraceId> TraceIdFromCorrelationId(std::string_view correlation_id) noexcept;

// 32 / 16 lowercase hex digits.
std::string TraceIdHex(const TraceId& id);
// The same 32 digits into `out` (no allocation). REQUIRES: 32 writable chars at `out`.
void WriteTraceIdHex(const TraceId& id, char* out) noexcept;
// A fresh trace id from two span ids (the caller's generator).
TraceId TraceIdFromSpanIds(uint64_t high, uint64_t low) noexcept;
std::string SpanIdHex(uint64_t span_id);
// The 8 bytes of a span id, big-endian.
std::array<uint8_t, 8> SpanIdBytes(uint64_t span_id) noexcept;

// A parsed `traceparent`.
struct Traceparent {
  TraceId trace_id{};
  uint64_t parent_span_id = 0;  // the caller's span
  uint8_t flags = 0;            // bit 0: sampled
};

// Parses "00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>" (lowercase, as the spec
// requires of version 00). nullopt when malformed, or when the trace id or parent id is all
// zeros (both invalid per the spec). A later version's longer value is accepted when its first
// 55 characters parse and the next one is '-' (the spec's forward compatibility rule).
std::optional<Traceparent> ParseTraceparent(std::string_view value) noexcept;
// "00-<trace id>-<span id>-<flags>". REQUIRES: span_id != 0.
std::string FormatTraceparent(const TraceId& trace_id, uint64_t span_id, uint8_t flags = 1);

}  // namespace pitlane
