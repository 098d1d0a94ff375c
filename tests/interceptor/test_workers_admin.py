"""The parent admin of `--workers N`: aggregate.py fed texts (sums across restarts), then
ParentAdmin over REAL in-process interceptors, each one's admin served on a Unix socket as a
worker's is, with a small WorkerSet stand-in calling the listener as the supervisor does."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from httpscale.interceptor.admin import InterceptorAdmin
from httpscale.interceptor.app import Interceptor
from httpscale.interceptor.workers.aggregate import (
    AnswerError,
    CounterBook,
    MetricsSum,
    QueueSum,
    parse_queue,
    parse_status,
    sum_status,
)
from httpscale.interceptor.workers.api import WorkerInfo, WorkerListener
from httpscale.interceptor.workers.parent_admin import (
    UNANSWERED_HEADER,
    ParentAdmin,
    ParentAdminSettings,
)
from httpscale.scaler.collector import parse_queue as parse_queue_as_scaler

from .client import build_request
from .conftest import BackendFactory, ClientFactory, InterceptorFactory
from .helpers import APP_KEY, app_route, eventually


def _text(requests: int, durations: tuple[int, int], total: float, concurrency: int) -> str:
    """One worker's /metrics, shaped like InterceptorMetrics': a counter, a histogram
    (`durations`: observations <= 0.1 s, and above), a gauge."""
    fast, slow = durations
    return f"""# HELP httpscale_requests_total Requests answered
# TYPE httpscale_requests_total counter
httpscale_requests_total{{route="a/b",method="GET",status="200"}} {requests}.0
# HELP httpscale_request_duration_seconds Time from request head to response end
# TYPE httpscale_request_duration_seconds histogram
httpscale_request_duration_seconds_bucket{{route="a/b",le="0.1"}} {fast}.0
httpscale_request_duration_seconds_bucket{{route="a/b",le="+Inf"}} {fast + slow}.0
httpscale_request_duration_seconds_count{{route="a/b"}} {fast + slow}.0
httpscale_request_duration_seconds_sum{{route="a/b"}} {total}
# HELP httpscale_concurrency Requests in flight or held
# TYPE httpscale_concurrency gauge
httpscale_concurrency{{route="a/b"}} {concurrency}.0
"""


def _values(metrics: MetricsSum, answers: dict[tuple[int, int], str]) -> dict[str, float]:
    """Sum, print as Prometheus text, parse back: {sample name{labels}: value}."""
    parsed = {k: MetricsSum.parse(k, t) for k, t in answers.items()}
    text = metrics.snapshot().exposition(parsed).decode()
    assert "# HELP httpscale_requests_total Requests answered" in text
    assert "# TYPE httpscale_request_duration_seconds histogram" in text
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()) if k != "route")
            out[f"{s.name}{{{labels}}}"] = s.value
    return out


def _observe(metrics: MetricsSum, answers: dict[tuple[int, int], str]) -> None:
    for key, text in answers.items():
        metrics.observe(key, MetricsSum.parse(key, text))


def test_counters_histograms_and_gauges_summed() -> None:
    m = MetricsSum()
    answers = {(0, 0): _text(3, (2, 1), 0.5, 1), (1, 0): _text(4, (4, 0), 0.25, 2)}
    _observe(m, answers)
    v = _values(m, answers)
    assert v["httpscale_requests_total{method=GET,status=200}"] == 7
    assert v["httpscale_request_duration_seconds_bucket{le=0.1}"] == 6
    assert v["httpscale_request_duration_seconds_bucket{le=+Inf}"] == 7
    assert v["httpscale_request_duration_seconds_count{}"] == 7
    assert v["httpscale_request_duration_seconds_sum{}"] == 0.75
    assert v["httpscale_concurrency{}"] == 3


def test_gauges_of_shared_state_are_not_summed() -> None:
    """Every worker sees the same cluster and the same ready endpoints: two workers must not
    report two routes, or twice the endpoints; "synced" holds only when every worker synced."""
    def text(synced: int, routes: int, ready: int) -> str:
        return f"""# HELP httpscale_interceptor_cluster_synced 1 once every watch has listed.
