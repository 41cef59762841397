"""The backend interface (Snakepit's ``snakepit_bridge.telemetry.backends.base``)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Dict, Optional


class TelemetryBackend(ABC):
    """Carries events from a worker to its host. ``emit`` is called with the event name in
    dotted notation, its measurements, metadata and correlation id (the current one when the
    caller gave none); ``close`` when the worker shuts down."""

    #: True when ``emit`` also takes the keywords ``span_id`` and ``parent_span_id`` (pitlane's
    #: backends): :func:`emit_span_event` then passes a span event's identity on.
    carries_span_ids = False

    @abstractmethod
    def emit(
        self,
        event_name: str,
        measurements: Dict[str, Any],
        metadata: Optional[Dict[str, Any]] = None,
        correlation_id: Optional[str] = None,
    ) -> Any:
        """Emits one event. pitlane's backends return the outcome (see
        ``pitlane.telemetry.emit``); Snakepit's return None."""

    def close(self) -> None:
        """Releases the backend's resources."""


def emit_span_event(
    backend: Any,
    event_name: str,
    measurements: Dict[str, Any],
    metadata: Optional[Dict[str, Any]],
    correlation_id: Optional[str],
    span_id: int,
    parent_span_id: int,
) -> Any:
    """Emits one of a span's events through ``backend``: with its span ids to a backend that
    ``carries_span_ids`` (so the host's OpenTelemetry exporter rebuilds the span tree), with
    Snakepit's four arguments to any other (a Snakepit-style backend knows no span ids)."""
    if getattr(backend, "carries_span_ids", False):
        return backend.emit(event_name, measurements, metadata, correlation_id,
                            span_id=span_id, parent_span_id=parent_span_id)
    return backend.emit(event_name, measurements, metadata, correlation_id)
