"""Notebook 02's figures: validation PESQ per variant, skips and disc_loss, gradient norms, and issue 18's
collapse curves, gradient share and training against validation loss. Presentation only: the numbers are
`training_analysis`'s."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from cmgan_lib.analysis.pairing import as_bool
from cmgan_lib.reports.plotting import EPOCH_LABEL, STEP_LABEL, integer_ticks, legend_outside, plain_log_ticks
from cmgan_lib.analysis.training_analysis import (
    GRAD_COS,
    GRAD_RATIO,
    REFERENCE,
    STEER_RATIO,
    has_losses,
    is_number,
    seed_band,
    variant_order,
)


def _finish_panels(axes: np.ndarray, used: int, xlabel: str, ylabel: str) -> dict:
    """A grid of per-variant panels: hide the unused ones, label the outer axes; the legend entries of all panels,
    each label once (one figure legend for the grid)."""
    for ax in axes.flat[used:]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel(xlabel)
    for ax in axes[:, 0]:
        ax.set_ylabel(ylabel)
    handles: dict = {}
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(lab, h)
    return handles


FIRED, WOULD_HAVE = "early stopping fired", "would have stopped (early stopping off)"


def stop_marks(e: pd.DataFrame, configs: pd.DataFrame | None = None) -> pd.DataFrame:
    """The first epoch each run's monitor ran out of patience (`early_stop` = 1), labelled FIRED where early
    stopping was on and the run ended there, WOULD_HAVE otherwise. The trainer tracks the patience even when early
    stopping is off, so a run that went on training only would have stopped."""
    if "early_stop" not in e or not len(e):
        return e.iloc[:0].assign(label=pd.Series(dtype=str))
    first = e[e.early_stop == 1].sort_values("epoch").groupby("run").head(1)
    last = e.groupby("run").epoch.max()
    on = {}
    if configs is not None and "early_stopping" in configs:
        on = {r: as_bool(x) for r, x in zip(configs.run, configs.early_stopping, strict=True)}
    fired = [bool(on.get(r, False)) and ep == last[r] for r, ep in zip(first.run, first.epoch, strict=True)]
    return first.assign(label=[FIRED if f else WOULD_HAVE for f in fired])


def plot_val_pesq(epochs: pd.DataFrame, reference: str = REFERENCE, ncols: int = 3,
                  configs: pd.DataFrame | None = None):  # fmt: skip
    """One panel per variant: validation PESQ per epoch (mean over seeds, band = range over seeds when there are
    several), its peak, and the reference variant's mean in grey; where a run's early-stopping monitor ran out of
    patience, a cross: "fired" only for runs with early stopping on (`configs`' `early_stopping`), "would have
    stopped" for the others. Returns the Figure."""
    import matplotlib.pyplot as plt

    variants = variant_order(epochs.variant.unique(), reference)
    ncols = max(1, min(ncols, len(variants)))
    nrows = math.ceil(len(variants) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.3 * ncols, 3.3 * nrows + 0.9), sharex=True, sharey=True,
                             squeeze=False)  # fmt: skip
    ref = epochs[epochs.variant == reference].groupby("epoch").val_pesq.mean()
    for ax, variant in zip(axes.flat, variants, strict=False):
        e = epochs[epochs.variant == variant]
        curve = e.groupby("epoch").val_pesq.agg(["mean", "min", "max"])
        n = int(e.seed.nunique()) if e.seed.notna().any() else 1
        if variant != reference and len(ref):
            ax.plot(ref.index, ref.to_numpy(), color="grey", ls="--", lw=1.2, label=f"{reference} (mean over seeds)")
        ax.plot(curve.index, curve["mean"], marker="o", lw=1.8, color="C0",
                label="mean over seeds" if n > 1 else "one seed")  # fmt: skip
        if n > 1:
            ax.fill_between(curve.index, curve["min"], curve["max"], color="C0", alpha=0.2,
                            label=f"band = range over {n} seeds")  # fmt: skip
        peak = curve["mean"].idxmax() if curve["mean"].notna().any() else None
        subtitle = ""
        if peak is not None:
            ax.plot([peak], [curve.loc[peak, "mean"]], marker="*", ms=14, color="C3", ls="none", label="peak")
            drop = curve.loc[peak, "mean"] - curve["mean"].iloc[-1]
            subtitle = f"\npeak at epoch {peak}, then {'down' if drop > 0 else 'no drop'}" + (
                f" by {drop:.3f}" if drop > 0 else "")  # fmt: skip
        marks = stop_marks(e, configs)
        for label, m in marks.groupby("label", sort=True):
            ax.scatter(m.epoch, m.val_pesq, marker="x", s=70, color="black" if label == FIRED else "grey", zorder=5,
                       label=label)  # fmt: skip
        ax.set_title(f"{variant} ({n} seed{'s' if n != 1 else ''}){subtitle}", fontsize=10)
        integer_ticks(ax)
        ax.set(xlabel="", ylabel="")
    handles = _finish_panels(axes, len(variants), EPOCH_LABEL if ncols == 1 else "epoch", "validation PESQ (MOS-LQO)")
    fig.suptitle(f"Validation PESQ per epoch, each variant against {reference}" if len(ref) and len(variants) > 1
                 else "Validation PESQ per epoch", fontsize=12)  # fmt: skip
    fig.tight_layout(rect=(0, 0.1 if nrows == 1 else 0.05, 1, 1))
    fig.legend(handles.values(), handles.keys(), loc="lower center", ncol=min(4, len(handles)), frameon=False)
    return fig


