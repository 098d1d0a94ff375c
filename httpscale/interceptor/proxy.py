"""What every connection and exchange of one interceptor shares: routes, pools, metrics, tasks.

Also owns the drain: stop taking new requests on kept-alive connections, close idle ones, let
busy ones finish their current response, and abort what is left when the timeout passes. An
HTTP/2 connection gets a GOAWAY (its open streams finish) and closes once they have.

HTTP/2 (httpscale.interceptor.h2, pure Python, imported only when HTTP/2 is on):
`h2_protocol_factory` makes the protocol for a connection that speaks it (TLS ALPN "h2", or
the h2c preface on the plain port); `h2_upstreams` (contract C) and `h2_http1` carry its
streams to HTTP/2 and HTTP/1.1 upstreams.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from httpscale.interceptor.api import WakeListener
from httpscale.interceptor.downstream import ClientConnection
from httpscale.interceptor.metrics import InterceptorMetrics
from httpscale.interceptor.registry import RouteRegistry
from httpscale.interceptor.routes import RouteState
from httpscale.interceptor.settings import InterceptorSettings
from httpscale.interceptor.upstream import PoolLimits, Pools
from httpscale.tracing import RequestTracer, request_tracer

__all__ = ["Proxy"]

log = logging.getLogger(__name__)


class Proxy:
    def __init__(self, settings: InterceptorSettings) -> None:
        self.settings = settings
        self.loop = asyncio.get_running_loop()
        # Read on every request: an attribute of this compiled class is a C field load, while
        # each step into the frozen settings dataclasses is a dictionary lookup.
        self.time: Callable[[], float] = self.loop.time
        self.keepalive_idle = settings.timeouts.keepalive_idle
        self.request_head_timeout = settings.timeouts.request_head
        self.body_idle = settings.timeouts.body_idle
        self.response_header_default = settings.timeouts.upstream_response_header
        self.max_request_line = settings.limits.max_request_line
        self.max_header_bytes = settings.limits.max_header_bytes
        self.max_headers = settings.limits.max_headers
        limits, timeouts = settings.limits, settings.timeouts
        self.pools = Pools(
            PoolLimits(
                max_idle=limits.pool_max_idle_per_endpoint,
                max_total=limits.pool_max_per_endpoint,
                max_connecting=limits.pool_max_connecting,
                idle_timeout=timeouts.upstream_idle,
                connect_timeout=timeouts.upstream_connect,
                write_high_water=limits.write_high_water,
                write_low_water=limits.write_low_water,
                max_head=limits.max_response_head,
            )
        )
        self.connections: set[ClientConnection] = set()
        # HTTP/2 client connections (h2.server.H2ServerConnection): idle, close, abort and
        # start_drain; kept apart so that the HTTP/1.1 set stays typed for the compiled path.
        self.h2_connections: set[Any] = set()
        self.metrics = InterceptorMetrics(
            lambda: list(self.registry.states.values()),
            lambda: len(self.connections) + len(self.h2_connections),
        )
        self.registry = RouteRegistry(self._wake, self.pools, self.metrics.route_stats)
        self.h2_protocol_factory: Callable[[], asyncio.Protocol] | None = None
        self.h2_upstreams: Any = None
        self.h2_http1: Any = None
        if settings.http2.enabled:
            self._start_http2()
        self.draining = False
        self.tracer: RequestTracer | None = request_tracer()  # None: off (OTEL_*, tracing.py)
        self.wake_listeners: list[WakeListener] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._all_closed = asyncio.Event()

    def _start_http2(self) -> None:
        # Imported here, not at the top: the h2 package (and the h2 library) loads only when
        # HTTP/2 is on, and the compiled hot path never imports it.
        from httpscale.interceptor.h2.forward import Http1Upstreams
        from httpscale.interceptor.h2.server import H2ServerConnection, check_settings
        from httpscale.interceptor.h2.upstream import H2Upstreams

        check_settings(self.settings.http2)
        self.h2_protocol_factory = functools.partial(H2ServerConnection, self)
        self.h2_upstreams = upstreams = H2Upstreams(self.settings)
        self.pools.retire_listeners.append(upstreams.retire)
        self.h2_http1 = Http1Upstreams(self.settings)

    def protocol_factory(self) -> ClientConnection:
        return ClientConnection(self)

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        """Start an owned task: tracked until done, cancelled at shutdown, failures logged."""
        task = self.loop.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("task %s failed", task.get_name(), exc_info=task.exception())

    def response_header_timeout(self, route: RouteState | None) -> float:
        if route is not None:
            timeout = route.response_header_timeout
            if timeout is not None:
                return timeout
        return self.response_header_default

    def _wake(self, key: str) -> None:
        for listener in self.wake_listeners:
            try:
                listener(key)
            except Exception:  # a broken listener must not fail the request that woke it
                log.exception("wake listener failed for %s", key)

    def connection_closed(self, conn: object) -> None:
        if self.draining and not self.connections and not self.h2_connections:
            self._all_closed.set()

    async def drain(self, grace: float) -> None:
        """Finish in-flight responses (up to `grace` seconds), then close everything."""
        self.draining = True
        for conn in list(self.connections):
            if conn.idle:
                conn.close()
        for h2conn in list(self.h2_connections):
            h2conn.start_drain()
        if self.connections or self.h2_connections:
            try:
                async with asyncio.timeout(grace):
                    await self._all_closed.wait()
            except TimeoutError:
                log.warning(
                    "drain timeout: aborting %d connections",
                    len(self.connections) + len(self.h2_connections),
                )
        for conn in list(self.connections):
            conn.abort()
        for h2conn in list(self.h2_connections):
            h2conn.abort()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self.pools.close()
        if self.h2_http1 is not None:
            await self.h2_http1.close()
        if self.h2_upstreams is not None:
            await self.h2_upstreams.close()
