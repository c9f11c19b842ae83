"""The report's HTML page: valid HTML5, self-contained, every table and plot of the grid in it with its caption,
the best cell per sparsity in bold; and (where Debian's chromium is installed, as .ci/run does) it loads in a
real headless browser without errors, every image decoded, nothing fetched but the page itself."""

from __future__ import annotations

import base64
import re
from html.parser import HTMLParser
from pathlib import Path

import html5lib
import pandas as pd
import pytest
from chromium_page import available, load
from report_grid import grid_records

from results.html import anchor
from results.report import write_report

STEM = "digits_cnn-small_trades"
TABLES = ["comparison", "paired differences", "attacks", "certified", "verified", "weights kept per layer", "cost",
          "eps sweep"]
PLOTS = {"accuracy against sparsity": "", "certified accuracy": "_certified", "verified accuracy": "_verified",
         "accuracy against compute": "_compute", "robust accuracy against eps": "_eps"}


class Page(HTMLParser):
    """What the page holds: ids, links, image sources, and per table its caption text and bold cells."""

    def __init__(self) -> None:
        super().__init__()
        self.ids, self.links, self.images, self.tables = [], [], {}, {}
        self._table, self._in_caption, self._in_strong = None, False, False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if "id" in a:
            self.ids.append(a["id"])
        if tag == "a":
            self.links.append(a.get("href"))
        if tag == "img":
            self.images[self._figure] = a["src"]
        if tag == "figure":
            self._figure = a["id"]
        if tag == "table":
            self._table = a["id"]
            self.tables[self._table] = {"caption": "", "bold": []}
        self._in_caption |= tag == "caption"
        self._in_strong |= tag == "strong" and self._table is not None and not self._in_caption

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._table = None
        self._in_caption &= tag != "caption"
        self._in_strong &= tag != "strong"

    def handle_data(self, data: str) -> None:
        if self._table is not None and self._in_caption:
            self.tables[self._table]["caption"] += data
        elif self._in_strong:
            self.tables[self._table]["bold"].append(data)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("report")
    write_report(grid_records(), folder)
    return folder


def parsed(folder: Path) -> Page:
    page = Page()
    page.feed((folder / "index.html").read_text())
    return page


def test_the_page_is_valid_html5(report):
    text = (report / "index.html").read_text()
    html5lib.HTMLParser(strict=True).parse(text)  # raises on any parse error
    page = parsed(report)
    assert len(page.ids) == len(set(page.ids))
    with pytest.raises(html5lib.html5parser.ParseError):  # the validator does fail on broken markup
        html5lib.HTMLParser(strict=True).parse(text.replace("</caption>", "</td></caption>", 1))


def test_the_page_holds_every_table_and_plot_with_captions(report):
    page = parsed(report)
    assert list(page.tables) == [anchor(STEM, t) for t in TABLES]
    for table in page.tables.values():  # attacks, their order, examples and preset in every caption
        assert "PGD-5, step 0.05 then AutoAttack apgd-ce; 128 test examples" in table["caption"]
        assert "preset smoke; 2 seeds" in table["caption"]
    assert set(page.images) == {anchor(STEM, title) for title in PLOTS}
    for title, suffix in PLOTS.items():  # each plot embedded, byte for byte the PNG written beside the page
        src = page.images[anchor(STEM, title)]
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]) == (report / f"{STEM}{suffix}.png").read_bytes()
    contents = [link for link in page.links if link.startswith("#")]
    assert {link[1:] for link in contents} <= set(page.ids) and len(contents) >= len(TABLES) + len(PLOTS)
    assert not re.search(r"""(src|href)=["'](?!data:|#)""", (report / "index.html").read_text())  # nothing else


def test_the_best_robust_cell_per_sparsity_is_bold_and_the_flags_are_explained(report):
    page = parsed(report)
    bold = page.tables[anchor(STEM, "comparison")]["bold"]
    comparison = pd.read_csv(report / f"{STEM}.csv", index_col=0)
    assert bold == list(comparison.loc["hydra", ["90%", "99%"]])  # the grid's hydra is the more robust method
    text = (report / "index.html").read_text()
    assert "lwm 99% seed 1: <strong>black_box</strong>: Square broke 9 of 100" in text
    assert "<code>black_box</code>: Square, which needs no gradients" in text


def test_an_empty_store_still_gives_a_valid_page(tmp_path):
    write_report([], tmp_path)
    html5lib.HTMLParser(strict=True).parse((tmp_path / "index.html").read_text())
    assert "No runs." in (tmp_path / "index.html").read_text()


@pytest.mark.skipif(not available(), reason="needs Debian's chromium (.ci/run installs it)")
def test_the_page_loads_in_headless_chromium_without_errors(report):
    seen = load(report / "index.html")
    assert seen.errors == []
    assert seen.requests[0] == (report / "index.html").resolve().as_uri()
    assert all(url.startswith("data:image/png") for url in seen.requests[1:])
    assert seen.state["tables"] == [anchor(STEM, t) for t in TABLES]
    assert len(seen.state["images"]) == len(PLOTS)
    assert all(image["complete"] and image["width"] > 0 for image in seen.state["images"])
    assert seen.state["brokenLinks"] == []


@pytest.mark.skipif(not available(), reason="needs Debian's chromium (.ci/run installs it)")
def test_the_browser_check_sees_a_broken_page(tmp_path):
    page = tmp_path / "broken.html"
    page.write_text('<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>t</title></head><body>'
                    '<img src="missing.png" alt="x"><a href="#nowhere">x</a></body></html>')
    seen = load(page)
    assert any("ERR_FILE_NOT_FOUND" in error for error in seen.errors)
    assert seen.state["images"][0]["width"] == 0 and seen.state["brokenLinks"] == ["#nowhere"]
