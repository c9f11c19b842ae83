"""Tables as text: GitHub-flavoured markdown with a heading and caption, and LaTeX (booktabs)."""

from __future__ import annotations

from collections.abc import Hashable, Iterable

import pandas as pd

from results.blocks import Section


def section_markdown(section: Section) -> str:
    """A section's tables in order: the first under ``### <key>``, the others under ``#### <title>: <key>``, each
    followed by its notes. Plots are files beside it, not part of the text."""
    parts = []
    for i, table in enumerate(section.tables()):
        heading = "###" if i == 0 else f"#### {table.title}:"
        parts.append(render_markdown(section.key, table.frame, table.caption, heading=heading))
        if table.notes:
            parts.append("\n".join(table.notes))
    return "\n\n".join(parts)


def render_markdown(key: tuple[str, ...], table: pd.DataFrame, caption: str, heading: str = "###") -> str:
    """Heading, caption and a GitHub-flavoured markdown table (first column = row labels)."""
    header = [table.index.name or "method", *map(str, table.columns)]
    lines = [
        f"{heading} {' · '.join(map(str, key))}",
        "",
        caption,
        "",
        _markdown_row(header),
        _markdown_row([":---", *[":---:"] * len(table.columns)]),
    ]
    lines += [_markdown_row(row) for row in table.itertuples(index=True, name=None)]
    return "\n".join(lines)


def _markdown_row(cells: Iterable[Hashable]) -> str:
    return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"


def render_latex(table: pd.DataFrame) -> str:
    """A booktabs ``tabular`` with all text LaTeX-escaped; ± and – become ``$\\pm$`` and ``--``."""
    flat = table.reset_index()
    flat.columns.name = None
    styler = flat.style.hide(axis="index").format(escape="latex").format_index(escape="latex", axis=1)
    latex = styler.to_latex(column_format="l" + "c" * len(table.columns), hrules=True)
    return latex.replace("±", r"$\pm$").replace("–", "--")
