"""The confirmatory analysis (issue 33, docs/analysis_plan.md) on synthetic logs chosen to make each rule decide."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cmgan_lib.analysis import confirmatory as cf
from cmgan_lib.reports import report_confirmatory as rc  # the words of the bottom line (plan section 9)

ROOT = Path(__file__).resolve().parents[1]
EPOCHS = 12


@pytest.fixture(scope="module")
def plan() -> cf.Plan:
    return cf.load_plan(ROOT / cf.PLAN_YAML)


def write_grid(
    root: Path,
    fake_run,
    levels: dict[tuple[str, int], float],
    first_loss=None,
    epochs: int = EPOCHS,
    config: dict | None = None,
):
    """One flat run per (variant, seed) at validation PESQ `level` (a tiny wiggle); the first step's losses are
    the seed's own (identical across variants) unless `first_loss[(variant, seed)]` overrides loss_ri."""
    for (variant, seed), level in levels.items():
        curve = level + 0.001 * np.sin(np.arange(epochs) + seed)
        ri = (first_loss or {}).get((variant, seed), 1.0 + seed / 100)
        fake_run(root, f"{variant}_s{seed}", curve, 0, steps_per_epoch=2,
                 step_columns={"loss_ri": ri, "loss_mag": 0.5 + seed / 100, "loss_time": 0.3},
                 config={"epochs": epochs, **(config or {})})  # fmt: skip
    return root


def test_the_plan_is_read_as_committed(plan):
    assert plan.alpha == 0.05 and plan.margin == 0.1 and plan.primary == "late_val_pesq"
    assert len(plan.contrasts) == 8 and ("batch_mean_p56", "official_p56") in plan.contrasts
    assert plan.seeds == tuple(range(100, 108)) and plan.dose[0.56] == "official_p56" and plan.phi == 0.8
    assert plan.replay_rules["document"] == ("val_loss", 15, 1e-4)


def test_late_pesq_is_the_mean_of_the_last_five_epochs(tmp_path, fake_run):
    curve = np.r_[np.linspace(2.0, 3.0, 7), [2.1, 2.2, 2.3, 2.4, 2.5]]
    fake_run(tmp_path, "official_s1", curve, 0, config={"epochs": 12})
    runs = cf.load_finished(tmp_path)
    ep = cf.endpoints(runs.epochs, runs.steps)
    assert ep.late_val_pesq.iloc[0] == pytest.approx(2.3)
    assert ep.best_val_pesq.iloc[0] == pytest.approx(3.0) and ep.best_epoch.iloc[0] == 7


def test_a_live_run_without_done_json_does_not_count(tmp_path, fake_run):
    fake_run(tmp_path, "official_s1", [2.0] * 12, 0, config={"epochs": 12})
    live = fake_run(tmp_path, "official_s2", [2.0] * 12, 0, config={"epochs": 12}, finished=False)  # done.json next
    (live / "last.pt").write_bytes(b"")
    copied = fake_run(tmp_path, "official_s3", [2.0] * 12, 0, config={"epochs": 12}, finished=False)  # a report's copy
    assert [d.name for d in cf.finished_runs(tmp_path)] == ["official_s1", copied.name]


def test_holm_levels_and_adjusted_p_on_a_known_family():
    rejected, adjusted, level = cf.holm([0.01, 0.5, 0.02, 0.03], 0.05)
    assert list(rejected) == [True, False, False, False]
    assert adjusted == pytest.approx([0.04, 0.5, 0.06, 0.06])
    assert level == pytest.approx([1 - 0.05 / 4, 1 - 0.05 / 3, 1 - 0.05 / 3, 1 - 0.05 / 3])


