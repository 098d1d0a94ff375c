"""The pools of http1client.py's connections: per (endpoint, TLS, server name), at most
`limits.pool_max_per_endpoint` connections each; a stream over it waits up to
`timeouts.upstream_connect` for one (handed a connection given back, or the place of one that
closed). Idle connections are taken most recently used first and close after
`timeouts.upstream_idle`: checked when taken, and by one timer per pool, not one per
connection."""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from typing import TYPE_CHECKING, Any, cast

from httpscale.interceptor.h2.http1client import Http1Conn, PoolKey, now
from httpscale.interceptor.tls import upstream_context
from httpscale.routing.spec import Endpoint

if TYPE_CHECKING:
    from httpscale.interceptor.settings import InterceptorSettings

__all__ = ["Http1Upstreams", "Pool"]


class Pool:
    __slots__ = ("count", "idle", "key", "timer", "waiters")

    def __init__(self, key: PoolKey) -> None:
        self.key = key
        self.idle: list[Http1Conn] = []  # most recently used last (taken first: still warm)
        self.count = 0  # connections open or opening
        self.waiters: deque[asyncio.Future[Http1Conn | None]] = deque()
        self.timer: asyncio.TimerHandle | None = None


class Http1Upstreams:
    """The HTTP/1.1 connections HTTP/2 streams use, per endpoint (one per proxy)."""

    def __init__(self, settings: InterceptorSettings) -> None:
        self.settings = settings
        self.limit = settings.limits.pool_max_per_endpoint
        self.idle_for = settings.timeouts.upstream_idle
        self.connect_timeout = settings.timeouts.upstream_connect
        self.max_head = settings.limits.max_response_head
        self.high_water = settings.limits.write_high_water
        self.low_water = settings.limits.write_low_water
        self._pools: dict[PoolKey, Pool] = {}
        self._ssl: ssl.SSLContext | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    def take(self, endpoint: Endpoint, tls: bool, server_name: str) -> Http1Conn | None:
        """An idle pooled connection, without waiting; None when there is none."""
        pool = self._pools.get((endpoint, tls, server_name))
        if pool is None:
            return None
        idle = pool.idle
        while idle:
            conn = idle.pop()
            if conn.transport is not None and conn.idle_since + self.idle_for > now():
                return conn
            conn.close()
        return None

    async def acquire(self, endpoint: Endpoint, tls: bool, server_name: str) -> Http1Conn:
        """A pooled connection, else a new one; TimeoutError or OSError when none comes."""
        conn = self.take(endpoint, tls, server_name)
        if conn is not None:
            return conn
        if self._closed:
            raise ConnectionAbortedError("the interceptor is shutting down")
        key = (endpoint, tls, server_name)
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = Pool(key)
        loop = self._loop = asyncio.get_running_loop()
        if pool.count >= self.limit:
            waiter: asyncio.Future[Http1Conn | None] = loop.create_future()
            pool.waiters.append(waiter)
            try:
                async with asyncio.timeout(self.connect_timeout):
                    conn = await waiter
            except BaseException:
                # Handed something while being cancelled: passed on, not lost.
                if waiter.done() and not waiter.cancelled():
                    handed = waiter.result()
                    if handed is not None:
                        self.give_back(handed)
                    else:
                        self._closed_one(pool)
                raise
            finally:
                if not waiter.done():
                    waiter.cancel()
                try:
                    pool.waiters.remove(waiter)
                except ValueError:
                    pass
            if conn is not None:
                return conn
            # A connection closed: its place is ours (counted by whoever woke us).
        else:
            pool.count += 1
        made: list[Http1Conn] = []

        def factory() -> Http1Conn:
            conn = Http1Conn(self, pool)
            made.append(conn)
            return conn

        try:
            return await self._connect(pool, loop, factory)
        except BaseException:
            if made:
                made[0].abort()
                made[0].give_place()
            else:
                self._closed_one(pool)
            raise

    async def _connect(
        self, pool: Pool, loop: asyncio.AbstractEventLoop, factory: Any
    ) -> Http1Conn:
        endpoint, tls, server_name = pool.key
        options: dict[str, Any] = {}
        if tls:
            if self._ssl is None:
                self._ssl = upstream_context(self.settings.tls, alpn=["http/1.1"])
            options["ssl"] = self._ssl
            options["server_hostname"] = server_name or endpoint.host
        async with asyncio.timeout(self.connect_timeout):
            _, protocol = await loop.create_connection(
                factory, endpoint.host, endpoint.port, **options
            )
        return cast(Http1Conn, protocol)

    def give_back(self, conn: Http1Conn) -> None:
        pool = conn.pool
        while pool.waiters:
            waiter = pool.waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        if self._closed:
            conn.close()
            return
        conn.idle_since = now()
        pool.idle.append(conn)
        if pool.timer is None and self._loop is not None:
            pool.timer = self._loop.call_later(self.idle_for, self._sweep, pool)

    def _sweep(self, pool: Pool) -> None:
        pool.timer = None
        limit = now() - self.idle_for
        for conn in [c for c in pool.idle if c.idle_since <= limit]:
            conn.close()
        if pool.idle and self._loop is not None:
            oldest = min(c.idle_since for c in pool.idle)
            pool.timer = self._loop.call_later(
                max(0.0, oldest + self.idle_for - now()), self._sweep, pool
            )

    def _closed_one(self, pool: Pool) -> None:
        """A connection of the pool is gone: a waiter, if any, may open one instead."""
        while pool.waiters:
            waiter = pool.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the place passes to it
                return
        pool.count -= 1
        if not pool.count and pool.timer is not None:
            pool.timer.cancel()
            pool.timer = None

    async def close(self) -> None:
        self._closed = True
        for pool in self._pools.values():
            if pool.timer is not None:
                pool.timer.cancel()
                pool.timer = None
            for conn in list(pool.idle):
                conn.close()
            pool.idle.clear()
        self._pools.clear()
