"""Timelines recorded live on a cluster without Prometheus: each target's `/scale`, sampled.

`/scale` is the one interface every scalable kind has (what KEDA and the HPA write), so it is
what is read: `spec.replicas` going from 0 to more is a cold start (the moment KEDA woke it),
and `status.selector` finds the pods. The cost counts the pods that exist and have not ended
(not Succeeded, not Failed), stopping ones included: a pod that drains after SIGTERM holds its
requests until it is gone, while `status.replicas` drops the moment it is told to stop (a
controller counts only pods without a deletionTimestamp). Without a selector, or without the
right to list pods, `status.replicas` is counted instead, and a note says so.

A workload deleted while recorded is counted through its last selector until its pods are
gone (garbage collection stops them), then at zero (at once where pods cannot be listed); the
failed samples are noted.

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
from httpscale.kube.resources import Resource
from httpscale.report.cost import RouteTimeline
from httpscale.report.targets import Target

__all__ = ["Recording", "record"]

_READY_KINDS = {("apps", "Deployment"), ("apps", "StatefulSet"), ("apps", "ReplicaSet")}
_PODS = Resource("", "v1", "pods", "Pod")
_ENDED = {"Succeeded", "Failed"}  # phases whose pods no longer hold their requests


@dataclass
class _Track:
    target: Target
    replicas: list[tuple[float, float]] = field(default_factory=list)
    cold_starts: list[tuple[float, float | None]] = field(default_factory=list)
    desired: int | None = None  # spec.replicas at the previous sample
    woken_at: float | None = None  # a cold start waiting for its first ready replica
    errors: int = 0
    last_error: str = ""
    selector: str | None = None  # /scale's status.selector at the last sample that had one
    pods_denied: str = ""  # why pods cannot be listed (then status.replicas is counted)

    def failed(self, exc: ApiError) -> None:
        self.errors += 1
        self.last_error = str(exc)

    def observe(self, now: float, desired: int, running: float) -> bool:
        """Take one sample in (spec.replicas, pods running); True when a cold start now
        waits for readiness."""
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
        notes = []
        for tr in self.tracks:
            if tr.pods_denied:
                notes.append(f"{tr.target.route}: counted status.replicas of /scale, which "
                             f"leaves out stopping pods: cannot list pods: {tr.pods_denied}")
            if tr.errors:
                notes.append(f"{tr.target.route}: {tr.errors} failed samples, "
                             f"last: {tr.last_error}")
        return notes


async def _running_pods(kube: Kube, namespace: str, selector: str) -> int:
    listing = await kube.request("GET", _PODS.path(namespace),
                                 query=[("labelSelector", selector)])
    return sum(1 for pod in listing.get("items") or ()
               if (pod.get("status") or {}).get("phase") not in _ENDED)


async def _sample(kube: Kube, track: _Track) -> None:
    t = track.target
    try:
        try:
            scale = await kube.request(
                "GET", t.workload.path(t.namespace, t.workload_name, "scale"))
        except ApiError as exc:
            if not exc.not_found or not track.replicas:
                raise
            # Deleted: nothing wants replicas any more, but its pods may still be stopping.
            track.failed(exc)
            scale = {"spec": {"replicas": 0}, "status": {"selector": track.selector}}
        spec, status = scale.get("spec") or {}, scale.get("status") or {}
        desired = int(spec.get("replicas") or 0)
        running = float(status.get("replicas") or 0)
        if status.get("selector"):
            track.selector = str(status["selector"])
        if track.selector and not track.pods_denied:
            try:
                running = float(await _running_pods(kube, t.namespace, track.selector))
            except ApiError as exc:
                if exc.status not in (401, 403):
                    raise
                track.pods_denied = str(exc)
        if track.observe(time.time(), desired, running):
            workload = await kube.request("GET", t.workload.path(t.namespace, t.workload_name))
            track.ready(time.time(), workload)
    except ApiError as exc:
        track.failed(exc)


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