# TYPE httpscale_interceptor_cluster_synced gauge
httpscale_interceptor_cluster_synced {synced}.0
# HELP httpscale_interceptor_cluster_routes Routes served from the cluster.
# TYPE httpscale_interceptor_cluster_routes gauge
httpscale_interceptor_cluster_routes {routes}.0
# HELP httpscale_ready_endpoints Ready endpoints
# TYPE httpscale_ready_endpoints gauge
httpscale_ready_endpoints{{route="a/b"}} {ready}.0
"""
    m = MetricsSum()
    answers = {(0, 0): text(1, 1, 2), (1, 0): text(0, 1, 3)}
    _observe(m, answers)
    parsed = {k: MetricsSum.parse(k, t) for k, t in answers.items()}
    out = {s.name: s.value for fam in text_string_to_metric_families(
        m.snapshot().exposition(parsed).decode()) for s in fam.samples}
    assert out["httpscale_interceptor_cluster_routes"] == 1
    assert out["httpscale_interceptor_cluster_synced"] == 0  # worker 1 has not listed yet
    assert out["httpscale_ready_endpoints"] == 3  # the worker that has caught up


def test_retired_base_survives_a_restart_and_gauges_are_not_retired() -> None:
    m = MetricsSum()
    _observe(m, {(0, 0): _text(3, (3, 0), 0.5, 1), (1, 0): _text(4, (4, 0), 0.5, 5)})
    m.retire((1, 0))  # worker 1 exits; generation 1 replaces it, counting from zero
    fresh = {(0, 0): _text(3, (3, 0), 0.5, 1), (1, 1): _text(1, (0, 1), 2.0, 0)}
    _observe(m, fresh)
    v = _values(m, fresh)
    assert v["httpscale_requests_total{method=GET,status=200}"] == 8  # 3 + 4 retired + 1
    assert v["httpscale_request_duration_seconds_bucket{le=0.1}"] == 7
    assert v["httpscale_request_duration_seconds_bucket{le=+Inf}"] == 8
    assert v["httpscale_request_duration_seconds_sum{}"] == 3.0
    assert v["httpscale_concurrency{}"] == 1  # the dead worker's 5 in flight are gone


def test_late_answer_of_a_retired_generation_is_not_counted_twice() -> None:
    book: CounterBook[str] = CounterBook()
    book.observe((0, 0), {"r": 5})
    book.retire((0, 0))
    book.observe((0, 0), {"r": 6})  # an answer that arrived after the exit
    book.observe((0, 1), {"r": 2})
    assert book.totals() == {"r": 7}


def test_unanswered_worker_keeps_its_counters_but_not_its_gauges() -> None:
    m = MetricsSum()
    _observe(m, {(0, 0): _text(3, (3, 0), 0.5, 1), (1, 0): _text(4, (4, 0), 0.5, 2)})
    only0 = {(0, 0): _text(5, (5, 0), 0.5, 1)}  # worker 1 did not answer this scrape
    _observe(m, only0)
    v = _values(m, only0)
    assert v["httpscale_requests_total{method=GET,status=200}"] == 9
    assert v["httpscale_concurrency{}"] == 1


def test_other_types_listed_per_worker() -> None:
    m = MetricsSum()
    text = ("# HELP build_info x\n# TYPE build_info info\nbuild_info{version=\"1\"} 1.0\n"
            "# TYPE up untyped\nup 1\n"
            "# TYPE lag summary\nlag{quantile=\"0.5\"} 1\nlag_count 3\nlag_sum 2.5\n")
    answers = {(0, 0): text, (1, 0): text}
    _observe(m, answers)
    families = {f.name: f for f in m.render({k: MetricsSum.parse(k, t)
                                             for k, t in answers.items()})}
    for name in ("build_info", "up"):
        assert sorted(s.labels["worker"] for s in families[name].samples) == ["0", "1"]
        assert all(s.value == 1 for s in families[name].samples)
    # A summary's quantiles cannot be summed: listed per worker; its count and sum are summed.
    lag = {(s.name, s.labels.get("worker")): s.value for s in families["lag"].samples}
    assert lag == {("lag", "0"): 1, ("lag", "1"): 1, ("lag_count", None): 6, ("lag_sum", None): 5}


def test_parse_error_names_the_worker() -> None:
    with pytest.raises(AnswerError, match=r"worker 1 \(generation 2\) /metrics: bad Prometheus"):
        MetricsSum.parse((1, 2), "httpscale_requests_total{route=\"a\" 1\n")
    with pytest.raises(AnswerError, match=r"worker 1 \(generation 2\) /metrics: bad Prometheus"):
        MetricsSum.parse((1, 2), b"\xff\xfe")
    with pytest.raises(AnswerError, match=r"worker 0 \(generation 0\) /queue: not JSON"):
        parse_queue((0, 0), b"{")
    with pytest.raises(AnswerError, match=r"worker 0 \(generation 4\) /status: not a JSON obj"):
        parse_status((0, 4), b"[]")


def test_queue_sum_across_restart() -> None:
    q = QueueSum()
    a0 = parse_queue((0, 0), {"a/b": {"Concurrency": 1, "RequestCount": 10}})
    a1 = parse_queue((1, 0), {"a/b": {"Concurrency": 2, "RequestCount": 5}})
    q.observe((0, 0), a0)
    q.observe((1, 0), a1)
    assert q.render({(0, 0): a0, (1, 0): a1}) == {"a/b": {"Concurrency": 3, "RequestCount": 15}}
    q.retire((1, 0))
    b1 = parse_queue((1, 1), {"a/b": {"Concurrency": 0, "RequestCount": 1}})
    q.observe((1, 1), b1)
    assert q.render({(0, 0): a0, (1, 1): b1}) == {"a/b": {"Concurrency": 1, "RequestCount": 16}}


def test_queue_route_removed_everywhere_is_not_listed_from_the_base() -> None:
    q = QueueSum()
    q.observe((0, 0), {"old/r": {"Concurrency": 0, "RequestCount": 4}})
    q.retire((0, 0))
    q.observe((0, 1), {"new/r": {"Concurrency": 0, "RequestCount": 1}})
    assert q.render({}) == {"new/r": {"Concurrency": 0, "RequestCount": 1}}


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ([], "not a JSON object"),
        ({"a/b": 3}, "'a/b' is not an object"),
        ({"a/b": {"Concurrency": -1, "RequestCount": 0}}, "Concurrency is -1"),
        ({"a/b": {"Concurrency": 0, "RequestCount": True}}, "RequestCount is True"),
        ({"a/b": {"Concurrency": 0}}, "RequestCount is None"),
    ],
)
def test_bad_queue_named(data: object, problem: str) -> None:
    with pytest.raises(AnswerError, match=rf"worker 0 \(generation 3\) /queue: .*{problem}"):
        parse_queue((0, 3), data)


def test_status_merged_and_request_count_from_the_book() -> None:
    def status(count: int, in_flight: int, draining: bool) -> dict[str, object]:
        return {
            "draining": draining,
            "connections": 2,
            "routes": {"a/b": {"concurrency": in_flight, "held": 0, "requestCount": count,
                               "endpoints": {"10.0.0.1:80": {"inFlight": in_flight,
                                                             "draining": False}},
                               "hosts": ["b.test"], "scaled": True}},
            "upstreamPools": {"10.0.0.1:80": {"connections": 1, "idle": 1}},
        }

    book: CounterBook[str] = CounterBook()
    book.observe((0, 0), {"a/b": 3})
    book.retire((0, 0))
    book.observe((0, 1), {"a/b": 1})
    book.observe((1, 0), {"a/b": 2})
    body = sum_status({(0, 1): status(1, 1, False), (1, 0): status(2, 2, True)}, book)
    route = body["routes"]["a/b"]
    assert route["requestCount"] == 6
    assert route["concurrency"] == 3
    assert route["endpoints"]["10.0.0.1:80"] == {"inFlight": 3, "draining": False}
    assert route["hosts"] == ["b.test"]
    assert route["scaled"] is True
    assert body["draining"] is True
    assert body["connections"] == 4
    assert body["upstreamPools"]["10.0.0.1:80"] == {"connections": 2, "idle": 2}


def test_status_keeps_configuration_and_shared_views_as_they_are() -> None:
    """Only the workers' shares of the work add up: a canned status code, the cluster's
    route count, the uptime are the same thing seen twice, not twice as much."""
    def status(uptime: float, in_flight: int) -> dict[str, object]:
        return {
            "uptimeSeconds": uptime,
            "cluster": {"routes": 1, "synced": True},
            "routes": {"a/c": {"concurrency": in_flight, "requestCount": 0,
                               "canned": {"status": 503, "mode": "Always"},
                               "fallbackEndpoints": {"10.0.0.2:80": {"inFlight": in_flight}}}},
            "http2UpstreamPools": {"10.0.0.2:80": {"connections": 1, "streams": in_flight}},
        }

    late = status(7.5, 2)
    late["cluster"] = {"routes": 1, "synced": True, "invalid": {"HTTPScaledObject a/bad": "x"}}
    body = sum_status({(0, 0): status(5.0, 1), (1, 0): late}, CounterBook())
    route = body["routes"]["a/c"]
    assert route["canned"] == {"status": 503, "mode": "Always"}
    assert route["concurrency"] == 3
    assert route["fallbackEndpoints"]["10.0.0.2:80"] == {"inFlight": 3}
    # Worker 1 has seen an invalid object worker 0 has not yet: the view has it.
    assert body["cluster"] == {"routes": 1, "synced": True,
                               "invalid": {"HTTPScaledObject a/bad": "x"}}
    assert body["uptimeSeconds"] == 7.5
    assert body["http2UpstreamPools"]["10.0.0.2:80"] == {"connections": 2, "streams": 3}
    assert sum_status({}, CounterBook()) == {}


# -- ParentAdmin over real interceptors -----------------------------------------------------


@dataclass
class StandInWorkers:
    """The WorkerSet of B1's supervisor, reduced to its contract: the test says when a
    worker is ready or exited and the listeners hear it, on the event loop."""

    size: int
    draining: bool = False
    _live: dict[int, WorkerInfo] = field(default_factory=dict)
    _restarts: int = 0
    _listeners: list[WorkerListener] = field(default_factory=list)

    def live(self) -> list[WorkerInfo]:
        return [self._live[i] for i in sorted(self._live)]

    def restarts(self) -> int:
        return self._restarts

    def add_listener(self, listener: WorkerListener) -> None:
        self._listeners.append(listener)

    def ready(self, info: WorkerInfo) -> None:
        if info.generation > 0:
            self._restarts += 1
        self._live[info.index] = info
        for listener in self._listeners:
            listener.worker_ready(info)

    def exited(self, info: WorkerInfo) -> None:
        del self._live[info.index]
        for listener in self._listeners:
            listener.worker_exited(info, -9)


@dataclass
class Worker:
    info: WorkerInfo
    ic: Interceptor


@dataclass
class Pool:
    workers: StandInWorkers
    admin: ParentAdmin
    address: tuple[str, int]
    session: aiohttp.ClientSession
    start_worker: Callable[..., Awaitable[Worker]]

    def url(self, path: str) -> str:
        return f"http://{self.address[0]}:{self.address[1]}{path}"

    async def get(self, path: str) -> aiohttp.ClientResponse:
        async with self.session.get(self.url(path)) as resp:
            await resp.read()
            return resp

    async def json(self, path: str) -> Any:
        async with self.session.get(self.url(path)) as resp:
            assert resp.status == 200, (path, resp.status)
            return await resp.json()

    async def requests_total(self) -> float:
        async with self.session.get(self.url("/metrics")) as resp:
            text = await resp.text()
        return sum(s.value for f in text_string_to_metric_families(text)
                   for s in f.samples if s.name == "httpscale_requests_total")


@pytest.fixture
async def pool(make_interceptor: InterceptorFactory, tmp_path: Path) -> AsyncIterator[Any]:
    """`await pool(size, routes)` -> a started ParentAdmin and a way to start workers:
    `await p.start_worker(index, generation=0)` runs a real Interceptor whose admin (the
    real InterceptorAdmin) listens on `tmp_path/worker-<i>-<gen>.sock`, then says ready."""
    runners: list[tuple[InterceptorAdmin, web.AppRunner]] = []
    made: list[Pool] = []

    async def make(size: int, routes: list[Any], **settings: float) -> Pool:
        workers = StandInWorkers(size)
        admin = ParentAdmin(workers, ParentAdminSettings(**settings))
        workers.add_listener(admin)
        address = await admin.start("127.0.0.1", 0)

        async def start_worker(index: int, generation: int = 0) -> Worker:
            ic = await make_interceptor(routes=routes)
            worker_admin = InterceptorAdmin(ic.proxy, ic.queue)
            ic.add_wake_listener(worker_admin.wake)
            runner = web.AppRunner(worker_admin.app, access_log=None, shutdown_timeout=1.0)
            await runner.setup()
            runners.append((worker_admin, runner))
            path = str(tmp_path / f"worker-{index}-{generation}.sock")
            await web.UnixSite(runner, path).start()
            info = WorkerInfo(index, generation, os.getpid(), path, 0.0)
            workers.ready(info)
            return Worker(info, ic)

        p = Pool(workers, admin, address, aiohttp.ClientSession(), start_worker)
        made.append(p)
        return p

    yield make
    for p in made:
        await p.session.close()
        await p.admin.stop()
    for worker_admin, runner in runners:
        await worker_admin.stop()  # ends its /wake streams (its own TCP runner never started)
        await runner.cleanup()


PoolFactory = Callable[..., Awaitable[Pool]]


async def _poll(read: Callable[[], Awaitable[Any]], done: Callable[[Any], bool]) -> None:
    async with asyncio.timeout(5):
        while not done(await read()):  # noqa: ASYNC110 - state behind HTTP, no event to await
            await asyncio.sleep(0.01)


async def _next_event(stream: aiohttp.ClientResponse) -> Any:
    """The next line of a /wake stream that is not a ping (one comes every 5 s)."""
    async with asyncio.timeout(5):
        while (event := json.loads(await stream.content.readline())) == {"event": "ping"}:
            pass
    return event


async def _send(clients: ClientFactory, ic: Interceptor, n: int) -> None:
    conn = await clients(ic.proxy_address)
    for _ in range(n):
        assert (await conn.request("GET", "/")).status == 200


async def test_sums_equal_requests_sent_through_each_worker(
    pool: PoolFactory, backends: BackendFactory, clients: ClientFactory
) -> None:
    b = await backends()
    p = await pool(2, [app_route(b.endpoint)])
    assert (await p.get("/readyz")).status == 503  # 0 of 2 ready
    w0, w1 = await p.start_worker(0), await p.start_worker(1)
    assert (await p.get("/readyz")).status == 200
    await _send(clients, w0.ic, 3)
    await _send(clients, w1.ic, 5)

    queue = await p.json("/queue")
    assert queue == {APP_KEY: {"Concurrency": 0, "RequestCount": 8}}
    assert parse_queue_as_scaler(queue) == {APP_KEY: (0, 8)}  # a drop-in for the scaler
    assert await p.requests_total() == 8
    status = await p.json("/status")
    assert status["routes"][APP_KEY]["requestCount"] == 8
    assert status["routes"][APP_KEY]["hosts"] == ["app.test"]
    assert [(w["index"], w["generation"], w["ready"], w["requests"])
            for w in status["workers"]] == [(0, 0, True, 3), (1, 0, True, 5)]
    assert status["workersUnanswered"] == []
    assert (await p.get("/livez")).status == 200

    p.workers.draining = True
    assert (await p.get("/readyz")).status == 503


async def test_wake_relayed_at_once_from_either_worker(
    pool: PoolFactory, clients: ClientFactory
) -> None:
    p = await pool(2, [app_route(dynamic=True)])  # no endpoints: requests are held
    w0, w1 = await p.start_worker(0), await p.start_worker(1)
    async with p.session.get(p.url("/wake")) as stream:
        assert stream.headers["Content-Type"] == "application/x-ndjson"
        # No event tells the test that the parent's own streams to the workers are open.
        await _poll(lambda: p.json("/status"), lambda s: s["wakeStreams"] == 2)
        for w in (w1, w0):
            conn = await clients(w.ic.proxy_address)
            await conn.send(build_request("GET", "/cold"))
            assert await _next_event(stream) == {"event": "wake", "route": APP_KEY}
        status = await p.json("/status")
        assert status["wakeStreams"] == 2
        assert status["routes"][APP_KEY]["held"] == 2
        assert await p.json("/queue") == {APP_KEY: {"Concurrency": 2, "RequestCount": 2}}

        # Worker 1 restarts: its new generation gets a stream of its own, relayed the same.
        p.workers.exited(w1.info)
        await w1.ic.shutdown(force=True)
        fresh = await p.start_worker(1, generation=1)
        await _poll(lambda: p.json("/status"), lambda s: s["wakeStreams"] == 2)
        conn = await clients(fresh.ic.proxy_address)
        await conn.send(build_request("GET", "/cold"))
        assert await _next_event(stream) == {"event": "wake", "route": APP_KEY}


async def test_sum_never_goes_backwards_when_a_worker_is_replaced(
    pool: PoolFactory, backends: BackendFactory, clients: ClientFactory
) -> None:
    b = await backends()
    p = await pool(2, [app_route(b.endpoint)])
    w0, w1 = await p.start_worker(0), await p.start_worker(1)
    await _send(clients, w0.ic, 2)
    await _send(clients, w1.ic, 4)
    # Every answer is a sample: after these, the parent knows what worker 1 counted.
    assert (await p.json("/queue"))[APP_KEY]["RequestCount"] == 6
    assert await p.requests_total() == 6
    assert (await p.json("/status"))["routes"][APP_KEY]["requestCount"] == 6

    p.workers.exited(w1.info)  # as if killed: its admin never answers again
    await w1.ic.shutdown()
    assert (await p.json("/queue"))[APP_KEY]["RequestCount"] == 6
    assert await p.requests_total() == 6
    assert (await p.get("/readyz")).status == 503

    fresh = await p.start_worker(1, generation=1)
    assert (await p.json("/queue"))[APP_KEY]["RequestCount"] == 6
    await _send(clients, fresh.ic, 3)
    assert (await p.json("/queue"))[APP_KEY]["RequestCount"] == 9
    assert await p.requests_total() == 9
    status = await p.json("/status")
    assert status["routes"][APP_KEY]["requestCount"] == 9
    assert status["workerRestarts"] == 1
    assert status["workers"][1] == {"index": 1, "generation": 1, "pid": os.getpid(),
                                    "ready": True, "restarts": 1, "requests": 3}


async def test_periodic_sample_bounds_what_a_crash_loses(
    pool: PoolFactory, backends: BackendFactory, clients: ClientFactory
) -> None:
    """Nobody asks the parent between the requests and the crash: the sampling alone
    carried worker 1's counts into the retired base."""
    b = await backends()
    p = await pool(2, [app_route(b.endpoint)], queue_sample_interval=0.05,
                   scrape_sample_interval=0.05)
    await p.start_worker(0)
    w1 = await p.start_worker(1)
    await _send(clients, w1.ic, 4)
    # Read from the parent's book, not its /queue: asking would itself take a sample.
    await eventually(lambda: p.admin._queue.counts.totals().get(APP_KEY) == 4
                     and sum(v for (_, name, _), v in p.admin._metrics.counts.totals().items()
                             if name == "httpscale_requests_total") == 4,
                     what="a periodic sample of worker 1")
    p.workers.exited(w1.info)
    await w1.ic.shutdown()
    assert (await p.json("/queue"))[APP_KEY]["RequestCount"] == 4
    assert await p.requests_total() == 4


