"""Timelines from Prometheus: kube-state-metrics' replica counts, httpscale's held waits.

Per target, over [start, end]:

* running replicas: `max(kube_deployment_status_replicas{namespace, deployment})` (or the
  StatefulSet twin) through `/api/v1/query_range`; `max` because two kube-state-metrics
  replicas would otherwise double the count. Kept as a step function of its changes.
* cold starts: the moments that count went from 0 to more. Their resolution is the step.
* waits: what the interceptor measured for requests held at zero, the histogram
  `httpscale_held_seconds{route}`, as `histogram_quantile` of its increase over the period
  (so bucket-interpolated, and per held request rather than per cold start).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import aiohttp

from httpscale.report.cost import RouteTimeline, WaitSummary
from httpscale.report.localsource import SourceError
from httpscale.report.targets import Target

__all__ = ["prometheus_timelines", "replicas_query", "step_for"]

# Prometheus refuses ranges of more than 11,000 points per series.
_MAX_POINTS = 10_000
_MIN_STEP = 15.0  # seconds: the usual scrape interval; finer steps only repeat samples

_REPLICA_METRICS = {
    ("apps", "Deployment"): ("kube_deployment_status_replicas", "deployment"),
    ("apps", "StatefulSet"): ("kube_statefulset_status_replicas", "statefulset"),
}


def _label(value: str) -> str:
    """A PromQL string literal (label values may hold quotes or backslashes)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def replicas_query(target: Target) -> str | None:
    """The PromQL for a target's running replicas; None for kinds kube-state-metrics lacks."""
    found = _REPLICA_METRICS.get((target.workload.group, target.workload.kind))
    if found is None:
        return None
    metric, label = found
    return (f"max({metric}{{namespace={_label(target.namespace)},"
            f"{label}={_label(target.workload_name)}}})")


def step_for(start: float, end: float) -> float:
    return max(_MIN_STEP, math.ceil((end - start) / _MAX_POINTS))


class _Prometheus:
    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self._session = session
        self._url = url.rstrip("/")

    async def _get(self, path: str, params: dict[str, str]) -> Any:
        url = self._url + path
        try:
            async with self._session.get(url, params=params) as resp:
                body = await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise SourceError(f"cannot query {url}: {exc!r}") from exc
        except ValueError as exc:
            raise SourceError(f"{url} did not return JSON: {exc}") from exc
        if not isinstance(body, dict) or body.get("status") != "success":
            error = body.get("error") if isinstance(body, dict) else body
            raise SourceError(f"{url} ({params.get('query')}): {error}")
        return body.get("data") or {}

    async def range(self, query: str, start: float, end: float,
                    step: float) -> list[tuple[float, float]]:
        data = await self._get("/api/v1/query_range", {
            "query": query, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step:g}",
        })
        series = data.get("result") or []
        if not series:
            return []
        return [(float(t), float(v)) for t, v in series[0].get("values") or ()]

    async def instant(self, query: str, at: float) -> float | None:
        data = await self._get("/api/v1/query", {"query": query, "time": f"{at:.3f}"})
        result = data.get("result") or []
        if not result:
            return None
        value = float(result[0]["value"][1])
        return value if math.isfinite(value) else None  # NaN: no observations


def _changes(samples: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The first sample and each one whose value differs from the one before."""
    out: list[tuple[float, float]] = []
    for t, v in samples:
        if not out or out[-1][1] != v:
            out.append((t, v))
    return out


def _activations(points: Sequence[tuple[float, float]]) -> list[tuple[float, float | None]]:
    return [(t, None) for i, (t, v) in enumerate(points)
            if i and v > 0 and points[i - 1][1] == 0]


async def prometheus_timelines(
    url: str,
    targets: Sequence[Target],
    start: float,
    end: float,
    *,
    time_limit: float = 30.0,
) -> tuple[list[RouteTimeline], list[str]]:
    """One timeline per target that Prometheus has data for, and notes on the others."""
    step = step_for(start, end)
    window = f"{max(int(end - start), 1)}s"
    timelines: list[RouteTimeline] = []
    notes: list[str] = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=time_limit)) as session:
        prom = _Prometheus(session, url)
        for target in targets:
            query = replicas_query(target)
            if query is None:
                notes.append(f"{target.route}: left out, kube-state-metrics has no replica "
                             f"count for {target.workload.kind}")
                continue
            points = _changes(await prom.range(query, start, end, step))
            if not points:
                notes.append(f"{target.route}: left out, no samples of {query}")
                continue
            held = (f"sum by (le) (increase(httpscale_held_seconds_bucket"
                    f"{{route={_label(target.route)}}}[{window}]))")
            p50 = await prom.instant(f"histogram_quantile(0.5, {held})", end)
            p99 = await prom.instant(f"histogram_quantile(0.99, {held})", end)
            timelines.append(RouteTimeline(
                name=target.label,
                route=target.route,
                min_replicas=target.min_replicas,
                max_replicas=target.max_replicas,
                replicas=points,
                cold_starts=_activations(points),
                requests=target.requests,
                waits=WaitSummary(p50, p99, "held requests' wait (interceptor histogram)"),
            ))
    return timelines, notes
