"""Tests of cmgan_lib.report: claims verdicts, variant aggregation and intervals, run discovery."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from cmgan_lib import report
from cmgan_lib.metrics import METRIC_NAMES
from cmgan_lib.training_report import parse_run_name


def _verdicts(table: pd.DataFrame) -> list[str]:
    return table["verdict"].tolist()


def _claim1(table: pd.DataFrame) -> pd.DataFrame:
    return table[table["claim"] == report.CLAIMS[0]]


def test_skip_verdict_flips_with_the_logged_skip_rate(tmp_path):
    """The claim-1 verdict comes from the step logs: a run that skips ~56% is consistent, one that skips ~5% is
    below the claim (no hard-coded outcome)."""
    from test_audit import _run

    from cmgan_lib.audit import observed_rates

    rng = np.random.default_rng(0)
    high = (rng.random(200) < 0.56).astype(int)
    low = (rng.random(200) < 0.05).astype(int)
    _run(tmp_path / "high", "official_s0", "skip", high, high)
    _run(tmp_path / "low", "official_s0", "skip", low, low)
    v_high = _claim1(report.claims_table(observed=observed_rates(tmp_path / "high")))["verdict"].tolist()
    v_low = _claim1(report.claims_table(observed=observed_rates(tmp_path / "low")))["verdict"].tolist()
    assert v_high == ["consistent"] and v_low == ["below the claim"]
    # a batch_mean run never skips, but its natural failures say what the published rule would have done
    per_sample = rng.binomial(4, 0.186, 400)  # ~56% of batches of 4 hold a failure
    _run(tmp_path / "bm", "seed_fixes_s0", "batch_mean", [0] * 400, per_sample)
    bm = _claim1(report.claims_table(observed=observed_rates(tmp_path / "bm"))).iloc[0]
    assert bm.verdict == "consistent" and "published rule would skip" in bm.measured
    _run(tmp_path / "inj", "official_p186_s0", "skip", high, high, inject=0.186)
    assert _claim1(report.claims_table(observed=observed_rates(tmp_path / "inj"))).iloc[0].verdict.startswith("imposed")


def test_rate_verdict_rules():
    assert report.rate_verdict(0.4, 0.7) == "consistent"
    assert report.rate_verdict(0.0, 0.2) == "below the claim" and report.rate_verdict(0.7, 0.9) == "above the claim"
    assert report.rate_verdict(0.0, 0.93).startswith("inconclusive")
    assert report.rate_verdict(math.nan, 0.5) == "not measured"


def test_claims_table_other_claims_follow_the_numbers():
    scale = pd.DataFrame([{"dataset": "real", "n_both_valid": 50, "c_min": 5.0, "c_max": 30.0, "max_abs_diff": 2e-4}])
    t = report.claims_table(scale=scale, skip_logged_ours=math.nan, log_stats={"min_positive": 4e-6, "n_steps": 10})
    v = t.set_index("claim")["verdict"]
    assert (
        v[report.CLAIMS[1]].startswith("refuted") and "4e-06" in t.set_index("claim").loc[report.CLAIMS[1], "measured"]
    )
    assert v[report.CLAIMS[2]].startswith("refuted") and v[report.CLAIMS[3]] == "not measured"
    assert report.claims_table(scale=scale.assign(max_abs_diff=0.5)).set_index("claim").loc[
        report.CLAIMS[2], "verdict"].startswith("supported")  # fmt: skip
    assert report.claims_table(skip_logged_published=1e-6).set_index("claim").loc[
        report.CLAIMS[1], "verdict"].startswith("possible")  # fmt: skip
    fixed = pd.DataFrame(
        [{"run": "seed_fixes_s0", "epochs": 3, "n_steps": 30, "mean": 0.15, "low": 0.12, "high": 0.18}]
    )
    assert report.claims_table(fixed=fixed).set_index("claim").loc[report.CLAIMS[3], "verdict"] == "consistent"
    assert report.claims_table(fixed=fixed.assign(low=0.3, high=0.5, mean=0.4)).set_index("claim").loc[
        report.CLAIMS[3], "verdict"] == "above the claim"  # fmt: skip
    md = report.claims_markdown(report.claims_table(scale=scale, fixed=fixed))
    assert "does not hold wherever it was measured" in md and "## Verdict" in md


def test_skipped_batch_logs_nan_through_the_real_label_path():
    assert math.isnan(report.skipped_batch_logged_value())


def test_disc_loss_stats_from_step_logs(tmp_path):
    run = tmp_path / "masked_s0"
    run.mkdir()
    pd.DataFrame({"epoch": [1, 1, 2, 2], "disc_loss": [np.nan, 4e-6, 0.3, 0.1], "disc_skipped": [1, 0, 0, 0]}).to_csv(
        run / "training_step_log.csv", index=False
    )
    s = report.disc_loss_stats(run)
    assert s["n_steps"] == 4 and s["n_skipped"] == 1 and s["skipped_logged_nan"] is True
    assert s["min_positive"] == pytest.approx(4e-6)
    assert s["last_epoch_mean"] == pytest.approx(0.2)
    assert report.disc_loss_stats(None) == {}
    assert report.disc_loss_stats(tmp_path / "missing") == {}
    assert report.disc_loss_stats(tmp_path)["n_steps"] == 4  # a folder of run folders


def test_parse_run_name_and_find_runs(tmp_path):
    assert parse_run_name("seed_fixes_s12") == ("seed_fixes", 12)
    assert parse_run_name("official") == ("official", None)
    done = tmp_path / "runs" / "official_s0"
    done.mkdir(parents=True)
    (done / "done.json").write_text("{}")
    (done / "best.pt").write_bytes(b"")
    unfinished = tmp_path / "runs" / "masked_s0"
    unfinished.mkdir()
    (unfinished / "last.pt").write_bytes(b"")
    no_ckpt = tmp_path / "runs" / "failed_s0"
    no_ckpt.mkdir()
    (no_ckpt / "done.json").write_text("{}")
    assert report.find_finished_runs(tmp_path / "runs") == [done]
    assert report.find_finished_runs(tmp_path / "nothing") == []
    assert report.resolve_checkpoint(unfinished) == unfinished / "last.pt"
    assert report.run_identity(done / "best.pt") == ("official_s0", "official", 0)
    with pytest.raises(FileNotFoundError):
        report.resolve_checkpoint(no_ckpt)


def _per_file(values: dict[tuple[str, int], list[float]], noisy: list[float]) -> pd.DataFrame:
    rows = []
    for (variant, seed), vals in values.items():
        for i, v in enumerate(vals):
            row = {"run": f"{variant}_s{seed}", "variant": variant, "seed": seed, "name": f"f{i}", "reason": None}
            for m in METRIC_NAMES:
                row[m] = v
                row["noisy_" + m] = noisy[i]
            row["csig_legacy"] = v + 0.5
            rows.append(row)
    return pd.DataFrame(rows)


def test_variant_table_aggregates_seed_means_with_t_interval():
    per_file = _per_file(
        {("a", 0): [1.0, 3.0], ("a", 1): [3.0, 5.0], ("a", 2): [5.0, 7.0], ("b", 0): [1.0, 2.0, 3.0]},
        noisy=[0.5, 1.5, 2.5],
    )
    per_file.loc[(per_file["variant"] == "b") & (per_file["name"] == "f2"), "reason"] = "pesq_failed"
    vt = report.variant_table(per_file)
    assert list(vt.columns) == report.VARIANT_COLUMNS
    a = vt[(vt.variant == "a") & (vt.metric == "pesq")].iloc[0]
    seed_means = np.array([2.0, 4.0, 6.0])
    half = stats.t.ppf(0.975, 2) * seed_means.std(ddof=1) / math.sqrt(3)
    assert a["mean"] == pytest.approx(4.0)
    assert a["ci95"] == pytest.approx(half)
    assert a["ci95_low"] == pytest.approx(4.0 - half) and a["ci95_high"] == pytest.approx(4.0 + half)
    assert a["seeds"] == "0,1,2" and a["n_seeds"] == 3 and a["ci_over"] == "seeds" and a["n_files"] == 2
    b = vt[(vt.variant == "b") & (vt.metric == "pesq")].iloc[0]
    # one seed: interval over files; the excluded file is left out
    assert b["mean"] == pytest.approx(1.5) and b["ci_over"] == "files" and b["n_files"] == 2
    assert b["ci95"] == pytest.approx(stats.t.ppf(0.975, 1) * np.std([1.0, 2.0], ddof=1) / math.sqrt(2))
    noisy = vt[(vt.variant == "noisy") & (vt.metric == "stoi")].iloc[0]
    assert noisy["mean"] == pytest.approx(1.0)  # files f0, f1 (f2 excluded in b's rows; a has only f0, f1)
    legacy = report.legacy_difference(vt)
    row = legacy[(legacy.variant == "a") & (legacy.metric == "csig")].iloc[0]
    assert row["difference"] == pytest.approx(0.5)


def test_display_table_has_published_rows_and_works_without_runs():
    per_file = _per_file({("x", 0): [2.0, 2.0]}, noisy=[1.0, 2.0]).assign(variant="", run="", seed=np.nan)
    for m in METRIC_NAMES:
        per_file[m] = np.nan
    vt = report.variant_table(per_file)
    assert set(vt["variant"]) == {"noisy"}
    table = report.display_table(vt)
    assert list(table.index) == ["CMGAN (published)", "Noisy (measured)", "Noisy (published)"]
    assert table.loc["CMGAN (published)", "PESQ"] == "3.41"
    assert table.loc["Noisy (measured)", "PESQ"].startswith("1.50 ± ")


def test_input_snr():
    clean = np.ones(100)
    assert report.input_snr(clean, clean + 0.1) == pytest.approx(20.0)
    assert report.input_snr(clean, clean) == math.inf


def test_evaluate_runs_end_to_end_with_tiny_checkpoints(tmp_path):
    """Two seeds of one variant enhance two 1 s files; rows carry variant/seed, legacy columns and SNR."""
    import torch

    from cmgan_lib import models
    from cmgan_lib.audio import write_wav

    rng = np.random.default_rng(1)
    t = np.arange(16000) / 16000
    for sub in ("clean", "noisy"):
        (tmp_path / "test" / sub).mkdir(parents=True)
    for i, noise in enumerate((0.01, 0.1)):
        clean = (0.3 * np.sin(2 * np.pi * 200 * t) * (1 + np.sin(2 * np.pi * 4 * t))).astype(np.float32)
        write_wav(tmp_path / "test" / "clean" / f"u{i}.wav", clean, 16000)
        write_wav(tmp_path / "test" / "noisy" / f"u{i}.wav", clean + noise * rng.standard_normal(16000), 16000)
    runs = []
    for seed in (0, 1):
        run = tmp_path / "runs" / f"tiny_s{seed}"
        run.mkdir(parents=True)
        torch.manual_seed(seed)
        torch.save({"generator": models.TSCNet(num_channel=4).state_dict()}, run / "last.pt")
        runs.append(run)
    per_file = report.evaluate_runs(runs, tmp_path / "test", tmp_path / "out", max_files=2, n_jobs=1, progress=False)
    assert len(per_file) == 4
    assert set(per_file["variant"]) == {"tiny"} and sorted(per_file["seed"].unique()) == [0, 1]
    assert per_file["reason"].isna().all()
    assert {"csig_legacy", "noisy_covl_legacy", "input_snr_db"} <= set(per_file.columns)
    assert set(per_file["snr_source"]) == {"measured"}
    snr = per_file.drop_duplicates("name").set_index("name")["input_snr_db"]
    assert snr["u0"] > snr["u1"]
    assert (tmp_path / "out" / "tiny_s1" / "enhanced" / "u0.wav").exists()
    for csv in (tmp_path / "out" / "metrics_per_file.csv", tmp_path / "out" / "tiny_s1" / "metrics_per_file.csv"):
        paths = pd.read_csv(csv)[["clean", "noisy", "enhanced"]].to_numpy().ravel()
        assert not any(Path(p).is_absolute() for p in paths)  # relative to the CSV's folder
        assert all((csv.parent / p).is_file() for p in paths)
    vt = report.variant_table(per_file)
    row = vt[(vt.variant == "tiny") & (vt.metric == "pesq")].iloc[0]
    assert row["n_seeds"] == 2 and row["ci_over"] == "seeds" and row["n_files"] == 2
    assert len(report.example_rows(per_file, 1)) == 2  # one file, one row per run


def test_is_synthetic_corpus_reads_the_make_synthetic_manifest(tmp_path):
    from cmgan_lib.data.synthetic import MANIFEST_COLUMNS

    for sub in ("synth/test/clean", "synth/test/noisy", "vb/test/clean", "other/test/clean"):
        (tmp_path / sub).mkdir(parents=True)
    pd.DataFrame(columns=MANIFEST_COLUMNS).to_csv(tmp_path / "synth" / "manifest.csv", index=False)
    pd.DataFrame(columns=["file", "speaker"]).to_csv(tmp_path / "other" / "manifest.csv", index=False)
    assert report.is_synthetic_corpus(tmp_path / "synth" / "test")
    assert report.is_synthetic_corpus(tmp_path / "synth")
    assert not report.is_synthetic_corpus(tmp_path / "vb" / "test")
    assert not report.is_synthetic_corpus(tmp_path / "other" / "test")  # someone else's manifest


def test_published_rows_are_labelled_as_another_dataset_on_synthetic_data():
    per_file = _per_file({("x", 0): [2.0, 2.2]}, noisy=[1.0, 2.0])
    vt = report.variant_table(per_file)
    synthetic = report.display_table(vt, synthetic=True).index
    assert [i for i in synthetic if "published" in i] == [
        "CMGAN (published, Voice Bank + DEMAND: a different dataset)",
        "Noisy (published, Voice Bank + DEMAND: a different dataset)",
    ]
    assert "different dataset" not in " ".join(report.display_table(vt).index)


def test_checkpoint_split_is_read_from_each_runs_config(tmp_path):
    for name, cfg in (("official_s0", "val_split: test\n"), ("masked_s0", "val_split: valid\n"), ("old_s0", "")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.yaml").write_text(cfg + "seed: 0\n")
    text = report.checkpoint_split_markdown([tmp_path / "official_s0", tmp_path / "old_s0", tmp_path / "masked_s0"])
    assert "**test (published behaviour)** (`official_s0`, `old_s0`)" in text
    assert "**valid (held out from the test set)** (`masked_s0`)" in text


@pytest.mark.parametrize("gain", [1.0, 0.0])
def test_improvement_over_noisy_paired_over_files_or_over_seeds(gain):
    rng = np.random.default_rng(0)
    noisy = list(rng.uniform(1.0, 2.0, 5))
    one = _per_file({("one", 0): [n + gain + rng.normal(0, 0.05) for n in noisy]}, noisy=noisy)
    seeds = _per_file({("many", s): [n + gain + 0.1 * (s - 1) for n in noisy] for s in range(3)}, noisy=noisy)
    table = report.improvement_table(pd.concat([one, seeds], ignore_index=True)).set_index(["variant", "metric"])
    row = table.loc[("one", "pesq")]
    one_p = one.pesq.to_numpy()
    iv = stats.t.interval(0.95, 4, loc=np.mean(one_p - noisy), scale=np.std(one_p - noisy, ddof=1) / math.sqrt(5))
    assert row.ci_over == "files" and row.n == 5 and (row.ci95_low, row.ci95_high) == pytest.approx(iv)
    assert table.loc[("many", "pesq")].ci_over == "seeds" and table.loc[("many", "pesq")].n == 3
    verdict = row.verdict
    assert verdict.startswith("PESQ, enhanced - noisy: higher by") if gain else "no detectable effect" in verdict
    text = report.evaluation_verdict(report.improvement_table(one), report.variant_differences(one), one,
                                     synthetic=True, split_markdown="", n_files=5)  # fmt: skip
    assert ("higher on PESQ" in text) == bool(gain) and "a different dataset" in text
    assert "different dataset" not in report.evaluation_verdict(table.reset_index(), pd.DataFrame(columns=["verdict"]),
                                                                one, False, "", 5)  # fmt: skip


def test_variant_differences_against_official():
    per_file = _per_file({("official", 0): [2.0, 2.1, 2.2], ("masked", 0): [2.5, 2.7, 2.6]}, noisy=[1.0, 1.0, 1.0])
    d = report.variant_differences(per_file).set_index("variant").loc["masked"]
    assert d.difference == pytest.approx(0.5) and d.ci_over == "files" and "(over files)" in d.verdict
    assert report.variant_differences(per_file, reference="nope").empty


def test_metric_vs_snr_figure_is_readable(check_figure):
    per_file = _per_file({("official", 0): [2.0, 2.1, 2.2]}, noisy=[1.0, 1.5, 2.0]).assign(
        input_snr_db=[0.0, 5.0, 10.0], snr_source="manifest")  # fmt: skip
    ax = report.plot_metric_vs_snr(per_file, "pesq")
    check_figure(ax.figure)
    assert "manifest" in ax.get_xlabel() and ax.get_legend() is not None
    assert ax.get_legend().get_bbox_to_anchor().x0 >= ax.get_window_extent().x1 - 1  # outside the data


def test_notebook_01_figures_are_readable(check_figure, tmp_path):
    import matplotlib.pyplot as plt
    from test_audit import _run, _speech_after_silence

    from cmgan_lib.audit import crop_length_sweep, crop_pesq, observed_rates

    pairs = [_speech_after_silence(seed=s) for s in range(2)]
    crops = crop_length_sweep(pairs, (0.5, 2.0), 2, 0).assign(dataset="synthetic", pair="clean/noisy", model="-")
    check_figure(report.plot_failure_sweep(report.failure_sweep_table(crops), 0.5))
    _run(tmp_path, "official_s0", "skip", [1, 0, 1, 0], [1, 0, 1, 0])
    check_figure(report.plot_observed_skips(observed_rates(tmp_path)).figure)
    scaled = crop_pesq(pairs, 1, 16000, workers=1, progress=False).assign(dataset="synthetic")
    check_figure(report.plot_scale_residuals(scaled).figure)
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
    fig = report.plot_failure_sweep(table, 0.5)
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

    from cmgan_lib.audit import observed_rates

    _run(tmp_path, "official_s0", "skip", [1, 0, 1, 0], [1, 0, 2, 0])
    _run(tmp_path, "masked_s0", "masked", [0, 0, 0, 0], [0, 0, 0, 0])
    table = report.observed_table(observed_rates(tmp_path)).set_index("run")
    assert table.loc["official_s0", "updates skipped"].startswith("2 of 4 = 50% (95% CI")
    assert table.loc["official_s0", "labels lost"].startswith("3 of 16 = ")
    assert table.loc["masked_s0", "updates skipped"].startswith("0 of 4 (95% upper bound")
    assert list(table["silent reference"]) == [0, 3]  # masked_s0 first (runs sorted by name)
    assert "injected" not in table.columns  # never occurred in these runs


def test_claims_markdown_lists_each_condition_and_counts_the_undecided():
    table = pd.DataFrame(
        [("c", "real speech, 2 s", "0 of 50", "below the claim"),
         ("c", "run official_s0", "16 of 36", "consistent with the claim"),
         ("c", "synthetic estimates, 1 s", "1 of 12", "inconclusive (too few samples)")],
        columns=["claim", "condition", "measured", "verdict"],
    )  # fmt: skip
    md = report.claims_markdown(table)
    assert "**c**: holds only in the runs' logs; elsewhere not." in md  # the headline (issue 23), then the bullets
    assert "- Holds:\n    - run official_s0 (16 of 36)" in md
    assert "- Does not hold:\n    - real speech, 2 s (0 of 50)" in md
    assert "Not decided by the data: 1 condition(s) (1 inconclusive (too few samples)" in md
    assert "synthetic estimates" not in md  # undecided conditions are counted, not listed
    row = report.claims_summary(table).iloc[0]
    assert (row.holds_under, row.not_under) == ("run official_s0", "real speech, 2 s")
    assert row.undecided == "1 inconclusive (too few samples)"


def test_runs_test_dir_is_the_corpus_the_trainer_built_with_its_valid_split(tmp_path):
    """A run on the corpus with a valid split (n_train_n_valid_n_test) is scored on that corpus, also when its
    config predates the synthetic_n_valid key (the trainer's default then applies)."""
    import yaml

    from cmgan_lib.config import config_corpus_path, load_config

    cfg = load_config(None, ["synthetic_n_train=48", "synthetic_n_test=16", "synthetic_n_valid=8"]).to_dict()
    old = {k: v for k, v in cfg.items() if k != "synthetic_n_valid"}
    for name, written in (("new_s0", cfg), ("old_s0", old)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.yaml").write_text(yaml.safe_dump(written))
    trained_on = config_corpus_path(load_config(tmp_path / "new_s0" / "config.yaml"))
    assert trained_on.name == "n48_8_16_s0"
    assert report.runs_test_dir([tmp_path / "new_s0"]) == report.split_dir(trained_on, "test")
    default = config_corpus_path(load_config(tmp_path / "old_s0" / "config.yaml"))
    assert report.runs_test_dir([tmp_path / "old_s0"]) == report.split_dir(default, "test")


def test_claims_markdown_says_undecided_when_rows_were_measured_but_decide_nothing():
    rows = [("measured", "run a", "1 of 3", "inconclusive (too few samples)"),
            ("measured", "run b", "2 of 4", "imposed (failure injection), not evidence"),
            ("absent", "-", "no step logs", "not measured")]  # fmt: skip
    md = report.claims_markdown(pd.DataFrame(rows, columns=["claim", "condition", "measured", "verdict"]))
    assert ("**measured**: not decided by the data here (1 inconclusive (too few samples), 1 imposed (failure "
            "injection), not evidence).") in md  # fmt: skip
    assert "**absent**: not measured here." in md
    assert "Not decided by the data: 2 condition(s)" in md


def test_claim4_labels_injected_runs_names_the_crop_and_calls_wide_intervals_inconclusive(tmp_path):
    from test_audit import _run

    _run(tmp_path, "seed_fixes_s0", "batch_mean", [0] * 10, [0] * 10)
    _run(tmp_path, "batch_mean_p186_s0", "batch_mean", [0] * 10, [1] * 10, inject=0.186)
    _run(tmp_path, "official_s0", "skip", [0] * 10, [0] * 10)
    fixed = report.last_epoch_disc_loss(tmp_path)
    assert sorted(fixed.run) == ["batch_mean_p186_s0", "seed_fixes_s0"]
    c4 = report.claims_table(fixed=fixed).query("claim == @report.CLAIMS[3]").set_index("condition")
    natural = c4.loc["run seed_fixes_s0 (0.5 s crops, last of 2 epochs)"]
    assert natural.verdict == "consistent"  # every logged disc_loss is 0.2
    assert c4.loc["run batch_mean_p186_s0 (0.5 s crops, last of 2 epochs)"].verdict.startswith("imposed")
    # the width rule is rate_verdict's: just wider than MAX_INFORMATIVE_WIDTH is inconclusive, just narrower not
    w = report.MAX_INFORMATIVE_WIDTH
    lo, hi = report.CLAIMED_DISC_LOSS_RANGE
    for width, ok in ((w + 0.01, False), (w - 0.01, True)):
        rate = report.rate_verdict(report.CLAIMED_SKIP_RATE - width / 2, report.CLAIMED_SKIP_RATE + width / 2)
        ranged = report._range_verdict(lo, lo + width, lo, hi)
        assert (rate == "consistent") == (ranged == "consistent") == ok
        assert ok or ranged == rate == "inconclusive (too few samples)"
    wide = fixed.assign(low=0.0, high=0.05 + w)
    assert set(report.claims_table(fixed=wide).query("claim == @report.CLAIMS[3]").verdict) == {
        "inconclusive (too few samples)", "imposed (failure injection), not evidence"}  # fmt: skip


def test_find_finished_runs_never_merges_two_grids(tmp_path):
    """Two `cmgan ablate --out` folders under one folder hold runs of the same name: neither is taken from the
    parent, and each grid folder (or its runs/) gives only its own."""
    for grid in ("grid_a", "grid_b"):
        (tmp_path / grid).mkdir()
        (tmp_path / grid / "grid.yaml").write_text("seeds: [0]\n")
        run = tmp_path / grid / "runs" / "official_s0"
        run.mkdir(parents=True)
        (run / "done.json").write_text("{}")
        (run / "best.pt").write_bytes(b"")
    assert report.find_finished_runs(tmp_path) == []
    a = tmp_path / "grid_a" / "runs" / "official_s0"
    assert report.find_finished_runs(tmp_path / "grid_a") == [a]
    assert report.find_finished_runs(tmp_path / "grid_a" / "runs") == [a]


def test_audit_sets_name_the_training_data_first_and_count_the_real_utterances(tmp_path):
    from cmgan_lib.data.synthetic import make_dataset

    make_dataset(tmp_path / "syn", n_train=3, n_test=1, seed=0, hard_fraction=0.0, progress=False, n_jobs=1)
    make_dataset(tmp_path / "vb", n_train=2, n_test=1, seed=1, hard_fraction=0.0, progress=False, n_jobs=1)
    sets = report.audit_sets(tmp_path / "syn", tmp_path / "vb")
    assert [s.name for s in sets] == ["synthetic corpus (train)", "real speech (2 VB utterances)"]
    assert len(sets[0].pairs) == 3 and sets[0].metadata is not None and sets[1].metadata is None
    assert [s.name for s in report.audit_sets(tmp_path / "syn", None)] == ["synthetic corpus (train)"]


def test_crop_sweeps_and_scale_audit_label_every_row_with_its_set():
    from test_audit import _speech_after_silence

    sets = [report.AuditSet(name, [_speech_after_silence(seed=k)]) for k, name in enumerate("ab")]
    crops = report.crop_sweeps(sets, None, (0.5, 2.0), 2, 0, None, None)  # no runs: no estimate rows
    assert set(crops.groupby(["dataset", "crop_s"]).size()) == {2} and len(crops) == 8
    assert set(crops["pair"]) == {"clean/noisy"} and set(crops["model"]) == {"-"}
    scaled, table = report.scale_audit(sets, 0.5, 2, 0)
    assert list(scaled.groupby("dataset").size()) == [2, 2] and list(table["dataset"]) == ["a", "b"]
    assert (table["n_crops"] == 2).all()


def test_checkpoint_split_markdown_states_the_data_order(tmp_path):
    for name, cfg in (("official_s0", "reshuffle_each_epoch: false\n"),
                      ("reshuffled_s0", "reshuffle_each_epoch: true\n")):  # fmt: skip
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.yaml").write_text(cfg + "seed: 0\n")
    text = report.checkpoint_split_markdown([tmp_path / "official_s0", tmp_path / "reshuffled_s0"])
    assert "Data order: " in text and "same file order every epoch" in text and "(1 run)" in text
    assert "a new file order every epoch" in text
