// The SPSC byte ring (shm.h) driven directly: RingWriter and RingReader over a segment the test
// creates, with self-validating records (sequence + checksum) and corruption written by hand.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include "ring_drain.h"

#include <atomic>
#include <cstdint>
#include <cstring>
#include <functional>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "pitlane/shm.h"
#include "testing.h"

namespace pitlane::shm {
namespace {

// ─── self-validating records ─────────────────────────────────────────────────────────────────
// Payload: u64 index, u64 checksum, then filler bytes derived from the index. The length is a
// function of the index, so a reader can tell a record is whole and in its place.

uint32_t PayloadLength(uint64_t index, uint32_t max_payload) {
  const uint32_t span = max_payload - 16 + 1;
  return 16 + static_cast<uint32_t>((index * 2654435761u) % span);
}

uint64_t Checksum(uint64_t index, const uint8_t* filler, size_t n) {
  uint64_t h = 1469598103934665603ull ^ index;
  for (size_t i = 0; i < n; ++i) h = (h ^ filler[i]) * 1099511628211ull;
  return h;
}

void FillPayload(uint64_t index, uint8_t* p, uint32_t length) {
  std::memcpy(p, &index, 8);
  for (uint32_t i = 16; i < length; ++i) p[i] = static_cast<uint8_t>(index * 31 + i);
  const uint64_t sum = Checksum(index, p + 16, length - 16);
  std::memcpy(p + 8, &sum, 8);
}

// Checks a payload; returns its index or nullopt.
std::optional<uint64_t> CheckPayload(const uint8_t* p, uint32_t length) {
  if (length < 16) return std::nullopt;
  uint64_t index, sum;
  std::memcpy(&index, p, 8);
  std::memcpy(&sum, p + 8, 8);
  if (sum != Checksum(index, p + 16, length - 16)) return std::nullopt;
  return index;
}

// Counts what a reader hands over and checks each record against the expected sequence.
class CheckingSink : public RecordSink {
 public:
  explicit CheckingSink(uint32_t max_payload) : max_payload_(max_payload) {}

  void OnRecord(const uint8_t* payload, uint32_t length, uint32_t seq) override {
    ++records;
    const std::optional<uint64_t> index = CheckPayload(payload, length);
    if (!index) {
      ++bad;
      return;
    }
    if (*index != next_index || seq != static_cast<uint32_t>(next_index) ||
        length != PayloadLength(*index, max_payload_)) {
      ++bad;
    }
    next_index = *index + 1;
    if (on_record) on_record();
  }
  void OnLost(uint64_t count) override {
    lost_calls.push_back(count);
    next_index += count;
  }

  uint64_t records = 0;
  uint64_t bad = 0;
  uint64_t next_index = 0;
  std::vector<uint64_t> lost_calls;
  std::function<void()> on_record;

 private:
  uint32_t max_payload_;
};

// Records raw payloads (for hand-written records).
class RawSink : public RecordSink {
 public:
  void OnRecord(const uint8_t* payload, uint32_t length, uint32_t seq) override {
    payloads.emplace_back(payload, payload + length);
    seqs.push_back(seq);
    if (on_record) on_record();
  }
  void OnLost(uint64_t count) override { lost_calls.push_back(count); }
  std::vector<std::vector<uint8_t>> payloads;
  std::vector<uint32_t> seqs;
  std::vector<uint64_t> lost_calls;
  std::function<void()> on_record;
};

// A ring segment of this test's own namespace.
class TestRing {
 public:
  explicit TestRing(uint64_t data_bytes, uint64_t initial_position = 0, uint32_t slot = 0)
      : name_(RingName(ns_.name(), getpid(), slot)) {
    Result<Segment> seg = Segment::Create(name_, RingSegmentBytes(data_bytes));
    EXPECT_TRUE(seg.ok()) << seg.status().ToString();
    if (!seg.ok()) return;
    segment_ = std::move(seg).value();
    RingInit init;
    init.data_bytes = data_bytes;
    init.pid = getpid();
    init.start_time = ProcessStartTime(getpid());
    init.worker_id = "ring-test";
    init.initial_position = initial_position;
    InitRing(segment_.base(), init);
  }

