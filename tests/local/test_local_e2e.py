"""Local mode end to end: config -> real interceptor on loopback -> real hello processes."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from localkit import eventually, hello_command, http_get
from localrun import marked_pids

from httpscale.local.runner import LocalRunner
from httpscale.routing.spec import Endpoint

Runner = Callable[..., Any]
LOCUSTFILE = Path(__file__).resolve().parents[2] / "loadtests" / "locustfile.py"


def app(name: str, *hello_args: str, **fields: Any) -> dict[str, Any]:
    run = {
        "command": list(hello_command(*hello_args)),
        "readiness": {"httpGet": {"path": "/healthz"}},
        "startupTimeout": fields.pop("startupTimeout", 20),
        "stopGracePeriod": 5,
    }
    return {"name": name, "hosts": [f"{name}.localhost"], "run": run, **fields}


async def request(
    runner: LocalRunner, host: str, path: str = "/"
) -> tuple[int, dict[str, str], bytes]:
    """One request through the proxy."""
    return await http_get(Endpoint(*runner.interceptor.proxy_address), path, host=host)


def scale_lines(caplog: pytest.LogCaptureFixture, app_name: str) -> list[str]:
    prefix = f"scale {app_name}: "
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith(prefix)]


async def test_200_concurrent_requests_at_zero_start_the_app_once(
    local: Runner, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="httpscale.local")
    runner = await local(
        app("hello", "--startup-delay", "0.5", replicas={"min": 0, "max": 1}, scaledownPeriod=60)
    )
    results = await asyncio.gather(*(request(runner, "hello.localhost") for _ in range(200)))
    assert [status for status, _, _ in results] == [200] * 200
    pids = {headers["x-hello-pid"] for _, headers, _ in results}
    assert len(pids) == 1
    scaler = runner.autoscaler.scalers["local/hello"]
    assert [r.pid for r in scaler.supervisor.replicas] == [int(pids.pop())]
    assert scaler.supervisor.replicas[0].index == 1  # the first and only process started
    lines = scale_lines(caplog, "hello")
    assert lines[0] == "scale hello: 0 -> 1 (request while at zero)"
    assert lines[1].startswith("scale hello: cold start took ")
    assert len(lines) == 2


async def test_load_above_target_scales_up_and_spreads_then_idle_goes_to_zero(
    local: Runner, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="httpscale.local")
    runner = await local(
        app(
            "busy",
            "--response-delay",
            "0.3",
            replicas={"min": 0, "max": 3},
            scaledownPeriod=1,
            scalingMetric={"concurrency": {"targetValue": 4}},
        )
    )
    scaler = runner.autoscaler.scalers["local/busy"]
    seen: Counter[str] = Counter()

    async def client() -> None:
        for _ in range(12):
            status, headers, _ = await request(runner, "busy.localhost")
            assert status == 200
            seen[headers["x-hello-pid"]] += 1

    # 12 clients in a loop: about 12 in flight against a target of 4 per replica -> 3 replicas.
    await asyncio.gather(*(client() for _ in range(12)))
    assert len(seen) >= 2, f"load was not spread: {seen}"
    assert scaler.supervisor.desired >= 2
    up = [line for line in scale_lines(caplog, "busy") if "(request while" not in line]
    assert any(" -> 3 (" in line or " -> 2 (" in line for line in up), up

    # Idle: back to zero after scaledownPeriod, and the processes are gone.
    pids = [r.pid for r in scaler.supervisor.replicas]
    await eventually(lambda: not scaler.supervisor.replicas, within=20)
    assert (
        scale_lines(caplog, "busy")[-1].endswith(")")
        and " -> 0 (no traffic for " in (scale_lines(caplog, "busy")[-1])
    )
    assert runner.interceptor.route_stats("local/busy") == {
        "concurrency": 0,
        "held": 0,
        "request_count": 144,
        "endpoints": 0,
    }
    status = runner.autoscaler.status()["busy"]
    assert status["desired"] == 0 and status["replicas"] == []
    assert all(pid is not None for pid in pids)


async def test_crashing_app_is_restarted_and_held_requests_wait(local: Runner) -> None:
    runner = await local(app("crashy", "--crash-after", "1", scaledownPeriod=60))
    scaler = runner.autoscaler.scalers["local/crashy"]
    status, first, _ = await request(runner, "crashy.localhost")
    assert status == 200  # answered, then the process exits with status 3
    # Once the exit is noticed the replica leaves the route; a request now is held until the
    # replacement is ready (a request racing the exit is the interceptor's connect-retry case).
    await eventually(lambda: scaler.supervisor.restarts >= 1)
    status, second, _ = await request(runner, "crashy.localhost")
    assert status == 200
    assert second["x-hello-pid"] != first["x-hello-pid"]
    assert runner.autoscaler.status()["crashy"]["restarts"] >= 1


async def test_never_ready_app_is_retried_and_held_request_times_out(local: Runner) -> None:
    runner = await local(
        app(
            "stuck",
            "--startup-delay",
            "60",
            startupTimeout=0.5,
            coldStart={"readinessTimeout": 2},
        )
    )
    loop = asyncio.get_running_loop()
    started = loop.time()
    status, _, body = await request(runner, "stuck.localhost")
    elapsed = loop.time() - started
    assert status == 504, body
    assert 1.5 < elapsed < 6
    assert runner.autoscaler.scalers["local/stuck"].supervisor.restarts >= 2


async def test_status_provider_and_admin_status(local: Runner) -> None:
    runner = await local(app("hello"))
    assert (await request(runner, "hello.localhost"))[0] == 200
    host, port = runner.interceptor.admin_address
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"GET /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    data = await reader.read()
    writer.close()
    await writer.wait_closed()
    doc = json.loads(data.partition(b"\r\n\r\n")[2])
    hello = doc["apps"]["hello"]
    assert hello["desired"] == 1 and hello["ready"] == 1
    (replica,) = hello["replicas"]
    assert replica["state"] == "ready" and replica["pid"] > 0 and replica["port"] > 0
    assert hello["last_scale"]["reason"] == "request while at zero"


async def test_autoscaler_crash_stops_everything(
    local: Runner, mark: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug in the autoscaler ends `run` loudly, and no app process survives it."""
    runner = await local(app("hello", replicas={"min": 1, "max": 1}))
    scaler = runner.autoscaler.scalers["local/hello"]
    await eventually(lambda: scaler.supervisor.ready_count() == 1)
    pid = scaler.supervisor.replicas[0].pid

    def broken(now: float) -> None:
        raise RuntimeError("autoscaler bug")

    monkeypatch.setattr(scaler, "sample", broken)
    stop = asyncio.Event()
    with pytest.raises(RuntimeError, match="autoscaler bug"):
        await runner.serve(stop)
    await runner.close()
    assert pid not in marked_pids(mark)


