"""The answer sent instead of holding while an app is at zero (`spec.coldStart.placeholder`).

Browsers get a small page that refreshes itself until the app answers; other clients get the
configured status, headers and body. Either way the request is not held, so a slow wake costs
the visitor nothing but a short wait on a page that explains it.
"""

from __future__ import annotations

import html

from httpscale.interceptor.http1 import Headers, reason_phrase
from httpscale.routing.spec import Placeholder

__all__ = ["placeholder_response"]

_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><meta http-equiv="refresh" content="{refresh}">
<title>Starting up</title>
<style>body{{font-family:system-ui,sans-serif;margin:20vh auto;max-width:32em;color:#333}}</style>
</head><body><h1>Starting up&hellip;</h1>
<p>{message}</p><p>This page refreshes every {refresh} seconds until the app is ready.</p>
</body></html>
"""


def _accepts_html(headers: Headers) -> bool:
    for name, value in headers:
        if name.lower() == b"accept" and b"text/html" in value.lower():
            return True
    return False


def placeholder_response(
    placeholder: Placeholder, headers: Headers, *, head_only: bool, connection: bytes
) -> bytes:
    """Complete response bytes; `connection` is its Connection line (or b"")."""
    extra = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in placeholder.headers]
    if _accepts_html(headers) and not placeholder.body:
        body = _PAGE.format(
            refresh=placeholder.refresh_seconds,
            message=html.escape("The app was asleep and is waking up now."),
        ).encode()
        ctype = b"text/html; charset=utf-8"
        extra.append((b"Refresh", str(placeholder.refresh_seconds).encode()))
    else:
        body = (placeholder.body or "The app is starting, retry shortly.\n").encode()
        ctype = b"text/plain; charset=utf-8"
    if not any(name.lower() == b"content-type" for name, _ in extra):
        extra.append((b"Content-Type", ctype))
    extra.append((b"Retry-After", str(placeholder.refresh_seconds).encode()))
    head = [b"HTTP/1.1 %d %b\r\n" % (placeholder.status, reason_phrase(placeholder.status))]
    for name, value in extra:
        head += (name, b": ", value, b"\r\n")
    head.append(b"Content-Length: %d\r\nCache-Control: no-store\r\n" % len(body))
    head += (connection, b"X-HTTPScale-Cold-Start: true\r\n\r\n")
    return b"".join(head) + (b"" if head_only else body)
