"""Durations as Kubernetes users write them: Go `time.ParseDuration` strings or seconds.

KEDA's CRD types `window`, `granularity` and `timeouts.*` as `metav1.Duration`, whose wire form
is a Go duration string (`1m`, `500ms`, `1h30m`, `1.5s`). Plain numbers (YAML `30`, `"30"`) are
accepted too and mean seconds, because integer fields like `scaledownPeriod` are seconds and
local-mode users mix both. Negative durations are refused: nothing here runs backwards.

`kube=True` is the Kubernetes form, which the CRDs state as `x-kubernetes-int-or-string` plus
a CEL rule: a whole number of seconds (a JSON integer), or a Go duration string exactly as Go
parses it (no spaces, no unit-less number but "0"), at most `INT32_MAX` seconds either way
(KEDA hands periods to the ScaledObject as int32 seconds; about 68 years), and a string at most
`MAX_DURATION_LENGTH` characters (a bound the API server needs to afford the CEL rules).
"""

from __future__ import annotations

import math
import re

from httpscale.model.errors import ConfigError

__all__ = [
    "GO_DURATION",
    "INT32_MAX",
    "MAX_DURATION_LENGTH",
    "format_duration",
    "parse_duration",
]

INT32_MAX = 2**31 - 1
MAX_DURATION_LENGTH = 64

# Nanoseconds per unit, with the spellings Go accepts (both micro signs included). Summing
# nanoseconds and dividing once keeps "10us" exactly 1e-05 instead of 9.999999999999999e-06.
_UNITS: dict[str, float] = {
    "ns": 1.0,
    "us": 1e3,
    "\u00b5s": 1e3,  # MICRO SIGN
    "\u03bcs": 1e3,  # GREEK SMALL LETTER MU
    "ms": 1e6,
    "s": 1e9,
    "m": 60e9,
    "h": 3600e9,
}
# One "<number><unit>" term; Go allows "1.", ".5" but not ".".
# ASCII digits only: `\d` would also take other scripts' digits, which Go refuses.
_TERM = re.compile("([0-9]+[.]?[0-9]*|[.][0-9]+)(ns|us|\u00b5s|\u03bcs|ms|s|m|h)")
_NUMBER = re.compile("[0-9]+[.]?[0-9]*|[.][0-9]+")
#: A non-negative Go duration string, whole: the CRDs carry this same pattern in their CEL rules.
GO_DURATION = re.compile(
    "[+]?(0|(([0-9]+[.]?[0-9]*|[.][0-9]+)(ns|us|\u00b5s|\u03bcs|ms|s|m|h))+)"
)
_KUBE_HINT = "use whole seconds (30) or a Go duration string (30s, 1m30s, 500ms)"


def parse_duration(value: object, *, key: str, source: str = "", kube: bool = False) -> float:
    """Seconds in `value`: a Go duration string, or a number of seconds (int, float or string).

    With `kube`, only the Kubernetes form (see the module docstring).
    Raises `ConfigError(source, key, ...)` naming the bad value and showing valid forms.
    """
    if kube:
        return _parse_kube(value, key=key, source=source)
    if isinstance(value, bool):  # YAML `yes`/`true` is a bool, which is an int subclass
        raise ConfigError(source, key, f"expected a duration like 30s or 1m30s, got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        seconds = _parse_string(value.strip(), key=key, source=source)
    else:
        raise ConfigError(
            source, key, f"expected a duration like 30s or 1m30s, got {type(value).__name__}"
        )
    if not math.isfinite(seconds):
        raise ConfigError(source, key, f"duration must be finite, got {value!r}")
    if seconds < 0:
        raise ConfigError(source, key, f"duration must not be negative, got {value!r}")
    return seconds


def _parse_kube(value: object, *, key: str, source: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ConfigError(source, key, f"expected a duration, got {value!r}: {_KUBE_HINT}")
    if isinstance(value, int):
        seconds = float(value)
    elif len(value) > MAX_DURATION_LENGTH:
        raise ConfigError(
            source, key, f"duration strings are at most {MAX_DURATION_LENGTH} characters long"
        )
    elif value.startswith("-"):
        seconds = -1.0  # Go would take it; nothing here runs backwards
    elif not GO_DURATION.fullmatch(value):
        raise ConfigError(source, key, f"invalid duration {value!r}: {_KUBE_HINT}")
    else:
        seconds = _parse_string(value, key=key, source=source)
    if seconds < 0:
        raise ConfigError(source, key, f"duration must not be negative, got {value!r}")
    if seconds > INT32_MAX:
        raise ConfigError(
            source, key, f"duration must be at most {INT32_MAX}s (about 68 years), got {value!r}"
        )
    return seconds


def _parse_string(text: str, *, key: str, source: str) -> float:
    if _NUMBER.fullmatch(text):
        return float(text)
    body = text[1:] if text[:1] in "+-" else text
    negative = text.startswith("-")
    if body == "0":  # Go's one unit-less special case
        return 0.0
    total = 0.0
    pos = 0
    while pos < len(body):
        term = _TERM.match(body, pos)
        if term is None:
            raise ConfigError(
                source,
                key,
                f"invalid duration {text!r}: use a number of seconds or units "
                "ns, us, ms, s, m, h (e.g. 500ms, 30s, 1m30s, 2h)",
            )
        total += float(term.group(1)) * _UNITS[term.group(2)]
        pos = term.end()
    if not body:
        raise ConfigError(source, key, "invalid duration '': expected e.g. 30s")
    return -total / 1e9 if negative else total / 1e9


def format_duration(seconds: float) -> str:
    """The Go spelling of `seconds` (for status messages and round trips): 90.0 -> "1m30s"."""
    if seconds == 0:
        return "0s"
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    if seconds < 1:
        millis = seconds * 1000
        return f"{sign}{millis:g}ms" if millis >= 1 else f"{sign}{seconds * 1e6:g}us"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    out = sign
    if hours:
        out += f"{int(hours)}h"
    if hours or minutes:
        out += f"{int(minutes)}m"
    return out + f"{round(secs, 9):g}s"
