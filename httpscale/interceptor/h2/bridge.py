"""An HTTP/1.1 client's request on a route whose upstream speaks HTTP/2 (`upstream_scheme` h2c
or h2): the exchange's HTTP/2 leg, on the shared connections of `proxy.h2_upstreams`.

The `Exchange` (exchange.py) keeps everything but the bytes on the wire: routing, counting,
holding, the slot, connect retries (`_connect_failed`), timeouts (`io_timeout`, the route's
request timeout), its own answers (`_answer`) and `_finish`, exactly once. It hands this
object the endpoint once a slot is picked (`Exchange._connect`); the bridge opens a stream
there and feeds the response back through `response_head`, `response_body` and
`response_complete`, which frame it for the HTTP/1.1 client as for an HTTP/1.1 upstream
(Content-Length when the app gave one, else chunked; close-delimited for HTTP/1.0). So this
module drives the exchange's own private steps: it is that class's HTTP/2 half, kept apart
because exchange.py is compiled and the h2 package loads only when HTTP/2 is on.

- Request: the head the HTTP/1.1 path would send (`RequestInfo.head`: hop-by-hop fields
  dropped, X-Forwarded-* added, the trace context replaced) turned into an HTTP/2 header
  list: the request line into pseudo-headers, Host into :authority, connection-specific
  fields dropped, names lower-cased, `te: trailers` kept. The body (Content-Length or
  chunked) goes in DATA frames as it arrives; chunked trailers become HTTP/2 trailers.
- Backpressure: the client is not read while the stream's send queue is over the write
  high-water mark (`send_data` False until `upstream_writable`). Response DATA is
  acknowledged to the app (`consumed`) only once written to the client while its transport
  is not paused; what a paused client owes is acknowledged when it resumes writing.
- Response trailers go on as chunked trailers when the client sent `TE: trailers` (else
  dropped); interim 100 is relayed as the HTTP/1.1 path does, other 1xx dropped.
- A stream the app certainly did not process (REFUSED_STREAM, GOAWAY below it) goes again,
  to another endpoint or after the retry backoff, when none of its body was sent.
- An Upgrade (WebSocket) request cannot be carried (no extended CONNECT): answered 501. An
  `Upgrade: h2c` (curl --http2 on http://) is declined: the request goes as any other.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Final

from httpscale.interceptor.deadline import Deadline
from httpscale.interceptor.exchange import FINISHED, STREAMING, Exchange, next_phase
from httpscale.interceptor.flow import PENDING_BODY, UPSTREAM_FULL
from httpscale.interceptor.h2.fields import HOP
from httpscale.interceptor.h2.upstream import H2UpstreamRefused
from httpscale.interceptor.heads import read_response
from httpscale.interceptor.http1 import HOP_BY_HOP
from httpscale.routing.spec import Endpoint

if TYPE_CHECKING:
    from httpscale.interceptor.h2.upstream import UpstreamStream

__all__ = ["H2Bridge", "bridge_for"]

log = logging.getLogger(__name__)

Headers = list[tuple[bytes, bytes]]

# Refused streams sent again, at most (as `Exchange._MAX_LOSSES` for closed connections).
_MAX_REFUSALS: Final = 3
_DROPPED: Final = HOP | HOP_BY_HOP


def bridge_for(exchange: Exchange) -> bool:
    """Give `exchange` (its route's upstream speaks HTTP/2) its bridge; True: answered
    instead (an upgrade, which HTTP/2 toward the app cannot carry)."""
    if exchange.upgrade is not None and exchange.upgrade.lower() != b"h2c":
        route = exchange.route
        assert route is not None
        protocol = exchange.upgrade.decode("latin-1")
        exchange._answer(
            501,
            f"{route.key} speaks HTTP/2 to its app: a protocol upgrade ({protocol}) "
            f"cannot be carried there",
        )
        return True
    exchange._special = True  # `_finish_special` ends the bridge
    exchange._bridge = H2Bridge(exchange)
    return False


class H2Bridge:
    """The HTTP/2 stream of one exchange (an `exchange.Bridge`; a sink of contract C)."""

    def __init__(self, exchange: Exchange) -> None:
        self.exchange = exchange
        self.proxy = exchange.proxy
        route = exchange.route
        assert route is not None
        self.tls = route.spec.upstream_scheme == "h2"
        self.server_name = route.spec.upstream_server_name
        self.up: UpstreamStream | None = None
        self.task: asyncio.Task[None] | None = None
        self.deadline = Deadline(self.proxy.loop, self._deadline_passed)
        self.te_trailers = _accepts_trailers(exchange.info.fields())
        self.body_sent = False  # some of the body went to a stream: it cannot go again
        self.ended = False  # the stream's END_STREAM was handed over
        self.owed = 0  # response bytes written while the client was paused: not consumed yet
        self.refusals = 0
        self._headers: Headers | None = None

    # -- from the exchange ---------------------------------------------------------------------

    def connect(self, endpoint: Endpoint) -> None:
        """The slot's endpoint (a first attempt or a retry): open a stream there."""
        self.up = None
        self.ended = False
        self.deadline.clear()
        self.task = self.proxy.spawn(self._open(endpoint), "h1-to-h2")

    def request_body(self, data: bytes) -> bool:
        if self.up is None:
            return False  # no stream yet: the exchange keeps it (bounded, PENDING_BODY)
        self.deadline.set(self.proxy.time() + self.proxy.body_idle)
        self._send(data)
        return True

    def request_complete(self) -> None:
        if self.up is not None:
            self._end_request()

    def client_write_resumed(self) -> None:
        owed, self.owed = self.owed, 0
        if owed and self.up is not None:
            self.up.consumed(owed)

    def finished(self) -> None:
        """The exchange finished (`_finish`), however: nothing of the stream is left."""
        self.deadline.stop()
        task, self.task = self.task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        up, self.up = self.up, None
        if up is not None:
            up.reset()  # idempotent; gives back what the client never took
        self.exchange.client.flow.resume_reading(UPSTREAM_FULL)

    # -- the stream ----------------------------------------------------------------------------

    async def _open(self, endpoint: Endpoint) -> None:
        ex = self.exchange
        upstreams = self.proxy.h2_upstreams
        # (An `Upgrade: h2c` request is bridged as a plain one, the upgrade declined: what
        # the client sent after it waits in `_body` for HTTP/1.1 to go on, `take_leftover`.)
        upgrade = ex.upgrade is not None
        ended = ex.request_done and (upgrade or not ex._body) and not ex.request_trailers
        try:
            up: UpstreamStream = await upstreams.open_stream(
                endpoint, tls=self.tls, server_name=self.server_name or endpoint.host,
                headers=self._request_headers(), end_stream=ended, sink=self,
            )
        except TimeoutError:
            self.task = None  # (before `_connect_failed`, which may start the next attempt)
            ex._connect_failed("connect_timeout", f"connecting to {endpoint} timed out", 504)
            return
        except OSError as exc:
            self.task = None
            ex._connect_failed("connect", f"cannot connect to {endpoint}: {exc}", 502)
            return
        except H2UpstreamRefused as exc:
            self.task = None
            ex._connect_failed("connect", f"{endpoint} refused the stream: {exc}", 502)
            return
        except Exception as exc:
            # Whatever went wrong, the exchange ends through its one exit.
            log.warning("opening an HTTP/2 stream to %s failed", endpoint, exc_info=True)
            self.task = None
            ex.upstream_failed("error", f"forwarding to the upstream failed: {exc!r}")
            return
        self.task = None
        if ex.phase == FINISHED:
            up.reset()
            return
        ex.phase = next_phase(ex.phase, STREAMING)
        self.up = up
        self.ended = ended
        if not upgrade:
            body, ex._body, ex._body_size = ex._body, None, 0
            if body:
                self._send(b"".join(body))
        ex.client.flow.resume_reading(PENDING_BODY)
        if ex.request_done:
            self._end_request()
        else:  # the client still uploads: watch for it stalling
            self.deadline.set(self.proxy.time() + self.proxy.body_idle)

    def _request_headers(self) -> Headers:
        """The HTTP/1.1 path's upstream head as an HTTP/2 header list (built once)."""
        if self._headers is not None:
            return self._headers
        ex = self.exchange
        client = ex.client
        head = ex.info.head(ex.method, ex.target, client.client_ip_bytes, client.https)
        target = ex.target
        authority, path = ex.info.host, target
        if target[:1] != b"/" and target != b"*":  # absolute form: its authority wins
            rest = target.split(b"://", 1)[-1]
            slash = rest.find(b"/")
            authority, path = (rest, b"/") if slash < 0 else (rest[:slash], rest[slash:])
        out = [(b":method", ex.method), (b":scheme", b"https" if self.tls else b"http")]
        if authority:
            out.append((b":authority", authority))
        out.append((b":path", path))
        for line in head.split(b"\r\n")[1:]:
            if not line:
                break  # the end of the head
            colon = line.find(b":")
            name = line[:colon].strip().lower()
            if name not in _DROPPED:
                out.append((name, line[colon + 1 :].strip()))
        if self.te_trailers:
            out.append((b"te", b"trailers"))  # the only TE HTTP/2 allows (gRPC wants it)
        self._headers = out
        return out

    def _send(self, data: bytes) -> None:
        up = self.up
        assert up is not None
        self.body_sent = True
        if not up.send_data(data):
            self.exchange.client.flow.pause_reading(UPSTREAM_FULL)  # until upstream_writable

    def _end_request(self) -> None:
        """All of the request is with the stream: the response head is due."""
        ex = self.exchange
        up = self.up
        assert up is not None
        if not self.ended:
            self.ended = True
            trailers = [
                (name.lower(), value) for name, value in ex.request_trailers
                if name.lower() not in _DROPPED
            ]
            if trailers:
                up.send_trailers(trailers)
            else:
                up.end()
        if not ex.response_started:
            ex._head_due = True
            self.deadline.set(self.proxy.time() + self.proxy.response_header_timeout(ex.route))

    def _deadline_passed(self) -> None:
        if self.exchange.phase != FINISHED:
            self.exchange.io_timeout()  # 504 (head, idle) or 408 (body stalled), as HTTP/1.1

    # -- UpstreamStreamSink (contract C) -------------------------------------------------------

    def upstream_headers(self, headers: Headers, *, end_stream: bool) -> None:
        ex = self.exchange
        if ex.phase == FINISHED:
            return
        status = 0
        fields: Headers = []
        for name, value in headers:
            if name == b":status":
                status = int(value)
            elif name[:1] != b":":
                fields.append((name, value))
        if status < 200:
            if status == 100:  # relayed to an HTTP/1.1 client, as from an HTTP/1.1 app
                ex.response_head(100, b"Continue", read_response(fields), False)
            return
        self.deadline.set(self.proxy.time() + self.proxy.body_idle)
        ex.response_head(status, b"", read_response(fields), False)
        if end_stream:
            ex.response_complete([])

    def upstream_data(self, data: bytes, *, end_stream: bool) -> None:
        ex = self.exchange
        up = self.up
        if ex.phase == FINISHED or up is None:
            return
        if data:
            self.deadline.set(self.proxy.time() + self.proxy.body_idle)
            if ex.head_only:
                up.consumed(len(data))  # a HEAD response has no body to pass on
            else:
                ex.response_body(data)
                if ex.client.flow.write_paused:
                    self.owed += len(data)  # consumed once the client takes it
                else:
                    up.consumed(len(data))
        if end_stream:
            ex.response_complete([])

    def upstream_trailers(self, trailers: Headers) -> None:
        ex = self.exchange
        if ex.phase == FINISHED:
            return
        if self.te_trailers:
            ex.response_complete([(n, v) for n, v in trailers if n[:1] != b":"])
        else:
            ex.response_complete([])

    def upstream_reset(self, code: int, reason: str, *, retryable: bool) -> None:
        self.up = None  # the stream is done
        ex = self.exchange
        if ex.phase == FINISHED:
            return
        self.deadline.clear()
        ex.client.flow.resume_reading(UPSTREAM_FULL)  # its queue went with it
        route = ex.route
        assert route is not None
        self.proxy.metrics.upstream_error(route.key, "reset")
        if (
            retryable
            and not ex.response_started
            and not self.body_sent
            and not ex.fallback
            and ex.slot is not None
            and self.refusals < _MAX_REFUSALS
        ):
            # Certainly not processed (REFUSED_STREAM, or above a GOAWAY's last stream):
            # again, elsewhere or here after the backoff, within the readiness deadline.
            self.refusals += 1
            ex._head_due = False
            ex._retry_elsewhere()
            return
        ex._answer(502, reason)  # a response under way is cut instead

    def upstream_writable(self) -> None:
        if self.exchange.phase != FINISHED:
            self.exchange.client.flow.resume_reading(UPSTREAM_FULL)


def _accepts_trailers(fields: Headers) -> bool:
    """The client sent `TE: trailers` (RFC 9110 §10.1.4): it takes trailer fields."""
    for name, value in fields:
        if name.lower() == b"te" and b"trailers" in (
            t.strip().split(b";", 1)[0] for t in value.lower().split(b",")
        ):
            return True
    return False
