"""`cmgan audit DATA_DIR` (issue 20): causes with intervals, what each label rule does to batches, the worst files,
CSVs and a one-screen summary; a folder without pairs is refused in one line with exit code 2."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from cmgan_lib.cli import main


def _write(folder, name, clean, noisy):
    for sub, x in (("clean", clean), ("noisy", noisy)):
        (folder / sub).mkdir(parents=True, exist_ok=True)
        sf.write(folder / sub / name, x, 16000, subtype="PCM_16")


@pytest.fixture
def corpus(tmp_path, vb_samples):
    """Three real utterances and one whose clean half is digital silence: 0.5 s crops land in it."""
    rng = np.random.default_rng(0)
    names = sorted(p.name for p in (vb_samples / "clean").glob("*.wav"))[:3]
    for name in names:
        _write(
            tmp_path / "train", name, *(sf.read(vb_samples / s / name, dtype="float32")[0] for s in ("clean", "noisy"))
        )
    speech = sf.read(vb_samples / "clean" / names[0], dtype="float32")[0][:16000]
    clean = np.r_[speech, np.zeros(64000, np.float32)]
    _write(tmp_path / "train", "zz_pause.wav", clean, clean + 0.01 * rng.standard_normal(len(clean)).astype(np.float32))
    return tmp_path


def test_audit_reports_causes_rules_and_worst_files(corpus, capsys):
    out = corpus / "audit"
    assert main(["audit", str(corpus), "--cut-len", "0.5", "--crops-per-clip", "6", "--batch-size", "4",
                 "--out", str(out), "--workers", "1"]) == 0  # fmt: skip
    text = capsys.readouterr().out
    causes = pd.read_csv(out / "causes.csv").set_index("cause")
    crops = pd.read_csv(out / "crops.csv")
    files = pd.read_csv(out / "files.csv")
    rules = pd.read_csv(out / "label_rules.csv").set_index("rule")
    assert len(crops) == 4 * 6 and causes.loc["any", "crops"] == 24
    failed = crops[crops.cause.notna()]
    pause = failed[failed["clip"] == "zz_pause"]
    assert len(pause) >= 3 and set(failed.cause) == {"silent_reference"}  # real speech also has pauses at 0.5 s
    assert causes.loc["silent_reference", "failed"] == len(failed) == causes.loc["any", "failed"]
    assert causes.loc["silent_reference", "low"] < len(failed) / 24 < causes.loc["silent_reference", "high"]
    p = len(failed) / 24
    assert rules.loc["skip", "share"] == pytest.approx(1 - (1 - p) ** 4)
    assert rules.loc["mpsenet", "share"] == rules.loc["skip", "share"]  # same batches, only the fake term goes
    assert rules.loc["masked", "share"] == pytest.approx(p**4) and rules.loc["batch_mean", "share"] == 0
    assert files["clip"].iloc[0] == "zz_pause" and files.failed.iloc[0] == len(pause) == files.failed.max()
    assert "zz_pause" in text and "silent_reference" in text and "mpsenet" in text
    assert len(text.splitlines()) < 40  # one screen


def test_audit_on_the_shared_real_speech(vb_samples, tmp_path, capsys):
    assert main(["audit", str(vb_samples), "--crops-per-clip", "1", "--out", str(tmp_path), "--workers", "1"]) == 0
    causes = pd.read_csv(tmp_path / "causes.csv").set_index("cause")
    assert causes.loc["any", "crops"] == len(list((vb_samples / "clean").glob("*.wav")))
    assert "95%" in capsys.readouterr().out


@pytest.mark.parametrize("layout", ["empty", "no_noisy", "file"])
def test_audit_refuses_a_folder_without_pairs_in_one_line(tmp_path, capsys, layout):
    target = tmp_path / "data"
    if layout == "file":
        target.write_text("not a folder")
    else:
        (target / "clean").mkdir(parents=True)
        if layout == "empty":
            (target / "noisy").mkdir()
    assert main(["audit", str(target), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_audit_refuses_bad_numbers(vb_samples, tmp_path, capsys):
    assert main(["audit", str(vb_samples), "--batch-size", "0", "--out", str(tmp_path / "o")]) == 2
    assert "--batch-size" in capsys.readouterr().err
