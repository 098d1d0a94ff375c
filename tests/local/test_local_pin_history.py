"""Local mode's admin additions with real processes: `POST/DELETE /apps/{name}/pin` and
`GET /history`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import aiohttp
from localkit import eventually, hello_command, http_get

from httpscale.local.history import AppHistory
from httpscale.local.runner import LocalRunner
from httpscale.routing.spec import Endpoint

Runner = Callable[..., Any]


def app(name: str, *hello_args: str, **fields: Any) -> dict[str, Any]:
    run = {
        "command": list(hello_command(*hello_args)),
        "readiness": {"httpGet": {"path": "/healthz"}},
        "stopGracePeriod": 5,
    }
    return {"name": name, "hosts": [f"{name}.localhost"], "run": run, **fields}


UPSTREAM = {"name": "fixed", "hosts": ["fixed.localhost"], "run": {"upstream": "http://127.0.0.1:1"}}


async def call(runner: LocalRunner, method: str, path: str, body: object = None,
               raw: bytes | None = None) -> tuple[int, Any]:
    host, port = runner.interceptor.admin_address
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session,
        session.request(method, f"http://{host}:{port}{path}", json=body, data=raw) as resp,
    ):
        return resp.status, await resp.json(content_type=None)


async def request(runner: LocalRunner, host: str) -> tuple[int, dict[str, str], bytes]:
    return await http_get(Endpoint(*runner.interceptor.proxy_address), "/", host=host)


async def test_pin_holds_the_count_against_load_and_release_gives_it_back(local: Runner) -> None:
    runner = await local(
        app("busy", "--response-delay", "0.3", replicas={"min": 0, "max": 3},
            scaledownPeriod=1, scalingMetric={"concurrency": {"targetValue": 1}}),
        UPSTREAM,
    )
    scaler = runner.autoscaler.scalers["local/busy"]

    # Pinned at 2 from zero, answered once both are ready.
    status, body = await call(runner, "POST", "/apps/busy/pin?wait=20", {"replicas": 2})
    assert (status, body) == (200, {"app": "busy", "pinned": 2, "desired": 2, "ready": 2})
    assert (await call(runner, "GET", "/status"))[1]["apps"]["busy"]["pinned"] == 2
    assert "pinned" not in (await call(runner, "GET", "/status"))[1]["apps"]["fixed"]

    # Pinned at 1: 6 requests of 0.3 s in flight against a target of 1 do not scale it out.
    assert (await call(runner, "POST", "/apps/busy/pin?wait=20", {"replicas": 1}))[0] == 200
    results = await asyncio.gather(*(request(runner, "busy.localhost") for _ in range(6)))
    assert [r[0] for r in results] == [200] * 6
    assert len({r[1]["x-hello-pid"] for r in results}) == 1
    assert scaler.supervisor.desired == 1 and scaler.pinned == 1

    # Released: the autoscaler takes it back (idle for scaledownPeriod: down to zero).
    status, body = await call(runner, "DELETE", "/apps/busy/pin")
    assert status == 200 and body["pinned"] is None
    assert (await call(runner, "GET", "/apps/busy/pin"))[1]["pinned"] is None
    await eventually(lambda: not scaler.supervisor.replicas, within=20)
    counts = [n for _, n in (await call(runner, "GET", "/history"))[1]["apps"]["busy"]["replicas"]]
    assert counts == [0, 1, 2, 1, 0], counts


async def test_pin_errors(local: Runner) -> None:
    runner = await local(app("hello", replicas={"min": 0, "max": 2}), UPSTREAM)
    cases: list[tuple[str, str, Any, bytes | None, int, str]] = [
        ("POST", "/apps/nope/pin", {"replicas": 1}, None, 404, "no app named 'nope'"),
        ("POST", "/apps/fixed/pin", {"replicas": 1}, None, 409, "fixed upstream"),
        ("POST", "/apps/hello/pin", {"replicas": 3}, None, 400, "within 0..2"),
        ("POST", "/apps/hello/pin", {"replicas": -1}, None, 400, "within 0..2"),
        ("POST", "/apps/hello/pin", {"replicas": True}, None, 400, "whole number"),
        ("POST", "/apps/hello/pin", {"count": 1}, None, 400, "whole number"),
        ("POST", "/apps/hello/pin", None, b"{", 400, "must be JSON"),
        ("POST", "/apps/hello/pin?wait=x", {"replicas": 1}, None, 400, "wait must be seconds"),
        ("POST", "/apps/hello/other", {"replicas": 1}, None, 404, "no such admin path"),
    ]
    for method, path, body, raw, want, message in cases:
        status, doc = await call(runner, method, path, body, raw)
        assert status == want and message in doc["error"], (path, body, doc)
    assert runner.autoscaler.scalers["local/hello"].pinned is None  # nothing took effect
    host, port = runner.interceptor.admin_address
    async with aiohttp.ClientSession() as session:
        async with session.put(f"http://{host}:{port}/apps/hello/pin") as resp:
            assert resp.status == 405
        async with session.get(f"http://{host}:{port}/nothing-here") as resp:
            assert resp.status == 404
        async with session.get(f"http://{host}:{port}/queue") as resp:
            assert resp.status == 200  # the interceptor's own routes are untouched


async def test_pin_wait_times_out_with_504_and_keeps_the_pin(local: Runner) -> None:
    runner = await local(app("slow", "--startup-delay", "30", replicas={"min": 0, "max": 1}))
    status, body = await call(runner, "POST", "/apps/slow/pin?wait=0.3", {"replicas": 1})
    assert status == 504 and body["pinned"] == 1 and body["ready"] == 0
    assert body["error"] == "0 of 1 replicas ready after 0.3s"
    assert (await call(runner, "DELETE", "/apps/slow/pin"))[0] == 200


async def test_history_records_replicas_and_cold_starts(local: Runner) -> None:
    before = time.time()
    runner = await local(
        app("hello", "--startup-delay", "0.3", replicas={"min": 0, "max": 2}, scaledownPeriod=60),
        UPSTREAM,
    )
    status, doc = await call(runner, "GET", "/history")
    assert status == 200 and set(doc["apps"]) == {"hello"}  # fixed upstreams are left out
    hello = doc["apps"]["hello"]
    assert hello["route"] == "local/hello" and (hello["min"], hello["max"]) == (0, 2)
    assert hello["cold_starts"] == [] and len(hello["replicas"]) == 1
    [[started, count]] = hello["replicas"]
    assert count == 0 and before <= started <= doc["now"]

    sent = time.time()
    assert (await request(runner, "hello.localhost"))[0] == 200  # held through a cold start
    answered = time.time()
    doc = (await call(runner, "GET", "/history"))[1]
    hello = doc["apps"]["hello"]
    [[held_at, waited]] = hello["cold_starts"]
    # The request was held from about when it was sent until the replica was ready: at least
    # the app's startup delay, and no longer than the request took.
    assert sent - 0.05 <= held_at <= answered and 0.3 <= waited <= answered - sent
    [_, [spawned_at, one]] = hello["replicas"]
    assert one == 1 and started <= spawned_at <= held_at + waited
    assert doc["now"] >= spawned_at

    # A warm request is no cold start; a pin to 2 is one more point.
    assert (await request(runner, "hello.localhost"))[0] == 200
    assert (await call(runner, "POST", "/apps/hello/pin?wait=20", {"replicas": 2}))[0] == 200
    hello = (await call(runner, "GET", "/history"))[1]["apps"]["hello"]
    assert len(hello["cold_starts"]) == 1
    assert [n for _, n in hello["replicas"]] == [0, 1, 2]
    times = [t for t, _ in hello["replicas"]]
    assert times == sorted(times)


def test_history_is_bounded_and_skips_repeats() -> None:
    history = AppHistory(max_points=3)
    for t, n in [(1.0, 0), (2.0, 0), (3.0, 1), (4.0, 2), (5.0, 1), (6.0, 1)]:
        history.running(t, n)
    for i in range(5):
        history.cold_start(float(i), 0.5)
    doc = history.to_json("local/a", 0, 3)
    assert doc["replicas"] == [[3.0, 1], [4.0, 2], [5.0, 1]]
    assert doc["cold_starts"] == [[2.0, 0.5], [3.0, 0.5], [4.0, 0.5]]
