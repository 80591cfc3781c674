"""PESQ-failure audit: crop sampling, failure causes, implied vs simulated skip rates, scale invariance."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from cmgan_lib.analysis.audit import (
    ClipPair,
    crop_pesq,
    failure_rates,
    load_folder_pairs,
    scale_invariance,
    scale_invariance_summary,
    skip_rates,
    training_scale,
)
from cmgan_lib.data.crops import crop_pair
from cmgan_lib.training.pesq_labels import PesqPool

CUT = 32000


@pytest.fixture(scope="module")
def vb_pairs(vb_samples) -> list[ClipPair]:
    return load_folder_pairs(vb_samples)


def test_load_folder_pairs(vb_samples, vb_pairs, tmp_path):
    assert len(vb_pairs) == len(list((vb_samples / "clean").glob("*.wav"))) > 0
    first = vb_pairs[0]
    assert first.clean.dtype == np.float32 and first.clean.shape == first.degraded.shape
    assert not np.array_equal(first.clean, first.degraded)
    lazy = load_folder_pairs(vb_samples, lazy=True)
    np.testing.assert_array_equal(lazy[0].load()[1], first.degraded)
    for sub in ("clean", "noisy"):
        (tmp_path / sub).mkdir()
        sf.write(tmp_path / sub / "a.wav", np.zeros(100), 16000)
    sf.write(tmp_path / "clean" / "b.wav", np.zeros(100), 16000)
    with pytest.raises(ValueError, match="unmatched"):
        load_folder_pairs(tmp_path)


def test_failure_causes_from_crops_of_a_partly_silent_set():
    """No PESQ call is needed: every degraded signal is silent, so each crop fails before scoring.

    A 5 s clip whose clean first 3 s are zeros gives an all-zero 2 s crop iff the start is <= 1 s:
    probability 16001/48001 of `silent_reference`, else `silent_or_nonfinite_estimate`.
    """
    rng = np.random.default_rng(7)
    speech_like = rng.standard_normal(32000).astype(np.float32)
    half = np.concatenate([np.zeros(48000, np.float32), speech_like])
    pairs = [ClipPair(f"half{i}", half, np.zeros_like(half)) for i in range(10)]
    pairs += [ClipPair(f"short{i}", np.zeros(10000, np.float32), np.zeros(10000, np.float32)) for i in range(2)]
    meta = [{"kind": "half"}] * 10 + [{"kind": "short_silent"}] * 2
    crops = crop_pesq(
        pairs, crops_per_clip=60, cut_len=CUT, metadata=meta, seed=1, scale_check=False, progress=False, workers=1
    )
    assert len(crops) == 12 * 60 and not crops["valid"].any() and crops["pesq"].isna().all()
    assert crops.loc[crops.kind == "short_silent", "tiled"].all() and not crops.loc[crops.kind == "half", "tiled"].any()

    by_kind = failure_rates(crops, by="kind")
    p = 16001 / 48001
    se = math.sqrt(p * (1 - p) / 600)
    assert abs(by_kind.loc["half", "p_silent_reference"] - p) < 4 * se
    assert by_kind.loc["half", "p_silent_reference"] + by_kind.loc["half", "p_silent_or_nonfinite_estimate"] == 1
    assert by_kind.loc["short_silent", "p_silent_reference"] == 1.0
    overall = failure_rates(crops)
    assert overall.loc["all", "n_crops"] == 720 and overall.loc["all", "p_fail"] == 1.0
    weighted = (600 * by_kind.loc["half", "p_silent_reference"] + 120 * 1.0) / 720
    assert overall.loc["all", "p_silent_reference"] == pytest.approx(weighted)
    # Same seed, same crops: the audit reproduces.
    again = crop_pesq(
        pairs, crops_per_clip=60, cut_len=CUT, metadata=meta, seed=1, scale_check=False, progress=False, workers=1
    )
    pd.testing.assert_frame_equal(crops, again)


def elementary_symmetric(values: np.ndarray, k: int) -> float:
    """e_k(values) by the standard recurrence; exact skip odds under sampling without replacement."""
    e = np.zeros(k + 1)
    e[0] = 1.0
    for v in values:
        e[1:] = e[1:] + v * e[:-1]
    return float(e[k])


def test_skip_rates_match_exact_values_on_constructed_failures():
    rng = np.random.default_rng(11)
    n_clips, n_crops = 40, 5
    q = rng.choice([0.0, 0.2, 0.6, 1.0], size=n_clips, p=[0.6, 0.2, 0.1, 0.1])
    rows = []
    for i in range(n_clips):
        n_fail = int(round(q[i] * n_crops))
        for k in range(n_crops):
            rows.append({"clip_index": i, "crop": k, "reason": "silent_reference" if k < n_fail else None})
    crops = pd.DataFrame(rows)
    p = crops.reason.notna().mean()
    iid = skip_rates(crops, n_batches=20000, seed=2, sampling="iid")
    loader = skip_rates(crops, n_batches=20000, seed=3, sampling="loader")
    for table in (iid, loader):
        np.testing.assert_allclose(table.implied, 1 - (1 - p) ** table.batch_size, rtol=0, atol=1e-12)
    # iid draws: the implied formula is the exact expectation.
    assert (np.abs(iid.simulated - iid.implied) < 4 * iid.simulated_se + 1e-9).all()
    # Loader: B distinct clips per batch, so P(no failure) = e_B(1 - q) / C(n, B).
    for _, row in loader.iterrows():
        b = int(row.batch_size)
        exact = 1 - elementary_symmetric(1 - q, b) / math.comb(n_clips, b)
        assert abs(row.simulated - exact) < 4 * row.simulated_se + 1e-9, (b, row.simulated, exact)
    assert loader.set_index("batch_size").loc[16, "simulated"] > 0.5  # heterogeneity matters at B=16


@pytest.fixture(scope="module")
def pool():
    with PesqPool(n_workers=2) as p:
        yield p


def test_crop_pesq_on_real_speech_with_silent_clips(vb_pairs, pool):
    """9 real clips + 3 silent references, one crop each: p = 1/4 exactly; batches of distinct clips."""
    real = vb_pairs[:9]
    silent = [ClipPair(f"silent{i}", np.zeros_like(p.clean), p.degraded) for i, p in enumerate(vb_pairs[9:12])]
    crops = crop_pesq(real + silent, crops_per_clip=1, cut_len=CUT, pool=pool, scale_check=False, progress=False)
    assert crops["valid"].tolist() == [True] * 9 + [False] * 3
    assert (crops.reason[9:] == "silent_reference").all() and crops.pesq[:9].between(1.0, 4.6).all()
    table = skip_rates(crops, batch_sizes=(1, 4, 8, 16), n_batches=20000, seed=5).set_index("batch_size")
    assert table.loc[1, "p_fail"] == 0.25
    for b in (1, 4, 8):
        exact = 1 - math.comb(9, b) / math.comb(12, b)
        assert abs(table.loc[b, "simulated"] - exact) < 4 * table.loc[b, "simulated_se"] + 1e-9
        assert table.loc[b, "implied"] == pytest.approx(1 - 0.75**b)
    assert table.loc[16, "n_batches"] == 0 and math.isnan(table.loc[16, "simulated"])  # 12 clips < B


def test_scale_invariance_and_pool_equals_serial(vb_pairs, pool):
    pairs = vb_pairs[:3]
    serial = crop_pesq(pairs, crops_per_clip=2, cut_len=CUT, seed=4, progress=False, workers=1)
    pooled = crop_pesq(pairs, crops_per_clip=2, cut_len=CUT, seed=4, pool=pool, progress=False)
    pd.testing.assert_frame_equal(serial, pooled)
    temporary_pool = crop_pesq(pairs[:1], crops_per_clip=2, cut_len=CUT, seed=4, progress=False, workers=2)
    pd.testing.assert_frame_equal(temporary_pool, serial.iloc[:2])
    # c recomputed independently from the same training crops.
    rng = np.random.default_rng(4)
    for i, pair in enumerate(pairs):
        for k in range(2):
            _, noisy = crop_pair(pair.clean, pair.degraded, CUT, rng)
            want = math.sqrt(CUT / float(np.sum(noisy.astype(np.float64) ** 2)))
            got = serial.loc[(serial.clip_index == i) & (serial.crop == k), "scale_c"].item()
            assert got == pytest.approx(want, rel=1e-12) and got > 1.5  # a real rescaling, not ~1
    table = scale_invariance(serial)
    assert table["pesq"].notna().all() and table["pesq_scaled"].notna().all()
    assert (table.abs_diff < 0.01).all()
    summary = scale_invariance_summary(serial).iloc[0]
    assert summary.n_both_valid == 6 and summary.n_validity_changed == 0
    assert summary.max_abs_diff == pytest.approx(table.abs_diff.max())


def test_training_scale_of_silence_is_infinite():
    assert math.isinf(training_scale(np.zeros(10, np.float32)))
    assert training_scale(np.full(4, 0.5, np.float32)) == pytest.approx(2.0)


# ---------------------------------------------------------------- conditions: crop length, estimates, run logs
from cmgan_lib.analysis import audit, audit_logs  # noqa: E402
from cmgan_lib.training import runs  # noqa: E402


def _speech_after_silence(seconds_silent: float = 1.5, seconds_speech: float = 2.5, seed: int = 0):
    """A clip that starts silent: short crops can land in the silence, long ones cannot."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds_speech * 16000)) / 16000
    speech = 0.3 * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 4 * t)) + 0.02 * rng.standard_normal(t.size)
    clean = np.concatenate([np.zeros(int(seconds_silent * 16000)), speech]).astype(np.float32)
    return clean, (clean + 0.01 * rng.standard_normal(clean.size)).astype(np.float32)


