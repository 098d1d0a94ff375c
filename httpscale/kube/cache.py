"""An in-memory cache of one kind, fed by a reflector, handing out whole snapshots.

Consumers never patch their state from single events: each gets an immutable `Snapshot`
(every object of the kind, parsed) plus the keys that changed since the last one, and
rebuilds from it (ARCHITECTURE.md: "each consumer gets whole snapshots"). Notifications are
coalesced: events that arrive together (a relist, a burst) produce one snapshot, delivered on
the next turn of the event loop, so a change reaches consumers within one loop iteration of
its watch event.

Each object is parsed once per resourceVersion by the informer's `parse` function. An object
that does not parse is not in `Snapshot.items` but in `Snapshot.invalid` (with the error),
and is logged once per version: one bad object never stops the watch or hides the others.
`metadata.managedFields` is dropped on the way in (it is often the biggest part of an object
and nothing here reads it) unless a consumer asks to keep some of it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Generic, TypeVar

from httpscale.kube.api import Kube, Obj
from httpscale.kube.resources import Resource
from httpscale.kube.watch import Reflector, WatchSettings

__all__ = ["Informer", "Snapshot", "keep_managed_fields_of", "object_key", "strip_managed_fields"]

log = logging.getLogger("httpscale.kube.cache")

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)
Listener = Callable[["Snapshot[T]", frozenset[str]], None]


def object_key(obj: Obj) -> str:
    """`<namespace>/<name>`, or `<name>` for a cluster-scoped object."""
    meta = obj.get("metadata") or {}
    namespace = meta.get("namespace")
    name = meta.get("name") or ""
    return f"{namespace}/{name}" if namespace else str(name)


def strip_managed_fields(obj: Obj) -> Obj:
    meta = obj.get("metadata")
    if isinstance(meta, dict):
        meta.pop("managedFields", None)
    return obj


def keep_managed_fields_of(manager: str) -> Callable[[Obj], Obj]:
    """A transform keeping only `manager`'s managedFields entries (what it owns on an object)."""

    def transform(obj: Obj) -> Obj:
        meta = obj.get("metadata")
        if isinstance(meta, dict) and "managedFields" in meta:
            mine = [m for m in meta["managedFields"] or () if m.get("manager") == manager]
            if mine:
                meta["managedFields"] = mine
            else:
                del meta["managedFields"]
        return obj

    return transform


@dataclass(frozen=True, slots=True)
class Snapshot(Generic[T_co]):
    """Every object of one kind at one moment. Immutable; keys are `object_key`s."""

    items: Mapping[str, T_co]  # the objects that parsed
    invalid: Mapping[str, Exception]  # the objects that did not, with why
    raw: Mapping[str, Obj]  # every object as the API server sent it (treat as read-only)
    synced: bool  # False until the first list has arrived

    def __len__(self) -> int:
        return len(self.raw)


def _identity(obj: Obj) -> Obj:
    return obj


