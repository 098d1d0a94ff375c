"""Fixtures: started interceptors, backends and client connections, all torn down in order
(clients, then interceptors, then backends). The check that no task outlives a test and
nothing logs an error is tests/conftest.py's, for every directory."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from httpscale.interceptor.app import Interceptor
from httpscale.routing.spec import RouteSpec

from .backends import Backend, Handler, start_backend
from .client import Conn
from .helpers import app_route, settings

if os.environ.get("HTTPSCALE_TEST_UVLOOP") == "1":
    # Run these tests on uvloop, the loop production uses (conftest hooks apply to this
    # directory only).
    import uvloop

    def pytest_asyncio_loop_factories(
        config: pytest.Config, item: pytest.Item
    ) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
        return {"uvloop": uvloop.new_event_loop}


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
