"""From settings to a `CostReport`: pick the source, read it, cut the period, do the sums.

Sources, by what the settings name:

* `prometheus`: a Prometheus URL; targets (workload, bounds, requests) from the cluster's
  HTTPScaledObjects, history from Prometheus over the last `since` seconds.
* `record`: a cluster without Prometheus: each target's `/scale` (and its pods) sampled for
  `record` seconds, then reported; refused at once when there is no target to sample.
* otherwise local mode: `<admin>/history` of `httpscale local`.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from httpscale.kube.config import KubeSettings, connect
from httpscale.report.cost import DEFAULT_PRICES, CostReport, Prices, Requests, cost_report
from httpscale.report.localsource import SourceError, fetch_history, parse_history
from httpscale.report.promsource import prometheus_timelines
from httpscale.report.recordsource import Recording, record
from httpscale.report.targets import list_targets
from httpscale.runtime import StopSignals

__all__ = ["DEFAULT_REQUESTS", "CostSettings", "collect", "stop_on_interrupt"]

# What one replica is taken to reserve where nothing says (local mode, a pod template with no
# requests): a small web app's usual requests. An assumption, printed with the report.
DEFAULT_REQUESTS = Requests(
    0.25, 0.25, "assumed: --cpu-per-replica 250m, --memory-per-replica 256Mi"
)

_DEFAULT_PROMETHEUS_PERIOD = 24 * 3600.0


@dataclass(frozen=True, slots=True)
class CostSettings:
    admin_url: str = "http://127.0.0.1:9090"  # local mode's admin server
    prometheus_url: str | None = None
    record: float | None = None  # seconds to sample /scale for, on a cluster
    interval: float = 5.0  # seconds between /scale samples while recording
    since: float | None = None  # the period: the last this many seconds (None: see module)
    namespace: str | None = None  # cluster: HTTPScaledObjects in this namespace only
    kube: KubeSettings = field(default_factory=KubeSettings)
    requests: Requests | None = None  # given per-replica requests: override the pod template
    prices: Prices = DEFAULT_PRICES


async def collect(
    settings: CostSettings,
    *,
    on_sample: Callable[[Recording], None] | None = None,
    stop: asyncio.Event | None = None,
) -> tuple[CostReport, list[str]]:
    """The report and notes on what was left out. `stop` ends a recording early (the CLI
    sets it on Ctrl-C); `on_sample` sees each recorded sample (progress, tests)."""
    if settings.prometheus_url is None and settings.record is None:
        return await _local(settings)
    kube = await connect(settings.kube)
    try:
        fallback = settings.requests or DEFAULT_REQUESTS
        targets, notes = await list_targets(kube, settings.namespace, fallback, settings.requests)
        if settings.prometheus_url is not None:
            end = time.time()
            start = end - (settings.since or _DEFAULT_PROMETHEUS_PERIOD)
            timelines, more = await prometheus_timelines(
                settings.prometheus_url, targets, start, end
            )
            source = f"Prometheus {settings.prometheus_url} and {kube.source}"
            return cost_report(timelines, start, end, settings.prices, source), notes + more
        assert settings.record is not None
        if not targets:
            # Sampling nothing for the whole period would only delay saying so.
            where = (f"namespace {settings.namespace}" if settings.namespace
                     else "any namespace")
            found = " has a workload to sample: " + "; ".join(notes) if notes else ""
            raise SourceError(f"nothing to record: no HTTPScaledObject in {where}{found} "
                              f"({kube.source})")
        stop = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        timer = loop.call_later(settings.record, stop.set)
        try:
            recording = await record(kube, targets, interval=settings.interval, stop=stop,
                                     on_sample=on_sample)
        finally:
            timer.cancel()
        source = (f"/scale and pods of each target sampled every {settings.interval:g}s "
                  f"({recording.samples} samples), {kube.source}")
        report = cost_report(recording.timelines(), recording.start, recording.end,
                             settings.prices, source)
        return report, notes + recording.notes()
    finally:
        await kube.close()


async def _local(settings: CostSettings) -> tuple[CostReport, list[str]]:
    doc = await fetch_history(settings.admin_url)
    now, timelines = parse_history(doc, settings.requests or DEFAULT_REQUESTS)
    firsts = [t.replicas[0][0] for t in timelines if t.replicas]
    start = now - settings.since if settings.since is not None else min(firsts, default=now)
    source = f"local mode, {settings.admin_url.rstrip('/')}/history"
    return cost_report(timelines, start, now, settings.prices, source), []


@contextlib.contextmanager
def stop_on_interrupt(stop: asyncio.Event) -> Iterator[None]:
    """Ctrl-C (SIGINT) sets `stop` instead of killing the run, while inside this block.

    Only the main thread gets signals; elsewhere (a caller's worker thread) nothing changes.
    """
    with StopSignals((signal.SIGINT,), on_stop=lambda _: stop.set()):
        yield
