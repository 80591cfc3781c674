"""Notebook 02's library: per-seed and per-variant tables, the generated verdict, and figures a reader can read."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import pytest

from cmgan_lib.analysis import stats
from cmgan_lib.analysis import training_analysis as ta
from cmgan_lib.reports import report_02_figures as figs
from cmgan_lib.reports import report_02_training as tr
from cmgan_lib.training import runs

matplotlib.use("Agg")


def _load(root):
    epochs, steps = runs.load_runs(root)
    per_seed = ta.run_summary(epochs, steps, ta.load_run_configs(root))
    return epochs, steps, per_seed


def test_per_seed_table_from_the_logs(tmp_path, fake_run):
    skipped = [1, 0, 0, 1, 0, 0, 0, 0, 1, 1, 0, 0]
    fake_run(tmp_path, "official_p186_s0", [2.0, 2.6, 2.2], skipped, injected=np.ones(12, dtype=int),
             config={"pesq_fail_inject": 0.186, "grad_clip_norm": 5.0},
             grad_norm_d=np.array([3.0, 6.0, 11.0, 2.0] * 3), disc_loss=np.linspace(0.1, 1.2, 12),
             skipped_disc_loss=0.0)  # fmt: skip
    epochs, steps, per_seed = _load(tmp_path)
    assert sorted(epochs.epoch.unique()) == [1, 2, 3]  # numbered as the console prints them
    r = per_seed.iloc[0]
    assert (r.variant, r.seed, r.pesq_fail_inject, r.grad_clip_norm) == ("official_p186", 0, 0.186, 5.0)
    assert r.best_val_pesq == pytest.approx(2.6) and r.best_epoch == 2
    assert r.final_val_pesq == pytest.approx(2.2) and r.drop_after_peak == pytest.approx(0.4)
    w = stats.wilson(4, 12)
    assert (r.skipped, r.steps) == (4, 12) and (r.skip_low, r.skip_high) == pytest.approx((w.low, w.high))
    assert r.injected_failures == 12 and r.data_failures == 0
    ran = np.linspace(0.1, 1.2, 12)[np.array(skipped) == 0]
    assert r.disc_loss_median == pytest.approx(np.median(ran))  # a skipped step's logged 0.0 is no loss
    gd = np.where(np.array(skipped) == 1, np.nan, [3.0, 6.0, 11.0, 2.0] * 3)
    assert r.clip_checked_d == np.isfinite(gd).sum() and r.clip_exceeded_d == int((gd > 5).sum())
    assert r.clip_exceeded_g == 0 and r.grad_norm_d_max == pytest.approx(11.0)


def test_no_clip_configured_means_no_exceedance_share(tmp_path, fake_run):
    fake_run(tmp_path, "official_s0", [2.0, 2.1], 0, grad_norm_d=9.0)
    r = _load(tmp_path)[2].iloc[0]
    assert np.isnan(r.clip_exceeded_d_frac)
    assert "no clipping configured" in tr.clip_markdown(_load(tmp_path)[2])


def test_variant_table_seed_means_and_pooled_skip_rate(tmp_path, fake_run):
    for seed, best in enumerate([2.5, 2.7, 2.9]):
        fake_run(tmp_path, f"masked_s{seed}", [2.0, best], [seed % 2] * 8, config={"pesq_strategy": "masked"},
                 injected=np.full(8, seed))  # fmt: skip
    per_variant = ta.variant_summary(_load(tmp_path)[2])
    r = per_variant.iloc[0]
    iv = stats.mean_interval([2.5, 2.7, 2.9])
    assert r.n_seeds == 3 and r.best_val_pesq == pytest.approx(2.7)
    assert (r.best_val_pesq_low, r.best_val_pesq_high) == pytest.approx((iv.low, iv.high))
    w = stats.wilson(8, 24)
    assert (r.skipped, r.steps, r.skip_low) == (8, 24, pytest.approx(w.low))
    assert r.skip_rate_from_injection == 0.0
    head = tr.headline_table(per_variant)
    assert head.loc["masked", "best val PESQ"] == f"2.70 ± {iv.half:.2f}"
    assert head.loc["masked", "updates skipped (95% CI)"].startswith("8 of 24 = 33%")
    assert head.loc["masked", "failed labels: injected, from the data"] == "24, 0"


@pytest.mark.parametrize("harm", [0.5, 0.0])
def test_verdict_follows_the_numbers(tmp_path, fake_run, harm):
    """Injected skipping that lowers best PESQ by `harm` is called lower; no harm is 'no detectable effect'."""
    for seed, jitter in enumerate([0.0, 0.02, -0.02]):
        fake_run(tmp_path, f"official_s{seed}", [2.0, 2.5 + jitter, 2.4 + jitter], 0)
        fake_run(tmp_path, f"official_p186_s{seed}", [1.5, 2.5 - harm - jitter, 2.4 - harm - 2 * jitter], 1,
                 config={"pesq_fail_inject": 0.186})  # fmt: skip
    per_seed = _load(tmp_path)[2]
    comparisons = ta.default_comparisons(list(per_seed.variant.unique()))
    assert comparisons == [["official_p186", "official"]]
    table = ta.compare_variants(per_seed, comparisons)
    best = table.set_index("quantity").loc["best_val_pesq"]
    assert best.difference == pytest.approx(-harm)
    text = tr.verdict_markdown(table, ta.variant_summary(per_seed))
    if harm:
        assert best.verdict.startswith("best validation PESQ, official_p186 - official: lower by 0.500")
    else:
        assert "no detectable effect at this budget" in best.verdict
    assert best.verdict in text and "official_p186 against official" in text
    assert "injected p = 0.186" in text


def test_comparison_with_a_missing_variant_says_not_measured(tmp_path, fake_run):
    fake_run(tmp_path, "official_s0", [2.0, 2.1], 0)
    per_seed = _load(tmp_path)[2]
    table = ta.compare_variants(per_seed, [["masked_p186", "official"]])
    assert table.verdict.str.endswith("not measured").all()
    for name in ("masked_s0", "seed_fixes_s0"):
        fake_run(tmp_path / "noref", name, [2.0, 2.1], 0)
    noref = _load(tmp_path / "noref")[2]
    assert "No comparison" in tr.verdict_markdown(ta.compare_variants(noref, []), ta.variant_summary(noref))
    assert ta.default_comparisons(["masked", "seed_fixes"]) == []
    only = tr.verdict_markdown(ta.compare_variants(per_seed, ta.default_comparisons(["official"])),
                               ta.variant_summary(per_seed))  # fmt: skip
    assert "Only one variant (`official`)" in only


def test_figures_are_readable_with_one_seed(tmp_path, fake_run, check_figure):
    fake_run(tmp_path, "official_s0", [2.0, 2.4, 2.3], [1, 0, 0, 0] * 3)
    fake_run(tmp_path, "seed_fixes_s0", [2.1, 2.2, 2.5], 0, config={"grad_clip_norm": 5.0}, grad_norm_d=8.0)
    epochs, steps, per_seed = _load(tmp_path)
    fig = figs.plot_val_pesq(epochs)
    check_figure(fig)
    labels = {t.get_text() for leg in fig.legends for t in leg.get_texts()}
    assert not any("band" in s or "early stopping" in s for s in labels), labels  # neither can occur here
    check_figure(figs.plot_skips_and_disc_loss(per_seed, ta.variant_summary(per_seed), steps))
    fig = figs.plot_grad_norms(steps, per_seed)
    check_figure(fig)
    assert any("clip value 5" in t.get_text() for ax in fig.axes if ax.get_legend()
               for t in ax.get_legend().get_texts())  # fmt: skip


def test_figures_show_seed_bands_and_early_stopping_when_they_occur(tmp_path, fake_run, check_figure):
    for seed in (0, 1):
        fake_run(tmp_path, f"seed_fixes_s{seed}", [2.0, 2.4 + seed / 10, 2.3], 0, early_stop_at=2,
                 config={"early_stopping": True})  # fmt: skip
    epochs, steps, per_seed = _load(tmp_path)
    fig = figs.plot_val_pesq(epochs, configs=ta.load_run_configs(tmp_path))
    check_figure(fig)
    labels = {t.get_text() for leg in fig.legends for t in leg.get_texts()}
    assert "band = range over 2 seeds" in labels and figs.FIRED in labels and figs.WOULD_HAVE not in labels
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()][:3] == ["1", "2", "3"] or set(
        fig.axes[0].get_xticks()) >= {1.0, 2.0, 3.0}  # fmt: skip


def test_a_run_without_early_stopping_is_marked_would_have_stopped(tmp_path, fake_run, check_figure):
    """The trainer tracks patience with early stopping off: a run that trained on after its monitor ran out of
    patience (or one with early stopping off that ended there) did not stop early; it only would have."""
    fake_run(tmp_path, "official_s0", [2.0, 2.4, 2.3, 2.2, 2.1], 0, early_stop_at=2)  # trained on past epoch 3
    fake_run(tmp_path, "official_s1", [2.0, 2.4, 2.3], 0, early_stop_at=2)  # ended there, but the flag is off
    epochs, _, _ = _load(tmp_path)
    configs = ta.load_run_configs(tmp_path)
    marks = figs.stop_marks(epochs, configs)
    assert list(marks.label) == [figs.WOULD_HAVE] * 2 and list(marks.epoch) == [3, 3]
    fig = figs.plot_val_pesq(epochs, configs=configs)
    check_figure(fig)
    labels = {t.get_text() for leg in fig.legends for t in leg.get_texts()}
    assert figs.WOULD_HAVE in labels and figs.FIRED not in labels


def test_runs_markdown_names_the_split_and_unfinished_runs(tmp_path, fake_run):
    fake_run(tmp_path, "official_s0", [2.0, 2.1], 0, config={"val_split": "valid"})
    fake_run(tmp_path, "masked_s0", [2.0], 0, finished=False)
    text = tr.runs_markdown(tmp_path, tr.build_report(tmp_path))
    assert "**valid (held out from the test set)** split (1 run)" in text
    assert "**test (published behaviour)** split (1 run)" in text  # masked_s0's config has no val_split key
    assert "**Not finished**" in text and "`masked_s0`" in text.split("Not finished")[1]
    assert "official_s0" not in text.split("Not finished")[1]
    assert "No runs under" in tr.runs_markdown(tmp_path / "none", tr.build_report(tmp_path / "none"))


@pytest.mark.parametrize("strategy", ["skip", "masked", "batch_mean"])
def test_expected_skip_rate_follows_each_strategys_label_path(strategy, tmp_path, fake_run, check_figure):
    """The rate injection alone should give matches what the injector and make_labels really skip, per strategy,
    and the table and the figure both show that number."""
    from cmgan_lib.training.pesq_labels import FailureInjector, make_labels

    p, b, n = 0.5, 4, 4000
    inject = FailureInjector(p, seed=0)
    skipped = 0
    for step in range(n):
        raw, reasons = inject(np.full(b, 2.0), [None] * b, step=step)
        skipped += make_labels(raw, reasons, strategy).skipped
    expected = ta.expected_skip_rate(p, b, strategy)
    assert abs(skipped / n - expected) <= 4 * np.sqrt(0.25 / n)
    fake_run(tmp_path, "x_s0", [2.0, 2.1], 0, config={"pesq_strategy": strategy, "pesq_fail_inject": p})
    fake_run(tmp_path, "official_s0", [2.0, 2.1], 0)
    _, steps, per_seed = _load(tmp_path)
    per_variant = ta.variant_summary(per_seed)
    assert per_variant.set_index("variant").loc["x", "skip_rate_from_injection"] == pytest.approx(expected)
    fig = figs.plot_skips_and_disc_loss(per_seed, per_variant, steps)
    check_figure(fig)
    if expected > 0:
        marks = [line for line in fig.axes[0].lines if line.get_label().startswith("expected from the injected p")]
        assert 100 * expected in marks[0].get_xdata()


def test_a_variant_whose_seeds_disagree_on_a_config_key_says_mixed(tmp_path, fake_run):
    fake_run(tmp_path, "x_s0", [2.0, 2.1], 0, config={"pesq_fail_inject": 0.1, "grad_clip_norm": 5.0, "cut_len": 16000})
    fake_run(tmp_path, "x_s1", [2.0, 2.2], 0, config={"pesq_fail_inject": 0.0, "grad_clip_norm": 0.0, "cut_len": 32000})
    fake_run(tmp_path, "official_s0", [2.0, 2.1], 0, config={"cut_len": 32000})
    per_seed = _load(tmp_path)[2]
    assert "cut_len" in ta.CONFIG_KEYS and set(per_seed.cut_len) == {16000, 32000}
    per_variant = ta.variant_summary(per_seed)
    head = tr.headline_table(per_variant)
    assert head.loc["x", "injected p"] == "mixed" and head.loc["x", "crop (s)"] == "mixed"
    assert head.loc["official", "injected p"] == "0" and head.loc["official", "crop (s)"] == "2"
    clip = tr.clip_markdown(per_seed)
    x_line = next(line for line in clip.splitlines() if line.startswith("- `x`"))
    assert "mixed" in x_line and "no clipping configured" not in x_line
    text = tr.verdict_markdown(ta.compare_variants(per_seed, [["x", "official"]]), per_variant)
    assert "injected p = mixed, crop mixed" in text and "injected p = 0, crop 2 s" in text


def test_intervals_report_the_seeds_they_used_when_validation_gave_nan(tmp_path, fake_run):
    """A final validation PESQ is NaN when validation dropped every file: n counts the values actually used."""
    for seed in range(3):
        fake_run(tmp_path, f"official_s{seed}", [2.0, 2.4 + seed / 10], 0)
        fake_run(tmp_path, f"masked_s{seed}", [2.0, np.nan if seed == 2 else 2.5 + seed / 10], 0)
    per_seed = _load(tmp_path)[2]
    table = ta.compare_variants(per_seed, [["masked", "official"]]).set_index("quantity")
    # paired by seed: the interval uses the 2 seeds with a value in both variants (Welch would use 2 and 3)
    assert table.loc["final_val_pesq", "method"] == "paired"
    assert (table.loc["final_val_pesq", "n_variant"], table.loc["final_val_pesq", "n_reference"]) == (2, 2)
    assert table.loc["best_val_pesq", "n_variant"] == 3
    per_variant = ta.variant_summary(per_seed).set_index("variant")
    assert per_variant.loc["masked", "final_val_pesq_n"] == 2 and per_variant.loc["masked", "best_val_pesq_n"] == 3
    head = tr.headline_table(per_variant.reset_index())
    assert head.loc["masked", "final val PESQ"].endswith("(2 of 3 seeds)")
    assert "seeds)" not in head.loc["masked", "best val PESQ"] + head.loc["official", "final val PESQ"]


def test_runs_markdown_states_each_runs_data_order(tmp_path, fake_run):
    """Issue 20: the published loader keeps one file order; the run description says which order each run had."""
    fake_run(tmp_path, "official_s0", [2.0, 2.1], 0, config={"reshuffle_each_epoch": False})
    fake_run(tmp_path, "reshuffled_s0", [2.0, 2.1], 0, config={"reshuffle_each_epoch": True})
    fake_run(tmp_path, "old_s0", [2.0, 2.1], 0)  # no key: trained before the switch, reshuffled
    text = tr.runs_markdown(tmp_path, tr.build_report(tmp_path))
    assert "**the same file order every epoch (published: DistributedSampler without set_epoch)** (1 run)" in text
    assert "**a new file order every epoch (not the published order)** (2 runs)" in text


def _collapse_curve(n: int = 50, peak: int = 10, top: float = 2.75, end: float = 2.4) -> np.ndarray:
    """The issue-18 regime's shape: rise to `top` at epoch `peak`, then a linear fall to `end` at epoch n."""
    ep = np.arange(1, n + 1)
    return np.where(ep <= peak, 2.0 + (top - 2.0) * (ep - 1) / (peak - 1), top - (top - end) * (ep - peak) / (n - peak))


