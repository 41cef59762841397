// JSON formatting uses nlohmann-json (already a dependency of the CLI) rather than a
// hand-written escaper: its serializer escapes every control character, and its `replace`
// error handler turns invalid UTF-8 into U+FFFD instead of throwing — the two places a
// hand-written escaper usually goes wrong on hostile input. ordered_json keeps the field order
// stable for readers that diff lines.
#include "pitlane/jsonl_exporter.h"

#include <cerrno>
#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>
#include <utility>

namespace pitlane {
namespace {

// Written to the file once the buffer holds this much, even mid-batch (bounds memory when a
// batch is large).
constexpr size_t kWriteThresholdBytes = 64 * 1024;

Result<FILE*> OpenForAppending(const std::string& path) {
  FILE* f = std::fopen(path.c_str(), "ae");  // 'e': O_CLOEXEC
  if (f == nullptr) {
    const int err = errno;
    return Status(err == EACCES ? StatusCode::kPermissionDenied
                  : err == ENOENT ? StatusCode::kNotFound
                                  : StatusCode::kUnavailable,
                  "cannot open JSON lines file \"" + path + "\" for appending: " +
                      std::strerror(err));
  }
  return f;
}

}  // namespace

JsonLinesExporter::JsonLinesExporter(FILE* out, size_t capacity)
    : JsonLinesExporter(out, std::string(), capacity) {}

JsonLinesExporter::JsonLinesExporter(FILE* out, std::string path, size_t capacity)
    : AsyncExporter(capacity), out_(out), path_(std::move(path)) {}

Result<std::unique_ptr<JsonLinesExporter>> JsonLinesExporter::OpenFile(const std::string& path,
                                                                       size_t capacity) {
  Result<FILE*> f = OpenForAppending(path);
  if (!f.ok()) return f.status();
  return std::unique_ptr<JsonLinesExporter>(new JsonLinesExporter(*f, path, capacity));
}

JsonLinesExporter::~JsonLinesExporter() {
  Stop();
  if (!path_.empty()) std::fclose(out_);  // pairs with OpenForAppending
}

ExporterReport JsonLinesExporter::Report() const {
  // With no path the stream is the caller's and never replaced, so out_ is safe to read here.
  std::string target = !path_.empty() ? path_ : out_ == stdout ? "stdout" : "the caller's stream";
  return {"jsonl",
          std::move(target),
          {{"lines_written", lines_written()},
           {"overflow", overflow()},
           {"write_errors", write_errors()},
           {"lines_lost", lines_lost()},
           {"reopens", reopens()},
           {"reopen_errors", reopen_errors()}}};
}

void JsonLinesExporter::ReopenIfRequested() {
  if (path_.empty() || !reopen_requested_.exchange(false, std::memory_order_relaxed)) return;
  Result<FILE*> f = OpenForAppending(path_);
  if (!f.ok()) {
    reopen_errors_.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  std::fclose(out_);  // pairs with the OpenForAppending that opened it
  out_ = *f;
  reopens_.fetch_add(1, std::memory_order_relaxed);
}

std::string JsonLinesExporter::Format(const OwnedEvent& e) {
  using Json = nlohmann::ordered_json;
  Json measurements = Json::object();
  for (const OwnedEvent::Measurement& m : e.measurements) {
    switch (m.kind) {
      case Value::Kind::kInt:
        measurements[m.key] = m.i;
        break;
      case Value::Kind::kDouble:
        // nlohmann would print NaN/inf as null too; spelled out so the contract is visible.
        if (std::isfinite(m.d)) {
          measurements[m.key] = m.d;
        } else {
          measurements[m.key] = nullptr;
        }
        break;
      case Value::Kind::kString:
        measurements[m.key] = m.s;
        break;
    }
  }
  Json metadata = Json::object();
  for (const auto& [k, v] : e.metadata) metadata[k] = v;
  Json j = Json::object();
  j["name"] = e.name;
  j["timestamp_ns"] = e.timestamp_ns;
  j["correlation_id"] = e.correlation_id;
  j["measurements"] = std::move(measurements);
  j["metadata"] = std::move(metadata);
  j["worker_id"] = e.worker_id;
  j["worker_pid"] = e.worker_pid;
  j["transport"] = std::string(TransportName(e.transport));
  return j.dump(-1, ' ', /*ensure_ascii=*/false, Json::error_handler_t::replace);
}

void JsonLinesExporter::Export(const OwnedEvent& event) {
  buffer_ += Format(event);
  buffer_ += '\n';
  ++buffered_lines_;
  if (buffer_.size() >= kWriteThresholdBytes) Flush();
}

void JsonLinesExporter::Flush() {
  if (buffered_lines_ == 0) return;
  ReopenIfRequested();
  if (broken_pipe_.load(std::memory_order_relaxed)) {
    lines_lost_.fetch_add(buffered_lines_, std::memory_order_relaxed);
    buffer_.clear();
    buffered_lines_ = 0;
    return;
  }
  errno = 0;
  const bool ok = std::fwrite(buffer_.data(), 1, buffer_.size(), out_) == buffer_.size() &&
                  std::fflush(out_) == 0;
  if (ok) {
    lines_written_.fetch_add(buffered_lines_, std::memory_order_relaxed);
  } else {
    // EPIPE needs SIGPIPE ignored (the CLI does); a reader that left does not come back.
    if (errno == EPIPE) broken_pipe_.store(true, std::memory_order_relaxed);
    write_errors_.fetch_add(1, std::memory_order_relaxed);
    lines_lost_.fetch_add(buffered_lines_, std::memory_order_relaxed);
    std::clearerr(out_);  // try again with the next batch (e.g. the disk had a moment)
  }
  buffer_.clear();
  buffered_lines_ = 0;
}

}  // namespace pitlane
