"""Upstream side: one asyncio.Protocol per connection to an endpoint, and a keep-alive pool.

A connection carries one exchange at a time (no upstream pipelining, so a slow response never
blocks another). It goes back to its pool only when both messages ended cleanly; anything else
(client gone mid-way, a parse error, a timeout) closes it, so no half-read connection is reused.

Pools follow the endpoints routes use (`Pools.use` / `Pools.unuse`, counted by the route
registry): when no route has an endpoint as a ready, fallback or static endpoint any more, its
pool is retired: its idle connections close at once, a connection handed back closes instead
of idling (or goes to a request waiting for one), and the pool is dropped when its last
connection closed. Nothing under way is cut, and an endpoint that comes back revives its pool.

A pool connects over TLS when `use` gave it an `UpstreamTlsConfig` (its routes' scheme is
https): decided when a connection is opened, never per request. A failed handshake is an
`UpstreamTlsError` (a ConnectionError, so a 502) whose text says why and with which endpoint.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Protocol, cast

import httptools

from httpscale.interceptor.deadline import Deadline
from httpscale.interceptor.flow import CLIENT_FULL, Flow
from httpscale.interceptor.heads import read_response
from httpscale.interceptor.http1 import Headers
from httpscale.interceptor.splice import SplicedResponse, splice_response
from httpscale.interceptor.tls import UpstreamTlsConfig, UpstreamTlsError, describe_handshake_error
from httpscale.routing.spec import Endpoint

if TYPE_CHECKING:
    from httpscale.interceptor.exchange import Exchange

__all__ = ["EndpointPool", "PoolLimits", "PoolWaiter", "Pools", "UpstreamConnection"]

_NO_TRAILERS: Final[Headers] = []  # shared, never modified: most responses have no trailers


def _ignore(data: bytes) -> None:
    """Stands in for a parser's or transport's method before connecting and after closing."""


def _keep_nothing() -> bool:
    return False


class _NoCallbacks:
    pass


#: Put in a closed connection's parser slots (see `UpstreamConnection.connection_lost`).
_SPENT_PARSER: Final = httptools.HttpResponseParser(_NoCallbacks())


class UpstreamConnection(asyncio.Protocol):
    """One connection to an endpoint, and the parsing of its responses.

    Two httptools parsers, each at a message boundary whenever a response starts: the splice
    parser calls back only for the end of the head, body bytes and the end of the message
    (this object has no on_status/on_header); the full parser (`_FullResponse`) also collects
    the reason and every header field. The first read of each response picks one
    (`splice.splice_response`): nearly every response is spliced, forwarded with its header
    lines as received minus the hop-by-hop ones.
    """

    __slots__ = (
        "_at_start",
        "_feed",
        "_full",
        "_full_feed",
        "_head_bytes",
        "_head_count",
        "_head_only",
        "_headers",
        "_in_head",
        "_reason",
        "_splice",
        "_splice_feed",
        "_splice_keep_alive",
        "_spliced",
        "_status",
        "_transport_write",
        "deadline",
        "exchange",
        "flow",
        "idle_since",
        "lost",
        "parser",
        "pool",
        "reused",
        "transport",
        "tunnel",
    )

    def __init__(self, pool: EndpointPool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self._splice = httptools.HttpResponseParser(self)
        self._full = httptools.HttpResponseParser(_FullResponse(self))
        self.parser = self._splice  # the one reading the current response
        # Bound methods for the calls made per response (see ClientConnection.__init__).
        self._splice_feed: Callable[[bytes], None] = self._splice.feed_data
        self._splice_keep_alive: Callable[[], bool] = self._splice.should_keep_alive
        self._full_feed: Callable[[bytes], None] = self._full.feed_data
        self._feed: Callable[[bytes], None] = self._splice_feed  # parser in use
        self._transport_write: Callable[[bytes], object] = _ignore
        self._spliced: SplicedResponse | None = None
        self._at_start = False  # the next read starts a response
        self.exchange: Exchange | None = None
        self.flow = Flow()  # reading paused while the client's write buffer is full
        self.idle_since = 0.0
        self.lost = False
        self.reused = False
        self.tunnel = False
        self._headers: Headers = []
        self._reason = b""
        self._status = 0  # of the response being read, from its head
        self._head_only = False
        self._head_count = 0
        self._head_bytes = 0
        self._in_head = False
        # The exchange's response-head and body-idle deadline; one lazily re-armed timer for
        # the connection's whole life, so a pooled connection makes no timer per request.
        self.deadline = Deadline(pool.loop, self._deadline_passed)

    # -- used by the exchange ----------------------------------------------------------------

    def bind(self, exchange: Exchange, *, head_only: bool) -> None:
        self.exchange = exchange
        self._head_only = head_only
        self._expect_head()
        self._at_start = True

    def _expect_head(self) -> None:
        # A response head comes next. (Reset here, when an exchange is bound or an interim
        # response ended, rather than in an on_message_begin callback on every response.)
        self._headers = []
        self._reason = b""
        self._head_bytes = 0
        self._in_head = True

    def write(self, data: bytes) -> None:
        self._transport_write(data)  # ignored once the connection is lost

    def interim_head(self) -> tuple[Headers, bytes]:
        """The header fields and reason of the response head just read (a 101's, when the
        exchange switches to a tunnel)."""
        return self._headers, self._reason

    def close(self) -> None:
        """Drop the connection for good (also when an exchange ends badly)."""
        self.exchange = None
        self.deadline.stop()
        if self.transport is not None and not self.lost:
            self.transport.abort()

    def _deadline_passed(self) -> None:
        if self.exchange is not None:
            self.exchange.io_timeout()

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport but implement it.
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        self.flow.attach(transport)
        self._transport_write = transport.write
        limits = self.pool.limits
        transport.set_write_buffer_limits(limits.write_high_water, limits.write_low_water)

    def data_received(self, data: bytes) -> None:
        exchange = self.exchange
        if exchange is None:
            # Bytes on an idle connection: the upstream broke protocol; never reuse it.
            self.close()
            return
        if self.tunnel:
            exchange.tunnel_from_upstream(data)
            return
        whole: SplicedResponse | None = None
        if self._at_start:
            # The read that starts a response (connections are not pipelined, so it starts
            # at its first byte): choose the parser for the whole response.
            self._at_start = False
            spliced = self._spliced = splice_response(data)
            if spliced is None:
                self.parser = self._full
                self._feed = self._full_feed
            else:
                self.parser = self._splice
                self._feed = self._splice_feed
                if spliced.body_at >= 0 and not self._head_only:
                    whole = spliced  # checked and all here: no parser at all
        try:
            if whole is None:
                self._feed(data)
            else:
                self._whole_response(whole, data)
            if self._in_head:
                # httptools buffers a header until it ends, so bound what arrives before the
                # head is complete here (on_header alone cannot see an endless value).
                self._head_bytes += len(data)
                if self._head_bytes > self.pool.limits.max_head:
                    raise ValueError("upstream response head too large")
            elif self.exchange is exchange and exchange.response_started and not self.tunnel:
                # A response still under way after this read: it may stall no longer than the
                # body-idle timeout from now. (Once per read, not per parser callback; a
                # response read whole has left the connection already and costs nothing.)
                proxy = exchange.proxy
                self.deadline.set(proxy.time() + proxy.body_idle)
        except ValueError as exc:
            if self.exchange is not None:
                self.exchange.upstream_failed("invalid", f"invalid response from upstream: {exc}")
            self.close()
        except httptools.HttpParserUpgrade as upgrade:
            if self.exchange is not None:
                self.tunnel = True
                self.exchange.upstream_upgraded(data[upgrade.args[0] :])
        except httptools.HttpParserError as exc:
            if self.exchange is not None:
                cause = exc.__context__ if isinstance(exc.__context__, ValueError) else exc
                self.exchange.upstream_failed("invalid", f"invalid response from upstream: {cause}")
            self.close()

    def eof_received(self) -> bool:
        return False  # close our side too: a half-closed upstream is of no use

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.deadline.stop()
        self.pool.forget(self)
        exchange, self.exchange = self.exchange, None
        if exchange is not None:
            exchange.upstream_lost(self)
        # Break the cycles through the transport and the parsers, as ClientConnection does
        # (see its `_release`): freed at once, not by the cyclic GC.
        self.transport = None
        self.flow.lost()
        self._transport_write = _ignore
        self.parser = self._splice = self._full = _SPENT_PARSER
        self._feed = self._splice_feed = self._full_feed = _ignore
        self._splice_keep_alive = _keep_nothing

    def pause_writing(self) -> None:
        self.flow.write_paused = True
        if self.exchange is not None:
            self.exchange.upstream_write_paused()

    def resume_writing(self) -> None:
        self.flow.write_paused = False
        if self.exchange is not None:
            self.exchange.upstream_write_resumed()

    # -- httptools callbacks (both parsers) ----------------------------------------------------

    def on_headers_complete(self) -> None:
        # The splice parser's: the head was cut to shape before the parser ran.
        exchange = self.exchange
        spliced, self._spliced = self._spliced, None
        if exchange is None or spliced is None:
            return
        self._head_count = 0
        self._in_head = False
        status = self._status = spliced.status
        exchange.response_head(status, b"", spliced, self._splice_keep_alive())
        if self._head_only:
            # llhttp cannot be told a response answers HEAD; end the message here and start a
            # fresh parser so the Content-Length it announced is not awaited as a body.
            self.parser = self._splice = httptools.HttpResponseParser(self)
            self._feed = self._splice_feed = self._splice.feed_data
            self._splice_keep_alive = self._splice.should_keep_alive
            exchange.response_complete([])

    def _whole_response(self, spliced: SplicedResponse, data: bytes) -> None:
        """A response the scan checked whole (`splice.splice_response`): llhttp is not run on
        it; its callbacks are made here, as llhttp would make them, with keep-alive as the
        scan read it. (The parser stays between messages, where it was.)"""
        exchange = self.exchange
        self._spliced = None
        if exchange is None:
            return
        self._head_count = 0
        self._in_head = False
        status = self._status = spliced.status
        exchange.response_head(status, b"", spliced, spliced.keep_alive)
        body_at = spliced.body_at
        if body_at < len(data):
            self.on_body(data[body_at:])
        self.on_message_complete()

    def full_headers_complete(self) -> None:
        exchange = self.exchange
        if exchange is None:
            return
        self._head_count = len(self._headers)
        self._in_head = False
        status = self._status = self.parser.get_status_code()
        if status == 101:
            return  # HttpParserUpgrade follows; the exchange switches to a tunnel then
        exchange.response_head(
            status, self._reason, read_response(self._headers),
            self.parser.should_keep_alive(),
        )
        if self._head_only and status >= 200:
            self.parser = self._full = httptools.HttpResponseParser(_FullResponse(self))
            self._feed = self._full_feed = self._full.feed_data
            exchange.response_complete([])

    def on_body(self, body: bytes) -> None:
        if self.exchange is not None:
            self.exchange.response_body(body)

    def on_message_complete(self) -> None:
        exchange = self.exchange
        if exchange is None:
            return
        if self._status < 200:
            self._expect_head()  # an interim response; the final one follows
            return
        # llhttp reports trailer fields through on_header after the head is complete.
        headers = self._headers
        exchange.response_complete(
            headers[self._head_count :] if len(headers) > self._head_count else _NO_TRAILERS
        )


class _FullResponse:
    """The full parser's callbacks: the reason and every header field (trailers too)."""

    __slots__ = ("conn",)

    def __init__(self, conn: UpstreamConnection) -> None:
        self.conn = conn

    def on_status(self, status: bytes) -> None:
        self.conn._reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        self.conn._headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.conn.full_headers_complete()

    def on_body(self, body: bytes) -> None:
        self.conn.on_body(body)

    def on_message_complete(self) -> None:
        self.conn.on_message_complete()


