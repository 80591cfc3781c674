"""The embedded synthetic corpus: layout, manifest, exact SNRs, hard clips, determinism, PESQ target."""

from __future__ import annotations

import os
import stat
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from cmgan_lib.cli import main as cli_main
from cmgan_lib.core.audio import read_wav
from cmgan_lib.data.dataset import CMGANDataset
from cmgan_lib.data.synthetic import (
    HARD_KINDS,
    MANIFEST_COLUMNS,
    NOISE_TYPES,
    TEST_SNRS,
    TRAIN_SNRS,
    make_dataset,
    measured_snr,
)
from cmgan_lib.data.validate import validate_dataset


def read_manifest(root: Path) -> pd.DataFrame:
    return pd.read_csv(root / "manifest.csv", keep_default_na=False)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    out = tmp_path_factory.mktemp("syn") / "corpus"
    manifest = make_dataset(out, n_train=12, n_test=8, seed=3, hard_fraction=0.4, progress=False, n_jobs=1)
    return out, manifest


def test_layout_manifest_and_format(corpus) -> None:
    out, manifest = corpus
    assert list(manifest.columns) == MANIFEST_COLUMNS
    on_disk = read_manifest(out)
    pd.testing.assert_frame_equal(on_disk, manifest, check_dtype=False)
    assert (manifest.split == "train").sum() == 12 and (manifest.split == "test").sum() == 8
    for row in manifest.itertuples():
        for sub in ("clean", "noisy"):
            info = sf.info(out / row.split / sub / row.file)
            assert (info.samplerate, info.channels, info.subtype, info.format) == (16000, 1, "PCM_16", "WAV")
            assert info.frames == round(row.duration_s * 16000)
    assert set(manifest.noise_type) <= set(NOISE_TYPES)
    assert set(manifest[manifest.split == "train"].speaker).isdisjoint(manifest[manifest.split == "test"].speaker)
    ordinary = manifest[manifest.hard_kind == "ordinary"]
    assert set(ordinary[ordinary.split == "train"].snr_db) <= set(TRAIN_SNRS)
    assert set(ordinary[ordinary.split == "test"].snr_db) <= set(TEST_SNRS)
    assert ordinary.duration_s.between(1.5, 4.0).all()
    assert validate_dataset(out, progress=False).pairs == {"train": 12, "test": 8}


def test_every_written_pair_measures_its_manifest_snr(corpus) -> None:
    out, manifest = corpus
    for row in manifest.itertuples():
        clean = read_wav(out / row.split / "clean" / row.file)
        noisy = read_wav(out / row.split / "noisy" / row.file)
        assert abs(measured_snr(clean, noisy) - row.snr_db) < 0.5, row.file
        assert np.max(np.abs(noisy)) < 1.0  # never clipped


def test_hard_clips(corpus) -> None:
    out, manifest = corpus
    hard = manifest[manifest.hard_kind != "ordinary"]
    assert len(hard) == round(0.4 * 12) + round(0.4 * 8)
    assert set(hard.hard_kind) == set(HARD_KINDS)
    for row in hard.itertuples():
        clean = read_wav(out / row.split / "clean" / row.file)
        if row.hard_kind == "short":
            assert len(clean) < 0.25 * 16000
        elif row.hard_kind == "long_silence":  # a 2 s crop at either end holds no speech
            speech_rms = np.sqrt(np.mean(clean**2) / row.speech_fraction)
            for edge in (clean[:32000], clean[-32000:]):
                assert np.sqrt(np.mean(edge**2)) < 10 ** (-40 / 20) * speech_rms
            assert row.duration_s >= 5.0
        elif row.hard_kind == "near_silent":
            assert 20 * np.log10(np.sqrt(np.mean(clean**2))) < -55
        elif row.hard_kind == "low_snr":
            assert row.snr_db == -5.0


def test_dataset_reads_the_corpus(corpus) -> None:
    out, _ = corpus
    ds = CMGANDataset(out, "train", cut_len=32000)
    clean, noisy, length = ds[0]
    assert clean.shape == (32000,) and noisy.shape == (32000,) and length > 0


