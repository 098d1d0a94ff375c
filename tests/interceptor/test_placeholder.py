"""The placeholder a route at zero answers with: for browsers only (the default) or for every
client, its body from a ConfigMap's files, and as the answer to a full hold queue."""

from __future__ import annotations

import asyncio
import collections

from httpscale.routing.spec import BodyFiles, Placeholder

from .backends import http_app, named_app
from .client import Conn, build_request
from .helpers import APP_KEY, app_route, eventually, queue_entry

BROWSER = [("Accept", "text/html,application/xhtml+xml,*/*;q=0.8")]
API = [("Accept", "application/json")]


def _held(ic) -> int:
    stats = ic.route_stats(APP_KEY)
    return 0 if stats is None else stats["held"]


async def test_default_placeholder_is_for_browsers_only(backends, make_interceptor, clients):
    """A browser gets the self-refreshing page at once; an API client (and curl's */*) is
    held and answered by the app once it is up, as if there were no placeholder."""
    b = await backends(http_app(named_app("the app")))
    ic = await make_interceptor(routes=[app_route(dynamic=True, placeholder=Placeholder())])
    woken: list[str] = []
    ic.add_wake_listener(woken.append)
    api = await clients(ic.proxy_address)
    curl = await clients(ic.proxy_address)
    await api.send(build_request("GET", "/api", headers=API))
    await curl.send(build_request("GET", "/x", headers=[("Accept", "*/*")]))
    await eventually(lambda: _held(ic) == 2, what="the two non-browser requests held")
    assert woken == [APP_KEY]

    browser = await clients(ic.proxy_address)
    page = await browser.request("GET", "/", headers=BROWSER)
    assert page.status == 503
    assert page.header("content-type") == "text/html; charset=utf-8"
    assert b"Starting up" in page.body and b'http-equiv="refresh" content="2"' in page.body
    assert (page.header("refresh"), page.header("retry-after")) == ("2", "2")
    assert page.header("x-httpscale-cold-start") == "true"
    assert _held(ic) == 2, "the browser's request was not held"

    ic.set_endpoints(APP_KEY, [b.endpoint])
    for conn in (api, curl):
        resp = await conn.read_response()
        assert (resp.status, resp.body) == (200, b"the app")
        assert resp.header("x-httpscale-cold-start") == "true"
    # Up now: the browser gets the app too.
    assert (await browser.request("GET", "/", headers=BROWSER)).body == b"the app"
    await eventually(lambda: queue_entry(ic)["Concurrency"] == 0)
    assert queue_entry(ic)["RequestCount"] == 4


async def test_browser_placeholder_with_a_body_sends_that_body(make_interceptor, clients):
    ph = Placeholder(status=202, body="<h1>Waking up</h1>", headers=(("X-Why", "asleep"),))
    ic = await make_interceptor(routes=[app_route(dynamic=True, placeholder=ph)])
    conn = await clients(ic.proxy_address)
    resp = await conn.request("GET", "/", headers=BROWSER)
    assert (resp.status, resp.body) == (202, b"<h1>Waking up</h1>")
    assert resp.header("content-type") == "text/html; charset=utf-8"  # sniffed, as Go does
    assert resp.header("x-why") == "asleep"
    assert not resp.has_header("retry-after"), "only 503 and 429 say when to retry"


async def test_placeholder_for_all(make_interceptor, clients):
    """`for_all`: every request gets the configured answer; a browser, with no body set, the
    page. Nothing is held."""
    ic = await make_interceptor(
        routes=[
            app_route(dynamic=True, placeholder=Placeholder(status=503, for_all=True)),
            app_route(dynamic=True, key="default/other", hosts=("other.test",),
                      placeholder=Placeholder(body="soon", headers=(("Content-Type", "x/y"),),
                                              for_all=True)),
        ]
    )
    conn = await clients(ic.proxy_address)
    api = await conn.request("GET", "/", headers=API)
    assert (api.status, api.body) == (503, b"The app is starting, retry shortly.\n")
    assert api.header("content-type") == "text/plain; charset=utf-8"
    browser = await conn.request("GET", "/", headers=BROWSER)
    assert browser.status == 503 and b"Starting up" in browser.body
    other = await conn.request("GET", "/", host="other.test", headers=BROWSER)
    assert (other.status, other.body, other.header("content-type")) == (503, b"soon", "x/y")
    head = await conn.request("HEAD", "/", host="other.test")
    assert (head.status, head.header("content-length"), head.body) == (503, "4", b"")
    assert _held(ic) == 0
    await eventually(lambda: queue_entry(ic)["Concurrency"] == 0)


