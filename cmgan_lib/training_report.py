"""Reading finished training runs and plotting them (notebook 02): validation PESQ per epoch per variant,
discriminator loss with skipped updates shown as skipped, skip rates, gradient norms, early stopping."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

RUN_NAME = re.compile(r"^(?P<variant>.+)_s(?P<seed>\d+)$")


def parse_run_name(name: str) -> tuple[str, int | None]:
    """`masked_s1` -> ("masked", 1); any other folder name is its own variant with no seed."""
    m = RUN_NAME.match(name)
    return (m["variant"], int(m["seed"])) if m else (name, None)


def find_runs(run_root: str | os.PathLike) -> list[Path]:
    """Run folders (those with a training_epoch_log.csv) directly under `run_root`, sorted."""
    root = Path(run_root)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if (p / "training_epoch_log.csv").is_file())


def load_runs(run_root_or_dirs) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(epoch log, step log) of every run, each row tagged with run, variant and seed."""
    dirs = find_runs(run_root_or_dirs) if isinstance(run_root_or_dirs, str | os.PathLike) else [
        Path(d) for d in run_root_or_dirs]  # fmt: skip
    epochs, steps = [], []
    for d in dirs:
        variant, seed = parse_run_name(d.name)
        tag = dict(run=d.name, variant=variant, seed=seed)
        e = pd.read_csv(d / "training_epoch_log.csv")
        epochs.append(e.assign(**tag))
        if (d / "training_step_log.csv").is_file():
            steps.append(pd.read_csv(d / "training_step_log.csv").assign(**tag))
    empty = pd.DataFrame(columns=["run", "variant", "seed"])
    return (pd.concat(epochs, ignore_index=True) if epochs else empty,
            pd.concat(steps, ignore_index=True) if steps else empty)  # fmt: skip


def run_summary(epochs: pd.DataFrame, steps: pd.DataFrame) -> pd.DataFrame:
    """One row per run: where validation PESQ peaked, where it ended, how often D was skipped, when early
    stopping fired (or would have), and the largest pre-clip gradient norms."""
    rows = []
    for run, e in epochs.groupby("run", sort=True):
        s = steps[steps.run == run] if len(steps) else pd.DataFrame()
        best = e.loc[e.val_pesq.idxmax()] if e.val_pesq.notna().any() else None
        fired = e.loc[e.early_stop == 1, "epoch"]
        rows.append(dict(
            run=run, variant=e.variant.iloc[0], seed=e.seed.iloc[0], epochs=len(e),
            final_val_pesq=e.val_pesq.iloc[-1], best_val_pesq=np.nan if best is None else best.val_pesq,
            best_epoch=np.nan if best is None else int(best.epoch), final_val_stoi=e.val_stoi.iloc[-1],
            disc_skip_rate=s.disc_skipped.mean() if len(s) else e.disc_skip_rate.mean(),
            disc_updates=int((s.disc_skipped == 0).sum()) if len(s) else np.nan,
            disc_loss_median=s.disc_loss.median() if len(s) else np.nan,
            disc_loss_min=s.disc_loss.min() if len(s) else np.nan,
            early_stop_epoch=int(fired.iloc[0]) if len(fired) else np.nan,
            grad_norm_g_max=s.grad_norm_g.max() if len(s) else np.nan,
            grad_norm_d_max=s.grad_norm_d.max() if len(s) else np.nan,
            nonfinite_steps=int(e.nonfinite_steps.sum()),
        ))  # fmt: skip
    return pd.DataFrame(rows)


def disc_loss_frame(steps: pd.DataFrame) -> pd.DataFrame:
    """Step log with a `disc_update` column: 'updated' or 'skipped'. Skipped updates keep disc_loss NaN, so a
    distribution plot cannot mistake them for a loss of 0.0."""
    out = steps.copy()
    out["disc_update"] = np.where(out.disc_skipped == 1, "skipped", "updated")
    return out


def plot_training(epochs: pd.DataFrame, steps: pd.DataFrame):
    """The four panels of notebook 02 in one figure; returns the matplotlib Figure."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook")
    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    ax = axes[0, 0]
    if len(epochs):
        sns.lineplot(data=epochs, x="epoch", y="val_pesq", hue="variant", errorbar=("pi", 100), marker="o", ax=ax)
        fired = epochs[(epochs.early_stop == 1)].groupby("run").head(1)
        ax.scatter(fired.epoch, fired.val_pesq, marker="x", s=120, color="black", zorder=5,
                   label="early stopping fires (patience reached)")  # fmt: skip
        ax.legend(fontsize=8)
    ax.set_title("Validation PESQ per epoch (mean, band = range over seeds)")
    ax = axes[0, 1]
    if len(steps):
        d = disc_loss_frame(steps)
        upd = d[d.disc_update == "updated"]
        if len(upd):
            sns.boxplot(data=upd, x="variant", y="disc_loss", ax=ax, color="lightsteelblue")
        skipped = d.groupby("variant").disc_skipped.sum()
        for i, label in enumerate(t.get_text() for t in ax.get_xticklabels()):
            ax.annotate(f"{int(skipped.get(label, 0))} skipped", (i, 1.0), xycoords=("data", "axes fraction"),
                        ha="center", va="bottom", fontsize=8)  # fmt: skip
        ax.set_yscale("log")
    ax.set_title("Discriminator loss of updates that ran (skipped: counted, not plotted)", pad=18)
    ax = axes[1, 0]
    if len(steps):
        s = steps.sort_values(["run", "step"]).copy()
        s["skip_rate_cum"] = s.groupby("run").disc_skipped.transform(lambda x: x.expanding().mean())
        sns.lineplot(data=s, x="step", y="skip_rate_cum", hue="variant", errorbar=None, ax=ax)
        ax.set_ylim(-0.02, 1.02)
    ax.set_title("Discriminator skip rate so far (cumulative)")
    ax = axes[1, 1]
    if len(steps):
        g = steps.melt(id_vars=["variant", "step"], value_vars=["grad_norm_g", "grad_norm_d"],
                       var_name="network", value_name="norm").dropna()  # fmt: skip
        sns.lineplot(data=g, x="step", y="norm", hue="variant", style="network", errorbar=None, ax=ax)
        ax.axhline(5.0, color="grey", ls="--", lw=1, label="clip norm 5 (fix document)")
        ax.set_yscale("log")
        ax.legend(fontsize=8)
    ax.set_title("Pre-clip global gradient norms")
    fig.tight_layout()
    return fig
