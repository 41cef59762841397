#include "remote_hub.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <cstring>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <thread>

#include "peer_gate.h"
#include "pitlane/grpc_common.h"
#include "snakepit_compat.grpc.pb.h"
#include "telemetry.grpc.pb.h"

namespace pitlane::internal {

namespace pb = ::pitlane::v1;

namespace {

constexpr size_t kInboxEvents = 65536;      // stream threads wait beyond this
constexpr size_t kMaxWorkerIdBytes = 63;
constexpr auto kMinBackoff = std::chrono::milliseconds(100);
constexpr auto kMaxBackoff = std::chrono::milliseconds(5000);

enum class Direction : uint8_t { kDialIn, kDialOut };
std::string_view DirectionName(Direction d) { return d == Direction::kDialIn ? "dial_in" : "dial_out"; }

// A remote worker by id: what it reported, what the host did with its events.
struct RemoteWorker {
  std::string id;
  uint32_t pid = 0;
  std::string pid_str;
  std::string node;
  std::string peer;
  Direction direction = Direction::kDialIn;
  int open_streams = 0;
  uint64_t streams_opened = 0;
  std::chrono::steady_clock::time_point lost_at{};
  // Of the worker's catalog: from its hello (dial-in) or its initial metadata (dial-out).
  uint64_t catalog_hash = 0;
  // Poll thread (under RemoteHub::Impl::mu for readers).
  uint64_t expected = 0;  // next sequence number the host has not seen
  uint64_t lost = 0;      // sent, never received (a broken connection)
  Tally host_side;        // what the host did with what it received
  Tally reported;         // the worker's own counts (pitlane workers report them)
  bool warned_catalog = false;  // poll thread: logged its records against another catalog
  bool reported_known = false;  // Snakepit's workers report none
  // Dial-out: true until the peer shows it is a pitlane worker; meanwhile the host applies
  // sampling and filters itself (peer_gate.h) and counts what it stops in host_side's
  // suppressed counts. Under `mu`.
  bool host_gated = false;
  // Dial-out: the peer announced (x-pitlane-control-state) that it applies its whole control
  // state from one message (pitlane_state): each update is sent as that message, never as the
  // three parts it would apply one by one. Dial-in decides the same per stream from the hello.
  // Under `mu`.
  bool whole_state = false;
  PeerGate gate;
  std::atomic<uint64_t> acked{0};  // events with a smaller sequence are folded
};

// An open stream to which control messages can be written (any thread, under write_mu).
struct StreamHandle {
  std::mutex write_mu;
  bool closed = false;
  std::function<bool(const ControlState&, bool initial)> send_control;
  std::function<bool(uint64_t)> send_ack;  // dial-in only
  uint64_t ack_sent = 0;
  std::shared_ptr<RemoteWorker> worker;

  // A write to a peer that stops reading blocks once gRPC's buffers for it are full, holding
  // write_mu, and with it every control update for that worker (PushControl runs under the
  // host's control lock, so every update). The watchdog cancels the call of a stream whose write
  // has blocked for kStalledWrite: the write returns false, the stream ends and its peer may
  // reconnect. Steady-clock ns when the write in progress began; 0: none.
  std::atomic<int64_t> writing_since{0};
  // Thread safety: both under cancel_mu. `cancel` ends the call (any thread); Close clears it
  // before the call's context goes away. `stalled`: the watchdog called it.
  std::mutex cancel_mu;
  std::function<void()> cancel;
  bool stalled = false;

  // REQUIRES: write_mu held.
  bool SendControl(const ControlState& s, bool initial) {
    return Timed([&] { return send_control(s, initial); });
  }
  // Sends the worker's cumulative ack when it is newer than the last one sent. REQUIRES:
  // write_mu held, send_ack set.
  void SendNewerAck() {
    const uint64_t acked = worker->acked.load(std::memory_order_acquire);
    if (!closed && acked > ack_sent) {
      Timed([&] { return send_ack(acked); });
      ack_sent = acked;
    }
  }

 private:
  template <class Write>
  bool Timed(Write write) {
    writing_since.store(
        std::chrono::steady_clock::now().time_since_epoch().count(), std::memory_order_relaxed);
    const bool ok = write();
    writing_since.store(0, std::memory_order_relaxed);
    return ok;
  }
};

// How long a write to a stream may block before the stream is cancelled (see StreamHandle).
constexpr auto kStalledWrite = std::chrono::seconds(5);

struct Item {
  enum Kind : uint8_t { kEvents, kOpened, kClosed } kind = kEvents;
  std::shared_ptr<RemoteWorker> worker;
  // kEvents
  // dial-in: a batch parsed onto its own arena (one allocation run per ~512 events)
  struct ArenaBatch {
    google::protobuf::Arena arena;
    pb::TelemetryUpstream* msg = google::protobuf::Arena::CreateMessage<pb::TelemetryUpstream>(&arena);
  };
  std::unique_ptr<ArenaBatch> batch;
  std::vector<pb::TelemetryEvent> events;                 // dial-out
  std::unique_ptr<pb::WorkerCounters> counters;           // dial-out counters-only message
  bool sequenced = false;
  bool gated = false;  // dial-out: the host applies sampling and filters (peer_gate.h)
  // kOpened / kClosed
  bool reconnect = false;
  bool lost = false;
  std::string reason;
  uint64_t downtime_ms = 0;
  uint64_t messages = 0;
  std::string stream_id;
};

}  // namespace

class RemoteHub::Impl final : public pb::TelemetryIngest::Service {
 public:
  HostOptions opt;
  const Catalog* catalog = nullptr;
  Hooks hooks;
  std::unique_ptr<grpc::Server> server;
  int port = 0;
  std::atomic<bool> stopping{false};
  std::atomic<uint64_t> next_stream_id{1};

