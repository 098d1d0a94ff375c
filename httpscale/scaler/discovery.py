"""Where the interceptor replicas are: a pluggable source of admin base URLs.

The collector polls and streams from whatever set the discovery last pushed, the whole set on
every change, never polled: `StaticDiscovery` (a list given on the command line) here, the
EndpointSlices of the interceptor admin Service in `cluster.EndpointSliceDiscovery`, which
uses `admin_urls` below to turn slices into URLs.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol
from urllib.parse import urlsplit

__all__ = [
    "InterceptorDiscovery",
    "InterceptorSink",
    "StaticDiscovery",
    "admin_urls",
    "normalize_admin_url",
    "parse_admin_port",
]

# A port name as a container port or Service port spells it (IANA_SVC_NAME).
_PORT_NAME = re.compile(r"^(?=.*[a-z])[a-z0-9]([a-z0-9-]{0,13}[a-z0-9])?$")


class InterceptorSink(Protocol):
    def set_interceptors(self, admin_urls: Sequence[str]) -> None:
        """Replace the set of interceptor replicas (admin base URLs) at once."""


class InterceptorDiscovery(Protocol):
    async def run(self, sink: InterceptorSink) -> None:
        """Push the replica set into `sink` now and on every change, until cancelled."""


def normalize_admin_url(url: str) -> str:
    """`127.0.0.1:9090` or `http://h:9090/` -> `http://h:9090` (one spelling per replica)."""
    text = url.strip()
    if "://" not in text:
        text = "http://" + text
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an interceptor admin URL: {url!r}")
    path = parts.path.rstrip("/")
    return f"{parts.scheme}://{parts.netloc}{path}"


class StaticDiscovery:
    """A fixed list of interceptor admin URLs (`--interceptor`, tests)."""

    def __init__(self, admin_urls: Iterable[str]) -> None:
        self._urls = tuple(dict.fromkeys(normalize_admin_url(u) for u in admin_urls))

    @property
    def urls(self) -> tuple[str, ...]:
        return self._urls

    async def run(self, sink: InterceptorSink) -> None:
        sink.set_interceptors(self._urls)
        # The list never changes: park until cancelled at shutdown.
        await asyncio.get_running_loop().create_future()


def parse_admin_port(text: str | int) -> int | str:
    """`--interceptor-admin-port`: a number (the pods' admin port) or a port name."""
    value = str(text).strip()
    if value.isdigit():
        number = int(value)
        if not 1 <= number <= 65535:
            raise ValueError(f"interceptor admin port {number} is not in 1..65535")
        return number
    if not _PORT_NAME.match(value) or "--" in value:
        raise ValueError(f"interceptor admin port {value!r} is neither a number nor a port name")
    return value


def _slice_port(slice_: Mapping[str, Any], port: int | str) -> int | None:
    if isinstance(port, int):
        return port  # the pods' own port, as KEDA's add-on uses it
    for entry in slice_.get("ports") or ():
        if (entry.get("name") or "") == port and isinstance(entry.get("port"), int):
            return int(entry["port"])
    return None


def admin_urls(slices: Iterable[Mapping[str, Any]], port: int | str) -> tuple[str, ...]:
    """Admin base URLs of the ready endpoints of an interceptor admin Service's slices.

    Ready: condition `ready` true or unset (a terminating interceptor drains and its replica
    leaves the set). `port`: a number is used as is on every pod; a name is looked up in each
    slice's ports (the pod-side number, which the Service's `targetPort` resolved). Sorted,
    without duplicates (an endpoint may sit in two slices while they are rebalanced).
    """
    urls: set[str] = set()
    for s in slices:
        address_type = s.get("addressType")
        if address_type not in ("IPv4", "IPv6"):
            continue
        number = _slice_port(s, port)
        if number is None:
            continue
        for endpoint in s.get("endpoints") or ():
            if (endpoint.get("conditions") or {}).get("ready") is False:
                continue
            addresses = endpoint.get("addresses") or ()
            if not addresses:
                continue
            host = str(addresses[0])
            host = f"[{host}]" if address_type == "IPv6" else host
            urls.add(f"http://{host}:{number}")
    return tuple(sorted(urls))
