"""Forwarding one HTTP/2 stream to its endpoint: over HTTP/2 (contract C, `proxy.h2_upstreams`)
when the route's upstream_scheme is h2c/h2 or the request is gRPC, else over HTTP/1.1.

The HTTP/1.1 side is http1client.py's lean client (`Http1Upstreams`): pooled keep-alive
connections per endpoint, the request body passed on as the client sends it (each chunk
acknowledged to the client once written), the response read only while the client takes it.
A stream whose endpoint has an idle pooled connection is forwarded at once, without a task
(`forward_now`); otherwise `forward` runs as the stream's task (connecting, or HTTP/2).
Nothing is decoded or rewritten. Response trailers of an HTTP/1.1 upstream are dropped
(gRPC never takes this path).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Final

from httpscale.interceptor.exchange import FINISHED
from httpscale.interceptor.h2.fields import upstream_fields
from httpscale.interceptor.h2.http1client import Http1Conn
from httpscale.interceptor.h2.http1pool import Http1Upstreams
from httpscale.interceptor.h2.upstream import H2UpstreamRefused
from httpscale.routing.spec import Endpoint

if TYPE_CHECKING:
    from httpscale.interceptor.h2.stream import H2Stream

__all__ = ["Http1Upstreams", "forward", "forward_now"]

log = logging.getLogger(__name__)

# Methods whose request without a body gets no Content-Length (others get `0`, as the
# HTTP/1.1 client before did, so an app does not wait for a body).
_NO_BODY_METHODS: Final = frozenset((b"GET", b"HEAD", b"OPTIONS", b"DELETE", b"TRACE"))


def _route_tls(stream: H2Stream) -> tuple[str, bool]:
    route = stream.route
    assert route is not None
    scheme = route.spec.upstream_scheme
    tls = scheme in ("https", "h2") or (scheme == "http" and stream.proxy.settings.tls.upstream)
    return scheme, tls


def forward_now(stream: H2Stream, endpoint: Endpoint) -> bool:
    """Forward at once when a pooled connection has room now (an idle HTTP/1.1 one, an
    HTTP/2 one under its stream limit): no task, no loop turn. False when `forward` must run
    as a task instead (connecting, or waiting for room)."""
    scheme, tls = _route_tls(stream)
    route = stream.route
    assert route is not None
    if scheme in ("h2c", "h2") or stream.grpc:
        upstreams = stream.proxy.h2_upstreams
        if upstreams is None:
            return False
        headers, ended = _h2_request(stream, tls)
        try:
            up = upstreams.open_stream_now(
                endpoint, tls=tls, server_name=route.spec.upstream_server_name or endpoint.host,
                headers=headers, end_stream=ended, sink=stream,
            )
        except H2UpstreamRefused as exc:
            stream.connect_failed("connect", f"{endpoint} refused the stream: {exc}", 502)
            return True
        if up is None:
            return False
        stream.bind_up(up, ended=ended)
        return True
    conn = stream.proxy.h2_http1.take(endpoint, tls, route.spec.upstream_server_name)
    if conn is None:
        return False
    _start_http1(stream, conn)
    return True


def _h2_request(stream: H2Stream, tls: bool) -> tuple[list[tuple[bytes, bytes]], bool]:
    """The HEADERS block toward an HTTP/2 upstream, and whether it ends the stream."""
    headers = [
        (b":method", stream.method),
        (b":scheme", b"https" if tls else b"http"),
        (b":authority", stream.authority),
        (b":path", stream.path),
        *upstream_fields(stream, http2=True),
    ]
    return headers, stream.request_done and not stream.body and stream.trailers_in is None


async def forward(stream: H2Stream, endpoint: Endpoint) -> None:
    """The stream's upstream exchange; failures end in the stream's own answers."""
    scheme, tls = _route_tls(stream)
    try:
        if scheme in ("h2c", "h2") or stream.grpc:
            await _forward_h2(stream, endpoint, tls)
        else:
            await _forward_http1(stream, endpoint, tls)
    except Exception as exc:
        # Whatever went wrong, the stream ends through its one exit (counters, slot).
        log.warning("forwarding stream %d to %s failed", stream.id, endpoint, exc_info=True)
        stream.task = None
        stream.upstream_failed("error", f"forwarding to the upstream failed: {exc!r}")


async def _forward_h2(stream: H2Stream, endpoint: Endpoint, tls: bool) -> None:
    upstreams = stream.proxy.h2_upstreams
    if upstreams is None:
        stream.task = None
        stream.upstream_failed("connect", "HTTP/2 upstreams are not available in this build")
        return
    headers, ended = _h2_request(stream, tls)
    route = stream.route
    assert route is not None
    server_name = route.spec.upstream_server_name or endpoint.host
    try:
        up = await upstreams.open_stream(
            endpoint, tls=tls, server_name=server_name, headers=headers, end_stream=ended,
            sink=stream,
        )
    except TimeoutError:
        stream.connect_failed("connect_timeout", f"connecting to {endpoint} timed out", 504)
        return
    except OSError as exc:
        stream.connect_failed("connect", f"cannot connect to {endpoint}: {exc}", 502)
        return
    except H2UpstreamRefused as exc:
        stream.connect_failed("connect", f"{endpoint} refused the stream: {exc}", 502)
        return
    stream.task = None
    if stream.phase == FINISHED:
        up.reset()
        return
    stream.bind_up(up, ended=ended)


async def _forward_http1(stream: H2Stream, endpoint: Endpoint, tls: bool) -> None:
    upstreams: Http1Upstreams = stream.proxy.h2_http1
    assert stream.route is not None
    try:
        conn = await upstreams.acquire(endpoint, tls, stream.route.spec.upstream_server_name)
    except TimeoutError:
        stream.connect_failed("connect_timeout", f"connecting to {endpoint} timed out", 504)
        return
    except OSError as exc:
        reason = exc.strerror or exc
        stream.connect_failed("connect", f"cannot connect to {endpoint}: {reason}", 502)
        return
    stream.task = None
    if stream.phase == FINISHED:
        upstreams.give_back(conn)
        return
    _start_http1(stream, conn)


def _start_http1(stream: H2Stream, conn: Http1Conn) -> None:
    fields = upstream_fields(stream, http2=False)
    ended = stream.request_done and not stream.body
    chunked = False
    if not any(name == b"content-length" for name, _ in fields):
        if not stream.request_done:
            chunked = True
            fields.append((b"transfer-encoding", b"chunked"))
        elif stream.body or stream.method not in _NO_BODY_METHODS:
            fields.append((b"content-length", b"%d" % sum(len(b) for b in stream.body)))
    parts = [stream.method, b" ", stream.path, b" HTTP/1.1\r\nhost: ", stream.authority, b"\r\n"]
    for name, value in fields:
        parts += (name, b": ", value, b"\r\n")
    parts.append(b"\r\n")
    head = b"".join(parts)
    # h2 checks field names, not every byte of values: a CR, LF or NUL in one (or a space in
    # the path) would split the HTTP/1.1 head, so such a request is not sent on.
    lines = len(fields) + 3
    if (
        head.count(b"\n") != lines or head.count(b"\r") != lines or b"\0" in head
        or b" " in stream.path
    ):
        stream.proxy.h2_http1.give_back(conn)
        stream.upstream_failed("error", "a request field cannot be sent on as HTTP/1.1")
        return
    conn.start(stream, head, chunked=chunked, ended=ended)
    stream.bind_up(conn, ended=ended)
