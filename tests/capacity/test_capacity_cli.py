"""`httpscale capacity`'s command line: bad input and a missing locust are refused with a
message naming the problem, before anything is held or loaded. In-process (click's runner):
none of these cases gets as far as a socket. And the progress display, fed its events."""

from __future__ import annotations

import io
import sys
from typing import Literal

import pytest
from click.testing import CliRunner

from httpscale.capacity.cli import capacity_command
from httpscale.capacity.core import Judged, StepStats, Verdict
from httpscale.capacity.display import Progress
from httpscale.capacity.outcome import STEP_HEADER, format_step
from httpscale.capacity.wire import ProgressEvent

URL = "http://hello.localhost:8080/"
# An admin address nothing listens on: a case that got past validation would fail there
# (status 2, "cannot read"), not with the message the case expects.
ADMIN = ("--admin", "http://127.0.0.1:1")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--slo-p99", "fast"), "--slo-p99"),
        (("--error-budget", "lots"), "'lots' is not a fraction (0.25) or a percentage (25%)"),
        (("--error-budget", "100%"), "'100%' must be at least 0 and below 100%"),
        (("--headroom", "-5%"), "'-5%' must be at least 0 and below 100%"),
        (("--max-duration", "soon"), "--max-duration"),
        (("--max-duration", "5s", "--step-duration", "4s", "--warmup", "2s"),
         "'5s' leaves no time for one step (--warmup 2s + --step-duration 4s)"),
        (("--step-duration", "0"), "'0' is too short to measure anything (at least 0.1s)"),
        (("--replicas", "0"), "--replicas"),
        (("--max-users", "0"), "--max-users"),
        (("--output", "yaml"), "'yaml' is not one of 'text', 'json'"),
    ],
)
def test_bad_options_are_named(args: tuple[str, ...], message: str) -> None:
    result = CliRunner().invoke(capacity_command, [URL, *ADMIN, *args])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "cannot read" not in result.output


def test_a_bad_url_exits_2_naming_it() -> None:
    result = CliRunner().invoke(capacity_command, ["ftp://hello.localhost/", *ADMIN])
    assert result.exit_code == 2
    assert "bad URL 'ftp://hello.localhost/': it must start with http:// or https://" in (
        result.output
    )


def test_missing_locust_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    # None in sys.modules is how the import system spells "not importable".
    monkeypatch.setitem(sys.modules, "locust", None)
    result = CliRunner().invoke(capacity_command, [URL, *ADMIN])
    assert result.exit_code == 1, result.output
    assert "locust, which is not installed: pip install 'httpscale[capacity]'" in result.output
    # Checked first: the admin server (not there) was never asked.
    assert "cannot read" not in result.output


def _event(step: int, phase: Literal["warmup", "measure"], elapsed: float) -> ProgressEvent:
    return {"event": "progress", "step": step, "users": 3, "phase": phase,
            "elapsed": elapsed, "duration": 2.0, "requests": 40, "rps": 20.0, "p50": 0.05,
            "p99": 0.06, "error_rate": 0.0}


def test_live_progress_rewrites_the_step_line_then_ends_it_with_the_verdict() -> None:
    out = io.StringIO()
    progress = Progress(out, live=True)
    progress.header()
    progress.progress(_event(1, "warmup", 0.5))
    progress.progress(_event(1, "measure", 1.0))
    step = Judged(1, StepStats(3, 2.0, 40, 0, 0.05, 0.05, 0.06), Verdict.OK, "ok")
    progress.step(step)
    progress.progress(_event(2, "warmup", 0.5))
    progress.note("SIGINT: stopping")
    lines = out.getvalue().split("\n")
    assert lines[0] == STEP_HEADER
    assert lines[1] == (
        "\r\x1b[K   1     3     20.0   50.0ms   60.0ms   0.00%  warming up 0.5/2s"
        "\r\x1b[K   1     3     20.0   50.0ms   60.0ms   0.00%  measuring 1.0/2s"
        "\r\x1b[K" + format_step(step)
    )
    # A note ends the line in progress first instead of overwriting it.
    assert lines[2].endswith("warming up 0.5/2s") and lines[3] == "SIGINT: stopping"


def test_progress_in_a_pipe_writes_final_lines_only() -> None:
    out = io.StringIO()
    progress = Progress(out, live=False)
    progress.progress(_event(1, "measure", 1.0))
    step = Judged(1, StepStats(3, 2.0, 40, 0, 0.05, 0.05, 0.06), Verdict.OK, "ok")
    progress.step(step)
    assert out.getvalue() == format_step(step) + "\n"
