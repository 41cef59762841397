#include "handlers.h"

#include <algorithm>

namespace pitlane::internal {

HandlerRegistry::HandlerRegistry(const Catalog& catalog,
                                 std::function<void(const std::string&)> log)
    : catalog_(catalog), log_(std::move(log)) {
  auto t = std::make_shared<Table>();
  t->by_event.assign(catalog_.event_count() + 1, {});
  shared_ = t;
  current_ = t;
}

Status HandlerRegistry::Attach(const std::string& id, const std::vector<std::string>& events,
                               Handler fn) {
  if (id.empty()) return InvalidArgument("handler id must not be empty");
  if (!fn) return InvalidArgument("handler \"" + id + "\" has no callback");
  if (events.empty()) return InvalidArgument("handler \"" + id + "\" names no event");
  Entry e;
  e.id = id;
  for (const std::string& name : events) {
    if (name == "*") {
      e.all = true;
    } else if (catalog_.FindHostEvent(name) == 0) {
      return NotFound("event \"" + name + "\" is not in the catalog (host names look like \"" +
                      std::string(catalog_.root()) + ".python.call.stop\")");
    }
    e.events.push_back(name);
  }
  e.fn = std::make_shared<Handler>(std::move(fn));
  std::lock_guard<std::mutex> lock(mu_);
  for (const Entry& x : shared_->entries) {
    if (x.id == id) return Status(StatusCode::kAlreadyExists, "handler \"" + id + "\" is attached");
  }
  auto table = std::make_shared<Table>(*shared_);
  table->entries.push_back(std::move(e));
  PublishLocked(std::move(table));
  return Status::Ok();
}

bool HandlerRegistry::Detach(const std::string& id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto table = std::make_shared<Table>(*shared_);
  const auto it = std::find_if(table->entries.begin(), table->entries.end(),
                               [&](const Entry& e) { return e.id == id; });
  if (it == table->entries.end()) return false;
  table->entries.erase(it);
  PublishLocked(std::move(table));
  return true;
}

void HandlerRegistry::PublishLocked(std::shared_ptr<Table> t) {
  t->by_event.assign(catalog_.event_count() + 1, {});
  for (const Entry& e : t->entries) {
    for (uint16_t ev = 1; ev <= catalog_.event_count(); ++ev) {
      const std::string& name = catalog_.event(ev).host_name;
      if (e.all || std::find(e.events.begin(), e.events.end(), name) != e.events.end()) {
        t->by_event[ev].emplace_back(e.id, e.fn);
      }
    }
  }
  shared_ = std::move(t);
  // Release pairs with the acquire load in Refresh (which then copies shared_ under mu_).
  version_.fetch_add(1, std::memory_order_release);
}

std::vector<HandlerInfo> HandlerRegistry::List() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<HandlerInfo> out;
  for (const Entry& e : shared_->entries) out.push_back({e.id, e.events});
  return out;
}

std::vector<std::string> HandlerRegistry::Detached() const {
  std::lock_guard<std::mutex> lock(mu_);
  return detached_;
}

void HandlerRegistry::Refresh() {
  if (!to_detach_.empty()) {
    std::vector<std::string> ids;
    ids.swap(to_detach_);
    for (const std::string& id : ids) Detach(id);
  }
  // Acquire pairs with the release fetch_add in PublishLocked.
  const uint64_t v = version_.load(std::memory_order_acquire);
  if (v != seen_) {
    std::lock_guard<std::mutex> lock(mu_);
    current_ = shared_;
    seen_ = version_.load(std::memory_order_relaxed);
  }
}

void HandlerRegistry::Dispatch(const EventView& view) {
  if (view.event->id >= current_->by_event.size()) return;
  for (const auto& [id, fn] : current_->by_event[view.event->id]) {
    // A handler that threw earlier in this pass is already detached: never call it again (the
    // table we iterate is replaced only at the next Refresh).
    if (!to_detach_.empty() &&
        std::find(to_detach_.begin(), to_detach_.end(), id) != to_detach_.end()) {
      continue;
    }
    try {
      (*fn)(view);
    } catch (const std::exception& e) {
      Failed(id, e.what());
    } catch (...) {
      Failed(id, "unknown exception");
    }
  }
}

void HandlerRegistry::Failed(const std::string& id, const std::string& what) {
  if (std::find(to_detach_.begin(), to_detach_.end(), id) != to_detach_.end()) return;
  errors_.fetch_add(1, std::memory_order_relaxed);
  to_detach_.push_back(id);
  log_("handler \"" + id + "\" threw (" + what + "); detached");
  std::lock_guard<std::mutex> lock(mu_);
  detached_.push_back(id + ": " + what);
}

}  // namespace pitlane::internal
