"""A small HTTP/2 client on the h2 library over a real asyncio connection, for frame-level
checks (windows, RST_STREAM, GOAWAY, limits). `auto_ack=False` leaves received DATA
unacknowledged: a client that does not read."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from h2.config import H2Configuration
from h2.connection import ConnectionState, H2Connection
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    ResponseReceived,
    StreamEnded,
    StreamReset,
    TrailersReceived,
    WindowUpdated,
)

__all__ = ["H2Client", "Reply"]

TIMEOUT = 10.0


@dataclass
class Reply:
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)
    trailers: list[tuple[bytes, bytes]] = field(default_factory=list)
    reset: int | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def status(self) -> int:
        return int(dict(self.headers)[b":status"])

    def header(self, name: bytes) -> bytes | None:
        return dict(self.headers).get(name)


class H2Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 *, auto_ack: bool, settings: dict[int, int] | None) -> None:
        self.reader, self.writer = reader, writer
        self.auto_ack = auto_ack
        self.h2 = H2Connection(H2Configuration(client_side=True, header_encoding=None,
                                               validate_outbound_headers=False))
        if settings:
            self.h2.local_settings.update(settings)
        self.replies: dict[int, Reply] = {}
        self.goaway: ConnectionTerminated | None = None
        self.error: Exception | None = None
        self.window_opened = asyncio.Event()
        self.closed = asyncio.Event()
        self.goaway_seen = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, address: tuple[str, int], *, auto_ack: bool = True,
                   settings: dict[int, int] | None = None) -> H2Client:
        reader, writer = await asyncio.open_connection(*address)
        c = cls(reader, writer, auto_ack=auto_ack, settings=settings)
        c.h2.initiate_connection()
        c.flush()
        c._task = asyncio.create_task(c._read())
        return c

    def flush(self) -> None:
        data = self.h2.data_to_send()
        if data and not self.writer.is_closing():
            self.writer.write(data)

    def request(self, path: str = "/", *, method: str = "GET", host: str = "app.test",
                headers: list[tuple[str, str]] = (), body: bytes | None = None,
                end: bool = True) -> int:
        sid = self.h2.get_next_available_stream_id()
        hs = [(b":method", method.encode()), (b":scheme", b"http"),
              (b":authority", host.encode()), (b":path", path.encode())]
        hs += [(n.encode(), v.encode()) for n, v in headers]
        self.replies[sid] = Reply()
        self.h2.send_headers(sid, hs, end_stream=end and body is None)
        if body is not None:
            self.h2.send_data(sid, body, end_stream=end)
        self.flush()
        return sid

    def send(self, sid: int, data: bytes, *, end: bool = False) -> None:
        self.h2.send_data(sid, data, end_stream=end)
        self.flush()

    def ack(self, sid: int, n: int) -> None:
        self.h2.acknowledge_received_data(n, sid)
        self.flush()

    def reset(self, sid: int, code: int = 8) -> None:
        self.h2.reset_stream(sid, code)
        self.flush()

    async def upload(self, sid: int, data: bytes, *, end: bool = True) -> None:
        """Send `data` as the stream's and connection's windows allow (waits for updates)."""
        view = memoryview(data)
        while view:
            window = min(self.h2.local_flow_control_window(sid), self.h2.max_outbound_frame_size)
            if window <= 0:
                self.window_opened.clear()
                await self.window_opened.wait()
                continue
            chunk, view = view[:window], view[window:]
            self.h2.send_data(sid, bytes(chunk), end_stream=end and not view)
            self.flush()
            await self.writer.drain()

    async def reply(self, sid: int, within: float = TIMEOUT) -> Reply:
        r = self.replies[sid]
        await asyncio.wait_for(r.done.wait(), within)
        return r

    async def get(self, path: str = "/", **kw: Any) -> Reply:
        return await self.reply(self.request(path, **kw))

    async def _read(self) -> None:
        try:
            while True:
                data = await self.reader.read(65536)
                if not data:
                    break
                for ev in self.h2.receive_data(data):
                    self._event(ev)
                self.flush()
        except (ConnectionError, OSError):
            pass
        except Exception as exc:  # the reason a reply never came, for the test's assertion
            self.error = exc
        finally:
            self.closed.set()
            for r in self.replies.values():
                r.done.set()

    def _event(self, ev: object) -> None:
        sid = getattr(ev, "stream_id", None)
        r = self.replies.get(sid) if sid else None
        if isinstance(ev, ResponseReceived) and r:
            r.headers = list(ev.headers)
        elif isinstance(ev, DataReceived) and r:
            r.body += ev.data
            if self.auto_ack:
                self.h2.acknowledge_received_data(ev.flow_controlled_length, sid)
        elif isinstance(ev, TrailersReceived) and r:
            r.trailers = list(ev.headers)
        elif isinstance(ev, StreamEnded) and r:
            r.done.set()
        elif isinstance(ev, StreamReset) and r:
            r.reset = ev.error_code
            r.done.set()
        elif isinstance(ev, ConnectionTerminated):
            self.goaway = ev
            self.goaway_seen.set()
            if ev.error_code == 0:
                # h2 closes its state machine on any GOAWAY; a graceful one lets the streams
                # up to last_stream_id finish, which is what the tests check.
                self.h2.state_machine.state = ConnectionState.CLIENT_OPEN
        if isinstance(ev, WindowUpdated):
            self.window_opened.set()
        if r:
            r.changed.set()

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (ConnectionError, OSError):
            pass
