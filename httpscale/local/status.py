"""`httpscale status`: fetch the admin server's `/status` JSON and print the apps as a table.

The command lives here, apart from `httpscale local`'s module, so that it loads none of what
local mode runs (the proxy, the app supervisor): it is an HTTP client and a table.

Pure formatting (`format_status`) is separate from the fetch so it is tested on plain dicts.
The "apps" section is what `LocalAutoscaler.status` provides; unknown fields are ignored and
missing ones print as "-", so an older or newer server still gives a readable table.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any

import click

from httpscale.clikit import option

__all__ = ["StatusError", "fetch_status", "format_status", "status_command"]


class StatusError(Exception):
    """The admin server could not be reached or did not answer with JSON."""


def fetch_status(admin_url: str, timeout: float = 5.0) -> dict[str, Any]:
    url = admin_url.rstrip("/") + "/status"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            doc = json.load(response)
    except (OSError, urllib.error.URLError) as exc:
        raise StatusError(f"cannot read {url}: {exc}") from exc
    except ValueError as exc:
        raise StatusError(f"{url} did not return JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise StatusError(f"{url} returned {type(doc).__name__}, not an object")
    return doc


def _get(d: Mapping[str, Any], key: str) -> str:
    value = d.get(key)
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _table(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]


def format_status(doc: Mapping[str, Any]) -> str:
    apps = doc.get("apps")
    if not isinstance(apps, Mapping) or not apps:
        return "no apps (is this a `httpscale local` admin address?)"
    header = [
        "APP",
        "ROUTE",
        "REPLICAS",
        "MIN-MAX",
        "METRIC",
        "CONC",
        "HELD",
        "RATE/s",
        "LAST SCALE",
    ]
    rows: list[list[str]] = [header]
    replica_rows: list[list[str]] = [["APP", "REPLICA", "PID", "PORT", "STATE", "AGE", "IN-FLIGHT"]]
    for name, app in apps.items():
        if not isinstance(app, Mapping):
            continue
        if app.get("kind") == "upstream":
            replicas = f"upstream {_get(app, 'upstream')}"
            bounds = metric = rate = "-"
        else:
            replicas = f"{_get(app, 'ready')}/{_get(app, 'desired')}"
            bounds = f"{_get(app, 'min')}-{_get(app, 'max')}"
            metric = f"{_get(app, 'metric')}:{_get(app, 'target')}"
            rate = _get(app, "rate")
        last = app.get("last_scale")
        last_text = "-"
        if isinstance(last, Mapping):
            last_text = (
                f"{_get(last, 'from')}->{_get(last, 'to')} {_get(last, 'ago')}s ago "
                f"({_get(last, 'reason')})"
            )
            if app.get("last_cold_start") is not None:
                last_text += f", cold start {_get(app, 'last_cold_start')}s"
        rows.append(
            [
                str(name),
                _get(app, "route"),
                replicas,
                bounds,
                metric,
                _get(app, "concurrency"),
                _get(app, "held"),
                rate,
                last_text,
            ]
        )
        for replica in app.get("replicas") or ():
            if isinstance(replica, Mapping):
                replica_rows.append(
                    [
                        str(name),
                        _get(replica, "name"),
                        _get(replica, "pid"),
                        _get(replica, "port"),
                        _get(replica, "state"),
                        _get(replica, "age") + "s",
                        _get(replica, "in_flight"),
                    ]
                )
    lines = _table(rows)
    if len(replica_rows) > 1:
        lines.append("")
        lines.extend(_table(replica_rows))
    return "\n".join(lines)


@click.command("status")
@option(
    "--admin",
    "admin_url",
    default="http://127.0.0.1:9090",
    help="Base URL of the interceptor's admin server.",
)
@option("--json", "as_json", is_flag=True, default=False, help="Print the raw /status JSON.")
@option(
    "--watch",
    type=float,
    default=0.0,
    help="Refresh every this many seconds (0: print once).",
)
def status_command(admin_url: str, as_json: bool, watch: float) -> None:
    """Print what `httpscale local` runs: apps, replicas (pid, port, state, age), load."""
    while True:
        try:
            doc = fetch_status(admin_url)
        except StatusError as exc:
            if not watch:
                raise click.ClickException(str(exc)) from None
            text = f"error: {exc}"
        else:
            text = json.dumps(doc, indent=2) if as_json else format_status(doc)
        if not watch:
            click.echo(text)
            return
        click.clear()
        click.echo(f"{admin_url}/status  every {watch:g}s  {time.strftime('%H:%M:%S')}\n")
        click.echo(text)
        try:
            time.sleep(watch)
        except KeyboardInterrupt:
            return
