"""Fixtures: started interceptors, backends and client connections, all torn down in order
(clients, then interceptors, then backends), and a check that no task outlives a test."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from httpscale.interceptor.app import Interceptor
from httpscale.routing.spec import RouteSpec

from .backends import Backend, Handler, start_backend
from .client import Conn
from .helpers import app_route, settings


def _error_logs(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """ERROR records from the interceptor or asyncio (a task that died, an unhandled callback
    exception) in any phase of the test so far."""
    records = [*caplog.get_records("setup"), *caplog.get_records("call"), *caplog.records]
    return [
        r
        for r in records
        if r.levelno >= logging.ERROR and r.name.split(".")[0] in ("httpscale", "asyncio")
    ]


if os.environ.get("HTTPSCALE_TEST_UVLOOP") == "1":
    # Run these tests on uvloop, the loop production uses (conftest hooks apply to this
    # directory only).
    import uvloop

    def pytest_asyncio_loop_factories(
        config: pytest.Config, item: pytest.Item
    ) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
        return {"uvloop": uvloop.new_event_loop}


@pytest.fixture(autouse=True)
async def no_leaked_tasks(caplog: pytest.LogCaptureFixture) -> AsyncIterator[None]:
    """After every other fixture is torn down, no task of the test may still be pending, and
    nothing may have logged an error (a proxy task that died is logged, not raised)."""
    before = asyncio.all_tasks()
    yield
    errors = _error_logs(caplog)
    if errors:
        first = errors[0]
        detail = first.getMessage()
        if first.exc_info and first.exc_info[1] is not None:
            detail += f": {type(first.exc_info[1]).__name__}: {first.exc_info[1]}"
        pytest.fail(f"{len(errors)} error log record(s); first from {first.name}: {detail}")
    me = asyncio.current_task()
    for _ in range(10):  # let done-callbacks of just-finished tasks run
        await asyncio.sleep(0)
    leaked = [t for t in asyncio.all_tasks() - before if t is not me and not t.done()]
    if leaked:
        # Say which ones still end by themselves (shutdown did not await them) and which never do.
        _, still = await asyncio.wait(leaked, timeout=1.0)
        for t in still:
            t.cancel()
        await asyncio.gather(*still, return_exceptions=True)
        names = sorted(f"{t.get_name()}: {t.get_coro()!r}" for t in leaked)
        pytest.fail(
            f"{len(leaked)} task(s) pending after teardown ({len(still)} never finished): {names}"
        )


BackendFactory = Callable[..., Awaitable[Backend]]


@pytest.fixture
async def backends() -> AsyncIterator[BackendFactory]:
    made: list[Backend] = []

    async def make(
        handler: Handler | None = None, name: str = "backend", **bufs: int | None
    ) -> Backend:
        b = await start_backend(handler, name, **bufs)
        made.append(b)
        return b

    yield make
    for b in reversed(made):
        await b.close()


InterceptorFactory = Callable[..., Awaitable[Interceptor]]


@pytest.fixture
async def make_interceptor(backends: BackendFactory) -> AsyncIterator[InterceptorFactory]:
    """`await make_interceptor(routes=[...], **settings_kw)` -> a started Interceptor.

    Shut down at teardown even when the test already did (shutdown must be idempotent).
    """
    made: list[Interceptor] = []

    async def make(routes: list[RouteSpec] | None = None, **kw: Any) -> Interceptor:
        s = kw.pop("settings", None) or settings(**kw)
        ic = Interceptor(s)
        await ic.start()
        made.append(ic)
        if routes is not None:
            ic.set_routes(routes)
        return ic

    yield make
    for ic in reversed(made):
        await ic.shutdown()


ClientFactory = Callable[..., Awaitable[Conn]]


@pytest.fixture
async def clients(make_interceptor: InterceptorFactory) -> AsyncIterator[ClientFactory]:
    """`await clients(address)` -> an open Conn, closed at teardown before the interceptor."""
    made: list[Conn] = []

    async def make(address: tuple[str, int], **kw: Any) -> Conn:
        c = await Conn.open(address, **kw)
        made.append(c)
        return c

    yield make
    for c in made:
        await c.aclose()


ProxiedFactory = Callable[..., Awaitable[tuple[Interceptor, Backend]]]


@pytest.fixture
async def proxied(
    backends: BackendFactory, make_interceptor: InterceptorFactory, clients: ClientFactory
) -> ProxiedFactory:
    """`await proxied(handler, route_kw=..., **settings_kw)` -> (interceptor, backend), with
    one route `default/app` for host `app.test` to the backend."""

    async def make(
        handler: Handler | None = None, *, route_kw: dict[str, Any] | None = None, **kw: Any
    ) -> tuple[Interceptor, Backend]:
        backend = await backends(handler)
        ic = await make_interceptor(routes=[app_route(backend.endpoint, **(route_kw or {}))], **kw)
        return ic, backend

    return make