  // Workers and open streams.
  mutable std::mutex mu;
  std::map<std::string, std::shared_ptr<RemoteWorker>> workers;
  std::multimap<std::string, std::shared_ptr<StreamHandle>> streams;

  // Inbox: stream threads → poll thread.
  mutable std::mutex inbox_mu;
  std::condition_variable inbox_space;
  std::deque<Item> inbox;
  size_t inbox_events = 0;
  std::atomic<bool> inbox_nonempty{false};  // lets an idle poll pass skip the lock

  // Acks: the poll thread flags work, the ack thread writes.
  std::mutex ack_mu;
  std::condition_variable ack_cv;
  bool ack_pending = false;
  std::thread ack_thread;
  std::thread watch_thread;  // Watchdog

  // Dial-in streams: how many are open (capped by opt.grpc_max_streams), and the ones still
  // waiting for their WorkerHello with the time they are cancelled at (the watchdog does it).
  std::atomic<size_t> dial_in_streams{0};
  std::mutex hello_mu;
  std::map<grpc::ServerContext*, std::chrono::steady_clock::time_point> awaiting_hello;

  // Dial-out.
  struct Dialer {
    std::string id, address;
    std::thread thread;
    std::mutex ctx_mu;
    grpc::ClientContext* ctx = nullptr;
  };
  std::vector<std::unique_ptr<Dialer>> dialers;
  std::mutex stop_mu;
  std::condition_variable stop_cv;

  // Poll-thread scratch (reused, so steady state allocates little).
  std::string name;
  std::vector<RawMeasurement> raw_m;
  std::vector<RawMeta> raw_md;
  std::vector<uint64_t> aligned;  // an 8-byte aligned copy of a record, when needed

  void Log(const std::string& s) { hooks.log(s); }

  std::shared_ptr<RemoteWorker> WorkerFor(const std::string& id, Direction d) {
    std::lock_guard<std::mutex> lock(mu);
    auto& w = workers[id];
    if (!w) {
      w = std::make_shared<RemoteWorker>();
      w->id = id;
      w->direction = d;
    }
    return w;
  }

  void Push(Item item, size_t events) {
    {
      std::unique_lock<std::mutex> lock(inbox_mu);
      inbox_space.wait(lock, [&] { return inbox_events < kInboxEvents || stopping.load(); });
      inbox_events += events;
      inbox.push_back(std::move(item));
      inbox_nonempty.store(true, std::memory_order_release);
    }
    hooks.wake();
  }

  // Registers an open stream whose writers `h` already holds, and sends it the whole control
  // state unless `sent` (what the caller wrote to it already) is still current. The stream's
  // write lock is held from before it is registered until that state is written, so a control
  // update (PushControl) either lands before the state is read, and is part of it, or is
  // written after it; it never finds a stream without writers or ahead of its initial state.
  void Open(const std::shared_ptr<StreamHandle>& h, const std::shared_ptr<RemoteWorker>& w,
            Direction d, const std::string& peer, const std::string& stream_id,
            const std::optional<ControlState>& sent = std::nullopt) {
    Item it;
    it.kind = Item::kOpened;
    it.worker = w;
    it.stream_id = stream_id;
    {
      std::lock_guard<std::mutex> wl(h->write_mu);
      h->worker = w;
      {
        std::lock_guard<std::mutex> lock(mu);
        it.reconnect = w->streams_opened > 0;
        if (it.reconnect && w->open_streams == 0) {
          it.downtime_ms = static_cast<uint64_t>(
              std::chrono::duration_cast<std::chrono::milliseconds>(
                  std::chrono::steady_clock::now() - w->lost_at)
                  .count());
        }
        ++w->streams_opened;
        ++w->open_streams;
        w->peer = peer;
        w->direction = d;
        streams.emplace(w->id, h);
      }
      const ControlState now = hooks.control_of(w->id);
      if (!sent || *sent != now) h->SendControl(now, true);
    }
    // Queued only once the write lock is released: Push waits for the poll thread while the
    // inbox is full, and a control update waiting for this lock (PushControl, under the host's
    // apply_mu_) may be made on the poll thread, which would then never poll again. The stream's
    // own items are queued after this one all the same (its thread queues them after Open).
    Push(std::move(it), 0);
  }

  void Close(const std::shared_ptr<StreamHandle>& h, bool lost, std::string reason,
             uint64_t messages, const std::string& stream_id) {
    {
      std::lock_guard<std::mutex> cl(h->cancel_mu);
      h->cancel = nullptr;  // the call's context is about to go away
      if (h->stalled) {
        reason = "cancelled: the peer stopped reading (a write blocked for " +
                 std::to_string(kStalledWrite.count()) + " s)";
      }
    }
    {
      std::lock_guard<std::mutex> wl(h->write_mu);
      h->closed = true;
    }
    {
      std::lock_guard<std::mutex> lock(mu);
      for (auto it = streams.begin(); it != streams.end(); ++it) {
        if (it->second == h) {
          streams.erase(it);
          break;
        }
      }
      --h->worker->open_streams;
      h->worker->lost_at = std::chrono::steady_clock::now();
    }
    Item it;
    it.kind = Item::kClosed;
    it.worker = h->worker;
    it.lost = lost;
    it.reason = std::move(reason);
    it.messages = messages;
    it.stream_id = stream_id;
    Push(std::move(it), 0);
  }

