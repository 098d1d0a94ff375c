"""Timelines recorded live on a cluster without Prometheus: each target's `/scale`, sampled.

`/scale` is the one interface every scalable kind has (what KEDA and the HPA write), so it is
what is read: `status.replicas` (pods that exist, so pods that reserve their requests) for
the cost, and `spec.replicas` going from 0 to more for a cold start (the moment KEDA woke it).
A cold start's wait ends at the first sample whose workload reports a ready replica; only
apps/v1 kinds say that (`status.readyReplicas`), for others the wait is unknown. Waits are as
fine as the sampling interval.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from httpscale.kube.api import ApiError, Kube, Obj
from httpscale.report.cost import RouteTimeline
from httpscale.report.targets import Target

__all__ = ["Recording", "record"]

_READY_KINDS = {("apps", "Deployment"), ("apps", "StatefulSet"), ("apps", "ReplicaSet")}


@dataclass
class _Track:
    target: Target
    replicas: list[tuple[float, float]] = field(default_factory=list)
    cold_starts: list[tuple[float, float | None]] = field(default_factory=list)
    desired: int | None = None  # spec.replicas at the previous sample
    woken_at: float | None = None  # a cold start waiting for its first ready replica
    errors: int = 0
    last_error: str = ""

    def observe(self, now: float, scale: Obj) -> bool:
        """Take one /scale answer in; True when a cold start now waits for readiness."""
        spec, status = scale.get("spec") or {}, scale.get("status") or {}
        desired = int(spec.get("replicas") or 0)
        running = float(status.get("replicas") or 0)
        if not self.replicas or self.replicas[-1][1] != running:
            self.replicas.append((now, running))
        woke = self.desired == 0 and desired > 0
        self.desired = desired
        if woke:
            if (self.target.workload.group, self.target.workload.kind) in _READY_KINDS:
                self.woken_at = now
            else:
                self.cold_starts.append((now, None))
        elif desired == 0:
            self.woken_at = None  # scaled back before it was ever ready: no wait to measure
        return self.woken_at is not None

    def ready(self, now: float, workload: Obj) -> None:
        if self.woken_at is not None and int((workload.get("status") or {})
                                             .get("readyReplicas") or 0) > 0:
            self.cold_starts.append((self.woken_at, now - self.woken_at))
            self.woken_at = None


@dataclass
class Recording:
    tracks: list[_Track]
    start: float
    end: float = 0.0
    samples: int = 0

    def timelines(self) -> list[RouteTimeline]:
        return [
            RouteTimeline(
                name=tr.target.label,
                route=tr.target.route,
                min_replicas=tr.target.min_replicas,
                max_replicas=tr.target.max_replicas,
                replicas=list(tr.replicas),
                cold_starts=list(tr.cold_starts),
                requests=tr.target.requests,
            )
            for tr in self.tracks
            if tr.replicas
        ]

    def notes(self) -> list[str]:
        return [f"{tr.target.route}: {tr.errors} failed samples, last: {tr.last_error}"
                for tr in self.tracks if tr.errors]


async def _sample(kube: Kube, track: _Track) -> None:
    t = track.target
    try:
        scale = await kube.request("GET", t.workload.path(t.namespace, t.workload_name, "scale"))
        if track.observe(time.time(), scale):
            workload = await kube.request("GET", t.workload.path(t.namespace, t.workload_name))
            track.ready(time.time(), workload)
    except ApiError as exc:
        track.errors += 1
        track.last_error = str(exc)


async def record(
    kube: Kube,
    targets: Sequence[Target],
    *,
    interval: float,
    stop: asyncio.Event,
    on_sample: Callable[[Recording], None] | None = None,
) -> Recording:
    """Sample every target each `interval` seconds until `stop` is set."""
    recording = Recording([_Track(t) for t in targets], start=time.time())
    while True:
        await asyncio.gather(*(_sample(kube, tr) for tr in recording.tracks))
        recording.samples += 1
        recording.end = time.time()
        if on_sample is not None:
            on_sample(recording)
        if stop.is_set():
            break
        try:
            # The interval is the sampling period itself, not a wait for some event: /scale
            # has no watch of its own, and watching every kind's objects would cost more.
            await asyncio.wait_for(stop.wait(), timeout=interval)
        except TimeoutError:
            pass
    return recording
