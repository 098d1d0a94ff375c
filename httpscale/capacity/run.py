"""`python -m httpscale.capacity.run SPEC_JSON`: the load generator of `httpscale capacity`.

Locust runs on gevent, which monkey-patches the standard library (sockets, time, threads) when
it is imported; httpscale's asyncio code must never share a process with that. So the CLI runs
this module as a child process of its own, which imports only locust and the pure parts of
this package (`core`, `wire`), drives the step search itself (a step's end starts the next one
without a round trip), and reports on stdout, one JSON object per line (see `wire`).

Load: closed-loop `FastHttpUser`s with no wait time, each sending GET `path` to `base_url`
with the given Host header. Per step: spawn the users, wait `warmup` (queues and connection
pools settle), then measure for `step_duration` from the difference of two snapshots of
locust's cumulative stats, so the HTML report still covers the whole run. The generator's own
CPU time over the window is measured too (see `core`, rule "generator").

Bounds: no step starts that would end after `max_duration`; the run stops within one progress
interval of `max_requests`; SIGINT/SIGTERM stop it within one progress interval. A step cut
short by any of them is dropped (not judged: a partial window is not a measurement). The users
are stopped, the report written, and an `end` event says why. If the CLI goes away, the next
write fails and the run stops the same way.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

# gevent ships no type information; what is used of it here is two calls and an Event.
import gevent  # type: ignore[import-untyped]
import gevent.event  # type: ignore[import-untyped]
from locust import FastHttpUser, constant, task
from locust.env import Environment
from locust.html import get_html_report
from locust.stats import (
    calculate_response_time_percentile,
    diff_response_time_dicts,
    stats_history,
)

from httpscale.capacity.core import Finder, StepStats
from httpscale.capacity.wire import EndEvent, LoadSpec, ProgressEvent, judged_to_json

__all__ = ["main"]

_SPAWN_RATE = 100.0  # users/s: locust warns above it; 200 users still spawn within 2 s
_MAX_ERROR_TEXT = 200

Emit = Callable[[dict[str, Any]], None]


class _ParentGone(Exception):
    """Stdout is closed: nobody reads the results any more."""


@dataclass(frozen=True, slots=True)
class _Snapshot:
    """Locust's cumulative totals at one instant (windows are differences of two)."""

    at: float  # monotonic
    cpu: float  # this process's CPU seconds
    requests: int
    failures: int
    response_ms: float  # sum of response times
    histogram: dict[int, int]  # rounded ms -> count
    errors: dict[str, int]  # error text -> occurrences


def _snapshot(env: Environment) -> _Snapshot:
    total = env.stats.total
    return _Snapshot(
        at=time.monotonic(),
        cpu=time.process_time(),
        requests=total.num_requests,
        failures=total.num_failures,
        response_ms=float(total.total_response_time),
        histogram=dict(total.response_times),
        errors={str(e.error): e.occurrences for e in env.stats.errors.values()},
    )


def _window(users: int, a: _Snapshot, b: _Snapshot) -> StepStats:
    n = b.requests - a.requests
    seconds = max(b.at - a.at, 1e-9)
    histogram = diff_response_time_dicts(b.histogram, a.histogram)

    def pct(p: float) -> float:
        return calculate_response_time_percentile(histogram, n, p) / 1000.0 if n else 0.0

    new_errors = {k: v - a.errors.get(k, 0) for k, v in b.errors.items()}
    top = max(new_errors.items(), key=lambda kv: kv[1], default=("", 0))
    return StepStats(
        users=users,
        seconds=seconds,
        requests=n,
        failures=b.failures - a.failures,
        mean=(b.response_ms - a.response_ms) / n / 1000.0 if n else 0.0,
        p50=pct(0.5),
        p99=pct(0.99),
        cpu=(b.cpu - a.cpu) / seconds,
        error=top[0][:_MAX_ERROR_TEXT] if top[1] > 0 else None,
    )


def _user_class(spec: LoadSpec) -> type[FastHttpUser]:
    headers = {"Host": spec.host_header}
    path = spec.path

    class CapacityUser(FastHttpUser):
        host = spec.base_url
        wait_time = constant(0)
        network_timeout = spec.request_timeout
        connection_timeout = spec.connect_timeout
        max_retries = 0  # a retried request would hide a failure and double-count its time

        @task
        def get(self) -> None:
            self.client.get(path, headers=headers, name=path)

    return CapacityUser


