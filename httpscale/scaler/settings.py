"""Scaler settings: one frozen dataclass per concern, every field with its unit and default.

The `scaler` command fills them from click options (each also `HTTPSCALE_<OPTION>`); tests build
them directly, usually with port 0 and short intervals.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

__all__ = [
    "CollectorSettings",
    "ListenSettings",
    "ScalerSettings",
    "ScalerShutdown",
    "WakeSettings",
]


@dataclass(frozen=True, slots=True)
class ListenSettings:
    host: str = "0.0.0.0"  # bind address of both servers
    grpc_port: int = 9091  # KEDA external scaler gRPC; 0 picks a free port
    admin_port: int = 9092  # /metrics, /livez, /readyz; 0 picks a free port


@dataclass(frozen=True, slots=True)
class CollectorSettings:
    """Seconds. How `/queue` is polled on every interceptor replica."""

    poll_interval: float = 0.2  # time between the starts of two poll rounds
    poll_timeout: float = 1.0  # whole `GET /queue` (connect + response) on one replica
    # A replica whose polls fail keeps its last concurrency this long (a blip must not read as
    # a drop to zero and scale a busy app down); after it, it counts as gone.
    stale_grace: float = 3.0

    def __post_init__(self) -> None:
        for name in ("poll_interval", "poll_timeout", "stale_grace"):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")


@dataclass(frozen=True, slots=True)
class WakeSettings:
    """Seconds. The push channel: one `GET /wake` NDJSON stream per interceptor replica."""

    # False: activation waits for the next poll (interceptors without /wake; benchmarks).
    enabled: bool = True
    # A wake event holds the route active this long unless a poll confirms Concurrency > 0
    # sooner; it covers the poll that may still be in flight with a pre-wake snapshot.
    hold: float = 2.0
    connect_timeout: float = 2.0  # TCP connect + response head of `GET /wake`
    # No line (wake or ping, pings come every 5 s) for this long means a dead peer: reconnect.
    idle_timeout: float = 15.0
    backoff_initial: float = 0.1  # first reconnect delay after the stream drops
    backoff_max: float = 5.0  # reconnect delay doubles up to this


@dataclass(frozen=True, slots=True)
class ScalerShutdown:
    """Seconds, on SIGTERM/SIGINT: health NOT_SERVING -> end streams -> stop gRPC -> stop polls."""

    grpc_grace: float = 5.0  # unary RPCs in progress may finish within this
    admin_grace: float = 2.0  # admin server connections close after this


@dataclass(frozen=True, slots=True)
class ScalerSettings:
    listen: ListenSettings = field(default_factory=ListenSettings)
    collector: CollectorSettings = field(default_factory=CollectorSettings)
    wake: WakeSettings = field(default_factory=WakeSettings)
    shutdown: ScalerShutdown = field(default_factory=ScalerShutdown)
