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
- Pooled keep-alive (http1pool.py) per (endpoint, TLS, server name), at most
  `limits.pool_max_per_endpoint` connections each; a stream over it waits up to
  `timeouts.upstream_connect` for one. Idle connections close after `timeouts.upstream_idle`
  (checked when taken, and by one timer per pool, not one per connection).
- Back to the pool only when both messages were complete and the app allowed keep-alive.
- Request body: Content-Length when the client gave one or the whole body is already here,
  else chunked. Request trailers and response trailers are dropped, interim (1xx) responses
  are not relayed (as before with aiohttp).
- Response reading pauses while the stream's queue toward the client is over
  `limits.write_high_water`; writing stops while this socket's buffer is over its mark.
"""
from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Final, cast

import httptools

from httpscale.interceptor.exchange import FINISHED
from httpscale.routing.spec import Endpoint

if TYPE_CHECKING:
    from httpscale.interceptor.h2.http1pool import Http1Upstreams, Pool
    from httpscale.interceptor.h2.stream import H2Stream

__all__ = ["Http1Conn", "PoolKey", "now"]

PoolKey = tuple[Endpoint, bool, str]
now: Final = time.monotonic
_LAST_CHUNK: Final = b"0\r\n\r\n"


class Http1Conn(asyncio.Protocol):
    """One keep-alive connection to an HTTP/1.1 app; one stream's `up` at a time."""

    def __init__(self, upstreams: Http1Upstreams, pool: Pool) -> None:
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
