"""What a process imports decides what it pays: the scaler and `httpscale status` import none of
the proxy, so the check of which build of its hot path runs (httpscale/dataplane.py: hashes of
its sources, the extensions on disk) never happens there. The proxy's first import still makes
that choice before any of its modules is found. Each case runs in a fresh interpreter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from httpscale import dataplane

# Prints what the process imported of httpscale and whether the build was decided, at the end.
REPORT = (
    "import atexit, json, sys\n"
    "def _report():\n"
    "    d = sys.modules.get('httpscale.dataplane')\n"
    "    print('REPORT ' + json.dumps({\n"
    "        'decided': getattr(d, '_active', None) is not None,\n"
    "        'modules': sorted(m for m in sys.modules if m.startswith('httpscale')),\n"
    "        'files': {m: getattr(sys.modules[m], '__file__', '') for m in sys.modules\n"
    "                  if m.startswith('httpscale')}}))\n"
    "atexit.register(_report)\n"
)


def run_python(code: str, **env: str) -> tuple[dict[str, object], str]:
    clean = {k: v for k, v in os.environ.items() if k != dataplane.PURE_ENV}
    result = subprocess.run(
        [sys.executable, "-c", REPORT + code], capture_output=True, text=True, timeout=60,
        env={**clean, **env},
    )
    line = next(x for x in result.stdout.splitlines() if x.startswith("REPORT "))
    report: dict[str, object] = json.loads(line.removeprefix("REPORT "))
    return report, result.stdout


def proxy_modules(report: dict[str, object]) -> list[str]:
    modules = report["modules"]
    assert isinstance(modules, list)
    return [m for m in modules
            if m.startswith("httpscale.interceptor") or m in dataplane.BUILT_MODULES]


def test_the_scaler_imports_nothing_of_the_proxy() -> None:
    report, _ = run_python("import httpscale.scaler.cli")
    assert "httpscale.scaler.app" in report["modules"]  # (the scaler itself is all there)
    assert proxy_modules(report) == []
    assert report["decided"] is False


def test_the_command_group_loads_only_the_command_that_runs() -> None:
    report, out = run_python(
        "from httpscale.cli import main\n"
        "main(['scaler', '--help'], standalone_mode=False)\n"
    )
    assert "KEDA external scaler" in out
    assert proxy_modules(report) == []
    modules = report["modules"]
    assert isinstance(modules, list)
    others = ("httpscale.kube", "httpscale.capacity", "httpscale.doctor", "httpscale.local")
    assert [m for m in modules if m.startswith(others)] == []
    assert report["decided"] is False


class _Status(BaseHTTPRequestHandler):
    """A stand-in admin server: /status of one app, as `httpscale local` serves it."""

    def do_GET(self) -> None:
        body = json.dumps({"apps": {"hello": {
            "route": "local/hello", "ready": 1, "desired": 1, "min": 0, "max": 4,
            "metric": "concurrency", "target": 5, "replicas": [],
        }}}).encode()
        self.send_response(200 if self.path == "/status" else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def admin_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Status)
    thread = threading.Thread(target=server.serve_forever, name="status-standin")
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_httpscale_status_imports_nothing_of_the_proxy(admin_url: str) -> None:
    report, out = run_python(
        "from httpscale.cli import main\n"
        f"main(['status', '--admin', {admin_url!r}], standalone_mode=False)\n"
    )
    assert "hello" in out and "local/hello" in out  # it did fetch and print the table
    assert proxy_modules(report) == []
    assert report["decided"] is False


@pytest.mark.parametrize("pure", [False, True])
def test_the_first_hot_import_decides_before_it_is_found(pure: bool) -> None:
    """The route table is a hot module outside the interceptor: imported first, it still gets
    the build the decision chose, and so do the interceptor's modules after it (never mixed)."""
    env = {dataplane.PURE_ENV: "1"} if pure else {}
    report, _ = run_python(
        "import httpscale.routing.table, httpscale.interceptor.exchange", **env
    )
    assert report["decided"] is True
    files = report["files"]
    assert isinstance(files, dict)
    kinds = {files[m].rsplit(".", 1)[1] for m in
             ("httpscale.routing.table", "httpscale.interceptor.exchange")}
    if pure or dataplane.build_problem():
        assert kinds == {"py"}
    else:
        assert kinds == {"so"}