def test_drop_smoothed_is_not_the_maximum_of_noise(tmp_path, fake_run):
    """A flat noisy curve (SD 0.05, 50 epochs): best - final is about +0.11 (the noise's maximum), the smoothed
    drop well under half of it (about +0.045 on average: smoothing shrinks the bias, it cannot remove it);
    a rise-then-fall curve: the smoothed drop sees the whole fall and its peak sits at the real peak."""
    rng = np.random.default_rng(0)
    for seed in range(6):
        fake_run(tmp_path, f"flat_s{seed}", 2.5 + 0.05 * rng.standard_normal(50), 0, steps_per_epoch=1)
    for seed in range(3):
        fake_run(tmp_path, f"official_s{seed}", _collapse_curve() + 0.01 * rng.standard_normal(50), 0,
                 steps_per_epoch=1)  # fmt: skip
    per_seed = _load(tmp_path)[2].set_index("run")
    flat = per_seed[per_seed.variant == "flat"]
    assert flat.drop_after_peak.mean() > 0.07
    assert abs(flat.drop_smoothed.mean()) < 0.06 and flat.drop_smoothed.mean() < flat.drop_after_peak.mean() / 2
    fall = per_seed[per_seed.variant == "official"]
    end = np.mean(_collapse_curve()[-5:])
    assert fall.drop_smoothed.to_numpy() == pytest.approx(2.75 - end, abs=0.03)
    assert fall.peak_epoch_smoothed.between(8, 12).all()
    per_variant = ta.variant_summary(per_seed.reset_index())
    assert {"drop_smoothed", "drop_smoothed_low", "peak_epoch_smoothed"} <= set(per_variant)
    assert (
        tr.headline_table(per_variant).loc["official", "drop (smoothed)"].startswith(f"{fall.drop_smoothed.mean():.2f}")
    )
    table = ta.compare_variants(per_seed.reset_index(), [["flat", "official"]]).set_index("quantity")
    assert table.loc["drop_smoothed", "verdict"].startswith("drop after the smoothed peak")
    assert table.loc["drop_smoothed", "difference"] == pytest.approx(
        flat.drop_smoothed.mean() - fall.drop_smoothed.mean()
    )


