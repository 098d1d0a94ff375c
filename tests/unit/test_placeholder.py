"""The answers the interceptor writes itself (placeholder, static routes), fed bytes: which
file a path asks for, the Content-Type it gets, and the framing of each answer."""

from __future__ import annotations

import httptools
import pytest

from httpscale.interceptor.placeholder import (
    canned_response,
    file_key,
    placeholder_response,
    wants_placeholder,
)
from httpscale.routing.spec import BodyFiles, CannedResponse, Placeholder


@pytest.mark.parametrize(
    ("path", "key"),
    [
        ("/", "index.html"),
        ("", "index.html"),
        ("/a/b.css", "a/b.css"),
        ("/docs/", "docs/index.html"),
        ("/page.html?x=1#top", "page.html"),
        ("/my%20page.html", "my page.html"),
        ("//double", "double"),
    ],
)
def test_file_key(path: str, key: str) -> None:
    assert file_key(path) == key


class _Parsed:
    def __init__(self) -> None:
        self.headers: dict[bytes, bytes] = {}
        self.body = b""
        self.done = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.lower()] = value

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.done = True


def _parse(data: bytes) -> tuple[int, _Parsed]:
    """Through llhttp, as a client would: the answer must be one complete, framed message."""
    got = _Parsed()
    parser = httptools.HttpResponseParser(got)
    parser.feed_data(data)
    assert got.done, data
    return parser.get_status_code(), got


def test_wants_placeholder() -> None:
    browser = [(b"Accept", b"text/html,*/*")]
    assert wants_placeholder(Placeholder(), browser)
    assert not wants_placeholder(Placeholder(), [(b"Accept", b"*/*")])
    assert not wants_placeholder(Placeholder(), [])
    assert wants_placeholder(Placeholder(for_all=True), [])


def test_placeholder_answers_are_framed() -> None:
    status, data = placeholder_response(Placeholder(body="wait"), [], "/", head_only=False,
                                        keep_alive=True, http10=False)
    code, got = _parse(data)
    assert (status, code, got.body) == (503, 503, b"wait")
    assert got.headers[b"content-type"] == b"text/plain; charset=utf-8"
    assert got.headers[b"retry-after"] == b"2" and got.headers[b"cache-control"] == b"no-store"
    assert b"connection" not in got.headers
    status, data = placeholder_response(Placeholder(), [], "/", head_only=False,
                                        keep_alive=False, http10=True)
    code, got = _parse(data)
    assert got.body == b"The app is starting, retry shortly.\n"
    assert got.headers[b"connection"] == b"close"


@pytest.mark.parametrize(
    ("body", "ctype"),
    [
        (b"<!DOCTYPE html><p>x", b"text/html; charset=utf-8"),
        (b"  \n<H1>Loading</H1>", b"text/html; charset=utf-8"),
        (b"<p>", b"text/html; charset=utf-8"),
        (b"<pre>x</pre>", b"text/plain; charset=utf-8"),  # not one of Go's openings
        (b"OK", b"text/plain; charset=utf-8"),
    ],
)
def test_canned_body_content_type_is_sniffed(body: bytes, ctype: bytes) -> None:
    status, data = canned_response(CannedResponse(body=body), "/", head_only=False,
                                   keep_alive=True, http10=False)
    _, got = _parse(data)
    assert (status, got.body, got.headers[b"content-type"]) == (200, body, ctype)


def test_canned_files() -> None:
    files = BodyFiles(files=(("index.html", b"<p>i"), ("x.svg", b"<svg/>")))
    status, data = canned_response(CannedResponse(status=201, files=files), "/x.svg",
                                   head_only=False, keep_alive=True, http10=False)
    _, got = _parse(data)
    assert (status, got.body, got.headers[b"content-type"]) == (201, b"<svg/>", b"image/svg+xml")
    status, data = canned_response(CannedResponse(files=files), "/y", head_only=True,
                                   keep_alive=True, http10=False)
    assert status == 404 and data.startswith(b"HTTP/1.1 404 ") and data.endswith(b"\r\n\r\n")
    status, _ = canned_response(CannedResponse(files=BodyFiles(missing="gone")), "/",
                                head_only=False, keep_alive=True, http10=False)
    assert status == 500


def test_configured_headers_win() -> None:
    canned = CannedResponse(body=b"<p>", headers=(("Content-Type", "text/x"), ("X-A", "1")))
    _, data = canned_response(canned, "/", head_only=False, keep_alive=True, http10=False)
    _, got = _parse(data)
    assert got.headers[b"content-type"] == b"text/x" and got.headers[b"x-a"] == b"1"
    assert data.count(b"Content-Type") == 1
