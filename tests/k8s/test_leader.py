"""Leader election (httpscale.kube.leader) against the real kube-apiserver: one leader among
contenders, release on cancel, stepping down when renewal fails (RBAC revoked) or when the Lease
names someone else, and never two leaders at once (leadership intervals, stamped on change)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
import math
import re
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterable
from datetime import UTC, datetime

import pytest
from kubernetes_asyncio import client
from testcluster import Cluster, service_account_token, wait_until

from httpscale.kube.api import ApiError, Kube, Obj
from httpscale.kube.leader import LeaderElectionSettings, LeaderElector
from httpscale.kube.resources import LEASES, Resource

pytestmark = pytest.mark.k8s

NAMESPACES = Resource("", "v1", "namespaces", "Namespace", namespaced=False)
LOCK = "lock"
MICROTIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
LOGGER = "httpscale.kube.leader"


@pytest.fixture
async def api(k8s_cluster: Cluster) -> AsyncIterator[client.ApiClient]:
    async with k8s_cluster.client() as api:
        yield api


@pytest.fixture
async def namespace(api: client.ApiClient) -> AsyncIterator[str]:
    kube = Kube(api)
    name = f"leader-{secrets.token_hex(3)}"
    await kube.request("POST", NAMESPACES.path(), body={"metadata": {"name": name}})
    yield name
    await kube.request("DELETE", NAMESPACES.path(name=name))


def fast(namespace: str, **kw: float) -> LeaderElectionSettings:
    """Short periods so a test takes seconds: lease 2 s, renew deadline 1.5 s, retry 0.2 s."""
    base = LeaderElectionSettings(lease_name=LOCK, lease_namespace=namespace, lease_duration=2,
                                  renew_deadline=1.5, retry_period=0.2)
    return dataclasses.replace(base, **kw)


class Timeline:
    """Every elector's leadership changes, stamped with the monotonic clock as they happen."""

    def __init__(self) -> None:
        self.changes: list[tuple[str, bool, float]] = []

    def on_change(self, name: str) -> Callable[[bool], None]:
        return lambda leading: self.changes.append((name, leading, time.monotonic()))

    def intervals(self) -> list[tuple[float, float, str]]:
        """(start, end, name) of every stretch of leadership; one still open ends at inf."""
        opened: dict[str, float] = {}
        out = []
        for name, leading, at in self.changes:
            if leading:
                assert name not in opened, f"{name} became leader twice without losing it"
                opened[name] = at
            else:
                out.append((opened.pop(name), at, name))
        out += [(start, math.inf, name) for name, start in opened.items()]
        return sorted(out)

    def assert_never_two_leaders(self) -> None:
        spans = self.intervals()
        for (_, end, first), (start, _, second) in itertools.pairwise(spans):
            assert end <= start, f"{first} still led when {second} began: {spans}"

    def started(self, name: str) -> list[float]:
        return [at for who, leading, at in self.changes if who == name and leading]

    def ended(self, name: str) -> list[float]:
        return [at for who, leading, at in self.changes if who == name and not leading]


@contextlib.asynccontextmanager
async def running(*electors: LeaderElector) -> AsyncIterator[dict[str, asyncio.Task[None]]]:
    """Run the electors; at the end cancel them, and each must end by that cancellation."""
    tasks = {e.identity: asyncio.create_task(e.run(), name=f"elector {e.identity}")
             for e in electors}
    try:
        yield tasks
    finally:
        for task in tasks.values():
            task.cancel()
        results = await asyncio.gather(*tasks.values(), return_exceptions=True)
    for name, result in zip(tasks, results, strict=True):
        assert isinstance(result, asyncio.CancelledError), f"{name} ended with {result!r}"


async def first_leader(electors: Iterable[LeaderElector], *, timeout_s: float) -> LeaderElector:
    waiters = {asyncio.create_task(e.wait_until(True)): e for e in electors}
    try:
        async with asyncio.timeout(timeout_s):
            done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)
    return waiters[done.pop()]


async def read_lease(kube: Kube, namespace: str) -> Obj:
    spec: Obj = (await kube.request("GET", LEASES.path(namespace, LOCK)))["spec"]
    return spec


