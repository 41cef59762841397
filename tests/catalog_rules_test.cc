// Every rule of doc/catalog.md, end to end: a real Worker emits into a real Host in this process and
// a handler attached to "*" records what the host delivers.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "pitlane/correlation.h"
#include "pitlane/host.h"
#include "pitlane/record.h"
#include "pitlane/shm.h"
#include "pitlane/worker.h"
#include "testing.h"

namespace pitlane {
namespace {

using namespace std::chrono_literals;

struct OwnedValue {
  Value::Kind kind = Value::Kind::kInt;
  int64_t i = 0;
  double d = 0;
  std::string s;
};

// A copy of what a handler saw.
struct Seen {
  std::string name;
  int64_t timestamp_ns = 0;
  std::string correlation_id;
  std::vector<std::pair<std::string, OwnedValue>> measurements;
  struct Meta {
    std::string key, value;
    uint16_t key_id;
  };
  std::vector<Meta> metadata;
  std::string worker_id;
  uint32_t worker_pid = 0;

  const OwnedValue* measurement(std::string_view key) const {
    for (const auto& [k, v] : measurements) {
      if (k == key) return &v;
    }
    return nullptr;
  }
  size_t meta_count(std::string_view key) const {
    size_t n = 0;
    for (const Meta& m : metadata) n += m.key == key;
    return n;
  }
  std::optional<std::string> meta(std::string_view key) const {
    for (const Meta& m : metadata) {
      if (m.key == key) return m.value;
    }
    return std::nullopt;
  }
  const Meta* meta_entry(std::string_view key) const {
    for (const Meta& m : metadata) {
      if (m.key == key) return &m;
    }
    return nullptr;
  }
};

Seen Copy(const EventView& v) {
  Seen s;
  s.name = std::string(v.name());
  s.timestamp_ns = v.timestamp_ns;
  s.correlation_id = std::string(v.correlation_id);
  for (const MeasurementView& m : v.measurements) {
    OwnedValue o;
    o.kind = m.value.kind;
    o.i = m.value.i;
    o.d = m.value.d;
    o.s = std::string(m.value.s);
    s.measurements.emplace_back(std::string(m.key), std::move(o));
  }
  for (const MetadataView& m : v.metadata) {
    s.metadata.push_back({std::string(m.key), std::string(m.value), m.key_id});
  }
  s.worker_id = std::string(v.worker_id);
  s.worker_pid = v.worker_pid;
  return s;
}

constexpr const char* kWorkerId = "rules-worker";
constexpr const char* kNode = "node-under-test";
constexpr const char* kPool = "pool-under-test";

// Publishes an event as a worker that does not apply the catalog's limits at emit (an older or
// foreign one) would: these tests hold the host's own enforcement. (Worker::Emit refuses or cuts
// such events itself: worker_dropin_test.cc.)
EmitResult EmitUnchecked(Worker& w, std::string_view name, std::span<const Measurement> m,
                         std::span<const Metadata> md, std::string_view correlation_id = {}) {
  RecordFields f;
  f.name = name;  // event_id 0: by name, keys by name
  f.timestamp = static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                          std::chrono::system_clock::now().time_since_epoch())
                                          .count());
  f.clock = 0;  // Unix-epoch nanoseconds
  f.correlation_id = correlation_id;
  f.measurements = m.data();
  f.measurement_count = m.size();
  f.metadata = md.data();
  f.metadata_count = md.size();
  PreparedRecord p;
  PrepareRecord(f, &w.catalog(), /*use_ids=*/false, &p);
  if (p.size == 0) return EmitResult::kDroppedTooLarge;
  std::vector<uint64_t> buf((p.size + 7) / 8);
  EncodeRecord(f, p, reinterpret_cast<uint8_t*>(buf.data()));
  return w.EmitEncoded(w.Event(name), reinterpret_cast<const uint8_t*>(buf.data()), p.size);
}

class CatalogRulesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    HostOptions ho;
    ho.ns = ns_.name();
    ho.node = kNode;
    ho.pool_name = kPool;
    ho.log = [](std::string_view) {};
    Result<std::unique_ptr<Host>> host = Host::Start(ho);
    ASSERT_TRUE(host.ok()) << host.status().ToString();
    host_ = std::move(host).value();
    ASSERT_TRUE(host_->Attach("t", "*", [this](const EventView& v) {
                  if (v.transport != Transport::kHost) seen_.push_back(Copy(v));
                }).ok());
    worker_ = testing::StartWorker(ns_.name(), kWorkerId);
    ASSERT_NE(worker_, nullptr);
  }

  void TearDown() override {
    if (!host_) return;
    if (worker_) {
      ASSERT_TRUE(host_->DrainAll(5s));
      ExpectConserved();
      worker_.reset();
    }
    ASSERT_TRUE(host_->DrainAll(5s));
    ExpectConserved();
  }

  void Drain() { ASSERT_TRUE(host_->DrainAll(5s)); }

  void ExpectConserved() {
    const std::vector<RingStats> rings = host_->Rings();
    for (const RingStats& r : rings) {
      EXPECT_TRUE(r.Conserved()) << r.segment << ": emitted " << r.emitted << " suppressed "
                                 << r.suppressed() << " dropped " << r.dropped() << " published "
                                 << r.published << " delivered " << r.delivered << " rejected "
                                 << r.rejected_total();
    }
  }

  // Totals over every ring the host has seen.
  uint64_t Rejected(uint32_t reason) const {
    uint64_t n = 0;
    for (const RingStats& r : host_->Rings()) n += r.rejected[reason];
    return n;
  }
  uint64_t Truncated() const {
    uint64_t n = 0;
    for (const RingStats& r : host_->Rings()) n += r.truncated;
    return n;
  }
  uint64_t Delivered() const {
    uint64_t n = 0;
    for (const RingStats& r : host_->Rings()) n += r.delivered;
    return n;
  }

  // Emits `name` and expects exactly one rejection for `reason` and no delivery.
  void ExpectRejected(std::string_view name, std::initializer_list<Measurement> m,
                      std::initializer_list<Metadata> md, uint32_t reason,
                      std::string_view correlation_id = {}) {
    SCOPED_TRACE(std::string(name) + " -> " + shm::RejectReasonName(reason));
    const uint64_t before = Rejected(reason);
    const size_t seen_before = seen_.size();
    ASSERT_EQ(EmitUnchecked(*worker_, name, {m.begin(), m.size()}, {md.begin(), md.size()},
                            correlation_id),
              EmitResult::kOk);
    Drain();
    EXPECT_EQ(Rejected(reason), before + 1);
    EXPECT_EQ(seen_.size(), seen_before) << "a rejected event reached a handler";
  }

  // Emits and returns what the handler saw (exactly one new event expected).
  // `unchecked`: published past the worker's emit-time limits (EmitUnchecked).
  std::optional<Seen> EmitAndReceive(std::string_view name, std::initializer_list<Measurement> m,
                                     std::initializer_list<Metadata> md,
                                     std::string_view correlation_id = {}, bool unchecked = false) {
    const size_t before = seen_.size();
    const EmitResult r =
        unchecked ? EmitUnchecked(*worker_, name, {m.begin(), m.size()}, {md.begin(), md.size()},
                                  correlation_id)
                  : worker_->Emit(name, m, md, correlation_id);
    EXPECT_EQ(r, EmitResult::kOk) << EmitResultName(r);
    EXPECT_TRUE(host_->DrainAll(5s));
    EXPECT_EQ(seen_.size(), before + 1) << "event " << name << " was not delivered";
    if (seen_.size() != before + 1) return std::nullopt;
    return seen_.back();
  }

  testing::ScopedNamespace ns_;
  std::unique_ptr<Host> host_;
  std::unique_ptr<Worker> worker_;
  std::vector<Seen> seen_;
};

