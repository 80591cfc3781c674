"""The training crop of the published loader, shared by the dataset and the PESQ-failure audit."""

from __future__ import annotations

import numpy as np


def crop_pair(
    clean: np.ndarray, noisy: np.ndarray, cut_len: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Return a `cut_len` crop of a clean/noisy pair exactly as the published CMGAN loader does.

    Clips at least `cut_len` long: one uniformly random start in [0, len - cut_len] (inclusive, as
    `random.randint`). Shorter clips: tiled, i.e. `cut_len // len` whole repeats plus the first
    `cut_len % len` samples. The random draw comes from `rng` so that runs reproduce.
    """
    length = len(clean)
    if length != len(noisy):
        raise ValueError(f"clean and noisy lengths differ: {length} vs {len(noisy)}")
    if length == 0:
        raise ValueError("cannot crop an empty clip")
    if length < cut_len:
        units, rest = divmod(cut_len, length)
        clean = np.concatenate([clean] * units + [clean[:rest]])
        noisy = np.concatenate([noisy] * units + [noisy[:rest]])
        return clean, noisy
    start = int(rng.integers(0, length - cut_len + 1))
    return clean[start : start + cut_len], noisy[start : start + cut_len]
