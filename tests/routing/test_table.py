"""RouteTable: host, path and header matching, precedence, conflicts, and scale."""

from __future__ import annotations

import pytest

from httpscale.routing import HeaderMatch, RouteMatch
from httpscale.routing.table import RouteTable, normalize_host, normalize_path_prefix


def table(*routes: tuple[RouteMatch, str]) -> RouteTable[str]:
    return RouteTable.build(routes)


def m(
    *hosts: str, paths: tuple[str, ...] = (), headers: tuple[HeaderMatch, ...] = ()
) -> RouteMatch:
    return RouteMatch(hosts=hosts, path_prefixes=paths, headers=headers)


@pytest.mark.parametrize(
    ("raw", "want"),
    [
        ("Example.COM", "example.com"),
        ("example.com:8080", "example.com"),
        ("example.com.", "example.com"),
        ("example.com.:443", "example.com"),
        ("[::1]:8080", "[::1]"),
        ("[::1]", "[::1]"),
        ("::1", "::1"),
        ("", ""),
        ("example.com \t", "example.com"),
        ("\tExample.com:80 ", "example.com"),
    ],
)
def test_normalize_host(raw: str, want: str) -> None:
    assert normalize_host(raw) == want


@pytest.mark.parametrize(
    ("raw", "want"),
    [("/", ""), ("", ""), ("/api", "/api"), ("/api/", "/api"), ("api", "/api"), ("//", "")],
)
def test_normalize_path_prefix(raw: str, want: str) -> None:
    assert normalize_path_prefix(raw) == want


def test_exact_host_case_port_and_trailing_dot() -> None:
    t = table((m("Hello.Example.com"), "a"))
    assert t.lookup("hello.example.com", "/", {}) == "a"
    assert t.lookup("HELLO.example.COM:8080", "/x", {}) == "a"
    assert t.lookup("hello.example.com.", "/", {}) == "a"
    assert t.lookup("other.example.com", "/", {}) is None
    assert t.lookup("example.com", "/", {}) is None


def test_wildcard_needs_one_more_label_and_longest_suffix_wins() -> None:
    t = table((m("*.example.com"), "wide"), (m("*.api.example.com"), "narrow"))
    assert t.lookup("a.example.com", "/", {}) == "wide"
    assert t.lookup("a.b.example.com", "/", {}) == "wide"
    assert t.lookup("x.api.example.com", "/", {}) == "narrow"
    assert t.lookup("api.example.com", "/", {}) == "wide"
    assert t.lookup("example.com", "/", {}) is None
    assert t.lookup("badexample.com", "/", {}) is None


def test_exact_beats_wildcard_beats_catch_all() -> None:
    t = table(
        (m(), "any"),
        (m("*.example.com"), "wild"),
        (m("www.example.com"), "exact"),
    )
    assert t.lookup("www.example.com", "/", {}) == "exact"
    assert t.lookup("foo.example.com", "/", {}) == "wild"
    assert t.lookup("elsewhere.org", "/", {}) == "any"
    assert t.lookup("", "/", {}) == "any"


@pytest.mark.parametrize("host", ["", "*"])
def test_star_and_empty_host_are_catch_all(host: str) -> None:
    t = table((m(host), "any"))
    assert t.lookup("whatever.test:1234", "/a/b", {}) == "any"


def test_path_prefix_on_segment_boundaries() -> None:
    t = table((m("h", paths=("/api",)), "api"))
    assert t.lookup("h", "/api", {}) == "api"
    assert t.lookup("h", "/api/", {}) == "api"
    assert t.lookup("h", "/api/x/y", {}) == "api"
    assert t.lookup("h", "/api?q=1", {}) == "api"
    assert t.lookup("h", "/api#frag", {}) == "api"
    assert t.lookup("h", "/apix", {}) is None
    assert t.lookup("h", "/ap", {}) is None
    assert t.lookup("h", "/", {}) is None
    assert t.lookup("h", "", {}) is None
    assert t.lookup("h", "/API", {}) is None  # paths are case-sensitive


def test_query_does_not_hide_a_segment() -> None:
    t = table((m("h", paths=("/a",)), "a"))
    assert t.lookup("h", "/b?next=/a", {}) is None


def test_trailing_slash_prefix_behaves_like_without() -> None:
    t = table((m("h", paths=("/api/",)), "api"))
    assert t.lookup("h", "/api", {}) == "api"
    assert t.lookup("h", "/api/v1", {}) == "api"
    assert t.lookup("h", "/apiv1", {}) is None