def lease_watch(api: client.ApiClient, namespace: str, done: Callable[[Obj], bool],
                *, timeout_s: float) -> asyncio.Task[dict[str, Obj]]:
    """Watch the Lease (list, then watch) until `done(its spec)`; a task to await."""
    def check(leases: dict[str, Obj]) -> bool:
        return LOCK in leases and done(leases[LOCK])

    return asyncio.create_task(wait_until(
        client.CoordinationV1Api(api).list_namespaced_lease, check, namespace=namespace,
        timeout_s=timeout_s))


def test_settings_are_validated() -> None:
    s = LeaderElectionSettings()
    assert (s.lease_name, s.lease_namespace) == ("httpscale-operator", "httpscale")
    assert (s.lease_duration, s.renew_deadline, s.retry_period) == (15, 10, 2)
    with pytest.raises(ValueError, match="retry_period < renew_deadline < lease_duration"):
        LeaderElectionSettings(lease_duration=10, renew_deadline=10)
    with pytest.raises(ValueError, match="retry_period < renew_deadline < lease_duration"):
        LeaderElectionSettings(retry_period=10)
    with pytest.raises(ValueError, match="renew_deadline must be a positive number"):
        LeaderElectionSettings(renew_deadline=-1)
    with pytest.raises(ValueError, match="lease_duration must be a positive number"):
        LeaderElectionSettings(lease_duration=math.inf)
    with pytest.raises(ValueError, match="lease name and namespace"):
        LeaderElectionSettings(lease_name="")


