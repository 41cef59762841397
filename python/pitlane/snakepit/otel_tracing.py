"""Snakepit's correlation and OpenTelemetry helpers (``snakepit_bridge.otel_tracing``), on
pitlane's correlation id: the context variable here is the one ``pitlane.telemetry`` and its
emit read, so an id set from an incoming ``x-snakepit-correlation-id`` header (``span`` with
``context_metadata``) is the id every event emitted inside carries.

What pitlane adds: W3C Trace Context beside the correlation header. ``span`` continues the
caller's trace from an incoming ``traceparent`` entry (the caller's span becomes the parent of
the spans inside), and :func:`outgoing_metadata` adds ``traceparent`` for the current span, so
a trace crosses gRPC calls between workers with its parentage.

OpenTelemetry is optional, as in Snakepit: without its SDK, :func:`setup_tracing` only installs
the log-record factory and :func:`span` yields None.
"""

from __future__ import annotations

import logging
import os
import uuid
from contextlib import contextmanager
from typing import Iterable, List, Optional, Sequence, Tuple

from .. import telemetry as _pitlane
from ..telemetry import _correlation_id

try:  # optional dependency, as in Snakepit
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
except ImportError:
    trace = None
    Resource = None
    TracerProvider = None
    BatchSpanProcessor = None
    ConsoleSpanExporter = None
    OTLPSpanExporter = None

#: The gRPC metadata key that carries a correlation id between Snakepit's host and workers.
CORRELATION_HEADER = "x-snakepit-correlation-id"
#: The gRPC metadata key of W3C Trace Context (https://www.w3.org/TR/trace-context/): the
#: caller's trace id and span id.
TRACEPARENT_HEADER = "traceparent"

_tracer = None
_tracing_ready = False
_log_factory_installed = False
_original_log_factory = logging.getLogRecordFactory()


