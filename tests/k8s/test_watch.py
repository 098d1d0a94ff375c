"""The shared watch layer (httpscale.kube) against the real kube-apiserver: list + watch,
paging, snapshots to listeners, bad objects skipped, relist on 410 Gone, and surviving an
apiserver that stops and starts while being watched."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from testcluster import Cluster, service_account_token

from httpscale.kube.api import ApiError, Kube, Obj
from httpscale.kube.backoff import BackoffSettings
from httpscale.kube.cache import Informer, Snapshot
from httpscale.kube.resources import DEPLOYMENTS, Resource
from httpscale.kube.watch import WatchSettings
from httpscale.model.errors import ConfigError

pytestmark = pytest.mark.k8s

CONFIGMAPS = Resource("", "v1", "configmaps", "ConfigMap")
NAMESPACES = Resource("", "v1", "namespaces", "Namespace", namespaced=False)
LABEL = "httpscale-test=watch"
# Reconnects quickly: the restart test should not wait out a 30 s backoff step.
FAST = WatchSettings(backoff=BackoffSettings(initial=0.05, maximum=0.5))


@pytest.fixture
async def kube(k8s_cluster: Cluster) -> AsyncIterator[Kube]:
    async with k8s_cluster.client() as api:
        yield Kube(api)


@pytest.fixture
async def namespace(kube: Kube) -> AsyncIterator[str]:
    name = f"watch-{secrets.token_hex(3)}"
    await kube.request("POST", NAMESPACES.path(), body={"metadata": {"name": name}})
    yield name
    await kube.request("DELETE", NAMESPACES.path(name=name))


def _configmap(name: str, **data: str) -> Obj:
    return {"metadata": {"name": name, "labels": {"httpscale-test": "watch"}}, "data": data}


async def _create(kube: Kube, namespace: str, name: str, **data: str) -> Obj:
    return await kube.request("POST", CONFIGMAPS.path(namespace), body=_configmap(name, **data))


async def _patch(kube: Kube, namespace: str, name: str, **data: str) -> Obj:
    return await kube.request(
        "PATCH",
        CONFIGMAPS.path(namespace, name),
        body={"data": data},
        content_type="application/merge-patch+json",
    )


def _parse(obj: Obj) -> dict[str, str]:
    """The items are the ConfigMaps' data; `bad: "yes"` makes one invalid, as a bad HTTPSO is."""
    data: dict[str, str] = obj.get("data") or {}
    if data.get("bad") == "yes":
        raise ConfigError(obj["metadata"]["name"], "data.bad", "refused by the test")
    return data


class Recorder:
    """Every (snapshot, changed keys) a listener got, and a way to await a condition on them."""

    def __init__(self) -> None:
        self.calls: list[tuple[Snapshot[Any], frozenset[str]]] = []
        self._changed = asyncio.Condition()

    def __call__(self, snapshot: Snapshot[Any], changed: frozenset[str]) -> None:
        self.calls.append((snapshot, changed))
        asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def until(self, done: Callable[[Snapshot[Any]], bool], timeout_s: float = 20) -> None:
        async with asyncio.timeout(timeout_s), self._changed:
            await self._changed.wait_for(lambda: bool(self.calls) and done(self.calls[-1][0]))


@contextlib.asynccontextmanager
async def running(informer: Informer[Any]) -> AsyncIterator[Recorder]:
    recorder = Recorder()
    informer.subscribe(recorder)
    task = asyncio.create_task(informer.run(), name=f"informer {informer.name}")
    try:
        async with asyncio.timeout(20):
            await informer.wait_synced()
        await recorder.until(lambda s: s.synced)
        yield recorder
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await asyncio.sleep(0)  # let the recorder's notify tasks finish


