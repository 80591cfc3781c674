"""Validation during training: loss, PESQ and STOI on full validation files, over the files every metric
could score, with every file left out named and the reason why."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cmgan_lib.core.dsp import rms_normalizer
from cmgan_lib.scoring.pesq_worker import PesqPool


class ValidationFiles:
    """The validation (name, clean, noisy) audio, read on first use; files no metric could score are set
    aside in `dropped` as (name, reason)."""

    def __init__(self, pairs: list[tuple[str, Path, Path]], resample: bool):
        self.pairs, self.resample = pairs, resample
        self._audio: list[tuple[str, np.ndarray, np.ndarray]] | None = None
        self.dropped: list[tuple[str, str]] = []

    def audio(self) -> list[tuple[str, np.ndarray, np.ndarray]]:
        from cmgan_lib.core.audio import read_wav

        if self._audio is None:
            self._audio, self.dropped = [], []
            for name, clean_path, noisy_path in self.pairs:
                clean = read_wav(clean_path, resample=self.resample)
                noisy = read_wav(noisy_path, resample=self.resample)
                if len(clean) < 4000:
                    self.dropped.append((name, f"too short for PESQ ({len(clean)} samples < 0.25 s)"))
                elif not np.any(noisy) or not np.any(clean):
                    self.dropped.append((name, f"{'noisy' if not np.any(noisy) else 'clean'} is all zeros"))
                else:
                    self._audio.append((name, clean, noisy))
        return self._audio


@torch.no_grad()
def validate(
    forward_losses: Callable[[torch.Tensor, torch.Tensor], dict[str, torch.Tensor]],
    files: ValidationFiles,
    pool: PesqPool,
    device: torch.device,
) -> dict[str, Any]:
    """Loss, PESQ and STOI on full validation files (one file at a time, denormalized for the metrics).

    All three average over the same files: those every metric could score. `val_files` counts them and
    `val_dropped` lists (name, reason) for every validation file left out.
    """
    losses, names, pesq_handles, stoi_futures = [], [], [], []
    for name, clean_np, noisy_np in files.audio():
        names.append(name)
        clean = torch.from_numpy(clean_np).to(device)[None]
        noisy = torch.from_numpy(noisy_np).to(device)[None]
        c = rms_normalizer(noisy)[:, None]
        out = forward_losses(clean * c, noisy * c)
        losses.append(out["loss"].item())
        est = (out["est_audio"] / c)[0].cpu().numpy()
        # PESQ and STOI of this file in the worker pool while the next file's forward runs
        pesq_handles.append(pool.submit([clean_np], [est]))
        stoi_futures += pool.submit_stoi([clean_np], [est])
    dropped = list(files.dropped)
    if not names:
        return dict(val_loss=math.nan, val_pesq=math.nan, val_stoi=math.nan, val_files=0, val_dropped=dropped)
    per_file = [h.result() for h in pesq_handles]
    raw = np.concatenate([r for r, _ in per_file])
    reasons = [why for _, whys in per_file for why in whys]
    stois = np.array([f.result() for f in stoi_futures])
    losses = np.array(losses)
    scored = np.isfinite(raw) & np.isfinite(stois) & np.isfinite(losses)
    for i in np.flatnonzero(~scored):
        why = [f"PESQ: {reasons[i]}"] if not np.isfinite(raw[i]) else []
        why += ["STOI not finite"] if not np.isfinite(stois[i]) else []
        why += ["loss not finite"] if not np.isfinite(losses[i]) else []
        dropped.append((names[i], "; ".join(why)))
    if not scored.any():
        return dict(val_loss=math.nan, val_pesq=math.nan, val_stoi=math.nan, val_files=0, val_dropped=dropped)
    return dict(val_loss=float(losses[scored].mean()), val_pesq=float(raw[scored].mean()),
                val_stoi=float(stois[scored].mean()), val_files=int(scored.sum()), val_dropped=dropped)  # fmt: skip