  RingHeader* header() const { return static_cast<RingHeader*>(segment_.base()); }
  uint8_t* data() const { return static_cast<uint8_t*>(segment_.base()) + kRingHeaderBytes; }
  uint64_t capacity() const { return header()->data_bytes; }
  uint32_t max_record() const { return header()->max_record_bytes; }
  uint32_t max_payload() const { return max_record() - kRecordHeaderBytes; }
  const std::string& name() const { return name_; }
  const Segment& segment() const { return segment_; }

  RingReader Reader() const {
    Result<RingReader> r = RingReader::Attach(segment_.base(), segment_.size(), name_);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return std::move(r).value();
  }

  // Writes a record header by hand at position `pos` (masked) and returns its end.
  void PutHeader(uint64_t pos, uint32_t length, uint32_t seq) const {
    const RecordHeader h{length, seq};
    std::memcpy(data() + (pos & (capacity() - 1)), &h, sizeof(h));
  }
  void PublishProducer(uint64_t pos) const {
    header()->producer.store(pos, std::memory_order_release);
  }

 private:
  testing::ScopedNamespace ns_;
  std::string name_;
  Segment segment_;
};

// Writes record `index` if it fits. Returns the reserve outcome.
RingWriter::Reserve WriteRecord(RingWriter& w, uint64_t index, uint32_t length) {
  RingWriter::Reserve why;
  uint8_t* p = w.TryReserve(length, &why);
  if (p == nullptr) return why;
  EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % 8, 0u);
  FillPayload(index, p, length);
  w.Commit();
  return why;
}

// ─── round trip, wrap-around ─────────────────────────────────────────────────────────────────

TEST(RingTest, SelfValidatingRecordsRoundTripInOrder) {
  TestRing ring(65536);
  RingWriter w(ring.segment().base());
  RingReader r = ring.Reader();
  CheckingSink sink(200);
  for (uint64_t i = 0; i < 100; ++i) {
    ASSERT_EQ(WriteRecord(w, i, PayloadLength(i, 200)), RingWriter::Reserve::kOk);
  }
  EXPECT_EQ(Drain(r, 1000, sink), 100u);
  EXPECT_EQ(sink.records, 100u);
  EXPECT_EQ(sink.bad, 0u);
  EXPECT_TRUE(sink.lost_calls.empty());
  EXPECT_EQ(r.state(), RingReader::State::kOk);
  EXPECT_EQ(ring.header()->worker.published.load(), 100u);
  EXPECT_EQ(ring.header()->consumer.load(), ring.header()->producer.load());
  EXPECT_EQ(Drain(r, 1000, sink), 0u);  // nothing more
}

class RingWrapTest : public ::testing::TestWithParam<uint64_t> {};

// Positions start below 2^64 and wrap past it, over many laps, with record sizes that do not
// divide the ring, so records regularly meet the end of the data area (skip markers).
TEST_P(RingWrapTest, ManyLapsAcrossPositionWrapKeepEveryRecordWhole) {
  const uint64_t cap = GetParam();
  const uint64_t initial = uint64_t{0} - (2 * cap + 1000);  // mid-ring, 2+ laps before 2^64
  TestRing ring(cap, initial);
  RingWriter w(ring.segment().base());
  RingReader r = ring.Reader();
  const uint32_t max_payload = ring.max_payload();
  CheckingSink sink(max_payload);
  std::mt19937_64 rng(cap);

  uint64_t written = 0, skips = 0;
  bool crossed_zero = false;
  const uint64_t target_bytes = 60 * cap;
  uint64_t bytes = 0;
  while (bytes < target_bytes) {
    // Fill until full.
    for (;;) {
      const uint32_t len = PayloadLength(written, max_payload);
      const uint64_t wpos = ring.header()->producer.load();
      const uint64_t off = wpos & (cap - 1);
      const RingWriter::Reserve why = WriteRecord(w, written, len);
      if (why == RingWriter::Reserve::kFull) break;
      ASSERT_EQ(why, RingWriter::Reserve::kOk);
      if (RecordBytes(len) > cap - off) ++skips;
      const uint64_t next = ring.header()->producer.load();
      if (next < wpos) crossed_zero = true;
      bytes += next - wpos;
      ++written;
    }
    // Nothing unread was overwritten: drain a random number of records, then refill.
    const size_t batch = 1 + rng() % 16;
    Drain(r, batch, sink);
    ASSERT_EQ(r.state(), RingReader::State::kOk) << r.error();
  }
  while (Drain(r, 1024, sink) > 0) {
  }
  EXPECT_EQ(r.state(), RingReader::State::kOk) << r.error();
  EXPECT_TRUE(crossed_zero) << "positions never wrapped past 2^64";
  EXPECT_GT(skips, 10u) << "records never met the end of the data area";
  EXPECT_EQ(sink.records, written);
  EXPECT_EQ(sink.bad, 0u);
  EXPECT_TRUE(sink.lost_calls.empty());
  EXPECT_EQ(ring.header()->consumer.load(), ring.header()->producer.load());
  EXPECT_EQ(ring.header()->worker.published.load(), written);
}

// A writer thread and a reader thread over the same ring, positions wrapping past 2^64.
TEST_P(RingWrapTest, ConcurrentWriterAndReaderDeliverEveryRecordOnce) {
  const uint64_t cap = GetParam();
  const uint64_t initial = uint64_t{0} - (3 * cap + 4096);
  TestRing ring(cap, initial);
  const uint32_t max_payload = ring.max_payload() < 512 ? ring.max_payload() : 512;
  constexpr uint64_t kRecords = 200000;
  RingReader r = ring.Reader();
  CheckingSink sink(max_payload);

  std::thread writer([&] {
    RingWriter w(ring.segment().base());
    for (uint64_t i = 0; i < kRecords;) {
      const RingWriter::Reserve why = WriteRecord(w, i, PayloadLength(i, max_payload));
      if (why == RingWriter::Reserve::kOk) {
        ++i;
      } else if (why == RingWriter::Reserve::kFull) {
        std::this_thread::yield();  // back-pressure only in this test; never a correctness wait
      } else {
        ADD_FAILURE() << "unexpected reserve outcome";
        return;
      }
    }
  });
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (sink.records < kRecords && r.state() == RingReader::State::kOk &&
         std::chrono::steady_clock::now() < deadline) {
    if (Drain(r, 64, sink) == 0) std::this_thread::yield();
  }
  writer.join();
  EXPECT_EQ(r.state(), RingReader::State::kOk) << r.error();
  EXPECT_EQ(sink.records, kRecords);
  EXPECT_EQ(sink.bad, 0u);
  EXPECT_TRUE(sink.lost_calls.empty());
}

INSTANTIATE_TEST_SUITE_P(RingSizes, RingWrapTest, ::testing::Values(4096, 8192, 65536, 1 << 20),
                         [](const ::testing::TestParamInfo<uint64_t>& i) {
                           return "bytes" + std::to_string(i.param);
                         });

// ─── full ring, too large, batching ──────────────────────────────────────────────────────────

TEST(RingTest, FullRingRefusesTheNewestAndNeverOverwritesUnreadData) {
  TestRing ring(4096);
  RingWriter w(ring.segment().base());
  // 248-byte payloads make 256-byte records: exactly 16 fill the ring.
  constexpr uint32_t kLen = 248;
  uint64_t i = 0;
  while (WriteRecord(w, i, kLen) == RingWriter::Reserve::kOk) ++i;
  EXPECT_EQ(i, 16u);
  for (int k = 0; k < 10; ++k) {
    RingWriter::Reserve why;
    EXPECT_EQ(w.TryReserve(kLen, &why), nullptr);
    EXPECT_EQ(why, RingWriter::Reserve::kFull);
    EXPECT_EQ(w.TryReserve(8, &why), nullptr);
    EXPECT_EQ(why, RingWriter::Reserve::kFull);
  }
  EXPECT_EQ(ring.header()->producer.load() - ring.header()->consumer.load(), 4096u);

  // Every unread record is intact.
  RingReader r = ring.Reader();
  RawSink raw;
  EXPECT_EQ(Drain(r, 1, raw), 1u);
  // One record read: room for exactly one more.
  EXPECT_EQ(WriteRecord(w, i, kLen), RingWriter::Reserve::kOk);
  ++i;
  EXPECT_EQ(WriteRecord(w, i, kLen), RingWriter::Reserve::kFull);
  EXPECT_EQ(Drain(r, 100, raw), 16u);
  ASSERT_EQ(raw.payloads.size(), 17u);
  for (uint64_t k = 0; k < raw.payloads.size(); ++k) {
    const std::optional<uint64_t> index = CheckPayload(raw.payloads[k].data(), kLen);
    ASSERT_TRUE(index.has_value()) << "record " << k << " was overwritten";
    EXPECT_EQ(*index, k);
    EXPECT_EQ(raw.seqs[k], k);
  }
  // Drained: room again.
  for (int k = 0; k < 16; ++k) EXPECT_EQ(WriteRecord(w, i++, kLen), RingWriter::Reserve::kOk);
}

TEST(RingTest, RecordLargerThanMaxRecordIsTooLarge) {
  for (uint64_t cap : {uint64_t{4096}, uint64_t{65536}}) {
    TestRing ring(cap, 0, static_cast<uint32_t>(cap));
    RingWriter w(ring.segment().base());
    const uint32_t max_payload = ring.max_payload();
    RingWriter::Reserve why;
    EXPECT_EQ(w.TryReserve(max_payload + 1, &why), nullptr);
    EXPECT_EQ(why, RingWriter::Reserve::kTooLarge);
    EXPECT_EQ(w.TryReserve(0xFFFFFFF0u, &why), nullptr);
    EXPECT_EQ(why, RingWriter::Reserve::kTooLarge);
    EXPECT_NE(w.TryReserve(max_payload, &why), nullptr);
    EXPECT_EQ(why, RingWriter::Reserve::kOk);
    EXPECT_EQ(ring.header()->producer.load(), 0u);  // a reservation alone publishes nothing
  }
}

TEST(RingTest, ConsumerPositionIsPublishedPerBatchNotPerRecord) {
  TestRing ring(65536);
  RingWriter w(ring.segment().base());
  for (uint64_t i = 0; i < 50; ++i) ASSERT_EQ(WriteRecord(w, i, 64), RingWriter::Reserve::kOk);
  RingReader r = ring.Reader();
  RawSink sink;
  std::vector<uint64_t> seen_consumer;
  sink.on_record = [&] { seen_consumer.push_back(ring.header()->consumer.load()); };
  EXPECT_EQ(Drain(r, 20, sink), 20u);
  ASSERT_EQ(seen_consumer.size(), 20u);
  for (uint64_t c : seen_consumer) EXPECT_EQ(c, 0u) << "consumer moved inside a batch";
  EXPECT_EQ(ring.header()->consumer.load(), 20u * RecordBytes(64));
  EXPECT_EQ(r.consumer(), 20u * RecordBytes(64));
  seen_consumer.clear();
  EXPECT_EQ(Drain(r, 100, sink), 30u);
  for (uint64_t c : seen_consumer) EXPECT_EQ(c, 20u * RecordBytes(64));
  EXPECT_EQ(ring.header()->consumer.load(), 50u * RecordBytes(64));
}

// ─── quarantine on corruption ────────────────────────────────────────────────────────────────

struct CorruptCase {
  const char* label;
  uint64_t initial_position;
  // Writes the corruption; returns the producer position to publish.
  std::function<uint64_t(const TestRing&)> corrupt;
  const char* error_contains;
  QuarantineReason want = kQuarantineNone;
};

void ExpectQuarantined(const CorruptCase& c) {
  SCOPED_TRACE(c.label);
  TestRing ring(4096, c.initial_position);
  RingReader r = ring.Reader();
  ring.PublishProducer(c.corrupt(ring));
  RawSink sink;
  Drain(r, 256, sink);
  EXPECT_EQ(r.state(), RingReader::State::kCorrupt);
  EXPECT_EQ(r.quarantine_reason(), c.want) << QuarantineReasonName(r.quarantine_reason());
  EXPECT_NE(r.error().find(c.error_contains), std::string::npos)
      << "error \"" << r.error() << "\" does not mention \"" << c.error_contains << "\"";
  EXPECT_TRUE(sink.payloads.empty());
  // Quarantined for good: nothing more is read, the flag is published, the consumer stays.
  EXPECT_EQ(Drain(r, 256, sink), 0u);
  EXPECT_EQ(r.state(), RingReader::State::kCorrupt);
  EXPECT_EQ(ring.header()->host.quarantined.load(), 1u);
  EXPECT_EQ(ring.header()->host.quarantine_offset.load(), r.error_offset());
  EXPECT_EQ(ring.header()->consumer.load(), c.initial_position);
}

TEST(RingTest, ReaderQuarantinesOnCorruptHeaders) {
  const std::vector<CorruptCase> cases = {
      {"length 0", 0,
       [](const TestRing& t) {
         t.PutHeader(0, 0, 0);
         return uint64_t{16};
       },
       "length 0", kQuarantineZeroLength},
      {"length beyond max_record", 0,
       [](const TestRing& t) {
         t.PutHeader(0, t.max_record(), 0);  // header + payload > max_record
         return uint64_t{16};
       },
       "max_record_bytes", kQuarantineTooLong},
      {"huge length", 0,
       [](const TestRing& t) {
         t.PutHeader(0, 0xFFFFFFF0u, 0);
         return uint64_t{16};
       },
       "max_record_bytes", kQuarantineTooLong},
      {"record crossing the end", 4096 - 16,
       [](const TestRing& t) {
         t.PutHeader(4096 - 16, 64, 0);
         return uint64_t{4096 - 16 + 72};
       },
       "crosses the end", kQuarantineCrossesEnd},
      {"record past the producer", 0,
       [](const TestRing& t) {
         t.PutHeader(0, 64, 0);
         return uint64_t{16};
       },
       "past the producer", kQuarantinePastProducer},
      {"skip marker past the producer", 0,
       [](const TestRing& t) {
         t.PutHeader(0, kSkipMarker, 0);
         return uint64_t{8};
       },
       "skip marker", kQuarantineSkipPastProducer},
      {"producer beyond capacity", 0, [](const TestRing&) { return uint64_t{4096 + 8}; },
       "outside the ring", kQuarantineProducerOutside},
      {"producer behind the consumer", 4096, [](const TestRing&) { return uint64_t{4096 - 8}; },
       "outside the ring", kQuarantineProducerOutside},
      {"misaligned producer", 0,
       [](const TestRing& t) {
         t.PutHeader(0, 8, 0);
         return uint64_t{12};
       },
       "aligned", kQuarantineProducerMisaligned},
      {"producer near 2^64 beyond capacity", uint64_t{0} - 64,
       [](const TestRing&) { return uint64_t{8192}; }, "outside the ring", kQuarantineProducerOutside},
  };
  for (const CorruptCase& c : cases) ExpectQuarantined(c);
}

TEST(RingTest, SequenceGoingBackwardsQuarantines) {
  TestRing ring(4096);
  RingWriter w(ring.segment().base());
  ASSERT_EQ(WriteRecord(w, 0, 32), RingWriter::Reserve::kOk);
  ASSERT_EQ(WriteRecord(w, 1, 32), RingWriter::Reserve::kOk);
  RingReader r = ring.Reader();
  RawSink sink;
  EXPECT_EQ(Drain(r, 10, sink), 2u);
  // A third record claiming sequence 0 again.
  const uint64_t pos = ring.header()->producer.load();
  ring.PutHeader(pos, 32, 0);
  ring.PublishProducer(pos + RecordBytes(32));
  EXPECT_EQ(Drain(r, 10, sink), 0u);
  EXPECT_EQ(r.state(), RingReader::State::kCorrupt);
  EXPECT_NE(r.error().find("backwards"), std::string::npos) << r.error();
  EXPECT_EQ(r.quarantine_reason(), kQuarantineSequenceBackwards);
  EXPECT_EQ(sink.payloads.size(), 2u);
  EXPECT_EQ(ring.header()->consumer.load(), pos);
}

TEST(RingTest, SequenceGapIsReportedAsLostAndCounted) {
  TestRing ring(4096);
  {
    RingWriter w(ring.segment().base());
    ASSERT_EQ(WriteRecord(w, 0, 32), RingWriter::Reserve::kOk);
  }
  // A writer whose next sequence is 3: records 1 and 2 never arrive.
  ring.header()->worker.published.store(3);
  RingWriter w(ring.segment().base());
  ASSERT_EQ(WriteRecord(w, 3, 32), RingWriter::Reserve::kOk);
  ASSERT_EQ(WriteRecord(w, 4, 32), RingWriter::Reserve::kOk);
  RingReader r = ring.Reader();
  RawSink sink;
  EXPECT_EQ(Drain(r, 10, sink), 3u);
  EXPECT_EQ(r.state(), RingReader::State::kOk) << r.error();
  EXPECT_EQ(sink.lost_calls, std::vector<uint64_t>{2});
  EXPECT_EQ(sink.seqs, (std::vector<uint32_t>{0, 3, 4}));
  EXPECT_EQ(r.counts().rejected[kRejectLost], 2u);
  EXPECT_EQ(ring.header()->host.rejected[kRejectLost].load(), 2u);
}

// A host killed after its snapshot but before its consumer store: the successor resumes from
// the snapshot, counts nothing twice and sees no sequence going backwards.
TEST(RingTest, SuccessorResumesFromTheLastCompleteHostSnapshot) {
  TestRing ring(4096);
  RingWriter w(ring.segment().base());
  for (uint32_t i = 0; i < 10; ++i) ASSERT_EQ(WriteRecord(w, i, 32), RingWriter::Reserve::kOk);
  RingReader first = ring.Reader();
  RawSink sink;
  sink.on_record = [&] { ++first.counts().delivered; };  // what the host's sink does
  ASSERT_EQ(Drain(first, 5, sink), 5u);
  const uint64_t after_five = ring.header()->consumer.load();
  ASSERT_EQ(Drain(first, 5, sink), 5u);
  // The consumer store of the second batch never happened.
  ring.header()->consumer.store(after_five);
  for (uint32_t i = 10; i < 12; ++i) ASSERT_EQ(WriteRecord(w, i, 32), RingWriter::Reserve::kOk);

  RingReader next = ring.Reader();
  RawSink more;
  more.on_record = [&] { ++next.counts().delivered; };
  EXPECT_EQ(Drain(next, 100, more), 2u);
  EXPECT_EQ(next.state(), RingReader::State::kOk) << next.error();
  EXPECT_EQ(more.seqs, (std::vector<uint32_t>{10, 11}));
  EXPECT_EQ(next.counts().delivered, 12u);
  EXPECT_EQ(next.counts().rejected[kRejectLost], 0u);
}

// Killed while writing a snapshot (the count not yet stored): the successor resumes from the
// previous complete one and reads the batch again; its counters stay exact.
TEST(RingTest, HalfWrittenSnapshotIsIgnoredAndTheBatchIsReadAgain) {
  TestRing ring(4096);
  RingWriter w(ring.segment().base());
  for (uint32_t i = 0; i < 10; ++i) ASSERT_EQ(WriteRecord(w, i, 32), RingWriter::Reserve::kOk);
  RingReader first = ring.Reader();
  RawSink sink;
  sink.on_record = [&] { ++first.counts().delivered; };
  ASSERT_EQ(Drain(first, 5, sink), 5u);
  const uint64_t count = ring.header()->snapshot_count.load();
  const uint64_t consumer = ring.header()->consumer.load();
  ASSERT_EQ(Drain(first, 5, sink), 5u);
  ring.header()->snapshot_count.store(count);  // the flip never happened...
  ring.header()->consumer.store(consumer);     // ...so neither did the consumer store

  RingReader next = ring.Reader();
  RawSink again;
  again.on_record = [&] { ++next.counts().delivered; };
  EXPECT_EQ(Drain(next, 100, again), 5u);
  EXPECT_EQ(again.seqs, (std::vector<uint32_t>{5, 6, 7, 8, 9}));
  EXPECT_EQ(next.counts().delivered, 10u);
  EXPECT_EQ(next.state(), RingReader::State::kOk) << next.error();
}

// A snapshot that cannot be true of its ring (a position outside [consumer, producer], counts
// beyond what the writer published) is not adopted: the reader says why, starts at the
// consumer position with counts of zero, and takes the sequence from the first record it finds
// (nothing is counted lost for the sequence numbers before it).
TEST(RingTest, AContradictorySnapshotIsRefusedAndTheRingReadFromTheConsumerWithFreshCounts) {
  struct Case {
    const char* what;
    void (*forge)(RingHeader* h);
    const char* says;
  } cases[] = {
      {"position outside the ring",
       [](RingHeader* h) { h->snapshots[0].counted_through.store(1 << 20); }, "outside"},
      {"counts beyond what was published",
       [](RingHeader* h) { h->snapshots[0].delivered.store(1000000000); }, "contradict"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    TestRing ring(4096);
    RingWriter w(ring.segment().base());
    for (uint32_t i = 0; i < 6; ++i) ASSERT_EQ(WriteRecord(w, i, 32), RingWriter::Reserve::kOk);
    {
      RingReader first = ring.Reader();
      RawSink sink;
      sink.on_record = [&] { ++first.counts().delivered; };
      ASSERT_EQ(Drain(first, 4, sink), 4u);  // records 0..3 read and snapshotted
    }
    ring.header()->snapshot_count.store(1);
    c.forge(ring.header());
    Result<RingReader> next =
        RingReader::Attach(ring.segment().base(), ring.segment().size(), ring.name());
    ASSERT_TRUE(next.ok()) << next.status().ToString();
    EXPECT_NE(next->snapshot_refused().find(c.says), std::string::npos)
        << next->snapshot_refused();
    EXPECT_EQ(next->counts().delivered, 0u);
    RawSink sink;
    sink.on_record = [&] { ++next->counts().delivered; };
    EXPECT_EQ(Drain(*next, 100, sink), 2u);
    EXPECT_EQ(sink.seqs, (std::vector<uint32_t>{4, 5}));
    EXPECT_EQ(next->counts().delivered, 2u);
    EXPECT_EQ(next->counts().rejected[kRejectLost], 0u);
    EXPECT_EQ(next->state(), RingReader::State::kOk) << next->error();
  }
}

// Whatever garbage sits in the data area and the producer position, the reader never crashes,
// never hands over more than max_record bytes, and either reads on or quarantines.
TEST(RingTest, GarbageInTheDataAreaNeverCrashesTheReader) {
  TestRing ring(4096);
  std::mt19937_64 rng(7);
  uint64_t quarantined = 0;
  for (int iter = 0; iter < 3000; ++iter) {
    RingHeader* h = ring.header();
    for (uint64_t i = 0; i < 4096; i += 8) {
      uint64_t v = rng();
      if (rng() % 4 == 0) v &= 0x000000FF000000FFull;  // plausible small lengths and seqs
      std::memcpy(ring.data() + i, &v, 8);
    }
    const uint64_t start = (rng() % 4096) & ~uint64_t{7};
    h->consumer.store(start);
    for (auto& c : h->host.rejected) c.store(0);
    h->host.delivered.store(0);
    h->host.quarantined.store(0);
    h->snapshot_count.store(0);  // a fresh ring: no previous host's snapshot
    Result<RingReader> r = RingReader::Attach(ring.segment().base(), ring.segment().size(),
                                              ring.name());
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    uint64_t delta = rng() % 3 == 0 ? rng() : rng() % 4200;
    if (rng() % 2 == 0) delta &= ~uint64_t{7};
    h->producer.store(start + delta);
    RawSink sink;
    for (int k = 0; k < 4 && r->state() == RingReader::State::kOk; ++k) Drain(*r, 64, sink);
    for (const auto& p : sink.payloads) ASSERT_LE(RecordBytes(p.size()), ring.max_record());
    if (r->state() != RingReader::State::kOk) {
      ++quarantined;
      EXPECT_EQ(r->state(), RingReader::State::kCorrupt);
      EXPECT_FALSE(r->error().empty());
    }
  }
  EXPECT_GT(quarantined, 0u);
}

// ─── truncated segment ───────────────────────────────────────────────────────────────────────

void Truncate(const std::string& name, off_t bytes) {
  const int fd = shm_open(name.c_str(), O_RDWR, 0);
  ASSERT_GE(fd, 0) << name << ": " << std::strerror(errno);
  ASSERT_EQ(ftruncate(fd, bytes), 0) << std::strerror(errno);
  close(fd);
}

TEST(RingTest, SegmentTruncatedUnderTheReaderIsABusErrorNotACrash) {
  for (off_t to : {off_t{0}, off_t{kRingHeaderBytes}}) {
    SCOPED_TRACE(to);
    TestRing ring(65536, 0, static_cast<uint32_t>(to) + 1);
    RingWriter w(ring.segment().base());
    for (uint64_t i = 0; i < 20; ++i) ASSERT_EQ(WriteRecord(w, i, 100), RingWriter::Reserve::kOk);
    RingReader r = ring.Reader();
    RawSink sink;
    ASSERT_EQ(Drain(r, 5, sink), 5u);
    Truncate(ring.name(), to);
    EXPECT_EQ(Drain(r, 100, sink), 0u);
    EXPECT_EQ(r.state(), RingReader::State::kBusError);
    EXPECT_NE(r.error().find("SIGBUS"), std::string::npos) << r.error();
    EXPECT_EQ(sink.payloads.size(), 5u);
    // Everything else that touches the mapping survives too.
    EXPECT_EQ(Drain(r, 100, sink), 0u);
    r.Publish();
    (void)r.LoadProducerUntrusted();
    EXPECT_FALSE(r.HasUnreadUntrusted());
  }
}

TEST(RingTest, AttachingToATruncatedSegmentFailsCleanly) {
  TestRing ring(4096);
  Truncate(ring.name(), 0);
  Result<RingReader> r = RingReader::Attach(ring.segment().base(), ring.segment().size(),
                                            ring.name());
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find(ring.name()), std::string::npos) << r.status().message();
}

// ─── header validation, segments, namespaces ─────────────────────────────────────────────────

TEST(RingTest, OtherLayoutVersionIsRejectedNamingBothVersions) {
  TestRing ring(4096);
  RingHeader copy;
  std::memcpy(static_cast<void*>(&copy), ring.header(), sizeof(copy));
  EXPECT_TRUE(ValidateRingHeader(copy, ring.segment().size(), ring.name()).ok());
  copy.layout_version = kLayoutVersion + 6;
  const Status s = ValidateRingHeader(copy, ring.segment().size(), ring.name());
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(s.message().find("version " + std::to_string(kLayoutVersion + 6)), std::string::npos)
      << s.message();
  EXPECT_NE(s.message().find("version " + std::to_string(kLayoutVersion)), std::string::npos)
      << s.message();
  EXPECT_NE(s.message().find(ring.name()), std::string::npos) << s.message();

  // The reader refuses such a segment with the same message.
  ring.header()->layout_version = kLayoutVersion + 6;
  Result<RingReader> r = RingReader::Attach(ring.segment().base(), ring.segment().size(),
                                            ring.name());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message(), s.message());
}

