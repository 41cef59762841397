// A Host reading rings a hostile worker controls: bytes flipped under the reader, FlatBuffer
// payload attacks behind correct record headers, a segment truncated to zero while the host
// polls it. The host never crashes; bad data becomes a counted rejection or a quarantine of
// that ring only, and every other ring keeps delivering everything.
//
// The rings here are made by hand through the registry (as a worker would), so the test decides
// every byte. ring_test.cc covers the malicious record-header table against RingReader alone.
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "flatbuffers/flatbuffers.h"
#include "pitlane/catalog.h"
#include "pitlane/fb/event_generated.h"
#include "pitlane/host.h"
#include "pitlane/record.h"
#include "pitlane/registry.h"
#include "pitlane/shm.h"
#include "testing.h"

namespace pitlane {
namespace {

using namespace std::chrono_literals;

// A ring made by hand: a worker slot of this process (its own worker id), a ring slot, the
// segment, published in the registry. Record payloads are an event the default catalog admits
// ("python.call.start") whose system_time measurement carries `value`.
class HandRing {
 public:
  HandRing(const std::string& ns, const std::string& worker_id, uint64_t data_bytes = 4096) {
    Result<shm::Segment> reg = shm::OpenRegistry(ns);
    EXPECT_TRUE(reg.ok()) << reg.status().ToString();
    registry_ = std::move(reg).value();
    const uint64_t start = shm::ProcessStartTime(::getpid());
    const int32_t ws = shm::ClaimWorkerSlot(registry_, ::getpid(), start, worker_id);
    EXPECT_GE(ws, 0);
    const int32_t rs = shm::ClaimRingSlot(registry_, static_cast<uint32_t>(ws));
    EXPECT_GE(rs, 0);
    name_ = shm::RingName(ns, ::getpid(), static_cast<uint32_t>(rs));
    Result<shm::Segment> seg = shm::Segment::Create(name_, shm::RingSegmentBytes(data_bytes));
    EXPECT_TRUE(seg.ok()) << seg.status().ToString();
    segment_ = std::move(seg).value();
    const uint64_t generation = shm::WorkerSlotAt(registry_.base(), ws)->generation;
    shm::RingInit init;
    init.data_bytes = data_bytes;
    init.ring_slot = static_cast<uint32_t>(rs);
    init.worker_slot = static_cast<uint32_t>(ws);
    init.pid = ::getpid();
    init.start_time = start;
    init.generation = generation;
    init.worker_id = worker_id;
    shm::InitRing(segment_.base(), init);
    writer_ = shm::RingWriter(segment_.base());
    shm::PublishRingSlot(registry_, static_cast<uint32_t>(rs), name_, generation);
    shm::BumpEpoch(registry_);
  }

  // Writes a record with `payload`; false when the ring is full.
  bool Write(const uint8_t* payload, uint32_t length) {
    shm::RingWriter::Bump(writer_.counters().emitted);
    shm::RingWriter::Reserve why;
    uint8_t* p = writer_.TryReserve(length, &why);
    if (p == nullptr) {
      shm::RingWriter::Bump(why == shm::RingWriter::Reserve::kFull
                                ? writer_.counters().dropped_full
                                : writer_.counters().dropped_too_large);
      return false;
    }
    std::memcpy(p, payload, length);
    writer_.Commit();
    return true;
  }
  bool Write(const std::vector<uint8_t>& payload) {
    return Write(payload.data(), static_cast<uint32_t>(payload.size()));
  }
  bool WriteValue(int64_t value) { return Write(ValidEvent(value)); }

  // A FlatBuffer the host delivers: python.call.start {system_time: value}.
  static std::vector<uint8_t> ValidEvent(int64_t value) {
    const Measurement m[] = {{"system_time", value}};
    RecordFields f;
    f.name = "python.call.start";
    f.timestamp = 1;
    f.measurements = m;
    f.measurement_count = 1;
    PreparedRecord p;
    PrepareRecord(f, Catalog::Default().get(), /*use_ids=*/true, &p);
    EXPECT_GT(p.size, 0u);
    std::vector<uint64_t> aligned((p.size + 7) / 8);
    EncodeRecord(f, p, reinterpret_cast<uint8_t*>(aligned.data()));
    const auto* b = reinterpret_cast<const uint8_t*>(aligned.data());
    return std::vector<uint8_t>(b, b + p.size);
  }

