"""pitlane for Python workers: emit telemetry events into a pitlane host's shared-memory rings.

The API lives in :mod:`pitlane.telemetry` (the seed's ``snakepit_bridge.telemetry`` API)::

    from pitlane import telemetry
    telemetry.emit("python.memory.sampled", {"rss_bytes": 512 << 20}, {"python_pid": 4242})
"""

from . import telemetry
from .telemetry import (
    continue_trace,
    dropped_count,
    emit,
    get_correlation_id,
    new_correlation_id,
    reset_correlation_id,
    set_correlation_id,
    shutdown,
    span,
    start,
    stats,
    traceparent,
    wait_attached,
)

__version__ = "@PROJECT_VERSION@"

__all__ = ["telemetry", *telemetry.__all__]
