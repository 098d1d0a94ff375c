"""Client side: one asyncio.Protocol per client connection, parsing requests with httptools.

Pipelined requests are answered in order: only the first exchange of `pipeline` runs; once a
second request head arrives, reading pauses until the first is answered, so at most one read's
worth of a pipelined request is ever buffered. Reading is paused for independent reasons
(pipelining, a full upstream write buffer, a held body; `flow.Flow`) and resumes only when
none is left.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, cast

import httptools

from httpscale.interceptor import http1
from httpscale.interceptor.deadline import Deadline
from httpscale.interceptor.exchange import Exchange
from httpscale.interceptor.flow import CLOSING, ERROR, PIPELINE, Flow
from httpscale.interceptor.heads import read_request
from httpscale.interceptor.http1 import Headers
from httpscale.interceptor.splice import SplicedRequest, splice_request

if TYPE_CHECKING:
    from httpscale.interceptor.proxy import Proxy

__all__ = ["ClientConnection"]



def _ignore(data: bytes) -> None:
    """Stands in for a parser's or transport's method before connecting and after closing."""


def _closed() -> bool:
    return True


class _NoCallbacks:
    pass


#: What llhttp reads of an HTTP/2 connection preface before it stops (see `_h2c`).
_PREFACE_HEAD: Final = b"PRI * HTTP/2.0\r\n\r\n"

#: Put in a closed connection's parser slots (see `ClientConnection._release`).
_SPENT_PARSER: Final = httptools.HttpRequestParser(_NoCallbacks())


def _one_slot_list() -> list[Exchange]:
    """An empty list with room for one item. Nearly always a pipeline holds one exchange at
    most, and such a list never reallocates for it: `[]` would grow to 4 slots on each
    request's append and shrink back to none on its pop (two reallocs per request)."""
    spare: list[object] = [None]
    spare.pop()
    return cast("list[Exchange]", spare)


