"""Where the interceptor replicas are: a pluggable source of admin base URLs.

The collector polls and streams from whatever set the discovery last pushed. Static lists now;
a Kubernetes EndpointSlice watch of the interceptor admin Service plugs in later with the same
interface (push the whole set on every change, never polled).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from typing import Protocol
from urllib.parse import urlsplit

__all__ = ["InterceptorDiscovery", "InterceptorSink", "StaticDiscovery", "normalize_admin_url"]


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
