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
    "BodyFiles",
    "CannedResponse",
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
class BodyFiles:
    """A response body taken from a ConfigMap without an explicit key: the file is chosen by
    the request path ("/" is `index.html`, "/a/b.css" is `a/b.css`), its Content-Type by its
    extension. `missing` is why there is nothing to serve (the ConfigMap does not exist, or
    lacks the required label): then every request gets 500 with that reason."""

    files: tuple[tuple[str, bytes], ...] = ()  # (ConfigMap key, content)
    missing: str = ""


@dataclass(frozen=True, slots=True)
class Placeholder:
    """Answer sent instead of holding while a route is at zero (`spec.coldStart.placeholder`).

    `for_all` False (HTTPSO's default): only browsers (requests that accept text/html) get the
    placeholder; every other request of the route is held and answered by the app. True (an
    InterceptorRoute's `coldStart.placeholder`, as KEDA serves it): every request gets it.
    For a browser, when `body` is empty, the interceptor sends a page that refreshes itself
    every `refresh_seconds` until the app is up. `files` replaces `body` (bodyFromConfigMap
    without a key); `missing` set means the ConfigMap could not be read: 500.
    """

    status: int = 503
    headers: tuple[tuple[str, str], ...] = ()
    body: str = ""
    refresh_seconds: int = 2
    for_all: bool = False
    files: BodyFiles | None = None


@dataclass(frozen=True, slots=True)
class CannedResponse:
    """A fixed answer for an InterceptorRoute's `staticRoutes[]` entry, sent by the interceptor
    without any upstream. `always` False (`responseMode: WhenUnavailable`): only while the
    route's target has no ready endpoint; otherwise the request is forwarded as usual. Canned
    answers never wake a route and are not counted for scaling."""

    status: int = 200
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    files: BodyFiles | None = None  # replaces `body` (bodyFromConfigMap without a key)
    always: bool = True


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
    # More requests this route takes (an InterceptorRoute's `rules[]` beyond the first: OR).
    extra_matches: tuple[RouteMatch, ...] = ()
    # `coldStart.overflow: Placeholder`: the placeholder is only the answer to requests over
    # `max_pending_requests` (instead of 503); requests under it are held as if there were no
    # placeholder (it is not sent at zero). Needs `placeholder`.
    overflow_placeholder: bool = False
    # Whole-request deadline from arrival to the end of the response (`timeouts.request`);
    # None: none. Past it: 504 if no response has started, else the connection is closed.
    request_timeout: float | None = None
    # An InterceptorRoute's static route: answered by the interceptor (see CannedResponse).
    # Its key is "<namespace>/<name>#static-<i>"; sources give it the target's endpoints.
    canned: CannedResponse | None = None
    # How the interceptor talks to this route's endpoints: "http" (HTTP/1.1, clear text),
    # "https" (HTTP/1.1 over TLS), "h2c" (HTTP/2, clear text, prior knowledge) or "h2" (HTTP/2
    # over TLS). From the Service port's `appProtocol` on a cluster, from the `upstream` URL's
    # scheme in local mode. gRPC requests go over HTTP/2 whatever this says ("http" -> h2c,
    # "https" -> h2).
    upstream_scheme: str = "http"
    # The TLS server name sent (SNI) and verified for "https"/"h2" upstreams; "" means the
    # endpoint's IP address (then the certificate must list it as an IP subjectAltName). Local
    # mode takes the `upstream` URL's host; on a cluster, the Service's DNS name.
    upstream_server_name: str = ""

    @property
    def matches(self) -> tuple[RouteMatch, ...]:
        """Every match of this route: `match`, then `extra_matches`."""
        return (self.match, *self.extra_matches)

    @property
    def scaled(self) -> bool:
        """Whether this route's traffic counts for scaling (in /queue); canned ones do not."""
        return self.canned is None


class RouteSink(Protocol):
    def set_routes(self, routes: Sequence[RouteSpec]) -> None:
        """Replace the whole route table at once."""


class EndpointSink(Protocol):
    def set_endpoints(self, route_key: str, endpoints: Iterable[Endpoint]) -> None:
        """Replace the ready endpoints of one route (an empty set means: at zero)."""

    def set_fallback_endpoints(self, route_key: str, endpoints: Iterable[Endpoint]) -> None:
        """Replace where held requests of one route fail over to (the fallback Service's
        ready endpoints); empty: `RouteSpec.fallback`, if any."""


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
