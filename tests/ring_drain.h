// What the host does with a ring, for tests of the reader alone: read a batch, hand each copied
// record (and each sequence gap before it) to a sink, then publish.
#pragma once

#include <cstdint>

#include "pitlane/shm.h"

namespace pitlane::shm {

class RecordSink {
 public:
  virtual ~RecordSink() = default;
  virtual void OnRecord(const uint8_t* payload, uint32_t length, uint32_t seq) = 0;
  virtual void OnLost(uint64_t count) = 0;
};

inline size_t Drain(RingReader& reader, size_t max_records, RecordSink& sink) {
  RecordBatch batch;
  const size_t n = reader.ReadBatch(max_records, &batch);
  for (const RecordBatch::Record& r : batch.records) {
    if (r.lost_before != 0) sink.OnLost(r.lost_before);
    sink.OnRecord(batch.payload(r), r.length, r.seq);
  }
  reader.Publish();
  return n;
}

}  // namespace pitlane::shm
