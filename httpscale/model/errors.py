"""The one error type configuration problems raise, wherever the configuration came from.

A message is only useful if it says where: `source` is the file path (local mode) or
`<namespace>/<name>` (an HTTPScaledObject), `key` the dotted path inside it, in the spelling
the user wrote (camelCase, list indexes): `apps[1].run.upstream`, `spec.replicas.max`.
Parsing stops at the first problem: one clear error beats a list of knock-on ones.
"""

from __future__ import annotations

__all__ = ["ConfigError", "join_key"]


class ConfigError(ValueError):
    """A configuration value is missing, of the wrong type, or out of range.

    `str()` is `"{source}: {key}: {message}"`; with a `line` (YAML syntax errors) the source
    reads `path:line`; empty parts are left out rather than printed as `: :`.
    """

    source: str
    key: str
    message: str
    line: int | None

    def __init__(self, source: str, key: str, message: str, *, line: int | None = None) -> None:
        super().__init__(source, key, message)
        self.source = source
        self.key = key
        self.message = message
        self.line = line

    def __str__(self) -> str:
        where = self.source if self.line is None else f"{self.source}:{self.line}"
        return ": ".join(part for part in (where, self.key, self.message) if part)

    def __reduce__(self) -> tuple[object, ...]:
        # Keep `line` across pickling (multiprocessing, logging handlers).
        return (_rebuild, (self.source, self.key, self.message, self.line))

    def with_source(self, source: str) -> ConfigError:
        """The same error attributed to `source` (for helpers that do not know it)."""
        return ConfigError(source, self.key, self.message, line=self.line)


def _rebuild(source: str, key: str, message: str, line: int | None) -> ConfigError:
    return ConfigError(source, key, message, line=line)


def join_key(prefix: str, name: str | int) -> str:
    """`join_key("spec", "replicas")` -> `spec.replicas`; an int index -> `apps[1]`."""
    if isinstance(name, int):
        return f"{prefix}[{name}]"
    return f"{prefix}.{name}" if prefix else name
