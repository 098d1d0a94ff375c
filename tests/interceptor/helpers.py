"""Small helpers shared by the interceptor tests."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import time
from collections.abc import Callable
from typing import Any

from httpscale.interceptor.settings import (
    InterceptorSettings,
    InterceptorShutdown,
    Limits,
    Listen,
    Timeouts,
)
from httpscale.routing.spec import Endpoint, RouteMatch, RouteSpec

from .client import READ_TIMEOUT, Response, get

__all__ = [
    "APP_HOST",
    "APP_KEY",
    "FAST_SHUTDOWN",
    "FAST_TIMEOUTS",
    "admin_get",
    "admin_json",
    "app_route",
    "eventually",
    "queue_entry",
    "rss_bytes",
    "settings",
    "wait_refused",
]

_PAGE = os.sysconf("SC_PAGE_SIZE")

#: Short enough for fast tests, long enough not to fire by accident on a loaded 2-core box.
FAST_TIMEOUTS = Timeouts(
    request_head=3.0,
    keepalive_idle=5.0,
    body_idle=5.0,
    upstream_connect=2.0,
    upstream_response_header=5.0,
    upstream_idle=5.0,
)
FAST_SHUTDOWN = InterceptorShutdown(readiness_delay=0.0, drain_timeout=3.0)

APP_KEY = "default/app"
APP_HOST = "app.test"


def app_route(
    *endpoints: Endpoint,
    key: str = APP_KEY,
    hosts: tuple[str, ...] = (APP_HOST,),
    prefixes: tuple[str, ...] = (),
    dynamic: bool = False,
    **kw: Any,
) -> RouteSpec:
    """A route for `hosts`; static endpoints unless `dynamic` (then set_endpoints feeds it)."""
    return RouteSpec(
        key=key,
        match=RouteMatch(hosts=hosts, path_prefixes=prefixes, headers=kw.pop("headers", ())),
        static_endpoints=None if dynamic else tuple(endpoints),
        **kw,
    )


def settings(
    *,
    timeouts: Timeouts | None = None,
    limits: Limits | None = None,
    shutdown: InterceptorShutdown | None = None,
    **timeout_overrides: float,
) -> InterceptorSettings:
    t = dataclasses.replace(timeouts or FAST_TIMEOUTS, **timeout_overrides)
    return InterceptorSettings(
        listen=Listen(host="127.0.0.1", port=0, admin_host="127.0.0.1", admin_port=0),
        timeouts=t,
        limits=limits or Limits(),
        shutdown=shutdown or FAST_SHUTDOWN,
    )


def queue_entry(ic: Any, key: str = APP_KEY) -> dict[str, int]:
    """The `/queue` entry of one route ({"Concurrency": 0, "RequestCount": 0} if absent)."""
    return dict(ic.queue().get(key, {"Concurrency": 0, "RequestCount": 0}))


def rss_bytes() -> int:
    """Resident set size of this process, from /proc/self/statm (no psutil)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE


async def eventually(
    predicate: Callable[[], bool], within: float = 3.0, what: str = "condition"
) -> None:
    """Wait until `predicate()` holds.

    Only for state the interceptor exposes without an event to await (its counters are plain
    numbers read through `queue()`); everything with an event is awaited directly.
    """
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(0.005)


async def admin_get(address: tuple[str, int], path: str) -> Response:
    return await get(address, path, host=f"{address[0]}:{address[1]}")


async def admin_json(address: tuple[str, int], path: str) -> Any:
    resp = await admin_get(address, path)
    assert resp.status == 200, (path, resp.status, resp.body)
    return json.loads(resp.body)


async def wait_refused(address: tuple[str, int], within: float = READ_TIMEOUT) -> None:
    """Wait until a TCP connect to `address` is refused (the listener is closed)."""
    deadline = time.monotonic() + within
    while True:
        try:
            _, writer = await asyncio.open_connection(*address)
        except (ConnectionRefusedError, ConnectionResetError):
            return  # refused, or reset by a listener closing with our SYN in its queue
        writer.close()
        await writer.wait_closed()
        if time.monotonic() > deadline:
            raise AssertionError(f"{address} still accepts connections after {within}s")
        await asyncio.sleep(0.01)
