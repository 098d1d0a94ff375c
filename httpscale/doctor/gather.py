"""Read what the checks look at from a cluster (the I/O shell around `cluster.py`), and send
the live requests `live.py` plans.

Reads are plain GETs and paged LISTs with httpscale's own client (`httpscale.kube.api.Kube`),
a few at a time, each bounded by the client's request timeout. A read the API refuses (403:
the doctor runs with fewer rights than an admin) or does not serve (404: a CRD not installed)
is recorded, not raised: the snapshot then says what is missing and the checks skip what
needs it. An API server that cannot be reached at all ends the run (`Unreachable`).

Live requests go through the API server's service proxy
(`/api/v1/namespaces/<ns>/services/httpscale-interceptor-proxy:<port>/proxy/<path>`), which
passes the request's own Host header on to the interceptor (it does not set
`UseLocationHost`: checked against Kubernetes 1.36's `pkg/registry/core/service`, and by the
tests), or straight to `--proxy URL` when given.
"""

from __future__ import annotations

import asyncio
import datetime
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp

from httpscale.doctor.components import HTTPSCALE_CRDS, PROXY_SERVICE
from httpscale.doctor.keda import KEDA_CRDS, METRICS_API_SERVICE
from httpscale.doctor.live import Probe, ProbeResult
from httpscale.doctor.snapshot import ClusterSnapshot, workload_key
from httpscale.kube.api import ApiError, Kube, Obj
from httpscale.kube.cache import object_key
from httpscale.kube.endpoints import SERVICE_NAME_LABEL, compact_slice
from httpscale.kube.resources import (
    CRDS,
    DEPLOYMENTS,
    ENDPOINTSLICES,
    HTTPSCALEDOBJECTS,
    INTERCEPTORROUTES,
    LEASES,
    SCALEDOBJECTS,
    SERVICES,
    Resource,
)
from httpscale.model import ConfigError, parse_httpso

__all__ = ["Unreachable", "gather", "send_probes"]

PODS = Resource("", "v1", "pods", "Pod")
INGRESSES = Resource("networking.k8s.io", "v1", "ingresses", "Ingress")
HTTPROUTES = Resource("gateway.networking.k8s.io", "v1", "httproutes", "HTTPRoute")
REFERENCEGRANTS = Resource("gateway.networking.k8s.io", "v1beta1", "referencegrants",
                           "ReferenceGrant")
APISERVICES = Resource("apiregistration.k8s.io", "v1", "apiservices", "APIService",
                       namespaced=False)
_PAGE = 500
_PARALLEL = 6  # reads in flight at once: enough to hide latency, gentle on the API server
_BODY_LIMIT = 64 * 1024  # bytes of a live answer kept (the judge reads the first line)
T = TypeVar("T")


class Unreachable(Exception):
    """The API server did not answer at all."""


@dataclass(slots=True)
class _Reader:
    kube: Kube
    unreadable: dict[str, str]
    limit: asyncio.Semaphore

    async def get(self, what: str, path: str) -> Obj | None:
        """One object; None when the API has no such object (or kind)."""
        async with self.limit:
            try:
                return await self.kube.request("GET", path)
            except ApiError as exc:
                self._failed(what, exc)
                return None

    async def list(self, what: str, resource: Resource, namespace: str | None = None,
                   **selectors: str) -> dict[str, Obj] | None:
        """Every object, by key; None when the kind is not served or may not be listed."""
        out: dict[str, Obj] = {}
        query = [(f"{k}Selector", v) for k, v in selectors.items()]
        token = ""
        async with self.limit:
            while True:
                page = [*query, ("limit", str(_PAGE))] + ([("continue", token)] if token else [])
                try:
                    listing = await self.kube.request("GET", resource.path(namespace),
                                                      query=page)
                except ApiError as exc:
                    if exc.gone and token:  # the continue token expired: start over
                        out, token = {}, ""
                        continue
                    self._failed(what, exc)
                    return None
                kind = listing.get("kind", "").removesuffix("List") or resource.kind
                for item in listing.get("items") or ():
                    item.setdefault("kind", kind)  # list items come without it
                    out[object_key(item)] = item
                token = str((listing.get("metadata") or {}).get("continue") or "")
                if not token:
                    return out

    def _failed(self, what: str, exc: ApiError) -> None:
        if exc.status == 0:
            raise Unreachable(str(exc)) from exc
        if not exc.not_found:
            self.unreadable[what] = str(exc)


