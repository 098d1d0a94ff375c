"""The cost report's sources over real loopback HTTP, serving recorded answers: local mode's
`/history` and Prometheus' query API; and `httpscale report cost` on top of them."""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner
from reportkit import DATA, recorded_server

from httpscale.kube.resources import DEPLOYMENTS, Resource
from httpscale.report.cli import report_command
from httpscale.report.collect import DEFAULT_REQUESTS, CostSettings, collect
from httpscale.report.cost import Requests
from httpscale.report.localsource import SourceError, fetch_history
from httpscale.report.promsource import prometheus_timelines, step_for
from httpscale.report.targets import Target

T0 = 1_700_000_000
HISTORY = json.loads((DATA / "history.json").read_text())
PROM_REPLICAS = json.loads((DATA / "prometheus_replicas.json").read_text())


def history(path: str, query: dict[str, str]) -> tuple[int, Any]:
    return (200, HISTORY) if path == "/history" else (404, {"error": "not found"})


async def test_local_history_over_http_gives_the_report() -> None:
    with recorded_server(history) as server:
        report, notes = await collect(CostSettings(admin_url=server.url + "/"))
    assert notes == []
    assert server.requests == [("/history", {})]
    assert (report.start, report.end) == (T0, T0 + 3600)  # the first point, the server's now
    hello, webui = report.routes
    # hello: 300 x 1 + 300 x 2 + 600 x 1 + 599.5 x 1 (600.25 -> 3600: the last wake at 3000.5)
    assert hello.used.replica_seconds == pytest.approx(2099.5)
    assert hello.at_max.replica_seconds == 4 * 3600
    assert hello.timeline.requests == DEFAULT_REQUESTS  # local mode requests nothing
    assert hello.used.cpu_core_hours == pytest.approx(2099.5 / 3600 * 0.25)
    assert (hello.cold_starts.count, hello.cold_starts.p50, hello.cold_starts.p99) == (
        2, 1.06, 1.12)
    assert webui.used.replica_seconds == 100.0
    assert (webui.cold_starts.count, webui.cold_starts.p99) == (1, 8.03)
    assert report.source.endswith("/history")


async def test_since_cuts_the_period_to_its_end() -> None:
    with recorded_server(history) as server:
        report, _ = await collect(CostSettings(admin_url=server.url, since=900.0))
    assert (report.start, report.end) == (T0 + 2700, T0 + 3600)
    hello = report.routes[0]
    assert hello.used.replica_seconds == pytest.approx(599.5)  # the last wake only
    assert hello.cold_starts.count == 1


async def test_a_server_without_history_is_named() -> None:
    with recorded_server(lambda path, q: (404, {})) as server:
        with pytest.raises(SourceError, match=r"/history: 404 \(not a `httpscale local`"):
            await fetch_history(server.url)
    with recorded_server(lambda path, q: (200, {"now": "soon"})) as server:
        with pytest.raises(SourceError, match="expected"):
            await collect(CostSettings(admin_url=server.url))


def _target(name: str, workload: Resource = DEPLOYMENTS) -> Target:
    return Target("shop", name, workload, name, 1, 5, Requests(0.5, 1.0, "pod template"))


