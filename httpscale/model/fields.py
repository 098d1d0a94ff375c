"""Typed reads from a parsed YAML/JSON mapping, with errors that say where.

Both Kubernetes kinds and the local-mode file read user input the same way:
`Fields` wraps one mapping, hands out typed values by key, remembers which keys were read and
refuses the rest (`finish()`), so a typo such as `upstrem` is an error, not a silent default.
A key present with a null value counts as absent, as Kubernetes' `omitempty` treats it.

`kube=True` reads a Kubernetes object with exactly the types its CRD schema declares (see
docs/crds.md): integers are JSON integers (`8080.0` is refused, as KEDA's Go types refuse it),
and durations are whole seconds or Go duration strings (`durations.py`). Local mode
(`kube=False`) is more lenient: `2.5` seconds, `"30"`, fractional targets.

The patterns every kind shares live here too (host, header name, "not blank"), because the CRD
YAML repeats them as OpenAPI `pattern`s and the test in tests/k8s/test_crds.py checks the two
against each other.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator, Mapping
from urllib.parse import urlsplit

from httpscale.model.durations import INT32_MAX, parse_duration
from httpscale.model.errors import ConfigError, join_key
from httpscale.routing.spec import Endpoint

__all__ = [
    "HEADER_NAME",
    "HOST",
    "INT32_MAX",
    "Fields",
    "is_blank",
    "parse_upstream_url",
]

#: RFC 9110 token: what a header name (and a cookie name) may contain.
HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
#: A host as the routing table understands it: a name, "*.name" or "*"; no scheme, port or
#: path. (The empty string, KEDA's catch-all, is allowed by the callers, not by this pattern.)
HOST = re.compile(r"(\*|(\*\.)?[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?\.?)")
# What "blank" means for a required name: nothing but ASCII whitespace. The CRDs say the same
# with `pattern: '[^ \t\n\r\f\v]'`, so the rule is one both sides can state exactly.
_BLANK = re.compile(r"[ \t\n\r\f\v]*")


def is_blank(value: str) -> bool:
    """True for "" and strings of ASCII whitespace only."""
    return _BLANK.fullmatch(value) is not None


def _kind(value: object) -> str:
    """The YAML-ish name of a value's type, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, Mapping):
        return "a mapping"
    return type(value).__name__


