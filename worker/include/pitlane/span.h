// Spans: an RAII object that emits `<op>.start` {system_time} when created and `<op>.stop`
// {duration} when destroyed, or `<op>.exception` {duration} + error_type + error_message when
// it ends by an exception (WithSpan records the exception's type and what(); a plain Span
// destroyed by unwinding records error_type "unwound") or when Fail() was called.
//
// Span identity (schemas/event.fbs span_id / parent_span_id, pitlane/trace_context.h): a Span
// takes a fresh span id at its start from a per-thread generator (no syscall, no lock) and
// records the thread's current span as its parent; while it lives it is the thread's current
// span and its correlation id the thread's current id, so nested Spans are its children in the
// same trace. With no correlation id given or current, a Span starts a new trace: its
// correlation id is a fresh 32-hex-digit trace id. All three events carry both ids.
//
// W3C Trace Context: TraceContextScope continues a caller's trace from its `traceparent`
// (the trace id becomes the current correlation id, the caller's span the current parent);
// CurrentTraceparent() produces the value to send with an outgoing call.
//
// Thread safety: a Span and a TraceContextScope belong to the thread that created them and
// are destroyed on it, in reverse order of creation (they are RAII objects on the stack).
#pragma once

#include <chrono>
#include <cstdint>
#include <exception>
#include <initializer_list>
#include <string>
#include <string_view>
#include <typeinfo>

#include "pitlane/correlation.h"
#include "pitlane/worker.h"

namespace pitlane {

// The three events of an operation ("python.call" → python.call.start/stop/exception).
struct SpanEvents {
  EventHandle start, stop, exception;
};
SpanEvents ResolveSpan(const Worker& worker, std::string_view operation);

// A fresh span id, never 0: the calling thread's generator (splitmix64 over a per-thread
// seed taken from the TSC, the thread and a process-wide counter; re-seeded after fork()).
uint64_t NewSpanId() noexcept;
// The span the calling thread is in (the innermost live Span, or the parent a
// TraceContextScope set); 0 = none.
uint64_t CurrentSpanId() noexcept;
// "00-<trace id>-<span id>-01" for the current correlation id and span; "" when either is
// missing (a traceparent must name both).
std::string CurrentTraceparent();

// Continues the trace of an incoming call for its lifetime: the current correlation id becomes
// the traceparent's trace id (32 lowercase hex digits) and the current span its parent id. An
// invalid value changes nothing (ok() is false).
class TraceContextScope {
 public:
  explicit TraceContextScope(std::string_view traceparent) noexcept;
  ~TraceContextScope();
  TraceContextScope(const TraceContextScope&) = delete;
  TraceContextScope& operator=(const TraceContextScope&) = delete;
  bool ok() const { return ok_; }

 private:
  bool ok_ = false;
  CorrelationToken correlation_;
  uint64_t previous_span_ = 0;
};

class Span {
 public:
  static constexpr size_t kMaxMetadata = 8;
  static constexpr size_t kArenaBytes = 512;

  // Copies up to kMaxMetadata entries (kArenaBytes of keys and values) so the stop event
  // carries them too; `correlation_id` empty = the current scoped id at construction.
  Span(Worker& worker, const SpanEvents& events, std::initializer_list<Metadata> metadata = {},
       std::string_view correlation_id = {}) noexcept;
  ~Span();
  Span(const Span&) = delete;
  Span& operator=(const Span&) = delete;

  // Makes the span end with the exception event.
  void Fail(std::string_view error_type, std::string_view error_message) noexcept;

  uint64_t span_id() const { return span_id_; }
  uint64_t parent_span_id() const { return parent_span_id_; }
  std::string_view correlation_id() const { return {correlation_, correlation_len_}; }

 private:
  void Add(std::string_view key, std::string_view value) noexcept;
  std::string_view Store(std::string_view s) noexcept;

  Worker& worker_;
  SpanEvents events_;
  std::chrono::steady_clock::time_point begin_;
  int uncaught_at_start_;
  bool failed_ = false;
  Metadata meta_[kMaxMetadata + 2] = {
      {"", ""}, {"", ""}, {"", ""}, {"", ""}, {"", ""}, {"", ""}, {"", ""}, {"", ""}, {"", ""}, {"", ""}};
  size_t meta_count_ = 0;
  char arena_[kArenaBytes];
  size_t arena_used_ = 0;
  char correlation_[kMaxCorrelationIdBytes];
  size_t correlation_len_ = 0;
  uint64_t span_id_;
  uint64_t parent_span_id_;
  CorrelationToken previous_correlation_;  // restored at the end of the span
};

// Demangled name of the exception currently being handled ("std::runtime_error").
std::string CurrentExceptionTypeName();

// Runs fn() inside a span; an exception ends the span with its type and message, then
// propagates unchanged.
template <typename Fn>
decltype(auto) WithSpan(Worker& worker, const SpanEvents& events, Fn&& fn,
                        std::initializer_list<Metadata> metadata = {}) {
  Span span(worker, events, metadata);
  try {
    return fn();
  } catch (const std::exception& e) {
    span.Fail(CurrentExceptionTypeName(), e.what());
    throw;
  } catch (...) {
    span.Fail(CurrentExceptionTypeName(), "");
    throw;
  }
}

}  // namespace pitlane
