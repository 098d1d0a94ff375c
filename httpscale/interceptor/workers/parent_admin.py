"""The one admin of `--workers N`: what the workers' admins say, summed (see aggregate.py).

The parent has no data plane. Each answer asks every live worker through its admin Unix
socket, each bounded by `worker_timeout`; a worker that does not answer in time is left out of
that answer's gauges (its counters keep their latest sample) and the answer says so: the
header `X-Httpscale-Workers-Unanswered` on /queue and /metrics (KEDA's /queue JSON has no room
for it), `workersUnanswered` in /status, the gauge `httpscale_workers_unanswered` in /metrics.

`/wake` relays: one stream per live worker generation (reconnected with backoff while that
generation lives; a restarted worker is a new generation, a new stream), each wake line passed
on at once to every subscriber of the parent, in InterceptorAdmin's format and with its pings.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import Metric

from httpscale.interceptor.admin import WAKE_PING_INTERVAL, WakeFeed
from httpscale.interceptor.workers import aggregate
from httpscale.interceptor.workers.aggregate import AnswerError, WorkerKey
from httpscale.interceptor.workers.api import WorkerInfo, WorkerSet
from httpscale.runtime import TaskSupervisor, cancel_and_wait

__all__ = ["UNANSWERED_HEADER", "ParentAdmin", "ParentAdminSettings"]

log = logging.getLogger("httpscale.interceptor.workers.admin")

UNANSWERED_HEADER = "X-Httpscale-Workers-Unanswered"
_MAX_WAKE_LINE = 64 * 1024
_PARSE_ON_LOOP = 256 * 1024  # bytes of an answer parsed on the event loop; more: in a thread
T = TypeVar("T")


@dataclass(frozen=True)
class ParentAdminSettings:
    """Every answer the parent gives is also a sample of the counters it sums; the intervals
    bound the samples' age when nobody asks (0: off). A worker that crashes loses what it
    counted after its latest sample: with a scaler polling /queue (every 0.2 s), that poll's
    age; else at most `queue_sample_interval` of /queue RequestCount; /metrics counters and
    /status requestCount since the last scrape (or `scrape_sample_interval`, when set)."""

    #: Seconds one worker gets for its whole `/queue` answer (connect + body); below the
    #: scaler's poll timeout (1 s), so a slow worker costs a poll nothing.
    queue_timeout: float = 0.5
    #: Seconds one worker gets for `/metrics`, `/status` or the /wake stream's head. Larger:
    #: with 10,000 routes a worker's /metrics is ~12 MB and takes it about a second to make.
    scrape_timeout: float = 10.0
    #: Seconds without a /queue request after which the parent samples every worker's
    #: `/queue` itself (0.5 MB at 10,000 routes); 0: never.
    queue_sample_interval: float = 1.0
    #: The same for `/metrics` and `/status`; 0 (the default): never, as each sample costs a
    #: worker CPU in proportion to its routes, ~1 s at 10,000, in one piece on its event loop
    #: (requests wait meanwhile); Prometheus' scrapes are the samples.
    scrape_sample_interval: float = 0.0
    #: A dropped /wake stream of a live worker is reopened after 0.05 s, doubling to this.
    wake_backoff_max: float = 2.0

    def __post_init__(self) -> None:
        for name in ("queue_timeout", "scrape_timeout", "wake_backoff_max"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("queue_sample_interval", "scrape_sample_interval"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0 (0: off), got {getattr(self, name)!r}")


@dataclass(eq=False)
class _Worker:
    info: WorkerInfo
    session: aiohttp.ClientSession
    wake_task: asyncio.Task[None] | None = None
    wake_connected: bool = False
    failing: bool = False
    key: WorkerKey = field(init=False)

    def __post_init__(self) -> None:
        self.key = (self.info.index, self.info.generation)


class ParentAdmin:
    """Implements `workers.api.WorkerListener`: the supervisor (supervisor.py) calls it on the
    event loop as workers become ready and exit."""

    def __init__(self, workers: WorkerSet, settings: ParentAdminSettings | None = None) -> None:
        self._workers = workers
        self._settings = settings or ParentAdminSettings()
        self._live: dict[int, _Worker] = {}  # by index
        self._seen: dict[int, WorkerInfo] = {}  # the latest generation of each index
        self._queue = aggregate.QueueSum()
        self._metrics = aggregate.MetricsSum()
        self._status_counts: aggregate.CounterBook[str] = aggregate.CounterBook()
        self._wake_feed = WakeFeed()
        self._tasks = TaskSupervisor(log, owner="parent admin")
        self._sampled: dict[str, float] = {}  # path -> loop time of its latest sample
        self._started = time.time()
        self._stopping = False
        app = web.Application()
        app.add_routes([
            web.get("/queue", self._get_queue),
            web.get("/wake", self._wake_feed.stream),
            web.get("/livez", self._livez),
            web.get("/readyz", self._readyz),
            web.get("/metrics", self._get_metrics),
            web.get("/status", self._get_status),
        ])
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False,
                                     shutdown_timeout=1.0)

    async def start(self, host: str, port: int) -> tuple[str, int]:
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, reuse_address=True)
        await site.start()
        if self._settings.queue_sample_interval > 0:
            self._tasks.spawn(self._sample_every(self._settings.queue_sample_interval,
                                                 ("/queue",), self._sample_queue),
                              "/queue sampling")
        if self._settings.scrape_sample_interval > 0:
            self._tasks.spawn(self._sample_every(self._settings.scrape_sample_interval,
                                                 ("/metrics", "/status"), self._sample_scrapes),
                              "/metrics, /status sampling")
        sockname = self._runner.addresses[0]
        return str(sockname[0]), int(sockname[1])

    async def stop(self) -> None:
        self._stopping = True
        self._wake_feed.close()  # ends every /wake stream so cleanup does not wait on them
        await self._tasks.close()
        for w in list(self._live.values()):
            await w.session.close()
        self._live.clear()
        await self._runner.cleanup()

    # -- WorkerListener ------------------------------------------------------------------------

    def worker_ready(self, info: WorkerInfo) -> None:
        if self._stopping:
            return
        old = self._live.get(info.index)
        if old is not None:  # a ready without the exit before it: the old one is gone
            self.worker_exited(old.info, None)
        self._seen[info.index] = info
        w = _Worker(info, aiohttp.ClientSession(
            connector=aiohttp.UnixConnector(path=info.admin_socket)))
        self._live[info.index] = w
        w.wake_task = self._tasks.spawn(self._relay_wake(w), f"wake relay of worker "
                                        f"{info.index} gen {info.generation}", critical=False)

    def worker_exited(self, info: WorkerInfo, returncode: int | None) -> None:
        key = (info.index, info.generation)
        for book in (self._queue, self._metrics, self._status_counts):
            book.retire(key)  # its latest sample becomes base, later answers are ignored
        w = self._live.get(info.index)
        if w is None or w.key != key or self._stopping:
            return
        del self._live[info.index]
        self._tasks.spawn(self._close_worker(w), f"close worker {info.index} admin client",
                          critical=False)

    async def _close_worker(self, w: _Worker) -> None:
        try:
            if w.wake_task is not None:
                await cancel_and_wait(w.wake_task)
        finally:  # even when stop() cancels this: no client session left unclosed
            await w.session.close()

    # -- asking the workers --------------------------------------------------------------------

    async def _ask(
        self, w: _Worker, path: str, parse: Callable[[WorkerKey, bytes], T], within: float
    ) -> T:
        async with asyncio.timeout(within):
            async with w.session.get("http://worker" + path) as response:
                if response.status != 200:
                    raise AnswerError(w.key, path, f"answered {response.status}")
                body = await response.read()
        if len(body) < _PARSE_ON_LOOP:
            return parse(w.key, body)
        # Parsing megabytes (/metrics of thousands of routes) takes seconds: not on the loop
        # that answers /queue and relays wakes.
        return await asyncio.to_thread(parse, w.key, body)

    async def _ask_all(
        self, path: str, parse: Callable[[WorkerKey, bytes], T]
    ) -> tuple[dict[WorkerKey, T], list[dict[str, Any]]]:
        """Every live worker's parsed answer; the ones that failed as {index, error}."""
        workers = list(self._live.values())
        s = self._settings
        timeout = s.queue_timeout if path == "/queue" else s.scrape_timeout
        results = await asyncio.gather(*(self._ask(w, path, parse, timeout) for w in workers),
                                       return_exceptions=True)
        answers: dict[WorkerKey, T] = {}
        unanswered: list[dict[str, Any]] = []
        for w, result in zip(workers, results, strict=True):
            if isinstance(result, aiohttp.ClientError | OSError | TimeoutError | ValueError):
                error = str(result) or type(result).__name__
                unanswered.append({"index": w.info.index, "error": f"{path}: {error}"})
                if not w.failing:
                    log.warning("worker %d did not answer %s: %s", w.info.index, path, error)
                w.failing = True
            elif isinstance(result, BaseException):
                raise result
            else:
                if w.failing:
                    log.info("worker %d answers again", w.info.index)
                w.failing = False
                answers[w.key] = result
        return answers, unanswered

    async def _sample_queue(self) -> tuple[dict[WorkerKey, Any], list[dict[str, Any]]]:
        self._sampled["/queue"] = asyncio.get_running_loop().time()
        answers, unanswered = await self._ask_all("/queue", aggregate.parse_queue)
        for key, entries in answers.items():
            self._queue.observe(key, entries)
        return answers, unanswered

    async def _sample_metrics(self) -> tuple[dict[WorkerKey, Any], list[dict[str, Any]]]:
        self._sampled["/metrics"] = asyncio.get_running_loop().time()
        answers, unanswered = await self._ask_all("/metrics", aggregate.MetricsSum.parse)
        for key, families in answers.items():
            self._metrics.observe(key, families)
        return answers, unanswered

    async def _sample_status(self) -> tuple[dict[WorkerKey, Any], list[dict[str, Any]]]:
        self._sampled["/status"] = asyncio.get_running_loop().time()
        answers, unanswered = await self._ask_all("/status", aggregate.parse_status)
        for key, status in answers.items():
            self._status_counts.observe(key, aggregate.route_counts(status))
        return answers, unanswered

    async def _sample_scrapes(self) -> None:
        await asyncio.gather(self._sample_metrics(), self._sample_status())

    async def _sample_every(self, interval: float, paths: tuple[str, ...],
                            sample: Callable[[], Awaitable[object]]) -> None:
        """Sample `paths` whenever one of them was not asked for during `interval`: a scaler
        polling /queue (every 0.2 s) or Prometheus scraping already samples, and a sample of
        10,000 routes costs the workers and the parent tens of milliseconds."""
        loop = asyncio.get_running_loop()
        while True:
            due = min(self._sampled.get(p, -interval) for p in paths) + interval
            if loop.time() >= due:
                await sample()
                due = loop.time() + interval
            await asyncio.sleep(max(0.0, due - loop.time()))  # the next due time, a schedule

    # -- handlers ------------------------------------------------------------------------------

    async def _get_queue(self, request: web.Request) -> web.Response:
        answers, unanswered = await self._sample_queue()
        return web.json_response(self._queue.render(answers), headers=_unanswered(unanswered))

    async def _get_metrics(self, request: web.Request) -> web.Response:
        answers, unanswered = await self._sample_metrics()
        own = self._own_metrics(len(unanswered))
        body = await asyncio.to_thread(self._metrics.snapshot().exposition, answers, own)
        return web.Response(body=body,
                            headers={"Content-Type": CONTENT_TYPE_LATEST,
                                     **_unanswered(unanswered)})

    def _own_metrics(self, unanswered: int) -> list[Metric]:
        out = []
        for name, doc, typ, value in (
            ("httpscale_workers", "Workers configured (--workers)", "gauge", self._workers.size),
            ("httpscale_workers_ready", "Workers up and ready", "gauge", len(self._live)),
            ("httpscale_workers_unanswered", "Workers that did not answer this scrape in time",
             "gauge", unanswered),
            ("httpscale_worker_restarts", "Workers restarted after they exited", "counter",
             self._workers.restarts()),
        ):
            m = Metric(name, doc, typ)
            m.add_sample(name + ("_total" if typ == "counter" else ""), {}, value)
            out.append(m)
        return out

    async def _get_status(self, request: web.Request) -> web.Response:
        answers, unanswered = await self._sample_status()
        body = aggregate.sum_status(answers, self._status_counts)
        body["uptimeSeconds"] = round(time.time() - self._started, 3)
        body["draining"] = self._workers.draining or bool(body.get("draining"))
        body["workers"] = [self._worker_json(i) for i in range(self._workers.size)]
        body["workerRestarts"] = self._workers.restarts()
        body["workersUnanswered"] = unanswered
        body["wakeStreams"] = sum(1 for w in self._live.values() if w.wake_connected)
        return web.json_response(body)

    def _worker_json(self, index: int) -> dict[str, Any]:
        info = self._seen.get(index)
        if info is None:
            return {"index": index, "generation": None, "pid": None, "ready": False,
                    "restarts": 0, "requests": 0}
        counted = self._status_counts.sample((info.index, info.generation))
        return {
            "index": index,
            "generation": info.generation,
            "pid": info.pid,
            "ready": index in self._live,
            "restarts": info.generation,
            # What this generation counted (its latest sample): how the kernel spread the load.
            "requests": int(sum(counted.values())),
        }

    async def _livez(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, request: web.Request) -> web.Response:
        if self._workers.draining or self._stopping:
            return web.Response(status=503, text="draining\n")
        ready, size = len(self._workers.live()), self._workers.size
        if ready < size:
            return web.Response(status=503, text=f"{ready} of {size} workers ready\n")
        return web.Response(text="ok\n")

    # -- /wake ---------------------------------------------------------------------------------

    async def _relay_wake(self, w: _Worker) -> None:
        backoff = 0.05
        # A worker pings every WAKE_PING_INTERVAL: three missed pings is a dead stream.
        timeout = aiohttp.ClientTimeout(total=None, sock_read=3 * WAKE_PING_INTERVAL)
        while True:
            try:
                async with asyncio.timeout(self._settings.scrape_timeout):
                    response = await w.session.get("http://worker/wake", timeout=timeout)
                async with response:
                    if response.status != 200:
                        raise AnswerError(w.key, "/wake", f"answered {response.status}")
                    w.wake_connected = True
                    backoff = 0.05
                    while line := await response.content.readline():
                        if len(line) > _MAX_WAKE_LINE:
                            raise AnswerError(w.key, "/wake", "line too long")
                        self._relay_line(w, line)
            except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
                log.debug("wake stream of worker %d dropped: %r", w.info.index, exc)
            finally:
                w.wake_connected = False
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self._settings.wake_backoff_max)

    def _relay_line(self, w: _Worker, line: bytes) -> None:
        try:
            event = json.loads(line)
        except ValueError:
            log.warning("worker %d sent a bad /wake line: %r", w.info.index, line[:200])
            return
        if isinstance(event, dict) and event.get("event") == "wake":
            route = event.get("route")
            if isinstance(route, str):
                self._wake_feed.publish(route)


def _unanswered(unanswered: list[dict[str, Any]]) -> dict[str, str]:
    return {UNANSWERED_HEADER: str(len(unanswered))} if unanswered else {}

