"""`httpscale capacity` end to end in local mode: a real interceptor, a backend process of known
capacity (8 requests at once, 50 ms each: 160 requests/s with 8 in flight), the command as a
process of its own, and locust in its child process."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import sys
from pathlib import Path
from typing import Any

import pytest
from capkit import CAPACITY, admin, capacity, limited_app

TRUE_RPS = 8 / 0.05
TRUE_CONCURRENCY = 8
HEADROOM = 0.25
FAST = ("--step-duration", "1.5", "--warmup", "0.5")  # short steps keep the test short
STEP_LINE = re.compile(r"^\s+\d+\s+\d+\s+[\d.]+\s")

pytestmark = pytest.mark.slow


async def start(local: Any) -> tuple[Any, str, str]:
    # Concurrency target 2 and up to 3 replicas: unpinned, the load here would scale it out.
    runner = await local(
        limited_app(
            "limited",
            replicas={"min": 0, "max": 3},
            scaledownPeriod=60,
            scalingMetric={"concurrency": {"targetValue": 2}},
        ),
        {"name": "static", "hosts": ["static.localhost"], "run": {"upstream": "http://127.0.0.1:1"}},
    )
    _, port = runner.interceptor.proxy_address
    host, admin_port = runner.interceptor.admin_address
    return runner, f"http://limited.localhost:{port}/", f"http://{host}:{admin_port}"


def within(measured: float, truth: float, tolerance: float = 0.2) -> bool:
    return abs(measured / truth - 1) <= tolerance


async def test_knee_and_targets_match_a_backend_of_known_capacity(
    local: Any, tmp_path: Path
) -> None:
    runner, url, admin_url = await start(local)
    report = tmp_path / "capacity.html"
    code, out, err = await capacity(
        url, "--admin", admin_url, *FAST, "--output", "json", "--report", str(report)
    )
    assert code == 0, err
    doc = json.loads(out)
    assert doc["target"] == {"mode": "local", "admin": admin_url, "app": "limited"}
    assert doc["stopped"] == "knee" and doc["knee_reached"] is True, doc["steps"]
    assert within(doc["knee_rps"], TRUE_RPS), doc["steps"]
    assert within(doc["knee_concurrency"], TRUE_CONCURRENCY), doc["steps"]
    # The targets are the knee less the headroom, rounded: within 20% of the true ones.
    recommended = doc["recommended"]
    assert recommended == {
        "concurrency": max(1, round(doc["knee_concurrency"] * (1 - HEADROOM))),
        "requestRate": max(1, round(doc["knee_rps"] * (1 - HEADROOM))),
    }
    assert within(recommended["concurrency"], TRUE_CONCURRENCY * (1 - HEADROOM))
    assert within(recommended["requestRate"], TRUE_RPS * (1 - HEADROOM))
    # The step past the knee is where throughput stopped rising (no error, no SLO breach).
    assert doc["limit"]["verdict"] == "flat" and doc["limit"]["users"] > doc["knee"]["users"]
    assert all(s["failures"] == 0 for s in doc["steps"])

    # Held at one replica throughout (12 users against a target of 2 would have made it 3),
    # and released afterwards.
    _, history = await admin(runner.interceptor.admin_address, "GET", "/history")
    counts = [n for _, n in history["apps"]["limited"]["replicas"]]
    assert counts[:2] == [0, 1] and max(counts) == 1, counts
    _, status = await admin(runner.interceptor.admin_address, "GET", "/status")
    assert status["apps"]["limited"]["pinned"] is None

    # Progress: one line per step on stderr (not a terminal: no in-place updates).
    assert "holding local app limited at 1 replica..." in err
    assert len([line for line in err.splitlines() if STEP_LINE.match(line)]) == len(doc["steps"])
    assert "\x1b[K" not in err
    html = report.read_text()
    assert html.lstrip().lower().startswith("<!doctype html>") and "locust" in html.lower()


async def test_ctrl_c_reports_what_was_measured_and_releases_the_pin(local: Any) -> None:
    runner, url, admin_url = await start(local)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CAPACITY, url, "--admin", admin_url, *FAST, "--output", "json",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stderr is not None
    try:
        async with asyncio.timeout(60):
            async for line in proc.stderr:
                if STEP_LINE.match(line.decode()):
                    break  # the first step is measured
            proc.send_signal(signal.SIGINT)
            out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 130, err.decode()
    doc = json.loads(out)
    assert doc["stopped"] == "interrupted" and doc["knee_reached"] is False
    assert len(doc["steps"]) >= 1 and doc["steps"][0]["users"] == 1
    assert doc["knee"] == doc["steps"][-1]  # the best step so far: a lower bound
    assert doc["recommended"] is not None and doc["limit"] is None
    _, status = await admin(runner.interceptor.admin_address, "GET", "/status")
    assert status["apps"]["limited"]["pinned"] is None


async def test_problems_with_the_target_exit_2_with_a_clear_message(local: Any) -> None:
    runner, url, admin_url = await start(local)
    cases: list[tuple[tuple[str, ...], str]] = [
        (("hello.localhost:8080",), "bad URL 'hello.localhost:8080': it must start with http"),
        (("http://nobody.localhost:8080/", "--admin", admin_url),
         "no app serves nobody.localhost:8080/ (apps: limited, static)"),
        ((url, "--admin", admin_url, "--app", "nope"), "no app named 'nope' (apps: limited"),
        ((url, "--admin", "http://127.0.0.1:1"), "cannot read http://127.0.0.1:1/status"),
        # The app is found by its host, pinned, then the proxy is not there: released again.
        (("http://limited.localhost:1/", "--admin", admin_url),
         "cannot reach http://limited.localhost:1/ at http://127.0.0.1:1"),
    ]
    for args, message in cases:
        code, out, err = await capacity(*args)
        assert (code, out) == (2, ""), (args, err)
        assert message in err, (args, err)
    _, status = await admin(runner.interceptor.admin_address, "GET", "/status")
    assert status["apps"]["limited"]["pinned"] is None
    code, _, err = await capacity(url, "--admin", admin_url, "--headroom", "120%")
    assert code == 2 and "--headroom" in err
