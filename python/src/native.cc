// pitlane._native — the C++ side of the Python module `pitlane` (python/pitlane/telemetry.py is
// the Python side and the documented API).
//
// One pitlane::Worker per process, started lazily by the first emit (or by start()), with the
// C++ defaults (PITLANE_NAMESPACE, PITLANE_WORKER_ID, PITLANE_RING_BYTES, ...). Every Python
// thread that emits gets a ring of its own from the worker; a child made by fork() gets a worker
// id and rings of its own through the worker's atfork handler.
//
// emit() is a METH_FASTCALL function, not a pybind11 binding: it is the hot path, and pybind11's
// dispatcher allocates per call. It converts the Python arguments to pitlane::Measurement /
// pitlane::Metadata views under the GIL (into stack storage; every object a view points into is
// held by a reference until the emit returned), then releases the GIL for Worker::Emit. Event
// names and keys given as str objects are resolved against the catalog once per object (an
// identity cache), not once per emit.
//
// Value rules (the seed's, plus the cases it left open):
//   measurement value  bool → int 0/1; int → int64; an int outside int64 → its decimal string;
//                      float → double (NaN and ±inf travel unchanged); anything else → str(v)
//   metadata value     str(v) (a str is used as is)
//   keys, event name   a str as is; anything else → str(k)
//   correlation_id     None → the current one (the ContextVar telemetry.py binds), absent → ""
//   strings            UTF-8; a lone surrogate is written as a backslash escape
// When str(v) raises an Exception, "<unprintable TYPE>" is sent instead and counted
// (conversion_errors). A measurements/metadata argument that is neither None nor a mapping is
// counted (invalid_argument) and the event is not emitted. emit() never raises an Exception of
// its own; a KeyboardInterrupt or SystemExit raised by user code inside str() propagates.
//
// Lifetime: shutdown() retires the worker (the host drains and reclaims its rings); an emit
// that runs concurrently either finishes on the old worker first or finds none. `in_flight`
// counts emits inside Worker::Emit: the emitter increments it before loading the worker
// pointer and shutdown() clears the pointer before waiting for it to reach zero (both
// seq_cst), so a worker is never destroyed under an emit.
//
// Thread safety: every function may be called from any Python thread.
#include <Python.h>
#include <pthread.h>
#include <unistd.h>
#include <pybind11/pybind11.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <limits>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "pitlane/catalog.h"
#include "pitlane/correlation.h"
#include "pitlane/defaults.h"
#include "pitlane/record.h"
#include "pitlane/span.h"
#include "pitlane/trace_context.h"
#include "pitlane/worker.h"

namespace py = pybind11;

namespace {

// Outcomes emit() returns besides pitlane::EmitResult's names.
enum class PyOutcome : uint8_t {
  kInvalidArgument = 0,  // measurements/metadata not a mapping; nothing emitted
  kNoWorker,             // the worker could not be started, or the module is closed
  kOutOfMemory,          // the call's field storage could not grow; nothing emitted
  kCount,
};
constexpr const char* kPyOutcomeNames[] = {"invalid_argument", "no_worker", "out_of_memory"};
constexpr size_t kEmitResultCount = 10;  // pitlane::EmitResult::kOk .. kBuffered

struct Native {
  // Start/shutdown/close. Never held while waiting for the GIL.
  std::mutex lifecycle_mu;
  std::unique_ptr<pitlane::Worker> owned;  // guarded by lifecycle_mu
  std::string start_error;                 // guarded by lifecycle_mu; last failed start
  bool closed = false;                     // guarded by lifecycle_mu; set at interpreter exit

  std::atomic<pitlane::Worker*> worker{nullptr};
  std::atomic<uint64_t> in_flight{0};

  std::atomic<uint64_t> not_emitted[static_cast<size_t>(PyOutcome::kCount)] = {};
  std::atomic<uint64_t> conversion_errors{0};

  // This interpreter is a multiprocessing child that did not fork (spawn, forkserver): it
  // inherited its parent's environment, PITLANE_WORKER_ID included, but not its worker.
  bool spawned_child = false;  // guarded by lifecycle_mu

