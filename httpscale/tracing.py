"""OpenTelemetry tracing for the interceptor and the scaler: off unless the environment asks.

On when the standard variables ask for OTLP traces: `OTEL_TRACES_EXPORTER=otlp`, or an OTLP
endpoint (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or `OTEL_EXPORTER_OTLP_ENDPOINT`) is set; and
`OTEL_SDK_DISABLED` is not "true" and `OTEL_TRACES_EXPORTER` is not "none". Everything else
is the SDK's own reading of the environment: the exporter's endpoint, headers, timeout and
compression, `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER(_ARG)`,
the batch processor's `OTEL_BSP_*`; `OTEL_PROPAGATORS` (default "tracecontext,baggage") is
read here, per component, not through the SDK's process-wide global.

Off costs nothing: `tracing_from_environment` and `request_tracer` return None without
importing opentelemetry (about 100 ms of imports, and module state), so the proxy's import
chain never loads it, and the proxy holds `tracer = None`, tested once per request.

Spans leave through a BatchSpanProcessor (a worker thread exporting OTLP/HTTP protobuf): the
request path only queues a finished span. `Tracing.close` flushes what is queued, bounded by a
timeout, in the component's ordered shutdown.

Layering: process plumbing, like `runtime`: imports nothing else of httpscale.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.propagators.textmap import TextMapPropagator
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Tracer

__all__ = [
    "FLUSH_GRACE",
    "RequestSpan",
    "RequestTracer",
    "Tracing",
    "TracingConfigError",
    "request_tracer",
    "tracing_enabled",
    "tracing_from_environment",
]

log = logging.getLogger(__name__)

#: Seconds a component's shutdown waits for the spans still queued to be exported.
FLUSH_GRACE: Final = 5.0

# The methods HTTP semantic conventions know; any other is reported as "_OTHER".
_KNOWN_METHODS: Final = frozenset(
    ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")
)
# error.type of the proxy's own answers, by status (low-cardinality: the reason itself, with a
# host and a path in it, goes into the span status or `httpscale.error`).
_OWN_ERRORS: Final = {
    400: "bad_request", 404: "no_route", 405: "method_not_allowed", 408: "request_timeout",
    414: "uri_too_long", 431: "headers_too_large", 499: "client_closed",
    502: "upstream_failed", 503: "unavailable", 504: "timeout",
}


class TracingConfigError(ValueError):
    """An OTEL_* variable asks for something httpscale cannot do; the message names it."""


def _flag(env: Mapping[str, str], name: str) -> bool:
    return env.get(name, "").strip().lower() == "true"


def tracing_enabled(env: Mapping[str, str] | None = None) -> bool:
    """Whether `env` (default: the process environment) turns tracing on (see the module)."""
    env = os.environ if env is None else env
    if _flag(env, "OTEL_SDK_DISABLED"):
        return False
    exporters = {
        e.strip().lower() for e in env.get("OTEL_TRACES_EXPORTER", "").split(",") if e.strip()
    }
    if exporters == {"none"}:
        return False
    endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    if not exporters and not endpoint:
        return False
    if exporters - {"otlp"}:
        raise TracingConfigError(
            f"OTEL_TRACES_EXPORTER={env['OTEL_TRACES_EXPORTER']!r}: httpscale exports traces "
            "with OTLP only (set it to otlp or none)"
        )
    for name in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        protocol = env.get(name, "").strip()
        if protocol:
            if protocol != "http/protobuf":
                raise TracingConfigError(
                    f"{name}={protocol!r}: httpscale's OTLP exporter speaks http/protobuf only "
                    "(the collector's port 4318)"
                )
            break
    return True


class Tracing:
    """One component's tracing: an SDK provider exporting in batches, and the propagator.

    Made only when tracing is on (`tracing_from_environment`): this imports the SDK.
    """

    def __init__(self, scope: str, default_service: str) -> None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.trace import SpanKind, Status, StatusCode, set_span_in_context

        # Kept here: a name imported in a function is looked up again on every call.
        self.SERVER = SpanKind.SERVER
        self.INTERNAL = SpanKind.INTERNAL
        self.error_status = Status(StatusCode.ERROR)
        self.Status = Status
        self.ERROR = StatusCode.ERROR
        self.in_context = set_span_in_context
        env = os.environ
        given = [
            kv.split("=", 1)[0].strip()
            for kv in env.get("OTEL_RESOURCE_ATTRIBUTES", "").split(",")
        ]
        named = bool(env.get("OTEL_SERVICE_NAME")) or SERVICE_NAME in given
        # (Resource.create lets attributes passed here win over the environment's: the default
        # name goes in only when the environment names none.)
        resource = Resource.create({} if named else {SERVICE_NAME: default_service})
        # shutdown_on_exit=False: `close` flushes in the ordered shutdown, within its timeout;
        # the SDK's atexit hook would wait up to 30 s for an unreachable collector.
        self.provider: TracerProvider = TracerProvider(resource=resource, shutdown_on_exit=False)
        self.provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        self.tracer: Tracer = self.provider.get_tracer(scope)
        self.propagator: TextMapPropagator = _propagator(env.get("OTEL_PROPAGATORS", ""))
        # The header names the propagator reads and writes, lower-case (HTTP/2 and gRPC
        # metadata names are; HTTP/1.1 ones are lower-cased before the look-up).
        self.fields: frozenset[str] = frozenset(f.lower() for f in self.propagator.fields)
        self._closed = False

    def extract(self, carrier: Mapping[str, str]) -> Context:
        """The parent context (span, baggage) `carrier` (lower-case names) propagates."""
        return self.propagator.extract(carrier)

    def inject(self, span: Span, context: Context | None) -> dict[str, str]:
        """The fields that propagate `span` (and `context`'s baggage) to the next hop."""
        carrier: dict[str, str] = {}
        self.propagator.inject(carrier, context=self.in_context(span, context))
        return carrier

    async def close(self, grace: float) -> None:
        """Export what is queued and stop the exporter, waiting at most `grace` seconds.

        The SDK's flush and shutdown block (HTTP posts from its worker thread), so they run in a
        daemon thread of their own: past the timeout the shutdown goes on without them (the
        default executor would hold up the loop's close instead).
        """
        if self._closed:
            return
        self._closed = True
        if grace <= 0:  # a forced stop: no wait for the collector
            threading.Thread(target=self.provider.shutdown, daemon=True).start()
            return
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        millis = max(1, int(grace * 1000))

        def flush_and_stop() -> None:
            try:
                self.provider.force_flush(millis)
                self.provider.shutdown()
            except Exception:  # an exporter failure must not fail the shutdown
                log.exception("tracing: flushing spans failed")
            finally:
                loop.call_soon_threadsafe(_resolve, done)

        threading.Thread(target=flush_and_stop, name="tracing-flush", daemon=True).start()
        try:
            async with asyncio.timeout(grace):
                await done
        except TimeoutError:
            log.warning("tracing: spans not exported within %gs at shutdown, dropped", grace)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _propagator(configured: str) -> TextMapPropagator:
    """The propagator OTEL_PROPAGATORS names (default tracecontext,baggage), as the SDK's
    global would be, but read when the component starts rather than at first import."""
    from opentelemetry.baggage.propagation import W3CBaggagePropagator
    from opentelemetry.propagators.composite import CompositePropagator
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
    from opentelemetry.util._importlib_metadata import entry_points

    out: list[TextMapPropagator] = []
    for name in (configured or "tracecontext,baggage").split(","):
        name = name.strip().lower()
        if name == "none":
            return CompositePropagator([])
        if name == "tracecontext":
            out.append(TraceContextTextMapPropagator())
        elif name == "baggage":
            out.append(W3CBaggagePropagator())
        elif name:
            found = list(entry_points(group="opentelemetry_propagator", name=name))
            if not found:
                raise TracingConfigError(
                    f"OTEL_PROPAGATORS: no propagator {name!r} is installed "
                    "(tracecontext, baggage and none are built in)"
                )
            out.append(found[0].load()())
    return CompositePropagator(out)


def tracing_from_environment(scope: str, default_service: str) -> Tracing | None:
    """The component's tracing when the environment turns it on, else None (no import)."""
    if not tracing_enabled():
        return None
    tracing = Tracing(scope, default_service)
    log.info("tracing on: OTLP/HTTP export, propagators %s", sorted(tracing.fields))
    return tracing


def request_tracer(default_service: str = "httpscale-interceptor") -> RequestTracer | None:
    """The proxy's tracer when the environment turns tracing on, else None."""
    tracing = tracing_from_environment("httpscale.interceptor", default_service)
    return None if tracing is None else RequestTracer(tracing)


class RequestTracer:
    """Starts the SERVER span of each proxied request (HTTP/1.1 and HTTP/2 alike)."""

    def __init__(self, tracing: Tracing) -> None:
        self.tracing = tracing
        # The propagator's header names as bytes, lower-case: the incoming fields the upstream
        # head drops (the span's own replace them).
        self.fields: frozenset[bytes] = frozenset(f.encode("latin-1") for f in tracing.fields)

    def start(
        self,
        *,
        method: str,
        scheme: str,
        host: str,
        target: str,
        headers: Iterable[tuple[bytes, bytes]],
        protocol: str,
        client_ip: str,
    ) -> RequestSpan:
        carrier: dict[str, str] = {}
        user_agent = ""
        fields = self.fields
        for field, value in headers:
            lname = field.lower()
            if lname in fields:
                key = lname.decode("latin-1")
                text = value.decode("latin-1")
                # A repeated field is one comma-separated list (baggage, tracestate).
                carrier[key] = f"{carrier[key]},{text}" if key in carrier else text
            elif lname == b"user-agent":
                user_agent = value.decode("latin-1")
        parent = self.tracing.extract(carrier)
        known = method in _KNOWN_METHODS
        path, query = _split_target(target)
        address, port = _split_host(host)
        attributes: dict[str, str | int | bool] = {
            "http.request.method": method if known else "_OTHER",
            "url.scheme": scheme,
            "url.path": path,
            "network.protocol.version": protocol,
            "client.address": client_ip,
            "server.address": address,
            "server.port": port or (443 if scheme == "https" else 80),
        }
        if not known:
            attributes["http.request.method_original"] = method
        if query:
            attributes["url.query"] = query
        if user_agent:
            attributes["user_agent.original"] = user_agent
        name = method if known else "HTTP"
        tracing = self.tracing
        span = tracing.tracer.start_span(
            name, context=parent, kind=tracing.SERVER, attributes=attributes
        )
        return RequestSpan(self.tracing, span, parent, name)

    async def close(self, grace: float) -> None:
        """Flush the spans still queued (see `Tracing.close`)."""
        await self.tracing.close(grace)


class RequestSpan:
    """One request's SERVER span. `end` is called exactly once; a second call is ignored."""

    __slots__ = ("_mono", "_name", "_parent", "_propagation", "_span", "_start_ns", "_tracing")

    def __init__(self, tracing: Tracing, span: Span, parent: Context, name: str) -> None:
        self._tracing = tracing
        self._span = span
        self._parent = parent
        self._name = name
        # The span clock (wall, ns) and the monotonic clock at the same moment: what the proxy
        # measures monotonically (the hold) is placed on the span's timeline from these.
        self._start_ns = time.time_ns()
        self._mono = time.monotonic()
        self._propagation: list[tuple[bytes, bytes]] | None = None

    def route(self, key: str) -> None:
        self._span.update_name(f"{self._name} {key}")
        self._span.set_attribute("httpscale.route", key)

    def held(self, seconds: float, *, cold_start: bool) -> None:
        """The request waited `seconds` for a replica, until now: a child span `hold`."""
        tracing = self._tracing
        end_ns = self._start_ns + int((time.monotonic() - self._mono) * 1e9)
        start_ns = max(self._start_ns, end_ns - int(seconds * 1e9))
        span = self._span
        span.set_attribute("httpscale.cold_start", cold_start)
        hold = tracing.tracer.start_span(
            "hold",
            context=tracing.in_context(span, self._parent),
            kind=tracing.INTERNAL,
            attributes={"httpscale.cold_start": cold_start},
            start_time=start_ns,
        )
        hold.end(end_time=end_ns)

    def upstream(self, endpoint: str) -> None:
        self._span.set_attribute("httpscale.upstream", endpoint)

    def propagation_headers(self) -> list[tuple[bytes, bytes]]:
        """traceparent (+ tracestate, baggage) naming this span as the upstream's parent."""
        if self._propagation is None:
            self._propagation = [
                (k.encode("latin-1"), v.encode("latin-1"))
                for k, v in self._tracing.inject(self._span, self._parent).items()
            ]
        return self._propagation

    def end(self, status: int, error: str = "") -> None:
        """`status`: the status sent (0: none); `error`: the proxy's own reason, when it
        answered or cut the response itself."""
        span = self._span
        if not span.is_recording():
            return  # not sampled, or ended already
        attributes: dict[str, str | int] = {}
        if status:
            attributes["http.response.status_code"] = status
        if error:
            kind = _OWN_ERRORS.get(status, str(status)) if status >= 400 else "aborted"
            attributes["error.type"] = kind
            attributes["httpscale.error"] = error
        elif status >= 500:
            attributes["error.type"] = str(status)
        span.set_attributes(attributes)  # (one lock and one check pass, not one per attribute)
        if status >= 500 or (error and status < 400):
            tracing = self._tracing
            span.set_status(tracing.Status(tracing.ERROR, error) if error else tracing.error_status)
        span.end()


def _split_target(target: str) -> tuple[str, str]:
    """Path and query of a request target (origin or absolute form; `*` stays itself)."""
    if not target.startswith("/") and "://" in target:
        rest = target.split("://", 1)[1]
        slash = rest.find("/")
        target = "/" if slash < 0 else rest[slash:]
    target = target.split("#", 1)[0]
    path, _, query = target.partition("?")
    return path, query


def _split_host(host: str) -> tuple[str, int]:
    """Name and port of a Host value (`[v6]:port` too); port 0 when it has none."""
    if host.startswith("["):
        close = host.find("]")
        name, rest = host[1:close], host[close + 1 :]
        port = rest[1:] if rest.startswith(":") else ""
    else:
        name, _, port = host.partition(":")
    return name, int(port) if port.isdigit() else 0
