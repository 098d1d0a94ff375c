"""One self-contained HTML page: inline style, inline SVG charts, no script, nothing fetched.

Shared by the cost report and the load-test report (loadtests/report.py), so both look
alike and both open from a file, a mail attachment or a CI artifact without a network.
"""

from __future__ import annotations

from collections.abc import Sequence

from httpscale.report.svg import escape

__all__ = ["html_page", "html_table"]

_STYLE = """
body { font-family: sans-serif; margin: 24px; color: #222222; background: #ffffff; }
h1 { font-size: 20px; margin: 0 0 4px 0; }
h2 { font-size: 16px; margin: 28px 0 6px 0; }
p.meta { color: #555555; margin: 2px 0; font-size: 13px; }
table { border-collapse: collapse; margin: 8px 0 16px 0; font-size: 13px; }
th, td { border: 1px solid #dddddd; padding: 3px 8px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f3f3f3; }
figure { margin: 8px 0 20px 0; }
figcaption { color: #555555; font-size: 12px; max-width: 880px; }
"""


def html_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def html_page(title: str, meta: Sequence[str], body: Sequence[str]) -> str:
    """`body` parts are trusted HTML (charts, tables built here); `title` and `meta` are
    text and escaped."""
    lines = "".join(f'<p class="meta">{escape(m)}</p>' for m in meta)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head>\n"
        f"<body><h1>{escape(title)}</h1>{lines}\n" + "\n".join(body) + "\n</body></html>\n"
    )
