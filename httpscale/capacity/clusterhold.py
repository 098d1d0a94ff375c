"""Holding a workload at N replicas on a cluster: KEDA's `paused-replicas` annotation.

`autoscaling.keda.sh/paused-replicas: "N"` on a ScaledObject makes KEDA scale its target to N
and stop autoscaling it; removing the annotation resumes autoscaling. httpscale's operator
writes ScaledObjects with server-side apply and leaves annotations it does not own alone, so
the annotation stays while the measurement runs. `release()` puts back whatever value was
there before (or removes it), whether the run ended, failed or was interrupted.

The ScaledObject is named (`--scaledobject`) or found: the HTTPScaledObject serving the URL's
host and path (by the interceptor's own routing rules, oldest first) has a ScaledObject of the
same name, written by the operator. Readiness is read from the target's `status` (Deployment,
StatefulSet, or any kind with `replicas`/`readyReplicas`), through a watch of that one object.

Rights needed: get/patch scaledobjects, list httpscaledobjects (unless named), get/watch the
target's kind.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from httpscale.capacity.hold import HoldError
from httpscale.capacity.target import TargetError, TargetURL, route_for
from httpscale.kube.api import MERGE_PATCH, ApiError, Kube, Obj
from httpscale.kube.resources import HTTPSCALEDOBJECTS, SCALEDOBJECTS, Resource
from httpscale.model import HTTPScaledObject
from httpscale.model.errors import ConfigError
from httpscale.model.objects import parse_httpso
from httpscale.routing.spec import HeaderMatch, RouteMatch

__all__ = ["PAUSED_REPLICAS", "ClusterHold", "find_cluster", "workload_ready"]

PAUSED_REPLICAS = "autoscaling.keda.sh/paused-replicas"


def workload_ready(obj: Obj, replicas: int) -> tuple[bool, int]:
    """Whether the workload runs exactly `replicas` ready replicas of its latest spec, and how
    many are ready."""
    meta, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
    ready = int(status.get("readyReplicas") or 0)
    done = (
        int(spec.get("replicas", 1)) == replicas
        and int(status.get("replicas") or 0) == replicas
        and ready == replicas
        and int(status.get("observedGeneration") or 0) >= int(meta.get("generation") or 0)
    )
    return done, ready


class ClusterHold:
    def __init__(self, kube: Kube, namespace: str, name: str, so: Obj) -> None:
        self.kube = kube
        self.namespace = namespace
        self.name = name
        ref = (so.get("spec") or {}).get("scaleTargetRef") or {}
        if not ref.get("name"):
            raise TargetError(f"ScaledObject {namespace}/{name} has no spec.scaleTargetRef.name")
        self.target_name = str(ref["name"])
        self.target_kind = str(ref.get("kind") or "Deployment")
        group, _, version = str(ref.get("apiVersion") or "apps/v1").rpartition("/")
        self.target = Resource(group, version, self.target_kind.lower() + "s", self.target_kind)
        annotations = (so.get("metadata") or {}).get("annotations") or {}
        self._previous: str | None = annotations.get(PAUSED_REPLICAS)
        self._patched = False

    def describe(self) -> str:
        return (
            f"ScaledObject {self.namespace}/{self.name} "
            f"({self.target_kind} {self.target_name})"
        )

    def target_json(self) -> dict[str, Any]:
        return {
            "mode": "cluster",
            "namespace": self.namespace,
            "scaledobject": self.name,
            "workload": {"kind": self.target_kind, "name": self.target_name},
        }

    async def hold(self, replicas: int, ready_within: float) -> None:
        self._patched = True  # even if the answer is lost, release must try
        await self._annotate(str(replicas))
        try:
            async with asyncio.timeout(ready_within):
                await self._wait_ready(replicas)
        except TimeoutError:
            _, ready = workload_ready(await self._get(), replicas)
            raise HoldError(
                f"{self.target_kind} {self.namespace}/{self.target_name}: {ready} of {replicas} "
                f"replicas ready after {ready_within:g}s with {PAUSED_REPLICAS}={replicas} on "
                f"ScaledObject {self.name} (is KEDA running? kubectl describe the workload)"
            ) from None

    async def release(self) -> None:
        if self._patched:
            await self._annotate(self._previous)
            self._patched = False

    async def close(self) -> None:
        await self.kube.close()

    async def _annotate(self, value: str | None) -> None:
        # A merge patch touches this one key; null removes it.
        body = {"metadata": {"annotations": {PAUSED_REPLICAS: value}}}
        try:
            await self.kube.request(
                "PATCH",
                SCALEDOBJECTS.path(self.namespace, self.name),
                body=body,
                content_type=MERGE_PATCH,
            )
        except ApiError as exc:
            raise HoldError(
                f"cannot set {PAUSED_REPLICAS} on ScaledObject {self.namespace}/{self.name}: "
                f"{exc}"
            ) from None

    async def _get(self) -> Obj:
        try:
            return await self.kube.request(
                "GET", self.target.path(self.namespace, self.target_name)
            )
        except ApiError as exc:
            raise HoldError(
                f"cannot read {self.target_kind} {self.namespace}/{self.target_name}: {exc}"
            ) from None

    async def _wait_ready(self, replicas: int) -> None:
        """Watch the one workload object until it is ready at `replicas` (bounded by the
        caller); a watch that ends or fails is resumed from a fresh read."""
        while True:
            obj = await self._get()
            if workload_ready(obj, replicas)[0]:
                return
            version = str((obj.get("metadata") or {}).get("resourceVersion") or "")
            query = [
                ("watch", "1"),
                ("fieldSelector", f"metadata.name={self.target_name}"),
                ("resourceVersion", version),
                ("timeoutSeconds", "60"),
            ]
            started = time.monotonic()
            try:
                async with self.kube.stream(
                    self.target.path(self.namespace), query=query, read_timeout=90.0
                ) as body:
                    async for line in body:
                        event = json.loads(line)
                        if event.get("type") in ("ADDED", "MODIFIED") and workload_ready(
                            event.get("object") or {}, replicas
                        )[0]:
                            return
                        if event.get("type") == "ERROR":
                            break  # typically 410 Gone: read again, watch from there
            except (ApiError, ValueError) as exc:
                if time.monotonic() - started < 1.0:
                    # Failing at once (no rights, no such kind): waiting will not help.
                    raise HoldError(f"cannot watch {self.target_kind}s: {exc}") from None


async def find_cluster(
    kube: Kube, target: TargetURL, namespace: str | None, scaledobject: str | None
) -> ClusterHold:
    """The ScaledObject to pause: `scaledobject` in `namespace`, or the one of the
    HTTPScaledObject serving `target`."""
    if scaledobject is None:
        httpso = await _serving_httpso(kube, target, namespace)
        namespace, scaledobject = httpso.namespace, httpso.name
    namespace = namespace or "default"
    try:
        so = await kube.request("GET", SCALEDOBJECTS.path(namespace, scaledobject))
    except ApiError as exc:
        if exc.not_found:
            raise TargetError(
                f"no ScaledObject {namespace}/{scaledobject} (is httpscale's operator running, "
                "or does the HTTPScaledObject skip it? name yours with --scaledobject)"
            ) from None
        raise TargetError(f"cannot read ScaledObject {namespace}/{scaledobject}: {exc}") from None
    return ClusterHold(kube, namespace, scaledobject, so)


async def _serving_httpso(
    kube: Kube, target: TargetURL, namespace: str | None
) -> HTTPScaledObject:
    try:
        listing = await kube.request("GET", HTTPSCALEDOBJECTS.path(namespace))
    except ApiError as exc:
        raise TargetError(f"cannot list HTTPScaledObjects: {exc}") from None
    items = sorted(
        listing.get("items") or [],
        key=lambda o: str((o.get("metadata") or {}).get("creationTimestamp") or ""),
    )
    routes: list[tuple[RouteMatch, HTTPScaledObject]] = []
    for raw in items:
        try:
            httpso = parse_httpso(raw)
        except ConfigError:
            continue  # the operator reports it; it serves nothing
        spec = httpso.spec
        match = RouteMatch(
            hosts=tuple(h.lower() for h in spec.hosts),
            path_prefixes=spec.path_prefixes,
            headers=tuple(HeaderMatch(h.name.lower(), h.value) for h in spec.headers),
        )
        routes.append((match, httpso))
    found = route_for(routes, target)
    if found is None:
        where = f"namespace {namespace}" if namespace else "any namespace"
        raise TargetError(
            f"no HTTPScaledObject in {where} serves {target.host_header}{target.route_path}; "
            "check the URL, or name the ScaledObject with --scaledobject"
        )
    return found
