"""Forwarding one HTTP/2 stream to its endpoint: over HTTP/2 (contract C, `proxy.h2_upstreams`)
when the route's upstream_scheme is h2c/h2 or the request is gRPC, else over HTTP/1.1.

The HTTP/1.1 side is aiohttp's client (one session per proxy, `Http1Upstreams`): pooled
keep-alive connections per endpoint (limit `limits.pool_max_per_endpoint`), the request body
streamed from the stream as the client sends it (each chunk acknowledged to the client once
aiohttp wrote it), the response body read only while the client takes it (the stream's queue
is bounded: `H2Stream.writable`). Nothing is decoded or rewritten (no decompression, no
cookie jar, no automatic headers). Response trailers of an HTTP/1.1 upstream are dropped
(aiohttp does not expose them; gRPC never takes this path).
"""

from __future__ import annotations

import logging
import ssl
from typing import TYPE_CHECKING, Any

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from httpscale.interceptor.exchange import CONNECTING, FINISHED
from httpscale.interceptor.h2.fields import upstream_fields
from httpscale.interceptor.h2.upstream import H2UpstreamRefused
from httpscale.interceptor.tls import upstream_context
from httpscale.routing.spec import Endpoint

if TYPE_CHECKING:
    from httpscale.interceptor.h2.stream import H2Stream
    from httpscale.interceptor.settings import InterceptorSettings

__all__ = ["Http1Upstreams", "forward"]

log = logging.getLogger(__name__)

# Headers aiohttp would otherwise invent (the client's own, if any, are passed as they came).
_NO_AUTO = ("User-Agent", "Accept", "Accept-Encoding", "Content-Type")


class Http1Upstreams:
    """The aiohttp session HTTP/2 streams use toward HTTP/1.1 endpoints, made on first use."""

    def __init__(self, settings: InterceptorSettings) -> None:
        self.settings = settings
        self._session: aiohttp.ClientSession | None = None
        self._ssl: ssl.SSLContext | None = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            limits, timeouts = self.settings.limits, self.settings.timeouts
            trace = aiohttp.TraceConfig()
            trace.on_request_headers_sent.append(_headers_sent)
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=0, limit_per_host=limits.pool_max_per_endpoint,
                    keepalive_timeout=timeouts.upstream_idle, use_dns_cache=False,
                ),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=timeouts.upstream_connect),
                auto_decompress=False,
                skip_auto_headers=_NO_AUTO,
                cookie_jar=aiohttp.DummyCookieJar(),
                trace_configs=[trace],
                read_bufsize=64 * 1024,
                max_line_size=limits.max_response_head,
                max_field_size=limits.max_response_head,
            )
        return self._session

    def ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = upstream_context(self.settings.tls, alpn=["http/1.1"])
        return self._ssl

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


async def _headers_sent(session: Any, ctx: Any, params: Any) -> None:
    stream = ctx.trace_request_ctx
    if stream is not None and stream.phase == CONNECTING:
        stream.bound()
        if stream.request_done and not stream.body:
            stream.request_sent()


async def forward(stream: H2Stream, endpoint: Endpoint) -> None:
    """The stream's upstream exchange; failures end in the stream's own answers."""
    route = stream.route
    assert route is not None
    scheme = route.spec.upstream_scheme
    tls = scheme in ("https", "h2") or (scheme == "http" and stream.proxy.settings.tls.upstream)
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
    method = stream.method
    headers = [
        (b":method", method),
        (b":scheme", b"https" if tls else b"http"),
        (b":authority", stream.authority),
        (b":path", stream.path),
        *upstream_fields(stream, http2=True),
    ]
    ended = stream.request_done and not stream.body and stream.trailers_in is None
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
    session = upstreams.session()
    host = f"[{endpoint.host}]" if ":" in endpoint.host else endpoint.host
    url = URL(
        f"{'https' if tls else 'http'}://{host}:{endpoint.port}{stream.path.decode('latin-1')}",
        encoded=True,
    )
    headers: CIMultiDict[str] = CIMultiDict()
    headers["Host"] = stream.authority.decode("latin-1")
    for name, value in upstream_fields(stream, http2=False):
        headers.add(name.decode("latin-1"), value.decode("latin-1"))
    has_body = not stream.request_done or bool(stream.body)
    options: dict[str, Any] = {}
    if tls:
        options["ssl"] = upstreams.ssl_context()
        assert stream.route is not None
        server_name = stream.route.spec.upstream_server_name
        if server_name:
            options["server_hostname"] = server_name
    try:
        resp = await session.request(
            stream.method.decode("latin-1"), url, headers=headers,
            data=stream.body_chunks() if has_body else None,
            allow_redirects=False, trace_request_ctx=stream, **options,
        )
    except aiohttp.ConnectionTimeoutError:
        stream.connect_failed("connect_timeout", f"connecting to {endpoint} timed out", 504)
        return
    except aiohttp.ClientConnectorError as exc:
        stream.connect_failed(
            "connect", f"cannot connect to {endpoint}: {exc.strerror or exc}", 502
        )
        return
    except aiohttp.ClientError as exc:
        stream.task = None
        stream.upstream_failed(
            "reset", f"upstream closed the connection before a complete response ({exc})"
        )
        return
    try:
        stream.response_head(
            resp.status, [(k.lower(), v) for k, v in resp.raw_headers], end_stream=False
        )
        while stream.phase != FINISHED:
            data = await resp.content.readany()
            if not data:
                stream.task = None
                stream.response_end(None)
                break
            stream.response_data(data)
            if stream.out_size > stream.high_water:
                await stream.writable()  # backpressure: the client reads slower than we get
    except aiohttp.ClientError:
        stream.task = None
        stream.upstream_failed("reset", "upstream closed the connection mid-response")
    finally:
        # Back to the pool only when both messages were complete; else closed.
        if resp.content.at_eof() and stream.request_done and not stream.body:
            resp.release()
        else:
            resp.close()
