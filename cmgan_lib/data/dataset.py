"""Voice Bank + DEMAND pairs and the published training crop, seeded so any run reproduces."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from cmgan_lib import SAMPLE_RATE
from cmgan_lib.core.audio import read_wav
from cmgan_lib.data.crops import crop_pair
from cmgan_lib.data.layout import ARCHIVE_NAMES, SPLITS, find_split, list_pairs, natural_key, training_pairs

__all__ = ["ARCHIVE_NAMES", "SPLITS", "CMGANDataset", "find_split", "list_pairs", "natural_key"]


class CMGANDataset(torch.utils.data.Dataset):
    """Clean/noisy pairs cropped to `cut_len` samples as the published CMGAN loader does.

    The crop start comes from `np.random.default_rng([seed, epoch, idx])`, so an item is a pure
    function of (seed, epoch, idx): identical for any worker count, rank, sampler or resume point.
    The epoch lives in a shared-memory tensor, so `set_epoch` also reaches persistent workers
    (call it before iterating the DataLoader, as with DistributedSampler.set_epoch).
    `val_speakers`: training speakers held out for validation (left out of `train`; see `training_pairs`).
    `cut_len=None` returns whole clips (batch size 1). `repeat`: the clips are listed that many times (item
    idx is clip idx % n with a crop of its own), so that an epoch of a tiny training set is several steps.
    `fixed_crops`: every clip keeps one crop for the whole run, so the training set is exactly n examples, visited
    again and again: the lever for an overfitting regime (issue 18). The crops are part of the data, drawn from
    `[0, 0, clip]` whatever the seed, so seeds vary the initialisation and order, not the examples (seeds that
    drew their own crops trained on different data: one collapsed, another was still learning).
    Decoded audio is cached per process up to `cache_mb` megabytes (float32); the full VB training set
    (~4 GB) would not fit, so it streams.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike,
        split: str = "train",
        cut_len: int | None = 2 * SAMPLE_RATE,
        seed: int = 0,
        resample: bool = False,
        cache_mb: float = 512.0,
        val_speakers: list[str] | tuple[str, ...] = (),
        repeat: int = 1,
        fixed_crops: bool = False,
    ):
        if repeat < 1:
            raise ValueError(f"repeat must be >= 1, got {repeat}")
        if cut_len is not None and cut_len <= 0:
            raise ValueError(f"cut_len must be positive or None, got {cut_len}")
        if seed < 0:
            raise ValueError(f"seed must be non-negative, got {seed}")
        self.data_dir = Path(data_dir)
        self.split = split
        self.cut_len = cut_len
        self.seed = int(seed)
        self.repeat = int(repeat)
        self.fixed_crops = bool(fixed_crops)
        self.resample = resample
        self.cache_bytes = int(cache_mb * 2**20)
        self.pairs = training_pairs(data_dir, split, val_speakers)
        self.names = [name for name, _, _ in self.pairs]
        self._epoch = torch.zeros(1, dtype=torch.int64).share_memory_()
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._cached_bytes = 0

    def __len__(self) -> int:
        return len(self.pairs) * self.repeat

    def name(self, idx: int) -> str:
        """The file name of item `idx` (its clip)."""
        return self.names[int(idx) % len(self.pairs)]

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
        clean, noisy = self.load(idx % len(self.pairs))
        length = len(clean)
        if self.cut_len is not None:
            key = [0, 0, idx % len(self.pairs)] if self.fixed_crops else [self.seed, self.epoch, idx]
            rng = np.random.default_rng(key)
            clean, noisy = crop_pair(clean, noisy, self.cut_len, rng)
        return torch.from_numpy(np.array(clean)), torch.from_numpy(np.array(noisy)), length