def plot_skips_and_disc_loss(per_seed: pd.DataFrame, per_variant: pd.DataFrame, steps: pd.DataFrame,
                             reference: str = REFERENCE):  # fmt: skip
    """Left: the share of discriminator updates skipped, as applied (Wilson 95%), beside what the injected p
    alone would give under each variant's strategy (`expected_skip_rate`, the table's number). Right (when any
    update ran): the discriminator loss of the updates that ran."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    variants = variant_order(per_variant.variant, reference)
    pv = per_variant.set_index("variant").loc[variants]
    ran = steps[(steps.disc_skipped == 0) & np.isfinite(steps.disc_loss.astype(float))] if len(steps) else steps
    two = len(ran) > 0
    fig, axes = plt.subplots(1, 2 if two else 1, figsize=(12 if two else 6.5, 0.6 * len(variants) + 2.4),
                             sharey=True, squeeze=False)  # fmt: skip
    ax = axes[0, 0]
    y = np.arange(len(variants))
    rate = 100 * pv.skip_rate.to_numpy(dtype=float)
    err = np.vstack([rate - 100 * pv.skip_low.to_numpy(dtype=float), 100 * pv.skip_high.to_numpy(dtype=float) - rate])
    ax.errorbar(rate, y, xerr=err, fmt="o", color="C0", capsize=4, label="applied (95% Wilson interval)")
    expected = 100 * pv.skip_rate_from_injection.to_numpy(dtype=float)
    if np.nanmax(np.nan_to_num(expected, nan=0.0)) > 0:
        ax.plot(expected, y, "x", color="C3", ms=9, label="expected from the injected p alone (skip: 1 - (1 - p)^B; "
                "masked: p^B; batch_mean: never)")  # fmt: skip
    ax.set_yticks(y, [f"{v}\n({int(r.skipped)} of {int(r.steps)} skipped)" if np.isfinite(r.steps) else v
                      for v, r in pv.iterrows()])  # fmt: skip
    ax.set(xlim=(-2, 102), xlabel="discriminator updates skipped (% of training steps)")
    ax.invert_yaxis()
    ax.legend(loc="lower left", bbox_to_anchor=(0, 1.0), ncol=1, fontsize=9)
    if two:
        ax = axes[0, 1]
        pos = {v: i for i, v in enumerate(variants)}
        r = ran.assign(y=ran.variant.map(pos))
        sns.boxplot(data=r, x="disc_loss", y="variant", order=variants, ax=ax, color="lightsteelblue",
                    fliersize=0, orient="h")  # fmt: skip
        sns.stripplot(data=r, x="disc_loss", y="variant", order=variants, ax=ax, color="C0", size=2.5, alpha=0.5,
                      orient="h")  # fmt: skip
        ax.set_xscale("log")
        plain_log_ticks(ax, "x")
        ax.set(xlabel="discriminator loss per update that ran (MSE, log scale)", ylabel="",
               title="Loss of the updates that ran (skipped ones have none)")  # fmt: skip
    axes[0, 0].set_ylabel("")
    fig.suptitle("Discriminator updates skipped, and the loss of those that ran" if two
                 else "Discriminator updates skipped (no update ran)")  # fmt: skip
    fig.tight_layout()
    return fig


def plot_grad_norms(steps: pd.DataFrame, per_seed: pd.DataFrame, reference: str = REFERENCE):
    """Pre-clip global gradient norms per step, generator and discriminator, median over seeds (band = range
    over seeds when there are several), with each configured clip value; returns the Figure."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    variants = variant_order(steps.variant.unique(), reference)
    n_seeds = int(steps.groupby("variant").seed.nunique().max()) if steps.seed.notna().any() else 1
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.2), sharex=True)
    clips = per_seed.groupby("grad_clip_norm").variant.unique() if "grad_clip_norm" in per_seed else {}
    for ax, net, name in ((axes[0], "grad_norm_g", "Generator"), (axes[1], "grad_norm_d", "Discriminator")):
        data = steps[["variant", "seed", "step", net]].dropna(subset=[net])
        sns.lineplot(data=data, x="step", y=net, hue="variant", hue_order=variants, estimator="median",
                     errorbar=("pi", 100) if n_seeds > 1 else None, ax=ax, lw=1.2)  # fmt: skip
        for clip, vs in clips.items() if len(clips) else []:
            if is_number(clip) and clip > 0:
                ax.axhline(clip, color="black", ls="--", lw=1, label=f"clip value {clip:g} ({', '.join(vs)})")
        ax.set_yscale("log")
        plain_log_ticks(ax, "y")
        integer_ticks(ax)
        ax.set(xlabel=STEP_LABEL, ylabel="pre-clip gradient norm (L2, log scale)",
               title=f"{name}{' (updates that ran)' if net == 'grad_norm_d' else ''}")  # fmt: skip
    handles, labels = axes[1].get_legend_handles_labels()
    axes[0].get_legend().remove() if axes[0].get_legend() else None
    band = f"; band = range over {n_seeds} seeds" if n_seeds > 1 else ""
    legend_outside(axes[1], title=f"median over seeds{band}" if n_seeds > 1 else None, handles=handles, labels=labels)
    fig.suptitle("Pre-clip gradient norms per training step, by variant")
    fig.tight_layout()
    return fig


