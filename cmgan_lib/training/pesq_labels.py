"""PESQ labels for the metric discriminator, with the published, batch-mean and masked failure strategies.

The published CMGAN `batch_pesq` returns None when PESQ fails for any sample, and the discriminator
update is skipped for the whole batch. This module keeps that behaviour as `strategy="skip"`, the
proposed fix (every sample gets the batch's valid mean) as `"batch_mean"`, a per-sample alternative
(`"masked"`: failed samples drop out of the loss), and the rule of CMGAN's descendants MP-SENet and SEMamba
(`"mpsenet"`: the real term D(clean, clean) -> 1 always trains, the fake term is zeroed when any sample
fails) — each with the per-sample causes recorded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from cmgan_lib.scoring.pesq_worker import (
    KNOWN_REASONS,
    PesqHandle,
    PesqPool,
    PesqWorkerDied,
    available_cpus,
    serial_scores,
)
from cmgan_lib.training.log_columns import CAUSE_COLUMNS, INJECTED

STRATEGIES = ("skip", "batch_mean", "masked", "mpsenet")
ALL_FAILED_LABEL = 0.5  # batch_mean when nothing is valid: the fix document's "middle" value, PESQ 2.75

__all__ = [
    "ALL_FAILED_LABEL",
    "CAUSE_COLUMNS",
    "FailureInjector",
    "INJECTED",
    "cause_counts",
    "KNOWN_REASONS",
    "STRATEGIES",
    "PesqHandle",
    "PesqLabels",
    "PesqPool",
    "PesqWorkerDied",
    "available_cpus",
    "TrainingLabels",
    "batch_pesq",
    "make_labels",
    "normalize_pesq",
]


def normalize_pesq(raw: np.ndarray | float) -> np.ndarray | float:
    """The published label scale: (PESQ - 1) / 3.5, so PESQ-WB's 1..4.5 maps onto the sigmoid's 0..1."""
    return (raw - 1.0) / 3.5


@dataclass
class PesqLabels:
    """One batch's PESQ outcome and the discriminator targets the chosen strategy derives from it.

    Under `masked`, `scores` holds NaN for invalid samples so that an unmasked use fails loudly;
    `losses.discriminator_loss` selects the valid ones. Under `mpsenet`, `scores` is None when any sample failed but
    the update is not skipped: only the fake term is dropped (`fake_term`).
    """

    raw: np.ndarray
    valid: np.ndarray
    reasons: list[str | None]
    scores: torch.Tensor | None
    skipped: bool
    strategy: str
    device: torch.device | None = field(default=None, repr=False)

    @property
    def batch_size(self) -> int:
        return len(self.raw)

    @property
    def n_valid(self) -> int:
        return int(self.valid.sum())

    @property
    def valid_frac(self) -> float:
        """The step log's `pesq_valid_frac`."""
        return float(self.valid.mean()) if self.batch_size else float("nan")

    @property
    def mean_valid_raw(self) -> float:
        """Mean raw PESQ of the valid samples (NaN when none): the step log's `pesq_mean`."""
        return float(np.nanmean(self.raw)) if self.n_valid else float("nan")

    @property
    def fake_term(self) -> bool:
        """Whether the discriminator's fake term MSE(D(clean, est), labels) is trained on this batch."""
        return not self.skipped and self.scores is not None


def cause_counts(reasons: list[str | None]) -> dict[str, int]:
    """Failed samples per step-log cause column (every column present, zeros included)."""
    counts = dict.fromkeys(CAUSE_COLUMNS.values(), 0)
    for r in reasons:
        if r is None:
            continue
        key = r if r in CAUSE_COLUMNS else "other"  # "other:<pesq's message>" and anything new
        counts[CAUSE_COLUMNS[key]] += 1
    return counts


