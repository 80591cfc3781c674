"""The conformer block used twice in every TSCB (time axis, then frequency axis).

Submodule names and nesting (ff1.fn.fn.net, attn.fn.to_q, conv.net.4.conv, ...) follow the official CMGAN
implementation so its checkpoints load with `strict=True`; the computation is written anew. Attention uses
Shaw-style relative positions (an embedding per clamped offset) added to the dot-product logits.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class Swish(nn.Module):
    """x * sigmoid(x), as one fused kernel (F.silu) rather than two plus their backward."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.silu(x)


class GLU(nn.Module):
    """Gated linear unit over `dim`: first half times sigmoid of the second half (fused: F.glu)."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.glu(x, dim=self.dim)


class Transpose(nn.Module):
    """(B, N, C) <-> (B, C, N) without parameters (keeps Sequential indices aligned with the official code)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(1, 2)


class DepthWiseConv1d(nn.Module):
    """Depthwise convolution over time with (left, right) zero padding, padded explicitly as the official code
    does: letting the convolution pad (padding=15 for the published kernel 31) takes a oneDNN path that is
    5-15x slower forward and 1.3-1.5x slower forward+backward on CPU (issue 19, measured 2026-12-01)."""

    def __init__(self, chan_in: int, chan_out: int, kernel_size: int, padding: tuple[int, int]):
        super().__init__()
        self.padding = padding
        self.conv = nn.Conv1d(chan_in, chan_out, kernel_size, groups=chan_in)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, self.padding))


class Scale(nn.Module):
    def __init__(self, scale: float, fn: nn.Module):
        super().__init__()
        self.fn = fn
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x) * self.scale


class PreNorm(nn.Module):
    def __init__(self, dim: int, fn: nn.Module):
        super().__init__()
        self.fn = fn
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(self.norm(x))


