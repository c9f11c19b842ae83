"""Published numbers: the shipped table is exactly its sources, rows are overlaid only where the setting matches
(results/published.py's rule), and a matching report shows them in a `published` column and says what matched."""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd
import pytest
from report_grid import grid_records

from results import plots, published
from results.frame import records_frame
from results.report import build_sections
from results.threat import ThreatModel, threat_model

SOURCES = Path(__file__).resolve().parents[2] / "shared" / "reference"  # ../shared/reference of the checkout
CIFAR_DESC = ("l-inf eps 0.03137: PGD-50 x 5 restarts, step 0.007843 then AutoAttack standard; 10000 test examples; "
              "randomized smoothing sigma 0.25, N0 100, N 10000, alpha 0.001 on 500 examples")


@pytest.mark.skipif(not SOURCES.is_dir(), reason="../shared/reference is not beside this checkout")
def test_the_shipped_table_is_built_from_the_sources_and_keeps_every_row_and_its_source():
    shipped, built = published.load(), published.from_sources(SOURCES)
    pd.testing.assert_frame_equal(shipped, pd.read_csv(io.StringIO(built.to_csv(index=False))), check_exact=True)
    hydra = pd.read_csv(SOURCES / "hydra_paper.csv")
    apb = pd.read_csv(SOURCES / "adversarial_pruning_benchmark.csv")
    assert len(shipped) == len(hydra) + 2 * len(apb)  # APB: clean and AutoAttack accuracy per row
    assert set(shipped["source"]) == set(hydra["source"]) | set(apb["source"])
    radmm = shipped[(shipped["source_method"] == "radmm") & (shipped["metric"] == "robust")]
    assert list(radmm["method"].unique()) == ["admm"] and list(radmm["value_pct"]) == list(
        apb.loc[apb["method"] == "radmm", "autoattack_pct"])


def setting(**changes) -> published.Setting:
    values = dict(dataset="cifar10", arch="vgg16_bn", objective="trades", presets=frozenset({"paper"}),
                  threat=threat_model(CIFAR_DESC), radii=(0.25, 0.435), methods=frozenset({"dense", "hydra", "lwm"}))
    return published.Setting(**{**values, **changes})


def keys(overlay: published.Overlay) -> set[tuple]:
    return set(overlay.rows[["citation", "metric", "method"]].drop_duplicates().itertuples(index=False, name=None))


def test_the_paper_setting_matches_hydras_era_and_the_benchmarks_evaluations():
    overlay = published.match(published.load(), setting())
    assert keys(overlay) == {(published.HYDRA, "robust", m) for m in ("dense", "hydra", "lwm")} | {
        (published.APB, metric, "hydra") for metric in ("clean", "robust")}
    era = overlay.rows[(overlay.rows["citation"] == published.HYDRA) & (overlay.rows["method"] == "hydra")]
    assert list(era["value_pct"]) == [49.5, 48.7, 41.7] and set(era["column"]) == {"robust_acc"}
    (era_verdict,) = [v for v in overlay.verdicts if v.startswith(f"{published.HYDRA}: robust on cifar10/vgg16_bn")]
    assert "compared, 7 numbers" in era_verdict and "note: trained with pseudo-labelled extra images" in era_verdict
    assert any("not compared (arch wrn-28-4, here vgg16_bn)" in v for v in overlay.verdicts)
    assert f"{published.HYDRA}: certified on cifar10/vgg16_bn/smoothing: not compared (objective smoothing, here " \
           "trades)" in overlay.verdicts


@pytest.mark.parametrize(("changes", "reason"), [
    ({"presets": frozenset({"quick"})}, "preset quick here, not paper"),
    ({"presets": frozenset({"paper", "smoke"})}, "preset paper, smoke here"),
    ({"threat": ThreatModel("linf", 0.1, 128, None)}, "linf eps 0.031, here linf eps 0.1"),
    ({"threat": ThreatModel("l2", 0.031, 128, None)}, "here l2 eps"),
    ({"threat": threat_model(None)}, "here unknown eps unknown"),
    ({"objective": "trades on natural-pretrained"}, "objective trades, here trades on natural-pretrained"),
    ({"methods": frozenset({"random"})}, "none of its methods (dense, hydra, lwm) ran here"),
])
def test_a_setting_that_differs_in_one_respect_matches_nothing_and_says_why(changes, reason):
    overlay = published.match(published.load(), setting(**changes))
    hydra_era = [v for v in overlay.verdicts if v.startswith(f"{published.HYDRA}: robust on cifar10/vgg16_bn/trades")]
    assert len(hydra_era) == 1 and reason in hydra_era[0]
    assert not (overlay.rows["citation"] == published.HYDRA).any()


def test_pgd_training_matches_only_the_benchmark_and_wrn_matches_its_own_rows():
    pgd = published.match(published.load(), setting(objective="pgd"))
    assert {c for c, _, _ in keys(pgd)} == {published.APB}
    wrn = published.match(published.load(), setting(arch="wrn-28-4"))
    assert {c for c, _, _ in keys(wrn)} == {published.HYDRA} and len(wrn.rows) == 7


def test_smoothing_matches_at_the_papers_sigma_and_radius_only():
    smoothing = setting(objective="smoothing", dataset="svhn")
    overlay = published.match(published.load(), smoothing)
    assert set(overlay.rows["column"]) == {"smoothing_r0.435_acc"} and len(overlay.rows) == 7
    other_sigma = ThreatModel("linf", 0.03137, 500, 0.5)
    assert published.match(published.load(), setting(objective="smoothing", threat=other_sigma)).rows.empty
    assert published.match(published.load(), setting(objective="smoothing", radii=(0.25, 0.5))).rows.empty


def test_a_dataset_without_published_numbers_says_so():
    overlay = published.match(published.load(), setting(dataset="digits"))
    assert overlay.rows.empty and overlay.verdicts == ["no published numbers for digits"]


def test_a_paper_grid_on_cifar10_shows_the_published_column_and_the_plot_gets_the_markers():
    records = grid_records(dataset="cifar10", arch="vgg16_bn", preset="paper", eval_desc=CIFAR_DESC,
                           sparsities=(0.9, 0.99))
    (section,) = build_sections(records, records_frame(records))
    table = section.tables()[0].frame
    assert table.loc["hydra", "published"] == (
        f"clean: 90% 78.3, 99% 70.6 [{published.APB}]; robust: 90% 43.8, 99% 35.6 [{published.APB}]; "
        f"robust: 0% 51.9, 90% 49.5, 99% 41.7 [{published.HYDRA}]")
    assert table.loc["lwm", "published"] == f"robust: 0% 51.9, 90% 48.8, 99% 34.3 [{published.HYDRA}]"
    assert any(": compared," in line for line in section.published)
    overlay = published.match(published.load(), published.Setting(
        "cifar10", "vgg16_bn", "trades", frozenset({"paper"}), threat_model(CIFAR_DESC), (), frozenset({"lwm"})))
    frame = records_frame(records)
    panel = plots._by_sparsity(frame, [("robust_acc", "robust")], "t", overlay.rows)  # what the plot draws
    assert sorted(panel.published[["x", "value_pct", "label"]].itertuples(index=False, name=None)) == [
        (90.0, 48.8, "lwm"), (99.0, 34.3, "lwm")]  # the dense row is not in this overlay: dense did not match
    quick = grid_records(dataset="cifar10", arch="vgg16_bn", preset="quick", eval_desc=CIFAR_DESC)
    (section,) = build_sections(quick, records_frame(quick))
    assert "published" not in section.tables()[0].frame and not any(": compared," in v for v in section.published)
