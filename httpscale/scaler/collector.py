"""Collects per-route load from every interceptor replica.

Two channels per replica:
- `GET /queue`, polled every `poll_interval` on all replicas at once, each bounded by
  `poll_timeout`, at most one poll in flight per replica (a hanging replica does not slow the
  others down): the source of truth for concurrency (summed over replicas) and, from the
  deltas of each replica's RequestCount, the request rate (`httpscale.scaling.rate`).
- `GET /wake`, a long-lived NDJSON stream: `{"event": "wake", "route": KEY}` the instant an
  interceptor holds the first request of a route at zero. It only marks the route active in
  the `ActivityBoard`; values still come from the poll. Reconnects with exponential backoff.

A replica whose polls fail keeps its last concurrency for `stale_grace` seconds, adds no rate
meanwhile, and is dropped after (its counters are forgotten, so its return is a first sight).
The scaler is healthy while at least one replica is fresh.

Each poll also tells which routes were in use since the replica's previous poll
(`routes_in_use`: a request counted or one in flight); the board keeps such a route active for
its activity window after the last poll that saw it in use.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from httpscale.runtime import TaskSupervisor
from httpscale.scaler.activity import ActivityBoard, RouteLoad
from httpscale.scaler.discovery import normalize_admin_url
from httpscale.scaler.metrics import ScalerMetrics
from httpscale.scaler.routes import ScalerRouteTable
from httpscale.scaler.settings import ScalerSettings
from httpscale.scaling.rate import RequestRate, counter_delta

__all__ = ["Collector", "InterceptorReplica", "parse_queue", "routes_in_use"]

log = logging.getLogger("httpscale.scaler.collector")

# A /wake line is a small JSON object; anything longer is a broken peer.
_MAX_WAKE_LINE = 64 * 1024


class _BadResponse(Exception):
    pass


def parse_queue(data: Any) -> dict[str, tuple[int, int]]:
    """`GET /queue` JSON -> {route: (Concurrency, RequestCount)}; ValueError when malformed."""
    if not isinstance(data, dict):
        raise ValueError("/queue is not a JSON object")
    out: dict[str, tuple[int, int]] = {}
    for key, entry in data.items():
        if not isinstance(entry, dict):
            raise ValueError(f"/queue entry {key!r} is not an object")
        concurrency = entry.get("Concurrency", 0)
        count = entry.get("RequestCount", 0)
        for name, value in (("Concurrency", concurrency), ("RequestCount", count)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"/queue entry {key!r}: {name} is not a count: {value!r}")
        out[str(key)] = (concurrency, count)
    return out


def routes_in_use(
    previous: Mapping[str, tuple[int, int]] | None, current: Mapping[str, tuple[int, int]]
) -> set[str]:
    """Routes one replica shows in use between two of its `/queue` readings.

    In use: a request in flight or held now (Concurrency > 0), or requests counted since the
    previous reading (RequestCount grew). A counter that went down means the replica restarted
    (same address, new process): what it counted since is new (`counter_delta`).
    A first sight, of the replica (`previous` None: the scaler just started, the replica just
    appeared or came back) or of a route on it, only sets a baseline: its count holds history
    of unknown age, and reading it as use could wake a route at zero for nothing. A request
    missed that way is not lost for activation: one that finds its route at zero is held, and
    held requests are Concurrency.
    """
    used = {key for key, (concurrency, _) in current.items() if concurrency > 0}
    if previous is not None:
        for key, (_, count) in current.items():
            before = previous.get(key)
            if before is not None and counter_delta(before[1], count) > 0:
                used.add(key)
    return used


@dataclass(eq=False)
class InterceptorReplica:
    """What the collector knows of one interceptor replica (its admin URL): the last poll, the
    wake stream, and the tasks behind both."""

    url: str
    last_ok: float | None = None  # loop time of the last successful poll
    failing: bool = False
    last_error: str = ""
    queue: dict[str, tuple[int, int]] = field(default_factory=dict)
    # `queue` is a baseline for the next reading: False until the first successful poll and
    # again after the replica was dropped as stale (its return is a first sight).
    baseline: bool = False
    wake_connected: bool = False
    wake_task: asyncio.Task[None] | None = None
    poll_task: asyncio.Task[None] | None = None


class Collector:
    """Polls and streams from the replica set pushed by discovery; feeds the ActivityBoard."""

    def __init__(
        self,
        settings: ScalerSettings,
        board: ActivityBoard,
        table: ScalerRouteTable,
        metrics: ScalerMetrics,
    ) -> None:
        self._settings = settings
        self._board = board
        self._table = table
        self._metrics = metrics
        self._loop = asyncio.get_running_loop()
        self._replicas: dict[str, InterceptorReplica] = {}
        self._rates: dict[str, RequestRate] = {}
        self._session: aiohttp.ClientSession | None = None
        self._concurrency: dict[str, int] = {}
        self._used_at: dict[str, float] = {}  # route -> loop time of the last poll seeing use
        self._healthy = False
        self._health_changed = asyncio.Event()
        self._gauged_routes: set[str] = set()
        # Polls and wake streams handle network errors themselves, and a poll returns: none
        # is critical, and an exception (a bug) is logged without stopping the collector.
        self._tasks = TaskSupervisor(log)

    # -- discovery sink ----------------------------------------------------------------------

    def set_interceptors(self, admin_urls: Sequence[str]) -> None:
        urls = dict.fromkeys(normalize_admin_url(u) for u in admin_urls)
        for url in list(self._replicas):
            if url not in urls:
                replica = self._replicas.pop(url)
                self._retire(replica)
                for rate in self._rates.values():
                    rate.forget(url)
                # Pod IPs churn in Kubernetes: keep the label set to the replicas that exist.
                with contextlib.suppress(KeyError):
                    self._metrics.poll_errors.remove(url)
        for url in urls:
            if url not in self._replicas:
                replica = InterceptorReplica(url)
                self._replicas[url] = replica
                self._start_wake(replica)
        self._metrics.replicas.set(len(self._replicas))
        self._publish()

    # -- queries -----------------------------------------------------------------------------

    @property
    def replicas(self) -> tuple[InterceptorReplica, ...]:
        return tuple(self._replicas.values())

    @property
    def healthy(self) -> bool:
        return self._healthy

    async def wait_health_changed(self, seen: bool) -> None:
        """Return once `healthy` differs from `seen` (no lost update between read and wait)."""
        while self._healthy == seen:
            await self._health_changed.wait()

    def concurrency(self, key: str) -> int:
        return self._concurrency.get(key, 0)

    def total_concurrency(self) -> int:
        """Concurrency over every route any fresh replica reports (the fleet trigger)."""
        return sum(self._concurrency.values())

    def rate(self, key: str) -> float:
        rate = self._rates.get(key)
        return rate.rate(self._loop.time()) if rate is not None else 0.0

    def last_used(self, key: str) -> float | None:
        """Seconds since a poll last saw `key` in use; None if none has since the scaler
        started."""
        used_at = self._used_at.get(key)
        return None if used_at is None else self._loop.time() - used_at

    # -- the poll loop -----------------------------------------------------------------------

    async def run(self) -> None:
        """Poll until cancelled; owns the HTTP session and the per-replica wake streams."""
        interval = self._settings.collector.poll_interval
        # No total timeout on the session: each request sets its own (polls vs. streams).
        connector = aiohttp.TCPConnector(limit=0, enable_cleanup_closed=True)
        async with aiohttp.ClientSession(connector=connector, raise_for_status=False) as session:
            self._session = session
            for replica in self._replicas.values():
                self._start_wake(replica)
            try:
                next_tick = self._loop.time()
                while True:
                    for replica in self._replicas.values():
                        # At most one poll in flight per replica: a hanging replica skips
                        # ticks until its timeout fires, while the others keep their pace.
                        if replica.poll_task is None or replica.poll_task.done():
                            replica.poll_task = self._spawn(
                                self._poll(replica), f"poll {replica.url}"
                            )
                    if not self._replicas:
                        self._publish()
                    next_tick += interval
                    delay = next_tick - self._loop.time()
                    if delay < 0:
                        # The loop fell behind: tick now, without bursts to catch up.
                        next_tick = self._loop.time()
                        delay = 0.0
                    await asyncio.sleep(delay)
            finally:
                await self._tasks.close()
                self._session = None

    async def _poll(self, replica: InterceptorReplica) -> None:
        assert self._session is not None
        started = self._loop.time()
        try:
            async with asyncio.timeout(self._settings.collector.poll_timeout):
                async with self._session.get(replica.url + "/queue") as response:
                    if response.status != 200:
                        raise _BadResponse(f"GET /queue answered {response.status}")
                    body = await response.read()
            entries = parse_queue(json.loads(body))
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError, _BadResponse) as exc:
            self._metrics.poll_errors.labels(replica.url).inc()
            if not replica.failing:
                log.warning("interceptor %s unreachable: %r", replica.url, exc)
            replica.failing = True
            replica.last_error = str(exc) or type(exc).__name__
        else:
            if self._replicas.get(replica.url) is not replica:
                return  # removed while the poll was in flight
            now = self._loop.time()
            if replica.failing:
                log.info("interceptor %s reachable again", replica.url)
            replica.failing = False
            replica.last_error = ""
            replica.last_ok = now
            for key in routes_in_use(replica.queue if replica.baseline else None, entries):
                if self._table.get(key) is not None:
                    self._used_at[key] = now
            replica.queue = entries
            replica.baseline = True
            for key, (_, count) in entries.items():
                rate = self._rate_for(key)
                if rate is not None:
                    rate.observe(replica.url, count, now)
        finally:
            self._metrics.poll_duration.observe(self._loop.time() - started)
        self._publish()

    def _rate_for(self, key: str) -> RequestRate | None:
        route = self._table.get(key)
        if route is None:
            return None
        rate = self._rates.get(key)
        if rate is None or (rate.window, rate.granularity) != (route.window, route.granularity):
            # New route or a changed window: start over (first sight for every replica).
            rate = RequestRate(route.window, route.granularity)
            self._rates[key] = rate
        return rate

    def _publish(self) -> None:
        """Aggregate fresh replicas into per-route load and hand it to the board."""
        now = self._loop.time()
        grace = self._settings.collector.stale_grace
        concurrency: dict[str, int] = {}
        fresh = 0
        for replica in self._replicas.values():
            if replica.last_ok is None:
                continue
            if now - replica.last_ok > grace:
                if replica.baseline:
                    log.warning("interceptor %s stale for %.1fs, dropped", replica.url, grace)
                    replica.queue = {}
                    replica.baseline = False
                    for rate in self._rates.values():
                        rate.forget(replica.url)
                continue
            fresh += 1
            for key, (value, _) in replica.queue.items():
                concurrency[key] = concurrency.get(key, 0) + value
        self._concurrency = concurrency
        for key in [k for k in self._rates if self._table.get(k) is None]:
            del self._rates[key]
        for key in [k for k in self._used_at if self._table.get(k) is None]:
            del self._used_at[key]
        loads: dict[str, RouteLoad] = {}
        for route in self._table.all():
            route_rate = self._rates.get(route.key)
            used_at = self._used_at.get(route.key)
            loads[route.key] = RouteLoad(
                concurrency.get(route.key, 0),
                route_rate.rate(now) if route_rate is not None else 0.0,
                used_at + route.activity_window if used_at is not None else -math.inf,
            )
        self._board.update(loads)
        self._update_gauges(loads)
        healthy = fresh > 0
        if healthy != self._healthy:
            self._healthy = healthy
            self._health_changed.set()
            self._health_changed = asyncio.Event()

    def _update_gauges(self, loads: Mapping[str, RouteLoad]) -> None:
        m = self._metrics
        m.unreachable.set(sum(1 for r in self._replicas.values() if r.failing))
        for key in self._gauged_routes - set(loads):
            m.route_concurrency.remove(key)
            m.route_rate.remove(key)
        for key, load in loads.items():
            m.route_concurrency.labels(key).set(load.concurrency)
            m.route_rate.labels(key).set(load.rate)
        self._gauged_routes = set(loads)

    # -- wake streams ------------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        """A task owned by the collector: tracked until done, cancelled and awaited by run()."""
        return self._tasks.spawn(coro, name, critical=False)

    def _start_wake(self, replica: InterceptorReplica) -> None:
        if not self._settings.wake.enabled:
            return
        if self._session is None or replica.wake_task is not None:
            return  # run() starts it once the session exists
        replica.wake_task = self._spawn(self._wake_stream(replica), f"wake stream {replica.url}")

    def _retire(self, replica: InterceptorReplica) -> None:
        """Cancel a removed replica's tasks; run() still awaits them at shutdown."""
        for task in (replica.wake_task, replica.poll_task):
            if task is not None:
                task.cancel()
        replica.wake_task = replica.poll_task = None

    async def _wake_stream(self, replica: InterceptorReplica) -> None:
        wake = self._settings.wake
        backoff = wake.backoff_initial
        # sock_read bounds the gap between lines: pings every 5 s keep a live stream under it.
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=wake.connect_timeout, sock_read=wake.idle_timeout
        )
        while True:
            session = self._session
            if session is None:
                return
            try:
                async with asyncio.timeout(wake.connect_timeout):
                    response = await session.get(replica.url + "/wake", timeout=timeout)
                async with response:
                    if response.status != 200:
                        raise _BadResponse(f"GET /wake answered {response.status}")
                    self._set_wake_connected(replica, True)
                    backoff = wake.backoff_initial
                    async for line in response.content:
                        if len(line) > _MAX_WAKE_LINE:
                            raise _BadResponse("/wake line too long")
                        self._on_wake_line(replica, line)
            except (aiohttp.ClientError, OSError, TimeoutError, ValueError, _BadResponse) as exc:
                log.debug("wake stream %s dropped: %r", replica.url, exc)
            finally:
                self._set_wake_connected(replica, False)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, wake.backoff_max)

    def _set_wake_connected(self, replica: InterceptorReplica, connected: bool) -> None:
        if replica.wake_connected != connected:
            replica.wake_connected = connected
            self._metrics.wake_streams.inc(1 if connected else -1)

    def _on_wake_line(self, replica: InterceptorReplica, line: bytes) -> None:
        line = line.strip()
        if not line:
            return
        try:
            event = json.loads(line)
        except ValueError:
            log.warning("interceptor %s sent a bad /wake line: %r", replica.url, line[:200])
            return
        if not isinstance(event, dict) or event.get("event") != "wake":
            return  # pings and future event kinds
        route = event.get("route")
        if isinstance(route, str) and route:
            self._metrics.wake_events.inc()
            self._board.wake(route)
