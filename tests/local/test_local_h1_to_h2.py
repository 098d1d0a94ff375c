"""`httpscale local -c FILE` with an app at an `h2c://` upstream, end to end: an HTTP/1.1
client (curl) through the interceptor to a server that speaks nothing but HTTP/2."""

from __future__ import annotations

import asyncio
import re
import signal
import sys
from pathlib import Path

from interceptor.h2servers import H2Server, ServerStream
from localrun import communicate


async def _echo(stream: ServerStream) -> None:
    body = await stream.read_all()
    out = b"%s %s over HTTP/2, %d bytes" % (
        stream.headers[b":method"], stream.headers[b":path"], len(body)
    )
    stream.respond([(b":status", b"200"), (b"content-length", str(len(out)).encode())])
    await stream.send(out, end_stream=True)


async def test_local_mode_bridges_http1_clients_to_an_h2c_upstream(
    mark: str, tmp_path: Path
) -> None:
    server = await H2Server(_echo).start()
    config = tmp_path / "local.yaml"
    config.write_text(
        "listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\n"
        "apps:\n  - name: app\n    hosts: [app.test]\n"
        f"    run: {{upstream: 'h2c://127.0.0.1:{server.port}'}}\n"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "httpscale", "local", "-c", str(config),
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stderr is not None
        async with asyncio.timeout(30):
            while True:
                line = (await proc.stderr.readline()).decode()
                assert line, "httpscale local exited before listening"
                if m := re.search(r"proxy on http://([\d.]+):(\d+)", line):
                    host, port = m.group(1), int(m.group(2))
                    break
        curl = await asyncio.create_subprocess_exec(
            "curl", "-sS", "--http1.1", "-H", "Host: app.test", "--data-binary", "hello",
            "-w", "\n%{http_code} %{http_version}", f"http://{host}:{port}/echo",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        rc, out, err = await communicate(curl, within=30)
        assert rc == 0, err
        body, _, status = out.decode().rpartition("\n")
        assert status == "200 1.1", body
        assert body == "POST /echo over HTTP/2, 5 bytes"
        assert len(server.requests) == 1
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        rc, _, err = await communicate(proc, within=30)
        await server.close()
    assert rc == 0, err.decode()[-2000:]
    assert not server.errors
