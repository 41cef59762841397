#include "pitlane/span.h"

#include <cxxabi.h>

#include <cstdlib>
#include <cstring>
#include <memory>

#include "pitlane/correlation.h"

namespace pitlane {

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
      uncaught_at_start_(std::uncaught_exceptions()) {
  for (const Metadata& m : metadata) {
    if (meta_count_ == kMaxMetadata) break;
    Add(m.key, m.value);
  }
  const std::string_view corr = correlation_id.empty() ? CurrentCorrelationId() : correlation_id;
  correlation_len_ = std::min(corr.size(), sizeof(correlation_));
  std::memcpy(correlation_, corr.data(), correlation_len_);
  const int64_t system_time = std::chrono::duration_cast<std::chrono::nanoseconds>(
                                  std::chrono::system_clock::now().time_since_epoch())
                                  .count();
  const Measurement m[] = {{"system_time", system_time}};
  (void)worker_.Emit(events_.start, std::span<const Measurement>(m),
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
  (void)worker_.Emit(failed_ ? events_.exception : events_.stop, std::span<const Measurement>(m),
                     std::span<const Metadata>(meta_, meta_count_),
                     std::string_view(correlation_, correlation_len_));
}

}  // namespace pitlane