class _Run:
    def __init__(self, spec: LoadSpec, emit: Emit) -> None:
        self.spec = spec
        self.emit = emit
        self.env = Environment(
            user_classes=[_user_class(spec)], host=spec.base_url, catch_exceptions=True
        )
        self.runner = self.env.create_local_runner()
        self.finder = Finder(spec.plan, spec.rules)
        self.stop = gevent.event.Event()

    def run(self) -> None:
        spec = self.spec
        history = gevent.spawn(stats_history, self.runner)  # the report's charts
        deadline = time.monotonic() + spec.max_duration
        try:
            while (users := self.finder.next_users()) is not None:
                if time.monotonic() + spec.warmup + spec.step_duration > deadline:
                    self.finder.stop("max duration")
                    break
                stats = self._step(len(self.finder.steps) + 1, users)
                if stats is None:
                    break
                judged = self.finder.record(stats)
                self.emit({"event": "step", **judged_to_json(judged)})
        finally:
            self.runner.quit()
            history.kill()

    def _step(self, index: int, users: int) -> StepStats | None:
        """Run one step; None when the run was stopped during it (`finder.stopped` says why)."""
        self.runner.start(users, spawn_rate=_SPAWN_RATE, wait=True)
        if self._phase(index, users, "warmup", self.spec.warmup) is None:
            return None
        start = _snapshot(self.env)
        end = self._phase(index, users, "measure", self.spec.step_duration, start)
        return None if end is None else _window(users, start, end)

    def _phase(
        self,
        index: int,
        users: int,
        phase: Literal["warmup", "measure"],
        seconds: float,
        start: _Snapshot | None = None,
    ) -> _Snapshot | None:
        """Wait `seconds`, reporting progress; the last snapshot, or None if stopped."""
        start = start or _snapshot(self.env)
        now = start
        while now.at - start.at < seconds:
            wait = min(self.spec.progress_interval, seconds - (now.at - start.at))
            if self.stop.wait(wait):
                self.finder.stop("interrupted")
                return None
            now = _snapshot(self.env)
            window = _window(users, start, now)
            progress: ProgressEvent = {
                "event": "progress",
                "step": index,
                "users": users,
                "phase": phase,
                "elapsed": now.at - start.at,
                "duration": seconds,
                "requests": window.requests,
                "rps": window.rps,
                "p50": window.p50,
                "p99": window.p99,
                "error_rate": window.error_rate,
            }
            self.emit(dict(progress))
            if now.requests >= self.spec.max_requests:
                self.finder.stop("max requests")
                return None
        return now

    def write_report(self) -> EndEvent:
        end: EndEvent = {
            "event": "end",
            "stopped": self.finder.stopped or "done",
            "report": None,
            "report_error": None,
        }
        if self.spec.report:
            try:
                html = get_html_report(self.env, show_download_link=False)  # type: ignore[no-untyped-call]
                with open(self.spec.report, "w", encoding="utf-8") as f:
                    f.write(html)
                end["report"] = self.spec.report
            except Exception as exc:  # the measurement stands without the report
                end["report_error"] = f"{type(exc).__name__}: {exc}"
        return end


def _emit(doc: dict[str, Any]) -> None:
    try:
        sys.stdout.write(json.dumps(doc) + "\n")
        sys.stdout.flush()
    except (BrokenPipeError, ValueError) as exc:  # ValueError: stdout already closed
        raise _ParentGone from exc


def main(argv: list[str]) -> int:
    try:
        spec = LoadSpec.from_json(json.loads(argv[1]))
    except (IndexError, ValueError, TypeError, KeyError) as exc:
        print(f"usage: python -m httpscale.capacity.run SPEC_JSON ({exc})", file=sys.stderr)
        return 2
    run = _Run(spec, _emit)
    for sig in (signal.SIGINT, signal.SIGTERM):
        gevent.signal_handler(sig, run.stop.set)
    try:
        try:
            run.run()
        finally:
            end = run.write_report()
        _emit(dict(end))
    except _ParentGone:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
