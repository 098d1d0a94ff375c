"""Locust scenarios that also record httpscale's view of the run, for loadtests/report.py.

    .venv/bin/locust -f loadtests/scenarios.py --headless --host http://127.0.0.1:8080 \\
        --scenario spike -u 20 -r 20 -t 60s --csv run/spike --csv-full-history
    .venv/bin/python loadtests/report.py run/spike        # -> run/spike_report.html

`--scenario` picks the traffic; `-u`, `-r` and `-t` size it (the shape reads them):

    steady     -u visitors for the whole run
    spike      -u/5 visitors, then all -u at once for the middle third, then -u/5 again
    ramp       1 to -u visitors in up to 6 equal steps: the capacity curve's points
    coldstart  -u visitors who each come back after HTTPSCALE_IDLE seconds (default 40),
               longer than the example's scaledownPeriod: most visits meet an app at zero
    mixed      -u visitors spread over HTTPSCALE_ROUTES ("host/path=weight,...", default
               "hello.localhost/=3,webui.localhost/=1")

The Host header is `HTTPSCALE_HOST` (default hello.localhost), as in locustfile.py. Every
response other than 200 is a failure; cold starts (`X-HTTPScale-Cold-Start: true`) get their
own request name. With `--csv PREFIX`, `PREFIX_httpscale.jsonl` records the interceptor's
(and with `--httpscale-scaler URL` the scaler's) admin `/status` every second (recorder.py).
"""

from __future__ import annotations

import math
import os
import random
from pathlib import Path
from typing import Any

import gevent
from locust import HttpUser, LoadTestShape, between, constant_pacing, events, task
from locust.env import Environment
from recorder import Recorder

HOST_HEADER = os.environ.get("HTTPSCALE_HOST", "hello.localhost")
IDLE_SECONDS = float(os.environ.get("HTTPSCALE_IDLE", "40"))
SCENARIOS = ("steady", "spike", "ramp", "coldstart", "mixed")
_RAMP_STEPS = 6


def _routes(spec: str) -> list[tuple[str, str, int]]:
    """"hello.localhost/=3,webui.localhost/api=1" -> [(host, path, weight), ...]."""
    out = []
    for item in filter(None, (part.strip() for part in spec.split(","))):
        target, _, weight = item.partition("=")
        host, slash, path = target.partition("/")
        out.append((host, slash + path or "/", int(weight or 1)))
    return out


ROUTES = _routes(os.environ.get("HTTPSCALE_ROUTES", "hello.localhost/=3,webui.localhost/=1"))


def visit(user: HttpUser, host: str, path: str = "/") -> None:
    name = f"{host}{path}" if host != HOST_HEADER else path
    with user.client.get(path, headers={"Host": host}, name=name, catch_response=True) as resp:
        if resp.status_code != 200:
            resp.failure(f"{resp.status_code}: {resp.text[:100]}")
        elif resp.headers.get("X-HTTPScale-Cold-Start") == "true":
            resp.request_meta["name"] = f"{name} (cold start)"


class Visitor(HttpUser):
    """Steady traffic on one route: what scales an app out."""

    wait_time = between(0.05, 0.2)

    @task
    def page(self) -> None:
        visit(self, HOST_HEADER)


class ColdStartVisitor(HttpUser):
    """One request, then away for longer than the app stays up: pays a cold start each time."""

    wait_time = constant_pacing(IDLE_SECONDS)

    @task
    def page(self) -> None:
        visit(self, HOST_HEADER)


class MixedRoutesVisitor(HttpUser):
    """Requests over several routes by weight: one busy app beside a rarely used one."""

    wait_time = between(0.1, 0.5)

    @task
    def page(self) -> None:
        host, path, _ = random.choices(ROUTES, weights=[w for _, _, w in ROUTES])[0]
        visit(self, host, path)


_USERS = {"coldstart": ColdStartVisitor, "mixed": MixedRoutesVisitor}


class Scenario(LoadTestShape):
    """The `--scenario` traffic over time, from `-u` users, `-r` spawn rate, `-t` run time."""

    use_common_options = True

    def tick(self) -> tuple[int, float, list[type[HttpUser]]] | None:
        assert self.runner is not None
        opts = self.runner.environment.parsed_options
        users = max(int(getattr(opts, "num_users", None) or 10), 1)
        rate = float(getattr(opts, "spawn_rate", None) or users)
        total = float(getattr(opts, "run_time", None) or 60)
        scenario = getattr(opts, "scenario", "steady")
        now = self.get_run_time()
        if now >= total:
            return None
        classes: list[type[HttpUser]] = [_USERS.get(scenario, Visitor)]
        if scenario == "spike":
            base = max(users // 5, 1)
            peak = total / 3 <= now < 2 * total / 3
            # The spike arrives at once: that is what a spike is.
            return (users, float(users), classes) if peak else (base, float(users), classes)
        if scenario == "ramp":
            steps = min(users, _RAMP_STEPS)
            step = min(int(now / (total / steps)), steps - 1)
            return (max(math.ceil(users * (step + 1) / steps), 1), float(users), classes)
        return (users, rate, classes)


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    parser.add_argument("--scenario", choices=SCENARIOS,
                        default=os.environ.get("HTTPSCALE_SCENARIO", "steady"),
                        help="httpscale traffic: " + ", ".join(SCENARIOS))
    parser.add_argument("--httpscale-admin",
                        default=os.environ.get("HTTPSCALE_ADMIN", "http://127.0.0.1:9090"),
                        help="the interceptor's admin URL, recorded every second")
    parser.add_argument("--httpscale-scaler", default=os.environ.get("HTTPSCALE_SCALER", ""),
                        help="the scaler's admin URL, recorded too when given")


_recording: dict[str, Any] = {}


@events.test_start.add_listener
def _start_recording(environment: Environment, **_: Any) -> None:
    opts = environment.parsed_options
    prefix = getattr(opts, "csv_prefix", None)
    if not prefix or _recording or environment.runner is None:
        return
    if type(environment.runner).__name__ == "WorkerRunner":
        return  # the master (or the only process) records, once
    recorder = Recorder(Path(f"{prefix}_httpscale.jsonl"), opts.httpscale_admin,
                        opts.httpscale_scaler)
    recorder.write("meta", scenario=opts.scenario, host=environment.host,
                   host_header=HOST_HEADER, users=opts.num_users, run_time=opts.run_time,
                   admin=opts.httpscale_admin, scaler=opts.httpscale_scaler or None)
    state = {"stopped": False}
    _recording.update(recorder=recorder, state=state, greenlet=gevent.spawn(
        recorder.run, lambda: state["stopped"], gevent.sleep))


@events.request.add_listener
def _cold_start(name: str, response_time: float, response: Any, exception: Any,
                **_: Any) -> None:
    recorder = _recording.get("recorder")
    if recorder is None or exception is not None or response is None:
        return
    if getattr(response, "headers", {}).get("X-HTTPScale-Cold-Start") == "true":
        recorder.write("visitor_cold_start", name=name, seconds=response_time / 1000.0)


@events.quit.add_listener
def _stop_recording(**_: Any) -> None:
    if not _recording:
        return
    _recording["state"]["stopped"] = True
    _recording["greenlet"].join(timeout=5)
    _recording["recorder"].finish()