class Informer(Generic[T]):
    """Watches one resource and keeps it in memory; `run()` until cancelled.

    `parse` turns a raw object into the consumer's type and raises (any `Exception`) for one
    it cannot use; without it the raw dict is the item. `transform` rewrites each raw object
    as it arrives (default: drop managedFields).
    """

    def __init__(
        self,
        kube: Kube,
        resource: Resource,
        *,
        parse: Callable[[Obj], T] | None = None,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        metadata_only: bool = False,
        transform: Callable[[Obj], Obj] = strip_managed_fields,
        settings: WatchSettings | None = None,
    ) -> None:
        self.resource = resource
        self._parse: Callable[[Obj], T] = parse or _identity  # type: ignore[assignment]
        self._transform = transform
        # Kept current event by event, so a snapshot is three dict copies (C speed), not a
        # pass over every object in Python: a burst of N changes to N objects stays O(N²)
        # only in memcpy, not in parsing or interpreting.
        self._raw: dict[str, Obj] = {}
        self._items: dict[str, T] = {}
        self._invalid: dict[str, Exception] = {}
        self._reported: dict[str, str] = {}  # key -> the parse error last logged for it
        self._listeners: list[Listener[T]] = []
        self._changed: set[str] = set()  # keys changed since listeners were last told
        self._dirty = False  # the snapshot is older than the cache
        self._notify_handle: asyncio.Handle | None = None
        self._synced = asyncio.Event()
        self._snapshot: Snapshot[T] = Snapshot(
            MappingProxyType({}), MappingProxyType({}), MappingProxyType({}), False
        )
        self.connected = False
        self.last_error: str | None = None
        self._connection_changed = asyncio.Event()
        self.reflector = Reflector(
            kube,
            resource,
            self,
            namespace=namespace,
            label_selector=label_selector,
            field_selector=field_selector,
            metadata_only=metadata_only,
            settings=settings,
        )
        self.name = self.reflector.name

    # -- for consumers -----------------------------------------------------------------------

    @property
    def synced(self) -> bool:
        return self._synced.is_set()

    async def wait_synced(self) -> None:
        await self._synced.wait()

    async def wait_connected(self, connected: bool = True) -> None:
        """Until the watch is (or is no longer) established: for readiness and for tests."""
        await self.wait_state(lambda informer: informer.connected == connected)

    async def wait_state(self, done: Callable[[Informer[T]], bool]) -> None:
        """Until `done(self)` holds, checked at every connection report (success or failure)."""
        while not done(self):
            await self._connection_changed.wait()

    def snapshot(self) -> Snapshot[T]:
        """The current snapshot (rebuilt lazily after changes)."""
        if self._dirty:
            self._rebuild()
        return self._snapshot

    def subscribe(self, listener: Listener[T]) -> Callable[[], None]:
        """Call `listener(snapshot, changed_keys)` after every batch of changes (and once at
        the first sync, with every key). A listener that raises is logged, never the watch's
        problem. Returns a function that unsubscribes."""
        self._listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return unsubscribe

    async def run(self) -> None:
        try:
            await self.reflector.run()
        finally:
            if self._notify_handle is not None:
                self._notify_handle.cancel()
                self._notify_handle = None

    # -- WatchSink (called by the reflector) -----------------------------------------------------

    def replace(self, items: list[Obj], resource_version: str) -> None:
        fresh: dict[str, Obj] = {}
        for obj in items:
            # Items of a list of built-in kinds carry no apiVersion/kind (watch events do).
            obj.setdefault("apiVersion", self.resource.api_version)
            obj.setdefault("kind", self.resource.kind)
            obj = self._transform(obj)
            fresh[object_key(obj)] = obj
        for key in self._raw.keys() - fresh.keys():
            self._remove(key)
        for key, obj in fresh.items():
            self._ingest(key, obj)
        first = not self._synced.is_set()
        self._synced.set()
        if first:
            self._changed.update(fresh)
            self._changed.add("")  # a first sync is news even for an empty list
        self._schedule()

    def apply(self, event_type: str, obj: Obj) -> None:
        obj = self._transform(obj)
        key = object_key(obj)
        if event_type == "DELETED":
            self._remove(key)
        else:
            self._ingest(key, obj)
        self._schedule()

    def connection_changed(self, connected: bool, error: str | None) -> None:
        if error is not None:
            self.last_error = error
        self.connected = connected
        # Wake every waiter, then arm a fresh event for the next report.
        self._connection_changed.set()
        self._connection_changed = asyncio.Event()

    # -- internals -----------------------------------------------------------------------------

    def _schedule(self) -> None:
        self._dirty = True
        if self._notify_handle is None:
            self._notify_handle = asyncio.get_running_loop().call_soon(self._notify)

    def _notify(self) -> None:
        self._notify_handle = None
        changed = frozenset(k for k in self._changed if k)
        self._changed.clear()
        snapshot = self.snapshot()
        for listener in tuple(self._listeners):
            try:
                listener(snapshot, changed)
            except Exception:
                log.exception("%s: a snapshot listener failed", self.name)

    def _rebuild(self) -> None:
        self._dirty = False
        self._snapshot = Snapshot(
            MappingProxyType(dict(self._items)),
            MappingProxyType(dict(self._invalid)),
            MappingProxyType(dict(self._raw)),
            self._synced.is_set(),
        )

    def _remove(self, key: str) -> None:
        if self._raw.pop(key, None) is not None:
            self._changed.add(key)
        self._items.pop(key, None)
        self._invalid.pop(key, None)
        self._reported.pop(key, None)

    def _ingest(self, key: str, obj: Obj) -> None:
        """Store `obj`, parsed once per resourceVersion (a relist repeats most unchanged)."""
        before = self._raw.get(key)
        self._raw[key] = obj
        if before is not None and _rv(before) == _rv(obj) and (
            key in self._items or key in self._invalid
        ):
            return
        self._changed.add(key)
        try:
            item = self._parse(obj)
        except Exception as exc:
            # Reported when the problem is new, not for every version of the object: writing
            # its status makes a new version with the same problem.
            text = str(exc)
            if self._reported.get(key) != text:
                self._reported[key] = text
                where = "" if text.startswith(key) else f"{key}: "
                log.warning("%s is invalid and skipped: %s%s", self.resource.kind, where, text)
            self._items.pop(key, None)
            self._invalid[key] = exc
        else:
            self._reported.pop(key, None)
            self._invalid.pop(key, None)
            self._items[key] = item


def _rv(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")
