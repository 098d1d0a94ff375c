"""`runtime.StopSignals` and `serve_until_signal`: real signals sent to a real child process
that runs them, each step printed by the child, so the test waits on its output (no sleeps)."""

from __future__ import annotations

import asyncio
import signal
import sys
import threading
from collections.abc import AsyncIterator

import pytest
from localrun import communicate

from httpscale.runtime import StopSignals, serve_until_signal

pytestmark = pytest.mark.usefixtures("mark")

# serve_until_signal around a component that never fails, then a "shutdown" that waits for
# stdin to close: a second signal lands while the handlers are already gone.
SERVE = """
import asyncio, sys
from httpscale.runtime import serve_until_signal

async def component():
    print("ready", flush=True)
    await asyncio.Event().wait()

async def main():
    sig = await serve_until_signal(component())
    print("stopping", sig.name, flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    print("stopped", flush=True)

asyncio.run(main())
"""

# Local mode's shape: SIGHUP too; the first signal stops, a second one forces.
FORCE = """
import asyncio, signal
from httpscale.runtime import StopSignals

async def main():
    forced = asyncio.Event()
    def again(sig):
        print("forced by", sig.name, flush=True)
        forced.set()
    with StopSignals((signal.SIGINT, signal.SIGTERM, signal.SIGHUP),
                     on_stop=lambda sig: print("stop on", sig.name, flush=True),
                     on_again=again) as signals:
        print("ready", flush=True)
        print("received", (await signals.wait()).name, flush=True)
        await forced.wait()
    print("handlers restored:", signal.getsignal(signal.SIGHUP) == signal.SIG_DFL, flush=True)

asyncio.run(main())
"""


@pytest.fixture
async def child() -> AsyncIterator[list[asyncio.subprocess.Process]]:
    procs: list[asyncio.subprocess.Process] = []
    yield procs
    for proc in procs:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def start(procs: list[asyncio.subprocess.Process], code: str) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    procs.append(proc)
    assert await line(proc) == "ready"
    return proc


async def line(proc: asyncio.subprocess.Process) -> str:
    assert proc.stdout is not None
    async with asyncio.timeout(30):
        return (await proc.stdout.readline()).decode().strip()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_a_stop_signal_ends_the_wait_and_names_the_signal(
    child: list[asyncio.subprocess.Process], sig: signal.Signals
) -> None:
    proc = await start(child, SERVE)
    proc.send_signal(sig)
    assert await line(proc) == f"stopping {sig.name}"
    assert proc.stdin is not None
    proc.stdin.close()
    status, out, err = await communicate(proc, within=30)
    assert (status, out.decode()) == (0, "stopped\n"), err.decode()


async def test_a_second_signal_during_the_shutdown_has_its_default_effect(
    child: list[asyncio.subprocess.Process],
) -> None:
    proc = await start(child, SERVE)
    proc.send_signal(signal.SIGTERM)
    assert await line(proc) == "stopping SIGTERM"
    proc.send_signal(signal.SIGTERM)  # the impatient operator: ends the process now
    status, out, _ = await communicate(proc, within=30)
    assert status == -signal.SIGTERM
    assert b"stopped" not in out


async def test_a_second_signal_forces_where_asked_and_handlers_go_on_exit(
    child: list[asyncio.subprocess.Process],
) -> None:
    proc = await start(child, FORCE)
    proc.send_signal(signal.SIGHUP)
    assert await line(proc) == "stop on SIGHUP"
    assert await line(proc) == "received SIGHUP"
    proc.send_signal(signal.SIGINT)
    assert await line(proc) == "forced by SIGINT"
    status, out, err = await communicate(proc, within=30)
    assert (status, out.decode()) == (0, "handlers restored: True\n"), err.decode()


async def test_the_components_failure_is_raised() -> None:
    async def dies() -> None:
        raise OSError("port gone")

    async def returns() -> None:
        return None

    with pytest.raises(OSError, match="port gone"):
        await serve_until_signal(dies())
    with pytest.raises(RuntimeError, match="returned"):
        await serve_until_signal(returns())
    # The handlers are gone again: the test process keeps its own.
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def test_off_the_main_thread_nothing_is_installed() -> None:
    """Only the main thread gets signals (a report run from a worker thread, say)."""
    result: list[object] = []

    async def main() -> None:
        with StopSignals() as signals:
            result.append(signals.stopped.is_set())

    worker = threading.Thread(target=lambda: asyncio.run(main()))
    worker.start()
    worker.join(30)
    assert result == [False]