  // The full control state again, on a stream whose peer turned out to take it in another form
  // (a dialed pitlane worker). Read under the write lock: a concurrent update either lands
  // before (and is then part of control_of) or is written after it; read before the lock, an
  // update written in between would be followed by this older state.
  bool SendInitialControl(const std::shared_ptr<StreamHandle>& h) {
    std::lock_guard<std::mutex> wl(h->write_mu);
    if (h->closed) return false;
    return h->SendControl(hooks.control_of(h->worker->id), true);
  }

  // ── dial-in ────────────────────────────────────────────────────────────────────────────
  using DialInStream = grpc::ServerReaderWriter<pb::TelemetryDownstream, pb::TelemetryUpstream>;

  grpc::Status StreamTelemetry(grpc::ServerContext* ctx, DialInStream* stream) override {
    if (grpc::Status auth = CheckBearerToken(*ctx, opt.grpc_token); !auth.ok()) return auth;
    // Each open stream holds this thread (the synchronous API): bound how many there are.
    struct StreamSeat {
      std::atomic<size_t>& n;
      ~StreamSeat() { n.fetch_sub(1, std::memory_order_relaxed); }
    } seat{dial_in_streams};
    if (dial_in_streams.fetch_add(1, std::memory_order_relaxed) >= opt.grpc_max_streams) {
      return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                          "this host already serves " + std::to_string(opt.grpc_max_streams) +
                              " streams (HostOptions::grpc_max_streams)");
    }
    auto first_batch = std::make_unique<Item::ArenaBatch>();
    const pb::TelemetryUpstream* first = first_batch->msg;
    if (std::optional<grpc::Status> refused = ReadHello(ctx, stream, first_batch->msg)) {
      return *refused;
    }
    // A worker that runs a control state (a previous host's, when this host restarted) keeps it
    // unless this host has one for its id: adopted before Open sends the host's state.
    if (first->hello().has_current_control()) {
      ControlState running;
      if (ApplyControlState(first->hello().current_control(), &running).ok()) {
        hooks.adopt_control(first->hello().worker_id(), running);
      }
    }
    std::shared_ptr<RemoteWorker> w = WorkerFor(first->hello().worker_id(), Direction::kDialIn);
    {
      std::lock_guard<std::mutex> lock(mu);
      w->pid = first->hello().pid();
      w->pid_str = std::to_string(w->pid);
      w->node = first->hello().node();
      w->catalog_hash = first->hello().catalog_hash();
    }
    const std::string stream_id = std::to_string(next_stream_id.fetch_add(1));
    auto h = std::make_shared<StreamHandle>();
    SetDialInWriters(*h, stream, first->hello().accepts_control_state());
    h->cancel = [ctx] { ctx->TryCancel(); };
    Open(h, w, Direction::kDialIn, ctx->peer(), stream_id);
    uint64_t messages = 1;
    size_t n = static_cast<size_t>(first->events_size() + first->records_size());
    uint64_t end = first->first_sequence() + n;  // the ack that covers what this stream queued
    Push(Item{Item::kEvents, w, std::move(first_batch), {}, nullptr, true}, n);
    auto next = std::make_unique<Item::ArenaBatch>();
    while (!stopping.load() && stream->Read(next->msg)) {
      ++messages;
      n = static_cast<size_t>(next->msg->events_size() + next->msg->records_size());
      end = std::max<uint64_t>(end, next->msg->first_sequence() + n);
      Push(Item{Item::kEvents, w, std::move(next), {}, nullptr, true}, n);
      next = std::make_unique<Item::ArenaBatch>();
    }
    const bool lost = ctx->IsCancelled();
    if (!lost) SendLastAck(*h, w, end);
    Close(h, lost, lost ? "cancelled or connection broken" : "closed by the worker", messages,
          stream_id);
    return grpc::Status::OK;
  }