// ─── names ───────────────────────────────────────────────────────────────────────────────────

TEST_F(CatalogRulesTest, EveryWireAndCanonicalNameArrivesUnderItsHostName) {
  const std::pair<const char*, const char*> table[] = {
      {"python.call.start", "snakepit.python.call.start"},
      {"python.call.stop", "snakepit.python.call.stop"},
      {"python.call.exception", "snakepit.python.call.exception"},
      {"python.memory.sampled", "snakepit.python.memory.sampled"},
      {"python.cpu.sampled", "snakepit.python.cpu.sampled"},
      {"python.gc.completed", "snakepit.python.gc.completed"},
      {"python.error.occurred", "snakepit.python.error.occurred"},
      {"tool.execution.start", "snakepit.python.tool.execution.start"},
      {"tool.execution.stop", "snakepit.python.tool.execution.stop"},
      {"tool.execution.exception", "snakepit.python.tool.execution.exception"},
      {"tool.result_size", "snakepit.python.tool.result_size"},
      {"python.tool.execution.start", "snakepit.python.tool.execution.start"},
      {"python.tool.execution.stop", "snakepit.python.tool.execution.stop"},
      {"python.tool.execution.exception", "snakepit.python.tool.execution.exception"},
      {"python.tool.result_size", "snakepit.python.tool.result_size"},
  };
  for (const auto& [wire, host_name] : table) {
    SCOPED_TRACE(wire);
    EXPECT_NE(worker_->Event(wire).id, 0) << "the worker's catalog does not know " << wire;
    const std::optional<Seen> s = EmitAndReceive(wire, {}, {});
    ASSERT_TRUE(s.has_value());
    EXPECT_EQ(s->name, host_name);
  }
}

TEST_F(CatalogRulesTest, ToolAliasesBothArriveAsTheSnakepitToolEvent) {
  const std::optional<Seen> a = EmitAndReceive("tool.execution.start", {{"system_time", 1}}, {});
  const std::optional<Seen> b =
      EmitAndReceive("python.tool.execution.start", {{"system_time", 2}}, {});
  ASSERT_TRUE(a && b);
  EXPECT_EQ(a->name, "snakepit.python.tool.execution.start");
  EXPECT_EQ(b->name, "snakepit.python.tool.execution.start");
  EXPECT_EQ(Delivered(), 2u);
}

TEST_F(CatalogRulesTest, NamesOutsideTheWorkerCatalogAreRejectedAsUnknown) {
  for (const char* name :
       {"Python.call.start", "inference.start", "snakepit.serialization.unserializable_marker",
        "pool.status", "pool.worker.terminated", "grpc.call.start",
        "snakepit.python.call.start", "python.call", "python.call.start.", "",
        "PYTHON.CALL.STOP", "tool.execution.*"}) {
    SCOPED_TRACE(name);
    EXPECT_EQ(worker_->Event(name).id, 0);
    ExpectRejected(name, {}, {}, shm::kRejectUnknownEvent);
  }
  EXPECT_EQ(host_->Stats().rejected[shm::kRejectUnknownEvent], 12u);
  EXPECT_EQ(Delivered(), 0u);
}

// A worker that sends an infrastructure event's id (or an id out of range) is refused too.
TEST_F(CatalogRulesTest, HostOnlyOrOutOfRangeEventIdsAreRejectedAsUnknown) {
  const Catalog& cat = worker_->catalog();
  const uint16_t pool_status = cat.FindCanonical("pool.status");
  ASSERT_NE(pool_status, 0);
  for (uint16_t id : {pool_status, cat.FindCanonical("grpc.call.start"),
                      static_cast<uint16_t>(cat.event_count() + 1), uint16_t{60000}}) {
    SCOPED_TRACE(id);
    RecordFields f;
    f.event_id = id;
    f.timestamp = shm::UnixNowNs();
    PreparedRecord p;
    PrepareRecord(f, &cat, true, &p);
    ASSERT_GT(p.size, 0u);
    std::vector<uint64_t> buf((p.size + 7) / 8);
    EncodeRecord(f, p, reinterpret_cast<uint8_t*>(buf.data()));
    const uint64_t before = Rejected(shm::kRejectUnknownEvent);
    // The gate of a known id would be looked up; use a neutral handle (passes the gate).
    ASSERT_EQ(worker_->EmitEncoded(worker_->Event("python.call.start"),
                                   reinterpret_cast<const uint8_t*>(buf.data()), p.size),
              EmitResult::kOk);
    Drain();
    EXPECT_EQ(Rejected(shm::kRejectUnknownEvent), before + 1);
  }
  EXPECT_TRUE(seen_.empty());
}