def _collapse_runs(root, fake_run, variants=("official", "masked"), seeds=3, n=20):
    """Rise-then-fall runs (issue 18's regime, shortened): `masked` falls less; seeds differ by a known offset."""
    for variant in variants:
        for seed in range(seeds):
            curve = _collapse_curve(n, 5, 2.75, 2.4 if variant == "official" else 2.6) + 0.02 * seed
            fake_run(root, f"{variant}_s{seed}", curve, 0, steps_per_epoch=2)


def test_collapse_curves_share_one_axis_with_bands_and_peaks(tmp_path, fake_run, check_figure):
    _collapse_runs(tmp_path, fake_run)
    fake_run(tmp_path, "no_disc_s0", _collapse_curve(20, 5), 0, steps_per_epoch=2)
    epochs = _load(tmp_path)[0]
    band = ta.seed_band(epochs[epochs.variant == "official"], "val_pesq")
    iv = stats.mean_interval(_collapse_curve(20, 5, 2.75, 2.4)[4] + 0.02 * np.arange(3))
    assert (band.loc[5, "low"], band.loc[5, "high"], band.loc[5, "n"]) == (
        pytest.approx(iv.low),
        pytest.approx(iv.high),
        3,
    )
    two = ta.seed_band(epochs[(epochs.variant == "official") & (epochs.seed < 2)], "val_pesq")
    assert two.loc[5, "high"] - two.loc[5, "low"] == pytest.approx(0.02)  # 2 seeds: the range
    fig = figs.plot_collapse_curves(epochs)
    check_figure(fig)
    assert len(fig.axes) == 1
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels[0] == "official (3 seeds)" and "no_disc (1 seed)" in labels and "peak of the mean curve" in labels
    assert "95% t" in fig.axes[0].get_legend().get_title().get_text()
    stars = [ln for ln in fig.axes[0].lines if ln.get_marker() == "*" and len(ln.get_xdata())]
    assert sorted(float(s.get_xdata()[0]) for s in stars) == [5.0, 5.0, 5.0]
    assert len(figs.plot_collapse_curves(epochs, variants=["masked"]).axes[0].collections) == 1


