#include "pitlane/exporter.h"

namespace pitlane {

OwnedEvent OwnedEvent::From(const EventView& v) {
  OwnedEvent e;
  e.name = std::string(v.name());
  e.timestamp_ns = v.timestamp_ns;
  e.correlation_id = std::string(v.correlation_id);
  e.span_id = v.span_id;
  e.parent_span_id = v.parent_span_id;
  e.measurements.reserve(v.measurements.size());
  for (const MeasurementView& m : v.measurements) {
    Measurement o;
    o.key = std::string(m.key);
    o.kind = m.value.kind;
    o.i = m.value.i;
    o.d = m.value.d;
    o.s = std::string(m.value.s);
    e.measurements.push_back(std::move(o));
  }
  e.metadata.reserve(v.metadata.size());
  for (const MetadataView& m : v.metadata) e.metadata.emplace_back(m.key, m.value);
  e.worker_id = std::string(v.worker_id);
  e.worker_pid = v.worker_pid;
  e.transport = v.transport;
  return e;
}

const OwnedEvent::Measurement* OwnedEvent::measurement(std::string_view key) const {
  for (const Measurement& m : measurements) {
    if (m.key == key) return &m;
  }
  return nullptr;
}

const std::string* OwnedEvent::meta(std::string_view key) const {
  const std::string* found = nullptr;
  for (const auto& [k, v] : metadata) {
    if (k == key) found = &v;
  }
  return found;
}

AsyncExporter::AsyncExporter(size_t capacity) : capacity_(capacity == 0 ? 1 : capacity) {}

AsyncExporter::~AsyncExporter() = default;

Handler AsyncExporter::handler() {
  return [this](const EventView& v) { Push(v); };
}

Status AsyncExporter::AttachTo(Host& host, const std::string& handler_id,
                               const std::vector<std::string>& events) {
  catalog_.store(&host.catalog(), std::memory_order_release);  // before any event of the host
  return host.AttachMany(handler_id, events, handler());
}

const Catalog& AsyncExporter::catalog() const {
  const Catalog* c = catalog_.load(std::memory_order_acquire);
  return c != nullptr ? *c : *Catalog::Default();  // the default is a process-wide singleton
}

void AsyncExporter::Push(const EventView& v) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (queue_.size() >= capacity_) {
      overflow_.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    queue_.push_back(OwnedEvent::From(v));
  }
  cv_.notify_one();
}

void AsyncExporter::Start() {
  std::lock_guard<std::mutex> lock(mu_);
  if (thread_.joinable()) return;
  stop_ = false;
  thread_ = std::thread([this] { Loop(); });
}

ExporterReport AsyncExporter::Report() const {
  return {"queue", "", {{"exported", exported()}, {"overflow", overflow()}}};
}

void AsyncExporter::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!thread_.joinable()) return;
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void AsyncExporter::Loop() {
  std::deque<OwnedEvent> batch;
  while (true) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [this] { return stop_ || !queue_.empty(); });
      if (queue_.empty() && stop_) return;
      batch.swap(queue_);
    }
    for (const OwnedEvent& e : batch) {
      Export(e);
      exported_.fetch_add(1, std::memory_order_relaxed);
    }
    batch.clear();
    Flush();
  }
}

}  // namespace pitlane