// ─── measurements and metadata ───────────────────────────────────────────────────────────────

TEST_F(CatalogRulesTest, OneBadMeasurementKeyRejectsTheWholeEvent) {
  ExpectRejected("python.call.stop", {{"duration", 1}, {"bogus_key", 2}}, {{"command", "c"}},
                 shm::kRejectBadMeasurementKey);
  ExpectRejected("python.call.stop", {{"Duration", 1}}, {}, shm::kRejectBadMeasurementKey);
  ExpectRejected("python.call.stop", {{"bogus", "string value"}}, {},
                 shm::kRejectBadMeasurementKey);
  ExpectRejected("python.call.stop", {{"bogus", 0.5}, {"duration", 3}}, {},
                 shm::kRejectBadMeasurementKey);
  // Metadata keys are never a reason: an unknown metadata key with a bad measurement is still
  // a bad measurement, and the same event with good keys is delivered.
  const std::optional<Seen> ok =
      EmitAndReceive("python.call.stop", {{"duration", 1}, {"response_size", 2}}, {});
  ASSERT_TRUE(ok);
  EXPECT_EQ(host_->Stats().rejected[shm::kRejectBadMeasurementKey], 4u);
}

TEST_F(CatalogRulesTest, UnknownMeasurementIdIsABadMeasurementKey) {
  // An IntMeasure whose key id the catalog does not have (a hand-encoded record).
  const Measurement m[] = {{MeasurementKey{9999, "nonexistent"}, int64_t{5}}};
  RecordFields f;
  f.event_id = worker_->Event("python.call.stop").id;
  f.timestamp = shm::UnixNowNs();
  f.measurements = m;
  f.measurement_count = 1;
  PreparedRecord p;
  PrepareRecord(f, &worker_->catalog(), true, &p);
  std::vector<uint64_t> buf((p.size + 7) / 8);
  EncodeRecord(f, p, reinterpret_cast<uint8_t*>(buf.data()));
  ASSERT_EQ(worker_->EmitEncoded(worker_->Event("python.call.stop"),
                                 reinterpret_cast<const uint8_t*>(buf.data()), p.size),
            EmitResult::kOk);
  Drain();
  EXPECT_EQ(Rejected(shm::kRejectBadMeasurementKey), 1u);
  EXPECT_TRUE(seen_.empty());
}

TEST_F(CatalogRulesTest, ValuesOfEveryKindArriveAndStringsPassThroughUnchanged) {
  const std::string odd = "  spaces, ünïcödé, \"quotes\"\tand\nnewlines ";
  const std::optional<Seen> s = EmitAndReceive(
      "python.call.start",
      {{"system_time", int64_t{-42}}, {"request_size", std::string_view(odd)},
       {"cpu_percent", 12.75}, {"queue_time", "fast"}},
      {});
  ASSERT_TRUE(s);
  ASSERT_EQ(s->measurements.size(), 4u);
  const OwnedValue* st = s->measurement("system_time");
  ASSERT_NE(st, nullptr);
  EXPECT_EQ(st->kind, Value::Kind::kInt);
  EXPECT_EQ(st->i, -42);
  const OwnedValue* rs = s->measurement("request_size");
  ASSERT_NE(rs, nullptr);
  EXPECT_EQ(rs->kind, Value::Kind::kString);
  EXPECT_EQ(rs->s, odd);
  const OwnedValue* cpu = s->measurement("cpu_percent");
  ASSERT_NE(cpu, nullptr);
  EXPECT_EQ(cpu->kind, Value::Kind::kDouble);
  EXPECT_EQ(cpu->d, 12.75);
  const OwnedValue* qt = s->measurement("queue_time");
  ASSERT_NE(qt, nullptr);
  EXPECT_EQ(qt->kind, Value::Kind::kString);
  EXPECT_EQ(qt->s, "fast");
  EXPECT_EQ(Truncated(), 0u);
}