  PyObject* correlation_var = nullptr;  // the ContextVar of telemetry.py (strong reference)
  // The compiled-in catalog, and whether the running worker uses it (name caches valid).
  std::shared_ptr<const pitlane::Catalog> catalog = pitlane::Catalog::Default();
  std::atomic<bool> use_name_cache{false};
  PyObject* result_names[kEmitResultCount] = {};
  PyObject* outcome_names[static_cast<size_t>(PyOutcome::kCount)] = {};
  // Interned "event_name", "measurements", "metadata", "correlation_id" (positional or
  // keyword), then the keyword-only "span_id", "parent_span_id".
  PyObject* keyword_names[6] = {};
};

// Never destroyed: daemon threads may still run at interpreter exit, and the process's static
// destructors must not race them.
Native& G() {
  static Native* g = new Native();
  return *g;
}

// In a fork()ed child only the forking thread exists: a lifecycle lock or an in-flight count
// held by another parent thread at fork() would never be released there.
void AtforkChild() {
  Native& g = G();
  new (&g.lifecycle_mu) std::mutex();  // the parent's copy is never destroyed
  g.in_flight.store(0, std::memory_order_relaxed);
}

// ── small fixed storage for one call's fields ───────────────────────────────────────────────

// Inline room for N trivially copyable T, spilling to the heap beyond (the catalog's limit is
// 32 of each; larger events still travel so the host counts their rejection).
template <typename T, size_t N>
class SmallVec {
  static_assert(std::is_trivially_copyable_v<T> && std::is_trivially_destructible_v<T>);

 public:
  void push_back(const T& v) {
    if (size_ < N) [[likely]] {
      new (inline_ + size_ * sizeof(T)) T(v);
      ++size_;
    } else {
      Spill(v);
    }
  }
  // Appends T(args...) and returns it, to be filled in place (valid until the next append).
  template <typename... Args>
  T* emplace_back(Args&&... args) {
    if (size_ < N) [[likely]] {
      return new (inline_ + size_++ * sizeof(T)) T(std::forward<Args>(args)...);
    }
    Spill(T(std::forward<Args>(args)...));
    return &heap_.back();
  }
  std::span<const T> view() const {
    return size_ <= N ? std::span<const T>(inline_data(), size_) : std::span<const T>(heap_);
  }
  size_t size() const { return size_; }

 private:
  [[gnu::noinline]] void Spill(const T& v) {
    if (size_ == N) heap_.assign(inline_data(), inline_data() + N);
    heap_.push_back(v);
    ++size_;
  }
  const T* inline_data() const { return std::launder(reinterpret_cast<const T*>(inline_)); }
  alignas(T) unsigned char inline_[N * sizeof(T)];
  size_t size_ = 0;
  std::vector<T> heap_;
};

// The references that keep one call's string views valid. REQUIRES: destroyed with the GIL.
class KeepAlive {
 public:
  KeepAlive() = default;
  KeepAlive(const KeepAlive&) = delete;
  KeepAlive& operator=(const KeepAlive&) = delete;
  ~KeepAlive() {
    for (PyObject* o : refs_.view()) Py_DECREF(o);
  }
  // Takes over a new reference.
  void Own(PyObject* o) { refs_.push_back(o); }
  // Adds a reference to a borrowed object.
  void Hold(PyObject* o) {
    Py_INCREF(o);
    refs_.push_back(o);
  }

