"""The interceptor's admin server (aiohttp, its own port): /queue, /wake, health, metrics, status.

`/wake` is how the scaler learns about a cold request without waiting for its next poll: a
long-lived NDJSON stream with one `{"event": "wake", "route": ...}` line per route that gets its
first held request at zero, and a ping line every few seconds so dead peers are noticed.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Mapping

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from httpscale import dataplane
from httpscale.interceptor.api import QueueEntry, StatusProvider
from httpscale.interceptor.proxy import Proxy
from httpscale.routing.spec import RouteMatch

__all__ = ["WAKE_PING_INTERVAL", "InterceptorAdmin", "MountedHandler", "WakeFeed"]

WAKE_PING_INTERVAL = 5.0  # seconds between ping lines on an idle /wake stream
_WAKE_BUFFER = 1024  # wake lines kept per slow subscriber before the oldest are dropped

_GET_ONLY = frozenset({"/queue", "/wake", "/livez", "/readyz", "/metrics", "/status"})

#: Serves every method and sub-path under the prefix it is mounted at
#: (see `InterceptorAdmin.mount`).
MountedHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _match_json(match: RouteMatch) -> dict[str, object]:
    return {
        "hosts": list(match.hosts),
        "pathPrefixes": list(match.path_prefixes),
        "headers": [{"name": h.name, "value": h.value} for h in match.headers],
    }


class WakeFeed:
    """The subscribers of a `/wake` stream: one NDJSON line per wake to each, a ping line when
    idle for WAKE_PING_INTERVAL, the oldest lines dropped for a subscriber too slow to keep
    up. An interceptor's admin publishes its own wakes; the parent of `--workers` its
    workers'."""

    def __init__(self) -> None:
        self._subscribers: set[asyncio.Queue[str | None]] = set()

    def publish(self, route: str) -> None:
        line = json.dumps({"event": "wake", "route": route}) + "\n"
        for sub in self._subscribers:
            if sub.full():
                sub.get_nowait()
            sub.put_nowait(line)

    def close(self) -> None:
        """End every stream (their handlers return)."""
        for sub in self._subscribers:
            sub.put_nowait(None)

    async def stream(self, request: web.Request) -> web.StreamResponse:
        """The `/wake` handler."""
        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson",
                                           "Cache-Control": "no-store"})
        try:
            await resp.prepare(request)
        except ConnectionError:  # the subscriber left before its head went out
            return resp
        sub: asyncio.Queue[str | None] = asyncio.Queue(_WAKE_BUFFER)
        self._subscribers.add(sub)
        try:
            while True:
                try:
                    async with asyncio.timeout(WAKE_PING_INTERVAL):
                        line = await sub.get()
                except TimeoutError:
                    line = '{"event": "ping"}\n'
                if line is None:
                    break
                await resp.write(line.encode())
        except ConnectionError:  # (ConnectionResetError is one)
            pass  # the subscriber left; nothing to clean but our queue
        finally:
            self._subscribers.discard(sub)
        return resp


