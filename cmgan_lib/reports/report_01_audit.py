"""Notebook 01 (PESQ-failure audit), sections 1-3: its tables and seaborn figures. Presentation only: the crops,
rates and logs it shows are computed in `cmgan_lib.analysis.audit` and `cmgan_lib.analysis.failure_matrix`."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from cmgan_lib.reports.report_01_claims import CLAIMED_SKIP_BATCH_SIZE, CLAIMED_SKIP_RATE
from cmgan_lib.training.runs import TINY_CONFIG


def default_corpus(config: str | os.PathLike = TINY_CONFIG, build: bool = True, progress: bool = False) -> Path:
    """The corpus the training config uses (the synthetic one of the tiny config: shared with training); built
    when missing unless `build` is False."""
    from cmgan_lib.training.config import load_config, resolve_data_dir

    return resolve_data_dir(load_config(config), is_main=build, progress=progress)


def failure_sweep_table(sweeps: pd.DataFrame, batch_size: int = CLAIMED_SKIP_BATCH_SIZE) -> pd.DataFrame:
    """Per dataset x pair x model x crop length: failures by cause with Wilson intervals and the implied
    published-rule skip rate at `batch_size` (`audit.rate_table`)."""
    from cmgan_lib.analysis.audit import rate_table

    return rate_table(sweeps, by=["dataset", "pair", "model", "crop_s"], batch_size=batch_size)


def _sweep_label(pair: str, model: str) -> str:
    return pair if model in ("", "-") else f"{pair}, {model}"


def plot_failure_sweep(table: pd.DataFrame, training_crop_s: float | None = None):
    """Per-crop PESQ failure rate (95% Wilson interval) against crop length, one panel per dataset, one line per
    pair type and checkpoint. A line has the same colour in every panel and one legend entry for the figure;
    lines sit slightly apart along x (log scale) so equal rates stay visible."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    from cmgan_lib.analysis.stats import per_sample_rate_for

    datasets = list(dict.fromkeys(table["dataset"]))
    labels = list(dict.fromkeys(_sweep_label(p, m) for p, m in zip(table["pair"], table["model"], strict=True)))
    colors = dict(zip(labels, sns.color_palette("colorblind", len(labels)), strict=True))
    dodge = {label: 1.0 + 0.03 * (k - (len(labels) - 1) / 2) for k, label in enumerate(labels)}
    fig, axes = plt.subplots(1, len(datasets), figsize=(6.2 * len(datasets), 4.2), sharey=True, squeeze=False)
    claimed_p = per_sample_rate_for(CLAIMED_SKIP_RATE, CLAIMED_SKIP_BATCH_SIZE)
    top = max(0.3, float(table["p_fail_high"].max()) * 1.1)
    legend: dict[str, object] = {}
    for ax, dataset in zip(axes[0], datasets, strict=True):
        sub = table[table["dataset"] == dataset]
        for (pair, model), g in sub.groupby(["pair", "model"], sort=False):
            g = g.sort_values("crop_s")
            label = _sweep_label(pair, model)
            yerr = [g["p_fail"] - g["p_fail_low"], g["p_fail_high"] - g["p_fail"]]
            legend[label] = ax.errorbar(g["crop_s"] * dodge[label], g["p_fail"], yerr=yerr, marker="o", capsize=3,
                                        color=colors[label], label=label)  # fmt: skip
        claim = f"rate giving {CLAIMED_SKIP_RATE:.0%} skipped at B={CLAIMED_SKIP_BATCH_SIZE}"
        legend[claim] = ax.axhline(claimed_p, color="firebrick", ls=":", lw=1.2, label=claim)
        if training_crop_s is not None:
            crop = f"training crop ({training_crop_s:g} s)"
            legend[crop] = ax.axvline(training_crop_s, color="grey", ls="--", lw=1, label=crop)
        n = int(sub.groupby("crop_s")["n_crops"].max().min())
        ax.set(xscale="log", xlabel="crop length (s)", ylabel="share of crops PESQ cannot score",
               title=f"{dataset} ({n}+ crops per point)", ylim=(0, top))  # fmt: skip
        ticks = sorted(sub["crop_s"].unique())
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.minorticks_off()
    fig.legend(list(legend.values()), list(legend), loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=3,
               frameon=False, fontsize=9)  # fmt: skip
    fig.suptitle("PESQ label failures by crop length: clean vs noisy, and clean vs generator estimate")
    fig.tight_layout()
    return fig


