"""Snakepit's stderr backend: one ``TELEMETRY:{json}`` line per event on stderr, byte for
byte as ``snakepit_bridge.telemetry.backends.stderr`` writes it (a host that parses those lines
reads these)."""

from __future__ import annotations

import json
import sys
import time
from typing import Any, Dict, Optional

from .base import TelemetryBackend


class StderrBackend(TelemetryBackend):
    """``TELEMETRY:{"event":...,"measurements":{...},"metadata":{...},"timestamp_ns":...,
    "correlation_id":...}`` per event; a value JSON cannot encode gives one
    ``TELEMETRY_ERROR: ...`` line instead, and emit never raises."""

    def emit(
        self,
        event_name: str,
        measurements: Dict[str, Any],
        metadata: Optional[Dict[str, Any]] = None,
        correlation_id: Optional[str] = None,
    ) -> None:
        payload = {
            "event": event_name,
            "measurements": measurements,
            "metadata": metadata or {},
            "timestamp_ns": time.time_ns(),
            "correlation_id": correlation_id or "",
        }
        try:
            sys.stderr.write(f"TELEMETRY:{json.dumps(payload)}\n")
            sys.stderr.flush()
        except Exception as e:  # noqa: BLE001 - telemetry must not crash the worker
            sys.stderr.write(f"TELEMETRY_ERROR: {e}\n")
            sys.stderr.flush()
