// pitlane::worker_grpc — the worker's gRPC transport (remote.h): drains the RemoteQueue onto a
// stream, applies the host's control messages through the worker's gate.
//
// Two ways to reach a host, usable together:
// - dial-in (config.target): the worker dials the host's TelemetryIngest/StreamTelemetry and
//   streams batches (TelemetryUpstream); the host answers with its control state and acks.
//   Sent batches are kept until acked and re-sent after a reconnect (the host drops what it has
//   already seen by sequence number), so a dropped connection loses nothing the worker still
//   holds; reconnects back off exponentially (100 ms → 5 s, ±20 % jitter).
// - serving (config.listen): the worker serves StreamTelemetry at pitlane's path and at
//   Snakepit's (/snakepit.bridge.BridgeService/StreamTelemetry) for a host that dials it; one
//   TelemetryEvent per message, as Snakepit does. A pitlane host announces itself and its
//   catalog (grpc_common.h, kHostMetadata) and then also receives the worker's counters, and,
//   when the catalogs match, each batch as one message of records (pitlane_records).
//
// Keepalive: the client pings every 30 s only while a call is open; the host's server accepts
// pings every 10 s, so a healthy stream never ends with too_many_pings.
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <random>
#include <thread>

#include "pitlane/fb/event_generated.h"
#include "pitlane/defaults.h"
#include "pitlane/grpc_common.h"
#include "remote.h"
#include "snakepit_compat.grpc.pb.h"
#include "telemetry.grpc.pb.h"

namespace pitlane::internal {

namespace {

namespace pb = ::pitlane::v1;

constexpr size_t kBatchEvents = 512;
constexpr size_t kBatchBytes = 1 << 20;
constexpr size_t kMaxUnackedEvents = 65536;
constexpr auto kHeartbeat = std::chrono::milliseconds(500);
constexpr auto kMinBackoff = std::chrono::milliseconds(100);
constexpr auto kMaxBackoff = std::chrono::milliseconds(5000);
// How long a new served stream waits for an ending one it replaces (a re-registering host).
constexpr auto kReplaceWait = std::chrono::milliseconds(1000);

// A record this process encoded (event.fbs) as the seed's TelemetryEvent. false: not a valid
// record (EmitEncoded was handed garbage); `out` then carries no event name, which the host
// counts as an unknown event.
bool RecordToProto(const uint8_t* data, uint32_t size, const Catalog& cat,
                   pb::TelemetryEvent* out) {
  flatbuffers::Verifier v(data, size, 16, 4096);
  if (!fb::VerifyEventBuffer(v)) return false;
  const fb::Event* e = fb::GetEvent(data);
  std::string_view name;
  if (e->event_id() != 0 && e->event_id() <= cat.event_count()) {
    const CatalogEvent& ev = cat.event(e->event_id());
    name = ev.wire_names.empty() ? std::string_view(ev.canonical) : ev.wire_names.front();
  } else if (e->name() != nullptr) {
    name = e->name()->string_view();
  }
  for (size_t pos = 0; pos <= name.size();) {
    const size_t dot = std::min(name.find('.', pos), name.size());
    out->add_event_parts(std::string(name.substr(pos, dot - pos)));
    pos = dot + 1;
  }
  out->set_timestamp_ns(e->clock() == fb::Clock::UnixNs ? static_cast<int64_t>(e->timestamp())
                                                        : 0);
  if (e->correlation_id() != nullptr) out->set_correlation_id(e->correlation_id()->str());
  out->set_pitlane_span_id(e->span_id());
  out->set_pitlane_parent_span_id(e->parent_span_id());
  auto key_of = [&](uint16_t id) {
    return id != 0 && id <= cat.measurement_key_count() ? std::string(cat.MeasurementKey(id))
                                                        : "#" + std::to_string(id);
  };
  auto* m = out->mutable_measurements();
  if (e->ints() != nullptr) {
    for (const fb::IntMeasure* x : *e->ints()) (*m)[key_of(x->key())].set_int_value(x->value());
  }
  if (e->floats() != nullptr) {
    for (const fb::FloatMeasure* x : *e->floats()) {
      (*m)[key_of(x->key())].set_float_value(x->value());
    }
  }
  if (e->measures() != nullptr) {
    for (const fb::Measure* x : *e->measures()) {
      const std::string key = x->key_id() != 0 ? key_of(x->key_id())
                              : x->key()      ? x->key()->str()
                                              : std::string();
      pb::TelemetryValue& val = (*m)[key];
      switch (x->type()) {
        case fb::ValueType::Int: val.set_int_value(x->int_value()); break;
        case fb::ValueType::Float: val.set_float_value(x->float_value()); break;
        default: val.set_string_value(x->string_value() ? x->string_value()->str() : ""); break;
      }
    }
  }
  if (e->meta() != nullptr) {
    auto* md = out->mutable_metadata();
    for (const fb::Meta* x : *e->meta()) {
      std::string key;
      if (x->key_id() != 0 && x->key_id() <= cat.metadata_key_count()) {
        key = std::string(cat.MetadataKey(x->key_id()));
      } else if (x->key() != nullptr) {
        key = x->key()->str();
      }
      (*md)[key] = x->value() ? x->value()->str() : "";
    }
  }
  return true;
}

void FillCounters(const EmitCounters& c, pb::WorkerCounters* out) {
  TallyToProto(c.Load(), out);
}

class GrpcTransport;

// The worker's StreamTelemetry, served at pitlane's and at Snakepit's method path.
template <typename Base>
class ServedStream final : public Base::Service {
 public:
  explicit ServedStream(GrpcTransport* t) : t_(t) {}
  grpc::Status StreamTelemetry(
      grpc::ServerContext* ctx,
      grpc::ServerReaderWriter<pb::TelemetryEvent, pb::TelemetryControl>* stream) override;