async def test_placeholder_files_chosen_by_path(make_interceptor, clients):
    files = BodyFiles(files=(
        ("index.html", b"<p>home</p>"),
        ("style.css", b"p{}"),
        ("app.js", b"1;"),
        ("logo.png", b"\x89PNG"),
        ("docs/index.html", b"docs"),
        ("LICENSE", b"text"),
    ))
    ph = Placeholder(status=503, files=files, for_all=True)
    ic = await make_interceptor(routes=[app_route(dynamic=True, placeholder=ph)])
    conn = await clients(ic.proxy_address)
    expected = {
        "/": (b"<p>home</p>", "text/html; charset=utf-8"),
        "/?x=1": (b"<p>home</p>", "text/html; charset=utf-8"),
        "/style.css": (b"p{}", "text/css; charset=utf-8"),
        "/app.js": (b"1;", None),
        "/logo.png": (b"\x89PNG", "image/png"),
        "/docs/": (b"docs", "text/html; charset=utf-8"),
        "/LICENSE": (b"text", "application/octet-stream"),
    }
    for path, (body, ctype) in expected.items():
        resp = await conn.request("GET", path, headers=API)
        assert (resp.status, resp.body) == (503, body), path
        if ctype is not None:
            assert resp.header("content-type") == ctype, path
        else:
            assert "javascript" in (resp.header("content-type") or ""), resp.headers
    missing = await conn.request("GET", "/nope.html", headers=BROWSER)
    assert missing.status == 404
    assert missing.body == b"no file 'nope.html' for path '/nope.html'\n"
    assert (await conn.request("GET", "/", headers=API)).status == 503, "connection kept"


async def test_placeholder_configmap_missing_is_500_saying_why(make_interceptor, clients):
    ph = Placeholder(files=BodyFiles(missing="ConfigMap ns/page not found"), for_all=True)
    ic = await make_interceptor(routes=[app_route(dynamic=True, placeholder=ph)])
    conn = await clients(ic.proxy_address)
    resp = await conn.request("GET", "/", headers=BROWSER)
    assert (resp.status, resp.body) == (500, b"ConfigMap ns/page not found\n")


async def test_overflow_placeholder_answers_past_the_hold_cap(backends, make_interceptor):
    """`overflow_placeholder`: below the cap requests are held (browsers too, no placeholder
    at zero); past it every client gets the placeholder instead of 503."""
    b = await backends(http_app(named_app("app")))
    ph = Placeholder(status=503, body="busy, come back", for_all=True)
    ic = await make_interceptor(
        routes=[app_route(dynamic=True, placeholder=ph, overflow_placeholder=True,
                          max_pending_requests=3)]
    )
    conns = await asyncio.gather(*(Conn.open(ic.proxy_address) for _ in range(5)))
    try:
        for c in conns[:3]:
            await c.send(build_request("GET", "/", headers=BROWSER))
        await eventually(lambda: _held(ic) == 3, what="3 held")
        over = [
            await c.request("GET", "/", headers=h)
            for c, h in zip(conns[3:], [API, BROWSER], strict=True)
        ]
        assert [(r.status, r.body) for r in over] == [(503, b"busy, come back")] * 2
        ic.set_endpoints(APP_KEY, [b.endpoint])
        held = await asyncio.gather(*(c.read_response() for c in conns[:3]))
    finally:
        await asyncio.gather(*(c.aclose() for c in conns))
    assert collections.Counter((r.status, r.body) for r in held) == {(200, b"app"): 3}
    await eventually(lambda: queue_entry(ic)["Concurrency"] == 0)


async def test_full_queue_without_overflow_placeholder_is_503(make_interceptor, clients):
    ph = Placeholder(body="page")  # browsers only, not for overflow
    ic = await make_interceptor(
        routes=[app_route(dynamic=True, placeholder=ph, max_pending_requests=1)]
    )
    held = await clients(ic.proxy_address)
    await held.send(build_request("GET", "/", headers=API))
    await eventually(lambda: _held(ic) == 1)
    over = await clients(ic.proxy_address)
    resp = await over.request("GET", "/", headers=API)
    assert resp.status == 503 and resp.body.startswith(b"too many requests waiting")
    # A browser still gets the placeholder at zero, full queue or not.
    assert (await over.request("GET", "/", headers=BROWSER)).body == b"page"
