"""Live requests through the interceptor: which to send, and what an answer means (pure).

One GET per route an object is served for (static routes excepted: the interceptor answers
those itself), with a Host, path and headers that the interceptors' own table sends to that
route and to no other one: the table is rebuilt here, in serving order, and a request that
would reach another route is not sent. An app at zero (its Service has no ready endpoint) is
not woken unless asked (`--wake`): a request would wake it and keep it up for its
`scaledownPeriod`. Any request sent counts as traffic, like any other.

An answer that carries `X-HTTPScale-Cold-Start` went through an interceptor. The interceptor's
own answers (404 no route, 502/503/504) carry it too, as `false`: they are told apart by their
form (a one-line plain-text body, `_interceptors_own`). One without the header never went
through an interceptor: sent through the API server's service proxy, it is the API server's
own (a `Status` object), else something else answers at that address.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from httpscale.doctor.apps import App, AppIndex
from httpscale.doctor.findings import Finding, Status
from httpscale.doctor.snapshot import ClusterSnapshot, endpoints_of, meta
from httpscale.model.routespecs import Served, serving_order
from httpscale.routing.spec import RouteMatch, RouteSpec
from httpscale.routing.table import RouteTable, normalize_path_prefix

__all__ = ["COLD_START_HEADER", "Probe", "ProbeResult", "judge", "plan_probes"]

COLD_START_HEADER = "X-HTTPScale-Cold-Start"
# Stands in for the label a wildcard host leaves open, and for any host at all.
_WILDCARD_LABEL = "httpscale-doctor"
_ANY_HOST = "httpscale-doctor.invalid"


@dataclass(frozen=True, slots=True)
class Probe:
    subject: str  # "HTTPScaledObject shop/app"
    route: str  # its route key
    host: str
    path: str
    headers: tuple[tuple[str, str], ...]
    at_zero: bool

    @property
    def describe(self) -> str:
        extra = "".join(f" {n}: {v}" for n, v in self.headers)
        return f"GET http://{self.host}{self.path}{extra}"


@dataclass(frozen=True, slots=True)
class ProbeResult:
    status: int | None = None  # None: no answer (see error)
    headers: Mapping[str, str] | None = None
    body: bytes = b""  # its first bytes
    seconds: float = 0.0
    error: str = ""  # transport failure: timeout, refused, ...
    via: str = ""  # "the API server's service proxy" or the --proxy URL


def _request_for(match: RouteMatch) -> tuple[str, str, tuple[tuple[str, str], ...]]:
    hosts = [h for h in match.hosts if h not in ("", "*")]
    exact = [h for h in hosts if not h.startswith("*.")]
    if exact:
        host = exact[0]
    elif hosts:
        host = f"{_WILDCARD_LABEL}.{hosts[0][2:]}"
    else:
        host = _ANY_HOST
    path = normalize_path_prefix(match.path_prefixes[0]) if match.path_prefixes else ""
    headers = tuple((h.name, h.value if h.value is not None else "1") for h in match.headers)
    return host, path or "/", headers


def plan_probes(
    snap: ClusterSnapshot, index: AppIndex, *, wake: bool
) -> tuple[list[Probe], list[Finding]]:
    """The requests to send, and findings for the routes no request is sent to (and why)."""
    served = serving_order(
        Served(a.kind, a.key, str(meta(a.raw).get("creationTimestamp") or ""), a)
        for a in index.served())
    pairs: list[tuple[RouteMatch, RouteSpec]] = []
    for entry in served:
        assert isinstance(entry.value, App)
        pairs += [(m, r) for r in entry.value.routes for m in r.matches]
    table: RouteTable[RouteSpec] = RouteTable.build(pairs)
    probes: list[Probe] = []
    skipped: list[Finding] = []
    for entry in served:
        app = entry.value
        assert isinstance(app, App)
        target = app.targets[0]
        found = endpoints_of(snap, target.namespace, target.service, target.port,
                             target.port_name)
        if isinstance(found, str):
            continue  # the Service check above says what is wrong
        for route in app.routes:
            if route.canned is not None:
                continue  # a static route: answered by the interceptor, no app behind it
            probe = None
            for match in route.matches:
                host, path, headers = _request_for(match)
                if table.lookup(host, path, dict(headers)) is route:
                    probe = Probe(app.subject, route.key, host, path, headers, not found)
                    break
            if probe is None:
                skipped.append(Finding("live.request", app.subject, Status.INFO,
                                       f"route {route.key}: not tried (every request it takes "
                                       "would reach another route first)"))
            elif probe.at_zero and not wake:
                skipped.append(Finding("live.request", app.subject, Status.INFO,
                                       f"{probe.describe}: at zero, not tried (--wake sends it "
                                       "and wakes the app)"))
            else:
                probes.append(probe)
    return probes, skipped


def judge(probe: Probe, result: ProbeResult) -> Finding:
    check, subject = "live.request", probe.subject
    what = f"{probe.describe} via {result.via}"
    if result.status is None:
        return Finding(check, subject, Status.FAIL, f"{what}: no answer: {result.error}",
                       "the interceptor's pods (above), their log, and whether this machine "
                       "reaches them (--proxy URL sends the requests there instead)")
    headers = {k.lower(): v for k, v in (result.headers or {}).items()}
    text = result.body.decode("utf-8", "replace").strip()
    first_line = text.splitlines()[0][:200] if text else ""
    cold = headers.get(COLD_START_HEADER.lower())
    took = f"in {result.seconds:.2f}s"
    own = _interceptors_own(result.status, headers, text)
    if cold is not None and not own:
        woke = " after waking it" if cold == "true" else ""
        if result.status >= 500:
            return Finding(check, subject, Status.WARN,
                           f"{what}: the app answered {result.status}{woke} {took}",
                           "the app's own log says why")
        return Finding(check, subject, Status.OK,
                       f"{what}: {result.status} from the app{woke} {took}")
    api_status = _api_status(text)
    if api_status is not None:
        message = str(api_status.get("message") or "")
        if api_status.get("code") == 403:
            return Finding(check, subject, Status.WARN,
                           f"{what}: not allowed ({message})",
                           "run as someone who may create services/proxy in httpscale's "
                           "namespace, or pass --proxy URL (e.g. a kubectl port-forward to "
                           "the proxy Service)")
        return Finding(check, subject, Status.FAIL,
                       f"{what}: the API server could not pass it on: {message}",
                       "the interceptor proxy Service needs ready pods (above)")
    if result.status == 404:
        return Finding(check, subject, Status.FAIL,
                       f"{what}: 404 from the interceptor: {first_line}",
                       "the interceptors do not serve this route: their /status (admin port "
                       "9090) lists routes and invalid objects; an interceptor started with "
                       "--watch-namespace sees one namespace only")
    if own or result.status in (502, 503, 504):
        return Finding(check, subject, Status.FAIL,
                       f"{what}: {result.status} from the interceptor: {first_line}",
                       _FIXES.get(result.status, _TROUBLESHOOTING))
    return Finding(check, subject, Status.WARN,
                   f"{what}: {result.status} without {COLD_START_HEADER}: not answered "
                   "through an interceptor", "is that address httpscale's interceptor?")


_TROUBLESHOOTING = "docs/kubernetes.md, Troubleshooting, has this answer"
_FIXES = {
    502: "the app's Service sends to a port its pods do not listen on (targetPort), or the "
         "app closes connections: `kubectl get endpointslices -l kubernetes.io/service-name="
         "<service>` and the app's log",
    503: "too many requests held for the route (coldStart.maxPendingRequests): "
         + _TROUBLESHOOTING,
    504: "the app did not become ready, or answer, in time: " + _TROUBLESHOOTING,
}


def _interceptors_own(status: int, headers: Mapping[str, str], text: str) -> bool:
    """Whether an answer is one the interceptor wrote itself (`http1.error_response`): an
    error status, a one-line `text/plain; charset=utf-8` body, and a cold-start header of
    `false`. Its answers carry that header as the app's do, so it alone proves nothing; an app
    answering exactly so would be taken for the interceptor (and still be reported)."""
    return (status in (404, 408, 502, 503, 504)
            and headers.get(COLD_START_HEADER.lower()) == "false"
            and headers.get("content-type", "").lower() == "text/plain; charset=utf-8"
            and "\n" not in text)


def _api_status(text: str) -> Mapping[str, object] | None:
    if not text.startswith("{"):
        return None
    try:
        doc = json.loads(text)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) and doc.get("kind") == "Status" else None
