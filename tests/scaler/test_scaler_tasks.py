"""The scaler's owned tasks: one dying ends `serve()` with an error (the command exits
non-zero instead of serving stale numbers), after an ordered stop that leaves no task."""

from __future__ import annotations

import asyncio
import logging

import click
import pytest
from scaler_helpers import fast_settings

from httpscale.scaler.app import Scaler
from httpscale.scaler.cli import serve
from httpscale.scaler.collector import Collector
from httpscale.scaler.routes import StaticRouteSource


class BreakingDiscovery:
    """Interceptor discovery whose watch breaks once `broken` is set."""

    def __init__(self) -> None:
        self.broken = asyncio.Event()

    async def run(self, sink: Collector) -> None:
        sink.set_interceptors([])
        await self.broken.wait()
        raise OSError("EndpointSlice watch lost")


@pytest.mark.expected_errors("interceptor discovery died")
async def test_a_dying_task_stops_the_scaler_and_fails_serve(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "httpscale.scaler")
    before = asyncio.all_tasks()
    discovery = BreakingDiscovery()
    discovery.broken.set()
    with pytest.raises(click.ClickException, match=r"scaler failed: .*EndpointSlice watch lost"):
        await serve(fast_settings(), StaticRouteSource(()), discovery)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == ["interceptor discovery died"]
    assert any(r.getMessage() == "scaler stopped" for r in caplog.records)
    leaked = [t for t in asyncio.all_tasks() - before
              if t is not asyncio.current_task() and not t.done()]
    assert leaked == [], [t.get_name() for t in leaked]


@pytest.mark.expected_errors("interceptor discovery died")
async def test_wait_raises_what_the_task_raised() -> None:
    discovery = BreakingDiscovery()
    scaler = Scaler(fast_settings(), StaticRouteSource(()), discovery)
    await scaler.start()
    try:
        waiter = asyncio.create_task(scaler.wait())
        discovery.broken.set()
        with pytest.raises(OSError, match="EndpointSlice watch lost"):
            await waiter
        assert scaler.admin_port > 0
    finally:
        await scaler.stop()
