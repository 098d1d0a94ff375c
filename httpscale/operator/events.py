"""Kubernetes Events about the objects the operator reconciles (`kubectl describe httpso`).

Emitting never blocks a reconcile and never fails it: events go into a bounded queue that one
task drains; when the API is slow and the queue is full, new events are dropped and counted
(an Event is a courtesy, the status condition is the record). The same reason and message
for the same object within `dedupe_window` bumps the existing Event's count instead of
creating another, as kubectl and client-go's recorder do.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass

from httpscale.kube.api import MERGE_PATCH, ApiError, Kube, Obj
from httpscale.kube.resources import EVENTS

__all__ = ["EventRecorder", "EventSettings"]

log = logging.getLogger("httpscale.operator.events")


@dataclass(frozen=True, slots=True)
class EventSettings:
    component: str = "httpscale-operator"  # `source.component` / `reportingComponent`
    queue_size: int = 1000  # events waiting to be written; more are dropped
    writers: int = 4  # events written at once
    dedupe_window: float = 600.0  # seconds an Event is reused for a repeat (count + 1)


@dataclass(slots=True)
class _Pending:
    involved: Obj
    type: str
    reason: str
    message: str


@dataclass(slots=True)
class _Written:
    namespace: str
    name: str
    count: int
    at: float  # monotonic time of the last write


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class EventRecorder:
    def __init__(self, kube: Kube, settings: EventSettings, *, instance: str) -> None:
        self._kube = kube
        self._settings = settings
        self._instance = instance
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue(settings.queue_size)
        # Events written lately, oldest first (a repeat moves to the end), for count bumps.
        self._recent: OrderedDict[tuple[str, str, str], _Written] = OrderedDict()
        self.dropped = 0
        self.written = 0

    def emit(self, obj: Obj, type_: str, reason: str, message: str) -> None:
        """Record an Event about `obj` ("Normal" or "Warning"); returns at once."""
        meta = obj.get("metadata") or {}
        involved = {
            "apiVersion": obj.get("apiVersion"),
            "kind": obj.get("kind"),
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
        }
        try:
            self._queue.put_nowait(_Pending(involved, type_, reason, message[:1024]))
        except asyncio.QueueFull:
            self.dropped += 1

    async def run(self) -> None:
        async with asyncio.TaskGroup() as writers:
            for i in range(self._settings.writers):
                writers.create_task(self._drain(), name=f"event writer {i}")

    async def _drain(self) -> None:
        while True:
            event = await self._queue.get()
            try:
                await self._write(event)
                self.written += 1
            except ApiError as exc:
                # Not retried: an Event is advisory, and a retry loop could back the queue up.
                log.warning("could not record event %s on %s/%s: %s", event.reason,
                            event.involved.get("namespace"), event.involved.get("name"), exc)
            finally:
                self._queue.task_done()

    async def flush(self, time_limit: float) -> None:
        """Wait until every emitted Event is written (or failed), at most `time_limit` s."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(time_limit):
                await self._queue.join()

    async def _write(self, event: _Pending) -> None:
        key = (str(event.involved.get("uid")), event.reason, event.message)
        now = time.monotonic()
        while self._recent:
            oldest = next(iter(self._recent.values()))
            if now - oldest.at < self._settings.dedupe_window:
                break
            self._recent.popitem(last=False)
        seen = self._recent.get(key)
        stamp = _now()
        if seen is not None:
            seen.count += 1
            seen.at = now
            self._recent.move_to_end(key)
            try:
                await self._kube.request(
                    "PATCH",
                    EVENTS.path(seen.namespace, seen.name),
                    body={"count": seen.count, "lastTimestamp": stamp},
                    content_type=MERGE_PATCH,
                )
                return
            except ApiError as exc:
                if not exc.not_found:
                    raise
                # The Event expired (the apiserver keeps them an hour): write a new one.
        namespace = str(event.involved.get("namespace") or "default")
        name = f"{event.involved.get('name')}.{secrets.token_hex(8)}"
        body = {
            "metadata": {"name": name, "namespace": namespace},
            "involvedObject": event.involved,
            "type": event.type,
            "reason": event.reason,
            "message": event.message,
            "source": {"component": self._settings.component},
            "reportingComponent": self._settings.component,
            "reportingInstance": self._instance,
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }
        await self._kube.request("POST", EVENTS.path(namespace), body=body)
        self._recent[key] = _Written(namespace, name, 1, now)
