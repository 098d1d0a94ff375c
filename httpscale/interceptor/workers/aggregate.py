"""Summing the workers' admin answers into one (sans-IO: fed answer bodies, no sockets).

The rule that makes the sums exact across restarts: a counter's total is the *retired base*
(the last sample of every worker generation that exited) plus the latest sample of every live
generation. A worker that does not answer one request keeps its latest sample in the sum, so
a slow worker never makes a counter go backwards; only gauges (what is in flight now) leave it
out. What a crashed generation counted after its last sample is lost: the parent samples often
(`ParentAdminSettings`: `queue_sample_interval`, `scrape_sample_interval`) to bound that.

A generation is `(index, generation)` of `workers.api.WorkerInfo`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from httpscale.interceptor.api import QueueEntry

__all__ = [
    "AnswerError",
    "CounterBook",
    "MetricsSnapshot",
    "MetricsSum",
    "QueueSum",
    "WorkerKey",
    "parse_queue",
    "parse_status",
    "route_counts",
]

WorkerKey = tuple[int, int]  # (index, generation)
K = TypeVar("K")

_PER_WORKER_LABEL = "worker"


def _cumulative(family_type: str, sample_name: str) -> bool:
    """A sample that only grows within a process, so it is summed with the retired base:
    counters, histograms (buckets, count, sum), a summary's count and sum; not `_created`
    (a timestamp) nor a summary's quantiles (those are listed per worker)."""
    if sample_name.endswith("_created"):
        return False
    if family_type in ("counter", "histogram"):
        return True
    return family_type == "summary" and sample_name.endswith(("_count", "_sum"))


class AnswerError(ValueError):
    """A worker's answer that cannot be used; the message names the worker and the endpoint."""

    def __init__(self, worker: WorkerKey, path: str, problem: str) -> None:
        super().__init__(f"worker {worker[0]} (generation {worker[1]}) {path}: {problem}")
        self.worker = worker


class CounterBook(Generic[K]):
    """Monotonic counters over worker generations: retired base + latest live samples."""

    def __init__(self) -> None:
        self._live: dict[WorkerKey, dict[K, float]] = {}
        self._base: dict[K, float] = {}
        # Per index, the newest generation retired: an answer of it or an older one that
        # arrives late is not a live sample any more.
        self._retired: dict[int, int] = {}

    def observe(self, worker: WorkerKey, sample: Mapping[K, float]) -> None:
        index, generation = worker
        if generation <= self._retired.get(index, -1):
            return
        self._live[worker] = dict(sample)

    def retire(self, worker: WorkerKey) -> None:
        """`worker` exited: its latest sample joins the base for good."""
        index, generation = worker
        self._retired[index] = max(generation, self._retired.get(index, -1))
        for key, value in self._live.pop(worker, {}).items():
            self._base[key] = self._base.get(key, 0) + value

    def sample(self, worker: WorkerKey) -> Mapping[K, float]:
        """The latest sample of a live generation (empty if none)."""
        return self._live.get(worker, {})

    def live_samples(self) -> Iterable[Mapping[K, float]]:
        return self._live.values()

    def base(self) -> Mapping[K, float]:
        return self._base

    def totals(self) -> dict[K, float]:
        """Base + every live generation's latest sample, in the order the live ones list them
        (base-only keys last)."""
        out: dict[K, float] = {}
        for sample in self._live.values():
            for key, value in sample.items():
                out[key] = out.get(key, 0) + value
        for key, value in self._base.items():
            out[key] = out.get(key, 0) + value
        return out


# -- /queue --------------------------------------------------------------------------------


