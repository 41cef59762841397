"""pitlane's telemetry API for Python workers (the seed's ``snakepit_bridge.telemetry`` API).

Events go through the process's ``pitlane::Worker`` into shared-memory rings read by a pitlane
host (the C++ worker chooses the transport: ``PITLANE_TRANSPORT``). The worker starts on first
use with the environment's defaults (``PITLANE_NAMESPACE``, ``PITLANE_WORKER_ID``,
``PITLANE_RING_BYTES``); :func:`start` starts it explicitly.

Example::

    from pitlane import telemetry

    telemetry.emit("tool.execution.start", {"system_time": time.time_ns()}, {"tool": "predict"})

    with telemetry.span("tool.execution", {"tool": "predict"}):
        result = do_work()
        telemetry.emit("tool.result_size", {"bytes": len(result)})

    @telemetry.span("python.call", {"command": "predict"})
    async def predict(x): ...

Conversion rules of :func:`emit` (never raises for a value it cannot send):

* measurement values: ``bool`` -> int 0/1; ``int`` -> int64; an ``int`` outside int64 -> its
  decimal digits as a string value; ``float`` -> double (NaN and +-inf travel unchanged);
  anything else -> ``str(value)``.
* metadata values -> ``str(value)``; keys that are not ``str`` -> ``str(key)``.
* when ``str()`` raises, ``"<unprintable TYPE>"`` is sent and ``stats()["conversion_errors"]``
  counts it; a ``measurements``/``metadata`` argument that is not a mapping is counted under
  ``stats()["not_emitted"]["invalid_argument"]`` and nothing is sent.
* ``correlation_id=None`` -> the current id (:func:`set_correlation_id`, or the enclosing
  :func:`span`); none -> the event has no id. The host rejects ids over 128 bytes.

The catalog decides what the host admits: an unknown event name or a measurement key outside
the allowlist is published and then rejected (and counted) by the host.
"""

from __future__ import annotations

import atexit
import contextvars
import functools
import importlib.util
import inspect
import os
import sys
import time
from typing import Any, Callable, Mapping, Optional, TypeVar

try:
    from . import _native
except ImportError:
    # Without the extension Python's own message is "cannot import name '_native' from partially
    # initialized module 'pitlane' (most likely due to a circular import)": say what is missing.
    # An extension that is there but does not load keeps its own error (it names the cause).
    if importlib.util.find_spec(f"{__package__}._native") is not None:
        raise
    raise ImportError(
        f"pitlane's native module {__package__}._native is not built: there is no _native*.so "
        f"in {os.path.dirname(os.path.abspath(__file__))}. Build it with the full build, "
        "`cmake -S . -B build -DPITLANE_BUILD_PYTHON=ON && cmake --build build` (needs Debian's "
        "python3-dev and pybind11-dev; `./build.sh demo` builds only the pitlane command), then "
        "use PYTHONPATH=build/python or install the module (README \"Python workers\")",
        name=f"{__package__}._native",
    ) from None

__all__ = [
    "emit",
    "span",
    "start",
    "shutdown",
    "stats",
    "dropped_count",
    "wait_attached",
    "new_correlation_id",
    "set_correlation_id",
    "get_correlation_id",
    "reset_correlation_id",
    "traceparent",
    "continue_trace",
]

_correlation_id: contextvars.ContextVar[Optional[str]] = contextvars.ContextVar(
    "pitlane_correlation_id", default=None
)
_native._bind_correlation_var(_correlation_id)
# The innermost active span of this context (thread / asyncio task): the parent of the next one.
_span_id: contextvars.ContextVar[int] = contextvars.ContextVar("pitlane_span_id", default=0)

# A multiprocessing child started by "spawn" or "forkserver" imports this module afresh (a
# fork()ed child does not: the worker's atfork handler gives it its own id). Its environment,
# PITLANE_WORKER_ID included, is its parent's, so it registers as "<id>-<pid>" instead.
# While the child unpickles its target (which may import this module) parent_process() is not
# set yet, but the process is flagged as inheriting.
_mp = sys.modules.get("multiprocessing")
if _mp is not None and (_mp.parent_process() is not None
                        or getattr(_mp.current_process(), "_inheriting", False)):
    _native._mark_spawned_child()
del _mp

#: ``emit(event_name, measurements=None, metadata=None, correlation_id=None, *, span_id=0,
#: parent_span_id=0) -> str`` (the span ids are for :class:`span`'s events).
#: Emits one event and returns the outcome: ``"ok"``, ``"ok_truncated"`` (a value cut to the
#: catalog's 1 KiB, where the host would cut it), ``"buffered"`` (no host yet: kept, bounded,
#: and published in order when one appears), ``"dropped_full"``, ``"dropped_too_large"``,
#: ``"dropped_over_limit"`` (over the catalog's field-count, key or correlation-id limits: the
#: host would reject it), ``"dropped_no_ring"``, ``"suppressed_disabled"``,
#: ``"suppressed_sampled"``, ``"suppressed_filtered"``, ``"invalid_argument"``,
#: ``"no_worker"`` or ``"out_of_memory"``. The GIL is released while the event is written.
emit = _native.emit

