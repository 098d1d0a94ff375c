"""`spec.coldStart`: httpscale's own cold-start knobs, kept apart from KEDA's fields.

KEDA's add-on has one global wait and a failover Service; httpscale lets each route bound how
many requests it holds, how long, how hard it pushes each new replica, and what to answer
meanwhile. All optional; None means "the interceptor's default" (see `routing.spec`).

    coldStart:
      readinessTimeout: 2m            # hold a request at most this long for a ready endpoint
      maxPendingRequests: 500         # held at once; more get 503 right away
      maxConcurrencyPerEndpoint: 8    # in flight per replica; above it requests queue
      placeholder: {status: 503, headers: {Retry-After: "5"}, body: "", refreshSeconds: 2,
                    clients: Browsers}   # or All: who gets it (others are held)
      fallbackUpstream: http://10.0.0.7:8080   # where held requests go if the app is slow
"""

from __future__ import annotations

from dataclasses import dataclass

from httpscale.model.fields import HEADER_NAME, INT32_MAX, Fields, parse_upstream_url
from httpscale.routing.spec import Endpoint, Placeholder

__all__ = [
    "CLIENTS",
    "FRAMING_HEADERS",
    "ColdStart",
    "get_response_headers",
    "parse_cold_start",
    "parse_placeholder",
]

#: Headers the interceptor frames itself; letting a user set them would corrupt the response.
FRAMING_HEADERS = frozenset({"content-length", "transfer-encoding", "connection"})
#: `placeholder.clients`: who gets the placeholder at zero (the first is the default).
#: Browsers: requests that accept text/html; every other request is held for the app.
CLIENTS = ("Browsers", "All")


@dataclass(frozen=True, slots=True)
class ColdStart:
    """A validated `spec.coldStart`; durations in seconds."""

    readiness_timeout: float | None = None
    max_pending_requests: int | None = None
    max_concurrency_per_endpoint: int | None = None
    placeholder: Placeholder | None = None
    fallback_upstream: Endpoint | None = None


def parse_cold_start(f: Fields) -> ColdStart:
    f.allow(
        "readinessTimeout",
        "maxPendingRequests",
        "maxConcurrencyPerEndpoint",
        "placeholder",
        "fallbackUpstream",
    )
    readiness = f.get_duration("readinessTimeout", positive=True)
    max_pending = f.get_int("maxPendingRequests", minimum=1, maximum=INT32_MAX)
    max_per_endpoint = f.get_int("maxConcurrencyPerEndpoint", minimum=1, maximum=INT32_MAX)
    placeholder_fields = f.sub("placeholder")
    placeholder = parse_placeholder(placeholder_fields) if placeholder_fields else None
    fallback_raw = f.raw("fallbackUpstream")
    fallback = (
        parse_upstream_url(fallback_raw, key=f.where("fallbackUpstream"), source=f.source)
        if fallback_raw is not None
        else None
    )
    f.finish()
    return ColdStart(
        readiness_timeout=readiness,
        max_pending_requests=max_pending,
        max_concurrency_per_endpoint=max_per_endpoint,
        placeholder=placeholder,
        fallback_upstream=fallback,
    )


def parse_placeholder(f: Fields) -> Placeholder:
    """`placeholder: {}` turns the placeholder on with its defaults (503, refresh every 2 s,
    for browsers only)."""
    f.allow("status", "headers", "body", "refreshSeconds", "clients")
    default = Placeholder()
    status = f.get_int("status", minimum=200, maximum=599)
    body = f.get_str("body")
    refresh = f.get_int("refreshSeconds", minimum=1, maximum=INT32_MAX)
    headers = get_response_headers(f, "headers")
    clients = f.get_str("clients")
    if clients is not None and clients not in CLIENTS:
        raise f.error("clients", f"expected {' or '.join(CLIENTS)}, got {clients!r}")
    f.finish()
    return Placeholder(
        status=status if status is not None else default.status,
        headers=headers,
        body=body if body is not None else default.body,
        refresh_seconds=refresh if refresh is not None else default.refresh_seconds,
        for_all=clients == "All",
    )


def get_response_headers(f: Fields, name: str) -> tuple[tuple[str, str], ...]:
    """Headers of a response the interceptor answers itself (a placeholder, a static route):
    a mapping of name to one-line value; names are RFC 9110 tokens, and the framing headers
    (`FRAMING_HEADERS`) are the interceptor's to set. A bad name is reported at the mapping,
    a bad value at `<mapping>.<name>`."""
    headers = f.get_str_map(name) or {}
    for header, value in headers.items():
        if not HEADER_NAME.fullmatch(header):
            raise f.error(name, f"not a valid header name: {header!r}")
        if header.lower() in FRAMING_HEADERS:
            raise f.error(name, f"{header} is set by the interceptor, not configurable")
        if "\r" in value or "\n" in value:
            raise f.error(f"{name}.{header}", "header values must be one line")
    return tuple(headers.items())
