// The host's handler registry: who is attached to which events, and dispatch.
//
// Thread safety: Attach, Detach, List, Detached and errors() from any thread; Refresh and
// Dispatch on the poll thread only. Attach/Detach publish a new immutable table (copy on write,
// under mu_); the poll thread picks it up at the next Refresh, so dispatch takes no lock.
// A handler that throws is detached (once) and logged; the rest of the pass never calls it again.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "pitlane/catalog.h"
#include "pitlane/host.h"
#include "pitlane/status.h"

namespace pitlane::internal {

class HandlerRegistry {
 public:
  HandlerRegistry(const Catalog& catalog, std::function<void(const std::string&)> log);

  // `events` are host names or "*". Fails on an empty id, an unknown name, a duplicate id.
  Status Attach(const std::string& id, const std::vector<std::string>& events, Handler fn);
  bool Detach(const std::string& id);
  std::vector<HandlerInfo> List() const;
  std::vector<std::string> Detached() const;  // "<id>: <what()>"
  uint64_t errors() const { return errors_.load(std::memory_order_relaxed); }

  // Poll thread.
  void Refresh();
  void Dispatch(const EventView& view);

 private:
  struct Entry {
    std::string id;
    std::vector<std::string> events;
    std::shared_ptr<Handler> fn;
    bool all = false;
  };
  struct Table {
    std::vector<Entry> entries;
    // Per event id: the handlers to call, in attach order.
    std::vector<std::vector<std::pair<std::string, std::shared_ptr<Handler>>>> by_event;
  };
  // REQUIRES: mu_ held.
  void PublishLocked(std::shared_ptr<Table> table);
  void Failed(const std::string& id, const std::string& what);

  const Catalog& catalog_;
  std::function<void(const std::string&)> log_;

  mutable std::mutex mu_;
  std::shared_ptr<const Table> shared_;       // GUARDED_BY(mu_)
  std::vector<std::string> detached_;         // GUARDED_BY(mu_)
  std::atomic<uint64_t> version_{1};          // bumped (release) after shared_ changes
  std::atomic<uint64_t> errors_{0};

  // Poll thread only.
  std::shared_ptr<const Table> current_;
  uint64_t seen_ = 0;
  std::vector<std::string> to_detach_;  // handlers that threw during this pass
};

}  // namespace pitlane::internal
