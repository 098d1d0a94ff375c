"""Routing: the route contract (`spec`) and the route table the proxy looks requests up in."""

from httpscale.routing.spec import (
    DEFAULT_MAX_PENDING_REQUESTS,
    DEFAULT_READINESS_TIMEOUT,
    Endpoint,
    EndpointSink,
    HeaderMatch,
    Placeholder,
    RouteMatch,
    RouteSink,
    RouteSource,
    RouteSpec,
)
from httpscale.routing.table import RouteConflict, RouteTable, normalize_host, normalize_path_prefix

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
    "RouteTable",
    "normalize_host",
    "normalize_path_prefix",
]
