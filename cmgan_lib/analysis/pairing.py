"""Whether two variants' runs pair by seed, and whether one is a deterministic truncation of the other.

Why a module: a seed fixes the initial weights, the data order, the crops and the injected-failure stream, so two
variants run on the same seeds are a paired design, and their difference per seed has about half the spread of an
unpaired one. That holds only when it is checked (docs/analysis_plan.md, section 4): the same seeds, and the
first training step's losses identical (same initial generator, same first batch). A variant that only stops
early (`early_stopping`) is its reference cut short: identical logs until it stops, so it is judged as a replay,
never as an independent sample.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

STEP1_COLUMNS = ("loss_ri", "loss_mag", "loss_time")  # the generator's losses on the first batch


REL_TOL = 1e-6  # relative agreement of the step-1 losses (and of a truncation's validation PESQ)


@dataclass(frozen=True)
class Pairing:
    """`holds`: pair the two variants by seed; `reason`: why (or why not), in words for the report."""

    holds: bool
    reason: str
    seeds: tuple = ()


def _close(a: float, b: float, rel: float = REL_TOL) -> bool:
    if not (math.isfinite(a) and math.isfinite(b)):
        return math.isnan(a) and math.isnan(b)
    return abs(a - b) <= rel * max(abs(a), abs(b), 1e-12)


def _seed_runs(per_seed: pd.DataFrame, variant: str) -> dict:
    g = per_seed[per_seed.variant == variant]
    return dict(zip(g.seed, g.run, strict=True))


def _fmt_seeds(seeds) -> str:
    return ", ".join(str(int(s)) if float(s).is_integer() else str(s) for s in sorted(seeds))


def check_pairing(per_seed: pd.DataFrame, variant: str, reference: str, steps: pd.DataFrame | None = None) -> Pairing:
    """The pairing of `variant` and `reference` by seed: the same seed set (one run each), and where step logs
    with losses exist, every seed's first-step `loss_ri`, `loss_mag`, `loss_time` equal to a relative 1e-6."""
    a, b = per_seed[per_seed.variant == variant], per_seed[per_seed.variant == reference]
    if a.seed.duplicated().any() or b.seed.duplicated().any():
        return Pairing(False, "a seed has more than one run in a variant: not paired")
    sa, sb = set(a.seed), set(b.seed)
    if sa != sb:
        return Pairing(False, f"seeds differ ({variant}: {_fmt_seeds(sa)}; {reference}: {_fmt_seeds(sb)}): not paired")
    if len(sa) < 2:
        return Pairing(False, f"one seed ({_fmt_seeds(sa)}): no interval, paired or not")
    seeds = tuple(sorted(sa))
    ra, rb = _seed_runs(per_seed, variant), _seed_runs(per_seed, reference)
    cols = [c for c in STEP1_COLUMNS if steps is not None and c in steps]
    if not cols or not len(steps):
        return Pairing(True, f"paired by seed ({len(seeds)} seeds; step-1 losses not logged, so not checked)", seeds)
    first = steps.sort_values("step").groupby("run", sort=False).head(1).set_index("run")
    unchecked = []
    for s in seeds:
        if ra[s] not in first.index or rb[s] not in first.index:
            unchecked.append(s)
            continue
        for c in cols:
            x, y = float(first.at[ra[s], c]), float(first.at[rb[s], c])
            if not _close(x, y):
                return Pairing(False, f"seed {_fmt_seeds([s])}: step-1 {c} {x:.6g} ({variant}) vs {y:.6g} "
                                      f"({reference}): not the same start, not paired")  # fmt: skip
    note = f"; no step log for seed(s) {_fmt_seeds(unchecked)}" if unchecked else ""
    return Pairing(True, f"paired by seed ({len(seeds)} seeds; step-1 {'/'.join(cols)} identical{note})", seeds)


@dataclass(frozen=True)
class Replay:
    """A truncation check: `holds` when each seed's run of the variant repeats the reference's validation PESQ
    until it stops; per seed the epoch it stopped at and the epoch of the checkpoint it kept."""

    holds: bool
    reason: str
    stop_epochs: tuple = ()
    kept_epochs: tuple = ()


def check_truncation(per_seed: pd.DataFrame, epochs: pd.DataFrame, variant: str, reference: str) -> Replay:
    """Is `variant` (early stopping on) `reference` cut short? Same seeds, and every epoch it trained has the
    reference's validation PESQ to a relative 1e-6 (a deterministic truncation: a replay of the reference's logs)."""
    a, b = _seed_runs(per_seed, variant), _seed_runs(per_seed, reference)
    if set(a) != set(b) or not a:
        return Replay(False, f"seeds differ ({_fmt_seeds(a)} vs {_fmt_seeds(b)}): not a truncation of {reference}")
    stops, kept = [], []
    for s in sorted(a):
        ea = epochs[epochs.run == a[s]].sort_values("epoch")
        eb = epochs[epochs.run == b[s]].set_index("epoch")
        for ep, v in zip(ea.epoch, ea.val_pesq.astype(float), strict=True):
            if ep not in eb.index or not _close(v, float(eb.at[ep, "val_pesq"])):
                return Replay(False, f"seed {_fmt_seeds([s])}, epoch {int(ep)}: validation PESQ differs from "
                                     f"{reference}'s: not a truncation, judged as a run")  # fmt: skip
        stops.append(int(ea.epoch.max()))
        kept.append(kept_epoch(ea))
    return Replay(True, f"a replay: identical to {reference} until it stops (seeds {_fmt_seeds(a)})",
                  tuple(stops), tuple(kept))  # fmt: skip


def kept_epoch(e: pd.DataFrame) -> int:
    """The epoch of the checkpoint the trainer kept (best.pt: the last epoch its monitor improved, `best` = 1 in
    the epoch log); the last epoch when the log has no `best` column."""
    e = e.sort_values("epoch")
    if "best" in e and (e.best.astype(float) == 1).any():
        return int(e.loc[e.best.astype(float) == 1, "epoch"].iloc[-1])
    return int(e.epoch.iloc[-1])


def as_bool(x) -> bool:
    """A config flag as read from YAML or a CSV (True, 'true', 1; NaN and None are False)."""
    if isinstance(x, str):
        return x.strip().lower() in ("true", "1", "yes")
    return bool(x) if x is not None and not (isinstance(x, float) and np.isnan(x)) else False
