#include "pre_attach.h"

#include <new>

namespace pitlane::internal {

uint8_t* PreAttachBuffer::Reserve(size_t size) {
  mu_.lock();  // released by Commit(), or below when there is no room
  const size_t padded = (size + 7) & ~size_t{7};
  if (closed_ || size == 0 || index_.size() >= max_events_ || bytes_ + padded > max_bytes_) {
    mu_.unlock();
    return nullptr;
  }
  try {
    data_.resize((bytes_ + padded) / 8);
    index_.emplace_back(bytes_, size);
  } catch (...) {
    mu_.unlock();
    return nullptr;
  }
  uint8_t* at = reinterpret_cast<uint8_t*>(data_.data()) + bytes_;
  bytes_ += padded;
  return at;
}

void PreAttachBuffer::Commit() { mu_.unlock(); }  // pairs with the lock in Reserve()

PreAttachBuffer::Flushed PreAttachBuffer::Flush(
    const std::function<bool(const uint8_t*, size_t)>& publish) {
  std::lock_guard<std::mutex> lock(mu_);
  Flushed out;
  closed_ = true;
  const uint8_t* base = reinterpret_cast<const uint8_t*>(data_.data());
  for (const auto& [offset, size] : index_) {
    if (publish(base + offset, size)) {
      ++out.published;
    } else {
      ++out.refused;
    }
  }
  index_.clear();
  data_.clear();
  data_.shrink_to_fit();
  bytes_ = 0;
  return out;
}

void PreAttachBuffer::ResetInChild() {
  new (&mu_) std::mutex();  // the parent's copy is never destroyed
  index_.clear();
  data_.clear();
  bytes_ = 0;
  closed_ = false;
}

bool PreAttachBuffer::closed() const {
  std::lock_guard<std::mutex> lock(mu_);
  return closed_;
}

size_t PreAttachBuffer::pending() const {
  std::lock_guard<std::mutex> lock(mu_);
  return index_.size();
}

}  // namespace pitlane::internal
