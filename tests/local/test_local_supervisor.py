"""AppSupervisor with real hello processes: start, stop order, crash, startup timeout, orphans."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable

from localkit import FakeSink, eventually, http_get
from localrun import marked_pids, wait_gone

from httpscale.local.replica import ProcessSpec, ReplicaState
from httpscale.local.supervisor import AppSupervisor, SupervisorSettings

FAST = SupervisorSettings(drain_timeout=5, backoff_initial=0.1, backoff_max=1, stable_after=10)


async def test_scale_up_and_down_to_zero(hello_spec: Callable[..., ProcessSpec]) -> None:
    sink = FakeSink()
    sup = AppSupervisor("hello", hello_spec(), sink.publish, sink.drain, FAST)
    sup.start()
    try:
        sup.scale_to(2)
        await sink.wait_for(lambda eps: len(eps) == 2)
        pids = set()
        for ep in sink.current:
            status, headers, _ = await http_get(ep)
            assert status == 200
            assert headers["x-hello-port"] == str(ep.port)
            pids.add(int(headers["x-hello-pid"]))
        assert pids == {r.pid for r in sup.replicas}
        assert all(r.state is ReplicaState.READY for r in sup.replicas)

        sup.scale_to(1)
        await sink.wait_for(lambda eps: len(eps) == 1)
        sup.scale_to(0)
        await sink.wait_for(lambda eps: not eps)
        await eventually(lambda: not sup.replicas)
        assert all(_gone(pid) for pid in pids)
    finally:
        await sup.close()


async def test_leaving_replica_is_unpublished_then_drained_then_stopped(
    hello_spec: Callable[..., ProcessSpec],
) -> None:
    sink = FakeSink()
    sup = AppSupervisor("hello", hello_spec(), sink.publish, sink.drain, FAST)
    sup.start()
    try:
        sup.scale_to(1)
        await sink.wait_for(lambda eps: len(eps) == 1)
        (ep,) = sink.current
        replica = sup.replicas[0]
        sup.scale_to(0)
        await sink.wait_for(lambda eps: not eps)
        assert sink.log[-2:] == [("publish", frozenset()), ("drain", ep)]
        await eventually(lambda: not sup.replicas)
        assert replica.returncode == 0  # it got SIGTERM and shut down cleanly
    finally:
        await sup.close()


async def test_crashing_replica_is_restarted(hello_spec: Callable[..., ProcessSpec]) -> None:
    sink = FakeSink()
    sup = AppSupervisor("crashy", hello_spec("--crash-after", "1"), sink.publish, sink.drain, FAST)
    sup.start()
    try:
        sup.scale_to(1)
        await sink.wait_for(lambda eps: len(eps) == 1)
        (first,) = sink.current
        first_pid = sup.replicas[0].pid
        status, _, _ = await http_get(first)  # answered, then the process exits(3)
        assert status == 200
        await sink.wait_for(lambda eps: len(eps) == 1 and first not in eps)
        assert sup.restarts == 1
        assert sup.replicas[0].pid != first_pid
        assert ("publish", frozenset()) in sink.log  # it left the set while down
    finally:
        await sup.close()


async def test_replica_not_ready_in_time_is_killed_and_retried(
    hello_spec: Callable[..., ProcessSpec],
) -> None:
    sink = FakeSink()
    spec = hello_spec("--startup-delay", "30", startup_timeout=0.5, stop_grace_period=0.5)
    sup = AppSupervisor("slow", spec, sink.publish, sink.drain, FAST)
    sup.start()
    try:
        sup.scale_to(1)
        await eventually(lambda: sup.restarts >= 2)
        assert not sink.log  # never published
    finally:
        await sup.close()
    assert not sup.replicas


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


async def test_nothing_starts_after_kill_all(hello_spec: Callable[..., ProcessSpec]) -> None:
    # local mode's forced stop (a second signal): a request held after the kill (the
    # interceptor retries a request whose replica died) must not start a replica that the
    # shutdown would then wait for.
    sink = FakeSink()
    sup = AppSupervisor("hello", hello_spec(), sink.publish, sink.drain, FAST)
    sup.start()
    try:
        sup.scale_to(1)
        await sink.wait_for(lambda eps: len(eps) == 1)
        pid = sup.replicas[0].pid
        sup.kill_all()
        sup.scale_to(1)  # what a wake-up asks for
        await eventually(lambda: not sup.replicas)
        assert sup.desired == 0 and sup.running == 0
        assert pid is not None and _gone(pid)
    finally:
        await sup.close()
    assert not sup.replicas and sup.running == 0


def test_replicas_die_when_httpscale_is_sigkilled(mark: str) -> None:
    """PR_SET_PDEATHSIG: even a SIGKILLed parent leaves no replica behind."""
    script = textwrap.dedent(
        f"""
        import asyncio, sys
        from httpscale.local.replica import ProcessSpec
        from httpscale.local.supervisor import AppSupervisor
        async def main():
            ready = asyncio.Event()
            spec = ProcessSpec(
                command=("{{python}}", "-m", "httpscale.examples.hello", "--port", "{{port}}"),
                env={{"HTTPSCALE_TEST_MARK": "{mark}"}}, readiness_path="/healthz")
            sup = AppSupervisor(
                "orphan", spec, lambda eps: ready.set(), lambda ep: asyncio.sleep(0))
            sup.start()
            sup.scale_to(2)
            await ready.wait()
            while sup.ready_count() < 2:
                await asyncio.sleep(0.02)
            print(" ".join(str(r.pid) for r in sup.replicas), flush=True)
            await asyncio.sleep(60)
        asyncio.run(main())
        """
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "HTTPSCALE_TEST_MARK": mark},
    )
    try:
        assert parent.stdout is not None
        pids = [int(p) for p in parent.stdout.readline().split()]
        assert len(pids) == 2
        assert all(os.path.exists(f"/proc/{p}") for p in pids)
    finally:
        parent.kill()
        parent.wait()
        assert parent.stdout is not None
        parent.stdout.close()
    assert wait_gone(mark, timeout=5) == []


async def test_sigkill_after_grace_period_when_sigterm_is_ignored(mark: str) -> None:
    stubborn = (
        "import os, signal, socket, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "s = socket.socket(); s.bind(('127.0.0.1', int(os.environ['PORT']))); s.listen()\n"
        "time.sleep(60)\n"
    )
    spec = ProcessSpec(
        command=("{python}", "-c", stubborn),
        env={"HTTPSCALE_TEST_MARK": mark},
        stop_grace_period=0.5,
    )
    sink = FakeSink()
    sup = AppSupervisor("stubborn", spec, sink.publish, sink.drain, FAST)
    sup.start()
    try:
        sup.scale_to(1)
        await sink.wait_for(lambda eps: len(eps) == 1)
        replica = sup.replicas[0]
        loop = asyncio.get_running_loop()
        started = loop.time()
        sup.scale_to(0)
        await eventually(lambda: not sup.replicas)
        assert replica.returncode == -signal.SIGKILL
        assert loop.time() - started >= 0.5
    finally:
        await sup.close()


async def test_stopping_reaches_processes_the_app_forked(mark: str) -> None:
    """The replica leads a process group: a shell wrapper's children go with it."""
    spec = ProcessSpec(
        command=("sh", "-c", "{python} -m httpscale.examples.hello --port {port} & wait"),
        env={"HTTPSCALE_TEST_MARK": mark},
        readiness_path="/healthz",
        stop_grace_period=2,
    )
    sink = FakeSink()
    sup = AppSupervisor("wrapped", spec, sink.publish, sink.drain, FAST)
    sup.start()
    try:
        sup.scale_to(1)
        await sink.wait_for(lambda eps: len(eps) == 1)
        assert len(marked_pids(mark)) == 2  # sh and the python it started
        sup.scale_to(0)
        await eventually(lambda: not sup.replicas)
        await eventually(lambda: not marked_pids(mark), within=5)
    finally:
        await sup.close()
