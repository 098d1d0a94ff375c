"""The URL `httpscale capacity` loads: where to connect, which Host to send, which route it is.

The URL is the route as users reach it (`http://hello.localhost:8080/`): requests go to its
host and port with its host (and port) as the Host header, so the interceptor routes them as
it routes users. `*.localhost` names connect to 127.0.0.1, as browsers and curl do, whatever
the system resolver thinks. `--host-header` overrides the Host sent (and routed on), for a URL
that names the proxy by address (`http://127.0.0.1:8080/ --host-header hello.localhost`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import urlsplit

from httpscale.routing.spec import RouteMatch
from httpscale.routing.table import RouteTable

__all__ = ["TargetError", "TargetURL", "parse_url", "route_for"]

T = TypeVar("T")
_LOOPBACK = "127.0.0.1"


class TargetError(Exception):
    """The URL, or the app or object it should reach, is not usable (exit status 2)."""


@dataclass(frozen=True, slots=True)
class TargetURL:
    url: str  # as given
    scheme: str
    connect_host: str  # where to connect
    port: int
    path: str  # path and query, as sent
    host_header: str

    @property
    def base_url(self) -> str:
        host = f"[{self.connect_host}]" if ":" in self.connect_host else self.connect_host
        return f"{self.scheme}://{host}:{self.port}"

    @property
    def route_path(self) -> str:
        return self.path.partition("?")[0]


def parse_url(url: str, host_header: str | None = None) -> TargetURL:
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https"):
        raise TargetError(f"bad URL {url!r}: it must start with http:// or https://")
    try:
        hostname, port = parts.hostname, parts.port
    except ValueError as exc:  # a port that is not a number, or out of range
        raise TargetError(f"bad URL {url!r}: {exc}") from None
    if not hostname:
        raise TargetError(f"bad URL {url!r}: no host")
    if parts.username is not None or parts.password is not None:
        raise TargetError(f"bad URL {url!r}: credentials in the URL are not supported")
    default_port = 443 if parts.scheme == "https" else 80
    shown = f"[{hostname}]" if ":" in hostname else hostname
    header = host_header or (shown if port is None else f"{shown}:{port}")
    connect = hostname
    if hostname == "localhost" or hostname.endswith(".localhost"):
        connect = _LOOPBACK  # RFC 6761: always loopback, however the resolver is set up
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return TargetURL(url, parts.scheme, connect, port or default_port, path, header)


def route_for(routes: Iterable[tuple[RouteMatch, T]], target: TargetURL) -> T | None:
    """What serves `target` among `routes` (given in serving order), by the interceptor's own
    rules (`RouteTable`); requests carry no header beyond Host, so header matches fail."""
    table: RouteTable[T] = RouteTable.build(routes)
    return table.lookup(target.host_header, target.route_path, {})
