"""`httpscale local` as a real process: bad config, SIGTERM drain, SIGKILL leaves no orphan."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from localrun import MARK_VAR, marked_pids, until_gone

from httpscale.config.local_file import load_local_config
from httpscale.local.cli import local_command
from httpscale.local.plan import plan_apps
from httpscale.local.status import status_command

# Runs the command without going through `httpscale.cli` (owned elsewhere).
_ENTRY = "from httpscale.local.cli import local_command; local_command()"


def test_bad_config_names_file_key_and_problem(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("apps:\n  - name: hello\n    run:\n      upstrem: http://127.0.0.1:1\n")
    result = CliRunner().invoke(local_command, ["-c", str(bad)])
    assert result.exit_code == 1
    assert f"{bad}: apps[0].run.upstrem: unknown key" in result.output


def test_missing_config_file(tmp_path: Path) -> None:
    result = CliRunner().invoke(local_command, ["-c", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 1
    assert "nope.yaml: file not found" in result.output


def test_status_command_reports_unreachable_admin() -> None:
    result = CliRunner().invoke(status_command, ["--admin", "http://127.0.0.1:9"])
    assert result.exit_code == 1
    assert "cannot read http://127.0.0.1:9/status" in result.output


async def test_listen_flags_win_over_the_files_addresses(tmp_path: Path) -> None:
    # The file names ports already taken: only if --port/--admin-port win does it start.
    with socket.socket() as taken_proxy, socket.socket() as taken_admin:
        for taken in (taken_proxy, taken_admin):
            taken.bind(("127.0.0.1", 0))
            taken.listen()
        config = tmp_path / "local.yaml"
        config.write_text(
            f"listen: 127.0.0.1:{taken_proxy.getsockname()[1]}\n"
            f"admin: 127.0.0.1:{taken_admin.getsockname()[1]}\n"
            "apps:\n  - name: up\n    hosts: [up.localhost]\n"
            "    run: {upstream: http://127.0.0.1:9}\n"
        )
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _ENTRY, "-c", str(config), "--port", "0", "--admin-port", "0",
            stderr=asyncio.subprocess.PIPE,
        )
        local = LocalProcess(proc)
        try:
            line = await local.wait_for_line("httpscale local: proxy on")
            assert f":{taken_proxy.getsockname()[1]}," not in line
            assert f":{taken_admin.getsockname()[1]}/status" not in line
        finally:
            proc.terminate()
            await proc.wait()


class LocalProcess:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.proxy_port = 0
        self.admin_port = 0
        self.lines: list[str] = []

    async def wait_for_line(self, needle: str, within: float = 30) -> str:
        assert self.proc.stderr is not None
        async with asyncio.timeout(within):
            while True:
                raw = await self.proc.stderr.readline()
                if not raw:
                    raise AssertionError(f"exited before {needle!r}: {self.lines}")
                line = raw.decode().rstrip()
                self.lines.append(line)
                if needle in line:
                    return line

    async def status(self) -> dict[str, Any]:
        """The admin server's /status document."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.admin_port)
        writer.write(b"GET /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        doc: dict[str, Any] = json.loads((await reader.read()).partition(b"\r\n\r\n")[2])
        writer.close()
        await writer.wait_closed()
        return doc

    async def until_in_flight(self, app: str, n: int, within: float = 15) -> None:
        """Until `n` requests are in flight in `app`'s replicas (forwarded, not held)."""
        async with asyncio.timeout(within):
            # Another process's state: polled.
            while sum(r["in_flight"] for r in (await self.status())["apps"][app]["replicas"]) != n:  # noqa: ASYNC110
                await asyncio.sleep(0.02)

    async def get(self, host: str) -> tuple[int, bytes]:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.proxy_port)
        writer.write(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        data = await reader.read()
        writer.close()
        await writer.wait_closed()
        head, _, body = data.partition(b"\r\n\r\n")
        return int(head.split()[1]), body


@pytest.fixture
async def local_process(
    request: pytest.FixtureRequest, tmp_path: Path, mark: str
) -> AsyncIterator[LocalProcess]:
    """`httpscale local` with one app whose replicas answer after 3 s (or `request.param`)."""
    delay = getattr(request, "param", 3)
    config = tmp_path / "local.yaml"
    config.write_text(
        textwrap.dedent(
            """
            listen: 127.0.0.1:0
            admin: 127.0.0.1:0
            apps:
              - name: slow
                hosts: [slow.localhost]
                replicas: {min: 0, max: 2}
                run:
                  command: ["{python}", "-m", "httpscale.examples.hello", "--port", "{port}",
                            "--response-delay", "{delay}"]
                  readiness: {httpGet: {path: /healthz}}
                  stopGracePeriod: 5
            """
        ).replace("{delay}", str(delay))
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _ENTRY,
        "-c",
        str(config),
        "--readiness-delay",
        "0",
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, MARK_VAR: mark},
    )
    local = LocalProcess(proc)
    try:
        line = await local.wait_for_line("httpscale local: proxy on")
        # "... proxy on http://127.0.0.1:PORT, status on http://127.0.0.1:PORT/status, ..."
        urls = [part for part in line.split() if part.startswith("http://")]
        local.proxy_port = int(urls[0].rstrip(",").rsplit(":", 1)[1])
        local.admin_port = int(urls[1].split("/status")[0].rsplit(":", 1)[1])
        yield local
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


