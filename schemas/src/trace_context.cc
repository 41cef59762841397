#include "pitlane/trace_context.h"

namespace pitlane {
namespace {

constexpr char kHex[] = "0123456789abcdef";

int HexDigit(char c) noexcept {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Lowercase hex only (traceparent version 00).
int LowerHexDigit(char c) noexcept { return c >= 'A' && c <= 'F' ? -1 : HexDigit(c); }

uint64_t Fnv1a64(std::string_view s, uint64_t basis) noexcept {
  uint64_t h = basis;
  for (char c : s) {
    h ^= static_cast<uint8_t>(c);
    h *= 0x100000001b3ull;
  }
  return h;
}

void PutBigEndian(uint64_t v, uint8_t* out) noexcept {
  for (int i = 7; i >= 0; --i, v >>= 8) out[i] = static_cast<uint8_t>(v);
}

// Parses `n` lowercase hex digits into bytes. false: a non-hex character.
bool ParseLowerHex(std::string_view s, uint8_t* out) noexcept {
  for (size_t i = 0; i < s.size(); i += 2) {
    const int hi = LowerHexDigit(s[i]), lo = LowerHexDigit(s[i + 1]);
    if (hi < 0 || lo < 0) return false;
    out[i / 2] = static_cast<uint8_t>(hi << 4 | lo);
  }
  return true;
}

bool AllZero(const uint8_t* p, size_t n) noexcept {
  for (size_t i = 0; i < n; ++i) {
    if (p[i] != 0) return false;
  }
  return true;
}

}  // namespace

bool IsTraceIdHex(std::string_view s) noexcept {
  if (s.size() != 32) return false;
  for (char c : s) {
    if (HexDigit(c) < 0) return false;
  }
  return true;
}

std::optional<TraceId> TraceIdFromCorrelationId(std::string_view correlation_id) noexcept {
  if (correlation_id.empty()) return std::nullopt;
  TraceId id{};
  if (IsTraceIdHex(correlation_id)) {
    for (size_t i = 0; i < 16; ++i) {
      id[i] = static_cast<uint8_t>(HexDigit(correlation_id[2 * i]) << 4 |
                                   HexDigit(correlation_id[2 * i + 1]));
    }
  } else {
    const uint64_t h1 = Fnv1a64(correlation_id, 0xcbf29ce484222325ull);
    const uint64_t h2 = Fnv1a64(correlation_id, h1 ^ 0x9e3779b97f4a7c15ull);
    PutBigEndian(h1, id.data());
    PutBigEndian(h2, id.data() + 8);
  }
  if (AllZero(id.data(), id.size())) id[15] = 1;
  return id;
}

void WriteTraceIdHex(const TraceId& id, char* out) noexcept {
  for (size_t i = 0; i < 16; ++i) {
    out[2 * i] = kHex[id[i] >> 4];
    out[2 * i + 1] = kHex[id[i] & 15];
  }
}

std::string TraceIdHex(const TraceId& id) {
  std::string s(32, '0');
  WriteTraceIdHex(id, s.data());
  return s;
}

TraceId TraceIdFromSpanIds(uint64_t high, uint64_t low) noexcept {
  TraceId id{};
  PutBigEndian(high, id.data());
  PutBigEndian(low, id.data() + 8);
  return id;
}

std::array<uint8_t, 8> SpanIdBytes(uint64_t span_id) noexcept {
  std::array<uint8_t, 8> b{};
  PutBigEndian(span_id, b.data());
  return b;
}

std::string SpanIdHex(uint64_t span_id) {
  std::string s(16, '0');
  for (int i = 15; i >= 0; --i, span_id >>= 4) s[i] = kHex[span_id & 15];
  return s;
}

std::optional<Traceparent> ParseTraceparent(std::string_view v) noexcept {
  // version(2) '-' trace-id(32) '-' parent-id(16) '-' flags(2) = 55 characters.
  if (v.size() < 55 || v[2] != '-' || v[35] != '-' || v[52] != '-') return std::nullopt;
  uint8_t version;
  if (!ParseLowerHex(v.substr(0, 2), &version) || version == 0xff) return std::nullopt;
  if (version == 0 ? v.size() != 55 : (v.size() > 55 && v[55] != '-')) return std::nullopt;
  Traceparent tp;
  uint8_t parent[8];
  if (!ParseLowerHex(v.substr(3, 32), tp.trace_id.data()) ||
      !ParseLowerHex(v.substr(36, 16), parent) || !ParseLowerHex(v.substr(53, 2), &tp.flags)) {
    return std::nullopt;
  }
  if (AllZero(tp.trace_id.data(), 16) || AllZero(parent, 8)) return std::nullopt;
  for (uint8_t b : parent) tp.parent_span_id = tp.parent_span_id << 8 | b;
  return tp;
}

std::string FormatTraceparent(const TraceId& trace_id, uint64_t span_id, uint8_t flags) {
  std::string s = "00-" + TraceIdHex(trace_id) + "-" + SpanIdHex(span_id) + "-";
  s.push_back(kHex[flags >> 4]);
  s.push_back(kHex[flags & 15]);
  return s;
}

}  // namespace pitlane
