"""Exponential backoff with jitter, for anything that retries against the API server.

Jitter matters more than the curve: after an apiserver restart every watcher of every replica
reconnects, and without it they would all come back in the same millisecond, again and again.
Each delay is the exponential step stretched by a random factor in [1, 1 + jitter).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Backoff", "BackoffSettings"]


@dataclass(frozen=True, slots=True)
class BackoffSettings:
    initial: float = 0.2  # seconds, the first delay
    maximum: float = 30.0  # seconds, no delay (jitter included) exceeds this
    factor: float = 2.0  # each failure multiplies the delay by this
    jitter: float = 0.5  # a delay is stretched by a random factor in [1, 1 + jitter)

    def __post_init__(self) -> None:
        if not (0 < self.initial <= self.maximum and math.isfinite(self.maximum)):
            raise ValueError(
                f"backoff needs 0 < initial <= maximum, got {self.initial!r}, {self.maximum!r}"
            )
        if self.factor < 1 or self.jitter < 0:
            raise ValueError("backoff factor must be >= 1 and jitter >= 0")


class Backoff:
    """Delays for consecutive failures; `reset()` after a success starts over."""

    __slots__ = ("_random", "attempts", "settings")

    def __init__(
        self, settings: BackoffSettings, *, rand: Callable[[], float] = random.random
    ) -> None:
        self.settings = settings
        self.attempts = 0
        self._random = rand

    def next_delay(self) -> float:
        s = self.settings
        # min() before the power would overflow for a long outage; the cap is what matters.
        step = s.initial * s.factor ** min(self.attempts, 64)
        self.attempts += 1
        return min(s.maximum, min(step, s.maximum) * (1.0 + s.jitter * self._random()))

    def reset(self) -> None:
        self.attempts = 0
