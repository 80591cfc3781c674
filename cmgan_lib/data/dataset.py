"""Voice Bank + DEMAND pairs and the published training crop, seeded so any run reproduces."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import torch

from cmgan_lib import SAMPLE_RATE
from cmgan_lib.audio import read_wav
from cmgan_lib.data.crops import crop_pair

SPLITS = ("train", "test")
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
        p.name
        for p in folder.iterdir()
        if p.suffix.lower() == ".wav" and not p.name.startswith(".") and p.is_file()
    ]
    return sorted(names, key=natural_key)


def list_pairs(data_dir: str | os.PathLike, split: str) -> list[tuple[str, Path, Path]]:
    """Return (name, clean_path, noisy_path) for every utterance of `split`, natural-sorted.

    Raises ValueError naming the unpaired files rather than silently training on a subset.
    """
    clean_dir, noisy_dir = find_split(data_dir, split)
    clean, noisy = wav_names(clean_dir), wav_names(noisy_dir)
    only_clean = sorted(set(clean) - set(noisy), key=natural_key)
    only_noisy = sorted(set(noisy) - set(clean), key=natural_key)
    if only_clean or only_noisy:
        raise ValueError(
            f"{data_dir} ({split}): clean/noisy names differ; no noisy partner for {only_clean[:10]}"
            f"{' ...' if len(only_clean) > 10 else ''}, no clean partner for {only_noisy[:10]}"
            f"{' ...' if len(only_noisy) > 10 else ''} (run `cmgan validate-data` for the full list)"
        )
    if not clean:
        raise ValueError(f"{clean_dir}: no .wav files")
    return [(name, clean_dir / name, noisy_dir / name) for name in clean]


class CMGANDataset(torch.utils.data.Dataset):
    """Clean/noisy pairs cropped to `cut_len` samples as the published CMGAN loader does.

    The crop start comes from `np.random.default_rng([seed, epoch, idx])`, so an item is a pure
    function of (seed, epoch, idx): identical for any worker count, rank, sampler or resume point.
    The epoch lives in a shared-memory tensor, so `set_epoch` also reaches persistent workers
    (call it before iterating the DataLoader, as with DistributedSampler.set_epoch).
    `cut_len=None` returns whole clips (batch size 1). Decoded audio is cached per process up to
    `cache_mb` megabytes (float32); the full VB training set (~4 GB) would not fit, so it streams.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike,
        split: str = "train",
        cut_len: int | None = 2 * SAMPLE_RATE,
        seed: int = 0,
        resample: bool = False,
        cache_mb: float = 512.0,
    ):
        if cut_len is not None and cut_len <= 0:
            raise ValueError(f"cut_len must be positive or None, got {cut_len}")
        if seed < 0:
            raise ValueError(f"seed must be non-negative, got {seed}")
        self.data_dir = Path(data_dir)
        self.split = split
        self.cut_len = cut_len
        self.seed = int(seed)
        self.resample = resample
        self.cache_bytes = int(cache_mb * 2**20)
        self.pairs = list_pairs(data_dir, split)
        self.names = [name for name, _, _ in self.pairs]
        self._epoch = torch.zeros(1, dtype=torch.int64).share_memory_()
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._cached_bytes = 0

    def __len__(self) -> int:
        return len(self.pairs)

    @property
    def epoch(self) -> int:
        return int(self._epoch.item())

    def set_epoch(self, epoch: int) -> None:
        """Select the crops of `epoch` (a new random start per clip each epoch, reproducibly)."""
        if epoch < 0:
            raise ValueError(f"epoch must be non-negative, got {epoch}")
        self._epoch.fill_(int(epoch))

    def load(self, idx: int) -> tuple[np.ndarray, np.ndarray]:
        """Decoded (clean, noisy) float32 of item `idx`, from the cache when there."""
        if idx in self._cache:
            return self._cache[idx]
        _, clean_path, noisy_path = self.pairs[idx]
        clean = read_wav(clean_path, resample=self.resample)
        noisy = read_wav(noisy_path, resample=self.resample)
        if len(clean) != len(noisy):
            raise ValueError(
                f"{clean_path} has {len(clean)} samples but {noisy_path} has {len(noisy)}; "
                "clean and noisy must be the same length"
            )
        size = clean.nbytes + noisy.nbytes
        if self._cached_bytes + size <= self.cache_bytes:
            self._cache[idx] = (clean, noisy)
            self._cached_bytes += size
        return clean, noisy

    def __getitem__(self, idx: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        idx = int(idx)
        if not 0 <= idx < len(self):
            raise IndexError(f"index {idx} out of range for {len(self)} items")
        clean, noisy = self.load(idx)
        length = len(clean)
        if self.cut_len is not None:
            rng = np.random.default_rng([self.seed, self.epoch, idx])
            clean, noisy = crop_pair(clean, noisy, self.cut_len, rng)
        return torch.from_numpy(np.array(clean)), torch.from_numpy(np.array(noisy)), length