def test_same_seed_gives_identical_files_and_other_seed_differs(corpus, tmp_path: Path) -> None:
    out, manifest = corpus
    again = tmp_path / "again"
    make_dataset(again, n_train=12, n_test=8, seed=3, hard_fraction=0.4, progress=False, n_jobs=1)
    for row in manifest.itertuples():
        for sub in ("clean", "noisy"):
            rel = Path(row.split) / sub / row.file
            assert (out / rel).read_bytes() == (again / rel).read_bytes(), rel
    assert (out / "manifest.csv").read_bytes() == (again / "manifest.csv").read_bytes()
    other = tmp_path / "other"
    make_dataset(other, n_train=2, n_test=0, seed=4, hard_fraction=0.0, progress=False, n_jobs=1)
    first = read_manifest(other).file[0]
    assert (other / "train/clean" / first).read_bytes() != (out / "train/clean" / first).read_bytes()


def test_valid_split_has_held_out_speakers_and_leaves_train_and_test_unchanged(corpus, tmp_path: Path) -> None:
    out, manifest = corpus
    with_valid = tmp_path / "with_valid"
    make_dataset(with_valid, n_train=12, n_test=8, seed=3, hard_fraction=0.4, progress=False, n_jobs=1, n_valid=4)
    man = read_manifest(with_valid)
    speakers = {split: {f.split("_")[0] for f in man[man.split == split].file} for split in ("train", "valid", "test")}
    assert len(man[man.split == "valid"]) == 4 and speakers["valid"]
    assert not speakers["valid"] & (speakers["train"] | speakers["test"])
    for row in manifest.itertuples():
        rel = Path(row.split) / "noisy" / row.file
        assert (out / rel).read_bytes() == (with_valid / rel).read_bytes(), rel
    assert validate_dataset(with_valid, progress=False).pairs == {"train": 12, "test": 8, "valid": 4}


def test_refuses_an_existing_corpus_stale_files_and_bad_arguments(tmp_path: Path) -> None:
    args = dict(hard_fraction=0.0, progress=False, n_jobs=1)
    make_dataset(tmp_path, n_train=2, n_test=1, **args)
    with pytest.raises(FileExistsError, match="already holds a corpus.*--overwrite"):
        make_dataset(tmp_path, n_train=2, n_test=1, seed=1, **args)
    make_dataset(tmp_path, n_train=1, n_test=1, seed=1, overwrite=True, **args)  # replaces it, nothing stale
    assert len(list(tmp_path.rglob("*.wav"))) == 4 and len(read_manifest(tmp_path)) == 2
    (tmp_path / "manifest.csv").unlink()  # an interrupted build: its WAVs but no manifest
    make_dataset(tmp_path, n_train=1, n_test=1, seed=1, **args)  # completed, as the trainer builds on demand
    (tmp_path / "manifest.csv").unlink()
    with pytest.raises(FileExistsError, match="stale"):
        make_dataset(tmp_path, n_train=0, n_test=1, seed=1, **args)
    with pytest.raises(ValueError):
        make_dataset(tmp_path / "x", n_train=0, n_test=0)
    with pytest.raises(ValueError):
        make_dataset(tmp_path / "x", hard_fraction=1.5)