  // Reads a dial-in stream's first message into `first`, within the hello timeout. nullopt when
  // it is a WorkerHello with a valid worker id; otherwise how the call ends.
  std::optional<grpc::Status> ReadHello(grpc::ServerContext* ctx, DialInStream* stream,
                                        pb::TelemetryUpstream* first) {
    {
      std::lock_guard<std::mutex> lock(hello_mu);
      awaiting_hello[ctx] = std::chrono::steady_clock::now() + opt.grpc_hello_timeout;
    }
    const bool got_first = stream->Read(first);
    {
      // After this, the watchdog no longer touches ctx (it cancels only under hello_mu).
      std::lock_guard<std::mutex> lock(hello_mu);
      awaiting_hello.erase(ctx);
    }
    if (!got_first) {
      return ctx->IsCancelled()
                 ? grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED,
                                "no WorkerHello within the hello timeout")
                 : grpc::Status::OK;
    }
    if (!first->has_hello() || first->hello().worker_id().empty()) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          "the first message of a stream must carry WorkerHello.worker_id");
    }
    if (first->hello().worker_id().size() > kMaxWorkerIdBytes) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          "worker id is longer than " + std::to_string(kMaxWorkerIdBytes) +
                              " bytes");
    }
    return std::nullopt;
  }

  // How a dial-in stream writes: control (the first message with this host's catalog hash, the
  // last of the initial state with initial_state_complete) and acks. `whole`: the worker's hello
  // accepts control_state, so each update is that one message instead of three parts it would
  // apply one by one.
  void SetDialInWriters(StreamHandle& h, DialInStream* stream, bool whole) {
    const uint64_t catalog_hash = catalog->hash();
    h.send_control = [stream, catalog_hash, whole](const ControlState& s, bool initial) {
      if (whole) {
        pb::TelemetryDownstream d;
        ControlToProto(s, d.mutable_control_state());
        if (initial) {
          d.set_catalog_hash(catalog_hash);
          d.set_initial_state_complete(true);
        }
        return stream->Write(d);
      }
      pb::TelemetryControl c[3];
      ControlToMessages(s, c);
      for (int i = 0; i < 3; ++i) {
        pb::TelemetryDownstream d;
        *d.mutable_control() = c[i];
        if (initial && i == 0) d.set_catalog_hash(catalog_hash);
        d.set_initial_state_complete(initial && i == 2);
        if (!stream->Write(d)) return false;
      }
      return true;
    };
    h.send_ack = [stream](uint64_t seq) {
      pb::TelemetryDownstream d;
      d.set_acked_sequence(seq);
      return stream->Write(d);
    };
  }

  // The worker closed its side: give the poll thread a moment to fold what it sent (the ack
  // reaching `end`), so the last ack reaches the worker before the stream ends. It waits for the
  // ack itself: an inbox without the worker's items does not mean they were folded, since the
  // poll thread takes the whole inbox and only then folds it and raises the ack.
  void SendLastAck(StreamHandle& h, const std::shared_ptr<RemoteWorker>& w, uint64_t end) {
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(1);
    while (w->acked.load(std::memory_order_acquire) < end &&
           std::chrono::steady_clock::now() < until && !stopping.load()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    std::lock_guard<std::mutex> wl(h.write_mu);
    h.SendNewerAck();
  }

  // The open streams, as of now (the set changes under `mu` as streams open and close).
  std::vector<std::shared_ptr<StreamHandle>> OpenStreams() {
    std::lock_guard<std::mutex> l(mu);
    std::vector<std::shared_ptr<StreamHandle>> open;
    open.reserve(streams.size());
    for (auto& [id, h] : streams) open.push_back(h);
    return open;
  }

  // Streams that sent no WorkerHello in time are cancelled: their blocked Read returns and
  // their thread goes back to the server.
  void CancelSilentStreams() {
    const auto now = std::chrono::steady_clock::now();
    std::lock_guard<std::mutex> lock(hello_mu);
    for (auto& [ctx, deadline] : awaiting_hello) {
      if (now >= deadline) ctx->TryCancel();
    }
  }

  void AckLoop() {
    std::unique_lock<std::mutex> lock(ack_mu);
    while (!stopping.load()) {
      ack_cv.wait_for(lock, std::chrono::milliseconds(200),
                      [&] { return ack_pending || stopping.load(); });
      ack_pending = false;
      lock.unlock();
      for (auto& h : OpenStreams()) {
        if (!h->send_ack) continue;  // dial-out: Snakepit's protocol has no acks
        // A stream whose lock another writer holds is skipped: acks are cumulative, the next
        // round sends the newer one, and the other streams' acks do not wait behind a write
        // that may be blocked.
        std::unique_lock<std::mutex> wl(h->write_mu, std::try_to_lock);
        if (wl.owns_lock()) h->SendNewerAck();
      }
      lock.lock();
    }
  }

  // Cancels the streams that hold a thread without making progress: those that sent no
  // WorkerHello in time, and those whose write has blocked for kStalledWrite (StreamHandle). Its
  // own thread: it must run while any writer, the ack thread included, is blocked.
  void Watchdog() {
    while (true) {
      {
        std::unique_lock<std::mutex> lock(stop_mu);
        if (stop_cv.wait_for(lock, std::chrono::milliseconds(250),
                             [&] { return stopping.load(); })) {
          return;
        }
      }
      CancelSilentStreams();
      const int64_t now = std::chrono::steady_clock::now().time_since_epoch().count();
      const int64_t limit = std::chrono::nanoseconds(kStalledWrite).count();
      for (auto& h : OpenStreams()) {
        const int64_t since = h->writing_since.load(std::memory_order_relaxed);
        if (since == 0 || now - since < limit) continue;
        std::lock_guard<std::mutex> cl(h->cancel_mu);
        if (!h->cancel || h->stalled) continue;
        h->stalled = true;
        Log("stream of worker " + h->worker->id + " cancelled: a write to it blocked for " +
            std::to_string(kStalledWrite.count()) + " s (its peer stopped reading)");
        h->cancel();
      }
    }
  }

  // ── dial-out (Snakepit's direction: the host dials a worker) ────────────────────────────
  using DialedStream = grpc::ClientReaderWriter<pb::TelemetryControl, pb::TelemetryEvent>;

  void Dial(Dialer* d) {
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 30000);
    args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 10000);
    args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 0);
    args.SetMaxReceiveMessageSize(static_cast<int>(opt.grpc_max_message_bytes));
    auto channel = grpc::CreateCustomChannel(d->address, grpc::InsecureChannelCredentials(), args);
    auto worker_client = ::snakepit::bridge::BridgeService::NewStub(channel);
    std::shared_ptr<RemoteWorker> w = WorkerFor(d->id, Direction::kDialOut);
    std::mt19937_64 rng(std::random_device{}());
    auto backoff = kMinBackoff;
    bool logged = false;
    while (!stopping.load()) {
      const auto opened = std::chrono::steady_clock::now();
      const grpc::Status st = DialOnce(d, *worker_client, w);
      if (stopping.load()) break;
      if (!logged || st.error_code() == grpc::StatusCode::UNAUTHENTICATED) {
        Log("stream to worker " + d->id + " at " + d->address + " ended (" +
            std::to_string(static_cast<int>(st.error_code())) + ": " + st.error_message() +
            "); redialing with backoff");
        logged = true;
      }
      if (std::chrono::steady_clock::now() - opened > std::chrono::seconds(2)) {
        backoff = kMinBackoff;
      }
      std::uniform_real_distribution<double> jitter(0.8, 1.2);
      std::unique_lock<std::mutex> lock(stop_mu);
      stop_cv.wait_for(lock,
                       std::chrono::milliseconds(static_cast<int64_t>(
                           static_cast<double>(backoff.count()) * jitter(rng))),
                       [&] { return stopping.load(); });
      backoff = std::min(backoff * 2, kMaxBackoff);
    }
  }

  // One stream to a dialed worker: sends the control state, folds what the worker sends until
  // the stream ends, and closes it. Returns how it ended.
  grpc::Status DialOnce(Dialer* d, ::snakepit::bridge::BridgeService::Stub& worker_client,
                        const std::shared_ptr<RemoteWorker>& w) {
    grpc::ClientContext ctx;
    ctx.AddMetadata(kHostMetadata, "1");
    ctx.AddMetadata(kCatalogHashMetadata, std::to_string(catalog->hash()));
    if (!opt.grpc_token.empty()) ctx.AddMetadata("authorization", "Bearer " + opt.grpc_token);
    {
      std::lock_guard<std::mutex> lock(d->ctx_mu);
      if (stopping.load()) return grpc::Status::CANCELLED;
      d->ctx = &ctx;
    }
    auto stream = worker_client.StreamTelemetry(&ctx);
    const std::string stream_id = std::to_string(next_stream_id.fetch_add(1));
    {
      std::lock_guard<std::mutex> lock(mu);
      w->host_gated = true;  // until the peer shows it is a pitlane worker
      w->whole_state = false;  // until the peer says it applies the whole state at once
    }
    auto send_control = [&stream, &w, this](const ControlState& s, bool) {
      bool gated, whole;
      {
        std::lock_guard<std::mutex> lock(mu);
        gated = w->host_gated;
        whole = w->whole_state;
      }
      if (gated) w->gate.Update(s, *catalog);
      if (whole) {
        pb::TelemetryControl m;
        ControlToProto(s, m.mutable_pitlane_state());
        return stream->Write(m);
      }
      pb::TelemetryControl c[3];
      ControlToMessages(gated ? PeerGate::PeerPart(s) : s, c);
      for (auto& m : c) {
        if (!stream->Write(m)) return false;
      }
      return true;
    };
    // The control state goes first; a write that fails means no worker is there.
    std::shared_ptr<StreamHandle> h;
    uint64_t messages = 0;
    const ControlState first = hooks.control_of(d->id);
    if (send_control(first, true)) {
      h = std::make_shared<StreamHandle>();
      h->send_control = send_control;
      h->cancel = [&ctx] { ctx.TryCancel(); };
      Open(h, w, Direction::kDialOut, d->address, stream_id, first);
      messages = ReadDialed(ctx, *stream, w, h);
    }
    {
      std::lock_guard<std::mutex> lock(d->ctx_mu);
      d->ctx = nullptr;
    }
    const grpc::Status st = stream->Finish();
    if (h) {
      Close(h, !stopping.load(),
            st.ok() ? "closed by the worker"
                    : std::to_string(static_cast<int>(st.error_code())) + ": " +
                          st.error_message(),
            messages, stream_id);
    }
    return st;
  }

  // Reads a dialed worker's events (and counter reports) into the inbox until the stream ends;
  // learns the worker's pid on the way. Returns how many messages it read.
  uint64_t ReadDialed(grpc::ClientContext& ctx, DialedStream& stream,
                      const std::shared_ptr<RemoteWorker>& w,
                      const std::shared_ptr<StreamHandle>& h) {
    uint64_t messages = 0;
    bool pid_known = false;  // from x-pitlane-pid, or else from the peer's events
    pb::TelemetryEvent ev;
    while (stream.Read(&ev)) {
      if (messages++ == 0) {
        const auto& md = ctx.GetServerInitialMetadata();
        if (auto it = md.find(kPidMetadata); it != md.end()) {
          const auto hash = md.find(kCatalogHashMetadata);
          {
            std::lock_guard<std::mutex> lock(mu);
            w->pid_str.assign(it->second.data(), it->second.size());
            w->pid = static_cast<uint32_t>(std::strtoul(w->pid_str.c_str(), nullptr, 10));
            // Whose ids the worker's records carry (DeliverRecord checks it against ours).
            w->catalog_hash = hash == md.end() ? 0 : std::strtoull(
                std::string(hash->second.data(), hash->second.size()).c_str(), nullptr, 10);
            w->host_gated = false;  // a pitlane worker applies its control state itself
            w->whole_state = md.count(kControlStateMetadata) != 0;
          }
          pid_known = true;
          SendInitialControl(h);
        }
      }
      if (!pid_known) pid_known = AdoptPeerPid(*w, ev);
      Item it;
      it.kind = Item::kEvents;
      it.worker = w;
      {
        std::lock_guard<std::mutex> lock(mu);
        it.gated = w->host_gated;
      }
      // An event, a batch of records with the counters after it, or counters alone.
      const bool counters_only = ev.has_pitlane_counters() && ev.event_parts_size() == 0 &&
                                 ev.pitlane_records_size() == 0;
      size_t n = 0;
      if (ev.has_pitlane_counters()) {
        it.counters = std::make_unique<pb::WorkerCounters>(ev.pitlane_counters());
      }
      if (!counters_only) {
        n = std::max(1, ev.pitlane_records_size());
        it.events.push_back(std::move(ev));
      }
      Push(std::move(it), n);
      ev.Clear();
    }
    return messages;
  }

  // A peer that sends no x-pitlane-pid header (Snakepit's worker) tells its pid, if at all, in
  // its events' metadata (worker_pid, python_pid). Returns whether `w` has a pid now.
  bool AdoptPeerPid(RemoteWorker& w, const pb::TelemetryEvent& ev) {
    for (const char* key : {"worker_pid", "python_pid"}) {
      const auto it = ev.metadata().find(key);
      if (it == ev.metadata().end() || it->second.empty() || it->second.size() > 10) continue;
      char* end = nullptr;
      const unsigned long pid = std::strtoul(it->second.c_str(), &end, 10);
      if (*end != '\0' || pid == 0 || pid > UINT32_MAX || it->second[0] == '0') continue;
      std::lock_guard<std::mutex> lock(mu);
      w.pid = static_cast<uint32_t>(pid);
      w.pid_str = it->second;
      return true;
    }
    return false;
  }

  // ── poll thread ──────────────────────────────────────────────────────────────────────────
  static void JoinParts(const pb::TelemetryEvent& e, std::string* name) {
    name->clear();
    for (int i = 0; i < e.event_parts_size(); ++i) {
      if (i) name->push_back('.');
      *name += e.event_parts(i);
    }
  }

  // The host's share of the gate for a peer that cannot apply it (peer_gate.h). True: the event
  // is suppressed and counted in `t`.
  bool HostSuppressed(RemoteWorker& w, const pb::TelemetryEvent& e, Tally* t) {
    JoinParts(e, &name);
    switch (w.gate.Judge(catalog->FindWorkerEvent(name))) {
      case PeerGate::Verdict::kPass: return false;
      case PeerGate::Verdict::kDisabled: ++t->suppressed_disabled; break;
      case PeerGate::Verdict::kSampled: ++t->suppressed_sampled; break;
      case PeerGate::Verdict::kFiltered: ++t->suppressed_filtered; break;
    }
    return true;
  }

  void DeliverOne(const pb::TelemetryEvent& e, const FoldContext& ctx, Delivery& delivery,
                  Tally* t) {
    JoinParts(e, &name);
    raw_m.clear();
    for (const auto& [k, v] : e.measurements()) {
      RawMeasurement m;
      m.key = k;
      switch (v.value_case()) {
        case pb::TelemetryValue::kIntValue: m.value = Value(v.int_value()); break;
        case pb::TelemetryValue::kFloatValue: m.value = Value(v.float_value()); break;
        case pb::TelemetryValue::kStringValue: m.value = Value(std::string_view(v.string_value())); break;
        default: m.value = Value(std::string_view()); break;
      }
      raw_m.push_back(m);
    }
    raw_md.clear();
    for (const auto& [k, v] : e.metadata()) raw_md.push_back(RawMeta{0, k, v});
    RawEvent raw;
    raw.name = name;
    raw.timestamp_ns = e.timestamp_ns();
    raw.correlation_id = e.correlation_id();
    raw.span_id = e.pitlane_span_id();
    raw.parent_span_id = e.pitlane_parent_span_id();
    raw.measurements = raw_m;
    raw.metadata = raw_md;
    delivery.Deliver(raw, ctx, t);
  }

  // A pitlane worker's record: the same verified decoder as a ring record. Catalog ids in it
  // are the worker's; they mean the same here only when its catalog is ours (a worker sends
  // records only then: a record from a worker with another catalog is refused as malformed).
  void DeliverRecord(RemoteWorker& w, uint64_t catalog_hash, const std::string& record,
                     const FoldContext& ctx, Delivery& delivery, Tally* t) {
    if (catalog_hash != catalog->hash()) {
      if (!w.warned_catalog) {
        w.warned_catalog = true;
        hooks.log("worker " + w.id + " sent event records against another catalog (hash " +
                  std::to_string(catalog_hash) + ", this host's " +
                  std::to_string(catalog->hash()) + "); rejecting them as malformed");
      }
      delivery.Reject(shm::kRejectMalformed, 1, t);
      return;
    }
    const uint8_t* p = reinterpret_cast<const uint8_t*>(record.data());
    if ((reinterpret_cast<uintptr_t>(p) & 7) != 0) {
      // The decoder reads 8-byte values in place: give it an aligned copy.
      aligned.assign((record.size() + 7) / 8, 0);
      std::memcpy(aligned.data(), record.data(), record.size());
      p = reinterpret_cast<const uint8_t*>(aligned.data());
    }
    delivery.DeliverRecord(p, static_cast<uint32_t>(record.size()), ctx, t);
  }

  void Transition(const Item& it, Delivery& delivery) {
    RemoteWorker& w = *it.worker;
    // As of now: a stream thread (re)opening rewrites them under `mu`.
    uint32_t pid;
    Direction direction;
    {
      std::lock_guard<std::mutex> lock(mu);
      pid = w.pid;
      direction = w.direction;
    }
    const std::string dir(DirectionName(direction));
    if (it.kind == Item::kOpened) {
      MetadataView md[2] = {{"stream_id", it.stream_id, 0}, {"direction", dir, 0}};
      delivery.EmitHostEvent("grpc.stream.opened", {}, md, w.id, pid);
      if (it.reconnect) {
        MeasurementView m[1] = {{"downtime", Value(static_cast<int64_t>(it.downtime_ms))}};
        delivery.EmitHostEvent("grpc.connection.reconnected", m, md, w.id, pid);
      } else {
        delivery.EmitHostEvent("grpc.connection.established", {}, md, w.id, pid);
      }
    } else {
      MeasurementView m[1] = {{"message_count", Value(static_cast<int64_t>(it.messages))}};
      MetadataView md[3] = {{"stream_id", it.stream_id, 0}, {"direction", dir, 0},
                            {"reason", it.reason, 0}};
      delivery.EmitHostEvent("grpc.stream.closed", m, md, w.id, pid);
      if (it.lost) delivery.EmitHostEvent("grpc.connection.lost", {}, md, w.id, pid);
    }
  }

  // A dial-in batch: delivers what the host has not seen (a batch re-sent after a reconnect
  // repeats some) and returns how many events before it never arrived.
  uint64_t DeliverBatch(RemoteWorker& w, uint64_t catalog_hash, const pb::TelemetryUpstream& b,
                        const FoldContext& ctx, Delivery& delivery, Tally* t) {
    const uint64_t seq = b.first_sequence();
    const int count = b.events_size() + b.records_size();  // one or the other
    int skip = 0;
    uint64_t lost = 0;
    if (seq < w.expected) {
      skip = static_cast<int>(std::min<uint64_t>(w.expected - seq, count));
    } else if (seq > w.expected) {
      lost = seq - w.expected;  // sent, never received (a broken connection)
    }
    for (int i = skip; i < b.events_size(); ++i) DeliverOne(b.events(i), ctx, delivery, t);
    for (int i = skip; i < b.records_size(); ++i) {
      DeliverRecord(w, catalog_hash, b.records(i), ctx, delivery, t);
    }
    w.expected = std::max<uint64_t>(w.expected, seq + count);
    return lost;
  }

  size_t Drain(Delivery& delivery, const FoldContext& base) {
    if (!inbox_nonempty.load(std::memory_order_acquire)) return 0;
    std::deque<Item> items;
    {
      std::lock_guard<std::mutex> lock(inbox_mu);
      items.swap(inbox);
      inbox_events = 0;
      inbox_nonempty.store(false, std::memory_order_relaxed);
    }
    inbox_space.notify_all();
    size_t n = 0;
    for (Item& it : items) {
      RemoteWorker& w = *it.worker;
      if (it.kind != Item::kEvents) {
        Transition(it, delivery);
        continue;
      }
      // Who sent it, as of now (a reconnecting stream may rewrite pid and node under `mu`).
      std::string pid_str;
      uint64_t catalog_hash;
      FoldContext ctx = base;
      {
        std::lock_guard<std::mutex> lock(mu);
        pid_str = w.pid_str;
        ctx.pid = w.pid;
        catalog_hash = w.catalog_hash;
      }
      ctx.worker_id = w.id;  // fixed when the record was made
      ctx.worker_pid = pid_str;
      ctx.transport = Transport::kGrpc;
      Tally t;
      uint64_t lost = 0;
      const pb::WorkerCounters* counters = it.counters.get();
      if (it.batch) {
        const pb::TelemetryUpstream& b = *it.batch->msg;
        lost = DeliverBatch(w, catalog_hash, b, ctx, delivery, &t);
        if (b.has_counters()) counters = &b.counters();
      } else {
        for (const auto& e : it.events) {
          if (e.pitlane_records_size() > 0) {
            for (const std::string& r : e.pitlane_records()) {
              DeliverRecord(w, catalog_hash, r, ctx, delivery, &t);
            }
            continue;
          }
          if (it.gated && HostSuppressed(w, e, &t)) continue;
          DeliverOne(e, ctx, delivery, &t);
        }
      }
      {
        std::lock_guard<std::mutex> lock(mu);
        w.lost += lost;
        w.host_side += t;
        if (counters != nullptr) {
          w.reported = TallyFromProto(*counters);
          w.reported_known = true;
        }
      }
      if (it.batch) w.acked.store(w.expected, std::memory_order_release);
      n += t.delivered + t.rejected_total();
    }
    {
      std::lock_guard<std::mutex> lock(ack_mu);
      ack_pending = true;
    }
    ack_cv.notify_one();
    return n;
  }

  RingStats StatsOf(const RemoteWorker& w) const {
    RingStats r;
    r.segment = "grpc:" + w.peer;
    r.worker_id = w.id;
    r.pid = w.pid;
    r.transport = Transport::kGrpc;
    r.worker_alive = w.open_streams > 0;
    const uint64_t received = w.host_side.delivered + w.host_side.rejected_total();
    // What the host's gate stopped (peer_gate.h) was sent but is suppressed, not published.
    const uint64_t host_suppressed = w.host_side.suppressed();
    if (w.reported_known) {
      static_cast<Tally&>(r) = w.reported;
      // Sent but never received: lost in transit (counted, not silent).
      r.dropped_in_flight = w.lost;
      const uint64_t not_published = w.lost + host_suppressed;
      r.published = w.reported.published >= not_published ? w.reported.published - not_published : 0;
    } else {
      // A worker that reports no counters (Snakepit's): what arrived is what it emitted.
      r.emitted = received + host_suppressed;
      r.published = received;
    }
    r.suppressed_disabled += w.host_side.suppressed_disabled;
    r.suppressed_sampled += w.host_side.suppressed_sampled;
    r.suppressed_filtered += w.host_side.suppressed_filtered;
    r.delivered = w.host_side.delivered;
    r.truncated = w.host_side.truncated;
    std::copy(std::begin(w.host_side.rejected), std::end(w.host_side.rejected),
              std::begin(r.rejected));
    return r;
  }
};

