"""`httpscale doctor --config FILE`: local mode's checks, on real files, sockets and a real
`httpscale local` (in-process, on loopback ports), and the command's own errors."""

from __future__ import annotations

import asyncio
import json
import socket
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from click.testing import CliRunner

from httpscale.config.local_file import parse_local_config
from httpscale.doctor.cli import doctor_command
from httpscale.doctor.findings import Finding, Status, exit_code
from httpscale.doctor.local import run_local
from httpscale.interceptor.settings import InterceptorSettings, InterceptorShutdown, Listen
from httpscale.local.plan import plan_apps
from httpscale.local.runner import LocalRunner, LocalSettings

HELLO = ["{python}", "-m", "httpscale.examples.hello", "--port", "{port}"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def listening() -> Iterator[socket.socket]:
    """A socket that listens (and never accepts): a port some other program holds."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s


@pytest.fixture
def refused() -> int:
    """A loopback port nothing listens on (bound without listen: connects are refused)."""
    return _free_port()


def _write(tmp_path: Path, **doc: Any) -> Path:
    doc.setdefault("listen", f"127.0.0.1:{_free_port()}")
    doc.setdefault("admin", f"127.0.0.1:{_free_port()}")
    path = tmp_path / "local.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _app(name: str, run: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "hosts": [f"{name}.localhost"], "run": run}


def _by(findings: list[Finding], check: str, subject: str) -> Finding:
    hits = [f for f in findings if f.check == check and f.subject == subject]
    assert len(hits) == 1, (check, subject, findings)
    return hits[0]


def test_an_invalid_file_is_one_failure_naming_the_key(tmp_path: Path) -> None:
    path = _write(tmp_path, apps=[_app("web", {"comand": ["x"]})])
    findings, target = run_local(path)
    assert [(f.check, f.status) for f in findings] == [("local.config", Status.FAIL)]
    assert "apps[0].run" in findings[0].message and "comand" in findings[0].message
    assert target == str(path)
    assert "fix the key it names" in findings[0].fix
    findings, _ = run_local(tmp_path / "missing.yaml")
    assert [(f.check, f.status) for f in findings] == [("local.config", Status.FAIL)]
    assert "file not found" in findings[0].message and "path" in findings[0].fix


def test_commands_that_do_not_resolve_and_modules_that_do_not_import(tmp_path: Path) -> None:
    path = _write(tmp_path, apps=[
        _app("ok", {"command": HELLO}),
        _app("nowhere", {"command": ["no-such-program-httpscale", "{port}"]}),
        _app("nomodule", {"command": ["{python}", "-m", "no_such_module_httpscale.app"]}),
        _app("relative", {"command": ["./serve.sh"]}),
    ])
    findings, _ = run_local(path)
    assert _by(findings, "local.config", str(path)).message == "valid: 4 app(s)"
    ok = _by(findings, "local.command", "app ok")
    assert ok.status is Status.OK and ok.message == f"runs {sys.executable}"
    nowhere = _by(findings, "local.command", "app nowhere")
    assert nowhere.status is Status.FAIL
    assert "'no-such-program-httpscale' is not an executable" in nowhere.message
    nomodule = _by(findings, "local.command", "app nomodule")
    assert nomodule.status is Status.FAIL
    assert "cannot import module 'no_such_module_httpscale.app'" in nomodule.message
    assert _by(findings, "local.command", "app relative").status is Status.FAIL
    assert exit_code(findings) == 1


def test_an_upstream_that_refuses_is_a_warning(tmp_path: Path, refused: int,
                                               listening: socket.socket) -> None:
    up = listening.getsockname()[1]
    path = _write(tmp_path, apps=[
        _app("down", {"upstream": f"http://127.0.0.1:{refused}"}),
        _app("up", {"upstream": f"http://127.0.0.1:{up}"}),
    ])
    findings, _ = run_local(path)
    down = _by(findings, "local.upstream", "app down")
    assert down.status is Status.WARN and "Connection refused" in down.message
    assert _by(findings, "local.upstream", "app up").status is Status.OK
    assert exit_code(findings) == 0


def test_an_upstream_that_is_local_modes_own_admin_is_not_a_warning(tmp_path: Path) -> None:
    # As examples/local.yaml routes its status page: that server listens once local mode
    # runs, so before that a refused connect is no problem.
    admin = f"127.0.0.1:{_free_port()}"
    path = _write(tmp_path, admin=admin, apps=[_app("status", {"upstream": f"http://{admin}"})])
    findings, _ = run_local(path)
    own = _by(findings, "local.upstream", "app status")
    assert own.status is Status.OK and "httpscale local's own server" in own.message


def test_a_listen_port_held_by_another_program(tmp_path: Path,
                                               listening: socket.socket) -> None:
    port = listening.getsockname()[1]
    path = _write(tmp_path, listen=f"127.0.0.1:{port}", apps=[_app("web", {"command": HELLO})])
    findings, _ = run_local(path)
    held = _by(findings, "local.port", f"listen 127.0.0.1:{port}")
    assert held.status is Status.FAIL and "in use by another program" in held.message
    assert f"sport = :{port}" in held.fix
    assert _by(findings, "local.admin", "admin server").status is Status.INFO


@pytest.fixture
async def other_admin() -> AsyncIterator[int]:
    """An HTTP server that is not httpscale's admin server (404 on /status)."""
    server = web.Application()
    runner = web.AppRunner(server)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield int(runner.addresses[0][1])
    finally:
        await runner.cleanup()


async def test_an_admin_port_held_by_something_else(tmp_path: Path, other_admin: int) -> None:
    path = _write(tmp_path, admin=f"127.0.0.1:{other_admin}",
                  apps=[_app("web", {"command": HELLO})])
    findings, _ = await asyncio.to_thread(run_local, path)
    admin = _by(findings, "local.admin", "admin server")
    assert admin.status is Status.WARN and "not httpscale's" in admin.message
    assert _by(findings, "local.port", f"admin 127.0.0.1:{other_admin}").status is Status.FAIL


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[tuple[str, str]]:
    """`httpscale local` in-process with one command app (at zero: nothing is started) and
    one upstream app; its (listen, admin) addresses."""
    config = parse_local_config({"apps": [
        _app("web", {"command": HELLO}),
        _app("status", {"upstream": "http://127.0.0.1:9"}),
    ]}, source="test.yaml")
    settings = LocalSettings(interceptor=InterceptorSettings(
        listen=Listen(host="127.0.0.1", port=0, admin_host="127.0.0.1", admin_port=0),
        shutdown=InterceptorShutdown(readiness_delay=0, drain_timeout=5)))
    runner = LocalRunner(plan_apps(config.apps), settings)
    await runner.start()
    try:
        listen = f"127.0.0.1:{runner.interceptor.proxy_address[1]}"
        admin = f"127.0.0.1:{runner.interceptor.admin_address[1]}"
        yield listen, admin
    finally:
        await runner.close()


async def test_a_running_httpscale_holds_its_ports_and_reports_its_apps(
    tmp_path: Path, running: tuple[str, str]
) -> None:
    listen, admin = running
    path = _write(tmp_path, listen=listen, admin=admin, apps=[
        _app("web", {"command": HELLO}), _app("status", {"upstream": "http://127.0.0.1:9"})])
    # The checks block (sockets, urllib): off the loop that serves the admin server.
    findings, _ = await asyncio.to_thread(run_local, path)
    for name, address in (("listen", listen), ("admin", admin)):
        f = _by(findings, "local.port", f"{name} {address}")
        assert f.status is Status.OK and "running httpscale" in f.message
    web_app = _by(findings, "local.admin", "app web")
    assert web_app.status is Status.OK and web_app.message == "running: 0/0 replicas ready"
    assert _by(findings, "local.admin", "app status").message == "routed (upstream)"
    assert not [f for f in findings if f.subject == "admin server"]

    # Another file for the same addresses: the running one was started from something else.
    other = _write(tmp_path, listen=listen, admin=admin, apps=[_app("api", {"command": HELLO})])
    findings, _ = await asyncio.to_thread(run_local, other)
    stale = _by(findings, "local.admin", "admin server")
    assert stale.status is Status.WARN
    assert "it runs status, web; this file has api" in stale.message


# -- the command -------------------------------------------------------------------------------


def test_the_command_exit_status_and_json(tmp_path: Path) -> None:
    good = _write(tmp_path, apps=[_app("web", {"command": HELLO})])
    result = CliRunner().invoke(doctor_command, ["--config", str(good), "-o", "json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["ok"] is True and report["target"] == f"local config {good}"

    bad = tmp_path / "bad.yaml"
    bad.write_text("apps: [{name: web}]\n")
    result = CliRunner().invoke(doctor_command, ["--config", str(bad)])
    assert result.exit_code == 1
    assert "apps[0]" in result.output and "fix:" in result.output


@pytest.mark.parametrize(("args", "error"), [
    (["--config", "x.yaml", "--wake"], "--wake: cluster options, not for --config"),
    (["--config", "x.yaml", "--context", "kind"], "--context: cluster options"),
    (["--wake", "--no-live"], "--wake sends live requests"),
    (["--proxy", "localhost:8080"], "--proxy: expected an http:// or https:// URL"),
    (["--request-timeout", "0"], "timeouts must be positive"),
    (["-o", "yaml"], "'yaml' is not one of"),
    (["--kubeconfig", "/nonexistent/kubeconfig"], "'/nonexistent/kubeconfig' does not exist"),
])
def test_usage_errors_name_the_problem(args: list[str], error: str) -> None:
    result = CliRunner().invoke(doctor_command, args)
    assert result.exit_code == 2
    assert error in result.output
