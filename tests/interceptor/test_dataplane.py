"""Which build of the hot path runs: the mypyc build when current, else the Python source."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from httpscale import dataplane

PACKAGE = Path(dataplane.__file__).resolve().parent  # .../httpscale

PROBE = (
    "import httpscale.interceptor.exchange as e, httpscale.interceptor.downstream as d;"
    "import httpscale.interceptor.splice as h;"
    "from httpscale import dataplane;"
    "print(dataplane.active().name, e.__file__.rsplit('.', 1)[1], d.__file__.rsplit('.', 1)[1],"
    " 'c' if h._SCAN_RESPONSE.__module__ == 'httpscale.interceptor._scan' else 'py')"
)


def _probe(root: Path, **env: str) -> tuple[str, str]:
    """Import the hot path from the package copy under `root` in a fresh interpreter."""
    clean_env = {k: v for k, v in os.environ.items() if k != dataplane.PURE_ENV}
    result = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=root, capture_output=True, text=True, timeout=60,
        env={**clean_env, **env, "PYTHONPATH": str(root)}, check=True,
    )
    return result.stdout.strip(), result.stderr


def test_expected_build_is_the_one_running() -> None:
    # scripts/test says which build each run must exercise, so a compile step that silently
    # failed (or a stale build) cannot pass CI while testing the wrong code.
    expected = os.environ.get("HTTPSCALE_EXPECT_DATAPLANE")
    if not expected:
        pytest.skip("HTTPSCALE_EXPECT_DATAPLANE not set (scripts/test sets it)")
    assert dataplane.active().name == expected, dataplane.active().reason
    from httpscale.interceptor import exchange

    assert exchange.__file__ is not None
    assert exchange.__file__.endswith(".py") == (expected == "python")


def test_compiled_build_is_profile_guided() -> None:
    # scripts/compile falls back to a plain build when the instrumented build or its training
    # run fails; the fallback works but is slower, so it must not pass CI unnoticed.
    if os.environ.get("HTTPSCALE_EXPECT_DATAPLANE") != "compiled":
        pytest.skip("only for a run that expects the compiled build")
    expected = os.environ.get("HTTPSCALE_EXPECT_PROFILE", "trained")
    manifest = json.loads(dataplane.MANIFEST.read_text())
    assert manifest.get("profile") == expected, (
        f"the compiled build's profile is {manifest.get('profile')!r}, not {expected!r}: "
        "see build/pgo-failure.log"
    )


def test_no_extension_is_the_instrumented_build() -> None:
    # The profile-guided build's first pass is instrumented (it counts, and writes .gcda files at
    # exit); the trained pass must replace every extension. Once the hand-written C's was left
    # in place (setuptools thought it current), slowing every request and logging at exit.
    if os.environ.get("HTTPSCALE_EXPECT_DATAPLANE") != "compiled":
        pytest.skip("only for a run that expects the compiled build")
    if json.loads(dataplane.MANIFEST.read_text()).get("profile") != "trained":
        pytest.skip("not a profile-guided build")
    instrumented = [
        path.name
        for module in (*dataplane.BUILT_MODULES, f"{dataplane.GROUP}__mypyc")
        for path in dataplane.extension_paths(module)
        if b"__gcov_" in path.read_bytes()
    ]
    assert instrumented == [], f"instrumented extensions shipped: {instrumented}"


@pytest.fixture
def package_copy(tmp_path: Path) -> Path:
    """A copy of the installed package, compiled build included, that a test may edit."""
    problem = dataplane.build_problem()
    if problem:
        pytest.skip(f"needs a current compiled build: {problem}")
    shutil.copytree(PACKAGE, tmp_path / "httpscale",
                    ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def test_current_build_is_imported(package_copy: Path) -> None:
    out, _ = _probe(package_copy)
    assert out == "compiled so so c"


def test_pure_python_on_request(package_copy: Path) -> None:
    out, _ = _probe(package_copy, HTTPSCALE_PURE_PYTHON="1")
    assert out == "python py py py"


def test_edited_source_runs_instead_of_a_stale_build(package_copy: Path) -> None:
    source = package_copy / "httpscale" / "interceptor" / "exchange.py"
    source.write_text(source.read_text() + "\n# edited after the build\n")
    out, err = _probe(package_copy)
    # All hot modules fall back together, not only the edited one: mypyc modules of one build
    # call each other natively, so a mixed set would still run the old exchange code.
    assert out == "python py py py"
    assert "sources changed since the build (httpscale.interceptor.exchange)" in err
    assert "scripts/compile" in err


def test_edited_c_source_runs_the_python_twin(package_copy: Path) -> None:
    # The hand-written C is part of the build: edited, it is stale like any hot module, and
    # its Python twin (scan.scan_response_head) runs with the rest of the source.
    source = package_copy / "httpscale" / "interceptor" / "_scan.c"
    source.write_text(source.read_text() + "\n/* edited after the build */\n")
    out, err = _probe(package_copy)
    assert out == "python py py py"
    assert "sources changed since the build (httpscale.interceptor._scan)" in err


def test_incomplete_build_is_refused(package_copy: Path) -> None:
    for ext in (package_copy / "httpscale" / "interceptor").glob("routes.*.so"):
        ext.unlink()
    out, err = _probe(package_copy)
    assert out == "python py py py"
    assert "compiled build incomplete (missing httpscale.interceptor.routes)" in err
