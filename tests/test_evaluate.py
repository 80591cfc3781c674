"""`cmgan evaluate` on a small synthetic test set with bad files mixed in; summary statistics."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from cmgan_lib.analysis.evaluate import (
    PER_FILE_CSV,
    SUMMARY_CSV,
    comparison_table,
    published_table,
    resolve_test_dir,
    summarize,
)
from cmgan_lib.cli import main
from cmgan_lib.scoring.metrics import METRIC_NAMES

SR = 16000
GOOD = ["utt_a", "utt_b", "utt_c"]


def _voice(seconds: float, seed: int) -> np.ndarray:
    """Speech-like: gliding harmonic 'vowels' and hiss 'fricatives' under a 5 Hz syllable envelope (a steady
    tone would not do: STOI correlates band envelopes, and a steady tone has none)."""
    from scipy.signal import lfilter

    rng = np.random.default_rng(seed)
    n = int(SR * seconds)
    t = np.arange(n) / SR
    f0 = (120 + 30 * seed) * (1 + 0.1 * np.sin(2 * np.pi * 1.3 * t + seed))
    phase = 2 * np.pi * np.cumsum(f0) / SR
    voiced = sum(np.sin(k * phase) / k for k in range(1, 12))
    hiss = lfilter([1, -0.9], [1], rng.standard_normal(n)) * 0.3
    syllables = np.repeat(rng.uniform(0, 1, int(seconds * 5) + 1), SR // 5)[:n]
    envelope = lfilter([0.02], [1, -0.998], syllables)
    fricative = np.repeat(rng.uniform(0, 1, int(seconds * 5) + 1) > 0.6, SR // 5)[:n]
    sig = envelope * np.where(fricative, hiss, voiced)
    return (0.3 * sig / np.abs(sig).max() + 0.001 * rng.standard_normal(n)).astype(np.float32)


def _write(path, audio, sr=SR):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, audio, sr, subtype="PCM_16")


@pytest.fixture(scope="module")
def synthetic_set(tmp_path_factory):
    """DIR/clean + DIR/noisy with 3 good pairs, a clean without noisy, a noisy without clean, an 8 kHz noisy
    file and a silent reference; ENH/ holds 'enhanced' audio (less noise) for the good ones."""
    root = tmp_path_factory.mktemp("evalset")
    rng = np.random.default_rng(0)
    for i, name in enumerate(GOOD):
        clean = _voice(1.5, i)
        _write(root / "data" / "clean" / f"{name}.wav", clean)
        _write(root / "data" / "noisy" / f"{name}.wav", clean + 0.05 * rng.standard_normal(clean.size))
        _write(root / "enh" / f"{name}.wav", clean + 0.01 * rng.standard_normal(clean.size))
    _write(root / "data" / "clean" / "only_clean.wav", _voice(1.5, 3))
    _write(root / "data" / "noisy" / "only_noisy.wav", _voice(1.5, 4))
    _write(root / "data" / "clean" / "rate_8k.wav", _voice(1.5, 5))
    _write(root / "data" / "noisy" / "rate_8k.wav", _voice(1.5, 5)[::2], sr=8000)
    _write(root / "data" / "clean" / "silent.wav", np.zeros(SR, np.float32))
    _write(root / "data" / "noisy" / "silent.wav", 0.05 * rng.standard_normal(SR).astype(np.float32))
    for name in ("rate_8k", "silent"):
        _write(root / "enh" / f"{name}.wav", _voice(1.5, 6))
    return root


EXPECTED_REASONS = {
    "only_clean": "missing_noisy",
    "only_noisy": "missing_clean",
    "rate_8k": "sample_rate",
    "silent": "silent_reference",
}


def test_cli_evaluate_enhanced_dir_records_bad_files_and_goes_on(synthetic_set, tmp_path, capsys):
    out = tmp_path / "out"
    args = [
        "evaluate",
        "--test-dir",
        str(synthetic_set / "data"),
        "--enhanced-dir",
        str(synthetic_set / "enh"),
    ]
    assert main([*args, "--out", str(out), "--jobs", "2"]) == 1  # files that could not be scored: not a success
    captured = capsys.readouterr()
    printed = captured.out
    assert "4 file(s) could not be scored" in captured.err
    assert "CMGAN (published)" in printed and "Noisy (published)" in printed and "3.41" in printed
    assert "scored 3 of 7 files; excluded 4" in printed

    per_file = pd.read_csv(out / PER_FILE_CSV).set_index("name")
    assert sorted(per_file.index) == sorted([*GOOD, *EXPECTED_REASONS])
    for name, reason in EXPECTED_REASONS.items():
        assert per_file.loc[name, "reason"] == reason, per_file.loc[name, "detail"]
        assert per_file.loc[name, list(METRIC_NAMES)].isna().all()
    good = per_file.loc[GOOD]
    assert good["reason"].isna().all()
    assert good[list(METRIC_NAMES)].notna().all().all()
    # less noise in the "enhanced" audio than in the noisy input: every metric must say so
    for key in METRIC_NAMES:
        assert (good[key] > good[f"noisy_{key}"]).all(), key
    assert "8000 Hz" in per_file.loc["rate_8k", "detail"]

    summary = pd.read_csv(out / SUMMARY_CSV)
    assert set(summary["system"]) == {"enhanced", "noisy"}
    assert (summary["n"] == 3).all() and (summary["n_excluded"] == 4).all()
    pesq = summary.set_index(["system", "metric"]).loc[("enhanced", "pesq")]
    assert pesq["mean"] == pytest.approx(good["pesq"].mean(), abs=1e-6)
    assert pesq["ci95_low"] < pesq["mean"] < pesq["ci95_high"]


def test_missing_enhanced_file_is_a_reason(synthetic_set, tmp_path):
    enh = tmp_path / "enh_partial"
    enh.mkdir()
    for name in GOOD[:2]:
        (enh / f"{name}.wav").write_bytes((synthetic_set / "enh" / f"{name}.wav").read_bytes())
    test_dir = tmp_path / "set"
    for sub in ("clean", "noisy"):
        (test_dir / sub).mkdir(parents=True)
        for name in GOOD:
            (test_dir / sub / f"{name}.wav").write_bytes((synthetic_set / "data" / sub / f"{name}.wav").read_bytes())
    out = tmp_path / "out"
    args = [
        "evaluate",
        "--test-dir",
        str(test_dir),
        "--enhanced-dir",
        str(enh),
        "--out",
        str(out),
        "--jobs",
        "1",
    ]
    assert main(args) == 1  # one file could not be scored
    per_file = pd.read_csv(out / PER_FILE_CSV).set_index("name")
    assert per_file.loc[GOOD[2], "reason"] == "missing_enhanced"
    assert per_file.loc[GOOD[:2], "reason"].isna().all()


def test_cli_errors_are_one_line_with_exit_code_2(tmp_path, capsys):
    assert main(["evaluate", "--test-dir", str(tmp_path), "--enhanced-dir", str(tmp_path), "--out", "x"]) == 2
    assert "no clean/noisy test folders" in capsys.readouterr().err
    (tmp_path / "clean").mkdir()
    (tmp_path / "noisy").mkdir()
    assert main(["evaluate", "--test-dir", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "exactly one of checkpoint" in capsys.readouterr().err


def test_resolve_test_dir_layouts(tmp_path):
    for sub in ("test/clean", "test/noisy"):
        (tmp_path / "a" / sub).mkdir(parents=True)
    assert resolve_test_dir(tmp_path / "a") == (tmp_path / "a/test/clean", tmp_path / "a/test/noisy")
    for sub in ("clean_testset_wav", "noisy_testset_wav"):
        (tmp_path / "b" / sub).mkdir(parents=True)
    assert resolve_test_dir(tmp_path / "b")[1].name == "noisy_testset_wav"


def test_checkpoint_path_calls_enhance_track_per_noisy_file(synthetic_set, tmp_path, monkeypatch):
    """The --checkpoint wiring without a model: a stand-in enhance module halves the noise."""
    import sys
    import types

    calls = {"load": [], "enhance": 0}
    clean = {n: sf.read(synthetic_set / "data" / "clean" / f"{n}.wav")[0] for n in GOOD}

    from cmgan_lib.scoring.enhance import memory_note, output_problem

    def load_generator(checkpoint, device=None, trust=False):
        calls["load"].append((str(checkpoint), str(device)))
        return "model"

    def enhance_track(model, noisy, cut_len=SR * 16, max_chunk_seconds=None):
        assert model == "model" and noisy.dtype == np.float32
        calls["enhance"] += 1
        matches = [c for c in clean.values() if c.size == noisy.size and np.corrcoef(c, noisy)[0, 1] > 0.5]
        ref = matches[0] if matches else noisy  # files without a good clean counterpart pass through
        return (ref + 0.5 * (noisy - ref)).astype(np.float32)

    fake = types.ModuleType("cmgan_lib.scoring.enhance")
    fake.load_generator, fake.enhance_track, fake.output_problem = load_generator, enhance_track, output_problem
    fake.memory_note = memory_note
    fake.resolve_device = lambda device=None: device or "cpu"
    monkeypatch.setitem(sys.modules, "cmgan_lib.scoring.enhance", fake)
    out = tmp_path / "out"
    args = ["evaluate", "--checkpoint", "ck.pt", "--test-dir", str(synthetic_set / "data"), "--out", str(out)]
    assert main([*args, "--device", "cpu", "--jobs", "1"]) == 1  # the bad files of the set
    assert calls["load"] == [("ck.pt", "cpu")]
    assert calls["enhance"] == 5  # every readable 16 kHz noisy file; the 8 kHz one is refused before enhancing
    per_file = pd.read_csv(out / PER_FILE_CSV).set_index("name")
    for name, reason in EXPECTED_REASONS.items():
        assert per_file.loc[name, "reason"] == reason
    assert (per_file.loc[GOOD, "pesq"] > per_file.loc[GOOD, "noisy_pesq"]).all()
    assert sorted(p.stem for p in (out / "enhanced").glob("*.wav")) == sorted([*GOOD, "only_noisy", "silent"])


@pytest.mark.slow
def test_cli_evaluate_with_checkpoint(synthetic_set, tmp_path, capsys):
    torch = pytest.importorskip("torch")
    models = pytest.importorskip("cmgan_lib.models", reason="cmgan_lib.models not merged yet")
    pytest.importorskip("cmgan_lib.scoring.enhance", reason="cmgan_lib.scoring.enhance not merged yet")
    torch.manual_seed(0)
    ckpt = tmp_path / "tiny.pt"
    torch.save(models.TSCNet(num_channel=8).state_dict(), ckpt)
    test_dir = tmp_path / "set"
    for sub in ("clean", "noisy"):
        (test_dir / sub).mkdir(parents=True)
        for name in GOOD[:1]:  # one file: a CPU forward pass takes seconds even at num_channel=8
            (test_dir / sub / f"{name}.wav").write_bytes((synthetic_set / "data" / sub / f"{name}.wav").read_bytes())
    out = tmp_path / "out"
    args = ["evaluate", "--checkpoint", str(ckpt), "--test-dir", str(test_dir), "--out", str(out)]
    assert main([*args, "--device", "cpu", "--jobs", "1"]) == 0
    assert sorted(p.stem for p in (out / "enhanced").glob("*.wav")) == GOOD[:1]
    per_file = pd.read_csv(out / PER_FILE_CSV)
    assert per_file["reason"].isna().all()
    # re-scoring the written enhanced folder gives the same numbers (float WAVs, no requantization)
    out2 = tmp_path / "out2"
    args = [
        "evaluate",
        "--enhanced-dir",
        str(out / "enhanced"),
        "--test-dir",
        str(test_dir),
        "--out",
        str(out2),
    ]
    assert main([*args, "--jobs", "1"]) == 0
    again = pd.read_csv(out2 / PER_FILE_CSV)
    np.testing.assert_allclose(again[list(METRIC_NAMES)], per_file[list(METRIC_NAMES)], atol=1e-6)


def test_summarize_mean_std_and_t_interval():
    values = np.array([1.0, 2.0, 3.0, 6.0])
    per_file = pd.DataFrame({key: values for key in METRIC_NAMES})
    for key in METRIC_NAMES:
        per_file[f"noisy_{key}"] = values - 1
    per_file["reason"] = None
    per_file.loc[4] = {**{k: np.nan for k in per_file.columns}, "reason": "sample_rate"}
    s = summarize(per_file).set_index(["system", "metric"])
    row = s.loc[("enhanced", "stoi")]
    half = 3.182446305284263 * values.std(ddof=1) / 2  # t(0.975, 3) * s / sqrt(4)
    assert row["mean"] == 3.0 and row["std"] == pytest.approx(values.std(ddof=1))
    assert row["ci95_low"] == pytest.approx(3.0 - half) and row["ci95_high"] == pytest.approx(3.0 + half)
    assert row["n"] == 4 and row["n_excluded"] == 1
    assert s.loc[("noisy", "pesq"), "mean"] == 2.0
    table = comparison_table(s.reset_index())
    assert list(table.columns) == [k.upper() for k in METRIC_NAMES]
    assert table.loc["CMGAN (published)", "SSNR"] == 11.10 and table.loc["This run: noisy", "PESQ"] == 2.0


def test_published_table():
    pub = published_table()
    assert pub.loc["CMGAN"].tolist() == [3.41, 4.63, 3.94, 4.12, 11.10, 0.96]
    assert pub.loc["Noisy"].tolist() == [1.97, 3.35, 2.44, 2.63, 1.68, 0.91]