#: ``new_correlation_id() -> str``: ``"pl-"`` + 24 hex digits, the C++ worker's format.
new_correlation_id = _native.new_correlation_id


def start(
    namespace: Optional[str] = None,
    worker_id: Optional[str] = None,
    attach_wait: float = 0.2,
    transport: Optional[str] = None,
    pre_attach_events: Optional[int] = None,
) -> dict:
    """Starts the process's worker and returns :func:`stats`.

    ``namespace`` / ``worker_id`` default to ``PITLANE_NAMESPACE`` / ``PITLANE_WORKER_ID``
    (else ``default`` / ``<hostname>-<pid>``); ``transport`` (``"auto"``, ``"shm"``,
    ``"grpc"``) to ``PITLANE_TRANSPORT``. Waits up to ``attach_wait`` seconds for the
    namespace's host; without one the worker keeps up to ``pre_attach_events`` events (None:
    1,024; at most half a ring) as ``"buffered"``, counts the rest as ``dropped.no_ring``, and
    publishes the kept ones in order when the host appears. A running worker with the same
    namespace, id and transport is kept (``pre_attach_events`` then changes nothing); a
    different one raises ``RuntimeError`` (call :func:`shutdown` first). An invalid
    namespace, id, transport or ``pre_attach_events`` raises ``ValueError``.
    """
    return _native.start(namespace, worker_id, attach_wait, transport, pre_attach_events)


def shutdown() -> dict:
    """Retires the worker (the host drains and reclaims its rings) and returns its last
    :func:`stats`. The next emit starts a new worker."""
    return _native.shutdown(False)


def stats() -> dict:
    """The worker's counters: ``emitted``, ``published``, ``dropped`` (``full``,
    ``too_large``, ``no_ring``), ``suppressed`` (``disabled``, ``sampled``, ``filtered``),
    plus ``worker_id``, ``namespace``, ``transport``, ``attached``, ``live_rings``,
    ``running``, ``pending`` (events kept until a host appears, not counted yet); and the
    module's own: ``not_emitted`` (``invalid_argument``, ``no_worker``, ``out_of_memory``),
    ``conversion_errors``, ``start_error`` (why the last start failed, or None).
    Per worker: ``emitted = suppressed + dropped + published``."""
    return _native.stats()


def dropped_count() -> int:
    """Events the worker dropped (ring full, too large, no ring), as the seed's
    ``dropped_count``."""
    return sum(_native.stats()["dropped"].values())


def wait_attached(timeout: float) -> bool:
    """Waits up to ``timeout`` seconds until the running worker is attached to a host."""
    return _native.wait_attached(timeout)


def set_correlation_id(value: Optional[str]) -> contextvars.Token:
    """Makes ``value`` the current correlation id of this context (thread / asyncio task);
    returns the token for :func:`reset_correlation_id`."""
    return _correlation_id.set(value)


def get_correlation_id(default: Optional[str] = None) -> Optional[str]:
    """The current correlation id, or ``default`` when none is set."""
    value = _correlation_id.get()
    return value if value is not None else default


def reset_correlation_id(token: Optional[contextvars.Token]) -> None:
    """Restores the correlation id that was current before ``set_correlation_id`` returned
    ``token`` (``None``: nothing to restore)."""
    if token is not None:
        _correlation_id.reset(token)