 private:
  SmallVec<PyObject*, 64> refs_;
};

// ── name caches ──────────────────────────────────────────────────────────────────────────────

// Catalog ids of event names and keys, by the identity of the Python str that spells them: a
// call site passes the same str objects every time, so the hash lookups and compares of a
// by-name resolution run once per name, not per emit. Direct-mapped; an entry holds a strong
// reference to its str, so the address is not reused while cached and an unknown name's UTF-8
// bytes (cached inside the str) stay valid. Touched only with the GIL held. Ids are those of
// the compiled-in catalog; used only while the worker runs with that catalog (use_name_cache).
enum class NameKind { kEvent = 0, kMeasurement, kMetadata };

struct CachedName {
  PyObject* key = nullptr;
  uint16_t id = 0;        // 0: not in the catalog
  std::string_view name;  // the catalog's spelling, or the str's own when unknown
};

constexpr size_t kNameCacheSlots = 256;
CachedName g_name_cache[3][kNameCacheSlots];

// REQUIRES: GIL held, `key` an exact str. False when its text is not valid UTF-8.
bool CachedLookup(NameKind kind, PyObject* key, CachedName* out) {
  CachedName& e = g_name_cache[static_cast<int>(kind)]
                              [(reinterpret_cast<uintptr_t>(key) >> 4) % kNameCacheSlots];
  if (e.key == key) [[likely]] {
    *out = e;
    return true;
  }
  Py_ssize_t n = 0;
  const char* p = PyUnicode_AsUTF8AndSize(key, &n);
  if (p == nullptr) {
    PyErr_Clear();
    return false;
  }
  const std::string_view text(p, static_cast<size_t>(n));
  const pitlane::Catalog& cat = *G().catalog;
  uint16_t id = 0;
  std::string_view name = text;
  switch (kind) {
    case NameKind::kEvent:
      id = cat.FindWorkerEvent(text);
      if (id != 0) name = cat.event(id).wire_names.front();
      break;
    case NameKind::kMeasurement:
      id = cat.MeasurementKeyId(text);
      if (id != 0) name = cat.MeasurementKey(id);
      break;
    case NameKind::kMetadata:
      id = cat.MetadataKeyId(text);
      if (id != 0) name = cat.MetadataKey(id);
      break;
  }
  Py_INCREF(key);
  PyObject* evicted = e.key;
  e = CachedName{key, id, name};
  Py_XDECREF(evicted);  // an exact str: its deallocation runs no Python code
  *out = e;
  return true;
}

// ── conversion ───────────────────────────────────────────────────────────────────────────────

enum class Conv { kOk, kPropagate };

// True for an error that must reach the caller: KeyboardInterrupt, SystemExit, GeneratorExit.
bool PendingErrorIsControlFlow() {
  return PyErr_Occurred() != nullptr && !PyErr_ExceptionMatches(PyExc_Exception);
}

// A str's UTF-8 bytes. Lone surrogates (not encodable as UTF-8) become backslash escapes.
std::string_view Utf8(PyObject* s, KeepAlive& keep) {
  Py_ssize_t n = 0;
  if (const char* p = PyUnicode_AsUTF8AndSize(s, &n)) return {p, static_cast<size_t>(n)};
  PyErr_Clear();
  PyObject* b = PyUnicode_AsEncodedString(s, "utf-8", "backslashreplace");
  if (b == nullptr) {
    PyErr_Clear();
    return {};
  }
  keep.Own(b);
  return {PyBytes_AS_STRING(b), static_cast<size_t>(PyBytes_GET_SIZE(b))};
}

// str(o) as UTF-8. An exact str is used as is, and so is a str subclass when `any_str_as_is`
// (keys and names: their text, whatever their __str__ says). When str() raises an Exception:
// "<unprintable TYPE>", counted as a conversion error.
Conv Stringify(PyObject* o, bool any_str_as_is, KeepAlive& keep, std::string_view* out) {
  if (PyUnicode_CheckExact(o) || (any_str_as_is && PyUnicode_Check(o))) {
    keep.Hold(o);  // *out points into it
    *out = Utf8(o, keep);
    return Conv::kOk;
  }
  keep.Hold(o);  // its __str__ may drop every other reference to it (mutating the mapping)
  PyObject* s = PyObject_Str(o);
  if (s == nullptr) {
    if (PendingErrorIsControlFlow()) return Conv::kPropagate;
    PyErr_Clear();
    G().conversion_errors.fetch_add(1, std::memory_order_relaxed);
    s = PyUnicode_FromFormat("<unprintable %s>", Py_TYPE(o)->tp_name);
    if (s == nullptr) {
      PyErr_Clear();
      *out = {};
      return Conv::kOk;
    }
  }
  keep.Own(s);
  *out = Utf8(s, keep);
  return Conv::kOk;
}

// A name (event name or key): *id and *name from the cache when it applies (*resolved true),
// else the str() text with *id 0 (the worker resolves it by name).
Conv ResolveName(NameKind kind, PyObject* o, KeepAlive& keep, uint16_t* id, std::string_view* name,
                 bool* resolved) {
  if (PyUnicode_CheckExact(o) && G().use_name_cache.load(std::memory_order_relaxed)) {
    CachedName c;
    if (CachedLookup(kind, o, &c)) {
      if (c.id == 0) keep.Hold(o);  // an unknown name points into the str itself
      *id = c.id;
      *name = c.name;
      *resolved = true;
      return Conv::kOk;
    }
  }
  *id = 0;
  *resolved = false;
  return Stringify(o, true, keep, name);
}

Conv MeasurementValue(PyObject* v, KeepAlive& keep, pitlane::Value* out) {
  if (PyBool_Check(v)) {
    out->kind = pitlane::Value::Kind::kInt;
    out->i = v == Py_True ? 1 : 0;
    return Conv::kOk;
  }
  if (PyLong_Check(v)) {
    int overflow = 0;
    const long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
    if (overflow == 0 && !(x == -1 && PyErr_Occurred())) {
      out->kind = pitlane::Value::Kind::kInt;
      out->i = static_cast<int64_t>(x);
      return Conv::kOk;
    }
    PyErr_Clear();
    // Beyond int64: the exact decimal digits (int.__repr__, also for subclasses such as
    // IntEnum), as a string value.
    if (PyObject* digits = PyLong_Type.tp_repr(v)) {
      keep.Own(digits);
      out->kind = pitlane::Value::Kind::kString;
      out->s = Utf8(digits, keep);
      return Conv::kOk;
    }
    // More digits than the interpreter converts (sys.set_int_max_str_digits): str() fails the
    // same way and gives "<unprintable int>".
    if (PendingErrorIsControlFlow()) return Conv::kPropagate;
    PyErr_Clear();
  }
  if (PyFloat_Check(v)) {
    out->kind = pitlane::Value::Kind::kDouble;
    out->d = PyFloat_AS_DOUBLE(v);
    return Conv::kOk;
  }
  std::string_view s;
  if (Stringify(v, false, keep, &s) != Conv::kOk) return Conv::kPropagate;
  out->kind = pitlane::Value::Kind::kString;
  out->s = s;
  return Conv::kOk;
}

// Calls fn(key, value) for each item of a dict or mapping. Returns false (with the Python
// error cleared, or pending if it is control flow) when `obj` is not a mapping or iterating it
// raised.
//
// References: the conversions hold every object whose bytes a view points into, and every
// object before running its __str__, until the emit returned. That covers user code that
// mutates the dict during the conversion, and other threads that mutate it while the GIL is
// released for the emit. Numbers are copied; names the catalog knows point into the catalog.
// PyDict_Next itself stays in bounds when the dict changes between calls.
template <typename Fn>
bool ForEachItem(PyObject* obj, KeepAlive& keep, bool* propagate, Fn&& fn) {
  if (PyDict_Check(obj)) {
    Py_ssize_t pos = 0;
    PyObject *k, *v;
    while (PyDict_Next(obj, &pos, &k, &v)) {
      if (fn(k, v) != Conv::kOk) {
        *propagate = true;
        return false;
      }
    }
    return true;
  }
  PyObject* items = PyMapping_Items(obj);
  if (items == nullptr) {
    *propagate = PendingErrorIsControlFlow();
    if (!*propagate) PyErr_Clear();
    return false;
  }
  keep.Own(items);  // a list: holds its tuples, which hold keys and values
  const Py_ssize_t n = PyList_GET_SIZE(items);
  for (Py_ssize_t i = 0; i < n; ++i) {
    PyObject* item = PyList_GET_ITEM(items, i);
    if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 2) return false;
    if (fn(PyTuple_GET_ITEM(item, 0), PyTuple_GET_ITEM(item, 1)) != Conv::kOk) {
      *propagate = true;
      return false;
    }
  }
  return true;
}

