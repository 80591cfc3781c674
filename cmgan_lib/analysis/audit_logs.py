"""What the runs logged, read for notebook 01 and its claims: the skip and label-failure rates each run actually
had (`observed_rates`), the disc_loss of its updates (`disc_loss_stats`, `last_epoch_disc_loss`), and what this
trainer logs for a skipped batch. Rates come with 95% Wilson intervals, means with t intervals.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np
import pandas as pd

from cmgan_lib.analysis.audit import CUT_LEN, SR
from cmgan_lib.analysis.stats import wilson
from cmgan_lib.core.paths import run_config
from cmgan_lib.training.runs import config_crop_seconds, find_runs, parse_run_name, read_log, runs_at, step_logs


def observed_rates(run_root_or_dirs: str | os.PathLike | Sequence[str | os.PathLike], per: str = "run") -> pd.DataFrame:
    """Skip and failure rates the runs actually logged (training_step_log.csv), per run or per epoch.

    Columns: run, variant, seed, strategy, inject_p, crop_s, batch_size, [epoch,] steps (finite steps: the skip
    rate's denominator), nonfinite_steps (refused steps, left out), skipped, skip_rate with a Wilson interval
    (skip_low, skip_high), samples (B x steps whose labels were scored), failed (labels lost to any cause) with an
    interval, and failed labels per cause (`pesq_fail_*` sums). Reads every run given (all variants), not one.
    """
    if per not in ("run", "epoch"):
        raise ValueError(f"per must be 'run' or 'epoch', got {per!r}")
    rows = []
    for d in runs_at(run_root_or_dirs):
        log = d / "training_step_log.csv"
        if not log.is_file():
            continue
        steps = read_log(log)  # a live run's log may not have its header yet
        if steps.empty:
            continue
        cfg = run_config(d)
        variant, seed = parse_run_name(d.name)
        batch = int(cfg.get("batch_size", 4))
        causes = [c for c in steps.columns if c.startswith("pesq_fail_")]
        base = dict(run=d.name, variant=variant, seed=seed, strategy=cfg.get("pesq_strategy", "skip"),
                    inject_p=float(cfg.get("pesq_fail_inject", 0.0)),
                    crop_s=config_crop_seconds(cfg, CUT_LEN / SR), batch_size=batch)  # fmt: skip
        groups = [(None, steps)] if per == "run" else list(steps.groupby("epoch", sort=True))
        for epoch, g in groups:
            # A step refused as non-finite also logs disc_skipped = 1, but PESQ did not cause it: skips count on
            # finite steps only. Labels count where they were scored (pesq_valid_frac is NaN on a batch refused
            # before the forward pass; a non-finite loss still scored its labels).
            finite = g["nonfinite"].fillna(0) == 0 if "nonfinite" in g else pd.Series(True, index=g.index)
            scored = g["pesq_valid_frac"].notna()
            skipped = wilson(int(g.loc[finite, "disc_skipped"].sum()), int(finite.sum()))
            lost = int(round(float(((1 - g.loc[scored, "pesq_valid_frac"]) * batch).sum())))
            failed = wilson(lost, int(scored.sum()) * batch)
            row = dict(base)
            if per == "epoch":
                row["epoch"] = int(epoch)
            row.update(steps=skipped.n, nonfinite_steps=int((~finite).sum()), skipped=skipped.k, skip_rate=skipped.p,
                       skip_low=skipped.low, skip_high=skipped.high, samples=failed.n, failed=failed.k,
                       fail_rate=failed.p, fail_low=failed.low, fail_high=failed.high)  # fmt: skip
            row.update({c: int(g[c].sum()) for c in causes})
            rows.append(row)
    return pd.DataFrame(rows)


def skipped_batch_logged_value() -> float:
    """What our trainer logs as disc_loss for a batch whose every PESQ failed: runs the real label path.

    `make_labels` under the published `skip` strategy, then `discriminator_loss` (None = no update), then
    the trainer's logging rule (`disc_loss.item() if disc_loss is not None else NaN`).
    """
    import torch

    from cmgan_lib.training.losses import discriminator_loss
    from cmgan_lib.training.pesq_labels import make_labels

    labels = make_labels(np.array([np.nan, np.nan]), ["silent_reference", "pesq_failed"], strategy="skip")
    mag = torch.zeros(2, 1, 4, 4)
    loss = discriminator_loss(torch.nn.Identity(), mag, mag, labels)
    return loss.item() if loss is not None else math.nan


def disc_loss_stats(train_log: str | os.PathLike | Sequence[str | os.PathLike] | None) -> dict:
    """From training logs (run folders, a folder of them, or training_step_log.csv files): the smallest positive
    per-step disc_loss, the number of skipped steps and what they logged, and the last epoch's mean disc_loss.

    Empty dict when `train_log` is None or holds no step log.
    """
    if train_log is None:
        return {}
    steps = [df for _, df in step_logs(train_log)]
    if not steps:
        return {}
    last_means = []
    for df in steps:
        last = df[df["epoch"] == df["epoch"].max()]["disc_loss"]
        last_means.append(float(np.nanmean(last)) if last.notna().any() else math.nan)
    df = pd.concat(steps, ignore_index=True)
    loss = df["disc_loss"].astype(float)
    skipped = df["disc_skipped"].astype(bool) if "disc_skipped" in df else loss.isna()
    positive = loss[(loss > 0) & ~skipped]
    logged = loss[skipped]
    return {
        "n_steps": len(df),
        "n_skipped": int(skipped.sum()),
        "skipped_logged_nan": bool(logged.isna().all()) if len(logged) else None,
        "min_positive": float(positive.min()) if len(positive) else math.nan,
        "last_epoch_mean": float(np.nanmean(last_means)) if np.isfinite(last_means).any() else math.nan,
    }


def last_epoch_disc_loss(run_root: str | os.PathLike, strategy: str = "batch_mean") -> pd.DataFrame:
    """Per run trained with `strategy` (read from config.yaml): mean disc_loss of the last epoch's updates with a
    95% t interval over its steps (claim 4 is about disc_loss 'after the fix'), with the run's crop length and
    injected failure rate (`inject_p`: a loss under imposed failures is no evidence about the fix)."""
    from cmgan_lib.analysis.stats import mean_interval

    rows = []
    for run in find_runs(run_root):
        cfg = run_config(run)
        log = run / "training_step_log.csv"
        if cfg.get("pesq_strategy") != strategy or not log.is_file():
            continue
        steps = read_log(log)
        if steps.empty:
            continue
        last = steps[steps["epoch"] == steps["epoch"].max()]
        m = mean_interval(last["disc_loss"].dropna())
        crop = config_crop_seconds(cfg)
        rows.append(dict(run=run.name, epochs=int(steps["epoch"].max()) + 1, crop_s=crop,
                         inject_p=float(cfg.get("pesq_fail_inject", 0.0) or 0.0), n_steps=m.n, mean=m.mean,
                         low=m.low, high=m.high))  # fmt: skip
    return pd.DataFrame(rows, columns=["run", "epochs", "crop_s", "inject_p", "n_steps", "mean", "low", "high"])