@dataclass(frozen=True, slots=True)
class PoolLimits:
    """Per-endpoint pool limits (counts, seconds, bytes), from InterceptorSettings."""

    max_idle: int  # idle keep-alive connections kept
    max_total: int  # connections open at once
    max_connecting: int  # connection attempts at once
    idle_timeout: float  # an idle pooled connection is closed after this
    connect_timeout: float  # TCP connect
    write_high_water: int  # bytes buffered before the other side pauses
    write_low_water: int  # bytes at which it resumes
    max_head: int  # bytes of a response head


class PoolWaiter(Protocol):
    def pool_ready(self, conn: UpstreamConnection | None) -> None:
        """A connection for you, or None: a connection attempt was reserved for you."""

    def pool_handover(self, conn: UpstreamConnection) -> None:
        """A connection handed back while your own attempt was under way: use it (on the next
        loop turn, through `pool_ready`); the attempt goes on for the pool (`orphan`)."""


class EndpointPool:
    """Keep-alive connections to one endpoint: LIFO idle list, bounded idle and total counts.

    When the endpoint has as many connections (or attempts under way) as allowed, requests wait
    here in FIFO order for a connection handed back or a free attempt, instead of failing:
    10,000 requests released at once after a cold start open a few dozen connections and reuse
    them, rather than 10,000 connects (or 503s past the cap).

    Connections opened stay within the peak of requests in flight: a connection is opened only
    for a request that finds none idle and no attempt to spare. A connection handed back while
    requests wait on attempts of their own goes to the oldest of them (`pool_handover`), and
    its attempt carries on for the pool (an orphan): its connection goes to the next request
    that needs one (which waits for it rather than opening another) or idles. Idle connections
    are reused most recently used first, so under a steady load the same few serve and the
    surplus of a past peak sits at the bottom of the list until `idle_timeout` closes it.
    """

    __slots__ = (
        "_attempting", "_connecting", "_connections", "_idle", "_idle_timeout", "_max_idle",
        "_orphans", "_owner", "_sweep", "_time", "_waiting", "endpoint", "limits", "loop",
        "retired", "tls",
    )

    def __init__(
        self,
        endpoint: Endpoint,
        limits: PoolLimits,
        owner: Pools | None = None,
        *,
        retired: bool = False,
        tls: UpstreamTlsConfig | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.tls = tls  # None: clear text
        self.limits = limits
        self._owner = owner
        # Copied out of the limits (a plain dataclass: a lookup by name from compiled code),
        # read by `give_back` per request. `_max_idle` is 0 while retired.
        self._idle_timeout = limits.idle_timeout
        self.retired = retired  # no route uses the endpoint: dropped once its connections end
        self._max_idle = 0 if retired else limits.max_idle
        self._idle: list[UpstreamConnection] = []
        self._connections: set[UpstreamConnection] = set()
        self._connecting = 0  # reserved attempts, started or about to be
        self._waiting: dict[PoolWaiter, None] = {}  # insertion-ordered: FIFO, O(1) removal
        # Requests whose own connection attempt is under way (FIFO), and attempts under way
        # whose request no longer needs them (handed another connection, or finished).
        self._attempting: dict[PoolWaiter, None] = {}
        self._orphans = 0
        self.loop = asyncio.get_running_loop()
        self._time = self.loop.time  # bound once: called per request by give_back
        # One timer per pool closes connections idle too long (oldest first: the idle list is
        # LIFO, so they sit at its start); no timer per request.
        self._sweep: asyncio.TimerHandle | None = None

    def take(self) -> UpstreamConnection | None:
        while self._idle:
            conn = self._idle.pop()
            if conn.lost:
                continue
            conn.reused = True
            return conn
        return None

    def stats(self) -> dict[str, int]:
        """For /status: connections open, idle, being opened, and requests waiting for one."""
        return {
            "connections": len(self._connections),
            "idle": len(self._idle),
            "connecting": self._connecting,
            "waiting": len(self._waiting),
        }

    def reserve(self) -> bool:
        """Take a connection attempt if the limits allow; then call `connect`."""
        limits = self.limits
        if (
            self._connecting < limits.max_connecting
            and len(self._connections) + self._connecting < limits.max_total
        ):
            self._connecting += 1
            return True
        return False

    def wait(self, waiter: PoolWaiter) -> None:
        self._waiting[waiter] = None

    def need(self, waiter: PoolWaiter) -> bool:
        """`waiter` needs a connection and none is idle. True: an attempt is reserved for it
        (start it, `connect(waiter)`); False: it waits (`pool_ready` follows), for an attempt
        under way that no request needs any more, or because the limits are reached."""
        if self._orphans <= len(self._waiting) and self.reserve():
            self._attempting[waiter] = None
            return True
        self._waiting[waiter] = None
        return False

    def orphan(self, waiter: PoolWaiter) -> None:
        """`waiter` finished while its attempt is under way: the attempt goes on for the pool."""
        if waiter in self._attempting:
            del self._attempting[waiter]
            self._orphans += 1

    def abandon(self, waiter: PoolWaiter) -> None:
        """`waiter`'s attempt was cancelled before it started (`connect` never runs)."""
        self._attempting.pop(waiter, None)

    def _attempt_over(self, owner: PoolWaiter | None) -> bool:
        """An attempt ended; True if `owner` still wants its result (else it was an orphan)."""
        if owner is None:
            return True
        if owner in self._attempting:
            del self._attempting[owner]
            return True
        self._orphans -= 1
        return False

    def unwait(self, waiter: PoolWaiter) -> None:
        self._waiting.pop(waiter, None)
        if self.retired:
            self._drop_if_unused()

    async def connect(self, owner: PoolWaiter | None = None) -> UpstreamConnection | None:
        """Open a connection on a reservation made by `reserve` or `need` (released here) for
        `owner`. None: `owner` took another connection meanwhile (`pool_handover`) or finished;
        the new one went to a waiting request or the idle list, and a failure is nobody's."""
        conn = UpstreamConnection(self)
        tls = self.tls
        try:
            async with asyncio.timeout(self.limits.connect_timeout):
                if tls is None:
                    await self.loop.create_connection(
                        lambda: conn, self.endpoint.host, self.endpoint.port
                    )
                else:
                    await self._connect_tls(conn, tls)
        except Exception:
            owned = self._attempt_over(owner)
            self.unreserve()
            if owned:
                raise
            return None
        except BaseException:  # cancelled
            self._attempt_over(owner)
            self.unreserve()
            raise
        self._connecting -= 1
        self._connections.add(conn)
        owned = self._attempt_over(owner)
        if not owned:
            self.give_back(conn)
        self._admit_waiters()  # an attempt is free again
        return conn if owned else None

    async def _connect_tls(self, conn: UpstreamConnection, tls: UpstreamTlsConfig) -> None:
        endpoint = self.endpoint
        server_name = tls.server_name or endpoint.host  # an IP: checked against IP SANs
        try:
            await self.loop.create_connection(
                lambda: conn, endpoint.host, endpoint.port, ssl=tls.context,
                server_hostname=server_name,
                ssl_handshake_timeout=self.limits.connect_timeout,
            )
        except ssl.SSLError as exc:
            raise UpstreamTlsError(0, describe_handshake_error(exc, server_name)) from exc

    def use_tls(self, tls: UpstreamTlsConfig | None) -> None:
        """Connect with `tls` from now on; idle connections made otherwise are closed."""
        if tls != self.tls:
            self.tls = tls
            idle, self._idle = self._idle, []
            for conn in idle:
                conn.close()

    def unreserve(self) -> None:
        """Give back a reservation made by `reserve` (`connect` does, in the end)."""
        self._connecting -= 1
        self._admit_waiters()
        if self.retired:
            self._drop_if_unused()

    def _admit_waiters(self) -> None:
        # Waiters beyond those the orphan attempts will serve get attempts of their own.
        while len(self._waiting) > self._orphans and self.reserve():
            waiter = next(iter(self._waiting))
            del self._waiting[waiter]
            self._attempting[waiter] = None
            waiter.pool_ready(None)

    def give_back(self, conn: UpstreamConnection) -> None:
        conn.exchange = None
        conn.deadline.clear()
        # Paused for the client it served (its last read filled that client's buffer): that
        # client is no concern of the next exchange, which would otherwise never be answered.
        conn.flow.resume_reading(CLIENT_FULL)
        if conn.lost or conn.tunnel:
            conn.close()
            return
        if self._waiting:
            # Straight to the longest waiter, on the next loop turn: we are inside this
            # connection's parser callback, and the rest of the current read must not reach
            # the new exchange.
            waiter = next(iter(self._waiting))
            del self._waiting[waiter]
            conn.reused = True
            self.loop.call_soon(waiter.pool_ready, conn)
            return
        if self._attempting:
            # To the oldest request still waiting for its own connect: it goes on at once,
            # and its attempt's connection serves the next one (see the class docstring).
            waiter = next(iter(self._attempting))
            del self._attempting[waiter]
            self._orphans += 1
            conn.reused = True
            waiter.pool_handover(conn)
            return
        if len(self._idle) >= self._max_idle:  # (always, while retired)
            conn.close()
            return
        conn.idle_since = self._time()
        self._idle.append(conn)
        if self._sweep is None:
            self._sweep = self.loop.call_at(
                conn.idle_since + self._idle_timeout, self._close_stale
            )

    def _close_stale(self) -> None:
        self._sweep = None
        idle_timeout = self._idle_timeout
        now = self.loop.time()
        idle = self._idle
        stale = 0  # the oldest are first: close them, then cut them off in one move
        while stale < len(idle) and (
            idle[stale].lost or idle[stale].idle_since + idle_timeout <= now
        ):
            idle[stale].close()
            stale += 1
        del idle[:stale]
        if idle:
            self._sweep = self.loop.call_at(idle[0].idle_since + idle_timeout, self._close_stale)

    def forget(self, conn: UpstreamConnection) -> None:
        if conn in self._connections:
            self._connections.discard(conn)
            self._admit_waiters()  # a connection slot freed up
            if self.retired:
                self._drop_if_unused()

    def retire(self) -> None:
        """No route uses this endpoint any more: close the idle connections now, close the
        busy ones when they are handed back, and leave `Pools` once none is left."""
        self.retired = True
        self._max_idle = 0
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
        self._drop_if_unused()

    def revive(self) -> None:
        """A route uses the endpoint again before the retired pool was dropped."""
        self.retired = False
        self._max_idle = self.limits.max_idle

    def _drop_if_unused(self) -> None:
        if (
            not self._connections and not self._connecting and not self._waiting
            and not self._attempting
        ):
            if self._owner is not None:
                self._owner.dropped(self)

    def close(self) -> None:
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        self._waiting.clear()
        self._attempting.clear()
        for conn in list(self._connections):
            conn.close()
        self._idle.clear()


class Pools:
    """One pool per endpoint, shared by every route that points at it.

    `use` and `unuse` count the routes' references to each endpoint (the route registry makes
    them on every change); an endpoint without any has its pool retired (see the module
    docstring), and a pool asked for such an endpoint (a request still under way on an
    endpoint that just left) is made retired.
    """

    def __init__(self, limits: PoolLimits) -> None:
        self._limits = limits
        self._pools: dict[Endpoint, EndpointPool] = {}
        self._refs: dict[Endpoint, int] = {}
        # How to connect to each referenced endpoint over TLS (absent: clear text). Two routes
        # that share an endpoint should agree; if not, the last `use` wins.
        self._tls: dict[Endpoint, UpstreamTlsConfig] = {}
        # Told of every endpoint no route uses any more (the HTTP/2 upstreams retire theirs).
        self.retire_listeners: list[Callable[[Endpoint], None]] = []

    def get(self, endpoint: Endpoint) -> EndpointPool:
        pool = self._pools.get(endpoint)
        if pool is None:
            pool = self._pools[endpoint] = EndpointPool(
                endpoint, self._limits, self, retired=endpoint not in self._refs,
                tls=self._tls.get(endpoint),
            )
        return pool

    def use(self, endpoints: Iterable[Endpoint], tls: UpstreamTlsConfig | None = None) -> None:
        """One more reference to each of `endpoints` (a route that may connect to it), to be
        reached with `tls` (None: clear text)."""
        refs = self._refs
        for ep in endpoints:
            n = refs.get(ep, 0)
            refs[ep] = n + 1
            if tls is None:
                self._tls.pop(ep, None)
            else:
                self._tls[ep] = tls
            pool = self._pools.get(ep)
            if pool is not None:
                pool.use_tls(tls)
                if n == 0 and pool.retired:
                    pool.revive()

    def unuse(self, endpoints: Iterable[Endpoint]) -> None:
        """One reference less to each of `endpoints`; at none, the pool is retired."""
        refs = self._refs
        for ep in endpoints:
            n = refs.get(ep, 0) - 1
            if n > 0:
                refs[ep] = n
                continue
            refs.pop(ep, None)
            self._tls.pop(ep, None)
            pool = self._pools.get(ep)
            if pool is not None and not pool.retired:
                pool.retire()
            for listener in self.retire_listeners:
                listener(ep)

    def dropped(self, pool: EndpointPool) -> None:
        """A retired pool has nothing left: forget it."""
        if self._pools.get(pool.endpoint) is pool:
            del self._pools[pool.endpoint]

    def __len__(self) -> int:
        return len(self._pools)

    def referenced(self) -> set[Endpoint]:
        """The endpoints some route uses now (for /status and tests)."""
        return set(self._refs)

    def items(self) -> list[tuple[Endpoint, EndpointPool]]:
        return list(self._pools.items())

    def close(self) -> None:
        for pool in list(self._pools.values()):
            pool._owner = None  # closing connections must not change the dict under us
            pool.close()
        self._pools.clear()