PyObject* Outcome(PyOutcome o) {
  Native& g = G();
  g.not_emitted[static_cast<size_t>(o)].fetch_add(1, std::memory_order_relaxed);
  PyObject* name = g.outcome_names[static_cast<size_t>(o)];
  Py_INCREF(name);
  return name;
}

// ── worker lifecycle ─────────────────────────────────────────────────────────────────────────

struct StartRequest {
  std::string ns;
  std::string worker_id;
  std::chrono::milliseconds attach_wait{200};
  pitlane::WorkerTransport transport = pitlane::WorkerTransport::kAuto;  // kAuto: the environment's
  uint32_t pre_attach_events = pitlane::WorkerOptions().pre_attach_events;
};

// REQUIRES: lifecycle_mu held, no worker running.
pitlane::Status StartLocked(const StartRequest& req) {
  Native& g = G();
  pitlane::WorkerOptions options;
  options.ns = req.ns;
  options.worker_id = req.worker_id;
  // A spawned child must not register under its parent's id: it takes "<id>-<pid>", the id a
  // fork()ed child gets from the worker's atfork handler.
  const char* env_id = std::getenv(pitlane::defaults::kWorkerIdEnv);
  if (options.worker_id.empty() && g.spawned_child && env_id != nullptr && *env_id != '\0') {
    options.worker_id = std::string(env_id) + "-" + std::to_string(getpid());
  }
  options.attach_wait = req.attach_wait;
  options.transport = req.transport;
  options.pre_attach_events = req.pre_attach_events;
  // Python's own default unless PITLANE_RING_BYTES says otherwise (sizing rule: defaults.h).
  const char* ring_env = std::getenv(pitlane::defaults::kRingBytesEnv);
  if (ring_env == nullptr || *ring_env == '\0') {
    options.ring_bytes = pitlane::defaults::kPythonRingBytes;
  }
  pitlane::Result<std::unique_ptr<pitlane::Worker>> started = pitlane::Worker::Start(options);
  if (!started.ok()) {
    g.start_error = started.status().ToString();
    return started.status();
  }
  g.start_error.clear();
  g.owned = std::move(started).value();
  g.use_name_cache.store(g.owned->catalog().hash() == g.catalog->hash(), std::memory_order_relaxed);
  g.worker.store(g.owned.get(), std::memory_order_seq_cst);
  return pitlane::Status::Ok();
}

// REQUIRES: lifecycle_mu held; called without the GIL.
void ShutdownLocked() {
  Native& g = G();
  if (!g.owned) return;
  g.worker.store(nullptr, std::memory_order_seq_cst);
  while (g.in_flight.load(std::memory_order_seq_cst) != 0) std::this_thread::yield();
  g.owned.reset();
}