async def test_sigterm_drains_in_flight_request_then_stops_children(
    local_process: LocalProcess, mark: str
) -> None:
    first = asyncio.create_task(local_process.get("slow.localhost"))
    await local_process.until_in_flight("slow", 1)  # in the replica for 3 s
    local_process.proc.send_signal(signal.SIGTERM)
    status, body = await first
    assert status == 200 and body.startswith(b"hello from pid")
    async with asyncio.timeout(30):
        assert await local_process.proc.wait() == 0
    assert await until_gone(mark, within=1) == []
    rest = (await local_process.proc.stderr.read()).decode() if local_process.proc.stderr else ""
    assert "httpscale local: stopped" in rest


async def test_sigkill_of_httpscale_leaves_no_app_process(
    local_process: LocalProcess, mark: str
) -> None:
    status, _ = await local_process.get("slow.localhost")
    assert status == 200
    doc = await local_process.status()
    pids = [r["pid"] for r in doc["apps"]["slow"]["replicas"]]
    assert len(pids) == 1 and pids[0] in marked_pids(mark)
    local_process.proc.kill()
    await local_process.proc.wait()
    assert await until_gone(mark, within=5) == []


# A reply only after 60 s, so a graceful stop would take a minute. The forced stop once took
# that minute too (2 runs in 30 under CPU contention): the interceptor retried the request
# whose replica was killed, the retry woke the app again, and the shutdown waited for the new
# replica (test_nothing_starts_after_kill_all). The 30 s guard is far from both.
@pytest.mark.parametrize("local_process", [60], indirect=True)
async def test_second_signal_forces_a_quick_exit(local_process: LocalProcess, mark: str) -> None:
    in_flight = asyncio.create_task(local_process.get("slow.localhost"))
    try:
        await local_process.until_in_flight("slow", 1)  # in the replica for 60 s
        local_process.proc.send_signal(signal.SIGTERM)
        await local_process.wait_for_line("shutting down")
        local_process.proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            assert await local_process.proc.wait() == 130
        assert await until_gone(mark, within=2) == []
    except BaseException:
        in_flight.cancel()  # not left to fail later, in another test's error check
        await asyncio.wait([in_flight])
        raise
    # It did not wait for the in-flight request: a graceful stop answers it with the app's
    # 200 once its 60 s are up; the forced one killed the app first, so it got anything else.
    try:
        status: int | None = (await in_flight)[0]
    except (OSError, IndexError, ValueError):
        status = None  # the connection closed without a response
    assert status != 200


def test_example_config_is_valid() -> None:
    """examples/local.yaml is the Quickstart: it must always load."""
    root = Path(__file__).resolve().parents[2]
    config = load_local_config(root / "examples" / "local.yaml")
    plans = {p.name: p for p in plan_apps(config.apps)}
    assert set(plans) == {"hello", "webui", "status"}
    assert plans["hello"].process is not None and plans["hello"].route.match.hosts == (
        "hello.localhost",
    )
    assert plans["webui"].route.placeholder is not None
    assert plans["status"].upstream is not None and plans["status"].process is None
    assert config.listen == ("127.0.0.1", 8080) and config.admin == ("127.0.0.1", 9090)
