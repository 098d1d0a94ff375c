"""Operator settings: one frozen dataclass per concern, every field with its unit and default.

`httpscale operator` fills them from click options (each also `HTTPSCALE_<OPTION>`); tests
build them directly with short intervals.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from httpscale.kube.backoff import BackoffSettings
from httpscale.kube.config import KubeSettings
from httpscale.kube.leader import LeaderElectionSettings
from httpscale.kube.watch import WatchSettings
from httpscale.operator.events import EventSettings

__all__ = ["AdminSettings", "OperatorSettings", "ScalerRef"]


@dataclass(frozen=True, slots=True)
class ScalerRef:
    """Where KEDA finds httpscale's scaler: the trigger's `scalerAddress`."""

    service: str = "httpscale-scaler"  # the scaler's gRPC Service
    namespace: str = "httpscale"  # its namespace (the operator's own, from the pod)
    port: int = 9091  # its gRPC port
    address: str | None = None  # the whole `host:port`, overriding the three above


@dataclass(frozen=True, slots=True)
class AdminSettings:
    host: str = "0.0.0.0"  # bind address of /healthz, /readyz, /metrics, /status
    port: int = 8081  # 0 picks a free port
    grace: float = 2.0  # seconds open admin connections get at shutdown


@dataclass(frozen=True, slots=True)
class OperatorSettings:
    kube: KubeSettings = field(default_factory=KubeSettings)
    # Reconcile objects in this namespace only; None: every namespace.
    watch_namespace: str | None = None
    scaler: ScalerRef = field(default_factory=ScalerRef)
    leader: LeaderElectionSettings = field(default_factory=LeaderElectionSettings)
    leader_election: bool = True  # False: act as leader at once (one replica, or tests)
    workers: int = 4  # objects reconciled at once
    # Per-object retry delays after a failed reconcile (seconds), reset by a success.
    retry: BackoffSettings = field(
        default_factory=lambda: BackoffSettings(initial=0.5, maximum=300.0)
    )
    watch: WatchSettings = field(default_factory=WatchSettings)
    events: EventSettings = field(default_factory=EventSettings)
    admin: AdminSettings = field(default_factory=AdminSettings)
    # Seconds a reconcile in progress may take to finish at shutdown or on losing the lease.
    stop_grace: float = 5.0

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError(f"workers must be at least 1, got {self.workers}")
        if self.stop_grace < 0:
            raise ValueError(f"stop_grace must not be negative, got {self.stop_grace}")

    @property
    def scaler_address(self) -> str:
        s = self.scaler
        return s.address or f"{s.service}.{s.namespace}:{s.port}"