// The lazy start of the first emit: the environment's defaults, and no wait for a host (events
// before one appears are buffered, kBuffered). Returns the worker or null. Called with the GIL
// held; releases it while starting.
pitlane::Worker* EnsureStarted() {
  Native& g = G();
  if (pitlane::Worker* w = g.worker.load(std::memory_order_acquire)) return w;
  pitlane::Worker* w = nullptr;
  Py_BEGIN_ALLOW_THREADS;
  {
    std::lock_guard<std::mutex> lock(g.lifecycle_mu);
    if (!g.owned && !g.closed) {
      StartRequest lazy;
      lazy.attach_wait = std::chrono::milliseconds(0);
      (void)StartLocked(lazy);
    }
    w = g.worker.load(std::memory_order_acquire);
  }
  Py_END_ALLOW_THREADS;
  return w;
}

// ── emit ─────────────────────────────────────────────────────────────────────────────────────

// The emit's correlation id: the one given, else the context variable's current value (empty
// when neither has one).
Conv CorrelationOf(PyObject* correlation_obj, KeepAlive& keep, std::string_view* out) {
  if (correlation_obj != nullptr && correlation_obj != Py_None) {
    return Stringify(correlation_obj, true, keep, out);
  }
  Native& g = G();
  PyObject* current = nullptr;
  if (g.correlation_var == nullptr || PyContextVar_Get(g.correlation_var, Py_None, &current) != 0) {
    PyErr_Clear();
    return Conv::kOk;
  }
  keep.Own(current);
  return current == Py_None ? Conv::kOk : Stringify(current, true, keep, out);
}

PyObject* EmitImpl(PyObject* name_obj, PyObject* measurements_obj, PyObject* metadata_obj,
                   PyObject* correlation_obj, pitlane::SpanIds span = {}) {
  Native& g = G();
  if (g.worker.load(std::memory_order_acquire) == nullptr && EnsureStarted() == nullptr) {
    return Outcome(PyOutcome::kNoWorker);
  }

  KeepAlive keep;
  pitlane::EventHandle event;
  bool event_resolved = false;
  if (ResolveName(NameKind::kEvent, name_obj, keep, &event.id, &event.name, &event_resolved) !=
      Conv::kOk) {
    return nullptr;
  }

  SmallVec<pitlane::Measurement, 32> measurements;
  if (measurements_obj != nullptr && measurements_obj != Py_None) {
    bool propagate = false;
    const bool ok = ForEachItem(measurements_obj, keep, &propagate, [&](PyObject* k, PyObject* v) {
      // Filled in place: building a Measurement aside and copying it costs a store-forwarding
      // stall per field.
      pitlane::Measurement* m = measurements.emplace_back(std::string_view(), pitlane::Value());
      bool resolved;
      if (ResolveName(NameKind::kMeasurement, k, keep, &m->key_id, &m->key, &resolved) !=
          Conv::kOk) {
        return Conv::kPropagate;
      }
      return MeasurementValue(v, keep, &m->value);
    });
    if (propagate) return nullptr;
    if (!ok) return Outcome(PyOutcome::kInvalidArgument);
  }

  SmallVec<pitlane::Metadata, 32> metadata;
  if (metadata_obj != nullptr && metadata_obj != Py_None) {
    bool propagate = false;
    const bool ok = ForEachItem(metadata_obj, keep, &propagate, [&](PyObject* k, PyObject* v) {
      pitlane::Metadata* d = metadata.emplace_back(std::string_view(), std::string_view());
      bool resolved;
      if (ResolveName(NameKind::kMetadata, k, keep, &d->key_id, &d->key, &resolved) != Conv::kOk) {
        return Conv::kPropagate;
      }
      return Stringify(v, false, keep, &d->value);
    });
    if (propagate) return nullptr;
    if (!ok) return Outcome(PyOutcome::kInvalidArgument);
  }

  std::string_view correlation;
  if (CorrelationOf(correlation_obj, keep, &correlation) != Conv::kOk) return nullptr;

  bool have_worker = false;
  pitlane::EmitResult result = pitlane::EmitResult::kOk;
  Py_BEGIN_ALLOW_THREADS;
  g.in_flight.fetch_add(1, std::memory_order_seq_cst);
  if (pitlane::Worker* w = g.worker.load(std::memory_order_seq_cst)) {
    have_worker = true;
    if (!event_resolved) event = w->Event(event.name);
    result = span.span_id != 0 ? w->EmitSpanEvent(event, span, measurements.view(),
                                                  metadata.view(), correlation)
                               : w->Emit(event, measurements.view(), metadata.view(), correlation);
  }
  g.in_flight.fetch_sub(1, std::memory_order_release);
  Py_END_ALLOW_THREADS;

  if (!have_worker) return Outcome(PyOutcome::kNoWorker);
  PyObject* out = g.result_names[static_cast<size_t>(result)];
  Py_INCREF(out);
  return out;
}

