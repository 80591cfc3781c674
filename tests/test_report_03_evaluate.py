"""Tests of notebook 03: scoring runs (analysis.evaluate), variant aggregation and intervals (report_03_evaluate)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from cmgan_lib.analysis import evaluate
from cmgan_lib.data import layout
from cmgan_lib.reports import report_03_evaluate as r03
from cmgan_lib.scoring.metrics import METRIC_NAMES


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
    vt = r03.variant_table(per_file)
    assert list(vt.columns) == r03.VARIANT_COLUMNS
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
    legacy = r03.legacy_difference(vt)
    row = legacy[(legacy.variant == "a") & (legacy.metric == "csig")].iloc[0]
    assert row["difference"] == pytest.approx(0.5)


def test_display_table_has_published_rows_and_works_without_runs():
    per_file = _per_file({("x", 0): [2.0, 2.0]}, noisy=[1.0, 2.0]).assign(variant="", run="", seed=np.nan)
    for m in METRIC_NAMES:
        per_file[m] = np.nan
    vt = r03.variant_table(per_file)
    assert set(vt["variant"]) == {"noisy"}
    table = r03.display_table(vt)
    assert list(table.index) == ["CMGAN (published)", "Noisy (measured)", "Noisy (published)"]
    assert table.loc["CMGAN (published)", "PESQ"] == "3.41"
    assert table.loc["Noisy (measured)", "PESQ"].startswith("1.50 ± ")


def test_input_snr():
    clean = np.ones(100)
    assert evaluate.input_snr(clean, clean + 0.1) == pytest.approx(20.0)
    assert evaluate.input_snr(clean, clean) == math.inf


def test_evaluate_runs_end_to_end_with_tiny_checkpoints(tmp_path):
    """Two seeds of one variant enhance two 1 s files; rows carry variant/seed, legacy columns and SNR."""
    import torch

    from cmgan_lib import models
    from cmgan_lib.core.audio import write_wav

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
    per_file = evaluate.evaluate_runs(runs, tmp_path / "test", tmp_path / "out", max_files=2, n_jobs=1, progress=False)
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
    vt = r03.variant_table(per_file)
    row = vt[(vt.variant == "tiny") & (vt.metric == "pesq")].iloc[0]
    assert row["n_seeds"] == 2 and row["ci_over"] == "seeds" and row["n_files"] == 2
    assert len(r03.example_rows(per_file, 1)) == 2  # one file, one row per run


def test_is_synthetic_corpus_reads_the_make_synthetic_manifest(tmp_path):
    from cmgan_lib.data.synthetic import MANIFEST_COLUMNS

    for sub in ("synth/test/clean", "synth/test/noisy", "vb/test/clean", "other/test/clean"):
        (tmp_path / sub).mkdir(parents=True)
    pd.DataFrame(columns=MANIFEST_COLUMNS).to_csv(tmp_path / "synth" / "manifest.csv", index=False)
    pd.DataFrame(columns=["file", "speaker"]).to_csv(tmp_path / "other" / "manifest.csv", index=False)
    assert r03.is_synthetic_corpus(tmp_path / "synth" / "test")
    assert r03.is_synthetic_corpus(tmp_path / "synth")
    assert not r03.is_synthetic_corpus(tmp_path / "vb" / "test")
    assert not r03.is_synthetic_corpus(tmp_path / "other" / "test")  # someone else's manifest


def test_published_rows_are_labelled_as_another_dataset_on_synthetic_data():
    per_file = _per_file({("x", 0): [2.0, 2.2]}, noisy=[1.0, 2.0])
    vt = r03.variant_table(per_file)
    synthetic = r03.display_table(vt, synthetic=True).index
    assert [i for i in synthetic if "published" in i] == [
        "CMGAN (published, Voice Bank + DEMAND: a different dataset)",
        "Noisy (published, Voice Bank + DEMAND: a different dataset)",
    ]
    assert "different dataset" not in " ".join(r03.display_table(vt).index)


def test_checkpoint_split_is_read_from_each_runs_config(tmp_path):
    for name, cfg in (("official_s0", "val_split: test\n"), ("masked_s0", "val_split: valid\n"), ("old_s0", "")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.yaml").write_text(cfg + "seed: 0\n")
    text = r03.checkpoint_split_markdown([tmp_path / "official_s0", tmp_path / "old_s0", tmp_path / "masked_s0"])
    assert "**test (published behaviour)** (`official_s0`, `old_s0`)" in text
    assert "**valid (held out from the test set)** (`masked_s0`)" in text


@pytest.mark.parametrize("gain", [1.0, 0.0])
def test_improvement_over_noisy_paired_over_files_or_over_seeds(gain):
    rng = np.random.default_rng(0)
    noisy = list(rng.uniform(1.0, 2.0, 5))
    one = _per_file({("one", 0): [n + gain + rng.normal(0, 0.05) for n in noisy]}, noisy=noisy)
    seeds = _per_file({("many", s): [n + gain + 0.1 * (s - 1) for n in noisy] for s in range(3)}, noisy=noisy)
    table = r03.improvement_table(pd.concat([one, seeds], ignore_index=True)).set_index(["variant", "metric"])
    row = table.loc[("one", "pesq")]
    one_p = one.pesq.to_numpy()
    iv = stats.t.interval(0.95, 4, loc=np.mean(one_p - noisy), scale=np.std(one_p - noisy, ddof=1) / math.sqrt(5))
    assert row.ci_over == "files" and row.n == 5 and (row.ci95_low, row.ci95_high) == pytest.approx(iv)
    assert table.loc[("many", "pesq")].ci_over == "seeds" and table.loc[("many", "pesq")].n == 3
    verdict = row.verdict
    assert verdict.startswith("PESQ, enhanced - noisy: higher by") if gain else "no detectable effect" in verdict
    text = r03.evaluation_verdict(r03.improvement_table(one), r03.variant_differences(one), one,
                                     synthetic=True, split_markdown="", n_files=5)  # fmt: skip
    assert ("higher on PESQ" in text) == bool(gain) and "a different dataset" in text
    assert "different dataset" not in r03.evaluation_verdict(table.reset_index(), pd.DataFrame(columns=["verdict"]),
                                                                one, False, "", 5)  # fmt: skip


def test_variant_differences_against_official():
    per_file = _per_file({("official", 0): [2.0, 2.1, 2.2], ("masked", 0): [2.5, 2.7, 2.6]}, noisy=[1.0, 1.0, 1.0])
    d = r03.variant_differences(per_file).set_index("variant").loc["masked"]
    assert d.difference == pytest.approx(0.5) and d.ci_over == "files" and "(over files)" in d.verdict
    assert r03.variant_differences(per_file, reference="nope").empty


def test_variant_differences_pair_seeds_where_welch_would_be_inconclusive():
    """Seeds 0-3 differ by 0.6 between them; `masked` is 0.1 above `official` in every seed. Welch over seed means
    cannot tell (the seed spread swamps 0.1); paired by seed, the interval excludes 0. Seeds in only one variant are
    left out of the pairs; without two common seeds it falls back to Welch."""
    values = {}
    for seed, level in enumerate([1.8, 2.4, 2.0, 2.6]):
        values[("official", seed)] = [level, level + 0.02]
        values[("masked", seed)] = [level + 0.1 + 0.01 * (seed % 2), level + 0.12]
    values[("masked", 9)] = [3.5, 3.5]  # no `official` run of seed 9
    d = r03.variant_differences(_per_file(values, noisy=[1.0, 1.0])).set_index("variant").loc["masked"]
    assert d.ci_over == "seeds, paired" and d.n == 4 and d.difference == pytest.approx(0.1025)
    assert d.ci95_low > 0 and "higher by" in d.verdict and "(over seeds, paired)" in d.verdict
    from cmgan_lib.analysis.stats import difference_interval

    welch = difference_interval([v[0] + 0.01 for k, v in values.items() if k[0] == "masked" and k[1] < 4],
                                [v[0] + 0.01 for k, v in values.items() if k[0] == "official"])  # fmt: skip
    assert not welch.excludes_zero  # what the unpaired rule said
    apart = {k: v for k, v in values.items() if not (k[0] == "masked" and k[1] in (1, 2, 3))}
    apart.update({("masked", 5): [2.0, 2.0], ("masked", 6): [2.2, 2.2]})
    d = r03.variant_differences(_per_file(apart, noisy=[1.0, 1.0])).set_index("variant").loc["masked"]
    assert d.ci_over == "seeds, Welch"  # one seed in common: no pairs to build an interval on


def test_metric_vs_snr_figure_is_readable(check_figure):
    per_file = _per_file({("official", 0): [2.0, 2.1, 2.2]}, noisy=[1.0, 1.5, 2.0]).assign(
        input_snr_db=[0.0, 5.0, 10.0], snr_source="manifest")  # fmt: skip
    ax = r03.plot_metric_vs_snr(per_file, "pesq")
    check_figure(ax.figure)
    assert "manifest" in ax.get_xlabel() and ax.get_legend() is not None
    assert ax.get_legend().get_bbox_to_anchor().x0 >= ax.get_window_extent().x1 - 1  # outside the data


def test_runs_test_dir_is_the_corpus_the_trainer_built_with_its_valid_split(tmp_path):
    """A run on the corpus with a valid split (n_train_n_valid_n_test) is scored on that corpus, also when its
    config predates the synthetic_n_valid key (the trainer's default then applies)."""
    import yaml

    from cmgan_lib.training.config import config_corpus_path, load_config

    cfg = load_config(None, ["synthetic_n_train=48", "synthetic_n_test=16", "synthetic_n_valid=8"]).to_dict()
    old = {k: v for k, v in cfg.items() if k != "synthetic_n_valid"}
    for name, written in (("new_s0", cfg), ("old_s0", old)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.yaml").write_text(yaml.safe_dump(written))
    trained_on = config_corpus_path(load_config(tmp_path / "new_s0" / "config.yaml"))
    assert trained_on.name == "n48_8_16_s0"
    assert r03.runs_test_dir([tmp_path / "new_s0"]) == layout.split_dir(trained_on, "test")
    default = config_corpus_path(load_config(tmp_path / "old_s0" / "config.yaml"))
    assert r03.runs_test_dir([tmp_path / "old_s0"]) == layout.split_dir(default, "test")


def test_checkpoint_split_markdown_states_the_data_order(tmp_path):
    for name, cfg in (("official_s0", "reshuffle_each_epoch: false\n"),
                      ("reshuffled_s0", "reshuffle_each_epoch: true\n")):  # fmt: skip
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.yaml").write_text(cfg + "seed: 0\n")
    text = r03.checkpoint_split_markdown([tmp_path / "official_s0", tmp_path / "reshuffled_s0"])
    assert "Data order: " in text and "same file order every epoch" in text and "(1 run)" in text
    assert "a new file order every epoch" in text
