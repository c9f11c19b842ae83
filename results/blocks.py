"""The report's content, before any format: per table key a section of titled tables and figures.

`results.report` builds the sections; the Markdown, CSV/LaTeX/PNG files and the HTML page (`results.html`) are
renderings of them. A table added to a section appears in every format without changes to the renderers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property

import pandas as pd

from results.frame import TableKey


@dataclass(frozen=True)
class Table:
    """One titled table. title: its heading, unique in its section ("comparison", "attacks", ...); csv: the
    suffix of its CSV file (``"_attacks"`` -> ``<stem>_attacks.csv``), None for none; bold: True where a cell is
    shown in bold; notes: Markdown lines shown after it (``**bold**`` and ```code``` are understood)."""

    title: str
    caption: str
    frame: pd.DataFrame
    csv: str | None = None
    latex: bool = False
    bold: pd.DataFrame | None = None
    notes: tuple[str, ...] = ()


@dataclass
class Plot:
    """One figure, written as ``<stem><suffix>.png`` and embedded in the page. draw: makes its PNG bytes, called
    once and only when a format needs the image (drawing is most of a report's time)."""

    title: str
    caption: str
    draw: Callable[[], bytes] = field(repr=False)
    suffix: str

    @cached_property
    def png(self) -> bytes:
        return self.draw()


@dataclass
class Section:
    """One table key's report. context: what every table of it shares (evaluation, preset, seeds), repeated in
    each table's caption on the page; published: which published settings matched (see `results.published`)."""

    key: TableKey
    stem: str
    context: str
    blocks: list[Table | Plot] = field(default_factory=list)
    published: list[str] = field(default_factory=list)

    @property
    def title(self) -> str:
        return " · ".join(self.key)

    def tables(self) -> list[Table]:
        return [b for b in self.blocks if isinstance(b, Table)]

    def plots(self) -> list[Plot]:
        return [b for b in self.blocks if isinstance(b, Plot)]
