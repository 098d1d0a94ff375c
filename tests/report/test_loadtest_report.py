"""The load-test report (loadtests/report.py) and recorder (loadtests/recorder.py): the pure
parts fed values, a recorded run turned into the page, and a real short locust run of
loadtests/scenarios.py against local mode on loopback."""

from __future__ import annotations

import asyncio
import os
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from localrun import communicate
from reportkit import DATA, LOADTESTS, hello_app, load_module

report = load_module("loadtest_report", LOADTESTS / "report.py")
recorder = load_module("loadtest_recorder", LOADTESTS / "recorder.py")
SVG = "{http://www.w3.org/2000/svg}"


def row(t: float, users: int, rps: float, p99: float | None) -> Any:
    return report.HistoryRow(t, users, rps, 0.0, p99, p99, p99, 0, 0)


def test_capacity_points_take_each_level_once_settled() -> None:
    history = [row(0, 0, 0.0, None)]
    # 2 users for 24 s: the first 10 samples still mix in the level before (locust's window).
    history += [row(1 + i, 2, 1.0 if i < 10 else 20.0, 500.0 if i < 10 else 50.0)
                for i in range(24)]
    # 4 users for 6 s: a short stretch, its later half counts.
    history += [row(25 + i, 4, 25.0 if i < 3 else 38.0, 90.0) for i in range(6)]
    # Back to 2 users for 4 s: its later half adds to the same level.
    history += [row(31 + i, 2, 22.0, 60.0 if i < 2 else 55.0) for i in range(4)]
    points = report.capacity_points(history)
    assert points == [(2, 20.0, 50.0), (4, 38.0, 90.0)]


def test_recorder_summarizes_local_and_cluster_status() -> None:
    status = {
        "apps": {
            "hello": {"kind": "command", "route": "local/hello", "ready": 2, "desired": 3,
                      "replicas": [{}, {}, {}], "held": 1, "concurrency": 4, "rate": 9.5,
                      "last_cold_start": 1.06},
            "fixed": {"kind": "upstream", "route": "local/fixed"},
        },
        "routes": {"shop/web": {"concurrency": 3, "held": 0, "requestCount": 7,
                                "endpoints": {"a": {}, "b": {"draining": True}}}},
    }
    scaler = {"routes": [{"key": "shop/web", "concurrency": 3, "rate": 1.5, "active": True,
                          "other": "x"}]}
    assert recorder.summarize(status, scaler) == {
        "apps": {"hello": {"route": "local/hello", "ready": 2, "desired": 3, "running": 3,
                           "held": 1, "concurrency": 4, "rate": 9.5, "last_cold_start": 1.06}},
        "routes": {"shop/web": {"concurrency": 3, "held": 0, "requestCount": 7,
                                "endpoints": 1}},
        "scaler": {"shop/web": {"concurrency": 3, "rate": 1.5, "active": True}},
    }


def _series(html: str) -> dict[str, dict[str, ET.Element]]:
    """chart title -> series name -> its <g>, from every SVG on the page."""
    charts = {}
    start = html.find("<svg")
    while start >= 0:
        end = html.index("</svg>", start) + len("</svg>")
        root = ET.fromstring(html[start:end])
        title = root.findtext(f"{SVG}title") or ""
        charts[title] = {g.get("data-series") or "": g
                         for g in root.findall(f".//{SVG}g[@class='series']")}
        start = html.find("<svg", end)
    return charts


def _drawn(group: ET.Element) -> int:
    """Points drawn by a series: polyline vertices, or dots."""
    line = group.find(f"{SVG}polyline")
    if line is not None:
        return len((line.get("points") or "").split())
    return len(group.findall(f"{SVG}circle"))


def test_recorded_ramp_gives_four_charts_with_data() -> None:
    """A real run (locust `--scenario ramp` against local mode, recorded by scenarios.py),
    kept in tests/report/data."""
    run = report.load_run(DATA / "ramp")
    html = report.build_report(run)
    assert html.startswith("<!DOCTYPE html>") and "<script" not in html
    charts = _series(html)
    assert len(charts) == 4
    latency, replicas, cold, capacity = (charts[t] for t in (
        "Requests per second and latency percentiles over time", "Replicas over time",
        "Cold-start latencies", "Capacity curve: throughput and p99 against offered load"))
    for name in ("requests/s", "users", "p50 (ms)", "p99 (ms)"):
        assert _drawn(latency[name]) > 10, name
    assert _drawn(replicas["ready hello"]) > 2 and _drawn(replicas["running hello"]) > 2
    assert _drawn(cold["visitor wait (locust)"]) >= 1
    assert _drawn(cold["activation (autoscaler)"]) >= 1
    # The ramp offers several levels of load: one point per level on the capacity curve.
    levels = {r.users for r in run.history if r.users > 0}
    assert _drawn(capacity["throughput (req/s)"]) == len(levels) >= 3


async def test_short_locust_run_is_recorded_and_reported(
    local: Any, tmp_path: Path,
) -> None:
    """Seconds of locust against a real local mode on 127.0.0.1: the scenario's own file
    records httpscale's view beside locust's stats, and the report is built from both."""
    # The locust command, a process of its own: importing locust would gevent-patch this one.
    locust = Path(sys.executable).with_name("locust")
    runner = await local(hello_app("hello", "--startup-delay", "0.2",
                                   replicas={"min": 0, "max": 2}, scaledownPeriod=30))
    proxy = "http://{}:{}".format(*runner.interceptor.proxy_address)
    admin = "http://{}:{}".format(*runner.interceptor.admin_address)
    prefix = tmp_path / "spike"
    proc = await asyncio.create_subprocess_exec(
        str(locust), "-f", str(LOADTESTS / "scenarios.py"), "--headless",
        "--host", proxy, "--scenario", "spike", "-u", "4", "-r", "4", "-t", "4s",
        "--csv", str(prefix), "--csv-full-history", "--httpscale-admin", admin,
        "--loglevel", "WARNING", "--only-summary",
        cwd=tmp_path,  # no locust.conf or pyproject.toml of ours is read
        env={**os.environ, "HTTPSCALE_HOST": "hello.localhost"},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    status, output, _ = await communicate(proc, 60)
    assert status == 0, output.decode()[-3000:]
    run = report.load_run(prefix)
    (meta,) = run.kind("meta")
    assert (meta["scenario"], meta["users"], meta["admin"]) == ("spike", 4, admin)
    assert run.history and max(r.users for r in run.history) == 4
    assert run.history[-1].requests > 0 and run.history[-1].failures == 0
    assert run.kind("sample") and not run.kind("error")
    # The app started at zero: the first visitor paid a cold start, the autoscaler saw it.
    assert len(run.kind("visitor_cold_start")) >= 1
    (history,) = run.kind("history")
    cold = history["doc"]["apps"]["hello"]["cold_starts"]
    assert len(cold) >= 1
    html = report.build_report(run)
    charts = _series(html)
    assert _drawn(charts["Cold-start latencies"]["activation (autoscaler)"]) == len(cold)