PyObject* EmitFast(PyObject* /*self*/, PyObject* const* args, Py_ssize_t nargsf,
                   PyObject* kwnames) {
  Native& g = G();
  const Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
  PyObject* slots[6] = {nullptr, nullptr, nullptr, nullptr, nullptr, nullptr};
  if (nargs > 4) {
    PyErr_Format(PyExc_TypeError, "emit() takes at most 4 positional arguments (%zd given)", nargs);
    return nullptr;
  }
  for (Py_ssize_t i = 0; i < nargs; ++i) slots[i] = args[i];
  const Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
  for (Py_ssize_t i = 0; i < nkw; ++i) {
    PyObject* kw = PyTuple_GET_ITEM(kwnames, i);
    int index = -1;
    for (int j = 0; j < 6 && index < 0; ++j) {
      if (kw == g.keyword_names[j]) index = j;  // interned: the usual case
    }
    for (int j = 0; j < 6 && index < 0; ++j) {
      if (PyUnicode_Compare(kw, g.keyword_names[j]) == 0) index = j;
    }
    if (index < 0) {
      PyErr_Format(PyExc_TypeError, "emit() got an unexpected keyword argument '%U'", kw);
      return nullptr;
    }
    if (slots[index] != nullptr) {
      PyErr_Format(PyExc_TypeError, "emit() got multiple values for argument '%U'", kw);
      return nullptr;
    }
    slots[index] = args[nargs + i];
  }
  if (slots[0] == nullptr) {
    PyErr_SetString(PyExc_TypeError, "emit() missing required argument 'event_name'");
    return nullptr;
  }
  // Span identity (keyword-only): non-negative ints below 2^64; anything else is a TypeError /
  // OverflowError, as for any malformed argument (the telemetry.span helper passes its own).
  pitlane::SpanIds span;
  for (int i = 4; i < 6; ++i) {
    if (slots[i] == nullptr) continue;
    const unsigned long long v = PyLong_AsUnsignedLongLong(slots[i]);
    if (v == static_cast<unsigned long long>(-1) && PyErr_Occurred()) return nullptr;
    (i == 4 ? span.span_id : span.parent_span_id) = v;
  }
  try {
    return EmitImpl(slots[0], slots[1], slots[2], slots[3], span);
  } catch (const std::bad_alloc&) {  // from the spill storage: the event is lost, never raised
    if (PyErr_Occurred() && !PendingErrorIsControlFlow()) PyErr_Clear();
    if (PyErr_Occurred()) return nullptr;
    return Outcome(PyOutcome::kOutOfMemory);
  }
}

constexpr const char kEmitDoc[] =
    "emit(event_name, measurements=None, metadata=None, correlation_id=None, *, span_id=0,\n"
    "     parent_span_id=0) -> str\n\n"
    "Emits one event through the process's pitlane worker (started on first use) and returns\n"
    "the outcome: 'ok', 'ok_truncated' (a value cut to the catalog's 1 KiB, as the host\n"
    "would), 'buffered' (no host yet: published when one appears), 'dropped_full',\n"
    "'dropped_too_large', 'dropped_over_limit' (over the catalog's field, key or correlation\n"
    "id limits: the host would reject it), 'dropped_no_ring',\n"
    "'suppressed_disabled', 'suppressed_sampled', 'suppressed_filtered', 'invalid_argument'\n"
    "(measurements/metadata not a mapping), 'no_worker' (the worker could not start) or\n"
    "'out_of_memory'.\n"
    "Never raises for bad values; see pitlane.telemetry for the conversion rules.\n"
    "span_id / parent_span_id: a span event's identity (telemetry.span passes them).";

PyMethodDef kEmitDef = {"emit",
                        reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(&EmitFast)),
                        METH_FASTCALL | METH_KEYWORDS, kEmitDoc};

// ── stats ────────────────────────────────────────────────────────────────────────────────────

