"""gRPC's view of the interceptor's own answers, and of a call's `grpc-timeout`.

A gRPC client reads the call's outcome from `grpc-status` (RFC-free: the gRPC-over-HTTP/2
protocol, PROTOCOL-HTTP2.md), not from the HTTP status; an HTTP error page makes grpcio report
a vague UNKNOWN or UNIMPLEMENTED built from gRPC's HTTP-to-gRPC table (404 -> UNIMPLEMENTED,
502/503/504/429 -> UNAVAILABLE). So an answer the interceptor writes itself to a gRPC request
is "trailers-only": HTTP 200, content-type application/grpc, grpc-status and grpc-message in
the one HEADERS frame that ends the stream.

The statuses chosen (the issue asks for NOT_FOUND, UNAVAILABLE and DEADLINE_EXCEEDED):
- 404 no route: NOT_FOUND. gRPC's HTTP table would say UNIMPLEMENTED, which a client reads as
  "the server lacks this method"; here no server was even chosen for that host or path.
- 502 upstream failed, 503 hold queue full or draining or route removed, 429: UNAVAILABLE, the
  status gRPC clients retry by default policy (the call was not processed).
- 504 readiness, response-head or request timeout, 408 request body stalled: DEADLINE_EXCEEDED.
  (Not UNAVAILABLE: the call may have reached the app, so a blind retry is not known safe.)
- 431 header list too large: RESOURCE_EXHAUSTED; any other 4xx: INTERNAL; else UNKNOWN.
"""

from __future__ import annotations

from typing import Final
from urllib.parse import quote

__all__ = [
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "UNAVAILABLE",
    "format_timeout",
    "grpc_status",
    "is_grpc",
    "parse_timeout",
    "trailers_only",
]

OK: Final = 0
UNKNOWN: Final = 2
DEADLINE_EXCEEDED: Final = 4
NOT_FOUND: Final = 5
RESOURCE_EXHAUSTED: Final = 8
INTERNAL: Final = 13
UNAVAILABLE: Final = 14

_BY_HTTP: Final = {
    404: NOT_FOUND,
    408: DEADLINE_EXCEEDED,
    429: UNAVAILABLE,
    431: RESOURCE_EXHAUSTED,
    502: UNAVAILABLE,
    503: UNAVAILABLE,
    504: DEADLINE_EXCEEDED,
}

# grpc-timeout units (PROTOCOL-HTTP2.md): hours, minutes, seconds, milli-, micro-, nanoseconds.
_UNITS: Final = {b"H": 3600.0, b"M": 60.0, b"S": 1.0, b"m": 1e-3, b"u": 1e-6, b"n": 1e-9}


def is_grpc(content_type: bytes) -> bool:
    """application/grpc, application/grpc+proto, application/grpc-web... (any parameters)."""
    return content_type[:16].lower() == b"application/grpc"


def grpc_status(http_status: int) -> int:
    code = _BY_HTTP.get(http_status)
    if code is not None:
        return code
    return INTERNAL if 400 <= http_status < 500 else UNKNOWN


def trailers_only(http_status: int, message: str) -> list[tuple[bytes, bytes]]:
    """The single HEADERS block (END_STREAM) answering a gRPC call with the interceptor's own
    error: `http_status` is what an HTTP/1.1 client would have been answered."""
    return [
        (b":status", b"200"),
        (b"content-type", b"application/grpc"),
        (b"grpc-status", str(grpc_status(http_status)).encode()),
        # Percent-encoded as the protocol requires (printable ASCII other than % passes).
        (b"grpc-message", quote(message, safe=" !\"#$&'()*+,-./:;<=>?@[\\]^_`{|}~").encode()),
    ]


def parse_timeout(value: bytes) -> float | None:
    """Seconds from a grpc-timeout value ("100m", "5S"); None when absent or malformed (a
    malformed one is ignored, as grpc servers do not fail the call for it either)."""
    if not 2 <= len(value) <= 9 or not value[:-1].isdigit():
        return None
    unit = _UNITS.get(value[-1:])
    return None if unit is None else int(value[:-1]) * unit


def format_timeout(seconds: float) -> bytes:
    """A grpc-timeout value for `seconds` (at most 8 digits: milliseconds, else seconds);
    at least 1 ms, as a deadline already past still ends the call promptly at the app."""
    millis = max(1, int(seconds * 1000))
    if millis < 100_000_000:
        return b"%dm" % millis
    return b"%dS" % min(int(seconds), 99_999_999)
