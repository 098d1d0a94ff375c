"""`httpscale scaler` as a real process: config file in, gRPC and admin out, clean SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import grpc
import pytest
from scaler_helpers import StandIn, free_port, grpc_client, ref

from httpscale.scaler.proto import externalscaler_pb2 as pb

CONFIG = """
apps:
  - name: web
    hosts: [web.localhost]
    scalingMetric:
      requestRate: {targetValue: 7.5, window: 30s, granularity: 2s}
    run: {command: ["true"]}
  - name: api
    hosts: [api.localhost]
    targetPendingRequests: 42
    run: {command: ["true"]}
  - name: ext
    hosts: [ext.localhost]
    scalingMetric:
      concurrency: {targetValue: 3}
    run: {upstream: "http://127.0.0.1:9"}   # runs elsewhere; this scaler serves its target
"""


def scaler_argv() -> list[str]:
    return [sys.executable, "-m", "httpscale", "scaler"]


@pytest.fixture
async def standin() -> AsyncIterator[StandIn]:
    fake = StandIn()
    await fake.start()
    yield fake
    await fake.stop()


async def test_standalone_scaler_process(tmp_path: Path, standin: StandIn) -> None:
    config = tmp_path / "routes.yaml"
    config.write_text(CONFIG)
    grpc_port, admin_port = free_port(), free_port()
    standin.set("local/api", 3, 10)
    log = tmp_path / "scaler.log"
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            *scaler_argv(),
            "--config", str(config),
            "--host", "127.0.0.1",
            "--grpc-port", str(grpc_port),
            "--admin-port", str(admin_port),
            env={"HTTPSCALE_INTERCEPTOR": standin.url, "PATH": "/usr/bin:/bin"},
            stdout=out,
            stderr=out,
        )  # fmt: skip
    try:
        admin = f"http://127.0.0.1:{admin_port}"
        async with aiohttp.ClientSession() as http:
            for _ in range(200):
                assert process.returncode is None, log.read_text()
                try:
                    async with http.get(admin + "/readyz") as response:
                        if response.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.05)
            else:
                raise AssertionError(f"never ready: {log.read_text()}")
            async with http.get(admin + "/metrics") as response:
                metrics = await response.text()
            assert "httpscale_scaler_poll_duration_seconds_count" in metrics
            assert 'httpscale_scaler_open_streams{rpc="StreamIsActive"}' not in metrics
            async with http.get(admin + "/status") as response:
                status = await response.json()
            assert status["ready"] is True
            assert [r["url"] for r in status["replicas"]] == [standin.url]
            api_status = next(r for r in status["routes"] if r["key"] == "local/api")
            assert (api_status["concurrency"], api_status["active"]) == (3, True)
        async with grpc_client(grpc_port) as stub:
            web = (await stub.GetMetricSpec(ref("web"))).metricSpecs[0]
            assert (web.metricName, web.targetSize, web.targetSizeFloat) == (
                "http-local-web-rate",
                8,
                7.5,
            )
            api = (await stub.GetMetricSpec(ref("api"))).metricSpecs[0]
            assert (api.metricName, api.targetSizeFloat) == ("http-local-api-concurrency", 42.0)
            ext = (await stub.GetMetricSpec(ref("ext"))).metricSpecs[0]
            assert (ext.metricName, ext.targetSizeFloat) == ("http-local-ext-concurrency", 3.0)
            got = await stub.GetMetrics(pb.GetMetricsRequest(scaledObjectRef=ref("api")))
            assert got.metricValues[0].metricValue == 3
            stream = stub.StreamIsActive(ref("api"))
            assert (await stream.read()).result is True
            process.send_signal(signal.SIGTERM)
            # Shutdown ends the stream cleanly instead of leaving KEDA hanging.
            assert (await asyncio.wait_for(stream.read(), 5)) is grpc.aio.EOF
        assert await asyncio.wait_for(process.wait(), 10) == 0, log.read_text()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_a_bad_file_is_refused_naming_it_once(tmp_path: Path) -> None:
    config = tmp_path / "routes.yaml"
    config.write_text("apps:\n  - name: web\n    replicaz: {max: 2}\n    run: {command: [x]}\n")
    process = await asyncio.create_subprocess_exec(
        *scaler_argv(), "--config", str(config), "--interceptor", "http://127.0.0.1:9",
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(process.communicate(), 20)
    assert process.returncode == 1
    assert err.decode().strip() == (
        f"Error: {config}: apps[0].replicaz: unknown key (did you mean 'replicas'?)"
    )


async def test_bad_options_exit_with_a_usage_error(tmp_path: Path) -> None:
    process = await asyncio.create_subprocess_exec(
        *scaler_argv(), "--interceptor", "ftp://nowhere", "--poll-interval", "0",
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(process.communicate(), 20)
    assert process.returncode == 2
    assert b"poll_interval" in err


async def test_cluster_mode_options_are_checked(tmp_path: Path) -> None:
    """Without --config and --interceptor the scaler goes to the cluster: its options are
    checked first, and a missing cluster configuration is a clear error, not a traceback."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    process = await asyncio.create_subprocess_exec(
        *scaler_argv(), "--interceptor-admin-port", "Not-A-Port", env=env,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(process.communicate(), 20)
    assert process.returncode == 2, err
    assert b"Not-A-Port" in err
    process = await asyncio.create_subprocess_exec(
        *scaler_argv(), "--kubeconfig", str(tmp_path / "missing"), env=env,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(process.communicate(), 20)
    assert process.returncode == 1, err
    assert b"cannot" in err and b"Traceback" not in err