TEST(RingTest, HeaderWithBadMagicOrSizesIsRejected) {
  TestRing ring(4096);
  RingHeader good;
  std::memcpy(static_cast<void*>(&good), ring.header(), sizeof(good));
  const auto rejects = [&](auto mutate) {
    RingHeader h;
    std::memcpy(static_cast<void*>(&h), &good, sizeof(h));
    mutate(h);
    return !ValidateRingHeader(h, ring.segment().size(), ring.name()).ok();
  };
  EXPECT_TRUE(rejects([](RingHeader& h) { h.magic = 0; }));
  EXPECT_TRUE(rejects([](RingHeader& h) { h.data_bytes = 3000; }));
  EXPECT_TRUE(rejects([](RingHeader& h) { h.data_bytes = 8192; }));  // larger than the mapping
  EXPECT_TRUE(rejects([](RingHeader& h) { h.header_bytes = 64; }));
  EXPECT_TRUE(rejects([](RingHeader& h) { h.max_record_bytes = 4096; }));
  EXPECT_TRUE(rejects([](RingHeader& h) { h.max_record_bytes = 1020; }));
  EXPECT_FALSE(rejects([](RingHeader&) {}));
}

TEST(RingTest, SegmentsAreCreated0600WhateverTheUmask) {
  testing::ScopedNamespace ns;
  for (mode_t mask : {mode_t{0}, mode_t{022}, mode_t{077}}) {
    const mode_t old = umask(mask);
    const std::string name = RingName(ns.name(), getpid(), mask + 100);
    Result<Segment> seg = Segment::Create(name, 4096);
    umask(old);
    ASSERT_TRUE(seg.ok()) << seg.status().ToString();
    struct stat st;
    ASSERT_EQ(stat(("/dev/shm" + name).c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 07777, 0600u) << "umask " << std::oct << mask;
    EXPECT_EQ(st.st_size, 4096);
    // Exclusive: creating it again fails.
    Result<Segment> again = Segment::Create(name, 4096);
    EXPECT_FALSE(again.ok());
    EXPECT_EQ(again.status().code(), StatusCode::kAlreadyExists);
    EXPECT_TRUE(Segment::Unlink(name));
  }
}

TEST(RingTest, NamespaceNamesAreValidated) {
  EXPECT_FALSE(ValidateNamespace("a/b").ok());
  EXPECT_FALSE(ValidateNamespace("").ok());
  EXPECT_FALSE(ValidateNamespace(std::string(49, 'n')).ok());
  EXPECT_FALSE(ValidateNamespace("a b").ok());
  EXPECT_FALSE(ValidateNamespace("..\x01").ok());
  EXPECT_EQ(ValidateNamespace("a/b").code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(ValidateNamespace(std::string(48, 'n')).ok());
  EXPECT_TRUE(ValidateNamespace("Team-1.test_ns").ok());
}

}  // namespace
}  // namespace pitlane::shm
