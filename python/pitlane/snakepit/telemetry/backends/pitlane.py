"""Backends that send events through the process's pitlane worker."""

from __future__ import annotations

from typing import Any, Dict, Optional

from ..stream import TelemetryStream
from .base import TelemetryBackend


class PitlaneBackend(TelemetryBackend):
    """The process's pitlane worker, over the transport ``PITLANE_TRANSPORT`` chooses
    (``SNAKEPIT_TELEMETRY_BACKEND=auto``). ``stream`` is its :class:`TelemetryStream`, so
    ``get_backend().stream.dropped_count`` works as with Snakepit's gRPC backend. ``emit``
    returns the event's outcome (``"ok"``, ``"dropped_full"``, ...)."""

    transport: Optional[str] = None
    carries_span_ids = True

    def __init__(self, stream: Optional[TelemetryStream] = None) -> None:
        self._stream = stream if stream is not None else TelemetryStream()
        if self._stream.transport is None:
            self._stream.transport = self.transport

    def emit(
        self,
        event_name: str,
        measurements: Dict[str, Any],
        metadata: Optional[Dict[str, Any]] = None,
        correlation_id: Optional[str] = None,
        *,
        span_id: int = 0,
        parent_span_id: int = 0,
    ) -> str:
        return self._stream.emit(event_name, measurements, metadata, correlation_id,
                                 span_id=span_id, parent_span_id=parent_span_id)

    def close(self) -> None:
        self._stream.close()

    @property
    def stream(self) -> TelemetryStream:
        return self._stream