def test_crop_length_sweep_finds_failures_only_at_short_crops():
    pairs = [_speech_after_silence(seed=s) for s in range(3)]
    crops = audit.crop_length_sweep(pairs, (0.5, 4.0), crops_per_clip=6, seed=1)
    short, long = crops[crops.crop_s == 0.5], crops[crops.crop_s == 4.0]
    assert (short.reason == "silent_reference").sum() > 0 and long.reason.isna().all()
    table = audit.rate_table(crops, by=["crop_s"])
    row_long = table[table.crop_s == 4.0].iloc[0]
    assert row_long.failures == "0 of 18 (95% upper bound 18%)" and row_long.skip_low == 0.0
    row_short = table[table.crop_s == 0.5].iloc[0]
    assert row_short.n_silent_reference == row_short.n_failed > 0
    assert row_short.skip_low < row_short.skip_implied < row_short.skip_high


def test_crop_length_is_never_a_silent_default():
    with pytest.raises(ValueError, match="cut_len is required"):
        crop_pesq([_speech_after_silence()], crops_per_clip=1, workers=1, progress=False)


def test_estimates_replace_the_degraded_signal(tmp_path):
    pairs = [_speech_after_silence(0.0, 1.0, seed=s) for s in range(2)]
    cfg = {"num_channel": 4, "n_fft": 400, "hop": 100, "compress": 0.3, "seed": 0}
    est = audit.make_estimator(None, cfg, batch_size=2)
    out = est([pairs[0][1][:8000], pairs[1][1][:8000]])
    assert len(out) == 2 and out[0].shape == (8000,) and np.isfinite(out[0]).all()
    assert not np.allclose(out[0], pairs[0][1][:8000])  # a generator's output, not the noisy input
    seen = []
    crops = audit.crop_pesq(pairs, 1, 8000, estimator=lambda d: seen.append(len(d)) or est(d), workers=1,
                            progress=False)  # fmt: skip
    assert seen == [2] and "pesq_scaled" not in crops  # (clean, estimate) pairs, no scale check


