"""Snakepit's ``GrpcBackend`` name: the pitlane worker over its gRPC transport."""

from __future__ import annotations

from .pitlane import PitlaneBackend


class GrpcBackend(PitlaneBackend):
    """The pitlane worker over gRPC (``SNAKEPIT_TELEMETRY_BACKEND=grpc``): streams to
    ``PITLANE_GRPC_TARGET``, or serves ``StreamTelemetry`` at ``PITLANE_GRPC_LISTEN`` for a host
    that dials the worker — Snakepit's direction. ``GrpcBackend(stream)`` as in Snakepit; a
    stream created without a transport is given ``"grpc"``."""

    transport = "grpc"