py::dict StatsDict() {
  Native& g = G();
  pitlane::WorkerStats s;
  std::string id, ns, start_error;
  pitlane::WorkerTransport transport = pitlane::WorkerTransport::kAuto;
  bool running = false;
  {
    py::gil_scoped_release release;
    std::lock_guard<std::mutex> lock(g.lifecycle_mu);
    if (g.owned) {
      running = true;
      s = g.owned->Stats();
      id = g.owned->id();
      ns = g.owned->ns();
      transport = g.owned->transport();
    }
    start_error = g.start_error;
  }
  py::dict d;
  d["running"] = running;
  d["worker_id"] = running ? py::object(py::str(id)) : py::object(py::none());
  d["namespace"] = running ? py::object(py::str(ns)) : py::object(py::none());
  d["transport"] = running ? py::object(py::str(std::string(pitlane::WorkerTransportName(
                                  transport))))
                            : py::object(py::none());
  d["attached"] = s.attached;
  d["live_rings"] = s.live_rings;
  d["pending"] = s.pending;
  d["emitted"] = s.emitted;
  d["published"] = s.published;
  py::dict dropped;
  dropped["full"] = s.dropped_full;
  dropped["too_large"] = s.dropped_too_large;
  dropped["no_ring"] = s.dropped_no_ring;
  d["dropped"] = dropped;
  py::dict suppressed;
  suppressed["disabled"] = s.suppressed_disabled;
  suppressed["sampled"] = s.suppressed_sampled;
  suppressed["filtered"] = s.suppressed_filtered;
  d["suppressed"] = suppressed;
  py::dict not_emitted;
  for (size_t i = 0; i < static_cast<size_t>(PyOutcome::kCount); ++i) {
    not_emitted[kPyOutcomeNames[i]] = g.not_emitted[i].load(std::memory_order_relaxed);
  }
  d["not_emitted"] = not_emitted;
  d["conversion_errors"] = g.conversion_errors.load(std::memory_order_relaxed);
  d["start_error"] =
      start_error.empty() ? py::object(py::none()) : py::object(py::str(start_error));
  return d;
}

py::dict Start(py::object ns, py::object worker_id, double attach_wait, py::object transport,
               py::object pre_attach_events) {
  Native& g = G();
  if (!(attach_wait >= 0 && attach_wait <= 3600)) {
    throw py::value_error("attach_wait must be between 0 and 3600 seconds");
  }
  StartRequest req;
  if (!pre_attach_events.is_none()) {
    if (!py::isinstance<py::int_>(pre_attach_events)) {
      throw py::type_error("pre_attach_events must be an int or None");
    }
    const long long n = pre_attach_events.cast<long long>();
    if (n < 0 || n > std::numeric_limits<uint32_t>::max()) {
      throw py::value_error("pre_attach_events must be between 0 and 4294967295");
    }
    req.pre_attach_events = static_cast<uint32_t>(n);
  }
  if (!transport.is_none()) {
    const std::string name = py::str(transport);
    if (name == "shm") {
      req.transport = pitlane::WorkerTransport::kShm;
    } else if (name == "grpc") {
      req.transport = pitlane::WorkerTransport::kGrpc;
    } else if (name != "auto") {
      throw py::value_error("transport must be 'auto', 'shm' or 'grpc', not '" + name + "'");
    }
  }
  if (!ns.is_none()) req.ns = py::str(ns);
  if (!worker_id.is_none()) req.worker_id = py::str(worker_id);
  req.attach_wait = std::chrono::milliseconds(static_cast<int64_t>(attach_wait * 1000));
  std::string conflict;
  pitlane::Status status;
  {
    py::gil_scoped_release release;
    std::lock_guard<std::mutex> lock(g.lifecycle_mu);
    if (g.closed) {
      status = pitlane::FailedPrecondition("pitlane is closed (the interpreter is exiting)");
    } else if (g.owned) {
      if ((!req.ns.empty() && req.ns != g.owned->ns()) ||
          (!req.worker_id.empty() && req.worker_id != g.owned->id()) ||
          (req.transport != pitlane::WorkerTransport::kAuto &&
           req.transport != g.owned->transport())) {
        conflict = "the worker already runs as \"" + g.owned->id() + "\" in namespace \"" +
                   g.owned->ns() + "\" over " +
                   std::string(pitlane::WorkerTransportName(g.owned->transport())) +
                   "; call shutdown() first";
      }
    } else {
      status = StartLocked(req);
    }
  }
  if (!conflict.empty()) throw std::runtime_error(conflict);
  if (!status.ok()) {
    if (status.code() == pitlane::StatusCode::kInvalidArgument)
      throw py::value_error(status.ToString());
    throw std::runtime_error(status.ToString());
  }
  return StatsDict();
}

py::dict Shutdown(bool final) {
  Native& g = G();
  {
    py::gil_scoped_release release;
    std::lock_guard<std::mutex> lock(g.lifecycle_mu);
    if (final) g.closed = true;
  }
  py::dict last = StatsDict();
  {
    py::gil_scoped_release release;
    std::lock_guard<std::mutex> lock(g.lifecycle_mu);
    ShutdownLocked();
  }
  return last;
}

bool WaitAttached(double timeout) {
  Native& g = G();
  if (!(timeout >= 0 && timeout <= 3600))
    throw py::value_error("timeout must be between 0 and 3600 seconds");
  py::gil_scoped_release release;
  std::lock_guard<std::mutex> lock(g.lifecycle_mu);
  if (!g.owned) return false;
  return g.owned->WaitAttached(std::chrono::milliseconds(static_cast<int64_t>(timeout * 1000)));
}

}  // namespace

