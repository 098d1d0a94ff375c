"""`httpscale interceptor --workers 2` as real processes on loopback: both workers serve one
port (port 0 included), a worker killed with SIGKILL is restarted while requests keep being
answered, SIGTERM drains every worker (a slow request in flight on each completes, new
connections are refused, exit 0), and `--workers 1` stays a single process.

Which worker holds what is read from each worker's own admin server (its Unix socket, the
path it logs), never from the data path."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from .backends import Backend, BackendConn, Request, http_app
from .client import Conn, get

pytestmark = pytest.mark.usefixtures("mark")  # no process may outlive a test

LOOPBACK = ("--host", "127.0.0.1", "--port", "0", "--admin-host", "127.0.0.1",
            "--admin-port", "0")
STARTUP = 60.0  # seconds; bounds, not expectations: the machine may be loaded


class Workers:
    """The parent process; its log (stderr) is read as it comes, for what it says."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._changed = asyncio.Condition()
        self._pump = asyncio.create_task(self._read())
        self.proxy: tuple[str, int] = ("", 0)
        self.admin: tuple[str, int] = ("", 0)

    async def _read(self) -> None:
        assert self.proc.stderr is not None
        while line := await self.proc.stderr.readline():
            async with self._changed:
                self.lines.append(line.decode())
                self._changed.notify_all()
        async with self._changed:
            self.lines.append("")  # EOF
            self._changed.notify_all()

    async def wait_for(self, pattern: str, *, after: int = 0,
                       within: float = STARTUP) -> re.Match[str]:
        """The first log line from index `after` on matching `pattern`."""
        async with asyncio.timeout(within), self._changed:
            seen = after
            while True:
                for line in self.lines[seen:]:
                    if m := re.search(pattern, line):
                        return m
                    assert line, "the parent exited:\n" + "".join(self.lines[-30:])
                seen = len(self.lines)
                await self._changed.wait()

    async def log_closed(self) -> None:
        async with asyncio.timeout(60):
            await self._pump

    def admin_socket(self, index: int, after: int = 0) -> str:
        """The admin socket path worker `index` logged last (from line `after` on)."""
        found = [m.group(1) for line in self.lines[after:]
                 if (m := re.search(rf"\[worker {index}\] .*admin on unix:(\S+),", line))]
        assert found, f"worker {index} logged no admin socket"
        return found[-1]

    async def worker_status(self, index: int) -> Any:
        path = self.admin_socket(index)
        async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=path),
                                         timeout=aiohttp.ClientTimeout(total=10)) as http, \
                http.get("http://worker/status") as resp:
            assert resp.status == 200
            return await resp.json()

    async def stop(self, sig: signal.Signals | None = signal.SIGTERM) -> int:
        """Send `sig` (None: nothing) and wait for the exit status."""
        if sig is not None and self.proc.returncode is None:
            self.proc.send_signal(sig)
        async with asyncio.timeout(60):
            rc = await self.proc.wait()
        await self.log_closed()
        return rc


@asynccontextmanager
async def workers(tmp_path: Path, upstream: int, *options: str) -> AsyncIterator[Workers]:
    config = tmp_path / "routes.yaml"
    config.write_text("apps:\n  - name: app\n    hosts: [app.test]\n"
                      f"    run: {{upstream: 'http://127.0.0.1:{upstream}'}}\n")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "httpscale", "interceptor", "--config", str(config), *LOOPBACK,
        *options, stderr=asyncio.subprocess.PIPE,
    )
    w = Workers(proc)
    try:
        m = await w.wait_for(
            r"proxy on ([\d.]+):(\d+), admin on ([\d.]+):(\d+), (\d+) workers")
        w.proxy = (m.group(1), int(m.group(2)))
        w.admin = (m.group(3), int(m.group(4)))
        yield w
    finally:
        await w.stop()


def _route(status: Any) -> Any:
    """The one route of the file, as a worker's /status counts it."""
    (route,) = status["routes"].values()
    return route


