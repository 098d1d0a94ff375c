"""gRPC through the interceptor: a grpcio client over h2c to the interceptor, on to a real
grpcio server; and the interceptor's own errors as gRPC statuses a grpcio client reads."""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import AsyncIterator

import grpc
import pytest

from httpscale.routing.spec import Endpoint

from .grpcapp import GRPC_STALE_LOOP, SERVICE, start_grpc_app
from .helpers import APP_KEY, app_route, eventually, queue_entry

pytestmark = pytest.mark.expected_errors(GRPC_STALE_LOOP)

# The HTTP/2 upstream (contract C) is another part of issue 19: without it a gRPC call
# cannot reach a backend, so those tests wait for it; the error-status tests do not need it.
needs_h2_upstream = pytest.mark.skipif(
    importlib.util.find_spec("httpscale.interceptor.h2.upstream") is None,
    reason="httpscale/interceptor/h2/upstream.py (HTTP/2 upstream, contract C) is not merged",
)


def _channel(address: tuple[str, int], authority: str = "app.test") -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(
        f"{address[0]}:{address[1]}", options=[("grpc.default_authority", authority)]
    )


def _unary(ch: grpc.aio.Channel) -> grpc.aio.UnaryUnaryMultiCallable:
    return ch.unary_unary(f"/{SERVICE}/Unary")


@pytest.fixture
async def grpc_backend() -> AsyncIterator[Endpoint]:
    app = await start_grpc_app()
    yield Endpoint("127.0.0.1", app.port)
    await app.stop()


@needs_h2_upstream
async def test_unary_stream_and_bidi_end_to_end(grpc_backend, make_interceptor):
    ic = await make_interceptor(routes=[app_route(grpc_backend)])
    async with _channel(ic.proxy_address) as ch:
        assert await _unary(ch)(b"hi", timeout=10) == b"echo:hi"
        parts = [m async for m in ch.unary_stream(f"/{SERVICE}/Stream")(b"4", timeout=10)]
        assert parts == [b"part0", b"part1", b"part2", b"part3"]
        call = ch.stream_stream(f"/{SERVICE}/Bidi")(timeout=10)
        got = []
        for word in (b"a", b"bc", b"def"):
            await call.write(word)
            got.append(await call.read())  # a reply per message: the stream is interactive
        await call.done_writing()
        assert got == [b"A", b"BC", b"DEF"]
        assert await call.code() == grpc.StatusCode.OK
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await _unary(ch)(b"fail", timeout=10)
        # The app's own status comes through in the trailers.
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert err.value.details() == "asked to fail"
    await eventually(lambda: queue_entry(ic)["Concurrency"] == 0)
    assert queue_entry(ic)["RequestCount"] == 4


@needs_h2_upstream
async def test_large_server_stream_passes_through_the_windows(grpc_backend, make_interceptor):
    # 24 MiB in 1 MiB messages: far over every window on both sides, so the bytes only
    # arrive whole if the client's and the app's windows are reopened as data moves on.
    ic = await make_interceptor(routes=[app_route(grpc_backend)])
    async with _channel(ic.proxy_address) as ch:
        call = ch.unary_stream(f"/{SERVICE}/Big")(b"24x1048576", timeout=60)
        sizes = [len(m) async for m in call]
    assert sizes == [1 << 20] * 24


@needs_h2_upstream
async def test_cancelled_call_is_counted_499_and_released(grpc_backend, make_interceptor):
    ic = await make_interceptor(routes=[app_route(grpc_backend)])
    async with _channel(ic.proxy_address) as ch:
        call = ch.stream_stream(f"/{SERVICE}/Bidi")(timeout=20)
        await call.write(b"x")
        assert await call.read() == b"X"
        assert queue_entry(ic)["Concurrency"] == 1
        call.cancel()  # RST_STREAM CANCEL from the client
        await eventually(lambda: queue_entry(ic)["Concurrency"] == 0, within=10)
    assert ic.proxy.metrics.requests_by_status().get(499) == 1


@needs_h2_upstream
async def test_call_at_zero_waits_for_the_app(grpc_backend, make_interceptor):
    ic = await make_interceptor(routes=[app_route(dynamic=True)])
    async with _channel(ic.proxy_address) as ch:
        call = asyncio.ensure_future(_unary(ch)(b"cold", timeout=20))
        await eventually(lambda: (ic.route_stats(APP_KEY) or {}).get("held") == 1, within=10)
        ic.set_endpoints(APP_KEY, [grpc_backend])
        assert await call == b"echo:cold"
    await eventually(lambda: queue_entry(ic)["Concurrency"] == 0)


async def test_no_route_is_not_found(make_interceptor):
    ic = await make_interceptor(routes=[app_route(dynamic=True)])
    async with _channel(ic.proxy_address, authority="nothing.test") as ch:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await _unary(ch)(b"x", timeout=10)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert "no route for host 'nothing.test'" in err.value.details()


async def test_hold_queue_full_is_unavailable(make_interceptor):
    ic = await make_interceptor(routes=[app_route(dynamic=True, max_pending_requests=1)])
    async with _channel(ic.proxy_address) as ch:
        held = asyncio.ensure_future(_unary(ch)(b"first", timeout=20))
        await eventually(lambda: (ic.route_stats(APP_KEY) or {}).get("held") == 1, within=10)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await _unary(ch)(b"second", timeout=10)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "too many requests waiting" in err.value.details()
        held.cancel()
        await asyncio.gather(held, return_exceptions=True)
    await eventually(lambda: queue_entry(ic)["Concurrency"] == 0)


async def test_readiness_timeout_is_deadline_exceeded(make_interceptor):
    ic = await make_interceptor(routes=[app_route(dynamic=True, readiness_timeout=0.3)])
    async with _channel(ic.proxy_address) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await _unary(ch)(b"x", timeout=20)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "did not become ready" in err.value.details()
    assert ic.proxy.metrics.requests_by_status().get(504) == 1


async def test_grpc_timeout_caps_the_hold(make_interceptor):
    # The route would hold for a minute; the call's own deadline (grpc-timeout) ends it, and
    # the interceptor lets go of it then (counted 504, not left held until the client's RST).
    ic = await make_interceptor(routes=[app_route(dynamic=True, readiness_timeout=60)])
    async with _channel(ic.proxy_address) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await _unary(ch)(b"x", timeout=0.5)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    await eventually(lambda: queue_entry(ic)["Concurrency"] == 0, within=5)


def test_grpc_timeout_values_read_and_written():
    from httpscale.interceptor.h2.grpc import format_timeout, parse_timeout

    assert parse_timeout(b"100m") == pytest.approx(0.1)
    assert parse_timeout(b"2S") == 2.0
    assert parse_timeout(b"1H") == 3600.0
    assert parse_timeout(b"5x") is None and parse_timeout(b"m") is None
    assert parse_timeout(b"123456789m") is None  # over 8 digits: malformed, ignored
    # What is forwarded after a hold: the time left, never zero, within 8 digits.
    assert format_timeout(1.5) == b"1500m"
    assert format_timeout(-3.0) == b"1m"
    assert format_timeout(10 * 86400.0) == b"864000S"
    assert parse_timeout(format_timeout(42.25)) == pytest.approx(42.25)