def band_words(n: int) -> str:
    """What a seed band is, for a legend: it changes with the number of seeds."""
    return f"95% t interval over {n} seeds" if n >= 3 else (f"range over {n} seeds" if n == 2 else "one seed: no band")


def _n_seeds(df: pd.DataFrame) -> int:
    return int(df.run.nunique()) if "run" in df and len(df) else 0


def _variant_colours(variants: Sequence[str], reference: str = REFERENCE) -> dict:
    """One colour per variant, the same in every issue-18 figure; the reference in black."""
    import seaborn as sns

    others = [v for v in variants if v != reference]
    colours = dict(zip(others, sns.color_palette("colorblind", max(10, len(others))), strict=False))
    return {**colours, reference: "black"}


def plot_collapse_curves(epochs: pd.DataFrame, variants: Sequence[str] | None = None, reference: str = REFERENCE):
    """Every variant's mean validation PESQ per epoch on ONE axis, with its seed band and its peak marked: the
    collapse (rise, peak, fall) of each variant read against the others directly; returns the Figure."""
    import matplotlib.pyplot as plt

    order = variant_order(epochs.variant.unique(), reference)
    variants = [v for v in order if variants is None or v in variants]
    colours = _variant_colours(variants, reference)
    fig, ax = plt.subplots(figsize=(11, 5.5))
    for variant in variants:
        e = epochs[epochs.variant == variant]
        curve = seed_band(e, "val_pesq")
        if not curve["mean"].notna().any():
            continue
        n, c = _n_seeds(e), colours[variant]
        ref = variant == reference
        ax.plot(curve.index, curve["mean"], color=c, lw=2.6 if ref else 1.6,
                label=f"{variant} ({n} seed{'s' if n != 1 else ''})")  # fmt: skip
        if n >= 2:
            ax.fill_between(curve.index, curve["low"], curve["high"], color=c, alpha=0.12, lw=0)
        peak = curve["mean"].idxmax()
        ax.plot([peak], [curve.loc[peak, "mean"]], marker="*", ms=14, color=c, ls="none", markeredgecolor="white",
                zorder=5)  # fmt: skip
    ax.plot([], [], marker="*", ms=13, color="grey", ls="none", label="peak of the mean curve")
    integer_ticks(ax)
    ax.set(xlabel=EPOCH_LABEL, ylabel="validation PESQ (MOS-LQO), mean over seeds",
           title="Validation PESQ per epoch, every variant on one axis")  # fmt: skip
    legend_outside(ax, title="mean over seeds; band: 95% t\ninterval (3+ seeds) or range (2)")
    fig.tight_layout()
    return fig


