"""Notebook 04's words and figures (report_confirmatory) on a small synthetic grid."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cmgan_lib.analysis import confirmatory as cf
from cmgan_lib.reports import report_confirmatory as rc

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def analysis(tmp_path_factory):
    from conftest import write_fake_run

    plan = cf.load_plan(ROOT / cf.PLAN_YAML)
    root = tmp_path_factory.mktemp("grid")
    effect = {"official": 0.0, "official_p56": -0.1, "official_p82": -0.15, "frozen_disc": -0.2}
    for v, d in effect.items():
        for s in (100, 101, 102):
            curve = 2.4 + 0.1 * (s - 100) + d + 0.01 * np.sin(np.arange(12) * (s - 99))
            ri = 1.0 + s / 1000 if v != "frozen_disc" or s != 101 else 9.0  # frozen_disc's seed 101 is not paired
            write_fake_run(root, f"{v}_s{s}", curve, 0, steps_per_epoch=2, config={"epochs": 12},
                           step_columns={"loss_ri": ri, "loss_mag": 0.5, "loss_time": 0.3})  # fmt: skip
    return cf.analyse(root, plan, planned_seeds=plan.seeds)


def test_header_says_interim_and_the_pairing_reason_is_printed(analysis):
    assert "**INTERIM**" in rc.header_markdown(analysis, "abc123 2026-12-07")
    text = rc.pairing_markdown(analysis.families)
    assert "2 of 3 contrasts paired" in text and "frozen_disc - official`: **Welch instead**: seed 101" in text


def test_family_table_shows_holm_and_verdicts(analysis):
    t = rc.family_display(analysis.families, "late_val_pesq")
    assert list(t.contrast) == ["official_p56 - official", "official_p82 - official", "frozen_disc - official"]
    assert "endpoint" not in t and {"Holm-adjusted CI", "Welch 95% CI", "verdict"} <= set(t.columns)
    assert list(t.method) == ["paired", "paired", "welch"]


def test_figures_read_well(analysis, check_figure):
    import matplotlib.pyplot as plt

    for fig in (rc.plot_small_multiples(analysis), rc.plot_forest(analysis.families, 0.1),
                rc.plot_dose_response(analysis)):  # fmt: skip
        check_figure(fig)
        plt.close(fig)
    fig = rc.plot_forest(analysis.families, 0.1)
    xmin, xmax = fig.axes[0].get_xlim()
    assert xmin < -0.1 and xmax > 0.1  # the margin is inside the view
    plt.close(fig)


def test_no_runs_says_what_to_run(tmp_path):
    assert cf.analyse(tmp_path / "none", cf.load_plan(ROOT / cf.PLAN_YAML)) is None
    assert "cmgan ablate --grid configs/confirmatory_cpu.yaml" in rc.no_runs_markdown(tmp_path / "none")
