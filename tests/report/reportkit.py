"""Helpers for report tests (imported by name: `conftest` is not unique across tests/).

`recorded_server` is a real HTTP server on loopback (port 0) that answers with recorded JSON
documents: what local mode's admin server or a Prometheus answered once, served again. It
runs in a thread of its own, so both async clients in the test's loop and a CLI that runs
its own event loop can talk to it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import struct
import sys
import threading
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

DATA = Path(__file__).parent / "data"

Responder = Callable[[str, dict[str, str]], tuple[int, Any]]


@dataclass
class Recorded:
    url: str
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)


@contextmanager
def recorded_server(respond: Responder) -> Iterator[Recorded]:
    """Serve `respond(path, query) -> (status, JSON document)` on 127.0.0.1; every request
    seen is in `.requests` (path, query)."""
    seen: list[tuple[str, dict[str, str]]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            query = dict(parse_qsl(parts.query))
            seen.append((parts.path, query))
            status, doc = respond(parts.path, query)
            body = json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet: pytest shows failures, not access logs

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    # serve_forever checks for shutdown() every poll_interval: short, so tests end promptly.
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02},
                              name="recorded-server", daemon=True)
    thread.start()
    try:
        yield Recorded(f"http://127.0.0.1:{server.server_address[1]}", seen)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def read_png(path: Path) -> tuple[int, int, list[bytes]]:
    """(width, height, rows of RGB(A) bytes) of an 8-bit RGB or RGBA PNG, as Chromium writes
    them: enough of a decoder to count pixels, with the five PNG row filters undone."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat = 8, b""
    width = height = channels = 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, chunk = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            width, height, depth, colour = struct.unpack(">IIBB", chunk[:10])
            assert depth == 8 and colour in (2, 6), f"unexpected PNG format {depth}/{colour}"
            channels = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            idat += chunk
        elif kind == b"IEND":
            break
    raw = zlib.decompress(idat)
    stride = width * channels
    rows: list[bytes] = []
    prev = bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1:start + 1 + stride])
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up = prev[i]
            up_left = prev[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - up_left
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - up_left)
                pred = left if pa <= pb and pa <= pc else up if pb <= pc else up_left
                line[i] = (line[i] + pred) & 0xFF
        rows.append(bytes(line))
        prev = line
    return width, height, rows


def colour_counts(rows: list[bytes], channels: int) -> dict[tuple[int, int, int], int]:
    counts: dict[tuple[int, int, int], int] = {}
    for row in rows:
        for i in range(0, len(row), channels):
            key = (row[i], row[i + 1], row[i + 2])
            counts[key] = counts.get(key, 0) + 1
    return counts


def hex_rgb(colour: str) -> tuple[int, int, int]:
    return (int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16))


# Local mode runs: every process a test starts carries HTTPSCALE_TEST_MARK=<unique> in its
# environment (children inherit it), so that `marked_pids` finds whatever is left of it.
ROOT = Path(__file__).resolve().parents[2]
LOADTESTS = ROOT / "loadtests"


def hello_app(name: str, *hello_args: str, **fields: Any) -> dict[str, Any]:
    """A local-mode app running httpscale's example app."""
    run = {
        "command": ["{python}", "-m", "httpscale.examples.hello", "--port", "{port}",
                    *hello_args],
        "readiness": {"httpGet": {"path": "/healthz"}},
        "stopGracePeriod": 5,
    }
    return {"name": name, "hosts": [f"{name}.localhost"], "run": run, **fields}


def require_browser() -> str:
    """The Chromium to screenshot with; skips the test when there is none, unless
    HTTPSCALE_REQUIRE_BROWSER=1 (CI) makes that a failure."""
    from httpscale.report.browser import find_browser

    found = find_browser()
    if found is None:
        message = "no Chromium (install chromium or set HTTPSCALE_CHROMIUM)"
        if os.environ.get("HTTPSCALE_REQUIRE_BROWSER") == "1":
            pytest.fail(message + "; HTTPSCALE_REQUIRE_BROWSER=1 requires it")
        pytest.skip(message)
    return found


def load_module(name: str, path: Path) -> ModuleType:
    """A script outside the package (loadtests/report.py) as a module of its own name."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module
