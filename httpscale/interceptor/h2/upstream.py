"""HTTP/2 to upstreams (h2c with prior knowledge, h2 over TLS by ALPN): shared connections per
(endpoint, tls, server name), streams multiplexed on them (contract C of issue 19).

A stream goes on the most recently used connection with room under the peer's
SETTINGS_MAX_CONCURRENT_STREAMS; a connection is opened only when none has room, one attempt at
a time per key, up to settings.http2.upstream_connections. Callers that find neither room nor a
free attempt wait in FIFO order, for at most the connect timeout. A connection counts as open
once the peer's SETTINGS arrived, so a server that is not HTTP/2 fails the connect, not a stream.

No background task: a connect runs in the caller's task, and the waiters it leaves behind
are woken (with its error, if it failed) when it ends, however it ends.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from typing import Protocol

from httpscale.interceptor.h2.upconn import H2UpConnection
from httpscale.interceptor.h2.upstream_stream import H2Headers, H2UpstreamRefused, UpstreamStream
from httpscale.interceptor.settings import InterceptorSettings
from httpscale.interceptor.tls import upstream_context
from httpscale.routing.spec import Endpoint

__all__ = ["H2UpstreamRefused", "H2Upstreams", "UpstreamStream", "UpstreamStreamSink"]

_Key = tuple[Endpoint, bool, str]


class UpstreamStreamSink(Protocol):
    """What an upstream stream reports to (implemented by the downstream side's exchange)."""

    def upstream_headers(self, headers: H2Headers, *, end_stream: bool) -> None:
        """Response headers incl. b":status"; interim 1xx too (maybe several)."""

    def upstream_data(self, data: bytes, *, end_stream: bool) -> None:
        """Body bytes; call the stream's `consumed(len(data))` once they are passed on."""

    def upstream_trailers(self, trailers: H2Headers) -> None:
        """Trailer fields; the response ends with them."""

    def upstream_reset(self, code: int, reason: str, *, retryable: bool) -> None:
        """The stream ended without a complete response (retryable: certainly unprocessed)."""

    def upstream_writable(self) -> None:
        """Queued request data drained below the low-water mark: send_data may go on."""


class _Pool:
    """The connections of one key, the attempt under way, and who waits for room."""

    def __init__(self, key: _Key, owner: H2Upstreams) -> None:
        self.key = key
        self.owner = owner
        self.conns: list[H2UpConnection] = []
        self.connecting: H2UpConnection | None = None
        # Each waiter's future gets None (look again) or the error of the attempt it waited for.
        self.waiters: deque[asyncio.Future[Exception | None]] = deque()

    def pick(self) -> H2UpConnection | None:
        best: H2UpConnection | None = None
        for conn in self.conns:
            if conn.has_room() and (best is None or conn.last_used > best.last_used):
                best = conn
        return best

    def wake(self, error: Exception | None = None) -> None:
        waiters, self.waiters = self.waiters, deque()
        for fut in waiters:
            if not fut.done():
                fut.set_result(error)

    # ConnectionOwner
    def stream_slot_freed(self, conn: H2UpConnection) -> None:
        if self.waiters:
            self.wake()

    def connection_gone(self, conn: H2UpConnection) -> None:
        if conn in self.conns:
            self.conns.remove(conn)
        self.wake()
        self.owner._forget_if_unused(self)


class H2Upstreams:
    """Every HTTP/2 upstream connection of one proxy (`proxy.h2_upstreams`)."""

    def __init__(self, settings: InterceptorSettings) -> None:
        self._settings = settings
        self._max_conns = settings.http2.upstream_connections
        self._pools: dict[_Key, _Pool] = {}
        self._context: ssl.SSLContext | None = None  # made on the first h2-over-TLS connect
        self._closed = False

    def open_stream_now(
        self,
        endpoint: Endpoint,
        *,
        tls: bool,
        server_name: str,
        headers: H2Headers,
        end_stream: bool,
        sink: UpstreamStreamSink,
    ) -> UpstreamStream | None:
        """`open_stream` when a connection has room now (no task needed); None otherwise.
        Raises H2UpstreamRefused as `open_stream` does."""
        pool = self._pools.get((endpoint, tls, server_name))
        if pool is None or self._closed:
            return None
        conn = pool.pick()
        return None if conn is None else conn.open(headers, end_stream, sink)

    async def open_stream(
        self,
        endpoint: Endpoint,
        *,
        tls: bool,
        server_name: str,
        headers: H2Headers,
        end_stream: bool,
        sink: UpstreamStreamSink,
    ) -> UpstreamStream:
        """Open a stream and send its HEADERS. Raises OSError when a connection cannot be made,
        TimeoutError when making it takes longer than the connect timeout, H2UpstreamRefused
        when no connection had room within that time (or the request does not fit the peer)."""
        key = (endpoint, tls, server_name)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._settings.timeouts.upstream_connect
        while True:
            if self._closed:
                raise H2UpstreamRefused("HTTP/2 upstream connections are shut down")
            pool = self._pools.get(key)
            if pool is None:
                pool = self._pools[key] = _Pool(key, self)
            conn = pool.pick()
            if conn is not None:
                return conn.open(headers, end_stream, sink)
            if pool.connecting is None and len(pool.conns) < self._max_conns:
                await self._connect(pool)
                continue
            if len(pool.waiters) >= self._settings.limits.pool_max_per_endpoint:
                raise H2UpstreamRefused(
                    f"too many streams waiting for an HTTP/2 connection to {endpoint}"
                )
            fut: asyncio.Future[Exception | None] = loop.create_future()
            pool.waiters.append(fut)
            for_connect = pool.connecting is not None
            try:
                async with asyncio.timeout_at(deadline):
                    error = await fut
            except TimeoutError:
                if fut.done() and not fut.cancelled():
                    error = fut.result()  # woken in the same instant: that outcome wins
                    if error is None:
                        continue
                elif for_connect or not pool.conns:
                    raise TimeoutError(f"HTTP/2 connect to {endpoint} timed out") from None
                else:
                    raise H2UpstreamRefused(
                        f"all {len(pool.conns)} HTTP/2 connection(s) to {endpoint} stayed at "
                        f"the server's stream limit for the connect timeout"
                    ) from None
            finally:
                if fut in pool.waiters:
                    pool.waiters.remove(fut)
            if error is not None:
                raise error

    async def _connect(self, pool: _Pool) -> None:
        endpoint, tls, server_name = pool.key
        settings = self._settings
        conn = H2UpConnection(pool, settings, str(endpoint), tls=tls)
        pool.connecting = conn
        timeout = settings.timeouts.upstream_connect
        context: ssl.SSLContext | None = None
        if tls:
            if self._context is None:
                self._context = upstream_context(settings.tls, alpn=["h2"])
            context = self._context
        try:
            try:
                async with asyncio.timeout(timeout):
                    await asyncio.get_running_loop().create_connection(
                        lambda: conn, endpoint.host, endpoint.port, ssl=context,
                        server_hostname=(server_name or endpoint.host) if tls else None,
                    )
                    await conn.ready.wait()
            except TimeoutError:
                raise TimeoutError(
                    f"HTTP/2 connect to {endpoint} timed out after {timeout:g}s"
                ) from None
            if conn.failure is not None:
                raise conn.failure
        except BaseException as exc:
            conn.abort()
            pool.connecting = None
            # The waiters share the outcome; a cancelled attempt (its caller left) lets one
            # of them try again.
            pool.wake(_copy(exc) if isinstance(exc, Exception) else None)
            self._forget_if_unused(pool)
            raise
        pool.connecting = None
        if self._closed:
            conn.close()
            pool.wake()
            raise H2UpstreamRefused("HTTP/2 upstream connections are shut down")
        pool.conns.append(conn)
        pool.wake()

    def retire(self, endpoint: Endpoint) -> None:
        """No route uses the endpoint any more: its connections take no new stream and close
        once their streams are done. (A later stream to it opens a new connection.)"""
        for key, pool in list(self._pools.items()):
            if key[0] == endpoint:
                for conn in list(pool.conns):
                    conn.drain()

    def stats(self) -> dict[str, dict[str, int]]:
        """For /status and tests: per "ip:port[ tls]", connections, open streams, waiters."""
        out: dict[str, dict[str, int]] = {}
        for (endpoint, tls, _), pool in self._pools.items():
            entry = out.setdefault(
                f"{endpoint}{' tls' if tls else ''}",
                {"connections": 0, "streams": 0, "connecting": 0, "waiting": 0},
            )
            entry["connections"] += len(pool.conns)
            entry["streams"] += sum(len(c.streams) for c in pool.conns)
            entry["connecting"] += pool.connecting is not None
            entry["waiting"] += len(pool.waiters)
        return out

    async def close(self) -> None:
        """At shutdown: GOAWAY and close every connection, cut attempts under way, fail
        waiters; returns once every connection is gone (those whose peer does not read their
        GOAWAY within the connect timeout are aborted)."""
        self._closed = True
        conns: list[H2UpConnection] = []
        for pool in list(self._pools.values()):
            pool.wake(H2UpstreamRefused("HTTP/2 upstream connections are shut down"))
            if pool.connecting is not None:
                pool.connecting.abort()
                conns.append(pool.connecting)
            for conn in list(pool.conns):
                conn.close()
                conns.append(conn)
        waits = [c.closed.wait() for c in conns if c.transport is not None]
        if waits:
            try:
                async with asyncio.timeout(self._settings.timeouts.upstream_connect):
                    await asyncio.gather(*waits)
            except TimeoutError:
                for conn in conns:
                    conn.abort()
                await asyncio.gather(*(c.closed.wait() for c in conns if c.transport is not None))
        self._pools.clear()

    def _forget_if_unused(self, pool: _Pool) -> None:
        if not pool.conns and pool.connecting is None and not pool.waiters:
            if self._pools.get(pool.key) is pool:
                del self._pools[pool.key]


def _copy(exc: Exception) -> Exception:
    """The same failure for another waiter (one exception object raised in several tasks would
    collect their tracebacks into each other)."""
    if isinstance(exc, TimeoutError):
        return TimeoutError(str(exc))
    if isinstance(exc, OSError):
        return OSError(exc.errno, str(exc)) if exc.errno is not None else OSError(str(exc))
    if isinstance(exc, H2UpstreamRefused):
        return H2UpstreamRefused(str(exc))
    return OSError(f"HTTP/2 connect failed: {exc}")
