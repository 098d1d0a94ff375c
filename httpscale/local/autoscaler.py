"""The local autoscaler: the I/O shell around `Policy` and `AppSupervisor`, one per command app.

Two inputs drive it:

* the interceptor's wake signal (a request held for an app at zero) starts a replica at once,
  synchronously on the request path, without waiting for the next sample;
* a periodic sample of the interceptor's per-route counters (every `sync_interval` seconds, the
  HPA's sync loop in small) feeds the policy for scaling between 1 and N and back to zero.
  Sampling is the one periodic loop here: the metric is a rate over time, not an event.

Each change of the desired count is logged once (app, from -> to, why); the first replica ready
after a wake from zero logs the cold-start time.

A pin (`pin(n)`, from the admin server's `POST /apps/{name}/pin`) holds an app at exactly n
replicas: the policy still sees every sample and wake, so its memory (last activity, the
scale-down window) is current when the pin is released, but its decisions are not applied.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from httpscale.interceptor.api import InterceptorControl
from httpscale.local.history import AppHistory, HistoryJSON
from httpscale.local.plan import AppPlan
from httpscale.local.policy import Policy, ScaleDecision
from httpscale.local.replica import Replica
from httpscale.local.supervisor import AppSupervisor, SupervisorSettings, cancel_and_wait
from httpscale.routing.spec import Endpoint
from httpscale.scaling.rate import RequestRate

__all__ = ["AppScaler", "AutoscalerSettings", "LocalAutoscaler"]

log = logging.getLogger("httpscale.local")

_RATE_SOURCE = "local"  # one interceptor, so one counter source


@dataclass(frozen=True, slots=True)
class AutoscalerSettings:
    sync_interval: float = 0.5  # seconds between metric samples
    supervisor: SupervisorSettings = field(default_factory=SupervisorSettings)


@dataclass(frozen=True, slots=True)
class ScaleEvent:
    at: float  # monotonic
    wall: float  # time.time(), for humans
    from_replicas: int
    to_replicas: int
    reason: str


class AppScaler:
    """Policy + supervisor + rate for one command app."""

    def __init__(
        self, plan: AppPlan, control: InterceptorControl, settings: AutoscalerSettings
    ) -> None:
        assert plan.process is not None
        self.plan = plan
        self.control = control
        self.policy = Policy(plan.scaling, time.monotonic())
        self.rate = RequestRate(plan.rate_window, plan.rate_granularity)
        self.supervisor = AppSupervisor(
            plan.name,
            plan.process,
            publish=self._publish,
            drain=self._drain,
            settings=settings.supervisor,
            on_ready=self._on_ready,
            on_running=self._on_running,
        )
        self.events: deque[ScaleEvent] = deque(maxlen=20)
        self.history = AppHistory()
        self.pinned: int | None = None
        self.last_cold_start: float | None = None
        self._cold_since: float | None = None  # wake time while waiting for the first ready
        # (monotonic, wall) when a request was first held with no ready replica, until one is.
        self._held_since: tuple[float, float] | None = None
        self._ready_waiters: set[asyncio.Future[None]] = set()
        self._last_count: int | None = None
        self._concurrency = 0
        self._held = 0

    @property
    def key(self) -> str:
        return self.plan.key

    def wake(self) -> None:
        now = time.monotonic()
        if self._held_since is None and self.supervisor.ready_count() == 0:
            self._held_since = (now, time.time())
        decision = self.policy.wake(now, self.supervisor.desired)
        if decision is not None and self.pinned is None:
            self._apply(now, decision)

    def pin(self, replicas: int) -> None:
        """Hold the app at exactly `replicas` until `unpin`, whatever its load."""
        self.pinned = replicas
        self._set_desired(time.monotonic(), replicas, f"pinned at {replicas}")

    def unpin(self) -> None:
        if self.pinned is None:
            return
        self.pinned = None
        log.info("scale %s: pin released", self.plan.name)
        self.sample(time.monotonic())  # the policy takes over now, not one interval later

    async def wait_ready(self, replicas: int) -> None:
        """Return once exactly `replicas` replicas are ready (woken by endpoint changes)."""
        loop = asyncio.get_running_loop()
        while self.supervisor.ready_count() != replicas:
            waiter = loop.create_future()
            self._ready_waiters.add(waiter)
            try:
                await waiter
            finally:
                self._ready_waiters.discard(waiter)

    def sample(self, now: float) -> None:
        stats = self.control.route_stats(self.key)
        if stats is None:
            return
        count = stats["request_count"]
        self._concurrency = stats["concurrency"]
        self._held = stats["held"]
        self.rate.observe(_RATE_SOURCE, count, now)
        new_requests = self._last_count is not None and count != self._last_count
        self._last_count = count
        active = self._concurrency > 0 or new_requests
        metric = float(self._concurrency)
        if self.plan.metric == "requestRate":
            metric = self.rate.rate(now)
        decision = self.policy.evaluate(now, self.supervisor.desired, metric, active)
        if self.pinned is None:
            self._apply(now, decision)

    def _apply(self, now: float, decision: ScaleDecision) -> None:
        if decision.desired == 0:
            # Idle for a whole scaledownPeriod: any request held meanwhile timed out unserved.
            self._held_since = None
        self._set_desired(now, decision.desired, decision.reason, wake=True)

    def _set_desired(self, now: float, desired: int, reason: str, wake: bool = False) -> None:
        current = self.supervisor.desired
        if desired == current:
            return
        self.events.append(ScaleEvent(now, time.time(), current, desired, reason))
        if current == 0 and wake:
            self._cold_since = now  # the policy woke it: log the cold start (not for a pin)
        elif desired == 0:
            self._cold_since = None
        log.info("scale %s: %d -> %d (%s)", self.plan.name, current, desired, reason)
        self.supervisor.scale_to(desired)

    def _publish(self, endpoints: frozenset[Endpoint]) -> None:
        self.control.set_endpoints(self.key, endpoints)
        for waiter in self._ready_waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _on_running(self, count: int) -> None:
        self.history.running(time.time(), count)

    async def _drain(self, endpoint: Endpoint) -> None:
        await self.control.wait_endpoint_idle(self.key, endpoint)

    def _on_ready(self, replica: Replica) -> None:
        if self._held_since is not None:
            assert replica.ready_at is not None
            held_at, held_wall = self._held_since
            self._held_since = None
            self.history.cold_start(held_wall, max(0.0, replica.ready_at - held_at))
        if self._cold_since is not None:
            assert replica.ready_at is not None
            self.last_cold_start = replica.ready_at - self._cold_since
            self._cold_since = None
            log.info(
                "scale %s: cold start took %.2fs (%s ready on port %d)",
                self.plan.name,
                self.last_cold_start,
                replica.name,
                replica.port,
            )

    def status(self, now: float) -> dict[str, Any]:
        last = self.events[-1] if self.events else None
        return {
            "route": self.key,
            "kind": "command",
            "metric": self.plan.metric,
            "target": self.plan.scaling.target,
            "min": self.plan.scaling.min_replicas,
            "max": self.plan.scaling.max_replicas,
            "desired": self.supervisor.desired,
            "ready": self.supervisor.ready_count(),
            "concurrency": self._concurrency,
            "held": self._held,
            "rate": round(self.rate.rate(now), 3),
            "restarts": self.supervisor.restarts,
            "idle_seconds": round(now - self.policy.last_active, 1),
            "scaledown_period": self.plan.scaling.scaledown_period,
            "pinned": self.pinned,
            "last_cold_start": (
                None if self.last_cold_start is None else round(self.last_cold_start, 3)
            ),
            "last_scale": None
            if last is None
            else {
                "from": last.from_replicas,
                "to": last.to_replicas,
                "reason": last.reason,
                "ago": round(now - last.at, 1),
            },
            "replicas": [
                {
                    "name": r.name,
                    "pid": r.pid,
                    "port": r.port,
                    "state": r.state.value,
                    "age": round(r.age(now), 1),
                    "in_flight": self.control.endpoint_in_flight(self.key, r.endpoint),
                }
                for r in self.supervisor.replicas
            ],
        }


class LocalAutoscaler:
    """All apps of one config: registers with the interceptor, samples, shuts down in order."""

    def __init__(
        self,
        control: InterceptorControl,
        plans: tuple[AppPlan, ...],
        settings: AutoscalerSettings = AutoscalerSettings(),
    ) -> None:
        self.control = control
        self.settings = settings
        self.plans = plans
        self.scalers = {p.key: AppScaler(p, control, settings) for p in plans if p.process}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        for plan in self.plans:
            if plan.upstream is not None:
                self.control.set_endpoints(plan.key, {plan.upstream})
        self.control.add_wake_listener(self._on_wake)
        self.control.add_status_provider("apps", self.status)
        started = time.time()
        for scaler in self.scalers.values():
            scaler.history.running(started, 0)
            scaler.supervisor.start()
        now = time.monotonic()
        for scaler in self.scalers.values():
            scaler.sample(now)  # apps with min > 0 start now, not one interval later
        self._task = asyncio.create_task(self._sample_loop(), name="local autoscaler")

    def _on_wake(self, route_key: str) -> None:
        scaler = self.scalers.get(route_key)
        if scaler is not None:
            scaler.wake()

    async def _sample_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.sync_interval)
            now = time.monotonic()
            for scaler in self.scalers.values():
                scaler.sample(now)

    def tasks(self) -> list[asyncio.Task[None]]:
        """The long-lived tasks (sampler, one reconcile loop per app); none may end early."""
        tasks = [s.supervisor.task for s in self.scalers.values()]
        return [t for t in (self._task, *tasks) if t is not None]

    async def close(self) -> None:
        """Stop sampling, then stop every app's replicas (drain, SIGTERM, SIGKILL) at once."""
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait(task)
            if not task.cancelled() and task.exception() is not None:
                # It crashed: the runner reports that (`serve`); here it must not stop cleanup.
                log.debug("autoscaler sampler had failed", exc_info=task.exception())
        await asyncio.gather(*(s.supervisor.close() for s in self.scalers.values()))

    def kill_all(self) -> None:
        for scaler in self.scalers.values():
            scaler.supervisor.kill_all()

    def status(self) -> dict[str, Any]:
        now = time.monotonic()
        apps: dict[str, Any] = {}
        for plan in self.plans:
            scaler = self.scalers.get(plan.key)
            if scaler is not None:
                apps[plan.name] = scaler.status(now)
            else:
                stats = self.control.route_stats(plan.key)
                apps[plan.name] = {
                    "route": plan.key,
                    "kind": "upstream",
                    "upstream": str(plan.upstream),
                    "concurrency": stats["concurrency"] if stats else 0,
                    "held": stats["held"] if stats else 0,
                }
        return apps

    def scaler_named(self, name: str) -> AppScaler | None:
        """The scaler of the command app `name`; None for a fixed upstream or no such app."""
        return next((s for s in self.scalers.values() if s.plan.name == name), None)

    def history(self) -> dict[str, HistoryJSON]:
        """`GET /history`'s apps: each command app's replica and cold-start series."""
        return {
            s.plan.name: s.history.to_json(
                s.key, s.plan.scaling.min_replicas, s.plan.scaling.max_replicas
            )
            for s in self.scalers.values()
        }
