"""`spec.scaleTargetRef` and `spec.coldStartTimeoutFailoverRef`: the Kubernetes objects an
HTTPScaledObject points at. Only Kubernetes mode has them; local mode's `run` replaces both.

Both name a Service by `port` or `portName`, exactly one, as the CRD's validation rule demands.
`scaleTargetRef.deployment` is the pre-v0.8 spelling of `name` (with kind Deployment), and some
early objects carry `targetPendingRequests` here instead of at spec level; both still parse.
"""

from __future__ import annotations

from dataclasses import dataclass

from httpscale.model.fields import INT32_MAX, Fields

__all__ = [
    "DEFAULT_FAILOVER_TIMEOUT_SECONDS",
    "ColdStartTimeoutFailoverRef",
    "ScaleTargetRef",
    "parse_failover_ref",
    "parse_port",
    "parse_scale_target_ref",
]

DEFAULT_FAILOVER_TIMEOUT_SECONDS = 30


@dataclass(frozen=True, slots=True)
class ScaleTargetRef:
    """`spec.scaleTargetRef`: the workload to scale, and the Service (port or portName) to use."""

    name: str
    service: str
    kind: str = "Deployment"
    api_version: str = "apps/v1"
    port: int | None = None
    port_name: str | None = None


@dataclass(frozen=True, slots=True)
class ColdStartTimeoutFailoverRef:
    """`spec.coldStartTimeoutFailoverRef`: where held requests go after `timeout_seconds`."""

    service: str
    port: int | None = None
    port_name: str | None = None
    timeout_seconds: int = DEFAULT_FAILOVER_TIMEOUT_SECONDS


def parse_port(f: Fields) -> tuple[int | None, str | None]:
    """`port` (1-65535) or `portName` of a Service, exactly one; the other is None."""
    port = f.get_int("port", minimum=1, maximum=65535)
    port_name = f.get_str("portName", nonempty=True)
    # The CRD's own rule: exactly one of the two.
    if (port is None) == (port_name is None):
        raise f.error("port", "set exactly one of port or portName")
    return port, port_name


def parse_scale_target_ref(f: Fields) -> tuple[ScaleTargetRef, int | None]:
    """The ref, and the legacy `targetPendingRequests` found inside it (or None)."""
    f.allow(
        "name",
        "kind",
        "apiVersion",
        "service",
        "port",
        "portName",
        "deployment",
        "targetPendingRequests",
    )
    # Single-field checks first, then the ones across fields, in the API server's order.
    name = f.get_str("name", nonempty=True)
    deployment = f.get_str("deployment", nonempty=True)  # deprecated spelling of a Deployment
    service = f.get_str("service", required=True, nonempty=True)
    assert service is not None
    port, port_name = parse_port(f)
    if deployment is not None:
        if name is not None and name != deployment:
            raise f.error("deployment", f"deprecated; conflicts with name {name!r}")
        name = deployment
    if name is None:
        raise f.error("name", "required (the workload to scale)")
    legacy_target = f.get_int("targetPendingRequests", minimum=1, maximum=INT32_MAX)
    ref = ScaleTargetRef(
        name=name,
        service=service,
        kind=f.get_str("kind", nonempty=True) or "Deployment",
        api_version=f.get_str("apiVersion", nonempty=True) or "apps/v1",
        port=port,
        port_name=port_name,
    )
    f.finish()
    return ref, legacy_target


def parse_failover_ref(f: Fields) -> ColdStartTimeoutFailoverRef:
    f.allow("service", "port", "portName", "timeoutSeconds")
    service = f.get_str("service", required=True, nonempty=True)
    assert service is not None
    port, port_name = parse_port(f)
    timeout = f.get_int("timeoutSeconds", minimum=1, maximum=INT32_MAX)
    f.finish()
    return ColdStartTimeoutFailoverRef(
        service=service,
        port=port,
        port_name=port_name,
        timeout_seconds=timeout if timeout is not None else DEFAULT_FAILOVER_TIMEOUT_SECONDS,
    )