def _run(root, name, strategy, skipped, failed, inject=0.0, cut_len=8000, batch=4):
    """A run folder with a step log of len(skipped) steps and a config."""
    import yaml

    d = root / name
    d.mkdir(parents=True)
    n = len(skipped)
    steps = pd.DataFrame({"epoch": np.arange(n) // 5, "step": np.arange(1, n + 1), "disc_skipped": skipped,
                          "pesq_valid_frac": 1 - np.asarray(failed) / batch, "disc_loss": 0.2,
                          "pesq_fail_silent_reference": failed, "pesq_fail_injected": 0})  # fmt: skip
    steps.to_csv(d / "training_step_log.csv", index=False)
    (d / "config.yaml").write_text(yaml.safe_dump({"pesq_strategy": strategy, "cut_len": cut_len,
                                                   "batch_size": batch, "pesq_fail_inject": inject}))  # fmt: skip
    pd.DataFrame({"epoch": [0]}).to_csv(d / "training_epoch_log.csv", index=False)
    return d


def test_observed_rates_read_every_run_per_run_and_per_epoch(tmp_path):
    _run(tmp_path, "official_s0", "skip", [1, 0, 1, 0, 0, 1, 1, 1, 0, 0], [1, 0, 2, 0, 0, 1, 1, 1, 0, 0])
    _run(tmp_path, "masked_s0", "masked", [0] * 10, [1] * 10)
    per_run = audit_logs.observed_rates(tmp_path)
    assert list(per_run.run) == ["masked_s0", "official_s0"]
    off = per_run.set_index("run").loc["official_s0"]
    assert (off.steps, off.skipped, off.samples, off.failed) == (10, 5, 40, 6) and off.crop_s == 0.5
    assert off.skip_low < 0.5 < off.skip_high
    per_epoch = audit_logs.observed_rates(tmp_path, per="epoch")
    assert list(per_epoch[per_epoch.run == "official_s0"].skipped) == [2, 3]
    assert runs.run_crop_seconds(tmp_path / "official_s0") == 0.5


