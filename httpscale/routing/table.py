"""An immutable route table: which route takes a request, by host, path prefix and headers.

Rules (the same meaning KEDA's HTTP add-on gives `hosts`, `pathPrefixes` and `headers`):

* Hosts compare case-insensitively, without `:port` and without a trailing dot. `*.example.com`
  takes any name with at least one more label (`a.example.com`, `a.b.example.com`, never
  `example.com`). Empty `hosts`, `""` or `"*"` is the catch-all.
* Host buckets go from most to least specific: the exact name, then wildcards from the longest
  suffix to the shortest, then the catch-all. The first bucket holding a route that matches the
  path and headers answers; a bucket that matches the host but not the path falls through.
* Path prefixes match whole segments: `/api` takes `/api`, `/api/`, `/api/x`, not `/apix`.
  `/api/` means `/api`; `/` and `""` take everything. Paths compare case-sensitively, as given
  (no percent-decoding: the proxy forwards the path unchanged, so it routes on the same bytes).
* Within a bucket the longest prefix wins; among routes with the same prefix, the one with more
  header matches is tried first (at equal count, more matches with a value: KEDA ranks "name
  and value" above "name only"); all of a route's header matches must hold (exact value, or
  only presence when the value is None). Remaining ties go to the route given first.
* Two routes claiming the same host, prefix and header set conflict: the first given keeps it,
  the other is reported in `RouteTable.conflicts` (a source orders its routes, e.g. by creation
  time, to make "first" meaningful).

Why this shape: `lookup` runs for every proxied request, so its cost depends only on the
request (labels in the host, segments in the path), never on the number of routes: one dict
probe per host candidate and per path segment prefix, found with `rfind` instead of split/join.
Normalizing the Host header and walking its labels is memoized per raw header value (bounded),
since a proxy sees the same few hosts over and over and string methods dominate the cost.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Final, Generic, TypeVar

from httpscale.routing.spec import HeaderMatch, RouteConflict, RouteMatch

__all__ = ["RouteConflict", "RouteTable", "normalize_host", "normalize_path_prefix"]

T = TypeVar("T")

# Distinct raw Host headers whose candidate buckets are remembered per table: at least this
# many, and twice the table's host names, so that traffic spread over every route of a large
# table still hits the memo (random Host headers beyond the cap take the slow path).
_HOST_MEMO_SIZE: Final = 4096

# One route's header requirements as stored: ((name, value-or-None), ...), sorted.
_Headers = tuple[tuple[str, str | None], ...]
# Candidates for one prefix, most header matches first, then in the order given.
_Entries = tuple[tuple[_Headers, T], ...]


def normalize_host(host: str) -> str:
    """Lower-case, drop whitespace around it, `:port` (also after `[v6]`) and a trailing dot.

    (llhttp keeps whitespace after a field value; it is not part of the value, RFC 9110 §5.5.)
    """
    host = host.strip(" \t")
    if ":" in host:
        if host[0] == "[":
            end = host.find("]")
            if end != -1:
                host = host[: end + 1]
        elif host.count(":") == 1:
            host = host[: host.find(":")]
        # else: a bare IPv6 literal, which has no port to strip
    if host and host[-1] == ".":
        host = host.rstrip(".")
    return host.lower()


def normalize_path_prefix(prefix: str) -> str:
    """The stored form: leading `/`, no trailing `/`; the root is `""`."""
    prefix = prefix.strip().rstrip("/")
    if prefix and not prefix.startswith("/"):
        prefix = "/" + prefix
    return prefix


class _PathIndex(Generic[T]):
    """The routes of one host bucket, keyed by normalized prefix."""

    __slots__ = ("_by_prefix", "_max_len", "_only", "_root")

    def __init__(self, by_prefix: dict[str, _Entries[T]]) -> None:
        self._root = by_prefix.pop("", None)
        self._by_prefix = by_prefix
        # No stored prefix is longer than this, so longer candidates need no dict probe.
        self._max_len = max((len(p) for p in by_prefix), default=0)
        # The payload of the one route that takes every path of this host, without header
        # matches (most hosts): found without reading the dict or the tuples, which behind a
        # thousand-host Ingress are not in the CPU's caches when the request comes.
        root = self._root
        self._only: T | None = None
        if not by_prefix and root is not None and len(root) == 1 and not root[0][0]:
            self._only = root[0][1]

    def find(self, path: str, headers: Mapping[str, str]) -> T | None:
        only = self._only
        if only is not None:
            return only
        by_prefix = self._by_prefix
        if by_prefix:
            max_len = self._max_len
            if len(path) <= max_len:
                entries = by_prefix.get(path)
                if entries is not None:
                    hit = _first_match(entries, headers)
                    if hit is not None:
                        return hit
                end = len(path)
            else:
                end = max_len + 1  # a slash at index max_len still yields a short enough prefix
            # Each "/" at index i > 0 ends the candidate prefix path[:i]; go right to left so
            # longer prefixes are tried first. i == 0 is the root, handled below.
            while True:
                i = path.rfind("/", 0, end)
                if i <= 0:
                    break
                entries = by_prefix.get(path[:i])
                if entries is not None:
                    hit = _first_match(entries, headers)
                    if hit is not None:
                        return hit
                end = i
        if self._root is not None:
            return _first_match(self._root, headers)
        return None


def _first_match(entries: _Entries[T], headers: Mapping[str, str]) -> T | None:
    for required, payload in entries:
        for name, value in required:
            got = headers.get(name)
            if got is None or (value is not None and got != value):
                break
        else:
            return payload
    return None


class RouteTable(Generic[T]):
    """Built once from (match, payload) pairs, then only read; rebuild to change it."""

    __slots__ = (
        "_buckets_memo", "_catch_all", "_exact", "_memo_limit", "_size", "_wildcard", "conflicts"
    )

    _exact: dict[str, _PathIndex[T]]
    _wildcard: dict[str, _PathIndex[T]]  # keyed by the suffix after "*."
    _catch_all: _PathIndex[T] | None
    _size: int
    # Raw Host header -> candidate buckets (a lone one not in a tuple: one object less to
    # reach). Only a cache: the table's answers never change.
    _buckets_memo: dict[str, _PathIndex[T] | tuple[_PathIndex[T], ...]]
    conflicts: tuple[RouteConflict[T], ...]

    def __init__(self, size: int, conflicts: tuple[RouteConflict[T], ...]) -> None:
        """An empty table; `build` is how tables are made."""
        self._exact = {}
        self._wildcard = {}
        self._catch_all = None
        self._size = size
        self._buckets_memo = {}
        self._memo_limit = _HOST_MEMO_SIZE
        self.conflicts = conflicts

    @classmethod
    def build(cls, routes: Iterable[tuple[RouteMatch, T]]) -> RouteTable[T]:
        # host key -> prefix -> header set -> (order given, headers, payload); first given wins.
        slots: dict[str, dict[str, dict[_Headers, tuple[int, _Headers, T]]]] = {}
        conflicts: list[RouteConflict[T]] = []
        size = 0
        for order, (match, payload) in enumerate(routes):
            size += 1
            required = _header_key(match.headers)
            hosts = {_host_key(h) for h in match.hosts} if match.hosts else {"*"}
            prefixes = {normalize_path_prefix(p) for p in match.path_prefixes or ("",)}
            for host in sorted(hosts):
                by_prefix = slots.setdefault(host, {})
                for prefix in sorted(prefixes):
                    by_headers = by_prefix.setdefault(prefix, {})
                    held = by_headers.get(required)
                    if held is None:
                        by_headers[required] = (order, required, payload)
                    elif held[0] != order:
                        conflicts.append(
                            RouteConflict(
                                host=host,
                                path_prefix=prefix or "/",
                                headers=tuple(HeaderMatch(n, v) for n, v in required),
                                winner=held[2],
                                loser=payload,
                            )
                        )

        table: RouteTable[T] = cls(size, tuple(conflicts))
        for host, by_prefix in slots.items():
            index = _PathIndex(
                {
                    prefix: tuple(
                        (required, payload)
                        for _, required, payload in sorted(by_headers.values(), key=_specificity)
                    )
                    for prefix, by_headers in by_prefix.items()
                }
            )
            if host == "*":
                table._catch_all = index
            elif host.startswith("*."):
                table._wildcard[host[2:]] = index
            else:
                table._exact[host] = index
        table._memo_limit = max(_HOST_MEMO_SIZE, 2 * (len(table._exact) + len(table._wildcard)))
        return table

    def __len__(self) -> int:
        """How many routes were given (conflicting ones included)."""
        return self._size

    def lookup(self, host: str, path: str, headers: Mapping[str, str]) -> T | None:
        """The payload of the route taking this request, or None (the proxy answers 404).

        `host` is the Host header as received; `path` should come without the query, but a
        `?query` or `#fragment` is cut off here too; `headers` has lower-cased names.
        """
        if "?" in path:
            path = path[: path.find("?")]
        if "#" in path:
            path = path[: path.find("#")]
        buckets = self._buckets_memo.get(host)
        if buckets is None:
            found = self._host_buckets(normalize_host(host))
            buckets = found[0] if len(found) == 1 else found
            # Bounded: hosts repeat, so the memo fills with real names; random Host headers
            # beyond the cap just take the slow path instead of growing memory.
            if len(self._buckets_memo) < self._memo_limit:
                self._buckets_memo[host] = buckets
        if isinstance(buckets, _PathIndex):
            return buckets.find(path, headers)
        for index in buckets:
            hit = index.find(path, headers)
            if hit is not None:
                return hit
        return None

    def _host_buckets(self, host: str) -> tuple[_PathIndex[T], ...]:
        """The path indexes that may answer for `host`, most specific first."""
        found: list[_PathIndex[T]] = []
        index = self._exact.get(host)
        if index is not None:
            found.append(index)
        wildcard = self._wildcard
        if wildcard:
            # Suffixes after each dot, longest first: a.b.example.com -> b.example.com -> ...
            dot = host.find(".")
            while dot != -1:
                index = wildcard.get(host[dot + 1 :])
                if index is not None:
                    found.append(index)
                dot = host.find(".", dot + 1)
        if self._catch_all is not None:
            found.append(self._catch_all)
        return tuple(found)


def _specificity(entry: tuple[int, _Headers, object]) -> tuple[int, int, int]:
    """Sort key within one prefix: more header matches first; at equal count, more of them
    with a value (KEDA: "name and value" beats "name only"); then the order given."""
    order, required, _ = entry
    return (-len(required), -sum(1 for _, value in required if value is not None), order)


def _host_key(host: str) -> str:
    host = normalize_host(host.strip())
    return "*" if host in ("", "*") else host


def _header_key(headers: Iterable[HeaderMatch]) -> _Headers:
    unique = {(h.name.lower(), h.value) for h in headers}
    return tuple(sorted(unique, key=lambda nv: (nv[0], nv[1] is not None, nv[1] or "")))