def test_espeak_falls_back_with_a_warning_when_absent(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    with pytest.warns(UserWarning, match="espeak-ng is not on PATH"):
        manifest = make_dataset(
            tmp_path / "o", n_train=1, n_test=0, hard_fraction=0, use_espeak=True, progress=False, n_jobs=1
        )
    assert list(manifest.speech_source) == ["source-filter"]


def test_espeak_used_when_on_path(tmp_path: Path, monkeypatch) -> None:
    """A stand-in espeak-ng (writes a 22.05 kHz buzz to -w FILE) exercises the whole path."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "espeak-ng"
    fake.write_text(
        f"#!{sys.executable}\n"
        "import sys, numpy as np, soundfile as sf\n"
        "out = sys.argv[sys.argv.index('-w') + 1]\n"
        "t = np.arange(int(22050 * 1.5)) / 22050\n"
        "x = 0.3 * np.sign(np.sin(2 * np.pi * 120 * t)) * (t > 0.2) * (t < 1.3)\n"
        "sf.write(out, x, 22050, subtype='PCM_16')\n"
    )
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    manifest = make_dataset(
        tmp_path / "o", n_train=2, n_test=0, hard_fraction=0, use_espeak=True, progress=False, n_jobs=1
    )
    assert list(manifest.speech_source) == ["espeak-ng"] * 2
    assert (manifest.duration_s == 1.5).all()
    assert manifest.speech_fraction.between(0.6, 0.85).all()


def test_cli_make_synthetic(tmp_path: Path, capsys) -> None:
    out = tmp_path / "cli"
    args = [
        "make-synthetic",
        str(out),
        "--n-train",
        "2",
        "--n-test",
        "1",
        "--seed",
        "1",
        "--hard-fraction",
        "0",
        "--n-valid",
        "1",
    ]
    assert cli_main(args) == 0
    assert "wrote 4 clips" in capsys.readouterr().out
    assert len(read_manifest(out)) == 4 and len(list((out / "valid" / "noisy").glob("*.wav"))) == 1


@pytest.mark.slow
def test_worker_count_does_not_change_files(tmp_path: Path) -> None:
    one = make_dataset(tmp_path / "one", n_train=6, n_test=2, seed=9, hard_fraction=0.5, progress=False, n_jobs=1)
    make_dataset(tmp_path / "two", n_train=6, n_test=2, seed=9, hard_fraction=0.5, progress=False, n_jobs=2)
    for row in one.itertuples():
        for sub in ("clean", "noisy"):
            rel = Path(row.split) / sub / row.file
            assert (tmp_path / "one" / rel).read_bytes() == (tmp_path / "two" / rel).read_bytes(), rel


@pytest.mark.slow
def test_default_corpus_time_and_pesq_target(tmp_path: Path) -> None:
    """The default 200 clips: generation time (reported; bound loose for shared CI machines) and
    mean PESQ-WB of noisy vs clean on the ordinary test clips within [1.5, 2.6] (VB+DEMAND: 1.97)."""
    from joblib import Parallel, delayed
    from pesq import pesq

    t0 = time.perf_counter()
    manifest = make_dataset(tmp_path, seed=0, progress=False)
    elapsed = time.perf_counter() - t0
    assert len(manifest) == 200
    assert elapsed < 120, f"generation took {elapsed:.1f} s"
    test = manifest[(manifest.split == "test") & (manifest.hard_kind == "ordinary")]
    scores = Parallel(n_jobs=-1)(
        delayed(pesq)(16000, read_wav(tmp_path / "test/clean" / f), read_wav(tmp_path / "test/noisy" / f), "wb")
        for f in test.file
    )
    mean = float(np.mean(scores))
    print(f"200 clips in {elapsed:.1f} s; PESQ-WB mean {mean:.3f} sd {np.std(scores):.3f}")
    assert 1.5 <= mean <= 2.6


def test_ensure_corpus_builds_once_while_another_process_waits(tmp_path):
    """Two runs started together on a fresh machine must not write the same default corpus at once."""
    import fcntl
    import subprocess

    from cmgan_lib.data.synthetic import ensure_corpus

    out = tmp_path / "corpus"
    code = f"from cmgan_lib.data.synthetic import ensure_corpus; ensure_corpus({str(out)!r}, n_train=2, n_test=1)"
    with open(tmp_path / ".corpus.build.lock", "a") as lock:  # as a first builder holds it
        fcntl.flock(lock, fcntl.LOCK_EX)
        waiting = subprocess.Popen([sys.executable, "-c", code])
        time.sleep(3)
        assert waiting.poll() is None and not out.exists()  # the second builder waits, writing nothing
    assert waiting.wait(timeout=120) == 0
    manifest = out / "manifest.csv"
    stamp = manifest.stat().st_mtime_ns
    assert ensure_corpus(out, n_train=2, n_test=1) == out and manifest.stat().st_mtime_ns == stamp  # not rebuilt
    assert len(pd.read_csv(manifest)) == 3 and not list(out.glob(".*.tmp"))