def _grad_share_columns(n: int, adv: float, rest: float, cos: float, every: int = 2) -> dict:
    """The trainer's four grad-share step columns, measured every `every` steps (NaN between), known values."""
    measured = np.arange(1, n + 1) % every == 0
    col = lambda x: np.where(measured, x, np.nan)  # noqa: E731
    return {"grad_norm_g_adv": col(adv), "grad_norm_g_rest": col(rest), "grad_ratio_adv_rest": col(adv / rest),
            "grad_cos_adv_rest": col(cos)}  # fmt: skip


def test_grad_share_reads_the_ratio_of_adversarial_to_rest(tmp_path, fake_run, check_figure):
    """Known norms: adversarial 0.6 + 0.1 seed, rest 2.0 (ratio 0.3, 0.35, 0.4), cosine 0.2; no_disc has no
    adversarial gradient. Swapping adv and rest would give ratios of about 3: the numbers and words catch it."""
    for seed in range(3):
        fake_run(tmp_path, f"official_s{seed}", [2.0, 2.4, 2.3], 0,
                 step_columns=_grad_share_columns(12, 0.6 + 0.1 * seed, 2.0, 0.2))  # fmt: skip
        fake_run(tmp_path, f"no_disc_s{seed}", [2.0, 2.4, 2.3], 0,
                 step_columns=_grad_share_columns(12, 0.0, 2.0, np.nan))  # fmt: skip
    steps = _load(tmp_path)[1]
    table = ta.grad_share_table(steps).set_index("variant")
    iv = stats.mean_interval([0.3, 0.35, 0.4])
    r = table.loc["official"]
    assert r.ratio == pytest.approx(0.35) and (r.ratio_low, r.ratio_high) == pytest.approx((iv.low, iv.high))
    assert r.cos == pytest.approx(0.2) and r.measured_steps == 18 and r.n_seeds == 3
    assert table.loc["no_disc", "ratio"] == 0 and np.isnan(table.loc["no_disc", "cos"])
    text = tr.grad_share_markdown(table.reset_index())
    official = next(line for line in text.splitlines() if line.startswith("- `official`"))
    assert "gradient is 0.35x" in official and "it can steer the generator" in official
    assert "mostly across the other terms" in official and "18 measured steps" in official
    assert "it cannot steer" in next(line for line in text.splitlines() if line.startswith("- `no_disc`"))
    assert "at least 0.1x" in text  # the threshold is stated
    fig = figs.plot_grad_share(steps)
    check_figure(fig)
    ratio_lines = [ln for ln in fig.axes[0].lines if ln.get_label().startswith("official")]
    assert np.allclose(ratio_lines[0].get_ydata(), 0.35)  # seed mean of 0.3, 0.35, 0.4 at every measured step
    assert "not drawn: no_disc" in fig.axes[0].get_title()


