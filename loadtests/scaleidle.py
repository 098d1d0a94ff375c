"""Idle clients for `loadtests/scalebench.py`: what 10,000 open, quiet keep-alive connections
cost a server.

Per server: 200 connections make one request each and close (one-time allocations are not
counted); the RSS of the whole process tree is read; N connections each make one request
(`held.HeldClient`, raw asyncio sockets, GET for app0.bench) and stay open; once all are
answered the RSS is read again, then the server's CPU time over an idle window in which no
byte moves, and the client connections it still holds. Bytes per idle connection = RSS growth
/ N: user-space memory only (the kernel's socket buffers are not in RSS); with --workers 2,
the interceptor workers' RSS, not the parent's. CPU: the whole tree, the parent included.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from held import HeldClient
from scaleprocs import Server, client_conns, tree_cpu_seconds, tree_rss_kb

__all__ = ["idle_clients", "idle_table"]

_HOST = "app0.bench"


async def _open(server: Server, count: int, wait_s: float) -> tuple[HeldClient, int]:
    client = HeldClient(("127.0.0.1", server.port), _HOST, count)
    try:
        await client.open()
        results = await client.wait_all(wait_s)
    except BaseException:
        client.close()
        raise
    return client, sum(1 for r in results if r.status == 200)


def _rss_kb(server: Server) -> int:
    # The interceptor's parent (--workers 2) holds no client connection, and its RSS moves by
    # tens of MB with its periodic scrapes of the workers' /metrics: its workers' RSS is the
    # figure. nginx's master is small and still, and counted.
    workers_only = server.admin_port != 0 and server.workers >= 2
    return tree_rss_kb(server.pid, without_root=workers_only)


async def idle_clients(server: Server, count: int, window_s: float) -> dict[str, Any]:
    warm, _ = await _open(server, 200, 30)
    warm.close()
    await asyncio.sleep(0.5)  # the server notices the closes before the baseline is read
    rss_before = _rss_kb(server)
    started = time.monotonic()
    client, answered = await _open(server, count, 120)
    try:
        opened_s = time.monotonic() - started
        rss_open = _rss_kb(server)
        cpu_before = tree_cpu_seconds(server.pid)
        await asyncio.sleep(window_s)  # the measurement itself: nothing is sent meanwhile
        cpu = tree_cpu_seconds(server.pid) - cpu_before
        rss_end = _rss_kb(server)
        held = client_conns(server)
    finally:
        client.close()
    growth = (rss_open - rss_before) * 1024
    result = {
        "server": server.name,
        "connections": count,
        "answered_200": answered,
        "open_s": opened_s,
        "still_open_at_server": held,
        "rss_before_kb": rss_before,
        "rss_open_kb": rss_open,
        "rss_end_kb": rss_end,
        "rss_growth_bytes_per_conn": growth / max(1, answered),
        "idle_window_s": window_s,
        "idle_cpu_s": cpu,
        "idle_cpu_ms_per_s": cpu * 1000 / window_s,
    }
    print(
        f"idle {server.name:<18} {answered}/{count} answered, {held} held open; "
        f"RSS +{result['rss_growth_bytes_per_conn']:.0f} B/conn; "
        f"CPU {cpu:.2f} s over {window_s:g} s idle",
        flush=True,
    )
    return result


def idle_table(results: list[dict[str, Any]]) -> str:
    lines = [
        "Idle keep-alive clients (each made one request, then stayed open)",
        "",
        "| server | connections | answered 200 | still open at server | RSS growth bytes/conn "
        "| CPU s over idle window | CPU ms per s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        if "error" in r:
            lines.append(f"| {r.get('server', '?')} | NOT MEASURED: {r['error']} ||||||")
            continue
        lines.append(
            f"| {r['server']} | {r['connections']} | {r['answered_200']} "
            f"| {r['still_open_at_server']} | {r['rss_growth_bytes_per_conn']:.0f} "
            f"| {r['idle_cpu_s']:.2f} ({r['idle_window_s']:g} s) | {r['idle_cpu_ms_per_s']:.1f} |"
        )
    return "\n".join(lines) + "\n"
