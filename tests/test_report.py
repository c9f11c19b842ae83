"""Tests for the report (results/report.py and the table modules) on synthetic records.

The report aggregates seeds with the mean and the sample standard deviation (ddof=1); the expected
strings below are computed with numpy using the same ddof.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from results.frame import records_frame
from results.record import Metric, RunRecord
from results.render import render_latex, render_markdown
from results.report import write_report
from results.tables import comparison_tables

KEY = ("cifar10", "vgg16", "trades")
SEEDS = (0, 1)
SPARSITIES = (0.9, 0.95, 0.999)
METHODS = ("lwm", "hydra")
FAILED_CELL = ("lwm", 0.999)
EVAL_DESC = "PGD-20, eps 0.031, 500 test examples"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _record(method: str, sparsity: float, seed: int, clean: float | None, pgd: float | None, **extra) -> RunRecord:
    measured = (("clean", clean), ("pgd", pgd), ("fgsm", 0.5))
    record = {
        "key": f"{method}-{sparsity}-{seed}",
        "dataset": KEY[0],
        "arch": KEY[1],
        "objective": KEY[2],
        "method": method,
        "scope": "layer",
        "sparsity": sparsity,
        "sparsity_actual": sparsity + 1.234567890123e-4 if sparsity else 0.0,
        "seed": seed,
        "preset": "smoke",
        "status": "done",
        "error": None,
        "metrics": [Metric(evaluator, "acc", value) for evaluator, value in measured if value is not None],
        "eval_desc": EVAL_DESC,
    }
    record.update(extra)
    return RunRecord(**record)


def _column(record: RunRecord, column: str) -> float | None:
    return record.by_column().get(column) if column.endswith("_acc") else getattr(record, column)


def _accuracies(method: str, sparsity: float, seed: int) -> tuple[float, float]:
    """Deterministic, irregular accuracies so means/stds are not round numbers."""
    base = 0.85 - 0.4 * sparsity + 0.01 * METHODS.index(method) if method != "dense" else 0.87
    return base + 0.0123456789 * seed, base - 0.25 + 0.0087654321 * seed


@pytest.fixture
def records() -> list[RunRecord]:
    out = []
    for seed in SEEDS:
        out.append(_record("dense", 0.0, seed, *_accuracies("dense", 0.0, seed)))
        for method in METHODS:
            for sparsity in SPARSITIES:
                if (method, sparsity) == FAILED_CELL:
                    out.append(
                        _record(method, sparsity, seed, None, None, status="failed", error="CUDA OOM " * 50)
                    )
                else:
                    out.append(_record(method, sparsity, seed, *_accuracies(method, sparsity, seed)))
    return out


def _expected_cell(method: str, sparsity: float) -> str:
    values = np.array([_accuracies(method, sparsity, s) for s in SEEDS]) * 100
    mean, std = values.mean(axis=0), values.std(axis=0, ddof=1)
    return f"{mean[0]:.1f} ± {std[0]:.1f} / {mean[1]:.1f} ± {std[1]:.1f}"


def test_records_frame_keeps_listed_columns_only(records: list[RunRecord]) -> None:
    frame = records_frame(records)
    assert len(frame) == len(records)
    assert "checkpoint" not in frame and "metrics" not in frame
    assert frame["seed"].tolist() == [r.seed for r in records]


def test_table_shape_labels_and_cells(records: list[RunRecord]) -> None:
    tables = comparison_tables(records_frame(records))
    assert list(tables) == [KEY]
    table = tables[KEY]
    assert table.shape == (2, 4)
    assert list(table.index) == sorted(METHODS)
    assert list(table.columns) == ["0%", "90%", "95%", "99.9%"]
    assert table.loc["hydra", "95%"] == _expected_cell("hydra", 0.95)
    assert table.loc["lwm", "90%"] == _expected_cell("lwm", 0.9)


def test_dense_column_repeats_dense_value(records: list[RunRecord]) -> None:
    table = comparison_tables(records_frame(records))[KEY]
    assert (table["0%"] == _expected_cell("dense", 0.0)).all()


def test_failed_and_missing_cells(records: list[RunRecord]) -> None:
    records = [r for r in records if not (r.method == "hydra" and r.sparsity == 0.9)]
    records.append(_record("hydra", 0.9, 0, None, None, status="running"))
    table = comparison_tables(records_frame(records))[KEY]
    assert table.loc["lwm", "99.9%"] == "failed"
    assert table.loc["hydra", "90%"] == "–"


def test_single_seed_has_no_std(records: list[RunRecord]) -> None:
    table = comparison_tables(records_frame([r for r in records if r.seed == 0]))[KEY]
    clean, pgd = _accuracies("hydra", 0.9, 0)
    assert table.loc["hydra", "90%"] == f"{clean * 100:.1f} / {pgd * 100:.1f}"


def test_mixed_scopes_label_rows(records: list[RunRecord]) -> None:
    records.append(_record("hydra", 0.9, 0, 0.5, 0.3, scope="global"))
    table = comparison_tables(records_frame(records))[KEY]
    assert list(table.index) == ["hydra (global)", "hydra (layer)", "lwm (layer)"]
    assert table.loc["hydra (global)", "90%"] == "50.0 / 30.0"


def test_none_metrics_do_not_crash(records: list[RunRecord], tmp_path: Path) -> None:
    records.append(_record("hydra", 0.9, 2, None, None, metrics=[]))
    records.append(_record("dense", 0.0, 3, None, None, metrics=[]))
    records.append(_record("snip", 0.9, 0, None, None))
    text = write_report(records, tmp_path)
    table = comparison_tables(records_frame(records))[KEY]
    assert table.loc["snip", "90%"] == "– / –"
    assert table.loc["snip", "95%"] == "–"
    assert "| snip |" in text


def test_markdown_has_heading_caption_and_rows(records: list[RunRecord]) -> None:
    table = comparison_tables(records_frame(records))[KEY]
    markdown = render_markdown(KEY, table, "my caption")
    lines = markdown.splitlines()
    assert lines[0] == "### cifar10 · vgg16 · trades"
    assert "my caption" in lines
    assert "| method | 0% | 90% | 95% | 99.9% |" in lines
    for method in METHODS:
        assert sum(line.startswith(f"| {method} |") for line in lines) == 1


def test_latex_is_escaped() -> None:
    table = pd.DataFrame({"90%": ["1.0 ± 0.1 / 2.0"]}, index=pd.Index(["my_method & co"], name="method"))
    latex = render_latex(table)
    assert r"\begin{tabular}" in latex
    assert r"my\_method \& co" in latex
    assert r"90\%" in latex
    assert r"$\pm$" in latex and "±" not in latex


def test_write_report_files(records: list[RunRecord], tmp_path: Path) -> None:
    out_dir = tmp_path / "report"
    text = write_report(records, out_dir)
    stem = out_dir / "cifar10_vgg16_trades"
    for suffix in (".md", ".csv", ".tex", ".png"):
        assert stem.with_suffix(suffix).stat().st_size > 0
    assert stem.with_suffix(".png").read_bytes()[:8] == PNG_MAGIC
    assert not list(out_dir.glob(".*.tmp"))
    assert "### cifar10 · vgg16 · trades" in text
    assert f"robust = {EVAL_DESC}; mean ± std over 2 seeds" in text
    table_csv = pd.read_csv(stem.with_suffix(".csv"), index_col=0)
    assert list(table_csv.index) == sorted(METHODS)


def test_results_csv_full_precision(records: list[RunRecord], tmp_path: Path) -> None:
    write_report(records, tmp_path)
    frame = pd.read_csv(tmp_path / "results.csv")
    assert len(frame) == len(records)
    for column in ("clean_acc", "pgd_acc", "sparsity_actual"):
        expected = [np.nan if _column(r, column) is None else _column(r, column) for r in records]
        np.testing.assert_array_equal(frame[column].to_numpy(), np.array(expected, dtype=float))
    assert set(frame["status"]) == {"done", "failed"}


def test_failed_runs_listed_with_truncated_error(records: list[RunRecord], tmp_path: Path) -> None:
    text = write_report(records, tmp_path)
    failure_lines = [line for line in text.splitlines() if line.startswith("- ")]
    assert "Failed runs:" in text
    assert len(failure_lines) == len(SEEDS)
    for line in failure_lines:
        assert "lwm" in line and "99.9%" in line
        error = line.split(": ", 1)[1]
        assert error.startswith("CUDA OOM") and len(error) == 200


def test_empty_records(tmp_path: Path) -> None:
    assert write_report([], tmp_path) == "No runs.\n"
    assert (tmp_path / "results.csv").exists()
