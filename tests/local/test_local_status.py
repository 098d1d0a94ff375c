"""`httpscale status` table formatting, fed plain dicts."""

from __future__ import annotations

from httpscale.local.status import format_status

DOC = {
    "uptimeSeconds": 12.0,
    "apps": {
        "hello": {
            "route": "local/hello",
            "kind": "command",
            "metric": "concurrency",
            "target": 5.0,
            "min": 0,
            "max": 4,
            "desired": 2,
            "ready": 1,
            "concurrency": 7,
            "held": 0,
            "rate": 3.5,
            "last_cold_start": 1.25,
            "last_scale": {"from": 1, "to": 2, "reason": "7 / target 5", "ago": 0.4},
            "replicas": [
                {
                    "name": "hello-1",
                    "pid": 101,
                    "port": 4001,
                    "state": "ready",
                    "age": 9.5,
                    "in_flight": 7,
                },
                {
                    "name": "hello-2",
                    "pid": 102,
                    "port": 4002,
                    "state": "starting",
                    "age": 0.4,
                    "in_flight": 0,
                },
            ],
        },
        "api": {
            "route": "local/api",
            "kind": "upstream",
            "upstream": "127.0.0.1:9001",
            "concurrency": 1,
            "held": 0,
        },
    },
}


def test_table_has_one_row_per_app_and_per_replica() -> None:
    lines = format_status(DOC).splitlines()
    assert lines[0].split() == [
        "APP",
        "ROUTE",
        "REPLICAS",
        "MIN-MAX",
        "METRIC",
        "CONC",
        "HELD",
        "RATE/s",
        "LAST",
        "SCALE",
    ]
    assert lines[1].split()[:8] == [
        "hello",
        "local/hello",
        "1/2",
        "0-4",
        "concurrency:5",
        "7",
        "0",
        "3.5",
    ]
    assert lines[1].endswith("1->2 0.4s ago (7 / target 5), cold start 1.25s")
    assert lines[2].split()[:4] == ["api", "local/api", "upstream", "127.0.0.1:9001"]
    assert lines[3] == ""
    assert lines[4].split() == ["APP", "REPLICA", "PID", "PORT", "STATE", "AGE", "IN-FLIGHT"]
    assert lines[5].split() == ["hello", "hello-1", "101", "4001", "ready", "9.5s", "7"]
    assert lines[6].split() == ["hello", "hello-2", "102", "4002", "starting", "0.4s", "0"]
    # Columns line up: every replica row starts its PID column at the same offset.
    assert lines[5].index("101") == lines[6].index("102") == lines[4].index("PID")


def test_not_a_local_admin_server() -> None:
    assert "no apps" in format_status({"routes": {}})