Result<std::unique_ptr<RemoteHub>> RemoteHub::Start(const HostOptions& options,
                                                    const Catalog& catalog, Hooks hooks) {
  auto impl = std::make_unique<Impl>();
  impl->opt = options;
  impl->catalog = &catalog;
  impl->hooks = std::move(hooks);
  // The dial entries are checked before the server starts: once it serves, a worker's stream
  // may run on `impl`, which a failed Start would destroy under it (and grpc::Server's
  // destructor, run after the members that stream uses, would wait for the stream to end).
  for (const std::string& spec : options.grpc_dial) {
    auto d = std::make_unique<Impl::Dialer>();
    Result<DialSpec> parsed = ParseDialSpec(spec, "grpc_dial");
    if (!parsed.ok()) return parsed.status();
    d->address = std::move(parsed.value().address);
    d->id = std::move(parsed.value().id);
    if (d->id.size() > kMaxWorkerIdBytes) {
      return InvalidArgument("grpc_dial \"" + spec + "\": worker id longer than 63 bytes");
    }
    impl->WorkerFor(d->id, Direction::kDialOut);
    impl->dialers.push_back(std::move(d));
  }
  if (!options.grpc_listen.empty()) {
    if (Status s = ValidateGrpcAddress(options.grpc_listen, AddressUse::kServe, "grpc_listen");
        !s.ok()) {
      return s;
    }
    grpc::ServerBuilder b;
    std::shared_ptr<grpc::ServerCredentials> creds = grpc::InsecureServerCredentials();
    if (!options.grpc_tls_cert.empty() || !options.grpc_tls_key.empty()) {
      Result<std::string> key = ReadPemFile(options.grpc_tls_key);
      if (!key.ok()) return key.status();
      Result<std::string> cert = ReadPemFile(options.grpc_tls_cert);
      if (!cert.ok()) return cert.status();
      grpc::SslServerCredentialsOptions o;
      o.pem_key_cert_pairs.push_back({std::move(key).value(), std::move(cert).value()});
      creds = grpc::SslServerCredentials(o);
    }
    b.AddListeningPort(options.grpc_listen, creds, &impl->port);
    // gRPC sets SO_REUSEPORT by default: a second host would share a port another serves.
    b.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
    // Workers ping every 30 s while a stream is open; pings more often than every 10 s are
    // strikes, and a peer with more than 2 is sent GOAWAY (a ping flood costs it its
    // connection). The host pings idle peers every 60 s and drops one silent for 20 s more, so
    // a vanished peer's stream and thread do not stay forever; a connection with no stream for
    // 5 minutes is closed.
    b.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 10000);
    b.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 2);
    b.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, 60000);
    b.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 20000);
    b.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_IDLE_MS, 300000);
    b.SetMaxReceiveMessageSize(static_cast<int>(options.grpc_max_message_bytes));
    b.RegisterService(impl.get());
    impl->server = b.BuildAndStart();
    if (!impl->server || impl->port == 0) {
      return Unavailable("cannot serve gRPC on " + options.grpc_listen +
                         " (address in use or invalid)");
    }
  }
  Impl* raw = impl.get();
  for (auto& d : impl->dialers) {
    Impl::Dialer* dp = d.get();
    d->thread = std::thread([raw, dp] { raw->Dial(dp); });
  }
  impl->ack_thread = std::thread([raw] { raw->AckLoop(); });
  impl->watch_thread = std::thread([raw] { raw->Watchdog(); });
  return std::unique_ptr<RemoteHub>(new RemoteHub(std::move(impl)));
}

