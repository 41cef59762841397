"""The backend interface (Snakepit's ``snakepit_bridge.telemetry.backends.base``)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Dict, Optional


class TelemetryBackend(ABC):
    """Carries events from a worker to its host. ``emit`` is called with the event name in
    dotted notation, its measurements, metadata and correlation id (the current one when the
    caller gave none); ``close`` when the worker shuts down."""

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
