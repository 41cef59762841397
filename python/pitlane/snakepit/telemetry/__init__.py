"""Snakepit's telemetry module (``snakepit_bridge.telemetry``) on pitlane's transport.

Same public names, same behaviour; replace the import::

    from pitlane.snakepit import telemetry      # was: from snakepit_bridge import telemetry

    telemetry.emit("tool.execution.start", {"system_time": time.time_ns()}, {"tool": "predict"})
    with telemetry.span("tool.execution", {"tool": "predict"}):
        telemetry.emit("tool.result_size", {"bytes": 2048})
    telemetry.get_backend().stream.dropped_count

The backend a process starts with comes from ``SNAKEPIT_TELEMETRY_BACKEND`` (``auto`` by
default: the pitlane worker over shared memory or gRPC; also ``shm``, ``grpc``, ``stderr``,
``none``, or several separated by commas — see :func:`manager.backend_from_environment`); an
invalid value makes the import raise ``ValueError``. :func:`set_backend` replaces it, as in
Snakepit (any object with an ``emit`` method works).

What pitlane adds (README "Coming from Snakepit"): :func:`emit` with ``correlation_id=None``
uses the current correlation id (``set_correlation_id``, :func:`otel_span`, :func:`span`) and
returns the backend's result (pitlane's backends: the outcome, ``"ok"``, ``"dropped_full"``,
...); :func:`span` also records ``BaseException`` (``KeyboardInterrupt``, ``CancelledError``),
times with the monotonic clock, makes its correlation id current (a new one when none), and
works with ``async with`` and as a decorator.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

from ... import telemetry as _pitlane
from ...telemetry import _correlation_id
from ..otel_tracing import (
    CORRELATION_HEADER,
    correlation_filter,
    get_correlation_id,
    get_tracer,
    new_correlation_id,
    outgoing_metadata,
    reset_correlation_id,
    set_correlation_id,
    setup_tracing,
)
from ..otel_tracing import span as otel_span
from . import manager as _manager
from .backends.base import emit_span_event
from .manager import get_backend, is_enabled, set_backend

__all__ = [
    "emit",
    "span",
    "set_backend",
    "get_backend",
    "is_enabled",
    "setup_tracing",
    "get_tracer",
    "correlation_filter",
    "new_correlation_id",
    "set_correlation_id",
    "reset_correlation_id",
    "get_correlation_id",
    "outgoing_metadata",
    "CORRELATION_HEADER",
    "otel_span",
]


def emit(
    event: str,
    measurements: Optional[Dict[str, Any]],
    metadata: Optional[Dict[str, Any]] = None,
    correlation_id: Optional[str] = None,
) -> Any:
    """Emits one event through the active backend; nothing when telemetry is disabled
    (no backend). ``correlation_id=None``: the current one. Returns the backend's result."""
    backend = _manager._backend
    if backend is None:
        return None
    if correlation_id is None:
        correlation_id = _correlation_id.get()
    return backend.emit(event, measurements, metadata, correlation_id)


class span(_pitlane.span):  # noqa: N801 - Snakepit's name
    """``span(operation, metadata=None, correlation_id=None)``: ``<operation>.start``
    ``{system_time}``, then ``<operation>.stop`` ``{duration}`` or ``<operation>.exception``
    ``{duration}`` with ``error_type`` / ``error_message``, through the active backend (see
    ``pitlane.telemetry.span``); pitlane's backends also get the span ids."""

    __slots__ = ()

    def _send(self, name, measurements, metadata, correlation, span_id, parent) -> None:
        backend = _manager._backend
        if backend is not None:
            emit_span_event(backend, name, measurements, metadata, correlation, span_id, parent)


set_backend(_manager.backend_from_environment())