async def test_two_workers_both_serve_one_port(backends, tmp_path: Path) -> None:
    b: Backend = await backends()
    async with workers(tmp_path, b.port, "--workers", "2", "--readiness-delay", "0") as w:
        assert w.proxy[1] != 0  # port 0: the port the first socket got, for both workers
        conns = [await Conn.open(w.proxy) for _ in range(32)]
        try:
            for conn in conns:
                assert (await conn.request("GET", "/x")).status == 200
            # Kept open: each worker counts the client connections it accepted.
            per_worker = [(await w.worker_status(i))["connections"] for i in (0, 1)]
            assert sum(per_worker) == 32, per_worker
            assert min(per_worker) >= 1, per_worker  # all 32 on one: 2 in 2**32
            counts = [_route(await w.worker_status(i))["requestCount"] for i in (0, 1)]
            assert counts == per_worker  # one request per connection, where it was accepted
            assert (await get(w.admin, "/readyz", host="localhost")).status == 200
        finally:
            for conn in conns:
                conn.writer.close()
    assert await w.stop() == 0
    rundir = Path(w.admin_socket(0)).parent
    assert rundir == Path(w.admin_socket(1)).parent
    assert not await asyncio.to_thread(rundir.exists)  # the parent removed its run directory


async def test_a_killed_worker_is_restarted_and_requests_keep_being_answered(
    backends, tmp_path: Path
) -> None:
    b: Backend = await backends()
    async with workers(tmp_path, b.port, "--workers", "2", "--readiness-delay", "0") as w:
        first = await w.wait_for(r"worker 1 started \(pid (\d+), generation 0\)")
        mark = len(w.lines)
        os.kill(int(first.group(1)), signal.SIGKILL)
        restarted = asyncio.create_task(
            w.wait_for(r"worker 1 ready \(pid (\d+)\)", after=mark))
        answered = 0
        # Fresh connections all along: those the kernel gives the dead worker's socket wait
        # in its accept queue (the parent keeps it open) for the worker that replaces it.
        while not restarted.done() or answered < 8:
            resp = await get(w.proxy, f"/during/{answered}")
            assert resp.status == 200, resp.status
            answered += 1
        new_pid = int((await restarted).group(1))
        assert new_pid != int(first.group(1))
        await w.wait_for(r"worker 1 \(pid \d+\) exited with signal SIGKILL .* restarting",
                         after=mark)
        # The new worker serves: requests it accepted are in its own count.
        for n in range(16):
            assert (await get(w.proxy, f"/after/{n}")).status == 200
        assert _route(await w.worker_status(1))["requestCount"] >= 1
        status = json.loads((await get(w.admin, "/status", host="localhost")).body)
        assert status["workerRestarts"] == 1
        assert [(x["index"], x["generation"], x["pid"]) for x in status["workers"]] == [
            (0, 0, status["workers"][0]["pid"]), (1, 1, new_pid)]
    assert w.proc.returncode == 0


async def test_sigterm_drains_every_worker(backends, tmp_path: Path) -> None:
    release = asyncio.Event()

    async def slow(req: Request, conn: BackendConn) -> None:
        await release.wait()
        await conn.respond(200, b"finished", [("Content-Type", "text/plain")])

    b: Backend = await backends(http_app(slow))
    async with workers(tmp_path, b.port, "--workers", "2", "--readiness-delay", "0",
                       "--drain-timeout", "60") as w:
        # Slow requests until each worker has at least one in flight (a connection's worker
        # is the kernel's choice; 40 all on one worker: 2 in 2**40).
        pending: list[asyncio.Task[Any]] = []
        conns: list[Conn] = []
        in_flight = [0, 0]
        while min(in_flight) == 0:
            assert len(conns) < 40, in_flight
            conn = await Conn.open(w.proxy)
            conns.append(conn)
            pending.append(asyncio.create_task(conn.request("GET", "/slow", within=60)))
            await b.wait_for(lambda: len(b.requests) == len(pending), within=30)
            in_flight = [_route(await w.worker_status(i))["concurrency"] for i in (0, 1)]
        assert sum(in_flight) == len(pending)

        mark = len(w.lines)
        w.proc.send_signal(signal.SIGTERM)
        for i in (0, 1):
            await w.wait_for(rf"\[worker {i}\] .*received SIGTERM, draining", after=mark)
        # New connections are refused once every copy of the listening sockets is closed
        # (the parent's at once, each worker's after its readiness delay, 0 here).
        async with asyncio.timeout(30):
            while True:
                try:
                    probe = await Conn.open(w.proxy)
                except ConnectionRefusedError:
                    break
                probe.writer.close()
                await asyncio.sleep(0.05)  # polling the port: no event says "closed"
        assert not any(t.done() for t in pending)  # still in flight while the port is shut
        release.set()
        for task in pending:
            resp = await task
            assert (resp.status, resp.body) == (200, b"finished")
        assert await w.stop() == 0
        for conn in conns:
            conn.writer.close()