async def test_lists_in_pages_then_follows_every_change(kube: Kube, namespace: str) -> None:
    for i in range(5):
        await _create(kube, namespace, f"cm{i}", n=str(i))
    informer: Informer[dict[str, str]] = Informer(
        kube,
        CONFIGMAPS,
        parse=_parse,
        namespace=namespace,
        label_selector=LABEL,
        settings=WatchSettings(page_size=2),  # five objects: three pages
    )
    async with running(informer) as rec:
        first, changed = rec.calls[0]
        assert first.synced
        assert {k: v["n"] for k, v in first.items.items()} == {
            f"{namespace}/cm{i}": str(i) for i in range(5)
        }
        assert changed == frozenset(first.items)
        assert "managedFields" not in first.raw[f"{namespace}/cm0"]["metadata"]

        await _create(kube, namespace, "cm5", n="5")
        await rec.until(lambda s: f"{namespace}/cm5" in s.items)
        await _patch(kube, namespace, "cm0", n="zero")
        await rec.until(lambda s: s.items[f"{namespace}/cm0"]["n"] == "zero")
        await kube.request("DELETE", CONFIGMAPS.path(namespace, "cm1"))
        await rec.until(lambda s: f"{namespace}/cm1" not in s.items)

        final = informer.snapshot()
        assert sorted(final.items) == sorted(f"{namespace}/cm{i}" for i in (0, 2, 3, 4, 5))
        # Each change arrived as its own batch, naming exactly the key that changed.
        changes = [c for _, c in rec.calls[1:]]
        assert frozenset({f"{namespace}/cm5"}) in changes
        assert frozenset({f"{namespace}/cm1"}) in changes
        assert all(len(c) == 1 for c in changes)
        assert informer.reflector.relists == 0


async def test_bad_object_is_reported_and_skipped_and_the_watch_goes_on(
    kube: Kube, namespace: str
) -> None:
    await _create(kube, namespace, "good", n="1")
    await _create(kube, namespace, "bad", bad="yes")
    informer: Informer[dict[str, str]] = Informer(
        kube, CONFIGMAPS, parse=_parse, namespace=namespace, label_selector=LABEL
    )
    async with running(informer) as rec:
        snap = informer.snapshot()
        assert list(snap.items) == [f"{namespace}/good"]
        error = snap.invalid[f"{namespace}/bad"]
        assert isinstance(error, ConfigError) and error.key == "data.bad"
        assert set(snap.raw) == {f"{namespace}/good", f"{namespace}/bad"}

        # Later objects still arrive, and the bad one becomes good when it is fixed.
        await _create(kube, namespace, "later", n="2")
        await rec.until(lambda s: f"{namespace}/later" in s.items)
        await _patch(kube, namespace, "bad", bad="no")
        await rec.until(lambda s: f"{namespace}/bad" in s.items and not s.invalid)


# The listener's failure is the scenario: the cache logs it (an ERROR with the traceback)
# and carries on; that record is expected, and asserted below.
@pytest.mark.expected_errors("a snapshot listener failed")
async def test_a_failing_listener_does_not_starve_the_others(
    kube: Kube, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    def explode(snapshot: Snapshot[Any], changed: frozenset[str]) -> None:
        raise RuntimeError("listener bug")

    informer: Informer[Obj] = Informer(kube, CONFIGMAPS, namespace=namespace, label_selector=LABEL)
    informer.subscribe(explode)
    async with running(informer) as rec:
        await _create(kube, namespace, "x", n="1")
        await rec.until(lambda s: f"{namespace}/x" in s.items)
    failed = [r for r in caplog.records if "a snapshot listener failed" in r.getMessage()]
    assert failed and failed[0].exc_info is not None, "the listener's failure was not reported"


async def test_gone_resource_version_relists(
    k8s_cluster: Cluster, kube: Kube, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _create(kube, namespace, "before", n="1")
    # A restarted apiserver's watch cache starts at the current resourceVersion: older ones
    # are "too old" from then on (a young cluster otherwise still holds its whole history).
    await k8s_cluster.restart_apiserver()
    informer: Informer[Obj] = Informer(kube, CONFIGMAPS, namespace=namespace, label_selector=LABEL)
    # The first list resumes from a resourceVersion the server has long forgotten, as if the
    # process had been paused past the watch history: the real apiserver answers the watch
    # with 410 Gone, and only then must the reflector list again.
    real_list = informer.reflector._list
    lists = 0

    async def list_then_expire() -> str:
        nonlocal lists
        lists += 1
        rv = await real_list()
        return "1" if lists == 1 else rv

    monkeypatch.setattr(informer.reflector, "_list", list_then_expire)
    async with running(informer) as rec:
        await _create(kube, namespace, "after", n="2")
        await rec.until(lambda s: f"{namespace}/after" in s.items)
        assert informer.reflector.relists == 1 and lists == 2
        assert set(informer.snapshot().items) == {f"{namespace}/before", f"{namespace}/after"}


async def test_survives_the_apiserver_stopping_and_starting(
    k8s_cluster: Cluster, kube: Kube, namespace: str
) -> None:
    await _create(kube, namespace, "before", n="1")
    informer: Informer[Obj] = Informer(
        kube, CONFIGMAPS, namespace=namespace, label_selector=LABEL, settings=FAST
    )
    async with running(informer) as rec:
        await k8s_cluster.stop_apiserver()
        async with asyncio.timeout(20):
            await informer.wait_connected(False)
        assert informer.last_error
        await k8s_cluster.start_apiserver()
        async with asyncio.timeout(30):
            await informer.wait_connected(True)
        # Back without anyone's help: changes made now arrive, nothing was lost or doubled.
        await _create(kube, namespace, "after", n="2")
        await rec.until(lambda s: f"{namespace}/after" in s.items)
        await kube.request("DELETE", CONFIGMAPS.path(namespace, "before"))
        await rec.until(lambda s: f"{namespace}/before" not in s.items)
        assert set(informer.snapshot().items) == {f"{namespace}/after"}
        assert informer.reflector.failures >= 1


async def test_all_namespaces_and_metadata_only(kube: Kube, namespace: str) -> None:
    other = f"{namespace}-b"
    await kube.request("POST", NAMESPACES.path(), body={"metadata": {"name": other}})
    try:
        await _create(kube, namespace, "a", n="1")
        await _create(kube, other, "b", n="2")
        everywhere: Informer[Obj] = Informer(kube, CONFIGMAPS, label_selector=LABEL)
        async with running(everywhere) as rec:
            await rec.until(
                lambda s: {f"{namespace}/a", f"{other}/b"} <= set(s.items)
            )
        deployment = {
            "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {
                "replicas": 0,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "c", "image": "none"}]},
                },
            },
        }
        await kube.request("POST", DEPLOYMENTS.path(namespace), body=deployment)
        meta: Informer[Obj] = Informer(kube, DEPLOYMENTS, namespace=namespace, metadata_only=True)
        async with running(meta) as rec:
            obj = meta.snapshot().items[f"{namespace}/web"]
            assert obj["kind"] == "PartialObjectMetadata"
            assert obj["metadata"]["labels"] == {"app": "web"}
            assert "spec" not in obj
            await kube.request("DELETE", DEPLOYMENTS.path(namespace, "web"))
            await rec.until(lambda s: not s.items)
    finally:
        await kube.request("DELETE", NAMESPACES.path(name=other))