PYBIND11_MODULE(_native, m) {
  m.doc() = "pitlane's native worker binding; use pitlane.telemetry.";
  Native& g = G();
  static_assert(static_cast<size_t>(pitlane::EmitResult::kBuffered) + 1 == kEmitResultCount);
  for (size_t i = 0; i < kEmitResultCount; ++i) {
    const std::string_view name = pitlane::EmitResultName(static_cast<pitlane::EmitResult>(i));
    g.result_names[i] = PyUnicode_InternFromString(std::string(name).c_str());
  }
  for (size_t i = 0; i < static_cast<size_t>(PyOutcome::kCount); ++i) {
    g.outcome_names[i] = PyUnicode_InternFromString(kPyOutcomeNames[i]);
  }
  const char* keywords[] = {"event_name", "measurements",  "metadata",
                            "correlation_id", "span_id", "parent_span_id"};
  for (int i = 0; i < 6; ++i) g.keyword_names[i] = PyUnicode_InternFromString(keywords[i]);
  static std::once_flag atfork_once;
  std::call_once(atfork_once, [] { pthread_atfork(nullptr, nullptr, AtforkChild); });

  PyObject* emit = PyCFunction_NewEx(&kEmitDef, nullptr, m.attr("__name__").ptr());
  if (emit == nullptr) throw py::error_already_set();
  m.add_object("emit", py::reinterpret_steal<py::object>(emit));

  m.def("_bind_correlation_var", [](py::object var) {
    if (!PyContextVar_CheckExact(var.ptr()))
      throw py::type_error("expected a contextvars.ContextVar");
    Native& g = G();
    Py_XDECREF(g.correlation_var);
    g.correlation_var = var.release().ptr();
  });
  m.def("_mark_spawned_child", [] {
    Native& g = G();
    py::gil_scoped_release release;
    std::lock_guard<std::mutex> lock(g.lifecycle_mu);
    g.spawned_child = true;
  });
  m.def(
      "new_correlation_id", [] { return pitlane::NewCorrelationId(); },
      "A fresh correlation id in pitlane's format: 'pl-' + 24 hex digits.");
  m.attr("MAX_CORRELATION_ID_BYTES") = pitlane::kMaxCorrelationIdBytes;
  m.def("new_span_id", [] { return pitlane::NewSpanId(); },
        "A fresh span id (non-zero uint64) from the calling thread's generator.");
  m.def(
      "new_trace_id",
      [] {
        return pitlane::TraceIdHex(
            pitlane::TraceIdFromSpanIds(pitlane::NewSpanId(), pitlane::NewSpanId()));
      },
      "A fresh trace id, 32 hex digits: the correlation id of a span that starts a trace.");
  m.def(
      "trace_id_hex",
      [](std::string_view correlation) -> py::object {
        const std::optional<pitlane::TraceId> id = pitlane::TraceIdFromCorrelationId(correlation);
        return id ? py::object(py::str(pitlane::TraceIdHex(*id))) : py::object(py::none());
      },
      "The trace id (32 hex digits) a correlation id maps to; None for ''.");
  m.def(
      "parse_traceparent",
      [](std::string_view value) -> py::object {
        const std::optional<pitlane::Traceparent> tp = pitlane::ParseTraceparent(value);
        if (!tp) return py::none();
        return py::make_tuple(pitlane::TraceIdHex(tp->trace_id), tp->parent_span_id, tp->flags);
      },
      "(trace id hex, parent span id, flags) of a W3C traceparent; None when invalid.");
  m.def(
      "format_traceparent",
      [](std::string_view correlation, uint64_t span_id) -> py::object {
        const std::optional<pitlane::TraceId> id = pitlane::TraceIdFromCorrelationId(correlation);
        if (!id || span_id == 0) return py::none();
        return py::str(pitlane::FormatTraceparent(*id, span_id));
      },
      "The traceparent for a correlation id and span id; None when either is missing.");
  m.def("start", &Start, py::arg("namespace") = py::none(), py::arg("worker_id") = py::none(),
        py::arg("attach_wait") = 0.2, py::arg("transport") = py::none(),
        py::arg("pre_attach_events") = py::none(),
        "Starts the process's worker (no-op when it runs with the same namespace, id and\n"
        "transport). transport: 'auto', 'shm', 'grpc' or None (PITLANE_TRANSPORT).\n"
        "pre_attach_events: events kept before the first host (None: 1,024).");
  m.def("shutdown", &Shutdown, py::arg("final") = false,
        "Retires the worker; returns its last stats. final=True: no emit starts it again.");
  m.def("stats", &StatsDict, "The worker's counters and the module's own.");
  m.def("wait_attached", &WaitAttached, py::arg("timeout"),
        "Waits until the running worker is attached to a host; returns whether it is.");
}
