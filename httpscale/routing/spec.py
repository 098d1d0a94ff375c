"""What the interceptor needs to know about one route, independent of where it came from.

A `RouteSpec` is built from an HTTPScaledObject (Kubernetes) or from an app in the local-mode
config file; both go through `httpscale.model` so the meaning of every field is the same.
Sources push whole route lists and endpoint sets into sinks (event-driven, never polled).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Generic, NamedTuple, Protocol, TypeVar

__all__ = [
    "DEFAULT_MAX_PENDING_REQUESTS",
    "DEFAULT_READINESS_TIMEOUT",
    "Endpoint",
    "EndpointSink",
    "HeaderMatch",
    "Placeholder",
    "RouteConflict",
    "RouteMatch",
    "RouteSink",
    "RouteSource",
    "RouteSpec",
]

#: Seconds a request may be held waiting for a ready endpoint when neither
#: `spec.coldStart.readinessTimeout` nor `spec.timeouts.conditionWait` is set.
DEFAULT_READINESS_TIMEOUT = 120.0
#: Held requests per route when `spec.coldStart.maxPendingRequests` is not set.
DEFAULT_MAX_PENDING_REQUESTS = 1000


class Endpoint(NamedTuple):
    """One ready replica: an address the interceptor can connect to."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class HeaderMatch:
    """`name` is lower-cased; `value` None means the header only has to be present."""

    name: str
    value: str | None = None


@dataclass(frozen=True, slots=True)
class RouteMatch:
    """Which requests a route takes. Empty `hosts` is a catch-all; empty `path_prefixes` is `/`.

    Hosts are lower-cased, without port; `*.example.com` is a wildcard for any deeper name.
    """

    hosts: tuple[str, ...] = ()
    path_prefixes: tuple[str, ...] = ()
    headers: tuple[HeaderMatch, ...] = ()


@dataclass(frozen=True, slots=True)
class Placeholder:
    """Answer sent instead of holding while a route is at zero (`spec.coldStart.placeholder`).

    For requests that accept text/html and when `body` is empty, the interceptor sends a page that
    refreshes itself every `refresh_seconds` until the app is up.
    """

    status: int = 503
    headers: tuple[tuple[str, str], ...] = ()
    body: str = ""
    refresh_seconds: int = 2


@dataclass(frozen=True, slots=True)
class RouteSpec:
    """Everything the data plane needs for one route. All durations in seconds."""

    key: str  # "<namespace>/<name>"; local mode uses namespace "local"
    match: RouteMatch = field(default_factory=RouteMatch)
    # Upstream response head timeout (`spec.timeouts.responseHeader`); None: the global default.
    response_header_timeout: float | None = None
    # How long a request may be held for a ready endpoint:
    # `spec.coldStart.readinessTimeout`, else `spec.timeouts.conditionWait`, else the default.
    readiness_timeout: float = DEFAULT_READINESS_TIMEOUT
    # Cap on requests held at once for this route (`spec.coldStart.maxPendingRequests`).
    max_pending_requests: int = DEFAULT_MAX_PENDING_REQUESTS
    # Cap on concurrent requests per endpoint (`spec.coldStart.maxConcurrencyPerEndpoint`);
    # above it requests queue in the interceptor. None: unbounded.
    max_concurrency_per_endpoint: int | None = None
    placeholder: Placeholder | None = None
    # Where to send held requests once `failover_timeout` passes without a ready endpoint
    # (`spec.coldStartTimeoutFailoverRef`, or `spec.coldStart.fallbackUpstream` in local mode).
    fallback: Endpoint | None = None
    failover_timeout: float | None = None
    # Static endpoints (local mode's `run.upstream`); None when a source supplies them live.
    static_endpoints: tuple[Endpoint, ...] | None = None


class RouteSink(Protocol):
    def set_routes(self, routes: Sequence[RouteSpec]) -> None:
        """Replace the whole route table at once."""


class EndpointSink(Protocol):
    def set_endpoints(self, route_key: str, endpoints: Iterable[Endpoint]) -> None:
        """Replace the ready endpoints of one route (an empty set means: at zero)."""


class RouteSource(Protocol):
    async def run(self, sink: RouteSink) -> None:
        """Push the route list into `sink` now and on every change, until cancelled."""


_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class RouteConflict(Generic[_T]):
    """`loser` asked for a slot `winner` (given earlier) already held; `loser` lost that slot.

    (Defined here rather than beside RouteTable: routing/table.py is compiled by mypyc, which
    cannot build a generic dataclass.)
    """

    host: str  # normalized; "*" for the catch-all, "*.example.com" for a wildcard
    path_prefix: str  # normalized; "/" for the root
    headers: tuple[HeaderMatch, ...]
    winner: _T
    loser: _T
