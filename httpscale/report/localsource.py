"""Timelines from local mode: `GET <admin>/history` on `httpscale local`'s admin server.

The document (the local autoscaler's own record, points at its start and at each change of
running replicas):

    {"now": <unix>, "apps": {"<app>": {"route": "<key>", "min": n, "max": n,
        "replicas": [[<unix>, <count>], ...], "cold_starts": [[<unix>, <wait s>], ...]}}}

Local mode has no resource requests, so what a replica costs is given (`--cpu-per-replica`,
`--memory-per-replica`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypedDict

import aiohttp

from httpscale.report.cost import Requests, RouteTimeline

__all__ = ["HistoryApp", "HistoryDoc", "SourceError", "fetch_history", "parse_history"]


class HistoryApp(TypedDict):
    route: str
    min: int
    max: int
    replicas: list[list[float]]
    cold_starts: list[list[float]]


class HistoryDoc(TypedDict):
    now: float
    apps: dict[str, HistoryApp]


class SourceError(Exception):
    """A source could not be read, or answered something that is not what it should be."""


def _points(value: Any, what: str) -> list[tuple[float, float]]:
    if not isinstance(value, list):
        raise SourceError(f"{what}: expected a list of [time, value], got {type(value).__name__}")
    out = []
    for item in value:
        if (not isinstance(item, list) or len(item) != 2
                or not all(isinstance(v, int | float) for v in item)):
            raise SourceError(f"{what}: expected [time, value], got {item!r}")
        out.append((float(item[0]), float(item[1])))
    out.sort(key=lambda p: p[0])
    return out


def parse_history(doc: Mapping[str, Any], requests: Requests) -> tuple[float, list[RouteTimeline]]:
    """(the server's now, one timeline per app); SourceError on a malformed document."""
    now = doc.get("now")
    apps = doc.get("apps")
    if not isinstance(now, int | float) or not isinstance(apps, Mapping):
        raise SourceError("history: expected {\"now\": <unix time>, \"apps\": {...}}")
    timelines = []
    for name, app in apps.items():
        if not isinstance(app, Mapping):
            raise SourceError(f"history: app {name!r} is not an object")
        lo, hi = app.get("min"), app.get("max")
        if not isinstance(lo, int) or not isinstance(hi, int):
            raise SourceError(f"history: app {name!r} has no integer min and max")
        timelines.append(RouteTimeline(
            name=str(name),
            route=str(app.get("route") or name),
            min_replicas=lo,
            max_replicas=hi,
            replicas=_points(app.get("replicas"), f"history: {name}.replicas"),
            cold_starts=_points(app.get("cold_starts", []), f"history: {name}.cold_starts"),
            requests=requests,
        ))
    return float(now), timelines


async def fetch_history(admin_url: str, time_limit: float = 10.0) -> dict[str, Any]:
    """The decoded `/history` document; SourceError when it cannot be read."""
    url = admin_url.rstrip("/") + "/history"
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=time_limit)) as s:
            async with s.get(url) as resp:
                if resp.status == 404:
                    raise SourceError(
                        f"{url}: 404 (not a `httpscale local` admin address, or one too old "
                        "to keep a replica history)"
                    )
                if resp.status != 200:
                    raise SourceError(f"{url}: HTTP {resp.status}")
                doc = await resp.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise SourceError(f"cannot read {url}: {exc!r}") from exc
    except ValueError as exc:
        raise SourceError(f"{url} did not return JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise SourceError(f"{url} returned {type(doc).__name__}, not an object")
    return doc
