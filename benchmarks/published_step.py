"""The published CMGAN train step (official src/train.py, `Trainer.train_step`), written anew for timing.

What makes it the published step rather than this project's: the conformer modules run the official
formulas (attention: the literal einsum with an (N, N, d) relative-position embedding per call; Swish and GLU
as separate sigmoid and multiply kernels; the depthwise convolution's explicit F.pad is the same on both
sides), PESQ labels come from a new `joblib.Parallel(n_jobs=-1)` per batch, and nothing overlaps (generator
update, then PESQ, then the discriminator update). Everything else is the same modules, so the weights are shared with a
`Trainer` (state-dict compatible) and the two steps compute the same function.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from joblib import Parallel, delayed

from cmgan_lib.core.dsp import istft, power_compress, power_uncompress, stft
from cmgan_lib.models import Discriminator, TSCNet
from cmgan_lib.models.conformer import GLU, Attention, Swish
from cmgan_lib.scoring.pesq_worker import score_one
from cmgan_lib.training.numerics import autocast_call


class LiteralAttention(Attention):
    """The official conformer's attention, einsum for einsum (same parameters as `Attention`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        h, d, m = self.heads, self.dim_head, self.max_pos_emb
        q = self.to_q(x)
        k, v = self.to_kv(x).chunk(2, dim=-1)
        q, k, v = (t.reshape(b, n, h, d).transpose(1, 2) for t in (q, k, v))  # b n (h d) -> b h n d
        dots = torch.einsum("bhid,bhjd->bhij", q, k) * self.scale
        seq = torch.arange(n, device=x.device)
        dist = (seq[:, None] - seq[None, :]).clamp(-m, m) + m
        rel_pos_emb = self.rel_pos_emb(dist).to(q)
        dots = dots + torch.einsum("bhnd,nrd->bhnr", q, rel_pos_emb) * self.scale
        out = torch.einsum("bhij,bhjd->bhid", dots.softmax(dim=-1), v)
        return self.dropout(self.to_out(out.transpose(1, 2).reshape(b, n, h * d)))


class LiteralSwish(Swish):
    """The official Swish: x * x.sigmoid(), two kernels."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * x.sigmoid()


class LiteralGLU(GLU):
    """The official GLU: chunk, sigmoid, multiply."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, gate = x.chunk(2, dim=self.dim)
        return out * gate.sigmoid()


LITERAL = {Attention: LiteralAttention, Swish: LiteralSwish, GLU: LiteralGLU}


def literal_generator(gen: TSCNet) -> TSCNet:
    """A new TSCNet with `gen`'s weights whose conformer modules run the official formulas (attention, Swish,
    GLU), so the published step gets none of this project's speed-ups."""
    copy = TSCNet(num_channel=gen.num_channel, num_features=gen.num_features, num_tscb=gen.num_tscb)
    for module in copy.modules():
        if type(module) in LITERAL:
            module.__class__ = LITERAL[type(module)]
    copy.load_state_dict(gen.state_dict(), strict=True)
    return copy.to(next(gen.parameters()).device)


def published_batch_pesq(clean: list[np.ndarray], estimate: list[np.ndarray]) -> np.ndarray | None:
    """Published `batch_pesq`: a new Parallel per call; any failed sample (published: score -1) gives None,
    else (PESQ - 1) / 3.5. The workers run the torch-free `score_one`, as the published ones run pesq alone."""
    pairs = zip(clean, estimate, strict=True)
    scores = np.array([s for s, _ in Parallel(n_jobs=-1)(delayed(score_one)(c, e) for c, e in pairs)])
    return None if np.isnan(scores).any() else (scores - 1) / 3.5


class PublishedStep:
    """One published train step on its own copies of a Trainer's generator and discriminator."""

    def __init__(self, trainer) -> None:
        cfg, device = trainer.cfg, trainer.device
        self.cfg, self.device = cfg, device
        self.gen = literal_generator(trainer.gen)
        self.disc = Discriminator(ndf=cfg.ndf).to(device)
        self.disc.load_state_dict(trainer.disc.state_dict(), strict=True)
        self.opt_g = torch.optim.AdamW(self.gen.parameters(), lr=cfg.lr_g)
        self.opt_d = torch.optim.AdamW(self.disc.parameters(), lr=cfg.lr_d)
        # same precision handling as the Trainer (fp32: plain calls), so a precision compares like with like
        self.gen_fwd = autocast_call(self.gen, cfg.precision, device)
        self.disc_fwd = autocast_call(self.disc, cfg.precision, device)

    def step(self, clean: torch.Tensor, noisy: torch.Tensor) -> tuple[float, float]:
        cfg, w = self.cfg, self.cfg.loss_weights
        clean, noisy = clean.to(self.device), noisy.to(self.device)
        one_labels = torch.ones(clean.shape[0], device=self.device)
        c = torch.sqrt(noisy.size(-1) / torch.sum(noisy**2.0, dim=-1))
        noisy, clean = torch.transpose(noisy, 0, 1), torch.transpose(clean, 0, 1)
        noisy, clean = torch.transpose(noisy * c, 0, 1), torch.transpose(clean * c, 0, 1)
        noisy_spec = power_compress(stft(noisy, cfg.n_fft, cfg.hop), cfg.compress).permute(0, 1, 3, 2)
        clean_spec = power_compress(stft(clean, cfg.n_fft, cfg.hop), cfg.compress)
        clean_real, clean_imag = clean_spec[:, 0, :, :].unsqueeze(1), clean_spec[:, 1, :, :].unsqueeze(1)

        self.opt_g.zero_grad()
        est_real, est_imag = self.gen_fwd(noisy_spec)
        est_real, est_imag = est_real.permute(0, 1, 3, 2), est_imag.permute(0, 1, 3, 2)
        est_mag = torch.sqrt(est_real**2 + est_imag**2)
        clean_mag = torch.sqrt(clean_real**2 + clean_imag**2)
        predict_fake_metric = self.disc_fwd(clean_mag, est_mag)
        gen_loss_gan = F.mse_loss(predict_fake_metric.flatten(), one_labels.float())
        loss_mag = F.mse_loss(est_mag, clean_mag)
        loss_ri = F.mse_loss(est_real, clean_real) + F.mse_loss(est_imag, clean_imag)
        est_audio = istft(power_uncompress(est_real, est_imag, cfg.compress).squeeze(1), cfg.n_fft, cfg.hop)
        time_loss = torch.mean(torch.abs(est_audio - clean))
        length = est_audio.size(-1)
        loss = w[0] * loss_ri + w[1] * loss_mag + w[2] * time_loss + w[3] * gen_loss_gan
        loss.backward()
        self.opt_g.step()

        est_audio_list = list(est_audio.detach().cpu().numpy())
        clean_audio_list = list(clean.cpu().numpy()[:, :length])
        pesq_score = published_batch_pesq(clean_audio_list, est_audio_list)
        if pesq_score is None:  # the published skip: no discriminator update for this batch
            return loss.item(), 0.0
        pesq_score = torch.as_tensor(pesq_score, dtype=torch.float32, device=self.device)
        self.opt_d.zero_grad()
        predict_enhance_metric = self.disc_fwd(clean_mag, est_mag.detach())
        predict_max_metric = self.disc_fwd(clean_mag, clean_mag)
        disc_loss = F.mse_loss(predict_max_metric.flatten(), one_labels) + F.mse_loss(
            predict_enhance_metric.flatten(), pesq_score
        )
        disc_loss.backward()
        self.opt_d.step()
        return loss.item(), disc_loss.item()
