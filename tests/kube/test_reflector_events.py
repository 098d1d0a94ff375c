"""The reflector's reading of watch lines (pure: no server needed for the parsing rules;
tests/k8s/test_watch.py runs it against the real apiserver)."""

from __future__ import annotations

import json

import pytest

from httpscale.kube.api import ApiError, Kube, Obj
from httpscale.kube.resources import SERVICES
from httpscale.kube.watch import Reflector, _Gone


class Sink:
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def replace(self, items: list[Obj], resource_version: str) -> None:
        raise AssertionError("not listing here")

    def apply(self, event_type: str, obj: Obj) -> None:
        self.events.append((event_type, obj["metadata"]["name"]))

    def connection_changed(self, connected: bool, error: str | None) -> None:
        pass


def _line(kind: str, obj: Obj) -> bytes:
    return json.dumps({"type": kind, "object": obj}).encode() + b"\n"


def _reflector(sink: Sink) -> Reflector:
    return Reflector(Kube(api=None), SERVICES, sink)  # type: ignore[arg-type]  # no I/O here


def test_events_reach_the_sink_and_move_the_resource_version() -> None:
    sink = Sink()
    r = _reflector(sink)
    obj = {"metadata": {"name": "a", "namespace": "n", "resourceVersion": "7"}}
    assert r._event(_line("ADDED", obj), "5") == "7"
    assert r._event(_line("DELETED", {**obj, "metadata": {**obj["metadata"],
                                                          "resourceVersion": "9"}}), "7") == "9"
    assert sink.events == [("ADDED", "a"), ("DELETED", "a")]
    assert r.events == 2


def test_a_bookmark_only_moves_the_resource_version() -> None:
    sink = Sink()
    r = _reflector(sink)
    bookmark = {"kind": "Service", "apiVersion": "v1", "metadata": {"resourceVersion": "42"}}
    assert r._event(_line("BOOKMARK", bookmark), "7") == "42"
    assert sink.events == []


def test_an_expired_version_means_relist_and_other_errors_are_api_errors() -> None:
    r = _reflector(Sink())
    gone = {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old"}
    with pytest.raises(_Gone):
        r._event(_line("ERROR", gone), "7")
    forbidden = {"kind": "Status", "code": 403, "reason": "Forbidden", "message": "no"}
    with pytest.raises(ApiError) as got:
        r._event(_line("ERROR", forbidden), "7")
    assert got.value.status == 403 and got.value.reason == "Forbidden"


def test_unreadable_lines_are_skipped_not_fatal(caplog: pytest.LogCaptureFixture) -> None:
    sink = Sink()
    r = _reflector(sink)
    assert r._event(b"{not json\n", "7") == "7"
    assert r._event(b'{"type": "ADDED"}\n', "7") == "7"  # no object
    assert r._event(_line("SURPRISE", {"metadata": {"name": "x"}}), "7") == "7"
    assert sink.events == [] and r.events == 0
    assert len([rec for rec in caplog.records if rec.levelname == "WARNING"]) == 3