 private:
  GrpcTransport* t_;
};

class GrpcTransport final : public RemoteTransport {
 public:
  explicit GrpcTransport(RemoteConfig c) : cfg_(std::move(c)), rng_(std::random_device{}()) {}

  Status Start() {
    // gRPC would serve a port modulo 65536 and leave a malformed target to the first connect:
    // the same address rules as the host's flags, before anything is bound or dialed.
    if (!cfg_.listen.empty()) {
      const Status s = ValidateGrpcAddress(cfg_.listen, AddressUse::kServe,
                                           "grpc_listen (PITLANE_GRPC_LISTEN)");
      if (!s.ok()) return s;
    }
    if (!cfg_.target.empty()) {
      const Status s = ValidateGrpcAddress(cfg_.target, AddressUse::kDial,
                                           "grpc_target (PITLANE_GRPC_TARGET)");
      if (!s.ok()) return s;
    }
    if (!cfg_.listen.empty()) {
      grpc::ServerBuilder b;
      b.AddListeningPort(cfg_.listen, grpc::InsecureServerCredentials(), &port_);
      b.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 10000);
      b.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
      b.RegisterService(&pitlane_service_);
      b.RegisterService(&snakepit_service_);
      server_ = b.BuildAndStart();
      if (!server_ || port_ == 0) {
        return Unavailable("cannot serve StreamTelemetry on " + cfg_.listen +
                           " (address in use or invalid)");
      }
    }
    if (!cfg_.target.empty()) {
      grpc::ChannelArguments args;
      args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 30000);
      args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 10000);
      args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 0);
      args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
      args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 2000);
      std::shared_ptr<grpc::ChannelCredentials> creds = grpc::InsecureChannelCredentials();
      if (!cfg_.tls_ca.empty()) {
        Result<std::string> ca = ReadPemFile(cfg_.tls_ca);
        if (!ca.ok()) return ca.status();
        grpc::SslCredentialsOptions o;
        o.pem_root_certs = std::move(ca).value();
        creds = grpc::SslCredentials(o);
      }
      channel_ = grpc::CreateCustomChannel(cfg_.target, creds, args);
      ingest_ = pb::TelemetryIngest::NewStub(channel_);
      pump_ = std::thread([this] { Pump(); });
    }
    return Status::Ok();
  }

  ~GrpcTransport() override {
    flush_deadline_ = std::chrono::steady_clock::now() + cfg_.flush_timeout;
    stopping_.store(true);
    if (pump_.joinable()) pump_.join();
    if (server_) {
      // Served streams flush on their own until the deadline, then the server cancels them.
      server_->Shutdown(std::chrono::system_clock::now() + cfg_.flush_timeout +
                        std::chrono::milliseconds(200));
      server_->Wait();
    }
  }

  bool connected() const override {
    return dial_connected_.load(std::memory_order_acquire) ||
           served_streams_.load(std::memory_order_acquire) > 0;
  }
  int listen_port() const override { return port_; }

  // ── serving (Snakepit's direction) ─────────────────────────────────────────────────────────
  using ServedStreamRw = grpc::ServerReaderWriter<pb::TelemetryEvent, pb::TelemetryControl>;

  grpc::Status Serve(grpc::ServerContext* ctx, ServedStreamRw* stream) {
    if (grpc::Status auth = CheckBearerToken(*ctx, cfg_.token); !auth.ok()) return auth;
    std::unique_lock<std::timed_mutex> consumer(consumer_mu_, std::defer_lock);
    if (grpc::Status s = TakeQueue(&consumer); !s.ok()) return s;
    {
      std::lock_guard<std::mutex> lock(active_mu_);
      active_ctx_ = ctx;
      active_host_done_ = false;
    }
    const auto& md = ctx->client_metadata();
    const bool pitlane_host = md.count(kHostMetadata) != 0;
    const auto hash = md.find(kCatalogHashMetadata);
    const bool raw = pitlane_host && hash != md.end() &&
                     std::string_view(hash->second.data(), hash->second.size()) ==
                         std::to_string(cfg_.catalog->hash());
    ctx->AddInitialMetadata(kWorkerIdMetadata, cfg_.worker_id);
    ctx->AddInitialMetadata(kPidMetadata, std::to_string(cfg_.pid));
    ctx->AddInitialMetadata(kCatalogHashMetadata, std::to_string(cfg_.catalog->hash()));
    ctx->AddInitialMetadata(kControlStateMetadata, "1");
    stream->SendInitialMetadata();

    ServedState st;
    std::thread reader([&] { ReadControl(*stream, st); });
    served_streams_.fetch_add(1);
    const grpc::Status result = ForwardQueue(*ctx, *stream, st, pitlane_host, raw);
    served_streams_.fetch_sub(1);
    bool done;
    {
      std::lock_guard<std::mutex> l(st.mu);
      done = st.reader_done || !st.refusal.empty();
    }
    if (!done) ctx->TryCancel();  // unblocks the reader's Read
    reader.join();
    {
      std::lock_guard<std::mutex> lock(active_mu_);
      active_ctx_ = nullptr;
    }
    return result;
  }

 private:
  // One served stream's state, shared by its writer (ForwardQueue) and its reader thread.
  struct ServedState {
    std::mutex mu;
    bool reader_done = false;  // guarded by mu: the host closed its side
    std::string refusal;       // guarded by mu: why a control message was refused
  };

  // Takes the queue for a new served stream: at once, or after the ending stream it replaces.
  grpc::Status TakeQueue(std::unique_lock<std::timed_mutex>* consumer) {
    if (!consumer->try_lock() && ServedStreamEnding()) {
      // A host that re-registers (Snakepit's does) cancels its stream and opens a new one at
      // once: the new one waits for the old to notice, then replaces it.
      cfg_.queue->WakeConsumer();
      consumer->try_lock_for(kReplaceWait);
    }
    if (!consumer->owns_lock()) {
      return grpc::Status(grpc::StatusCode::ALREADY_EXISTS,
                          "another host is already streaming from worker " + cfg_.worker_id);
    }
    return grpc::Status::OK;
  }

  // The reader thread of a served stream: applies the host's control messages until the host
  // closes its side or sends one the worker refuses (the previous state is kept; the stream
  // ends with INVALID_ARGUMENT). Each message is one gate update: a pitlane host sends the
  // whole state in one (pitlane_state), a foreign host one part per message.
  void ReadControl(ServedStreamRw& stream, ServedState& st) {
    pb::TelemetryControl msg;
    while (stream.Read(&msg)) {
      std::lock_guard<std::mutex> lock(control_mu_);
      if (Status s = ApplyControlMessage(msg, &control_); !s.ok()) {
        std::lock_guard<std::mutex> l(st.mu);
        st.refusal = s.message();
        break;
      }
      cfg_.apply_control(control_);
    }
    {
      std::lock_guard<std::mutex> lock(active_mu_);
      active_host_done_ = true;
    }
    std::lock_guard<std::mutex> l(st.mu);
    st.reader_done = true;
  }

  // Writes the queue onto a served stream until the host goes away, refuses, or the worker
  // stops (after flushing what it holds, up to the flush deadline). A pitlane host also gets
  // the worker's counters after every batch and at least every kHeartbeat, and, when `raw`,
  // each batch as one message of records.
  grpc::Status ForwardQueue(grpc::ServerContext& ctx, ServedStreamRw& stream, ServedState& st,
                            bool pitlane_host, bool raw) {
    std::vector<uint8_t> data;
    std::vector<std::pair<uint32_t, uint32_t>> recs;
    // A pitlane host gets the counters at once: its first message from a pitlane worker is
    // what tells the host the worker applies its control state itself (host/src/peer_gate.h).
    auto last_counters = std::chrono::steady_clock::now() - kHeartbeat;
    while (true) {
      {
        std::lock_guard<std::mutex> l(st.mu);
        if (!st.refusal.empty()) return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, st.refusal);
        if (st.reader_done) return grpc::Status::OK;  // the host closed its side
      }
      if (ctx.IsCancelled()) return grpc::Status::OK;
      const bool stopping = stopping_.load();
      if (stopping && (cfg_.queue->Empty() || std::chrono::steady_clock::now() > flush_deadline_)) {
        return grpc::Status::OK;
      }
      cfg_.queue->Wait(std::chrono::milliseconds(stopping ? 5 : 50));
      data.clear();
      recs.clear();
      const size_t n = cfg_.queue->Pop(&data, &recs, kBatchEvents, kBatchBytes);
      const auto now = std::chrono::steady_clock::now();
      const bool counters = pitlane_host && (n > 0 || now - last_counters >= kHeartbeat);
      bool ok;
      if (raw) {
        ok = (n == 0 && !counters) || WriteRecords(stream, data, recs, n);
      } else {
        ok = WriteEvents(stream, data, recs, n);
        if (ok && counters) {
          pb::TelemetryEvent c;
          FillCounters(cfg_.queue->counters, c.mutable_pitlane_counters());
          ok = stream.Write(c);
        }
      }
      if (counters) last_counters = now;
      if (!ok) return grpc::Status::OK;  // the host went away
    }
  }

  // `n` popped records as one TelemetryEvent each (the form every peer reads).
  bool WriteEvents(ServedStreamRw& stream, const std::vector<uint8_t>& data,
                   const std::vector<std::pair<uint32_t, uint32_t>>& recs, size_t n) {
    for (size_t i = 0; i < n; ++i) {
      pb::TelemetryEvent ev;
      RecordToProto(data.data() + recs[i].first, recs[i].second, *cfg_.catalog, &ev);
      cfg_.queue->counters.published.fetch_add(1, std::memory_order_relaxed);
      grpc::WriteOptions wo;
      if (i + 1 < n) wo.set_buffer_hint();
      if (!stream.Write(ev, wo)) return false;
    }
    return true;
  }

  // `n` popped records (maybe none) as they are, in one message with the counters after them.
  bool WriteRecords(ServedStreamRw& stream, const std::vector<uint8_t>& data,
                    const std::vector<std::pair<uint32_t, uint32_t>>& recs, size_t n) {
    pb::TelemetryEvent batch;
    batch.mutable_pitlane_records()->Reserve(static_cast<int>(n));
    for (size_t i = 0; i < n; ++i) {
      batch.add_pitlane_records(reinterpret_cast<const char*>(data.data() + recs[i].first),
                                recs[i].second);
    }
    cfg_.queue->counters.published.fetch_add(n, std::memory_order_relaxed);
    FillCounters(cfg_.queue->counters, batch.mutable_pitlane_counters());
    return stream.Write(batch);
  }

  // ── dial-in (the worker dials the host) ───────────────────────────────────────────────────
  // A sent batch, kept until acked. The message lives on its own arena (one allocation run
  // for ~512 events and their maps) and is shared, never copied, for a re-send.
  struct Sent {
    uint64_t first = 0;
    uint64_t count = 0;
    std::shared_ptr<google::protobuf::Arena> arena;
    pb::TelemetryUpstream* msg = nullptr;  // on `arena`
  };

  void Pump() {
    auto backoff = kMinBackoff;
    bool logged = false;
    while (true) {
      if (stopping_.load() && Drained()) break;
      if (stopping_.load() && std::chrono::steady_clock::now() > flush_deadline_) break;
      const auto opened = std::chrono::steady_clock::now();
      const grpc::Status st = RunStream();
      if (stopping_.load()) break;
      if (std::chrono::steady_clock::now() - opened > std::chrono::seconds(2)) {
        backoff = kMinBackoff;
      }
      if (!logged || st.error_code() == grpc::StatusCode::UNAUTHENTICATED) {
        cfg_.log("stream to host " + cfg_.target + " ended (" +
                 std::to_string(static_cast<int>(st.error_code())) + ": " + st.error_message() +
                 "); reconnecting with backoff");
        logged = true;
      }
      // Exponential backoff with ±20 % jitter, interruptible by shutdown.
      std::uniform_real_distribution<double> jitter(0.8, 1.2);
      const auto wait = std::chrono::milliseconds(
          static_cast<int64_t>(static_cast<double>(backoff.count()) * jitter(rng_)));
      const auto until = std::chrono::steady_clock::now() + wait;
      while (std::chrono::steady_clock::now() < until && !stopping_.load()) {
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
      }
      backoff = std::min(backoff * 2, kMaxBackoff);
    }
  }

  bool Drained() {
    std::lock_guard<std::mutex> lock(ack_mu_);
    return cfg_.queue->Empty() && unacked_.empty();
  }

  using Stream = grpc::ClientReaderWriter<pb::TelemetryUpstream, pb::TelemetryDownstream>;

  // What the reader thread of one stream learned, for the writer.
  struct StreamState {
    std::atomic<bool> reader_done{false};
    std::atomic<bool> initial_state{false};  // the host's full control state arrived
    std::atomic<uint64_t> host_catalog_hash{0};
  };

  // The reader thread: control updates, acks, the host's catalog hash. A control update is the
  // whole state in one message (control_state: this worker's hello accepts it) or one part of
  // it (control, from a host that sends the parts); either way one gate update.
  void ReadDownstream(Stream& stream, StreamState& st) {
    pb::TelemetryDownstream msg;
    while (stream.Read(&msg)) {
      if (msg.has_control_state() || msg.has_control()) {
        std::lock_guard<std::mutex> lock(control_mu_);
        const Status s = msg.has_control_state()
                             ? ApplyControlState(msg.control_state(), &control_)
                             : ApplyControlMessage(msg.control(), &control_);
        if (s.ok()) {
          cfg_.apply_control(control_);
        } else {
          cfg_.log("ignored a control message from the host: " + s.message());
        }
      }
      if (msg.acked_sequence() != 0) {
        std::lock_guard<std::mutex> lock(ack_mu_);
        acked_ = std::max<uint64_t>(acked_, msg.acked_sequence());
        while (!unacked_.empty() && unacked_.front().first + unacked_.front().count <= acked_) {
          unacked_events_ -= unacked_.front().count;
          unacked_.pop_front();
        }
      }
      if (msg.catalog_hash() != 0) st.host_catalog_hash.store(msg.catalog_hash());
      if (msg.initial_state_complete()) {
        st.initial_state.store(true);
        dial_connected_.store(true, std::memory_order_release);
      }
    }
    st.reader_done.store(true);
  }

  bool SendHello(Stream& stream) {
    pb::TelemetryUpstream hello;
    pb::WorkerHello* h = hello.mutable_hello();
    h->set_worker_id(cfg_.worker_id);
    h->set_pid(cfg_.pid);
    h->set_node(cfg_.node);
    h->set_catalog_hash(cfg_.catalog->hash());
    h->set_accepts_control_state(true);
    {
      std::lock_guard<std::mutex> lock(control_mu_);
      ControlToProto(control_, h->mutable_current_control());
    }
    FillCounters(cfg_.queue->counters, hello.mutable_counters());
    return stream.Write(hello);
  }

  // Re-sends what the previous stream sent but the host never acknowledged, in the form this
  // host reads.
  bool Resend(Stream& stream, bool raw) {
    std::vector<Sent> again;
    {
      std::lock_guard<std::mutex> lock(ack_mu_);
      again.assign(unacked_.begin(), unacked_.end());
    }
    for (Sent& m : again) {
      if (!raw && m.msg->records_size() > 0) {
        for (const std::string& r : m.msg->records()) {
          RecordToProto(reinterpret_cast<const uint8_t*>(r.data()),
                        static_cast<uint32_t>(r.size()), *cfg_.catalog, m.msg->add_events());
        }
        m.msg->clear_records();
      }
      if (!stream.Write(*m.msg)) return false;
    }
    return true;
  }

  // The next batch message: `n` records popped from the queue, as records or as events.
  Sent MakeBatch(const std::vector<uint8_t>& data,
                 const std::vector<std::pair<uint32_t, uint32_t>>& recs, size_t n, bool raw) {
    Sent s;
    s.first = next_sequence_;
    s.count = n;
    s.arena = std::make_shared<google::protobuf::Arena>();
    s.msg = google::protobuf::Arena::CreateMessage<pb::TelemetryUpstream>(s.arena.get());
    s.msg->set_first_sequence(next_sequence_);
    if (raw) {
      s.msg->mutable_records()->Reserve(static_cast<int>(n));
      for (size_t i = 0; i < n; ++i) {
        s.msg->add_records(reinterpret_cast<const char*>(data.data() + recs[i].first),
                           recs[i].second);
      }
    } else {
      s.msg->mutable_events()->Reserve(static_cast<int>(n));
      for (size_t i = 0; i < n; ++i) {
        RecordToProto(data.data() + recs[i].first, recs[i].second, *cfg_.catalog,
                      s.msg->add_events());
      }
    }
    next_sequence_ += n;
    cfg_.queue->counters.published.fetch_add(n, std::memory_order_relaxed);
    FillCounters(cfg_.queue->counters, s.msg->mutable_counters());
    return s;
  }

  // True while the served stream that holds the queue is ending: its host cancelled it or
  // closed its side, and the serving loop has not noticed yet.
  bool ServedStreamEnding() {
    std::lock_guard<std::mutex> lock(active_mu_);
    return active_ctx_ != nullptr && (active_host_done_ || active_ctx_->IsCancelled());
  }

  // One stream's lifetime. Returns its final status.
  grpc::Status RunStream() {
    std::unique_lock<std::timed_mutex> consumer(consumer_mu_);
    grpc::ClientContext ctx;
    if (!cfg_.token.empty()) ctx.AddMetadata("authorization", "Bearer " + cfg_.token);
    std::unique_ptr<Stream> stream = ingest_->StreamTelemetry(&ctx);
    StreamState st;
    std::thread reader([&] { ReadDownstream(*stream, st); });

    bool ok = SendHello(*stream);
    // The host answers the hello with its control state and catalog hash. Records go up as
    // they are (the bytes a ring would hold) when both ends run the same catalog, so their
    // catalog ids mean the same; otherwise as protobuf events, which carry names.
    const auto answer_by = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (ok && !st.initial_state.load() && !st.reader_done.load() &&
           std::chrono::steady_clock::now() < answer_by) {
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
    const bool raw = st.host_catalog_hash.load() == cfg_.catalog->hash();
    ok = ok && Resend(*stream, raw);

    std::vector<uint8_t> data;
    std::vector<std::pair<uint32_t, uint32_t>> recs;
    auto last_write = std::chrono::steady_clock::now();
    while (ok && !st.reader_done.load()) {
      if (stopping_.load()) {
        if (Drained() || std::chrono::steady_clock::now() > flush_deadline_) break;
      }
      size_t room;
      {
        std::lock_guard<std::mutex> lock(ack_mu_);
        room = unacked_events_ < kMaxUnackedEvents ? kMaxUnackedEvents - unacked_events_ : 0;
      }
      size_t n = 0;
      if (room == 0) {
        // The host is behind: stop taking from the queue (it fills, and drops are counted).
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      } else {
        cfg_.queue->Wait(std::chrono::milliseconds(stopping_.load() ? 2 : 50));
        data.clear();
        recs.clear();
        n = cfg_.queue->Pop(&data, &recs, std::min(room, kBatchEvents), kBatchBytes);
      }
      const auto now = std::chrono::steady_clock::now();
      if (n == 0 && now - last_write < kHeartbeat) continue;
      Sent s = MakeBatch(data, recs, n, raw);
      if (n > 0) {
        std::lock_guard<std::mutex> lock(ack_mu_);
        unacked_.push_back(s);  // shares the arena; `s` keeps it alive during the write
        unacked_events_ += n;
      }
      ok = stream->Write(*s.msg);
      last_write = now;
    }
    if (ok && !st.reader_done.load()) {
      stream->WritesDone();
      // Wait briefly for the host to close its side (its last acks arrive on the way).
      const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(500);
      while (!st.reader_done.load() && std::chrono::steady_clock::now() < until) {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
    }
    if (!st.reader_done.load()) ctx.TryCancel();
    reader.join();
    dial_connected_.store(false, std::memory_order_release);
    return stream->Finish();
  }

  friend class ServedStream<pb::TelemetryService>;
  friend class ServedStream<::snakepit::bridge::BridgeService>;

  RemoteConfig cfg_;
  std::mt19937_64 rng_;
  std::atomic<bool> stopping_{false};
  std::chrono::steady_clock::time_point flush_deadline_{};
  std::timed_mutex consumer_mu_;  // one consumer of the queue at a time
  // The served stream holding consumer_mu_, and whether its host's side has ended.
  std::mutex active_mu_;
  grpc::ServerContext* active_ctx_ = nullptr;  // guarded by active_mu_
  bool active_host_done_ = false;              // guarded by active_mu_
  std::mutex control_mu_;
  ControlState control_;  // guarded by control_mu_

  // dial-in
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<pb::TelemetryIngest::Stub> ingest_;
  std::thread pump_;
  std::atomic<bool> dial_connected_{false};
  uint64_t next_sequence_ = 0;  // consumer only
  std::mutex ack_mu_;
  std::deque<Sent> unacked_;
  uint64_t unacked_events_ = 0;
  uint64_t acked_ = 0;

  // serving
  ServedStream<pb::TelemetryService> pitlane_service_{this};
  ServedStream<::snakepit::bridge::BridgeService> snakepit_service_{this};
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  std::atomic<int> served_streams_{0};
};

template <typename Base>
grpc::Status ServedStream<Base>::StreamTelemetry(
    grpc::ServerContext* ctx,
    grpc::ServerReaderWriter<pb::TelemetryEvent, pb::TelemetryControl>* stream) {
  return t_->Serve(ctx, stream);
}

Result<std::unique_ptr<RemoteTransport>> MakeGrpcTransport(RemoteConfig config) {
  auto t = std::make_unique<GrpcTransport>(std::move(config));
  if (Status s = t->Start(); !s.ok()) return s;
  return std::unique_ptr<RemoteTransport>(std::move(t));
}

}  // namespace

}  // namespace pitlane::internal

// Linking pitlane::worker_grpc makes the gRPC transport available to pitlane::Worker: the
// library's link interface forces this object in (-Wl,--undefined=pitlane_worker_grpc_anchor),
// and its static initialiser registers the factory.
extern "C" {
int pitlane_worker_grpc_anchor = 0;
}
namespace {
const bool registered = [] {
  pitlane::internal::RegisterRemoteTransport(&pitlane::internal::MakeGrpcTransport);
  return true;
}();
}  // namespace
