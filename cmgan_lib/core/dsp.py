"""STFT front end of CMGAN: n_fft 400, hop 100, Hamming window, onesided, power-law compression 0.3.

One place for the transform so that training, validation and full-track enhancement cannot drift apart.
"""

from __future__ import annotations

import torch

N_FFT = 400
HOP = 100
COMPRESS = 0.3


def stft(audio: torch.Tensor, n_fft: int = N_FFT, hop: int = HOP) -> torch.Tensor:
    """(B, L) waveform -> (B, F, T) complex spectrum (centered frames, Hamming window on audio's device)."""
    window = torch.hamming_window(n_fft, device=audio.device, dtype=audio.dtype)
    return torch.stft(audio, n_fft, hop, window=window, onesided=True, return_complex=True)


def istft(spec: torch.Tensor, n_fft: int = N_FFT, hop: int = HOP, length: int | None = None) -> torch.Tensor:
    """(B, F, T) complex spectrum -> (B, length or (T - 1) * hop) waveform."""
    window = torch.hamming_window(n_fft, device=spec.device, dtype=spec.real.dtype)
    return torch.istft(spec, n_fft, hop, window=window, onesided=True, length=length)


def power_compress(spec: torch.Tensor, exponent: float = COMPRESS) -> torch.Tensor:
    """Complex (B, F, T) -> (B, 2, F, T) real/imag with magnitude |X|**exponent and the phase kept."""
    mag = spec.abs() ** exponent
    phase = torch.angle(spec)
    return torch.stack([mag * torch.cos(phase), mag * torch.sin(phase)], dim=1)


def power_uncompress(real: torch.Tensor, imag: torch.Tensor, exponent: float = COMPRESS) -> torch.Tensor:
    """Inverse of power_compress: compressed real/imag -> complex spectrum with magnitude |.|**(1/exponent)."""
    spec = torch.complex(real, imag)
    mag = spec.abs() ** (1.0 / exponent)
    phase = torch.angle(spec)
    return torch.complex(mag * torch.cos(phase), mag * torch.sin(phase))


def rms_normalizer(audio: torch.Tensor) -> torch.Tensor:
    """c = sqrt(N / sum(x^2)) per row: the published input normalization (unit RMS of the noisy input)."""
    return torch.sqrt(audio.shape[-1] / torch.sum(audio**2, dim=-1))