def test_grad_share_says_not_measured_on_old_runs(tmp_path, fake_run):
    fake_run(tmp_path, "official_s0", [2.0, 2.4, 2.3], 0)  # no grad-share columns: a run from before issue 18
    fake_run(
        tmp_path / "nan",
        "official_s0",
        [2.0, 2.4, 2.3],
        0,
        step_columns=_grad_share_columns(12, 1.0, 2.0, 0.5, every=100),
    )  # columns, never measured
    for root in (tmp_path, tmp_path / "nan"):
        steps = _load(root)[1]
        assert ta.grad_share_table(steps).empty and figs.plot_grad_share(steps) is None
        assert "not measured" in tr.grad_share_markdown(ta.grad_share_table(steps))


def test_seed_spread_is_the_gap_between_seeds(tmp_path, fake_run):
    """Seeds offset by 0.02 each (3 seeds): final PESQ range 0.04, SD 0.02; curves 0.02 or 0.04 apart per epoch."""
    _collapse_runs(tmp_path, fake_run)
    fake_run(tmp_path, "no_disc_s0", _collapse_curve(20, 5), 0, steps_per_epoch=2)
    epochs, _, per_seed = _load(tmp_path)
    spread = ta.seed_spread(per_seed, epochs).set_index("variant")
    r = spread.loc["official"]
    assert r.final_val_pesq_range == pytest.approx(0.04) and r.final_val_pesq_sd == pytest.approx(0.02)
    assert r.best_val_pesq_range == pytest.approx(0.04) and r.drop_smoothed_range == pytest.approx(0.0, abs=1e-9)
    assert r.curve_gap_mean == pytest.approx((0.02 + 0.04 + 0.02) / 3) and r.curve_gap_max == pytest.approx(0.04)
    assert spread.loc["no_disc", "n_seeds"] == 1 and np.isnan(spread.loc["no_disc", "final_val_pesq_sd"])
    text = tr.seed_spread_markdown(spread.reset_index())
    assert "have an SD of 0.020 in final validation PESQ" in text and "must exceed" not in text
    assert "single-seed comparison" in text and f"about {0.02 * np.sqrt(2):.3f}" in text
    assert "`no_disc`" not in text  # one seed: no spread to state
    assert "not measured" in tr.seed_spread_markdown(spread.loc[["no_disc"]].reset_index())