class Fields:
    """One mapping being parsed: `source` names the file or object, `key` its dotted path.

    `kube` selects the Kubernetes reading of types (see the module docstring); every `Fields`
    made from this one (`sub`, `nested`, `get_mappings`) inherits it.
    """

    __slots__ = ("_data", "_read", "key", "kube", "source")

    def __init__(self, data: object, *, source: str, key: str, kube: bool = False) -> None:
        if not isinstance(data, Mapping):
            raise ConfigError(source, key, f"expected a mapping, got {_kind(data)}")
        for name in data:
            if not isinstance(name, str):
                raise ConfigError(source, join_key(key, str(name)), "keys must be strings")
        self._data: Mapping[str, object] = data
        self._read: set[str] = set()
        self.source = source
        self.key = key
        self.kube = kube

    def error(self, name: str | int | None, message: str) -> ConfigError:
        """A ConfigError for `name` inside this mapping (or for the mapping itself)."""
        return ConfigError(self.source, self.where(name), message)

    def where(self, name: str | int | None) -> str:
        return self.key if name is None else join_key(self.key, name)

    def has(self, name: str) -> bool:
        return self._data.get(name) is not None

    def raw(self, name: str) -> object:
        """The value as given (None if absent), marking the key as known."""
        self._read.add(name)
        return self._data.get(name)

    def skip(self, *names: str) -> None:
        """Accept these keys without reading them (e.g. `metadata` outside `spec`)."""
        self._read.update(names)

    def allow(self, *names: str) -> None:
        """Declare every key this mapping may have and refuse any other right away, so a typo
        is reported as such before "required" errors it would otherwise cause."""
        self._read.update(names)
        self.finish()

    def finish(self) -> None:
        """Refuse the first key nobody read, suggesting the closest known one."""
        for name in self._data:
            if name not in self._read:
                hint = difflib.get_close_matches(name, sorted(self._read), n=1)
                extra = f" (did you mean {hint[0]!r}?)" if hint else ""
                raise self.error(name, f"unknown key{extra}")

    def sub(self, name: str) -> Fields | None:
        value = self.raw(name)
        return None if value is None else self.nested(value, self.where(name))

    def nested(self, value: object, key: str) -> Fields:
        """A `Fields` for a mapping found inside this one (a list item), at `key`."""
        return Fields(value, source=self.source, key=key, kube=self.kube)

    def get_mappings(self, name: str) -> list[Fields] | None:
        """A list of mappings, each as its own `Fields` keyed `name[i]`."""
        items = self.get_list(name)
        if items is None:
            return None
        where = self.where(name)
        return [self.nested(item, join_key(where, i)) for i, item in enumerate(items)]

    def get_str(self, name: str, *, required: bool = False, nonempty: bool = False) -> str | None:
        value = self.raw(name)
        if value is None:
            if required:
                raise self.error(name, "required")
            return None
        if not isinstance(value, str):
            raise self.error(name, f"expected a string, got {_kind(value)}")
        if nonempty and is_blank(value):
            raise self.error(name, "must not be empty")
        return value

    def get_int(
        self, name: str, *, minimum: int | None = None, maximum: int | None = None
    ) -> int | None:
        value = self.raw(name)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(name, f"expected an integer, got {_kind(value)} ({value!r})")
        self._check_range(name, value, minimum, maximum)
        return value

    def get_number(
        self, name: str, *, minimum: float | None = None, positive: bool = False
    ) -> float | None:
        """A number; with `kube`, an integer (the CRDs type every target as one)."""
        value = self.raw(name)
        if value is None:
            return None
        if self.kube and (isinstance(value, bool) or not isinstance(value, int)):
            raise self.error(name, f"expected an integer, got {_kind(value)} ({value!r})")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(name, f"expected a number, got {_kind(value)} ({value!r})")
        if positive and not value > 0:
            raise self.error(name, f"must be greater than 0, got {value!r}")
        self._check_range(name, value, minimum, None)
        return float(value)

    def get_duration(self, name: str, *, positive: bool = False) -> float | None:
        value = self.raw(name)
        if value is None:
            return None
        seconds = parse_duration(value, key=self.where(name), source=self.source, kube=self.kube)
        if positive and seconds <= 0:
            raise self.error(name, f"must be longer than 0, got {value!r}")
        return seconds

    def get_str_list(self, name: str) -> tuple[str, ...] | None:
        items = self.get_list(name)
        if items is None:
            return None
        out: list[str] = []
        for index, item in enumerate(items):
            if not isinstance(item, str):
                raise ConfigError(
                    self.source,
                    join_key(self.where(name), index),
                    f"expected a string, got {_kind(item)}",
                )
            out.append(item)
        return tuple(out)

    def get_list(self, name: str) -> list[object] | None:
        value = self.raw(name)
        if value is None:
            return None
        if not isinstance(value, list | tuple):
            raise self.error(name, f"expected a list, got {_kind(value)}")
        return list(value)

    def get_str_map(self, name: str) -> dict[str, str] | None:
        """A mapping of strings; numbers are refused (quote them) so `"010"` stays `010`.

        A null value counts as absent, like a null field. With `kube`, the keys come sorted,
        as the API server stores (and returns) every map.
        """
        value = self.raw(name)
        if value is None:
            return None
        inner = self.nested(value, self.where(name))
        out: dict[str, str] = {}
        keys = sorted(inner.keys()) if self.kube else list(inner.keys())
        for key in keys:
            got = inner.get_str(key)
            if got is not None:
                out[key] = got
        return out

    def keys(self) -> Iterator[str]:
        return iter(list(self._data))

    def _check_range(
        self, name: str, value: float, minimum: float | None, maximum: float | None
    ) -> None:
        if minimum is not None and value < minimum:
            raise self.error(name, f"must be at least {_number(minimum)}, got {value!r}")
        if maximum is not None and value > maximum:
            raise self.error(name, f"must be at most {_number(maximum)}, got {value!r}")


def _number(value: float) -> str:
    """2147483647 as such (not 2.14748e+09), 0.5 as 0.5."""
    return str(value) if isinstance(value, int) else f"{value:g}"


def parse_upstream_url(value: object, *, key: str, source: str) -> Endpoint:
    """`http://host:port` -> Endpoint. The proxy speaks plain HTTP/1.1 to upstreams, so no
    https, and no path: requests keep their own path, a base path would silently be dropped."""
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(source, key, f"expected a URL like http://127.0.0.1:9001, got {value!r}")
    text = value.strip()
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(source, key, f"invalid URL {text!r}: {exc}") from None
    if parts.scheme != "http":
        raise ConfigError(
            source, key, f"only http:// upstreams are supported, got {parts.scheme or 'no'} scheme"
        )
    if not parts.hostname:
        raise ConfigError(source, key, f"URL {text!r} has no host")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise ConfigError(
            source, key, f"URL {text!r} must be just http://host:port (no path, query or user)"
        )
    return Endpoint(parts.hostname, port if port is not None else 80)
