"""Header fields of an HTTP/2 stream on their way on: toward the upstream (what is dropped and
added, as heads.py does for HTTP/1.1), and the proxy's own HTTP/1.1-made answers turned into
HTTP/2 ones."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Final

from httpscale.interceptor.h2.grpc import format_timeout

if TYPE_CHECKING:
    from httpscale.interceptor.h2.stream import H2Stream

__all__ = ["HOP", "from_http1", "upstream_fields"]

# Connection-specific fields (RFC 9113 §8.2.2), what HTTP/1.1 treats as hop-by-hop, and Host
# (it is :authority, or the HTTP/1.1 client's own).
HOP: Final = frozenset(
    (b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade",
     b"te", b"http2-settings", b"host")
)


def upstream_fields(stream: H2Stream, *, http2: bool) -> list[tuple[bytes, bytes]]:
    """The request's fields for the upstream: connection-specific ones dropped (Host
    too: it is :authority, or added by the HTTP/1.1 client), X-Forwarded-* as heads.py
    adds them, and the tracing context replaced when tracing is on."""
    out: list[tuple[bytes, bytes]] = []
    xff: bytes | None = None
    xfp = xfh = False
    cookies: list[bytes] = []
    span = stream.span
    tracer = stream.proxy.tracer
    # The propagator's own fields (OTEL_PROPAGATORS): the span's replace what came in.
    trace_fields = tracer.fields if span is not None and tracer is not None else frozenset()
    for name, value in stream.fields:
        if name in HOP:
            if http2 and name == b"te":
                out.append((name, value))  # "trailers": gRPC servers require it
            continue
        if name == b"x-forwarded-for":
            xff = value if xff is None else xff + b", " + value
            continue
        if name == b"cookie" and not http2:
            cookies.append(value)  # RFC 9113 §8.2.3: one field again for HTTP/1.1
            continue
        if name in trace_fields:
            continue
        if name == b"grpc-timeout" and stream.grpc_timeout is not None:
            # What is left of the call's deadline after the time it was held: the app's own
            # deadline then ends when the client's does.
            left = stream.grpc_timeout - (time.monotonic() - stream.started)
            value = format_timeout(left)
        xfp = xfp or name == b"x-forwarded-proto"
        xfh = xfh or name == b"x-forwarded-host"
        out.append((name, value))
    if cookies:
        out.append((b"cookie", b"; ".join(cookies)))
    ip = stream.conn.client_ip.encode()
    out.append((b"x-forwarded-for", ip if xff is None else xff + b", " + ip))
    if not xfp:
        out.append((b"x-forwarded-proto", stream.conn.scheme))
    if not xfh and stream.authority:
        out.append((b"x-forwarded-host", stream.authority))
    if span is not None:
        out += span.propagation_headers()
    return out


def from_http1(data: bytes) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """Status, HTTP/2 header block and body of a whole HTTP/1.1 response (a placeholder or a
    canned answer, made by placeholder.py for both protocols); connection-specific fields
    dropped, names lower-cased."""
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    headers = [(b":status", str(status).encode())]
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name and name not in HOP:
            headers.append((name, value.strip()))
    return status, headers, body
