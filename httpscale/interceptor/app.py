"""The interceptor as one object: proxy server + admin server, with an ordered shutdown.

Shutdown order (uvicorn's): /readyz turns 503 -> wait `readiness_delay` so load balancers stop
sending -> stop accepting (both listeners: plain and TLS) -> close idle keep-alive connections,
let busy ones finish their current response (up to `drain_timeout`) -> abort the rest -> stop
the admin server.

With `--tls-listen`, a TLS listener (httpscale/interceptor/tls.py) serves beside the plain
one; its certificate reload task is one of `tasks`. A TLS setting or certificate that cannot
be used fails `start()` with a `TlsConfigError` naming it, before anything listens.

A worker of `--workers N` (httpscale/interceptor/workers/) is given `sockets`: listening
sockets the parent made, and a Unix socket path for its admin server. It accepts on them only
once its routes are loaded: until then connections wait in the kernel's accept queue, as a
connection that a worker still starting (or restarting) gets must not meet an empty route table.

Tasks beside the proxy (a route source: `tasks.spawn(source.run(...), "route source")`) are
owned by `tasks`: one dying makes `wait()` raise. They keep running through the drain (an
endpoint may still move while in-flight requests finish) and are cancelled after it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence

from httpscale import dataplane
from httpscale.interceptor.admin import InterceptorAdmin
from httpscale.interceptor.api import QueueEntry, RouteStats, StatusProvider, WakeListener
from httpscale.interceptor.proxy import Proxy
from httpscale.interceptor.settings import InterceptorSettings
from httpscale.interceptor.tls import TlsListener, UpstreamTls
from httpscale.interceptor.workers.worker import BACKLOG, PreboundSockets
from httpscale.routing.spec import Endpoint, RouteSpec
from httpscale.runtime import TaskSupervisor
from httpscale.tracing import FLUSH_GRACE

__all__ = ["Interceptor"]

log = logging.getLogger(__name__)


class Interceptor:
    """Implements `httpscale.interceptor.api.InterceptorControl`."""

    def __init__(
        self, settings: InterceptorSettings | None = None, *,
        sockets: PreboundSockets | None = None,
    ) -> None:
        self.settings = settings or InterceptorSettings()
        self._sockets = sockets
        self._routes_loaded = asyncio.Event()
        self._proxy: Proxy | None = None
        self._admin: InterceptorAdmin | None = None
        self._server: asyncio.Server | None = None
        self._tls: TlsListener | None = None
        self.proxy_address: tuple[str, int] = ("", 0)
        self.tls_address: tuple[str, int] | None = None  # with --tls-listen
        self.admin_address: tuple[str, int] = ("", 0)  # ("", 0) with an admin Unix socket
        self._stopped = asyncio.Event()
        self.tasks = TaskSupervisor(log)

    @property
    def proxy(self) -> Proxy:
        if self._proxy is None:
            raise RuntimeError("Interceptor.start() has not been called")
        return self._proxy

    async def start(self) -> None:
        proxy = self._proxy = Proxy(self.settings)
        upstream_tls = proxy.registry.upstream_tls = UpstreamTls(self.settings.tls)
        if self.settings.tls.upstream_ca_file:
            upstream_tls.check()  # a CA file that cannot be read fails here, not per route
        tls = self._tls = TlsListener(proxy, self.settings) if self.settings.tls.listen else None
        self._admin = InterceptorAdmin(proxy, self.queue)
        proxy.wake_listeners.append(self._admin.wake)
        if self._sockets is not None:
            await self._start_on(self._sockets, tls)
            return
        listen = self.settings.listen
        self.admin_address = await self._admin.start(listen.admin_host, listen.admin_port)
        self._server = await proxy.loop.create_server(
            proxy.protocol_factory, listen.host, listen.port, reuse_address=True, backlog=BACKLOG
        )
        sockname = self._server.sockets[0].getsockname()
        self.proxy_address = (sockname[0], sockname[1])
        if tls is not None:
            self.tls_address = await tls.start()
            self.tasks.spawn(tls.watch(), "TLS certificate reload")
        log.info("proxy on %s:%d, admin on %s:%d, hot path: %s (%s)",
                 *self.proxy_address, *self.admin_address,
                 dataplane.active().name, dataplane.active().reason)

    async def _start_on(self, sockets: PreboundSockets, tls: TlsListener | None) -> None:
        """Serve on the sockets a parent made (see the module's docstring)."""
        assert self._admin is not None
        proxy = self.proxy
        await self._admin.start_unix(sockets.admin_path)
        self._server = await proxy.loop.create_server(
            proxy.protocol_factory, sock=sockets.proxy, backlog=BACKLOG, start_serving=False
        )
        sockname = sockets.proxy.getsockname()
        self.proxy_address = (sockname[0], sockname[1])
        if tls is not None:
            self.tls_address = await tls.start(sock=sockets.tls, start_serving=False)
            self.tasks.spawn(tls.watch(), "TLS certificate reload")
        self.tasks.spawn(self._serve_once_loaded(), "accept once routes are loaded",
                         critical=False)
        log.info("proxy on %s:%d, admin on unix:%s, hot path: %s (%s)",
                 *self.proxy_address, sockets.admin_path,
                 dataplane.active().name, dataplane.active().reason)

    async def _serve_once_loaded(self) -> None:
        await self._routes_loaded.wait()
        if self._server is not None:
            await self._server.start_serving()
        if self._tls is not None:
            await self._tls.start_serving()

    async def wait(self) -> None:
        """Return never; raise if a task of `tasks` dies (the caller then shuts down)."""
        await self.tasks.wait()

    async def shutdown(self, *, force: bool = False) -> None:
        """Stop in order (see the module's docstring); `force`: no readiness delay and no drain,
        in-flight and held requests are cut off at once (local mode's second signal)."""
        proxy = self.proxy
        if proxy.draining:
            await self._stopped.wait()
            return
        proxy.draining = True  # /readyz answers 503 from now on
        self.tasks.begin_shutdown()
        delay = 0.0 if force else self.settings.shutdown.readiness_delay
        if delay > 0:
            # A deliberate grace period, not synchronisation: load balancers and kube-proxy
            # need this long to see /readyz fail and stop sending new connections here.
            await asyncio.sleep(delay)
        if self._server is not None:
            self._server.close()
        if self._tls is not None:
            self._tls.close()
        await proxy.drain(0.0 if force else self.settings.shutdown.drain_timeout)
        await self.tasks.close()
        if proxy.tracer is not None:  # every span has ended: export them (bounded)
            await proxy.tracer.close(0.0 if force else FLUSH_GRACE)
        if self._admin is not None:
            await self._admin.stop()
        self._stopped.set()
        log.info("interceptor stopped")

    # -- InterceptorControl --------------------------------------------------------------------

    def set_routes(self, routes: Sequence[RouteSpec]) -> None:
        self._routes_loaded.set()
        for gone in self.proxy.registry.set_routes(routes):
            for waiter in list(gone.waiters):
                gone.unhold(waiter)
                waiter.reject(503, f"route {gone.key} was removed while the request waited")

    def set_endpoints(self, route_key: str, endpoints: Iterable[Endpoint]) -> None:
        self.proxy.registry.set_endpoints(route_key, endpoints)

    def set_fallback_endpoints(self, route_key: str, endpoints: Iterable[Endpoint]) -> None:
        self.proxy.registry.set_fallback_endpoints(route_key, endpoints)

    def add_wake_listener(self, listener: WakeListener) -> None:
        self.proxy.wake_listeners.append(listener)

    def add_status_provider(self, name: str, provider: StatusProvider) -> None:
        assert self._admin is not None
        self._admin.status_providers[name] = provider

    def queue(self) -> dict[str, QueueEntry]:
        return {
            key: {"Concurrency": s.concurrency, "RequestCount": s.request_count}
            for key, s in self.proxy.registry.states.items()
            if s.spec.scaled  # canned routes (static responses) are not for scaling
        }

    def route_stats(self, route_key: str) -> RouteStats | None:
        s = self.proxy.registry.states.get(route_key)
        if s is None:
            return None
        return {
            "concurrency": s.concurrency,
            "held": s.held,
            "request_count": s.request_count,
            "endpoints": len(s.endpoints),
        }

    def endpoint_in_flight(self, route_key: str, endpoint: Endpoint) -> int:
        s = self.proxy.registry.states.get(route_key)
        return s.in_flight(endpoint) if s is not None else 0

    async def wait_endpoint_idle(self, route_key: str, endpoint: Endpoint) -> None:
        s = self.proxy.registry.states.get(route_key)
        if s is not None:
            await s.wait_idle(endpoint)
