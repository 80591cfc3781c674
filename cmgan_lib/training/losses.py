"""The paper's two losses, to be read beside CMGAN (Cao et al., Interspeech 2022) and the official code's
`calculate_generator_loss` / `calculate_discriminator_loss`.

Generator: L_G = a * L_RI + b * L_Mag + c * L_Time + d * L_GAN (weights `loss_weights`, published
0.1, 0.9, 0.2, 0.05), on power-law compressed spectra (exponent 0.3). Metric discriminator:
L_D = MSE(D(clean, clean), 1) + MSE(D(clean, est), Q'_PESQ), with PESQ labels Q' normalized to [0, 1]
(`pesq_labels.normalize_pesq`); how a batch with failed PESQ is labelled is `pesq_labels.make_labels`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from cmgan_lib.core.dsp import istft, power_compress, power_uncompress, stft
from cmgan_lib.training.pesq_labels import PesqLabels

Discriminator = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Generator = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def forward_generator_step(
    generator: Generator, clean: torch.Tensor, noisy: torch.Tensor, n_fft: int, hop: int, compress: float
) -> dict[str, torch.Tensor]:
    """As the official `forward_generator_step`: power-law compressed spectra, the generator's estimate (real,
    imaginary, magnitude) and its waveform. The order of the operations is the published one: it fixes the
    order in which backward sums gradients, so a bit-identical run depends on it."""
    noisy_spec = power_compress(stft(noisy, n_fft, hop), compress).permute(0, 1, 3, 2)
    clean_spec = power_compress(stft(clean, n_fft, hop), compress)
    clean_real, clean_imag = clean_spec[:, 0:1], clean_spec[:, 1:2]
    est_real, est_imag = generator(noisy_spec)
    est_real, est_imag = est_real.permute(0, 1, 3, 2), est_imag.permute(0, 1, 3, 2)
    est_mag = torch.sqrt(est_real**2 + est_imag**2)
    clean_mag = torch.sqrt(clean_real**2 + clean_imag**2)
    est_spec = power_uncompress(est_real, est_imag, compress).squeeze(1)
    est_audio = istft(est_spec, n_fft, hop, length=clean.shape[-1])
    return dict(est_real=est_real, est_imag=est_imag, est_mag=est_mag, est_audio=est_audio, clean_real=clean_real,
                clean_imag=clean_imag, clean_mag=clean_mag, clean=clean)  # fmt: skip


def generator_losses(
    discriminator: Discriminator, g: dict[str, torch.Tensor], weights: list[float]
) -> dict[str, torch.Tensor]:
    """As the official `calculate_generator_loss`, on `forward_generator_step`'s outputs `g`: the four terms and
    their weighted sum `loss` (with the magnitudes and waveform the rest of the step uses).

    L_GAN = MSE(D(|clean|, |est|), 1); on the compressed spectra L_Mag = MSE(|est|, |clean|) and
    L_RI = MSE(est_r, clean_r) + MSE(est_i, clean_i); L_Time = mean |est_audio - clean|.
    """
    predict_fake = discriminator(g["clean_mag"], g["est_mag"]).flatten()
    loss_gan = F.mse_loss(predict_fake, torch.ones_like(predict_fake))
    loss_mag = F.mse_loss(g["est_mag"], g["clean_mag"])
    loss_ri = F.mse_loss(g["est_real"], g["clean_real"]) + F.mse_loss(g["est_imag"], g["clean_imag"])
    loss_time = torch.mean(torch.abs(g["est_audio"] - g["clean"]))
    w = weights
    loss = w[0] * loss_ri + w[1] * loss_mag + w[2] * loss_time + w[3] * loss_gan
    return dict(loss=loss, loss_ri=loss_ri, loss_mag=loss_mag, loss_time=loss_time, loss_gan=loss_gan,
                est_mag=g["est_mag"], clean_mag=g["clean_mag"], est_audio=g["est_audio"])  # fmt: skip


def discriminator_loss(
    discriminator: Discriminator,
    clean_mag: torch.Tensor,
    est_mag: torch.Tensor,
    labels: PesqLabels,
    detach_estimate: bool = True,
) -> torch.Tensor | None:
    """Published metric-discriminator loss: MSE(D(clean, clean), 1) + MSE(D(clean, est), PESQ labels).

    Returns None when `labels.skipped` (the caller skips the discriminator step, as published).
    Under `mpsenet` (MP-SENet, SEMamba) the real term always trains and the fake term is left out when any
    PESQ failed (their `loss_disc_g = 0`); D runs in their order, D(clean, clean) then D(clean, est).
    Under `masked`, the second MSE averages over valid samples only, so failed samples get exactly zero
    gradient; the first term needs no PESQ and stays over the whole batch, as published. D still runs on
    the whole batch so per-batch layers and dropout see what they see in the published step. The
    estimate is detached by default (the published step trains D on `est_mag.detach()`).
    """
    if labels.skipped or (labels.scores is None and labels.strategy != "mpsenet"):
        return None
    if detach_estimate:
        est_mag = est_mag.detach()
    if labels.strategy == "mpsenet":
        return _mpsenet_loss(discriminator, clean_mag, est_mag, labels)
    # Published order: D(clean, est) before D(clean, clean); in train mode each call advances spectral
    # norm's power iteration, so the order is part of the recipe.
    pred_est = discriminator(clean_mag, est_mag).flatten()
    pred_max = discriminator(clean_mag, clean_mag).flatten()
    if pred_est.numel() != labels.batch_size:
        raise ValueError(f"discriminator gave {pred_est.numel()} predictions for {labels.batch_size} labels")
    target = labels.scores.to(device=pred_est.device, dtype=pred_est.dtype)
    loss_max = F.mse_loss(pred_max, torch.ones_like(pred_max))
    if labels.strategy == "masked":
        index = torch.as_tensor(np.flatnonzero(labels.valid), dtype=torch.long, device=pred_est.device)
        loss_est = F.mse_loss(pred_est.index_select(0, index), target.index_select(0, index))
    else:
        loss_est = F.mse_loss(pred_est, target)
    return loss_max + loss_est


def _mpsenet_loss(
    discriminator: Discriminator, clean_mag: torch.Tensor, est_mag: torch.Tensor, labels: PesqLabels
) -> torch.Tensor:
    """MP-SENet's discriminator loss: MSE(D(clean, clean), 1) + (MSE(D(clean, est), labels) or 0 on failure)."""
    pred_max = discriminator(clean_mag, clean_mag).flatten()
    pred_est = discriminator(clean_mag, est_mag).flatten()  # computed even when unused, as there
    if pred_est.numel() != labels.batch_size:
        raise ValueError(f"discriminator gave {pred_est.numel()} predictions for {labels.batch_size} labels")
    loss_max = F.mse_loss(pred_max, torch.ones_like(pred_max))
    if not labels.fake_term:
        return loss_max
    return loss_max + F.mse_loss(pred_est, labels.scores.to(device=pred_est.device, dtype=pred_est.dtype))