def _slim_crd(crd: Obj) -> Obj:
    for version in (crd.get("spec") or {}).get("versions") or ():
        version.pop("schema", None)
    return crd


async def gather(kube: Kube, namespace: str, app_namespace: str | None = None) -> ClusterSnapshot:
    """Everything the checks read, from the cluster `kube` talks to."""
    unreadable: dict[str, str] = {}
    r = _Reader(kube, unreadable, asyncio.Semaphore(_PARALLEL))
    gateway = (HTTPROUTES.crd_name, REFERENCEGRANTS.crd_name)
    crd_names = (*KEDA_CRDS, *HTTPSCALE_CRDS, *gateway)
    # Scoped reads cover the apps' namespace and httpscale's own (its Services, the fleet's
    # ScaledObject, ReferenceGrants to its proxy Service).
    scopes: Sequence[str | None] = (
        [None] if app_namespace is None
        else sorted({app_namespace, namespace}))

    async def scoped(what: str, resource: Resource, **sel: str) -> dict[str, Obj] | None:
        parts = await asyncio.gather(*(r.list(what, resource, ns, **sel) for ns in scopes))
        if any(p is None for p in parts):
            return None
        return {k: v for part in parts if part is not None for k, v in part.items()}

    crd_list = await asyncio.gather(*(r.get("customresourcedefinitions", CRDS.path(name=n))
                                      for n in crd_names))
    crds = {n: _slim_crd(c) for n, c in zip(crd_names, crd_list, strict=True) if c is not None}

    async def if_served(what: str, resource: Resource) -> dict[str, Obj] | None:
        return await scoped(what, resource) if resource.crd_name in crds else None

    (api_service, keda_deployments, keda_leases, deployments, pods, services, slices,
     httpsos, routes, scaled_objects, ingresses, http_routes, grants) = await asyncio.gather(
        r.get("apiservices", APISERVICES.path(name=METRICS_API_SERVICE)),
        r.list("keda-deployments", DEPLOYMENTS, field="metadata.name=keda-operator"),
        r.list("leases", LEASES, field="metadata.name=operator.keda.sh"),
        r.list("deployments", DEPLOYMENTS, namespace),
        r.list("pods", PODS, namespace, label="app.kubernetes.io/name=httpscale"),
        scoped("services", SERVICES),
        scoped("endpointslices", ENDPOINTSLICES),
        if_served("httpscaledobjects", HTTPSCALEDOBJECTS),
        if_served("interceptorroutes", INTERCEPTORROUTES),
        if_served("scaledobjects", SCALEDOBJECTS),
        scoped("ingresses", INGRESSES),
        if_served("httproutes", HTTPROUTES),
        if_served("referencegrants", REFERENCEGRANTS),
    )
    workloads, missing = await _workloads(r, (httpsos or {}).values(), scoped)
    by_service: dict[str, list[Obj]] = {}
    for s in (slices or {}).values():
        svc = ((s.get("metadata") or {}).get("labels") or {}).get(SERVICE_NAME_LABEL)
        if svc:
            by_service.setdefault(f"{s['metadata']['namespace']}/{svc}", []).append(
                compact_slice(s))
    return ClusterSnapshot(
        namespace=namespace,
        now=datetime.datetime.now(datetime.UTC),
        app_namespace=app_namespace,
        crds=crds,
        api_services={METRICS_API_SERVICE: api_service} if api_service else {},
        keda_deployments=keda_deployments or {},
        keda_leases=keda_leases or {},
        deployments={k.partition("/")[2]: v for k, v in (deployments or {}).items()},
        pods=pods or {},
        services=services or {},
        endpoint_slices=by_service,
        httpsos=httpsos or {},
        interceptor_routes=routes or {},
        scaled_objects=scaled_objects or {},
        workloads=workloads,
        missing_kinds=missing,
        ingresses=ingresses or {},
        http_routes=http_routes if HTTPROUTES.crd_name in crds else None,
        reference_grants=grants if REFERENCEGRANTS.crd_name in crds else None,
        unreadable=unreadable,
    )


