"""Sends every event to several backends (the ``CompositeBackend`` of Snakepit's backend
design), e.g. ``SNAKEPIT_TELEMETRY_BACKEND=shm,stderr``."""

from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional, Sequence

from .base import TelemetryBackend, emit_span_event

_log = logging.getLogger(__name__)


class CompositeBackend(TelemetryBackend):
    """Forwards each call to every backend in order. An exception from one backend does not
    stop the others: it is counted in ``errors``, the first of each kind is logged, and emit
    returns None in that backend's place. ``stream`` is the first backend's that has one, so
    ``get_backend().stream.dropped_count`` works as with a single backend. A span event's ids
    reach the backends that carry them (:func:`base.emit_span_event`)."""

    carries_span_ids = True

    def __init__(self, backends: Sequence[Any]) -> None:
        if not backends:
            raise ValueError("CompositeBackend needs at least one backend")
        self.backends: List[Any] = list(backends)
        self.errors = 0
        self._logged: set = set()

    def emit(
        self,
        event_name: str,
        measurements: Dict[str, Any],
        metadata: Optional[Dict[str, Any]] = None,
        correlation_id: Optional[str] = None,
        *,
        span_id: int = 0,
        parent_span_id: int = 0,
    ) -> List[Any]:
        results = []
        for backend in self.backends:
            try:
                results.append(emit_span_event(backend, event_name, measurements, metadata,
                                               correlation_id, span_id, parent_span_id))
            except Exception as exc:  # noqa: BLE001 - one broken backend must not silence the rest
                self.errors += 1
                kind = (type(backend), type(exc))
                if kind not in self._logged:
                    self._logged.add(kind)
                    _log.warning("telemetry backend %s failed: %r (further failures of this "
                                 "kind are only counted)", type(backend).__name__, exc)
                results.append(None)
        return results

    def close(self) -> None:
        for backend in self.backends:
            close = getattr(backend, "close", None)
            if close is not None:
                close()

    @property
    def stream(self):
        for backend in self.backends:
            stream = getattr(backend, "stream", None)
            if stream is not None:
                return stream
        raise AttributeError("none of the composite's backends has a stream")