async def test_a_worker_that_does_not_answer_is_left_out_and_named(
    pool: PoolFactory, backends: BackendFactory, clients: ClientFactory, tmp_path: Path
) -> None:
    b = await backends()
    p = await pool(2, [app_route(b.endpoint)], queue_timeout=0.3, scrape_timeout=0.3)
    w0 = await p.start_worker(0)
    await _send(clients, w0.ic, 3)
    # Worker 1's admin socket accepts and never answers (a worker stuck in a long loop).
    accepted: list[asyncio.StreamWriter] = []

    async def stuck(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)

    path = str(tmp_path / "stuck.sock")
    server = await asyncio.start_unix_server(stuck, path)
    try:
        p.workers.ready(WorkerInfo(1, 0, 1, path, 0.0))
        async with p.session.get(p.url("/queue")) as resp:
            assert resp.status == 200
            assert resp.headers[UNANSWERED_HEADER] == "1"
            assert await resp.json() == {APP_KEY: {"Concurrency": 0, "RequestCount": 3}}
        status = await p.json("/status")
        [(index, error)] = [(u["index"], u["error"]) for u in status["workersUnanswered"]]
        assert index == 1 and error.startswith("/status")
        assert status["routes"][APP_KEY]["requestCount"] == 3
        assert await p.requests_total() == 3
    finally:
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()
