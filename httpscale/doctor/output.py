"""Findings as people read them (grouped text) and as scripts read them (JSON).

Text: one block per section in `SECTIONS` order; per subject one line when everything about it
is fine (its messages joined), else a line with its worst mark and one line per finding under
it, each failure and warning followed by its fix. Marks: ✓ ok, ! warning, ✗ failure, · info
(ASCII `ok`/`!!`/`XX`/`--` where the terminal cannot print those).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TypedDict

import click

from httpscale.doctor.findings import (
    SECTIONS,
    Finding,
    FindingJSON,
    Status,
    exit_code,
    section_of,
)

__all__ = ["ReportJSON", "format_json", "format_text", "summary"]

_MARKS = {Status.OK: "✓", Status.WARN: "!", Status.FAIL: "✗", Status.INFO: "·"}
_ASCII = {Status.OK: "ok", Status.WARN: "!!", Status.FAIL: "XX", Status.INFO: "--"}
_COLORS = {Status.OK: "green", Status.WARN: "yellow", Status.FAIL: "red", Status.INFO: None}
_RANK = {Status.OK: 0, Status.INFO: 1, Status.WARN: 2, Status.FAIL: 3}


class ReportJSON(TypedDict):
    ok: bool  # nothing failed (the exit code is 0)
    target: str  # what was checked: the cluster and namespace, or the config file
    summary: dict[str, int]  # findings per status
    findings: list[FindingJSON]


def summary(findings: Sequence[Finding]) -> dict[str, int]:
    return {s.value: sum(1 for f in findings if f.status is s) for s in Status}


def format_json(findings: Sequence[Finding], target: str) -> str:
    report: ReportJSON = {"ok": exit_code(findings) == 0, "target": target,
                          "summary": summary(findings),
                          "findings": [f.to_json() for f in findings]}
    return json.dumps(report, indent=2, ensure_ascii=False)


def format_text(findings: Sequence[Finding], target: str, *, unicode: bool = True,
                color: bool = False) -> str:
    marks = _MARKS if unicode else _ASCII

    def mark(status: Status) -> str:
        text = marks[status]
        fg = _COLORS[status]
        return click.style(text, fg=fg, bold=status is Status.FAIL) if color and fg else text

    lines = [f"httpscale doctor: {target}"]
    order = list(SECTIONS)
    sections = sorted({section_of(f) for f in findings},
                      key=lambda s: order.index(s) if s in order else len(order))
    for section in sections:
        lines += ["", SECTIONS.get(section, section)]
        subjects: dict[str, list[Finding]] = {}
        for f in findings:
            if section_of(f) == section:
                subjects.setdefault(f.subject, []).append(f)
        for subject, group in subjects.items():
            worst = max((f.status for f in group), key=_RANK.__getitem__)
            if _RANK[worst] <= _RANK[Status.INFO]:
                lines.append(f"  {mark(worst)} {subject}: "
                             + "; ".join(f.message for f in group))
                continue
            if len(group) == 1:
                lines.append(f"  {mark(worst)} {subject}: {group[0].message}")
                if group[0].fix:
                    lines.append(f"      fix: {group[0].fix}")
                continue
            lines.append(f"  {mark(worst)} {subject}")
            for f in group:
                lines.append(f"      {mark(f.status)} {f.message}")
                if f.fix and f.status in (Status.WARN, Status.FAIL):
                    lines.append(f"        fix: {f.fix}")
    counts = summary(findings)
    lines += ["", f"{counts['ok']} ok, {counts['warn']} warning(s), {counts['fail']} "
                  f"failure(s), {counts['info']} note(s)"]
    return "\n".join(lines)
