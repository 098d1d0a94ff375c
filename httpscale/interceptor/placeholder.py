"""Answers the interceptor writes itself for a route, without any upstream.

- The placeholder (`spec.coldStart.placeholder`, an InterceptorRoute's `coldStart.placeholder`):
  sent instead of holding while the app is at zero. Browsers (requests that accept text/html)
  get it always; other clients only when it is `for_all` (else they are held and answered by
  the app). A browser gets a small page that refreshes itself until the app answers when the
  placeholder has no body of its own; everyone else gets the configured status, headers and
  body. A slow wake costs the visitor nothing but a short wait on a page that explains it.
- A canned response (an InterceptorRoute's `staticRoutes[]`): a fixed status, headers, body.

Either body may come from a ConfigMap's files (`BodyFiles`): the request path picks the file
(`/` is `index.html`, `/a/b.css` is `a/b.css`, a path ending in `/` gets `index.html`), its
extension the Content-Type; no such file is a 404, and a ConfigMap that could not be read
(`BodyFiles.missing`) a 500 saying why. Off the hot path: these are the rare answers.
"""

from __future__ import annotations

import html
import mimetypes
from functools import lru_cache
from urllib.parse import unquote

from httpscale.interceptor import http1
from httpscale.interceptor.http1 import Headers, reason_phrase
from httpscale.routing.spec import BodyFiles, CannedResponse, Placeholder

__all__ = ["canned_response", "file_key", "placeholder_response", "wants_placeholder"]

