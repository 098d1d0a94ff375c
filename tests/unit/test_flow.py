"""`flow.Flow` on real loopback transports: reasons are independent and idempotent, reading
resumes only when none is left, and a connection handed back to its pool never stays paused
for the client it served."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from httpscale.interceptor.flow import CLIENT_FULL, PENDING_BODY, PIPELINE, UPSTREAM_FULL, Flow
from httpscale.interceptor.upstream import EndpointPool, PoolLimits
from httpscale.routing.spec import Endpoint

LIMITS = PoolLimits(max_idle=4, max_total=8, max_connecting=2, idle_timeout=5.0,
                    connect_timeout=1.0, write_high_water=65536, write_low_water=16384,
                    max_head=65536)


@pytest.fixture
async def server() -> AsyncIterator[Endpoint]:
    writers: list[asyncio.StreamWriter] = []

    async def accept(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)

    srv = await asyncio.start_server(accept, "127.0.0.1", 0)
    yield Endpoint("127.0.0.1", srv.sockets[0].getsockname()[1])
    for w in writers:
        w.close()
    srv.close()
    await srv.wait_closed()


async def test_reading_resumes_when_no_reason_is_left(server: Endpoint) -> None:
    transport, _ = await asyncio.get_running_loop().create_connection(
        asyncio.Protocol, server.host, server.port
    )
    try:
        flow = Flow()
        flow.attach(transport)  # type: ignore[arg-type]
        flow.pause_reading(PIPELINE)
        flow.pause_reading(UPSTREAM_FULL)
        flow.pause_reading(UPSTREAM_FULL)  # twice: still one reason
        assert not transport.is_reading()
        assert flow.paused_for() == ["pipeline", "upstream-full"]
        flow.resume_reading(PIPELINE)
        assert not transport.is_reading(), "still paused for the upstream"
        flow.resume_reading(PENDING_BODY)  # never paused for it: nothing happens
        assert not transport.is_reading()
        flow.resume_reading(UPSTREAM_FULL)
        assert transport.is_reading() and flow.paused_for() == []
        flow.resume_reading(UPSTREAM_FULL)  # twice: no second resume_reading
        assert transport.is_reading()
        flow.pause_reading(PIPELINE)
        flow.lost()  # connection_lost: nothing paused, nothing to resume later
        assert flow.paused_for() == [] and not flow.write_paused
        flow.resume_reading(PIPELINE)
    finally:
        transport.close()


async def test_connection_handed_back_reads_again(server: Endpoint) -> None:
    pool = EndpointPool(server, LIMITS)
    assert pool.reserve()
    conn = await pool.connect()
    try:
        assert conn.transport is not None
        # The client it served filled its write buffer with this connection's last read.
        conn.flow.pause_reading(CLIENT_FULL)
        assert not conn.transport.is_reading()
        pool.give_back(conn)
        assert conn.transport.is_reading(), "the next exchange would never get its response"
        assert pool.take() is conn
    finally:
        pool.close()