def frames(levels: dict[tuple[str, int], float]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(endpoints, first steps) in memory: the late PESQ of each (variant, seed); step 1 identical per seed."""
    ep = pd.DataFrame([dict(run=f"{v}_s{s}", variant=v, seed=s, late_val_pesq=x) for (v, s), x in levels.items()])
    steps = ep[["run", "variant", "seed"]].assign(epoch=1, step=1, loss_ri=1.0 + ep.seed, loss_mag=0.5, loss_time=0.3)
    return ep, steps


def test_holm_adjusted_intervals_exclude_zero_exactly_when_rejected(plan):
    rng = np.random.default_rng(3)
    seen = []
    for _ in range(20):
        levels = {}
        effects = {v: rng.choice([0.0, 0.04, 0.2]) for v in ("official_p82", "frozen_disc", "no_disc", "clip5")}
        for seed in range(5):
            base = 2.5 + rng.normal(0, 0.2)
            levels[("official", seed)] = base
            levels[("official_p56", seed)] = base + rng.normal(0, 0.3)
            for v, effect in effects.items():  # effects from none to clear
                levels[(v, seed)] = base + effect + rng.normal(0, 0.05)
        ep, steps = frames(levels)
        fam = cf.family_table(ep, steps, plan.contrasts, "late_val_pesq", plan)
        excludes = (fam.adj_low > 0) | (fam.adj_high < 0)
        assert list(excludes) == list(fam.differs), fam[["treatment", "p", "p_holm", "adj_low", "adj_high"]]
        assert list(fam.differs) == list(fam.p_holm < plan.alpha) and fam.family_m.iloc[0] == 5
        seen += list(fam.differs)
    assert 5 < sum(seen) < len(seen) - 5  # both outcomes, many times


def test_paired_interval_decides_where_welch_is_inconclusive(tmp_path, fake_run, plan):
    levels = {}
    for seed, base in enumerate([2.0, 2.4, 2.8, 3.2, 2.6]):  # seeds far apart, the effect the same in each
        levels[("official", seed)] = base
        levels[("no_disc", seed)] = base - 0.3 + 0.01 * (seed % 2)
    runs = cf.load_finished(write_grid(tmp_path, fake_run, levels))
    ep = cf.endpoints(runs.epochs, runs.steps)
    row = cf.family_table(ep, runs.steps, [("no_disc", "official")], "late_val_pesq", plan).iloc[0]
    assert row.welch_low < 0 < row.welch_high  # unpaired: no verdict
    assert row.method == "paired" and row.verdict == "differs" and row.adj_high < -0.25
    assert row.pairing_reason == ""


def test_a_failed_pairing_falls_back_to_welch_with_the_reason(tmp_path, fake_run, plan):
    levels = {(v, s): 2.5 + 0.1 * s for v in ("official", "no_disc") for s in range(4)}
    write_grid(tmp_path, fake_run, levels, first_loss={("no_disc", 2): 1.5})
    runs = cf.load_finished(tmp_path)
    ep = cf.endpoints(runs.epochs, runs.steps)
    row = cf.family_table(ep, runs.steps, [("no_disc", "official")], "late_val_pesq", plan).iloc[0]
    assert row.method == "welch"
    assert "seed 2" in row.pairing_reason and "loss_ri" in row.pairing_reason
    assert "1.5" in row.pairing_reason and "1.02" in row.pairing_reason
    ok = cf.pairing_check(runs.steps, "no_disc", "official", [0, 1, 3], plan.pairing_columns, plan.rtol)
    assert ok.paired and ok.seeds == (0, 1, 3)


def test_tost_says_equivalent_only_inside_the_margin(tmp_path, fake_run, plan):
    levels = {}
    for seed, base in enumerate([2.0, 2.4, 2.8, 3.2, 2.6, 2.2]):
        levels[("official", seed)] = base
        levels[("clip5", seed)] = base + (0.02 if seed % 2 else -0.01)  # small, consistent within 0.1
        levels[("official_p82", seed)] = base - 0.3 + (0.02 if seed % 2 else -0.01)
    runs = cf.load_finished(write_grid(tmp_path, fake_run, levels))
    ep = cf.endpoints(runs.epochs, runs.steps)
    fam = cf.family_table(ep, runs.steps, [("clip5", "official"), ("official_p82", "official")], "late_val_pesq", plan)
    clip, p82 = fam.iloc[0], fam.iloc[1]
    assert clip.verdict == "equivalent within 0.1" and clip.equivalent_unadjusted
    assert p82.verdict == "differs" and not p82.equivalent
    # p_TOST < alpha exactly when the (1 - 2 alpha) interval lies inside the margin
    for mean, se in [(0.02, 0.02), (0.05, 0.03), (0.08, 0.01), (-0.09, 0.02), (0.0, 0.07)]:
        t = cf.TStat(mean, se, 5.0, 6, "paired")
        lo, hi = t.interval(0.9)
        assert (t.p_tost(0.1) < 0.05) == (lo > -0.1 and hi < 0.1)


def test_differs_by_less_than_the_margin():
    assert cf.verdict(True, True, True, 0.1) == "differs, by less than 0.1"
    assert cf.verdict(False, False, True, 0.1) == "inconclusive"
    assert rc.advice("inconclusive", -0.3) == "not settled"  # never "no effect" from an inconclusive contrast
    assert rc.advice("differs", -0.2) == "it hurts" and rc.advice("differs", 0.2) == "apply it"


def test_dose_slope_recovers_a_planted_slope():
    rng = np.random.default_rng(0)
    xs, ys, gs = [], [], []
    for seed in range(8):
        offset = rng.normal(0, 0.5)  # seeds far apart: only seed fixed effects give a narrow interval
        for x in (0.0, 0.56, 0.82, 1.0):
            xs.append(x), ys.append(2.5 + offset - 0.2 * x + rng.normal(0, 0.02)), gs.append(seed)
    r = cf.fixed_effects_slope(xs, ys, gs, margin=0.1)
    assert r["df"] == 32 - 8 - 1
    assert r["ci95_low"] < -0.2 < r["ci95_high"] and r["ci95_high"] - r["ci95_low"] < 0.06
    assert r["significant"] and not r["flat"]
    flat = cf.fixed_effects_slope(xs, [y + 0.2 * x for x, y in zip(xs, ys, strict=True)], gs, margin=0.1)
    assert flat["flat"] and not flat["significant"]


def _epochs(curves: dict[str, np.ndarray]) -> pd.DataFrame:
    rows = [dict(run=f"{v}_s0", variant=v, seed=0, epoch=i + 1, val_pesq=x) for v, c in curves.items()
            for i, x in enumerate(c)]  # fmt: skip
    return pd.DataFrame(rows)


def test_ar1_null_flags_a_planted_collapse_and_mostly_not_a_flat_curve(plan):
    rng = np.random.default_rng(5)
    n = 40
    noise = 0.03 * cf.ar1_curves(n, 0.8, 60, rng) * math.sqrt(1 - 0.8**2)
    trend = np.r_[np.linspace(2.0, 3.0, 10), np.linspace(3.0, 2.5, 30)]
    curves = {"collapse": trend + noise[0]} | {f"flat{i}": 2.5 + noise[i] for i in range(1, 60)}
    per_run = cf.collapse_runs(_epochs(curves), [0.8], 2000, 0.95)
    flags = per_run.set_index("variant").collapsed
    assert flags["collapse"]
    assert flags.drop("collapse").mean() < 0.15  # about 5% of flat AR(1) curves exceed the 95th percentile
    white = cf.collapse_runs(_epochs(curves), [0.0], 2000, 0.95).set_index("variant").collapsed
    assert white.drop("collapse").mean() > flags.drop("collapse").mean()  # the white-noise floor is optimistic


def test_replay_keeps_the_best_epoch_on_its_monitor_and_stops_after_patience():
    pesq = [1.0, 2.0, 3.0, 2.9, 2.8, 2.7, 2.6, 2.5, 3.5]
    assert cf.replay_rule(pesq, "max", 3, 1e-4) == (6, 3, True)
    assert cf.replay_rule(pesq, "max", 15, 1e-4) == (9, 9, False)  # never stops: trains to the end
    loss = [0.5, 0.4, 0.41, 0.3999, 0.39, 0.395, 0.396]
    assert cf.replay_rule(loss, "min", 2, 1e-3) == (4, 2, True)  # 0.3999 improves by less than min_delta
    from cmgan_lib.training.train import EarlyStopping

    seq = list(np.random.default_rng(2).normal(0, 1, 30).cumsum())
    stopper, stop = EarlyStopping(4, 0.1, "max"), None
    for i, x in enumerate(seq, start=1):
        stopper.update(x, i)
        if stopper.should_stop:
            stop = i
            break
    assert cf.replay_rule(seq, "max", 4, 0.1)[:2] == (stop, stopper.best_epoch)


def test_replay_table_reads_the_kept_epoch_against_late_and_best():
    curve = np.r_[np.linspace(2.0, 3.0, 6), np.linspace(2.9, 2.0, 14)]
    table = cf.replay(_epochs({"official": curve}), {"pesq5": ("val_pesq", 5, 1e-4)}).iloc[0]
    assert table.kept_epoch == 6 and table.stop_epoch == 11 and table.saved == pytest.approx(9 / 20)
    assert table.kept_minus_best == 0 and table.kept_minus_late == pytest.approx(3.0 - curve[-5:].mean())


def test_bottom_line_is_interim_with_seed_counts(tmp_path, fake_run, plan):
    variants = ("official", "official_p56", "batch_mean_p56", "clip5")  # the others not finished yet
    levels = {(v, s): 2.5 + 0.1 * s - (0.2 if v != "official" else 0) for v in variants for s in (100, 101, 102)}
    write_grid(tmp_path, fake_run, levels)
    a = cf.analyse(tmp_path, plan, planned_seeds=plan.seeds)
    lines = rc.bottom_line(a, denormalized="measured: 0.000 PESQ apart")
    assert a.interim and lines[0].startswith("**INTERIM**") and "`official` 3" in lines[0] and "`no_disc` 0" in lines[0]
    skip = next(x for x in lines if x.startswith("**Skipped"))
    assert "it hurts" in skip and "Holm-adjusted" in skip and "per 100% skipped" in skip
    assert any(x.startswith("**Batch-mean labels**: it does not matter") or "not settled" in x for x in lines)
    assert lines[-1].endswith("measured: 0.000 PESQ apart")
    assert rc.interim_label(cf.analyse(tmp_path, plan)) == ""  # no plan of seeds (the exploration): no label
    md = rc.write_bottom_line(tmp_path / "analysis", a, lines, "abc1234 2026-12-07").read_text()
    assert md.startswith("## Bottom line for practitioners\n") and "commit abc1234" in md and "**INTERIM**" in md
    assert all(f"- {x}" in md for x in lines)  # the same words as the notebook shows, none retyped


def test_the_bottom_lines_scope_is_the_regime_the_runs_trained_in(tmp_path, fake_run, plan):
    """Each sentence's scope is read from the runs' configs: a grid on real speech with a 32-channel model must
    not be called the synthetic 16-channel regime (the scope was a fixed sentence before)."""
    levels = {(v, s): 2.5 + 0.1 * s for v in ("official", "official_p56", "clip5") for s in (100, 101, 102)}
    write_grid(tmp_path / "w32", fake_run, levels, config=dict(
        num_channel=32, data_dir="runs/vb_regime/speech", cut_len=16000, fixed_crops=True, batch_size=2,
        lr_g=0.002, val_max_files=4))  # fmt: skip
    lines = rc.bottom_line(cf.analyse(tmp_path / "w32", plan, planned_seeds=plan.seeds))
    skip = next(x for x in lines if x.startswith("**Skipped"))
    scope = skip.split("Scope: ")[1]
    assert "a 32-channel model" in scope and "one fixed 1 s crop each" in scope and "12 epochs" in scope
    assert "synthetic" not in scope and "16" not in scope
    write_grid(tmp_path / "syn", fake_run, levels, config=dict(synthetic_n_train=2, num_channel=16))
    write_grid(tmp_path / "syn", fake_run, {("official", 103): 2.5}, config=dict(synthetic_n_train=4,
                                                                                 num_channel=16))  # fmt: skip
    scope = rc.scope_words(cf.analyse(tmp_path / "syn", plan))
    assert scope.startswith("this regime (2 synthetic training clips") and "a 16-channel model" in scope
    assert scope.endswith("12 epochs; 1 of the 10 runs in 1 other regime)")  # official_s103: 4 clips


def test_the_denormalized_sentence_is_notebook_01s_scale_audit(tmp_path):
    """The bottom line's verdict on denormalized PESQ comes from the claims table's scale-audit rows: refuted
    everywhere reads 'does not matter' with the measured numbers; a supported row reads 'it matters'."""
    from cmgan_lib.reports.report_01_claims import CLAIMS

    assert rc.denormalized_words(tmp_path / "claims.csv") is None  # no audit: the bottom line points to notebook 01
    rows = [("a", CLAIMS[0], "audit: x", "failed crops 1 of 50", "below the claim"),
            ("c", CLAIMS[2], "real speech: 49 crops, c in 6.44-125", "max |PESQ(cx,cy) - PESQ(x,y)| = 0.000806",
             "refuted: PESQ is scale invariant (within 0.01)"),
            ("c", CLAIMS[2], "synthetic: 86 crops, c in 9.9-990", "max |PESQ(cx,cy) - PESQ(x,y)| = 0.000144",
             "refuted: PESQ is scale invariant (within 0.01)")]  # fmt: skip
    table = pd.DataFrame(rows, columns=["letter", "claim", "condition", "measured", "verdict"])
    table.to_csv(tmp_path / "claims.csv", index=False)
    words = rc.denormalized_words(tmp_path / "claims.csv")
    assert words.startswith("it does not matter") and "0.000806" in words and "synthetic: 86 crops" in words
    table.loc[2, "verdict"] = "supported: scaling changes PESQ by up to 0.2"
    table.to_csv(tmp_path / "claims.csv", index=False)
    assert rc.denormalized_words(tmp_path / "claims.csv").startswith("it matters")
    table[table.letter == "a"].to_csv(tmp_path / "claims.csv", index=False)
    assert rc.denormalized_words(tmp_path / "claims.csv") is None


def _test_scores(run: Path, scores: dict[str, list[float]], excluded: str = "") -> None:
    """RUN/test/metrics_per_file.csv as evaluate_runs writes it: file name -> PESQ, one file failed to score."""
    variant, seed = run.name.rsplit("_s", 1)
    rows = [dict(run=run.name, variant=variant, seed=int(seed), name=f"{spk}_{i:03d}.wav", pesq=v, reason=None)
            for spk, values in scores.items() for i, v in enumerate(values)]  # fmt: skip
    if excluded:
        rows.append(dict(run=run.name, variant=variant, seed=int(seed), name=excluded, pesq=None, reason="silent"))
    (run / "test").mkdir()
    pd.DataFrame(rows).to_csv(run / "test" / "metrics_per_file.csv", index=False)


def test_per_speaker_contrasts_are_paired_unadjusted_and_skip_unscored_files(tmp_path, fake_run, plan):
    """R-vb per speaker: no_disc is 0.3 worse on the training speaker p232 only; a file that could not be scored
    counts for nothing (it would pull p257's mean to 0)."""
    levels = {(v, s): 2.0 for v in ("official", "no_disc") for s in range(5)}
    write_grid(tmp_path, fake_run, levels)
    for variant, seed in levels:
        base = 2.0 + 0.2 * seed + 0.01 * (seed % 2) * (variant == "no_disc")
        shift = -0.3 if variant == "no_disc" else 0.0
        _test_scores(tmp_path / f"{variant}_s{seed}", {"p232": [base + shift, base + shift + 0.1],
                                                       "p257": [base - 0.5, base - 0.4, base - 0.3]},
                     excluded="p257_999.wav")  # fmt: skip
    scores = cf.test_scores(tmp_path)
    assert len(scores) == 10 * 2 and set(scores.files) == {2, 3}
    fam = cf.per_speaker_family(tmp_path, plan).set_index("speaker")
    assert list(fam.index) == ["p232", "p257"] and (fam.method == "paired").all() and (fam.n == 5).all()
    assert fam.loc["p232", "difference"] == pytest.approx(-0.3, abs=0.01)
    assert fam.loc["p232", "verdict"] != cf.INCONCLUSIVE
    assert abs(fam.loc["p257", "difference"]) < 0.01 and fam.loc["p257", "files"] == "3"
    assert (fam.family_m == 1).all() and (fam.holm_level == 1 - plan.alpha).all()  # exploratory: no adjustment
    view = rc.per_speaker_display(fam.reset_index())
    assert list(view.contrast) == ["no_disc - official"] * 2
    assert view.iloc[0]["difference"] == f"{fam.loc['p232', 'difference']:+.3f}" and view.iloc[0]["speaker"] == "p232"
    assert cf.per_speaker_family(tmp_path / "no such root", plan).empty


def test_replication_family_is_one_holm_family_over_every_root(tmp_path, fake_run, plan):
    for name, effect in (("syn1", -0.3), ("syn2", 0.0)):
        levels = {}
        for seed in range(5):
            levels[("official", seed)] = 2.0 + 0.2 * seed
            levels[("no_disc", seed)] = 2.0 + 0.2 * seed + effect + 0.01 * (seed % 2)
        write_grid(tmp_path / name, fake_run, levels)
    rep = cf.replication_family({"R-syn1": tmp_path / "syn1", "R-syn2": tmp_path / "syn2",
                                 "R-none": tmp_path / "none"}, plan).set_index("replication")  # fmt: skip
    assert list(rep.index) == ["R-syn1", "R-syn2"] and (rep.family_m == 2).all() and (rep.seeds == 5).all()
    assert rep.loc["R-syn1", "difference"] == pytest.approx(-0.3, abs=0.01)
    assert rep.loc["R-syn1", "holm_level"] == pytest.approx(1 - plan.alpha / 2)  # Holm over the two


def test_a_replication_with_one_seed_or_fewer_than_planned_is_not_read_as_agreeing_or_not(tmp_path, fake_run, plan):
    """The bottom line once read 'R-syn1 does not agree (-0.061, not measured, 1 seeds)' from a replication that
    had trained one seed: one without a verdict is 'not measured yet', and one with fewer seeds than its grid's
    grid.yaml plans agrees or not 'so far'."""
    grids = {"one": ([0], 5), "part": ([0, 1, 2], 5), "done": ([0, 1, 2, 3, 4], 5), "kept": ([0, 1, 2], None)}
    for name, (seeds, planned) in grids.items():
        levels = {}
        for seed in seeds:
            levels[("official", seed)] = 2.0 + 0.2 * seed
            levels[("official_p82", seed)] = 2.0 + 0.2 * seed - 0.3 + 0.01 * (seed % 2)
        write_grid(tmp_path / name / "runs", fake_run, levels)
        if planned:
            (tmp_path / name / "grid.yaml").write_text(f"seeds: {list(range(100, 100 + planned))}\n")
    roots = {f"R-{name}": tmp_path / name / "runs" for name in grids}
    rep = cf.replication_family(roots, plan)
    by = rep.set_index("replication")
    assert list(by.planned_seeds.fillna(0)) == [5, 5, 5, 0] and list(by.seeds) == [1, 3, 5, 3]
    assert by.loc["R-one", "verdict"] == cf.NOT_MEASURED
    fake_run(tmp_path / "part" / "runs", "official_s3", [2.6] * 12, 0, config={"epochs": 12})  # no pair for seed 3
    assert cf.replication_family({"R-part": tmp_path / "part" / "runs"}, plan).seeds.tolist() == [3]
    main = pd.Series(dict(verdict=cf.DIFFERS, difference=-0.3))
    words = rc.replication_words(rep, ("official_p82", "official"), main)
    assert "R-one not measured yet (1 of 5 planned seeds)" in words
    assert "R-part agrees so far (-0.29" in words and "differs, 3 of 5 planned seeds)" in words
    assert "R-done agrees (-0.29" in words and "differs, 5 of 5 planned seeds)" in words
    assert "R-kept agrees (" in words and ", 3 seeds)" in words
    inconclusive = rc.replication_words(rep, ("official_p82", "official"), main.replace(cf.DIFFERS, cf.INCONCLUSIVE))
    assert "R-one not measured yet" in inconclusive and "R-done does not agree (" in inconclusive
    view = rc.replication_display(rep)
    assert view.columns[0] == "replication" and list(view.columns).count("seeds") == 1
    assert list(view.seeds) == ["1 of 5 planned seeds", "3 of 5 planned seeds", "5 of 5 planned seeds", "3 seeds"]