def _describe(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # noqa: BLE001 - a broken __str__ must not replace the real exception
        return f"<unprintable {type(exc).__name__}>"


_F = TypeVar("_F", bound=Callable[..., Any])


class span:  # noqa: N801 - the seed's name; used as a function
    """Times an operation: emits ``<operation>.start`` ``{system_time}`` (Unix ns) on entry,
    then ``<operation>.stop`` ``{duration}`` (ns, monotonic) or, when the body raises anything
    (also ``KeyboardInterrupt``, ``asyncio.CancelledError``), ``<operation>.exception``
    ``{duration}`` with ``error_type`` (the class name) and ``error_message`` (``str(exc)``)
    added to the metadata; the exception then propagates. Every event carries ``metadata``.

    The span's correlation id is ``correlation_id``, else the current one, else a new one; it
    is the current id inside the span, so nested spans and emits share it.

    Span identity: each entry takes a fresh span id; the enclosing span of the same context
    (thread or asyncio task) is its parent. All three events carry both ids, and the
    correlation id is the trace id (pitlane/trace_context.h), so an OpenTelemetry exporter on
    the host rebuilds the tree. A new trace's correlation id is 32 hex digits (a W3C trace id).

    Use as ``with span(...)``, ``async with span(...)`` or as a decorator of a function or a
    coroutine function (each call is its own span).
    """

    __slots__ = ("operation", "metadata", "correlation_id", "_stack", "_names")

    def __init__(
        self,
        operation: str,
        metadata: Optional[Mapping[str, Any]] = None,
        correlation_id: Optional[str] = None,
    ) -> None:
        self.operation = operation
        self.metadata = metadata
        self.correlation_id = correlation_id
        # (begin_ns, correlation id, span id, parent id, contextvar tokens) per active entry: a
        # span object may be entered again while active (recursion through a decorated
        # function).
        self._stack: list = []
        self._names = (f"{operation}.start", f"{operation}.stop", f"{operation}.exception")

    def __enter__(self) -> "span":
        correlation = self.correlation_id or _correlation_id.get() or _native.new_trace_id()
        token = _correlation_id.set(correlation)
        span_id = _native.new_span_id()
        parent = _span_id.get()
        span_token = _span_id.set(span_id)
        self._send(
            self._names[0], {"system_time": time.time_ns()}, self.metadata, correlation,
            span_id, parent,
        )
        self._stack.append((time.monotonic_ns(), correlation, span_id, parent, token, span_token))
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        begin, correlation, span_id, parent, token, span_token = self._stack.pop()
        duration = time.monotonic_ns() - begin
        try:
            if exc_type is None:
                self._send(
                    self._names[1], {"duration": duration}, self.metadata, correlation,
                    span_id, parent,
                )
            else:
                try:
                    metadata = dict(self.metadata) if self.metadata else {}
                except Exception:  # noqa: BLE001 - not a mapping: start/stop sent none either
                    metadata = {}
                metadata["error_type"] = exc_type.__name__
                metadata["error_message"] = _describe(exc) if exc is not None else ""
                self._send(
                    self._names[2], {"duration": duration}, metadata, correlation, span_id, parent
                )
        finally:
            try:
                _span_id.reset(span_token)
                _correlation_id.reset(token)
            except ValueError:  # exited in another context than entered: leave it be
                pass
        return False

    def _send(self, name, measurements, metadata, correlation, span_id, parent) -> None:
        # Where the span's events go: the process's worker; pitlane.snakepit.telemetry's span
        # overrides this to send them to its backend.
        _native.emit(
            name, measurements, metadata, correlation, span_id=span_id, parent_span_id=parent
        )

    async def __aenter__(self) -> "span":
        return self.__enter__()

    async def __aexit__(self, exc_type, exc, tb) -> bool:
        return self.__exit__(exc_type, exc, tb)

    def __call__(self, fn: _F) -> _F:
        kind = type(self)
        operation, metadata, correlation_id = self.operation, self.metadata, self.correlation_id
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args, **kwargs):
                with kind(operation, metadata, correlation_id):
                    return await fn(*args, **kwargs)

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with kind(operation, metadata, correlation_id):
                return fn(*args, **kwargs)

        return wrapper  # type: ignore[return-value]


def traceparent() -> Optional[str]:
    """The W3C ``traceparent`` for an outgoing call made from the current span (send it beside
    the correlation id header); None outside a span or without a correlation id."""
    correlation = _correlation_id.get()
    return _native.format_traceparent(correlation, _span_id.get()) if correlation else None


class continue_trace:  # noqa: N801 - a context manager used like a function
    """Continues the trace of an incoming call: inside ``with continue_trace(value):`` the
    current correlation id is the ``traceparent``'s trace id and the caller's span is the
    parent of the next span. An invalid or absent value (``None``) changes nothing
    (``ok`` is False), so a caller's bad header never breaks the call.

    ``correlation_id``: the id the caller sent beside the traceparent (Snakepit's
    ``x-snakepit-correlation-id``). It is the current id inside, whatever the traceparent, and
    the caller's span becomes the parent only when the traceparent belongs to that id's trace
    (a 32-hex id is its own trace id; any other maps to one, ``pitlane/trace_context.h``): a
    span of another trace must not become a parent here."""

    __slots__ = ("ok", "_correlation", "_parent", "_tokens")

    def __init__(self, value: Optional[str], correlation_id: Optional[str] = None) -> None:
        parsed = _native.parse_traceparent(value) if isinstance(value, str) else None
        if parsed is not None and correlation_id and _native.trace_id_hex(correlation_id) != parsed[0]:
            parsed = None
        self.ok = parsed is not None
        self._correlation = correlation_id or (parsed[0] if parsed else None)
        self._parent = parsed[1] if parsed else None
        self._tokens = None

    def __enter__(self) -> "continue_trace":
        correlation_token = (_correlation_id.set(self._correlation)
                             if self._correlation is not None else None)
        span_token = _span_id.set(self._parent) if self._parent is not None else None
        self._tokens = (correlation_token, span_token)
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if self._tokens is not None:
            correlation_token, span_token = self._tokens
            self._tokens = None
            try:
                if span_token is not None:
                    _span_id.reset(span_token)
                if correlation_token is not None:
                    _correlation_id.reset(correlation_token)
            except ValueError:  # exited in another context than entered: leave it be
                pass
        return False


def _close_at_exit() -> None:
    # Retires the rings so the host drains and reclaims them at once; emits after this (from
    # daemon threads) are counted as not_emitted.no_worker.
    _native.shutdown(True)


atexit.register(_close_at_exit)
