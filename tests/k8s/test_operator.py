"""`httpscale operator` against the real kube-apiserver, with KEDA's own ScaledObject CRD:
HTTPScaledObject -> ScaledObject through create, update, hand edit, delete, KEDA's
annotations, conflicts, invalid objects, missing targets, KEDA coming and going, and
InterceptorRoutes. Each test runs its own operator on its own namespace."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest
from kubetools import (
    cached,
    create_app,
    deployment,
    merge_patch,
    service,
    until,
)
from testcluster import Cluster

from httpscale.kube.api import ApiError, Kube, Obj
from httpscale.kube.backoff import BackoffSettings
from httpscale.kube.resources import (
    CRDS,
    DEPLOYMENTS,
    EVENTS,
    HTTPSCALEDOBJECTS,
    INTERCEPTORROUTES,
    SCALEDOBJECTS,
    SERVICES,
)
from httpscale.kube.watch import WatchSettings
from httpscale.operator.app import Operator
from httpscale.operator.scaledobject import ADDON_FINALIZER, FIELD_MANAGER
from httpscale.operator.settings import AdminSettings, OperatorSettings, ScalerRef

pytestmark = pytest.mark.k8s

SCALER = "httpscale-scaler.httpscale:9091"
QUICK = BackoffSettings(initial=0.05, maximum=1.0)
# The garbage collector starts watching a kind installed by a CRD at its next discovery
# resync (every 30 s): on a fresh cluster, deletion by ownerReference can take that long.
GC_DISCOVERY_S = 60.0


def settings_for(namespace: str, **overrides: Any) -> OperatorSettings:
    values: dict[str, Any] = {
        "watch_namespace": namespace,
        "leader_election": False,
        "scaler": ScalerRef(address=SCALER),
        "retry": QUICK,
        "watch": WatchSettings(backoff=QUICK),
        "admin": AdminSettings(host="127.0.0.1", port=0),
        "stop_grace": 1.0,
        **overrides,
    }
    return OperatorSettings(**values)


@contextlib.asynccontextmanager
async def operator(kube: Kube, namespace: str, **overrides: Any) -> AsyncIterator[Operator]:
    op = Operator(settings_for(namespace, **overrides), kube)
    await op.start()
    try:
        yield op
        assert op._health_problem() is None, "an operator task died"
    finally:
        await op.stop()


def httpso(name: str, **spec: Any) -> Obj:
    body: dict[str, Any] = {
        "hosts": [f"{name}.example.com"],
        "scaleTargetRef": {"name": name, "service": name, "port": 8080},
        "replicas": {"min": 0, "max": 5},
    }
    body.update(spec)
    return {"apiVersion": "http.keda.sh/v1alpha1", "kind": "HTTPScaledObject",
            "metadata": {"name": name}, "spec": body}


async def create(kube: Kube, namespace: str, obj: Obj) -> Obj:
    resource = {"HTTPScaledObject": HTTPSCALEDOBJECTS, "InterceptorRoute": INTERCEPTORROUTES,
                "ScaledObject": SCALEDOBJECTS}[obj["kind"]]
    return await kube.request("POST", resource.path(namespace), body=obj)


def ready(obj: Obj | None) -> Mapping[str, Any]:
    for c in ((obj or {}).get("status") or {}).get("conditions") or ():
        if c.get("type") == "Ready":
            return dict(c)
    return {}


async def until_ready(kube: Kube, namespace: str, name: str, reason: str = "Reconciled",
                      *, kind: Any = HTTPSCALEDOBJECTS, saying: str = "") -> Obj:
    """Until the object's Ready condition has `reason` (and a message containing `saying`)
    for its current generation."""
    key = f"{namespace}/{name}"

    def done(objs: Mapping[str, Obj]) -> bool:
        condition = ready(objs.get(key))
        return (condition.get("reason") == reason and saying in condition.get("message", "")
                and condition.get("observedGeneration") == objs[key]["metadata"]["generation"])

    return (await until(kube, kind, namespace, done))[key]


async def until_scaled_object(kube: Kube, namespace: str, name: str,
                              check: Any = lambda so: True) -> Obj:
    key = f"{namespace}/{name}"
    objs = await until(kube, SCALEDOBJECTS, namespace,
                       lambda o: key in o and check(o[key]))
    return objs[key]


async def test_httpso_becomes_keda_s_scaled_object_and_follows_its_spec(
    kube: Kube, ns: str
) -> None:
    await create_app(kube, ns, "web", ("http", 8080))
    async with operator(kube, ns):
        created = await create(kube, ns, httpso("web", scaledownPeriod=60))
        so = await until_scaled_object(kube, ns, "web")
        assert so["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                                "name": "web"}
        assert so["spec"]["triggers"] == [{
            "type": "external-push",
            "metadata": {"scalerAddress": SCALER, "httpScaledObject": "web"},
        }]
        assert (so["spec"]["minReplicaCount"], so["spec"]["maxReplicaCount"]) == (0, 5)
        assert so["spec"]["cooldownPeriod"] == 60
        # The session's KEDA writes the object back when it takes it up (finalizer), and its
        # Go types then add `scalingModifiers: {}`, sometimes before this read: what the
        # operator applied is the rest.
        advanced = dict(so["spec"]["advanced"])
        assert advanced.pop("scalingModifiers", {}) == {}
        assert advanced == {"restoreToOriginalReplicaCount": True}
        owner = so["metadata"]["ownerReferences"]
        assert owner == [{"apiVersion": "http.keda.sh/v1alpha1", "kind": "HTTPScaledObject",
                          "name": "web", "uid": created["metadata"]["uid"],
                          "controller": True, "blockOwnerDeletion": True}]
        assert any(m["manager"] == FIELD_MANAGER and m["operation"] == "Apply"
                   for m in so["metadata"]["managedFields"])

        obj = await until_ready(kube, ns, "web")
        assert obj["status"]["targetWorkload"] == "apps/v1/Deployment/web"
        assert obj["status"]["targetService"] == "web:8080"
        assert ready(obj)["status"] == "True"
        events = await until(kube, EVENTS, ns, lambda e: any(
            v["reason"] == "ScaledObjectCreated" and v["involvedObject"]["name"] == "web"
            for v in e.values()))
        assert events

        # A spec change reaches the ScaledObject, and observedGeneration follows.
        await merge_patch(kube, HTTPSCALEDOBJECTS, ns, "web", {"spec": {"replicas": {"max": 9}}})
        await until_scaled_object(kube, ns, "web",
                                  lambda so: so["spec"]["maxReplicaCount"] == 9)
        obj = await until_ready(kube, ns, "web")
        assert ready(obj)["observedGeneration"] == 2

        # Labels and annotations are copied, and one dropped from the HTTPSO goes.
        await merge_patch(kube, HTTPSCALEDOBJECTS, ns, "web", {"metadata": {
            "labels": {"team": "shop"}, "annotations": {"owner": "ana"}}})
        await until_scaled_object(kube, ns, "web", lambda so: (
            so["metadata"].get("labels", {}).get("team") == "shop"
            and so["metadata"].get("annotations", {}).get("owner") == "ana"))
        await merge_patch(kube, HTTPSCALEDOBJECTS, ns, "web",
                          {"metadata": {"labels": {"team": None}}})
        await until_scaled_object(kube, ns, "web",
                                  lambda so: "team" not in (so["metadata"].get("labels") or {}))

        # A hand edit of a field the operator sets is put back; what others add stays.
        await merge_patch(kube, SCALEDOBJECTS, ns, "web", {
            "metadata": {"annotations": {"autoscaling.keda.sh/paused-replicas": "1"}},
            "spec": {"maxReplicaCount": 1, "pollingInterval": 99},
        }, field_manager="kubectl-edit")
        restored = await until_scaled_object(kube, ns, "web", lambda so: (
            so["spec"]["maxReplicaCount"] == 9 and so["spec"]["pollingInterval"] == 15))
        assert restored["metadata"]["annotations"]["autoscaling.keda.sh/paused-replicas"] == "1"

        # Deleting the HTTPSO removes the ScaledObject (garbage collection by ownerReference).
        await kube.request("DELETE", HTTPSCALEDOBJECTS.path(ns, "web"))
        await until(kube, SCALEDOBJECTS, ns, lambda o: f"{ns}/web" not in o,
                    timeout_s=GC_DISCOVERY_S)


async def test_steady_state_costs_no_writes(kube: Kube, ns: str) -> None:
    await create_app(kube, ns, "calm", ("http", 8080))
    async with operator(kube, ns) as op:
        await create(kube, ns, httpso("calm"))
        done = await until_ready(kube, ns, "calm")
        so = await until_scaled_object(kube, ns, "calm")
        # Once the operator's own caches hold what it wrote ...
        key = f"{ns}/calm"
        await cached(op.httpsos, lambda o: key in o and o[key]["metadata"]["resourceVersion"]
                     == done["metadata"]["resourceVersion"])
        assert op.keda.informer is not None
        # By content, not resourceVersion: the session's KEDA (started by an earlier module)
        # may write the ScaledObject's status and finalizer after `so` was read, and the cache
        # then never holds `so`'s version (it timed out so under load).
        await cached(op.keda.informer, lambda o: key in o and o[key]["spec"] == so["spec"])
        async with asyncio.timeout(10):
            await op.queue.join()
        writes = op.reconciler.writes
        # Every object looked at again: nothing differs, so nothing is written.
        op._queue_everything()
        async with asyncio.timeout(10):
            await op.queue.join()
        assert op.reconciler.writes == writes


async def test_kedas_annotations_skip_and_orphan(kube: Kube, ns: str) -> None:
    await create_app(kube, ns, "a", ("http", 8080))
    async with operator(kube, ns):
        await create(kube, ns, httpso("a"))
        await until_scaled_object(kube, ns, "a")

        skip = "httpscaledobject.keda.sh/skip-scaledobject-creation"
        await merge_patch(kube, HTTPSCALEDOBJECTS, ns, "a",
                          {"metadata": {"annotations": {skip: "true"}}})
        await until(kube, SCALEDOBJECTS, ns, lambda o: f"{ns}/a" not in o)
        await until_ready(kube, ns, "a", saying=skip)
        await merge_patch(kube, HTTPSCALEDOBJECTS, ns, "a",
                          {"metadata": {"annotations": {skip: None}}})
        await until_scaled_object(kube, ns, "a")

        orphan = "httpscaledobject.keda.sh/orphan-scaledobject"
        await merge_patch(kube, HTTPSCALEDOBJECTS, ns, "a",
                          {"metadata": {"annotations": {orphan: "true"}}})
        so = await until_scaled_object(kube, ns, "a",
                                       lambda so: not so["metadata"].get("ownerReferences"))
        await kube.request("DELETE", HTTPSCALEDOBJECTS.path(ns, "a"))
        await until(kube, HTTPSCALEDOBJECTS, ns, lambda o: f"{ns}/a" not in o)
        # Orphaned: it outlives its HTTPSO.
        left = await kube.request("GET", SCALEDOBJECTS.path(ns, "a"))
        assert left["metadata"]["uid"] == so["metadata"]["uid"]


async def test_a_scaled_object_it_does_not_own_is_never_overwritten(kube: Kube, ns: str) -> None:
    await create_app(kube, ns, "mine", ("http", 8080))
    theirs = await create(kube, ns, {
        "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
        "metadata": {"name": "mine"},
        "spec": {"scaleTargetRef": {"name": "mine"}, "maxReplicaCount": 2,
                 "triggers": [{"type": "cpu", "metadata": {"value": "50"}}]},
    })
    async with operator(kube, ns):
        await create(kube, ns, httpso("mine"))
        obj = await until_ready(kube, ns, "mine", "ScaledObjectConflict")
        assert ready(obj)["status"] == "False"
        assert f"ScaledObject {ns}/mine already exists" in ready(obj)["message"]
        now = await kube.request("GET", SCALEDOBJECTS.path(ns, "mine"))
        # Untouched by the operator: same object, same spec, no owner, no field of its own.
        # (Not the resourceVersion: the session's KEDA, when a module before this one started
        # it, reconciles theirs too, writing its status and finalizer.)
        assert now["metadata"]["uid"] == theirs["metadata"]["uid"]
        assert now["spec"] == theirs["spec"]
        assert not now["metadata"].get("ownerReferences")
        assert all(m["manager"] != FIELD_MANAGER for m in now["metadata"]["managedFields"])
        # Deleting theirs resolves it: the operator writes its own at once.
        await kube.request("DELETE", SCALEDOBJECTS.path(ns, "mine"))
        await until_ready(kube, ns, "mine")
        so = await kube.request("GET", SCALEDOBJECTS.path(ns, "mine"))
        assert so["spec"]["triggers"][0]["type"] == "external-push"


async def test_an_invalid_httpso_is_reported_and_others_go_on(kube: Kube, ns: str) -> None:
    await create_app(kube, ns, "good", ("http", 8080))
    await create_app(kube, ns, "bad", ("http", 8080))
    async with operator(kube, ns) as op:
        # KEDA's schema accepts both metrics at once; its operator, and this one, refuse it.
        await create(kube, ns, httpso("bad", scalingMetric={
            "concurrency": {"targetValue": 10}, "requestRate": {"targetValue": 10}}))
        await create(kube, ns, httpso("good"))
        bad = await until_ready(kube, ns, "bad", "InvalidSpec")
        assert ready(bad)["message"].startswith("spec.scalingMetric.requestRate: ")
        assert ready(bad)["status"] == "False"
        await until_ready(kube, ns, "good")
        await until_scaled_object(kube, ns, "good")
        with pytest.raises(ApiError) as missing:
            await kube.request("GET", SCALEDOBJECTS.path(ns, "bad"))
        assert missing.value.not_found
        assert op.status()["objects"]["HTTPScaledObject"] == {"InvalidSpec": 1, "Reconciled": 1}
        # Fixed: reconciled like any other.
        await merge_patch(kube, HTTPSCALEDOBJECTS, ns, "bad",
                          {"spec": {"scalingMetric": {"requestRate": None}}})
        await until_ready(kube, ns, "bad")
        await until_scaled_object(kube, ns, "bad")


async def test_missing_target_service_and_port_are_reported_until_they_appear(
    kube: Kube, ns: str
) -> None:
    async with operator(kube, ns):
        await create(kube, ns, httpso("late"))
        obj = await until_ready(kube, ns, "late", "TargetNotFound")
        message = ready(obj)["message"]
        assert f"Deployment {ns}/late not found" in message
        assert f"Service {ns}/late not found" in message
        # The ScaledObject is written anyway: KEDA waits for the target itself.
        await until_scaled_object(kube, ns, "late")
        await kube.request("POST", DEPLOYMENTS.path(ns), body=deployment("late"))
        await until_ready(kube, ns, "late", "ServiceNotFound")
        await kube.request("POST", SERVICES.path(ns), body=service("late", ("web", 80)))
        obj = await until_ready(kube, ns, "late", "PortNotFound")
        assert "has no port 8080 (it has: 80 (web))" in ready(obj)["message"]
        await merge_patch(kube, HTTPSCALEDOBJECTS, ns, "late", {"spec": {"scaleTargetRef": {
            "port": None, "portName": "web"}}})
        obj = await until_ready(kube, ns, "late")
        assert obj["status"]["targetService"] == "late:web"


async def test_any_workload_kind_is_checked_through_discovery(kube: Kube, ns: str) -> None:
    await kube.request("POST", SERVICES.path(ns), body=service("db", ("http", 8080)))
    async with operator(kube, ns):
        await create(kube, ns, httpso("db", scaleTargetRef={
            "name": "db", "kind": "StatefulSet", "apiVersion": "apps/v1",
            "service": "db", "port": 8080}))
        await create(kube, ns, httpso("canary", scaleTargetRef={
            "name": "canary", "kind": "Rollout", "apiVersion": "argoproj.io/v1alpha1",
            "service": "db", "port": 8080}))
        await until_ready(kube, ns, "db", "TargetNotFound", saying=f"StatefulSet {ns}/db")
        await until_ready(kube, ns, "canary", "TargetNotFound",
                          saying="the cluster has no kind Rollout in argoproj.io/v1alpha1")
        so = await until_scaled_object(kube, ns, "db")
        assert so["spec"]["scaleTargetRef"]["kind"] == "StatefulSet"


async def test_legacy_fields_and_kedas_finalizer(kube: Kube, ns: str) -> None:
    await create_app(kube, ns, "old", ("http", 8080))
    legacy = {
        "apiVersion": "http.keda.sh/v1alpha1", "kind": "HTTPScaledObject",
        "metadata": {"name": "old", "finalizers": [ADDON_FINALIZER]},
        "spec": {"host": "old.example.com", "targetPendingRequests": 50,
                 "scaleTargetRef": {"deployment": "old", "service": "old", "port": 8080}},
    }
    async with operator(kube, ns):
        await create(kube, ns, legacy)
        so = await until_scaled_object(kube, ns, "old")
        assert so["spec"]["scaleTargetRef"]["name"] == "old"
        await until_ready(kube, ns, "old")
        # Migrated from KEDA's add-on: its finalizer would block deletion forever.
        await kube.request("DELETE", HTTPSCALEDOBJECTS.path(ns, "old"))
        await until(kube, HTTPSCALEDOBJECTS, ns, lambda o: f"{ns}/old" not in o)


async def test_moving_over_from_kedas_add_on_adopts_its_scaled_object(
    kube: Kube, ns: str
) -> None:
    """The state a user has when KEDA's add-on ran before: the HTTPSO with the add-on's
    finalizer and the ScaledObject the add-on's operator wrote (controlled by the HTTPSO,
    pointing at the add-on's scaler, written by another field manager). httpscale's operator
    takes that object over in place (same uid: KEDA keeps its HPA and state), points it at
    httpscale's scaler, and keeps fields it does not set (a user's pause annotation)."""
    await create_app(kube, ns, "legacy", ("http", 8080))
    so_obj = await create(kube, ns, {**httpso("legacy"),
                                     "metadata": {"name": "legacy",
                                                  "finalizers": [ADDON_FINALIZER]}})
    addon = await kube.request("POST", SCALEDOBJECTS.path(ns), query=[
        ("fieldManager", "keda-add-ons-http-operator")], body={
        "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
        "metadata": {"name": "legacy",
                     "annotations": {"autoscaling.keda.sh/paused-replicas": "1"},
                     "ownerReferences": [{
                         "apiVersion": "http.keda.sh/v1alpha1", "kind": "HTTPScaledObject",
                         "name": "legacy", "uid": so_obj["metadata"]["uid"],
                         "controller": True, "blockOwnerDeletion": True}]},
        "spec": {"scaleTargetRef": {"name": "legacy"}, "minReplicaCount": 0,
                 "maxReplicaCount": 5, "pollingInterval": 15,
                 "triggers": [{"type": "external-push", "metadata": {
                     "scalerAddress": "keda-add-ons-http-external-scaler.keda:9090",
                     "httpScaledObject": "legacy"}}]}})
    async with operator(kube, ns):
        so = await until_scaled_object(kube, ns, "legacy", lambda o: o["spec"]["triggers"][0][
            "metadata"].get("scalerAddress") == SCALER)
        await until_ready(kube, ns, "legacy")
        assert so["metadata"]["uid"] == addon["metadata"]["uid"]  # adopted, not replaced
        assert so["metadata"]["annotations"]["autoscaling.keda.sh/paused-replicas"] == "1"
        managers = {m["manager"] for m in so["metadata"]["managedFields"]}
        assert FIELD_MANAGER in managers
        # Deleting the HTTPSO still completes: the add-on's finalizer is released.
        await kube.request("DELETE", HTTPSCALEDOBJECTS.path(ns, "legacy"))
        await until(kube, HTTPSCALEDOBJECTS, ns, lambda o: f"{ns}/legacy" not in o)


async def test_interceptor_routes_get_a_ready_condition(kube: Kube, ns: str) -> None:
    await create_app(kube, ns, "api", ("http", 8080))
    route = {
        "apiVersion": "http.keda.sh/v1beta1", "kind": "InterceptorRoute",
        "metadata": {"name": "api"},
        "spec": {"target": {"service": "api", "port": 8080},
                 "rules": [{"hosts": ["api.example.com"], "paths": [{"value": "/v1"}]}],
                 "scalingMetric": {"concurrency": {"targetValue": 10}}},
    }
    async with operator(kube, ns):
        await create(kube, ns, route)
        obj = await until_ready(kube, ns, "api", kind=INTERCEPTORROUTES)
        assert ready(obj)["status"] == "True"
        with pytest.raises(ApiError):  # an IR has no ScaledObject of ours: the user writes it
            await kube.request("GET", SCALEDOBJECTS.path(ns, "api"))
        await merge_patch(kube, INTERCEPTORROUTES, ns, "api",
                          {"spec": {"target": {"service": "nowhere"}}})
        obj = await until_ready(kube, ns, "api", "ServiceNotFound", kind=INTERCEPTORROUTES)
        assert f"Service {ns}/nowhere not found" in ready(obj)["message"]
        # A rule the schema cannot state (header names differing only in case): the model's.
        await merge_patch(kube, INTERCEPTORROUTES, ns, "api", {"spec": {
            "target": {"service": "api"},
            "rules": [{"headers": [{"name": "X-Tenant", "value": "a"},
                                   {"name": "x-tenant", "value": "b"}]}]}})
        obj = await until_ready(kube, ns, "api", "InvalidSpec", kind=INTERCEPTORROUTES)
        assert ready(obj)["message"].startswith("spec.rules[0].headers[1]")


async def test_keda_not_installed_then_installed(
    k8s_cluster: Cluster, kube: Kube, ns: str, keda_crds: list[str]
) -> None:
    """KEDA's CRD removed (this deletes every ScaledObject on the cluster: the k8s tests run
    one at a time), then installed again: the HTTPSO says so, then is reconciled at once."""
    from testcluster import install_keda_crds

    await create_app(kube, ns, "k", ("http", 8080))
    async with operator(kube, ns) as op:
        await create(kube, ns, httpso("k"))
        await until_scaled_object(kube, ns, "k")
        try:
            await kube.request("DELETE", CRDS.path(name=SCALEDOBJECTS.crd_name))
            obj = await until_ready(kube, ns, "k", "KEDANotInstalled")
            assert "install KEDA" in ready(obj)["message"]
            assert not op.keda.installed
        finally:
            await until(kube, CRDS, None, lambda o: SCALEDOBJECTS.crd_name not in o,
                        field_selector=f"metadata.name={SCALEDOBJECTS.crd_name}")
            async with k8s_cluster.client() as api:
                await install_keda_crds(api)
        await until_ready(kube, ns, "k")
        await until_scaled_object(kube, ns, "k")


async def test_survives_an_apiserver_restart(k8s_cluster: Cluster, kube: Kube, ns: str) -> None:
    await create_app(kube, ns, "r", ("http", 8080))
    async with operator(kube, ns) as op:
        await create(kube, ns, httpso("r"))
        await until_scaled_object(kube, ns, "r")
        await k8s_cluster.restart_apiserver()
        await create(kube, ns, httpso("r2", scaleTargetRef={"name": "r", "service": "r",
                                                           "port": 8080}))
        await until_scaled_object(kube, ns, "r2")
        await until_ready(kube, ns, "r2")
        assert op.ready


async def test_a_route_conflict_is_reported_on_the_loser_and_clears(kube: Kube, ns: str) -> None:
    await create_app(kube, ns, "first", ("http", 8080))
    await create_app(kube, ns, "second", ("http", 8080))
    async with operator(kube, ns):
        await create(kube, ns, httpso("first", hosts=["shop.test"]))
        await until_ready(kube, ns, "first")
        await create(kube, ns, httpso("second", hosts=["shop.test", "second.test"]))
        obj = await until_ready(kube, ns, "second", "RouteConflict")
        assert ready(obj)["message"] == (
            f"route conflict: host shop.test path / goes to the older HTTPScaledObject "
            f"{ns}/first")
        # The older one keeps it, and is told nothing.
        first = await until_ready(kube, ns, "first")
        assert ready(first)["reason"] == "Reconciled"
        # The winner goes: the loser is reconciled again without being touched itself.
        await kube.request("DELETE", HTTPSCALEDOBJECTS.path(ns, "first"))
        await until_ready(kube, ns, "second")
        # An InterceptorRoute of the same name takes an HTTPScaledObject's place.
        await create(kube, ns, {
            "apiVersion": "http.keda.sh/v1beta1", "kind": "InterceptorRoute",
            "metadata": {"name": "second"},
            "spec": {"target": {"service": "second", "port": 8080},
                     "scalingMetric": {"concurrency": {"targetValue": 5}}}})
        await until_ready(kube, ns, "second", "RouteConflict",
                          saying=f"the InterceptorRoute {ns}/second takes its place")
