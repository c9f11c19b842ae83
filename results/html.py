"""The report as one self-contained HTML page (index.html): inline CSS, plots embedded as base64 PNG, no script
and no reference to any other file or host, so it opens anywhere without a network.

It renders the sections of `results.blocks` generically: a table of contents, then per table key its tables (each
caption followed by the section's evaluation, preset and seeds), the notes after them, its plots, and which
published settings matched; failed runs last. A new table or plot in a section needs no change here.
"""

from __future__ import annotations

import base64
import re
import struct
from collections.abc import Iterable
from html import escape

import pandas as pd

from results.blocks import Plot, Section, Table

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1b1b1b; margin: 0 auto;
       max-width: 1180px; padding: 0 24px 48px; }
h1 { margin: 24px 0 4px; } h2 { margin-top: 40px; border-bottom: 2px solid #ddd; padding-bottom: 4px; }
h3 { margin: 24px 0 6px; font-size: 15px; }
nav ol { padding-left: 20px; margin: 4px 0; } nav li { margin: 1px 0; }
.context { color: #555; }
table { border-collapse: collapse; margin: 8px 0 4px; min-width: 720px; font-variant-numeric: tabular-nums; }
caption { caption-side: top; text-align: left; padding: 4px 0 6px; color: #333; max-width: 1100px; }
caption .name { font-weight: 600; color: #000; }
caption .context { display: block; font-size: 12px; margin-top: 2px; }
th, td { border: 1px solid #d4d4d4; padding: 3px 8px; text-align: center; white-space: nowrap; }
th { background: #f2f2f2; } td:first-child, th:first-child { text-align: left; }
td.published { white-space: normal; text-align: left; font-size: 12px; min-width: 260px; }
tbody tr:nth-child(even) { background: #fafafa; }
figure { margin: 14px 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #555; font-size: 12px; }
.notes { margin: 6px 0 12px; } .notes ul { margin: 2px 0; padding-left: 20px; }
code { background: #f3f3f3; padding: 0 3px; border-radius: 3px; }
"""


def render_page(sections: list[Section], failures: list[str], title: str = "rpbench report") -> str:
    """The whole page."""
    body = [f"<h1>{escape(title)}</h1>",
            f'<p class="context">{_summary(sections)}</p>',
            _contents(sections, failures),
            *(_section(s) for s in sections)]
    if failures:
        body.append(f'<section id="failed"><h2>Failed runs</h2>{_notes(failures)}</section>')
    if not sections:
        body.append("<p>No runs.</p>")
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
            + "\n".join(body) + "\n</body>\n</html>\n")


def _summary(sections: list[Section]) -> str:
    compared = sum(any(": compared," in v for v in s.published) for s in sections)
    return (f"{len(sections)} table keys (dataset · arch · objective); published numbers compared in {compared} of "
            f"them (see each key's “published numbers”). Accuracies in %, mean ± sample std over seeds; "
            f"<strong>bold</strong>: the best robust accuracy at each sparsity.")


def anchor(*parts: str) -> str:
    """An id from the section's stem and a block's title ("digits_cnn-small_trades", "eps sweep" ->
    "digits_cnn-small_trades--eps-sweep")."""
    return "--".join(re.sub(r"[^A-Za-z0-9_.-]+", "-", p).strip("-") for p in parts)


def _contents(sections: list[Section], failures: list[str]) -> str:
    items = []
    for s in sections:
        inner = "".join(f'<li><a href="#{anchor(s.stem, b.title)}">{escape(b.title)}</a></li>' for b in s.blocks)
        inner += f'<li><a href="#{anchor(s.stem, "published")}">published numbers</a></li>'
        items.append(f'<li><a href="#{anchor(s.stem)}">{escape(s.title)}</a><ol>{inner}</ol></li>')
    if failures:
        items.append('<li><a href="#failed">Failed runs</a></li>')
    return f'<nav id="contents"><h2>Contents</h2><ol>{"".join(items)}</ol></nav>'


def _section(section: Section) -> str:
    parts = [f'<section id="{anchor(section.stem)}">', f"<h2>{escape(section.title)}</h2>",
             f'<p class="context">{escape(section.context)}</p>']
    for block in section.blocks:
        parts.append(_table(section, block) if isinstance(block, Table) else _plot(section, block))
    parts.append(f'<h3 id="{anchor(section.stem, "published")}">published numbers</h3>{_notes(section.published)}')
    parts.append("</section>")
    return "\n".join(parts)


def _table(section: Section, table: Table) -> str:
    frame = table.frame
    bold = table.bold if table.bold is not None else pd.DataFrame(False, index=frame.index, columns=frame.columns)
    header = "".join(f"<th>{escape(str(c))}</th>" for c in [frame.index.name or "method", *frame.columns])
    rows = []
    for position, (label, row) in enumerate(frame.iterrows()):
        cells = [f"<td>{escape(str(label))}</td>"]
        for j, (column, value) in enumerate(row.items()):  # by position: a table may repeat a label ("0%")
            text = escape(str(value))
            strong = j < bold.shape[1] and bold.columns[j] == column and bool(bold.iat[position, j])
            css = ' class="published"' if column == "published" else ""
            cells.append(f"<td{css}>{f'<strong>{text}</strong>' if strong else text}</td>")
        rows.append(f"<tr>{''.join(cells)}</tr>")
    caption = (f'<caption><span class="name">{escape(table.title)}</span>: {_inline(table.caption)}'
               f'<span class="context">{escape(section.context)}</span></caption>')
    notes = f'<div class="notes">{_notes(table.notes)}</div>' if table.notes else ""
    return (f'<table id="{anchor(section.stem, table.title)}">{caption}<thead><tr>{header}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table>{notes}")


def _plot(section: Section, plot: Plot) -> str:
    width, height = png_size(plot.png)
    data = base64.b64encode(plot.png).decode("ascii")
    return (f'<figure id="{anchor(section.stem, plot.title)}"><img src="data:image/png;base64,{data}" '
            f'width="{width}" height="{height}" alt="{escape(plot.title)}: {escape(section.title)}">'
            f"<figcaption>{escape(plot.title)}: {_inline(plot.caption)}</figcaption></figure>")


def png_size(png: bytes) -> tuple[int, int]:
    """Width and height from a PNG's header (its IHDR chunk)."""
    if png[:8] != b"\x89PNG\r\n\x1a\n" or png[12:16] != b"IHDR":
        raise ValueError("not a PNG image")
    return struct.unpack(">II", png[16:24])


def _notes(lines: Iterable[str]) -> str:
    """Markdown-like lines: runs of "- " lines become a list, other lines paragraphs."""
    out, items = [], []
    for line in lines:
        if line.startswith("- "):
            items.append(f"<li>{_inline(line[2:])}</li>")
            continue
        if items:
            out.append(f"<ul>{''.join(items)}</ul>")
            items = []
        out.append(f"<p>{_inline(line)}</p>")
    if items:
        out.append(f"<ul>{''.join(items)}</ul>")
    return "".join(out)


def _inline(text: str) -> str:
    """Escaped text with Markdown's **bold** and `code`."""
    text = escape(text)
    text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
