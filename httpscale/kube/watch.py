"""List + watch of one resource, kept going through every failure: the reflector.

The protocol (the one client-go's reflector speaks):

1. **List** (in pages of `page_size`, following `continue`), which gives every object and the
   `resourceVersion` (RV) of the whole list. The sink replaces its state with it.
2. **Watch** from that RV with `allowWatchBookmarks`: ADDED / MODIFIED / DELETED events carry
   objects, BOOKMARK events only move the RV forward (so a quiet resource does not fall out of
   the server's history while nothing changes), ERROR events carry a `Status`.
3. A watch ends normally after `timeoutSeconds` (jittered, so replicas do not all re-watch at
   once): watch again from the last RV, no list.
4. **410 Gone** (as the watch's HTTP status, as an ERROR event, or on a list page whose
   `continue` token expired): the RV is older than the server keeps. Only then list again.
5. Anything else (apiserver restarting, connection refused, 5xx, 403 until RBAC is fixed, a
   CRD not installed yet): log, wait with jittered exponential backoff, retry from the last RV.

A restarted apiserver keeps RVs (they live in etcd), so step 5 resumes where the watch left
off and nothing is relisted or missed. A line that is not JSON, or an event without an object,
is logged and skipped; it never ends the watch.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from httpscale.kube.api import ApiError, Kube, Obj, Query
from httpscale.kube.backoff import Backoff, BackoffSettings
from httpscale.kube.resources import Resource

__all__ = ["Reflector", "WatchSettings", "WatchSink"]

log = logging.getLogger("httpscale.kube.watch")

# Metadata-only lists and watches (a workload's existence is all the operator asks of it):
# the server sends PartialObjectMetadata, falling back to whole objects if it cannot.
METADATA_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json"
METADATA_WATCH = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json"
# One watch event holds one object; etcd refuses objects over 1.5 MiB by default.
_MAX_EVENT_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class WatchSettings:
    page_size: int = 500  # objects per list page
    # Seconds the server keeps one watch open; each watch picks uniformly in [min, 2 * min].
    watch_timeout_min: float = 300.0
    # Seconds of silence beyond the watch's own timeout before the connection counts as dead.
    read_margin: float = 30.0
    # A watch that ends within this many seconds having delivered nothing counts as a failure
    # (backoff), so a server that accepts and closes at once is not hammered in a loop.
    min_healthy_watch: float = 1.0
    backoff: BackoffSettings = field(default_factory=BackoffSettings)


class WatchSink(Protocol):
    """Where a reflector delivers what it learns (the informer's store)."""

    def replace(self, items: list[Obj], resource_version: str) -> None:
        """The whole current list (after a list or relist)."""

    def apply(self, event_type: str, obj: Obj) -> None:
        """One ADDED, MODIFIED or DELETED event."""

    def connection_changed(self, connected: bool, error: str | None) -> None:
        """The watch is (re)established, or failed with `error`."""


class _Gone(Exception):
    """The resourceVersion is too old: relist."""


class Reflector:
    """Keeps one `WatchSink` in step with one resource (optionally one namespace/selector)."""

    def __init__(
        self,
        kube: Kube,
        resource: Resource,
        sink: WatchSink,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        metadata_only: bool = False,
        settings: WatchSettings | None = None,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.kube = kube
        self.resource = resource
        self.settings = settings or WatchSettings()
        self._sink = sink
        self._path = resource.path(namespace)
        self._selectors: list[tuple[str, str]] = []
        if label_selector:
            self._selectors.append(("labelSelector", label_selector))
        if field_selector:
            self._selectors.append(("fieldSelector", field_selector))
        self._metadata_only = metadata_only
        self._random = rand
        self._backoff = Backoff(self.settings.backoff, rand=rand)
        self.relists = 0  # lists after the first (410 Gone)
        self.events = 0  # ADDED / MODIFIED / DELETED delivered
        self.failures = 0  # failed list or watch attempts
        where = f" in {namespace}" if namespace else ""
        self.name = f"{resource.plural}{where}"

    async def run(self) -> None:
        """List, then watch forever; returns only by cancellation."""
        rv: str | None = None
        listed = False
        while True:
            try:
                if rv is None:
                    if listed:
                        self.relists += 1
                    rv = await self._list()
                    listed = True
                rv = await self._watch(rv)
            except _Gone:
                log.info("%s: resourceVersion expired, listing again", self.name)
                rv = None
            except ApiError as exc:
                if exc.gone:
                    rv = None
                    continue
                # 429 (e.g. "storage is (re)initializing") says how long to wait: not less.
                retry_after = exc.details.get("retryAfterSeconds")
                await self._failed(str(exc), float(retry_after) if isinstance(
                    retry_after, int | float) else 0.0)
            except (ValueError, KeyError, TypeError) as exc:  # a malformed list response
                await self._failed(f"unreadable response: {exc!r}")

    async def _failed(self, error: str, at_least: float = 0.0) -> None:
        self.failures += 1
        delay = max(self._backoff.next_delay(), min(at_least, self.settings.backoff.maximum))
        # The first failure of a streak is news; the rest only while debugging.
        level = logging.WARNING if self._backoff.attempts == 1 else logging.DEBUG
        log.log(level, "%s: %s; retrying in %.1fs", self.name, error, delay)
        self._sink.connection_changed(False, error)
        await asyncio.sleep(delay)

    async def _list(self) -> str:
        items: list[Obj] = []
        cont: str | None = None
        accept = METADATA_LIST if self._metadata_only else None
        while True:
            query = [*self._selectors, ("limit", str(self.settings.page_size))]
            if cont:
                query.append(("continue", cont))
            try:
                page = await self.kube.request("GET", self._path, query=query, accept=accept)
            except ApiError as exc:
                if exc.gone and cont:
                    raise _Gone from exc  # the continue token expired mid-list
                raise
            items.extend(page.get("items") or [])
            meta = page.get("metadata") or {}
            cont = meta.get("continue") or None
            if not cont:
                rv = str(meta["resourceVersion"])
                break
        self._sink.replace(items, rv)
        self._sink.connection_changed(True, None)
        self._backoff.reset()
        return rv

    async def _watch(self, rv: str) -> str:
        s = self.settings
        timeout = s.watch_timeout_min * (1.0 + self._random())
        query: Query = [
            *self._selectors,
            ("watch", "1"),
            ("resourceVersion", rv),
            ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", str(int(timeout))),
        ]
        started = time.monotonic()
        delivered = False
        accept = METADATA_WATCH if self._metadata_only else None
        async with self.kube.stream(
            self._path, query=query, accept=accept, read_timeout=timeout + s.read_margin
        ) as body:
            self._sink.connection_changed(True, None)
            while True:
                try:
                    line = await body.readline(max_line_length=_MAX_EVENT_BYTES)
                except (TimeoutError, OSError) as exc:
                    raise ApiError(0, "Unreachable", f"watch read failed: {exc!r}") from exc
                except Exception as exc:  # aiohttp's payload errors, LineTooLong
                    raise ApiError(0, "BrokenWatch", f"watch read failed: {exc!r}") from exc
                if not line:
                    break  # the server ended the watch (timeoutSeconds, or shutting down)
                rv = self._event(line, rv)
                delivered = True
                self._backoff.reset()
        if not delivered and time.monotonic() - started < s.min_healthy_watch:
            await self._failed("watch ended at once")
        return rv

    def _event(self, line: bytes, rv: str) -> str:
        """Handle one watch line; the resourceVersion to resume from after it."""
        try:
            event = json.loads(line)
            kind = event["type"]
            obj = event["object"]
            if not isinstance(obj, dict):
                raise TypeError("object is not a mapping")
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("%s: skipped an unreadable watch event (%s): %.200r", self.name, exc, line)
            return rv
        if kind == "ERROR":
            error = ApiError.from_status(obj)
            if error.gone:
                raise _Gone
            raise error
        new_rv = (obj.get("metadata") or {}).get("resourceVersion")
        if kind == "BOOKMARK":
            return str(new_rv) if new_rv else rv
        if kind not in ("ADDED", "MODIFIED", "DELETED"):
            log.warning("%s: skipped a watch event of unknown type %r", self.name, kind)
            return rv
        self.events += 1
        self._sink.apply(kind, obj)
        return str(new_rv) if new_rv else rv
