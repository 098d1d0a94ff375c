"""Summing the workers' admin answers into one (sans-IO: fed parsed answers, no sockets).

The rule that makes the sums exact across restarts: a counter's total is the *retired base*
(the last sample of every worker generation that exited) plus the latest sample of every live
generation. A worker that does not answer one request keeps its latest sample in the sum, so
a slow worker never makes a counter go backwards; only gauges (what is in flight now) leave it
out. What a crashed generation counted after its last sample is lost: the parent samples often
(`ParentAdminSettings.sample_interval`) to bound that.

A generation is `(index, generation)` of `workers.api.WorkerInfo`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from httpscale.interceptor.api import QueueEntry

__all__ = [
    "AnswerError",
    "CounterBook",
    "MetricsSnapshot",
    "MetricsSum",
    "QueueSum",
    "WorkerKey",
    "merge_json",
    "parse_queue",
    "route_counts",
]

WorkerKey = tuple[int, int]  # (index, generation)
K = TypeVar("K")

# Families whose every sample only grows within a process: kept in the retired base.
_CUMULATIVE = frozenset({"counter", "histogram", "summary"})
_PER_WORKER_LABEL = "worker"


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


def parse_queue(worker: WorkerKey, data: Any) -> dict[str, QueueEntry]:
    """A worker's `/queue` JSON, checked; AnswerError naming the worker when malformed.
    Polled five times a second with up to thousands of routes: one tight pass, the details
    worked out only for an answer that fails it."""
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
    are summed with their retired base; gauges are summed over this scrape's answers; any
    other type (info, stateset, unknown) is listed per worker with a `worker="i"` label."""

    def __init__(self) -> None:
        self.counts: CounterBook[_SampleKey] = CounterBook()
        self._families: dict[str, _Family] = {}  # every family seen, in first-seen order

    @staticmethod
    def parse(worker: WorkerKey, text: str) -> list[Metric]:
        try:
            return list(text_string_to_metric_families(text))
        except ValueError as exc:
            raise AnswerError(worker, "/metrics", f"bad Prometheus text: {exc}") from exc

    def observe(self, worker: WorkerKey, families: Iterable[Metric]) -> None:
        sample: dict[_SampleKey, float] = {}
        for fam in families:
            self._families.setdefault(fam.name, _Family(fam.name, fam.type, fam.documentation))
            if fam.type in _CUMULATIVE:
                for s in fam.samples:
                    if not s.name.endswith("_created"):  # a timestamp, not a count
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
                if fam.type == "gauge":
                    for s in fam.samples:
                        key = _key(fam.name, s.name, s.labels)
                        gauges[key] = gauges.get(key, 0) + s.value
                elif fam.type not in _CUMULATIVE:
                    for s in fam.samples:
                        tagged = {**s.labels, _PER_WORKER_LABEL: str(worker[0])}
                        out[fam.name].add_sample(s.name, tagged, s.value)
        for (family, name, labels), value in gauges.items():
            out[family].add_sample(name, dict(labels), value)
        return [m for m in out.values() if m.samples]


# -- /status -------------------------------------------------------------------------------


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


def merge_json(values: Sequence[Any]) -> Any:
    """Several workers' JSON of the same shape -> one: numbers summed, booleans or-ed (e.g.
    `draining`), objects merged key by key, anything else (strings, lists: configuration,
    the same in every worker) taken from the first worker that has it."""
    if not values:
        return None
    first = values[0]
    if isinstance(first, bool):
        return any(v is True for v in values)
    if isinstance(first, int | float):
        return sum(v for v in values if isinstance(v, int | float) and not isinstance(v, bool))
    if isinstance(first, dict):
        keys: dict[str, None] = {}
        for v in values:
            if isinstance(v, dict):
                keys.update(dict.fromkeys(v))
        return {
            k: merge_json([v[k] for v in values if isinstance(v, dict) and k in v]) for k in keys
        }
    return first


def sum_status(
    answers: Mapping[WorkerKey, Mapping[str, Any]], counts: CounterBook[str]
) -> dict[str, Any]:
    """The workers' `/status` merged (`merge_json`), each route's `requestCount` from the
    book (retired base included), so it never goes backwards across a restart."""
    merged = merge_json(list(answers.values())) or {}
    routes = merged.get("routes")
    if isinstance(routes, dict):
        totals = counts.totals()
        for key, route in routes.items():
            if isinstance(route, dict) and key in totals:
                route["requestCount"] = int(totals[key])
    return dict(merged)
