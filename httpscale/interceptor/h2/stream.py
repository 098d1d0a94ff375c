"""One HTTP/2 stream through the proxy: the per-stream twin of `exchange.Exchange`.

Same life and the same rules as an HTTP/1.1 exchange (its docstring): phases start -> (held)
-> connecting -> streaming -> finished; the route looked up by :authority (else Host) and
path; `concurrency` and `request_count` counted; an endpoint slot taken or the stream held
(cold start: the route is woken, the stream waits for a replica, then goes through); hold,
failover and readiness timeouts; connect retries to a fresh replica; placeholder and canned
answers; `request_timeout` and the response-head timeout; metrics; `_finish` exactly once,
giving back the slot and the concurrency. A client's RST_STREAM is `client_lost`, counted 499.

Differences that HTTP/2 makes:
- One deadline per stream (on the connection's one timer, timers.py) watches what the
  upstream connection's deadline watches for an HTTP/1.1 exchange: the response head after
  the request was sent, then body idleness.
- The proxy's own answers to a gRPC request are trailers-only gRPC statuses (grpc.py); a
  gRPC call's `grpc-timeout` caps the whole stream as the route's `request_timeout` does.
- Forwarding is in forward.py: HTTP/1.1 upstreams through http1client.py, HTTP/2 upstreams (h2c,
  h2, and every gRPC call) through `proxy.h2_upstreams`, for which this class is the sink.
  The bytes both ways and their backpressure are the base class's (relay.py); the header
  fields sent on are made in fields.py.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any, Final

from h2.errors import ErrorCodes

from httpscale.interceptor.exchange import (
    CONNECTING,
    FINISHED,
    HELD,
    START,
    STREAMING,
    next_phase,
)
from httpscale.interceptor.h2.fields import from_http1
from httpscale.interceptor.h2.forward import forward, forward_now
from httpscale.interceptor.h2.grpc import is_grpc, parse_timeout, trailers_only
from httpscale.interceptor.h2.relay import StreamRelay
from httpscale.interceptor.h2.timers import StreamDeadline
from httpscale.interceptor.placeholder import (
    canned_response,
    placeholder_response,
    wants_placeholder,
)
from httpscale.interceptor.routes import EndpointSlot, RouteState
from httpscale.routing.spec import Endpoint

if TYPE_CHECKING:
    from httpscale.interceptor.h2.server import H2ServerConnection

__all__ = ["H2Stream"]

_monotonic: Final = time.monotonic
_TIMER_SLACK: Final = 0.005
_NO_FIELDS: Final[list[tuple[bytes, bytes]]] = []
class H2Stream(StreamRelay):
    def __init__(
        self, conn: H2ServerConnection, stream_id: int, headers: list[tuple[bytes, bytes]]
    ) -> None:
        super().__init__(conn.proxy)
        self.conn = conn
        self.id = stream_id
        method = path = authority = b""
        host: bytes | None = None
        ctype = timeout = b""
        fields: list[tuple[bytes, bytes]] = []
        size = 32 * len(headers)  # RFC 9113 §6.5.2's measure (server.py checks it)
        for name, value in headers:
            size += len(name) + len(value)
            if name[:1] == b":":
                if name == b":method":
                    method = value
                elif name == b":path":
                    path = value
                elif name == b":authority":
                    authority = value
                continue
            fields.append((name, value))
            if name == b"host":
                host = value
            elif name == b"content-type":
                ctype = value
            elif name == b"grpc-timeout":
                timeout = value
        self.header_list_size = size
        self.method = method
        self.path = path or b"/"
        # RFC 9113 §8.3.1: :authority, else Host, names the target.
        self.authority = authority or host or b""
        self.fields = fields
        self.grpc = is_grpc(ctype)
        self.grpc_timeout = parse_timeout(timeout) if self.grpc and timeout else None
        self.head_only = method == b"HEAD"
        self.started = _monotonic()
        self.phase = START
        self.route: RouteState | None = None
        self.slot: EndpointSlot | None = None
        self.status = 0
        self.error = ""
        self.held_since = 0.0
        self.cold_start = False
        self.fallback = False
        self._tried: frozenset[Endpoint] = frozenset()
        self._deadline = 0.0
        self._hold_timer: asyncio.TimerHandle | None = None
        self._request_timer: asyncio.TimerHandle | None = None
        self.deadline = StreamDeadline(conn.deadlines, self.io_timeout)
        self._head_due = False
        self.task: asyncio.Task[None] | None = None
        self.span: Any = None

    # -- start: route, count, pick or hold (as Exchange.start) -------------------------------

    def begin(self, *, ended: bool) -> None:
        self.request_done = ended
        tracer = self.proxy.tracer
        if tracer is not None:
            self.span = tracer.start(
                method=self.method.decode("latin-1"), scheme=self.conn.scheme.decode(),
                host=self.authority.decode("latin-1"), target=self.path.decode("latin-1"),
                headers=self.fields, protocol="2", client_ip=self.conn.client_ip,
            )
        if self.method == b"CONNECT":
            self._answer(405, "CONNECT is not supported")
            return
        host = self.authority.decode("latin-1")
        path = self.path.decode("latin-1")
        registry = self.proxy.registry
        route = registry.lookup(host, path, self.fields if registry.needs_headers else _NO_FIELDS)
        if route is None:
            path = path.split("?", 1)[0].split("#", 1)[0]
            self._answer(404, f"no route for host {host!r} and path {path!r}")
            return
        self.route = route
        if self.span is not None:
            self.span.route(route.key)
        route.concurrency += 1
        route.request_count += 1
        canned = route.canned
        if canned is not None and (canned.always or route.at_zero):
            _, data = canned_response(
                canned, path, head_only=self.head_only, keep_alive=True, http10=False
            )
            self._send_own(data)
            return
        timeout = route.request_timeout
        if self.grpc_timeout is not None and (timeout is None or self.grpc_timeout < timeout):
            timeout = self.grpc_timeout
        if timeout is not None:
            self._request_timer = self.proxy.loop.call_later(
                timeout, self._request_expired, timeout
            )
        slot = route.try_acquire()
        if slot is not None:
            self._use(slot)
            return
        spec = route.spec
        placeholder = spec.placeholder
        # A page for a browser; a gRPC client is held instead (it cannot show one).
        if (
            placeholder is not None
            and not self.grpc
            and route.at_zero
            and not spec.overflow_placeholder
            and wants_placeholder(placeholder, self.fields)
        ):
            route.wake()
            self.proxy.metrics.cold_start(route.key)
            self._send_placeholder(path)
            return
        if not route.hold(self):
            self.proxy.metrics.hold_overflow(route.key)
            if placeholder is not None and spec.overflow_placeholder and not self.grpc:
                self._send_placeholder(path)
                return
            self._answer(
                503,
                f"too many requests waiting for {route.key} "
                f"(maxPendingRequests={spec.max_pending_requests})",
                extra=[(b"retry-after", b"1")],
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
            wait = failover
        self._deadline = self.started + wait
        self._hold_timer = self.proxy.loop.call_later(wait, self._hold_expired)

    def begin_refused(self, status: int, message: str) -> None:
        """Answered before routing (a header list over the limit): counted on no route."""
        self.request_done = True  # nothing of its body is wanted
        self._answer(status, message)

    def _request_expired(self, timeout: float) -> None:
        self._request_timer = None
        route = self.route
        if self.phase == FINISHED or route is None:
            return
        if route.unhold(self):
            self._held_for(_monotonic() - self.held_since)
        self.proxy.metrics.upstream_error(route.key, "request_timeout")
        self._answer(504, f"{route.key} did not answer within {timeout:g}s")

    def _send_placeholder(self, path: str) -> None:
        route = self.route
        assert route is not None and route.spec.placeholder is not None
        _, data = placeholder_response(
            route.spec.placeholder, self.fields, path, head_only=self.head_only,
            keep_alive=True, http10=False,
        )
        self._send_own(data)

    def _held_for(self, seconds: float) -> None:
        assert self.route is not None
        self.proxy.metrics.held(self.route.key, seconds)
        if self.span is not None:
            self.span.held(seconds, cold_start=self.cold_start)

    # -- holding (routes.Waiter) -------------------------------------------------------------

    def assign(self, slot: EndpointSlot) -> None:
        if self._hold_timer is not None:
            self._hold_timer.cancel()
            self._hold_timer = None
        self._held_for(_monotonic() - self.held_since)
        self._use(slot)

    def reject(self, status: int, message: str) -> None:
        self._answer(status, message)

    def _hold_expired(self) -> None:
        self._hold_timer = None
        route = self.route
        assert route is not None
        spec = route.spec
        slot = route.pick_fallback(self._tried)
        now = _monotonic()
        if slot is None:
            ready_by = self.started + spec.readiness_timeout
            if now + _TIMER_SLACK < ready_by:
                self._deadline = ready_by
                self._hold_timer = self.proxy.loop.call_later(ready_by - now, self._hold_expired)
                return
        route.unhold(self)
        self._held_for(now - self.held_since)
        if slot is not None:
            self.fallback = True
            self._use(slot)
            return
        self._answer(
            504, f"{route.key} did not become ready within {spec.readiness_timeout:g}s"
        )

    # -- connecting (forward.py does the I/O) ------------------------------------------------

    def _use(self, slot: EndpointSlot) -> None:
        self.phase = next_phase(self.phase, CONNECTING)
        self.slot = slot
        self._connect(slot.endpoint)

    def _connect(self, endpoint: Endpoint) -> None:
        self._tried = self._tried | {endpoint}
        if self.span is not None:
            self.span.upstream(str(endpoint))
        if not forward_now(self, endpoint):
            self.task = self.proxy.spawn(forward(self, endpoint), "h2-stream")

    def connect_failed(self, kind: str, message: str, status: int) -> None:
        """No connection (or no stream) to the endpoint: as Exchange._connect_failed."""
        self.task = None
        if self.phase == FINISHED:
            return
        route = self.route
        assert route is not None
        self.proxy.metrics.upstream_error(route.key, kind)
        slot = self.slot
        if self.fallback:
            if slot is not None:
                route.release(slot)
                self.slot = None
            other = route.pick_fallback(self._tried)
            if other is not None:
                self._use_after_retry(other)
                return
        elif slot is not None and kind == "connect" and not self.body_passed:
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
        elif route.hold(self):
            self.phase = next_phase(self.phase, HELD)
            if not self.cold_start and route.at_zero:
                self.cold_start = True
                self.proxy.metrics.cold_start(route.key)
            deadline = self._deadline or (self.started + route.spec.readiness_timeout)
            self.held_since = _monotonic()
            self._hold_timer = self.proxy.loop.call_later(
                max(0.0, deadline - self.held_since), self._hold_expired
            )
        else:
            self._answer(503, f"too many requests waiting for {route.key}")

    def _use_after_retry(self, slot: EndpointSlot) -> None:
        self.phase = next_phase(self.phase, CONNECTING)
        self.slot = slot
        self._connect(slot.endpoint)

    def bound(self) -> None:
        """The request left for the upstream (forward.py): its deadlines start."""
        self.phase = next_phase(self.phase, STREAMING)
        if not self.request_done:
            self.deadline.set(self.proxy.time() + self.proxy.body_idle)

    def request_sent(self) -> None:
        """All of the request is upstream: the response head is due."""
        if self._request_sent or self.phase != STREAMING:
            return
        self._request_sent = True
        if not self.response_started:
            self._head_due = True
            self.deadline.set(self.proxy.time() + self.proxy.response_header_timeout(self.route))

    def io_timeout(self) -> None:
        if self.phase == FINISHED:
            return
        assert self.route is not None
        if self._head_due:
            self.proxy.metrics.upstream_error(self.route.key, "response_timeout")
            timeout = self.proxy.response_header_timeout(self.route)
            self._answer(504, f"upstream did not send a response head within {timeout:g}s")
            return
        idle = self.proxy.body_idle
        if self.response_started:
            self.proxy.metrics.upstream_error(self.route.key, "body_timeout")
            self._answer(504, "")
        elif not self.request_done:
            self._answer(408, f"request body stalled for {idle:g}s")
        else:
            self.proxy.metrics.upstream_error(self.route.key, "body_timeout")
            self._answer(504, f"upstream idle for {idle:g}s")

    def upstream_reset(self, code: int, reason: str, *, retryable: bool) -> None:
        self.up = None
        if self.phase == FINISHED:
            return
        if retryable and not self.response_started and not self.body_passed:
            # Certainly not processed: as if the connect had failed (and so may go again).
            self.deadline.clear()
            self._head_due = False
            self._request_sent = False
            self._up_blocked = self._up_ended = False
            self.phase = next_phase(self.phase, CONNECTING)
            self.connect_failed("connect", f"upstream refused the stream: {reason}", 502)
            return
        assert self.route is not None
        self.proxy.metrics.upstream_error(self.route.key, "reset")
        if self.response_started:
            self._finish()
            self.conn.reset_stream(self, code if 0 <= code <= 0xD else ErrorCodes.INTERNAL_ERROR)
            return
        self._answer(502, f"upstream reset the stream: {reason}")

    # -- endings ------------------------------------------------------------------------------

    def client_reset(self) -> None:
        """RST_STREAM from the client: its upstream work is cancelled, counted 499."""
        self.reset = True
        self.out.clear()
        self.client_lost()

    def client_lost(self) -> None:
        if self.phase == FINISHED:
            return
        if self.route is not None:
            self.route.unhold(self)
        self._drop_upstream()
        if not self.response_done:
            self.status = 499
        self._finish()

    def upstream_failed(self, kind: str, message: str) -> None:
        if self.phase == FINISHED:
            return
        assert self.route is not None
        self.proxy.metrics.upstream_error(self.route.key, kind)
        self._answer(502, message)

    def _drop_upstream(self) -> None:
        task, self.task = self.task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        up, self.up = self.up, None
        if up is not None:
            up.reset()

    def _answer(
        self, status: int, message: str, extra: list[tuple[bytes, bytes]] | None = None
    ) -> None:
        """The proxy's own answer; a response already under way is reset instead."""
        if self.phase == FINISHED:
            return
        self._drop_upstream()
        self.error = message
        if self.response_started:
            self._finish()
            self.conn.reset_stream(self, ErrorCodes.INTERNAL_ERROR)
            return
        self.status = status
        if self.grpc:
            self.response_started = self.response_done = True
            self.conn.send_headers(self, trailers_only(status, message), end_stream=True)
            self._finish()
            return
        body = b"" if self.head_only else message.encode("utf-8", "replace") + b"\n"
        headers = [
            (b":status", str(status).encode()),
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", str(len(message.encode("utf-8", "replace")) + 1).encode()),
            (b"x-httpscale-cold-start", b"false"),
        ]
        headers += [(n.lower(), v) for n, v in extra or ()]
        self._respond(headers, body)

    def _send_own(self, data: bytes) -> None:
        """A placeholder or canned answer, made as HTTP/1.1 bytes: sent as HTTP/2."""
        status, headers, body = from_http1(data)
        if status < 200:  # an interim status cannot end a stream
            self._answer(502, f"configured answer status {status} is not a final status")
            return
        self.status = status
        self._respond(headers, b"" if self.head_only else body)

    def _respond(self, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        self.response_started = self.response_done = True
        self.conn.send_headers(self, headers, end_stream=not body)
        if body:
            self.out.append(body)
            self.out_size += len(body)
            self.out_end = True
            self.conn.flush_stream(self)
        self._finish()

    def _finish(self) -> None:
        if self.phase == FINISHED:
            return
        self.phase = FINISHED
        self.deadline.stop()
        if self._hold_timer is not None:
            self._hold_timer.cancel()
            self._hold_timer = None
        if self._request_timer is not None:
            self._request_timer.cancel()
            self._request_timer = None
        route = self.route
        if route is not None:
            route.unhold(self)
            slot, self.slot = self.slot, None
            if slot is not None:
                route.release(slot)
            route.concurrency -= 1
        self.proxy.metrics.request(
            route.stats if route is not None else None, self.method, self.status,
            _monotonic() - self.started,
        )
        if self.span is not None:
            self.span.end(self.status, self.error)
        # What the client sent and nobody will read: credited back (the stream may go on
        # uploading until our END_STREAM or RST_STREAM reaches it).
        if self.body:
            n = sum(len(b) for b in self.body)
            self.body.clear()
            self.conn.acknowledge(self.id, n)
