"""Leader election on a `coordination.k8s.io/v1` Lease, with the semantics of client-go's.

The Lease is the record: `holderIdentity`, `leaseDurationSeconds`, `acquireTime`, `renewTime`,
`leaseTransitions`. Every write is an update carrying the `resourceVersion` it read (or a
create), so of two writers racing from the same read exactly one wins; the other gets 409.

Why two electors cannot both believe they lead (D = renew_deadline < L = lease_duration):

- The leader measures its deadline from the moment it *sent* its last successful write, on its
  own monotonic clock: that write was committed no earlier. If no write succeeds within D of
  that moment it stops leading, driven by a timer, even while a request is still in flight.
- A candidate never compares wall clocks. It restarts its own monotonic stopwatch whenever the
  record it reads has changed (a new `resourceVersion`), taking the time it *received* the
  answer: that read happened after the holder's last commit, so the stopwatch starts no
  earlier than that commit. It writes only after L (as the record declares it) has passed
  without a change, and only on top of the very version it read.
- So a takeover commits no earlier than commit + L, and the old leader stopped by commit + D.
  The margin L - D absorbs what remains: clocks running at slightly different *rates* on two
  machines (offsets do not matter, no timestamp crosses machines) and the leader's loop being
  late to run its deadline timer.
- Every renewal changes `renewTime` (kept strictly increasing here), so it is a real write with
  a new `resourceVersion`: the apiserver turns an update that changes nothing into a no-op,
  which a candidate could not see.
- A leader that reads a record naming someone else steps down at once: that is proof of a
  takeover, whatever its stopwatch says.

What it cannot protect: work a leader started and does not stop when told (`on_change` and
`wait_until(False)` fire the moment leadership ends; whoever leads must stop writing then), and
writes outside the protocol: a Lease deleted by hand is created afresh by the first candidate
at once, while the old leader believes it leads until its next renewal fails.

A candidate re-reads the Lease every `retry_period` (jittered, as client-go) rather than
watching it: expiry is the *absence* of events, so a timer is needed anyway, and a released
lease is then taken within a retry period.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from .api import ApiError, Kube, Obj
from .resources import LEASES

__all__ = ["LeaderElectionSettings", "LeaderElector"]

log = logging.getLogger(__name__)

_JITTER = 1.2  # a candidate waits retry_period * [1, 1 + _JITTER), client-go's factor
_ERROR_LOG_INTERVAL = 60.0  # seconds: the same API error is logged as a warning once per this


@dataclass(frozen=True, slots=True)
class LeaderElectionSettings:
    lease_name: str = "httpscale-operator"
    """Name of the Lease object that is the lock."""
    lease_namespace: str = "httpscale"
    """Namespace of that Lease."""
    lease_duration: float = 15.0
    """Seconds a candidate must observe no change to the Lease before taking it over. Written
    to the Lease (rounded up to whole seconds) as `leaseDurationSeconds`; candidates go by the
    value in the Lease, so the holder's setting is the one that counts."""
    renew_deadline: float = 10.0
    """Seconds the leader keeps trying to renew before it gives up leading. Must be below
    `lease_duration`: the difference is the safety margin."""
    retry_period: float = 2.0
    """Seconds between renewals by the leader and between attempts by a candidate (jittered
    by up to 120% for candidates)."""
    release_timeout: float = 2.0
    """Seconds allowed for releasing the Lease when `run()` is cancelled while leading."""

    def __post_init__(self) -> None:
        if not self.lease_name or not self.lease_namespace:
            raise ValueError("leader election needs a lease name and namespace")
        for field in ("lease_duration", "renew_deadline", "retry_period", "release_timeout"):
            value = getattr(self, field)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ValueError(f"leader election: {field} must be a positive number of "
                                 f"seconds, got {value!r}")
        if not self.retry_period < self.renew_deadline < self.lease_duration:
            raise ValueError(
                "leader election needs retry_period < renew_deadline < lease_duration, got "
                f"{self.retry_period!r} s, {self.renew_deadline!r} s, {self.lease_duration!r} s")


class _Outcome(enum.Enum):
    HELD = "held"  # our write succeeded: we hold the Lease as of now
    OTHER = "other"  # the record names someone else, who may still lead
    CONFLICT = "conflict"  # our write lost a race (409)
    ERROR = "error"  # the API failed us


class _ErrorLog:
    """Logs an API error once, then the same error again only every `_ERROR_LOG_INTERVAL`."""

    def __init__(self, identity: str) -> None:
        self._identity = identity
        self._key: tuple[int, str] | None = None
        self._logged_at = 0.0
        self._repeats = 0

    def error(self, exc: ApiError) -> None:
        key, now = (exc.status, exc.reason), time.monotonic()
        if key != self._key or now - self._logged_at >= _ERROR_LOG_INTERVAL:
            more = f" ({self._repeats} more since)" if key == self._key and self._repeats else ""
            log.warning("leader election (%s): %s; retrying%s", self._identity, exc, more)
            self._key, self._logged_at, self._repeats = key, now, 0
        else:
            self._repeats += 1
            log.debug("leader election (%s): %s", self._identity, exc)

    def ok(self) -> None:
        if self._key is not None:
            log.info("leader election (%s): API requests succeed again", self._identity)
            self._key, self._repeats = None, 0


