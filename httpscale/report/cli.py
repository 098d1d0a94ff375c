"""`httpscale report cost`: what scaling to zero saved, per route, as text, HTML, PNG or JSON.

Every option is also an environment variable `HTTPSCALE_<OPTION>`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import click

from httpscale.clikit import option
from httpscale.kube.api import ApiError
from httpscale.kube.config import KubeConfigError, KubeSettings
from httpscale.model.durations import parse_duration
from httpscale.model.errors import ConfigError
from httpscale.report.browser import BrowserError, screenshot
from httpscale.report.collect import CostSettings, collect, stop_on_interrupt
from httpscale.report.cost import DEFAULT_PRICES, CostReport, Prices, Requests
from httpscale.report.costview import cost_html, cost_text
from httpscale.report.localsource import SourceError
from httpscale.report.quantity import GIB, parse_quantity
from httpscale.report.recordsource import Recording

__all__ = ["report_command"]


def _duration(value: str | None, name: str) -> float | None:
    if value is None:
        return None
    try:
        return parse_duration(value, key=name)
    except ConfigError as exc:
        raise click.BadParameter(str(exc), param_hint=name) from None


def _quantity(value: str | None, name: str) -> float | None:
    if value is None:
        return None
    try:
        return parse_quantity(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=name) from None


def _requests(cpu: str | None, memory: str | None) -> Requests | None:
    """Requests given on the command line, or None to take them from each pod template."""
    cores = _quantity(cpu, "--cpu-per-replica")
    mem = _quantity(memory, "--memory-per-replica")
    if cores is None and mem is None:
        return None
    given = [f"--cpu-per-replica {cpu}"] if cpu else []
    given += [f"--memory-per-replica {memory}"] if memory else []
    return Requests(
        cores if cores is not None else 0.25,
        mem / GIB if mem is not None else 0.25,
        "given: " + ", ".join(given),
    )


def report_json(report: CostReport, notes: list[str]) -> str:
    def usage(u: Any) -> dict[str, float]:
        return dataclasses.asdict(u)

    return json.dumps({
        "start": report.start,
        "end": report.end,
        "source": report.source,
        "prices": dataclasses.asdict(report.prices),
        "routes": [
            {
                "name": r.timeline.name,
                "route": r.timeline.route,
                "min": r.timeline.min_replicas,
                "max": r.timeline.max_replicas,
                "requests": dataclasses.asdict(r.timeline.requests),
                "observed_from": r.observed_from,
                "mean_replicas": r.mean_replicas,
                "used": usage(r.used),
                "always_on_at_min": usage(r.at_min),
                "always_on_at_max": usage(r.at_max),
                "cold_starts": dataclasses.asdict(r.cold_starts),
            }
            for r in report.routes
        ],
        "notes": notes,
    }, indent=2)


@click.group("report")
def report_command() -> None:
    """Reports from what httpscale sees: `httpscale report cost`."""


@report_command.command("cost")
@option("--admin", "admin_url", default=CostSettings().admin_url,
        help="Local mode: the admin server of `httpscale local` (its /history).")
@option("--prometheus", "prometheus_url", default=None,
        help="Cluster: a Prometheus with kube-state-metrics and httpscale's metrics; "
        "targets from the cluster's HTTPScaledObjects.")
@option("--record", default=None,
        help="Cluster without Prometheus: sample each target's /scale and its pods for "
        "this long (30s, 10m, 1h; Ctrl-C reports early), then report.")
@option("--interval", type=float, default=CostSettings().interval,
        help="Seconds between samples with --record.")
@option("--since", default=None,
        help="The period: the last this long (e.g. 1h). Default: all of local mode's "
        "history; 24h with --prometheus.")
@option("--namespace", default=None,
        help="Cluster: HTTPScaledObjects in this namespace only (default: all).")
@option("--kubeconfig", type=click.Path(dir_okay=False, path_type=Path), default=None,
        help="Kubeconfig file; default: $KUBECONFIG, then in-cluster, then ~/.kube/config.")
@option("--context", default=None, help="Kubeconfig context (default: its current one).")
@option("--cpu-per-replica", default=None,
        help="CPU one replica reserves (a quantity: 250m, 0.5, 2). Default: the pod "
        "template's requests on a cluster, 250m in local mode.")
@option("--memory-per-replica", default=None,
        help="Memory one replica reserves (256Mi, 1Gi). Default: the pod template's requests "
        "on a cluster, 256Mi in local mode.")
@option("--price-cpu-hour", type=float, default=DEFAULT_PRICES.cpu_core_hour,
        help="Price of one CPU-core-hour (the default is an example: an on-demand list price).")
@option("--price-gib-hour", type=float, default=DEFAULT_PRICES.gib_hour,
        help="Price of one GiB-hour of memory (the default is an example, as above).")
@option("--currency", default=DEFAULT_PRICES.currency, help="Currency label of the prices.")
@option("--format", "fmt", type=click.Choice(["text", "html", "png", "json"]), default="text",
        help="text: a table; html: a self-contained page with charts; png: that page as an "
        "image (needs Chromium); json: the numbers.")
@option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
        help="Write here instead of standard output (required for png).")
def cost_command(
    admin_url: str, prometheus_url: str | None, record: str | None, interval: float,
    since: str | None, namespace: str | None, kubeconfig: Path | None, context: str | None,
    cpu_per_replica: str | None, memory_per_replica: str | None, price_cpu_hour: float,
    price_gib_hour: float, currency: str, fmt: str, output: Path | None,
) -> None:
    """Replica-seconds used per route over a period, against keeping min or max replicas
    always on, in CPU-core-hours, GiB-hours and money; and the cold starts paid for it."""
    if prometheus_url and record:
        raise click.UsageError("give --prometheus or --record, not both")
    if fmt == "png" and output is None:
        raise click.UsageError("--format png needs --output FILE")
    settings = CostSettings(
        admin_url=admin_url,
        prometheus_url=prometheus_url or None,
        record=_duration(record, "--record"),
        interval=interval,
        since=_duration(since, "--since"),
        namespace=namespace or None,
        kube=KubeSettings(kubeconfig=kubeconfig, context=context),
        requests=_requests(cpu_per_replica, memory_per_replica),
        prices=Prices(price_cpu_hour, price_gib_hour, currency),
    )

    def progress(rec: Recording) -> None:
        print(f"\rrecording: {rec.samples} samples, {rec.end - rec.start:.0f}s",
              end="", file=sys.stderr, flush=True)

    async def main() -> tuple[CostReport, list[str]]:
        if not record:
            return await collect(settings)
        stop = asyncio.Event()
        with stop_on_interrupt(stop):  # Ctrl-C ends the recording and still reports
            return await collect(settings, stop=stop, on_sample=progress)

    try:
        report, notes = asyncio.run(main())
    except (SourceError, KubeConfigError, ApiError) as exc:
        raise click.ClickException(str(exc)) from None
    if record:
        print(file=sys.stderr)
    for note in notes:
        click.echo(f"note: {note}", err=True)
    if fmt == "png":
        assert output is not None
        with tempfile.TemporaryDirectory(prefix="httpscale-report-") as tmp:
            page = Path(tmp) / "cost.html"
            page.write_text(cost_html(report), encoding="utf-8")
            try:
                screenshot(page, output, width=1000, height=400 + 330 * len(report.routes))
            except BrowserError as exc:
                raise click.ClickException(str(exc)) from None
        return
    text = {"text": cost_text, "html": cost_html}.get(fmt)
    body = text(report) if text is not None else report_json(report, notes)
    if output is None:
        click.echo(body)
    else:
        output.write_text(body if body.endswith("\n") else body + "\n", encoding="utf-8")
