"""Does the workload an HTTPScaledObject scales exist? Answered from watches, not GETs.

`scaleTargetRef` names any scalable kind (Deployment, StatefulSet, an Argo Rollout, ...) by
apiVersion and kind. The first time a kind is referenced it is resolved to its resource
through API discovery, and a metadata-only watch of that resource starts (names and labels,
no specs: the operator needs existence only). An answer is then a dictionary lookup, and a
workload appearing or vanishing re-queues the objects that point at it (`on_change`).

Unknown: while a kind's watch has not synced (or may not list it: RBAC), `exists` answers
None and the operator does not claim the target is missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

from httpscale.kube.api import ApiError, Kube, Obj
from httpscale.kube.cache import Informer, Snapshot
from httpscale.kube.resources import Resource
from httpscale.kube.watch import WatchSettings

__all__ = ["Workloads"]

log = logging.getLogger("httpscale.operator.targets")

# How long "this apiVersion has no such kind" is believed before discovery is asked again
# (a CRD such as Argo Rollouts may be installed after the HTTPSO that uses it).
_NEGATIVE_TTL = 60.0


@dataclass(frozen=True, slots=True)
class Resolution:
    resource: Resource | None  # None: no such kind in that apiVersion
    error: str | None = None  # why, when discovery itself failed


class Workloads:
    def __init__(
        self,
        kube: Kube,
        *,
        namespace: str | None,
        settings: WatchSettings,
        on_change: Callable[[Resource, frozenset[str] | None], None],
    ) -> None:
        """`on_change(resource, keys)`: these workloads changed; keys None: the kind's watch
        has just listed, so every answer about that kind may have changed."""
        self._kube = kube
        self._namespace = namespace
        self._settings = settings
        self._on_change = on_change
        self._resolved: dict[tuple[str, str], tuple[Resolution, float]] = {}
        self._informers: dict[Resource, Informer[Obj]] = {}
        self._tasks: dict[Resource, asyncio.Task[None]] = {}

    async def resolve(self, api_version: str, kind: str) -> Resolution:
        """The resource serving `kind` in `api_version`, via discovery (cached)."""
        loop = asyncio.get_running_loop()
        cached = self._resolved.get((api_version, kind))
        if cached is not None and (cached[0].resource is not None or cached[1] > loop.time()):
            return cached[0]
        group, _, version = api_version.rpartition("/")
        path = f"/apis/{group}/{version}" if group else f"/api/{version}"
        try:
            listing = await self._kube.request("GET", path)
        except ApiError as exc:
            if not exc.not_found:
                # Discovery failing is not "no such kind": do not cache, ask again next time.
                return Resolution(None, f"API discovery of {api_version} failed: {exc}")
            listing = {}
        found = None
        for res in listing.get("resources") or ():
            if res.get("kind") == kind and "/" not in str(res.get("name")):
                found = Resource(group, version, str(res["name"]), kind,
                                 namespaced=bool(res.get("namespaced")))
                break
        resolution = Resolution(found)
        self._resolved[(api_version, kind)] = (resolution, loop.time() + _NEGATIVE_TTL)
        return resolution

    def exists(self, resource: Resource, namespace: str, name: str) -> bool | None:
        """True/False from the resource's watch; None while unknown (and starts the watch)."""
        informer = self._watch(resource)
        if not informer.synced:
            return None
        return f"{namespace}/{name}" in informer.snapshot().raw

    def synced(self, resource: Resource) -> bool:
        informer = self._informers.get(resource)
        return informer is not None and informer.synced

    async def close(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        for task in self._tasks.values():
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        self._informers.clear()

    def _watch(self, resource: Resource) -> Informer[Obj]:
        informer = self._informers.get(resource)
        if informer is None:
            informer = Informer(
                self._kube,
                resource,
                namespace=self._namespace,
                metadata_only=True,
                settings=self._settings,
            )
            informer.subscribe(self._changed(resource))
            self._informers[resource] = informer
            self._tasks[resource] = asyncio.get_running_loop().create_task(
                self._run(informer), name=f"workload watch {resource.plural}"
            )
        return informer

    def _changed(self, resource: Resource) -> Callable[[Snapshot[Obj], frozenset[str]], None]:
        listed = False

        def listener(snapshot: Snapshot[Obj], changed: frozenset[str]) -> None:
            nonlocal listed
            if not listed and snapshot.synced:
                # Whoever asked while the watch was listing got "unknown": now there is an
                # answer for every workload of this kind, missing ones included.
                listed = True
                self._on_change(resource, None)
            else:
                self._on_change(resource, changed)

        return listener

    async def _run(self, informer: Informer[Obj]) -> None:
        # An informer only returns by cancellation; anything else is a bug worth a log line,
        # and the other kinds' watches go on.
        try:
            await informer.run()
        except Exception:
            log.exception("watch of %s failed", informer.name)
