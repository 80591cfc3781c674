"""Issue 33, deliver 4: notebook 02's comparisons pair by seed when the pairing holds (Welch otherwise, with the
reason), judge an early-stopping variant as a replay of its reference, and say how often clipping acts."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest

from cmgan_lib.analysis import pairing
from cmgan_lib.analysis import training_analysis as ta
from cmgan_lib.reports import report_02_training as tr
from cmgan_lib.training import runs

matplotlib.use("Agg")

SEED_LEVEL = (0.0, 0.5, 1.0)  # seeds land far apart; the variant is 0.1 lower than the reference on every seed


def _load(root):
    epochs, steps = runs.load_runs(root)
    per_seed = ta.run_summary(epochs, steps, ta.load_run_configs(root))
    return epochs, steps, per_seed


def _paired_runs(root, fake_run, loss_ri=None, effect: float = -0.1):
    """official and `x` on seeds 0-2: each seed shifts both by SEED_LEVEL, `x` is `effect` off plus a tiny jitter.
    loss_ri: per (variant, seed) step-1 loss, else the step logs have no loss columns."""
    for seed, level in enumerate(SEED_LEVEL):
        for variant, shift in (("official", 0.0), ("x", effect + 0.005 * (seed - 1))):
            cols = None
            if loss_ri is not None:
                cols = {"loss_ri": loss_ri(variant, seed), "loss_mag": 0.3, "loss_time": 0.2}
            fake_run(root, f"{variant}_s{seed}", [2.0 + level + shift, 2.4 + level + shift, 2.3 + level + shift], 0,
                     step_columns=cols)  # fmt: skip


def test_paired_interval_decides_where_welch_is_inconclusive(tmp_path, fake_run):
    _paired_runs(tmp_path, fake_run, loss_ri=lambda v, s: 1.0 + s)
    epochs, steps, per_seed = _load(tmp_path)
    table = ta.compare_variants(per_seed, [["x", "official"]], steps, epochs).set_index("quantity")
    best = table.loc["best_val_pesq"]
    assert best.method == "paired" and "step-1 loss_ri/loss_mag/loss_time identical" in best.pairing
    assert best.welch_low < 0 < best.welch_high  # Welch: the seed spread swamps a 0.1 difference
    assert best.ci95_high < 0 and best.verdict.startswith("best validation PESQ, x - official: lower by 0.100")
    text = tr.verdict_markdown(table.reset_index(), ta.variant_summary(per_seed))
    assert best.verdict in text and "**paired** by seed" in text


def test_welch_with_the_reason_when_step1_losses_differ(tmp_path, fake_run):
    _paired_runs(tmp_path, fake_run, loss_ri=lambda v, s: 1.0 + s + (0.5 if (v, s) == ("x", 1) else 0.0))
    epochs, steps, per_seed = _load(tmp_path)
    table = ta.compare_variants(per_seed, [["x", "official"]], steps, epochs).set_index("quantity")
    best = table.loc["best_val_pesq"]
    assert best.method == "Welch" and "seed 1: step-1 loss_ri 2.5 (x) vs 2 (official)" in best.pairing
    assert (best.ci95_low, best.ci95_high) == (best.welch_low, best.welch_high)
    assert "no detectable effect" in best.verdict and best.pairing in best.verdict


def test_welch_when_the_seeds_differ(tmp_path, fake_run):
    _paired_runs(tmp_path, fake_run)
    fake_run(tmp_path, "official_s7", [2.0, 2.4, 2.3], 0)
    per_seed = _load(tmp_path)[2]
    p = pairing.check_pairing(per_seed, "x", "official")
    assert not p.holds and p.reason.startswith("seeds differ (x: 0, 1, 2; official: 0, 1, 2, 7)")
    p = pairing.check_pairing(per_seed[per_seed.seed != 7], "x", "official")  # no step losses: paired, unchecked
    assert p.holds and "not checked" in p.reason and p.seeds == (0, 1, 2)


def _es_runs(root, fake_run, stop: int = 6, kept: int = 3, truncate: bool = True):
    """official: 10 epochs, peak at epoch `kept`, then falling; early_stopping: the same logs cut at `stop`
    (1-based), `best` = 1 on each improvement (the trainer's best.pt)."""
    for seed in range(3):
        curve = np.r_[np.linspace(2.0, 2.6, kept), np.linspace(2.55, 2.1, 10 - kept)] + 0.03 * seed
        best = (np.r_[curve[:1], np.diff(curve)] > 0).astype(int) if len(curve) else None
        fake_run(root, f"official_s{seed}", curve, 0, epoch_columns={"best": best})
        es = curve[:stop] + (0.0 if truncate else 0.01)
        fake_run(root, f"early_stopping_s{seed}", es, 0, early_stop_at=stop - 1, config={"early_stopping": True},
                 epoch_columns={"best": best[:stop]})  # fmt: skip


def test_early_stopping_is_a_replay_with_the_kept_checkpoint_as_final(tmp_path, fake_run):
    _es_runs(tmp_path, fake_run)
    epochs, steps, per_seed = _load(tmp_path)
    es = per_seed[per_seed.variant == "early_stopping"].set_index("seed")
    assert list(es.kept_epoch) == [3, 3, 3] and es.stopped_early.all()
    # final = the kept checkpoint (epoch 3, the peak), not the PESQ at the stopping epoch 6
    assert es.final_val_pesq.to_numpy() == pytest.approx(2.6 + 0.03 * np.arange(3))
    table = ta.compare_variants(per_seed, [["early_stopping", "official"]], steps, epochs).set_index("quantity")
    assert set(table.method) == {"replay"}
    final = table.loc["final_val_pesq"]
    assert final.difference == pytest.approx(2.6 - 2.1) and final.ci95_low > 0  # paired: every seed +0.5
    assert "stopped at epoch(s) 6, 6, 6, kept the checkpoint of epoch(s) 3, 3, 3" in final.verdict
    assert "not compared" in table.loc["drop_smoothed", "verdict"] and np.isnan(table.loc["drop_smoothed", "ci95_low"])


def test_early_stopping_that_is_not_a_truncation_is_judged_as_a_run(tmp_path, fake_run):
    _es_runs(tmp_path, fake_run, truncate=False)
    epochs, steps, per_seed = _load(tmp_path)
    assert pairing.check_truncation(per_seed, epochs, "early_stopping", "official").reason.startswith(
        "seed 0, epoch 1: validation PESQ differs"
    )
    table = ta.compare_variants(per_seed, [["early_stopping", "official"]], steps, epochs)
    assert set(table.method) == {"paired"}


def test_the_verdict_says_how_often_clipping_acts_on_g_and_on_d(tmp_path, fake_run):
    for seed in range(2):
        fake_run(tmp_path, f"official_s{seed}", [2.0, 2.4], 0)
        fake_run(tmp_path, f"clip5_s{seed}", [2.0, 2.4], 0, config={"grad_clip_norm": 5.0},
                 grad_norm_d=[6.0, 4.0, 7.0, 1.0, 2.0, 3.0, 8.0, 0.5])  # fmt: skip
    epochs, steps, per_seed = _load(tmp_path)
    per_variant = ta.variant_summary(per_seed)
    text = tr.verdict_markdown(ta.compare_variants(per_seed, [["clip5", "official"]], steps, epochs), per_variant)
    line = next(x for x in text.splitlines() if x.startswith("- Clipping"))
    assert "on the generator on 0 of 16" in line and "on the discriminator on 6 of 16 = 38%" in line
    assert tr.clip_acts_sentence(per_variant, "official") == ""