TEST_F(CatalogRulesTest, UnknownMetadataKeysAreKeptAsPlainStrings) {
  const std::optional<Seen> s = EmitAndReceive(
      "python.call.stop", {{"duration", 1}},
      {{"command", "predict"}, {"custom_key", "x"}, {"Command", "case variant"}, {"my.key-1", ""}});
  ASSERT_TRUE(s);
  EXPECT_EQ(s->meta("custom_key"), "x");
  EXPECT_EQ(s->meta("Command"), "case variant");
  EXPECT_EQ(s->meta("my.key-1"), "");
  ASSERT_NE(s->meta_entry("custom_key"), nullptr);
  EXPECT_EQ(s->meta_entry("custom_key")->key_id, 0);
  EXPECT_EQ(s->meta_entry("Command")->key_id, 0);
  ASSERT_NE(s->meta_entry("command"), nullptr);
  EXPECT_EQ(s->meta_entry("command")->key_id, worker_->catalog().MetadataKeyId("command"));
  EXPECT_EQ(s->meta("command"), "predict");
  EXPECT_EQ(host_->Stats().rejected[shm::kRejectMalformed], 0u);
}

// ─── host context ────────────────────────────────────────────────────────────────────────────

TEST_F(CatalogRulesTest, HostContextOverridesTheWorkersValuesUnderTheSameKeys) {
  const std::optional<Seen> s = EmitAndReceive(
      "python.call.stop", {{"duration", 1}},
      {{"node", "evil-node"}, {"worker_id", "evil-worker"}, {"pool_name", "evil-pool"},
       {"worker_pid", "1"}, {"correlation_id", "evil-id"}, {"timestamp_ns", "1"},
       {"command", "kept"}},
      "pl-real-correlation-id");
  ASSERT_TRUE(s);
  for (const char* key :
       {"node", "worker_id", "pool_name", "worker_pid", "correlation_id", "timestamp_ns"}) {
    EXPECT_EQ(s->meta_count(key), 1u) << key << " appears more than once";
  }
  EXPECT_EQ(s->meta("node"), kNode);
  EXPECT_EQ(s->meta("worker_id"), kWorkerId);
  EXPECT_EQ(s->meta("pool_name"), kPool);
  EXPECT_EQ(s->meta("worker_pid"), std::to_string(getpid()));
  EXPECT_EQ(s->meta("correlation_id"), "pl-real-correlation-id");
  EXPECT_EQ(s->meta("timestamp_ns"), std::to_string(s->timestamp_ns));
  EXPECT_EQ(s->meta("command"), "kept");
  EXPECT_EQ(s->correlation_id, "pl-real-correlation-id");
  EXPECT_EQ(s->worker_id, kWorkerId);
  EXPECT_EQ(s->worker_pid, static_cast<uint32_t>(getpid()));
}

TEST_F(CatalogRulesTest, EmptyCorrelationIdMeansAbsentEvenIfTheWorkerSentOneAsMetadata) {
  const std::optional<Seen> s =
      EmitAndReceive("python.call.stop", {}, {{"correlation_id", "worker-made-up"}});
  ASSERT_TRUE(s);
  EXPECT_EQ(s->meta("correlation_id"), std::nullopt);
  EXPECT_EQ(s->correlation_id, "");
}

