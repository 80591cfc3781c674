"""Tests of notebook 01's figures and tables (reports.report_01_audit) and the audit computations behind them."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from cmgan_lib.analysis import audit, audit_logs
from cmgan_lib.reports import report_01_audit as r01


def test_skipped_batch_logs_nan_through_the_real_label_path():
    assert math.isnan(audit_logs.skipped_batch_logged_value())


def test_disc_loss_stats_from_step_logs(tmp_path):
    run = tmp_path / "masked_s0"
    run.mkdir()
    pd.DataFrame({"epoch": [1, 1, 2, 2], "disc_loss": [np.nan, 4e-6, 0.3, 0.1], "disc_skipped": [1, 0, 0, 0]}).to_csv(
        run / "training_step_log.csv", index=False
    )
    s = audit_logs.disc_loss_stats(run)
    assert s["n_steps"] == 4 and s["n_skipped"] == 1 and s["skipped_logged_nan"] is True
    assert s["min_positive"] == pytest.approx(4e-6)
    assert s["last_epoch_mean"] == pytest.approx(0.2)
    assert audit_logs.disc_loss_stats(None) == {}
    assert audit_logs.disc_loss_stats(tmp_path / "missing") == {}
    assert audit_logs.disc_loss_stats(tmp_path)["n_steps"] == 4  # a folder of run folders


def test_audit_sets_name_the_training_data_first_and_count_the_real_utterances(tmp_path):
    from cmgan_lib.data.synthetic import make_dataset

    make_dataset(tmp_path / "syn", n_train=3, n_test=1, seed=0, hard_fraction=0.0, progress=False, n_jobs=1)
    make_dataset(tmp_path / "vb", n_train=2, n_test=1, seed=1, hard_fraction=0.0, progress=False, n_jobs=1)
    sets = audit.audit_sets(tmp_path / "syn", tmp_path / "vb")
    assert [s.name for s in sets] == ["synthetic corpus (train)", "real speech (2 VB utterances)"]
    assert len(sets[0].pairs) == 3 and sets[0].metadata is not None and sets[1].metadata is None
    assert [s.name for s in audit.audit_sets(tmp_path / "syn", None)] == ["synthetic corpus (train)"]


def test_crop_sweeps_and_scale_audit_label_every_row_with_its_set():
    from test_audit import _speech_after_silence

    sets = [audit.AuditSet(name, [_speech_after_silence(seed=k)]) for k, name in enumerate("ab")]
    crops = audit.crop_sweeps(sets, None, (0.5, 2.0), 2, 0, None, None)  # no runs: no estimate rows
    assert set(crops.groupby(["dataset", "crop_s"]).size()) == {2} and len(crops) == 8
    assert set(crops["pair"]) == {"clean/noisy"} and set(crops["model"]) == {"-"}
    scaled, table = audit.scale_audit(sets, 0.5, 2, 0)
    assert list(scaled.groupby("dataset").size()) == [2, 2] and list(table["dataset"]) == ["a", "b"]
    assert (table["n_crops"] == 2).all()


def test_notebook_01_figures_are_readable(check_figure, tmp_path):
    import matplotlib.pyplot as plt
    from test_audit import _run, _speech_after_silence

    from cmgan_lib.analysis.audit import crop_length_sweep, crop_pesq
    from cmgan_lib.analysis.audit_logs import observed_rates

    pairs = [_speech_after_silence(seed=s) for s in range(2)]
    crops = crop_length_sweep(pairs, (0.5, 2.0), 2, 0).assign(dataset="synthetic", pair="clean/noisy", model="-")
    check_figure(r01.plot_failure_sweep(r01.failure_sweep_table(crops), 0.5))
    _run(tmp_path, "official_s0", "skip", [1, 0, 1, 0], [1, 0, 1, 0])
    check_figure(r01.plot_observed_skips(observed_rates(tmp_path)).figure)
    scaled = crop_pesq(pairs, 1, 16000, workers=1, progress=False).assign(dataset="synthetic")
    check_figure(r01.plot_scale_residuals(scaled).figure)
    plt.close("all")


def test_failure_sweep_figure_gives_a_line_one_colour_in_every_panel_and_one_legend_entry():
    """Real speech has clean/noisy only, the synthetic corpus also estimates: clean/noisy must not take the
    estimate's colour in one panel (a reader matches colours against one shared legend)."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_hex

    rows = [(d, p, m, c) for d, lines in (("real", [("clean/noisy", "-")]),
                                          ("synthetic", [("clean/estimate", "untrained"), ("clean/noisy", "-")]))
            for p, m in lines for c in (0.5, 2.0)]  # fmt: skip
    table = pd.DataFrame(rows, columns=["dataset", "pair", "model", "crop_s"])
    table = table.assign(p_fail=0.1, p_fail_low=0.05, p_fail_high=0.2, n_crops=20)
    fig = r01.plot_failure_sweep(table, 0.5)
    colour = {}
    for ax in fig.axes:
        for bars in ax.containers:  # one ErrorbarContainer per line; lines[0] is the data line
            colour.setdefault(bars.get_label(), set()).add(to_hex(bars.lines[0].get_color()))
    assert all(len(c) == 1 for c in colour.values()) and len(colour) == 2
    assert colour["clean/noisy"] != colour["clean/estimate, untrained"]
    texts = [t.get_text() for t in fig.legends[0].get_texts()]
    assert sorted(texts) == sorted(set(texts)) and {"clean/noisy", "clean/estimate, untrained"} <= set(texts)
    plt.close(fig)


def test_observed_table_writes_rates_with_intervals_and_only_causes_that_occurred(tmp_path):
    from test_audit import _run

    from cmgan_lib.analysis.audit_logs import observed_rates

    _run(tmp_path, "official_s0", "skip", [1, 0, 1, 0], [1, 0, 2, 0])
    _run(tmp_path, "masked_s0", "masked", [0, 0, 0, 0], [0, 0, 0, 0])
    table = r01.observed_table(observed_rates(tmp_path)).set_index("run")
    assert table.loc["official_s0", "updates skipped"].startswith("2 of 4 = 50% (95% CI")
    assert table.loc["official_s0", "labels lost"].startswith("3 of 16 = ")
    assert table.loc["masked_s0", "updates skipped"].startswith("0 of 4 (95% upper bound")
    assert list(table["silent reference"]) == [0, 3]  # masked_s0 first (runs sorted by name)
    assert "injected" not in table.columns  # never occurred in these runs
