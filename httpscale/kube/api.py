"""A thin JSON client for the Kubernetes API over kubernetes_asyncio's `ApiClient`.

kubernetes_asyncio keeps what is hard to get right (kubeconfig and in-cluster loading, TLS,
bearer tokens and their refresh, exec plugins); its generated per-kind methods are not used:
they turn every object into model classes, which costs far more CPU and memory than the
dicts httpscale reads, and they cannot stream a watch line by line with bounded waits.
So requests go through `ApiClient.call_api` with `_preload_content=False` and JSON is read
here, and every failure becomes one `ApiError` carrying the API's own `Status`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
from kubernetes_asyncio.client import ApiClient

__all__ = [
    "APPLY_PATCH",
    "JSON_PATCH",
    "MERGE_PATCH",
    "ApiError",
    "Kube",
    "Obj",
    "Query",
]

Obj = dict[str, Any]
"""One Kubernetes object (or list, or Status) as decoded JSON."""
Query = Sequence[tuple[str, str]]

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"  # server-side apply; JSON is valid YAML

# A Status body is small; anything bigger in an error response is cut, not held.
_MAX_ERROR_BODY = 64 * 1024


class ApiError(Exception):
    """The API server answered with an error `Status`, or could not be reached (status 0).

    `reason` is the Status reason (`NotFound`, `AlreadyExists`, `Conflict`, `Invalid`,
    `Forbidden`, `Expired`, ...) and `message` its human text, which for `Invalid` names the
    offending field the way the schema reported it.
    """

    status: int
    reason: str
    message: str
    details: Mapping[str, Any]

    def __init__(
        self,
        status: int,
        reason: str,
        message: str,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(status, reason, message)
        self.status = status
        self.reason = reason
        self.message = message
        self.details = details or {}

    def __str__(self) -> str:
        return f"{self.status} {self.reason}: {self.message}"

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def conflict(self) -> bool:
        """409: AlreadyExists on create, or a resourceVersion precondition that failed."""
        return self.status == 409

    @property
    def gone(self) -> bool:
        """410: the resourceVersion asked for is older than the server keeps (relist)."""
        return self.status == 410

    @classmethod
    def from_status(cls, status: Obj, http_status: int = 0) -> ApiError:
        """From a decoded `Status` object (an error response, or a watch ERROR event)."""
        code = status.get("code")
        return cls(
            code if isinstance(code, int) and code else http_status,
            str(status.get("reason") or "Unknown"),
            str(status.get("message") or ""),
            status.get("details") if isinstance(status.get("details"), Mapping) else None,
        )

    @classmethod
    def from_body(cls, http_status: int, body: bytes) -> ApiError:
        try:
            decoded = json.loads(body)
        except ValueError:
            decoded = None
        if isinstance(decoded, dict) and decoded.get("kind") == "Status":
            return cls.from_status(decoded, http_status)
        text = body[:500].decode("utf-8", "replace").strip()
        return cls(http_status, "Unknown", text or f"HTTP {http_status}")


async def _read_capped(stream: aiohttp.StreamReader) -> bytes:
    """The body up to `_MAX_ERROR_BODY` bytes (one `read(n)` may return less than is there)."""
    chunks: list[bytes] = []
    size = 0
    while size < _MAX_ERROR_BODY:
        chunk = await stream.read(_MAX_ERROR_BODY - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


async def _close_stream(resp: aiohttp.ClientResponse) -> None:
    """Close a response that may be mid-stream, and wait (bounded) until its connection is.

    A watch ended early cannot give its connection back: aiohttp closes it, but outside the
    pool, so closing the session later does not wait for it, and a TLS close needs a few
    turns of the event loop. An event loop that ends first (a test's, a short-lived tool's)
    would leave the socket open.
    """
    connection = resp.connection
    protocol = connection.protocol if connection is not None else None
    resp.close()
    closed = getattr(protocol, "closed", None)
    if isinstance(closed, asyncio.Future) and not closed.done():
        # However it ends (a TLS close often ends in an error), its outcome is retrieved,
        # so asyncio never logs it as an exception nobody retrieved.
        closed.add_done_callback(_retrieve)
        await asyncio.wait({closed}, timeout=1.0)


@dataclass(frozen=True, slots=True)
class _Timeouts:
    request: float  # a whole ordinary request, seconds
    connect: float  # TCP + TLS connect of any request, including watches


class Kube:
    """JSON requests and watch streams against one API server, as one identity.

    `request_timeout` bounds every ordinary request (connect to last byte); watch streams are
    bounded by the read timeout their caller passes instead, since they are meant to stay open.
    """

    def __init__(
        self,
        api: ApiClient,
        *,
        request_timeout: float = 30.0,
        connect_timeout: float = 10.0,
        source: str = "",
    ) -> None:
        self.api = api
        self.source = source  # where the configuration came from, for logs
        self._timeouts = _Timeouts(request=request_timeout, connect=connect_timeout)

    async def close(self) -> None:
        await self.api.close()

    async def request(
        self,
        method: str,
        path: str,
        *,
        query: Query = (),
        body: object = None,
        content_type: str | None = None,
        accept: str | None = None,
        time_limit: float | None = None,
    ) -> Obj:
        """Send one request; the decoded JSON answer, or `ApiError`.

        `time_limit` (seconds) replaces the client's request timeout for this one request.
        """
        total = time_limit if time_limit is not None else self._timeouts.request
        client_timeout = aiohttp.ClientTimeout(total=total, connect=self._timeouts.connect)
        try:
            async with asyncio.timeout(total):
                resp = await self._call(method, path, query, body, content_type, accept,
                                        client_timeout)
                try:
                    if resp.status >= 300:
                        raise ApiError.from_body(resp.status, await _read_capped(resp.content))
                    data = await resp.read()
                finally:
                    resp.release()
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise ApiError(0, "Unreachable", f"{method} {path}: {exc!r}") from exc
        if not data:
            return {}
        decoded = json.loads(data)
        if not isinstance(decoded, dict):
            raise ApiError(0, "BadResponse", f"{method} {path}: expected a JSON object")
        return decoded

    @contextlib.asynccontextmanager
    async def stream(
        self, path: str, *, query: Query = (), accept: str | None = None, read_timeout: float
    ) -> AsyncIterator[aiohttp.StreamReader]:
        """Open a long GET (a watch) and yield its body; `ApiError` if it does not start.

        `read_timeout` bounds each wait for more bytes, so a silently dead connection ends
        the stream instead of hanging it forever.
        """
        client_timeout = aiohttp.ClientTimeout(
            total=None, connect=self._timeouts.connect, sock_read=read_timeout
        )
        try:
            async with asyncio.timeout(self._timeouts.request):
                resp = await self._call("GET", path, query, None, None, accept, client_timeout)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise ApiError(0, "Unreachable", f"GET {path}: {exc!r}") from exc
        try:
            if resp.status >= 300:
                try:
                    async with asyncio.timeout(self._timeouts.request):
                        body = await _read_capped(resp.content)
                except (aiohttp.ClientError, TimeoutError, OSError):
                    body = b""
                raise ApiError.from_body(resp.status, body)
            yield resp.content
        finally:
            await _close_stream(resp)

    async def _call(
        self,
        method: str,
        path: str,
        query: Query,
        body: object,
        content_type: str | None,
        accept: str | None,
        client_timeout: aiohttp.ClientTimeout,
    ) -> aiohttp.ClientResponse:
        headers = {"Accept": accept or "application/json"}
        if content_type is not None:
            headers["Content-Type"] = content_type
        elif body is not None:
            headers["Content-Type"] = "application/json"
        resp: aiohttp.ClientResponse = await self.api.call_api(
            path,
            method,
            query_params=list(query),
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
            _preload_content=False,
            _request_timeout=client_timeout,
        )
        return resp


def _retrieve(future: asyncio.Future[object]) -> None:
    if not future.cancelled():
        future.exception()