TEST_F(CatalogRulesTest, ScopedCorrelationIdIsUsedWhenEmitGivesNone) {
  CorrelationScope scope("pl-scoped-id");
  const std::optional<Seen> s = EmitAndReceive("python.call.start", {}, {});
  ASSERT_TRUE(s);
  EXPECT_EQ(s->correlation_id, "pl-scoped-id");
  EXPECT_EQ(s->meta("correlation_id"), "pl-scoped-id");
}

TEST_F(CatalogRulesTest, TimestampIsUnixEpochNanoseconds) {
  const int64_t before = static_cast<int64_t>(shm::UnixNowNs());
  const std::optional<Seen> s = EmitAndReceive("python.call.start", {{"system_time", 1}}, {});
  const int64_t after = static_cast<int64_t>(shm::UnixNowNs());
  ASSERT_TRUE(s);
  // The worker may stamp with the TSC or the monotonic clock; the host converts. Allow a few
  // seconds of calibration error, no more.
  constexpr int64_t kSlack = 3'000'000'000;
  EXPECT_GT(s->timestamp_ns, before - kSlack);
  EXPECT_LT(s->timestamp_ns, after + kSlack);
  EXPECT_GT(s->timestamp_ns, int64_t{1'600'000'000} * 1'000'000'000);  // after 2020
}

// ─── limits ──────────────────────────────────────────────────────────────────────────────────

// The first `n` measurement keys of the catalog.
std::vector<Measurement> Measurements(const Catalog& cat, size_t n) {
  std::vector<Measurement> out;
  for (size_t i = 1; i <= n; ++i) {
    out.emplace_back(cat.MeasurementKey(static_cast<uint16_t>(i)), static_cast<int64_t>(i));
  }
  return out;
}

// Emits with fields built at run time; expects delivery (returns the event) or `reason`.
std::optional<Seen> EmitSpans(CatalogRulesTest* t, Worker& w, std::vector<Seen>& seen, Host& host,
                              const std::vector<Measurement>& m, const std::vector<Metadata>& md,
                              std::string_view correlation_id = {}) {
  (void)t;
  const size_t before = seen.size();
  EXPECT_EQ(EmitUnchecked(w, "python.call.stop", m, md, correlation_id), EmitResult::kOk);
  EXPECT_TRUE(host.DrainAll(5s));
  if (seen.size() != before + 1) return std::nullopt;
  return seen.back();
}

TEST_F(CatalogRulesTest, MoreThan32MeasurementsAreTooManyFields) {
  ASSERT_GE(worker_->catalog().measurement_key_count(), 33u);
  const std::optional<Seen> ok =
      EmitSpans(this, *worker_, seen_, *host_, Measurements(worker_->catalog(), 32), {});
  ASSERT_TRUE(ok) << "32 measurements were not delivered";
  EXPECT_EQ(ok->measurements.size(), 32u);
  EXPECT_FALSE(EmitSpans(this, *worker_, seen_, *host_, Measurements(worker_->catalog(), 33), {}));
  EXPECT_EQ(Rejected(shm::kRejectTooManyFields), 1u);
}

TEST_F(CatalogRulesTest, MoreThan32MetadataEntriesAreTooManyFields) {
  std::vector<std::string> keys;
  for (int i = 0; i < 33; ++i) keys.push_back("custom_" + std::to_string(i));
  std::vector<Metadata> md;
  for (int i = 0; i < 32; ++i) md.emplace_back(keys[i], "v");
  const std::optional<Seen> ok = EmitSpans(this, *worker_, seen_, *host_, {}, md);
  ASSERT_TRUE(ok) << "32 metadata entries were not delivered";
  EXPECT_EQ(ok->meta("custom_31"), "v");
  md.emplace_back(keys[32], "v");
  EXPECT_FALSE(EmitSpans(this, *worker_, seen_, *host_, {}, md));
  EXPECT_EQ(Rejected(shm::kRejectTooManyFields), 1u);
}

TEST_F(CatalogRulesTest, KeysLongerThan64BytesAreRejected) {
  const std::string key64(64, 'k'), key65(65, 'k');
  const std::optional<Seen> ok =
      EmitAndReceive("python.call.stop", {{"duration", 1}}, {{key64, "fits"}});
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->meta(key64), "fits");
  ExpectRejected("python.call.stop", {}, {{key65, "too long"}}, shm::kRejectKeyTooLong);
  ExpectRejected("python.call.stop", {{key65, 1}}, {}, shm::kRejectKeyTooLong);
  // A 64-byte measurement key is not too long, just not in the allowlist.
  ExpectRejected("python.call.stop", {{key64, 1}}, {}, shm::kRejectBadMeasurementKey);
}