async def test_a_second_signal_stops_the_workers_at_once(backends, tmp_path: Path) -> None:
    """The drain would wait up to 600 s for the slow request; the second SIGTERM, forwarded,
    ends the workers at once (the request is cut) and the parent exits 0."""
    release = asyncio.Event()

    async def slow(req: Request, conn: BackendConn) -> None:
        await release.wait()

    b: Backend = await backends(http_app(slow))
    try:
        async with workers(tmp_path, b.port, "--workers", "2", "--readiness-delay", "0",
                           "--drain-timeout", "600") as w:
            conn = await Conn.open(w.proxy)
            request = asyncio.create_task(conn.request("GET", "/slow", within=60))
            await b.wait_for(lambda: len(b.requests) == 1, within=30)
            mark = len(w.lines)
            w.proc.send_signal(signal.SIGTERM)
            for i in (0, 1):
                await w.wait_for(rf"\[worker {i}\] .*received SIGTERM, draining", after=mark)
            w.proc.send_signal(signal.SIGTERM)
            await w.wait_for(r"parent: received SIGTERM again: forwarding it", after=mark)
            assert await w.stop(None) == 0
            with pytest.raises(asyncio.IncompleteReadError):  # cut, not answered
                await request
            conn.writer.close()
    finally:
        release.set()


async def test_a_stop_signal_while_the_workers_start_stops_them_all(
    backends, tmp_path: Path
) -> None:
    """SIGTERM as soon as worker 0 is ready, while worker 1 is being spawned or starts: every
    worker still gets it (the bound of the wait is 70 s here: a worker that missed it would
    hold the parent past the test's 60 s)."""
    b: Backend = await backends()
    config = tmp_path / "routes.yaml"
    config.write_text("apps:\n  - name: app\n    hosts: [app.test]\n"
                      f"    run: {{upstream: 'http://127.0.0.1:{b.port}'}}\n")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "httpscale", "interceptor", "--config", str(config), *LOOPBACK,
        "--workers", "2", "--readiness-delay", "0", "--drain-timeout", "60",
        stderr=asyncio.subprocess.PIPE,
    )
    w = Workers(proc)
    await w.wait_for(r"worker 0 ready")
    assert await w.stop() == 0
    assert not any(re.search(r"admin on \S+, \d+ workers", line) for line in w.lines)


async def test_workers_outlive_no_parent(backends, tmp_path: Path) -> None:
    """A parent killed with SIGKILL (no chance to forward anything): each worker sees its
    lifeline pipe close, drains and exits (the `mark` fixture fails the test otherwise)."""
    b: Backend = await backends()
    async with workers(tmp_path, b.port, "--workers", "2", "--readiness-delay", "0") as w:
        mark = len(w.lines)
        w.proc.kill()
        for i in (0, 1):
            await w.wait_for(rf"\[worker {i}\] .*the parent process is gone: draining",
                             after=mark)
            await w.wait_for(rf"\[worker {i}\] .*interceptor stopped", after=mark)
        await w.log_closed()  # every holder of the parent's stderr (the workers) is gone


async def test_workers_1_is_a_single_process(backends, tmp_path: Path) -> None:
    b: Backend = await backends()
    config = tmp_path / "routes.yaml"
    config.write_text("apps:\n  - name: app\n    hosts: [app.test]\n"
                      f"    run: {{upstream: 'http://127.0.0.1:{b.port}'}}\n")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "httpscale", "interceptor", "--config", str(config), *LOOPBACK,
        "--readiness-delay", "0", stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "HTTPSCALE_WORKERS": "1"},
    )
    w = Workers(proc)
    try:
        m = await w.wait_for(r"proxy on ([\d.]+):(\d+), admin on ([\d.]+):(\d+), hot path")
        assert (await get((m.group(1), int(m.group(2))), "/")).status == 200
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
        assert (await asyncio.to_thread(children.read_text)).split() == []
    finally:
        assert await w.stop() == 0
    assert not any("worker" in line for line in w.lines), w.lines


@pytest.mark.parametrize(("option", "value", "message"), [
    ("--workers", "0", "Invalid value for --workers: must be at least 1, got 0"),
    ("--workers-queue-sample-interval", "-1",
     "Invalid value for --workers-queue-sample-interval: must be >= 0 (0: never), got -1.0"),
])
async def test_bad_worker_options_are_refused(
    tmp_path: Path, option: str, value: str, message: str
) -> None:
    config = tmp_path / "routes.yaml"
    config.write_text("apps: []\n")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "httpscale", "interceptor", "--config", str(config),
        option, value, stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(30):
        _, err = await proc.communicate()
    assert proc.returncode == 2
    assert f"Error: {message}" in err.decode()
