"""Validation names every offending file, grouped by kind, and the CLI exits non-zero."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from cmgan_lib.cli import main as cli_main
from cmgan_lib.data.validate import DataValidationError, validate_dataset

SR = 16000


def tone(n: int = 8000, channels: int = 1) -> np.ndarray:
    x = 0.1 * np.sin(2 * np.pi * 440 * np.arange(n) / SR).astype(np.float32)
    return x if channels == 1 else np.stack([x] * channels, axis=1)


def good_corpus(root: Path, n_train: int = 4, n_test: int = 2) -> Path:
    for split, n in (("train", n_train), ("test", n_test)):
        for sub in ("clean", "noisy"):
            (root / split / sub).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                sf.write(root / split / sub / f"p{i}.wav", tone(8000 + 100 * i), SR, subtype="PCM_16")
    return root


def problems(root: Path, **kw) -> DataValidationError:
    with pytest.raises(DataValidationError) as info:
        validate_dataset(root, progress=False, **kw)
    return info.value


def test_good_corpus_passes(tmp_path: Path) -> None:
    report = validate_dataset(good_corpus(tmp_path), progress=False)
    assert report.ok and report.pairs == {"train": 4, "test": 2}


def test_archive_layout_passes(tmp_path: Path) -> None:
    for folder in (
        "clean_trainset_28spk_wav",
        "noisy_trainset_28spk_wav",
        "clean_testset_wav",
        "noisy_testset_wav",
    ):
        (tmp_path / folder).mkdir()
        sf.write(tmp_path / folder / "p226_001.wav", tone(), SR, subtype="PCM_16")
    assert validate_dataset(tmp_path, progress=False).pairs == {"train": 1, "test": 1}


def test_missing_folders(tmp_path: Path) -> None:
    good_corpus(tmp_path)
    for f in (tmp_path / "test" / "noisy").iterdir():
        f.unlink()
    (tmp_path / "test" / "noisy").rmdir()
    err = problems(tmp_path)
    assert "Missing folders" in str(err)
    assert str(tmp_path / "test" / "noisy") in str(err)
    err = problems(tmp_path / "absent")
    assert "data folder does not exist" in str(err)
    empty = tmp_path / "empty"
    empty.mkdir()
    err = problems(empty)
    assert "no train split" in str(err) and "no test split" in str(err)


def test_name_mismatch_lists_every_unpartnered_file(tmp_path: Path) -> None:
    good_corpus(tmp_path)
    (tmp_path / "train" / "noisy" / "p1.wav").unlink()
    (tmp_path / "train" / "noisy" / "p3.wav").unlink()
    sf.write(tmp_path / "train" / "noisy" / "extra.wav", tone(), SR)
    msg = str(problems(tmp_path))
    assert "Clean/noisy name mismatch (3)" in msg
    for name in ("clean/p1.wav", "clean/p3.wav", "noisy/extra.wav"):
        assert name in msg


def test_sample_rate_all_files_with_hint_and_resample_option(tmp_path: Path) -> None:
    good_corpus(tmp_path)
    sf.write(tmp_path / "train" / "clean" / "p0.wav", tone(24000), 48000)
    sf.write(tmp_path / "train" / "noisy" / "p0.wav", tone(24000), 48000)
    sf.write(tmp_path / "test" / "noisy" / "p1.wav", tone(8100 // 2), 8000)
    err = problems(tmp_path)
    msg = str(err)
    assert "Sample rate other than 16000 Hz (3)" in msg
    assert "train/clean/p0.wav: sample rate is 48000 Hz" in msg and "test/noisy/p1.wav" in msg
    assert "--resample" in msg and "polyphase" in msg
    assert {p.kind for p in err.report.problems} == {"sample_rate"}
    # resampled lengths agree (24000 @ 48 kHz = 8000 @ 16 kHz; 4050 @ 8 kHz = 8100 @ 16 kHz)
    assert validate_dataset(tmp_path, resample=True, progress=False).ok


def test_multichannel_all_files(tmp_path: Path) -> None:
    good_corpus(tmp_path)
    sf.write(tmp_path / "train" / "clean" / "p2.wav", tone(8200, channels=2), SR)
    sf.write(tmp_path / "test" / "noisy" / "p0.wav", tone(8000, channels=6), SR)
    msg = str(problems(tmp_path))
    assert "Multi-channel files (mono required) (2)" in msg
    assert "train/clean/p2.wav: has 2 channels" in msg and "test/noisy/p0.wav: has 6 channels" in msg


def test_empty_and_unreadable_all_files(tmp_path: Path) -> None:
    good_corpus(tmp_path)
    sf.write(tmp_path / "train" / "clean" / "p1.wav", np.zeros(0, np.float32), SR)
    (tmp_path / "train" / "noisy" / "p2.wav").write_bytes(b"RIFF\x00\x00garbage")
    (tmp_path / "test" / "clean" / "p0.wav").write_bytes(b"")
    err = problems(tmp_path)
    msg = str(err)
    assert "Empty or unreadable files (3)" in msg
    assert "train/clean/p1.wav: is empty" in msg
    assert "train/noisy/p2.wav: unreadable" in msg and "test/clean/p0.wav: unreadable" in msg
    assert {p.kind for p in err.report.problems} == {"unreadable"}  # no spurious length mismatches


def test_length_mismatch_all_pairs(tmp_path: Path) -> None:
    good_corpus(tmp_path)
    sf.write(tmp_path / "train" / "noisy" / "p0.wav", tone(7999), SR, subtype="PCM_16")
    sf.write(tmp_path / "test" / "clean" / "p1.wav", tone(9000), SR, subtype="PCM_16")
    msg = str(problems(tmp_path))
    assert "Clean/noisy length mismatch (2)" in msg
    assert "train/clean/p0.wav: 8000 samples but" in msg and "train/noisy/p0.wav has 7999" in msg
    assert "test/clean/p1.wav: 9000 samples" in msg


def test_non_finite_all_files(tmp_path: Path) -> None:
    good_corpus(tmp_path)
    for rel, value in (("train/noisy/p3.wav", np.nan), ("test/clean/p0.wav", np.inf)):
        x = tone(8000 + 100 * int(rel[-5]))
        x[100] = value
        sf.write(tmp_path / rel, x, SR, subtype="FLOAT")
    sf.write(tmp_path / "train/clean/p2.wav", tone(8200), SR, subtype="FLOAT")  # finite float: fine
    msg = str(problems(tmp_path))
    assert "NaN or inf samples (2)" in msg
    assert "train/noisy/p3.wav: 1 NaN/inf sample(s), first at 100" in msg and "test/clean/p0.wav" in msg


def test_every_kind_in_one_report_and_cli_exit_code(tmp_path: Path, capsys) -> None:
    good_corpus(tmp_path)
    (tmp_path / "train" / "noisy" / "p1.wav").unlink()
    sf.write(tmp_path / "train" / "clean" / "p2.wav", tone(8200), 22050)
    sf.write(tmp_path / "train" / "noisy" / "p3.wav", tone(8300, channels=2), SR)
    (tmp_path / "test" / "clean" / "p0.wav").write_bytes(b"not audio")
    sf.write(tmp_path / "test" / "noisy" / "p1.wav", tone(1), SR)  # one sample, sin(0) = 0: also silent
    x = tone(8000)
    x[5] = np.nan
    sf.write(tmp_path / "train" / "noisy" / "p0.wav", x, SR, subtype="DOUBLE")
    err = problems(tmp_path)
    kinds = {p.kind for p in err.report.problems}
    assert kinds == {
        "name_mismatch",
        "sample_rate",
        "channels",
        "unreadable",
        "length_mismatch",
        "non_finite",
        "silent",
    }
    msg = str(err)
    order = [
        msg.index(h)
        for h in (
            "name mismatch",
            "Sample rate",
            "Multi-channel",
            "unreadable files",
            "length mismatch",
            "NaN or inf",
            "All-zero",
        )
    ]
    assert order == sorted(order)
    assert cli_main(["validate-data", str(tmp_path)]) == 2
    assert "test/noisy/p1.wav" in capsys.readouterr().err
    good = good_corpus(tmp_path / "good")
    assert cli_main(["validate-data", str(good)]) == 0