def _losses(n: int = 20, seed: int = 0, falling: bool = False) -> dict:
    """Training loss falling linearly 1.0 -> 0.24; validation loss falling 0.05 an epoch to 0.65 at epoch 8, then
    rising 0.03 (+0.001 per seed) an epoch (overfitting), or still falling at the end (`falling`)."""
    ep = np.arange(1, n + 1)
    val = (
        1.0 - 0.05 * (ep - 1)
        if falling
        else np.where(ep <= 8, 1.0 - 0.05 * (ep - 1), 0.65 + (0.03 + 0.001 * seed) * (ep - 8))
    )
    return {"loss": 1.0 - 0.04 * (ep - 1), "val_loss": val + 0.01 * seed}


def test_overfitting_table_and_words(tmp_path, fake_run, check_figure):
    for seed in range(3):
        fake_run(
            tmp_path, f"official_s{seed}", np.full(20, 2.5), 0, steps_per_epoch=1, epoch_columns=_losses(seed=seed)
        )
        fake_run(tmp_path, f"masked_s{seed}", np.full(20, 2.5), 0, steps_per_epoch=1,
                 epoch_columns=_losses(seed=seed, falling=True))  # fmt: skip
    fake_run(tmp_path, "no_disc_s0", np.full(20, 2.5), 0, steps_per_epoch=1, epoch_columns=_losses())
    epochs = _load(tmp_path)[0]
    per_run = ta.overfitting_per_run(epochs).set_index("run")
    r = per_run.loc["official_s0"]
    # raw: final 1.01 - minimum 0.65 at epoch 8, training 0.24 - 0.72; smoothed: the 5-epoch mean is lowest at
    # epoch 9 (0.696), the last 5 epochs average 0.95; training there 0.68, last 5 epochs 0.32
    assert (r.val_loss_min_epoch, r.val_loss_rise, r.train_loss_change) == (
        8,
        pytest.approx(0.36),
        pytest.approx(-0.48),
    )
    assert r.val_loss_min_epoch_smoothed == 9 and r.val_loss_rise_smoothed == pytest.approx(0.254)
    assert r.train_loss_change_smoothed == pytest.approx(-0.36) and not r.still_falling
    assert per_run.loc["masked_s1", "still_falling"]
    table = ta.overfitting_table(epochs).set_index("variant")
    rises = per_run.loc[[f"official_s{s}" for s in range(3)], "val_loss_rise_smoothed"]
    iv = stats.mean_interval(rises)
    row = table.loc["official"]
    assert (row.val_loss_rise_smoothed_low, row.val_loss_rise_smoothed_high) == pytest.approx((iv.low, iv.high))
    text = tr.overfitting_markdown(table.reset_index())
    lines = {line.split("`")[1]: line for line in text.splitlines() if line.startswith("- `")}
    assert lines["official"].startswith(f"- `official`: overfitting: training loss fell by 0.360 while validation loss "
                                        f"rose by {iv.mean:.3f} (95% CI {iv.low:+.3f} to {iv.high:+.3f})")  # fmt: skip
    assert "validation loss still falling: not overfitting by this measure" in lines["masked"]
    assert "one seed: no interval, no verdict" in lines["no_disc"]
    fig = figs.plot_train_vs_val_loss(epochs)
    check_figure(fig)
    assert fig.axes[0].get_title().endswith("validation minimum at epoch 8")  # official (the reference) first
    assert "validation minimum at epoch 20" in fig.axes[1].get_title()  # masked: still falling


