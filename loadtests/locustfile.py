"""Locust scenarios for an app behind httpscale (local mode or a cluster's Ingress).

    .venv/bin/locust -f loadtests/locustfile.py --host http://127.0.0.1:8080 \\
        --headless -u 50 -r 10 -t 2m HelloVisitor

The host header is the app's route (`HTTPSCALE_HOST`, default hello.localhost), so the same
scenario runs against `scripts/run-local` or a cluster. Every response is checked: a status
other than 200 is a failure, and cold starts (`X-HTTPScale-Cold-Start: true`) are reported as
their own request name so their latency shows separately from warm requests.
"""

from __future__ import annotations

import os

from locust import HttpUser, between, task

HOST_HEADER = os.environ.get("HTTPSCALE_HOST", "hello.localhost")


class HelloVisitor(HttpUser):
    """Steady traffic: what scales an app out (concurrency or request rate)."""

    wait_time = between(0.05, 0.2)

    @task
    def page(self) -> None:
        with self.client.get(
            "/", headers={"Host": HOST_HEADER}, name="/", catch_response=True
        ) as resp:
            if resp.status_code != 200:
                resp.failure(f"{resp.status_code}: {resp.text[:100]}")
            elif resp.headers.get("X-HTTPScale-Cold-Start") == "true":
                resp.request_meta["name"] = "/ (cold start)"


class BurstAfterIdle(HelloVisitor):
    """Long pauses between requests: each may land on an app that went back to zero."""

    wait_time = between(30, 60)
