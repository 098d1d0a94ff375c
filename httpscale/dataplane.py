"""Which build of the proxy's hot path runs: compiled by mypyc, or the Python source.

The proxy's request path (`HOT_MODULES`) is plain, fully typed Python that `scripts/compile`
turns into C extensions with mypyc: the same source, about twice the requests per CPU-second
(figures in docs/benchmarks.md). The extensions sit next to their sources, where Python's
import system prefers them. That makes a stale build dangerous: edit `exchange.py`, forget to
recompile, and the old code runs. So the build records a hash of every source it compiled, and
this module checks those hashes once per process. When any differs, or `HTTPSCALE_PURE_PYTHON=1`
asks for it, *all* hot modules are loaded from source: mypyc modules of one build call each
other natively, so the set is never mixed.

When: at the first import of a built module, not before. `import httpscale` only puts a gate
first on `sys.meta_path` (`install_gate`, nothing read from disk); the gate runs the check when
a built module is about to be found, so the choice is made before any of them is imported, and
a process that imports none (the scaler, `httpscale status`) never pays for it.
The hot modules are not all under one package (the route table is shared with config loading),
so no package `__init__` could stand in for the gate. A build concern, not a component: this
module imports nothing of httpscale, and is not compiled itself.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

__all__ = [
    "GROUP",
    "HOT_MODULES",
    "MANIFEST",
    "NATIVE_MODULES",
    "Dataplane",
    "active",
    "build_problem",
    "extension_paths",
    "install_gate",
    "source_hashes",
]

log = logging.getLogger(__name__)

PACKAGE_DIR = Path(__file__).resolve().parent  # .../httpscale
#: Compiled together, in one shared library: calls between them are native C calls.
HOT_MODULES = (
    "httpscale.interceptor.counters",
    "httpscale.interceptor.deadline",
    "httpscale.interceptor.downstream",
    "httpscale.interceptor.exchange",
    "httpscale.interceptor.flow",
    "httpscale.interceptor.heads",
    "httpscale.interceptor.http1",
    "httpscale.interceptor.metrics",
    "httpscale.interceptor.proxy",
    "httpscale.interceptor.registry",
    "httpscale.interceptor.routes",
    "httpscale.interceptor.scan",
    "httpscale.interceptor.splice",
    "httpscale.interceptor.upstream",
    "httpscale.routing.table",
)
#: Written in C by hand, built with the group: the few loops that Python, even compiled, can only
#: run by making an object per step (`_scan.c` says why). Each has a Python twin that runs
#: whenever the hot modules run from source.
NATIVE_MODULES = ("httpscale.interceptor._scan",)
#: Everything scripts/compile builds, apart from the group's shared library.
BUILT_MODULES = HOT_MODULES + NATIVE_MODULES
#: mypyc's shared library for the group (named so that it lives inside this package).
GROUP = "httpscale._dataplane"
#: Written by scripts/compile next to the extensions: {"sources": {module: sha256}, ...}.
MANIFEST = PACKAGE_DIR / "_dataplane.json"
PURE_ENV = "HTTPSCALE_PURE_PYTHON"


def source_path(module: str) -> Path:
    suffix = ".c" if module in NATIVE_MODULES else ".py"
    return PACKAGE_DIR.parent.joinpath(*module.split(".")).with_suffix(suffix)


def source_hashes(modules: Sequence[str] = BUILT_MODULES) -> dict[str, str]:
    return {m: hashlib.sha256(source_path(m).read_bytes()).hexdigest() for m in modules}


def extension_paths(module: str) -> list[Path]:
    """The extension files built for `module` (one of BUILT_MODULES or GROUP's library)
    present now."""
    stem = PACKAGE_DIR.parent.joinpath(*module.split("."))
    found = (Path(f"{stem}{suffix}") for suffix in importlib.machinery.EXTENSION_SUFFIXES)
    return [path for path in found if path.exists()]


class Dataplane:
    """What `check` decided: `compiled` is True when the mypyc build is the one imported."""

    def __init__(self, compiled: bool, reason: str) -> None:
        self.compiled = compiled
        self.reason = reason

    @property
    def name(self) -> str:
        return "compiled" if self.compiled else "python"


_NO_BUILD = "no compiled build (run scripts/compile)"


def build_problem() -> str:
    """Why the compiled build cannot be used; "" when it is present and current."""
    present = [m for m in BUILT_MODULES if extension_paths(m)]
    if not present:
        return _NO_BUILD
    return _build_problem(present)


def check(env: dict[str, str] | os._Environ[str] = os.environ) -> Dataplane:
    """Decide which build to import; install the source-only finder when it must be Python."""
    problem = build_problem()
    if problem == _NO_BUILD:
        return Dataplane(False, problem)  # nothing compiled to step around
    if env.get(PURE_ENV, "") not in ("", "0"):
        _prefer_sources()
        return Dataplane(False, f"{PURE_ENV} is set")
    if problem:
        log.warning("compiled hot path not used, running the Python source: %s", problem)
        _prefer_sources()
        return Dataplane(False, problem)
    return Dataplane(True, f"mypyc build of {len(HOT_MODULES)} modules, "
                           f"{len(NATIVE_MODULES)} in C")


def _build_problem(present: Sequence[str]) -> str:
    if len(present) != len(BUILT_MODULES):
        missing = sorted(set(BUILT_MODULES) - set(present))
        return f"compiled build incomplete (missing {', '.join(missing)}); run scripts/compile"
    try:
        recorded = json.loads(MANIFEST.read_text())["sources"]
    except (OSError, ValueError, KeyError, TypeError):
        return f"{MANIFEST.name} missing or unreadable; run scripts/compile"
    stale = [m for m, digest in source_hashes().items() if recorded.get(m) != digest]
    if stale:
        return f"sources changed since the build ({', '.join(stale)}); run scripts/compile"
    return ""


class _SourceFinder:
    """Finds the hot modules as .py files, ahead of the extension modules beside them, and
    hides the native ones (their importers fall back to their Python twins)."""

    @staticmethod
    def find_spec(
        name: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if name in NATIVE_MODULES:
            raise ModuleNotFoundError(f"{name} is not used: the Python source runs", name=name)
        if name not in HOT_MODULES:
            return None
        return importlib.util.spec_from_file_location(name, source_path(name))


def _prefer_sources() -> None:
    loaded = [m for m in BUILT_MODULES if m in sys.modules]
    if loaded:  # too late to choose: something imported them before this package
        raise ImportError(f"hot modules imported before httpscale.dataplane decided: {loaded}")
    if not any(isinstance(f, _SourceFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _SourceFinder())


class _Gate:
    """First on `sys.meta_path` until the build is decided: the import of a built module
    decides it, then that module is found by whatever the decision left in place."""

    @staticmethod
    def find_spec(
        name: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if name not in BUILT_MODULES:
            return None
        active()  # takes the gate away; puts _SourceFinder first when the source must run
        # Search again from the start rather than letting the import system go on past this
        # finder: the list changed under it, and the finder just put first must be asked.
        for finder in sys.meta_path:
            find_spec = getattr(finder, "find_spec", None)
            if find_spec is not None and (spec := find_spec(name, path, target)) is not None:
                assert isinstance(spec, importlib.machinery.ModuleSpec)
                return spec
        return None


_active: Dataplane | None = None


def install_gate() -> None:
    """Have the first import of a built module decide the build (`import httpscale` does this).
    Cheap: nothing is read until a built module is imported."""
    if _active is None and not any(isinstance(f, _Gate) for f in sys.meta_path):
        sys.meta_path.insert(0, _Gate())


def active() -> Dataplane:
    """The build this process runs: decided once, at the first import of a built module or
    at the first call, whichever comes first."""
    global _active
    if _active is None:
        sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _Gate)]
        _active = check()
    return _active
