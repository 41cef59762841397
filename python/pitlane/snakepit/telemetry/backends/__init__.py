"""Telemetry backends (Snakepit's ``snakepit_bridge.telemetry.backends``)."""

from .base import TelemetryBackend

__all__ = ["TelemetryBackend"]
