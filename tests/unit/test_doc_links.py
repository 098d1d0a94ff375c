"""Every relative link in the Markdown docs points at something that exists.

Docs drift when files move or headings change; this keeps README.md, CHANGELOG.md and docs/*.md
honest: each relative link (Markdown or an HTML `src`/`href`) must name an existing file or
directory, and a `#fragment` into a Markdown file must match one of its headings as GitHub
renders them.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted([ROOT / "README.md", ROOT / "CHANGELOG.md", *(ROOT / "docs").glob("*.md")])

# [text](target) or [text](target "title"); images too. Nested brackets in the text are rare
# enough in these docs that a lazy match is right.
MD_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HTML_LINK = re.compile(r"""\b(?:src|href)\s*=\s*["']([^"']+)["']""")
FENCE = re.compile(r"^\s*(```|~~~)")
INLINE_CODE = re.compile(r"`[^`]*`")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def _unfenced(text: str) -> list[tuple[int, str]]:
    """(line number, line) of the lines outside fenced code blocks."""
    lines, fenced = [], False
    for number, line in enumerate(text.splitlines(), start=1):
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced:
            lines.append((number, line))
    return lines


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading: its text
    text = text.replace("`", "").strip().lower()
    kept = "".join(
        ch for ch in text
        if ch in " -_" or unicodedata.category(ch)[0] in "LN"
    )
    return kept.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every anchor GitHub gives `path`'s headings (repeated headings get -1, -2, ...)."""
    seen: dict[str, int] = {}
    out: set[str] = set()
    for _, line in _unfenced(path.read_text(encoding="utf-8")):
        match = HEADING.match(line)
        if match is None:
            continue
        slug = _slug(match.group(2))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        out.add(slug if count == 0 else f"{slug}-{count}")
    return out


def relative_links(path: Path) -> list[tuple[int, str]]:
    """(line number, target) of every link in `path` that stays inside the repository."""
    found = []
    for number, raw in _unfenced(path.read_text(encoding="utf-8")):
        line = INLINE_CODE.sub("", raw)  # a link in inline code is text, not a link
        for target in [*MD_LINK.findall(line), *HTML_LINK.findall(line)]:
            if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):
                continue  # https:, mailto: and the like: not ours to check offline
            found.append((number, target))
    return found


def broken(path: Path, target: str) -> str | None:
    """Why `target`, linked from `path`, does not resolve; None when it does."""
    file_part, _, fragment = target.partition("#")
    dest = path if not file_part else (path.parent / file_part).resolve()
    if not dest.exists():
        return f"{file_part} does not exist"
    if ROOT not in dest.parents and dest != ROOT:
        return f"{file_part} is outside the repository"
    if fragment and dest.suffix == ".md" and fragment not in anchors(dest):
        return f"{dest.relative_to(ROOT)} has no heading with anchor #{fragment}"
    return None


def test_the_docs_have_links_to_check() -> None:
    # Guards the checker itself: a regex that matched nothing would pass every doc.
    assert (ROOT / "README.md") in DOCS and len(DOCS) > 5
    assert sum(len(relative_links(doc)) for doc in DOCS) > 50


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(doc: Path) -> None:
    problems = [
        f"{doc.relative_to(ROOT)}:{number}: ({target}) {why}"
        for number, target in relative_links(doc)
        if (why := broken(doc, target)) is not None
    ]
    assert not problems, "\n".join(problems)


def test_the_checker_catches_a_missing_file_and_a_missing_anchor() -> None:
    # The checker on a doc of its own: each kind of breakage is reported, a good link is not.
    doc = ROOT / "docs" / "benchmarks.md"
    assert broken(doc, "interceptor.md#the-compiled-hot-path-mypyc") is None
    assert broken(doc, "../README.md") is None
    assert broken(doc, "no-such-file.md") == "no-such-file.md does not exist"
    assert "no heading with anchor #no-such-heading" in (
        broken(doc, "interceptor.md#no-such-heading") or ""
    )
    assert _slug("Operator: apply → ScaledObject, 1,000 HTTPScaledObjects") == (
        "operator-apply--scaledobject-1000-httpscaledobjects"
    )
    assert _slug("Instant activation: `/wake`") == "instant-activation-wake"
