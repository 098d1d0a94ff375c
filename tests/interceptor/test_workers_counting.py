"""`httpscale interceptor --workers 2` as real processes: the parent's one admin counts every
request exactly, also across a worker killed with SIGKILL and restarted."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from .backends import Backend
from .client import get
from .helpers import admin_get

pytestmark = pytest.mark.slow

APP_KEY_LOCAL = "local/app"  # local-mode config files put their apps in namespace `local`


async def _start(config: Path) -> tuple[asyncio.subprocess.Process, tuple[str, int],
                                        tuple[str, int]]:
    """The parent with 2 workers; the proxy's and the admin's addresses from its log line
    (the rest of its log is read by the caller, so a full pipe never blocks it)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "httpscale", "interceptor", "--config", str(config),
        "--workers", "2", "--host", "127.0.0.1", "--port", "0",
        "--admin-host", "127.0.0.1", "--admin-port", "0", "--readiness-delay", "0",
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stderr is not None
    async with asyncio.timeout(60):
        while True:
            line = (await proc.stderr.readline()).decode()
            assert line, "interceptor exited before listening"
            if m := re.search(r"proxy on ([\d.]+):(\d+), admin on ([\d.]+):(\d+)", line):
                return proc, (m.group(1), int(m.group(2))), (m.group(3), int(m.group(4)))


async def _drain(stream: asyncio.StreamReader) -> None:
    while await stream.readline():
        pass


async def _json(admin: tuple[str, int], path: str) -> Any:
    resp = await admin_get(admin, path)
    assert resp.status == 200, (path, resp.status, resp.body)
    return json.loads(resp.body)


async def _request_count(admin: tuple[str, int]) -> int:
    return int((await _json(admin, "/queue"))[APP_KEY_LOCAL]["RequestCount"])


async def _metrics_count(admin: tuple[str, int]) -> float:
    text = (await admin_get(admin, "/metrics")).text
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == "httpscale_requests_total" and s.labels.get("route") == APP_KEY_LOCAL)


async def _until(read: Callable[[], Awaitable[Any]], done: Callable[[Any], bool],
                 within: float = 30.0) -> Any:
    """Poll the parent's admin: a restarted worker has no event a test can await."""
    async with asyncio.timeout(within):
        while not done(value := await read()):  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    return value


async def _send(proxy: tuple[str, int], n: int) -> None:
    # A fresh connection each: SO_REUSEPORT spreads connections, not requests.
    for _ in range(n):
        assert (await get(proxy, "/", host="app.test")).status == 200


async def test_counts_exact_across_two_workers_and_a_killed_one(
    backends: Callable[..., Awaitable[Backend]], tmp_path: Path, mark: str
) -> None:
    b = await backends()
    config = tmp_path / "routes.yaml"
    config.write_text("apps:\n  - name: app\n    hosts: [app.test]\n"
                      f"    run: {{upstream: 'http://127.0.0.1:{b.port}'}}\n")
    proc, proxy, admin = await _start(config)
    assert proc.stderr is not None
    log = asyncio.create_task(_drain(proc.stderr))
    try:
        n, m = 40, 12
        await _send(proxy, n)
        assert await _request_count(admin) == n  # this answer also samples every worker
        assert await _metrics_count(admin) == n
        status = await _json(admin, "/status")
        assert status["routes"][APP_KEY_LOCAL]["requestCount"] == n
        victim = status["workers"][1]
        assert victim["ready"] and victim["generation"] == 0
        # 40 connections spread by the kernel: the victim served some (2^-39 that it did not).
        assert 0 < victim["requests"] < n

        os.kill(victim["pid"], signal.SIGKILL)
        restarted = await _until(
            lambda: _json(admin, "/status"),
            lambda s: s["workers"][1]["generation"] == 1 and s["workers"][1]["ready"],
        )
        assert restarted["workerRestarts"] == 1
        assert restarted["workers"][1]["pid"] != victim["pid"]
        assert await _request_count(admin) == n
        assert await _metrics_count(admin) == n
        assert restarted["routes"][APP_KEY_LOCAL]["requestCount"] == n

        await _send(proxy, m)
        assert await _request_count(admin) == n + m
        assert await _metrics_count(admin) == n + m
        assert (await _json(admin, "/status"))["routes"][APP_KEY_LOCAL]["requestCount"] == n + m
        assert (await admin_get(admin, "/readyz")).status == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            rc = await proc.wait()
            await log
    assert rc == 0
