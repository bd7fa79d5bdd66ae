"""A griffe extension for the API reference: reST constructs in docstrings become Markdown.

The docstrings are written with Sphinx-style roles (``:class:`~charivo_fsm.X```,
``:func:`tool```, ``:data:`NAME```) and the odd reST simple table.  MkDocs renders
Markdown, where those would show as raw text; this extension rewrites each role to
inline code (``~`` keeps only the last dotted component, as in Sphinx) and each simple
table to a Markdown table, before the docstring is parsed.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(
    r":(?:py:)?(?:class|func|meth|data|mod|attr|exc|obj|const|ref|term):`(~?)([^`]+)`"
)


def _replace(match: re.Match[str]) -> str:
    tilde, target = match.groups()
    text = target.rsplit(".", 1)[-1] if tilde else target
    return f"`{text}`"


def rewrite_roles(text: str) -> str:
    """``:class:`~a.b.C``` -> ```C```; ``:func:`f``` -> ```f```."""
    return _ROLE.sub(_replace, text)


_BORDER = re.compile(r"^(\s*)(=+(?: +=+)+)\s*$")


def _columns(border: str) -> list[tuple[int, int]]:
    return [(m.start(), m.end()) for m in re.finditer(r"=+", border)]


def _cells(line: str, spans: list[tuple[int, int]]) -> list[str]:
    cells = []
    for index, (start, _end) in enumerate(spans):
        stop = spans[index + 1][0] if index + 1 < len(spans) else len(line)
        cells.append(line[start:stop].strip())
    return cells


def rewrite_tables(text: str) -> str:
    """Turn reST simple tables (``===`` borders, a header row) into Markdown tables."""
    lines = text.splitlines()
    out: list[str] = []
    index = 0
    while index < len(lines):
        top = _BORDER.match(lines[index])
        if top is None:
            out.append(lines[index])
            index += 1
            continue
        spans = _columns(lines[index])
        rows: list[list[str]] = []
        borders = 1
        end = index + 1
        while end < len(lines) and borders < 3:
            line = lines[end]
            if _BORDER.match(line):
                borders += 1
            elif line.strip():
                cells = _cells(line, spans)
                if rows and not cells[0] and borders == 2:
                    rows[-1] = [f"{a} {b}".strip() for a, b in zip(rows[-1], cells, strict=True)]
                else:
                    rows.append(cells)
            end += 1
        if borders < 3 or len(rows) < 1:
            out.append(lines[index])
            index += 1
            continue
        def row(cells: list[str]) -> str:
            return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"
        out.append("")
        out.append(row(rows[0]))
        out.append("|" + "---|" * len(spans))
        out.extend(row(cells) for cells in rows[1:])
        out.append("")
        index = end
    return "\n".join(out)


class SphinxRoles(griffe.Extension):
    """Rewrite Sphinx roles in every docstring griffe loads."""

    def _fix(self, obj: griffe.Object | griffe.Alias) -> None:
        docstring = obj.docstring
        if docstring is None:
            return
        value = docstring.value
        if ":`" in value:
            value = rewrite_roles(value)
        if "==" in value:
            value = rewrite_tables(value)
        docstring.value = value

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        self._fix(obj)
