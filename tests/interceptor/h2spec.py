"""Runs h2spec (HTTP/2 conformance, github.com/summerwind/h2spec) against a server and reads
its JUnit report: the binary from `scripts/tools h2spec` (built once from its Go module, cached
under ~/.cache/httpscale), bounded in time, stopped on any way out."""

from __future__ import annotations

import asyncio
import contextlib
import re
import subprocess
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

__all__ = ["H2specFailure", "H2specReport", "h2spec_binary", "parse_junit", "run_h2spec"]

ROOT = Path(__file__).resolve().parents[2]


def h2spec_binary() -> Path:
    """The cached h2spec, built first if needed (a few seconds with Go's caches warm; scripts/test
    builds it before pytest runs). Raises RuntimeError with the tool's own words if it cannot."""
    done = subprocess.run(
        [str(ROOT / "scripts" / "tools"), "h2spec"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    path = Path(done.stdout.strip()) if done.returncode == 0 else None
    if path is None or not path.is_file():
        raise RuntimeError(f"scripts/tools h2spec failed (exit {done.returncode}): {done.stderr}")
    return path


@dataclass(frozen=True, slots=True)
class H2specFailure:
    package: str  # "http2/3.5", "hpack/4.2", "generic/1", ...
    section: str  # "3.5. HTTP/2 Connection Preface"
    case: str  # "Sends invalid connection preface"
    saw: str  # h2spec's expected frames, then what it got, joined by " / "

    def __str__(self) -> str:
        return f"{self.package} {self.section}: {self.case}: {self.saw}"


@dataclass(frozen=True, slots=True)
class H2specReport:
    total: int
    failed: list[H2specFailure]
    skipped: int
    output: str  # h2spec's console output, for a failure message

    @property
    def passed(self) -> int:
        return self.total - len(self.failed) - self.skipped


_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f]")


def parse_junit(text: str) -> tuple[int, list[H2specFailure], int]:
    """(cases, failed cases, skipped cases) of an h2spec JUnit report. h2spec reports a failed
    case as an <error> child (its suites' `failures` attribute stays 0), so both count."""
    # A failed case's message may quote frame bytes (a PING's opaque data) that XML does not
    # allow: dropped, so that the report still names every failed case.
    root = ET.fromstring(_XML_INVALID.sub("", text))
    total, skipped, failed = 0, 0, []
    for suite in root.iter("testsuite"):
        for case in suite.iter("testcase"):
            total += 1
            if case.find("skipped") is not None:
                skipped += 1
                continue
            bad = case.find("error")
            if bad is None:
                bad = case.find("failure")
            if bad is not None:
                saw = " / ".join(line for line in (bad.text or "").splitlines() if line)
                failed.append(H2specFailure(
                    case.get("package", ""), suite.get("name", ""), case.get("classname", ""), saw
                ))
    return total, failed, skipped


async def run_h2spec(
    binary: Path,
    port: int,
    report: Path,
    *,
    tls: bool = False,
    host: str = "127.0.0.1",
    case_timeout: int = 2,
    total_timeout: float = 300.0,
    sections: tuple[str, ...] = (),
) -> H2specReport:
    """h2spec against host:port (TLS without certificate checks when `tls`), every case given
    `case_timeout` seconds to see its expected frame; the whole run bounded by `total_timeout`.
    h2spec exits 1 when a case failed: the report, not the exit status, says which."""
    argv = [str(binary), *sections, "-h", host, "-p", str(port), "-o", str(case_timeout)]
    argv += ["-j", str(report)] + (["-t", "-k"] if tls else [])
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        async with asyncio.timeout(total_timeout):
            out, _ = await proc.communicate()
    except TimeoutError:
        raise RuntimeError(f"h2spec did not finish within {total_timeout:g} s: {argv}") from None
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
    output = out.decode(errors="replace")
    text = _read(report) if proc.returncode in (0, 1) else None
    if text is None:
        raise RuntimeError(f"h2spec exited {proc.returncode} without a report:\n{output}")
    total, failed, skipped = parse_junit(text)
    return H2specReport(total=total, failed=failed, skipped=skipped, output=output)


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None