async def _workloads(
    r: _Reader,
    httpsos: Iterable[Obj],
    scoped: Callable[..., Awaitable[dict[str, Obj] | None]],
) -> tuple[dict[str, dict[str, Obj]], dict[str, str]]:
    """Every object of each kind a scaleTargetRef names (found through API discovery)."""
    kinds: set[tuple[str, str]] = set()
    for raw in httpsos:
        try:
            ref = parse_httpso(raw).spec.scale_target_ref
        except ConfigError:
            continue  # reported by the spec check
        if ref is not None:
            kinds.add((ref.api_version, ref.kind))
    workloads: dict[str, dict[str, Obj]] = {}
    missing: dict[str, str] = {}
    for api_version, kind in sorted(kinds):
        key = workload_key(api_version, kind)
        group, _, version = api_version.rpartition("/")
        listing = await r.get(key, f"/apis/{group}/{version}" if group else f"/api/{version}")
        found = next((res for res in (listing or {}).get("resources") or ()
                      if res.get("kind") == kind and "/" not in str(res.get("name"))), None)
        if found is None:
            if key not in r.unreadable:
                missing[key] = f"the cluster has no kind {kind} in {api_version}"
            continue
        resource = Resource(group, version, str(found["name"]), kind,
                            namespaced=bool(found.get("namespaced")))
        objects = await scoped(key, resource)
        if objects is not None:
            workloads[key] = objects
    return workloads, missing


async def send_probes(
    kube: Kube,
    probes: Sequence[Probe],
    *,
    namespace: str,
    port: int,
    proxy: str | None,
    time_limit: float,
    wake_time_limit: float,
) -> list[ProbeResult]:
    """One answer per probe, in order; a few at a time, each within its time limit."""
    limit = asyncio.Semaphore(4)
    session = aiohttp.ClientSession(trust_env=False) if proxy else None
    via = proxy or "the API server's service proxy"

    async def one(probe: Probe) -> ProbeResult:
        headers = {"Host": probe.host, "Accept": "*/*", "User-Agent": "httpscale-doctor",
                   **dict(probe.headers)}
        budget = wake_time_limit if probe.at_zero else time_limit
        started = time.monotonic()
        async with limit:
            try:
                async with asyncio.timeout(budget):
                    if session is not None:
                        assert proxy is not None
                        async with session.get(proxy.rstrip("/") + probe.path, headers=headers,
                                               allow_redirects=False) as resp:
                            body = await resp.content.read(_BODY_LIMIT)
                            return ProbeResult(resp.status, dict(resp.headers), body,
                                               time.monotonic() - started, via=via)
                    return await _through_api_server(kube, probe, headers, namespace, port,
                                                     budget, started, via)
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                error = f"no answer within {budget:g}s" if isinstance(exc, TimeoutError) else (
                    repr(exc))
                return ProbeResult(error=error, seconds=time.monotonic() - started, via=via)

    try:
        return list(await asyncio.gather(*(one(p) for p in probes)))
    finally:
        if session is not None:
            await session.close()


async def _through_api_server(kube: Kube, probe: Probe, headers: Mapping[str, str],
                              namespace: str, port: int, budget: float, started: float,
                              via: str) -> ProbeResult:
    path = (f"/api/v1/namespaces/{namespace}/services/{PROXY_SERVICE}:{port}/proxy"
            f"{probe.path}")
    # Kube.request sets its own headers and decodes JSON; this needs the Host header sent
    # and the answer as it is, so the same ApiClient (its TLS and token) is used directly.
    resp: Any = await kube.api.call_api(
        path, "GET", header_params=dict(headers), auth_settings=["BearerToken"],
        _preload_content=False,
        _request_timeout=aiohttp.ClientTimeout(total=budget))
    try:
        body = await resp.content.read(_BODY_LIMIT)
        return ProbeResult(resp.status, dict(resp.headers), body, time.monotonic() - started,
                           via=via)
    finally:
        resp.release()