async def test_placeholder_page_while_waking_then_the_app(local: Runner) -> None:
    """A browser at zero gets the self-refreshing page at once, and the app wakes behind it."""
    runner = await local(
        app("webui", "--startup-delay", "0.5", coldStart={"placeholder": {"refreshSeconds": 1}})
    )
    proxy_host, port = runner.interceptor.proxy_address
    reader, writer = await asyncio.open_connection(proxy_host, port)
    writer.write(
        b"GET / HTTP/1.1\r\nHost: webui.localhost\r\nAccept: text/html\r\nConnection: close\r\n\r\n"
    )
    page = await reader.read()
    writer.close()
    await writer.wait_closed()
    assert page.startswith(b"HTTP/1.1 503 ")
    assert b"Starting up" in page and b'http-equiv="refresh" content="1"' in page
    scaler = runner.autoscaler.scalers["local/webui"]
    assert scaler.supervisor.desired == 1  # the placeholder request woke it
    await eventually(lambda: scaler.supervisor.ready_count() == 1)
    status, _, body = await request(runner, "webui.localhost")
    assert status == 200 and body.startswith(b"hello from pid")


async def test_locust_scenario_runs_clean_against_local_mode(local: Runner, tmp_path: Any) -> None:
    """The locust scenario users run: every request 200, the first held through a cold start."""
    runner = await local(app("hello", "--startup-delay", "0.3"))
    host, port = runner.interceptor.proxy_address
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless",
        "-u", "5", "-r", "5", "-t", "4s", "--only-summary", "--exit-code-on-error", "1",
        "--host", f"http://{host}:{port}", "--csv", str(tmp_path / "run"), "HelloVisitor",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={"HTTPSCALE_HOST": "hello.localhost", "PATH": "/usr/bin:/bin"},
    )
    async with asyncio.timeout(60):
        out, _ = await proc.communicate()
    assert proc.returncode == 0, out.decode()[-2000:]
    lines = (tmp_path / "run_stats.csv").read_text().splitlines()[1:]
    rows = {r.split(",")[1]: r.split(",") for r in lines}
    assert int(rows["Aggregated"][3]) == 0, rows["Aggregated"]  # no failure
    assert int(rows["Aggregated"][2]) > 5
    assert "/ (cold start)" in rows, rows.keys()  # the first request was held, not refused
