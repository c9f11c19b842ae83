"""The command line: help everywhere, one-line errors with exit code 2, list, dry-run, run, report."""

from __future__ import annotations

import subprocess
import sys

import pytest

from benchmark.cli import main, parse_settings
from benchmark.grid import resolve
from benchmark.spec import spec_from
from methods import METHODS


@pytest.mark.parametrize("argv", [[], ["run"], ["eval"], ["list"], ["report"]])
def test_every_subcommand_has_help(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--help"])
    assert exit_info.value.code == 0
    assert "usage:" in capsys.readouterr().out


def test_module_entry_point_runs():
    done = subprocess.run([sys.executable, "-m", "benchmark", "list", "presets"], capture_output=True, text=True)
    assert done.returncode == 0 and "paper" in done.stdout


@pytest.mark.parametrize("argv,expected", [
    (["run", "--methods", "hydra,nope"], "unknown method 'nope'; valid: "),
    (["run", "--data", "nope"], "unknown dataset 'nope'; valid: "),
    (["run", "--arch", "nope"], "unknown arch 'nope'; valid: "),
    (["run", "--objective", "nope"], "unknown objective 'nope'; valid: "),
    (["run", "--preset", "nope"], "unknown preset 'nope'; valid: "),
    (["run", "--sparsity", "1.5"], "sparsity must be in [0, 1)"),
    (["run", "--sparsity", "-0.1"], "sparsity must be in [0, 1)"),
    (["run", "--sparsity", "ninety"], "sparsity needs a float, got 'ninety'"),
    (["run", "--set", "pretrain.epoch=3"], "unknown setting 'pretrain.epoch'"),
    (["run", "--set", "pretrain.epochs=many"], "needs an int, got 'many'"),
    (["run", "--methods", "lottery", "--set", "lottery_rate=1.5"], "lottery.rate must be in (0, 1)"),
    (["run", "--set", "pretrain.epochs=2.7"], "needs an int, got 2.7"),
    (["run", "--set", "pretrain.epochs=yes"], "needs an int, got True"),
    (["run", "--set", "pretrain.lr=null"], "pretrain.lr cannot be null"),
    (["run", "--set", "eval.checks=maybe"], "needs a bool, got 'maybe'"),
    (["run", "--set", "pretrain.optimizer=adamw"], "must be one of sgd, adam, got 'adamw'"),
    (["run", "--set", "seed=3"], "'seed' is a grid option, not a setting: use --seeds"),
    (["run", "--set", "dataset=mnist"], "'dataset' is a grid option, not a setting: use --data"),
    (["run", "--set", "admm.rhoo=1"], "unknown setting 'admm.rhoo'; closest: admm.rho"),
    (["run", "--scope", "nope"], "invalid choice"),
    (["run", "--data", "cifar10", "--data-dir", "/nonexistent"], "/nonexistent"),
    (["run", "--data", "digits", "--arch", "vgg16_bn"], "does not support input size 8x8"),
    (["report", "--out", "/nonexistent"], "no store at"),
    (["list", "nope"], "invalid choice"),
])
def test_bad_input_gives_one_line_and_exit_code_2(argv, expected, capsys, tmp_path):
    if argv[0] == "run":
        argv = [*argv, "--out", str(tmp_path)]
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("error: ") and expected in err


def test_unknown_method_lists_the_valid_ones(capsys, tmp_path):
    assert main(["run", "--methods", "nope", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert all(name in err for name in METHODS.names())


def test_list_shows_every_registry_with_a_line_each_and_method_taxonomy(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for heading in ("methods:", "datasets:", "archs:", "objectives:", "presets:"):
        assert heading in out
    for name in METHODS.names():
        line = next(line for line in out.splitlines() if line.strip().startswith(name + " "))
        assert "one-shot" in line or "iterative" in line
        assert "criterion" in line


def test_dry_run_lists_the_grid_and_what_is_done(tmp_path, capsys):
    argv = ["run", "--preset", "smoke", "--methods", "lwm", "--sparsity", "0.9", "0.99", "--out", str(tmp_path),
            "--quiet"]
    assert main([*argv, "--dry-run"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and all("done: nothing" in line for line in lines)
    assert main(argv) == 0
    capsys.readouterr()
    assert main([*argv, "--dry-run"]) == 0
    assert all(line.endswith(": done") for line in capsys.readouterr().out.strip().splitlines())


def test_run_prints_the_table_and_report_rebuilds_it(tmp_path, capsys):
    config = tmp_path / "grid.yaml"
    config.write_text("methods: [hydra, lwm]\nsparsity: [0.9]\npreset: smoke\nfinetune:\n  epochs: 2\n")
    assert main(["run", "--config", str(config), "--methods", "lwm", "--out", str(tmp_path), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "### digits · cnn-small · trades" in out
    assert "| lwm |" in out and "hydra" not in out  # the flag overrides the file
    page = tmp_path / "report" / "index.html"
    assert out.endswith(f"HTML report: {page}\n") and "digits · cnn-small · trades" in page.read_text()
    assert main(["report", "--out", str(tmp_path)]) == 0
    assert "| lwm |" in capsys.readouterr().out
    for suffix in ("md", "csv", "tex", "png"):
        assert (tmp_path / "report" / f"digits_cnn-small_trades.{suffix}").exists()
    assert (tmp_path / "report" / "results.csv").read_text().count("\n") == 3  # header + dense + lwm


def test_a_yaml_file_takes_every_run_option_and_settings(tmp_path, capsys):
    """Every option of `run` (generated from the grid spec and run options) is a YAML key too."""
    from benchmark.spec import GridSpec, RunOptions, option_fields

    config = tmp_path / "all.yaml"
    config.write_text(f"""
methods: [lwm]
data: digits
arch: cnn-small
objective: trades
pretrain_objective: natural
sparsity: [0.9]
seeds: [0, 1]
scope: global
preset: smoke
budget: equal-passes
eval: [clean, pgd]
amp: fp32
out: {tmp_path / "out"}
data_dir: {tmp_path}
download: false
device: cpu
workers: 0
quiet: true
dry_run: true
ddp: false
channels_last: false
compile: false
executor: ray
ray_address: auto
gpus_per_cell: 0
cpus_per_cell: 1
retries: 0
finetune: {{epochs: 2}}
admm.rho: 0.5
""")
    names = {line.split(":")[0] for line in config.read_text().splitlines() if line and not line.startswith(" ")}
    assert set(option_fields(GridSpec)) | set(option_fields(RunOptions)) <= names
    assert main(["run", "--config", str(config)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 4 and all("done: nothing" in line for line in lines)  # 2 seeds x (dense + lwm)


@pytest.mark.parametrize("text,expected", [
    ("methods: [lwm]\nfinetun: {epochs: 2}\n", "unknown setting 'finetun.epochs'; closest: finetune.epochs"),
    ("methods: [lwm\n", "at line 2, column 1"),
    ("- just a list\n", "must be a mapping of options"),
    ("seeds: [zero]\n", "seeds needs an int, got 'zero'"),
])
def test_a_bad_yaml_file_is_one_line(tmp_path, capsys, text, expected):
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    assert main(["run", "--config", str(config), "--out", str(tmp_path), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and expected in err, err


def test_a_run_with_failed_cells_exits_non_zero(tmp_path, capsys, monkeypatch):
    from benchmark import runner

    def boom(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(runner, "_finetune", boom)
    argv = ["run", "--preset", "smoke", "--methods", "lwm", "--sparsity", "0.9", "--out", str(tmp_path), "--quiet"]
    assert main(argv) == 1
    assert "1 of 2 cells failed" in capsys.readouterr().err


def test_a_finished_grid_prints_its_report_without_rewriting_it(tmp_path, capsys, monkeypatch):
    from benchmark import runner

    argv = ["run", "--preset", "smoke", "--methods", "lwm", "--sparsity", "0.9", "--out", str(tmp_path), "--quiet"]
    assert main(argv) == 0
    first = capsys.readouterr().out
    png = tmp_path / "report" / "digits_cnn-small_trades.png"
    written = png.stat().st_mtime_ns

    def no_data(*args, **kwargs):
        raise AssertionError("a finished grid loads no data")

    monkeypatch.setattr(runner, "check_inputs", no_data)
    assert main(argv) == 0
    assert capsys.readouterr().out == first
    assert png.stat().st_mtime_ns == written
    (tmp_path / "report" / "index.html").unlink()  # a report written before the page existed
    assert main(argv) == 0 and (tmp_path / "report" / "index.html").exists()
    written = png.stat().st_mtime_ns
    assert main(["report", "--out", str(tmp_path)]) == 0 and png.stat().st_mtime_ns > written


def test_a_float_setting_takes_exponent_notation_without_a_dot():
    """YAML reads `1e-3` (no dot) as text; the setting still gets the number a user wrote."""
    spec, _ = spec_from({"data": "digits", "methods": ["hydra"], "sparsity": [0.9],
                         **parse_settings(["hydra.lr=1e-3", "finetune.lr=5E-4"])}, "test")
    cfg = next(c for c in resolve(spec).cells if c.method == "hydra")
    assert cfg.settings_of("hydra").lr == 0.001 and cfg.finetune.lr == 0.0005