class _Reject(Exception):
    """Raised inside a parser callback to refuse the request with a status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class ClientConnection(asyncio.Protocol):
    """One client connection, and the parsing of its requests.

    Two httptools parsers, each at a message boundary whenever a request starts: the splice
    parser calls back only for the end of the head, body bytes and the end of the message
    (this object has no on_url/on_header); the full parser (`_FullRequests`) also collects the
    target and every header field. A read that starts a request picks one
    (`splice.splice_request`): a whole request in one read (nearly every GET, most small POSTs)
    is spliced: forwarded with its header lines as received, minus the hop-by-hop ones.
    """

    __slots__ = (
        "_close_when_done",
        "_deadline",
        "_feed",
        "_full",
        "_full_feed",
        "_head_bytes",
        "_head_timed",
        "_headers",
        "_in_head",
        "_last_request",
        "_msg_open",
        "_parsing",
        "_pending_error",
        "_splice",
        "_splice_feed",
        "_spliced",
        "_transport_closing",
        "_transport_write",
        "_upgrading",
        "_url",
        "client_ip",
        "client_ip_bytes",
        "flow",
        "https",
        "parser",
        "pipeline",
        "proxy",
        "transport",
        "tunnel",
    )

    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy
        self.transport: asyncio.Transport | None = None
        # Both parsers are made when first needed (about 540 bytes each): a request read
        # whole, nearly every GET, runs neither, so an idle keep-alive client, or each of
        # 10,000 requests held at zero, usually has none.
        self._splice: httptools.HttpRequestParser | None = None
        self._full: httptools.HttpRequestParser | None = None
        self.parser = _SPENT_PARSER  # the one reading the current request
        # Bound methods kept for the calls made per request: calling one skips the method
        # lookup by name that `obj.method()` costs in compiled code (a type-dictionary probe
        # that often misses the data cache).
        self._splice_feed: Callable[[bytes], None] = _ignore
        self._full_feed: Callable[[bytes], None] = _ignore
        self._feed: Callable[[bytes], None] = self._splice_feed  # parser in use
        self._transport_write: Callable[[bytes], object] = _ignore
        self._transport_closing: Callable[[], bool] = _closed
        self._spliced: SplicedRequest | None = None
        self._msg_open = False  # the full parser is inside a request (maybe a partial method)
        self._last_request = False  # a request was not keep-alive: nothing after it is read
        # Requests read and not yet answered, the running one first. A list, not a deque: an
        # empty deque is 760 bytes (one block) on every idle connection; this is 64.
        self.pipeline: list[Exchange] = _one_slot_list()
        self.client_ip = ""
        self.client_ip_bytes = b""  # for X-Forwarded-For, encoded once per connection
        self.https = False  # came through the TLS listener (X-Forwarded-Proto: https)
        self.tunnel: Exchange | None = None
        self._upgrading: Exchange | None = None  # upgrade asked, upstream has not answered
        self.flow = Flow()  # reading paused, and why; the write buffer over its high-water mark
        self._parsing: Exchange | None = None  # the exchange whose request is being read
        self._url = b""
        self._headers: Headers = []
        self._head_bytes = 0
        # One deadline per connection: the request head's while one is being read, else the
        # keep-alive idle limit; none while an exchange runs (it has its own).
        self._deadline = Deadline(proxy.loop, self._deadline_passed)
        self._in_head = False
        self._head_timed = False  # the request-head deadline runs for the current head
        self._close_when_done = False
        self._pending_error: tuple[int, str] | None = None

    # -- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport but implement it.
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        self.flow.attach(transport)
        self._transport_write = transport.write
        self._transport_closing = transport.is_closing
        peer = transport.get_extra_info("peername")
        self.client_ip = peer[0] if peer else ""
        self.client_ip_bytes = self.client_ip.encode()
        limits = self.proxy.settings.limits
        transport.set_write_buffer_limits(limits.write_high_water, limits.write_low_water)
        self.proxy.connections.add(self)
        self._deadline.set(self.proxy.time() + self.proxy.keepalive_idle)

    def data_received(self, data: bytes) -> None:
        if self.tunnel is not None:
            self.tunnel.tunnel_from_client(data)
            return
        if self._upgrading is not None:
            self._upgrading.tunnel_from_client(data)  # kept until the upstream answers
            return
        if not self._msg_open:
            if self._last_request:
                # Bytes after a request that closes the connection (RFC 9112 §9.6). Each
                # parser refuses them itself, but only if it read that request.
                self.flow.pause_reading(CLOSING)
                return
            # A read that starts a request: choose the parser for it.
            proxy = self.proxy
            spliced = None
            if not proxy.registry.needs_headers:
                spliced = splice_request(
                    data, proxy.max_request_line, proxy.max_header_bytes, proxy.max_headers
                )
            self._spliced = spliced
            if spliced is not None:
                if spliced.whole:
                    self._whole_request(spliced, data)
                    return
                splice = self._splice
                if splice is None:
                    splice = self._splice = httptools.HttpRequestParser(self)
                    self._splice_feed = splice.feed_data
                self.parser = splice
                self._feed = self._splice_feed
            else:
                if self._full is None:
                    self._full = httptools.HttpRequestParser(_FullRequests(self))
                    self._full_feed = self._full.feed_data
                self.parser = self._full
                self._feed = self._full_feed
        try:
            self._feed(data)
            if self._in_head:
                # A head still incomplete after this read: the slow-client deadline starts (a
                # head that arrives whole, nearly every one, never costs a timer move), and
                # as httptools holds a header until it ends, the unfinished head is bounded here.
                if not self._head_timed:
                    self._head_timed = True
                    self._deadline.set(self.proxy.time() + self.proxy.request_head_timeout)
                self._head_bytes += len(data)
                proxy = self.proxy
                if self._head_bytes > proxy.max_request_line + proxy.max_header_bytes:
                    self._refuse(431, "request headers too large")
        except httptools.HttpParserUpgrade as upgrade:
            self._upgrade_started(data[upgrade.args[0] :])
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, _Reject):
                self._refuse(cause.status, cause.message)
            else:
                raise
        except httptools.HttpParserError as exc:
            # llhttp pauses on an HTTP/2 preface: here, off the HTTP/1.1 path, it may be h2c.
            if self._parsing is None and not self.pipeline and self._h2c(data):
                return
            if self._parsing is None and self.pipeline:
                # Bad bytes *after* complete requests: answer those first, then refuse and
                # close. Data after "Connection: close" is ignored, as RFC 9112 §9.6 says.
                self.flow.pause_reading(ERROR)
                # After a request that closes the connection, llhttp refuses whatever
                # follows (HPE_CLOSED_CONNECTION): no error to answer, those bytes are ignored.
                # Known from that request itself, rather than from llhttp's error text.
                closing = self._last_request
                self._pending_error = None if closing else (400, f"malformed request: {exc}")
                self._close_when_done = True
                return
            self._refuse(400, f"malformed request: {exc}")

    def eof_received(self) -> bool:
        # Like nginx, a client's FIN means it gave up: a held or in-flight request is dropped
        # at once (HTTP clients do not half-close to await a response).
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.proxy.connections.discard(self)
        self._cancel_timers()
        pipeline = list(self.pipeline)
        self.pipeline.clear()
        for exchange in pipeline:
            exchange.client_lost()
        if self.tunnel is not None:
            self.tunnel.client_lost()
            self.tunnel = None
        self.proxy.connection_closed(self)
        self._release()

    def _release(self) -> None:
        """Drop what points back at this connection: its transport (which holds this
        protocol), its parsers (which hold its methods as callbacks) and the exchanges it
        knew. A closed connection is then freed by reference counting at once; left to the
        cyclic GC, a burst of closed connections (a cold start's release) made full
        collections that stopped the loop for 50-150 ms."""
        self.transport = None
        self.flow.lost()
        self._transport_write = _ignore
        self._transport_closing = _closed
        self.parser = _SPENT_PARSER
        self._splice = self._full = None
        self._feed = self._splice_feed = self._full_feed = _ignore
        self._parsing = self._upgrading = None

    def pause_writing(self) -> None:
        self.flow.write_paused = True
        if self.tunnel is not None:
            self.tunnel.client_write_paused()
        elif self.pipeline:
            self.pipeline[0].client_write_paused()

    def resume_writing(self) -> None:
        self.flow.write_paused = False
        if self.tunnel is not None:
            self.tunnel.client_write_resumed()
        elif self.pipeline:
            self.pipeline[0].client_write_resumed()

    # -- httptools callbacks (both parsers) ----------------------------------------------------

    def on_headers_complete(self) -> None:
        # The splice parser's: the head was read before the parser ran.
        spliced, self._spliced = self._spliced, None
        if spliced is None:
            return
        self._deadline.clear()  # the exchange's own deadlines watch it from here
        # (A whole request's method is one the scan knows; else the splice parser read it.)
        method = spliced.method or self.parser.get_method()
        keep_alive = spliced.keep_alive
        self._last_request = not keep_alive
        self._begin(
            Exchange(
                self.proxy,
                self,
                method,
                spliced.target(method),
                spliced,
                version_11=True,
                keep_alive=keep_alive and not self.proxy.draining,
            )
        )

    def _whole_request(self, spliced: SplicedRequest, data: bytes) -> None:
        """A request the scan checked whole (`splice.splice_request`): llhttp is not run on
        it; its callbacks are made here, as llhttp would make them. (Its parser is left
        between messages, where it was.)"""
        self.on_headers_complete()
        length = spliced.content_length
        if length:
            self.on_body(data[len(data) - length :])
        self.on_message_complete()

    def on_message_complete(self) -> None:
        exchange, self._parsing = self._parsing, None
        if exchange is not None:
            exchange.request_complete(exchange.request_trailers)

    def full_url(self, url: bytes) -> None:
        if not self._in_head:
            # The first callback of a request with a target: its head starts here.
            self._url = url
            self._headers = []
            self._head_bytes = 0
            self._in_head = True
            self._head_timed = False
        else:
            self._url += url  # the target arrived in more than one read
        if len(self._url) > self.proxy.max_request_line:
            raise _Reject(414, "request line too long")

    def full_header(self, name: bytes, value: bytes) -> None:
        if self._parsing is not None:  # after the head: a trailer field of a chunked body
            self._parsing.request_trailers = [*self._parsing.request_trailers, (name, value)]
            return
        self._headers.append((name, value))
        self._head_bytes += len(name) + len(value) + 4
        proxy = self.proxy
        if self._head_bytes > proxy.max_header_bytes or len(self._headers) > proxy.max_headers:
            raise _Reject(431, "request headers too large")

    def full_headers_complete(self) -> None:
        self._in_head = False
        self._deadline.clear()  # the exchange's own deadlines watch it from here
        parser = self.parser
        headers = self._headers
        method = parser.get_method()
        if method == b"CONNECT":
            raise _Reject(405, "CONNECT is not supported")
        try:
            info = read_request(headers)
        except http1.FramingError as exc:
            raise _Reject(400, str(exc)) from None
        keep_alive = parser.should_keep_alive()
        self._last_request = not keep_alive
        # httptools formats the version as a string (a measurable cost per request); an
        # HTTP/1.0 request is keep-alive only with a Connection header, so without one a
        # keep-alive request is HTTP/1.1 and the version need not be asked.
        version_11 = (keep_alive and not info.connection) or parser.get_http_version() == "1.1"
        if version_11 and not info.has_host:
            # RFC 9112 §3.2: a server MUST answer 400 to an HTTP/1.1 request without Host.
            # HTTP/1.0 (RFC 1945) has no Host requirement: such a request is routed with an
            # empty host, so only a catch-all route can take it, as before.
            raise _Reject(400, "missing Host header (HTTP/1.1 requires one, RFC 9112 section 3.2)")
        self._begin(
            Exchange(
                self.proxy,
                self,
                method,
                self._url,
                info,
                version_11=version_11,
                keep_alive=keep_alive and not self.proxy.draining,
            )
        )

    def on_body(self, body: bytes) -> None:
        if self._parsing is not None:
            self._parsing.request_body(body)

    def _begin(self, exchange: Exchange) -> None:
        self._parsing = exchange
        pipeline = self.pipeline
        pipeline.append(exchange)
        if len(pipeline) == 1:
            exchange.start()
        else:
            self.flow.pause_reading(PIPELINE)

    # -- used by exchanges -------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        # Before connecting and after closing, `_transport_closing` is `_closed`.
        if not self._transport_closing():
            self._transport_write(data)

    def exchange_done(self, exchange: Exchange, *, keep_alive: bool) -> None:
        pipeline = self.pipeline
        if not pipeline or pipeline[0] is not exchange:
            return
        pipeline.pop(0)
        leftover = b""
        if self._upgrading is exchange:
            # Upgrade declined: HTTP/1.1 goes on; what the client sent meanwhile is parsed now.
            self._upgrading = None
            self._full = None  # a fresh one when next needed
            self._full_feed = _ignore
            self._msg_open = False
            leftover = exchange.take_leftover()
        if self._close_when_done and not self.pipeline:
            if self._pending_error is not None and keep_alive:
                status, message = self._pending_error
                self.write(http1.error_response(status, message, close=True))
            self.close()
            return
        if not keep_alive or (self.proxy.draining and not self.pipeline):
            self.close()
            return
        self.flow.resume_reading(PIPELINE)
        if self.pipeline:
            self.pipeline[0].start()
        elif self._parsing is None:
            self._deadline.set(
                self.proxy.time() + self.proxy.keepalive_idle
            )
        if leftover:
            self.data_received(leftover)

    def start_tunnel(self, exchange: Exchange) -> None:
        self._upgrading = None
        self.tunnel = exchange
        self.pipeline.clear()  # the tunnel is counted by its exchange until either side closes
        self.flow.resume_reading(PIPELINE)

    def close(self) -> None:
        """Close after what is buffered has been written."""
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    @property
    def idle(self) -> bool:
        return not self.pipeline and self.tunnel is None and self._parsing is None

    # -- internals ---------------------------------------------------------------------------

    def _upgrade_started(self, rest: bytes) -> None:
        # httptools stops at the end of an Upgrade (or CONNECT) request head; what follows is
        # the new protocol's bytes, kept until the upstream answers 101.
        exchange = self.pipeline[-1] if self.pipeline else None
        if exchange is None or exchange.upgrade is None:
            self._refuse(400, "unexpected protocol upgrade")
            return
        self._upgrading = exchange
        if rest:
            exchange.tunnel_from_client(rest)

    def _h2c(self, data: bytes) -> bool:
        """HTTP/2 with prior knowledge (RFC 9113 §3.3): the connection is handed to the
        HTTP/2 protocol with the preface, and this object steps out. False: not a preface,
        or h2c is off (the parser's 400 then stands, as before)."""
        proxy = self.proxy
        factory = proxy.h2_protocol_factory
        transport = self.transport
        if factory is None or not proxy.settings.http2.h2c or transport is None:
            return False
        # llhttp stopped right after the preface's first 18 bytes, its request head; the
        # rest ("SM\r\n\r\n" and the first frames) follows in this read or the next.
        if data.startswith(_PREFACE_HEAD):
            rest = data[len(_PREFACE_HEAD) :]
        else:
            at = data.find(b"SM\r\n\r\n")
            if at < 0:
                return False
            rest = data[at:]
        self.proxy.connections.discard(self)
        self._cancel_timers()
        self._release()
        protocol = factory()
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        protocol.data_received(_PREFACE_HEAD + rest)
        return True

    def _refuse(self, status: int, message: str) -> None:
        self._cancel_timers()
        if self.transport is None or self.transport.is_closing():
            return
        if not self.pipeline:
            self.transport.write(http1.error_response(status, message, close=True))
            self.proxy.metrics.request(None, b"-", status, 0.0)
        elif len(self.pipeline) == 1 and not self.pipeline[0].response_started:
            # The running request's body was bad: it gets the 400 itself (and the close).
            self.pipeline[0].reject(status, message)
            return
        # Otherwise answering now would break response order: just close.
        self.transport.close()

    def _deadline_passed(self) -> None:
        if self._in_head:
            self._refuse(408, "request head not received in time")
        elif self.idle:
            self.close()

    def _cancel_timers(self) -> None:
        self._deadline.stop()


class _FullRequests:
    """The full parser's callbacks: target, every header field, body and trailers."""

    __slots__ = ("conn",)

    def __init__(self, conn: ClientConnection) -> None:
        self.conn = conn

    def on_message_begin(self) -> None:
        self.conn._msg_open = True

    def on_url(self, url: bytes) -> None:
        self.conn.full_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.conn.full_header(name, value)

    def on_headers_complete(self) -> None:
        self.conn.full_headers_complete()

    def on_body(self, body: bytes) -> None:
        self.conn.on_body(body)

    def on_message_complete(self) -> None:
        self.conn._msg_open = False
        self.conn.on_message_complete()
