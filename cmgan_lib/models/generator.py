"""TSCNet, the CMGAN generator (paper Fig. 1): dense encoder, four two-stage conformer blocks (TSCB),
a magnitude mask decoder and a complex refinement decoder.

Attribute names follow the official implementation so `load_state_dict(official, strict=True)` works.
Input: (B, 2, T, F) power-law-compressed real/imaginary spectrum; output: enhanced (real, imag), each
(B, 1, T, F).
"""

from __future__ import annotations

import torch
from torch import nn

from cmgan_lib.models.conformer import ConformerBlock


def _conv_norm_prelu(c_in: int, channels: int, kernel, stride=(1, 1), padding=(0, 0)) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, channels, kernel, stride, padding=padding),
        nn.InstanceNorm2d(channels, affine=True),
        nn.PReLU(channels),
    )


class DilatedDenseNet(nn.Module):
    """Dense block of `depth` causal-in-time convolutions (kernel 2x3) with time dilations 1, 2, 4, 8.

    Layer i sees the concatenation of the block input and all earlier outputs; the last output is returned.
    """

    def __init__(self, depth: int = 4, in_channels: int = 64):
        super().__init__()
        self.depth = depth
        self.in_channels = in_channels
        twidth = 2
        for i in range(depth):
            dil = 2**i
            pad_length = twidth + (dil - 1) * (twidth - 1) - 1
            setattr(self, f"pad{i + 1}", nn.ConstantPad2d((1, 1, pad_length, 0), value=0.0))
            setattr(
                self,
                f"conv{i + 1}",
                nn.Conv2d(in_channels * (i + 1), in_channels, kernel_size=(twidth, 3), dilation=(dil, 1)),
            )
            setattr(self, f"norm{i + 1}", nn.InstanceNorm2d(in_channels, affine=True))
            setattr(self, f"prelu{i + 1}", nn.PReLU(in_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = x
        out = x
        for i in range(1, self.depth + 1):
            out = getattr(self, f"pad{i}")(skip)
            out = getattr(self, f"conv{i}")(out)
            out = getattr(self, f"prelu{i}")(getattr(self, f"norm{i}")(out))
            skip = torch.cat([out, skip], dim=1)
        return out


class DenseEncoder(nn.Module):
    """1x1 conv to `channels`, dilated dense block, then a stride-2 conv halving the frequency axis."""

    def __init__(self, in_channel: int, channels: int = 64):
        super().__init__()
        self.conv_1 = _conv_norm_prelu(in_channel, channels, (1, 1))
        self.dilated_dense = DilatedDenseNet(depth=4, in_channels=channels)
        self.conv_2 = _conv_norm_prelu(channels, channels, (1, 3), (1, 2), padding=(0, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_2(self.dilated_dense(self.conv_1(x)))


class TSCB(nn.Module):
    """Two-stage conformer block: a conformer over time for every frequency bin, then over frequency for
    every frame, each with a residual connection."""

    def __init__(self, num_channel: int = 64):
        super().__init__()
        kw = dict(dim=num_channel, dim_head=num_channel // 4, heads=4, conv_kernel_size=31)
        self.time_conformer = ConformerBlock(**kw, attn_dropout=0.2, ff_dropout=0.2)
        self.freq_conformer = ConformerBlock(**kw, attn_dropout=0.2, ff_dropout=0.2)

    def forward(self, x_in: torch.Tensor) -> torch.Tensor:
        b, c, t, f = x_in.shape
        x_t = x_in.permute(0, 3, 2, 1).reshape(b * f, t, c)
        x_t = self.time_conformer(x_t) + x_t
        x_f = x_t.view(b, f, t, c).permute(0, 2, 1, 3).reshape(b * t, f, c)
        x_f = self.freq_conformer(x_f) + x_f
        return x_f.view(b, t, f, c).permute(0, 3, 1, 2)


class SPConvTranspose2d(nn.Module):
    """Sub-pixel convolution: conv to r x channels, then interleave them along frequency (upsample by r)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, r: int = 1):
        super().__init__()
        self.pad1 = nn.ConstantPad2d((1, 1, 0, 0), value=0.0)
        self.out_channels = out_channels
        self.conv = nn.Conv2d(in_channels, out_channels * r, kernel_size=kernel_size, stride=(1, 1))
        self.r = r

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(self.pad1(x))
        b, ch, h, w = out.shape
        out = out.view(b, self.r, ch // self.r, h, w).permute(0, 2, 3, 4, 1)
        return out.reshape(b, ch // self.r, h, -1)


class MaskDecoder(nn.Module):
    """Predicts a bounded-below magnitude mask (PReLU per frequency bin) applied to the noisy magnitude."""

    def __init__(self, num_features: int, num_channel: int = 64, out_channel: int = 1):
        super().__init__()
        self.dense_block = DilatedDenseNet(depth=4, in_channels=num_channel)
        self.sub_pixel = SPConvTranspose2d(num_channel, num_channel, (1, 3), 2)
        self.conv_1 = nn.Conv2d(num_channel, out_channel, (1, 2))
        self.norm = nn.InstanceNorm2d(out_channel, affine=True)
        self.prelu = nn.PReLU(out_channel)
        self.final_conv = nn.Conv2d(out_channel, out_channel, (1, 1))
        self.prelu_out = nn.PReLU(num_features, init=-0.25)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.sub_pixel(self.dense_block(x))
        x = self.prelu(self.norm(self.conv_1(x)))
        x = self.final_conv(x).permute(0, 3, 2, 1).squeeze(-1)  # (B, F, T): PReLU channels = frequency
        return self.prelu_out(x).permute(0, 2, 1).unsqueeze(1)


class ComplexDecoder(nn.Module):
    """Predicts a complex (real, imaginary) residual added to the masked magnitude with the noisy phase."""

    def __init__(self, num_channel: int = 64):
        super().__init__()
        self.dense_block = DilatedDenseNet(depth=4, in_channels=num_channel)
        self.sub_pixel = SPConvTranspose2d(num_channel, num_channel, (1, 3), 2)
        self.prelu = nn.PReLU(num_channel)
        self.norm = nn.InstanceNorm2d(num_channel, affine=True)
        self.conv = nn.Conv2d(num_channel, 2, (1, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.sub_pixel(self.dense_block(x))
        return self.conv(self.prelu(self.norm(x)))


class TSCNet(nn.Module):
    """The CMGAN generator. `num_features` must equal n_fft // 2 + 1 (201 for the published n_fft 400)."""

    def __init__(self, num_channel: int = 64, num_features: int = 201, num_tscb: int = 4):
        super().__init__()
        if num_tscb < 1:
            raise ValueError(f"num_tscb must be >= 1, got {num_tscb}")
        self.num_channel = num_channel
        self.num_features = num_features
        self.num_tscb = num_tscb  # the paper's 4; fewer for seconds-long test runs (the names stay TSCB_k)
        self.dense_encoder = DenseEncoder(in_channel=3, channels=num_channel)
        for k in range(1, num_tscb + 1):  # built in the published order: a seed gives the published initial weights
            setattr(self, f"TSCB_{k}", TSCB(num_channel=num_channel))
        self.mask_decoder = MaskDecoder(num_features, num_channel=num_channel, out_channel=1)
        self.complex_decoder = ComplexDecoder(num_channel=num_channel)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        real, imag = x[:, 0], x[:, 1]
        mag = torch.sqrt(real**2 + imag**2).unsqueeze(1)
        noisy_phase = torch.angle(torch.complex(real, imag)).unsqueeze(1)
        h = self.dense_encoder(torch.cat([mag, x], dim=1))
        for k in range(1, self.num_tscb + 1):  # TSCB_1 .. TSCB_4 as published
            h = getattr(self, f"TSCB_{k}")(h)
        out_mag = self.mask_decoder(h) * mag
        complex_out = self.complex_decoder(h)
        final_real = out_mag * torch.cos(noisy_phase) + complex_out[:, 0:1]
        final_imag = out_mag * torch.sin(noisy_phase) + complex_out[:, 1:2]
        return final_real, final_imag
