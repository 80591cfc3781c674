"""The CMGAN metric discriminator: predicts the normalized PESQ of (clean, estimate) magnitude pairs.

Four spectral-normalized stride-2 convolutions, a global max-pool, two spectral-normalized linear layers
and a learnable sigmoid. `nn.Sequential` indices (layers.0 ... layers.18) and the classic `spectral_norm`
buffers (weight_orig, weight_u, weight_v) match the official checkpoints.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import spectral_norm


class LearnableSigmoid(nn.Module):
    """beta * sigmoid(slope * x) with a learnable slope per feature (beta = 1: the output is a PESQ in [0, 1])."""

    def __init__(self, in_features: int, beta: float = 1.0):
        super().__init__()
        self.beta = beta
        self.slope = nn.Parameter(torch.ones(in_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.beta * torch.sigmoid(self.slope * x)


class GlobalMaxPool(nn.Module):
    """(B, C, H, W) -> (B, C, 1, 1): nn.AdaptiveMaxPool2d(1) as one max-pool window over the whole map.

    Same values and the same gradient routing (to the first maximum); unlike AdaptiveMaxPool2d, its CUDA
    backward is allowed under torch.use_deterministic_algorithms (config `deterministic: true`).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(x, kernel_size=x.shape[-2:])


def _down(c_in: int, c_out: int) -> list[nn.Module]:
    return [
        spectral_norm(nn.Conv2d(c_in, c_out, (4, 4), (2, 2), (1, 1), bias=False)),
        nn.InstanceNorm2d(c_out, affine=True),
        nn.PReLU(c_out),
    ]


class Discriminator(nn.Module):
    """D(x, y) -> (B, 1): x, y are (B, 1, F, T) magnitudes (clean reference first)."""

    def __init__(self, ndf: int = 16, in_channel: int = 2):
        super().__init__()
        self.layers = nn.Sequential(
            *_down(in_channel, ndf),
            *_down(ndf, ndf * 2),
            *_down(ndf * 2, ndf * 4),
            *_down(ndf * 4, ndf * 8),
            GlobalMaxPool(),
            nn.Flatten(),
            spectral_norm(nn.Linear(ndf * 8, ndf * 4)),
            nn.Dropout(0.3),
            nn.PReLU(4 * ndf),
            spectral_norm(nn.Linear(ndf * 4, 1)),
            LearnableSigmoid(1),
        )

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.layers(torch.cat([x, y], dim=1))
