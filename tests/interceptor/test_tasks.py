"""The interceptor's owned tasks (a route source beside the proxy): one dying fails the
interceptor (`wait()` raises, so the command exits non-zero); they keep running through the
drain and are cancelled after it."""

from __future__ import annotations

import asyncio
import logging

import pytest

from httpscale.interceptor.settings import InterceptorShutdown

from .backends import BackendConn, Request, http_app
from .client import build_request
from .helpers import app_route, wait_refused


async def test_a_route_source_that_dies_fails_the_interceptor(
    make_interceptor, caplog: pytest.LogCaptureFixture
) -> None:
    ic = await make_interceptor()
    broke = asyncio.Event()

    async def source() -> None:
        await broke.wait()
        raise OSError("watch connection lost")

    ic.tasks.spawn(source(), "route source")
    waiter = asyncio.create_task(ic.wait())
    broke.set()
    with pytest.raises(OSError, match="watch connection lost"):
        await waiter
    died = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.getMessage() for r in died] == ["route source died"]
    # Expected here; the directory's check fails a test on any error record.
    caplog.clear()


async def test_a_route_source_that_returns_fails_the_interceptor(make_interceptor, caplog) -> None:
    ic = await make_interceptor()

    async def source() -> None:
        return None

    ic.tasks.spawn(source(), "route source")
    with pytest.raises(RuntimeError, match="route source returned unexpectedly"):
        await ic.wait()
    caplog.clear()


async def test_a_route_source_runs_through_the_drain_and_is_cancelled_after_it(
    backends, make_interceptor, clients
) -> None:
    entered, release = asyncio.Event(), asyncio.Event()

    async def app(req: Request, conn: BackendConn) -> None:
        entered.set()
        await release.wait()
        await conn.respond(200, b"done")

    b = await backends(http_app(app))
    ic = await make_interceptor(
        routes=[app_route(b.endpoint)],
        shutdown=InterceptorShutdown(readiness_delay=0.0, drain_timeout=5.0),
    )
    answered: list[int] = []
    seen: list[tuple[bool, list[int]]] = []
    started = asyncio.Event()

    async def source() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            seen.append((ic.proxy.draining, list(answered)))

    task = ic.tasks.spawn(source(), "route source")
    await started.wait()
    busy = await clients(ic.proxy_address)
    await busy.send(build_request("GET", "/hold"))
    await entered.wait()
    stopping = asyncio.create_task(ic.shutdown())
    try:
        await wait_refused(ic.proxy_address)
        assert not task.done(), "the source still runs while requests drain"
        release.set()
        answered.append((await busy.read_response()).status)
    finally:
        await stopping
    assert task.cancelled()
    assert seen == [(True, [200])], "cancelled once the drain is over, not before"
    assert ic.tasks.tasks == ()
