"""LocalAutoscaler driving real hello processes, with the interceptor's counters played by a test
double (the end-to-end tests with the real interceptor are in test_local_e2e.py)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence

import pytest
from localkit import eventually, http_get

from httpscale.interceptor.api import QueueEntry, RouteStats, StatusProvider, WakeListener
from httpscale.local.autoscaler import AutoscalerSettings, LocalAutoscaler
from httpscale.local.plan import AppPlan
from httpscale.local.policy import ScalingParams
from httpscale.local.replica import ProcessSpec
from httpscale.local.supervisor import SupervisorSettings
from httpscale.routing.spec import Endpoint, RouteSpec


class CountersDouble:
    """The InterceptorControl surface with counters the test sets by hand."""

    def __init__(self) -> None:
        self.endpoints: dict[str, frozenset[Endpoint]] = {}
        self.stats: dict[str, RouteStats] = {}
        self.wake_listeners: list[WakeListener] = []
        self.providers: dict[str, StatusProvider] = {}
        self.changed = asyncio.Event()

    def set_routes(self, routes: Sequence[RouteSpec]) -> None:
        pass

    def set_endpoints(self, route_key: str, endpoints: Iterable[Endpoint]) -> None:
        self.endpoints[route_key] = frozenset(endpoints)

    def set_fallback_endpoints(self, route_key: str, endpoints: Iterable[Endpoint]) -> None:
        pass

    def add_wake_listener(self, listener: WakeListener) -> None:
        self.wake_listeners.append(listener)

    def add_status_provider(self, name: str, provider: StatusProvider) -> None:
        self.providers[name] = provider

    def queue(self) -> dict[str, QueueEntry]:
        return {}

    def route_stats(self, route_key: str) -> RouteStats | None:
        return self.stats.get(route_key)

    def endpoint_in_flight(self, route_key: str, endpoint: Endpoint) -> int:
        return 0

    async def wait_endpoint_idle(self, route_key: str, endpoint: Endpoint) -> None:
        return None

    def set_stats(self, key: str, concurrency: int, request_count: int) -> None:
        self.stats[key] = RouteStats(
            concurrency=concurrency,
            held=0,
            request_count=request_count,
            endpoints=len(self.endpoints.get(key, ())),
        )


SETTINGS = AutoscalerSettings(
    sync_interval=0.05, supervisor=SupervisorSettings(drain_timeout=2, backoff_initial=0.1)
)


def plan(spec: ProcessSpec, **scaling: float) -> AppPlan:
    params: dict[str, float] = dict(
        min_replicas=0, max_replicas=3, target=10, scaledown_period=1, stabilization_window=0.5
    )
    params_text: dict[str, str] = {"metric_name": "concurrency"}
    params.update(scaling)
    return AppPlan(
        name="hello",
        route=RouteSpec(key="local/hello"),
        scaling=ScalingParams(**params, **params_text),  # type: ignore[arg-type]
        process=spec,
    )


async def test_wake_scale_out_and_back_to_zero(
    hello_spec: Callable[..., ProcessSpec], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="httpscale.local")
    control = CountersDouble()
    control.set_stats("local/hello", 0, 0)
    scaler = LocalAutoscaler(control, (plan(hello_spec()),), SETTINGS)
    scaler.start()
    try:
        assert control.endpoints.get("local/hello", frozenset()) == frozenset()
        for listener in control.wake_listeners:
            listener("local/hello")
        control.set_stats("local/hello", 1, 1)  # the held request
        await eventually(lambda: len(control.endpoints.get("local/hello", ())) == 1)
        (ep,) = control.endpoints["local/hello"]
        assert (await http_get(ep))[0] == 200

        control.set_stats("local/hello", 25, 100)  # 25 in flight / target 10 -> 3
        await eventually(lambda: len(control.endpoints["local/hello"]) == 3)

        control.set_stats("local/hello", 0, 100)  # idle: down, then to zero after 1 s
        await eventually(lambda: not control.endpoints["local/hello"])
        await eventually(lambda: not scaler.scalers["local/hello"].supervisor.replicas)
        status = control.providers["apps"]()
        assert status["hello"]["desired"] == 0  # type: ignore[index]
    finally:
        await scaler.close()
    scale_lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("scale ")]
    assert scale_lines[0] == "scale hello: 0 -> 1 (request while at zero)"
    assert scale_lines[1].startswith("scale hello: cold start took ")
    assert scale_lines[2].startswith("scale hello: 1 -> 3 (concurrency 25 / target 10)")
    assert (
        scale_lines[-1].startswith("scale hello: ") and " -> 0 (no traffic for " in scale_lines[-1]
    )


async def test_min_replicas_start_without_traffic(hello_spec: Callable[..., ProcessSpec]) -> None:
    control = CountersDouble()
    control.set_stats("local/hello", 0, 0)
    scaler = LocalAutoscaler(control, (plan(hello_spec(), min_replicas=2),), SETTINGS)
    scaler.start()
    try:
        await eventually(lambda: len(control.endpoints.get("local/hello", ())) == 2)
        await asyncio.sleep(1.5)  # longer than scaledown_period: min holds
        assert len(control.endpoints["local/hello"]) == 2
    finally:
        await scaler.close()


def test_status_shape_for_upstream_app() -> None:
    control = CountersDouble()
    upstream = AppPlan(
        name="static",
        route=RouteSpec(key="local/static"),
        scaling=ScalingParams(),
        upstream=Endpoint("127.0.0.1", 9),
    )
    scaler = LocalAutoscaler(control, (upstream,), SETTINGS)
    status: Mapping[str, object] = scaler.status()
    assert status == {
        "static": {
            "route": "local/static",
            "kind": "upstream",
            "upstream": "127.0.0.1:9",
            "concurrency": 0,
            "held": 0,
        }
    }


async def test_request_rate_metric_scales_on_rate(hello_spec: Callable[..., ProcessSpec]) -> None:
    control = CountersDouble()
    control.set_stats("local/hello", 0, 0)
    rate_plan = AppPlan(
        name="hello",
        route=RouteSpec(key="local/hello"),
        scaling=ScalingParams(
            min_replicas=1, max_replicas=3, target=10, scaledown_period=30, stabilization_window=30
        ),
        metric="requestRate",
        rate_window=1.0,
        rate_granularity=0.1,
        process=hello_spec(),
    )
    scaler = LocalAutoscaler(control, (rate_plan,), SETTINGS)
    scaler.start()
    try:
        await eventually(lambda: len(control.endpoints.get("local/hello", ())) == 1)
        # Never more than 1 in flight, so concurrency says 1 replica; 25 requests every 40 ms
        # (625/s) says 3, the most: it still does on a machine so loaded that each 40 ms takes
        # 20 times as long. The traffic goes on until the replicas are there, as real traffic
        # would (a fixed burst was over, and its rate decayed, before a loaded machine scaled).
        count = 0
        async with asyncio.timeout(30):
            while len(control.endpoints["local/hello"]) < 3:
                count += 25
                control.set_stats("local/hello", 1, count)
                await asyncio.sleep(0.04)  # the traffic's pace, not a wait for the scaler
        assert len(control.endpoints["local/hello"]) == 3
        assert scaler.status()["hello"]["rate"] > 10
    finally:
        await scaler.close()