RemoteHub::RemoteHub(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

RemoteHub::~RemoteHub() {
  Impl& h = *impl_;
  h.stopping.store(true);
  h.inbox_space.notify_all();
  h.stop_cv.notify_all();
  h.ack_cv.notify_all();
  for (auto& d : h.dialers) {
    std::lock_guard<std::mutex> lock(d->ctx_mu);
    if (d->ctx) d->ctx->TryCancel();
  }
  if (h.server) {
    h.server->Shutdown(std::chrono::system_clock::now() + std::chrono::milliseconds(500));
    h.server->Wait();
  }
  for (auto& d : h.dialers) d->thread.join();
  h.ack_thread.join();
  h.watch_thread.join();
}

int RemoteHub::port() const { return impl_->port; }

size_t RemoteHub::Drain(Delivery& delivery, const FoldContext& base) {
  return impl_->Drain(delivery, base);
}

bool RemoteHub::Pending() const {
  return impl_->inbox_nonempty.load(std::memory_order_acquire);
}

bool RemoteHub::Knows(const std::string& worker_id) const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->workers.count(worker_id) != 0;
}

void RemoteHub::PushControl(const std::string& worker_id, const ControlState& state) {
  std::vector<std::shared_ptr<StreamHandle>> open;
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    auto [b, e] = impl_->streams.equal_range(worker_id);
    for (auto it = b; it != e; ++it) open.push_back(it->second);
  }
  for (auto& h : open) {
    std::lock_guard<std::mutex> wl(h->write_mu);
    if (!h->closed) h->SendControl(state, false);
  }
}

