// JsonLinesExporter: every event becomes one JSON object on one line, written to stdout, a
// FILE* the caller owns, or a file it opens itself (append mode).
//
//   {"name":"snakepit.python.call.stop","timestamp_ns":1700000000000000000,
//    "correlation_id":"pl-...","measurements":{"duration":1234,"cpu_percent":12.5,"x":"s"},
//    "metadata":{"command":"predict","worker_id":"w1"},"worker_id":"w1","worker_pid":4242,
//    "transport":"shm"}
//
// Whatever bytes a worker sent, each line is valid JSON (RFC 8259) in UTF-8:
//   - quotes, backslashes and control characters are escaped (\" \\ \n \t ... \u001f);
//   - bytes that are not valid UTF-8 are replaced with U+FFFD, in values and keys alike;
//   - non-finite doubles (NaN, ±inf) are written as null;
//   - a key repeated in measurements or metadata keeps its last value (the host context comes
//     after the worker's metadata, so it wins).
// Output is written and flushed once per batch the exporter thread takes off its queue, so
// a reader sees whole lines. Write errors (disk full, a closed pipe) are counted, never fatal.
//
// Thread safety: as AsyncExporter; the counters may be read from any thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>

#include "pitlane/exporter.h"
#include "pitlane/status.h"

namespace pitlane {

class JsonLinesExporter : public AsyncExporter {
 public:
  // Writes to `out`, which the caller keeps open until this exporter is destroyed.
  // REQUIRES: out != nullptr
  explicit JsonLinesExporter(FILE* out = stdout, size_t capacity = 65536);
  // Opens `path` for appending (created 0644 if missing) and writes there; closes it on
  // destruction. Fails (naming the path and the errno text) when it cannot be opened.
  static Result<std::unique_ptr<JsonLinesExporter>> OpenFile(const std::string& path,
                                                             size_t capacity = 65536);
  ~JsonLinesExporter() override;  // Stop()s, flushes, closes an owned file

  // One event as a JSON object without the trailing newline (what Export writes).
  static std::string Format(const OwnedEvent& event);

  uint64_t lines_written() const { return lines_written_.load(std::memory_order_relaxed); }
  uint64_t write_errors() const { return write_errors_.load(std::memory_order_relaxed); }
  // Lines a failed write lost (what write_errors() cost), including every line after a broken
  // pipe.
  uint64_t lines_lost() const { return lines_lost_.load(std::memory_order_relaxed); }
  // The reader of a pipe went away (EPIPE, e.g. `pitlane host --jsonl | head -1`): nothing is
  // written any more; later events only count as lines_lost().
  bool broken_pipe() const { return broken_pipe_.load(std::memory_order_relaxed); }

  // For an exporter made by OpenFile: closes the file and opens its path again before the next
  // write (logrotate's `create` mode renames the file and expects the writer to do this on
  // SIGHUP). Any thread; the exporter thread reopens. A reopen that fails keeps writing to the
  // file already open and counts reopen_errors().
  void RequestReopen() { reopen_requested_.store(true, std::memory_order_relaxed); }
  uint64_t reopens() const { return reopens_.load(std::memory_order_relaxed); }
  uint64_t reopen_errors() const { return reopen_errors_.load(std::memory_order_relaxed); }

  // "jsonl", "stdout" or the file's path, and the counts above with the queue's overflow.
  ExporterReport Report() const override;

 protected:
  void Export(const OwnedEvent& event) override;
  void Flush() override;

 private:
  JsonLinesExporter(FILE* out, std::string path, size_t capacity);
  void ReopenIfRequested();

  FILE* out_;                // replaced only by ReopenIfRequested, on the exporter thread
  const std::string path_;   // "" when the caller owns `out_`
  std::string buffer_;        // exporter thread only
  uint64_t buffered_lines_ = 0;  // exporter thread only
  std::atomic<uint64_t> lines_written_{0};
  std::atomic<uint64_t> write_errors_{0};
  std::atomic<uint64_t> lines_lost_{0};
  std::atomic<bool> broken_pipe_{false};
  std::atomic<bool> reopen_requested_{false};
  std::atomic<uint64_t> reopens_{0};
  std::atomic<uint64_t> reopen_errors_{0};
};

}  // namespace pitlane