async def test_prometheus_replicas_and_held_waits() -> None:
    def prometheus(path: str, q: dict[str, str]) -> tuple[int, Any]:
        if path == "/api/v1/query_range":
            if 'deployment="web"' in q["query"]:
                return 200, PROM_REPLICAS
            return 200, {"status": "success", "data": {"resultType": "matrix", "result": []}}
        if path == "/api/v1/query":
            value = {"histogram_quantile(0.5,": "1.2", "histogram_quantile(0.99,": "2.4"}
            quantile = q["query"].split(" ")[0]
            result = [{"metric": {}, "value": [float(q["time"]), value[quantile]]}]
            return 200, {"status": "success", "data": {"resultType": "vector", "result": result}}
        return 404, {"status": "error", "error": "no such path"}

    statefulset = Resource("apps", "v1", "statefulsets", "StatefulSet")
    rollout = Resource("argoproj.io", "v1alpha1", "rollouts", "Rollout")
    targets = [_target("web"), _target("db", statefulset), _target("canary", rollout)]
    with recorded_server(prometheus) as server:
        timelines, notes = await prometheus_timelines(server.url, targets, T0, T0 + 3600)
    assert step_for(T0, T0 + 3600) == 15.0
    ranges = [q for path, q in server.requests if path == "/api/v1/query_range"]
    assert ranges[0] == {
        "query": 'max(kube_deployment_status_replicas{namespace="shop",deployment="web"})',
        "start": f"{T0}.000", "end": f"{T0 + 3600}.000", "step": "15",
    }
    assert ranges[1]["query"] == (
        'max(kube_statefulset_status_replicas{namespace="shop",statefulset="db"})')
    instants = [q["query"] for path, q in server.requests if path == "/api/v1/query"]
    assert instants[1] == ('histogram_quantile(0.99, sum by (le) (increase('
                           'httpscale_held_seconds_bucket{route="shop/web"}[3600s])))')
    assert notes == [
        'shop/db: left out, no samples of max(kube_statefulset_status_replicas'
        '{namespace="shop",statefulset="db"})',
        "shop/canary: left out, kube-state-metrics has no replica count for Rollout",
    ]
    (web,) = timelines
    # Only the changes are kept: 0, 1 at 600 s, 3 at 1200 s, 1 at 1500 s, 0 at 2400 s.
    assert [(t - T0, n) for t, n in web.replicas] == [
        (0, 0.0), (600, 1.0), (1200, 3.0), (1500, 1.0), (2400, 0.0)]
    assert web.cold_starts == [(T0 + 600, None)]
    assert web.waits is not None and (web.waits.p50, web.waits.p99) == (1.2, 2.4)


async def test_prometheus_errors_are_reported() -> None:
    def failing(path: str, q: dict[str, str]) -> tuple[int, Any]:
        return 400, {"status": "error", "errorType": "bad_data", "error": "parse error"}

    with recorded_server(failing) as server:
        with pytest.raises(SourceError, match="parse error"):
            await prometheus_timelines(server.url, [_target("web")], T0, T0 + 60)


def test_cli_text_json_and_html(tmp_path: Any) -> None:
    runner = CliRunner()
    args = ["cost", "--cpu-per-replica", "500m", "--memory-per-replica", "1Gi",
            "--price-cpu-hour", "3.6", "--price-gib-hour", "0.36", "--currency", "EUR"]
    with recorded_server(history) as server:
        text = runner.invoke(report_command, [*args, "--admin", server.url])
        as_json = runner.invoke(report_command, [*args, "--admin", server.url, "--format", "json"])
        html_path = tmp_path / "cost.html"
        html = runner.invoke(report_command, [*args, "--admin", server.url, "--format", "html",
                                              "-o", str(html_path)])
    assert text.exit_code == 0, text.output
    lines = text.output.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("ROUTE"))
    # hello: 2099.5 replica-seconds x (0.5 core x 3.6 + 1 GiB x 0.36) / 3600 = 1.2597
    assert lines[header + 1].split()[:10] == [
        "hello", "0-4", "0.58", "0.583", "0.292", "0.583", "1.26", "2.16", "8.64", "7.38"]
    assert lines[header + 2].split()[:7] == [
        "webui", "0-1", "0.03", "0.028", "0.014", "0.028", "0.06"]
    assert lines[header + 3].split()[0] == "TOTAL"
    assert "per replica 0.5 CPU and 1 GiB (given: --cpu-per-replica 500m, " in text.output

    assert as_json.exit_code == 0, as_json.output
    doc = json.loads(as_json.output)
    assert [r["name"] for r in doc["routes"]] == ["hello", "webui"]
    assert doc["routes"][0]["used"]["cost"] == pytest.approx(2099.5 / 3600 * 2.16)
    assert doc["routes"][0]["cold_starts"] == {
        "count": 2, "p50": 1.06, "p99": 1.12, "basis": "time to first ready replica"}

    assert html.exit_code == 0, html.output
    page = html_path.read_text()
    assert page.startswith("<!DOCTYPE html>") and page.count("<svg") == 3


def test_cli_refuses_contradictions() -> None:
    runner = CliRunner()
    both = runner.invoke(report_command, ["cost", "--prometheus", "http://x", "--record", "1m"])
    assert both.exit_code == 2 and "not both" in both.output
    png = runner.invoke(report_command, ["cost", "--format", "png"])
    assert png.exit_code == 2 and "--format png needs --output" in png.output
    bad = runner.invoke(report_command, ["cost", "--cpu-per-replica", "lots"])
    assert bad.exit_code == 2 and "not a Kubernetes quantity" in bad.output
    with recorded_server(lambda path, q: (404, {})) as server:
        gone = runner.invoke(report_command, ["cost", "--admin", server.url])
    assert gone.exit_code == 1 and "404" in gone.output
