"""The operator process: watches, leader election, the reconcile queue and its workers.

Every replica watches (HTTPScaledObjects, InterceptorRoutes, Services, KEDA's CRD, and
ScaledObjects once KEDA is there) so its caches are warm; only the Lease holder runs
workers, so two replicas never both write. Watch snapshots turn into queue keys: a changed
HTTPSO or IR is queued, and so is every object that points at a Service, a workload or a
ScaledObject that changed. The ScaledObject watch starts when KEDA's CRD becomes
Established and stops if it is deleted; either way every HTTPSO is looked at again.

Shutdown, in order: /readyz says 503; the queue closes; reconciles in progress get
`stop_grace`, then are cancelled; the Lease is released (a standby takes over at once);
the event queue gets a last moment to drain (the last reconciles' Events); watches stop;
the admin server goes last.
Every task is owned (a `TaskSupervisor`) and named; one dying makes `wait()` raise, so the
command exits non-zero.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
import time
from collections.abc import Iterable, Mapping
from typing import Any

from httpscale.kube.api import Kube, Obj
from httpscale.kube.cache import Informer, Snapshot, keep_managed_fields_of
from httpscale.kube.leader import LeaderElector
from httpscale.kube.resources import (
    CRDS,
    HTTPSCALEDOBJECTS,
    INTERCEPTORROUTES,
    SCALEDOBJECTS,
    SERVICES,
    Resource,
)
from httpscale.model import (
    HTTPScaledObject,
    InterceptorRoute,
    parse_httpso,
    parse_interceptor_route,
)
from httpscale.operator.admin import OperatorAdmin
from httpscale.operator.conflicts import RouteClaims
from httpscale.operator.events import EventRecorder
from httpscale.operator.metrics import OperatorMetrics
from httpscale.operator.reconciler import Key, Kind, NotSynced, Reconciler
from httpscale.operator.scaledobject import FIELD_MANAGER
from httpscale.operator.settings import OperatorSettings
from httpscale.operator.status import current_ready
from httpscale.operator.targets import Workloads
from httpscale.operator.workqueue import QueueClosed, WorkQueue
from httpscale.runtime import TaskSupervisor, cancel_and_wait

__all__ = ["Operator"]

log = logging.getLogger("httpscale.operator")


def default_identity() -> str:
    """`<hostname>_<random>`: unique per process, readable in the Lease (pod name first)."""
    return f"{socket.gethostname()}_{secrets.token_hex(4)}"


class _Keda:
    """The ScaledObject watch, present while KEDA's CRD is established."""

    def __init__(self) -> None:
        self.established = False
        self.informer: Informer[Obj] | None = None
        self.task: asyncio.Task[None] | None = None

    @property
    def installed(self) -> bool:
        return self.established and self.informer is not None

    def snapshot(self) -> Snapshot[Obj]:
        if self.informer is None or not self.informer.synced:
            raise NotSynced("ScaledObjects not listed yet")
        return self.informer.snapshot()


