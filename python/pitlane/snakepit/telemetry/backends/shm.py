"""The pitlane worker over shared memory."""

from __future__ import annotations

from .pitlane import PitlaneBackend


class ShmBackend(PitlaneBackend):
    """The pitlane worker over shared-memory rings (``SNAKEPIT_TELEMETRY_BACKEND=shm``): a host
    on this machine in the worker's namespace (``PITLANE_NAMESPACE``) reads them."""

    transport = "shm"
