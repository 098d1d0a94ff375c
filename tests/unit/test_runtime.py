"""`runtime.tune_gc_for_serving`, in a fresh interpreter (it changes process-wide GC state,
which the test process must keep)."""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = """
import gc, json
from httpscale.runtime import tune_gc_for_serving
before = gc.get_threshold()
tune_gc_for_serving()
print(json.dumps({"before": before, "after": gc.get_threshold(), "frozen": gc.get_freeze_count()}))
"""


def test_startup_heap_frozen_and_full_collections_spaced() -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60, check=True
    )
    got = json.loads(result.stdout)
    assert got["after"][0] == 7000, "young collections spaced for thousands of requests in flight"
    assert got["after"][1] == got["before"][1], "the middle generation keeps its threshold"
    assert got["after"][2] == 100
    assert got["frozen"] > 1000, "the modules imported to start are out of the GC's scans"