  shm::RingHeader* header() const { return static_cast<shm::RingHeader*>(segment_.base()); }
  uint8_t* data() const { return static_cast<uint8_t*>(segment_.base()) + shm::kRingHeaderBytes; }
  uint64_t capacity() const { return header()->data_bytes; }
  const std::string& name() const { return name_; }
  // Unmaps our side (before truncating the segment under the host).
  void Unmap() { segment_ = shm::Segment(); }

 private:
  shm::Segment registry_;
  std::string name_;
  shm::Segment segment_;
  shm::RingWriter writer_;
};

// What the host delivered, per worker id: the system_time values in order. Filled by a
// handler on the poll thread, read by the test.
class Delivered {
 public:
  void AttachTo(Host& host) {
    ASSERT_TRUE(host.Attach("collect", "*", [this](const EventView& v) {
                      const Value* t = v.measurement("system_time");
                      std::lock_guard<std::mutex> lock(mu_);
                      values_[std::string(v.worker_id)].push_back(t ? t->i : -1);
                    }).ok());
  }
  std::vector<int64_t> Of(const std::string& worker_id) const {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = values_.find(worker_id);
    return it == values_.end() ? std::vector<int64_t>{} : it->second;
  }

 private:
  mutable std::mutex mu_;
  std::map<std::string, std::vector<int64_t>> values_;
};

std::vector<int64_t> Iota(int64_t n) {
  std::vector<int64_t> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[static_cast<size_t>(i)] = i;
  return v;
}

RingStats StatsOf(const Host& host, const std::string& segment) {
  for (const RingStats& s : host.Rings()) {
    if (s.segment == segment) return s;
  }
  ADD_FAILURE() << "host does not know ring " << segment;
  return RingStats();
}

class HostileShmTest : public ::testing::Test {
 protected:
  void SetUp() override {
    HostOptions ho;
    ho.ns = ns_.name();
    ho.log = [this](std::string_view line) {
      std::lock_guard<std::mutex> lock(log_mu_);
      log_.emplace_back(line);
    };
    Result<std::unique_ptr<Host>> h = Host::Start(ho);
    ASSERT_TRUE(h.ok()) << h.status().ToString();
    host_ = std::move(h).value();
    delivered_.AttachTo(*host_);
  }

  std::vector<std::string> LogLinesMentioning(const std::string& what) {
    std::lock_guard<std::mutex> lock(log_mu_);
    std::vector<std::string> out;
    for (const std::string& l : log_) {
      if (l.find(what) != std::string::npos) out.push_back(l);
    }
    return out;
  }

