"""Which watch events are echoes of the operator's own writes (pure bookkeeping)."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

from httpscale.kube.cache import Snapshot
from httpscale.kube.resources import HTTPSCALEDOBJECTS, SCALEDOBJECTS
from httpscale.operator.reconciler import Key, Reconciler


class _Empty:
    def snapshot(self) -> Snapshot[Any]:
        empty: Any = MappingProxyType({})
        return Snapshot(empty, empty, empty, True)


def _reconciler() -> Reconciler:
    nothing: Any = None  # never reached: every object is gone in these tests
    return Reconciler(nothing, httpsos=_Empty(), routes=_Empty(), services=_Empty(),
                      scaled_objects=nothing, workloads=nothing, events=nothing,
                      scaler_address="s:1")


def _obj(rv: str) -> dict[str, Any]:
    return {"metadata": {"resourceVersion": rv}}


def test_our_write_coming_back_is_an_echo_once() -> None:
    r = _reconciler()
    r._wrote(SCALEDOBJECTS, "ns/a", _obj("7"))
    assert not r.is_echo("scaledobjects", "ns/a", _obj("8"))  # someone else's version
    r._wrote(SCALEDOBJECTS, "ns/a", _obj("9"))
    assert r.is_echo("scaledobjects", "ns/a", _obj("9"))
    assert not r.is_echo("scaledobjects", "ns/a", _obj("9"))  # only once


def test_a_status_write_over_a_changed_object_is_not_an_echo() -> None:
    r = _reconciler()
    r._wrote(HTTPSCALEDOBJECTS, "ns/a", _obj("3"), echo=False)
    assert not r.is_echo("httpscaledobjects", "ns/a", _obj("3"))


async def test_a_reconcile_after_the_write_makes_its_echo_news() -> None:
    # The write, then a reconcile that may have looked at a cache without it (a watch was
    # reconnecting) and concluded there was nothing to do: the write coming back must
    # queue the object again, or nothing ever looks at it with the write in view.
    r = _reconciler()
    r._wrote(SCALEDOBJECTS, "ns/a", _obj("9"))
    assert await r.reconcile(Key("HTTPScaledObject", "ns", "a")) is False
    assert not r.is_echo("scaledobjects", "ns/a", _obj("9"))
