"""The phases of an exchange: exactly the moves the module docstring of `exchange` describes
are allowed; every other one raises."""

from __future__ import annotations

import itertools

import pytest

from httpscale.interceptor.exchange import (
    CONNECTING,
    FINISHED,
    HELD,
    PHASES,
    START,
    STREAMING,
    PhaseError,
    next_phase,
)

ALLOWED = {
    (START, HELD), (START, CONNECTING), (START, FINISHED),
    (HELD, CONNECTING), (HELD, FINISHED),
    (CONNECTING, HELD),  # the endpoint left before the connect: held again, same deadline
    (CONNECTING, CONNECTING),  # another endpoint after a failed connect
    (CONNECTING, STREAMING), (CONNECTING, FINISHED),
    (STREAMING, CONNECTING),  # the upstream closed without answering: the request goes again
    (STREAMING, FINISHED),
}


def test_phases_in_order() -> None:
    assert [PHASES[p] for p in (START, HELD, CONNECTING, STREAMING, FINISHED)] == [
        "start", "held", "connecting", "streaming", "finished"
    ]


@pytest.mark.parametrize(
    ("current", "new"),
    list(itertools.product(range(len(PHASES)), repeat=2)),
    ids=lambda p: PHASES[p],
)
def test_only_the_listed_moves_are_allowed(current: int, new: int) -> None:
    if (current, new) in ALLOWED:
        assert next_phase(current, new) == new
    else:
        with pytest.raises(PhaseError, match=f"from {PHASES[current]} to {PHASES[new]}"):
            next_phase(current, new)


def test_nothing_follows_finished() -> None:
    for new in range(len(PHASES)):
        with pytest.raises(PhaseError):
            next_phase(FINISHED, new)