def test_overfitting_says_not_measured_without_losses(tmp_path, fake_run):
    fake_run(tmp_path, "official_s0", [2.0, 2.4, 2.3], 0, epoch_columns={"val_loss": np.nan})
    epochs = _load(tmp_path)[0]
    assert ta.overfitting_table(epochs).empty and figs.plot_train_vs_val_loss(epochs) is None
    assert "not measured" in tr.overfitting_markdown(ta.overfitting_table(epochs))


COLLAPSE_CONFIG = {"synthetic_n_train": 2, "fixed_crops": True, "cut_len": 8000, "batch_size": 2, "epochs": 50,
                   "num_channel": 16, "lr_g": 0.002, "val_max_files": 8}  # fmt: skip


def test_regime_markdown_names_the_conditions_and_opens_the_verdict(tmp_path, fake_run):
    for seed in range(2):
        fake_run(tmp_path, f"official_s{seed}", _collapse_curve(50), 0, config=COLLAPSE_CONFIG)
    fake_run(tmp_path, "masked_s0", _collapse_curve(30), 0, steps_per_epoch=3,
             config={**COLLAPSE_CONFIG, "data_dir": "/data/vb", "fixed_crops": False, "cut_len": 32000,
                     "val_max_files": None, "train_repeat": 4})  # fmt: skip
    rep = tr.build_report(tmp_path)
    text = tr.regime_markdown(rep.configs, rep.epochs, rep.steps)
    assert text.startswith(
        "Regime: **2 synthetic training clips, one fixed 0.5 s crop each, batch 2, 4 steps per epoch, 50 epochs and "
        "up to 200 steps per run (from the logs), a 16-channel model, lr_g 0.002, 8 validation files** (2 runs); "
    )
    assert ("**the data folder's training clips, a new random 2 s crop each visit, each clip visited 4 times an "
            "epoch, batch 2, 3 steps per epoch, 50 epochs and up to 90 steps per run (from the logs), a 16-channel "
            "model, lr_g 0.002, all validation files** (1 run).") in text  # fmt: skip
    assert "epochs and" not in tr.regime_markdown(rep.configs, rep.epochs)  # no step log: epochs only
    verdict = tr.verdict_markdown(rep.comparisons, rep.per_variant, regime=text)
    assert verdict.splitlines()[2] == text
    old = rep.configs[["run", *ta.CONFIG_KEYS]].iloc[:1]  # masked_s0 without the regime keys: only what is known
    assert tr.regime_markdown(old, rep.epochs.iloc[:0]) == (
        "Regime: **a new random 2 s crop each visit, batch 2, all validation files** (1 run).")  # fmt: skip


def test_a_shallower_generator_is_named_and_a_config_without_the_key_had_four_blocks(tmp_path, fake_run):
    """num_tscb is part of the regime: 1 block is said; a run whose config predates the key trained 4 (the code
    then had no other), so it is the same regime as a run that writes num_tscb 4, not a mixed one."""
    fake_run(tmp_path, "official_s0", _collapse_curve(50), 0, config=COLLAPSE_CONFIG)  # no num_tscb: from before
    fake_run(tmp_path, "official_s1", _collapse_curve(50), 0, config={**COLLAPSE_CONFIG, "num_tscb": 4})
    rep = tr.build_report(tmp_path)
    assert list(rep.configs.num_tscb) == [4, 4]
    regime = tr.regime_markdown(rep.configs, rep.epochs)
    assert "a 16-channel model, lr_g 0.002, 8 validation files** (2 runs)." in regime
    fake_run(tmp_path, "masked_s0", _collapse_curve(50), 0, config={**COLLAPSE_CONFIG, "num_tscb": 1})
    rep = tr.build_report(tmp_path)
    regime = tr.regime_markdown(rep.configs, rep.epochs)
    assert "a 16-channel, 1-TSCB model, lr_g 0.002, 8 validation files** (1 run)" in regime


def test_smoothed_measures_need_ten_epochs(tmp_path, fake_run):
    """Under 10 epochs the 5-epoch peak (or minimum) and the mean of the last 5 epochs share most epochs: no
    smoothed drop, and the overfitting sentence says the runs are too short (never a made-up 0)."""
    for seed in range(3):
        fake_run(tmp_path, f"official_s{seed}", [2.0, 2.4, 2.3, 2.2, 2.1, 2.0, 1.9, 1.8, 1.7], 0)
    epochs, _, per_seed = _load(tmp_path)
    assert per_seed.drop_smoothed.isna().all() and (per_seed.drop_after_peak > 0).all()
    text = tr.overfitting_markdown(ta.overfitting_table(epochs))
    assert "too short for the smoothed measure (9 epochs; it needs 10)" in text
    table = ta.compare_variants(per_seed.assign(variant=["a", "official", "official"]), [["a", "official"]])
    assert table.set_index("quantity").loc["drop_smoothed", "verdict"].endswith("not measured")


