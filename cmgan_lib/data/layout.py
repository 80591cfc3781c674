"""Where the clean/noisy pairs of a split live (CMGAN layout or the original archive names); no torch."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

SPLITS = ("train", "valid", "test")
# The folder names inside the original Edinburgh DataShare archive (28-speaker training set).
ARCHIVE_NAMES = {
    "train": ("clean_trainset_28spk_wav", "noisy_trainset_28spk_wav"),
    "test": ("clean_testset_wav", "noisy_testset_wav"),
}


def natural_key(name: str) -> list:
    """Sort key so that p232_9 < p232_10 (what natsort does for the published loader)."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def split_candidates(data_dir: str | os.PathLike, split: str) -> list[tuple[Path, Path]]:
    """The (clean, noisy) folder pairs that may hold `split`, in order of preference."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    root = Path(data_dir)
    if split not in ARCHIVE_NAMES:  # valid: only the CMGAN layout (the archive has no validation split)
        return [(root / split / "clean", root / split / "noisy")]
    clean_name, noisy_name = ARCHIVE_NAMES[split]
    return [(root / split / "clean", root / split / "noisy"), (root / clean_name, root / noisy_name)]


def find_split(data_dir: str | os.PathLike, split: str) -> tuple[Path, Path]:
    """Return (clean_dir, noisy_dir) of `split` in the CMGAN layout or under the original archive names."""
    candidates = split_candidates(data_dir, split)
    for clean_dir, noisy_dir in candidates:
        if clean_dir.is_dir() and noisy_dir.is_dir():
            return clean_dir, noisy_dir
    looked = "; ".join(f"{c} + {n}" for c, n in candidates)
    raise FileNotFoundError(f"{data_dir}: no {split} split found (looked for {looked})")


def wav_names(folder: Path) -> list[str]:
    """Names of the .wav files directly in `folder`, natural-sorted (hidden temporary files skipped)."""
    names = [
        p.name for p in folder.iterdir() if p.suffix.lower() == ".wav" and not p.name.startswith(".") and p.is_file()
    ]
    return sorted(names, key=natural_key)


def match_wavs(*folders: Path | None, by_stem: bool = False) -> list[tuple[str, list[Path | None]]]:
    """The one pair finder: the .wav files of `folders` matched by file name (or by stem, `by_stem`), as
    (name, [its path in each folder, None where absent]) for every name in any folder, natural-sorted; hidden
    temporary files skipped, a missing folder has no files. Training (`list_pairs`), the audit
    (`audit.load_folder_pairs`) and evaluation (`evaluate.pair_files`) each decide what an unpaired name means."""
    found = []
    for folder in folders:
        names = wav_names(folder) if folder is not None and folder.is_dir() else []
        found.append({(Path(n).stem if by_stem else n): folder / n for n in names})
    keys = sorted(set().union(*found), key=natural_key)
    return [(k, [files.get(k) for files in found]) for k in keys]


def unpaired(matched: list[tuple[str, list[Path | None]]]) -> tuple[list[str], list[str]]:
    """(names only in the first folder, names only in the second) of a two-folder `match_wavs`."""
    return [n for n, (_, b) in matched if b is None], [n for n, (a, _) in matched if a is None]


def list_pairs(data_dir: str | os.PathLike, split: str) -> list[tuple[str, Path, Path]]:
    """Return (name, clean_path, noisy_path) for every utterance of `split`, natural-sorted.

    Raises ValueError naming the unpaired files rather than silently training on a subset.
    """
    clean_dir, noisy_dir = find_split(data_dir, split)
    matched = match_wavs(clean_dir, noisy_dir)
    only_clean, only_noisy = unpaired(matched)
    if only_clean or only_noisy:
        raise ValueError(
            f"{data_dir} ({split}): clean/noisy names differ; no noisy partner for {only_clean[:10]}"
            f"{' ...' if len(only_clean) > 10 else ''}, no clean partner for {only_noisy[:10]}"
            f"{' ...' if len(only_noisy) > 10 else ''} (run `cmgan validate-data` for the full list)"
        )
    if not matched:
        raise ValueError(f"{clean_dir}: no .wav files")
    return [(name, clean, noisy) for name, (clean, noisy) in matched]


def speaker_of(name: str) -> str:
    """The speaker of a Voice Bank-style file name: `p226_001.wav` -> `p226` (synthetic: `s03_002.wav` -> `s03`)."""
    return Path(name).stem.split("_")[0]


def has_split(data_dir: str | os.PathLike, split: str) -> bool:
    return any(c.is_dir() and n.is_dir() for c, n in split_candidates(data_dir, split))


def training_pairs(
    data_dir: str | os.PathLike, split: str, val_speakers: list[str] | tuple[str, ...] = ()
) -> list[tuple[str, Path, Path]]:
    """The pairs a run trains or validates on, with a validation split that is not the test set.

    `valid` is DIR/valid when it exists (the synthetic corpus writes one), else the training files of the
    held-out `val_speakers` (Voice Bank + DEMAND has no validation split); `train` then leaves those
    speakers out. `test` is the test split, untouched (the published code validates on it).
    """
    if split == "test":
        return list_pairs(data_dir, "test")
    if val_speakers and has_split(data_dir, "valid"):
        raise ValueError(
            f"{data_dir}: has a valid/ split and val_speakers {list(val_speakers)} are set: say which "
            "validation you mean (val_speakers=[] to use valid/, or a copy of the data without valid/)"
        )
    held_out = set(val_speakers)
    if split == "train":
        return [p for p in list_pairs(data_dir, "train") if speaker_of(p[0]) not in held_out]
    if split != "valid":
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if has_split(data_dir, "valid"):
        return list_pairs(data_dir, "valid")
    if not held_out:
        raise ValueError(
            f"{data_dir}: val_split=valid needs a valid/ folder (clean/ + noisy/) or held-out training speakers "
            "(val_speakers: [p226, p287], say); val_split=test validates on the test set as the published code does"
        )
    pairs = [p for p in list_pairs(data_dir, "train") if speaker_of(p[0]) in held_out]
    found = {speaker_of(p[0]) for p in pairs}
    if found != held_out:
        raise ValueError(f"{data_dir}: val_speakers {sorted(held_out - found)} have no training files")
    return pairs


def split_dir(data_dir: str | os.PathLike, split: str) -> Path:
    """DIR/<split> when it holds clean/ and noisy/, else DIR itself (a flat clean/noisy folder)."""
    data_dir = Path(data_dir)
    return data_dir / split if (data_dir / split / "clean").is_dir() else data_dir


def manifest_rows(data_dir: str | os.PathLike, names: Sequence[str], split: str) -> pd.DataFrame | None:
    """The manifest rows (snr_db, speech_fraction, ...) of `names` (file stems), in that order; None if absent."""
    path = Path(data_dir) / "manifest.csv"
    if not path.exists():
        return None
    man = pd.read_csv(path)
    if "split" in man:
        man = man[man["split"] == split]
    man = man.assign(stem=man["file"].map(lambda f: Path(f).stem)).drop_duplicates("stem").set_index("stem")
    if not set(names) <= set(man.index):
        return None
    return man.loc[list(names)].drop(columns=["file"]).reset_index(drop=True)
