// Exporters: whatever is slow (formatting, files, sockets) runs on an exporter's own thread,
// never on the poll thread. The poll thread's handler only copies the event into a bounded
// queue; when the queue is full the event is dropped for that exporter and counted, so a slow
// exporter never stalls polling.
//
// Thread safety: Push (the handler) on the poll thread; Run/Export on the exporter thread;
// overflow()/exported() from any thread.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "pitlane/host.h"

namespace pitlane {

// What one exporter has done, as the host's status line and the admin service report it
// (ListExporters; `pitlane stat`): its kind, where it sends, and its counts by name (snake_case,
// in a fixed order).
struct ExporterReport {
  std::string name;    // "jsonl", "statsd", "otlp"
  std::string target;  // e.g. "http/protobuf http://localhost:4318"
  std::vector<std::pair<std::string, uint64_t>> counts;
};

// An owning copy of an EventView, for use off the poll thread.
struct OwnedEvent {
  std::string name;  // host name
  int64_t timestamp_ns = 0;
  std::string correlation_id;
  uint64_t span_id = 0;  // EventView::span_id
  uint64_t parent_span_id = 0;
  struct Measurement {
    std::string key;
    Value::Kind kind = Value::Kind::kInt;
    int64_t i = 0;
    double d = 0;
    std::string s;
  };
  std::vector<Measurement> measurements;
  std::vector<std::pair<std::string, std::string>> metadata;
  std::string worker_id;
  uint32_t worker_pid = 0;
  Transport transport = Transport::kShm;

  static OwnedEvent From(const EventView& v);
  const Measurement* measurement(std::string_view key) const;
  const std::string* meta(std::string_view key) const;  // the last value under `key`
};

// Base of every exporter: a bounded queue drained by one thread calling Export().
class AsyncExporter {
 public:
  explicit AsyncExporter(size_t capacity = 65536);
  virtual ~AsyncExporter();  // REQUIRES: Stop() called by the derived destructor
  AsyncExporter(const AsyncExporter&) = delete;
  AsyncExporter& operator=(const AsyncExporter&) = delete;

  // The handler to attach to a Host: copies the event and enqueues it (or counts overflow).
  Handler handler();
  // Attaches handler() to `host` under `handler_id` for `events` ("*" = all); catalog() is
  // then the host's.
  Status AttachTo(Host& host, const std::string& handler_id,
                  const std::vector<std::string>& events = {"*"});

  void Start();
  // Drains what is queued, then joins the thread. Idempotent.
  void Stop();

  uint64_t overflow() const { return overflow_.load(std::memory_order_relaxed); }
  uint64_t exported() const { return exported_.load(std::memory_order_relaxed); }
  size_t capacity() const { return capacity_; }

  // What this exporter has done, as the host's status line, the admin service and `pitlane
  // stat` show it. This one names the queue's counts (exported, overflow); each exporter
  // overrides it with its kind, its target and its own counts, overflow among them.
  virtual ExporterReport Report() const;

 protected:
  // Called on the exporter thread, in order, for each queued event.
  virtual void Export(const OwnedEvent& event) = 0;
  // Called on the exporter thread after each batch (flush buffers here).
  virtual void Flush() {}
  // What the events' measurement keys mean (their units): the catalog of the host AttachTo
  // attached to, else the compiled-in one (handler() attached by hand).
  const Catalog& catalog() const;

 private:
  void Push(const EventView& v);
  void Loop();

  const size_t capacity_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<OwnedEvent> queue_;
  bool stop_ = false;
  std::thread thread_;
  std::atomic<uint64_t> overflow_{0};
  std::atomic<uint64_t> exported_{0};
  std::atomic<const Catalog*> catalog_{nullptr};  // set by AttachTo, read on the exporter thread
};

}  // namespace pitlane