@pytest.mark.parametrize("root", ["/", ""])
def test_root_prefix_matches_everything(root: str) -> None:
    t = table((m("h", paths=(root,)), "root"))
    for path in ("/", "", "/a", "/a/b/c", "*", "weird"):
        assert t.lookup("h", path, {}) == "root"


def test_longest_prefix_wins_regardless_of_order() -> None:
    t = table(
        (m("h", paths=("/",)), "root"),
        (m("h", paths=("/a/b/c",)), "abc"),
        (m("h", paths=("/a",)), "a"),
    )
    assert t.lookup("h", "/a/b/c/d", {}) == "abc"
    assert t.lookup("h", "/a/b/c", {}) == "abc"
    assert t.lookup("h", "/a/b", {}) == "a"
    assert t.lookup("h", "/a/bc", {}) == "a"
    assert t.lookup("h", "/ab", {}) == "root"
    assert t.lookup("h", "/a//b/c", {}) == "a"  # "//" is not collapsed: forwarded unchanged


def test_several_prefixes_and_hosts_in_one_route() -> None:
    t = table((m("a.test", "b.test", paths=("/x", "/y/z")), "r"))
    for host in ("a.test", "b.test"):
        assert t.lookup(host, "/x/1", {}) == "r"
        assert t.lookup(host, "/y/z", {}) == "r"
        assert t.lookup(host, "/y", {}) is None


def test_headers_all_must_match_value_or_presence() -> None:
    t = table(
        (
            m("h", headers=(HeaderMatch("x-env", "canary"), HeaderMatch("x-user"))),
            "canary",
        ),
    )
    assert t.lookup("h", "/", {"x-env": "canary", "x-user": ""}) == "canary"
    assert t.lookup("h", "/", {"x-env": "canary", "x-user": "bob"}) == "canary"
    assert t.lookup("h", "/", {"x-env": "canary"}) is None
    assert t.lookup("h", "/", {"x-env": "Canary", "x-user": "bob"}) is None
    assert t.lookup("h", "/", {"x-user": "bob"}) is None


def test_header_names_from_routes_are_lower_cased() -> None:
    t = table((m("h", headers=(HeaderMatch("X-Env", "a"),)), "a"))
    assert t.lookup("h", "/", {"x-env": "a"}) == "a"


def test_more_header_matches_tried_first_then_order() -> None:
    t = table(
        (m("h"), "plain"),
        (m("h", headers=(HeaderMatch("x-a", "1"),)), "one"),
        (m("h", headers=(HeaderMatch("x-a", "1"), HeaderMatch("x-b", "2"))), "two"),
        (m("h", headers=(HeaderMatch("x-c"),)), "one-later"),
    )
    assert t.lookup("h", "/", {}) == "plain"
    assert t.lookup("h", "/", {"x-a": "1"}) == "one"
    assert t.lookup("h", "/", {"x-a": "1", "x-b": "2"}) == "two"
    assert t.lookup("h", "/", {"x-a": "1", "x-c": "3"}) == "one"
    assert t.lookup("h", "/", {"x-c": "3"}) == "one-later"


def test_longer_prefix_beats_more_headers() -> None:
    t = table(
        (m("h", paths=("/api",), headers=(HeaderMatch("x-a", "1"),)), "api+hdr"),
        (m("h", paths=("/api/v1",)), "v1"),
    )
    assert t.lookup("h", "/api/v1/x", {"x-a": "1"}) == "v1"
    assert t.lookup("h", "/api/v2", {"x-a": "1"}) == "api+hdr"


def test_headers_miss_falls_back_to_shorter_prefix() -> None:
    t = table(
        (m("h", paths=("/",)), "root"),
        (m("h", paths=("/api",), headers=(HeaderMatch("x-a", "1"),)), "api"),
    )
    assert t.lookup("h", "/api/x", {}) == "root"
    assert t.lookup("h", "/api/x", {"x-a": "1"}) == "api"