def plot_failure_matrix(table: pd.DataFrame):
    """The failure matrix (`failure_matrix.matrix_table`): per axis, the share of pairs PESQ cannot score at each
    level with its 95% Wilson interval, one colour per dataset (slightly apart so equal rates stay visible)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    from cmgan_lib.analysis.failure_matrix import AXES

    axes_shown = [a for a in AXES if a != "as is" and a in set(table["axis"])]
    datasets = list(dict.fromkeys(table["dataset"]))
    colors = dict(zip(datasets, sns.color_palette("colorblind", len(datasets)), strict=True))
    widths = [max(2, table.loc[table["axis"] == a, "level"].nunique()) for a in axes_shown]
    fig, axs = plt.subplots(1, len(axes_shown), figsize=(2.2 + 0.55 * sum(widths), 4.4), sharey=True, squeeze=False,
                            gridspec_kw={"width_ratios": widths})  # fmt: skip
    for ax, axis in zip(axs[0], axes_shown, strict=True):
        sub = table[table["axis"] == axis]
        levels = list(dict.fromkeys(sub.sort_values("level_order", kind="stable")["level"]))
        for k, dataset in enumerate(datasets):
            g = sub[sub["dataset"] == dataset]
            x = np.array([levels.index(v) for v in g["level"]]) + 0.12 * (k - (len(datasets) - 1) / 2)
            ax.errorbar(x, g["p_fail"], yerr=[g["p_fail"] - g["p_fail_low"], g["p_fail_high"] - g["p_fail"]],
                        fmt="o", capsize=3, color=colors[dataset], label=dataset)  # fmt: skip
        ax.set_xticks(range(len(levels)), [str(v).replace("_", " ") for v in levels], rotation=60, ha="right",
                      fontsize=8)  # fmt: skip
        ax.set(xlabel=axis, title=axis.split(" (")[0], ylim=(-0.03, 1.03))
    axs[0][0].set_ylabel("share of pairs PESQ cannot score")
    handles, labels = axs[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=len(datasets), frameon=False)
    fig.suptitle("Failure matrix: each cause the fix document names, on the same crops (95% Wilson intervals)")
    fig.tight_layout()
    return fig


def cause_table(table: pd.DataFrame) -> pd.DataFrame:
    """Short table of the sweep: failures (k of n with interval) and the count per cause, causes with any count."""
    causes = [c for c in table.columns if c.startswith("n_") and c not in ("n_crops", "n_failed") and table[c].any()]
    cols = ["dataset", "pair", "model", "crop_s", "failures", *causes, "skip"]
    out = table[cols].rename(columns={c: c.removeprefix("n_").replace("_", " ") for c in causes})
    out["crop_s"] = out["crop_s"].map(lambda x: f"{x:g}")
    return out.rename(columns={"crop_s": "crop (s)", "skip": "implied skip at B=4"})


def observed_table(observed: pd.DataFrame) -> pd.DataFrame:
    """Notebook 01's table of what the runs logged: skipped updates and lost labels as 'k of n = x% (95% CI)',
    and the lost labels per cause, causes that never occurred left out (the full table is observed_rates.csv)."""
    from cmgan_lib.analysis.stats import format_rate, wilson

    causes = [c for c in observed.columns if c.startswith("pesq_fail_") and observed[c].fillna(0).any()]
    out = pd.DataFrame({
        "run": observed["run"],
        "strategy": observed["strategy"],
        "injected p": observed["inject_p"].map(lambda x: f"{x:g}"),
        "crop (s)": observed["crop_s"].map(lambda x: f"{x:g}"),
        "updates skipped": [format_rate(wilson(int(k), int(n))) for k, n in zip(observed["skipped"], observed["steps"],
                                                                               strict=True)],
        "labels lost": [format_rate(wilson(int(k), int(n))) for k, n in zip(observed["failed"], observed["samples"],
                                                                           strict=True)],
    })  # fmt: skip
    for c in causes:
        out[c.removeprefix("pesq_fail_").replace("_", " ")] = observed[c].astype(int)
    return out


def plot_observed_skips(observed: pd.DataFrame, ax=None):
    """Per run: share of discriminator updates skipped (95% Wilson interval) and, for runs that do not skip by
    design, the skip rate the published rule would have had (from the logged label failures)."""
    import matplotlib.pyplot as plt

    from cmgan_lib.analysis.stats import batch_rate_interval, wilson

    rows = []
    for _, r in observed.iterrows():
        natural = wilson(int(r["failed"] - r.get("pesq_fail_injected", 0)), int(r["samples"]))
        est, lo, hi = batch_rate_interval(natural, int(r["batch_size"]))
        rows.append((r["run"], "skipped (logged)", r["skip_rate"], r["skip_low"], r["skip_high"]))
        rows.append((r["run"], "published rule, natural failures only", est, lo, hi))
    df = pd.DataFrame(rows, columns=["run", "what", "rate", "low", "high"])
    ax = ax or plt.subplots(figsize=(8, 0.45 * df["run"].nunique() + 1.6))[1]
    runs = list(dict.fromkeys(df["run"]))
    for k, (what, g) in enumerate(df.groupby("what", sort=False)):
        y = np.array([runs.index(r) for r in g["run"]]) + (k - 0.5) * 0.3
        ax.errorbar(g["rate"], y, xerr=[g["rate"] - g["low"], g["high"] - g["rate"]], fmt="o", capsize=3, label=what)
    ax.axvline(CLAIMED_SKIP_RATE, color="firebrick", ls=":", lw=1.2, label=f"claimed {CLAIMED_SKIP_RATE:.0%}")
    ax.set_yticks(range(len(runs)), runs)
    ax.set(xlim=(-0.02, 1.02), ylim=(len(runs) - 0.5, -0.5), xlabel="share of discriminator updates (95% CI)",
           ylabel="", title="Discriminator updates skipped in the study's own runs")  # fmt: skip
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.45 / max(1, len(runs)) ** 0.5 - 0.12), ncol=3,
              frameon=False, fontsize=9)  # fmt: skip
    return ax


def plot_scale_residuals(crops: pd.DataFrame, ax=None):
    """PESQ(c x, c y) - PESQ(x, y) per crop against the training scale c: the residual says what a diagonal hides."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    df = crops if "dataset" in crops else crops.assign(dataset="audit")
    ok = df[df["reason"].isna() & df["reason_scaled"].isna()].assign(
        residual=lambda d: d["pesq_scaled"] - d["pesq"])  # fmt: skip
    ax = ax or plt.subplots(figsize=(6.5, 3.6))[1]
    sns.scatterplot(data=ok, x="scale_c", y="residual", hue="dataset", s=18, ax=ax)
    ax.axhline(0, color="grey", lw=1)
    ax.set(xscale="log", xlabel="training scale c = sqrt(N / Σ noisy²) (log)",
           ylabel="PESQ(c·x, c·y) − PESQ(x, y)", title="PESQ does not depend on the level: residuals")  # fmt: skip
    lim = max(1e-3, float(ok["residual"].abs().max()) * 1.3) if len(ok) else 1e-3
    ax.set_ylim(-lim, lim)
    ax.legend(title=None, loc="upper right", fontsize=9)
    return ax
