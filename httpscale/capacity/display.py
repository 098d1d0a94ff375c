"""The progress display while a capacity run goes: one line per step, on stderr.

On a terminal the line of the step in progress is rewritten in place (warm-up, then the
measurement so far) and becomes the step's final line with its verdict; elsewhere (a pipe, a
CI log) only the final lines are written, so logs hold one line per step and no escapes.
Stdout stays for the result (`--output json` prints nothing else there).
"""

from __future__ import annotations

from typing import TextIO

from httpscale.capacity.core import Judged
from httpscale.capacity.outcome import STEP_HEADER, format_step
from httpscale.capacity.wire import ProgressEvent

__all__ = ["Progress", "format_progress"]

_CLEAR_LINE = "\r\x1b[K"


def format_progress(event: ProgressEvent) -> str:
    what = "warming up" if event["phase"] == "warmup" else "measuring"
    return (
        f"{event['step']:>4} {event['users']:>5} {event['rps']:>8.1f} "
        f"{event['p50'] * 1000:>6.1f}ms {event['p99'] * 1000:>6.1f}ms "
        f"{event['error_rate'] * 100:>6.2f}%  {what} "
        f"{event['elapsed']:.1f}/{event['duration']:g}s"
    )


class Progress:
    def __init__(self, stream: TextIO, live: bool) -> None:
        self.stream = stream
        self.live = live  # a terminal: rewrite the current line
        self._open = False  # a progress line is on screen, not yet ended

    def note(self, text: str) -> None:
        self._end_line()
        self.stream.write(text + "\n")
        self.stream.flush()

    def header(self) -> None:
        self.note(STEP_HEADER)

    def progress(self, event: ProgressEvent) -> None:
        if self.live:
            self.stream.write(_CLEAR_LINE + format_progress(event))
            self.stream.flush()
            self._open = True

    def step(self, step: Judged) -> None:
        if self.live and self._open:
            self.stream.write(_CLEAR_LINE)
            self._open = False
        self.note(format_step(step))

    def _end_line(self) -> None:
        if self._open:
            self.stream.write("\n")
            self._open = False
