"""The pure parts of loadtests/scalebench.py (loadtests/scaleplan.py): the cases and their order,
the generated interceptor file and nginx config for 10,000 hosts, the socket counting and the
verdicts. No timings: the benchmark itself is run by hand."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from httpscale.config.local_file import load_local_config
from httpscale.routing.spec import Endpoint

LOADTESTS = Path(__file__).resolve().parents[2] / "loadtests"
sys.path.insert(0, str(LOADTESTS))
import scaleplan  # noqa: E402  (a script directory, not a package)
import scalereport  # noqa: E402
from scaleplan import Case  # noqa: E402


def test_plan_has_every_server_and_host_mix_per_group() -> None:
    cases = scaleplan.plan([1, 2], [64, 256, 1024])
    groups = Counter(c.group for c in cases)
    assert set(groups) == {f"w{w} c{c}" for w in (1, 2) for c in (64, 256, 1024)}
    assert set(groups.values()) == {7}  # direct + nginx and interceptor x 3 host mixes
    assert Case(2, 1024, "interceptor", "lua-10k") in cases
    assert Case(1, 64, "direct", "one") in cases
    assert len({c.key for c in cases}) == len(cases)


def test_round_order_is_a_rotation_keeping_groups_together() -> None:
    cases = scaleplan.plan([1, 2], [64, 256])
    first, second = scaleplan.round_order(cases, 0), scaleplan.round_order(cases, 1)
    assert first == cases
    assert sorted(second, key=cases.index) == cases  # every case once
    assert second[0].group != first[0].group and second[0] != first[0]
    # Each group's runs are contiguous, so nginx and the interceptor run minutes apart at most.
    seen: list[str] = []
    for case in second:
        if not seen or seen[-1] != case.group:
            assert case.group not in seen
            seen.append(case.group)


def test_interceptor_config_loads_as_routes_to_the_backend(tmp_path: Path) -> None:
    path = tmp_path / "routes.yaml"
    path.write_text(scaleplan.interceptor_config(300, 45678))
    config = load_local_config(path)
    routes = [app.route for app in config.apps]
    assert len(routes) == 300
    assert [r.match.hosts for r in routes[:2]] == [("app0.bench",), ("app1.bench",)]
    assert routes[-1].match.hosts == ("app299.bench",)
    assert all(r.static_endpoints == (Endpoint("127.0.0.1", 45678),) for r in routes)


def _proxy_conf(tmp_path: Path, routes: int, workers: int) -> Path:
    (tmp_path / f"scale-names-{workers}.conf").write_text(scaleplan.nginx_server_names(routes))
    text = scaleplan.render(
        (LOADTESTS / "nginx" / "scale-proxy.conf").read_text(),
        PREFIX=tmp_path, PORT=1, WORKERS=workers, UPSTREAM_PORT=2,
    )
    conf = tmp_path / "proxy.conf"
    conf.write_text(text)
    return conf


def test_nginx_names_every_host_once(tmp_path: Path) -> None:
    directive = scaleplan.nginx_server_names(10_000)
    names = directive.removeprefix("server_name ").removesuffix(";\n").split()
    assert len(set(names)) == 10_000
    assert names[0] == "app0.bench" and names[-1] == "app9999.bench"
    assert "worker_processes 2;" in _proxy_conf(tmp_path, 10, 2).read_text()


@pytest.mark.skipif(shutil.which("nginx", path="/usr/sbin:/usr/bin") is None, reason="no nginx")
def test_nginx_accepts_the_10000_name_config(tmp_path: Path) -> None:
    conf = _proxy_conf(tmp_path, 10_000, 2)
    nginx = shutil.which("nginx", path="/usr/sbin:/usr/bin")
    assert nginx is not None
    done = subprocess.run([nginx, "-t", "-p", str(tmp_path), "-c", str(conf), "-e", "stderr"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr


def test_render_refuses_a_leftover_placeholder() -> None:
    with pytest.raises(ValueError, match="@UPSTREAM_PORT@"):
        scaleplan.render("listen @PORT@; server 127.0.0.1:@UPSTREAM_PORT@;", PORT=1)


def test_count_tcp_finds_a_real_loopback_connection_by_inode_and_port() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)) as client:
            accepted, _ = listener.accept()
            with accepted:
                tables = [Path("/proc/net/tcp").read_text()]
                mine = {socket_inode(client)}
                theirs = {socket_inode(accepted)}
                assert scaleplan.count_tcp(tables, mine, remote_port=port) == 1
                assert scaleplan.count_tcp(tables, mine, local_port=port) == 0
                assert scaleplan.count_tcp(tables, theirs, local_port=port) == 1
                # The listener is in LISTEN state, not established: never counted.
                listening = {socket_inode(listener)}
                assert scaleplan.count_tcp(tables, listening, local_port=port) == 0


def socket_inode(sock: socket.socket) -> int:
    return os.fstat(sock.fileno()).st_ino


def test_queue_in_flight_sums_every_route() -> None:
    queue = {"local/a": {"Concurrency": 3, "RequestCount": 90},
             "local/b": {"Concurrency": 0, "RequestCount": 5},
             "local/c": {"Concurrency": 7, "RequestCount": 7}}
    assert scaleplan.queue_in_flight(queue) == 10
    assert scaleplan.queue_in_flight({}) == 0


def _run(rnd: int, rps: float, p99: float, per_cpu: float) -> dict[str, Any]:
    return {"round": rnd, "rps": rps, "p50_ms": 1.0, "p99_ms": p99, "cpu_us_per_req": 1e6 / per_cpu,
            "req_per_cpu_s": per_cpu, "cpu_cores": 1.0, "backend_cpu_cores": 0.5,
            "valid": True, "upstream_conns_peak": 10, "in_flight_peak": None}


def test_summarize_marks_targets_and_not_measured_rows() -> None:
    cases = scaleplan.plan([1, 2], [256])
    runs: dict[str, list[dict[str, Any]]] = {}
    for c in cases:
        if c.workers == 2 and c.server == "interceptor":
            continue  # as when --workers does not exist yet
        good = c.server != "interceptor" or c.hosts != "lua-10k"
        runs[c.key] = [_run(r, 100.0 if good else 50.0, 1.0, 1000.0) for r in (1, 2, 3)]
    runs["w1 c256 interceptor one"][1]["rps"] = 80.0  # one bad round; the median is still 100
    why = "no --workers"
    summary = scaleplan.summarize(
        runs, cases, {c.key: why for c in cases if c.key not in runs})
    verdicts = {t["name"]: t for t in summary["targets"]}
    assert verdicts["w1 c256 interceptor/nginx rps"]["verdict"] == "met"
    ratio = summary["ratios"]["w1 c256 interceptor/nginx rps"]
    assert ratio["per_round"] == [1.0, 0.8, 1.0]
    assert verdicts["w1 c256 interceptor/nginx p99_ms"]["verdict"] == "met"
    assert verdicts["w1 c256 random hosts interceptor/nginx rps"]["verdict"] == "not met"
    assert verdicts["w1 c256 random hosts interceptor/nginx rps"]["value"] == 0.5
    w2 = verdicts["w2 c256 interceptor/nginx rps"]
    assert w2["verdict"] == "NOT MEASURED" and w2["why"] == why
    assert summary["ratios"]["c256 interceptor 2 workers/1 worker rps"] == {"not_measured": why}
    assert summary["ratios"]["c256 nginx 2 workers/1 worker rps"]["of_medians"] == 1.0
    # The printed tables carry the same verdicts and say why a row is missing.
    tables = scalereport.scale_tables(summary, cases, 3)
    assert "| w1 c256 interceptor/nginx rps | 1.000 | >= 0.9 | met |" in tables
    assert f"| 2 | 256 | interceptor one | NOT MEASURED: {why} |" in tables
    assert "| nginx | 1.00x (1.00x) |" in tables  # 1 -> 2 workers scaling