async def test_one_of_two_leads_and_the_lease_names_it(
        api: client.ApiClient, namespace: str) -> None:
    kube, timeline = Kube(api), Timeline()
    electors = [LeaderElector(kube, name, fast(namespace), on_change=timeline.on_change(name))
                for name in ("a", "b")]
    async with running(*electors) as tasks:
        leader = await first_leader(electors, timeout_s=10)
        (other,) = (e for e in electors if e is not leader)
        # Three renewals by the leader, seen on the Lease itself: the other had time to try.
        renewals: set[str] = set()

        def renewed_thrice(lease: Obj) -> bool:
            if lease["spec"]["holderIdentity"] == leader.identity:
                renewals.add(lease["spec"]["renewTime"])
            return len(renewals) >= 3

        await lease_watch(api, namespace, renewed_thrice, timeout_s=10)
        assert leader.is_leader and not other.is_leader
        assert other.holder == leader.identity
        assert not any(t.done() for t in tasks.values())
        spec = await read_lease(kube, namespace)
    assert spec["holderIdentity"] == leader.identity
    assert spec["leaseDurationSeconds"] == 2
    assert spec["leaseTransitions"] == 0
    assert MICROTIME.match(spec["acquireTime"]) and MICROTIME.match(spec["renewTime"])
    assert spec["renewTime"] > spec["acquireTime"]
    renewed = datetime.strptime(spec["renewTime"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    assert abs((datetime.now(UTC) - renewed).total_seconds()) < 5
    assert [name for _, _, name in timeline.intervals()] == [leader.identity]
    assert timeline.started(other.identity) == []


async def test_cancelled_leader_releases_and_the_standby_takes_over_at_once(
        api: client.ApiClient, namespace: str) -> None:
    kube, timeline = Kube(api), Timeline()
    # A long lease: a takeover by expiry would take >= 5 s, one after the release ~a retry.
    settings = fast(namespace, lease_duration=5, renew_deadline=4)
    a = LeaderElector(kube, "a", settings, on_change=timeline.on_change("a"))
    b = LeaderElector(kube, "b", settings, on_change=timeline.on_change("b"))
    a_task = asyncio.create_task(a.run(), name="elector a")
    async with asyncio.timeout(10):
        await a.wait_until(True)
    async with running(b) as b_task:
        # Two renewals by a after b started (b's first read is immediate): b has seen a hold it.
        renewals: set[str] = set()

        def renewed(lease: Obj) -> bool:
            renewals.add(lease["spec"]["renewTime"])
            return len(renewals) >= 3

        await lease_watch(api, namespace, renewed, timeout_s=10)
        assert b.holder == "a" and not b.is_leader

        cancelled_at = time.monotonic()
        a_task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await a_task
        assert not a.is_leader
        async with asyncio.timeout(10):
            await b.wait_until(True)
        assert not b_task["b"].done()
    (a_end,), (b_start,) = timeline.ended("a"), timeline.started("b")
    timeline.assert_never_two_leaders()
    assert cancelled_at <= a_end <= b_start
    took = b_start - cancelled_at
    print(f"standby took over {took:.3f} s after the leader was cancelled")
    assert took < settings.lease_duration / 2
    spec = await read_lease(kube, namespace)
    assert spec["leaseTransitions"] == 1
    # b's own release at the end of `running`:
    assert spec["holderIdentity"] == "" and spec["leaseDurationSeconds"] == 1


async def test_leader_that_cannot_renew_steps_down_before_anyone_takes_over(
        k8s_cluster: Cluster, api: client.ApiClient, namespace: str,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    kube, timeline = Kube(api), Timeline()
    core, rbac = client.CoreV1Api(api), client.RbacAuthorizationV1Api(api)
    await core.create_namespaced_service_account(namespace, {"metadata": {"name": "elector"}})
    await rbac.create_namespaced_role(namespace, {
        "metadata": {"name": "leases"},
        "rules": [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                   "verbs": ["get", "create", "update"]}],
    })
    await rbac.create_namespaced_role_binding(namespace, {
        "metadata": {"name": "elector"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "leases"},
        "subjects": [{"kind": "ServiceAccount", "name": "elector", "namespace": namespace}],
    })
    settings = fast(namespace)
    token = await service_account_token(api, namespace, "elector")
    async with k8s_cluster.client(token) as as_sa:
        # "a" acts as the ServiceAccount; it retries until the RoleBinding takes effect.
        a = LeaderElector(Kube(as_sa), "a", settings, on_change=timeline.on_change("a"))
        b = LeaderElector(kube, "b", settings, on_change=timeline.on_change("b"))
        async with running(a):
            async with asyncio.timeout(20):
                await a.wait_until(True)
            async with running(b):
                # When the test saw each write of a's: no earlier than its commit, so no
                # earlier than a sent it, which is when a's renew deadline starts.
                a_writes: dict[str, float] = {}

                def b_holds(lease: Obj) -> bool:
                    rv = lease["metadata"]["resourceVersion"]
                    if lease["spec"]["holderIdentity"] == "a" and rv not in a_writes:
                        a_writes[rv] = time.monotonic()
                    return bool(lease["spec"]["holderIdentity"] == "b")

                watch = lease_watch(api, namespace, b_holds, timeout_s=20)
                try:
                    await rbac.delete_namespaced_role_binding("elector", namespace)
                    async with asyncio.timeout(10):
                        await a.wait_until(False)
                        await b.wait_until(True)
                    await watch
                finally:
                    watch.cancel()  # a no-op once it is done
                assert not a.is_leader and b.is_leader
                spec = await read_lease(kube, namespace)
    timeline.assert_never_two_leaders()
    (a_end,), (b_start,) = timeline.ended("a"), timeline.started("b")
    last_a_write = max(a_writes.values())
    print(f"a stepped down {a_end - last_a_write:.3f} s after its last renewal was seen, "
          f"b took over {b_start - last_a_write:.3f} s after it")
    assert a_end - last_a_write <= settings.renew_deadline + 0.3
    # b waited out a whole lease from the last change it could have seen.
    assert b_start - last_a_write >= settings.lease_duration - 0.25
    assert (spec["holderIdentity"], spec["leaseTransitions"]) == ("b", 1)
    # a's 403s: a warning the first time, the many repeats only at debug level.
    a_logs = [r for r in caplog.records if r.name == LOGGER and "(a)" in r.getMessage()
              and "403" in r.getMessage()]
    warnings = [r for r in a_logs if r.levelno == logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert len(a_logs) - len(warnings) >= 3


async def take_over(kube: Kube, namespace: str, holder: str) -> tuple[Obj, float]:
    """Write the Lease as a new holder would, on top of the version read (the elector renews
    meanwhile: a 409 means read again). The Lease as it was, and when the write was sent."""
    for _ in range(50):
        lease = await kube.request("GET", LEASES.path(namespace, LOCK))
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        spec = {**lease["spec"], "holderIdentity": holder, "leaseDurationSeconds": 3,
                "acquireTime": now, "renewTime": now,
                "leaseTransitions": lease["spec"]["leaseTransitions"] + 1}
        sent = time.monotonic()
        try:
            await kube.request("PUT", LEASES.path(namespace, LOCK), body={**lease, "spec": spec})
        except ApiError as exc:
            if not exc.conflict:
                raise
            continue
        return lease, sent
    pytest.fail("lost the race for the Lease 50 times in a row")


async def test_leader_steps_down_at_once_when_the_lease_names_another(
        api: client.ApiClient, namespace: str) -> None:
    kube, timeline = Kube(api), Timeline()
    settings = fast(namespace, lease_duration=3, renew_deadline=2.5, retry_period=0.1)
    a = LeaderElector(kube, "a", settings, on_change=timeline.on_change("a"))
    async with running(a):
        async with asyncio.timeout(10):
            await a.wait_until(True)
        first, written_at = await take_over(kube, namespace, "intruder")
        async with asyncio.timeout(10):
            await a.wait_until(False)
            # The intruder never renews: after a full lease of silence a takes it back.
            await a.wait_until(True)
        spec = await read_lease(kube, namespace)
    down, back = timeline.ended("a")[0], timeline.started("a")[1]
    print(f"stepped down {down - written_at:.3f} s after the Lease named another, "
          f"back after {back - written_at:.3f} s")
    # Not waiting for its renew deadline (>= 2.4 s from here): the record is proof enough.
    assert down - written_at < 1.2
    assert back - written_at >= settings.lease_duration
    assert spec["holderIdentity"] == "a" and spec["leaseTransitions"] == 2
    assert spec["acquireTime"] > first["spec"]["acquireTime"]


async def test_three_contenders_one_leader_at_a_time(
        api: client.ApiClient, namespace: str) -> None:
    kube, timeline = Kube(api), Timeline()
    contenders = [LeaderElector(kube, name, fast(namespace), on_change=timeline.on_change(name))
                  for name in ("a", "b", "c")]
    async with running(*contenders) as tasks:
        order = []
        while contenders:
            leader = await first_leader(contenders, timeout_s=10)
            order.append(leader.identity)
            assert [e.identity for e in contenders if e.is_leader] == [leader.identity]
            assert (await read_lease(kube, namespace))["holderIdentity"] == leader.identity
            tasks[leader.identity].cancel()
            with pytest.raises(asyncio.CancelledError):
                await tasks[leader.identity]
            contenders.remove(leader)
    assert sorted(order) == ["a", "b", "c"]
    timeline.assert_never_two_leaders()
    assert [name for _, _, name in timeline.intervals()] == order
    spec = await read_lease(kube, namespace)
    assert spec["holderIdentity"] == "" and spec["leaseTransitions"] == 2


async def test_unreachable_api_is_retried_and_logged_once(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    connections = 0
    enough = asyncio.Event()

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        if connections >= 30:
            enough.set()
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    cfg = client.Configuration(host=f"http://127.0.0.1:{port}")
    timeline = Timeline()
    try:
        async with client.ApiClient(cfg) as broken:
            elector = LeaderElector(Kube(broken), "a", fast("nowhere", retry_period=0.05),
                                    on_change=timeline.on_change("a"))
            async with running(elector) as tasks:
                async with asyncio.timeout(10):
                    await enough.wait()
                assert not tasks["a"].done()
                assert not elector.is_leader
    finally:
        server.close()
        await server.wait_closed()
    assert timeline.changes == []
    records = [r for r in caplog.records if r.name == LOGGER]
    warnings = [r.getMessage() for r in records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "Unreachable" in warnings[0], warnings
    assert sum(r.levelno == logging.DEBUG for r in records) >= 3