def _duration(spec: Obj, default: float) -> float:
    value = spec.get("leaseDurationSeconds")
    return float(value) if isinstance(value, int) and value > 0 else default


class LeaderElector:
    """One candidate for the Lease. `run()` campaigns, leads and renews until cancelled.

    `identity` must be unique among candidates (the operator uses `<hostname>_<random hex>`).
    `on_change(leading)` is called, synchronously, on every change of `is_leader`.
    """

    def __init__(
        self,
        kube: Kube,
        identity: str,
        settings: LeaderElectionSettings | None = None,
        *,
        on_change: Callable[[bool], None] | None = None,
    ) -> None:
        if not identity:
            raise ValueError("leader election needs a non-empty identity")
        self.identity = identity
        self.settings = settings or LeaderElectionSettings()
        self._kube = kube
        self._on_change = on_change
        self._path = LEASES.path(self.settings.lease_namespace, self.settings.lease_name)
        self._leading = False
        self._became_leader = asyncio.Event()
        self._stopped_leading = asyncio.Event()
        self._stopped_leading.set()
        self._running = False
        self._errors = _ErrorLog(identity)
        self._lease: Obj | None = None  # the record as last read or written
        self._observed_version: str | None = None
        self._observed_at = 0.0  # monotonic time its resourceVersion was first seen
        self._renewed_at = 0.0  # monotonic time our last successful write was sent
        self._fast_renew = False  # our copy is the latest (we wrote it): renew without a read
        self._last_stamp: datetime | None = None

    @property
    def is_leader(self) -> bool:
        return self._leading

    @property
    def holder(self) -> str | None:
        """`holderIdentity` as last read or written ("" released), None before any read."""
        if self._lease is None:
            return None
        return str((self._lease.get("spec") or {}).get("holderIdentity") or "")

    async def wait_until(self, leader: bool) -> None:
        """Return once `is_leader == leader` (at once if it already is).

        It may have changed again by the time the caller runs: `on_change` is the exact record.
        """
        await (self._became_leader if leader else self._stopped_leading).wait()

    async def run(self) -> None:
        """Campaign and lead until cancelled; releases the Lease if cancelled while leading.

        API errors are logged and retried; only cancellation ends it.
        """
        if self._running:
            raise RuntimeError("LeaderElector.run() is already running")
        self._running = True
        try:
            while True:
                if await self._attempt() is _Outcome.HELD:
                    self._set_leading(True)
                    await self._lead()
                await asyncio.sleep(self.settings.retry_period * (1 + _JITTER * random.random()))
        except asyncio.CancelledError:
            if self._leading:
                self._set_leading(False)  # before the release can let anyone else in
                await self._release()
            raise
        finally:
            self._set_leading(False)
            self._running = False

    async def _lead(self) -> None:
        """Renew every retry period; return, no longer leading, once that is not possible."""
        s = self.settings
        while True:
            # The deadline runs from the last successful write and covers the wait too.
            deadline = asyncio.timeout(self._renewed_at + s.renew_deadline - time.monotonic())
            try:
                async with deadline:
                    await asyncio.sleep(s.retry_period)
                    while True:
                        outcome = await self._attempt()
                        if outcome in (_Outcome.HELD, _Outcome.OTHER):
                            break
                        await asyncio.sleep(s.retry_period)
            except TimeoutError:
                if not deadline.expired():
                    raise
                self._set_leading(False)
                log.warning("leader election (%s): lost leadership, could not renew the Lease "
                            "%s/%s for %.1f s", self.identity, s.lease_namespace, s.lease_name,
                            s.renew_deadline)
                return
            if outcome is _Outcome.OTHER:
                self._set_leading(False)
                log.warning("leader election (%s): lost leadership, the Lease %s/%s now names "
                            "%r", self.identity, s.lease_namespace, s.lease_name, self.holder)
                return

    async def _attempt(self) -> _Outcome:
        try:
            outcome = await self._try_acquire_or_renew()
        except (ApiError, ValueError) as exc:  # ValueError: a body that is not JSON
            self._fast_renew = False  # read before the next write: our copy may be stale
            if not isinstance(exc, ApiError):
                exc = ApiError(0, "BadResponse", str(exc))
            if not exc.conflict:
                self._errors.error(exc)
                return _Outcome.ERROR
            # Someone else created or updated it first: not an error, the protocol at work.
            log.debug("leader election (%s): %s", self.identity, exc)
            outcome = _Outcome.CONFLICT
        self._errors.ok()
        return outcome

    async def _try_acquire_or_renew(self) -> _Outcome:
        if self._leading and self._fast_renew and self._lease is not None:
            return await self._write(self._lease)
        try:
            lease = await self._kube.request("GET", self._path,
                                             time_limit=self.settings.renew_deadline)
        except ApiError as exc:
            if not exc.not_found:
                raise
            try:
                return await self._create()
            except ApiError as created:
                if not created.conflict:
                    raise
            # Another candidate created it first: read it now, so that its holder is known
            # and the expiry stopwatch starts from this first sight of it.
            lease = await self._kube.request("GET", self._path,
                                             time_limit=self.settings.renew_deadline)
        self._observe(lease)
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity") or ""
        if holder and holder != self.identity:
            unchanged_for = time.monotonic() - self._observed_at
            if self._leading or unchanged_for < _duration(spec, self.settings.lease_duration):
                return _Outcome.OTHER
        return await self._write(lease)

    async def _create(self) -> _Outcome:
        now = self._stamp()
        body = {
            "apiVersion": LEASES.api_version,
            "kind": LEASES.kind,
            "metadata": {"name": self.settings.lease_name,
                         "namespace": self.settings.lease_namespace},
            "spec": {"holderIdentity": self.identity,
                     "leaseDurationSeconds": math.ceil(self.settings.lease_duration),
                     "acquireTime": now, "renewTime": now, "leaseTransitions": 0},
        }
        sent = time.monotonic()
        created = await self._kube.request(
            "POST", LEASES.path(self.settings.lease_namespace), body=body,
            time_limit=self.settings.renew_deadline)
        self._written(created, sent)
        return _Outcome.HELD

    async def _write(self, lease: Obj) -> _Outcome:
        """Take or renew: update `lease` as read (its resourceVersion is the precondition)."""
        old = lease.get("spec") or {}
        now = self._stamp()
        ours = old.get("holderIdentity") == self.identity
        transitions = old.get("leaseTransitions")
        transitions = transitions if isinstance(transitions, int) else 0
        spec = {**old,
                "holderIdentity": self.identity,
                "leaseDurationSeconds": math.ceil(self.settings.lease_duration),
                "acquireTime": old.get("acquireTime") if ours and old.get("acquireTime") else now,
                "renewTime": now,
                "leaseTransitions": transitions if ours else transitions + 1}
        sent = time.monotonic()
        updated = await self._put(lease, spec, self.settings.renew_deadline)
        self._written(updated, sent)
        return _Outcome.HELD

    async def _release(self) -> None:
        """Best effort, bounded: an empty holder lets a candidate take over at once."""
        s = self.settings
        try:
            async with asyncio.timeout(s.release_timeout):
                for _ in range(2):  # a second go if a renewal cancelled in flight did commit
                    lease = self._lease
                    if lease is None:
                        return
                    now = self._stamp()
                    spec = {**(lease.get("spec") or {}), "holderIdentity": "",
                            "leaseDurationSeconds": 1, "acquireTime": now, "renewTime": now}
                    try:
                        self._lease = await self._put(lease, spec, s.release_timeout)
                        log.info("leader election (%s): released the Lease %s/%s",
                                 self.identity, s.lease_namespace, s.lease_name)
                        return
                    except ApiError as exc:
                        if not exc.conflict:
                            raise
                    current = await self._kube.request("GET", self._path,
                                                       time_limit=s.release_timeout)
                    if (current.get("spec") or {}).get("holderIdentity") != self.identity:
                        return  # someone else's now: nothing of ours to release
                    self._lease = current
        except (ApiError, TimeoutError) as exc:
            log.warning("leader election (%s): could not release the Lease %s/%s (%s); "
                        "a standby takes over after it expires", self.identity,
                        s.lease_namespace, s.lease_name, str(exc) or "timed out")

    async def _put(self, lease: Obj, spec: Obj, time_limit: float) -> Obj:
        metadata = {k: v for k, v in (lease.get("metadata") or {}).items()
                    if k != "managedFields"}
        if not metadata.get("resourceVersion"):
            raise ApiError(0, "BadResponse", "a Lease without a resourceVersion")
        body: dict[str, Any] = {**lease, "metadata": metadata, "spec": spec}
        return await self._kube.request("PUT", self._path, body=body, time_limit=time_limit)

    def _written(self, lease: Obj, sent: float) -> None:
        self._observe(lease)
        self._renewed_at = sent
        self._fast_renew = True

    def _observe(self, lease: Obj) -> None:
        self._lease = lease
        version = (lease.get("metadata") or {}).get("resourceVersion")
        if version != self._observed_version:
            self._observed_version = version
            self._observed_at = time.monotonic()  # after the answer arrived: never too early

    def _stamp(self) -> str:
        """Now as a MicroTime, strictly after the last one we wrote (see the header)."""
        now = datetime.now(UTC)
        if self._last_stamp is not None and now <= self._last_stamp:
            now = self._last_stamp + timedelta(microseconds=1)
        self._last_stamp = now
        return now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    def _set_leading(self, leading: bool) -> None:
        if leading == self._leading:
            return
        self._leading = leading
        if leading:
            self._stopped_leading.clear()
            self._became_leader.set()
            log.info("leader election (%s): now leading (Lease %s/%s)", self.identity,
                     self.settings.lease_namespace, self.settings.lease_name)
        else:
            self._became_leader.clear()
            self._stopped_leading.set()
        if self._on_change is not None:
            try:
                self._on_change(leading)
            except Exception:
                # The election must go on: a broken callback must not leave a stale leader.
                log.exception("leader election (%s): on_change callback failed", self.identity)