def test_a_live_run_whose_step_log_has_no_header_yet_is_left_out(tmp_path):
    """Notebook 01 over a grid still training: a run that just created its step log (no header yet) is left out
    of the observed rates and of the last-epoch disc_loss, not a crash (pandas: 'No columns to parse')."""
    _run(tmp_path, "official_s0", "skip", [1, 0, 1, 0, 0], [1, 0, 2, 0, 0])
    live = _run(tmp_path, "seed_fixes_s0", "batch_mean", [0] * 5, [0] * 5)
    (live / "training_step_log.csv").write_text("")
    assert list(audit_logs.observed_rates(tmp_path).run) == ["official_s0"]
    assert audit_logs.last_epoch_disc_loss(tmp_path).empty


def test_observed_rates_leave_out_steps_refused_as_nonfinite(tmp_path):
    """A step refused as non-finite logs disc_skipped = 1 but is no PESQ skip; labels count where they were scored
    (NaN pesq_valid_frac: refused before the forward pass; a non-finite loss still scored its labels)."""
    d = _run(tmp_path, "official_s0", "skip", [1, 0, 0, 1, 0, 0, 1, 1], [1, 0, 0, 2, 0, 0, 0, 1])
    steps = pd.read_csv(d / "training_step_log.csv")
    steps["nonfinite"] = [0, 0, 0, 0, 0, 0, 1, 1]
    steps.loc[6, "pesq_valid_frac"] = np.nan  # refused before the forward pass: no labels
    steps.to_csv(d / "training_step_log.csv", index=False)
    r = audit_logs.observed_rates(tmp_path).iloc[0]
    assert (r.steps, r.nonfinite_steps, r.skipped) == (6, 2, 2)
    assert (r.samples, r.failed) == (7 * 4, 1 + 2 + 1)