  testing::ScopedNamespace ns_;
  Delivered delivered_;  // outlives the host, whose handler points into it
  std::mutex log_mu_;
  std::vector<std::string> log_;
  std::unique_ptr<Host> host_;
};

// ─── (a) bytes flipped under a polling host ───────────────────────────────────────────────────

TEST_F(HostileShmTest, BytesFlippedUnderThePollingHostAreRejectionsOrAQuarantineNeverACrash) {
#if defined(__SANITIZE_THREAD__)
  // The flipper writes bytes the poll thread is reading, without synchronisation, on purpose
  // (that is the attack): ThreadSanitizer rightly reports it as a data race. ASan/UBSan and the
  // main build run it.
  GTEST_SKIP() << "deliberate data race on the shared mapping";
#endif
  HandRing healthy_a(ns_.name(), "healthy-a");
  HandRing healthy_b(ns_.name(), "healthy-b", 8192);
  int64_t healthy_written = 0;

  constexpr int kRounds = 5;
  constexpr int kFlipsPerRound = 3000;
  constexpr int kMinPollsPerRound = 300;
  const auto deadline = std::chrono::steady_clock::now() + 60s;
  std::vector<std::unique_ptr<HandRing>> victims;
  for (int round = 0; round < kRounds; ++round) {
    victims.push_back(
        std::make_unique<HandRing>(ns_.name(), "victim-" + std::to_string(round)));
    HandRing& victim = *victims.back();
    std::atomic<bool> done{false};
    // The hostile worker: writes valid records and flips bytes in the data area, the producer
    // position and the record header at the host's read position. Seeded per round.
    std::thread flipper([&victim, &done, round] {
      std::mt19937_64 rng(1000 + static_cast<uint64_t>(round));
      const std::vector<uint8_t> rec = HandRing::ValidEvent(7);
      const uint64_t mask = victim.capacity() - 1;
      for (int flip = 0; flip < kFlipsPerRound; ++flip) {
        victim.Write(rec);
        switch (rng() % 8) {
          case 0: {  // producer position: nearby, aligned or not, or anywhere
            const uint64_t p = victim.header()->producer.load(std::memory_order_relaxed);
            victim.header()->producer.store(rng() % 2 ? p + (rng() % 64) - 32 : rng(),
                                            std::memory_order_release);
            break;
          }
          case 1: {  // the record header where the host reads next
            const uint64_t c = victim.header()->consumer.load(std::memory_order_relaxed);
            const shm::RecordHeader h{static_cast<uint32_t>(rng() % 300),
                                      static_cast<uint32_t>(rng() % 4)};
            std::memcpy(victim.data() + (c & mask & ~uint64_t{7}), &h, sizeof(h));
            break;
          }
          default:  // any byte of the data area
            victim.data()[rng() & mask] ^= static_cast<uint8_t>(1u << (rng() % 8));
        }
        if (flip % 16 == 0) std::this_thread::yield();
      }
      done.store(true);
    });
    // The host polls all rings while the flipper works (bounded by flips, not by time).
    for (int i = 0; (i < kMinPollsPerRound || !done.load()) &&
                    std::chrono::steady_clock::now() < deadline;
         ++i) {
      if (healthy_a.WriteValue(healthy_written)) {
        ASSERT_TRUE(healthy_b.WriteValue(healthy_written));
        ++healthy_written;
      }
      host_->PollOnce();
    }
    flipper.join();
  }
  for (int i = 0; i < 20; ++i) host_->PollOnce();

  // Other rings: everything delivered, in order, nothing rejected, nothing quarantined.
  for (const HandRing* r : {&healthy_a, &healthy_b}) {
    const RingStats s = StatsOf(*host_, r->name());
    EXPECT_FALSE(s.quarantined) << s.quarantine_reason;
    EXPECT_EQ(s.rejected_total(), 0u);
    EXPECT_EQ(s.delivered, static_cast<uint64_t>(healthy_written));
    EXPECT_TRUE(s.Conserved());
  }
  EXPECT_GE(healthy_written, kRounds * kMinPollsPerRound / 2);
  EXPECT_EQ(delivered_.Of("healthy-a"), Iota(healthy_written));
  EXPECT_EQ(delivered_.Of("healthy-b"), Iota(healthy_written));

  // Victims: each outcome is counted. A quarantined ring says why, in its stats and the log.
  uint64_t quarantined = 0, rejected = 0;
  for (const auto& v : victims) {
    const RingStats s = StatsOf(*host_, v->name());
    rejected += s.rejected_total();
    if (s.quarantined) {
      ++quarantined;
      EXPECT_FALSE(s.quarantine_reason.empty());
      EXPECT_EQ(LogLinesMentioning("quarantined ring " + v->name()).size(), 1u);
    }
  }
  EXPECT_GT(quarantined + rejected, 0u);
  EXPECT_EQ(host_->Stats().quarantined_rings, quarantined);
}

// ─── (b) FlatBuffer payload attacks behind correct record headers ────────────────────────────

struct PayloadAttack {
  const char* label;
  std::vector<uint8_t> payload;
};

// A valid Event built with FlatBufferBuilder, so the attacks can find its parts.
struct BuiltEvent {
  flatbuffers::FlatBufferBuilder b;
  BuiltEvent() {
    const uint16_t key = Catalog::Default()->MeasurementKeyId("system_time");
    const auto name = b.CreateString("python.call.start");
    const std::vector<fb::IntMeasure> ints{fb::IntMeasure(key, 42)};
    const auto iv = b.CreateVectorOfStructs(ints);
    const auto corr = b.CreateString("corr");
    fb::EventBuilder eb(b);
    eb.add_name(name);
    eb.add_ints(iv);
    eb.add_correlation_id(corr);
    eb.add_timestamp(1);
    b.Finish(eb.Finish(), fb::EventIdentifier());
  }
  std::vector<uint8_t> Bytes() const {
    return std::vector<uint8_t>(b.GetBufferPointer(), b.GetBufferPointer() + b.GetSize());
  }
  // Offset of `p` (inside the finished buffer) from its start.
  size_t OffsetOf(const void* p) const {
    return static_cast<size_t>(static_cast<const uint8_t*>(p) - b.GetBufferPointer());
  }
  const fb::Event* event() const { return fb::GetEvent(b.GetBufferPointer()); }
};

void Put32(std::vector<uint8_t>& v, size_t at, uint32_t x) { std::memcpy(v.data() + at, &x, 4); }
uint32_t Get32(const std::vector<uint8_t>& v, size_t at) {
  uint32_t x;
  std::memcpy(&x, v.data() + at, 4);
  return x;
}

std::vector<PayloadAttack> PayloadAttacks() {
  const BuiltEvent ev;
  const std::vector<uint8_t> base = ev.Bytes();
  const size_t root = Get32(base, 0);  // the root table; its first 4 bytes are its soffset
  std::vector<PayloadAttack> out;
  {
    std::vector<uint8_t> p = base;
    Put32(p, root, static_cast<uint32_t>(-static_cast<int32_t>(p.size() * 16)));
    out.push_back({"vtable offset pointing outside the buffer", p});
  }
  {
    std::vector<uint8_t> p = base;
    Put32(p, root, Get32(p, root) + 1);
    out.push_back({"table with a bad (misaligned) soffset", p});
  }
  {
    std::vector<uint8_t> p = base;
    const size_t vtable = root - static_cast<int32_t>(Get32(p, root));
    const uint16_t huge = 0xFFF0;
    std::memcpy(p.data() + vtable, &huge, 2);  // the vtable claims 32K field offsets
    out.push_back({"vtable larger than the buffer", p});
  }
  {
    std::vector<uint8_t> p = base;
    Put32(p, ev.OffsetOf(ev.event()->ints()), 0x80000000u);
    out.push_back({"vector length 2^31", p});
  }
  {
    std::vector<uint8_t> p = base;
    const auto* name = ev.event()->name();
    p[ev.OffsetOf(name->c_str()) + name->size()] = 'x';
    out.push_back({"string without NUL terminator", p});
  }
  {
    std::vector<uint8_t> p = base;
    Put32(p, ev.OffsetOf(ev.event()->name()), 0x7FFFFFF0u);
    out.push_back({"string length past the end", p});
  }
  {
    // A [Meta] vector of 1100 references to one table: our schema nests Event → Meta →
    // string, so depth is bounded by the schema and the Verifier's table budget (1024) is what
    // stops a buffer that makes it walk the same subtree over and over.
    flatbuffers::FlatBufferBuilder b;
    const auto key = b.CreateString("k");
    const auto meta = fb::CreateMeta(b, 0, key, key);
    const std::vector<flatbuffers::Offset<fb::Meta>> metas(1100, meta);
    const auto mv = b.CreateVector(metas);
    const auto name = b.CreateString("python.call.start");
    fb::EventBuilder eb(b);
    eb.add_name(name);
    eb.add_meta(mv);
    b.Finish(eb.Finish(), fb::EventIdentifier());
    out.push_back({"1100 tables sharing one subtree (deeper/wider than our schema allows)",
                   std::vector<uint8_t>(b.GetBufferPointer(), b.GetBufferPointer() + b.GetSize())});
  }
  {
    std::vector<uint8_t> p = base;
    std::memcpy(p.data() + 4, "XXXX", 4);
    out.push_back({"wrong file identifier", p});
  }
  {
    std::vector<uint8_t> p = base;
    p.resize(p.size() / 2);
    out.push_back({"FlatBuffer cut in half", p});
  }
  {
    // The ints vector moved by 4 bytes: a valid-looking length, structs misaligned.
    std::vector<uint8_t> p = base;
    const size_t at = ev.OffsetOf(ev.event()->ints());
    const auto* table = reinterpret_cast<const flatbuffers::Table*>(ev.event());
    const size_t ref = ev.OffsetOf(table) + table->GetOptionalFieldOffset(fb::Event::VT_INTS);
    Put32(p, ref, Get32(p, ref) - 4);  // uoffset now lands 4 bytes earlier
    Put32(p, at - 4, 1);               // ... on a length of 1
    out.push_back({"struct vector with misaligned elements", p});
  }
  return out;
}

TEST_F(HostileShmTest, FlatBufferAttacksAreRejectedAsMalformedAndTheRingReadsOn) {
  // Sanity: the unmodified buffer is delivered.
  {
    HandRing r(ns_.name(), "baseline");
    ASSERT_TRUE(r.Write(BuiltEvent().Bytes()));
    host_->PollOnce();
    host_->PollOnce();
    ASSERT_EQ(delivered_.Of("baseline"), std::vector<int64_t>{42});
  }
  HandRing hostile(ns_.name(), "hostile", 65536);
  HandRing other(ns_.name(), "other");
  host_->PollOnce();  // discovers both rings
  const std::vector<PayloadAttack> attacks = PayloadAttacks();
  int64_t n = 0;
  for (const PayloadAttack& a : attacks) {
    SCOPED_TRACE(a.label);
    ASSERT_TRUE(hostile.WriteValue(n));
    ASSERT_TRUE(other.WriteValue(n));
    ++n;
    ASSERT_TRUE(hostile.Write(a.payload));
    const RingStats before = StatsOf(*host_, hostile.name());
    for (int i = 0; i < 3; ++i) host_->PollOnce();
    const RingStats s = StatsOf(*host_, hostile.name());
    EXPECT_EQ(s.rejected[shm::kRejectMalformed], before.rejected[shm::kRejectMalformed] + 1);
    EXPECT_FALSE(s.quarantined) << "a bad payload is data, not ring corruption: "
                                << s.quarantine_reason;
  }
  ASSERT_TRUE(hostile.WriteValue(n));
  ASSERT_TRUE(other.WriteValue(n));
  ++n;
  for (int i = 0; i < 3; ++i) host_->PollOnce();

  const RingStats s = StatsOf(*host_, hostile.name());
  EXPECT_FALSE(s.quarantined);
  EXPECT_EQ(s.rejected[shm::kRejectMalformed], attacks.size());
  EXPECT_EQ(s.rejected_total(), attacks.size());
  EXPECT_EQ(s.delivered, static_cast<uint64_t>(n));
  EXPECT_EQ(delivered_.Of("hostile"), Iota(n));
  EXPECT_EQ(delivered_.Of("other"), Iota(n));
  EXPECT_EQ(StatsOf(*host_, other.name()).rejected_total(), 0u);
}

// ─── (c) a segment truncated to zero under a host running in the background ──────────────────

TEST_F(HostileShmTest, SegmentTruncatedToZeroWhileTheHostRunsIsQuarantinedWithAReason) {
#if defined(__SANITIZE_THREAD__)
  // The SIGBUS guard siglongjmps out of the faulting copy; under ThreadSanitizer the fault
  // happens inside its memcpy interceptor and the process dies with SIGBUS whatever the
  // handler (as RingTest.SegmentTruncatedUnderTheReader... does). ASan/UBSan run it.
  GTEST_SKIP() << "SIGBUS recovery is not possible inside ThreadSanitizer's runtime";
#endif
  HandRing victim(ns_.name(), "truncator", 65536);
  HandRing other(ns_.name(), "bystander");
  host_->RunInBackground();

  // Some records are read from the victim, then it shrinks to nothing under the host.
  for (int64_t i = 0; i < 50; ++i) ASSERT_TRUE(victim.WriteValue(i));
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (delivered_.Of("truncator").size() < 50 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(1ms);
  }
  ASSERT_EQ(delivered_.Of("truncator"), Iota(50));
  // Publish more, then truncate before the host can have read all of them.
  for (int64_t i = 50; i < 400; ++i) ASSERT_TRUE(victim.WriteValue(i));
  victim.Unmap();
  {
    const int fd = shm_open(victim.name().c_str(), O_RDWR, 0);
    ASSERT_GE(fd, 0) << std::strerror(errno);
    ASSERT_EQ(ftruncate(fd, 0), 0) << std::strerror(errno);
    close(fd);
  }
  // The bystander keeps delivering while and after the victim goes.
  int64_t n = 0;
  while (std::chrono::steady_clock::now() < deadline &&
         (LogLinesMentioning("quarantined ring " + victim.name()).empty() || n < 2000)) {
    if (other.WriteValue(n)) ++n;
    std::this_thread::sleep_for(20us);
  }
  while (std::chrono::steady_clock::now() < deadline &&
         delivered_.Of("bystander").size() < static_cast<size_t>(n)) {
    std::this_thread::sleep_for(1ms);
  }
  host_->Stop();

  const std::vector<std::string> lines = LogLinesMentioning("quarantined ring " + victim.name());
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_NE(lines[0].find("truncator"), std::string::npos) << lines[0];  // names the worker
  EXPECT_NE(lines[0].find("SIGBUS"), std::string::npos) << lines[0];     // and says why
  const RingStats s = StatsOf(*host_, victim.name());
  EXPECT_TRUE(s.quarantined);
  EXPECT_NE(s.quarantine_reason.find("truncated"), std::string::npos) << s.quarantine_reason;
  const std::vector<int64_t> got = delivered_.Of("truncator");
  ASSERT_GE(got.size(), 50u);
  EXPECT_EQ(got, Iota(static_cast<int64_t>(got.size())));  // a prefix, nothing torn
  EXPECT_EQ(host_->Stats().quarantined_rings, 1u);

  const RingStats o = StatsOf(*host_, other.name());
  EXPECT_FALSE(o.quarantined);
  EXPECT_EQ(o.rejected_total(), 0u);
  EXPECT_EQ(delivered_.Of("bystander"), Iota(n));
}

}  // namespace
}  // namespace pitlane

