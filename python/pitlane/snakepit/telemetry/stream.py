"""The process's pitlane worker seen as Snakepit's ``TelemetryStream``.

In Snakepit a ``TelemetryStream`` queues events for the worker's gRPC server, which yields
them on ``StreamTelemetry``. Here the stream hands each event to the process's
``pitlane::Worker`` (``pitlane.telemetry``): shared-memory rings when a host runs on this
machine, else pitlane's own gRPC transport (which serves Snakepit's ``StreamTelemetry`` itself
when ``PITLANE_GRPC_LISTEN`` is set), with the host's control (toggle, sampling, filters)
applied by the worker. There is no ``stream()`` coroutine to serve: the worker does that.
"""

from __future__ import annotations

import threading
from typing import Any, Dict, Optional

from ... import telemetry as _pitlane

_NOT_STARTED = "no_worker"


class TelemetryStream:
    """Emits through the process's pitlane worker, which it starts on its first emit with
    ``transport`` (``"auto"``, ``"shm"``, ``"grpc"``; None: ``PITLANE_TRANSPORT``), never
    waiting for a host: events emitted before the host is there are counted until it is.

    ``max_buffer``: as Snakepit's, the events kept until a host is there (the rest are counted
    in ``dropped_count``), when this stream starts the process's worker (a running worker keeps
    its own bound); also at most half a ring (``PITLANE_RING_BYTES``). Once attached the bounds
    are the ring and the gRPC queue (``PITLANE_GRPC_QUEUE_BYTES``).

    ``dropped_count``: events lost on the way (the worker's drops plus events the module could
    not hand to a worker), as Snakepit's counts queue overflow. Thread safety: any thread.
    """

    def __init__(self, max_buffer: int = 1024, transport: Optional[str] = None) -> None:
        if max_buffer < 1:
            raise ValueError("max_buffer must be at least 1")
        self.max_buffer = max_buffer
        self.transport = transport
        self.start_error: Optional[str] = None
        self._lock = threading.Lock()
        self._started = False
        self._closed = False
        self._not_sent = 0  # events emitted after close() or while the worker could not start

    def _start(self) -> bool:
        with self._lock:
            if not self._started and not self._closed:
                try:
                    _pitlane.start(attach_wait=0.0, transport=self.transport,
                                   pre_attach_events=self.max_buffer)
                    self._started = True
                    self.start_error = None
                except (RuntimeError, ValueError) as exc:
                    self.start_error = str(exc)
            if not self._started:
                self._not_sent += 1
            return self._started

    def emit(
        self,
        event_name: str,
        measurements: Optional[Dict[str, Any]],
        metadata: Optional[Dict[str, Any]] = None,
        correlation_id: Optional[str] = None,
        *,
        span_id: int = 0,
        parent_span_id: int = 0,
    ) -> str:
        """Emits one event (a span's with its span ids); returns its outcome
        (``pitlane.telemetry.emit``'s, or ``"no_worker"`` after :meth:`close` or when the
        worker cannot start — ``start_error`` says why)."""
        if not self._started and not self._start():
            return _NOT_STARTED
        return _pitlane.emit(event_name, measurements, metadata, correlation_id,
                             span_id=span_id, parent_span_id=parent_span_id)

    def close(self) -> None:
        """Retires the worker: the host drains what it published. Later emits are counted in
        ``dropped_count`` and not sent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            was_started, self._started = self._started, False
        if was_started:
            _pitlane.shutdown()

    @property
    def dropped_count(self) -> int:
        """Events lost: the worker's ``dropped`` (ring or queue full, too large, no ring) plus
        those never handed to a worker."""
        s = _pitlane.stats()
        return sum(s["dropped"].values()) + sum(s["not_emitted"].values()) + self._not_sent

    def stats(self) -> dict:
        """``pitlane.telemetry.stats()``: every counter of the worker."""
        return _pitlane.stats()