class InterceptorAdmin:
    def __init__(self, proxy: Proxy, queue: Callable[[], dict[str, QueueEntry]]) -> None:
        self._proxy = proxy
        self._queue = queue
        self._started = time.time()
        self.wake_feed = WakeFeed()
        self.status_providers: dict[str, StatusProvider] = {}
        self._mounts: dict[str, MountedHandler] = {}
        self.app = web.Application()
        self.app.add_routes(
            [
                web.get("/queue", self._get_queue),
                web.get("/wake", self.wake_feed.stream),
                web.get("/livez", self._livez),
                web.get("/readyz", self._readyz),
                web.get("/metrics", self._metrics),
                web.get("/status", self._status),
                # Last: takes only what no route above does (aiohttp matches in order).
                web.route("*", "/{path:.*}", self._mounted),
            ]
        )
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False,
                                     shutdown_timeout=1.0)
        self._site: web.BaseSite | None = None

    async def start(self, host: str, port: int) -> tuple[str, int]:
        await self._runner.setup()
        self._site = web.TCPSite(self._runner, host, port, reuse_address=True)
        await self._site.start()
        # With port 0 the kernel picks; the runner's bound sockets tell which it picked.
        sockname = self._runner.addresses[0]
        return str(sockname[0]), int(sockname[1])

    async def start_unix(self, path: str) -> None:
        """Listen on a Unix socket instead (a worker of `--workers N`: its parent's admin
        reaches it there)."""
        await self._runner.setup()
        self._site = web.UnixSite(self._runner, path)
        await self._site.start()

    async def stop(self) -> None:
        self.wake_feed.close()  # ends every /wake stream so cleanup does not wait on them
        await self._runner.cleanup()

    def mount(self, prefix: str, handler: MountedHandler) -> None:
        """Serve `prefix` and everything under it (`/apps` takes `/apps/x/pin`) with `handler`,
        for whoever embeds the interceptor (local mode's `/apps` and `/history`). aiohttp
        freezes its router when the server starts, so mounts are looked up per request."""
        self._mounts[prefix.rstrip("/")] = handler

    async def _mounted(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        for prefix, handler in self._mounts.items():
            if path == prefix or path.startswith(prefix + "/"):
                return await handler(request)
        if path in _GET_ONLY:  # e.g. POST /status: the catch-all must not turn 405 into 404
            raise web.HTTPMethodNotAllowed(request.method, ["GET", "HEAD"])
        raise web.HTTPNotFound()

    def wake(self, route: str) -> None:
        self.wake_feed.publish(route)

    async def _get_queue(self, request: web.Request) -> web.Response:
        return web.json_response(self._queue())

    async def _livez(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, request: web.Request) -> web.Response:
        if self._proxy.draining:
            return web.Response(status=503, text="draining\n")
        if not self._proxy.registry.loaded:
            return web.Response(status=503, text="routes not loaded yet\n")
        return web.Response(text="ok\n")

    async def _metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self._proxy.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _status(self, request: web.Request) -> web.Response:
        proxy = self._proxy
        routes: dict[str, Mapping[str, object]] = {}
        for key, state in proxy.registry.states.items():
            routes[key] = {
                "concurrency": state.concurrency,
                "held": state.held,
                "requestCount": state.request_count,
                "endpoints": {
                    str(ep): {"inFlight": slot.in_flight, "draining": False}
                    for ep, slot in state.endpoints.items()
                }
                | {
                    str(ep): {"inFlight": slot.in_flight, "draining": True}
                    for ep, slot in state.draining.items()
                },
                "hosts": list(state.spec.match.hosts),
                "pathPrefixes": list(state.spec.match.path_prefixes),
                "matches": [_match_json(m) for m in state.spec.matches],
                "fallbackEndpoints": {
                    str(ep): {"inFlight": slot.in_flight} for ep, slot in state.fallbacks.items()
                },
                "scaled": state.spec.scaled,
                # How the pods are spoken to (a Service port's appProtocol, local mode's URL).
                "upstream": {"scheme": state.spec.upstream_scheme,
                             "serverName": state.spec.upstream_server_name},
            }
            if state.spec.canned is not None:
                canned = state.spec.canned
                routes[key] = {**routes[key], "canned": {
                    "status": canned.status,
                    "mode": "Always" if canned.always else "WhenUnavailable",
                }}
        body: dict[str, object] = {
            "uptimeSeconds": round(time.time() - self._started, 3),
            "draining": proxy.draining,
            "dataplane": {"build": dataplane.active().name, "why": dataplane.active().reason},
            "connections": len(proxy.connections),
            "http2Connections": len(proxy.h2_connections),
            "routes": routes,
            "upstreamPools": {str(ep): pool.stats() for ep, pool in proxy.pools.items()},
            "http2UpstreamPools": (
                proxy.h2_upstreams.stats() if proxy.h2_upstreams is not None else {}
            ),
        }
        for name, provider in self.status_providers.items():
            body[name] = provider()
        return web.json_response(body)
