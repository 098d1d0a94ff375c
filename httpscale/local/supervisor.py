"""Keeps one app's replica processes at the count the autoscaler asks for.

Rules:

* A replica joins the endpoint set only once its readiness probe passes; a replica that is not
  ready within `startup_timeout` is killed and counts as a failure (held requests keep waiting,
  bounded by the interceptor's readiness timeout, while the next attempt starts).
* Going down, a replica leaves the endpoint set first, finishes its in-flight requests
  (bounded by `drain_timeout`), then gets SIGTERM, and SIGKILL after its grace period.
  Starting replicas are stopped before ready ones, the youngest first.
* A replica that exits on its own is logged and replaced after an exponential backoff, which
  resets once a replica has stayed ready for `stable_after` seconds.
* Every replica has one owned lifecycle task (a `TaskSupervisor`, beside the reconcile loop,
  whose death the runner hears of); `close()` stops them all and awaits them, and `kill_all()`
  is the synchronous last resort for crash paths. A lifecycle that fails is logged at once;
  its `finally` already killed the process and freed the slot, so the app recovers.
* `on_running` hears every change of the number of running processes (spawned, not yet
  reaped), whatever their state: what the app costs, for `/history`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from httpscale.local.replica import ProcessSpec, Replica, ReplicaState
from httpscale.routing.spec import Endpoint
from httpscale.runtime import TaskSupervisor, cancel_and_wait

# `cancel_and_wait` lives in httpscale.runtime; re-exported for the autoscaler's import.
__all__ = ["AppSupervisor", "SupervisorSettings", "cancel_and_wait"]

log = logging.getLogger("httpscale.local")

EndpointPublisher = Callable[[frozenset[Endpoint]], None]
Drainer = Callable[[Endpoint], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class SupervisorSettings:
    """Seconds."""

    drain_timeout: float = 30.0  # longest wait for a leaving replica's in-flight requests
    backoff_initial: float = 0.25  # restart delay after the first failure, doubling after each
    backoff_max: float = 10.0  # cap on the restart delay
    stable_after: float = 10.0  # ready this long before exiting: the failure streak resets


class AppSupervisor:
    def __init__(
        self,
        app: str,
        spec: ProcessSpec,
        publish: EndpointPublisher,
        drain: Drainer,
        settings: SupervisorSettings = SupervisorSettings(),
        on_ready: Callable[[Replica], None] | None = None,
        on_running: Callable[[int], None] | None = None,
    ) -> None:
        self.app = app
        self.spec = spec
        self.settings = settings
        self.desired = 0
        # Set by a forced stop: from then on nothing starts, whatever asks for replicas.
        self.killed = False
        self.failures = 0  # consecutive failures (crash, failed start) feeding the backoff
        self.restarts = 0
        self._publish = publish
        self._drain = drain
        self._on_ready = on_ready
        self._on_running = on_running
        self.running = 0  # processes spawned and not yet reaped
        self._replicas: dict[Replica, asyncio.Task[None]] = {}
        self._published: frozenset[Endpoint] = frozenset()
        self._not_before = 0.0  # monotonic time before which no replica may start (backoff)
        self._changed = asyncio.Event()
        self._next_index = 1
        self._task: asyncio.Task[None] | None = None
        self._tasks = TaskSupervisor(log, owner=f"app {app}")

    # -- driven by the autoscaler -------------------------------------------------------------

    def start(self) -> None:
        self._task = self._tasks.spawn(self._reconcile_loop(), f"supervise {self.app}")

    @property
    def task(self) -> asyncio.Task[None] | None:
        """The reconcile loop, so that the runner notices if it dies."""
        return self._task

    def scale_to(self, desired: int) -> None:
        if self.killed:
            # A request held after the kill (the interceptor retries one whose replica died)
            # would otherwise start a replica that the forced stop then waits for.
            return
        self.desired = desired
        self._changed.set()

    @property
    def replicas(self) -> list[Replica]:
        return sorted(self._replicas, key=lambda r: r.index)

    def ready_count(self) -> int:
        return sum(1 for r in self._replicas if r.state is ReplicaState.READY)

    async def close(self) -> None:
        """Stop every replica in order (drain, SIGTERM, SIGKILL) and end the supervisor."""
        self.desired = 0
        self._tasks.begin_shutdown()
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait(task)
        # Replicas stop on their own, in order (drain, SIGTERM, SIGKILL), not by cancellation.
        for replica in self._replicas:
            replica.stop_requested.set()
        tasks = list(self._replicas.values())
        try:
            if tasks:
                await asyncio.wait(tasks)
        finally:
            # Cancelled meanwhile (a forced stop): cancelling the lifecycles kills the processes.
            await self._tasks.close()

    def kill_all(self) -> None:
        """SIGKILL every process group now; for paths where awaiting is no longer possible.
        Nothing starts afterwards (`scale_to` is ignored)."""
        self.killed = True
        self.desired = 0
        for replica in self._replicas:
            replica.stop_requested.set()  # an expected exit: not a crash to restart
            replica.kill_now()

    # -- reconciling --------------------------------------------------------------------------

    async def _reconcile_loop(self) -> None:
        while True:
            self._changed.clear()
            delay = self._reconcile(time.monotonic())
            if delay is None:
                await self._changed.wait()
            else:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._changed.wait()

    def _reconcile(self, now: float) -> float | None:
        """Start or stop replicas; return seconds until a backoff ends, if one is pending."""
        wanted = [r for r in self._replicas if not r.stop_requested.is_set()]
        if len(wanted) > self.desired:
            # Starting replicas serve nothing yet, and the youngest ready ones hold the fewest
            # warm connections: stop those first.
            order = sorted(wanted, key=lambda r: (r.state is ReplicaState.READY, -r.created))
            for replica in order[: len(wanted) - self.desired]:
                replica.stop_requested.set()
        elif len(wanted) < self.desired:
            if now < self._not_before:
                return self._not_before - now
            for _ in range(self.desired - len(wanted)):
                self._launch()
        return None

    def _launch(self) -> None:
        try:
            replica = Replica(self.app, self._next_index, self.spec)
        except OSError as exc:  # no free port (or no file descriptor) right now
            log.warning("app %s: cannot start a replica (%s); retrying", self.app, exc)
            self.failures += 1
            self._not_before = time.monotonic() + self.settings.backoff_max
            self._changed.set()
            return
        self._next_index += 1
        self._replicas[replica] = self._tasks.spawn(
            self._lifecycle(replica), f"replica {replica.name}", critical=False
        )

    def _update_endpoints(self) -> None:
        ready = frozenset(r.endpoint for r in self._replicas if r.state is ReplicaState.READY)
        if ready != self._published:
            self._published = ready
            self._publish(ready)

    def _count_running(self, delta: int) -> None:
        self.running += delta
        if self._on_running is not None:
            self._on_running(self.running)

    def _record_failure(self, replica: Replica, what: str) -> None:
        now = time.monotonic()
        if replica.ready_at is not None and now - replica.ready_at >= self.settings.stable_after:
            self.failures = 0
        self.failures += 1
        self.restarts += 1
        delay = min(
            self.settings.backoff_initial * 2 ** (self.failures - 1), self.settings.backoff_max
        )
        self._not_before = now + delay
        self._changed.set()  # the replacement may start (after the backoff) while this one dies
        log.warning(
            "app %s: replica %s %s; restarting in %.2fs", self.app, replica.name, what, delay
        )

    # -- one replica --------------------------------------------------------------------------

    async def _lifecycle(self, replica: Replica) -> None:
        exit_task: asyncio.Task[int] | None = None
        spawned = False
        try:
            if replica.stop_requested.is_set():
                return  # stopped (killed) before its process was started
            try:
                await replica.spawn()
            except OSError as exc:
                self._record_failure(replica, f"could not start ({exc})")
                return
            spawned = True
            self._count_running(+1)
            log.info(
                "app %s: started %s pid %s port %d",
                self.app,
                replica.name,
                replica.pid,
                replica.port,
            )
            exit_task = asyncio.create_task(replica.wait_exit(), name=f"exit {replica.name}")
            if await self._await_ready(replica, exit_task):
                await _first(exit_task, replica.stop_requested.wait())
            if exit_task.done():
                if not replica.stop_requested.is_set():
                    self._update_endpoints()
                    self._record_failure(
                        replica, f"pid {replica.pid} exited with status {exit_task.result()}"
                    )
                return
            await self._retire(replica)
            log.info(
                "app %s: stopped %s pid %s (status %s)",
                self.app,
                replica.name,
                replica.pid,
                replica.returncode,
            )
        finally:
            # Whatever happened (even cancellation), the process group must not outlive us.
            try:
                if exit_task is not None and not exit_task.done():
                    replica.kill_now()
                    # Reap it (bounded); asyncio.wait neither raises its result nor cancels it.
                    await asyncio.wait([exit_task], timeout=5.0)
            finally:
                replica.state = ReplicaState.EXITED
                del self._replicas[replica]
                self._update_endpoints()
                self._changed.set()
                if spawned:
                    self._count_running(-1)

    async def _await_ready(self, replica: Replica, exit_task: asyncio.Task[int]) -> bool:
        probe = asyncio.create_task(replica.probe_until_ready(), name=f"probe {replica.name}")
        try:
            async with asyncio.timeout(self.spec.startup_timeout):
                await _first(probe, exit_task, replica.stop_requested.wait())
        except TimeoutError:
            pass
        finally:
            await cancel_and_wait(probe)
        ready = probe.done() and not probe.cancelled() and probe.exception() is None
        if ready and not exit_task.done():
            replica.state = ReplicaState.READY
            replica.ready_at = time.monotonic()
            self._update_endpoints()
            log.info(
                "app %s: %s ready after %.2fs",
                self.app,
                replica.name,
                replica.ready_at - replica.created,
            )
            if self._on_ready is not None:
                self._on_ready(replica)
            return True
        if not exit_task.done() and not replica.stop_requested.is_set():
            self._record_failure(
                replica, f"pid {replica.pid} not ready within {self.spec.startup_timeout:g}s"
            )
            replica.stop_requested.set()  # so that the lifecycle kills it below
        return False

    async def _retire(self, replica: Replica) -> None:
        if replica.state is ReplicaState.READY:
            replica.state = ReplicaState.DRAINING
            self._update_endpoints()  # no new requests from here on
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.drain_timeout):
                    await self._drain(replica.endpoint)
        await replica.terminate()


async def _first(*aws: Awaitable[object]) -> None:
    """Wait until the first of `aws` finishes; cancel the wrappers this created for the rest."""
    tasks = [a if isinstance(a, asyncio.Future) else asyncio.ensure_future(a) for a in aws]
    owned = [t for t, a in zip(tasks, aws, strict=True) if t is not a]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        await cancel_and_wait(*owned)