class Attention(nn.Module):
    """Multi-head self-attention with relative positional logits q . E[clamp(i - j)].

    Three exact paths for the same formula (tests check each against the literal einsum, values and gradients):
    - CPU (`_attend_cpu`, `RelativeAttentionCPU`): forward and backward written out so that every product
      whose result is small (d columns: P v, P^T dO, dS k, dS^T q) runs as one batched GEMM with d as the row
      count and contiguous small operands; the positional logits are added in place, batched over the query.
      torch's own backward runs those products with 2 output columns, which is 3x slower (issue 19).
    - CPU under autocast or another dtype (`_attend_gathered`): the (N, N, d) embedding of the offsets gathered
      once per call, positional logits batched over the query, content logits accumulated onto them (baddbmm),
      explicit softmax; autograd's backward.
    - other devices (`_attend_strided`): logits against the 2N-1 distinct offsets in one matmul, read as an
      (N, N) strided view, passed to `scaled_dot_product_attention` as an additive mask (fused kernels).
    """

    def __init__(self, dim: int, heads: int = 8, dim_head: int = 64, dropout: float = 0.0, max_pos_emb: int = 512):
        super().__init__()
        inner_dim = dim_head * heads
        self.heads = heads
        self.dim_head = dim_head
        self.scale = dim_head**-0.5
        self.to_q = nn.Linear(dim, inner_dim, bias=False)
        self.to_kv = nn.Linear(dim, inner_dim * 2, bias=False)
        self.to_out = nn.Linear(inner_dim, dim)
        self.max_pos_emb = max_pos_emb
        self.rel_pos_emb = nn.Embedding(2 * max_pos_emb + 1, dim_head)
        self.dropout = nn.Dropout(dropout)

    def relative_logits(self, q: torch.Tensor) -> torch.Tensor:
        """(B, H, N, d) queries -> (B, H, N, N) logits q_i . E[clamp(i - j, -M, M)] * scale.

        One matmul against the 2N-1 distinct offsets gives R (B, H, N, 2N-1) with column k holding offset
        i - j = N - 1 - k; entry (i, j) sits at flat position i * (2N - 2) + (N - 1) + j of each (N, 2N-1)
        slab, so the (N, N) logits are a strided view of R: no gather, no (N, N, d) tensor.
        """
        n = q.shape[-2]
        offsets = torch.arange(n - 1, -n, -1, device=q.device)
        table = self.rel_pos_emb(offsets.clamp(-self.max_pos_emb, self.max_pos_emb) + self.max_pos_emb)
        rel = torch.matmul(q * self.scale, table.to(q.dtype).t()).contiguous()  # (B, H, N, 2N-1)
        s = rel.stride()
        return rel.as_strided((*rel.shape[:-1], n), (s[0], s[1], 2 * n - 2, 1), rel.storage_offset() + n - 1)

    def offset_embedding(self, n: int, device: torch.device) -> torch.Tensor:
        """(N, N, d): E[clamp(i - j, -M, M)] for every query i and key j."""
        seq = torch.arange(n, device=device)
        dist = (seq[:, None] - seq[None, :]).clamp(-self.max_pos_emb, self.max_pos_emb) + self.max_pos_emb
        return self.rel_pos_emb(dist)

    def _attend_gathered(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """(G, N, d) each -> (G, N, d): softmax(q k^T * s + q . E[i - j] * s) v, G = batch x heads."""
        q = q * self.scale
        emb = self.offset_embedding(q.shape[1], q.device).to(q.dtype)
        pos = torch.bmm(q.transpose(0, 1), emb.transpose(1, 2)).transpose(0, 1)  # (G, N, N), batched over i
        dots = torch.baddbmm(pos, q, k.transpose(1, 2))
        return torch.bmm(dots.softmax(dim=-1), v)

    def _attend_cpu(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """(G, N, d) each -> (G, N, d): `RelativeAttentionCPU` where it applies (one float dtype, no autocast)."""
        if torch.is_autocast_enabled(q.device.type) or not (
            q.dtype == k.dtype == v.dtype == self.rel_pos_emb.weight.dtype
        ):
            return self._attend_gathered(q, k, v)
        emb = self.offset_embedding(q.shape[1], q.device)
        return RelativeAttentionCPU.apply(q, k, v, emb, self.scale)

    def _attend_strided(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """(B, H, N, d) each -> (B, H, N, d), through scaled_dot_product_attention."""
        bias = self.relative_logits(q)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=self.scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        h, d = self.heads, self.dim_head
        q = self.to_q(x)
        k, v = self.to_kv(x).chunk(2, dim=-1)
        q, k, v = (t.reshape(b, n, h, d).transpose(1, 2) for t in (q, k, v))
        if x.device.type == "cpu":
            out = self._attend_cpu(*(t.reshape(b * h, n, d) for t in (q, k, v))).view(b, h, n, d)
        else:
            out = self._attend_strided(q, k, v)
        out = out.transpose(1, 2).reshape(b, n, h * d)
        return self.dropout(self.to_out(out))


def _t(x: torch.Tensor) -> torch.Tensor:
    """(..., a, b) -> (..., b, a), contiguous: a small operand copied so that bmm runs one batched GEMM
    (a transposed view makes torch's CPU bmm loop over the batch)."""
    return x.transpose(-1, -2).contiguous()


class RelativeAttentionCPU(torch.autograd.Function):
    """softmax(qs k^T + qs . E[i, j]) v with qs = q * scale, for (G, N, d) q, k, v and the (N, N, d) offset
    embedding E; the backward returns E's gradient (the embedding table's follows through autograd).

    Forward: content logits (one bmm), positional logits added in place batched over the query i (N GEMMs of
    (G, d) x (d, N) into the logits' strided (N, G, N) view), softmax, then P v computed as (v^T P^T)^T.
    Backward: dP = dO v^T, dS from softmax's backward, and dv, dq, dk, dE each as a GEMM with d rows.
    """

    @staticmethod
    def forward(ctx: Any, q: Tensor, k: Tensor, v: Tensor, emb: Tensor, scale: float) -> Tensor:
        qs = q * scale
        logits = torch.bmm(qs, _t(k))  # (G, N_i, N_j)
        logits.transpose(0, 1).baddbmm_(qs.transpose(0, 1).contiguous(), _t(emb))  # + qs_i . E[i, j]
        probs = torch.softmax(logits, dim=-1)
        del logits
        out = torch.bmm(_t(v), probs.transpose(1, 2)).transpose(1, 2)  # P v = (v^T P^T)^T
        ctx.save_for_backward(qs, k, v, emb, probs)
        ctx.scale = scale
        return out

    @staticmethod
    def backward(ctx: Any, d_out: Tensor) -> tuple[Tensor | None, ...]:
        qs, k, v, emb, probs = ctx.saved_tensors
        dv = torch.bmm(_t(d_out), probs).transpose(1, 2)  # P^T dO = (dO^T P)^T
        d_probs = torch.bmm(d_out.contiguous(), _t(v))
        d_logits = torch._softmax_backward_data(d_probs, probs, -1, probs.dtype)
        del d_probs
        by_query = d_logits.transpose(0, 1)  # (N_i, G, N_j) view
        d_qs = torch.bmm(_t(k), d_logits.transpose(1, 2))  # (dS k)^T: (G, d, N_i)
        d_qs += torch.bmm(_t(emb), by_query.transpose(1, 2)).permute(2, 1, 0)  # (sum_j dS E[i, j])^T
        dk = torch.bmm(_t(qs), d_logits).transpose(1, 2)  # dS^T qs
        d_emb = torch.bmm(qs.permute(1, 2, 0).contiguous(), by_query).transpose(1, 2)  # (N_i, N_j, d)
        return d_qs.transpose(1, 2) * ctx.scale, dk, dv, d_emb, None


class FeedForward(nn.Module):
    def __init__(self, dim: int, mult: int = 4, dropout: float = 0.0):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim, dim * mult),
            Swish(),
            nn.Dropout(dropout),
            nn.Linear(dim * mult, dim),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ConformerConvModule(nn.Module):
    def __init__(self, dim: int, expansion_factor: int = 2, kernel_size: int = 31, dropout: float = 0.0):
        super().__init__()
        inner_dim = dim * expansion_factor
        pad = kernel_size // 2
        padding = (pad, pad - (kernel_size + 1) % 2)  # "same" padding, also for even kernels
        self.net = nn.Sequential(
            nn.LayerNorm(dim),
            Transpose(),
            nn.Conv1d(dim, inner_dim * 2, 1),
            GLU(dim=1),
            DepthWiseConv1d(inner_dim, inner_dim, kernel_size=kernel_size, padding=padding),
            nn.BatchNorm1d(inner_dim),
            Swish(),
            nn.Conv1d(inner_dim, dim, 1),
            Transpose(),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ConformerBlock(nn.Module):
    """Macaron conformer: half-step FFN, attention, convolution, half-step FFN, final LayerNorm."""

    def __init__(
        self,
        *,
        dim: int,
        dim_head: int = 64,
        heads: int = 8,
        ff_mult: int = 4,
        conv_expansion_factor: int = 2,
        conv_kernel_size: int = 31,
        attn_dropout: float = 0.0,
        ff_dropout: float = 0.0,
        conv_dropout: float = 0.0,
    ):
        super().__init__()
        self.ff1 = Scale(0.5, PreNorm(dim, FeedForward(dim, mult=ff_mult, dropout=ff_dropout)))
        self.attn = PreNorm(dim, Attention(dim, heads=heads, dim_head=dim_head, dropout=attn_dropout))
        self.conv = ConformerConvModule(
            dim, expansion_factor=conv_expansion_factor, kernel_size=conv_kernel_size, dropout=conv_dropout
        )
        self.ff2 = Scale(0.5, PreNorm(dim, FeedForward(dim, mult=ff_mult, dropout=ff_dropout)))
        self.post_norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.ff1(x) + x
        x = self.attn(x) + x
        x = self.conv(x) + x
        x = self.ff2(x) + x
        return self.post_norm(x)