def _json(worker: WorkerKey, path: str, body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError as exc:
        raise AnswerError(worker, path, f"not JSON: {exc}") from exc


def parse_queue(worker: WorkerKey, data: Any) -> dict[str, QueueEntry]:
    """A worker's `/queue` (its body, or that parsed), checked; AnswerError naming the worker
    when malformed. Polled five times a second with up to thousands of routes: one tight pass,
    the details worked out only for an answer that fails it."""
    if isinstance(data, bytes):
        data = _json(worker, "/queue", data)
    if not isinstance(data, dict):
        raise AnswerError(worker, "/queue", "not a JSON object")
    for entry in data.values():
        try:
            concurrency, count = entry["Concurrency"], entry["RequestCount"]
        except (TypeError, KeyError, IndexError):
            break
        if type(concurrency) is not int or type(count) is not int or concurrency < 0 or count < 0:
            break
    else:
        return data
    for key, entry in data.items():
        if not isinstance(entry, dict):
            raise AnswerError(worker, "/queue", f"entry {key!r} is not an object")
        for name in ("Concurrency", "RequestCount"):
            value = entry.get(name)
            if type(value) is not int or value < 0:
                raise AnswerError(worker, "/queue", f"entry {key!r}: {name} is {value!r}")
    raise AssertionError("unreachable: the tight pass found a problem")  # pragma: no cover


class QueueSum:
    def __init__(self) -> None:
        self.counts: CounterBook[str] = CounterBook()

    def observe(self, worker: WorkerKey, entries: Mapping[str, QueueEntry]) -> None:
        self.counts.observe(worker, {k: e["RequestCount"] for k, e in entries.items()})

    def retire(self, worker: WorkerKey) -> None:
        self.counts.retire(worker)

    def render(
        self, answers: Mapping[WorkerKey, Mapping[str, QueueEntry]]
    ) -> dict[str, QueueEntry]:
        """The parent's `/queue`: the routes live workers know (the base alone when none is
        live: a route removed everywhere must not stay listed forever), Concurrency summed over
        `answers` (this request's, all observed first), RequestCount from the book. One pass
        per worker: the scaler asks five times a second."""
        base = self.counts.base()
        out: dict[str, QueueEntry] = {}
        for sample in self.counts.live_samples():
            for key, n in sample.items():
                entry = out.get(key)
                if entry is None:
                    out[key] = {"Concurrency": 0, "RequestCount": int(n + base.get(key, 0))}
                else:
                    entry["RequestCount"] += int(n)
        if not out:
            out = {key: {"Concurrency": 0, "RequestCount": int(n)} for key, n in base.items()}
        for entries in answers.values():
            for key, answered in entries.items():
                entry = out.get(key)
                if entry is not None:
                    entry["Concurrency"] += answered["Concurrency"]
        return out


# -- /metrics ------------------------------------------------------------------------------

_SampleKey = tuple[str, str, tuple[tuple[str, str], ...]]  # family, sample name, sorted labels


@dataclass(frozen=True)
class _Family:
    name: str
    type: str
    documentation: str


def _key(family: str, name: str, labels: Mapping[str, str]) -> _SampleKey:
    return family, name, tuple(sorted(labels.items()))


class MetricsSum:
    """Prometheus text of every worker -> one exposition. Counters, histograms and summaries
    are summed with their retired base; gauges are summed over this scrape's answers (those
    that describe shared state, `_SHARED_GAUGES`, combined by min/max instead); any
    other type (info, stateset, unknown) is listed per worker with a `worker="i"` label."""

    def __init__(self) -> None:
        self.counts: CounterBook[_SampleKey] = CounterBook()
        self._families: dict[str, _Family] = {}  # every family seen, in first-seen order

    @staticmethod
    def parse(worker: WorkerKey, text: str | bytes) -> list[Metric]:
        try:
            return list(text_string_to_metric_families(
                text.decode() if isinstance(text, bytes) else text))
        except ValueError as exc:  # UnicodeDecodeError is one too
            raise AnswerError(worker, "/metrics", f"bad Prometheus text: {exc}") from exc

    def observe(self, worker: WorkerKey, families: Iterable[Metric]) -> None:
        sample: dict[_SampleKey, float] = {}
        for fam in families:
            self._families.setdefault(fam.name, _Family(fam.name, fam.type, fam.documentation))
            for s in fam.samples:
                if _cumulative(fam.type, s.name):
                    sample[_key(fam.name, s.name, s.labels)] = s.value
        self.counts.observe(worker, sample)

    def retire(self, worker: WorkerKey) -> None:
        self.counts.retire(worker)

    def snapshot(self) -> MetricsSnapshot:
        """What `render` needs, copied: the rendering can then run in a thread while the
        event loop goes on observing (with 10,000 routes it takes seconds)."""
        return MetricsSnapshot(tuple(self._families.values()), self.counts.totals())

    def render(self, answers: Mapping[WorkerKey, Sequence[Metric]]) -> list[Metric]:
        return self.snapshot().render(answers)


@dataclass(frozen=True)
class MetricsSnapshot:
    families: tuple[_Family, ...]
    totals: Mapping[_SampleKey, float]

    def render(self, answers: Mapping[WorkerKey, Sequence[Metric]]) -> list[Metric]:
        """Cumulative families from the totals, gauges summed over `answers` (this scrape's),
        other types from `answers` labelled by worker."""
        out = {f.name: Metric(f.name, f.documentation, f.type) for f in self.families}
        for (family, name, labels), value in self.totals.items():
            out[family].add_sample(name, dict(labels), value)
        gauges: dict[_SampleKey, float] = {}
        for worker, families in answers.items():
            for fam in families:
                if fam.name not in out:  # first seen in this very answer: not observed
                    continue
                combine = _shared_gauge(fam.name)
                for s in fam.samples:
                    if fam.type == "gauge":
                        key = _key(fam.name, s.name, s.labels)
                        seen = gauges.get(key)
                        gauges[key] = (s.value if seen is None
                                       else combine(seen, s.value) if combine is not None
                                       else seen + s.value)
                    elif not _cumulative(fam.type, s.name) and not s.name.endswith("_created"):
                        tagged = {**s.labels, _PER_WORKER_LABEL: str(worker[0])}
                        out[fam.name].add_sample(s.name, tagged, s.value)
        for (family, name, labels), value in gauges.items():
            out[family].add_sample(name, dict(labels), value)
        return [m for m in out.values() if m.samples]

    def exposition(self, answers: Mapping[WorkerKey, Sequence[Metric]],
                   extra: Sequence[Metric] = ()) -> bytes:
        """`render` and `extra` as Prometheus text, HELP and TYPE included."""
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Families([*self.render(answers), *extra]))
        return generate_latest(registry)