namespace pitlane {
namespace {

// ─── (e) one counter per kind of malicious record header ─────────────────────────────────────

struct HeaderAttack {
  const char* label;
  shm::QuarantineReason want;
  // Corrupts `r` whose next record would go at position `p` with sequence `seq`; returns the
  // producer position to publish.
  std::function<uint64_t(HandRing& r, uint64_t p, uint32_t seq)> apply;
};

void PutHeader(HandRing& r, uint64_t pos, uint32_t length, uint32_t seq) {
  const shm::RecordHeader h{length, seq};
  std::memcpy(r.data() + (pos & (r.capacity() - 1)), &h, sizeof h);
}

TEST_F(HostileShmTest, EachMaliciousHeaderIsQuarantinedUnderItsOwnReasonAndOtherRingsReadOn) {
  const std::vector<HeaderAttack> attacks = {
      {"length 0", shm::kQuarantineZeroLength,
       [](HandRing& r, uint64_t p, uint32_t seq) {
         PutHeader(r, p, 0, seq);
         return p + 16;
       }},
      {"larger than the ring", shm::kQuarantineTooLong,
       [](HandRing& r, uint64_t p, uint32_t seq) {
         PutHeader(r, p, 1u << 20, seq);
         return p + 16;
       }},
      {"length that overflows", shm::kQuarantineTooLong,
       [](HandRing& r, uint64_t p, uint32_t seq) {
         PutHeader(r, p, 0xFFFFFFF9u, seq);
         return p + 16;
       }},
      {"crossing the wrap", shm::kQuarantineCrossesEnd,
       [](HandRing& r, uint64_t p, uint32_t seq) {
         // Valid records up to the last 64 bytes, then one claiming 200 bytes from there.
         while ((p & (r.capacity() - 1)) < r.capacity() - 64) {
           const auto ev = HandRing::ValidEvent(0);
           const uint64_t rec = shm::RecordBytes(static_cast<uint32_t>(ev.size()));
           if ((p & (r.capacity() - 1)) + rec > r.capacity() - 64) break;
           EXPECT_TRUE(r.Write(ev));
           p += rec;
           ++seq;
         }
         PutHeader(r, p, 200, seq);
         return p + shm::RecordBytes(200);
       }},
      {"misaligned producer", shm::kQuarantineProducerMisaligned,
       [](HandRing& r, uint64_t p, uint32_t seq) {
         PutHeader(r, p, 8, seq);
         return p + 12;
       }},
      {"runs past the producer", shm::kQuarantinePastProducer,
       [](HandRing& r, uint64_t p, uint32_t seq) {
         PutHeader(r, p, 64, seq);
         return p + 16;
       }},
      {"sequence going backwards", shm::kQuarantineSequenceBackwards,
       [](HandRing& r, uint64_t p, uint32_t seq) {
         const auto ev = HandRing::ValidEvent(7);
         PutHeader(r, p, static_cast<uint32_t>(ev.size()), seq - 2);
         std::memcpy(r.data() + (p & (r.capacity() - 1)) + 8, ev.data(), ev.size());
         return p + shm::RecordBytes(static_cast<uint32_t>(ev.size()));
       }},
      {"producer beyond the ring", shm::kQuarantineProducerOutside,
       [](HandRing& r, uint64_t p, uint32_t) { return p + r.capacity() + 8; }},
      {"skip marker past the producer", shm::kQuarantineSkipPastProducer,
       [](HandRing& r, uint64_t p, uint32_t seq) {
         PutHeader(r, p, shm::kSkipMarker, seq);
         return p + 8;
       }},
  };
  HandRing healthy(ns_.name(), "healthy");
  std::vector<std::unique_ptr<HandRing>> rings;
  for (size_t i = 0; i < attacks.size(); ++i) {
    rings.push_back(std::make_unique<HandRing>(ns_.name(), "attacked-" + std::to_string(i)));
  }
  // Three good records each, delivered.
  for (auto& r : rings) {
    for (int v = 0; v < 3; ++v) ASSERT_TRUE(r->WriteValue(v));
  }
  for (int v = 0; v < 3; ++v) ASSERT_TRUE(healthy.WriteValue(v));
  while (host_->PollOnce() > 0) {
  }
  for (size_t i = 0; i < attacks.size(); ++i) {
    HandRing& r = *rings[i];
    const uint64_t p = r.header()->producer.load();
    const uint64_t publish = attacks[i].apply(r, p, r.header()->worker.published.load());
    r.header()->producer.store(publish, std::memory_order_release);
  }
  for (int v = 3; v < 6; ++v) ASSERT_TRUE(healthy.WriteValue(v));
  for (int pass = 0; pass < 10; ++pass) host_->PollOnce();

  const HostStats s = host_->Stats();
  uint64_t want[shm::kQuarantineReasonCount] = {};
  for (const HeaderAttack& a : attacks) ++want[a.want];
  for (uint32_t k = 0; k < shm::kQuarantineReasonCount; ++k) {
    EXPECT_EQ(s.quarantined_by_reason[k], want[k]) << shm::QuarantineReasonName(k);
  }
  EXPECT_EQ(s.quarantined_rings, attacks.size());
  for (size_t i = 0; i < attacks.size(); ++i) {
    SCOPED_TRACE(attacks[i].label);
    const RingStats rs = StatsOf(*host_, rings[i]->name());
    EXPECT_TRUE(rs.quarantined);
    EXPECT_EQ(rs.quarantine_kind, attacks[i].want)
        << shm::QuarantineReasonName(rs.quarantine_kind) << ": " << rs.quarantine_reason;
    // What came before the attack was delivered, once, in order; nothing after it.
    const std::vector<int64_t> got = delivered_.Of("attacked-" + std::to_string(i));
    ASSERT_GE(got.size(), 3u);
    EXPECT_EQ(std::vector<int64_t>(got.begin(), got.begin() + 3), Iota(3));
  }
  EXPECT_EQ(delivered_.Of("healthy"), Iota(6));
  EXPECT_FALSE(StatsOf(*host_, healthy.name()).quarantined);
}

}  // namespace
}  // namespace pitlane
