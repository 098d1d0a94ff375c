"""What every test that starts processes shares: the mark that finds whatever a test left
running, a bounded wait for a child's output, and local mode run in-process on ephemeral
ports (fixtures in tests/conftest.py).

Every process a test starts carries `HTTPSCALE_TEST_MARK=<unique>` in its environment
(children inherit it), so `marked_pids` finds whatever is left of it, grandchildren included.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import time
from pathlib import Path
from typing import Any

from httpscale.config.local_file import parse_local_config
from httpscale.interceptor.settings import InterceptorSettings, InterceptorShutdown, Listen
from httpscale.local.autoscaler import AutoscalerSettings
from httpscale.local.plan import plan_apps
from httpscale.local.runner import LocalRunner, LocalSettings
from httpscale.local.supervisor import SupervisorSettings

MARK_VAR = "HTTPSCALE_TEST_MARK"


def marked_pids(mark: str) -> list[int]:
    needle = f"{MARK_VAR}={mark}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and needle in environ.split(b"\0"):
            pids.append(int(entry.name))
    return pids


def _pidfds(pids: list[int]) -> list[int]:
    """A pidfd per pid still there: readable once that process has exited (any process, not
    only our children), so exits are awaited rather than polled."""
    fds = []
    for pid in pids:
        try:
            fds.append(os.pidfd_open(pid))
        except ProcessLookupError:
            pass
    return fds


def wait_gone(mark: str, timeout: float = 10.0) -> list[int]:
    """Pids with `mark` still alive after `timeout` (the test process's own are skipped). For
    sync code (a fixture's teardown); async tests await `until_gone`."""
    deadline = time.monotonic() + timeout
    while True:
        alive = [p for p in marked_pids(mark) if p != os.getpid()]
        left = deadline - time.monotonic()
        if not alive or left <= 0:
            return alive
        fds = _pidfds(alive)
        try:
            poller = select.poll()
            for fd in fds:
                poller.register(fd, select.POLLIN)
            poller.poll(left * 1000)  # until one exits; then look again (it may have forked)
        finally:
            for fd in fds:
                os.close(fd)


async def until_gone(mark: str, within: float = 10.0) -> list[int]:
    """`wait_gone` without blocking the event loop."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        alive = [p for p in marked_pids(mark) if p != os.getpid()]
        left = deadline - loop.time()
        if not alive or left <= 0:
            return alive
        fds = _pidfds(alive)
        exited = asyncio.Event()
        try:
            for fd in fds:
                loop.add_reader(fd, exited.set)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(exited.wait(), left)
        finally:
            for fd in fds:
                loop.remove_reader(fd)
                os.close(fd)


async def communicate(proc: asyncio.subprocess.Process, within: float) -> tuple[int, bytes, bytes]:
    """Its exit status and whole output; killed (and the test failed) if not done `within`
    seconds, so a hung child never outlives the test."""
    try:
        async with asyncio.timeout(within):
            out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, out or b"", err or b""


def local_runner(*apps: dict[str, Any], sync_interval: float = 0.1) -> LocalRunner:
    """`httpscale local` for `apps` (config-file dicts) on ephemeral loopback ports, with the
    waits shortened for tests; not started."""
    config = parse_local_config({"apps": list(apps)}, source="test.yaml")
    settings = LocalSettings(
        interceptor=InterceptorSettings(
            listen=Listen(host="127.0.0.1", port=0, admin_host="127.0.0.1", admin_port=0),
            shutdown=InterceptorShutdown(readiness_delay=0, drain_timeout=5),
        ),
        autoscaler=AutoscalerSettings(
            sync_interval=sync_interval,
            supervisor=SupervisorSettings(drain_timeout=5, backoff_initial=0.1),
        ),
    )
    return LocalRunner(plan_apps(config.apps), settings)