std::vector<RingStats> RemoteHub::Rings() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  std::vector<RingStats> out;
  for (const auto& [id, w] : impl_->workers) {
    if (w->streams_opened > 0) out.push_back(impl_->StatsOf(*w));
  }
  return out;
}

std::vector<WorkerInfo> RemoteHub::Workers() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  std::vector<WorkerInfo> out;
  for (const auto& [id, w] : impl_->workers) {
    WorkerInfo i;
    static_cast<Tally&>(i) = impl_->StatsOf(*w);
    i.id = id;
    i.pid = w->pid;
    i.alive = w->open_streams > 0;
    i.transport = Transport::kGrpc;
    i.rings = i.alive ? 1 : 0;  // a stream stands for a ring
    i.rings_total = w->streams_opened > 0 ? 1 : 0;
    out.push_back(std::move(i));
  }
  return out;
}

bool RemoteHub::Settled() const {
  if (Pending()) return false;
  std::lock_guard<std::mutex> lock(impl_->mu);
  for (const auto& [id, w] : impl_->workers) {
    const uint64_t received = w->host_side.delivered + w->host_side.rejected_total();
    if (w->reported_known && received + w->lost + w->host_side.suppressed() < w->reported.published) {
      return false;
    }
  }
  return true;
}

}  // namespace pitlane::internal