def _curves(shape, seeds=3, noise=0.03, epochs=20, rng_seed=1):
    rng = np.random.default_rng(rng_seed)
    rows = []
    for seed in range(seeds):
        for ep in range(1, epochs + 1):
            rows.append(dict(variant="v", seed=seed, epoch=ep, val_pesq=shape(ep) + rng.normal(0, noise)))
    return pd.DataFrame(rows)


def test_smoothed_drops_of_many_curves_are_each_curves_smoothed_drop():
    curves = np.random.default_rng(1).normal(0, 1, (6, 15)).cumsum(axis=1)
    curves[0, :3] = [5.0, 1.0, 5.0]  # ends over fewer epochs than the window (min_periods)
    expected = [ta.smoothed_drop(np.arange(15), c)[0] for c in curves]
    assert ta.smoothed_drops(curves) == pytest.approx(expected, abs=1e-12)
    assert np.allclose(ta.smoothed_rows(curves), [ta.smoothed(c) for c in curves], atol=1e-12, equal_nan=True)


@pytest.mark.parametrize("epochs", [10, 23, 40])
def test_the_flat_null_floor_is_the_mean_smoothed_drop_of_its_draws_one_curve_at_a_time(epochs):
    """The noise floor of the collapse verdicts: the seeded draws of `draws` flat curves with the run's residual
    SD, each curve's smoothed drop, averaged (as the committed reports computed it, one curve at a time)."""
    v = 2.5 + 0.03 * np.sin(np.arange(epochs)) + np.random.default_rng(epochs).normal(0, 0.05, epochs)
    sd = float(np.std(v - ta.smoothed(v), ddof=1)) / np.sqrt(1 - 1 / ta.SMOOTH_WINDOW)
    rng = np.random.default_rng(7)
    one_at_a_time = np.mean([ta.smoothed_drop(np.arange(epochs), rng.normal(0, sd, epochs))[0] for _ in range(50)])
    assert ta.flat_null_drop(v, draws=50, seed=7) == pytest.approx(one_at_a_time, abs=1e-12)
    assert np.isnan(ta.flat_null_drop(v[:9]))


def test_collapse_table_calls_a_rise_and_fall_a_collapse_and_a_flat_or_rising_curve_not():
    fall = ta.collapse_table(_curves(lambda ep: 2.0 + 0.1 * min(ep, 6) - 0.04 * max(ep - 6, 0)))
    assert fall.verdict.iloc[0] == "collapse" and fall.drop_smoothed.iloc[0] > 0.4
    assert 4 <= fall.peak_epoch.iloc[0] <= 8
    flats = [ta.collapse_table(_curves(lambda ep: 2.5, noise=0.08, rng_seed=s)) for s in range(20)]
    assert np.mean([f.drop_smoothed.iloc[0] for f in flats]) > 0.02  # pure noise still drops on average ...
    assert sum(f.verdict.iloc[0] == "collapse" for f in flats) <= 3  # ... the noise floor keeps it from a verdict
    rising = ta.collapse_table(_curves(lambda ep: 2.0 + 0.05 * ep))
    assert rising.verdict.iloc[0] == "no collapse" and rising.drop_smoothed.iloc[0] < 0
    text = tr.collapse_markdown(pd.concat([fall.assign(variant="fall"), flats[0].assign(variant="flat")]))
    assert "`fall` (3 seeds, 20 epochs)" in text and "**collapse**" in text
    short = ta.collapse_table(_curves(lambda ep: 2.5, epochs=6))
    assert "not measured" in tr.collapse_markdown(short)


def test_the_tables_are_written_whole_then_renamed(tmp_path, fake_run, monkeypatch):
    """`make study` runs notebook 01 beside 02, and 01 reads 02's training_comparisons.csv when it is there: each
    table is written to a temporary file and renamed, so a reader sees the whole table or none."""
    for seed in range(2):
        fake_run(tmp_path / "runs", f"official_s{seed}", [2.0, 2.4, 2.2], 0)
        fake_run(tmp_path / "runs", f"masked_s{seed}", [2.0, 2.5, 2.4], 0, config={"pesq_strategy": "masked"})
    renamed = []
    real_replace = os.replace

    def replace(src, dst):
        renamed.append((Path(src).name, Path(dst).name, pd.read_csv(src).shape))  # whole before the rename
        real_replace(src, dst)

    monkeypatch.setattr(tr.os, "replace", replace)
    rep = tr.build_report(tmp_path / "runs")
    paths = rep.write_csvs(tmp_path / "out")
    assert [(src, dst) for src, dst, _ in renamed] == [(f".{p.name}.tmp", p.name) for p in paths]
    assert [shape for *_, shape in renamed] == [pd.read_csv(p).shape for p in paths]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(p.name for p in paths)  # no temporary left
