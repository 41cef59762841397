#include "pitlane/span.h"

#include <cxxabi.h>
#include <pthread.h>
#include <x86intrin.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <memory>

#include "pitlane/correlation.h"
#include "pitlane/trace_context.h"

namespace pitlane {
namespace {

// The thread's current span (innermost live Span, or a TraceContextScope's parent).
thread_local uint64_t t_current_span = 0;

// Bumped in a fork()ed child, so its threads re-seed instead of repeating the parent's ids.
std::atomic<uint64_t> g_fork_generation{1};
std::atomic<uint64_t> g_seed_counter{0};
[[maybe_unused]] const int g_atfork_registered = pthread_atfork(
    nullptr, nullptr, [] { g_fork_generation.fetch_add(1, std::memory_order_relaxed); });

struct SpanIdGenerator {
  uint64_t state = 0;
  uint64_t generation = 0;  // g_fork_generation when seeded; 0: not yet
};
thread_local SpanIdGenerator t_span_ids;

uint64_t Mix(uint64_t z) noexcept {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

}  // namespace

uint64_t NewSpanId() noexcept {
  SpanIdGenerator& g = t_span_ids;
  const uint64_t generation = g_fork_generation.load(std::memory_order_relaxed);
  if (g.generation != generation) [[unlikely]] {
    // TSC, this thread's address and a process-wide counter: distinct per thread and per
    // process (a forked child reads a later TSC than its parent did).
    g.state = Mix(__rdtsc() ^ reinterpret_cast<uintptr_t>(&g) ^
                  Mix(g_seed_counter.fetch_add(1, std::memory_order_relaxed)));
    g.generation = generation;
  }
  uint64_t id;
  do {
    g.state += 0x9e3779b97f4a7c15ull;  // splitmix64: a bijection of the counter, so a thread
    id = Mix(g.state);                  // never repeats an id before 2^64 of them
  } while (id == 0);
  return id;
}

uint64_t CurrentSpanId() noexcept { return t_current_span; }

std::string CurrentTraceparent() {
  const std::optional<TraceId> trace = TraceIdFromCorrelationId(CurrentCorrelationId());
  if (!trace || t_current_span == 0) return "";
  return FormatTraceparent(*trace, t_current_span);
}

TraceContextScope::TraceContextScope(std::string_view traceparent) noexcept {
  const std::optional<Traceparent> tp = ParseTraceparent(traceparent);
  if (!tp) return;
  ok_ = true;
  char hex[32];
  WriteTraceIdHex(tp->trace_id, hex);
  correlation_ = SetCorrelationId(std::string_view(hex, sizeof hex));
  previous_span_ = t_current_span;
  t_current_span = tp->parent_span_id;
}

TraceContextScope::~TraceContextScope() {
  if (!ok_) return;
  t_current_span = previous_span_;
  ResetCorrelationId(correlation_);
}

SpanEvents ResolveSpan(const Worker& worker, std::string_view operation) {
  std::string op(operation);
  return {worker.Event(op + ".start"), worker.Event(op + ".stop"),
          worker.Event(op + ".exception")};
}

std::string CurrentExceptionTypeName() {
  const std::type_info* type = abi::__cxa_current_exception_type();
  if (type == nullptr) return "unknown";
  int status = 0;
  std::unique_ptr<char, void (*)(void*)> demangled(
      abi::__cxa_demangle(type->name(), nullptr, nullptr, &status), std::free);
  return status == 0 && demangled ? std::string(demangled.get()) : std::string(type->name());
}

Span::Span(Worker& worker, const SpanEvents& events, std::initializer_list<Metadata> metadata,
           std::string_view correlation_id) noexcept
    : worker_(worker),
      events_(events),
      begin_(std::chrono::steady_clock::now()),
      uncaught_at_start_(std::uncaught_exceptions()),
      span_id_(NewSpanId()),
      parent_span_id_(t_current_span) {
  for (const Metadata& m : metadata) {
    if (meta_count_ == kMaxMetadata) break;
    Add(m.key, m.value);
  }
  const std::string_view corr = correlation_id.empty() ? CurrentCorrelationId() : correlation_id;
  if (corr.empty()) {
    // A new trace: two more generator draws make its 32-hex-digit id (trace_context.h: such a
    // correlation id is the trace id itself).
    WriteTraceIdHex(TraceIdFromSpanIds(NewSpanId(), NewSpanId()), correlation_);
    correlation_len_ = 32;
  } else {
    correlation_len_ = std::min(corr.size(), sizeof(correlation_));
    std::memcpy(correlation_, corr.data(), correlation_len_);
  }
  previous_correlation_ = SetCorrelationId(std::string_view(correlation_, correlation_len_));
  t_current_span = span_id_;
  const int64_t system_time = std::chrono::duration_cast<std::chrono::nanoseconds>(
                                  std::chrono::system_clock::now().time_since_epoch())
                                  .count();
  const Measurement m[] = {{"system_time", system_time}};
  (void)worker_.EmitSpanEvent(events_.start, {span_id_, parent_span_id_},
                              std::span<const Measurement>(m),
                              std::span<const Metadata>(meta_, meta_count_),
                              std::string_view(correlation_, correlation_len_));
}

std::string_view Span::Store(std::string_view s) noexcept {
  const size_t n = std::min(s.size(), kArenaBytes - arena_used_);
  std::memcpy(arena_ + arena_used_, s.data(), n);
  std::string_view stored(arena_ + arena_used_, n);
  arena_used_ += n;
  return stored;
}

void Span::Add(std::string_view key, std::string_view value) noexcept {
  if (meta_count_ >= kMaxMetadata + 2) return;
  const std::string_view k = Store(key);
  const std::string_view v = Store(value);
  meta_[meta_count_++] = Metadata(k, v);
}

void Span::Fail(std::string_view error_type, std::string_view error_message) noexcept {
  if (failed_) return;
  failed_ = true;
  Add("error_type", error_type);
  Add("error_message", error_message);
}

Span::~Span() {
  if (!failed_ && std::uncaught_exceptions() > uncaught_at_start_) Fail("unwound", "");
  const int64_t duration = std::chrono::duration_cast<std::chrono::nanoseconds>(
                               std::chrono::steady_clock::now() - begin_)
                               .count();
  const Measurement m[] = {{"duration", duration}};
  (void)worker_.EmitSpanEvent(failed_ ? events_.exception : events_.stop,
                              {span_id_, parent_span_id_}, std::span<const Measurement>(m),
                              std::span<const Metadata>(meta_, meta_count_),
                              std::string_view(correlation_, correlation_len_));
  t_current_span = parent_span_id_;
  ResetCorrelationId(previous_correlation_);
}

}  // namespace pitlane
