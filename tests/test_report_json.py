"""`report --format`: the JSON lines round-trip to the very records, with the threat model and cost a
leaderboard reads; the command's formats; and every self-check the evaluation can fire is explained."""

from __future__ import annotations

import ast
import io
import json
from pathlib import Path

import pytest
from PIL import Image
from report_grid import grid_records

from benchmark import cli
from results import plots, report
from results.attack_tables import CHECK_MEANINGS
from results.leaderboard import read_jsonl
from results.record import Metric
from results.store import Store

ROOT = Path(__file__).resolve().parents[1]


def test_json_lines_round_trip_with_full_precision(tmp_path):
    records = grid_records(seeds=(0,))
    records[1].metrics[0] = Metric("clean", "acc", 1 / 3 + 1e-15)
    assert report.write_report(records, tmp_path, formats=["json"]) == ""  # no tables built, no plots drawn
    assert [p.name for p in tmp_path.iterdir() if p.is_file()] == ["runs.jsonl"]
    assert read_jsonl(tmp_path / "runs.jsonl") == records
    line = json.loads((tmp_path / "runs.jsonl").read_text().splitlines()[1])
    assert line["threat_model"] == {"norm": "linf", "eps": 0.1, "examples": 128, "sigma": 0.25}
    assert line["metrics_by_column"]["clean_acc"] == 1 / 3 + 1e-15 != 1 / 3
    assert line["cost_beyond_pretraining"] == {"cost_epochs": 2.0, "cost_passes": 380.0, "cost_seconds": 3.5}
    for field in ("method", "sparsity", "seed", "dataset", "arch", "objective", "versions", "key", "eval_key"):
        assert field in line


def tiny_png(*args, **kwargs) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (2, 2)).save(buffer, "PNG")
    return buffer.getvalue()


def test_report_formats_on_the_command_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(plots, "render", tiny_png)  # about the files and what is printed, not the drawing
    store = Store(tmp_path / "runs.db")
    for record in grid_records(seeds=(0,), sparsities=(0.9,)):
        store.put(record)
    assert cli.main(["report", "--out", str(tmp_path), "--format", "json"]) == 0
    assert capsys.readouterr().out == f"JSON records: {tmp_path / 'report' / 'runs.jsonl'}\n"
    assert sorted(p.name for p in (tmp_path / "report").iterdir()) == ["runs.jsonl"]
    assert cli.main(["report", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("### digits · cnn-small · trades") and out.endswith(
        f"HTML report: {tmp_path / 'report' / 'index.html'}\n")
    assert (tmp_path / "report" / "index.html").exists() and (tmp_path / "report" / "results.csv").exists()
    with pytest.raises(SystemExit) as exit_code:
        cli.main(["report", "--out", str(tmp_path), "--format", "json,pdf"])
    assert exit_code.value.code == 2 and "unknown format pdf" in capsys.readouterr().err
    assert cli.KNOWN_FORMATS == report.FORMATS and cli.REPORT_FORMATS == report.DEFAULT_FORMATS


def test_every_check_the_evaluation_can_fire_has_its_meaning():
    tree = ast.parse((ROOT / "benchmark" / "evaluation" / "checks.py").read_text())
    names = {node.args[0].value for node in ast.walk(tree) if isinstance(node, ast.Call)
             and getattr(node.func, "id", None) == "check" and isinstance(node.args[0], ast.Constant)}
    assert len(names) >= 7 and names == set(CHECK_MEANINGS)
