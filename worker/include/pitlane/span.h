// Spans: an RAII object that emits `<op>.start` {system_time} when created and `<op>.stop`
// {duration} when destroyed, or `<op>.exception` {duration} + error_type + error_message when
// it ends by an exception (WithSpan records the exception's type and what(); a plain Span
// destroyed by unwinding records error_type "unwound") or when Fail() was called.
//
// Thread safety: a Span belongs to the thread that created it.
#pragma once

#include <chrono>
#include <cstdint>
#include <exception>
#include <initializer_list>
#include <string>
#include <string_view>
#include <typeinfo>

#include "pitlane/worker.h"

namespace pitlane {

// The three events of an operation ("python.call" → python.call.start/stop/exception).
struct SpanEvents {
  EventHandle start, stop, exception;
};
SpanEvents ResolveSpan(const Worker& worker, std::string_view operation);

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
  char correlation_[128];
  size_t correlation_len_ = 0;
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
