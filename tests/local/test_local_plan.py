"""From config to plan: a fixed upstream with scaling fields is accepted, routed, not scaled,
and local mode says so once (the same file feeds a standalone scaler, which serves them)."""

from __future__ import annotations

import logging

import pytest

from httpscale.config.local_file import parse_local_config
from httpscale.local.plan import plan_apps
from httpscale.routing.spec import Endpoint

CONFIG = {
    "apps": [
        {
            "name": "ext",
            "hosts": ["ext.localhost"],
            "replicas": {"max": 5},
            "scalingMetric": {"concurrency": {"targetValue": 3}},
            "run": {"upstream": "http://127.0.0.1:9001"},
        },
        {"name": "plain", "hosts": ["plain.localhost"], "run": {"upstream": "http://h:2"}},
        {
            "name": "web",
            "hosts": ["web.localhost"],
            "scalingMetric": {"concurrency": {"targetValue": 3}},
            "run": {"command": ["srv"]},
        },
    ]
}


def test_a_scaled_upstream_is_planned_as_a_fixed_one_and_said_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="httpscale.local")
    ext, plain, web = plan_apps(parse_local_config(CONFIG, source="local.yaml").apps)
    assert (ext.upstream, ext.process) == (Endpoint("127.0.0.1", 9001), None)
    assert plain.upstream is not None and web.process is not None
    said = [r.getMessage() for r in caplog.records if r.name == "httpscale.local"]
    assert said == [
        "app ext: a fixed upstream, which local mode does not scale; its replicas, "
        "scalingMetric only matter to a scaler (httpscale scaler --config)"
    ]