async def test_forbidden_watch_retries_until_allowed(
    k8s_cluster: Cluster, kube: Kube, namespace: str
) -> None:
    """An informer that may not list yet (RBAC not applied) backs off and starts by itself
    once it may: no restart needed after fixing RBAC."""
    await kube.request("POST", f"/api/v1/namespaces/{namespace}/serviceaccounts",
                       body={"metadata": {"name": "reader"}})
    token = await service_account_token(kube.api, namespace, "reader")
    await _create(kube, namespace, "cm", n="1")
    async with k8s_cluster.client(token=token) as api:
        informer: Informer[Obj] = Informer(
            Kube(api), CONFIGMAPS, namespace=namespace, label_selector=LABEL, settings=FAST
        )
        task = asyncio.create_task(informer.run())
        try:
            async with asyncio.timeout(20):
                await informer.wait_state(lambda i: i.reflector.failures >= 2)
            assert not informer.synced
            assert informer.last_error is not None and "403" in informer.last_error
            rbac = "/apis/rbac.authorization.k8s.io/v1/namespaces/" + namespace
            await kube.request("POST", rbac + "/roles", body={
                "metadata": {"name": "read-cm"},
                "rules": [{"apiGroups": [""], "resources": ["configmaps"],
                           "verbs": ["list", "watch"]}],
            })
            await kube.request("POST", rbac + "/rolebindings", body={
                "metadata": {"name": "read-cm"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                            "name": "read-cm"},
                "subjects": [{"kind": "ServiceAccount", "name": "reader",
                              "namespace": namespace}],
            })
            async with asyncio.timeout(20):
                await informer.wait_synced()
            assert list(informer.snapshot().items) == [f"{namespace}/cm"]
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def test_api_errors_carry_the_status(kube: Kube, namespace: str) -> None:
    with pytest.raises(ApiError) as got:
        await kube.request("GET", CONFIGMAPS.path(namespace, "missing"))
    assert got.value.not_found and got.value.reason == "NotFound"
    await _create(kube, namespace, "dup", n="1")
    with pytest.raises(ApiError) as got:
        await _create(kube, namespace, "dup", n="1")
    assert got.value.conflict and got.value.reason == "AlreadyExists"
    assert "dup" in got.value.message
