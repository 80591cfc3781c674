"""How much of the generator's gradient comes from the metric discriminator (issue 18's mechanism).

The generator's loss is w_RI L_RI + w_mag L_mag + w_time L_time + w_GAN L_GAN. Skipping discriminator updates
can only change training through the last term, so its share of the generator's gradient bounds what the
fix document's bug can do. Measured on a step's own graph, before clipping: the adversarial gradient
g_adv = d(w_GAN L_GAN)/d(theta) by one extra backward pass, the rest as g_total - g_adv.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from cmgan_lib.training.log_columns import GRAD_SHARE_COLUMNS as COLUMNS

NOT_MEASURED = dict.fromkeys(COLUMNS, math.nan)


def adversarial_grads(adv_loss: torch.Tensor, params: list[torch.nn.Parameter]) -> list[torch.Tensor]:
    """d(adv_loss)/d(params), keeping the graph for the step's own backward pass (zeros where unused)."""
    grads = torch.autograd.grad(adv_loss, params, retain_graph=True, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g.detach() for p, g in zip(params, grads, strict=True)]


def share_stats(adv: Iterable[torch.Tensor], total: Iterable[torch.Tensor]) -> dict[str, float]:
    """Norms of g_adv and g_rest = g_total - g_adv, their ratio and cosine (NaN where undefined)."""
    g_adv = torch.cat([g.reshape(-1).double() for g in adv])
    g_rest = torch.cat([g.reshape(-1).double() for g in total]) - g_adv
    n_adv, n_rest = float(g_adv.norm()), float(g_rest.norm())
    cos = float(g_adv @ g_rest) / (n_adv * n_rest) if n_adv > 0 and n_rest > 0 else math.nan
    return dict(grad_norm_g_adv=n_adv, grad_norm_g_rest=n_rest,
                grad_ratio_adv_rest=n_adv / n_rest if n_rest > 0 else math.nan,
                grad_cos_adv_rest=cos)  # fmt: skip