#: Gauges that are every worker's view of one shared thing (the cluster's routes, a route's
#: ready endpoints), not a share of the work: summing them would count it once per worker.
#: Combined with min where "all workers" is the meaning (synced), else max (a worker that has
#: not caught up yet lags behind the others).
_SHARED_GAUGES: dict[str, Callable[[float, float], float]] = {
    "httpscale_ready_endpoints": max,
    "httpscale_interceptor_cluster_synced": min,
}
_SHARED_GAUGE_PREFIX = "httpscale_interceptor_cluster_"


def _shared_gauge(family: str) -> Callable[[float, float], float] | None:
    """How one shared gauge's samples combine across workers; None: summed."""
    combine = _SHARED_GAUGES.get(family)
    if combine is None and family.startswith(_SHARED_GAUGE_PREFIX):
        return max
    return combine


class _Families(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


# -- /status -------------------------------------------------------------------------------


def parse_status(worker: WorkerKey, body: bytes) -> dict[str, Any]:
    data = _json(worker, "/status", body)
    if not isinstance(data, dict):
        raise AnswerError(worker, "/status", "not a JSON object")
    return data


def route_counts(status: Mapping[str, Any]) -> dict[str, float]:
    """`routes.*.requestCount` of one worker's `/status`."""
    routes = status.get("routes")
    if not isinstance(routes, dict):
        return {}
    return {
        key: float(r["requestCount"])
        for key, r in routes.items()
        if isinstance(r, dict) and isinstance(r.get("requestCount"), int)
    }


#: What in a worker's /status is its share of the work, so summed over the workers. Everything
#: else is configuration or a view of shared state (a route's hosts, a canned status code, the
#: cluster's routes), the same in every worker once they caught up: joined (`_view`).
_SUMMED_TOP = ("connections", "http2Connections")
_SUMMED_ROUTE = ("concurrency", "held", "requestCount")
_ENDPOINT_TABLES = ("endpoints", "fallbackEndpoints")  # per route: endpoint -> {"inFlight": n}
_POOL_TABLES = ("upstreamPools", "http2UpstreamPools")  # endpoint -> {counter: n}


def _number(value: Any) -> float:
    return value if isinstance(value, int | float) and not isinstance(value, bool) else 0


def _sum_fields(values: Sequence[Mapping[str, Any]], fields: Iterable[str]) -> dict[str, Any]:
    return {f: sum(_number(v.get(f)) for v in values) for f in fields
            if any(f in v for v in values)}


def _union(tables: Sequence[Any], merge: Any) -> dict[str, Any]:
    """Several workers' {key: entry} -> one, each key's entries merged by `merge`."""
    keys: dict[str, None] = {}
    for t in tables:
        if isinstance(t, dict):
            keys.update(dict.fromkeys(t))
    return {k: merge([t[k] for t in tables if isinstance(t, dict) and isinstance(t.get(k), dict)])
            for k in keys}


def _view(values: Sequence[Any]) -> Any:
    """The same view of shared state from several workers as one: objects joined key by key
    (a worker that has caught up with the cluster knows a key the others do not yet, e.g. an
    invalid object it just skipped), anything else from the first worker that has it."""
    if values and all(isinstance(v, dict) for v in values):
        keys: dict[str, None] = {}
        for v in values:
            keys.update(dict.fromkeys(v))
        return {k: _view([v[k] for v in values if k in v]) for k in keys}
    return values[0] if values else None


def _first_then(values: Sequence[Mapping[str, Any]], summed: dict[str, Any]) -> dict[str, Any]:
    return {**(_view(list(values)) or {}), **summed}


def _merge_route(values: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    route = _first_then(values, _sum_fields(values, _SUMMED_ROUTE))
    for table in _ENDPOINT_TABLES:
        if any(table in v for v in values):
            route[table] = _union([v.get(table) for v in values],
                                  lambda es: _first_then(es, _sum_fields(es, ("inFlight",))))
    return route


def _merge_pool(values: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    return _sum_fields(values, {k: None for v in values for k in v})


def sum_status(
    answers: Mapping[WorkerKey, Mapping[str, Any]], counts: CounterBook[str]
) -> dict[str, Any]:
    """The workers' `/status` as one: their shares of the work summed (`_SUMMED_*`, the route
    and endpoint tables and the pools joined over workers), `draining` if any worker is,
    the longest `uptimeSeconds`, the rest from the first worker; each route's `requestCount`
    from the book (retired base included), so it never goes backwards across a restart."""
    values = list(answers.values())
    if not values:
        return {}
    merged = _first_then(values, _sum_fields(values, _SUMMED_TOP))
    merged["draining"] = any(v.get("draining") is True for v in values)
    merged["uptimeSeconds"] = max(_number(v.get("uptimeSeconds")) for v in values)
    merged["routes"] = _union([v.get("routes") for v in values], _merge_route)
    for table in _POOL_TABLES:
        if any(table in v for v in values):
            merged[table] = _union([v.get(table) for v in values], _merge_pool)
    totals = counts.totals()
    for key, route in merged["routes"].items():
        if key in totals:
            route["requestCount"] = int(totals[key])
    return merged