_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><meta http-equiv="refresh" content="{refresh}">
<title>Starting up</title>
<style>body{{font-family:system-ui,sans-serif;margin:20vh auto;max-width:32em;color:#333}}</style>
</head><body><h1>Starting up&hellip;</h1>
<p>{message}</p><p>This page refreshes every {refresh} seconds until the app is ready.</p>
</body></html>
"""
_DEFAULT_TEXT = "The app is starting, retry shortly.\n"
_TEXT = b"text/plain; charset=utf-8"
_HTML = b"text/html; charset=utf-8"
# What an inline body that starts with one of these (after blanks, any case) is sent as, when
# no Content-Type is configured: text/html. Go's http.DetectContentType, which KEDA's
# interceptor relies on, looks for the same openings.
_HTML_OPENINGS = (
    b"<!doctype html", b"<html", b"<head", b"<script", b"<iframe", b"<h1", b"<div", b"<font",
    b"<table", b"<a", b"<style", b"<title", b"<b", b"<body", b"<br", b"<p", b"<!--",
)


def _accepts_html(headers: Headers) -> bool:
    for name, value in headers:
        if name.lower() == b"accept" and b"text/html" in value.lower():
            return True
    return False


def wants_placeholder(placeholder: Placeholder, headers: Headers) -> bool:
    """Whether this request gets the placeholder at zero (else it is held)."""
    return placeholder.for_all or _accepts_html(headers)


def file_key(path: str) -> str:
    """The ConfigMap key a request path asks for: `/` -> `index.html`, `/a/b.css` -> `a/b.css`."""
    path = path.split("?", 1)[0].split("#", 1)[0]
    key = unquote(path).lstrip("/")
    if not key or key.endswith("/"):
        key += "index.html"
    return key


@lru_cache(maxsize=64)
def _index(files: BodyFiles) -> dict[str, bytes]:
    return dict(files.files)


def _file_type(key: str) -> bytes:
    ctype, _ = mimetypes.guess_type(key, strict=False)
    if ctype is None:
        return b"application/octet-stream"
    if ctype.startswith("text/") or ctype == "application/javascript":
        ctype += "; charset=utf-8"
    return ctype.encode("latin-1")


def _sniff(body: bytes) -> bytes:
    start = body.lstrip(b" \t\r\n")[:16].lower()
    for opening in _HTML_OPENINGS:
        if start.startswith(opening) and (
            len(start) == len(opening) or start[len(opening)] in b" >"
        ):
            return _HTML
    return _TEXT


def _from_files(
    files: BodyFiles, path: str, *, head_only: bool, keep_alive: bool, http10: bool
) -> tuple[int, bytes, bytes]:
    """(0, body, Content-Type) of the file `path` asks for, or (status, answer, b"") when
    there is none to send (a complete error answer)."""
    if files.missing:
        return 500, http1.error_response(
            500, files.missing, close=not keep_alive, head_only=head_only, http10=http10
        ), b""
    key = file_key(path)
    body = _index(files).get(key)
    if body is None:
        return 404, http1.error_response(
            404, f"no file {key!r} for path {path.split('?', 1)[0]!r}",
            close=not keep_alive, head_only=head_only, http10=http10,
        ), b""
    return 0, body, _file_type(key)


def _answer(
    status: int,
    fields: list[tuple[bytes, bytes]],
    body: bytes,
    *,
    head_only: bool,
    keep_alive: bool,
    http10: bool,
) -> bytes:
    head = [b"HTTP/1.1 %d %b\r\n" % (status, reason_phrase(status))]
    for name, value in fields:
        head += (name, b": ", value, b"\r\n")
    if status in (204, 304):
        body = b""  # neither has a body; a 204 has no Content-Length either (RFC 9110 8.6)
    else:
        head.append(b"Content-Length: %d\r\n" % len(body))
    head += (http1.connection_field(keep_alive=keep_alive, http10=http10), b"\r\n")
    return b"".join(head) + (b"" if head_only else body)


def _interim(status: int, *, head_only: bool, keep_alive: bool, http10: bool) -> tuple[int, bytes]:
    # A 1xx is interim: a client would wait for a final answer that never comes.
    message = f"the configured response has the interim status {status}, not a final one"
    return 500, http1.error_response(
        500, message, close=not keep_alive, head_only=head_only, http10=http10
    )


def _configured(headers: tuple[tuple[str, str], ...]) -> list[tuple[bytes, bytes]]:
    return [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]


def _has(fields: list[tuple[bytes, bytes]], name: bytes) -> bool:
    return any(n.lower() == name for n, _ in fields)


def placeholder_response(
    placeholder: Placeholder,
    headers: Headers,
    path: str,
    *,
    head_only: bool,
    keep_alive: bool,
    http10: bool,
) -> tuple[int, bytes]:
    """The status and complete response bytes of the placeholder for this request."""
    if placeholder.status < 200:
        return _interim(placeholder.status, head_only=head_only, keep_alive=keep_alive,
                        http10=http10)
    fields = _configured(placeholder.headers)
    refresh = str(placeholder.refresh_seconds).encode()
    if placeholder.files is not None:
        status, body, ctype = _from_files(
            placeholder.files, path, head_only=head_only, keep_alive=keep_alive, http10=http10
        )
        if status:
            return status, body
    elif _accepts_html(headers) and not placeholder.body:
        body = _PAGE.format(
            refresh=placeholder.refresh_seconds,
            message=html.escape("The app was asleep and is waking up now."),
        ).encode()
        ctype = _HTML
        fields.append((b"Refresh", refresh))
    elif placeholder.body:
        body = placeholder.body.encode()
        ctype = _sniff(body)
    else:
        body, ctype = _DEFAULT_TEXT.encode(), _TEXT
    status = placeholder.status
    if not _has(fields, b"content-type"):
        fields.append((b"Content-Type", ctype))
    if status in (429, 503) and not _has(fields, b"retry-after"):
        fields.append((b"Retry-After", refresh))
    fields += ((b"Cache-Control", b"no-store"), (b"X-HTTPScale-Cold-Start", b"true"))
    return status, _answer(
        status, fields, body, head_only=head_only, keep_alive=keep_alive, http10=http10
    )


def canned_response(
    canned: CannedResponse, path: str, *, head_only: bool, keep_alive: bool, http10: bool
) -> tuple[int, bytes]:
    """The status and complete response bytes of a static route's answer."""
    if canned.status < 200:
        return _interim(canned.status, head_only=head_only, keep_alive=keep_alive,
                        http10=http10)
    fields = _configured(canned.headers)
    if canned.files is not None:
        status, body, ctype = _from_files(
            canned.files, path, head_only=head_only, keep_alive=keep_alive, http10=http10
        )
        if status:
            return status, body
    else:
        body = canned.body
        ctype = _sniff(body)
    if not _has(fields, b"content-type") and (body or canned.files is not None):
        fields.append((b"Content-Type", ctype))
    status = canned.status
    return status, _answer(
        status, fields, body, head_only=head_only, keep_alive=keep_alive, http10=http10
    )
