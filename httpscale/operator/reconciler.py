"""Reconcile one HTTPScaledObject or InterceptorRoute: read the caches, write what differs.

Everything read comes from the informers' snapshots (no GET per reconcile); everything
written is conditional (server-side apply with a resourceVersion precondition, JSON patches
that `test` the resourceVersion, deletes with uid preconditions), so a stale cache can cause
a 409 and a retry, never a lost update. A reconcile of an object that needs nothing costs no
API call at all.

For an HTTPScaledObject, in order:
1. Being deleted: drop KEDA's add-on's finalizer if it carries one (httpscale adds none; the
   ScaledObject goes by garbage collection through its ownerReference).
2. Invalid spec: status Ready=False `InvalidSpec` naming the field; the ScaledObject, if
   any, is left as it was (the app keeps scaling on the last good spec).
3. Annotations as in KEDA's add-on: `orphan-scaledobject: "true"` drops our ownerReference
   from the ScaledObject (kept, for migration); `skip-scaledobject-creation: "true"` deletes
   the one we own (the user writes their own with more triggers).
4. Otherwise the ScaledObject is applied if it differs, unless KEDA is not installed, or a
   ScaledObject of that name exists that this HTTPSO does not own (never overwritten).
5. The target workload, the Service and its port are checked (reported, not required).
6. Status: `targetWorkload`, `targetService`, the Ready condition; an Event when it changes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar

from httpscale.kube.api import APPLY_PATCH, JSON_PATCH, MERGE_PATCH, ApiError, Kube, Obj
from httpscale.kube.cache import Snapshot
from httpscale.kube.resources import (
    HTTPSCALEDOBJECTS,
    INTERCEPTORROUTES,
    SCALEDOBJECTS,
    Resource,
)
from httpscale.model import ConfigError, HTTPScaledObject, InterceptorRoute
from httpscale.operator.events import EventRecorder
from httpscale.operator.scaledobject import (
    ADDON_FINALIZER,
    FIELD_MANAGER,
    ORPHAN_ANNOTATION,
    SKIP_ANNOTATION,
    controller_of,
    desired_scaled_object,
    is_owned_by,
    needs_apply,
    without_owner,
)
from httpscale.operator.status import Problem, ReadyVerdict, Reason, current_ready, status_update
from httpscale.operator.status import verdict as make_verdict
from httpscale.operator.targets import Workloads

__all__ = ["Key", "NotSynced", "Reconciler", "ScaledObjects", "Snapshotter"]

log = logging.getLogger("httpscale.operator.reconciler")

Kind = Literal["HTTPScaledObject", "InterceptorRoute"]
T_co = TypeVar("T_co", covariant=True)


class Snapshotter(Protocol[T_co]):
    """An informer, as far as the reconciler reads it."""

    def snapshot(self) -> Snapshot[T_co]: ...


@dataclass(frozen=True, slots=True)
class Key:
    kind: Kind
    namespace: str
    name: str

    @property
    def cache_key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"


class NotSynced(Exception):
    """A cache this reconcile needs has not synced; its sync re-queues every object."""


class ScaledObjects(Protocol):
    """KEDA's side, as the reconciler sees it (the app switches it as KEDA comes and goes)."""

    @property
    def installed(self) -> bool:
        """Whether the ScaledObject CRD is installed and established."""

    def snapshot(self) -> Snapshot[Obj]:
        """Every ScaledObject (raises NotSynced until the watch has listed them)."""


