"""A lean HTTP/1.1 client for HTTP/2 streams whose app speaks HTTP/1.1 (forward.py).

Why not the interceptor's own compiled pools (upstream.py): their `UpstreamConnection` calls
back a typed `Exchange` (mypyc checks the type at runtime), and making that a Protocol would
turn every callback of the HTTP/1.1 hot path into a slow generic call. Why not aiohttp's client
(used before): its per-request machinery (request/response objects, tracing hooks, a task per
body) cost more CPU than the whole rest of an HTTP/2 stream.

One `Http1Conn` (asyncio.Protocol + httptools) carries one stream at a time and is the stream's
`up` object, the same interface an HTTP/2 upstream stream offers relay.py: `send_data` (False:
stop, `upstream_writable` follows), `end`, `send_trailers`, `consumed` (the client took that
much: reading resumes below the low-water mark), `reset`. Rules:
- Pooled keep-alive per (endpoint, TLS, server name), at most `limits.pool_max_per_endpoint`
  connections each; a stream over it waits up to `timeouts.upstream_connect` for one. Idle
  connections close after `timeouts.upstream_idle` (checked when taken, and by one timer per
  pool, not one per connection).
- Back to the pool only when both messages were complete and the app allowed keep-alive.
- Request body: Content-Length when the client gave one or the whole body is already here,
  else chunked. Request trailers and response trailers are dropped, interim (1xx) responses
  are not relayed (as before with aiohttp).
- Response reading pauses while the stream's queue toward the client is over
  `limits.write_high_water`; writing stops while this socket's buffer is over its mark.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Final, cast

import httptools

from httpscale.interceptor.exchange import FINISHED
from httpscale.interceptor.tls import upstream_context
from httpscale.routing.spec import Endpoint

if TYPE_CHECKING:
    from httpscale.interceptor.h2.stream import H2Stream
    from httpscale.interceptor.settings import InterceptorSettings

__all__ = ["Http1Conn", "Http1Upstreams"]

_PoolKey = tuple[Endpoint, bool, str]
_LAST_CHUNK: Final = b"0\r\n\r\n"


class _Pool:
    __slots__ = ("count", "idle", "key", "timer", "waiters")

    def __init__(self, key: _PoolKey) -> None:
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
        self._pools: dict[_PoolKey, _Pool] = {}
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
            if conn.transport is not None and conn.idle_since + self.idle_for > _now():
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
            pool = self._pools[key] = _Pool(key)
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
        self, pool: _Pool, loop: asyncio.AbstractEventLoop, factory: Any
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
        conn.idle_since = _now()
        pool.idle.append(conn)
        if pool.timer is None and self._loop is not None:
            pool.timer = self._loop.call_later(self.idle_for, self._sweep, pool)

    def _sweep(self, pool: _Pool) -> None:
        pool.timer = None
        limit = _now() - self.idle_for
        for conn in [c for c in pool.idle if c.idle_since <= limit]:
            conn.close()
        if pool.idle and self._loop is not None:
            oldest = min(c.idle_since for c in pool.idle)
            pool.timer = self._loop.call_later(
                max(0.0, oldest + self.idle_for - _now()), self._sweep, pool
            )

    def _closed_one(self, pool: _Pool) -> None:
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


_now: Final = time.monotonic


class Http1Conn(asyncio.Protocol):
    """One keep-alive connection to an HTTP/1.1 app; one stream's `up` at a time."""

    def __init__(self, upstreams: Http1Upstreams, pool: _Pool) -> None:
        self.upstreams = upstreams
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.idle_since = 0.0
        self.reused = False
        self.stream: H2Stream | None = None
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []  # of the read being parsed
        self._head_size = 0
        self._status = 0
        self._in_head = True
        self._eof_body = False  # a body that ends when the connection does
        self._keep_alive = False  # as the response head said
        self._chunked = False
        self._request_ended = False
        self._response_ended = False
        self._read_paused = False
        self._write_paused = False
        self._placed = False

    def give_place(self) -> None:
        """This connection no longer counts in its pool's limit (once)."""
        if not self._placed:
            self._placed = True
            self.upstreams._closed_one(self.pool)

    # -- the stream's side ----------------------------------------------------------------

    def start(self, stream: H2Stream, head: bytes, *, chunked: bool, ended: bool) -> None:
        """Send the request head; the body follows through send_data / end."""
        assert self.transport is not None
        self.stream = stream
        self._headers = []
        self._head_size = 0
        self._status = 0
        self._in_head = True
        self._eof_body = False
        self._keep_alive = False
        self._chunked = chunked
        self._body.clear()
        self._request_ended = ended
        self._response_ended = False
        self.transport.write(head)

    def send_data(self, data: bytes, *, end_stream: bool = False) -> bool:
        transport = self.transport
        if transport is not None and not self._request_ended:
            if self._chunked:
                transport.writelines((b"%x\r\n" % len(data), data, b"\r\n"))
            else:
                transport.write(data)
        if end_stream:
            self.end()
        return not self._write_paused

    def end(self) -> None:
        if self._request_ended:
            return
        self._request_ended = True
        if self._chunked and self.transport is not None:
            self.transport.write(_LAST_CHUNK)
        if self._response_ended:
            self._release()

    def send_trailers(self, trailers: list[tuple[bytes, bytes]]) -> None:
        self.end()  # an HTTP/1.1 app gets no request trailers (as with aiohttp before)

    def consumed(self, n: int) -> None:
        stream = self.stream
        if self._read_paused and (stream is None or stream.out_size <= stream.low_water):
            self._read_paused = False
            if self.transport is not None:
                self.transport.resume_reading()

    def reset(self) -> None:
        """The stream gave up on this exchange: the connection cannot carry another."""
        if self.stream is not None:
            self.stream = None
            self.abort()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    # -- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        limits = self.upstreams.settings.limits
        transport.set_write_buffer_limits(limits.write_high_water, limits.write_low_water)

    def data_received(self, data: bytes) -> None:
        if self.stream is None:
            self.abort()  # bytes between exchanges: the app broke the protocol
            return
        try:
            self.parser.feed_data(data)
            if self._body:
                self._pass_body()
        except httptools.HttpParserUpgrade:
            self._fail("upstream switched protocols, which HTTP/2 cannot carry")
        except httptools.HttpParserError as exc:
            self._fail(f"upstream sent a malformed response ({exc})")

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        pool = self.pool
        if self in pool.idle:
            pool.idle.remove(self)
        self.give_place()
        stream, self.stream = self.stream, None
        if stream is None or self._response_ended:
            return
        if self._eof_body and not self._in_head:
            self._response_ended = True
            stream.task = None
            stream.response_end(None)
            return
        self._body.clear()
        if stream.phase == FINISHED:
            return
        if self._in_head:
            stream.upstream_failed(
                "reset", "upstream closed the connection before a complete response"
            )
        else:
            stream.upstream_failed("reset", "upstream closed the connection mid-response")

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        stream = self.stream
        if stream is not None and not self._request_ended:
            stream.upstream_writable()

    # -- httptools callbacks ----------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._in_head:
            self._head_size += len(name) + len(value) + 4
            if self._head_size > self.upstreams.max_head:
                raise httptools.HttpParserError(
                    f"response head over {self.upstreams.max_head} bytes"
                )
            # llhttp keeps a value's trailing whitespace, which HTTP/2 forbids (RFC 9113
            # §8.2.1) and the server connection no longer strips (server.py's config).
            self._headers.append((name, value.rstrip(b" \t")))
        # else: a trailer field of a chunked body, dropped

    def on_headers_complete(self) -> None:
        stream = self.stream
        if stream is None:
            return
        status = self._status = self.parser.get_status_code()
        if status < 200:
            self._headers = []  # interim: not relayed; the final head follows
            self._head_size = 0
            return
        self._in_head = False
        headers = self._headers
        self._keep_alive = self.parser.should_keep_alive()
        if not self._keep_alive:
            # Without a length or chunking, the body runs to the connection's end.
            self._eof_body = not any(
                n.lower() in (b"content-length", b"transfer-encoding") for n, _ in headers
            )
        stream.response_head(status, headers, end_stream=False)
        if stream.head_only:
            # llhttp cannot be told the request was HEAD: the announced body is not awaited.
            self.parser = httptools.HttpResponseParser(self)
            self.on_message_complete()

    def on_body(self, body: bytes) -> None:
        # Passed on once this read is parsed: a response whose end is in the same read then
        # leaves as one DATA frame with END_STREAM (on_message_complete).
        if self.stream is not None:
            self._body.append(body)

    def _pass_body(self) -> None:
        body = self._body
        data = body[0] if len(body) == 1 else b"".join(body)
        body.clear()
        stream = self.stream
        if stream is None:
            return
        stream.response_data(data)
        if stream.out_size > stream.high_water and not self._read_paused:
            self._read_paused = True
            if self.transport is not None:
                self.transport.pause_reading()

    def on_message_complete(self) -> None:
        stream = self.stream
        if stream is None or self._status < 200:
            self._in_head = True
            return
        self._response_ended = True
        stream.task = None
        body = self._body
        data = b""
        if body:
            data = body[0] if len(body) == 1 else b"".join(body)
            body.clear()
        stream.response_end(None, data)
        if self._request_ended:
            self._release()
        else:
            self.stream = None  # answered before the upload ended: the app may not read it all
            self.close()

    def _release(self) -> None:
        self.stream = None
        if self._eof_body or not self._keep_alive or self.transport is None:
            self.close()
            return
        if self._read_paused:
            self._read_paused = False
            self.transport.resume_reading()
        self.reused = True
        self.upstreams.give_back(self)

    def _fail(self, message: str) -> None:
        stream, self.stream = self.stream, None
        self.abort()
        if stream is not None and stream.phase != FINISHED:
            stream.upstream_failed("reset", message)