TEST_F(CatalogRulesTest, CorrelationIdOver128BytesIsRejected) {
  const std::string id128(128, 'a'), id129(129, 'b');
  const std::optional<Seen> ok = EmitAndReceive("python.call.start", {}, {}, id128);
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->correlation_id, id128);
  // Emit's explicit argument reaches the host as is; the host applies the limit.
  ExpectRejected("python.call.start", {}, {}, shm::kRejectCorrelationIdTooLong, id129);
}

TEST_F(CatalogRulesTest, CorrelationScopeCutsIdsTo128Bytes) {
  const std::string id129(129, 'c');
  CorrelationScope scope(id129);
  EXPECT_EQ(CurrentCorrelationId().size(), kMaxCorrelationIdBytes);
  const std::optional<Seen> ok = EmitAndReceive("python.call.start", {}, {});
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->correlation_id, std::string(128, 'c'));
  EXPECT_EQ(Rejected(shm::kRejectCorrelationIdTooLong), 0u);
}

TEST_F(CatalogRulesTest, LongValuesAreTruncatedTo1KiBAndTheEventDelivered) {
  std::string long_value;
  for (int i = 0; i < 2000; ++i) long_value += static_cast<char>('a' + i % 26);
  const std::string exact(1024, 'e');

  const std::optional<Seen> meta = EmitAndReceive(
      "python.error.occurred", {{"count", 1}}, {{"traceback", long_value}}, {}, true);
  ASSERT_TRUE(meta);
  EXPECT_EQ(meta->meta("traceback"), long_value.substr(0, 1024));
  EXPECT_EQ(Truncated(), 1u);

  const std::optional<Seen> measure = EmitAndReceive(
      "python.call.start", {{"request_size", std::string_view(long_value)}}, {}, {}, true);
  ASSERT_TRUE(measure);
  const OwnedValue* v = measure->measurement("request_size");
  ASSERT_NE(v, nullptr);
  EXPECT_EQ(v->kind, Value::Kind::kString);
  EXPECT_EQ(v->s, long_value.substr(0, 1024));
  EXPECT_EQ(Truncated(), 2u);

  // Unknown metadata keys are bounded the same way.
  const std::optional<Seen> custom =
      EmitAndReceive("python.call.stop", {}, {{"custom", long_value}}, {}, true);
  ASSERT_TRUE(custom);
  EXPECT_EQ(custom->meta("custom"), long_value.substr(0, 1024));
  EXPECT_EQ(Truncated(), 3u);

  // Exactly 1 KiB is not truncated.
  const std::optional<Seen> fits = EmitAndReceive(
      "python.call.start", {{"request_size", std::string_view(exact)}}, {{"traceback", exact}});
  ASSERT_TRUE(fits);
  EXPECT_EQ(fits->meta("traceback"), exact);
  EXPECT_EQ(fits->measurement("request_size")->s, exact);
  EXPECT_EQ(Truncated(), 3u);
  EXPECT_EQ(host_->Stats().truncated, 3u);
  EXPECT_EQ(Delivered(), 4u);
}

}  // namespace
}  // namespace pitlane
