"""The trace spans of HTTP/1.1 exchanges, only when tracing is on (`proxy.tracer`).

Kept out of exchange.py (compiled, and its hot path never comes here): an untraced request
costs one test of `proxy.tracer` in `Exchange.start`. A traced one gets its span there
(`start`), and its upstream head the span's trace context instead of the client's
(`RequestInfo.replace_fields`); the hold is reported where it ends (`held`), route, upstream
and status when the exchange finishes (`end`, which `Exchange._finish` reaches on every path
through `_finish_special`).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from httpscale.interceptor.exchange import Exchange
    from httpscale.tracing import RequestSpan

__all__ = ["SPANS", "end", "held", "start"]

log = logging.getLogger(__name__)

# The spans of traced exchanges, until each ends. Here rather than in a field: a field is
# initialised and cleared for every exchange, traced or not; a traced one has `_special` set
# and looks its span up.
SPANS: dict[Exchange, RequestSpan] = {}


def start(exchange: Exchange) -> None:
    """This request's span; the upstream head made to carry its trace context."""
    tracer = exchange.proxy.tracer
    assert tracer is not None
    info = exchange.info
    transport = exchange.client.transport
    tls = transport is not None and transport.get_extra_info("ssl_object") is not None
    try:
        span = tracer.start(
            method=exchange.method.decode("latin-1"),
            scheme="https" if tls else "http",
            host=info.host.decode("latin-1"),
            target=exchange.target.decode("latin-1"),
            headers=info.fields(),
            protocol="1.1" if exchange.version_11 else "1.0",
            client_ip=exchange.client.client_ip,
        )
        propagation = span.propagation_headers()
    except Exception:  # tracing must never cost a request its answer
        log.exception("tracing: no span for this request")
        return
    SPANS[exchange] = span
    exchange._special = True
    info.replace_fields(tracer.fields, propagation)


def held(exchange: Exchange) -> None:
    """The hold that began at `held_since` ended now."""
    span = SPANS.get(exchange)
    if span is not None:
        span.held(time.monotonic() - exchange.held_since, cold_start=exchange.cold_start)


def end(exchange: Exchange, status: int, error: str) -> None:
    """Ends the span, if there is one still: `error`, the proxy's reason when it answered or
    cut the response itself."""
    span = SPANS.pop(exchange, None)
    if span is None:
        return
    route = exchange.route
    if route is not None:
        span.route(route.key)
        if route.unhold(exchange):  # ends held (answered while waiting): `_finish` would unhold
            span.held(time.monotonic() - exchange.held_since, cold_start=exchange.cold_start)
    slot = exchange.slot
    if slot is not None:
        span.upstream(str(slot.endpoint))
    span.end(status, error)