def test_falls_back_to_less_specific_host_buckets() -> None:
    t = table(
        (m("www.example.com", paths=("/app",)), "exact-app"),
        (m("*.example.com", paths=("/api",)), "wild-api"),
        (m("*.com", headers=(HeaderMatch("x-a"),)), "com-hdr"),
        (m(paths=("/",)), "any"),
    )
    assert t.lookup("www.example.com", "/app/1", {}) == "exact-app"
    assert t.lookup("www.example.com", "/api/1", {}) == "wild-api"
    assert t.lookup("www.example.com", "/other", {"x-a": "y"}) == "com-hdr"
    assert t.lookup("www.example.com", "/other", {}) == "any"
    assert t.lookup("x.org", "/app", {}) == "any"


def test_no_catch_all_means_none() -> None:
    t = table((m("a.test", paths=("/x",)), "x"))
    assert t.lookup("a.test", "/y", {}) is None
    assert t.lookup("b.test", "/x", {}) is None
    assert RouteTable[str].build([]).lookup("a", "/", {}) is None


def test_conflicts_first_given_wins_and_are_reported() -> None:
    t = table(
        (m("h", paths=("/api",)), "first"),
        (m("H:80", paths=("/api/",)), "second"),
        (m("h", paths=("/api",), headers=(HeaderMatch("x-a"),)), "not-a-conflict"),
        (m("*", "", paths=("/",)), "any1"),
        (m(), "any2"),
    )
    assert t.lookup("h", "/api", {}) == "first"
    assert t.lookup("h", "/api", {"x-a": "v"}) == "not-a-conflict"
    assert t.lookup("z", "/", {}) == "any1"
    assert [(c.host, c.path_prefix, c.winner, c.loser) for c in t.conflicts] == [
        ("h", "/api", "first", "second"),
        ("*", "/", "any1", "any2"),
    ]
    assert len(t) == 5


def test_header_order_does_not_avoid_a_conflict() -> None:
    a, b = HeaderMatch("x-a", "1"), HeaderMatch("X-B")
    t = table((m("h", headers=(a, b)), "first"), (m("h", headers=(b, a)), "second"))
    assert t.lookup("h", "/", {"x-a": "1", "x-b": ""}) == "first"
    (conflict,) = t.conflicts
    assert conflict.headers == (HeaderMatch("x-a", "1"), HeaderMatch("x-b"))


def test_route_repeating_itself_is_not_a_conflict() -> None:
    t = table((m("h", "H", paths=("/a", "/a/")), "r"))
    assert t.conflicts == ()
    assert t.lookup("h", "/a", {}) == "r"


def test_ten_thousand_routes() -> None:
    routes: list[tuple[RouteMatch, str]] = []
    for i in range(10_000):
        kind = i % 4
        if kind == 0:
            routes.append((m(f"app{i}.example.com"), f"host{i}"))
        elif kind == 1:
            routes.append((m("shared.example.com", paths=(f"/svc{i}",)), f"path{i}"))
        elif kind == 2:
            routes.append((m(f"*.t{i}.example.com", paths=(f"/v{i}/api",)), f"wild{i}"))
        else:
            hdr = (HeaderMatch("x-tenant", str(i)),)
            routes.append((m("tenants.example.com", headers=hdr), f"tenant{i}"))
    routes.append((m("*.example.com"), "wide"))
    t = RouteTable.build(routes)
    assert t.conflicts == ()
    for i in range(10_000):
        kind = i % 4
        if kind == 0:
            assert t.lookup(f"APP{i}.example.com:443", "/any/thing", {}) == f"host{i}"
        elif kind == 1:
            assert t.lookup("shared.example.com", f"/svc{i}/x", {}) == f"path{i}"
            assert t.lookup("shared.example.com", f"/svc{i}x", {}) == "wide"
        elif kind == 2:
            assert t.lookup(f"a.b.t{i}.example.com", f"/v{i}/api/q", {}) == f"wild{i}"
            assert t.lookup(f"a.t{i}.example.com", f"/v{i}/apiq", {}) == "wide"
        else:
            got = t.lookup("tenants.example.com", "/", {"x-tenant": str(i)})
            assert got == f"tenant{i}"
    assert t.lookup("tenants.example.com", "/", {"x-tenant": "nope"}) == "wide"
    assert t.lookup("example.org", "/", {}) is None


def test_value_match_beats_presence_match_at_equal_count() -> None:
    t = table(
        (m("h", headers=(HeaderMatch("x-a"),)), "present"),
        (m("h", headers=(HeaderMatch("x-a", "1"),)), "valued"),
    )
    assert t.lookup("h", "/", {"x-a": "1"}) == "valued"
    assert t.lookup("h", "/", {"x-a": "2"}) == "present"