def plot_grad_share(steps: pd.DataFrame, reference: str = REFERENCE, smooth: int = 5):
    """Left: the ratio |g_adv| / |g_rest| over training steps per variant (each run's measured steps smoothed by a
    centred rolling median of `smooth`, then the mean over seeds; log axis); right: the cosine the same way.
    None when nothing was measured. Ratios of 0 (no adversarial weight) cannot sit on a log axis: left out, said."""
    import matplotlib.pyplot as plt

    if not len(steps) or GRAD_RATIO not in steps or not np.isfinite(steps[GRAD_RATIO].astype(float)).any():
        return None
    m = steps[np.isfinite(steps[GRAD_RATIO].astype(float))].sort_values(["run", "step"])
    roll = m.groupby("run")[[GRAD_RATIO, GRAD_COS]].transform(
        lambda x: x.astype(float).rolling(smooth, center=True, min_periods=1).median()
    )
    m = m.assign(ratio=roll[GRAD_RATIO], cos=roll[GRAD_COS])
    variants = variant_order(m.variant.unique(), reference)
    colours = _variant_colours(variants, reference)
    fig, axes = plt.subplots(1, 2, figsize=(14, 4.6), sharex=True)
    zero = []
    for variant in variants:
        v = m[m.variant == variant]
        n = _n_seeds(v)
        label = f"{variant} ({n} seed{'s' if n != 1 else ''})"
        mean = v.groupby("step")[["ratio", "cos"]].mean()
        pos = mean.ratio[mean.ratio > 0]
        if len(pos):
            axes[0].plot(pos.index, pos.to_numpy(), color=colours[variant], lw=1.4, label=label)
        else:
            zero.append(variant)
        if mean.cos.notna().any():
            axes[1].plot(mean.index, mean.cos.to_numpy(), color=colours[variant], lw=1.4, label=label)
    axes[0].axhline(STEER_RATIO, color="black", ls="--", lw=1, label=f"{STEER_RATIO:g}: the threshold for steering")
    axes[0].set_yscale("log")
    plain_log_ticks(axes[0], "y")
    axes[0].set(xlabel=STEP_LABEL, ylabel="gradient norm ratio, adversarial / other terms (log)",
                title="Size of the adversarial gradient" + (f"\n(ratio 0, not drawn: {', '.join(zero)})" if zero
                                                           else ""))  # fmt: skip
    axes[1].axhline(0, color="black", lw=0.8)
    axes[1].set(xlabel=STEP_LABEL, ylabel="cosine, adversarial vs other terms", ylim=(-1.05, 1.05),
                title="Its direction against the other terms")  # fmt: skip
    for ax in axes:
        integer_ticks(ax)
    handles, labels = axes[0].get_legend_handles_labels()
    for h, lab in zip(*axes[1].get_legend_handles_labels(), strict=True):
        if lab not in labels:
            handles.append(h)
            labels.append(lab)
    legend_outside(axes[1], title=f"mean over seeds of a rolling\nmedian of {smooth} measured steps", handles=handles,
                   labels=labels)  # fmt: skip
    fig.suptitle("The adversarial term's gradient against the other loss terms', per measured training step")
    fig.tight_layout()
    return fig


def plot_train_vs_val_loss(epochs: pd.DataFrame, reference: str = REFERENCE, ncols: int = 3):
    """One panel per variant (shared epoch axis): training and validation loss, seed means with bands, and the
    epoch of the mean validation loss's minimum; overfitting reads as the two curves parting. None without both."""
    import matplotlib.pyplot as plt

    if not has_losses(epochs):
        return None
    variants = variant_order(epochs.variant.unique(), reference)
    ncols = max(1, min(ncols, len(variants)))
    nrows = math.ceil(len(variants) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.3 * ncols, 3.2 * nrows + 0.9), sharex=True, squeeze=False)
    for ax, variant in zip(axes.flat, variants, strict=False):
        e = epochs[epochs.variant == variant]
        n = _n_seeds(e)
        for col, colour, words in (("loss", "C0", "training loss"), ("val_loss", "C1", "validation loss")):
            curve = seed_band(e, col)
            ax.plot(curve.index, curve["mean"], color=colour, lw=1.6, label=f"{words} (mean over seeds)")
            if n >= 2:
                ax.fill_between(curve.index, curve["low"], curve["high"], color=colour, alpha=0.2, lw=0,
                                label=f"band: {band_words(n)}")  # fmt: skip
            if col == "val_loss" and curve["mean"].notna().any():
                m = curve["mean"].idxmin()
                ax.axvline(m, color="C1", ls=":", lw=1)
                ax.plot([m], [curve.loc[m, "mean"]], marker="*", ms=12, color="C3", ls="none",
                        label="minimum of the validation loss")  # fmt: skip
                ax.set_title(f"{variant} ({n} seed{'s' if n != 1 else ''})\nvalidation minimum at epoch {m}",
                             fontsize=10)  # fmt: skip
        integer_ticks(ax)
    handles = _finish_panels(axes, len(variants), "epoch", "generator loss (weighted sum)")
    fig.suptitle("Training loss (mean over each epoch's steps) and validation loss (after each epoch)", fontsize=12)
    fig.tight_layout(rect=(0, 0.1 if nrows == 1 else 0.05, 1, 1))
    fig.legend(handles.values(), handles.keys(), loc="lower center", ncol=min(4, len(handles)), frameon=False)
    return fig
