"""Go duration strings and the ConfigError format."""

from __future__ import annotations

import pickle

import pytest

from httpscale.model import ConfigError, format_duration, parse_duration


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("1s", 1.0),
        ("500ms", 0.5),
        ("1m30s", 90.0),
        ("2h", 7200.0),
        ("1.5s", 1.5),
        ("1h2m3.5s", 3723.5),
        (".5s", 0.5),
        ("1.s", 1.0),
        ("10us", 1e-05),
        ("10\u00b5s", 1e-05),
        ("10\u03bcs", 1e-05),
        ("3ns", 3e-09),
        ("0", 0.0),
        ("+5s", 5.0),
        (" 30s ", 30.0),
        ("30", 30.0),
        ("2.5", 2.5),
        (45, 45.0),
        (0.25, 0.25),
    ],
)
def test_parse_duration(value: str | int | float, seconds: float) -> None:
    assert parse_duration(value, key="k") == seconds


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("", "invalid duration"),
        ("1x", "invalid duration '1x'"),
        ("s", "invalid duration"),
        ("1 s", "invalid duration"),
        ("1d", "invalid duration"),
        (".s", "invalid duration"),
        ("nan", "invalid duration"),
        ("-1s", "must not be negative"),
        (-3, "must not be negative"),
        (float("inf"), "must be finite"),
        (True, "expected a duration"),
        (None, "expected a duration"),
        ([1], "expected a duration"),
        ("\u0661s", "invalid duration"),  # ARABIC-INDIC DIGIT ONE: Go takes ASCII digits only
    ],
)
def test_parse_duration_errors_name_the_key(value: object, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_duration(value, key="spec.timeouts.conditionWait", source="ns/app")
    assert str(info.value).startswith("ns/app: spec.timeouts.conditionWait: ")
    assert fragment in str(info.value)
    assert info.value.key == "spec.timeouts.conditionWait"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (0.5, "500ms"), (1.5, "1.5s"), (90, "1m30s"), (7200, "2h0m0s"), (1e-05, "10us")],
)
def test_format_duration_round_trips(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(text, key="k") == pytest.approx(seconds)


def test_config_error_format_and_fields() -> None:
    err = ConfigError("examples/local.yaml", "apps[1].run.upstrem", "unknown key")
    assert str(err) == "examples/local.yaml: apps[1].run.upstrem: unknown key"
    assert isinstance(err, ValueError)
    assert (err.source, err.key, err.message, err.line) == (
        "examples/local.yaml",
        "apps[1].run.upstrem",
        "unknown key",
        None,
    )
    assert str(ConfigError("f.yaml", "", "bad", line=3)) == "f.yaml:3: bad"
    assert str(ConfigError("", "k", "bad")) == "k: bad"
    assert str(err.with_source("ns/x")) == "ns/x: apps[1].run.upstrem: unknown key"


def test_config_error_pickles_with_line() -> None:
    err = ConfigError("f.yaml", "a.b", "bad", line=7)
    copy = pickle.loads(pickle.dumps(err))
    assert str(copy) == "f.yaml:7: a.b: bad"
    assert copy.line == 7