class FailureInjector:
    """Treat each sample's PESQ label as failed with probability `p` (cause "injected").

    Why: whether skipping the discriminator update hurts can be tested on any data by imposing the failure
    rate, independent of how often PESQ really fails there. An injected failure goes down the same path as a
    real one (`make_labels`: skip / batch_mean / masked). A sample that already failed for a real reason keeps
    that reason, so `pesq_fail_injected` counts labels lost only to injection. The draws of a step come from a
    generator seeded by (seed, rank, step): nothing to checkpoint, so a resumed run, on every DDP rank, draws
    exactly what an uninterrupted one would; p = 0 draws nothing.
    """

    def __init__(self, p: float, seed: int, rank: int = 0):
        if not 0.0 <= p < 1.0:
            raise ValueError(f"pesq_fail_inject must be in [0, 1), got {p}")
        self.p, self.seed, self.rank = float(p), int(seed), int(rank)

    def __call__(self, raw: np.ndarray, reasons: list[str | None], step: int) -> tuple[np.ndarray, list[str | None]]:
        if self.p == 0.0:
            return raw, reasons
        rng = np.random.default_rng([self.seed, self.rank, int(step), 0x1A7EC7])
        hit = rng.random(len(reasons)) < self.p
        raw = np.array(raw, dtype=np.float64, copy=True)
        reasons = list(reasons)
        for i in np.flatnonzero(hit):
            if reasons[i] is None:
                raw[i], reasons[i] = np.nan, INJECTED
        return raw, reasons


def make_labels(
    raw: np.ndarray,
    reasons: list[str | None],
    strategy: str = "skip",
    device: torch.device | str | None = None,
) -> PesqLabels:
    """Turn per-sample (raw PESQ, failure reason) into labels; the one code path for every caller."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; expected one of {STRATEGIES}")
    raw = np.asarray(raw, dtype=np.float64).reshape(-1)
    reasons = list(reasons)
    if len(reasons) != len(raw):
        raise ValueError(f"{len(raw)} scores but {len(reasons)} reasons")
    valid = np.array([r is None for r in reasons], dtype=bool)
    if not np.all(np.isfinite(raw[valid])) or not np.all(np.isnan(raw[~valid])):
        raise ValueError("raw must be finite exactly where reasons is None and NaN elsewhere")
    device = torch.device(device) if device is not None else torch.device("cpu")

    def tensor(values: np.ndarray) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.float32, device=device)

    n = len(raw)
    all_valid, any_valid = bool(valid.all()), bool(valid.any())
    if strategy == "skip":
        scores = tensor(normalize_pesq(raw)) if all_valid and n else None
    elif strategy == "batch_mean":
        # The proposed fix replaces every label by the batch mean, also in batches where nothing failed.
        value = normalize_pesq(raw[valid].mean()) if any_valid else ALL_FAILED_LABEL
        scores = tensor(np.full(n, value))
    elif strategy == "mpsenet":
        # MP-SENet's train.py: `if batch_pesq_score is not None: loss_disc_g = ... else: loss_disc_g = 0`
        scores = tensor(normalize_pesq(raw)) if all_valid and n else None
    else:  # masked
        scores = tensor(np.where(valid, normalize_pesq(raw), np.nan)) if any_valid else None
    return PesqLabels(
        raw=raw,
        valid=valid,
        reasons=reasons,
        scores=scores,
        skipped=scores is None and (strategy != "mpsenet" or n == 0),
        strategy=strategy,
        device=device,
    )


def batch_pesq(
    clean,
    estimated,
    strategy: str = "skip",
    sr: int = 16000,
    device: torch.device | str | None = None,
    pool: PesqPool | None = None,
) -> PesqLabels:
    """PESQ-WB labels of a batch: clean/estimated as (B, T) arrays/tensors or sequences of 1-D signals.

    `pool=None` scores serially in this process; pass a `PesqPool` for parallel
    scoring. Results are identical either way. For overlap with the backward pass use
    `pool.submit(...)` and `make_labels(*handle.result(), strategy, device)` instead.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; expected one of {STRATEGIES}")
    if pool is None:
        raw, reasons = serial_scores(clean, estimated, sr)
    else:
        if pool.sr != sr:
            raise ValueError(f"pool scores at {pool.sr} Hz but sr={sr}")
        raw, reasons = pool.scores(clean, estimated)
    return make_labels(raw, reasons, strategy, device)


@dataclass
class TrainingLabels:
    """The training step's PESQ labels: scored in `pool` (submitted at once when `overlap`, so that PESQ runs
    while the generator's backward pass does), failures injected (`injector`), then labelled by `strategy`."""

    pool: PesqPool
    injector: FailureInjector
    strategy: str
    device: torch.device
    overlap: bool = True

    def start(self, clean: np.ndarray, estimate: np.ndarray, step: int) -> Callable[[], PesqLabels]:
        """Start scoring; the returned function waits for the scores and gives the labels."""
        handle = self.pool.submit(clean, estimate) if self.overlap else None

        def labels() -> PesqLabels:
            raw, reasons = self.injector(*(handle or self.pool.submit(clean, estimate)).result(), step=step)
            return make_labels(raw, reasons, self.strategy, self.device)

        return labels
