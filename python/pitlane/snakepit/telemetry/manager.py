"""The active telemetry backend (Snakepit's ``snakepit_bridge.telemetry.manager``).

Unlike Snakepit, where the worker's gRPC server installs the backend, the backend a process
starts with comes from ``SNAKEPIT_TELEMETRY_BACKEND`` (Snakepit's design for backend selection;
:func:`backend_from_environment`), and :func:`set_backend` replaces it as in Snakepit.
"""

from __future__ import annotations

import os
from typing import Optional

from .backends.base import TelemetryBackend

#: The variable Snakepit's design names for choosing a worker's backend.
BACKEND_ENV = "SNAKEPIT_TELEMETRY_BACKEND"

_backend: Optional[TelemetryBackend] = None


def set_backend(backend: Optional[TelemetryBackend]) -> None:
    """Sets the active backend (any object with ``emit``), or None to disable telemetry."""
    global _backend
    _backend = backend


def get_backend() -> Optional[TelemetryBackend]:
    """The active backend, or None when telemetry is disabled."""
    return _backend


def is_enabled() -> bool:
    """True when a backend is set."""
    return _backend is not None


def backend_from_environment(value: Optional[str] = None) -> Optional[TelemetryBackend]:
    """The backend ``SNAKEPIT_TELEMETRY_BACKEND`` (or ``value``) names.

    A comma-separated list of:

    * ``auto`` — the process's pitlane worker, transport from ``PITLANE_TRANSPORT`` (shared
      memory when this machine runs the namespace's host, else gRPC when a host address is
      configured); the default when the variable is unset or empty.
    * ``shm`` — the pitlane worker over shared memory.
    * ``grpc`` — the pitlane worker over gRPC (``PITLANE_GRPC_TARGET``, or serving
      ``StreamTelemetry`` at ``PITLANE_GRPC_LISTEN`` for a host that dials the worker, as a
      Snakepit host does).
    * ``stderr`` — Snakepit's ``TELEMETRY:{json}`` lines on stderr.
    * ``none`` — no telemetry (alone).

    Several names send every event to each of them (a :class:`CompositeBackend`). At most one
    of ``auto``/``shm``/``grpc``: a process has one pitlane worker. Anything else raises
    ``ValueError`` naming the variable, so a misspelt backend is not a silent loss.
    """
    from .backends.composite import CompositeBackend
    from .backends.grpc import GrpcBackend
    from .backends.pitlane import PitlaneBackend
    from .backends.shm import ShmBackend
    from .backends.stderr import StderrBackend

    factories = {
        "auto": PitlaneBackend,
        "shm": ShmBackend,
        "grpc": GrpcBackend,
        "stderr": StderrBackend,
    }
    text = os.environ.get(BACKEND_ENV, "") if value is None else value
    names = [n.strip() for n in text.split(",") if n.strip()] or ["auto"]

    def invalid(why: str) -> ValueError:
        return ValueError(
            f"{BACKEND_ENV}={text!r}: {why}; expected a comma-separated list of "
            f"auto, shm, grpc, stderr (at most one of auto/shm/grpc), or none")

    if names == ["none"]:
        return None
    for name in names:
        if name not in factories:
            raise invalid(f"unknown backend {name!r}")
    if len(set(names)) != len(names):
        raise invalid("a backend is named twice")
    if sum(name in ("auto", "shm", "grpc") for name in names) > 1:
        raise invalid("one process has one pitlane worker")
    backends = [factories[name]() for name in names]
    return backends[0] if len(backends) == 1 else CompositeBackend(backends)