class Reconciler:
    def __init__(
        self,
        kube: Kube,
        *,
        httpsos: Snapshotter[HTTPScaledObject],
        routes: Snapshotter[InterceptorRoute],
        services: Snapshotter[Obj],
        scaled_objects: ScaledObjects,
        workloads: Workloads,
        events: EventRecorder,
        scaler_address: str,
        on_write: Callable[[], None] = lambda: None,
        route_loss: Callable[[str, str], str | None] = lambda kind, key: None,
    ) -> None:
        self._kube = kube
        self._httpsos = httpsos
        self._routes = routes
        self._services = services
        self._scaled_objects = scaled_objects
        self._workloads = workloads
        self._events = events
        self._scaler = scaler_address
        self._on_write = on_write
        self._route_loss = route_loss  # (kind, key) -> why it loses a route, if it does
        self.writes = 0  # API writes made
        # The resourceVersion each of our writes produced, by (plural, key): its watch event
        # is an echo of what we did, not news, and queues nothing (see `is_echo`).
        self._echoes: dict[tuple[str, str], str] = {}
        # Status last written per (plural, key): (resourceVersion it was written over, the
        # status). Until the cache shows our write, that status, not the cached one, is current.
        self._statuses: dict[tuple[str, str], tuple[str, dict[str, Any]]] = {}

    def is_echo(self, plural: str, key: str, obj: Obj | None) -> bool:
        """Whether `obj` (the cached `key`) is exactly what our last write to it produced."""
        rv = (obj or {}).get("metadata", {}).get("resourceVersion")
        written = self._echoes.pop((plural, key), None)
        return rv is not None and rv == written

    def _wrote(self, resource: Resource, key: str, result: Obj, *, echo: bool = True) -> None:
        self.writes += 1
        self._on_write()
        rv = (result.get("metadata") or {}).get("resourceVersion")
        if rv and echo:
            self._echoes[(resource.plural, key)] = str(rv)
        else:
            self._echoes.pop((resource.plural, key), None)

    async def reconcile(self, key: Key) -> bool:
        """Bring one object's dependents and status in line; True to retry with backoff.

        Raises `ApiError` for a failed write whose retry is all that can be done (the caller
        retries with backoff), `NotSynced` when a needed cache is not ready yet.
        """
        # From here on, this reconcile's view is the newest: a write of ours that comes back
        # through a watch later is news to it if the cache was behind that write now (say,
        # a watch was reconnecting), so earlier writes stop counting as mere echoes.
        for plural in (HTTPSCALEDOBJECTS.plural, INTERCEPTORROUTES.plural, SCALEDOBJECTS.plural):
            self._echoes.pop((plural, key.cache_key), None)
        if key.kind == "HTTPScaledObject":
            return await self._httpso(key)
        return await self._route(key)

    # -- HTTPScaledObject ----------------------------------------------------------------------

    async def _httpso(self, key: Key) -> bool:
        snap = self._httpsos.snapshot()
        raw = snap.raw.get(key.cache_key)
        if raw is None:
            return False  # deleted: its ScaledObject goes by garbage collection
        meta = raw.get("metadata") or {}
        if meta.get("deletionTimestamp"):
            await self._release_keda_finalizer(raw)
            return False
        error = snap.invalid.get(key.cache_key)
        if error is not None:
            await self._report(HTTPSCALEDOBJECTS, raw, make_verdict([_invalid(error)], ""), {})
            return False
        httpso = snap.items[key.cache_key]
        ref = httpso.spec.scale_target_ref
        assert ref is not None  # required for Kubernetes objects
        status_fields = {
            "targetWorkload": f"{ref.api_version}/{ref.kind}/{ref.name}",
            "targetService": f"{ref.service}:{ref.port if ref.port is not None else ref.port_name}",
        }
        annotations = meta.get("annotations") or {}
        problems: list[Problem] = []
        retry = False
        if annotations.get(ORPHAN_ANNOTATION) == "true":
            await self._orphan(raw)
            ok = f"ScaledObject orphaned ({ORPHAN_ANNOTATION})"
        elif annotations.get(SKIP_ANNOTATION) == "true":
            await self._delete_owned(raw)
            ok = f"ScaledObject creation skipped ({SKIP_ANNOTATION})"
        else:
            outcome = await self._ensure_scaled_object(raw, httpso)
            problems += outcome
            retry = any(p.reason is Reason.CREATE_ERROR for p in outcome)
            ok = "ScaledObject created and configured"
        problems += self._route_problems(key)
        problems += await self._target_problems(httpso)
        problems += self._service_problems(
            httpso.namespace, ref.service, ref.port, ref.port_name, "Service"
        )
        failover = httpso.spec.cold_start_timeout_failover_ref
        if failover is not None:
            problems += self._service_problems(
                httpso.namespace, failover.service, failover.port, failover.port_name,
                "failover Service",
            )
        await self._report(HTTPSCALEDOBJECTS, raw, make_verdict(problems, ok), status_fields)
        return retry

    async def _ensure_scaled_object(self, raw: Obj, httpso: HTTPScaledObject) -> list[Problem]:
        if not self._scaled_objects.installed:
            return [Problem(
                Reason.KEDA_NOT_INSTALLED,
                "KEDA is not installed (no CustomResourceDefinition scaledobjects.keda.sh): "
                "install KEDA and this HTTPScaledObject is reconciled at once",
            )]
        actual = self._scaled_objects.snapshot().raw.get(httpso.key)
        uid = str(raw["metadata"]["uid"])
        if actual is not None and not is_owned_by(actual, uid):
            owner = controller_of(actual)
            by = f"controlled by {owner.get('kind')} {owner.get('name')}" if owner else "not owned"
            return [Problem(
                Reason.SCALED_OBJECT_CONFLICT,
                f"ScaledObject {httpso.key} already exists ({by}) and is left alone: delete "
                f"it to have it written for this HTTPScaledObject, or set {SKIP_ANNOTATION}: "
                '"true" to keep your own',
            )]
        desired = desired_scaled_object(raw, httpso, self._scaler)
        if actual is not None and not needs_apply(desired, actual):
            return []
        try:
            await self._apply(desired, actual)
        except ApiError as exc:
            if exc.conflict:
                raise  # our cache was stale (or someone created it meanwhile): look again
            return [Problem(Reason.CREATE_ERROR, f"Failed to create scaled objects: {exc}")]
        verb = "Created" if actual is None else "Updated"
        self._events.emit(raw, "Normal", f"ScaledObject{verb}",
                          f"{verb} ScaledObject {httpso.key}")
        return []

    async def _apply(self, desired: Obj, actual: Obj | None) -> None:
        meta = desired["metadata"]
        body = desired
        if actual is not None:
            # Updating: only the version we looked at (409 otherwise), taking back fields a
            # hand edit changed (force). Creating: without force, so one that appeared in the
            # meantime is a conflict, never silently taken over.
            rv = (actual.get("metadata") or {}).get("resourceVersion")
            body = {**desired, "metadata": {**meta, "resourceVersion": rv}}
        result = await self._kube.request(
            "PATCH",
            SCALEDOBJECTS.path(meta["namespace"], meta["name"]),
            query=[("fieldManager", FIELD_MANAGER), ("force", str(actual is not None).lower())],
            body=body,
            content_type=APPLY_PATCH,
        )
        self._wrote(SCALEDOBJECTS, f"{meta['namespace']}/{meta['name']}", result)

    def _owned_scaled_object(self, raw: Obj) -> Obj | None:
        if not self._scaled_objects.installed:
            return None
        meta = raw["metadata"]
        actual = self._scaled_objects.snapshot().raw.get(f"{meta['namespace']}/{meta['name']}")
        if actual is None or not is_owned_by(actual, str(meta["uid"])):
            return None
        return actual

    async def _orphan(self, raw: Obj) -> None:
        actual = self._owned_scaled_object(raw)
        if actual is None:
            return
        meta = actual["metadata"]
        result = await self._kube.request(
            "PATCH",
            SCALEDOBJECTS.path(meta["namespace"], meta["name"]),
            body=[
                {"op": "test", "path": "/metadata/resourceVersion",
                 "value": meta["resourceVersion"]},
                {"op": "replace", "path": "/metadata/ownerReferences",
                 "value": without_owner(actual, str(raw["metadata"]["uid"]))},
            ],
            content_type=JSON_PATCH,
        )
        self._wrote(SCALEDOBJECTS, f"{meta['namespace']}/{meta['name']}", result)
        self._events.emit(raw, "Normal", "ScaledObjectOrphaned",
                          f"ScaledObject {meta['namespace']}/{meta['name']} no longer owned")

    async def _delete_owned(self, raw: Obj) -> None:
        actual = self._owned_scaled_object(raw)
        if actual is None:
            return
        meta = actual["metadata"]
        try:
            await self._kube.request(
                "DELETE",
                SCALEDOBJECTS.path(meta["namespace"], meta["name"]),
                body={"preconditions": {"uid": meta["uid"],
                                        "resourceVersion": meta["resourceVersion"]}},
            )
        except ApiError as exc:
            if not exc.not_found:
                raise
        self.writes += 1
        self._on_write()
        self._events.emit(raw, "Normal", "ScaledObjectDeleted",
                          f"Deleted ScaledObject {meta['namespace']}/{meta['name']} "
                          f"({SKIP_ANNOTATION})")

    async def _release_keda_finalizer(self, raw: Obj) -> None:
        meta = raw["metadata"]
        finalizers = list(meta.get("finalizers") or ())
        if ADDON_FINALIZER not in finalizers:
            return
        result = await self._kube.request(
            "PATCH",
            HTTPSCALEDOBJECTS.path(meta["namespace"], meta["name"]),
            body=[
                {"op": "test", "path": "/metadata/resourceVersion",
                 "value": meta["resourceVersion"]},
                {"op": "replace", "path": "/metadata/finalizers",
                 "value": [f for f in finalizers if f != ADDON_FINALIZER]},
            ],
            content_type=JSON_PATCH,
        )
        self._wrote(HTTPSCALEDOBJECTS, f"{meta['namespace']}/{meta['name']}", result)

    async def _target_problems(self, httpso: HTTPScaledObject) -> list[Problem]:
        ref = httpso.spec.scale_target_ref
        assert ref is not None
        resolution = await self._workloads.resolve(ref.api_version, ref.kind)
        if resolution.resource is None:
            if resolution.error is not None:
                log.warning("%s: cannot check its target: %s", httpso.key, resolution.error)
                return []
            return [Problem(
                Reason.TARGET_NOT_FOUND,
                f"scaleTargetRef: the cluster has no kind {ref.kind} in {ref.api_version}",
            )]
        exists = self._workloads.exists(resolution.resource, httpso.namespace, ref.name)
        if exists is False:
            return [Problem(
                Reason.TARGET_NOT_FOUND,
                f"scaleTargetRef: {ref.kind} {httpso.namespace}/{ref.name} not found",
            )]
        return []

    # -- InterceptorRoute ----------------------------------------------------------------------

    async def _route(self, key: Key) -> bool:
        snap = self._routes.snapshot()
        raw = snap.raw.get(key.cache_key)
        if raw is None or (raw.get("metadata") or {}).get("deletionTimestamp"):
            return False
        error = snap.invalid.get(key.cache_key)
        if error is not None:
            await self._report(INTERCEPTORROUTES, raw, make_verdict([_invalid(error)], ""), {})
            return False
        route = snap.items[key.cache_key]
        target = route.spec.target
        problems = self._service_problems(
            route.namespace, target.service, target.port, target.port_name, "Service"
        )
        problems += self._route_problems(key)
        fallback = route.spec.cold_start.fallback if route.spec.cold_start else None
        if fallback is not None:
            problems += self._service_problems(
                route.namespace, fallback.name, fallback.port, fallback.port_name,
                "fallback Service",
            )
        await self._report(
            INTERCEPTORROUTES, raw, make_verdict(problems, "InterceptorRoute reconciled"), {}
        )
        return False

    # -- shared --------------------------------------------------------------------------------

    def _route_problems(self, key: Key) -> list[Problem]:
        loss = self._route_loss(key.kind, key.cache_key)
        return [Problem(Reason.ROUTE_CONFLICT, loss)] if loss else []

    def _service_problems(
        self, namespace: str, service: str, port: int | None, port_name: str | None, what: str
    ) -> list[Problem]:
        snap = self._services.snapshot()
        if not snap.synced:
            return []
        svc = snap.raw.get(f"{namespace}/{service}")
        if svc is None:
            return [Problem(Reason.SERVICE_NOT_FOUND, f"{what} {namespace}/{service} not found")]
        ports: list[Mapping[str, Any]] = (svc.get("spec") or {}).get("ports") or []
        if port is not None and not any(p.get("port") == port for p in ports):
            wanted = str(port)
        elif port_name is not None and not any(p.get("name") == port_name for p in ports):
            wanted = repr(port_name)
        else:
            return []
        has = ", ".join(
            f"{p.get('port')}" + (f" ({p['name']})" if p.get("name") else "") for p in ports
        )
        return [Problem(
            Reason.PORT_NOT_FOUND,
            f"{what} {namespace}/{service} has no port {wanted} (it has: {has or 'none'})",
        )]

    async def _report(
        self, resource: Resource, raw: Obj, result: ReadyVerdict, fields: Mapping[str, str]
    ) -> None:
        meta = raw["metadata"]
        key = f"{meta['namespace']}/{meta['name']}"
        written = self._statuses.get((resource.plural, key))
        if written is not None and written[0] == meta.get("resourceVersion"):
            # The cache has not caught up with our last status write: compare with that.
            raw = {**raw, "status": written[1]}
        status = status_update(raw, result, extra=fields)
        if status is None:
            return
        before = current_ready(raw)
        try:
            answer = await self._kube.request(
                "PATCH",
                resource.path(meta["namespace"], meta["name"], "status"),
                body={"status": status},
                content_type=MERGE_PATCH,
            )
        except ApiError as exc:
            if exc.not_found:
                return  # deleted meanwhile: nothing left to report on
            raise
        # A status patch has no precondition: if the object changed under it (a new spec), the
        # answer shows it, and then its watch event is news, not an echo.
        self._wrote(resource, key, answer, echo=_relevant(answer) == _relevant(raw))
        self._statuses[(resource.plural, key)] = (
            str(meta.get("resourceVersion")), answer.get("status") or status
        )
        # An Event when the verdict changes; not for the first "all is well" (the
        # ScaledObjectCreated Event already says it), so a healthy object costs one Event.
        if before is None and result.ready:
            return
        if before is None or before.get("reason") != result.reason.value or (
            before.get("message") != result.message
        ):
            self._events.emit(raw, "Normal" if result.ready else "Warning",
                              result.reason.value, result.message)

    def forget(self, plural: str, key: str) -> None:
        """Drop what is remembered about a deleted object."""
        self._statuses.pop((plural, key), None)
        self._echoes.pop((plural, key), None)


def _relevant(obj: Obj) -> tuple[Any, ...]:
    """What a reconcile of an HTTPSO or IR reads besides its status."""
    meta = obj.get("metadata") or {}
    return (meta.get("generation"), meta.get("labels"), meta.get("annotations"),
            meta.get("deletionTimestamp"), meta.get("finalizers"), obj.get("spec"))


def _invalid(error: Exception) -> Problem:
    if isinstance(error, ConfigError):
        return Problem(Reason.INVALID_SPEC, f"{error.key}: {error.message}")
    return Problem(Reason.INVALID_SPEC, str(error))
