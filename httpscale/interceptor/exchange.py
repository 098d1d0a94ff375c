"""One request/response passing through the proxy, from the client's head to the last byte.

The life of an exchange is its `phase` (the moves `_MOVES` allows; any other raises PhaseError):
    start -> (held) -> connecting -> streaming -> finished
- start: the head is read; `start` finds the route, counts the request and takes an endpoint
  slot (connecting), holds (held), or answers itself (finished: 404, 503, a placeholder).
- held: queued on its route for a ready endpoint; connecting once one is assigned.
- connecting: it has a slot (or waits out a backoff to pick again) and waits for a pooled or
  new upstream connection; a failed connect may go back to held or on to another endpoint.
- streaming: bound to an upstream connection; the request and the response flow. A pooled
  connection the upstream closed without answering may send it back to connecting (retry).
- finished: `_finish` ran; nothing more happens to it.
Beside the phase, flags for what is independent of it: how far each message got
(`request_done`, `response_started`, `response_done`), and how the response is framed.

- Bodies stream both ways without being gathered; a side stops reading while the other side's
  write buffer is over its high-water mark (each connection's `flow.Flow`, coupled here).
- `_finish` runs exactly once on every path (success, error answer, client gone, timeout): it
  gives back the endpoint slot, the route's concurrency, and records metrics. Counters that
  drift would make the autoscaler lie, so every exit goes through it.
- Errors the proxy answers itself say why, in one line: 404 no route, 502 upstream failed,
  503 hold queue full, 504 timed out. After a response has started, a failure can only abort.
- What only some routes have (a canned answer, a whole-request deadline, an HTTP/2 upstream) is
  behind one test of `RouteState.special`, so that a route without them pays nothing more (no
  timer is armed). Likewise at the end: what only some exchanges have (that deadline, a trace
  span, a bridge) is behind one test of `_special` in `_finish`.
- An h2c/h2 upstream: the exchange hands its request to a `Bridge` (h2/bridge.py), which speaks
  HTTP/2 to the endpoint the slot gives and feeds the response back through `response_head`,
  `response_body` and `response_complete`; routing, holding, retries and `_finish` stay here.
- Tracing (`proxy.tracer`, None when off) costs an untraced request one test in `start`; the
  rest is in exchange_spans.py.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final, Protocol

from httpscale.interceptor import exchange_spans, http1
from httpscale.interceptor.flow import CLIENT_FULL, PENDING_BODY, UPSTREAM_FULL
from httpscale.interceptor.heads import RequestInfo, ResponseInfo, read_response
from httpscale.interceptor.http1 import Headers
from httpscale.interceptor.placeholder import (
    canned_response,
    placeholder_response,
    wants_placeholder,
)
from httpscale.interceptor.routes import EndpointSlot, RouteState
from httpscale.interceptor.tls import UpstreamTlsError
from httpscale.interceptor.upstream import EndpointPool, UpstreamConnection
from httpscale.routing.spec import CannedResponse, Endpoint, Placeholder

if TYPE_CHECKING:
    from httpscale.interceptor.downstream import ClientConnection
    from httpscale.interceptor.proxy import Proxy

__all__ = [
    "CONNECTING",
    "FINISHED",
    "HELD",
    "PHASES",
    "START",
    "STREAMING",
    "Bridge",
    "Exchange",
    "PhaseError",
    "next_phase",
]

# The phases (ints, not an Enum: compiled, a Final int is a C constant, an Enum member an
# object compared by a Python call).
START: Final = 0
HELD: Final = 1
CONNECTING: Final = 2
STREAMING: Final = 3
FINISHED: Final = 4
PHASES: Final = ("start", "held", "connecting", "streaming", "finished")
# The moves allowed, as one int: bit `current * 8 + new` is set when a move from `current`
# to `new` is. (One int, not a tuple of them: compiled, indexing a constant tuple by a variable
# boxes the whole tuple first, hundreds of instructions a move; this is a shift and a mask.)
# connecting -> connecting: another endpoint after a failed connect; connecting -> held: the
# endpoint left before the connect; streaming -> connecting: the upstream closed without
# answering and the request goes again.
_MOVES: Final = sum(
    1 << (current * 8 + new)
    for current, new in (
        (START, HELD), (START, CONNECTING), (START, FINISHED),
        (HELD, CONNECTING), (HELD, FINISHED),
        (CONNECTING, HELD), (CONNECTING, CONNECTING), (CONNECTING, STREAMING),
        (CONNECTING, FINISHED),
        (STREAMING, CONNECTING), (STREAMING, FINISHED),
    )
)


class PhaseError(Exception):
    """An exchange was asked to move to a phase its current one does not lead to (a bug in
    the proxy, never the client's doing). (Exception: mypyc compiles no RuntimeError subclass.)"""


def next_phase(current: int, new: int) -> int:
    """`new`, when an exchange in phase `current` may move to it; else PhaseError."""
    if not (_MOVES >> (current * 8 + new)) & 1:
        raise PhaseError(f"an exchange cannot move from {PHASES[current]} to {PHASES[new]}")
    return new


# Bytes of request body kept while no upstream connection is bound yet; past it the client
# is paused, so a held upload costs at most this much memory.
_PENDING_BODY_LIMIT: Final = 64 * 1024
# Bound once: compiled, a Final is a C static, while `time.monotonic` is a module attribute
# lookup on every call (twice per request).
_monotonic: Final = time.monotonic
_TIMER_SLACK: Final = 0.005  # seconds
_NO_FIELDS: Final[Headers] = []  # shared, never modified: routing without header matches
# Requests that may be sent again when an upstream closed without answering (RFC 9110's safe
# methods, as nginx's proxy_next_upstream retries them), at most _MAX_LOSSES times.
_SAFE_METHODS: Final = frozenset((b"GET", b"HEAD", b"OPTIONS"))
_MAX_LOSSES: Final = 3


class Bridge(Protocol):
    """The HTTP/2 leg of an exchange whose route's upstream speaks HTTP/2 (h2/bridge.py): it
    opens the stream and carries both bodies; the exchange keeps the route, the slot and
    `_finish`. (A Protocol: compiled code checks no type for it.)"""

    def connect(self, endpoint: Endpoint) -> None: ...

    def request_body(self, data: bytes) -> bool: ...  # False: no stream yet, keep it

    def request_complete(self) -> None: ...

    def client_write_resumed(self) -> None: ...

    def finished(self) -> None: ...


class Exchange:
    # Class-level defaults: the common path assigns only what differs, which is measurably
    # cheaper per request than initialising forty slots (this object is made per request).
    request_done = False
    request_trailers: Sequence[tuple[bytes, bytes]] = ()  # replaced when trailers arrive
    response_started = False
    response_done = False
    response_chunked_out = False
    response_unframed = False
    phase = START
    cold_start = False
    fallback = False
    status = 0
    held_since = 0.0
    route: RouteState | None = None
    slot: EndpointSlot | None = None
    upstream: UpstreamConnection | None = None
    upstream_keep = False
    _body: list[bytes] | None = None  # request bytes kept until an upstream is bound
    _body_size = 0
    _head_waiting: bytes | None = None  # the request head, to leave with the body (`_bind`)
    _head_out: ResponseInfo | None = None  # the response head, sent with the body
    _hold_timer: asyncio.TimerHandle | None = None
    _request_timer: asyncio.TimerHandle | None = None  # the route's `request_timeout`
    _head_due = False  # waiting for the response head (the deadline is on the connection)
    _connect_task: asyncio.Task[None] | None = None
    _reserved: EndpointPool | None = None  # a connect task's reservation, until it starts
    _pool_wait: EndpointPool | None = None  # waiting in this pool for a connection
    _attempt: EndpointPool | None = None  # own connect attempt under way in this pool
    _deadline = 0.0
    _tried: frozenset[Endpoint] = frozenset()
    _retried = False
    _losses = 0  # upstreams that closed without answering (see upstream_lost)
    _special = False  # a request timer, a span or a bridge: `_finish_special` has work

    def __init__(
        self,
        proxy: Proxy,
        client: ClientConnection,
        method: bytes,
        target: bytes,
        info: RequestInfo,
        *,
        version_11: bool,
        keep_alive: bool,
    ) -> None:
        self.proxy = proxy
        self.client = client
        self.method = method
        self.target = target
        self.info = info
        self.version_11 = version_11
        self.keep_alive = keep_alive
        self.request_chunked = info.chunked
        self.upgrade = info.upgrade
        self.head_only = method == b"HEAD"
        self.has_body = info.chunked or info.content_length > 0
        self.started = 0.0
        # The route's upstream speaks HTTP/2 (set with `_special`). Here, not a class-level
        # default: mypyc leaves a Protocol-typed default undefined (a store either way).
        self._bridge: Bridge | None = None

    # -- start: route, count, pick or hold ---------------------------------------------------

    def start(self) -> None:
        # The proxy's hottest function: the common case (route found, endpoint free, pooled
        # connection idle) is kept to a few calls; holding and errors branch off below.
        self.started = _monotonic()
        target = self.target
        if target[:1] == b"/":  # origin form, as nearly every client sends
            host = self.info.host.decode("latin-1")
            path = target.decode("latin-1")  # the route table ignores a ?query or #fragment
        else:
            host, path = self._absolute_form()
        if self.proxy.tracer is not None:
            exchange_spans.start(self)
        registry = self.proxy.registry
        route = registry.lookup(
            host, path, self.info.fields() if registry.needs_headers else _NO_FIELDS
        )
        if route is None:
            path = path.split("?", 1)[0].split("#", 1)[0]
            self._answer(404, f"no route for host {host!r} and path {path!r}")
            return
        self.route = route
        route.concurrency += 1  # RouteState.admit, inline
        route.request_count += 1
        if route.special and self._start_special(route, path):
            return
        slot = route.try_acquire()
        if slot is not None:
            self._use(slot)
            return
        spec = route.spec
        placeholder = spec.placeholder
        if (
            placeholder is not None
            and route.at_zero
            and not spec.overflow_placeholder
            and wants_placeholder(placeholder, self.info.fields())
        ):
            route.wake()
            self.proxy.metrics.cold_start(route.key)
            self._send_placeholder(placeholder, path)
            return
        if not route.hold(self):
            self.proxy.metrics.hold_overflow(route.key)
            if placeholder is not None and spec.overflow_placeholder:
                self._send_placeholder(placeholder, path)
                return
            self._answer(
                503,
                f"too many requests waiting for {route.key} "
                f"(maxPendingRequests={spec.max_pending_requests})",
                extra=[(b"Retry-After", b"1")],
            )
            return
        self.phase = next_phase(self.phase, HELD)
        self.held_since = self.started
        self.cold_start = route.at_zero
        if self.cold_start:
            self.proxy.metrics.cold_start(route.key)
        wait = spec.readiness_timeout
        failover = spec.failover_timeout
        if failover is not None and (failover < wait or route.has_fallback):
            wait = failover  # (fallback endpoints may still come: checked when it passes)
        self._deadline = self.started + wait
        self._hold_timer = self.proxy.loop.call_later(wait, self._hold_expired)

    def _start_special(self, route: RouteState, path: str) -> bool:
        """A canned answer (True: answered), arm the whole-request deadline, or take the
        HTTP/2 leg toward an h2c/h2 upstream."""
        canned = route.canned
        if canned is not None and (canned.always or route.at_zero):
            # Never held, never wakes anything: the route is answered here.
            self._send_canned(canned, path)
            return True
        timeout = route.request_timeout
        if timeout is not None:
            self._special = True
            self._request_timer = self.proxy.loop.call_later(
                timeout, self._request_expired, timeout
            )
        if route.http2 and self.proxy.h2_upstreams is not None:
            # Imported here: the h2 package (pure Python, the h2 library) loads only when HTTP/2
            # is on, and the compiled hot path imports none of it for other routes.
            from httpscale.interceptor.h2.bridge import bridge_for

            return bridge_for(self)  # True: answered (an upgrade it cannot carry)
        return False

    def _request_expired(self, timeout: float) -> None:
        """The route's `request_timeout` passed since the request arrived."""
        self._request_timer = None
        route = self.route
        if self.phase == FINISHED or route is None:
            return
        if route.unhold(self):
            self.proxy.metrics.held(route.key, _monotonic() - self.held_since)
            if self._special:
                exchange_spans.held(self)
        self.proxy.metrics.upstream_error(route.key, "request_timeout")
        # Not answered yet: 504. Under way: the response is cut (`_answer` aborts).
        self._answer(504, f"{route.key} did not answer within {timeout:g}s")

    def _send_placeholder(self, placeholder: Placeholder, path: str) -> None:
        keep_alive = self._own_keep_alive()
        self.status, data = placeholder_response(
            placeholder, self.info.fields(), path, head_only=self.head_only,
            keep_alive=keep_alive, http10=not self.version_11,
        )
        self._write_own(data)

    def _send_canned(self, canned: CannedResponse, path: str) -> None:
        keep_alive = self._own_keep_alive()
        self.status, data = canned_response(
            canned, path, head_only=self.head_only, keep_alive=keep_alive,
            http10=not self.version_11,
        )
        self._write_own(data)

    def _absolute_form(self) -> tuple[str, str]:
        """Host and path of an absolute-form target (a client that thinks it talks to a
        forward proxy), or of `*` (OPTIONS): the Host header and the target as given."""
        target = self.target
        host = self.info.host
        if target[:7].lower() == b"http://" or target[:8].lower() == b"https://":
            rest = target.split(b"://", 1)[1]
            slash = rest.find(b"/")
            host, target = (rest, b"/") if slash < 0 else (rest[:slash], rest[slash:])
        q = target.find(b"?")
        path = target if q < 0 else target[:q]
        return host.decode("latin-1"), path.decode("latin-1")

    # -- holding (routes.Waiter) -------------------------------------------------------------

    def assign(self, slot: EndpointSlot) -> None:
        if self._hold_timer is not None:
            self._hold_timer.cancel()
            self._hold_timer = None
        assert self.route is not None
        self.proxy.metrics.held(self.route.key, _monotonic() - self.held_since)
        if self._special:
            exchange_spans.held(self)
        self._use(slot)

    def reject(self, status: int, message: str) -> None:
        """Answer a held request with an error (its route went away)."""
        if self._special and self.phase == HELD:
            exchange_spans.held(self)
        self._answer(status, message)

    def _hold_expired(self) -> None:
        """The failover time or the readiness timeout passed while held: on to a fallback
        endpoint if there is one, else keep holding until the readiness timeout, else 504."""
        self._hold_timer = None
        route = self.route
        assert route is not None
        spec = route.spec
        slot = route.pick_fallback(self._tried)
        now = _monotonic()
        if slot is None:
            ready_by = self.started + spec.readiness_timeout
            # A failover time with nowhere to fail over to (yet): hold on. (The slack: a
            # loop's timer may fire a little before time.monotonic() reaches its time.)
            if now + _TIMER_SLACK < ready_by:
                self._deadline = ready_by
                self._hold_timer = self.proxy.loop.call_later(
                    ready_by - now, self._hold_expired
                )
                return
        route.unhold(self)
        self.proxy.metrics.held(route.key, now - self.held_since)
        if self._special:
            exchange_spans.held(self)
        if slot is not None:
            self.fallback = True
            self._use(slot)
            return
        self._answer(
            504, f"{route.key} did not become ready within {spec.readiness_timeout:g}s"
        )

    # -- connecting --------------------------------------------------------------------------

    def _use(self, slot: EndpointSlot) -> None:
        self.phase = next_phase(self.phase, CONNECTING)
        self.slot = slot
        pool = slot.pool
        if pool is None:
            if self._bridge is not None:  # (a slot of an HTTP/2 route never caches a pool)
                self._connect(slot.endpoint)
                return
            pool = slot.pool = self.proxy.pools.get(slot.endpoint)
        conn = pool.take()
        if conn is not None:
            self._bind(conn)
        else:
            self._connect(slot.endpoint)

    def _connect(self, endpoint: Endpoint) -> None:
        self._tried = self._tried | {endpoint}
        if self._bridge is not None:
            self._bridge.connect(endpoint)
            return
        pool = self.proxy.pools.get(endpoint)
        if pool.need(self):
            self._spawn_connect(pool)
        else:  # an attempt to spare, or enough connections or attempts: wait (EndpointPool)
            self._pool_wait = pool

    def pool_ready(self, conn: UpstreamConnection | None) -> None:
        """The pool hands us a connection, or a reserved attempt (None)."""
        pool, self._pool_wait = self._pool_wait, None
        if pool is None or self.phase == FINISHED:
            if conn is not None:
                conn.pool.give_back(conn)
            return
        if conn is None or conn.lost:
            if conn is not None and not pool.need(self):
                self._pool_wait = pool
                return
            self._spawn_connect(pool)
        else:
            self._bind(conn)

    def pool_handover(self, conn: UpstreamConnection) -> None:
        """A connection handed back while our attempt is under way: ours on the next loop
        turn (we are inside its parser callback); the attempt now works for the pool."""
        pool, self._attempt = self._attempt, None
        self._connect_task = None  # not ours to cancel any more
        self._reserved = None  # (an attempt not started yet releases it when it runs)
        self._pool_wait = pool
        self.proxy.loop.call_soon(self.pool_ready, conn)

    def _spawn_connect(self, pool: EndpointPool) -> None:
        self._reserved = self._attempt = pool
        self._connect_task = self.proxy.spawn(self._connect_and_bind(pool), "upstream-connect")

    async def _connect_and_bind(self, pool: EndpointPool) -> None:
        self._reserved = None  # pool.connect() gives the reservation back, whatever happens
        endpoint = pool.endpoint
        try:
            conn = await pool.connect(self)
        except TimeoutError:
            # (Cleared before `_connect_failed`, which may start the next attempt's task.)
            self._connect_task = self._attempt = None
            self._connect_failed("connect_timeout", f"connecting to {endpoint} timed out", 504)
            return
        except OSError as exc:
            self._connect_task = self._attempt = None
            # A refused TLS handshake is no replica still starting: answered now, not retried.
            kind = "tls" if isinstance(exc, UpstreamTlsError) else "connect"
            self._connect_failed(kind, f"cannot connect to {endpoint}: {exc.strerror}", 502)
            return
        if conn is None:
            return  # the attempt was no longer ours (pool_handover, or finished): pooled
        self._connect_task = self._attempt = None
        if self.phase == FINISHED:
            pool.give_back(conn)
            return
        self._bind(conn)

    def _connect_failed(self, kind: str, message: str, status: int) -> None:
        if self.phase == FINISHED:
            return
        route = self.route
        assert route is not None
        self.proxy.metrics.upstream_error(route.key, kind)
        slot = self.slot
        if self.fallback:
            # Another fallback endpoint, if one is left untried.
            if slot is not None:
                route.release(slot)
                self.slot = None
            other = route.pick_fallback(self._tried)
            if other is not None:
                self._use_after_retry(other)
                return
        elif slot is not None and kind == "connect":
            # A replica that was just reported ready may not listen yet (readiness and the
            # app's accept loop race): try another endpoint at once, or the same one after a
            # short backoff, for as long as the readiness deadline allows.
            fresh = self.cold_start or (
                not slot.static
                and _monotonic() - slot.ready_since < route.spec.readiness_timeout
            )
            route.release(slot)
            self.slot = None
            other = route.pick(exclude=self._tried)
            if other is not None:
                self._use_after_retry(other)
                return
            if fresh:
                deadline = self._deadline or (self.started + route.spec.readiness_timeout)
                backoff = self.proxy.settings.limits.connect_retry_backoff
                if _monotonic() + backoff < deadline:
                    self._tried = frozenset()
                    self._hold_timer = self.proxy.loop.call_later(backoff, self._retry_pick)
                    return
        self._answer(status, message)

    def _retry_pick(self) -> None:
        self._hold_timer = None
        route = self.route
        assert route is not None
        slot = route.pick(exclude=())
        if slot is not None:
            self._use_after_retry(slot)
        elif route.hold(self):  # the endpoint left meanwhile: wait for another, same deadline
            self.phase = next_phase(self.phase, HELD)
            if not self.cold_start and route.at_zero:
                # The last replica went between the Host lookup and the connect (its pod was
                # gone before its EndpointSlice said so): this request waits for a start too.
                self.cold_start = True
                self.proxy.metrics.cold_start(route.key)
            deadline = self._deadline or (self.started + route.spec.readiness_timeout)
            self.held_since = _monotonic()
            remaining = max(0.0, deadline - self.held_since)
            self._hold_timer = self.proxy.loop.call_later(remaining, self._hold_expired)
        else:
            self._answer(503, f"too many requests waiting for {route.key}")

    def _use_after_retry(self, slot: EndpointSlot) -> None:
        self.phase = next_phase(self.phase, CONNECTING)
        self.slot = slot
        self._connect(slot.endpoint)

    def _bind(self, conn: UpstreamConnection) -> None:
        self.phase = next_phase(self.phase, STREAMING)
        self.upstream = conn
        conn.bind(self, head_only=self.head_only)
        client = self.client
        head = self.info.head(self.method, self.target, client.client_ip_bytes, client.https)
        if self.upgrade is None and self._body:
            body, self._body, self._body_size = self._body, None, 0
            if self.request_chunked:
                body = [http1.chunk(b) for b in body]
            head += b"".join(body)
        elif self.info.body_in_read and not self.request_done:
            # Bound while the client's read is still being parsed, and the whole body is in
            # that read: the parser hands it over next (`request_body`), so head and body
            # leave in one write, one segment, as a buffered body does above.
            self._head_waiting = head
            head = b""
        # An upgrade's early bytes wait for the 101: if the upstream declines, they are the
        # client's next HTTP request, not tunnel data.
        if head:
            conn.write(head)
        self.client.flow.resume_reading(PENDING_BODY)
        if self.request_done:
            self._send_request_end()
        elif self.upgrade is None and self.has_body:
            # The client still uploads: watch for it stalling. (A bodiless request ends in the
            # same parser run as its head: request_complete sets the head deadline then.)
            conn.deadline.set(self.proxy.time() + self.proxy.body_idle)
        if self.client.flow.write_paused:
            conn.flow.pause_reading(CLIENT_FULL)

    # -- request body from the client ----------------------------------------------------------

    def request_body(self, data: bytes) -> None:
        conn = self.upstream
        if conn is not None and self.phase != FINISHED:
            conn.deadline.set(self.proxy.time() + self.proxy.body_idle)
            if self._head_waiting is not None:  # spliced, so never chunked
                data, self._head_waiting = self._head_waiting + data, None
            conn.write(http1.chunk(data) if self.request_chunked else data)
            return
        if self.phase == FINISHED:
            return  # answered already (e.g. 404); the connection closes after the answer
        if self._bridge is not None and self._bridge.request_body(data):
            return
        if self._body is None:
            self._body = [data]
        else:
            self._body.append(data)
        self._body_size += len(data)
        if self._body_size > _PENDING_BODY_LIMIT:
            self.client.flow.pause_reading(PENDING_BODY)

    def request_complete(self, trailers: Sequence[tuple[bytes, bytes]]) -> None:
        self.request_done = True
        self.request_trailers = trailers
        if self.upstream is not None and self.phase != FINISHED:
            self._send_request_end()
        elif self._bridge is not None and self.phase != FINISHED:
            self._bridge.request_complete()

    def _send_request_end(self) -> None:
        conn = self.upstream
        assert conn is not None
        if self._head_waiting is not None:  # not expected: the body always comes first
            conn.write(self._head_waiting)
            self._head_waiting = None
        if self.request_chunked:
            conn.write(http1.last_chunk(self.request_trailers))
        if self.upgrade is None and not self.response_started:
            timeout = self.proxy.response_header_timeout(self.route)
            self._head_due = True
            conn.deadline.set(self.proxy.time() + timeout)

    def io_timeout(self) -> None:
        """The upstream connection's deadline passed (head not in time, or a body stalled)."""
        assert self.route is not None
        if self._head_due:
            self.proxy.metrics.upstream_error(self.route.key, "response_timeout")
            timeout = self.proxy.response_header_timeout(self.route)
            self._answer(504, f"upstream did not send a response head within {timeout:g}s")
            return
        idle = self.proxy.body_idle
        if self.response_started:
            self.proxy.metrics.upstream_error(self.route.key, "body_timeout")
            self._answer(504, "")  # response under way: this aborts both sides
        elif not self._request_over():
            self._answer(408, f"request body stalled for {idle:g}s")
        else:
            self.proxy.metrics.upstream_error(self.route.key, "body_timeout")
            self._answer(504, f"upstream idle for {idle:g}s")

    # -- response from the upstream ------------------------------------------------------------

    def response_head(
        self, status: int, reason: bytes, info: ResponseInfo, keep: bool
    ) -> None:
        if self.phase == FINISHED:
            return
        if status < 200:
            # Interim (100 Continue, 103 Early Hints): relay to an HTTP/1.1 client only.
            if self.version_11:
                self.client.write(
                    info.head(
                        status, reason, chunked=False, keep_alive=True,
                        cold_start=self.cold_start,
                    )
                )
            return
        self._head_due = False
        self.status = status
        self.response_started = True
        framed = self.head_only or status in (204, 304) or info.content_length
        chunked_in = info.chunked
        if not framed:
            # Chunked or read-until-close upstream: chunk it for HTTP/1.1 clients; an HTTP/1.0
            # client can only learn the end from the connection closing.
            self.response_unframed = not chunked_in
            if self.version_11:
                self.response_chunked_out = True
            else:
                self.keep_alive = False
        # The client connection is reused only after a clean, finished request that was not
        # an upgrade attempt, and not while draining; `keep` concerns the upstream side only.
        declined_with_body = self.upgrade is not None and self.has_body
        if declined_with_body or not self._request_over() or self.proxy.draining:
            self.keep_alive = False
        self.upstream_keep = keep
        # Held back until the first body bytes (or the end) so that a small response leaves
        # in one write: one syscall and one TCP segment instead of two.
        info.prepare(
            status, reason, chunked=self.response_chunked_out,
            keep_alive=self.keep_alive, cold_start=self.cold_start, http10=not self.version_11,
        )
        self._head_out = info
        # From now on the connection's deadline watches for a stalled body: moved once per
        # read by UpstreamConnection.data_received while the response is unfinished.

    def response_body(self, data: bytes) -> None:
        if self.phase == FINISHED or not data:
            return
        if self.response_chunked_out:
            data = http1.chunk(data)
        head = self._head_out
        if head is not None:
            self._head_out = None
            data = head.finish(data)
        self.client.write(data)

    def response_complete(self, trailers: Headers) -> None:
        if self.phase == FINISHED:
            return
        self.response_done = True
        end = http1.last_chunk(trailers) if self.response_chunked_out else b""
        head = self._head_out
        if head is not None:
            self._head_out = None
            self.client.write(head.finish(end))
        elif end:
            self.client.write(end)
        conn, self.upstream = self.upstream, None
        if conn is not None:
            if self.request_done and self.upgrade is None and self.upstream_keep:
                conn.pool.give_back(conn)
            else:
                conn.close()
            # Paused while this upstream's buffer was full: the next request is not its concern.
            self.client.flow.resume_reading(UPSTREAM_FULL)
        self._finish()
        self.client.exchange_done(self, keep_alive=self.keep_alive and self._request_over())

    def upstream_failed(self, kind: str, message: str) -> None:
        if self.phase == FINISHED:
            return
        assert self.route is not None
        self.proxy.metrics.upstream_error(self.route.key, kind)
        self._answer(502, message)

    def upstream_lost(self, conn: UpstreamConnection) -> None:
        if self.phase == FINISHED or conn is not self.upstream:
            return
        self.upstream = None
        self.client.flow.resume_reading(UPSTREAM_FULL)  # its buffer went with it
        if self.response_started and self.response_unframed and self.upgrade is None:
            self.response_complete([])  # a read-until-close body ends with the connection
            return
        if self.upgrade is not None and conn.tunnel:
            self._finish()
            self.client.close()
            return
        if not self.response_started and conn.reused and not self._retried and (
            self.request_done and not self.has_body
        ):
            # A pooled connection the upstream closed just as we reused it: retry once fresh.
            self._retried = True
            self._head_due = False
            assert self.slot is not None
            self.phase = next_phase(self.phase, CONNECTING)
            self._connect(self.slot.endpoint)
            return
        assert self.route is not None
        self.proxy.metrics.upstream_error(self.route.key, "reset")
        if (
            not self.response_started
            and self.request_done
            and not self.has_body
            and self.method in _SAFE_METHODS
            and self.slot is not None
            and not self.fallback
            and self._losses < _MAX_LOSSES
        ):
            # The endpoint closed the connection without a byte of answer (a pod shutting
            # down just as it was picked, before its EndpointSlice said so). A safe, bodiless
            # request can go again: elsewhere, or here once the endpoint set has moved on.
            self._losses += 1
            self._head_due = False
            self._retry_elsewhere()
            return
        self._answer(502, "upstream closed the connection before a complete response")

    def _retry_elsewhere(self) -> None:
        """Another endpoint now, else a new pick after the connect-retry backoff (by then the
        dying endpoint has usually left the set, and the request waits for a ready one), for
        as long as the request's readiness deadline allows."""
        self.phase = next_phase(self.phase, CONNECTING)
        route = self.route
        slot = self.slot
        assert route is not None and slot is not None
        route.release(slot)
        self.slot = None
        self._tried = self._tried | {slot.endpoint}
        other = route.pick(exclude=self._tried)
        if other is not None:
            self._use_after_retry(other)
            return
        deadline = self._deadline or (self.started + route.spec.readiness_timeout)
        backoff = self.proxy.settings.limits.connect_retry_backoff
        # While draining, waiting for a replica would only hold up the interceptor's exit.
        if not self.proxy.draining and _monotonic() + backoff < deadline:
            self._tried = frozenset()
            self._hold_timer = self.proxy.loop.call_later(backoff, self._retry_pick)
            return
        self._answer(502, "upstream closed the connection before a complete response")

    def _request_over(self) -> bool:
        """The client sent its whole request (a bodiless one is over at its head)."""
        return self.request_done or not self.has_body

    # -- upgrade tunnel --------------------------------------------------------------------------

    def upstream_upgraded(self, rest: bytes) -> None:
        if self.phase == FINISHED or self.upgrade is None:
            if self.upstream is not None:
                self.upstream.close()
            return
        conn = self.upstream
        assert conn is not None
        self.status = 101
        self.response_started = True
        self._head_due = False
        conn.deadline.clear()  # a tunnel may idle as long as both ends like
        timer = self._request_timer
        if timer is not None:  # nor does the route's request timeout bound a tunnel
            timer.cancel()
            self._request_timer = None
        headers, reason = conn.interim_head()  # the 101's own (Sec-WebSocket-Accept, ...)
        self.client.write(
            read_response(headers).head(
                101, reason, chunked=False, keep_alive=True,
                cold_start=self.cold_start, upgrade=self.upgrade,
            )
        )
        if rest:
            self.client.write(rest)
        if self._body:
            conn.write(b"".join(self._body))
            self._body = None
        self.client.start_tunnel(self)

    def take_leftover(self) -> bytes:
        """Bytes the client sent after an upgrade request the upstream declined."""
        data, self._body = b"".join(self._body or ()), None
        return data

    def tunnel_from_upstream(self, data: bytes) -> None:
        self.client.write(data)

    def tunnel_from_client(self, data: bytes) -> None:
        if self.upstream is not None and self.upstream.tunnel:
            self.upstream.write(data)
        elif self._body is None:
            self._body = [data]  # bytes after the upgrade request, before the 101
        else:
            self._body.append(data)

    # -- flow control between the two sides ------------------------------------------------------

    def upstream_write_paused(self) -> None:
        self.client.flow.pause_reading(UPSTREAM_FULL)

    def upstream_write_resumed(self) -> None:
        self.client.flow.resume_reading(UPSTREAM_FULL)

    def client_write_paused(self) -> None:
        if self.upstream is not None:
            self.upstream.flow.pause_reading(CLIENT_FULL)

    def client_write_resumed(self) -> None:
        if self.upstream is not None:
            self.upstream.flow.resume_reading(CLIENT_FULL)
        elif self._bridge is not None:
            self._bridge.client_write_resumed()

    # -- endings ---------------------------------------------------------------------------------

    def client_lost(self) -> None:
        """The client went away: drop the hold, the connect attempt and the upstream."""
        if self.phase == FINISHED:
            return
        if self.route is not None and self.route.unhold(self) and self._special:
            exchange_spans.held(self)
        if self._connect_task is not None:
            self._connect_task.cancel()
            pool = self._reserved
            if pool is not None:
                # Cancelled before it ran: nothing in it will give the reservation back.
                self._reserved = self._attempt = None
                pool.abandon(self)
                pool.unreserve()
        conn, self.upstream = self.upstream, None
        if conn is not None:
            conn.close()  # never back to the pool half-read
        if not self.response_done and not self.status:
            self.status = 499  # nginx's "client closed request", for the metrics only
        if self._special and not self.response_done:
            exchange_spans.end(self, self.status, "client closed the connection")
        self._finish()

    def _answer(self, status: int, message: str, extra: Headers | None = None) -> None:
        """The proxy's own answer; aborts the client if a response already started."""
        if self.phase == FINISHED:
            return
        conn, self.upstream = self.upstream, None
        if conn is not None:
            conn.close()
            self.client.flow.resume_reading(UPSTREAM_FULL)
        if self._special:
            status_sent = self.status if self.response_started else status
            exchange_spans.end(self, status_sent, message or f"response cut off ({status})")
        if self.response_started:
            self._finish()
            self.client.abort()
            return
        self.status = status
        keep_alive = self._own_keep_alive()
        self._write_own(
            http1.error_response(status, message, close=not keep_alive, extra=extra,
                                 head_only=self.head_only, http10=not self.version_11)
        )

    def _own_keep_alive(self) -> bool:
        """Whether the client connection stays open after an answer the proxy writes itself
        (sets `keep_alive`): not with a request body still unread, after an upgrade attempt,
        or while draining."""
        close = not self._request_over() or self.upgrade is not None or self.proxy.draining
        self.keep_alive = self.keep_alive and not close
        return self.keep_alive

    def _write_own(self, data: bytes) -> None:
        self.client.write(data)
        self.response_done = True
        if not self._request_over():
            self.keep_alive = False
        self._finish()
        self.client.exchange_done(self, keep_alive=self.keep_alive)

    def _finish(self) -> None:
        if self.phase == FINISHED:
            return
        self.phase = FINISHED  # (any phase may finish: no table look-up needed)
        if self._pool_wait is not None:
            self._pool_wait.unwait(self)
            self._pool_wait = None
        if self._attempt is not None:
            self._attempt.orphan(self)  # its connection goes to the pool
            self._attempt = None
        if self._hold_timer is not None:
            self._hold_timer.cancel()
            self._hold_timer = None
        if self._special:
            self._finish_special()
        route = self.route
        if route is not None:
            if route.held:
                route.unhold(self)  # no-op unless still held (answered by a timeout, an error)
            slot = self.slot
            if slot is not None:
                self.slot = None
                # Native fields only: the route's dicts stay untouched (and uncached).
                if route.held or slot.draining or slot.idle_event is not None:
                    route.release(slot)
                else:
                    slot.in_flight -= 1  # RouteState.release, inline for the common case
            route.concurrency -= 1  # RouteState.finish
            route.stats.add(self.method, self.status, _monotonic() - self.started)
        else:
            self.proxy.metrics.request(None, self.method, self.status, _monotonic() - self.started)

    def _finish_special(self) -> None:
        """`_finish` for what only some exchanges have: a request timer, a span, a bridge."""
        timer = self._request_timer
        if timer is not None:
            timer.cancel()
            self._request_timer = None
        bridge, self._bridge = self._bridge, None
        if bridge is not None:
            bridge.finished()
        if exchange_spans.SPANS:
            exchange_spans.end(self, self.status, "")