def setup_tracing() -> None:
    """Initialises OpenTelemetry tracing when its SDK is installed (service name
    ``SNAKEPIT_SERVICE_NAME``; OTLP to ``SNAKEPIT_OTEL_ENDPOINT``, else the console unless
    ``SNAKEPIT_OTEL_CONSOLE`` is false), and in any case makes every log record carry
    ``correlation_id`` (the current id, ``"-"`` when none). Idempotent."""
    global _tracing_ready, _tracer
    if _tracing_ready:
        return
    if trace is not None and TracerProvider is not None and BatchSpanProcessor is not None:
        resource = Resource.create({
            "service.name": os.environ.get("SNAKEPIT_SERVICE_NAME", "snakepit.python.bridge"),
            "service.namespace": "snakepit",
            "service.instance.id": os.environ.get("SNAKEPIT_INSTANCE_ID", uuid.uuid4().hex),
        })
        provider = TracerProvider(resource=resource)
        exporter = _select_exporter()
        if exporter is not None:
            provider.add_span_processor(BatchSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        _tracer = trace.get_tracer("snakepit.bridge")
    _tracing_ready = True
    _install_log_record_factory()


def get_tracer():
    """The OpenTelemetry tracer once :func:`setup_tracing` made one, else None."""
    return _tracer if _tracing_ready else None


def new_correlation_id() -> str:
    """A fresh correlation id: 32 hex digits (Snakepit's ``uuid4().hex``)."""
    return uuid.uuid4().hex


def set_correlation_id(value: str):
    """Makes ``value`` the current id of this context; returns the token to reset it."""
    return _correlation_id.set(value)


def reset_correlation_id(token=None) -> None:
    """Restores the id current before the ``set_correlation_id`` that returned ``token``
    (None: nothing to restore). Snakepit requires the argument; its guides call it without
    one, which is accepted here and does nothing."""
    if token is not None:
        _correlation_id.reset(token)


def get_correlation_id(default: Optional[str] = None) -> Optional[str]:
    """The current correlation id, or ``default``."""
    value = _correlation_id.get()
    return value if value is not None else default


@contextmanager
def span(
    name: str,
    *,
    context_metadata: Optional[Sequence[Tuple[str, str]]] = None,
    attributes: Optional[dict] = None,
):
    """A scope whose correlation id is the one in ``context_metadata`` (gRPC invocation
    metadata: the ``x-snakepit-correlation-id`` entry, key case-insensitive), else the trace id
    of its ``traceparent`` entry, else the current one, else a new one; restored on exit. A
    ``traceparent`` of that trace makes the caller's span the parent of the spans inside
    (``pitlane.telemetry.continue_trace``); an invalid one is ignored. With OpenTelemetry set up
    it is also a span named ``name`` with ``attributes`` and ``snakepit.correlation_id``, which
    it yields (else None)."""
    incoming = _pitlane.continue_trace(_header(context_metadata, TRACEPARENT_HEADER),
                                       _header(context_metadata, CORRELATION_HEADER))
    with incoming:
        correlation = get_correlation_id() or new_correlation_id()
        token = set_correlation_id(correlation)
        tracer = get_tracer()
        if tracer is None:
            try:
                yield None
            finally:
                reset_correlation_id(token)
            return
        with tracer.start_as_current_span(name) as span_object:
            if attributes:
                for key, value in attributes.items():
                    span_object.set_attribute(key, value)
            span_object.set_attribute("snakepit.correlation_id", correlation)
            try:
                yield span_object
            finally:
                reset_correlation_id(token)


def outgoing_metadata(initial: Optional[Iterable[Tuple[str, str]]] = None) -> List[Tuple[str, str]]:
    """``initial`` as a list, plus ``(CORRELATION_HEADER, id)`` when an id is current and
    ``(TRACEPARENT_HEADER, value)`` for the current span (``pitlane.telemetry.traceparent``;
    inside a ``span`` that continued a caller's trace and no span of its own, the caller's):
    the metadata of a gRPC call that should carry them. A ``traceparent`` already in
    ``initial`` is kept and not repeated (W3C: a second one makes the value invalid)."""
    metadata: List[Tuple[str, str]] = list(initial) if initial else []
    correlation = get_correlation_id()
    if correlation:
        metadata.append((CORRELATION_HEADER, correlation))
        traceparent = _pitlane.traceparent()
        if traceparent and _header(metadata, TRACEPARENT_HEADER) is None:
            metadata.append((TRACEPARENT_HEADER, traceparent))
    return metadata


class _CorrelationIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.correlation_id = get_correlation_id("-")
        return True


def correlation_filter() -> logging.Filter:
    """A ``logging.Filter`` that sets ``record.correlation_id`` (``"-"`` when none)."""
    return _CorrelationIdFilter()


def _header(metadata: Optional[Sequence[Tuple[str, str]]], name: str) -> Optional[str]:
    """The first non-empty value of the entry ``name`` (gRPC keys are case-insensitive)."""
    for key, value in metadata or ():
        if key.lower() == name and value:
            return value
    return None


def _select_exporter():
    endpoint = os.environ.get("SNAKEPIT_OTEL_ENDPOINT")
    if endpoint and OTLPSpanExporter is not None:
        return OTLPSpanExporter(endpoint=endpoint)
    if ConsoleSpanExporter is not None and os.environ.get(
            "SNAKEPIT_OTEL_CONSOLE", "true").lower() in {"1", "true", "yes"}:
        return ConsoleSpanExporter()
    return None


def _install_log_record_factory() -> None:
    global _log_factory_installed
    if _log_factory_installed:
        return
    original_factory = _original_log_factory

    def record_factory(*args, **kwargs):
        record = original_factory(*args, **kwargs)
        record.correlation_id = getattr(record, "correlation_id", None) or get_correlation_id("-")
        return record

    logging.setLogRecordFactory(record_factory)
    _log_factory_installed = True