class Operator:
    def __init__(
        self, settings: OperatorSettings, kube: Kube, *, identity: str | None = None
    ) -> None:
        self.settings = settings
        self.kube = kube
        self.identity = identity or default_identity()
        self.metrics = OperatorMetrics()
        ns = settings.watch_namespace
        watch = settings.watch
        self.httpsos: Informer[HTTPScaledObject] = Informer(
            kube, HTTPSCALEDOBJECTS, parse=parse_httpso, namespace=ns, settings=watch
        )
        self.routes: Informer[InterceptorRoute] = Informer(
            kube, INTERCEPTORROUTES, parse=parse_interceptor_route, namespace=ns, settings=watch
        )
        self.services: Informer[Obj] = Informer(kube, SERVICES, namespace=ns, settings=watch)
        # Only KEDA's CRD: a field selector keeps this watch to one small object, and lets
        # RBAC grant it by resourceName.
        self.crds: Informer[Obj] = Informer(
            kube,
            CRDS,
            field_selector=f"metadata.name={SCALEDOBJECTS.crd_name}",
            settings=watch,
        )
        self.keda = _Keda()
        self.queue: WorkQueue[Key] = WorkQueue(settings.retry)
        self.events = EventRecorder(kube, settings.events, instance=self.identity)
        self.workloads = Workloads(
            kube, namespace=ns, settings=watch, on_change=self._workloads_changed
        )
        self.claims = RouteClaims()
        self.reconciler = Reconciler(
            kube,
            httpsos=self.httpsos,
            routes=self.routes,
            services=self.services,
            scaled_objects=self.keda,
            workloads=self.workloads,
            events=self.events,
            scaler_address=settings.scaler_address,
            on_write=self.metrics.writes.inc,
            route_loss=self.claims.loss,
        )
        self.elector: LeaderElector | None = (
            LeaderElector(kube, self.identity, settings.leader)
            if settings.leader_election
            else None
        )
        self.admin = OperatorAdmin(
            self.metrics,
            healthy=self._health_problem,
            ready=self._ready_problem,
            status=self.status,
            refresh=self._refresh_metrics,
        )
        # Which objects point at which Service ("<ns>/<name>") / workload (("<Kind>.<group>",
        # "<ns>/<name>")), for re-queueing on their changes; kept up to date key by key
        # (`_refs` remembers what each object pointed at).
        self._by_service: dict[str, set[Key]] = {}
        self._by_workload: dict[tuple[str, str], set[Key]] = {}
        self._refs: dict[Key, tuple[list[str], list[tuple[str, str]]]] = {}
        # A cancelled ScaledObject watch stays owned until done: stop() awaits it too.
        self._tasks = TaskSupervisor(log)
        self._leadership: asyncio.Task[None] | None = None
        self._stopping = False
        self._started = False
        self.leading = False

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        await self.admin.start(self.settings.admin.host, self.settings.admin.port)
        self.httpsos.subscribe(self._httpsos_changed)
        self.routes.subscribe(self._routes_changed)
        self.services.subscribe(self._services_changed)
        self.crds.subscribe(self._crds_changed)
        # Shutdown cancels them in reverse: leadership, the election (the Lease is released),
        # the event recorder, then the watches.
        for informer in (self.httpsos, self.routes, self.services, self.crds):
            self._tasks.spawn(informer.run(), f"watch {informer.name}")
        self._tasks.spawn(self.events.run(), "event recorder")
        if self.elector is not None:
            self._tasks.spawn(self.elector.run(), "leader election")
        self._leadership = self._tasks.spawn(self._lead(), "leadership")
        self._started = True
        where = self.settings.watch_namespace or "all namespaces"
        log.info(
            "operator %s watching %s via %s, admin on port %d",
            self.identity, where, self.kube.source or "the API server", self.admin.port,
        )

    async def wait(self) -> None:
        """Return never; raise if an owned task dies (the caller then stops the operator)."""
        await self._tasks.wait()

    async def stop(self) -> None:
        if self._stopping or not self._started:
            return
        self._stopping = True
        self._tasks.begin_shutdown()
        self.queue.close()
        if self._leadership is not None:
            await cancel_and_wait(self._leadership)
        # Events of the last reconciles still go out (bounded), then the watches stop.
        await self.events.flush(self.settings.admin.grace)
        await self._tasks.close()
        await self.workloads.close()
        await self.admin.stop(self.settings.admin.grace)
        log.info("operator stopped")

    # -- leadership and workers ----------------------------------------------------------------

    async def _lead(self) -> None:
        await self._synced()
        log.info(
            "ready: caches synced (%d HTTPScaledObjects, %d InterceptorRoutes, KEDA %s)",
            len(self.httpsos.snapshot()), len(self.routes.snapshot()),
            "installed" if self.keda.installed else "not installed",
        )
        while True:
            if self.elector is not None:
                await self.elector.wait_until(True)
            await self._synced()
            self.leading = True
            self.metrics.leader.set(1)
            log.info("%s leads: reconciling", self.identity)
            self._queue_everything()
            workers = [
                asyncio.create_task(self._work(), name=f"reconcile worker {i}")
                for i in range(self.settings.workers)
            ]
            try:
                if self.elector is not None:
                    await self.elector.wait_until(False)
                    log.warning("%s lost the lease: stopped reconciling", self.identity)
                else:
                    await asyncio.Event().wait()  # no election: lead until stopped
            finally:
                self.leading = False
                self.metrics.leader.set(0)
                await self._stop_workers(workers, graceful=self._stopping)

    async def _stop_workers(self, workers: list[asyncio.Task[None]], *, graceful: bool) -> None:
        # On shutdown a reconcile in progress may finish its writes; on a lost lease it is
        # cancelled at once: the lease is no longer ours to write under.
        if graceful and self.settings.stop_grace > 0:
            _, pending = await asyncio.wait(workers, timeout=self.settings.stop_grace)
        else:
            pending = set(workers)
        for task in pending:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)

    async def _synced(self) -> None:
        for informer in (self.httpsos, self.routes, self.services, self.crds):
            await informer.wait_synced()
        # The CRD listener may not have run yet for the first list: apply it now (idempotent).
        self._crds_changed(self.crds.snapshot(), frozenset())
        if self.keda.informer is not None:
            await self.keda.informer.wait_synced()

    async def _work(self) -> None:
        metrics = self.metrics
        while True:
            try:
                key = await self.queue.get()
            except QueueClosed:
                return
            metrics.queue_depth.set(len(self.queue))
            started = time.perf_counter()
            try:
                retry = await self.reconciler.reconcile(key)
            except asyncio.CancelledError:
                self.queue.done(key)
                self.queue.add(key)  # not finished: whoever leads next looks again
                raise
            except NotSynced:
                result = "waiting"  # the cache's first sync queues every object again
                self.queue.forget(key)
            except Exception as exc:
                result = "error"
                delay = self.queue.retry(key)
                level = logging.WARNING if self.queue.failures(key) <= 3 else logging.DEBUG
                log.log(level, "%s: %s; retrying in %.1fs", key, exc, delay)
            else:
                if retry:
                    result = "retry"
                    self.queue.retry(key)
                else:
                    result = "ok"
                    self.queue.forget(key)
            self.queue.done(key)
            metrics.reconciles.labels(key.kind, result).inc()
            metrics.reconcile_duration.labels(key.kind).observe(time.perf_counter() - started)

    # -- snapshots -> queue --------------------------------------------------------------------

    def _add(self, keys: Iterable[Key]) -> None:
        for key in keys:
            self.queue.add(key)
        self.metrics.queue_depth.set(len(self.queue))

    def _queue_everything(self) -> None:
        self._add(_keys("HTTPScaledObject", self.httpsos.snapshot().raw))
        self._add(_keys("InterceptorRoute", self.routes.snapshot().raw))

    def _httpsos_changed(self, snap: Snapshot[HTTPScaledObject], changed: frozenset[str]) -> None:
        self._changed("HTTPScaledObject", HTTPSCALEDOBJECTS, snap, changed)

    def _routes_changed(self, snap: Snapshot[InterceptorRoute], changed: frozenset[str]) -> None:
        self._changed("InterceptorRoute", INTERCEPTORROUTES, snap, changed)

    def _changed(
        self, kind: Kind, resource: Resource, snap: Snapshot[Any], changed: frozenset[str]
    ) -> None:
        # Who loses a route to whom may change for objects that did not change themselves.
        moved = self.claims.update(
            self.httpsos.snapshot(), self.routes.snapshot(), ((kind, ck) for ck in changed)
        )
        self._add(_keys_of(moved))
        for ck in changed:
            namespace, _, name = ck.partition("/")
            key = Key(kind, namespace, name)
            self._reindex(key, snap.items.get(ck))
            raw = snap.raw.get(ck)
            if raw is None:
                self.reconciler.forget(resource.plural, ck)
            # Our own status write coming back through the watch is not news.
            if not self.reconciler.is_echo(resource.plural, ck, raw):
                self.queue.add(key)
        self.metrics.queue_depth.set(len(self.queue))

    def _services_changed(self, snap: Snapshot[Obj], changed: frozenset[str]) -> None:
        for service in changed:
            self._add(self._by_service.get(service, ()))

    def _workloads_changed(self, resource: Resource, changed: frozenset[str] | None) -> None:
        kind = f"{resource.kind}.{resource.group}"
        if changed is None:  # the kind's first list: everything pointing at that kind
            for (of_kind, _), keys in self._by_workload.items():
                if of_kind == kind:
                    self._add(keys)
            return
        for workload in changed:
            self._add(self._by_workload.get((kind, workload), ()))

    def _scaled_objects_changed(self, snap: Snapshot[Obj], changed: frozenset[str]) -> None:
        # A ScaledObject has its HTTPSO's name; one the operator does not manage is news for
        # an HTTPSO of that name too (a conflict appears or clears). Our own apply coming
        # back is not news.
        httpsos = self.httpsos.snapshot().raw
        self._add(_keys("HTTPScaledObject", (
            k for k in changed
            if k in httpsos and not self.reconciler.is_echo(SCALEDOBJECTS.plural, k,
                                                            snap.raw.get(k))
        )))

    def _reindex(self, key: Key, obj: HTTPScaledObject | InterceptorRoute | None) -> None:
        """Point the Service and workload indexes at what `key` refers to now."""
        old_services, old_workloads = self._refs.pop(key, ([], []))
        for service in old_services:
            _discard(self._by_service, service, key)
        for workload in old_workloads:
            _discard(self._by_workload, workload, key)
        if obj is None:
            return
        ns = key.namespace
        services: list[str] = []
        workloads: list[tuple[str, str]] = []
        if isinstance(obj, HTTPScaledObject):
            ref = obj.spec.scale_target_ref
            if ref is not None:
                services.append(f"{ns}/{ref.service}")
                group = ref.api_version.rpartition("/")[0]
                workloads.append((f"{ref.kind}.{group}", f"{ns}/{ref.name}"))
            failover = obj.spec.cold_start_timeout_failover_ref
            if failover is not None:
                services.append(f"{ns}/{failover.service}")
        else:
            services.append(f"{ns}/{obj.spec.target.service}")
            cold = obj.spec.cold_start
            if cold is not None and cold.fallback is not None:
                services.append(f"{ns}/{cold.fallback.name}")
        for service in services:
            self._by_service.setdefault(service, set()).add(key)
        for workload in workloads:
            self._by_workload.setdefault(workload, set()).add(key)
        self._refs[key] = (services, workloads)

    def _crds_changed(self, snap: Snapshot[Obj], changed: frozenset[str]) -> None:
        crd = snap.raw.get(SCALEDOBJECTS.crd_name)
        established = crd is not None and any(
            c.get("type") == "Established" and c.get("status") == "True"
            for c in (crd.get("status") or {}).get("conditions") or ()
        )
        if established == self.keda.established:
            return
        self.keda.established = established
        if established:
            log.info("KEDA's ScaledObject CRD is established: watching ScaledObjects")
            informer: Informer[Obj] = Informer(
                self.kube,
                SCALEDOBJECTS,
                namespace=self.settings.watch_namespace,
                settings=self.settings.watch,
                transform=keep_managed_fields_of(FIELD_MANAGER),
            )
            informer.subscribe(self._scaled_objects_changed)
            self.keda.informer = informer
            self.keda.task = self._tasks.spawn(self._watch_scaled_objects(informer),
                                               "watch scaledobjects")
        else:
            log.warning("KEDA's ScaledObject CRD is gone: HTTPScaledObjects cannot scale")
            if self.keda.task is not None:
                self.keda.task.cancel()  # still owned by `_tasks` until it is done
            self.keda.informer = None
            self.keda.task = None
            self._add(_keys("HTTPScaledObject", self.httpsos.snapshot().raw))

    async def _watch_scaled_objects(self, informer: Informer[Obj]) -> None:
        async def queue_all_once_listed() -> None:
            # Its first snapshot queues the HTTPSOs whose ScaledObjects exist; the others
            # (reconciles that found it unsynced) must be looked at too.
            await informer.wait_synced()
            self._add(_keys("HTTPScaledObject", self.httpsos.snapshot().raw))

        async with asyncio.TaskGroup() as group:
            group.create_task(queue_all_once_listed(), name="queue after ScaledObject sync")
            await informer.run()

    # -- reporting -----------------------------------------------------------------------------

    def _informers(self) -> list[Informer[Any]]:
        found: list[Informer[Any]] = [self.httpsos, self.routes, self.services, self.crds]
        if self.keda.informer is not None:
            found.append(self.keda.informer)
        return found

    def _health_problem(self) -> str | None:
        if self._tasks.failure is not None:
            return "an operator task died"
        return None

    def _ready_problem(self) -> str | None:
        if self._stopping:
            return "stopping"
        if not self._started:
            return "starting"
        waiting = [i.name for i in self._informers() if not i.synced]
        return f"waiting for the first list of {', '.join(waiting)}" if waiting else None

    @property
    def ready(self) -> bool:
        return self._ready_problem() is None

    def status(self) -> Mapping[str, Any]:
        return {
            "identity": self.identity,
            "leader": self.leading,
            "keda_installed": self.keda.installed,
            "queue": len(self.queue),
            "watches": {
                i.name: {
                    "synced": i.synced,
                    "connected": i.connected,
                    "objects": len(i.snapshot()),
                    "relists": i.reflector.relists,
                    "failures": i.reflector.failures,
                    "last_error": i.last_error,
                }
                for i in self._informers()
            },
            "objects": self._objects_by_reason(),
        }

    def _objects_by_reason(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for kind, informer in (("HTTPScaledObject", self.httpsos),
                               ("InterceptorRoute", self.routes)):
            counts: dict[str, int] = {}
            for obj in informer.snapshot().raw.values():
                ready = current_ready(obj)
                reason = str(ready.get("reason")) if ready else "Pending"
                counts[reason] = counts.get(reason, 0) + 1
            out[kind] = counts
        return out

    def _refresh_metrics(self) -> None:
        m = self.metrics
        m.queue_depth.set(len(self.queue))
        m.events_dropped.set(self.events.dropped)
        for informer in self._informers():
            name = informer.resource.plural
            m.watch_synced.labels(name).set(1 if informer.synced else 0)
            m.watch_relists.labels(name).set(informer.reflector.relists)
            m.watch_failures.labels(name).set(informer.reflector.failures)
        m.objects.clear()
        for kind, counts in self._objects_by_reason().items():
            for reason, n in counts.items():
                m.objects.labels(kind, reason).set(n)


def _discard(index: dict[Any, set[Key]], at: Any, key: Key) -> None:
    keys = index.get(at)
    if keys is not None:
        keys.discard(key)
        if not keys:
            del index[at]


def _keys_of(owners: Iterable[tuple[str, str]]) -> list[Key]:
    return [k for kind, ck in owners for k in _keys(kind, (ck,))]


def _keys(kind: Any, cache_keys: Iterable[str]) -> list[Key]:
    out = []
    for ck in cache_keys:
        namespace, _, name = ck.partition("/")
        out.append(Key(kind, namespace, name))
    return out
