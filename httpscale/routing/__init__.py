"""Routing: the route contract (`spec`) and the route table the proxy looks requests up in
(`table`). A leaf of the layers (pyproject.toml, [tool.importlinter]): it imports nothing else
of httpscale, and everything that routes builds on it.

The package re-exports `spec` only. `httpscale.routing.table` is imported by name where it is
used: it is part of the proxy's compiled hot path (`httpscale.dataplane.HOT_MODULES`), and
importing any of that decides which build of it runs; a process that only needs the route
contract (the scaler, `httpscale status`) should not pay for that decision.
"""

from httpscale.routing.spec import (
    DEFAULT_MAX_PENDING_REQUESTS,
    DEFAULT_READINESS_TIMEOUT,
    Endpoint,
    EndpointSink,
    HeaderMatch,
    Placeholder,
    RouteConflict,
    RouteMatch,
    RouteSink,
    RouteSource,
    RouteSpec,
)

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
